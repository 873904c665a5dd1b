//! Workers publish a file's recipe once every chunk object it needs is stored: two
//! workers sharing one bucket, racing on the last chunks of two chunked files, leave
//! exactly one recipe per file, and the bucket alone rebuilds each file bit for bit.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chunk_model::layout::{DATA_FILE, chunk_dir_name};
use chunk_model::{ChunkInfo, Manifest, Priority, WebhookRequest, object_keys};
use support::{RunningWorker, WatchedStore, post_signed, wait_for};
use uploader::{LocalDir, ObjectStore};
use worker::WorkerConfig;

/// Chunks `data` as `<root>/pending_compression/<name>` with the real chunker (64 KiB
/// at most per chunk) and lists its chunks as the detector would.
fn chunk(root: &std::path::Path, name: &str, data: &[u8]) -> Vec<ChunkInfo> {
    let input = root.join(format!("{name}.bin"));
    std::fs::write(&input, data).unwrap();
    let mut options = chunker::ChunkOptions::new(root.join("pending_compression"));
    options.name = Some(name.into());
    options.config.strategy = chunker::Strategy::Size;
    options.config.max_chunk_size = 64 * 1024;
    chunker::chunk_file(&input, &options).unwrap();
    std::fs::remove_file(&input).unwrap();
    let base_dir = format!("pending_compression/{name}");
    let manifest: Manifest =
        chunk_model::json_file::read(&root.join(&base_dir).join("manifest.json")).unwrap();
    assert!(
        manifest.chunks.len() >= 4,
        "{} chunks",
        manifest.chunks.len()
    );
    manifest
        .chunks
        .iter()
        .map(|c| {
            let chunk_path = format!(
                "{base_dir}/{}",
                chunk_dir_name(c.chunk_id, manifest.total_chunks)
            );
            assert!(root.join(&chunk_path).join(DATA_FILE).is_file());
            ChunkInfo {
                chunk_path,
                chunk_id: c.chunk_id,
                pattern_type: c.pattern.clone(),
                size: c.size,
                hash: Some(c.hash),
                base_dir: base_dir.clone(),
                is_keyframe: false,
                priority: Priority::Normal,
                staged_object: None,
                extra: Default::default(),
            }
        })
        .collect()
}

fn batch(chunks: &[ChunkInfo]) -> Vec<u8> {
    serde_json::to_vec(&WebhookRequest::CompressBatch {
        chunks: chunks.to_vec(),
        repository: None,
        workflow: None,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_on_the_last_chunks_publish_one_recipe_per_file() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..2u64)
        .map(|f| {
            let mut data = Vec::new();
            for part in 0..5 {
                data.extend(support::chunk_bytes(f * 10 + part, 50_000));
            }
            (format!("movie_{f}"), data)
        })
        .collect();
    let chunks: Vec<Vec<ChunkInfo>> = files
        .iter()
        .map(|(name, data)| chunk(&root, name, data))
        .collect();

    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    let start = |id: &str| {
        let mut config = WorkerConfig::new(&root, store.clone());
        config.engine = gpu_compress::EngineChoice::Cpu;
        config.worker_id = id.into();
        RunningWorker::start(support::secure(config))
    };
    let (a, b) = (start("worker-a").await, start("worker-b").await);

    // Alternate chunks between the workers, and give both the last chunk of each file,
    // so each may be the one that completes a file, and both may try at once.
    let (mut for_a, mut for_b) = (Vec::new(), Vec::new());
    for file in &chunks {
        let (last, rest) = file.split_last().unwrap();
        for (i, chunk) in rest.iter().enumerate() {
            if i % 2 == 0 { &mut for_a } else { &mut for_b }.push(chunk.clone());
        }
        for_a.push(last.clone());
        for_b.push(last.clone());
    }
    let (sent_a, sent_b) = (for_a.len() as u64, for_b.len() as u64);
    let (to_a, to_b) = (batch(&for_a), batch(&for_b));
    let ((status_a, body_a), (status_b, body_b)) =
        tokio::join!(post_signed(&a, &to_a), post_signed(&b, &to_b));
    assert_eq!(status_a, 202, "{body_a}");
    assert_eq!(status_b, 202, "{body_b}");
    let (done_a, done_b) = tokio::join!(a.wait_reported(sent_a), b.wait_reported(sent_b));
    assert_eq!(done_a["failed"], 0, "{done_a}");
    assert_eq!(done_b["failed"], 0, "{done_b}");

    for (name, data) in &files {
        let rebuilt = wait_for(|| support::rebuild(store.as_ref(), name)).await;
        assert!(rebuilt == *data, "{name} differs after reconstruction");
        let recipes = store.list(&object_keys::recipe_prefix(name)).await.unwrap();
        assert_eq!(recipes.len(), 1, "{name}: {recipes:?}");
    }
    // Each file's recipe was created by exactly one of them; the other found it there.
    let published = a.metric("panini_worker_recipes_published_total").await
        + b.metric("panini_worker_recipes_published_total").await;
    assert_eq!(published, 2);
    for worker in [&a, &b] {
        assert_eq!(
            worker.metric("panini_worker_recipe_failures_total").await,
            0
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_published_only_when_its_last_chunk_is_stored() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let data: Vec<u8> = (0..4)
        .flat_map(|p| support::chunk_bytes(p + 50, 50_000))
        .collect();
    let chunks = chunk(&root, "report", &data);
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    let mut config = WorkerConfig::new(&root, store.clone());
    config.engine = gpu_compress::EngineChoice::Cpu;
    let worker = RunningWorker::start(support::secure(config)).await;

    let (all_but_last, last) = chunks.split_at(chunks.len() - 1);
    let (status, body) = post_signed(&worker, &batch(all_but_last)).await;
    assert_eq!(status, 202, "{body}");
    worker.wait_reported(all_but_last.len() as u64).await;
    // Whenever this batch's publishing attempt runs, it finds the last chunk missing.
    assert!(
        store.list("recipes/").await.unwrap().is_empty(),
        "a recipe before its last chunk"
    );

    let (status, body) = post_signed(&worker, &batch(last)).await;
    assert_eq!(status, 202, "{body}");
    let rebuilt = wait_for(|| support::rebuild(store.as_ref(), "report")).await;
    assert!(rebuilt == data, "report differs after reconstruction");
    // The same chunks again (deduplicated) find the recipe there and write nothing.
    let (status, body) = post_signed(&worker, &batch(&chunks)).await;
    assert_eq!(status, 202, "{body}");
    worker.wait_reported(chunks.len() as u64 * 2).await;
    let summary = worker.stop().await;
    assert_eq!(summary.failed, 0);
    assert_eq!(store.list("recipes/").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_in_one_request_is_checked_for_its_recipe_once() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let data: Vec<u8> = (0..8)
        .flat_map(|p| support::chunk_bytes(p + 80, 50_000))
        .collect();
    let chunks = chunk(&root, "archive", &data);
    let bucket = tempfile::tempdir().unwrap();
    let store = WatchedStore::open_new(bucket.path());
    let mut config = WorkerConfig::new(&root, store.clone());
    config.engine = gpu_compress::EngineChoice::Cpu;
    // One chunk per batch: every batch but the last leaves chunks of the file queued.
    config.max_batch = 1;
    let worker = RunningWorker::start(support::secure(config)).await;

    let (status, body) = post_signed(&worker, &batch(&chunks)).await;
    assert_eq!(status, 202, "{body}");
    worker.wait_reported(chunks.len() as u64).await;
    let rebuilt = wait_for(|| support::rebuild(store.as_ref(), "archive")).await;
    assert!(rebuilt == data, "archive differs after reconstruction");
    let summary = worker.stop().await;
    assert_eq!(summary.failed, 0);
    // Before, every one of the batches checked the file (and read its manifest).
    assert_eq!(
        store.recipe_lookups.load(Ordering::SeqCst),
        1,
        "recipe lookups for a file of {} chunks sent one per batch",
        chunks.len()
    );
}
