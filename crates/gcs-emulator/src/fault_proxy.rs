//! A TCP proxy on 127.0.0.1 that sits between a client and the emulator and injects
//! the failures cloud storage really has: 503 and 429 answers, connections dropped in
//! the middle of a request body or a response body, and damaged response bytes.
//!
//! Faults are injected per connection: while the fault budget lasts, each new
//! connection gets the next fault of the schedule; after that connections pass
//! through untouched. [`FaultProxy::arm`] adds budget and cuts every pass-through
//! connection, so clients must reconnect and meet the new faults mid-run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Answer `503 Service Unavailable` without contacting the emulator.
    Status503,
    /// Answer `429 Too Many Requests` without contacting the emulator.
    Status429,
    /// Forward the request head and part of its body, then drop both connections.
    CutRequest,
    /// Forward the request, then drop the connection halfway through the response.
    CutResponse,
    /// Flip one byte in the body of an object download (`alt=media`); other requests on
    /// such a connection pass through and the fault is not used up.
    CorruptDownload,
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    schedule: Vec<Fault>,
    budget: AtomicU64,
    next: AtomicU64,
    injected: Mutex<Vec<Fault>>,
    epoch: watch::Sender<u64>,
}

/// The running proxy; stopped when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port to `upstream` that injects `budget`
    /// faults, cycling through `schedule` (an empty schedule injects nothing). Must be
    /// called inside a tokio runtime, which then runs it.
    pub async fn start(
        upstream: SocketAddr,
        schedule: Vec<Fault>,
        budget: u64,
    ) -> std::io::Result<Self> {
        let budget = if schedule.is_empty() { 0 } else { budget };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            schedule,
            budget: AtomicU64::new(budget),
            next: AtomicU64::new(0),
            injected: Mutex::new(Vec::new()),
            epoch: watch::channel(0).0,
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = accept_state.clone();
                tokio::spawn(async move {
                    // A fault ends a connection early by design; errors here are expected.
                    let _ = handle(client, state).await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds `faults` to the budget and cuts every pass-through connection.
    pub fn arm(&self, faults: u64) {
        self.state.budget.fetch_add(faults, Ordering::SeqCst);
        self.state.epoch.send_modify(|e| *e += 1);
    }

    /// The faults injected so far.
    pub fn injected(&self) -> Vec<Fault> {
        lock(&self.state.injected).clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Ends the pass-through connections too.
        self.state.epoch.send_modify(|e| *e += 1);
    }
}

impl State {
    fn take_fault(&self) -> Option<Fault> {
        if self.schedule.is_empty() {
            return None;
        }
        self.budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .ok()?;
        let index = self.next.fetch_add(1, Ordering::SeqCst) as usize;
        Some(self.schedule[index % self.schedule.len()])
    }

    fn give_back(&self) {
        self.budget.fetch_add(1, Ordering::SeqCst);
        self.next.fetch_sub(1, Ordering::SeqCst);
    }

    fn record(&self, fault: Fault) {
        lock(&self.injected).push(fault);
    }
}

/// The list of injected faults stays usable after a panicking handler.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads up to the end of the HTTP head (`\r\n\r\n`); returns everything read, and where
/// the head ends in it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, usize)> {
    let mut buffer = Vec::with_capacity(8192);
    let mut piece = [0u8; 8192];
    loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            return Ok((buffer, end + 4));
        }
        let n = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut piece)).await??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&piece[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(head);
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

async fn handle(mut client: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let epoch = state.epoch.subscribe();
    let Some(fault) = state.take_fault() else {
        return pass_through(client, state.upstream, &[], epoch).await;
    };
    let (buffer, head_end) = read_head(&mut client).await?;
    match fault {
        Fault::Status503 | Fault::Status429 => {
            state.record(fault);
            let status = if fault == Fault::Status503 {
                "503 Service Unavailable"
            } else {
                "429 Too Many Requests"
            };
            let body = format!(
                "{{\"error\":{{\"code\":{},\"message\":\"injected by the test proxy\"}}}}",
                &status[..3]
            );
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(response.as_bytes()).await?;
            client.shutdown().await
        }
        Fault::CutRequest => {
            state.record(fault);
            let mut upstream = TcpStream::connect(state.upstream).await?;
            // Forward the head and at most half of the body bytes; the rest never comes.
            let mut body = buffer[head_end..].to_vec();
            let wanted = content_length(&buffer[..head_end]).unwrap_or(64 * 1024);
            let mut piece = vec![0u8; 64 * 1024];
            while body.len() < wanted / 2 + 1 {
                match tokio::time::timeout(Duration::from_millis(200), client.read(&mut piece))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => body.extend_from_slice(&piece[..n]),
                    _ => break,
                }
            }
            upstream.write_all(&buffer[..head_end]).await?;
            upstream.write_all(&body[..body.len() / 2]).await?;
            // Give the emulator a moment to read what it got, then hang up on both.
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(upstream);
            drop(client);
            Ok(())
        }
        Fault::CutResponse => {
            state.record(fault);
            let mut upstream = TcpStream::connect(state.upstream).await?;
            upstream.write_all(&buffer).await?;
            let (mut client_read, mut client_write) = client.into_split();
            let (mut upstream_read, mut upstream_write) = upstream.into_split();
            // The rest of the request body, if any, goes up while the answer comes down.
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
            });
            let mut response = Vec::new();
            let mut piece = vec![0u8; 64 * 1024];
            let cut_at = loop {
                let n = tokio::time::timeout(IO_TIMEOUT, upstream_read.read(&mut piece)).await??;
                if n == 0 {
                    break response.len() / 2;
                }
                response.extend_from_slice(&piece[..n]);
                if let Some(end) = find(&response, b"\r\n\r\n") {
                    let length = content_length(&response[..end]).unwrap_or(0);
                    // Cut inside the body when there is one, else inside the head.
                    let target = if length > 1 {
                        end + 4 + length / 2
                    } else {
                        end / 2
                    };
                    if response.len() >= target {
                        break target;
                    }
                }
            };
            client_write.write_all(&response[..cut_at]).await?;
            up.abort();
            Ok(())
        }
        Fault::CorruptDownload => {
            let request_line = String::from_utf8_lossy(&buffer[..head_end.min(2048)]).into_owned();
            let is_download = request_line.starts_with("GET ")
                && request_line
                    .lines()
                    .next()
                    .is_some_and(|l| l.contains("alt=media"));
            if !is_download {
                state.give_back();
                return pass_through(client, state.upstream, &buffer, epoch).await;
            }
            let mut upstream = TcpStream::connect(state.upstream).await?;
            upstream.write_all(&buffer).await?;
            let mut response = Vec::new();
            let mut piece = vec![0u8; 64 * 1024];
            // Read the head and enough of the body to damage a byte well inside it.
            let flipped = loop {
                let n = tokio::time::timeout(IO_TIMEOUT, upstream.read(&mut piece)).await??;
                if n == 0 {
                    break false;
                }
                response.extend_from_slice(&piece[..n]);
                if let Some(end) = find(&response, b"\r\n\r\n") {
                    let length = content_length(&response[..end]).unwrap_or(0);
                    let at = end + 4 + length.min(4096) / 2;
                    if length > 0 && response.len() > at {
                        response[at] ^= 0x5a;
                        break true;
                    }
                    if length == 0 {
                        break false;
                    }
                }
            };
            if flipped {
                state.record(fault);
            }
            if !flipped {
                client.write_all(&response).await?;
                return copy_both(client, upstream, epoch).await;
            }
            // Send the damaged response in full, then hang up, so that the client's next
            // attempt opens a new connection and meets the next fault.
            let length = find(&response, b"\r\n\r\n")
                .map(|end| end + 4 + content_length(&response[..end]).unwrap_or(0))
                .unwrap_or(response.len());
            while response.len() < length {
                let n = tokio::time::timeout(IO_TIMEOUT, upstream.read(&mut piece)).await??;
                if n == 0 {
                    break;
                }
                response.extend_from_slice(&piece[..n]);
            }
            client
                .write_all(&response[..length.min(response.len())])
                .await?;
            client.shutdown().await
        }
    }
}

async fn pass_through(
    client: TcpStream,
    upstream: SocketAddr,
    already_read: &[u8],
    epoch: watch::Receiver<u64>,
) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(upstream).await?;
    upstream.write_all(already_read).await?;
    copy_both(client, upstream, epoch).await
}

/// Copies both ways until either side closes or [`FaultProxy::arm`] cuts the connection.
async fn copy_both(
    mut client: TcpStream,
    mut upstream: TcpStream,
    mut epoch: watch::Receiver<u64>,
) -> std::io::Result<()> {
    epoch.borrow_and_update();
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => result.map(|_| ()),
        _ = epoch.changed() => Ok(()),
    }
}
