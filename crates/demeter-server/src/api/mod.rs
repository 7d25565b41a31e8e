//! `/api/v1`: the seed's poll endpoint, sessions, jobs, queue actions, models and the event
//! stream. The
//! routes and the role each needs are declared in [`crate::routes`].

pub(crate) mod actions;
pub(crate) mod archive;
pub(crate) mod jobs;
pub(crate) mod models;
pub mod openapi;
pub(crate) mod poll;
pub mod poll_cache;
pub(crate) mod results;
pub(crate) mod upload;
pub mod views;

pub(crate) use poll::parse_session;
