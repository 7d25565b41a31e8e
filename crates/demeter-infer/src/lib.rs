//! Everything between a photo's bytes and a plant count.
//!
//! This crate owns:
//! - [`runtime`]: loading the ONNX Runtime shared library (`load-dynamic`), choosing the
//!   execution provider (CPU or CUDA, decided by registration, never by `is_available()`);
//! - [`choose`]: `--device auto` per model: the faster of CUDA and CPU, timed at load;
//! - [`model`]: a model folder (`model.onnx` + `manifest.toml`) and the default model built in;
//! - [`contract`]: what each model family must provide, checked at load, and reading its outputs;
//! - [`yolo`]: Ultralytics box layouts, class-aware NMS and instance masks;
//! - [`import`]: a grower's YOLO export → a model folder (`demeter model import`);
//! - [`decode`]: decoding under pixel limits (bombs fail before allocation) with EXIF orientation;
//! - [`analyzer`]: an ONNX session with Demeter's contract: resize to the model's input, segment,
//!   detect; [`Segment`], what a worker's pipeline calls, on its own session or a batcher's;
//! - [`batch`]: one session fed by every worker, photos of a shape run together;
//! - [`detect`]: connected components of the mask → plants;
//! - [`resize`]: SIMD resizing to a long side (the model's input, thumbnails);
//! - [`thumbnail`]: the small JPEG the status page shows; [`overlay`]: plants boxed and numbered.
//!
//! It does not know about jobs, stores or folders.

pub mod analyzer;
pub mod batch;
pub mod choose;
pub mod contract;
pub mod decode;
pub mod detect;
mod error;
pub mod import;
pub mod model;
pub mod overlay;
pub mod qr;
pub mod resize;
pub mod runtime;
pub mod taken;
pub mod thumbnail;
pub mod yolo;

pub use analyzer::{Analyzer, Detection, Encoder, ModelOutput, Prepared, Segment, Segmentation};
pub use batch::{BatchClient, BatchOptions, BatchStats, Batcher};
pub use choose::{choose, Choice};
pub use decode::{decode, decode_for, DecodeError, DecodeLimits, Decoded};
pub use error::InferError;
pub use model::{Family, Manifest, Model};
pub use runtime::{Provider, Runtime, COMPILED_PROVIDERS, ORT_VERSION};
