//! The HTTP interface: `POST /webhook`, `GET /status`, `/healthz`, `/metrics`.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chunk_model::WebhookRequest;
use chunk_model::layout::DATA_FILE;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::Shared;
use crate::auth::{self, ReplayCache};
use crate::process::Job;

#[derive(Clone)]
pub(crate) struct App {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tx: mpsc::Sender<Job>,
    pub(crate) replays: Arc<Mutex<ReplayCache>>,
}

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/webhook", post(webhook))
        .route("/status", get(status))
        .route("/failures", get(failures))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// A JSON response (written here rather than through axum's `json` feature, which
/// would add a dependency for three lines).
fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "Unauthorized")
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
    let mut body = json!({ "status": "accepted", "accepted": paths });
    if replayed {
        body["replayed"] = json!(true);
    }
    json_response(StatusCode::ACCEPTED, &body)
}

async fn webhook(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let response = handle_webhook(&app, &headers, body).await;
    app.shared.metrics.response(response.status().as_u16());
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
        return unauthorized();
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
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the {limit}-byte limit"),
        );
    };

    let delivery_id = match &config.signing_key {
        Some(key) => match auth::verify_signature(key, headers, &bytes, unix_now()) {
            Ok(id) => Some(id),
            Err(reason) => {
                tracing::warn!(%reason, "refused a webhook");
                return unauthorized();
            }
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
    // `repository`/`workflow` are accepted for the record but do not steer the work:
    // callbacks go to the repository this worker was configured for, never to one a
    // request names.
    let chunks = match request {
        WebhookRequest::CompressChunk { chunk_info, .. } => vec![chunk_info],
        WebhookRequest::CompressBatch { chunks, .. } => chunks,
    };
    if chunks.is_empty() {
        return error(StatusCode::BAD_REQUEST, "compress_batch has no chunks");
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

    // Canonicalizing touches the file system; keep it off the async threads.
    let root = app.shared.root.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                resolve_data(&root, &chunk.chunk_path)
                    .map(|data| (chunk, data))
                    .map_err(|reason| format!("chunks[{i}]: {reason}"))
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .await;
    let resolved = match resolved {
        Ok(Ok(resolved)) => resolved,
        Ok(Err(message)) => return error(StatusCode::BAD_REQUEST, message),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("path check failed: {e}"),
            );
        }
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
    match app.tx.try_reserve_many(resolved.len()) {
        Ok(permits) => {
            let now = Instant::now();
            for (permit, (chunk, data_path)) in permits.zip(resolved) {
                permit.send(Job {
                    chunk,
                    data_path,
                    accepted_at: now,
                });
            }
        }
        Err(TrySendError::Full(())) => {
            return busy(app, "queue is full");
        }
        Err(TrySendError::Closed(())) => return busy(app, "worker is shutting down"),
    }
    if let Some(id) = delivery_id {
        replays.insert(id, paths.clone(), Instant::now());
    }
    drop(replays);
    app.shared.metrics.add_accepted(paths.len() as u64);
    app.shared
        .metrics
        .set_queue_length(app.tx.max_capacity() - app.tx.capacity());
    accepted(&paths, false)
}

/// Resolves a request's `chunk_path` to its `data.bin`, refusing anything that is not a
/// plain relative path or that resolves (through symbolic links too) outside `root`.
pub(crate) fn resolve_data(root: &Path, chunk_path: &str) -> Result<PathBuf, String> {
    let refuse = |why: &str| Err(format!("chunk_path {chunk_path:?} {why}"));
    if chunk_path.is_empty() {
        return refuse("is empty");
    }
    for component in Path::new(chunk_path).components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return refuse("is absolute"),
            Component::ParentDir => return refuse("contains '..'"),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    let data = root.join(chunk_path).join(DATA_FILE);
    let real = match std::fs::canonicalize(&data) {
        Ok(real) => real,
        Err(e) => return refuse(&format!("has no readable {DATA_FILE}: {e}")),
    };
    if !real.starts_with(root) {
        return refuse(&format!(
            "resolves outside the source root (to {})",
            real.display()
        ));
    }
    if !real.is_file() {
        return refuse(&format!("{DATA_FILE} is not a regular file"));
    }
    Ok(real)
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
        &json!({
            "status": if shared.draining.load(Ordering::SeqCst) { "draining" } else { "ok" },
            "gpu": engine == gpu_compress::Engine::OpenCl,
            "engine": engine.to_string(),
            "device": shared.compressor.device(),
            "worker_id": shared.config.worker_id,
            "queue_length": app.tx.max_capacity() - app.tx.capacity(),
            "max_queue": app.tx.max_capacity(),
            "in_flight": m.in_flight(),
            "accepted": m.accepted(),
            "completed": m.completed(),
            "deduplicated": m.deduplicated(),
            "failed": m.failed(),
            "bytes_in": m.bytes_in(),
            "bytes_out": m.bytes_out(),
        }),
    )
}

/// `{"total": N, "failures": [...]}`: how many chunks failed since the start, and the
/// latest of them (at most [`crate::RECENT_FAILURES`], oldest first), each as the
/// `chunk_compressed` payload a callback would carry.
async fn failures(State(app): State<App>) -> Response {
    let body = {
        let failures = app.shared.recent_failures.lock().expect("failures lock");
        json!({"total": failures.total, "failures": failures.latest})
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
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.shared.metrics.render(),
    )
        .into_response()
}
