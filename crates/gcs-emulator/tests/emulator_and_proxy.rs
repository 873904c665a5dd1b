//! The emulator starts with its buckets, answers over HTTP and is gone when dropped; the
//! proxy injects exactly its budget of faults and then passes requests through.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use gcs_emulator::fault_proxy::{Fault, FaultProxy};
use gcs_emulator::{Emulator, EmulatorError};

fn start() -> Emulator {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = gcs_emulator::find_binary(&root).unwrap_or_else(|e| panic!("{e}"));
    Emulator::start(&binary, &["alpha", "beta"]).unwrap_or_else(|e| panic!("{e}"))
}

/// The status line of `GET path`.
fn status_of(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
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
