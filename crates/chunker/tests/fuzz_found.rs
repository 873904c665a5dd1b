//! Inputs the fuzz targets (`cargo xtask fuzz`, crates/fuzz) found crashing or slow, kept
//! as regression tests: each is planned with every strategy and small sizes, as the fuzz
//! target does, must give a plan that tiles it, and must not make the chunker allocate
//! more than a few MiB (a few hundred bytes of sample tables once made it build a list
//! of 110 MB).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts live heap bytes and their peak, for this test binary only.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`, as the caller promises.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Far above what a few KiB of input should need, far below what a table-driven blow-up
/// allocates.
const PEAK_LIMIT: usize = 16 << 20;

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
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let before = LIVE.load(Ordering::Relaxed);
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
        let peak = PEAK.load(Ordering::Relaxed) - before;
        assert!(
            peak < PEAK_LIMIT,
            "{}: planning {} bytes allocated {peak} bytes at the peak",
            input.display(),
            data.len()
        );
    }
}
