//! Shared helpers: generated chunk trees in temporary directories.

#![allow(dead_code)] // each test file uses its own subset

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

/// The fixed "now" every test scans at.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

/// A repository root in a temp dir with a `pending_compression/` chunk tree under it.
pub struct Tree {
    pub dir: tempfile::TempDir,
    pub base: PathBuf,
}

impl Tree {
    pub fn new() -> Self {
        Self::named("pending_compression")
    }

    pub fn named(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join(name);
        fs::create_dir(&base).unwrap();
        Self { dir, base }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `base/<name>/chunk_NNNN`.
    pub fn chunk_dir(&self, name: &str, id: u64) -> PathBuf {
        self.base.join(name).join(format!("chunk_{id:04}"))
    }

    /// Writes a chunk with `metadata` and a `data.bin` of `metadata.size` bytes (sparse,
    /// so "large" chunks cost no disk).
    pub fn chunk(&self, name: &str, id: u64, metadata: &Value) -> PathBuf {
        let size = metadata["size"].as_u64().unwrap_or(0);
        self.chunk_with_data(name, id, metadata, Some(size))
    }

    /// Writes a chunk with `metadata` and, when `data_len` is given, a `data.bin` of
    /// that many bytes.
    pub fn chunk_with_data(
        &self,
        name: &str,
        id: u64,
        metadata: &Value,
        data_len: Option<u64>,
    ) -> PathBuf {
        let dir = self.chunk_dir(name, id);
        fs::create_dir_all(&dir).unwrap();
        self.write_raw(
            &dir.join("metadata.json"),
            &serde_json::to_string_pretty(metadata).unwrap(),
        );
        if let Some(len) = data_len {
            let file = fs::File::create(dir.join("data.bin")).unwrap();
            file.set_len(len).unwrap();
        }
        dir
    }

    pub fn write_raw(&self, path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

/// Metadata exactly as the Python chunker wrote it: local time without zone,
/// `dependencies: []`, `grammar_id: null`, status `pending`, no tracking fields.
pub fn python_metadata(chunk_id: u64, size: u64, pattern_type: &str) -> Value {
    json!({
        "chunk_id": chunk_id,
        "offset": chunk_id * 1000,
        "size": size,
        "original_hash": format!("{:064x}", chunk_id + 1),
        "pattern_type": pattern_type,
        "dependencies": [],
        "grammar_id": null,
        "status": "pending",
        "created_at": "2025-11-13T14:02:11.123456"
    })
}

/// Python metadata with some fields replaced.
pub fn with(mut metadata: Value, changes: Value) -> Value {
    for (key, value) in changes.as_object().unwrap() {
        metadata[key] = value.clone();
    }
    metadata
}
