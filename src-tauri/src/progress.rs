//! What the tray says: the batch in progress, summed over the upload sessions that still have
//! work, with an ETA from measured stage durations (the same estimates as the status page).

use std::collections::BTreeSet;

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
}

impl TrayText {
    pub fn new(o: &Overview, last: &[SessionReport]) -> Self {
        let working = o.total > o.done;
        if working && o.paused {
            let waiting = o.total - o.done;
            let photos = if waiting == 1 { "1 photo".to_owned() } else { format!("{waiting} photos") };
            return Self {
                status: format!("Paused — {photos} waiting"),
                title: format!("{}/{}", o.done, o.total),
                icon: IconState::Processing,
            };
        }
        if working {
            let left = match o.eta_seconds {
                Some(s) => time_left(s),
                None => "estimating time left".to_owned(),
            };
            return Self {
                status: format!("Processing {} of {} — {left}", o.done, o.total),
                title: format!("{}/{}", o.done, o.total),
                icon: IconState::Processing,
            };
        }
        if last.is_empty() {
            return Self {
                status: "Idle — waiting for photos".to_owned(),
                title: String::new(),
                icon: IconState::Idle,
            };
        }
        let totals = Totals::of(last);
        let which = if last.len() == 1 { "last batch".to_owned() } else { format!("last {} batches", last.len()) };
        Self {
            status: format!("Idle — {which}: {}", totals.message()),
            title: String::new(),
            icon: if totals.outcome == Outcome::Success { IconState::Idle } else { IconState::SomeFailed },
        }
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
/// finished since the tray was last busy.
#[derive(Debug, Default)]
pub struct Tracker {
    active: BTreeSet<SessionId>,
    pub last: Vec<SessionReport>,
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
        match event {
            EngineEvent::Job(job) => {
                if !job.is_terminal() {
                    if self.active.is_empty() {
                        // A new batch starts: the previous one is no longer "the last batch".
                        self.last.clear();
                    }
                    self.active.insert(job.upload_session_id);
                }
                true
            }
            EngineEvent::SessionFinished(report) => {
                self.active.remove(&report.upload_session_id);
                self.last.retain(|r| r.upload_session_id != report.upload_session_id);
                self.last.push(report.clone());
                true
            }
            EngineEvent::Session(_) => false,
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
        let o = Overview { done: 12, total: 50, failed: 0, eta_seconds: Some(230.0), paused: false };
        let t = TrayText::new(&o, &[]);
        assert_eq!(t.status, "Processing 12 of 50 — about 4 min left");
        assert_eq!((t.title.as_str(), t.icon), ("12/50", IconState::Processing));
        let o = Overview { eta_seconds: None, ..o };
        assert_eq!(TrayText::new(&o, &[]).status, "Processing 12 of 50 — estimating time left");
        let o = Overview { paused: true, ..o };
        assert_eq!(TrayText::new(&o, &[]).status, "Paused — 38 photos waiting");
        let idle = Overview::default();
        assert_eq!(TrayText::new(&idle, &[]).status, "Idle — waiting for photos");
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
        let mut t = Tracker::default();
        let first = report(1, 0, 0);
        t.observe(&EngineEvent::SessionFinished(first));
        assert_eq!(t.last.len(), 1);
        t.observe(&EngineEvent::Job(Box::new(pending(SessionId::new_v7()))));
        assert!(t.last.is_empty(), "the tray no longer shows the previous batch's failure");
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
