//! The seed's poll endpoint and the recent-sessions list.

use axum::{
    body::Bytes,
    extract::{rejection::QueryRejection, Query, State},
    http::header,
    response::{IntoResponse, Response},
    Extension, Json,
};
use chrono::{DateTime, Utc};
use demeter_auth::Identity;
use demeter_domain::{session::Arrivals, SessionId, SessionSummary};
use serde::{Deserialize, Serialize};

use super::views::{JobView, SessionSnapshot};
use crate::{
    error::{AppError, ErrorBody},
    AppState,
};

#[derive(Debug, Deserialize)]
pub struct PollParams {
    upload_session_id: Option<String>,
}

/// The poll endpoint's body: the seed's, plus the session's ETA.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PollResponse {
    pub upload_session_id: String,
    /// When the session started and where its photos come from (the page's title).
    pub created_at: DateTime<Utc>,
    pub source: demeter_domain::SessionSource,
    pub jobs: Vec<JobView>,
    pub summary: SessionSummary,
    /// Seconds until the whole session is done; `null` until stage durations are known.
    pub eta_seconds: Option<f64>,
    /// Every photo so far is done, but one arriving now would still join this batch (the
    /// session gap): the batch is announced when the gap closes.
    pub waiting_for_more_photos: bool,
    pub last_updated: DateTime<Utc>,
}

/// Parses a session id from a query or path, as 400 when malformed.
pub(crate) fn parse_session(raw: &str) -> Result<SessionId, AppError> {
    raw.parse().map_err(|_| AppError::BadRequest(format!("upload_session_id {raw:?} is not a UUID")))
}

pub(crate) fn session_gone() -> AppError {
    AppError::NotFound("Upload session not found or expired".into())
}

/// `GET /api/v1/photos/jobs/status?upload_session_id=…`. Reads only this session's jobs.
#[utoipa::path(get, path = "/api/v1/photos/jobs/status", tag = "status", params(("upload_session_id" = uuid::Uuid, Query, description = "The upload session")), responses((status = 200, description = "The session's jobs, summary and ETA", body = PollResponse), (status = 400, description = "Missing or malformed id", body = ErrorBody), (status = 404, description = "Unknown or expired (24 h)", body = ErrorBody)))]
pub(crate) async fn poll_status(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    params: Result<Query<PollParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = params.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let raw = params
        .upload_session_id
        .ok_or_else(|| AppError::BadRequest("query parameter upload_session_id is required".into()))?;
    let id = parse_session(&raw)?;
    // The generation is read before the store: an answer built from an older read is never
    // kept as current (see `poll_cache`).
    let generation = state.store.session_generation(id);
    if let Some((session, body)) = state.polls.get(id, generation, state.clock.now()) {
        crate::auth::check_access(&who, &session)?;
        return Ok(json_body(body));
    }
    let body = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let snap = SessionSnapshot::load(&state, id)?.ok_or_else(session_gone)?;
        crate::auth::check_access(&who, &snap.session)?;
        let summary = snap.summary();
        let now = state.clock.now();
        let waiting = demeter_domain::session::waiting_for_more_photos(&snap.jobs, now, state.session_gap());
        let finished = summary.pending == 0 && summary.processing == 0;
        let response = PollResponse {
            upload_session_id: id.to_string(),
            created_at: snap.session.created_at,
            source: snap.session.source.clone(),
            summary,
            eta_seconds: snap.eta_seconds(),
            waiting_for_more_photos: waiting,
            jobs: snap.job_views(),
            last_updated: state.clock.now(),
        };
        let body = Bytes::from(serde_json::to_vec(&response).map_err(|e| AppError::Internal(Box::new(e)))?);
        // A waiting answer turns stale by the clock alone, when the gap closes: not kept.
        if state.store.session_generation(id) == generation && !waiting {
            state.polls.put(id, generation, finished, snap.session, body.clone());
        }
        Ok(body)
    })
    .await??;
    Ok(json_body(body))
}

fn json_body(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SessionView {
    pub upload_session_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub source: demeter_domain::SessionSource,
    pub summary: SessionSummary,
    /// As in the poll answer: done so far, still open for more photos.
    pub waiting_for_more_photos: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SessionsResponse {
    pub sessions: Vec<SessionView>,
}

/// Sessions listed by `GET /api/v1/sessions`, at most.
const MAX_SESSIONS: usize = 200;

/// `GET /api/v1/sessions`: live sessions, newest first, each with its summary.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "status", responses((status = 200, description = "Live sessions, newest first", body = SessionsResponse)))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
) -> Result<Json<SessionsResponse>, AppError> {
    let sessions = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let now = state.clock.now();
        let mut out = Vec::new();
        for s in state.store.recent_sessions(MAX_SESSIONS)? {
            if s.expires_at <= now || !crate::auth::may_see(&who, &s) {
                continue;
            }
            // Read before the jobs, so a summary built from an older read is never kept as
            // current (see `poll_cache`).
            let generation = state.store.session_generation(s.id);
            let (summary, arrivals) = match state.polls.summary(s.id, generation) {
                Some(kept) => kept,
                None => {
                    let heads = state.store.read_durable(|store| store.session_job_heads(s.id))?;
                    let built = (SessionSummary::from_heads(heads.iter().copied()), Arrivals::of_heads(heads));
                    if state.store.session_generation(s.id) == generation {
                        state.polls.put_summary(s.id, generation, built.0.clone(), built.1);
                    }
                    built
                }
            };
            out.push(SessionView {
                upload_session_id: s.id.to_string(),
                created_at: s.created_at,
                expires_at: s.expires_at,
                source: s.source,
                summary,
                waiting_for_more_photos: arrivals.waiting(now, state.session_gap()),
            });
        }
        Ok(out)
    })
    .await??;
    Ok(Json(SessionsResponse { sessions }))
}
