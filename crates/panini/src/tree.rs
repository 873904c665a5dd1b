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
    /// Why the file's manifest cannot be used; the other files go on.
    pub error: Option<String>,
}

/// Every directory under `base` with a manifest, by name. A manifest that cannot be read
/// is reported on its file's entry. Hidden directories (the chunker's half-written
/// trees) are skipped.
pub fn files(base: &Path) -> Result<Vec<TreeFile>, Error> {
    let layout = Layout::new(base);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(base).map_err(Error::io(base))? {
        let entry = entry.map_err(Error::io(base))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().join(layout::MANIFEST_FILE).is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let manifest = layout
                .manifest_path(&name)
                .and_then(|path| json_file::read::<Manifest>(&path));
            match manifest {
                Ok(manifest) => TreeFile {
                    format: manifest
                        .format
                        .or(manifest.grammar_id)
                        .unwrap_or_else(|| "unknown".into()),
                    chunks: manifest.total_chunks,
                    bytes: manifest
                        .file_size
                        .unwrap_or_else(|| manifest.chunks.iter().map(|c| c.size).sum()),
                    name,
                    error: None,
                },
                Err(e) => TreeFile {
                    name,
                    format: "unknown".into(),
                    chunks: 0,
                    bytes: 0,
                    error: Some(e.to_string()),
                },
            }
        })
        .collect())
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
