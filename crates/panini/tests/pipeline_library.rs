//! The pipeline as another Rust program runs it: `panini::Pipeline` on real files, two
//! in-process workers on 127.0.0.1, a local bucket; then the bucket alone, read by an
//! outside tool, holds what the report says.

use std::process::Command;
use std::sync::{Arc, Mutex};

use panini::{Pipeline, PipelineConfig, PipelineEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_pipeline_rebuilds_every_file_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    let files = samples::sample_set(&inputs, 3 << 20).unwrap();
    let mut config = PipelineConfig::new(dir.path().join("work"));
    config.files = files.clone();
    config.chunker.max_chunk_size = 256 << 10;
    config.engine = panini::gpu_compress::EngineChoice::Cpu;

    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        Pipeline::new(config.clone()).run(move |e| seen.lock().unwrap().push(e)),
    )
    .await
    .expect("the pipeline ends in time")
    .expect("the pipeline runs");

    assert_eq!(report.files.len(), files.len(), "{report:#?}");
    assert!(report.files.iter().all(|f| f.verified), "{report:#?}");
    assert!(report.chunks_stored_now > 0);
    let events = std::mem::take(&mut *events.lock().unwrap());
    assert!(
        events.contains(&PipelineEvent::StageStarted {
            stage: "chunk",
            total: files
                .iter()
                .map(|f| std::fs::metadata(f).unwrap().len())
                .sum(),
        })
    );
    assert!(events.contains(&PipelineEvent::StageFinished { stage: "compress" }));

    // The report serializes (the CLI's --json) and names every stage.
    let json = serde_json::to_value(&report).unwrap();
    let stages: Vec<&str> = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "chunk",
            "detect",
            "dispatch",
            "compress+upload",
            "sync",
            "recipes",
            "reconstruct+verify"
        ]
    );

    // Every recipe in the bucket names objects that exist, and the bucket holds one
    // recipe per file.
    let bucket = dir.path().join("work/bucket");
    let recipes: Vec<_> = walk(&bucket.join("recipes"));
    assert_eq!(recipes.len(), files.len(), "{recipes:?}");

    // A second run stores nothing new.
    let again = Pipeline::new(config).run(|_| {}).await.unwrap();
    assert_eq!(again.chunks_stored_now, 0, "{again:#?}");
    assert!(again.files.iter().all(|f| f.verified));

    // `cargo test` builds the examples beside the binary: run the example program on one
    // file as a user would.
    let example_bin = std::path::Path::new(env!("CARGO_BIN_EXE_panini"))
        .with_file_name("examples")
        .join("pipeline");
    assert!(
        example_bin.is_file(),
        "{} was not built",
        example_bin.display()
    );
    let example = Command::new(&example_bin).arg(&files[0]).output().unwrap();
    assert!(
        example.status.success(),
        "{}",
        String::from_utf8_lossy(&example.stderr)
    );
    assert!(String::from_utf8_lossy(&example.stdout).contains("rebuilt bit for bit"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
