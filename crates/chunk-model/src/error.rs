//! The errors of this crate.

use std::path::PathBuf;

use crate::TransitionError;

/// What can go wrong reading or writing the model's files.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document did not parse or did not match its type; serde's message names
    /// the field, line and column.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The document.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON document parsed but is not an object at the top level.
    #[error("{path}: expected a JSON object at the top level")]
    NotAnObject {
        /// The document.
        path: PathBuf,
    },
    /// A file name cannot be used as a directory name under the layout root.
    #[error("invalid file name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A file's directory holds chunks but no `manifest.json`, without which they cannot
    /// be put back together: its cut did not finish (the pipeline writes a big file's
    /// tree in place, its manifest last, so a run stopped while cutting leaves this), or
    /// the manifest was removed.
    #[error(
        "{dir}: chunks but no manifest.json (the file's cut did not finish, or its \
         manifest was removed): chunk the file again"
    )]
    NoManifest {
        /// The file's directory under the tree.
        dir: PathBuf,
    },
    /// A status change that the state machine forbids.
    #[error("{path}: {source}")]
    Transition {
        /// The metadata file whose status was to change.
        path: PathBuf,
        /// The illegal transition.
        #[source]
        source: TransitionError,
    },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
