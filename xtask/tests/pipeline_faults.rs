//! The whole pipeline under the faults a real deployment meets: Cloud Storage (the
//! emulator) instead of a directory, storage answering 503 for a while, a worker process
//! killed mid-run and restarted, and a corrupted `data.bin`. Each runs the real `xtask`
//! binary; each checks that every file that can be rebuilt is rebuilt bit for bit from
//! the bucket alone and that nothing is lost.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gcs_emulator::fault_proxy::{Fault, FaultProxy};
use support::{BUCKET, Running, wait_until, xtask};

/// Generous: a loaded 2-core machine runs each pipeline in seconds.
const LIMIT: Duration = Duration::from_secs(300);

/// A small sample set cut small, so every file has several chunks.
const SMALL_RUN: [&str; 4] = ["--sample-mib", "6", "--chunk-size", "262144"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn assert_every_file_verified(summary: &serde_json::Value, files: usize) {
    let rows = summary["files"].as_array().expect("files in the summary");
    assert_eq!(rows.len(), files, "{summary:#}");
    for row in rows {
        assert_eq!(row["verified"], true, "{row:#} in {summary:#}");
    }
}

/// `cargo xtask verify` rebuilds `files` files from `bucket` alone.
fn assert_bucket_rebuilds(bucket: &str, endpoint: Option<&str>, cwd: &Path, files: usize) {
    let mut args = vec!["verify", "--bucket", bucket];
    if let Some(endpoint) = endpoint {
        args.extend(["--endpoint", endpoint]);
    }
    let verify = xtask(&args, cwd, LIMIT);
    assert!(verify.status.success(), "{}", verify.text());
    let ok = String::from_utf8_lossy(&verify.stdout)
        .matches(": ok,")
        .count();
    assert_eq!(ok, files, "{}", verify.text());
}

#[test]
fn pipeline_against_the_gcs_emulator_rebuilds_every_file_and_a_rerun_uploads_nothing() {
    let emulator = support::start_emulator();
    let endpoint = emulator.endpoint();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    let bucket = format!("gs://{BUCKET}/pipeline");
    let mut args = vec!["pipeline", "--work-dir", dir, "--json"];
    args.extend(SMALL_RUN);
    args.extend(["--bucket", &bucket, "--endpoint", &endpoint]);

    let first = xtask(&args, work.path(), LIMIT);
    assert!(first.status.success(), "{}", first.text());
    let summary = first.json();
    assert_every_file_verified(&summary, 4);
    assert!(summary["chunks_stored_now"].as_u64().unwrap() > 0);

    let second = xtask(&args, work.path(), LIMIT);
    assert!(second.status.success(), "{}", second.text());
    let again = second.json();
    assert_every_file_verified(&again, 4);
    assert_eq!(again["chunks_stored_now"], 0, "{again:#}");
    assert!(again["chunks_already_stored"].as_u64().unwrap() > 0);

    assert_bucket_rebuilds(&bucket, Some(&endpoint), work.path(), 4);
}

/// Raw bytes staged in Cloud Storage, read from there by the workers, and pruned once
/// every file is rebuilt: the staging/ prefix is empty afterwards (deletes against the
/// real JSON API) and the bucket still rebuilds every file.
#[test]
fn staging_and_pruning_in_the_gcs_emulator_loses_nothing() {
    let emulator = support::start_emulator();
    let endpoint = emulator.endpoint();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    let bucket = format!("gs://{BUCKET}/staged");
    let mut args = vec![
        "pipeline",
        "--work-dir",
        dir,
        "--json",
        "--stage",
        "--prune",
    ];
    args.extend(SMALL_RUN);
    args.extend(["--bucket", &bucket, "--endpoint", &endpoint]);

    let run = xtask(&args, work.path(), LIMIT);
    assert!(run.status.success(), "{}", run.text());
    let summary = run.json();
    assert_every_file_verified(&summary, 4);
    let staged = &summary["staged"];
    assert!(staged["uploaded"].as_u64().unwrap() > 0, "{staged:#}");
    assert_eq!(staged["errors"], serde_json::json!([]), "{staged:#}");
    let pruned = &summary["pruned"];
    assert_eq!(
        pruned["staged_objects_deleted"], staged["uploaded"],
        "{pruned:#}"
    );
    assert_eq!(pruned["kept"], serde_json::json!([]), "{pruned:#}");

    // Nothing is left under staging/, as the JSON API lists it (while chunks/, listed the
    // same way, holds the stored chunks).
    let listed = |prefix: &str| -> usize {
        let out = std::process::Command::new("curl")
            .args(["--silent", "--fail", "--max-time", "30"])
            .arg(format!(
                "{endpoint}/storage/v1/b/{BUCKET}/o?prefix=staged/{prefix}"
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        listing
            .get("items")
            .map_or(0, |items| items.as_array().unwrap().len())
    };
    assert_eq!(listed("staging/"), 0);
    assert!(listed("chunks/") > 0);
    assert_bucket_rebuilds(&bucket, Some(&endpoint), work.path(), 4);
}

#[test]
fn storage_answering_503_for_a_while_delays_the_pipeline_but_loses_nothing() {
    let emulator = support::start_emulator();
    let runtime = runtime();
    // Every new connection meets a 503 while the budget lasts; the test adds budget
    // while the pipeline runs, so the outage comes back mid-run.
    let proxy = Arc::new(
        runtime
            .block_on(FaultProxy::start(
                emulator.addr(),
                vec![Fault::Status503],
                4,
            ))
            .unwrap(),
    );
    // Once the first outage is over (its faults used up), it comes back: two more. The
    // pipeline is then still storing, and it rebuilds every file through the proxy at the
    // end, so it meets them whatever its speed.
    let rearm = {
        let proxy = proxy.clone();
        std::thread::spawn(move || {
            wait_until("the first outage is used up", LIMIT, || {
                proxy.injected().len() >= 4
            });
            proxy.arm(2);
        })
    };

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    let bucket = format!("gs://{BUCKET}/outage");
    let through_proxy = proxy.endpoint();
    let mut args = vec!["pipeline", "--work-dir", dir, "--json"];
    args.extend(SMALL_RUN);
    args.extend(["--bucket", &bucket, "--endpoint", &through_proxy]);
    let run = xtask(&args, work.path(), LIMIT);
    rearm.join().expect("the outage was re-armed");

    assert!(run.status.success(), "{}", run.text());
    assert_every_file_verified(&run.json(), 4);
    let injected = proxy.injected();
    assert!(
        injected.len() > 4,
        "the outage did not come back mid-run: {injected:?}"
    );
    // Checked past the proxy: the emulator itself holds every file.
    assert_bucket_rebuilds(&bucket, Some(&emulator.endpoint()), work.path(), 4);
}

fn worker_status(port: u16, token: &str) -> Option<serde_json::Value> {
    let body = support::http_get_as(([127, 0, 0, 1], port).into(), "/status", Some(token))?;
    serde_json::from_str(&body).ok()
}

#[test]
fn a_worker_killed_mid_run_and_restarted_loses_nothing() {
    let emulator = support::start_emulator();
    let runtime = runtime();
    // Worker A reaches storage through a proxy that answers 503 to everything, so the
    // chunks it accepts are still in its hands when it is killed: the kill lands
    // mid-work every time, not by luck of timing.
    let outage = runtime
        .block_on(FaultProxy::start(
            emulator.addr(),
            vec![Fault::Status503],
            u64::MAX / 2,
        ))
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let bucket = format!("gs://{BUCKET}/killed");
    let token = "test-token-for-the-killed-worker";
    let (worker_a, addr_a) =
        support::start_worker_on_any_port(root, &bucket, Some(&outage.endpoint()), token);
    let (worker_b, addr_b) =
        support::start_worker_on_any_port(root, &bucket, Some(&emulator.endpoint()), token);
    let (port_a, port_b) = (addr_a.port(), addr_b.port());

    let (url_a, url_b) = (
        format!("http://127.0.0.1:{port_a}/webhook"),
        format!("http://127.0.0.1:{port_b}/webhook"),
    );
    let endpoint = emulator.endpoint();
    let mut args = vec!["pipeline", "--work-dir", root.to_str().unwrap(), "--json"];
    args.extend(SMALL_RUN);
    args.extend(["--bucket", &bucket, "--endpoint", &endpoint]);
    args.extend(["--worker", &url_a, "--worker", &url_b]);
    // A short lease: what the killed worker held is dispatched again after 3 s.
    args.extend(["--lease-s", "3"]);
    let mut pipeline_command = support::command(&args, root);
    pipeline_command.env("COLAB_AUTH_TOKEN", token);
    let mut pipeline = Running::spawn(pipeline_command);

    wait_until("worker A holds accepted chunks", LIMIT, || {
        assert!(
            pipeline.is_running(),
            "the pipeline ended before worker A got work:\n{}",
            pipeline.stderr_so_far()
        );
        worker_status(port_a, token).is_some_and(|s| s["accepted"].as_u64() > Some(0))
    });
    let killed = worker_a.kill();
    assert!(!killed.status.success(), "{}", killed.text());
    // Restarted on the same port, now with working storage.
    let worker_a = support::start_worker(port_a, root, &bucket, Some(&emulator.endpoint()), token);

    let run = pipeline.wait(LIMIT);
    assert!(run.status.success(), "{}", run.text());
    assert_every_file_verified(&run.json(), 4);

    // The chunks the killed worker held were dispatched again, and every chunk ended
    // completed.
    let mut redispatched = 0;
    let mut chunks = 0;
    for file in std::fs::read_dir(root.join("pending_compression")).unwrap() {
        let file = file.unwrap().path();
        // The tree also holds files of its own (its lock): only directories are files' chunks.
        if !file.is_dir() {
            continue;
        }
        for chunk in std::fs::read_dir(file).unwrap() {
            let metadata = chunk.unwrap().path().join("metadata.json");
            if !metadata.is_file() {
                continue;
            }
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
            assert_eq!(
                meta["status"],
                "completed",
                "{}: {meta:#}",
                metadata.display()
            );
            chunks += 1;
            if meta["attempts"].as_u64() >= Some(2) {
                redispatched += 1;
            }
        }
    }
    assert!(chunks > 4);
    assert!(redispatched > 0, "no chunk was dispatched a second time");
    drop((worker_a, worker_b));
    assert_bucket_rebuilds(&bucket, Some(&emulator.endpoint()), root, 4);
}

#[test]
fn a_corrupted_data_bin_fails_its_chunk_clearly_and_every_other_file_completes() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    let base = root.join("pending_compression");
    let files = samples::sample_set(&work.path().join("samples"), 6 << 20).unwrap();
    let mut chunk_args = vec!["chunk", "--output", base.to_str().unwrap()];
    chunk_args.extend(["--chunk-size", "262144"]);
    let file_args: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    chunk_args.extend(&file_args);
    let chunked = xtask(&chunk_args, work.path(), LIMIT);
    assert!(chunked.status.success(), "{}", chunked.text());

    // One byte of one chunk of the log changes after chunking.
    let damaged_file = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_str().unwrap().to_owned())
        .find(|name| name == "server")
        .expect("the sample set has server.log");
    let chunk_dir = base.join(&damaged_file).join("chunk_0001");
    let data = chunk_dir.join("data.bin");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(&data, &bytes).unwrap();

    let bucket = work.path().join("bucket");
    let run = xtask(
        &[
            "pipeline",
            "--base",
            base.to_str().unwrap(),
            "--work-dir",
            work.path().to_str().unwrap(),
            "--bucket",
            bucket.to_str().unwrap(),
            "--json",
        ],
        work.path(),
        LIMIT,
    );
    assert!(!run.status.success(), "{}", run.text());
    let summary = run.json();
    let rows = summary["files"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{summary:#}");
    for row in rows {
        if row["name"] == damaged_file.as_str() {
            assert_eq!(row["verified"], false, "{row:#}");
            let error = row["error"].as_str().unwrap();
            assert!(error.contains("chunk 1 is failed"), "{error}");
            assert!(error.contains("SHA-256 mismatch"), "{error}");
        } else {
            assert_eq!(row["verified"], true, "{row:#}");
        }
    }

    // The damaged chunk is failed with the reason, retried up to the detector's limit,
    // and still on disk as it was: nothing is deleted.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chunk_dir.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["status"], "failed", "{meta:#}");
    assert!(
        meta["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("SHA-256 mismatch")),
        "{meta:#}"
    );
    assert_eq!(
        meta["attempts"].as_u64(),
        Some(u64::from(detector::DEFAULT_MAX_ATTEMPTS)),
        "{meta:#}"
    );
    assert_eq!(std::fs::read(&data).unwrap(), bytes);

    // The other three rebuild from the bucket alone.
    assert_bucket_rebuilds(bucket.to_str().unwrap(), None, work.path(), 3);
}
