//! Panini as a library: the repository-side operations and the whole job, for the
//! `panini` binary, `cargo xtask` and any other Rust program.
//!
//! The component crates each do one thing (`chunker` cuts files, `detector` selects
//! chunks, `dispatcher` sends webhooks, `worker` compresses and stores, `uploader` knows
//! the bucket); this crate composes them into what a user runs:
//!
//! - [`sync`]: complete chunks from the completion records workers leave in the bucket,
//!   and publish the recipes of files whose chunks are all stored;
//! - [`stage`]: raw chunk bytes through the bucket (`staging/<sha256>`) instead of git;
//! - [`prune`]: free the raw bytes of completed chunks, in the tree and in the bucket,
//!   once their compressed objects verify;
//! - [`tree`]: the files and open chunks of a chunk tree;
//! - [`actions`]: the GitHub Actions context a dispatch carries (repository, commit, run);
//! - [`WorkerClient`]: a worker service seen over HTTP (`/status`, `/failures`), or one
//!   served from this process;
//! - [`Pipeline`]: chunk → detect → dispatch → compress and store → sync → rebuild and
//!   verify every file, returning a [`PipelineReport`].
//!
//! It must never print or read the process environment on its own: progress goes through
//! callbacks, and values such as tokens, commits and endpoints are passed in (the binary
//! reads the environment). The command line lives in [`cli`] (feature `cli`, on by
//! default).
//!
//! ```no_run
//! # async fn demo() -> Result<(), panini::Error> {
//! let mut config = panini::PipelineConfig::new("work");
//! config.files = vec!["photo.png".into(), "movie.mp4".into()];
//! let report = panini::Pipeline::new(config).run(|_| {}).await?;
//! assert!(report.files.iter().all(|f| f.verified));
//! # Ok(()) }
//! ```

pub mod actions;
#[cfg(feature = "cli")]
pub mod cli;
mod error;
pub mod output;
pub mod pipeline;
pub mod prune;
pub mod schema;
pub mod stage;
pub mod sync;
pub mod token;
pub mod tree;
pub mod worker_client;

pub use error::Error;
pub use pipeline::{PIPELINE_TREE_MARKER, Pipeline, PipelineConfig, PipelineEvent, PipelineReport};
pub use worker_client::WorkerClient;

// The component crates, so that one dependency on `panini` is enough.
pub use {chunk_model, chunker, detector, dispatcher, gpu_compress, uploader, worker};
