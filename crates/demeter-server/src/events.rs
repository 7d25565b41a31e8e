//! `GET /api/v1/events`: Server-Sent Events of job and session changes as they are stored.
//!
//! Every event gets an increasing id and is kept in a bounded ring, so a client reconnecting
//! with `Last-Event-ID` gets exactly what it missed; when what it missed has left the ring it
//! gets a `resync` event (reload everything) instead of a silent gap. Each client reads from its
//! own bounded buffer (a broadcast receiver); a client too slow to keep up is sent `resync` and
//! dropped, never slowing the others. Event data is serialised JSON: a filename with a newline
//! cannot break the stream's framing.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
    Extension,
};
use demeter_auth::{Identity, Role};
use demeter_domain::{Job, SessionId, UploadSession};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::{
    api::views::{estimates, JobView, SessionSnapshot},
    error::AppError,
    AppState,
};

/// One stored event.
#[derive(Debug)]
pub struct HubEvent {
    pub id: u64,
    /// `job`, `session` or `resync`.
    pub kind: &'static str,
    /// `None`: for every client (resync).
    pub session: Option<SessionId>,
    /// The uploader owning the session, if any: other uploaders do not get its events.
    pub owner: Option<String>,
    pub data: String,
}

struct Ring {
    next_id: u64,
    events: VecDeque<Arc<HubEvent>>,
}

/// Fan-out of events to SSE clients, with replay.
pub struct EventHub {
    ring: Mutex<Ring>,
    capacity: usize,
    tx: broadcast::Sender<Arc<HubEvent>>,
}

impl EventHub {
    /// `history`: events kept for `Last-Event-ID` resume; `client_buffer`: events a client may
    /// fall behind before it is told to resync.
    pub fn new(history: usize, client_buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(client_buffer.max(1));
        Self { ring: Mutex::new(Ring { next_id: 1, events: VecDeque::new() }), capacity: history.max(1), tx }
    }

    pub fn publish(
        &self,
        kind: &'static str,
        session: Option<SessionId>,
        owner: Option<String>,
        data: serde_json::Value,
    ) -> u64 {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let id = ring.next_id;
        ring.next_id += 1;
        let event = Arc::new(HubEvent { id, kind, session, owner, data: data.to_string() });
        if ring.events.len() == self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Sent under the lock, so a subscriber's replay and live stream never overlap or gap.
        let _ = self.tx.send(event);
        id
    }

    /// Events after `last` (if it is still in the ring), whether a resync is needed, and the
    /// live receiver, taken atomically.
    fn subscribe_after(&self, last: Option<u64>) -> (Vec<Arc<HubEvent>>, bool, broadcast::Receiver<Arc<HubEvent>>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.tx.subscribe();
        let Some(last) = last else {
            return (Vec::new(), false, rx);
        };
        let oldest = ring.events.front().map(|e| e.id).unwrap_or(ring.next_id);
        if last + 1 < oldest || last >= ring.next_id {
            // Missed events are gone, or the id is from another run of the server.
            return (Vec::new(), true, rx);
        }
        (ring.events.iter().filter(|e| e.id > last).cloned().collect(), false, rx)
    }

    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }

    /// With nobody listening, an event need not be built at all (a job event reads its whole
    /// session for the summary): its id is spent and the history forgotten instead, so a client
    /// that comes back with an older `Last-Event-ID` is told to resync (reload) rather than
    /// replay a history with a hole. Does nothing and returns `false` while a client is
    /// connected. Atomic with subscribing (both hold the ring's lock).
    pub fn skip_if_unheard(&self) -> bool {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if self.tx.receiver_count() > 0 {
            return false;
        }
        ring.next_id += 1;
        ring.events.clear();
        true
    }
}

fn owner_of(session: &UploadSession) -> Option<String> {
    match &session.source {
        demeter_domain::SessionSource::Upload { owner, .. } => owner.clone(),
        _ => None,
    }
}

/// Announces a stored job change: the job as it was stored (not as it is by now), with its
/// estimate, and its session's current summary. Blocking (reads the store).
pub fn publish_job(state: &AppState, job: &Job) -> Result<(), AppError> {
    publish_jobs(state, std::slice::from_ref(job))
}

/// Announces several stored job changes in order, reading each session's summary and the
/// queue once for all of them rather than once per job: when thousands of photos are queued
/// at once, per-event reads of a thousands-long session would cost millions of job reads.
pub fn publish_jobs(state: &AppState, jobs: &[Job]) -> Result<(), AppError> {
    if jobs.is_empty() || state.hub.skip_if_unheard() {
        return Ok(());
    }
    let stats = state.store.stage_stats()?;
    let now = state.clock.now();
    for run in jobs.chunk_by(|a, b| a.upload_session_id == b.upload_session_id) {
        let session = run[0].upload_session_id;
        let Some(snap) = SessionSnapshot::load(state, session)? else { continue };
        let (summary, eta) = (snap.summary(), snap.eta_seconds());
        let waiting = demeter_domain::session::waiting_for_more_photos(&snap.jobs, now, state.session_gap());
        let owner = owner_of(&snap.session);
        for (job, estimate) in run.iter().zip(estimates(state, run, &stats, now)?) {
            state.hub.publish(
                "job",
                Some(session),
                owner.clone(),
                json!({
                    "type": "job",
                    "upload_session_id": session.to_string(),
                    "job": JobView::new(job, estimate),
                    "summary": summary,
                    "eta_seconds": eta,
                    "waiting_for_more_photos": waiting,
                }),
            );
        }
    }
    Ok(())
}

/// Announces a new upload session.
pub fn publish_session(state: &AppState, session: &UploadSession) {
    state.hub.publish(
        "session",
        Some(session.id),
        owner_of(session),
        json!({
            "type": "session",
            "upload_session_id": session.id.to_string(),
            "created_at": session.created_at,
            "source": session.source,
        }),
    );
}

/// Tells every client to reload (e.g. the publisher fell behind the engine).
pub fn publish_resync(state: &AppState, reason: &str) {
    state.hub.publish("resync", None, None, json!({ "type": "resync", "reason": reason }));
}

#[derive(Debug, Deserialize)]
pub struct EventParams {
    upload_session_id: Option<String>,
}

fn to_sse(e: &HubEvent) -> Event {
    Event::default().id(e.id.to_string()).event(e.kind).data(&e.data)
}

fn resync_event(reason: &str) -> Event {
    Event::default().event("resync").data(json!({ "type": "resync", "reason": reason }).to_string())
}

/// `GET /api/v1/events[?upload_session_id=…]`.
#[utoipa::path(get, path = "/api/v1/events", tag = "status", params(("upload_session_id" = Option<uuid::Uuid>, Query), ("Last-Event-ID" = Option<u64>, Header)), responses((status = 200, description = "Server-Sent Events: job, session, resync", content_type = "text/event-stream")))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let Query(params) = params.map_err(|e| AppError::BadRequest(e.body_text()))?;
    if state.hub.clients() >= state.config.server.max_event_streams {
        return Err(AppError::Busy(format!(
            "{} live event streams are open, the most this appliance serves; poll instead or retry shortly",
            state.hub.clients()
        )));
    }
    let filter = params.upload_session_id.as_deref().map(crate::api::parse_session).transpose()?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>().map_err(|_| AppError::BadRequest("Last-Event-ID must be a number".into())))
        .transpose()?;
    let (replay, resync, rx) = state.hub.subscribe_after(last);
    // Uploaders do not see other uploaders' sessions; everyone else sees everything.
    let wanted = Arc::new(move |e: &HubEvent| {
        let visible = who.role != Role::Uploader || e.owner.as_ref().is_none_or(|o| *o == who.name);
        visible && (e.session.is_none() || filter.is_none() || e.session == filter)
    });

    let mut first: Vec<Event> = Vec::new();
    if resync {
        first.push(resync_event("the events since Last-Event-ID are no longer kept; reload"));
    }
    first.extend(replay.iter().filter(|e| wanted(e)).map(|e| to_sse(e)));

    let live = stream::unfold(Some(rx), move |rx| {
        let wanted = wanted.clone();
        async move {
            let mut rx = rx?;
            loop {
                match rx.recv().await {
                    Ok(e) if wanted(&e) => return Some((Ok(to_sse(&e)), Some(rx))),
                    Ok(_) => continue,
                    // Too slow: tell it to reload, then end its stream; the browser reconnects.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some((Ok(resync_event("this client fell behind; reload")), None))
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let all = futures_util::StreamExt::chain(stream::iter(first.into_iter().map(Ok)), live);
    Ok(Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_nobody_hears_are_skipped_and_a_returning_client_resyncs() {
        let hub = EventHub::new(16, 4);
        let first = hub.publish("job", None, None, json!({"n": 1}));
        assert!(hub.skip_if_unheard(), "no client: skipped");
        let (replay, resync, _rx) = hub.subscribe_after(Some(first));
        assert!(replay.is_empty() && resync, "the history has a hole: reload");
        // With a client connected nothing is skipped, and replay works again.
        let (_, _, _listening) = hub.subscribe_after(None);
        assert!(!hub.skip_if_unheard());
        let a = hub.publish("job", None, None, json!({"n": 2}));
        hub.publish("job", None, None, json!({"n": 3}));
        let (replay, resync, _rx) = hub.subscribe_after(Some(a));
        assert_eq!((replay.len(), resync), (1, false));
    }
}
