//! Watches a folder for photos and says when each one is ready to read.
//!
//! This crate owns *finding* photos, and nothing about what happens to them next (it knows
//! nothing of the store). It combines three sources so nothing is missed:
//! - filesystem events (notify, recursive) for speed,
//! - a scan of existing files at start,
//! - a reconciliation rescan every `rescan_interval`, for dropped events and filesystems without
//!   events (polling mode, chosen on its own for network and FUSE filesystems, see [`mounts`]).
//!
//! A file is reported only when it passes the [`gate::StabilityGate`] (size and mtime unchanged
//! for the stability window, so copies in progress are never read early), can be opened, and
//! passes the [`demeter_domain::photo`] rules: junk names are ignored, content is sniffed for
//! JPEG, PNG, TIFF or WebP, and an image-named file that is not an image is still reported (as [`FileKind::NotAnImage`])
//! so the user sees a failed job rather than silence.

pub mod gate;
pub mod mounts;
mod watcher;

pub use demeter_domain::photo::ImageFormat;
pub use watcher::{mtime_ns, FileKind, FolderWatcher, ReadyFile, WatchError, WatchMode, WatchOptions, WatchStatus};
