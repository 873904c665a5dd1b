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
use crate::upload::{UploadError, recipe_item, write_recipe};

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
/// Walks the manifest's chunks in file order; a chunk not in `known` is looked for
/// under each codec's object name ([`object_keys::chunk_object`] for each of
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
    let prepared = prepare_recipes(store, &[(name, manifest)], known)
        .await
        .pop()
        .expect("one result per file");
    match prepared? {
        Prepared::Settled(outcome) => Ok(outcome),
        Prepared::Ready(recipe) => {
            let outcome = write_recipe(store, &recipe).await;
            written(&recipe, outcome)
        }
    }
}

/// What [`prepare_recipes`] found for a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// Every chunk object is stored: this recipe may be written, alone or in a batch
    /// ([`publish_prepared`]).
    Ready(Recipe),
    /// Nothing to write: a recipe is there already, or a chunk object is missing.
    Settled(Publish),
}

/// The checks of [`publish_if_complete`] without the write, for many files at once: for
/// each `(name, manifest)`, in order, the recipe when every chunk object it needs is
/// stored. The files' recipes are looked up in one `exists_many`; a caller with many files
/// to publish (a worker's batch of small files) then writes the ready recipes in one
/// [`publish_prepared`] batch.
pub async fn prepare_recipes(
    store: &dyn ObjectStore,
    files: &[(&str, &Manifest)],
    known: &mut KnownObjects,
) -> Vec<Result<Prepared, PublishError>> {
    let keys: Vec<Option<(String, Sha256Digest)>> = files
        .iter()
        .map(|(name, manifest)| {
            manifest
                .file_hash
                .map(|sha| (object_keys::recipe(name, &sha), sha))
        })
        .collect();
    let to_look_up: Vec<String> = keys.iter().flatten().map(|(key, _)| key.clone()).collect();
    let mut found = store.exists_many(&to_look_up).await.into_iter();
    let mut prepared = Vec::with_capacity(files.len());
    for ((name, manifest), key) in files.iter().zip(keys) {
        let Some((key, file_sha256)) = key else {
            prepared.push(Err(PublishError::NoFileHash {
                name: (*name).to_owned(),
            }));
            continue;
        };
        let found = found.next().unwrap_or_else(|| {
            Err(StoreError::Task(
                "exists_many gave fewer results than keys".into(),
            ))
        });
        prepared.push(match found {
            Err(source) => Err(PublishError::Store {
                name: (*name).to_owned(),
                source,
            }),
            // The recipe's lookup spares the walk when the file is done already, the
            // common case for a worker that sees the same file again in later batches.
            Ok(true) => Ok(Prepared::Settled(Publish::AlreadyPublished { key })),
            Ok(false) => complete_recipe(store, name, manifest, file_sha256, known).await,
        });
    }
    prepared
}

/// The recipe of a file with none published yet, when every chunk object it needs is
/// stored: the walk of [`publish_if_complete`].
async fn complete_recipe(
    store: &dyn ObjectStore,
    name: &str,
    manifest: &Manifest,
    file_sha256: Sha256Digest,
    known: &mut KnownObjects,
) -> Result<Prepared, PublishError> {
    let store_error = |source| PublishError::Store {
        name: name.to_owned(),
        source,
    };
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
            (chunk_id, missing, None) => {
                return Ok(Prepared::Settled(Publish::Incomplete { missing, chunk_id }));
            }
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
    Ok(Prepared::Ready(recipe))
}

/// Writes recipes that [`prepare_recipes`] found ready, create-only, in one `put_many`
/// (on a local directory: one flush for the batch instead of one per recipe and its
/// sidecar). One outcome per recipe, in order, as [`publish_if_complete`] reports it.
pub async fn publish_prepared(
    store: &dyn ObjectStore,
    recipes: &[Recipe],
) -> Vec<Result<Publish, PublishError>> {
    let mut items = Vec::with_capacity(recipes.len());
    // A recipe that does not tile its file never reaches the store.
    let mut invalid = Vec::new();
    for (index, recipe) in recipes.iter().enumerate() {
        match recipe_item(recipe) {
            Ok(item) => items.push(item),
            Err(e) => invalid.push((index, e)),
        }
    }
    let mut puts = store.put_many(items).await.into_iter();
    let mut invalid = invalid.into_iter().peekable();
    recipes
        .iter()
        .enumerate()
        .map(|(index, recipe)| {
            let outcome = match invalid.next_if(|(i, _)| *i == index) {
                Some((_, e)) => Err(e),
                None => puts.next().map_or_else(
                    || {
                        Err(
                            StoreError::Task("put_many gave fewer results than items".into())
                                .into(),
                        )
                    },
                    |put| put.map_err(UploadError::from),
                ),
            };
            written(recipe, outcome)
        })
        .collect()
}

/// What writing `recipe` came to, as [`publish_if_complete`] reports it.
fn written(
    recipe: &Recipe,
    outcome: Result<PutOutcome, UploadError>,
) -> Result<Publish, PublishError> {
    let key = object_keys::recipe(&recipe.name, &recipe.file_sha256);
    match outcome {
        Ok(PutOutcome::Created) => Ok(Publish::Published { key }),
        Ok(PutOutcome::AlreadyExists) => Ok(Publish::AlreadyPublished { key }),
        // Another worker published first and found a chunk under another codec's name
        // (two objects for the same content): its recipe is as good as ours, and
        // objects are never overwritten.
        Err(UploadError::Store(StoreError::Conflict { .. })) => {
            Ok(Publish::AlreadyPublished { key })
        }
        Err(source) => Err(PublishError::Write {
            name: recipe.name.clone(),
            source,
        }),
    }
}

/// The codec of the stored object for `sha`: one lookup per codec's object name, never
/// a listing (listing `chunks/` costs as much as the bucket is large). The first codec
/// of [`Codec::ALL`] found wins, so every caller picks the same object.
async fn stored_codec(
    store: &dyn ObjectStore,
    sha: &Sha256Digest,
) -> Result<Option<Codec>, StoreError> {
    let keys = Codec::ALL.map(|codec| object_keys::chunk_object(sha, codec));
    let found = store.exists_many(&keys).await;
    for (codec, found) in Codec::ALL.into_iter().zip(found) {
        if found? {
            return Ok(Some(codec));
        }
    }
    Ok(None)
}
