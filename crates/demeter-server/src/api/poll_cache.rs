//! Cached poll answers. Phones and PCs poll a session every second or two, mostly while
//! nothing in it changes; each answer would otherwise decode every job of the session from the
//! store and encode them again (most of the endpoint's time, measured in docs/benchmarks.md).
//!
//! An answer is reused while the store's generation counter for the session is unchanged
//! ([`demeter_store::Store::session_generation`], bumped by every stored change to the session
//! or its jobs) — indefinitely for a finished session, for at most [`ACTIVE_TTL`] while jobs
//! are pending or running (their progress and ETAs move with time), and never past the
//! session's expiry. Access is still checked on every request.
//!
//! The sessions list (`GET /api/v1/sessions`, which the page asks for every few seconds) keeps
//! each session's summary the same way, for as long as its generation is unchanged: counts by
//! status change only with a stored change, so a list of 200 sessions decodes only the jobs of
//! those that changed.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use demeter_domain::{session::Arrivals, SessionId, SessionSummary, UploadSession};

/// How long an answer for a session with unfinished jobs is reused.
pub const ACTIVE_TTL: Duration = Duration::from_millis(250);
/// Beyond this many cached sessions the cache starts over (it only holds what is polled).
const MAX_ENTRIES: usize = 512;

struct Entry {
    generation: u64,
    built: Instant,
    finished: bool,
    session: UploadSession,
    body: Bytes,
}

/// Serialized poll answers per session, and summaries for the sessions list.
#[derive(Default)]
pub struct PollCache {
    entries: Mutex<HashMap<SessionId, Entry>>,
    summaries: Mutex<HashMap<SessionId, (u64, SessionSummary, Arrivals)>>,
}

impl PollCache {
    /// The cached answer for `id`, if it is still current at `generation` and `now`; with the
    /// session, for the access check.
    pub fn get(&self, id: SessionId, generation: u64, now: DateTime<Utc>) -> Option<(UploadSession, Bytes)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(&id)?;
        let fresh =
            e.generation == generation && e.session.expires_at > now && (e.finished || e.built.elapsed() < ACTIVE_TTL);
        fresh.then(|| (e.session.clone(), e.body.clone()))
    }

    /// Keeps an answer built from a read that started at `generation`. The caller checks that
    /// the generation has not moved since; a newer answer is never replaced by an older one.
    pub fn put(&self, id: SessionId, generation: u64, finished: bool, session: UploadSession, body: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.get(&id).is_some_and(|e| e.generation > generation) {
            return;
        }
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&id) {
            entries.clear();
        }
        entries.insert(id, Entry { generation, built: Instant::now(), finished, session, body });
    }
}

impl PollCache {
    /// The summary kept for `id` at `generation`.
    pub fn summary(&self, id: SessionId, generation: u64) -> Option<(SessionSummary, Arrivals)> {
        let summaries = self.summaries.lock().unwrap_or_else(|e| e.into_inner());
        summaries.get(&id).filter(|(g, ..)| *g == generation).map(|(_, s, a)| (s.clone(), *a))
    }

    /// Keeps a summary built from a read that started at `generation` (see [`PollCache::put`]).
    pub fn put_summary(&self, id: SessionId, generation: u64, summary: SessionSummary, arrivals: Arrivals) {
        let mut summaries = self.summaries.lock().unwrap_or_else(|e| e.into_inner());
        if summaries.get(&id).is_some_and(|(g, ..)| *g > generation) {
            return;
        }
        if summaries.len() >= MAX_ENTRIES && !summaries.contains_key(&id) {
            summaries.clear();
        }
        summaries.insert(id, (generation, summary, arrivals));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use demeter_domain::SessionSource;

    fn session(expires_in_hours: i64) -> UploadSession {
        UploadSession {
            id: SessionId::new_v7(),
            created_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(expires_in_hours),
            source: SessionSource::Folder { subfolder: None },
        }
    }

    #[test]
    fn answers_are_reused_only_while_current() {
        let cache = PollCache::default();
        let s = session(24);
        let now = Utc::now();
        cache.put(s.id, 3, true, s.clone(), Bytes::from_static(b"three"));
        assert_eq!(cache.get(s.id, 3, now).unwrap().1, "three");
        assert!(cache.get(s.id, 4, now).is_none(), "the session changed");
        assert!(cache.get(s.id, 3, s.expires_at).is_none(), "the session expired");
        // An older read finishing late does not replace a newer answer.
        cache.put(s.id, 5, true, s.clone(), Bytes::from_static(b"five"));
        cache.put(s.id, 4, true, s.clone(), Bytes::from_static(b"four"));
        assert_eq!(cache.get(s.id, 5, now).unwrap().1, "five");
    }

    #[test]
    fn an_active_session_is_reused_briefly() {
        let cache = PollCache::default();
        let s = session(24);
        cache.put(s.id, 1, false, s.clone(), Bytes::from_static(b"running"));
        assert!(cache.get(s.id, 1, Utc::now()).is_some());
        std::thread::sleep(ACTIVE_TTL + Duration::from_millis(20));
        assert!(cache.get(s.id, 1, Utc::now()).is_none(), "progress and ETAs move with time");
    }

    #[test]
    fn summaries_are_reused_while_their_session_is_unchanged() {
        let cache = PollCache::default();
        let id = SessionId::new_v7();
        let summary = |done: u32| SessionSummary { total_jobs: 4, completed: done, ..Default::default() };
        let arrivals = Arrivals { last: Some(Utc::now()), all_done: false };
        assert!(cache.summary(id, 1).is_none());
        cache.put_summary(id, 1, summary(1), arrivals);
        assert_eq!(cache.summary(id, 1), Some((summary(1), arrivals)));
        assert!(cache.summary(id, 2).is_none(), "a job of the session changed");
        cache.put_summary(id, 3, summary(3), arrivals);
        cache.put_summary(id, 2, summary(2), arrivals);
        assert_eq!(cache.summary(id, 3).unwrap().0, summary(3), "an older read does not replace a newer one");
    }
}
