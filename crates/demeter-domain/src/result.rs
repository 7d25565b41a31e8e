//! What a completed job reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::Stage;

/// One detected plant, in the stored photo's pixel coordinates (after EXIF orientation).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plant {
    /// `[x, y, width, height]`.
    pub bbox: [u32; 4],
    /// Centre of mass of the plant's pixels, `[x, y]`.
    pub centroid: [f32; 2],
    /// Plant pixels, scaled to the photo's resolution.
    pub area_px: u64,
    /// The tray cell `[row, col]` it grows in, when a grid was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<[u32; 2]>,
    /// Its class, from a multi-class detector (absent for a mask model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The detector's score for it, 0..=1 (absent for a mask model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
}

/// The grid of cells or pots found in a photo from where its plants stand (a plug tray, a flat of
/// pots in rows and columns).
/// Cells are numbered from the top-left as seen in the stored photo; the lattice may be tilted by
/// `angle_deg`, so a cell's centre is
/// `origin + col × pitch[0] × (cos a, sin a) + row × pitch[1] × (−sin a, cos a)`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub rows: u32,
    pub cols: u32,
    /// Centre of cell `[0, 0]`, in the photo's pixels.
    pub origin: [f32; 2],
    /// Distance between neighbouring cell centres along a row and down a column, in pixels.
    pub pitch: [f32; 2],
    /// Tilt of the rows against the photo's x axis, clockwise, in degrees.
    pub angle_deg: f32,
    /// Plants in each cell, row-major (`rows × cols` entries); 0 is an empty cell.
    pub plants_per_cell: Vec<u32>,
}

impl Grid {
    pub fn cells(&self) -> u32 {
        self.rows * self.cols
    }

    /// Cells holding at least one plant (germination).
    pub fn occupied(&self) -> u32 {
        self.plants_per_cell.iter().filter(|n| **n > 0).count() as u32
    }

    pub fn empty(&self) -> u32 {
        self.cells() - self.occupied()
    }

    /// Cells holding more than one plant.
    pub fn crowded(&self) -> u32 {
        self.plants_per_cell.iter().filter(|n| **n > 1).count() as u32
    }

    /// The centre of cell `[row, col]`, in the photo's pixels.
    pub fn cell_centre(&self, row: u32, col: u32) -> [f32; 2] {
        let (s, c) = self.angle_deg.to_radians().sin_cos();
        let (dx, dy) = (col as f32 * self.pitch[0], row as f32 * self.pitch[1]);
        [self.origin[0] + dx * c - dy * s, self.origin[1] + dx * s + dy * c]
    }

    /// The four corners of cell `[row, col]` (clockwise from top-left), in the photo's pixels.
    pub fn cell_corners(&self, row: u32, col: u32) -> [[f32; 2]; 4] {
        let [cx, cy] = self.cell_centre(row, col);
        let (s, c) = self.angle_deg.to_radians().sin_cos();
        let (hx, hy) = (self.pitch[0] / 2.0, self.pitch[1] / 2.0);
        [(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)].map(|(u, v)| [cx + u * c - v * s, cy + u * s + v * c])
    }
}

/// Why a count should not be taken at face value.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustReason {
    /// Nothing green enough to be a plant was found.
    NoPlants,
    /// Plants cover so much of the growing area that they merge into each other.
    ClosedCanopy,
    /// Several cells hold more than one plant: thinning is due, or plants lean into
    /// neighbouring cells.
    CrowdedCells,
    /// Without a grid, plants touch and the count depends on where they were split.
    TouchingPlants,
}

impl TrustReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TrustReason::NoPlants => "no_plants",
            TrustReason::ClosedCanopy => "closed_canopy",
            TrustReason::CrowdedCells => "crowded_cells",
            TrustReason::TouchingPlants => "touching_plants",
        }
    }

    /// What a grower reads on the page.
    pub fn message(self) -> &'static str {
        match self {
            TrustReason::NoPlants => "no plants found in this photo",
            TrustReason::ClosedCanopy => "closed canopy: plants grow into each other, so the count is a lower bound",
            TrustReason::CrowdedCells => "several cells hold more than one plant: check the per-cell counts",
            TrustReason::TouchingPlants => "plants touch: the count depends on where they were separated",
        }
    }
}

/// Whether a count can be trusted, and if not, why. The default is trusted, with no reasons.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trust {
    /// `false` when any reason applies.
    pub trusted: bool,
    pub reasons: Vec<TrustReason>,
}

impl Trust {
    pub fn from_reasons(reasons: Vec<TrustReason>) -> Self {
        Self { trusted: reasons.is_empty(), reasons }
    }

    /// The reasons as `code: message` lines joined by `; ` (CSV, tray, logs).
    pub fn summary(&self) -> String {
        self.reasons.iter().map(|r| r.message()).collect::<Vec<_>>().join("; ")
    }
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
    /// The model family: `mask`, `yolo-detect` or `yolo-seg` (empty: recorded before families).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub family: String,
    /// A multi-class model's classes that count as plants (empty for a mask model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plant_classes: Vec<String>,
}

/// The outcome of a completed job.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobResult {
    /// The processing run's id (the seed's `result.session_id`): new for every run of a job.
    pub session_id: Uuid,
    /// Plants counted: `plants.len()`.
    pub total_detected: u32,
    pub plants: Vec<Plant>,
    /// What a multi-class detector found that is not a plant (weeds, empty cells), each with its
    /// class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<Plant>,
    /// A multi-class detector's count per class, every class of the model included (plants and
    /// others; empty for a mask model without classes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub class_counts: BTreeMap<String, u32>,
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
    /// The execution provider the model ran on: "CPU", "CUDA" or "TensorRT". Results stored
    /// before this field existed read as empty (not recorded).
    #[serde(default)]
    pub execution_provider: String,
    /// The device: "cpu", or "cuda:N" for GPU N. Empty for results stored before it was recorded.
    #[serde(default)]
    pub device: String,
    /// Milliseconds spent in each stage.
    pub timings_ms: BTreeMap<Stage, u64>,
    /// When the photo was taken, from its EXIF `DateTimeOriginal` (read as UTC); `None` when it
    /// has none (the archive then uses the file's modification time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Photo size after EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// The tray's grid of cells, when the photo shows one.
    #[serde(default)]
    pub grid: Option<Grid>,
    /// Whether the count can be trusted. Results stored before this field existed read as
    /// trusted with no reasons.
    #[serde(default)]
    pub trust: Trust,
}

impl Default for Trust {
    fn default() -> Self {
        Self { trusted: true, reasons: Vec::new() }
    }
}

/// The colours the overlay boxes each class in, in the order of a result's `class_counts` keys
/// (sorted by name), so the page's legend and the drawn image agree. Chosen to stand out on
/// foliage and soil and from each other; they repeat after eight classes.
pub const CLASS_COLOURS: [[u8; 3]; 8] = [
    [255, 0, 200],
    [255, 230, 0],
    [0, 90, 255],
    [230, 30, 30],
    [255, 255, 255],
    [150, 60, 255],
    [0, 0, 0],
    [0, 200, 200],
];

impl JobResult {
    /// The colour of `class` in this result's overlay ([`CLASS_COLOURS`]); `None` for a class
    /// the result does not have.
    pub fn class_colour(&self, class: &str) -> Option<[u8; 3]> {
        self.class_counts.keys().position(|c| c == class).map(|i| CLASS_COLOURS[i % CLASS_COLOURS.len()])
    }
}
