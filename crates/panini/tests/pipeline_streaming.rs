//! `panini pipeline` on a file of many chunks (issue #17, "stream the job"): its chunks
//! go out to the workers while the file is still being cut, a batch at a time, and the
//! rest once its tree is complete; no chunk goes out twice, and the file is rebuilt bit
//! for bit (checked with stock `sha256sum`). Which requests the in-process workers
//! accepted is read from their own log lines.

mod support;

use std::path::Path;

use support::{panini_ok, sha256sum, stage_row, text};

#[test]
fn a_file_of_many_chunks_is_dispatched_while_it_is_cut_and_each_chunk_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // 40 chunks of at most 64 KiB, cut by size so that the count is known.
    let input = root.join("big.bin");
    std::fs::write(&input, samples::random_bytes(40 * 65_536 - 1_000, 17)).unwrap();

    let out = panini_ok(
        &[
            "pipeline",
            "big.bin",
            "--strategy",
            "size",
            "--chunk-size",
            "64K",
            "--work-dir",
            "work",
            "--json",
            "-v",
        ],
        root,
        &[],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", text(&out)));
    let file = &report["files"][0];
    assert_eq!(file["verified"], true, "{report:#}");
    assert_eq!(report["chunks_stored_now"], 40, "{report:#}");
    assert_eq!(
        stage_row(&report, "dispatch")["note"],
        "40 chunks over HTTP to 2 workers",
        "each chunk dispatched once: {report:#}"
    );

    // The first 32 chunks went out as soon as they were cut (in requests of at most 10,
    // the dispatcher's batch), the last 8 once the file's tree was complete. Cut first
    // and dispatched after, the 40 would have gone out as four requests of 10.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut requests = support::accepted_requests(stderr.lines());
    requests.sort_unstable();
    assert_eq!(requests, [2, 8, 10, 10, 10], "{stderr}");

    // The file rebuilt from the bucket alone is the input, by an independent hash.
    assert_rebuilds_from(root, "work/bucket", "big", &input);
}

/// `panini reconstruct NAME` from `bucket` (under `root`) writes `source`'s bytes, by an
/// independent hash.
fn assert_rebuilds_from(root: &Path, bucket: &str, name: &str, source: &Path) {
    let output = format!("{name}.rebuilt");
    let args = ["reconstruct", name, "--bucket", bucket, "--output", &output];
    panini_ok(&args, root, &[]);
    assert_eq!(sha256sum(&root.join(&output)), sha256sum(source), "{name}");
}

/// What a run stopped while it was streaming a file leaves: the file's directory with
/// its first chunks and no `manifest.json` (written last). Every command names it, the
/// other files go on, nothing of it is freed, and chunking the file again mends it.
#[test]
fn a_cut_that_did_not_finish_is_named_by_every_command_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let big = root.join("big.bin");
    let small = root.join("small.bin");
    std::fs::write(&big, samples::random_bytes(6 * 65_536 - 1_000, 5)).unwrap();
    std::fs::write(&small, samples::random_bytes(20_000, 6)).unwrap();
    let chunk = |files: &[&str], extra: &[&str]| {
        let mut args = vec!["chunk", "--base", "pc", "--strategy", "size"];
        args.extend(["--chunk-size", "64K"]);
        args.extend(files);
        args.extend(extra);
        panini_ok(&args, root, &[]);
    };
    chunk(&["big.bin", "small.bin"], &[]);
    // Cut off after its fourth chunk, before the manifest.
    std::fs::remove_file(root.join("pc/big/manifest.json")).unwrap();
    std::fs::remove_dir_all(root.join("pc/big/chunk_0004")).unwrap();
    std::fs::remove_dir_all(root.join("pc/big/chunk_0005")).unwrap();

    let status = panini_ok(&["status", "--base", "pc"], root, &[]);
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains("invalid: pc/big/manifest.json: missing, yet the file has chunks"),
        "{}",
        text(&status)
    );

    let pipeline = |work: &str| {
        let args = ["pipeline", "--base", "pc", "--work-dir", work, "--json"];
        let out = support::panini(&args, root, &[]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", text(&out)));
        (out, report)
    };
    let (out, report) = pipeline("work");
    assert!(!out.status.success(), "a file not rebuilt fails the run");
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{report:#}");
    assert_eq!(files[0]["name"], "big");
    assert_eq!(files[0]["verified"], false);
    let error = files[0]["error"].as_str().unwrap();
    assert!(
        error.ends_with("pc/big: chunks but no manifest.json (the file's cut did not finish, or its manifest was removed): chunk the file again"),
        "{error}"
    );
    assert_eq!(files[1]["name"], "small");
    assert_eq!(
        files[1]["verified"], true,
        "the other file goes on: {report:#}"
    );
    assert_rebuilds_from(root, "work/bucket", "small", &small);

    // Prune frees the rebuilt file's bytes, none of the unfinished one's.
    let pruned = panini_ok(
        &["prune", "--bucket", "work/bucket", "--base", "pc", "--json"],
        root,
        &[],
    );
    let pruned: serde_json::Value = serde_json::from_slice(&pruned.stdout).unwrap();
    assert_eq!(pruned["data_files_removed"], 1, "{pruned:#}");
    assert!(
        pruned["kept"][0]
            .as_str()
            .unwrap()
            .ends_with("its chunks' data.bin kept"),
        "{pruned:#}"
    );
    for i in 0..4 {
        assert!(root.join(format!("pc/big/chunk_{i:04}/data.bin")).is_file());
    }

    // As the error says: chunked again, the file is rebuilt, its first chunks found
    // stored already.
    chunk(&["big.bin"], &["--force"]);
    let (out, report) = pipeline("work");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report["files"][0]["verified"], true, "{report:#}");
    assert_eq!(report["chunks_already_stored"], 4, "{report:#}");
    assert_rebuilds_from(root, "work/bucket", "big", &big);
}
