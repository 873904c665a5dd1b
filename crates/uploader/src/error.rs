//! The errors of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong talking to an object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A store URL this crate cannot open.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An object key that is not a clean relative path.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The object does not exist.
    #[error("{store}: object {key} not found")]
    NotFound {
        /// The store's URL.
        store: String,
        /// The missing key.
        key: String,
    },
    /// A key already holds an object whose content differs from the one being stored.
    #[error("{store}: object {key} already exists with different content ({reason})")]
    Conflict {
        /// The store's URL.
        store: String,
        /// The key.
        key: String,
        /// What differs.
        reason: String,
    },
    /// A local filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes read do not match the CRC32C recorded when the object was stored.
    #[error("object {key}: CRC32C mismatch (stored {expected:08x}, read {actual:08x})")]
    ChecksumMismatch {
        /// The object.
        key: String,
        /// The recorded checksum.
        expected: u32,
        /// The checksum of the bytes read.
        actual: u32,
    },
    /// The bytes read are not as long as the store says the object is.
    #[error("object {key}: size mismatch (stored {expected} bytes, read {actual})")]
    SizeMismatch {
        /// The object.
        key: String,
        /// The recorded size.
        expected: u64,
        /// The number of bytes read.
        actual: u64,
    },
    /// An object's metadata (sidecar, custom metadata or API response) is malformed.
    #[error("object {key}: invalid metadata field {field}: {reason}")]
    InvalidMetadata {
        /// The object.
        key: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An error from the Cloud Storage client library.
    #[error("gs://{bucket}/{object}: {op} failed: {source}")]
    Gcs {
        /// The operation (`put`, `get`).
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The full object name.
        object: String,
        /// The underlying error (boxed: it is large, and errors travel in `Result`s).
        #[source]
        source: Box<google_cloud_storage::Error>,
    },
    /// A JSON API request answered with an error status.
    #[error("{op} {url}: HTTP {status}: {body}")]
    Http {
        /// The operation (`stat`, `list`).
        op: &'static str,
        /// The request URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// A JSON API request failed before an answer arrived (connect, reset, body cut).
    #[error("{op} {url}: {source}")]
    Request {
        /// The operation (`stat`, `list`).
        op: &'static str,
        /// The request URL.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// One attempt took longer than the attempt timeout.
    #[error("{op} {key}: attempt timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The object key or prefix.
        key: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// Credentials could not be built or could not produce request headers.
    #[error("credentials from {from}: {reason}")]
    Credentials {
        /// Where they come from (a key file and the variable that names it).
        from: String,
        /// What failed.
        reason: String,
    },
    /// The Cloud Storage client could not be built.
    #[error("building the Cloud Storage client: {0}")]
    Client(String),
    /// A transient error kept coming back until the retry deadline passed.
    #[error("{op} {key}: gave up after {attempts} attempts in {elapsed:?}: {last}")]
    RetriesExhausted {
        /// The operation.
        op: &'static str,
        /// The object key or prefix.
        key: String,
        /// How many attempts were made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<StoreError>,
    },
    /// A blocking task (local filesystem work) panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether trying again may succeed: 408, 429 and 5xx answers, timeouts, refused or
    /// dropped connections, and bytes that arrived damaged.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Gcs { source, .. } => gcs_is_transient(source),
            StoreError::Http { status, .. } => http_status_is_transient(*status),
            StoreError::Request { source, .. } => {
                // Only a request that could not be built is permanent.
                !source.is_builder()
                    && source
                        .status()
                        .is_none_or(|s| http_status_is_transient(s.as_u16()))
            }
            StoreError::Timeout { .. }
            | StoreError::ChecksumMismatch { .. }
            | StoreError::SizeMismatch { .. } => true,
            _ => false,
        }
    }
}

/// 408 Request Timeout, 429 Too Many Requests and every 5xx.
pub(crate) fn http_status_is_transient(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

fn gcs_is_transient(error: &google_cloud_storage::Error) -> bool {
    if let Some(status) = error.http_status_code() {
        return http_status_is_transient(status);
    }
    if error.is_timeout() || error.is_io() || error.is_connect() || error.is_transport() {
        return true;
    }
    if let Some(status) = error.status() {
        use google_cloud_gax::error::rpc::Code;
        return matches!(
            status.code,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Internal
        );
    }
    // A response cut short shows up as a failure to read or decode the body, and the
    // library reports a checksum mismatch of a damaged response the same way; all of
    // these are worth another attempt, and create-only writes make the retry safe.
    error.is_deserialization() || error.is_serialization()
}
