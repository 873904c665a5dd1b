//! The command line end to end, as a user runs it: the real `xtask` binary on generated
//! files, in a temporary work directory.

mod support;

use std::path::Path;
use std::time::Duration;

use support::Output;

/// Generous: a loaded 2-core machine runs these in seconds.
const LIMIT: Duration = Duration::from_secs(300);

fn xtask(args: &[&str], cwd: &Path) -> Output {
    support::xtask(args, cwd, LIMIT)
}

#[test]
fn pipeline_rebuilds_every_file_and_a_second_run_uploads_nothing() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    let args = [
        "pipeline",
        "--work-dir",
        dir,
        "--sample-mib",
        "6",
        "--chunk-size",
        "262144",
        "--json",
    ];

    let first = xtask(&args, work.path());
    assert!(first.status.success(), "{}", first.text());
    let summary: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON summary");
    let files = summary["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{summary:#}");
    assert!(files.iter().all(|f| f["verified"] == true), "{summary:#}");
    assert!(
        summary["chunks_stored_now"].as_u64().unwrap() > 0,
        "{summary:#}"
    );

    let second = xtask(&args, work.path());
    assert!(second.status.success(), "{}", second.text());
    let again: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(again["chunks_stored_now"], 0, "{again:#}");
    assert_eq!(again["bytes_stored_now"], 0, "{again:#}");
    assert!(
        again["chunks_already_stored"].as_u64().unwrap() > 0,
        "{again:#}"
    );

    // The bucket alone rebuilds every file.
    let bucket = work.path().join("bucket");
    let verify = xtask(
        &["verify", "--bucket", bucket.to_str().unwrap()],
        work.path(),
    );
    assert!(verify.status.success(), "{}", verify.text());
    assert_eq!(
        String::from_utf8_lossy(&verify.stdout)
            .matches(": ok,")
            .count(),
        4,
        "{}",
        verify.text()
    );
}

#[test]
fn chunk_reports_bad_inputs_by_path_and_still_chunks_the_good_ones() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("notes.txt"), "hello panini\n".repeat(1000)).unwrap();
    std::fs::write(work.path().join("empty.bin"), b"").unwrap();
    std::fs::create_dir(work.path().join("adir")).unwrap();

    let output = xtask(
        &["chunk", "notes.txt", "empty.bin", "adir", "missing.bin"],
        work.path(),
    );
    assert!(!output.status.success(), "{}", output.text());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for bad in ["empty.bin", "adir", "missing.bin"] {
        assert!(
            stderr.contains(bad),
            "error for {bad} missing:\n{}",
            output.text()
        );
    }
    assert!(
        work.path()
            .join("pending_compression/notes/manifest.json")
            .is_file()
    );

    // The same name again is a collision unless --force.
    let again = xtask(&["chunk", "notes.txt"], work.path());
    assert!(!again.status.success(), "{}", again.text());
    let forced = xtask(&["chunk", "notes.txt", "--force"], work.path());
    assert!(forced.status.success(), "{}", forced.text());
}
