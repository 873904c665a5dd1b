//! Test support: a private GCS emulator per test, generated data, and a local bucket
//! that counts its calls.
// Each test file uses a different part of this module.
#![allow(dead_code)]

pub mod chunk_tree;
pub mod counting;

use std::path::Path;
use std::time::Duration;

pub use gcs_emulator::Emulator;
use uploader::{GcsConfig, GcsCredentials, RetryPolicy};

/// The bucket every emulator starts with.
pub const BUCKET: &str = "panini-test";

/// A fake-gcs-server on a free 127.0.0.1 port with [`BUCKET`] pre-created; killed when
/// dropped. Never skips: without the binary the test fails and says how to get it.
pub fn start_emulator() -> Emulator {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = gcs_emulator::find_binary(&root).unwrap_or_else(|e| panic!("{e}"));
    Emulator::start(&binary, &[BUCKET]).unwrap_or_else(|e| panic!("{e}"))
}

/// A store configuration for `endpoint` with retries short enough that a failing test
/// fails in seconds rather than hanging.
pub fn config_for(endpoint: &str) -> GcsConfig {
    GcsConfig {
        endpoint: Some(endpoint.to_owned()),
        credentials: GcsCredentials::Anonymous,
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            deadline: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(20),
        },
    }
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no data files.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes that compress: text-like with repeats.
pub fn compressible(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "panini ", "chunk ", "object ", "recipe ", "bucket ", "zstd ", "lz4 ", "\n",
    ];
    let noise = pseudo_random(len / 7 + 1, seed);
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[(noise[i % noise.len()] % 8) as usize].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}
