//! `pending_compression/<name>/manifest.json`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ExtraFields, Sha256Digest, Timestamp};

/// How a file was cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Along the file format's own structure; oversized structures split by size.
    Semantic,
    /// Fixed-size chunks.
    Size,
    /// Semantic where the format is known; spans over the maximum (and unknown
    /// formats) cut by content-defined chunking, so an insertion moves few boundaries.
    Adaptive,
}

impl Strategy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Semantic => "semantic",
            Strategy::Size => "size",
            Strategy::Adaptive => "adaptive",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {0:?} (expected semantic, size or adaptive)")]
pub struct ParseStrategyError(pub String);

impl FromStr for Strategy {
    type Err = ParseStrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Strategy::Semantic, Strategy::Size, Strategy::Adaptive]
            .into_iter()
            .find(|strategy| strategy.as_str() == s)
            .ok_or_else(|| ParseStrategyError(s.to_owned()))
    }
}

/// One file's `manifest.json`: the Python chunker's fields plus what Panini needs to
/// check a reconstruction (`file_size`, `file_hash`) and to redo the chunking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    /// The name of the file's directory (by default the file stem).
    pub base_name: String,
    /// Number of chunks.
    pub total_chunks: u64,
    /// When the chunker ran.
    pub created_at: Timestamp,
    /// The detected format grammar, if any.
    #[serde(default)]
    pub grammar_id: Option<String>,
    /// The chunks in file order.
    pub chunks: Vec<ManifestChunk>,
    /// Size of the whole file (absent in Python manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// SHA-256 of the whole file (absent in Python manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_hash: Option<Sha256Digest>,
    /// Detected format (`png`, `mp4`, `text`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The chunking strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// The maximum chunk size used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chunk_size: Option<u64>,
    /// Fields this version does not know, kept on write-back.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// One chunk as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestChunk {
    /// Index of the chunk, from 0.
    pub chunk_id: u64,
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the chunk's bytes.
    pub hash: Sha256Digest,
    /// The chunk's pattern name.
    pub pattern: String,
    /// The chunk starts with a video keyframe.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_keyframe: bool,
    /// Fields this version does not know, kept on write-back.
    #[serde(flatten)]
    pub extra: ExtraFields,
}
