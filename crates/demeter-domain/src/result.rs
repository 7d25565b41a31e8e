//! What a completed job reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::Stage;

/// One detected plant, in the stored photo's pixel coordinates (after EXIF orientation).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plant {
    /// `[x, y, width, height]`.
    pub bbox: [u32; 4],
    /// Centre of mass of the plant's pixels, `[x, y]`.
    pub centroid: [f32; 2],
    /// Plant pixels, scaled to the photo's resolution.
    pub area_px: u64,
}

/// Which model produced a result, and with which settings, so a count stays interpretable and
/// reproducible after a model upgrade. (Results stored before these fields existed read them
/// as empty.)
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
    /// SHA-256 of the model's `manifest.toml` (which itself names the `model.onnx` hash).
    #[serde(default)]
    pub manifest_sha256: String,
    /// SHA-256 of `model.onnx`.
    #[serde(default)]
    pub onnx_sha256: String,
    /// Every threshold and detection rule the count depends on, e.g. `thresholds.exg`,
    /// `detection.merge_gap`, `input.long_side`.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
}

/// The outcome of a completed job.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobResult {
    /// The processing run's id (the seed's `result.session_id`): new for every run of a job.
    pub session_id: Uuid,
    pub total_detected: u32,
    pub plants: Vec<Plant>,
    /// Share of the photo covered by plants, 0..=1.
    pub plant_area_fraction: f32,
    /// The storage location matched (see `demeter_domain::location`).
    pub storage_location_id: Option<String>,
    /// Its configured name, when it is a listed location.
    #[serde(default)]
    pub storage_location_name: Option<String>,
    /// Which rule matched it: `qr_code`, `subfolder`, `filename_pattern` or `default`.
    #[serde(default)]
    pub location_rule: Option<crate::location::LocationRule>,
    pub model: ModelRef,
    /// Milliseconds spent in each stage.
    pub timings_ms: BTreeMap<Stage, u64>,
    /// Photo size after EXIF orientation.
    pub width: u32,
    pub height: u32,
}
