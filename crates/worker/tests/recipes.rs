//! Workers publish a file's recipe once every chunk object it needs is stored: two
//! workers sharing one bucket, racing on the last chunks of two chunked files, leave
//! exactly one recipe per file, and the bucket alone rebuilds each file bit for bit. A
//! worker checks a file once none of its chunks is left queued or in flight there (one
//! recipe lookup for a file sent in one request, whatever the batches), a chunk that
//! failed does not hold its file back once it is sent again, and a file whose manifest
//! is not written yet (still being cut) is no failure and is published after its next
//! chunk.

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

/// One chunked file in a fresh checkout and a CPU worker on it, storing into a watched
/// bucket ([`WatchedStore`]).
struct OneFile {
    root: std::path::PathBuf,
    data: Vec<u8>,
    chunks: Vec<ChunkInfo>,
    store: Arc<WatchedStore>,
    worker: RunningWorker,
    /// The checkout's and the bucket's, removed with the file.
    _dirs: [tempfile::TempDir; 2],
}

impl OneFile {
    /// `name` of `parts` pseudo-random 50,000-byte parts (seeds from `seed` on), in chunks
    /// of at most 64 KiB; `configure` adjusts the worker's configuration.
    async fn start(
        name: &str,
        parts: u64,
        seed: u64,
        configure: impl FnOnce(&mut WorkerConfig),
    ) -> Self {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("repo");
        std::fs::create_dir_all(&root).unwrap();
        let data: Vec<u8> = (0..parts)
            .flat_map(|p| support::chunk_bytes(seed + p, 50_000))
            .collect();
        let chunks = chunk(&root, name, &data);
        let bucket = tempfile::tempdir().unwrap();
        let store = WatchedStore::open_new(bucket.path());
        let mut config = WorkerConfig::new(&root, store.clone());
        config.engine = gpu_compress::EngineChoice::Cpu;
        configure(&mut config);
        let worker = RunningWorker::start(support::secure(config)).await;
        OneFile {
            root,
            data,
            chunks,
            store,
            worker,
            _dirs: [work, bucket],
        }
    }
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
    let mut ready = 0;
    for worker in [&a, &b] {
        assert_eq!(
            worker.metric("panini_worker_recipe_failures_total").await,
            0
        );
        // The status says what each wrote or found, for a reader waiting on recipes.
        let wrote_or_found = worker.metric("panini_worker_recipes_published_total").await
            + worker.metric("panini_worker_recipes_found_total").await;
        assert_eq!(worker.status().await["recipes_ready"], wrote_or_found);
        ready += wrote_or_found;
    }
    // Each file counted by the worker that wrote its recipe, and by the other if it
    // checked the file after that.
    assert!((2..=4).contains(&ready), "{ready}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_published_only_when_its_last_chunk_is_stored() {
    let file = OneFile::start("report", 4, 50, |_| {}).await;

    let (all_but_last, last) = file.chunks.split_at(file.chunks.len() - 1);
    let (status, body) = post_signed(&file.worker, &batch(all_but_last)).await;
    assert_eq!(status, 202, "{body}");
    file.worker.wait_reported(all_but_last.len() as u64).await;
    // Whenever this batch's publishing attempt runs, it finds the last chunk missing.
    assert!(
        file.store.list("recipes/").await.unwrap().is_empty(),
        "a recipe before its last chunk"
    );

    let (status, body) = post_signed(&file.worker, &batch(last)).await;
    assert_eq!(status, 202, "{body}");
    let rebuilt = wait_for(|| support::rebuild(file.store.as_ref(), "report")).await;
    assert!(rebuilt == file.data, "report differs after reconstruction");
    // The same chunks again (deduplicated) find the recipe there and write nothing.
    let (status, body) = post_signed(&file.worker, &batch(&file.chunks)).await;
    assert_eq!(status, 202, "{body}");
    file.worker
        .wait_reported(file.chunks.len() as u64 * 2)
        .await;
    let summary = file.worker.stop().await;
    assert_eq!(summary.failed, 0);
    assert_eq!(file.store.list("recipes/").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_in_one_request_is_checked_for_its_recipe_once() {
    // One chunk per batch: every batch but the last leaves chunks of the file queued.
    let file = OneFile::start("archive", 8, 80, |config| config.max_batch = 1).await;

    let (status, body) = post_signed(&file.worker, &batch(&file.chunks)).await;
    assert_eq!(status, 202, "{body}");
    file.worker.wait_reported(file.chunks.len() as u64).await;
    let rebuilt = wait_for(|| support::rebuild(file.store.as_ref(), "archive")).await;
    assert!(rebuilt == file.data, "archive differs after reconstruction");
    let summary = file.worker.stop().await;
    assert_eq!(summary.failed, 0);
    // Before, every one of the batches checked the file (and read its manifest).
    assert_eq!(
        file.store.recipe_lookups.load(Ordering::SeqCst),
        1,
        "recipe lookups for a file of {} chunks sent one per batch",
        file.chunks.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_chunk_failed_is_published_when_the_chunk_is_sent_again() {
    let file = OneFile::start("ledger", 5, 120, |_| {}).await;

    // One chunk's bytes no longer match the hash the request carries: it fails.
    let damaged = file.root.join(&file.chunks[2].chunk_path).join(DATA_FILE);
    let original = std::fs::read(&damaged).unwrap();
    std::fs::write(&damaged, b"not the chunk").unwrap();
    let (status, body) = post_signed(&file.worker, &batch(&file.chunks)).await;
    assert_eq!(status, 202, "{body}");
    let reported = file.worker.wait_reported(file.chunks.len() as u64).await;
    assert_eq!(reported["failed"], 1, "{reported}");
    assert!(file.store.list("recipes/").await.unwrap().is_empty());

    // The failed job gave its file's count back: once the chunk is sent again and
    // stored, the file is checked and its recipe published.
    std::fs::write(&damaged, &original).unwrap();
    let (status, body) = post_signed(&file.worker, &batch(&file.chunks[2..3])).await;
    assert_eq!(status, 202, "{body}");
    let rebuilt = wait_for(|| support::rebuild(file.store.as_ref(), "ledger")).await;
    assert!(rebuilt == file.data, "ledger differs after reconstruction");
    file.worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_cut_is_checked_again_once_its_manifest_is_there() {
    let file = OneFile::start("stream", 5, 140, |_| {}).await;
    // The pipeline sends a big file's first chunks while the rest is still being cut:
    // its manifest is not there yet.
    let manifest = file.root.join("pending_compression/stream/manifest.json");
    let written = std::fs::read(&manifest).unwrap();
    std::fs::remove_file(&manifest).unwrap();
    let (first, last) = file.chunks.split_at(file.chunks.len() - 1);
    let (status, body) = post_signed(&file.worker, &batch(first)).await;
    assert_eq!(status, 202, "{body}");
    let reported = file.worker.wait_reported(first.len() as u64).await;
    assert_eq!(reported["failed"], 0, "{reported}");
    assert!(file.store.list("recipes/").await.unwrap().is_empty());
    // Not a failure: nothing is wrong with a file that is not complete yet.
    assert_eq!(
        file.worker
            .metric("panini_worker_recipe_failures_total")
            .await,
        0
    );

    // The file is cut to its end and its last chunk sent: now it is published.
    std::fs::write(&manifest, written).unwrap();
    let (status, body) = post_signed(&file.worker, &batch(last)).await;
    assert_eq!(status, 202, "{body}");
    let rebuilt = wait_for(|| support::rebuild(file.store.as_ref(), "stream")).await;
    assert!(rebuilt == file.data, "stream differs after reconstruction");
    assert_eq!(
        file.worker
            .metric("panini_worker_recipe_failures_total")
            .await,
        0
    );
    file.worker.stop().await;
}
