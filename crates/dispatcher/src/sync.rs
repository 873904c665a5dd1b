//! `sync`: marks chunks `completed` from the completion records workers leave in the
//! bucket (`status/<sha256>.json`), so that a lost or never-configured callback loses
//! nothing.
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
use futures::StreamExt as _;
use serde::Serialize;
use uploader::ObjectStore;

use crate::DispatchError;
use crate::metadata::{MetadataError, walk_to};

/// The prefix of completion records in the bucket.
pub const STATUS_PREFIX: &str = "status/";

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// Completion records found in the bucket.
    pub records: usize,
    /// Chunks not yet `completed` when scanned.
    pub open_chunks: usize,
    /// Chunks marked `completed` by this run.
    pub completed: Vec<String>,
    /// Records or chunks that could not be used, with why; the rest went on.
    pub errors: Vec<String>,
}

/// Reads every completion record of `store` and completes the matching chunks under
/// `base` (the chunk tree, `pending_compression`) as of `now`.
pub async fn sync(
    base: &Path,
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
) -> Result<SyncReport, DispatchError> {
    let mut report = SyncReport::default();
    let listed = store.list(STATUS_PREFIX).await?;
    report.records = listed.len();
    let fetched: Vec<_> = futures::stream::iter(listed)
        .map(|info| async move {
            let object = store.get(&info.key).await;
            (info.key, object)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut records: HashMap<Sha256Digest, ChunkCompressed> = HashMap::new();
    for (key, object) in fetched {
        let parsed = object.map_err(|e| e.to_string()).and_then(|o| {
            serde_json::from_slice::<ChunkCompressed>(&o.bytes).map_err(|e| e.to_string())
        });
        let record = match parsed {
            Ok(record) => record,
            Err(e) => {
                report.errors.push(format!("{key}: {e}"));
                continue;
            }
        };
        let sha = record.original_hash.or_else(|| sha_of_key(&key));
        match sha {
            Some(sha)
                if object_keys::status_record(&sha) == key
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
    let done = tokio::task::spawn_blocking(move || apply(&base_owned, &records, now, report))
        .await
        .map_err(|e| DispatchError::InvalidConfig(format!("sync task failed: {e}")))??;
    Ok(done)
}

fn apply(
    base: &Path,
    records: &HashMap<Sha256Digest, ChunkCompressed>,
    now: DateTime<Utc>,
    mut report: SyncReport,
) -> Result<SyncReport, DispatchError> {
    let config = DetectConfig {
        force: true,
        ..DetectConfig::new(base)
    };
    let scan = detector::scan(&config, now)?;
    report.open_chunks = scan.selected.len();
    for chunk in &scan.selected {
        let Some(record) = chunk.info.hash.as_ref().and_then(|h| records.get(h)) else {
            continue;
        };
        match complete(base, &chunk.info.chunk_path, record, now) {
            Ok(()) => report.completed.push(chunk.info.chunk_path.clone()),
            Err(e) => report
                .errors
                .push(format!("{}: {e}", chunk.info.chunk_path)),
        }
    }
    Ok(report)
}

fn complete(
    base: &Path,
    chunk_path: &str,
    record: &ChunkCompressed,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let path: PathBuf = detector::resolve_metadata(base, chunk_path).map_err(|e| e.to_string())?;
    // A chunk that is `pending` or `failed` (its dispatch was never recorded, or the
    // record is for an identical chunk of another file) first takes the legal steps to
    // `queued`, from where the callback may complete it.
    chunk_model::json_file::update(&path, |meta: &mut ChunkMetadata| {
        if matches!(meta.status, Status::Pending | Status::Failed) {
            walk_to(meta, Status::Queued).map_err(|source| MetadataError::Transition {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok::<_, MetadataError>(())
    })
    .map_err(|e| e.to_string())?;
    // The record may come from an identical chunk of another file: apply its upload to
    // this chunk.
    let payload = ChunkCompressed {
        chunk_path: chunk_path.to_owned(),
        error: None,
        ..record.clone()
    };
    detector::apply_callback(base, &payload, now).map_err(|e| e.to_string())?;
    Ok(())
}

fn sha_of_key(key: &str) -> Option<Sha256Digest> {
    key.strip_prefix(STATUS_PREFIX)?
        .strip_suffix(".json")?
        .parse()
        .ok()
}
