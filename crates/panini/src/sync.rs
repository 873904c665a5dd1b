//! `sync`: marks chunks `completed` from the completion records workers leave in the
//! bucket (`status/<sha256>.json`), so that a lost or never-configured callback loses
//! nothing, and publishes the recipe of every file whose chunk objects are all stored.
//!
//! Workers publish recipes themselves as files complete; publishing here again is
//! idempotent (create-only, `uploader::publish_if_complete`) and covers files completed
//! by workers that could not publish (an older version, a failure to read the manifest).
//!
//! Records are matched by content: every chunk of the tree that is not `completed` and
//! whose `original_hash` has a record is completed with that record's upload, whichever
//! file it belongs to (identical chunks share one object). The completion itself is the
//! detector's callback logic ([`detector::apply_callback`]), so a record and a
//! `repository_dispatch` change a chunk in exactly the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use chunk_model::{ChunkCompressed, ChunkMetadata, Sha256Digest, Status, object_keys};
use detector::DetectConfig;
use serde::Serialize;
use uploader::ObjectStore;

use dispatcher::metadata::walk_to;

use crate::Error;

/// The prefix of completion records in the bucket.
pub const STATUS_PREFIX: &str = "status/";

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// Completion records of the tree's open chunks found in the bucket.
    pub records: usize,
    /// Chunks not yet `completed` when scanned.
    pub open_chunks: usize,
    /// Chunks marked `completed` by this run.
    pub completed: Vec<String>,
    /// Records or chunks that could not be used, with why; the rest went on.
    pub errors: Vec<String>,
    /// Every file of the tree and its recipe, in tree order.
    pub recipes: Vec<FileRecipe>,
}

/// Whether a file of the tree has its recipe in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecipe {
    /// The file's name (its directory under the tree).
    pub name: String,
    /// What happened.
    pub state: RecipeState,
    /// The recipe's key, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The file's SHA-256, from its manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<Sha256Digest>,
    /// Why there is none (incomplete: the first chunk not stored; or the error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// See [`FileRecipe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipeState {
    /// This sync wrote it.
    Published,
    /// It was there already.
    AlreadyPublished,
    /// Some chunk object is not stored yet.
    Incomplete,
    /// The manifest or the bucket failed.
    Failed,
}

/// Publishes the recipe of every file under `base` whose chunk objects are all in
/// `store` (see `uploader::publish_if_complete`); each file's outcome is reported, and
/// one file's failure does not stop the others.
///
/// Recipes already there (those the workers published, usually all of them) are found
/// with one `stat_many` for the whole tree; only the others go through
/// `publish_if_complete`, one file at a time.
pub async fn publish_recipes(
    base: &Path,
    store: &dyn ObjectStore,
) -> Result<Vec<FileRecipe>, Error> {
    let layout = chunk_model::Layout::new(base);
    let files: Vec<(String, Result<chunk_model::Manifest, String>)> = crate::tree::files(base)?
        .into_iter()
        .map(|file| {
            let manifest = layout
                .manifest_path(&file.name)
                .and_then(|path| chunk_model::json_file::read::<chunk_model::Manifest>(&path))
                .map_err(|e| e.to_string());
            (file.name, manifest)
        })
        .collect();
    let recipe_key = |name: &str, manifest: &Result<chunk_model::Manifest, String>| {
        let hash = manifest.as_ref().ok()?.file_hash?;
        Some(object_keys::recipe(name, &hash))
    };
    let keys: Vec<String> = files
        .iter()
        .filter_map(|(name, manifest)| recipe_key(name, manifest))
        .collect();
    let present: std::collections::HashSet<String> = keys
        .iter()
        .zip(store.stat_many(&keys).await)
        .filter(|(_, stat)| matches!(stat, Ok(Some(_))))
        .map(|(key, _)| key.clone())
        .collect();

    let mut known = uploader::KnownObjects::new();
    let mut out = Vec::with_capacity(files.len());
    for (name, manifest) in files {
        let manifest = match manifest {
            Ok(manifest) => manifest,
            Err(reason) => {
                out.push(FileRecipe {
                    name,
                    state: RecipeState::Failed,
                    key: None,
                    file_sha256: None,
                    reason: Some(reason),
                });
                continue;
            }
        };
        let published = match manifest
            .file_hash
            .map(|hash| object_keys::recipe(&name, &hash))
            .filter(|key| present.contains(key))
        {
            Some(key) => Ok(uploader::Publish::AlreadyPublished { key }),
            None => uploader::publish_if_complete(store, &name, &manifest, &mut known).await,
        };
        let (state, key, reason) = match published {
            Ok(uploader::Publish::Published { key }) => (RecipeState::Published, Some(key), None),
            Ok(uploader::Publish::AlreadyPublished { key }) => {
                (RecipeState::AlreadyPublished, Some(key), None)
            }
            Ok(uploader::Publish::Incomplete { chunk_id, missing }) => (
                RecipeState::Incomplete,
                None,
                Some(format!("chunk {chunk_id} ({missing}) is not stored")),
            ),
            Err(e) => (RecipeState::Failed, None, Some(e.to_string())),
        };
        out.push(FileRecipe {
            name,
            state,
            key,
            file_sha256: manifest.file_hash,
            reason,
        });
    }
    Ok(out)
}

/// Reads the completion records of the open chunks under `base` (the chunk tree,
/// `pending_compression`) from `store` and completes those chunks as of `now`.
///
/// Only the records of the tree's open chunks are read, by key: a sync costs what the
/// tree has open, not what the bucket holds (a bucket shared by many trees and runs may
/// hold millions of records).
pub async fn sync(
    base: &Path,
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
) -> Result<SyncReport, Error> {
    let mut report = SyncReport::default();
    let scan_base = base.to_path_buf();
    let open = tokio::task::spawn_blocking(move || open_hashes(&scan_base, now))
        .await
        .map_err(|e| Error::Task(format!("sync: {e}")))??;
    let keys: Vec<String> = open.iter().map(object_keys::status_record).collect();
    let fetched = store.get_many(&keys).await;
    let mut records: HashMap<Sha256Digest, ChunkCompressed> = HashMap::new();
    for (key, object) in keys.iter().zip(fetched) {
        let parsed = match object {
            // Not completed yet.
            Err(uploader::StoreError::NotFound { .. }) => continue,
            Err(e) => Err(e.to_string()),
            Ok(o) => serde_json::from_slice::<ChunkCompressed>(&o.bytes).map_err(|e| e.to_string()),
        };
        report.records += 1;
        let record = match parsed {
            Ok(record) => record,
            Err(e) => {
                report.errors.push(format!("{key}: {e}"));
                continue;
            }
        };
        let sha = record.original_hash.or_else(|| sha_of_key(key));
        match sha {
            Some(sha)
                if object_keys::status_record(&sha) == *key
                    && record.status == Status::Completed =>
            {
                records.insert(sha, record);
            }
            Some(_) if record.status != Status::Completed => {}
            _ => report.errors.push(format!(
                "{key}: the record's original_hash does not match its name"
            )),
        }
    }

    let base_owned = base.to_path_buf();
    let mut done = tokio::task::spawn_blocking(move || {
        // Metadata changes under the tree's lock, like a dispatch's and a callback's, so
        // that no concurrent run's read-modify-write loses this one's.
        let _lock = chunk_model::tree_lock::TreeLock::acquire(
            &base_owned,
            chunk_model::tree_lock::Wait::Timeout(chunk_model::tree_lock::DEFAULT_WAIT),
        )?;
        apply(&base_owned, &records, now, report)
    })
    .await
    .map_err(|e| Error::Task(format!("sync: {e}")))??;
    done.recipes = publish_recipes(base, store).await?;
    Ok(done)
}

/// Completes every open chunk that has a record, all in one batch of metadata writes
/// (`json_file::update_many`: one flush for the batch instead of two per chunk).
fn apply(
    base: &Path,
    records: &HashMap<Sha256Digest, ChunkCompressed>,
    now: DateTime<Utc>,
    mut report: SyncReport,
) -> Result<SyncReport, Error> {
    let config = DetectConfig {
        force: true,
        ..DetectConfig::new(base)
    };
    let scan = detector::scan(&config, now)?;
    report.open_chunks = scan.selected.len();
    // A chunk whose metadata does not parse or whose data.bin is gone is not scanned as
    // open, so no record can complete it: say so rather than leave it silently behind.
    report
        .errors
        .extend(scan.invalid.iter().map(ToString::to_string));
    let resolve = detector::metadata_resolver(base);
    // (chunk path, its metadata file, the payload to apply)
    let mut changes: Vec<(&str, PathBuf, ChunkCompressed)> = Vec::new();
    for chunk in &scan.selected {
        let Some(record) = chunk.info.hash.as_ref().and_then(|h| records.get(h)) else {
            continue;
        };
        let chunk_path = chunk.info.chunk_path.as_str();
        // The record may come from an identical chunk of another file: apply its upload
        // to this chunk.
        let payload = ChunkCompressed {
            chunk_path: chunk_path.to_owned(),
            error: None,
            ..record.clone()
        };
        let resolved = detector::check_payload(&payload).and_then(|()| resolve(chunk_path));
        match resolved {
            Ok(path) => changes.push((chunk_path, path, payload)),
            Err(e) => report.errors.push(format!("{chunk_path}: {e}")),
        }
    }
    let payloads: HashMap<&Path, &ChunkCompressed> = changes
        .iter()
        .map(|(_, path, payload)| (path.as_path(), payload))
        .collect();
    let paths: Vec<&Path> = changes.iter().map(|(_, path, _)| path.as_path()).collect();
    let written = chunk_model::json_file::update_many(&paths, |path, meta: &mut ChunkMetadata| {
        // A chunk that is `pending` or `failed` (its dispatch was never recorded, or the
        // record is for an identical chunk of another file) first takes the legal steps
        // to `queued`, from where the record may complete it; both changes are written
        // together.
        if matches!(meta.status, Status::Pending | Status::Failed) {
            walk_to(meta, Status::Queued).map_err(|source| {
                detector::CallbackError::Transition {
                    path: path.to_owned(),
                    source,
                }
            })?;
        }
        detector::apply_to_metadata(meta, payloads[path], path, now)
    });
    for ((chunk_path, ..), result) in changes.iter().zip(written) {
        match result {
            Ok(_) => report.completed.push((*chunk_path).to_owned()),
            Err(e) => report.errors.push(format!("{chunk_path}: {e}")),
        }
    }
    Ok(report)
}

/// The distinct hashes of the chunks under `base` that are not `completed`, as [`apply`]
/// scans them (without the tree's lock: `apply` scans again under it).
fn open_hashes(base: &Path, now: DateTime<Utc>) -> Result<Vec<Sha256Digest>, Error> {
    let config = DetectConfig {
        force: true,
        ..DetectConfig::new(base)
    };
    let scan = detector::scan(&config, now)?;
    let hashes: std::collections::BTreeSet<Sha256Digest> =
        scan.selected.iter().filter_map(|c| c.info.hash).collect();
    Ok(hashes.into_iter().collect())
}

fn sha_of_key(key: &str) -> Option<Sha256Digest> {
    key.strip_prefix(STATUS_PREFIX)?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunk_model::{Codec, Timestamp};
    use uploader::{LocalDir, ObjectMeta};

    /// A chunk of `bytes` under `root/pending_compression/movie/chunk_<id>` in `status`.
    fn chunk(root: &Path, id: u64, bytes: &[u8], status: Status) -> String {
        let chunk_path = format!("pending_compression/movie/chunk_{id:04}");
        let dir = root.join(&chunk_path);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data.bin"), bytes).unwrap();
        let mut meta = ChunkMetadata::new_pending(
            id,
            0,
            bytes.len() as u64,
            Sha256Digest::of(bytes),
            "FIXED_SIZE",
            None,
            Timestamp::now(),
        );
        meta.status = status;
        if status == Status::Completed {
            meta.upload_path = Some("chunks/somewhere-else".into());
            meta.upload_hash = Some(Sha256Digest::of(b"another upload"));
        }
        chunk_model::json_file::write_atomic(&dir.join("metadata.json"), &meta).unwrap();
        chunk_path
    }

    fn read(root: &Path, chunk_path: &str) -> ChunkMetadata {
        chunk_model::json_file::read(&root.join(chunk_path).join("metadata.json")).unwrap()
    }

    #[tokio::test]
    async fn records_complete_pending_and_failed_chunks_and_leave_completed_ones_alone() {
        let repo = tempfile::tempdir().unwrap();
        let bucket = tempfile::tempdir().unwrap();
        let store = LocalDir::new(bucket.path()).unwrap();
        let (a, b, c) = (
            b"chunk a".as_slice(),
            b"chunk b".as_slice(),
            b"chunk c".as_slice(),
        );
        // A chunk never dispatched, one that failed before, and one already completed
        // with another upload than its record names; the fourth has no record.
        let pending = chunk(repo.path(), 0, a, Status::Pending);
        let failed = chunk(repo.path(), 1, b, Status::Failed);
        let conflicting = chunk(repo.path(), 2, c, Status::Completed);
        let unrecorded = chunk(repo.path(), 3, b"no record", Status::Queued);
        for bytes in [a, b, c] {
            let sha = Sha256Digest::of(bytes);
            let record = ChunkCompressed {
                chunk_path: "pending_compression/other/chunk_0000".into(),
                status: Status::Completed,
                upload_path: Some(object_keys::chunk_object(&sha, Codec::Store)),
                upload_hash: Some(Sha256Digest::of(bytes)),
                original_hash: Some(sha),
                worker_id: Some("w1".into()),
                error: None,
                stats: serde_json::Value::Null,
            };
            let json = serde_json::to_vec(&record).unwrap();
            store
                .put(
                    &object_keys::status_record(&sha),
                    json.clone().into(),
                    &ObjectMeta::plain(&json),
                )
                .await
                .unwrap();
        }
        let conflicting_before =
            std::fs::read(repo.path().join(&conflicting).join("metadata.json")).unwrap();

        let base = repo.path().join("pending_compression");
        let report = sync(&base, &store, Utc::now()).await.unwrap();

        // The completed chunk's record is not even read: only open chunks' are.
        assert_eq!(report.records, 2);
        assert_eq!(report.open_chunks, 3, "{report:?}");
        let mut completed = report.completed.clone();
        completed.sort();
        assert_eq!(completed, [pending.clone(), failed.clone()], "{report:?}");
        assert!(report.errors.is_empty(), "{report:?}");
        for (chunk_path, bytes) in [(&pending, a), (&failed, b)] {
            let meta = read(repo.path(), chunk_path);
            let sha = Sha256Digest::of(bytes);
            assert_eq!(meta.status, Status::Completed, "{chunk_path}");
            assert_eq!(
                meta.upload_path,
                Some(object_keys::chunk_object(&sha, Codec::Store))
            );
            assert_eq!(meta.worker_id.as_deref(), Some("w1"));
            assert!(meta.compressed_at.is_some());
        }
        assert_eq!(
            std::fs::read(repo.path().join(&conflicting).join("metadata.json")).unwrap(),
            conflicting_before,
            "a completed chunk is not completed again"
        );
        assert_eq!(read(repo.path(), &unrecorded).status, Status::Queued);
    }
}
