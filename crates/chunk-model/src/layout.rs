//! The on-disk layout of the chunk tree.
//!
//! ```text
//! <root>/<name>/manifest.json
//! <root>/<name>/chunk_NNNN/data.bin
//! <root>/<name>/chunk_NNNN/metadata.json
//! ```
//!
//! `<root>` is `pending_compression` by default. Writers use four digits, more when a
//! file has more than 10,000 chunks; readers accept any number of digits.

use std::path::{Path, PathBuf};

use crate::ModelError;

/// The default root directory of the chunk tree.
pub const DEFAULT_ROOT: &str = "pending_compression";
/// A file's manifest, in its directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// A chunk's bytes, in its directory.
pub const DATA_FILE: &str = "data.bin";
/// A chunk's metadata, in its directory.
pub const METADATA_FILE: &str = "metadata.json";
/// The prefix of chunk directory names.
pub const CHUNK_DIR_PREFIX: &str = "chunk_";

/// A chunk tree rooted at a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<name>`; the name must be a single path component.
    pub fn file_dir(&self, name: &str) -> Result<PathBuf, ModelError> {
        validate_name(name)?;
        Ok(self.root.join(name))
    }

    /// `<root>/<name>/manifest.json`.
    pub fn manifest_path(&self, name: &str) -> Result<PathBuf, ModelError> {
        Ok(self.file_dir(name)?.join(MANIFEST_FILE))
    }

    /// `<root>/<name>/chunk_NNNN` for a file of `total_chunks` chunks.
    pub fn chunk_dir(
        &self,
        name: &str,
        chunk_id: u64,
        total_chunks: u64,
    ) -> Result<PathBuf, ModelError> {
        Ok(self
            .file_dir(name)?
            .join(chunk_dir_name(chunk_id, total_chunks)))
    }
}

/// A file of at most this many chunks names them with four digits, whatever its exact
/// count: a writer that knows only a bound this low can name chunks before its plan is
/// complete.
pub const FOUR_DIGIT_CHUNKS: u64 = 10_000;

/// `chunk_NNNN`: zero-padded to four digits, or to as many as the largest id of a file
/// with `total_chunks` chunks needs (more than [`FOUR_DIGIT_CHUNKS`]), so names sort in
/// chunk order.
pub fn chunk_dir_name(chunk_id: u64, total_chunks: u64) -> String {
    let largest = total_chunks.saturating_sub(1).max(chunk_id);
    let width = largest
        .checked_ilog10()
        .map_or(1, |log| log as usize + 1)
        .max(4);
    format!("{CHUNK_DIR_PREFIX}{chunk_id:0width$}")
}

/// The chunk id in a directory name such as `chunk_0042` or `chunk_12345`.
pub fn parse_chunk_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHUNK_DIR_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks that `name` can be a directory directly under the root.
pub fn validate_name(name: &str) -> Result<(), ModelError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("a relative path component")
    } else if name.contains(['/', '\\', '\0']) {
        Some("contains a path separator or NUL")
    } else if name.starts_with('.') {
        // Hidden names are reserved for the chunker's in-progress directories.
        Some("starts with '.'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ModelError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_dir_names_pad_to_four_or_more_digits() {
        assert_eq!(chunk_dir_name(0, 1), "chunk_0000");
        assert_eq!(chunk_dir_name(42, 100), "chunk_0042");
        assert_eq!(chunk_dir_name(9_999, 10_000), "chunk_9999");
        assert_eq!(chunk_dir_name(7, 10_001), "chunk_00007");
        assert_eq!(chunk_dir_name(10_000, 10_001), "chunk_10000");
        assert_eq!(chunk_dir_name(0, 0), "chunk_0000");
        assert_eq!(
            chunk_dir_name(FOUR_DIGIT_CHUNKS - 1, FOUR_DIGIT_CHUNKS),
            "chunk_9999"
        );
        assert_eq!(chunk_dir_name(0, FOUR_DIGIT_CHUNKS + 1), "chunk_00000");
    }

    #[test]
    fn readers_accept_any_digit_count() {
        assert_eq!(parse_chunk_dir_name("chunk_0042"), Some(42));
        assert_eq!(parse_chunk_dir_name("chunk_7"), Some(7));
        assert_eq!(parse_chunk_dir_name("chunk_123456"), Some(123_456));
        assert_eq!(parse_chunk_dir_name("chunk_"), None);
        assert_eq!(parse_chunk_dir_name("chunk_12a"), None);
        assert_eq!(parse_chunk_dir_name("chunk_+1"), None);
        assert_eq!(parse_chunk_dir_name("chunks_0001"), None);
    }

    #[test]
    fn names_must_be_one_plain_component() {
        for bad in ["", ".", "..", "a/b", "..\\x", ".hidden", "a\0b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let layout = Layout::new("pending_compression");
        assert_eq!(
            layout.chunk_dir("movie", 3, 10).unwrap(),
            Path::new("pending_compression/movie/chunk_0003")
        );
        assert!(layout.file_dir("../etc").is_err());
    }
}
