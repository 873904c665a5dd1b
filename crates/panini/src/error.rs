//! The crate's error type.

use std::path::PathBuf;

/// Why an operation of the library could not run. Problems with single chunks or files
/// are reported per chunk or file in the operation's report instead, and the rest goes on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A chunk-tree document could not be read, parsed or written.
    #[error(transparent)]
    Model(#[from] chunk_model::ModelError),
    /// Chunking a file failed.
    #[error(transparent)]
    Chunk(#[from] chunker::ChunkerError),
    /// The files and folders given could not be expanded into files to chunk.
    #[error(transparent)]
    Inputs(#[from] chunker::InputError),
    /// Scanning the chunk tree or applying a callback failed.
    #[error(transparent)]
    Detect(#[from] detector::DetectError),
    /// The dispatcher could not be configured.
    #[error(transparent)]
    Dispatch(#[from] dispatcher::DispatchError),
    /// The bucket could not be opened, listed, read or written.
    #[error("bucket: {0}")]
    Store(#[from] uploader::StoreError),
    /// A worker could not be started or stopped with an error.
    #[error("worker: {0}")]
    Worker(#[from] worker::WorkerError),
    /// A worker service did not answer as the protocol says.
    #[error("worker {url}: {reason}")]
    WorkerHttp {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The chunk tree's lock could not be taken (another run holds it).
    #[error(transparent)]
    Lock(#[from] chunk_model::tree_lock::TreeLockError),
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The operating system's random source failed.
    #[error("reading the operating system's random source: {0}")]
    Random(String),
    /// Git could not be run or did not answer as expected.
    #[error("git {args}: {reason}")]
    Git {
        /// The git arguments.
        args: String,
        /// What went wrong.
        reason: String,
    },
    /// A background task panicked.
    #[error("a background task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
