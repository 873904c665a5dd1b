//! Panini's object stores: content-addressed chunk objects and recipes in a bucket or a
//! directory, and bit-for-bit reconstruction from them.
//!
//! This crate's one job is moving already-encoded bytes to and from storage without
//! ever losing or corrupting them: create-only writes (an object, once stored, never
//! changes), CRC32C end to end, retries with backoff under a deadline, a bound on
//! requests in flight, data before index (a file's recipe is written after all its
//! chunks, by [`upload_file`] or, for chunks that workers stored, by
//! [`publish_if_complete`]), and reconstruction that checks every chunk and the whole
//! file before the output appears.
//!
//! It must never know how chunks are cut or which codec to pick: callers hand it
//! encoded bytes and the codec's name ([`ChunkEncoder`] is theirs to implement), and it
//! only decodes (through `gpu-compress`) to verify and reconstruct.
//!
//! ```text
//! chunks/<sha256 of the original chunk>.<codec>   one object per distinct chunk
//! recipes/<name>/<file sha256>.json               chunk_model::Recipe, written last
//! ```

mod error;
pub mod gcs;
pub mod limits;
pub mod local;
pub mod publish;
pub mod reconstruct;
pub mod retry;
pub mod store;
pub mod upload;

use std::sync::Arc;

pub use error::StoreError;
pub use gcs::{Gcs, GcsConfig};
pub use limits::{Limited, Limits};
pub use local::LocalDir;
pub use publish::{KnownObjects, Publish, PublishError, publish_if_complete};
pub use reconstruct::{
    ReconstructError, ReconstructOptions, ReconstructProgress, ReconstructReport, VerifyReport,
    Which, reconstruct, verify,
};
pub use retry::RetryPolicy;
pub use store::{
    Object, ObjectInfo, ObjectMeta, ObjectStore, PUT_MANY_CONCURRENCY, PutItem, PutOutcome,
    put_each,
};
pub use upload::{
    ChunkEncoder, EncodedChunk, FileSpec, StoreAsIs, UploadError, UploadOptions, UploadProgress,
    UploadReport, put_recipe, upload_chunk_dir, upload_file,
};

/// How to open a store from a URL.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// Cloud Storage settings (endpoint override, retries).
    pub gcs: GcsConfig,
    /// Limits on the traffic.
    pub limits: Limits,
}

/// Opens `gs://bucket[/prefix]`, `file:///path` or a plain directory path, behind the
/// configured [`Limits`].
pub async fn open(url: &str, config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if url.starts_with("gs://") {
        let store = Gcs::from_url(url, &config.gcs).await?;
        Ok(Arc::new(Limited::new(store, config.limits)))
    } else if url.contains("://") && !url.starts_with("file://") {
        Err(StoreError::InvalidUrl {
            url: url.to_owned(),
            reason: "expected gs://bucket[/prefix], file:///path or a directory path".into(),
        })
    } else {
        let store = LocalDir::from_url(url)?;
        Ok(Arc::new(Limited::new(store, config.limits)))
    }
}
