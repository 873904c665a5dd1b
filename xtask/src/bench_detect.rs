//! `cargo xtask bench detect`: `panini detect` beside the original design's Python
//! detect script on the same tree of chunk directories, as processes, in one run.
//!
//! The tree has `--chunks` chunk directories in files of 100, each with a `metadata.json`
//! as the Python chunker wrote it and a sparse `data.bin` (detect only `stat`s it), every
//! chunk `pending`. Both commands run from the repository root, write
//! `chunks_to_process.json` there, and are timed wall-clock over `--runs` interleaved
//! runs after one untimed run each (so both read from the page cache), with their peak
//! resident memory (`crate::bench_all::run_measured`). Beside them, in this process, the
//! system calls alone that the format asks of any detector ([`syscall_floor`]): what no
//! parser, however fast, gets under on this machine. `cargo xtask bench` runs the same
//! measurement ([`measure`]) beside its other stages. The script is
//! run where it lies (`../shared/peers/seed/detect_pending_chunks.py`, or
//! `$PANINI_SEED_DETECT`), never copied; without it the comparison is skipped with a
//! note. Results go to `target/bench/detect.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

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
pub(crate) fn seed_script() -> Option<PathBuf> {
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

/// Seconds and peak resident memory (KiB) of `command`, which must succeed.
fn timed(command: &mut Command, what: &str) -> anyhow::Result<(f64, u64)> {
    let child =
        crate::bench_all::run_measured(command).with_context(|| format!("running {what}"))?;
    Ok((child.seconds, child.peak_rss_kib))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Both commands' runs on one tree of pending chunks.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The filesystem of the tree.
    pub filesystem: String,
    /// Seconds of each timed run of `panini detect`.
    pub ours_secs: Vec<f64>,
    /// The largest peak resident memory of its runs, in KiB.
    pub ours_peak_rss_kib: u64,
    /// The same for the seed script, where it was run.
    pub seed_secs: Vec<f64>,
    pub seed_peak_rss_kib: Option<u64>,
    /// Seconds of each run of [`syscall_floor`].
    pub floor_secs: Vec<f64>,
}

/// Seconds that the system calls of a detect take on the tree under `root`, and nothing
/// else: every file directory listed, then per chunk `metadata.json` opened relative to
/// its file directory, read once and closed, and `data.bin` stat'ed, spread over all
/// cores. No parsing, no output, no process start. The seed's format keeps each chunk's
/// status in its own file, so every detector pays at least this (issue #17 asks detect
/// to be 20× the seed script; this says how far the format lets it go).
pub(crate) fn syscall_floor(root: &Path, expected: usize) -> anyhow::Result<f64> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let base = root.join("pending_compression");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&base)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = std::time::Instant::now();
    let found = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let files = &files;
                scope.spawn(move || -> std::io::Result<usize> {
                    let mut buf = vec![0u8; 4096];
                    let mut found = 0;
                    for file in files.iter().skip(t).step_by(threads) {
                        let dir = rustix::fs::open(
                            file,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                            Mode::empty(),
                        )?;
                        for entry in std::fs::read_dir(file)? {
                            let name = entry?.file_name();
                            let name = name.to_string_lossy();
                            if name.starts_with('.') {
                                continue;
                            }
                            let meta = rustix::fs::openat(
                                &dir,
                                format!("{name}/{METADATA_FILE}"),
                                OFlags::RDONLY | OFlags::CLOEXEC,
                                Mode::empty(),
                            )?;
                            if rustix::io::read(&meta, &mut buf)? > 0 {
                                found += 1;
                            }
                            drop(meta);
                            rustix::fs::statat(
                                &dir,
                                format!("{name}/{DATA_FILE}"),
                                AtFlags::empty(),
                            )?;
                        }
                    }
                    Ok(found)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a floor thread panicked"))
            .sum::<std::io::Result<usize>>()
    })?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        found == expected,
        "the syscall floor read {found} metadata files, not {expected}"
    );
    Ok(seconds)
}

/// Writes `chunks` pending chunk directories (in a small-files directory, see
/// [`crate::bench_all::small_files_dir`]) and times `panini detect` and, when `script`
/// is given, the seed script on them: one untimed run each, then `runs` interleaved.
pub(crate) fn measure(
    chunks: usize,
    runs: usize,
    script: Option<&Path>,
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    let (work, filesystem) = crate::bench_all::small_files_dir()?;
    python_tree(work.path(), chunks)?;
    println!("bench detect: {chunks} pending chunk directories on {filesystem}");
    let exe = std::env::current_exe()?;
    let ours = || {
        let mut command = Command::new(&exe);
        command.args(["detect", "--base", "pending_compression"]);
        command.current_dir(work.path());
        command
    };
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
        listed.as_array().map(Vec::len) == Some(chunks),
        "panini detect listed {} chunks",
        listed.as_array().map_or(0, Vec::len)
    );
    if let Some(path) = script {
        timed(&mut seed(path), "the seed detect script")?;
    }
    let mut outcome = Outcome {
        filesystem,
        ours_secs: Vec::new(),
        ours_peak_rss_kib: 0,
        seed_secs: Vec::new(),
        seed_peak_rss_kib: None,
        floor_secs: Vec::new(),
    };
    syscall_floor(work.path(), chunks)?;
    for _ in 0..runs {
        outcome.floor_secs.push(syscall_floor(work.path(), chunks)?);
        let (secs, rss) = timed(&mut ours(), "panini detect")?;
        outcome.ours_secs.push(secs);
        outcome.ours_peak_rss_kib = outcome.ours_peak_rss_kib.max(rss);
        if let Some(path) = script {
            let (secs, rss) = timed(&mut seed(path), "the seed detect script")?;
            outcome.seed_secs.push(secs);
            outcome.seed_peak_rss_kib = Some(outcome.seed_peak_rss_kib.unwrap_or(0).max(rss));
        }
    }
    Ok(outcome)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let script = seed_script();
    let outcome = measure(args.chunks, args.runs, script.as_deref())?;
    let ours_median = median(outcome.ours_secs.clone());
    let seed_median = script.as_ref().map(|_| median(outcome.seed_secs.clone()));
    println!(
        "panini detect: {ours_median:.3} s median of {} ({:.0} chunks/s)",
        args.runs,
        args.chunks as f64 / ours_median
    );
    let floor_median = median(outcome.floor_secs.clone());
    println!(
        "the format's system calls alone (open, read, close, stat per chunk; all cores): \
         {floor_median:.3} s median"
    );
    match seed_median {
        Some(seed) => println!(
            "seed detect_pending_chunks.py: {seed:.3} s median; panini is {:.1}x faster, \
             the system calls alone {:.1}x",
            seed / ours_median,
            seed / floor_median
        ),
        None => println!(
            "the seed detect script is not beside this checkout (set PANINI_SEED_DETECT); no comparison this run"
        ),
    }
    let result = serde_json::json!({
        "chunks": args.chunks,
        "runs": args.runs,
        "filesystem": outcome.filesystem,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "panini_detect_seconds": outcome.ours_secs,
        "seed_script_seconds": outcome.seed_secs,
        "panini_median_seconds": ours_median,
        "syscall_floor_seconds": outcome.floor_secs,
        "syscall_floor_median_seconds": floor_median,
        "seed_median_seconds": seed_median,
        "speedup": seed_median.map(|s| s / ours_median),
        "panini_peak_rss_kib": outcome.ours_peak_rss_kib,
        "seed_peak_rss_kib": outcome.seed_peak_rss_kib,
    });
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.output, serde_json::to_string_pretty(&result)? + "\n")?;
    println!("wrote {}", args.output.display());
    Ok(())
}
