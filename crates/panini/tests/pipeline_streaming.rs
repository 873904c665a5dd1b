//! `panini pipeline` on a file of many chunks (issue #17, "stream the job"): its chunks
//! go out to the workers while the file is still being cut, a batch at a time, and the
//! rest once its tree is complete; no chunk goes out twice, and the file is rebuilt bit
//! for bit (checked with stock `sha256sum`). Which requests the in-process workers
//! accepted is read from their own log lines.

mod support;

use support::{panini_ok, sha256sum, stage_row, text};

/// The chunk counts of the webhooks the workers logged as accepted, in log order.
fn accepted_requests(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
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
    let mut requests = accepted_requests(&stderr);
    requests.sort_unstable();
    assert_eq!(requests, [2, 8, 10, 10, 10], "{stderr}");

    // The file rebuilt from the bucket alone is the input, by an independent hash.
    let rebuilt = root.join("rebuilt.bin");
    panini_ok(
        &[
            "reconstruct",
            "big",
            "--bucket",
            "work/bucket",
            "--output",
            "rebuilt.bin",
        ],
        root,
        &[],
    );
    assert_eq!(sha256sum(&rebuilt), sha256sum(&input));
}
