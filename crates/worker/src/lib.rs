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
pub mod signals;
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
/// Default largest chunk a request may name (64 MiB: the chunker's chunks are far
/// smaller); a larger `size` is refused with `400` before anything is queued.
pub const DEFAULT_MAX_CHUNK_SIZE: u64 = 64 << 20;
/// Default time a client has to send a request's headers (and, on an idle keep-alive
/// connection, to start the next request) before the connection is closed.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's whole body; past it, `408`.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most connections served at once; further ones wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// Default time connections get to finish after the shutdown signal; then they are
/// closed, whatever they were doing, and only the queue's drain goes on.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest bearer token a worker accepts (a token from `panini gen-token` has 43).
pub const MIN_TOKEN_LEN: usize = 16;
/// Shortest webhook signing key, in bytes after `whsec_` decoding.
pub const MIN_SIGNING_KEY_LEN: usize = 16;

/// How a worker runs. Build with [`WorkerConfig::new`] and adjust the public fields.
///
/// Its `Debug` prints the token and signing key as `<redacted>`.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Where the chunks that requests name are read: a checkout (nothing outside its
    /// root is ever read) or a git repository at the dispatched commit.
    pub source: ChunkSource,
    /// Where compressed chunks and completion records go.
    pub store: Arc<dyn ObjectStore>,
    /// Required `Authorization: Bearer` token of every request but `GET /healthz`
    /// (at least [`MIN_TOKEN_LEN`] characters). [`Worker::new`] refuses a configuration
    /// without one unless [`WorkerConfig::insecure`] is set.
    pub token: Option<String>,
    /// A second token that `GET /status`, `/failures` and `/metrics` also accept (a
    /// scraper's), which cannot post work. Same length rule as `token`.
    pub read_token: Option<String>,
    /// HMAC key for Standard Webhooks signatures (see [`auth::signing_key`]; at least
    /// [`MIN_SIGNING_KEY_LEN`] bytes); unsigned requests are refused. Required like
    /// `token`.
    pub signing_key: Option<Vec<u8>>,
    /// Serve without a token and/or signing key. Only on a loopback address:
    /// [`Worker::serve`] refuses any other listener. Tests and a local try-out only.
    pub insecure: bool,
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
    /// Largest chunk `size` a request may name; larger ones get `400`.
    pub max_chunk_size: u64,
    /// Time to receive a request's headers (and the next request on an idle keep-alive
    /// connection) before the connection is closed.
    pub header_read_timeout: Duration,
    /// Time to receive a request's body; past it the answer is `408`.
    pub body_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one
    /// closes (an idle one closes after `header_read_timeout`).
    pub max_connections: usize,
    /// After the shutdown signal, time open connections get to finish before they are
    /// closed; then only the queue of accepted chunks is finished.
    pub shutdown_timeout: Duration,
    /// Object store operations in flight at once while reporting a batch.
    pub upload_concurrency: usize,
    /// What `503` answers put in `Retry-After`.
    pub retry_after: Duration,
    /// This worker's name in reports (default: [`default_worker_id`],
    /// `panini-worker@<host name>`).
    pub worker_id: String,
    /// Where to send `repository_dispatch` callbacks, if anywhere.
    pub github: Option<GithubConfig>,
    /// How long an accepted delivery id is remembered as a replay.
    pub replay_ttl: Duration,
    /// How many delivery ids are remembered at most.
    pub replay_capacity: usize,
}

impl WorkerConfig {
    /// The [`max_batch_bytes`](Self::max_batch_bytes) that keeps the chunk and frame
    /// bytes a worker holds near `memory`: it holds up to three batches at once (one
    /// compressing, one handed over, one storing), each with its chunks' bytes and about
    /// as many again of frames. A batch passes its limit by at most one chunk, so the
    /// bound is looser by a few chunks. Never below 1 MiB.
    pub fn batch_bytes_for_memory(memory: u64) -> u64 {
        (memory / 6).max(1 << 20)
    }

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
            read_token: None,
            signing_key: None,
            insecure: false,
            engine: EngineChoice::Auto,
            max_queue: DEFAULT_MAX_QUEUE,
            body_limit: DEFAULT_BODY_LIMIT,
            max_batch: DEFAULT_MAX_BATCH,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            upload_concurrency: 16,
            retry_after: Duration::from_secs(1),
            worker_id: default_worker_id(),
            github: None,
            replay_ttl: auth::SIGNATURE_TOLERANCE * 2,
            replay_capacity: 100_000,
        }
    }
}

impl std::fmt::Debug for WorkerConfig {
    // Secrets stay out of logs and panic messages: only whether they are set is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { Some("<redacted>") } else { None };
        f.debug_struct("WorkerConfig")
            .field("source", &self.source)
            .field("store", &self.store)
            .field("token", &redacted(self.token.is_some()))
            .field("read_token", &redacted(self.read_token.is_some()))
            .field("signing_key", &redacted(self.signing_key.is_some()))
            .field("insecure", &self.insecure)
            .field("engine", &self.engine)
            .field("max_queue", &self.max_queue)
            .field("body_limit", &self.body_limit)
            .field("max_batch", &self.max_batch)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_chunk_size", &self.max_chunk_size)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("retry_after", &self.retry_after)
            .field("worker_id", &self.worker_id)
            .field("github", &self.github)
            .field("replay_ttl", &self.replay_ttl)
            .field("replay_capacity", &self.replay_capacity)
            .finish()
    }
}

impl WorkerConfig {
    /// Checks the credentials: fails closed without a token and a signing key unless
    /// `insecure`, and refuses ones too short to resist guessing whether or not.
    fn check_auth(&self) -> Result<(), WorkerError> {
        for (name, token) in [("token", &self.token), ("read token", &self.read_token)] {
            if let Some(token) = token
                && token.chars().count() < MIN_TOKEN_LEN
            {
                return Err(WorkerError::WeakCredential(format!(
                    "the {name} has {} characters; at least {MIN_TOKEN_LEN} are needed \
                     (`panini gen-token` makes one)",
                    token.chars().count()
                )));
            }
        }
        if let Some(key) = &self.signing_key
            && key.len() < MIN_SIGNING_KEY_LEN
        {
            return Err(WorkerError::WeakCredential(format!(
                "the webhook signing key has {} bytes; at least {MIN_SIGNING_KEY_LEN} are \
                 needed (a `whsec_` secret with nothing or too little after the prefix?)",
                key.len()
            )));
        }
        if !self.insecure {
            let missing: Vec<&str> = [
                (self.token.is_none(), "a bearer token (COLAB_AUTH_TOKEN)"),
                (
                    self.signing_key.is_none(),
                    "a webhook signing secret (PANINI_WEBHOOK_SECRET)",
                ),
            ]
            .into_iter()
            .filter_map(|(absent, what)| absent.then_some(what))
            .collect();
            if !missing.is_empty() {
                return Err(WorkerError::MissingCredentials(missing.join(" and ")));
            }
        }
        Ok(())
    }

    /// Which request checks are on, in words, for the start-up log.
    pub fn auth_summary(&self) -> String {
        let on_off = |set: bool| if set { "on" } else { "OFF" };
        format!(
            "bearer token {}, webhook signatures {}, read token {}{}",
            on_off(self.token.is_some()),
            on_off(self.signing_key.is_some()),
            if self.read_token.is_some() {
                "set"
            } else {
                "not set"
            },
            if self.insecure {
                " (insecure: loopback only)"
            } else {
                ""
            }
        )
    }
}

/// `panini-worker@<host name>`, or `panini-worker` where the system names no host.
///
/// The name comes from the system (`uname`), not from `$HOSTNAME`: most shells set that
/// variable without exporting it, so a worker started from a shell or a unit file would
/// not see it.
pub fn default_worker_id() -> String {
    match host_name() {
        Some(host) => format!("panini-worker@{host}"),
        None => "panini-worker".to_owned(),
    }
}

/// The machine's host name, as `uname -n` prints it.
#[cfg(unix)]
fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().trim().to_owned();
    (!name.is_empty() && name != "(none)").then_some(name)
}

#[cfg(not(unix))]
fn host_name() -> Option<String> {
    None
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
    /// A token or signing key is missing and the configuration is not `insecure`.
    #[error(
        "refusing to start without {0}: set it, or pass --insecure to serve \
         unauthenticated on a loopback address"
    )]
    MissingCredentials(String),
    /// A token or signing key is too short (or empty).
    #[error("weak credential: {0}")]
    WeakCredential(String),
    /// An `insecure` worker was given a listener on a non-loopback address.
    #[error("an insecure worker serves on loopback only, not on {0}")]
    InsecureNotLoopback(std::net::SocketAddr),
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
    /// The files with chunks queued or in flight, so that recipes are checked once per
    /// file rather than once per batch.
    pub(crate) files_in_flight: Arc<process::FilesInFlight>,
}

/// A worker ready to serve. See the crate documentation.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// Checks the configuration and builds the compressor (OpenCL discovery happens here).
    pub fn new(config: WorkerConfig) -> Result<Self, WorkerError> {
        if config.max_queue == 0
            || config.max_batch == 0
            || config.upload_concurrency == 0
            || config.max_connections == 0
        {
            return Err(WorkerError::InvalidConfig(
                "max_queue, max_batch, upload_concurrency and max_connections must be at least 1"
                    .into(),
            ));
        }
        config.check_auth()?;
        let metrics = Arc::new(Metrics::default());
        let source = match &config.source {
            ChunkSource::Tree(root) => {
                let tree = chunk_model::chunk_path::TreeRoot::new(root).map_err(|e| {
                    WorkerError::SourceRoot {
                        path: root.clone(),
                        source: match e {
                            chunk_model::ModelError::Io { source, .. } => source,
                            other => std::io::Error::other(other.to_string()),
                        },
                    }
                })?;
                source::Source::Tree(tree)
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
        // Probing OpenCL may have loaded a driver that took over SIGTERM (see `signals`).
        signals::reassert();
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
                files_in_flight: Arc::default(),
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
        let addr = listener.local_addr().map_err(WorkerError::Serve)?;
        if self.shared.config.insecure && !addr.ip().is_loopback() {
            return Err(WorkerError::InsecureNotLoopback(addr));
        }
        tracing::info!("request checks: {}", self.shared.config.auth_summary());
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
        let server = serve_connections(listener, router, shared, shutdown);
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

/// Serves HTTP/1 connections with `router` until `shutdown` resolves, then lets open
/// connections finish for at most `shutdown_timeout` and closes the rest.
///
/// Written on hyper directly because `axum::serve` has no read timeouts, no connection
/// cap and waits for every connection without end: an idle client would hold a worker
/// open forever, and a few hundred half-open ones would exhaust its file descriptors.
/// - headers (and the next request of an idle keep-alive connection) must arrive within
///   `header_read_timeout`, or hyper closes the connection; bodies are bounded by
///   `body_read_timeout` in the handler;
/// - at most `max_connections` are served at once: the next one is not accepted until a
///   slot frees, so it waits in the kernel's listen backlog (and is served once an idle
///   connection times out) rather than costing a descriptor here.
async fn serve_connections(
    listener: TcpListener,
    router: axum::Router,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let config = &shared.config;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        // Finished connections are collected here, so the set holds live ones only.
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: neither
                    // is the server's end. Pause so a persistent error does not spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                _ = stop.changed() => {
                    // Finish the request in progress, if any, then close.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    shared.draining.store(true, Ordering::SeqCst);
    tracing::info!("shutting down: no new work accepted, finishing the queue");
    let _ = stop_tx.send(true);
    let deadline = shared.config.shutdown_timeout;
    let drained = tokio::time::timeout(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open {} s after the shutdown signal: closing them",
            deadline.as_secs_f64()
        );
        connections.shutdown().await;
    }
    // The router (and with it the queue's sender) is dropped here, so the work loop
    // ends once the queue is empty.
    drop(router);
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT): the shutdown signal for [`Worker::serve`].
///
/// The handlers are installed when this future is first polled; [`signals::install`]
/// installs them at once (and lets the worker put them back if a driver replaces them).
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
