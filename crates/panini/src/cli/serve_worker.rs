//! `panini worker`: runs the compression worker service until SIGTERM/Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// The repository checkout the chunk paths are relative to (it must be current before
    /// webhooks arrive). Without --repo, the default is the current directory.
    #[arg(long, conflicts_with = "repo")]
    source_root: Option<PathBuf>,
    /// Read chunks from this git repository (https://…, file://… or a path) at the commit
    /// each webhook names, fetching it on demand: no checkout to keep current. A private
    /// HTTPS repository needs GITHUB_PAT.
    #[arg(long, value_name = "URL")]
    repo: Option<String>,
    /// The bare repository --repo fetches into (created when missing). Default: a
    /// directory per URL under $XDG_CACHE_HOME/panini (or ~/.cache/panini).
    #[arg(long, value_name = "DIR", requires = "repo")]
    repo_cache: Option<PathBuf>,
    /// How long to keep fetching a dispatched commit the remote does not have yet,
    /// before its chunks are reported failed.
    #[arg(long, value_name = "SECS", default_value_t = worker::source::DEFAULT_FETCH_RETRY_FOR.as_secs(), requires = "repo")]
    fetch_retry_for: u64,
    /// Where compressed chunks go: gs://bucket[/prefix], file:///path or a directory.
    #[arg(long, env = "GOOGLE_ONE_BUCKET")]
    bucket: String,
    /// Read the bearer token from this file (first line) instead of COLAB_AUTH_TOKEN.
    /// The token itself is never an argument: arguments are visible to every user in ps.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Serve without a token or webhook secret. Allowed only on a loopback address
    /// (a local try-out); without it a worker refuses to start unauthenticated.
    #[arg(long)]
    insecure: bool,
    /// Where LZ4 runs: auto, cpu or opencl.
    #[arg(long, default_value = "auto")]
    engine: gpu_compress::EngineChoice,
    /// Accepted chunks waiting at most; beyond, requests get 503.
    #[arg(long, default_value_t = worker::DEFAULT_MAX_QUEUE)]
    max_queue: usize,
    /// Most chunks per compression batch.
    #[arg(long, default_value_t = worker::DEFAULT_MAX_BATCH)]
    max_batch: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = worker::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Largest chunk size a request may name, in bytes; larger ones get 400.
    #[arg(long, default_value_t = worker::DEFAULT_MAX_CHUNK_SIZE)]
    max_chunk_size: u64,
    /// Seconds a client has to send a request's headers (or the next request on an idle
    /// connection) before the connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = worker::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    header_read_timeout: u64,
    /// Seconds a client has to send a request's body; past it, 408.
    #[arg(long, value_name = "SECS", default_value_t = worker::DEFAULT_BODY_READ_TIMEOUT.as_secs())]
    body_read_timeout: u64,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = worker::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds open connections get to finish after SIGTERM before they are closed (the
    /// accepted chunks are still finished and reported).
    #[arg(long, value_name = "SECS", default_value_t = worker::DEFAULT_SHUTDOWN_TIMEOUT.as_secs())]
    shutdown_timeout: u64,
    /// Send chunk_compressed repository_dispatch events to OWNER/REPO (token: GITHUB_PAT).
    #[arg(long, value_name = "OWNER/REPO")]
    github_repo: Option<String>,
    /// GitHub API base URL.
    #[arg(long, env = "GITHUB_API_URL", default_value = worker::DEFAULT_GITHUB_API)]
    github_api: String,
    /// This worker's name in reports (default: panini-worker@$HOSTNAME).
    #[arg(long)]
    worker_id: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    super::init_tracing("info");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        // Before the compressor probes OpenCL: the worker then knows its own handlers
        // and puts them back if a driver replaces them (see worker::signals).
        let shutdown =
            worker::signals::install().context("installing the SIGTERM/SIGINT handlers")?;
        let store = uploader::open(&args.bucket, &uploader::StoreConfig::default())
            .await
            .with_context(|| format!("opening the bucket {}", args.bucket))?;
        let mut config = match &args.repo {
            Some(url) => {
                let cache = match &args.repo_cache {
                    Some(dir) => dir.clone(),
                    None => default_repo_cache(url)?,
                };
                let mut repo = worker::RepoSource::new(url, cache);
                repo.token = std::env::var("GITHUB_PAT").ok().filter(|t| !t.is_empty());
                repo.fetch_retry_for = std::time::Duration::from_secs(args.fetch_retry_for);
                worker::WorkerConfig::with_repo(repo, store)
            }
            None => worker::WorkerConfig::new(
                args.source_root
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(".")),
                store,
            ),
        };
        config.token = super::common::secret(args.token_file.as_deref(), "COLAB_AUTH_TOKEN")?;
        config.read_token = std::env::var("PANINI_READ_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        config.signing_key = super::dispatch::signing_key_from_env()?;
        config.insecure = args.insecure;
        if args.insecure && !args.listen.ip().is_loopback() {
            bail!(
                "--insecure serves on a loopback address only, not on {}",
                args.listen
            );
        }
        config.max_chunk_size = args.max_chunk_size;
        config.header_read_timeout = std::time::Duration::from_secs(args.header_read_timeout);
        config.body_read_timeout = std::time::Duration::from_secs(args.body_read_timeout);
        config.max_connections = args.max_connections;
        config.shutdown_timeout = std::time::Duration::from_secs(args.shutdown_timeout);
        config.engine = args.engine;
        config.max_queue = args.max_queue;
        config.max_batch = args.max_batch;
        config.body_limit = args.body_limit;
        if let Some(id) = args.worker_id {
            config.worker_id = id;
        }
        if let Some(slug) = &args.github_repo {
            let token = std::env::var("GITHUB_PAT")
                .context("--github-repo needs GITHUB_PAT (a token with repo scope)")?;
            config.github = Some(
                worker::GithubConfig::from_slug(slug, token, &args.github_api)
                    .with_context(|| format!("--github-repo {slug:?} is not OWNER/REPO"))?,
            );
        }
        if config.insecure {
            tracing::warn!(
                "--insecure: requests without a token or signature may be accepted on {}",
                args.listen
            );
        }
        let worker = worker::Worker::new(config).context("starting the worker")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        tracing::info!("listening on http://{}/webhook", listener.local_addr()?);
        // The compressor is built: if its driver took over SIGTERM, take it back, and
        // check, so a worker that would die on SIGTERM says so at start.
        worker::signals::reassert();
        if !worker::signals::are_ours() {
            tracing::error!("SIGTERM is not handled by the worker: it will not drain on SIGTERM");
        }
        let summary = worker.serve(listener, shutdown.recv()).await?;
        tracing::info!(
            accepted = summary.accepted,
            completed = summary.completed,
            failed = summary.failed,
            "stopped"
        );
        if summary.accepted != summary.completed + summary.failed {
            bail!(
                "stopped with {} chunks unreported",
                summary.accepted - summary.completed - summary.failed
            );
        }
        Ok(())
    })
}

/// `$XDG_CACHE_HOME/panini/repo-<hash of the URL>` (or under `~/.cache`): one bare
/// repository per remote, kept between runs so a restarted worker fetches only what is new.
fn default_repo_cache(url: &str) -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("--repo-cache is needed: neither XDG_CACHE_HOME nor HOME is set")?;
    let digest = chunk_model::Sha256Digest::of(url.as_bytes()).to_string();
    Ok(base.join("panini").join(format!("repo-{}", &digest[..16])))
}
