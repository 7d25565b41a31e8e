//! The HTTP API (axum): poll endpoint, sessions, health, the status page.
