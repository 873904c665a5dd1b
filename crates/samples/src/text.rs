//! A plausible application log.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::rng;

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "INFO", "WARN"];
const MODULES: [&str; 6] = [
    "chunker",
    "detector",
    "dispatcher",
    "worker",
    "uploader",
    "gpu",
];
const MESSAGES: [&str; 6] = [
    "processed chunk",
    "queued chunk for compression",
    "uploaded object",
    "lease renewed for chunk",
    "retrying upload of chunk",
    "cache miss for chunk",
];

/// About `len` bytes (never more) of newline-terminated log lines with timestamps,
/// levels, modules and numbers: text that compresses like real logs.
pub fn text_log(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rng(seed);
    let mut out = Vec::with_capacity(len + 200);
    let mut millis: u64 = 1_763_042_531_000;
    while out.len() < len {
        millis += rng.gen_range(0..250);
        let (secs, ms) = (millis / 1000, millis % 1000);
        let line = format!(
            "2025-11-13T{:02}:{:02}:{:02}.{ms:03}Z {:5} {}[{}]: {} {} in {} ms (bytes={})\n",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            LEVELS.choose(&mut rng).expect("non-empty"),
            MODULES.choose(&mut rng).expect("non-empty"),
            rng.gen_range(0..8),
            MESSAGES.choose(&mut rng).expect("non-empty"),
            rng.gen_range(0..100_000),
            rng.gen_range(1..500),
            rng.gen_range(1..2_000_000),
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_utf8_of_the_requested_length() {
        let log = text_log(10_000, 1);
        assert_eq!(log.len(), 10_000);
        assert!(std::str::from_utf8(&log).is_ok());
        assert!(log.starts_with(b"2025-11-13T"));
    }
}
