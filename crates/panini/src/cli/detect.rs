//! `panini detect`: list the chunks to compress, in dispatch order.
//!
//! The GitHub Actions step of the async compression workflow. Writes the list to
//! `chunks_to_process.json`, appends `chunks_found`, `chunks_count` and `invalid_count`
//! to `$GITHUB_OUTPUT` when set, and exits 0 whether or not anything was found.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chunk_model::Timestamp;
use detector::{DEFAULT_BASE, DEFAULT_MAX_ATTEMPTS, DEFAULT_OUTPUT, DetectConfig};

use super::common::outln;

/// [`detector::DEFAULT_LEASE`] as `--lease` shows it (a test keeps them equal).
const DEFAULT_LEASE_TEXT: &str = "30m";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The chunk tree to scan; its parent is the repository root that paths are relative to.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BASE)]
    base: PathBuf,
    /// Where to write the list of chunks to process.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_OUTPUT)]
    output: PathBuf,
    /// Select every chunk that is not completed (the workflow's `force_process`).
    #[arg(long)]
    force: bool,
    /// Retry a failed chunk while its attempts are below this.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// Lease of a queued/processing chunk after `dispatched_at`, when it has no `lease_expires_at`.
    /// (e.g. 90s, 30m; a plain number is seconds).
    #[arg(long, default_value = DEFAULT_LEASE_TEXT, value_parser = super::common::parse_duration)]
    lease: std::time::Duration,
    /// Exit non-zero when any metadata file is invalid (after writing the outputs).
    #[arg(long)]
    strict: bool,
    /// Print the full report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
    /// Metadata files to scan, as globs relative to the repository root (repeatable;
    /// default `<base name>/*/chunk_*/metadata.json`).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Files or directories to leave out, as globs relative to the repository root (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = DetectConfig {
        base: args.base.clone(),
        include: args.include,
        exclude: args.exclude,
        files: Vec::new(),
        force: args.force,
        max_attempts: args.max_attempts,
        lease: args.lease,
    };
    let report = detector::scan(&config, Timestamp::now().utc())
        .with_context(|| format!("scanning the chunk tree at {}", args.base.display()))?;
    report
        .write_chunks_file(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if let Some(path) = std::env::var_os("GITHUB_OUTPUT").filter(|p| !p.is_empty()) {
        report
            .append_github_output(Path::new(&path))
            .context("writing the step outputs")?;
    }
    if std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true") {
        // Annotations put each bad file on the run's summary page.
        for invalid in &report.invalid {
            outln!(
                "::warning file={}::{}",
                detector::actions::escape_property(&invalid.path),
                detector::actions::escape_data(&invalid.reason)
            );
        }
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
        outln!("wrote {}", args.output.display());
    }
    if args.strict {
        report.check_strict()?;
    }
    Ok(())
}
