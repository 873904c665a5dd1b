//! The `Gcs` store against a private fake-gcs-server: create-only puts (412 is
//! deduplication), metadata, listing, prefixes, large (resumable) objects, and the
//! CRC32C check on read.

mod support;

use std::time::Duration;

use bytes::Bytes;
use chunk_model::{Codec, Sha256Digest};
use gcs_emulator::fault_proxy::{Fault, FaultProxy};
use support::{BUCKET, Emulator};
use uploader::{Gcs, ObjectMeta, ObjectStore, PutOutcome, RetryPolicy, StoreError};

async fn store(emulator: &Emulator, url: &str) -> Gcs {
    Gcs::from_url(url, &support::config_for(&emulator.endpoint()))
        .await
        .unwrap()
}

#[tokio::test]
async fn put_get_stat_list_with_create_only_semantics() {
    let emulator = support::start_emulator();
    let gcs = store(&emulator, &format!("gs://{BUCKET}")).await;
    let original = support::pseudo_random(300_000, 11);
    let bytes = Bytes::from(original.clone());
    let meta = ObjectMeta {
        codec: Codec::Store,
        original_size: original.len() as u64,
        original_sha256: Sha256Digest::of(&original),
    };
    let key = format!("chunks/{}.store", meta.original_sha256);

    assert_eq!(gcs.stat(&key).await.unwrap(), None);
    assert_eq!(
        gcs.put(&key, bytes.clone(), &meta).await.unwrap(),
        PutOutcome::Created
    );
    // The second put meets the ifGenerationMatch=0 precondition: 412, reported as a dedup.
    assert_eq!(
        gcs.put(&key, bytes.clone(), &meta).await.unwrap(),
        PutOutcome::AlreadyExists
    );

    let object = gcs.get(&key).await.unwrap();
    assert_eq!(object.bytes, bytes);
    assert_eq!(object.info.meta, Some(meta));
    assert_eq!(object.info.crc32c, Some(crc32c::crc32c(&bytes)));

    let info = gcs.stat(&key).await.unwrap().unwrap();
    assert_eq!(
        (info.size, info.crc32c, info.meta),
        (bytes.len() as u64, Some(crc32c::crc32c(&bytes)), Some(meta))
    );
    assert!(info.updated.is_some());

    // Other content under the same key is refused and the stored object is kept.
    let other = Bytes::from_static(b"something else");
    let error = gcs
        .put(&key, other.clone(), &ObjectMeta::plain(&other))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { key: k, .. } if *k == key),
        "{error}"
    );
    assert_eq!(gcs.get(&key).await.unwrap().bytes, bytes);

    assert!(
        matches!(gcs.get("chunks/missing.store").await, Err(StoreError::NotFound { key, .. }) if key == "chunks/missing.store")
    );

    for name in ["recipes/f/1.json", "recipes/f/2.json", "recipes/g/1.json"] {
        let body = Bytes::from(format!("{{\"n\":\"{name}\"}}"));
        assert_eq!(
            gcs.put(name, body.clone(), &ObjectMeta::plain(&body))
                .await
                .unwrap(),
            PutOutcome::Created
        );
    }
    let listed: Vec<_> = gcs
        .list("recipes/f/")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(listed, ["recipes/f/1.json", "recipes/f/2.json"]);
    assert_eq!(gcs.list("").await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_prefix_store_keeps_its_keys_inside_the_prefix() {
    let emulator = support::start_emulator();
    let root = store(&emulator, &format!("gs://{BUCKET}")).await;
    let inner = store(&emulator, &format!("gs://{BUCKET}/team/a/")).await;
    let bytes = Bytes::from_static(b"inside");
    inner
        .put("chunks/x.store", bytes.clone(), &ObjectMeta::plain(&bytes))
        .await
        .unwrap();
    assert_eq!(inner.get("chunks/x.store").await.unwrap().bytes, bytes);
    let inner_keys: Vec<_> = inner
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(inner_keys, ["chunks/x.store"]);
    let root_keys: Vec<_> = root
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(root_keys, ["team/a/chunks/x.store"]);
    assert_eq!(root.stat("chunks/x.store").await.unwrap(), None);
    assert!(matches!(
        Gcs::from_url("gs:///x", &support::config_for(&emulator.endpoint())).await,
        Err(StoreError::InvalidUrl { .. })
    ));
}

#[tokio::test]
async fn objects_over_the_library_default_resumable_threshold_round_trip() {
    let emulator = support::start_emulator();
    let gcs = store(&emulator, &format!("gs://{BUCKET}")).await;
    // 20 MiB: above the library's default 16 MiB resumable threshold; the store raises
    // it so that this is still one create-only multipart request.
    let bytes = Bytes::from(support::pseudo_random(20 << 20, 12));
    let meta = ObjectMeta::plain(&bytes);
    assert_eq!(
        gcs.put("big/object.store", bytes.clone(), &meta)
            .await
            .unwrap(),
        PutOutcome::Created
    );
    let outcome = gcs
        .put("big/object.store", bytes.clone(), &meta)
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::AlreadyExists);
    let object = gcs.get("big/object.store").await.unwrap();
    assert_eq!(object.bytes.len(), bytes.len());
    assert!(object.bytes == bytes);
}

#[tokio::test]
async fn damaged_downloads_fail_the_crc32c_check_and_are_fetched_again() {
    let emulator = support::start_emulator();
    let direct = store(&emulator, &format!("gs://{BUCKET}")).await;
    let bytes = Bytes::from(support::pseudo_random(64 * 1024, 13));
    direct
        .put("chunks/c.store", bytes.clone(), &ObjectMeta::plain(&bytes))
        .await
        .unwrap();

    // Two damaged answers, then clean ones: the read is retried and ends bit-perfect.
    let proxy = FaultProxy::start(emulator.addr(), vec![Fault::CorruptDownload], 2)
        .await
        .unwrap();
    let through = Gcs::from_url(
        &format!("gs://{BUCKET}"),
        &support::config_for(&proxy.endpoint()),
    )
    .await
    .unwrap();
    let object = through.get("chunks/c.store").await.unwrap();
    assert!(object.bytes == bytes);
    assert_eq!(
        proxy.injected(),
        [Fault::CorruptDownload, Fault::CorruptDownload]
    );

    // Damaged every time: the read fails, and says why.
    let proxy = FaultProxy::start(emulator.addr(), vec![Fault::CorruptDownload], 1_000)
        .await
        .unwrap();
    let mut config = support::config_for(&proxy.endpoint());
    config.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        // Long enough for a second attempt however loaded the machine (the first
        // attempt alone may take longer than half a second on two busy cores).
        deadline: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(10),
    };
    let through = Gcs::from_url(&format!("gs://{BUCKET}"), &config)
        .await
        .unwrap();
    let error = through.get("chunks/c.store").await.unwrap_err();
    let StoreError::RetriesExhausted {
        op: "get",
        last,
        attempts,
        ..
    } = &error
    else {
        panic!("unexpected error {error}");
    };
    // Every attempt downloaded once and met a damaged answer.
    assert!(*attempts >= 2, "{error}");
    assert_eq!(proxy.injected().len(), *attempts as usize, "{error}");
    let message = last.to_string().to_lowercase();
    assert!(
        matches!(**last, StoreError::ChecksumMismatch { .. })
            || message.contains("checksum")
            || message.contains("crc32c"),
        "the last error should be a checksum mismatch: {last}"
    );
}
