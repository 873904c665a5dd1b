//! Files exactly as the original Python chunker wrote them must read, and writing back
//! through `json_file::update` must change only what the caller changed.

use std::fs;
use std::path::Path;

use chunk_model::{
    ChunkMetadata, Manifest, ModelError, Sha256Digest, Status, Timestamp, json_file, layout,
};

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Runs `script` with `python3`, which must print one JSON document with `json`'s own
/// serializer: the fixtures below are written by Python at test time, as the original
/// chunker wrote them, not typed by hand.
fn python_json(script: &str) -> String {
    let output = std::process::Command::new("python3")
        .args(["-c", script, HASH])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 is installed");
    assert!(
        output.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// What the Python chunker's `json.dump(metadata, f, indent=2)` wrote (ASCII escapes for
/// non-ASCII text, `null`, a naive `isoformat()` timestamp with microseconds), with a field
/// a later tool added that Panini does not know.
fn python_metadata() -> String {
    python_json(
        r#"
import json, sys
from datetime import datetime
metadata = {
    "chunk_id": 3,
    "offset": 3 * 1024 * 1024,
    "size": 1024 * 1024,
    "original_hash": sys.argv[1],
    "pattern_type": "PNG_IDAT",
    "dependencies": [],
    "grammar_id": None,
    "status": "pending",
    "created_at": datetime(2025, 11, 13, 14, 2, 11, 123456).isoformat(),
    "custom_tool_note": {"reviewed": True, "by": "Zo\u00eb \u2713"},
}
json.dump(metadata, sys.stdout, indent=2)
"#,
    )
}

fn python_manifest() -> String {
    python_json(
        r#"
import json, sys
from datetime import datetime
manifest = {
    "base_name": "image",
    "total_chunks": 1,
    "created_at": datetime(2025, 11, 13, 14, 2, 11, 1).isoformat(),
    "grammar_id": "png_v1",
    "chunks": [
        {"chunk_id": 0, "offset": 0, "size": 4, "hash": sys.argv[1], "pattern": "PNG_SIGNATURE"}
    ],
}
json.dump(manifest, sys.stdout, indent=2)
"#,
    )
}

fn write_tree(root: &Path) -> std::path::PathBuf {
    let layout = chunk_model::Layout::new(root.join(layout::DEFAULT_ROOT));
    let chunk_dir = layout.chunk_dir("image", 3, 4).unwrap();
    fs::create_dir_all(&chunk_dir).unwrap();
    fs::write(chunk_dir.join(layout::METADATA_FILE), python_metadata()).unwrap();
    fs::write(layout.manifest_path("image").unwrap(), python_manifest()).unwrap();
    chunk_dir.join(layout::METADATA_FILE)
}

#[test]
fn reads_python_metadata_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tree(dir.path());
    let meta: ChunkMetadata = json_file::read(&path).unwrap();
    assert_eq!(meta.chunk_id, 3);
    assert_eq!(meta.offset, 3_145_728);
    assert_eq!(meta.original_hash, HASH.parse::<Sha256Digest>().unwrap());
    assert_eq!(meta.status, Status::Pending);
    assert_eq!(meta.grammar_id, None);
    assert_eq!(meta.attempts, 0);
    assert_eq!(meta.created_at.as_str(), "2025-11-13T14:02:11.123456");
    assert_eq!(meta.extra["custom_tool_note"]["reviewed"], true);
    assert_eq!(meta.extra["custom_tool_note"]["by"], "Zoë ✓");

    let manifest: Manifest =
        json_file::read(&dir.path().join("pending_compression/image/manifest.json")).unwrap();
    assert_eq!(manifest.total_chunks, 1);
    assert_eq!(manifest.chunks[0].pattern, "PNG_SIGNATURE");
    assert_eq!(
        manifest.file_hash, None,
        "Python manifests have no whole-file hash"
    );
}

#[test]
fn update_writes_back_only_changed_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tree(dir.path());
    let dispatched = Timestamp::now();
    json_file::update(&path, |meta: &mut ChunkMetadata| {
        meta.set_status(Status::Queued)
            .map_err(|source| ModelError::Transition {
                path: path.clone(),
                source,
            })?;
        meta.dispatched_at = Some(dispatched.clone());
        meta.attempts += 1;
        Ok::<_, ModelError>(())
    })
    .unwrap();

    let after: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let keys: Vec<&str> = after
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "chunk_id",
            "offset",
            "size",
            "original_hash",
            "pattern_type",
            "dependencies",
            "grammar_id",
            "status",
            "created_at",
            "custom_tool_note",
            "dispatched_at",
            "attempts",
        ],
        "original keys keep their order, unknown ones survive, only changed keys are added"
    );
    assert_eq!(after["status"], "queued");
    assert_eq!(after["created_at"], "2025-11-13T14:02:11.123456");
    assert_eq!(after["grammar_id"], serde_json::Value::Null);
    assert_eq!(after["custom_tool_note"]["by"], "Zoë ✓");
    assert_eq!(after["dispatched_at"], dispatched.as_str());
    assert_eq!(after["attempts"], 1);
}

#[test]
fn update_that_changes_nothing_does_not_touch_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tree(dir.path());
    let before = fs::read(&path).unwrap();
    json_file::update(&path, |_: &mut ChunkMetadata| Ok::<_, ModelError>(())).unwrap();
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn illegal_transition_is_a_typed_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tree(dir.path());
    let before = fs::read(&path).unwrap();
    let err = json_file::update(&path, |meta: &mut ChunkMetadata| {
        meta.set_status(Status::Completed)
            .map_err(|source| ModelError::Transition {
                path: path.clone(),
                source,
            })
    })
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::Transition { source, .. } if source.from == Status::Pending),
        "{err}"
    );
    assert!(err.to_string().contains("metadata.json"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn malformed_metadata_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.json");
    fs::write(&path, python_metadata().replace("\"pending\"", "\"done\"")).unwrap();
    let err = json_file::read::<ChunkMetadata>(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metadata.json") && err.contains("done"),
        "{err}"
    );

    fs::write(&path, python_metadata().replace(HASH, "xyz")).unwrap();
    let err = json_file::read::<ChunkMetadata>(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("xyz"), "{err}");

    fs::write(&path, "[1, 2]").unwrap();
    let err =
        json_file::update(&path, |_: &mut ChunkMetadata| Ok::<_, ModelError>(())).unwrap_err();
    assert!(matches!(err, ModelError::NotAnObject { .. }), "{err}");
}

#[test]
fn atomic_write_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.json");
    json_file::write_atomic(&path, &serde_json::json!({"a": 1})).unwrap();
    json_file::write_atomic(&path, &serde_json::json!({"a": 2})).unwrap();
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["doc.json"]);
    assert_eq!(fs::read_to_string(&path).unwrap(), "{\n  \"a\": 2\n}\n");
}
