//! `/api/v1`: the seed's poll endpoint, sessions, jobs, queue actions and the event stream.

mod actions;
mod jobs;
pub mod openapi;
mod poll;
pub mod poll_cache;
mod results;
mod upload;
pub mod views;

pub(crate) use actions::cleanup;

use axum::{
    routing::{get, post},
    Router,
};

use crate::AppState;

pub(crate) use poll::parse_session;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/photos/jobs/status", get(poll::poll_status))
        .route(
            "/photos/upload",
            post(upload::upload).layer(axum::extract::DefaultBodyLimit::max(upload::MAX_UPLOAD_BYTES)),
        )
        .route("/sessions", get(poll::list_sessions))
        .route("/sessions/{id}/retry", post(actions::retry_session))
        .route("/sessions/{id}/reprocess", post(actions::reprocess_session))
        .route("/sessions/{id}/results.json", get(results::results_json))
        .route("/sessions/{id}/results.csv", get(results::results_csv))
        .route("/jobs/{id}", get(jobs::job_detail))
        .route("/jobs/{id}/thumbnail", get(jobs::thumbnail))
        .route("/jobs/{id}/overlay", get(jobs::overlay))
        .route("/jobs/{id}/cancel", post(actions::cancel_job))
        .route("/queue/pause", post(actions::pause))
        .route("/queue/resume", post(actions::resume))
        .route("/events", get(crate::events::stream))
        .route("/openapi.json", get(openapi::document))
}
