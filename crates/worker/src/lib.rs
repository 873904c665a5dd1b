//! The compression worker: an HTTP service that accepts chunks by webhook, compresses
//! them in batches with `gpu-compress`, stores them by content in a bucket, and reports
//! each one done.
//!
//! This crate's one job is turning an authenticated `compress_chunk`/`compress_batch`
//! request into stored objects plus a completion report (a record `status/<sha256>.json`
//! in the bucket, and a GitHub `repository_dispatch` when configured). Requests are
//! checked before anything is queued (token, signature, replay, body size, that every
//! `chunk_path` stays inside the source root, or names a commit when chunks are read from
//! a repository); accepted chunks go into a bounded queue, and a full queue is answered
//! `503` with `Retry-After` rather than buffered without end.
//!
//! Chunks are read from a [`ChunkSource`]: a checkout under a root, or a git repository at
//! the commit each request names, fetched on demand (a webhook that arrives before its
//! push is visible waits for it rather than failing). Once every chunk object a file
//! needs is stored, the worker publishes the file's recipe
//! ([`uploader::publish_if_complete`]), so the bucket alone rebuilds the file.
//!
//! It must never write the chunk tree (`metadata.json` belongs to the repository side:
//! the detector's callback and `sync` apply the reports), never know how work was
//! selected or dispatched, and never know which codec or store it talks to beyond the
//! `gpu-compress` and `uploader` interfaces.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn uploader::ObjectStore>) -> Result<(), worker::WorkerError> {
//! let config = worker::WorkerConfig::new("/repo", store);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let summary = worker::Worker::new(config)?.serve(listener, worker::shutdown_signal()).await?;
//! println!("{} chunks completed", summary.completed);
//! # Ok(()) }
//! ```

mod api;
pub mod auth;
mod github;
pub mod metrics;
mod process;
pub mod source;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gpu_compress::{CodecChoice, Compressor, CompressorConfig, EngineChoice};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use uploader::ObjectStore;

pub use github::{DEFAULT_GITHUB_API, GithubConfig};
pub use metrics::Metrics;
pub use source::{ChunkSource, RepoSource, SourceError};

/// How many failures `GET /failures` remembers.
pub const RECENT_FAILURES: usize = 1024;

/// Default bound of the queue of accepted, not yet started chunks.
pub const DEFAULT_MAX_QUEUE: usize = 1024;
/// Default largest request body (a batch of a few thousand chunk descriptions).
pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;
/// Default most chunks compressed in one `gpu-compress` batch.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// Default most original bytes in one batch, so memory stays bounded with large chunks.
pub const DEFAULT_MAX_BATCH_BYTES: u64 = 256 << 20;

/// How a worker runs. Build with [`WorkerConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where the chunks that requests name are read: a checkout (nothing outside its
    /// root is ever read) or a git repository at the dispatched commit.
    pub source: ChunkSource,
    /// Where compressed chunks and completion records go.
    pub store: Arc<dyn ObjectStore>,
    /// Required `Authorization: Bearer` token; `None` accepts unauthenticated requests.
    pub token: Option<String>,
    /// HMAC key for Standard Webhooks signatures (see [`auth::signing_key`]); when set,
    /// unsigned requests are refused.
    pub signing_key: Option<Vec<u8>>,
    /// Where LZ4 runs.
    pub engine: EngineChoice,
    /// Accepted chunks waiting to be started, at most.
    pub max_queue: usize,
    /// Largest request body in bytes; larger ones get `413`.
    pub body_limit: usize,
    /// Most chunks per compression batch.
    pub max_batch: usize,
    /// Most original bytes per compression batch.
    pub max_batch_bytes: u64,
    /// Object store operations in flight at once while reporting a batch.
    pub upload_concurrency: usize,
    /// What `503` answers put in `Retry-After`.
    pub retry_after: Duration,
    /// This worker's name in reports.
    pub worker_id: String,
    /// Where to send `repository_dispatch` callbacks, if anywhere.
    pub github: Option<GithubConfig>,
    /// How long an accepted delivery id is remembered as a replay.
    pub replay_ttl: Duration,
    /// How many delivery ids are remembered at most.
    pub replay_capacity: usize,
}

impl WorkerConfig {
    /// Defaults for a worker reading the checkout `source_root` and writing to `store`.
    pub fn new(source_root: impl Into<PathBuf>, store: Arc<dyn ObjectStore>) -> Self {
        Self::with_source(ChunkSource::Tree(source_root.into()), store)
    }

    /// Defaults for a worker reading chunks from the git repository `repo`, at the commit
    /// each request names, and writing to `store`.
    pub fn with_repo(repo: RepoSource, store: Arc<dyn ObjectStore>) -> Self {
        Self::with_source(ChunkSource::Repo(repo), store)
    }

    /// Defaults for a worker reading from `source` and writing to `store`.
    pub fn with_source(source: ChunkSource, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            source,
            store,
            token: None,
            signing_key: None,
            engine: EngineChoice::Auto,
            max_queue: DEFAULT_MAX_QUEUE,
            body_limit: DEFAULT_BODY_LIMIT,
            max_batch: DEFAULT_MAX_BATCH,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            upload_concurrency: 16,
            retry_after: Duration::from_secs(1),
            worker_id: default_worker_id(),
            github: None,
            replay_ttl: auth::SIGNATURE_TOLERANCE * 2,
            replay_capacity: 100_000,
        }
    }
}

fn default_worker_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .map_or_else(
            || "panini-worker".to_owned(),
            |h| format!("panini-worker@{h}"),
        )
}

/// Why a worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The source root is missing or unreadable.
    #[error("source root {path}: {source}")]
    SourceRoot {
        /// The configured path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The repository cache could not be created.
    #[error("repository cache: {0}")]
    Source(#[from] SourceError),
    /// The compressor could not be built (no OpenCL device for `--engine opencl`, …).
    #[error("compressor: {0}")]
    Compressor(#[from] gpu_compress::CompressError),
    /// A configuration value is unusable.
    #[error("invalid worker configuration: {0}")]
    InvalidConfig(String),
    /// The HTTP client for GitHub callbacks could not be built.
    #[error("GitHub client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Serve(#[source] std::io::Error),
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Chunks accepted by `POST /webhook`.
    pub accepted: u64,
    /// Chunks reported completed (compressed now or already stored).
    pub completed: u64,
    /// Chunks reported failed.
    pub failed: u64,
}

/// The latest failures and how many there were in all, so a reader polling
/// `GET /failures` can tell which ones it has not seen.
#[derive(Debug, Default)]
pub(crate) struct RecentFailures {
    pub(crate) total: u64,
    pub(crate) latest: std::collections::VecDeque<chunk_model::ChunkCompressed>,
}

/// State shared by the HTTP handlers and the work loop.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: WorkerConfig,
    /// Where chunks are read (a tree's root is canonical, computed once).
    pub(crate) source: source::Source,
    pub(crate) compressor: Arc<Compressor>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) draining: AtomicBool,
    /// The latest failures, newest last, for `GET /failures`: a caller without a GitHub
    /// callback (the local pipeline) learns which chunks failed and why.
    pub(crate) recent_failures: std::sync::Mutex<RecentFailures>,
    pub(crate) http: reqwest::Client,
}

/// A worker ready to serve. See the crate documentation.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// Checks the configuration and builds the compressor (OpenCL discovery happens here).
    pub fn new(config: WorkerConfig) -> Result<Self, WorkerError> {
        if config.max_queue == 0 || config.max_batch == 0 || config.upload_concurrency == 0 {
            return Err(WorkerError::InvalidConfig(
                "max_queue, max_batch and upload_concurrency must be at least 1".into(),
            ));
        }
        let metrics = Arc::new(Metrics::default());
        let source = match &config.source {
            ChunkSource::Tree(root) => {
                source::Source::Tree(std::fs::canonicalize(root).map_err(|source| {
                    WorkerError::SourceRoot {
                        path: root.clone(),
                        source,
                    }
                })?)
            }
            ChunkSource::Repo(repo) => source::Source::Repo(Arc::new(source::GitCache::open(
                repo.clone(),
                metrics.clone(),
            )?)),
        };
        let compressor = Compressor::new(CompressorConfig {
            codec: CodecChoice::Auto,
            level: None,
            engine: config.engine,
            // Every frame is decoded and compared before it is stored: a stored object is
            // the only copy that will survive once the chunk tree is cleaned up.
            verify: true,
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("panini-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WorkerError::HttpClient)?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                source,
                compressor: Arc::new(compressor),
                metrics,
                draining: AtomicBool::new(false),
                recent_failures: std::sync::Mutex::default(),
                http,
            }),
        })
    }

    /// The metrics, live while serving.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Serves `POST /webhook`, `GET /status`, `/healthz` and `/metrics` on `listener`
    /// and works through the queue, until `shutdown` resolves. Then it stops accepting
    /// connections, finishes every chunk it accepted, and returns.
    ///
    /// Dropping the returned future (aborting its task) stops the work loop at once: the
    /// chunks it held are not reported and come back to the dispatcher when their lease
    /// runs out.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Summary, WorkerError> {
        let (tx, rx) = mpsc::channel(self.shared.config.max_queue);
        let router = api::router(api::App {
            shared: self.shared.clone(),
            tx,
            replays: Arc::new(std::sync::Mutex::new(auth::ReplayCache::new(
                self.shared.config.replay_ttl,
                self.shared.config.replay_capacity,
            ))),
        });
        let shared = self.shared.clone();
        let server = async move {
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    shutdown.await;
                    shared.draining.store(true, Ordering::SeqCst);
                    tracing::info!("shutting down: no new work accepted, finishing the queue");
                })
                .await;
            // The router (and with it the queue's sender) is dropped here, so the work
            // loop ends once the queue is empty.
            result
        };
        let work = process::run(self.shared.clone(), rx);
        let (served, ()) = tokio::join!(server, work);
        served.map_err(WorkerError::Serve)?;
        let m = &self.shared.metrics;
        Ok(Summary {
            accepted: m.accepted(),
            completed: m.completed(),
            failed: m.failed(),
        })
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT): the shutdown signal for [`Worker::serve`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
