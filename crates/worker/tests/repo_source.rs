//! Workers that read chunks from a git repository at the dispatched commit: a real bare
//! repository in a temporary directory, commits pushed while the worker runs, fetched on
//! demand (once per commit), waited for when pushed late, and every refusal.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chunk_model::wire::RepositoryRef;
use chunk_model::{ChunkInfo, Sha256Digest, WebhookRequest};
use serde_json::json;
use support::{Remote, RunningWorker, Tree, make_tree, post_signed, wait_for};
use uploader::{LocalDir, ObjectStore};
use worker::{RepoSource, WorkerConfig};

const FETCHES: &str = "panini_worker_git_fetches_total";
const WAITING: &str = "panini_worker_chunks_waiting_for_commit";

fn batch(chunks: &[ChunkInfo], commit: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&WebhookRequest::CompressBatch {
        chunks: chunks.to_vec(),
        repository: commit.map(|commit| RepositoryRef {
            owner: "o".into(),
            repo: "r".into(),
            commit_sha: commit.into(),
            git_ref: "refs/heads/main".into(),
        }),
        workflow: None,
    })
    .unwrap()
}

/// A repository-backed worker fetching from `remote`, with a bucket in a fresh
/// directory. Retries start at 50 ms so a late push is seen quickly.
struct Setup {
    worker: RunningWorker,
    store: Arc<dyn ObjectStore>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn start(remote: &Remote, retry_for: Duration) -> Setup {
    let bucket = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    let mut repo = RepoSource::new(
        remote.bare.to_str().unwrap(),
        cache.path().join("cache.git"),
    );
    repo.fetch_retry_for = retry_for;
    repo.fetch_backoff = Duration::from_millis(50);
    repo.git_timeout = Duration::from_secs(30);
    let mut config = WorkerConfig::with_repo(repo, store.clone());
    config.engine = gpu_compress::EngineChoice::Cpu;
    config.worker_id = "repo-worker".into();
    let worker = RunningWorker::start(support::secure(config)).await;
    Setup {
        worker,
        store,
        _dirs: (bucket, cache),
    }
}

/// The chunks of `file_<f>` in `tree`.
fn chunks_of(tree: &Tree, f: usize) -> Vec<ChunkInfo> {
    let dir = format!("pending_compression/file_{f}");
    tree.infos()
        .into_iter()
        .filter(|c| c.base_dir == dir)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_pushed_after_the_worker_started_is_fetched_and_its_recipe_published() {
    let tree = make_tree(1, 3, 60_000);
    let files = support::write_manifests(&tree);
    let remote = Remote::new(&tree);
    let setup = start(&remote, Duration::from_secs(60)).await;
    // The worker is up with an empty cache; only now does the commit exist anywhere.
    let commit = remote.commit(&["pending_compression"], "chunk file_0");
    remote.push();
    // The worker never sees a checkout: the tree on disk goes away before dispatch.
    std::fs::remove_dir_all(&tree.base).unwrap();

    let (status, body) = post_signed(&setup.worker, &batch(&tree.infos(), Some(&commit))).await;
    assert_eq!(status, 202, "{body}");
    let status = setup.worker.wait_reported(3).await;
    assert_eq!(
        (status["completed"].as_u64(), status["failed"].as_u64()),
        (Some(3), Some(0)),
        "{status}"
    );
    support::assert_all_stored(&tree, setup.store.as_ref()).await;
    assert_eq!(setup.worker.metric(FETCHES).await, 1);

    // The manifest at the same commit says the file is complete: its recipe rebuilds it.
    let (name, data) = &files[0];
    let rebuilt = wait_for(|| support::rebuild(setup.store.as_ref(), name)).await;
    assert!(rebuilt == *data, "{name} differs after reconstruction");
    assert_eq!(
        setup
            .worker
            .metric("panini_worker_recipes_published_total")
            .await,
        1
    );
    assert_eq!(setup.worker.failures().await["total"], 0);
    setup.worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_pushed_late_is_waited_for_without_holding_back_other_commits() {
    let tree = make_tree(2, 3, 20_000);
    let remote = Remote::new(&tree);
    let pushed = remote.commit(&["pending_compression/file_0"], "file_0");
    remote.push();
    // Committed, not pushed: the webhook outruns the push.
    let late = remote.commit(&["pending_compression/file_1"], "file_1");
    let setup = start(&remote, Duration::from_secs(60)).await;

    let (status, body) =
        post_signed(&setup.worker, &batch(&chunks_of(&tree, 1), Some(&late))).await;
    assert_eq!(status, 202, "{body}");
    // The worker has tried and not found it…
    wait_for(|| async { (setup.worker.metric(FETCHES).await >= 1).then_some(()) }).await;
    // …and meanwhile chunks of a commit it can fetch go through.
    let (status, body) =
        post_signed(&setup.worker, &batch(&chunks_of(&tree, 0), Some(&pushed))).await;
    assert_eq!(status, 202, "{body}");
    let status = setup.worker.wait_reported(3).await;
    let failures = setup.worker.failures().await;
    assert_eq!(status["completed"], 3, "{status}\n{failures}");
    assert_eq!(status["failed"], 0, "{status}\n{failures}");
    // The late commit's chunks went through the gate first, and are still waiting.
    assert_eq!(setup.worker.metric(WAITING).await, 3);

    remote.push();
    let status = setup.worker.wait_reported(6).await;
    assert_eq!(status["completed"], 6, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(setup.worker.failures().await["total"], 0);
    assert_eq!(setup.worker.metric(WAITING).await, 0);
    support::assert_all_stored(&tree, setup.store.as_ref()).await;
    setup.worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_commit_fetch_it_once() {
    let tree = make_tree(2, 4, 10_000);
    let remote = Remote::new(&tree);
    let commit = remote.commit(&["pending_compression"], "two files");
    remote.push();
    let setup = start(&remote, Duration::from_secs(60)).await;

    let posts = tree.infos().into_iter().map(|chunk| {
        let body = serde_json::to_vec(&WebhookRequest::CompressChunk {
            chunk_info: chunk,
            repository: Some(RepositoryRef {
                owner: "o".into(),
                repo: "r".into(),
                commit_sha: commit.clone(),
                git_ref: "refs/heads/main".into(),
            }),
            workflow: None,
        })
        .unwrap();
        let worker = &setup.worker;
        async move { post_signed(worker, &body).await }
    });
    for (status, body) in futures::future::join_all(posts).await {
        assert_eq!(status, 202, "{body}");
    }
    let status = setup.worker.wait_reported(8).await;
    assert_eq!(status["completed"], 8, "{status}");
    assert_eq!(setup.worker.metric(FETCHES).await, 1);
    support::assert_all_stored(&tree, setup.store.as_ref()).await;
    setup.worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_links_and_unfetchable_commits_fail_with_a_reason() {
    let tree = make_tree(1, 2, 5_000);
    // A chunk whose data.bin is committed as a symbolic link to another chunk's data.
    let linked = tree.base.join("file_0/chunk_link");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink("../chunk_0000/data.bin", linked.join("data.bin")).unwrap();
    let remote = Remote::new(&tree);
    let commit = remote.commit(&["pending_compression"], "chunks");
    remote.push();
    let setup = start(&remote, Duration::from_millis(500)).await;

    let infos = tree.infos();
    let mut tampered = infos[0].clone();
    tampered.hash = Some(Sha256Digest::of(b"something else"));
    let mut link = infos[0].clone();
    link.chunk_path = "pending_compression/file_0/chunk_link".into();
    let (status, body) = post_signed(&setup.worker, &batch(&[tampered, link], Some(&commit))).await;
    assert_eq!(status, 202, "{body}");
    // A commit that never reaches the remote: failed once the retry bound is spent.
    let never = "0123456789abcdef0123456789abcdef01234567";
    let (status, body) = post_signed(&setup.worker, &batch(&infos[1..], Some(never))).await;
    assert_eq!(status, 202, "{body}");

    let status = setup.worker.wait_reported(3).await;
    assert_eq!(status["failed"], 3, "{status}");
    let failures = setup.worker.failures().await;
    let reason = |path: &str| {
        failures["failures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["chunk_path"] == path && f["error"].is_string())
            .map(|f| f["error"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no failure for {path}: {failures}"))
    };
    assert!(
        reason(&infos[0].chunk_path).contains("SHA-256 mismatch"),
        "{failures}"
    );
    assert!(
        reason("pending_compression/file_0/chunk_link").contains("not a regular file"),
        "{failures}"
    );
    let unfetchable = reason(&infos[1].chunk_path);
    assert!(
        unfetchable.contains("could not be fetched"),
        "{unfetchable}"
    );
    assert!(unfetchable.contains(never), "{unfetchable}");
    // Nothing of a failed chunk reached the bucket.
    assert!(setup.store.list("chunks/").await.unwrap().is_empty());
    setup.worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_commit_or_with_escaping_paths_get_400() {
    let tree = make_tree(1, 1, 1_000);
    let remote = Remote::new(&tree);
    let commit = remote.commit(&["pending_compression"], "chunk");
    remote.push();
    let setup = start(&remote, Duration::from_secs(60)).await;
    let good = tree.infos()[0].clone();
    let with_path = |path: &str| {
        let mut chunk = good.clone();
        chunk.chunk_path = path.to_owned();
        vec![good.clone(), chunk]
    };

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no repository",
            batch(std::slice::from_ref(&good), None),
            "commit_sha",
        ),
        (
            "a branch name",
            batch(std::slice::from_ref(&good), Some("main")),
            "not a commit id",
        ),
        (
            "a short id",
            batch(std::slice::from_ref(&good), Some(&commit[..12])),
            "not a commit id",
        ),
        (
            "parent dir",
            batch(&with_path("pending_compression/../../etc"), Some(&commit)),
            "'..'",
        ),
        (
            "absolute",
            batch(&with_path("/etc"), Some(&commit)),
            "absolute",
        ),
        ("empty", batch(&with_path(""), Some(&commit)), "empty"),
        // The grammar a checkout and the detector's callbacks share.
        (
            "backslash",
            batch(
                &with_path("pending_compression\\f\\chunk_0000"),
                Some(&commit),
            ),
            "backslash",
        ),
    ];
    for (what, body, needle) in cases {
        let (status, response) = post_signed(&setup.worker, &body).await;
        assert_eq!(status, 400, "{what}: {response}");
        let message = response["error"].as_str().unwrap();
        assert!(message.contains(needle), "{what}: {message}");
    }
    // Nothing of a refused request was queued, and nothing was fetched for it.
    assert_eq!(setup.worker.status().await["accepted"], 0);
    assert_eq!(setup.worker.metric(FETCHES).await, 0);
    assert_eq!(json!(setup.worker.failures().await["total"]), json!(0));
    setup.worker.stop().await;
}
