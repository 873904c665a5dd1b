//! `json_file::update_many`: a batch of metadata updates where every file stands or falls
//! on its own, writes back only changed keys (as `update` does), rewrites nothing it did
//! not change and leaves no temporary file behind.

use std::fs;
use std::path::{Path, PathBuf};

use chunk_model::{ChunkMetadata, ModelError, Status, json_file};

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A metadata file as the Python chunker wrote it, with a field Panini does not know.
fn metadata(chunk_id: u32) -> String {
    format!(
        r#"{{
  "chunk_id": {chunk_id},
  "offset": 0,
  "size": 16,
  "original_hash": "{HASH}",
  "pattern_type": "FIXED_SIZE",
  "dependencies": [],
  "grammar_id": null,
  "status": "pending",
  "created_at": "2025-11-13T14:02:11.123456",
  "custom_tool_note": {{"reviewed": true}}
}}"#
    )
}

/// `n` chunk directories under `root`, each with its `metadata.json`.
fn tree(root: &Path, n: u32) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let dir = root.join(format!("chunk_{i:03}"));
            fs::create_dir_all(&dir).unwrap();
            let path = dir.join("metadata.json");
            fs::write(&path, metadata(i)).unwrap();
            path
        })
        .collect()
}

fn queue(path: &Path, meta: &mut ChunkMetadata) -> Result<u32, ModelError> {
    meta.set_status(Status::Queued)
        .map_err(|source| ModelError::Transition {
            path: path.to_owned(),
            source,
        })?;
    meta.attempts += 1;
    Ok(meta.attempts)
}

fn keys(path: &Path) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    doc.as_object().unwrap().keys().cloned().collect()
}

/// Every file under `root` whose name marks it as a temporary file of `json_file`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".panini-tmp-"))
            {
                found.push(path);
            }
        }
    }
    found
}

#[cfg(unix)]
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(path).unwrap().ino()
}

#[test]
fn each_file_stands_or_falls_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let paths = tree(dir.path(), 6);
    // 1: malformed; 2: its change fails; 3: its change changes nothing; 5: missing.
    fs::write(&paths[1], metadata(1).replace("\"pending\"", "\"done\"")).unwrap();
    fs::remove_file(&paths[5]).unwrap();
    let before: Vec<Option<Vec<u8>>> = paths.iter().map(|p| fs::read(p).ok()).collect();
    let mut seen = Vec::new();

    let results = json_file::update_many(&paths, |path, meta: &mut ChunkMetadata| {
        seen.push(path.to_owned());
        match meta.chunk_id {
            2 => Err(ModelError::InvalidName {
                name: "chunk 2".into(),
                reason: "refused by the test",
            }),
            3 => Ok(0),
            _ => queue(path, meta),
        }
    });

    assert_eq!(results.len(), 6);
    assert_eq!(results[0].as_ref().unwrap(), &1);
    assert_eq!(results[4].as_ref().unwrap(), &1);
    assert_eq!(results[3].as_ref().unwrap(), &0);
    let malformed = results[1].as_ref().unwrap_err().to_string();
    assert!(
        malformed.contains(&paths[1].display().to_string()) && malformed.contains("done"),
        "{malformed}"
    );
    assert!(
        matches!(&results[2], Err(ModelError::InvalidName { name, .. }) if name == "chunk 2"),
        "{:?}",
        results[2]
    );
    let missing = results[5].as_ref().unwrap_err();
    assert!(
        matches!(missing, ModelError::Io { path, .. } if path == &paths[5]),
        "{missing}"
    );
    assert_eq!(
        seen,
        [0, 2, 3, 4].map(|i| paths[i].clone()),
        "change sees every readable, well-formed file, in order"
    );

    for i in [0, 4] {
        let meta: ChunkMetadata = json_file::read(&paths[i]).unwrap();
        assert_eq!(meta.status, Status::Queued);
        assert_eq!(meta.attempts, 1);
    }
    for i in [1, 2, 3] {
        assert_eq!(
            fs::read(&paths[i]).ok(),
            before[i],
            "file {i} must not be rewritten"
        );
    }
    assert!(!paths[5].exists(), "a missing file is not created");
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn writes_back_only_changed_keys_in_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths = tree(dir.path(), 3);
    let results = json_file::update_many(&paths, queue);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for path in &paths {
        assert_eq!(
            keys(path),
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
                "attempts",
            ],
            "original keys keep their order, unknown ones survive, only changed keys are added"
        );
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        assert_eq!(doc["custom_tool_note"]["reviewed"], true);
        assert_eq!(doc["grammar_id"], serde_json::Value::Null);
        assert_eq!(doc["created_at"], "2025-11-13T14:02:11.123456");
    }
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_batch_writes_what_update_writes() {
    let batch = tempfile::tempdir().unwrap();
    let single = tempfile::tempdir().unwrap();
    let batch_paths = tree(batch.path(), 4);
    let single_paths = tree(single.path(), 4);
    json_file::update_many(&batch_paths, queue)
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    for path in &single_paths {
        json_file::update(path, |meta: &mut ChunkMetadata| queue(path, meta)).unwrap();
    }
    for (b, s) in batch_paths.iter().zip(&single_paths) {
        assert_eq!(fs::read(b).unwrap(), fs::read(s).unwrap());
    }
    // A batch of one, too.
    let one = tree(&batch.path().join("one"), 1);
    json_file::update_many(&one, queue).pop().unwrap().unwrap();
    assert_eq!(
        fs::read(&one[0]).unwrap(),
        fs::read(&single_paths[0]).unwrap()
    );
}

#[test]
fn nothing_is_written_when_nothing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let paths = tree(dir.path(), 3);
    let before: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
    #[cfg(unix)]
    let inodes: Vec<u64> = paths.iter().map(|p| inode(p)).collect();

    let results = json_file::update_many(&paths, |_, meta: &mut ChunkMetadata| {
        // Setting a field to the value it has is no change.
        meta.status = Status::Pending;
        Ok::<_, ModelError>(meta.chunk_id)
    });

    assert_eq!(
        results.into_iter().collect::<Result<Vec<_>, _>>().unwrap(),
        [0, 1, 2]
    );
    for (path, before) in paths.iter().zip(&before) {
        assert_eq!(&fs::read(path).unwrap(), before);
    }
    #[cfg(unix)]
    assert_eq!(
        paths.iter().map(|p| inode(p)).collect::<Vec<_>>(),
        inodes,
        "no file was replaced"
    );
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn files_sharing_a_directory_and_a_path_given_twice() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    fs::write(&a, metadata(0)).unwrap();
    fs::write(&b, metadata(1)).unwrap();
    #[cfg(unix)]
    let b_inode = inode(&b);

    let results = json_file::update_many(&[&a, &b, &a], |_, meta: &mut ChunkMetadata| {
        if meta.chunk_id == 1 {
            return Ok::<_, ModelError>(meta.attempts);
        }
        meta.attempts += 1;
        Ok(meta.attempts)
    });

    assert_eq!(
        results.into_iter().collect::<Result<Vec<_>, _>>().unwrap(),
        [1, 0, 2],
        "the second change of a.json sees the first"
    );
    let meta: ChunkMetadata = json_file::read(&a).unwrap();
    assert_eq!(meta.attempts, 2);
    assert_eq!(fs::read_to_string(&b).unwrap(), metadata(1));
    #[cfg(unix)]
    assert_eq!(
        inode(&b),
        b_inode,
        "b.json did not change and was not replaced"
    );
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_document_that_is_not_an_object_is_an_error_for_that_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let paths = tree(dir.path(), 2);
    fs::write(&paths[0], "[1, 2]").unwrap();
    let results = json_file::update_many(&paths, queue);
    assert!(
        matches!(&results[0], Err(ModelError::NotAnObject { path }) if path == &paths[0]),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1].as_ref().unwrap(), &1);
    assert_eq!(fs::read_to_string(&paths[0]).unwrap(), "[1, 2]");
}

#[test]
fn a_large_batch_written_on_several_threads_keeps_results_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths = tree(dir.path(), 200);
    // Every 37th file malformed, every 53rd missing: failures spread over every thread.
    for i in (0..200).step_by(37) {
        fs::write(&paths[i], "{ not json").unwrap();
    }
    for i in (5..200).step_by(53) {
        fs::remove_file(&paths[i]).unwrap();
    }

    let results = json_file::update_many(&paths, |path, meta: &mut ChunkMetadata| {
        queue(path, meta).map(|_| meta.chunk_id)
    });

    assert_eq!(results.len(), 200);
    for (i, result) in results.iter().enumerate() {
        if i % 37 == 0 || (i >= 5 && (i - 5) % 53 == 0) {
            let error = result.as_ref().unwrap_err().to_string();
            assert!(error.contains(&paths[i].display().to_string()), "{error}");
        } else {
            assert_eq!(result.as_ref().unwrap(), &(i as u64), "result {i}");
            let meta: ChunkMetadata = json_file::read(&paths[i]).unwrap();
            assert_eq!((meta.chunk_id, meta.status), (i as u64, Status::Queued));
        }
    }
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}
