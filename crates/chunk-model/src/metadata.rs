//! `chunk_NNNN/metadata.json`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ExtraFields, Sha256Digest, Status, Timestamp, TransitionError};

/// One chunk's `metadata.json`.
///
/// The first block of fields is what the Python chunker wrote; the second is what the
/// original design added for status tracking; the third is Panini's. Fields nobody here
/// knows are kept in [`ChunkMetadata::extra`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkMetadata {
    /// Index of the chunk within its file, from 0.
    pub chunk_id: u64,
    /// Byte offset of the chunk in the original file.
    pub offset: u64,
    /// Length of the chunk in bytes (the size of `data.bin`).
    pub size: u64,
    /// SHA-256 of the chunk's bytes.
    pub original_hash: Sha256Digest,
    /// What part of the file format the chunk holds (`PNG_IDAT`, `FIXED_SIZE`, …).
    pub pattern_type: String,
    /// Always empty; kept for compatibility.
    #[serde(default)]
    pub dependencies: Vec<serde_json::Value>,
    /// The detected format grammar (`png_v1`, …), if any.
    #[serde(default)]
    pub grammar_id: Option<String>,
    /// Where the chunk is in the pipeline.
    pub status: Status,
    /// When the chunker wrote the chunk.
    pub created_at: Timestamp,

    /// Free-form compression state reported by a worker.
    #[serde(default)]
    pub compression_status: Option<String>,
    /// When a dispatcher last handed the chunk to a worker.
    #[serde(default)]
    pub dispatched_at: Option<Timestamp>,
    /// When the chunk was reported completed.
    #[serde(default)]
    pub compressed_at: Option<Timestamp>,
    /// The worker that holds or held the chunk.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Priority hint: the chunk starts with a video keyframe.
    #[serde(default)]
    pub is_keyframe: bool,
    /// Priority hint: a free-form pattern name (the design's `pattern`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,

    /// Dispatch attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Until when the worker that accepted the chunk owns it; after that it may be
    /// dispatched again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
    /// The object key the compressed chunk was stored under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_path: Option<String>,
    /// SHA-256 of the stored (compressed) object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_hash: Option<Sha256Digest>,
    /// Where the chunk's raw bytes are when they travel through the bucket instead of
    /// git: the key `staging/<original_hash>` (see [`crate::object_keys::staged_object`]).
    /// A staged chunk has no `data.bin`; workers read the object and check its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_object: Option<String>,

    /// Fields this version does not know, kept on write-back.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl ChunkMetadata {
    /// A fresh `pending` chunk, as the chunker writes it.
    pub fn new_pending(
        chunk_id: u64,
        offset: u64,
        size: u64,
        original_hash: Sha256Digest,
        pattern_type: impl Into<String>,
        grammar_id: Option<String>,
        created_at: Timestamp,
    ) -> Self {
        Self {
            chunk_id,
            offset,
            size,
            original_hash,
            pattern_type: pattern_type.into(),
            dependencies: Vec::new(),
            grammar_id,
            status: Status::Pending,
            created_at,
            compression_status: None,
            dispatched_at: None,
            compressed_at: None,
            worker_id: None,
            is_keyframe: false,
            pattern: None,
            attempts: 0,
            last_error: None,
            lease_expires_at: None,
            upload_path: None,
            upload_hash: None,
            staged_object: None,
            extra: ExtraFields::new(),
        }
    }

    /// Moves to `to` if the state machine allows it.
    pub fn set_status(&mut self, to: Status) -> Result<(), TransitionError> {
        self.status = self.status.transition_to(to)?;
        Ok(())
    }
}
