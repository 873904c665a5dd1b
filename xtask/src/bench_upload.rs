//! `cargo xtask bench upload`: upload throughput of chunk objects to the GCS emulator,
//! Panini's `Gcs` store beside `rclone copy` of the same files to the same emulator in
//! the same run. Results go to `target/bench/upload.md` and `target/bench/upload.json`.
//!
//! Each run starts a fresh emulator (memory backend, so a run's objects are freed with
//! it), uploads the objects with Panini under `panini/`, then with rclone under
//! `rclone/`, checks that both sets are complete, and stops the emulator. Both sides
//! read the objects from the same files and send them with 8 transfers in flight.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chunk_model::{Codec, Sha256Digest};
use futures::StreamExt as _;
use serde_json::json;
use uploader::{GcsConfig, Limits, ObjectMeta, RetryPolicy, StoreConfig};

use crate::ci::TEST_BUCKET;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Total MiB of objects uploaded per tool and run.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Size of each object in KiB (chunk objects are about 1 MiB).
    #[arg(long, default_value_t = 1024)]
    object_kib: usize,
    /// Runs per tool; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Transfers in flight, for both tools.
    #[arg(long, default_value_t = 8)]
    transfers: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.mib > 0 && args.object_kib > 0 && args.runs > 0,
        "--mib, --object-kib and --runs must be positive"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned();
    let binary = gcs_emulator::find_binary(&root)?;
    which_rclone()?;
    let work = tempfile::tempdir().context("creating a work directory")?;
    let objects = write_objects(
        &work.path().join("objects"),
        args.mib << 20,
        args.object_kib << 10,
    )?;
    let total_bytes: u64 = objects.iter().map(|(_, size)| *size).sum();
    println!(
        "bench upload: {} objects of {} KiB ({} MiB) per tool, {} runs, {} transfers",
        objects.len(),
        args.object_kib,
        total_bytes >> 20,
        args.runs,
        args.transfers
    );

    let outcome = measure(
        &binary,
        &work.path().join("objects"),
        &objects,
        args.runs,
        args.transfers,
    )?;
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("bench");
    outcome.write(&dir)
}

/// What one `bench upload` run measured: seconds per run for each tool.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub objects: usize,
    /// The largest object's size.
    pub object_bytes: u64,
    pub total_bytes: u64,
    pub transfers: usize,
    pub panini_s: Vec<f64>,
    pub rclone_s: Vec<f64>,
}

/// Uploads `objects` (files in `source`, named `<sha256>.store`, as [`write_objects`] and
/// [`objects_from_files`] write them) `runs` times with each tool, a fresh emulator per
/// run, and checks that both tools stored every object.
pub fn measure(
    binary: &Path,
    source: &Path,
    objects: &[(PathBuf, u64)],
    runs: usize,
    transfers: usize,
) -> anyhow::Result<Outcome> {
    ensure!(
        runs > 0 && transfers > 0,
        "runs and transfers must be positive"
    );
    let work = tempfile::tempdir().context("creating a work directory")?;
    let total_bytes: u64 = objects.iter().map(|(_, size)| *size).sum();
    let mut panini_s = Vec::new();
    let mut rclone_s = Vec::new();
    for run in 1..=runs {
        let emulator = gcs_emulator::Emulator::start(binary, &[TEST_BUCKET])?;
        let seconds = upload_with_panini(&emulator.endpoint(), objects, transfers)?;
        println!(
            "run {run}: panini {seconds:.2} s ({:.0} MiB/s)",
            mib_per_s(total_bytes, seconds)
        );
        panini_s.push(seconds);
        let seconds = upload_with_rclone(&emulator.endpoint(), source, work.path(), transfers)?;
        println!(
            "run {run}: rclone {seconds:.2} s ({:.0} MiB/s)",
            mib_per_s(total_bytes, seconds)
        );
        rclone_s.push(seconds);
        check_complete(&emulator.endpoint(), objects)?;
    }
    Ok(Outcome {
        objects: objects.len(),
        object_bytes: objects.iter().map(|(_, size)| *size).max().unwrap_or(0),
        total_bytes,
        transfers,
        panini_s,
        rclone_s,
    })
}

impl Outcome {
    /// Writes `upload.md` and `upload.json` into `dir` and prints the table.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let (panini_s, rclone_s, total_bytes) = (&self.panini_s, &self.rclone_s, self.total_bytes);
        let panini = median(panini_s);
        let rclone = median(rclone_s);
        let ratio = rclone / panini;
        let (ours, theirs) = (
            mib_per_s(total_bytes, panini),
            mib_per_s(total_bytes, rclone),
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let markdown = format!(
            "# Upload benchmark\n\n\
             {} objects of {} KiB ({} MiB) to fake-gcs-server (memory backend) on 127.0.0.1, \
             {} transfers in flight, {} runs each (median), {cores} CPU threads; a fresh emulator per run.\n\n\
             | tool | median s | MiB/s | runs (s) |\n|---|---:|---:|---|\n\
             | Panini `Gcs` store (create-only, CRC32C) | {panini:.2} | {ours:.0} | {} |\n\
             | `rclone copy --transfers {}` | {rclone:.2} | {theirs:.0} | {} |\n\n\
             Panini / rclone throughput: **{ratio:.2}×**\n",
            self.objects,
            self.object_bytes >> 10,
            total_bytes >> 20,
            self.transfers,
            panini_s.len(),
            list(panini_s),
            self.transfers,
            list(rclone_s),
        );
        let report = json!({
            "objects": self.objects,
            "object_bytes": self.object_bytes,
            "total_bytes": total_bytes,
            "transfers": self.transfers,
            "runs": panini_s.len(),
            "cpu_threads": cores,
            "panini": {"median_s": panini, "mib_per_s": ours, "runs_s": panini_s},
            "rclone": {"median_s": rclone, "mib_per_s": theirs, "runs_s": rclone_s},
            "panini_over_rclone_throughput": ratio,
        });
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("upload.md"), &markdown)
            .with_context(|| format!("writing {}", dir.join("upload.md").display()))?;
        std::fs::write(
            dir.join("upload.json"),
            serde_json::to_string_pretty(&report)? + "\n",
        )
        .with_context(|| format!("writing {}", dir.join("upload.json").display()))?;
        println!(
            "\n{markdown}\nwritten to {}",
            dir.join("upload.md").display()
        );
        Ok(())
    }
}

/// Cuts `files` into objects of at most `size` bytes in `dir`, named by content
/// (`<sha256>.store`) as chunk objects are, so repeated pieces are stored once; (path, size).
pub fn objects_from_files(
    dir: &Path,
    files: &[PathBuf],
    size: usize,
) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    use std::io::Read as _;
    ensure!(size > 0, "the object size must be positive");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut objects = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut buffer = vec![0u8; size];
    for file in files {
        let mut input =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        loop {
            let mut n = 0;
            while n < size {
                let read = input
                    .read(&mut buffer[n..])
                    .with_context(|| format!("reading {}", file.display()))?;
                if read == 0 {
                    break;
                }
                n += read;
            }
            if n == 0 {
                break;
            }
            let sha = Sha256Digest::of(&buffer[..n]);
            if seen.insert(sha) {
                let path = dir.join(format!("{sha}.store"));
                std::fs::write(&path, &buffer[..n])
                    .with_context(|| format!("writing {}", path.display()))?;
                objects.push((path, n as u64));
            }
            if n < size {
                break;
            }
        }
    }
    Ok(objects)
}

/// Fails with an install hint when the `rclone` CLI is missing.
pub fn which_rclone() -> anyhow::Result<()> {
    let status = Command::new("rclone").arg("version").output();
    match status {
        Ok(output) if output.status.success() => Ok(()),
        _ => bail!(
            "rclone is not installed (Debian: apt-get install rclone); the benchmark compares against it"
        ),
    }
}

/// Incompressible objects named by content, as chunk objects are; (path, size).
fn write_objects(dir: &Path, total: usize, size: usize) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    use rand::{RngCore as _, SeedableRng as _};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut objects = Vec::new();
    let mut left = total;
    let mut buffer = vec![0u8; size];
    while left > 0 {
        let n = left.min(size);
        rng.fill_bytes(&mut buffer[..n]);
        let name = format!("{}.store", Sha256Digest::of(&buffer[..n]));
        let path = dir.join(name);
        std::fs::write(&path, &buffer[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        objects.push((path, n as u64));
        left -= n;
    }
    Ok(objects)
}

fn store_config(endpoint: &str, transfers: usize) -> StoreConfig {
    StoreConfig {
        gcs: GcsConfig {
            endpoint: Some(endpoint.to_owned()),
            retry: RetryPolicy {
                deadline: Duration::from_secs(120),
                ..RetryPolicy::default()
            },
            ..GcsConfig::default()
        },
        limits: Limits {
            max_in_flight: transfers,
            bytes_per_second: None,
        },
    }
}

/// Seconds to read and store every object under `panini/chunks/`.
fn upload_with_panini(
    endpoint: &str,
    objects: &[(PathBuf, u64)],
    transfers: usize,
) -> anyhow::Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = uploader::open(
            &format!("gs://{TEST_BUCKET}/panini"),
            &store_config(endpoint, transfers),
        )
        .await?;
        let start = Instant::now();
        let mut puts = futures::stream::iter(objects)
            .map(|(path, _)| {
                let store = store.clone();
                async move {
                    let bytes = tokio::fs::read(path)
                        .await
                        .with_context(|| format!("reading {}", path.display()))?;
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .context("object file name")?;
                    // Objects are stored as they are, so their metadata is known without
                    // hashing again: the file name is the SHA-256.
                    let sha = name.trim_end_matches(".store").parse::<Sha256Digest>()?;
                    let meta = ObjectMeta {
                        codec: Codec::Store,
                        original_size: bytes.len() as u64,
                        original_sha256: sha,
                    };
                    store
                        .put(&format!("chunks/{name}"), bytes.into(), &meta)
                        .await?;
                    anyhow::Ok(())
                }
            })
            // The store's own limit keeps `transfers` in flight; reading ahead keeps it busy.
            .buffer_unordered(transfers * 2);
        while let Some(result) = puts.next().await {
            result?;
        }
        Ok(start.elapsed().as_secs_f64())
    })
}

/// Seconds for `rclone copy` of the objects to `rclone/chunks/`.
fn upload_with_rclone(
    endpoint: &str,
    source: &Path,
    work: &Path,
    transfers: usize,
) -> anyhow::Result<f64> {
    let config = work.join("rclone.conf");
    std::fs::write(
        &config,
        format!(
            "[emu]\ntype = google cloud storage\nanonymous = true\nendpoint = {endpoint}\nbucket_policy_only = true\nproject_number = test\n"
        ),
    )?;
    let start = Instant::now();
    let output = Command::new("rclone")
        .arg("--config")
        .arg(&config)
        .arg("copy")
        .arg(source)
        .arg(format!("emu:{TEST_BUCKET}/rclone/chunks"))
        .args([
            "--transfers",
            &transfers.to_string(),
            "--gcs-no-check-bucket",
        ])
        .output()
        .context("running rclone")?;
    let seconds = start.elapsed().as_secs_f64();
    ensure!(
        output.status.success(),
        "rclone copy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(seconds)
}

/// Both tools stored every object, at its full size.
fn check_complete(endpoint: &str, objects: &[(PathBuf, u64)]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for prefix in ["panini", "rclone"] {
            let store = uploader::open(
                &format!("gs://{TEST_BUCKET}/{prefix}"),
                &store_config(endpoint, 8),
            )
            .await?;
            let listed = store.list("chunks/").await?;
            ensure!(
                listed.len() == objects.len(),
                "{prefix}: {} objects stored, expected {}",
                listed.len(),
                objects.len()
            );
            let stored: u64 = listed.iter().map(|i| i.size).sum();
            let expected: u64 = objects.iter().map(|(_, s)| s).sum();
            ensure!(
                stored == expected,
                "{prefix}: {stored} bytes stored, expected {expected}"
            );
        }
        Ok(())
    })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / seconds
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
