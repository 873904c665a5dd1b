//! The worker's metrics, and their Prometheus text exposition (`GET /metrics`) through
//! the `prometheus-client` crate.
//!
//! Names follow Prometheus' conventions: a `panini_worker_` prefix, the unit in the name
//! (`_bytes`, `_seconds`), `_total` on every counter, and a `panini_worker_build_info`
//! gauge whose labels say which build runs. The crate encodes them (escaping, suffixes,
//! cumulative histogram buckets); this module says what is counted.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Every metric's name starts with this (`panini_worker_chunks_accepted_total`, …).
pub const PREFIX: &str = "panini_worker";

/// The `Content-Type` of `GET /metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the compression time histogram's buckets.
pub const COMPRESS_SECONDS_BUCKETS: [f64; 10] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The label set of `panini_worker_http_responses_total`: the status code.
type CodeLabel = [(&'static str, u16); 1];

/// Live metrics of one worker. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    responses: Family<CodeLabel, Counter>,
    accepted: Counter,
    completed: Counter,
    deduplicated: Counter,
    failed: Counter,
    replays: Counter,
    input_bytes: Counter,
    output_bytes: Counter,
    callback_failures: Counter,
    git_fetches: Counter,
    recipes_published: Counter,
    recipes_found: Counter,
    recipe_failures: Counter,
    queued: Gauge,
    in_flight: Gauge,
    waiting_for_commit: Gauge,
    compress_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered for [`Metrics::render`].
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let r = &mut registry;
        let accepted = counter(r, "chunks_accepted", "Chunks accepted by POST /webhook");
        let completed = counter(
            r,
            "chunks_completed",
            "Chunks reported completed (compressed now or found stored)",
        );
        let deduplicated = counter(
            r,
            "chunks_deduplicated",
            "Chunks reported completed because they were already stored",
        );
        let failed = counter(r, "chunks_failed", "Chunks reported failed");
        let replays = counter(
            r,
            "replays",
            "Replayed deliveries acknowledged without rework",
        );
        let input_bytes = Counter::default();
        r.register_with_unit(
            "input",
            "Original bytes of the chunks compressed and stored",
            Unit::Bytes,
            input_bytes.clone(),
        );
        let output_bytes = Counter::default();
        r.register_with_unit(
            "output",
            "Compressed bytes stored",
            Unit::Bytes,
            output_bytes.clone(),
        );
        let callback_failures = counter(
            r,
            "callback_failures",
            "GitHub callbacks that could not be delivered",
        );
        let git_fetches = counter(
            r,
            "git_fetches",
            "git fetch attempts for dispatched commits missing from the cache",
        );
        let recipes_published = counter(r, "recipes_published", "File recipes this worker wrote");
        let recipes_found = counter(
            r,
            "recipes_found",
            "File recipes this worker found written already when it went to write them",
        );
        let recipe_failures = counter(
            r,
            "recipe_failures",
            "Attempts to publish a file's recipe that failed (the chunks stay completed)",
        );
        let queued = gauge(r, "chunks_queued", "Accepted chunks waiting to be started");
        let in_flight = gauge(
            r,
            "chunks_in_flight",
            "Chunks being read, compressed or stored",
        );
        let waiting_for_commit = gauge(
            r,
            "chunks_waiting_for_commit",
            "Accepted chunks waiting for their commit to be fetched",
        );
        let responses = Family::<CodeLabel, Counter>::default();
        r.register(
            "http_responses",
            "Responses to POST /webhook by status code",
            responses.clone(),
        );
        let compress_seconds = Histogram::new(COMPRESS_SECONDS_BUCKETS);
        r.register_with_unit(
            "compress_batch",
            "Wall time of one compression batch",
            Unit::Seconds,
            compress_seconds.clone(),
        );
        r.register(
            "build",
            "The build of the worker that serves: its version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            responses,
            accepted,
            completed,
            deduplicated,
            failed,
            replays,
            input_bytes,
            output_bytes,
            callback_failures,
            git_fetches,
            recipes_published,
            recipes_found,
            recipe_failures,
            queued,
            in_flight,
            waiting_for_commit,
            compress_seconds,
        }
    }

    /// Chunks accepted by `POST /webhook`.
    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }
    /// Chunks reported completed.
    pub fn completed(&self) -> u64 {
        self.completed.get()
    }
    /// Chunks reported completed because they were already stored.
    pub fn deduplicated(&self) -> u64 {
        self.deduplicated.get()
    }
    /// Chunks reported failed.
    pub fn failed(&self) -> u64 {
        self.failed.get()
    }
    /// Replayed deliveries acknowledged without rework.
    pub fn replays(&self) -> u64 {
        self.replays.get()
    }
    /// Original bytes compressed and stored.
    pub fn input_bytes(&self) -> u64 {
        self.input_bytes.get()
    }
    /// Compressed bytes stored.
    pub fn output_bytes(&self) -> u64 {
        self.output_bytes.get()
    }
    /// GitHub callbacks that could not be delivered.
    pub fn callback_failures(&self) -> u64 {
        self.callback_failures.get()
    }
    /// Accepted chunks waiting to be started.
    pub fn queue_length(&self) -> u64 {
        gauge_value(&self.queued)
    }
    /// Chunks being read, compressed or stored.
    pub fn in_flight(&self) -> u64 {
        gauge_value(&self.in_flight)
    }
    /// Accepted chunks waiting for their commit to be fetched.
    pub fn waiting_for_commit(&self) -> u64 {
        gauge_value(&self.waiting_for_commit)
    }
    /// `git fetch` attempts for dispatched commits missing from the cache.
    pub fn git_fetches(&self) -> u64 {
        self.git_fetches.get()
    }
    /// File recipes this worker wrote.
    pub fn recipes_published(&self) -> u64 {
        self.recipes_published.get()
    }
    /// File recipes this worker found written already when it went to write them.
    pub fn recipes_found(&self) -> u64 {
        self.recipes_found.get()
    }
    /// Attempts to publish a file's recipe that failed (the chunks stay completed).
    pub fn recipe_failures(&self) -> u64 {
        self.recipe_failures.get()
    }

    pub(crate) fn response(&self, status: u16) {
        self.responses.get_or_create(&[("code", status)]).inc();
    }
    pub(crate) fn add_accepted(&self, n: u64) {
        self.accepted.inc_by(n);
    }
    pub(crate) fn add_completed(&self, deduplicated: bool) {
        self.completed.inc();
        if deduplicated {
            self.deduplicated.inc();
        }
    }
    pub(crate) fn add_failed(&self) {
        self.failed.inc();
    }
    pub(crate) fn add_replay(&self) {
        self.replays.inc();
    }
    pub(crate) fn add_bytes(&self, input: u64, output: u64) {
        self.input_bytes.inc_by(input);
        self.output_bytes.inc_by(output);
    }
    pub(crate) fn add_callback_failure(&self) {
        self.callback_failures.inc();
    }
    pub(crate) fn add_waiting_for_commit(&self) {
        self.waiting_for_commit.inc();
    }
    pub(crate) fn sub_waiting_for_commit(&self) {
        self.waiting_for_commit.dec();
    }
    pub(crate) fn add_git_fetch(&self) {
        self.git_fetches.inc();
    }
    pub(crate) fn add_recipe_published(&self) {
        self.recipes_published.inc();
    }
    pub(crate) fn add_recipe_found(&self) {
        self.recipes_found.inc();
    }
    pub(crate) fn add_recipe_failure(&self) {
        self.recipe_failures.inc();
    }
    pub(crate) fn set_queue_length(&self, n: usize) {
        self.queued.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub(crate) fn add_in_flight(&self, n: usize) {
        self.in_flight.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub(crate) fn sub_in_flight(&self, n: usize) {
        self.in_flight.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub(crate) fn observe_compress(&self, elapsed: Duration) {
        self.compress_seconds.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition format (version 0.0.4; [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

fn gauge_value(gauge: &Gauge) -> u64 {
    u64::try_from(gauge.get()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::default();
        m.observe_compress(Duration::from_millis(3));
        m.observe_compress(Duration::from_secs(2));
        m.response(202);
        m.add_bytes(100, 40);
        let text = m.render();
        for line in [
            "panini_worker_compress_batch_seconds_bucket{le=\"0.001\"} 0\n",
            "panini_worker_compress_batch_seconds_bucket{le=\"0.005\"} 1\n",
            "panini_worker_compress_batch_seconds_bucket{le=\"5\"} 2\n",
            "panini_worker_compress_batch_seconds_bucket{le=\"+Inf\"} 2\n",
            "panini_worker_compress_batch_seconds_count 2\n",
            "panini_worker_http_responses_total{code=\"202\"} 1\n",
            "panini_worker_input_bytes_total 100\n",
            "panini_worker_output_bytes_total 40\n",
            "# TYPE panini_worker_chunks_queued gauge\n",
            concat!(
                "panini_worker_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1\n"
            ),
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }
}
