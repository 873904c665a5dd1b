//! `cargo xtask dispatch`, `gen-token` and `sync`: the repository side of talking to
//! workers.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use chunk_model::wire::{RepositoryRef, WorkflowRef};
use dispatcher::{DispatchConfig, Dispatcher, Endpoint, Mode};
use rand::RngCore as _;

/// `cargo xtask dispatch`.
#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    /// The detector's list of chunks.
    #[arg(long, default_value = detector::DEFAULT_OUTPUT)]
    chunks_file: PathBuf,
    /// A worker's webhook URL; repeat for several workers. Default: COLAB_WEBHOOK_URL
    /// (comma-separated) and COLAB_WEBHOOK_URL_<NAME>.
    #[arg(long = "webhook", value_name = "URL")]
    webhooks: Vec<String>,
    /// Chunks per compress_batch request.
    #[arg(long, default_value_t = dispatcher::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// One compress_chunk request per chunk instead of batches.
    #[arg(long)]
    per_chunk: bool,
    /// Print the requests and send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// The chunk tree whose metadata.json files record the outcome.
    #[arg(long, default_value = detector::DEFAULT_BASE)]
    base: PathBuf,
    /// Record nothing in the chunk tree.
    #[arg(long)]
    no_metadata: bool,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

/// The signing key from `PANINI_WEBHOOK_SECRET`, if set.
pub fn signing_key_from_env() -> anyhow::Result<Option<Vec<u8>>> {
    match std::env::var("PANINI_WEBHOOK_SECRET") {
        Ok(secret) if !secret.is_empty() => Ok(Some(
            dispatcher::signing::signing_key(&secret)
                .context("PANINI_WEBHOOK_SECRET starts with whsec_ but the rest is not base64")?,
        )),
        _ => Ok(None),
    }
}

fn from_actions() -> (Option<RepositoryRef>, Option<WorkflowRef>) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if var("GITHUB_ACTIONS").as_deref() != Some("true") {
        return (None, None);
    }
    let repository = var("GITHUB_REPOSITORY").and_then(|slug| {
        let (owner, repo) = slug.split_once('/')?;
        Some(RepositoryRef {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            commit_sha: var("GITHUB_SHA").unwrap_or_default(),
            git_ref: var("GITHUB_REF").unwrap_or_default(),
        })
    });
    let workflow = match (var("GITHUB_RUN_ID"), var("GITHUB_RUN_NUMBER")) {
        (Some(id), Some(number)) => Some(WorkflowRef {
            run_id: id.parse().unwrap_or_default(),
            run_number: number.parse().unwrap_or_default(),
        }),
        _ => None,
    };
    (repository, workflow)
}

pub fn dispatch(args: DispatchArgs) -> anyhow::Result<()> {
    let chunks = dispatcher::read_chunks_file(&args.chunks_file)?;
    let mut endpoints: Vec<Endpoint> = args.webhooks.iter().map(Endpoint::from_url).collect();
    if endpoints.is_empty() {
        endpoints = dispatcher::endpoints_from_env(std::env::vars());
    }
    if endpoints.is_empty() && args.dry_run {
        // The original design's local test webhook.
        endpoints.push(Endpoint::from_url("http://localhost:5000/webhook"));
    }
    let mut config = DispatchConfig::new(endpoints);
    config.token = std::env::var("COLAB_AUTH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    config.signing_key = signing_key_from_env()?;
    config.mode = if args.per_chunk {
        Mode::PerChunk
    } else {
        Mode::Batch(args.batch_size)
    };
    config.concurrency = args.concurrency;
    config.base = (!args.no_metadata && !args.dry_run).then(|| args.base.clone());
    (config.repository, config.workflow) = from_actions();
    let dispatcher = Dispatcher::new(config)?;

    if args.dry_run {
        let url = &dispatcher.config().endpoints[0].url;
        let now = chrono::Utc::now().timestamp();
        let mut requests = Vec::new();
        let deliveries = dispatcher.plan(chunks);
        let count = deliveries.len();
        for delivery in deliveries {
            let mut headers = serde_json::Map::new();
            for (name, value) in &dispatcher.headers(&delivery, now) {
                let value = if name == "authorization" {
                    "Bearer ***"
                } else {
                    value.to_str().unwrap_or("?")
                };
                headers.insert(name.to_string(), value.into());
            }
            let body: serde_json::Value = serde_json::from_slice(&delivery.body)?;
            if args.json {
                requests.push(serde_json::json!({ "url": url, "headers": headers, "body": body }));
            } else {
                println!("POST {url}");
                for (name, value) in &headers {
                    println!("{name}: {}", value.as_str().unwrap_or_default());
                }
                println!("{}\n", serde_json::to_string_pretty(&body)?);
            }
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&requests)?);
        } else {
            println!("Dry run: {count} requests, nothing sent");
        }
        return Ok(());
    }

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let json = args.json;
    let report = runtime.block_on(dispatcher.run(chunks, |outcome| {
        if json {
            return;
        }
        let n = outcome.chunk_paths.len();
        let what = if n == 1 {
            outcome.chunk_paths[0].clone()
        } else {
            format!("batch of {n} chunks ({})", outcome.delivery_id)
        };
        match &outcome.result {
            Ok(a) => println!("✓ {what} → {} (tries: {})", a.worker, a.tries),
            Err(f) => println!(
                "✗ {what}: {}{}",
                f.error,
                if f.permanent {
                    ""
                } else {
                    " (gave up retrying)"
                }
            ),
        }
        for e in &outcome.metadata_errors {
            println!("  ! metadata not updated: {e}");
        }
    }));
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    println!(
        "Dispatched {}/{} chunks",
        report.accepted_chunks, report.total_chunks
    );
    if !report.all_accepted() {
        bail!(
            "{} of {} chunks were not accepted",
            report.total_chunks - report.accepted_chunks,
            report.total_chunks
        );
    }
    Ok(())
}

/// `cargo xtask gen-token`.
pub fn gen_token() -> anyhow::Result<()> {
    println!("{}", new_token()?);
    Ok(())
}

/// 32 random bytes from the operating system, URL-safe base64 (the seed's token format).
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .context("reading the operating system's random source")?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `cargo xtask sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The chunk tree.
    #[arg(long, default_value = detector::DEFAULT_BASE)]
    base: PathBuf,
    /// The bucket workers store into: gs://bucket[/prefix], file:///path or a directory.
    #[arg(long, env = "GOOGLE_ONE_BUCKET")]
    bucket: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn sync(args: SyncArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let store = uploader::open(&args.bucket, &uploader::StoreConfig::default())
            .await
            .with_context(|| format!("opening the bucket {}", args.bucket))?;
        dispatcher::sync::sync(&args.base, store.as_ref(), chrono::Utc::now())
            .await
            .with_context(|| format!("syncing {} from {}", args.base.display(), args.bucket))
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for path in &report.completed {
            println!("✓ {path} completed");
        }
        for e in &report.errors {
            println!("✗ {e}");
        }
        println!(
            "Synced {} chunks from {} completion records ({} open before)",
            report.completed.len(),
            report.records,
            report.open_chunks
        );
    }
    if !report.errors.is_empty() {
        bail!(
            "{} records or chunks could not be used",
            report.errors.len()
        );
    }
    Ok(())
}
