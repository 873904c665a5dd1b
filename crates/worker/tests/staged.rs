//! Chunks whose raw bytes were staged in the bucket (`staging/<sha256>`) instead of
//! committed as `data.bin`: the worker reads them from its bucket, checks them, and
//! stores them like any other, also in batches that mix them with checked-out chunks; a
//! staged key that names other content is refused; and a staged object pruned because
//! its chunk is stored still completes the chunk.

mod support;

use std::sync::Arc;

use chunk_model::layout::{DATA_FILE, METADATA_FILE};
use chunk_model::{ChunkMetadata, Sha256Digest, WebhookRequest, object_keys};
use support::{Tree, post_signed, wait_for};
use uploader::{LocalDir, ObjectMeta, ObjectStore};

/// Does what `panini stage` does, by hand (this crate cannot depend on `panini`): each
/// chunk's bytes go to `staging/<sha256>`, its metadata names the key, its `data.bin`
/// goes, and the listed chunk carries the key as the detector lists it.
async fn stage_by_hand(tree: &mut Tree, store: &dyn ObjectStore) {
    stage_some_by_hand(tree, store, |_| true).await;
}

/// [`stage_by_hand`] for the chunks whose index `pick` picks.
async fn stage_some_by_hand(
    tree: &mut Tree,
    store: &dyn ObjectStore,
    pick: impl Fn(usize) -> bool,
) {
    for (index, (info, bytes)) in tree.chunks.iter_mut().enumerate() {
        if !pick(index) {
            continue;
        }
        let key = object_keys::staged_object(&Sha256Digest::of(bytes));
        store
            .put(&key, bytes.clone().into(), &ObjectMeta::plain(bytes))
            .await
            .unwrap();
        let dir = tree.root.join(&info.chunk_path);
        std::fs::remove_file(dir.join(DATA_FILE)).unwrap();
        chunk_model::json_file::update(&dir.join(METADATA_FILE), |meta: &mut ChunkMetadata| {
            meta.staged_object = Some(key.clone());
            Ok::<_, chunk_model::ModelError>(())
        })
        .unwrap();
        info.staged_object = Some(key);
    }
}

fn batch(tree: &Tree) -> Vec<u8> {
    serde_json::to_vec(&WebhookRequest::CompressBatch {
        chunks: tree.infos(),
        repository: None,
        workflow: None,
    })
    .unwrap()
}

fn start(tree: &Tree, store: Arc<dyn ObjectStore>) -> impl Future<Output = support::RunningWorker> {
    support::RunningWorker::start(support::secure(support::config(tree, store)))
}

/// Starts a worker on `tree` and sends it every chunk in one batch: none fails, every
/// chunk is stored, and every file of `files` rebuilds from the bucket. The worker is
/// handed back running.
async fn send_and_rebuild(
    tree: &Tree,
    files: &[(String, Vec<u8>)],
    store: &Arc<dyn ObjectStore>,
) -> support::RunningWorker {
    let worker = start(tree, store.clone()).await;
    let (status, body) = post_signed(&worker, &batch(tree)).await;
    assert_eq!(status, 202, "{body}");
    let done = worker.wait_reported(tree.chunks.len() as u64).await;
    assert_eq!(done["failed"], 0, "{}", worker.failures().await);
    support::assert_all_stored(tree, store.as_ref()).await;
    for (name, data) in files {
        let rebuilt = wait_for(|| support::rebuild(store.as_ref(), name)).await;
        assert!(rebuilt == *data, "{name} differs after reconstruction");
    }
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_chunks_are_read_from_the_bucket_stored_and_rebuilt() {
    let mut tree = support::make_tree(2, 3, 40_000);
    let files = support::write_manifests(&tree);
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    stage_by_hand(&mut tree, store.as_ref()).await;

    let worker = send_and_rebuild(&tree, &files, &store).await;

    // Pruned: the staged objects and the completion records are gone, only the chunk
    // objects remain. The same chunks sent again complete from those, not as failures.
    for (info, _) in &tree.chunks {
        let sha = info.hash.unwrap();
        assert!(
            store
                .delete(&object_keys::staged_object(&sha))
                .await
                .unwrap()
        );
        assert!(
            store
                .delete(&object_keys::status_record(&sha))
                .await
                .unwrap()
        );
    }
    let (status, body) = post_signed(&worker, &batch(&tree)).await;
    assert_eq!(status, 202, "{body}");
    let done = worker.wait_reported(12).await;
    assert_eq!(done["failed"], 0, "{}", worker.failures().await);
    assert_eq!(done["deduplicated"], 6, "{done}");
    support::assert_all_stored(&tree, store.as_ref()).await;
    worker.stop().await;
}

/// One batch of staged chunks and chunks in the checkout, interleaved: each is read from
/// its own place (the two kinds' paths are checked in separate batches and must come back
/// to the right chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mixing_staged_and_checked_out_chunks_reads_each_from_its_place() {
    let mut tree = support::make_tree(2, 4, 30_000);
    let files = support::write_manifests(&tree);
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    stage_some_by_hand(&mut tree, store.as_ref(), |index| index % 3 == 1).await;

    send_and_rebuild(&tree, &files, &store).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_key_must_be_the_chunks_own_and_its_bytes_must_match() {
    let mut tree = support::make_tree(1, 3, 10_000);
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(bucket.path()).unwrap());
    stage_by_hand(&mut tree, store.as_ref()).await;
    let worker = start(&tree, store.clone()).await;

    // A key naming another chunk's bytes is refused at the door, the whole batch.
    let mut swapped = tree.infos();
    swapped[0].staged_object = swapped[1].staged_object.clone();
    let body = serde_json::to_vec(&WebhookRequest::CompressBatch {
        chunks: swapped,
        repository: None,
        workflow: None,
    })
    .unwrap();
    let (status, answer) = post_signed(&worker, &body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("chunks[0]: staged_object"),
        "{answer}"
    );

    // Bytes in the bucket that are not the chunk's (replaced behind Panini's back, with
    // consistent store metadata, so only the worker's own SHA-256 check can tell), and a
    // staged object that is simply missing: each chunk fails with its own reason, and
    // the third is stored.
    let hash = |i: usize| tree.chunks[i].0.hash.unwrap();
    let key0 = object_keys::staged_object(&hash(0));
    let mut other = tree.chunks[0].1.clone();
    other[0] ^= 1;
    assert!(store.delete(&key0).await.unwrap());
    store
        .put(&key0, other.clone().into(), &ObjectMeta::plain(&other))
        .await
        .unwrap();
    assert!(
        store
            .delete(&object_keys::staged_object(&hash(1)))
            .await
            .unwrap()
    );
    let (status, answer) = post_signed(&worker, &batch(&tree)).await;
    assert_eq!(status, 202, "{answer}");
    let done = worker.wait_reported(3).await;
    assert_eq!(done["failed"], 2, "{done}");
    let failures = worker.failures().await.to_string();
    assert!(failures.contains("SHA-256 mismatch"), "{failures}");
    assert!(failures.contains("is missing"), "{failures}");
    assert!(
        store
            .stat(&object_keys::status_record(&hash(2)))
            .await
            .unwrap()
            .is_some()
    );
    worker.stop().await;
}
