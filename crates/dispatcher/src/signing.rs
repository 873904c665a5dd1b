//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the worker checks
//! them in `worker::auth`; the specification's test vector pins both sides.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The HMAC key of a signing secret: the base64 after `whsec_` for secrets in the
/// Standard Webhooks form, else the secret's own bytes.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, base64::DecodeError> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD.decode(encoded),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` header value of one attempt: `v1,<base64 of HMAC-SHA256 over
/// "{id}.{timestamp}.{body}">`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
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
