//! Files written through `json_file` and `fs_batch` get the mode `cp` would give them:
//! 0666 less the umask when new, the old file's mode when replacing one.
//!
//! The umask is per process, so these checks live in their own test binary and in one
//! test function: nothing else runs in this process while the umask is changed.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use chunk_model::{fs_batch, json_file};
use serde_json::{Value, json};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn new_files_get_0666_less_the_umask_and_replaced_files_keep_their_mode() {
    // SAFETY: `umask` only swaps the process's mask; it cannot fail and touches no
    // memory. The old mask is restored at the end.
    let old = unsafe { libc::umask(0o027) };
    let dir = tempfile::tempdir().unwrap();

    // A new document: 0666 & !027 = 0640 (tempfile alone gave 0600).
    let doc = dir.path().join("metadata.json");
    json_file::write_atomic(&doc, &json!({"status": "pending", "attempts": 0})).unwrap();
    assert_eq!(mode(&doc), 0o640);

    // Replacing it keeps whatever mode it has, even one the umask would not give.
    fs::set_permissions(&doc, fs::Permissions::from_mode(0o664)).unwrap();
    json_file::write_atomic(&doc, &json!({"status": "queued", "attempts": 1})).unwrap();
    assert_eq!(mode(&doc), 0o664);
    json_file::update(&doc, |v: &mut Value| {
        v["attempts"] = json!(2);
        Ok::<_, chunk_model::ModelError>(())
    })
    .unwrap();
    assert_eq!(mode(&doc), 0o664);

    // The batched writer (dispatch outcomes, sync) keeps each file's own mode.
    let docs: Vec<_> = (0..40)
        .map(|i| {
            let path = dir.path().join(format!("doc{i}.json"));
            json_file::write_atomic(&path, &json!({"n": i})).unwrap();
            let m = if i % 2 == 0 { 0o644 } else { 0o600 };
            fs::set_permissions(&path, fs::Permissions::from_mode(m)).unwrap();
            (path, m)
        })
        .collect();
    let paths: Vec<_> = docs.iter().map(|(p, _)| p.clone()).collect();
    for result in json_file::update_many(&paths, |_, v: &mut Value| {
        v["changed"] = json!(true);
        Ok::<_, chunk_model::ModelError>(())
    }) {
        result.unwrap();
    }
    for (path, m) in &docs {
        assert_eq!(mode(path), *m, "{}", path.display());
        assert_eq!(json_file::read::<Value>(path).unwrap()["changed"], true);
    }

    // A new file of a batch (the chunker's and the local bucket's writer).
    let written = fs_batch::write_unflushed(dir.path(), ".t-", b"x").unwrap();
    assert_eq!(mode(&written.path), 0o640);

    // With a more open umask, the more open mode.
    // SAFETY: as above.
    unsafe { libc::umask(0o002) };
    let open = dir.path().join("open.json");
    json_file::write_atomic(&open, &json!({})).unwrap();
    assert_eq!(mode(&open), 0o664);

    // SAFETY: as above.
    unsafe { libc::umask(old) };
}
