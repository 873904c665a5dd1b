//! `GET /metrics` read by an independent parser: the official Python client's
//! (`prometheus_client.parser.text_string_to_metric_families`) must parse the whole
//! exposition, every family must have the type its name promises, and the counters must
//! move by exactly what a real, signed webhook batch did.

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use chunk_model::{Sha256Digest, WebhookRequest};
use support::{RunningWorker, config, make_tree, post_signed, secure};
use uploader::LocalDir;

/// One parsed family: its type and its samples (name, labels, value).
#[derive(Debug, serde::Deserialize)]
struct Family {
    #[serde(rename = "type")]
    kind: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// The Python that has `prometheus_client`: the workspace's `.venv` (where `cargo xtask
/// ci` installs it), else `python3` on `PATH` (CI puts the venv first).
fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Parses `text` with the official Python client's parser; fails the test on any line
/// it rejects.
fn parse(text: &str) -> BTreeMap<String, Family> {
    const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    if family.name in out:
        sys.exit(f"family {family.name} appears twice")
    out[family.name] = {
        "type": family.type,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client rejects the exposition (install it with \
         `.venv/bin/pip install prometheus-client`, or run `cargo xtask ci`):\n{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The value of the sample `name` with `labels` (none: `&[]`).
fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|(n, l, _)| n == name && *l == labels)
        .map_or(0.0, |(_, _, v)| *v)
}

/// POSTs every chunk of `tree` in one signed `compress_batch`; it must be accepted.
async fn post_batch(worker: &RunningWorker, tree: &support::Tree) {
    let body = serde_json::to_vec(&WebhookRequest::CompressBatch {
        chunks: tree.infos(),
        repository: None,
        workflow: None,
    })
    .unwrap();
    let (status, answer) = post_signed(worker, &body).await;
    assert_eq!(status, 202, "{answer}");
}

async fn scrape(worker: &RunningWorker) -> (String, BTreeMap<String, Family>) {
    let response = worker.read("/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().await.unwrap();
    let families = parse(&text);
    (text, families)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_with_the_official_client_and_count_a_real_batch() {
    const SIZE: usize = 100_000;
    let mut tree = make_tree(1, 4, SIZE);
    // The last chunk's bytes do not match the hash the request carries: it fails.
    tree.chunks[3].0.hash = Some(Sha256Digest::of(b"not these bytes"));
    let bucket = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(LocalDir::new(bucket.path()).unwrap());
    let worker = RunningWorker::start(secure(config(&tree, store))).await;

    let (_, before) = scrape(&worker).await;

    // A real batch, signed as the dispatcher signs it: three chunks stored, one failed.
    post_batch(&worker, &tree).await;
    worker.wait_reported(4).await;
    let (after_text, after) = scrape(&worker).await;
    // Every family (`http_responses` has its first sample now), with the type its name
    // promises (units in the names, `_total` on counters), and nothing the parser could
    // not type.
    let expected = [
        ("panini_worker_chunks_accepted", "counter"),
        ("panini_worker_chunks_completed", "counter"),
        ("panini_worker_chunks_deduplicated", "counter"),
        ("panini_worker_chunks_failed", "counter"),
        ("panini_worker_replays", "counter"),
        ("panini_worker_input_bytes", "counter"),
        ("panini_worker_output_bytes", "counter"),
        ("panini_worker_callback_failures", "counter"),
        ("panini_worker_git_fetches", "counter"),
        ("panini_worker_recipes_published", "counter"),
        ("panini_worker_recipes_found", "counter"),
        ("panini_worker_recipe_failures", "counter"),
        ("panini_worker_http_responses", "counter"),
        ("panini_worker_chunks_queued", "gauge"),
        ("panini_worker_chunks_in_flight", "gauge"),
        ("panini_worker_chunks_waiting_for_commit", "gauge"),
        ("panini_worker_compress_batch_seconds", "histogram"),
        ("panini_worker_build_info", "gauge"),
    ];
    let names: Vec<&str> = after.keys().map(String::as_str).collect();
    let mut wanted: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    wanted.sort_unstable();
    assert_eq!(names, wanted, "{after_text}");
    for (name, kind) in expected {
        assert_eq!(after[name].kind, kind, "{name}: {after_text}");
    }
    for (family, parsed) in &after {
        if parsed.kind == "counter" {
            for (sample, _, _) in &parsed.samples {
                assert_eq!(sample, &format!("{family}_total"), "{after_text}");
            }
        }
    }
    assert_eq!(
        value(
            &after,
            "panini_worker_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "{after_text}"
    );

    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let input: usize = tree.chunks[..3].iter().map(|(_, b)| b.len()).sum();
    for (name, by) in [
        ("panini_worker_chunks_accepted_total", 4.0),
        ("panini_worker_chunks_completed_total", 3.0),
        ("panini_worker_chunks_deduplicated_total", 0.0),
        ("panini_worker_chunks_failed_total", 1.0),
        ("panini_worker_input_bytes_total", input as f64),
        ("panini_worker_replays_total", 0.0),
    ] {
        assert_eq!(moved(name, &[]), by, "{name}:\n{after_text}");
    }
    assert_eq!(
        moved("panini_worker_http_responses_total", &[("code", "202")]),
        1.0,
        "{after_text}"
    );
    let output = moved("panini_worker_output_bytes_total", &[]);
    assert!(output > 0.0 && output < input as f64, "{after_text}");
    let batches = moved("panini_worker_compress_batch_seconds_count", &[]);
    assert!(batches >= 1.0, "{after_text}");
    assert_eq!(
        moved(
            "panini_worker_compress_batch_seconds_bucket",
            &[("le", "+Inf")]
        ),
        batches,
        "{after_text}"
    );

    // The same three chunks again, in a new delivery: found stored, nothing compressed.
    tree.chunks.truncate(3);
    post_batch(&worker, &tree).await;
    worker.wait_reported(7).await;
    let (again_text, again) = scrape(&worker).await;
    let moved = |name: &str| value(&again, name, &[]) - value(&after, name, &[]);
    for (name, by) in [
        ("panini_worker_chunks_accepted_total", 3.0),
        ("panini_worker_chunks_completed_total", 3.0),
        ("panini_worker_chunks_deduplicated_total", 3.0),
        ("panini_worker_chunks_failed_total", 0.0),
        ("panini_worker_input_bytes_total", 0.0),
        ("panini_worker_output_bytes_total", 0.0),
        ("panini_worker_compress_batch_seconds_count", 0.0),
    ] {
        assert_eq!(moved(name), by, "{name}:\n{again_text}");
    }
    worker.stop().await;
}

/// Two chunks of two files with the same bytes, in one delivery: one object is stored,
/// and the worker's counters say so (the other chunk deduplicated, its frame not counted
/// as bytes stored), whether the two met in one batch or the second found the first's
/// object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_chunks_in_one_delivery_count_one_object_stored() {
    let mut tree = make_tree(2, 1, 100_000);
    let (first, bytes) = tree.chunks[0].clone();
    let second = tree.chunks[1].0.clone();
    let chunk_dir = tree.root.join(&second.chunk_path);
    std::fs::write(chunk_dir.join(chunk_model::layout::DATA_FILE), &bytes).unwrap();
    let mut meta = tree.metadata(&second);
    meta.original_hash = first.hash.unwrap();
    chunk_model::json_file::write_atomic(
        &chunk_dir.join(chunk_model::layout::METADATA_FILE),
        &meta,
    )
    .unwrap();
    tree.chunks[1].0.hash = first.hash;
    tree.chunks[1].1 = bytes;
    let bucket = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(LocalDir::new(bucket.path()).unwrap());
    let worker = RunningWorker::start(secure(config(&tree, store))).await;

    post_batch(&worker, &tree).await;
    worker.wait_reported(2).await;
    let (text, after) = scrape(&worker).await;
    let objects: Vec<PathBuf> = std::fs::read_dir(bucket.path().join("chunks"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let stored = std::fs::metadata(&objects[0]).unwrap().len();
    for (name, want) in [
        ("panini_worker_chunks_completed_total", 2.0),
        ("panini_worker_chunks_deduplicated_total", 1.0),
        ("panini_worker_input_bytes_total", 100_000.0),
        ("panini_worker_output_bytes_total", stored as f64),
    ] {
        assert_eq!(value(&after, name, &[]), want, "{name}:\n{text}");
    }
    worker.stop().await;
}
