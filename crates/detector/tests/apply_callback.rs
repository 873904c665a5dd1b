//! Applying `chunk_compressed` events: the changes, idempotence, and refusals.

mod common;

use std::fs;
use std::path::Path;

use chunk_model::Status;
use common::{Tree, now, python_metadata, with};
use detector::{CallbackError, Change, DetectConfig, apply_callback, scan};
use serde_json::{Value, json};

const HASH: &str = "aa00000000000000000000000000000000000000000000000000000000000001";

/// The `original_hash` `python_metadata(id, …)` gives chunk `id`.
fn original_hash(id: u64) -> String {
    format!("{:064x}", id + 1)
}

/// The object key a worker stores chunk `id` under.
fn object_key(id: u64) -> String {
    format!("chunks/{}.zstd", original_hash(id))
}

/// The `completed` event a worker sends for the chunk at `chunk_path`: about the content
/// of chunk `NNNN` when the path ends in `chunk_NNNN` (of chunk 0 otherwise).
fn payload(chunk_path: &str) -> chunk_model::ChunkCompressed {
    let id = chunk_path
        .rsplit_once("chunk_")
        .and_then(|(_, id)| id.parse().ok())
        .unwrap_or(0);
    serde_json::from_value(json!({
        "chunk_path": chunk_path,
        "status": "completed",
        "upload_path": object_key(id),
        "upload_hash": HASH,
        "original_hash": original_hash(id),
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
    obj.insert("upload_path".into(), json!(object_key(3)));
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

/// The rules `chunk_model::chunk_path` shares with the worker, through `apply_callback`:
/// a file directory that links out, a `metadata.json` that is a link even to another
/// chunk inside the base, a backslash or NUL in the path, a metadata that is not a file.
#[cfg(unix)]
#[test]
fn the_shared_chunk_path_check_refuses_links_and_odd_paths() {
    use std::os::unix::fs::symlink;
    let t = Tree::new();
    let target = queued_chunk(&t);
    let target_text = fs::read(&target).unwrap();
    // Outside the repository: a file directory holding a queued chunk an escape would
    // complete.
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("movie/chunk_0003");
    fs::create_dir_all(&victim).unwrap();
    let victim_text = fs::read(&target).unwrap();
    fs::write(victim.join("metadata.json"), &victim_text).unwrap();
    symlink(elsewhere.path().join("movie"), t.base.join("linked_movie")).unwrap();
    // Inside the base: a chunk whose metadata.json is a link to chunk 3's.
    let aliased = t.chunk_dir("aliased", 3);
    fs::create_dir_all(&aliased).unwrap();
    symlink(&target, aliased.join("metadata.json")).unwrap();
    // A chunk whose metadata.json is a directory.
    fs::create_dir_all(t.chunk_dir("odd", 3).join("metadata.json")).unwrap();

    for (chunk_path, outside) in [
        ("pending_compression/linked_movie/chunk_0003", true),
        ("pending_compression/aliased/chunk_0003", true),
        ("pending_compression\\movie\\chunk_0003", true),
        ("pending_compression/movie/chunk_0003\0", true),
        ("pending_compression/odd/chunk_0003", false),
    ] {
        let err = apply_callback(&t.base, &payload(chunk_path), now()).unwrap_err();
        let expected = if outside {
            matches!(err, CallbackError::OutsideBase { .. })
        } else {
            matches!(err, CallbackError::ChunkNotFound { .. })
        };
        assert!(expected, "{chunk_path:?}: {err}");
    }
    assert_eq!(fs::read(victim.join("metadata.json")).unwrap(), victim_text);
    assert_eq!(fs::read(&target).unwrap(), target_text);
    // Empty components and `.` are spelling, not escapes.
    apply_callback(
        &t.base,
        &payload("./pending_compression//movie/./chunk_0003"),
        now(),
    )
    .unwrap();
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
        // A batch answers each path as `metadata_path` does, in order.
        let batch = [
            "pending_compression/movie/chunk_0000",
            "pending_compression/linked/chunk_0000",
            "../x",
            "pending_compression/alias/chunk_0002",
            "pending_compression/movie/chunk_0009",
            "pending_compression/movie/chunk_0001",
        ];
        let show = |r: Result<_, CallbackError>| format!("{:?}", r.map_err(|e| e.to_string()));
        for (chunk_path, got) in batch.iter().zip(resolver.metadata_paths(batch)) {
            assert_eq!(
                show(got),
                show(resolver.metadata_path(chunk_path)),
                "{chunk_path}"
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
        "upload_path": object_key(3),
        "upload_hash": HASH,
        "original_hash": original_hash(3),
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
    assert_eq!(a.upload_path, Some(object_key(3)));
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

#[test]
fn a_completion_for_other_content_is_refused_and_nothing_is_written() {
    let t = Tree::new();
    let path = queued_chunk(&t);
    let bytes = fs::read(&path).unwrap();
    let chunk = "pending_compression/movie/chunk_0003";

    // Another chunk's hash, with that chunk's own (well-formed) key.
    let mut other = payload(chunk);
    other.original_hash = Some(original_hash(7).parse().unwrap());
    other.upload_path = Some(object_key(7));
    let err = apply_callback(&t.base, &other, now()).unwrap_err();
    assert!(
        matches!(err, CallbackError::OriginalHashMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("original_hash"), "{err}");
    assert!(err.to_string().contains(&original_hash(3)), "{err}");

    // This chunk's hash, but the object of another chunk, or no object key at all.
    for bad in [
        object_key(7),
        "../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        format!("chunks/{}.zstd/../../x", original_hash(3)),
        format!("chunks/{}.ZSTD", original_hash(3)),
        format!("gs://bucket/chunks/{}.zstd", original_hash(3)),
        format!("status/{}.json", original_hash(3)),
    ] {
        let mut event = payload(chunk);
        event.upload_path = Some(bad.clone());
        let err = apply_callback(&t.base, &event, now()).unwrap_err();
        assert!(
            matches!(err, CallbackError::InvalidUploadPath { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("upload_path"), "{err}");
    }

    // A completion must say whose content it is.
    let mut anonymous = payload(chunk);
    anonymous.original_hash = None;
    let err = apply_callback(&t.base, &anonymous, now()).unwrap_err();
    assert!(
        matches!(
            err,
            CallbackError::MissingField {
                field: "original_hash",
                ..
            }
        ),
        "{err}"
    );

    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was written");
    // The right one still applies.
    apply_callback(&t.base, &payload(chunk), now()).unwrap();
}

/// Every line the error prints, its causes included, as `{:#}` of anyhow shows them.
fn printed(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn payload_text_in_errors_cannot_start_a_workflow_command() {
    // The probe from the issue: a status that carries an annotation of its own.
    const INJECTION: &str = "x\n::error title=INJECTED::the build is compromised";
    let t = Tree::new();
    queued_chunk(&t);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    fs::write(
        &file,
        json!({"action": "chunk_compressed", "client_payload": {
            "chunk_path": "pending_compression/movie/chunk_0003",
            "status": INJECTION,
        }})
        .to_string(),
    )
    .unwrap();
    let err = detector::read_payload(&file).unwrap_err();
    let text = printed(&err);
    assert!(
        text.contains("INJECTED"),
        "the value is still shown: {text}"
    );
    assert!(!text.contains(['\n', '\r']), "{text}");

    // The same through every field that reaches an error message.
    let mut events = Vec::new();
    for chunk_path in [
        format!("pending_compression/movie/{INJECTION}"),
        format!("pending_compression/{INJECTION}/../../x"),
        INJECTION.to_owned(),
    ] {
        events.push(payload(&chunk_path));
    }
    let mut bad_upload = payload("pending_compression/movie/chunk_0003");
    bad_upload.upload_path = Some(INJECTION.to_owned());
    events.push(bad_upload);
    let mut no_hash = payload(INJECTION);
    no_hash.upload_hash = None;
    events.push(no_hash);
    for event in &events {
        let err = apply_callback(&t.base, event, now()).unwrap_err();
        let text = printed(&err);
        assert!(!text.contains(['\n', '\r']), "{text}");
    }
}

#[test]
fn callbacks_take_the_tree_lock() {
    use chunk_model::tree_lock::{TreeLock, TreeLockError, Wait};
    use std::time::Duration;
    let t = Tree::new();
    queued_chunk(&t);
    let event = payload("pending_compression/movie/chunk_0003");

    // Held by this thread: refused at once instead of waiting for itself, and the lock
    // held is the proof `apply_callback_locked` takes.
    let lock = TreeLock::acquire(&t.base, Wait::No).unwrap();
    let err = apply_callback(&t.base, &event, now()).unwrap_err();
    assert!(
        matches!(
            err,
            CallbackError::Locked(TreeLockError::HeldByThisThread { .. })
        ),
        "{err}"
    );
    drop(lock);

    // Held by another run for a moment: the callback waits for it, then applies.
    let base = t.base.clone();
    let (taken, wait_taken) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let lock = TreeLock::acquire(&base, Wait::No).unwrap();
        taken.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(lock);
    });
    wait_taken.recv_timeout(Duration::from_secs(30)).unwrap();
    let outcome = apply_callback(&t.base, &event, now()).unwrap();
    assert!(matches!(outcome.change, Change::Applied { .. }));
    holder.join().unwrap();

    let lock = TreeLock::acquire(&t.base, Wait::No).unwrap();
    let again = detector::apply_callback_locked(&lock, &event, now()).unwrap();
    assert!(matches!(again.change, Change::AlreadyApplied { .. }));
}
