//! `panini::stage` and `panini::prune` on their own: staging resumes after an
//! interruption at either step and refuses bytes that are not the chunk's; prune removes
//! nothing on the word of metadata alone, keeps what open chunks still need, and
//! `--dry-run` removes nothing at all.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chunk_model::layout::{DATA_FILE, METADATA_FILE};
use chunk_model::{ChunkMetadata, Codec, Manifest, Sha256Digest, Status, json_file, object_keys};
use panini::prune::{PruneOptions, prune};
use panini::stage::{StageOptions, stage};
use uploader::{LocalDir, ObjectMeta, ObjectStore};

/// A repository with `files` chunked by the real chunker (64 KiB chunks, by size), and a
/// local bucket.
struct Setup {
    _dir: tempfile::TempDir,
    base: PathBuf,
    bucket: PathBuf,
    store: Arc<dyn ObjectStore>,
}

fn setup(files: &[(&str, Vec<u8>)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("repo/pending_compression");
    for (name, bytes) in files {
        let input = dir.path().join(format!("{name}.bin"));
        std::fs::write(&input, bytes).unwrap();
        let mut options = chunker::ChunkOptions::new(&base);
        options.name = Some((*name).into());
        options.config.strategy = chunker::Strategy::Size;
        options.config.max_chunk_size = 64 * 1024;
        chunker::chunk_file(&input, &options).unwrap();
    }
    let bucket = dir.path().join("bucket");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDir::new(&bucket).unwrap());
    Setup {
        _dir: dir,
        base,
        bucket,
        store,
    }
}

/// Every chunk directory of file `name`, in order.
fn chunk_dirs(base: &Path, name: &str) -> Vec<PathBuf> {
    let manifest: Manifest = json_file::read(&base.join(name).join("manifest.json")).unwrap();
    (0..manifest.total_chunks)
        .map(|id| {
            base.join(name).join(chunk_model::layout::chunk_dir_name(
                id,
                manifest.total_chunks,
            ))
        })
        .collect()
}

fn meta(dir: &Path) -> ChunkMetadata {
    json_file::read(&dir.join(METADATA_FILE)).unwrap()
}

fn set_meta(dir: &Path, change: impl FnOnce(&mut ChunkMetadata)) {
    let mut m = meta(dir);
    change(&mut m);
    json_file::write_atomic(&dir.join(METADATA_FILE), &m).unwrap();
}

/// What a worker leaves when it stores a chunk: the object (as `store`), and the chunk
/// `completed` with that upload.
async fn complete(store: &dyn ObjectStore, dir: &Path, bytes: &[u8]) {
    let sha = Sha256Digest::of(bytes);
    let key = object_keys::chunk_object(&sha, Codec::Store);
    store
        .put(&key, bytes.to_vec().into(), &ObjectMeta::plain(bytes))
        .await
        .unwrap();
    set_meta(dir, |m| {
        m.set_status(Status::Queued).unwrap();
        m.set_status(Status::Completed).unwrap();
        m.upload_path = Some(key);
        m.upload_hash = Some(sha);
    });
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    samples::random_bytes(len, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_moves_the_bytes_and_resumes_after_either_interruption() {
    let file = data(1, 300_000);
    let s = setup(&[("movie", file.clone())]);
    let dirs = chunk_dirs(&s.base, "movie");
    assert_eq!(dirs.len(), 5);
    let originals: Vec<Vec<u8>> = dirs
        .iter()
        .map(|d| std::fs::read(d.join(DATA_FILE)).unwrap())
        .collect();

    let report = stage(&s.base, s.store.clone(), &StageOptions::default())
        .await
        .unwrap();
    assert_eq!((report.chunks, report.uploaded), (5, 5), "{report:?}");
    assert_eq!(report.data_files_removed, 5);
    assert_eq!(report.bytes_uploaded, 300_000);
    assert!(report.errors.is_empty(), "{report:?}");
    for (dir, bytes) in dirs.iter().zip(&originals) {
        assert!(!dir.join(DATA_FILE).exists());
        let key = object_keys::staged_object(&Sha256Digest::of(bytes));
        assert_eq!(meta(dir).staged_object.as_deref(), Some(key.as_str()));
        // The staged object is the chunk's bytes, as an outside tool sees them.
        let staged = s.bucket.join(&key);
        assert_eq!(
            support::sha256sum(&staged),
            Sha256Digest::of(bytes).to_string()
        );
    }

    // Interrupted after the upload, before the metadata: the key is not recorded and the
    // data.bin is still there. Interrupted after the metadata, before the removal: both.
    std::fs::write(dirs[1].join(DATA_FILE), &originals[1]).unwrap();
    set_meta(&dirs[1], |m| m.staged_object = None);
    std::fs::write(dirs[2].join(DATA_FILE), &originals[2]).unwrap();
    let report = stage(&s.base, s.store.clone(), &StageOptions::default())
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.uploaded, 0, "{report:?}");
    assert_eq!(report.already_staged, 5, "{report:?}");
    assert_eq!(report.data_files_removed, 2, "{report:?}");
    for dir in &dirs {
        assert!(!dir.join(DATA_FILE).exists());
        assert!(meta(dir).staged_object.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_the_chunks_are_not_staged_and_stay() {
    let s = setup(&[("log", data(2, 200_000))]);
    let dirs = chunk_dirs(&s.base, "log");
    let mut bytes = std::fs::read(dirs[0].join(DATA_FILE)).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(dirs[0].join(DATA_FILE), &bytes).unwrap();

    let report = stage(&s.base, s.store.clone(), &StageOptions::default())
        .await
        .unwrap();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(
        report.errors[0].starts_with("pending_compression/log/chunk_0000: data.bin is"),
        "{report:?}"
    );
    assert!(report.errors[0].contains("SHA-256"), "{report:?}");
    assert_eq!(report.uploaded, dirs.len() - 1);
    // Kept as it was: its bytes, and no key.
    assert_eq!(std::fs::read(dirs[0].join(DATA_FILE)).unwrap(), bytes);
    assert_eq!(meta(&dirs[0]).staged_object, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_frees_only_what_the_bucket_holds_and_no_open_chunk_needs() {
    // Two files sharing their first 64 KiB: one chunk of content in both.
    let shared = data(3, 64 * 1024);
    let mut a = shared.clone();
    a.extend(data(4, 128 * 1024));
    let mut b = shared.clone();
    b.extend(data(5, 64 * 1024));
    let s = setup(&[("a", a), ("b", b)]);
    let (a_dirs, b_dirs) = (chunk_dirs(&s.base, "a"), chunk_dirs(&s.base, "b"));
    let bytes = |dir: &Path| std::fs::read(dir.join(DATA_FILE)).unwrap();
    let a_bytes: Vec<Vec<u8>> = a_dirs.iter().map(|d| bytes(d)).collect();
    let b_bytes: Vec<Vec<u8>> = b_dirs.iter().map(|d| bytes(d)).collect();
    assert_eq!(a_bytes[0], b_bytes[0]);
    stage(&s.base, s.store.clone(), &StageOptions::default())
        .await
        .unwrap();

    // File a completed: chunk 0 and 1 stored well, chunk 2's object corrupt. File b
    // still pending (its chunk 0 is a's chunk 0).
    complete(s.store.as_ref(), &a_dirs[0], &a_bytes[0]).await;
    complete(s.store.as_ref(), &a_dirs[1], &a_bytes[1]).await;
    let mut wrong = a_bytes[2].clone();
    wrong[0] ^= 1;
    let sha2 = Sha256Digest::of(&a_bytes[2]);
    s.store
        .put(
            &object_keys::chunk_object(&sha2, Codec::Store),
            wrong.clone().into(),
            &ObjectMeta {
                codec: Codec::Store,
                original_size: wrong.len() as u64,
                original_sha256: sha2,
            },
        )
        .await
        .unwrap();
    set_meta(&a_dirs[2], |m| {
        m.set_status(Status::Queued).unwrap();
        m.set_status(Status::Completed).unwrap();
        m.upload_path = Some(object_keys::chunk_object(&sha2, Codec::Store));
    });
    // An orphan staged object of content stored long ago, and one never stored.
    let orphan = data(6, 1000);
    let orphan_sha = Sha256Digest::of(&orphan);
    for (key, body) in [
        (object_keys::staged_object(&orphan_sha), &orphan),
        (
            object_keys::chunk_object(&orphan_sha, Codec::Store),
            &orphan,
        ),
    ] {
        s.store
            .put(&key, body.clone().into(), &ObjectMeta::plain(body))
            .await
            .unwrap();
    }
    let lonely = data(7, 1000);
    let lonely_key = object_keys::staged_object(&Sha256Digest::of(&lonely));
    s.store
        .put(
            &lonely_key,
            lonely.clone().into(),
            &ObjectMeta::plain(&lonely),
        )
        .await
        .unwrap();

    let staged_before = s.store.list("staging/").await.unwrap();
    let dry = prune(
        &s.base,
        s.store.clone(),
        &PruneOptions {
            dry_run: true,
            ..PruneOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.store.list("staging/").await.unwrap(), staged_before);

    let report = prune(&s.base, s.store.clone(), &PruneOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (dry.staged_objects_deleted, dry.staged_bytes_freed),
        (report.staged_objects_deleted, report.staged_bytes_freed),
        "a dry run reports what the real one does"
    );
    assert_eq!(report.completed_chunks, 3);
    // a's chunk 1 (verified, needed by nobody else) and the stored orphan go; a's chunk 0
    // is still needed by b; a's chunk 2 does not verify; the lonely one is not stored.
    assert_eq!(report.staged_objects_deleted, 2, "{report:#?}");
    assert_eq!(
        report.staged_bytes_freed,
        a_bytes[1].len() as u64 + orphan.len() as u64
    );
    assert_eq!(
        report.staged_objects_still_needed,
        b_bytes.len(),
        "{report:#?}"
    );
    let left: Vec<String> = s
        .store
        .list("staging/")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    let mut expected: Vec<String> = b_bytes
        .iter()
        .chain([&a_bytes[2], &lonely])
        .map(|b| object_keys::staged_object(&Sha256Digest::of(b)))
        .collect();
    expected.sort();
    assert_eq!(left, expected);
    assert_eq!(report.kept.len(), 2, "{report:#?}");
    assert!(
        report
            .kept
            .iter()
            .any(|k| k.contains(&sha2.to_string()) && k.contains("corrupt")),
        "{report:#?}"
    );
    assert!(
        report
            .kept
            .iter()
            .any(|k| k.starts_with(&lonely_key) && k.contains("no chunk object")),
        "{report:#?}"
    );
}
