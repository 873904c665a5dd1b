//! Inputs the fuzz targets (`cargo xtask fuzz`, crates/fuzz) found crashing, kept as
//! regression tests: each is planned with every strategy and small sizes, as the fuzz
//! target does, and must give a plan that tiles it.

use std::io::Cursor;
use std::path::Path;

use chunker::{ChunkerConfig, PlanError, Strategy};

#[test]
fn every_input_the_fuzzers_found_plans_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_found");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs under {}", dir.display());
    for input in inputs {
        let data = std::fs::read(&input).unwrap();
        for strategy in [Strategy::Semantic, Strategy::Adaptive, Strategy::Size] {
            let config = ChunkerConfig {
                strategy,
                max_chunk_size: 4096,
                min_chunk_size: 256,
            };
            match chunker::plan(Cursor::new(&data), data.len() as u64, &config) {
                Ok(plan) => {
                    plan.check()
                        .unwrap_or_else(|e| panic!("{}: {strategy}: {e}", input.display()));
                }
                Err(PlanError::Invariant(e)) => panic!("{}: {strategy}: {e}", input.display()),
                Err(_) => {}
            }
        }
    }
}
