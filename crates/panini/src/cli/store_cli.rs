//! `panini upload` and `panini reconstruct`: a file's chunks to a bucket (or a
//! directory) and back, bit for bit.

use std::path::PathBuf;
use std::time::Duration;

use super::common::{self, bytes_bar, human_bytes, outln, plural};
use crate::output::VerifiedFile;
use anyhow::Context as _;
use chunk_model::{Layout, Sha256Digest};
use uploader::{GcsConfig, GcsCredentials, Limits, RetryPolicy, StoreConfig, UploadOptions, Which};

/// How Cloud Storage is reached, for every command that opens a bucket (`upload`,
/// `reconstruct`, `verify`, `worker`, `stage`, `prune`, `chunk --stage`).
#[derive(Debug, Clone, clap::Args)]
pub struct GcsArgs {
    /// Cloud Storage endpoint override, e.g. an emulator at http://127.0.0.1:4443;
    /// requests are then anonymous. Otherwise credentials come from
    /// GOOGLE_APPLICATION_CREDENTIALS or the machine's default account.
    #[arg(long, env = "STORAGE_EMULATOR_HOST")]
    endpoint: Option<String>,
    /// Cloud Storage endpoint reached WITH credentials (GOOGLE_APPLICATION_CREDENTIALS or
    /// the machine's default account): a private or proxied endpoint of the service.
    #[arg(
        long,
        env = "PANINI_GCS_ENDPOINT",
        value_name = "URL",
        conflicts_with = "endpoint"
    )]
    gcs_endpoint: Option<String>,
}

impl GcsArgs {
    /// The endpoint and credentials these options choose, with `retry`.
    pub(super) fn config(&self, retry: RetryPolicy) -> GcsConfig {
        let gcs_endpoint = self.gcs_endpoint.clone().filter(|e| !e.is_empty());
        GcsConfig {
            credentials: if gcs_endpoint.is_some() {
                GcsCredentials::ApplicationDefault
            } else {
                GcsCredentials::Auto
            },
            // An empty STORAGE_EMULATOR_HOST means none.
            endpoint: gcs_endpoint.or_else(|| self.endpoint.clone().filter(|e| !e.is_empty())),
            retry,
        }
    }
}

/// Where objects go and how to reach it.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The bucket: gs://bucket[/prefix], file:///absolute/path or a directory path.
    #[arg(long, env = "GOOGLE_ONE_BUCKET")]
    pub(super) bucket: String,
    #[command(flatten)]
    gcs: GcsArgs,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub(super) concurrency: usize,
    /// Bandwidth cap in bytes per second (e.g. 50M).
    #[arg(long, value_parser = super::common::parse_size)]
    max_bytes_per_second: Option<u64>,
    /// Give up on an operation that keeps failing transiently after this long (e.g. 10m).
    #[arg(long, alias = "retry-deadline-s", default_value = "10m", value_parser = super::common::parse_duration)]
    retry_deadline: Duration,
    /// Print the result as one JSON document on stdout (schemas:
    /// docs/schemas/<command>_output.schema.json); messages go to stderr.
    #[arg(long)]
    pub(super) json: bool,
}

impl StoreArgs {
    pub(super) fn config(&self) -> StoreConfig {
        StoreConfig {
            gcs: self.gcs.config(RetryPolicy {
                deadline: self.retry_deadline,
                ..RetryPolicy::default()
            }),
            limits: Limits {
                max_in_flight: self.concurrency,
                bytes_per_second: self.max_bytes_per_second,
            },
        }
    }
}

/// `panini reconstruct NAME --bucket URL -o FILE`.
#[derive(Debug, clap::Args)]
pub struct ReconstructArgs {
    /// The file's name (its recipes are under recipes/NAME/).
    name: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Where to write the file (replaced only when the whole file checks out).
    #[arg(short, long)]
    output: PathBuf,
    /// Rebuild the version with this SHA-256 instead of the newest.
    #[arg(long)]
    sha256: Option<Sha256Digest>,
}

/// `panini verify --bucket URL [NAME]`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The file to check; without it, the newest recipe of every name in the bucket.
    name: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// `panini upload NAME --bucket URL`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The file's name in the chunk tree (its directory under --base).
    name: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Root of the chunk tree (`--root` is the older name).
    #[arg(long, visible_alias = "root", value_name = "DIR", default_value = chunk_model::layout::DEFAULT_ROOT)]
    base: PathBuf,
    /// Codec: auto, lz4, zstd or store.
    #[arg(long, default_value = "auto", value_parser = super::common::choice::<gpu_compress::CodecChoice>(super::common::CODECS))]
    codec: gpu_compress::CodecChoice,
    /// Engine: auto, cpu or opencl.
    #[arg(long, default_value = "auto", value_parser = super::common::choice::<gpu_compress::EngineChoice>(super::common::ENGINES))]
    engine: gpu_compress::EngineChoice,
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn reconstruct(args: ReconstructArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = uploader::open_existing(&args.store.bucket, &args.store.config())
            .await
            .with_context(|| format!("opening the bucket {}", args.store.bucket))?;
        let which = args.sha256.map_or(Which::Newest, Which::File);
        let bar = bytes_bar(0, "reconstruct");
        let report = uploader::reconstruct(
            &store,
            &args.name,
            which,
            &args.output,
            &uploader::ReconstructOptions {
                max_in_flight: args.store.concurrency,
            },
            &|p| {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
            },
        )
        .await;
        bar.finish_and_clear();
        let report = report.with_context(|| {
            format!(
                "reconstructing {} from {} (no output written)",
                args.name,
                store.url()
            )
        })?;
        if args.store.json {
            return common::print_json(&crate::output::ReconstructOutput {
                name: args.name.clone(),
                output: report.output.clone(),
                size: report.file_size,
                chunks: report.chunks,
                sha256: report.file_sha256.to_string(),
                recipe: report.recipe_key.clone(),
            });
        }
        outln!(
            "{}: {}, {}, SHA-256 {} (recipe {})",
            report.output.display(),
            human_bytes(report.file_size),
            plural(report.chunks, "chunk"),
            report.file_sha256,
            report.recipe_key
        );
        Ok(())
    })
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = uploader::open_existing(&args.store.bucket, &args.store.config())
            .await
            .with_context(|| format!("opening the bucket {}", args.store.bucket))?;
        let names = match args.name {
            Some(name) => vec![name],
            None => recipe_names(store.as_ref()).await?,
        };
        anyhow::ensure!(!names.is_empty(), "no recipes in {}", args.store.bucket);
        let options = uploader::ReconstructOptions {
            max_in_flight: args.store.concurrency,
        };
        let mut failed = 0u64;
        let mut results = Vec::new();
        for name in &names {
            match uploader::verify(store.as_ref(), name, Which::Newest, &options, &|_| {}).await {
                Ok(report) => {
                    if !args.store.json {
                        outln!(
                            "{name}: ok, {}, {}, SHA-256 {}",
                            human_bytes(report.file_size),
                            plural(report.chunks, "chunk"),
                            report.file_sha256
                        );
                    }
                    results.push(VerifiedFile {
                        name: name.clone(),
                        ok: true,
                        size: Some(report.file_size),
                        chunks: Some(report.chunks),
                        sha256: Some(report.file_sha256.to_string()),
                        error: None,
                    });
                }
                Err(e) => {
                    failed += 1;
                    if !args.store.json {
                        outln!("{name}: FAILED: {e}");
                    }
                    results.push(VerifiedFile {
                        name: name.clone(),
                        ok: false,
                        size: None,
                        chunks: None,
                        sha256: None,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
        if args.store.json {
            common::print_json(&crate::output::VerifyOutput {
                files: results,
                failed,
            })?;
        }
        anyhow::ensure!(
            failed == 0,
            "{failed} of {} do not rebuild",
            plural(names.len() as u64, "file")
        );
        Ok(())
    })
}

/// Every file name that has a recipe (`recipes/<name>/…`).
async fn recipe_names(store: &dyn uploader::ObjectStore) -> anyhow::Result<Vec<String>> {
    let listed = store.list("recipes/").await.context("listing recipes/")?;
    let mut names: Vec<String> = listed
        .iter()
        .filter_map(|info| {
            info.key
                .strip_prefix("recipes/")?
                .split_once('/')
                .map(|(n, _)| n.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

pub fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let compressor = gpu_compress::Compressor::new(gpu_compress::CompressorConfig {
        codec: args.codec,
        engine: args.engine,
        ..Default::default()
    })
    .context("setting up the compressor")?;
    let layout = Layout::new(&args.base);
    let manifest: chunk_model::Manifest =
        chunk_model::json_file::read(&layout.manifest_path(&args.name)?)?;
    let total: u64 = manifest.chunks.iter().map(|c| c.size).sum();
    runtime()?.block_on(async {
        let store = uploader::open(&args.store.bucket, &args.store.config())
            .await
            .with_context(|| format!("opening {}", args.store.bucket))?;
        let bar = bytes_bar(total, "upload");
        let report = uploader::upload_chunk_dir(
            &store,
            &layout,
            &args.name,
            &compressor,
            &UploadOptions {
                max_in_flight: args.store.concurrency,
                ..UploadOptions::default()
            },
            &|p| bar.set_position(p.original_bytes_done),
        )
        .await;
        bar.finish_and_clear();
        let report =
            report.with_context(|| format!("uploading {} to {}", args.name, store.url()))?;
        if args.store.json {
            return common::print_json(&crate::output::UploadOutput {
                name: args.name.clone(),
                chunks_stored: report.chunks_created,
                bytes_stored: report.bytes_created,
                chunks_already_stored: report.chunks_existing,
                recipe: report.recipe_key.clone(),
            });
        }
        outln!(
            "{}: {} stored ({}), {} already there; recipe {}",
            args.name,
            plural(report.chunks_created, "chunk"),
            human_bytes(report.bytes_created),
            plural(report.chunks_existing, "chunk"),
            report.recipe_key,
        );
        Ok(())
    })
}
