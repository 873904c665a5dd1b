//! Running the built `panini` binary and stock tools from tests, as a user would.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `panini ARGS` in `cwd` with `env` added, and nothing from the developer's shell
/// deciding where it stores, how it authenticates or what it logs.
pub fn panini(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_panini"));
    command.args(args).current_dir(cwd).stdin(Stdio::null());
    for name in [
        "GOOGLE_ONE_BUCKET",
        "STORAGE_EMULATOR_HOST",
        "PANINI_GCS_ENDPOINT",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_QUOTA_PROJECT",
        "COLAB_AUTH_TOKEN",
        "PANINI_WEBHOOK_SECRET",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("the panini binary runs")
}

/// Like [`panini`], and it must succeed.
pub fn panini_ok(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let out = panini(args, cwd, env);
    assert!(out.status.success(), "panini {args:?}: {}", text(&out));
    out
}

/// A command's status and output, for an assertion message.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A stock tool run to the end; it must succeed.
pub fn tool(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
    out
}

/// `sha256sum FILE`: the hex digest.
pub fn sha256sum(path: &Path) -> String {
    let out = tool("sha256sum", &[path.to_str().unwrap()]);
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// The row of stage `name` in a pipeline's JSON report.
pub fn stage_row<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap_or_else(|| panic!("no {name} stage in {report:#}"))
}

/// The chunk counts of the webhooks a worker logged as accepted (`RUST_LOG=info`), in
/// log order.
pub fn accepted_requests<'a>(log: impl IntoIterator<Item = &'a str>) -> Vec<u64> {
    log.into_iter()
        .filter(|line| line.contains("accepted a webhook"))
        .map(|line| {
            let count = line
                .split_once(" chunks=")
                .and_then(|(_, rest)| rest.split(' ').next())
                .unwrap_or_else(|| panic!("no chunk count in {line:?}"));
            count.parse().unwrap()
        })
        .collect()
}
