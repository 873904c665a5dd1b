//! An advisory lock on a chunk tree, held by every run that changes it.
//!
//! Two dispatch runs on one tree each sent every chunk, and their read-modify-write of
//! `metadata.json` lost updates (`attempts` among them): nothing told one run that the
//! other was there. A run that changes the tree (dispatch, callbacks, sync) now holds
//! [`TreeLock`] for as long as it changes it; a second run waits for it or is told
//! clearly that another run (with its pid) holds it.
//!
//! The lock is `flock` on `<base>/.panini.lock` (hidden, so scans and listings skip it,
//! and never tracked by git: status commits add only tracked files). `flock` belongs to
//! an open file description, so two acquisitions conflict even inside one process: two
//! threads exclude each other like two processes do. That also means a thread that
//! holds the lock and asks for it again would wait for itself forever; [`TreeLock::acquire`]
//! refuses that at once ([`TreeLockError::HeldByThisThread`]). Code that changes the
//! tree inside a run that already holds the lock takes a `&TreeLock` instead, as proof.

use std::fs::{self, File, TryLockError};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The lock file's name inside the base (`pending_compression/.panini.lock`).
pub const LOCK_FILE: &str = ".panini.lock";

/// How long library calls that take the lock themselves wait for another run by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10 * 60);

/// How [`TreeLock::acquire`] waits when another run holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: [`TreeLockError::Held`] at once.
    No,
    /// Until the other run releases it, however long that takes.
    Block,
    /// At most this long, then [`TreeLockError::Held`].
    Timeout(Duration),
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TreeLockError {
    /// Another run (another process, or another thread of this one) holds the lock.
    #[error(
        "{base}: another run is changing this chunk tree ({holder}; waited {waited:?}); \
         try again when it has finished (lock file {path})",
        holder = holder_text(.pid)
    )]
    Held {
        /// The chunk tree.
        base: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// The holder's process id, as it recorded it in the lock file.
        pid: Option<u32>,
        /// How long this call waited.
        waited: Duration,
    },
    /// The calling thread holds the lock already; waiting would never end.
    #[error(
        "{base}: this thread already holds the chunk tree lock; pass the TreeLock it holds \
         instead of taking it again"
    )]
    HeldByThisThread {
        /// The chunk tree.
        base: PathBuf,
    },
    /// A lock held for one tree was offered for another.
    #[error("the lock held is for {held}, not for {wanted}")]
    WrongTree {
        /// The tree the lock is held for.
        held: PathBuf,
        /// The tree that was to be changed.
        wanted: PathBuf,
    },
    /// Opening, locking or writing the lock file failed (the base does not exist, …).
    #[error("{path}: {source}")]
    Io {
        /// The lock file or base.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn holder_text(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}

/// Which lock files this process holds, and on which thread: only to turn a thread's
/// second acquisition from a deadlock into an error. Keyed by (device, inode).
static HELD: Mutex<Vec<((u64, u64), ThreadId)>> = Mutex::new(Vec::new());

/// The exclusive lock on one chunk tree; released when dropped.
#[derive(Debug)]
pub struct TreeLock {
    file: File,
    key: (u64, u64),
    base: PathBuf,
    base_real: PathBuf,
    path: PathBuf,
}

/// Writes `<base>/.gitignore` naming the lock file, when the tree has no `.gitignore`.
fn ignore_lock_file(base: &Path) -> io::Result<()> {
    let path = base.join(".gitignore");
    if path.exists() {
        return Ok(());
    }
    let text =
        format!("# Held by Panini runs that change this tree; never committed.\n/{LOCK_FILE}\n");
    crate::json_file::write_bytes_atomic(&path, text.as_bytes()).map_err(io::Error::other)
}

impl TreeLock {
    /// Takes the lock on the tree at `base` (which must exist), waiting as `wait` says,
    /// and records this process's id in the lock file for the runs that wait.
    pub fn acquire(base: &Path, wait: Wait) -> Result<Self, TreeLockError> {
        let started = Instant::now();
        let base_real = fs::canonicalize(base).map_err(|source| TreeLockError::Io {
            path: base.to_owned(),
            source,
        })?;
        let path = base.join(LOCK_FILE);
        let io = |source| TreeLockError::Io {
            path: path.clone(),
            source,
        };
        loop {
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            let key = file_key(&file).map_err(io)?;
            let me = std::thread::current().id();
            if held()
                .iter()
                .any(|&(held, thread)| held == key && thread == me)
            {
                return Err(TreeLockError::HeldByThisThread {
                    base: base.to_owned(),
                });
            }
            lock(&file, wait, started).map_err(|e| match e {
                LockFailure::Busy => TreeLockError::Held {
                    base: base.to_owned(),
                    path: path.clone(),
                    pid: read_pid(&path),
                    waited: started.elapsed(),
                },
                LockFailure::Io(source) => io(source),
            })?;
            // The file may have been deleted (and another made) while this run waited:
            // a lock on a file no longer at `path` excludes nobody, so start again.
            match fs::metadata(&path) {
                Ok(meta) if meta_key(&meta) == key => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            }
            held().push((key, me));
            let lock = TreeLock {
                file,
                key,
                base: base.to_owned(),
                base_real,
                path,
            };
            // Only informative (for the message a waiting run prints): a failure to
            // record it does not weaken the lock.
            let _ = lock.record_pid();
            // A user who runs `git add pending_compression` after a local dispatch must
            // not commit the lock file (runners would then fight over it in rebases).
            // Best effort, like the pid: the lock holds without it.
            let _ = ignore_lock_file(base);
            return Ok(lock);
        }
    }

    /// The tree, as it was given.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that this lock is the one for the tree at `base` (the same directory,
    /// whatever the spelling of the path), for functions that take a `&TreeLock` as
    /// proof that their caller holds it.
    pub fn check_covers(&self, base: &Path) -> Result<(), TreeLockError> {
        match fs::canonicalize(base) {
            Ok(real) if real == self.base_real => Ok(()),
            Ok(_) => Err(TreeLockError::WrongTree {
                held: self.base.clone(),
                wanted: base.to_owned(),
            }),
            Err(source) => Err(TreeLockError::Io {
                path: base.to_owned(),
                source,
            }),
        }
    }

    fn record_pid(&self) -> io::Result<()> {
        let mut file = &self.file;
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    }
}

impl Drop for TreeLock {
    fn drop(&mut self) {
        // Forget the pid first: a waiting run must not name a process that is gone.
        let _ = self.file.set_len(0);
        let me = std::thread::current().id();
        let mut held = held();
        // Dropped on another thread than it was taken on, the entry is the taker's.
        if let Some(i) = held
            .iter()
            .position(|&(key, thread)| key == self.key && thread == me)
            .or_else(|| held.iter().position(|&(key, _)| key == self.key))
        {
            held.swap_remove(i);
        }
        // Closing the file (after this) releases the flock.
    }
}

fn held() -> std::sync::MutexGuard<'static, Vec<((u64, u64), ThreadId)>> {
    // The list stays consistent whatever panicked while it was locked.
    HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum LockFailure {
    Busy,
    Io(io::Error),
}

fn lock(file: &File, wait: Wait, started: Instant) -> Result<(), LockFailure> {
    let deadline = match wait {
        Wait::Block => return file.lock().map_err(LockFailure::Io),
        Wait::No => started,
        Wait::Timeout(limit) => started + limit,
    };
    // flock has no timed wait: poll, from a few milliseconds up to a fifth of a second.
    let mut pause = Duration::from_millis(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(LockFailure::Io(e)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(LockFailure::Busy);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The pid a holder recorded, if it did and it is readable.
fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(unix)]
fn meta_key(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn meta_key(meta: &fs::Metadata) -> (u64, u64) {
    // No inode numbers: the file's creation time stands in for its identity.
    let created = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    (0, created)
}

fn file_key(file: &File) -> io::Result<(u64, u64)> {
    Ok(meta_key(&file.metadata()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_waits_or_is_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let first = TreeLock::acquire(base, Wait::No).unwrap();
        assert_eq!(read_pid(first.path()), Some(std::process::id()));

        // Another thread of this process conflicts like another process would.
        let base_owned = base.to_owned();
        let other = std::thread::spawn(move || {
            TreeLock::acquire(&base_owned, Wait::Timeout(Duration::from_millis(50)))
        })
        .join()
        .unwrap();
        match other {
            Err(TreeLockError::Held { pid, waited, .. }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert!(waited >= Duration::from_millis(50));
            }
            other => panic!("{other:?}"),
        }

        // The same thread asking again gets an error, not a deadlock.
        assert!(matches!(
            TreeLock::acquire(base, Wait::Block),
            Err(TreeLockError::HeldByThisThread { .. })
        ));
        first.check_covers(&base.join(".")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(matches!(
            first.check_covers(elsewhere.path()),
            Err(TreeLockError::WrongTree { .. })
        ));

        // A waiting thread gets it once the holder lets go.
        let base_owned = base.to_owned();
        let waiter = std::thread::spawn(move || {
            TreeLock::acquire(&base_owned, Wait::Timeout(Duration::from_secs(30))).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(30));
        drop(first);
        waiter.join().unwrap().unwrap();
        let again = TreeLock::acquire(base, Wait::No).unwrap();
        drop(again);
    }

    #[test]
    fn a_missing_base_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = TreeLock::acquire(&missing, Wait::No).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn the_lock_file_is_git_ignored_without_touching_an_existing_gitignore() {
        let dir = tempfile::tempdir().unwrap();
        drop(TreeLock::acquire(dir.path(), Wait::No).unwrap());
        let ignore = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
        assert!(ignore.lines().any(|l| l == "/.panini.lock"), "{ignore}");

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(".gitignore"), "mine\n").unwrap();
        drop(TreeLock::acquire(other.path(), Wait::No).unwrap());
        assert_eq!(
            std::fs::read_to_string(other.path().join(".gitignore")).unwrap(),
            "mine\n"
        );
    }
}
