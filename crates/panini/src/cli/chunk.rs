//! `panini chunk FILE...`: cut files into the chunk tree under `pending_compression/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use chunk_model::Strategy;
use chunker::{ChunkOptions, ChunkReport, ChunkerConfig, DEFAULT_MAX_CHUNK_SIZE, chunk_file};
use indicatif::{ProgressBar, ProgressStyle};

/// Inputs at least this large get a progress bar.
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to chunk.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Root of the chunk tree.
    #[arg(long, default_value = chunk_model::layout::DEFAULT_ROOT)]
    output: PathBuf,
    /// semantic (the format's structure), size (fixed size) or adaptive (structure, then content-defined).
    #[arg(long, default_value = "semantic")]
    strategy: Strategy,
    /// Maximum chunk size in bytes (suffixes K, M, G for KiB, MiB, GiB).
    #[arg(long, default_value_t = DEFAULT_MAX_CHUNK_SIZE, value_parser = parse_size)]
    chunk_size: u64,
    /// Directory name under the output root (default: the file stem); one file only.
    #[arg(long)]
    name: Option<String>,
    /// Replace an existing chunk tree of the same name.
    #[arg(long)]
    force: bool,
    /// Print the reports as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size in bytes"))?;
    match value.checked_shl(shift).filter(|v| *v >> shift == value) {
        Some(0) => Err("the chunk size must be at least 1 byte".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("{text:?} is too large")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Warnings, so fallbacks to size chunking are seen.
    super::init_tracing("warn");
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
                eprintln!("error: {err}");
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
        println!("{}", serde_json::to_string_pretty(&out)?);
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
    let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let bar = (!args.json && len >= PROGRESS_MIN_BYTES).then(|| {
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(file.display().to_string());
        bar
    });
    let options = ChunkOptions {
        output: args.output.clone(),
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
    println!(
        "{} -> {}: {} chunks, {}, {} ({}), {}{}{}",
        r.source.display(),
        r.dir.display(),
        r.total_chunks,
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
        println!("  cut by size {fallback}");
    }
    let patterns: Vec<String> = r
        .patterns
        .iter()
        .map(|(p, s)| format!("{p} x{} ({})", s.chunks, human_bytes(s.bytes)))
        .collect();
    println!("  {}", patterns.join(", "));
}

fn print_summary(reports: &[ChunkReport], failed: usize) {
    let chunks: u64 = reports.iter().map(|r| r.total_chunks).sum();
    let bytes: u64 = reports.iter().map(|r| r.file_size).sum();
    let mut formats = std::collections::BTreeMap::<&str, usize>::new();
    for r in reports {
        *formats.entry(r.format.name()).or_default() += 1;
    }
    let formats: Vec<String> = formats.iter().map(|(f, n)| format!("{f} x{n}")).collect();
    println!(
        "Chunked {} file(s): {chunks} chunks, {}; formats: {}{}",
        reports.len(),
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

/// `1.5 MiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1T").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
