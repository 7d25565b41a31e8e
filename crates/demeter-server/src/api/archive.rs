//! `/api/v1/results`: the results archive, which outlives job monitoring.
//!
//! Filtered by location, time taken, model, session and file name; paged by an opaque cursor;
//! as JSON, or as CSV (`Accept: text/csv`, or the `.csv` path). An uploader sees only the
//! photos it uploaded, as with sessions.

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    Extension, Json,
};
use chrono::{DateTime, NaiveDate, Utc};
use demeter_auth::{Identity, Role};
use demeter_domain::archive::ArchivedResult;
use demeter_store::{ArchivePage, ArchiveQuery};
use serde::{Deserialize, Serialize};

use crate::{
    error::{AppError, ErrorBody},
    AppState,
};

/// Results per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsParams {
    /// A storage location's id (empty: results without a location).
    location: Option<String>,
    /// Taken at or after: RFC 3339 (`2026-05-04T08:00:00Z`) or a date (`2026-05-04`, midnight UTC).
    since: Option<String>,
    /// Taken before: as `since`.
    until: Option<String>,
    /// The model's name.
    model: Option<String>,
    /// An upload session's id.
    session: Option<String>,
    /// Part of the file name (case-insensitive).
    q: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Results per page (default 100, at most 10000).
    limit: Option<usize>,
    /// `asc`: oldest first; default `desc`, newest first.
    order: Option<String>,
}

/// An archived result, with where its thumbnail is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultItem {
    #[serde(flatten)]
    pub result: ArchivedResult,
    pub thumbnail_url: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultsPage {
    pub results: Vec<ResultItem>,
    /// Pass it as `cursor` for the next page; `null` when there is no more. A page may hold
    /// fewer than `limit` results and still have one (it stopped reading after 20,000 index
    /// entries).
    pub next_cursor: Option<String>,
}

fn parse_time(name: &str, raw: &str) -> Result<DateTime<Utc>, AppError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDate::parse_from_str(raw, "%Y-%m-%d").map(|d| d.and_time(Default::default()).and_utc()))
        .map_err(|_| AppError::BadRequest(format!("{name} {raw:?} is not a date (2026-05-04) or an RFC 3339 time")))
}

impl ResultsParams {
    fn query(self, who: &Identity) -> Result<ArchiveQuery, AppError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::BadRequest(format!("limit must be between 1 and {MAX_LIMIT}")));
        }
        let oldest_first = match self.order.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => return Err(AppError::BadRequest(format!("order {other:?} is not asc or desc"))),
        };
        let session = self.session.as_deref().map(super::parse_session).transpose()?;
        Ok(ArchiveQuery {
            location: self.location,
            since: self.since.as_deref().map(|s| parse_time("since", s)).transpose()?,
            until: self.until.as_deref().map(|s| parse_time("until", s)).transpose()?,
            model: self.model,
            session,
            q: self.q.filter(|q| !q.is_empty()),
            // An uploader's archive is its own uploads.
            owner: (who.role == Role::Uploader).then(|| who.name.clone()),
            cursor: self.cursor.filter(|c| !c.is_empty()),
            limit,
            oldest_first,
        })
    }
}

async fn page(state: AppState, query: ArchiveQuery) -> Result<ArchivePage, AppError> {
    tokio::task::spawn_blocking(move || state.store.archive_page(&query))
        .await??
        .map_err(|e| AppError::BadRequest(e.to_string()))
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| {
        a.split(',').any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv")))
    })
}

/// `GET /api/v1/results`: archived results, newest taken first; CSV with `Accept: text/csv`.
#[utoipa::path(get, path = "/api/v1/results", tag = "results", params(ResultsParams), responses((status = 200, body = ResultsPage, description = "A page of results (CSV with Accept: text/csv; the next page's cursor then in the X-Next-Cursor header)"), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    Query(params): Query<ResultsParams>,
) -> Result<Response, AppError> {
    let query = params.query(&who)?;
    let page = page(state, query).await?;
    if wants_csv(&headers) {
        return Ok(csv(page));
    }
    let results = page
        .results
        .into_iter()
        .map(|r| ResultItem { thumbnail_url: format!("/api/v1/results/{}/thumbnail", r.result_id), result: r })
        .collect();
    Ok(Json(ResultsPage { results, next_cursor: page.next_cursor }).into_response())
}

/// `GET /api/v1/results.csv`: the same as CSV, for a spreadsheet's "from web".
#[utoipa::path(get, path = "/api/v1/results.csv", tag = "results", params(ResultsParams), responses((status = 200, description = "A page of results, one row each; the next page's cursor in the X-Next-Cursor header", content_type = "text/csv"), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_csv(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Query(params): Query<ResultsParams>,
) -> Result<Response, AppError> {
    let query = params.query(&who)?;
    Ok(csv(page(state, query).await?))
}

fn csv(page: ArchivePage) -> Response {
    let mut out = String::from(ArchivedResult::CSV_HEADER);
    out.push('\n');
    for r in &page.results {
        out.push_str(&r.csv_row());
        out.push('\n');
    }
    let mut res = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response();
    if let Some(next) = page.next_cursor.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        res.headers_mut().insert("x-next-cursor", next);
    }
    res
}

/// `GET /api/v1/results/{id}/thumbnail`: an archived result's thumbnail, kept while its record
/// is.
#[utoipa::path(get, path = "/api/v1/results/{id}/thumbnail", tag = "results", params(("id" = uuid::Uuid, Path, description = "The result's id")), responses((status = 200, description = "The 256-px JPEG", content_type = "image/jpeg"), (status = 404, body = ErrorBody)))]
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let gone = || AppError::NotFound("no archived result with this id".into());
    let id = uuid::Uuid::parse_str(&raw).map_err(|_| gone())?;
    let store = state.store.clone();
    let record = tokio::task::spawn_blocking(move || store.archived(id)).await??.ok_or_else(gone)?;
    if who.role == Role::Uploader && record.owner.as_deref() != Some(who.name.as_str()) {
        return Err(AppError::Forbidden("this result belongs to another uploader".into()));
    }
    let path = state.thumbnails.join(demeter_domain::archive::THUMBNAILS_DIR).join(format!("{id}.jpg"));
    match tokio::fs::read(path).await {
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
            Err(AppError::NotFound("this result has no thumbnail".into()))
        }
        Err(e) => Err(AppError::Internal(Box::new(e))),
    }
}
