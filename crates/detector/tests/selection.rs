//! Selection rules, leases and dispatch order on generated trees.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chunk_model::{Priority, Status};
use common::{Tree, now, python_metadata, with};
use detector::{DetectConfig, ScanReport, SelectReason, SkipCounts, scan};
use serde_json::json;

fn selected(report: &ScanReport) -> BTreeMap<String, SelectReason> {
    report
        .selected
        .iter()
        .map(|s| (s.info.chunk_path.clone(), s.reason))
        .collect()
}

fn paths(report: &ScanReport) -> Vec<&str> {
    report
        .selected
        .iter()
        .map(|s| s.info.chunk_path.as_str())
        .collect()
}

/// One chunk in every state, with leases fresh and stale, attempts left and exhausted.
fn every_state_tree() -> Tree {
    let t = Tree::new();
    let m = |id| python_metadata(id, 100, "FIXED_SIZE");
    t.chunk("f", 0, &m(0));
    t.chunk("f", 1, &with(m(1), json!({"status": "completed"})));
    t.chunk(
        "f",
        2,
        &with(
            m(2),
            json!({"status": "queued", "dispatched_at": "2026-01-01T11:50:00Z"}),
        ),
    );
    t.chunk(
        "f",
        3,
        &with(
            m(3),
            json!({"status": "processing", "dispatched_at": "2026-01-01T11:00:00Z"}),
        ),
    );
    t.chunk(
        "f",
        4,
        &with(m(4), json!({"status": "failed", "attempts": 1})),
    );
    t.chunk(
        "f",
        5,
        &with(m(5), json!({"status": "failed", "attempts": 3})),
    );
    t
}

#[test]
fn default_rules_select_pending_retries_and_expired_leases() {
    let t = every_state_tree();
    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert_eq!(
        selected(&report),
        BTreeMap::from([
            (
                "pending_compression/f/chunk_0000".to_owned(),
                SelectReason::Pending
            ),
            (
                "pending_compression/f/chunk_0003".to_owned(),
                SelectReason::LeaseExpired
            ),
            (
                "pending_compression/f/chunk_0004".to_owned(),
                SelectReason::Retry
            ),
        ])
    );
    assert_eq!(
        report.skipped,
        SkipCounts {
            completed: 1,
            leased: 1,
            attempts_exhausted: 1
        }
    );
    assert_eq!(report.scanned, 6);
    assert!(report.invalid.is_empty(), "{:?}", report.invalid);
    let statuses: Vec<Status> = report.selected.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [Status::Pending, Status::Processing, Status::Failed]
    );
}

#[test]
fn force_selects_everything_not_completed() {
    let t = every_state_tree();
    let mut config = DetectConfig::new(&t.base);
    config.force = true;
    let report = scan(&config, now()).unwrap();
    let got = selected(&report);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(!got.contains_key("pending_compression/f/chunk_0001"));
    assert_eq!(
        got["pending_compression/f/chunk_0000"],
        SelectReason::Pending
    );
    assert_eq!(
        got["pending_compression/f/chunk_0002"],
        SelectReason::Forced
    );
    assert_eq!(
        got["pending_compression/f/chunk_0005"],
        SelectReason::Forced
    );
    assert_eq!(report.skipped.completed, 1);
}

#[test]
fn max_attempts_is_configurable() {
    let t = every_state_tree();
    let mut config = DetectConfig::new(&t.base);
    config.max_attempts = 4;
    let report = scan(&config, now()).unwrap();
    assert_eq!(
        selected(&report)["pending_compression/f/chunk_0005"],
        SelectReason::Retry
    );
    config.max_attempts = 1;
    let report = scan(&config, now()).unwrap();
    assert!(!selected(&report).contains_key("pending_compression/f/chunk_0004"));
    assert_eq!(report.skipped.attempts_exhausted, 2);
}

#[test]
fn leases_expire_at_lease_expires_at_else_dispatched_at_plus_lease() {
    let t = Tree::new();
    let m = |id, extra| with(python_metadata(id, 10, "FIXED_SIZE"), extra);
    // dispatched 29:59 ago: still leased under the 30 min default.
    t.chunk(
        "l",
        0,
        &m(
            0,
            json!({"status": "queued", "dispatched_at": "2026-01-01T11:30:01Z"}),
        ),
    );
    // dispatched exactly 30 min ago: expired.
    t.chunk(
        "l",
        1,
        &m(
            1,
            json!({"status": "queued", "dispatched_at": "2026-01-01T11:30:00Z"}),
        ),
    );
    // explicit lease in the future wins over an old dispatched_at.
    t.chunk(
        "l",
        2,
        &m(
            2,
            json!({"status": "processing", "dispatched_at": "2025-12-01T00:00:00Z",
                     "lease_expires_at": "2026-01-01T12:00:01Z"}),
        ),
    );
    // explicit lease in the past wins over a fresh dispatched_at.
    t.chunk(
        "l",
        3,
        &m(
            3,
            json!({"status": "processing", "dispatched_at": "2026-01-01T11:59:00Z",
                     "lease_expires_at": "2026-01-01T11:59:59Z"}),
        ),
    );
    // no owner on record: dispatchable, nothing is stuck forever.
    t.chunk("l", 4, &m(4, json!({"status": "queued"})));
    // Python-style local timestamp without zone, read as UTC.
    t.chunk(
        "l",
        5,
        &m(
            5,
            json!({"status": "queued", "dispatched_at": "2026-01-01T11:45:00.5"}),
        ),
    );

    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    let got = selected(&report);
    let ids: Vec<&str> = got.keys().map(|p| &p[p.len() - 4..]).collect();
    assert_eq!(ids, ["0001", "0003", "0004"]);
    assert!(got.values().all(|r| *r == SelectReason::LeaseExpired));
    assert_eq!(report.skipped.leased, 3);

    // A 10 min lease frees chunk 5 (dispatched 14.5 min ago) but not chunk 2.
    let mut config = DetectConfig::new(&t.base);
    config.lease = Duration::from_secs(10 * 60);
    let got = selected(&scan(&config, now()).unwrap());
    assert!(got.contains_key("pending_compression/l/chunk_0005"));
    assert!(got.contains_key("pending_compression/l/chunk_0000"));
    assert!(!got.contains_key("pending_compression/l/chunk_0002"));
}

#[test]
fn order_is_keyframe_header_large_normal_then_name_then_chunk_id() {
    let t = Tree::new();
    let big = (1 << 20) + 1;
    let one_mib = 1 << 20;
    // Written in scrambled order; the output order must not depend on it.
    t.chunk("b", 10, &python_metadata(10, 5, "PNG_IDAT"));
    t.chunk("b", 2, &python_metadata(2, 5, "PNG_IDAT"));
    t.chunk("a", 7, &python_metadata(7, one_mib, "FIXED_SIZE"));
    t.chunk("a", 3, &python_metadata(3, big, "ISOBMFF_MDAT_MEDIA"));
    t.chunk("b", 1, &python_metadata(1, big, "FIXED_SIZE"));
    t.chunk("b", 0, &python_metadata(0, 40, "EBML_HEADER"));
    t.chunk(
        "a",
        9,
        &with(
            python_metadata(9, 12, "JPEG_APP0"),
            json!({"pattern": "JPEG_HEADER"}),
        ),
    );
    t.chunk(
        "b",
        5,
        &with(
            python_metadata(5, big, "ISOBMFF_MDAT_KEYFRAMES"),
            json!({"is_keyframe": true}),
        ),
    );
    t.chunk(
        "a",
        8,
        &with(
            python_metadata(8, 1, "AVI_VIDEO_FRAME"),
            json!({"is_keyframe": true}),
        ),
    );

    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert_eq!(
        paths(&report),
        [
            "pending_compression/a/chunk_0008",
            "pending_compression/b/chunk_0005",
            "pending_compression/a/chunk_0009",
            "pending_compression/b/chunk_0000",
            "pending_compression/a/chunk_0003",
            "pending_compression/b/chunk_0001",
            "pending_compression/a/chunk_0007",
            "pending_compression/b/chunk_0002",
            "pending_compression/b/chunk_0010",
        ]
    );
    let priorities: Vec<Priority> = report.selected.iter().map(|s| s.info.priority).collect();
    use Priority::*;
    assert_eq!(
        priorities,
        [
            Keyframe, Keyframe, Header, Header, Large, Large, Normal, Normal, Normal
        ]
    );
    // Same tree, same order, every time.
    for _ in 0..5 {
        assert_eq!(scan(&DetectConfig::new(&t.base), now()).unwrap(), report);
    }
}

#[test]
fn python_chunker_metadata_is_read_as_written() {
    let t = Tree::new();
    t.chunk("photo", 0, &python_metadata(0, 8, "PNG_SIGNATURE"));
    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    let [chunk] = report.selected.as_slice() else {
        panic!("{report:?}")
    };
    let info = &chunk.info;
    assert_eq!(info.chunk_path, "pending_compression/photo/chunk_0000");
    assert_eq!(info.base_dir, "pending_compression/photo");
    assert_eq!(info.chunk_id, 0);
    assert_eq!(info.size, 8);
    assert_eq!(info.pattern_type, "PNG_SIGNATURE");
    assert_eq!(info.hash.unwrap().to_hex(), format!("{:064x}", 1));
    assert!(!info.is_keyframe);
    assert_eq!(info.priority, Priority::Normal);
    assert_eq!(chunk.attempts, 0);
}

#[test]
fn include_and_exclude_patterns() {
    let t = Tree::new();
    t.chunk("keep", 0, &python_metadata(0, 1, "FIXED_SIZE"));
    t.chunk("skip_me", 0, &python_metadata(0, 1, "FIXED_SIZE"));
    t.chunk("keep", 1, &python_metadata(1, 1, "FIXED_SIZE"));
    // Not a chunk directory: the default pattern never reaches it.
    t.write_raw(&t.base.join("keep/notes/metadata.json"), "{ not json");
    // A nested layout only a `**` pattern reaches.
    let nested = t.base.join("deep/x/chunk_0000");
    t.write_raw(
        &nested.join("metadata.json"),
        &python_metadata(0, 0, "FIXED_SIZE").to_string(),
    );
    std::fs::write(nested.join("data.bin"), b"").unwrap();

    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert_eq!(report.selected.len(), 3);
    assert!(report.invalid.is_empty(), "{:?}", report.invalid);

    let mut config = DetectConfig::new(&t.base);
    config.exclude = vec![
        "pending_compression/skip_me".into(),
        "**/chunk_0001/*".into(),
    ];
    let report = scan(&config, now()).unwrap();
    assert_eq!(paths(&report), ["pending_compression/keep/chunk_0000"]);

    config.include = vec!["pending_compression/**/chunk_*/metadata.json".into()];
    config.exclude.clear();
    let report = scan(&config, now()).unwrap();
    assert_eq!(
        paths(&report),
        [
            "pending_compression/deep/x/chunk_0000",
            "pending_compression/keep/chunk_0000",
            "pending_compression/keep/chunk_0001",
            "pending_compression/skip_me/chunk_0000",
        ]
    );
    assert_eq!(
        report.selected[0].info.base_dir,
        "pending_compression/deep/x"
    );

    config.include = vec!["pending_compression/[".into()];
    let err = scan(&config, now()).unwrap_err();
    assert!(err.to_string().contains("pending_compression/["), "{err}");
}

#[test]
fn default_pattern_follows_the_base_name() {
    let t = Tree::named("elsewhere");
    t.chunk("f", 0, &python_metadata(0, 3, "FIXED_SIZE"));
    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert_eq!(paths(&report), ["elsewhere/f/chunk_0000"]);

    // A base given as `.` is named by its absolute path.
    let config = DetectConfig::new(t.base.join("."));
    assert_eq!(
        paths(&scan(&config, now()).unwrap()),
        ["elsewhere/f/chunk_0000"]
    );
}

#[test]
fn hidden_directories_and_partial_trees_are_skipped() {
    let t = Tree::new();
    t.chunk("movie", 0, &python_metadata(0, 4, "FIXED_SIZE"));
    // The chunker's in-progress directory and a temp file of an atomic write.
    t.write_raw(&t.base.join(".movie.partial/chunk_0000/metadata.json"), "{");
    t.write_raw(&t.base.join("movie/chunk_0000/.panini-tmp-x"), "{");
    // A chunk directory whose metadata has not been written yet, and an empty file dir.
    std::fs::create_dir_all(t.chunk_dir("movie", 1)).unwrap();
    std::fs::create_dir_all(t.base.join("empty")).unwrap();
    // A stray file where a file directory would be.
    t.write_raw(&t.base.join("README"), "hello");

    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert_eq!(paths(&report), ["pending_compression/movie/chunk_0000"]);
    assert!(report.invalid.is_empty(), "{:?}", report.invalid);
    assert_eq!(report.scanned, 1);
}

#[test]
fn a_scan_of_named_files_reads_only_their_trees() {
    let t = Tree::new();
    for name in ["a", "b", "c"] {
        t.chunk(name, 0, &python_metadata(0, 10, "FIXED_SIZE"));
        t.chunk(name, 1, &python_metadata(1, 10, "FIXED_SIZE"));
    }
    // Broken metadata in a file not named must not even be read.
    t.write_raw(&t.chunk_dir("b", 2).join("metadata.json"), "{");

    let mut config = DetectConfig::new(&t.base);
    config.files = vec![
        "c".into(),
        "a".into(),
        // Not a file of the tree: nothing to scan, and no error.
        "missing".into(),
        // Never a way out of the base, nor into an in-progress tree.
        "../elsewhere".into(),
        ".a.partial".into(),
    ];
    let report = scan(&config, now()).unwrap();
    assert_eq!(
        paths(&report),
        [
            "pending_compression/a/chunk_0000",
            "pending_compression/a/chunk_0001",
            "pending_compression/c/chunk_0000",
            "pending_compression/c/chunk_0001",
        ],
        "in the order a whole scan gives"
    );
    assert_eq!(report.scanned, 4);
    assert!(report.invalid.is_empty(), "{:?}", report.invalid);

    // The whole tree, for comparison: b too, and its broken chunk.
    let report = scan(&DetectConfig::new(&t.base), now()).unwrap();
    assert_eq!(report.selected.len(), 6);
    assert_eq!(report.invalid.len(), 1, "{:?}", report.invalid);
}
