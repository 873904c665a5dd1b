//! `panini worker` as a process: it refuses to start without credentials, it drains and
//! exits 0 on SIGTERM with an idle client attached (the shutdown deadline ends the
//! connection), and it still drains on SIGTERM with the OpenCL engine loaded (PoCL's
//! LLVM replaced the worker's SIGTERM handler, issue #14 item 9).
//!
//! Every process is killed when its handle drops; every wait has a deadline.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chunk_model::layout::{DATA_FILE, chunk_dir_name};
use chunk_model::{ChunkInfo, Priority, Sha256Digest, WebhookRequest};

const TOKEN: &str = "worker-token-for-the-signal-tests";
const SECRET: &str = "whsec_c2lnbmFsLXRlc3RzLXNpZ25pbmcta2V5";
const DEADLINE: Duration = Duration::from_secs(60);

fn panini() -> &'static str {
    env!("CARGO_BIN_EXE_panini")
}

/// A `panini worker` process, killed when dropped, its stderr collected.
struct WorkerProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    port: Option<u16>,
}

impl WorkerProcess {
    /// Starts `panini worker` with `args` and `env`; waits until it says where it
    /// listens, or until it exits (then `port` is `None`).
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(panini());
        command
            .arg("worker")
            .args(args)
            .env_remove("COLAB_AUTH_TOKEN")
            .env_remove("PANINI_WEBHOOK_SECRET")
            .env_remove("PANINI_READ_TOKEN")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("panini worker starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(at) = line.find("http://127.0.0.1:") {
                    let rest = &line[at + "http://127.0.0.1:".len()..];
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = port_tx.send(port.parse::<u16>().ok());
                    sent = true;
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            // Exited without saying where it listens.
            let _ = port_tx.send(None);
        });
        let port = port_rx
            .recv_timeout(DEADLINE)
            .expect("the worker listens or exits in time");
        Self { child, log, port }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the exit (a worker that did not listen exits on its own).
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The log thread ends with the pipe; give it a moment to catch up.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status and how long it took.
    fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.wait();
        (status, started.elapsed())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A checkout with one chunk (`pending_compression/f/chunk_0000/data.bin`) and a bucket.
fn tree(dir: &Path, len: usize) -> ChunkInfo {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let chunk_path = format!("pending_compression/f/{}", chunk_dir_name(0, 1));
    let chunk_dir = dir.join("repo").join(&chunk_path);
    std::fs::create_dir_all(&chunk_dir).unwrap();
    std::fs::write(chunk_dir.join(DATA_FILE), &bytes).unwrap();
    std::fs::create_dir_all(dir.join("bucket")).unwrap();
    ChunkInfo {
        chunk_path,
        chunk_id: 0,
        pattern_type: "FIXED_SIZE".into(),
        size: len as u64,
        hash: Some(Sha256Digest::of(&bytes)),
        base_dir: "pending_compression/f".into(),
        is_keyframe: false,
        priority: Priority::Normal,
        staged_object: None,
        extra: Default::default(),
    }
}

fn worker_args(dir: &Path, engine: &str) -> Vec<String> {
    worker_args_on(dir, engine, "127.0.0.1:0")
}

fn worker_args_on(dir: &Path, engine: &str, listen: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        listen.into(),
        "--source-root".into(),
        dir.join("repo").display().to_string(),
        "--bucket".into(),
        dir.join("bucket").display().to_string(),
        "--engine".into(),
        engine.into(),
    ]
}

fn credentials() -> Vec<(&'static str, &'static str)> {
    vec![
        ("COLAB_AUTH_TOKEN", TOKEN),
        ("PANINI_WEBHOOK_SECRET", SECRET),
    ]
}

/// Posts `chunk` to the worker as the dispatcher does (token and signature) and returns
/// the HTTP status.
fn post_signed(port: u16, chunk: &ChunkInfo) -> u16 {
    let body = serde_json::to_vec(&WebhookRequest::CompressBatch {
        chunks: vec![chunk.clone()],
        repository: None,
        workflow: None,
    })
    .unwrap();
    let key = dispatcher::signing::signing_key(SECRET).unwrap();
    let id = dispatcher::signing::new_delivery_id();
    let timestamp = chrono::Utc::now().timestamp();
    let signature = dispatcher::signing::sign(&key, &id, timestamp, &body);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nwebhook-id: {id}\r\n\
         webhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

/// What is wrong, the environment, extra arguments, and what the error must say.
type Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static [&'static str],
    &'static str,
);

#[test]
fn a_worker_without_credentials_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), 100);
    let args = worker_args(dir.path(), "cpu");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let anywhere = worker_args_on(dir.path(), "cpu", "0.0.0.0:0");
    let anywhere: Vec<&str> = anywhere.iter().map(String::as_str).collect();

    let cases: [Case; 5] = [
        ("nothing", vec![], &[], "refusing to start"),
        (
            "a token without a secret",
            vec![("COLAB_AUTH_TOKEN", TOKEN)],
            &[],
            "PANINI_WEBHOOK_SECRET",
        ),
        (
            "whsec_ with no key",
            vec![
                ("COLAB_AUTH_TOKEN", TOKEN),
                ("PANINI_WEBHOOK_SECRET", "whsec_"),
            ],
            &[],
            "PANINI_WEBHOOK_SECRET",
        ),
        (
            "a short token",
            vec![
                ("COLAB_AUTH_TOKEN", "short"),
                ("PANINI_WEBHOOK_SECRET", SECRET),
            ],
            &[],
            "at least 16",
        ),
        (
            "--insecure off loopback",
            vec![],
            &["--insecure"],
            "loopback",
        ),
    ];
    for (what, env, extra, expected) in cases {
        let mut all = if extra.contains(&"--insecure") {
            anywhere.clone()
        } else {
            args.clone()
        };
        all.extend_from_slice(extra);
        let mut worker = WorkerProcess::start(&all, &env);
        assert_eq!(worker.port, None, "{what}: it listened:\n{}", worker.log());
        let status = worker.wait();
        assert!(!status.success(), "{what}");
        let log = worker.log();
        assert!(log.contains(expected), "{what}: {log}");
    }

    // The token is not an argument any more (visible in ps).
    let mut all = args.clone();
    all.extend_from_slice(&["--token", TOKEN]);
    let mut worker = WorkerProcess::start(&all, &credentials());
    assert_eq!(worker.port, None);
    assert!(!worker.wait().success());
}

#[test]
fn sigterm_with_an_idle_client_attached_exits_within_the_shutdown_deadline() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), 100);
    let mut args = worker_args(dir.path(), "cpu");
    // Only the shutdown deadline can end the stalled connection.
    args.extend(["--header-read-timeout", "600", "--shutdown-timeout", "2"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut worker = WorkerProcess::start(&args, &credentials());
    let port = worker.port.expect("the worker listens");

    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(b"GET /heal").unwrap();
    // A served request first, so the stalled connection has surely been accepted.
    let mut probe = TcpStream::connect(("127.0.0.1", port)).unwrap();
    probe.set_read_timeout(Some(DEADLINE)).unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = probe.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let (status, took) = worker.terminate();
    let log = worker.log();
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        log.contains("bearer token on, webhook signatures on"),
        "says which checks are on: {log}"
    );
    // Two seconds of deadline; generous for a loaded machine, far from "forever".
    assert!(took < Duration::from_secs(45), "took {took:?}:\n{log}");
    drop(idle);
}

#[test]
fn an_opencl_worker_that_accepted_work_drains_on_sigterm() {
    if !gpu_compress::opencl::BUILT {
        println!("skipped: this build has no OpenCL engine");
        return;
    }
    if let Err(e) = gpu_compress::opencl::device() {
        println!("skipped: no OpenCL device here ({e})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Large enough to take the device some time, small enough for PoCL on a CPU.
    let chunk = tree(dir.path(), 4 << 20);
    let args = worker_args(dir.path(), "opencl");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut worker = WorkerProcess::start(&args, &credentials());
    let Some(port) = worker.port else {
        let log = worker.log();
        assert!(
            log.contains("OpenCL") || log.contains("opencl"),
            "the worker did not start:\n{log}"
        );
        println!("skipped: the OpenCL engine does not start here:\n{log}");
        return;
    };
    assert_eq!(post_signed(port, &chunk), 202, "{}", worker.log());
    let (status, _) = worker.terminate();
    let log = worker.log();
    assert!(
        status.success(),
        "exit {status} (143: killed by SIGTERM):\n{log}"
    );
    assert!(log.contains("shutting down"), "{log}");
    // The worker's own check (a `sigaction` query after the engine was built): the
    // driver did not keep SIGTERM.
    assert!(!log.contains("SIGTERM is not handled"), "{log}");
    assert!(
        log.contains("completed=1"),
        "the accepted chunk was finished:\n{log}"
    );
    let record = dir
        .path()
        .join("bucket")
        .join(chunk_model::object_keys::status_record(
            &chunk.hash.unwrap(),
        ));
    assert!(record.exists(), "{} missing:\n{log}", record.display());
}
