//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the worker checks
//! them in `worker::auth`; the specification's test vector pins both sides.

pub use chunk_model::webhook_signature::signing_key;

/// The `webhook-signature` header value of one attempt: `v1,<base64 of HMAC-SHA256 over
/// "{id}.{timestamp}.{body}">`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    chunk_model::webhook_signature::header_value(key, id, timestamp, body)
}

/// A fresh delivery id: `msg_` and 128 random bits in hex. It stays the same for every
/// retry of the delivery, so a worker can tell a retry from new work.
pub fn new_delivery_id() -> String {
    let bits: u128 = rand::random();
    format!("msg_{bits:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_ne!(new_delivery_id(), new_delivery_id());
    }
}
