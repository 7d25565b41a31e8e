//! The store on a real sled database on disk: reopen, reclaim, dedup, sweeps, and a model-based
//! test against a `BTreeMap` with restarts in between (after sled's own `tests/tree`).

use std::{collections::BTreeMap, path::Path};

use chrono::{DateTime, Duration, Utc};
use demeter_domain::{
    ErrorKind, Job, JobError, JobHead, JobId, JobResult, JobState, SessionId, SessionSource, Stage, StatusName,
    UploadSession,
};
use demeter_store::{EnqueueOutcome, SeenKey, Store, StoreError};

const CACHE: u64 = 8 << 20;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + s, 0).unwrap()
}

fn session(store: &Store, created: DateTime<Utc>) -> SessionId {
    let s = UploadSession {
        id: SessionId::new_v7(),
        created_at: created,
        expires_at: created + Duration::hours(24),
        source: SessionSource::Folder { subfolder: None },
    };
    store.insert_session(&s).unwrap();
    s.id
}

fn enqueue(store: &Store, session: SessionId, n: u32) -> Job {
    let job = Job::new(
        JobId::new_v7(),
        session,
        format!("img{n}"),
        format!("/p/{n}.jpg").into(),
        format!("{n}.jpg"),
        100,
        n.into(),
        t(0),
    );
    assert_eq!(store.enqueue(&job, &format!("hash{n}"), t(0) + Duration::hours(48)).unwrap(), EnqueueOutcome::Stored);
    job
}

fn result() -> JobResult {
    JobResult { session_id: uuid::Uuid::now_v7(), total_detected: 2, ..Default::default() }
}

#[test]
fn state_survives_reopen_and_orphans_are_reclaimed_in_fifo_order() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a, b, c);
    {
        let store = Store::open(dir.path(), CACHE).unwrap();
        s = session(&store, t(0));
        a = enqueue(&store, s, 1).id;
        b = enqueue(&store, s, 2).id;
        c = enqueue(&store, s, 3).id;
        assert_eq!(store.claim_next(0, t(1)).unwrap().unwrap().id, a);
        assert_eq!(store.claim_next(1, t(1)).unwrap().unwrap().id, b);
        store.update(a, |j| j.complete(result(), t(2))).unwrap();
        // Dropped without any shutdown: like a kill -9 after the last flush.
    }
    let store = reopen(dir.path());
    assert_eq!(store.processing_count(), 1);
    let reclaimed = store.reclaim_orphans(3, t(3)).unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!((reclaimed[0].id, reclaimed[0].status(), reclaimed[0].attempts), (b, StatusName::Pending, 1));
    assert_eq!(store.processing_count(), 0);
    assert_eq!(store.pending_count(), 2);
    // b was queued before c and keeps its place.
    assert_eq!(store.claim_next(0, t(4)).unwrap().unwrap().id, b);
    assert_eq!(store.claim_next(0, t(4)).unwrap().unwrap().id, c);
    let jobs = store.session_jobs(s).unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a, b, c]);
    assert_eq!(jobs[0].status(), StatusName::Completed);
}

#[test]
fn a_job_that_keeps_killing_its_worker_fails_after_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Store::open(dir.path(), CACHE).unwrap();
        let s = session(&store, t(0));
        enqueue(&store, s, 1).id
    };
    for attempt in 1..=3 {
        let store = reopen(dir.path());
        store.reclaim_orphans(3, t(attempt)).unwrap();
        // The worker claims it, then the process dies (the store is dropped mid-job).
        let j = store.claim_next(0, t(attempt)).unwrap().expect("re-queued after each crash");
        assert_eq!(j.attempts, attempt as u32);
    }
    let store = reopen(dir.path());
    let reclaimed = store.reclaim_orphans(3, t(10)).unwrap();
    assert_eq!(reclaimed[0].id, id);
    let e = reclaimed[0].error().unwrap();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::Crashed, "worker crashed repeatedly"));
    assert_eq!(store.pending_count(), 0);
}

#[test]
fn a_job_backing_off_after_a_device_error_lets_later_ones_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), CACHE).unwrap();
    let s = session(&store, t(0));
    let (a, b) = (enqueue(&store, s, 1).id, enqueue(&store, s, 2).id);
    assert_eq!(store.claim_next(0, t(1)).unwrap().unwrap().id, a);
    store.update(a, |j| j.retry_later(JobError::transient("inference failed"), 3, true, t(100), t(2))).unwrap();
    assert_eq!(store.claim_next(0, t(3)).unwrap().unwrap().id, b, "a waits");
    assert!(store.claim_next(1, t(4)).unwrap().is_none(), "nothing else is due");
    assert_eq!(store.pending_count(), 1);
    let again = store.claim_next(1, t(100)).unwrap().unwrap();
    assert_eq!((again.id, again.attempts, again.not_before), (a, 2, None));
}

#[test]
fn the_same_file_or_content_is_never_queued_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), CACHE).unwrap();
    let s = session(&store, t(0));
    let job = enqueue(&store, s, 1);
    let key = SeenKey { path: job.path.clone(), size: job.size, mtime_ns: job.mtime_ns };
    assert_eq!(store.seen(&key).unwrap(), Some(job.id));
    let copy = Job::new(JobId::new_v7(), s, "x".into(), "/p/copy.jpg".into(), "copy.jpg".into(), 100, 9, t(0));
    assert_eq!(store.enqueue(&copy, "hash1", t(100)).unwrap(), EnqueueOutcome::Duplicate(job.id));
    assert_eq!(store.seen(&SeenKey { path: "/p/copy.jpg".into(), size: 100, mtime_ns: 9 }).unwrap(), Some(job.id));
    assert_eq!(store.session_jobs(s).unwrap().len(), 1);
    assert_eq!(store.pending_count(), 1);
}

#[test]
fn sweeps_remove_only_what_is_due_in_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), CACHE).unwrap();
    let old = session(&store, t(0));
    for n in 0..1200 {
        enqueue(&store, old, n);
    }
    let young = session(&store, t(0) + Duration::hours(30));
    let live = Job::new(JobId::new_v7(), young, "y".into(), "/p/y.jpg".into(), "y.jpg".into(), 1, 1, t(0));
    store.enqueue(&live, "young", t(0) + Duration::hours(80)).unwrap();

    let now = t(0) + Duration::hours(49);
    let mut swept_jobs = 0;
    let mut rounds = 0;
    loop {
        let r = store.sweep_expired(now, 500).unwrap();
        assert!(r.jobs.len() + r.sessions <= 500);
        swept_jobs += r.jobs.len();
        rounds += 1;
        if !r.more {
            break;
        }
    }
    assert_eq!(swept_jobs, 1200);
    assert_eq!(rounds, 3);
    assert!(store.session(old).unwrap().is_none());
    assert!(store.session_jobs(old).unwrap().is_empty());
    assert!(store.session(young).unwrap().is_some(), "not due");
    assert!(store.job(live.id).unwrap().is_some(), "not due");
    assert_eq!(store.pending_count(), 1, "expired jobs left the queue too");
    // The photos are still in the folder: their dedup entries stay so they are not re-queued.
    assert!(store.seen(&SeenKey { path: "/p/3.jpg".into(), size: 100, mtime_ns: 3 }).unwrap().is_some());
}

#[test]
fn a_garbage_database_is_an_error_not_a_panic_and_can_be_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("conf"), b"\x00garbage that is not a sled config").unwrap();
    std::fs::write(db.join("db"), vec![0xAB; 4096]).unwrap();
    let result = std::panic::catch_unwind(|| Store::open(dir.path(), CACHE).map(|_| ()));
    let err = result.expect("no panic").expect_err("garbage must not open");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&db.display().to_string()), "{err}");

    // The appliance's way in: the corrupt database is kept aside and a fresh one opened.
    let (store, aside) = Store::open_or_rebuild(dir.path(), CACHE).unwrap();
    let aside = aside.expect("moved aside");
    assert!(aside.file_name().unwrap().to_str().unwrap().starts_with("db.corrupt-"));
    assert_eq!(std::fs::read(aside.join("conf")).unwrap(), b"\x00garbage that is not a sled config");
    assert_eq!(store.pending_count(), 0);
}

/// Tiny deterministic PRNG: the sequence is reproducible from the seed in a failure message.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn check(
    store: &Store,
    session: SessionId,
    model: &BTreeMap<JobId, StatusName>,
    stages: &BTreeMap<JobId, Stage>,
    ctx: &str,
) {
    let jobs = store.session_jobs(session).unwrap();
    let stored: BTreeMap<JobId, StatusName> = jobs.iter().map(|j| (j.id, j.status())).collect();
    assert_eq!(&stored, model, "{ctx}");
    let running: BTreeMap<JobId, Stage> = jobs
        .iter()
        .filter_map(|j| match j.state {
            JobState::Processing { stage, .. } => Some((j.id, stage)),
            _ => None,
        })
        .collect();
    assert_eq!(&running, stages, "{ctx}: each running job's milestone");
    // What the sessions list reads instead of whole jobs says the same.
    let heads: Vec<JobHead> = jobs.iter().map(JobHead::from).collect();
    assert_eq!(store.session_job_heads(session).unwrap(), heads, "{ctx}: job heads");
    let count = |s| model.values().filter(|v| **v == s).count();
    assert_eq!(store.pending_count(), count(StatusName::Pending), "{ctx}: queue");
    assert_eq!(store.processing_count(), count(StatusName::Processing), "{ctx}: processing index");
}

/// Opens the store again after dropping it. sled releases its file lock from a background
/// flusher thread shortly after the last handle goes, so an immediate reopen in the same
/// process may briefly see it held (a real restart is a new process, where this cannot happen).
fn reopen(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir, CACHE) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn random_operations_with_restarts_match_a_model() {
    for seed in [1u64, 7, 42, 1234, 99_999] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = reopen(dir.path());
        let s = session(&store, t(0));
        let mut model: BTreeMap<JobId, StatusName> = BTreeMap::new();
        // Running jobs' milestones (kept unflushed: a restart may lose them, and reclaims the
        // job whatever its stage).
        let mut stages: BTreeMap<JobId, Stage> = BTreeMap::new();
        let mut rng = XorShift(seed * 2_654_435_761 + 1);
        let mut n = 0;
        let mut suspects = std::collections::HashSet::new();
        for step in 0..300 {
            let ctx = format!("seed {seed} step {step}");
            match rng.next(11) {
                0..=2 => {
                    n += 1;
                    let j = enqueue(&store, s, n);
                    model.insert(j.id, StatusName::Pending);
                }
                3..=4 => {
                    // FIFO, except that a crash suspect runs alone (see `Job::suspect`).
                    let busy: Vec<JobId> =
                        model.iter().filter(|(_, v)| **v == StatusName::Processing).map(|(k, _)| *k).collect();
                    let next = model.iter().find(|(_, v)| **v == StatusName::Pending).map(|(k, _)| *k);
                    let expected = match next {
                        _ if busy.iter().any(|b| suspects.contains(b)) => None,
                        Some(p) if suspects.contains(&p) && !busy.is_empty() => None,
                        other => other,
                    };
                    let claimed = store.claim_next(0, t(step)).unwrap().map(|j| j.id);
                    assert_eq!(claimed, expected, "{ctx}: FIFO claim");
                    if let Some(id) = claimed {
                        model.insert(id, StatusName::Processing);
                        stages.insert(id, Stage::Read);
                    }
                }
                5..=6 => {
                    let Some(id) = model.iter().find(|(_, v)| **v == StatusName::Processing).map(|(k, _)| *k) else {
                        continue;
                    };
                    if rng.next(2) == 0 {
                        store.update(id, |j| j.complete(result(), t(step))).unwrap();
                        model.insert(id, StatusName::Completed);
                        stages.remove(&id);
                        suspects.remove(&id);
                    } else {
                        store.update(id, |j| j.fail(JobError::permanent("bad"), t(step))).unwrap();
                        model.insert(id, StatusName::Failed);
                        stages.remove(&id);
                        suspects.remove(&id);
                    }
                }
                7 => {
                    // An illegal transition changes nothing, nor does a milestone for a job
                    // that is not running.
                    if let Some(id) = model.iter().find(|(_, v)| **v == StatusName::Completed).map(|(k, _)| *k) {
                        assert!(store.update(id, |j| j.claim(0, t(step))).is_err(), "{ctx}");
                        assert!(store.update_progress(id, |j| j.advance(Stage::Save, t(step))).is_err(), "{ctx}");
                    }
                    if let Some(id) = model.iter().find(|(_, v)| **v == StatusName::Pending).map(|(k, _)| *k) {
                        assert!(store.update_progress(id, |j| j.advance(Stage::Decode, t(step))).is_err(), "{ctx}");
                    }
                }
                8 => {
                    // A running job reaches a later stage (or the same one again).
                    let running: Vec<JobId> = stages.keys().copied().collect();
                    if running.is_empty() {
                        continue;
                    }
                    let id = running[rng.next(running.len() as u64) as usize];
                    const ALL: [Stage; 6] =
                        [Stage::Read, Stage::Decode, Stage::Locate, Stage::Segment, Stage::Detect, Stage::Save];
                    let next = stages[&id].max(ALL[rng.next(ALL.len() as u64) as usize]);
                    let stored = store.update_progress(id, |j| j.advance(next, t(step))).unwrap();
                    assert_eq!(stored.status(), StatusName::Processing, "{ctx}");
                    stages.insert(id, next);
                }
                _ => {
                    // Restart: drop without ceremony, reopen, reclaim (generous attempt budget).
                    drop(store);
                    store = reopen(dir.path());
                    for j in store.reclaim_orphans(100, t(step)).unwrap() {
                        assert_eq!(j.status(), StatusName::Pending, "{ctx}");
                    }
                    let in_flight: Vec<JobId> =
                        model.iter().filter(|(_, v)| **v == StatusName::Processing).map(|(k, _)| *k).collect();
                    if in_flight.len() > 1 {
                        suspects.extend(in_flight.iter().copied());
                    }
                    for id in in_flight {
                        model.insert(id, StatusName::Pending);
                    }
                    stages.clear();
                }
            }
            check(&store, s, &model, &stages, &ctx);
        }
    }
}
