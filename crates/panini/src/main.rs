//! `panini`: the deployable binary (workers, the GitHub Actions steps, and every user
//! command). See `panini --help` and the crate documentation.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = panini::cli::Cli::parse();
    panini::cli::run(cli.command, &cli.global)
}
