//! What the detector writes to `chunks_to_process.json` and the dispatcher sends to workers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ExtraFields, Sha256Digest};

/// Dispatch priority, most urgent first (the derived order is the dispatch order).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// The chunk starts with a video keyframe.
    Keyframe,
    /// The chunk holds a format header (`HEADER` in its pattern).
    Header,
    /// The chunk is larger than 1 MiB.
    Large,
    /// Everything else.
    Normal,
}

/// One chunk to compress, as the detector lists it and a worker receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkInfo {
    /// The chunk directory, relative to the repository root
    /// (`pending_compression/<name>/chunk_NNNN`).
    pub chunk_path: String,
    /// Index of the chunk within its file.
    pub chunk_id: u64,
    /// The chunk's pattern name.
    pub pattern_type: String,
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the chunk's bytes (absent in lists written by the original workflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Sha256Digest>,
    /// The file's directory (`pending_compression/<name>`).
    #[serde(default)]
    pub base_dir: String,
    /// The chunk starts with a video keyframe.
    #[serde(default)]
    pub is_keyframe: bool,
    /// Dispatch priority.
    #[serde(default = "normal_priority")]
    pub priority: Priority,
    /// Fields this version does not know, passed through.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

fn normal_priority() -> Priority {
    Priority::Normal
}
