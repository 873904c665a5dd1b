//! JSON Schemas of the documents this crate defines, for `docs/schemas/`.

use schemars::{JsonSchema, Schema, schema_for};

use crate::wire::{WebhookAccepted, WorkerErrorBody, WorkerFailures, WorkerStatus};
use crate::{ChunkCompressed, ChunkInfo, ChunkMetadata, Manifest, Recipe, WebhookRequest};

/// Every published schema, with the file name it is published under.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "metadata.schema.json",
            titled::<ChunkMetadata>("chunk_NNNN/metadata.json"),
        ),
        (
            "manifest.schema.json",
            titled::<Manifest>("<name>/manifest.json"),
        ),
        (
            "recipe.schema.json",
            titled::<Recipe>("recipes/<name>/<file sha256>.json"),
        ),
        (
            "chunks_to_process.schema.json",
            titled::<Vec<ChunkInfo>>("chunks_to_process.json"),
        ),
        (
            "webhook_request.schema.json",
            titled::<WebhookRequest>("POST /webhook request body"),
        ),
        (
            "webhook_accepted.schema.json",
            titled::<WebhookAccepted>("POST /webhook 202 response body"),
        ),
        (
            "worker_error.schema.json",
            titled::<WorkerErrorBody>("worker error response body"),
        ),
        (
            "worker_status.schema.json",
            titled::<WorkerStatus>("GET /status response body"),
        ),
        (
            "worker_failures.schema.json",
            titled::<WorkerFailures>("GET /failures response body"),
        ),
        (
            "chunk_compressed.schema.json",
            titled::<ChunkCompressed>("chunk_compressed payload and status/<sha256>.json"),
        ),
    ]
}

fn titled<T: JsonSchema>(title: &str) -> Schema {
    let mut schema = schema_for!(T);
    schema.insert("title".into(), title.into());
    schema
}
