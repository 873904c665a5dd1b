//! `panini worker`: runs the compression worker service until SIGTERM/Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::common;

/// What `panini worker --help` adds after the options: examples, and the environment
/// variables that are not options' defaults: secrets (never options: arguments are
/// visible in `ps`) and those the libraries read.
pub(super) const LONG_HELP: &str = "\
Examples:
  panini worker --listen 0.0.0.0:8080 --repo https://github.com/you/repo --bucket gs://my-bucket/panini
  panini worker --source-root . --bucket ./bucket --insecure    # a local try-out on 127.0.0.1:5000
  panini worker --repo https://github.com/you/repo --bucket gs://my-bucket/panini \\
      --token-file /etc/panini/token --max-chunk-size 128MiB --shutdown-timeout 2m

Environment (secrets come only from here or from the matching --…-file option):
  COLAB_AUTH_TOKEN       the bearer token every request but /healthz carries (--token-file)
  PANINI_WEBHOOK_SECRET  the key webhooks are signed with (--webhook-secret-file)
  PANINI_READ_TOKEN      a token for /status, /failures and /metrics only (--read-token-file)
  GITHUB_PAT             for --github-repo callbacks and fetching a private --repo
  GOOGLE_APPLICATION_CREDENTIALS  a service-account key for a gs:// bucket
  PANINI_OPENCL_DEVICE   the OpenCL device (index or part of its name) for --engine
  RUST_LOG               the log filter (default: info), e.g. RUST_LOG=worker=debug

Logs go to stderr: one line per batch (chunks, bytes, engine, time, stored and
deduplicated counts) and one per refused request or failed chunk, with its reason.";

/// `panini worker`. Sizes and durations read as in every command (`64MiB`, `90s`, `5m`;
/// a plain number is bytes or seconds, as the older spellings took).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// The repository checkout the chunk paths are relative to (it must be current before
    /// webhooks arrive). Without --repo, the default is the current directory.
    #[arg(long, value_name = "DIR", conflicts_with = "repo")]
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
    /// before its chunks are reported failed (e.g. 90s, 10m).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = common::parse_duration, requires = "repo")]
    fetch_retry_for: Duration,
    /// Where compressed chunks go: gs://bucket[/prefix], file:///path or a directory.
    #[arg(long, env = "GOOGLE_ONE_BUCKET")]
    bucket: String,
    #[command(flatten)]
    gcs: super::store_cli::GcsArgs,
    /// File whose first line is the bearer token every request but /healthz must carry.
    /// Default: the environment variable COLAB_AUTH_TOKEN. Secrets are never
    /// command-line values, which every user sees in `ps`.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// File whose first line is the key webhooks are signed with (Standard Webhooks;
    /// `whsec_…` or any text of at least 16 bytes). Default: the environment variable
    /// PANINI_WEBHOOK_SECRET.
    #[arg(long, value_name = "PATH")]
    webhook_secret_file: Option<PathBuf>,
    /// File whose first line is a second token that GET /status, /failures and /metrics
    /// accept (a metrics scraper's); it cannot post work. Default: the environment
    /// variable PANINI_READ_TOKEN.
    #[arg(long, value_name = "PATH")]
    read_token_file: Option<PathBuf>,
    /// Serve without a token or webhook secret. Allowed only on a loopback address
    /// (a local try-out); without it a worker refuses to start unauthenticated.
    #[arg(long)]
    insecure: bool,
    /// Where LZ4 runs.
    #[arg(long, default_value = "auto", value_parser = common::choice::<gpu_compress::EngineChoice>(common::ENGINES))]
    engine: gpu_compress::EngineChoice,
    /// Accepted chunks waiting at most; beyond, requests get 503.
    #[arg(long, default_value_t = worker::DEFAULT_MAX_QUEUE)]
    max_queue: usize,
    /// Most chunks per compression batch.
    #[arg(long, default_value_t = worker::DEFAULT_MAX_BATCH)]
    max_batch: usize,
    /// Largest request body (e.g. 4MiB); larger ones get 413.
    #[arg(long, alias = "body-limit", value_name = "SIZE", default_value = "4MiB", value_parser = common::parse_size)]
    max_body_size: u64,
    /// Largest chunk size a request may name (e.g. 64MiB); larger ones get 400.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = common::parse_size)]
    max_chunk_size: u64,
    /// Time a client has to send a request's headers (or the next request on an idle
    /// connection) before the connection is closed (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = common::parse_duration)]
    header_read_timeout: Duration,
    /// Time a client has to send a request's body; past it, 408 (e.g. 30s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = common::parse_duration)]
    body_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = worker::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Time open connections get to finish after SIGTERM before they are closed (the
    /// accepted chunks are still finished and reported), e.g. 10s.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = common::parse_duration)]
    shutdown_timeout: Duration,
    /// Send chunk_compressed repository_dispatch events to OWNER/REPO (token: GITHUB_PAT).
    #[arg(long, value_name = "OWNER/REPO")]
    github_repo: Option<String>,
    /// GitHub API base URL.
    #[arg(long, env = "GITHUB_API_URL", default_value = worker::DEFAULT_GITHUB_API)]
    github_api: String,
    /// This worker's name in reports. Default: panini-worker@<host name>, the name the
    /// system gives (`uname -n`).
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
        let store_config = uploader::StoreConfig {
            gcs: args.gcs.config(uploader::RetryPolicy::default()),
            ..uploader::StoreConfig::default()
        };
        let store = uploader::open(&args.bucket, &store_config)
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
                repo.fetch_retry_for = args.fetch_retry_for;
                worker::WorkerConfig::with_repo(repo, store)
            }
            None => worker::WorkerConfig::new(
                args.source_root
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(".")),
                store,
            ),
        };
        config.token = common::secret(args.token_file.as_deref(), "COLAB_AUTH_TOKEN")?;
        config.read_token = common::secret(args.read_token_file.as_deref(), "PANINI_READ_TOKEN")?;
        config.signing_key = super::dispatch::signing_key(
            common::secret(args.webhook_secret_file.as_deref(), "PANINI_WEBHOOK_SECRET")?
                .as_deref(),
        )?;
        config.insecure = args.insecure;
        if args.insecure && !args.listen.ip().is_loopback() {
            bail!(
                "--insecure serves on a loopback address only, not on {}",
                args.listen
            );
        }
        config.max_chunk_size = args.max_chunk_size;
        config.header_read_timeout = args.header_read_timeout;
        config.body_read_timeout = args.body_read_timeout;
        config.max_connections = args.max_connections;
        config.shutdown_timeout = args.shutdown_timeout;
        config.engine = args.engine;
        config.max_queue = args.max_queue;
        config.max_batch = args.max_batch;
        config.body_limit = usize::try_from(args.max_body_size)
            .context("--max-body-size is larger than this machine can hold")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Args {
        use clap::Parser as _;
        let argv = ["worker", "--bucket", "b"].iter().chain(args);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn defaults_are_the_library_defaults() {
        let args = parse(&["--repo", "https://example.com/r.git"]);
        assert_eq!(
            args.fetch_retry_for,
            worker::source::DEFAULT_FETCH_RETRY_FOR
        );
        assert_eq!(args.max_body_size, worker::DEFAULT_BODY_LIMIT as u64);
        assert_eq!(args.max_chunk_size, worker::DEFAULT_MAX_CHUNK_SIZE);
        assert_eq!(
            args.header_read_timeout,
            worker::DEFAULT_HEADER_READ_TIMEOUT
        );
        assert_eq!(args.body_read_timeout, worker::DEFAULT_BODY_READ_TIMEOUT);
        assert_eq!(args.shutdown_timeout, worker::DEFAULT_SHUTDOWN_TIMEOUT);
    }

    #[test]
    fn sizes_and_durations_read_as_everywhere_and_old_spellings_still_work() {
        let args = parse(&[
            "--max-chunk-size",
            "128MiB",
            "--max-body-size",
            "8M",
            "--shutdown-timeout",
            "2m",
            "--header-read-timeout",
            "600",
        ]);
        assert_eq!(args.max_chunk_size, 128 << 20);
        assert_eq!(args.max_body_size, 8 << 20);
        assert_eq!(args.shutdown_timeout, Duration::from_secs(120));
        assert_eq!(args.header_read_timeout, Duration::from_secs(600));
        // The flag's older name, as deployments spell it.
        assert_eq!(parse(&["--body-limit", "1048576"]).max_body_size, 1 << 20);
    }
}
