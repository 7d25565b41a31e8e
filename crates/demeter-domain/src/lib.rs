//! Demeter's vocabulary, shared by every other crate and free of I/O.
//!
//! This crate owns:
//! - [`command`]: what the server and desktop may ask the engine, the only writer, to change;
//! - [`job`]: a photo's job, its stages with their progress milestones, and the job state machine
//!   (`pending → processing → completed | failed`, `processing → pending` when reclaimed);
//! - [`session`]: upload sessions (photos that arrived together) and how photos are grouped into them;
//! - [`result`]: what a finished job reports (plant count, boxes, location, model, timings);
//! - [`config`]: every configuration section with its defaults, and the environment layer;
//! - [`eta`]: honest progress and ETA from measured stage durations;
//! - [`clock`]: an injectable clock, so TTL and grouping logic is testable without sleeping;
//! - [`notify`]: the one message per finished session (success, partial, all failed);
//! - [`metrics`]: counters and histograms for `/metrics`;
//! - [`health`]: the appliance's health snapshot as served on `/health`.
//!
//! Anything that touches disk, network or ONNX Runtime lives elsewhere.

pub mod archive;
pub mod clock;
pub mod command;
pub mod config;
pub mod eta;
pub mod health;
mod ids;
pub mod job;
pub mod location;
pub mod metrics;
pub mod notify;
pub mod photo;
pub mod result;
pub mod session;

pub use clock::{Clock, ManualClock, SystemClock};
pub use job::{ErrorKind, Job, JobError, JobHead, JobId, JobState, Stage, StatusName, TransitionError};
pub use result::{Grid, JobResult, ModelRef, Plant, Trust, TrustReason, CLASS_COLOURS};
pub use session::{SessionGrouper, SessionId, SessionSource, SessionSummary, UploadSession};
