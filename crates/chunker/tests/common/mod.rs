//! Helpers shared by the chunker's integration tests.
#![allow(dead_code)]

use std::io::Cursor;

use chunker::{ChunkerConfig, Plan, Span, Strategy, plan};

pub const MIB: u64 = 1 << 20;

pub fn plan_bytes(bytes: &[u8], strategy: Strategy, max_chunk_size: u64) -> Plan {
    plan(
        Cursor::new(bytes),
        bytes.len() as u64,
        &ChunkerConfig {
            strategy,
            max_chunk_size,
            ..ChunkerConfig::default()
        },
    )
    .expect("plan")
}

/// Like [`plan_bytes`], with a minimum chunk size.
pub fn plan_bytes_min(
    bytes: &[u8],
    strategy: Strategy,
    max_chunk_size: u64,
    min_chunk_size: u64,
) -> Plan {
    plan(
        Cursor::new(bytes),
        bytes.len() as u64,
        &ChunkerConfig {
            strategy,
            max_chunk_size,
            min_chunk_size,
        },
    )
    .expect("plan")
}

/// Checks the invariants independently of `Plan::check`.
pub fn assert_tiles(plan: &Plan, len: u64) {
    let mut at = 0;
    for span in &plan.spans {
        assert_eq!(span.offset, at, "gap or overlap at {at}: {span:?}");
        assert!(
            span.size >= 1 && span.size <= plan.max_chunk_size,
            "{span:?} vs max {}",
            plan.max_chunk_size
        );
        at += span.size;
    }
    assert_eq!(at, len, "spans do not reach the end");
}

/// (offset, size, pattern, keyframe) of each span, for compact comparisons.
pub fn summary(plan: &Plan) -> Vec<(u64, u64, String, bool)> {
    plan.spans
        .iter()
        .map(|s: &Span| (s.offset, s.size, s.pattern.to_string(), s.is_keyframe))
        .collect()
}

/// The spans expected for one structure of `size` bytes at `offset` under the semantic
/// strategy: pieces of `max`, the last one shorter.
pub fn pieces(offset: u64, size: u64, max: u64, pattern: &str) -> Vec<(u64, u64, String, bool)> {
    let mut out = Vec::new();
    let mut at = offset;
    while at < offset + size {
        let n = max.min(offset + size - at);
        out.push((at, n, pattern.to_owned(), false));
        at += n;
    }
    out
}
