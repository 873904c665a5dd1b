//! `cargo xtask bench scale`: how far one detector + dispatcher feeds many workers.
//!
//! A chunk tree of staged chunks (metadata only, as `chunk --stage` leaves it) is
//! detected and dispatched, as the Actions job does, to 1, 2, 4 … 64 simulated workers
//! on loopback. Each simulated worker speaks the worker protocol (bearer token, the
//! `compress_batch` body, `202` with the accepted paths, `/status`) and works its queue
//! off at a fixed service time per byte: a simulated GPU of `--gpu-gb-per-s` (10 GB/s by
//! default). It touches no bytes, so this machine's two cores measure coordination
//! (scan, JSON, HTTP, metadata writes), not compression. The workers run in a child
//! process (`bench scale-fleet`), so the dispatcher's CPU is this process's alone.
//!
//! Reported per worker count: chunks/s and bytes/s until the last chunk is done, the
//! share of linear scaling from one worker, the dispatcher's CPU per chunk, and how long
//! detect and dispatch took. One more run sends a smaller tree of real bytes to real
//! in-process workers (real compression and a local bucket), for scale.
//! Results go to `target/bench/scale.json`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chunk_model::layout::{METADATA_FILE, chunk_dir_name};
use chunk_model::{ChunkMetadata, Sha256Digest, Timestamp, WebhookRequest, object_keys};
use dispatcher::{DispatchConfig, Dispatcher, Endpoint, Mode};

/// The token the simulated workers expect (loopback only, for this run).
const FLEET_TOKEN: &str = "bench-scale-token-loopback-only";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Worker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    pub workers: Vec<usize>,
    /// Chunks in the tree.
    #[arg(long, default_value_t = 20_000)]
    pub chunks: usize,
    /// Bytes each chunk claims (the simulated workers' service time is per byte; no
    /// bytes exist).
    #[arg(long, default_value_t = 1 << 20)]
    pub chunk_size: u64,
    /// Speed of each simulated worker's GPU, in GB/s (10⁹ bytes per second).
    #[arg(long, default_value_t = 10.0)]
    pub gpu_gb_per_s: f64,
    /// Chunks per request.
    #[arg(long, default_value_t = dispatcher::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Leave metadata.json alone (HTTP only), to see what recording outcomes costs.
    #[arg(long)]
    pub no_metadata: bool,
    /// Chunks for the run with real workers (real bytes, real compression); 0 skips it.
    #[arg(long, default_value_t = 256)]
    pub real_chunks: usize,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/scale.json")]
    pub output: PathBuf,
}

/// `bench scale-fleet`: the simulated workers, run by `bench scale` as its child.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Workers to serve, each on its own port of 127.0.0.1.
    #[arg(long)]
    pub count: usize,
    /// Bytes per second each one works off.
    #[arg(long)]
    pub bytes_per_second: f64,
}

// ---------------------------------------------------------------------------------
// The simulated workers.

/// One simulated worker's queue and counters.
#[derive(Debug, Default)]
struct SimState {
    accepted: u64,
    completed: u64,
    /// When the last accepted chunk will be done, on the simulated GPU's clock.
    busy_until: Option<tokio::time::Instant>,
}

#[derive(Clone)]
struct Sim {
    state: Arc<Mutex<SimState>>,
    bytes_per_second: f64,
}

async fn sim_webhook(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {FLEET_TOKEN}"));
    if !authorized {
        return (StatusCode::UNAUTHORIZED, r#"{"error":"Unauthorized"}"#).into_response();
    }
    let chunks = match serde_json::from_slice::<WebhookRequest>(&body) {
        Ok(WebhookRequest::CompressBatch { chunks, .. }) => chunks,
        Ok(WebhookRequest::CompressChunk { chunk_info, .. }) => vec![chunk_info],
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    // Each chunk finishes its service time after the one before it: a GPU takes one
    // batch at a time. Completion is counted when its time has come.
    let now = tokio::time::Instant::now();
    let mut finishes = Vec::with_capacity(chunks.len());
    {
        let mut state = sim.state.lock().unwrap();
        let mut at = state.busy_until.filter(|t| *t > now).unwrap_or(now);
        for chunk in &chunks {
            at += Duration::from_secs_f64(chunk.size as f64 / sim.bytes_per_second);
            finishes.push(at);
        }
        state.busy_until = Some(at);
        state.accepted += chunks.len() as u64;
    }
    let done = sim.state.clone();
    tokio::spawn(async move {
        for at in finishes {
            tokio::time::sleep_until(at).await;
            done.lock().unwrap().completed += 1;
        }
    });
    let accepted = chunk_model::wire::WebhookAccepted {
        status: "accepted".into(),
        accepted: chunks.into_iter().map(|c| c.chunk_path).collect(),
        replayed: false,
    };
    json(StatusCode::ACCEPTED, &accepted)
}

async fn sim_status(State(sim): State<Sim>) -> Response {
    let state = sim.state.lock().unwrap();
    let status = serde_json::json!({
        "accepted": state.accepted,
        "completed": state.completed,
    });
    json(StatusCode::OK, &status)
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

/// Serves `count` simulated workers and prints `ports: p1,p2,…`; exits when stdin closes
/// (the parent ended or dropped it).
pub fn run_fleet(args: FleetArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut ports = Vec::new();
        for _ in 0..args.count {
            let sim = Sim {
                state: Arc::default(),
                bytes_per_second: args.bytes_per_second,
            };
            let app = axum::Router::new()
                .route("/webhook", axum::routing::post(sim_webhook))
                .route("/status", axum::routing::get(sim_status))
                .with_state(sim);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            ports.push(listener.local_addr()?.port().to_string());
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        println!("ports: {}", ports.join(","));
        // Ends when the parent closes our stdin (or dies).
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await?;
        anyhow::Ok(())
    })
}

/// The child process serving the simulated workers; killed when dropped.
struct Fleet {
    child: Child,
    urls: Vec<String>,
}

impl Fleet {
    fn start(count: usize, bytes_per_second: f64) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench", "scale-fleet", "--count", &count.to_string()])
            .args(["--bytes-per-second", &bytes_per_second.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the simulated workers")?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let fleet = Self {
            urls: line
                .trim()
                .strip_prefix("ports: ")
                .with_context(|| format!("the fleet said {line:?}"))?
                .split(',')
                .map(|port| format!("http://127.0.0.1:{port}"))
                .collect(),
            child,
        };
        anyhow::ensure!(fleet.urls.len() == count, "the fleet said {line:?}");
        Ok(fleet)
    }

    /// Chunks completed over all workers.
    async fn completed(&self, client: &reqwest::Client) -> anyhow::Result<u64> {
        let mut total = 0;
        for url in &self.urls {
            let status: serde_json::Value = client
                .get(format!("{url}/status"))
                .timeout(Duration::from_secs(10))
                .send()
                .await?
                .json()
                .await?;
            total += status["completed"].as_u64().unwrap_or(0);
        }
        Ok(total)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// The measurement.

/// A tree of `n` staged chunks (metadata only) of `size` bytes each, in files of 100.
fn staged_tree(root: &Path, n: usize, size: u64) -> anyhow::Result<()> {
    let per_file = 100;
    for i in 0..n {
        let (file, c) = (i / per_file, (i % per_file) as u64);
        let dir = root
            .join("pending_compression")
            .join(format!("file_{file:05}"))
            .join(chunk_dir_name(c, per_file as u64));
        std::fs::create_dir_all(&dir)?;
        let hash = Sha256Digest::of(&(i as u64).to_le_bytes());
        let mut meta = ChunkMetadata::new_pending(
            c,
            c * size,
            size,
            hash,
            "FIXED_SIZE",
            None,
            Timestamp::now(),
        );
        meta.staged_object = Some(object_keys::staged_object(&hash));
        std::fs::write(dir.join(METADATA_FILE), serde_json::to_vec_pretty(&meta)?)?;
    }
    Ok(())
}

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// One worker count's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    pub workers: usize,
    pub chunks: usize,
    pub detect_seconds: f64,
    pub dispatch_seconds: f64,
    /// From the start of detect until the last chunk was done.
    pub total_seconds: f64,
    pub chunks_per_second: f64,
    pub bytes_per_second: f64,
    pub bytes_per_second_per_worker: f64,
    /// Throughput over (one worker's throughput × workers).
    pub share_of_linear: f64,
    /// What the simulated GPUs alone would allow: workers × speed.
    pub ideal_bytes_per_second: f64,
    /// The dispatcher process's CPU (detect, JSON, HTTP, metadata) per chunk.
    pub dispatcher_cpu_micros_per_chunk: f64,
}

async fn measure_point(args: &Args, workers: usize, work: &Path) -> anyhow::Result<Point> {
    let root = work.join(format!("w{workers}"));
    staged_tree(&root, args.chunks, args.chunk_size)?;
    let base = root.join("pending_compression");
    let rate = rate_of(args);
    let fleet = Fleet::start(workers, rate)?;
    let client = reqwest::Client::new();

    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let scan = {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            detector::scan(&detector::DetectConfig::new(&base), chrono::Utc::now())
        })
        .await??
    };
    let detect_seconds = start.elapsed().as_secs_f64();
    let infos: Vec<_> = scan.selected.into_iter().map(|c| c.info).collect();
    anyhow::ensure!(infos.len() == args.chunks, "detect found {}", infos.len());

    let endpoints = fleet
        .urls
        .iter()
        .enumerate()
        .map(|(i, url)| Endpoint {
            name: format!("sim-{i}"),
            url: format!("{url}/webhook"),
        })
        .collect();
    let mut config = DispatchConfig::new(endpoints);
    config.token = Some(FLEET_TOKEN.into());
    config.mode = Mode::Batch(args.batch_size);
    config.base = (!args.no_metadata).then(|| base.clone());
    // Enough requests in flight to keep every worker's queue fed.
    config.concurrency = workers.max(8);
    let report = Dispatcher::new(config)?.run(infos, |_| {}).await;
    let dispatch_seconds = start.elapsed().as_secs_f64() - detect_seconds;
    let cpu = cpu_seconds() - cpu_start;
    anyhow::ensure!(
        report.all_accepted(),
        "{} of {} chunks accepted",
        report.accepted_chunks,
        report.total_chunks
    );

    let deadline = Instant::now() + Duration::from_secs(600);
    while fleet.completed(&client).await? < args.chunks as u64 {
        anyhow::ensure!(Instant::now() < deadline, "the workers did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total_seconds = start.elapsed().as_secs_f64();
    drop(fleet);
    std::fs::remove_dir_all(&root)?;

    let bytes = args.chunks as f64 * args.chunk_size as f64;
    Ok(Point {
        workers,
        chunks: args.chunks,
        detect_seconds,
        dispatch_seconds,
        total_seconds,
        chunks_per_second: args.chunks as f64 / total_seconds,
        bytes_per_second: bytes / total_seconds,
        bytes_per_second_per_worker: bytes / total_seconds / workers as f64,
        share_of_linear: 0.0,
        ideal_bytes_per_second: rate * workers as f64,
        dispatcher_cpu_micros_per_chunk: cpu * 1e6 / args.chunks as f64,
    })
}

/// Real workers: real bytes on disk, real compression, a local bucket.
async fn measure_real(args: &Args, workers: usize, work: &Path) -> anyhow::Result<Point> {
    let root = work.join(format!("real{workers}"));
    let infos =
        crate::bench_dispatch::make_tree(&root, args.real_chunks, args.chunk_size as usize)?;
    let bucket = work.join(format!("real{workers}-bucket"));
    let store: Arc<dyn uploader::ObjectStore> = Arc::new(uploader::LocalDir::new(&bucket)?);
    let mut servers = Vec::new();
    let mut endpoints = Vec::new();
    // Signed as in production: verifying is part of a real worker's cost.
    let signing_key: Vec<u8> = {
        use rand::RngCore as _;
        let mut key = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        key
    };
    for i in 0..workers {
        let mut config = worker::WorkerConfig::new(&root, store.clone());
        config.token = Some(FLEET_TOKEN.into());
        config.signing_key = Some(signing_key.clone());
        config.max_queue = args.real_chunks.max(1);
        config.worker_id = format!("real-{i}");
        let server = worker::Worker::new(config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        endpoints.push(Endpoint {
            name: format!("real-{i}"),
            url: format!("{url}/webhook"),
        });
        servers.push((url, stop, task));
    }
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let mut config = DispatchConfig::new(endpoints);
    config.token = Some(FLEET_TOKEN.into());
    config.signing_key = Some(signing_key);
    config.mode = Mode::Batch(args.batch_size);
    config.base = Some(root.join("pending_compression"));
    config.concurrency = workers.max(8);
    let report = Dispatcher::new(config)?.run(infos, |_| {}).await;
    let dispatch_seconds = start.elapsed().as_secs_f64();
    let dispatch_cpu = cpu_seconds() - cpu_start;
    anyhow::ensure!(report.all_accepted(), "not every chunk was accepted");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut done = 0;
        for (url, _, _) in &servers {
            let status: chunk_model::wire::WorkerStatus = client
                .get(format!("{url}/status"))
                .bearer_auth(FLEET_TOKEN)
                .send()
                .await?
                .json()
                .await?;
            done += status.completed + status.failed;
        }
        if done >= args.real_chunks as u64 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the real workers did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total_seconds = start.elapsed().as_secs_f64();
    for (_, stop, task) in servers {
        let _ = stop.send(());
        task.await.context("worker task")??;
    }
    let bytes = args.real_chunks as f64 * args.chunk_size as f64;
    Ok(Point {
        workers,
        chunks: args.real_chunks,
        detect_seconds: 0.0,
        dispatch_seconds,
        total_seconds,
        chunks_per_second: args.real_chunks as f64 / total_seconds,
        bytes_per_second: bytes / total_seconds,
        bytes_per_second_per_worker: bytes / total_seconds / workers as f64,
        share_of_linear: 0.0,
        ideal_bytes_per_second: 0.0,
        // In-process workers share this CPU clock: the dispatch phase only.
        dispatcher_cpu_micros_per_chunk: dispatch_cpu * 1e6 / args.real_chunks as f64,
    })
}

fn rate_of(args: &Args) -> f64 {
    args.gpu_gb_per_s * 1e9
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (work, filesystem) = crate::bench_all::small_files_dir()?;
    println!(
        "bench scale: {} staged chunks of {} bytes each, simulated GPUs of {} GB/s, trees on {filesystem}",
        args.chunks, args.chunk_size, args.gpu_gb_per_s
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let mut points: Vec<Point> = Vec::new();
    for &workers in &args.workers {
        let mut point = runtime.block_on(measure_point(&args, workers, work.path()))?;
        // Linear from the one-worker run when there is one, else from the simulated
        // speed (what one worker would do were nothing else in the way).
        let one = points
            .iter()
            .find(|p| p.workers == 1)
            .map_or(rate_of(&args), |p| p.bytes_per_second);
        point.share_of_linear = point.bytes_per_second / (one * workers as f64);
        println!(
            "{workers:>3} workers: {:>8.0} chunks/s, {:>7.2} GB/s ({:>5.2} GB/s each, {:>4.0}% of linear, ideal {:.0} GB/s); detect {:.2} s, dispatch {:.2} s, done {:.2} s; dispatcher CPU {:.0} µs/chunk",
            point.chunks_per_second,
            point.bytes_per_second / 1e9,
            point.bytes_per_second_per_worker / 1e9,
            point.share_of_linear * 100.0,
            point.ideal_bytes_per_second / 1e9,
            point.detect_seconds,
            point.dispatch_seconds,
            point.total_seconds,
            point.dispatcher_cpu_micros_per_chunk,
        );
        points.push(point);
    }
    let real = if args.real_chunks > 0 {
        let mut real = Vec::new();
        for workers in [1, 2] {
            let point = runtime.block_on(measure_real(&args, workers, work.path()))?;
            println!(
                "real workers ({workers}, CPU engines on this machine): {} chunks in {:.2} s = {:.0} chunks/s, {:.0} MB/s",
                point.chunks,
                point.total_seconds,
                point.chunks_per_second,
                point.bytes_per_second / 1e6
            );
            real.push(point);
        }
        real
    } else {
        Vec::new()
    };
    let result = serde_json::json!({
        "chunks": args.chunks,
        "chunk_size": args.chunk_size,
        "gpu_gb_per_s": args.gpu_gb_per_s,
        "batch_size": args.batch_size,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "filesystem": filesystem,
        "simulated": points,
        "real": real,
    });
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.output, serde_json::to_string_pretty(&result)? + "\n")?;
    println!("wrote {}", args.output.display());
    Ok(())
}
