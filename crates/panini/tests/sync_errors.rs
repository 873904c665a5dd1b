//! `panini::sync::sync` when things are wrong: every record or chunk it cannot use is
//! reported by name (the bucket key of the record, the path of the chunk or file), the
//! rest still goes on, and a bucket that cannot be listed or a tree that is not there
//! fails the sync with the name of what failed.
//!
//! The tree is written by the real chunker and the bucket is a real `LocalDir`; faults
//! are made the way they happen: a record that is not JSON, one filed under another
//! chunk's name, one without its upload, an object damaged on disk, a `data.bin` or
//! `metadata.json` gone bad, a chunk object never stored, a manifest never written.

use std::path::{Path, PathBuf};

use chrono::Utc;
use panini::chunk_model::{ChunkCompressed, Codec, Manifest, Sha256Digest, Status, object_keys};
use panini::sync::{RecipeState, SyncReport, sync};
use panini::uploader::{LocalDir, ObjectMeta, ObjectStore as _};

/// A file of three 16 KiB chunks, `movie`, chunked into `<root>/pending_compression`.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    base: PathBuf,
    bucket: LocalDir,
    bucket_dir: PathBuf,
    /// Per chunk: its path relative to the root (as records and reports name it), its
    /// bytes and their SHA-256.
    chunks: Vec<(String, Vec<u8>, Sha256Digest)>,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let base = root.join("pending_compression");
    std::fs::create_dir_all(&root).unwrap();
    let input = dir.path().join("movie.bin");
    let bytes: Vec<u8> = (0..48 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&input, &bytes).unwrap();
    let mut options = panini::chunker::ChunkOptions::new(&base);
    options.config = panini::chunker::ChunkerConfig {
        strategy: panini::chunker::Strategy::Size,
        max_chunk_size: 16 * 1024,
        min_chunk_size: 0,
    };
    options.sync = false;
    panini::chunker::chunk_file(&input, &options).unwrap();
    let manifest: Manifest =
        panini::chunk_model::json_file::read(&base.join("movie/manifest.json")).unwrap();
    assert_eq!(manifest.chunks.len(), 3);
    let chunks = (0..3)
        .map(|i| {
            let path = format!("pending_compression/movie/chunk_{i:04}");
            let data = std::fs::read(root.join(&path).join("data.bin")).unwrap();
            let sha = Sha256Digest::of(&data);
            (path, data, sha)
        })
        .collect();
    let bucket_dir = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket_dir).unwrap();
    let bucket = LocalDir::new(&bucket_dir).unwrap();
    Tree {
        _dir: dir,
        root,
        base,
        bucket,
        bucket_dir,
        chunks,
    }
}

impl Tree {
    /// Stores chunk `i` as a `store` object.
    async fn store_object(&self, i: usize) {
        let (_, data, sha) = &self.chunks[i];
        self.bucket
            .put(
                &object_keys::chunk_object(sha, Codec::Store),
                data.clone().into(),
                &ObjectMeta {
                    codec: Codec::Store,
                    original_size: data.len() as u64,
                    original_sha256: *sha,
                },
            )
            .await
            .unwrap();
    }

    /// The completion record a worker writes for chunk `i`.
    fn record(&self, i: usize) -> ChunkCompressed {
        let (path, data, sha) = &self.chunks[i];
        ChunkCompressed {
            chunk_path: path.clone(),
            status: Status::Completed,
            upload_path: Some(object_keys::chunk_object(sha, Codec::Store)),
            upload_hash: Some(Sha256Digest::of(data)),
            original_hash: Some(*sha),
            worker_id: Some("w1".into()),
            error: None,
            stats: serde_json::Value::Null,
        }
    }

    /// Puts `bytes` as the record of chunk `i` (`status/<sha>.json`); returns its key.
    async fn put_record_bytes(&self, i: usize, bytes: Vec<u8>) -> String {
        let key = object_keys::status_record(&self.chunks[i].2);
        self.bucket
            .put(&key, bytes.clone().into(), &ObjectMeta::plain(&bytes))
            .await
            .unwrap();
        key
    }

    async fn put_record(&self, i: usize, record: &ChunkCompressed) -> String {
        self.put_record_bytes(i, serde_json::to_vec(record).unwrap())
            .await
    }

    fn status(&self, i: usize) -> Status {
        let meta: panini::chunk_model::ChunkMetadata = panini::chunk_model::json_file::read(
            &self.root.join(&self.chunks[i].0).join("metadata.json"),
        )
        .unwrap();
        meta.status
    }

    async fn sync(&self) -> SyncReport {
        sync(&self.base, &self.bucket, Utc::now()).await.unwrap()
    }
}

/// The one error of `report`, which starts with `name: `.
fn only_error_names<'a>(report: &'a SyncReport, name: &str) -> &'a str {
    assert_eq!(report.errors.len(), 1, "{report:#?}");
    let error = &report.errors[0];
    assert!(
        error.starts_with(&format!("{name}: ")),
        "the error names {name}: {error}"
    );
    error
}

#[tokio::test]
async fn a_record_that_is_not_json_is_named_and_the_others_still_apply() {
    let t = tree();
    let bad = t
        .put_record_bytes(0, b"{\"status\": \"compl".to_vec())
        .await;
    t.put_record(1, &t.record(1)).await;

    let report = t.sync().await;

    only_error_names(&report, &bad);
    assert_eq!(report.completed, [t.chunks[1].0.clone()], "{report:#?}");
    assert_eq!(t.status(0), Status::Pending);
    assert_eq!(t.status(1), Status::Completed);
}

#[tokio::test]
async fn a_record_filed_under_another_chunks_name_is_refused() {
    let t = tree();
    // Chunk 1's record, stored under chunk 0's name.
    let key = t.put_record(0, &t.record(1)).await;

    let report = t.sync().await;

    let error = only_error_names(&report, &key);
    assert!(error.contains("original_hash"), "{error}");
    assert!(report.completed.is_empty(), "{report:#?}");
    assert_eq!(
        (t.status(0), t.status(1)),
        (Status::Pending, Status::Pending)
    );
}

#[tokio::test]
async fn a_completed_record_without_its_upload_is_refused_naming_the_chunk() {
    let t = tree();
    t.put_record(
        0,
        &ChunkCompressed {
            upload_path: None,
            ..t.record(0)
        },
    )
    .await;
    t.put_record(
        1,
        &ChunkCompressed {
            upload_path: Some("chunks/../../etc/passwd".into()),
            ..t.record(1)
        },
    )
    .await;

    let report = t.sync().await;

    assert_eq!(report.errors.len(), 2, "{report:#?}");
    let mut errors = report.errors.clone();
    errors.sort();
    assert!(
        errors[0].starts_with(&format!("{}: ", t.chunks[0].0)) && errors[0].contains("upload_path"),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with(&format!("{}: ", t.chunks[1].0))
            && errors[1].contains("chunks/../../etc/passwd"),
        "{errors:#?}"
    );
    assert!(report.completed.is_empty());
    assert_eq!(
        (t.status(0), t.status(1)),
        (Status::Pending, Status::Pending)
    );
}

#[tokio::test]
async fn a_record_that_cannot_be_read_back_is_named() {
    let t = tree();
    let key = t.put_record(0, &t.record(0)).await;
    t.put_record(1, &t.record(1)).await;
    // Bit rot in the bucket: the bytes no longer match the CRC32C stored beside them.
    let object = t.bucket_dir.join(&key);
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[5] ^= 0x20;
    std::fs::write(&object, bytes).unwrap();

    let report = t.sync().await;

    only_error_names(&report, &key);
    assert_eq!(report.completed, [t.chunks[1].0.clone()], "{report:#?}");
    assert_eq!(t.status(0), Status::Pending);
}

#[tokio::test]
async fn a_chunk_with_bad_metadata_or_no_data_is_reported_by_path() {
    let t = tree();
    for i in 0..3 {
        t.put_record(i, &t.record(i)).await;
    }
    let no_data = t.root.join(&t.chunks[0].0).join("data.bin");
    std::fs::remove_file(&no_data).unwrap();
    let bad_metadata = t.root.join(&t.chunks[2].0).join("metadata.json");
    std::fs::write(&bad_metadata, "{\"chunk_id\": 2, \"status\": ").unwrap();

    let report = t.sync().await;

    let mut errors = report.errors.clone();
    errors.sort();
    assert_eq!(errors.len(), 2, "{report:#?}");
    assert!(
        errors[0].starts_with(&format!("{}/data.bin: ", t.chunks[0].0)),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with(&format!("{}/metadata.json: ", t.chunks[2].0)),
        "{errors:#?}"
    );
    assert_eq!(report.completed, [t.chunks[1].0.clone()], "{report:#?}");
}

#[tokio::test]
async fn a_file_with_a_chunk_object_missing_gets_no_recipe_and_says_which() {
    let t = tree();
    for i in 0..3 {
        t.put_record(i, &t.record(i)).await;
    }
    t.store_object(0).await;
    t.store_object(2).await;

    let report = t.sync().await;

    assert!(report.errors.is_empty(), "{report:#?}");
    assert_eq!(report.completed.len(), 3);
    assert_eq!(report.recipes.len(), 1, "{report:#?}");
    let recipe = &report.recipes[0];
    assert_eq!(
        (recipe.name.as_str(), recipe.state),
        ("movie", RecipeState::Incomplete)
    );
    let reason = recipe.reason.as_deref().unwrap();
    assert!(
        reason.contains("chunk 1") && reason.contains(&t.chunks[1].2.to_string()),
        "the reason names the chunk and its object: {reason}"
    );
    assert!(t.bucket.list("recipes/").await.unwrap().is_empty());

    // Once stored, the next sync publishes it.
    t.store_object(1).await;
    let report = t.sync().await;
    assert_eq!(
        report.recipes[0].state,
        RecipeState::Published,
        "{report:#?}"
    );
    // And the one after finds it there, under the same key.
    let published = report.recipes[0].key.clone();
    let report = t.sync().await;
    assert_eq!(
        (report.recipes[0].state, &report.recipes[0].key),
        (RecipeState::AlreadyPublished, &published),
        "{report:#?}"
    );
    assert!(published.is_some());
}

#[tokio::test]
async fn a_manifest_that_does_not_parse_fails_that_file_by_path() {
    let t = tree();
    let manifest = t.base.join("movie/manifest.json");
    std::fs::write(&manifest, "{\"chunks\": [").unwrap();

    let report = t.sync().await;

    assert_eq!(report.recipes.len(), 1, "{report:#?}");
    let recipe = &report.recipes[0];
    assert_eq!(recipe.state, RecipeState::Failed);
    let reason = recipe.reason.as_deref().unwrap();
    assert!(
        reason.contains(manifest.to_str().unwrap()),
        "the reason names the manifest: {reason}"
    );
}

#[tokio::test]
async fn a_file_with_chunks_but_no_manifest_fails_that_file_by_its_directory() {
    // What a pipeline run stopped while it was writing the file in place leaves.
    let t = tree();
    std::fs::remove_file(t.base.join("movie/manifest.json")).unwrap();
    // A directory without chunks is not a file of the tree.
    std::fs::create_dir(t.base.join("notes")).unwrap();

    let report = t.sync().await;

    assert_eq!(report.recipes.len(), 1, "{report:#?}");
    let recipe = &report.recipes[0];
    assert_eq!(
        (recipe.name.as_str(), recipe.state),
        ("movie", RecipeState::Failed)
    );
    let reason = recipe.reason.as_deref().unwrap();
    assert_eq!(
        reason,
        format!(
            "{}: chunks but no manifest.json (the file's cut did not finish, or its manifest \
             was removed): chunk the file again",
            t.base.join("movie").display()
        )
    );
}

#[tokio::test]
async fn records_of_chunks_outside_the_tree_are_never_read() {
    let t = tree();
    t.put_record(1, &t.record(1)).await;
    // Another tree's record in the same bucket, unreadable as JSON: not this sync's
    // business, and never even fetched.
    let stranger = object_keys::status_record(&Sha256Digest::of(b"another tree's chunk"));
    let junk = b"{ not json".to_vec();
    t.bucket
        .put(&stranger, junk.clone().into(), &ObjectMeta::plain(&junk))
        .await
        .unwrap();

    let report = t.sync().await;

    assert!(report.errors.is_empty(), "{report:#?}");
    assert_eq!(report.records, 1, "{report:#?}");
    assert_eq!(report.completed, [t.chunks[1].0.clone()], "{report:#?}");
}

#[tokio::test]
async fn records_that_cannot_be_read_are_each_named_and_nothing_is_completed() {
    let t = tree();
    // `status` is a file where the records' directory should be.
    std::fs::write(t.bucket_dir.join("status"), "not a directory").unwrap();

    let report = sync(&t.base, &t.bucket, Utc::now()).await.unwrap();

    // Only the open chunks' records are read, each by its key: each one is named.
    let mut errors = report.errors.clone();
    errors.sort();
    let mut keys: Vec<String> = t
        .chunks
        .iter()
        .map(|(_, _, sha)| panini::chunk_model::object_keys::status_record(sha))
        .collect();
    keys.sort();
    assert_eq!(errors.len(), keys.len(), "{report:#?}");
    for (error, key) in errors.iter().zip(&keys) {
        assert!(
            error.starts_with(&format!("{key}: ")) && error.contains("status"),
            "{error}"
        );
    }
    assert!(report.completed.is_empty(), "{report:#?}");
    assert_eq!(t.status(0), Status::Pending);
}

#[tokio::test]
async fn a_tree_that_is_not_there_fails_the_sync_naming_it() {
    let t = tree();
    t.put_record(0, &t.record(0)).await;
    let missing: &Path = &t.root.join("no-such-tree");

    let error = sync(missing, &t.bucket, Utc::now()).await.unwrap_err();

    let text = error.to_string();
    assert!(text.contains(missing.to_str().unwrap()), "{text}");
}

#[tokio::test]
async fn every_file_of_a_tree_gets_its_own_recipe_outcome_from_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("repo/pending_compression");
    let inputs = dir.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let names = ["a", "b", "c", "d", "e"];
    let mut files = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = inputs.join(format!("{name}.bin"));
        let bytes: Vec<u8> = (0..10_000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> (3 + i)) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        files.push(panini::chunker::InputFile {
            path,
            name: (*name).to_owned(),
            size: bytes.len() as u64,
        });
    }
    let mut options = panini::chunker::ChunkOptions::new(&base);
    options.sync = false;
    for result in panini::chunker::chunk_files(&files, &options) {
        assert_eq!(result.unwrap().total_chunks, 1);
    }
    let bucket = LocalDir::new(dir.path().join("bucket")).unwrap();
    let store_object = |name: &str| {
        let data = std::fs::read(base.join(name).join("chunk_0000/data.bin")).unwrap();
        let sha = Sha256Digest::of(&data);
        let bucket = &bucket;
        async move {
            bucket
                .put(
                    &object_keys::chunk_object(&sha, Codec::Store),
                    data.clone().into(),
                    &ObjectMeta {
                        codec: Codec::Store,
                        original_size: data.len() as u64,
                        original_sha256: sha,
                    },
                )
                .await
                .unwrap();
        }
    };
    let states = |recipes: &[panini::sync::FileRecipe]| {
        recipes
            .iter()
            .map(|r| (r.name.clone(), r.state))
            .collect::<Vec<_>>()
    };

    // b first, alone: its recipe is there before the batch below.
    store_object("b").await;
    let first = panini::sync::publish_recipes(&base, &bucket).await.unwrap();
    assert_eq!(first[1].state, RecipeState::Published, "{first:#?}");

    store_object("a").await;
    store_object("e").await;
    std::fs::write(base.join("d/manifest.json"), "{\"chunks\": [").unwrap();
    let report = panini::sync::publish_recipes(&base, &bucket).await.unwrap();
    assert_eq!(
        states(&report),
        [
            ("a".to_owned(), RecipeState::Published),
            ("b".to_owned(), RecipeState::AlreadyPublished),
            ("c".to_owned(), RecipeState::Incomplete),
            ("d".to_owned(), RecipeState::Failed),
            ("e".to_owned(), RecipeState::Published),
        ],
        "{report:#?}"
    );
    assert_eq!(report[1].key, first[1].key);
    assert!(
        report[3]
            .reason
            .as_deref()
            .unwrap()
            .contains("manifest.json")
    );
    // The bucket holds exactly the recipes of a, b and e, each under its file's key.
    let mut listed: Vec<String> = bucket
        .list("recipes/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    listed.sort();
    let mut keys: Vec<String> = [0, 1, 4]
        .iter()
        .map(|&i| report[i].key.clone().unwrap())
        .collect();
    keys.sort();
    assert_eq!(listed, keys);

    // Files the caller names are skipped whole: not read (d's broken manifest fails
    // nothing), not reported.
    let rest =
        panini::sync::publish_recipes_except(&base, &bucket, |name| ["a", "d"].contains(&name))
            .await
            .unwrap();
    assert_eq!(
        states(&rest),
        [
            ("b".to_owned(), RecipeState::AlreadyPublished),
            ("c".to_owned(), RecipeState::Incomplete),
            ("e".to_owned(), RecipeState::AlreadyPublished),
        ],
        "{rest:#?}"
    );
}
