//! The command line of the `panini` binary, which `cargo xtask` also serves (its user
//! commands are these, flattened beside its developer commands).
//!
//! Each command lives in its own module: it parses its arguments, reads the environment
//! (tokens, secrets, GitHub Actions' variables), calls the library, and prints. This is
//! the only part of the crate that prints or reads the process environment, and the
//! only part that uses `anyhow`; its public face is [`Command`] and [`run`].

mod apply_callback;
mod chunk;
mod compress;
mod detect;
mod dispatch;
mod pipeline;
mod serve_worker;
mod status;
mod store_cli;

use std::process::ExitCode;

/// Every user command of `panini` (and `cargo xtask`).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The whole pipeline on one machine: chunk, detect, dispatch to in-process workers over
    /// HTTP, compress, upload, sync, rebuild every file from the bucket and verify it.
    Pipeline(pipeline::Args),
    /// Rebuild files from a bucket in memory and check every chunk and file SHA-256.
    Verify(store_cli::VerifyArgs),
    /// Cut files into chunk trees under pending_compression/ (semantic, size or adaptive).
    Chunk(chunk::Args),
    /// Chunks and bytes per status, per file of a chunk tree.
    Status(status::Args),
    /// Compress a file into an LZ4/zstd frame (or store it), printing engine, device and stats.
    Compress(compress::CompressArgs),
    /// Decompress an LZ4 or zstd frame (codec read from its magic number).
    Decompress(compress::DecompressArgs),
    /// List the chunks to compress in dispatch order; write chunks_to_process.json and step outputs.
    Detect(detect::Args),
    /// Apply a worker's chunk_compressed event (payload or $GITHUB_EVENT_PATH) to the chunk's metadata.
    ApplyCallback(apply_callback::Args),
    /// Send chunks_to_process.json to workers (batches, retries, failover); record outcomes.
    Dispatch(dispatch::DispatchArgs),
    /// Print a new auth token: 32 random bytes, URL-safe base64.
    GenToken,
    /// Run the compression worker service (POST /webhook, GET /status, /healthz, /metrics).
    Worker(serve_worker::Args),
    /// Mark chunks completed from the completion records in the bucket, and publish the
    /// recipes of files whose chunks are all stored.
    Sync(dispatch::SyncArgs),
    /// Upload a file's chunks (compressed) and then its recipe to gs://bucket[/prefix] or a directory.
    Upload(store_cli::UploadArgs),
    /// Rebuild a file from its recipe and chunk objects, checking every chunk and the whole file.
    Reconstruct(store_cli::ReconstructArgs),
}

/// The `panini` binary: `panini <command> …`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "panini",
    version,
    about = "Panini: chunk, compress and store files, and rebuild them bit for bit"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Runs one command; prints its error (with its causes) on stderr and returns a failing
/// exit code when it fails.
pub fn run(command: Command) -> ExitCode {
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Pipeline(args) => pipeline::run(args),
        Command::Verify(args) => store_cli::verify(args),
        Command::Chunk(args) => chunk::run(args),
        Command::Status(args) => status::run(args),
        Command::Compress(args) => compress::compress(args),
        Command::Decompress(args) => compress::decompress(args),
        Command::Detect(args) => detect::run(args),
        Command::ApplyCallback(args) => apply_callback::run(args),
        Command::Dispatch(args) => dispatch::dispatch(args),
        Command::GenToken => dispatch::gen_token(),
        Command::Worker(args) => serve_worker::run(args),
        Command::Sync(args) => dispatch::sync(args),
        Command::Upload(args) => store_cli::upload(args),
        Command::Reconstruct(args) => store_cli::reconstruct(args),
    }
}

/// Logs to stderr at `default` unless `RUST_LOG` says otherwise; a second call is a no-op.
pub(crate) fn init_tracing(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
