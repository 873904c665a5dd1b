//! Chunking throughput on a mixed sample set (PNG, MP4 with keyframes, text log, random
//! binary) of 256 MiB (`PANINI_BENCH_MIB` to change): planning only, and the full write
//! of the chunk tree to a temporary directory, for each strategy. Input and output live
//! under `PANINI_BENCH_DIR` (default: the system temp dir); point it at a tmpfs such as
//! `/dev/shm` to measure the chunker without the disk's writeback.
//!
//! `cargo bench -p chunker -- --measurement-time 5 --sample-size 10`

use std::path::PathBuf;

use chunker::{ChunkOptions, ChunkerConfig, Strategy, chunk_file, plan_file};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const STRATEGIES: [Strategy; 3] = [Strategy::Semantic, Strategy::Size, Strategy::Adaptive];

fn bench(c: &mut Criterion) {
    let mib: u64 = std::env::var("PANINI_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let input = match std::env::var_os("PANINI_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let files: Vec<PathBuf> = samples::sample_set(input.path(), mib << 20).expect("sample set");
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("sample").len())
        .sum();

    let mut group = c.benchmark_group("chunking");
    group.throughput(Throughput::Bytes(total));
    for strategy in STRATEGIES {
        let config = ChunkerConfig {
            strategy,
            ..ChunkerConfig::default()
        };
        group.bench_function(format!("plan/{strategy}"), |b| {
            b.iter(|| {
                for file in &files {
                    plan_file(file, &config).expect("plan");
                }
            })
        });
        for sync in [false, true] {
            // Synced writes measure the disk as much as the chunker; run them for the
            // semantic strategy only.
            if sync && strategy != Strategy::Semantic {
                continue;
            }
            let name = if sync {
                format!("write_synced/{strategy}")
            } else {
                format!("write/{strategy}")
            };
            group.bench_function(name, |b| {
                b.iter_batched(
                    || tempfile::tempdir_in(input.path()).expect("output dir"),
                    |output| {
                        for file in &files {
                            let options = ChunkOptions {
                                config,
                                sync,
                                ..ChunkOptions::new(output.path())
                            };
                            chunk_file(file, &options).expect("chunk");
                        }
                        output // deleted after the measurement
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
