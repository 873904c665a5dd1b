//! Content-defined cuts in the default strategy: an edit early in a file changes only
//! the chunks around it.

mod common;

use std::collections::HashSet;

use chunk_model::Sha256Digest;
use chunker::{FIXED_SIZE, Strategy};
use common::{MIB, assert_tiles, plan_bytes};
use samples::{PngSpec, png, random_bytes, text_log};

fn chunk_hashes(bytes: &[u8], strategy: Strategy) -> Vec<Sha256Digest> {
    let plan = plan_bytes(bytes, strategy, MIB);
    assert_tiles(&plan, bytes.len() as u64);
    plan.spans
        .iter()
        .map(|s| Sha256Digest::of(&bytes[s.offset as usize..s.end() as usize]))
        .collect()
}

/// Chunks of `after` that are not chunks of `before`: what an edit costs to store.
fn changed(before: &[Sha256Digest], after: &[Sha256Digest]) -> usize {
    let known: HashSet<_> = before.iter().collect();
    after.iter().filter(|h| !known.contains(h)).count()
}

#[test]
fn a_line_inserted_near_the_start_of_a_20_mib_log_changes_at_most_3_chunks() {
    let original = text_log(20 * MIB as usize, 106);
    let line_end = original.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut edited = original.clone();
    edited.splice(line_end..line_end, b"inserted log line\n".iter().copied());

    for strategy in [Strategy::Semantic, Strategy::Adaptive] {
        let (before, after) = (
            chunk_hashes(&original, strategy),
            chunk_hashes(&edited, strategy),
        );
        assert!(before.len() >= 20, "{} chunks", before.len());
        let n = changed(&before, &after);
        eprintln!(
            "{strategy}: {n} of {} chunks changed by the insertion",
            after.len()
        );
        assert!(n <= 3, "{strategy}: {n} of {} chunks changed", after.len());
    }
    // Fixed-size chunks all shift: the contrast is the point.
    let before = chunk_hashes(&original, Strategy::Size);
    let after = chunk_hashes(&edited, Strategy::Size);
    assert_eq!(changed(&before, &after), after.len());
}

#[test]
fn insertion_early_in_random_data_changes_only_nearby_chunks() {
    let original = random_bytes(16 * MIB as usize, 101);
    let mut edited = original.clone();
    edited.splice(100_000..100_000, random_bytes(777, 102));
    let (before, after) = (
        chunk_hashes(&original, Strategy::Semantic),
        chunk_hashes(&edited, Strategy::Semantic),
    );
    assert!(before.len() >= 16, "{} chunks", before.len());
    assert!(
        changed(&before, &after) <= 2,
        "{:?}",
        changed(&before, &after)
    );
}

#[test]
fn a_png_idat_run_is_cut_by_content_between_the_minimum_and_the_maximum() {
    let s = png(&PngSpec {
        idat_chunk_size: 8192,
        ..PngSpec::with_approx_size(6 * MIB as usize, 103)
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_tiles(&plan, s.bytes.len() as u64);
    assert_eq!(plan.spans[0].pattern, "PNG_HEADER");
    let idat: Vec<_> = plan.spans[1..].iter().collect();
    assert!(idat.iter().all(|s| s.pattern == "PNG_IDAT"), "{idat:?}");
    // Cut by content: the pieces vary in size and fall inside IDAT chunks, not at
    // their boundaries; all but the last are at least the minimum.
    let sizes: HashSet<_> = idat.iter().map(|s| s.size).collect();
    assert!(sizes.len() > idat.len() / 2, "{sizes:?}");
    let boundaries: HashSet<u64> = s.parts_named("IDAT").map(|p| p.offset).collect();
    assert!(
        idat[1..].iter().any(|sp| !boundaries.contains(&sp.offset)),
        "every cut on an IDAT boundary"
    );
    assert!(
        idat[..idat.len() - 1]
            .iter()
            .all(|sp| sp.size >= plan.min_chunk_size)
    );
    // IEND went with the last piece.
    let last = plan.spans.last().unwrap();
    assert_eq!(last.end(), s.bytes.len() as u64);
    assert!(last.structures.iter().any(|st| st.pattern == "PNG_IEND"));
}

#[test]
fn maxima_below_fastcdc_limits_fall_back_to_size() {
    let bytes = random_bytes(10_000, 104);
    let plan = plan_bytes(&bytes, Strategy::Semantic, 1000);
    assert_tiles(&plan, bytes.len() as u64);
    assert!(
        plan.spans[..plan.spans.len() - 1]
            .iter()
            .all(|s| s.size == 1000 && s.pattern == FIXED_SIZE)
    );
    // FastCDC caps its maximum at 16 MiB; a larger maximum still holds.
    let big = random_bytes(30 * MIB as usize, 105);
    let plan = plan_bytes(&big, Strategy::Semantic, 20 * MIB);
    assert_tiles(&plan, big.len() as u64);
    assert!(plan.spans.len() >= 2);
    assert!(plan.spans.iter().all(|s| s.size <= 16 * MIB));
}

#[test]
fn figures_compare_the_default_plan_with_split_and_fastcdc_only() {
    use chunker::figures::{Cutter, cut_figures, edit_figures};
    use chunker::{ChunkerConfig, DEFAULT_MAX_CHUNK_SIZE};

    let dir = tempfile::tempdir().unwrap();
    let original = text_log(20 * MIB as usize, 107);
    let mut edited = original.clone();
    let line_end = original.iter().position(|&b| b == b'\n').unwrap() + 1;
    edited.splice(line_end..line_end, b"inserted log line\n".iter().copied());
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    std::fs::write(&a, &original).unwrap();
    std::fs::write(&b, &edited).unwrap();

    let cutters = [
        ("default", Cutter::Plan(ChunkerConfig::default())),
        ("split -b 1M", Cutter::FixedSize(MIB)),
        (
            "fastcdc",
            Cutter::FastCdc {
                max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
            },
        ),
    ];
    let mut changed = Vec::new();
    for (name, cutter) in cutters {
        let cut = cut_figures(&a, cutter).unwrap();
        let edit = edit_figures(&a, &b, cutter).unwrap();
        eprintln!(
            "{name}: {:.2} chunks/MiB, mean {} B, {} small; edit: {} of {} chunks changed",
            cut.chunks_per_mib, cut.mean_chunk, cut.small_chunks, edit.changed, edit.chunks
        );
        assert_eq!(cut.bytes, original.len() as u64);
        assert_eq!(edit.changed + edit.reused, edit.chunks);
        changed.push((edit.changed, edit.chunks));
    }
    assert!(changed[0].0 <= 3, "{changed:?}");
    // split -b shifts every chunk after the insertion; FastCDC alone recovers.
    assert_eq!(changed[1].0, changed[1].1);
    assert!(changed[2].0 <= 3, "{changed:?}");
}
