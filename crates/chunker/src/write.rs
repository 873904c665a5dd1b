//! Writing a file's chunk tree.
//!
//! The file is planned first (headers only), then streamed once in order: a reader
//! thread fills windows of a few dozen MiB while the previous window's chunks are
//! hashed and written in parallel (rayon) and the whole-file hash is updated. At most
//! three windows are in memory. Everything goes to a hidden directory
//! `<output>/.<name>.tmp-XXXX` (names starting with `.` are never chunk trees), which is
//! synced and renamed to `<output>/<name>` only when complete.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use chunk_model::json_file::sync_dir;
use chunk_model::layout::{DATA_FILE, MANIFEST_FILE, METADATA_FILE, chunk_dir_name, validate_name};
use chunk_model::{
    ChunkMetadata, ExtraFields, Manifest, ManifestChunk, ModelError, Sha256Digest, Strategy,
    Timestamp,
};
use rayon::prelude::*;
use serde::Serialize;
use sha2::Digest as _;

use crate::{ChunkerConfig, ChunkerError, Format, Plan, Span, plan};

/// Bytes read per window at least; a window always holds at least one whole chunk.
const MIN_WINDOW: u64 = 32 << 20;

/// A progress callback; called from the writing thread after each window.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// How far [`chunk_file`] has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input hashed and written so far.
    pub bytes_done: u64,
    /// The input's size.
    pub total_bytes: u64,
    /// Chunks written so far.
    pub chunks_done: u64,
    /// Chunks in the plan.
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
    /// Called after each window of chunks is written.
    pub progress: Option<ProgressFn>,
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
    let (file, len) = open_input(path)?;
    let name = match &options.name {
        Some(name) => name.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    validate_name(&name).map_err(|source| ChunkerError::InvalidName {
        path: path.to_owned(),
        source,
    })?;
    let output = &options.output;
    fs::create_dir_all(output).map_err(|source| ChunkerError::Write {
        path: output.clone(),
        source,
    })?;
    let final_dir = output.join(&name);
    if final_dir.exists() && !options.force {
        return Err(ChunkerError::NameCollision {
            path: path.to_owned(),
            dir: final_dir,
        });
    }

    let plan = plan(&file, len, &options.config).map_err(|source| ChunkerError::Plan {
        path: path.to_owned(),
        source,
    })?;

    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(output)
        .map_err(|source| ChunkerError::Write {
            path: output.clone(),
            source,
        })?;
    let created_at = Timestamp::now();
    let grammar_id = plan.format.grammar_id();
    let (chunks, file_hash) = write_chunks(
        path,
        &file,
        &plan,
        tmp.path(),
        grammar_id,
        &created_at,
        options,
    )?;

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
        extra: ExtraFields::new(),
    };
    write_json(&tmp.path().join(MANIFEST_FILE), &manifest, options.sync)?;
    if options.sync {
        sync_dir(tmp.path())?;
    }
    let replaced = install(tmp, &final_dir, output, &name, options.force, path)?;

    let mut patterns: BTreeMap<String, PatternStats> = BTreeMap::new();
    for chunk in &manifest.chunks {
        let stats = patterns.entry(chunk.pattern.clone()).or_default();
        stats.chunks += 1;
        stats.bytes += chunk.size;
    }
    Ok(ChunkReport {
        source: path.to_owned(),
        name,
        dir: final_dir,
        format: plan.format,
        grammar_id,
        strategy: plan.strategy,
        max_chunk_size: plan.max_chunk_size,
        file_size: len,
        file_hash,
        total_chunks: manifest.total_chunks,
        keyframe_chunks: plan.keyframe_count() as u64,
        fallback: plan
            .fallback
            .map(|f| format!("from offset {}: {}", f.offset, f.reason)),
        replaced,
        patterns,
    })
}

/// Groups spans into windows of at most `max(MIN_WINDOW, max_chunk_size)` bytes.
fn windows(spans: &[Span], max_chunk_size: u64) -> Vec<Range<usize>> {
    let limit = MIN_WINDOW.max(max_chunk_size);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, span) in spans.iter().enumerate() {
        if i > start && bytes + span.size > limit {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += span.size;
    }
    if start < spans.len() {
        out.push(start..spans.len());
    }
    out
}

fn write_chunks(
    path: &Path,
    file: &File,
    plan: &Plan,
    dir: &Path,
    grammar_id: &str,
    created_at: &Timestamp,
    options: &ChunkOptions,
) -> Result<(Vec<ManifestChunk>, Sha256Digest), ChunkerError> {
    let windows = windows(&plan.spans, plan.max_chunk_size);
    let total = plan.spans.len() as u64;
    let read_error = |source| ChunkerError::Read {
        path: path.to_owned(),
        source,
    };
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..2 {
        free_tx.send(Vec::new()).expect("receiver alive");
    }
    let spans = &plan.spans;
    let windows_ref = &windows;

    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut reader = file;
            if let Err(e) = reader.seek(SeekFrom::Start(0)) {
                let _ = full_tx.send(Err(e));
                return;
            }
            for window in windows_ref {
                let Ok(mut buf) = free_rx.recv() else { return };
                let first = &spans[window.start];
                let want = spans[window.end - 1].end() - first.offset;
                buf.clear();
                buf.reserve_exact(want as usize);
                let result = (&mut reader)
                    .take(want)
                    .read_to_end(&mut buf)
                    .and_then(|n| {
                        if n as u64 == want {
                            Ok(buf)
                        } else {
                            Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!(
                                    "file shrank while being chunked: expected {} bytes",
                                    plan.file_size
                                ),
                            ))
                        }
                    });
                let failed = result.is_err();
                if full_tx.send(result).is_err() || failed {
                    return;
                }
            }
        });

        // Owning the channel ends here makes the reader stop if writing fails.
        let consume = move || -> Result<(Vec<ManifestChunk>, Sha256Digest), ChunkerError> {
            let mut hasher = Sha256Digest::hasher();
            let mut chunks = Vec::with_capacity(spans.len());
            let mut bytes_done = 0;
            for window in windows_ref {
                let buf = full_rx
                    .recv()
                    .map_err(|_| read_error(io::Error::other("reader stopped")))?
                    .map_err(read_error)?;
                let base = spans[window.start].offset;
                let (_, written) = rayon::join(
                    || hasher.update(&buf),
                    || {
                        spans[window.clone()]
                            .par_iter()
                            .enumerate()
                            .map(|(i, span)| {
                                let start = (span.offset - base) as usize;
                                let data = &buf[start..start + span.size as usize];
                                let id = (window.start + i) as u64;
                                write_chunk(
                                    dir,
                                    span,
                                    id,
                                    total,
                                    data,
                                    grammar_id,
                                    created_at,
                                    options.sync,
                                )
                            })
                            .collect::<Result<Vec<_>, _>>()
                    },
                );
                chunks.extend(written?);
                bytes_done += buf.len() as u64;
                let _ = free_tx.send(buf);
                if let Some(progress) = &options.progress {
                    progress(Progress {
                        bytes_done,
                        total_bytes: plan.file_size,
                        chunks_done: chunks.len() as u64,
                        total_chunks: total,
                    });
                }
            }
            Ok((chunks, Sha256Digest::from_hasher(hasher)))
        };
        consume()
    })
}

#[allow(clippy::too_many_arguments)] // one chunk's whole context; a struct would only rename it
fn write_chunk(
    dir: &Path,
    span: &Span,
    id: u64,
    total: u64,
    data: &[u8],
    grammar_id: &str,
    created_at: &Timestamp,
    sync: bool,
) -> Result<ManifestChunk, ChunkerError> {
    let hash = Sha256Digest::of(data);
    let chunk_dir = dir.join(chunk_dir_name(id, total));
    fs::create_dir(&chunk_dir).map_err(|source| ChunkerError::Write {
        path: chunk_dir.clone(),
        source,
    })?;
    write_file(&chunk_dir.join(DATA_FILE), data, sync)?;
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
    write_json(&chunk_dir.join(METADATA_FILE), &meta, sync)?;
    if sync {
        sync_dir(&chunk_dir)?;
    }
    Ok(ManifestChunk {
        chunk_id: id,
        offset: span.offset,
        size: span.size,
        hash,
        pattern,
        is_keyframe: span.is_keyframe,
        extra: ExtraFields::new(),
    })
}

/// Writes a new file inside the in-progress directory. It needs no rename of its own:
/// the whole directory becomes visible at once.
fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<(), ChunkerError> {
    let write = || -> io::Result<()> {
        let mut file = File::create_new(path)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|source| ChunkerError::Write {
        path: path.to_owned(),
        source,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T, sync: bool) -> Result<(), ChunkerError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| ModelError::Json {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    write_file(path, &bytes, sync)
}

/// Renames the finished directory into place. With `force`, an existing tree is first
/// renamed away (hidden), then the new one renamed in, then the old one deleted; if the
/// second rename fails the old tree is put back. Returns whether a tree was replaced.
fn install(
    tmp: tempfile::TempDir,
    final_dir: &Path,
    output: &Path,
    name: &str,
    force: bool,
    source: &Path,
) -> Result<bool, ChunkerError> {
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
    sync_dir(output)?;
    let replaced = old.is_some();
    if let Some(old) = old
        && let Err(e) = fs::remove_dir_all(&old)
    {
        tracing::warn!(path = %old.display(), error = %e, "could not delete the replaced chunk tree");
    }
    Ok(replaced)
}
