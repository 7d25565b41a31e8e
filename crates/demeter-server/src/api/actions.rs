//! State-changing actions. Idempotent where that makes sense (retrying a session with no failed
//! jobs, pausing a paused queue); impossible transitions answer 409.

use axum::{
    extract::{Path, State},
    Extension, Json,
};
use serde::Serialize;

use super::{jobs::parse_job, poll::parse_session, poll::session_gone, views::SessionSnapshot};
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
#[utoipa::path(post, path = "/api/v1/sessions/{id}/retry", tag = "actions", params(("id" = String, Path)), responses((status = 200, body = RetryResponse), (status = 404, body = ErrorBody)))]
pub(crate) async fn retry_session(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<RetryResponse>, AppError> {
    let id = parse_session(&raw)?;
    let requeued = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let snap = SessionSnapshot::load(&state, id)?.ok_or_else(session_gone)?;
        let now = state.clock.now();
        let mut n = 0;
        for job in snap.jobs.iter().filter(|j| j.error().is_some()) {
            let stored = state.store.update(job.id, |j| j.retry(now))?;
            crate::events::publish_job(&state, &stored)?;
            n += 1;
        }
        Ok(n)
    })
    .await??;
    Ok(Json(RetryResponse { upload_session_id: id.to_string(), requeued }))
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
/// session is still pending or processing; 400 for a model that is not installed.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/reprocess", tag = "actions", params(("id" = String, Path)), request_body = ReprocessRequest, responses((status = 200, body = ReprocessResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn reprocess_session(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Option<Json<ReprocessRequest>>,
) -> Result<Json<ReprocessResponse>, AppError> {
    let id = parse_session(&raw)?;
    let wanted = body.and_then(|b| b.0.model);
    let response = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let installed = (state.health)().installed_models;
        let default = installed.first().map(|m| m.name.clone()).unwrap_or_default();
        let model = match &wanted {
            Some(name) if installed.iter().any(|m| m.name == *name) => name.clone(),
            Some(name) => {
                let names: Vec<&str> = installed.iter().map(|m| m.name.as_str()).collect();
                return Err(AppError::BadRequest(format!(
                    "model {name:?} is not installed; installed: {}",
                    names.join(", ")
                )));
            }
            None => default.clone(),
        };
        let snap = SessionSnapshot::load(&state, id)?.ok_or_else(session_gone)?;
        if snap.jobs.iter().any(|j| !j.is_terminal()) {
            return Err(AppError::Conflict("the session is still processing; reprocess it when it is done".into()));
        }
        let now = state.clock.now();
        // The default model runs jobs with no model set, so results say what they always said.
        let job_model = (model != default).then(|| model.clone());
        for job in &snap.jobs {
            let stored = state.store.update(job.id, |j| j.reprocess(job_model.clone(), now))?;
            crate::events::publish_job(&state, &stored)?;
        }
        tracing::info!(session = %id, model = %model, jobs = snap.jobs.len(), "session reprocessing");
        Ok(ReprocessResponse { upload_session_id: id.to_string(), model, requeued: snap.jobs.len() })
    })
    .await??;
    Ok(Json(response))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelResponse {
    pub job_id: String,
    pub status: &'static str,
}

/// `POST /api/v1/jobs/{id}/cancel`: a pending job fails as "cancelled by user". Cancelling a
/// cancelled job is a no-op; cancelling a running or finished one is 409.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "actions", params(("id" = String, Path)), responses((status = 200, body = CancelResponse), (status = 404, body = ErrorBody), (status = 409, description = "Running or finished", body = ErrorBody)))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    Extension(who): Extension<demeter_auth::Identity>,
    Path(raw): Path<String>,
) -> Result<Json<CancelResponse>, AppError> {
    let id = parse_job(&raw)?;
    tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let job = super::jobs::load_live_job(&state, &who, id)?;
        if job.error().map(|e| e.kind) == Some(demeter_domain::ErrorKind::Cancelled) {
            return Ok(());
        }
        let stored = state.store.update(id, |j| j.cancel(state.clock.now()))?;
        crate::events::publish_job(&state, &stored)?;
        Ok(())
    })
    .await??;
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
    tokio::task::spawn_blocking(move || state.store.set_paused(paused)).await??;
    Ok(Json(QueueState { paused }))
}

/// `POST /admin/cleanup-sessions`: runs the TTL sweep now.
#[utoipa::path(post, path = "/admin/cleanup-sessions", tag = "actions", responses((status = 200, description = "Counts of removed sessions and jobs")))]
pub(crate) async fn cleanup(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    let (sessions, jobs) = tokio::task::spawn_blocking(move || (state.cleanup)()).await?;
    Ok(Json(serde_json::json!({ "removed_sessions": sessions, "removed_jobs": jobs })))
}
