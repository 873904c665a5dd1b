//! JSON Schemas of the documents this crate's commands print with `--json`, published
//! beside chunk-model's in `docs/schemas/` by `cargo xtask codegen` (which CI checks are
//! fresh), so a program reading them has a contract that cannot drift from the code.

use schemars::{JsonSchema, Schema, schema_for};

use crate::output::{
    CompressOutput, DispatchOutput, ReconstructOutput, UploadOutput, VerifyOutput,
};
use crate::pipeline::PipelineReport;
use crate::prune::PruneReport;
use crate::stage::StageReport;

/// Every published schema, with the file name it is published under.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "pipeline_report.schema.json",
            titled::<PipelineReport>("panini pipeline --json"),
        ),
        (
            "verify_output.schema.json",
            titled::<VerifyOutput>("panini verify --json"),
        ),
        (
            "upload_output.schema.json",
            titled::<UploadOutput>("panini upload --json"),
        ),
        (
            "reconstruct_output.schema.json",
            titled::<ReconstructOutput>("panini reconstruct --json"),
        ),
        (
            "compress_output.schema.json",
            titled::<CompressOutput>("panini compress --json"),
        ),
        (
            "dispatch_output.schema.json",
            titled::<DispatchOutput>("panini dispatch --json"),
        ),
        (
            "stage_output.schema.json",
            titled::<StageReport>("panini stage --json"),
        ),
        (
            "prune_output.schema.json",
            titled::<PruneReport>("panini prune --json"),
        ),
    ]
}

fn titled<T: JsonSchema>(title: &str) -> Schema {
    let mut schema = schema_for!(T);
    schema.insert("title".into(), title.into());
    schema
}
