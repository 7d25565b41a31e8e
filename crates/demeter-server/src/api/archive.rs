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
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Taken before: as `since`.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// The model's name.
    model: Option<String>,
    /// An upload session's id.
    #[param(value_type = Option<String>, format = Uuid)]
    session: Option<String>,
    /// Part of the file name (case-insensitive).
    q: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^([0-9a-f]{2}){0,256}$")]
    cursor: Option<String>,
    /// Results per page (default 100, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// `asc`: oldest first; default `desc`, newest first.
    #[param(inline)]
    order: Option<Order>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
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
        let oldest_first = self.order == Some(Order::Asc);
        // An empty text is no filter (a form's blank field), except for `location`, where
        // empty names the photos without one. Times and ids must be what they say (400).
        let given = |v: Option<String>| v.filter(|v| !v.is_empty());
        let session = self.session.as_deref().map(super::parse_session).transpose()?;
        Ok(ArchiveQuery {
            location: self.location,
            since: self.since.as_deref().map(|s| parse_time("since", s)).transpose()?,
            until: self.until.as_deref().map(|s| parse_time("until", s)).transpose()?,
            model: given(self.model),
            session,
            q: given(self.q),
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
    super::jpeg_file(path, id.to_string(), "this result has no thumbnail").await
}

/// A location's latest photo and how its count moved since the one before.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationSummary {
    /// The location's id (`""`: photos no rule placed).
    pub id: String,
    /// Its configured name, when it has one.
    pub name: Option<String>,
    pub latest: PointOut,
    /// The photo before the latest, if any.
    pub previous: Option<PointOut>,
    /// Plants gained (or lost, negative) since the previous photo.
    pub change: Option<i64>,
    /// The latest photo's count fell by more than `alerts.drop_percent`: plants died or were
    /// removed.
    pub dropped: bool,
}

/// One photo of a location's series.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PointOut {
    pub taken_at: DateTime<Utc>,
    pub total_detected: u32,
    /// Share of the photo covered by plants, 0..=1.
    pub plant_cover: f32,
    #[schema(value_type = String, format = Uuid)]
    pub result_id: uuid::Uuid,
    pub thumbnail_url: String,
}

impl From<demeter_store::SeriesPoint> for PointOut {
    fn from(p: demeter_store::SeriesPoint) -> Self {
        Self {
            taken_at: p.taken_at,
            total_detected: p.total_detected,
            plant_cover: p.plant_cover,
            result_id: p.result_id,
            thumbnail_url: format!("/api/v1/results/{}/thumbnail", p.result_id),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationsResponse {
    pub locations: Vec<LocationSummary>,
    /// The drop, in percent, that raises `dropped`.
    pub drop_percent: f64,
}

/// A location's points as the caller may see them: the index alone, or for an uploader its own
/// uploads' records.
fn series_for(
    state: &AppState,
    who: &Identity,
    location: &str,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<demeter_store::SeriesPoint>, AppError> {
    if who.role != Role::Uploader {
        return Ok(state.store.location_series(location, since, until)?);
    }
    let mut query = ArchiveQuery {
        location: Some(location.to_owned()),
        since,
        until,
        owner: Some(who.name.clone()),
        limit: MAX_LIMIT,
        oldest_first: true,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let page = state.store.archive_page(&query)?.map_err(|e| AppError::BadRequest(e.to_string()))?;
        out.extend(page.results.iter().map(|r| demeter_store::SeriesPoint {
            taken_at: r.taken_at,
            result_id: r.result_id,
            total_detected: r.total_detected,
            plant_cover: r.plant_cover,
        }));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// `GET /api/v1/locations`: every location with its latest count, the change since the photo
/// before, and whether it dropped by more than `alerts.drop_percent`.
#[utoipa::path(get, path = "/api/v1/locations", tag = "results", responses((status = 200, body = LocationsResponse)))]
pub(crate) async fn locations(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
) -> Result<Json<LocationsResponse>, AppError> {
    let alerts = state.config.alerts.clone();
    let out = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let mut out = Vec::new();
        for id in state.store.archive_locations()? {
            let tail = if who.role == Role::Uploader {
                let all = series_for(&state, &who, &id, None, None)?;
                all[all.len().saturating_sub(2)..].to_vec()
            } else {
                state.store.location_tail(&id, 2)?
            };
            let Some(latest) = tail.last().copied() else { continue };
            let previous = (tail.len() == 2).then(|| tail[0]);
            let name = state.store.archived(latest.result_id)?.and_then(|r| r.location_name);
            out.push(LocationSummary {
                id,
                name,
                change: previous.map(|p| i64::from(latest.total_detected) - i64::from(p.total_detected)),
                dropped: previous.is_some_and(|p| alerts.is_drop(p.total_detected, latest.total_detected)),
                latest: latest.into(),
                previous: previous.map(Into::into),
            });
        }
        Ok(LocationsResponse { locations: out, drop_percent: alerts.drop_percent })
    })
    .await??;
    Ok(Json(out))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// The location's id (empty: photos no rule placed).
    location: String,
    /// Taken at or after (a date or an RFC 3339 time).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Taken before.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesResponse {
    pub location: String,
    /// Oldest first: one per photo.
    pub points: Vec<PointOut>,
}

/// `GET /api/v1/series?location=…`: a location's count and plant cover over time, one point per
/// photo, oldest first (read from an index: no record is opened).
#[utoipa::path(get, path = "/api/v1/series", tag = "results", params(SeriesParams), responses((status = 200, body = SeriesResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn series(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Query(params): Query<SeriesParams>,
) -> Result<Json<SeriesResponse>, AppError> {
    let since = params.since.as_deref().map(|s| parse_time("since", s)).transpose()?;
    let until = params.until.as_deref().map(|s| parse_time("until", s)).transpose()?;
    let location = params.location;
    let out = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let points = series_for(&state, &who, &location, since, until)?;
        Ok(SeriesResponse { location, points: points.into_iter().map(Into::into).collect() })
    })
    .await??;
    Ok(Json(out))
}
