//! The pieces of writing many files durably at once, shared by the batched writers
//! (`json_file::update_many`, the uploader's local-directory store, the chunker):
//! temporary files written without a flush, writeback started early, one flush per
//! filesystem for all of them, and the file work spread over a few threads.
//!
//! Creating, renaming and deleting many small files is mostly kernel time (on ext4 after
//! heavy churn, finding a free inode among recently deleted ones), which overlaps well
//! across threads even on two cores: four threads measured 1.8× one for 10,000
//! metadata updates.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;

use tempfile::TempPath;

/// Below this many items per thread, a thread costs more than it saves.
const PER_THREAD: usize = 16;
/// Threads at most: enough to overlap kernel work, few enough not to crowd the CPUs.
const THREADS: usize = 4;

/// `f` applied to every item on up to four threads; the results in item order. A panic
/// in `f` is resumed on the calling thread.
pub fn map<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    map_parts(items, |part| part.into_iter().map(&f).collect())
}

/// `f` applied to up to four contiguous parts of `items`, each on its own thread (as
/// many threads as [`map`] would use); `f` returns one result per item of its part, and
/// the results come back in item order. For work that shares something along a part,
/// such as the directories a run of chunk paths goes through. A panic in `f` is resumed
/// on the calling thread.
pub fn map_parts<T: Send, U: Send>(items: Vec<T>, f: impl Fn(Vec<T>) -> Vec<U> + Sync) -> Vec<U> {
    let threads = (items.len() / PER_THREAD).clamp(1, THREADS);
    if threads == 1 {
        return f(items);
    }
    let per_part = items.len().div_ceil(threads);
    let mut items = items.into_iter();
    let parts: Vec<Vec<T>> = (0..threads)
        .map(|_| items.by_ref().take(per_part).collect())
        .collect();
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || f(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// A temporary file written but, on Linux, not yet flushed: [`flush_filesystem`] makes
/// a whole batch of them durable at once. Deleted when dropped unless renamed away.
#[derive(Debug)]
pub struct UnflushedFile {
    /// The open file: what [`flush_filesystem`] needs.
    pub file: File,
    /// Its path.
    pub path: TempPath,
    /// Its filesystem, to group a batch's files by flush.
    pub device: u64,
}

/// Writes `bytes` to a new temporary file named `<prefix>…` in `dir`, with the mode `cp`
/// gives a new file (0666 less the umask). Where there is no filesystem-wide flush (not
/// Linux), the file is flushed here instead.
pub fn write_unflushed(dir: &Path, prefix: &str, bytes: &[u8]) -> io::Result<UnflushedFile> {
    write_temp(dir, prefix, bytes, None)
}

/// [`write_unflushed`] for a file that will be renamed over `target`: the temporary file
/// is made beside `target` and gets `target`'s current mode when it exists, so that
/// replacing a file keeps its permissions.
pub fn write_unflushed_replacing(
    target: &Path,
    prefix: &str,
    bytes: &[u8],
) -> io::Result<UnflushedFile> {
    write_temp(parent_dir(target), prefix, bytes, mode_of(target)?)
}

/// [`write_unflushed_replacing`] for a caller that knows `target`'s permission bits
/// already (it has just read the file, and kept them from the same `fstat`): one `stat`
/// fewer per file.
pub fn write_unflushed_as(
    target: &Path,
    prefix: &str,
    bytes: &[u8],
    mode: Option<u32>,
) -> io::Result<UnflushedFile> {
    write_temp(parent_dir(target), prefix, bytes, mode)
}

/// The permission bits of `path` (links followed), as the file that replaces it must
/// have them; `None` when it does not exist, or where there are none (not Unix).
pub fn mode_of(path: &Path) -> io::Result<Option<u32>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(permission_bits(&meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The permission bits of a file, as [`mode_of`] reports them.
pub fn permission_bits(meta: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        Some(meta.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A new temporary file in `dir` holding `bytes`, given the permission bits `mode` (or
/// left with those it was created with: 0666 less the umask). One `fstat` gives both its
/// mode and its filesystem.
fn write_temp(
    dir: &Path,
    prefix: &str,
    bytes: &[u8],
    mode: Option<u32>,
) -> io::Result<UnflushedFile> {
    let mut temp = crate::file_mode::temp_file_in(dir, prefix)?;
    let meta = temp.as_file().metadata()?;
    #[cfg(unix)]
    if let Some(mode) = mode
        && permission_bits(&meta) != Some(mode)
    {
        use std::os::unix::fs::PermissionsExt as _;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    temp.write_all(bytes)?;
    #[cfg(not(target_os = "linux"))]
    temp.as_file().sync_all()?;
    let (file, path) = temp.into_parts();
    Ok(UnflushedFile {
        file,
        path,
        device: device_of(&meta),
    })
}

#[cfg(unix)]
fn device_of(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    meta.dev()
}

#[cfg(not(unix))]
fn device_of(_: &std::fs::Metadata) -> u64 {
    0
}

/// Makes everything written on `file`'s filesystem durable: one `syncfs` on Linux.
/// Elsewhere files were flushed as they were written, and renames need their
/// directories flushed by the caller.
pub fn flush_filesystem(file: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        Ok(rustix::fs::syncfs(file)?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        Ok(())
    }
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk now,
/// without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)` on Linux; nothing
/// elsewhere); `len` 0 means to the end of the file. The disk then works while the
/// caller goes on, and a later flush has only the rest to wait for. Advice only: it
/// makes nothing durable, and its errors are left to that flush to report.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: a plain syscall on a descriptor `file` keeps open for the call, with
        // no pointers; it touches no memory of this process.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// The same I/O error again, for each of the files one failure covers.
pub fn copy_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_the_order_of_the_items_whatever_the_split() {
        for n in [0, 1, 15, 16, 33, 64, 65, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = super::map(items, |i| i * 2);
            assert_eq!(
                doubled,
                (0..n).map(|i| i * 2).collect::<Vec<_>>(),
                "n = {n}"
            );
        }
    }
}
