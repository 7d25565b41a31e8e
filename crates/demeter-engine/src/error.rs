use std::path::PathBuf;

use demeter_infer::InferError;
use demeter_store::StoreError;
use demeter_watch::WatchError;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("cannot create {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] demeter_domain::config::ConfigError),
}
