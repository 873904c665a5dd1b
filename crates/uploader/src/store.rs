//! The object store interface and what it stores.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use chunk_model::{Codec, Sha256Digest};
use futures::StreamExt as _;

use crate::StoreError;

/// What every stored object says about the original bytes it encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta {
    /// How the object's bytes are encoded.
    pub codec: Codec,
    /// Length of the original (decoded) bytes.
    pub original_size: u64,
    /// SHA-256 of the original bytes.
    pub original_sha256: Sha256Digest,
}

impl ObjectMeta {
    /// Metadata of bytes stored as they are (`store` codec), such as a recipe.
    pub fn plain(bytes: &[u8]) -> Self {
        Self {
            codec: Codec::Store,
            original_size: bytes.len() as u64,
            original_sha256: Sha256Digest::of(bytes),
        }
    }
}

/// Names under which [`ObjectMeta`] is kept: custom metadata on GCS, sidecar fields in a
/// local directory.
pub mod meta_keys {
    /// The codec's wire name.
    pub const CODEC: &str = "panini-codec";
    /// Decimal length of the original bytes.
    pub const ORIGINAL_SIZE: &str = "panini-original-size";
    /// Hex SHA-256 of the original bytes.
    pub const ORIGINAL_SHA256: &str = "panini-original-sha256";
}

impl ObjectMeta {
    /// The metadata as string pairs, keyed by [`meta_keys`].
    pub fn to_pairs(&self) -> [(&'static str, String); 3] {
        [
            (meta_keys::CODEC, self.codec.to_string()),
            (meta_keys::ORIGINAL_SIZE, self.original_size.to_string()),
            (meta_keys::ORIGINAL_SHA256, self.original_sha256.to_hex()),
        ]
    }

    /// Reads the metadata back from string pairs. `None` when the object carries none of
    /// the keys (it was not stored by Panini); an error names a key that is present but
    /// malformed or missing beside the others.
    pub fn from_lookup<'a>(
        key: &str,
        lookup: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<Self>, StoreError> {
        let (codec, size, sha) = (
            lookup(meta_keys::CODEC),
            lookup(meta_keys::ORIGINAL_SIZE),
            lookup(meta_keys::ORIGINAL_SHA256),
        );
        if codec.is_none() && size.is_none() && sha.is_none() {
            return Ok(None);
        }
        let invalid = |field: &'static str, reason: String| StoreError::InvalidMetadata {
            key: key.to_owned(),
            field,
            reason,
        };
        let missing = |field: &'static str| invalid(field, "missing".into());
        Ok(Some(Self {
            codec: codec
                .ok_or_else(|| missing(meta_keys::CODEC))?
                .parse()
                .map_err(|e: chunk_model::recipe::ParseCodecError| {
                    invalid(meta_keys::CODEC, e.to_string())
                })?,
            original_size: size
                .ok_or_else(|| missing(meta_keys::ORIGINAL_SIZE))?
                .parse()
                .map_err(|e: std::num::ParseIntError| {
                    invalid(meta_keys::ORIGINAL_SIZE, e.to_string())
                })?,
            original_sha256: sha
                .ok_or_else(|| missing(meta_keys::ORIGINAL_SHA256))?
                .parse()
                .map_err(|e: chunk_model::digest::ParseDigestError| {
                    invalid(meta_keys::ORIGINAL_SHA256, e.to_string())
                })?,
        }))
    }
}

/// What a create-only put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was stored by this call.
    Created,
    /// An object with the same content was already there (deduplicated); nothing was
    /// written.
    AlreadyExists,
}

/// What the store knows about one object, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the store's root or prefix.
    pub key: String,
    /// Length of the stored (encoded) bytes.
    pub size: u64,
    /// CRC32C (Castagnoli) of the stored bytes, when the store recorded one.
    pub crc32c: Option<u32>,
    /// Panini's metadata, when the object carries it.
    pub meta: Option<ObjectMeta>,
    /// When the object was stored, when the store says.
    pub updated: Option<SystemTime>,
}

/// An object's bytes, verified against the store's size and CRC32C.
#[derive(Debug, Clone)]
pub struct Object {
    /// What the store says about it.
    pub info: ObjectInfo,
    /// The stored bytes.
    pub bytes: Bytes,
}

/// One object of a [`ObjectStore::put_many`] batch: its key, bytes and metadata.
pub type PutItem = (String, Bytes, ObjectMeta);

/// How many `put`s the default [`ObjectStore::put_many`] keeps in flight.
pub const PUT_MANY_CONCURRENCY: usize = 8;

/// `store.put` for each item, `concurrency` at a time, results in item order.
pub async fn put_each<S: ObjectStore + ?Sized>(
    store: &S,
    items: Vec<PutItem>,
    concurrency: usize,
) -> Vec<Result<PutOutcome, StoreError>> {
    futures::stream::iter(items)
        .map(|(key, bytes, meta)| async move { store.put(&key, bytes, &meta).await })
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// A flat namespace of immutable objects: the operations Panini's pipeline needs from a
/// bucket or a directory.
///
/// Keys are `/`-separated relative paths (`chunks/<sha256>.zstd`). Objects are never
/// overwritten: a put to a key that exists stores nothing, so a content-addressed key is
/// written once however many files and reruns contain it, and a reader never sees an
/// object change or appear half-written.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// The store's URL (`file:///…`, `gs://bucket/prefix`), for messages.
    fn url(&self) -> String;

    /// Stores `bytes` under `key` unless an object is already there. When one is, it is
    /// kept, and the call checks that it holds the same content (the same bytes, or the
    /// same original bytes under the same codec); otherwise it fails with
    /// [`StoreError::Conflict`].
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError>;

    /// [`put`](Self::put) for many objects: one result per item, in order, each what
    /// `put` of that item alone would have returned. A failure touches only its own item.
    ///
    /// The default calls `put` for each item, [`PUT_MANY_CONCURRENCY`] at a time, so a
    /// store without a cheaper way keeps its semantics (create-only, verification)
    /// unchanged. A store that can share work across the batch (one flush to disk for
    /// all of a local directory's files) overrides it and [`batches`](Self::batches).
    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<PutOutcome, StoreError>> {
        put_each(self, items, PUT_MANY_CONCURRENCY).await
    }

    /// Whether [`put_many`](Self::put_many) and [`stat_many`](Self::stat_many) do better
    /// than one call per item, so a wrapper should hand a batch down whole rather than
    /// split it.
    fn batches(&self) -> bool {
        false
    }

    /// Reads an object whole, verifying its size and CRC32C.
    async fn get(&self, key: &str) -> Result<Object, StoreError>;

    /// [`get`](Self::get) of every key: one result per key, in order, all held in memory
    /// at once (for small objects: records, recipes, a batch of small files' chunks). Batched as
    /// [`stat_many`](Self::stat_many) is.
    async fn get_many(&self, keys: &[String]) -> Vec<Result<Object, StoreError>> {
        // Made before they are streamed: a closure in the stream would have to be
        // Send for every lifetime of its argument, which async_trait cannot show.
        let gets: Vec<_> = keys.iter().map(|key| self.get(key)).collect();
        futures::stream::iter(gets)
            .buffered(PUT_MANY_CONCURRENCY)
            .collect()
            .await
    }

    /// What the store knows about `key`, or `None` when there is no such object.
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;

    /// [`stat`](Self::stat) of every key: one result per key, in order.
    ///
    /// The default asks [`PUT_MANY_CONCURRENCY`] keys at a time. A store whose calls each
    /// cost a hand-off to another thread (a local directory) answers them all in one, and
    /// says so through [`batches`](Self::batches).
    async fn stat_many(&self, keys: &[String]) -> Vec<Result<Option<ObjectInfo>, StoreError>> {
        // Made before they are streamed: a closure in the stream would have to be
        // Send for every lifetime of its argument, which async_trait cannot show.
        let stats: Vec<_> = keys.iter().map(|key| self.stat(key)).collect();
        futures::stream::iter(stats)
            .buffered(PUT_MANY_CONCURRENCY)
            .collect()
            .await
    }

    /// Whether an object is stored under each key: one answer per key, in order.
    ///
    /// For callers that need nothing but the answer (is the recipe there yet, under
    /// which codec's name is the chunk): a store that keeps an object's metadata apart
    /// from its bytes (a local directory's sidecars) answers without reading it. The
    /// default is [`stat_many`](Self::stat_many).
    async fn exists_many(&self, keys: &[String]) -> Vec<Result<bool, StoreError>> {
        found(self.stat_many(keys).await)
    }

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// Removes the object at `key`: `true` when this call removed it, `false` when there
    /// was none. Objects are otherwise immutable; only `prune` deletes, and only staged
    /// raw chunks whose compressed objects it has verified.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
}

#[async_trait]
impl<S: ObjectStore + ?Sized> ObjectStore for Arc<S> {
    fn url(&self) -> String {
        (**self).url()
    }
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError> {
        (**self).put(key, bytes, meta).await
    }
    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<PutOutcome, StoreError>> {
        (**self).put_many(items).await
    }
    fn batches(&self) -> bool {
        (**self).batches()
    }
    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        (**self).get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> Vec<Result<Object, StoreError>> {
        (**self).get_many(keys).await
    }
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        (**self).stat(key).await
    }
    async fn stat_many(&self, keys: &[String]) -> Vec<Result<Option<ObjectInfo>, StoreError>> {
        (**self).stat_many(keys).await
    }
    async fn exists_many(&self, keys: &[String]) -> Vec<Result<bool, StoreError>> {
        (**self).exists_many(keys).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        (**self).list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        (**self).delete(key).await
    }
}

/// [`ObjectStore::exists_many`]'s answers from [`ObjectStore::stat_many`]'s.
pub(crate) fn found(
    stats: Vec<Result<Option<ObjectInfo>, StoreError>>,
) -> Vec<Result<bool, StoreError>> {
    stats
        .into_iter()
        .map(|stat| stat.map(|info| info.is_some()))
        .collect()
}

/// Checks that `key` is a clean relative path: no empty, `.` or `..` components, no
/// leading `/`, no backslash or NUL, no component starting with `.` (the local store
/// keeps its temporary files and metadata under such names).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        Some("empty")
    } else if key.contains(['\\', '\0']) {
        Some("contains a backslash or NUL")
    } else if key.split('/').any(|part| part.is_empty()) {
        Some("has an empty path component (leading, trailing or double '/')")
    } else if key.split('/').any(|part| part.starts_with('.')) {
        Some("has a path component starting with '.'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Decides whether an existing object holds the content a put wanted to store: the
/// same bytes, or (for an encoder that is not deterministic across machines) the same
/// original bytes in the same codec.
pub(crate) fn check_existing(
    store: &str,
    key: &str,
    existing: &ObjectInfo,
    size: u64,
    crc32c: u32,
    meta: &ObjectMeta,
) -> Result<PutOutcome, StoreError> {
    if existing.size == size && existing.crc32c == Some(crc32c) {
        return Ok(PutOutcome::AlreadyExists);
    }
    match &existing.meta {
        Some(theirs) if theirs == meta => Ok(PutOutcome::AlreadyExists),
        Some(theirs) => Err(StoreError::Conflict {
            store: store.to_owned(),
            key: key.to_owned(),
            reason: format!(
                "stored original {} ({} bytes, {}), new original {} ({} bytes, {})",
                theirs.original_sha256,
                theirs.original_size,
                theirs.codec,
                meta.original_sha256,
                meta.original_size,
                meta.codec
            ),
        }),
        None => Err(StoreError::Conflict {
            store: store.to_owned(),
            key: key.to_owned(),
            reason: format!(
                "the stored object has no Panini metadata and differs ({} bytes, new {size})",
                existing.size
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_clean_relative_paths() {
        for good in ["a", "chunks/abc.zstd", "recipes/movie.mp4/x.json"] {
            validate_key(good).unwrap();
        }
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/./b", ".meta/x", "a\\b", "a\0b",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_round_trips_and_names_bad_fields() {
        let meta = ObjectMeta::plain(b"hello");
        let pairs = meta.to_pairs();
        let lookup = |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(ObjectMeta::from_lookup("k", lookup).unwrap(), Some(meta));
        assert_eq!(ObjectMeta::from_lookup("k", |_| None).unwrap(), None);
        let error = ObjectMeta::from_lookup("k", |name| match name {
            meta_keys::CODEC => Some("brotli"),
            _ => Some("1"),
        })
        .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::InvalidMetadata {
                    field: meta_keys::CODEC,
                    ..
                }
            ),
            "{error}"
        );
    }
}
