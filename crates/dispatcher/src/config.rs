//! What a dispatch run needs to know.

use std::path::PathBuf;
use std::time::Duration;

use chunk_model::tree_lock::{self, Wait};
use chunk_model::wire::{RepositoryRef, WorkflowRef};

use crate::DispatchError;

/// Chunks per request in batch mode, as in the original design.
pub const DEFAULT_BATCH_SIZE: usize = 10;
/// How long one request may take, as in the original design.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One worker's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The worker's name: recorded as `worker_id` in the chunks it accepts.
    pub name: String,
    /// `https://…/webhook`.
    pub url: String,
}

impl Endpoint {
    /// An endpoint named after its host and port.
    pub fn from_url(url: impl Into<String>) -> Self {
        let url = url.into();
        let name = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Self { name, url }
    }
}

/// Endpoints from environment variables: `COLAB_WEBHOOK_URL` (one URL, or several
/// separated by commas) and `COLAB_WEBHOOK_URL_<NAME>` (one worker each, named `<name>`
/// in lower case). Sorted by name so that runs are reproducible.
pub fn endpoints_from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Endpoint> {
    let mut named = Vec::new();
    let mut plain = Vec::new();
    for (key, value) in vars {
        if key == "COLAB_WEBHOOK_URL" {
            plain.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(Endpoint::from_url),
            );
        } else if let Some(name) = key.strip_prefix("COLAB_WEBHOOK_URL_") {
            let url = value.trim();
            if !name.is_empty() && !url.is_empty() {
                named.push(Endpoint {
                    name: name.to_lowercase(),
                    url: url.to_owned(),
                });
            }
        }
    }
    named.sort_by(|a, b| a.name.cmp(&b.name));
    plain.extend(named);
    plain.dedup_by(|a, b| a.url == b.url);
    plain
}

/// One chunk per request, or batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `compress_chunk` requests.
    PerChunk,
    /// `compress_batch` requests of at most this many chunks.
    Batch(usize),
}

/// How one request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per request, the first included, across all workers.
    pub max_tries: u32,
    /// Backoff before the second try; doubled each time, with jitter.
    pub base_delay: Duration,
    /// Longest wait between tries, `Retry-After` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_tries: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Everything a dispatch run needs. Build with [`DispatchConfig::new`] and adjust the
/// public fields. Its `Debug` shows whether the token and signing key are set, not them.
#[derive(Clone)]
pub struct DispatchConfig {
    /// The workers.
    pub endpoints: Vec<Endpoint>,
    /// Sent as `Authorization: Bearer <token>` (`COLAB_AUTH_TOKEN`).
    pub token: Option<String>,
    /// HMAC key for Standard Webhooks signatures (`PANINI_WEBHOOK_SECRET`, see
    /// [`crate::signing::signing_key`]).
    pub signing_key: Option<Vec<u8>>,
    /// Per chunk or batches.
    pub mode: Mode,
    /// Requests in flight at once, over all workers.
    pub concurrency: usize,
    /// Limit on one request.
    pub timeout: Duration,
    /// Retries of one request.
    pub retry: RetryPolicy,
    /// Consecutive failures after which a worker is cooled off.
    pub failure_threshold: u32,
    /// How long a cooled-off worker gets no work.
    pub cool_off: Duration,
    /// The chunk tree (`pending_compression`) whose `metadata.json` files record the
    /// outcomes; `None` records nothing.
    pub base: Option<PathBuf>,
    /// How long a worker owns an accepted chunk before it may be dispatched again.
    pub lease: Duration,
    /// A chunk refused this many times is marked `failed`.
    pub max_attempts: u32,
    /// How long [`crate::Dispatcher::run`] waits for another run that holds the chunk
    /// tree's lock ([`chunk_model::tree_lock::TreeLock`]) before giving up.
    pub lock_wait: Wait,
    /// When the chunk list was made (the detector's scan, or the list file's
    /// modification time). Under the tree's lock a run leaves out the chunks another run
    /// sent since then, and completed ones; `None`: since this run started.
    pub listed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The repository, when run from Actions.
    pub repository: Option<RepositoryRef>,
    /// The workflow run, when run from Actions.
    pub workflow: Option<WorkflowRef>,
}

impl std::fmt::Debug for DispatchConfig {
    // Secrets stay out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { Some("<redacted>") } else { None };
        f.debug_struct("DispatchConfig")
            .field("endpoints", &self.endpoints)
            .field("token", &redacted(self.token.is_some()))
            .field("signing_key", &redacted(self.signing_key.is_some()))
            .field("mode", &self.mode)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("failure_threshold", &self.failure_threshold)
            .field("cool_off", &self.cool_off)
            .field("base", &self.base)
            .field("lease", &self.lease)
            .field("max_attempts", &self.max_attempts)
            .field("lock_wait", &self.lock_wait)
            .field("listed_at", &self.listed_at)
            .field("repository", &self.repository)
            .field("workflow", &self.workflow)
            .finish()
    }
}

impl DispatchConfig {
    /// Defaults for sending to `endpoints`.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints,
            token: None,
            signing_key: None,
            mode: Mode::Batch(DEFAULT_BATCH_SIZE),
            concurrency: 8,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            failure_threshold: 3,
            cool_off: Duration::from_secs(30),
            base: None,
            lease: detector::DEFAULT_LEASE,
            max_attempts: detector::DEFAULT_MAX_ATTEMPTS,
            lock_wait: Wait::Timeout(tree_lock::DEFAULT_WAIT),
            listed_at: None,
            repository: None,
            workflow: None,
        }
    }

    pub(crate) fn check(&self) -> Result<(), DispatchError> {
        let bad = |reason: &str| Err(DispatchError::InvalidConfig(reason.to_owned()));
        if self.endpoints.is_empty() {
            return bad("no worker webhook: pass --webhook URL or set COLAB_WEBHOOK_URL");
        }
        if let Some(e) = self
            .endpoints
            .iter()
            .find(|e| !(e.url.starts_with("http://") || e.url.starts_with("https://")))
        {
            return Err(DispatchError::InvalidConfig(format!(
                "webhook {:?} of worker {} is not an http(s) URL",
                e.url, e.name
            )));
        }
        if self.concurrency == 0 || self.retry.max_tries == 0 || self.failure_threshold == 0 {
            return bad("concurrency, retry.max_tries and failure_threshold must be at least 1");
        }
        if self.mode == Mode::Batch(0) {
            return bad("batch size must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_come_from_both_variable_forms() {
        let vars = [
            (
                "COLAB_WEBHOOK_URL",
                "http://a:1/webhook, http://b:2/webhook",
            ),
            ("COLAB_WEBHOOK_URL_GPU2", "http://c:3/webhook"),
            ("COLAB_WEBHOOK_URL_GPU1", "http://a:1/webhook"),
            ("COLAB_AUTH_TOKEN", "x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let endpoints = endpoints_from_env(vars);
        let names: Vec<_> = endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a:1", "b:2", "gpu1", "gpu2"]);
        assert_eq!(endpoints[3].url, "http://c:3/webhook");
    }
}
