//! One job: its detail, its thumbnail and its overlay.

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
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = uuid::Uuid, Path)), responses((status = 200, body = JobDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
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
            overlay_url: overlay_url(&job),
            legend: job.result().map(super::views::LegendEntry::of).unwrap_or_default(),
        })
    })
    .await??;
    Ok(Json(detail))
}

/// `GET /api/v1/jobs/{id}/thumbnail`: the 256-px JPEG, cacheable (it shows the photo, which a
/// job keeps whatever model it is run with).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/thumbnail", tag = "jobs", params(("id" = uuid::Uuid, Path)), responses((status = 200, description = "256-px JPEG", content_type = "image/jpeg"), (status = 404, body = ErrorBody)))]
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    // Anything that is not a job id (`../../etc/passwd` included) names no file: 404.
    let id = parse_job(&raw).map_err(|_| AppError::NotFound("no thumbnail here".into()))?;
    let path = state.thumbnails.join(format!("{id}.jpg"));
    tokio::task::spawn_blocking(move || load_live_job(&state, &who, id).map(|_| ())).await??;
    super::jpeg_file(path, id.to_string(), "no thumbnail for this job (not processed yet, failed, or expired)").await
}

/// Where a job's overlay is: versioned by the result it shows (`?v=`), so a browser that keeps
/// overlays for a day still fetches the new one after the photo is reprocessed.
fn overlay_url(job: &demeter_domain::Job) -> String {
    match job.result() {
        Some(r) => format!("/api/v1/jobs/{}/overlay?v={}", job.id, r.session_id),
        None => format!("/api/v1/jobs/{}/overlay", job.id),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct OverlayQuery {
    /// The result the caller expects (from `overlay_url`); when it is the current one the
    /// answer may be cached for good.
    v: Option<String>,
}

/// `GET /api/v1/jobs/{id}/overlay`: the photo (at most 1024 px on its long side) with each plant
/// boxed and numbered, drawn on first request. `ETag` is the result's id.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/overlay", tag = "jobs", params(("id" = uuid::Uuid, Path), ("v" = Option<String>, Query, description = "The result id from `overlay_url`")), responses((status = 200, description = "The photo with plants boxed and numbered", content_type = "image/jpeg"), (status = 404, body = ErrorBody)))]
pub(crate) async fn overlay(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(raw): Path<String>,
    axum::extract::Query(query): axum::extract::Query<OverlayQuery>,
) -> Result<Response, AppError> {
    let id = parse_job(&raw).map_err(|_| AppError::NotFound("no overlay here".into()))?;
    let drawn = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        load_live_job(&state, &who, id)?;
        (state.overlay)(id).map_err(AppError::Internal)
    })
    .await??;
    let Some((result, jpeg)) = drawn else {
        return Err(AppError::NotFound("no overlay for this job (not processed yet, failed, or expired)".into()));
    };
    let cache = if query.v.as_deref() == Some(result.to_string().as_str()) {
        "private, max-age=86400, immutable"
    } else {
        "private, no-cache"
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg".to_owned()),
            (header::CACHE_CONTROL, cache.to_owned()),
            (header::ETAG, format!("\"{result}\"")),
        ],
        jpeg,
    )
        .into_response())
}
