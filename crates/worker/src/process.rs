//! The work loop: take queued chunks in batches, read and check them, compress what is
//! not stored yet in one `gpu-compress` batch, store the batch's objects and then their
//! completion records (one batched put each), and report each chunk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chunk_model::layout::METADATA_FILE;
use chunk_model::{
    ChunkCompressed, ChunkInfo, ChunkMetadata, Codec, Sha256Digest, Status, object_keys,
};
use futures::StreamExt as _;
use gpu_compress::Compressed;
use serde_json::json;
use tokio::sync::mpsc;
use uploader::{ObjectMeta, PutItem, StoreError};

use crate::{Shared, github};

/// One accepted chunk, waiting in the queue.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) chunk: ChunkInfo,
    /// The chunk's `data.bin`, resolved and checked to lie inside the source root.
    pub(crate) data_path: PathBuf,
    pub(crate) accepted_at: Instant,
}

/// A chunk whose bytes were read and match their hash.
struct Ready {
    job: Job,
    data: Vec<u8>,
    sha: Sha256Digest,
}

/// A chunk after reading: ready, or failed with the reason.
enum Read {
    Ready(Ready),
    Failed(Job, String),
}

/// A batch that went through reading, checking and compression, waiting to be stored.
struct CompressedBatch {
    /// Jobs in the batch, for the in-flight gauge.
    jobs: usize,
    /// Each chunk with its frame, or why it could not be compressed.
    chunks: Vec<(Ready, Result<Compressed, String>)>,
}

/// Runs until the queue's senders are gone and the queue is empty.
///
/// Two stages run side by side: one takes the next batch from the queue, reads, checks
/// and compresses it, while the other stores and reports the batch before. The hand-off
/// holds one batch, so memory stays bounded by about three batches (one compressing, one
/// waiting, one storing) and neither the compressor nor the store waits for the other.
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let (to_store, mut stored_rx) = mpsc::channel::<CompressedBatch>(1);
    let front_shared = shared.clone();
    let front = async move {
        let shared = front_shared;
        let config = &shared.config;
        while let Some(first) = rx.recv().await {
            let mut bytes = first.chunk.size;
            let mut batch = vec![first];
            // Whatever is already waiting joins the batch: one device launch for many
            // small chunks, while a lone chunk is never held back waiting for company.
            while batch.len() < config.max_batch && bytes < config.max_batch_bytes {
                match rx.try_recv() {
                    Ok(job) => {
                        bytes += job.chunk.size;
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let jobs = batch.len();
            shared.metrics.set_queue_length(rx.len());
            shared.metrics.add_in_flight(jobs);
            let chunks = compress_batch(&shared, batch).await;
            shared.metrics.set_queue_length(rx.len());
            if to_store
                .send(CompressedBatch { jobs, chunks })
                .await
                .is_err()
            {
                break;
            }
        }
        // Dropping `to_store` here ends the storing stage once it has stored the rest.
    };
    let back = async {
        while let Some(batch) = stored_rx.recv().await {
            store_batch(&shared, batch.chunks).await;
            shared.metrics.sub_in_flight(batch.jobs);
        }
    };
    tokio::join!(front, back);
}

/// Reads and checks a batch, reports what fails or is already stored, and compresses
/// the rest. Returns the chunks to store.
async fn compress_batch(
    shared: &Arc<Shared>,
    batch: Vec<Job>,
) -> Vec<(Ready, Result<Compressed, String>)> {
    let root = shared.root.clone();
    let read = tokio::task::spawn_blocking(move || {
        batch
            .into_iter()
            .map(|job| match read_and_check(&root, &job) {
                Ok((data, sha)) => Read::Ready(Ready { job, data, sha }),
                Err(reason) => Read::Failed(job, reason),
            })
            .collect::<Vec<_>>()
    })
    .await;
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            // The reading task panicked; its jobs are gone with it and will come back
            // when their lease expires.
            tracing::error!("reading a batch failed: {e}");
            return Vec::new();
        }
    };
    let mut ready = Vec::new();
    for item in read {
        match item {
            Read::Ready(r) => ready.push(r),
            Read::Failed(job, reason) => report(shared, &job.chunk, None, Err(reason)).await,
        }
    }

    // Chunks already in the bucket are reported from what is there, not compressed again.
    let concurrency = shared.config.upload_concurrency;
    let checked: Vec<(Ready, Option<Result<ChunkCompressed, String>>)> =
        futures::stream::iter(ready)
            .map(|r| async move {
                let existing = already_stored(shared, &r).await;
                (r, existing)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let mut to_compress = Vec::new();
    for (r, existing) in checked {
        match existing {
            Some(outcome) => report(shared, &r.job.chunk, Some(r.sha), outcome).await,
            None => to_compress.push(r),
        }
    }
    if to_compress.is_empty() {
        return Vec::new();
    }

    let compressor = shared.compressor.clone();
    let start = Instant::now();
    let compressed = tokio::task::spawn_blocking(move || {
        let inputs: Vec<&[u8]> = to_compress.iter().map(|r| r.data.as_slice()).collect();
        let frames = match compressor.compress_batch(&inputs) {
            Ok(frames) => frames.into_iter().map(Ok).collect(),
            // One bad chunk must not fail its neighbours: find it by compressing singly.
            Err(batch_error) => {
                tracing::warn!("batch compression failed ({batch_error}); compressing one by one");
                inputs
                    .iter()
                    .map(|data| {
                        compressor
                            .compress(data)
                            .map_err(|e| format!("compression failed: {e}"))
                    })
                    .collect::<Vec<_>>()
            }
        };
        to_compress.into_iter().zip(frames).collect::<Vec<_>>()
    })
    .await;
    match compressed {
        Ok(compressed) => {
            shared.metrics.observe_compress(start.elapsed());
            compressed
        }
        Err(e) => {
            tracing::error!("compression task failed: {e}");
            Vec::new()
        }
    }
}

/// Stores every compressed chunk of a batch, records and reports each one: one
/// `put_many` for the chunk objects, then one for the completion records of those that
/// were stored, so that a record never names an object that is not durably there.
async fn store_batch(shared: &Arc<Shared>, chunks: Vec<(Ready, Result<Compressed, String>)>) {
    let store = &shared.config.store;
    let mut reports: Vec<(ChunkInfo, Sha256Digest, Result<ChunkCompressed, String>)> = Vec::new();
    let mut pending = Vec::new();
    let mut objects = Vec::new();
    for (r, frame) in chunks {
        match frame {
            Ok(frame) => {
                let key = object_keys::chunk_object(&r.sha, frame.codec);
                let meta = ObjectMeta {
                    codec: frame.codec,
                    original_size: r.data.len() as u64,
                    original_sha256: r.sha,
                };
                let upload_hash = Sha256Digest::of(&frame.bytes);
                let output_len = frame.bytes.len() as u64;
                objects.push((key.clone(), Bytes::from(frame.bytes), meta));
                pending.push(Stored {
                    r,
                    key,
                    codec: frame.codec,
                    stats: frame.stats,
                    upload_hash,
                    output_len,
                });
            }
            Err(reason) => reports.push((r.job.chunk, r.sha, Err(reason))),
        }
    }

    let mut recorded = Vec::new();
    let mut records = Vec::new();
    for (stored, outcome) in pending.into_iter().zip(store.put_many(objects).await) {
        let Stored {
            r,
            key,
            codec,
            stats: s,
            upload_hash,
            output_len,
        } = stored;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                reports.push((r.job.chunk, r.sha, Err(format!("storing {key}: {e}"))));
                continue;
            }
        };
        shared.metrics.add_bytes(r.data.len() as u64, output_len);
        let stats = json!({
            "codec": codec.to_string(),
            "engine": s.engine.to_string(),
            "device": s.device,
            "input_bytes": s.input_len,
            "output_bytes": s.output_len,
            "ratio": s.ratio,
            "compress_ms": s.elapsed.as_secs_f64() * 1e3,
            "auto_reason": s.auto.as_ref().map(|d| d.reason),
            "verified": s.verified,
            "deduplicated": outcome == uploader::PutOutcome::AlreadyExists,
            "queue_ms": r.job.accepted_at.elapsed().as_secs_f64() * 1e3,
        });
        let record = completed(shared, &r, Some(key), Some(upload_hash), stats);
        match record_item(&r.sha, &record) {
            Ok(item) => {
                records.push(item);
                recorded.push((r, record));
            }
            Err(reason) => reports.push((r.job.chunk, r.sha, Err(reason))),
        }
    }

    for ((r, record), outcome) in recorded.into_iter().zip(store.put_many(records).await) {
        let outcome = record_written(&r.sha, outcome).map(|()| record);
        reports.push((r.job.chunk, r.sha, outcome));
    }

    let concurrency = shared.config.upload_concurrency;
    futures::stream::iter(reports)
        .for_each_concurrent(concurrency, |(chunk, sha, outcome)| async move {
            report(shared, &chunk, Some(sha), outcome).await;
        })
        .await;
}

/// A chunk whose frame is being stored, with what its record will say.
struct Stored {
    r: Ready,
    key: String,
    codec: Codec,
    stats: gpu_compress::CompressStats,
    upload_hash: Sha256Digest,
    output_len: u64,
}

/// Reads `data.bin` and checks its size and SHA-256 against what the request (or, when
/// the request carries no hash, the chunk's `metadata.json`) says.
fn read_and_check(root: &Path, job: &Job) -> Result<(Vec<u8>, Sha256Digest), String> {
    let path = &job.data_path;
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if data.len() as u64 != job.chunk.size {
        return Err(format!(
            "{} is {} bytes but the request says size {}",
            path.display(),
            data.len(),
            job.chunk.size
        ));
    }
    let expected = match job.chunk.hash {
        Some(hash) => hash,
        None => expected_from_metadata(root, path)?,
    };
    let actual = Sha256Digest::of(&data);
    if actual != expected {
        return Err(format!(
            "SHA-256 mismatch for {}: expected {expected}, data.bin has {actual}",
            path.display()
        ));
    }
    Ok((data, actual))
}

fn expected_from_metadata(root: &Path, data_path: &Path) -> Result<Sha256Digest, String> {
    let dir = data_path.parent().unwrap_or(root);
    let path = std::fs::canonicalize(dir.join(METADATA_FILE)).map_err(|e| {
        format!(
            "request has no hash and {} is unreadable: {e}",
            dir.join(METADATA_FILE).display()
        )
    })?;
    if !path.starts_with(root) {
        return Err(format!(
            "{} resolves outside the source root",
            dir.join(METADATA_FILE).display()
        ));
    }
    let meta: ChunkMetadata = chunk_model::json_file::read(&path).map_err(|e| e.to_string())?;
    Ok(meta.original_hash)
}

/// `Some` when the chunk is already in the bucket: from its completion record, or from
/// the chunk object itself when a worker stopped between storing it and recording it.
async fn already_stored(shared: &Shared, r: &Ready) -> Option<Result<ChunkCompressed, String>> {
    let store = &shared.config.store;
    let record_key = object_keys::status_record(&r.sha);
    let failed = |what: &str, e: StoreError| Some(Err(format!("{what}: {e}")));
    match store.stat(&record_key).await {
        Ok(Some(_)) => {
            let object = match store.get(&record_key).await {
                Ok(object) => object,
                Err(e) => return failed("reading the completion record", e),
            };
            match serde_json::from_slice::<ChunkCompressed>(&object.bytes) {
                Ok(record)
                    if record.status == Status::Completed && record.upload_path.is_some() =>
                {
                    let mut stats = record.stats;
                    mark_deduplicated(&mut stats);
                    return Some(Ok(completed(
                        shared,
                        r,
                        record.upload_path,
                        record.upload_hash,
                        stats,
                    )));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    "{record_key} is not a completion record ({e}); redoing the chunk"
                ),
            }
        }
        Ok(None) => {}
        Err(e) => return failed("checking for a completion record", e),
    }
    // The chunk object under any codec's name. One `stat` per codec rather than a
    // listing: a listing of `chunks/` costs as much as the bucket is large on a local
    // directory, once for every new chunk.
    let keys = Codec::ALL.map(|codec| object_keys::chunk_object(&r.sha, codec));
    let stats = futures::future::join_all(keys.iter().map(|key| store.stat(key))).await;
    let mut found = None;
    for stat in stats {
        match stat {
            Ok(Some(info)) => {
                found = Some(info);
                break;
            }
            Ok(None) => {}
            Err(e) => return failed("looking for a stored chunk", e),
        }
    }
    let info = found?;
    let object = match store.get(&info.key).await {
        Ok(object) => object,
        Err(e) => return failed("reading the stored chunk", e),
    };
    let mut stats =
        json!({ "codec": info.meta.map(|m| m.codec.to_string()), "output_bytes": info.size });
    mark_deduplicated(&mut stats);
    let record = completed(
        shared,
        r,
        Some(info.key),
        Some(Sha256Digest::of(&object.bytes)),
        stats,
    );
    Some(write_record(shared, &r.sha, &record).await.map(|()| record))
}

fn mark_deduplicated(stats: &mut serde_json::Value) {
    if let Some(map) = stats.as_object_mut() {
        map.insert("deduplicated".into(), json!(true));
    } else {
        *stats = json!({ "deduplicated": true });
    }
}

fn completed(
    shared: &Shared,
    r: &Ready,
    upload_path: Option<String>,
    upload_hash: Option<Sha256Digest>,
    stats: serde_json::Value,
) -> ChunkCompressed {
    ChunkCompressed {
        chunk_path: r.job.chunk.chunk_path.clone(),
        status: Status::Completed,
        upload_path,
        upload_hash,
        original_hash: Some(r.sha),
        worker_id: Some(shared.config.worker_id.clone()),
        error: None,
        stats,
    }
}

/// Writes `status/<sha256>.json`.
async fn write_record(
    shared: &Shared,
    sha: &Sha256Digest,
    record: &ChunkCompressed,
) -> Result<(), String> {
    let (key, bytes, meta) = record_item(sha, record)?;
    record_written(sha, shared.config.store.put(&key, bytes, &meta).await)
}

/// The completion record `status/<sha256>.json` as an object to put.
fn record_item(sha: &Sha256Digest, record: &ChunkCompressed) -> Result<PutItem, String> {
    let key = object_keys::status_record(sha);
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| format!("serializing {key}: {e}"))?;
    let meta = ObjectMeta::plain(&bytes);
    Ok((key, Bytes::from(bytes), meta))
}

/// Whether a completion record's put succeeded. Records are create-only like every
/// object: when one is already there, another worker finished the same content first,
/// and that record stands.
fn record_written(
    sha: &Sha256Digest,
    outcome: Result<uploader::PutOutcome, StoreError>,
) -> Result<(), String> {
    match outcome {
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(format!(
            "writing the completion record {}: {e}",
            object_keys::status_record(sha)
        )),
    }
}

/// Counts the outcome and sends the callback, when one is configured.
async fn report(
    shared: &Shared,
    chunk: &ChunkInfo,
    sha: Option<Sha256Digest>,
    outcome: Result<ChunkCompressed, String>,
) {
    let payload = match outcome {
        Ok(record) => {
            let deduplicated = record.stats.get("deduplicated") == Some(&json!(true));
            shared.metrics.add_completed(deduplicated);
            tracing::debug!(chunk = %chunk.chunk_path, upload = ?record.upload_path, "completed");
            record
        }
        Err(reason) => {
            shared.metrics.add_failed();
            tracing::warn!(chunk = %chunk.chunk_path, %reason, "failed");
            ChunkCompressed {
                chunk_path: chunk.chunk_path.clone(),
                status: Status::Failed,
                upload_path: None,
                upload_hash: None,
                original_hash: sha.or(chunk.hash),
                worker_id: Some(shared.config.worker_id.clone()),
                error: Some(reason),
                stats: serde_json::Value::Null,
            }
        }
    };
    if payload.status == Status::Failed {
        let mut failures = shared.recent_failures.lock().expect("failures lock");
        if failures.latest.len() == crate::RECENT_FAILURES {
            failures.latest.pop_front();
        }
        failures.latest.push_back(payload.clone());
        failures.total += 1;
    }
    if let Some(github) = &shared.config.github
        && let Err(e) = github::send(&shared.http, github, &payload).await
    {
        // The bucket's completion record still says it; `sync` picks it up.
        shared.metrics.add_callback_failure();
        tracing::warn!(chunk = %chunk.chunk_path, "callback failed: {e}");
    }
}
