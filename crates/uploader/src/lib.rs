//! Panini's object stores: content-addressed chunk objects and recipes in a bucket or a
//! directory, and bit-for-bit reconstruction from them.
//!
//! This crate's one job is moving already-encoded bytes to and from storage without
//! ever losing or corrupting them: create-only writes (an object, once stored, never
//! changes), CRC32C end to end, retries with backoff under a deadline, a bound on
//! requests in flight, data before index (a file's recipe is written after all its
//! chunks, by [`upload_file`] or, for chunks that workers stored, by
//! [`publish_if_complete`]), and reconstruction that checks every chunk's size and the
//! whole file's SHA-256 (and names the chunk at fault) before the output appears.
//!
//! It must never know how chunks are cut or which codec to pick: callers hand it
//! encoded bytes and the codec's name ([`ChunkEncoder`] is theirs to implement), and it
//! only decodes (through `gpu-compress`) to verify and reconstruct.
//!
//! ```text
//! chunks/<sha256 of the original chunk>.<codec>   one object per distinct chunk
//! recipes/<name>/<file sha256>.json               chunk_model::Recipe, written last
//! ```

pub mod bucket_url;
mod chunk_check;
pub mod cpu;
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

pub use bucket_url::{BucketUrl, BucketUrlError};
pub use chunk_check::{ChunkObject, check_chunk_object, read_chunk_object};
pub use error::StoreError;
pub use gcs::{Gcs, GcsConfig, GcsCredentials};
pub use limits::{Limited, Limits};
pub use local::LocalDir;
pub use publish::{
    KnownObjects, Prepared, Publish, PublishError, prepare_recipes, publish_if_complete,
    publish_prepared,
};
pub use reconstruct::{
    ReconstructError, ReconstructOptions, ReconstructProgress, ReconstructReport, VerifyReport,
    Which, find_recipes, reconstruct, verify, verify_recipe, verify_recipes,
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

/// Opens `gs://bucket[/prefix]`, `file:///path` or a plain directory path (parsed
/// strictly by [`BucketUrl::parse`]), behind the configured [`Limits`]. A local
/// directory is created when missing: this is the open of commands that write.
pub async fn open(url: &str, config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    open_parsed(url, config, true).await
}

/// Like [`open`], for commands that only read (verify, reconstruct, sync): a local
/// directory that does not exist is an error instead of being created, so a mistyped
/// path leaves nothing behind.
pub async fn open_existing(
    url: &str,
    config: &StoreConfig,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    open_parsed(url, config, false).await
}

async fn open_parsed(
    url: &str,
    config: &StoreConfig,
    create: bool,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let parsed = BucketUrl::parse(url).map_err(|e| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    match parsed {
        BucketUrl::Gcs { bucket, prefix } => {
            let store = Gcs::new(&bucket, &prefix, &config.gcs).await?;
            Ok(Arc::new(Limited::new(store, config.limits)))
        }
        BucketUrl::Local(path) => {
            if !create && !path.is_dir() {
                return Err(StoreError::InvalidUrl {
                    url: url.to_owned(),
                    reason:
                        "no bucket directory there (a command that only reads never creates one)"
                            .into(),
                });
            }
            let store = LocalDir::new(path)?;
            Ok(Arc::new(Limited::new(store, config.limits)))
        }
    }
}
