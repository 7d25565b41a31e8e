//! The durable job store, on sled 0.34.
//!
//! This crate owns how Demeter's state is laid out on disk and the promise that goes with it:
//! **every state change is written atomically across all indexes and flushed before the call
//! returns**, so anything the API or a notification announced survives a `kill -9`.
//!
//! Trees (all keys big-endian so byte order is time order):
//!
//! | tree           | key                                   | value            | why |
//! |----------------|---------------------------------------|------------------|-----|
//! | `jobs`         | job id (UUIDv7)                        | `Job` as JSON    | the record |
//! | `sessions`     | session id (UUIDv7)                    | `UploadSession`  | newest-first listing by reverse scan |
//! | `session_jobs` | session id ++ job id                   | –                | poll cost grows with the session, not the store |
//! | `queue`        | job id                                 | –                | FIFO of pending jobs (v7 ids are time-ordered) |
//! | `processing`   | job id                                 | –                | orphans are found at start without a full scan |
//! | `seen_path`    | path \0 size \0 mtime                  | job id           | a rescan never re-queues a photo, cheaply |
//! | `seen_hash`    | BLAKE3 of the content                  | job id           | a byte-identical copy is not processed twice |
//! | `expiry`       | expires-at ms ++ kind ++ id            | –                | the sweeper reads only what is due |
//! | `meta`         | `stage_stats`, `paused`                | JSON / –         | learned ETAs and the pause switch survive restarts |
//! | `archive_by_location` | location \0 taken-at ms ++ result id | count, cover, where the record is | results outlive their jobs ([`archive`]): a location's series without reading records; the records are in `<data>/archive/` |
//! | `archive_late_ids` | result id                           | where the record is | the few results the segments' id lists skip |
//!
//! The `seen_*` indexes outlive job TTLs on purpose: photos stay in the folder (the source of
//! truth) long after their job expires, and must not be processed again on every rescan.

pub mod archive;
mod error;
mod keys;
mod store;

pub use archive::{ArchiveBytes, ArchivePage, ArchiveQuery, BadCursor, SeriesPoint};
pub use error::StoreError;
pub use store::{EnqueueOutcome, SeenKey, Store, SweepReport, SweepTotals};
