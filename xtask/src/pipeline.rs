//! `cargo xtask pipeline`: the whole product on one machine, the first thing a new user
//! runs.
//!
//! chunk → detect → dispatch (real HTTP to in-process workers on 127.0.0.1) → compress
//! and upload (in the workers) → sync → recipes → reconstruct every file from the bucket
//! alone → verify SHA-256. The stages are the library crates the GitHub Actions setup
//! uses; only the transport between them is local.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chunk_model::{
    ChunkMetadata, Codec, Layout, Manifest, Recipe, RecipeChunk, Status, Strategy, json_file,
    layout,
};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use uploader::{ObjectStore, ReconstructOptions, StoreConfig, Which};

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

/// One stage's line of the summary table.
#[derive(Debug, Serialize)]
struct StageRow {
    stage: &'static str,
    seconds: f64,
    bytes: u64,
    mb_per_s: f64,
    note: String,
}

/// One file's outcome.
#[derive(Debug, Serialize)]
struct FileRow {
    name: String,
    /// The original file, when this run chunked it.
    source: Option<PathBuf>,
    format: String,
    chunks: u64,
    bytes: u64,
    stored_bytes: u64,
    verified: bool,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    bucket: String,
    engine: String,
    device: Option<String>,
    files: Vec<FileRow>,
    stages: Vec<StageRow>,
    bytes_in: u64,
    bytes_stored_now: u64,
    chunks_stored_now: u64,
    chunks_already_stored: u64,
    ratio: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| crate::codegen::project_root().join("target/pipeline"));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let work = work
        .canonicalize()
        .with_context(|| format!("resolving {}", work.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(args, work))
}

async fn run_async(args: Args, work: PathBuf) -> anyhow::Result<()> {
    let mut stages = Vec::new();
    let bucket = args
        .bucket
        .clone()
        .unwrap_or_else(|| work.join("bucket").display().to_string());
    let store_config = StoreConfig {
        gcs: uploader::GcsConfig {
            endpoint: args.endpoint.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let store = uploader::open(&bucket, &store_config)
        .await
        .with_context(|| format!("opening the bucket {bucket}"))?;

    // Inputs: an existing chunk tree, or files chunked now into a fresh tree (the
    // bucket, not the tree, is what persists between runs).
    let (base, inputs) = match &args.base {
        Some(base) => {
            let base = base
                .canonicalize()
                .with_context(|| format!("resolving --base {}", base.display()))?;
            let inputs = existing_files(&base)?;
            (base, inputs)
        }
        None => {
            let files = if args.files.is_empty() {
                let dir = work.join("samples");
                let started = Instant::now();
                let files = samples::sample_set(&dir, args.sample_mib << 20)
                    .with_context(|| format!("generating samples in {}", dir.display()))?;
                let bytes = total_size(&files)?;
                stages.push(stage(
                    "samples",
                    started,
                    bytes,
                    format!("{} files generated", files.len()),
                ));
                files
            } else {
                args.files.clone()
            };
            let base = work.join(layout::DEFAULT_ROOT);
            let started = Instant::now();
            if base.exists() {
                std::fs::remove_dir_all(&base)
                    .with_context(|| format!("clearing {}", base.display()))?;
            }
            let inputs = chunk_all(&files, &base, &args)?;
            let bytes: u64 = inputs.iter().map(|f| f.bytes).sum();
            let chunks: u64 = inputs.iter().map(|f| f.chunks).sum();
            stages.push(stage(
                "chunk",
                started,
                bytes,
                format!("{chunks} chunks, {}", args.strategy),
            ));
            (base, inputs)
        }
    };
    let repo_root = base
        .parent()
        .with_context(|| format!("{} has no parent directory", base.display()))?
        .to_owned();
    let bytes_in: u64 = inputs.iter().map(|f| f.bytes).sum();
    let chunk_count: u64 = inputs.iter().map(|f| f.chunks).sum();

    // Workers: real HTTP servers, in this process on loopback or given by URL.
    let (mut workers, token) = if args.worker_urls.is_empty() {
        let token = crate::dispatch::new_token()?;
        let mut workers = Vec::new();
        for index in 0..args.workers {
            workers.push(
                WorkerClient::start_in_process(
                    index,
                    &repo_root,
                    store.clone(),
                    &token,
                    args.engine,
                )
                .await?,
            );
        }
        (workers, Some(token))
    } else {
        let workers = args
            .worker_urls
            .iter()
            .map(|url| WorkerClient::remote(url))
            .collect::<anyhow::Result<Vec<_>>>()?;
        (workers, args.token.clone().filter(|t| !t.is_empty()))
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let engine_status = first_status(&workers, &http).await?;

    // Detect → dispatch → wait → sync, until nothing is left to dispatch. A chunk a
    // worker lost (it died, or its report never came) comes back when its lease runs out;
    // one that keeps failing ends `failed` after the detector's maximum attempts.
    let lease = Duration::from_secs(args.lease_s.clamp(1, args.timeout_s.max(1)));
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut detect_time = Duration::ZERO;
    let mut dispatch_time = Duration::ZERO;
    let mut compress_time = Duration::ZERO;
    let mut sync_time = Duration::ZERO;
    let mut dispatched = 0usize;
    let bar = stage_bar("compress", chunk_count);
    loop {
        let started = Instant::now();
        let detect_config = detector::DetectConfig {
            lease,
            ..detector::DetectConfig::new(&base)
        };
        let report = detector::scan(&detect_config, chrono::Utc::now())
            .with_context(|| format!("scanning {}", base.display()))?;
        for invalid in &report.invalid {
            eprintln!("pipeline: {}: {}", invalid.path, invalid.reason);
        }
        detect_time += started.elapsed();
        let chunks: Vec<_> = report.selected.into_iter().map(|c| c.info).collect();
        if chunks.is_empty() {
            if open_chunks(&base)?.is_empty() || Instant::now() > deadline {
                break;
            }
            // Queued chunks whose lease has not run out yet: wait for them.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }

        // Workers start compressing as soon as they accept, so compress+upload is timed
        // from the start of the dispatch to the last report.
        let round_started = Instant::now();
        let started = Instant::now();
        let mut config =
            dispatcher::DispatchConfig::new(workers.iter().map(WorkerClient::endpoint).collect());
        config.token = token.clone();
        config.base = Some(base.clone());
        config.lease = lease;
        let outcome = dispatcher::Dispatcher::new(config)
            .context("configuring the dispatcher")?
            .run(chunks, |_| {})
            .await;
        dispatched += outcome.accepted_chunks;
        dispatch_time += started.elapsed();

        // Wait until every worker that answers has reported every chunk it accepted. A
        // worker that stops answering has nothing more to report: what it held comes
        // back through its lease.
        loop {
            let mut done = 0;
            let mut accepted = 0;
            for worker in &workers {
                if let Ok(status) = worker.status(&http).await {
                    done += status.completed + status.failed;
                    accepted += status.accepted;
                }
            }
            bar.set_position(done.min(chunk_count));
            if done >= accepted || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        compress_time += round_started.elapsed();

        let started = Instant::now();
        dispatcher::sync::sync(&base, store.as_ref(), chrono::Utc::now())
            .await
            .context("syncing completion records")?;
        // Failures reach the repository by callback in Actions; here the workers are
        // asked. Applying them now (instead of waiting for the lease) lets the detector
        // retry at once and give up after its maximum attempts.
        for worker in &mut workers {
            let failures = match worker.new_failures(&http).await {
                Ok(failures) => failures,
                Err(e) => {
                    eprintln!("pipeline: {}: {e:#}", worker.name());
                    continue;
                }
            };
            for failure in failures {
                eprintln!(
                    "pipeline: {} failed: {}",
                    failure.chunk_path,
                    failure.error.as_deref().unwrap_or("no reason given")
                );
                if let Err(e) = detector::apply_callback(&base, &failure, chrono::Utc::now()) {
                    eprintln!("pipeline: recording that failure: {e}");
                }
            }
        }
        sync_time += started.elapsed();
        if Instant::now() > deadline {
            break;
        }
    }
    bar.finish_and_clear();
    let metrics = WorkerTotals::collect(&workers, &http).await;
    for worker in workers {
        worker.stop().await?;
    }
    stages.push(stage_for("detect", detect_time, 0, String::new()));
    stages.push(stage_for(
        "dispatch",
        dispatch_time,
        0,
        format!(
            "{dispatched} chunks over HTTP to {} workers",
            metrics.workers
        ),
    ));
    stages.push(stage_for(
        "compress+upload",
        compress_time,
        metrics.bytes_in,
        format!(
            "{} stored, {} already stored, {} failed",
            metrics.completed - metrics.deduplicated,
            metrics.deduplicated,
            metrics.failed
        ),
    ));
    stages.push(stage_for("sync", sync_time, 0, String::new()));

    // Recipes, then rebuild every file from the bucket alone.
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut recipes = Vec::new();
    for input in inputs {
        let mut row = FileRow {
            name: input.name,
            source: input.source,
            format: input.format,
            chunks: input.chunks,
            bytes: input.bytes,
            stored_bytes: 0,
            verified: false,
            error: input.error,
        };
        if row.error.is_none() {
            match recipe_for(&base, &row.name) {
                Ok(recipe) => match uploader::put_recipe(store.as_ref(), &recipe).await {
                    Ok(_) => recipes.push((rows.len(), recipe)),
                    Err(e) => row.error = Some(e.to_string()),
                },
                Err(e) => row.error = Some(format!("{e:#}")),
            }
        }
        rows.push(row);
    }
    stages.push(stage(
        "recipes",
        started,
        0,
        format!("{} written", recipes.len()),
    ));

    let started = Instant::now();
    let rebuilt_dir = work.join("rebuilt");
    std::fs::create_dir_all(&rebuilt_dir)?;
    // Files are rebuilt concurrently, one per core (each rebuild hashes its file in
    // order, on one core), and a file chunked in this run has its source hashed beside
    // its rebuild: the source must have the SHA-256 of the bytes rebuilt from the bucket.
    let parallel_files = std::thread::available_parallelism().map_or(1, |n| n.get());
    let outcomes: Vec<_> = futures::stream::iter(&recipes)
        .map(|(index, recipe)| {
            let output = rebuilt_dir.join(&recipe.name);
            let source = rows[*index].source.clone();
            let store = store.as_ref();
            async move {
                let source_hash = source.map(|source| {
                    tokio::task::spawn_blocking(move || {
                        sha256_of_file(&source).map(|hash| (source, hash))
                    })
                });
                // Checks every chunk's and the whole file's SHA-256 against the recipe.
                let rebuilt = uploader::reconstruct(
                    store,
                    &recipe.name,
                    Which::File(recipe.file_sha256),
                    &output,
                    &ReconstructOptions::default(),
                    &|_| {},
                )
                .await;
                let _ = std::fs::remove_file(&output);
                let result = match (rebuilt, source_hash) {
                    (Err(e), _) => Err(e.to_string()),
                    (Ok(_), None) => Ok(()),
                    (Ok(report), Some(hashing)) => match hashing.await {
                        Ok(Ok((_, hash))) if hash == report.file_sha256 => Ok(()),
                        Ok(Ok((source, hash))) => Err(format!(
                            "{} rebuilt with SHA-256 {}, source {} has {hash}",
                            output.display(),
                            report.file_sha256,
                            source.display()
                        )),
                        Ok(Err(e)) => Err(format!("{e:#}")),
                        Err(e) => Err(e.to_string()),
                    },
                };
                let stored = stored_size(store, recipe).await;
                (*index, recipe.file_size, result, stored)
            }
        })
        .buffer_unordered(parallel_files)
        .collect()
        .await;
    let mut rebuilt_bytes = 0;
    for (index, file_size, result, stored) in outcomes {
        let row = &mut rows[index];
        match result {
            Ok(()) => {
                row.verified = true;
                rebuilt_bytes += file_size;
            }
            Err(e) => row.error = Some(e),
        }
        row.stored_bytes = stored?;
    }
    stages.push(stage(
        "reconstruct+verify",
        started,
        rebuilt_bytes,
        "SHA-256 of every chunk and file".into(),
    ));

    let stored: u64 = rows.iter().map(|r| r.stored_bytes).sum();
    let summary = Summary {
        bucket,
        engine: engine_status.engine,
        device: engine_status.device,
        stages,
        bytes_in,
        bytes_stored_now: metrics.bytes_out,
        chunks_stored_now: metrics.completed - metrics.deduplicated,
        chunks_already_stored: metrics.deduplicated,
        ratio: if stored == 0 {
            0.0
        } else {
            bytes_in as f64 / stored as f64
        },
        files: rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    let failed: Vec<_> = summary.files.iter().filter(|f| !f.verified).collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} files not rebuilt bit for bit: {}",
            failed.len(),
            summary.files.len(),
            failed
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// One file the run rebuilds: chunked now, or found in an existing tree.
#[derive(Debug)]
struct InputFile {
    name: String,
    /// The original file, when this run chunked it.
    source: Option<PathBuf>,
    format: String,
    chunks: u64,
    bytes: u64,
    /// Why the file cannot be rebuilt (an unreadable manifest), found before any work.
    error: Option<String>,
}

/// The files of an existing chunk tree: every directory under `base` with a manifest.
/// A manifest that cannot be read is reported on its file's row; the others go on.
fn existing_files(base: &Path) -> anyhow::Result<Vec<InputFile>> {
    let layout = Layout::new(base);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(base).with_context(|| format!("listing {}", base.display()))? {
        let entry = entry.with_context(|| format!("listing {}", base.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden directories are the chunker's half-written trees.
        if !name.starts_with('.') && entry.path().join(layout::MANIFEST_FILE).is_file() {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        bail!(
            "{}: no chunked files (no */{} under it)",
            base.display(),
            layout::MANIFEST_FILE
        );
    }
    Ok(names
        .into_iter()
        .map(|name| {
            let manifest = layout
                .manifest_path(&name)
                .map_err(anyhow::Error::from)
                .and_then(|path| Ok(json_file::read::<Manifest>(&path)?));
            match manifest {
                Ok(manifest) => InputFile {
                    format: manifest
                        .format
                        .or(manifest.grammar_id)
                        .unwrap_or_else(|| "unknown".into()),
                    chunks: manifest.total_chunks,
                    bytes: manifest
                        .file_size
                        .unwrap_or_else(|| manifest.chunks.iter().map(|c| c.size).sum()),
                    name,
                    source: None,
                    error: None,
                },
                Err(e) => InputFile {
                    name,
                    source: None,
                    format: "unknown".into(),
                    chunks: 0,
                    bytes: 0,
                    error: Some(format!("{e:#}")),
                },
            }
        })
        .collect())
}

fn chunk_all(files: &[PathBuf], base: &Path, args: &Args) -> anyhow::Result<Vec<InputFile>> {
    let total = total_size(files)?;
    let bar = stage_bar("chunk", total);
    let mut reports = Vec::new();
    let mut done_before = 0;
    for file in files {
        let mut options = chunker::ChunkOptions::new(base);
        options.config = chunker::ChunkerConfig {
            strategy: args.strategy,
            max_chunk_size: args.chunk_size,
        };
        options.force = true;
        let progress_bar = bar.clone();
        let offset = done_before;
        options.progress = Some(Arc::new(move |p: chunker::Progress| {
            progress_bar.set_position(offset + p.bytes_done);
        }));
        let report = chunker::chunk_file(file, &options)
            .with_context(|| format!("chunking {}", file.display()))?;
        done_before += report.file_size;
        reports.push(InputFile {
            name: report.name,
            source: Some(report.source),
            format: report.format.name().to_owned(),
            chunks: report.total_chunks,
            bytes: report.file_size,
            error: None,
        });
    }
    bar.finish_and_clear();
    Ok(reports)
}

/// Chunk directories whose status is neither `completed` nor `failed`.
fn open_chunks(base: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let config = detector::DetectConfig {
        force: true,
        max_attempts: 0,
        ..detector::DetectConfig::new(base)
    };
    let report = detector::scan(&config, chrono::Utc::now())?;
    Ok(report
        .selected
        .into_iter()
        .filter(|c| !matches!(c.status, Status::Completed | Status::Failed))
        .map(|c| PathBuf::from(c.info.chunk_path))
        .collect())
}

/// The recipe of one chunked file, from its manifest and its chunks' upload paths.
fn recipe_for(base: &Path, name: &str) -> anyhow::Result<Recipe> {
    let layout = Layout::new(base);
    let manifest: Manifest = json_file::read(&layout.manifest_path(name)?)?;
    let file_sha256 = manifest
        .file_hash
        .with_context(|| format!("{name}: manifest has no file_hash"))?;
    let mut chunks = Vec::with_capacity(manifest.chunks.len());
    for entry in &manifest.chunks {
        let path = layout
            .chunk_dir(name, entry.chunk_id, manifest.total_chunks)?
            .join(layout::METADATA_FILE);
        let meta: ChunkMetadata = json_file::read(&path)?;
        if meta.status != Status::Completed {
            bail!(
                "{}: chunk {} is {}{}",
                name,
                entry.chunk_id,
                meta.status,
                meta.last_error
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        let key = meta
            .upload_path
            .with_context(|| format!("{}: completed without upload_path", path.display()))?;
        let codec = key
            .rsplit_once('.')
            .and_then(|(_, ext)| ext.parse::<Codec>().ok())
            .with_context(|| format!("{}: upload_path {key:?} names no codec", path.display()))?;
        chunks.push(RecipeChunk {
            offset: entry.offset,
            size: entry.size,
            sha256: entry.hash,
            key,
            codec,
        });
    }
    Ok(Recipe {
        version: Recipe::VERSION,
        name: name.to_owned(),
        file_size: manifest.file_size.unwrap_or_default(),
        file_sha256,
        chunks,
    })
}

/// The SHA-256 of the file at `path`, read in 1 MiB pieces.
fn sha256_of_file(path: &Path) -> anyhow::Result<chunk_model::Sha256Digest> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = chunk_model::Sha256Digest::hasher();
    std::io::copy(
        &mut std::io::BufReader::with_capacity(1 << 20, file),
        &mut hasher,
    )
    .with_context(|| format!("reading {}", path.display()))?;
    Ok(chunk_model::Sha256Digest::from_hasher(hasher))
}

/// Bytes the file's distinct chunk objects take in the store.
async fn stored_size(store: &dyn ObjectStore, recipe: &Recipe) -> anyhow::Result<u64> {
    let keys: std::collections::BTreeSet<&str> =
        recipe.chunks.iter().map(|c| c.key.as_str()).collect();
    let mut total = 0;
    for key in keys {
        if let Some(info) = store.stat(key).await? {
            total += info.size;
        }
    }
    Ok(total)
}

/// A worker service the pipeline dispatches to and asks for progress over HTTP: one
/// served from this process on a free loopback port, or one running elsewhere.
struct WorkerClient {
    /// `http://host:port`, without the `/webhook` path.
    base_url: String,
    /// Failures already taken from `GET /failures`.
    failures_seen: u64,
    /// Set for a worker this process serves.
    in_process: Option<InProcessServer>,
}

struct InProcessServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<worker::Summary, worker::WorkerError>>,
}

#[derive(Debug, serde::Deserialize)]
struct WorkerStatus {
    engine: String,
    device: Option<String>,
    accepted: u64,
    completed: u64,
    failed: u64,
    deduplicated: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl WorkerClient {
    async fn start_in_process(
        index: usize,
        source_root: &Path,
        store: Arc<dyn ObjectStore>,
        token: &str,
        engine: gpu_compress::EngineChoice,
    ) -> anyhow::Result<Self> {
        let mut config = worker::WorkerConfig::new(source_root, store);
        config.token = Some(token.to_owned());
        config.engine = engine;
        config.worker_id = format!("pipeline-worker-{index}");
        let worker = worker::Worker::new(config).context("starting a worker")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a loopback port for a worker")?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(worker.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            base_url: format!("http://127.0.0.1:{port}"),
            failures_seen: 0,
            in_process: Some(InProcessServer { stop, task }),
        })
    }

    /// A worker service at `webhook_url` (`http://host:port/webhook`).
    fn remote(webhook_url: &str) -> anyhow::Result<Self> {
        let base_url = webhook_url
            .strip_suffix("/webhook")
            .filter(|base| base.starts_with("http://") || base.starts_with("https://"))
            .with_context(|| {
                format!("--worker {webhook_url}: expected http(s)://HOST:PORT/webhook")
            })?;
        Ok(Self {
            base_url: base_url.to_owned(),
            failures_seen: 0,
            in_process: None,
        })
    }

    fn name(&self) -> &str {
        &self.base_url
    }

    fn endpoint(&self) -> dispatcher::Endpoint {
        dispatcher::Endpoint {
            name: self.base_url.clone(),
            url: format!("{}/webhook", self.base_url),
        }
    }

    async fn status(&self, http: &reqwest::Client) -> anyhow::Result<WorkerStatus> {
        self.get_json(http, "/status").await
    }

    /// `GET path` on this worker, as JSON.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        http: &reqwest::Client,
        path: &str,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base_url);
        let response = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let body = response
            .bytes()
            .await
            .with_context(|| format!("GET {url}"))?;
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: unexpected body"))
    }

    /// The failures reported since the last call.
    async fn new_failures(
        &mut self,
        http: &reqwest::Client,
    ) -> anyhow::Result<Vec<chunk_model::ChunkCompressed>> {
        #[derive(serde::Deserialize)]
        struct Failures {
            total: u64,
            failures: Vec<chunk_model::ChunkCompressed>,
        }
        let Failures {
            total,
            failures: mut recent,
        } = self.get_json(http, "/failures").await?;
        // A restarted worker counts from zero again: everything it lists is new.
        let new = if total >= self.failures_seen {
            total - self.failures_seen
        } else {
            total
        };
        self.failures_seen = total;
        let new = usize::try_from(new)?.min(recent.len());
        Ok(recent.split_off(recent.len() - new))
    }

    /// Stops a worker this process serves (finishing what it holds); leaves others be.
    async fn stop(self) -> anyhow::Result<()> {
        if let Some(server) = self.in_process {
            let _ = server.stop.send(());
            server.task.await.context("worker task panicked")??;
        }
        Ok(())
    }
}

/// The first worker that answers: its engine and device head the summary.
async fn first_status(
    workers: &[WorkerClient],
    http: &reqwest::Client,
) -> anyhow::Result<WorkerStatus> {
    let mut last_error = None;
    for worker in workers {
        match worker.status(http).await {
            Ok(status) => return Ok(status),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| anyhow::anyhow!("no workers"))
        .context("no worker answers GET /status"))
}

/// What the workers that answer did. A restarted worker's counters start again at zero.
#[derive(Debug, Default)]
struct WorkerTotals {
    workers: usize,
    completed: u64,
    deduplicated: u64,
    failed: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl WorkerTotals {
    async fn collect(workers: &[WorkerClient], http: &reqwest::Client) -> Self {
        let mut totals = Self::default();
        for worker in workers {
            let Ok(status) = worker.status(http).await else {
                continue;
            };
            totals.workers += 1;
            totals.completed += status.completed;
            totals.deduplicated += status.deduplicated;
            totals.failed += status.failed;
            totals.bytes_in += status.bytes_in;
            totals.bytes_out += status.bytes_out;
        }
        totals
    }
}

fn total_size(files: &[PathBuf]) -> anyhow::Result<u64> {
    files.iter().try_fold(0, |sum, file| {
        let meta = std::fs::metadata(file).with_context(|| format!("{}", file.display()))?;
        Ok(sum + meta.len())
    })
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

fn stage(name: &'static str, started: Instant, bytes: u64, note: String) -> StageRow {
    stage_for(name, started.elapsed(), bytes, note)
}

fn stage_for(name: &'static str, elapsed: Duration, bytes: u64, note: String) -> StageRow {
    let seconds = elapsed.as_secs_f64();
    StageRow {
        stage: name,
        seconds,
        bytes,
        mb_per_s: if seconds > 0.0 && bytes > 0 {
            bytes as f64 / 1e6 / seconds
        } else {
            0.0
        },
        note,
    }
}

fn print_summary(summary: &Summary) {
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
