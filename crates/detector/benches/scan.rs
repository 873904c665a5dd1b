//! Scanning a chunk tree of 100,000 chunk directories (100 files × 1,000 chunks), warm.
//!
//! The tree is generated once into a temporary directory; criterion then times whole
//! scans (walk, read and parse every metadata.json, stat data.bin of selected chunks,
//! sort). Target: under 1 s on the project's 2-core machines.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use detector::{DetectConfig, scan};
use rayon::prelude::*;

const FILES: u64 = 100;
const CHUNKS_PER_FILE: u64 = 1_000;

/// Writes the tree; every tenth chunk is completed and every tenth (other) one is queued
/// under a live lease, the rest pending, the way a busy repository looks.
fn generate(base: &Path) {
    (0..FILES).into_par_iter().for_each(|file| {
        for id in 0..CHUNKS_PER_FILE {
            let dir = base.join(format!("file_{file:03}/chunk_{id:04}"));
            fs::create_dir_all(&dir).unwrap();
            let size = 1000 + id * 37 % 2_000_000;
            let (status, extra) = match id % 10 {
                0 => ("completed", ",\n  \"compressed_at\": \"2025-12-31T10:00:00Z\""),
                1 => ("queued", ",\n  \"dispatched_at\": \"2025-12-31T23:59:00Z\""),
                _ => ("pending", ""),
            };
            let metadata = format!(
                "{{\n  \"chunk_id\": {id},\n  \"offset\": {offset},\n  \"size\": {size},\n  \
                 \"original_hash\": \"{hash:064x}\",\n  \"pattern_type\": \"{pattern}\",\n  \
                 \"dependencies\": [],\n  \"grammar_id\": \"mp4_v1\",\n  \
                 \"status\": \"{status}\",\n  \"created_at\": \"2025-11-13T14:02:11.123456\"{extra}\n}}\n",
                offset = id * 1_048_576,
                hash = file * CHUNKS_PER_FILE + id,
                pattern = if id == 0 { "ISOBMFF_FTYP" } else { "ISOBMFF_MDAT_MEDIA" },
            );
            fs::write(dir.join("metadata.json"), metadata).unwrap();
            // Sparse: the size is right, the disk cost is nil.
            fs::File::create(dir.join("data.bin"))
                .unwrap()
                .set_len(size)
                .unwrap();
        }
    });
}

fn bench_scan(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("pending_compression");
    generate(&base);
    let config = DetectConfig::new(&base);
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();

    // Warm the page cache and check the tree reads as intended before timing it.
    let report = scan(&config, now).unwrap();
    assert_eq!(report.scanned as u64, FILES * CHUNKS_PER_FILE);
    assert_eq!(
        report.selected.len() as u64,
        FILES * CHUNKS_PER_FILE * 8 / 10
    );
    assert!(report.invalid.is_empty());

    let mut group = c.benchmark_group("detector");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("scan_100k_chunk_dirs", |b| {
        b.iter(|| black_box(scan(&config, now).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
