//! `panini pipeline`: the whole product on one machine, the first thing a new user runs.
//! Arguments and printing only; the job is [`crate::Pipeline`].

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chunk_model::Strategy;
use indicatif::{ProgressBar, ProgressStyle};

use crate::pipeline::{PipelineConfig, PipelineEvent, PipelineReport, StageReport};

/// Options of `cargo xtask pipeline`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to run through the pipeline; without any (and without --base), a generated
    /// sample set (a PNG, an MP4 with keyframes, a text log and random bytes).
    files: Vec<PathBuf>,
    /// Run on an existing chunk tree (`pending_compression/`, e.g. from `cargo xtask
    /// chunk`) instead of chunking files: chunks already completed are left as they are,
    /// and each file is checked against the SHA-256 in its manifest.
    #[arg(long, conflicts_with = "files")]
    base: Option<PathBuf>,
    /// Where chunk objects and recipes go: gs://bucket[/prefix], file:///path or a
    /// directory. Default: a directory under the work directory, kept between runs.
    #[arg(long)]
    bucket: Option<String>,
    /// Cloud Storage endpoint override (an emulator); STORAGE_EMULATOR_HOST works too.
    #[arg(long)]
    endpoint: Option<String>,
    /// In-process workers, each on its own loopback port.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Use the worker service at this webhook URL (repeatable) instead of in-process
    /// workers. It must serve the same repository root and bucket.
    #[arg(long = "worker", value_name = "URL")]
    worker_urls: Vec<String>,
    /// Bearer token for --worker services (in-process workers get a generated one).
    #[arg(long, env = "COLAB_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long a dispatched chunk may stay unreported before it is dispatched again.
    #[arg(long, default_value_t = 120)]
    lease_s: u64,
    /// Where LZ4 runs: auto, cpu or opencl.
    #[arg(long, default_value = "auto")]
    engine: gpu_compress::EngineChoice,
    /// How files are cut.
    #[arg(long, default_value = "semantic")]
    strategy: Strategy,
    /// Largest chunk in bytes.
    #[arg(long, default_value_t = chunker::DEFAULT_MAX_CHUNK_SIZE)]
    chunk_size: u64,
    /// Size of the generated sample set, in MiB.
    #[arg(long, default_value_t = 50)]
    sample_mib: u64,
    /// The work directory (chunk tree, rebuilt files, default bucket).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Give up waiting for the workers after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    super::init_tracing("warn");
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let work = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()
            .context("reading the current directory")?
            .join("target/pipeline"),
    };
    let mut config = PipelineConfig::new(&work);
    config.base = args.base.clone();
    config.bucket = args.bucket.clone();
    config.store.gcs.endpoint = args.endpoint.clone();
    config.workers = args.workers;
    config.worker_urls = args.worker_urls.clone();
    config.token = args.token.clone();
    config.lease = Duration::from_secs(args.lease_s);
    config.engine = args.engine;
    config.chunker = chunker::ChunkerConfig {
        strategy: args.strategy,
        max_chunk_size: args.chunk_size,
        ..Default::default()
    };
    config.timeout = Duration::from_secs(args.timeout_s);

    let mut samples_stage = None;
    if args.base.is_none() {
        config.files = if args.files.is_empty() {
            let dir = work.join("samples");
            let started = Instant::now();
            let files = samples::sample_set(&dir, args.sample_mib << 20)
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

    let bars = Bars::default();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut report = runtime
        .block_on(crate::Pipeline::new(config).run(move |event| bars.show(event)))
        .context("running the pipeline")?;
    if let Some(stage) = samples_stage {
        report.stages.insert(0, stage);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
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

/// The progress bar of the stage that runs; warnings go to stderr above it.
#[derive(Debug, Default)]
struct Bars {
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn show(&self, event: PipelineEvent) {
        let mut current = self.current.lock().expect("bar lock");
        match event {
            PipelineEvent::StageStarted { stage, total } => {
                *current = Some(stage_bar(stage, total));
            }
            PipelineEvent::Progress { done, .. } => {
                if let Some(bar) = current.as_ref() {
                    bar.set_position(done);
                }
            }
            PipelineEvent::StageFinished { .. } => {
                if let Some(bar) = current.take() {
                    bar.finish_and_clear();
                }
            }
            PipelineEvent::Warning(message) => match current.as_ref() {
                Some(bar) => bar.suspend(|| eprintln!("pipeline: {message}")),
                None => eprintln!("pipeline: {message}"),
            },
        }
    }
}

fn stage_bar(name: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    bar
}

fn print_summary(summary: &PipelineReport) {
    println!(
        "bucket: {}\nengine: {}{}",
        summary.bucket,
        summary.engine,
        summary
            .device
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );
    println!(
        "\n{:<22} {:>8} {:>12} {:>10}  note",
        "stage", "seconds", "bytes", "MB/s"
    );
    for s in &summary.stages {
        let rate = if s.mb_per_s > 0.0 {
            format!("{:.1}", s.mb_per_s)
        } else {
            "-".into()
        };
        println!(
            "{:<22} {:>8.2} {:>12} {:>10}  {}",
            s.stage, s.seconds, s.bytes, rate, s.note
        );
    }
    println!(
        "\n{:<12} {:<8} {:>7} {:>12} {:>12} {:>7}  result",
        "file", "format", "chunks", "bytes", "stored", "ratio"
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
        println!(
            "{:<12} {:<8} {:>7} {:>12} {:>12} {:>7}  {}",
            f.name, f.format, f.chunks, f.bytes, f.stored_bytes, ratio, result
        );
    }
    println!(
        "\n{} bytes in, {} chunks stored now ({} bytes), {} chunks already in the bucket, ratio {:.2}",
        summary.bytes_in,
        summary.chunks_stored_now,
        summary.bytes_stored_now,
        summary.chunks_already_stored,
        summary.ratio
    );
    if summary.chunks_stored_now == 0 && summary.chunks_already_stored > 0 {
        println!("nothing uploaded: every chunk was already in the bucket");
    }
}
