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
    /// The bucket key holding the chunk's raw bytes (`staging/<hash>`) when they were
    /// staged there instead of committed as `data.bin`; the worker then reads them from
    /// its bucket, not from git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_object: Option<String>,
    /// Fields this version does not know, passed through.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

fn normal_priority() -> Priority {
    Priority::Normal
}

/// The repository a dispatch came from, when run from GitHub Actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RepositoryRef {
    /// Owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// The commit whose chunks are being compressed.
    pub commit_sha: String,
    /// The ref (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: String,
}

/// The workflow run a dispatch came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowRef {
    /// `GITHUB_RUN_ID`.
    pub run_id: u64,
    /// `GITHUB_RUN_NUMBER`.
    pub run_number: u64,
}

/// The body of `POST /webhook`, tagged by `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum WebhookRequest {
    /// One chunk.
    CompressChunk {
        /// The chunk.
        chunk_info: ChunkInfo,
        /// Where it came from, when run from Actions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repository: Option<RepositoryRef>,
        /// The workflow run, when run from Actions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workflow: Option<WorkflowRef>,
    },
    /// Several chunks in one request.
    CompressBatch {
        /// The chunks.
        chunks: Vec<ChunkInfo>,
        /// Where they came from, when run from Actions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repository: Option<RepositoryRef>,
        /// The workflow run, when run from Actions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workflow: Option<WorkflowRef>,
    },
}

/// What a worker reports when a chunk is done: the `client_payload` of the
/// `chunk_compressed` repository_dispatch event, and the body of the completion record
/// `status/<sha256>.json` in the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkCompressed {
    /// The chunk directory, as in [`ChunkInfo::chunk_path`].
    pub chunk_path: String,
    /// `completed` or `failed`.
    pub status: crate::Status,
    /// The object key the compressed chunk is stored under (completed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_path: Option<String>,
    /// SHA-256 of the stored object (completed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_hash: Option<Sha256Digest>,
    /// SHA-256 of the original chunk bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_hash: Option<Sha256Digest>,
    /// The worker that did the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Why it failed (failed only).
    #[serde(default, alias = "last_error", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Compression statistics (codec, engine, sizes, time), free-form.
    #[serde(default)]
    pub stats: serde_json::Value,
}

/// The body of a worker's `202 Accepted` answer to `POST /webhook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookAccepted {
    /// Always `accepted`.
    pub status: String,
    /// The `chunk_path` of every chunk queued by this request, in request order.
    pub accepted: Vec<String>,
    /// True when this delivery id was seen before and nothing was queued again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// The body of every worker error answer (`400`, `401`, `413`, `503` …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerErrorBody {
    /// What was wrong, for a person.
    pub error: String,
}

/// `GET /status` of a worker: what it runs on and what it has done since it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerStatus {
    /// `ok`, or `draining` after a shutdown signal.
    pub status: String,
    /// Whether LZ4 runs on a GPU.
    pub gpu: bool,
    /// The compression engine (`cpu`, `opencl`).
    pub engine: String,
    /// The device the engine runs on.
    #[serde(default)]
    pub device: Option<String>,
    /// The worker's name in reports.
    pub worker_id: String,
    /// Chunks accepted and not started.
    pub queue_length: u64,
    /// The most chunks the queue holds.
    pub max_queue: u64,
    /// Chunks being read, compressed or stored.
    pub in_flight: u64,
    /// Chunks accepted since the start.
    pub accepted: u64,
    /// Chunks reported completed (compressed now or found stored).
    pub completed: u64,
    /// Of `completed`, those found already stored.
    pub deduplicated: u64,
    /// Chunks reported failed.
    pub failed: u64,
    /// Original bytes compressed.
    pub bytes_in: u64,
    /// Compressed bytes stored.
    pub bytes_out: u64,
    /// Files whose recipe this worker wrote, or found written, when it checked them
    /// (each time a file's last chunk is stored there). A reader waiting for recipes
    /// looks them up when this grows. Absent from a worker that does not count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipes_ready: Option<u64>,
}

/// `GET /failures` of a worker: how many chunks failed since it started, and the latest
/// of them (oldest first), each as the `chunk_compressed` payload a callback carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerFailures {
    /// Failures since the start; a reader compares it with what it saw before.
    pub total: u64,
    /// The latest failures, at most the worker's memory of them.
    pub failures: Vec<ChunkCompressed>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_bodies_use_the_seed_names() {
        let body = r#"{"action": "compress_batch", "chunks": [
            {"chunk_path": "pending_compression/a/chunk_0000", "chunk_id": 0,
             "pattern_type": "FIXED_SIZE", "size": 10}]}"#;
        let request: WebhookRequest = serde_json::from_str(body).unwrap();
        let WebhookRequest::CompressBatch {
            chunks, repository, ..
        } = &request
        else {
            panic!("{request:?}")
        };
        assert_eq!(chunks[0].priority, Priority::Normal);
        assert!(repository.is_none());
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["action"], "compress_batch");

        let single = serde_json::json!({"action": "compress_chunk", "chunk_info": chunks[0],
            "repository": {"owner": "o", "repo": "r", "commit_sha": "abc", "ref": "refs/heads/main"}});
        let request: WebhookRequest = serde_json::from_value(single).unwrap();
        assert!(
            matches!(request, WebhookRequest::CompressChunk { repository: Some(ref r), .. } if r.git_ref == "refs/heads/main")
        );
        assert!(serde_json::from_str::<WebhookRequest>(r#"{"action": "explode"}"#).is_err());
    }
}
