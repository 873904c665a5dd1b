//! The pipeline with raw bytes staged in the bucket (issue #16): `PipelineConfig::stage`
//! as a Rust program sets it, and `panini pipeline --stage [--prune]` as a user runs it,
//! on real files (PNG, MP4, log, random bytes) with a local-directory bucket. The tree
//! keeps no `data.bin`, so the workers can only have read the bucket's `staging/`; the
//! staged objects are checked by name with `sha256sum`, every file is rebuilt with
//! `panini reconstruct` and compared with `cmp` and `sha256sum`, and the `--json` report
//! is validated against its published schema by Python's `jsonschema`. Runs that reuse
//! the work directory and bucket find their objects already staged.

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use panini::{Pipeline, PipelineConfig};
use serde_json::Value;
use support::{panini, panini_ok, sha256sum, stage_row, text, tool};

/// Every file named `name` under `dir`, sorted.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// What the tree says of its chunks: each `metadata.json`, parsed.
fn chunk_metadata(tree: &Path) -> Vec<Value> {
    let metadata = files_named(tree, "metadata.json");
    assert!(!metadata.is_empty(), "no chunks under {}", tree.display());
    metadata
        .iter()
        .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
        .collect()
}

/// The tree holds no `data.bin` (checked by `find`, not by the code under test), and
/// every chunk's metadata names its staged object `staging/<original_hash>`. Returns the
/// distinct contents.
fn assert_staged_tree(tree: &Path) -> BTreeSet<String> {
    let found = tool(
        "find",
        &[tree.to_str().unwrap(), "-name", "data.bin", "-print"],
    );
    assert!(
        found.stdout.is_empty(),
        "data.bin left in the tree:\n{}",
        String::from_utf8_lossy(&found.stdout)
    );
    let mut contents = BTreeSet::new();
    for meta in chunk_metadata(tree) {
        let hash = meta["original_hash"].as_str().unwrap().to_owned();
        assert_eq!(
            meta["staged_object"].as_str(),
            Some(format!("staging/{hash}").as_str()),
            "{meta:#}"
        );
        assert_eq!(meta["status"], "completed", "{meta:#}");
        contents.insert(hash);
    }
    contents
}

/// The names of the objects in the bucket's `staging/`, each checked with `sha256sum` to
/// hold the bytes its name says.
fn staged_objects(bucket: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(bucket.join("staging")) else {
        return BTreeSet::new();
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            sha256sum(&path),
            name,
            "{} holds other bytes",
            path.display()
        );
        names.insert(name);
    }
    names
}

/// The stage names of a report, in order.
fn stage_names(report: &Value) -> Vec<String> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_pipeline_stages_then_rebuilds_and_a_second_run_finds_it_staged() {
    let dir = tempfile::tempdir().unwrap();
    let files = samples::sample_set(&dir.path().join("inputs"), 3 << 20).unwrap();
    let work = dir.path().join("work");
    let mut config = PipelineConfig::new(&work);
    config.files = files.clone();
    config.chunker.max_chunk_size = 256 << 10;
    config.chunker.min_chunk_size = 64 << 10;
    config.engine = panini::gpu_compress::EngineChoice::Cpu;
    config.stage = Some(panini::stage::StageOptions::default());
    let run = |config: PipelineConfig| async move {
        tokio::time::timeout(
            std::time::Duration::from_secs(180),
            Pipeline::new(config).run(|_| {}),
        )
        .await
        .expect("the pipeline ends in time")
        .expect("the pipeline runs")
    };

    let report = run(config.clone()).await;
    assert_eq!(report.files.len(), files.len(), "{report:#?}");
    assert!(report.files.iter().all(|f| f.verified), "{report:#?}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        stage_names(&json),
        [
            "chunk",
            "stage",
            "detect",
            "dispatch",
            "compress+upload",
            "sync",
            "recipes",
            "reconstruct+verify"
        ]
    );
    let staged = report.staged.as_ref().expect("the run staged");
    let chunks: u64 = report.files.iter().map(|f| f.chunks).sum();
    assert!(staged.errors.is_empty(), "{staged:#?}");
    assert_eq!(staged.chunks as u64, chunks, "{staged:#?}");
    assert_eq!(staged.data_files_removed as u64, chunks, "{staged:#?}");
    // Every byte of every file left the tree for the bucket.
    assert_eq!(staged.bytes_removed, report.bytes_in, "{staged:#?}");
    assert_eq!(stage_row(&json, "stage")["bytes"], report.bytes_in);
    let tree = work.join("pending_compression");
    let contents = assert_staged_tree(&tree);
    let bucket = work.join("bucket");
    assert_eq!(staged_objects(&bucket), contents);
    assert_eq!(staged.uploaded, contents.len(), "{staged:#?}");
    assert!(report.pruned.is_none());

    // The same work directory and bucket again, pruning at the end: the tree is chunked
    // anew, its bytes are in the bucket already, nothing is stored again; then the
    // staged objects go, and every file still rebuilds.
    let mut again = config.clone();
    again.prune = Some(panini::prune::PruneOptions::default());
    let second = run(again).await;
    assert!(second.files.iter().all(|f| f.verified), "{second:#?}");
    let staged = second.staged.as_ref().unwrap();
    assert_eq!(staged.uploaded, 0, "{staged:#?}");
    assert_eq!(staged.already_staged as u64, chunks, "{staged:#?}");
    assert_eq!(second.chunks_stored_now, 0, "{second:#?}");
    assert_eq!(assert_staged_tree(&tree), contents);
    let pruned = second.pruned.as_ref().expect("the run pruned");
    assert!(pruned.kept.is_empty(), "{pruned:#?}");
    assert_eq!(pruned.staged_objects_deleted, contents.len(), "{pruned:#?}");
    assert_eq!(pruned.completed_chunks as u64, chunks, "{pruned:#?}");
    let json = serde_json::to_value(&second).unwrap();
    assert_eq!(stage_names(&json).last().unwrap(), "prune");
    assert_eq!(
        stage_row(&json, "prune")["bytes"],
        pruned.staged_bytes_freed + pruned.data_bytes_freed
    );
    assert!(staged_objects(&bucket).is_empty());

    // After the prune, a third run stages every content again.
    let third = run(config).await;
    assert!(third.files.iter().all(|f| f.verified), "{third:#?}");
    assert_eq!(third.staged.as_ref().unwrap().uploaded, contents.len());
    assert_eq!(staged_objects(&bucket), contents);
}

/// Validates `document` against `docs/schemas/<schema>` with Python's `jsonschema` (the
/// validator for the draft the schema's `$schema` names), from the workspace's `.venv`
/// when there is one.
fn validate(schema: &str, document: &Value) {
    const CHECK: &str = r#"
import json, sys
from jsonschema import validators
schema = json.load(open(sys.argv[1]))
cls = validators.validator_for(schema)
cls.check_schema(schema)
errors = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
          for e in cls(schema).iter_errors(json.load(sys.stdin))]
print("\n".join(errors))
sys.exit(1 if errors else 0)
"#;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join(".venv/bin/python3");
    let python = if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    };
    let mut child = Command::new(&python)
        .args(["-c", CHECK])
        .arg(root.join("docs/schemas").join(schema))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} runs: {e}", python.display()));
    let body = serde_json::to_vec(document).unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{schema} rejects the report:\n{}{}\n{document:#}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `--json` report a pipeline run printed: one document, valid by its published
/// schema, with every file verified.
fn verified_report(out: &Output) -> Value {
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", text(out)));
    validate("pipeline_report.schema.json", &report);
    let files = report["files"].as_array().unwrap();
    assert!(files.iter().all(|f| f["verified"] == true), "{report:#}");
    report
}

/// `panini reconstruct` of every file of `report` from `bucket` into `out`, compared with
/// its source by `cmp` and `sha256sum`.
fn rebuild_every_file(report: &Value, bucket: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    for file in report["files"].as_array().unwrap() {
        let source = Path::new(file["source"].as_str().unwrap());
        rebuild_and_compare(file["name"].as_str().unwrap(), source, bucket, out);
    }
}

/// `panini reconstruct NAME` from `bucket` into `out/NAME`, compared with `source` by
/// `cmp` and `sha256sum`.
fn rebuild_and_compare(name: &str, source: &Path, bucket: &Path, out: &Path) {
    let rebuilt = out.join(name);
    let _ = std::fs::remove_file(&rebuilt);
    panini_ok(
        &[
            "reconstruct",
            name,
            "--bucket",
            bucket.to_str().unwrap(),
            "-o",
            rebuilt.to_str().unwrap(),
        ],
        out,
        &[],
    );
    tool(
        "cmp",
        &[source.to_str().unwrap(), rebuilt.to_str().unwrap()],
    );
    assert_eq!(sha256sum(&rebuilt), sha256sum(source), "{name}");
}

#[test]
fn panini_pipeline_stage_leaves_no_data_bin_and_rebuilds_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let files = samples::sample_set(&cwd.join("inputs"), 4 << 20).unwrap();
    let mut args: Vec<String> = vec!["pipeline".into()];
    args.extend(files.iter().map(|f| f.to_str().unwrap().to_owned()));
    args.extend(
        [
            "--work-dir",
            "work",
            "--workers",
            "2",
            "--engine",
            "cpu",
            "--chunk-size",
            "256K",
            "--min-chunk-size",
            "64K",
            "--stage",
        ]
        .map(String::from),
    );
    let run = |extra: &[&str]| {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(extra);
        panini_ok(&all, cwd, &[])
    };
    let tree = cwd.join("work/pending_compression");
    let bucket = cwd.join("work/bucket");

    // The first run stages every chunk, and the workers read them from the bucket.
    let report = verified_report(&run(&["--json"]));
    assert_eq!(report["files"].as_array().unwrap().len(), files.len());
    assert_eq!(stage_names(&report)[..2], ["chunk", "stage"]);
    assert_eq!(stage_row(&report, "stage")["bytes"], report["bytes_in"]);
    let staged = &report["staged"];
    assert_eq!(staged["errors"], serde_json::json!([]), "{staged:#}");
    assert_eq!(report["pruned"], Value::Null);
    let contents = assert_staged_tree(&tree);
    assert_eq!(staged_objects(&bucket), contents);
    assert_eq!(staged["uploaded"], contents.len(), "{staged:#}");
    let chunks = chunk_metadata(&tree).len();
    assert_eq!(staged["data_files_removed"], chunks, "{staged:#}");
    rebuild_every_file(&report, &bucket, &cwd.join("rebuilt-1"));

    // The same work directory and bucket, with --prune: everything is staged already,
    // nothing is stored again, and at the end the staged objects go.
    let report = verified_report(&run(&["--prune", "--json"]));
    assert_eq!(report["staged"]["uploaded"], 0, "{report:#}");
    assert_eq!(report["staged"]["already_staged"], chunks, "{report:#}");
    assert_eq!(report["chunks_stored_now"], 0, "{report:#}");
    assert_eq!(assert_staged_tree(&tree), contents);
    let pruned = &report["pruned"];
    assert_eq!(pruned["kept"], serde_json::json!([]), "{pruned:#}");
    assert_eq!(
        pruned["staged_objects_deleted"],
        contents.len(),
        "{pruned:#}"
    );
    assert_eq!(stage_names(&report).last().unwrap(), "prune");
    assert!(staged_objects(&bucket).is_empty());
    rebuild_every_file(&report, &bucket, &cwd.join("rebuilt-2"));

    // The table a user reads names both steps.
    let out = run(&["--prune"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A row, not the header (whose first column is also "stage"): its seconds follow.
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(name) && words.next().is_some_and(|s| s.parse::<f64>().is_ok())
            })
            .unwrap_or_else(|| panic!("no {name} row:\n{stdout}"))
            .to_owned()
    };
    assert!(
        row("stage").contains(&format!("{} uploaded", contents.len())),
        "{stdout}"
    );
    assert!(
        row("prune").contains(&format!("{} staged objects", contents.len())),
        "{stdout}"
    );

    // The help says what the flags do, and the long help shows one.
    let help = panini(&["pipeline", "--help"], cwd, &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--stage") && help.contains("--prune"),
        "{help}"
    );
    assert!(help.contains("--stage --prune"), "{help}");
}

/// A tree that mixes both transports (one file chunked with `chunk --stage`, one with its
/// `data.bin`), run with `--base`: the workers read each chunk where it is; a second run
/// with `--stage --prune` has nothing pending to stage and frees both kinds of raw bytes.
#[test]
fn panini_pipeline_on_a_tree_that_mixes_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let files = samples::sample_set(&cwd.join("inputs"), 2 << 20).unwrap();
    let (photo, log) = (&files[0], &files[2]);
    let small = ["--chunk-size", "256K", "--min-chunk-size", "64K"];
    let chunk = |file: &Path, extra: &[&str]| {
        let mut args = vec!["chunk", file.to_str().unwrap()];
        args.extend(small);
        args.extend(extra);
        panini_ok(&args, cwd, &[]);
    };
    chunk(photo, &["--stage", "bucket"]);
    chunk(log, &[]);
    let tree = cwd.join("pending_compression");
    assert!(files_named(&tree.join("photo"), "data.bin").is_empty());
    let log_data = files_named(&tree.join("server"), "data.bin");
    assert!(!log_data.is_empty());

    let pipeline = |extra: &[&str]| {
        let mut args = vec![
            "pipeline",
            "--base",
            "pending_compression",
            "--bucket",
            "bucket",
            "--engine",
            "cpu",
            "--json",
        ];
        args.extend(extra);
        verified_report(&panini_ok(&args, cwd, &[]))
    };
    let report = pipeline(&[]);
    assert_eq!(report["staged"], Value::Null);
    assert!(!stage_names(&report).contains(&"stage".to_owned()));
    // Each kept its transport: the log's data.bin is still there.
    assert_eq!(files_named(&tree.join("server"), "data.bin"), log_data);
    assert!(!staged_objects(&cwd.join("bucket")).is_empty());

    let report = pipeline(&["--stage", "--prune"]);
    assert_eq!(report["staged"]["chunks"], 0, "{report:#}");
    let pruned = &report["pruned"];
    assert_eq!(pruned["kept"], serde_json::json!([]), "{pruned:#}");
    assert_eq!(pruned["data_files_removed"], log_data.len(), "{pruned:#}");
    assert!(files_named(&tree, "data.bin").is_empty());
    assert!(staged_objects(&cwd.join("bucket")).is_empty());

    let out = cwd.join("rebuilt");
    std::fs::create_dir_all(&out).unwrap();
    for (name, original) in [("photo", photo), ("server", log)] {
        rebuild_and_compare(name, original, &cwd.join("bucket"), &out);
    }
}
