//! `panini pipeline`: the whole product on one machine, the first thing a new user runs.
//! Arguments and printing only; the job is [`crate::Pipeline`].

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chunk_model::Strategy;
use indicatif::ProgressBar;

use super::common::{self, human_bytes, outln, plural};

use crate::pipeline::{PipelineConfig, PipelineEvent, PipelineReport, StageReport};

/// Options of `cargo xtask pipeline`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files and folders to run through the pipeline (folders walked as `panini chunk`
    /// walks them); without any (and without --base), a generated sample set (a PNG, an
    /// MP4 with keyframes, a text log and random bytes).
    #[arg(value_name = "PATH")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    inputs: common::InputArgs,
    /// Run on an existing chunk tree (`pending_compression/`, e.g. from `cargo xtask
    /// chunk`) instead of chunking files: chunks already completed are left as they are,
    /// and each file is checked against the SHA-256 in its manifest.
    #[arg(long, conflicts_with = "files")]
    base: Option<PathBuf>,
    /// Where chunk objects and recipes go: gs://bucket[/prefix], file:///path or a
    /// directory. Default: WORK_DIR/bucket, kept between runs.
    #[arg(long, env = "GOOGLE_ONE_BUCKET")]
    bucket: Option<String>,
    /// Cloud Storage endpoint override (an emulator).
    #[arg(long, env = "STORAGE_EMULATOR_HOST")]
    endpoint: Option<String>,
    /// In-process workers, each on its own loopback port.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Use the worker service at this webhook URL (repeatable) instead of in-process
    /// workers. It must serve the same repository root and bucket.
    #[arg(long = "worker", value_name = "URL")]
    worker_urls: Vec<String>,
    /// File whose first line is the bearer token of --worker services (in-process workers
    /// get a generated one). Default: the environment variable COLAB_AUTH_TOKEN; never a
    /// command-line value, which every user sees in `ps`.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// How long a dispatched chunk may stay unreported before it is dispatched again
    /// (e.g. 90s, 2m).
    #[arg(long, alias = "lease-s", default_value = "120s", value_parser = common::parse_duration)]
    lease: Duration,
    /// Where LZ4 runs: auto, cpu or opencl.
    #[arg(long, default_value = "auto", value_parser = super::common::choice::<gpu_compress::EngineChoice>(super::common::ENGINES))]
    engine: gpu_compress::EngineChoice,
    /// How files are cut.
    #[arg(long, default_value = "semantic", value_parser = super::common::choice::<Strategy>(super::common::STRATEGIES))]
    strategy: Strategy,
    /// Largest chunk (e.g. 4M, 1GiB).
    #[arg(long, default_value_t = chunker::DEFAULT_MAX_CHUNK_SIZE, value_parser = common::parse_size)]
    chunk_size: u64,
    /// Smallest chunk (e.g. 256K; at most a quarter of the largest), as `chunk` has it.
    #[arg(long, default_value_t = chunker::DEFAULT_MIN_CHUNK_SIZE, value_parser = common::parse_size)]
    min_chunk_size: u64,
    /// Size of the generated sample set (e.g. 50M).
    #[arg(long, default_value = "50M", value_parser = common::parse_size)]
    sample_size: u64,
    /// Size of the generated sample set in MiB (older spelling of --sample-size).
    #[arg(long, hide = true, conflicts_with = "sample_size")]
    sample_mib: Option<u64>,
    /// The work directory: the chunk tree (WORK_DIR/pending_compression, replaced only
    /// when a pipeline run created it), generated samples and the default bucket.
    /// Relative to the current directory.
    #[arg(long, default_value = DEFAULT_WORK_DIR)]
    work_dir: PathBuf,
    /// Give up waiting for the workers after this long (e.g. 90s, 10m).
    #[arg(long, alias = "timeout-s", default_value = "10m", value_parser = common::parse_duration)]
    timeout: Duration,
    /// Stage the chunks' raw bytes in the run's bucket (staging/<sha256>) right after
    /// chunking, as `panini chunk --stage` does: the tree keeps metadata only (no
    /// data.bin) and the workers read each chunk from the bucket. Objects an earlier run
    /// left there count as already staged. With --base, the pending chunks of that tree.
    #[arg(long)]
    stage: bool,
    /// After every file is rebuilt, free the raw bytes of completed chunks as `panini
    /// prune` does (their data.bin and their staged objects, each only once its chunk
    /// object reads back and verifies); the stage table says how many bytes.
    #[arg(long)]
    prune: bool,
    /// Print the report as one JSON document on stdout (schema:
    /// docs/schemas/pipeline_report.schema.json); progress and warnings go to stderr.
    #[arg(long)]
    json: bool,
}

/// The work directory when no --work-dir is given: beside where the user runs, never
/// inside the checkout the binary was built from.
pub const DEFAULT_WORK_DIR: &str = "panini-work";

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let work = args.work_dir.clone();
    let mut config = PipelineConfig::new(&work);
    config.base = args.base.clone();
    config.bucket = args.bucket.clone();
    config.store.gcs.endpoint = args.endpoint.clone().filter(|e| !e.is_empty());
    config.workers = args.workers;
    config.worker_urls = args.worker_urls.clone();
    config.token = super::common::secret(args.token_file.as_deref(), "COLAB_AUTH_TOKEN")?;
    config.signing_key = super::dispatch::signing_key_from_env()?;
    config.lease = args.lease;
    config.engine = args.engine;
    config.chunker = chunker::ChunkerConfig {
        strategy: args.strategy,
        max_chunk_size: args.chunk_size,
        min_chunk_size: args.min_chunk_size,
    };
    config.timeout = args.timeout;
    config.inputs = args.inputs.options();
    config.stage = args.stage.then(crate::stage::StageOptions::default);
    config.prune = args.prune.then(crate::prune::PruneOptions::default);

    let mut samples_stage = None;
    if args.base.is_none() {
        config.files = if args.files.is_empty() {
            let dir = work.join("samples");
            let started = Instant::now();
            let size = args.sample_mib.map_or(args.sample_size, |mib| mib << 20);
            let files = samples::sample_set(&dir, size)
                .with_context(|| format!("generating samples in {}", dir.display()))?;
            let mut bytes = 0;
            for file in &files {
                bytes += std::fs::metadata(file)
                    .with_context(|| file.display().to_string())?
                    .len();
            }
            samples_stage = Some(StageReport::new(
                "samples",
                started.elapsed(),
                bytes,
                format!("{} files generated", files.len()),
            ));
            files
        } else {
            args.files.clone()
        };
    }

    let bars = Bars::new();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut report = runtime
        .block_on(crate::Pipeline::new(config).run(move |event| bars.show(event)))
        .context("running the pipeline")?;
    if let Some(stage) = samples_stage {
        report.stages.insert(0, stage);
    }
    if args.json {
        common::print_json(&report)?;
    } else {
        print_summary(&report);
    }
    let failed: Vec<_> = report.unverified().map(|f| f.name.as_str()).collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} files not rebuilt bit for bit: {}",
            failed.len(),
            report.files.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// A progress bar per stage under way (chunking and compression run at once); warnings
/// go to stderr above them.
#[derive(Debug)]
struct Bars {
    all: indicatif::MultiProgress,
    running: Mutex<Vec<(&'static str, ProgressBar)>>,
}

impl Bars {
    fn new() -> Self {
        Self {
            all: indicatif::MultiProgress::with_draw_target(common::draw_target()),
            running: Mutex::default(),
        }
    }

    fn show(&self, event: PipelineEvent) {
        let mut running = self.running.lock().expect("bar lock");
        let bar = |stage: &str| {
            running
                .iter()
                .find(|(name, _)| *name == stage)
                .map(|(_, bar)| bar.clone())
        };
        match event {
            PipelineEvent::StageStarted { stage, total } => {
                let new = self.all.add(stage_bar(stage, total));
                running.push((stage, new));
            }
            PipelineEvent::TotalGrew { stage, total } => {
                if let Some(bar) = bar(stage) {
                    bar.set_length(total);
                }
            }
            PipelineEvent::Progress { stage, done } => {
                if let Some(bar) = bar(stage) {
                    bar.set_position(done);
                }
            }
            PipelineEvent::StageFinished { stage } => {
                if let Some(at) = running.iter().position(|(name, _)| *name == stage) {
                    let (_, bar) = running.remove(at);
                    bar.finish_and_clear();
                    self.all.remove(&bar);
                }
            }
            PipelineEvent::Warning(message) => {
                self.all.suspend(|| eprintln!("pipeline: {message}"));
            }
        }
    }
}

/// Chunking counts bytes; compression counts chunks.
fn stage_bar(name: &str, total: u64) -> ProgressBar {
    if name == "chunk" {
        common::bytes_bar(total, name)
    } else {
        common::count_bar(total, name)
    }
}

fn print_summary(summary: &PipelineReport) {
    outln!(
        "bucket: {}\nengine: {}{}",
        summary.bucket,
        summary.engine,
        summary
            .device
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );
    outln!(
        "\n{:<20} {:>7} {:>8} {:>7} {:>11} {:>10}  note",
        "stage",
        "start",
        "seconds",
        "busy",
        "bytes",
        "MB/s"
    );
    for s in &summary.stages {
        let rate = if s.mb_per_s > 0.0 {
            format!("{:.1}", s.mb_per_s)
        } else {
            "-".into()
        };
        let bytes = if s.bytes > 0 {
            human_bytes(s.bytes)
        } else {
            "-".into()
        };
        outln!(
            "{:<20} {:>7.2} {:>8.2} {:>7.2} {:>11} {:>10}  {}",
            s.stage,
            s.started_s,
            s.seconds,
            s.busy_s,
            bytes,
            rate,
            s.note
        );
    }
    outln!(
        "{:<20} {:>7.2} {:>8.2}  the stages overlapped",
        "whole run",
        0.0,
        summary.seconds
    );
    outln!(
        "\n{:<12} {:<8} {:>7} {:>11} {:>11} {:>7}  result",
        "file",
        "format",
        "chunks",
        "size",
        "stored",
        "ratio"
    );
    for f in &summary.files {
        let ratio = if f.stored_bytes > 0 {
            format!("{:.2}", f.bytes as f64 / f.stored_bytes as f64)
        } else {
            "-".into()
        };
        let result = match (&f.error, f.verified) {
            (_, true) => "rebuilt, SHA-256 ok".to_owned(),
            (Some(e), false) => format!("FAILED: {e}"),
            (None, false) => "FAILED".to_owned(),
        };
        outln!(
            "{:<12} {:<8} {:>7} {:>11} {:>11} {:>7}  {}",
            f.name,
            f.format,
            f.chunks,
            human_bytes(f.bytes),
            human_bytes(f.stored_bytes),
            ratio,
            result
        );
    }
    let ratio = if summary.ratio > 0.0 {
        format!(", ratio {:.2}", summary.ratio)
    } else {
        String::new()
    };
    outln!(
        "\n{} in; this run stored {} ({}), {} already in the bucket{ratio}",
        human_bytes(summary.bytes_in),
        plural(summary.chunks_stored_now, "chunk"),
        human_bytes(summary.bytes_stored_now),
        plural(summary.chunks_already_stored, "chunk"),
    );
    if summary.chunks_stored_now == 0 && summary.chunks_already_stored > 0 {
        outln!("nothing uploaded: every chunk was already in the bucket");
    }
}
