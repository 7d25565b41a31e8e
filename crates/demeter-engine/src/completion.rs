//! Notices when an upload session is finished and announces it once, as
//! [`EngineEvent::SessionFinished`], for the webhook and desktop notifications.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    sync::Arc,
    thread,
    time::Duration,
};

use demeter_domain::{notify::SessionReport, Job, JobId, SessionId};
use tokio::sync::broadcast::error::TryRecvError;
use tracing::{info, warn};

use crate::engine::{EngineEvent, Shared};

pub(crate) fn spawn(shared: Arc<Shared>) -> thread::JoinHandle<()> {
    let mut rx = shared.events.subscribe();
    let mut tracker = Tracker::default();
    thread::Builder::new()
        .name("demeter-completion".into())
        .spawn(move || loop {
            // Polled, not blocking: this thread holds the sender's owner, so the channel never
            // closes while it waits, and shutdown must be noticed.
            if shared.stopping() {
                return;
            }
            match rx.try_recv() {
                Ok(EngineEvent::Job(job)) => {
                    if let Some(report) = tracker.on_job(&*shared, &job) {
                        info!(session = %report.upload_session_id, outcome = ?report.outcome, "{}", report.message);
                        shared.publish(EngineEvent::SessionFinished(report));
                    }
                }
                Ok(_) => {}
                Err(TryRecvError::Empty) => thread::sleep(Duration::from_millis(100)),
                Err(TryRecvError::Lagged(n)) => {
                    warn!(missed = n, "completion tracker fell behind; re-reading open sessions");
                    tracker.open.clear();
                }
                Err(TryRecvError::Closed) => return,
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
#[derive(Default)]
struct Tracker {
    /// Open sessions → their unfinished jobs. Seeded from the store the first time a session
    /// is seen (or after the tracker lost events), then kept from the events alone.
    open: HashMap<SessionId, HashSet<JobId>>,
    /// Sessions announced in this run, so a repeated terminal event does not announce twice.
    announced: HashSet<SessionId>,
}

impl Tracker {
    /// Takes one stored job change; returns the session's report when this change finished it.
    fn on_job(&mut self, jobs: &impl Jobs, job: &Job) -> Option<SessionReport> {
        let session = job.upload_session_id;
        if job.is_terminal() && self.announced.contains(&session) && !self.open.contains_key(&session) {
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
                e.insert(jobs.session_jobs(session)?.iter().filter(|j| !j.is_terminal()).map(|j| j.id).collect())
            }
        };
        if job.is_terminal() {
            unfinished.remove(&job.id);
        } else {
            unfinished.insert(job.id);
            // Not finished (again, e.g. after a retry): announce it when it is.
            self.announced.remove(&session);
        }
        if !unfinished.is_empty() {
            return None;
        }
        self.open.remove(&session);
        // Read once, when it finishes, for the report's totals.
        let report = SessionReport::from_jobs(session, &jobs.session_jobs(session)?)?;
        self.announced.insert(session);
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
        let mut tracker = Tracker::default();
        let (mut a, mut b) = (job(session, "a.jpg"), job(session, "b.jpg"));
        for j in [&a, &b] {
            store.0.insert(j.id, j.clone());
            assert!(tracker.on_job(&store, j).is_none(), "pending: not finished");
        }
        a.claim(0, t(1)).unwrap();
        let a_running = a.clone();
        a.complete(JobResult::default(), t(2)).unwrap();
        b.claim(1, t(1)).unwrap();
        b.fail(JobError::permanent("not a photo"), t(2)).unwrap();
        store.0.insert(a.id, a.clone());
        store.0.insert(b.id, b.clone());
        assert!(tracker.on_job(&store, &a).is_none(), "b still unfinished");
        let report = tracker.on_job(&store, &b).expect("announced when the last job ends");
        assert_eq!(report.message, "Completed 1, failed 1");
        // a's "processing" event, published by another thread, arrives after a finished: stale.
        assert!(tracker.on_job(&store, &a_running).is_none());
        assert!(tracker.on_job(&store, &a).is_none(), "not announced a second time");
        assert!(tracker.on_job(&store, &b).is_none());
    }

    #[test]
    fn a_retried_session_is_announced_again_when_it_finishes_again() {
        let session = SessionId::new_v7();
        let mut store = Stored::default();
        let mut tracker = Tracker::default();
        let mut a = job(session, "a.jpg");
        a.claim(0, t(1)).unwrap();
        a.fail(JobError::permanent("unreadable"), t(2)).unwrap();
        store.0.insert(a.id, a.clone());
        assert!(tracker.on_job(&store, &a).is_some());
        // Retried: the store has it pending again, so the event re-opens the session.
        let retried = job(session, "a.jpg");
        let retried = Job { id: a.id, ..retried };
        store.0.insert(a.id, retried.clone());
        assert!(tracker.on_job(&store, &retried).is_none());
        let mut done = retried;
        done.claim(0, t(3)).unwrap();
        done.complete(JobResult::default(), t(4)).unwrap();
        store.0.insert(done.id, done.clone());
        assert!(tracker.on_job(&store, &done).is_some(), "the retry's outcome is announced");
    }
}
