//! The workflows' commit step (`.github/scripts/push-status-changes.sh`) against a real
//! git remote: a push race is rebased and retried, a conflicting callback is applied
//! again on the new tip, and nothing is pushed when nothing changed.

#![cfg(unix)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{now, python_metadata, with};
use detector::apply_callback;
use serde_json::{Value, json};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.github/scripts/push-status-changes.sh")
}

fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write_meta(repo: &Path, chunk: &str, meta: &Value) {
    let dir = repo.join("pending_compression/movie").join(chunk);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("metadata.json"),
        serde_json::to_string_pretty(meta).unwrap() + "\n",
    )
    .unwrap();
}

fn read_meta(repo: &Path, chunk: &str) -> Value {
    let path = repo
        .join("pending_compression/movie")
        .join(chunk)
        .join("metadata.json");
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn run_script(repo: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .current_dir(repo)
        .env("GITHUB_REF_NAME", "main")
        .env("GITHUB_REF_TYPE", "branch")
        .env("PUSH_RETRY_BASE_DELAY", "0")
        .output()
        .expect("bash runs")
}

/// A bare origin with two queued chunks, and two clones of it: `other` (another run)
/// and `runner` (this run).
struct Remote {
    _dir: tempfile::TempDir,
    origin: PathBuf,
    other: PathBuf,
    runner: PathBuf,
}

fn remote() -> Remote {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("origin.git");
    fs::create_dir(&origin).unwrap();
    git(&origin, &["init", "--quiet", "--bare"]);
    let other = dir.path().join("other");
    git(dir.path(), &["clone", "--quiet", "origin.git", "other"]);
    for chunk in ["chunk_0000", "chunk_0001"] {
        let id = chunk[6..].parse().unwrap();
        write_meta(
            &other,
            chunk,
            &with(
                python_metadata(id, 1, "FIXED_SIZE"),
                json!({"status": "queued"}),
            ),
        );
    }
    git(&other, &["add", "."]);
    git(&other, &["commit", "--quiet", "-m", "chunks"]);
    git(
        &other,
        &["push", "--quiet", "origin", "HEAD:refs/heads/main"],
    );
    let runner = dir.path().join("runner");
    git(
        dir.path(),
        &[
            "clone",
            "--quiet",
            "--branch",
            "main",
            "origin.git",
            "runner",
        ],
    );
    Remote {
        _dir: dir,
        origin,
        other,
        runner,
    }
}

/// The `completed` event a worker sends for `chunk_NNNN` of the tree `remote` makes.
fn completed(chunk: &str) -> chunk_model::ChunkCompressed {
    let id: u64 = chunk.trim_start_matches("chunk_").parse().unwrap();
    // `python_metadata(id, …)` gives chunk `id` the hash id + 1.
    let original = format!("{:064x}", id + 1);
    serde_json::from_value(json!({
        "chunk_path": format!("pending_compression/movie/{chunk}"),
        "status": "completed",
        "upload_path": format!("chunks/{original}.lz4"),
        "upload_hash": format!("{:064x}", 9),
        "original_hash": original,
    }))
    .unwrap()
}

fn origin_meta(remote: &Remote, chunk: &str) -> Value {
    let out = git(
        &remote.origin,
        &[
            "show",
            &format!("main:pending_compression/movie/{chunk}/metadata.json"),
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_push_race_is_rebased_and_retried() {
    let r = remote();
    // Another run pushes first, touching a different chunk.
    let mut meta = read_meta(&r.other, "chunk_0001");
    meta["status"] = json!("processing");
    write_meta(&r.other, "chunk_0001", &meta);
    git(&r.other, &["commit", "--quiet", "-am", "other run"]);
    git(
        &r.other,
        &["push", "--quiet", "origin", "HEAD:refs/heads/main"],
    );

    apply_callback(
        &r.runner.join("pending_compression"),
        &completed("chunk_0000"),
        now(),
    )
    .unwrap();
    let out = run_script(&r.runner, &["chunks: callback [skip ci]"]);
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("rejected (attempt 1)"), "{log}");
    assert_eq!(origin_meta(&r, "chunk_0000")["status"], "completed");
    assert_eq!(origin_meta(&r, "chunk_0001")["status"], "processing");
    let subject = git(&r.origin, &["log", "-1", "--format=%s", "main"]);
    assert_eq!(
        String::from_utf8_lossy(&subject.stdout).trim(),
        "chunks: callback [skip ci]"
    );
}

#[test]
fn a_conflicting_callback_is_applied_again_on_the_new_tip() {
    let r = remote();
    // Another run rewrote the same chunk's metadata in the meantime.
    let mut meta = read_meta(&r.other, "chunk_0000");
    meta["status"] = json!("processing");
    meta["worker_id"] = json!("colab-7");
    write_meta(&r.other, "chunk_0000", &meta);
    git(&r.other, &["commit", "--quiet", "-am", "other run"]);
    git(
        &r.other,
        &["push", "--quiet", "origin", "HEAD:refs/heads/main"],
    );

    let base = r.runner.join("pending_compression");
    apply_callback(&base, &completed("chunk_0000"), now()).unwrap();
    // The reapply command stands in for `cargo xtask apply-callback --payload FILE`:
    // this test binary's `reapply_helper` makes the same library call.
    let payload = r.runner.join("../payload.json");
    fs::write(
        &payload,
        serde_json::to_string(&completed("chunk_0000")).unwrap(),
    )
    .unwrap();
    let me = std::env::current_exe().unwrap();
    let out = Command::new("bash")
        .arg(script())
        .arg("chunks: callback [skip ci]")
        .arg(&me)
        .args(["--exact", "reapply_helper", "--include-ignored", "--quiet"])
        .current_dir(&r.runner)
        .env("GITHUB_REF_NAME", "main")
        .env("PUSH_RETRY_BASE_DELAY", "0")
        .env("REAPPLY_BASE", &base)
        .env("REAPPLY_PAYLOAD", &payload)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("applying them again"), "{log}");
    let meta = origin_meta(&r, "chunk_0000");
    assert_eq!(meta["status"], "completed", "{log}");
    assert_eq!(
        meta["worker_id"], "colab-7",
        "the other run's change survives: {log}"
    );
    assert_eq!(
        meta["upload_path"],
        json!(completed("chunk_0000").upload_path)
    );
}

/// Run by the script in the test above, as the reapply command; ignored otherwise.
/// Run on its own (`--include-ignored`) it has nothing to apply, and says so by failing
/// rather than passing without having checked anything.
#[test]
#[ignore = "helper run by a_conflicting_callback_is_applied_again_on_the_new_tip"]
fn reapply_helper() {
    let (Some(base), Some(payload)) = (
        std::env::var_os("REAPPLY_BASE"),
        std::env::var_os("REAPPLY_PAYLOAD"),
    ) else {
        panic!(
            "reapply_helper is the reapply command of \
             a_conflicting_callback_is_applied_again_on_the_new_tip, which sets \
             REAPPLY_BASE and REAPPLY_PAYLOAD; run that test instead"
        );
    };
    let payload = detector::read_payload(Path::new(&payload)).unwrap();
    apply_callback(Path::new(&base), &payload, now()).unwrap();
}

#[test]
fn nothing_changed_means_nothing_pushed() {
    let r = remote();
    let before = git(&r.origin, &["rev-parse", "main"]).stdout;
    let out = run_script(&r.runner, &["chunks: nothing [skip ci]"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("No status changes"));
    assert_eq!(git(&r.origin, &["rev-parse", "main"]).stdout, before);
}
