//! The command line of the `panini` binary, which `cargo xtask` also serves (its user
//! commands are these, flattened beside its developer commands).
//!
//! Each command lives in its own module: it parses its arguments, reads the environment
//! (tokens, secrets, GitHub Actions' variables), calls the library, and prints. This is
//! the only part of the crate that prints or reads the process environment, and the
//! only part that uses `anyhow`; its public face is [`Command`] and [`run`].

mod apply_callback;
mod chunk;
pub(crate) mod common;
mod compress;
mod detect;
mod dispatch;
mod pipeline;
mod serve_worker;
mod stage;
mod status;
mod store_cli;

use std::process::ExitCode;

pub use common::GlobalArgs;

/// Every user command of `panini` (and `cargo xtask`).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The whole pipeline on one machine: chunk, detect, dispatch to in-process workers over
    /// HTTP, compress, upload, sync, rebuild every file from the bucket and verify it.
    #[command(
        after_long_help = "Examples:\n  panini pipeline                          # generated samples, work in ./panini-work\n  panini pipeline photo.png report.pdf --work-dir /tmp/try\n  panini pipeline --bucket gs://my-bucket/panini --json > report.json\n  panini pipeline big.mp4 --stage --prune  # raw bytes through the bucket, freed at the end"
    )]
    Pipeline(pipeline::Args),
    /// Rebuild files from a bucket in memory and check every chunk and file SHA-256.
    #[command(
        after_long_help = "Examples:\n  panini verify --bucket gs://my-bucket/panini\n  panini verify photo --bucket ./bucket --json"
    )]
    Verify(store_cli::VerifyArgs),
    /// Cut files into chunk trees under pending_compression/ (semantic, size or adaptive).
    #[command(
        after_long_help = "Examples:\n  panini chunk photo.png movie.mp4\n  panini chunk big.bin --strategy adaptive --chunk-size 4M --json"
    )]
    Chunk(chunk::Args),
    /// Chunks and bytes per status, per file of a chunk tree.
    #[command(
        after_long_help = "Examples:\n  panini status\n  panini status --base pending_compression --json"
    )]
    Status(status::Args),
    /// Compress a file into an LZ4/zstd frame (or store it), printing engine, device and stats.
    Compress(compress::CompressArgs),
    /// Decompress an LZ4 or zstd frame (codec read from its magic number).
    Decompress(compress::DecompressArgs),
    /// List the chunks to compress in dispatch order; write chunks_to_process.json and step outputs.
    #[command(
        after_long_help = "Examples:\n  panini detect\n  panini detect --force --lease 10m --json"
    )]
    Detect(detect::Args),
    /// Apply a worker's chunk_compressed event (payload or $GITHUB_EVENT_PATH) to the chunk's metadata.
    #[command(after_long_help = "Examples:\n  panini apply-callback --payload event.json")]
    ApplyCallback(apply_callback::Args),
    /// Send chunks_to_process.json to workers (batches, retries, failover); record outcomes.
    #[command(
        after_long_help = "Examples:\n  panini dispatch --dry-run --per-chunk\n  COLAB_AUTH_TOKEN=… panini dispatch --webhook https://gpu1.example/webhook --json"
    )]
    Dispatch(dispatch::DispatchArgs),
    /// Print a new auth token: 32 random bytes, URL-safe base64.
    #[command(after_long_help = "Example:\n  panini gen-token > token.txt")]
    GenToken,
    /// Run the compression worker service (POST /webhook, GET /status, /healthz, /metrics).
    #[command(
        after_long_help = serve_worker::LONG_HELP
    )]
    Worker(serve_worker::Args),
    /// Mark chunks completed from the completion records in the bucket, and publish the
    /// recipes of files whose chunks are all stored.
    #[command(after_long_help = "Examples:\n  panini sync --bucket gs://my-bucket/panini")]
    Sync(dispatch::SyncArgs),
    /// Upload a file's chunks (compressed) and then its recipe to gs://bucket[/prefix] or a directory.
    #[command(
        after_long_help = "Examples:\n  panini upload photo --bucket ./bucket\n  panini upload photo --bucket gs://my-bucket/panini --max-bytes-per-second 50M --json"
    )]
    Upload(store_cli::UploadArgs),
    /// Rebuild a file from its recipe and chunk objects, checking every chunk and the whole file.
    #[command(
        after_long_help = "Examples:\n  panini reconstruct photo --bucket gs://my-bucket/panini -o photo.png\n  panini reconstruct photo --bucket ./bucket -o rebuilt.png --json"
    )]
    Reconstruct(store_cli::ReconstructArgs),
    /// Upload the bytes of pending chunks to the bucket (staging/<sha256>) and remove
    /// their data.bin, so that git carries metadata only; workers read them from the bucket.
    #[command(
        after_long_help = "Examples:\n  panini stage --bucket gs://my-bucket/panini\n  panini chunk movie.mp4 --stage gs://my-bucket/panini   # chunk and stage in one step"
    )]
    Stage(stage::StageArgs),
    /// Free the raw bytes of completed chunks (their data.bin, and staged objects in the
    /// bucket) once their compressed objects read back and verify.
    #[command(
        after_long_help = "Examples:\n  panini prune --bucket gs://my-bucket/panini --dry-run\n  panini prune --bucket gs://my-bucket/panini --json"
    )]
    Prune(stage::PruneArgs),
}

/// The `panini` binary: `panini <command> …`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "panini",
    version,
    about = "Panini: chunk, compress and store files, and rebuild them bit for bit",
    subcommand_help_heading = "Commands",
    after_help = "Each command has --help with an example. Logs go to stderr; RUST_LOG overrides -v/-q."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// -v / -q, for every command.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Runs one command; prints its error on stderr as one line (each cause once, then a
/// hint where one is known) and returns a failing exit code when it fails.
pub fn run(command: Command, global: &GlobalArgs) -> ExitCode {
    bound_malloc_arenas();
    common::set_verbosity(global);
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`… | head`): nothing is wrong, as ripgrep
        // treats it.
        Err(e) if common::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", common::error_report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Caps glibc's malloc arenas at one per core, unless `MALLOC_ARENA_MAX` says otherwise.
///
/// glibc gives each thread that allocates under contention an arena of its own, up to
/// eight per core, and an arena keeps what was freed in it. Chunk buffers are freed on
/// other threads than the ones that allocated them (tokio, rayon, the blocking pool), so
/// each arena ends up holding a few chunks' worth: measured on a 1 GiB `pipeline`, 28 MiB
/// of the peak resident memory (issue #17), for no speed in return.
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a tunable of the allocator; it is called before this
        // process starts any thread of its own.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

fn execute(command: Command) -> anyhow::Result<()> {
    // RUST_LOG for every command; the worker sets its own default (info) first.
    if !matches!(command, Command::Worker(_)) {
        init_tracing("warn");
    }
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
        Command::Stage(args) => stage::stage(args),
        Command::Prune(args) => stage::prune(args),
    }
}

/// Logs to stderr at `default` (moved by `-v`/`-q`) unless `RUST_LOG` says otherwise,
/// in colour only when stderr is a terminal (a piped or journald log gets no escape
/// codes); a second call is a no-op.
pub(crate) fn init_tracing(default: &str) {
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(common::log_filter(default))
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
