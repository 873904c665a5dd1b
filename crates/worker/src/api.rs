//! The HTTP interface: `POST /webhook`, `GET /status`, `/healthz`, `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chunk_model::layout::{DATA_FILE, METADATA_FILE};
use chunk_model::object_keys;
use chunk_model::wire::{
    RepositoryRef, WebhookAccepted, WorkerErrorBody, WorkerFailures, WorkerStatus,
};
use chunk_model::{ChunkInfo, WebhookRequest};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::Shared;
use crate::auth::{self, ReplayCache};
use crate::process::{Job, Location};
use crate::source::{self, Source, resolve_many_in_tree};

#[derive(Clone)]
pub(crate) struct App {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tx: mpsc::Sender<Job>,
    pub(crate) replays: Arc<Mutex<ReplayCache>>,
}

pub(crate) fn router(app: App) -> Router {
    // `/status`, `/failures` (absolute server paths, failure reasons) and `/metrics`
    // need a token; `/healthz` says only "ok" or "draining" and stays open for probes.
    let read = Router::new()
        .route("/status", get(status))
        .route("/failures", get(failures))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), read_auth));
    Router::new()
        .route("/webhook", post(webhook))
        .route("/healthz", get(healthz))
        .merge(read)
        .with_state(app)
}

/// Lets a read request through when it carries the worker's token or its read token
/// (or when the worker has neither: an `insecure` one).
async fn read_auth(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let config = &app.shared.config;
    let tokens = [&config.token, &config.read_token];
    let required = tokens.iter().any(|t| t.is_some());
    let matched = tokens
        .iter()
        .filter_map(|t| t.as_deref())
        .any(|t| auth::bearer_matches(t, request.headers()));
    if required && !matched {
        return unauthorized();
    }
    next.run(request).await
}

/// A JSON response of one of the protocol's typed documents (`chunk_model::wire`),
/// written here rather than through axum's `json` feature, which would add a dependency
/// for three lines.
fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serializing the response: {e}"),
        )
            .into_response(),
    }
}

/// Why `POST /webhook` refused a request, carried on the response to the one log line
/// [`webhook`] writes for it.
#[derive(Debug, Clone)]
struct Refusal(String);

/// A refusal: `{"error": message}`, and the message for the log.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    let mut response = json_response(
        status,
        &WorkerErrorBody {
            error: message.clone(),
        },
    );
    response.extensions_mut().insert(Refusal(message));
    response
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "Unauthorized")
}

/// `401 Unauthorized`, saying no more to the client; `reason` goes to the log only.
fn unauthorized_because(reason: impl Into<String>) -> Response {
    let mut response = unauthorized();
    response.extensions_mut().insert(Refusal(reason.into()));
    response
}

fn busy(app: &App, message: &str) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    let secs = app.shared.config.retry_after.as_secs().max(1);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

fn accepted(paths: &[String], replayed: bool) -> Response {
    json_response(
        StatusCode::ACCEPTED,
        &WebhookAccepted {
            status: "accepted".into(),
            accepted: paths.to_vec(),
            replayed,
        },
    )
}

/// `POST /webhook`: counts every answer, and logs every refusal with its reason (one
/// line per refused request; the chunks that fail later are logged where they fail).
async fn webhook(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let response = handle_webhook(&app, &headers, body).await;
    let status = response.status().as_u16();
    app.shared.metrics.response(status);
    if let Some(Refusal(reason)) = response.extensions().get::<Refusal>() {
        tracing::warn!(status, %reason, "refused a webhook");
    }
    response
}

async fn handle_webhook(app: &App, headers: &HeaderMap, body: Body) -> Response {
    let config = &app.shared.config;
    if app.shared.draining.load(Ordering::SeqCst) {
        return busy(app, "worker is shutting down");
    }
    if let Some(token) = &config.token
        && !auth::bearer_matches(token, headers)
    {
        return unauthorized_because("no bearer token, or not this worker's");
    }
    let limit = config.body_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the {limit}-byte limit"),
        );
    }
    // A client that sends its body slowly or not at all would hold this connection
    // (and one of the connection slots) for as long as it likes.
    let bytes =
        match tokio::time::timeout(config.body_read_timeout, axum::body::to_bytes(body, limit))
            .await
        {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over the {limit}-byte limit"),
                );
            }
            Err(_) => {
                let mut response = error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body not received within {} s",
                        config.body_read_timeout.as_secs_f64()
                    ),
                );
                // The rest of the body may still come: this connection is not reusable.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return response;
            }
        };

    let delivery_id = match &config.signing_key {
        Some(key) => match auth::verify_signature(key, headers, &bytes, unix_now()) {
            Ok(id) => Some(id),
            Err(reason) => return unauthorized_because(format!("signature: {reason}")),
        },
        None => headers
            .get(auth::WEBHOOK_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    if let Some(id) = &delivery_id
        && let Some(paths) = app
            .replays
            .lock()
            .expect("replay lock")
            .get(id, Instant::now())
    {
        app.shared.metrics.add_replay();
        return accepted(paths, true);
    }

    let request: WebhookRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            );
        }
    };
    // `workflow` is accepted for the record; `repository` steers nothing but which
    // commit a repository-backed worker reads. Callbacks go to the repository this
    // worker was configured for, never to one a request names.
    let (chunks, repository) = match request {
        WebhookRequest::CompressChunk {
            chunk_info,
            repository,
            ..
        } => (vec![chunk_info], repository),
        WebhookRequest::CompressBatch {
            chunks, repository, ..
        } => (chunks, repository),
    };
    if chunks.is_empty() {
        return error(StatusCode::BAD_REQUEST, "compress_batch has no chunks");
    }
    // Sizes are summed and compared later: one absurd size must not get that far.
    if let Some((i, chunk)) = chunks
        .iter()
        .enumerate()
        .find(|(_, c)| c.size > config.max_chunk_size)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "chunks[{i}]: size {} is over this worker's maximum chunk size of {} bytes",
                chunk.size, config.max_chunk_size
            ),
        );
    }
    // A staged chunk's bytes come from this worker's bucket: the key must be the one its
    // hash names, or a request could have the worker store one chunk's bytes as another's.
    if let Some((i, chunk)) = chunks.iter().enumerate().find(|(_, c)| {
        c.staged_object
            .as_deref()
            .is_some_and(|key| c.hash.is_none() || object_keys::parse_staged_object(key) != c.hash)
    }) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "chunks[{i}]: staged_object {:?} is not staging/<hash> of the chunk's hash",
                chunk.staged_object.as_deref().unwrap_or_default()
            ),
        );
    }
    if chunks.len() > config.max_queue {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch of {} chunks exceeds the queue's capacity of {}",
                chunks.len(),
                config.max_queue
            ),
        );
    }

    let resolved = match &app.shared.source {
        Source::Tree(root) => {
            // Canonicalizing touches the file system; keep it off the async threads.
            let root = root.clone();
            let resolved = tokio::task::spawn_blocking(move || {
                // A staged chunk has no data.bin; its directory must still be in the
                // tree, for the file's manifest. Each kind is resolved in one batch.
                let staged = |chunk: &ChunkInfo| chunk.staged_object.is_some();
                let of_kind = |is_staged: bool, file: &str| {
                    let dirs = chunks
                        .iter()
                        .filter(|&c| staged(c) == is_staged)
                        .map(|c| c.chunk_path.as_str());
                    resolve_many_in_tree(&root, "chunk_path", dirs, file).into_iter()
                };
                let (mut data, mut metadata) =
                    (of_kind(false, DATA_FILE), of_kind(true, METADATA_FILE));
                chunks
                    .into_iter()
                    .enumerate()
                    .map(|(i, chunk)| {
                        let resolved = if staged(&chunk) {
                            metadata.next()
                        } else {
                            data.next()
                        };
                        match resolved {
                            Some(Ok(path)) => Ok((chunk, Location::Tree(path))),
                            Some(Err(reason)) => Err(format!("chunks[{i}]: {reason}")),
                            None => Err(format!("chunks[{i}]: the path check gave no answer")),
                        }
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .await;
            match resolved {
                Ok(resolved) => resolved,
                Err(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("path check failed: {e}"),
                    );
                }
            }
        }
        // Only the grammar is checked here: whether the commit has the chunk is known
        // once the commit is fetched, which may be after this request is answered.
        Source::Repo(_) => repo_locations(repository.as_ref(), chunks),
    };
    let resolved = match resolved {
        Ok(resolved) => resolved,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let paths: Vec<String> = resolved.iter().map(|(c, _)| c.chunk_path.clone()).collect();

    // Checking for a replay, reserving queue room and remembering the id happen under
    // one lock, so two copies of a delivery arriving together queue its chunks once.
    let mut replays = app.replays.lock().expect("replay lock");
    if let Some(id) = &delivery_id
        && let Some(paths) = replays.get(id, Instant::now())
    {
        app.shared.metrics.add_replay();
        return accepted(paths, true);
    }
    // All of a batch or none of it: a partial acceptance would leave the dispatcher
    // unsure which chunks to resend.
    let bytes = resolved
        .iter()
        .fold(0u64, |sum, (chunk, _)| sum.saturating_add(chunk.size));
    // Every job is counted among its file's chunks in flight before the first is queued,
    // so a file's recipe is not checked while the rest of the request is still coming.
    let now = Instant::now();
    let files = &app.shared.files_in_flight;
    let jobs: Vec<Job> = resolved
        .into_iter()
        .map(|(chunk, location)| Job::accept(chunk, location, now, files))
        .collect();
    match app.tx.try_reserve_many(jobs.len()) {
        Ok(permits) => {
            for (permit, job) in permits.zip(jobs) {
                permit.send(job);
            }
        }
        Err(TrySendError::Full(())) => {
            return busy(app, "queue is full");
        }
        Err(TrySendError::Closed(())) => return busy(app, "worker is shutting down"),
    }
    let delivery = delivery_id.as_deref().unwrap_or("-").to_owned();
    if let Some(id) = delivery_id {
        replays.insert(id, paths.clone(), Instant::now());
    }
    drop(replays);
    tracing::info!(chunks = paths.len(), bytes, %delivery, "accepted a webhook");
    app.shared.metrics.add_accepted(paths.len() as u64);
    app.shared
        .metrics
        .set_queue_length(app.tx.max_capacity() - app.tx.capacity());
    accepted(&paths, false)
}

/// Where each chunk of a request to a repository-backed worker is: the request's
/// commit, and the chunk's directory in it. Refuses a request without a commit id and
/// any `chunk_path` that is not a plain relative path.
fn repo_locations(
    repository: Option<&RepositoryRef>,
    chunks: Vec<ChunkInfo>,
) -> Result<Vec<(ChunkInfo, Location)>, String> {
    let Some(repository) = repository else {
        return Err(
            "this worker reads chunks from a git repository: the request must name \
             the commit in repository.commit_sha"
                .into(),
        );
    };
    let commit: Arc<str> = source::commit_id(&repository.commit_sha)?.into();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let dir = source::relative_path("chunk_path", &chunk.chunk_path)
                .map_err(|reason| format!("chunks[{i}]: {reason}"))?;
            let location = Location::Repo {
                commit: commit.clone(),
                dir,
            };
            Ok((chunk, location))
        })
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn status(State(app): State<App>) -> Response {
    let shared = &app.shared;
    let m = &shared.metrics;
    let engine = shared.compressor.engine();
    json_response(
        StatusCode::OK,
        &WorkerStatus {
            status: if shared.draining.load(Ordering::SeqCst) {
                "draining"
            } else {
                "ok"
            }
            .into(),
            gpu: engine == gpu_compress::Engine::OpenCl,
            engine: engine.to_string(),
            device: Some(shared.compressor.device().to_string()),
            worker_id: shared.config.worker_id.clone(),
            queue_length: (app.tx.max_capacity() - app.tx.capacity()) as u64,
            max_queue: app.tx.max_capacity() as u64,
            in_flight: m.in_flight(),
            accepted: m.accepted(),
            completed: m.completed(),
            deduplicated: m.deduplicated(),
            failed: m.failed(),
            bytes_in: m.input_bytes(),
            bytes_out: m.output_bytes(),
            recipes_ready: Some(m.recipes_published() + m.recipes_found()),
        },
    )
}

/// `{"total": N, "failures": [...]}`: how many chunks failed since the start, and the
/// latest of them (at most [`crate::RECENT_FAILURES`], oldest first), each as the
/// `chunk_compressed` payload a callback would carry.
async fn failures(State(app): State<App>) -> Response {
    let body = {
        let failures = app.shared.recent_failures.lock().expect("failures lock");
        WorkerFailures {
            total: failures.total,
            failures: failures.latest.iter().cloned().collect(),
        }
    };
    json_response(StatusCode::OK, &body)
}

async fn healthz(State(app): State<App>) -> Response {
    if app.shared.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    app.shared
        .metrics
        .set_queue_length(app.tx.max_capacity() - app.tx.capacity());
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.shared.metrics.render(),
    )
        .into_response()
}
