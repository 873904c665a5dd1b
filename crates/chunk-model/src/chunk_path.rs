//! Chunk paths from outside, and finding their files without leaving the tree.
//!
//! A webhook's `chunk_path` and `base_dir` and a callback's `chunk_path` name a directory
//! of the chunk tree relative to the repository root
//! (`pending_compression/<name>/chunk_NNNN`, `pending_compression/<name>`). They come
//! from outside, so this module is the one place that decides what such a path may be
//! and what it may reach; the worker (its checkout and its git reads) and the detector
//! (callbacks) both go through it.
//!
//! Two steps:
//!
//! - [`ChunkPath::parse`] checks the grammar, before any file is looked at: a non-empty
//!   relative path of `/`-separated components, none of them `..`, with no NUL and no
//!   backslash (the chunker never names a directory with one, and Windows tools read it
//!   as a separator). `.` components and repeated or trailing `/` are dropped, so the
//!   normal form is the one git trees and object keys use. The components are not
//!   otherwise restricted: a detector's `--include` pattern may reach a nested layout
//!   (`pending_compression/deep/x/chunk_0000`), and those paths were always accepted.
//! - [`TreeRoot`] resolves a parsed path under a root and hands out a file in the
//!   directory it names ([`TreeRoot::resolve_file`]). The directory, with every symbolic
//!   link on the way resolved, must lie strictly inside the root (or inside a narrower
//!   bound, [`TreeRoot::with_bound`]); the file must be a regular file and is refused when
//!   it is a symbolic link, wherever the link points.
//!
//! It knows file names of the layout and the file system, nothing of HTTP, git or who
//! asks: callers turn a [`ChunkPathError`] into their own error (the worker's `400`, the
//! detector's `CallbackError`).

use std::collections::HashMap;
use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::ModelError;

/// A checked, normalised path of a chunk tree directory, relative to the repository
/// root: `pending_compression/movie/chunk_0003`.
///
/// It holds no `..`, no `.`, no empty component, no NUL and no backslash, and is not
/// absolute; see the [module documentation](self) for the grammar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkPath(String);

impl ChunkPath {
    /// Checks `path` and returns it in normal form (`/`-separated, without `.` or empty
    /// components). `./pending_compression//a/chunk_0000/` is
    /// `pending_compression/a/chunk_0000`.
    pub fn parse(path: &str) -> Result<Self, ChunkPathError> {
        let refuse = |fault| {
            Err(ChunkPathError {
                path: path.to_owned(),
                fault,
            })
        };
        if path.contains('\0') {
            return refuse(ChunkPathFault::Nul);
        }
        if path.contains('\\') {
            return refuse(ChunkPathFault::Backslash);
        }
        if path.starts_with('/') {
            return refuse(ChunkPathFault::Absolute);
        }
        let mut parts = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => return refuse(ChunkPathFault::ParentDir),
                part => parts.push(part),
            }
        }
        if parts.is_empty() {
            return refuse(ChunkPathFault::Empty);
        }
        Ok(Self(parts.join("/")))
    }

    /// The normal form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, first to last; none is empty, `.` or `..`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for ChunkPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChunkPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for ChunkPath {
    type Err = ChunkPathError;

    fn from_str(path: &str) -> Result<Self, Self::Err> {
        Self::parse(path)
    }
}

impl From<ChunkPath> for String {
    fn from(path: ChunkPath) -> Self {
        path.0
    }
}

/// A directory that chunk paths are resolved under (the repository root, or a worker's
/// source root), and the directory they must stay inside, with both real paths found
/// once so that one `TreeRoot` serves many paths.
#[derive(Debug, Clone)]
pub struct TreeRoot {
    /// The root with every symbolic link resolved.
    root_real: PathBuf,
    /// The bound as given, for messages.
    bound: PathBuf,
    /// The bound with every symbolic link resolved.
    bound_real: PathBuf,
}

impl TreeRoot {
    /// Paths resolve under `root` and must stay inside it.
    pub fn new(root: &Path) -> Result<Self, ModelError> {
        Self::with_bound(root, root)
    }

    /// Paths resolve under `root` but must land inside `bound`, a directory below it: the
    /// detector resolves `pending_compression/…` from the repository root and accepts
    /// only what lies inside `pending_compression`.
    pub fn with_bound(root: &Path, bound: &Path) -> Result<Self, ModelError> {
        let real = |path: &Path| std::fs::canonicalize(path).map_err(|e| ModelError::io(path, e));
        Ok(Self {
            root_real: real(root)?,
            bound: bound.to_owned(),
            bound_real: real(bound)?,
        })
    }

    /// The real directory `path` names: it must exist, be a directory (after links) and
    /// lie strictly inside the bound, every symbolic link on the way resolved.
    ///
    /// Each component is looked at without following links (one `lstat` each); only a
    /// path that really goes through a symbolic link is resolved in full, and must still
    /// land inside the bound. Without links, a path with no `..` cannot leave the root.
    pub fn resolve_dir(&self, path: &ChunkPath) -> Result<PathBuf, ChunkPathError> {
        let mut real = self.root_real.clone();
        let mut is_dir = true;
        for part in path.components() {
            match self.step(path, &mut real, part)? {
                Step::Plain { is_dir: dir } => is_dir = dir,
                Step::Linked(resolved, dir) => {
                    (real, is_dir) = (resolved, dir);
                    break;
                }
            }
        }
        self.inside_dir(path, real, is_dir)
    }

    /// Looks at the next component `part` of `path`, `real` being the real path of the
    /// components before it: `real` gets `part` pushed, and the answer is whether it is a
    /// directory, or, when it is a symbolic link, the whole of `path` resolved.
    fn step(
        &self,
        path: &ChunkPath,
        real: &mut PathBuf,
        part: &str,
    ) -> Result<Step, ChunkPathError> {
        real.push(part);
        let meta = std::fs::symlink_metadata(&*real).map_err(|e| lookup(path, real, e))?;
        if meta.file_type().is_symlink() {
            let whole = self.root_real.join(path.as_str());
            let resolved = std::fs::canonicalize(&whole).map_err(|e| lookup(path, &whole, e))?;
            let is_dir = resolved.is_dir();
            return Ok(Step::Linked(resolved, is_dir));
        }
        Ok(Step::Plain {
            is_dir: meta.is_dir(),
        })
    }

    /// `real`, what `path` resolved to, when it is a directory strictly inside the bound.
    fn inside_dir(
        &self,
        path: &ChunkPath,
        real: PathBuf,
        is_dir: bool,
    ) -> Result<PathBuf, ChunkPathError> {
        if real == self.bound_real || !real.starts_with(&self.bound_real) {
            return Err(refuse(
                path,
                ChunkPathFault::Outside {
                    resolved: real,
                    bound: self.bound.clone(),
                },
            ));
        }
        if !is_dir {
            return Err(refuse(path, ChunkPathFault::NotADirectory { at: real }));
        }
        Ok(real)
    }

    /// The real path of `file` (a file name of the layout: [`DATA_FILE`],
    /// [`METADATA_FILE`], [`MANIFEST_FILE`]) in the directory `path` names, resolved as by
    /// [`resolve_dir`](Self::resolve_dir). The file must be a regular file; a symbolic
    /// link is refused even when it points inside the bound.
    ///
    /// [`DATA_FILE`]: crate::layout::DATA_FILE
    /// [`METADATA_FILE`]: crate::layout::METADATA_FILE
    /// [`MANIFEST_FILE`]: crate::layout::MANIFEST_FILE
    pub fn resolve_file(&self, path: &ChunkPath, file: &str) -> Result<PathBuf, ChunkPathError> {
        check_file_name(path, file)?;
        regular_file(path, self.resolve_dir(path)?.join(file))
    }

    /// [`resolve_file`](Self::resolve_file) for many paths, in order: the same answer for
    /// each, with the directories above the last component of each path looked at once
    /// per call rather than once per path. A chunk tree's chunks share their file's
    /// directory, so resolving a batch of them costs two `lstat`s a chunk (its directory
    /// and the file) instead of one per component and the file.
    ///
    /// Only what is plain is remembered: a directory on the way that is a symbolic link,
    /// or that cannot be looked at, sends each path through it the way of
    /// [`resolve_file`](Self::resolve_file), with its errors. The answers are those of
    /// one [`resolve_file`](Self::resolve_file) per path as long as the tree does not
    /// change during the call (callers hold the tree's lock).
    pub fn resolve_files<'p>(
        &self,
        paths: impl IntoIterator<Item = &'p ChunkPath>,
        file: &str,
    ) -> Vec<Result<PathBuf, ChunkPathError>> {
        // The real path of each parent seen, when it and every directory above it is a
        // plain directory (no link); `None` when the slow way must be taken.
        let mut parents: HashMap<&'p str, Option<PathBuf>> = HashMap::new();
        paths
            .into_iter()
            .map(|path| {
                check_file_name(path, file)?;
                let Some((parent, last)) = path.as_str().rsplit_once('/') else {
                    return self.resolve_file(path, file);
                };
                let known = parents
                    .entry(parent)
                    .or_insert_with(|| self.plain_dir(parent));
                let Some(parent_real) = known else {
                    return self.resolve_file(path, file);
                };
                let mut real = parent_real.clone();
                let dir = match self.step(path, &mut real, last)? {
                    Step::Linked(resolved, is_dir) => self.inside_dir(path, resolved, is_dir),
                    Step::Plain { is_dir } => self.inside_dir(path, real, is_dir),
                }?;
                regular_file(path, dir.join(file))
            })
            .collect()
    }

    /// The real path of `dir` (components of a parsed chunk path) when every component
    /// is a plain directory, not a symbolic link; `None` otherwise, or when one cannot be
    /// looked at.
    fn plain_dir(&self, dir: &str) -> Option<PathBuf> {
        let mut real = self.root_real.clone();
        for part in dir.split('/') {
            real.push(part);
            let meta = std::fs::symlink_metadata(&real).ok()?;
            if meta.file_type().is_symlink() || !meta.is_dir() {
                return None;
            }
        }
        Some(real)
    }
}

/// What one component of a path turned out to be.
enum Step {
    /// Not a symbolic link: the walk goes on (`is_dir`: it is a directory).
    Plain { is_dir: bool },
    /// A symbolic link: the whole path, resolved, and whether that is a directory.
    Linked(PathBuf, bool),
}

fn refuse(path: &ChunkPath, fault: ChunkPathFault) -> ChunkPathError {
    ChunkPathError {
        path: path.as_str().to_owned(),
        fault,
    }
}

/// A failed lookup of `at` on the way along `path`.
fn lookup(path: &ChunkPath, at: &Path, source: std::io::Error) -> ChunkPathError {
    match source.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => {
            refuse(path, ChunkPathFault::Missing { at: at.to_owned() })
        }
        _ => refuse(
            path,
            ChunkPathFault::Io {
                at: at.to_owned(),
                source,
            },
        ),
    }
}

/// `file` must be a single file name.
fn check_file_name(path: &ChunkPath, file: &str) -> Result<(), ChunkPathError> {
    if crate::layout::validate_name(file).is_err() {
        return Err(refuse(
            path,
            ChunkPathFault::FileName {
                name: file.to_owned(),
            },
        ));
    }
    Ok(())
}

/// `file`, in the directory `path` resolved to, when it is a regular file and not a
/// symbolic link.
fn regular_file(path: &ChunkPath, file: PathBuf) -> Result<PathBuf, ChunkPathError> {
    match std::fs::symlink_metadata(&file) {
        Ok(meta) if meta.file_type().is_symlink() => {
            Err(refuse(path, ChunkPathFault::Symlink { file }))
        }
        Ok(meta) if !meta.is_file() => Err(refuse(path, ChunkPathFault::NotAFile { file })),
        Ok(_) => Ok(file),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            Err(refuse(path, ChunkPathFault::Missing { at: file }))
        }
        Err(source) => Err(refuse(path, ChunkPathFault::Io { at: file, source })),
    }
}

/// A chunk path that was refused: the path as given, and why.
///
/// It reads `"<path>" <why>` (`"pending_compression/../x" contains '..'`), so a caller
/// puts the field's name in front: `chunk_path "pending_compression/../x" contains '..'`.
#[derive(Debug, thiserror::Error)]
#[error("{path:?} {fault}")]
pub struct ChunkPathError {
    /// The path as given.
    pub path: String,
    /// Why it was refused.
    pub fault: ChunkPathFault,
}

/// Why a chunk path was refused: its grammar ([`ChunkPath::parse`]), or what it resolves
/// to ([`TreeRoot`]).
#[derive(Debug, thiserror::Error)]
pub enum ChunkPathFault {
    /// Nothing but `.` and `/`, or nothing at all.
    #[error("is empty")]
    Empty,
    /// It starts with `/`.
    #[error("is absolute")]
    Absolute,
    /// A component is `..`.
    #[error("contains '..'")]
    ParentDir,
    /// It contains a NUL byte.
    #[error("contains a NUL byte")]
    Nul,
    /// It contains a backslash.
    #[error("contains a backslash (components are separated by '/')")]
    Backslash,
    /// A directory on the way, or the file, does not exist (or a component on the way
    /// is not a directory).
    #[error("names nothing: {at} does not exist")]
    Missing {
        /// The first path found missing.
        at: PathBuf,
    },
    /// Resolved, it is not strictly inside the bound (the bound itself included).
    #[error("resolves to {resolved}, which is not inside {bound}")]
    Outside {
        /// Where it leads, symbolic links resolved.
        resolved: PathBuf,
        /// The directory it must stay inside, as given.
        bound: PathBuf,
    },
    /// It names something that is not a directory.
    #[error("names {at}, which is not a directory")]
    NotADirectory {
        /// What it names, symbolic links resolved.
        at: PathBuf,
    },
    /// The file in it is a symbolic link.
    #[error("has {file} as a symbolic link, not a regular file")]
    Symlink {
        /// The link.
        file: PathBuf,
    },
    /// The file in it is not a regular file (a directory, a FIFO, a device).
    #[error("has {file}, which is not a regular file")]
    NotAFile {
        /// The file.
        file: PathBuf,
    },
    /// The file asked for is not a single file name (a caller's mistake).
    #[error("cannot hold a file named {name:?}")]
    FileName {
        /// The name asked for.
        name: String,
    },
    /// Looking a path up failed otherwise (permissions, I/O).
    #[error("cannot be looked up: {at}: {source}")]
    Io {
        /// The path looked up.
        at: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_normalises_and_refuses() {
        for (given, normal) in [
            (
                "pending_compression/movie/chunk_0003",
                "pending_compression/movie/chunk_0003",
            ),
            (
                "./pending_compression/a/chunk_0000/",
                "pending_compression/a/chunk_0000",
            ),
            (
                "pending_compression//a/./chunk_1",
                "pending_compression/a/chunk_1",
            ),
            (
                "pending_compression/deep/x/chunk_0000",
                "pending_compression/deep/x/chunk_0000",
            ),
            ("a", "a"),
            ("..a/b..", "..a/b.."),
        ] {
            let parsed = ChunkPath::parse(given).unwrap();
            assert_eq!(parsed.as_str(), normal, "{given:?}");
            assert_eq!(given.parse::<ChunkPath>().unwrap(), parsed);
        }
        for (bad, fault) in [
            ("", "is empty"),
            (".", "is empty"),
            ("./", "is empty"),
            ("/etc", "is absolute"),
            ("//etc", "is absolute"),
            ("..", "contains '..'"),
            ("../a", "contains '..'"),
            ("a/../b", "contains '..'"),
            ("a/b/..", "contains '..'"),
            ("a/b/../", "contains '..'"),
            ("a\0b", "NUL"),
            ("pending_compression/a/chunk_0000\0", "NUL"),
            ("..\\etc", "backslash"),
            ("pending_compression\\a\\chunk_0000", "backslash"),
            ("C:\\x", "backslash"),
        ] {
            let err = ChunkPath::parse(bad).unwrap_err();
            assert_eq!(err.path, bad);
            let text = err.to_string();
            assert!(text.contains(fault), "{bad:?}: {text}");
            assert!(text.starts_with(&format!("{bad:?} ")), "{text}");
        }
    }

    /// `resolve_files` answers each path exactly as `resolve_file` does, whatever the
    /// order and mix of plain chunks, links on the way, linked chunks and files, missing
    /// things and paths that leave the bound.
    #[cfg(unix)]
    #[test]
    fn resolving_a_batch_answers_as_one_path_at_a_time() {
        use crate::layout::{DATA_FILE, METADATA_FILE};
        use std::os::unix::fs::symlink;

        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let base = repo.join("pending_compression");
        for chunk in ["movie/chunk_0000", "movie/chunk_0001", "deep/x/chunk_0000"] {
            let chunk = base.join(chunk);
            std::fs::create_dir_all(&chunk).unwrap();
            std::fs::write(chunk.join(METADATA_FILE), b"{}").unwrap();
        }
        let outside = dir.path().join("elsewhere");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join(METADATA_FILE), b"{}").unwrap();
        symlink(base.join("movie"), base.join("alias")).unwrap();
        symlink(&outside, base.join("out")).unwrap();
        symlink(&outside, base.join("movie/chunk_0002")).unwrap();
        symlink(base.join("movie/chunk_0000"), base.join("movie/chunk_0003")).unwrap();
        std::fs::write(base.join("movie/chunk_0004"), b"a file").unwrap();
        std::fs::create_dir_all(base.join("movie/chunk_0005")).unwrap();
        symlink(
            base.join("movie/chunk_0000").join(METADATA_FILE),
            base.join("movie/chunk_0005").join(METADATA_FILE),
        )
        .unwrap();
        std::fs::write(base.join("plain_file"), b"not a directory").unwrap();

        let texts = [
            "pending_compression/movie/chunk_0000",
            "pending_compression/alias/chunk_0001",
            "pending_compression/movie/chunk_0001",
            "pending_compression/movie/chunk_0002",
            "pending_compression/movie/chunk_0003",
            "pending_compression/movie/chunk_0004",
            "pending_compression/movie/chunk_0005",
            "pending_compression/movie/chunk_0009",
            "pending_compression/out/x",
            "pending_compression/out",
            "pending_compression/plain_file/chunk_0000",
            "pending_compression/nothing/chunk_0000",
            "pending_compression/deep/x/chunk_0000",
            "pending_compression/alias/chunk_0000",
            "pending_compression",
            "movie",
            "pending_compression/movie/chunk_0000",
        ];
        let paths: Vec<ChunkPath> = texts.iter().map(|t| ChunkPath::parse(t).unwrap()).collect();
        let show = |r: &Result<PathBuf, ChunkPathError>| match r {
            Ok(path) => format!("ok {}", path.display()),
            Err(e) => format!("err {e}"),
        };
        for root in [
            TreeRoot::new(&repo).unwrap(),
            TreeRoot::with_bound(&repo, &base).unwrap(),
        ] {
            for file in [METADATA_FILE, DATA_FILE, "../x"] {
                let batch = root.resolve_files(&paths, file);
                assert_eq!(batch.len(), paths.len());
                for (path, got) in paths.iter().zip(&batch) {
                    assert_eq!(
                        show(got),
                        show(&root.resolve_file(path, file)),
                        "{path} {file}"
                    );
                }
            }
            let batch = root.resolve_files(&paths, METADATA_FILE);
            assert!(batch[0].is_ok() && batch[1].is_ok() && batch[12].is_ok());
            assert!(batch[3].is_err() && batch[5].is_err() && batch[6].is_err());
        }
    }
}
