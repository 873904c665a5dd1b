//! A [`LocalDir`] that counts the store calls a test wants to bound: `stat`s, single
//! `get`s and batched `get_many`s.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use uploader::{LocalDir, Object, ObjectInfo, ObjectMeta, ObjectStore, PutOutcome, StoreError};

/// A real local bucket with counters. It does not batch, so every `stat_many` and
/// `exists_many` is counted as its single `stat`s.
#[derive(Debug)]
pub struct CountingStore {
    pub inner: LocalDir,
    pub stats: AtomicUsize,
    pub gets: AtomicUsize,
    pub get_batches: AtomicUsize,
}

impl CountingStore {
    pub fn new(inner: LocalDir) -> Self {
        Self {
            inner,
            stats: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            get_batches: AtomicUsize::new(0),
        }
    }

    /// (single gets, batched gets) since the last call.
    pub fn take_gets(&self) -> (usize, usize) {
        (
            self.gets.swap(0, Ordering::SeqCst),
            self.get_batches.swap(0, Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    fn url(&self) -> String {
        self.inner.url()
    }
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.put(key, bytes, meta).await
    }
    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> Vec<Result<Object, StoreError>> {
        self.get_batches.fetch_add(1, Ordering::SeqCst);
        self.inner.get_many(keys).await
    }
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.stats.fetch_add(1, Ordering::SeqCst);
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
}

/// Replaces (or creates) the object `key` with `bytes`, and drops its checksum sidecar
/// so that the store serves the new bytes without a CRC32C complaint.
pub fn overwrite_object(store: &LocalDir, key: &str, bytes: &[u8]) {
    let path = store.object_path(key).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let sidecar = store
        .root()
        .join(uploader::local::META_DIR)
        .join(format!("{key}.json"));
    let _ = std::fs::remove_file(sidecar);
}
