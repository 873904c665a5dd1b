//! `LocalDir`: create-only puts, deduplication, concurrent writers, listing, lookups
//! without the sidecar, and the CRC32C check on read.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use chunk_model::{Codec, Sha256Digest};
use uploader::local::{LOCK_FILE, META_DIR};
use uploader::{LocalDir, ObjectMeta, ObjectStore, PutOutcome, StoreError};

fn meta_of(original: &[u8], codec: Codec) -> ObjectMeta {
    ObjectMeta {
        codec,
        original_size: original.len() as u64,
        original_sha256: Sha256Digest::of(original),
    }
}

#[tokio::test]
async fn put_is_create_only_and_dedups_identical_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDir::new(dir.path()).unwrap();
    let bytes = Bytes::from(support::pseudo_random(10_000, 1));
    let meta = ObjectMeta::plain(&bytes);

    assert_eq!(
        store
            .put("chunks/a.store", bytes.clone(), &meta)
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store
            .put("chunks/a.store", bytes.clone(), &meta)
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );

    // The object is a plain file holding exactly the bytes; the metadata is a sidecar.
    assert_eq!(
        std::fs::read(dir.path().join("chunks/a.store")).unwrap(),
        bytes
    );
    assert!(
        dir.path()
            .join(META_DIR)
            .join("chunks/a.store.json")
            .is_file()
    );

    let object = store.get("chunks/a.store").await.unwrap();
    assert_eq!(object.bytes, bytes);
    assert_eq!(object.info.meta, Some(meta));
    assert_eq!(object.info.crc32c, Some(crc32c::crc32c(&bytes)));
    let info = store.stat("chunks/a.store").await.unwrap().unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(store.stat("chunks/missing.store").await.unwrap(), None);
    assert!(matches!(
        store.get("chunks/missing.store").await,
        Err(StoreError::NotFound { key, .. }) if key == "chunks/missing.store"
    ));
}

#[tokio::test]
async fn a_different_encoding_of_the_same_original_is_a_dedup_but_other_content_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDir::new(dir.path()).unwrap();
    let original = support::compressible(50_000, 2);
    let meta = meta_of(&original, Codec::Zstd);
    let first = Bytes::from(zstd_frame(&original, 1));
    let second = Bytes::from(zstd_frame(&original, 9));
    assert_ne!(first, second);
    assert_eq!(
        store
            .put("chunks/x.zstd", first.clone(), &meta)
            .await
            .unwrap(),
        PutOutcome::Created
    );
    // Another encoder produced other bytes for the same original: the stored object
    // decodes to the same thing, so this is deduplication, and the first one stays.
    assert_eq!(
        store.put("chunks/x.zstd", second, &meta).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(store.get("chunks/x.zstd").await.unwrap().bytes, first);

    let other = support::compressible(50_000, 3);
    let error = store
        .put(
            "chunks/x.zstd",
            Bytes::from(zstd_frame(&other, 1)),
            &meta_of(&other, Codec::Zstd),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { key, .. } if key == "chunks/x.zstd"),
        "{error}"
    );
    assert_eq!(store.get("chunks/x.zstd").await.unwrap().bytes, first);
}

fn zstd_frame(data: &[u8], level: i32) -> Vec<u8> {
    use gpu_compress::{CodecChoice, Compressor, CompressorConfig, EngineChoice};
    let compressor = Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(Codec::Zstd),
        level: Some(level),
        engine: EngineChoice::Cpu,
        verify: true,
    })
    .unwrap();
    compressor.compress(data).unwrap().bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_of_one_key_store_it_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let original = support::compressible(200_000, 4);
    let meta = meta_of(&original, Codec::Zstd);
    // Sixteen writers race, each with its own encoding and its own store handle (as
    // separate processes would have); exactly one wins.
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let store = LocalDir::new(dir.path()).unwrap();
        let bytes = Bytes::from(zstd_frame(&original, 1 + writer % 5));
        tasks.push(tokio::spawn(async move {
            let outcome = store
                .put("chunks/race.zstd", bytes.clone(), &meta)
                .await
                .unwrap();
            (outcome, bytes)
        }));
    }
    let mut created = Vec::new();
    for task in tasks {
        let (outcome, bytes) = task.await.unwrap();
        if outcome == PutOutcome::Created {
            created.push(bytes);
        }
    }
    assert_eq!(
        created.len(),
        1,
        "exactly one writer must create the object"
    );
    let store = LocalDir::new(dir.path()).unwrap();
    let object = store.get("chunks/race.zstd").await.unwrap();
    // The winner's bytes, with the winner's metadata (the CRC check on read passed).
    assert_eq!(object.bytes, created[0]);
    assert_eq!(
        gpu_compress::decompress(Codec::Zstd, &object.bytes).unwrap(),
        original
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("chunks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["race.zstd"]);
}

#[tokio::test]
async fn list_returns_keys_under_a_prefix_in_order_and_hides_store_files() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalDir::from_url(&format!("file://{}", dir.path().display())).unwrap());
    for key in [
        "recipes/b/2.json",
        "recipes/a/1.json",
        "chunks/c.lz4",
        "recipes/a/0.json",
        "recipes/ab/9.json",
    ] {
        let bytes = Bytes::from(key.as_bytes().to_vec());
        store
            .put(key, bytes.clone(), &ObjectMeta::plain(&bytes))
            .await
            .unwrap();
    }
    // A stray temporary file from a crashed writer is not an object.
    std::fs::write(dir.path().join("recipes/a/.panini-tmp-xyz"), b"partial").unwrap();
    assert!(dir.path().join(LOCK_FILE).is_file());

    let keys =
        |infos: Vec<uploader::ObjectInfo>| infos.into_iter().map(|i| i.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list("recipes/a/").await.unwrap()),
        ["recipes/a/0.json", "recipes/a/1.json"]
    );
    assert_eq!(
        keys(store.list("recipes/a").await.unwrap()),
        ["recipes/a/0.json", "recipes/a/1.json", "recipes/ab/9.json"]
    );
    assert_eq!(keys(store.list("").await.unwrap()).len(), 5);
    assert!(store.list("nothing/here/").await.unwrap().is_empty());
    let info = &store.list("chunks/").await.unwrap()[0];
    assert_eq!(info.meta, Some(ObjectMeta::plain(b"chunks/c.lz4")));
    assert!(info.updated.is_some());
}

/// `exists_many` looks at the object's file alone: a damaged sidecar fails `stat` but
/// not the question whether the object is there, and a directory at a key is no object.
#[tokio::test]
async fn exists_many_answers_from_the_object_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDir::new(dir.path()).unwrap();
    let bytes = Bytes::from(support::pseudo_random(2048, 6));
    store
        .put("chunks/e.store", bytes.clone(), &ObjectMeta::plain(&bytes))
        .await
        .unwrap();
    std::fs::write(dir.path().join(META_DIR).join("chunks/e.store.json"), b"{").unwrap();
    std::fs::create_dir_all(dir.path().join("chunks/a-directory")).unwrap();

    let error = store.stat("chunks/e.store").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::InvalidMetadata { key, .. } if key == "chunks/e.store"),
        "{error}"
    );
    let keys = [
        "chunks/e.store",
        "chunks/a-directory",
        "chunks/missing.store",
    ]
    .map(String::from);
    let exists: Vec<bool> = store
        .exists_many(&keys)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(exists, [true, false, false]);
}

#[tokio::test]
async fn a_damaged_file_fails_the_crc32c_check_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDir::new(dir.path()).unwrap();
    let bytes = Bytes::from(support::pseudo_random(4096, 5));
    store
        .put("chunks/d.store", bytes.clone(), &ObjectMeta::plain(&bytes))
        .await
        .unwrap();
    let mut damaged = bytes.to_vec();
    damaged[1000] ^= 1;
    std::fs::write(dir.path().join("chunks/d.store"), &damaged).unwrap();
    let error = store.get("chunks/d.store").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::ChecksumMismatch { key, expected, actual }
            if key == "chunks/d.store" && *expected == crc32c::crc32c(&bytes) && *actual == crc32c::crc32c(&damaged)),
        "{error}"
    );
    std::fs::write(dir.path().join("chunks/d.store"), &bytes[..100]).unwrap();
    assert!(matches!(
        store.get("chunks/d.store").await,
        Err(StoreError::SizeMismatch {
            expected: 4096,
            actual: 100,
            ..
        })
    ));
}

#[tokio::test]
async fn bad_keys_and_urls_are_rejected_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDir::new(dir.path()).unwrap();
    for key in ["../escape", "/abs", ".panini-meta/x", "a//b", ""] {
        let error = store
            .put(key, Bytes::new(), &ObjectMeta::plain(b""))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::InvalidKey { key: k, .. } if k == key),
            "{key:?}: {error}"
        );
    }
    assert!(matches!(
        LocalDir::from_url("file://relative/path"),
        Err(StoreError::InvalidUrl { .. })
    ));
    assert!(matches!(
        uploader::open("s3://bucket", &uploader::StoreConfig::default()).await,
        Err(StoreError::InvalidUrl { .. })
    ));
}
