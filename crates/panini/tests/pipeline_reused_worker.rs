//! `panini pipeline --worker URL` against a `panini worker` process: one that served
//! earlier runs (issue #15, item 11), where the report counts this run only — chunks
//! stored now, chunks found stored, bytes, the ratio — and says "1 worker", not "1
//! workers"; and a big file, whose chunks reach the worker service while the file is
//! still being cut (issue #17), as they reach in-process workers.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "token-for-the-reused-worker-test";
const SECRET: &str = "whsec_cmV1c2VkLXdvcmtlci10ZXN0LWtleQ==";

/// A `panini worker` process, killed when dropped.
struct Worker {
    child: Child,
    port: u16,
    /// Its log lines so far (stderr, `RUST_LOG=info`).
    log: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(source_root: &Path, bucket: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_panini"))
            .args(["worker", "--listen", "127.0.0.1:0", "--engine", "cpu"])
            .arg("--source-root")
            .arg(source_root)
            .arg("--bucket")
            .arg(bucket)
            .env("COLAB_AUTH_TOKEN", TOKEN)
            .env("PANINI_WEBHOOK_SECRET", SECRET)
            .env_remove("GOOGLE_ONE_BUCKET")
            .env_remove("STORAGE_EMULATOR_HOST")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once("listening on http://127.0.0.1:") {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = port_tx.send(port.parse::<u16>().ok());
                }
                lines.lock().unwrap().push(line);
            }
            let _ = port_tx.send(None);
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .expect("the worker listens");
        Self { child, port, log }
    }

    /// The chunk counts of the webhooks it logged as accepted, in log order. The worker
    /// logs a webhook before answering it, and the pipeline has had every answer.
    fn accepted_requests(&self) -> Vec<u64> {
        support::accepted_requests(self.log.lock().unwrap().iter().map(String::as_str))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipeline(dir: &Path, worker: &Worker, files: &[&str], json: bool) -> Output {
    let webhook = format!("http://127.0.0.1:{}/webhook", worker.port);
    let mut command = Command::new(env!("CARGO_BIN_EXE_panini"));
    command
        .arg("pipeline")
        .args(files)
        .args(["--worker", &webhook, "--work-dir", "work", "--bucket"])
        .arg(dir.join("bucket"))
        .args([
            "--strategy",
            "size",
            "--chunk-size",
            "64K",
            "--timeout",
            "2m",
        ])
        .current_dir(dir)
        .env("COLAB_AUTH_TOKEN", TOKEN)
        .env("PANINI_WEBHOOK_SECRET", SECRET)
        .env_remove("GOOGLE_ONE_BUCKET")
        .env_remove("STORAGE_EMULATOR_HOST");
    if json {
        command.arg("--json");
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "pipeline {files:?}: exit {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Text that compresses, different for each `seed`.
fn words(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let vocabulary = ["chunk ", "worker ", "bucket ", "recipe ", "panini\n"];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(vocabulary[(state % 5) as usize].as_bytes());
        out.extend_from_slice(&state.to_le_bytes()[..2]);
    }
    out.truncate(len);
    out
}

#[test]
fn a_reused_worker_reports_this_runs_counts_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // 4 chunks of 64 KiB (the last one short) and 2.
    std::fs::write(root.join("a.bin"), words(1, 200_000)).unwrap();
    std::fs::write(root.join("b.bin"), words(2, 100_000)).unwrap();
    // The worker serves the pipeline's tree (work/pending_compression) and bucket.
    std::fs::create_dir_all(root.join("work")).unwrap();
    let worker = Worker::start(&root.join("work"), &root.join("bucket"));

    let first = report(&pipeline(root, &worker, &["a.bin"], true));
    assert_eq!(first["chunks_stored_now"], 4, "{first:#}");
    assert_eq!(first["chunks_already_stored"], 0, "{first:#}");
    let first_bytes = first["bytes_stored_now"].as_u64().unwrap();
    assert!(first_bytes > 0 && first_bytes < 200_000, "{first:#}");

    // The same worker again, with the first file and a new one: only the new file's
    // chunks are stored now; the first file's are found stored.
    let second = report(&pipeline(root, &worker, &["a.bin", "b.bin"], true));
    assert_eq!(second["chunks_stored_now"], 2, "{second:#}");
    assert_eq!(second["chunks_already_stored"], 4, "{second:#}");
    assert_eq!(second["bytes_in"], 300_000, "{second:#}");
    let second_bytes = second["bytes_stored_now"].as_u64().unwrap();
    assert!(second_bytes > 0 && second_bytes < 100_000, "{second:#}");
    // The ratio is this run's files over the objects they take, not 0.
    let stored: u64 = second["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["stored_bytes"].as_u64().unwrap())
        .sum();
    // What the files' chunk objects take, read from the bucket directory itself (the two
    // files share no chunk): the rebuild counts each object as it reads it.
    let on_disk: u64 = std::fs::read_dir(root.join("bucket/chunks"))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(stored, on_disk, "{second:#}");
    let ratio = second["ratio"].as_f64().unwrap();
    assert!(
        (ratio - 300_000.0 / stored as f64).abs() < 1e-9,
        "{second:#}"
    );
    assert!(ratio > 1.0, "{second:#}");
    assert_eq!(
        support::stage_row(&second, "dispatch")["note"],
        "6 chunks over HTTP to 1 worker",
        "{second:#}"
    );
    assert!(
        second["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["verified"] == true),
        "{second:#}"
    );

    // A third run that stores nothing says so, in words.
    let third = pipeline(root, &worker, &["a.bin", "b.bin"], false);
    let stdout = String::from_utf8_lossy(&third.stdout);
    assert!(
        stdout.contains("this run stored 0 chunks (0 B), 6 chunks already in the bucket"),
        "{stdout}"
    );
    assert!(stdout.contains("over HTTP to 1 worker\n"), "{stdout}");
    assert!(
        stdout.contains("nothing uploaded: every chunk was already in the bucket"),
        "{stdout}"
    );
}

#[test]
fn a_big_files_chunks_reach_a_worker_service_while_the_file_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // 40 chunks of at most 64 KiB.
    let input = root.join("big.bin");
    std::fs::write(&input, words(3, 40 * 65_536 - 1_000)).unwrap();
    std::fs::create_dir_all(root.join("work")).unwrap();
    let worker = Worker::start(&root.join("work"), &root.join("bucket"));

    let report = report(&pipeline(root, &worker, &["big.bin"], true));
    assert_eq!(report["files"][0]["verified"], true, "{report:#}");
    assert_eq!(report["chunks_stored_now"], 40, "{report:#}");
    assert_eq!(
        support::stage_row(&report, "dispatch")["note"],
        "40 chunks over HTTP to 1 worker",
        "each chunk dispatched once: {report:#}"
    );
    // 32 chunks went out as they were cut, in the dispatcher's requests of at most 10,
    // and the last 8 once the file's tree was complete; cut first and dispatched after,
    // they would have been four requests of 10. The worker, reading the checkout, found
    // no manifest until the end, and that was no failure.
    let mut requests = worker.accepted_requests();
    requests.sort_unstable();
    assert_eq!(
        requests,
        [2, 8, 10, 10, 10],
        "{:#?}",
        worker.log.lock().unwrap()
    );

    let warnings: Vec<String> = (worker.log.lock().unwrap().iter())
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .cloned()
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");

    let args = [
        "reconstruct",
        "big",
        "--bucket",
        "bucket",
        "--output",
        "big.rebuilt",
    ];
    support::panini_ok(&args, root, &[]);
    let rebuilt = root.join("big.rebuilt");
    assert_eq!(support::sha256sum(&rebuilt), support::sha256sum(&input));
}
