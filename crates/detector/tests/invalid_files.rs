//! Broken metadata, mismatched data and odd trees: reported with path and reason, and the
//! scan goes on.

mod common;

use std::fs;

use common::{Tree, now, python_metadata, with};
use detector::{DetectConfig, DetectError, scan};
use serde_json::json;

#[test]
fn each_bad_file_is_reported_with_its_path_and_reason_and_the_rest_is_scanned() {
    let t = Tree::new();
    t.chunk("good", 0, &python_metadata(0, 5, "FIXED_SIZE"));
    let bad = [
        ("syntax", "{ \"chunk_id\": 0,", "EOF while parsing"),
        ("not_object", "[1, 2]", "invalid type"),
        (
            "wrong_type",
            &with(python_metadata(0, 1, "X"), json!({"size": "big"})).to_string(),
            "size",
        ),
        (
            "missing_hash",
            r#"{"chunk_id": 0, "offset": 0, "size": 1, "pattern_type": "X",
                "status": "pending", "created_at": "2025-11-13T14:02:11"}"#,
            "original_hash",
        ),
        (
            "bad_status",
            &with(python_metadata(0, 1, "X"), json!({"status": "done"})).to_string(),
            "done",
        ),
        (
            "bad_time",
            &with(
                python_metadata(0, 1, "X"),
                json!({"created_at": "yesterday"}),
            )
            .to_string(),
            "yesterday",
        ),
        ("empty", "", "EOF while parsing"),
    ];
    for (name, text, _) in &bad {
        t.write_raw(&t.chunk_dir(name, 0).join("metadata.json"), text);
    }
    // Not UTF-8 at all.
    fs::create_dir_all(t.chunk_dir("binary", 0)).unwrap();
    fs::write(
        t.chunk_dir("binary", 0).join("metadata.json"),
        [0xff, 0xfe, 0x00],
    )
    .unwrap();

    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert_eq!(report.selected.len(), 1);
    assert_eq!(
        report.selected[0].info.chunk_path,
        "pending_compression/good/chunk_0000"
    );
    assert_eq!(report.invalid.len(), bad.len() + 1, "{:#?}", report.invalid);
    assert_eq!(report.scanned, bad.len() + 2);
    for (name, _, reason) in &bad {
        let path = format!("pending_compression/{name}/chunk_0000/metadata.json");
        let entry = report
            .invalid
            .iter()
            .find(|i| i.path == path)
            .unwrap_or_else(|| panic!("{path} not reported: {:#?}", report.invalid));
        assert!(entry.reason.contains(reason), "{name}: {}", entry.reason);
    }
    assert!(report.github_output().ends_with("invalid_count=8\n"));

    // --strict turns the same report into an error naming the first file.
    match report.check_strict() {
        Err(DetectError::Strict { count, first }) => {
            assert_eq!(count, 8);
            assert!(
                first.starts_with("pending_compression/bad_status/"),
                "{first}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn data_bin_that_disagrees_with_metadata_is_reported_and_not_dispatched() {
    let t = Tree::new();
    t.chunk_with_data("f", 0, &python_metadata(0, 100, "FIXED_SIZE"), Some(99));
    t.chunk_with_data("f", 1, &python_metadata(1, 100, "FIXED_SIZE"), None);
    t.chunk("f", 2, &python_metadata(2, 100, "FIXED_SIZE"));
    // A completed chunk's data may be cleaned up: not a problem, and not even looked at.
    t.chunk_with_data(
        "f",
        3,
        &with(
            python_metadata(3, 100, "FIXED_SIZE"),
            json!({"status": "completed"}),
        ),
        None,
    );
    // data.bin that is a directory.
    let dir = t.chunk_with_data("f", 4, &python_metadata(4, 0, "FIXED_SIZE"), None);
    fs::create_dir(dir.join("data.bin")).unwrap();

    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    let paths: Vec<&str> = report
        .selected
        .iter()
        .map(|s| s.info.chunk_path.as_str())
        .collect();
    assert_eq!(paths, ["pending_compression/f/chunk_0002"]);
    let reasons: Vec<String> = report.invalid.iter().map(ToString::to_string).collect();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(reasons[0].starts_with("pending_compression/f/chunk_0000/data.bin: is 99 bytes"));
    assert!(reasons[0].contains("size 100"), "{}", reasons[0]);
    assert!(reasons[1].starts_with("pending_compression/f/chunk_0001/data.bin: missing"));
    assert!(reasons[2].starts_with("pending_compression/f/chunk_0004/data.bin: not a regular"));
    assert_eq!(report.skipped.completed, 1);
}

#[cfg(unix)]
#[test]
fn symbolic_links_to_directories_are_reported_not_followed() {
    let t = Tree::new();
    let outside = tempfile::tempdir().unwrap();
    let real_chunk = outside.path().join("chunk_0000");
    fs::create_dir(&real_chunk).unwrap();
    fs::write(
        real_chunk.join("metadata.json"),
        python_metadata(0, 0, "FIXED_SIZE").to_string(),
    )
    .unwrap();
    fs::write(real_chunk.join("data.bin"), b"").unwrap();
    fs::create_dir(t.base.join("f")).unwrap();
    std::os::unix::fs::symlink(&real_chunk, t.base.join("f/chunk_0000")).unwrap();
    std::os::unix::fs::symlink(outside.path(), t.base.join("linked_file_dir")).unwrap();
    // A dangling metadata link where a chunk's metadata should be.
    fs::create_dir(t.base.join("f/chunk_0001")).unwrap();
    std::os::unix::fs::symlink(
        "/nonexistent/metadata.json",
        t.base.join("f/chunk_0001/metadata.json"),
    )
    .unwrap();

    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert!(report.selected.is_empty(), "{:?}", report.selected);
    let reasons: Vec<String> = report.invalid.iter().map(ToString::to_string).collect();
    assert_eq!(
        reasons,
        [
            "pending_compression/f/chunk_0000: symbolic link to a directory; not followed",
            "pending_compression/linked_file_dir: symbolic link to a directory; not followed",
        ],
    );
    // The dangling link is on the fast path (opened directly): it reads as "not there".
    assert_eq!(report.scanned, 2);
}

#[test]
fn staged_chunks_need_no_data_bin_but_their_key_must_be_their_hash() {
    let t = Tree::new();
    let own_key = format!("staging/{:064x}", 1);
    // Staged: no data.bin, and listed with the key the worker reads.
    t.chunk_with_data(
        "f",
        0,
        &with(
            python_metadata(0, 100, "FIXED_SIZE"),
            json!({"staged_object": own_key}),
        ),
        None,
    );
    // A key that names other content, and one that is no staging key at all.
    t.chunk_with_data(
        "f",
        1,
        &with(
            python_metadata(1, 100, "FIXED_SIZE"),
            json!({"staged_object": format!("staging/{:064x}", 1)}),
        ),
        None,
    );
    t.chunk_with_data(
        "f",
        2,
        &with(
            python_metadata(2, 100, "FIXED_SIZE"),
            json!({"staged_object": "chunks/../../etc/passwd"}),
        ),
        None,
    );
    // Not staged, with its data: the two transports mix in one tree.
    t.chunk("f", 3, &python_metadata(3, 100, "FIXED_SIZE"));

    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    let listed: Vec<(&str, Option<&str>)> = report
        .selected
        .iter()
        .map(|s| (s.info.chunk_path.as_str(), s.info.staged_object.as_deref()))
        .collect();
    assert_eq!(
        listed,
        [
            ("pending_compression/f/chunk_0000", Some(own_key.as_str())),
            ("pending_compression/f/chunk_0003", None),
        ]
    );
    let reasons: Vec<String> = report.invalid.iter().map(ToString::to_string).collect();
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    for (reason, id) in reasons.iter().zip([1, 2]) {
        assert!(
            reason.starts_with(&format!(
                "pending_compression/f/chunk_{id:04}/metadata.json: staged_object is"
            )),
            "{reason}"
        );
    }
}
