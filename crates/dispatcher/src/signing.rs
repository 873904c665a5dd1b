//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the worker checks
//! them in `worker::auth`. The one implementation is `chunk_model::webhook_signature`,
//! whose test pins it to the specification's test vector; `sign` is its header value
//! (`v1,<base64 of HMAC-SHA256 over "{id}.{timestamp}.{body}">`).

pub use chunk_model::webhook_signature::{header_value as sign, signing_key};

/// A fresh delivery id: `msg_` and 128 random bits in hex. It stays the same for every
/// retry of the delivery, so a worker can tell a retry from new work.
pub fn new_delivery_id() -> String {
    let bits: u128 = rand::random();
    format!("msg_{bits:032x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn delivery_ids_are_fresh_and_prefixed() {
        let (a, b) = (super::new_delivery_id(), super::new_delivery_id());
        assert_ne!(a, b);
        assert!(a.starts_with("msg_") && a.len() == 4 + 32, "{a}");
    }
}
