//! `panini apply-callback`: record a worker's `chunk_compressed` event in the
//! chunk's `metadata.json` (the compression callback workflow's step).

use std::path::PathBuf;

use anyhow::Context;
use chunk_model::Timestamp;
use detector::{Change, DEFAULT_BASE, apply_callback};

use super::common::outln;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The event file (`$GITHUB_EVENT_PATH`) or the bare `client_payload` JSON.
    #[arg(long, value_name = "FILE")]
    payload: PathBuf,
    /// The chunk tree; `chunk_path` must lie inside it.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BASE)]
    base: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let payload = detector::read_payload(&args.payload)?;
    let outcome =
        apply_callback(&args.base, &payload, Timestamp::now().utc()).with_context(|| {
            format!(
                "applying the {} callback for {:?}",
                payload.status, payload.chunk_path
            )
        })?;
    let path = outcome.metadata_path.display();
    match outcome.change {
        Change::Applied { from, to } => outln!("{path}: {from} → {to}"),
        Change::AlreadyApplied { status } => {
            outln!("{path}: already {status} with this result; nothing to do")
        }
    }
    Ok(())
}
