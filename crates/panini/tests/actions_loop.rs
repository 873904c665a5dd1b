//! The deployed flow, with this machine playing GitHub's part.
//!
//! A bare repository is `origin`. A user clone chunks a mixed set of files with
//! `panini chunk` (raw bytes committed as `data.bin`, or staged in the bucket with
//! `--stage`), commits and pushes. A runner clone executes the `run:` steps of
//! `.github/workflows/async_compression.yml` exactly as written (read from the YAML, with
//! the `GITHUB_*` variables, `$GITHUB_OUTPUT` and the secrets as environment) against
//! two `panini worker` processes started with `--repo` pointing at the bare repository,
//! never at a checkout. The workers' `repository_dispatch` calls reach a local HTTP
//! server standing in for the GitHub API; each recorded event runs the `run:` steps of
//! `compression_callback.yml` in a runner clone of its own, several at once, so their
//! pushes race and rebase. At the end a fresh clone shows every chunk `completed`, and
//! `panini reconstruct` in an empty directory rebuilds every file from the bucket alone,
//! checked with `cmp` and `sha256sum`; `panini prune` then frees the raw bytes, and the
//! files still rebuild.
//!
//! Steps that install the toolchain or build `panini` (`rustup`, `cargo build`) are not
//! run: the binary under test is put on `PATH` instead, as the build step does.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// Every wait in this test ends within this.
const LIMIT: Duration = Duration::from_secs(120);
const OWNER_REPO: &str = "octo/photos";
const TOKEN: &str = "worker-token-for-the-actions-loop";
const SECRET: &str = "whsec_YWN0aW9ucy1sb29wLXNpZ25pbmcta2V5LTMyYnl0ZXM=";
const PAT: &str = "github-pat-for-callbacks";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn panini() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_panini"))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=user", "-c", "user.email=user@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn clone(origin: &Path, into: &Path) {
    git(
        into.parent().unwrap(),
        &[
            "clone",
            "--quiet",
            origin.to_str().unwrap(),
            into.to_str().unwrap(),
        ],
    );
}

// ---------------------------------------------------------------------------------
// The workflow files, and the part of GitHub's expression language they use.

#[derive(Debug, Deserialize)]
struct Workflow {
    jobs: BTreeMap<String, Job>,
}

#[derive(Debug, Deserialize)]
struct Job {
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
struct Step {
    name: Option<String>,
    id: Option<String>,
    run: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, serde_norway::Value>,
    #[serde(rename = "if")]
    condition: Option<String>,
}

fn workflow(name: &str) -> Workflow {
    let path = repo_root().join(".github/workflows").join(name);
    serde_norway::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What expressions can see: secrets, step outputs, the event.
struct Context {
    secrets: BTreeMap<&'static str, String>,
    outputs: BTreeMap<String, BTreeMap<String, String>>,
    event_name: &'static str,
}

impl Context {
    /// Evaluates the expressions these workflows use: `secrets.X`,
    /// `steps.ID.outputs.X`, `github.event_name`, `inputs.X`, `!cancelled()`, string
    /// literals, `==` and `&&`. Anything else fails the test, so a new expression in a
    /// workflow is noticed here.
    fn eval(&self, expr: &str) -> String {
        let expr = expr.trim();
        if let Some((left, right)) = expr.split_once("&&") {
            let left = self.eval(left);
            return if truthy(&left) {
                self.eval(right)
            } else {
                left
            };
        }
        if let Some((left, right)) = expr.split_once("==") {
            return (self.eval(left) == self.eval(right)).to_string();
        }
        if expr == "!cancelled()" {
            return "true".into();
        }
        if let Some(literal) = expr.strip_prefix('\'').and_then(|e| e.strip_suffix('\'')) {
            return literal.into();
        }
        if let Some(name) = expr.strip_prefix("secrets.") {
            return self.secrets.get(name).cloned().unwrap_or_default();
        }
        if let Some(rest) = expr.strip_prefix("steps.") {
            let (id, output) = rest.split_once(".outputs.").expect("steps.ID.outputs.NAME");
            return self
                .outputs
                .get(id)
                .and_then(|o| o.get(output))
                .cloned()
                .unwrap_or_default();
        }
        if expr == "github.event_name" {
            return self.event_name.into();
        }
        if expr.starts_with("inputs.") {
            // Only workflow_dispatch has inputs; this test plays push and repository_dispatch.
            return String::new();
        }
        panic!("expression {expr:?} is not one this test knows: teach Context::eval");
    }

    /// `text` with every `${{ … }}` replaced by its value.
    fn interpolate(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("closed expression") + start;
            out.push_str(&self.eval(&rest[start + 3..end]));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn condition_holds(&self, condition: &str) -> bool {
        let condition = condition.trim();
        let inner = condition
            .strip_prefix("${{")
            .and_then(|c| c.strip_suffix("}}"))
            .unwrap_or(condition);
        truthy(&self.eval(inner))
    }
}

fn truthy(value: &str) -> bool {
    !(value.is_empty() || value == "false" || value == "0")
}

/// Installs the toolchain or builds panini: replaced by the binary under test on PATH.
fn is_build_step(run: &str) -> bool {
    run.trim_start().starts_with("rustup ") || run.contains("cargo build")
}

/// Runs the `run:` steps of `job` in `checkout` as GitHub's runner would (bash with
/// `-eo pipefail`, the step's env, `$GITHUB_OUTPUT` per step), skipping `uses:` and
/// build steps. Returns the steps' outputs.
fn run_job(
    job: &Job,
    checkout: &Path,
    context: &mut Context,
    github_env: &[(&str, String)],
) -> Vec<String> {
    let path = format!(
        "{}:{}",
        panini().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = Vec::new();
    for (index, step) in job.steps.iter().enumerate() {
        let Some(run) = &step.run else { continue };
        if is_build_step(run) {
            continue;
        }
        if let Some(condition) = &step.condition
            && !context.condition_holds(condition)
        {
            continue;
        }
        let output_file = checkout.join(format!("../github-output-{index}"));
        std::fs::write(&output_file, "").unwrap();
        let mut command = Command::new("bash");
        command
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", run])
            .current_dir(checkout)
            .env("PATH", &path)
            .env("GITHUB_OUTPUT", &output_file)
            .env("PUSH_RETRY_BASE_DELAY", "0");
        for (name, value) in github_env {
            command.env(name, value);
        }
        for (name, value) in &step.env {
            let text = match value {
                serde_norway::Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap().trim().to_owned(),
            };
            command.env(name, context.interpolate(&text));
        }
        let out = command.output().expect("bash runs");
        let label = step.name.clone().unwrap_or_else(|| run.clone());
        assert!(
            out.status.success(),
            "step {label:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(id) = &step.id {
            let text = std::fs::read_to_string(&output_file).unwrap();
            let outputs = text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            context.outputs.insert(id.clone(), outputs);
        }
        ran.push(label);
    }
    ran
}

// ---------------------------------------------------------------------------------
// The GitHub API stand-in: records repository_dispatch events.

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Value>>>);

async fn start_github_api(events: Events) -> (String, tokio::sync::oneshot::Sender<()>) {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/repos/{owner}/{repo}/dispatches",
        axum::routing::post(
            move |axum::extract::Path((owner, repo)): axum::extract::Path<(String, String)>,
                  headers: HeaderMap,
                  body: axum::body::Bytes| {
                let events = events.clone();
                async move {
                    let authorized = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| {
                            v == format!("Bearer {PAT}") || v == format!("token {PAT}")
                        });
                    if !authorized {
                        return StatusCode::UNAUTHORIZED;
                    }
                    if format!("{owner}/{repo}") != OWNER_REPO {
                        return StatusCode::NOT_FOUND;
                    }
                    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                        return StatusCode::UNPROCESSABLE_ENTITY;
                    };
                    events.0.lock().unwrap().push(body);
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, stop)
}

// ---------------------------------------------------------------------------------
// Worker processes.

/// A `panini worker` process, killed when dropped.
struct WorkerProcess {
    child: Child,
    webhook: String,
    log: Arc<Mutex<String>>,
}

impl WorkerProcess {
    fn start(index: usize, origin: &Path, bucket: &Path, cache: &Path, api: &str) -> Self {
        let mut child = Command::new(panini())
            .args(["worker", "--listen", "127.0.0.1:0", "--engine", "cpu"])
            .args(["--worker-id", &format!("loop-worker-{index}")])
            .arg("--repo")
            .arg(format!("file://{}", origin.display()))
            .arg("--repo-cache")
            .arg(cache)
            .arg("--bucket")
            .arg(bucket)
            .args(["--github-repo", OWNER_REPO, "--github-api", api])
            .env("COLAB_AUTH_TOKEN", TOKEN)
            .env("PANINI_WEBHOOK_SECRET", SECRET)
            .env("GITHUB_PAT", PAT)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("panini worker starts");
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
                    let _ = port_tx.send(port);
                    sent = true;
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "worker {index} never said where it listens: {}",
                    log.lock().unwrap()
                )
            });
        Self {
            child,
            webhook: format!("http://127.0.0.1:{port}/webhook"),
            log,
        }
    }

    /// SIGTERM, then the exit status; the worker drains and exits 0.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "worker exited {status}:\n{}",
                    self.log.lock().unwrap()
                );
                return self.log.lock().unwrap().clone();
            }
            assert!(
                Instant::now() < deadline,
                "worker did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------

#[test]
fn push_detect_dispatch_compress_callback_and_rebuild_without_github() {
    let figures = run_loop(Transport::Git);
    eprintln!("figures (raw bytes through git): {figures}");
}

/// The same flow with `chunk --stage`: raw bytes go to the bucket, git carries metadata
/// only, and the origin stays a small fraction of the input.
#[test]
fn the_same_flow_with_raw_bytes_staged_in_the_bucket() {
    let figures = run_loop(Transport::Staged);
    eprintln!("figures (raw bytes staged in the bucket): {figures}");
    assert!(
        figures.origin_bytes * 20 < figures.input_bytes,
        "the origin should be under 5% of the input: {figures}"
    );
}

/// How raw chunk bytes reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Committed as `data.bin`; workers read them at the dispatched commit.
    Git,
    /// `chunk --stage`: uploaded to `staging/<sha256>`; workers read them from the bucket.
    Staged,
}

/// What one run of the loop measured.
struct Figures {
    input_bytes: u64,
    /// The bare origin repository on disk after every push of the run.
    origin_bytes: u64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "input {} bytes, origin {} bytes ({:.2}% of the input)",
            self.input_bytes,
            self.origin_bytes,
            self.origin_bytes as f64 * 100.0 / self.input_bytes as f64
        )
    }
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                disk_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Runs the whole loop with `transport`. The input is a mixed set of sample files of
/// about 2 MiB, or `PANINI_LOOP_MIB` MiB (to measure the repository's size at scale).
fn run_loop(transport: Transport) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let origin = root.join("origin.git");
    let bucket = root.join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    git(
        root,
        &["init", "--quiet", "--bare", origin.to_str().unwrap()],
    );

    // The user's repository carries the workflows and the push script, as a fork of
    // Panini does.
    let user = root.join("user");
    clone(&origin, &user);
    for file in [
        ".github/workflows/async_compression.yml",
        ".github/workflows/compression_callback.yml",
        ".github/scripts/push-status-changes.sh",
    ] {
        let to = user.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo_root().join(file), &to).unwrap();
    }
    let inputs = root.join("inputs");
    let mib: u64 = std::env::var("PANINI_LOOP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let files = samples::sample_set(&inputs, mib << 20).unwrap();
    let input_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let mut chunk = Command::new(panini());
    chunk.args(["chunk", "--chunk-size", "256K"]).args(&files);
    if transport == Transport::Staged {
        chunk.arg("--stage").arg(&bucket);
    }
    let chunked = chunk.current_dir(&user).output().unwrap();
    assert!(
        chunked.status.success(),
        "{}",
        String::from_utf8_lossy(&chunked.stderr)
    );
    let data_files = Command::new("find")
        .args(["pending_compression", "-name", "data.bin"])
        .current_dir(&user)
        .output()
        .unwrap();
    let data_files = String::from_utf8(data_files.stdout).unwrap();
    match transport {
        Transport::Git => assert!(!data_files.is_empty()),
        Transport::Staged => assert!(data_files.is_empty(), "left to commit: {data_files}"),
    }
    git(&user, &["add", "."]);
    git(
        &user,
        &["commit", "--quiet", "-m", "chunks: photo and server log"],
    );
    git(&user, &["push", "--quiet", "origin", "HEAD:main"]);
    let pushed = git(&user, &["rev-parse", "HEAD"]);
    let chunk_count = std::fs::read_dir(user.join("pending_compression"))
        .unwrap()
        .map(|e| e.unwrap().path())
        // Files' directories only (not the tree's .gitignore).
        .filter(|file| file.is_dir())
        .flat_map(|file| std::fs::read_dir(file).unwrap())
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("chunk_")
        })
        .count();
    assert!(chunk_count >= 4, "{chunk_count} chunks");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let events = Events::default();
    let (api, stop_api) = runtime.block_on(start_github_api(events.clone()));
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::start(i, &origin, &bucket, &root.join(format!("cache-{i}")), &api))
        .collect();

    // The push's workflow run.
    let runner = root.join("runner-dispatch");
    clone(&origin, &runner);
    let mut context = Context {
        secrets: BTreeMap::from([
            ("COLAB_WEBHOOK_URL", workers[0].webhook.clone()),
            ("COLAB_WEBHOOK_URL_1", workers[1].webhook.clone()),
            ("COLAB_AUTH_TOKEN", TOKEN.to_owned()),
            ("PANINI_WEBHOOK_SECRET", SECRET.to_owned()),
        ]),
        outputs: BTreeMap::new(),
        event_name: "push",
    };
    let github_env = |run_id: u64, event_path: &Path| {
        vec![
            ("GITHUB_ACTIONS", "true".to_owned()),
            ("GITHUB_REPOSITORY", OWNER_REPO.to_owned()),
            ("GITHUB_SHA", pushed.clone()),
            ("GITHUB_REF", "refs/heads/main".to_owned()),
            ("GITHUB_REF_NAME", "main".to_owned()),
            ("GITHUB_REF_TYPE", "branch".to_owned()),
            ("GITHUB_RUN_ID", run_id.to_string()),
            ("GITHUB_RUN_NUMBER", run_id.to_string()),
            ("GITHUB_EVENT_PATH", event_path.display().to_string()),
        ]
    };
    let push_event = root.join("push-event.json");
    std::fs::write(&push_event, r#"{"ref": "refs/heads/main"}"#).unwrap();
    let dispatch_job = &workflow("async_compression.yml").jobs["detect-and-dispatch"];
    let ran = run_job(
        dispatch_job,
        &runner,
        &mut context,
        &github_env(1, &push_event),
    );
    assert_eq!(
        ran.len(),
        3,
        "detect, dispatch and commit should run: {ran:?}"
    );
    assert_eq!(
        context.outputs["detect"]["chunks_count"],
        chunk_count.to_string()
    );

    // Every chunk's report reaches the GitHub stand-in.
    let deadline = Instant::now() + LIMIT;
    while events.0.lock().unwrap().len() < chunk_count {
        assert!(
            Instant::now() < deadline,
            "{} of {chunk_count} callbacks arrived; worker logs:\n{}\n{}",
            events.0.lock().unwrap().len(),
            workers[0].log.lock().unwrap(),
            workers[1].log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Each event runs the callback workflow in its own runner, four at a time, so their
    // pushes race and rebase.
    let callback_job = &workflow("compression_callback.yml").jobs["apply"];
    let recorded: Vec<Value> = events.0.lock().unwrap().clone();
    for event in &recorded {
        assert_eq!(event["event_type"], "chunk_compressed", "{event}");
        assert_eq!(event["client_payload"]["status"], "completed", "{event}");
    }
    std::thread::scope(|scope| {
        for (batch_index, batch) in recorded.chunks(4).enumerate() {
            let handles: Vec<_> = batch
                .iter()
                .enumerate()
                .map(|(i, event)| {
                    let n = batch_index * 4 + i;
                    let runner = root.join(format!("runner-callback-{n}"));
                    let github_env = &github_env;
                    let origin = &origin;
                    scope.spawn(move || {
                        clone(origin, &runner);
                        let event_path = root.join(format!("event-{n}.json"));
                        let payload = serde_json::json!({
                            "action": event["event_type"],
                            "client_payload": event["client_payload"],
                        });
                        std::fs::write(&event_path, payload.to_string()).unwrap();
                        let mut context = Context {
                            secrets: BTreeMap::new(),
                            outputs: BTreeMap::new(),
                            event_name: "repository_dispatch",
                        };
                        run_job(
                            callback_job,
                            &runner,
                            &mut context,
                            &github_env(100 + n as u64, &event_path),
                        )
                    })
                })
                .collect();
            for handle in handles {
                let ran = handle.join().unwrap();
                assert_eq!(ran.len(), 2, "apply and commit should run: {ran:?}");
            }
        }
    });

    for worker in workers {
        worker.stop();
    }
    let _ = stop_api.send(());

    // A fresh clone: every chunk completed.
    let check = root.join("fresh");
    clone(&origin, &check);
    let status = Command::new(panini())
        .args(["status", "--json", "pending_compression"])
        .current_dir(&check)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut completed = 0;
    for file in std::fs::read_dir(check.join("pending_compression")).unwrap() {
        let file = file.unwrap().path();
        if !file.is_dir() {
            continue;
        }
        for chunk in std::fs::read_dir(file).unwrap() {
            let chunk = chunk.unwrap().path();
            let Ok(meta) = std::fs::read(chunk.join("metadata.json")) else {
                continue;
            };
            let meta: Value = serde_json::from_slice(&meta).unwrap();
            assert_eq!(meta["status"], "completed", "{}: {meta}", chunk.display());
            completed += 1;
        }
    }
    assert_eq!(completed, chunk_count);

    // An empty directory on "any machine": the bucket alone rebuilds every file.
    let elsewhere = root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let rebuild_all = || {
        for original in &files {
            let name = original.file_stem().unwrap().to_str().unwrap();
            let out = elsewhere.join(name);
            let _ = std::fs::remove_file(&out);
            rebuild_and_compare(name, original, &bucket, &out);
        }
    };
    rebuild_all();
    let origin_bytes = disk_bytes(&origin);

    // Prune, in the fresh clone: every completed data.bin (git transport) or every
    // staged object (bucket transport) goes, and the bucket still rebuilds every file.
    let pruned = Command::new(panini())
        .args(["prune", "--json", "--bucket"])
        .arg(&bucket)
        .current_dir(&check)
        .output()
        .unwrap();
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    let report: Value = serde_json::from_slice(&pruned.stdout).unwrap();
    assert_eq!(report["kept"], serde_json::json!([]), "{report}");
    assert_eq!(report["completed_chunks"], chunk_count, "{report}");
    let staging = bucket.join("staging");
    let staged_left = std::fs::read_dir(&staging).map_or(0, |d| d.count());
    assert_eq!(staged_left, 0, "{report}");
    match transport {
        Transport::Git => {
            assert_eq!(report["data_files_removed"], chunk_count, "{report}");
            assert_eq!(report["staged_objects_deleted"], 0, "{report}");
        }
        Transport::Staged => {
            assert_eq!(report["data_files_removed"], 0, "{report}");
            assert!(report["staged_objects_deleted"].as_u64().unwrap() > 0);
            assert!(report["staged_bytes_freed"].as_u64().unwrap() >= input_bytes / 2);
        }
    }
    let left = Command::new("find")
        .args(["pending_compression", "-name", "data.bin"])
        .current_dir(&check)
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&left.stdout)
    );
    rebuild_all();

    Figures {
        input_bytes,
        origin_bytes,
    }
}

/// `panini reconstruct NAME` into `out`, checked against `original` with `cmp` and
/// `sha256sum`.
fn rebuild_and_compare(name: &str, original: &Path, bucket: &Path, out: &Path) {
    let rebuilt = Command::new(panini())
        .args(["reconstruct", name, "--bucket"])
        .arg(bucket)
        .arg("-o")
        .arg(out)
        .current_dir(out.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        rebuilt.status.success(),
        "reconstruct {name}: {}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let cmp = Command::new("cmp").arg(original).arg(out).status().unwrap();
    assert!(cmp.success(), "{name}: cmp says the rebuilt file differs");
    let sums = Command::new("sha256sum")
        .arg(original)
        .arg(out)
        .output()
        .unwrap();
    let sums = String::from_utf8(sums.stdout).unwrap();
    let hashes: Vec<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(hashes[0], hashes[1], "{sums}");
}
