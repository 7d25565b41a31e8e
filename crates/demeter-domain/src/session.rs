//! Upload sessions: photos that arrived together, reported on together.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

crate::ids::uuid_id! {
    /// Identifies an upload session (`upload_session_id` in the API). UUIDv7: sorts by creation.
    SessionId
}

/// Where a session's photos came from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionSource {
    /// Dropped into the watched folder; `subfolder` is the top-level subfolder, if any.
    Folder { subfolder: Option<String> },
    /// Sent through `POST /api/v1/photos/upload` (a phone or PC on the LAN); the photos are
    /// written to `uploads/<upload_session_id>/` in the watched folder.
    Upload {
        files: u32,
        /// Name of the token that uploaded: another uploader may not see this session.
        #[serde(default)]
        owner: Option<String>,
    },
}

/// The folder (inside the watched folder) where uploaded photos are written, one subfolder per
/// upload session named by its id.
pub const UPLOADS_DIR: &str = "uploads";

/// The upload session a photo belongs to when its path is `uploads/<session id>/…`.
pub fn upload_session_of(rel_path: &str) -> Option<SessionId> {
    let mut parts = rel_path.split('/');
    (parts.next()? == UPLOADS_DIR).then_some(())?;
    let id = parts.next()?.parse().ok()?;
    parts.next().map(|_| id)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadSession {
    pub id: SessionId,
    pub created_at: DateTime<Utc>,
    /// After this the session is gone from the API (404) and swept.
    pub expires_at: DateTime<Utc>,
    pub source: SessionSource,
}

/// Whether a session is done with every photo it has but still open for more: its newest photo
/// arrived at most `gap` (`session_gap_secs`) before `now`, so the next one would join it. The
/// batch is announced when this ends (the engine's completion tracker applies the same rule).
pub fn waiting_for_more_photos(jobs: &[crate::Job], now: DateTime<Utc>, gap: Duration) -> bool {
    Arrivals::of(jobs).waiting(now, gap)
}

/// What [`waiting_for_more_photos`] needs of a session's jobs, to be kept beside a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrivals {
    /// When the newest job was made.
    pub last: Option<DateTime<Utc>>,
    /// Every job completed or failed.
    pub all_done: bool,
}

impl Arrivals {
    pub fn of(jobs: &[crate::Job]) -> Self {
        Self::of_heads(jobs.iter().map(crate::JobHead::from))
    }

    pub fn of_heads(heads: impl IntoIterator<Item = crate::JobHead>) -> Self {
        heads.into_iter().fold(Self { last: None, all_done: true }, |a, h| Self {
            last: a.last.max(Some(h.created_at)),
            all_done: a.all_done && h.is_terminal(),
        })
    }

    /// All done so far, and the last photo came within `gap` of `now`.
    pub fn waiting(self, now: DateTime<Utc>, gap: Duration) -> bool {
        self.last.is_some_and(|last| self.all_done && now - last < gap)
    }
}

/// Counts of a session's jobs by status, as the seed's `summary`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub total_jobs: u32,
    pub pending: u32,
    pub processing: u32,
    pub completed: u32,
    pub failed: u32,
    /// Share of jobs finished (completed or failed), in percent with one decimal, as the seed.
    pub overall_progress_percent: f64,
}

impl SessionSummary {
    /// Folds jobs into a summary. Failed jobs count as done for the overall bar, so a session
    /// with failures still reaches 100 % when nothing is left to do.
    pub fn from_jobs<'a>(jobs: impl IntoIterator<Item = &'a crate::Job>) -> Self {
        Self::from_heads(jobs.into_iter().map(crate::JobHead::from))
    }

    /// [`SessionSummary::from_jobs`] from what the store reads of each job.
    pub fn from_heads(heads: impl IntoIterator<Item = crate::JobHead>) -> Self {
        use crate::StatusName::*;
        let mut s = SessionSummary::default();
        for head in heads {
            s.total_jobs += 1;
            match head.status {
                Pending => s.pending += 1,
                Processing => s.processing += 1,
                Completed => s.completed += 1,
                Failed => s.failed += 1,
            }
        }
        if s.total_jobs > 0 {
            let done = f64::from(s.completed + s.failed);
            s.overall_progress_percent = (done / f64::from(s.total_jobs) * 1000.0).round() / 10.0;
        }
        s
    }
}

/// Decides which upload session an arriving photo joins: photos from the same top-level
/// subfolder that arrive without a quiet gap longer than `gap` share a session.
#[derive(Debug)]
pub struct SessionGrouper {
    gap: Duration,
    /// Per subfolder: the open session and when its last photo arrived.
    open: HashMap<Option<String>, (SessionId, DateTime<Utc>)>,
}

/// The grouper's decision for one photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub session: SessionId,
    /// The caller must create the session record before queuing the photo.
    pub is_new: bool,
}

impl SessionGrouper {
    pub fn new(gap: Duration) -> Self {
        Self { gap, open: HashMap::new() }
    }

    pub fn assign(&mut self, subfolder: Option<&str>, now: DateTime<Utc>) -> Assignment {
        let key = subfolder.map(str::to_owned);
        match self.open.get_mut(&key) {
            Some((id, last)) if now - *last <= self.gap => {
                *last = now.max(*last);
                Assignment { session: *id, is_new: false }
            }
            _ => {
                let id = SessionId::new_v7();
                self.open.insert(key, (id, now));
                Assignment { session: id, is_new: true }
            }
        }
    }

    /// Re-opens a session after a restart, so photos still arriving within the gap join the
    /// batch they belong to instead of starting a new one. Keeps the most recent per subfolder.
    pub fn resume(&mut self, subfolder: Option<&str>, id: SessionId, last_arrival: DateTime<Utc>) {
        let entry = self.open.entry(subfolder.map(str::to_owned)).or_insert((id, last_arrival));
        if last_arrival > entry.1 {
            *entry = (id, last_arrival);
        }
    }

    /// Forgets a session (e.g. its record could not be written), so the next photo opens a new one.
    pub fn forget(&mut self, id: SessionId) {
        self.open.retain(|_, (open, _)| *open != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn uploaded_photos_name_their_session() {
        let id = SessionId::new_v7();
        assert_eq!(upload_session_of(&format!("uploads/{id}/IMG_1.jpg")), Some(id));
        assert_eq!(upload_session_of(&format!("uploads/{id}")), None);
        assert_eq!(upload_session_of("uploads/not-an-id/a.jpg"), None);
        assert_eq!(upload_session_of("bench/a.jpg"), None);
    }

    #[test]
    fn photos_within_the_gap_share_a_session() {
        let mut g = SessionGrouper::new(Duration::seconds(30));
        let a = g.assign(None, t(0));
        assert!(a.is_new);
        let b = g.assign(None, t(20));
        let c = g.assign(None, t(45)); // 25 s after the previous photo: still the same batch
        assert_eq!((b.session, b.is_new), (a.session, false));
        assert_eq!(c.session, a.session);
    }

    #[test]
    fn a_quiet_gap_starts_a_new_session() {
        let mut g = SessionGrouper::new(Duration::seconds(30));
        let a = g.assign(None, t(0));
        let b = g.assign(None, t(31));
        assert!(b.is_new);
        assert_ne!(a.session, b.session);
    }

    #[test]
    fn each_top_level_subfolder_has_its_own_session() {
        let mut g = SessionGrouper::new(Duration::seconds(30));
        let root = g.assign(None, t(0));
        let a = g.assign(Some("bench-a"), t(1));
        let b = g.assign(Some("bench-b"), t(2));
        let a2 = g.assign(Some("bench-a"), t(3));
        assert_ne!(root.session, a.session);
        assert_ne!(a.session, b.session);
        assert_eq!(a.session, a2.session);
    }

    #[test]
    fn a_resumed_session_takes_photos_within_the_gap() {
        let mut g = SessionGrouper::new(Duration::seconds(30));
        let id = SessionId::new_v7();
        g.resume(Some("bench-a"), id, t(0));
        assert_eq!(g.assign(Some("bench-a"), t(10)), Assignment { session: id, is_new: false });
        assert!(g.assign(Some("bench-a"), t(100)).is_new);
    }

    #[test]
    fn forgetting_a_session_opens_a_new_one() {
        let mut g = SessionGrouper::new(Duration::seconds(30));
        let a = g.assign(None, t(0));
        g.forget(a.session);
        assert!(g.assign(None, t(1)).is_new);
    }
}
