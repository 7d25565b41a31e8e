//! Notices when an upload session is finished and announces it once, as
//! [`EngineEvent::SessionFinished`], for the webhook and desktop notifications.

use std::{collections::HashSet, sync::Arc, thread, time::Duration};

use demeter_domain::{notify::SessionReport, SessionId};
use tokio::sync::broadcast::error::TryRecvError;
use tracing::{info, warn};

use crate::engine::{EngineEvent, Shared};

pub(crate) fn spawn(shared: Arc<Shared>) -> thread::JoinHandle<()> {
    let mut rx = shared.events.subscribe();
    // No start-up scan is needed: a session finished before this run gets no job events in it,
    // and one that does (a retry, a reclaimed job) first becomes unfinished, so every
    // announcement here follows an event of this run that left the session unfinished.
    let mut finished: HashSet<SessionId> = HashSet::new();
    thread::Builder::new()
        .name("demeter-completion".into())
        .spawn(move || loop {
            // Polled, not blocking: this thread holds the sender's owner, so the channel never
            // closes while it waits, and shutdown must be noticed.
            if shared.stopping() {
                return;
            }
            let job = match rx.try_recv() {
                Ok(EngineEvent::Job(job)) => job,
                Ok(_) => continue,
                Err(TryRecvError::Empty) => {
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(TryRecvError::Lagged(n)) => {
                    warn!(missed = n, "completion tracker fell behind; a finished session may go unannounced");
                    continue;
                }
                Err(TryRecvError::Closed) => return,
            };
            let session = job.upload_session_id;
            let jobs = match shared.store.session_jobs(session) {
                Ok(j) => j,
                Err(e) => {
                    warn!(error = %e, "cannot read a session's jobs");
                    continue;
                }
            };
            match SessionReport::from_jobs(session, &jobs) {
                Some(report) if finished.insert(session) => {
                    info!(session = %session, outcome = ?report.outcome, "{}", report.message);
                    shared.publish(EngineEvent::SessionFinished(report));
                }
                Some(_) => {}
                // Not finished (again, e.g. after a retry): announce it when it is.
                None => {
                    finished.remove(&session);
                }
            }
        })
        .expect("spawning the completion thread")
}
