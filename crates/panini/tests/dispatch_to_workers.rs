//! The dispatcher against real workers on 127.0.0.1: both modes with metadata updates
//! and `sync`, refusals, failover to a live worker, retries, and a worker killed
//! mid-batch whose chunks come back after their lease and complete with no loss.

// The worker crate's test support: trees, watched stores, workers on 127.0.0.1.
#[path = "../../worker/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chunk_model::Status;
use dispatcher::{DispatchConfig, Dispatcher, Endpoint, Mode, RetryPolicy};
use support::{RunningWorker, Tree, WatchedStore, make_tree};
use uploader::{LocalDir, ObjectStore};

const TOKEN: &str = "dispatch-token-0123456789";
const SECRET: &str = "whsec_c2VjcmV0LWZvci10ZXN0cw==";

fn secure(mut config: worker::WorkerConfig) -> worker::WorkerConfig {
    config.token = Some(TOKEN.into());
    config.signing_key = Some(worker::auth::signing_key(SECRET).unwrap());
    config
}

fn dispatch_config(tree: &Tree, urls: &[String], mode: Mode) -> DispatchConfig {
    let mut config = DispatchConfig::new(urls.iter().map(Endpoint::from_url).collect());
    config.token = Some(TOKEN.into());
    config.signing_key = Some(dispatcher::signing::signing_key(SECRET).unwrap());
    config.mode = mode;
    config.base = Some(tree.base.clone());
    config.timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_tries: 8,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(5),
    };
    config
}

async fn run(config: DispatchConfig, tree: &Tree) -> dispatcher::DispatchReport {
    let dispatcher = Dispatcher::new(config).unwrap();
    tokio::time::timeout(support::TIMEOUT, dispatcher.run(tree.infos(), |_| {}))
        .await
        .expect("dispatch ends in time")
}

async fn both_modes(mode: Mode, requests: usize) {
    let tree = make_tree(2, 7, 30_000);
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    let worker = RunningWorker::start(secure(support::config(&tree, store.clone()))).await;

    let report = run(dispatch_config(&tree, &[worker.webhook()], mode), &tree).await;
    assert!(report.all_accepted(), "{report:?}");
    assert_eq!(report.outcomes.len(), requests);
    for (info, _) in &tree.chunks {
        let meta = tree.metadata(info);
        assert_eq!(meta.status, Status::Queued, "{}", info.chunk_path);
        assert_eq!(meta.attempts, 1);
        assert_eq!(
            meta.worker_id.as_deref(),
            Some(worker.addr.to_string().as_str())
        );
        assert!(meta.dispatched_at.is_some());
        assert!(
            meta.lease_expires_at.unwrap().utc()
                > chrono::Utc::now() + chrono::TimeDelta::minutes(29)
        );
    }

    worker.wait_reported(14).await;
    support::assert_all_stored(&tree, store.as_ref()).await;
    let synced = panini::sync::sync(&tree.base, store.as_ref(), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(synced.completed.len(), 14, "{synced:?}");
    assert!(synced.errors.is_empty(), "{synced:?}");
    for (info, _) in &tree.chunks {
        let meta = tree.metadata(info);
        assert_eq!(meta.status, Status::Completed);
        assert!(meta.upload_path.unwrap().starts_with("chunks/"));
        assert!(meta.lease_expires_at.is_none());
    }
    // A second sync finds nothing left to do.
    let again = panini::sync::sync(&tree.base, store.as_ref(), chrono::Utc::now())
        .await
        .unwrap();
    assert!(
        again.completed.is_empty() && again.open_chunks == 0,
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_dispatches_and_sync_completes() {
    both_modes(Mode::Batch(4), 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_chunk_mode_dispatches_and_sync_completes() {
    both_modes(Mode::PerChunk, 14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_is_permanent_and_recorded() {
    let tree = make_tree(1, 3, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let worker = RunningWorker::start(secure(support::config(
        &tree,
        Arc::new(LocalDir::new(bucket.path()).unwrap()),
    )))
    .await;
    let mut config = dispatch_config(&tree, &[worker.webhook()], Mode::Batch(10));
    config.token = Some("wrong".into());
    config.max_attempts = 2;

    let report = run(config.clone(), &tree).await;
    assert!(!report.all_accepted());
    let failure = report.outcomes[0].result.as_ref().unwrap_err();
    assert!(failure.permanent && failure.tries == 1, "{failure:?}");
    assert!(failure.error.contains("401"), "{failure:?}");
    let meta = tree.metadata(&tree.chunks[0].0);
    assert_eq!((meta.status, meta.attempts), (Status::Pending, 1));
    assert!(meta.last_error.unwrap().contains("Unauthorized"));

    // The second refusal is the last attempt: the chunk is failed.
    run(config, &tree).await;
    let meta = tree.metadata(&tree.chunks[0].0);
    assert_eq!((meta.status, meta.attempts), (Status::Failed, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_fails_over_from_a_dead_worker() {
    let tree = make_tree(1, 12, 2000);
    let bucket = tempfile::tempdir().unwrap();
    let worker = RunningWorker::start(secure(support::config(
        &tree,
        Arc::new(LocalDir::new(bucket.path()).unwrap()),
    )))
    .await;
    // A port with nothing listening on it.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/webhook", listener.local_addr().unwrap())
    };
    let report = run(
        dispatch_config(&tree, &[dead, worker.webhook()], Mode::Batch(2)),
        &tree,
    )
    .await;
    assert!(report.all_accepted(), "{report:?}");
    let live = worker.addr.to_string();
    for outcome in &report.outcomes {
        assert_eq!(outcome.result.as_ref().unwrap().worker, live);
    }
    assert_eq!(worker.wait_reported(12).await["completed"], 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_a_worker_that_answers_503_then_202() {
    // A tiny server: 503 with Retry-After for the first two requests, then 202.
    let hits = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let app = {
        let (hits, ids) = (hits.clone(), ids.clone());
        axum::Router::new().route(
            "/webhook",
            axum::routing::post(move |headers: axum::http::HeaderMap| async move {
                ids.lock()
                    .unwrap()
                    .push(headers["webhook-id"].to_str().unwrap().to_owned());
                if hits.fetch_add(1, Ordering::SeqCst) < 2 {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "1")],
                        "{}".to_owned(),
                    )
                } else {
                    (
                        axum::http::StatusCode::ACCEPTED,
                        [("retry-after", "0")],
                        r#"{"status":"accepted"}"#.to_owned(),
                    )
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let tree = make_tree(1, 1, 100);
    let report = run(dispatch_config(&tree, &[url], Mode::PerChunk), &tree).await;
    server.abort();
    assert!(report.all_accepted(), "{report:?}");
    assert_eq!(report.outcomes[0].result.as_ref().unwrap().tries, 3);
    let ids = ids.lock().unwrap();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "one delivery id across retries: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_worker_queue_is_retried_until_accepted() {
    let tree = make_tree(1, 8, 1000);
    let bucket = tempfile::tempdir().unwrap();
    let store = WatchedStore::new(bucket.path(), 0);
    let mut config = secure(support::config(&tree, store.clone()));
    config.max_queue = 2;
    config.max_batch = 1;
    let worker = RunningWorker::start(config).await;
    // Room is made only once the worker has turned a request away for want of it, so
    // the retry path is taken whatever the machine's speed.
    let opener = {
        let store = store.clone();
        let metrics = worker.url("/metrics");
        tokio::spawn(async move {
            support::wait_for(|| {
                let metrics = metrics.clone();
                async move {
                    let text = reqwest::Client::new()
                        .get(&metrics)
                        .bearer_auth(TOKEN)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                        .ok()?
                        .text()
                        .await
                        .ok()?;
                    text.contains("panini_worker_http_responses_total{code=\"503\"}")
                        .then_some(())
                }
            })
            .await;
            store.open();
        })
    };
    let report = run(
        dispatch_config(&tree, &[worker.webhook()], Mode::PerChunk),
        &tree,
    )
    .await;
    opener.await.unwrap();
    assert!(report.all_accepted(), "{report:?}");
    assert!(
        report
            .outcomes
            .iter()
            .any(|o| o.result.as_ref().unwrap().tries > 1),
        "some waited for room"
    );
    assert_eq!(worker.wait_reported(8).await["completed"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_batch_loses_nothing() {
    let tree = make_tree(2, 6, 50_000);
    let bucket = tempfile::tempdir().unwrap();
    // Four chunks get through the store; then the worker is held mid-batch.
    let gated = WatchedStore::new(bucket.path(), 4);
    let mut config = secure(support::config(&tree, gated.clone()));
    config.max_batch = 4;
    let doomed = RunningWorker::start(config).await;
    let report = run(
        dispatch_config(&tree, &[doomed.webhook()], Mode::Batch(12)),
        &tree,
    )
    .await;
    assert!(report.all_accepted());
    // However the queue was cut into batches, at least one finished before the gate.
    doomed.wait_reported(1).await;
    doomed.kill().await;

    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    let finished = store.list("status/").await.unwrap().len();
    assert!(
        (1..12).contains(&finished),
        "{finished} finished before the kill"
    );

    // Before the lease runs out nothing is selected again; after, all twelve are (none
    // was synced, so even the finished ones still say queued).
    let detect = detector::DetectConfig::new(&tree.base);
    assert!(
        detector::scan(&detect, chrono::Utc::now())
            .unwrap()
            .selected
            .is_empty()
    );
    let later = chrono::Utc::now() + chrono::TimeDelta::minutes(31);
    let scan = detector::scan(&detect, later).unwrap();
    assert_eq!(scan.selected.len(), 12);
    assert!(
        scan.selected
            .iter()
            .all(|s| s.reason == detector::SelectReason::LeaseExpired)
    );

    let rescuer = RunningWorker::start(secure(support::config(&tree, store.clone()))).await;
    let chunks: Vec<_> = scan.chunk_infos().into_iter().cloned().collect();
    let dispatcher =
        Dispatcher::new(dispatch_config(&tree, &[rescuer.webhook()], Mode::Batch(5))).unwrap();
    let report = dispatcher.run(chunks, |_| {}).await;
    assert!(report.all_accepted(), "{report:?}");
    let status = rescuer.wait_reported(12).await;
    assert_eq!(status["completed"], 12, "{status}");
    for (info, _) in &tree.chunks {
        assert_eq!(tree.metadata(info).attempts, 2, "{}", info.chunk_path);
    }

    support::assert_all_stored(&tree, store.as_ref()).await;
    let synced = panini::sync::sync(&tree.base, store.as_ref(), later)
        .await
        .unwrap();
    assert_eq!(synced.completed.len(), 12, "{synced:?}");
    let metrics = rescuer
        .read("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let deduplicated: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("panini_worker_chunks_deduplicated_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        deduplicated >= finished,
        "what the killed worker stored is reused: {metrics}"
    );
}

/// Many deliveries in flight at once, one of them refused, are recorded by the coalesced
/// metadata writer: every accepted chunk is `queued` before its request is reported, and
/// the refused chunk never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_metadata_writes_mark_queued_only_what_was_accepted() {
    let tree = make_tree(3, 6, 2000);
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    let worker = RunningWorker::start(secure(support::config(&tree, store))).await;
    // Without its data.bin the worker refuses the request carrying this chunk (400).
    let refused = tree.chunks[7].0.clone();
    std::fs::remove_file(
        tree.root
            .join(&refused.chunk_path)
            .join(chunk_model::layout::DATA_FILE),
    )
    .unwrap();

    let mut config = dispatch_config(&tree, &[worker.webhook()], Mode::PerChunk);
    config.concurrency = 8;
    let dispatcher = Dispatcher::new(config).unwrap();
    let reported = AtomicUsize::new(0);
    let report = tokio::time::timeout(
        support::TIMEOUT,
        dispatcher.run(tree.infos(), |outcome| {
            reported.fetch_add(1, Ordering::SeqCst);
            assert!(outcome.metadata_errors.is_empty(), "{outcome:?}");
            // What a request's report says is already on disk when it is reported.
            let info = tree
                .chunks
                .iter()
                .find(|(c, _)| c.chunk_path == outcome.chunk_paths[0])
                .map(|(c, _)| c)
                .unwrap();
            let meta = tree.metadata(info);
            match &outcome.result {
                Ok(_) => assert_eq!((meta.status, meta.attempts), (Status::Queued, 1)),
                Err(failure) => {
                    assert!(failure.permanent, "{failure:?}");
                    assert_eq!((meta.status, meta.attempts), (Status::Pending, 1));
                    assert!(meta.last_error.is_some());
                }
            }
        }),
    )
    .await
    .expect("dispatch ends in time");

    assert_eq!(reported.load(Ordering::SeqCst), 18);
    assert_eq!(report.outcomes.len(), 18);
    assert_eq!(report.accepted_chunks, 17);
    for (info, _) in &tree.chunks {
        let meta = tree.metadata(info);
        if info.chunk_path == refused.chunk_path {
            assert_eq!(meta.status, Status::Pending);
            assert!(meta.worker_id.is_none() && meta.dispatched_at.is_none());
            assert!(meta.last_error.unwrap().contains("400"));
        } else {
            assert_eq!(meta.status, Status::Queued, "{}", info.chunk_path);
            assert!(meta.dispatched_at.is_some() && meta.lease_expires_at.is_some());
        }
    }
    // No temporary file is left beside any metadata.json.
    for (info, _) in &tree.chunks {
        for entry in std::fs::read_dir(tree.root.join(&info.chunk_path)).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().starts_with(".panini-tmp-"),
                "{name:?}"
            );
        }
    }
    worker.wait_reported(17).await;
}
