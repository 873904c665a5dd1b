//! Errors that stop a scan as a whole. A bad chunk never does: it becomes an
//! [`InvalidFile`](crate::InvalidFile) in the report and the scan goes on.

use std::path::PathBuf;

use chunk_model::ModelError;

/// Why a scan or writing its results failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// An include or exclude pattern is not a valid glob.
    #[error("invalid glob pattern {pattern:?}: {source}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What globset objected to.
        #[source]
        source: globset::Error,
    },
    /// The base directory cannot name a chunk tree.
    #[error("invalid base directory {path}: {reason}")]
    InvalidBase {
        /// The base as given.
        path: PathBuf,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The base directory exists but cannot be read.
    #[error("cannot read base directory {path}: {source}")]
    BaseUnreadable {
        /// The base as given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing `chunks_to_process.json` failed.
    #[error("cannot write the chunk list: {0}")]
    WriteOutput(#[source] ModelError),
    /// Appending to the `GITHUB_OUTPUT` file failed.
    #[error("cannot append step outputs to {path}: {source}")]
    GithubOutput {
        /// The file named by `GITHUB_OUTPUT`.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `--strict` was asked for and some metadata files were invalid.
    #[error("{count} invalid metadata file(s) (strict mode); first: {first}")]
    Strict {
        /// How many files were invalid.
        count: usize,
        /// The first one, with its reason.
        first: String,
    },
}
