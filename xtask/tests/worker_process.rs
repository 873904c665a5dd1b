//! The commands GitHub Actions runs, against a worker service process: chunk → detect →
//! dispatch → the worker is stopped with SIGTERM → it finishes what it accepted and exits
//! 0 → sync marks every chunk completed from the bucket's records.

mod support;

use std::time::Duration;

use support::{Running, xtask};

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn sigterm_lets_the_worker_finish_what_it_accepted_and_sync_completes_every_chunk() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    let files = samples::sample_set(&root.join("inputs"), 24 << 20).unwrap();
    let log = files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "log"))
        .expect("the sample set has a log");
    let chunked = xtask(
        &["chunk", log.to_str().unwrap(), "--chunk-size", "65536"],
        root,
        LIMIT,
    );
    assert!(chunked.status.success(), "{}", chunked.text());

    let token = "token-for-the-sigterm-test";
    let bucket = root.join("bucket");
    let (worker, addr) =
        support::start_worker_on_any_port(root, bucket.to_str().unwrap(), None, token);
    let listen = addr.to_string();

    let detected = xtask(&["detect"], root, LIMIT);
    assert!(detected.status.success(), "{}", detected.text());
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("chunks_to_process.json")).unwrap())
            .unwrap();
    let chunk_count = listed.as_array().expect("a list of chunks").len();
    assert!(chunk_count > 10, "{listed:#}");

    let webhook = format!("http://{listen}/webhook");
    let mut dispatch = support::command(&["dispatch", "--webhook", &webhook, "--json"], root);
    dispatch.env("COLAB_AUTH_TOKEN", token);
    let dispatched = Running::spawn(dispatch).wait(LIMIT);
    assert!(dispatched.status.success(), "{}", dispatched.text());

    // Usually most of the batch is still in flight here (not asserted: timing).
    let before = support::http_get_as(addr, "/status", Some(token)).expect("/status answers");
    worker.terminate();
    let stopped = worker.wait(LIMIT);
    assert!(stopped.status.success(), "{}", stopped.text());
    // The worker's own account at exit: every chunk it accepted, it finished and
    // reported before exiting (the drain), none failed.
    let log = String::from_utf8_lossy(&stopped.stderr);
    let summary = log
        .lines()
        .find(|l| l.contains("stopped") && l.contains("accepted="))
        .unwrap_or_else(|| panic!("no exit summary:\n{}", stopped.text()));
    let field = |name: &str| -> u64 {
        summary
            .split_once(&format!("{name}="))
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {summary:?}"))
    };
    assert_eq!(
        (field("accepted"), field("completed"), field("failed")),
        (chunk_count as u64, chunk_count as u64, 0),
        "{summary}\nworker status at SIGTERM: {before}"
    );

    let synced = xtask(
        &["sync", "--bucket", bucket.to_str().unwrap(), "--json"],
        root,
        LIMIT,
    );
    assert!(synced.status.success(), "{}", synced.text());
    let status = xtask(&["status", "--json"], root, LIMIT);
    assert!(status.status.success(), "{}", status.text());
    let mut completed = 0;
    for chunk in std::fs::read_dir(root.join("pending_compression/server")).unwrap() {
        let metadata = chunk.unwrap().path().join("metadata.json");
        if metadata.is_file() {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
            assert_eq!(
                meta["status"],
                "completed",
                "{}: {meta:#}\nworker status at SIGTERM: {before}",
                metadata.display()
            );
            completed += 1;
        }
    }
    assert_eq!(completed, chunk_count, "{}", status.text());
}
