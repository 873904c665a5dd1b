//! `panini chunk DIR` and `panini pipeline DIR` (issue #17, folders and many files): the
//! built binary on a real folder tree with nested folders, a .gitignore, hidden files,
//! an excluded folder and two files named `x.txt`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn panini(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_panini"))
        .args(args)
        .current_dir(cwd)
        // Nothing from the developer's shell decides what these runs do.
        .env_remove("GOOGLE_ONE_BUCKET")
        .env_remove("STORAGE_EMULATOR_HOST")
        .env_remove("COLAB_AUTH_TOKEN")
        .env_remove("PANINI_WEBHOOK_SECRET")
        .env_remove("RUST_LOG")
        .output()
        .expect("the panini binary runs")
}

fn expect_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// The files a user expects chunked, by the name each gets, and the ones left out.
fn folder(root: &Path) -> Vec<(&'static str, PathBuf)> {
    write(&root.join(".gitignore"), "*.log\n");
    write(&root.join("debug.log"), "ignored\n");
    write(&root.join(".env"), "hidden\n");
    write(&root.join("vendor/big.txt"), "excluded\n");
    let files = [
        ("a__x.txt", "a/x.txt"),
        ("b__deep__x.txt", "b/deep/x.txt"),
        ("notes", "b/notes.md"),
        ("data", "data.bin"),
    ];
    for (i, (_, path)) in files.iter().enumerate() {
        // Distinct contents, a few hundred KiB in all, one file over a chunk.
        let len = if i == 3 { 300_000 } else { 5_000 + i * 1_000 };
        let bytes: Vec<u8> = (0..len).map(|j| (j * 31 + i * 7) as u8).collect();
        write(&root.join(path), bytes);
    }
    files
        .into_iter()
        .map(|(name, path)| (name, root.join(path)))
        .collect()
}

#[test]
fn chunk_dir_names_every_file_distinctly_and_leaves_out_what_users_expect() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("project");
    let files = folder(&root);
    let out = panini(
        &[
            "chunk",
            "project",
            "--exclude",
            "vendor/",
            "--chunk-size",
            "128K",
            "--json",
        ],
        temp.path(),
    );
    expect_success(&out, "chunk DIR");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = report["chunked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    expected.sort();
    assert_eq!(names, expected);
    let mut trees: Vec<String> = fs::read_dir(temp.path().join("pending_compression"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    trees.sort();
    assert_eq!(trees, expected, "only finished trees, one per file");
    for (name, path) in &files {
        let manifest: serde_json::Value = serde_json::from_slice(
            &fs::read(
                temp.path()
                    .join("pending_compression")
                    .join(name)
                    .join("manifest.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            manifest["file_size"].as_u64(),
            Some(fs::metadata(path).unwrap().len()),
            "{name}"
        );
    }

    // The same folder again names the same trees: without --force, all exist.
    let again = panini(&["chunk", "project", "--exclude", "vendor/"], temp.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("a__x.txt: already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn pipeline_dir_rebuilds_every_file_of_the_folder() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("project");
    let files = folder(&root);
    // The work directory inside the folder given: never walked.
    let work = root.join("work");
    let out = panini(
        &[
            "pipeline",
            "project",
            "--exclude",
            "vendor/",
            "--work-dir",
            "project/work",
            "--workers",
            "1",
            "--engine",
            "cpu",
            "--chunk-size",
            "128K",
            "--json",
        ],
        temp.path(),
    );
    expect_success(&out, "pipeline DIR");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["files"].as_array().unwrap();
    assert_eq!(rows.len(), files.len(), "{rows:?}");
    assert!(rows.iter().all(|r| r["verified"] == true), "{rows:?}");

    // Rebuild every file from the bucket alone and compare it byte for byte.
    let rebuilt = temp.path().join("rebuilt");
    fs::create_dir(&rebuilt).unwrap();
    for (name, source) in &files {
        let target = rebuilt.join(name);
        let out = panini(
            &[
                "reconstruct",
                name,
                "--bucket",
                work.join("bucket").to_str().unwrap(),
                "--output",
                target.to_str().unwrap(),
            ],
            temp.path(),
        );
        expect_success(&out, &format!("reconstruct {name}"));
        let cmp = Command::new("cmp")
            .arg(source)
            .arg(&target)
            .status()
            .unwrap();
        assert!(
            cmp.success(),
            "{name}: rebuilt bytes differ from {}",
            source.display()
        );
    }
}
