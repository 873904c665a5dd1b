//! The emulator starts with its buckets on a port of its own (several at once never
//! share one), knows its address, answers over HTTP and is gone when dropped; the proxy
//! injects exactly its budget of faults and then passes requests through.

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gcs_emulator::fault_proxy::{Fault, FaultProxy};
use gcs_emulator::{Emulator, EmulatorError};

fn binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    gcs_emulator::find_binary(&root).unwrap_or_else(|e| panic!("{e}"))
}

fn start() -> Emulator {
    Emulator::start(&binary(), &["alpha", "beta"]).unwrap_or_else(|e| panic!("{e}"))
}

/// The whole response (head and body) to `method path` with `body`, sent with
/// `Host: ADDR` as Go and curl send it.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The status line of `GET path`.
fn status_of(addr: SocketAddr, path: &str) -> String {
    let response = request(addr, "GET", path, "");
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_emulator_serves_its_buckets_and_stops_when_dropped() {
    let emulator = start();
    let addr = emulator.addr();
    assert_eq!(emulator.endpoint(), format!("http://{addr}"));
    for bucket in ["alpha", "beta"] {
        let status = status_of(addr, &format!("/storage/v1/b/{bucket}"));
        assert!(status.contains(" 200"), "{bucket}: {status}");
    }
    assert!(status_of(addr, "/storage/v1/b/gamma").contains(" 404"));
    drop(emulator);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
}

#[test]
fn emulators_started_at_once_each_get_a_port_of_their_own() {
    let binary = binary();
    const COUNT: usize = 4;
    let emulators: Vec<Emulator> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..COUNT)
            .map(|i| {
                let binary = &binary;
                scope.spawn(move || {
                    Emulator::start(binary, &[&format!("own-{i}")])
                        .unwrap_or_else(|e| panic!("emulator {i}: {e}"))
                })
            })
            .collect();
        starting.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let addrs: HashSet<SocketAddr> = emulators.iter().map(Emulator::addr).collect();
    assert_eq!(addrs.len(), COUNT, "{addrs:?}");
    // Each address leads to its own process: the one with that emulator's bucket.
    for (i, emulator) in emulators.iter().enumerate() {
        for j in 0..COUNT {
            let status = status_of(emulator.addr(), &format!("/storage/v1/b/own-{j}"));
            let expected = if i == j { " 200" } else { " 404" };
            assert!(
                status.contains(expected),
                "emulator {i}, bucket own-{j}: {status}"
            );
        }
    }
}

#[test]
fn the_emulator_knows_its_own_address() {
    let emulator = start();
    let (addr, endpoint) = (emulator.addr(), emulator.endpoint());
    // A bucket's selfLink names the real port, not the `:0` it was started with.
    let bucket = request(addr, "GET", "/storage/v1/b/alpha", "");
    assert!(
        bucket.contains(&format!(r#""selfLink":"{endpoint}/storage/v1/b/alpha""#)),
        "{bucket}"
    );
    // A path-style download is routed (publicHost is this address).
    let stored = request(
        addr,
        "POST",
        "/upload/storage/v1/b/alpha/o?uploadType=media&name=greeting",
        "hello",
    );
    assert!(stored.starts_with("HTTP/1.0 200"), "{stored}");
    let downloaded = request(addr, "GET", "/alpha/greeting", "");
    assert!(
        downloaded.starts_with("HTTP/1.0 200") && downloaded.ends_with("\r\n\r\nhello"),
        "{downloaded}"
    );
    // A resumable session's URL leads back to this emulator.
    let session = request(
        addr,
        "POST",
        "/upload/storage/v1/b/alpha/o?uploadType=resumable&name=big",
        "{}",
    );
    assert!(
        session.contains(&format!(
            "Location: {endpoint}/upload/storage/v1/b/alpha/o?uploadType=resumable"
        )),
        "{session}"
    );
}

#[test]
fn a_binary_that_exits_is_a_clear_error() {
    // `false` takes the emulator's flags, exits and never listens.
    let error = Emulator::start(Path::new("/bin/false"), &["alpha"]).unwrap_err();
    assert!(matches!(error, EmulatorError::NotReady { .. }), "{error}");
}

#[test]
fn a_missing_binary_is_a_clear_error() {
    let error = Emulator::start(Path::new("/nonexistent/fake-gcs-server"), &["alpha"]).unwrap_err();
    assert!(matches!(error, EmulatorError::Spawn { .. }), "{error}");
    assert!(
        error.to_string().contains("/nonexistent/fake-gcs-server"),
        "{error}"
    );
}

#[test]
fn the_proxy_injects_its_budget_then_passes_through() {
    let emulator = start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let proxy = runtime
        .block_on(FaultProxy::start(
            emulator.addr(),
            vec![Fault::Status503, Fault::Status429],
            3,
        ))
        .unwrap();
    let statuses: Vec<String> = (0..5)
        .map(|_| status_of(proxy.addr, "/storage/v1/b/alpha"))
        .collect();
    for (status, expected) in statuses
        .iter()
        .zip([" 503", " 429", " 503", " 200", " 200"])
    {
        assert!(status.contains(expected), "{statuses:?}");
    }
    assert_eq!(
        proxy.injected(),
        [Fault::Status503, Fault::Status429, Fault::Status503]
    );
    proxy.arm(1);
    assert!(status_of(proxy.addr, "/storage/v1/b/alpha").contains(" 429"));
}
