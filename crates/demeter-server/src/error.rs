//! One error type for every handler: the right status code and a JSON body.

use axum::{
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    Json,
};
use tracing::error;

/// Every error response's body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable machine code: `bad_request`, `not_found`, `conflict`, `too_large`, `unprocessable`,
    /// `internal`.
    pub error: &'static str,
    /// A sentence for people (the seed's `detail`).
    pub detail: String,
}

#[derive(Debug)]
pub enum AppError {
    /// 400: the request is malformed (missing or invalid parameter).
    BadRequest(String),
    /// 401: no or unknown credentials.
    Unauthorized(String),
    /// 403: known, but not allowed.
    Forbidden(String),
    /// 421: the `Host` is not a name of this appliance (DNS rebinding).
    MisdirectedRequest(String),
    /// 408: the client stopped sending.
    Timeout(String),
    /// 415: a cookie-authenticated change without a JSON or multipart body (CSRF).
    UnsupportedMediaType(String),
    /// 429: too many failed attempts from this address.
    TooManyRequests(String),
    /// 503: at capacity (e.g. event streams); retry later.
    Busy(String),
    /// 404: unknown route, or a session that does not exist or has expired.
    NotFound(String),
    /// 413: the request body or one of its files is over the limit.
    TooLarge(String),
    /// 409: the action is not possible in the resource's current state.
    Conflict(String),
    /// 422: well-formed, but what it carries cannot be used (a model that would not load).
    Unprocessable(String),
    /// 500: logged with its cause; the client only learns that it happened.
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl From<demeter_store::StoreError> for AppError {
    fn from(e: demeter_store::StoreError) -> Self {
        match e {
            demeter_store::StoreError::Transition(t) => AppError::Conflict(t.to_string()),
            demeter_store::StoreError::JobNotFound(id) => AppError::NotFound(format!("job {id} not found or expired")),
            e => AppError::Internal(Box::new(e)),
        }
    }
}

impl From<demeter_domain::command::CommandError> for AppError {
    fn from(e: demeter_domain::command::CommandError) -> Self {
        use demeter_domain::command::CommandError as E;
        match e {
            E::NotFound(m) => AppError::NotFound(m),
            E::Conflict(m) => AppError::Conflict(m),
            E::Invalid(m) => AppError::Unprocessable(m),
            e @ E::Store(_) => AppError::Internal(Box::new(e)),
        }
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::Internal(Box::new(e))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, detail) = match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            AppError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            AppError::MisdirectedRequest(m) => (StatusCode::MISDIRECTED_REQUEST, "misdirected", m),
            AppError::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, "timeout", m),
            AppError::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", m),
            AppError::TooManyRequests(m) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests", m),
            AppError::Busy(m) => (StatusCode::SERVICE_UNAVAILABLE, "busy", m),
            AppError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            AppError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            AppError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m),
            AppError::Internal(e) => {
                error!(error = %e, "internal error serving a request");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the appliance log".to_owned())
            }
        };
        // `detail` as in the seed (FastAPI's HTTPException); `error` is a stable machine code.
        let mut res = (status, Json(ErrorBody { error: code, detail })).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        }
        res
    }
}

/// The machine code of an error status, as [`AppError`] gives it.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::MISDIRECTED_REQUEST => "misdirected",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "busy",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// Longest error text kept from a response that is not yet in the JSON shape.
const MAX_ERROR_TEXT: usize = 4096;

/// Every error leaves in the JSON error shape: axum's own answers (an extractor's rejection of a
/// body, path or query, a body over the limit, a wrong media type, 405) are plain text, and are
/// rewritten here with their status, text and headers (`Allow`, `Retry-After`) kept. Answers that
/// are already JSON, and successes, pass untouched.
pub async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let detail = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let mut out = (status, Json(ErrorBody { error: code_for(status), detail })).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

pub(crate) async fn not_found(uri: Uri) -> AppError {
    AppError::NotFound(format!("no such route: {}", uri.path()))
}
