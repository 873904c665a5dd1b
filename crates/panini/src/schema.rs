//! JSON Schemas of the documents this crate's commands print with `--json`, published
//! beside chunk-model's in `docs/schemas/` by `cargo xtask codegen` (which CI checks are
//! fresh), so a program reading them has a contract that cannot drift from the code.

use schemars::{JsonSchema, Schema, schema_for};

use crate::pipeline::PipelineReport;

/// Every published schema, with the file name it is published under.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![(
        "pipeline_report.schema.json",
        titled::<PipelineReport>("panini pipeline --json"),
    )]
}

fn titled<T: JsonSchema>(title: &str) -> Schema {
    let mut schema = schema_for!(T);
    schema.insert("title".into(), title.into());
    schema
}
