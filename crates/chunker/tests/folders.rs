//! Folders and many files, on a real folder tree: what `expand_inputs` takes, skips and
//! names, and what `chunk_files` writes. Unix: the tree holds a FIFO and a symbolic link.
#![cfg(unix)]

use std::fs;
use std::path::{Path, PathBuf};

use chunk_model::layout::MANIFEST_FILE;
use chunk_model::{Manifest, Sha256Digest, Strategy};
use chunker::{
    ChunkOptions, ChunkerConfig, ChunkerError, InputError, InputOptions, SkipReason, chunk_files,
    expand_inputs,
};

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that lives for the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// A folder as users have them: nested folders, a .gitignore, hidden files, a FIFO, a
/// link, an empty file, and two `x.txt` in different folders.
fn tree() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("project");
    write(&root.join(".gitignore"), "*.log\nbuild/\n");
    write(&root.join("a/x.txt"), "alpha x\n".repeat(100));
    write(&root.join("b/x.txt"), "beta x\n".repeat(100));
    write(&root.join("b/deep/notes.md"), "# notes\n".repeat(50));
    write(&root.join("top.txt"), "top\n");
    write(&root.join("debug.log"), "ignored by .gitignore\n");
    write(&root.join("build/out.bin"), "ignored folder\n");
    write(&root.join(".hidden.txt"), "hidden\n");
    write(&root.join(".secret/y.txt"), "in a hidden folder\n");
    write(&root.join("vendor/lib.rs"), "excluded by a glob\n");
    write(&root.join("b/scratch.tmp"), "excluded by a glob\n");
    write(&root.join("empty.txt"), "");
    mkfifo(&root.join("pipe"));
    std::os::unix::fs::symlink(root.join("top.txt"), root.join("link.txt")).unwrap();
    (temp, root)
}

fn excluding() -> InputOptions {
    InputOptions {
        exclude: vec!["vendor/".into(), "*.tmp".into()],
        ..InputOptions::default()
    }
}

fn listed(inputs: &chunker::Inputs, root: &Path) -> Vec<(String, String)> {
    inputs
        .files
        .iter()
        .map(|f| {
            let path = f.path.strip_prefix(root).unwrap_or(&f.path);
            (path.display().to_string(), f.name.clone())
        })
        .collect()
}

#[test]
fn a_folder_is_walked_as_git_and_ripgrep_users_expect_and_colliding_stems_get_their_paths() {
    let (_temp, root) = tree();
    let inputs = expand_inputs(std::slice::from_ref(&root), &excluding()).unwrap();
    assert!(inputs.errors.is_empty(), "{:?}", inputs.errors);
    assert_eq!(
        listed(&inputs, &root),
        [
            ("a/x.txt".to_owned(), "a__x.txt".to_owned()),
            ("b/deep/notes.md".to_owned(), "notes".to_owned()),
            ("b/x.txt".to_owned(), "b__x.txt".to_owned()),
            ("top.txt".to_owned(), "top".to_owned()),
        ]
    );
    let mut skipped: Vec<(String, SkipReason)> = inputs
        .skipped
        .iter()
        .map(|s| {
            let path = s.path.strip_prefix(&root).unwrap();
            (path.display().to_string(), s.reason)
        })
        .collect();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        skipped,
        [
            ("empty.txt".to_owned(), SkipReason::Empty),
            ("link.txt".to_owned(), SkipReason::SymbolicLink),
            ("pipe".to_owned(), SkipReason::NotARegularFile),
        ]
    );
    assert_eq!(
        inputs
            .skipped
            .iter()
            .find(|s| s.path.ends_with("pipe"))
            .unwrap()
            .to_string(),
        format!(
            "{}: skipped: not a regular file",
            root.join("pipe").display()
        )
    );
    let sizes: u64 = inputs.files.iter().map(|f| f.size).sum();
    assert_eq!(sizes, 800 + 700 + 400 + 4);
}

#[test]
fn options_take_hidden_and_ignored_files_and_follow_links() {
    let (_temp, root) = tree();
    let options = InputOptions {
        hidden: true,
        no_ignore: true,
        follow_links: true,
        ..InputOptions::default()
    };
    let inputs = expand_inputs(std::slice::from_ref(&root), &options).unwrap();
    let names: Vec<String> = inputs.files.iter().map(|f| f.name.clone()).collect();
    for expected in [
        "_gitignore",
        "_hidden",
        "y",
        "debug",
        "out",
        "lib",
        "scratch",
    ] {
        assert!(
            names.contains(&expected.to_owned()),
            "{expected} in {names:?}"
        );
    }
    // The link is followed: `link.txt` and `top.txt` are two paths of one file, which is
    // taken once.
    assert_eq!(
        inputs
            .files
            .iter()
            .filter(|f| f.path.ends_with("top.txt") || f.path.ends_with("link.txt"))
            .count(),
        1
    );
    assert!(
        inputs
            .skipped
            .iter()
            .all(|s| s.reason != SkipReason::SymbolicLink)
    );
}

#[test]
fn names_are_the_same_however_the_inputs_are_given() {
    let (_temp, root) = tree();
    let whole = expand_inputs(std::slice::from_ref(&root), &excluding()).unwrap();
    // The two folders in the other order, one file twice, and a `..` detour.
    let parts = expand_inputs(
        &[
            root.join("b"),
            root.join("a/../a"),
            root.join("b/x.txt"),
            root.join("top.txt"),
        ],
        &excluding(),
    )
    .unwrap();
    let name_of = |inputs: &chunker::Inputs, suffix: &str| {
        inputs
            .files
            .iter()
            .find(|f| f.path.ends_with(suffix))
            .map(|f| f.name.clone())
            .unwrap()
    };
    for suffix in ["a/x.txt", "b/x.txt", "notes.md", "top.txt"] {
        assert_eq!(name_of(&whole, suffix), name_of(&parts, suffix), "{suffix}");
    }
    // `b/x.txt`, reached through `b` and named again, is taken once.
    assert_eq!(parts.files.len(), 4, "{:?}", parts.files);
    // And twice in a row gives the same.
    let again = expand_inputs(std::slice::from_ref(&root), &excluding()).unwrap();
    assert_eq!(whole.files, again.files);
}

#[test]
fn hard_links_are_two_files_and_a_folder_through_a_link_is_one() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("data");
    write(&root.join("one.txt"), "shared bytes\n".repeat(20));
    fs::hard_link(root.join("one.txt"), root.join("two.txt")).unwrap();
    std::os::unix::fs::symlink(&root, temp.path().join("alias")).unwrap();
    let inputs = expand_inputs(
        &[
            root.clone(),
            temp.path().join("alias/one.txt"),
            temp.path().join("alias/../data/two.txt"),
        ],
        &InputOptions::default(),
    )
    .unwrap();
    // Both names of the hard-linked file are rebuilt; the same names reached through a
    // link to their folder, or a detour, are not taken again.
    let mut names: Vec<&str> = inputs.files.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["one", "two"], "{:?}", inputs.files);
    assert!(inputs.errors.is_empty(), "{:?}", inputs.errors);
}

#[test]
fn explicit_inputs_that_cannot_be_chunked_are_errors_naming_them() {
    let (_temp, root) = tree();
    let missing = root.join("missing.txt");
    let inputs = expand_inputs(
        &[root.join("pipe"), missing.clone(), root.join("top.txt")],
        &excluding(),
    )
    .unwrap();
    assert_eq!(inputs.files.len(), 1);
    let messages: Vec<String> = inputs.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages[0],
        format!("{}: not a regular file", root.join("pipe").display())
    );
    assert!(
        messages[1].starts_with(&format!("{}: cannot open", missing.display())),
        "{}",
        messages[1]
    );
    assert!(matches!(
        expand_inputs(
            std::slice::from_ref(&root),
            &InputOptions {
                exclude: vec!["a{".into()],
                ..InputOptions::default()
            }
        ),
        Err(InputError::Exclude { .. })
    ));
}

#[test]
fn the_output_folder_inside_a_folder_given_is_not_walked() {
    let (_temp, root) = tree();
    let output = root.join("pending_compression");
    write(&output.join("old/chunk_0000/data.bin"), "a chunk");
    let options = InputOptions {
        skip_dirs: vec![output.clone()],
        ..excluding()
    };
    let inputs = expand_inputs(std::slice::from_ref(&root), &options).unwrap();
    assert!(
        inputs.files.iter().all(|f| !f.path.starts_with(&output)),
        "{:?}",
        inputs.files
    );
    assert_eq!(inputs.files.len(), 4);
}

fn manifest(dir: &Path) -> Manifest {
    chunk_model::json_file::read(&dir.join(MANIFEST_FILE)).unwrap()
}

#[test]
fn a_batch_writes_every_tree_under_its_name_and_fails_only_the_files_that_fail() {
    let (temp, root) = tree();
    write(
        &root.join("big.bin"),
        (0..40_000u32)
            .flat_map(u32::to_le_bytes)
            .collect::<Vec<u8>>(),
    );
    let mut inputs = expand_inputs(std::slice::from_ref(&root), &excluding())
        .unwrap()
        .files;
    assert_eq!(inputs.len(), 5);
    // Small chunks, so that `big.bin` (160,000 bytes) is a large file of the batch.
    let mut options = ChunkOptions::new(temp.path().join("pc"));
    options.config = ChunkerConfig {
        strategy: Strategy::Size,
        max_chunk_size: 16 << 10,
        ..ChunkerConfig::default()
    };
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    options.progress = Some(std::sync::Arc::new(move |p: chunker::Progress| {
        seen.lock().unwrap().push(p);
    }));
    // A name given twice: the second file fails, the first is chunked.
    let mut twice = inputs[0].clone();
    twice.path = root.join("top.txt");
    inputs.push(twice);

    let results = chunk_files(&inputs, &options);
    assert_eq!(results.len(), 6);
    for (input, result) in inputs.iter().zip(&results).take(5) {
        let report = result.as_ref().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.name, input.name);
        assert_eq!(report.source, input.path);
        assert_eq!(report.dir, options.output.join(&input.name));
        let manifest = manifest(&report.dir);
        assert_eq!(manifest.base_name, input.name);
        let bytes = fs::read(&input.path).unwrap();
        assert_eq!(manifest.file_hash, Some(Sha256Digest::of(&bytes)));
        assert_eq!(manifest.file_size, Some(bytes.len() as u64));
    }
    let big = results.iter().flatten().find(|r| r.name == "big").unwrap();
    assert_eq!(big.total_chunks, 10, "big.bin in 16 KiB chunks");
    assert!(matches!(
        results[5],
        Err(ChunkerError::NameCollision { .. })
    ));
    // Progress grew to the batch's bytes (the failed file counted as done).
    let calls = calls.lock().unwrap();
    let last = calls.last().unwrap();
    assert_eq!(last.bytes_done, last.total_bytes);
    assert!(calls.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done));
    // Only the finished trees are there: no temporary or parked ones.
    let mut listed: Vec<String> = fs::read_dir(&options.output)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["a__x.txt", "b__x.txt", "big", "notes", "top"]);
    drop(calls);

    // Again: every tree exists, so every file fails without force…
    inputs.pop();
    let again = chunk_files(&inputs, &options);
    assert!(
        again
            .iter()
            .all(|r| matches!(r, Err(ChunkerError::NameCollision { .. })))
    );
    // …and with force every tree is replaced, and nothing else is left behind.
    options.force = true;
    let forced = chunk_files(&inputs, &options);
    assert!(
        forced.iter().all(|r| r.as_ref().is_ok_and(|r| r.replaced)),
        "{forced:?}"
    );
    assert_eq!(fs::read_dir(&options.output).unwrap().count(), 5);
}
