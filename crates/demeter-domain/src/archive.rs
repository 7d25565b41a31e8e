//! The results archive: one record per completed photo, kept after job monitoring fades.
//!
//! Jobs and sessions are monitoring: they leave after their TTLs. A grower's question, "how many
//! plants were on bench B3 last Monday?", is answered from here. A record is written in the same
//! transaction that stores a job's completed result (so a result the API has shown is in the
//! archive too), survives the TTL sweeps and the photo's deletion, and is removed only by
//! `results.retention_days`. A reprocessed photo keeps a record per run, each with its model.
//!
//! Records are compact (see [`ArchivedResult`]): the store keeps them in a binary encoding, a
//! few hundred bytes for a tray of a few dozen plants, so a million of them fit in well under a
//! gigabyte.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{location::LocationRule, Job, JobId, JobResult, SessionId, TrustReason};

/// The folder under the thumbnails folder that holds archived results' thumbnails,
/// `<result_id>.jpg`, kept while their records are (the job's own goes with the job).
pub const THUMBNAILS_DIR: &str = "results";

/// Where a photo's `taken_at` came from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakenAtSource {
    /// The camera's EXIF `DateTimeOriginal`.
    Exif,
    /// The file's modification time (no EXIF date).
    Mtime,
}

/// One completed photo, for good. No field is skipped when empty: the store's binary encoding
/// needs every field, and the JSON is the same shape for every record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedResult {
    /// The run's id (`result.session_id` of the job), a UUIDv7 of when it was processed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub result_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub job_id: JobId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub upload_session_id: SessionId,
    /// The photo's path relative to the watched folder (or the name it was uploaded with).
    pub filename: String,
    /// The photo's content hash (`image_id`: the first 16 hex digits of its BLAKE3 hash).
    pub content_hash: String,
    /// When the photo was taken: EXIF `DateTimeOriginal` (read as UTC; cameras rarely record
    /// their zone), else the file's modification time.
    pub taken_at: DateTime<Utc>,
    pub taken_at_source: TakenAtSource,
    pub processed_at: DateTime<Utc>,
    /// The storage location's id (`null`: none matched and no default is set).
    pub location_id: Option<String>,
    pub location_name: Option<String>,
    pub location_rule: Option<LocationRule>,
    pub model_name: String,
    pub model_version: String,
    /// SHA-256 of the model's ONNX file.
    pub model_sha256: String,
    /// Plants counted.
    pub total_detected: u32,
    /// Per class, for a model with classes (plants and others); empty otherwise.
    pub class_counts: BTreeMap<String, u32>,
    /// The tray's grid, when the photo shows one: rows, columns, and cells holding a plant.
    pub grid: Option<ArchivedGrid>,
    /// Share of the photo covered by plants, 0..=1.
    pub plant_cover: f32,
    /// Each plant's box, `[x, y, width, height]` in the photo's pixels.
    pub boxes: Vec<[u32; 4]>,
    /// The photo's size (after EXIF orientation), which the boxes refer to.
    pub width: u32,
    pub height: u32,
    pub trusted: bool,
    pub trust_reasons: Vec<TrustReason>,
    /// Who uploaded the photo through the page or the API (`null`: the watched folder).
    pub owner: Option<String>,
}

/// A tray's grid in the archive.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedGrid {
    pub rows: u32,
    pub cols: u32,
    /// Cells with at least one plant.
    pub occupied: u32,
}

/// When `job`'s photo was taken, and how that is known: the EXIF date its `result` read, else
/// the file's modification time (else when the job was made). What the archive records and
/// what a location's photos are ordered by.
pub fn taken_at(job: &Job, result: &JobResult) -> (DateTime<Utc>, TakenAtSource) {
    match result.taken_at {
        Some(t) => (t, TakenAtSource::Exif),
        None => (mtime(job.mtime_ns).unwrap_or(job.created_at), TakenAtSource::Mtime),
    }
}

impl ArchivedResult {
    /// The record of `job`'s completed `result`, processed at `processed_at`, uploaded by
    /// `owner`.
    pub fn new(job: &Job, result: &JobResult, processed_at: DateTime<Utc>, owner: Option<String>) -> Self {
        let (taken_at, taken_at_source) = taken_at(job, result);
        Self {
            result_id: result.session_id,
            job_id: job.id,
            upload_session_id: job.upload_session_id,
            filename: job.filename.clone(),
            content_hash: job.image_id.clone(),
            taken_at,
            taken_at_source,
            processed_at,
            location_id: result.storage_location_id.clone(),
            location_name: result.storage_location_name.clone(),
            location_rule: result.location_rule,
            model_name: result.model.name.clone(),
            model_version: result.model.version.clone(),
            model_sha256: result.model.onnx_sha256.clone(),
            total_detected: result.total_detected,
            class_counts: result.class_counts.clone(),
            grid: result.grid.as_ref().map(|g| ArchivedGrid { rows: g.rows, cols: g.cols, occupied: g.occupied() }),
            plant_cover: result.plant_area_fraction,
            boxes: result.plants.iter().map(|p| p.bbox).collect(),
            width: result.width,
            height: result.height,
            trusted: result.trust.trusted,
            trust_reasons: result.trust.reasons.clone(),
            owner,
        }
    }

    /// The CSV header matching [`ArchivedResult::csv_row`].
    pub const CSV_HEADER: &'static str = "result_id,taken_at,taken_at_source,processed_at,location_id,location_name,\
        location_rule,filename,content_hash,total_detected,class_counts,plant_cover,grid_rows,grid_cols,\
        grid_occupied,trusted,trust_reasons,model_name,model_version,model_sha256,width,height,boxes,\
        upload_session_id,job_id";

    /// One CSV line (no newline), quoted where needed: boxes as `x y w h` separated by `;`,
    /// class counts as `class=n` separated by `;`.
    pub fn csv_row(&self) -> String {
        let grid = self.grid.map(|g| [g.rows, g.cols, g.occupied].map(|v| v.to_string()));
        let fields: Vec<String> = vec![
            self.result_id.to_string(),
            self.taken_at.to_rfc3339(),
            match self.taken_at_source {
                TakenAtSource::Exif => "exif".into(),
                TakenAtSource::Mtime => "mtime".into(),
            },
            self.processed_at.to_rfc3339(),
            self.location_id.clone().unwrap_or_default(),
            self.location_name.clone().unwrap_or_default(),
            self.location_rule.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            self.filename.clone(),
            self.content_hash.clone(),
            self.total_detected.to_string(),
            self.class_counts.iter().map(|(c, n)| format!("{c}={n}")).collect::<Vec<_>>().join(";"),
            format!("{:.4}", self.plant_cover),
            grid.as_ref().map(|g| g[0].clone()).unwrap_or_default(),
            grid.as_ref().map(|g| g[1].clone()).unwrap_or_default(),
            grid.as_ref().map(|g| g[2].clone()).unwrap_or_default(),
            self.trusted.to_string(),
            self.trust_reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(";"),
            self.model_name.clone(),
            self.model_version.clone(),
            self.model_sha256.clone(),
            self.width.to_string(),
            self.height.to_string(),
            self.boxes.iter().map(|b| format!("{} {} {} {}", b[0], b[1], b[2], b[3])).collect::<Vec<_>>().join(";"),
            self.upload_session_id.to_string(),
            self.job_id.to_string(),
        ];
        fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",")
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break; a leading `=`, `+`, `-`
/// or `@` is prefixed with `'` so a spreadsheet never runs it as a formula.
pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) && value.parse::<f64>().is_err() {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn mtime(ns: i128) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(ns.div_euclid(1_000_000_000)).ok()?;
    DateTime::from_timestamp(secs, ns.rem_euclid(1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("tray.jpg"), "tray.jpg");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("line\nbreak.jpg"), "\"line\nbreak.jpg\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-3"), "-3", "a negative number stays a number");
        assert_eq!(ArchivedResult::CSV_HEADER.split(',').count(), 25);
    }

    #[test]
    fn mtimes_before_and_after_the_epoch_convert() {
        assert_eq!(mtime(1_500_000_000_250_000_000).unwrap().timestamp_millis(), 1_500_000_000_250);
        assert_eq!(mtime(-1).unwrap().timestamp_nanos_opt(), Some(-1));
    }
}
