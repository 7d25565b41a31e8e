//! `/api/v1`: the seed's poll endpoint and the recent-sessions list.

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    routing::get,
    Json, Router,
};
use chrono::{DateTime, Utc};
use demeter_domain::{Job, SessionId, SessionSummary, UploadSession};
use serde::{Deserialize, Serialize};

use crate::{error::AppError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/photos/jobs/status", get(poll_status))
        .route("/sessions", get(list_sessions))
}

#[derive(Debug, Deserialize)]
pub struct PollParams {
    upload_session_id: Option<String>,
}

/// `result` of a completed job, as in the seed.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct JobResultView {
    pub session_id: uuid::Uuid,
    pub total_detected: u32,
    pub storage_location_id: Option<String>,
}

/// One entry of `jobs[]`, field for field the seed's.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    pub job_id: String,
    pub image_id: String,
    pub filename: String,
    pub status: String,
    pub progress_percent: u8,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub result: Option<JobResultView>,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        Self {
            job_id: j.id.to_string(),
            image_id: j.image_id.clone(),
            filename: j.filename.clone(),
            status: j.status().as_str().to_owned(),
            progress_percent: j.progress_percent(),
            started_at: j.started_at(),
            completed_at: j.completed_at(),
            error_message: j.error().map(|e| e.message.clone()),
            result: j.result().map(|r| JobResultView {
                session_id: r.session_id,
                total_detected: r.total_detected,
                storage_location_id: r.storage_location_id.clone(),
            }),
        }
    }
}

/// The poll endpoint's body.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PollResponse {
    pub upload_session_id: String,
    pub jobs: Vec<JobView>,
    pub summary: SessionSummary,
    pub last_updated: DateTime<Utc>,
}

fn live_session(state: &AppState, id: SessionId) -> Result<Option<UploadSession>, AppError> {
    // Expired but not yet swept is still gone for clients.
    Ok(state
        .store
        .session(id)?
        .filter(|s| s.expires_at > state.clock.now()))
}

/// `GET /api/v1/photos/jobs/status?upload_session_id=…`. Reads only this session's jobs.
async fn poll_status(
    State(state): State<AppState>,
    params: Result<Query<PollParams>, QueryRejection>,
) -> Result<Json<PollResponse>, AppError> {
    let Query(params) = params.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let raw = params.upload_session_id.ok_or_else(|| {
        AppError::BadRequest("query parameter upload_session_id is required".into())
    })?;
    let id: SessionId = raw
        .parse()
        .map_err(|_| AppError::BadRequest(format!("upload_session_id {raw:?} is not a UUID")))?;
    let response = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        if live_session(&state, id)?.is_none() {
            return Err(AppError::NotFound(
                "Upload session not found or expired".into(),
            ));
        }
        let jobs = state.store.session_jobs(id)?;
        Ok(PollResponse {
            upload_session_id: id.to_string(),
            summary: SessionSummary::from_jobs(&jobs),
            jobs: jobs.iter().map(JobView::from).collect(),
            last_updated: state.clock.now(),
        })
    })
    .await??;
    Ok(Json(response))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionView {
    pub upload_session_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub source: demeter_domain::SessionSource,
    pub summary: SessionSummary,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionsResponse {
    pub sessions: Vec<SessionView>,
}

/// Sessions listed by `GET /api/v1/sessions`, at most.
const MAX_SESSIONS: usize = 200;

/// `GET /api/v1/sessions`: live sessions, newest first, each with its summary.
async fn list_sessions(State(state): State<AppState>) -> Result<Json<SessionsResponse>, AppError> {
    let sessions = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let now = state.clock.now();
        let mut out = Vec::new();
        for s in state.store.recent_sessions(MAX_SESSIONS)? {
            if s.expires_at <= now {
                continue;
            }
            let jobs = state.store.session_jobs(s.id)?;
            out.push(SessionView {
                upload_session_id: s.id.to_string(),
                created_at: s.created_at,
                expires_at: s.expires_at,
                source: s.source,
                summary: SessionSummary::from_jobs(&jobs),
            });
        }
        Ok(out)
    })
    .await??;
    Ok(Json(SessionsResponse { sessions }))
}
