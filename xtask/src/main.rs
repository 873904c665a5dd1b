//! `cargo xtask <task>`: Panini's command line and build system.
//!
//! Every user-facing command and every CI step is a subcommand here, so the same code
//! runs on a laptop, in GitHub Actions and in `.ci/run`. Each task lives in its own
//! module; this file only parses the command line and dispatches.

mod ci;
mod codegen;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Panini: chunk, compress and store files, and rebuild them bit for bit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what the tests need, start the services, run every check and test, stop the services.
    Ci(ci::Args),
    /// Regenerate the JSON Schemas under docs/schemas/.
    Codegen(codegen::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ci(args) => ci::run(args),
        Command::Codegen(args) => codegen::run(args),
    }
}
