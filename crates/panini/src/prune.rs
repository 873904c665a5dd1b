//! `prune`: frees the raw bytes a completed chunk no longer needs, in the tree and in
//! the bucket, once the bucket is known to hold the chunk.
//!
//! - the `data.bin` of every `completed` chunk goes from the tree (its `metadata.json`
//!   and the file's `manifest.json` stay, so status and reconstruction still work);
//! - the staged object `staging/<sha256>` of every chunk goes from the bucket.
//!
//! Nothing is removed on the word of metadata alone: a chunk's raw bytes go only after
//! its compressed object has been read back and decoded to the chunk's SHA-256
//! ([`uploader::check_chunk_object`]), so a file can always be rebuilt afterwards. A
//! staged object also stays while any chunk of the tree with the same content is not
//! completed (a worker may still need it), and staged objects no chunk of the tree names
//! (from trees pruned or deleted before) go by the same check.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chunk_model::layout::{self, DATA_FILE, METADATA_FILE};
use chunk_model::tree_lock::{DEFAULT_WAIT, TreeLock, Wait};
use chunk_model::{ChunkMetadata, Codec, Sha256Digest, Status, json_file, object_keys};
use futures::StreamExt as _;
use schemars::JsonSchema;
use serde::Serialize;
use uploader::{ChunkObject, ObjectStore};

use crate::Error;

/// Chunk objects checked at once.
pub const DEFAULT_PRUNE_CONCURRENCY: usize = 8;

/// How [`prune`] runs.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Report what would be freed, remove nothing.
    pub dry_run: bool,
    /// Chunk objects read and checked at once.
    pub concurrency: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            concurrency: DEFAULT_PRUNE_CONCURRENCY,
        }
    }
}

/// What a [`prune`] run freed (or, with `dry_run`, would free).
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct PruneReport {
    /// The bucket checked.
    pub bucket: String,
    /// Nothing was removed.
    pub dry_run: bool,
    /// Completed chunks in the tree.
    pub completed_chunks: usize,
    /// `data.bin` files removed from the tree.
    pub data_files_removed: usize,
    /// Bytes those files held.
    pub data_bytes_freed: u64,
    /// Staged objects deleted from the bucket.
    pub staged_objects_deleted: usize,
    /// Bytes those objects held.
    pub staged_bytes_freed: u64,
    /// Staged objects kept because a chunk with that content is not completed yet.
    pub staged_objects_still_needed: usize,
    /// What was kept because its chunk object is missing or does not verify, and other
    /// problems (`<chunk path or key>: <reason>`); the rest went on.
    pub kept: Vec<String>,
}

/// One chunk of the tree, as prune sees it.
struct TreeChunk {
    chunk_path: String,
    dir: PathBuf,
    meta: ChunkMetadata,
}

/// Prunes the tree at `base` (`pending_compression`) and the staged objects of `store`;
/// see the module documentation. Holds the tree's lock throughout.
pub async fn prune(
    base: &Path,
    store: Arc<dyn ObjectStore>,
    options: &PruneOptions,
) -> Result<PruneReport, Error> {
    let base_owned = base.to_path_buf();
    let (lock, chunks, mut kept) = tokio::task::spawn_blocking(move || {
        let lock = TreeLock::acquire(&base_owned, Wait::Timeout(DEFAULT_WAIT))?;
        let (chunks, problems) = tree_chunks(&base_owned)?;
        Ok::<_, Error>((lock, chunks, problems))
    })
    .await
    .map_err(|e| Error::Task(format!("prune: {e}")))??;

    // Content still to be compressed keeps its staged bytes.
    let needed: HashSet<Sha256Digest> = chunks
        .iter()
        .filter(|c| c.meta.status != Status::Completed)
        .map(|c| c.meta.original_hash)
        .collect();
    let completed: Vec<&TreeChunk> = chunks
        .iter()
        .filter(|c| c.meta.status == Status::Completed)
        .collect();

    // Each distinct content is checked once, under the codec its upload names.
    let mut to_check: BTreeMap<Sha256Digest, (u64, Option<Codec>)> = BTreeMap::new();
    for chunk in &completed {
        let codec = chunk
            .meta
            .upload_path
            .as_deref()
            .and_then(object_keys::parse_chunk_object)
            .filter(|(sha, _)| *sha == chunk.meta.original_hash)
            .map(|(_, codec)| codec);
        to_check
            .entry(chunk.meta.original_hash)
            .or_insert((chunk.meta.size, codec));
    }
    let staged = store.list(object_keys::STAGING_PREFIX).await?;
    let mut staged_sizes: HashMap<Sha256Digest, u64> = HashMap::new();
    for info in &staged {
        match object_keys::parse_staged_object(&info.key) {
            Some(sha) => {
                staged_sizes.insert(sha, info.size);
                // A staged object of no completed chunk here: its content's own size is
                // the object's (staged bytes are stored as they are).
                if !needed.contains(&sha) {
                    to_check.entry(sha).or_insert((info.size, None));
                }
            }
            None => kept.push(format!("{}: not a staging key; left alone", info.key)),
        }
    }

    let checks: HashMap<Sha256Digest, Result<ChunkObject, String>> =
        futures::stream::iter(to_check)
            .map(|(sha, (size, codec))| {
                let store = store.clone();
                async move {
                    let checked = uploader::check_chunk_object(store.as_ref(), &sha, size, codec)
                        .await
                        .map_err(|e| e.to_string());
                    (sha, checked)
                }
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
    let stored = |sha: &Sha256Digest| -> Result<(), String> {
        match checks.get(sha) {
            Some(Ok(ChunkObject::Good { .. })) => Ok(()),
            Some(Ok(ChunkObject::Missing)) => Err(format!(
                "no chunk object for {sha} in the bucket (chunks/{sha}.*)"
            )),
            Some(Ok(ChunkObject::Corrupt(why))) => Err(why.clone()),
            Some(Err(e)) => Err(e.clone()),
            None => Err("not checked".into()),
        }
    };

    let mut report = PruneReport {
        bucket: store.url(),
        dry_run: options.dry_run,
        completed_chunks: completed.len(),
        ..PruneReport::default()
    };

    // The tree: data.bin of completed chunks whose object verifies.
    let mut data_files = Vec::new();
    for chunk in &completed {
        let path = chunk.dir.join(DATA_FILE);
        let Ok(file) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        match stored(&chunk.meta.original_hash) {
            Ok(()) if file.is_file() => data_files.push((path, file.len())),
            Ok(()) => kept.push(format!(
                "{}/{DATA_FILE}: not a regular file; left alone",
                chunk.chunk_path
            )),
            Err(why) => kept.push(format!("{}: {why}; {DATA_FILE} kept", chunk.chunk_path)),
        }
    }
    for (path, len) in data_files {
        if !options.dry_run
            && let Err(e) = std::fs::remove_file(&path)
        {
            kept.push(format!("{}: {e}", path.display()));
            continue;
        }
        report.data_files_removed += 1;
        report.data_bytes_freed += len;
    }

    // The bucket: staged objects whose content is stored and needed by no open chunk.
    for (sha, size) in staged_sizes {
        let key = object_keys::staged_object(&sha);
        if needed.contains(&sha) {
            report.staged_objects_still_needed += 1;
            continue;
        }
        if let Err(why) = stored(&sha) {
            kept.push(format!("{key}: {why}; kept"));
            continue;
        }
        if !options.dry_run {
            match store.delete(&key).await {
                Ok(true) => {}
                // Gone meanwhile (another prune): nothing freed by this one.
                Ok(false) => continue,
                Err(e) => {
                    kept.push(format!("{key}: {e}"));
                    continue;
                }
            }
        }
        report.staged_objects_deleted += 1;
        report.staged_bytes_freed += size;
    }
    kept.sort();
    report.kept = kept;
    drop(lock);
    Ok(report)
}

/// Every chunk of the tree with its metadata, walking each file's directory (completed
/// chunks included, which the detector's scan skips). Unreadable metadata is reported
/// and its chunk left alone, as are the completed chunks of a file without a readable
/// manifest.
fn tree_chunks(base: &Path) -> Result<(Vec<TreeChunk>, Vec<String>), Error> {
    let root_name = base
        .file_name()
        .map_or_else(|| layout::DEFAULT_ROOT.into(), |n| n.to_string_lossy());
    let mut chunks = Vec::new();
    let mut problems = Vec::new();
    for file in crate::tree::files(base)? {
        // A file whose manifest is missing or unreadable may need its bytes to be cut or
        // published again: its completed chunks are left out, so that none of its
        // data.bin goes (its open chunks still count, keeping their staged objects).
        let keep_completed = match file.error {
            Some(error) => {
                problems.push(format!("{error}; its chunks' {DATA_FILE} kept"));
                true
            }
            None => false,
        };
        let dir = base.join(&file.name);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Real directories only: a link could lead the removal out of the tree.
            if layout::parse_chunk_dir_name(&name).is_some()
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let chunk_dir = dir.join(&name);
            let chunk_path = format!("{root_name}/{}/{name}", file.name);
            match json_file::read::<ChunkMetadata>(&chunk_dir.join(METADATA_FILE)) {
                Ok(meta) if keep_completed && meta.status == Status::Completed => {}
                Ok(meta) => chunks.push(TreeChunk {
                    chunk_path,
                    dir: chunk_dir,
                    meta,
                }),
                Err(e) => problems.push(format!("{chunk_path}: {e}; left alone")),
            }
        }
    }
    Ok((chunks, problems))
}
