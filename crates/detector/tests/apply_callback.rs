//! Applying `chunk_compressed` events: the changes, idempotence, and refusals.

mod common;

use std::fs;
use std::path::Path;

use chunk_model::Status;
use common::{Tree, now, python_metadata, with};
use detector::{CallbackError, Change, DetectConfig, apply_callback, scan};
use serde_json::{Value, json};

const HASH: &str = "aa00000000000000000000000000000000000000000000000000000000000001";

fn payload(chunk_path: &str) -> chunk_model::ChunkCompressed {
    serde_json::from_value(json!({
        "chunk_path": chunk_path,
        "status": "completed",
        "upload_path": "gs://panini-compressed-chunks/movie/chunk_0003.zst",
        "upload_hash": HASH,
        "stats": {"ratio": 2.5, "gpu_ms": 12},
        "worker_id": "colab-1"
    }))
    .unwrap()
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// A queued chunk in Python-chunker format plus tracking fields and one field nobody knows.
fn queued_chunk(t: &Tree) -> std::path::PathBuf {
    let meta = with(
        python_metadata(3, 10, "ISOBMFF_MDAT_MEDIA"),
        json!({
            "status": "queued",
            "dispatched_at": "2026-01-01T11:00:00Z",
            "lease_expires_at": "2026-01-01T11:30:00Z",
            "worker_id": null,
            "compressed_at": null,
            "compression_status": null,
            "x_custom": {"kept": true}
        }),
    );
    t.chunk("movie", 3, &meta).join("metadata.json")
}

#[test]
fn completed_event_sets_exactly_the_upload_fields_and_keeps_the_rest() {
    let t = Tree::new();
    let path = queued_chunk(&t);
    let before = read(&path);

    let outcome = apply_callback(
        &t.base,
        &payload("pending_compression/movie/chunk_0003"),
        now(),
    )
    .unwrap();
    assert_eq!(
        outcome.change,
        Change::Applied {
            from: Status::Queued,
            to: Status::Completed
        }
    );
    assert_eq!(outcome.metadata_path, fs::canonicalize(&path).unwrap());

    let after = read(&path);
    let mut expected = before.clone();
    let obj = expected.as_object_mut().unwrap();
    obj.insert("status".into(), json!("completed"));
    obj.insert("compressed_at".into(), json!("2026-01-01T12:00:00.000000Z"));
    obj.insert("worker_id".into(), json!("colab-1"));
    obj.insert(
        "upload_path".into(),
        json!("gs://panini-compressed-chunks/movie/chunk_0003.zst"),
    );
    obj.insert("upload_hash".into(), json!(HASH));
    obj.insert(
        "compression_stats".into(),
        json!({"ratio": 2.5, "gpu_ms": 12}),
    );
    obj.remove("lease_expires_at");
    assert_eq!(after, expected);
    // Python's zone-less timestamp, the explicit nulls, `dependencies` and the unknown
    // field are exactly as they were.
    assert_eq!(after["created_at"], "2025-11-13T14:02:11.123456");
    assert_eq!(after["grammar_id"], Value::Null);
    assert_eq!(after["dependencies"], json!([]));
    assert_eq!(after["x_custom"], json!({"kept": true}));
    // Key order survives: the original keys come first, in their original order.
    let keys: Vec<&String> = after.as_object().unwrap().keys().collect();
    let original: Vec<&String> = before
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "lease_expires_at")
        .collect();
    assert_eq!(keys[..original.len()], original[..]);

    // The detector now counts it as completed.
    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert_eq!(report.skipped.completed, 1);
    assert!(report.selected.is_empty());
}

#[test]
fn applying_the_same_event_twice_is_harmless() {
    let t = Tree::new();
    let path = queued_chunk(&t);
    let event = payload("pending_compression/movie/chunk_0003");
    apply_callback(&t.base, &event, now()).unwrap();
    let bytes = fs::read(&path).unwrap();
    let later = now() + chrono::TimeDelta::hours(1);
    let second = apply_callback(&t.base, &event, later).unwrap();
    assert_eq!(
        second.change,
        Change::AlreadyApplied {
            status: Status::Completed
        }
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was rewritten");
}

#[test]
fn a_different_upload_for_a_completed_chunk_is_a_conflict() {
    let t = Tree::new();
    let path = queued_chunk(&t);
    apply_callback(
        &t.base,
        &payload("pending_compression/movie/chunk_0003"),
        now(),
    )
    .unwrap();
    let bytes = fs::read(&path).unwrap();
    let mut other = payload("pending_compression/movie/chunk_0003");
    other.upload_hash = Some(format!("{:064x}", 7).parse().unwrap());
    let err = apply_callback(&t.base, &other, now()).unwrap_err();
    assert!(matches!(err, CallbackError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains(HASH), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn failed_event_records_the_error() {
    let t = Tree::new();
    let meta = with(
        python_metadata(0, 10, "FIXED_SIZE"),
        json!({"status": "processing", "attempts": 1, "lease_expires_at": "2026-01-01T13:00:00Z"}),
    );
    let path = t.chunk("f", 0, &meta).join("metadata.json");
    let event: chunk_model::ChunkCompressed = serde_json::from_value(json!({
        "chunk_path": "pending_compression/f/chunk_0000",
        "status": "failed",
        "error": "OpenCL device lost",
        "worker_id": "colab-2"
    }))
    .unwrap();
    let outcome = apply_callback(&t.base, &event, now()).unwrap();
    assert_eq!(
        outcome.change,
        Change::Applied {
            from: Status::Processing,
            to: Status::Failed
        }
    );
    let after = read(&path);
    assert_eq!(after["status"], "failed");
    assert_eq!(after["last_error"], "OpenCL device lost");
    assert_eq!(after["worker_id"], "colab-2");
    assert_eq!(
        after["attempts"], 1,
        "attempts are the dispatcher's to count"
    );
    assert!(after.get("lease_expires_at").is_none());
    assert!(after.get("compressed_at").is_none());

    // Reported again: no-op. And the detector retries it (1 attempt of 3).
    let bytes = fs::read(&path).unwrap();
    let again = apply_callback(&t.base, &event, now()).unwrap();
    assert_eq!(
        again.change,
        Change::AlreadyApplied {
            status: Status::Failed
        }
    );
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(
        scan(&DetectConfig::new(&t.base), now())
            .unwrap()
            .selected
            .len(),
        1
    );
}

#[test]
fn illegal_transitions_are_refused_and_nothing_is_written() {
    let t = Tree::new();
    let path = t
        .chunk("f", 0, &python_metadata(0, 10, "FIXED_SIZE"))
        .join("metadata.json");
    let bytes = fs::read(&path).unwrap();
    let err =
        apply_callback(&t.base, &payload("pending_compression/f/chunk_0000"), now()).unwrap_err();
    assert!(matches!(err, CallbackError::Transition { .. }), "{err}");
    assert!(err.to_string().contains("pending → completed"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes);

    let mut queued = payload("pending_compression/f/chunk_0000");
    queued.status = Status::Queued;
    let err = apply_callback(&t.base, &queued, now()).unwrap_err();
    assert!(matches!(
        err,
        CallbackError::UnsupportedStatus(Status::Queued)
    ));

    let mut no_hash = payload("pending_compression/f/chunk_0000");
    no_hash.upload_hash = None;
    let err = apply_callback(&t.base, &no_hash, now()).unwrap_err();
    assert!(err.to_string().contains("upload_hash"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn paths_outside_the_base_are_refused() {
    let t = Tree::new();
    queued_chunk(&t);
    // A metadata.json outside the base that an escape would overwrite.
    let victim = t.root().join("victim");
    fs::create_dir(&victim).unwrap();
    let victim_meta = victim.join("metadata.json");
    let victim_text = with(python_metadata(0, 1, "X"), json!({"status": "queued"})).to_string();
    fs::write(&victim_meta, &victim_text).unwrap();

    for bad in [
        "pending_compression/../victim",
        "../victim",
        "pending_compression/movie/../../victim",
        "/etc",
        "",
        "pending_compression",
        "victim",
    ] {
        let err = apply_callback(&t.base, &payload(bad), now()).unwrap_err();
        assert!(
            matches!(err, CallbackError::OutsideBase { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("outside"), "{err}");
    }
    let absolute = victim.to_str().unwrap();
    assert!(matches!(
        apply_callback(&t.base, &payload(absolute), now()).unwrap_err(),
        CallbackError::OutsideBase { .. }
    ));

    assert!(matches!(
        apply_callback(
            &t.base,
            &payload("pending_compression/movie/chunk_0099"),
            now()
        )
        .unwrap_err(),
        CallbackError::ChunkNotFound { .. }
    ));
    assert_eq!(fs::read_to_string(&victim_meta).unwrap(), victim_text);
}

#[cfg(unix)]
#[test]
fn symbolic_links_out_of_the_base_are_refused() {
    use std::os::unix::fs::symlink;
    let t = Tree::new();
    let victim = t.root().join("victim");
    fs::create_dir(&victim).unwrap();
    let victim_text = with(python_metadata(0, 1, "X"), json!({"status": "queued"})).to_string();
    fs::write(victim.join("metadata.json"), &victim_text).unwrap();

    // The chunk directory itself is a link out.
    fs::create_dir(t.base.join("movie")).unwrap();
    symlink(&victim, t.base.join("movie/chunk_0000")).unwrap();
    let err = apply_callback(
        &t.base,
        &payload("pending_compression/movie/chunk_0000"),
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, CallbackError::OutsideBase { .. }), "{err}");

    // A file directory that links out.
    symlink(t.root(), t.base.join("up")).unwrap();
    let err =
        apply_callback(&t.base, &payload("pending_compression/up/victim"), now()).unwrap_err();
    assert!(matches!(err, CallbackError::OutsideBase { .. }), "{err}");

    // The metadata file itself is a link out.
    let dir = t.chunk_dir("movie", 1);
    fs::create_dir_all(&dir).unwrap();
    symlink(victim.join("metadata.json"), dir.join("metadata.json")).unwrap();
    let err = apply_callback(
        &t.base,
        &payload("pending_compression/movie/chunk_0001"),
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, CallbackError::OutsideBase { .. }), "{err}");

    assert_eq!(
        fs::read_to_string(victim.join("metadata.json")).unwrap(),
        victim_text
    );

    // A link that stays inside the base is fine.
    queued_chunk(&t);
    symlink(t.base.join("movie"), t.base.join("alias")).unwrap();
    let ok = apply_callback(
        &t.base,
        &payload("pending_compression/alias/chunk_0003"),
        now(),
    )
    .unwrap();
    assert!(matches!(ok.change, Change::Applied { .. }));
}

#[cfg(unix)]
#[test]
fn one_resolver_serves_many_chunks_and_agrees_with_resolve_metadata() {
    use detector::{ChunkResolver, resolve_metadata};
    use std::os::unix::fs::symlink;
    let t = Tree::new();
    for id in 0..3 {
        t.chunk("movie", id, &python_metadata(id, 1, "X"));
    }
    let outside = t.root().join("elsewhere");
    fs::create_dir_all(outside.join("chunk_0000")).unwrap();
    fs::write(outside.join("chunk_0000/metadata.json"), "{}").unwrap();
    symlink(&outside, t.base.join("linked")).unwrap();
    symlink(t.base.join("movie"), t.base.join("alias")).unwrap();
    // The base reached through a link resolves the same chunks.
    let linked_base = t.root().join("via_link");
    symlink(&t.base, &linked_base).unwrap();

    for base in [t.base.clone(), linked_base] {
        let resolver = ChunkResolver::new(&base).unwrap();
        for id in 0..3 {
            let chunk_path = format!("pending_compression/movie/chunk_{id:04}");
            let path = resolver.metadata_path(&chunk_path).unwrap();
            assert_eq!(path, resolve_metadata(&base, &chunk_path).unwrap());
            assert_eq!(
                fs::canonicalize(&path).unwrap(),
                fs::canonicalize(t.chunk_dir("movie", id).join("metadata.json")).unwrap()
            );
        }
        let aliased = resolver
            .metadata_path("pending_compression/./alias/chunk_0001")
            .unwrap();
        assert!(
            aliased.ends_with("movie/chunk_0001/metadata.json"),
            "{aliased:?}"
        );
        for (chunk_path, outside_base) in [
            ("pending_compression/linked/chunk_0000", true),
            ("pending_compression", true),
            ("elsewhere/chunk_0000", true),
            ("pending_compression/movie/chunk_0009", false),
        ] {
            let err = resolver.metadata_path(chunk_path).unwrap_err();
            assert_eq!(
                matches!(err, CallbackError::OutsideBase { .. }),
                outside_base,
                "{chunk_path}: {err}"
            );
        }
    }
}

#[test]
fn payload_is_read_alone_or_from_a_github_event_file() {
    let t = Tree::new();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("payload.json");
    let inner = json!({
        "chunk_path": "pending_compression/movie/chunk_0003",
        "status": "completed",
        "upload_path": "k",
        "upload_hash": HASH,
        "some_future_field": 1
    });
    fs::write(&bare, inner.to_string()).unwrap();
    let event = dir.path().join("event.json");
    fs::write(
        &event,
        json!({
            "action": "chunk_compressed",
            "branch": "main",
            "client_payload": inner,
            "repository": {"full_name": "o/r"},
            "sender": {"login": "bot"}
        })
        .to_string(),
    )
    .unwrap();
    let a = detector::read_payload(&bare).unwrap();
    let b = detector::read_payload(&event).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.upload_path.as_deref(), Some("k"));
    assert_eq!(a.stats, Value::Null);

    queued_chunk(&t);
    apply_callback(&t.base, &b, now()).unwrap();

    let wrong = dir.path().join("wrong.json");
    fs::write(
        &wrong,
        json!({"action": "something_else", "client_payload": inner}).to_string(),
    )
    .unwrap();
    let err = detector::read_payload(&wrong).unwrap_err();
    assert!(matches!(err, CallbackError::WrongEventType { .. }), "{err}");

    let broken = dir.path().join("broken.json");
    fs::write(&broken, r#"{"client_payload": {"status": "completed"}}"#).unwrap();
    let err = detector::read_payload(&broken).unwrap_err();
    assert!(err.to_string().contains("chunk_path"), "{err}");
    assert!(err.to_string().contains("broken.json"), "{err}");

    let err = detector::read_payload(&dir.path().join("absent.json")).unwrap_err();
    assert!(matches!(err, CallbackError::ReadPayload { .. }), "{err}");
}
