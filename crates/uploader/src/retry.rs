//! Retries with exponential backoff and full jitter, bounded by a total deadline.
//!
//! Cloud storage fails transiently all the time (throttling, restarts behind a load
//! balancer, connections cut mid-body). Every store operation here is idempotent (writes
//! are create-only), so an operation is simply tried again until it succeeds, fails
//! permanently, or the deadline passes.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use rand::Rng as _;

use crate::StoreError;

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The largest wait before the second attempt.
    pub initial_backoff: Duration,
    /// The cap on any single wait.
    pub max_backoff: Duration,
    /// No attempt starts after this much time has passed since the first.
    pub deadline: Duration,
    /// One attempt is abandoned (and counts as a transient failure) after this long.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            deadline: Duration::from_secs(600),
            attempt_timeout: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The cap on the wait after `failures` failed attempts: it doubles each time.
    fn backoff_cap(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the deadline passes.
    /// `op` and `key` name the operation in errors and logs.
    pub async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let start = Instant::now();
        let mut failures = 0u32;
        loop {
            let result = match tokio::time::timeout(self.attempt_timeout, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Timeout {
                    op,
                    key: key.to_owned(),
                    after: self.attempt_timeout,
                }),
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) => error,
            };
            failures += 1;
            // Full jitter: a uniformly random wait up to the cap, so that many clients
            // failing together do not retry together.
            let cap = self.backoff_cap(failures);
            let wait = rand::thread_rng().gen_range(Duration::ZERO..=cap);
            let elapsed = start.elapsed();
            if elapsed + wait >= self.deadline {
                return Err(StoreError::RetriesExhausted {
                    op,
                    key: key.to_owned(),
                    attempts: failures,
                    elapsed,
                    last: Box::new(error),
                });
            }
            tracing::debug!(op, key, attempt = failures, ?wait, %error, "transient failure, retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            deadline: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(5),
        }
    }

    fn unavailable() -> StoreError {
        StoreError::Http {
            op: "get",
            url: "http://127.0.0.1/x".into(),
            status: 503,
            body: String::new(),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..quick()
        };
        assert_eq!(policy.backoff_cap(1), Duration::from_millis(100));
        assert_eq!(policy.backoff_cap(2), Duration::from_millis(200));
        assert_eq!(policy.backoff_cap(3), Duration::from_millis(350));
        assert_eq!(policy.backoff_cap(60), Duration::from_millis(350));
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let value = quick()
            .run("get", "k", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(unavailable())
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!(value, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let error = quick()
            .run("get", "k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(StoreError::NotFound {
                    store: "s".into(),
                    key: "k".into(),
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::NotFound { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// The attempts and time of a `put chunks/x` that gave up on 503s, or a panic naming
    /// what came instead.
    fn exhausted(error: StoreError) -> (u32, Duration) {
        match error {
            StoreError::RetriesExhausted {
                op,
                key,
                attempts,
                elapsed,
                last,
            } if op == "put"
                && key == "chunks/x"
                && matches!(*last, StoreError::Http { status: 503, .. }) =>
            {
                (attempts, elapsed)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The deadline in virtual time (tokio's clock, paused: nothing sleeps for real).
    /// Every attempt takes 10 ms and there is no backoff, so a 100 ms deadline allows
    /// exactly 10 attempts: the tenth ends at 100 ms, and no attempt starts after that.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_allows_exactly_the_attempts_that_fit() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            deadline: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(5),
        };
        let start = Instant::now();
        let error = policy
            .run("put", "chunks/x", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err::<(), _>(unavailable())
            })
            .await
            .unwrap_err();
        let (attempts, elapsed) = exhausted(error);
        assert_eq!(attempts, 10);
        assert_eq!(calls.load(Ordering::SeqCst), attempts);
        assert_eq!(elapsed, Duration::from_millis(100));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    /// With jittered waits of at most 5 ms and a 50 ms deadline, giving up needs at least
    /// 45 ms of waits, so at least 10 attempts; each one is a call. Virtual time too.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_jittered_retries_and_keeps_the_last_error() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            deadline: Duration::from_millis(50),
            ..quick()
        };
        let error = policy
            .run("put", "chunks/x", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(unavailable())
            })
            .await
            .unwrap_err();
        let (attempts, elapsed) = exhausted(error);
        assert_eq!(calls.load(Ordering::SeqCst), attempts);
        assert!(attempts >= 10, "{attempts} attempts in {elapsed:?}");
        // (tokio's timer ends a sleep on a whole millisecond, so the last wait may end
        // on the deadline itself, never after it.)
        assert!(
            elapsed >= Duration::from_millis(45) && elapsed <= policy.deadline,
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_times_out_and_is_retried() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            attempt_timeout: Duration::from_millis(20),
            ..quick()
        };
        let value = policy
            .run("get", "k", || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                Ok("done")
            })
            .await
            .unwrap();
        assert_eq!(value, "done");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
