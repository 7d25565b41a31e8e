//! `--notify-webhook URL`: a JSON POST per finished upload session, and per location whose count
//! dropped (`"outcome": "count_dropped"`), for machines without a desktop. Deliveries run on their own thread with a bounded queue and retries with back-off,
//! so a slow or dead receiver never slows the engine; when the queue is full a new notice is
//! dropped with a warning rather than waited for.

use std::{
    sync::mpsc::{self, SyncSender, TrySendError},
    thread,
    time::Duration,
};

use demeter_domain::notify::{CountDrop, SessionReport};
use demeter_engine::EngineEvent;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// Notices waiting for delivery, at most.
const QUEUE: usize = 256;
/// Waits between attempts; after the last the notice is given up (and logged).
const BACKOFF_SECS: [u64; 6] = [1, 2, 4, 8, 16, 32];

/// What the webhook is told: a finished session, or a location's drop.
#[derive(Debug, Clone)]
enum Notice {
    Session(SessionReport),
    Drop(Box<CountDrop>),
}

impl Notice {
    fn body(&self) -> serde_json::Value {
        match self {
            Notice::Session(r) => serde_json::to_value(r),
            Notice::Drop(d) => serde_json::to_value(d),
        }
        .expect("serialisable")
    }

    /// What the log names it by.
    fn label(&self) -> String {
        match self {
            Notice::Session(r) => format!("session {}", r.upload_session_id),
            Notice::Drop(d) => format!("count drop at {}", d.location_id),
        }
    }
}

pub struct Webhook {
    tx: SyncSender<Notice>,
}

impl Webhook {
    pub fn start(url: String) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Notice>(QUEUE);
        thread::Builder::new()
            .name("demeter-webhook".into())
            .spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                for notice in rx {
                    deliver(&agent, &url, &notice);
                }
            })
            .expect("spawning the webhook thread");
        Self { tx }
    }

    /// Queues a notice without ever blocking.
    fn send(&self, notice: Notice) {
        match self.tx.try_send(notice) {
            Ok(()) => {}
            Err(TrySendError::Full(n)) => warn!(notice = %n.label(), "webhook queue full; notice dropped"),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn deliver(agent: &ureq::Agent, url: &str, notice: &Notice) {
    let body = notice.body();
    let label = notice.label();
    for (attempt, wait) in std::iter::once(0).chain(BACKOFF_SECS).enumerate() {
        if wait > 0 {
            thread::sleep(Duration::from_secs(wait));
        }
        match agent.post(url).send_json(body.clone()) {
            Ok(_) => {
                info!(notice = %label, attempt = attempt + 1, "webhook delivered");
                return;
            }
            Err(e) => {
                warn!(notice = %label, attempt = attempt + 1, error = %e, "webhook failed; will retry")
            }
        }
    }
    warn!(notice = %label, "webhook given up after {} attempts", BACKOFF_SECS.len() + 1);
}

/// Passes every finished session and every count drop from the engine to the webhook.
pub async fn forward(mut rx: broadcast::Receiver<EngineEvent>, hook: Webhook) {
    loop {
        match rx.recv().await {
            Ok(EngineEvent::SessionFinished(report)) => hook.send(Notice::Session(report)),
            Ok(EngineEvent::CountDropped(drop)) => hook.send(Notice::Drop(drop)),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => warn!(missed = n, "webhook forwarder fell behind"),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
