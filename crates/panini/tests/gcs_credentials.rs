//! The authenticated Cloud Storage path as a user sets it up: a service-account key file
//! named by `GOOGLE_APPLICATION_CREDENTIALS`, an endpoint given with `PANINI_GCS_ENDPOINT`
//! (credentials kept, unlike `STORAGE_EMULATOR_HOST`), the `panini` binary spawned for
//! `upload` and `reconstruct`, and the emulator as the store behind a proxy that records
//! what reaches it.
//!
//! google-cloud-auth (1.19) signs its own JWT with a service-account key (the "self-signed
//! JWT" flow) and never calls the key's `token_uri`. So the key's `token_uri` points at a
//! token endpoint of this test that would issue tokens, and the test checks that it was
//! never asked, and that every request the store saw carried `Bearer <JWT>` whose RS256
//! signature `openssl` verifies with the key's public half and whose claims name the
//! service account.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

mod support;

use base64::Engine as _;
use gcs_emulator::Emulator;
use gcs_emulator::recording_proxy::{RecordedRequest, RecordingProxy};
use support::{panini, text, tool};

const BUCKET: &str = "panini-test";
const CLIENT_EMAIL: &str = "panini-uploader@panini-test.iam.gserviceaccount.com";
const KEY_ID: &str = "panini-test-key-1";

fn start_emulator() -> Emulator {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = gcs_emulator::find_binary(&root).unwrap_or_else(|e| panic!("{e}"));
    Emulator::start(&binary, &[BUCKET]).unwrap_or_else(|e| panic!("{e}"))
}

fn openssl(args: &[&str]) -> std::process::Output {
    tool("openssl", args)
}

/// A service-account key file, as the Cloud console downloads it, with a fresh RSA key
/// and `token_uri` at `token_uri`; returns it and the public key's PEM file.
fn service_account_key(dir: &Path, token_uri: &str) -> (PathBuf, PathBuf) {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let p = private.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        p,
    ]);
    openssl(&[
        "pkey",
        "-in",
        p,
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "panini-test",
        "private_key_id": KEY_ID,
        "private_key": std::fs::read_to_string(&private).unwrap(),
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    });
    let path = dir.join("service-account.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&key).unwrap()).unwrap();
    (path, public)
}

/// An OAuth token endpoint on 127.0.0.1 (a port bound here and kept) that issues
/// `issued-token-N` to every request and counts them.
struct TokenEndpoint {
    uri: String,
    requests: Arc<AtomicUsize>,
}

impl TokenEndpoint {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        // The thread ends with the test process; it holds no child process.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                    line.clear();
                }
                let body = format!(
                    r#"{{"access_token":"issued-token-{n}","token_type":"Bearer","expires_in":3600}}"#
                );
                let _ = write!(
                    &stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { uri, requests }
    }
}

fn b64url(part: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("{part:?} is not base64url: {e}"))
}

/// Checks a self-signed JWT: its RS256 signature with `openssl` and the public key, its
/// header and its claims.
fn check_jwt(jwt: &str, public_key: &Path, scratch: &Path) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS: {jwt}");
    let signed = scratch.join("signed");
    let signature = scratch.join("signature");
    std::fs::write(&signed, format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(&signature, b64url(parts[2])).unwrap();
    let verified = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        public_key.to_str().unwrap(),
        "-signature",
        signature.to_str().unwrap(),
        signed.to_str().unwrap(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&verified.stdout).trim(),
        "Verified OK"
    );

    let header: serde_json::Value = serde_json::from_slice(&b64url(parts[0])).unwrap();
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(header["kid"], KEY_ID, "{header}");
    let claims: serde_json::Value = serde_json::from_slice(&b64url(parts[1])).unwrap();
    assert_eq!(claims["iss"], CLIENT_EMAIL, "{claims}");
    assert_eq!(claims["sub"], CLIENT_EMAIL, "{claims}");
    assert_eq!(
        claims["scope"], "https://www.googleapis.com/auth/cloud-platform",
        "{claims}"
    );
    let now = chrono::Utc::now().timestamp();
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(
        iat <= now && now < exp && exp - iat <= 3700,
        "iat {iat}, exp {exp}, now {now}"
    );
}

fn bearer(request: &RecordedRequest) -> Option<&str> {
    request.header("authorization")?.strip_prefix("Bearer ")
}

#[test]
fn a_service_account_key_file_authenticates_upload_and_reconstruct() {
    let emulator = start_emulator();
    let proxy = RecordingProxy::start(emulator.addr()).unwrap();
    let tokens = TokenEndpoint::start();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public_key) = service_account_key(dir.path(), &tokens.uri);

    let input = dir.path().join("app.log");
    let log: String = (0..12_000)
        .map(|i| format!("{i:06} GET /objects/{} 200\n", i % 97))
        .collect();
    std::fs::write(&input, log).unwrap();
    let out = panini(
        &[
            "chunk",
            "app.log",
            "--strategy",
            "size",
            "--chunk-size",
            "64K",
        ],
        dir.path(),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));

    let bucket = format!("gs://{BUCKET}/authenticated");
    let endpoint = proxy.endpoint();
    let user = [
        ("GOOGLE_APPLICATION_CREDENTIALS", key_file.to_str().unwrap()),
        ("PANINI_GCS_ENDPOINT", endpoint.as_str()),
    ];
    let out = panini(
        &[
            "upload", "app", "--bucket", &bucket, "--codec", "zstd", "--engine", "cpu",
        ],
        dir.path(),
        &user,
    );
    assert!(out.status.success(), "upload: {}", text(&out));
    let rebuilt = dir.path().join("rebuilt.log");
    let out = panini(
        &[
            "reconstruct",
            "app",
            "--bucket",
            &bucket,
            "-o",
            rebuilt.to_str().unwrap(),
        ],
        dir.path(),
        &user,
    );
    assert!(out.status.success(), "reconstruct: {}", text(&out));
    tool("cmp", &[input.to_str().unwrap(), rebuilt.to_str().unwrap()]);

    let requests = proxy.requests();
    assert!(
        requests.iter().any(|r| r.method == "POST") && requests.iter().any(|r| r.method == "GET"),
        "uploads and reads went through the proxy: {requests:#?}"
    );
    let mut jwts: Vec<&str> = Vec::new();
    for request in &requests {
        let jwt = bearer(request).unwrap_or_else(|| {
            panic!("a request without a bearer token reached the store: {request:#?}")
        });
        if !jwts.contains(&jwt) {
            jwts.push(jwt);
        }
    }
    // One token per process (cached for its hour), each checked.
    assert!(!jwts.is_empty() && jwts.len() <= 2, "{jwts:?}");
    for jwt in jwts {
        check_jwt(jwt, &public_key, dir.path());
    }
    assert_eq!(
        tokens.requests.load(Ordering::SeqCst),
        0,
        "google-cloud-auth exchanged the key at token_uri instead of signing its own JWT: \
         check that the store saw `Bearer issued-token-N` instead"
    );

    // The emulator convention: an endpoint from --endpoint (STORAGE_EMULATOR_HOST) is
    // reached anonymously even with a key file configured.
    let seen = requests.len();
    let anonymous = dir.path().join("anonymous.log");
    let out = panini(
        &[
            "reconstruct",
            "app",
            "--bucket",
            &bucket,
            "--endpoint",
            &endpoint,
            "-o",
            anonymous.to_str().unwrap(),
        ],
        dir.path(),
        &[("GOOGLE_APPLICATION_CREDENTIALS", key_file.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "anonymous reconstruct: {}",
        text(&out)
    );
    let later = &proxy.requests()[seen..];
    assert!(!later.is_empty());
    assert!(
        later.iter().all(|r| r.header("authorization").is_none()),
        "{later:#?}"
    );
}

/// The one line a user gets when the key file is missing, is not JSON, or holds a key
/// that does not parse: it names the variable and the file.
#[test]
fn a_missing_or_bad_key_file_is_one_line_naming_the_variable_and_the_file() {
    let emulator = start_emulator();
    let endpoint = emulator.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("not-json.json");
    std::fs::write(&not_json, "this is not a key\n").unwrap();
    let bad_key = dir.path().join("bad-key.json");
    std::fs::write(
        &bad_key,
        serde_json::json!({
            "type": "service_account",
            "project_id": "panini-test",
            "private_key_id": KEY_ID,
            "private_key": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            "client_email": CLIENT_EMAIL,
            "token_uri": "http://127.0.0.1:9/token",
        })
        .to_string(),
    )
    .unwrap();
    let missing = dir.path().join("missing.json");
    let output = dir.path().join("out.bin");
    for (key_file, what) in [
        (&missing, "missing"),
        (&not_json, "not JSON"),
        (&bad_key, "a key that does not parse"),
    ] {
        let out = panini(
            &[
                "reconstruct",
                "app",
                "--bucket",
                &format!("gs://{BUCKET}"),
                "-o",
                output.to_str().unwrap(),
            ],
            dir.path(),
            &[
                ("GOOGLE_APPLICATION_CREDENTIALS", key_file.to_str().unwrap()),
                ("PANINI_GCS_ENDPOINT", endpoint.as_str()),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{what}: {stderr}");
        let line = errors[0];
        assert!(
            line.contains("GOOGLE_APPLICATION_CREDENTIALS")
                && line.contains(key_file.to_str().unwrap()),
            "{what}: {line}"
        );
        assert!(
            stderr
                .lines()
                .all(|l| l.starts_with("error:") || l.starts_with("hint:")),
            "{what}: one error line (and a hint): {stderr}"
        );
        assert!(!output.exists(), "{what}: nothing written");
    }
}
