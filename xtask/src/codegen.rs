//! `cargo xtask codegen`: files generated from the code, checked in so readers of the
//! repository (and of the docs) see them, and kept fresh by a test.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Options of `cargo xtask codegen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fail instead of writing when a generated file is stale (or missing).
    #[arg(long)]
    check: bool,
    /// The schemas' directory (default: docs/schemas of this checkout).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(schemas_dir);
    if args.check {
        return check_dir(&dir);
    }
    for path in update_schemas(&dir, false)? {
        println!("updated {}", path.display());
    }
    Ok(())
}

/// Fails when a generated file differs from what the code generates now.
pub fn check() -> anyhow::Result<()> {
    check_dir(&schemas_dir())
}

fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let stale = update_schemas(dir, true)?;
    if !stale.is_empty() {
        bail!(
            "stale generated files: {}; run `cargo xtask codegen`",
            stale
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The repository root (xtask lives one level below it).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the repository")
        .to_owned()
}

/// `docs/schemas/` of this checkout.
fn schemas_dir() -> PathBuf {
    project_root().join("docs/schemas")
}

/// Regenerates the schemas in `dir`; returns the files that were stale (and, unless
/// `check_only`, have been rewritten).
fn update_schemas(dir: &Path, check_only: bool) -> anyhow::Result<Vec<PathBuf>> {
    if !check_only {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut stale = Vec::new();
    // chunk-model's documents, then the panini commands' --json outputs.
    for (file, schema) in chunk_model::schema::all()
        .into_iter()
        .chain(panini::schema::all())
    {
        let path = dir.join(file);
        let mut text = serde_json::to_string_pretty(&schema)?;
        text.push('\n');
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != text {
            if !check_only {
                chunk_model::json_file::write_bytes_atomic(&path, text.as_bytes())?;
            }
            stale.push(path);
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_schemas_are_fresh() {
        let stale = super::update_schemas(&super::schemas_dir(), true).unwrap();
        assert!(
            stale.is_empty(),
            "stale generated files {stale:?}: run `cargo xtask codegen` and commit the result"
        );
    }
}
