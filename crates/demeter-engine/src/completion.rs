//! Notices when an upload session is finished and announces it once, as
//! [`EngineEvent::SessionFinished`], for the webhook and desktop notifications.

use std::{collections::HashSet, sync::Arc, thread, time::Duration};

use demeter_domain::{notify::SessionReport, SessionId};
use tokio::sync::broadcast::error::TryRecvError;
use tracing::{info, warn};

use crate::{
    engine::{EngineEvent, Shared},
    EngineError,
};

/// Sessions looked at when starting, to know which ones were finished before this run.
const RECENT: usize = 500;

pub(crate) fn spawn(shared: Arc<Shared>) -> Result<thread::JoinHandle<()>, EngineError> {
    let mut rx = shared.events.subscribe();
    // Sessions finished before this start were announced by the previous run: not again.
    let mut finished: HashSet<SessionId> = HashSet::new();
    for s in shared.store.recent_sessions(RECENT)? {
        if SessionReport::from_jobs(s.id, &shared.store.session_jobs(s.id)?).is_some() {
            finished.insert(s.id);
        }
    }
    Ok(thread::Builder::new()
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
        .expect("spawning the completion thread"))
}
