//! Storing one file: its chunk objects first, then its recipe.

use std::path::PathBuf;

use bytes::Bytes;
use chunk_model::{
    Codec, Layout, Manifest, ModelError, Recipe, RecipeChunk, RecipeError, Sha256Digest,
    object_keys,
};
use futures::{Stream, StreamExt as _, TryStreamExt as _};

use crate::StoreError;
use crate::store::{ObjectMeta, ObjectStore, PutItem, PutOutcome};

/// One chunk, already encoded by the caller (the uploader has no compression policy).
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    /// Offset of the original bytes in the file.
    pub offset: u64,
    /// Length of the original bytes.
    pub size: u64,
    /// SHA-256 of the original bytes.
    pub sha256: Sha256Digest,
    /// How `bytes` encode them.
    pub codec: Codec,
    /// The encoded bytes, stored as they are.
    pub bytes: Bytes,
}

impl EncodedChunk {
    /// The chunk's object key: `chunks/<sha256>.<codec>`.
    pub fn key(&self) -> String {
        object_keys::chunk_object(&self.sha256, self.codec)
    }

    /// The object metadata recorded with it.
    pub fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            codec: self.codec,
            original_size: self.size,
            original_sha256: self.sha256,
        }
    }
}

/// The file a set of chunks rebuilds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The file's name in the chunk tree (`base_name`), used in the recipe's key.
    pub name: String,
    /// Size of the original file.
    pub file_size: u64,
    /// SHA-256 of the original file.
    pub file_sha256: Sha256Digest,
}

/// How to upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    /// Chunks encoded and uploaded at once (the store may limit further).
    pub max_in_flight: usize,
    /// Decode every chunk before storing it and check the result against its SHA-256, so
    /// an encoder bug never reaches the bucket.
    pub verify_encoding: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            verify_encoding: true,
        }
    }
}

/// What one upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    /// The recipe's key.
    pub recipe_key: String,
    /// Whether the recipe was new.
    pub recipe: PutOutcome,
    /// Chunks stored by this upload.
    pub chunks_created: u64,
    /// Chunks already there (deduplicated).
    pub chunks_existing: u64,
    /// Encoded bytes of the chunks stored by this upload.
    pub bytes_created: u64,
}

/// Progress of an upload, reported after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadProgress {
    /// Chunks done so far.
    pub chunks_done: u64,
    /// Original bytes done so far.
    pub original_bytes_done: u64,
}

/// What can go wrong uploading a file.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The store failed (after retries).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A recipe names chunk objects the store does not have.
    #[error("recipe {name}: chunk object {key} is not in the store ({missing} missing in all)")]
    MissingChunk {
        /// The recipe's file name.
        name: String,
        /// The first missing key.
        key: String,
        /// How many are missing.
        missing: usize,
    },
    /// The chunk tree could not be read.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A chunk's bytes on disk do not match its hash in the manifest.
    #[error("{path}: SHA-256 is {actual}, manifest says {expected}")]
    ChunkHash {
        /// The chunk's data file.
        path: PathBuf,
        /// The manifest's hash.
        expected: Sha256Digest,
        /// The hash of the bytes read.
        actual: Sha256Digest,
    },
    /// The chunks do not add up to the file the manifest describes.
    #[error("{name}: the chunks hash to {actual}, the manifest says the file is {expected}")]
    FileHash {
        /// The file's name.
        name: String,
        /// The manifest's whole-file hash.
        expected: Sha256Digest,
        /// The hash of the chunks in order.
        actual: Sha256Digest,
    },
    /// The caller's encoder failed on a chunk.
    #[error("{name}: encoding the chunk at offset {offset} failed: {source}")]
    Encode {
        /// The file's name.
        name: String,
        /// The chunk's offset.
        offset: u64,
        /// The encoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An encoded chunk does not decode to its original bytes.
    #[error(
        "chunk {key} (offset {offset}): the encoded bytes do not decode to the original: {reason}"
    )]
    BadEncoding {
        /// The chunk's object key.
        key: String,
        /// The chunk's offset.
        offset: u64,
        /// What went wrong.
        reason: String,
    },
    /// The chunks do not tile the file.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// A chunk arrived out of order.
    #[error(
        "{name}: chunk {index} starts at {offset}, expected {expected} (chunks must come in file order)"
    )]
    OutOfOrder {
        /// The file's name.
        name: String,
        /// The chunk's position.
        index: usize,
        /// Its offset.
        offset: u64,
        /// Where the previous chunk ended.
        expected: u64,
    },
}

/// Stores one encoded chunk under its content key.
pub async fn put_chunk(
    store: &dyn ObjectStore,
    chunk: &EncodedChunk,
) -> Result<PutOutcome, StoreError> {
    store
        .put(&chunk.key(), chunk.bytes.clone(), &chunk.meta())
        .await
}

/// Uploads a file's chunks, in file order from `chunks`, at most
/// [`UploadOptions::max_in_flight`] at once, then its recipe
/// `recipes/<name>/<file sha256>.json`: the recipe is written only after every chunk is
/// stored, so a recipe never points at a missing object.
pub async fn upload_file<S>(
    store: &dyn ObjectStore,
    file: &FileSpec,
    chunks: S,
    options: &UploadOptions,
    progress: &(dyn Fn(UploadProgress) + Sync),
) -> Result<UploadReport, UploadError>
where
    S: Stream<Item = Result<EncodedChunk, UploadError>> + Send,
{
    let mut report = UploadReport {
        recipe_key: object_keys::recipe(&file.name, &file.file_sha256),
        recipe: PutOutcome::Created,
        chunks_created: 0,
        chunks_existing: 0,
        bytes_created: 0,
    };
    let mut recipe_chunks = Vec::new();
    let mut expected_offset = 0u64;
    let mut done = UploadProgress {
        chunks_done: 0,
        original_bytes_done: 0,
    };
    let name = file.name.as_str();
    let puts = chunks
        .map(|chunk| async move {
            let chunk = chunk?;
            if options.verify_encoding {
                verify_encoding(&chunk).await?;
            }
            let outcome = put_chunk(store, &chunk).await?;
            Ok::<_, UploadError>((chunk, outcome))
        })
        // `buffered` keeps file order, so the recipe is assembled as results arrive.
        .buffered(options.max_in_flight.max(1));
    let mut puts = std::pin::pin!(puts);
    while let Some((chunk, outcome)) = puts.try_next().await? {
        if chunk.offset != expected_offset {
            return Err(UploadError::OutOfOrder {
                name: name.to_owned(),
                index: recipe_chunks.len(),
                offset: chunk.offset,
                expected: expected_offset,
            });
        }
        expected_offset += chunk.size;
        match outcome {
            PutOutcome::Created => {
                report.chunks_created += 1;
                report.bytes_created += chunk.bytes.len() as u64;
            }
            PutOutcome::AlreadyExists => report.chunks_existing += 1,
        }
        recipe_chunks.push(RecipeChunk {
            offset: chunk.offset,
            size: chunk.size,
            sha256: chunk.sha256,
            key: chunk.key(),
            codec: chunk.codec,
        });
        done.chunks_done += 1;
        done.original_bytes_done += chunk.size;
        progress(done);
    }
    let recipe = Recipe {
        version: Recipe::VERSION,
        name: file.name.clone(),
        file_size: file.file_size,
        file_sha256: file.file_sha256,
        chunks: recipe_chunks,
    };
    report.recipe = write_recipe(store, &recipe).await?;
    Ok(report)
}

/// Stores `recipe` under `recipes/<name>/<file sha256>.json` once it checks out: its
/// chunks tile the file, and every chunk object it names is in the store (chunks are
/// stored by whoever compressed them, a worker say; the index comes after the data).
pub async fn put_recipe(
    store: &dyn ObjectStore,
    recipe: &Recipe,
) -> Result<PutOutcome, UploadError> {
    recipe.validate()?;
    let keys: std::collections::BTreeSet<&str> =
        recipe.chunks.iter().map(|c| c.key.as_str()).collect();
    let missing = futures::stream::iter(keys)
        .map(|key| async move {
            store
                .stat(key)
                .await
                .map(|info| info.is_none().then_some(key))
        })
        .buffer_unordered(16)
        .try_filter_map(|missing| async move { Ok(missing) })
        .try_collect::<Vec<_>>()
        .await?;
    if let Some(key) = missing.first() {
        return Err(UploadError::MissingChunk {
            name: recipe.name.clone(),
            key: (*key).to_owned(),
            missing: missing.len(),
        });
    }
    write_recipe(store, recipe).await
}

/// Writes a recipe whose chunk objects are known to be stored.
pub(crate) async fn write_recipe(
    store: &dyn ObjectStore,
    recipe: &Recipe,
) -> Result<PutOutcome, UploadError> {
    let (key, bytes, meta) = recipe_item(recipe)?;
    Ok(store.put(&key, bytes, &meta).await?)
}

/// A checked recipe as the object that stores it: its key, its JSON and metadata.
pub(crate) fn recipe_item(recipe: &Recipe) -> Result<PutItem, UploadError> {
    recipe.validate()?;
    let key = object_keys::recipe(&recipe.name, &recipe.file_sha256);
    let mut json = serde_json::to_vec_pretty(recipe).map_err(|e| StoreError::InvalidMetadata {
        key: key.clone(),
        field: "recipe",
        reason: e.to_string(),
    })?;
    json.push(b'\n');
    let meta = ObjectMeta::plain(&json);
    Ok((key, Bytes::from(json), meta))
}

async fn verify_encoding(chunk: &EncodedChunk) -> Result<(), UploadError> {
    let chunk = chunk.clone();
    tokio::task::spawn_blocking(move || {
        let bad = |reason: String| UploadError::BadEncoding {
            key: chunk.key(),
            offset: chunk.offset,
            reason,
        };
        let decoded =
            gpu_compress::decompress(chunk.codec, &chunk.bytes).map_err(|e| bad(e.to_string()))?;
        if decoded.len() as u64 != chunk.size {
            return Err(bad(format!(
                "{} bytes, expected {}",
                decoded.len(),
                chunk.size
            )));
        }
        let actual = Sha256Digest::of(&decoded);
        if actual != chunk.sha256 {
            return Err(bad(format!("SHA-256 {actual}, expected {}", chunk.sha256)));
        }
        Ok(())
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}

/// Encodes raw chunk bytes for storage. The uploader takes no decision about codecs;
/// whoever drives it (a worker with its compressor) does.
pub trait ChunkEncoder: Send + Sync {
    /// Encodes `raw`, returning the codec used and the encoded bytes.
    fn encode(
        &self,
        raw: &[u8],
    ) -> Result<(Codec, Vec<u8>), Box<dyn std::error::Error + Send + Sync>>;
}

/// A `gpu-compress` compressor encodes with the codec choice and engine it was built
/// with (`auto` picks per chunk).
impl ChunkEncoder for gpu_compress::Compressor {
    fn encode(
        &self,
        raw: &[u8],
    ) -> Result<(Codec, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
        let compressed = self.compress(raw)?;
        Ok((compressed.codec, compressed.bytes))
    }
}

/// Stores chunks as they are (`store` codec).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreAsIs;

impl ChunkEncoder for StoreAsIs {
    fn encode(
        &self,
        raw: &[u8],
    ) -> Result<(Codec, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
        Ok((Codec::Store, raw.to_vec()))
    }
}

/// Uploads one file of a chunk tree (`<root>/<name>/manifest.json` and its
/// `chunk_NNNN/data.bin` files): each chunk is read, checked against the manifest's
/// hash, encoded with `encoder` and stored; then the recipe. Chunks are read lazily, so
/// memory holds only the chunks in flight. A manifest without a whole-file hash (as the
/// Python chunker wrote them) gets one computed from the chunks; one with a hash must
/// match.
pub async fn upload_chunk_dir(
    store: &dyn ObjectStore,
    layout: &Layout,
    name: &str,
    encoder: &dyn ChunkEncoder,
    options: &UploadOptions,
    progress: &(dyn Fn(UploadProgress) + Sync),
) -> Result<UploadReport, UploadError> {
    let manifest: Manifest = chunk_model::json_file::read(&layout.manifest_path(name)?)?;
    let mut paths = Vec::with_capacity(manifest.chunks.len());
    for chunk in &manifest.chunks {
        paths.push(
            layout
                .chunk_dir(name, chunk.chunk_id, manifest.total_chunks)?
                .join(chunk_model::layout::DATA_FILE),
        );
    }
    // The recipe needs the whole-file hash before the upload starts, so hash the chunks
    // in order first (reading them twice is cheaper than holding them all).
    let file_size = manifest.chunks.iter().map(|c| c.size).sum::<u64>();
    let file_sha256 = hash_files(&paths).await?;
    if let Some(expected) = manifest.file_hash
        && expected != file_sha256
    {
        return Err(UploadError::FileHash {
            name: name.to_owned(),
            expected,
            actual: file_sha256,
        });
    }
    let file = FileSpec {
        name: manifest.base_name.clone(),
        file_size: manifest.file_size.unwrap_or(file_size),
        file_sha256,
    };
    let chunks =
        futures::stream::iter(manifest.chunks.iter().zip(paths)).then(|(chunk, path)| async move {
            let raw = tokio::fs::read(&path)
                .await
                .map_err(|e| StoreError::io(&path, e))?;
            let actual = Sha256Digest::of(&raw);
            if actual != chunk.hash {
                return Err(UploadError::ChunkHash {
                    path,
                    expected: chunk.hash,
                    actual,
                });
            }
            let (codec, bytes) = encoder.encode(&raw).map_err(|source| UploadError::Encode {
                name: name.to_owned(),
                offset: chunk.offset,
                source,
            })?;
            Ok(EncodedChunk {
                offset: chunk.offset,
                size: raw.len() as u64,
                sha256: chunk.hash,
                codec,
                bytes: Bytes::from(bytes),
            })
        });
    upload_file(store, &file, chunks, options, progress).await
}

async fn hash_files(paths: &[PathBuf]) -> Result<Sha256Digest, UploadError> {
    let paths = paths.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256Digest::hasher();
        for path in &paths {
            let mut file = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
            std::io::copy(&mut file, &mut hasher).map_err(|e| StoreError::io(path, e))?;
        }
        Ok(Sha256Digest::from_hasher(hasher))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}
