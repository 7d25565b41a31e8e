//! Notices when an upload session is finished and announces it once, as
//! [`EngineEvent::SessionFinished`], for the webhook, desktop notifications, the tray and the
//! page.
//!
//! A session is finished when every job in it is terminal **and** no photo has joined it for
//! `session_gap_secs` (the gap after which the next photo starts a new session): six photos
//! copied 5 s apart are one batch and one announcement, not six. A session that finishes again
//! (a retry, a reprocess) is announced again, as an update.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    sync::{mpsc, Arc},
    thread,
    time::Duration,
};

use chrono::{DateTime, Utc};
use demeter_domain::{notify::SessionReport, Job, JobId, SessionId};
use tracing::{info, warn};

use crate::engine::{EngineEvent, Shared};

/// What the tracker's thread receives: every job change the engine publishes, and a wake-up at
/// shutdown.
pub(crate) enum Message {
    Job(Box<Job>),
    Wake,
}

/// Longest sleep with no session waiting for its gap (any message wakes it sooner).
const IDLE: Duration = Duration::from_secs(3600);

pub(crate) fn spawn(shared: Arc<Shared>, rx: mpsc::Receiver<Message>) -> thread::JoinHandle<()> {
    let gap = chrono::Duration::seconds(shared.config.watch.session_gap_secs as i64);
    let mut tracker = Tracker::new(gap);
    thread::Builder::new()
        .name("demeter-completion".into())
        .spawn(move || {
            let announce = |report: SessionReport| {
                info!(session = %report.upload_session_id, outcome = ?report.outcome, update = report.update, "{}", report.message);
                shared.publish(EngineEvent::SessionFinished(report));
            };
            loop {
                if shared.stopping() {
                    return;
                }
                // Asleep until the next message or until the first drained session's gap closes.
                let wait = tracker
                    .next_due()
                    .map(|due| (due - shared.clock.now()).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(IDLE);
                match rx.recv_timeout(wait) {
                    Ok(Message::Job(job)) => {
                        if let Some(report) = tracker.on_job(&*shared, &job, shared.clock.now()) {
                            announce(report);
                        }
                    }
                    Ok(Message::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                for report in tracker.due(&*shared, shared.clock.now()) {
                    announce(report);
                }
            }
        })
        .expect("spawning the completion thread")
}

/// What the tracker reads from the store: a session's jobs, and one job as stored now.
trait Jobs {
    fn session_jobs(&self, session: SessionId) -> Option<Vec<Job>>;
    fn job(&self, id: JobId) -> Option<Job>;
}

impl Jobs for Shared {
    fn session_jobs(&self, session: SessionId) -> Option<Vec<Job>> {
        self.store.session_jobs(session).map_err(|e| warn!(error = %e, "cannot read a session's jobs")).ok()
    }

    fn job(&self, id: JobId) -> Option<Job> {
        self.store.job(id).map_err(|e| warn!(error = %e, "cannot read a job")).ok().flatten()
    }
}

/// Which sessions are open and which of their jobs are still unfinished, kept from the events
/// so a job event costs O(1) instead of a read of its whole session (a folder of 5,000 photos
/// would otherwise cost 5,000 × 5,000 job reads).
///
/// No start-up scan is needed: a session finished before this run gets no job events in it,
/// and one that does (a retry, a reclaimed job, a reprocess) first becomes unfinished, so every
/// announcement here follows an event of this run that left the session unfinished.
///
/// Events of one job can arrive out of order (a milestone published by one thread after the
/// worker's terminal event), so a non-terminal event for a job not known to be unfinished is
/// checked against the store: if the job is already finished there, the event is stale and
/// must not re-open an announced session (which then announced it a second time).
struct Tracker {
    /// `session_gap_secs`: a drained session is finished this long after its last photo came.
    gap: chrono::Duration,
    /// Open sessions → their unfinished jobs. Seeded from the store the first time a session
    /// is seen, then kept from the events alone.
    open: HashMap<SessionId, HashSet<JobId>>,
    /// When each open or waiting session's newest photo arrived (its newest job's creation).
    last_arrival: HashMap<SessionId, DateTime<Utc>>,
    /// Drained sessions waiting for their gap to close, and when it does.
    waiting: HashMap<SessionId, DateTime<Utc>>,
    /// Sessions announced in this run and not re-opened since, so a repeated terminal event
    /// does not announce twice.
    announced: HashSet<SessionId>,
    /// Sessions ever announced in this run: finishing again is an update.
    finished_before: HashSet<SessionId>,
}

impl Tracker {
    fn new(gap: chrono::Duration) -> Self {
        Self {
            gap,
            open: HashMap::new(),
            last_arrival: HashMap::new(),
            waiting: HashMap::new(),
            announced: HashSet::new(),
            finished_before: HashSet::new(),
        }
    }

    /// Takes one stored job change at `now`; returns the session's report when this change
    /// finished it and its gap is already closed.
    fn on_job(&mut self, jobs: &impl Jobs, job: &Job, now: DateTime<Utc>) -> Option<SessionReport> {
        let session = job.upload_session_id;
        if job.is_terminal()
            && (self.announced.contains(&session) || self.waiting.contains_key(&session))
            && !self.open.contains_key(&session)
        {
            return None;
        }
        if !job.is_terminal()
            && !self.open.get(&session).is_some_and(|u| u.contains(&job.id))
            && jobs.job(job.id).is_some_and(|stored| stored.is_terminal())
        {
            return None;
        }
        let unfinished = match self.open.entry(session) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let all = jobs.session_jobs(session)?;
                if let Some(last) = all.iter().map(|j| j.created_at).max() {
                    let known = self.last_arrival.entry(session).or_insert(last);
                    *known = (*known).max(last);
                }
                e.insert(all.iter().filter(|j| !j.is_terminal()).map(|j| j.id).collect())
            }
        };
        let arrived = self.last_arrival.entry(session).or_insert(job.created_at);
        *arrived = (*arrived).max(job.created_at);
        if job.is_terminal() {
            unfinished.remove(&job.id);
        } else {
            unfinished.insert(job.id);
            // Not finished (a new photo, a retry): announce it when it is.
            self.announced.remove(&session);
            self.waiting.remove(&session);
        }
        if !unfinished.is_empty() {
            return None;
        }
        self.open.remove(&session);
        let due = self.last_arrival[&session] + self.gap;
        if now < due {
            self.waiting.insert(session, due);
            return None;
        }
        self.report(jobs, session)
    }

    /// When the first waiting session's gap closes.
    fn next_due(&self) -> Option<DateTime<Utc>> {
        self.waiting.values().min().copied()
    }

    /// Reports for the waiting sessions whose gap has closed by `now`.
    fn due(&mut self, jobs: &impl Jobs, now: DateTime<Utc>) -> Vec<SessionReport> {
        let closed: Vec<SessionId> = self.waiting.iter().filter(|(_, due)| **due <= now).map(|(s, _)| *s).collect();
        closed
            .into_iter()
            .filter_map(|session| {
                self.waiting.remove(&session);
                self.report(jobs, session)
            })
            .collect()
    }

    /// The finished session's report, read once from the store for its totals; `None` when a
    /// job is unfinished there after all.
    fn report(&mut self, jobs: &impl Jobs, session: SessionId) -> Option<SessionReport> {
        let mut report = SessionReport::from_jobs(session, &jobs.session_jobs(session)?)?;
        self.last_arrival.remove(&session);
        self.announced.insert(session);
        if !self.finished_before.insert(session) {
            report = report.as_update();
        }
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use demeter_domain::{JobError, JobResult};

    use super::*;

    /// The store as a map: jobs as stored now.
    #[derive(Default)]
    struct Stored(HashMap<JobId, Job>);

    impl Jobs for Stored {
        fn session_jobs(&self, session: SessionId) -> Option<Vec<Job>> {
            Some(self.0.values().filter(|j| j.upload_session_id == session).cloned().collect())
        }

        fn job(&self, id: JobId) -> Option<Job> {
            self.0.get(&id).cloned()
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn job(session: SessionId, name: &str) -> Job {
        Job::new(JobId::new_v7(), session, name.into(), format!("/p/{name}").into(), name.into(), 1, 1, t(0))
    }

    #[test]
    fn a_session_is_announced_once_even_when_a_stale_event_arrives_after_it_finished() {
        let session = SessionId::new_v7();
        let mut store = Stored::default();
        let mut tracker = Tracker::new(chrono::Duration::zero());
        let (mut a, mut b) = (job(session, "a.jpg"), job(session, "b.jpg"));
        for j in [&a, &b] {
            store.0.insert(j.id, j.clone());
            assert!(tracker.on_job(&store, j, t(10)).is_none(), "pending: not finished");
        }
        a.claim(0, t(1)).unwrap();
        let a_running = a.clone();
        a.complete(JobResult::default(), t(2)).unwrap();
        b.claim(1, t(1)).unwrap();
        b.fail(JobError::permanent("not a photo"), t(2)).unwrap();
        store.0.insert(a.id, a.clone());
        store.0.insert(b.id, b.clone());
        assert!(tracker.on_job(&store, &a, t(10)).is_none(), "b still unfinished");
        let report = tracker.on_job(&store, &b, t(10)).expect("announced when the last job ends");
        assert_eq!(report.message, "Completed 1, failed 1");
        // a's "processing" event, published by another thread, arrives after a finished: stale.
        assert!(tracker.on_job(&store, &a_running, t(10)).is_none());
        assert!(tracker.on_job(&store, &a, t(10)).is_none(), "not announced a second time");
        assert!(tracker.on_job(&store, &b, t(10)).is_none());
    }

    #[test]
    fn a_retried_session_is_announced_again_when_it_finishes_again() {
        let session = SessionId::new_v7();
        let mut store = Stored::default();
        let mut tracker = Tracker::new(chrono::Duration::zero());
        let mut a = job(session, "a.jpg");
        a.claim(0, t(1)).unwrap();
        a.fail(JobError::permanent("unreadable"), t(2)).unwrap();
        store.0.insert(a.id, a.clone());
        assert!(tracker.on_job(&store, &a, t(10)).is_some());
        // Retried: the store has it pending again, so the event re-opens the session.
        let retried = job(session, "a.jpg");
        let retried = Job { id: a.id, ..retried };
        store.0.insert(a.id, retried.clone());
        assert!(tracker.on_job(&store, &retried, t(10)).is_none());
        let mut done = retried;
        done.claim(0, t(3)).unwrap();
        done.complete(JobResult::default(), t(4)).unwrap();
        store.0.insert(done.id, done.clone());
        let again = tracker.on_job(&store, &done, t(10)).expect("the retry's outcome is announced");
        assert!(again.update && again.message.starts_with("Updated: "), "{again:?}");
    }

    #[test]
    fn a_batch_arriving_over_time_is_announced_once_after_the_gap() {
        // Six photos 5 s apart, each processed before the next arrives; the gap is 30 s.
        let session = SessionId::new_v7();
        let mut store = Stored::default();
        let mut tracker = Tracker::new(chrono::Duration::seconds(30));
        for k in 0..6 {
            let at = t(5 * k);
            let mut j = Job::new(
                JobId::new_v7(),
                session,
                format!("{k}.jpg"),
                format!("/p/{k}.jpg").into(),
                "x".into(),
                1,
                1,
                at,
            );
            store.0.insert(j.id, j.clone());
            assert!(tracker.on_job(&store, &j, at).is_none());
            j.claim(0, at).unwrap();
            j.complete(JobResult::default(), at + chrono::Duration::seconds(1)).unwrap();
            store.0.insert(j.id, j.clone());
            assert!(
                tracker.on_job(&store, &j, at + chrono::Duration::seconds(1)).is_none(),
                "photo {k}: the gap is open"
            );
        }
        // The last photo came at 25 s: due at 55 s.
        assert_eq!(tracker.next_due(), Some(t(55)));
        assert!(tracker.due(&store, t(54)).is_empty());
        let reports = tracker.due(&store, t(55));
        assert_eq!(reports.len(), 1);
        assert_eq!((reports[0].total, reports[0].update), (6, false));
        assert!(tracker.due(&store, t(100)).is_empty(), "once");
        assert_eq!(tracker.next_due(), None);
    }

    #[test]
    fn a_photo_within_the_gap_keeps_the_session_open() {
        let session = SessionId::new_v7();
        let mut store = Stored::default();
        let mut tracker = Tracker::new(chrono::Duration::seconds(30));
        let mut a = job(session, "a.jpg");
        store.0.insert(a.id, a.clone());
        tracker.on_job(&store, &a, t(0));
        a.claim(0, t(1)).unwrap();
        a.complete(JobResult::default(), t(2)).unwrap();
        store.0.insert(a.id, a.clone());
        assert!(tracker.on_job(&store, &a, t(2)).is_none());
        // b arrives at 20 s: the session is open again; a's gap no longer matters.
        let b = Job::new(JobId::new_v7(), session, "b.jpg".into(), "/p/b.jpg".into(), "b".into(), 1, 1, t(20));
        store.0.insert(b.id, b.clone());
        assert!(tracker.on_job(&store, &b, t(20)).is_none());
        assert!(tracker.due(&store, t(31)).is_empty(), "b is still pending");
        let mut b = b;
        b.claim(0, t(21)).unwrap();
        b.fail(JobError::permanent("not a photo"), t(22)).unwrap();
        store.0.insert(b.id, b.clone());
        assert!(tracker.on_job(&store, &b, t(22)).is_none());
        assert_eq!(tracker.next_due(), Some(t(50)));
        let r = tracker.due(&store, t(50));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].message, "Completed 1, failed 1");
    }
}
