//! `find_recipes` and `verify_recipes`, the batched lookups and rebuilds the pipeline
//! uses for many small files: they must answer exactly as `find_recipe` and
//! `verify_recipe` do file by file (same reports, same errors naming the same chunk),
//! and a damaged file in a batch must fail alone.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use chunk_model::{Layout, Recipe, Sha256Digest};
use support::chunk_tree;
use support::counting::{CountingStore, overwrite_object};
use uploader::{
    LocalDir, ObjectStore, ReconstructError, UploadOptions, Which, find_recipes, upload_chunk_dir,
    verify, verify_recipes,
};

fn no_progress<T>(_: T) {}

/// Four files stored with zstd in 30 000-byte chunks: `a` (three chunks), `b` (whose
/// first chunk is `a`'s first), `c` (one chunk) and `d` (two chunks, both the same
/// zeros). Returns the store, its work dir and each file's name and bytes.
async fn stored_files() -> (LocalDir, tempfile::TempDir, Vec<(&'static str, Vec<u8>)>) {
    let work = tempfile::tempdir().unwrap();
    let store = LocalDir::new(work.path().join("bucket")).unwrap();
    let a = support::compressible(90_000, 41);
    let mut b = a[..30_000].to_vec();
    b.extend_from_slice(&support::pseudo_random(20_000, 42));
    let files = vec![
        ("a", a),
        ("b", b),
        ("c", support::compressible(12_345, 43)),
        ("d", vec![0; 60_000]),
    ];
    let tree = work.path().join("tree");
    for (name, data) in &files {
        chunk_tree::write(&tree, name, data, 30_000, true);
        upload_chunk_dir(
            &store,
            &Layout::new(&tree),
            name,
            &chunk_tree::zstd(),
            &UploadOptions::default(),
            &no_progress,
        )
        .await
        .unwrap();
    }
    (store, work, files)
}

/// The names and hashes to look the files up by.
fn wanted<'a>(files: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'a str, Sha256Digest)> {
    files
        .iter()
        .map(|(name, data)| (*name, Sha256Digest::of(data)))
        .collect()
}

/// Every file's recipe, under its key, looked up in one batch; each must be there.
async fn found(
    store: &dyn ObjectStore,
    files: &[(&'static str, Vec<u8>)],
) -> Vec<(String, Recipe)> {
    find_recipes(store, &wanted(files))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Every file's recipe.
async fn recipes_of(store: &LocalDir, files: &[(&'static str, Vec<u8>)]) -> Vec<Recipe> {
    let found = found(store, files).await;
    found.into_iter().map(|(_, recipe)| recipe).collect()
}

/// The bytes `recipe`'s distinct chunk objects take on disk: the oracle for
/// `stored_bytes`, read from the file system, not from the store.
fn bytes_on_disk(store: &LocalDir, recipe: &Recipe) -> u64 {
    let keys: BTreeSet<&str> = recipe.chunks.iter().map(|c| c.key.as_str()).collect();
    keys.into_iter()
        .map(|key| {
            std::fs::metadata(store.object_path(key).unwrap())
                .unwrap()
                .len()
        })
        .sum()
}

/// Looks up and verifies every file in one batch; each file's `verify` beside it.
async fn batch_and_alone(
    store: &LocalDir,
    files: &[(&'static str, Vec<u8>)],
) -> Vec<(
    Result<uploader::VerifyReport, ReconstructError>,
    Result<uploader::VerifyReport, ReconstructError>,
)> {
    let batch = verify_recipes(store, found(store, files).await).await;
    assert_eq!(batch.len(), files.len());
    let mut both = Vec::new();
    for ((name, data), batched) in files.iter().zip(batch) {
        let which = Which::File(Sha256Digest::of(data));
        let alone = verify(store, name, which, &Default::default(), &no_progress).await;
        both.push((batched, alone));
    }
    both
}

#[tokio::test]
async fn a_batch_verifies_each_file_as_verify_does_and_counts_its_objects_once() {
    let (store, _work, files) = stored_files().await;
    let recipes = recipes_of(&store, &files).await;
    for (batched, alone) in batch_and_alone(&store, &files).await {
        assert_eq!(batched.unwrap(), alone.unwrap());
    }
    let counting = CountingStore::new(store.clone());
    let recipes_found = found(&counting, &files).await;
    assert_eq!(counting.take_gets(), (0, 1), "the recipes in one request");
    let reports = verify_recipes(&counting, recipes_found).await;
    assert_eq!(
        counting.take_gets(),
        (0, 1),
        "the chunks of all files in one request, and no file verified again alone"
    );
    for (((name, data), recipe), report) in files.iter().zip(&recipes).zip(reports) {
        let report = report.unwrap();
        assert_eq!(report.file_size, data.len() as u64, "{name}");
        assert_eq!(report.file_sha256, Sha256Digest::of(data), "{name}");
        assert_eq!(report.stored_bytes, bytes_on_disk(&store, recipe), "{name}");
    }
    // `d`'s two chunks are one object, counted once.
    assert_eq!(recipes[3].chunks.len(), 2);
    assert_eq!(recipes[3].chunks[0].key, recipes[3].chunks[1].key);
}

#[tokio::test]
async fn a_file_without_a_recipe_is_named_and_the_others_are_found() {
    let (store, work, files) = stored_files().await;
    let mut asked = wanted(&files);
    asked.insert(1, ("nowhere", Sha256Digest::of(b"nowhere")));
    let found = find_recipes(&store, &asked).await;
    assert_eq!(found.len(), 5);
    match &found[1] {
        Err(ReconstructError::NoRecipe { name, .. }) => assert_eq!(name, "nowhere"),
        other => panic!("expected NoRecipe, got {other:?}"),
    }
    for (found, (name, hash)) in found
        .iter()
        .zip(&asked)
        .filter(|(_, (n, _))| *n != "nowhere")
    {
        let (key, recipe) = found.as_ref().unwrap();
        assert_eq!((recipe.name.as_str(), recipe.file_sha256), (*name, *hash));
        let (one_key, one) = uploader::reconstruct::find_recipe(&store, name, Which::File(*hash))
            .await
            .unwrap();
        assert_eq!((key, recipe), (&one_key, &one));
    }
    drop(work);
}

#[tokio::test]
async fn damaged_and_missing_chunks_fail_only_their_files_with_verifys_errors() {
    let (store, _work, files) = stored_files().await;
    let recipes = recipes_of(&store, &files).await;
    // `a`'s last chunk damaged (it is no one else's), `c`'s only chunk gone.
    let damaged = &recipes[0].chunks[2].key;
    overwrite_object(&store, damaged, b"not a zstd frame");
    let gone = &recipes[2].chunks[0].key;
    std::fs::remove_file(store.object_path(gone).unwrap()).unwrap();

    let counting = CountingStore::new(store.clone());
    verify_recipes(&counting, found(&counting, &files).await).await;
    assert_eq!(
        counting.take_gets(),
        (3 + 1, 2),
        "only a's three chunks and c's one are fetched again, to name the chunk at fault"
    );

    let results = batch_and_alone(&store, &files).await;
    for (index, (batched, alone)) in results.into_iter().enumerate() {
        match index {
            0 | 2 => {
                let (batched, alone) = (batched.unwrap_err(), alone.unwrap_err());
                assert_eq!(batched.to_string(), alone.to_string());
                let key = if index == 0 { damaged } else { gone };
                assert!(batched.to_string().contains(key.as_str()), "{batched}");
            }
            _ => assert_eq!(batched.unwrap(), alone.unwrap()),
        }
    }
    assert!(Path::new(&store.object_path(damaged).unwrap()).exists());
}
