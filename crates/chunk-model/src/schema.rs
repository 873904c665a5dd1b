//! JSON Schemas of the documents this crate defines, for `docs/schemas/`.

use schemars::{JsonSchema, Schema, schema_for};

use crate::{ChunkInfo, ChunkMetadata, Manifest, Recipe};

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
    ]
}

fn titled<T: JsonSchema>(title: &str) -> Schema {
    let mut schema = schema_for!(T);
    schema.insert("title".into(), title.into());
    schema
}
