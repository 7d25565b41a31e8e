use std::path::PathBuf;

use demeter_domain::{JobId, TransitionError};

/// Everything that can go wrong with the store, with the path where it matters.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the job database at {path} is in use by another process (is another demeter running?)")]
    Locked { path: PathBuf },
    #[error("the job database at {path} is corrupt ({source}); move it aside to rebuild it from the photo folder")]
    Corrupt { path: PathBuf, source: sled::Error },
    #[error("cannot open the job database at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("job database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored {what} is unreadable: {source}")]
    Codec { what: &'static str, source: serde_json::Error },
    #[error("stored {what} is unreadable: {source}")]
    Binary { what: &'static str, source: postcard::Error },
    #[error("the results archive's file {path}: {source}")]
    ArchiveIo { path: PathBuf, source: std::io::Error },
    #[error(
        "the results archive's record at byte {offset} of {path} is damaged (its length or checksum does not match)"
    )]
    ArchiveFrame { path: PathBuf, offset: u64 },
    #[error("an archived result is in record format {0}, which this version of Demeter cannot read (it was written by a newer one)")]
    ArchiveVersion(u8),
    #[error("an entry of the results archive's index is malformed")]
    ArchiveEntry,
    #[error("job {0} not found")]
    JobNotFound(JobId),
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}
