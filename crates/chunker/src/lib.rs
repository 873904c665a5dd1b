//! Cuts files into chunks and writes the chunk tree.
//!
//! One job: turn a file into `pending_compression/<name>/chunk_NNNN/{data.bin,
//! metadata.json}` plus `manifest.json`, cutting where the file format's own structure
//! allows (PNG chunks, JPEG segments and scans, MP4 boxes and fragments, EBML elements,
//! RIFF chunks, PDF objects; in video, only at keyframes), packing small structures
//! into chunks between a minimum and a maximum size, and cutting spans without finer
//! structure by content (FastCDC), so an edit changes only the chunks around it. The
//! `size` strategy cuts every `max_chunk_size` bytes instead. [`figures`] compares ways
//! of cutting (chunks per MiB, chunks an edit changes).
//!
//! Two invariants hold for every plan and are checked span by span before each chunk is
//! written, and whole before the manifest: the chunks tile the file exactly (no gap, no
//! overlap, nothing dropped, however truncated or corrupt the input), and no chunk is
//! larger than the maximum chunk size. A chunk tree appears under its final name only
//! once it is complete and on disk.
//!
//! Folders and many files: [`expand_inputs`] turns the files and folders a user names
//! into files with distinct chunk tree names (walking folders with `.gitignore` rules,
//! hidden files and `--exclude` globs left out), and [`chunk_files`] chunks them with
//! one flush for the whole batch instead of one per file.
//!
//! This crate knows nothing about compression, dispatch, workers or cloud storage, and
//! nothing about terminals: progress is reported through a callback.
//!
//! ```no_run
//! use chunker::{ChunkOptions, chunk_file};
//! let report = chunk_file("movie.mp4".as_ref(), &ChunkOptions::new("pending_compression"))?;
//! println!("{} chunks in {}", report.total_chunks, report.dir.display());
//! # Ok::<(), chunker::ChunkerError>(())
//! ```

mod error;
pub mod figures;
mod format;
mod inputs;
mod pack;
mod parse;
mod plan;
mod source;
mod write;

pub use chunk_model::Strategy;
pub use error::ChunkerError;
pub use format::{Format, SNIFF_LEN, detect};
pub use inputs::{
    InputError, InputFile, InputOptions, Inputs, NAME_SEPARATOR, SkipReason, Skipped, assign_names,
    expand_inputs,
};
pub use plan::{
    ChunkerConfig, DEFAULT_MAX_CHUNK_SIZE, DEFAULT_MIN_CHUNK_SIZE, FIXED_SIZE, Fallback, Plan,
    PlanError, Span, Structure, plan,
};
pub use write::{
    ChunkFn, ChunkOptions, ChunkReport, PatternStats, Progress, ProgressFn, WrittenChunk,
    chunk_file, chunk_files, plan_file,
};
