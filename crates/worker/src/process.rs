//! The work loop: take queued chunks in batches, read and check them, compress what is
//! not stored yet in one `gpu-compress` batch, store the batch's objects and then their
//! completion records (one batched put each), report each chunk, and publish the recipe
//! of every file whose chunk objects are now all stored.
//!
//! With a repository source, a chunk whose commit is not in the cache yet waits for it
//! beside the loop ([`wait_for_commits`]), so chunks of other commits go on meanwhile.
//!
//! ## Passes over a chunk's bytes
//!
//! What the worker does to each byte of a new chunk read from a checkout and stored in
//! a local-directory bucket (issue 17); *input* is the chunk, *frame* the compressed
//! object, and `auto` looks at a sample of at most 4 × 64 KiB of a chunk:
//!
//! | pass | until issue 17 | now |
//! |---|---|---|
//! | read `data.bin` (a copy from the page cache) | 1 × input, into a fresh buffer that the kernel faults in and zeroes page by page | 1 × input, into a kept buffer ([`Buffers`]) |
//! | SHA-256 of the input (the request's hash checked) | 1 × input, one thread per batch | 1 × input, on every core |
//! | `auto`'s sample (entropy, LZ4 and zstd-1 trials) | ≤ 3 × 256 KiB | the same; a chunk of at most 256 KiB is its own sample, tried at the chunk's zstd level |
//! | compression (LZ4 with its xxHash32, zstd with its xxHash64; `store` copies) | 1 × input | 1 × input; none for a chunk of at most 256 KiB that zstd wins (its trial's frame is kept) |
//! | verification: decoding | 1 × input, unbounded: zstd streamed through its window into a growing buffer (about 2 more copies), a new decoder context and a fresh buffer per frame; `store` copied | 1 × input, in one shot into a per-thread buffer bounded by the input's size, with a per-thread context; `store`: none (the frame is its content) |
//! | verification: comparing with the input | 1 × input | 1 × input |
//! | SHA-256 of the frame (`upload_hash`) | 1 × frame, on an async thread; for `store` the input hashed a second time | 1 × frame, on rayon beside the compression; `store`: none (the input's hash) |
//! | CRC32C of the frame (the bucket's own check) | 1 × frame | 1 × frame |
//! | writing the frame into the bucket | 1 × frame | 1 × frame |
//!
//! Hand-offs per batch: reading and hashing, then compressing, verifying and hashing
//! the frames, are one rayon task each ([`uploader::cpu::on_rayon`]), where they were a
//! blocking thread each (the second handing on to rayon) plus the frames' hashing on the
//! storing stage's async thread. A batch's objects, then its records, then the recipes
//! of the files it completed are one `put_many` each (on a local directory the
//! filesystem is flushed per `put_many`, not per object).

use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chunk_model::chunk_path::TreeRoot;
use chunk_model::layout::{DATA_FILE, MANIFEST_FILE, METADATA_FILE};
use chunk_model::{
    ChunkCompressed, ChunkInfo, ChunkMetadata, Codec, Manifest, Sha256Digest, Status, object_keys,
};
use futures::StreamExt as _;
use gpu_compress::Compressed;
use rayon::prelude::*;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uploader::{ChunkObject, KnownObjects, ObjectMeta, Prepared, Publish, PutItem, StoreError};

use crate::source::{GitCache, Source, relative_path, resolve_in_tree, resolve_many_in_tree};
use crate::{Shared, github};

/// Chunks a worker remembers as stored, at most, while it waits for their files to
/// complete; past this it forgets them all and asks the store again (correct either
/// way, this only bounds memory).
const KNOWN_OBJECTS_LIMIT: usize = 1 << 20;

/// Where an accepted chunk's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// The chunk's `data.bin` in the checkout, resolved and checked to lie inside the
    /// source root.
    Tree(PathBuf),
    /// The chunk's directory (normalised, relative) at a commit of the repository.
    Repo {
        /// The commit the request named.
        commit: Arc<str>,
        /// The chunk directory in it.
        dir: String,
    },
}

/// One accepted chunk, waiting in the queue.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) chunk: ChunkInfo,
    pub(crate) location: Location,
    pub(crate) accepted_at: Instant,
    /// The chunk's file, counted in [`FilesInFlight`] for as long as this job lives.
    file: Option<FileTicket>,
}

impl Job {
    /// A chunk the door accepted, counted among its file's chunks in flight.
    pub(crate) fn accept(
        chunk: ChunkInfo,
        location: Location,
        accepted_at: Instant,
        files: &Arc<FilesInFlight>,
    ) -> Self {
        let file = file_of(&chunk, &location).map(|file| files.enter(file));
        Job {
            chunk,
            location,
            accepted_at,
            file,
        }
    }

    /// The file this chunk belongs to.
    fn file(&self) -> Option<FileRef> {
        self.file.as_ref().map(|ticket| ticket.file.clone())
    }
}

/// The file a chunk belongs to: its `base_dir`, or when the request has none (lists
/// written by the original workflow) the chunk directory's parent; at the same commit.
fn file_of(chunk: &ChunkInfo, location: &Location) -> Option<FileRef> {
    let commit = match location {
        Location::Tree(_) => None,
        Location::Repo { commit, .. } => Some(commit.clone()),
    };
    let dir = if chunk.base_dir.is_empty() {
        relative_path("chunk_path", &chunk.chunk_path)
            .ok()
            .and_then(|p| p.rsplit_once('/').map(|(parent, _)| parent.to_owned()))
    } else {
        relative_path("base_dir", &chunk.base_dir).ok()
    };
    match dir {
        Some(dir) => Some(FileRef { dir, commit }),
        None => {
            tracing::warn!(chunk = %chunk.chunk_path, base_dir = %chunk.base_dir,
                "no usable file directory; its recipe will not be published from here");
            None
        }
    }
}

/// The files with chunks accepted here and not done yet, with how many each.
///
/// A file's recipe is worth checking only when none of its chunks is still queued or in
/// flight in this worker: until then the check reads the whole manifest only to find
/// one of them missing. Checking after every batch read and walked a big file's
/// manifest once per batch, quadratic in its chunks (on a 4 GiB file of 4,786 chunks,
/// most of the run's 17 million allocations).
#[derive(Debug, Default)]
pub(crate) struct FilesInFlight {
    counts: std::sync::Mutex<HashMap<FileRef, usize>>,
}

impl FilesInFlight {
    fn enter(self: &Arc<Self>, file: FileRef) -> FileTicket {
        *self
            .counts
            .lock()
            .expect("files in flight lock")
            .entry(file.clone())
            .or_default() += 1;
        FileTicket {
            files: self.clone(),
            file,
        }
    }

    /// Whether no chunk of `file` is queued or in flight here.
    fn is_idle(&self, file: &FileRef) -> bool {
        !self
            .counts
            .lock()
            .expect("files in flight lock")
            .contains_key(file)
    }
}

/// A job's place among its file's chunks in flight ([`FilesInFlight`]), given back when
/// the job is dropped: stored, found stored, failed, or abandoned at shutdown.
#[derive(Debug)]
struct FileTicket {
    files: Arc<FilesInFlight>,
    file: FileRef,
}

impl Drop for FileTicket {
    fn drop(&mut self) {
        let mut counts = self.files.counts.lock().expect("files in flight lock");
        if let Some(count) = counts.get_mut(&self.file) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.file);
            }
        }
    }
}

/// A file of the chunk tree: its directory (`pending_compression/<name>`), at a commit
/// when read from a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FileRef {
    dir: String,
    commit: Option<Arc<str>>,
}

/// A chunk whose object is durably stored (by this batch, or found already there).
#[derive(Debug)]
struct Done {
    file: Option<FileRef>,
    sha: Sha256Digest,
    /// The codec of the stored object, when it is `chunks/<sha>.<codec>`.
    codec: Option<Codec>,
}

/// A chunk whose bytes were read and match their hash.
struct Ready {
    job: Job,
    /// The bytes, until they are compressed; then their buffer goes back to [`Buffers`].
    data: Vec<u8>,
    /// How many bytes the chunk has (`data`'s length while it is there).
    size: usize,
    sha: Sha256Digest,
}

/// A chunk's bytes as read, before their hash is checked.
struct Unchecked {
    data: Vec<u8>,
    /// The SHA-256 they must have: the request's, or the chunk's `metadata.json`'s.
    expected: Sha256Digest,
    /// Where they came from, for messages.
    shown: String,
}

/// A verified frame and the SHA-256 of its bytes (the object's `upload_hash`).
struct Framed {
    frame: Compressed,
    upload_hash: Sha256Digest,
}

/// Buffers that chunks are read into, kept between batches (up to a byte limit).
///
/// A fresh buffer per chunk costs the kernel a page fault and a zeroed page per 4 KiB
/// when it is first written, as much CPU as reading the chunk itself: the allocator
/// gives the pages of a freed batch back to the system, and the next batch faults them
/// in again. A chunk's buffer comes back here as soon as the chunk is compressed.
#[derive(Debug)]
struct Buffers {
    free: std::sync::Mutex<FreeBuffers>,
    /// Most bytes of capacity kept while idle.
    limit: usize,
}

#[derive(Debug, Default)]
struct FreeBuffers {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl Buffers {
    fn new(limit: usize) -> Self {
        Buffers {
            free: std::sync::Mutex::default(),
            limit,
        }
    }

    /// An empty buffer with room for at least `capacity` bytes.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut free = self.free.lock().expect("buffers lock");
        match free.buffers.iter().rposition(|b| b.capacity() >= capacity) {
            Some(i) => {
                let buffer = free.buffers.swap_remove(i);
                free.bytes -= buffer.capacity();
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Keeps `buffer` for a later chunk, unless that would pass the limit.
    fn give(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        let mut free = self.free.lock().expect("buffers lock");
        if buffer.capacity() > 0 && free.bytes + buffer.capacity() <= self.limit {
            free.bytes += buffer.capacity();
            free.buffers.push(buffer);
        }
    }
}

/// Most bytes of read buffers a worker keeps between batches: a default batch of 1 MiB
/// chunks.
const READ_BUFFERS_KEPT: usize = 64 << 20;

/// A batch that went through reading, checking and compression, waiting to be stored.
struct CompressedBatch {
    /// Jobs in the batch, for the in-flight gauge.
    jobs: usize,
    /// The bytes its requests named, for the batch's log line.
    bytes: u64,
    /// When it was taken from the queue.
    started: Instant,
    /// Each chunk with its frame, or why it could not be compressed.
    chunks: ToStore,
    /// Chunks reported completed because they were stored already: their files may be
    /// complete now too.
    deduplicated: Vec<Done>,
}

/// Runs until the queue's senders are gone and every accepted chunk is reported.
///
/// From a tree, the queue feeds the pipeline directly. From a repository, a chunk whose
/// commit is in the cache goes straight on too; one whose commit is not waits for the
/// fetch beside the pipeline ([`wait_for_commits`]).
pub(crate) async fn run(shared: Arc<Shared>, rx: mpsc::Receiver<Job>) {
    match &shared.source {
        Source::Tree(_) => pipeline(shared, rx, true).await,
        Source::Repo(cache) => {
            let cache = cache.clone();
            // Room for one batch, so the compressor never waits on the hand-off while
            // chunks are ready.
            let (ready_tx, ready_rx) = mpsc::channel(shared.config.max_batch);
            tokio::join!(
                wait_for_commits(shared.clone(), cache, rx, ready_tx),
                pipeline(shared, ready_rx, false)
            );
        }
    }
}

/// Passes chunks on to the pipeline once their commit is in the cache.
///
/// Chunks whose commit must be fetched wait in tasks of their own (all the chunks of one
/// commit share one fetch), so a commit that is not pushed yet holds back only its own
/// chunks. At most `max_queue` chunks wait at once; beyond that the queue fills and the
/// door answers `503`, as for any backlog. The tasks belong to this future: dropping it
/// (aborting the worker) stops them and their `git` processes.
async fn wait_for_commits(
    shared: Arc<Shared>,
    cache: Arc<GitCache>,
    mut rx: mpsc::Receiver<Job>,
    ready: mpsc::Sender<Job>,
) {
    let mut waiting = JoinSet::new();
    let limit = shared.config.max_queue;
    let mut open = true;
    loop {
        tokio::select! {
            job = rx.recv(), if open && waiting.len() < limit => {
                let Some(job) = job else {
                    open = false;
                    continue;
                };
                let commit = match &job.location {
                    Location::Repo { commit, .. } if !cache.is_present(commit) => commit.clone(),
                    _ => {
                        if ready.send(job).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let (shared, cache, ready) = (shared.clone(), cache.clone(), ready.clone());
                shared.metrics.add_waiting_for_commit();
                waiting.spawn(async move {
                    let fetched = cache.ensure(&commit).await;
                    shared.metrics.sub_waiting_for_commit();
                    match fetched {
                        Ok(()) => {
                            let _ = ready.send(job).await;
                        }
                        // Retried for as long as configured: now it is the chunk's failure.
                        Err(e) => report(&shared, &job.chunk, None, Err(e.to_string())).await,
                    }
                });
            }
            Some(joined) = waiting.join_next(), if !waiting.is_empty() => {
                if let Err(e) = joined {
                    // Its chunk comes back to the dispatcher when its lease runs out.
                    tracing::error!("waiting for a commit failed: {e}");
                }
            }
            else => break,
        }
    }
}

/// Runs until the queue's senders are gone and the queue is empty.
/// `track_queue`: whether `rx` is the door's queue, whose length the gauge shows.
///
/// Two stages run side by side: one takes the next batch from the queue, reads, checks
/// and compresses it, while the other stores and reports the batch before. The hand-off
/// holds one batch, so memory stays bounded by about three batches (one compressing, one
/// waiting, one storing) and neither the compressor nor the store waits for the other.
async fn pipeline(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>, track_queue: bool) {
    let (to_store, mut stored_rx) = mpsc::channel::<CompressedBatch>(1);
    let front_shared = shared.clone();
    let buffers = Arc::new(Buffers::new(
        usize::try_from(shared.config.max_batch_bytes)
            .map_or(READ_BUFFERS_KEPT, |max| max.min(READ_BUFFERS_KEPT)),
    ));
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
                        // Sizes come from requests: never let their sum panic.
                        bytes = bytes.saturating_add(job.chunk.size);
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let jobs = batch.len();
            if track_queue {
                shared.metrics.set_queue_length(rx.len());
            }
            shared.metrics.add_in_flight(jobs);
            let started = Instant::now();
            let (chunks, deduplicated) = compress_batch(&shared, &buffers, batch).await;
            if track_queue {
                shared.metrics.set_queue_length(rx.len());
            }
            if to_store
                .send(CompressedBatch {
                    jobs,
                    bytes,
                    started,
                    chunks,
                    deduplicated,
                })
                .await
                .is_err()
            {
                break;
            }
        }
        // Dropping `to_store` here ends the storing stage once it has stored the rest.
    };
    let back = async {
        // Owned by this stage alone, so publishing needs no lock.
        let mut known = KnownObjects::new();
        while let Some(batch) = stored_rx.recv().await {
            // What the first stage reported: chunks found stored, and (all the others it
            // did not pass on) chunks that failed to read or check.
            let found = batch.deduplicated.len();
            let failed_early = batch.jobs.saturating_sub(batch.chunks.len() + found);
            let (mut done, outcomes) = store_batch(&shared, batch.chunks).await;
            shared.metrics.sub_in_flight(batch.jobs);
            tracing::info!(
                chunks = batch.jobs,
                bytes = batch.bytes,
                engine = %shared.compressor.engine(),
                seconds = format_args!("{:.3}", batch.started.elapsed().as_secs_f64()),
                stored = outcomes.stored,
                deduplicated = found + outcomes.deduplicated,
                failed = failed_early + outcomes.failed,
                "batch done"
            );
            done.extend(batch.deduplicated);
            publish_recipes(&shared, &mut known, done).await;
        }
    };
    tokio::join!(front, back);
}

/// The chunks of a batch to store, with their frames or why compression failed.
type ToStore = Vec<(Ready, Result<Framed, String>)>;

/// Reads and checks a batch, reports what fails or is already stored, and compresses
/// the rest. Returns the chunks to store, and those found already stored.
async fn compress_batch(
    shared: &Arc<Shared>,
    buffers: &Arc<Buffers>,
    batch: Vec<Job>,
) -> (ToStore, Vec<Done>) {
    let ready = read_batch(shared, buffers, batch).await;

    // Chunks already in the bucket are reported from what is there, not compressed again.
    // Two lookups for the whole batch find them (the records, then the objects of the
    // chunks without one), not four calls per chunk.
    let store = &shared.config.store;
    let record_keys: Vec<String> = ready
        .iter()
        .map(|r| object_keys::status_record(&r.sha))
        .collect();
    let records = store.exists_many(&record_keys).await;
    let object_keys: Vec<String> = ready
        .iter()
        .zip(&records)
        .filter(|(_, record)| matches!(record, Ok(false)))
        .flat_map(|(r, _)| Codec::ALL.map(|codec| object_keys::chunk_object(&r.sha, codec)))
        .collect();
    let mut object_stats = store.stat_many(&object_keys).await.into_iter();
    let lookups: Vec<(Ready, Lookup)> = ready
        .into_iter()
        .zip(records)
        .map(|(r, record)| {
            let objects = matches!(record, Ok(false))
                .then(|| object_stats.by_ref().take(Codec::ALL.len()).collect());
            (r, Lookup { record, objects })
        })
        .collect();
    let concurrency = shared.config.upload_concurrency;
    let checked: Vec<(Ready, Option<Result<ChunkCompressed, String>>)> =
        futures::stream::iter(lookups)
            .map(|(r, lookup)| async move {
                let existing = already_stored(shared, &r, lookup).await;
                (r, existing)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let mut to_compress = Vec::new();
    let mut deduplicated = Vec::new();
    for (r, existing) in checked {
        match existing {
            Some(outcome) => {
                if let Ok(record) = &outcome {
                    deduplicated.push(Done {
                        file: r.job.file(),
                        sha: r.sha,
                        codec: record
                            .upload_path
                            .as_deref()
                            .and_then(|key| chunk_codec(&r.sha, key)),
                    });
                }
                report(shared, &r.job.chunk, Some(r.sha), outcome).await;
                buffers.give(r.data);
            }
            None => to_compress.push(r),
        }
    }
    if to_compress.is_empty() {
        return (Vec::new(), deduplicated);
    }

    let compressor = shared.compressor.clone();
    let buffers = buffers.clone();
    let start = Instant::now();
    // Compressing, verifying and hashing the frames in one go on rayon: the frames are
    // hashed while they are still in cache, on every core.
    let compressed = uploader::cpu::on_rayon(move || {
        let inputs: Vec<&[u8]> = to_compress.iter().map(|r| r.data.as_slice()).collect();
        let frames: Vec<Result<Compressed, String>> = match compressor.compress_batch(&inputs) {
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
                    .collect()
            }
        };
        // A driver may install signal handlers lazily, when it first builds a kernel:
        // put the worker's back, so SIGTERM still drains (see `signals`).
        crate::signals::reassert();
        to_compress
            .into_par_iter()
            .zip(frames)
            .map(|(mut r, frame)| {
                let framed = frame.map(|frame| Framed {
                    upload_hash: upload_hash(&r, &frame),
                    frame,
                });
                // Only the frame is stored from here on.
                buffers.give(std::mem::take(&mut r.data));
                (r, framed)
            })
            .collect::<Vec<_>>()
    })
    .await;
    match compressed {
        Ok(compressed) => {
            shared.metrics.observe_compress(start.elapsed());
            (compressed, deduplicated)
        }
        Err(e) => {
            // Its chunks come back to the dispatcher when their lease expires.
            tracing::error!("compression task failed: {e}");
            (Vec::new(), deduplicated)
        }
    }
}

/// The SHA-256 of the object a frame is stored as. A verified `store` frame is the
/// chunk's bytes themselves, whose hash [`check_hash`] has just computed: they are not
/// hashed a second time.
fn upload_hash(r: &Ready, frame: &Compressed) -> Sha256Digest {
    if frame.codec == Codec::Store && frame.stats.verified && frame.bytes.len() == r.size {
        r.sha
    } else {
        Sha256Digest::of(&frame.bytes)
    }
}

/// Reads a batch's chunks and checks their size and SHA-256; reports those that fail.
///
/// Chunks of a checkout are read and hashed in one rayon task, on every core; chunks
/// from the bucket (staged) or a repository are fetched concurrently and then hashed
/// the same way.
async fn read_batch(shared: &Arc<Shared>, buffers: &Arc<Buffers>, batch: Vec<Job>) -> Vec<Ready> {
    // Staged chunks come from the bucket whatever the source; the rest from the source.
    let (staged, batch): (Vec<Job>, Vec<Job>) = batch
        .into_iter()
        .partition(|job| job.chunk.staged_object.is_some());
    let concurrency = shared.config.upload_concurrency;
    let mut fetched: Vec<(Job, Result<Unchecked, String>)> = futures::stream::iter(staged)
        .map(|job| async move {
            let outcome = read_staged(shared, &job).await;
            (job, outcome)
        })
        .buffered(concurrency)
        .collect()
        .await;
    let (root, from_tree) = match &shared.source {
        Source::Tree(root) => (Some(root.clone()), batch),
        Source::Repo(cache) => {
            let from_repo: Vec<_> = futures::stream::iter(batch)
                .map(|job| async move {
                    let outcome = read_from_repo(cache, &job).await;
                    (job, outcome)
                })
                .buffered(concurrency)
                .collect()
                .await;
            fetched.extend(from_repo);
            (None, Vec::new())
        }
    };
    let buffers = buffers.clone();
    let read = uploader::cpu::on_rayon(move || {
        let from_tree = from_tree.into_par_iter().map(|job| {
            let outcome = match &root {
                Some(root) => read_from_tree(root, &job, &buffers),
                None => Err("a checkout chunk reached a repository-backed worker".into()),
            };
            (job, outcome.and_then(check_hash))
        });
        let fetched = fetched
            .into_par_iter()
            .map(|(job, outcome)| (job, outcome.and_then(check_hash)));
        from_tree.chain(fetched).collect::<Vec<_>>()
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
    let mut ready = Vec::with_capacity(read.len());
    for (job, outcome) in read {
        match outcome {
            Ok((data, sha)) => ready.push(Ready {
                job,
                size: data.len(),
                data,
                sha,
            }),
            Err(reason) => report(shared, &job.chunk, None, Err(reason)).await,
        }
    }
    ready
}

/// The codec of `key` when it is the chunk object `chunks/<sha>.<codec>`.
fn chunk_codec(sha: &Sha256Digest, key: &str) -> Option<Codec> {
    let codec = key.rsplit_once('.')?.1.parse().ok()?;
    (object_keys::chunk_object(sha, codec) == key).then_some(codec)
}

/// Stores every compressed chunk of a batch, records and reports each one: one
/// `put_many` for the chunk objects, then one for the completion records of those that
/// were stored, so that a record never names an object that is not durably there.
/// Returns the chunks whose objects are now stored, and how their reports went.
async fn store_batch(shared: &Arc<Shared>, chunks: ToStore) -> (Vec<Done>, Outcomes) {
    let store = &shared.config.store;
    let mut done = Vec::new();
    let mut reports: Vec<(ChunkInfo, Sha256Digest, Result<ChunkCompressed, String>)> = Vec::new();
    let mut pending = Vec::new();
    let mut objects = Vec::new();
    for (r, framed) in chunks {
        match framed {
            Ok(Framed { frame, upload_hash }) => {
                let key = object_keys::chunk_object(&r.sha, frame.codec);
                let meta = ObjectMeta {
                    codec: frame.codec,
                    original_size: r.size as u64,
                    original_sha256: r.sha,
                };
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
        // Create-only: an object that appeared since the check was not written by us,
        // and is trusted only once it decodes to the chunk.
        let upload_hash = if outcome == uploader::PutOutcome::AlreadyExists {
            match verify_object(shared, &r, &key, codec).await {
                Verified::Good { upload_hash } => upload_hash,
                Verified::Missing => {
                    let reason = format!("{key} was reported stored but is not in the bucket");
                    reports.push((r.job.chunk, r.sha, Err(reason)));
                    continue;
                }
                Verified::Bad(reason) => {
                    reports.push((r.job.chunk, r.sha, Err(reason)));
                    continue;
                }
            }
        } else {
            upload_hash
        };
        // A put that found the object there (an identical chunk stored meanwhile) stored
        // nothing: the chunk counts as deduplicated (its record says so), not as bytes.
        if outcome == uploader::PutOutcome::Created {
            shared.metrics.add_bytes(r.size as u64, output_len);
        }
        done.push(Done {
            file: r.job.file(),
            sha: r.sha,
            codec: Some(codec),
        });
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

    let mut outcomes = Outcomes::default();
    for (_, _, outcome) in &reports {
        match outcome {
            Ok(record) if is_deduplicated(record) => outcomes.deduplicated += 1,
            Ok(_) => outcomes.stored += 1,
            Err(_) => outcomes.failed += 1,
        }
    }
    let concurrency = shared.config.upload_concurrency;
    futures::stream::iter(reports)
        .for_each_concurrent(concurrency, |(chunk, sha, outcome)| async move {
            report(shared, &chunk, Some(sha), outcome).await;
        })
        .await;
    (done, outcomes)
}

/// How the reports of a stored batch went.
#[derive(Debug, Default)]
struct Outcomes {
    /// Compressed and stored now.
    stored: usize,
    /// Found stored by another worker between the check and the put.
    deduplicated: usize,
    failed: usize,
}

/// Whether a completion record says the chunk was found stored rather than stored now.
fn is_deduplicated(record: &ChunkCompressed) -> bool {
    record.stats.get("deduplicated") == Some(&json!(true))
}

/// Publishes the recipe of every file `done` touched whose chunk objects are now all
/// stored, among those with no chunk left queued or in flight here ([`FilesInFlight`]):
/// the files checked ([`uploader::prepare_recipes`]), then the recipes written in
/// one batch ([`uploader::publish_prepared`]). A failure is logged and counted, never
/// charged to the chunks: they are stored, and the next batch of the file, another
/// worker or `sync` publishes the recipe.
async fn publish_recipes(shared: &Shared, known: &mut KnownObjects, done: Vec<Done>) {
    if known.len() > KNOWN_OBJECTS_LIMIT {
        *known = KnownObjects::new();
    }
    let mut files = BTreeSet::new();
    for d in done {
        if let Some(codec) = d.codec {
            known.insert(d.sha, codec);
        }
        files.extend(d.file);
    }
    // A file with chunks still queued or in flight here is checked after its last one.
    files.retain(|file| shared.files_in_flight.is_idle(file));
    let failed = |file: &FileRef, reason: &dyn std::fmt::Display| {
        shared.metrics.add_recipe_failure();
        tracing::warn!(file = %file.dir, commit = ?file.commit, %reason, "recipe not published");
    };
    // The files the batch touched: their manifests read, their recipes checked and the
    // ready ones written, each step once for all of them (a batch of small files
    // completes many files at once).
    let mut named = Vec::new();
    for file in files {
        let name = file.dir.rsplit('/').next().unwrap_or(&file.dir).to_owned();
        match chunk_model::layout::validate_name(&name) {
            Ok(()) => named.push((file, name)),
            Err(e) => failed(&file, &e),
        }
    }
    let manifests = read_manifests(shared, named.iter().map(|(file, _)| file)).await;
    let mut read = Vec::new();
    for ((file, name), manifest) in named.into_iter().zip(manifests) {
        match manifest {
            Ok(Some(manifest)) => read.push((file, name, manifest)),
            // A file still being cut (the pipeline streams a big file's chunks before its
            // manifest is written): checked again after its next chunk.
            Ok(None) => tracing::debug!(file = %file.dir, "no manifest yet; recipe not checked"),
            Err(reason) => failed(&file, &reason),
        }
    }
    let store = shared.config.store.as_ref();
    let pairs: Vec<(&str, &Manifest)> = read.iter().map(|(_, n, m)| (n.as_str(), m)).collect();
    let prepared = uploader::prepare_recipes(store, &pairs, known).await;
    let mut ready = Vec::new();
    let mut recipes = Vec::new();
    for ((file, _, manifest), prepared) in read.into_iter().zip(prepared) {
        match prepared {
            Ok(Prepared::Ready(recipe)) => {
                ready.push((file, manifest));
                recipes.push(recipe);
            }
            Ok(Prepared::Settled(Publish::AlreadyPublished { .. })) => {
                shared.metrics.add_recipe_found();
                known.forget(&manifest);
            }
            Ok(Prepared::Settled(_)) => {}
            Err(e) => failed(&file, &e),
        }
    }
    if recipes.is_empty() {
        return;
    }
    let outcomes = uploader::publish_prepared(store, &recipes).await;
    for ((file, manifest), outcome) in ready.into_iter().zip(outcomes) {
        match outcome {
            Ok(Publish::Published { key }) => {
                shared.metrics.add_recipe_published();
                tracing::info!(%key, "published a recipe");
                known.forget(&manifest);
            }
            Ok(Publish::AlreadyPublished { .. }) => {
                shared.metrics.add_recipe_found();
                known.forget(&manifest);
            }
            Ok(Publish::Incomplete { .. }) => {}
            Err(e) => failed(&file, &e),
        }
    }
}

/// The `manifest.json` of each file, from the same source its chunks came from: a
/// checkout's in one task on the blocking pool, a repository's one by one from its cache
/// at the file's commit. `None`: the checkout has no manifest for the file (yet).
async fn read_manifests<'a>(
    shared: &Shared,
    files: impl Iterator<Item = &'a FileRef>,
) -> Vec<Result<Option<Manifest>, String>> {
    match &shared.source {
        Source::Tree(root) => {
            let root = root.clone();
            let dirs: Vec<String> = files.map(|f| f.dir.clone()).collect();
            let count = dirs.len();
            tokio::task::spawn_blocking(move || {
                resolve_many_in_tree(
                    &root,
                    "base_dir",
                    dirs.iter().map(String::as_str),
                    MANIFEST_FILE,
                )
                .into_iter()
                .map(|path| match path {
                    Ok(path) => chunk_model::json_file::read(&path)
                        .map(Some)
                        .map_err(|e| e.to_string()),
                    Err(e) if e.missing => Ok(None),
                    Err(e) => Err(e.message),
                })
                .collect()
            })
            .await
            .unwrap_or_else(|e| vec![Err(format!("reading the manifests failed: {e}")); count])
        }
        Source::Repo(cache) => {
            let mut manifests = Vec::new();
            for file in files {
                manifests.push(match &file.commit {
                    Some(commit) => {
                        let path = format!("{}/{MANIFEST_FILE}", file.dir);
                        match cache.read(commit, &path).await {
                            Ok(bytes) => serde_json::from_slice(&bytes)
                                .map(Some)
                                .map_err(|e| format!("{path} at {commit}: {e}")),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    None => {
                        Err("a chunk without a commit reached a repository-backed worker".into())
                    }
                });
            }
            manifests
        }
    }
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

/// Reads `data.bin` from the checkout into a kept buffer and checks its size against the
/// request; the SHA-256 it must have is the request's or, when the request carries no
/// hash, the chunk's `metadata.json`'s.
fn read_from_tree(root: &TreeRoot, job: &Job, buffers: &Buffers) -> Result<Unchecked, String> {
    let Location::Tree(path) = &job.location else {
        return Err("a repository chunk reached a tree-backed worker".into());
    };
    let shown = path.display().to_string();
    let cannot = |e: std::io::Error| format!("cannot read {shown}: {e}");
    let file = std::fs::File::open(path).map_err(cannot)?;
    let len = file.metadata().map_err(cannot)?.len();
    check_size(job, &shown, len)?;
    // One byte of room more than the size: a file that grew since is seen to be longer.
    let mut data = buffers.take(usize::try_from(len).map_err(|e| format!("{shown}: {e}"))? + 1);
    (&file)
        .take(len + 1)
        .read_to_end(&mut data)
        .map_err(cannot)?;
    check_size(job, &shown, data.len() as u64)?;
    let expected = match job.chunk.hash {
        Some(hash) => hash,
        None => {
            let path = resolve_in_tree(root, "chunk_path", &job.chunk.chunk_path, METADATA_FILE)
                .map_err(|e| format!("request has no hash and {e}"))?;
            let meta: ChunkMetadata =
                chunk_model::json_file::read(&path).map_err(|e| e.to_string())?;
            meta.original_hash
        }
    };
    Ok(Unchecked {
        data,
        expected,
        shown,
    })
}

/// Reads `data.bin` at the request's commit (a regular blob, not a link) and checks its
/// size like [`read_from_tree`], with `metadata.json` from the same commit.
async fn read_from_repo(cache: &GitCache, job: &Job) -> Result<Unchecked, String> {
    let Location::Repo { commit, dir } = &job.location else {
        return Err("a checkout chunk reached a repository-backed worker".into());
    };
    let path = format!("{dir}/{DATA_FILE}");
    let shown = format!("{path} at commit {commit}");
    let entry = cache
        .entry(commit, &path)
        .await
        .map_err(|e| e.to_string())?;
    // The tree says the size: a wrong one is refused without reading the blob.
    check_size(job, &shown, entry.size)?;
    let data = cache.blob(&entry.oid).await.map_err(|e| e.to_string())?;
    check_size(job, &shown, data.len() as u64)?;
    let expected = match job.chunk.hash {
        Some(hash) => hash,
        None => {
            let path = format!("{dir}/{METADATA_FILE}");
            let bytes = cache
                .read(commit, &path)
                .await
                .map_err(|e| format!("request has no hash and {e}"))?;
            let meta: ChunkMetadata = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{path} at commit {commit}: {e}"))?;
            meta.original_hash
        }
    };
    Ok(Unchecked {
        data,
        expected,
        shown,
    })
}

/// Reads a staged chunk's bytes from the bucket (`staging/<hash>`, a key the request
/// check tied to the chunk's hash) and checks their size.
///
/// When the staged object is gone, `prune` removed it because the chunk is stored: the
/// bytes are then decoded from the chunk object (and checked the same way), so the
/// chunk completes as a duplicate instead of failing.
async fn read_staged(shared: &Shared, job: &Job) -> Result<Unchecked, String> {
    let key = job.chunk.staged_object.as_deref().unwrap_or_default();
    let expected = job
        .chunk
        .hash
        .ok_or("a staged chunk without a hash reached the worker")?;
    let store = &shared.config.store;
    let shown = format!("{key} in {}", store.url());
    let data = match store.get(key).await {
        Ok(object) => object.bytes.to_vec(),
        Err(StoreError::NotFound { .. }) => {
            match uploader::read_chunk_object(store.as_ref(), &expected, job.chunk.size).await {
                Ok(Some(Ok(data))) => data,
                Ok(Some(Err(why))) => return Err(format!("{shown} is missing and {why}")),
                Ok(None) => {
                    return Err(format!(
                        "{shown} is missing (was the chunk staged into another bucket?)"
                    ));
                }
                Err(e) => return Err(format!("{shown} is missing, and {e}")),
            }
        }
        Err(e) => return Err(format!("reading {shown}: {e}")),
    };
    check_size(job, &shown, data.len() as u64)?;
    Ok(Unchecked {
        data,
        expected,
        shown,
    })
}

fn check_size(job: &Job, shown: &str, actual: u64) -> Result<(), String> {
    if actual == job.chunk.size {
        Ok(())
    } else {
        Err(format!(
            "{shown} is {actual} bytes but the request says size {}",
            job.chunk.size
        ))
    }
}

/// The bytes and their SHA-256, when it is the one they must have.
fn check_hash(read: Unchecked) -> Result<(Vec<u8>, Sha256Digest), String> {
    let Unchecked {
        data,
        expected,
        shown,
    } = read;
    let actual = Sha256Digest::of(&data);
    if actual != expected {
        return Err(format!(
            "SHA-256 mismatch for {shown}: expected {expected}, the bytes have {actual}"
        ));
    }
    Ok((data, actual))
}

/// `Some` when the chunk is already in the bucket: from its completion record, or from
/// the chunk object itself when a worker stopped between storing it and recording it.
///
/// The bucket is not trusted: a chunk is reported completed only against an object that
/// is there and decodes, within the chunk's size, to the chunk's SHA-256. A record whose
/// object is gone (or names another key) is ignored and the chunk is done again; an
/// object that is there but does not decode to the chunk is reported as corrupt, by key,
/// because objects are create-only and this worker cannot replace it (docs/OPERATIONS.md
/// says what an operator does).
async fn already_stored(
    shared: &Shared,
    r: &Ready,
    lookup: Lookup,
) -> Option<Result<ChunkCompressed, String>> {
    let store = &shared.config.store;
    let record_key = object_keys::status_record(&r.sha);
    let failed = |what: &str, e: StoreError| Some(Err(format!("{what}: {e}")));
    match lookup.record {
        Ok(true) => {
            let object = match store.get(&record_key).await {
                Ok(object) => object,
                Err(e) => return failed("reading the completion record", e),
            };
            match serde_json::from_slice::<ChunkCompressed>(&object.bytes) {
                Ok(record) if record.status == Status::Completed => {
                    let codec = record
                        .upload_path
                        .as_deref()
                        .and_then(|key| chunk_codec(&r.sha, key));
                    match codec {
                        Some(codec) => {
                            let key = object_keys::chunk_object(&r.sha, codec);
                            match verify_object(shared, r, &key, codec).await {
                                Verified::Good { upload_hash } => {
                                    let mut stats = record.stats;
                                    mark_deduplicated(&mut stats);
                                    return Some(Ok(completed(
                                        shared,
                                        r,
                                        Some(key),
                                        Some(upload_hash),
                                        stats,
                                    )));
                                }
                                Verified::Missing => tracing::warn!(
                                    "{record_key} names {key}, which is not in the bucket; \
                                     redoing the chunk"
                                ),
                                Verified::Bad(reason) => return Some(Err(reason)),
                            }
                        }
                        None => tracing::warn!(
                            upload_path = ?record.upload_path,
                            "{record_key} does not name this chunk's object; redoing the chunk"
                        ),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    "{record_key} is not a completion record ({e}); redoing the chunk"
                ),
            }
        }
        Ok(false) => {}
        Err(e) => return failed("checking for a completion record", e),
    }
    // The chunk object under any codec's name. One `stat` per codec rather than a
    // listing: a listing of `chunks/` costs as much as the bucket is large on a local
    // directory, once for every new chunk.
    let keys = Codec::ALL.map(|codec| (object_keys::chunk_object(&r.sha, codec), codec));
    let stats = match lookup.objects {
        Some(stats) => stats,
        // A record that did not settle it: the objects were not looked up with the batch.
        None => {
            let names = keys.each_ref().map(|(key, _)| key.clone());
            store.stat_many(&names).await
        }
    };
    let mut found = None;
    for ((key, codec), stat) in keys.into_iter().zip(stats) {
        match stat {
            Ok(Some(info)) => {
                found = Some((key, codec, info));
                break;
            }
            Ok(None) => {}
            Err(e) => return failed("looking for a stored chunk", e),
        }
    }
    let (key, codec, info) = found?;
    let upload_hash = match verify_object(shared, r, &key, codec).await {
        Verified::Good { upload_hash } => upload_hash,
        // Deleted between the stat and the read: store it anew.
        Verified::Missing => return None,
        Verified::Bad(reason) => return Some(Err(reason)),
    };
    let mut stats = json!({ "codec": codec.to_string(), "output_bytes": info.size });
    mark_deduplicated(&mut stats);
    let record = completed(shared, r, Some(key), Some(upload_hash), stats);
    Some(write_record(shared, &r.sha, &record).await.map(|()| record))
}

/// What the batch's lookups found of one chunk, for [`already_stored`].
struct Lookup {
    /// Whether its completion record is there.
    record: Result<bool, StoreError>,
    /// The `stat` of its object under each of [`Codec::ALL`]'s names, when it has no
    /// record.
    objects: Option<Vec<Result<Option<uploader::ObjectInfo>, StoreError>>>,
}

/// What a stored chunk object turned out to be.
enum Verified {
    /// It decodes to the chunk; the SHA-256 of the object's bytes.
    Good { upload_hash: Sha256Digest },
    /// It is not in the bucket.
    Missing,
    /// It could not be read, or it is there and is not the chunk: why, naming the key.
    Bad(String),
}

/// Reads the object `key` (of `codec`) and checks that it decodes to the chunk `r`:
/// decoding stops past the chunk's size ([`gpu_compress::decompress_bounded`]), so a
/// hostile object costs no more memory than the chunk itself.
async fn verify_object(shared: &Shared, r: &Ready, key: &str, codec: Codec) -> Verified {
    let checked = uploader::check_chunk_object(
        shared.config.store.as_ref(),
        &r.sha,
        r.size as u64,
        Some(codec),
    )
    .await;
    match checked {
        Ok(ChunkObject::Good { upload_hash, .. }) => Verified::Good { upload_hash },
        Ok(ChunkObject::Missing) => Verified::Missing,
        Ok(ChunkObject::Corrupt(why)) => Verified::Bad(format!(
            "{why}; it is create-only, so the chunk cannot be stored again until an operator \
             removes it (docs/OPERATIONS.md, \"A corrupt chunk object\")"
        )),
        Err(e) => Verified::Bad(format!("reading the stored chunk {key}: {e}")),
    }
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
            shared.metrics.add_completed(is_deduplicated(&record));
            tracing::debug!(chunk = %chunk.chunk_path, upload = ?record.upload_path, "completed");
            record
        }
        Err(reason) => {
            shared.metrics.add_failed();
            tracing::warn!(chunk = %chunk.chunk_path, %reason, "chunk failed");
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
