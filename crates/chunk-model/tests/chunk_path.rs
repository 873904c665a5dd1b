//! `chunk_model::chunk_path`: what a chunk path from outside may reach, on a real tree
//! with real symbolic links.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use chunk_model::chunk_path::{ChunkPath, ChunkPathFault, TreeRoot};
use chunk_model::layout::{DATA_FILE, MANIFEST_FILE, METADATA_FILE};

/// `<tmp>/repo/pending_compression/movie/chunk_0000/{data.bin,metadata.json}`, the
/// file's `manifest.json`, and things outside the repository for links to reach.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let tree = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let chunk = tree.base().join("movie/chunk_0000");
        fs::create_dir_all(&chunk).unwrap();
        fs::write(chunk.join(DATA_FILE), b"bytes").unwrap();
        fs::write(chunk.join(METADATA_FILE), b"{}").unwrap();
        fs::write(tree.base().join("movie").join(MANIFEST_FILE), b"{}").unwrap();
        // Outside the repository: a chunk directory and a secret.
        let elsewhere = tree.dir.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join(DATA_FILE), b"secret").unwrap();
        fs::write(elsewhere.join(METADATA_FILE), b"{}").unwrap();
        // Inside the repository, outside the base.
        let beside = tree.repo().join("beside/chunk_0000");
        fs::create_dir_all(&beside).unwrap();
        fs::write(beside.join(DATA_FILE), b"beside").unwrap();
        tree
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn base(&self) -> PathBuf {
        self.repo().join("pending_compression")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("elsewhere")
    }
}

fn path(text: &str) -> ChunkPath {
    ChunkPath::parse(text).unwrap()
}

fn real(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap()
}

/// The fault `resolve_file(path, file)` refuses with, or `None` when it resolves.
fn fault(root: &TreeRoot, text: &str, file: &str) -> Option<ChunkPathFault> {
    let show = |r: &Result<PathBuf, _>| format!("{:?}", r.as_ref().map_err(ToString::to_string));
    let one = root.resolve_file(&path(text), file);
    let parsed = path(text);
    let batch = root.resolve_files([&parsed], file).pop().unwrap();
    assert_eq!(
        show(&batch),
        show(&one),
        "a batch of one answers as resolve_file"
    );
    one.err().map(|e| {
        assert_eq!(e.path, text, "the error names the path as given");
        e.fault
    })
}

#[test]
fn a_plain_chunk_resolves_to_its_real_files() {
    let t = Tree::new();
    let root = TreeRoot::new(&t.repo()).unwrap();
    let chunk = path("pending_compression/movie/chunk_0000");
    let dir = real(&t.base().join("movie/chunk_0000"));
    assert_eq!(root.resolve_dir(&chunk).unwrap(), dir);
    assert_eq!(
        root.resolve_file(&chunk, DATA_FILE).unwrap(),
        dir.join(DATA_FILE)
    );
    assert_eq!(
        root.resolve_file(&chunk, METADATA_FILE).unwrap(),
        dir.join(METADATA_FILE)
    );
    // A file's directory and its manifest, as a worker reads them.
    assert_eq!(
        root.resolve_file(&path("pending_compression/movie"), MANIFEST_FILE)
            .unwrap(),
        real(&t.base().join("movie")).join(MANIFEST_FILE)
    );
    // Normalised spellings reach the same file.
    assert_eq!(
        root.resolve_file(
            &path("./pending_compression//movie/./chunk_0000/"),
            DATA_FILE
        )
        .unwrap(),
        dir.join(DATA_FILE)
    );
}

#[test]
fn a_symlinked_chunk_directory_pointing_outside_is_refused() {
    let t = Tree::new();
    symlink(t.outside(), t.base().join("movie/chunk_0001")).unwrap();
    let root = TreeRoot::new(&t.repo()).unwrap();
    for file in [DATA_FILE, METADATA_FILE] {
        match fault(&root, "pending_compression/movie/chunk_0001", file) {
            Some(ChunkPathFault::Outside { resolved, bound }) => {
                assert_eq!(resolved, real(&t.outside()));
                assert_eq!(bound, t.repo());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_symlinked_directory_on_the_way_out_is_refused() {
    let t = Tree::new();
    // `pending_compression/up` leads to the temporary directory, above the repository.
    symlink(t.dir.path(), t.base().join("up")).unwrap();
    let root = TreeRoot::new(&t.repo()).unwrap();
    assert!(matches!(
        fault(&root, "pending_compression/up/elsewhere", DATA_FILE),
        Some(ChunkPathFault::Outside { .. })
    ));
    // Through the link and back into the repository is inside, and fine.
    assert_eq!(
        root.resolve_file(
            &path("pending_compression/up/repo/pending_compression/movie/chunk_0000"),
            DATA_FILE
        )
        .unwrap(),
        real(&t.base().join("movie/chunk_0000")).join(DATA_FILE)
    );
}

#[test]
fn a_symlinked_file_is_refused_wherever_it_points() {
    let t = Tree::new();
    let chunk = t.base().join("movie/chunk_0002");
    fs::create_dir_all(&chunk).unwrap();
    // data.bin leads out of the tree; metadata.json to a file inside it.
    symlink(t.outside().join(DATA_FILE), chunk.join(DATA_FILE)).unwrap();
    symlink(
        t.base().join("movie/chunk_0000").join(METADATA_FILE),
        chunk.join(METADATA_FILE),
    )
    .unwrap();
    let root = TreeRoot::new(&t.repo()).unwrap();
    for file in [DATA_FILE, METADATA_FILE] {
        match fault(&root, "pending_compression/movie/chunk_0002", file) {
            Some(ChunkPathFault::Symlink { file: link }) => {
                assert_eq!(link, real(&chunk).join(file));
            }
            other => panic!("{file}: {other:?}"),
        }
    }
    let err = root
        .resolve_file(&path("pending_compression/movie/chunk_0002"), DATA_FILE)
        .unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn a_symlink_that_stays_inside_is_followed() {
    let t = Tree::new();
    symlink(t.base().join("movie"), t.base().join("alias")).unwrap();
    let root = TreeRoot::new(&t.repo()).unwrap();
    assert_eq!(
        root.resolve_file(&path("pending_compression/alias/chunk_0000"), DATA_FILE)
            .unwrap(),
        real(&t.base().join("movie/chunk_0000")).join(DATA_FILE)
    );
    // The root itself reached through a link resolves the same.
    let linked = t.dir.path().join("via_link");
    symlink(t.repo(), &linked).unwrap();
    let root = TreeRoot::new(&linked).unwrap();
    assert_eq!(
        root.resolve_file(&path("pending_compression/movie/chunk_0000"), DATA_FILE)
            .unwrap(),
        real(&t.base().join("movie/chunk_0000")).join(DATA_FILE)
    );
}

#[test]
fn a_bound_narrower_than_the_root_is_enforced() {
    let t = Tree::new();
    symlink(t.repo().join("beside"), t.base().join("sideways")).unwrap();
    let root = TreeRoot::with_bound(&t.repo(), &t.base()).unwrap();
    assert!(
        root.resolve_file(&path("pending_compression/movie/chunk_0000"), DATA_FILE)
            .is_ok()
    );
    for outside in [
        // In the repository, outside the base: plainly, and through a link.
        "beside/chunk_0000",
        "pending_compression/sideways/chunk_0000",
        // The base itself is not a chunk directory inside it.
        "pending_compression",
    ] {
        match root.resolve_dir(&path(outside)).map_err(|e| e.fault) {
            Err(ChunkPathFault::Outside { bound, .. }) => assert_eq!(bound, t.base()),
            other => panic!("{outside}: {other:?}"),
        }
    }
    // Without the narrower bound the same path is fine.
    let root = TreeRoot::new(&t.repo()).unwrap();
    assert!(
        root.resolve_file(&path("beside/chunk_0000"), DATA_FILE)
            .is_ok()
    );
}

#[test]
fn missing_and_wrong_kinds_of_entries_are_refused() {
    let t = Tree::new();
    let movie = t.base().join("movie");
    fs::create_dir_all(movie.join("chunk_0003").join(DATA_FILE)).unwrap();
    symlink(t.dir.path().join("nowhere"), movie.join("dangling")).unwrap();
    symlink("looped", movie.join("looped")).unwrap();
    let root = TreeRoot::new(&t.repo()).unwrap();
    type Expect = fn(&ChunkPathFault) -> bool;
    let cases: [(&str, &str, Expect); 7] = [
        ("pending_compression/movie/chunk_0099", DATA_FILE, |f| {
            matches!(f, ChunkPathFault::Missing { .. })
        }),
        // A directory whose file is missing.
        ("pending_compression/movie", DATA_FILE, |f| {
            matches!(f, ChunkPathFault::Missing { .. })
        }),
        // A file on the way.
        (
            "pending_compression/movie/manifest.json/x",
            DATA_FILE,
            |f| matches!(f, ChunkPathFault::Missing { .. }),
        ),
        // The path names a file, not a directory.
        ("pending_compression/movie/manifest.json", DATA_FILE, |f| {
            matches!(f, ChunkPathFault::NotADirectory { .. })
        }),
        ("pending_compression/movie/chunk_0003", DATA_FILE, |f| {
            matches!(f, ChunkPathFault::NotAFile { .. })
        }),
        ("pending_compression/movie/dangling", DATA_FILE, |f| {
            matches!(f, ChunkPathFault::Missing { .. })
        }),
        ("pending_compression/movie/looped", DATA_FILE, |f| {
            matches!(f, ChunkPathFault::Io { .. })
        }),
    ];
    for (text, file, expected) in cases {
        let got = fault(&root, text, file);
        assert!(got.as_ref().is_some_and(expected), "{text}: {got:?}");
    }
    // Only a single file name can be asked for.
    for name in ["../data.bin", "", "a/b"] {
        assert!(matches!(
            fault(&root, "pending_compression/movie/chunk_0000", name),
            Some(ChunkPathFault::FileName { .. })
        ));
    }
    assert!(TreeRoot::new(&t.dir.path().join("no_such_root")).is_err());
}

#[test]
fn escapes_are_refused_before_the_file_system_is_touched() {
    let t = Tree::new();
    let outside = t.outside().join(DATA_FILE);
    let absolute = outside.to_str().unwrap();
    for (text, expected) in [
        (
            "pending_compression/../../elsewhere",
            ChunkPathFault::ParentDir,
        ),
        ("../elsewhere", ChunkPathFault::ParentDir),
        (
            "pending_compression/movie/../../../elsewhere",
            ChunkPathFault::ParentDir,
        ),
        (absolute, ChunkPathFault::Absolute),
        ("/", ChunkPathFault::Absolute),
        (
            "pending_compression/movie/chunk_0000\0/x",
            ChunkPathFault::Nul,
        ),
        (
            "pending_compression\\movie\\chunk_0000",
            ChunkPathFault::Backslash,
        ),
        ("..\\..\\elsewhere", ChunkPathFault::Backslash),
        ("", ChunkPathFault::Empty),
        ("./", ChunkPathFault::Empty),
        (".//.", ChunkPathFault::Empty),
    ] {
        let err = ChunkPath::parse(text).unwrap_err();
        assert_eq!(err.path, text);
        assert_eq!(
            std::mem::discriminant(&err.fault),
            std::mem::discriminant(&expected),
            "{text:?}: {err}"
        );
    }
    // Empty components are dropped, never read as the root.
    assert_eq!(
        path("pending_compression//movie///chunk_0000").as_str(),
        "pending_compression/movie/chunk_0000"
    );
}
