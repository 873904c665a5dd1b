//! What issue #14 found a worker on 127.0.0.1 could be made to do, and what it must do
//! instead: refuse absurd chunk sizes (and live on), close idle and stalled
//! connections, cap connections, end its drain at the shutdown deadline, fail closed on
//! missing or weak credentials, guard the read endpoints, and never call a chunk
//! completed against an object in the bucket that does not decode to it.
//!
//! Every test is bounded: a handful of requests, every wait under [`TIMEOUT`].

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chunk_model::{ChunkInfo, Codec, Sha256Digest, Status, WebhookRequest, object_keys};
use support::{RunningWorker, TIMEOUT, Tree, make_tree};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use uploader::{LocalDir, ObjectMeta, ObjectStore};
use worker::{Worker, WorkerConfig, WorkerError};

fn batch(chunks: &[ChunkInfo]) -> Vec<u8> {
    serde_json::to_vec(&WebhookRequest::CompressBatch {
        chunks: chunks.to_vec(),
        repository: None,
        workflow: None,
    })
    .unwrap()
}

fn local(dir: &std::path::Path) -> Arc<LocalDir> {
    Arc::new(LocalDir::new(dir).unwrap())
}

async fn healthz(worker: &RunningWorker) -> u16 {
    reqwest::Client::new()
        .get(worker.url("/healthz"))
        .timeout(TIMEOUT)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Reads from `stream` until the peer closes it (or resets it), failing after
/// [`TIMEOUT`]; returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the worker closes the connection in time");
    seen
}

/// A connection that started a request and stalls: half a request line.
async fn half_open(worker: &RunningWorker) -> TcpStream {
    let mut stream = TcpStream::connect(worker.addr).await.unwrap();
    stream.write_all(b"POST /webho").await.unwrap();
    stream
}

// ---------------------------------------------------------------------------------
// Item 1: sizes from requests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_chunk_sizes_are_refused_and_the_worker_lives_on() {
    let tree = make_tree(1, 3, 10_000);
    let bucket = tempfile::tempdir().unwrap();
    let store = local(bucket.path());
    let worker = RunningWorker::start(support::secure(support::config(&tree, store.clone()))).await;

    // The batch of the report: sizes 1 and u64::MAX, which summed overflowed in the work
    // loop and killed the worker.
    let mut bad = tree.infos()[..2].to_vec();
    bad[0].size = 1;
    bad[1].size = u64::MAX;
    let (status, body) = support::post_signed(&worker, &batch(&bad)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("maximum chunk size"),
        "{body}"
    );
    // Just over the limit is refused too.
    let mut over = tree.infos()[..1].to_vec();
    over[0].size = worker::DEFAULT_MAX_CHUNK_SIZE + 1;
    assert_eq!(support::post_signed(&worker, &batch(&over)).await.0, 400);

    // The worker still answers and works.
    assert_eq!(healthz(&worker).await, 200);
    let good = tree.infos()[2..].to_vec();
    let (status, body) = support::post_signed(&worker, &batch(&good)).await;
    assert_eq!(status, 202, "{body}");
    let status = worker.wait_reported(1).await;
    assert_eq!(status["completed"], 1, "{status}");
    assert_eq!(status["accepted"], 1, "{status}");
    let summary = worker.stop().await;
    assert_eq!((summary.accepted, summary.completed), (1, 1));
}

// ---------------------------------------------------------------------------------
// Item 2: connections.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_by_the_header_timeout() {
    let tree = make_tree(1, 1, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let mut config = support::config(&tree, local(bucket.path()));
    config.header_read_timeout = Duration::from_secs(1);
    let worker = RunningWorker::start(config).await;

    let mut stalled = Vec::new();
    for _ in 0..40 {
        stalled.push(half_open(&worker).await);
    }
    // And some that never send a byte.
    for _ in 0..10 {
        stalled.push(TcpStream::connect(worker.addr).await.unwrap());
    }
    let closing = stalled.into_iter().map(|mut stream| async move {
        read_until_closed(&mut stream).await;
    });
    futures::future::join_all(closing).await;
    assert_eq!(healthz(&worker).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_connection_taken_healthz_is_served_once_idle_ones_time_out() {
    let tree = make_tree(1, 1, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let mut config = support::config(&tree, local(bucket.path()));
    config.header_read_timeout = Duration::from_secs(2);
    config.max_connections = 4;
    let worker = RunningWorker::start(config).await;

    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(half_open(&worker).await);
    }
    // The fifth connection waits in the backlog until a slot frees (one of the four
    // times out), then it is served.
    assert_eq!(healthz(&worker).await, 200);
    for mut stream in stalled {
        read_until_closed(&mut stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_gets_408_and_the_connection_closes() {
    let tree = make_tree(1, 1, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let mut config = support::secure(support::config(&tree, local(bucket.path())));
    config.body_read_timeout = Duration::from_secs(1);
    let worker = RunningWorker::start(config).await;

    let mut stream = TcpStream::connect(worker.addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"type\":",
        support::TOKEN
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_stalled_connections_at_the_deadline() {
    let tree = make_tree(1, 1, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let mut config = support::config(&tree, local(bucket.path()));
    // Longer than the test: only the shutdown deadline can end these connections.
    config.header_read_timeout = Duration::from_secs(600);
    config.shutdown_timeout = Duration::from_secs(1);
    let worker = RunningWorker::start(config).await;
    let mut stalled = half_open(&worker).await;
    let idle = TcpStream::connect(worker.addr).await.unwrap();
    // The connections are served (not just in the backlog) before the signal.
    assert_eq!(healthz(&worker).await, 200);

    let started = Instant::now();
    let summary = worker.stop().await;
    assert_eq!(summary.accepted, 0);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped after {:?}",
        started.elapsed()
    );
    read_until_closed(&mut stalled).await;
    drop(idle);
}

// ---------------------------------------------------------------------------------
// Item 6: credentials.

fn bare_config(tree: &Tree) -> (tempfile::TempDir, WorkerConfig) {
    let bucket = tempfile::tempdir().unwrap();
    let mut config = WorkerConfig::new(&tree.root, local(bucket.path()));
    config.engine = gpu_compress::EngineChoice::Cpu;
    (bucket, config)
}

#[test]
fn a_worker_without_full_or_strong_credentials_does_not_start() {
    let tree = make_tree(1, 1, 100);
    let key = worker::auth::signing_key(support::SECRET).unwrap();

    let (_b, config) = bare_config(&tree);
    assert!(matches!(
        Worker::new(config),
        Err(WorkerError::MissingCredentials(_))
    ));

    // A token but no secret: this worker accepted unsigned requests.
    let (_b, mut config) = bare_config(&tree);
    config.token = Some(support::TOKEN.into());
    let err = Worker::new(config).unwrap_err();
    assert!(matches!(err, WorkerError::MissingCredentials(_)), "{err}");
    assert!(err.to_string().contains("PANINI_WEBHOOK_SECRET"), "{err}");

    let (_b, mut config) = bare_config(&tree);
    config.signing_key = Some(key.clone());
    assert!(matches!(
        Worker::new(config),
        Err(WorkerError::MissingCredentials(_))
    ));

    // `whsec_` alone: an empty HMAC key.
    let (_b, mut config) = bare_config(&tree);
    config.token = Some(support::TOKEN.into());
    config.signing_key = Some(worker::auth::signing_key("whsec_").unwrap());
    let err = Worker::new(config).unwrap_err();
    assert!(matches!(err, WorkerError::WeakCredential(_)), "{err}");

    let (_b, mut config) = bare_config(&tree);
    config.token = Some(support::TOKEN.into());
    config.signing_key = Some(b"short".to_vec());
    assert!(matches!(
        Worker::new(config),
        Err(WorkerError::WeakCredential(_))
    ));

    let (_b, mut config) = bare_config(&tree);
    config.token = Some("short-token".into());
    config.signing_key = Some(key.clone());
    assert!(matches!(
        Worker::new(config),
        Err(WorkerError::WeakCredential(_))
    ));

    // Weak keys are refused even when `insecure`.
    let (_b, mut config) = bare_config(&tree);
    config.insecure = true;
    config.token = Some(String::new());
    assert!(matches!(
        Worker::new(config),
        Err(WorkerError::WeakCredential(_))
    ));

    let (_b, mut config) = bare_config(&tree);
    config.token = Some(support::TOKEN.into());
    config.signing_key = Some(key);
    Worker::new(config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_worker_serves_on_loopback_only() {
    let tree = make_tree(1, 1, 100);
    let (_b, mut config) = bare_config(&tree);
    config.insecure = true;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let served = tokio::time::timeout(
        TIMEOUT,
        Worker::new(config).unwrap().serve(listener, async {}),
    )
    .await
    .expect("refused at once");
    assert!(
        matches!(served, Err(WorkerError::InsecureNotLoopback(_))),
        "{served:?}"
    );
}

#[test]
fn debug_of_a_worker_config_hides_its_secrets() {
    let tree = make_tree(1, 1, 100);
    let (_b, mut config) = bare_config(&tree);
    config.token = Some("token-that-must-not-be-logged".into());
    config.read_token = Some("read-token-that-must-not-be-logged".into());
    config.signing_key = Some(b"key-that-must-not-be-logged".to_vec());
    config.github =
        Some(worker::GithubConfig::from_slug("o/r", "ghp_must_not_be_logged", "http://x").unwrap());
    let shown = format!("{config:?}");
    assert!(!shown.contains("must-not-be-logged"), "{shown}");
    assert!(!shown.contains("must_not_be_logged"), "{shown}");
    // The key's bytes as a Debug list would print them.
    assert!(!shown.contains("107, 101, 121"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");

    // The dispatcher's configuration holds the same secrets.
    let mut dispatch = dispatcher::DispatchConfig::new(Vec::new());
    dispatch.token = Some("token-that-must-not-be-logged".into());
    dispatch.signing_key = Some(b"key-that-must-not-be-logged".to_vec());
    let shown = format!("{dispatch:?}");
    assert!(!shown.contains("must-not-be-logged"), "{shown}");
    assert!(!shown.contains("107, 101, 121"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_endpoints_need_a_token_and_webhooks_a_signature() {
    const READ_TOKEN: &str = "read-only-token-0123456789";
    let tree = make_tree(1, 2, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let mut config = support::secure(support::config(&tree, local(bucket.path())));
    config.read_token = Some(READ_TOKEN.into());
    let worker = RunningWorker::start(config).await;
    let http = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap();

    for path in ["/status", "/failures", "/metrics"] {
        let anonymous = http.get(worker.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "{path} without a token");
        let wrong = http
            .get(worker.url(path))
            .bearer_auth("not-the-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path} with a wrong token");
        for token in [support::TOKEN, READ_TOKEN] {
            let ok = http
                .get(worker.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(ok.status().as_u16(), 200, "{path}");
        }
    }
    assert_eq!(healthz(&worker).await, 200, "probes need no token");

    // The token without a signature, and the read token with one, post nothing.
    let body = batch(&tree.infos());
    let unsigned = http
        .post(worker.webhook())
        .bearer_auth(support::TOKEN)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let garbage_signed = http
        .post(worker.webhook())
        .bearer_auth(support::TOKEN)
        .header("webhook-id", "msg_1")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("webhook-signature", "v1,Z2FyYmFnZQ==")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(garbage_signed.status().as_u16(), 401);
    let read_only = http
        .post(worker.webhook())
        .bearer_auth(READ_TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(read_only.status().as_u16(), 401);
    assert_eq!(worker.status().await["accepted"], 0);
}

// ---------------------------------------------------------------------------------
// Item 4: deduplication checks what is in the bucket.

fn lz4_meta(bytes: &[u8]) -> ObjectMeta {
    ObjectMeta {
        codec: Codec::Lz4,
        original_size: bytes.len() as u64,
        original_sha256: Sha256Digest::of(bytes),
    }
}

/// Posts one chunk and waits for its report; returns the worker's failure list.
async fn post_one(worker: &RunningWorker, chunk: &ChunkInfo) -> serde_json::Value {
    let (status, body) = support::post_signed(worker, &batch(std::slice::from_ref(chunk))).await;
    assert_eq!(status, 202, "{body}");
    worker.wait_reported(1).await;
    worker.failures().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_at_a_chunk_key_is_reported_corrupt_not_completed() {
    let tree = make_tree(1, 1, 50_000);
    let bucket = tempfile::tempdir().unwrap();
    let store = local(bucket.path());
    let (info, bytes) = &tree.chunks[0];
    let sha = Sha256Digest::of(bytes);
    let key = object_keys::chunk_object(&sha, Codec::Lz4);
    let garbage = b"not an lz4 frame at all".repeat(100);
    store
        .put(&key, garbage.clone().into(), &lz4_meta(bytes))
        .await
        .unwrap();
    let worker = RunningWorker::start(support::secure(support::config(&tree, store.clone()))).await;

    let failures = post_one(&worker, info).await;
    let status = worker.status().await;
    assert_eq!(status["completed"], 0, "{status}");
    assert_eq!(status["failed"], 1, "{status}");
    let failure = &failures["failures"][0];
    let reason = failure["error"].as_str().unwrap();
    assert!(
        reason.contains(&key) && reason.contains("corrupt"),
        "{reason}"
    );
    // Nothing says the chunk is stored, least of all with the garbage's hash.
    assert!(
        store
            .stat(&object_keys::status_record(&sha))
            .await
            .unwrap()
            .is_none(),
        "no completion record over a corrupt object"
    );
    assert_ne!(
        failure["upload_hash"].as_str(),
        Some(Sha256Digest::of(&garbage).to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_other_content_at_the_chunk_key_is_corrupt() {
    let tree = make_tree(1, 2, 20_000);
    let bucket = tempfile::tempdir().unwrap();
    let store = local(bucket.path());
    let (info, bytes) = &tree.chunks[0];
    let sha = Sha256Digest::of(bytes);
    let key = object_keys::chunk_object(&sha, Codec::Lz4);
    // A valid LZ4 frame, but of the other chunk's bytes.
    let other = gpu_compress::Compressor::new(gpu_compress::CompressorConfig {
        codec: gpu_compress::CodecChoice::Fixed(Codec::Lz4),
        level: None,
        engine: gpu_compress::EngineChoice::Cpu,
        verify: true,
    })
    .unwrap()
    .compress(&tree.chunks[1].1)
    .unwrap();
    assert_eq!(other.codec, Codec::Lz4);
    store
        .put(&key, other.bytes.into(), &lz4_meta(bytes))
        .await
        .unwrap();
    let worker = RunningWorker::start(support::secure(support::config(&tree, store.clone()))).await;
    let failures = post_one(&worker, info).await;
    let reason = failures["failures"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains(&key) && reason.contains("corrupt"),
        "{reason}"
    );
    assert_eq!(worker.status().await["completed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_record_whose_object_is_gone_is_not_trusted() {
    let tree = make_tree(1, 1, 50_000);
    let bucket = tempfile::tempdir().unwrap();
    let store = local(bucket.path());
    let (info, bytes) = &tree.chunks[0];
    let sha = Sha256Digest::of(bytes);
    let key = object_keys::chunk_object(&sha, Codec::Lz4);
    // A record as a worker writes it, naming an object that is not there (deleted).
    let record = chunk_model::ChunkCompressed {
        chunk_path: info.chunk_path.clone(),
        status: Status::Completed,
        upload_path: Some(key.clone()),
        upload_hash: Some(Sha256Digest::of(b"deleted")),
        original_hash: Some(sha),
        worker_id: Some("earlier-worker".into()),
        error: None,
        stats: serde_json::json!({}),
    };
    let record_bytes = serde_json::to_vec(&record).unwrap();
    store
        .put(
            &object_keys::status_record(&sha),
            record_bytes.clone().into(),
            &ObjectMeta::plain(&record_bytes),
        )
        .await
        .unwrap();
    let worker = RunningWorker::start(support::secure(support::config(&tree, store.clone()))).await;
    let failures = post_one(&worker, info).await;
    assert_eq!(failures["total"], 0, "{failures}");
    let status = worker.status().await;
    assert_eq!(status["completed"], 1, "{status}");
    assert_eq!(
        status["deduplicated"], 0,
        "compressed again, not taken from the record"
    );
    // The chunk is in the bucket now, and decodes to its bytes.
    let stored = store
        .list("chunks/")
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.key.contains(&sha.to_string()))
        .expect("the chunk was stored again");
    let codec: Codec = stored.key.rsplit_once('.').unwrap().1.parse().unwrap();
    let object = store.get(&stored.key).await.unwrap();
    assert_eq!(
        &gpu_compress::decompress_bounded(codec, &object.bytes, bytes.len()).unwrap(),
        bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_record_over_a_corrupt_object_is_reported_corrupt() {
    let tree = make_tree(1, 1, 50_000);
    let bucket = tempfile::tempdir().unwrap();
    let store = local(bucket.path());
    let (info, bytes) = &tree.chunks[0];
    let sha = Sha256Digest::of(bytes);
    let key = object_keys::chunk_object(&sha, Codec::Lz4);
    let garbage = vec![0x5au8; 4096];
    store
        .put(&key, garbage.clone().into(), &lz4_meta(bytes))
        .await
        .unwrap();
    let record = chunk_model::ChunkCompressed {
        chunk_path: info.chunk_path.clone(),
        status: Status::Completed,
        upload_path: Some(key.clone()),
        upload_hash: Some(Sha256Digest::of(&garbage)),
        original_hash: Some(sha),
        worker_id: Some("earlier-worker".into()),
        error: None,
        stats: serde_json::json!({}),
    };
    let record_bytes = serde_json::to_vec(&record).unwrap();
    store
        .put(
            &object_keys::status_record(&sha),
            record_bytes.clone().into(),
            &ObjectMeta::plain(&record_bytes),
        )
        .await
        .unwrap();
    let worker = RunningWorker::start(support::secure(support::config(&tree, store.clone()))).await;
    let failures = post_one(&worker, info).await;
    let reason = failures["failures"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains(&key) && reason.contains("corrupt"),
        "{reason}"
    );
    assert_eq!(worker.status().await["completed"], 0);
}
