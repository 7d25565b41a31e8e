//! One job: its detail and its thumbnail.

use axum::{
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
    Extension, Json,
};
use demeter_auth::Identity;
use demeter_domain::JobId;

use super::views::{estimates, JobDetail, JobView};
use crate::{
    error::{AppError, ErrorBody},
    AppState,
};

pub(crate) fn parse_job(raw: &str) -> Result<JobId, AppError> {
    raw.parse().map_err(|_| AppError::BadRequest(format!("job id {raw:?} is not a UUID")))
}

/// A job, if it exists and `who` may see its session.
pub(crate) fn load_live_job(state: &AppState, who: &Identity, id: JobId) -> Result<demeter_domain::Job, AppError> {
    let job = state
        .store
        .read_durable(|store| store.job(id))?
        .ok_or_else(|| AppError::NotFound("job not found or expired".into()))?;
    if let Some(session) = state.store.session(job.upload_session_id)? {
        crate::auth::check_access(who, &session)?;
    }
    Ok(job)
}

/// `GET /api/v1/jobs/{id}`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)), responses((status = 200, body = JobDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn job_detail(
    State(state): State<AppState>,
    Extension(who): Extension<demeter_auth::Identity>,
    Path(raw): Path<String>,
) -> Result<Json<JobDetail>, AppError> {
    let id = parse_job(&raw)?;
    let detail = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let job = load_live_job(&state, &who, id)?;
        let stats = state.store.stage_stats()?;
        let estimate = estimates(&state, std::slice::from_ref(&job), &stats, state.clock.now())?[0];
        Ok(JobDetail {
            job: JobView::new(&job, estimate),
            upload_session_id: job.upload_session_id.to_string(),
            created_at: job.created_at,
            attempts: job.attempts,
            error_kind: job.error().map(|e| e.kind),
            details: job.result().cloned(),
            previous_result: job.previous_result.as_deref().cloned(),
            model: job.model.clone(),
            thumbnail_url: format!("/api/v1/jobs/{id}/thumbnail"),
            overlay_url: format!("/api/v1/jobs/{id}/overlay"),
        })
    })
    .await??;
    Ok(Json(detail))
}

/// `GET /api/v1/jobs/{id}/thumbnail`: the 256-px JPEG.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/thumbnail", tag = "jobs", params(("id" = String, Path)), responses((status = 200, description = "256-px JPEG", content_type = "image/jpeg"), (status = 404, body = ErrorBody)))]
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    image_file(&state, &who, &state.thumbnails, &raw, "thumbnail").await
}

/// `GET /api/v1/jobs/{id}/overlay`: the photo downscaled with each plant boxed and numbered.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/overlay", tag = "jobs", params(("id" = String, Path)), responses((status = 200, description = "The photo with plants boxed and numbered", content_type = "image/jpeg"), (status = 404, body = ErrorBody)))]
pub(crate) async fn overlay(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    image_file(&state, &who, &state.overlays, &raw, "overlay").await
}

/// Serves `<dir>/<job id>.jpg`, cacheable (a job's images never change; the id is parsed as a
/// UUID first, so no path can be smuggled in).
async fn image_file(
    state: &AppState,
    who: &Identity,
    dir: &std::path::Path,
    raw: &str,
    what: &str,
) -> Result<Response, AppError> {
    // Anything that is not a job id (`../../etc/passwd` included) names no file: 404.
    let id = parse_job(raw).map_err(|_| AppError::NotFound(format!("no {what} here")))?;
    {
        let (state, who) = (state.clone(), who.clone());
        tokio::task::spawn_blocking(move || load_live_job(&state, &who, id).map(|_| ())).await??;
    }
    match tokio::fs::read(dir.join(format!("{id}.jpg"))).await {
        Ok(bytes) => Ok((
            [
                (header::CONTENT_TYPE, "image/jpeg".to_owned()),
                (header::CACHE_CONTROL, "private, max-age=86400, immutable".to_owned()),
                (header::ETAG, format!("\"{id}\"")),
            ],
            bytes,
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(AppError::NotFound(format!("no {what} for this job (not processed yet, failed, or expired)")))
        }
        Err(e) => Err(AppError::Internal(Box::new(e))),
    }
}
