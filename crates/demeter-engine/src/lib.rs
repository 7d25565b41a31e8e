//! The engine: the only crate that wires the watcher, the store and inference together.
//!
//! ```text
//! demeter-watch ──ReadyFile──▶ ingest ──enqueue──▶ demeter-store ◀──claim/advance/complete── workers ×N
//!                               │ (dedup, sessions)      │                                  │ (demeter-infer)
//!                               └──────── EngineEvent broadcast (after each durable write) ◀┘
//!                                                        ▲
//!   server, desktop ──Command──▶ commands (retry, cancel, reprocess, pause, upload session,
//!                                 cleanup, install a model: stored, then announced on the same
//!                                 stream)
//! ```
//!
//! The engine is the only writer of job and session state: the server and the desktop read the
//! store and send [`demeter_domain::command::Command`]s through [`Engine::commands`].
//!
//! This crate owns: ingest (dedup by path+size+mtime then content hash, grouping into upload
//! sessions), the worker threads (one ONNX session each, inference never on the async runtime),
//! the photo [`pipeline`] with its stage milestones, reclaiming orphans at start, graceful
//! shutdown, the TTL sweeper, `/health` data, overlays drawn when first asked for, models
//! installed while running ([`install`]), and one-shot processing for `demeter process`.

mod breaker;
pub mod commands;
mod completion;
mod engine;
mod error;
mod faults;
mod ingest;
pub mod install;
pub mod oneshot;
mod overlays;
pub mod pipeline;
mod sweeper;
mod watchdog;
mod worker;

pub use engine::{Engine, EngineEvent, EngineOptions};
pub use error::EngineError;
pub use overlays::OverlayError;
