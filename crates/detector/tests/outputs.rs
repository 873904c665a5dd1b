//! `chunks_to_process.json`, the `GITHUB_OUTPUT` lines and the summary.

mod common;

use std::fs;

use common::{Tree, now, python_metadata, with};
use detector::{DetectConfig, scan};
use serde_json::{Value, json};

#[test]
fn chunks_file_lists_the_seed_fields_in_dispatch_order() {
    let t = Tree::new();
    t.chunk(
        "clip",
        1,
        &python_metadata(1, 2_000_000, "ISOBMFF_MDAT_MEDIA"),
    );
    t.chunk(
        "clip",
        0,
        &with(
            python_metadata(0, 32, "ISOBMFF_FTYP"),
            json!({"pattern": "FILE_HEADER"}),
        ),
    );
    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    let out = t.root().join("chunks_to_process.json");
    fs::write(&out, "stale").unwrap();
    report.write_chunks_file(&out).unwrap();

    let written: Value = serde_json::from_slice(&fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        written,
        json!([
            {
                "chunk_path": "pending_compression/clip/chunk_0000",
                "chunk_id": 0,
                "pattern_type": "ISOBMFF_FTYP",
                "size": 32,
                "hash": format!("{:064x}", 1),
                "base_dir": "pending_compression/clip",
                "is_keyframe": false,
                "priority": "header"
            },
            {
                "chunk_path": "pending_compression/clip/chunk_0001",
                "chunk_id": 1,
                "pattern_type": "ISOBMFF_MDAT_MEDIA",
                "size": 2_000_000,
                "hash": format!("{:064x}", 2),
                "base_dir": "pending_compression/clip",
                "is_keyframe": false,
                "priority": "large"
            }
        ])
    );
    // The atomic write leaves no temporary file behind.
    let leftovers: Vec<_> = fs::read_dir(t.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The list reads back as the wire type the dispatcher uses.
    let infos: Vec<chunk_model::ChunkInfo> = chunk_model::json_file::read(&out).unwrap();
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[0], report.selected[0].info);
}

#[test]
fn github_output_is_appended_after_existing_lines() {
    let t = Tree::new();
    t.chunk("a", 0, &python_metadata(0, 1, "FIXED_SIZE"));
    t.chunk("a", 1, &python_metadata(1, 1, "FIXED_SIZE"));
    t.write_raw(&t.chunk_dir("a", 2).join("metadata.json"), "{ broken");
    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();

    let output = t.root().join("github_output");
    fs::write(&output, "earlier_step=done\n").unwrap();
    report.append_github_output(&output).unwrap();
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        "earlier_step=done\nchunks_found=true\nchunks_count=2\ninvalid_count=1\n"
    );
}

#[test]
fn nothing_found_still_writes_an_empty_list_and_false() {
    let t = Tree::new();
    t.chunk(
        "done",
        0,
        &with(
            python_metadata(0, 1, "FIXED_SIZE"),
            json!({"status": "completed"}),
        ),
    );
    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert!(report.selected.is_empty());

    let out = t.root().join("chunks_to_process.json");
    report.write_chunks_file(&out).unwrap();
    assert_eq!(fs::read_to_string(&out).unwrap(), "[]\n");

    let output = t.root().join("github_output");
    report.append_github_output(&output).unwrap();
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        "chunks_found=false\nchunks_count=0\ninvalid_count=0\n"
    );
    assert!(report.check_strict().is_ok());
}

#[test]
fn missing_base_is_an_empty_report_not_an_error() {
    let t = Tree::new();
    let config = DetectConfig::new(t.root().join("pending_compression_absent"));
    let report = scan(&config, now()).unwrap();
    assert!(report.base_missing);
    assert_eq!(report.scanned, 0);
    assert_eq!(
        report.github_output(),
        "chunks_found=false\nchunks_count=0\ninvalid_count=0\n"
    );
    assert!(report.summary().to_string().contains("does not exist"));

    // A base that is a file is a configuration error.
    let file = t.root().join("file");
    fs::write(&file, "x").unwrap();
    let err = scan(&DetectConfig::new(&file), now()).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn summary_and_json_report_say_what_happened() {
    let t = Tree::new();
    t.chunk(
        "a",
        0,
        &with(
            python_metadata(0, 1, "FIXED_SIZE"),
            json!({"is_keyframe": true}),
        ),
    );
    t.chunk("a", 1, &python_metadata(1, 1, "FIXED_SIZE"));
    t.chunk(
        "a",
        2,
        &with(
            python_metadata(2, 1, "FIXED_SIZE"),
            json!({"status": "completed"}),
        ),
    );
    t.write_raw(&t.chunk_dir("a", 3).join("metadata.json"), "[]");
    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();

    let summary = report.summary().to_string();
    assert!(summary.contains("scanned 4 metadata file(s)"), "{summary}");
    assert!(summary.contains("2 chunk(s) to process"), "{summary}");
    assert!(summary.contains("1 keyframe, 1 normal"), "{summary}");
    assert!(summary.contains("1 completed"), "{summary}");
    assert!(
        summary.contains("pending_compression/a/chunk_0003/metadata.json"),
        "{summary}"
    );

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["scanned"], 4);
    assert_eq!(json["skipped"]["completed"], 1);
    assert_eq!(json["selected"][0]["reason"], "pending");
    assert_eq!(json["selected"][0]["info"]["priority"], "keyframe");
    assert_eq!(
        json["invalid"][0]["path"],
        "pending_compression/a/chunk_0003/metadata.json"
    );
}
