//! The crate's error type.

use std::path::PathBuf;

/// Why a dispatch could not run at all. Problems with single chunks or requests
/// are reported per chunk instead, and the run goes on.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// A configuration value is unusable.
    #[error("invalid dispatch configuration: {0}")]
    InvalidConfig(String),
    /// The chunk list cannot be read or parsed.
    #[error("chunk list {path}: {source}")]
    ChunksFile {
        /// The file.
        path: PathBuf,
        /// What went wrong (serde's message names the entry and field).
        #[source]
        source: chunk_model::ModelError,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// Scanning the chunk tree failed.
    #[error("chunk tree: {0}")]
    Detect(#[from] detector::DetectError),
    /// Another run holds the chunk tree's lock, or the lock offered is not the tree's.
    #[error(transparent)]
    Locked(#[from] chunk_model::tree_lock::TreeLockError),
    /// A base is configured but the run was not given the tree's lock.
    #[error("{base}: the dispatcher records outcomes there, but the run holds no lock on it")]
    NotLocked {
        /// The chunk tree.
        base: PathBuf,
    },
}
