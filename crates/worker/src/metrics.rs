//! The worker's counters, and their Prometheus text exposition (`GET /metrics`).
//!
//! Written by hand: a dozen atomics and one histogram do not justify a metrics crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the compression time histogram's buckets.
pub const COMPRESS_SECONDS_BUCKETS: [f64; 10] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Live counters of one worker. Cheap to update from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    responses: Mutex<BTreeMap<u16, u64>>,
    accepted: AtomicU64,
    completed: AtomicU64,
    deduplicated: AtomicU64,
    failed: AtomicU64,
    replays: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    callback_failures: AtomicU64,
    queue_length: AtomicU64,
    in_flight: AtomicU64,
    waiting_for_commit: AtomicU64,
    batches: AtomicU64,
    git_fetches: AtomicU64,
    recipes_published: AtomicU64,
    recipe_failures: AtomicU64,
    compress_buckets: [AtomicU64; COMPRESS_SECONDS_BUCKETS.len()],
    compress_count: AtomicU64,
    compress_nanos: AtomicU64,
}

macro_rules! getter {
    ($($name:ident: $doc:literal),* $(,)?) => {$(
        #[doc = $doc]
        pub fn $name(&self) -> u64 {
            self.$name.load(Relaxed)
        }
    )*};
}

impl Metrics {
    getter! {
        accepted: "Chunks accepted by `POST /webhook`.",
        completed: "Chunks reported completed.",
        deduplicated: "Chunks reported completed because they were already stored.",
        failed: "Chunks reported failed.",
        replays: "Replayed deliveries acknowledged without rework.",
        bytes_in: "Original bytes compressed.",
        bytes_out: "Compressed bytes stored.",
        callback_failures: "GitHub callbacks that could not be delivered.",
        queue_length: "Accepted chunks waiting to be started.",
        in_flight: "Chunks being read, compressed or stored.",
        waiting_for_commit: "Accepted chunks waiting for their commit to be fetched.",
        batches: "Compression batches run.",
        git_fetches: "`git fetch` attempts for dispatched commits missing from the cache.",
        recipes_published: "File recipes this worker wrote.",
        recipe_failures: "Attempts to publish a file's recipe that failed (the chunks stay completed).",
    }

    pub(crate) fn response(&self, status: u16) {
        *self
            .responses
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
    }
    pub(crate) fn add_accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Relaxed);
    }
    pub(crate) fn add_completed(&self, deduplicated: bool) {
        self.completed.fetch_add(1, Relaxed);
        if deduplicated {
            self.deduplicated.fetch_add(1, Relaxed);
        }
    }
    pub(crate) fn add_failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_replay(&self) {
        self.replays.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_bytes(&self, input: u64, output: u64) {
        self.bytes_in.fetch_add(input, Relaxed);
        self.bytes_out.fetch_add(output, Relaxed);
    }
    pub(crate) fn add_callback_failure(&self) {
        self.callback_failures.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_waiting_for_commit(&self) {
        self.waiting_for_commit.fetch_add(1, Relaxed);
    }
    pub(crate) fn sub_waiting_for_commit(&self) {
        self.waiting_for_commit.fetch_sub(1, Relaxed);
    }
    pub(crate) fn add_git_fetch(&self) {
        self.git_fetches.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_recipe_published(&self) {
        self.recipes_published.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_recipe_failure(&self) {
        self.recipe_failures.fetch_add(1, Relaxed);
    }
    pub(crate) fn set_queue_length(&self, n: usize) {
        self.queue_length.store(n as u64, Relaxed);
    }
    pub(crate) fn add_in_flight(&self, n: usize) {
        self.in_flight.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn sub_in_flight(&self, n: usize) {
        self.in_flight.fetch_sub(n as u64, Relaxed);
    }
    pub(crate) fn observe_compress(&self, elapsed: Duration) {
        self.batches.fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in self.compress_buckets.iter().zip(COMPRESS_SECONDS_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.compress_count.fetch_add(1, Relaxed);
        self.compress_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "panini_worker_chunks_accepted_total",
            "counter",
            "Chunks accepted by POST /webhook.",
            self.accepted(),
        );
        metric(
            "panini_worker_chunks_completed_total",
            "counter",
            "Chunks reported completed.",
            self.completed(),
        );
        metric(
            "panini_worker_chunks_deduplicated_total",
            "counter",
            "Chunks reported completed because they were already stored.",
            self.deduplicated(),
        );
        metric(
            "panini_worker_chunks_failed_total",
            "counter",
            "Chunks reported failed.",
            self.failed(),
        );
        metric(
            "panini_worker_replays_total",
            "counter",
            "Replayed deliveries acknowledged without rework.",
            self.replays(),
        );
        metric(
            "panini_worker_bytes_in_total",
            "counter",
            "Original bytes compressed.",
            self.bytes_in(),
        );
        metric(
            "panini_worker_bytes_out_total",
            "counter",
            "Compressed bytes stored.",
            self.bytes_out(),
        );
        metric(
            "panini_worker_callback_failures_total",
            "counter",
            "GitHub callbacks that could not be delivered.",
            self.callback_failures(),
        );
        metric(
            "panini_worker_git_fetches_total",
            "counter",
            "git fetch attempts for dispatched commits missing from the cache.",
            self.git_fetches(),
        );
        metric(
            "panini_worker_recipes_published_total",
            "counter",
            "File recipes this worker wrote.",
            self.recipes_published(),
        );
        metric(
            "panini_worker_recipe_failures_total",
            "counter",
            "Attempts to publish a file's recipe that failed (the chunks stay completed).",
            self.recipe_failures(),
        );
        metric(
            "panini_worker_queue_length",
            "gauge",
            "Accepted chunks waiting to be started.",
            self.queue_length(),
        );
        metric(
            "panini_worker_in_flight",
            "gauge",
            "Chunks being read, compressed or stored.",
            self.in_flight(),
        );
        metric(
            "panini_worker_waiting_for_commit",
            "gauge",
            "Accepted chunks waiting for their commit to be fetched.",
            self.waiting_for_commit(),
        );

        let _ = writeln!(
            out,
            "# HELP panini_worker_http_responses_total Responses to POST /webhook by status code.\n\
             # TYPE panini_worker_http_responses_total counter"
        );
        for (code, n) in self.responses.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "panini_worker_http_responses_total{{code=\"{code}\"}} {n}"
            );
        }

        let name = "panini_worker_compress_batch_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Wall time of one compression batch.\n# TYPE {name} histogram"
        );
        for (bucket, bound) in self.compress_buckets.iter().zip(COMPRESS_SECONDS_BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.compress_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.compress_nanos.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_compress(Duration::from_millis(3));
        m.observe_compress(Duration::from_secs(2));
        m.response(202);
        let text = m.render();
        assert!(
            text.contains("panini_worker_compress_batch_seconds_bucket{le=\"0.001\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("panini_worker_compress_batch_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("panini_worker_compress_batch_seconds_bucket{le=\"5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("panini_worker_compress_batch_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("panini_worker_compress_batch_seconds_count 2\n"),
            "{text}"
        );
        assert!(
            text.contains("panini_worker_http_responses_total{code=\"202\"} 1\n"),
            "{text}"
        );
    }
}
