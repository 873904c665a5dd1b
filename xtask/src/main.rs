//! `cargo xtask <task>`: Panini's command line and build system.
//!
//! Every user-facing command and every CI step is a subcommand here, so the same code
//! runs on a laptop, in GitHub Actions and in `.ci/run`. Each task lives in its own
//! module; this file only parses the command line and dispatches.

mod apply_callback;
mod bench_all;
mod bench_compress;
mod bench_dispatch;
mod bench_upload;
mod chunk;
mod ci;
mod codegen;
mod compress;
mod detect;
mod dispatch;
mod gpu_check;
mod opencl_build;
mod pipeline;
mod serve_worker;
mod status;
mod store_cli;
mod workflow_lint;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Panini: chunk, compress and store files, and rebuild them bit for bit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole pipeline on one machine: chunk, detect, dispatch to in-process workers over
    /// HTTP, compress, upload, sync, rebuild every file from the bucket and verify it.
    Pipeline(pipeline::Args),
    /// Rebuild files from a bucket in memory and check every chunk and file SHA-256.
    Verify(store_cli::VerifyArgs),
    /// Cut files into chunk trees under pending_compression/ (semantic, size or adaptive).
    Chunk(chunk::Args),
    /// Chunks and bytes per status, per file of a chunk tree.
    Status(status::Args),
    /// Install what the tests need, start the services, run every check and test, stop the services.
    Ci(ci::Args),
    /// Regenerate the JSON Schemas under docs/schemas/.
    Codegen(codegen::Args),
    /// Compress a file into an LZ4/zstd frame (or store it), printing engine, device and stats.
    Compress(compress::CompressArgs),
    /// Decompress an LZ4 or zstd frame (codec read from its magic number).
    Decompress(compress::DecompressArgs),
    /// Run the OpenCL LZ4 kernel on ≥ 1 GiB, verify every frame, print GB/s.
    GpuCheck(gpu_check::Args),
    /// List the chunks to compress in dispatch order; write chunks_to_process.json and step outputs.
    Detect(detect::Args),
    /// Apply a worker's chunk_compressed event (payload or $GITHUB_EVENT_PATH) to the chunk's metadata.
    ApplyCallback(apply_callback::Args),
    /// Lint .github/workflows/ with actionlint and zizmor (from a venv).
    LintWorkflows(workflow_lint::Args),
    /// Send chunks_to_process.json to workers (batches, retries, failover); record outcomes.
    Dispatch(dispatch::DispatchArgs),
    /// Print a new auth token: 32 random bytes, URL-safe base64.
    GenToken,
    /// Run the compression worker service (POST /webhook, GET /status, /healthz, /metrics).
    Worker(serve_worker::Args),
    /// Mark chunks completed from the completion records in the bucket.
    Sync(dispatch::SyncArgs),
    /// Upload a file's chunks (compressed) and then its recipe to gs://bucket[/prefix] or a directory.
    Upload(store_cli::UploadArgs),
    /// Rebuild a file from its recipe and chunk objects, checking every chunk and the whole file.
    Reconstruct(store_cli::ReconstructArgs),
    /// Benchmarks beside the reference tools; results under target/bench/. Without a
    /// subcommand: every stage and the whole pipeline, report.md/.json/.svg.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        what: Option<Bench>,
        #[command(flatten)]
        all: bench_all::Args,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Panini's codecs and engines vs `lz4 -1`, `zstd -1/-3 -T0` on a generated corpus.
    Compress(bench_compress::Args),
    /// 10,000 chunks to a local worker: chunks/s in batch and per-chunk mode, worker throughput.
    Dispatch(bench_dispatch::Args),
    /// Upload ≥ 1 GiB of chunk objects to the GCS emulator, beside `rclone copy`.
    Upload(bench_upload::Args),
}

fn main() -> anyhow::Result<()> {
    opencl_build::reexec_with_opencl_if_available();
    let cli = Cli::parse();
    match cli.command {
        Command::Pipeline(args) => pipeline::run(args),
        Command::Verify(args) => store_cli::verify(args),
        Command::Chunk(args) => chunk::run(args),
        Command::Status(args) => status::run(args),
        Command::Ci(args) => ci::run(args),
        Command::Codegen(args) => codegen::run(args),
        Command::Compress(args) => compress::compress(args),
        Command::Decompress(args) => compress::decompress(args),
        Command::GpuCheck(args) => gpu_check::run(args),
        Command::Detect(args) => detect::run(args),
        Command::ApplyCallback(args) => apply_callback::run(args),
        Command::LintWorkflows(args) => workflow_lint::run(args),
        Command::Dispatch(args) => dispatch::dispatch(args),
        Command::GenToken => dispatch::gen_token(),
        Command::Worker(args) => serve_worker::run(args),
        Command::Sync(args) => dispatch::sync(args),
        Command::Bench { what: None, all } => bench_all::run(all),
        Command::Bench {
            what: Some(Bench::Compress(args)),
            ..
        } => bench_compress::run(args),
        Command::Upload(args) => store_cli::upload(args),
        Command::Reconstruct(args) => store_cli::reconstruct(args),
        Command::Bench {
            what: Some(Bench::Upload(args)),
            ..
        } => bench_upload::run(args),
        Command::Bench {
            what: Some(Bench::Dispatch(args)),
            ..
        } => bench_dispatch::run(args),
    }
}
