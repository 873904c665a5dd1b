//! Reading and atomically writing the JSON documents of the chunk tree.
//!
//! Every write goes to a temporary file in the target's directory, is flushed to disk,
//! and renamed over the target, so a reader (a detector, a crashed run's successor)
//! sees the old document or the new one, never half of one.
//!
//! [`update`] writes back only what the caller changed: it compares the typed document
//! before and after the change and patches just those keys into the original JSON, so
//! fields it does not know, explicit nulls and key order all survive. [`update_many`]
//! does the same for a batch of files with one flush to disk for the whole batch.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tempfile::TempPath;

use crate::fs_batch::{self, UnflushedFile, copy_error, flush_filesystem, write_unflushed_as};
use crate::{ModelError, file_mode};

/// Reads and parses `path`.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let bytes = fs::read(path).map_err(|e| ModelError::io(path, e))?;
    parse(path, &bytes)
}

/// Parses `bytes` read from `path` (named in errors).
pub fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, ModelError> {
    serde_json::from_slice(bytes).map_err(|source| ModelError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Writes `value` to `path` atomically, pretty-printed with a final newline.
pub fn write_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), ModelError> {
    write_bytes_atomic(path, &to_pretty_bytes(path, value)?)
}

/// `value` pretty-printed with a final newline, as every document of the tree is written.
fn to_pretty_bytes<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<Vec<u8>, ModelError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| ModelError::Json {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// How temporary files beside their targets begin (hidden, and never a chunk tree).
const TEMP_PREFIX: &str = ".panini-tmp-";

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync,
/// rename, fsync of the directory. A file replaced keeps its permissions; a new one
/// gets those `cp` would give it (see [`file_mode`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = parent_dir(path);
    let mut temp = file_mode::temp_file_in(dir, TEMP_PREFIX).map_err(|e| ModelError::io(dir, e))?;
    // A replaced document keeps its mode; a new one gets 0666 less the umask.
    file_mode::keep_mode_of(path, temp.as_file())
        .and_then(|()| temp.write_all(bytes))
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| ModelError::io(temp.path(), e))?;
    temp.persist(path)
        .map_err(|e| ModelError::io(path, e.error))?;
    sync_dir(dir)
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Makes a rename in `dir` durable. Directories cannot be opened for syncing on every
/// platform; there the rename is as durable as the platform makes it.
pub fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    sync_dir_io(dir).map_err(|e| ModelError::io(dir, e))
}

fn sync_dir_io(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads `path` as a `T`, lets `change` modify it, and writes back only the keys whose
/// values changed. Nothing is written when nothing changed or `change` fails.
///
/// Returns what `change` returned.
pub fn update<T, R, E>(path: &Path, change: impl FnOnce(&mut T) -> Result<R, E>) -> Result<R, E>
where
    T: Serialize + DeserializeOwned,
    E: From<ModelError>,
{
    let bytes = fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let (result, patched) = apply(path, &bytes, change)?;
    if let Some(patched) = patched {
        write_bytes_atomic(path, &patched)?;
    }
    Ok(result)
}

/// [`update`] for many files at once, as crash-safe as one [`update`] per file but with
/// one flush to disk for the whole batch instead of two per file.
///
/// Each file is read once (on a few threads, `fs_batch::map`), however often it is
/// named. `change` is called once per path, in order, with the path and its document. Each
/// changed document goes to a temporary file beside its target; then all temporary
/// files are made durable together, renamed over their targets, and the renames made
/// durable together. On Linux "together" is one `syncfs` per filesystem (a filesystem
/// holding a single file of the batch gets the per-file flushes of [`update`], which
/// are cheaper than flushing the whole filesystem); elsewhere each file is flushed as
/// it is written and each directory once.
///
/// Returns one result per path, in order: what `change` returned, or why that file was
/// not updated (unreadable, malformed, `change` failed, or writing it failed). A failure
/// touches only its own file, except a failed flush, which fails every file it covered.
/// A file whose change fails or changes nothing is not rewritten. A path given twice
/// is changed twice, the second change seeing the first. No temporary file is left
/// behind, whatever fails.
pub fn update_many<T, R, E, P>(
    paths: &[P],
    mut change: impl FnMut(&Path, &mut T) -> Result<R, E>,
) -> Vec<Result<R, E>>
where
    T: Serialize + DeserializeOwned,
    E: From<ModelError>,
    P: AsRef<Path>,
{
    // Every file once, read on a few threads, with the permission bits its replacement
    // must keep (from the same `fstat`, so writing it back needs no `stat`).
    let mut by_path: HashMap<&Path, usize> = HashMap::new();
    let mut unique: Vec<&Path> = Vec::new();
    let slots: Vec<usize> = paths
        .iter()
        .map(|path| {
            let path = path.as_ref();
            *by_path.entry(path).or_insert_with(|| {
                unique.push(path);
                unique.len() - 1
            })
        })
        .collect();
    let read = fs_batch::map(unique.clone(), read_with_mode);
    let mut docs: Vec<Result<Doc<'_>, io::Error>> = unique
        .into_iter()
        .zip(read)
        .map(|(path, read)| {
            read.map(|(bytes, mode)| Doc {
                path,
                bytes,
                mode,
                results: Vec::new(),
            })
        })
        .collect();

    // Every change, in memory first: the documents to write and which results each
    // write answers for.
    let mut results: Vec<Result<R, E>> = Vec::with_capacity(paths.len());
    for (index, slot) in slots.into_iter().enumerate() {
        let doc = match &mut docs[slot] {
            Ok(doc) => doc,
            Err(e) => {
                results.push(Err(
                    ModelError::io(paths[index].as_ref(), copy_error(e)).into()
                ));
                continue;
            }
        };
        let path = doc.path;
        match apply(path, &doc.bytes, |typed| change(path, typed)) {
            Ok((result, patched)) => {
                if let Some(patched) = patched {
                    doc.bytes = patched;
                    doc.results.push(index);
                }
                results.push(Ok(result));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    // Files that could not be read take no further part.
    let docs: Vec<Doc<'_>> = docs.into_iter().filter_map(Result::ok).collect();

    let mut fail = |doc: &Doc<'_>, error: &io::Error| {
        for &index in &doc.results {
            results[index] = Err(ModelError::io(doc.path, copy_error(error)).into());
        }
    };

    // Temporary files, grouped by filesystem, not yet durable.
    let to_write: Vec<usize> = (0..docs.len())
        .filter(|&doc| !docs[doc].results.is_empty())
        .collect();
    let written = fs_batch::map(to_write.clone(), |doc| {
        let doc = &docs[doc];
        write_unflushed_as(doc.path, TEMP_PREFIX, &doc.bytes, doc.mode)
    });
    let mut staged: Vec<Staged> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for (doc, written) in to_write.into_iter().zip(written) {
        let d = &docs[doc];
        let UnflushedFile {
            file,
            path: temp,
            device,
        } = match written {
            Ok(written) => written,
            Err(e) => {
                fail(d, &e);
                continue;
            }
        };
        let group = match groups.iter().position(|g| g.device == device) {
            Some(group) => group,
            None => {
                groups.push(Group {
                    device,
                    fd: file,
                    files: 0,
                    ok: true,
                });
                groups.len() - 1
            }
        };
        groups[group].files += 1;
        staged.push(Staged { doc, temp, group });
    }

    for (index, group) in groups.iter_mut().enumerate() {
        if let Err(e) = flush_files(group) {
            group.ok = false;
            for s in staged.iter().filter(|s| s.group == index) {
                fail(&docs[s.doc], &e);
            }
        }
    }

    // Renames; a temporary file not renamed is deleted as its `TempPath` drops.
    let staged: Vec<Staged> = staged.into_iter().filter(|s| groups[s.group].ok).collect();
    let persisted = fs_batch::map(staged.iter().collect(), |s: &Staged| {
        std::fs::rename(&s.temp, docs[s.doc].path)
    });
    let mut renamed: Vec<(usize, usize)> = Vec::new();
    for (s, persisted) in staged.into_iter().zip(persisted) {
        match persisted {
            Ok(()) => {
                // Renamed away: nothing is left for the `TempPath` to delete.
                let _ = s.temp.keep();
                renamed.push((s.doc, s.group));
            }
            Err(e) => fail(&docs[s.doc], &e),
        }
    }

    for (index, group) in groups.iter().enumerate() {
        let members = || renamed.iter().filter(move |(_, g)| *g == index);
        let dirs: BTreeSet<&Path> = members()
            .map(|&(doc, _)| parent_dir(docs[doc].path))
            .collect();
        if dirs.is_empty() {
            continue;
        }
        if let Err(e) = flush_renames(group, &dirs) {
            for &(doc, _) in members() {
                fail(&docs[doc], &e);
            }
        }
    }
    results
}

/// Reads `path` whole, and its permission bits from the same `fstat`: open, `fstat`,
/// read until end of file, close (`fs::read` also asks the position with `lseek`).
fn read_with_mode(path: &Path) -> io::Result<(Vec<u8>, Option<u32>)> {
    use std::io::Read as _;
    let mut file = fs::File::open(path)?;
    let meta = file.metadata()?;
    // One byte more than the size, so that the read that finds the end needs no growth
    // (up to a size no document of the tree reaches; a larger file grows as it is read).
    let hint = usize::try_from(meta.len()).map_or(MAX_HINT, |len| len.min(MAX_HINT));
    let mut bytes = vec![0; hint + 1];
    let mut filled = 0;
    loop {
        if filled == bytes.len() {
            bytes.resize(bytes.len() * 2, 0);
        }
        match file.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(filled);
    Ok((bytes, fs_batch::permission_bits(&meta)))
}

/// The most [`read_with_mode`] allocates up front, whatever size a file claims.
const MAX_HINT: usize = 1 << 20;

/// One document of an [`update_many`] batch.
struct Doc<'a> {
    path: &'a Path,
    /// As read, then as each change left it.
    bytes: Vec<u8>,
    /// Its permission bits as read: what its replacement gets.
    mode: Option<u32>,
    /// The results that stand or fall with writing it: those whose change changed it.
    results: Vec<usize>,
}

/// A document's temporary file, written and closed.
struct Staged {
    doc: usize,
    temp: TempPath,
    group: usize,
}

/// The temporary files of a batch on one filesystem, flushed together.
struct Group {
    device: u64,
    /// The first temporary file written there: what `syncfs` needs, and the file
    /// itself when it is the only one.
    fd: fs::File,
    files: usize,
    /// The files are durable; `false` once flushing failed.
    ok: bool,
}

/// Makes a group's temporary files durable.
fn flush_files(group: &Group) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        if group.files == 1 {
            group.fd.sync_all()
        } else {
            flush_filesystem(&group.fd)
        }
    }
    // Each file was flushed as it was written.
    #[cfg(not(target_os = "linux"))]
    {
        let _ = group;
        Ok(())
    }
}

/// Makes the renames of a group into `dirs` durable.
fn flush_renames(group: &Group, dirs: &BTreeSet<&Path>) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if group.files > 1 {
        return flush_filesystem(&group.fd);
    }
    let _ = group;
    for dir in dirs {
        sync_dir_io(dir)?;
    }
    Ok(())
}

/// Applies `change` to the document `bytes` read from `path`. Returns what `change`
/// returned and, when it changed anything, the new document: the original JSON with
/// just the changed keys patched in, so fields `T` does not know, explicit nulls and
/// key order all survive.
fn apply<T, R, E>(
    path: &Path,
    bytes: &[u8],
    change: impl FnOnce(&mut T) -> Result<R, E>,
) -> Result<(R, Option<Vec<u8>>), E>
where
    T: Serialize + DeserializeOwned,
    E: From<ModelError>,
{
    let mut raw: serde_json::Map<String, Value> = match parse(path, bytes)? {
        Value::Object(map) => map,
        _ => {
            return Err(ModelError::NotAnObject {
                path: path.to_owned(),
            }
            .into());
        }
    };
    let mut typed: T = parse(path, bytes)?;
    let before = to_object(path, &typed)?;
    let result = change(&mut typed)?;
    let after = to_object(path, &typed)?;
    if before == after {
        return Ok((result, None));
    }
    for (key, value) in &after {
        if before.get(key) != Some(value) {
            raw.insert(key.clone(), value.clone());
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            // `shift_remove`: plain `remove` swaps the last key into the hole and so
            // reorders the document.
            raw.shift_remove(key);
        }
    }
    Ok((result, Some(to_pretty_bytes(path, &raw)?)))
}

fn to_object<T: Serialize>(
    path: &Path,
    value: &T,
) -> Result<serde_json::Map<String, Value>, ModelError> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ModelError::NotAnObject {
            path: path.to_owned(),
        }),
        Err(source) => Err(ModelError::Json {
            path: path.to_owned(),
            source,
        }),
    }
}
