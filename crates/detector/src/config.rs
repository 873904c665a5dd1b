//! What a scan looks at and which rules it applies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chunk_model::layout::{CHUNK_DIR_PREFIX, DEFAULT_ROOT, METADATA_FILE};

use crate::DetectError;

/// The chunk tree scanned when no `--base` is given.
pub const DEFAULT_BASE: &str = DEFAULT_ROOT;
/// Where the list of chunks to process is written when no `--output` is given.
pub const DEFAULT_OUTPUT: &str = "chunks_to_process.json";
/// A `failed` chunk is retried while its `attempts` is below this.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// How long a worker owns a `queued`/`processing` chunk after `dispatched_at` when the
/// metadata carries no `lease_expires_at`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30 * 60);
/// Chunks larger than this (1 MiB) get the `large` priority.
pub const LARGE_CHUNK_BYTES: u64 = 1 << 20;

/// Everything a scan needs to know; build it with [`DetectConfig::new`] and adjust the
/// public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectConfig {
    /// The chunk tree's root directory (`pending_compression`). Its parent is the
    /// repository root: patterns and the paths written to the output are relative to it.
    pub base: PathBuf,
    /// Glob patterns a `metadata.json` must match, relative to the repository root
    /// (`*` does not cross `/`, `**` spans directories). Empty means the default,
    /// `<base name>/*/chunk_*/metadata.json`.
    pub include: Vec<String>,
    /// Glob patterns of files or directories to leave out, relative to the repository root.
    pub exclude: Vec<String>,
    /// Scan only these files' chunk trees (their directory names under the base), as a
    /// pipeline does for the files it has just chunked while it chunks the next ones;
    /// empty: every file. The base itself is not listed then, so the cost of a scan is
    /// that of the files named, however many others the tree holds. A name with no
    /// directory is nothing to scan, not an error.
    pub files: Vec<String>,
    /// Select every chunk that is not `completed` (the workflow's `force_process`).
    pub force: bool,
    /// A `failed` chunk is selected again while `attempts < max_attempts`.
    pub max_attempts: u32,
    /// Lease length used when a chunk has `dispatched_at` but no `lease_expires_at`.
    pub lease: Duration,
}

impl DetectConfig {
    /// The default rules for the tree at `base`.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Self {
            base: base.into(),
            include: Vec::new(),
            exclude: Vec::new(),
            files: Vec::new(),
            force: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            lease: DEFAULT_LEASE,
        }
    }

    /// The include patterns in force: the configured ones, or the default built from the
    /// base directory's name.
    pub fn include_patterns(&self) -> Result<Vec<String>, DetectError> {
        if !self.include.is_empty() {
            return Ok(self.include.clone());
        }
        let (_, name) = split_base(&self.base)?;
        Ok(vec![format!(
            "{}/*/{CHUNK_DIR_PREFIX}*/{METADATA_FILE}",
            globset::escape(&name)
        )])
    }
}

/// The repository root (the base's parent) and the base's name, as patterns see them;
/// `root.join(name)` is the base.
///
/// A base such as `.` or `..` has no name of its own; it is made absolute so that it has.
pub(crate) fn split_base(base: &Path) -> Result<(PathBuf, String), DetectError> {
    let named = match base.file_name() {
        Some(_) => base.to_path_buf(),
        None => std::fs::canonicalize(base).map_err(|source| DetectError::BaseUnreadable {
            path: base.to_path_buf(),
            source,
        })?,
    };
    let name = named
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| DetectError::InvalidBase {
            path: base.to_path_buf(),
            reason: "its last component is not a UTF-8 directory name",
        })?
        .to_owned();
    let root = match named.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((root, name))
}
