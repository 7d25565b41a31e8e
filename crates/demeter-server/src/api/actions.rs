//! State-changing actions, each a command to the engine, which stores the change and announces
//! it. Idempotent where that makes sense (retrying a session with no failed jobs, pausing a
//! paused queue); impossible transitions answer 409.

use axum::{
    extract::{Path, State},
    Extension, Json,
};
use serde::Serialize;

use demeter_domain::command::{Command, Outcome};

use super::{jobs::parse_job, poll::parse_session};
use crate::{
    error::{AppError, ErrorBody},
    AppState,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RetryResponse {
    pub upload_session_id: String,
    /// Jobs put back in the queue by this call.
    pub requeued: usize,
}

/// `POST /api/v1/sessions/{id}/retry`: re-queues the session's failed jobs.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/retry", tag = "actions", params(("id" = uuid::Uuid, Path)), responses((status = 200, body = RetryResponse), (status = 404, body = ErrorBody)))]
pub(crate) async fn retry_session(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<RetryResponse>, AppError> {
    let id = parse_session(&raw)?;
    let requeued = match execute(&state, Command::RetrySession(id)).await? {
        Outcome::Requeued { jobs, .. } => jobs,
        other => return Err(unexpected(other)),
    };
    Ok(Json(RetryResponse { upload_session_id: id.to_string(), requeued }))
}

/// Sends `command` to the engine from a blocking thread (it writes the store durably).
pub(crate) async fn execute(state: &AppState, command: Command) -> Result<Outcome, AppError> {
    let commands = state.commands.clone();
    Ok(tokio::task::spawn_blocking(move || commands.execute(command)).await??)
}

/// An outcome the command cannot have: a bug, answered as an internal error.
fn unexpected(outcome: Outcome) -> AppError {
    AppError::Internal(format!("unexpected outcome {outcome:?}").into())
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct ReprocessRequest {
    /// The installed model to run (see `installed_models` in `/health`); absent: the default.
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReprocessResponse {
    pub upload_session_id: String,
    /// The model the jobs will run with.
    pub model: String,
    /// Jobs put back in the queue by this call (every finished job of the session).
    pub requeued: usize,
}

/// `POST /api/v1/sessions/{id}/reprocess` (admin): runs every photo of a finished session again
/// with another installed model. Each job keeps its current result as `previous_result` (job
/// detail) until the new one is stored; a failed re-run keeps it. 409 while any photo of the
/// session is still pending or processing; 404 for a model that is not installed.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/reprocess", tag = "actions", params(("id" = uuid::Uuid, Path)), request_body = ReprocessRequest, responses((status = 200, body = ReprocessResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn reprocess_session(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Option<Json<ReprocessRequest>>,
) -> Result<Json<ReprocessResponse>, AppError> {
    let id = parse_session(&raw)?;
    let model = body.and_then(|b| b.0.model);
    match execute(&state, Command::Reprocess { session: id, model }).await? {
        Outcome::Requeued { jobs, model: Some(model) } => {
            Ok(Json(ReprocessResponse { upload_session_id: id.to_string(), model, requeued: jobs }))
        }
        other => Err(unexpected(other)),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelResponse {
    pub job_id: String,
    pub status: &'static str,
}

/// `POST /api/v1/jobs/{id}/cancel`: a pending job fails as "cancelled by user". Cancelling a
/// cancelled job is a no-op; cancelling a running or finished one is 409.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "actions", params(("id" = uuid::Uuid, Path)), responses((status = 200, body = CancelResponse), (status = 404, body = ErrorBody), (status = 409, description = "Running or finished", body = ErrorBody)))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    Extension(who): Extension<demeter_auth::Identity>,
    Path(raw): Path<String>,
) -> Result<Json<CancelResponse>, AppError> {
    let id = parse_job(&raw)?;
    // Only a job this caller may see (an uploader's own) may be cancelled.
    let st = state.clone();
    tokio::task::spawn_blocking(move || super::jobs::load_live_job(&st, &who, id)).await??;
    execute(&state, Command::CancelJob(id)).await?;
    Ok(Json(CancelResponse { job_id: id.to_string(), status: "failed" }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueState {
    pub paused: bool,
}

/// `POST /api/v1/queue/pause`: workers finish what they hold and take nothing new.
#[utoipa::path(post, path = "/api/v1/queue/pause", tag = "actions", responses((status = 200, body = QueueState)))]
pub(crate) async fn pause(State(state): State<AppState>) -> Result<Json<QueueState>, AppError> {
    set_paused(state, true).await
}

/// `POST /api/v1/queue/resume`.
#[utoipa::path(post, path = "/api/v1/queue/resume", tag = "actions", responses((status = 200, body = QueueState)))]
pub(crate) async fn resume(State(state): State<AppState>) -> Result<Json<QueueState>, AppError> {
    set_paused(state, false).await
}

async fn set_paused(state: AppState, paused: bool) -> Result<Json<QueueState>, AppError> {
    execute(&state, Command::SetPaused(paused)).await?;
    Ok(Json(QueueState { paused }))
}

/// `POST /admin/cleanup-sessions`: runs the TTL sweep now.
#[utoipa::path(post, path = "/admin/cleanup-sessions", tag = "actions", responses((status = 200, description = "Counts of removed sessions and jobs")))]
pub(crate) async fn cleanup(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    match execute(&state, Command::Cleanup).await? {
        Outcome::Cleaned { sessions, jobs } => {
            Ok(Json(serde_json::json!({ "removed_sessions": sessions, "removed_jobs": jobs })))
        }
        other => Err(unexpected(other)),
    }
}
