//! `cargo xtask bench detect`: `panini detect` beside the original design's Python
//! detect script on the same tree of chunk directories, as processes, in one run.
//!
//! The tree has `--chunks` chunk directories in files of 100, each with a `metadata.json`
//! as the Python chunker wrote it and a sparse `data.bin` (detect only `stat`s it), every
//! chunk `pending`. Both commands run from the repository root, write
//! `chunks_to_process.json` there, and are timed wall-clock over `--runs` interleaved
//! runs after one untimed run each (so both read from the page cache). The script is
//! run where it lies (`../shared/peers/seed/detect_pending_chunks.py`, or
//! `$PANINI_SEED_DETECT`), never copied; without it the comparison is skipped with a
//! note. Results go to `target/bench/detect.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context as _;
use chunk_model::layout::{DATA_FILE, METADATA_FILE, chunk_dir_name};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Chunk directories in the tree.
    #[arg(long, default_value_t = 100_000)]
    pub chunks: usize,
    /// Timed runs of each command.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/detect.json")]
    pub output: PathBuf,
}

/// The original detect script, if this checkout sits beside the shared peers.
fn seed_script() -> Option<PathBuf> {
    let path = std::env::var_os("PANINI_SEED_DETECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/peers/seed/detect_pending_chunks.py")
        });
    path.is_file().then_some(path)
}

/// `n` pending chunks as the Python chunker wrote them, under `root/pending_compression`.
fn python_tree(root: &Path, n: usize) -> anyhow::Result<()> {
    let per_file = 100;
    for i in 0..n {
        let (file, c) = (i / per_file, i % per_file);
        let dir = root
            .join("pending_compression")
            .join(format!("file_{file:05}"))
            .join(chunk_dir_name(c as u64, per_file as u64));
        std::fs::create_dir_all(&dir)?;
        let size = 1u64 << 20;
        let metadata = serde_json::json!({
            "chunk_id": c,
            "offset": c as u64 * size,
            "size": size,
            "original_hash": format!("{i:064x}"),
            "pattern_type": if c == 0 { "PNG_HEADER" } else { "FIXED_SIZE" },
            "dependencies": [],
            "grammar_id": null,
            "status": "pending",
            "created_at": "2025-11-13T14:02:11.123456",
        });
        std::fs::write(
            dir.join(METADATA_FILE),
            serde_json::to_vec_pretty(&metadata)?,
        )?;
        std::fs::File::create(dir.join(DATA_FILE))?.set_len(size)?;
    }
    Ok(())
}

/// Seconds `command` takes, which must succeed (or, for the seed script, exit 0 or 1:
/// it exits 1 when nothing is pending).
fn timed(command: &mut Command, what: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "{what} failed: {status}");
    Ok(secs)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let (work, filesystem) = crate::bench_all::small_files_dir()?;
    python_tree(work.path(), args.chunks)?;
    println!(
        "bench detect: {} pending chunk directories on {filesystem}",
        args.chunks
    );
    let exe = std::env::current_exe()?;
    let ours = || {
        let mut command = Command::new(&exe);
        command.args(["detect", "--base", "pending_compression"]);
        command.current_dir(work.path());
        command
    };
    let script = seed_script();
    let seed = |path: &Path| {
        let mut command = Command::new("python3");
        command.arg(path).current_dir(work.path());
        command
    };
    // Warm the page cache and check that both find every chunk.
    timed(&mut ours(), "panini detect")?;
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.path().join("chunks_to_process.json"))?)?;
    anyhow::ensure!(
        listed.as_array().map(Vec::len) == Some(args.chunks),
        "panini detect listed {} chunks",
        listed.as_array().map_or(0, Vec::len)
    );
    if let Some(path) = &script {
        timed(&mut seed(path), "the seed detect script")?;
    }
    let (mut ours_secs, mut seed_secs) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        ours_secs.push(timed(&mut ours(), "panini detect")?);
        if let Some(path) = &script {
            seed_secs.push(timed(&mut seed(path), "the seed detect script")?);
        }
    }
    let ours_median = median(ours_secs.clone());
    let seed_median = script.as_ref().map(|_| median(seed_secs.clone()));
    println!(
        "panini detect: {ours_median:.3} s median of {} ({:.0} chunks/s)",
        args.runs,
        args.chunks as f64 / ours_median
    );
    match seed_median {
        Some(seed) => println!(
            "seed detect_pending_chunks.py: {seed:.3} s median; panini is {:.1}x faster",
            seed / ours_median
        ),
        None => println!(
            "the seed detect script is not beside this checkout (set PANINI_SEED_DETECT); no comparison this run"
        ),
    }
    let result = serde_json::json!({
        "chunks": args.chunks,
        "runs": args.runs,
        "filesystem": filesystem,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "panini_detect_seconds": ours_secs,
        "seed_script_seconds": seed_secs,
        "panini_median_seconds": ours_median,
        "seed_median_seconds": seed_median,
        "speedup": seed_median.map(|s| s / ours_median),
    });
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.output, serde_json::to_string_pretty(&result)? + "\n")?;
    println!("wrote {}", args.output.display());
    Ok(())
}
