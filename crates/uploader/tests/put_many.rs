//! `ObjectStore::put_many`: the local directory's batched, flush-sharing override
//! (mixed new, identical, conflicting, repeated and bad items; failures that leave
//! nothing visible; no temporary files; racing writers) and the default one-put-per-item
//! implementation against a private GCS emulator, bare and behind `Limited`; and
//! `stat_many`/`get_many`, batched (local) and key by key (GCS).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chunk_model::{Codec, Sha256Digest};
use support::BUCKET;
use uploader::local::META_DIR;
use uploader::{
    Gcs, Limited, Limits, LocalDir, ObjectMeta, ObjectStore, PutItem, PutOutcome, StoreError,
};

/// `count` distinct small objects under `chunks/`, as a worker's batch would hold.
fn new_items(count: usize, seed: u64) -> Vec<PutItem> {
    (0..count)
        .map(|i| {
            let bytes = Bytes::from(support::pseudo_random(1000 + i, seed * 1000 + i as u64));
            let meta = ObjectMeta::plain(&bytes);
            (
                format!("chunks/{}.store", meta.original_sha256),
                bytes,
                meta,
            )
        })
        .collect()
}

/// Every file under `root` whose name marks it a temporary file.
fn temporaries(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".panini-tmp-")
            {
                found.push(path);
            }
        }
    }
    found
}

fn keys(items: &[PutItem]) -> Vec<String> {
    items.iter().map(|(key, _, _)| key.clone()).collect()
}

#[tokio::test]
async fn local_batch_answers_each_item_like_a_put_and_leaves_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    // Through `open`: `Limited` must hand the batch down whole.
    let store = uploader::open(
        dir.path().to_str().unwrap(),
        &uploader::StoreConfig::default(),
    )
    .await
    .unwrap();
    assert!(store.batches());

    let existing = Bytes::from(support::pseudo_random(5000, 1));
    let existing_meta = ObjectMeta::plain(&existing);
    store
        .put("chunks/existing.store", existing.clone(), &existing_meta)
        .await
        .unwrap();
    let other = Bytes::from_static(b"other content");

    // Forty new objects (enough for the batch to use several threads) and, between
    // them, every other kind of item.
    let fresh = new_items(40, 2);
    let repeated = Bytes::from_static(b"stored twice in one batch");
    let mut batch: Vec<PutItem> = fresh[..20].to_vec();
    batch.push((
        "chunks/existing.store".into(),
        existing.clone(),
        existing_meta,
    ));
    batch.push((
        "chunks/existing.store".into(),
        other.clone(),
        ObjectMeta::plain(&other),
    ));
    batch.push(("../escape".into(), other.clone(), ObjectMeta::plain(&other)));
    batch.push((
        "status/twice.json".into(),
        repeated.clone(),
        ObjectMeta::plain(&repeated),
    ));
    batch.extend_from_slice(&fresh[20..]);
    batch.push((
        "status/twice.json".into(),
        repeated.clone(),
        ObjectMeta::plain(&repeated),
    ));
    batch.push((
        "status/twice.json".into(),
        other.clone(),
        ObjectMeta::plain(&other),
    ));

    let results = store.put_many(batch.clone()).await;
    assert_eq!(results.len(), batch.len());
    for (i, result) in results[..20].iter().chain(&results[24..44]).enumerate() {
        assert_eq!(
            *result.as_ref().unwrap(),
            PutOutcome::Created,
            "fresh item {i}"
        );
    }
    assert_eq!(*results[20].as_ref().unwrap(), PutOutcome::AlreadyExists);
    assert!(
        matches!(&results[21], Err(StoreError::Conflict { key, .. }) if key == "chunks/existing.store"),
        "{:?}",
        results[21]
    );
    assert!(
        matches!(&results[22], Err(StoreError::InvalidKey { key, .. }) if key == "../escape"),
        "{:?}",
        results[22]
    );
    // A key given twice: the first stores it, the second meets it.
    assert_eq!(*results[23].as_ref().unwrap(), PutOutcome::Created);
    assert_eq!(*results[44].as_ref().unwrap(), PutOutcome::AlreadyExists);
    assert!(
        matches!(&results[45], Err(StoreError::Conflict { key, .. }) if key == "status/twice.json"),
        "{:?}",
        results[45]
    );

    // Every new object is there with its metadata; the conflicting put changed nothing.
    for (key, bytes, meta) in &fresh {
        let object = store.get(key).await.unwrap();
        assert_eq!(object.bytes, *bytes, "{key}");
        assert_eq!(object.info.meta, Some(*meta), "{key}");
    }
    let kept = store.get("chunks/existing.store").await.unwrap();
    assert_eq!(
        (kept.bytes, kept.info.meta),
        (existing, Some(existing_meta))
    );
    assert_eq!(
        store.get("status/twice.json").await.unwrap().bytes,
        repeated
    );

    let mut expected = keys(&fresh);
    expected.push("chunks/existing.store".into());
    expected.sort();
    let listed: Vec<String> = store
        .list("chunks/")
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.key)
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());

    // The same batch again stores nothing new and answers every item the same way
    // (the repeated key's first put now meets the stored object too).
    let again = store.put_many(batch).await;
    for (i, result) in again.iter().enumerate() {
        match i {
            21 | 45 => assert!(matches!(result, Err(StoreError::Conflict { .. }))),
            22 => assert!(matches!(result, Err(StoreError::InvalidKey { .. }))),
            _ => assert_eq!(*result.as_ref().unwrap(), PutOutcome::AlreadyExists, "{i}"),
        }
    }
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_failed_item_leaves_nothing_visible_and_its_neighbours_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDir::new(dir.path()).unwrap();
    // A plain file where an item's sidecar directory must go: the object's directory
    // can be made, but not the sidecar's, so the item fails after it was checked.
    std::fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
    std::fs::write(
        dir.path().join(META_DIR).join("blocked"),
        b"not a directory",
    )
    .unwrap();
    let blocked = Bytes::from_static(b"cannot be stored");
    let mut batch = new_items(30, 3);
    batch.insert(
        7,
        (
            "blocked/x.store".into(),
            blocked.clone(),
            ObjectMeta::plain(&blocked),
        ),
    );

    let results = store.put_many(batch.clone()).await;
    for (i, result) in results.iter().enumerate() {
        if i == 7 {
            assert!(
                matches!(result, Err(StoreError::Io { path, .. }) if path.ends_with(".panini-meta/blocked")),
                "{result:?}"
            );
        } else {
            assert_eq!(*result.as_ref().unwrap(), PutOutcome::Created, "{i}");
        }
    }
    // Neither the object nor its sidecar exists, and a stat or get says so.
    assert_eq!(store.stat("blocked/x.store").await.unwrap(), None);
    assert!(matches!(
        store.get("blocked/x.store").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(!dir.path().join("blocked/x.store").exists());
    assert_eq!(store.list("").await.unwrap().len(), 30);
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_batches_and_puts_store_each_key_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let items = new_items(48, 4);
    // Three writers with their own handles (as separate processes would have): two
    // batches of overlapping halves in different orders, and single puts of every item.
    let mut reversed = items.clone();
    reversed.reverse();
    let batches = [items[..32].to_vec(), reversed[..32].to_vec()];
    let mut tasks = Vec::new();
    for batch in batches {
        let store = LocalDir::new(dir.path()).unwrap();
        tasks.push(tokio::spawn(async move {
            let keys = keys(&batch);
            let results = store.put_many(batch).await;
            keys.into_iter().zip(results).collect::<Vec<_>>()
        }));
    }
    let single = {
        let store = LocalDir::new(dir.path()).unwrap();
        let items = items.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for (key, bytes, meta) in items {
                let result = store.put(&key, bytes, &meta).await;
                out.push((key, result));
            }
            out
        })
    };
    tasks.push(single);

    let mut created: std::collections::HashMap<String, usize> = Default::default();
    for task in tasks {
        for (key, result) in task.await.unwrap() {
            if result.unwrap() == PutOutcome::Created {
                *created.entry(key).or_default() += 1;
            }
        }
    }
    let store = LocalDir::new(dir.path()).unwrap();
    for (key, bytes, _) in &items {
        assert_eq!(created.get(key), Some(&1), "{key} created exactly once");
        assert_eq!(store.get(key).await.unwrap().bytes, *bytes);
    }
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn gcs_batch_goes_through_create_only_puts() {
    let emulator = support::start_emulator();
    let gcs = Gcs::from_url(
        &format!("gs://{BUCKET}/batch"),
        &support::config_for(&emulator.endpoint()),
    )
    .await
    .unwrap();
    assert!(!gcs.batches());
    let original = support::compressible(20_000, 5);
    let meta = ObjectMeta {
        codec: Codec::Store,
        original_size: original.len() as u64,
        original_sha256: Sha256Digest::of(&original),
    };
    let existing = Bytes::from(original);
    gcs.put("chunks/existing.store", existing.clone(), &meta)
        .await
        .unwrap();
    let other = Bytes::from_static(b"other content");

    let fresh = new_items(12, 6);
    let mut batch = fresh.clone();
    batch.push(("chunks/existing.store".into(), existing.clone(), meta));
    batch.push((
        "chunks/existing.store".into(),
        other.clone(),
        ObjectMeta::plain(&other),
    ));
    batch.push(("a//b".into(), other.clone(), ObjectMeta::plain(&other)));

    // Behind `Limited` with fewer slots than items, as `uploader::open` serves it.
    let limited = Arc::new(Limited::new(
        gcs.clone(),
        Limits {
            max_in_flight: 3,
            bytes_per_second: None,
        },
    ));
    let results = limited.put_many(batch).await;
    assert_eq!(results.len(), 15);
    for result in &results[..12] {
        assert_eq!(*result.as_ref().unwrap(), PutOutcome::Created);
    }
    assert_eq!(*results[12].as_ref().unwrap(), PutOutcome::AlreadyExists);
    assert!(
        matches!(&results[13], Err(StoreError::Conflict { key, .. }) if key == "chunks/existing.store"),
        "{:?}",
        results[13]
    );
    assert!(
        matches!(&results[14], Err(StoreError::InvalidKey { .. })),
        "{:?}",
        results[14]
    );
    for (key, bytes, item_meta) in &fresh {
        let object = gcs.get(key).await.unwrap();
        assert_eq!(
            (&object.bytes, object.info.meta),
            (bytes, Some(*item_meta)),
            "{key}"
        );
    }
    assert_eq!(
        gcs.get("chunks/existing.store").await.unwrap().bytes,
        existing
    );

    // The bare store's default implementation: everything is there already.
    let again = gcs.put_many(fresh).await;
    assert!(
        again
            .iter()
            .all(|r| matches!(r, Ok(PutOutcome::AlreadyExists)))
    );
}

/// `stat_many`, `exists_many` and `get_many` answer each key as `stat` and `get` alone
/// would, in order: found, missing, and a key that is not a clean path, whether the
/// store batches them (a local directory, through `Limited`) or asks key by key (GCS).
async fn many_lookups_answer_like_single_ones(store: &dyn ObjectStore) {
    let items = new_items(5, 9);
    store.put_many(items.clone()).await;
    let mut keys = keys(&items);
    keys.insert(2, "chunks/missing.store".into());
    keys.push("../outside".into());

    let stats = store.stat_many(&keys).await;
    let exists = store.exists_many(&keys).await;
    let gets = store.get_many(&keys).await;
    assert_eq!(
        (stats.len(), exists.len(), gets.len()),
        (keys.len(), keys.len(), keys.len())
    );
    for (((key, stat), exists), get) in keys.iter().zip(&stats).zip(&exists).zip(&gets) {
        match (store.stat(key).await, stat) {
            (Ok(one), Ok(many)) => assert_eq!(&one, many, "{key}"),
            (Err(_), Err(_)) => {}
            (one, many) => panic!("{key}: stat {one:?}, stat_many {many:?}"),
        }
        match (stat, exists) {
            (Ok(stat), Ok(exists)) => assert_eq!(stat.is_some(), *exists, "{key}"),
            (Err(_), Err(_)) => {}
            (stat, exists) => panic!("{key}: stat_many {stat:?}, exists_many {exists:?}"),
        }
        match items.iter().find(|(k, _, _)| k == key) {
            Some((_, bytes, _)) => assert_eq!(&get.as_ref().unwrap().bytes, bytes, "{key}"),
            None => assert!(get.is_err(), "{key}: {get:?}"),
        }
    }
    assert!(stats[2].as_ref().unwrap().is_none());
    assert!(stats.last().unwrap().is_err());
    assert_eq!(
        exists.iter().filter(|e| matches!(e, Ok(true))).count(),
        items.len()
    );
}

#[tokio::test]
async fn local_stat_many_and_get_many_answer_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = uploader::open(
        dir.path().to_str().unwrap(),
        &uploader::StoreConfig::default(),
    )
    .await
    .unwrap();
    many_lookups_answer_like_single_ones(store.as_ref()).await;
}

#[tokio::test]
async fn gcs_stat_many_and_get_many_answer_each_key() {
    let emulator = support::start_emulator();
    let gcs = Gcs::from_url(
        &format!("gs://{BUCKET}/lookups"),
        &support::config_for(&emulator.endpoint()),
    )
    .await
    .unwrap();
    many_lookups_answer_like_single_ones(&gcs).await;
}
