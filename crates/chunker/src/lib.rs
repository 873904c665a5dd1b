//! Cuts files into chunks and writes the chunk tree.
//!
//! One job: turn a file into `pending_compression/<name>/chunk_NNNN/{data.bin,
//! metadata.json}` plus `manifest.json`, cutting along the file format's own structure
//! (PNG chunks, JPEG segments and scans, MP4 boxes with `mdat` cut at keyframes, EBML
//! elements, RIFF chunks, PDF objects) or by size or content.
//!
//! Two invariants hold for every plan and are checked before anything is written: the
//! chunks tile the file exactly (no gap, no overlap, nothing dropped, however truncated
//! or corrupt the input), and no chunk is larger than the maximum chunk size. A chunk
//! tree appears under its final name only once it is complete and on disk.
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
mod pack;
mod parse;
mod plan;
mod source;
mod write;

pub use chunk_model::Strategy;
pub use error::ChunkerError;
pub use format::{Format, SNIFF_LEN, detect};
pub use plan::{
    ChunkerConfig, DEFAULT_MAX_CHUNK_SIZE, DEFAULT_MIN_CHUNK_SIZE, FIXED_SIZE, Fallback, Plan,
    PlanError, Span, Structure, plan,
};
pub use write::{
    ChunkOptions, ChunkReport, PatternStats, Progress, ProgressFn, chunk_file, plan_file,
};
