//! Upload from a chunk tree and reconstruction through `LocalDir`: bit-perfect round
//! trips, recipe selection, deduplication across files, and every kind of damage named
//! by chunk with no output left behind.

mod support;

use std::path::Path;

use chunk_model::{Layout, Recipe, Sha256Digest, object_keys};
use support::chunk_tree;
use uploader::{
    LocalDir, ObjectStore, PutOutcome, ReconstructError, ReconstructOptions, StoreAsIs, StoreError,
    UploadError, UploadOptions, Which, reconstruct, upload_chunk_dir,
};

fn no_progress<T>(_: T) {}

async fn upload(
    store: &LocalDir,
    root: &Path,
    name: &str,
    encoder: &dyn uploader::ChunkEncoder,
) -> uploader::UploadReport {
    upload_chunk_dir(
        store,
        &Layout::new(root),
        name,
        encoder,
        &UploadOptions::default(),
        &no_progress,
    )
    .await
    .unwrap()
}

/// Files in `dir` other than the ones named (temporary files would show up here).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_file_round_trips_bit_for_bit_and_identical_chunks_are_stored_once() {
    let work = tempfile::tempdir().unwrap();
    let (tree, bucket, out) = (
        work.path().join("tree"),
        work.path().join("bucket"),
        work.path().join("out"),
    );
    std::fs::create_dir_all(&out).unwrap();
    let store = LocalDir::new(&bucket).unwrap();
    // Compressible text with one repeated 64 KiB block, so two chunks are identical.
    let mut data = support::compressible(64 * 1024, 1);
    data.extend_from_slice(&data.clone());
    data.extend_from_slice(&support::pseudo_random(300_001, 2));
    chunk_tree::write(&tree, "movie", &data, 64 * 1024, true);

    let report = upload(&store, &tree, "movie", &chunk_tree::zstd()).await;
    assert_eq!(report.recipe, PutOutcome::Created);
    assert_eq!(
        (report.chunks_created, report.chunks_existing),
        (6, 1),
        "the repeated chunk is stored once"
    );
    assert_eq!(
        report.recipe_key,
        object_keys::recipe("movie", &Sha256Digest::of(&data))
    );

    let recipe: Recipe =
        serde_json::from_slice(&store.get(&report.recipe_key).await.unwrap().bytes).unwrap();
    recipe.validate().unwrap();
    assert_eq!(recipe.chunks.len(), 7);
    assert!(
        recipe
            .chunks
            .iter()
            .all(|c| c.key == object_keys::chunk_object(&c.sha256, c.codec))
    );

    // A rerun stores nothing new.
    let again = upload(&store, &tree, "movie", &chunk_tree::zstd()).await;
    assert_eq!(
        (again.chunks_created, again.chunks_existing, again.recipe),
        (0, 7, PutOutcome::AlreadyExists)
    );

    let progress = std::sync::Mutex::new(Vec::new());
    let output = out.join("movie.bin");
    let done = reconstruct(
        &store,
        "movie",
        Which::Newest,
        &output,
        &ReconstructOptions { max_in_flight: 3 },
        &|p| progress.lock().unwrap().push(p.bytes_done),
    )
    .await
    .unwrap();
    assert!(std::fs::read(&output).unwrap() == data);
    assert_eq!(
        (done.file_size, done.file_sha256, done.chunks),
        (data.len() as u64, Sha256Digest::of(&data), 7)
    );
    let progress = progress.into_inner().unwrap();
    assert_eq!(progress.len(), 7);
    assert_eq!(progress.last(), Some(&(data.len() as u64)));
    assert_eq!(files_in(&out), ["movie.bin"]);
}

#[tokio::test]
async fn the_newest_recipe_is_used_unless_a_file_hash_is_given() {
    let work = tempfile::tempdir().unwrap();
    let store = LocalDir::new(work.path().join("bucket")).unwrap();
    let first = support::pseudo_random(100_000, 3);
    let second = support::pseudo_random(120_000, 4);
    // Python-style manifest without a whole-file hash: the uploader computes it.
    chunk_tree::write(&work.path().join("t1"), "doc", &first, 30_000, false);
    upload(&store, &work.path().join("t1"), "doc", &StoreAsIs).await;
    // Recipes are ordered by their store time (the object's mtime here), whose
    // granularity could tie two quick uploads: the first one is dated an hour back.
    let first_recipe = store
        .object_path(&object_keys::recipe("doc", &Sha256Digest::of(&first)))
        .unwrap();
    std::fs::File::open(&first_recipe)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
    chunk_tree::write(&work.path().join("t2"), "doc", &second, 30_000, true);
    upload(&store, &work.path().join("t2"), "doc", &StoreAsIs).await;

    let output = work.path().join("doc.out");
    reconstruct(
        &store,
        "doc",
        Which::Newest,
        &output,
        &Default::default(),
        &no_progress,
    )
    .await
    .unwrap();
    assert!(std::fs::read(&output).unwrap() == second);
    reconstruct(
        &store,
        "doc",
        Which::File(Sha256Digest::of(&first)),
        &output,
        &Default::default(),
        &no_progress,
    )
    .await
    .unwrap();
    assert!(std::fs::read(&output).unwrap() == first);

    let error = reconstruct(
        &store,
        "nope",
        Which::Newest,
        &output,
        &Default::default(),
        &no_progress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, ReconstructError::NoRecipe { name, .. } if name == "nope"),
        "{error}"
    );
    let error = reconstruct(
        &store,
        "doc",
        Which::File(Sha256Digest::of(b"other")),
        &output,
        &Default::default(),
        &no_progress,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ReconstructError::NoRecipe { .. }));
}

/// Uploads a three-chunk file and returns (store, work dir, recipe).
async fn stored_file(data: &[u8]) -> (LocalDir, tempfile::TempDir, Recipe) {
    let work = tempfile::tempdir().unwrap();
    let store = LocalDir::new(work.path().join("bucket")).unwrap();
    chunk_tree::write(
        &work.path().join("tree"),
        "f",
        data,
        data.len().div_ceil(3),
        true,
    );
    let report = upload(&store, &work.path().join("tree"), "f", &chunk_tree::zstd()).await;
    let recipe =
        serde_json::from_slice(&store.get(&report.recipe_key).await.unwrap().bytes).unwrap();
    std::fs::create_dir_all(work.path().join("out")).unwrap();
    (store, work, recipe)
}

async fn assert_fails_without_output(store: &LocalDir, work: &Path) -> ReconstructError {
    let out = work.join("out");
    // An older file at the output path must survive a failed reconstruction untouched.
    std::fs::write(out.join("f"), b"previous version").unwrap();
    let error = reconstruct(
        store,
        "f",
        Which::Newest,
        &out.join("f"),
        &Default::default(),
        &no_progress,
    )
    .await
    .unwrap_err();
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"previous version");
    assert_eq!(
        files_in(&out),
        ["f"],
        "no temporary file may be left behind"
    );
    error
}

#[tokio::test]
async fn a_damaged_chunk_object_is_named_and_no_output_is_written() {
    let data = support::compressible(200_000, 5);
    let (store, work, recipe) = stored_file(&data).await;
    let victim = &recipe.chunks[1];
    let path = store.object_path(&victim.key).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let error = assert_fails_without_output(&store, work.path()).await;
    assert!(
        matches!(&error, ReconstructError::ChunkStore { index: 1, key, source: StoreError::ChecksumMismatch { .. } } if *key == victim.key),
        "{error}"
    );
    assert!(error.to_string().contains(&victim.key));
}

#[tokio::test]
async fn a_chunk_that_decodes_to_other_bytes_is_named_and_no_output_is_written() {
    let data = support::pseudo_random(90_000, 6);
    let (store, work, recipe) = stored_file(&data).await;
    // Replace chunk 2's object and its sidecar with chunk 0's, consistently, so the
    // store's CRC32C passes and only the SHA-256 check can notice.
    let (good, victim) = (&recipe.chunks[0], &recipe.chunks[2]);
    let root = store.root();
    std::fs::copy(
        store.object_path(&good.key).unwrap(),
        store.object_path(&victim.key).unwrap(),
    )
    .unwrap();
    let meta = |key: &str| {
        root.join(uploader::local::META_DIR)
            .join(format!("{key}.json"))
    };
    std::fs::copy(meta(&good.key), meta(&victim.key)).unwrap();

    let error = assert_fails_without_output(&store, work.path()).await;
    match &error {
        ReconstructError::ChunkMismatch {
            index,
            key,
            expected,
            actual,
            offset,
            ..
        } => {
            assert_eq!((*index, key, *offset), (2, &victim.key, victim.offset));
            assert_eq!((*expected, *actual), (victim.sha256, good.sha256));
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn a_missing_chunk_or_a_broken_recipe_fails_without_output() {
    let data = support::pseudo_random(50_000, 7);
    let (store, work, recipe) = stored_file(&data).await;
    std::fs::remove_file(store.object_path(&recipe.chunks[0].key).unwrap()).unwrap();
    let error = assert_fails_without_output(&store, work.path()).await;
    assert!(
        matches!(
            &error,
            ReconstructError::ChunkStore {
                index: 0,
                source: StoreError::NotFound { .. },
                ..
            }
        ),
        "{error}"
    );

    // A recipe whose chunks leave a gap is refused before anything is downloaded.
    let key = object_keys::recipe("f", &recipe.file_sha256);
    let mut broken = recipe.clone();
    broken.chunks.remove(1);
    let json = serde_json::to_vec(&broken).unwrap();
    std::fs::write(store.object_path(&key).unwrap(), &json).unwrap();
    std::fs::remove_file(
        store
            .root()
            .join(uploader::local::META_DIR)
            .join(format!("{key}.json")),
    )
    .unwrap();
    let error = assert_fails_without_output(&store, work.path()).await;
    assert!(
        matches!(&error, ReconstructError::InvalidRecipe { key: k, .. } if *k == key),
        "{error}"
    );
}

#[tokio::test]
async fn bad_chunk_trees_are_refused_before_any_recipe_is_written() {
    let work = tempfile::tempdir().unwrap();
    let store = LocalDir::new(work.path().join("bucket")).unwrap();
    let data = support::pseudo_random(40_000, 8);
    let tree = work.path().join("tree");
    chunk_tree::write(&tree, "g", &data, 10_000, true);
    let damaged = Layout::new(&tree)
        .chunk_dir("g", 2, 4)
        .unwrap()
        .join("data.bin");
    std::fs::write(&damaged, b"not the chunk").unwrap();
    let error = upload_chunk_dir(
        &store,
        &Layout::new(&tree),
        "g",
        &StoreAsIs,
        &UploadOptions::default(),
        &no_progress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &error,
            UploadError::FileHash { .. } | UploadError::ChunkHash { .. }
        ),
        "{error}"
    );
    assert!(store.list("recipes/").await.unwrap().is_empty());
}
