//! Content-defined chunking in the `adaptive` strategy: an insertion early in a file
//! leaves the later chunks unchanged.

mod common;

use std::collections::HashSet;

use chunk_model::Sha256Digest;
use chunker::{FIXED_SIZE, Strategy};
use common::{MIB, assert_tiles, plan_bytes};
use samples::{PngSpec, png, random_bytes};

fn chunk_hashes(bytes: &[u8], strategy: Strategy) -> Vec<Sha256Digest> {
    let plan = plan_bytes(bytes, strategy, MIB);
    assert_tiles(&plan, bytes.len() as u64);
    plan.spans
        .iter()
        .map(|s| Sha256Digest::of(&bytes[s.offset as usize..s.end() as usize]))
        .collect()
}

/// Fraction of `after`'s chunks that also appear in `before`.
fn shared(before: &[Sha256Digest], after: &[Sha256Digest]) -> f64 {
    let known: HashSet<_> = before.iter().collect();
    after.iter().filter(|h| known.contains(h)).count() as f64 / after.len() as f64
}

#[test]
fn insertion_early_in_a_file_changes_only_nearby_chunks() {
    let original = random_bytes(16 * MIB as usize, 101);
    let mut edited = original.clone();
    edited.splice(100_000..100_000, random_bytes(777, 102));

    let (before, after) = (
        chunk_hashes(&original, Strategy::Adaptive),
        chunk_hashes(&edited, Strategy::Adaptive),
    );
    assert!(before.len() >= 16, "{} chunks", before.len());
    let adaptive = shared(&before, &after);
    assert!(
        adaptive >= 0.85,
        "adaptive kept {adaptive:.2} of the chunks"
    );

    // Fixed-size chunks all shift: the contrast is the point of adaptive.
    let fixed = shared(
        &chunk_hashes(&original, Strategy::Size),
        &chunk_hashes(&edited, Strategy::Size),
    );
    assert!(fixed < 0.1, "size kept {fixed:.2}");
}

#[test]
fn adaptive_keeps_the_structure_and_splits_large_spans_by_content() {
    let s = png(&PngSpec::with_approx_size(6 * MIB as usize, 103));
    let plan = plan_bytes(&s.bytes, Strategy::Adaptive, MIB);
    assert_tiles(&plan, s.bytes.len() as u64);
    let patterns: Vec<_> = plan.spans.iter().map(|s| s.pattern.as_ref()).collect();
    assert_eq!(&patterns[..2], ["PNG_SIGNATURE", "PNG_IHDR"]);
    assert_eq!(patterns.last(), Some(&"PNG_IEND"));
    let idat: Vec<_> = plan
        .spans
        .iter()
        .filter(|s| s.pattern == "PNG_IDAT")
        .collect();
    assert!(idat.len() >= 6);
    // Content-defined pieces vary in size, unlike fixed-size ones.
    let sizes: HashSet<_> = idat.iter().map(|s| s.size).collect();
    assert!(sizes.len() > idat.len() / 2, "{sizes:?}");
    assert!(!patterns.contains(&FIXED_SIZE));
}

#[test]
fn maxima_below_fastcdc_limits_fall_back_to_size() {
    let bytes = random_bytes(10_000, 104);
    let plan = plan_bytes(&bytes, Strategy::Adaptive, 1000);
    assert_tiles(&plan, bytes.len() as u64);
    assert!(
        plan.spans[..plan.spans.len() - 1]
            .iter()
            .all(|s| s.size == 1000)
    );
    // FastCDC caps its maximum at 16 MiB; a larger maximum still holds.
    let big = random_bytes(30 * MIB as usize, 105);
    let plan = plan_bytes(&big, Strategy::Adaptive, 20 * MIB);
    assert_tiles(&plan, big.len() as u64);
    assert!(plan.spans.len() >= 2);
    assert!(plan.spans.iter().all(|s| s.size <= 16 * MIB));
}
