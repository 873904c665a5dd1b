//! Publishing a file's recipe as soon as every chunk object it needs is stored.
//!
//! Workers store chunks one by one, in any order and on many machines; whoever notices
//! that the last of a file's chunks is there writes the file's recipe. Three rules make
//! that safe without coordination:
//!
//! - **Data before index.** The recipe is built from `stat`s that found every chunk
//!   object, and written only after them, so it never names a missing object.
//! - **Create-only, idempotent.** Recipes are put like every object: never overwritten.
//!   When two workers finish a file at the same moment, the second put finds the first
//!   one's recipe and that is success, not an error.
//! - **O(chunks) stats.** [`KnownObjects`] remembers which chunks were found stored, so
//!   a caller that tries after every batch stats each chunk about once over the file's
//!   life (plus one stat per codec of the first chunk still missing), instead of the whole
//!   file again per attempt.

use std::collections::{HashMap, HashSet};

use chunk_model::{Codec, Manifest, Recipe, RecipeChunk, Sha256Digest, object_keys};
use futures::StreamExt as _;

use crate::StoreError;
use crate::store::{ObjectStore, PutOutcome};
use crate::upload::{UploadError, write_recipe};

/// How many chunks [`publish_if_complete`] looks up at once.
const STAT_CONCURRENCY: usize = 16;

/// Chunks known to be durably stored, by SHA-256 of their original bytes, with the
/// codec of the object that holds them.
///
/// Only ever fill it with objects that are stored (found by `stat`, or whose put
/// returned): [`publish_if_complete`] trusts it without asking the store again.
#[derive(Debug, Clone, Default)]
pub struct KnownObjects {
    objects: HashMap<Sha256Digest, Codec>,
}

impl KnownObjects {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `chunks/<sha>.<codec>` is stored.
    pub fn insert(&mut self, sha: Sha256Digest, codec: Codec) {
        self.objects.insert(sha, codec);
    }

    /// The codec of the stored object for `sha`, if it is known to be stored.
    pub fn get(&self, sha: &Sha256Digest) -> Option<Codec> {
        self.objects.get(sha).copied()
    }

    /// Forgets the chunks of `manifest`, once its recipe is published, so a long-running
    /// caller's memory follows the files in progress rather than every file it has seen.
    /// (A forgotten chunk that another file shares is simply looked up again.)
    pub fn forget(&mut self, manifest: &Manifest) {
        for chunk in &manifest.chunks {
            self.objects.remove(&chunk.hash);
        }
    }

    /// Number of chunks known.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// What [`publish_if_complete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// This call wrote the recipe under `key`.
    Published {
        /// The recipe's key, `recipes/<name>/<file sha256>.json`.
        key: String,
    },
    /// A recipe for this file was there already (another worker, an earlier call, or
    /// `upload`); nothing was written.
    AlreadyPublished {
        /// The recipe's key.
        key: String,
    },
    /// Not every chunk object is stored yet; nothing was written.
    Incomplete {
        /// The first chunk, in file order, with no object under any codec's name.
        missing: Sha256Digest,
        /// Its `chunk_id` in the manifest.
        chunk_id: u64,
    },
}

/// Why a recipe could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The manifest does not say the whole file's SHA-256 (Python chunker manifests), so
    /// there is no key to publish under and nothing to check a reconstruction against.
    #[error(
        "{name}: the manifest has no file_hash, so its recipe cannot be published (upload the chunk tree instead)"
    )]
    NoFileHash {
        /// The file's name.
        name: String,
    },
    /// The store failed (after its retries).
    #[error("{name}: {source}")]
    Store {
        /// The file's name.
        name: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The recipe could not be written: its chunks do not tile the file the manifest
    /// describes, or the put failed.
    #[error("{name}: {source}")]
    Write {
        /// The file's name.
        name: String,
        /// What went wrong.
        #[source]
        source: UploadError,
    },
}

/// Publishes the recipe `recipes/<name>/<file sha256>.json` of the file `manifest`
/// describes if, and only if, every chunk object it needs is stored.
///
/// Walks the manifest's chunks in file order; a chunk not in `known` is looked up with
/// one `stat` per codec's object name ([`object_keys::chunk_object`] for each of
/// [`Codec::ALL`], the first found wins, as the worker looks for a stored chunk), and
/// found ones are added to `known`. The walk stops at the first chunk with no object
/// ([`Publish::Incomplete`]). When all are there, the recipe (offsets and sizes from the
/// manifest, the key and codec of the object that really exists, `file_size` and
/// `file_sha256` from the manifest) is written create-only. A recipe that is already
/// there, or that another caller wrote between the check and the put (a create
/// conflict), is [`Publish::AlreadyPublished`]: publishing is idempotent, and any number
/// of workers may race to publish the same file.
///
/// `name` is the file's name in the chunk tree (the directory under
/// `pending_compression/`), which `reconstruct NAME` looks up.
pub async fn publish_if_complete(
    store: &dyn ObjectStore,
    name: &str,
    manifest: &Manifest,
    known: &mut KnownObjects,
) -> Result<Publish, PublishError> {
    let store_error = |source| PublishError::Store {
        name: name.to_owned(),
        source,
    };
    let Some(file_sha256) = manifest.file_hash else {
        return Err(PublishError::NoFileHash {
            name: name.to_owned(),
        });
    };
    let key = object_keys::recipe(name, &file_sha256);
    // One stat spares the walk when the file is done already, the common case for a
    // worker that sees the same file again in later batches.
    if store.stat(&key).await.map_err(store_error)?.is_some() {
        return Ok(Publish::AlreadyPublished { key });
    }

    // The chunks still to look up, in file order, each once however often it repeats.
    let mut seen = HashSet::new();
    let unknown: Vec<(u64, Sha256Digest)> = manifest
        .chunks
        .iter()
        .filter(|c| known.get(&c.hash).is_none() && seen.insert(c.hash))
        .map(|c| (c.chunk_id, c.hash))
        .collect();
    // `buffered` keeps file order, so the first missing chunk ends the walk; at most
    // STAT_CONCURRENCY lookups past it were started in vain.
    let mut lookups = std::pin::pin!(
        futures::stream::iter(unknown)
            .map(|(chunk_id, sha)| async move {
                stored_codec(store, &sha)
                    .await
                    .map(|codec| (chunk_id, sha, codec))
            })
            .buffered(STAT_CONCURRENCY)
    );
    while let Some(found) = lookups.next().await {
        match found.map_err(store_error)? {
            (_, sha, Some(codec)) => known.insert(sha, codec),
            (chunk_id, missing, None) => return Ok(Publish::Incomplete { missing, chunk_id }),
        }
    }

    let chunks = manifest
        .chunks
        .iter()
        .map(|c| {
            let codec = known
                .get(&c.hash)
                .expect("every chunk was found stored above");
            RecipeChunk {
                offset: c.offset,
                size: c.size,
                sha256: c.hash,
                key: object_keys::chunk_object(&c.hash, codec),
                codec,
            }
        })
        .collect();
    let recipe = Recipe {
        version: Recipe::VERSION,
        name: name.to_owned(),
        file_size: manifest
            .file_size
            .unwrap_or_else(|| manifest.chunks.iter().map(|c| c.size).sum()),
        file_sha256,
        chunks,
    };
    match write_recipe(store, &recipe).await {
        Ok(PutOutcome::Created) => Ok(Publish::Published { key }),
        Ok(PutOutcome::AlreadyExists) => Ok(Publish::AlreadyPublished { key }),
        // Another worker published first and found a chunk under another codec's name
        // (two objects for the same content): its recipe is as good as ours, and
        // objects are never overwritten.
        Err(UploadError::Store(StoreError::Conflict { .. })) => {
            Ok(Publish::AlreadyPublished { key })
        }
        Err(source) => Err(PublishError::Write {
            name: name.to_owned(),
            source,
        }),
    }
}

/// The codec of the stored object for `sha`: one `stat` per codec's object name, never
/// a listing (listing `chunks/` costs as much as the bucket is large). The first codec
/// of [`Codec::ALL`] found wins, so every caller picks the same object.
async fn stored_codec(
    store: &dyn ObjectStore,
    sha: &Sha256Digest,
) -> Result<Option<Codec>, StoreError> {
    let keys = Codec::ALL.map(|codec| object_keys::chunk_object(sha, codec));
    let stats = store.stat_many(&keys).await;
    for (codec, stat) in Codec::ALL.into_iter().zip(stats) {
        if stat?.is_some() {
            return Ok(Some(codec));
        }
    }
    Ok(None)
}
