//! `/api/v1`: the seed's poll endpoint, sessions, jobs, queue actions, models and the event
//! stream. The
//! routes and the role each needs are declared in [`crate::routes`].

pub(crate) mod actions;
pub(crate) mod archive;
pub(crate) mod jobs;
pub(crate) mod models;
pub mod openapi;
pub(crate) mod poll;
pub mod poll_cache;
pub(crate) mod results;
pub(crate) mod upload;
pub mod views;

pub(crate) use poll::parse_session;

/// A cacheable JPEG from `path` (a thumbnail: its name never changes what it shows), or 404 with
/// `missing` when the file is not there.
pub(crate) async fn jpeg_file(
    path: std::path::PathBuf,
    etag: String,
    missing: &str,
) -> Result<axum::response::Response, crate::error::AppError> {
    use axum::{http::header, response::IntoResponse};
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok((
            [
                (header::CONTENT_TYPE, "image/jpeg".to_owned()),
                (header::CACHE_CONTROL, "private, max-age=86400, immutable".to_owned()),
                (header::ETAG, format!("\"{etag}\"")),
            ],
            bytes,
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(crate::error::AppError::NotFound(missing.into())),
        Err(e) => Err(crate::error::AppError::Internal(Box::new(e))),
    }
}
