//! Native notifications: one per finished upload session, never one per photo. Sessions that
//! finish within a few seconds of each other share one notification. Clicking it opens that
//! session (or the session list, for several) in the app's window.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI32, Ordering},
        Mutex,
    },
    time::Duration,
};

use demeter_domain::{
    notify::{Outcome, SessionReport, Totals},
    SessionId,
};
use demeter_engine::EngineEvent;
use tauri::{AppHandle, Manager, Runtime};
use tauri_plugin_notification::NotificationExt;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// How long to wait after a session finishes for others to finish too.
pub const COALESCE: Duration = Duration::from_secs(2);

/// One notification's text and where clicking it leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub title: String,
    pub body: String,
    pub outcome: Outcome,
    /// The one session to open, or `None` for the session list.
    pub open: Option<SessionId>,
}

impl Digest {
    /// Sums up finished sessions (at least one).
    pub fn of(reports: &[SessionReport]) -> Self {
        let totals = Totals::of(reports);
        let n = reports.len();
        let title = match (n, totals.outcome) {
            (1, Outcome::Success) => "Photos processed".to_owned(),
            (1, Outcome::Partial) => "Photos processed — some failed".to_owned(),
            (1, Outcome::AllFailed) => "Processing failed".to_owned(),
            (_, Outcome::Success) => format!("{n} batches processed"),
            (_, Outcome::Partial) => format!("{n} batches processed — some failed"),
            (_, Outcome::AllFailed) => format!("{n} batches failed"),
        };
        let body = match totals.outcome {
            Outcome::Partial => format!("{} — click to review", totals.message()),
            _ => totals.message(),
        };
        let open = if let [one] = reports { Some(one.upload_session_id) } else { None };
        Self { title, body, outcome: totals.outcome, open }
    }

    /// A location's count fell: said at once, never folded into a batch's digest.
    pub fn of_drop(drop: &demeter_domain::notify::CountDrop) -> Self {
        let place = drop.location_name.as_deref().unwrap_or(&drop.location_id);
        Self {
            title: format!("Plants lost at {place}"),
            body: format!("{} — {}", drop.message, drop.filename),
            outcome: Outcome::Partial,
            open: None,
        }
    }
}

/// Where clicks on shown notifications lead, by notification id.
#[derive(Default)]
pub struct Clicks {
    next: AtomicI32,
    targets: Mutex<HashMap<i32, Option<SessionId>>>,
}

impl Clicks {
    fn remember(&self, open: Option<SessionId>) -> i32 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut t = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() > 256 {
            t.clear();
        }
        t.insert(id, open);
        id
    }

    fn target(&self, id: i32) -> Option<Option<SessionId>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner()).get(&id).copied()
    }
}

/// Registers the click handler once, at start-up: a click opens the window at the session.
pub fn on_click<R: Runtime>(
    app: &AppHandle<R>,
    open: impl Fn(&AppHandle<R>, Option<SessionId>) + Send + Sync + 'static,
) {
    let handle = app.clone();
    let registered = app.notification().on_action(move |performed| {
        if performed.action_id() != "tap" {
            return;
        }
        let Some(id) = performed.notification().map(|n| n.id()) else { return };
        let Some(target) = handle.state::<Clicks>().target(id) else { return };
        info!(notification = id, session = ?target, "notification clicked");
        open(&handle, target);
    });
    if let Err(e) = registered {
        warn!(error = %e, "notification clicks will not open sessions");
    }
}

/// Shows a notification for each group of sessions finishing together, and for each location
/// whose count dropped, until the engine stops.
pub async fn forward<R: Runtime>(app: AppHandle<R>, mut rx: broadcast::Receiver<EngineEvent>) {
    use broadcast::error::RecvError;
    loop {
        let first = match rx.recv().await {
            Ok(EngineEvent::SessionFinished(r)) => r,
            Ok(EngineEvent::CountDropped(drop)) => {
                show(&app, &Digest::of_drop(&drop));
                continue;
            }
            Ok(_) => continue,
            Err(RecvError::Lagged(n)) => {
                warn!(missed = n, "notifications fell behind; some finished sessions may not be announced");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + COALESCE;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(EngineEvent::SessionFinished(r))) => {
                    batch.retain(|b: &SessionReport| b.upload_session_id != r.upload_session_id);
                    batch.push(r);
                }
                Ok(Ok(EngineEvent::CountDropped(drop))) => show(&app, &Digest::of_drop(&drop)),
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) | Err(_) => break,
            }
        }
        show(&app, &Digest::of(&batch));
    }
}

fn show<R: Runtime>(app: &AppHandle<R>, digest: &Digest) {
    let id = app.state::<Clicks>().remember(digest.open);
    let shown = app.notification().builder().id(id).title(&digest.title).body(&digest.body).show();
    match shown {
        Ok(()) => info!(title = %digest.title, body = %digest.body, "notification sent"),
        Err(e) => warn!(error = %e, title = %digest.title, "cannot show a notification"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::report;

    #[test]
    fn one_session_says_what_happened_and_opens_it() {
        let r = report(50, 50, 912);
        let d = Digest::of(std::slice::from_ref(&r));
        assert_eq!(
            (d.title.as_str(), d.body.as_str()),
            ("Photos processed", "Processed 50 photos — 912 plants counted")
        );
        assert_eq!(d.open, Some(r.upload_session_id));
        let d = Digest::of(&[report(50, 47, 800)]);
        assert_eq!(d.body, "Completed 47, failed 3 — click to review");
        let d = Digest::of(&[report(12, 0, 0)]);
        assert_eq!(
            (d.title.as_str(), d.body.as_str()),
            ("Processing failed", "All 12 photos failed — check the model or GPU")
        );
    }

    #[test]
    fn sessions_finishing_together_share_one_notification() {
        let d = Digest::of(&[report(3, 3, 10), report(2, 2, 5)]);
        assert_eq!(
            (d.title.as_str(), d.body.as_str()),
            ("2 batches processed", "Processed 5 photos — 15 plants counted")
        );
        assert_eq!(d.open, None, "several sessions open the list");
        let d = Digest::of(&[report(3, 3, 10), report(2, 1, 5)]);
        assert_eq!((d.outcome, d.body.as_str()), (Outcome::Partial, "Completed 4, failed 1 — click to review"));
        let d = Digest::of(&[report(4, 0, 0), report(4, 0, 0)]);
        assert_eq!((d.outcome, d.body.as_str()), (Outcome::AllFailed, "All 8 photos failed — check the model or GPU"));
    }

    #[test]
    fn a_count_drop_is_its_own_notification_naming_the_place() {
        let drop = demeter_domain::notify::CountDrop::new(
            "B3".into(),
            Some("Bench 3".into()),
            20,
            14,
            uuid::Uuid::nil(),
            chrono::Utc::now(),
            "B3/IMG_0412.jpg".into(),
        );
        let d = Digest::of_drop(&drop);
        assert_eq!(d.title, "Plants lost at Bench 3");
        assert_eq!(d.body, "Bench 3: 20 → 14 plants (−30 %) — B3/IMG_0412.jpg");
        assert_eq!(d.open, None);
    }
}
