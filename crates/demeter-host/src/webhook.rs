//! `--notify-webhook URL`: a JSON POST per finished upload session, for machines without a
//! desktop. Deliveries run on their own thread with a bounded queue and retries with back-off,
//! so a slow or dead receiver never slows the engine; when the queue is full a new notice is
//! dropped with a warning rather than waited for.

use std::{
    sync::mpsc::{self, SyncSender, TrySendError},
    thread,
    time::Duration,
};

use demeter_domain::notify::SessionReport;
use demeter_engine::EngineEvent;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// Notices waiting for delivery, at most.
const QUEUE: usize = 256;
/// Waits between attempts; after the last the notice is given up (and logged).
const BACKOFF_SECS: [u64; 6] = [1, 2, 4, 8, 16, 32];

pub struct Webhook {
    tx: SyncSender<SessionReport>,
}

impl Webhook {
    pub fn start(url: String) -> Self {
        let (tx, rx) = mpsc::sync_channel::<SessionReport>(QUEUE);
        thread::Builder::new()
            .name("demeter-webhook".into())
            .spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                for report in rx {
                    deliver(&agent, &url, &report);
                }
            })
            .expect("spawning the webhook thread");
        Self { tx }
    }

    /// Queues a notice without ever blocking.
    fn send(&self, report: SessionReport) {
        match self.tx.try_send(report) {
            Ok(()) => {}
            Err(TrySendError::Full(r)) => warn!(session = %r.upload_session_id, "webhook queue full; notice dropped"),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn deliver(agent: &ureq::Agent, url: &str, report: &SessionReport) {
    let body = serde_json::to_value(report).expect("serialisable");
    for (attempt, wait) in std::iter::once(0).chain(BACKOFF_SECS).enumerate() {
        if wait > 0 {
            thread::sleep(Duration::from_secs(wait));
        }
        match agent.post(url).send_json(body.clone()) {
            Ok(_) => {
                info!(session = %report.upload_session_id, attempt = attempt + 1, "webhook delivered");
                return;
            }
            Err(e) => {
                warn!(session = %report.upload_session_id, attempt = attempt + 1, error = %e, "webhook failed; will retry")
            }
        }
    }
    warn!(session = %report.upload_session_id, "webhook given up after {} attempts", BACKOFF_SECS.len() + 1);
}

/// Passes every finished session from the engine to the webhook.
pub async fn forward(mut rx: broadcast::Receiver<EngineEvent>, hook: Webhook) {
    loop {
        match rx.recv().await {
            Ok(EngineEvent::SessionFinished(report)) => hook.send(report),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => warn!(missed = n, "webhook forwarder fell behind"),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
