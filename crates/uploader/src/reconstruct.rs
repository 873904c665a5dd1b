//! Rebuilding a file bit for bit from its recipe and chunk objects.

use std::path::{Path, PathBuf};

use chunk_model::{Recipe, RecipeError, Sha256Digest, object_keys};
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::io::AsyncWriteExt as _;

use crate::StoreError;
use crate::store::ObjectStore;

/// Which of a name's recipes to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The most recently stored recipe.
    Newest,
    /// The recipe of the file with this SHA-256.
    File(Sha256Digest),
}

/// How to reconstruct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconstructOptions {
    /// Chunks downloaded and decoded at once.
    pub max_in_flight: usize,
}

impl Default for ReconstructOptions {
    fn default() -> Self {
        Self { max_in_flight: 8 }
    }
}

/// Progress of a reconstruction, reported after each chunk is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconstructProgress {
    /// Chunks written.
    pub chunks_done: u64,
    /// Chunks in the recipe.
    pub chunks_total: u64,
    /// Bytes written.
    pub bytes_done: u64,
    /// Size of the file.
    pub bytes_total: u64,
}

/// What a reconstruction produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconstructReport {
    /// The recipe used.
    pub recipe_key: String,
    /// The file written.
    pub output: PathBuf,
    /// Its size.
    pub file_size: u64,
    /// Its SHA-256, checked against the recipe.
    pub file_sha256: Sha256Digest,
    /// Number of chunks.
    pub chunks: u64,
}

/// What can go wrong reconstructing a file. Every variant about a chunk names its
/// index and object key. When any error is returned no output file was written.
#[derive(Debug, thiserror::Error)]
pub enum ReconstructError {
    /// No recipe is stored for the name (or for the name and file hash).
    #[error("{store}: no recipe for {name:?} under {prefix}")]
    NoRecipe {
        /// The store's URL.
        store: String,
        /// The name asked for.
        name: String,
        /// Where recipes were looked for.
        prefix: String,
    },
    /// A store operation outside any chunk failed (listing, reading the recipe).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The recipe object is not a recipe.
    #[error("recipe {key}: invalid JSON: {source}")]
    RecipeJson {
        /// The recipe's key.
        key: String,
        /// The parse error (names line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The recipe's chunks do not tile its file.
    #[error("recipe {key}: {source}")]
    InvalidRecipe {
        /// The recipe's key.
        key: String,
        /// What is wrong.
        #[source]
        source: RecipeError,
    },
    /// The recipe describes another file than its key says.
    #[error("recipe {key}: {reason}")]
    RecipeMismatch {
        /// The recipe's key.
        key: String,
        /// What differs.
        reason: String,
    },
    /// A chunk object could not be read (after retries), or failed its CRC32C check.
    #[error("chunk {index} ({key}): {source}")]
    ChunkStore {
        /// The chunk's index in the recipe.
        index: usize,
        /// Its object key.
        key: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A chunk object does not decode.
    #[error("chunk {index} ({key}): cannot decode: {source}")]
    ChunkDecode {
        /// The chunk's index in the recipe.
        index: usize,
        /// Its object key.
        key: String,
        /// The decoder's error.
        #[source]
        source: gpu_compress::CompressError,
    },
    /// A decoded chunk is not the recipe's chunk.
    #[error(
        "chunk {index} ({key}) at offset {offset}: decoded {actual_size} bytes with SHA-256 {actual}, recipe says {expected_size} bytes with {expected}"
    )]
    ChunkMismatch {
        /// The chunk's index in the recipe.
        index: usize,
        /// Its object key.
        key: String,
        /// Its offset in the file.
        offset: u64,
        /// The recipe's size.
        expected_size: u64,
        /// The decoded size.
        actual_size: u64,
        /// The recipe's hash.
        expected: Sha256Digest,
        /// The decoded bytes' hash.
        actual: Sha256Digest,
    },
    /// Every chunk matched but the whole file does not (a recipe listing the wrong chunks).
    #[error("{name}: rebuilt file has SHA-256 {actual}, recipe says {expected}")]
    FileHash {
        /// The file's name.
        name: String,
        /// The recipe's hash.
        expected: Sha256Digest,
        /// The rebuilt file's hash.
        actual: Sha256Digest,
    },
    /// Writing the output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Finds and checks a recipe: its JSON parses, its chunks tile the file, and its name
/// and file hash are the ones its key says.
pub async fn find_recipe(
    store: &dyn ObjectStore,
    name: &str,
    which: Which,
) -> Result<(String, Recipe), ReconstructError> {
    let prefix = object_keys::recipe_prefix(name);
    let no_recipe = || ReconstructError::NoRecipe {
        store: store.url(),
        name: name.to_owned(),
        prefix: prefix.clone(),
    };
    let key = match which {
        Which::File(hash) => object_keys::recipe(name, &hash),
        Which::Newest => {
            let recipes = store.list(&prefix).await?;
            recipes
                .into_iter()
                // Only direct children: a name may itself be a prefix of another's path.
                .filter(|info| {
                    info.key
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.ends_with(".json") && !rest.contains('/'))
                })
                .max_by(|a, b| a.updated.cmp(&b.updated).then_with(|| a.key.cmp(&b.key)))
                .ok_or_else(no_recipe)?
                .key
        }
    };
    let object = match store.get(&key).await {
        Ok(object) => object,
        Err(StoreError::NotFound { .. }) => return Err(no_recipe()),
        Err(e) => return Err(e.into()),
    };
    check_recipe(name, key, &object.bytes)
}

/// [`find_recipe`] of many files, each by its name and its hash ([`Which::File`]): one
/// [`ObjectStore::get_many`] for all of them. One result per file, in order.
pub async fn find_recipes(
    store: &dyn ObjectStore,
    files: &[(&str, Sha256Digest)],
) -> Vec<Result<(String, Recipe), ReconstructError>> {
    let keys: Vec<String> = files
        .iter()
        .map(|(name, hash)| object_keys::recipe(name, hash))
        .collect();
    let objects = store.get_many(&keys).await;
    files
        .iter()
        .zip(keys)
        .zip(objects)
        .map(|((&(name, _), key), object)| match object {
            Ok(object) => check_recipe(name, key, &object.bytes),
            Err(StoreError::NotFound { .. }) => Err(ReconstructError::NoRecipe {
                store: store.url(),
                name: name.to_owned(),
                prefix: object_keys::recipe_prefix(name),
            }),
            Err(e) => Err(e.into()),
        })
        .collect()
}

/// Parses and checks the recipe read from `key`: its chunks tile the file, and its
/// name and file hash are the ones `key` says.
fn check_recipe(
    name: &str,
    key: String,
    bytes: &[u8],
) -> Result<(String, Recipe), ReconstructError> {
    let recipe: Recipe =
        serde_json::from_slice(bytes).map_err(|source| ReconstructError::RecipeJson {
            key: key.clone(),
            source,
        })?;
    recipe
        .validate()
        .map_err(|source| ReconstructError::InvalidRecipe {
            key: key.clone(),
            source,
        })?;
    if recipe.name != name {
        return Err(ReconstructError::RecipeMismatch {
            key,
            reason: format!("it is for {:?}", recipe.name),
        });
    }
    if key != object_keys::recipe(name, &recipe.file_sha256) {
        return Err(ReconstructError::RecipeMismatch {
            reason: format!("it describes the file {}", recipe.file_sha256),
            key,
        });
    }
    Ok((key, recipe))
}

/// Rebuilds the file `name` from `store` into `output`.
///
/// Chunks are downloaded and decoded concurrently (at most
/// [`ReconstructOptions::max_in_flight`] at once), each checked against the recipe's
/// size, and written in order to a temporary file beside `output`; the whole file's
/// SHA-256 is checked and only then is the temporary file renamed to `output`. (When
/// it does not match, the file is rebuilt again with every chunk's SHA-256 checked, to
/// name the chunk at fault.) On any error the temporary file is removed and `output`
/// is untouched.
pub async fn reconstruct(
    store: &dyn ObjectStore,
    name: &str,
    which: Which,
    output: &Path,
    options: &ReconstructOptions,
    progress: &(dyn Fn(ReconstructProgress) + Sync),
) -> Result<ReconstructReport, ReconstructError> {
    let (recipe_key, recipe) = find_recipe(store, name, which).await?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReconstructError::Io { path, source }
    };
    let dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // The mode `cp` would give the file: 0666 less the umask, or the mode of the file
    // it replaces.
    let temp = chunk_model::file_mode::temp_file_in(dir, ".panini-tmp-").map_err(io(dir))?;
    chunk_model::file_mode::keep_mode_of(output, temp.as_file()).map_err(io(temp.path()))?;
    let mut writer = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::from_std(temp.as_file().try_clone().map_err(io(temp.path()))?),
    );
    let actual = rebuild_into(store, &recipe, &mut writer, options, progress, Check::Sizes)
        .await
        .map_err(|e| e.at_path(temp.path()))?
        .sha256;
    if actual != recipe.file_sha256 {
        return Err(name_the_bad_chunk(store, &recipe, options, actual).await);
    }
    writer.flush().await.map_err(io(temp.path()))?;
    let file = writer.into_inner();
    file.sync_all().await.map_err(io(temp.path()))?;
    drop(file);
    temp.persist(output).map_err(|e| ReconstructError::Io {
        path: output.to_owned(),
        source: e.error,
    })?;
    chunk_model::json_file::sync_dir(dir).map_err(|e| match e {
        chunk_model::ModelError::Io { path, source } => ReconstructError::Io { path, source },
        other => ReconstructError::Store(StoreError::Task(other.to_string())),
    })?;
    Ok(ReconstructReport {
        recipe_key,
        output: output.to_owned(),
        file_size: recipe.file_size,
        file_sha256: actual,
        chunks: recipe.chunks.len() as u64,
    })
}

/// What a verification checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The recipe used.
    pub recipe_key: String,
    /// Size of the file.
    pub file_size: u64,
    /// Its SHA-256, as rebuilt and as the recipe says.
    pub file_sha256: Sha256Digest,
    /// Number of chunks.
    pub chunks: u64,
    /// Bytes its distinct chunk objects take in the store, as read.
    pub stored_bytes: u64,
}

/// Rebuilds a file in memory, chunk by chunk, and checks every chunk's size and the
/// whole file's SHA-256 exactly as [`reconstruct`] does (naming the chunk at fault when
/// the file does not match), without writing anything.
pub async fn verify(
    store: &dyn ObjectStore,
    name: &str,
    which: Which,
    options: &ReconstructOptions,
    progress: &(dyn Fn(ReconstructProgress) + Sync),
) -> Result<VerifyReport, ReconstructError> {
    let (recipe_key, recipe) = find_recipe(store, name, which).await?;
    verify_recipe(store, recipe_key, &recipe, options, progress).await
}

/// [`verify`] of a recipe already read (by [`find_recipe`]), stored under `recipe_key`.
pub async fn verify_recipe(
    store: &dyn ObjectStore,
    recipe_key: String,
    recipe: &Recipe,
    options: &ReconstructOptions,
    progress: &(dyn Fn(ReconstructProgress) + Sync),
) -> Result<VerifyReport, ReconstructError> {
    let sink = &mut tokio::io::sink();
    let Rebuilt {
        sha256: actual,
        stored_bytes,
    } = rebuild_into(store, recipe, sink, options, progress, Check::Sizes)
        .await
        .map_err(|e| e.at_path(Path::new("(verification)")))?;
    if actual != recipe.file_sha256 {
        return Err(name_the_bad_chunk(store, recipe, options, actual).await);
    }
    Ok(VerifyReport {
        recipe_key,
        file_size: recipe.file_size,
        file_sha256: actual,
        chunks: recipe.chunks.len() as u64,
        stored_bytes,
    })
}

/// [`verify_recipe`] of many recipes (each under its key, as [`find_recipes`] returns
/// them) at once: the distinct chunks of all of them in one [`ObjectStore::get_many`],
/// decoded and hashed in one job on rayon's pool. One result per recipe, in order.
///
/// For many small files, where a file's own hand-offs (a fetch on the blocking pool, a
/// decode on rayon's, and back) cost more than its bytes (issue #17). Every chunk object
/// and every decoded chunk of the batch is held at once: the caller keeps a batch to
/// what it can hold, and verifies a big file alone with [`verify_recipe`], which
/// streams it. A recipe the batch cannot verify (a chunk missing, damaged or not the
/// recipe's) is verified again alone with [`verify_recipe`], so that its error names
/// the chunk at fault exactly as that one's does.
pub async fn verify_recipes(
    store: &dyn ObjectStore,
    recipes: Vec<(String, Recipe)>,
) -> Vec<Result<VerifyReport, ReconstructError>> {
    // Each distinct chunk once, with the first recipe entry that names it: its codec
    // and size (a recipe that gives the same key another size fails below).
    let mut index_of = std::collections::HashMap::new();
    let mut distinct: Vec<chunk_model::RecipeChunk> = Vec::new();
    for (_, recipe) in &recipes {
        for chunk in &recipe.chunks {
            index_of.entry(chunk.key.clone()).or_insert_with(|| {
                distinct.push(chunk.clone());
                distinct.len() - 1
            });
        }
    }
    let keys: Vec<String> = distinct.iter().map(|chunk| chunk.key.clone()).collect();
    let objects = store.get_many(&keys).await;
    let count = recipes.len();
    let checked =
        crate::cpu::on_rayon(move || check_batch(&recipes, &index_of, &distinct, objects)).await;
    let checked = match checked {
        Ok(checked) => checked,
        Err(panic) => {
            return std::iter::repeat_with(|| {
                Err(ReconstructError::Store(StoreError::Task(panic.clone())))
            })
            .take(count)
            .collect();
        }
    };
    let mut reports = Vec::with_capacity(checked.len());
    for outcome in checked {
        reports.push(match outcome {
            Ok(report) => Ok(report),
            Err((key, recipe)) => {
                verify_recipe(store, key, &recipe, &ReconstructOptions::default(), &|_| {}).await
            }
        });
    }
    reports
}

/// [`verify_recipes`]' CPU work: decodes each distinct chunk (`distinct`, fetched as
/// `objects`), then hashes each recipe's chunks in order. A recipe that does not check
/// out comes back as it went in, to be verified alone.
#[allow(clippy::type_complexity)]
fn check_batch(
    recipes: &[(String, Recipe)],
    index_of: &std::collections::HashMap<String, usize>,
    distinct: &[chunk_model::RecipeChunk],
    objects: Vec<Result<crate::store::Object, StoreError>>,
) -> Vec<Result<VerifyReport, (String, Recipe)>> {
    use rayon::prelude::*;
    // `None`: not fetched, or not decoded to the size the recipe gives it.
    let decoded: Vec<Option<(Vec<u8>, u64)>> = distinct
        .par_iter()
        .zip(objects)
        .map(|(chunk, object)| {
            let object = object.ok()?;
            let decoded = decode_and_check(0, chunk, &object.bytes, Check::Sizes).ok()?;
            Some((decoded, object.bytes.len() as u64))
        })
        .collect();
    recipes
        .par_iter()
        .map(|(key, recipe)| {
            let mut hasher = Sha256Digest::hasher();
            let mut seen = std::collections::HashSet::new();
            let mut stored_bytes = 0;
            for chunk in &recipe.chunks {
                let Some((bytes, object_len)) = &decoded[index_of[&chunk.key]] else {
                    return Err((key.clone(), recipe.clone()));
                };
                if bytes.len() as u64 != chunk.size {
                    return Err((key.clone(), recipe.clone()));
                }
                if seen.insert(chunk.key.as_str()) {
                    stored_bytes += object_len;
                }
                sha2::Digest::update(&mut hasher, bytes);
            }
            let actual = Sha256Digest::from_hasher(hasher);
            if actual != recipe.file_sha256 {
                return Err((key.clone(), recipe.clone()));
            }
            Ok(VerifyReport {
                recipe_key: key.clone(),
                file_size: recipe.file_size,
                file_sha256: actual,
                chunks: recipe.chunks.len() as u64,
                stored_bytes,
            })
        })
        .collect()
}

/// What [`rebuild_into`] checks of each decoded chunk, besides its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Sizes only: the whole file's SHA-256, which every rebuild checks, proves every
    /// byte, so hashing each chunk as well would be a second SHA-256 pass over the
    /// file for nothing (issue #17). Only a file that fails is rebuilt again with
    /// [`Check::Hashes`] to name the chunk at fault.
    Sizes,
    /// Sizes and each chunk's SHA-256.
    Hashes,
}

/// The error for a rebuild of `recipe` whose bytes hashed to `actual`, not to the
/// recipe's file hash: rebuilds it again, hashing every chunk, to name the first chunk
/// whose bytes are not the recipe's; [`ReconstructError::FileHash`] when every chunk
/// matches (the recipe lists the wrong chunks) or the second rebuild cannot tell.
async fn name_the_bad_chunk(
    store: &dyn ObjectStore,
    recipe: &Recipe,
    options: &ReconstructOptions,
    actual: Sha256Digest,
) -> ReconstructError {
    let sink = &mut tokio::io::sink();
    match rebuild_into(store, recipe, sink, options, &|_| {}, Check::Hashes).await {
        Err(RebuildError::Chunk(chunk_error)) => chunk_error,
        Ok(_) | Err(RebuildError::Write(_)) => ReconstructError::FileHash {
            name: recipe.name.clone(),
            expected: recipe.file_sha256,
            actual,
        },
    }
}

/// Why [`rebuild_into`] stopped: a chunk that did not check out, or the writer.
enum RebuildError {
    Chunk(ReconstructError),
    Write(std::io::Error),
}

impl RebuildError {
    fn at_path(self, path: &Path) -> ReconstructError {
        match self {
            RebuildError::Chunk(e) => e,
            RebuildError::Write(source) => ReconstructError::Io {
                path: path.to_owned(),
                source,
            },
        }
    }
}

impl From<ReconstructError> for RebuildError {
    fn from(e: ReconstructError) -> Self {
        RebuildError::Chunk(e)
    }
}

/// What [`rebuild_into`] wrote.
struct Rebuilt {
    /// The SHA-256 of everything written.
    sha256: Sha256Digest,
    /// Bytes the distinct chunk objects read take.
    stored_bytes: u64,
}

/// Fetches (concurrently, in recipe order), decodes and checks every chunk of `recipe`
/// as `check` says, and writes the bytes to `writer`.
async fn rebuild_into<W: tokio::io::AsyncWrite + Unpin>(
    store: &dyn ObjectStore,
    recipe: &chunk_model::Recipe,
    writer: &mut W,
    options: &ReconstructOptions,
    progress: &(dyn Fn(ReconstructProgress) + Sync),
    check: Check,
) -> Result<Rebuilt, RebuildError> {
    let mut hasher = Sha256Digest::hasher();
    let mut done = ReconstructProgress {
        chunks_done: 0,
        chunks_total: recipe.chunks.len() as u64,
        bytes_done: 0,
        bytes_total: recipe.file_size,
    };
    let mut chunks = futures::stream::iter(recipe.chunks.iter().enumerate())
        .map(|(index, chunk)| async move {
            let object =
                store
                    .get(&chunk.key)
                    .await
                    .map_err(|source| ReconstructError::ChunkStore {
                        index,
                        key: chunk.key.clone(),
                        source,
                    })?;
            let chunk = chunk.clone();
            let object_len = object.bytes.len() as u64;
            // CPU work, on rayon's pool (`crate::cpu`).
            crate::cpu::on_rayon(move || decode_and_check(index, &chunk, &object.bytes, check))
                .await
                .map_err(|e| ReconstructError::Store(StoreError::Task(e)))?
                .map(|decoded| (decoded, object_len))
        })
        // `buffered` yields in recipe order while fetching ahead.
        .buffered(options.max_in_flight.max(1));
    let mut keys = recipe.chunks.iter().map(|chunk| chunk.key.as_str());
    let mut seen = std::collections::HashSet::new();
    let mut stored_bytes = 0;
    while let Some((decoded, object_len)) = chunks.try_next().await? {
        if keys.next().is_some_and(|key| seen.insert(key)) {
            stored_bytes += object_len;
        }
        sha2::Digest::update(&mut hasher, &decoded);
        writer
            .write_all(&decoded)
            .await
            .map_err(RebuildError::Write)?;
        done.chunks_done += 1;
        done.bytes_done += decoded.len() as u64;
        progress(done);
    }
    Ok(Rebuilt {
        sha256: Sha256Digest::from_hasher(hasher),
        stored_bytes,
    })
}

/// Decodes one chunk object and checks it against its recipe entry as `check` says.
fn decode_and_check(
    index: usize,
    chunk: &chunk_model::RecipeChunk,
    object: &[u8],
    check: Check,
) -> Result<Vec<u8>, ReconstructError> {
    // The object comes from the bucket, i.e. from outside: a small frame must not expand
    // past the size the recipe gives the chunk (a 66 KB zstd frame holds 2 GiB of zeros).
    let most = usize::try_from(chunk.size).unwrap_or(usize::MAX);
    let decoded =
        gpu_compress::decompress_bounded(chunk.codec, object, most).map_err(|source| {
            ReconstructError::ChunkDecode {
                index,
                key: chunk.key.clone(),
                source,
            }
        })?;
    let size_matches = decoded.len() as u64 == chunk.size;
    if size_matches && check == Check::Sizes {
        return Ok(decoded);
    }
    let actual = Sha256Digest::of(&decoded);
    if actual != chunk.sha256 || !size_matches {
        return Err(ReconstructError::ChunkMismatch {
            index,
            key: chunk.key.clone(),
            offset: chunk.offset,
            expected_size: chunk.size,
            actual_size: decoded.len() as u64,
            expected: chunk.sha256,
            actual,
        });
    }
    Ok(decoded)
}
