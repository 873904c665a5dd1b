//! `panini chunk FILE...`: cut files into the chunk tree under `pending_compression/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use chunk_model::Strategy;
use chunker::{ChunkOptions, ChunkReport, ChunkerConfig, DEFAULT_MAX_CHUNK_SIZE, chunk_file};

use super::common::{self, human_bytes, outln};

/// Inputs at least this large get a progress bar (smaller ones take well under a second).
const PROGRESS_MIN_BYTES: u64 = 16 << 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to chunk.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Root of the chunk tree (`--output` is the older name).
    #[arg(long, visible_alias = "output", value_name = "DIR", default_value = chunk_model::layout::DEFAULT_ROOT)]
    base: PathBuf,
    /// semantic (the format's structure), size (fixed size) or adaptive (structure, then content-defined).
    #[arg(long, default_value = "semantic", value_parser = super::common::choice::<Strategy>(super::common::STRATEGIES))]
    strategy: Strategy,
    /// Maximum chunk size (e.g. 4M, 1GiB; K, M, G, T are powers of 1024).
    #[arg(long, default_value_t = DEFAULT_MAX_CHUNK_SIZE, value_parser = common::parse_size)]
    chunk_size: u64,
    /// Directory name under the output root (default: the file stem); one file only.
    #[arg(long)]
    name: Option<String>,
    /// Replace an existing chunk tree of the same name.
    #[arg(long)]
    force: bool,
    /// Print the reports as one JSON document on stdout (`{"chunked": […], "failed": […]}`).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.name.is_some() && args.files.len() > 1 {
        bail!(
            "--name applies to one file; {} were given",
            args.files.len()
        );
    }
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for file in &args.files {
        match chunk_one(file, &args) {
            Ok(report) => {
                if !args.json {
                    print_report(&report);
                }
                reports.push(report);
            }
            Err(err) => {
                eprintln!("{}", common::error_report(&err));
                failures.push((file.clone(), err.to_string()));
            }
        }
    }
    if args.json {
        let failed: Vec<_> = failures
            .iter()
            .map(|(path, error)| serde_json::json!({ "path": path, "error": error }))
            .collect();
        let out = serde_json::json!({ "chunked": reports, "failed": failed });
        common::print_json(&out)?;
    } else {
        print_summary(&reports, failures.len());
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} files could not be chunked",
            failures.len(),
            args.files.len()
        );
    }
    Ok(())
}

fn chunk_one(file: &Path, args: &Args) -> anyhow::Result<ChunkReport> {
    // A directory, /dev/null or a FIFO: say so, instead of the OS error a read of it
    // gives ("Is a directory" for /dev/null).
    let meta = std::fs::metadata(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", file.display());
    }
    let len = meta.len();
    let bar = (!args.json && len >= PROGRESS_MIN_BYTES)
        .then(|| common::bytes_bar(len, file.display().to_string()));
    let options = ChunkOptions {
        output: args.base.clone(),
        name: args.name.clone(),
        config: ChunkerConfig {
            strategy: args.strategy,
            max_chunk_size: args.chunk_size,
            ..ChunkerConfig::default()
        },
        force: args.force,
        sync: true,
        progress: bar.clone().map(|bar| {
            Arc::new(move |p: chunker::Progress| bar.set_position(p.bytes_done))
                as chunker::ProgressFn
        }),
    };
    let result = chunk_file(file, &options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // The error names the path already.
    Ok(result?)
}

fn print_report(r: &ChunkReport) {
    outln!(
        "{} -> {}: {}, {}, {} ({}), {}{}{}",
        r.source.display(),
        r.dir.display(),
        common::plural(r.total_chunks, "chunk"),
        human_bytes(r.file_size),
        r.format,
        r.grammar_id,
        r.strategy,
        if r.keyframe_chunks > 0 {
            format!(", {} keyframe chunks", r.keyframe_chunks)
        } else {
            String::new()
        },
        if r.replaced {
            ", replaced the previous tree"
        } else {
            ""
        },
    );
    if let Some(fallback) = &r.fallback {
        outln!("  cut by size {fallback}");
    }
    let patterns: Vec<String> = r
        .patterns
        .iter()
        .map(|(p, s)| format!("{p} x{} ({})", s.chunks, human_bytes(s.bytes)))
        .collect();
    outln!("  {}", patterns.join(", "));
}

fn print_summary(reports: &[ChunkReport], failed: usize) {
    let chunks: u64 = reports.iter().map(|r| r.total_chunks).sum();
    let bytes: u64 = reports.iter().map(|r| r.file_size).sum();
    let mut formats = std::collections::BTreeMap::<&str, usize>::new();
    for r in reports {
        *formats.entry(r.format.name()).or_default() += 1;
    }
    let formats: Vec<String> = formats.iter().map(|(f, n)| format!("{f} x{n}")).collect();
    outln!(
        "Chunked {}: {}, {}; formats: {}{}",
        common::plural(reports.len() as u64, "file"),
        common::plural(chunks, "chunk"),
        human_bytes(bytes),
        if formats.is_empty() {
            "none".to_owned()
        } else {
            formats.join(", ")
        },
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        },
    );
}
