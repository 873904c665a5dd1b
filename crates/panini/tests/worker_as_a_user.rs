//! `panini worker` as an operator runs it (issue #15, items 1, 2 and 9): its options in
//! the shared vocabulary with every environment variable and an example in `--help`,
//! its name from the system's host name, and its log on stderr: one line per batch, per
//! refused request and per failed chunk, with `RUST_LOG` honoured and no colour codes
//! when stderr is not a terminal.
//!
//! The chunks come from `panini chunk` and `panini detect`, and are sent by `panini
//! dispatch`, as a user does; every process is killed when its handle drops.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chunk_model::{ChunkInfo, Sha256Digest};

const TOKEN: &str = "worker-token-for-the-user-tests";
const SECRET: &str = "whsec_dXNlci10ZXN0cy1zaWduaW5nLWtleQ==";
const DEADLINE: Duration = Duration::from_secs(60);

fn panini(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_panini"))
        .args(args)
        .current_dir(dir)
        .env("COLAB_AUTH_TOKEN", TOKEN)
        .env("PANINI_WEBHOOK_SECRET", SECRET)
        .env_remove("GOOGLE_ONE_BUCKET")
        .env_remove("STORAGE_EMULATOR_HOST")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeds(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A `panini worker` process, its stderr collected line by line.
struct Worker {
    child: Child,
    log: Arc<Mutex<String>>,
    port: u16,
}

impl Worker {
    fn start(args: &[&str], dir: &Path, rust_log: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_panini"))
            .arg("worker")
            .args(args)
            .current_dir(dir)
            .env_remove("COLAB_AUTH_TOKEN")
            .env_remove("PANINI_READ_TOKEN")
            .env_remove("GOOGLE_ONE_BUCKET")
            .env_remove("STORAGE_EMULATOR_HOST")
            .env("PANINI_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once("listening on http://127.0.0.1:") {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = port_tx.send(port.parse::<u16>().ok());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            let _ = port_tx.send(None);
        });
        let port = port_rx.recv_timeout(DEADLINE).ok().flatten();
        let port =
            port.unwrap_or_else(|| panic!("the worker did not listen:\n{}", log.lock().unwrap()));
        Self { child, log, port }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn webhook(&self) -> String {
        format!("http://127.0.0.1:{}/webhook", self.port)
    }

    /// Waits until the log has `n` lines containing `needle`.
    fn wait_for_lines(&self, needle: &str, n: usize) -> String {
        self.wait_until(&format!("{n} lines with {needle:?}"), |log| {
            log.lines().filter(|l| l.contains(needle)).count() >= n
        })
    }

    /// Waits until the field `key` of the lines containing `needle` adds up to `n`.
    fn wait_for_sum(&self, needle: &str, key: &str, n: u64) -> String {
        self.wait_until(
            &format!("{key} of {needle:?} lines adding up to {n}"),
            |log| sum(log, needle, key) >= n,
        )
    }

    /// Waits until the log satisfies `done`; fails the test with the log after
    /// [`DEADLINE`].
    fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {what}:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status and what was left on stdout.
    fn terminate(mut self) -> (std::process::ExitStatus, String, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "no exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut stdout).unwrap();
        // The log thread ends with the pipe; give it a moment to catch up.
        std::thread::sleep(Duration::from_millis(200));
        (status, stdout, self.log())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `key=value` fields of a log line (tracing's text format).
fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// The sum of the numeric field `key` over the lines containing `needle`.
fn sum(log: &str, needle: &str, key: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(|l| fields(l)[key].parse::<u64>().unwrap())
        .sum()
}

/// Sends `chunks` signed, as the dispatcher does, or with another token; the status.
fn post(worker: &Worker, chunks: Vec<ChunkInfo>, token: &str) -> u16 {
    let endpoint = dispatcher::Endpoint::from_url(worker.webhook());
    let mut config = dispatcher::DispatchConfig::new(vec![endpoint]);
    config.token = Some(token.to_owned());
    config.signing_key = Some(dispatcher::signing::signing_key(SECRET).unwrap());
    config.mode = dispatcher::Mode::Batch(100);
    let dispatcher = dispatcher::Dispatcher::new(config).unwrap();
    let delivery = dispatcher.plan(chunks).remove(0);
    let headers = dispatcher.headers(&delivery, chrono::Utc::now().timestamp());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .post(worker.webhook())
            .headers(headers)
            .body(delivery.body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

fn status(worker: &Worker) -> serde_json::Value {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let text = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/status", worker.port))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

#[test]
fn worker_help_speaks_the_shared_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let out = panini(&["worker", "--help"], dir.path());
    succeeds(&out, "worker --help");
    let help = text(&out.stdout);
    for needle in [
        // Every variable the worker reads, options' through clap's `env`.
        "[env: GOOGLE_ONE_BUCKET=",
        "[env: STORAGE_EMULATOR_HOST=",
        "[env: PANINI_GCS_ENDPOINT=",
        "[env: GITHUB_API_URL=",
        "COLAB_AUTH_TOKEN",
        "PANINI_WEBHOOK_SECRET",
        "PANINI_READ_TOKEN",
        "GITHUB_PAT",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "PANINI_OPENCL_DEVICE",
        "RUST_LOG",
        // Choices, sizes and durations in the one syntax, and the secret files.
        "auto, cpu, opencl",
        "--max-chunk-size <SIZE>",
        "[default: 64MiB]",
        "--max-body-size <SIZE>",
        "--shutdown-timeout <DURATION>",
        "[default: 10s]",
        "--fetch-retry-for <DURATION>",
        "--token-file <PATH>",
        "--webhook-secret-file <PATH>",
        "--read-token-file <PATH>",
        "panini-worker@<host name>",
        "Examples:",
    ] {
        assert!(
            help.contains(needle),
            "worker --help lacks {needle}:\n{help}"
        );
    }
    // The old spelling still parses (deployments use it) but is not advertised.
    assert!(!help.contains("body-limit"), "{help}");
    for old in [
        vec!["--body-limit", "1048576"],
        vec!["--header-read-timeout", "600"],
        vec!["--shutdown-timeout", "2"],
    ] {
        let mut args = vec![
            "worker",
            "--bucket",
            "b",
            "--insecure",
            "--listen",
            "0.0.0.0:0",
        ];
        args.extend(old.iter().copied());
        let out = panini(&args, dir.path());
        // Exit 1 (refused: --insecure off loopback), not 2 (a usage error).
        assert_eq!(out.status.code(), Some(1), "{old:?}: {}", text(&out.stderr));
    }
    let out = panini(
        &["worker", "--bucket", "b", "--max-chunk-size", "lots"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn worker_logs_each_batch_refusal_and_failure_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A file of 5 chunks, chunked and listed as a user does.
    let words = "panini worker batch log line ".repeat(12_000);
    std::fs::write(root.join("a.txt"), &words.as_bytes()[..5 * 65_536 - 100]).unwrap();
    succeeds(
        &panini(
            &[
                "chunk",
                "a.txt",
                "--strategy",
                "size",
                "--chunk-size",
                "64K",
            ],
            root,
        ),
        "chunk",
    );
    succeeds(&panini(&["detect"], root), "detect");
    let chunks = dispatcher::read_chunks_file(&root.join("chunks_to_process.json")).unwrap();
    assert_eq!(chunks.len(), 5);
    // The last chunk's bytes change after listing: the worker must refuse it.
    let broken = root.join(&chunks[4].chunk_path).join("data.bin");
    let mut bytes = std::fs::read(&broken).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&broken, bytes).unwrap();
    std::fs::write(root.join("token"), format!("{TOKEN}\n")).unwrap();

    // RUST_LOG decides what is logged: the request lines of worker::api at `info` are
    // filtered out, the batch lines of worker::process and every warning kept.
    let bucket = root.join("bucket");
    let worker = Worker::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--source-root",
            ".",
            "--bucket",
            bucket.to_str().unwrap(),
            "--engine",
            "cpu",
            "--token-file",
            "token",
            "--max-chunk-size",
            "1MiB",
            "--shutdown-timeout",
            "5s",
        ],
        root,
        "warn,panini=info,worker::process=info",
    );

    let host = text(&Command::new("uname").arg("-n").output().unwrap().stdout);
    assert_eq!(
        status(&worker)["worker_id"],
        format!("panini-worker@{}", host.trim()),
        "the worker's name comes from the system's host name"
    );

    let webhook = worker.webhook();
    succeeds(
        &panini(&["dispatch", "--webhook", &webhook], root),
        "dispatch",
    );
    let log = worker.wait_for_sum("batch done", "chunks", 5);
    // One line per batch, whatever the worker made of the request: 4 stored, 1 failed.
    assert_eq!(sum(&log, "batch done", "stored"), 4, "{log}");
    assert_eq!(sum(&log, "batch done", "deduplicated"), 0, "{log}");
    assert_eq!(sum(&log, "batch done", "failed"), 1, "{log}");
    let expected_bytes: u64 = chunks.iter().map(|c| c.size).sum();
    assert_eq!(sum(&log, "batch done", "bytes"), expected_bytes, "{log}");
    for line in log.lines().filter(|l| l.contains("batch done")) {
        let f = fields(line);
        assert_eq!(f["engine"], "cpu", "{line}");
        assert!(f["seconds"].parse::<f64>().is_ok(), "{line}");
    }
    // The failed chunk, with its path and reason.
    let failed = log.lines().find(|l| l.contains("chunk failed")).unwrap();
    assert!(failed.contains(&chunks[4].chunk_path), "{failed}");
    assert!(failed.contains("SHA-256 mismatch"), "{failed}");
    // RUST_LOG filtered worker::api's info lines out.
    assert!(!log.contains("accepted a webhook"), "{log}");

    // Refused requests: one line each, with the status and the reason (which the
    // client is not told for a 401).
    assert_eq!(
        post(&worker, chunks[..1].to_vec(), "not-the-worker-token"),
        401
    );
    let mut huge = chunks[0].clone();
    huge.size = 2 << 20;
    huge.hash = Some(Sha256Digest::of(b"huge"));
    assert_eq!(post(&worker, vec![huge], TOKEN), 400);
    let log = worker.wait_for_lines("refused a webhook", 2);
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused a webhook"))
        .collect();
    assert!(refused[0].contains("status=401"), "{}", refused[0]);
    assert!(refused[0].contains("bearer token"), "{}", refused[0]);
    assert!(refused[1].contains("status=400"), "{}", refused[1]);
    assert!(refused[1].contains("maximum chunk size"), "{}", refused[1]);

    // The same good chunks again: found stored, nothing stored anew.
    assert_eq!(post(&worker, chunks[..4].to_vec(), TOKEN), 202);
    let log = worker.wait_for_sum("batch done", "deduplicated", 4);
    assert_eq!(sum(&log, "batch done", "stored"), 4, "{log}");

    let (exit, stdout, log) = worker.terminate();
    assert!(exit.success(), "exit {exit}:\n{log}");
    assert!(stdout.is_empty(), "logs went to stdout: {stdout}");
    assert!(!log.contains('\x1b'), "colour codes in a piped log:\n{log}");
    assert!(log.contains("stopped"), "{log}");
}
