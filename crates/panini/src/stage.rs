//! `stage`: a chunk's raw bytes travel through the bucket instead of git.
//!
//! Git keeps every committed `data.bin` in history forever, so a repository that carries
//! raw chunks grows by the size of everything it ever chunked. Staging uploads the
//! `data.bin` of every `pending` chunk create-only to `staging/<sha256>`
//! ([`chunk_model::object_keys::staged_object`]), records that key in the chunk's
//! `metadata.json` (`staged_object`) and removes the `data.bin`: what is committed is
//! then metadata alone, a few hundred bytes per chunk. Workers read a staged chunk from
//! their bucket and check its SHA-256 (no git access for the bytes); detect, dispatch,
//! leases and callbacks are the same for both transports, and a tree may mix them.
//!
//! Each step is safe to interrupt, so running `stage` again resumes:
//! 1. the upload is create-only and verified (an object already there is checked to hold
//!    the same bytes, and counted as already staged);
//! 2. `metadata.json` is rewritten atomically, for the whole batch with one flush, only
//!    after its chunk's upload succeeded;
//! 3. `data.bin` is removed only after its metadata is durable. A chunk found with both a
//!    key and a `data.bin` (interrupted between 2 and 3) gets its object checked again
//!    before the `data.bin` goes.
//!
//! Chunks in other states are left alone: a `queued` chunk may be on its way to a
//! worker that reads `data.bin`, and a completed one is `prune`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chunk_model::layout::DATA_FILE;
use chunk_model::tree_lock::{DEFAULT_WAIT, TreeLock, Wait};
use chunk_model::{ChunkMetadata, Codec, Sha256Digest, Status, json_file, object_keys};
use futures::StreamExt as _;
use schemars::JsonSchema;
use serde::Serialize;
use uploader::{ObjectMeta, ObjectStore, PutOutcome};

use crate::Error;

/// Uploads in flight when none is set: enough to hide a bucket's latency, few enough
/// that memory stays at a few chunks.
pub const DEFAULT_STAGE_CONCURRENCY: usize = 8;

/// How [`stage`] runs.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Chunks read and uploaded at once (each is held in memory while it is).
    pub concurrency: usize,
}

impl Default for StageOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_STAGE_CONCURRENCY,
        }
    }
}

/// What a [`stage`] run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
// Named apart from the pipeline's table row (`pipeline::StageReport`) in the schemas
// that hold both.
#[schemars(rename = "StagingReport")]
pub struct StageReport {
    /// The bucket staged into.
    pub bucket: String,
    /// `pending` chunks that still had a `data.bin` or an unfinished staging.
    pub chunks: usize,
    /// Chunks uploaded by this run.
    pub uploaded: usize,
    /// Chunks whose object was there already (an identical chunk, or an interrupted run).
    pub already_staged: usize,
    /// Bytes uploaded by this run.
    pub bytes_uploaded: u64,
    /// `data.bin` files removed from the tree.
    pub data_files_removed: usize,
    /// Bytes those files held.
    pub bytes_removed: u64,
    /// Chunks that could not be staged, with why (`<chunk path>: <reason>`); their
    /// `data.bin` is kept and the rest went on.
    pub errors: Vec<String>,
}

/// One chunk to stage, from the scan.
struct Candidate {
    chunk_path: String,
    dir: PathBuf,
    size: u64,
    hash: Sha256Digest,
    /// The key its metadata already records (an interrupted run).
    recorded: Option<String>,
}

/// What happened to one chunk's bytes.
enum Uploaded {
    /// In the bucket (put now, or there already); the metadata may now say so.
    Staged {
        candidate: Candidate,
        outcome: PutOutcome,
    },
    /// The metadata already names the object, which is there: only `data.bin` is left.
    Recorded(Candidate),
    /// Nothing to do: recorded and no `data.bin` (staged earlier).
    Done,
    Failed(String),
}

/// Stages every `pending` chunk under `base` (`pending_compression`) into `store`. See
/// the module documentation for the steps and why each is safe to interrupt.
///
/// Holds the tree's lock throughout. Problems with single chunks are reported in
/// [`StageReport::errors`]; the error is for the run as a whole (the tree cannot be
/// scanned or locked).
pub async fn stage(
    base: &Path,
    store: Arc<dyn ObjectStore>,
    options: &StageOptions,
) -> Result<StageReport, Error> {
    let base_owned = base.to_path_buf();
    let (lock, (candidates, problems)) = tokio::task::spawn_blocking(move || {
        let lock = TreeLock::acquire(&base_owned, Wait::Timeout(DEFAULT_WAIT))?;
        let candidates = candidates(&base_owned)?;
        Ok::<_, Error>((lock, candidates))
    })
    .await
    .map_err(|e| Error::Task(format!("stage: {e}")))??;

    let mut report = StageReport {
        bucket: store.url(),
        chunks: candidates.len(),
        errors: problems,
        ..StageReport::default()
    };
    let uploaded: Vec<Uploaded> = futures::stream::iter(candidates)
        .map(|candidate| {
            let store = store.clone();
            async move { upload(store.as_ref(), candidate).await }
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;

    let mut to_record = Vec::new();
    let mut to_remove = Vec::new();
    for item in uploaded {
        match item {
            Uploaded::Staged { candidate, outcome } => {
                match outcome {
                    PutOutcome::Created => {
                        report.uploaded += 1;
                        report.bytes_uploaded += candidate.size;
                    }
                    PutOutcome::AlreadyExists => report.already_staged += 1,
                }
                to_record.push(candidate);
            }
            Uploaded::Recorded(candidate) => {
                report.already_staged += 1;
                to_remove.push(candidate);
            }
            Uploaded::Done => report.already_staged += 1,
            Uploaded::Failed(reason) => report.errors.push(reason),
        }
    }

    let report = tokio::task::spawn_blocking(move || {
        let paths: Vec<PathBuf> = to_record
            .iter()
            .map(|c| c.dir.join(chunk_model::layout::METADATA_FILE))
            .collect();
        let written = json_file::update_many(&paths, |_, meta: &mut ChunkMetadata| {
            // Under the lock nothing else changes the tree, but a chunk whose metadata no
            // longer matches the bytes just uploaded keeps its data.bin.
            if meta.status != Status::Pending {
                return Ok::<_, Error>(Err(format!("it is {}", meta.status)));
            }
            meta.staged_object = Some(object_keys::staged_object(&meta.original_hash));
            Ok(Ok(()))
        });
        for (candidate, written) in to_record.into_iter().zip(written) {
            match written {
                Ok(Ok(())) => to_remove.push(candidate),
                Ok(Err(why)) => report.errors.push(format!(
                    "{}: {why}, not pending; its {DATA_FILE} is kept",
                    candidate.chunk_path
                )),
                Err(e) => report.errors.push(format!("{}: {e}", candidate.chunk_path)),
            }
        }
        remove_data_files(to_remove, report)
    })
    .await
    .map_err(|e| Error::Task(format!("stage: {e}")))?;
    drop(lock);
    Ok(report)
}

/// Removes the `data.bin` of chunks whose metadata now names their staged object.
fn remove_data_files(chunks: Vec<Candidate>, mut report: StageReport) -> StageReport {
    for candidate in chunks {
        let path = candidate.dir.join(DATA_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                report.data_files_removed += 1;
                report.bytes_removed += candidate.size;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report.errors.push(format!(
                "{}: removing {DATA_FILE}: {e}",
                candidate.chunk_path
            )),
        }
    }
    report
}

/// The `pending` chunks of the tree with bytes still to stage or a `data.bin` still to
/// remove, from the detector's scan (which checks each `data.bin` against its metadata).
fn candidates(base: &Path) -> Result<(Vec<Candidate>, Vec<String>), Error> {
    let config = detector::DetectConfig {
        force: true,
        max_attempts: 0,
        ..detector::DetectConfig::new(base)
    };
    let scan = detector::scan(&config, chrono::Utc::now())?;
    let resolve = detector::metadata_resolver(base);
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for chunk in scan.selected {
        if chunk.status != Status::Pending {
            continue;
        }
        let Some(hash) = chunk.info.hash else {
            continue;
        };
        let metadata = match resolve(&chunk.info.chunk_path) {
            Ok(path) => path,
            Err(e) => {
                problems.push(format!("{}: {e}", chunk.info.chunk_path));
                continue;
            }
        };
        let dir = metadata
            .parent()
            .expect("a metadata path has a parent")
            .to_path_buf();
        out.push(Candidate {
            chunk_path: chunk.info.chunk_path,
            dir,
            size: chunk.info.size,
            hash,
            recorded: chunk.info.staged_object,
        });
    }
    Ok((out, problems))
}

async fn upload(store: &dyn ObjectStore, candidate: Candidate) -> Uploaded {
    let key = object_keys::staged_object(&candidate.hash);
    let chunk_path = candidate.chunk_path.clone();
    let failed = |why: String| Uploaded::Failed(format!("{chunk_path}: {why}"));
    let data_path = candidate.dir.join(DATA_FILE);
    if candidate.recorded.is_some() {
        // Interrupted after the metadata was written: the data.bin goes only if the
        // object it duplicates is there and whole.
        if !data_path.exists() {
            return Uploaded::Done;
        }
        return match store.stat(&key).await {
            Ok(Some(info)) if info.size == candidate.size => Uploaded::Recorded(candidate),
            Ok(Some(info)) => failed(format!(
                "{key} is {} bytes, not {}; {DATA_FILE} kept",
                info.size, candidate.size
            )),
            Ok(None) => failed(format!(
                "metadata names {key}, which the bucket does not have; {DATA_FILE} kept \
                 (remove staged_object from metadata.json to stage it again)"
            )),
            Err(e) => failed(format!("{e}; {DATA_FILE} kept")),
        };
    }
    let (size, hash) = (candidate.size, candidate.hash);
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let bytes = std::fs::read(&data_path)
            .map_err(|e| format!("reading {}: {e}", data_path.display()))?;
        let actual = Sha256Digest::of(&bytes);
        if bytes.len() as u64 != size || actual != hash {
            return Err(format!(
                "{DATA_FILE} is {} bytes with SHA-256 {actual}, but its metadata says {size} \
                 bytes with {hash}; not staged",
                bytes.len()
            ));
        }
        Ok(bytes)
    })
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(why)) => return failed(why),
        Err(e) => return failed(format!("reading failed: {e}")),
    };
    let meta = ObjectMeta {
        codec: Codec::Store,
        original_size: size,
        original_sha256: hash,
    };
    match store.put(&key, bytes.into(), &meta).await {
        Ok(outcome) => Uploaded::Staged { candidate, outcome },
        Err(e) => failed(format!("uploading {key}: {e}")),
    }
}
