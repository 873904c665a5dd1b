//! Who may post work: the bearer token, the Standard Webhooks signature, and the window
//! in which a delivery id counts as a replay.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

/// How far a `webhook-timestamp` may be from the worker's clock, either way.
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Header carrying the delivery id (stable across retries of one delivery).
pub const WEBHOOK_ID: &str = "webhook-id";
/// Header carrying the Unix time (seconds) the delivery attempt was signed at.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying `v1,<base64 HMAC-SHA256>` signatures, space separated.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

pub use chunk_model::webhook_signature::{signature, signing_key};

/// Whether the `Authorization` header is `Bearer <expected>`. The comparison takes the
/// same time wherever the tokens differ, so it does not leak the token byte by byte.
pub fn bearer_matches(expected: &str, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A Standard Webhooks header is absent or not text.
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a Unix time in seconds.
    #[error("webhook-timestamp {0:?} is not a Unix time in seconds")]
    BadTimestamp(String),
    /// The timestamp is outside the tolerance.
    #[error("webhook-timestamp is {skew_secs} s away from this worker's clock (tolerance {} s)", SIGNATURE_TOLERANCE.as_secs())]
    Stale {
        /// Signed time minus worker time, in seconds.
        skew_secs: i64,
    },
    /// No `v1` signature in the header matches the body.
    #[error("no webhook-signature matches the request")]
    Mismatch,
}

/// Checks the Standard Webhooks headers of a request against `body` at Unix time `now`,
/// and returns the delivery id.
pub fn verify_signature(
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<String, SignatureError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(SignatureError::MissingHeader(name))
    };
    let id = header(WEBHOOK_ID)?;
    let timestamp_text = header(WEBHOOK_TIMESTAMP)?;
    let signatures = header(WEBHOOK_SIGNATURE)?;
    let timestamp: i64 = timestamp_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(timestamp_text.to_owned()))?;
    let skew_secs = timestamp.saturating_sub(now);
    if skew_secs.unsigned_abs() > SIGNATURE_TOLERANCE.as_secs() {
        return Err(SignatureError::Stale { skew_secs });
    }
    let expected = signature(key, id, timestamp, body);
    // Several signatures may be sent while a secret is being rotated; any may match.
    let matched = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|given| bool::from(given.ct_eq(&expected)));
    if matched {
        Ok(id.to_owned())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Delivery ids accepted recently, with what they were accepted for, so that a replayed
/// or retried delivery is acknowledged again without queueing its chunks twice.
///
/// Bounded both ways: ids older than `ttl` are forgotten (a signed delivery older than
/// the signature tolerance is refused anyway), and at most `capacity` ids are kept.
#[derive(Debug)]
pub struct ReplayCache {
    ttl: Duration,
    capacity: usize,
    accepted: HashMap<String, Vec<String>>,
    order: VecDeque<(Instant, String)>,
}

impl ReplayCache {
    /// An empty cache.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            accepted: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The chunk paths `id` was accepted for, if it was, recently.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<&[String]> {
        self.evict(now);
        self.accepted.get(id).map(Vec::as_slice)
    }

    /// Remembers that `id` was accepted for `chunk_paths`.
    pub fn insert(&mut self, id: String, chunk_paths: Vec<String>, now: Instant) {
        self.evict(now);
        while self.order.len() >= self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.accepted.remove(&old);
            }
        }
        if self.accepted.insert(id.clone(), chunk_paths).is_none() {
            self.order.push_back((now, id));
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn evict(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) <= self.ttl {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.accepted.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// The test vector of the Standard Webhooks specification.
    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            STANDARD.encode(sig),
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );

        let mut headers = HeaderMap::new();
        headers.insert(
            WEBHOOK_ID,
            HeaderValue::from_static("msg_p5jXN8AQM9LWM0D4loKWxJek"),
        );
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_static("1614265330"));
        headers.insert(
            WEBHOOK_SIGNATURE,
            HeaderValue::from_static("v1,bm90IGl0 v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        );
        assert_eq!(
            verify_signature(&key, &headers, body, 1614265330 + 299).unwrap(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek"
        );
        assert_eq!(
            verify_signature(&key, &headers, body, 1614265330 + 301),
            Err(SignatureError::Stale { skew_secs: -301 })
        );
        assert_eq!(
            verify_signature(&key, &headers, b"{}", 1614265330),
            Err(SignatureError::Mismatch)
        );
        headers.remove(WEBHOOK_ID);
        assert_eq!(
            verify_signature(&key, &headers, body, 1614265330),
            Err(SignatureError::MissingHeader(WEBHOOK_ID))
        );
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut headers = HeaderMap::new();
        assert!(!bearer_matches("secret", &headers));
        headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
        assert!(bearer_matches("secret", &headers));
        assert!(!bearer_matches("secre", &headers));
        assert!(!bearer_matches("secret2", &headers));
        headers.insert("authorization", HeaderValue::from_static("Basic secret"));
        assert!(!bearer_matches("secret", &headers));
    }

    #[test]
    fn replay_cache_forgets_by_age_and_by_capacity() {
        let start = Instant::now();
        let mut cache = ReplayCache::new(Duration::from_secs(10), 2);
        cache.insert("a".into(), vec!["x".into()], start);
        assert_eq!(cache.get("a", start).unwrap(), ["x".to_owned()]);
        cache.insert("b".into(), vec![], start);
        cache.insert("c".into(), vec![], start);
        assert!(cache.get("a", start).is_none(), "evicted by capacity");
        assert!(
            cache.get("c", start + Duration::from_secs(11)).is_none(),
            "evicted by age"
        );
        assert!(cache.is_empty());
    }
}
