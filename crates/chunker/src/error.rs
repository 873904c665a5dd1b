//! The errors of [`chunk_file`](crate::chunk_file).

use std::path::PathBuf;

use crate::PlanError;

/// Why a file could not be chunked. Every variant names the path involved. When one is
/// returned nothing visible was written: the in-progress directory is removed and an
/// existing chunk tree of the same name is untouched.
#[derive(Debug, thiserror::Error)]
pub enum ChunkerError {
    /// The input could not be opened or its metadata read.
    #[error("{path}: cannot open: {source}")]
    Unreadable {
        /// The input.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The input is a directory (or another non-file).
    #[error("{path}: is a directory, not a file")]
    NotAFile {
        /// The input.
        path: PathBuf,
    },
    /// The input has no bytes; there is nothing to chunk.
    #[error("{path}: is empty")]
    Empty {
        /// The input.
        path: PathBuf,
    },
    /// The chunk tree name is not usable as a directory name.
    #[error("{path}: {source}")]
    InvalidName {
        /// The input whose name was rejected.
        path: PathBuf,
        /// The rejection.
        #[source]
        source: chunk_model::ModelError,
    },
    /// A chunk tree of that name exists and `force` was not given.
    #[error("{dir}: already exists (chunking {path}); use --force to replace it")]
    NameCollision {
        /// The input.
        path: PathBuf,
        /// The existing chunk tree.
        dir: PathBuf,
    },
    /// Planning failed (reading the input, bad configuration, broken invariant).
    #[error("{path}: {source}")]
    Plan {
        /// The input.
        path: PathBuf,
        /// What failed.
        #[source]
        source: PlanError,
    },
    /// Reading the input while writing chunks failed, or it changed size.
    #[error("{path}: read failed: {source}")]
    Read {
        /// The input.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the chunk tree failed.
    #[error("{path}: write failed: {source}")]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a JSON document failed.
    #[error(transparent)]
    Model(#[from] chunk_model::ModelError),
}
