//! Two things the worker promises that no other test held it to:
//!
//! - its GitHub callback (`repository_dispatch`) is retried on `5xx` and `429` and given
//!   up at once on any other `4xx`, counted in `panini_worker_callback_failures_total`;
//! - every document it sends or serves (the `202` body, a `401` body, `GET /status`,
//!   `GET /failures`, the callback's `client_payload`, the completion records in the
//!   bucket), and the webhook bodies the real dispatcher sends it, match the published
//!   JSON Schemas in `docs/schemas/`, as checked by an independent validator (Python's
//!   `jsonschema`).
//!
//! Real parts only: the worker serves on a listener bound to port 0 in this process, the
//! fake GitHub API is an axum server on another, and every wait polls a condition with a
//! deadline.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use chunk_model::{ChunkInfo, ChunkMetadata, Priority, Sha256Digest, Timestamp};
use tokio::sync::oneshot;
use uploader::LocalDir;
use worker::{GithubConfig, Summary, Worker, WorkerConfig, WorkerError};

const TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "worker-token-for-the-documents-test";
const SIGNING_KEY: &[u8] = b"signing-key-for-the-documents-test";

/// `pending_compression/f/chunk_NNNN` with `n` chunks of text under a repository root.
fn make_tree(root: &Path, n: u64) -> Vec<ChunkInfo> {
    (0..n)
        .map(|id| {
            let bytes = format!("chunk {id} of the worker documents test\n")
                .repeat(2000)
                .into_bytes();
            let rel = format!("pending_compression/f/chunk_{id:04}");
            let dir = root.join(&rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("data.bin"), &bytes).unwrap();
            let hash = Sha256Digest::of(&bytes);
            let meta = ChunkMetadata::new_pending(
                id,
                id * bytes.len() as u64,
                bytes.len() as u64,
                hash,
                "FIXED_SIZE",
                None,
                Timestamp::now(),
            );
            chunk_model::json_file::write_atomic(&dir.join("metadata.json"), &meta).unwrap();
            ChunkInfo {
                chunk_path: rel,
                chunk_id: id,
                pattern_type: "FIXED_SIZE".into(),
                size: bytes.len() as u64,
                hash: Some(hash),
                base_dir: "pending_compression/f".into(),
                is_keyframe: false,
                priority: Priority::Normal,
                staged_object: None,
                extra: Default::default(),
            }
        })
        .collect()
}

/// A fake GitHub API on its own port: answers `POST /repos/o/r/dispatches` with the
/// scripted statuses in turn (the last one repeats) and keeps every body. Stopped on drop.
struct FakeGithub {
    url: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    server: tokio::task::JoinHandle<()>,
}

type GithubState = (Arc<Mutex<Vec<serde_json::Value>>>, Arc<Vec<u16>>);

async fn dispatches(State((received, script)): State<GithubState>, body: String) -> StatusCode {
    let mut received = received.lock().unwrap();
    received.push(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null));
    let n = received.len() - 1;
    StatusCode::from_u16(script[n.min(script.len() - 1)]).unwrap()
}

impl FakeGithub {
    async fn start(script: &[u16]) -> Self {
        let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let app = axum::Router::new()
            .route("/repos/o/r/dispatches", axum::routing::post(dispatches))
            .with_state((received.clone(), Arc::new(script.to_vec())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            received,
            server,
        }
    }

    fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A worker in this process on a listener it was handed; aborted on drop.
struct RunningWorker {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<Summary, WorkerError>>>,
    http: reqwest::Client,
}

impl RunningWorker {
    async fn start(root: &Path, bucket: &Path, github: &str) -> Self {
        let mut config = WorkerConfig::new(root, Arc::new(LocalDir::new(bucket).unwrap()));
        config.token = Some(TOKEN.into());
        config.signing_key = Some(SIGNING_KEY.to_vec());
        config.engine = gpu_compress::EngineChoice::Cpu;
        config.worker_id = "documents-worker".into();
        config.github = Some(GithubConfig::from_slug("o/r", "ghp_test", github).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(Worker::new(config).unwrap().serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
            http: reqwest::Client::builder().timeout(TIMEOUT).build().unwrap(),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The value of an unlabelled counter in `GET /metrics`.
    async fn counter(&self, name: &str) -> f64 {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    }

    /// Graceful shutdown: returns once everything accepted is finished and reported.
    async fn stop(mut self) -> Summary {
        let _ = self.shutdown.take().unwrap().send(());
        tokio::time::timeout(TIMEOUT, self.handle.take().unwrap())
            .await
            .expect("the worker stops")
            .unwrap()
            .unwrap()
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

/// Polls `check` every 20 ms until it holds, failing the test after [`TIMEOUT`].
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + TIMEOUT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `chunks` as one signed batch, as the real dispatcher builds and signs it;
/// returns the status and body of the answer.
async fn send_batch(worker: &RunningWorker, chunks: Vec<ChunkInfo>) -> (u16, String) {
    let dispatcher = dispatcher_for(worker, dispatcher::Mode::Batch(10));
    let delivery = dispatcher.plan(chunks).remove(0);
    let now = chrono::Utc::now().timestamp();
    let response = worker
        .http
        .post(format!("http://{}/webhook", worker.addr))
        .headers(dispatcher.headers(&delivery, now))
        .body(delivery.body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn dispatcher_for(worker: &RunningWorker, mode: dispatcher::Mode) -> dispatcher::Dispatcher {
    let endpoint = dispatcher::Endpoint::from_url(format!("http://{}/webhook", worker.addr));
    let mut config = dispatcher::DispatchConfig::new(vec![endpoint]);
    config.token = Some(TOKEN.into());
    config.signing_key = Some(SIGNING_KEY.to_vec());
    config.mode = mode;
    dispatcher::Dispatcher::new(config).unwrap()
}

/// Validates each document against `docs/schemas/<schema>` with Python's `jsonschema`
/// (the validator for the draft the schema's `$schema` names).
fn validate(schema: &str, documents: &[serde_json::Value]) {
    assert!(!documents.is_empty(), "no documents for {schema}");
    const CHECK: &str = r#"
import json, sys
from jsonschema import validators
schema = json.load(open(sys.argv[1]))
cls = validators.validator_for(schema)
cls.check_schema(schema)
validator = cls(schema)
errors = []
for i, doc in enumerate(json.load(sys.stdin)):
    for e in validator.iter_errors(doc):
        errors.append(f"document {i}: /{'/'.join(map(str, e.absolute_path))}: {e.message}")
print("\n".join(errors))
sys.exit(1 if errors else 0)
"#;
    let schema_path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "../../docs/schemas", schema]
        .iter()
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", CHECK, schema_path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let list = serde_json::to_vec(documents).unwrap();
    child.stdin.take().unwrap().write_all(&list).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{schema} rejects:\n{}{}\ndocuments: {documents:#?}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_on_the_wire_matches_its_published_schema() {
    let repo = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let mut infos = make_tree(repo.path(), 3);
    // Bytes that do not match the hash: a failure for /failures and the callback.
    infos[2].hash = Some(Sha256Digest::of(b"something else"));
    let github = FakeGithub::start(&[204]).await;
    let worker = RunningWorker::start(repo.path(), bucket.path(), &github.url).await;

    // The bodies the real dispatcher sends, in both modes.
    let bodies: Vec<serde_json::Value> = [dispatcher::Mode::PerChunk, dispatcher::Mode::Batch(2)]
        .into_iter()
        .flat_map(|mode| dispatcher_for(&worker, mode).plan(infos.clone()))
        .map(|d| serde_json::from_slice(&d.body).unwrap())
        .collect();
    assert_eq!(bodies.len(), 5);
    validate("webhook_request.schema.json", &bodies);

    let (status, accepted) = send_batch(&worker, infos.clone()).await;
    assert_eq!(status, 202, "{accepted}");
    validate("webhook_accepted.schema.json", &[json(&accepted)]);

    let refused = worker
        .http
        .post(format!("http://{}/webhook", worker.addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    validate(
        "worker_error.schema.json",
        &[json(&refused.text().await.unwrap())],
    );

    wait_until("all three chunks are done", || async {
        let status = json(&worker.get("/status").await.1);
        status["completed"].as_u64().unwrap() + status["failed"].as_u64().unwrap() == 3
    })
    .await;
    let (code, status) = worker.get("/status").await;
    assert_eq!(code, 200);
    validate("worker_status.schema.json", &[json(&status)]);
    let (code, failures) = worker.get("/failures").await;
    assert_eq!(code, 200);
    let failures = json(&failures);
    assert_eq!(failures["total"], 1, "{failures:#}");
    validate("worker_failures.schema.json", &[failures]);

    let summary = worker.stop().await;
    assert_eq!((summary.completed, summary.failed), (2, 1));
    let payloads: Vec<serde_json::Value> = github
        .received()
        .into_iter()
        .map(|body| body["client_payload"].clone())
        .collect();
    assert_eq!(payloads.len(), 3);
    validate("chunk_compressed.schema.json", &payloads);
    let records: Vec<serde_json::Value> = std::fs::read_dir(bucket.path().join("status"))
        .unwrap()
        .map(|e| json(&std::fs::read_to_string(e.unwrap().path()).unwrap()))
        .collect();
    assert_eq!(records.len(), 2);
    validate("chunk_compressed.schema.json", &records);
}

/// One chunk through a worker whose GitHub API answers `script`; returns what the API
/// received and the worker's `panini_worker_callback_failures_total` once the callback
/// is settled (`settled` says when, from the requests received).
async fn callback_with_github_answering(
    script: &[u16],
    settled_after: usize,
    failures_expected: f64,
) -> Vec<serde_json::Value> {
    let repo = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let infos = make_tree(repo.path(), 1);
    let github = FakeGithub::start(script).await;
    let worker = RunningWorker::start(repo.path(), bucket.path(), &github.url).await;
    let (status, body) = send_batch(&worker, infos).await;
    assert_eq!(status, 202, "{body}");
    wait_until("the callback is settled", || async {
        github.received().len() >= settled_after
            && worker
                .counter("panini_worker_callback_failures_total")
                .await
                == failures_expected
    })
    .await;
    // Shutting down finishes every report in flight: nothing more may arrive after.
    let summary = worker.stop().await;
    assert_eq!(summary.completed, 1);
    github.received()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_answered_5xx_or_429_is_retried_until_it_is_delivered() {
    let received = callback_with_github_answering(&[503, 429, 502, 204], 4, 0.0).await;
    assert_eq!(received.len(), 4, "three retries, then delivered");
    assert!(
        received.iter().all(|b| *b == received[0]),
        "the same event each time"
    );
    assert_eq!(received[0]["client_payload"]["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_refused_with_a_4xx_is_given_up_at_once() {
    let received = callback_with_github_answering(&[422], 1, 1.0).await;
    assert_eq!(received.len(), 1, "a 4xx other than 429 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_keeps_failing_is_given_up_after_its_tries() {
    let received = callback_with_github_answering(&[500], 4, 1.0).await;
    assert_eq!(received.len(), 4, "four tries in all");
}
