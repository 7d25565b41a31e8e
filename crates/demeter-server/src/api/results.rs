//! A session's results as JSON or CSV: one row per photo.

use axum::{
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
    Extension, Json,
};
use demeter_auth::Identity;
use demeter_domain::{archive::csv_field, Job, Stage};
use serde::Serialize;

use super::{poll::parse_session, poll::session_gone, views::SessionSnapshot};
use crate::{
    error::{AppError, ErrorBody},
    AppState,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultRow {
    pub filename: String,
    pub status: &'static str,
    pub plant_count: Option<u32>,
    pub storage_location_id: Option<String>,
    pub error_message: Option<String>,
    /// The model that counted (name and version), and where it ran.
    pub model: Option<String>,
    pub execution_provider: Option<String>,
    pub device: Option<String>,
    /// The tray's grid with plants per cell, when one was found.
    pub grid: Option<demeter_domain::Grid>,
    /// Whether the count can be trusted, and why not.
    pub trust: Option<demeter_domain::Trust>,
    /// Every plant's box, centre, area and cell, in the photo's pixels.
    pub plants: Vec<demeter_domain::Plant>,
    /// A multi-class model's count per class (plants and others); empty for a mask model.
    pub class_counts: std::collections::BTreeMap<String, u32>,
    /// What a multi-class model found that is not a plant, with its class.
    pub objects: Vec<demeter_domain::Plant>,
    pub timings_ms: std::collections::BTreeMap<Stage, u64>,
}

fn row(j: &Job) -> ResultRow {
    ResultRow {
        filename: j.filename.clone(),
        status: j.status().as_str(),
        plant_count: j.result().map(|r| r.total_detected),
        storage_location_id: j.result().and_then(|r| r.storage_location_id.clone()),
        error_message: j.error().map(|e| e.message.clone()),
        model: j.result().map(|r| format!("{} {}", r.model.name, r.model.version)),
        execution_provider: j.result().map(|r| r.execution_provider.clone()),
        device: j.result().map(|r| r.device.clone()),
        grid: j.result().and_then(|r| r.grid.clone()),
        trust: j.result().map(|r| r.trust.clone()),
        plants: j.result().map(|r| r.plants.clone()).unwrap_or_default(),
        class_counts: j.result().map(|r| r.class_counts.clone()).unwrap_or_default(),
        objects: j.result().map(|r| r.objects.clone()).unwrap_or_default(),
        timings_ms: j.result().map(|r| r.timings_ms.clone()).unwrap_or_default(),
    }
}

/// The grid and trust columns of a CSV row: rows, cols, occupied, empty and crowded cells,
/// plants per cell (row-major, space-separated), trusted, and the reasons' codes.
fn grid_cells(r: &ResultRow) -> Vec<String> {
    let g = r.grid.as_ref();
    let n = |f: fn(&demeter_domain::Grid) -> u32| g.map(|g| f(g).to_string()).unwrap_or_default();
    vec![
        n(|g| g.rows),
        n(|g| g.cols),
        n(demeter_domain::Grid::occupied),
        n(demeter_domain::Grid::empty),
        n(demeter_domain::Grid::crowded),
        g.map(|g| g.plants_per_cell.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")).unwrap_or_default(),
        r.trust.as_ref().map(|t| t.trusted.to_string()).unwrap_or_default(),
        r.trust
            .as_ref()
            .map(|t| t.reasons.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(";"))
            .unwrap_or_default(),
    ]
}

async fn rows(state: AppState, who: Identity, raw: String) -> Result<Vec<ResultRow>, AppError> {
    let id = parse_session(&raw)?;
    tokio::task::spawn_blocking(move || {
        let snap = SessionSnapshot::load(&state, id)?.ok_or_else(session_gone)?;
        crate::auth::check_access(&who, &snap.session)?;
        Ok(snap.jobs.iter().map(row).collect())
    })
    .await?
}

/// `GET /api/v1/sessions/{id}/results.json`.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/results.json", tag = "status", params(("id" = uuid::Uuid, Path)), responses((status = 200, body = [ResultRow]), (status = 404, body = ErrorBody)))]
pub(crate) async fn results_json(
    State(state): State<AppState>,
    Extension(who): Extension<demeter_auth::Identity>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<ResultRow>>, AppError> {
    Ok(Json(rows(state, who, raw).await?))
}

/// `GET /api/v1/sessions/{id}/results.csv`.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/results.csv", tag = "status", params(("id" = uuid::Uuid, Path)), responses((status = 200, description = "One row per photo", content_type = "text/csv"), (status = 404, body = ErrorBody)))]
pub(crate) async fn results_csv(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let rows = rows(state, who, raw.clone()).await?;
    let mut out = String::from(
        "filename,status,plant_count,storage_location_id,error_message,grid_rows,grid_cols,cells_occupied,\
         cells_empty,cells_crowded,plants_per_cell,trusted,trust_reasons,model,execution_provider,device,class_counts",
    );
    for s in Stage::ALL {
        out.push_str(&format!(",{}_ms", s.as_str()));
    }
    out.push('\n');
    for r in rows {
        let mut cells = vec![
            csv_field(&r.filename),
            r.status.to_owned(),
            r.plant_count.map(|c| c.to_string()).unwrap_or_default(),
            csv_field(r.storage_location_id.as_deref().unwrap_or("")),
            csv_field(r.error_message.as_deref().unwrap_or("")),
        ];
        cells.extend(grid_cells(&r));
        cells.extend([&r.model, &r.execution_provider, &r.device].map(|v| csv_field(v.as_deref().unwrap_or(""))));
        // `class=count` pairs, `;`-separated: one column whatever the model's classes.
        cells.push(csv_field(&r.class_counts.iter().map(|(c, n)| format!("{c}={n}")).collect::<Vec<_>>().join(";")));
        cells.extend(Stage::ALL.iter().map(|s| r.timings_ms.get(s).map(|v| v.to_string()).unwrap_or_default()));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    let disposition = format!(
        "attachment; filename=\"demeter-{}.csv\"",
        raw.chars().filter(|c| c.is_ascii_hexdigit() || *c == '-').collect::<String>()
    );
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        out,
    )
        .into_response())
}
