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
/// `store` (the checks of `uploader::publish_if_complete`); each file's outcome is
/// reported, and one file's failure does not stop the others.
///
/// The files are checked together (`uploader::prepare_recipes`: one `stat_many` finds
/// the recipes already there, usually all of them, as the workers publish them), and the
/// recipes found ready are written together (`uploader::publish_prepared`: one batch,
/// one flush on a local directory, however many files the tree holds).
pub async fn publish_recipes(
    base: &Path,
    store: &dyn ObjectStore,
) -> Result<Vec<FileRecipe>, Error> {
    publish_recipes_except(base, store, |_| false).await
}

/// [`publish_recipes`] for the files whose names `skip` does not pick, the only ones
/// reported: the pipeline skips the files it rebuilt from their recipes while the
/// workers ran, whose recipes are known to be there.
pub async fn publish_recipes_except(
    base: &Path,
    store: &dyn ObjectStore,
    skip: impl Fn(&str) -> bool,
) -> Result<Vec<FileRecipe>, Error> {
    let files: Vec<(String, Result<chunk_model::Manifest, String>)> =
        crate::tree::manifests_except(base, skip)?
            .into_iter()
            .map(|(name, manifest)| (name, manifest.map_err(|e| e.to_string())))
            .collect();
    let readable: Vec<(&str, &chunk_model::Manifest)> = files
        .iter()
        .filter_map(|(name, manifest)| Some((name.as_str(), manifest.as_ref().ok()?)))
        .collect();
    let mut known = uploader::KnownObjects::new();
    let prepared = uploader::prepare_recipes(store, &readable, &mut known).await;
    // The ready recipes are written in one batch; each outcome goes back to its file.
    let mut ready = Vec::new();
    let mut checked: Vec<Option<Result<uploader::Publish, String>>> = prepared
        .into_iter()
        .map(|prepared| match prepared {
            Ok(uploader::Prepared::Ready(recipe)) => {
                ready.push(recipe);
                None
            }
            Ok(uploader::Prepared::Settled(publish)) => Some(Ok(publish)),
            Err(e) => Some(Err(e.to_string())),
        })
        .collect();
    let mut written = uploader::publish_prepared(store, &ready)
        .await
        .into_iter()
        .map(|outcome| outcome.map_err(|e| e.to_string()));
    for slot in checked.iter_mut().filter(|slot| slot.is_none()) {
        *slot = written.next();
    }

    let mut checked = checked.into_iter();
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
        let published = checked
            .next()
            .flatten()
            .unwrap_or_else(|| Err("the recipe batch gave no outcome".into()));
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
            Err(reason) => (RecipeState::Failed, None, Some(reason)),
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

/// How many open chunks a sync completes at a time. Each page's records are fetched, and
/// its metadata read, changed and written back (one flush), before the next page is
/// read: what a sync holds (a record, a metadata document and its new JSON, a few KiB
/// per chunk) is bounded by the page, not by the tree (issue #17).
const SYNC_PAGE: usize = 1024;

/// Reads the completion records of the open chunks under `base` (the chunk tree,
/// `pending_compression`) from `store` and completes those chunks as of `now`.
///
/// Only the records of the tree's open chunks are read, by key: a sync costs what the
/// tree has open, not what the bucket holds (a bucket shared by many trees and runs may
/// hold millions of records). They are read and applied a page of chunks at a time, so
/// a tree of any size is synced in bounded memory.
pub async fn sync(
    base: &Path,
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
) -> Result<SyncReport, Error> {
    let mut report = complete_from_records(base, store, now).await?;
    report.recipes = publish_recipes(base, store).await?;
    Ok(report)
}

/// [`sync`] without publishing recipes (its report lists none): for a caller that syncs
/// again and again while workers run and publishes the recipes once at the end (the
/// pipeline), since reading every file's manifest each time costs a read per file.
pub async fn complete_from_records(
    base: &Path,
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
) -> Result<SyncReport, Error> {
    complete_in_pages(base, store, now, SYNC_PAGE).await
}

/// [`complete_from_records`], `page` open chunks at a time.
async fn complete_in_pages(
    base: &Path,
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
    page: usize,
) -> Result<SyncReport, Error> {
    let mut report = SyncReport::default();
    let scan_base = base.to_path_buf();
    let open = tokio::task::spawn_blocking(move || open_chunks(&scan_base, now))
        .await
        .map_err(|e| Error::Task(format!("sync: {e}")))??;
    report.open_chunks = open.chunks.len();
    report.errors.extend(open.invalid);
    let mut rest = open.chunks.as_slice();
    while !rest.is_empty() {
        // A page ends between two hashes, so that each record is read (and counted) once.
        let mut end = page.clamp(1, rest.len());
        while end < rest.len() && rest[end].0 == rest[end - 1].0 {
            end += 1;
        }
        let (chunks, tail) = rest.split_at(end);
        rest = tail;
        let records = read_records(store, chunks, &mut report).await;
        // The record may come from an identical chunk of another file: its upload is
        // applied to each chunk with that content.
        let changes: Vec<(String, ChunkCompressed)> = chunks
            .iter()
            .filter_map(|(hash, chunk_path)| {
                let record = records.get(hash)?;
                let payload = ChunkCompressed {
                    chunk_path: chunk_path.clone(),
                    error: None,
                    ..record.clone()
                };
                Some((chunk_path.clone(), payload))
            })
            .collect();
        drop(records);
        if changes.is_empty() {
            continue;
        }
        let base_owned = base.to_path_buf();
        let (completed, errors) = tokio::task::spawn_blocking(move || {
            // Metadata changes under the tree's lock, like a dispatch's and a callback's,
            // so that no concurrent run's read-modify-write loses this one's.
            let _lock = chunk_model::tree_lock::TreeLock::acquire(
                &base_owned,
                chunk_model::tree_lock::Wait::Timeout(chunk_model::tree_lock::DEFAULT_WAIT),
            )?;
            Ok::<_, Error>(apply(&base_owned, changes, now))
        })
        .await
        .map_err(|e| Error::Task(format!("sync: {e}")))??;
        report.completed.extend(completed);
        report.errors.extend(errors);
    }
    Ok(report)
}

/// The open chunks of a tree, as a sync reads them.
struct OpenChunks {
    /// (content hash, chunk path) of every chunk not `completed`, sorted by hash so that
    /// a page asks for each record once.
    chunks: Vec<(Sha256Digest, String)>,
    /// Metadata that could not be used, with why.
    invalid: Vec<String>,
}

/// The chunks under `base` that are not `completed` (a scan without the tree's lock:
/// [`apply`] reads each chunk again under it).
fn open_chunks(base: &Path, now: DateTime<Utc>) -> Result<OpenChunks, Error> {
    let config = DetectConfig {
        force: true,
        ..DetectConfig::new(base)
    };
    let scan = detector::scan(&config, now)?;
    let mut chunks: Vec<(Sha256Digest, String)> = scan
        .selected
        .into_iter()
        .filter_map(|chunk| Some((chunk.info.hash?, chunk.info.chunk_path)))
        .collect();
    chunks.sort_unstable();
    // A chunk whose metadata does not parse or whose data.bin is gone is not scanned as
    // open, so no record can complete it: say so rather than leave it silently behind.
    let invalid = scan.invalid.iter().map(ToString::to_string).collect();
    Ok(OpenChunks { chunks, invalid })
}

/// Reads the completion records of `chunks` (one `get_many`), counting what it finds in
/// `report` and naming each record it cannot use; returns the usable ones by hash.
async fn read_records(
    store: &dyn ObjectStore,
    chunks: &[(Sha256Digest, String)],
    report: &mut SyncReport,
) -> HashMap<Sha256Digest, ChunkCompressed> {
    let mut hashes: Vec<&Sha256Digest> = chunks.iter().map(|(hash, _)| hash).collect();
    hashes.dedup();
    let keys: Vec<String> = hashes.into_iter().map(object_keys::status_record).collect();
    let fetched = store.get_many(&keys).await;
    let mut records = HashMap::new();
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
    records
}

/// Completes the chunks of `changes` (chunk path, the record to apply), all in one batch
/// of metadata writes (`json_file::update_many`: one flush for the batch instead of two
/// per chunk). Returns the chunks completed and, for each one that was not, why.
///
/// Each chunk is read again here, under the tree's lock: one completed since the scan
/// (by a callback or a concurrent sync) is left as it is.
fn apply(
    base: &Path,
    changes: Vec<(String, ChunkCompressed)>,
    now: DateTime<Utc>,
) -> (Vec<String>, Vec<String>) {
    let (mut completed, mut errors) = (Vec::new(), Vec::new());
    let resolve = detector::metadata_resolver(base);
    // (chunk path, its metadata file, the payload to apply)
    let mut resolved: Vec<(String, PathBuf, ChunkCompressed)> = Vec::with_capacity(changes.len());
    for (chunk_path, payload) in changes {
        match detector::check_payload(&payload).and_then(|()| resolve(&chunk_path)) {
            Ok(path) => resolved.push((chunk_path, path, payload)),
            Err(e) => errors.push(format!("{chunk_path}: {e}")),
        }
    }
    let payloads: HashMap<&Path, &ChunkCompressed> = resolved
        .iter()
        .map(|(_, path, payload)| (path.as_path(), payload))
        .collect();
    let paths: Vec<&Path> = resolved.iter().map(|(_, path, _)| path.as_path()).collect();
    let written = chunk_model::json_file::update_many(&paths, |path, meta: &mut ChunkMetadata| {
        if meta.status == Status::Completed {
            return Ok(None);
        }
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
        detector::apply_to_metadata(meta, payloads[path], path, now).map(Some)
    });
    for ((chunk_path, ..), result) in resolved.iter().zip(written) {
        match result {
            Ok(Some(_)) => completed.push(chunk_path.clone()),
            Ok(None) => {}
            Err(e) => errors.push(format!("{chunk_path}: {e}")),
        }
    }
    (completed, errors)
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

    #[tokio::test]
    async fn a_tree_larger_than_a_page_is_synced_page_by_page() {
        let repo = tempfile::tempdir().unwrap();
        let bucket = tempfile::tempdir().unwrap();
        let store = LocalDir::new(bucket.path()).unwrap();
        // Seven open chunks, two pairs of them with the same content (one record each),
        // and one without a record, synced two chunks at a time.
        let contents: [&[u8]; 7] = [b"a", b"b", b"b", b"c", b"d", b"d", b"no record"];
        let paths: Vec<String> = contents
            .iter()
            .enumerate()
            .map(|(id, bytes)| chunk(repo.path(), id as u64, bytes, Status::Queued))
            .collect();
        for bytes in [b"a", b"b", b"c", b"d"] {
            let sha = Sha256Digest::of(bytes);
            let record = ChunkCompressed {
                chunk_path: "pending_compression/other/chunk_0000".into(),
                status: Status::Completed,
                upload_path: Some(object_keys::chunk_object(&sha, Codec::Store)),
                upload_hash: Some(sha),
                original_hash: Some(sha),
                worker_id: Some("w1".into()),
                error: None,
                stats: serde_json::Value::Null,
            };
            let json = serde_json::to_vec(&record).unwrap();
            let meta = ObjectMeta::plain(&json);
            store
                .put(&object_keys::status_record(&sha), json.into(), &meta)
                .await
                .unwrap();
        }

        let base = repo.path().join("pending_compression");
        let report = complete_in_pages(&base, &store, Utc::now(), 2)
            .await
            .unwrap();

        assert_eq!(report.records, 4, "each record read once: {report:?}");
        assert_eq!(report.open_chunks, 7);
        assert!(report.errors.is_empty(), "{report:?}");
        let mut completed = report.completed.clone();
        completed.sort();
        assert_eq!(completed, paths[..6]);
        for (path, bytes) in paths.iter().zip(contents).take(6) {
            let meta = read(repo.path(), path);
            assert_eq!(meta.status, Status::Completed, "{path}");
            let sha = Sha256Digest::of(bytes);
            assert_eq!(
                meta.upload_path,
                Some(object_keys::chunk_object(&sha, Codec::Store))
            );
        }
        assert_eq!(read(repo.path(), &paths[6]).status, Status::Queued);
    }
}
