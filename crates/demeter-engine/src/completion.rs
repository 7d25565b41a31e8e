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
                    if let Some(report) = tracker.on_job(&shared, &job) {
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

/// Which sessions are open and which of their jobs are still unfinished, kept from the events
/// so a job event costs O(1) instead of a read of its whole session (a folder of 5,000 photos
/// would otherwise cost 5,000 × 5,000 job reads).
///
/// No start-up scan is needed: a session finished before this run gets no job events in it,
/// and one that does (a retry, a reclaimed job, a reprocess) first becomes unfinished, so every
/// announcement here follows an event of this run that left the session unfinished.
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
    fn on_job(&mut self, shared: &Shared, job: &Job) -> Option<SessionReport> {
        let session = job.upload_session_id;
        if job.is_terminal() && self.announced.contains(&session) && !self.open.contains_key(&session) {
            return None;
        }
        let unfinished = match self.open.entry(session) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(unfinished_jobs(shared, session)?),
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
        let jobs =
            shared.store.session_jobs(session).map_err(|e| warn!(error = %e, "cannot read a session's jobs")).ok()?;
        let report = SessionReport::from_jobs(session, &jobs)?;
        self.announced.insert(session);
        Some(report)
    }
}

fn unfinished_jobs(shared: &Shared, session: SessionId) -> Option<HashSet<JobId>> {
    match shared.store.session_jobs(session) {
        Ok(jobs) => Some(jobs.iter().filter(|j| !j.is_terminal()).map(|j| j.id).collect()),
        Err(e) => {
            warn!(error = %e, "cannot read a session's jobs");
            None
        }
    }
}
