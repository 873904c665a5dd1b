//! The developer commands as a developer runs them: `cargo xtask codegen [--check]` and
//! `cargo xtask lint-workflows`, the built binary spawned, on this checkout (read only)
//! and on temporary copies that are stale or broken.

mod support;

use std::path::Path;
use std::time::Duration;

use support::Output;

const LIMIT: Duration = Duration::from_secs(300);

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn xtask(args: &[&str]) -> Output {
    support::xtask(args, repo(), LIMIT)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn codegen_check_passes_on_fresh_schemas_and_names_a_stale_or_missing_one() {
    let schemas = repo().join("docs/schemas");
    let out = xtask(&["codegen", "--check"]);
    assert!(
        out.status.success(),
        "the checkout's schemas: {}",
        out.text()
    );

    let copy = tempfile::tempdir().unwrap();
    copy_dir(&schemas, copy.path());
    let dir = copy.path().to_str().unwrap();
    let out = xtask(&["codegen", "--check", "--dir", dir]);
    assert!(out.status.success(), "a fresh copy: {}", out.text());

    // One schema edited by hand, one deleted: both named, nothing rewritten.
    let stale = copy.path().join("manifest.schema.json");
    let edited = std::fs::read_to_string(&stale).unwrap().replacen(
        "\"title\"",
        "\"description\": \"hand-edited\", \"title\"",
        1,
    );
    std::fs::write(&stale, &edited).unwrap();
    let missing = copy.path().join("recipe.schema.json");
    std::fs::remove_file(&missing).unwrap();
    let out = xtask(&["codegen", "--check", "--dir", dir]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [&stale, &missing] {
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "names {}: {stderr}",
            path.display()
        );
    }
    assert!(
        !stderr.contains("metadata.schema.json"),
        "only the stale ones: {stderr}"
    );
    assert_eq!(std::fs::read_to_string(&stale).unwrap(), edited);
    assert!(!missing.exists());

    // Without --check the copy is regenerated, and then checks clean and equals the
    // checkout's.
    let out = xtask(&["codegen", "--dir", dir]);
    assert!(out.status.success(), "{}", out.text());
    let out = xtask(&["codegen", "--check", "--dir", dir]);
    assert!(out.status.success(), "{}", out.text());
    for name in ["manifest.schema.json", "recipe.schema.json"] {
        assert_eq!(
            std::fs::read(copy.path().join(name)).unwrap(),
            std::fs::read(schemas.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn lint_workflows_passes_on_the_repository_and_names_a_broken_workflow() {
    let out = xtask(&["lint-workflows"]);
    assert!(
        out.status.success(),
        "the repository's workflows (the linters come from .venv: `cargo xtask ci` installs them): {}",
        out.text()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("workflows lint clean"),
        "{}",
        out.text()
    );

    let copy = tempfile::tempdir().unwrap();
    let workflows = copy.path().join(".github/workflows");
    copy_dir(&repo().join(".github/workflows"), &workflows);
    let dir = workflows.to_str().unwrap();
    let out = xtask(&["lint-workflows", "--dir", dir]);
    assert!(out.status.success(), "an intact copy: {}", out.text());

    // A job without `runs-on`, and an expression that does not close.
    let broken = workflows.join("broken.yml");
    std::fs::write(
        &broken,
        "name: broken\non: push\npermissions: {}\njobs:\n  build:\n    steps:\n      - run: echo \"${{ github.sha }\"\n",
    )
    .unwrap();
    let out = xtask(&["lint-workflows", "--dir", dir]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or_else(|| panic!("no error line: {}", out.text()));
    assert!(
        error.contains(broken.to_str().unwrap()) && !error.contains("ci.yml"),
        "the error names the broken file, and only it: {error}"
    );
}
