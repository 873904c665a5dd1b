//! The JSON documents the `panini` commands print with `--json`, as types: the command
//! line fills them, [`crate::schema`] publishes their schemas in `docs/schemas/`, so
//! what a program reads and what is documented are one definition.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;

/// `panini verify --json`: one entry per file checked.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct VerifyOutput {
    /// Every file, in name order.
    pub files: Vec<VerifiedFile>,
    /// How many did not rebuild.
    pub failed: u64,
}

/// One file of [`VerifyOutput`].
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct VerifiedFile {
    /// The file's name in the bucket (`recipes/<name>/`).
    pub name: String,
    /// Rebuilt in memory with every chunk's and the whole file's SHA-256 matching.
    pub ok: bool,
    /// Its size in bytes, when it rebuilt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Its number of chunks, when it rebuilt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u64>,
    /// Its SHA-256 (64 hex digits), when it rebuilt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why it did not rebuild.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `panini upload --json`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct UploadOutput {
    /// The file's name in the chunk tree and the bucket.
    pub name: String,
    /// Chunk objects this run stored.
    pub chunks_stored: u64,
    /// Bytes of the objects this run stored (compressed).
    pub bytes_stored: u64,
    /// Chunks whose object was in the bucket already.
    pub chunks_already_stored: u64,
    /// The recipe's key (`recipes/<name>/<file sha256>.json`).
    pub recipe: String,
}

/// `panini reconstruct --json`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReconstructOutput {
    /// The file's name in the bucket.
    pub name: String,
    /// Where the file was written.
    pub output: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its number of chunks.
    pub chunks: u64,
    /// Its SHA-256 (64 hex digits), checked.
    pub sha256: String,
    /// The recipe it was rebuilt from.
    pub recipe: String,
}

/// `panini compress --json`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CompressOutput {
    /// The input (`-`: standard input).
    pub input: PathBuf,
    /// The frame written.
    pub output: PathBuf,
    /// `lz4`, `zstd` or `store`.
    pub codec: String,
    /// Where it ran: `cpu` or `opencl`.
    pub engine: String,
    /// The device, in words.
    pub device: String,
    /// Bytes read.
    pub input_bytes: u64,
    /// Bytes of the frame.
    pub output_bytes: u64,
    /// `input_bytes / output_bytes`.
    pub ratio: f64,
    /// Wall-clock seconds of the compression.
    pub seconds: f64,
    /// The frame was decoded and compared with the input before it was written.
    pub verified: bool,
    /// Why `--codec auto` chose the codec it did.
    pub auto_reason: Option<String>,
}

/// `panini dispatch --json` (without `--dry-run`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct DispatchOutput {
    /// Chunks in the list.
    pub total_chunks: u64,
    /// Chunks a worker accepted.
    pub accepted_chunks: u64,
    /// One entry per request sent (a batch or one chunk).
    pub deliveries: Vec<Delivery>,
    /// Chunks left out because their metadata could not be updated first.
    pub skipped: u64,
}

/// One request of [`DispatchOutput`].
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Delivery {
    /// The request's `webhook-id`.
    pub delivery_id: String,
    /// The chunks it carried, relative to the repository root.
    pub chunk_paths: Vec<String>,
    /// A worker accepted it (202).
    pub accepted: bool,
    /// The worker that accepted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why it was not accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Not accepted for a reason retrying cannot change (a 4xx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
    /// Tries made, the first included.
    pub tries: u32,
    /// Chunks whose `metadata.json` could not record the outcome.
    pub metadata_errors: Vec<String>,
}
