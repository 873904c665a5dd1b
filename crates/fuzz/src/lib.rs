//! What every fuzz target checks, shared so each target is one line.
//!
//! A parser under fuzzing must never panic, hang, or allocate without bound, whatever
//! the input; beyond that each target checks the parser's own promise (a chunk plan tiles
//! its input, a decoded frame is never longer than its bound, a document that parses
//! serializes again).

use std::io::Cursor;

use chunker::{ChunkerConfig, Strategy};

/// Plans `data` with every strategy and small sizes (so structures get split and packed)
/// and checks the plan's invariants: exact tiling, no chunk above the maximum.
pub fn plan_all_strategies(data: &[u8]) {
    for strategy in [Strategy::Semantic, Strategy::Adaptive, Strategy::Size] {
        let config = ChunkerConfig {
            strategy,
            max_chunk_size: 4096,
            min_chunk_size: 256,
        };
        match chunker::plan(Cursor::new(data), data.len() as u64, &config) {
            Ok(plan) => {
                if let Err(e) = plan.check() {
                    panic!("{strategy}: {e}");
                }
                assert_eq!(plan.spans.iter().map(|s| s.size).sum::<u64>(), data.len() as u64);
            }
            // Reading a cursor cannot fail; an invariant error is a bug.
            Err(chunker::PlanError::Invariant(e)) => panic!("{strategy}: {e}"),
            Err(_) => {}
        }
    }
}

/// `data` with `magic` at `at`, so mutations stay in one format's parser.
pub fn with_magic(magic: &[u8], at: usize, data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < at + magic.len() {
        out.resize(at + magic.len(), 0);
    }
    out[at..at + magic.len()].copy_from_slice(magic);
    out
}
