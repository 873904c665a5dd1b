//! `panini stage` and `panini prune`: raw chunk bytes through the bucket instead of
//! git, and freed once their chunks are stored.

use std::path::PathBuf;

use anyhow::Context as _;

use super::common::{human_bytes, outln, plural, print_json};
use super::store_cli::{StoreArgs, runtime};
use crate::prune::{PruneOptions, PruneReport};
use crate::stage::{StageOptions, StageReport};

/// `panini stage --bucket URL`.
#[derive(Debug, clap::Args)]
pub struct StageArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Root of the chunk tree.
    #[arg(long, value_name = "DIR", default_value = chunk_model::layout::DEFAULT_ROOT)]
    base: PathBuf,
}

/// `panini prune --bucket URL`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Root of the chunk tree.
    #[arg(long, value_name = "DIR", default_value = chunk_model::layout::DEFAULT_ROOT)]
    base: PathBuf,
    /// Say what would be freed; remove nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn stage(args: StageArgs) -> anyhow::Result<()> {
    let report = runtime()?.block_on(stage_tree(&args.store, &args.base))?;
    print_stage(&report, args.store.json)
}

/// Stages the tree at `base` into the bucket `store` names.
async fn stage_tree(store: &StoreArgs, base: &std::path::Path) -> anyhow::Result<StageReport> {
    let opened = uploader::open(&store.bucket, &store.config())
        .await
        .with_context(|| format!("opening the bucket {}", store.bucket))?;
    let options = StageOptions {
        concurrency: store.concurrency,
    };
    Ok(crate::stage::stage(base, opened, &options).await?)
}

fn print_stage(report: &StageReport, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(report)?;
    } else {
        outln!("{}", stage_summary(report));
    }
    stage_outcome(report)
}

/// One line on what a stage did.
pub(super) fn stage_summary(report: &StageReport) -> String {
    format!(
        "Staged {} in {}: {} uploaded ({}), {} there already; {} removed from the tree ({})",
        plural(report.chunks as u64, "chunk"),
        report.bucket,
        report.uploaded,
        human_bytes(report.bytes_uploaded),
        report.already_staged,
        plural(report.data_files_removed as u64, "data.bin"),
        human_bytes(report.bytes_removed),
    )
}

/// Prints each chunk that could not be staged, and fails when there is one.
pub(super) fn stage_outcome(report: &StageReport) -> anyhow::Result<()> {
    for error in &report.errors {
        eprintln!("error: {error}");
    }
    anyhow::ensure!(
        report.errors.is_empty(),
        "{} not staged (their data.bin is kept; run `panini stage` again to retry)",
        plural(report.errors.len() as u64, "chunk")
    );
    Ok(())
}

pub fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let report: PruneReport = runtime()?.block_on(async {
        let store = uploader::open_existing(&args.store.bucket, &args.store.config())
            .await
            .with_context(|| format!("opening the bucket {}", args.store.bucket))?;
        let options = PruneOptions {
            dry_run: args.dry_run,
            concurrency: args.store.concurrency,
        };
        anyhow::Ok(crate::prune::prune(&args.base, store, &options).await?)
    })?;
    if args.store.json {
        print_json(&report)?;
    } else {
        let verb = if report.dry_run {
            "Would free"
        } else {
            "Freed"
        };
        outln!(
            "{verb} {} in the tree ({} of {} completed chunks) and {} in {} ({}); {} still needed by open chunks",
            human_bytes(report.data_bytes_freed),
            plural(report.data_files_removed as u64, "data.bin"),
            report.completed_chunks,
            human_bytes(report.staged_bytes_freed),
            report.bucket,
            plural(report.staged_objects_deleted as u64, "staged object"),
            report.staged_objects_still_needed,
        );
    }
    for kept in &report.kept {
        eprintln!("kept: {kept}");
    }
    Ok(())
}
