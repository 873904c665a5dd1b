//! Property tests: for random, truncated and corrupted inputs of every format, under
//! every strategy and many maximum sizes, the chunks tile the input and none exceeds
//! the maximum.

mod common;

use chunker::Strategy;
use common::{assert_tiles, plan_bytes, plan_bytes_min};
use proptest::prelude::*;
use samples::*;

/// A small file of format `kind` (0..=9) from `seed`.
fn generate(kind: u8, seed: u64) -> Vec<u8> {
    match kind {
        0 => {
            png(&PngSpec {
                idat_chunk_size: 1000,
                ..PngSpec::with_approx_size(20_000, seed)
            })
            .bytes
        }
        1 => {
            mp4(&Mp4Spec {
                samples: 40,
                sample_size: 500,
                keyframe_interval: 7,
                samples_per_chunk: 3,
                co64: seed.is_multiple_of(2),
                moov_first: !seed.is_multiple_of(3),
                free_box: true,
                brand: *b"isom",
                seed,
            })
            .bytes
        }
        2 => {
            jpeg(&JpegSpec {
                scan_bytes: 20_000,
                restart_every: 512,
                ..JpegSpec::with_approx_size(0, seed)
            })
            .bytes
        }
        3 => {
            webm(&WebmSpec {
                clusters: 4,
                blocks_per_cluster: 5,
                block_size: 800,
                unknown_sizes: seed.is_multiple_of(2),
                ..WebmSpec::with_approx_size(0, seed)
            })
            .bytes
        }
        4 => {
            avi(&AviSpec {
                frames: 12,
                frame_size: 1001,
                audio_size: 333,
                keyframe_interval: 4,
                seed,
            })
            .bytes
        }
        5 => {
            wav(&WavSpec {
                data_bytes: 10_001,
                seed,
            })
            .bytes
        }
        6 => {
            webp(&WebpSpec {
                image_bytes: 5_001,
                seed,
            })
            .bytes
        }
        7 => {
            pdf(&PdfSpec {
                pages: 3,
                image_bytes: 3_000,
                seed,
            })
            .bytes
        }
        8 => text_log(15_000, seed),
        _ => random_bytes(15_000, seed),
    }
}

fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop_oneof![
        Just(Strategy::Semantic),
        Just(Strategy::Size),
        Just(Strategy::Adaptive)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn whole_files_tile(kind in 0u8..10, seed in 0u64..1000, max in 1u64..20_000, strategy in strategy()) {
        let bytes = generate(kind, seed);
        let plan = plan_bytes(&bytes, strategy, max);
        assert_tiles(&plan, bytes.len() as u64);
    }

    #[test]
    fn whole_files_tile_for_any_minimum(kind in 0u8..10, seed in 0u64..1000, max in 1u64..40_000, min in 0u64..50_000) {
        let bytes = generate(kind, seed);
        let plan = plan_bytes_min(&bytes, Strategy::Semantic, max, min);
        assert_tiles(&plan, bytes.len() as u64);
        // The minimum used is lowered to a quarter of the maximum.
        assert_eq!(plan.min_chunk_size, min.min(max / 4));
    }

    #[test]
    fn truncated_files_tile(kind in 0u8..10, seed in 0u64..1000, cut in 0.0f64..1.0, max in 1u64..20_000, strategy in strategy()) {
        let bytes = generate(kind, seed);
        let len = ((bytes.len() as f64 * cut) as usize).max(1);
        let plan = plan_bytes(&bytes[..len], strategy, max);
        assert_tiles(&plan, len as u64);
    }

    #[test]
    fn corrupted_files_tile(
        kind in 0u8..10,
        seed in 0u64..1000,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..8),
        max in 1u64..20_000,
        strategy in strategy(),
    ) {
        let mut bytes = generate(kind, seed);
        let len = bytes.len();
        for (at, value) in flips {
            // Corrupt the headers as often as the payload: they are where parsers go wrong.
            let i = if value % 2 == 0 { (at * len.min(512) as f64) as usize } else { (at * len as f64) as usize };
            bytes[i.min(len - 1)] = value;
        }
        let plan = plan_bytes(&bytes, strategy, max);
        assert_tiles(&plan, len as u64);
    }

    #[test]
    fn random_bytes_with_magic_numbers_tile(
        magic in prop_oneof![
            Just(&b"\x89PNG\r\n\x1a\n"[..]), Just(&b"\xFF\xD8\xFF"[..]), Just(&b"\0\0\0\x10ftypisom"[..]),
            Just(&b"\x1A\x45\xDF\xA3"[..]), Just(&b"RIFF\x10\0\0\0AVI "[..]), Just(&b"RIFF\xFF\xFF\xFF\x7FWAVE"[..]),
            Just(&b"%PDF-1.4\n1 0 obj"[..]), Just(&b""[..]),
        ],
        tail in proptest::collection::vec(any::<u8>(), 1..3000),
        max in 1u64..5_000,
        strategy in strategy(),
    ) {
        let bytes = [magic, &tail].concat();
        let plan = plan_bytes(&bytes, strategy, max);
        assert_tiles(&plan, bytes.len() as u64);
    }
}
