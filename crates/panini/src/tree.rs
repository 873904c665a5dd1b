//! Reading a chunk tree (`pending_compression/`) as a whole: which files it holds and
//! which chunks are still open.

use std::path::{Path, PathBuf};

use chunk_model::{Layout, Manifest, Status, json_file, layout};
use serde::Serialize;

use crate::Error;

/// One chunked file of a tree, from its manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreeFile {
    /// The file's directory name under the tree (`pending_compression/<name>`).
    pub name: String,
    /// Detected format (`png`, `mp4`, `text` …), or `unknown`.
    pub format: String,
    /// Number of chunks.
    pub chunks: u64,
    /// Size of the whole file.
    pub bytes: u64,
    /// The whole file's SHA-256, which names its recipe; `None` in manifests of the
    /// older chunker, which did not record it.
    pub file_sha256: Option<chunk_model::Sha256Digest>,
    /// Why the file's manifest cannot be used; the other files go on.
    pub error: Option<String>,
}

/// Every file's directory under `base`, by name: those with a manifest, and those with
/// chunks but no manifest (a cut that did not finish), whose entry says so. A manifest
/// that cannot be read is reported on its file's entry. Hidden directories (the
/// chunker's half-written trees) are skipped.
pub fn files(base: &Path) -> Result<Vec<TreeFile>, Error> {
    Ok(manifests(base)?
        .into_iter()
        .map(|(name, manifest)| match manifest {
            Ok(manifest) => TreeFile {
                format: manifest
                    .format
                    .or(manifest.grammar_id)
                    .unwrap_or_else(|| "unknown".into()),
                chunks: manifest.total_chunks,
                bytes: manifest
                    .file_size
                    .unwrap_or_else(|| manifest.chunks.iter().map(|c| c.size).sum()),
                file_sha256: manifest.file_hash,
                name,
                error: None,
            },
            Err(e) => TreeFile {
                name,
                format: "unknown".into(),
                chunks: 0,
                bytes: 0,
                file_sha256: None,
                error: Some(e.to_string()),
            },
        })
        .collect())
}

/// A file's name under the tree and its manifest, or why it cannot be read.
pub type NamedManifest = (String, Result<Manifest, chunk_model::ModelError>);

/// The manifest of every file under `base` ([`files`] says which), each read once, with
/// the error of one that cannot be read or is missing.
pub fn manifests(base: &Path) -> Result<Vec<NamedManifest>, Error> {
    manifests_except(base, |_| false)
}

/// [`manifests`] of the files whose names `skip` does not pick: a caller that knows
/// what it needs of some files already spares their reads.
pub fn manifests_except(
    base: &Path,
    skip: impl Fn(&str) -> bool,
) -> Result<Vec<NamedManifest>, Error> {
    let layout = Layout::new(base);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(base).map_err(Error::io(base))? {
        let entry = entry.map_err(Error::io(base))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || skip(&name) {
            continue;
        }
        let dir = entry.path();
        if dir.join(layout::MANIFEST_FILE).is_file() {
            names.push((name, None));
        } else if holds_chunk_dirs(&dir) {
            // Left out, the file would vanish from every report while its chunks are
            // compressed and never rebuilt.
            names.push((name, Some(dir)));
        }
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|(name, without_manifest)| {
            let manifest = match without_manifest {
                Some(dir) => Err(chunk_model::ModelError::NoManifest { dir }),
                None => layout
                    .manifest_path(&name)
                    .and_then(|path| json_file::read::<Manifest>(&path)),
            };
            (name, manifest)
        })
        .collect())
}

/// Whether `dir` holds a `chunk_NNNN` entry (only asked of directories without a
/// manifest, so the common case reads no extra directory).
fn holds_chunk_dirs(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            layout::parse_chunk_dir_name(&entry.file_name().to_string_lossy()).is_some()
        })
    })
}

/// Chunk directories (relative to the repository root) whose status is neither
/// `completed` nor `failed`: work still out with a worker or not yet sent.
pub fn open_chunks(base: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<PathBuf>, Error> {
    let config = detector::DetectConfig {
        force: true,
        max_attempts: 0,
        ..detector::DetectConfig::new(base)
    };
    let report = detector::scan(&config, now)?;
    Ok(report
        .selected
        .into_iter()
        .filter(|c| !matches!(c.status, Status::Completed | Status::Failed))
        .map(|c| PathBuf::from(c.info.chunk_path))
        .collect())
}

/// A chunk of a file that is not `completed`, as [`first_unfinished_chunk`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedChunk {
    /// The chunk's index in its file.
    pub chunk_id: u64,
    /// Its status.
    pub status: Status,
    /// Its last error, if any.
    pub last_error: Option<String>,
}

impl std::fmt::Display for UnfinishedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chunk {} is {}", self.chunk_id, self.status)?;
        if let Some(error) = &self.last_error {
            write!(f, " ({error})")?;
        }
        Ok(())
    }
}

/// The first chunk, in file order, of the file `name` under `base` whose status is not
/// `completed`; `None` when every chunk is.
pub fn first_unfinished_chunk(base: &Path, name: &str) -> Result<Option<UnfinishedChunk>, Error> {
    let layout = Layout::new(base);
    let manifest: Manifest = json_file::read(&layout.manifest_path(name)?)?;
    for entry in &manifest.chunks {
        let path = layout
            .chunk_dir(name, entry.chunk_id, manifest.total_chunks)?
            .join(layout::METADATA_FILE);
        let meta: chunk_model::ChunkMetadata = json_file::read(&path)?;
        if meta.status != Status::Completed {
            return Ok(Some(UnfinishedChunk {
                chunk_id: entry.chunk_id,
                status: meta.status,
                last_error: meta.last_error,
            }));
        }
    }
    Ok(None)
}
