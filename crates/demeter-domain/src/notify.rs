//! What to tell people when an upload session finishes: one message per session, not per photo.
//! Shared by the daemon's webhook and the desktop app's notifications.

use serde::{Deserialize, Serialize};

use crate::{Job, SessionId, StatusName};

/// How a finished session went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every photo completed.
    Success,
    /// Some failed (or all of a small batch).
    Partial,
    /// All of more than [`SYSTEM_PROBLEM_MIN`] photos failed: probably not the photos' fault.
    AllFailed,
}

/// More photos than this all failing points at the system, not the photos.
pub const SYSTEM_PROBLEM_MIN: u32 = 5;

/// A finished session, summed up for a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    pub upload_session_id: SessionId,
    pub outcome: Outcome,
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
    /// Plants counted over the completed photos.
    pub plants: u64,
    /// One line for a person, e.g. "Processed 50 photos — 912 plants counted".
    pub message: String,
    /// The session had been announced before and finished again (a retry or a reprocess).
    #[serde(default)]
    pub update: bool,
}

impl SessionReport {
    /// The same report for a session announced before: worded as an update.
    pub fn as_update(self) -> Self {
        Self { message: format!("Updated: {}", self.message), update: true, ..self }
    }

    /// `None` while any job is still pending or processing (or there are none).
    pub fn from_jobs(session: SessionId, jobs: &[Job]) -> Option<Self> {
        if jobs.is_empty() || jobs.iter().any(|j| !j.is_terminal()) {
            return None;
        }
        let total = jobs.len() as u32;
        let completed = jobs.iter().filter(|j| j.status() == StatusName::Completed).count() as u32;
        let plants: u64 = jobs.iter().filter_map(|j| j.result()).map(|r| u64::from(r.total_detected)).sum();
        let t = Totals::new(total, completed, plants);
        Some(Self {
            upload_session_id: session,
            outcome: t.outcome,
            total,
            completed,
            failed: t.failed,
            plants,
            message: t.message(),
            update: false,
        })
    }
}

/// One or more finished sessions summed up, with the wording of [`SessionReport::message`]:
/// what the desktop's tray and a notification for sessions finishing together say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    pub outcome: Outcome,
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
    pub plants: u64,
}

impl Totals {
    pub fn new(total: u32, completed: u32, plants: u64) -> Self {
        let failed = total - completed;
        let outcome = if failed == 0 {
            Outcome::Success
        } else if completed == 0 && total > SYSTEM_PROBLEM_MIN {
            Outcome::AllFailed
        } else {
            Outcome::Partial
        };
        Self { outcome, total, completed, failed, plants }
    }

    /// Sums reports.
    pub fn of(reports: &[SessionReport]) -> Self {
        Self::new(
            reports.iter().map(|r| r.total).sum(),
            reports.iter().map(|r| r.completed).sum(),
            reports.iter().map(|r| r.plants).sum(),
        )
    }

    /// "Processed 50 photos — 912 plants counted", "Completed 47, failed 3", "All 12 photos
    /// failed — check the model or GPU".
    pub fn message(&self) -> String {
        let photos = if self.total == 1 { "1 photo".to_owned() } else { format!("{} photos", self.total) };
        match self.outcome {
            Outcome::Success => format!("Processed {photos} — {} plants counted", self.plants),
            Outcome::Partial => format!("Completed {}, failed {}", self.completed, self.failed),
            Outcome::AllFailed => format!("All {} photos failed — check the model or GPU", self.total),
        }
    }
}

/// A location's count fell by more than `alerts.drop_percent` from one photo to the next:
/// plants died or were removed. Said once, for the photo that showed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountDrop {
    /// Always `"count_dropped"`, so a webhook receiver tells it from a session's report.
    pub outcome: DropOutcome,
    pub location_id: String,
    pub location_name: Option<String>,
    /// The count of the photo before, and of this one.
    pub from: u32,
    pub to: u32,
    /// How much it fell, in percent.
    pub drop_percent: f64,
    /// This photo's archived result, and when it was taken.
    pub result_id: uuid::Uuid,
    pub taken_at: chrono::DateTime<chrono::Utc>,
    pub filename: String,
    /// One line for a person, e.g. "Bench 3: 20 → 14 plants (−30 %)".
    pub message: String,
}

/// The `outcome` of a [`CountDrop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropOutcome {
    CountDropped,
}

impl CountDrop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        location_id: String,
        location_name: Option<String>,
        from: u32,
        to: u32,
        result_id: uuid::Uuid,
        taken_at: chrono::DateTime<chrono::Utc>,
        filename: String,
    ) -> Self {
        let drop_percent = if from == 0 { 0.0 } else { f64::from(from.saturating_sub(to)) * 100.0 / f64::from(from) };
        let place = location_name.clone().unwrap_or_else(|| location_id.clone());
        let message = format!("{place}: {from} → {to} plants (−{} %)", drop_percent.round());
        Self {
            outcome: DropOutcome::CountDropped,
            location_id,
            location_name,
            from,
            to,
            drop_percent,
            result_id,
            taken_at,
            filename,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobError, JobId, JobResult};
    use chrono::DateTime;

    fn jobs(done: &[Option<u32>]) -> (SessionId, Vec<Job>) {
        let s = SessionId::new_v7();
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let jobs = done
            .iter()
            .map(|plants| {
                let mut j = Job::new(JobId::new_v7(), s, "i".into(), "/a".into(), "a".into(), 1, 1, t);
                j.claim(0, t).unwrap();
                match plants {
                    Some(n) => j.complete(JobResult { total_detected: *n, ..Default::default() }, t).unwrap(),
                    None => j.fail(JobError::permanent("bad"), t).unwrap(),
                }
                j
            })
            .collect();
        (s, jobs)
    }

    #[test]
    fn the_three_messages() {
        let (s, j) = jobs(&[Some(10), Some(5)]);
        let r = SessionReport::from_jobs(s, &j).unwrap();
        assert_eq!((r.outcome, r.message.as_str()), (Outcome::Success, "Processed 2 photos — 15 plants counted"));
        let (s, j) = jobs(&[Some(10), None, None]);
        let r = SessionReport::from_jobs(s, &j).unwrap();
        assert_eq!((r.outcome, r.message.as_str()), (Outcome::Partial, "Completed 1, failed 2"));
        let (s, j) = jobs(&[None; 6]);
        let r = SessionReport::from_jobs(s, &j).unwrap();
        assert_eq!(
            (r.outcome, r.message.as_str()),
            (Outcome::AllFailed, "All 6 photos failed — check the model or GPU")
        );
        let (s, j) = jobs(&[None; 5]);
        assert_eq!(
            SessionReport::from_jobs(s, &j).unwrap().outcome,
            Outcome::Partial,
            "a small batch is not a system problem"
        );
    }

    #[test]
    fn unfinished_sessions_report_nothing() {
        let (s, mut j) = jobs(&[Some(1)]);
        j.push(Job::new(
            JobId::new_v7(),
            s,
            "i".into(),
            "/b".into(),
            "b".into(),
            1,
            1,
            DateTime::from_timestamp(0, 0).unwrap(),
        ));
        assert_eq!(SessionReport::from_jobs(s, &j), None);
        assert_eq!(SessionReport::from_jobs(s, &[]), None);
    }

    #[test]
    fn totals_of_several_reports_word_them_together() {
        let (s1, j1) = jobs(&[Some(10), Some(5)]);
        let (s2, j2) = jobs(&[Some(3), None]);
        let a = SessionReport::from_jobs(s1, &j1).unwrap();
        let b = SessionReport::from_jobs(s2, &j2).unwrap();
        assert_eq!(Totals::of(std::slice::from_ref(&a)).message(), a.message);
        let both = Totals::of(&[a, b]);
        assert_eq!((both.outcome, both.message()), (Outcome::Partial, "Completed 3, failed 1".to_owned()));
    }

    #[test]
    fn a_drop_says_where_from_what_to_what() {
        let d = CountDrop::new(
            "B3".into(),
            Some("Bench 3".into()),
            20,
            14,
            uuid::Uuid::nil(),
            chrono::Utc::now(),
            "b3.jpg".into(),
        );
        assert_eq!(d.message, "Bench 3: 20 → 14 plants (−30 %)");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["outcome"], "count_dropped");
    }
}
