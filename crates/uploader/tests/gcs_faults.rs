//! Uploads and reconstruction through a proxy that answers 503 and 429 and drops
//! connections mid-body: everything completes, no partial object is ever visible,
//! and the rebuilt file is bit-perfect.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chunk_model::{Layout, Recipe, Sha256Digest};
use gcs_emulator::fault_proxy::{Fault, FaultProxy};
use support::BUCKET;
use support::chunk_tree;
use uploader::{ObjectStore, ReconstructOptions, StoreConfig, UploadOptions, Which};

/// Re-arms the proxy a few times while `work` runs, so faults keep coming mid-run.
async fn with_faults<T>(proxy: &Arc<FaultProxy>, work: impl std::future::Future<Output = T>) -> T {
    let arming = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                proxy.arm(3);
            }
        })
    };
    let result = work.await;
    arming.abort();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_reconstruction_survive_errors_and_dropped_connections() {
    let emulator = support::start_emulator();
    let schedule = vec![
        Fault::Status503,
        Fault::CutRequest,
        Fault::Status429,
        Fault::CutResponse,
    ];
    let proxy = Arc::new(
        FaultProxy::start(emulator.addr(), schedule, 8)
            .await
            .unwrap(),
    );
    let config = StoreConfig {
        gcs: support::config_for(&proxy.endpoint()),
        ..Default::default()
    };
    let through_proxy = uploader::open(&format!("gs://{BUCKET}"), &config)
        .await
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let mut data = Vec::new();
    for i in 0..20 {
        data.extend_from_slice(&support::compressible(96 * 1024, i));
        data.extend_from_slice(&support::pseudo_random(32 * 1024, 100 + i));
    }
    let tree = work.path().join("tree");
    chunk_tree::write(&tree, "clip", &data, 128 * 1024, true);

    let report = with_faults(
        &proxy,
        uploader::upload_chunk_dir(
            &through_proxy,
            &Layout::new(&tree),
            "clip",
            &chunk_tree::zstd(),
            &UploadOptions::default(),
            &|_| {},
        ),
    )
    .await
    .unwrap();
    assert_eq!(report.chunks_created + report.chunks_existing, 20);

    let injected = proxy.injected();
    let kinds: BTreeSet<_> = injected.iter().map(|f| format!("{f:?}")).collect();
    assert!(injected.len() >= 8, "faults injected: {injected:?}");
    assert_eq!(kinds.len(), 4, "every kind of fault was met: {injected:?}");

    // Straight to the emulator: exactly the recipe's chunks and the recipe are there,
    // each whole (size and CRC32C match, and it decodes to its chunk).
    let direct = uploader::open(
        &format!("gs://{BUCKET}"),
        &StoreConfig {
            gcs: support::config_for(&emulator.endpoint()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let recipe: Recipe =
        serde_json::from_slice(&direct.get(&report.recipe_key).await.unwrap().bytes).unwrap();
    let expected: BTreeSet<_> = recipe.chunks.iter().map(|c| c.key.clone()).collect();
    let stored: BTreeSet<_> = direct
        .list("chunks/")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(stored, expected, "no partial or stray objects");
    assert_eq!(direct.list("recipes/").await.unwrap().len(), 1);
    for chunk in &recipe.chunks {
        let object = direct.get(&chunk.key).await.unwrap();
        let decoded = gpu_compress::decompress(chunk.codec, &object.bytes).unwrap();
        assert_eq!(Sha256Digest::of(&decoded), chunk.sha256, "{}", chunk.key);
    }

    // Rebuild through the proxy, with faults again: once finding the newest recipe
    // (listing), once by file hash (straight to the recipe and chunk downloads).
    for which in [Which::Newest, Which::File(Sha256Digest::of(&data))] {
        proxy.arm(4);
        let before = proxy.injected().len();
        let output = work.path().join("clip.out");
        with_faults(
            &proxy,
            uploader::reconstruct(
                &through_proxy,
                "clip",
                which,
                &output,
                &ReconstructOptions::default(),
                &|_| {},
            ),
        )
        .await
        .unwrap();
        assert!(
            proxy.injected().len() > before,
            "reconstruction met faults too"
        );
        assert!(std::fs::read(&output).unwrap() == data, "bit-perfect");
        std::fs::remove_file(&output).unwrap();
    }
}
