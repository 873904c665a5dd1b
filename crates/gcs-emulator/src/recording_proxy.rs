//! A TCP proxy on 127.0.0.1 that passes every request through to the emulator and
//! records its request line and headers, so that a test sees what reaches the store:
//! the `Authorization` header of an authenticated client, above all.
//!
//! It needs no async runtime (threads, std sockets), so tests that run the `panini`
//! binary as a child process can use it. To see each request's head without parsing
//! bodies, every request is forwarded with `Connection: close`: the emulator answers it
//! and closes, so each connection carries exactly one request.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST` …
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Every header, in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    stopping: AtomicBool,
}

/// The running proxy; stops accepting when dropped (a connection in flight ends when the
/// emulator has answered its one request).
#[derive(Debug)]
pub struct RecordingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(30);

impl RecordingProxy {
    /// Starts a proxy on a free 127.0.0.1 port (bound here, never released) in front of
    /// `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = accept_shared.clone();
                std::thread::spawn(move || {
                    // A client that hangs up early ends its connection; nothing to report.
                    let _ = handle(client, upstream, &shared);
                });
            }
        });
        Ok(Self {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far, in the order their heads arrived.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn handle(mut client: TcpStream, upstream: SocketAddr, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    let (buffer, head_end) = read_head(&mut client)?;
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    // The head as received, with `Connection: close` in place of any connection header.
    let mut forwarded = format!("{request_line}\r\n");
    for (name, value) in &headers {
        if !name.eq_ignore_ascii_case("connection") {
            forwarded.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    lock(&shared.requests).push(RecordedRequest {
        method,
        target,
        headers,
    });

    let mut server = TcpStream::connect(upstream)?;
    server.write_all(forwarded.as_bytes())?;
    server.write_all(&buffer[head_end..])?;
    // The rest of the request body goes up while the answer comes down; the emulator
    // closes after answering, which ends both.
    let mut client_read = client.try_clone()?;
    let mut server_write = server.try_clone()?;
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
    });
    let copied = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = up.join();
    copied.map(drop)
}

/// Reads up to the end of the HTTP head; returns everything read and where the head ends.
fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, usize)> {
    let mut buffer = Vec::with_capacity(8192);
    let mut piece = [0u8; 8192];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((buffer, end + 4));
        }
        let n = stream.read(&mut piece)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&piece[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot upstream that records the head it got and answers `hello`.
    fn upstream() -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let (buffer, head_end) = read_head(&mut stream).unwrap();
            let mut body = buffer[head_end..].to_vec();
            while body.len() < 4 {
                let mut piece = [0u8; 16];
                let n = stream.read(&mut piece).unwrap();
                body.extend_from_slice(&piece[..n]);
            }
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                )
                .unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&buffer[..head_end]),
                String::from_utf8_lossy(&body)
            )
        });
        (addr, server)
    }

    #[test]
    fn records_each_request_head_and_forwards_it_with_connection_close() {
        let (addr, server) = upstream();
        let proxy = RecordingProxy::start(addr).unwrap();
        let mut client = TcpStream::connect(proxy.addr).unwrap();
        client
            .write_all(
                b"POST /upload/o?name=a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nbody",
            )
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");

        let forwarded = server.join().unwrap();
        assert!(forwarded.contains("Connection: close\r\n"), "{forwarded}");
        assert!(!forwarded.contains("keep-alive"), "{forwarded}");
        assert!(forwarded.ends_with("\r\n\r\nbody"), "{forwarded}");
        let requests = proxy.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            (requests[0].method.as_str(), requests[0].target.as_str()),
            ("POST", "/upload/o?name=a")
        );
        assert_eq!(requests[0].header("authorization"), Some("Bearer t0k"));
        assert_eq!(requests[0].header("X-Missing"), None);
    }
}
