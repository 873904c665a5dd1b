//! `cargo xtask <task>`: Panini's build system, and its user commands from the checkout.
//!
//! The developer tasks (CI, codegen, benchmarks, workflow lint, gpu-check) live here, one
//! module each. The user commands are the `panini` binary's (`panini::cli`), flattened
//! in, so `cargo xtask pipeline` and `panini pipeline` are the same code. This file only
//! parses the command line and dispatches.

mod bench_all;
mod bench_compress;
mod bench_detect;
mod bench_dispatch;
mod bench_scale;
mod bench_upload;
mod ci;
mod codegen;
mod fuzz;
mod gpu_check;
mod workflow_lint;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    version,
    about = "Panini: chunk, compress and store files, and rebuild them bit for bit",
    subcommand_help_heading = "User commands (as `panini` has them)",
    after_help = "Developer commands (each has --help):\n  \
        ci              Install what the tests need, start the services, run every check and test\n  \
        codegen         Regenerate the JSON Schemas under docs/schemas/\n  \
        bench           Benchmarks beside the reference tools (target/bench/)\n  \
        lint-workflows  Lint .github/workflows/ with actionlint and zizmor\n  \
        fuzz            Run the fuzz targets of crates/fuzz for a while each\n  \
        gpu-check       Run the OpenCL LZ4 kernel on >= 1 GiB and verify every frame"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: panini::cli::GlobalArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what the tests need, start the services, run every check and test, stop the services.
    #[command(hide = true)]
    Ci(ci::Args),
    /// Regenerate the JSON Schemas under docs/schemas/.
    #[command(hide = true)]
    Codegen(codegen::Args),
    /// Run the OpenCL LZ4 kernel on ≥ 1 GiB, verify every frame, print GB/s.
    #[command(hide = true)]
    GpuCheck(gpu_check::Args),
    /// Run the fuzz targets of crates/fuzz (cargo-fuzz, libFuzzer) for a while each.
    #[command(hide = true)]
    Fuzz(fuzz::Args),
    /// Lint .github/workflows/ with actionlint and zizmor (from a venv).
    #[command(hide = true)]
    LintWorkflows(workflow_lint::Args),
    /// Benchmarks beside the reference tools; results under target/bench/. Without a
    /// subcommand: every stage and the whole pipeline, report.md/.json/.svg.
    #[command(args_conflicts_with_subcommands = true, hide = true)]
    Bench {
        #[command(subcommand)]
        what: Option<Bench>,
        #[command(flatten)]
        all: bench_all::Args,
    },
    /// The user commands, as the `panini` binary has them.
    #[command(flatten)]
    User(Box<panini::cli::Command>),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Panini's codecs and engines vs `lz4 -1`, `zstd -1/-3 -T0` on a generated corpus.
    Compress(bench_compress::Args),
    /// `panini detect` beside the original Python detect script on 100,000 chunk directories.
    Detect(bench_detect::Args),
    /// 10,000 chunks to a local worker: chunks/s in batch and per-chunk mode, worker throughput.
    Dispatch(bench_dispatch::Args),
    /// Upload ≥ 1 GiB of chunk objects to the GCS emulator, beside `rclone copy`.
    Upload(bench_upload::Args),
    /// One worker alone on the corpus's chunks, beside in-process compression of them
    /// (the row and target `cargo xtask bench` reports).
    Worker(bench_all::WorkerArgs),
    /// Detect + dispatch to 1…64 simulated workers (a fixed GPU speed each): where one
    /// dispatcher stops scaling; and one run with real workers.
    Scale(bench_scale::Args),
    /// The simulated workers of `bench scale`, run as its child process.
    #[command(hide = true)]
    ScaleFleet(bench_scale::FleetArgs),
    /// Runs a command for the benchmarks: its seconds and peak resident memory, from
    /// `wait4`, to a report file.
    #[command(hide = true)]
    MeasureChild(bench_all::MeasureChildArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::User(command) => return panini::cli::run(*command, &cli.global),
        Command::Ci(args) => ci::run(args),
        Command::Codegen(args) => codegen::run(args),
        Command::GpuCheck(args) => gpu_check::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::LintWorkflows(args) => workflow_lint::run(args),
        Command::Bench { what: None, all } => bench_all::run(all),
        Command::Bench {
            what: Some(Bench::Compress(args)),
            ..
        } => bench_compress::run(args),
        Command::Bench {
            what: Some(Bench::Upload(args)),
            ..
        } => bench_upload::run(args),
        Command::Bench {
            what: Some(Bench::Dispatch(args)),
            ..
        } => bench_dispatch::run(args),
        Command::Bench {
            what: Some(Bench::Worker(args)),
            ..
        } => bench_all::run_worker_alone(args),
        Command::Bench {
            what: Some(Bench::Detect(args)),
            ..
        } => bench_detect::run(args),
        Command::Bench {
            what: Some(Bench::Scale(args)),
            ..
        } => bench_scale::run(args),
        Command::Bench {
            what: Some(Bench::ScaleFleet(args)),
            ..
        } => bench_scale::run_fleet(args),
        Command::Bench {
            what: Some(Bench::MeasureChild(args)),
            ..
        } => bench_all::measure_child(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}
