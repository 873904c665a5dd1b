//! Running the real `xtask` binary from tests: with a wall-clock limit, its output kept,
//! and children that are killed when a test fails.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bucket the emulator of these tests starts with.
pub const BUCKET: &str = "panini-test";

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// Everything, for an assertion message.
    pub fn text(&self) -> String {
        format!(
            "status {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }

    /// stdout as the JSON document `--json` prints.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.text()))
    }
}

/// `xtask ARGS` in `cwd`, as this build is (no re-execution through cargo with other
/// features), quiet logs.
pub fn command(args: &[&str], cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args(args)
        .current_dir(cwd)
        .env("PANINI_XTASK_OPENCL", "0")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null());
    command
}

/// Runs `xtask ARGS` to the end, killing it after `limit`.
pub fn xtask(args: &[&str], cwd: &Path, limit: Duration) -> Output {
    Running::spawn(command(args, cwd)).wait(limit)
}

/// A child process, killed when dropped (a failing test leaks nothing).
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    /// stderr as read so far, for waiting on a line while the process runs.
    stderr_so_far: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    /// Starts `command` with its output captured.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xtask starts");
        // Drained on threads so a chatty child never blocks on a full pipe; what has
        // been read is visible at once through `seen`.
        let drain = |mut pipe: Box<dyn std::io::Read + Send>, seen: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut buffer = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buffer[..n]);
                }
                std::mem::take(&mut *seen.lock().unwrap())
            })
        };
        let stderr_so_far = Arc::new(Mutex::new(Vec::new()));
        let stdout = drain(Box::new(child.stdout.take().unwrap()), Arc::default());
        let stderr = drain(
            Box::new(child.stderr.take().unwrap()),
            stderr_so_far.clone(),
        );
        Self {
            child: Some(child),
            stdout: Some(stdout),
            stderr: Some(stderr),
            stderr_so_far,
        }
    }

    /// What the process has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr_so_far.lock().unwrap()).into_owned()
    }

    /// `true` while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// Waits for the end, killing the process after `limit`.
    pub fn wait(mut self, limit: Duration) -> Output {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().unwrap();
                let output = self.collect(status);
                panic!("killed after {limit:?}:\n{}", output.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.collect(status)
    }

    /// SIGTERM, as systemd or Kubernetes stop a service; the process may finish its work.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid} failed");
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill(mut self) -> Output {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let status = child.wait().unwrap();
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: self.stdout.take().unwrap().join().unwrap_or_default(),
            stderr: self.stderr.take().unwrap().join().unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port that was free a moment ago. Another test may take it before it is used: only
/// for a port that must be reused on purpose (a worker restarted where it was); a new
/// server should bind port 0 and say where it is ([`start_worker_on_any_port`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `addr` over HTTP/1.0 with short timeouts: the body when it answers 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    http_get_as(addr, path, None)
}

/// [`http_get`] with `Authorization: Bearer TOKEN` (a worker's `/status`, `/failures`
/// and `/metrics` need it).
pub fn http_get_as(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fake-gcs-server for this test, with [`BUCKET`].
pub fn start_emulator() -> gcs_emulator::Emulator {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = gcs_emulator::find_binary(&root).unwrap_or_else(|e| panic!("{e}"));
    gcs_emulator::Emulator::start(&binary, &[BUCKET]).unwrap_or_else(|e| panic!("{e}"))
}

/// `xtask worker` on 127.0.0.1:`port` (CPU engine), serving the repository at `root`
/// into `bucket` (reached at `gcs_endpoint` when it is a `gs://` bucket), requiring
/// `token`; returned once it answers `/healthz`.
pub fn start_worker(
    port: u16,
    root: &Path,
    bucket: &str,
    gcs_endpoint: Option<&str>,
    token: &str,
) -> Running {
    start_worker_listening(
        &format!("127.0.0.1:{port}"),
        root,
        bucket,
        gcs_endpoint,
        token,
    )
    .0
}

/// [`start_worker`] on a port the worker binds itself (`127.0.0.1:0`): no port is picked
/// and released for another test to take. Returns the worker and its address, read from
/// its `listening on` log line.
pub fn start_worker_on_any_port(
    root: &Path,
    bucket: &str,
    gcs_endpoint: Option<&str>,
    token: &str,
) -> (Running, SocketAddr) {
    start_worker_listening("127.0.0.1:0", root, bucket, gcs_endpoint, token)
}

fn start_worker_listening(
    listen: &str,
    root: &Path,
    bucket: &str,
    gcs_endpoint: Option<&str>,
    token: &str,
) -> (Running, SocketAddr) {
    let mut command = command(
        &[
            "worker",
            "--listen",
            listen,
            "--source-root",
            root.to_str().unwrap(),
            "--bucket",
            bucket,
            "--engine",
            "cpu",
            // A token but no webhook secret: allowed on loopback only, and only when
            // said so (a worker otherwise refuses to start without both).
            "--insecure",
        ],
        root,
    );
    command.env("COLAB_AUTH_TOKEN", token);
    // The line that says where it listens (the rest stays quiet).
    command.env("RUST_LOG", "error,panini::cli::serve_worker=info");
    if let Some(endpoint) = gcs_endpoint {
        command.env("STORAGE_EMULATOR_HOST", endpoint);
    }
    let mut worker = Running::spawn(command);
    let mut addr = None;
    wait_until(
        "the worker says where it listens",
        Duration::from_secs(120),
        || {
            assert!(
                worker.is_running(),
                "worker on {listen} exited:\n{}",
                worker.stderr_so_far()
            );
            addr = listening_address(&worker.stderr_so_far());
            addr.is_some()
        },
    );
    let addr = addr.unwrap();
    wait_until(
        "the worker answers /healthz",
        Duration::from_secs(120),
        || {
            assert!(worker.is_running(), "worker on {addr} exited");
            http_get(addr, "/healthz").is_some()
        },
    );
    (worker, addr)
}

/// The address in a `listening on http://ADDR/webhook` log line.
fn listening_address(log: &str) -> Option<SocketAddr> {
    let (_, rest) = log.split_once("listening on http://")?;
    rest.split_once("/webhook")?.0.parse().ok()
}
