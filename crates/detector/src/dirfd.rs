//! Reading chunk files relative to an open directory.
//!
//! A scan opens two files per chunk (`metadata.json`, and a stat of `data.bin`). Given
//! by full path, each makes the kernel walk every component again; on a tree of 100,000
//! chunks that walk is the largest single cost of the scan. Opening them relative to
//! the already-open file directory (`openat`) walks two components instead. Elsewhere
//! than Unix the plain paths are used.

use std::io;
use std::path::Path;

/// An open directory, or nothing where `openat` is not available.
#[derive(Debug)]
pub(crate) struct DirFd {
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
}

/// What a stat says about a file.
pub(crate) struct FileStat {
    pub(crate) is_file: bool,
    pub(crate) len: u64,
}

impl DirFd {
    /// Opens `path` as a directory; `None` when that fails (callers fall back to paths).
    pub(crate) fn open(path: &Path) -> Option<Self> {
        #[cfg(unix)]
        {
            use rustix::fs::{Mode, OFlags};
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            rustix::fs::open(path, flags, Mode::empty())
                .ok()
                .map(|fd| Self { fd })
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }

    /// Reads the file at `rel` below this directory into `buf` (see [`read_all`]).
    pub(crate) fn read(&self, rel: &str, buf: &mut Vec<u8>, to_end: bool) -> io::Result<()> {
        #[cfg(unix)]
        {
            use rustix::fs::{Mode, OFlags};
            let fd = rustix::fs::openat(
                &self.fd,
                rel,
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            read_all(std::fs::File::from(fd), buf, to_end)
        }
        #[cfg(not(unix))]
        {
            let _ = (rel, buf, to_end);
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    /// Stats the file at `rel` below this directory, following symbolic links.
    pub(crate) fn stat(&self, rel: &str) -> io::Result<FileStat> {
        #[cfg(unix)]
        {
            use rustix::fs::{AtFlags, FileType};
            let stat = rustix::fs::statat(&self.fd, rel, AtFlags::empty())?;
            Ok(FileStat {
                is_file: FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile,
                len: u64::try_from(stat.st_size).unwrap_or(0),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = rel;
            Err(io::ErrorKind::Unsupported.into())
        }
    }
}

/// Reads `path` into `buf` (see [`read_all`]).
pub(crate) fn read_path(path: &Path, buf: &mut Vec<u8>, to_end: bool) -> io::Result<()> {
    read_all(std::fs::File::open(path)?, buf, to_end)
}

/// Stats `path`, following symbolic links.
pub(crate) fn stat_path(path: &Path) -> io::Result<FileStat> {
    let meta = std::fs::metadata(path)?;
    Ok(FileStat {
        is_file: meta.is_file(),
        len: meta.len(),
    })
}

/// Reads the file into `buf` (replacing its contents) without `read_to_end`'s size probe
/// (an `fstat` and an `lseek` per file): metadata files are small, and those two calls
/// are a measurable share of a scan. `buf` is meant to be reused from file to file.
///
/// Unless `to_end`, a read that returns less than it was offered is taken as the end of
/// the file, which it is for a regular file on Linux: that saves the second `read` (the
/// one that returns 0) on every file. A caller that finds the bytes unusable reads again
/// with `to_end`, so a filesystem that returns short reads costs time, never a result.
fn read_all(mut file: std::fs::File, buf: &mut Vec<u8>, to_end: bool) -> io::Result<()> {
    use io::Read;
    buf.clear();
    buf.resize(buf.capacity().max(4096), 0);
    let mut filled = 0;
    loop {
        let offered = buf.len() - filled;
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                } else if n < offered && !to_end {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(())
}
