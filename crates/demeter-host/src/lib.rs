//! The running appliance, shared by both shells — the headless daemon (`demeter run`) and the
//! desktop app (`demeter-desktop`) — so that they cannot drift apart:
//!
//! - [`settings`]: configuration layering (defaults < file < `DEMETER_*` < flags), the data
//!   directory, and saving the desktop's settings back into the config file without losing
//!   the rest of it;
//! - [`Host`]: binds the port, bootstraps tokens, starts the engine and the HTTP server on one
//!   Tokio runtime, forwards engine events to SSE clients and the webhook, and stops gracefully;
//! - [`webhook`]: the `--notify-webhook` deliveries.

mod error;
mod host;
mod network;
pub mod settings;
pub mod webhook;

pub use error::HostError;
pub use host::{Host, HostOptions};
pub use network::lan_url;
