use std::path::PathBuf;

/// Errors setting up or running inference. ort's own errors are turned into text at the
/// boundary: they are not `Send`, and users need the sentence, not the type.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("ONNX Runtime library not found (looked in: {}); run `make ort` or pass --ort-lib PATH to libonnxruntime.so.{}", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "), crate::ORT_VERSION)]
    LibraryNotFound { searched: Vec<PathBuf> },
    #[error("cannot load the ONNX Runtime library {path}: {reason}; Demeter needs ONNX Runtime {} (run `make ort`, or pass --ort-lib)", crate::ORT_VERSION)]
    Library { path: PathBuf, reason: String },
    #[error("cannot start ONNX Runtime: {0}")]
    Environment(String),
    #[error("cannot load the model in {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("a GPU device was requested (--device cuda or tensorrt) but its execution provider could not be registered: {0}")]
    CudaUnavailable(String),
    /// The photo, resized, does not fit the model's fixed input dimensions: the photo's
    /// problem (e.g. an aspect ratio the model was not exported for), not the device's.
    #[error("the model takes input of shape {model:?} (-1: any), but this photo gives {photo:?}")]
    InputShape { model: Vec<i64>, photo: Vec<i64> },
    #[error("inference failed: {0}")]
    Run(String),
    /// A run's output broke the model's contract (a shape its graph left free came out wrong):
    /// the model's problem, so the photo fails for good and the device is not blamed.
    #[error("the model's output breaks Demeter's contract: {0}")]
    Contract(String),
    /// A batched run failed: every photo in it gets this, with the batch's number, so the
    /// failure counts once against the device.
    #[error("inference failed for batch {batch} of {size} photos: {reason}")]
    Batch { batch: u64, size: usize, reason: String },
}
