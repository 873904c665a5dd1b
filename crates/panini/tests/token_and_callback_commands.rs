//! `panini gen-token` and `panini apply-callback` as a user (and the callback workflow)
//! runs them: the built binary spawned in a temporary directory, its exit code, output
//! and the files it changed checked.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use support::text;

fn panini(args: &[&str], cwd: &Path) -> Output {
    support::panini(args, cwd, &[])
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn gen_token_prints_one_fresh_url_safe_token_of_32_random_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let out = panini(&["gen-token"], dir.path());
        assert!(out.status.success(), "{}", text(&out));
        assert!(out.stderr.is_empty(), "{}", text(&out));
        let stdout = String::from_utf8(out.stdout).unwrap();
        // One line, as `panini gen-token > token.txt` and `--token-file` expect.
        let token = stdout
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("{stdout:?}"));
        assert!(!token.contains('\n'), "{stdout:?}");
        assert_eq!(token.len(), 43, "{token}");
        assert!(
            token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "URL-safe base64 without padding: {token}"
        );
        // Decodes to exactly 32 bytes (base64 -d of the URL-safe alphabet, padded).
        let standard: String = token
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                c => c,
            })
            .collect();
        let mut decode = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("coreutils base64");
        use std::io::Write as _;
        decode
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{standard}=\n").as_bytes())
            .unwrap();
        let decoded = decode.wait_with_output().unwrap();
        assert!(decoded.status.success());
        assert_eq!(decoded.stdout.len(), 32, "{token}");
        tokens.push(token.to_owned());
    }
    assert_ne!(tokens[0], tokens[1], "each run draws a new token");
    // It takes no arguments.
    let out = panini(&["gen-token", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// A chunk tree of `app.log` in `dir`, its first chunk marked `queued` (as a dispatch
/// leaves it); returns that chunk's path and its content's SHA-256.
fn queued_chunk(dir: &Path) -> (String, String) {
    let log: String = (0..2000).map(|i| format!("{i:05} ok\n")).collect();
    std::fs::write(dir.join("app.log"), log).unwrap();
    let out = panini(
        &[
            "chunk",
            "app.log",
            "--strategy",
            "size",
            "--chunk-size",
            "4K",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", text(&out));
    let chunk_path = "pending_compression/app/chunk_0000".to_owned();
    let metadata = dir.join(&chunk_path).join("metadata.json");
    let mut meta = read_json(&metadata);
    meta["status"] = json!("queued");
    meta["dispatched_at"] = json!("2026-01-01T11:00:00Z");
    meta["lease_expires_at"] = json!("2099-01-01T00:00:00Z");
    std::fs::write(&metadata, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let sha = meta["original_hash"].as_str().unwrap().to_owned();
    (chunk_path, sha)
}

/// The `repository_dispatch` event file GitHub hands the callback workflow.
fn event(dir: &Path, file: &str, client_payload: Value) -> String {
    let path = dir.join(file);
    std::fs::write(
        &path,
        json!({
            "action": "chunk_compressed",
            "branch": "main",
            "client_payload": client_payload,
            "repository": {"full_name": "owner/repo"},
        })
        .to_string(),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn apply_callback_completes_a_chunk_once_and_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let (chunk_path, sha) = queued_chunk(dir.path());
    let metadata = dir.path().join(&chunk_path).join("metadata.json");
    let payload = json!({
        "chunk_path": chunk_path,
        "status": "completed",
        "upload_path": format!("chunks/{sha}.zstd"),
        "upload_hash": "ab".repeat(32),
        "original_hash": sha,
        "worker_id": "gpu-1",
        "stats": {"ratio": 2.5},
    });
    let completed = event(dir.path(), "event.json", payload.clone());

    let out = panini(&["apply-callback", "--payload", &completed], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("metadata.json") && stdout.contains("queued → completed"),
        "{stdout}"
    );
    let meta = read_json(&metadata);
    assert_eq!(meta["status"], "completed");
    assert_eq!(meta["upload_path"], format!("chunks/{sha}.zstd"));
    assert_eq!(meta["worker_id"], "gpu-1");
    let after_first = std::fs::read(&metadata).unwrap();

    // GitHub may deliver the event twice: nothing changes, and it says so.
    let out = panini(&["apply-callback", "--payload", &completed], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already completed"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&metadata).unwrap(), after_first);

    // Refused, exit 1, one error line naming what is wrong, and nothing written: a path
    // outside the tree, a completion for other content, an event of another type.
    let mut outside = payload.clone();
    outside["chunk_path"] = json!("pending_compression/../../etc");
    let mut other_content = payload.clone();
    other_content["chunk_path"] = json!("pending_compression/app/chunk_0001");
    let wrong_type = dir.path().join("wrong.json");
    std::fs::write(
        &wrong_type,
        json!({"action": "push", "client_payload": payload}).to_string(),
    )
    .unwrap();
    let cases = [
        (
            event(dir.path(), "outside.json", outside),
            [
                "pending_compression/../../etc",
                "pending_compression/../../etc",
            ],
        ),
        (
            event(dir.path(), "other.json", other_content),
            ["pending_compression/app/chunk_0001", "original_hash"],
        ),
        (
            wrong_type.to_str().unwrap().to_owned(),
            ["wrong.json", "chunk_compressed"],
        ),
    ];
    let second = dir
        .path()
        .join("pending_compression/app/chunk_0001/metadata.json");
    let second_before = std::fs::read(&second).unwrap();
    for (file, needles) in cases {
        let out = panini(&["apply-callback", "--payload", &file], dir.path());
        assert_eq!(out.status.code(), Some(1), "{file}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{file}: {stderr}"));
        assert!(needles.iter().all(|n| error.contains(n)), "{file}: {error}");
        assert_eq!(std::fs::read(&metadata).unwrap(), after_first, "{file}");
        assert_eq!(std::fs::read(&second).unwrap(), second_before, "{file}");
    }
}
