//! `POST /webhook` against a real worker on 127.0.0.1: acceptance and the work it
//! starts, every refusal (401, 400, 413, 503), replays, clock skew, and the status,
//! health and metrics endpoints.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chunk_model::{ChunkInfo, WebhookRequest};
use dispatcher::signing;
use serde_json::{Value, json};
use support::{RunningWorker, TIMEOUT, Tree, WatchedStore, make_tree};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uploader::{LocalDir, ObjectStore};

const TOKEN: &str = "test-token-0123456789";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn batch(chunks: &[ChunkInfo]) -> Vec<u8> {
    serde_json::to_vec(&WebhookRequest::CompressBatch {
        chunks: chunks.to_vec(),
        repository: None,
        workflow: None,
    })
    .unwrap()
}

/// A request as the dispatcher signs it; `skew` shifts the signing clock.
struct Post<'a> {
    token: Option<&'a str>,
    id: String,
    skew: i64,
    sign: bool,
}

impl Default for Post<'_> {
    fn default() -> Self {
        Self {
            token: Some(TOKEN),
            id: signing::new_delivery_id(),
            skew: 0,
            sign: true,
        }
    }
}

impl Post<'_> {
    async fn send(
        &self,
        worker: &RunningWorker,
        body: &[u8],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let client = reqwest::Client::new();
        let mut request = client
            .post(worker.webhook())
            .timeout(TIMEOUT)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if self.sign {
            let timestamp = now() + self.skew;
            let key = signing::signing_key(SECRET).unwrap();
            request = request
                .header("webhook-id", &self.id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    signing::sign(&key, &self.id, timestamp, body),
                );
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }
}

async fn secured_worker(tree: &Tree, store: Arc<dyn ObjectStore>) -> RunningWorker {
    let mut config = support::config(tree, store);
    config.token = Some(TOKEN.into());
    config.signing_key = Some(worker::auth::signing_key(SECRET).unwrap());
    RunningWorker::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_batch_is_compressed_stored_and_recorded() {
    let tree = make_tree(2, 4, 100_000);
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    let worker = secured_worker(&tree, store.clone()).await;

    let infos = tree.infos();
    let (status, body, _) = Post::default().send(&worker, &batch(&infos)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    let paths: Vec<String> = infos.iter().map(|c| c.chunk_path.clone()).collect();
    assert_eq!(body["accepted"], json!(paths));

    let status = worker.wait_reported(8).await;
    assert_eq!(status["completed"], 8, "{status}");
    assert_eq!(status["failed"], 0);
    assert_eq!(status["gpu"], false);
    assert_eq!(status["engine"], "cpu");
    support::assert_all_stored(&tree, store.as_ref()).await;

    // The same content again is reported from the bucket, not compressed again.
    let (status, _, _) = Post::default().send(&worker, &batch(&infos[..2])).await;
    assert_eq!(status, 202);
    worker.wait_reported(10).await;
    let metrics = worker
        .read("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("panini_worker_chunks_deduplicated_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("panini_worker_chunks_completed_total 10\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("panini_worker_input_bytes_total 800000\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("panini_worker_http_responses_total{code=\"202\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE panini_worker_compress_batch_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains("panini_worker_chunks_queued 0\n"),
        "{metrics}"
    );
    let health = reqwest::get(worker.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    let summary = worker.stop().await;
    assert_eq!(
        (summary.accepted, summary.completed, summary.failed),
        (10, 10, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_and_stale_signatures_get_401() {
    let tree = make_tree(1, 1, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let worker = secured_worker(&tree, Arc::new(LocalDir::new(bucket.path()).unwrap())).await;
    let body = batch(&tree.infos());

    let cases: Vec<(&str, Post<'_>)> = vec![
        (
            "no token",
            Post {
                token: None,
                ..Post::default()
            },
        ),
        (
            "wrong token",
            Post {
                token: Some("test-token-0123456788"),
                ..Post::default()
            },
        ),
        (
            "token prefix",
            Post {
                token: Some("test-token-012345678"),
                ..Post::default()
            },
        ),
        (
            "unsigned",
            Post {
                sign: false,
                ..Post::default()
            },
        ),
        (
            "signed 10 minutes ago",
            Post {
                skew: -600,
                ..Post::default()
            },
        ),
        (
            "signed 6 minutes ahead",
            Post {
                skew: 360,
                ..Post::default()
            },
        ),
    ];
    for (what, post) in &cases {
        let (status, body, _) = post.send(&worker, &body).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body, json!({"error": "Unauthorized"}), "{what}");
    }

    // A signature over other bytes.
    let client = reqwest::Client::new();
    let key = signing::signing_key(SECRET).unwrap();
    let ts = now();
    let response = client
        .post(worker.webhook())
        .bearer_auth(TOKEN)
        .header("webhook-id", "msg_x")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signing::sign(&key, "msg_x", ts, b"{}"))
        .body(body.clone())
        .timeout(TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // A clock four minutes off either way is within the tolerance.
    for skew in [-240, 240] {
        let (status, body, _) = Post {
            skew,
            ..Post::default()
        }
        .send(&worker, &body)
        .await;
        assert_eq!(status, 202, "skew {skew}: {body}");
    }
    let status = worker.status().await;
    assert_eq!(status["accepted"], 2, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_with_a_message() {
    let tree = make_tree(1, 1, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let worker = secured_worker(&tree, Arc::new(LocalDir::new(bucket.path()).unwrap())).await;
    let good = tree.infos()[0].clone();

    // A chunk directory whose data.bin is a link to a file outside the source root.
    let outside = tree.dir.path().join("secret.bin");
    std::fs::write(&outside, b"not yours").unwrap();
    let linked = tree.base.join("file_0/chunk_link");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(&outside, linked.join("data.bin")).unwrap();
    // A chunk directory that is itself a link out of the tree.
    std::fs::create_dir_all(tree.dir.path().join("elsewhere")).unwrap();
    std::fs::write(tree.dir.path().join("elsewhere/data.bin"), b"x").unwrap();
    std::os::unix::fs::symlink(
        tree.dir.path().join("elsewhere"),
        tree.base.join("file_0/chunk_dirlink"),
    )
    .unwrap();

    let with_path = |path: &str| {
        let mut chunk = good.clone();
        chunk.chunk_path = path.to_owned();
        batch(&[good.clone(), chunk])
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not JSON",
            b"{\"action\": ".to_vec(),
            "invalid request body",
        ),
        (
            "unknown action",
            br#"{"action": "explode"}"#.to_vec(),
            "explode",
        ),
        (
            "missing field",
            br#"{"action": "compress_chunk"}"#.to_vec(),
            "chunk_info",
        ),
        (
            "empty batch",
            br#"{"action": "compress_batch", "chunks": []}"#.to_vec(),
            "no chunks",
        ),
        (
            "parent dir",
            with_path("pending_compression/../../etc"),
            "'..'",
        ),
        ("absolute", with_path("/etc"), "absolute"),
        (
            "data.bin links out",
            with_path("pending_compression/file_0/chunk_link"),
            "data.bin as a symbolic link",
        ),
        (
            "dir links out",
            with_path("pending_compression/file_0/chunk_dirlink"),
            "which is not inside",
        ),
        (
            "no such chunk",
            with_path("pending_compression/file_0/chunk_9999"),
            "chunk_9999 does not exist",
        ),
    ];
    for (what, body, needle) in cases {
        let (status, response, _) = Post::default().send(&worker, &body).await;
        assert_eq!(status, 400, "{what}: {response}");
        let message = response["error"].as_str().unwrap();
        assert!(message.contains(needle), "{what}: {message}");
    }
    // Nothing of a refused batch was queued, not even its good chunk.
    assert_eq!(worker.status().await["accepted"], 0);
}

/// The check a checkout's `chunk_path` shares with the detector's callbacks
/// (`chunk_model::chunk_path`), through `POST /webhook`: a file directory that leads out,
/// a `data.bin` that is a link (even to a chunk inside the root), and paths outside the
/// grammar get `400`, and nothing of the batch is queued.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_escapes_and_odd_chunk_paths_get_400() {
    use chunk_model::layout::{DATA_FILE, METADATA_FILE};
    use std::os::unix::fs::symlink;

    let tree = make_tree(1, 1, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let worker = secured_worker(&tree, Arc::new(LocalDir::new(bucket.path()).unwrap())).await;
    let good = tree.infos()[0].clone();
    let good_dir = tree.root.join(&good.chunk_path);

    // Outside the source root, a copy of the good chunk: only the path check stops it.
    let elsewhere = tree.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for file in [DATA_FILE, METADATA_FILE] {
        std::fs::copy(good_dir.join(file), elsewhere.join(file)).unwrap();
    }
    // A file directory that leads out of the root, above it.
    symlink(tree.dir.path(), tree.base.join("up")).unwrap();
    // A chunk whose data.bin is a link to the good chunk's, inside the root.
    let aliased = tree.base.join("file_0/chunk_0001");
    std::fs::create_dir_all(&aliased).unwrap();
    symlink(good_dir.join(DATA_FILE), aliased.join(DATA_FILE)).unwrap();

    for (path, needle) in [
        ("pending_compression/up/elsewhere", "which is not inside"),
        ("pending_compression/file_0/chunk_0001", "symbolic link"),
        ("pending_compression\\file_0\\chunk_0000", "backslash"),
        ("pending_compression/file_0/chunk_0000\0", "NUL"),
        ("pending_compression/file_0/../../../elsewhere", "'..'"),
    ] {
        let mut bad = good.clone();
        bad.chunk_path = path.to_owned();
        let body = batch(&[good.clone(), bad]);
        let (status, response, _) = Post::default().send(&worker, &body).await;
        assert_eq!(status, 400, "{path:?}: {response}");
        let message = response["error"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("chunks[1]: chunk_path {path:?} ")),
            "{message}"
        );
        assert!(message.contains(needle), "{path:?}: {message}");
    }
    assert_eq!(worker.status().await["accepted"], 0);

    // The good chunk spelled with `.` and doubled or trailing `/` is the same chunk.
    let mut spelled = good.clone();
    spelled.chunk_path = "./pending_compression//file_0/./chunk_0000/".into();
    let (status, response, _) = Post::default().send(&worker, &batch(&[spelled])).await;
    assert_eq!(status, 202, "{response}");
    let status = worker.wait_reported(1).await;
    assert_eq!(status["completed"], 1, "{status}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let tree = make_tree(1, 3, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let mut config = support::config(&tree, Arc::new(LocalDir::new(bucket.path()).unwrap()));
    config.body_limit = 1000;
    config.max_queue = 2;
    let worker = RunningWorker::start(config).await;
    let infos = tree.infos();

    let huge = vec![b' '; 10_000];
    let (status, body, _) = Post {
        sign: false,
        ..Post::default()
    }
    .send(&worker, &huge)
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("1000-byte limit"));

    // Chunked, so no Content-Length announces it: still cut off at the limit.
    let mut socket = tokio::net::TcpStream::connect(worker.addr).await.unwrap();
    let mut request = b"POST /webhook HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        request.extend_from_slice(b"64\r\n");
        request.extend_from_slice(&[b' '; 100]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        // The worker may answer and close before it has read everything.
        let _ = socket.write_all(&request).await;
        let _ = socket.read_to_end(&mut response).await;
    })
    .await
    .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    // A batch larger than the whole queue could never be taken.
    let mut small = infos.clone();
    for c in &mut small {
        c.pattern_type = String::new();
        c.base_dir = String::new();
    }
    let body = batch(&small);
    assert!(body.len() <= 1000, "{}", body.len());
    let (status, response, _) = Post {
        sign: false,
        ..Post::default()
    }
    .send(&worker, &body)
    .await;
    assert_eq!(status, 413, "{response}");
    assert!(
        response["error"]
            .as_str()
            .unwrap()
            .contains("capacity of 2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_gets_503_with_retry_after_and_nothing_is_lost() {
    let tree = make_tree(1, 6, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let store = WatchedStore::new(bucket.path(), 0);
    let mut config = support::config(&tree, store.clone());
    config.max_queue = 2;
    config.max_batch = 1;
    config.retry_after = Duration::from_secs(3);
    let worker = RunningWorker::start(config).await;

    // With the store held, at most one chunk is taken by the work loop and two wait.
    let mut accepted = Vec::new();
    let mut refused = None;
    for chunk in tree.infos() {
        let (status, body, headers) = Post {
            sign: false,
            ..Post::default()
        }
        .send(&worker, &batch(std::slice::from_ref(&chunk)))
        .await;
        match status {
            202 => accepted.push(chunk),
            503 => {
                refused = Some((body, headers));
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let (body, headers) = refused.expect("the queue filled up");
    assert!(accepted.len() <= 3, "{}", accepted.len());
    assert_eq!(body["error"], "queue is full");
    assert_eq!(headers["retry-after"], "3");

    store.open();
    let status = worker.wait_reported(accepted.len() as u64).await;
    assert_eq!(status["completed"], accepted.len());
    assert_eq!(status["queue_length"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_delivery_is_acknowledged_without_rework() {
    let tree = make_tree(1, 2, 5000);
    let bucket = tempfile::tempdir().unwrap();
    let worker = secured_worker(&tree, Arc::new(LocalDir::new(bucket.path()).unwrap())).await;
    let body = batch(&tree.infos());
    let post = Post::default();

    let (status, first, _) = post.send(&worker, &body).await;
    assert_eq!(status, 202);
    worker.wait_reported(2).await;
    // The same delivery again, as a retry after a lost response would send it (freshly
    // signed, same id).
    let (status, again, _) = post.send(&worker, &body).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["accepted"], first["accepted"]);
    assert_eq!(again["replayed"], true);
    let status = worker.status().await;
    assert_eq!(status["accepted"], 2, "{status}");
    let metrics = worker
        .read("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("panini_worker_replays_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_chunk_fails_with_the_reason_and_its_neighbours_complete() {
    let tree = make_tree(1, 3, 4000);
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    let worker = RunningWorker::start(support::config(&tree, store.clone())).await;
    let infos = tree.infos();
    // Same size, different bytes: only the hash can tell.
    std::fs::write(
        tree.root.join(&infos[1].chunk_path).join("data.bin"),
        vec![b'x'; 4000],
    )
    .unwrap();
    // The third chunk carries no hash; the worker takes it from metadata.json.
    let mut sent = infos.clone();
    sent[2].hash = None;

    let (status, _, _) = Post {
        sign: false,
        ..Post::default()
    }
    .send(&worker, &batch(&sent))
    .await;
    assert_eq!(status, 202);
    let status = worker.wait_reported(3).await;
    assert_eq!(
        (status["completed"].as_u64(), status["failed"].as_u64()),
        (Some(2), Some(1)),
        "{status}"
    );
    let records = store.list("status/").await.unwrap();
    assert_eq!(records.len(), 2, "failures leave no completion record");

    // GET /failures names the chunk and the reason, as a callback would.
    let failures: serde_json::Value = worker
        .read("/failures")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(failures["total"], 1, "{failures}");
    let failure: chunk_model::ChunkCompressed =
        serde_json::from_value(failures["failures"][0].clone()).unwrap();
    assert_eq!(failure.chunk_path, infos[1].chunk_path);
    assert_eq!(failure.status, chunk_model::Status::Failed);
    assert!(
        failure.error.as_deref().unwrap().contains("SHA-256"),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_cannot_be_stored_fails_without_a_completion_record() {
    let tree = make_tree(1, 4, 4000);
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    let worker = RunningWorker::start(support::config(&tree, store.clone())).await;
    let infos = tree.infos();
    // A directory under every name the second chunk's object could take: its put
    // fails in the store (the name is taken, but not by an object), while its
    // neighbours in the same batched put are stored.
    let blocked = infos[1].hash.unwrap();
    for codec in chunk_model::Codec::ALL {
        let key = chunk_model::object_keys::chunk_object(&blocked, codec);
        std::fs::create_dir_all(bucket.path().join(key).join("in-the-way")).unwrap();
    }

    let (status, _, _) = Post {
        sign: false,
        ..Post::default()
    }
    .send(&worker, &batch(&infos))
    .await;
    assert_eq!(status, 202);
    let status = worker.wait_reported(4).await;
    assert_eq!(
        (status["completed"].as_u64(), status["failed"].as_u64()),
        (Some(3), Some(1)),
        "{status}"
    );
    // A completion record only for each chunk whose object is stored.
    let records = store.list("status/").await.unwrap();
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(
        store
            .stat(&chunk_model::object_keys::status_record(&blocked))
            .await
            .unwrap(),
        None
    );
    for info in infos.iter().filter(|c| c.hash != Some(blocked)) {
        let sha = info.hash.unwrap();
        let record = store
            .get(&chunk_model::object_keys::status_record(&sha))
            .await
            .unwrap();
        let record: chunk_model::ChunkCompressed = serde_json::from_slice(&record.bytes).unwrap();
        let object = store
            .get(record.upload_path.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(object.info.meta.unwrap().original_sha256, sha);
    }
    let failures: serde_json::Value = worker
        .read("/failures")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reason = failures["failures"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.starts_with("storing chunks/"), "{failures}");
    let summary = worker.stop().await;
    assert_eq!((summary.completed, summary.failed), (3, 1));
}
