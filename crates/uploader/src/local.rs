//! [`LocalDir`]: a plain directory as an object store.
//!
//! An object `chunks/<sha>.zstd` is the file `<root>/chunks/<sha>.zstd`, holding exactly
//! the stored bytes, so `zstd -d` works on it directly. Its metadata (codec, original size
//! and SHA-256, stored size and CRC32C) lives in a JSON sidecar
//! `<root>/.panini-meta/<key>.json`, written before the object becomes visible.
//!
//! Writes are atomic and create-only: the bytes go to a temporary file in the target's
//! directory and are flushed, then, under an advisory lock on `<root>/.panini-lock` (held
//! by every writer, in this process or another), the sidecar is renamed into place and
//! the object is hard-linked to its name, which fails rather than replace a file that is
//! there. A crash leaves at most a hidden temporary file or a sidecar without an object,
//! both of which the next put of that key replaces.
//!
//! [`ObjectStore::put_many`] does the same for a batch with the flushes shared: every
//! temporary file is written (on a few threads: creating files is kernel time that
//! overlaps well), then all are made durable with one flush (`syncfs` on Linux), then,
//! under the lock, renamed and linked into place, and the renames made durable with one
//! more flush. Nothing becomes visible before its bytes are durable.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chunk_model::fs_batch::{self, copy_error};
use serde::{Deserialize, Serialize};
use tempfile::TempPath;

use crate::store::{
    ObjectInfo, ObjectMeta, ObjectStore, PutItem, PutOutcome, check_existing, validate_key,
};
use crate::{Object, StoreError};

/// The directory of metadata sidecars, under the root.
pub const META_DIR: &str = ".panini-meta";
/// The lock file that serialises commits, under the root.
pub const LOCK_FILE: &str = ".panini-lock";
/// The prefix of temporary files, hidden from listings.
const TEMP_PREFIX: &str = ".panini-tmp-";

/// A directory used as an object store.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: Arc<PathBuf>,
}

/// A sidecar: everything [`ObjectInfo`] needs that the file itself does not say.
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    codec: chunk_model::Codec,
    original_size: u64,
    original_sha256: chunk_model::Sha256Digest,
    size: u64,
    crc32c: u32,
}

impl LocalDir {
    /// A store rooted at `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        Ok(Self {
            root: Arc::new(root),
        })
    }

    /// A store from `file:///absolute/path` or a plain path.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let path = match url.strip_prefix("file://") {
            Some(rest) if rest.starts_with('/') => rest,
            Some(_) => {
                return Err(StoreError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "a file URL needs an absolute path (file:///path)".into(),
                });
            }
            None => url,
        };
        if path.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                reason: "empty path".into(),
            });
        }
        Self::new(path)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file holding `key`'s bytes.
    pub fn object_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// `<root>/.panini-meta/<key>.json`, built in one allocation: every lookup of an
    /// object that is there reads its sidecar.
    fn sidecar_path(&self, key: &str) -> PathBuf {
        let root = self.root.as_os_str();
        let mut path = PathBuf::with_capacity(root.len() + META_DIR.len() + key.len() + 7);
        path.push(root);
        path.push(META_DIR);
        path.push(key);
        path.as_mut_os_string().push(".json");
        path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(LocalDir) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(this))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// `work` on every key, in order, in one task on the blocking pool.
    async fn each_blocking<T: Send + 'static>(
        &self,
        keys: &[String],
        work: fn(&LocalDir, &str) -> Result<T, StoreError>,
    ) -> Vec<Result<T, StoreError>> {
        let count = keys.len();
        let keys = keys.to_vec();
        match self
            .blocking(move |this| Ok(keys.iter().map(|key| work(&this, key)).collect()))
            .await
        {
            Ok(results) => results,
            // The blocking task died (a panic): every key failed.
            Err(e) => (0..count)
                .map(|_| Err(StoreError::Task(e.to_string())))
                .collect(),
        }
    }

    fn put_blocking(
        &self,
        key: &str,
        bytes: &[u8],
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError> {
        let path = self.object_path(key)?;
        let sidecar_path = self.sidecar_path(key);
        let crc32c = crc32c::crc32c(bytes);
        let size = bytes.len() as u64;
        if let Some(existing) = self.stat_blocking(key)? {
            return check_existing(&self.url(), key, &existing, size, crc32c, meta);
        }
        let dir = parent(&path);
        let sidecar_dir = parent(&sidecar_path);
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        fs::create_dir_all(sidecar_dir).map_err(|e| StoreError::io(sidecar_dir, e))?;

        // The slow part (writing and flushing the bytes) happens before taking the lock,
        // so concurrent puts of different keys overlap.
        let data = write_temp(dir, bytes)?;
        let sidecar = Sidecar {
            codec: meta.codec,
            original_size: meta.original_size,
            original_sha256: meta.original_sha256,
            size,
            crc32c,
        };
        let sidecar_bytes = sidecar_bytes(key, &sidecar)?;
        let sidecar_temp = write_temp(sidecar_dir, &sidecar_bytes)?;

        let lock = self
            .lock()
            .map_err(|e| StoreError::io(self.root.join(LOCK_FILE), e))?;
        let committed = (|| {
            if path.exists() {
                return Ok(false);
            }
            // The sidecar first: once the object is visible its metadata is too.
            sidecar_temp
                .persist(&sidecar_path)
                .map_err(|e| StoreError::io(&sidecar_path, e.error))?;
            match data.persist_noclobber(&path) {
                Ok(_) => {}
                // Only a writer that ignores the lock gets here; its object stays.
                Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(StoreError::io(&path, e.error)),
            }
            sync_dir(sidecar_dir)?;
            sync_dir(dir)?;
            Ok(true)
        })();
        drop(lock);
        if committed? {
            return Ok(PutOutcome::Created);
        }
        self.check_stored(key, size, crc32c, meta)
    }

    /// Takes the lock that serialises commits, waiting for it.
    fn lock(&self) -> io::Result<fs::File> {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(LOCK_FILE))?;
        lock.lock()?;
        Ok(lock)
    }

    /// The answer for a put that found `key` taken when it came to commit: whether the
    /// object there holds the same content.
    fn check_stored(
        &self,
        key: &str,
        size: u64,
        crc32c: u32,
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError> {
        let existing = self
            .stat_blocking(key)?
            .ok_or_else(|| StoreError::NotFound {
                store: self.url(),
                key: key.to_owned(),
            })?;
        check_existing(&self.url(), key, &existing, size, crc32c, meta)
    }

    /// The batched put: temporary files on a few threads, one flush, renames under the
    /// lock, one flush; results in item order.
    fn put_many_blocking(&self, items: &[PutItem]) -> Vec<Result<PutOutcome, StoreError>> {
        if items.len() <= 1 {
            // One item: its own flushes are cheaper than flushing the whole filesystem.
            return items
                .iter()
                .map(|(key, bytes, meta)| self.put_blocking(key, bytes, meta))
                .collect();
        }
        let mut results: Vec<Option<Result<PutOutcome, StoreError>>> =
            items.iter().map(|_| None).collect();

        // A key given again is put after the batch, so that it meets the first as an
        // existing object.
        let mut seen = HashSet::new();
        let (first, repeated): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|&index| seen.insert(items[index].0.as_str()));

        // What each new key needs written; an existing key is answered here.
        let prepared = fs_batch::map(first.clone(), |index| {
            let (key, bytes, meta) = &items[index];
            self.prepare(index, key, bytes, meta)
        });
        let mut to_write = Vec::new();
        for (index, prepared) in first.into_iter().zip(prepared) {
            match prepared {
                Ok(Prepared::Answered(outcome)) => results[index] = Some(outcome),
                Ok(Prepared::Write(write)) => to_write.push(write),
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        let dirs: BTreeSet<PathBuf> = to_write
            .iter()
            .flat_map(|w| [w.dir(), w.sidecar_dir()])
            .map(Path::to_owned)
            .collect();
        for dir in &dirs {
            if let Err(e) = fs::create_dir_all(dir) {
                for w in to_write
                    .iter()
                    .filter(|w| w.dir() == dir || w.sidecar_dir() == dir)
                {
                    results[w.index] = Some(Err(StoreError::io(dir, copy_error(&e))));
                }
            }
        }
        to_write.retain(|w| results[w.index].is_none());

        // Temporary files, not yet durable, grouped by filesystem.
        let written = fs_batch::map(to_write.iter().collect(), |w: &Write| {
            let unflushed = |dir: &Path, bytes: &[u8]| {
                fs_batch::write_unflushed(dir, TEMP_PREFIX, bytes)
                    .map_err(|e| StoreError::io(dir, e))
            };
            let data = unflushed(w.dir(), &items[w.index].1)?;
            let sidecar = unflushed(w.sidecar_dir(), &w.sidecar)?;
            Ok::<_, StoreError>([data, sidecar])
        });
        let mut groups: Vec<Group> = Vec::new();
        let mut staged: Vec<Staged> = Vec::new();
        for (write, written) in to_write.into_iter().zip(written) {
            let [data, sidecar] = match written {
                Ok(written) => written,
                Err(e) => {
                    // Its temporary files, if any, are deleted as they drop.
                    results[write.index] = Some(Err(e));
                    continue;
                }
            };
            let in_groups = [&data, &sidecar].map(|temp| {
                groups
                    .iter()
                    .position(|g| g.device == temp.device)
                    .unwrap_or_else(|| {
                        groups.push(Group {
                            device: temp.device,
                            fd: temp.file.try_clone(),
                            dirs: BTreeSet::new(),
                        });
                        groups.len() - 1
                    })
            });
            staged.push(Staged {
                write,
                data: data.path,
                sidecar: sidecar.path,
                groups: in_groups,
            });
        }

        // One flush per filesystem makes every temporary file durable.
        let flushed: Vec<io::Result<()>> = groups.iter().map(flush_files).collect();
        let (ready, unflushed): (Vec<Staged>, Vec<Staged>) = staged
            .into_iter()
            .partition(|s| s.groups.iter().all(|&g| flushed[g].is_ok()));
        for s in unflushed {
            let e = s.groups.iter().find_map(|&g| flushed[g].as_ref().err());
            let e = e.map_or_else(|| io::Error::other("flush failed"), copy_error);
            results[s.write.index] = Some(Err(StoreError::io(&s.data, e)));
        }

        // Under the lock: into place, and the renames made durable, before any other
        // writer can see the objects and answer "already stored".
        match self.lock() {
            Ok(lock) => {
                let committed = fs_batch::map(ready, commit);
                for (write, in_groups, outcome) in &committed {
                    if matches!(outcome, Ok(true)) {
                        groups[in_groups[0]].dirs.insert(write.dir().to_owned());
                        groups[in_groups[1]]
                            .dirs
                            .insert(write.sidecar_dir().to_owned());
                    }
                }
                let flushed: Vec<io::Result<()>> = groups.iter().map(flush_renames).collect();
                drop(lock);
                for (write, in_groups, outcome) in committed {
                    let (key, _, meta) = &items[write.index];
                    let flush_error = in_groups.iter().find_map(|&g| flushed[g].as_ref().err());
                    results[write.index] = Some(match (outcome, flush_error) {
                        (Ok(true), None) => Ok(PutOutcome::Created),
                        (Ok(true), Some(e)) => Err(StoreError::io(&write.path, copy_error(e))),
                        // Stored meanwhile by another writer: is it the same content?
                        (Ok(false), _) => self.check_stored(key, write.size, write.crc32c, meta),
                        (Err(e), _) => Err(e),
                    });
                }
            }
            Err(e) => {
                let lock_path = self.root.join(LOCK_FILE);
                for s in ready {
                    results[s.write.index] = Some(Err(StoreError::io(&lock_path, copy_error(&e))));
                }
            }
        }

        for index in repeated {
            let (key, bytes, meta) = &items[index];
            results[index] = Some(self.put_blocking(key, bytes, meta));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Task("a batch item was not put".into()))))
            .collect()
    }

    /// Validates an item and checks for an existing object: either the answer, or what
    /// to write.
    fn prepare(
        &self,
        index: usize,
        key: &str,
        bytes: &[u8],
        meta: &ObjectMeta,
    ) -> Result<Prepared, StoreError> {
        let path = self.object_path(key)?;
        let crc32c = crc32c::crc32c(bytes);
        let size = bytes.len() as u64;
        if let Some(existing) = self.stat_blocking(key)? {
            return Ok(Prepared::Answered(check_existing(
                &self.url(),
                key,
                &existing,
                size,
                crc32c,
                meta,
            )));
        }
        let sidecar = sidecar_bytes(
            key,
            &Sidecar {
                codec: meta.codec,
                original_size: meta.original_size,
                original_sha256: meta.original_sha256,
                size,
                crc32c,
            },
        )?;
        Ok(Prepared::Write(Write {
            index,
            path,
            sidecar_path: self.sidecar_path(key),
            sidecar,
            size,
            crc32c,
        }))
    }

    fn read_sidecar(&self, key: &str) -> Result<Option<Sidecar>, StoreError> {
        let path = self.sidecar_path(key);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::InvalidMetadata {
                        key: key.to_owned(),
                        field: "sidecar",
                        reason: format!("{}: {e}", path.display()),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    fn stat_blocking(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.object_path(key)?;
        let metadata = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        Ok(Some(info(
            key,
            metadata.len(),
            metadata.modified().ok(),
            self.read_sidecar(key)?.as_ref(),
        )))
    }

    /// Whether `key`'s file is there: [`stat_blocking`](Self::stat_blocking)'s answer
    /// without reading the sidecar.
    fn exists_blocking(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.object_path(key)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// The object first, then its sidecar: a sidecar without an object reads as no
    /// object, and a later put of the key replaces both.
    fn delete_blocking(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.object_path(key)?;
        let removed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let sidecar = self.sidecar_path(key);
        match fs::remove_file(&sidecar) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(sidecar, e)),
        }
        Ok(removed)
    }

    fn get_blocking(&self, key: &str) -> Result<Object, StoreError> {
        let path = self.object_path(key)?;
        let not_found = || StoreError::NotFound {
            store: self.url(),
            key: key.to_owned(),
        };
        let (bytes, modified) = match fs::File::open(&path) {
            Ok(mut file) => {
                let modified = file.metadata().and_then(|m| m.modified()).ok();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut bytes)
                    .map_err(|e| StoreError::io(&path, e))?;
                (bytes, modified)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let sidecar = self.read_sidecar(key)?;
        // A file without a sidecar was not stored through this crate: there is nothing
        // to check it against, and it carries no metadata.
        if let Some(sidecar) = &sidecar {
            verify(key, &bytes, sidecar.size, Some(sidecar.crc32c))?;
        }
        Ok(Object {
            info: info(key, bytes.len() as u64, modified, sidecar.as_ref()),
            bytes: Bytes::from(bytes),
        })
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // Walk only the directory the prefix names, not the whole tree.
        let start_dir = match prefix.rfind('/') {
            Some(i) => {
                validate_key(&prefix[..i])?;
                self.root.join(&prefix[..i])
            }
            None => self.root.to_path_buf(),
        };
        let mut keys = Vec::new();
        let mut stack = vec![start_dir];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                // Hidden names are the store's own files (temporaries, sidecars, lock).
                if name.starts_with('.') {
                    continue;
                }
                let file_type = entry
                    .file_type()
                    .map_err(|e| StoreError::io(entry.path(), e))?;
                if file_type.is_dir() {
                    stack.push(entry.path());
                } else if file_type.is_file()
                    && let Ok(relative) = entry.path().strip_prefix(self.root.as_path())
                    && let Some(key) = relative.to_str()
                    && key.starts_with(prefix)
                {
                    keys.push(key.to_owned());
                }
            }
        }
        keys.sort();
        let mut infos = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(info) = self.stat_blocking(&key)? {
                infos.push(info);
            }
        }
        Ok(infos)
    }
}

#[async_trait]
impl ObjectStore for LocalDir {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError> {
        let (key, meta) = (key.to_owned(), *meta);
        self.blocking(move |this| this.put_blocking(&key, &bytes, &meta))
            .await
    }

    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<PutOutcome, StoreError>> {
        let count = items.len();
        match self
            .blocking(move |this| Ok(this.put_many_blocking(&items)))
            .await
        {
            Ok(results) => results,
            // The blocking task died (a panic): nothing says which items were stored.
            Err(e) => (0..count)
                .map(|_| Err(StoreError::Task(e.to_string())))
                .collect(),
        }
    }

    fn batches(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        let key = key.to_owned();
        self.blocking(move |this| this.get_blocking(&key)).await
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |this| this.stat_blocking(&key)).await
    }

    /// All on one blocking thread: a `stat` of a file is a few microseconds, a hand-off
    /// to the blocking pool and back several times that.
    async fn stat_many(&self, keys: &[String]) -> Vec<Result<Option<ObjectInfo>, StoreError>> {
        self.each_blocking(keys, |this, key| this.stat_blocking(key))
            .await
    }

    /// All on one blocking thread, as `stat_many`, and no sidecar read.
    async fn exists_many(&self, keys: &[String]) -> Vec<Result<bool, StoreError>> {
        self.each_blocking(keys, |this, key| this.exists_blocking(key))
            .await
    }

    /// All on one blocking thread, as `stat_many`.
    async fn get_many(&self, keys: &[String]) -> Vec<Result<Object, StoreError>> {
        self.each_blocking(keys, |this, key| this.get_blocking(key))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |this| this.list_blocking(&prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.blocking(move |this| this.delete_blocking(&key)).await
    }
}

fn info(
    key: &str,
    size: u64,
    updated: Option<std::time::SystemTime>,
    sidecar: Option<&Sidecar>,
) -> ObjectInfo {
    ObjectInfo {
        key: key.to_owned(),
        size,
        crc32c: sidecar.map(|s| s.crc32c),
        meta: sidecar.map(|s| ObjectMeta {
            codec: s.codec,
            original_size: s.original_size,
            original_sha256: s.original_sha256,
        }),
        updated,
    }
}

/// Checks bytes read against the recorded size and CRC32C.
pub(crate) fn verify(
    key: &str,
    bytes: &[u8],
    size: u64,
    crc32c: Option<u32>,
) -> Result<(), StoreError> {
    if bytes.len() as u64 != size {
        return Err(StoreError::SizeMismatch {
            key: key.to_owned(),
            expected: size,
            actual: bytes.len() as u64,
        });
    }
    if let Some(expected) = crc32c {
        let actual = crc32c::crc32c(bytes);
        if actual != expected {
            return Err(StoreError::ChecksumMismatch {
                key: key.to_owned(),
                expected,
                actual,
            });
        }
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// A temporary file in `dir` holding `bytes`, flushed, with the mode `cp` gives a new
/// file (objects are never replaced, so there is no old mode to keep).
fn write_temp(dir: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, StoreError> {
    let mut temp = chunk_model::file_mode::temp_file_in(dir, TEMP_PREFIX)
        .map_err(|e| StoreError::io(dir, e))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| StoreError::io(temp.path(), e))?;
    Ok(temp)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    chunk_model::json_file::sync_dir(dir).map_err(|e| match e {
        chunk_model::ModelError::Io { path, source } => StoreError::Io { path, source },
        other => StoreError::Task(other.to_string()),
    })
}

fn sidecar_bytes(key: &str, sidecar: &Sidecar) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(sidecar).map_err(|e| StoreError::InvalidMetadata {
        key: key.to_owned(),
        field: "sidecar",
        reason: e.to_string(),
    })
}

/// A batch item after its checks: answered already, or to be written.
enum Prepared {
    Answered(Result<PutOutcome, StoreError>),
    Write(Write),
}

/// A batch item to write: where its object and sidecar go.
struct Write {
    /// Its place in the batch.
    index: usize,
    path: PathBuf,
    sidecar_path: PathBuf,
    sidecar: Vec<u8>,
    size: u64,
    crc32c: u32,
}

impl Write {
    fn dir(&self) -> &Path {
        parent(&self.path)
    }

    fn sidecar_dir(&self) -> &Path {
        parent(&self.sidecar_path)
    }
}

/// A batch item whose temporary files are written.
struct Staged {
    write: Write,
    data: TempPath,
    sidecar: TempPath,
    /// The groups (filesystems) of the data and sidecar files.
    groups: [usize; 2],
}

/// The files of a batch on one filesystem, flushed together.
struct Group {
    device: u64,
    /// A file there, for `syncfs`.
    fd: io::Result<fs::File>,
    /// Directories there that renames went into.
    dirs: BTreeSet<PathBuf>,
}

/// Makes a group's temporary files durable.
fn flush_files(group: &Group) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        fs_batch::flush_filesystem(group.fd.as_ref().map_err(copy_error)?)
    }
    // Each file was flushed as it was written.
    #[cfg(not(target_os = "linux"))]
    {
        let _ = group;
        Ok(())
    }
}

/// Makes the renames into a group's directories durable.
fn flush_renames(group: &Group) -> io::Result<()> {
    if group.dirs.is_empty() {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        fs_batch::flush_filesystem(group.fd.as_ref().map_err(copy_error)?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        for dir in &group.dirs {
            sync_dir(dir).map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }
}

/// Puts a staged item into place, under the lock: the sidecar, then the object, which
/// must not be there yet. `Ok(false)` when an object is there already.
fn commit(staged: Staged) -> (Write, [usize; 2], Result<bool, StoreError>) {
    let Staged {
        write,
        data,
        sidecar,
        groups,
    } = staged;
    let outcome = (|| {
        if write.path.exists() {
            // The temporary files are deleted as they drop.
            return Ok(false);
        }
        sidecar
            .persist(&write.sidecar_path)
            .map_err(|e| StoreError::io(&write.sidecar_path, e.error))?;
        match data.persist_noclobber(&write.path) {
            Ok(()) => Ok(true),
            // Only a writer that ignores the lock gets here; its object stays.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::io(&write.path, e.error)),
        }
    })();
    (write, groups, outcome)
}
