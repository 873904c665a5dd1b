//! The permissions of the files the tools create: what `cp` would give them.
//!
//! Every file Panini writes goes through a temporary file that is renamed over its
//! target. `tempfile` creates those with mode 0600 whatever the umask, which left a
//! rebuilt file, a local bucket's objects and every `metadata.json` touched by a run
//! readable by their owner only. `cp` instead creates a new file with 0666 less the
//! umask, and keeps the mode of a file it overwrites; the helpers here do the same, and
//! every writer of the workspace (`json_file`, `fs_batch`, the uploader's local store
//! and reconstruction) creates its temporary files through them.

use std::fs::File;
use std::io;
use std::path::Path;

use tempfile::NamedTempFile;

/// The mode a new file is opened with before the umask: the kernel clears the umask's
/// bits from it at creation, exactly as for `cp` or a shell redirection.
pub const NEW_FILE_MODE: u32 = 0o666;

/// A new, empty temporary file named `<prefix>…` in `dir`, with mode 0666 less the
/// process's umask (deleted when dropped unless persisted).
pub fn temp_file_in(dir: &Path, prefix: &str) -> io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(NEW_FILE_MODE));
    }
    builder.tempfile_in(dir)
}

/// Gives `file`, about to replace `target`, the permission bits `target` has now, so
/// that replacing a file keeps its mode as overwriting it with `cp` does. Nothing is
/// changed when `target` does not exist (the new file keeps 0666 less the umask) or
/// already has the same mode.
pub fn keep_mode_of(target: &Path, file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let wanted = match std::fs::metadata(target) {
            Ok(meta) => meta.permissions().mode() & 0o7777,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let current = file.metadata()?.permissions().mode() & 0o7777;
        if current != wanted {
            file.set_permissions(std::fs::Permissions::from_mode(wanted))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (target, file);
    Ok(())
}
