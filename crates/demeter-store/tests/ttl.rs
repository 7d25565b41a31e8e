//! TTL sweeps at scale, with the clock injected (`sweep_expired` takes `now`): 50,000 jobs in
//! 50 sessions, half of them due. Every expired record goes, no live one does, each sweep call
//! removes a bounded batch, and a poller reading a live session meanwhile keeps getting answers
//! (its latency is printed, not asserted: the figures live in `docs/reliability.md`).
//! `DEMETER_TTL_JOBS` changes the number of jobs.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use chrono::{DateTime, Duration, Utc};
use demeter_domain::{Job, JobId, SessionId, SessionSource, UploadSession};
use demeter_store::{EnqueueOutcome, Store};

fn t(hours: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap() + Duration::hours(hours)
}

/// A session created at `created` with `jobs` pending jobs, using the appliance's TTLs
/// (sessions 24 h, jobs 48 h).
fn fill(store: &Store, created: DateTime<Utc>, jobs: usize, tag: usize) -> (SessionId, Vec<JobId>) {
    let s = UploadSession {
        id: SessionId::new_v7(),
        created_at: created,
        expires_at: Store::expires(created, 24.0),
        source: SessionSource::Folder { subfolder: Some(format!("bench-{tag}")) },
    };
    store.insert_session(&s).unwrap();
    let ids = (0..jobs)
        .map(|n| {
            let name = format!("bench-{tag}/{n}.jpg");
            let job =
                Job::new(JobId::new_v7(), s.id, format!("{tag}-{n}"), format!("/p/{name}").into(), name, 1, 1, created);
            let stored = store.enqueue(&job, &format!("{tag}-{n}"), Store::expires(created, 48.0)).unwrap();
            assert_eq!(stored, EnqueueOutcome::Stored);
            job.id
        })
        .collect();
    (s.id, ids)
}

fn percentiles(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q) as usize];
    format!("{} reads, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", ms.len(), at(0.5), at(0.99), at(1.0))
}

#[test]
fn fifty_thousand_jobs_expire_in_bounded_batches_while_polls_carry_on() {
    let total: usize = std::env::var("DEMETER_TTL_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let per_session = (total / 50).max(1);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 64 << 20).unwrap());

    let filled = Instant::now();
    // Interleaved, so due and live records sit side by side in every tree.
    let mut expired = Vec::new();
    let mut live = Vec::new();
    for tag in 0..50 {
        if tag % 2 == 0 {
            expired.push(fill(&store, t(0), per_session, tag));
        } else {
            live.push(fill(&store, t(30), per_session, tag));
        }
    }
    eprintln!("{} jobs stored in {:?}", per_session * 50, filled.elapsed());
    let now = t(49); // old jobs (48 h) and sessions (24 h) due; young ones not

    // A poller reading a live session (what the poll endpoint reads), before and during.
    let (watched, _) = live[0].clone();
    let poll = move |store: &Store| {
        let t0 = Instant::now();
        let jobs = store.session_jobs(watched).unwrap();
        assert_eq!(jobs.len(), per_session, "a live session lost jobs");
        t0.elapsed().as_secs_f64() * 1e3
    };
    let baseline: Vec<f64> = (0..200).map(|_| poll(&store)).collect();
    let sweeping = Arc::new(AtomicBool::new(true));
    let poller = {
        let (store, sweeping) = (store.clone(), sweeping.clone());
        std::thread::spawn(move || {
            let mut during = Vec::new();
            while sweeping.load(Ordering::SeqCst) {
                during.push(poll(&store));
            }
            during
        })
    };

    // The engine's sweeper: `sweep_due` in batches of 200, paced.
    const BATCH: usize = 200;
    let swept = Instant::now();
    let totals = store
        .sweep_due(now, BATCH, |report| {
            assert!(report.jobs.len() + report.sessions <= BATCH, "a sweep call exceeded its batch");
            true
        })
        .unwrap();
    let (calls, jobs, sessions) = (totals.calls, totals.jobs, totals.sessions);
    let sweep_time = swept.elapsed();
    sweeping.store(false, Ordering::SeqCst);
    let during = poller.join().unwrap();

    let due = 25 * per_session;
    assert_eq!((jobs, sessions), (due, 25), "every expired record removed");
    assert_eq!(calls, (due + 25).div_ceil(BATCH), "bounded batches, none wasted");
    for (session, ids) in &expired {
        assert!(store.session(*session).unwrap().is_none());
        assert!(store.session_jobs(*session).unwrap().is_empty());
        assert!(ids.iter().all(|id| store.job(*id).unwrap().is_none()));
    }
    for (session, ids) in &live {
        assert!(store.session(*session).unwrap().is_some(), "a live session was removed");
        assert_eq!(store.session_jobs(*session).unwrap().len(), per_session);
        assert!(ids.iter().all(|id| store.job(*id).unwrap().is_some()), "a live job was removed");
    }
    assert_eq!(store.pending_count(), 25 * per_session, "expired jobs left the queue; live ones stayed");
    // A second sweep at the same time finds nothing.
    assert_eq!(store.sweep_expired(now, BATCH).unwrap().jobs.len(), 0);

    eprintln!(
        "swept {jobs} jobs and {sessions} sessions in {calls} calls of ≤ {BATCH}, {sweep_time:?}; \
         polling a {per_session}-job live session — idle: {}; while sweeping: {}",
        percentiles(baseline),
        percentiles(during)
    );
}
