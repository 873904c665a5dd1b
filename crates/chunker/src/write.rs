//! Writing a file's chunk tree.
//!
//! The file's structure is parsed first (headers only); then one worker per rayon thread
//! takes the next chunk, reads it at its offset into one of a small pool of buffers,
//! hashes and writes it, and feeds it to the whole-file hash, which takes chunks in file
//! order. At most `2 × threads + 1` chunks are in memory. The spans cut by content come
//! from a pass of their own (`pack`), which a large file's writers do not wait for: it
//! runs beside them and hands each span on as soon as it is final, and only a file whose
//! chunk names could depend on its final count (more than
//! [`FOUR_DIGIT_CHUNKS`](chunk_model::layout::FOUR_DIGIT_CHUNKS) chunks possible) is
//! cut whole first. Everything
//! goes to a hidden directory `<output>/.<name>.tmp-XXXX` (names starting with `.` are
//! never chunk trees), which is flushed and renamed to `<output>/<name>` only when
//! complete.
//!
//! A caller that dispatches chunks while a file is still being cut
//! ([`ChunkOptions::stream`]) gets each chunk of a large file as soon as it is written:
//! such a tree is written under its final name instead, each `metadata.json` only once
//! its `data.bin` is complete, and its `manifest.json` last, once the chunks are
//! flushed. Until the manifest is there the tree is incomplete; a file that fails is
//! removed again.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chunk_model::json_file::sync_dir;
use chunk_model::layout::{
    DATA_FILE, FOUR_DIGIT_CHUNKS, MANIFEST_FILE, METADATA_FILE, chunk_dir_name, validate_name,
};
use chunk_model::{
    ChunkMetadata, ExtraFields, Manifest, ManifestChunk, ModelError, Sha256Digest, Strategy,
    Timestamp,
};
use serde::Serialize;
use sha2::Digest as _;

use crate::plan::Planner;
use crate::{ChunkerConfig, ChunkerError, Format, Plan, PlanError, Span, plan};

/// A progress callback; called after each chunk is written, from the writing threads
/// (one call at a time, with counts that only grow).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Called with each chunk of a streamed file once it is written ([`ChunkOptions::stream`]),
/// from the writing threads, in the order the chunks are written (not their order in the
/// file).
pub type ChunkFn = Arc<dyn Fn(WrittenChunk<'_>) + Send + Sync>;

/// A chunk that is on disk: its `data.bin` complete, its `metadata.json` written.
#[derive(Debug, Clone, Copy)]
pub struct WrittenChunk<'a> {
    /// The file's tree name (`<output>/<name>`).
    pub name: &'a str,
    /// The chunk's directory name (`chunk_NNNN`).
    pub dir: &'a str,
    /// What its `metadata.json` says.
    pub metadata: &'a ChunkMetadata,
    /// Chunks of the file written so far, this one included.
    pub written: u64,
    /// This chunk completes the file: every chunk of its plan is written (the plan may
    /// still be being cut when the earlier ones are), and its manifest follows.
    pub last: bool,
}

/// How far [`chunk_file`] has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input hashed and written so far.
    pub bytes_done: u64,
    /// The input's size.
    pub total_bytes: u64,
    /// Chunks written so far.
    pub chunks_done: u64,
    /// Chunks planned so far: a large file's plan is cut while its first chunks are
    /// written.
    pub total_chunks: u64,
}

/// Where and how [`chunk_file`] writes.
#[derive(Clone)]
pub struct ChunkOptions {
    /// The chunk tree's root (`pending_compression`).
    pub output: PathBuf,
    /// The file's directory name under `output`; by default the file stem.
    pub name: Option<String>,
    /// Strategy and maximum chunk size.
    pub config: ChunkerConfig,
    /// Replace an existing chunk tree of the same name (atomically).
    pub force: bool,
    /// Flush every file and directory to disk before the rename (on by default; off
    /// only where durability does not matter, such as benchmarks of the CPU work).
    pub sync: bool,
    /// Called after each chunk is written.
    pub progress: Option<ProgressFn>,
    /// Hands over each chunk of a file larger than the maximum chunk size as soon as it
    /// is written, for a caller that dispatches chunks while the file is still being
    /// cut. Such a file's tree is then written under its final name as it is cut, not
    /// in a hidden folder renamed into place when complete: each `metadata.json` appears
    /// only once its `data.bin` is complete, the `manifest.json` last (after the chunks
    /// are flushed), and until then the tree is incomplete. A file that fails is
    /// removed. Its name must be free, even with `force`: a tree written in place
    /// cannot replace another atomically. Files of one chunk are not streamed.
    pub stream: Option<ChunkFn>,
}

impl ChunkOptions {
    /// Defaults: semantic, 1 MiB, name from the file stem, no force, synced.
    pub fn new(output: impl Into<PathBuf>) -> Self {
        Self {
            output: output.into(),
            name: None,
            config: ChunkerConfig::default(),
            force: false,
            sync: true,
            progress: None,
            stream: None,
        }
    }
}

impl fmt::Debug for ChunkOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkOptions")
            .field("output", &self.output)
            .field("name", &self.name)
            .field("config", &self.config)
            .field("force", &self.force)
            .field("sync", &self.sync)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .field("stream", &self.stream.as_ref().map(|_| "callback"))
            .finish()
    }
}

/// Chunks and bytes of one pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PatternStats {
    /// Number of chunks.
    pub chunks: u64,
    /// Their total size.
    pub bytes: u64,
}

/// What [`chunk_file`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkReport {
    /// The input file.
    pub source: PathBuf,
    /// The chunk tree's name.
    pub name: String,
    /// The chunk tree's directory.
    pub dir: PathBuf,
    /// The detected format.
    pub format: Format,
    /// Its grammar id.
    pub grammar_id: &'static str,
    /// The strategy used.
    pub strategy: Strategy,
    /// The maximum chunk size used.
    pub max_chunk_size: u64,
    /// The minimum chunk size used (0 for `size`).
    pub min_chunk_size: u64,
    /// The input's size.
    pub file_size: u64,
    /// SHA-256 of the whole input.
    pub file_hash: Sha256Digest,
    /// Number of chunks written.
    pub total_chunks: u64,
    /// Chunks that start with a keyframe.
    pub keyframe_chunks: u64,
    /// Where size chunking took over because the structure was not recognized to the
    /// end, and why.
    pub fallback: Option<String>,
    /// An existing chunk tree of the same name was replaced.
    pub replaced: bool,
    /// Chunks and bytes per pattern.
    pub patterns: BTreeMap<String, PatternStats>,
}

/// Opens `path` for chunking, with the checks every input gets.
fn open_input(path: &Path) -> Result<(File, u64), ChunkerError> {
    let unreadable = |source| ChunkerError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ChunkerError::NotAFile {
            path: path.to_owned(),
        });
    }
    let file = File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    if len == 0 {
        return Err(ChunkerError::Empty {
            path: path.to_owned(),
        });
    }
    Ok((file, len))
}

/// Plans the chunks of the file at `path` without writing anything.
pub fn plan_file(path: &Path, config: &ChunkerConfig) -> Result<Plan, ChunkerError> {
    let (file, len) = open_input(path)?;
    plan(&file, len, config).map_err(|source| ChunkerError::Plan {
        path: path.to_owned(),
        source,
    })
}

/// Chunks the file at `path` into `<output>/<name>/`.
pub fn chunk_file(path: &Path, options: &ChunkOptions) -> Result<ChunkReport, ChunkerError> {
    let name = match &options.name {
        Some(name) => name.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let output = &options.output;
    fs::create_dir_all(output).map_err(|source| ChunkerError::Write {
        path: output.clone(),
        source,
    })?;
    let written = write_tree(
        path,
        name,
        options,
        HowToWrite {
            durability: Durability::of(options),
            max_workers: usize::MAX,
            progress: options.progress.as_ref(),
        },
        options.stream.as_ref(),
    )?;
    let durability = Durability::of(options);
    flush_tree(written.dir.path(), durability)?;
    let (report, old) = written.install(options, true)?;
    remove_replaced(old);
    Ok(report)
}

/// Chunks many files at once: each `files[i].path` into `<output>/<files[i].name>/`
/// (`options.name` is not used), with the per-file costs of [`chunk_file`] paid once
/// for the whole batch. Returns one result per file, in order; a file that fails does
/// not stop the others.
///
/// Per file, [`chunk_file`] creates the output folder, flushes the filesystem
/// (`syncfs`) before its rename, and flushes the output folder after it; on a folder of
/// small files those waits, not the chunking, are the time. Here the trees are written
/// (small files several at a time, on the threads of `chunk_model::fs_batch`; files
/// larger than the maximum chunk size one at a time, each with all cores), then one
/// flush makes them all durable, then each is renamed into place, then one flush of
/// the output folder makes the renames durable. A tree still appears under its name
/// only complete and on disk; if the run dies before the renames, no tree appears. The
/// exception is a large file whose chunks go to `options.stream`: it is written in
/// place, and complete once its manifest is there.
///
/// `options.progress` is called after each chunk of a large file and after each small
/// file, with counts over the whole batch: `total_bytes` is the sum of the files'
/// [`InputFile::size`](crate::InputFile::size) (the sizes when they were found: a file
/// that changed since moves the count off the total), `total_chunks` the chunks
/// planned so far.
///
/// Two files given the same name: the first is chunked, the later ones fail with
/// [`ChunkerError::NameCollision`] (even with `force`, which replaces trees of earlier
/// runs only).
pub fn chunk_files(
    files: &[crate::InputFile],
    options: &ChunkOptions,
) -> Vec<Result<ChunkReport, ChunkerError>> {
    let output = &options.output;
    if let Err(source) = fs::create_dir_all(output) {
        return files
            .iter()
            .map(|_| {
                Err(ChunkerError::Write {
                    path: output.clone(),
                    source: chunk_model::fs_batch::copy_error(&source),
                })
            })
            .collect();
    }
    let durability = Durability::of(options);
    let mut results: Vec<Option<Result<WrittenTree, ChunkerError>>> =
        files.iter().map(|_| None).collect();
    let mut names = std::collections::HashSet::new();
    let mut small = Vec::new();
    let mut large = Vec::new();
    for (i, file) in files.iter().enumerate() {
        if !names.insert(file.name.as_str()) {
            results[i] = Some(Err(ChunkerError::NameCollision {
                path: file.path.clone(),
                dir: output.join(&file.name),
            }));
        } else if file.size > options.config.max_chunk_size {
            large.push(i);
        } else {
            small.push(i);
        }
    }
    // Files refused already do not count in the batch's bytes.
    let batch = BatchProgress::new(
        small.iter().chain(&large).map(|&i| files[i].size).sum(),
        options.progress.clone(),
    );
    // Small files: a few at a time, each on one thread; creating files and folders is
    // mostly kernel time, which overlaps across threads even on two cores.
    let written_small = chunk_model::fs_batch::map(small.clone(), |i| {
        let file = &files[i];
        let how = HowToWrite {
            durability,
            max_workers: 1,
            progress: None,
        };
        let result = write_tree(&file.path, file.name.clone(), options, how, None);
        batch.small_file_done(file.size, &result);
        result
    });
    for (i, result) in small.into_iter().zip(written_small) {
        results[i] = Some(result);
    }
    // Large files: one at a time, each with every core (`write_chunks`).
    for i in large {
        let file = &files[i];
        let progress = batch.for_large_file();
        let how = HowToWrite {
            durability,
            max_workers: usize::MAX,
            progress: progress.as_ref(),
        };
        let stream = options.stream.as_ref();
        let result = write_tree(&file.path, file.name.clone(), options, how, stream);
        results[i] = Some(result);
    }

    // One flush for every tree, then the renames, then one flush of the output folder.
    let flushed = match durability {
        Durability::None => Ok(()),
        // Each tree's own folder; its files were flushed as they were written.
        Durability::EachFile => results
            .iter()
            .flatten()
            .flatten()
            .try_for_each(|tree| flush_tree(tree.dir.path(), durability)),
        Durability::WholeTree => flush_tree(output, durability),
    };
    if let Err(error) = flushed {
        // Nothing was renamed: the temporary trees are deleted as they drop.
        let message = error.to_string();
        return results
            .into_iter()
            .map(|result| match result.expect("every file has a result") {
                Ok(tree) => Err(ChunkerError::Write {
                    path: tree.source.clone(),
                    source: io::Error::other(format!("flushing the chunk trees: {message}")),
                }),
                Err(error) => Err(error),
            })
            .collect();
    }
    let mut replaced = Vec::new();
    let mut reports: Vec<Result<ChunkReport, ChunkerError>> = results
        .into_iter()
        .map(|result| {
            let (report, old) = result
                .expect("every file has a result")?
                .install(options, false)?;
            replaced.extend(old);
            Ok(report)
        })
        .collect();
    if let Err(error) = sync_dir(output) {
        // The trees are in place but their renames may not be on disk yet.
        let message = error.to_string();
        for report in &mut reports {
            if let Ok(done) = report {
                *report = Err(ChunkerError::Write {
                    path: done.dir.clone(),
                    source: io::Error::other(message.clone()),
                });
            }
        }
    }
    for old in replaced {
        remove_replaced(Some(old));
    }
    reports
}

/// A batch's progress: counts over all its files, reported one call at a time.
struct BatchProgress {
    callback: Option<ProgressFn>,
    done: Mutex<Progress>,
}

impl BatchProgress {
    fn new(total_bytes: u64, callback: Option<ProgressFn>) -> Arc<Self> {
        Arc::new(BatchProgress {
            callback,
            done: Mutex::new(Progress {
                bytes_done: 0,
                total_bytes,
                chunks_done: 0,
                total_chunks: 0,
            }),
        })
    }

    /// Counts a small file, chunks and bytes at once. A file that failed counts as done
    /// too, so that the bytes reach the total.
    fn small_file_done(&self, size: u64, result: &Result<WrittenTree, ChunkerError>) {
        let Some(callback) = &self.callback else {
            return;
        };
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.bytes_done += size;
        if let Ok(tree) = result {
            done.chunks_done += tree.report.total_chunks;
            done.total_chunks += tree.report.total_chunks;
        }
        callback(*done);
    }

    /// A per-chunk callback for one large file, adding to the batch's counts.
    fn for_large_file(self: &Arc<Self>) -> Option<ProgressFn> {
        self.callback.as_ref()?;
        let batch = Arc::clone(self);
        let before = *batch.done.lock().unwrap_or_else(|e| e.into_inner());
        Some(Arc::new(move |p: Progress| {
            let mut done = batch.done.lock().unwrap_or_else(|e| e.into_inner());
            done.bytes_done = before.bytes_done + p.bytes_done;
            done.chunks_done = before.chunks_done + p.chunks_done;
            done.total_chunks = before.total_chunks + p.total_chunks;
            if let Some(callback) = &batch.callback {
                callback(*done);
            }
        }))
    }
}

/// A chunk tree written, not yet flushed or renamed into place.
struct WrittenTree {
    dir: TreeDir,
    source: PathBuf,
    report: ChunkReport,
}

/// Where a tree is written: a hidden folder renamed into place when complete, or, for a
/// streamed file, its final folder. Either is deleted if dropped before it is installed.
enum TreeDir {
    Hidden(tempfile::TempDir),
    InPlace(InPlaceDir),
}

impl TreeDir {
    fn path(&self) -> &Path {
        match self {
            TreeDir::Hidden(tmp) => tmp.path(),
            TreeDir::InPlace(dir) => &dir.path,
        }
    }
}

/// A tree's final folder while the tree is written in it: removed when dropped, unless
/// the tree was completed.
struct InPlaceDir {
    path: PathBuf,
    complete: bool,
}

impl Drop for InPlaceDir {
    fn drop(&mut self) {
        if !self.complete
            && let Err(e) = fs::remove_dir_all(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not delete an incomplete chunk tree");
        }
    }
}

impl WrittenTree {
    /// Renames the tree into place (replacing an existing one with `force`); returns the
    /// report and, when a tree was replaced, where the old one was parked for deleting.
    fn install(
        self,
        options: &ChunkOptions,
        sync_output: bool,
    ) -> Result<(ChunkReport, Option<PathBuf>), ChunkerError> {
        let mut report = self.report;
        let tmp = match self.dir {
            TreeDir::Hidden(tmp) => tmp,
            // Already under its name, and complete: nothing to rename or replace.
            TreeDir::InPlace(mut dir) => {
                dir.complete = true;
                if sync_output {
                    sync_dir(&options.output)?;
                }
                return Ok((report, None));
            }
        };
        let old = install(
            tmp,
            &report.dir,
            &options.output,
            &report.name,
            options.force,
            &report.source,
            sync_output,
        )?;
        report.replaced = old.is_some();
        Ok((report, old))
    }
}

/// Deletes a chunk tree that was replaced, once the new one is durably in place.
fn remove_replaced(old: Option<PathBuf>) {
    if let Some(old) = old
        && let Err(e) = fs::remove_dir_all(&old)
    {
        tracing::warn!(path = %old.display(), error = %e, "could not delete the replaced chunk tree");
    }
}

/// Writes the chunk tree of `path` under a temporary name in `options.output` (which
/// exists), or under its own name when its chunks are handed to `stream` (a file of
/// more than one chunk); the caller flushes and installs it.
fn write_tree(
    path: &Path,
    name: String,
    options: &ChunkOptions,
    how: HowToWrite<'_>,
    stream: Option<&ChunkFn>,
) -> Result<WrittenTree, ChunkerError> {
    let (file, len) = open_input(path)?;
    validate_name(&name).map_err(|source| ChunkerError::InvalidName {
        path: path.to_owned(),
        source,
    })?;
    let output = &options.output;
    let final_dir = output.join(&name);
    if final_dir.exists() && !options.force {
        return Err(ChunkerError::NameCollision {
            path: path.to_owned(),
            dir: final_dir,
        });
    }

    let plan_error = |source| ChunkerError::Plan {
        path: path.to_owned(),
        source,
    };
    let mut planner = Planner::new(&file, len, &options.config).map_err(plan_error)?;
    let workers = rayon::current_num_threads().min(how.max_workers).max(1);
    // Chunks are written while the rest of the file is still being cut when their
    // names cannot depend on the final count, and there is a second thread to cut.
    let spans = if workers > 1
        && len > options.config.max_chunk_size
        && planner.max_spans() <= FOUR_DIGIT_CHUNKS
    {
        PlannedSpans::cut_while_writing(planner.max_spans())
    } else {
        let mut spans = Vec::new();
        planner
            .cut(&mut |span| {
                spans.push(span);
                Ok::<_, PlanError>(())
            })
            .map_err(plan_error)?;
        PlannedSpans::complete(spans)
    };

    let stream = stream
        .filter(|_| spans.more_than_one())
        .map(|chunk_fn| Stream {
            name: &name,
            chunk_fn,
        });
    let dir = if stream.is_some() {
        fs::create_dir(&final_dir).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                ChunkerError::NameCollision {
                    path: path.to_owned(),
                    dir: final_dir.clone(),
                }
            } else {
                ChunkerError::Write {
                    path: final_dir.clone(),
                    source,
                }
            }
        })?;
        TreeDir::InPlace(InPlaceDir {
            path: final_dir.clone(),
            complete: false,
        })
    } else {
        TreeDir::Hidden(
            tempfile::Builder::new()
                .prefix(&format!(".{name}.tmp-"))
                .tempdir_in(output)
                .map_err(|source| ChunkerError::Write {
                    path: output.clone(),
                    source,
                })?,
        )
    };
    let created_at = Timestamp::now();
    let grammar_id = planner.format().grammar_id();
    let durability = how.durability;
    let (chunks, file_hash, spans) = write_chunks(
        path,
        &file,
        ChunkSource {
            spans,
            planner: &mut planner,
            workers,
        },
        dir.path(),
        grammar_id,
        &created_at,
        how,
        stream,
    )?;
    let plan = planner.into_plan(spans);

    let manifest = Manifest {
        base_name: name.clone(),
        total_chunks: chunks.len() as u64,
        created_at,
        grammar_id: Some(grammar_id.to_owned()),
        chunks,
        file_size: Some(len),
        file_hash: Some(file_hash),
        format: Some(plan.format.name().to_owned()),
        strategy: Some(plan.strategy),
        max_chunk_size: Some(plan.max_chunk_size),
        extra: ExtraFields::from_iter([(
            "min_chunk_size".to_owned(),
            serde_json::Value::from(plan.min_chunk_size),
        )]),
    };
    let manifest_path = dir.path().join(MANIFEST_FILE);
    match &dir {
        TreeDir::Hidden(_) => write_json(&manifest_path, &manifest, durability)?,
        // Readers take a tree with a manifest as complete: its chunks go to disk first.
        TreeDir::InPlace(_) => {
            flush_tree(dir.path(), durability)?;
            write_json_visible(&manifest_path, &manifest, durability)?;
        }
    }

    let mut patterns: BTreeMap<String, PatternStats> = BTreeMap::new();
    for chunk in &manifest.chunks {
        let stats = patterns.entry(chunk.pattern.clone()).or_default();
        stats.chunks += 1;
        stats.bytes += chunk.size;
    }
    Ok(WrittenTree {
        dir,
        source: path.to_owned(),
        report: ChunkReport {
            source: path.to_owned(),
            name,
            dir: final_dir,
            format: plan.format,
            grammar_id,
            strategy: plan.strategy,
            max_chunk_size: plan.max_chunk_size,
            min_chunk_size: plan.min_chunk_size,
            file_size: len,
            file_hash,
            total_chunks: manifest.total_chunks,
            keyframe_chunks: plan.keyframe_count() as u64,
            fallback: plan
                .fallback
                .map(|f| format!("from offset {}: {}", f.offset, f.reason)),
            replaced: false,
            patterns,
        },
    })
}

/// How the files of a chunk tree reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Not flushed (`sync: false`: benchmarks of the CPU work, scratch trees).
    None,
    /// Each file and chunk directory flushed as it is written: where there is no
    /// filesystem-wide flush (not Linux).
    EachFile,
    /// Writeback of each file started as it is written, and the whole tree flushed once
    /// before its rename ([`flush_tree`]). Two or three fsyncs per chunk, each waiting
    /// for the disk, had made a synced run on a real disk a third as fast as an
    /// unsynced one.
    WholeTree,
}

impl Durability {
    fn of(options: &ChunkOptions) -> Self {
        match options.sync {
            false => Durability::None,
            true if cfg!(target_os = "linux") => Durability::WholeTree,
            true => Durability::EachFile,
        }
    }
}

/// Makes the finished temporary tree durable before it is renamed into place: one
/// `syncfs` for all of its files and directories (`chunk_model::fs_batch`), or, where
/// they were flushed one by one, the tree's own directory.
fn flush_tree(dir: &Path, durability: Durability) -> Result<(), ChunkerError> {
    match durability {
        Durability::None => Ok(()),
        Durability::EachFile => Ok(sync_dir(dir)?),
        Durability::WholeTree => File::open(dir)
            .and_then(|dir| chunk_model::fs_batch::flush_filesystem(&dir))
            .map_err(|source| ChunkerError::Write {
                path: dir.to_owned(),
                source,
            }),
    }
}

/// How [`write_chunks`] writes: flushes, threads, progress.
#[derive(Clone, Copy)]
struct HowToWrite<'a> {
    durability: Durability,
    /// Threads at most (rayon's, or the caller's own when 1).
    max_workers: usize,
    /// Called after each chunk.
    progress: Option<&'a ProgressFn>,
}

/// A streamed file's name and where its chunks go ([`ChunkOptions::stream`]).
#[derive(Clone, Copy)]
struct Stream<'a> {
    name: &'a str,
    chunk_fn: &'a ChunkFn,
}

/// Chunk buffers per worker: one being worked on, one waiting for the whole-file hash.
const BUFFERS_PER_WORKER: usize = 2;

/// A fixed set of chunk buffers: bounds memory and, reused, costs no page faults after
/// the first chunks. Taking waits for a buffer to come back, or for the run to stop.
struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    returned: Condvar,
}

impl BufferPool {
    fn new(buffers: usize) -> Self {
        BufferPool {
            free: Mutex::new(vec![Vec::new(); buffers]),
            returned: Condvar::new(),
        }
    }

    /// A free buffer, or `None` once `stop` is set.
    fn take(&self, stop: &AtomicBool) -> Option<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop.load(Ordering::Acquire) {
                return None;
            }
            if let Some(buf) = free.pop() {
                return Some(buf);
            }
            free = self.returned.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn put(&self, buf: Vec<u8>) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buf);
        self.returned.notify_one();
    }

    /// Wakes every waiting worker to see `stop`.
    fn wake_all(&self) {
        // Taking the lock orders the wake-up after a waiter's check of `stop`.
        drop(self.free.lock().unwrap_or_else(|e| e.into_inner()));
        self.returned.notify_all();
    }
}

/// Stops every worker when dropped during a panic.
struct StopOnPanic<'a> {
    stop: &'a AtomicBool,
    pool: &'a BufferPool,
    spans: &'a PlannedSpans,
}

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.stop.store(true, Ordering::Release);
            self.pool.wake_all();
            self.spans.wake_all();
        }
    }
}

/// The whole-file SHA-256, fed with chunks in file order whatever order the workers
/// finish them in. A chunk that arrives early waits; whichever worker brings the next
/// chunk in order hashes it and every waiting successor (one worker at a time), so the
/// one sequential part of the work moves between workers instead of being tied to one
/// thread that the others crowd off the CPU.
struct InOrderHash {
    queue: Mutex<HashQueue>,
    hasher: Mutex<sha2::Sha256>,
}

struct HashQueue {
    /// The chunk the hash needs next.
    next: usize,
    /// Chunks that arrived before their turn.
    waiting: BTreeMap<usize, Vec<u8>>,
    /// A worker is hashing: the others only leave their chunks.
    busy: bool,
}

impl InOrderHash {
    fn new() -> Self {
        InOrderHash {
            queue: Mutex::new(HashQueue {
                next: 0,
                waiting: BTreeMap::new(),
                busy: false,
            }),
            hasher: Mutex::new(Sha256Digest::hasher()),
        }
    }

    /// Hands chunk `id` over; hashes it, and what waits behind it, when its turn has come
    /// and no other worker is hashing. Hashed buffers go back to `pool`.
    fn feed(&self, id: usize, buf: Vec<u8>, pool: &BufferPool) {
        let lock = || self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut queue = lock();
        queue.waiting.insert(id, buf);
        if queue.busy {
            return;
        }
        queue.busy = true;
        loop {
            let next = queue.next;
            let Some(buf) = queue.waiting.remove(&next) else {
                queue.busy = false;
                return;
            };
            drop(queue);
            self.hasher
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .update(&buf);
            pool.put(buf);
            queue = lock();
            queue.next += 1;
        }
    }

    /// The digest, once all `chunks` chunks have been fed.
    fn finish(self, chunks: usize) -> Sha256Digest {
        let queue = self.queue.into_inner().unwrap_or_else(|e| e.into_inner());
        assert_eq!(queue.next, chunks, "every chunk is hashed once, in order");
        Sha256Digest::from_hasher(self.hasher.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Reads exactly `buf.len()` bytes at `offset`.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Reads exactly `buf.len()` bytes at `offset`.
#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A file's spans as the writers take them: all of them from the start, or as the
/// planner cuts them.
struct PlannedSpans {
    state: Mutex<SpansState>,
    cut: Condvar,
    /// The count the chunks are named for ([`chunk_dir_name`]): the plan's, or a bound
    /// on it that gives the same names.
    names_for: u64,
}

struct SpansState {
    spans: Vec<Span>,
    /// Every span is there.
    complete: bool,
}

impl PlannedSpans {
    fn complete(spans: Vec<Span>) -> Self {
        PlannedSpans {
            names_for: spans.len() as u64,
            state: Mutex::new(SpansState {
                spans,
                complete: true,
            }),
            cut: Condvar::new(),
        }
    }

    /// Spans to come, at most `max_spans` of them (at most [`FOUR_DIGIT_CHUNKS`]).
    fn cut_while_writing(max_spans: u64) -> Self {
        debug_assert!(max_spans <= FOUR_DIGIT_CHUNKS);
        PlannedSpans {
            names_for: max_spans,
            state: Mutex::new(SpansState {
                spans: Vec::new(),
                complete: false,
            }),
            cut: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpansState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the file has more than one chunk: a file longer than the maximum chunk
    /// size has, whether or not it is cut yet.
    fn more_than_one(&self) -> bool {
        let state = self.lock();
        !state.complete || state.spans.len() > 1
    }

    /// Adds the next span cut, or marks the plan complete (after the last span, or
    /// because the cut failed).
    fn push(&self, span: Option<Span>) {
        let mut state = self.lock();
        match span {
            Some(span) => state.spans.push(span),
            None => state.complete = true,
        }
        drop(state);
        self.cut.notify_all();
    }

    /// Span `id` once it is cut; `None` when the plan has fewer spans, or once `stop`
    /// is set.
    fn wait_for(&self, id: usize, stop: &AtomicBool) -> Option<Span> {
        let mut state = self.lock();
        loop {
            if stop.load(Ordering::Acquire) {
                return None;
            }
            if let Some(span) = state.spans.get(id) {
                return Some(span.clone());
            }
            if state.complete {
                return None;
            }
            state = self.cut.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The spans cut so far, and whether that is all of them.
    fn count(&self) -> (u64, bool) {
        let state = self.lock();
        (state.spans.len() as u64, state.complete)
    }

    /// Wakes every waiting worker to see `stop`.
    fn wake_all(&self) {
        // Taking the lock orders the wake-up after a waiter's check of `stop`.
        drop(self.lock());
        self.cut.notify_all();
    }

    fn into_spans(self) -> Vec<Span> {
        self.state
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .spans
    }
}

/// Why the planner stopped cutting for the writers.
enum CutStop {
    Failed(PlanError),
    /// A writer failed: the rest of the plan is not needed.
    Stopped,
}

impl From<PlanError> for CutStop {
    fn from(error: PlanError) -> Self {
        CutStop::Failed(error)
    }
}

/// Where [`write_chunks`] takes its spans from.
struct ChunkSource<'a, 'f> {
    spans: PlannedSpans,
    /// Cuts the spans still to come, on the calling thread, while the workers write.
    planner: &'a mut Planner<&'f File>,
    /// Workers writing at once.
    workers: usize,
}

/// Reads, hashes and writes every chunk of a file; returns the manifest's chunks in
/// order, the whole file's hash, and the spans.
///
/// One worker per rayon thread (at most `max_workers`) takes the next chunk, reads it at
/// its offset, hashes it, writes its directory, and hands it to the whole-file hash
/// ([`InOrderHash`]). No thread is dedicated to reading or to the file hash: on two
/// cores a third, dedicated thread was crowded off the CPU and became the bottleneck.
/// The spans still to cut are cut by the thread that called, inside the same rayon
/// scope: it joins the workers once the plan is complete. The cut is one sequential
/// pass that reads a third of the bytes (`pack`); the workers, waiting for it only
/// when they are ahead, start on the first chunk instead of after the whole pass. The
/// first failure stops every worker and the cut; a read failure is reported before the
/// write failures it may have caused elsewhere.
#[allow(clippy::too_many_arguments)] // one file's whole context; a struct would only rename it
fn write_chunks(
    path: &Path,
    file: &File,
    source: ChunkSource<'_, '_>,
    dir: &Path,
    grammar_id: &str,
    created_at: &Timestamp,
    how: HowToWrite<'_>,
    stream: Option<Stream<'_>>,
) -> Result<(Vec<ManifestChunk>, Sha256Digest, Vec<Span>), ChunkerError> {
    let HowToWrite {
        durability,
        progress: progress_fn,
        ..
    } = how;
    let ChunkSource {
        spans,
        planner,
        workers,
    } = source;
    let file_size = planner.file_size();
    let (planned, complete) = spans.count();
    let workers = if complete {
        workers.min(planned as usize).max(1)
    } else {
        workers
    };
    let pool = BufferPool::new(workers * BUFFERS_PER_WORKER + 1);
    // A file of one chunk is hashed once: the chunk's hash is the file's.
    let one_chunk = complete && planned == 1;
    let file_hash = InOrderHash::new();
    let next_chunk = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let written = Mutex::new(Vec::with_capacity(planned as usize));
    // The first read failure, else the first write failure.
    let failure: Mutex<Option<ChunkerError>> = Mutex::new(None);
    let progress = Mutex::new(Progress {
        bytes_done: 0,
        total_bytes: file_size,
        chunks_done: 0,
        total_chunks: planned,
    });
    let fail = |error: ChunkerError| {
        let mut first = failure.lock().unwrap_or_else(|e| e.into_inner());
        let is_read = matches!(error, ChunkerError::Read { .. } | ChunkerError::Plan { .. });
        let first_is_read = matches!(
            *first,
            Some(ChunkerError::Read { .. } | ChunkerError::Plan { .. })
        );
        if first.is_none() || (is_read && !first_is_read) {
            *first = Some(error);
        }
        drop(first);
        stop.store(true, Ordering::Release);
        pool.wake_all();
        spans.wake_all();
    };
    let work = || {
        // A worker that panics (in the progress callback, say) may hold the chunk the
        // file hash waits for: the others would wait for buffers forever. Stop them;
        // the scope then re-raises the panic.
        let _stop_on_panic = StopOnPanic {
            stop: &stop,
            pool: &pool,
            spans: &spans,
        };
        // A buffer first, then a chunk number: whoever holds the chunk the file hash
        // needs next always has the buffer to read it into.
        while let Some(mut buf) = pool.take(&stop) {
            let id = next_chunk.fetch_add(1, Ordering::Relaxed);
            let Some(span) = spans.wait_for(id, &stop) else {
                pool.put(buf);
                return;
            };
            // Only growth is zero-filled: a reused buffer keeps its length, so refilling
            // it costs no memset.
            buf.resize(span.size as usize, 0);
            if let Err(source) = read_at(file, &mut buf, span.offset) {
                let source = if source.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file shrank while being chunked: expected {file_size} bytes"),
                    )
                } else {
                    source
                };
                pool.put(buf);
                fail(ChunkerError::Read {
                    path: path.to_owned(),
                    source,
                });
                return;
            }
            let to = ChunkTarget {
                dir,
                id: id as u64,
                names_for: spans.names_for,
                durability,
                in_place: stream.is_some(),
            };
            match write_chunk(&to, &span, &buf, grammar_id, created_at) {
                Ok((chunk, meta)) => {
                    let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
                    written.push(chunk);
                    if let Some(stream) = stream {
                        // The last span is cut before its chunk is written: the chunk
                        // written last sees the plan complete.
                        let (planned, complete) = spans.count();
                        // Under the lock, so that `written` counts up in the calls' order.
                        (stream.chunk_fn)(WrittenChunk {
                            name: stream.name,
                            dir: &chunk_dir_name(to.id, to.names_for),
                            metadata: &meta,
                            written: written.len() as u64,
                            last: complete && written.len() as u64 == planned,
                        });
                    }
                }
                Err(error) => {
                    pool.put(buf);
                    fail(error);
                    return;
                }
            }
            if let Some(report) = progress_fn {
                let mut done = progress.lock().unwrap_or_else(|e| e.into_inner());
                done.bytes_done += span.size;
                done.chunks_done += 1;
                done.total_chunks = spans.count().0;
                report(*done);
            }
            if one_chunk {
                pool.put(buf);
            } else {
                file_hash.feed(id, buf, &pool);
            }
        }
    };
    let cut = |planner: &mut Planner<&File>| {
        let result = planner.cut(&mut |span| {
            if stop.load(Ordering::Acquire) {
                return Err(CutStop::Stopped);
            }
            spans.push(Some(span));
            Ok(())
        });
        spans.push(None);
        if let Err(CutStop::Failed(source)) = result {
            fail(ChunkerError::Plan {
                path: path.to_owned(),
                source,
            });
        }
    };
    if workers == 1 {
        // A one-chunk file, or one of a batch's small files (already one per thread):
        // handing it to a rayon thread and waiting would only add two thread switches.
        if !complete {
            cut(planner);
        }
        work();
    } else {
        rayon::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|_| work());
            }
            if !complete {
                cut(planner);
            }
        });
    }
    if let Some(error) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(error);
    }
    let spans = spans.into_spans();
    let mut chunks = written.into_inner().unwrap_or_else(|e| e.into_inner());
    chunks.sort_unstable_by_key(|c| c.chunk_id);
    let file_hash = match chunks.as_slice() {
        [only] if one_chunk => only.hash,
        _ => file_hash.finish(spans.len()),
    };
    Ok((chunks, file_hash, spans))
}

/// Where [`write_chunk`] writes a chunk, and how.
struct ChunkTarget<'a> {
    /// The tree's folder.
    dir: &'a Path,
    /// The chunk's index, and the count its name is chosen for
    /// ([`PlannedSpans::names_for`]).
    id: u64,
    names_for: u64,
    durability: Durability,
    /// The tree is written in place (streamed): `metadata.json` must then never be seen
    /// half written.
    in_place: bool,
}

/// Writes one chunk's directory; returns its manifest entry and its metadata.
fn write_chunk(
    to: &ChunkTarget<'_>,
    span: &Span,
    data: &[u8],
    grammar_id: &str,
    created_at: &Timestamp,
) -> Result<(ManifestChunk, ChunkMetadata), ChunkerError> {
    let ChunkTarget {
        dir,
        id,
        names_for,
        durability,
        ..
    } = *to;
    let hash = Sha256Digest::of(data);
    let chunk_dir = dir.join(chunk_dir_name(id, names_for));
    fs::create_dir(&chunk_dir).map_err(|source| ChunkerError::Write {
        path: chunk_dir.clone(),
        source,
    })?;
    write_file(&chunk_dir.join(DATA_FILE), data, durability)?;
    let pattern = span.pattern.to_string();
    let mut meta = ChunkMetadata::new_pending(
        id,
        span.offset,
        span.size,
        hash,
        pattern.clone(),
        Some(grammar_id.to_owned()),
        created_at.clone(),
    );
    meta.is_keyframe = span.is_keyframe;
    // The design's detector reads `pattern` for its priority order.
    meta.pattern = Some(pattern.clone());
    // A packed chunk holds many structures; `pattern_type` names one of them. The
    // Python chunker had no such field: readers keep fields they do not know.
    meta.extra.insert(
        "structures".to_owned(),
        serde_json::to_value(&span.structures).expect("plain data serializes"),
    );
    let meta_path = chunk_dir.join(METADATA_FILE);
    if to.in_place {
        // After `data.bin`: a chunk whose metadata is there is complete.
        write_json_visible(&meta_path, &meta, durability)?;
    } else {
        write_json(&meta_path, &meta, durability)?;
    }
    if durability == Durability::EachFile {
        sync_dir(&chunk_dir)?;
    }
    let chunk = ManifestChunk {
        chunk_id: id,
        offset: span.offset,
        size: span.size,
        hash,
        pattern,
        is_keyframe: span.is_keyframe,
        extra: ExtraFields::new(),
    };
    Ok((chunk, meta))
}

/// Writes a new file inside the in-progress directory. It needs no rename of its own:
/// the whole directory becomes visible at once.
fn write_file(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), ChunkerError> {
    let write = || -> io::Result<()> {
        let mut file = File::create_new(path)?;
        file.write_all(bytes)?;
        match durability {
            Durability::None => {}
            Durability::EachFile => file.sync_all()?,
            Durability::WholeTree => chunk_model::fs_batch::start_writeback(&file, 0, 0),
        }
        Ok(())
    };
    write().map_err(|source| ChunkerError::Write {
        path: path.to_owned(),
        source,
    })
}

fn write_json<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), ChunkerError> {
    write_file(path, &json_bytes(path, value)?, durability)
}

/// `value` as the tree's documents are written: pretty, with a final newline.
fn json_bytes<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, ChunkerError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| ModelError::Json {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes a new document of a tree written in place: under a hidden temporary name
/// first, then renamed, so that no reader sees it half written.
fn write_json_visible<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), ChunkerError> {
    let bytes = json_bytes(path, value)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let write = || -> io::Result<()> {
        let temp = chunk_model::fs_batch::write_unflushed(dir, ".tmp-", &bytes)?;
        match durability {
            // Flushed as written where there is no filesystem-wide flush.
            Durability::None | Durability::EachFile => {}
            Durability::WholeTree => chunk_model::fs_batch::start_writeback(&temp.file, 0, 0),
        }
        temp.path.persist(path).map_err(|e| e.error)
    };
    write().map_err(|source| ChunkerError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Renames the finished directory into place. With `force`, an existing tree is first
/// renamed away (hidden), then the new one renamed in; if the second rename fails the
/// old tree is put back. Returns where the replaced tree was parked, for the caller to
/// delete once the rename is durable: after this function's flush of `output` when
/// `sync_output`, else after the caller's own (once for a whole batch).
fn install(
    tmp: tempfile::TempDir,
    final_dir: &Path,
    output: &Path,
    name: &str,
    force: bool,
    source: &Path,
    sync_output: bool,
) -> Result<Option<PathBuf>, ChunkerError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ChunkerError::Write { path, source }
    };
    let mut old = None;
    if final_dir.exists() {
        if !force {
            return Err(ChunkerError::NameCollision {
                path: source.to_owned(),
                dir: final_dir.to_owned(),
            });
        }
        // An empty hidden directory reserves a unique name; renaming a directory onto an
        // empty one replaces it.
        let parking = tempfile::Builder::new()
            .prefix(&format!(".{name}.old-"))
            .tempdir_in(output)
            .map_err(write_error(output))?
            .keep();
        fs::rename(final_dir, &parking).map_err(write_error(final_dir))?;
        old = Some(parking);
    }
    if let Err(e) = fs::rename(tmp.path(), final_dir) {
        if let Some(old) = &old
            && let Err(restore) = fs::rename(old, final_dir)
        {
            tracing::error!(old = %old.display(), error = %restore, "could not put the previous chunk tree back");
        }
        let collision = matches!(
            e.kind(),
            io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
        );
        return Err(if collision {
            ChunkerError::NameCollision {
                path: source.to_owned(),
                dir: final_dir.to_owned(),
            }
        } else {
            ChunkerError::Write {
                path: final_dir.to_owned(),
                source: e,
            }
        });
    }
    // The directory now lives under its final name; nothing is left to clean up.
    let _ = tmp.keep();
    if sync_output {
        sync_dir(output)?;
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn span(offset: u64, size: u64) -> Span {
        Span {
            offset,
            size,
            pattern: crate::FIXED_SIZE.into(),
            is_keyframe: false,
            structures: Vec::new(),
        }
    }

    #[test]
    fn writers_wait_for_spans_still_being_cut_and_stop_at_the_end_or_on_stop() {
        let spans = PlannedSpans::cut_while_writing(3);
        assert!(spans.more_than_one(), "a file still being cut has several");
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let second = scope.spawn(|| spans.wait_for(1, &stop));
            let after_the_end = scope.spawn(|| spans.wait_for(2, &stop));
            spans.push(Some(span(0, 10)));
            std::thread::sleep(Duration::from_millis(20));
            assert!(!second.is_finished(), "span 1 is not cut yet");
            spans.push(Some(span(10, 5)));
            assert_eq!(second.join().unwrap(), Some(span(10, 5)));
            assert_eq!(spans.count(), (2, false));
            spans.push(None);
            assert_eq!(after_the_end.join().unwrap(), None, "the plan has 2 spans");
        });
        assert_eq!(spans.count(), (2, true));
        assert_eq!(spans.wait_for(0, &stop), Some(span(0, 10)));

        let spans = PlannedSpans::cut_while_writing(3);
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| spans.wait_for(0, &stop));
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, Ordering::Release);
            spans.wake_all();
            assert_eq!(waiting.join().unwrap(), None, "a stop wakes the waiters");
        });
    }

    #[test]
    fn a_complete_plan_of_one_span_is_one_chunk() {
        let spans = PlannedSpans::complete(vec![span(0, 7)]);
        assert!(!spans.more_than_one());
        assert_eq!(spans.names_for, 1);
        assert_eq!(spans.count(), (1, true));
    }
}
