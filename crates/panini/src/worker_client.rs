//! A worker service seen over HTTP: one served from this process on a free loopback
//! port, or one running elsewhere. The pipeline dispatches to it and asks it for
//! progress (`GET /status`) and failures (`GET /failures`); both answers are the typed
//! wire documents of `chunk_model::wire`.

use std::path::Path;
use std::sync::Arc;

use chunk_model::ChunkCompressed;
use chunk_model::wire::{WorkerFailures, WorkerStatus};
use uploader::ObjectStore;

use crate::Error;

/// A worker service the pipeline dispatches to.
#[derive(Debug)]
pub struct WorkerClient {
    /// `http://host:port`, without the `/webhook` path.
    base_url: String,
    /// Bearer token for the read endpoints, when the worker requires one.
    token: Option<String>,
    /// Failures already taken from `GET /failures`.
    failures_seen: u64,
    /// Set for a worker this process serves.
    in_process: Option<InProcessServer>,
}

#[derive(Debug)]
struct InProcessServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<worker::Summary, worker::WorkerError>>,
}

/// Chunks an in-process worker of a local run accepts before it answers 503: about
/// 30 MiB of descriptions at most.
const LOCAL_MAX_QUEUE: usize = 1 << 16;

impl WorkerClient {
    /// Serves a worker from this process on a free port of 127.0.0.1. `config` says what
    /// it reads and stores; it runs until [`WorkerClient::stop`].
    pub async fn start_in_process(config: worker::WorkerConfig) -> Result<Self, Error> {
        let token = config.token.clone();
        let worker = worker::Worker::new(config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::InvalidConfig(format!("binding a loopback port: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::InvalidConfig(format!("reading the bound port: {e}")))?
            .port();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(worker.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            base_url: format!("http://127.0.0.1:{port}"),
            token,
            failures_seen: 0,
            in_process: Some(InProcessServer { stop, task }),
        })
    }

    /// The usual in-process worker of a local run: reads the tree at `source_root`,
    /// stores into `store`, requires `token` and requests signed with `signing_key`, and
    /// holds at most `memory` bytes of chunks and frames at once
    /// ([`worker::WorkerConfig::batch_bytes_for_memory`]).
    pub async fn start_local(
        index: usize,
        source_root: &Path,
        store: Arc<dyn ObjectStore>,
        token: &str,
        signing_key: &[u8],
        engine: gpu_compress::EngineChoice,
        memory: u64,
    ) -> Result<Self, Error> {
        let mut config = worker::WorkerConfig::new(source_root, store);
        config.token = Some(token.to_owned());
        config.signing_key = Some(signing_key.to_vec());
        config.engine = engine;
        config.max_batch_bytes = worker::WorkerConfig::batch_bytes_for_memory(memory);
        // The queue holds chunk descriptions only (bytes are read when a batch starts).
        // The pipeline bounds what it sends (`PipelineConfig::dispatch_window`); past the
        // default 1,024 a larger window would be answered 503, and the dispatcher would
        // wait out Retry-After (a second) while the worker drains.
        config.max_queue = LOCAL_MAX_QUEUE;
        config.worker_id = format!("pipeline-worker-{index}");
        Self::start_in_process(config).await
    }

    /// A worker service at `webhook_url` (`http(s)://host:port/webhook`).
    pub fn remote(webhook_url: &str, token: Option<String>) -> Result<Self, Error> {
        let base_url = webhook_url
            .strip_suffix("/webhook")
            .filter(|base| base.starts_with("http://") || base.starts_with("https://"))
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "worker URL {webhook_url:?}: expected http(s)://HOST:PORT/webhook"
                ))
            })?;
        Ok(Self {
            base_url: base_url.to_owned(),
            token,
            failures_seen: 0,
            in_process: None,
        })
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Where the dispatcher sends this worker's webhooks.
    pub fn endpoint(&self) -> dispatcher::Endpoint {
        dispatcher::Endpoint {
            name: self.base_url.clone(),
            url: format!("{}/webhook", self.base_url),
        }
    }

    /// `GET /status`.
    pub async fn status(&self, http: &reqwest::Client) -> Result<WorkerStatus, Error> {
        self.get_json(http, "/status").await
    }

    /// `GET path` on this worker, as JSON of type `T`.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        http: &reqwest::Client,
        path: &str,
    ) -> Result<T, Error> {
        let url = format!("{}{path}", self.base_url);
        let failed = |reason: String| Error::WorkerHttp {
            url: url.clone(),
            reason,
        };
        let mut request = http.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            return Err(failed(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(|e| failed(format!("unexpected body: {e}")))
    }

    /// Takes every failure the worker has reported so far as seen, so that
    /// [`WorkerClient::new_failures`] returns only those that come after: a worker used
    /// before (`--worker URL`) still lists the failures of earlier runs, whose chunk
    /// paths may name chunks of this run's tree.
    pub async fn skip_earlier_failures(&mut self, http: &reqwest::Client) -> Result<(), Error> {
        let WorkerFailures { total, .. } = self.get_json(http, "/failures").await?;
        self.failures_seen = total;
        Ok(())
    }

    /// The failures reported since the last call.
    pub async fn new_failures(
        &mut self,
        http: &reqwest::Client,
    ) -> Result<Vec<ChunkCompressed>, Error> {
        let WorkerFailures {
            total,
            failures: mut recent,
        } = self.get_json(http, "/failures").await?;
        // A restarted worker counts from zero again: everything it lists is new.
        let new = if total >= self.failures_seen {
            total - self.failures_seen
        } else {
            total
        };
        self.failures_seen = total;
        let new = usize::try_from(new).unwrap_or(usize::MAX).min(recent.len());
        Ok(recent.split_off(recent.len() - new))
    }

    /// Stops a worker this process serves, after it has finished what it holds; leaves a
    /// remote one be.
    pub async fn stop(self) -> Result<(), Error> {
        if let Some(server) = self.in_process {
            let _ = server.stop.send(());
            server
                .task
                .await
                .map_err(|e| Error::Task(format!("worker task: {e}")))??;
        }
        Ok(())
    }
}
