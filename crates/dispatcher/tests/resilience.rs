//! The dispatcher against real HTTP servers on 127.0.0.1 that answer as a worker may:
//! `413` for a batch too large, `503` with and without `Retry-After`, a `202` that leaves
//! chunks out, no answer at all. What PROTOCOL.md promises for each is checked in the
//! report, in what the servers received and in the chunks' `metadata.json`.
//!
//! No sleep synchronises anything: a server that must hold requests waits on a counter
//! of arrivals, and every run is bounded by a deadline that fails the test instead of
//! hanging it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chunk_model::{ChunkInfo, ChunkMetadata, Priority, Sha256Digest, Status, Timestamp};
use dispatcher::{DispatchConfig, DispatchReport, Dispatcher, Endpoint, Mode, RetryPolicy};

/// Fails a run that would otherwise hang (a retry that waits out an hour-long backoff).
const DEADLINE: Duration = Duration::from_secs(60);

/// What one request to a fake worker carried.
#[derive(Debug, Clone)]
struct Seen {
    delivery_id: String,
    chunks: Vec<String>,
}

/// How a fake worker answers its `n`-th request (from 0).
#[derive(Clone)]
enum Answer {
    /// `202` listing every chunk of the request.
    Accept,
    /// `202` listing only these chunks.
    AcceptOnly(Vec<String>),
    /// This status, with `Retry-After: <s>` when given.
    Status(StatusCode, Option<u64>),
    /// Never answers (until the client gives up).
    Hang,
    /// Holds the request until `gate` has counted `needed` arrivals, then accepts.
    AcceptWhenAll(Arc<Gate>),
}

type Behaviour = Arc<dyn Fn(usize, &Seen) -> Answer + Send + Sync>;

/// Counts requests that arrived at any of the servers sharing it.
struct Gate {
    arrived: tokio::sync::watch::Sender<usize>,
    needed: usize,
}

impl Gate {
    fn new(needed: usize) -> Arc<Self> {
        Arc::new(Self {
            arrived: tokio::sync::watch::Sender::new(0),
            needed,
        })
    }

    async fn arrive_and_wait(&self) {
        self.arrived.send_modify(|n| *n += 1);
        let mut rx = self.arrived.subscribe();
        let _ = rx.wait_for(|n| *n >= self.needed).await;
    }
}

#[derive(Clone)]
struct FakeState {
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Behaviour,
}

/// A fake worker's webhook on a port it holds from bind to drop; stopped when dropped.
struct FakeWorker {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeWorker {
    async fn start(behaviour: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static) -> Self {
        let state = FakeState {
            seen: Arc::default(),
            behaviour: Arc::new(behaviour),
        };
        let seen = state.seen.clone();
        let app = axum::Router::new()
            .route("/webhook", axum::routing::post(webhook))
            .with_state(state);
        // The listener is bound here and handed to the server: no port is picked and
        // released for someone else to take.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, seen, server }
    }

    fn endpoint(&self, name: &str) -> Endpoint {
        Endpoint {
            name: name.to_owned(),
            url: format!("http://{}/webhook", self.addr),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn webhook(State(state): State<FakeState>, headers: HeaderMap, body: String) -> Response {
    let request: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    let chunks = match request["action"].as_str() {
        Some("compress_chunk") => vec![request["chunk_info"].clone()],
        Some("compress_batch") => request["chunks"].as_array().unwrap().clone(),
        other => panic!("unknown action {other:?}"),
    }
    .iter()
    .map(|c| c["chunk_path"].as_str().unwrap().to_owned())
    .collect::<Vec<_>>();
    let seen = Seen {
        delivery_id: headers["webhook-id"].to_str().unwrap().to_owned(),
        chunks,
    };
    let n = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    let accept = |paths: &[String]| {
        (
            StatusCode::ACCEPTED,
            json(serde_json::json!({"status": "accepted", "accepted": paths})),
        )
            .into_response()
    };
    match (state.behaviour)(n, &seen) {
        Answer::Accept => accept(&seen.chunks),
        Answer::AcceptOnly(paths) => accept(&paths),
        Answer::Status(status, retry_after) => {
            let mut response = (status, json(serde_json::json!({"error": "fake"}))).into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
            }
            response
        }
        Answer::Hang => std::future::pending().await,
        Answer::AcceptWhenAll(gate) => {
            gate.arrive_and_wait().await;
            accept(&seen.chunks)
        }
    }
}

fn json(value: serde_json::Value) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

/// A repository root with `n` pending chunks of one file under `pending_compression/f`,
/// and the chunk list the detector would give for them.
fn chunk_tree(n: u64) -> (tempfile::TempDir, PathBuf, Vec<ChunkInfo>) {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("pending_compression");
    let mut infos = Vec::new();
    for id in 0..n {
        let data = format!("chunk {id}").into_bytes();
        let rel = format!("pending_compression/f/chunk_{id:04}");
        let dir = root.path().join(&rel);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data.bin"), &data).unwrap();
        let hash = Sha256Digest::of(&data);
        let meta = ChunkMetadata::new_pending(
            id,
            id * 100,
            data.len() as u64,
            hash,
            "FIXED_SIZE",
            None,
            Timestamp::now(),
        );
        chunk_model::json_file::write_atomic(&dir.join("metadata.json"), &meta).unwrap();
        infos.push(ChunkInfo {
            chunk_path: rel,
            chunk_id: id,
            pattern_type: "FIXED_SIZE".to_owned(),
            size: data.len() as u64,
            hash: Some(hash),
            base_dir: "pending_compression/f".to_owned(),
            is_keyframe: false,
            priority: Priority::Normal,
            staged_object: None,
            extra: Default::default(),
        });
    }
    (root, base, infos)
}

fn metadata(root: &Path, chunk_path: &str) -> ChunkMetadata {
    chunk_model::json_file::read(&root.join(chunk_path).join("metadata.json")).unwrap()
}

/// Quick retries, so that a test never waits on a backoff it does not mean to.
fn config(endpoints: Vec<Endpoint>, base: &Path, mode: Mode) -> DispatchConfig {
    let mut config = DispatchConfig::new(endpoints);
    config.base = Some(base.to_owned());
    config.mode = mode;
    config.timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_tries: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    config
}

async fn run(config: DispatchConfig, chunks: Vec<ChunkInfo>) -> DispatchReport {
    let dispatcher = Dispatcher::new(config).unwrap();
    tokio::time::timeout(DEADLINE, dispatcher.run(chunks, |_| {}))
        .await
        .expect("the run ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_with_413_is_split_in_two_until_it_fits() {
    let (root, base, chunks) = chunk_tree(8);
    // Takes at most two chunks per request.
    let worker = FakeWorker::start(|_, seen| {
        if seen.chunks.len() > 2 {
            Answer::Status(StatusCode::PAYLOAD_TOO_LARGE, None)
        } else {
            Answer::Accept
        }
    })
    .await;
    let report = run(
        config(vec![worker.endpoint("w")], &base, Mode::Batch(8)),
        chunks.clone(),
    )
    .await;

    assert!(report.all_accepted(), "{report:#?}");
    let mut sizes: Vec<usize> = worker.seen().iter().map(|s| s.chunks.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [2, 2, 2, 2, 4, 4, 8], "8 → 4 + 4 → 2 + 2 + 2 + 2");
    // Each half is a new request with its own delivery id, and every chunk was accepted
    // exactly once.
    let seen = worker.seen();
    let accepted: Vec<&Seen> = seen.iter().filter(|s| s.chunks.len() == 2).collect();
    let mut ids: Vec<&str> = accepted.iter().map(|s| s.delivery_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let mut paths: Vec<String> = accepted.iter().flat_map(|s| s.chunks.clone()).collect();
    paths.sort();
    let expected: Vec<String> = chunks.iter().map(|c| c.chunk_path.clone()).collect();
    assert_eq!(paths, expected);
    for chunk in &chunks {
        let meta = metadata(root.path(), &chunk.chunk_path);
        assert_eq!(meta.status, Status::Queued, "{}", chunk.chunk_path);
        // A 413 of a batch is not the chunk's fault: only the acceptance counts.
        assert_eq!(meta.attempts, 1, "{}", chunk.chunk_path);
        assert_eq!(meta.worker_id.as_deref(), Some("w"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_chunk_refused_with_413_is_a_permanent_refusal() {
    let (root, base, chunks) = chunk_tree(1);
    let worker =
        FakeWorker::start(|_, _| Answer::Status(StatusCode::PAYLOAD_TOO_LARGE, None)).await;
    let report = run(
        config(vec![worker.endpoint("w")], &base, Mode::Batch(8)),
        chunks.clone(),
    )
    .await;
    assert_eq!(worker.seen().len(), 1, "a single chunk cannot be split");
    let failure = report.outcomes[0].result.clone().unwrap_err();
    assert!(failure.permanent, "{failure:?}");
    assert!(failure.error.contains("413"), "{failure:?}");
    let meta = metadata(root.path(), &chunks[0].chunk_path);
    assert_eq!(meta.status, Status::Pending);
    assert_eq!(meta.attempts, 1);
    assert!(meta.last_error.unwrap().contains("413"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_tries_leaves_the_chunks_pending_with_the_last_error_and_no_attempt() {
    let (root, base, chunks) = chunk_tree(2);
    let worker =
        FakeWorker::start(|_, _| Answer::Status(StatusCode::SERVICE_UNAVAILABLE, None)).await;
    let report = run(
        config(vec![worker.endpoint("w")], &base, Mode::Batch(8)),
        chunks.clone(),
    )
    .await;

    assert_eq!(report.accepted_chunks, 0);
    assert_eq!(report.outcomes.len(), 1, "{report:#?}");
    let failure = report.outcomes[0].result.clone().unwrap_err();
    assert!(
        !failure.permanent,
        "an outage is not a refusal: {failure:?}"
    );
    assert_eq!(failure.tries, 4);
    assert!(failure.error.contains("503"), "{failure:?}");
    // Every try of one request carries the same delivery id.
    let seen = worker.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.delivery_id == seen[0].delivery_id));
    for chunk in &chunks {
        let meta = metadata(root.path(), &chunk.chunk_path);
        assert_eq!(meta.status, Status::Pending);
        assert_eq!(meta.attempts, 0, "undelivered costs no attempt");
        assert!(meta.last_error.unwrap().contains("503"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_that_leaves_chunks_out_is_not_taken_as_acceptance() {
    let (root, base, chunks) = chunk_tree(2);
    let first = chunks[0].chunk_path.clone();
    let worker = FakeWorker::start(move |_, _| Answer::AcceptOnly(vec![first.clone()])).await;
    let report = run(
        config(vec![worker.endpoint("w")], &base, Mode::Batch(8)),
        chunks.clone(),
    )
    .await;

    assert_eq!(report.accepted_chunks, 0, "{report:#?}");
    let failure = report.outcomes[0].result.clone().unwrap_err();
    assert!(failure.permanent, "{failure:?}");
    assert!(
        failure.error.contains(&chunks[1].chunk_path),
        "names the chunk left out: {failure:?}"
    );
    assert_eq!(worker.seen().len(), 1, "a refusal is not retried");
    for chunk in &chunks {
        let meta = metadata(root.path(), &chunk.chunk_path);
        assert_ne!(meta.status, Status::Queued, "{}", chunk.chunk_path);
        assert_eq!(meta.worker_id, None);
        assert_eq!(meta.attempts, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_gets_no_answer_times_out_and_is_retried() {
    let (root, base, chunks) = chunk_tree(1);
    let worker = FakeWorker::start(|n, _| if n == 0 { Answer::Hang } else { Answer::Accept }).await;
    let mut config = config(vec![worker.endpoint("w")], &base, Mode::PerChunk);
    config.timeout = Duration::from_millis(500);
    let report = run(config, chunks.clone()).await;

    let accepted = report.outcomes[0]
        .result
        .clone()
        .expect("accepted on the second try");
    assert_eq!(accepted.tries, 2);
    assert_eq!(worker.seen().len(), 2);
    assert_eq!(
        metadata(root.path(), &chunks[0].chunk_path).status,
        Status::Queued
    );

    // A worker that never answers: the request ends, undelivered, with a timeout.
    let (_root, base, chunks) = chunk_tree(1);
    let silent = FakeWorker::start(|_, _| Answer::Hang).await;
    let mut config = self::config(vec![silent.endpoint("s")], &base, Mode::PerChunk);
    config.timeout = Duration::from_millis(300);
    config.retry.max_tries = 2;
    let report = run(config, chunks).await;
    let failure = report.outcomes[0].result.clone().unwrap_err();
    assert!(!failure.permanent);
    assert!(failure.error.contains("timed out"), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_at_once_to_another_worker() {
    let (_root, base, chunks) = chunk_tree(1);
    let failing =
        FakeWorker::start(|_, _| Answer::Status(StatusCode::INTERNAL_SERVER_ERROR, None)).await;
    let healthy = FakeWorker::start(|_, _| Answer::Accept).await;
    let mut config = config(
        vec![failing.endpoint("a"), healthy.endpoint("b")],
        &base,
        Mode::PerChunk,
    );
    // A retry that waited for its backoff would outlast the test's deadline.
    config.retry.base_delay = Duration::from_secs(3600);
    config.retry.max_delay = Duration::from_secs(3600);
    let report = run(config, chunks).await;
    let accepted = report.outcomes[0].result.clone().unwrap();
    assert_eq!(accepted.worker, "b");
    assert_eq!(accepted.tries, 2);
    assert_eq!(failing.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_asks_for_a_pause_gets_no_work_until_retry_after() {
    let (_root, base, chunks) = chunk_tree(5);
    // Worker "a" comes first in the pool and is as idle as "b", so without the pause it
    // would get the first try of every request.
    let busy =
        FakeWorker::start(|_, _| Answer::Status(StatusCode::SERVICE_UNAVAILABLE, Some(3600))).await;
    let healthy = FakeWorker::start(|_, _| Answer::Accept).await;
    let mut config = config(
        vec![busy.endpoint("a"), healthy.endpoint("b")],
        &base,
        Mode::PerChunk,
    );
    config.concurrency = 1;
    let report = run(config, chunks).await;
    assert!(report.all_accepted(), "{report:#?}");
    assert_eq!(
        busy.seen().len(),
        1,
        "cooled off for Retry-After after one 503"
    );
    assert_eq!(healthy.seen().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_the_worker_with_the_fewest_chunks_in_flight() {
    let (_root, base, chunks) = chunk_tree(6);
    // Both workers hold every request until all six are in flight: the pool must spread
    // them by load, three and three. A pool that always picked one worker would put all
    // six there.
    let gate = Gate::new(6);
    let g = gate.clone();
    let a = FakeWorker::start(move |_, _| Answer::AcceptWhenAll(g.clone())).await;
    let g = gate.clone();
    let b = FakeWorker::start(move |_, _| Answer::AcceptWhenAll(g.clone())).await;
    let mut config = config(
        vec![a.endpoint("a"), b.endpoint("b")],
        &base,
        Mode::PerChunk,
    );
    config.concurrency = 6;
    let report = run(config, chunks).await;
    assert!(report.all_accepted(), "{report:#?}");
    assert_eq!((a.seen().len(), b.seen().len()), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_that_outnumber_one_metadata_write_are_all_recorded() {
    // Six requests of 500 chunks, held until all six arrived, finish together: their
    // 3,000 outcomes are written in several bounded batches, and none is lost.
    let (root, base, chunks) = chunk_tree(3000);
    let gate = Gate::new(6);
    let worker = FakeWorker::start(move |_, _| Answer::AcceptWhenAll(gate.clone())).await;
    let mut config = config(vec![worker.endpoint("w")], &base, Mode::Batch(500));
    config.concurrency = 6;
    let report = run(config, chunks.clone()).await;

    assert!(report.all_accepted(), "{report:#?}");
    assert_eq!(report.accepted_chunks, 3000);
    assert_eq!(worker.seen().len(), 6);
    for outcome in &report.outcomes {
        assert!(outcome.metadata_errors.is_empty(), "{outcome:?}");
    }
    for chunk in &chunks {
        let meta = metadata(root.path(), &chunk.chunk_path);
        assert_eq!(meta.status, Status::Queued, "{}", chunk.chunk_path);
        assert_eq!(meta.attempts, 1, "{}", chunk.chunk_path);
    }
}
