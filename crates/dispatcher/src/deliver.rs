//! Requests, the worker pool, retries and the run loop.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chunk_model::tree_lock::TreeLock;
use chunk_model::{ChunkInfo, WebhookRequest};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rand::Rng as _;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::Serialize;

use crate::config::{DispatchConfig, Mode};
use crate::{DispatchError, metadata, signing};

/// Reads `chunks_to_process.json`: a list of chunks as the detector writes them.
pub fn read_chunks_file(path: &Path) -> Result<Vec<ChunkInfo>, DispatchError> {
    chunk_model::json_file::read(path).map_err(|source| DispatchError::ChunksFile {
        path: path.to_owned(),
        source,
    })
}

/// One request: its delivery id (the same on every retry), its chunks and its body.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `webhook-id`.
    pub id: String,
    /// The chunks it carries.
    pub chunks: Vec<ChunkInfo>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl Delivery {
    /// The chunk paths it carries.
    pub fn chunk_paths(&self) -> Vec<String> {
        self.chunks.iter().map(|c| c.chunk_path.clone()).collect()
    }
}

/// A worker took the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The worker's name.
    pub worker: String,
    /// Tries it took.
    pub tries: u32,
}

/// The request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What the last try got.
    pub error: String,
    /// A worker refused it (4xx other than 408/429); retrying the same request is
    /// pointless. `false`: every try failed for reasons that may pass (busy, down).
    pub permanent: bool,
    /// Tries it took.
    pub tries: u32,
}

/// What became of one request.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryOutcome {
    /// `webhook-id`.
    pub delivery_id: String,
    /// The chunks it carried.
    pub chunk_paths: Vec<String>,
    /// Accepted or not.
    pub result: Result<Accepted, Failure>,
    /// Chunks whose `metadata.json` could not be updated, with why.
    pub metadata_errors: Vec<String>,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DispatchReport {
    /// Chunks sent (the list, less [`DispatchReport::skipped`]).
    pub total_chunks: usize,
    /// Chunks a worker accepted.
    pub accepted_chunks: usize,
    /// Every request, in completion order.
    pub outcomes: Vec<DeliveryOutcome>,
    /// Chunks of the list left out because, under the tree's lock, their metadata said
    /// they were no longer dispatchable (another run sent or completed them).
    pub skipped: Vec<metadata::Skipped>,
}

impl DispatchReport {
    /// Whether every chunk was accepted.
    pub fn all_accepted(&self) -> bool {
        self.accepted_chunks == self.total_chunks
    }
}

#[derive(Debug, Default)]
struct WorkerState {
    in_flight: usize,
    consecutive_failures: u32,
    unavailable_until: Option<Instant>,
}

/// The workers' load and health, shared by all requests of a run.
#[derive(Debug)]
struct Pool {
    workers: Mutex<Vec<WorkerState>>,
}

impl Pool {
    fn new(n: usize) -> Self {
        Self {
            workers: Mutex::new((0..n).map(|_| WorkerState::default()).collect()),
        }
    }

    /// The healthy worker with the fewest chunks in flight, preferring not `avoid` (the
    /// worker that just failed this request) and fewer recent failures. When every
    /// worker is cooling off, the one that comes back first: the caller has already
    /// backed off, and waiting out a whole cool-off would stall a lone worker's retries.
    fn pick(&self, avoid: Option<usize>, now: Instant) -> usize {
        let workers = self.workers.lock().expect("pool lock");
        let healthy = workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.unavailable_until.is_none_or(|t| t <= now))
            .min_by_key(|(i, w)| (Some(*i) == avoid, w.in_flight, w.consecutive_failures, *i));
        match healthy {
            Some((i, _)) => i,
            None => workers
                .iter()
                .enumerate()
                .min_by_key(|(i, w)| (w.unavailable_until, *i))
                .map_or(0, |(i, _)| i),
        }
    }

    fn has_other_healthy(&self, than: usize, now: Instant) -> bool {
        let workers = self.workers.lock().expect("pool lock");
        workers
            .iter()
            .enumerate()
            .any(|(i, w)| i != than && w.unavailable_until.is_none_or(|t| t <= now))
    }

    fn begin(&self, i: usize, chunks: usize) {
        self.workers.lock().expect("pool lock")[i].in_flight += chunks;
    }

    fn end(&self, i: usize, chunks: usize, health: Health, config: &DispatchConfig) {
        let mut workers = self.workers.lock().expect("pool lock");
        let w = &mut workers[i];
        w.in_flight -= chunks;
        let now = Instant::now();
        match health {
            Health::Ok => {
                w.consecutive_failures = 0;
                w.unavailable_until = None;
            }
            Health::Busy(wait) => w.unavailable_until = Some(now + wait),
            Health::Failing { down } => {
                w.consecutive_failures += 1;
                if down || w.consecutive_failures >= config.failure_threshold {
                    w.unavailable_until = Some(now + config.cool_off);
                    tracing::warn!(
                        worker = i,
                        "cooling off a failing worker for {:?}",
                        config.cool_off
                    );
                }
            }
        }
    }
}

/// What a try says about the worker.
enum Health {
    Ok,
    /// Alive but asked for a pause (`429`/`503` with `Retry-After`).
    Busy(Duration),
    /// Failed; `down` when nothing answered at all.
    Failing {
        down: bool,
    },
}

/// What one try came to.
enum Try {
    Accepted(Vec<String>),
    /// `down`: nothing listens there (the connection failed).
    Retry {
        error: String,
        retry_after: Option<Duration>,
        down: bool,
    },
    Refused {
        error: String,
        too_large: bool,
    },
}

/// Sends chunks to workers. Build once per run with [`Dispatcher::new`].
#[derive(Debug)]
pub struct Dispatcher {
    config: DispatchConfig,
    client: reqwest::Client,
    pool: Pool,
}

impl Dispatcher {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(config: DispatchConfig) -> Result<Self, DispatchError> {
        config.check()?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.concurrency)
            .user_agent(concat!("panini-dispatcher/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(DispatchError::HttpClient)?;
        let pool = Pool::new(config.endpoints.len());
        Ok(Self {
            config,
            client,
            pool,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DispatchConfig {
        &self.config
    }

    /// The requests `chunks` become, in order, each with a fresh delivery id.
    pub fn plan(&self, chunks: Vec<ChunkInfo>) -> Vec<Delivery> {
        self.groups(chunks)
            .into_iter()
            .map(|group| self.delivery(group))
            .collect()
    }

    /// `chunks` cut into the groups one request each carries, in order.
    fn groups(&self, chunks: Vec<ChunkInfo>) -> Vec<Vec<ChunkInfo>> {
        let size = match self.config.mode {
            Mode::PerChunk => 1,
            Mode::Batch(n) => n,
        };
        let mut groups = Vec::with_capacity(chunks.len().div_ceil(size));
        let mut chunks = chunks.into_iter().peekable();
        while chunks.peek().is_some() {
            groups.push(chunks.by_ref().take(size).collect());
        }
        groups
    }

    fn delivery(&self, chunks: Vec<ChunkInfo>) -> Delivery {
        let repository = self.config.repository.clone();
        let workflow = self.config.workflow.clone();
        let request = if self.config.mode == Mode::PerChunk && chunks.len() == 1 {
            WebhookRequest::CompressChunk {
                chunk_info: chunks[0].clone(),
                repository,
                workflow,
            }
        } else {
            WebhookRequest::CompressBatch {
                chunks: chunks.clone(),
                repository,
                workflow,
            }
        };
        let body = serde_json::to_vec(&request).expect("wire types always serialize");
        Delivery {
            id: signing::new_delivery_id(),
            chunks,
            body,
        }
    }

    /// The headers of one try of `delivery`: content type, bearer token, and when a
    /// signing key is set, `webhook-id` / `webhook-timestamp` / `webhook-signature`
    /// signed at `timestamp` (Unix seconds). Each try is signed afresh, so a long retry
    /// never arrives with a stale signature.
    pub fn headers(&self, delivery: &Delivery, timestamp: i64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            "application/json".parse().expect("valid header"),
        );
        if let Some(token) = &self.config.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            headers.insert(AUTHORIZATION, value);
        }
        let id = delivery.id.parse().expect("delivery ids are ASCII");
        headers.insert("webhook-id", id);
        if let Some(key) = &self.config.signing_key {
            headers.insert("webhook-timestamp", timestamp.into());
            let signature = signing::sign(key, &delivery.id, timestamp, &delivery.body);
            headers.insert(
                "webhook-signature",
                signature.parse().expect("base64 is ASCII"),
            );
        }
        headers
    }

    /// Takes the lock of the chunk tree the outcomes are recorded in (none without a
    /// base), waiting as [`DispatchConfig::lock_wait`] says, for a caller that holds it
    /// across several steps and calls [`Dispatcher::run_locked`].
    pub async fn lock_tree(&self) -> Result<Option<TreeLock>, DispatchError> {
        let Some(base) = self.config.base.clone() else {
            return Ok(None);
        };
        let wait = self.config.lock_wait;
        // On a thread of its own, which ends once it has the lock: waiting never blocks
        // the runtime, and the thread that took it (which `TreeLock` remembers, to refuse
        // a second acquisition from the same thread) is never reused for other work.
        let (sender, taken) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("panini-tree-lock".into())
            .spawn(move || {
                // A run dropped meanwhile drops the lock with the unsent result.
                let _ = sender.send(TreeLock::acquire(&base, wait));
            })
            .map_err(|source| {
                DispatchError::Locked(chunk_model::tree_lock::TreeLockError::Io {
                    path: self.config.base.clone().unwrap_or_default(),
                    source,
                })
            })?;
        let lock = taken
            .await
            .expect("the locking thread always answers before it ends")?;
        Ok(Some(lock))
    }

    /// Sends every chunk, `concurrency` requests at a time, calling `on_outcome` as each
    /// request ends, and records the outcomes in the chunk tree when a base is set.
    ///
    /// With a base, the run holds the tree's lock ([`Dispatcher::lock_tree`]) from before
    /// it re-checks the list until every outcome is recorded, so two runs never send the
    /// same chunk nor lose each other's metadata updates: chunks that another run sent or
    /// completed since the list was made are left out ([`DispatchReport::skipped`]). When
    /// the lock cannot be had (another run holds it past [`DispatchConfig::lock_wait`]),
    /// nothing is sent and every request fails with that reason; use
    /// [`Dispatcher::lock_tree`] and [`Dispatcher::run_locked`] for the typed error.
    pub async fn run(
        &self,
        chunks: Vec<ChunkInfo>,
        mut on_outcome: impl FnMut(&DeliveryOutcome),
    ) -> DispatchReport {
        // Before waiting for the lock: what a run holding it sends meanwhile is newer.
        let started = chrono::Utc::now();
        match self.lock_tree().await {
            Ok(lock) => {
                self.run_checked(lock.as_ref(), started, chunks, on_outcome)
                    .await
            }
            Err(e) => {
                let error = format!("not sent: {e}");
                let mut report = DispatchReport {
                    total_chunks: chunks.len(),
                    ..DispatchReport::default()
                };
                for delivery in self.plan(chunks) {
                    let outcome = DeliveryOutcome {
                        delivery_id: delivery.id.clone(),
                        chunk_paths: delivery.chunk_paths(),
                        result: Err(Failure {
                            error: error.clone(),
                            permanent: false,
                            tries: 0,
                        }),
                        metadata_errors: Vec::new(),
                    };
                    on_outcome(&outcome);
                    report.outcomes.push(outcome);
                }
                report
            }
        }
    }

    /// [`Dispatcher::run`] for a caller that holds the lock of the configured base
    /// already (a pipeline holding it for detect, dispatch and sync). `lock` must be that
    /// tree's lock when a base is set ([`DispatchError::NotLocked`],
    /// [`DispatchError::Locked`] otherwise); it is not needed without one.
    pub async fn run_locked(
        &self,
        lock: Option<&TreeLock>,
        chunks: Vec<ChunkInfo>,
        on_outcome: impl FnMut(&DeliveryOutcome),
    ) -> Result<DispatchReport, DispatchError> {
        if let Some(base) = &self.config.base {
            let lock = lock.ok_or_else(|| DispatchError::NotLocked { base: base.clone() })?;
            lock.check_covers(base)?;
        }
        Ok(self
            .run_checked(lock, chrono::Utc::now(), chunks, on_outcome)
            .await)
    }

    /// The run proper; the caller holds the tree's lock when a base is set. Chunks sent
    /// by other runs from `started` on (or from [`DispatchConfig::listed_at`]) are left out.
    async fn run_checked(
        &self,
        _lock: Option<&TreeLock>,
        started: chrono::DateTime<chrono::Utc>,
        chunks: Vec<ChunkInfo>,
        mut on_outcome: impl FnMut(&DeliveryOutcome),
    ) -> DispatchReport {
        let (chunks, skipped) = match self.config.base.clone() {
            Some(base) => {
                let listed_at = self.config.listed_at.unwrap_or(started);
                tokio::task::spawn_blocking(move || metadata::recheck(&base, chunks, listed_at))
                    .await
                    .expect("re-checking the chunk list does not panic")
            }
            None => (chunks, Vec::new()),
        };
        for s in &skipped {
            tracing::info!(chunk = %s.chunk_path, reason = ?s.reason, "not sent: no longer dispatchable");
        }
        let mut report = DispatchReport {
            total_chunks: chunks.len(),
            skipped,
            ..DispatchReport::default()
        };
        // Requests are built (their bodies serialized) as they are sent, and their bodies
        // dropped once answered: a run holds one body per request in flight, not one per
        // chunk of the list (issue #17).
        let mut waiting: VecDeque<Vec<ChunkInfo>> = self.groups(chunks).into();
        let mut running = FuturesUnordered::new();
        // Finished requests whose outcome is not being written yet, and the write in
        // progress (at most one: the next one takes what finished meanwhile, up to
        // `RECORD_BATCH_CHUNKS`).
        let mut unrecorded: Vec<Finished> = Vec::new();
        let mut recording: Option<Recording> = None;
        loop {
            while running.len() < self.config.concurrency
                && let Some(group) = waiting.pop_front()
            {
                let mut delivery = self.delivery(group);
                running.push(async move {
                    let result = self.deliver(&delivery).await;
                    delivery.body = Vec::new();
                    (delivery, result, chrono::Utc::now())
                });
            }
            if recording.is_none() && !unrecorded.is_empty() {
                recording = Some(self.record(take_record_batch(&mut unrecorded)));
            }
            tokio::select! {
                Some((delivery, result, at)) = running.next(), if !running.is_empty() => {
                    let result = match result {
                        Err((failure, true)) if delivery.chunks.len() > 1 => {
                            let mut first = delivery.chunks;
                            let second = first.split_off(first.len() / 2);
                            tracing::info!(
                                "{}: batch too large for the worker ({}); splitting into {} + {}",
                                delivery.id,
                                failure.error,
                                first.len(),
                                second.len()
                            );
                            waiting.push_front(second);
                            waiting.push_front(first);
                            continue;
                        }
                        Err((failure, _)) => Err(failure),
                        Ok(accepted) => Ok(accepted),
                    };
                    unrecorded.push(Finished { delivery, result, at });
                }
                written = async { recording.as_mut().expect("guarded by the branch condition").await },
                    if recording.is_some() =>
                {
                    recording = None;
                    for (finished, metadata_errors) in written.unwrap_or_else(|e| {
                        // The writing task panicked: its outcomes are lost to the report,
                        // though a worker may hold the chunks; their metadata stays as it
                        // was, so the detector offers them again and the worker's content
                        // check makes that harmless.
                        tracing::error!("metadata update task failed: {e}");
                        Vec::new()
                    }) {
                        let Finished { delivery, result, .. } = finished;
                        if result.is_ok() {
                            report.accepted_chunks += delivery.chunks.len();
                        }
                        let outcome = DeliveryOutcome {
                            delivery_id: delivery.id.clone(),
                            chunk_paths: delivery.chunk_paths(),
                            result,
                            metadata_errors,
                        };
                        on_outcome(&outcome);
                        report.outcomes.push(outcome);
                    }
                }
                else => break,
            }
        }
        report
    }

    /// Sends one request until a worker accepts or refuses it, or the tries run out.
    /// The error's flag says the refusal was `413 Payload Too Large`.
    async fn deliver(&self, delivery: &Delivery) -> Result<Accepted, (Failure, bool)> {
        let policy = self.config.retry;
        let mut avoid = None;
        let mut last_error = String::new();
        for tries in 1..=policy.max_tries {
            let worker = self.pool.pick(avoid, Instant::now());
            let endpoint = &self.config.endpoints[worker];
            let n = delivery.chunks.len();
            self.pool.begin(worker, n);
            let outcome = self.try_once(&endpoint.url, delivery).await;
            let (health, retry_after) = match &outcome {
                Try::Accepted(_) => (Health::Ok, None),
                Try::Refused { .. } => (Health::Ok, None),
                Try::Retry {
                    retry_after: Some(wait),
                    ..
                } => (Health::Busy(*wait), Some(*wait)),
                Try::Retry { down, .. } => (Health::Failing { down: *down }, None),
            };
            self.pool.end(worker, n, health, &self.config);
            match outcome {
                Try::Accepted(listed) => {
                    let missing: Vec<&str> = delivery
                        .chunks
                        .iter()
                        .map(|c| c.chunk_path.as_str())
                        .filter(|p| !listed.iter().any(|l| l == p))
                        .collect();
                    if !listed.is_empty() && !missing.is_empty() {
                        // A worker that answers 202 but leaves chunks out is broken; treat the
                        // request as refused rather than guess which chunks it holds.
                        return Err((
                            Failure {
                                error: format!(
                                    "{} answered 202 without accepting {}",
                                    endpoint.name,
                                    missing.join(", ")
                                ),
                                permanent: true,
                                tries,
                            },
                            false,
                        ));
                    }
                    return Ok(Accepted {
                        worker: endpoint.name.clone(),
                        tries,
                    });
                }
                Try::Refused { error, too_large } => {
                    return Err((
                        Failure {
                            error: format!("{}: {error}", endpoint.name),
                            permanent: true,
                            tries,
                        },
                        too_large,
                    ));
                }
                Try::Retry { error, .. } => {
                    tracing::debug!(delivery = %delivery.id, worker = %endpoint.name, try_ = tries, "{error}");
                    last_error = format!("{}: {error}", endpoint.name);
                    avoid = Some(worker);
                }
            }
            if tries == policy.max_tries {
                break;
            }
            // Another worker can take it now; only a lone (or all-busy) pool waits.
            if self.pool.has_other_healthy(worker, Instant::now()) {
                continue;
            }
            let exponential = policy.base_delay.saturating_mul(1 << (tries - 1).min(20));
            let jittered = exponential.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
            let wait = retry_after
                .map_or(jittered, |r| r.max(jittered))
                .min(policy.max_delay);
            tokio::time::sleep(wait).await;
        }
        Err((
            Failure {
                error: last_error,
                permanent: false,
                tries: policy.max_tries,
            },
            false,
        ))
    }

    async fn try_once(&self, url: &str, delivery: &Delivery) -> Try {
        let headers = self.headers(delivery, unix_now());
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(delivery.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                };
                return Try::Retry {
                    error: format!("{kind}: {}", error_chain(&e)),
                    retry_after: None,
                    down: e.is_connect(),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) if status == StatusCode::ACCEPTED => {
                return Try::Retry {
                    error: format!("202 with an unreadable body: {e}"),
                    retry_after: None,
                    down: false,
                };
            }
            Err(_) => String::new(),
        };
        if status == StatusCode::ACCEPTED {
            let listed = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("accepted").cloned())
                .and_then(|a| serde_json::from_value::<Vec<String>>(a).ok())
                .unwrap_or_default();
            return Try::Accepted(listed);
        }
        // The worker's text ends up in logs, Actions' included: escaped, so that no line
        // break in it can start a workflow command there.
        let error = format!(
            "HTTP {status}: {}",
            detector::actions::escape_data(&text.trim().chars().take(300).collect::<String>())
        );
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            Try::Retry {
                error,
                retry_after,
                down: false,
            }
        } else {
            Try::Refused {
                error,
                too_large: status == StatusCode::PAYLOAD_TOO_LARGE,
            }
        }
    }

    /// Starts writing the outcomes of `finished` requests into their chunks' metadata,
    /// all in one batch; the task answers each request with what could not be written.
    /// Without a base nothing is written and every request is answered at once.
    fn record(&self, finished: Vec<Finished>) -> Recording {
        let base = self.config.base.clone();
        let max_attempts = self.config.max_attempts;
        let lease = self.config.lease;
        tokio::task::spawn_blocking(move || {
            let Some(base) = base else {
                return finished.into_iter().map(|f| (f, Vec::new())).collect();
            };
            let outcomes: Vec<(Vec<String>, metadata::Outcome)> = finished
                .iter()
                .map(|f| {
                    let outcome = match &f.result {
                        Ok(a) => metadata::Outcome::Accepted {
                            worker: a.worker.clone(),
                            at: f.at,
                            lease,
                        },
                        Err(e) if e.permanent => metadata::Outcome::Refused {
                            error: e.error.clone(),
                            max_attempts,
                        },
                        Err(e) => metadata::Outcome::Undelivered {
                            error: e.error.clone(),
                        },
                    };
                    (f.delivery.chunk_paths(), outcome)
                })
                .collect();
            let batch: Vec<(&[String], &metadata::Outcome)> = outcomes
                .iter()
                .map(|(paths, outcome)| (paths.as_slice(), outcome))
                .collect();
            let results = metadata::record_outcomes(&base, &batch);
            finished
                .into_iter()
                .zip(outcomes.iter().zip(results))
                .map(|(f, ((paths, _), results))| {
                    let errors = paths
                        .iter()
                        .zip(results)
                        .filter_map(|(path, r)| r.err().map(|e| format!("{path}: {e}")))
                        .collect();
                    (f, errors)
                })
                .collect()
        })
    }
}

/// A metadata write in progress: it answers each request it covers with the chunks whose
/// metadata could not be updated, and why.
type Recording = tokio::task::JoinHandle<Vec<(Finished, Vec<String>)>>;

/// The most chunks whose outcomes one metadata write takes (unless a single delivery
/// has more). Each costs its metadata document, read, changed and serialized, a few KiB
/// in all; workers on loopback accept a whole tree at once, and an unbounded batch then
/// held the metadata of every chunk of the tree (issue #17). A thousand still shares
/// one flush among many chunks.
const RECORD_BATCH_CHUNKS: usize = 1024;

/// Takes the oldest finished requests off `unrecorded`, whole, until they hold
/// [`RECORD_BATCH_CHUNKS`] chunks (always at least one request).
fn take_record_batch(unrecorded: &mut Vec<Finished>) -> Vec<Finished> {
    let mut chunks = 0;
    let take = unrecorded
        .iter()
        .position(|f| {
            chunks += f.delivery.chunks.len();
            chunks >= RECORD_BATCH_CHUNKS
        })
        .map_or(unrecorded.len(), |last| last + 1);
    let rest = unrecorded.split_off(take);
    std::mem::replace(unrecorded, rest)
}

/// A request that has ended, waiting for its outcome to be recorded.
#[derive(Debug)]
struct Finished {
    delivery: Delivery,
    result: Result<Accepted, Failure>,
    /// When it ended: `dispatched_at` of the chunks a worker accepted.
    at: chrono::DateTime<chrono::Utc>,
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs.unsigned_abs()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
