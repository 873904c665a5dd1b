//! Shared by the worker's and the dispatcher's integration tests: a chunk tree in a
//! temporary directory, a real worker on a free port of 127.0.0.1, and a store whose
//! reads can be held back to pin the worker mid-batch and whose recipe lookups are counted.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chunk_model::layout::{DATA_FILE, METADATA_FILE, chunk_dir_name};
use chunk_model::{ChunkInfo, ChunkMetadata, Priority, Sha256Digest, Timestamp};
use tempfile::TempDir;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use uploader::{LocalDir, Object, ObjectInfo, ObjectMeta, ObjectStore, PutOutcome, StoreError};
use worker::{Summary, Worker, WorkerConfig, WorkerError};

/// Every wait in these tests ends within this.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A repository checkout with `pending_compression/file_<f>/chunk_NNNN/…`.
pub struct Tree {
    pub dir: TempDir,
    /// The repository root (the worker's source root).
    pub root: PathBuf,
    /// `<root>/pending_compression`.
    pub base: PathBuf,
    /// What the detector would list, with each chunk's bytes.
    pub chunks: Vec<(ChunkInfo, Vec<u8>)>,
}

impl Tree {
    pub fn infos(&self) -> Vec<ChunkInfo> {
        self.chunks.iter().map(|(c, _)| c.clone()).collect()
    }

    pub fn metadata(&self, chunk: &ChunkInfo) -> ChunkMetadata {
        chunk_model::json_file::read(&self.root.join(&chunk.chunk_path).join(METADATA_FILE))
            .unwrap()
    }
}

/// Bytes that compress well in some chunks and not at all in others, so that `auto`
/// picks different codecs.
pub fn chunk_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    if seed.is_multiple_of(3) {
        (0..len).map(|_| next() as u8).collect()
    } else {
        let words = [
            &b"panini "[..],
            b"chunk ",
            b"compress ",
            b"bucket ",
            b"worker\n",
        ];
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            out.extend_from_slice(words[(next() % 5) as usize]);
        }
        out.truncate(len);
        out
    }
}

/// Writes `files` files of `per_file` chunks of `size` bytes each.
pub fn make_tree(files: usize, per_file: usize, size: usize) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let base = root.join("pending_compression");
    let mut chunks = Vec::new();
    for f in 0..files {
        let name = format!("file_{f}");
        for c in 0..per_file {
            let bytes = chunk_bytes((f * 1000 + c) as u64, size);
            let chunk_dir = base
                .join(&name)
                .join(chunk_dir_name(c as u64, per_file as u64));
            std::fs::create_dir_all(&chunk_dir).unwrap();
            std::fs::write(chunk_dir.join(DATA_FILE), &bytes).unwrap();
            let hash = Sha256Digest::of(&bytes);
            let meta = ChunkMetadata::new_pending(
                c as u64,
                (c * size) as u64,
                size as u64,
                hash,
                "FIXED_SIZE",
                None,
                Timestamp::now(),
            );
            chunk_model::json_file::write_atomic(&chunk_dir.join(METADATA_FILE), &meta).unwrap();
            let info = ChunkInfo {
                chunk_path: format!(
                    "pending_compression/{name}/{}",
                    chunk_dir_name(c as u64, per_file as u64)
                ),
                chunk_id: c as u64,
                pattern_type: "FIXED_SIZE".into(),
                size: size as u64,
                hash: Some(hash),
                base_dir: format!("pending_compression/{name}"),
                is_keyframe: false,
                priority: Priority::Normal,
                staged_object: None,
                extra: Default::default(),
            };
            chunks.push((info, bytes));
        }
    }
    Tree {
        dir,
        root,
        base,
        chunks,
    }
}

/// A [`LocalDir`] the tests watch: its `stat` of a completion record (`status/…`) waits
/// for a permit of `gate`, the worker's first store call for each chunk, so closing the
/// gate holds the work loop at the start of a batch (the stats that follow, one per
/// codec's chunk name, pass freely, so one permit is one chunk); and it counts lookups of
/// recipes (`recipes/…`), the first step of every check of whether a file is complete.
#[derive(Debug)]
pub struct WatchedStore {
    pub inner: LocalDir,
    pub gate: Arc<Semaphore>,
    pub recipe_lookups: AtomicUsize,
}

impl WatchedStore {
    /// A store whose gate lets `permits` chunks through.
    pub fn new(root: &Path, permits: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: LocalDir::new(root).unwrap(),
            gate: Arc::new(Semaphore::new(permits)),
            recipe_lookups: AtomicUsize::new(0),
        })
    }

    /// A store whose gate is open from the start.
    pub fn open_new(root: &Path) -> Arc<Self> {
        Self::new(root, Semaphore::MAX_PERMITS / 2)
    }

    /// Lets everything through from now on.
    pub fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

#[async_trait]
impl ObjectStore for WatchedStore {
    fn url(&self) -> String {
        self.inner.url()
    }
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.put(key, bytes, meta).await
    }
    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        self.inner.get(key).await
    }
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        if key.starts_with("status/") {
            self.gate
                .acquire()
                .await
                .expect("gate never closes")
                .forget();
        } else if key.starts_with("recipes/") {
            self.recipe_lookups.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
}

/// A worker serving on a free port of 127.0.0.1 in this process.
pub struct RunningWorker {
    pub addr: std::net::SocketAddr,
    /// The token the read endpoints (`/status`, `/failures`, `/metrics`) are asked with.
    pub token: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<Summary, WorkerError>>>,
}

impl RunningWorker {
    pub async fn start(config: WorkerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let token = config.token.clone();
        let worker = Worker::new(config).unwrap();
        let handle = tokio::spawn(worker.serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            token,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn webhook(&self) -> String {
        self.url("/webhook")
    }

    /// Graceful shutdown: returns once everything accepted is finished.
    pub async fn stop(mut self) -> Summary {
        let _ = self.shutdown.take().unwrap().send(());
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(TIMEOUT, handle)
            .await
            .expect("worker stops")
            .unwrap()
            .unwrap()
    }

    /// Kills the worker where it stands, as a crash would.
    pub async fn kill(mut self) {
        let handle = self.handle.take().unwrap();
        handle.abort();
        let _ = handle.await;
    }

    /// A GET of a read endpoint, with the worker's token when it has one.
    pub fn read(&self, path: &str) -> reqwest::RequestBuilder {
        let request = reqwest::Client::new()
            .get(self.url(path))
            .timeout(Duration::from_secs(10));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn status(&self) -> serde_json::Value {
        let text = self
            .read("/status")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Waits until the worker has reported `n` chunks (completed or failed).
    pub async fn wait_reported(&self, n: u64) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let s = self.status().await;
            let done = s["completed"].as_u64().unwrap() + s["failed"].as_u64().unwrap();
            if done >= n {
                return s;
            }
            // The last status says where the worker stands, for the failure message.
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} chunks not reported in time: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`TIMEOUT`].
pub async fn wait_for<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition reached in time")
}

/// A worker configuration for `tree` with a local bucket, `insecure` (no token, no
/// signatures: these workers serve on 127.0.0.1); [`secure`] adds credentials.
pub fn config(tree: &Tree, store: Arc<dyn ObjectStore>) -> WorkerConfig {
    let mut config = WorkerConfig::new(&tree.root, store);
    config.insecure = true;
    config.engine = gpu_compress::EngineChoice::Cpu;
    config.worker_id = "test-worker".into();
    config
}

/// Checks that every chunk of `tree` is in the bucket, decodes to its bytes, and has a
/// completion record naming it by content.
pub async fn assert_all_stored(tree: &Tree, store: &dyn ObjectStore) {
    for (info, bytes) in &tree.chunks {
        let sha = Sha256Digest::of(bytes);
        let record = store
            .get(&chunk_model::object_keys::status_record(&sha))
            .await
            .unwrap();
        let record: chunk_model::ChunkCompressed = serde_json::from_slice(&record.bytes).unwrap();
        assert_eq!(
            record.status,
            chunk_model::Status::Completed,
            "{}",
            info.chunk_path
        );
        assert_eq!(record.original_hash, Some(sha));
        let key = record.upload_path.unwrap();
        let object = store.get(&key).await.unwrap();
        assert_eq!(Some(Sha256Digest::of(&object.bytes)), record.upload_hash);
        let codec: chunk_model::Codec = key.rsplit_once('.').unwrap().1.parse().unwrap();
        assert_eq!(key, chunk_model::object_keys::chunk_object(&sha, codec));
        assert_eq!(
            &gpu_compress::decompress(codec, &object.bytes).unwrap(),
            bytes,
            "{key}"
        );
    }
}

/// The bearer token and webhook secret of [`secure`] workers.
pub const TOKEN: &str = "test-token-0123456789";
/// The Standard Webhooks secret of [`secure`] workers.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `config` requiring [`TOKEN`] and signatures with [`SECRET`].
pub fn secure(mut config: WorkerConfig) -> WorkerConfig {
    config.insecure = false;
    config.token = Some(TOKEN.into());
    config.signing_key = Some(worker::auth::signing_key(SECRET).unwrap());
    config
}

/// POSTs `body` to the worker's `/webhook` as the dispatcher does (bearer token,
/// Standard Webhooks signature); returns the status and the JSON answer.
pub async fn post_signed(worker: &RunningWorker, body: &[u8]) -> (u16, serde_json::Value) {
    let id = dispatcher::signing::new_delivery_id();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let key = dispatcher::signing::signing_key(SECRET).unwrap();
    let response = reqwest::Client::new()
        .post(worker.webhook())
        .timeout(TIMEOUT)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            dispatcher::signing::sign(&key, &id, timestamp, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

impl RunningWorker {
    /// One counter of `GET /metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .read("/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    /// `GET /failures`.
    pub async fn failures(&self) -> serde_json::Value {
        let text = self
            .read("/failures")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// A chunk of a [`Tree`] with its bytes.
type Chunk = (ChunkInfo, Vec<u8>);

/// Writes `manifest.json` for each file of `tree` (with the whole file's size and hash,
/// as the chunker writes them), so recipes can be published from it. Returns each
/// file's name and bytes.
pub fn write_manifests(tree: &Tree) -> Vec<(String, Vec<u8>)> {
    // Each file's directory with its chunks, in tree order.
    let mut files: Vec<(String, Vec<&Chunk>)> = Vec::new();
    for chunk in &tree.chunks {
        match files.iter_mut().find(|(dir, _)| *dir == chunk.0.base_dir) {
            Some((_, chunks)) => chunks.push(chunk),
            None => files.push((chunk.0.base_dir.clone(), vec![chunk])),
        }
    }
    files
        .into_iter()
        .map(|(dir, chunks)| {
            let name = dir.rsplit('/').next().unwrap().to_owned();
            let mut data = Vec::new();
            let mut listed = Vec::new();
            for (info, bytes) in chunks {
                listed.push(chunk_model::ManifestChunk {
                    chunk_id: info.chunk_id,
                    offset: data.len() as u64,
                    size: bytes.len() as u64,
                    hash: Sha256Digest::of(bytes),
                    pattern: info.pattern_type.clone(),
                    is_keyframe: false,
                    extra: Default::default(),
                });
                data.extend_from_slice(bytes);
            }
            let manifest = chunk_model::Manifest {
                base_name: name.clone(),
                total_chunks: listed.len() as u64,
                created_at: Timestamp::now(),
                grammar_id: None,
                chunks: listed,
                file_size: Some(data.len() as u64),
                file_hash: Some(Sha256Digest::of(&data)),
                format: None,
                strategy: None,
                max_chunk_size: None,
                extra: Default::default(),
            };
            chunk_model::json_file::write_atomic(
                &tree
                    .root
                    .join(&dir)
                    .join(chunk_model::layout::MANIFEST_FILE),
                &manifest,
            )
            .unwrap();
            (name, data)
        })
        .collect()
}

/// Rebuilds `name` from the bucket through its recipe and returns the bytes, or `None`
/// while no recipe is there.
pub async fn rebuild(store: &dyn ObjectStore, name: &str) -> Option<Vec<u8>> {
    match uploader::reconstruct::find_recipe(store, name, uploader::Which::Newest).await {
        Ok(_) => {}
        Err(uploader::ReconstructError::NoRecipe { .. }) => return None,
        Err(e) => panic!("{name}: {e}"),
    }
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join(name);
    uploader::reconstruct(
        store,
        name,
        uploader::Which::Newest,
        &path,
        &uploader::ReconstructOptions::default(),
        &|_| {},
    )
    .await
    .unwrap();
    Some(std::fs::read(&path).unwrap())
}

/// Runs `git` with `args` in `dir` and returns its standard output, failing the test
/// when it fails or runs past [`TIMEOUT`].
pub fn git(dir: &Path, args: &[&str]) -> String {
    let child = std::process::Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("git {args:?} did not finish"))
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A bare repository (the "GitHub" remote) and a working repository over `tree.root`
/// that commits parts of the tree and pushes them.
pub struct Remote {
    _dir: TempDir,
    /// The bare repository workers fetch from.
    pub bare: PathBuf,
    work: PathBuf,
}

impl Remote {
    /// An empty bare repository, and `tree.root` made a repository pushing to it.
    pub fn new(tree: &Tree) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("origin.git");
        git(
            dir.path(),
            &["init", "--quiet", "--bare", bare.to_str().unwrap()],
        );
        git(&tree.root, &["init", "--quiet", "-b", "main"]);
        Self {
            _dir: dir,
            bare,
            work: tree.root.clone(),
        }
    }

    /// Commits `paths` (relative to the tree's root) and returns the commit id; nothing
    /// is pushed yet.
    pub fn commit(&self, paths: &[&str], message: &str) -> String {
        let mut add = vec!["add", "--"];
        add.extend_from_slice(paths);
        git(&self.work, &add);
        git(&self.work, &["commit", "--quiet", "-m", message]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Pushes `main` to the bare repository.
    pub fn push(&self) {
        git(
            &self.work,
            &[
                "push",
                "--quiet",
                self.bare.to_str().unwrap(),
                "HEAD:refs/heads/main",
            ],
        );
    }
}
