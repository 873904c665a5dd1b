//! `cargo xtask bench` (no subcommand): every stage's benchmark and the whole pipeline on
//! one generated corpus (≥ 1 GiB by default), each beside the tool a user would pick
//! instead, on the same data in the same run. Writes `report.md`, `report.json` and a
//! grouped bar chart `report.svg` (MB/s per stage, Panini's engines vs the peers) under
//! `--out`, beside the stage benchmarks' own `compress.*` and `upload.*` files.
//!
//! The stages reuse the stage benchmarks' measuring functions (`bench_compress`,
//! `bench_upload`, `bench_dispatch`) rather than copies of them; the whole pipeline runs
//! as `xtask pipeline --json`, a child process of this same binary, and only its stable
//! JSON summary is read. Timings are printed and written, never judged here beyond the
//! issues' targets, which are reported as met or missed.
//!
//! Issue #17 asks for its ratios side by side in this one run: the pipeline beside
//! `restic backup` (the corpus, and a folder of 3,000 small files), the peak resident
//! memory of the pipeline on one file of 1 GiB and of 4 GiB beside restic's, and `panini
//! detect` beside the seed script. Every child process is run by [`run_measured`], which
//! times it and reads its peak resident memory (`ru_maxrss`, from `wait4` in a small
//! launcher, `xtask bench measure-child`).

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use chunker::{ChunkOptions, ChunkerConfig, Strategy};
use serde::Serialize;
use serde_json::{Value, json};

use crate::ci::TEST_BUCKET;

/// Options of `cargo xtask bench` without a subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Corpus size in MiB (logs, source, binaries, random, zeros, PNG- and MP4-like files).
    #[arg(long, default_value_t = 1024)]
    pub corpus_mib: usize,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Runs of the whole pipeline (each a fresh work directory and bucket prefix).
    #[arg(long, default_value_t = 1)]
    pub pipeline_runs: usize,
    /// Where the reports, the corpus and scratch files go (default: target/bench).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Chunks sent in the dispatch stage, in each of its three modes.
    #[arg(long, default_value_t = 2000)]
    pub dispatch_chunks: usize,
    /// Size of each dispatched chunk in KiB.
    #[arg(long, default_value_t = 16)]
    pub dispatch_chunk_kib: usize,
    /// Transfers in flight for both uploaders.
    #[arg(long, default_value_t = 8)]
    pub transfers: usize,
    /// Skip the stages that need the GCS emulator (the upload stage and the pipeline to
    /// the emulator); they are listed as skipped in the report.
    #[arg(long)]
    pub no_emulator: bool,
    /// Sizes in GiB of the single files the memory stage runs the pipeline on (each
    /// written once under --out, on its disk), comma-separated, fractions allowed down to
    /// 1 MiB; restic backs up the smallest. An empty list skips the stage.
    #[arg(long, default_value = "1,4", value_parser = gib_list)]
    pub memory_gib: GibList,
    /// Skip the memory stage (as `--memory-gib ''`).
    #[arg(long)]
    pub no_memory: bool,
    /// Small files (the first regular ones of /usr/lib/python3.* and /usr/share/doc) for
    /// the many-small-files stage; 0 skips it.
    #[arg(long, default_value_t = 3000)]
    pub small_files: usize,
    /// Chunk directories `panini detect` and the seed detect script scan; 0 skips them.
    #[arg(long, default_value_t = 100_000)]
    pub detect_chunks: usize,
}

/// The `--memory-gib` sizes.
#[derive(Debug, Clone)]
pub struct GibList(Vec<f64>);

/// `1,4` as [1, 4]; an empty string as none.
fn gib_list(text: &str) -> Result<GibList, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<f64>() {
            Ok(gib) if gib.is_finite() && gib_bytes(gib) > 0 => Ok(gib),
            _ => Err(format!("`{s}` is not a number of GiB of at least 1 MiB")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(GibList)
}

/// `gib` GiB in bytes, rounded down to whole MiB.
fn gib_bytes(gib: f64) -> u64 {
    ((gib * 1024.0) as u64) << 20
}

/// The password of the benchmark's throwaway restic repositories, given to restic in its
/// own environment only.
const RESTIC_PASSWORD: &str = "panini-bench";

/// One measured line: a Panini engine or a peer tool on one stage.
#[derive(Debug, Clone, Serialize)]
struct Row {
    /// The chart group: `chunk`, `compress lz4`, `upload`, `pipeline (local)`, ….
    stage: String,
    /// Who ran: `panini lz4 cpu (in-process)`, `lz4 -1`, `rclone copy`, ….
    name: String,
    /// A reference tool rather than Panini.
    peer: bool,
    /// Input bytes per run.
    bytes: u64,
    /// Median seconds per run.
    median_s: f64,
    /// Every run's seconds (empty where the stage reports only its median).
    runs_s: Vec<f64>,
    /// 10^6 bytes per second over the median.
    mb_per_s: f64,
    /// Chunks per second, where the stage counts chunks.
    #[serde(skip_serializing_if = "Option::is_none")]
    chunks_per_s: Option<f64>,
    /// The largest peak resident memory (`ru_maxrss`) of the row's child processes over
    /// its runs, in MiB; none for work done inside this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_rss_mib: Option<f64>,
    note: String,
}

impl Row {
    /// A row from every run's seconds; MB/s over their median.
    fn new(stage: &str, name: impl Into<String>, peer: bool, bytes: u64, runs_s: Vec<f64>) -> Self {
        let median_s = median(&runs_s);
        Self {
            stage: stage.to_owned(),
            name: name.into(),
            peer,
            bytes,
            median_s,
            runs_s,
            mb_per_s: mb_per_s(bytes, median_s),
            chunks_per_s: None,
            peak_rss_mib: None,
            note: String::new(),
        }
    }

    /// A row from child processes' measurements: their seconds, and the largest of their
    /// peak resident memories.
    fn measured(
        stage: &str,
        name: impl Into<String>,
        peer: bool,
        bytes: u64,
        runs: &[Measured],
    ) -> Self {
        let mut row = Self::new(
            stage,
            name,
            peer,
            bytes,
            runs.iter().map(|m| m.seconds).collect(),
        );
        row.peak_rss_mib = runs.iter().map(|m| m.peak_rss_kib).max().map(kib_to_mib);
        row
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// Panini's headline row of a stage beside the peer's.
#[derive(Debug, Clone, Serialize)]
struct Comparison {
    stage: String,
    ours: String,
    ours_mb_per_s: f64,
    peer: String,
    peer_mb_per_s: f64,
    /// Ours over the peer's throughput.
    ratio: f64,
}

/// A target, met or missed.
#[derive(Debug, Clone, Serialize)]
struct TargetRow {
    target: String,
    /// Where the target comes from: an issue, or "beside the peer".
    source: &'static str,
    wanted: String,
    measured: String,
    met: bool,
}

/// The machine the figures came from.
#[derive(Debug, Clone, Serialize)]
struct Machine {
    date: String,
    git_commit: String,
    git_dirty: bool,
    cpu_threads: usize,
    cpu_model: String,
    memory_total: String,
    loadavg_start: String,
    loadavg_end: String,
    /// The filesystem of the temporary directory, where the dispatch stage's chunk trees
    /// are: `metadata.json` rewrites are bound by its inode allocation.
    temp_filesystem: String,
    /// The filesystem of the output directory (chunk trees, local buckets).
    out_filesystem: String,
    /// The peak resident memory `true` reports through [`run_measured`]'s launcher, in
    /// MiB: the least any row's peak can be.
    peak_rss_floor_mib: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    corpus_mib: usize,
    corpus_files: Vec<Value>,
    runs: usize,
    pipeline_runs: usize,
    rows: Vec<Row>,
    comparisons: Vec<Comparison>,
    targets: Vec<TargetRow>,
    /// `xtask pipeline --json` summaries, as the pipeline printed them.
    pipelines: Vec<Value>,
    /// Sizes of the memory stage's files (none when it was skipped).
    memory_gib: Vec<f64>,
    small_files: usize,
    detect_chunks: usize,
    skipped: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.corpus_mib > 0
            && args.runs > 0
            && args.pipeline_runs > 0
            && args.dispatch_chunks > 0
            && args.dispatch_chunk_kib > 0
            && args.transfers > 0,
        "--corpus-mib, --runs, --pipeline-runs, --dispatch-chunks, --dispatch-chunk-kib and --transfers must be positive"
    );
    let loadavg_start = loadavg();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::bench_compress::crate_target_dir().join("bench"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("resolving {}", out.display()))?;
    let root = crate::codegen::project_root();
    let memory_gib = if args.no_memory {
        Vec::new()
    } else {
        args.memory_gib.0.clone()
    };
    // Fail before the long stages when a peer or the emulator is missing.
    for (program, arg) in [
        ("lz4", "-V"),
        ("zstd", "-V"),
        ("split", "--version"),
        ("restic", "version"),
    ] {
        which(program, arg)?;
    }
    let rss_floor = rss_floor_kib().context("measuring the launcher's resident memory")?;
    let seed_detect = if args.detect_chunks > 0 {
        which("python3", "--version")?;
        Some(crate::bench_detect::seed_script().context(
            "the seed detect script (../shared/peers/seed/detect_pending_chunks.py) is not \
             beside this checkout: set PANINI_SEED_DETECT to it, or pass --detect-chunks 0",
        )?)
    } else {
        None
    };
    let emulator_binary = if args.no_emulator {
        None
    } else {
        crate::bench_upload::which_rclone()?;
        Some(gcs_emulator::find_binary(&root)?)
    };

    println!("bench: writing the {} MiB corpus", args.corpus_mib);
    let corpus_dir = out.join("corpus");
    std::fs::create_dir_all(&corpus_dir)
        .with_context(|| format!("creating {}", corpus_dir.display()))?;
    let corpus = crate::bench_compress::write_corpus(&corpus_dir, args.corpus_mib << 20)?;
    let files: Vec<PathBuf> = corpus.iter().map(|(path, _)| path.clone()).collect();
    let corpus_bytes: u64 = corpus.iter().map(|(_, n)| *n as u64).sum();
    let scratch = tempfile::Builder::new()
        .prefix("scratch-")
        .tempdir_in(&out)
        .context("creating a scratch directory")?;

    let mut rows = Vec::new();
    let mut comparisons = Vec::new();
    let mut targets = Vec::new();
    let mut skipped = Vec::new();

    println!("bench: chunk");
    let chunk_rows = chunk_stage(&files, corpus_bytes, scratch.path(), args.runs)?;
    compare(
        &mut comparisons,
        &chunk_rows,
        "panini chunk semantic",
        "split -b 1M",
    );
    if let Some(semantic) = chunk_rows
        .iter()
        .find(|r| r.name == "panini chunk semantic")
    {
        targets.push(TargetRow {
            target: "chunk: semantic strategy throughput".into(),
            source: "issue #2",
            wanted: "≥ 1000 MB/s on 2 cores".into(),
            measured: format!(
                "{:.1} MB/s (output on the disk of --out)",
                semantic.mb_per_s
            ),
            met: semantic.mb_per_s >= 1000.0,
        });
    }
    rows.extend(chunk_rows);
    targets.extend(chunking_quality(&files, scratch.path())?);

    println!("bench: compress");
    let compress = crate::bench_compress::measure_corpus(
        &crate::bench_compress::Args {
            corpus_mib: args.corpus_mib,
            runs: args.runs,
        },
        &corpus,
        &scratch.path().join("compress-out"),
    )?;
    compress.write(&out)?;
    let compress_rows = compress_rows(&compress.totals());
    for (ours, peer) in [
        ("panini lz4 cpu (in-process)", "lz4 -1"),
        ("panini lz4 cpu (command)", "lz4 -1"),
        ("panini zstd -1 (in-process)", "zstd -1 -T0"),
        ("panini zstd -1 (command)", "zstd -1 -T0"),
    ] {
        compare(&mut comparisons, &compress_rows, ours, peer);
    }
    if let Some(opencl) = compress_rows
        .iter()
        .find(|r| r.name.starts_with("panini lz4 opencl") && r.name.ends_with("(in-process)"))
    {
        compare(&mut comparisons, &compress_rows, &opencl.name, "lz4 -1");
    }
    rows.extend(compress_rows);
    for t in compress.targets() {
        targets.push(TargetRow {
            target: t.label,
            source: "issue (bench compress)",
            wanted: t.wanted,
            measured: format!(
                "{:.1} vs {:.1} MB/s = {:.2}×, ratio {:.3} vs {:.3}",
                t.ours_mb_per_s, t.reference_mb_per_s, t.speedup, t.ours_ratio, t.reference_ratio
            ),
            met: t.met,
        });
    }

    match &emulator_binary {
        Some(binary) => {
            println!("bench: upload");
            let objects_dir = scratch.path().join("objects");
            let objects = crate::bench_upload::objects_from_files(&objects_dir, &files, 1 << 20)?;
            let upload = crate::bench_upload::measure(
                binary,
                &objects_dir,
                &objects,
                args.runs,
                args.transfers,
            )?;
            upload.write(&out)?;
            std::fs::remove_dir_all(&objects_dir).ok();
            let note = format!(
                "{} distinct 1 MiB objects of the corpus, {} in flight, fresh emulator per run",
                upload.objects, upload.transfers
            );
            let upload_rows = vec![
                Row::new(
                    "upload",
                    "panini Gcs store",
                    false,
                    upload.total_bytes,
                    upload.panini_s.clone(),
                )
                .note(note.clone()),
                Row::new(
                    "upload",
                    format!("rclone copy --transfers {}", upload.transfers),
                    true,
                    upload.total_bytes,
                    upload.rclone_s.clone(),
                )
                .note(note),
            ];
            let comparison = compare(
                &mut comparisons,
                &upload_rows,
                "panini Gcs store",
                &upload_rows[1].name,
            );
            if let Some(c) = comparison {
                targets.push(TargetRow {
                    target: "upload: Panini Gcs store vs rclone copy".into(),
                    source: "beside the peer",
                    wanted: "≥ 1× rclone copy".into(),
                    measured: format!(
                        "{:.1} vs {:.1} MB/s = {:.2}×",
                        c.ours_mb_per_s, c.peer_mb_per_s, c.ratio
                    ),
                    met: c.ratio >= 1.0,
                });
            }
            rows.extend(upload_rows);
        }
        None => skipped.push("upload (--no-emulator)".to_owned()),
    }

    println!("bench: dispatch");
    let dispatch_rows = dispatch_stage(&args)?;
    if let Some(c) = compare(
        &mut comparisons,
        &dispatch_rows,
        "panini dispatch batch",
        "per-chunk POST (original design)",
    ) {
        targets.push(TargetRow {
            target: "dispatch: batches vs one POST per chunk".into(),
            source: "beside the peer",
            wanted: "≥ 1× per-chunk".into(),
            measured: format!("{:.2}× the chunks/s", c.ratio),
            met: c.ratio >= 1.0,
        });
    }
    compare(
        &mut comparisons,
        &dispatch_rows,
        "panini dispatch batch",
        "batch to nginx answering 202 (ceiling)",
    );
    for (name, what) in [
        (
            "panini dispatch batch",
            "with metadata.json recorded per chunk",
        ),
        ("panini dispatch batch, no metadata", "HTTP only"),
    ] {
        if let Some(chunks_per_s) = dispatch_rows
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.chunks_per_s)
        {
            targets.push(TargetRow {
                target: format!("dispatch: chunks accepted per second in batch mode, {what}"),
                source: "issue #6",
                wanted: "≥ 5,000 chunks/s on 2 cores".into(),
                measured: if name == "panini dispatch batch" {
                    format!(
                        "{chunks_per_s:.0} chunks/s (trees on {})",
                        filesystem(&std::env::temp_dir())
                    )
                } else {
                    format!("{chunks_per_s:.0} chunks/s")
                },
                met: chunks_per_s >= 5000.0,
            });
        }
    }
    rows.extend(dispatch_rows);

    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut pipelines = Vec::new();
    let mut pipeline_targets = Vec::new();
    // A local bucket twice: work directories beside the output (on its disk), then on
    // tmpfs. The pipeline makes three inodes per chunk and rewrites each chunk's
    // metadata twice, which an ext4 without a journal makes dearer than the peers' few
    // big files (docs/OPERATIONS.md); the second run shows the job without that.
    let (tmpfs_scratch, tmpfs) = small_files_dir().context("creating a tmpfs scratch directory")?;
    for (dir, stage, bucket) in [
        (
            scratch.path(),
            "pipeline (local)".to_owned(),
            "local bucket".to_owned(),
        ),
        (
            tmpfs_scratch.path(),
            format!("pipeline (local, work dir on {tmpfs})"),
            format!("local bucket on {tmpfs}"),
        ),
    ] {
        println!("bench: {stage}");
        let (local_rows, summaries) =
            pipeline_stage(&exe, &files, dir, None, args.pipeline_runs, &stage)?;
        for (peer, wanted) in [
            ("zstd -1 -T0 into the bucket directory", 0.5),
            ("restic backup", 2.0),
        ] {
            if let Some(c) = compare(&mut comparisons, &local_rows, "panini pipeline", peer) {
                pipeline_targets.push(ratio_target(
                    &format!("{stage} ≥ {wanted}× {peer}"),
                    &c,
                    wanted,
                ));
            }
        }
        pipeline_targets.push(verified_target(&bucket, &summaries, corpus_bytes));
        rows.extend(local_rows);
        pipelines.extend(summaries);
    }
    drop(tmpfs_scratch);
    println!("bench: the workers alone on the corpus's chunks");
    let whole_files = rows
        .iter()
        .find(|r| r.name.starts_with("panini auto cpu") && r.name.ends_with("(in-process)"))
        .map(|r| r.mb_per_s);
    let (worker_rows, worker_target) = worker_alone_stage(&files, args.pipeline_runs, whole_files)?;
    rows.extend(worker_rows);
    pipeline_targets.push(worker_target);
    match &emulator_binary {
        Some(binary) => {
            println!("bench: pipeline to the GCS emulator");
            let emulator = gcs_emulator::Emulator::start(binary, &[TEST_BUCKET])?;
            let (gcs_rows, summaries) = pipeline_stage(
                &exe,
                &files,
                scratch.path(),
                Some(&emulator.endpoint()),
                args.pipeline_runs,
                "pipeline (emulator)",
            )?;
            drop(emulator);
            let peer = "zstd -1 -T0 + rclone copy";
            if let Some(c) = compare(&mut comparisons, &gcs_rows, "panini pipeline", peer) {
                pipeline_targets.push(ratio_target(
                    &format!("pipeline (emulator) ≥ 1× {peer}"),
                    &c,
                    1.0,
                ));
            }
            pipeline_targets.push(verified_target("GCS emulator", &summaries, corpus_bytes));
            rows.extend(gcs_rows);
            pipelines.extend(summaries);
        }
        None => skipped.push("pipeline (emulator) (--no-emulator)".to_owned()),
    }
    targets.extend(pipeline_targets);

    if args.small_files > 0 {
        let stage = format!("pipeline ({} small files)", thousands(args.small_files));
        println!("bench: {stage}");
        let (small_rows, summaries) =
            small_files_stage(&exe, &stage, args.small_files, args.pipeline_runs)?;
        if let Some(c) = compare(
            &mut comparisons,
            &small_rows,
            "panini pipeline DIR",
            "restic backup",
        ) {
            targets.push(ratio_target(
                &format!(
                    "pipeline DIR on {} small files ≥ 0.5× restic backup",
                    thousands(args.small_files)
                ),
                &c,
                0.5,
            ));
        }
        rows.extend(small_rows);
        pipelines.extend(summaries);
    } else {
        skipped.push("many small files (--small-files 0)".to_owned());
    }

    if memory_gib.is_empty() {
        skipped.push("memory (--no-memory or an empty --memory-gib)".to_owned());
    } else {
        println!("bench: memory");
        let memory = memory_stage(
            &exe,
            &out.join("memory"),
            scratch.path(),
            &memory_gib,
            args.pipeline_runs,
        )?;
        compare(
            &mut comparisons,
            &memory.rows,
            &memory.smallest_pipeline,
            &memory.smallest_restic,
        );
        rows.extend(memory.rows);
        targets.extend(memory.targets);
        pipelines.extend(memory.summaries);
        skipped.extend(memory.skipped);
    }
    drop(scratch);

    if let Some(script) = &seed_detect {
        println!("bench: detect");
        let detect_rows = detect_stage(args.detect_chunks, args.runs, script)?;
        if let Some(c) = compare(
            &mut comparisons,
            &detect_rows,
            "panini detect",
            "detect_pending_chunks.py (seed)",
        ) {
            targets.push(TargetRow {
                target: "detect ≥ 20× the seed script".into(),
                source: "issue #17",
                wanted: "≥ 20× the seed script's chunks/s".into(),
                measured: format!(
                    "{:.0} vs {:.0} chunks/s = {:.1}×; the format's system calls alone \
                     {:.0} chunks/s = {:.1}×",
                    detect_rows[0].chunks_per_s.unwrap_or(0.0),
                    detect_rows[1].chunks_per_s.unwrap_or(0.0),
                    c.ratio,
                    detect_rows[2].chunks_per_s.unwrap_or(0.0),
                    detect_rows[1].median_s / detect_rows[2].median_s,
                ),
                met: c.ratio >= 20.0,
            });
        }
        rows.extend(detect_rows);
    } else {
        skipped.push("detect (--detect-chunks 0)".to_owned());
    }

    let report = Report {
        machine: machine(loadavg_start, &out, rss_floor),
        corpus_mib: args.corpus_mib,
        corpus_files: corpus
            .iter()
            .map(|(p, n)| json!({"file": p.file_name().map(|n| n.to_string_lossy()), "bytes": n}))
            .collect(),
        runs: args.runs,
        pipeline_runs: args.pipeline_runs,
        rows,
        comparisons,
        targets,
        pipelines,
        memory_gib,
        small_files: args.small_files,
        detect_chunks: args.detect_chunks,
        skipped,
    };
    let md = markdown(&report);
    let md_path = out.join("report.md");
    let json_path = out.join("report.json");
    let svg_path = out.join("report.svg");
    chunk_model::json_file::write_bytes_atomic(&md_path, md.as_bytes())
        .with_context(|| format!("writing {}", md_path.display()))?;
    chunk_model::json_file::write_atomic(&json_path, &report)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let svg = chart(&report.rows)?;
    chunk_model::json_file::write_bytes_atomic(&svg_path, svg.as_bytes())
        .with_context(|| format!("writing {}", svg_path.display()))?;
    println!(
        "\n{md}\nwrote {}, {} and {}",
        md_path.display(),
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

/// Chunker throughput on the corpus (semantic and size strategies, the chunk tree written
/// unsynced to the scratch disk) beside `split -b 1M` writing the same bytes as pieces.
fn chunk_stage(
    files: &[PathBuf],
    bytes: u64,
    scratch: &Path,
    runs: usize,
) -> anyhow::Result<Vec<Row>> {
    let strategies = [Strategy::Semantic, Strategy::Size];
    let mut panini: Vec<Vec<f64>> = vec![Vec::new(); strategies.len()];
    let mut peer: Vec<Measured> = Vec::new();
    // Rounds interleave the tools so load from elsewhere spreads over every row.
    for _ in 0..runs {
        for (i, strategy) in strategies.iter().enumerate() {
            let output = tempfile::tempdir_in(scratch).context("creating a chunk tree dir")?;
            let options = ChunkOptions {
                config: ChunkerConfig {
                    strategy: *strategy,
                    ..ChunkerConfig::default()
                },
                sync: false,
                ..ChunkOptions::new(output.path())
            };
            let start = Instant::now();
            for file in files {
                chunker::chunk_file(file, &options)
                    .with_context(|| format!("chunking {}", file.display()))?;
            }
            panini[i].push(start.elapsed().as_secs_f64());
        }
        let output = tempfile::tempdir_in(scratch).context("creating a split dir")?;
        let mut run = Measured::default();
        for file in files {
            let name = file.file_name().context("corpus file name")?;
            let mut prefix = output.path().join(name).into_os_string();
            prefix.push(".");
            let mut split = Command::new("split");
            split
                .args(["-b", "1048576", "-a", "4", "-d"])
                .arg(file)
                .arg(&prefix);
            run.add(&run_measured(&mut split)?);
        }
        peer.push(run);
    }
    let mut rows: Vec<Row> = strategies
        .iter()
        .zip(panini)
        .map(|(strategy, runs_s)| {
            Row::new(
                "chunk",
                format!("panini chunk {strategy}"),
                false,
                bytes,
                runs_s,
            )
            .note("plan, SHA-256 per chunk, data.bin + metadata.json + manifest.json, unsynced")
        })
        .collect();
    rows.push(
        Row::measured("chunk", "split -b 1M", true, bytes, &peer)
            .note("writes the same bytes as 1 MiB pieces; no hashing, no metadata"),
    );
    Ok(rows)
}

/// The compress benchmark's totals as rows, grouped by codec for the chart.
fn compress_rows(totals: &[crate::bench_compress::Total]) -> Vec<Row> {
    totals
        .iter()
        .map(|t| {
            let peer = t.kind == "command";
            let stage = if t.tool.contains("zstd") {
                "compress zstd"
            } else if t.tool.contains("auto") {
                "compress auto"
            } else {
                "compress lz4"
            };
            let name = match t.kind {
                "panini in-process" => format!("{} (in-process)", t.tool),
                "panini command" => format!("{} (command)", t.tool),
                _ => t.tool.clone(),
            };
            // The compress benchmark reports MB/s over the sum of per-file medians, not
            // whole runs, so the row carries that median and no run list.
            let mut row = Row::new(stage, name, peer, t.input_bytes as u64, Vec::new());
            row.median_s = t.input_bytes as f64 / 1e6 / t.mb_per_s;
            row.mb_per_s = t.mb_per_s;
            row.note(format!(
                "ratio {:.3}; sum of per-file medians{}",
                t.ratio,
                if peer || t.kind == "panini command" {
                    ", whole command (read, compress, write)"
                } else {
                    ", library call on data in memory"
                }
            ))
        })
        .collect()
}

/// The dispatch benchmark (a local worker over HTTP) as rows; MB/s counts chunk bytes.
fn dispatch_stage(args: &Args) -> anyhow::Result<Vec<Row>> {
    let chunk_size = args.dispatch_chunk_kib << 10;
    let dispatch_args = crate::bench_dispatch::Args {
        chunks: args.dispatch_chunks,
        chunk_size,
        batch_size: 100,
        output: PathBuf::new(),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let outcome = runtime.block_on(crate::bench_dispatch::measure(&dispatch_args))?;
    for phase in [&outcome.bare, &outcome.batch, &outcome.per_chunk] {
        ensure!(
            phase.accepted == args.dispatch_chunks,
            "dispatch: {} of {} chunks accepted",
            phase.accepted,
            args.dispatch_chunks
        );
    }
    let n = args.dispatch_chunks;
    let bytes = (n * chunk_size) as u64;
    let row = |name: &str, peer: bool, secs: f64, note: &str| {
        let mut row = Row::new("dispatch", name, peer, bytes, vec![secs]).note(format!(
            "{n} chunks of {} KiB to a local worker; {note}",
            args.dispatch_chunk_kib
        ));
        row.chunks_per_s = Some(n as f64 / secs);
        row
    };
    let mut rows = vec![
        row(
            "panini dispatch batch",
            false,
            outcome.batch.dispatch_secs,
            "100 chunks per request, metadata.json updated per chunk",
        ),
        row(
            "panini dispatch batch, no metadata",
            false,
            outcome.bare.dispatch_secs,
            "100 chunks per request, HTTP only",
        ),
        row(
            "panini worker drain",
            false,
            outcome.batch.drained_secs,
            "until the worker had compressed and stored every chunk",
        ),
        row(
            "per-chunk POST (original design)",
            true,
            outcome.per_chunk.dispatch_secs,
            "one request per chunk, metadata.json updated per chunk",
        ),
    ];
    // The ceiling, when nginx is installed: the same dispatcher against a server that
    // does nothing but answer 202, so the worker's own cost shows.
    if let Some(peer) = &outcome.peer_202 {
        rows.push(row(
            "batch to nginx answering 202 (ceiling)",
            true,
            peer.dispatch_secs,
            "100 chunks per request, metadata.json updated per chunk, no worker behind it",
        ));
    }
    Ok(rows)
}

/// Runs `xtask pipeline --json` on the corpus `runs` times (a fresh work directory and
/// bucket prefix each) and the peers beside it: `zstd -1 -T0` of each file into the bucket
/// directory, or to a staging directory and then `rclone copy` to the same emulator; and,
/// to a local bucket, `restic backup` into a fresh repository.
fn pipeline_stage(
    exe: &Path,
    files: &[PathBuf],
    scratch: &Path,
    endpoint: Option<&str>,
    runs: usize,
    stage: &str,
) -> anyhow::Result<(Vec<Row>, Vec<Value>)> {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut restic = Vec::new();
    let mut summaries = Vec::new();
    let mut bytes_in = 0;
    for run in 0..runs {
        let work = tempfile::tempdir_in(scratch).context("creating a pipeline work dir")?;
        let mut extra = Vec::new();
        if let Some(endpoint) = endpoint {
            extra.extend([
                "--bucket".to_owned(),
                format!("gs://{TEST_BUCKET}/bench-pipeline-{run}"),
                "--endpoint".to_owned(),
                endpoint.to_owned(),
            ]);
        }
        let (measured, summary) = run_pipeline(
            exe,
            work.path(),
            extra
                .iter()
                .map(OsStr::new)
                .chain(files.iter().map(|f| f.as_os_str())),
        )?;
        bytes_in = summary["bytes_in"]
            .as_u64()
            .context("the pipeline summary has no bytes_in")?;
        summaries.push(measured.summary_entry(stage, run, summary));
        ours.push(measured);
        drop(work);

        let staging = tempfile::tempdir_in(scratch).context("creating a peer dir")?;
        let mut peer = Measured::default();
        for file in files {
            let name = file.file_name().context("corpus file name")?;
            let mut target = staging.path().join(name).into_os_string();
            target.push(".zst");
            let mut zstd = Command::new("zstd");
            zstd.args(["-1", "-T0", "-f", "-q"])
                .arg(file)
                .arg("-o")
                .arg(&target);
            peer.add(&run_measured(&mut zstd)?);
        }
        if let Some(endpoint) = endpoint {
            let config = staging.path().join("rclone.conf");
            std::fs::write(
                &config,
                format!(
                    "[emu]\ntype = google cloud storage\nanonymous = true\nendpoint = {endpoint}\nbucket_policy_only = true\nproject_number = test\n"
                ),
            )
            .with_context(|| format!("writing {}", config.display()))?;
            let mut rclone = Command::new("rclone");
            rclone
                .arg("--config")
                .arg(&config)
                .arg("copy")
                .arg(staging.path())
                .arg(format!("emu:{TEST_BUCKET}/bench-peer-{run}"))
                .args([
                    "--include",
                    "*.zst",
                    "--transfers",
                    "8",
                    "--gcs-no-check-bucket",
                ]);
            peer.add(&run_measured(&mut rclone)?);
        }
        theirs.push(peer);
        drop(staging);

        if endpoint.is_none() {
            let repo = tempfile::tempdir_in(scratch).context("creating a restic dir")?;
            restic.push(restic_backup(repo.path(), files)?);
        }
    }
    let engine = summaries
        .first()
        .and_then(|s| s["summary"]["engine"].as_str())
        .unwrap_or("?")
        .to_owned();
    let mut rows = vec![
        Row::measured(stage, "panini pipeline", false, bytes_in, &ours).note(format!(
            "engine {engine}; chunk, detect, dispatch, compress, upload, sync, rebuild and verify every file"
        )),
        Row::measured(
            stage,
            if endpoint.is_some() {
                "zstd -1 -T0 + rclone copy"
            } else {
                "zstd -1 -T0 into the bucket directory"
            },
            true,
            bytes_in,
            &theirs,
        )
        .note("compress and store only: no chunks, no dedup, no rebuild or verify; peak RSS of the largest process"),
    ];
    if !restic.is_empty() {
        rows.push(Row::measured(stage, "restic backup", true, bytes_in, &restic).note(RESTIC_NOTE));
    }
    Ok((rows, summaries))
}

/// Options of `cargo xtask bench worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Size of the generated corpus (the one `cargo xtask bench` uses, kept in
    /// target/bench/corpus/).
    #[arg(long, default_value_t = 256)]
    corpus_mib: usize,
    /// Runs of the worker, each with a fresh worker and bucket.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// `cargo xtask bench worker`: [`worker_alone_stage`] on its own, printed.
pub fn run_worker_alone(args: WorkerArgs) -> anyhow::Result<()> {
    ensure!(
        args.corpus_mib > 0 && args.runs > 0,
        "--corpus-mib and --runs must be positive"
    );
    let corpus_dir = crate::bench_compress::crate_target_dir().join("bench/corpus");
    std::fs::create_dir_all(&corpus_dir)
        .with_context(|| format!("creating {}", corpus_dir.display()))?;
    let corpus = crate::bench_compress::write_corpus(&corpus_dir, args.corpus_mib << 20)?;
    let files: Vec<PathBuf> = corpus.into_iter().map(|(path, _)| path).collect();
    let (rows, target) = worker_alone_stage(&files, args.runs, None)?;
    for row in &rows {
        let runs: Vec<String> = row.runs_s.iter().map(|s| format!("{s:.3}")).collect();
        println!(
            "{}: {:.3} s median ({} s), {:.1} MB/s; {}",
            row.name,
            row.median_s,
            runs.join(", "),
            row.mb_per_s,
            row.note
        );
    }
    let verdict = if target.met { "met" } else { "MISSED" };
    println!("{}: {} → {verdict}", target.target, target.measured);
    Ok(())
}

/// The bound on the workers: their compress+upload stage at most 1.5× the time
/// in-process compression takes for the same bytes. Inside a pipeline that stage is a
/// span shared with the chunking of later files and the rebuilding of earlier ones, so
/// the workers are measured alone here: the corpus's chunks (tree and bucket on tmpfs)
/// sent at once to one worker, timed until every chunk is read, checked, compressed,
/// verified, hashed and stored; beside `gpu-compress` on the same chunks in the
/// worker's batches, with and without the verifying decode, and (given the compress
/// stage's MB/s of `auto` on whole files) beside that too.
fn worker_alone_stage(
    files: &[PathBuf],
    runs: usize,
    whole_files_mb_per_s: Option<f64>,
) -> anyhow::Result<(Vec<Row>, TargetRow)> {
    let (dir, fs) = small_files_dir().context("creating a tmpfs scratch directory")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (phases, in_process) =
        runtime.block_on(crate::bench_dispatch::worker_alone(files, dir.path(), runs))?;
    let stage = format!("workers alone (tree and bucket on {fs})");
    let chunks = phases.first().map_or(0, |p| p.accepted);
    // Chunks of the same content as one before are found stored, not compressed: the
    // worker's bytes are those it compressed, and the compressor's time is scaled to them.
    let worker_bytes = phases.iter().map(|p| p.bytes_in).max().unwrap_or(0);
    let drained = Row::new(
        &stage,
        "panini worker drain",
        false,
        worker_bytes,
        phases.iter().map(|p| p.drained_secs).collect(),
    )
    .note(format!(
        "{chunks} chunks of the corpus to one worker at once; read, SHA-256 check, \
         compress, decode to verify, frame hash, store, report{}",
        cpu_note(phases.iter().map(|p| p.cpu_secs))
    ));
    let share = worker_bytes as f64 / in_process.bytes_in.max(1) as f64;
    let compressor = |name: &str, seconds: f64, what: &str| {
        Row::new(&stage, name, false, worker_bytes, vec![seconds * share]).note(format!(
            "gpu-compress in this process on the same chunks in the worker's batches \
             ({} engine, {} threads){what}; data in memory",
            in_process.engine, in_process.threads
        ))
    };
    let plain = compressor(
        "in-process compression",
        in_process.compress_secs,
        &cpu_note([in_process.compress_cpu_secs.map(|s| s * share)]),
    );
    let verified = compressor(
        "in-process compression with verify",
        in_process.compress_verify_secs,
        &format!(
            ", each frame decoded and compared{}",
            cpu_note([in_process.compress_verify_cpu_secs.map(|s| s * share)])
        ),
    );
    let ratio = drained.median_s / plain.median_s;
    // Whole files make one frame each (zstd on both cores within a frame): fewer, larger
    // frames than the worker's chunks, so a lower bound rather than the same work.
    let whole_files = whole_files_mb_per_s.map_or(String::new(), |mb_per_s| {
        let seconds = worker_bytes as f64 / 1e6 / mb_per_s;
        format!(", {:.2}× `auto` on whole files", drained.median_s / seconds)
    });
    let target = TargetRow {
        target: "workers alone: compress+upload ≤ 1.5× in-process compression".into(),
        source: "issue #17",
        wanted: "drain time ≤ 1.5× in-process compression of the same bytes".into(),
        measured: format!(
            "{:.2} s for {:.1} MiB vs {:.2} s = {ratio:.2}× ({:.2}× compression with \
             verify{whole_files}; tree and bucket on {fs})",
            drained.median_s,
            worker_bytes as f64 / f64::from(1 << 20),
            plain.median_s,
            drained.median_s / verified.median_s,
        ),
        met: ratio <= 1.5,
    };
    Ok((vec![drained, plain, verified], target))
}

/// `; N CPU-s` (the median of `cpu_secs`), or nothing where the CPU time was not read.
fn cpu_note(cpu_secs: impl IntoIterator<Item = Option<f64>>) -> String {
    let cpu: Option<Vec<f64>> = cpu_secs.into_iter().collect();
    match cpu {
        Some(cpu) if !cpu.is_empty() => format!("; {:.2} CPU-s", median(&cpu)),
        _ => String::new(),
    }
}

/// What a restic row did.
const RESTIC_NOTE: &str = "`restic backup --compression auto` into a fresh local repository (init untimed): \
     content-defined chunks, dedup, zstd, encryption; no rebuild or verify";

/// The pipeline target: every corpus byte went in and every file was rebuilt and verified.
fn verified_target(bucket: &str, summaries: &[Value], corpus_bytes: u64) -> TargetRow {
    let files: Vec<&Value> = summaries
        .iter()
        .flat_map(|s| s["summary"]["files"].as_array().into_iter().flatten())
        .collect();
    let verified = files
        .iter()
        .filter(|f| f["verified"].as_bool() == Some(true))
        .count();
    let all_in = summaries
        .iter()
        .all(|s| s["summary"]["bytes_in"].as_u64() == Some(corpus_bytes));
    TargetRow {
        target: format!("whole pipeline on the corpus, {bucket}"),
        source: "issue (≥ 1 GiB end to end)",
        wanted: "every byte in, every file rebuilt from the bucket and verified".into(),
        measured: format!(
            "{verified}/{} files verified, {:.1} MiB in per run",
            files.len(),
            corpus_bytes as f64 / f64::from(1 << 20)
        ),
        met: all_in && !files.is_empty() && verified == files.len(),
    }
}

/// Adds Panini's row `ours` beside the peer row `peer` of `rows`, when both were measured.
fn compare(
    comparisons: &mut Vec<Comparison>,
    rows: &[Row],
    ours: &str,
    peer: &str,
) -> Option<Comparison> {
    let o = rows.iter().find(|r| r.name == ours)?;
    let p = rows.iter().find(|r| r.name == peer)?;
    // Chunk counts are what dispatch is about; elsewhere bytes.
    let ratio = match (o.chunks_per_s, p.chunks_per_s) {
        (Some(a), Some(b)) => a / b,
        _ => o.mb_per_s / p.mb_per_s,
    };
    let c = Comparison {
        stage: o.stage.clone(),
        ours: o.name.clone(),
        ours_mb_per_s: o.mb_per_s,
        peer: p.name.clone(),
        peer_mb_per_s: p.mb_per_s,
        ratio,
    };
    comparisons.push(c.clone());
    Some(c)
}

fn markdown(r: &Report) -> String {
    let m = &r.machine;
    let mut md = format!(
        "# Panini benchmark report\n\n\
         Every stage and the whole pipeline on one generated corpus of {} MiB, beside the \
         reference tools on the same data in the same run; {} runs per measurement (median), \
         {} of the whole pipeline. MB/s are 10^6 bytes per second of input.\n\n\
         ![MB/s per stage, Panini vs peers](report.svg)\n\n\
         ## Machine\n\n\
         | | |\n|---|---|\n\
         | date | {} |\n| git commit | {}{} |\n| CPU threads | {} |\n| CPU | {} |\n\
         | memory | {} |\n| load (1/5/15 min) at start | {} |\n| load at end | {} |\n\
         | filesystem of the temporary directory (dispatch trees) | {} |\n\
         | filesystem of the output directory | {} |\n\
         | peak RSS of `true` when measured (the least any peak RSS below can be) | {:.1} MiB |\n\n",
        r.corpus_mib,
        r.runs,
        r.pipeline_runs,
        m.date,
        m.git_commit,
        if m.git_dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        m.cpu_threads,
        m.cpu_model,
        m.memory_total,
        m.loadavg_start,
        m.loadavg_end,
        m.temp_filesystem,
        m.out_filesystem,
        m.peak_rss_floor_mib,
    );
    md += "## Per stage: Panini beside the peer\n\n\
           | stage | Panini | MB/s | peer | MB/s | Panini / peer |\n|---|---|---:|---|---:|---:|\n";
    for c in &r.comparisons {
        md += &format!(
            "| {} | {} | {} | {} | {} | {:.2}× |\n",
            c.stage,
            c.ours,
            rate(c.ours_mb_per_s),
            c.peer,
            rate(c.peer_mb_per_s),
            c.ratio
        );
    }
    md += "\n## Targets\n\n| target | source | wanted | measured | |\n|---|---|---|---|---|\n";
    for t in &r.targets {
        md += &format!(
            "| {} | {} | {} | {} | **{}** |\n",
            t.target,
            t.source,
            t.wanted,
            t.measured,
            if t.met { "met" } else { "MISSED" }
        );
    }
    md += "\n## Every measurement\n\n\
           | stage | tool | peer | MiB in | median s | MB/s | chunks/s | peak RSS MiB | runs (s) | note |\n\
           |---|---|---|---:|---:|---:|---:|---:|---|---|\n";
    for row in &r.rows {
        md += &format!(
            "| {} | {} | {} | {:.1} | {:.3} | {} | {} | {} | {} | {} |\n",
            row.stage,
            row.name,
            if row.peer { "peer" } else { "" },
            row.bytes as f64 / f64::from(1 << 20),
            row.median_s,
            rate(row.mb_per_s),
            row.chunks_per_s
                .map(|c| format!("{c:.0}"))
                .unwrap_or_default(),
            row.peak_rss_mib
                .map(|m| format!("{m:.0}"))
                .unwrap_or_default(),
            row.runs_s
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            row.note
        );
    }
    if !r.pipelines.is_empty() {
        md += "\n## Inside the pipeline (its own stage timings)\n\n\
               | run | stage | seconds | MiB | MB/s | note |\n|---|---|---:|---:|---:|---|\n";
        for p in &r.pipelines {
            let label = format!("{} #{}", p["stage"].as_str().unwrap_or("?"), p["run"]);
            for s in p["summary"]["stages"].as_array().into_iter().flatten() {
                md += &format!(
                    "| {label} | {} | {:.2} | {:.1} | {:.1} | {} |\n",
                    s["stage"].as_str().unwrap_or("?"),
                    s["seconds"].as_f64().unwrap_or(0.0),
                    s["bytes"].as_u64().unwrap_or(0) as f64 / f64::from(1 << 20),
                    s["mb_per_s"].as_f64().unwrap_or(0.0),
                    s["note"].as_str().unwrap_or("")
                );
            }
        }
    }
    md += "\n## Corpus\n\n| file | MiB |\n|---|---:|\n";
    for f in &r.corpus_files {
        md += &format!(
            "| {} | {:.1} |\n",
            f["file"].as_str().unwrap_or("?"),
            f["bytes"].as_u64().unwrap_or(0) as f64 / f64::from(1 << 20)
        );
    }
    if !r.skipped.is_empty() {
        md += &format!("\nSkipped: {}.\n", r.skipped.join(", "));
    }
    md += "\nStage details: `compress.md`, `upload.md` (and their JSON) beside this file.\n";
    md
}

/// MB/s for a table; a dash where the row counts no bytes (detect).
fn rate(mb_per_s: f64) -> String {
    if mb_per_s.is_finite() {
        format!("{mb_per_s:.1}")
    } else {
        "–".into()
    }
}

/// A grouped bar chart (log scale): one group per stage, one bar per Panini engine or peer
/// (the rows with a throughput in MB/s).
fn chart(rows: &[Row]) -> anyhow::Result<String> {
    use plotters::prelude::*;

    let rows: Vec<&Row> = rows.iter().filter(|r| r.mb_per_s.is_finite()).collect();

    // Stages sit at multiples of GROUP on an integer axis (plotters labels integer axes
    // at chosen key points; float axes it labels only where it likes).
    const GROUP: i32 = 1000;
    ensure!(!rows.is_empty(), "nothing was measured");
    let mut stages: Vec<&str> = Vec::new();
    let mut names: Vec<(&str, bool)> = Vec::new();
    for row in rows.iter().copied() {
        if !stages.contains(&row.stage.as_str()) {
            stages.push(&row.stage);
        }
        if !names.iter().any(|(n, _)| *n == row.name) {
            names.push((&row.name, row.peer));
        }
    }
    let finite = || {
        rows.iter()
            .map(|r| r.mb_per_s)
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let top = finite().fold(1.0, f64::max) * 3.0;
    let bottom = (finite().fold(f64::MAX, f64::min) / 2.0).clamp(0.01, 1.0);
    // (stage index, position in the stage, bars in the stage, MB/s) per series.
    let bars = |name: &str| -> Vec<(i32, i32, i32, f64)> {
        stages
            .iter()
            .enumerate()
            .filter_map(|(si, stage)| {
                let in_stage: Vec<&Row> =
                    rows.iter().copied().filter(|r| r.stage == *stage).collect();
                let pos = in_stage.iter().position(|r| r.name == name)?;
                Some((
                    si as i32,
                    pos as i32,
                    in_stage.len() as i32,
                    in_stage[pos].mb_per_s,
                ))
            })
            .collect()
    };
    let x_of = |si: i32, pos: i32, count: i32| {
        let width = GROUP * 8 / 10 / count;
        let x0 = si * GROUP + GROUP / 10 + width * pos;
        (x0, x0 + width * 9 / 10)
    };
    // Panini's engines in colour, the peers in shades of grey, so a group reads at a glance.
    let styles: Vec<ShapeStyle> = {
        let (mut ours, mut peers) = (0, 0);
        names
            .iter()
            .map(|(_, peer)| {
                if *peer {
                    let grey = 90 + (peers * 37 % 140) as u8;
                    peers += 1;
                    RGBColor(grey, grey, grey).filled()
                } else {
                    ours += 1;
                    Palette99::pick(ours - 1).filled()
                }
            })
            .collect()
    };

    let mut svg = String::new();
    {
        let height = 720.max(60 + 22 * names.len() as u32);
        let area = SVGBackend::with_string(&mut svg, (1600, height)).into_drawing_area();
        area.fill(&WHITE).map_err(plot_error)?;
        let (plot, legend) = area.split_horizontally(1120);
        let key_points: Vec<i32> = (0..stages.len() as i32)
            .map(|i| i * GROUP + GROUP / 2)
            .collect();
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                "Panini vs peers: MB/s per stage (same corpus, same run)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (0..stages.len() as i32 * GROUP).with_key_points(key_points),
                (bottom..top).log_scale(),
            )
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| {
                stages
                    .get((*x / GROUP) as usize)
                    .map(|s| (*s).to_owned())
                    .unwrap_or_default()
            })
            .y_desc("MB/s (log scale)")
            .draw()
            .map_err(plot_error)?;
        for (ni, (name, _)) in names.iter().enumerate() {
            let style = styles[ni];
            let bars = bars(name);
            chart
                .draw_series(bars.iter().map(|&(si, pos, count, value)| {
                    let (x0, x1) = x_of(si, pos, count);
                    Rectangle::new([(x0, bottom), (x1, value.max(bottom))], style)
                }))
                .map_err(plot_error)?;
            chart
                .draw_series(bars.iter().map(|&(si, pos, count, value)| {
                    let (x0, _) = x_of(si, pos, count);
                    Text::new(
                        format!("{value:.0}"),
                        (x0, value.max(bottom) * 1.25),
                        ("sans-serif", 10),
                    )
                }))
                .map_err(plot_error)?;
        }
        // The legend beside the plot: a dozen or more series would cover the bars.
        for (ni, (name, peer)) in names.iter().enumerate() {
            let y = 50 + 22 * ni as i32;
            legend
                .draw(&Rectangle::new([(10, y), (26, y + 12)], styles[ni]))
                .map_err(plot_error)?;
            let label = if *peer {
                format!("{name} (peer)")
            } else {
                (*name).to_owned()
            };
            legend
                .draw(&Text::new(label, (32, y), ("sans-serif", 13)))
                .map_err(plot_error)?;
        }
        area.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn plot_error<E: std::error::Error + Send + Sync + 'static>(
    e: plotters::drawing::DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

fn machine(loadavg_start: String, out: &Path, peak_rss_floor_kib: u64) -> Machine {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(crate::codegen::project_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let proc_field = |file: &str, key: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into())
    };
    Machine {
        date: chrono::Utc::now().to_rfc3339(),
        git_commit: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
        git_dirty: git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty()),
        cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: proc_field("/proc/cpuinfo", "model name"),
        memory_total: proc_field("/proc/meminfo", "MemTotal"),
        loadavg_start,
        loadavg_end: loadavg(),
        temp_filesystem: filesystem(&std::env::temp_dir()),
        out_filesystem: filesystem(out),
        peak_rss_floor_mib: kib_to_mib(peak_rss_floor_kib),
    }
}

/// A temporary directory for a benchmark of many small files, and its filesystem (for
/// the report): under `$PANINI_BENCH_DIR`, else tmpfs (`/dev/shm`), else the system's
/// temporary directory. Not the VM's root by default: it is ext4 without a journal,
/// which makes every rewrite of a small file dearer (docs/OPERATIONS.md).
pub(crate) fn small_files_dir() -> anyhow::Result<(tempfile::TempDir, String)> {
    let parent = std::env::var_os("PANINI_BENCH_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|d| d.is_dir()))
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&parent)?;
    let filesystem = filesystem(work.path());
    Ok((work, filesystem))
}

/// The filesystem holding `path`, as `/dev/vda ext4 (no journal)`, from
/// `/proc/self/mountinfo`; `unknown` where that cannot be read. An ext4 without a
/// journal is named as such: it delays reusing deleted inodes and scans past them on
/// every allocation, which slows the stages that rewrite many small files
/// (docs/OPERATIONS.md).
pub(crate) fn filesystem(path: &Path) -> String {
    let (Ok(real), Ok(mounts)) = (
        std::fs::canonicalize(path),
        std::fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return "unknown".into();
    };
    // `id parent major:minor root mount-point options… - fstype source super-options`;
    // the deepest mount point holding the path wins, the last mounted among equals.
    let Some((_, fstype, source)) = mounts
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let (fstype, source) = (right.next()?, right.next()?);
            real.starts_with(mount_point)
                .then_some((mount_point.len(), fstype, source))
        })
        .max_by_key(|(depth, ..)| *depth)
    else {
        return "unknown".into();
    };
    let device = source.rsplit('/').next().unwrap_or(source);
    let journal = std::fs::read_to_string(format!("/sys/fs/ext4/{device}/journal_task"));
    match journal {
        Ok(task) if fstype == "ext4" && task.trim() == "<none>" => {
            format!("{source} {fstype} (no journal)")
        }
        // A memory filesystem's source is its type again: `tmpfs`, not `tmpfs tmpfs`.
        _ if source == fstype => fstype.to_owned(),
        _ => format!("{source} {fstype}"),
    }
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn which(program: &str, arg: &str) -> anyhow::Result<()> {
    match Command::new(program).arg(arg).output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!("`{program}` is not installed; the benchmark runs it beside Panini"),
    }
}

/// A child process's wall-clock seconds, peak resident memory and output; or the sum of
/// the seconds and the largest peak of several run one after the other ([`Measured::add`]).
#[derive(Debug, Default)]
pub(crate) struct Measured {
    pub seconds: f64,
    /// `ru_maxrss` from `wait4`, in KiB: the child's peak resident memory, or that of a
    /// process it started and waited for, whichever is larger.
    pub peak_rss_kib: u64,
    pub stdout: Vec<u8>,
}

impl Measured {
    /// The report's entry for pipeline run `run` (from 0) of `stage`, which printed
    /// `summary`.
    fn summary_entry(&self, stage: impl Into<String>, run: usize, summary: Value) -> Value {
        json!({
            "stage": stage.into(),
            "run": run + 1,
            "wall_s": self.seconds,
            "peak_rss_kib": self.peak_rss_kib,
            "summary": summary,
        })
    }

    /// Counts `other`, run after the ones already counted, into this run.
    fn add(&mut self, other: &Measured) {
        self.seconds += other.seconds;
        self.peak_rss_kib = self.peak_rss_kib.max(other.peak_rss_kib);
    }
}

/// Runs `command` (stdin empty, stdout and stderr captured): the seconds from its spawn to
/// its exit, its peak resident memory and its stdout. Fails, with its stderr, unless it
/// exits successfully.
///
/// It is started by `xtask bench measure-child` ([`measure_child`]), which waits for it
/// with `wait4`. Not from here: Linux starts a process's `ru_maxrss` at the peak resident
/// memory of the one that spawned it (the memory it forked, or for `posix_spawn`, which
/// shares it, the spawner's own peak, kept through `exec`), so every child of this
/// process, holding corpora of hundreds of MiB, would report at least that. A launcher
/// just started holds a few MiB; [`rss_floor_kib`] measures how many.
pub(crate) fn run_measured(command: &mut Command) -> anyhow::Result<Measured> {
    let report = tempfile::NamedTempFile::new().context("creating a report file")?;
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut launcher = Command::new(exe);
    launcher
        .args(["bench", "measure-child", "--report"])
        .arg(report.path())
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::null());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => launcher.env(key, value),
            None => launcher.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        launcher.current_dir(dir);
    }
    let output = launcher
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let measured: ChildReport = serde_json::from_slice(
        &std::fs::read(report.path()).context("reading the measure-child report")?,
    )
    .context("reading the measure-child report")?;
    Ok(Measured {
        seconds: measured.seconds,
        peak_rss_kib: measured.peak_rss_kib,
        stdout: output.stdout,
    })
}

/// What `xtask bench measure-child` found out about its child.
#[derive(Debug, Serialize, serde::Deserialize)]
struct ChildReport {
    seconds: f64,
    peak_rss_kib: u64,
}

/// Options of `xtask bench measure-child`, [`run_measured`]'s launcher.
#[derive(Debug, clap::Args)]
pub struct MeasureChildArgs {
    /// Where to write the child's seconds and peak resident memory (JSON).
    #[arg(long)]
    report: PathBuf,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<std::ffi::OsString>,
}

/// Runs the command with this process's standard streams, environment and directory,
/// waits for it with `wait4`, writes its seconds and `ru_maxrss` to the report, and
/// fails unless it exited successfully.
pub fn measure_child(args: MeasureChildArgs) -> anyhow::Result<()> {
    let (program, rest) = args.command.split_first().context("no command")?;
    let start = Instant::now();
    let child = Command::new(program)
        .args(rest)
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    let pid = libc::pid_t::try_from(child.id()).context("a process id out of range")?;
    let (status, peak_rss_kib) = wait4(pid).context("waiting for the child")?;
    let seconds = start.elapsed().as_secs_f64();
    // `wait4` reaped it: its `Child` must not be waited on again (dropping it does not).
    drop(child);
    let report = serde_json::to_vec(&ChildReport {
        seconds,
        peak_rss_kib,
    })?;
    std::fs::write(&args.report, report)
        .with_context(|| format!("writing {}", args.report.display()))?;
    use std::os::unix::process::ExitStatusExt as _;
    let status = std::process::ExitStatus::from_raw(status);
    ensure!(
        status.success(),
        "{} failed: {status}",
        program.to_string_lossy()
    );
    Ok(())
}

/// Waits for the child `pid`: its raw wait status and peak resident memory in KiB.
fn wait4(pid: libc::pid_t) -> std::io::Result<(i32, u64)> {
    loop {
        let mut status = 0;
        // SAFETY: an all-zero `rusage` is valid (integers and `timeval`s).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `usage` are valid for writes for the whole call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            // Linux reports ru_maxrss in KiB.
            return Ok((status, u64::try_from(usage.ru_maxrss).unwrap_or(0)));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The peak resident memory the launcher alone gives a child: `true`'s, as measured.
fn rss_floor_kib() -> anyhow::Result<u64> {
    Ok(run_measured(&mut Command::new("true"))?.peak_rss_kib)
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `xtask pipeline --json --work-dir WORK ARGS…` as a child process: its measurement and
/// its JSON summary.
fn run_pipeline<'a>(
    exe: &Path,
    work: &Path,
    args: impl IntoIterator<Item = &'a OsStr>,
) -> anyhow::Result<(Measured, Value)> {
    let mut pipeline = Command::new(exe);
    pipeline
        .arg("pipeline")
        .arg("--json")
        .arg("--work-dir")
        .arg(work)
        .args(args);
    let measured = run_measured(&mut pipeline).context("running xtask pipeline")?;
    let summary: Value = serde_json::from_slice(&measured.stdout).with_context(|| {
        format!(
            "xtask pipeline --json printed no JSON summary: {}",
            String::from_utf8_lossy(&measured.stdout)
        )
    })?;
    Ok((measured, summary))
}

/// Checks that the pipeline summary lists `files` files and verified every one.
fn ensure_verified(summary: &Value, files: usize, what: &str) -> anyhow::Result<()> {
    let listed = summary["files"].as_array().map_or(&[][..], Vec::as_slice);
    let verified = listed
        .iter()
        .filter(|f| f["verified"].as_bool() == Some(true))
        .count();
    ensure!(
        listed.len() == files && verified == files,
        "the pipeline on {what} verified {verified} of {} files, {files} expected",
        listed.len()
    );
    Ok(())
}

/// `restic backup -q --compression auto` of `paths` into a fresh repository in `dir`
/// (`restic init`, untimed, first). The password is in restic's environment only.
fn restic_backup(dir: &Path, paths: &[PathBuf]) -> anyhow::Result<Measured> {
    let restic = |subcommand: &str| {
        let mut command = Command::new("restic");
        command
            .env("RESTIC_PASSWORD", RESTIC_PASSWORD)
            .env_remove("RESTIC_PASSWORD_FILE")
            .env_remove("RESTIC_PASSWORD_COMMAND")
            .arg(subcommand)
            .arg("-q")
            .arg("--repo")
            .arg(dir.join("repo"))
            .arg("--cache-dir")
            .arg(dir.join("cache"));
        command
    };
    run_measured(&mut restic("init")).context("restic init")?;
    let mut backup = restic("backup");
    backup.args(["--compression", "auto"]).args(paths);
    run_measured(&mut backup).context("restic backup")
}

/// A target of Panini's throughput over the peer's.
fn ratio_target(target: &str, c: &Comparison, wanted: f64) -> TargetRow {
    TargetRow {
        target: target.to_owned(),
        source: "issue #17",
        wanted: format!("≥ {wanted}× {}", c.peer),
        measured: format!(
            "{:.1} vs {:.1} MB/s = {:.2}×",
            c.ours_mb_per_s, c.peer_mb_per_s, c.ratio
        ),
        met: c.ratio >= wanted,
    }
}

/// 3000 as `3,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// The pipeline on a folder of `count` small files (copied to a small-files directory,
/// [`small_files_dir`], with its work directory beside them) beside `restic backup` of
/// the same folder into a fresh repository there, `runs` times each.
fn small_files_stage(
    exe: &Path,
    stage: &str,
    count: usize,
    runs: usize,
) -> anyhow::Result<(Vec<Row>, Vec<Value>)> {
    let (dir, filesystem) = small_files_dir().context("creating a small-files directory")?;
    let folder = dir.path().join("files");
    let bytes = copy_small_files(&folder, count)?;
    let note = format!(
        "{} files, {:.1} MiB (the first non-empty regular files of /usr/lib/python3.* and \
         /usr/share/doc) on {filesystem}",
        thousands(count),
        bytes as f64 / f64::from(1 << 20)
    );
    let (mut ours, mut restic, mut summaries) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let work = tempfile::tempdir_in(dir.path()).context("creating a pipeline work dir")?;
        // Hidden files and ignore rules would leave files out that restic backs up.
        let args = ["--hidden", "--no-ignore"].map(OsStr::new);
        let (measured, summary) = run_pipeline(
            exe,
            work.path(),
            args.into_iter().chain([folder.as_os_str()]),
        )?;
        ensure_verified(&summary, count, "the small files")?;
        summaries.push(measured.summary_entry(stage, run, summary));
        ours.push(measured);
        drop(work);
        let repo = tempfile::tempdir_in(dir.path()).context("creating a restic dir")?;
        restic.push(restic_backup(repo.path(), std::slice::from_ref(&folder))?);
    }
    let rows = vec![
        Row::measured(stage, "panini pipeline DIR", false, bytes, &ours).note(format!(
            "{note}; every file rebuilt and verified; work dir beside them"
        )),
        Row::measured(stage, "restic backup", true, bytes, &restic)
            .note(format!("{note}; {RESTIC_NOTE}")),
    ];
    Ok((rows, summaries))
}

/// Copies the first `count` non-empty regular files of a sorted walk of /usr/lib/python3.*
/// and /usr/share/doc (symbolic links left out, unreadable files skipped) under `dest`,
/// keeping their paths; their bytes. Empty files are left out: the pipeline skips them.
fn copy_small_files(dest: &Path, count: usize) -> anyhow::Result<u64> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .context("listing /usr/lib")?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3."))
        .map(|e| e.path())
        .collect();
    roots.sort();
    roots.push(PathBuf::from("/usr/share/doc"));
    let (mut copied, mut bytes) = (0, 0);
    for root in &roots {
        let mut stack = vec![root.clone()];
        // Depth first, each folder's entries in name order (reversed onto the stack).
        while let Some(path) = stack.pop() {
            if copied == count {
                return Ok(bytes);
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                let Ok(entries) = std::fs::read_dir(&path) else {
                    continue;
                };
                let mut children: Vec<PathBuf> =
                    entries.filter_map(Result::ok).map(|e| e.path()).collect();
                children.sort();
                stack.extend(children.into_iter().rev());
            } else if meta.is_file() && meta.len() > 0 {
                let rel = path.strip_prefix("/").context("an absolute path")?;
                let target = dest.join(rel);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                // A file this user cannot read is not one of the set.
                if let Ok(n) = std::fs::copy(&path, &target) {
                    copied += 1;
                    bytes += n;
                }
            }
        }
    }
    ensure!(
        copied == count,
        "only {copied} regular files under /usr/lib/python3.* and /usr/share/doc, {count} wanted"
    );
    Ok(bytes)
}

/// What the memory stage measured.
struct MemoryStage {
    rows: Vec<Row>,
    targets: Vec<TargetRow>,
    summaries: Vec<Value>,
    skipped: Vec<String>,
    /// The names of the rows on the smallest file, Panini's and restic's.
    smallest_pipeline: String,
    smallest_restic: String,
}

/// The pipeline's peak resident memory on one file of each size in `sizes_gib` (written
/// once under `files_dir`), and restic's on the smallest, `runs` times each; the work
/// directories and the restic repository under `scratch`, on the same disk.
fn memory_stage(
    exe: &Path,
    files_dir: &Path,
    scratch: &Path,
    sizes_gib: &[f64],
    runs: usize,
) -> anyhow::Result<MemoryStage> {
    const STAGE: &str = "memory";
    std::fs::create_dir_all(files_dir)
        .with_context(|| format!("creating {}", files_dir.display()))?;
    let filesystem = filesystem(files_dir);
    let mut sizes = sizes_gib.to_vec();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup_by_key(|gib| gib_bytes(*gib));
    let (mut rows, mut summaries) = (Vec::new(), Vec::new());
    let mut peaks = Vec::new();
    for &gib in &sizes {
        let file = memory_file(files_dir, gib)?;
        let bytes = gib_bytes(gib);
        let mut ours = Vec::new();
        for run in 0..runs {
            let work = tempfile::tempdir_in(scratch).context("creating a pipeline work dir")?;
            let (measured, summary) = run_pipeline(exe, work.path(), [file.as_os_str()])?;
            ensure_verified(&summary, 1, &format!("the {gib} GiB file"))?;
            summaries.push(measured.summary_entry(format!("{STAGE} ({gib} GiB)"), run, summary));
            ours.push(measured);
        }
        let row = Row::measured(STAGE, format!("panini pipeline, {gib} GiB file"), false, bytes, &ours)
            .note(format!(
                "one file of random and compressible MiB blocks on {filesystem}, work dir on the same disk; peak RSS of the pipeline process (its workers are threads)"
            ));
        peaks.push((gib, row.peak_rss_mib.unwrap_or(0.0)));
        rows.push(row);
    }
    let smallest = sizes[0];
    let file = memory_file(files_dir, smallest)?;
    let mut restic = Vec::new();
    for _ in 0..runs {
        let repo = tempfile::tempdir_in(scratch).context("creating a restic dir")?;
        restic.push(restic_backup(repo.path(), std::slice::from_ref(&file))?);
    }
    let restic_row = Row::measured(
        STAGE,
        format!("restic backup, {smallest} GiB file"),
        true,
        gib_bytes(smallest),
        &restic,
    )
    .note(format!("{RESTIC_NOTE}; repository on {filesystem}"));
    let restic_peak = restic_row.peak_rss_mib.unwrap_or(0.0);
    let smallest_restic = restic_row.name.clone();
    rows.push(restic_row);

    let (_, ours_smallest) = peaks[0];
    let mut targets = vec![TargetRow {
        target: format!("peak memory of pipeline on {smallest} GiB ≤ restic's"),
        source: "issue #17",
        wanted: "peak RSS ≤ restic backup's on the same file".into(),
        measured: format!("{ours_smallest:.0} vs {restic_peak:.0} MiB"),
        met: ours_smallest <= restic_peak,
    }];
    let mut skipped = Vec::new();
    if peaks.len() >= 2 {
        let low = peaks.iter().map(|p| p.1).fold(f64::MAX, f64::min);
        let high = peaks.iter().map(|p| p.1).fold(0.0, f64::max);
        let sizes: Vec<String> = peaks.iter().map(|(gib, _)| gib.to_string()).collect();
        let each: Vec<String> = peaks
            .iter()
            .map(|(gib, mib)| format!("{gib} GiB: {mib:.0} MiB"))
            .collect();
        targets.push(TargetRow {
            target: format!(
                "peak memory the same on {} GiB (within 10%)",
                sizes.join(" and ")
            ),
            source: "issue #17",
            wanted: "largest peak RSS ≤ 1.1× the smallest".into(),
            measured: format!(
                "{}; largest / smallest = {:.2}",
                each.join(", "),
                high / low
            ),
            met: high <= low * 1.1,
        });
    } else {
        skipped.push(format!(
            "peak memory across file sizes (only {smallest} GiB in --memory-gib)"
        ));
    }
    Ok(MemoryStage {
        smallest_pipeline: rows[0].name.clone(),
        smallest_restic,
        rows,
        targets,
        summaries,
        skipped,
    })
}

/// `memory-<gib>gib.bin` in `dir`: 1 MiB blocks, alternately random bytes and random
/// letters from an alphabet of 16 (about half compressible), every block distinct so
/// nothing deduplicates. Written once (through a temporary name) and reused while its
/// size is right.
fn memory_file(dir: &Path, gib: f64) -> anyhow::Result<PathBuf> {
    use rand::{RngCore as _, SeedableRng as _};

    let path = dir.join(format!("memory-{gib}gib.bin"));
    let len = gib_bytes(gib);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == len) {
        return Ok(path);
    }
    println!("bench: writing the {gib} GiB file of the memory stage");
    let partial = dir.join(format!(".memory-{gib}gib.bin.partial"));
    let mut writer = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(len);
    let mut block = vec![0u8; 1 << 20];
    for i in 0..len >> 20 {
        rng.fill_bytes(&mut block);
        if i % 2 == 1 {
            for b in &mut block {
                *b = b'a' + (*b & 0x0f);
            }
        }
        writer
            .write_all(&block)
            .with_context(|| format!("writing {}", partial.display()))?;
    }
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("renaming {}", partial.display()))?;
    Ok(path)
}

/// `panini detect` and the seed detect script on `chunks` pending chunk directories
/// ([`crate::bench_detect::measure`]): chunks per second, no bytes.
fn detect_stage(chunks: usize, runs: usize, script: &Path) -> anyhow::Result<Vec<Row>> {
    let outcome = crate::bench_detect::measure(chunks, runs, Some(script))?;
    let note = format!(
        "{} pending chunk directories (metadata.json + sparse data.bin) on {}; \
         writes chunks_to_process.json",
        thousands(chunks),
        outcome.filesystem
    );
    let row = |name: &str, peer: bool, runs_s: Vec<f64>, peak_kib: Option<u64>| {
        let mut row = Row::new("detect", name, peer, 0, runs_s).note(note.clone());
        row.mb_per_s = f64::NAN;
        row.chunks_per_s = Some(chunks as f64 / row.median_s);
        row.peak_rss_mib = peak_kib.map(kib_to_mib);
        row
    };
    Ok(vec![
        row(
            "panini detect",
            false,
            outcome.ours_secs,
            Some(outcome.ours_peak_rss_kib),
        ),
        row(
            "detect_pending_chunks.py (seed)",
            true,
            outcome.seed_secs,
            outcome.seed_peak_rss_kib,
        ),
        row(SYSCALL_FLOOR, true, outcome.floor_secs, None).note(format!(
            "{note}; in this process, no parsing or output: the floor any detector of this \
             format pays on this machine"
        )),
    ])
}

/// The detect stage's row of [`crate::bench_detect::syscall_floor`].
const SYSCALL_FLOOR: &str = "system calls alone (open, read, close, stat per chunk)";

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

/// How the default chunker cuts beside `split -b 1M` and FastCDC alone (issue #13):
/// chunks per MiB and chunks under 4 KiB over the corpus, and how many chunks of a
/// 20 MiB log change when one line is inserted near its start.
fn chunking_quality(files: &[PathBuf], scratch: &Path) -> anyhow::Result<Vec<TargetRow>> {
    use chunker::figures::{Cutter, cut_figures, edit_figures};
    let max = chunker::DEFAULT_MAX_CHUNK_SIZE;
    let cutters = [
        (
            "semantic (default)",
            Cutter::Plan(chunker::ChunkerConfig::default()),
        ),
        ("split -b 1M", Cutter::FixedSize(max)),
        (
            "FastCDC only",
            Cutter::FastCdc {
                max_chunk_size: max,
            },
        ),
    ];
    let mut per_mib = Vec::new();
    // The most chunks under 4 KiB any one file gets from the default chunker.
    let mut default_small_per_file = 0;
    for (name, cutter) in cutters {
        let (mut bytes, mut chunks, mut small) = (0u64, 0u64, 0u64);
        for file in files {
            let f = cut_figures(file, cutter)
                .with_context(|| format!("cutting {} ({name})", file.display()))?;
            bytes += f.bytes;
            chunks += f.chunks;
            small += f.small_chunks;
            if name.starts_with("semantic") {
                default_small_per_file = default_small_per_file.max(f.small_chunks);
            }
        }
        let mib = bytes as f64 / (1u64 << 20) as f64;
        per_mib.push(format!(
            "{name} {:.2}/MiB ({small} < 4 KiB)",
            chunks as f64 / mib
        ));
    }

    let log = scratch.join("edit-original.log");
    let edited = scratch.join("edit-inserted.log");
    let text = samples::text_log(20 << 20, 13);
    std::fs::write(&log, &text).with_context(|| format!("writing {}", log.display()))?;
    let at = text
        .iter()
        .take(4096)
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut changed_text = text[..at].to_vec();
    changed_text.extend_from_slice(b"an inserted line of 18\n");
    changed_text.extend_from_slice(&text[at..]);
    std::fs::write(&edited, &changed_text)
        .with_context(|| format!("writing {}", edited.display()))?;
    let mut reuse = Vec::new();
    let mut default_changed = u64::MAX;
    for (name, cutter) in cutters {
        let e = edit_figures(&log, &edited, cutter)
            .with_context(|| format!("comparing the edited log ({name})"))?;
        if name.starts_with("semantic") {
            default_changed = e.changed;
        }
        reuse.push(format!("{name} {}/{} changed", e.changed, e.chunks));
    }
    Ok(vec![
        TargetRow {
            target: "chunk: chunks per MiB over the corpus".into(),
            source: "issue #13",
            wanted: "≤ 2 chunks under 4 KiB in any file with the default strategy".into(),
            measured: format!(
                "{}; default: at most {default_small_per_file} under 4 KiB per file",
                per_mib.join("; ")
            ),
            met: default_small_per_file <= 2,
        },
        TargetRow {
            target: "chunk: one line inserted near the start of a 20 MiB log".into(),
            source: "issue #13",
            wanted: "≤ 3 chunks changed with the default strategy".into(),
            measured: reuse.join("; "),
            met: default_changed <= 3,
        },
    ])
}
