//! What the tray says: the batch in progress, summed over the upload sessions that still have
//! work, with an ETA from measured stage durations (the same estimates as the status page).

use std::{collections::BTreeSet, time::Instant};

use chrono::{DateTime, Utc};
use demeter_domain::{
    eta,
    notify::{Outcome, SessionReport, Totals},
    SessionId, SessionSummary,
};
use demeter_engine::EngineEvent;

/// The tray icon's three looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IconState {
    Idle,
    Processing,
    /// The last batch had failures (until the next batch starts).
    SomeFailed,
}

/// Photos of the sessions that still have work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overview {
    /// Finished (completed or failed) photos of the active sessions.
    pub done: u32,
    pub total: u32,
    pub failed: u32,
    /// Until the slowest active session is done; `None` while nothing has been measured yet.
    pub eta_seconds: Option<f64>,
    pub paused: bool,
    /// What the appliance warns of (`/health`): processing paused after repeated device errors,
    /// a CPU fallback, a rebuilt store.
    pub alerts: Alerts,
}

/// The appliance's warnings, as `/health` gives them, for the tray.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alerts {
    /// The device error that paused processing, while the inference breaker is open.
    pub breaker: Option<String>,
    /// Warnings of start-up that stay true while it runs (the CPU used instead of the GPU).
    pub warnings: Vec<String>,
}

impl Alerts {
    pub fn of(h: &demeter_domain::health::Health) -> Self {
        let open = h.inference.state != "closed";
        Self {
            breaker: open.then(|| h.inference.reason.clone().unwrap_or_else(|| "unknown error".into())),
            warnings: h.warnings.clone(),
        }
    }
}

/// The tray's menu text, title and icon for an overview and the sessions that finished since
/// the tray was last busy (the last batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayText {
    /// The first (disabled) menu item, e.g. "Processing 12 of 50 — about 4 min left".
    pub status: String,
    /// Next to the icon where the desktop shows it (`12/50`), empty when idle.
    pub title: String,
    pub icon: IconState,
    /// The icon's tooltip: the status and every warning.
    pub tooltip: String,
}

impl TrayText {
    pub fn new(o: &Overview, last: &[SessionReport]) -> Self {
        let (status, title, icon) = Self::progress(o, last);
        let mut t = Self { tooltip: format!("Demeter — {status}"), status, title, icon };
        if let Some(reason) = &o.alerts.breaker {
            t.status = "Processing paused: the inference device keeps failing".to_owned();
            t.icon = IconState::SomeFailed;
            t.tooltip = format!("Demeter — {}\n{reason}", t.status);
        }
        // Start-up warnings (the CPU instead of the GPU) are true all the time: the tooltip.
        for w in &o.alerts.warnings {
            t.tooltip.push_str(&format!("\n⚠ {w}"));
        }
        t
    }

    /// Status, title and icon from the photos' progress alone.
    fn progress(o: &Overview, last: &[SessionReport]) -> (String, String, IconState) {
        let working = o.total > o.done;
        if working && o.paused {
            let waiting = o.total - o.done;
            let photos = if waiting == 1 { "1 photo".to_owned() } else { format!("{waiting} photos") };
            return (format!("Paused — {photos} waiting"), format!("{}/{}", o.done, o.total), IconState::Processing);
        }
        if working {
            let left = match o.eta_seconds {
                Some(s) => time_left(s),
                None => "estimating time left".to_owned(),
            };
            return (
                format!("Processing {} of {} — {left}", o.done, o.total),
                format!("{}/{}", o.done, o.total),
                IconState::Processing,
            );
        }
        if last.is_empty() {
            return ("Idle — waiting for photos".to_owned(), String::new(), IconState::Idle);
        }
        let totals = Totals::of(last);
        let which = if last.len() == 1 { "last batch".to_owned() } else { format!("last {} batches", last.len()) };
        (
            format!("Idle — {which}: {}", totals.message()),
            String::new(),
            if totals.outcome == Outcome::Success { IconState::Idle } else { IconState::SomeFailed },
        )
    }
}

/// "less than a minute left", "about 4 min left", "about 1 h 20 min left".
pub fn time_left(seconds: f64) -> String {
    let minutes = (seconds / 60.0).ceil() as u64;
    match minutes {
        0 | 1 if seconds < 60.0 => "less than a minute left".to_owned(),
        m if m < 60 => format!("about {m} min left"),
        m if m % 60 == 0 => format!("about {} h left", m / 60),
        m => format!("about {} h {} min left", m / 60, m % 60),
    }
}

/// Follows which sessions have work, from engine events, and the last batch: the sessions that
/// finished together, grouped as the notifications group them (finished within
/// [`COALESCE`](crate::notifications::COALESCE) of the group's first), so the tray and the
/// notification always tell the same story.
#[derive(Debug, Default)]
pub struct Tracker {
    active: BTreeSet<SessionId>,
    pub last: Vec<SessionReport>,
    /// When the first session of `last` finished.
    last_since: Option<Instant>,
}

impl Tracker {
    /// Starts with the recent sessions that still have unfinished photos (after a restart).
    pub fn resume(store: &demeter_store::Store) -> Self {
        let mut t = Self::default();
        for s in store.recent_sessions(64).unwrap_or_default() {
            if store.session_jobs(s.id).is_ok_and(|jobs| jobs.iter().any(|j| !j.is_terminal())) {
                t.active.insert(s.id);
            }
        }
        t
    }

    /// Notes what an event changes; `true` when the tray should be redrawn.
    pub fn observe(&mut self, event: &EngineEvent) -> bool {
        self.observe_at(event, Instant::now())
    }

    /// [`Tracker::observe`] with the time the event arrived.
    pub fn observe_at(&mut self, event: &EngineEvent, now: Instant) -> bool {
        // Whether a session finishing now would be announced apart from `last`.
        let group_closed = self.last_since.is_none_or(|t| now.duration_since(t) > crate::notifications::COALESCE);
        match event {
            EngineEvent::Job(job) => {
                if !job.is_terminal() {
                    if self.active.is_empty() && group_closed {
                        // A new batch starts: the previous one is no longer "the last batch".
                        self.last.clear();
                        self.last_since = None;
                    }
                    self.active.insert(job.upload_session_id);
                }
                true
            }
            EngineEvent::SessionFinished(report) => {
                if group_closed {
                    self.last.clear();
                    self.last_since = Some(now);
                }
                self.active.remove(&report.upload_session_id);
                self.last.retain(|r| r.upload_session_id != report.upload_session_id);
                self.last.push(report.clone());
                true
            }
            // The tray says "paused" beside the progress.
            EngineEvent::Paused(_) => true,
            EngineEvent::Session(_) | EngineEvent::CountDropped(_) => false,
        }
    }

    /// Reads the active sessions' jobs and estimates; forgets sessions that have finished or gone.
    pub fn overview(
        &mut self,
        store: &demeter_store::Store,
        workers: usize,
        now: DateTime<Utc>,
    ) -> Result<Overview, demeter_store::StoreError> {
        let stats = store.stage_stats()?;
        let mut o = Overview { paused: store.paused()?, eta_seconds: Some(0.0), ..Default::default() };
        let mut finished = Vec::new();
        for &id in &self.active {
            let jobs = store.session_jobs(id)?;
            let summary = SessionSummary::from_jobs(&jobs);
            if jobs.is_empty() || summary.pending + summary.processing == 0 {
                finished.push(id);
                continue;
            }
            o.done += summary.completed + summary.failed;
            o.failed += summary.failed;
            o.total += summary.total_jobs;
            let session_eta = eta::session_eta(store.estimates(&jobs, &stats, workers, now)?);
            o.eta_seconds = o.eta_seconds.zip(session_eta).map(|(a, b)| a.max(b));
        }
        for id in finished {
            self.active.remove(&id);
        }
        if o.total == 0 {
            o.eta_seconds = None;
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{pending, report};

    #[test]
    fn menu_text_follows_the_batch() {
        let o = Overview {
            done: 12,
            total: 50,
            failed: 0,
            eta_seconds: Some(230.0),
            paused: false,
            alerts: Alerts::default(),
        };
        let t = TrayText::new(&o, &[]);
        assert_eq!(t.status, "Processing 12 of 50 — about 4 min left");
        assert_eq!((t.title.as_str(), t.icon), ("12/50", IconState::Processing));
        let o = Overview { eta_seconds: None, ..o };
        assert_eq!(TrayText::new(&o, &[]).status, "Processing 12 of 50 — estimating time left");
        let o = Overview { paused: true, ..o };
        assert_eq!(TrayText::new(&o, &[]).status, "Paused — 38 photos waiting");
        let idle = Overview::default();
        assert_eq!(TrayText::new(&idle, &[]).status, "Idle — waiting for photos");
        // The appliance's warnings: a CPU fallback is noted, an open breaker replaces the status.
        let cpu = Overview {
            alerts: Alerts { breaker: None, warnings: vec!["CUDA is not available; running on the CPU".into()] },
            ..o.clone()
        };
        let t = TrayText::new(&cpu, &[]);
        assert_eq!(t.status, "Paused — 38 photos waiting");
        assert!(t.tooltip.ends_with("\n⚠ CUDA is not available; running on the CPU"), "{}", t.tooltip);
        let broken =
            Overview { alerts: Alerts { breaker: Some("CUDA error 700".into()), warnings: vec![] }, ..o.clone() };
        let t = TrayText::new(&broken, &[]);
        assert_eq!(
            (t.status.as_str(), t.icon),
            ("Processing paused: the inference device keeps failing", IconState::SomeFailed)
        );
        assert!(t.tooltip.contains("CUDA error 700"));
        let partial = report(3, 2, 6);
        let t = TrayText::new(&idle, std::slice::from_ref(&partial));
        assert_eq!((t.status.as_str(), t.icon), ("Idle — last batch: Completed 2, failed 1", IconState::SomeFailed));
        let ok = report(3, 3, 9);
        let t = TrayText::new(&idle, std::slice::from_ref(&ok));
        assert_eq!(
            (t.status.as_str(), t.icon),
            ("Idle — last batch: Processed 3 photos — 9 plants counted", IconState::Idle)
        );
        // Two sessions that finished together: the failure shows whichever finished last.
        for last in [[ok.clone(), partial.clone()], [partial, ok]] {
            let t = TrayText::new(&idle, &last);
            assert_eq!(
                (t.status.as_str(), t.icon),
                ("Idle — last 2 batches: Completed 5, failed 1", IconState::SomeFailed)
            );
        }
    }

    #[test]
    fn a_new_batch_replaces_the_last_one() {
        let t0 = Instant::now();
        let later = t0 + crate::notifications::COALESCE + std::time::Duration::from_millis(1);
        let mut t = Tracker::default();
        let first = report(1, 0, 0);
        t.observe_at(&EngineEvent::SessionFinished(first), t0);
        assert_eq!(t.last.len(), 1);
        t.observe_at(&EngineEvent::Job(Box::new(pending(SessionId::new_v7()))), later);
        assert!(t.last.is_empty(), "the tray no longer shows the previous batch's failure");
    }

    #[test]
    fn batches_finishing_together_are_one_last_batch_as_in_the_notification() {
        let t0 = Instant::now();
        let at = |ms| t0 + std::time::Duration::from_millis(ms);
        let window = crate::notifications::COALESCE.as_millis() as u64;
        let mut t = Tracker::default();
        // One folder's photo is done before the other's is even queued; both finish within
        // the notification's window, so one notification names both, and so does the tray.
        let (a, b) = (report(1, 1, 3), report(2, 1, 0));
        t.observe_at(&EngineEvent::SessionFinished(a.clone()), at(0));
        t.observe_at(&EngineEvent::Job(Box::new(pending(b.upload_session_id))), at(300));
        t.observe_at(&EngineEvent::SessionFinished(b.clone()), at(window - 100));
        assert_eq!(t.last, [a.clone(), b.clone()]);
        // One finishing after the window is announced on its own, and shown on its own.
        let c = report(1, 1, 2);
        t.observe_at(&EngineEvent::Job(Box::new(pending(c.upload_session_id))), at(window - 50));
        t.observe_at(&EngineEvent::SessionFinished(c.clone()), at(window + 10));
        assert_eq!(t.last, [c]);
    }

    #[test]
    fn time_left_reads_naturally() {
        assert_eq!(time_left(0.0), "less than a minute left");
        assert_eq!(time_left(59.0), "less than a minute left");
        assert_eq!(time_left(60.0), "about 1 min left");
        assert_eq!(time_left(61.0), "about 2 min left");
        assert_eq!(time_left(3600.0), "about 1 h left");
        assert_eq!(time_left(4800.0), "about 1 h 20 min left");
    }
}
