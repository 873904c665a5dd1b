//! `--chunk-size` and `--min-chunk-size` as a user gives them: the manifest records the
//! minimum, and every chunk but the file's header and tail lies between the two.

use std::process::Command;

#[test]
fn chunk_honours_the_minimum_and_maximum_given_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    std::fs::write(&log, samples::text_log(3 << 20, 21)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_panini"))
        .args(["chunk", "--chunk-size", "256K", "--min-chunk-size", "32K"])
        .arg(&log)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("pending_compression/server/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["min_chunk_size"], 32 << 10, "{manifest:#}");
    let sizes: Vec<u64> = manifest["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["size"].as_u64().unwrap())
        .collect();
    assert!(sizes.len() >= 12, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 256 << 10), "{sizes:?}");
    let inner = &sizes[..sizes.len() - 1];
    assert!(inner.iter().all(|&s| s >= 32 << 10), "{sizes:?}");
}
