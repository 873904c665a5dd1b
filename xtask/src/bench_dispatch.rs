//! `cargo xtask bench dispatch`: chunks per second accepted by a local worker in batch
//! and per-chunk mode (metadata updates included, as a real run does them), and the
//! worker's compression throughput working off a full queue, beside the ceiling: the
//! same dispatcher against an nginx that only answers `202` (`$PANINI_NGINX`, else
//! `/usr/sbin/nginx` or `nginx` on `PATH`; skipped with a note when there is none).
//! Beside the worker's drain it times the compressor alone: `gpu-compress` in this
//! process on the same chunks, in the worker's batches, with the worker's codec choice,
//! engine and threads (issue 17's target: the drain within 1.5× of it).
//! Results go to `target/bench/dispatch.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chunk_model::layout::{DATA_FILE, METADATA_FILE, chunk_dir_name};
use chunk_model::{ChunkInfo, ChunkMetadata, Priority, Sha256Digest, Timestamp};
use dispatcher::{DispatchConfig, Dispatcher, Endpoint, Mode};
use rand::{Rng as _, SeedableRng as _};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Chunks to dispatch.
    #[arg(long, default_value_t = 10_000)]
    pub chunks: usize,
    /// Bytes per chunk.
    #[arg(long, default_value_t = 16 * 1024)]
    pub chunk_size: usize,
    /// Chunks per request in batch mode.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/dispatch.json")]
    pub output: PathBuf,
}

/// A chunk tree of `n` chunks in 100-chunk files: half text-like, half random.
pub(crate) fn make_tree(root: &Path, n: usize, size: usize) -> anyhow::Result<Vec<ChunkInfo>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let words: [&[u8]; 5] = [b"panini ", b"chunk ", b"dispatch ", b"worker ", b"bucket\n"];
    let per_file = 100;
    let mut infos = Vec::with_capacity(n);
    for i in 0..n {
        let (file, c) = (i / per_file, (i % per_file) as u64);
        let mut bytes = Vec::with_capacity(size);
        if i % 2 == 0 {
            while bytes.len() < size {
                bytes.extend_from_slice(words[rng.gen_range(0..words.len())]);
            }
            bytes.truncate(size);
        } else {
            bytes.resize(size, 0);
            rng.fill(bytes.as_mut_slice());
        }
        let name = format!("file_{file:04}");
        let dir_name = chunk_dir_name(c, per_file as u64);
        let dir = root.join("pending_compression").join(&name).join(&dir_name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(DATA_FILE), &bytes)?;
        let hash = Sha256Digest::of(&bytes);
        let meta = ChunkMetadata::new_pending(
            c,
            c * size as u64,
            size as u64,
            hash,
            "FIXED_SIZE",
            None,
            Timestamp::now(),
        );
        chunk_model::json_file::write_atomic(&dir.join(METADATA_FILE), &meta)?;
        infos.push(ChunkInfo {
            chunk_path: format!("pending_compression/{name}/{dir_name}"),
            chunk_id: c,
            pattern_type: "FIXED_SIZE".into(),
            size: size as u64,
            hash: Some(hash),
            base_dir: format!("pending_compression/{name}"),
            is_keyframe: false,
            priority: Priority::Normal,
            staged_object: None,
            extra: Default::default(),
        });
    }
    Ok(infos)
}

/// One dispatch of the whole chunk set to a fresh worker.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Chunks the worker accepted.
    pub accepted: usize,
    /// Seconds until the dispatcher had sent (and recorded) every chunk.
    pub dispatch_secs: f64,
    /// Seconds until the worker had compressed and stored every accepted chunk.
    pub drained_secs: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// CPU seconds this process used from the first request until drained (the
    /// dispatcher's share included); `None` where `/proc/self/stat` is not there.
    pub cpu_secs: Option<f64>,
}

/// CPU seconds (user and system, all threads) this process has used, from
/// `/proc/self/stat`; `None` elsewhere. On a shared machine the wall time of a stage
/// depends on what else runs; its CPU time much less.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which ends with the last `)`: state is field 3,
    // utime and stime are fields 14 and 15, in clock ticks of 1/100 s (USER_HZ).
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// What one `bench dispatch` run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Batches, without metadata updates: the dispatcher and HTTP alone.
    pub bare: Phase,
    /// Batches, recording every outcome in metadata.json as a real run does.
    pub batch: Phase,
    /// One POST per chunk (the original design), with metadata updates.
    pub per_chunk: Phase,
    /// The ceiling: batches to an nginx that only answers `202`; `None` without nginx.
    pub peer_202: Option<PeerPhase>,
    /// The compressor alone on the chunks the batch phase's worker drained.
    pub in_process: InProcess,
}

/// `gpu-compress` in this process on the same chunks, batched as the worker batches them
/// (reading the chunks is not timed).
#[derive(Debug, Clone)]
pub struct InProcess {
    /// Engine that ran (`auto`, as the worker's).
    pub engine: String,
    /// Threads of rayon's global pool, the one the worker in this process uses too.
    pub threads: usize,
    /// Seconds compressing, without decoding the frames.
    pub compress_secs: f64,
    /// Seconds compressing with `verify` (each frame decoded and compared), as the
    /// worker compresses.
    pub compress_verify_secs: f64,
    /// CPU seconds of the compression without and with `verify`, when known.
    pub compress_cpu_secs: Option<f64>,
    pub compress_verify_cpu_secs: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The dispatcher against an endpoint that does nothing but answer `202`.
#[derive(Debug, Clone)]
pub struct PeerPhase {
    /// Chunks accepted.
    pub accepted: usize,
    /// Seconds to send every chunk, recording outcomes in metadata.json.
    pub dispatch_secs: f64,
    /// Seconds to send every chunk, HTTP only.
    pub bare_secs: f64,
}

/// Dispatches `args.chunks` chunks in the three modes, each to a fresh local worker.
pub async fn measure(args: &Args) -> anyhow::Result<Outcome> {
    let batch_dir = tempfile::tempdir()?;
    let per_chunk_dir = tempfile::tempdir()?;
    let batch_chunks = make_tree(batch_dir.path(), args.chunks, args.chunk_size)?;
    let per_chunk_chunks = make_tree(per_chunk_dir.path(), args.chunks, args.chunk_size)?;
    let in_process = {
        let (root, chunks) = (batch_dir.path().to_owned(), batch_chunks.clone());
        tokio::task::spawn_blocking(move || compress_in_process(&root, &chunks))
            .await
            .context("the in-process compression task")??
    };
    let bare = phase(
        batch_dir.path(),
        batch_chunks.clone(),
        Mode::Batch(args.batch_size),
        false,
    )
    .await?;
    let batch = phase(
        batch_dir.path(),
        batch_chunks,
        Mode::Batch(args.batch_size),
        true,
    )
    .await?;
    let per_chunk = phase(
        per_chunk_dir.path(),
        per_chunk_chunks.clone(),
        Mode::PerChunk,
        true,
    )
    .await?;
    let peer_202 = match nginx_binary() {
        Some(nginx) => Some(
            peer_phase(
                &nginx,
                per_chunk_dir.path(),
                per_chunk_chunks,
                args.batch_size,
            )
            .await?,
        ),
        None => {
            println!("nginx not found (set PANINI_NGINX); no 202-endpoint ceiling this run");
            None
        }
    };
    Ok(Outcome {
        bare,
        batch,
        per_chunk,
        peer_202,
        in_process,
    })
}

/// Wall and CPU time summed over calls.
#[derive(Debug)]
struct Timed {
    wall: Duration,
    /// `None` once a reading of the CPU time failed.
    cpu_secs: Option<f64>,
}

impl Default for Timed {
    fn default() -> Self {
        Timed {
            wall: Duration::ZERO,
            cpu_secs: Some(0.0),
        }
    }
}

impl Timed {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (start, cpu_start) = (Instant::now(), process_cpu_secs());
        let out = f();
        self.wall += start.elapsed();
        self.cpu_secs = (self.cpu_secs.zip(cpu_start).zip(process_cpu_secs()))
            .map(|((total, from), to)| total + (to - from));
        out
    }
}

/// Compresses the chunks under `root` in this process, in the worker's default batches
/// and with its compressor settings (codec `auto`, engine `auto`): once without and
/// once with `verify`. Only the compression calls are timed.
fn compress_in_process(root: &Path, chunks: &[ChunkInfo]) -> anyhow::Result<InProcess> {
    let config = |verify| gpu_compress::CompressorConfig {
        codec: gpu_compress::CodecChoice::Auto,
        level: None,
        engine: gpu_compress::EngineChoice::Auto,
        verify,
    };
    let plain = gpu_compress::Compressor::new(config(false)).context("building a compressor")?;
    let verifying = gpu_compress::Compressor::new(config(true)).context("building a compressor")?;
    let (mut plain_time, mut verify_time) = (Timed::default(), Timed::default());
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    for batch in chunks.chunks(worker::DEFAULT_MAX_BATCH) {
        let data = batch
            .iter()
            .map(|c| {
                let path = root.join(&c.chunk_path).join(DATA_FILE);
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let frames = plain_time
            .time(|| plain.compress_batch(&inputs))
            .context("compressing in process")?;
        let verified = verify_time
            .time(|| verifying.compress_batch(&inputs))
            .context("compressing in process with verify")?;
        bytes_in += inputs.iter().map(|d| d.len() as u64).sum::<u64>();
        bytes_out += frames.iter().map(|f| f.bytes.len() as u64).sum::<u64>();
        anyhow::ensure!(
            frames
                .iter()
                .zip(&verified)
                .all(|(a, b)| a.bytes == b.bytes),
            "compressing the same chunks twice gave different frames"
        );
    }
    Ok(InProcess {
        engine: plain.engine().to_string(),
        threads: rayon::current_num_threads(),
        compress_secs: plain_time.wall.as_secs_f64(),
        compress_verify_secs: verify_time.wall.as_secs_f64(),
        compress_cpu_secs: plain_time.cpu_secs,
        compress_verify_cpu_secs: verify_time.cpu_secs,
        bytes_in,
        bytes_out,
    })
}

/// nginx: `$PANINI_NGINX`, `/usr/sbin/nginx`, or `nginx` on `PATH`.
fn nginx_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PANINI_NGINX") {
        return Some(PathBuf::from(path));
    }
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return Some(sbin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|p| p.is_file())
    })
}

/// An nginx child process; killed and reaped on drop. It runs as one process
/// (`master_process off`): killing a master leaves its workers behind, orphaned.
struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts nginx on a free port of 127.0.0.1 answering `POST /webhook` with `202`
/// (BENCH-PEERS.md) and waits until it accepts connections. Returns it and its URL.
async fn start_nginx(binary: &Path) -> anyhow::Result<(Nginx, String)> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 64m;\n\
         \x20   location /webhook {{ default_type application/json; return 202 '{{\"status\":\"accepted\"}}'; }}\n  }}\n}}\n"
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = std::process::Command::new(binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut nginx = Nginx { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        if let Some(status) = nginx.child.try_wait()? {
            anyhow::bail!("nginx exited with {status} before listening");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nginx did not listen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((nginx, format!("http://127.0.0.1:{port}/webhook")))
}

/// The dispatcher in batch mode against nginx, with and without metadata updates.
async fn peer_phase(
    nginx: &Path,
    root: &Path,
    chunks: Vec<ChunkInfo>,
    batch_size: usize,
) -> anyhow::Result<PeerPhase> {
    let (_server, url) = start_nginx(nginx).await?;
    let timed = async |record: bool| -> anyhow::Result<(usize, f64)> {
        let mut config = DispatchConfig::new(vec![Endpoint::from_url(&url)]);
        config.mode = Mode::Batch(batch_size);
        config.base = record.then(|| root.join("pending_compression"));
        config.concurrency = 8;
        let dispatcher = Dispatcher::new(config)?;
        let start = Instant::now();
        let report = dispatcher.run(chunks.clone(), |_| {}).await;
        Ok((report.accepted_chunks, start.elapsed().as_secs_f64()))
    };
    let (_, bare_secs) = timed(false).await?;
    let (accepted, dispatch_secs) = timed(true).await?;
    Ok(PeerPhase {
        accepted,
        dispatch_secs,
        bare_secs,
    })
}

/// The worker alone on the chunks of real files (issue #17's bound on the workers,
/// without the chunking and rebuilding that share the cores in a pipeline): `files` cut
/// into a tree under `dir` (untimed), then `runs` times every chunk sent at once to a
/// fresh worker with a fresh local bucket beside the tree (HTTP only, no metadata
/// written), timed until all are stored; and the compressor alone on the same chunks, in
/// the worker's batches.
pub async fn worker_alone(
    files: &[PathBuf],
    dir: &Path,
    runs: usize,
) -> anyhow::Result<(Vec<Phase>, InProcess)> {
    let base = dir.join(chunk_model::layout::DEFAULT_ROOT);
    // Named as `panini chunk` names them.
    let expanded = chunker::expand_inputs(files, &chunker::InputOptions::default())
        .context("naming the corpus's files")?;
    if let Some(error) = expanded.errors.first() {
        anyhow::bail!("naming the corpus's files: {error}");
    }
    let inputs = expanded.files;
    let mut options = chunker::ChunkOptions::new(&base);
    options.sync = false;
    for result in chunker::chunk_files(&inputs, &options) {
        result.context("chunking the corpus for the worker")?;
    }
    let config = detector::DetectConfig::new(&base);
    let chunks: Vec<ChunkInfo> = detector::scan(&config, chrono::Utc::now())?
        .selected
        .into_iter()
        .map(|c| c.info)
        .collect();
    let in_process = {
        let (root, chunks) = (dir.to_owned(), chunks.clone());
        tokio::task::spawn_blocking(move || compress_in_process(&root, &chunks))
            .await
            .context("the in-process compression task")??
    };
    let mut phases = Vec::with_capacity(runs);
    for _ in 0..runs {
        let phase = phase(dir, chunks.clone(), Mode::Batch(100), false).await?;
        anyhow::ensure!(
            phase.accepted == chunks.len(),
            "the worker accepted {} of {} chunks",
            phase.accepted,
            chunks.len()
        );
        phases.push(phase);
    }
    Ok((phases, in_process))
}

/// Starts a worker over `root` with a fresh bucket beside the tree, dispatches `chunks`,
/// and waits until the worker has reported them all.
async fn phase(
    root: &Path,
    chunks: Vec<ChunkInfo>,
    mode: Mode,
    record: bool,
) -> anyhow::Result<Phase> {
    let bucket = tempfile::Builder::new()
        .prefix("bucket-")
        .tempdir_in(root)?;
    let store: Arc<dyn uploader::ObjectStore> = Arc::new(uploader::LocalDir::new(bucket.path())?);
    let mut config = worker::WorkerConfig::new(root, store);
    // Authenticated and signed as in production: the checks are part of the cost.
    let token = panini::token::new_token()?;
    let signing_key: Vec<u8> = {
        use rand::RngCore as _;
        let mut key = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        key
    };
    config.token = Some(token.clone());
    config.signing_key = Some(signing_key.clone());
    // The queue holds the whole run: acceptance is measured, not back-pressure.
    config.max_queue = chunks.len().max(1);
    config.engine = gpu_compress::EngineChoice::Auto;
    let server = worker::Worker::new(config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhook", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    let mut dconfig = DispatchConfig::new(vec![Endpoint::from_url(&url)]);
    dconfig.token = Some(token.clone());
    dconfig.signing_key = Some(signing_key);
    dconfig.mode = mode;
    dconfig.base = record.then(|| root.join("pending_compression"));
    dconfig.concurrency = 8;
    let dispatcher = Dispatcher::new(dconfig)?;
    let (start, cpu_start) = (Instant::now(), process_cpu_secs());
    let report = dispatcher.run(chunks, |_| {}).await;
    let dispatch_secs = start.elapsed().as_secs_f64();

    let client = reqwest::Client::new();
    let status_url = url.replace("/webhook", "/status");
    let metrics_url = url.replace("/webhook", "/metrics");
    let deadline = Instant::now() + Duration::from_secs(600);
    let failed = loop {
        let text = client
            .get(&status_url)
            .bearer_auth(&token)
            .send()
            .await?
            .text()
            .await?;
        let status: chunk_model::wire::WorkerStatus =
            serde_json::from_str(&text).with_context(|| format!("GET {status_url}: {text}"))?;
        if status.completed + status.failed >= report.accepted_chunks as u64 {
            break status.failed;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "worker did not finish within 10 minutes: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let drained_secs = start.elapsed().as_secs_f64();
    // A chunk that failed was not compressed and stored: the drain's time would flatter.
    anyhow::ensure!(
        failed == 0,
        "the worker failed {failed} of {} chunks: nothing is measured",
        report.accepted_chunks
    );
    let cpu_secs = cpu_start
        .zip(process_cpu_secs())
        .map(|(from, to)| to - from);
    let metrics = client
        .get(&metrics_url)
        .bearer_auth(&token)
        .send()
        .await?
        .text()
        .await?;
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    };
    let (bytes_in, bytes_out) = (
        metric("panini_worker_input_bytes_total"),
        metric("panini_worker_output_bytes_total"),
    );
    let _ = stop.send(());
    task.await.context("worker task")??;
    Ok(Phase {
        accepted: report.accepted_chunks,
        dispatch_secs,
        drained_secs,
        bytes_in,
        bytes_out,
        cpu_secs,
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let Outcome {
            bare,
            batch,
            per_chunk,
            peer_202,
            in_process,
        } = measure(&args).await?;
        let n = args.chunks as f64;

        let mb = |b: u64, s: f64| b as f64 / 1e6 / s;
        let result = serde_json::json!({
            "chunks": args.chunks,
            "chunk_size": args.chunk_size,
            "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "batch": {
                "batch_size": args.batch_size,
                "accepted": batch.accepted,
                "seconds": batch.dispatch_secs,
                "chunks_per_second": n / batch.dispatch_secs,
            },
            "batch_without_metadata_updates": {
                "accepted": bare.accepted,
                "seconds": bare.dispatch_secs,
                "chunks_per_second": n / bare.dispatch_secs,
            },
            "per_chunk": {
                "accepted": per_chunk.accepted,
                "seconds": per_chunk.dispatch_secs,
                "chunks_per_second": n / per_chunk.dispatch_secs,
            },
            "worker_full_queue": {
                "seconds_to_drain": batch.drained_secs,
                "chunks_per_second": n / batch.drained_secs,
                "input_mb_per_second": mb(batch.bytes_in, batch.drained_secs),
                "bytes_in": batch.bytes_in,
                "bytes_out": batch.bytes_out,
            },
            "in_process_compression": {
                "engine": in_process.engine,
                "threads": in_process.threads,
                "seconds": in_process.compress_secs,
                "input_mb_per_second": mb(in_process.bytes_in, in_process.compress_secs),
                "seconds_with_verify": in_process.compress_verify_secs,
                "bytes_in": in_process.bytes_in,
                "bytes_out": in_process.bytes_out,
                "worker_drain_vs_compression": batch.drained_secs / in_process.compress_secs,
                "worker_drain_vs_compression_with_verify":
                    batch.drained_secs / in_process.compress_verify_secs,
                "cpu_seconds": in_process.compress_cpu_secs,
                "cpu_seconds_with_verify": in_process.compress_verify_cpu_secs,
                "worker_cpu_seconds": batch.cpu_secs,
                "worker_cpu_vs_compression_cpu": batch.cpu_secs
                    .zip(in_process.compress_cpu_secs)
                    .map(|(w, c)| w / c),
                "worker_cpu_vs_compression_with_verify_cpu": batch.cpu_secs
                    .zip(in_process.compress_verify_cpu_secs)
                    .map(|(w, c)| w / c),
            },
            "batch_vs_per_chunk_speedup": per_chunk.dispatch_secs / batch.dispatch_secs,
            "peer_nginx_202": peer_202.as_ref().map(|p| serde_json::json!({
                "accepted": p.accepted,
                "seconds": p.dispatch_secs,
                "chunks_per_second": n / p.dispatch_secs,
                "seconds_without_metadata_updates": p.bare_secs,
                "chunks_per_second_without_metadata_updates": n / p.bare_secs,
                "panini_worker_vs_peer": p.dispatch_secs / batch.dispatch_secs,
            })),
        });
        println!(
            "batch without metadata updates: {:.0} chunks/s accepted",
            n / bare.dispatch_secs
        );
        println!(
            "batch ({}/request): {:.0} chunks/s accepted; per-chunk: {:.0} chunks/s ({:.1}x); worker drained {} chunks in {:.2} s = {:.0} chunks/s, {:.1} MB/s in",
            args.batch_size,
            n / batch.dispatch_secs,
            n / per_chunk.dispatch_secs,
            per_chunk.dispatch_secs / batch.dispatch_secs,
            args.chunks,
            batch.drained_secs,
            n / batch.drained_secs,
            mb(batch.bytes_in, batch.drained_secs),
        );
        println!(
            "in-process compression of the same chunks ({} engine, {} threads, batches of {}): {:.2} s = {:.1} MB/s, {:.2} s with verify; worker drain = {:.2}x compression, {:.2}x compression with verify",
            in_process.engine,
            in_process.threads,
            worker::DEFAULT_MAX_BATCH,
            in_process.compress_secs,
            mb(in_process.bytes_in, in_process.compress_secs),
            in_process.compress_verify_secs,
            batch.drained_secs / in_process.compress_secs,
            batch.drained_secs / in_process.compress_verify_secs,
        );
        if let (Some(worker), Some(alone), Some(verifying)) = (
            batch.cpu_secs,
            in_process.compress_cpu_secs,
            in_process.compress_verify_cpu_secs,
        ) {
            println!(
                "CPU time: worker (and dispatcher) {worker:.2} s, compression {alone:.2} s, with verify {verifying:.2} s: worker = {:.2}x compression, {:.2}x compression with verify",
                worker / alone,
                worker / verifying,
            );
        }
        if let Some(p) = &peer_202 {
            println!(
                "peer: nginx answering 202: {:.0} chunks/s accepted with metadata updates, {:.0} without; Panini worker batch = {:.2}x of it",
                n / p.dispatch_secs,
                n / p.bare_secs,
                p.dispatch_secs / batch.dispatch_secs,
            );
        }
        if let Some(dir) = args.output.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&args.output, serde_json::to_string_pretty(&result)? + "\n")?;
        println!("wrote {}", args.output.display());
        anyhow::ensure!(
            batch.accepted == args.chunks && per_chunk.accepted == args.chunks,
            "not every chunk was accepted"
        );
        Ok(())
    })
}
