//! The `panini` command line as a user runs it (issue #15): the built binary, spawned,
//! on real files in a temporary directory, its exit code and output checked.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn panini(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_panini"))
        .args(args)
        .current_dir(cwd)
        // Nothing from the developer's shell decides what these runs do.
        .env_remove("GOOGLE_ONE_BUCKET")
        .env_remove("STORAGE_EMULATOR_HOST")
        .env_remove("COLAB_AUTH_TOKEN")
        .env_remove("PANINI_WEBHOOK_SECRET")
        .env_remove("RUST_LOG")
        .output()
        .expect("the panini binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code `code`, or a panic that shows what the command said.
fn expect_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// stdout is exactly one JSON document.
fn one_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            text(&out.stdout)
        )
    })
}

/// `value` has every field its published schema (docs/schemas/`file`) requires, and no
/// field the schema does not name.
fn matches_schema(value: &serde_json::Value, file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/schemas")
        .join(file);
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in schema["required"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        assert!(
            value.get(key).is_some(),
            "{file}: {key} missing in {value:#}"
        );
    }
    for key in value.as_object().unwrap().keys() {
        assert!(
            schema["properties"].get(key).is_some(),
            "{file}: {key} not in the schema"
        );
    }
}

fn write_log(path: &Path, lines: usize) {
    let body: String = (0..lines)
        .map(|i| format!("2026-11-30T12:00:{:02} INFO request {i} served\n", i % 60))
        .collect();
    std::fs::write(path, body).unwrap();
}

// Item 1: a run never deletes a tree it did not create; the default work directory is
// ./panini-work, beside where the user runs.
#[test]
fn pipeline_leaves_a_foreign_tree_alone_and_works_in_panini_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    write_log(&file, 2000);
    // A tree of the user's own, with a status that must survive.
    let manual = dir.path().join("pending_compression/manual/chunk_0000");
    std::fs::create_dir_all(&manual).unwrap();
    std::fs::write(manual.join("metadata.json"), "{\"status\":\"completed\"}").unwrap();

    let out = panini(
        &[
            "pipeline",
            "--work-dir",
            ".",
            "app.log",
            "--workers",
            "1",
            "--engine",
            "cpu",
        ],
        dir.path(),
    );
    expect_code(&out, 1, "a foreign tree in the work directory");
    assert!(
        text(&out.stderr).contains("not created by a pipeline run"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(manual.join("metadata.json")).unwrap(),
        "{\"status\":\"completed\"}"
    );

    // Without --work-dir: ./panini-work, twice (the second run replaces its own tree).
    for run in 0..2 {
        let out = panini(
            &["pipeline", "app.log", "--workers", "1", "--engine", "cpu"],
            dir.path(),
        );
        expect_code(&out, 0, &format!("pipeline run {run}"));
        assert!(
            dir.path()
                .join("panini-work/pending_compression/app")
                .is_dir()
        );
        let stdout = text(&out.stdout);
        // Item 11: plurals minded; sizes in the tables are human.
        assert!(stdout.contains("to 1 worker"), "{stdout}");
        assert!(!stdout.contains("1 workers"), "{stdout}");
        assert!(
            stdout.contains(" KiB") || stdout.contains(" MiB"),
            "{stdout}"
        );
        if run == 1 {
            // Item 11: the second run stored nothing, and says so (not the workers'
            // lifetime counts).
            assert!(stdout.contains("this run stored 0 chunks"), "{stdout}");
        }
        // Item 8: stderr is not a terminal here, so no progress bar is drawn on it.
        let stderr = text(&out.stderr);
        assert!(!stderr.contains('\r') && !stderr.contains("=>"), "{stderr}");
    }
    assert!(manual.join("metadata.json").is_file());

    // --json: one document with every field its published schema requires.
    let out = panini(
        &[
            "pipeline",
            "app.log",
            "--workers",
            "1",
            "--engine",
            "cpu",
            "--json",
        ],
        dir.path(),
    );
    expect_code(&out, 0, "pipeline --json");
    let report = one_json(&out);
    matches_schema(&report, "pipeline_report.schema.json");
    assert_eq!(report["chunks_stored_now"], 0, "{report:#}");
}

// Item 2: bucket URLs are parsed strictly; read-only commands create nothing.
#[test]
fn bucket_urls_are_strict_and_reading_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["verify", "--bucket", "gs:/x"], "gs:// "),
        (
            vec!["verify", "--bucket", "s3://b/p"],
            "s3:// is not supported",
        ),
        (vec!["sync", "--bucket", "gs:/x"], "gs://bucket[/prefix]"),
        (vec!["verify", "--bucket", "bukcet"], "no bucket directory"),
        (
            vec!["reconstruct", "x", "--bucket", "bukcet", "-o", "x"],
            "no bucket directory",
        ),
    ] {
        let out = panini(&args, dir.path());
        expect_code(&out, 1, &format!("{args:?}"));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(needle) || stderr.contains("must be followed by //"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1
        );
    }
    let out = panini(
        &["pipeline", "--bucket", "gs:/x", "--sample-size", "1M"],
        dir.path(),
    );
    expect_code(&out, 1, "pipeline --bucket gs:/x");
    assert!(
        !dir.path().join("gs:").exists(),
        "a directory named gs: appeared"
    );
    assert!(
        !dir.path().join("bukcet").exists(),
        "verify created the bucket"
    );
    assert!(
        !dir.path().join("x").exists(),
        "reconstruct wrote an output"
    );
}

// Item 3: with --json, stdout is exactly one JSON document, for every command that has it.
#[test]
fn json_output_is_one_document() {
    let dir = tempfile::tempdir().unwrap();
    write_log(&dir.path().join("app.log"), 3000);

    let out = panini(
        &["chunk", "app.log", "--chunk-size", "16K", "--json"],
        dir.path(),
    );
    expect_code(&out, 0, "chunk --json");
    assert_eq!(one_json(&out)["chunked"][0]["name"], "app");

    let out = panini(&["detect", "--json"], dir.path());
    expect_code(&out, 0, "detect --json");
    one_json(&out);

    let out = panini(&["dispatch", "--dry-run", "--json"], dir.path());
    expect_code(&out, 0, "dispatch --dry-run --json");
    assert!(one_json(&out).is_array());
    // Nobody listens on this port: every delivery fails, and the report still is one
    // plain document (no Rust `Ok`/`Err` in it) with the count in it, not after it.
    let out = panini(
        &[
            "dispatch",
            "--webhook",
            "http://127.0.0.1:9/webhook",
            "--no-metadata",
            "--json",
        ],
        dir.path(),
    );
    expect_code(&out, 1, "dispatch to nobody");
    let report = one_json(&out);
    assert_eq!(report["accepted_chunks"], 0);
    assert!(!text(&out.stdout).contains("\"Err\""));
    assert_eq!(report["deliveries"][0]["accepted"], false);
    matches_schema(&report, "dispatch_output.schema.json");

    let out = panini(
        &[
            "upload", "app", "--bucket", "bucket", "--codec", "zstd", "--engine", "cpu", "--json",
        ],
        dir.path(),
    );
    expect_code(&out, 0, "upload --json");
    let upload = one_json(&out);
    assert!(upload["chunks_stored"].as_u64().unwrap() > 0);
    matches_schema(&upload, "upload_output.schema.json");

    let out = panini(&["verify", "--bucket", "bucket", "--json"], dir.path());
    expect_code(&out, 0, "verify --json");
    let verify = one_json(&out);
    assert_eq!(verify["files"][0]["ok"], true);
    matches_schema(&verify, "verify_output.schema.json");

    let out = panini(
        &[
            "reconstruct",
            "app",
            "--bucket",
            "bucket",
            "-o",
            "rebuilt.log",
            "--json",
        ],
        dir.path(),
    );
    expect_code(&out, 0, "reconstruct --json");
    let rebuilt = one_json(&out);
    assert_eq!(rebuilt["name"], "app");
    matches_schema(&rebuilt, "reconstruct_output.schema.json");
    assert_eq!(
        std::fs::read(dir.path().join("rebuilt.log")).unwrap(),
        std::fs::read(dir.path().join("app.log")).unwrap()
    );

    let out = panini(
        &[
            "compress",
            "app.log",
            "-o",
            "app.log.zst",
            "--codec",
            "zstd",
            "--json",
        ],
        dir.path(),
    );
    expect_code(&out, 0, "compress --json");
    let stats = one_json(&out);
    assert_eq!(stats["codec"], "zstd");
    matches_schema(&stats, "compress_output.schema.json");
}

// Item 4: a reader that goes away ends the command quietly, not with a panic.
#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    write_log(&dir.path().join("app.log"), 3000);
    let out = panini(&["chunk", "app.log", "--chunk-size", "8K"], dir.path());
    expect_code(&out, 0, "chunk");
    panini(&["detect"], dir.path());
    for args in [
        vec!["status"],
        vec!["dispatch", "--dry-run", "--per-chunk"],
        vec!["chunk", "app.log", "--name", "again", "--chunk-size", "8K"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_panini"))
            .args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the command writes: `… | true`.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        expect_code(&out, 0, &format!("{args:?} into a closed pipe"));
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

// Item 5: `-` is stdin/stdout; an existing output is kept unless --force.
#[test]
fn compress_reads_and_writes_dash_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().unwrap();
    write_log(&dir.path().join("app.log"), 500);
    let original = std::fs::read(dir.path().join("app.log")).unwrap();

    let out = panini(
        &["compress", "app.log", "-o", "-", "--codec", "zstd"],
        dir.path(),
    );
    expect_code(&out, 0, "compress -o -");
    assert!(!dir.path().join("-").exists(), "a file named - was written");
    assert_eq!(
        &out.stdout[..4],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "a zstd frame on stdout"
    );
    std::fs::write(dir.path().join("frame.zst"), &out.stdout).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_panini"))
        .args(["compress", "-", "-o", "t.lz4", "--codec", "lz4"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&original).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 0, "cat f | compress - -o t.lz4");

    let out = panini(&["decompress", "t.lz4", "-o", "-"], dir.path());
    expect_code(&out, 0, "decompress -o -");
    assert_eq!(out.stdout, original);

    // An existing output: refused, untouched; --force replaces it.
    std::fs::write(dir.path().join("keep.zst"), b"precious").unwrap();
    let out = panini(&["compress", "app.log", "-o", "keep.zst"], dir.path());
    expect_code(&out, 1, "compress over an existing file");
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dir.path().join("keep.zst")).unwrap(),
        b"precious"
    );
    let out = panini(&["decompress", "frame.zst", "-o", "app.log"], dir.path());
    expect_code(&out, 1, "decompress over an existing file");
    let out = panini(
        &["compress", "app.log", "-o", "keep.zst", "--force"],
        dir.path(),
    );
    expect_code(&out, 0, "compress --force");
    assert_ne!(
        std::fs::read(dir.path().join("keep.zst")).unwrap(),
        b"precious"
    );
}

// Item 10: one line per error, each cause once, a hint where one exists.
#[test]
fn errors_are_one_line_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("some-dir")).unwrap();

    let out = panini(&["chunk", "/dev/null"], dir.path());
    expect_code(&out, 1, "chunk /dev/null");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/dev/null: not a regular file"), "{stderr}");
    assert!(!stderr.contains("Is a directory"), "{stderr}");

    // A folder is walked (#17); an empty one has nothing to chunk, and says so.
    let out = panini(&["chunk", "some-dir"], dir.path());
    expect_code(&out, 1, "chunk some-dir");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: no files to chunk in some-dir"),
        "{stderr}"
    );

    let out = panini(&["dispatch"], dir.path());
    expect_code(&out, 1, "dispatch without a list");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("chunks_to_process.json").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: run `panini detect` first"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
}

// Items 6 and 7: choices, environment variables and examples in --help; one size and
// one duration syntax; --version; -q.
#[test]
fn help_lists_choices_variables_and_examples() {
    let dir = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| {
        let out = panini(args, dir.path());
        expect_code(&out, 0, &format!("{args:?}"));
        text(&out.stdout)
    };
    let pipeline = help(&["pipeline", "--help"]);
    for needle in [
        "semantic, size, adaptive",
        "auto, cpu, opencl",
        "GOOGLE_ONE_BUCKET",
        "COLAB_AUTH_TOKEN",
        "STORAGE_EMULATOR_HOST",
        "panini-work",
        "Examples:",
    ] {
        assert!(
            pipeline.contains(needle),
            "pipeline --help lacks {needle}:\n{pipeline}"
        );
    }
    let dispatch = help(&["dispatch", "--help"]);
    for needle in [
        "COLAB_AUTH_TOKEN",
        "PANINI_WEBHOOK_SECRET",
        "--token",
        "Examples:",
    ] {
        assert!(dispatch.contains(needle), "dispatch --help lacks {needle}");
    }
    for command in [
        "verify",
        "chunk",
        "status",
        "compress",
        "decompress",
        "detect",
        "apply-callback",
        "dispatch",
        "gen-token",
        "worker",
        "sync",
        "upload",
        "reconstruct",
    ] {
        let long = help(&[command, "--help"]);
        assert!(long.contains("Example"), "{command} --help has no example");
    }
    assert!(help(&["upload", "--help"]).contains("GOOGLE_ONE_BUCKET"));
    assert!(help(&["--version"]).starts_with("panini "));

    // A wrong choice is a usage error that lists the choices.
    let out = panini(&["chunk", "x", "--strategy", "fast"], dir.path());
    expect_code(&out, 2, "--strategy fast");
    assert!(text(&out.stderr).contains("semantic"));

    // Sizes and durations in one syntax each, everywhere: parsing succeeds (exit 1 from
    // the missing input, not 2 from the command line).
    for args in [
        vec!["chunk", "missing", "--chunk-size", "1GiB"],
        vec![
            "pipeline",
            "missing",
            "--chunk-size",
            "4M",
            "--lease",
            "90s",
            "--timeout",
            "30m",
            "--work-dir",
            "w",
        ],
        vec![
            "upload",
            "x",
            "--bucket",
            "b",
            "--max-bytes-per-second",
            "4M",
            "--retry-deadline",
            "90s",
        ],
        vec!["detect", "--lease", "30m", "--base", "missing"],
    ] {
        let out = panini(&args, dir.path());
        assert_ne!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // Item 8: a file large enough for a progress bar draws none when stderr is not a
    // terminal, and the summary gives human sizes.
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 20 << 20]).unwrap();
    let out = panini(&["chunk", "big.bin", "--chunk-size", "4M"], dir.path());
    expect_code(&out, 0, "chunk big.bin");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("20.00 MiB"),
        "{}",
        text(&out.stdout)
    );

    std::fs::write(dir.path().join("a.txt"), "hello\n".repeat(100)).unwrap();
    // Item 9: logs go to stderr, honour RUST_LOG in every command, and carry no colour
    // codes when stderr is not a terminal.
    let out = Command::new(env!("CARGO_BIN_EXE_panini"))
        .args(["chunk", "a.txt", "--name", "logged"])
        .current_dir(dir.path())
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    expect_code(&out, 0, "RUST_LOG=trace chunk");
    assert!(!text(&out.stderr).contains('\x1b'), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("TRACE"), "logs went to stdout");

    // -q: nothing but the result.
    let out = panini(&["-q", "chunk", "a.txt"], dir.path());
    expect_code(&out, 0, "-q chunk");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}
