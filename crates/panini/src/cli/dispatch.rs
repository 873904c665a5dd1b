//! `panini dispatch`, `gen-token` and `sync`: the repository side of talking to
//! workers.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use dispatcher::{DispatchConfig, Dispatcher, Endpoint, Mode};

use super::common::{self, outln};

/// `panini dispatch`.
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
    /// Print the outcome as one JSON document on stdout (schema:
    /// docs/schemas/dispatch_output.schema.json; with --dry-run, the list of requests
    /// as `{url, headers, body}`); progress lines go to stderr.
    #[arg(long)]
    json: bool,
    /// File whose first line is the bearer token the workers expect. Default: the
    /// environment variable COLAB_AUTH_TOKEN. Secrets are never command-line values,
    /// which every user sees in `ps`.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// File whose first line is the key that signs each request (Standard Webhooks;
    /// `whsec_…` or any text of at least 16 bytes). Default: the environment variable
    /// PANINI_WEBHOOK_SECRET.
    #[arg(long, value_name = "PATH")]
    webhook_secret_file: Option<PathBuf>,
    /// The chunk tree whose metadata.json files record the outcome.
    #[arg(long, default_value = detector::DEFAULT_BASE)]
    base: PathBuf,
    /// Record nothing in the chunk tree.
    #[arg(long)]
    no_metadata: bool,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The commit whose chunks are dispatched, for workers that fetch it (`worker
    /// --repo`). Default: GITHUB_SHA in GitHub Actions, else HEAD of the repository the
    /// chunk tree is in.
    #[arg(long, value_name = "SHA")]
    commit: Option<String>,
}

/// The signing key from `PANINI_WEBHOOK_SECRET`, if set. A key shorter than
/// [`worker::MIN_SIGNING_KEY_LEN`] bytes (`whsec_` and nothing after it, …) is an error:
/// an HMAC with an empty key authenticates nothing.
pub fn signing_key_from_env() -> anyhow::Result<Option<Vec<u8>>> {
    signing_key(std::env::var("PANINI_WEBHOOK_SECRET").ok().as_deref())
}

/// The same from a secret read from `--webhook-secret-file` or that variable.
pub(super) fn signing_key(secret: Option<&str>) -> anyhow::Result<Option<Vec<u8>>> {
    match secret {
        Some(secret) if !secret.is_empty() => {
            let key = dispatcher::signing::signing_key(secret)
                .context("PANINI_WEBHOOK_SECRET starts with whsec_ but the rest is not base64")?;
            if key.len() < worker::MIN_SIGNING_KEY_LEN {
                anyhow::bail!(
                    "PANINI_WEBHOOK_SECRET gives a {}-byte key; at least {} are needed",
                    key.len(),
                    worker::MIN_SIGNING_KEY_LEN
                );
            }
            Ok(Some(key))
        }
        _ => Ok(None),
    }
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
    config.token = super::common::secret(args.token_file.as_deref(), "COLAB_AUTH_TOKEN")?;
    config.signing_key = signing_key(
        super::common::secret(args.webhook_secret_file.as_deref(), "PANINI_WEBHOOK_SECRET")?
            .as_deref(),
    )?;
    config.mode = if args.per_chunk {
        Mode::PerChunk
    } else {
        Mode::Batch(args.batch_size)
    };
    config.concurrency = args.concurrency;
    config.base = (!args.no_metadata && !args.dry_run).then(|| args.base.clone());
    let (actions, workflow) = crate::actions::from_actions(|name| std::env::var(name).ok());
    // The repository the tree lives in: the parent of the tree's root directory.
    let repo_dir = args
        .base
        .canonicalize()
        .ok()
        .and_then(|base| base.parent().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("."));
    config.repository = crate::actions::repository_ref(actions, args.commit.as_deref(), &repo_dir)?;
    config.workflow = workflow;
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
                outln!("POST {url}");
                for (name, value) in &headers {
                    outln!("{name}: {}", value.as_str().unwrap_or_default());
                }
                outln!("{}\n", serde_json::to_string_pretty(&body)?);
            }
        }
        if args.json {
            common::print_json(&requests)?;
        } else {
            outln!(
                "Dry run: {}, nothing sent",
                common::plural(count as u64, "request")
            );
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
            Ok(a) => eprintln!("✓ {what} → {} (tries: {})", a.worker, a.tries),
            Err(f) => eprintln!(
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
            eprintln!("  ! metadata not updated: {e}");
        }
    }));
    if json {
        common::print_json(&report_json(&report))?;
    } else {
        outln!(
            "Dispatched {}/{}",
            report.accepted_chunks,
            common::plural(report.total_chunks as u64, "chunk")
        );
    }
    if !report.all_accepted() {
        bail!(
            "{} of {} chunks were not accepted",
            report.total_chunks - report.accepted_chunks,
            report.total_chunks
        );
    }
    Ok(())
}

/// The `--json` document of a dispatch: plain fields, no Rust `Ok`/`Err` wrappers.
fn report_json(report: &dispatcher::DispatchReport) -> crate::output::DispatchOutput {
    let deliveries = report
        .outcomes
        .iter()
        .map(|outcome| {
            let (worker, error, permanent, tries) = match &outcome.result {
                Ok(a) => (Some(a.worker.clone()), None, None, a.tries),
                Err(f) => (None, Some(f.error.clone()), Some(f.permanent), f.tries),
            };
            crate::output::Delivery {
                delivery_id: outcome.delivery_id.clone(),
                chunk_paths: outcome.chunk_paths.clone(),
                accepted: outcome.result.is_ok(),
                worker,
                error,
                permanent,
                tries,
                metadata_errors: outcome.metadata_errors.clone(),
            }
        })
        .collect();
    crate::output::DispatchOutput {
        total_chunks: report.total_chunks as u64,
        accepted_chunks: report.accepted_chunks as u64,
        deliveries,
        skipped: report.skipped.len() as u64,
    }
}

/// `panini gen-token`.
pub fn gen_token() -> anyhow::Result<()> {
    outln!("{}", crate::token::new_token()?);
    Ok(())
}

/// `panini sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The chunk tree.
    #[arg(long, default_value = detector::DEFAULT_BASE)]
    base: PathBuf,
    /// The bucket workers store into: gs://bucket[/prefix], file:///absolute/path or a
    /// directory path (which must exist: sync only reads it).
    #[arg(long, env = "GOOGLE_ONE_BUCKET")]
    bucket: String,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

pub fn sync(args: SyncArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let store = uploader::open_existing(&args.bucket, &uploader::StoreConfig::default())
            .await
            .with_context(|| format!("opening the bucket {}", args.bucket))?;
        crate::sync::sync(&args.base, store.as_ref(), chrono::Utc::now())
            .await
            .with_context(|| format!("syncing {} from {}", args.base.display(), args.bucket))
    })?;
    if args.json {
        common::print_json(&report)?;
    } else {
        for path in &report.completed {
            outln!("✓ {path} completed");
        }
        for e in &report.errors {
            outln!("✗ {e}");
        }
        for recipe in &report.recipes {
            use crate::sync::RecipeState;
            match recipe.state {
                RecipeState::Published => {
                    outln!(
                        "✓ {}: recipe published ({})",
                        recipe.name,
                        recipe.key.as_deref().unwrap_or_default()
                    )
                }
                RecipeState::AlreadyPublished => {}
                RecipeState::Incomplete | RecipeState::Failed => outln!(
                    "· {}: no recipe yet: {}",
                    recipe.name,
                    recipe.reason.as_deref().unwrap_or_default()
                ),
            }
        }
        outln!(
            "Synced {} from {} ({} open before)",
            common::plural(report.completed.len() as u64, "chunk"),
            common::plural(report.records as u64, "completion record"),
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
