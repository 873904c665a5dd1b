//! From what the user typed (files and folders) to the files to chunk, each with its
//! chunk tree name.
//!
//! Folders are walked with ripgrep's walker (the `ignore` crate), so they are filtered
//! the way users of git and ripgrep expect: `.gitignore`, `.ignore` and `.git/info/exclude`
//! rules (in any folder, git repository or not), hidden files and folders left out,
//! `--exclude` globs, symbolic links not followed. Files that cannot be chunked are
//! reported, not silently dropped: FIFOs, sockets and devices ("not a regular file"),
//! links not followed, empty files.
//!
//! # Names
//!
//! Every file gets the name of its directory `pending_compression/<name>/`
//! ([`assign_names`]); the rule is documented in `docs/FORMATS.md`:
//!
//! 1. The file stem (`notes.txt` → `notes`), when no other input has the same stem.
//! 2. Files whose stems collide are named by their path relative to the deepest folder
//!    that holds all of them, with [`NAME_SEPARATOR`] between the components and the
//!    extension kept: `a/x.txt` and `b/x.txt` → `a__x.txt` and `b__x.txt`; `x.txt` and
//!    `x.md` in one folder → `x.txt` and `x.md`.
//! 3. A file whose stem (rule 1) equals a name rule 2 gives another file takes its full
//!    file name instead: `adduser.local.conf` beside `adduser.local` (whose stem
//!    `adduser` collides) → `adduser.local.conf`, not `adduser.local`.
//! 4. In every case `\` becomes `_` and a leading `.` becomes `_` (names starting with
//!    `.` are reserved for in-progress trees).
//!
//! A name depends only on the set of input files, never on the order in which they were
//! given or found, or on the current directory. Files that would still share a name
//! (`a/b__c.txt` and `a__b/c.txt` in one collision group) get [`InputError::NameClash`]
//! rather than a name that changes with discovery order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use chunk_model::layout::validate_name;
use ignore::WalkBuilder;
use ignore::overrides::{Override, OverrideBuilder};

/// What joins the path components of a file's name when stems collide.
pub const NAME_SEPARATOR: &str = "__";

/// How [`expand_inputs`] walks folders.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    /// Leave out paths inside folders that match any of these globs, in `.gitignore`
    /// syntax relative to the folder given (`*.log` at any depth, `build/` folders
    /// only, `/out` only at the top). Files named explicitly are always taken.
    pub exclude: Vec<String>,
    /// Take hidden files and folders (names starting with `.`) too.
    pub hidden: bool,
    /// Do not read `.gitignore`, `.ignore` and git's exclude files.
    pub no_ignore: bool,
    /// Follow symbolic links inside folders (links named explicitly are always followed).
    pub follow_links: bool,
    /// Folders never entered, such as the chunk tree being written into (chunking `.`
    /// must not chunk `./pending_compression`). Compared by canonical path; ones that
    /// do not exist are ignored.
    pub skip_dirs: Vec<PathBuf>,
}

/// A file to chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The file, as given or as found under a folder given.
    pub path: PathBuf,
    /// Its chunk tree name ([`assign_names`]).
    pub name: String,
    /// Its size when it was found.
    pub size: u64,
}

/// Why a file found in a folder is left out. Not an error: the rest is chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A FIFO, socket or device: reading it would block or never end.
    NotARegularFile,
    /// A symbolic link, not followed ([`InputOptions::follow_links`]).
    SymbolicLink,
    /// An empty file: there is nothing to chunk.
    Empty,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NotARegularFile => "not a regular file",
            SkipReason::SymbolicLink => "symbolic link, not followed",
            SkipReason::Empty => "empty",
        })
    }
}

/// A path found in a folder and left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The path.
    pub path: PathBuf,
    /// Why.
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: skipped: {}", self.path.display(), self.reason)
    }
}

/// Why an input (or a path under it) cannot be chunked.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// An input does not exist or cannot be read.
    #[error("{path}: cannot open: {source}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An input named explicitly is a FIFO, socket or device.
    #[error("{path}: not a regular file")]
    NotARegularFile {
        /// The path.
        path: PathBuf,
    },
    /// Walking a folder failed somewhere (a subfolder that cannot be read, a broken
    /// `.gitignore`); the rest of the folder is still walked.
    #[error("{path}: {source}")]
    Walk {
        /// The folder given, or the path that failed when known.
        path: PathBuf,
        /// The walker's error.
        #[source]
        source: ignore::Error,
    },
    /// An `--exclude` glob does not parse.
    #[error("--exclude {glob:?}: {source}")]
    Exclude {
        /// The glob.
        glob: String,
        /// Why it does not parse.
        #[source]
        source: ignore::Error,
    },
    /// The naming rule gives these files the same name.
    #[error("{}: would all be named {name:?}; rename one or chunk them separately with --name", join_paths(.paths))]
    NameClash {
        /// The name.
        name: String,
        /// The files.
        paths: Vec<PathBuf>,
    },
    /// The naming rule gives this file a name that is not a valid chunk tree name.
    #[error("{path}: {source}")]
    InvalidName {
        /// The file.
        path: PathBuf,
        /// Why the name is refused.
        #[source]
        source: chunk_model::ModelError,
    },
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The files to chunk, and what was left out.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Files to chunk, each with a distinct name: inputs in the order given, the files
    /// of a folder sorted by path; a file reached twice is taken once, at its first place.
    pub files: Vec<InputFile>,
    /// Paths found in folders and left out.
    pub skipped: Vec<Skipped>,
    /// Inputs (or paths under them) that failed; the files listed in `files` are fine.
    pub errors: Vec<InputError>,
}

/// Expands `inputs` (files and folders) into the files to chunk and names them.
///
/// Only a bad `--exclude` glob fails the whole expansion; everything else that goes
/// wrong is in [`Inputs::errors`] or [`Inputs::skipped`], next to the files that are fine.
pub fn expand_inputs(inputs: &[PathBuf], options: &InputOptions) -> Result<Inputs, InputError> {
    let skip_dirs: HashSet<DirId> = options
        .skip_dirs
        .iter()
        .filter_map(|dir| fs::metadata(dir).ok())
        .map(|meta| DirId::of(&meta))
        .collect();
    let mut found = Vec::new();
    let mut out = Inputs::default();
    for input in inputs {
        // Follows a link: a link named explicitly is what the user means.
        let meta = match fs::metadata(input) {
            Ok(meta) => meta,
            Err(source) => {
                out.errors.push(InputError::Unreadable {
                    path: input.clone(),
                    source,
                });
                continue;
            }
        };
        if meta.is_dir() {
            walk(input, options, &skip_dirs, &mut found, &mut out)?;
        } else if meta.is_file() {
            // An empty file named explicitly is left to the chunker, which says so.
            found.push((input.clone(), meta.len()));
        } else {
            out.errors.push(InputError::NotARegularFile {
                path: input.clone(),
            });
        }
    }

    // The same file reached twice (`chunk dir dir/x.txt`, `chunk x.txt ./x.txt`) would
    // otherwise collide with itself.
    let mut seen = HashSet::new();
    let mut ids = FileIds::default();
    found.retain(|(path, _)| seen.insert(ids.of(path)));

    let paths: Vec<&Path> = found.iter().map(|(path, _)| path.as_path()).collect();
    for ((path, size), name) in found.iter().zip(assign_names(&paths)) {
        match name {
            Ok(name) => out.files.push(InputFile {
                path: path.clone(),
                name,
                size: *size,
            }),
            Err(error) => out.errors.push(error),
        }
    }
    // One error per clash, not one per file in it.
    let mut reported = HashSet::new();
    out.errors.retain(|error| match error {
        InputError::NameClash { name, .. } => reported.insert(name.clone()),
        _ => true,
    });
    Ok(out)
}

/// What identifies a folder however it was spelled, through whatever links: its device
/// and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DirId {
    device: u64,
    inode: u64,
}

impl DirId {
    fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        DirId {
            device: meta.dev(),
            inode: meta.ino(),
        }
    }
}

/// What identifies a file however it was spelled: its folder's [`DirId`] and its name
/// there, for a link those of its target. Two hard links stay two files (each has its
/// own name to rebuild), while `dir/x` reached again as `dir/../dir/x` or through a link
/// is the same one. (Canonical paths of every file did the same at one `readlink` per
/// path component, about 23 per file of a deep tree.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileId {
    dir: Option<DirId>,
    name: PathBuf,
}

/// Finds [`FileId`]s, with one `stat` per folder, not per file.
#[derive(Debug, Default)]
struct FileIds {
    dirs: HashMap<PathBuf, Option<DirId>>,
}

impl FileIds {
    fn of(&mut self, path: &Path) -> FileId {
        // A followed link counts as its target; links are few, so resolving them whole
        // costs little.
        let resolved;
        let path = match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => match path.canonicalize() {
                Ok(target) => {
                    resolved = target;
                    resolved.as_path()
                }
                Err(_) => path,
            },
            _ => path,
        };
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => (parent, name),
            // `..` or `/`: never a regular file; the path itself then.
            _ => {
                return FileId {
                    dir: None,
                    name: path.to_owned(),
                };
            }
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let dir = *self
            .dirs
            .entry(parent.to_owned())
            .or_insert_with(|| fs::metadata(parent).ok().map(|meta| DirId::of(&meta)));
        FileId {
            // A folder that cannot be looked at: the path as given is all there is.
            name: if dir.is_some() {
                PathBuf::from(name)
            } else {
                path.to_owned()
            },
            dir,
        }
    }
}

fn walk(
    dir: &Path,
    options: &InputOptions,
    skip_dirs: &HashSet<DirId>,
    found: &mut Vec<(PathBuf, u64)>,
    out: &mut Inputs,
) -> Result<(), InputError> {
    let mut builder = WalkBuilder::new(dir);
    builder
        .standard_filters(!options.no_ignore)
        // After standard_filters, which sets it too.
        .hidden(!options.hidden)
        // Users expect a folder's .gitignore to count even outside a git checkout
        // (a copied project, an unpacked archive).
        .require_git(false)
        .follow_links(options.follow_links)
        // A deterministic order, whatever order the filesystem lists entries in.
        .sort_by_file_name(|a, b| a.cmp(b))
        .overrides(excludes(dir, &options.exclude)?);
    if !skip_dirs.is_empty() {
        let skip_dirs = skip_dirs.clone();
        builder.filter_entry(move |entry| {
            !(entry.file_type().is_some_and(|t| t.is_dir())
                && fs::metadata(entry.path())
                    .is_ok_and(|meta| skip_dirs.contains(&DirId::of(&meta))))
        });
    }
    for entry in builder.build() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(source) => {
                out.errors.push(InputError::Walk {
                    path: error_path(&source).unwrap_or_else(|| dir.to_owned()),
                    source,
                });
                continue;
            }
        };
        let Some(file_type) = entry.file_type() else {
            continue; // stdin; never produced for a folder
        };
        let path = entry.into_path();
        let reason = if file_type.is_dir() {
            continue;
        } else if file_type.is_symlink() {
            // Only seen when links are not followed; a followed one reports its target.
            SkipReason::SymbolicLink
        } else if !file_type.is_file() {
            SkipReason::NotARegularFile
        } else {
            match fs::metadata(&path) {
                Ok(meta) if meta.len() == 0 => SkipReason::Empty,
                Ok(meta) => {
                    found.push((path, meta.len()));
                    continue;
                }
                Err(source) => {
                    out.errors.push(InputError::Unreadable { path, source });
                    continue;
                }
            }
        };
        out.skipped.push(Skipped { path, reason });
    }
    Ok(())
}

/// The path an error of the walker is about, when it names one.
fn error_path(error: &ignore::Error) -> Option<PathBuf> {
    match error {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => Some(child.clone()),
        _ => None,
    }
}

/// The `--exclude` globs as ignore rules of the walk of `dir`.
fn excludes(dir: &Path, globs: &[String]) -> Result<Override, InputError> {
    let mut builder = OverrideBuilder::new(dir);
    for glob in globs {
        // An override glob selects; a `!` one leaves out, as in .gitignore.
        builder
            .add(&format!("!{glob}"))
            .map_err(|source| InputError::Exclude {
                glob: glob.clone(),
                source,
            })?;
    }
    builder.build().map_err(|source| InputError::Exclude {
        glob: globs.join(" "),
        source,
    })
}

/// The chunk tree name of each of `paths` (distinct files), by the rule in the module
/// documentation; `Err` for a file the rule cannot name. Depends only on the set of
/// paths: the same files in another order get the same names.
pub fn assign_names(paths: &[&Path]) -> Vec<Result<String, InputError>> {
    let absolute: Vec<PathBuf> = paths.iter().map(|path| absolute(path)).collect();
    let stems: Vec<String> = absolute
        .iter()
        .map(|path| sanitize(&path.file_stem().unwrap_or_default().to_string_lossy()))
        .collect();
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, stem) in stems.iter().enumerate() {
        groups.entry(stem).or_default().push(i);
    }
    let mut names = stems.clone();
    for members in groups.values().filter(|members| members.len() > 1) {
        let folders: Vec<&Path> = members
            .iter()
            .map(|&i| absolute[i].parent().unwrap_or(Path::new("/")))
            .collect();
        let ancestor = common_ancestor(&folders);
        for &i in members {
            let relative = absolute[i].strip_prefix(&ancestor).unwrap_or(&absolute[i]);
            let parts: Vec<String> = relative
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            names[i] = sanitize(&parts.join(NAME_SEPARATOR));
        }
    }

    // A unique stem can still equal a name rule 2 gave: `adduser.local.conf` keeps the
    // stem `adduser.local`, which `adduser.local` gets when its stem `adduser` collides.
    // Such a file takes its full file name instead, until no stem clashes (each step
    // only moves files from stem to file name, so this ends).
    let mut by_stem_rule: Vec<bool> = stems
        .iter()
        .map(|stem| groups[stem.as_str()].len() == 1)
        .collect();
    loop {
        let mut count: HashMap<&str, usize> = HashMap::new();
        for name in &names {
            *count.entry(name).or_default() += 1;
        }
        let clashing: Vec<usize> = (0..paths.len())
            .filter(|&i| by_stem_rule[i] && count[names[i].as_str()] > 1)
            .collect();
        if clashing.is_empty() {
            break;
        }
        for i in clashing {
            by_stem_rule[i] = false;
            names[i] = sanitize(
                &absolute[i]
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
            );
        }
    }

    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        by_name.entry(name).or_default().push(i);
    }
    (0..paths.len())
        .map(|i| {
            let name = &names[i];
            let holders = &by_name[name.as_str()];
            if holders.len() > 1 {
                let mut clashing: Vec<PathBuf> =
                    holders.iter().map(|&j| paths[j].to_owned()).collect();
                clashing.sort();
                return Err(InputError::NameClash {
                    name: name.clone(),
                    paths: clashing,
                });
            }
            validate_name(name)
                .map(|()| name.clone())
                .map_err(|source| InputError::InvalidName {
                    path: paths[i].to_owned(),
                    source,
                })
        })
        .collect()
}

/// `path` made absolute against the current directory, with `.` and `..` resolved as
/// text (not through links: the name is about how the user sees the tree).
fn absolute(path: &Path) -> PathBuf {
    let joined = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The deepest folder that holds every one of `folders` (absolute paths).
fn common_ancestor(folders: &[&Path]) -> PathBuf {
    let mut ancestor: Vec<Component<'_>> = match folders.first() {
        Some(first) => first.components().collect(),
        None => return PathBuf::new(),
    };
    for folder in &folders[1..] {
        let shared = ancestor
            .iter()
            .zip(folder.components())
            .take_while(|(a, b)| **a == *b)
            .count();
        ancestor.truncate(shared);
    }
    ancestor.iter().collect()
}

/// A name the layout accepts: `\` (a separator on Windows) becomes `_`, and so does a
/// leading `.` (hidden names are the chunker's in-progress trees).
fn sanitize(name: &str) -> String {
    let name = name.replace('\\', "_");
    match name.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(paths: &[&str]) -> Vec<String> {
        let paths: Vec<&Path> = paths.iter().map(Path::new).collect();
        assign_names(&paths)
            .into_iter()
            .map(|name| name.unwrap_or_else(|e| format!("ERR {e}")))
            .collect()
    }

    #[test]
    fn unique_stems_are_the_names() {
        assert_eq!(
            names(&["/d/movie.mp4", "/e/notes.txt", "/d/archive.tar.gz"]),
            ["movie", "notes", "archive.tar"]
        );
    }

    #[test]
    fn colliding_stems_are_named_by_their_path_from_the_folder_that_holds_them() {
        assert_eq!(
            names(&["/d/a/x.txt", "/d/b/x.txt", "/d/y.txt"]),
            ["a__x.txt", "b__x.txt", "y"]
        );
        // Only the files whose stems collide change; the group's own common folder counts.
        assert_eq!(
            names(&["/d/a/deep/x.txt", "/d/a/other/x.md", "/d/x"]),
            ["a__deep__x.txt", "a__other__x.md", "x"]
        );
        assert_eq!(names(&["/d/x.txt", "/d/x.md"]), ["x.txt", "x.md"]);
    }

    #[test]
    fn names_do_not_depend_on_order_or_spelling() {
        let forward = names(&["/d/a/x.txt", "/d/b/x.txt", "/d/c/x.txt", "/d/z"]);
        let mut backward = names(&["/d/z", "/d/c/x.txt", "/d/b/x.txt", "/d/a/x.txt"]);
        backward.reverse();
        assert_eq!(forward, backward);
        // `..` and `.` are resolved before naming.
        assert_eq!(
            names(&["/d/a/../b/./x.txt", "/d/a/x.txt"]),
            ["b__x.txt", "a__x.txt"]
        );
    }

    #[test]
    fn relative_paths_name_as_their_absolute_selves() {
        assert_eq!(names(&["a/x.txt", "b/x.txt"]), ["a__x.txt", "b__x.txt"]);
    }

    #[test]
    fn names_are_valid_layout_names() {
        // Hidden files (taken with `hidden`) and hidden folders in a collision path.
        assert_eq!(names(&["/d/.bashrc"]), ["_bashrc"]);
        assert_eq!(
            names(&["/d/.config/x.txt", "/d/x.txt"]),
            ["_config__x.txt", "x.txt"]
        );
        assert_eq!(names(&["/d/a\\b.txt"]), ["a_b"]);
    }

    #[test]
    fn a_stem_equal_to_a_collision_name_takes_its_file_name() {
        // Found in /usr/share/doc/adduser/examples: `adduser` collides, so
        // `adduser.local` is named `adduser.local`, the stem of `adduser.local.conf`.
        assert_eq!(
            names(&[
                "/e/adduser.local",
                "/e/adduser.local.conf",
                "/e/adduser.conf"
            ]),
            ["adduser.local", "adduser.local.conf", "adduser.conf"]
        );
        // In any order.
        assert_eq!(
            names(&[
                "/e/adduser.local.conf",
                "/e/adduser.conf",
                "/e/adduser.local"
            ]),
            ["adduser.local.conf", "adduser.conf", "adduser.local"]
        );
    }

    #[test]
    fn names_that_still_clash_are_errors_naming_every_file() {
        let paths = [Path::new("/d/a/b__c.txt"), Path::new("/d/a__b/c.txt")];
        // Different stems (`b__c`, `c`): each keeps its stem, no clash.
        assert!(assign_names(&paths).iter().all(Result::is_ok));
        let paths = [
            Path::new("/d/a/b__c.txt"),
            Path::new("/d/a__b/c.txt"),
            Path::new("/d/b__c.txt"),
            Path::new("/d/c.txt"),
        ];
        let results = assign_names(&paths);
        // a/b__c.txt and b__c.txt collide as `b__c` → `a__b__c.txt`, `b__c.txt`;
        // a__b/c.txt and c.txt collide as `c` → `a__b__c.txt`, `c.txt`.
        for i in [0, 1] {
            match &results[i] {
                Err(InputError::NameClash { name, paths: clash }) => {
                    assert_eq!(name, "a__b__c.txt");
                    assert_eq!(clash.len(), 2);
                }
                other => panic!("{i}: {other:?}"),
            }
        }
        assert_eq!(results[2].as_deref().ok(), Some("b__c.txt"));
        assert_eq!(results[3].as_deref().ok(), Some("c.txt"));
    }
}
