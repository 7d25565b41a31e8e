//! The `/health` snapshot: enough to tell at a glance whether the appliance works.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// True once the store is open, the model loaded and the workers running.
    pub ready: bool,
    pub version: String,
    /// The execution provider actually registered ("CPU", "CUDA" or "TensorRT").
    pub execution_provider: String,
    /// The providers this build can register; whether a GPU one works depends on the machine
    /// (a `warnings` entry says why it does not).
    #[serde(default)]
    pub compiled_providers: Vec<String>,
    /// Why the requested device is not in use (e.g. `--device auto` without a GPU).
    pub warnings: Vec<String>,
    /// Where each model runs, and why (under `auto`: the timings that decided).
    #[serde(default)]
    pub devices: Vec<ModelDevice>,
    pub model: ModelHealth,
    /// Every model a session can be reprocessed with, the default first.
    #[serde(default)]
    pub installed_models: Vec<ModelHealth>,
    pub workers: WorkersHealth,
    pub queue: QueueHealth,
    pub watcher: WatcherHealth,
    /// The inference device's circuit breaker.
    #[serde(default)]
    pub inference: InferenceHealth,
}

/// Where one model runs, and why.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDevice {
    pub model: String,
    /// "CPU", "CUDA" or "TensorRT".
    pub execution_provider: String,
    /// "cpu" or "cuda:0".
    pub device: String,
    /// The rule or the measurement that decided, e.g. "auto: the CPU is faster for this model:
    /// CUDA 0.91 ms, CPU 0.40 ms a photo at 512 × 384 (median of 5 warm runs)".
    pub reason: String,
    /// ONNX Runtime sessions running the model: one per worker, or the batcher's one.
    #[serde(default)]
    pub sessions: usize,
    /// Milliseconds spent before ready running every common input shape at every batch size
    /// once, so no photo pays for a GPU's algorithm search (0 on the CPU: nothing to search).
    #[serde(default)]
    pub warm_up_ms: u64,
    /// Set when the model runs batched: one session fed by every worker.
    #[serde(default)]
    pub batching: Option<BatchHealth>,
}

/// A batched model's batcher.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchHealth {
    /// At most this many photos a run; runs are powers of two up to it.
    pub max_batch: usize,
    /// How long a photo waits for others of its shape, at most.
    pub max_wait_ms: u64,
    /// Runs so far by batch size (the histogram of batch sizes), smallest first.
    pub batches: Vec<BatchCount>,
    /// Runs that failed; their photos went back to the queue.
    pub failed_batches: u64,
    /// Photos waiting for a batch now.
    pub queued: usize,
}

/// How many runs had this many photos.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCount {
    pub size: usize,
    pub runs: u64,
}

/// Whether inference is running or paused because the device keeps failing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceHealth {
    /// "closed" (processing), "open" (paused after repeated device errors) or "probing" (one
    /// trial photo is testing the device).
    pub state: String,
    /// The device error that paused processing.
    pub reason: Option<String>,
    pub paused_since: Option<DateTime<Utc>>,
    /// Seconds until the next trial, while open.
    pub retry_in_secs: Option<u64>,
}

impl Default for InferenceHealth {
    fn default() -> Self {
        Self { state: "closed".into(), reason: None, paused_since: None, retry_in_secs: None }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHealth {
    pub name: String,
    pub version: String,
    /// SHA-256 of `model.onnx`.
    pub sha256: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkersHealth {
    pub count: usize,
    pub busy: usize,
    pub intra_threads: usize,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueHealth {
    pub pending: u64,
    pub processing: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WatcherHealth {
    pub dir: String,
    /// "events" (inotify and rescans) or "polling" (rescans only).
    pub mode: String,
    /// Why the watcher polls: `watch.mode`, a network or FUSE filesystem, or events unavailable.
    #[serde(default)]
    pub mode_reason: Option<String>,
    pub last_scan_at: Option<DateTime<Utc>>,
    pub files_seen: u64,
    pub last_error: Option<String>,
}
