//! What the server and the desktop may ask the engine to change. The engine is the only writer
//! of job and session state: it carries out each [`Command`], stores the change, and announces
//! it on its one event stream (SSE, the completion tracker, the webhook, notifications and the
//! tray all listen there). Callers read through the store's read model and write through
//! [`Commands`] alone.

use std::collections::BTreeMap;

use crate::{JobId, SessionId, UploadSession};

/// A change asked of the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Put the session's failed photos back in the queue.
    RetrySession(SessionId),
    /// Put one failed photo back in the queue.
    RetryJob(JobId),
    /// Fail a pending photo as "cancelled by user" (a no-op when it already is).
    CancelJob(JobId),
    /// Run every photo of a finished session again, with an installed model (`None`: the
    /// default), keeping each current result until the new one is stored.
    Reprocess { session: SessionId, model: Option<String> },
    /// Stop or restart claiming photos (workers finish what they hold).
    SetPaused(bool),
    /// Open a session for photos uploaded from the page.
    CreateUploadSession(UploadSession),
    /// Run the TTL sweep now.
    Cleanup,
    /// Check a model as start-up would and, if it loads, keep it in the data folder and make
    /// it available for reprocessing at once (and at every later start).
    InstallModel(Box<ModelUpload>),
}

/// What a [`ModelUpload`]'s `hints` may name: the `demeter model import` flags, with
/// underscores.
pub const HINT_FIELDS: [&str; 8] =
    ["name", "family", "classes", "plant_classes", "layout", "input_size", "confidence", "iou"];

/// A model sent to a running appliance.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUpload {
    /// The file's name as sent (named in errors; `model import` names a model after it).
    pub file_name: String,
    /// The ONNX file.
    pub onnx: Vec<u8>,
    /// Its `manifest.toml`; absent: inferred from the export's metadata as `demeter model
    /// import` does, helped by `hints`.
    pub manifest: Option<String>,
    /// What the export does not say, by the name of the `model import` flag with underscores
    /// (`plant_classes = "seedling"`, `input_size = "640"`).
    pub hints: BTreeMap<String, String>,
}

/// A model installed while running: the answer to `POST /api/v1/models`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstalledModel {
    pub name: String,
    pub version: String,
    /// `mask`, `yolo-detect` or `yolo-seg`.
    pub family: String,
    /// SHA-256 of the ONNX file.
    pub sha256: String,
    /// Where it runs (`CPU`, `CUDA`) and why.
    pub execution_provider: String,
    pub reason: String,
    /// Without a manifest: what was inferred from the export, and from where.
    #[serde(rename = "inferred")]
    pub notes: Vec<String>,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Photos put back in the queue (a retry or a reprocess), and the model they run with.
    Requeued {
        jobs: usize,
        model: Option<String>,
    },
    /// The photo is cancelled (now or already).
    Cancelled,
    Paused(bool),
    SessionCreated,
    /// Sessions and jobs the sweep removed.
    Cleaned {
        sessions: usize,
        jobs: usize,
    },
    ModelInstalled(Box<InstalledModel>),
}

/// Why a command was refused or failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such job, session (or it expired) or installed model.
    #[error("{0}")]
    NotFound(String),
    /// Not in a state that allows it (a running photo cancelled, a busy session reprocessed, a
    /// model name taken).
    #[error("{0}")]
    Conflict(String),
    /// What was sent cannot be used (a model that would not load), with the reason start-up
    /// would give.
    #[error("{0}")]
    Invalid(String),
    /// The store failed; nothing was announced.
    #[error("the job store failed: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The engine's command port. Blocking (each command is a durable write): call it from a
/// blocking thread, never on an async runtime's workers.
pub trait Commands: Send + Sync {
    fn execute(&self, command: Command) -> Result<Outcome, CommandError>;
}
