//! `panini upload` and `panini reconstruct`: a file's chunks to a bucket (or a
//! directory) and back, bit for bit.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chunk_model::{Layout, Sha256Digest};
use indicatif::{ProgressBar, ProgressStyle};
use uploader::{GcsConfig, Limits, RetryPolicy, StoreConfig, UploadOptions, Which};

/// Where objects go and how to reach it.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The store: gs://bucket[/prefix], file:///path or a directory.
    #[arg(long, env = "PANINI_BUCKET")]
    bucket: String,
    /// Cloud Storage endpoint override, e.g. an emulator at http://127.0.0.1:4443
    /// (STORAGE_EMULATOR_HOST works too); requests are then anonymous.
    #[arg(long)]
    endpoint: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Bandwidth cap in bytes per second.
    #[arg(long)]
    max_bytes_per_second: Option<u64>,
    /// Give up on an operation that keeps failing transiently after this many seconds.
    #[arg(long, default_value_t = 600)]
    retry_deadline_s: u64,
}

impl StoreArgs {
    fn config(&self) -> StoreConfig {
        StoreConfig {
            gcs: GcsConfig {
                endpoint: self.endpoint.clone(),
                retry: RetryPolicy {
                    deadline: Duration::from_secs(self.retry_deadline_s),
                    ..RetryPolicy::default()
                },
            },
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
    /// The file's name in the chunk tree (its directory under --root).
    name: String,
    #[command(flatten)]
    store: StoreArgs,
    /// The chunk tree's root.
    #[arg(long, default_value = chunk_model::layout::DEFAULT_ROOT)]
    root: PathBuf,
    /// Codec: auto, lz4, zstd or store.
    #[arg(long, default_value = "auto")]
    codec: gpu_compress::CodecChoice,
    /// Engine: auto, cpu or opencl.
    #[arg(long, default_value = "auto")]
    engine: gpu_compress::EngineChoice,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn bytes_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .expect("a valid template"),
    );
    bar
}

pub fn reconstruct(args: ReconstructArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = uploader::open(&args.store.bucket, &args.store.config())
            .await
            .with_context(|| format!("opening {}", args.store.bucket))?;
        let which = args.sha256.map_or(Which::Newest, Which::File);
        let bar = bytes_bar(0);
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
                bar.set_message(format!("chunk {}/{}", p.chunks_done, p.chunks_total));
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
        println!(
            "{}: {} bytes, {} chunks, SHA-256 {} (recipe {})",
            report.output.display(),
            report.file_size,
            report.chunks,
            report.file_sha256,
            report.recipe_key
        );
        Ok(())
    })
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = uploader::open(&args.store.bucket, &args.store.config())
            .await
            .with_context(|| format!("opening {}", args.store.bucket))?;
        let names = match args.name {
            Some(name) => vec![name],
            None => recipe_names(store.as_ref()).await?,
        };
        anyhow::ensure!(!names.is_empty(), "no recipes in {}", args.store.bucket);
        let options = uploader::ReconstructOptions {
            max_in_flight: args.store.concurrency,
        };
        let mut failed = 0;
        for name in &names {
            match uploader::verify(store.as_ref(), name, Which::Newest, &options, &|_| {}).await {
                Ok(report) => println!(
                    "{name}: ok, {} bytes, {} chunks, SHA-256 {}",
                    report.file_size, report.chunks, report.file_sha256
                ),
                Err(e) => {
                    failed += 1;
                    println!("{name}: FAILED: {e}");
                }
            }
        }
        anyhow::ensure!(
            failed == 0,
            "{failed} of {} files do not rebuild",
            names.len()
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
    let layout = Layout::new(&args.root);
    let manifest: chunk_model::Manifest =
        chunk_model::json_file::read(&layout.manifest_path(&args.name)?)?;
    let total: u64 = manifest.chunks.iter().map(|c| c.size).sum();
    runtime()?.block_on(async {
        let store = uploader::open(&args.store.bucket, &args.store.config())
            .await
            .with_context(|| format!("opening {}", args.store.bucket))?;
        let bar = bytes_bar(total);
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
        println!(
            "{}: {} chunks stored ({} bytes), {} already there; recipe {} ({:?})",
            args.name,
            report.chunks_created,
            report.bytes_created,
            report.chunks_existing,
            report.recipe_key,
            report.recipe
        );
        Ok(())
    })
}
