//! `cargo xtask fuzz`: runs the coverage-guided fuzz targets of `crates/fuzz` with
//! cargo-fuzz (libFuzzer), on the stable toolchain.
//!
//! cargo-fuzz passes `-Z` flags to rustc, which only nightly accepts; this machine and CI
//! have stable only, so the build runs with `RUSTC_BOOTSTRAP=1` (what the Rust project
//! itself does to build std), and without a sanitizer (`--sanitizer none`): the targets
//! check their invariants with assertions, and overflow checks are on in the fuzz
//! profile. cargo-fuzz is installed from crates.io when missing.
//!
//! Each target starts from `crates/fuzz/corpus/<target>/`: seeds generated here from the
//! `samples` generators and real encoders (kept in the repository), plus what earlier
//! runs found and `cargo fuzz cmin` kept. A crash is saved under `crates/fuzz/artifacts/`
//! and fails the task.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::codegen::project_root;

/// Every target, in `crates/fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &[
    "chunk_png",
    "chunk_jpeg",
    "chunk_isobmff",
    "chunk_ebml",
    "chunk_riff",
    "chunk_pdf",
    "frames",
    "documents",
];

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Run only these targets (repeatable); default: all.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Minimize each target's corpus after its run (`cargo fuzz cmin`).
    #[arg(long)]
    pub minimize: bool,
}

/// One target's run, as libFuzzer reported it.
#[derive(Debug)]
struct Run {
    target: String,
    executions: u64,
    seconds: f64,
    corpus_files: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = project_root();
    let fuzz_dir = root.join("crates/fuzz");
    let targets: Vec<String> = if args.targets.is_empty() {
        TARGETS.iter().map(|t| (*t).to_owned()).collect()
    } else {
        args.targets.clone()
    };
    for target in &targets {
        if !TARGETS.contains(&target.as_str()) {
            bail!(
                "unknown fuzz target {target:?} (targets: {})",
                TARGETS.join(", ")
            );
        }
    }
    ensure_cargo_fuzz()?;
    write_seeds(&fuzz_dir.join("corpus"))?;

    let mut runs = Vec::new();
    for target in &targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        let started = Instant::now();
        let output = cargo_fuzz(&fuzz_dir, "run")
            .arg(target)
            .arg(&corpus)
            .args([
                "--",
                &format!("-max_total_time={}", args.seconds),
                // Structures are what matter, not bulk: small inputs run fast.
                "-max_len=16384",
                // A parser that takes seconds on a few KiB hangs in production.
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
            ])
            .output()
            .with_context(|| format!("running cargo fuzz run {target}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {target} failed ({}); the input is under crates/fuzz/artifacts/{target}/:\n{}",
                output.status,
                tail.join("\n")
            );
        }
        if args.minimize {
            let status = cargo_fuzz(&fuzz_dir, "cmin")
                .arg(target)
                .arg(&corpus)
                .status()
                .with_context(|| format!("running cargo fuzz cmin {target}"))?;
            if !status.success() {
                bail!("cargo fuzz cmin {target} failed ({status})");
            }
        }
        let run = Run {
            target: target.clone(),
            executions: executions(&log).unwrap_or(0),
            seconds: started.elapsed().as_secs_f64(),
            corpus_files: std::fs::read_dir(&corpus).map_or(0, |d| d.count()),
        };
        println!(
            "fuzz: {:<14} {:>12} executions in {:>6.1} s, corpus {} files, no crash",
            run.target, run.executions, run.seconds, run.corpus_files
        );
        runs.push(run);
    }
    let total: u64 = runs.iter().map(|r| r.executions).sum();
    println!("fuzz: {} targets, {total} executions, no crash", runs.len());
    Ok(())
}

/// `cargo fuzz <subcommand> --fuzz-dir crates/fuzz --sanitizer none`, on stable (see the
/// module documentation); the caller adds the target and the rest.
fn cargo_fuzz(fuzz_dir: &Path, subcommand: &str) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .args(["fuzz", subcommand, "--sanitizer", "none", "--fuzz-dir"])
        .arg(fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1");
    command
}

/// libFuzzer's closing line: `Done N runs in M second(s)`.
fn executions(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|line| line.strip_prefix("Done "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let present = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz");
    let status = Command::new(&cargo)
        .args(["install", "--locked", "cargo-fuzz"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

/// Writes each target's seed files (`seed-*`) when missing: small, valid inputs of its
/// format, so the fuzzer starts inside the parser instead of at its magic number.
fn write_seeds(corpus: &Path) -> anyhow::Result<()> {
    let seeds: Vec<(&str, &str, Vec<u8>)> = seeds()?;
    for (target, name, bytes) in seeds {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path: PathBuf = dir.join(format!("seed-{name}"));
        if !path.exists() {
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

fn seeds() -> anyhow::Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    use samples::*;
    let small = 6 << 10;
    let mut out = vec![
        (
            "chunk_png",
            "png",
            png(&PngSpec::with_approx_size(small, 1)).bytes,
        ),
        (
            "chunk_jpeg",
            "jpeg",
            jpeg(&JpegSpec::with_approx_size(small, 2)).bytes,
        ),
        (
            "chunk_isobmff",
            "mp4",
            mp4(&Mp4Spec {
                samples: 12,
                sample_size: 200,
                keyframe_interval: 4,
                samples_per_chunk: 3,
                ..Mp4Spec::with_approx_size(0, 3)
            })
            .bytes,
        ),
        (
            "chunk_isobmff",
            "mov-co64",
            mp4(&Mp4Spec {
                samples: 8,
                sample_size: 150,
                keyframe_interval: 3,
                samples_per_chunk: 2,
                co64: true,
                moov_first: false,
                free_box: true,
                brand: *b"qt  ",
                seed: 10,
            })
            .bytes,
        ),
        (
            "chunk_ebml",
            "webm",
            webm(&WebmSpec {
                clusters: 3,
                blocks_per_cluster: 4,
                block_size: 200,
                ..WebmSpec::with_approx_size(0, 4)
            })
            .bytes,
        ),
        (
            "chunk_ebml",
            "mkv-unknown-sizes",
            webm(&WebmSpec {
                doc_type: "matroska".into(),
                clusters: 2,
                blocks_per_cluster: 3,
                block_size: 150,
                unknown_sizes: true,
                seed: 11,
            })
            .bytes,
        ),
        (
            "chunk_riff",
            "avi",
            avi(&AviSpec::with_approx_size(small, 5)).bytes,
        ),
        (
            "chunk_riff",
            "wav",
            wav(&WavSpec {
                data_bytes: 2048,
                seed: 6,
            })
            .bytes,
        ),
        (
            "chunk_riff",
            "webp",
            webp(&WebpSpec {
                image_bytes: 1023,
                seed: 7,
            })
            .bytes,
        ),
        (
            "chunk_pdf",
            "pdf",
            pdf(&PdfSpec {
                pages: 2,
                image_bytes: 1024,
                seed: 8,
            })
            .bytes,
        ),
    ];
    // Frames: a bound (2 bytes, little-endian) then a real frame of each codec.
    let data = text_log(8 << 10, 9);
    for (name, codec) in [
        (
            "lz4",
            gpu_compress::CodecChoice::Fixed(gpu_compress::Codec::Lz4),
        ),
        (
            "zstd",
            gpu_compress::CodecChoice::Fixed(gpu_compress::Codec::Zstd),
        ),
    ] {
        let compressor = gpu_compress::Compressor::new(gpu_compress::CompressorConfig {
            codec,
            level: None,
            engine: gpu_compress::EngineChoice::Cpu,
            verify: true,
        })?;
        let frame = compressor.compress(&data)?.bytes;
        let mut seed = u16::try_from(data.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes()
            .to_vec();
        seed.extend_from_slice(&frame);
        out.push(("frames", name, seed));
    }
    // Documents: one of each kind the product reads.
    let sha = chunk_model::Sha256Digest::of(b"chunk");
    let documents = [
        (
            "metadata",
            serde_json::json!({"chunk_id": 3, "offset": 0, "size": 5, "original_hash": sha,
                "pattern_type": "PNG_IDAT", "dependencies": [], "grammar_id": "png_v1",
                "status": "pending", "created_at": "2025-11-13T14:02:11.123456"}),
        ),
        (
            "manifest",
            serde_json::json!({"base_name": "photo", "total_chunks": 1,
                "created_at": "2025-11-13T14:02:11.123456", "grammar_id": "png_v1",
                "chunks": [{"chunk_id": 0, "offset": 0, "size": 5, "hash": sha, "pattern": "PNG_IDAT"}],
                "file_size": 5, "file_hash": sha}),
        ),
        (
            "recipe",
            serde_json::json!({"version": 1, "name": "photo", "file_size": 5, "file_sha256": sha,
                "chunks": [{"offset": 0, "size": 5, "sha256": sha,
                    "key": format!("chunks/{sha}.zst"), "codec": "zstd"}]}),
        ),
        (
            "webhook",
            serde_json::json!({"action": "compress_batch", "chunks": [
                {"chunk_path": "pending_compression/photo/chunk_0000", "chunk_id": 0,
                 "pattern_type": "PNG_IDAT", "size": 5, "hash": sha}],
                "repository": {"owner": "o", "repo": "r", "commit_sha": "0123456789abcdef0123456789abcdef01234567", "ref": "refs/heads/main"}}),
        ),
        (
            "event",
            serde_json::json!({"action": "chunk_compressed", "client_payload": {
                "chunk_path": "pending_compression/photo/chunk_0000", "status": "completed",
                "upload_path": format!("chunks/{sha}.zst"), "upload_hash": sha,
                "original_hash": sha, "worker_id": "w", "stats": {}}}),
        ),
    ];
    for (name, document) in documents {
        out.push(("documents", name, serde_json::to_vec_pretty(&document)?));
    }
    Ok(out)
}
