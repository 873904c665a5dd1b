//! Objects of a local bucket and rebuilt files get the mode `cp` would give them: 0666
//! less the umask, and a rebuilt file that replaces one keeps that file's mode.
//!
//! The umask is per process, so the checks run in a child process started with its own
//! umask (`sh -c 'umask 027; exec <this test binary> …'`), as the ignored helper test.
#![cfg(unix)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use chunk_model::{Layout, Sha256Digest, object_keys};
use support::chunk_tree;
use uploader::{
    LocalDir, ObjectMeta, ObjectStore, ReconstructOptions, UploadOptions, Which, reconstruct,
    upload_chunk_dir,
};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn no_progress<T>(_: T) {}

#[test]
fn objects_and_rebuilt_files_get_the_mode_cp_gives() {
    let me = std::env::current_exe().unwrap();
    for (umask, expected) in [("027", "640"), ("002", "664")] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(&me)
            .args([
                "--exact",
                "modes_helper",
                "--include-ignored",
                "--nocapture",
            ])
            .env("MODES_EXPECTED", expected)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "umask {umask}: {log}");
        assert!(log.contains("1 passed"), "the helper ran: {log}");
    }
}

/// Run by the test above with a umask set; ignored otherwise.
#[tokio::test]
#[ignore = "helper run by objects_and_rebuilt_files_get_the_mode_cp_gives"]
async fn modes_helper() {
    let Ok(expected) = std::env::var("MODES_EXPECTED") else {
        return;
    };
    let expected = u32::from_str_radix(&expected, 8).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (tree, bucket) = (work.path().join("tree"), work.path().join("bucket"));
    let store = LocalDir::new(&bucket).unwrap();

    // One object put alone, a batch through put_many, and a file's chunks and recipe.
    let single = b"one object".to_vec();
    store
        .put(
            "status/single.json",
            Bytes::from(single.clone()),
            &ObjectMeta::plain(&single),
        )
        .await
        .unwrap();
    let batch: Vec<_> = (0..40)
        .map(|i| {
            let bytes = format!("object {i}").into_bytes();
            let meta = ObjectMeta::plain(&bytes);
            (format!("status/batch-{i}.json"), Bytes::from(bytes), meta)
        })
        .collect();
    for result in store.put_many(batch.clone()).await {
        result.unwrap();
    }
    let data = support::compressible(200_000, 3);
    chunk_tree::write(&tree, "movie", &data, 64 * 1024, true);
    upload_chunk_dir(
        &store,
        &Layout::new(&tree),
        "movie",
        &chunk_tree::zstd(),
        &UploadOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();

    let mut objects = vec![bucket.join("status/single.json")];
    objects.extend(batch.iter().map(|(key, _, _)| bucket.join(key)));
    objects.push(bucket.join(object_keys::recipe("movie", &Sha256Digest::of(&data))));
    for path in &objects {
        assert_eq!(mode(path), expected, "{}: {:o}", path.display(), mode(path));
    }

    // A new rebuilt file, then one rebuilt over a file whose mode it keeps.
    let out = work.path().join("movie.out");
    let options = ReconstructOptions::default();
    reconstruct(&store, "movie", Which::Newest, &out, &options, &no_progress)
        .await
        .unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
    assert_eq!(mode(&out), expected, "{:o}", mode(&out));
    fs::set_permissions(&out, fs::Permissions::from_mode(0o604)).unwrap();
    reconstruct(&store, "movie", Which::Newest, &out, &options, &no_progress)
        .await
        .unwrap();
    assert_eq!(mode(&out), 0o604, "{:o}", mode(&out));
}
