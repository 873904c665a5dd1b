//! The product checked by tools it does not contain: files rebuilt by the real
//! `reconstruct` command compared with `cmp` and `sha256sum`, stored chunk objects decoded
//! with the stock `lz4` and `zstd` programs (from a local bucket, and from Cloud Storage
//! through `rclone`), and every document the commands write
//! validated against the published JSON Schemas (`docs/schemas/`) by Python's
//! `jsonschema`. Nothing here trusts the pipeline's own `verified` flag or `verify`.

mod support;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::Output;

const LIMIT: Duration = Duration::from_secs(300);

fn xtask(args: &[&str], cwd: &Path) -> Output {
    let output = support::xtask(args, cwd, LIMIT);
    assert!(
        output.status.success(),
        "xtask {args:?}:\n{}",
        output.text()
    );
    output
}

/// Runs a stock tool to the end (`Command::output` waits; the tools here finish on their
/// own, and a hang shows as the test harness's timeout).
fn tool(program: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `sha256sum FILE`: the hex digest.
fn sha256sum(path: &Path) -> String {
    let out = tool("sha256sum", &[path.to_str().unwrap()]);
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

fn cmp(a: &Path, b: &Path) {
    tool("cmp", &[a.to_str().unwrap(), b.to_str().unwrap()]);
}

/// Input files of three kinds: text (zstd/lz4 territory), random bytes (stored as is) and
/// a mix, each cut into several chunks.
fn write_inputs(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    use rand::{RngCore as _, SeedableRng as _};
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let text: String = (0..24_000)
        .map(|i| {
            format!(
                "{i:06} GET /objects/{} 200 {}\n",
                i % 311,
                (i * 7919) % 10007
            )
        })
        .collect();
    let mut random = vec![0u8; 600_000];
    rng.fill_bytes(&mut random);
    let mut mixed = Vec::new();
    for i in 0..6 {
        let mut block = vec![0u8; 90_000];
        if i % 2 == 0 {
            rng.fill_bytes(&mut block);
        } else {
            block
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (j % 251) as u8);
        }
        mixed.extend_from_slice(&block);
    }
    let files = [
        ("access", "access.log", text.into_bytes()),
        ("noise", "noise.bin", random),
        ("mixed", "mixed.bin", mixed),
    ];
    files
        .into_iter()
        .map(|(name, file, bytes)| {
            let path = dir.join(file);
            std::fs::write(&path, bytes).unwrap();
            (name, path)
        })
        .collect()
}

/// Every chunk's `data.bin` by the SHA-256 `sha256sum` computes for it.
fn chunks_by_hash(tree: &Path) -> HashMap<String, PathBuf> {
    let mut chunks = HashMap::new();
    for file in std::fs::read_dir(tree).unwrap() {
        let file = file.unwrap().path();
        // Hidden names are not files' trees (docs/FORMATS.md): the chunker's work in
        // progress, the pipeline's marker of a tree it created.
        if file.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        for chunk in std::fs::read_dir(&file).unwrap() {
            let data = chunk.unwrap().path().join("data.bin");
            if data.is_file() {
                chunks.insert(sha256sum(&data), data);
            }
        }
    }
    chunks
}

/// Decodes every object under `bucket/chunks` with the stock tool for its codec and
/// compares the bytes with the chunk's `data.bin`; returns how many objects per codec.
fn decode_objects_with_stock_tools(
    bucket: &Path,
    chunks: &HashMap<String, PathBuf>,
) -> HashMap<String, usize> {
    let scratch = tempfile::tempdir().unwrap();
    let mut codecs = HashMap::new();
    for object in std::fs::read_dir(bucket.join("chunks")).unwrap() {
        let object = object.unwrap().path();
        let file_name = object.file_name().unwrap().to_str().unwrap().to_owned();
        let (hash, codec) = file_name.split_once('.').unwrap();
        let decoded = scratch.path().join(hash);
        let o = object.to_str().unwrap();
        let d = decoded.to_str().unwrap();
        match codec {
            "lz4" => drop(tool("lz4", &["-d", "-q", "-f", o, d])),
            "zstd" => drop(tool("zstd", &["-d", "-q", "-f", o, "-o", d])),
            "store" => drop(tool("cp", &[o, d])),
            other => panic!("{file_name}: unknown codec {other}"),
        }
        let data = chunks
            .get(hash)
            .unwrap_or_else(|| panic!("{file_name} names no chunk of the tree"));
        cmp(&decoded, data);
        assert_eq!(sha256sum(&decoded), hash, "{file_name}");
        *codecs.entry(codec.to_owned()).or_default() += 1;
    }
    codecs
}

/// `reconstruct NAME` for every file, then `cmp` and `sha256sum` against the input and
/// the manifest's `file_hash`.
fn reconstruct_and_compare(work: &Path, bucket: &Path, inputs: &[(&str, PathBuf)]) {
    let out_dir = tempfile::tempdir_in(work).unwrap();
    for (name, original) in inputs {
        let output = out_dir.path().join(name);
        xtask(
            &[
                "reconstruct",
                name,
                "--bucket",
                bucket.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
            ],
            work,
        );
        cmp(original, &output);
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(work.join(format!("pending_compression/{name}/manifest.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(sha256sum(&output), manifest["file_hash"], "{name}");
    }
}

/// Validates JSON files against `docs/schemas/<schema>` with Python's `jsonschema` (the
/// validator the schema's `$schema` names: draft 2020-12).
fn validate(schema: &str, documents: &[PathBuf]) {
    assert!(!documents.is_empty(), "no documents for {schema}");
    const CHECK: &str = r#"
import json, sys
from jsonschema import validators
schema = json.load(open(sys.argv[1]))
cls = validators.validator_for(schema)
cls.check_schema(schema)
validator = cls(schema)
errors = []
for path in json.load(sys.stdin):
    for e in validator.iter_errors(json.load(open(path))):
        errors.append(f"{path}: /{'/'.join(map(str, e.absolute_path))}: {e.message}")
print("\n".join(errors))
sys.exit(1 if errors else 0)
"#;
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/schemas")
        .join(schema);
    let mut child = Command::new("python3")
        .args(["-c", CHECK, schema_path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let list = serde_json::to_vec(documents).unwrap();
    child.stdin.take().unwrap().write_all(&list).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{schema} rejects documents:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn files_under(dir: &Path, file_name: Option<&str>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if file_name.is_none_or(|n| path.file_name().unwrap() == n)
                && path.extension().is_some_and(|e| e == "json")
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn pipeline_and_upload_outputs_check_out_under_stock_tools_and_schemas() {
    let work = tempfile::tempdir().unwrap();
    let inputs = write_inputs(work.path());
    let files: Vec<&str> = inputs.iter().map(|(_, p)| p.to_str().unwrap()).collect();

    let mut chunk = vec!["chunk", "--strategy", "size", "--chunk-size", "128K"];
    chunk.extend(&files);
    xtask(&chunk, work.path());
    xtask(&["detect"], work.path());
    let tree = work.path().join("pending_compression");
    validate(
        "chunks_to_process.schema.json",
        &[work.path().join("chunks_to_process.json")],
    );
    let pending = files_under(&tree, Some("metadata.json"));
    assert!(pending.len() >= 12, "{pending:?}");
    validate("metadata.schema.json", &pending);
    validate(
        "manifest.schema.json",
        &files_under(&tree, Some("manifest.json")),
    );

    // The real flow: dispatch over HTTP to in-process workers, compress, store, sync.
    let summary = xtask(
        &[
            "pipeline",
            "--base",
            "pending_compression",
            "--work-dir",
            work.path().to_str().unwrap(),
            "--engine",
            "cpu",
            "--workers",
            "2",
            "--json",
        ],
        work.path(),
    )
    .json();
    assert_eq!(summary["files"].as_array().unwrap().len(), 3, "{summary:#}");
    let bucket = work.path().join("bucket");
    let chunks = chunks_by_hash(&tree);
    let codecs = decode_objects_with_stock_tools(&bucket, &chunks);
    assert_eq!(
        codecs.values().sum::<usize>(),
        chunks.len(),
        "one object per distinct chunk: {codecs:?}"
    );
    assert!(codecs.contains_key("store"), "{codecs:?}");
    reconstruct_and_compare(work.path(), &bucket, &inputs);
    // What the pipeline left behind: completed chunks, recipes, completion records.
    validate("metadata.schema.json", &pending);
    validate(
        "recipe.schema.json",
        &files_under(&bucket.join("recipes"), None),
    );
    validate(
        "chunk_compressed.schema.json",
        &files_under(&bucket.join("status"), None),
    );

    // `upload` as a user runs it, once per codec that has a stock decoder.
    for codec in ["lz4", "zstd"] {
        let bucket = work.path().join(format!("bucket-{codec}"));
        for (name, _) in &inputs {
            xtask(
                &[
                    "upload",
                    name,
                    "--bucket",
                    bucket.to_str().unwrap(),
                    "--codec",
                    codec,
                    "--engine",
                    "cpu",
                ],
                work.path(),
            );
        }
        let codecs = decode_objects_with_stock_tools(&bucket, &chunks);
        assert_eq!(
            codecs.keys().collect::<Vec<_>>(),
            [codec],
            "--codec {codec} stores only {codec} frames"
        );
        assert_eq!(codecs[codec], chunks.len());
        reconstruct_and_compare(work.path(), &bucket, &inputs);
        validate(
            "recipe.schema.json",
            &files_under(&bucket.join("recipes"), None),
        );
    }
}

/// The same outside check through Cloud Storage: a pipeline run stores into the GCS
/// emulator, a real GCS client (`rclone copy`) reads every object back, and the stock
/// tools decode them. Neither the storing nor the reading goes through Panini's reader.
#[test]
fn objects_in_cloud_storage_read_back_by_rclone_decode_with_stock_tools() {
    let emulator = support::start_emulator();
    let endpoint = emulator.endpoint();
    let work = tempfile::tempdir().unwrap();
    let inputs = write_inputs(work.path());
    let mut chunk = vec!["chunk", "--strategy", "size", "--chunk-size", "128K"];
    chunk.extend(inputs.iter().map(|(_, p)| p.to_str().unwrap()));
    xtask(&chunk, work.path());
    let bucket = format!("gs://{}/oracle", support::BUCKET);
    let summary = xtask(
        &[
            "pipeline",
            "--base",
            "pending_compression",
            "--work-dir",
            work.path().to_str().unwrap(),
            "--engine",
            "cpu",
            "--bucket",
            &bucket,
            "--endpoint",
            &endpoint,
            "--json",
        ],
        work.path(),
    )
    .json();
    assert_eq!(summary["files"].as_array().unwrap().len(), 3, "{summary:#}");

    // rclone reads the JSON API under /storage/v1/, anonymously, as any client of an
    // emulator does.
    let config = work.path().join("rclone.conf");
    std::fs::write(
        &config,
        format!(
            "[emu]\ntype = google cloud storage\nanonymous = true\n\
             endpoint = {endpoint}/storage/v1/\nbucket_policy_only = true\n"
        ),
    )
    .unwrap();
    let read_back = work.path().join("read-back");
    tool(
        "rclone",
        &[
            "--config",
            config.to_str().unwrap(),
            "copy",
            &format!("emu:{}/oracle", support::BUCKET),
            read_back.to_str().unwrap(),
        ],
    );
    let chunks = chunks_by_hash(&work.path().join("pending_compression"));
    let codecs = decode_objects_with_stock_tools(&read_back, &chunks);
    assert_eq!(
        codecs.values().sum::<usize>(),
        chunks.len(),
        "one object per distinct chunk: {codecs:?}"
    );
    // What rclone read back is a complete bucket: as a local directory it rebuilds
    // every file, checked with `cmp` and `sha256sum`.
    reconstruct_and_compare(work.path(), &read_back, &inputs);
    validate(
        "recipe.schema.json",
        &files_under(&read_back.join("recipes"), None),
    );
}
