//! The whole job on one machine: chunk → detect → dispatch over real HTTP to workers →
//! compress and store (in the workers) → sync → recipes → rebuild every file from the
//! bucket alone and check its SHA-256.
//!
//! The stages are the same library calls the deployed flow makes; only the transport
//! between them is local: workers are served from this process on 127.0.0.1 (or given
//! by URL), failures are read from the workers' `GET /failures` instead of arriving as
//! GitHub callbacks.
//!
//! The stages overlap, file by file ([`Pipeline::run`]): a group of files is dispatched
//! as soon as it is chunked, while the next group is, and a file is rebuilt as soon as
//! its recipe is in the bucket, while the workers compress the others.
//!
//! With [`PipelineConfig::stage`], the chunks' raw bytes go to the run's bucket
//! ([`crate::stage`]) right after chunking and the workers read them from there, as
//! workers of a tree chunked with `panini chunk --stage` do; with
//! [`PipelineConfig::prune`], the raw bytes of every chunk stored are freed at the end
//! ([`crate::prune`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunk_model::{Sha256Digest, layout};
use futures::StreamExt as _;
use serde::Serialize;
use uploader::{ObjectStore, ReconstructOptions, StoreConfig};

use crate::sync::{FileRecipe, RecipeState};
use crate::{Error, WorkerClient, tree};

/// The file a pipeline run leaves at the root of a chunk tree it created, so that the
/// next run knows the tree is its own to replace.
pub const PIPELINE_TREE_MARKER: &str = ".created-by-panini-pipeline";

/// [`PipelineConfig::worker_memory`]'s default: batches of a few 1 MiB chunks per worker,
/// enough to keep every core busy.
pub const DEFAULT_WORKER_MEMORY: u64 = 32 << 20;

/// Default [`PipelineConfig::dispatch_window`].
pub const DEFAULT_DISPATCH_WINDOW: usize = 512;

/// How a [`Pipeline`] runs. Build with [`PipelineConfig::new`] and adjust the fields.
/// `Debug` shows the token and signing key as `<redacted>`.
#[derive(Clone)]
pub struct PipelineConfig {
    /// The work directory: the chunk tree (`pending_compression/`) and the default
    /// bucket.
    pub work_dir: PathBuf,
    /// Files and folders to chunk now into `work_dir/pending_compression`; folders are
    /// walked as `inputs` says, and every file is named by `chunker::assign_names`
    /// (stems, or paths where stems collide). A tree already there is replaced only when
    /// a pipeline run created it (it holds [`PIPELINE_TREE_MARKER`]); any other tree is
    /// an error, never deleted.
    pub files: Vec<PathBuf>,
    /// How folders in `files` are walked (`.gitignore` rules, hidden files, excludes).
    /// The work directory is never walked.
    pub inputs: chunker::InputOptions,
    /// Run on this existing chunk tree instead of chunking `files`: chunks already
    /// completed stay as they are.
    pub base: Option<PathBuf>,
    /// Where chunk objects and recipes go: `gs://bucket[/prefix]`, `file:///path` or a
    /// directory. `None`: `work_dir/bucket`.
    pub bucket: Option<String>,
    /// How the bucket is reached (a GCS endpoint override for an emulator, retries …).
    pub store: StoreConfig,
    /// In-process workers to start (when `worker_urls` is empty).
    pub workers: usize,
    /// Bytes of chunks and compressed frames the in-process workers hold at once, all of
    /// them together: with the rebuild's window, this bounds the run's memory whatever
    /// the size of its input. Each worker gets an equal share
    /// ([`worker::WorkerConfig::batch_bytes_for_memory`]).
    pub worker_memory: u64,
    /// Chunks dispatched at a time: the next window goes out once the workers hold fewer
    /// than this many unreported chunks, so their queues hold at most about two windows
    /// of chunk descriptions (a few hundred bytes each) whatever the size of the input,
    /// and never run dry (512 chunks are seconds of work).
    pub dispatch_window: usize,
    /// Worker services to use instead of in-process ones (`http://host:port/webhook`);
    /// they must read the same tree and store into the same bucket.
    pub worker_urls: Vec<String>,
    /// Bearer token for `worker_urls` (in-process workers get a generated one).
    pub token: Option<String>,
    /// Webhook signing key for `worker_urls` (in-process workers get a generated one).
    pub signing_key: Option<Vec<u8>>,
    /// How long a dispatched chunk may stay unreported before it is dispatched again.
    pub lease: Duration,
    /// Where LZ4 runs in in-process workers.
    pub engine: gpu_compress::EngineChoice,
    /// How files are cut.
    pub chunker: chunker::ChunkerConfig,
    /// Give up waiting for workers after this long.
    pub timeout: Duration,
    /// Stage the raw bytes of every `pending` chunk into the bucket (`staging/<sha256>`,
    /// [`crate::stage::stage`]) before anything is dispatched: the tree keeps metadata
    /// only, and the workers read each chunk from the bucket instead of its `data.bin`.
    /// Staging is create-only, so objects a previous run left count as already staged.
    /// A chunk that cannot be staged keeps its `data.bin` (a warning says why) and is
    /// compressed from it. `None`: the workers read `data.bin`.
    pub stage: Option<crate::stage::StageOptions>,
    /// After every file is rebuilt, free the raw bytes of completed chunks
    /// ([`crate::prune::prune`]: their `data.bin` in the tree and their staged objects in
    /// the bucket, each only once its chunk object verifies). `None`: keep them.
    pub prune: Option<crate::prune::PruneOptions>,
}

impl std::fmt::Debug for PipelineConfig {
    // By hand, so that secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { Some("<redacted>") } else { None };
        f.debug_struct("PipelineConfig")
            .field("work_dir", &self.work_dir)
            .field("files", &self.files)
            .field("inputs", &self.inputs)
            .field("base", &self.base)
            .field("bucket", &self.bucket)
            .field("store", &self.store)
            .field("workers", &self.workers)
            .field("worker_memory", &self.worker_memory)
            .field("dispatch_window", &self.dispatch_window)
            .field("worker_urls", &self.worker_urls)
            .field("token", &redacted(self.token.is_some()))
            .field("signing_key", &redacted(self.signing_key.is_some()))
            .field("lease", &self.lease)
            .field("engine", &self.engine)
            .field("chunker", &self.chunker)
            .field("timeout", &self.timeout)
            .field("stage", &self.stage)
            .field("prune", &self.prune)
            .finish()
    }
}

impl PipelineConfig {
    /// Two in-process workers, a bucket under `work_dir`, the chunker's defaults.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            work_dir: work_dir.into(),
            files: Vec::new(),
            inputs: chunker::InputOptions::default(),
            base: None,
            bucket: None,
            store: StoreConfig::default(),
            workers: 2,
            worker_memory: DEFAULT_WORKER_MEMORY,
            dispatch_window: DEFAULT_DISPATCH_WINDOW,
            worker_urls: Vec::new(),
            token: None,
            signing_key: None,
            lease: Duration::from_secs(120),
            engine: gpu_compress::EngineChoice::Auto,
            chunker: chunker::ChunkerConfig::default(),
            timeout: Duration::from_secs(600),
            stage: None,
            prune: None,
        }
    }
}

/// What a running pipeline reports as it goes. Stages overlap: events of several
/// stages interleave.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineEvent {
    /// A stage with a known amount of work began (`total` in the stage's unit: bytes for
    /// `chunk`, chunks for `compress`).
    StageStarted {
        /// The stage's name.
        stage: &'static str,
        /// How much work it has.
        total: u64,
    },
    /// How far the current stage is.
    Progress {
        /// The stage's name.
        stage: &'static str,
        /// Work done so far.
        done: u64,
    },
    /// A stage's total grew: compression's, as each group of files is chunked.
    TotalGrew {
        /// The stage's name.
        stage: &'static str,
        /// How much work it has now.
        total: u64,
    },
    /// A stage ended.
    StageFinished {
        /// The stage's name.
        stage: &'static str,
    },
    /// Something went wrong with one chunk or file; the run goes on.
    Warning(String),
}

/// One stage's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StageReport {
    /// The stage's name.
    pub stage: &'static str,
    /// Wall-clock seconds from its start to its end. Stages overlap (files are
    /// dispatched while others are chunked, rebuilt while others are compressed), so
    /// these add up to more than the run.
    pub seconds: f64,
    /// Seconds from the run's start to this stage's start (0 for stages that run in
    /// rounds, whose `seconds` add the rounds up).
    pub started_s: f64,
    /// Of `seconds`, the time the stage had work under way: less where it waited for
    /// the stage that feeds it (chunking for a file system, rebuilding for recipes).
    pub busy_s: f64,
    /// Bytes it went through, where that means something.
    pub bytes: u64,
    /// `bytes` per second, in MB (10⁶).
    pub mb_per_s: f64,
    /// What it did, in words.
    pub note: String,
}

impl StageReport {
    /// A stage that took `elapsed` for `bytes`.
    pub fn new(stage: &'static str, elapsed: Duration, bytes: u64, note: String) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            stage,
            seconds,
            started_s: 0.0,
            busy_s: seconds,
            bytes,
            mb_per_s: if seconds > 0.0 && bytes > 0 {
                bytes as f64 / 1e6 / seconds
            } else {
                0.0
            },
            note,
        }
    }

    /// The same stage, begun `offset` after the run's start.
    pub fn starting_at(mut self, offset: Duration) -> Self {
        self.started_s = offset.as_secs_f64();
        self
    }

    /// The same stage, with work under way for `busy` of its time.
    pub fn busy_for(mut self, busy: Duration) -> Self {
        self.busy_s = busy.as_secs_f64().min(self.seconds);
        self
    }
}

/// One file's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FileReport {
    /// The file's name in the tree and the bucket.
    pub name: String,
    /// The original file, when this run chunked it.
    pub source: Option<PathBuf>,
    /// Detected format.
    pub format: String,
    /// Number of chunks.
    pub chunks: u64,
    /// Size of the file.
    pub bytes: u64,
    /// Bytes its distinct chunk objects take in the bucket.
    pub stored_bytes: u64,
    /// Rebuilt from the bucket alone, every chunk's size and the whole file's SHA-256
    /// checked (and, for a file chunked in this run, its source still holds the bytes
    /// rebuilt: unchanged since it was chunked, or of the same SHA-256).
    pub verified: bool,
    /// Why it was not verified.
    pub error: Option<String>,
}

/// What a pipeline run did.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PipelineReport {
    /// The bucket.
    pub bucket: String,
    /// The first worker's compression engine.
    pub engine: String,
    /// Its device.
    pub device: Option<String>,
    /// Every file, in tree order.
    pub files: Vec<FileReport>,
    /// Wall-clock seconds of the whole run, less than its stages' sum where they
    /// overlapped.
    pub seconds: f64,
    /// Every stage, in order.
    pub stages: Vec<StageReport>,
    /// Bytes of all files.
    pub bytes_in: u64,
    /// Compressed bytes the workers stored.
    pub bytes_stored_now: u64,
    /// Chunks the workers compressed and stored.
    pub chunks_stored_now: u64,
    /// Chunks the workers found stored already.
    pub chunks_already_stored: u64,
    /// `bytes_in` over the bytes the files' chunk objects take.
    pub ratio: f64,
    /// What staging did, when the run staged the raw bytes in the bucket
    /// ([`PipelineConfig::stage`]).
    pub staged: Option<crate::stage::StageReport>,
    /// What pruning freed, when the run pruned ([`PipelineConfig::prune`]).
    pub pruned: Option<crate::prune::PruneReport>,
}

impl PipelineReport {
    /// The files that were not rebuilt bit for bit.
    pub fn unverified(&self) -> impl Iterator<Item = &FileReport> {
        self.files.iter().filter(|f| !f.verified)
    }
}

/// The whole job. See the module documentation.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: PipelineConfig,
}

/// Where a run's events go.
type EventSink = Arc<dyn Fn(PipelineEvent) + Send + Sync>;

/// One file the run rebuilds: chunked now, or found in an existing tree.
#[derive(Debug)]
struct InputFile {
    file: tree::TreeFile,
    source: Option<PathBuf>,
    /// The source as a stat saw it just before it was chunked.
    stamp: Option<SourceStamp>,
}

impl Pipeline {
    /// A pipeline that runs as `config` says.
    pub fn new(config: PipelineConfig) -> Self {
        Self { config }
    }

    /// Runs every stage and reports each file. A file that fails does not stop the
    /// others; the error is on its [`FileReport`]. `Err` means the run as a whole could
    /// not go on (no bucket, no worker, an unreadable tree).
    ///
    /// The stages overlap: files are chunked a group at a time ([`CHUNK_GROUP_BYTES`],
    /// [`CHUNK_GROUP_FILES`]), each group is detected and dispatched as soon as it is in
    /// the tree while the next one is chunked (a big file's chunks go out as they are
    /// cut, [`STREAM_BATCH`] at a time), and a file is rebuilt as soon as its
    /// recipe is in the bucket while the workers still compress the others. Memory stays
    /// bounded by the dispatch window, the workers' memory and the rebuilds' budget, not
    /// by the input.
    pub async fn run(
        &self,
        on_event: impl Fn(PipelineEvent) + Send + Sync + 'static,
    ) -> Result<PipelineReport, Error> {
        let run_started = Instant::now();
        let on_event: EventSink = Arc::new(on_event);
        let config = &self.config;
        if config.workers == 0 && config.worker_urls.is_empty() {
            return Err(Error::InvalidConfig("at least one worker is needed".into()));
        }
        let work = &config.work_dir;
        std::fs::create_dir_all(work).map_err(Error::io(work))?;
        let work = work.canonicalize().map_err(Error::io(work))?;
        let mut stages = Vec::new();
        let bucket = config
            .bucket
            .clone()
            .unwrap_or_else(|| work.join("bucket").display().to_string());
        let store = uploader::open(&bucket, &config.store).await?;

        // The tree: an existing one, or a new one, chunked from now on (while the workers
        // start, and then while they compress what is in it already).
        let (base, source) = match &config.base {
            Some(base) => {
                let base = base.canonicalize().map_err(Error::io(base))?;
                let files = tree::files(&base)?;
                if files.is_empty() {
                    return Err(Error::InvalidConfig(format!(
                        "{}: no chunked files (no */{} under it)",
                        base.display(),
                        layout::MANIFEST_FILE
                    )));
                }
                let inputs = files
                    .into_iter()
                    .map(|file| InputFile {
                        file,
                        source: None,
                        stamp: None,
                    })
                    .collect::<Vec<_>>();
                (base, Source::Tree(inputs))
            }
            None => {
                let base = work.join(layout::DEFAULT_ROOT);
                let files = self.expand_inputs(&on_event)?;
                replace_pipeline_tree(&base)?;
                let started = Instant::now();
                let (groups, chunking) = self.chunk_in_groups(&base, files, &on_event);
                (
                    base,
                    Source::Chunking {
                        started,
                        groups,
                        chunking,
                    },
                )
            }
        };
        let repo_root = base
            .parent()
            .ok_or_else(|| {
                Error::InvalidConfig(format!("{} has no parent directory", base.display()))
            })?
            .to_owned();

        // Workers: real HTTP servers, in this process on loopback or given by URL.
        let (mut workers, token, signing_key) = if config.worker_urls.is_empty() {
            let token = crate::token::new_token()?;
            // Workers refuse to start without a signing key: the run makes one, as it
            // makes the token, and its dispatcher signs with it.
            let signing_key = crate::token::new_token()?.into_bytes();
            let mut workers = Vec::new();
            for index in 0..config.workers {
                workers.push(
                    WorkerClient::start_local(
                        index,
                        &repo_root,
                        store.clone(),
                        &token,
                        &signing_key,
                        config.engine,
                        config.worker_memory / config.workers as u64,
                    )
                    .await?,
                );
            }
            (workers, Some(token), Some(signing_key))
        } else {
            let token = config.token.clone().filter(|t| !t.is_empty());
            let workers = config
                .worker_urls
                .iter()
                .map(|url| WorkerClient::remote(url, token.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            (workers, token, config.signing_key.clone())
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::InvalidConfig(format!("building the HTTP client: {e}")))?;
        let engine_status = first_status(&workers, &http).await?;
        // Workers used before (--worker URL) count every run; report this run's share,
        // and apply only the failures that come after this point.
        let totals_before = WorkerTotals::collect(&workers, &http).await;
        let reported_before = totals_before.completed + totals_before.failed;
        for worker in &mut workers {
            if let Err(e) = worker.skip_earlier_failures(&http).await {
                on_event(PipelineEvent::Warning(e.to_string()));
            }
        }
        let repository = crate::actions::repository_ref(None, None, &repo_root)?;
        // The chunks to compress, known as the groups come out of the chunker.
        let chunk_count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // For the early rebuilds, what says that a recipe may have appeared: the recipes
        // the workers wrote or found, or where a worker does not count them, the chunks
        // they reported. Each lookup of a recipe not there yet is a request to the bucket.
        let (reported, reported_seen) = tokio::sync::watch::channel(WorkerProgress {
            done: 0,
            recipes_ready: None,
        });
        let recipes_before = totals_before.recipes_ready;
        let progress = {
            let on_event = on_event.clone();
            let chunk_count = chunk_count.clone();
            move |seen: WorkerProgress| {
                // This run's: a reused worker's counts include the runs before.
                let this_run = WorkerProgress {
                    done: seen.done.saturating_sub(reported_before),
                    recipes_ready: seen
                        .recipes_ready
                        .zip(recipes_before)
                        .map(|(now, then)| now.saturating_sub(then)),
                };
                reported.send_if_modified(|last| std::mem::replace(last, this_run) != this_run);
                on_event(PipelineEvent::Progress {
                    stage: "compress",
                    done: seen
                        .done
                        .saturating_sub(reported_before)
                        .min(chunk_count.load(std::sync::atomic::Ordering::Relaxed)),
                });
            }
        };

        // A chunk a worker lost comes back when its lease runs out; one that keeps
        // failing ends `failed` after the detector's maximum attempts.
        let lease = config.lease.clamp(
            Duration::from_secs(1),
            config.timeout.max(Duration::from_secs(1)),
        );
        let deadline = Instant::now() + config.timeout;
        let mut dispatch_config =
            dispatcher::DispatchConfig::new(workers.iter().map(WorkerClient::endpoint).collect());
        dispatch_config.token = token.clone();
        dispatch_config.signing_key = signing_key.clone();
        dispatch_config.base = Some(base.clone());
        dispatch_config.lease = lease;
        dispatch_config.repository = repository.clone();
        let mut sender = Sender {
            dispatcher: dispatcher::Dispatcher::new(dispatch_config)?,
            window: config.dispatch_window.max(1),
            deadline,
            lease,
            base: &base,
            on_event: &on_event,
            dispatched: 0,
            detect_time: Duration::ZERO,
            dispatch_time: Duration::ZERO,
            first_dispatch: None,
        };

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let budget = Arc::new(RebuildBudget::new(
            config.chunker.max_chunk_size,
            u32::try_from(cores).unwrap_or(u32::MAX),
        ));
        let rebuild_clock = BusyClock::default();
        let (early, watching) = EarlyRebuilds::start(
            store.clone(),
            budget.clone(),
            rebuild_clock.clone(),
            reported_seen,
        );
        // The rebuilds run beside the rest, in this task: `early` moves in, and its end
        // tells the rebuilds that no more files come.
        let compressing = async {
            let mut early = early;
            let mut inputs: Vec<InputFile> = Vec::new();
            on_event(PipelineEvent::StageStarted {
                stage: "compress",
                total: 0,
            });
            let chunks_of = |inputs: &[InputFile]| inputs.iter().map(|f| f.file.chunks).sum();
            let add_chunks = |more: u64| {
                if more == 0 {
                    return;
                }
                let total =
                    chunk_count.fetch_add(more, std::sync::atomic::Ordering::Relaxed) + more;
                on_event(PipelineEvent::TotalGrew {
                    stage: "compress",
                    total,
                });
            };
            match source {
                Source::Tree(files) => {
                    add_chunks(chunks_of(&files));
                    early.watch(0, &files);
                    inputs = files;
                }
                Source::Chunking {
                    started: chunk_started,
                    mut groups,
                    chunking,
                } => {
                    // Staging reads the whole tree's pending chunks: with it, nothing goes out
                    // before the last group is chunked and staged.
                    let stream = config.stage.is_none();
                    // Chunks of a big file handed over as they are written, not sent yet,
                    // and how many were counted as they came (the group counts the rest).
                    let mut cut = Vec::new();
                    let mut counted = 0;
                    while let Some(chunked) = groups.recv().await {
                        let group = match chunked {
                            Chunked::Chunk { info, last } => {
                                counted += 1;
                                add_chunks(1);
                                cut.push(*info);
                                // A file's last chunk waits for the group, which comes once
                                // its manifest is written: a worker that finishes the file
                                // then finds the manifest, and publishes the recipe.
                                if !last && cut.len() >= STREAM_BATCH {
                                    sender
                                        .send(&workers, &http, std::mem::take(&mut cut), &progress)
                                        .await?;
                                }
                                continue;
                            }
                            Chunked::Group(group) => group,
                        };
                        // What is left of its files' chunks is pending on disk: the
                        // detection below finds it (and passes over what went out).
                        cut.clear();
                        add_chunks(chunks_of(&group).saturating_sub(std::mem::take(&mut counted)));
                        let first = inputs.len();
                        inputs.extend(group);
                        if stream {
                            let names = inputs[first..]
                                .iter()
                                .filter(|f| f.file.error.is_none())
                                .map(|f| f.file.name.clone())
                                .collect::<Vec<_>>();
                            if !names.is_empty() {
                                let chunks = sender.detect(names)?;
                                sender.send(&workers, &http, chunks, &progress).await?;
                            }
                            early.watch(first, &inputs[first..]);
                        }
                    }
                    let (chunk_busy, chunk_ended) = chunking
                        .await
                        .map_err(|e| Error::Task(format!("chunking: {e}")))?;
                    on_event(PipelineEvent::StageFinished { stage: "chunk" });
                    let bytes: u64 = inputs.iter().map(|f| f.file.bytes).sum();
                    stages.push(
                        StageReport::new(
                            "chunk",
                            chunk_ended - chunk_started,
                            bytes,
                            format!(
                                "{} chunks, {}",
                                chunk_count.load(std::sync::atomic::Ordering::Relaxed),
                                config.chunker.strategy
                            ),
                        )
                        .starting_at(chunk_started - run_started)
                        .busy_for(chunk_busy),
                    );
                    if !stream {
                        early.watch(0, &inputs);
                    }
                }
            }
            let staged = match &config.stage {
                Some(options) => Some(
                    stage_raw_bytes(&base, &store, options, &on_event, &mut stages, run_started)
                        .await?,
                ),
                None => None,
            };
            let bytes_in: u64 = inputs.iter().map(|f| f.file.bytes).sum();

            // Detect → dispatch → wait → sync, until nothing is open any more: the chunks
            // not dispatched yet (an existing tree, staging, retries), then every chunk's
            // completion and failure recorded in the tree.
            let mut sync_time = Duration::ZERO;
            // Set when a round's sync completed every chunk the tree had open.
            let mut tree_complete;
            let mut last_report;
            loop {
                let chunks = sender.detect(Vec::new())?;
                let dispatched_now = !chunks.is_empty();
                sender.send(&workers, &http, chunks, &progress).await?;
                // Wait until every worker that answers has reported every chunk it accepted.
                // A worker that stops answering has nothing more to report: what it held
                // comes back through its lease.
                wait_for_workers(&workers, &http, 1, deadline, &progress).await;
                last_report = Instant::now();

                let started = Instant::now();
                // Recipes are published once, after the last round (below).
                let synced =
                    crate::sync::complete_from_records(&base, store.as_ref(), chrono::Utc::now())
                        .await?;
                tree_complete =
                    synced.errors.is_empty() && synced.completed.len() == synced.open_chunks;
                // Failures reach the repository by callback in Actions; here the workers are
                // asked. Applying them now (instead of waiting for the lease) lets the
                // detector retry at once and give up after its maximum attempts.
                let mut failed_now = 0;
                for worker in &mut workers {
                    let failures = match worker.new_failures(&http).await {
                        Ok(failures) => failures,
                        Err(e) => {
                            on_event(PipelineEvent::Warning(e.to_string()));
                            continue;
                        }
                    };
                    for failure in failures {
                        failed_now += 1;
                        on_event(PipelineEvent::Warning(format!(
                            "{} failed: {}",
                            failure.chunk_path,
                            failure.error.as_deref().unwrap_or("no reason given")
                        )));
                        if let Err(e) =
                            detector::apply_callback(&base, &failure, chrono::Utc::now())
                        {
                            on_event(PipelineEvent::Warning(format!(
                                "recording that failure: {e}"
                            )));
                        }
                    }
                }
                sync_time += started.elapsed();
                if tree_complete || Instant::now() > deadline {
                    break;
                }
                if !dispatched_now && failed_now == 0 {
                    // Nothing went out and nothing came back failed (to be retried by the
                    // next round): the run is over once nothing is open any more, the
                    // chunks left having failed for good. Else chunks leased to a worker
                    // elsewhere are not reported yet: wait for them.
                    if tree::open_chunks(&base, chrono::Utc::now())?.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            on_event(PipelineEvent::StageFinished { stage: "compress" });
            let totals = WorkerTotals::collect(&workers, &http)
                .await
                .since(&totals_before);
            let Sender {
                dispatched,
                detect_time,
                dispatch_time,
                first_dispatch,
                ..
            } = sender;
            for worker in workers {
                worker.stop().await?;
            }
            let compress_started = first_dispatch.unwrap_or(last_report);
            stages.push(StageReport::new("detect", detect_time, 0, String::new()));
            stages.push(StageReport::new(
                "dispatch",
                dispatch_time,
                0,
                format!(
                    "{} over HTTP to {}",
                    plural(dispatched as u64, "chunk"),
                    plural(totals.workers as u64, "worker")
                ),
            ));
            // Workers start compressing as soon as they accept, so compress+upload is timed
            // from the first dispatch to the last report.
            stages.push(
                StageReport::new(
                    "compress+upload",
                    last_report - compress_started,
                    totals.bytes_in,
                    format!(
                        "{} stored, {} already stored, {} failed",
                        totals.completed - totals.deduplicated,
                        totals.deduplicated,
                        totals.failed
                    ),
                )
                .starting_at(compress_started - run_started),
            );
            stages.push(StageReport::new("sync", sync_time, 0, String::new()));
            Ok::<_, Error>((inputs, totals, tree_complete, bytes_in, staged))
        };
        let (compressed, early_outcomes) = tokio::join!(compressing, watching);
        let (inputs, totals, tree_complete, bytes_in, staged) = compressed?;

        // Recipes: workers publish them as files complete; a last sync (only its recipe
        // part, when the rounds left nothing open) publishes any that are missing and
        // says which files have one. Files rebuilt early are done, their recipes found
        // by the rebuild, so the last sync skips them; the rest are rebuilt now, from
        // the bucket alone.
        let started = Instant::now();
        let rebuilt_early: std::collections::HashSet<usize> =
            early_outcomes.iter().map(|o| o.index).collect();
        let rebuilt_early_names: std::collections::HashSet<&str> = rebuilt_early
            .iter()
            .map(|&index| inputs[index].file.name.as_str())
            .collect();
        let file_recipes = if tree_complete {
            crate::sync::publish_recipes_except(&base, store.as_ref(), |name| {
                rebuilt_early_names.contains(name)
            })
            .await?
        } else {
            crate::sync::sync(&base, store.as_ref(), chrono::Utc::now())
                .await?
                .recipes
        };
        let recipe_of: std::collections::HashMap<&str, &FileRecipe> =
            file_recipes.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut rows = Vec::new();
        let mut rest = Vec::new();
        for (index, input) in inputs.into_iter().enumerate() {
            let mut row = FileReport {
                name: input.file.name,
                source: input.source,
                format: input.file.format,
                chunks: input.file.chunks,
                bytes: input.file.bytes,
                stored_bytes: 0,
                verified: false,
                error: input.file.error,
            };
            if rebuilt_early.contains(&index) {
                // Rebuilt already, beside the workers.
                rows.push(row);
                continue;
            }
            let recipe = recipe_of.get(row.name.as_str()).copied();
            match recipe {
                Some(FileRecipe {
                    key: Some(_),
                    file_sha256: Some(sha),
                    ..
                }) => rest.push(RebuildJob {
                    index,
                    name: row.name.clone(),
                    file_sha256: *sha,
                    source: row.source.clone().map(|path| (path, input.stamp)),
                    size: row.bytes,
                    recipe: None,
                }),
                Some(r) if row.error.is_none() => {
                    // Say why in the tree's terms (a chunk failed, and its reason) when
                    // the tree knows; else what the bucket lacks.
                    let why = tree::first_unfinished_chunk(&base, &row.name)
                        .ok()
                        .flatten()
                        .map(|c| c.to_string())
                        .or_else(|| r.reason.clone())
                        .unwrap_or_else(|| "unknown".into());
                    row.error = Some(format!("no recipe: {why}"));
                }
                None if row.error.is_none() => row.error = Some("no recipe".into()),
                _ => {}
            }
            rows.push(row);
        }
        let with_recipe = rebuilt_early.len() + rest.len();
        let published = file_recipes
            .iter()
            .filter(|r| r.state == RecipeState::Published)
            .count();
        stages.push(
            StageReport::new(
                "recipes",
                started.elapsed(),
                0,
                format!(
                    "{with_recipe} of {} files have one ({published} published by this sync)",
                    rows.len()
                ),
            )
            .starting_at(started - run_started),
        );

        // Files are rebuilt concurrently within a memory budget (see `RebuildBudget`),
        // and a file chunked in this run must still hold the bytes rebuilt: unchanged
        // since it was chunked, or else hashed beside its rebuild.
        let late_outcomes: Vec<RebuildOutcome> =
            futures::stream::iter(RebuildGroup::split(rest, &budget))
                .map(|group| group.run(store.clone(), budget.clone(), rebuild_clock.clone()))
                .buffer_unordered(RebuildBudget::MAX_FILES / RebuildGroup::MAX_FILES)
                .flat_map(futures::stream::iter)
                .collect()
                .await;
        let mut rebuilt_bytes = 0;
        for RebuildOutcome { index, result } in early_outcomes.into_iter().chain(late_outcomes) {
            let row = &mut rows[index];
            match result {
                Ok((file_size, stored)) => {
                    row.verified = true;
                    row.stored_bytes = stored;
                    rebuilt_bytes += file_size;
                }
                Err(e) => row.error = Some(e),
            }
        }
        let rebuilds = rebuild_clock.span();
        stages.push(
            StageReport::new(
                "reconstruct+verify",
                rebuilds.map_or(Duration::ZERO, |(start, end)| end - start),
                rebuilt_bytes,
                format!(
                    "size of every chunk, SHA-256 of every file; {} of {} files rebuilt while \
                     the workers ran",
                    rebuilt_early.len(),
                    with_recipe
                ),
            )
            .starting_at(rebuilds.map_or(Duration::ZERO, |(start, _)| start - run_started))
            .busy_for(rebuild_clock.busy()),
        );

        // Only now, with every file rebuilt from the bucket, are raw bytes freed (and then
        // only those whose chunk object prune itself reads back and verifies).
        let pruned = match &config.prune {
            Some(options) => Some(
                prune_raw_bytes(&base, &store, options, &on_event, &mut stages, run_started)
                    .await?,
            ),
            None => None,
        };

        let stored: u64 = rows.iter().map(|r| r.stored_bytes).sum();
        Ok(PipelineReport {
            bucket,
            engine: engine_status.engine,
            device: engine_status.device,
            seconds: run_started.elapsed().as_secs_f64(),
            stages,
            bytes_in,
            bytes_stored_now: totals.bytes_out,
            chunks_stored_now: totals.completed - totals.deduplicated,
            chunks_already_stored: totals.deduplicated,
            ratio: if stored == 0 {
                0.0
            } else {
                bytes_in as f64 / stored as f64
            },
            files: rows,
            staged,
            pruned,
        })
    }

    /// Expands `files` (folders walked, every file named by `chunker::assign_names`). An
    /// input that cannot be expanded (a missing path, a FIFO named explicitly, two files
    /// the naming rule cannot tell apart) stops the run before anything is chunked; an
    /// unreadable subfolder is a warning.
    fn expand_inputs(&self, on_event: &EventSink) -> Result<Vec<chunker::InputFile>, Error> {
        let mut walk = self.config.inputs.clone();
        // The run's own chunk tree, bucket and rebuilt files, when the work directory
        // is inside a folder given.
        walk.skip_dirs.push(self.config.work_dir.clone());
        let expanded = chunker::expand_inputs(&self.config.files, &walk)?;
        for skipped in &expanded.skipped {
            on_event(PipelineEvent::Warning(skipped.to_string()));
        }
        let mut errors = Vec::new();
        for error in expanded.errors {
            match error {
                // One unreadable subfolder does not make the rest of a folder unusable.
                error @ chunker::InputError::Walk { .. } => {
                    on_event(PipelineEvent::Warning(error.to_string()));
                }
                error => errors.push(error),
            }
        }
        if let Some(error) = errors.into_iter().next() {
            return Err(error.into());
        }
        if expanded.files.is_empty() {
            return Err(Error::InvalidConfig(
                "no files to chunk (folders given hold none that are not ignored)".into(),
            ));
        }
        Ok(expanded.files)
    }

    /// Chunks `files` into `base` on a blocking thread, a group at a time
    /// ([`CHUNK_GROUP_BYTES`], [`CHUNK_GROUP_FILES`]; each group one
    /// `chunker::chunk_files` batch, with one flush), and hands over each group's files
    /// as soon as their trees are in place. A file that fails to chunk is on its own row
    /// and the others go on. The thread returns the time it spent chunking and when it
    /// was done.
    fn chunk_in_groups(
        &self,
        base: &Path,
        files: Vec<chunker::InputFile>,
        on_event: &EventSink,
    ) -> (
        tokio::sync::mpsc::UnboundedReceiver<Chunked>,
        tokio::task::JoinHandle<(Duration, Instant)>,
    ) {
        on_event(PipelineEvent::StageStarted {
            stage: "chunk",
            total: files.iter().map(|f| f.size).sum(),
        });
        let mut options = chunker::ChunkOptions::new(base);
        options.config = self.config.chunker;
        options.force = true;
        // Progress is per batch: the groups before count too.
        let done_before = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sink = on_event.clone();
        let before = done_before.clone();
        options.progress = Some(Arc::new(move |p: chunker::Progress| {
            sink(PipelineEvent::Progress {
                stage: "chunk",
                done: before.load(std::sync::atomic::Ordering::Relaxed) + p.bytes_done,
            });
        }));
        let (groups, receiver) = tokio::sync::mpsc::unbounded_channel();
        // A big file's chunks go out as they are cut (its tree is then written in place),
        // except when staging, which needs the whole tree first.
        if self.config.stage.is_none() {
            let chunks = groups.clone();
            let root = base
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| layout::DEFAULT_ROOT.to_owned());
            options.stream = Some(Arc::new(move |chunk: chunker::WrittenChunk<'_>| {
                let path = format!("{root}/{}/{}", chunk.name, chunk.dir);
                // A closed channel means the run stopped: nothing would dispatch it.
                let _ = chunks.send(Chunked::Chunk {
                    info: Box::new(detector::chunk_info(path, chunk.metadata)),
                    last: chunk.last,
                });
            }));
        }
        let chunking = tokio::task::spawn_blocking(move || {
            let mut busy = Duration::ZERO;
            let mut files = files.into_iter().peekable();
            while files.peek().is_some() {
                let mut group = Vec::new();
                let mut bytes = 0;
                while let Some(file) =
                    files.next_if(|_| bytes < CHUNK_GROUP_BYTES && group.len() < CHUNK_GROUP_FILES)
                {
                    bytes += file.size;
                    group.push(file);
                }
                let started = Instant::now();
                let inputs = chunk_group(group, &options);
                busy += started.elapsed();
                done_before.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                if groups.send(Chunked::Group(inputs)).is_err() {
                    // The run stopped: nothing would dispatch what is chunked.
                    break;
                }
            }
            (busy, Instant::now())
        });
        (receiver, chunking)
    }
}

/// Files of a group are chunked together until the group holds this many bytes (the
/// last file may take it past): big enough that the group's flush and detection cost
/// little beside its chunking, small enough that the workers start within a fraction of
/// a second of the run.
pub const CHUNK_GROUP_BYTES: u64 = 32 << 20;

/// … or this many files: a folder of small files goes out in groups of this size.
pub const CHUNK_GROUP_FILES: usize = 256;

/// Chunks `files` as one batch (`chunker::chunk_files`: one flush for all their trees).
fn chunk_group(files: Vec<chunker::InputFile>, options: &chunker::ChunkOptions) -> Vec<InputFile> {
    let stamps: Vec<Option<SourceStamp>> = files.iter().map(|f| SourceStamp::of(&f.path)).collect();
    let results = chunker::chunk_files(&files, options);
    files
        .into_iter()
        .zip(results)
        .zip(stamps)
        .map(|((input, result), stamp)| match result {
            Ok(report) => InputFile {
                file: tree::TreeFile {
                    name: report.name,
                    format: report.format.name().to_owned(),
                    chunks: report.total_chunks,
                    bytes: report.file_size,
                    file_sha256: Some(report.file_hash),
                    error: None,
                },
                source: Some(report.source),
                stamp,
            },
            Err(error) => InputFile {
                file: tree::TreeFile {
                    name: input.name,
                    format: "unknown".to_owned(),
                    chunks: 0,
                    bytes: input.size,
                    file_sha256: None,
                    error: Some(format!("not chunked: {error}")),
                },
                source: Some(input.path),
                stamp,
            },
        })
        .collect()
}

/// Chunks of a big file are dispatched as they are cut, this many at a time: few enough
/// that the workers start early, enough that a request is not sent per chunk.
pub const STREAM_BATCH: usize = 32;

/// What the chunking thread hands over ([`Pipeline::chunk_in_groups`]).
enum Chunked {
    /// A chunk of a file larger than one chunk, on disk while the rest of the file is
    /// still being cut; `last` when it completes the file (whose manifest comes next).
    Chunk {
        info: Box<chunk_model::ChunkInfo>,
        last: bool,
    },
    /// Files whose trees are complete.
    Group(Vec<InputFile>),
}

/// Where a run's files come from.
enum Source {
    /// An existing tree's files.
    Tree(Vec<InputFile>),
    /// Files being chunked into a new tree, a group at a time
    /// ([`Pipeline::chunk_in_groups`]).
    Chunking {
        started: Instant,
        groups: tokio::sync::mpsc::UnboundedReceiver<Chunked>,
        chunking: tokio::task::JoinHandle<(Duration, Instant)>,
    },
}

/// Makes `base` an empty tree of this run. Never replaces a tree a pipeline did not
/// create: it may hold a user's own chunks and their statuses (`--work-dir .`). A tree
/// with the marker is a previous run's scratch copy, and is replaced.
fn replace_pipeline_tree(base: &Path) -> Result<(), Error> {
    let marker = base.join(PIPELINE_TREE_MARKER);
    if base.exists() {
        if !marker.is_file() {
            return Err(Error::InvalidConfig(format!(
                "{} exists and was not created by a pipeline run; it is left as it is. \
                 Use another work directory, or run on that tree with --base",
                base.display()
            )));
        }
        std::fs::remove_dir_all(base).map_err(Error::io(base))?;
    }
    std::fs::create_dir_all(base).map_err(Error::io(base))?;
    std::fs::write(
        &marker,
        b"created by a panini pipeline run; replaced by the next\n",
    )
    .map_err(Error::io(&marker))
}

/// Detects and dispatches for a run, and keeps the time each took.
struct Sender<'a> {
    /// One for the run: it holds the HTTP client and its connections to the workers.
    dispatcher: dispatcher::Dispatcher,
    /// Chunks dispatched at a time ([`PipelineConfig::dispatch_window`]).
    window: usize,
    deadline: Instant,
    lease: Duration,
    base: &'a Path,
    on_event: &'a EventSink,
    dispatched: usize,
    detect_time: Duration,
    dispatch_time: Duration,
    first_dispatch: Option<Instant>,
}

impl Sender<'_> {
    /// The chunks to dispatch now, of the named files (`files`) or of the whole tree
    /// (empty `files`). A chunk whose metadata cannot be used is a warning.
    fn detect(&mut self, files: Vec<String>) -> Result<Vec<chunk_model::ChunkInfo>, Error> {
        let started = Instant::now();
        let config = detector::DetectConfig {
            lease: self.lease,
            files,
            ..detector::DetectConfig::new(self.base)
        };
        let report = detector::scan(&config, chrono::Utc::now())?;
        for invalid in &report.invalid {
            (self.on_event)(PipelineEvent::Warning(format!(
                "{}: {}",
                invalid.path, invalid.reason
            )));
        }
        self.detect_time += started.elapsed();
        Ok(report.selected.into_iter().map(|c| c.info).collect())
    }

    /// Dispatches `chunks` a window at a time: each window goes out once the workers
    /// hold fewer than a window of unreported chunks, so their queues, and this list as
    /// it is consumed, stay bounded by the window, not by the input.
    async fn send(
        &mut self,
        workers: &[WorkerClient],
        http: &reqwest::Client,
        chunks: Vec<chunk_model::ChunkInfo>,
        progress: &impl Fn(WorkerProgress),
    ) -> Result<(), Error> {
        let below = u64::try_from(self.window).unwrap_or(u64::MAX);
        let mut chunks = chunks.into_iter();
        loop {
            let window: Vec<_> = chunks.by_ref().take(self.window).collect();
            if window.is_empty() {
                return Ok(());
            }
            wait_for_workers(workers, http, below, self.deadline, progress).await;
            let started = Instant::now();
            self.first_dispatch.get_or_insert(started);
            let outcome = self.dispatcher.run(window, |_| {}).await;
            self.dispatched += outcome.accepted_chunks;
            self.dispatch_time += started.elapsed();
        }
    }
}

/// A file to rebuild from the bucket and compare with its source.
#[derive(Debug)]
struct RebuildJob {
    /// Its row in the report.
    index: usize,
    name: String,
    file_sha256: Sha256Digest,
    source: Option<(PathBuf, Option<SourceStamp>)>,
    size: u64,
    /// What the early rebuilds' lookup read for it, once that settled the file: its
    /// recipe (key and content), or why the recipe there cannot be used.
    recipe: Option<RecipeRead>,
}

/// A recipe read from the bucket: its key and content, or why it cannot be used.
type RecipeRead = Result<(String, chunk_model::Recipe), uploader::ReconstructError>;

/// A [`RebuildJob`]'s outcome: the file's size and the bytes its chunk objects take.
struct RebuildOutcome {
    index: usize,
    result: Result<(u64, u64), String>,
}

/// Files rebuilt together, in one batch of store requests and one job on rayon's pool:
/// a folder's small files cost a few hand-offs between threads per batch instead of
/// several per file (issue #17).
#[derive(Debug)]
struct RebuildGroup(Vec<RebuildJob>);

impl RebuildGroup {
    /// Files in one group at most: small enough that a few groups are rebuilt at once.
    const MAX_FILES: usize = 16;

    /// Groups `jobs` in order: consecutive files together up to [`Self::MAX_FILES`] and
    /// one file's share of `budget`, and a file bigger than that share alone (streamed).
    fn split(jobs: impl IntoIterator<Item = RebuildJob>, budget: &RebuildBudget) -> Vec<Self> {
        let most = budget.per_file_bytes();
        let mut groups = Vec::new();
        let mut group: Vec<RebuildJob> = Vec::new();
        let mut bytes = 0;
        for job in jobs {
            if !group.is_empty() && (group.len() == Self::MAX_FILES || bytes + job.size > most) {
                groups.push(Self(std::mem::take(&mut group)));
                bytes = 0;
            }
            bytes += job.size;
            group.push(job);
        }
        if !group.is_empty() {
            groups.push(Self(group));
        }
        groups
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Rebuilds the files once the budget has room for them. Owns what it uses: the
    /// early rebuilds keep it among their boxed steps, which borrow nothing.
    async fn run(
        self,
        store: Arc<dyn ObjectStore>,
        budget: Arc<RebuildBudget>,
        clock: BusyClock,
    ) -> Vec<RebuildOutcome> {
        let _held = budget.hold(self.0.iter().map(|job| job.size).sum()).await;
        let _busy = clock.enter();
        let mut jobs = self.0;
        let results = rebuild_and_compare(store.as_ref(), &mut jobs).await;
        jobs.iter()
            .zip(results)
            .map(|(job, result)| RebuildOutcome {
                index: job.index,
                result,
            })
            .collect()
    }
}

/// Rebuilds files while the workers still compress others: each file handed over is
/// rebuilt as soon as its recipe is in the bucket. The recipes of the oldest files
/// waiting are read together (one `get_many`: a recipe found is read once, not looked
/// up and then read) whenever the workers say they wrote or found more recipes (workers
/// that do not say: reported more chunks) or the last lookup found some, at most every
/// [`Self::MIN_PAUSE`], and otherwise every [`Self::MAX_PAUSE`]. Files whose recipe has
/// not appeared when the handle is dropped are the caller's to rebuild.
struct EarlyRebuilds {
    jobs: tokio::sync::mpsc::UnboundedSender<RebuildJob>,
}

impl EarlyRebuilds {
    /// Recipes looked up at once.
    const LOOKUP: usize = 64;
    /// The least pause between lookups …
    const MIN_PAUSE: Duration = Duration::from_millis(20);
    /// … and the most, when no report says that a recipe may have appeared.
    const MAX_PAUSE: Duration = Duration::from_millis(500);

    /// The handle that takes files, and the future that rebuilds them: it ends, with
    /// every rebuild's outcome, once the handle is dropped and the rebuilds under way
    /// are done. (A future to drive beside the run rather than a task: the rebuild's
    /// future is not `Send` for every lifetime rustc has to consider.)
    fn start(
        store: Arc<dyn ObjectStore>,
        budget: Arc<RebuildBudget>,
        clock: BusyClock,
        reported: tokio::sync::watch::Receiver<WorkerProgress>,
    ) -> (Self, impl Future<Output = Vec<RebuildOutcome>>) {
        let (jobs, receiver) = tokio::sync::mpsc::unbounded_channel();
        (
            Self { jobs },
            Self::look_for_recipes(store, budget, clock, receiver, reported),
        )
    }

    /// Hands over `inputs` (rows from `first` on) whose recipe can be named: chunked
    /// into the tree, with the file's SHA-256 known.
    fn watch(&mut self, first: usize, inputs: &[InputFile]) {
        for (offset, input) in inputs.iter().enumerate() {
            let (None, Some(file_sha256)) = (&input.file.error, input.file.file_sha256) else {
                continue;
            };
            let job = RebuildJob {
                index: first + offset,
                name: input.file.name.clone(),
                file_sha256,
                source: input.source.clone().map(|path| (path, input.stamp)),
                size: input.file.bytes,
                recipe: None,
            };
            if self.jobs.send(job).is_err() {
                return;
            }
        }
    }

    /// The rebuilds' loop. Lookups and rebuilds are steps of one set, polled together:
    /// a lookup awaited on its own would leave the rebuilds unpolled while they hold
    /// the store's request slots, which the lookup (and the workers) wait for.
    async fn look_for_recipes(
        store: Arc<dyn ObjectStore>,
        budget: Arc<RebuildBudget>,
        clock: BusyClock,
        mut jobs: tokio::sync::mpsc::UnboundedReceiver<RebuildJob>,
        mut reported: tokio::sync::watch::Receiver<WorkerProgress>,
    ) -> Vec<RebuildOutcome> {
        let mut waiting = std::collections::VecDeque::new();
        let mut steps = futures::stream::FuturesUnordered::<
            std::pin::Pin<Box<dyn Future<Output = Step>>>,
        >::new();
        let mut rebuilding = 0;
        let mut looking = false;
        let mut open = true;
        let mut outcomes = Vec::new();
        // A lookup is due when the workers said more recipes are ready (at most every
        // `MIN_PAUSE`), and otherwise after `MAX_PAUSE`: the reports are only read while
        // the run waits for the workers, remote workers may be slow to answer, and a
        // recipe may come from elsewhere (another run, or a worker that does not say).
        // Where the workers count the recipes ready, a lookup asks for no more of them
        // than they said are ready and no lookup has found yet (each key not there yet is
        // a request to the bucket for nothing); the pause's lookup asks for a full batch.
        let mut progressed = true;
        let mut watching_reports = true;
        let mut next_lookup = Instant::now();
        let mut fallback = Instant::now();
        let mut recipes_ready: Option<u64> = None;
        let mut found: u64 = 0;
        loop {
            let room = RebuildBudget::MAX_FILES.saturating_sub(rebuilding);
            let may_look = open && !looking && !waiting.is_empty() && room > 0;
            let due = if progressed { next_lookup } else { fallback };
            if may_look && Instant::now() >= due {
                let wanted = match recipes_ready {
                    Some(ready) if progressed => {
                        usize::try_from(ready.saturating_sub(found)).unwrap_or(usize::MAX)
                    }
                    _ => Self::LOOKUP,
                };
                if wanted == 0 {
                    // Every recipe said ready was found: wait for the next report.
                    progressed = false;
                    continue;
                }
                let batch: Vec<RebuildJob> = waiting
                    .drain(..waiting.len().min(Self::LOOKUP).min(room).min(wanted))
                    .collect();
                let store = store.clone();
                steps.push(Box::pin(async move {
                    let wanted: Vec<(&str, Sha256Digest)> = batch
                        .iter()
                        .map(|job| (job.name.as_str(), job.file_sha256))
                        .collect();
                    let read = uploader::find_recipes(store.as_ref(), &wanted).await;
                    let looked_up = batch
                        .into_iter()
                        .zip(read)
                        .map(|(mut job, read)| {
                            job.recipe = match read {
                                // Not there yet, or not reachable now: looked up again
                                // later.
                                Err(
                                    uploader::ReconstructError::NoRecipe { .. }
                                    | uploader::ReconstructError::Store(_),
                                ) => None,
                                // Found, or there but unusable (the rebuild says why).
                                read => Some(read),
                            };
                            job
                        })
                        .collect();
                    Step::LookedUp(looked_up)
                }));
                looking = true;
                progressed = false;
                continue;
            }
            if !open && steps.is_empty() {
                // Watching stopped: the files still waiting are the caller's.
                return outcomes;
            }
            tokio::select! {
                job = jobs.recv(), if open => match job {
                    Some(job) => waiting.push_back(job),
                    None => open = false,
                },
                Some(step) = steps.next(), if !steps.is_empty() => match step {
                    Step::Rebuilt(group) => {
                        rebuilding -= group.len();
                        outcomes.extend(group);
                    }
                    Step::LookedUp(batch) => {
                        looking = false;
                        let looked_up = batch.len();
                        let mut still = std::collections::VecDeque::with_capacity(looked_up);
                        let mut ready = Vec::new();
                        for job in batch {
                            if job.recipe.is_some() && open {
                                ready.push(job);
                            } else {
                                still.push_back(job);
                            }
                        }
                        found += ready.len() as u64;
                        for group in RebuildGroup::split(ready, &budget) {
                            rebuilding += group.len();
                            let run = group.run(store.clone(), budget.clone(), clock.clone());
                            steps.push(Box::pin(async move { Step::Rebuilt(run.await) }));
                        }
                        let now = Instant::now();
                        next_lookup = now + Self::MIN_PAUSE;
                        fallback = now + Self::MAX_PAUSE;
                        // Found some: the next ones in line may be done too.
                        progressed |= still.len() < looked_up;
                        still.append(&mut waiting);
                        waiting = still;
                    }
                },
                changed = reported.changed(), if watching_reports => match changed {
                    Ok(()) => {
                        let seen = *reported.borrow_and_update();
                        // Workers that count recipes say when one may have appeared;
                        // from the others, any chunk reported may have finished a file.
                        progressed |= seen.recipes_ready.is_none()
                            || seen.recipes_ready != recipes_ready;
                        recipes_ready = seen.recipes_ready;
                    }
                    // The run is past its waits.
                    Err(_) => watching_reports = false,
                },
                () = tokio::time::sleep_until(due.into()), if may_look => {}
            }
        }
    }
}

/// What one of [`EarlyRebuilds`]' steps did.
enum Step {
    /// A group of files was rebuilt (or failed to be).
    Rebuilt(Vec<RebuildOutcome>),
    /// These files' recipes were looked up: each job holds its recipe's read when the
    /// lookup settled it.
    LookedUp(Vec<RebuildJob>),
}

/// When a stage that runs in pieces, some at once, had at least one piece under way:
/// its first start, its last end, and the time in between that it was busy.
#[derive(Debug, Clone, Default)]
struct BusyClock(Arc<std::sync::Mutex<BusyState>>);

#[derive(Debug, Default)]
struct BusyState {
    running: usize,
    since: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
    busy: Duration,
}

impl BusyClock {
    /// Counts a piece as under way until the guard drops.
    fn enter(&self) -> BusyGuard<'_> {
        let mut state = self.0.lock().expect("busy clock lock");
        let now = Instant::now();
        if state.running == 0 {
            state.since = Some(now);
        }
        state.first.get_or_insert(now);
        state.running += 1;
        BusyGuard(self)
    }

    /// The first start and the last end, once a piece ran.
    fn span(&self) -> Option<(Instant, Instant)> {
        let state = self.0.lock().expect("busy clock lock");
        state.first.zip(state.last)
    }

    /// The time at least one piece was under way.
    fn busy(&self) -> Duration {
        self.0.lock().expect("busy clock lock").busy
    }
}

struct BusyGuard<'a>(&'a BusyClock);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.0.lock().expect("busy clock lock");
        let now = Instant::now();
        state.running -= 1;
        state.last = Some(now);
        if state.running == 0
            && let Some(since) = state.since.take()
        {
            state.busy += now - since;
        }
    }
}

/// Waits until the workers that answer hold fewer than `below` chunks they accepted and
/// have not reported yet (or until `deadline`), reporting the chunks done and the
/// recipes ready to `progress`.
async fn wait_for_workers(
    workers: &[WorkerClient],
    http: &reqwest::Client,
    below: u64,
    deadline: Instant,
    progress: &impl Fn(WorkerProgress),
) {
    loop {
        let mut seen = WorkerProgress {
            done: 0,
            recipes_ready: Some(0),
        };
        let mut accepted = 0;
        for worker in workers {
            if let Ok(status) = worker.status(http).await {
                seen.done += status.completed + status.failed;
                seen.recipes_ready = seen
                    .recipes_ready
                    .zip(status.recipes_ready)
                    .map(|(a, b)| a + b);
                accepted += status.accepted;
            }
        }
        progress(seen);
        if accepted.saturating_sub(seen.done) < below || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the workers' status said, summed over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WorkerProgress {
    /// Chunks reported completed or failed.
    done: u64,
    /// Files whose recipe they wrote or found; `None` when a worker does not count them.
    recipes_ready: Option<u64>,
}

/// Stages the raw bytes of the tree's pending chunks into `store` and adds the `stage`
/// row. A chunk that could not be staged is a warning: it keeps its `data.bin`, from
/// which its worker reads it.
async fn stage_raw_bytes(
    base: &Path,
    store: &Arc<dyn ObjectStore>,
    options: &crate::stage::StageOptions,
    on_event: &EventSink,
    stages: &mut Vec<StageReport>,
    run_started: Instant,
) -> Result<crate::stage::StageReport, Error> {
    let started = Instant::now();
    let staged = crate::stage::stage(base, store.clone(), options).await?;
    for error in &staged.errors {
        on_event(PipelineEvent::Warning(format!("not staged: {error}")));
    }
    let mut note = format!(
        "{} into staging/: {} uploaded, {} there already; {} removed from the tree",
        plural(staged.chunks as u64, "chunk"),
        staged.uploaded,
        staged.already_staged,
        plural(staged.data_files_removed as u64, "data.bin file"),
    );
    if !staged.errors.is_empty() {
        note += &format!("; {} kept their data.bin", staged.errors.len());
    }
    // The bytes that left the tree for the bucket: uploaded now, or found there.
    stages.push(
        StageReport::new("stage", started.elapsed(), staged.bytes_removed, note)
            .starting_at(started - run_started),
    );
    Ok(staged)
}

/// Frees the raw bytes of the tree's completed chunks (tree and bucket) and adds the
/// `prune` row. What prune kept is a warning.
async fn prune_raw_bytes(
    base: &Path,
    store: &Arc<dyn ObjectStore>,
    options: &crate::prune::PruneOptions,
    on_event: &EventSink,
    stages: &mut Vec<StageReport>,
    run_started: Instant,
) -> Result<crate::prune::PruneReport, Error> {
    let started = Instant::now();
    let pruned = crate::prune::prune(base, store.clone(), options).await?;
    for kept in &pruned.kept {
        on_event(PipelineEvent::Warning(format!("prune kept {kept}")));
    }
    let verb = if pruned.dry_run {
        "would free"
    } else {
        "freed"
    };
    stages.push(
        StageReport::new(
            "prune",
            started.elapsed(),
            pruned.data_bytes_freed + pruned.staged_bytes_freed,
            format!(
                "{verb} {} and {}{}",
                plural(pruned.data_files_removed as u64, "data.bin file"),
                plural(pruned.staged_objects_deleted as u64, "staged object"),
                match pruned.staged_objects_still_needed {
                    0 => String::new(),
                    n => format!(
                        "; {} still needed by open chunks",
                        plural(n as u64, "staged object")
                    ),
                },
            ),
        )
        .starting_at(started - run_started),
    );
    Ok(pruned)
}

/// Rebuilds each file of `jobs` from the bucket alone, in memory (every chunk's size and
/// the whole file's SHA-256 checked, exactly as `panini reconstruct` checks them before
/// it writes a file), and, for a file chunked in this run, checks that its source (with
/// its stamp from before chunking) still holds the bytes rebuilt. One result per job,
/// in order: the file's size and the bytes its distinct chunk objects take.
///
/// Several files are rebuilt as one batch ([`uploader::verify_recipes`]: their recipes
/// in one request, their chunks in another, decoded in one job); a file alone is
/// streamed ([`uploader::verify_recipe`]), as a big file must be.
///
/// The rebuilt bytes have the SHA-256 the chunker computed from the bytes it read, so a
/// source that a stat finds unchanged since before it was chunked holds them: hashing
/// it again would be a sixth SHA-256 pass over the input for nothing (issue #17). A
/// source that changed, or whose last change was too recent for its times to tell
/// ([`SourceStamp::racy`]), is hashed beside the rebuild instead.
///
/// Nothing is written: a rebuilt copy on disk would be deleted at once, after costing a
/// temporary file, an `fsync` and a rename per file (issue #17).
async fn rebuild_and_compare(
    store: &dyn ObjectStore,
    jobs: &mut [RebuildJob],
) -> Vec<Result<(u64, u64), String>> {
    // The stats and hashes touch the file system: off the async threads, in one task
    // beside the rebuilds. Per job, `None` when there is no source or it is unchanged.
    let sources: Vec<_> = jobs.iter().map(|job| job.source.clone()).collect();
    let source_hashes = tokio::task::spawn_blocking(move || {
        sources
            .into_iter()
            .map(|source| {
                let (source, before) = source?;
                let unchanged = before.is_some_and(|before| {
                    !before.racy && SourceStamp::of(&source).is_some_and(|now| now.same_as(&before))
                });
                if unchanged {
                    return None;
                }
                Some(sha256_of_file(&source).map(|hash| (source, hash)))
            })
            .collect::<Vec<_>>()
    });
    // Recipes the early rebuilds' lookup did not read already.
    let wanted: Vec<(&str, Sha256Digest)> = jobs
        .iter()
        .filter(|job| job.recipe.is_none())
        .map(|job| (job.name.as_str(), job.file_sha256))
        .collect();
    let mut read = uploader::find_recipes(store, &wanted).await.into_iter();
    let recipes: Vec<_> = jobs
        .iter_mut()
        .map(|job| {
            job.recipe
                .take()
                .unwrap_or_else(|| read.next().expect("one recipe read per job without one"))
        })
        .collect();
    let mut found = Vec::new();
    let mut results: Vec<Result<(u64, u64), String>> = Vec::with_capacity(jobs.len());
    for (index, recipe) in recipes.into_iter().enumerate() {
        results.push(match recipe {
            Ok(recipe) => {
                found.push((index, recipe));
                // Until the rebuild below says.
                Ok((0, 0))
            }
            Err(e) => Err(e.to_string()),
        });
    }
    let (indices, recipes): (Vec<usize>, Vec<_>) = found.into_iter().unzip();
    let reports = if let [(key, recipe)] = recipes.as_slice() {
        let options = ReconstructOptions::default();
        vec![uploader::verify_recipe(store, key.clone(), recipe, &options, &|_| {}).await]
    } else {
        uploader::verify_recipes(store, recipes).await
    };
    for (index, report) in indices.into_iter().zip(reports) {
        results[index] = report
            .map(|report| (report.file_size, report.stored_bytes))
            .map_err(|e| e.to_string());
    }
    let source_hashes = match source_hashes.await {
        Ok(hashes) => hashes,
        Err(e) => {
            let e = e.to_string();
            return jobs.iter().map(|_| Err(e.clone())).collect();
        }
    };
    for ((job, result), hashed) in jobs.iter().zip(&mut results).zip(source_hashes) {
        let (Ok(_), Some(hashed)) = (&result, hashed) else {
            continue;
        };
        *result = match hashed {
            Ok((_, hash)) if hash == job.file_sha256 => continue,
            Ok((source, hash)) => Err(format!(
                "{} rebuilt from the bucket with SHA-256 {}, source {} has {hash}",
                job.name,
                job.file_sha256,
                source.display()
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    results
}

/// What the pipeline's rebuilds may hold at once. A rebuild holds at most
/// `ReconstructOptions::max_in_flight` chunks, or its whole file if that is smaller:
/// with a budget in bytes, big files are rebuilt one per core (each hashes its file in
/// order, on one core) while a folder of small files is rebuilt dozens at a time, as a
/// small file's rebuild is mostly waiting on its lookups (issue #17: one file per core
/// left the cores idle on 3,000 small files).
struct RebuildBudget {
    permits: tokio::sync::Semaphore,
    /// What one file may hold at most, in KiB.
    per_file_kib: u32,
}

impl RebuildBudget {
    /// Files rebuilt at once, however small.
    const MAX_FILES: usize = 64;

    /// A budget for `big_files` big files at once (at least one), chunks being at most
    /// `max_chunk_size` bytes.
    fn new(max_chunk_size: u64, big_files: u32) -> Self {
        let in_flight = ReconstructOptions::default().max_in_flight as u64;
        let per_file_kib = u32::try_from(max_chunk_size.saturating_mul(in_flight).div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        let total = u64::from(per_file_kib) * u64::from(big_files.max(1));
        Self {
            permits: tokio::sync::Semaphore::new(
                usize::try_from(total)
                    .unwrap_or(usize::MAX)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
            per_file_kib,
        }
    }

    /// What one file may hold at most, in bytes.
    fn per_file_bytes(&self) -> u64 {
        u64::from(self.per_file_kib) * 1024
    }

    /// Waits until a file of `size` bytes fits, and holds its share until dropped.
    async fn hold(&self, size: u64) -> tokio::sync::SemaphorePermit<'_> {
        let kib = u32::try_from(size.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.per_file_kib);
        self.permits
            .acquire_many(kib)
            .await
            .expect("the budget's semaphore is never closed")
    }
}

/// A source file as a stat saw it. When a later stat sees the same size, modification
/// and status-change times and inode, nothing wrote to the file in between (the rule
/// git and restic rely on to skip unchanged files).
#[derive(Debug, Clone, Copy)]
struct SourceStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// The status-change time (`ctime`), which no user call can set back.
    #[cfg(unix)]
    changed: (i64, i64),
    /// (device, inode): a file renamed over the source is another file.
    #[cfg(unix)]
    inode: (u64, u64),
    /// The file changed within [`SourceStamp::RACY_WINDOW`] before the stat: a write
    /// just after it could land in the same timestamp tick and leave the same times,
    /// so only the file's hash can tell whether it changed.
    racy: bool,
}

impl SourceStamp {
    /// Longer than any filesystem's timestamp granularity that Panini runs on (FAT's
    /// is 2 s; ext4, xfs, btrfs and tmpfs keep nanoseconds but advance them per tick).
    const RACY_WINDOW: Duration = Duration::from_secs(3);

    /// The stamp of `path` now; `None` when it cannot be read.
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let taken = std::time::SystemTime::now();
        let modified = meta.modified().ok();
        #[cfg(unix)]
        let (changed, inode, last_change) = {
            use std::os::unix::fs::MetadataExt as _;
            let changed = (meta.ctime(), meta.ctime_nsec());
            let ctime = u64::try_from(meta.ctime())
                .ok()
                .map(|secs| std::time::UNIX_EPOCH + Duration::new(secs, meta.ctime_nsec() as u32));
            (changed, (meta.dev(), meta.ino()), modified.max(ctime))
        };
        #[cfg(not(unix))]
        let last_change = modified;
        let racy = last_change.is_none_or(|at| at + Self::RACY_WINDOW > taken);
        Some(Self {
            len: meta.len(),
            modified,
            #[cfg(unix)]
            changed,
            #[cfg(unix)]
            inode,
            racy,
        })
    }

    /// Whether `earlier` and this stamp describe the file unchanged.
    fn same_as(&self, earlier: &Self) -> bool {
        let same = self.len == earlier.len && self.modified == earlier.modified;
        #[cfg(unix)]
        let same = same && self.changed == earlier.changed && self.inode == earlier.inode;
        same && self.modified.is_some()
    }
}

/// The SHA-256 of the file at `path`, read in 1 MiB pieces.
pub fn sha256_of_file(path: &Path) -> Result<Sha256Digest, Error> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut hasher = Sha256Digest::hasher();
    std::io::copy(
        &mut std::io::BufReader::with_capacity(1 << 20, file),
        &mut hasher,
    )
    .map_err(Error::io(path))?;
    Ok(Sha256Digest::from_hasher(hasher))
}

/// The first worker that answers: its engine and device head the report.
async fn first_status(
    workers: &[WorkerClient],
    http: &reqwest::Client,
) -> Result<chunk_model::wire::WorkerStatus, Error> {
    let mut last_error = None;
    for worker in workers {
        match worker.status(http).await {
            Ok(status) => return Ok(status),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::InvalidConfig("no workers".into())))
}

/// `1 chunk`, `2 chunks`: the one plural rule of reports and of the command line.
pub(crate) fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// What the workers that answer did. A restarted worker's counters start again at zero.
#[derive(Debug, Default)]
struct WorkerTotals {
    workers: usize,
    /// Recipes written or found; `None` when a worker does not count them.
    recipes_ready: Option<u64>,
    completed: u64,
    deduplicated: u64,
    failed: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl WorkerTotals {
    async fn collect(workers: &[WorkerClient], http: &reqwest::Client) -> Self {
        let mut totals = Self {
            recipes_ready: Some(0),
            ..Self::default()
        };
        for worker in workers {
            let Ok(status) = worker.status(http).await else {
                continue;
            };
            totals.workers += 1;
            totals.recipes_ready = totals
                .recipes_ready
                .zip(status.recipes_ready)
                .map(|(a, b)| a + b);
            totals.completed += status.completed;
            totals.deduplicated += status.deduplicated;
            totals.failed += status.failed;
            totals.bytes_in += status.bytes_in;
            totals.bytes_out += status.bytes_out;
        }
        totals
    }

    /// What happened after `before`. Saturating: a worker restarted in between starts
    /// again at zero, and must not make a count negative.
    fn since(self, before: &Self) -> Self {
        Self {
            workers: self.workers,
            recipes_ready: self
                .recipes_ready
                .zip(before.recipes_ready)
                .map(|(now, then)| now.saturating_sub(then)),
            completed: self.completed.saturating_sub(before.completed),
            deduplicated: self.deduplicated.saturating_sub(before.deduplicated),
            failed: self.failed.saturating_sub(before.failed),
            bytes_in: self.bytes_in.saturating_sub(before.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(before.bytes_out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rebuild_budget_takes_two_big_files_or_many_small_ones() {
        // 1 MiB chunks: a rebuild holds at most 8 MiB; two big files at once.
        let budget = RebuildBudget::new(1 << 20, 2);
        let big = 100 << 20;
        let first = budget.hold(big).await;
        let _second = budget.hold(big).await;
        let third = budget.hold(big);
        tokio::pin!(third);
        assert!(
            futures::poll!(third.as_mut()).is_pending(),
            "a third big file waits"
        );
        drop(first);
        let _third = third.await;

        let budget = RebuildBudget::new(1 << 20, 2);
        let mut small = Vec::new();
        for _ in 0..RebuildBudget::MAX_FILES {
            small.push(budget.hold(20 << 10).await);
        }
        assert_eq!(small.len(), RebuildBudget::MAX_FILES, "small files all fit");
    }

    #[test]
    fn small_files_are_rebuilt_in_groups_and_a_big_one_alone() {
        // 1 MiB chunks: one file's share is 8 MiB.
        let budget = RebuildBudget::new(1 << 20, 2);
        let job = |index: usize, size: u64| RebuildJob {
            index,
            name: format!("f{index}"),
            file_sha256: Sha256Digest::of(&index.to_le_bytes()),
            source: None,
            size,
            recipe: None,
        };
        // 40 small files, a big one, then files of 3 MiB.
        let jobs = (0..40)
            .map(|i| job(i, 10 << 10))
            .chain([job(40, 100 << 20)])
            .chain((41..45).map(|i| job(i, 3 << 20)));
        let groups: Vec<Vec<usize>> = RebuildGroup::split(jobs, &budget)
            .into_iter()
            .map(|group| group.0.into_iter().map(|job| job.index).collect())
            .collect();
        assert_eq!(
            groups,
            [
                (0..16).collect::<Vec<_>>(),
                (16..32).collect(),
                // The big file ends the group before it and goes alone.
                (32..40).collect(),
                vec![40],
                // Two 3 MiB files fit one share of 8 MiB, a third does not.
                vec![41, 42],
                vec![43, 44],
            ]
        );
    }

    #[test]
    fn debug_output_never_shows_the_secrets() {
        let mut config = PipelineConfig::new("work");
        config.token = Some("token-that-must-not-leak".into());
        config.signing_key = Some(b"key-that-must-not-leak".to_vec());
        let text = format!("{config:?}");
        assert!(!text.contains("must-not-leak"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        let signing_key_bytes = format!("{:?}", b"key-that-must-not-leak".to_vec());
        assert!(!text.contains(&signing_key_bytes), "{text}");
    }
}
