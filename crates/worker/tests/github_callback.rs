//! The `chunk_compressed` repository_dispatch, received by a fake GitHub API on
//! 127.0.0.1, and a graceful shutdown that finishes what was accepted.

mod support;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chunk_model::{ChunkCompressed, Status, WebhookRequest};
use serde_json::Value;
use support::{RunningWorker, make_tree};
use uploader::LocalDir;

type Received = Arc<Mutex<Vec<(String, HeaderMap, Value)>>>;

async fn dispatches(
    State(received): State<Received>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    received
        .lock()
        .unwrap()
        .push((format!("{owner}/{repo}"), headers, body));
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_is_sent_as_repository_dispatch_and_shutdown_finishes_the_queue() {
    let received: Received = Arc::default();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", api.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/repos/{owner}/{repo}/dispatches", post(dispatches))
        .with_state(received.clone());
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(async move {
        axum::serve(api, app)
            .with_graceful_shutdown(async move {
                let _ = api_stopped.await;
            })
            .await
    });

    let tree = make_tree(1, 3, 20_000);
    let bucket = tempfile::tempdir().unwrap();
    let mut config = support::config(&tree, Arc::new(LocalDir::new(bucket.path()).unwrap()));
    config.github =
        Some(worker::GithubConfig::from_slug("octo/panini", "ghp_test", &api_url).unwrap());
    let worker = RunningWorker::start(config).await;

    let mut infos = tree.infos();
    // Bytes that do not match the hash: reported as failed, with the reason.
    infos[2].hash = Some(chunk_model::Sha256Digest::of(b"something else"));
    let body = serde_json::to_vec(&WebhookRequest::CompressBatch {
        chunks: infos.clone(),
        repository: None,
        workflow: None,
    })
    .unwrap();
    let response = reqwest::Client::new()
        .post(worker.webhook())
        .body(body)
        .timeout(support::TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // Shut down at once: the accepted chunks are still finished and reported.
    let summary = worker.stop().await;
    assert_eq!(
        (summary.accepted, summary.completed, summary.failed),
        (3, 2, 1)
    );

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    for (repo, headers, body) in &received {
        assert_eq!(repo, "octo/panini");
        assert_eq!(headers["authorization"], "Bearer ghp_test");
        assert_eq!(headers["accept"], "application/vnd.github+json");
        assert_eq!(headers["x-github-api-version"], "2022-11-28");
        assert!(
            headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("panini-worker/")
        );
        assert_eq!(body["event_type"], "chunk_compressed");
        let payload: ChunkCompressed =
            serde_json::from_value(body["client_payload"].clone()).unwrap();
        let info = infos
            .iter()
            .find(|c| c.chunk_path == payload.chunk_path)
            .unwrap();
        assert_eq!(payload.worker_id.as_deref(), Some("test-worker"));
        if info.chunk_path == infos[2].chunk_path {
            assert_eq!(payload.status, Status::Failed);
            assert!(
                payload
                    .error
                    .as_deref()
                    .unwrap()
                    .contains("SHA-256 mismatch"),
                "{payload:?}"
            );
        } else {
            assert_eq!(payload.status, Status::Completed);
            assert_eq!(payload.original_hash, info.hash);
            assert!(
                payload
                    .upload_path
                    .as_deref()
                    .unwrap()
                    .starts_with("chunks/")
            );
            assert!(payload.upload_hash.is_some());
            assert!(payload.stats["codec"].is_string(), "{payload:?}");
            // GitHub refuses client_payloads with more than 10 top-level keys.
            assert!(body["client_payload"].as_object().unwrap().len() <= 10);
        }
    }

    let _ = stop_api.send(());
    api_task.await.unwrap().unwrap();
}
