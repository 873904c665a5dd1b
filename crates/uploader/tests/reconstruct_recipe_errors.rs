//! The reconstruction errors about the recipe itself, which no test reached: a recipe
//! that is not JSON (`RecipeJson`), one that describes another file than its key says
//! (`RecipeMismatch`), and one whose chunks all check out but do not make the file
//! (`FileHash`). Each must fail without touching the output, from `reconstruct` and
//! from `verify` alike.

mod support;

use std::path::Path;

use chunk_model::{Layout, Recipe, Sha256Digest, object_keys};
use support::chunk_tree;
use support::counting::overwrite_object;
use uploader::{
    LocalDir, ObjectStore, ReconstructError, UploadOptions, Which, reconstruct, upload_chunk_dir,
    verify,
};

fn no_progress<T>(_: T) {}

/// A file of three equal 30 000-byte chunks stored with zstd: (store, work dir, recipe).
async fn stored_file(data: &[u8]) -> (LocalDir, tempfile::TempDir, Recipe) {
    assert_eq!(data.len(), 90_000);
    let work = tempfile::tempdir().unwrap();
    let store = LocalDir::new(work.path().join("bucket")).unwrap();
    let tree = work.path().join("tree");
    chunk_tree::write(&tree, "f", data, 30_000, true);
    let report = upload_chunk_dir(
        &store,
        &Layout::new(&tree),
        "f",
        &chunk_tree::zstd(),
        &UploadOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    let recipe: Recipe =
        serde_json::from_slice(&store.get(&report.recipe_key).await.unwrap().bytes).unwrap();
    assert_eq!(recipe.chunks.len(), 3);
    std::fs::create_dir_all(work.path().join("out")).unwrap();
    (store, work, recipe)
}

/// Runs `reconstruct` onto an existing output and `verify`; both must fail, the output
/// must keep its old bytes and no temporary file may be left. Returns both errors.
async fn both_fail(store: &LocalDir, work: &Path, which: Which) -> [ReconstructError; 2] {
    let out = work.join("out");
    std::fs::write(out.join("f"), b"previous version").unwrap();
    let rebuilt = reconstruct(
        store,
        "f",
        which,
        &out.join("f"),
        &Default::default(),
        &no_progress,
    )
    .await
    .expect_err("reconstruct must fail");
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"previous version");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "no temporary file may be left"
    );
    let verified = verify(store, "f", which, &Default::default(), &no_progress)
        .await
        .expect_err("verify must fail");
    [rebuilt, verified]
}

#[tokio::test]
async fn a_recipe_that_is_not_json_is_named() {
    let data = support::pseudo_random(90_000, 31);
    let (store, work, recipe) = stored_file(&data).await;
    let key = object_keys::recipe("f", &recipe.file_sha256);
    overwrite_object(&store, &key, b"{\"version\": 1, \"name\": ");
    for error in both_fail(&store, work.path(), Which::Newest).await {
        assert!(
            matches!(&error, ReconstructError::RecipeJson { key: k, .. } if *k == key),
            "{error}"
        );
        assert!(error.to_string().contains(&key), "{error}");
    }
}

#[tokio::test]
async fn a_recipe_for_another_name_is_refused() {
    let data = support::pseudo_random(90_000, 32);
    let (store, work, recipe) = stored_file(&data).await;
    let key = object_keys::recipe("f", &recipe.file_sha256);
    let mut other = recipe.clone();
    other.name = "g".into();
    overwrite_object(&store, &key, &serde_json::to_vec(&other).unwrap());
    for error in both_fail(&store, work.path(), Which::Newest).await {
        assert!(
            matches!(&error, ReconstructError::RecipeMismatch { key: k, reason } if *k == key && reason.contains("\"g\"")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_recipe_stored_under_another_files_hash_is_refused() {
    let data = support::pseudo_random(90_000, 33);
    let (store, work, recipe) = stored_file(&data).await;
    // The right recipe, under the key of a different version of the file.
    let other_hash = Sha256Digest::of(b"another version of f");
    let key = object_keys::recipe("f", &other_hash);
    overwrite_object(&store, &key, &serde_json::to_vec(&recipe).unwrap());
    for error in both_fail(&store, work.path(), Which::File(other_hash)).await {
        assert!(
            matches!(&error, ReconstructError::RecipeMismatch { key: k, reason } if *k == key && reason.contains(&recipe.file_sha256.to_hex())),
            "{error}"
        );
    }
}

#[tokio::test]
async fn chunks_that_each_check_out_but_do_not_make_the_file_are_a_file_hash_error() {
    let data = support::compressible(90_000, 34);
    let (store, work, recipe) = stored_file(&data).await;
    // Chunks 0 and 1 swapped: each still decodes to the bytes its entry names (so every
    // per-chunk check passes), but the file they make is not the one the recipe names.
    let mut swapped = recipe.clone();
    let (first, second) = (recipe.chunks[0].clone(), recipe.chunks[1].clone());
    swapped.chunks[0].sha256 = second.sha256;
    swapped.chunks[0].key = second.key.clone();
    swapped.chunks[1].sha256 = first.sha256;
    swapped.chunks[1].key = first.key.clone();
    let key = object_keys::recipe("f", &recipe.file_sha256);
    overwrite_object(&store, &key, &serde_json::to_vec(&swapped).unwrap());
    let mut rebuilt = data[30_000..60_000].to_vec();
    rebuilt.extend_from_slice(&data[..30_000]);
    rebuilt.extend_from_slice(&data[60_000..]);
    for error in both_fail(&store, work.path(), Which::Newest).await {
        match &error {
            ReconstructError::FileHash {
                name,
                expected,
                actual,
            } => {
                assert_eq!(name, "f");
                assert_eq!(*expected, recipe.file_sha256);
                assert_eq!(*actual, Sha256Digest::of(&rebuilt));
            }
            other => panic!("expected FileHash, got {other}"),
        }
    }
}
