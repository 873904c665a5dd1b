//! Finds the chunks that need compressing, and records what workers report back.
//!
//! This crate's one job is the repository side of the chunk tree's life cycle: it scans
//! `pending_compression/*/chunk_*/metadata.json` (configurable glob patterns, walked in
//! parallel), decides which chunks are dispatchable — `pending` ones, `failed` ones with
//! attempts left, `queued`/`processing` ones whose lease ran out, or everything not
//! `completed` when forced — orders them by dispatch priority, and writes
//! `chunks_to_process.json` and the GitHub Actions step outputs. Its [`callback`] module
//! applies a worker's `chunk_compressed` event to one chunk's `metadata.json`.
//!
//! It must never know how chunks are sent to workers (HTTP, webhooks, tokens), how they
//! are compressed, or where they are stored: it reads and writes the chunk tree and
//! nothing else. Time comes in as an argument (`now`) so that lease decisions are
//! reproducible.
//!
//! ```no_run
//! use detector::{DetectConfig, scan};
//! let report = scan(&DetectConfig::new("pending_compression"), chrono::Utc::now())?;
//! report.write_chunks_file("chunks_to_process.json".as_ref())?;
//! println!("{}", report.summary());
//! # Ok::<(), detector::DetectError>(())
//! ```

pub mod actions;
pub mod callback;
mod config;
mod dirfd;
mod error;
mod fast_meta;
mod patterns;
mod report;
mod scan;
mod select;

pub use callback::{
    CallbackError, CallbackOutcome, Change, ChunkResolver, apply_callback, apply_callback_locked,
    apply_to_metadata, check_payload, metadata_resolver, payload_from_value, read_payload,
    resolve_metadata,
};
pub use config::{
    DEFAULT_BASE, DEFAULT_LEASE, DEFAULT_MAX_ATTEMPTS, DEFAULT_OUTPUT, DetectConfig,
    LARGE_CHUNK_BYTES,
};
pub use error::DetectError;
pub use report::{InvalidFile, ScanReport, SelectedChunk, SkipCounts, Summary};
pub use scan::scan;
pub use select::{Decision, SelectReason, SkipReason, chunk_info, decide, priority_of};
