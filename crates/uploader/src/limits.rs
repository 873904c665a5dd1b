//! [`Limited`]: a bound on requests in flight and an optional bandwidth cap, in front of
//! any store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::Semaphore;

use crate::store::{ObjectInfo, ObjectMeta, ObjectStore, PutItem, PutOutcome, put_each};
use crate::{Object, StoreError};

/// Limits on the traffic to a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Operations in flight at once.
    pub max_in_flight: usize,
    /// Bytes per second sent and received together; `None` for no cap.
    pub bytes_per_second: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            bytes_per_second: None,
        }
    }
}

/// A store whose operations wait for a slot (at most [`Limits::max_in_flight`] run at
/// once) and for bandwidth (a token bucket refilled at [`Limits::bytes_per_second`]).
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    bucket: Option<Arc<TokenBucket>>,
}

impl<S: ObjectStore> Limited<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limits: Limits) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            max_in_flight: limits.max_in_flight.max(1),
            bucket: limits
                .bytes_per_second
                .filter(|&rate| rate > 0)
                .map(|rate| Arc::new(TokenBucket::new(rate))),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn throttle(&self, bytes: u64) {
        if let Some(bucket) = &self.bucket {
            bucket.take(bytes).await;
        }
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for Limited<S> {
    fn url(&self) -> String {
        self.inner.url()
    }

    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        self.throttle(bytes.len() as u64).await;
        self.inner.put(key, bytes, meta).await
    }

    /// A store that batches gets the batch whole, as one operation in flight that pays
    /// for all its bytes; any other gets one `put` per item, each with its own slot.
    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<PutOutcome, StoreError>> {
        if !self.inner.batches() {
            return put_each(self, items, self.max_in_flight).await;
        }
        let _slot = match self.slots.acquire().await {
            Ok(slot) => slot,
            Err(e) => return each_failed(items.len(), &e),
        };
        self.throttle(items.iter().map(|(_, bytes, _)| bytes.len() as u64).sum())
            .await;
        self.inner.put_many(items).await
    }

    fn batches(&self) -> bool {
        self.inner.batches()
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        let object = self.inner.get(key).await?;
        // The size is known only afterwards, so a read pays for itself by delaying the
        // next operation: the average rate still holds.
        self.throttle(object.bytes.len() as u64).await;
        Ok(object)
    }

    /// As `stat_many`, and the batch then pays for all the bytes it read.
    async fn get_many(&self, keys: &[String]) -> Vec<Result<Object, StoreError>> {
        if !self.inner.batches() {
            let gets: Vec<_> = keys.iter().map(|key| self.get(key)).collect();
            return futures::stream::iter(gets)
                .buffered(self.max_in_flight)
                .collect()
                .await;
        }
        let objects = match self.slots.acquire().await {
            Ok(_slot) => self.inner.get_many(keys).await,
            Err(e) => return each_failed(keys.len(), &e),
        };
        let bytes = objects
            .iter()
            .flatten()
            .map(|object| object.bytes.len() as u64)
            .sum();
        self.throttle(bytes).await;
        objects
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        self.inner.stat(key).await
    }

    /// As `put_many`: whole, in one slot, to a store that batches; else one `stat` per
    /// key, each with its own slot.
    async fn stat_many(&self, keys: &[String]) -> Vec<Result<Option<ObjectInfo>, StoreError>> {
        if !self.inner.batches() {
            let stats: Vec<_> = keys.iter().map(|key| self.stat(key)).collect();
            return futures::stream::iter(stats)
                .buffered(self.max_in_flight)
                .collect()
                .await;
        }
        match self.slots.acquire().await {
            Ok(_slot) => self.inner.stat_many(keys).await,
            Err(e) => each_failed(keys.len(), &e),
        }
    }

    /// As `stat_many`, which it is for a store that does not batch.
    async fn exists_many(&self, keys: &[String]) -> Vec<Result<bool, StoreError>> {
        if !self.inner.batches() {
            return crate::store::found(self.stat_many(keys).await);
        }
        match self.slots.acquire().await {
            Ok(_slot) => self.inner.exists_many(keys).await,
            Err(e) => each_failed(keys.len(), &e),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
}

/// The answer to a batch of `count` items that could not get a slot (the semaphore was
/// closed): each failed with the reason.
fn each_failed<T>(count: usize, e: &tokio::sync::AcquireError) -> Vec<Result<T, StoreError>> {
    (0..count)
        .map(|_| Err(StoreError::Task(e.to_string())))
        .collect()
}

/// A token bucket that may go into debt: taking more than is there succeeds at once and
/// makes the taker (and everyone after it) wait until the debt is paid back. Bursts are
/// limited to one second's worth.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second as f64;
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// How long the taker of `bytes` must wait.
    pub(crate) fn charge(&self, bytes: u64, now: Instant) -> Duration {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = &mut *state;
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.rate) - bytes as f64;
        *last = now;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate)
        }
    }

    pub(crate) async fn take(&self, bytes: u64) {
        let wait = self.charge(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_one_second_of_burst_then_paces() {
        let bucket = TokenBucket::new(1000);
        let t0 = Instant::now();
        assert_eq!(bucket.charge(1000, t0), Duration::ZERO);
        // 500 bytes more with nothing left: half a second of debt.
        assert_eq!(bucket.charge(500, t0), Duration::from_millis(500));
        // A second later, 1000 tokens came back; 500 paid the debt.
        assert_eq!(
            bucket.charge(500, t0 + Duration::from_secs(1)),
            Duration::ZERO
        );
        // Idle time never banks more than one second's worth.
        assert_eq!(
            bucket.charge(1000, t0 + Duration::from_secs(60)),
            Duration::ZERO
        );
        assert_eq!(
            bucket.charge(1, t0 + Duration::from_secs(60)),
            Duration::from_millis(1)
        );
    }
}
