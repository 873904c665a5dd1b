//! Every codec on the CPU engine round-trips every kind of input at every awkward size.

mod common;

use gpu_compress::{
    Codec, CodecChoice, Compressor, CompressorConfig, Engine, EngineChoice, decompress,
    detect_codec,
};

fn compressor(codec: CodecChoice) -> Compressor {
    Compressor::new(CompressorConfig {
        codec,
        engine: EngineChoice::Cpu,
        verify: true,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn every_codec_round_trips_every_input() {
    let corpus = common::corpus();
    for codec in [Codec::Lz4, Codec::Zstd, Codec::Store] {
        let c = compressor(CodecChoice::Fixed(codec));
        for (name, data) in &corpus {
            let out = c
                .compress(data)
                .unwrap_or_else(|e| panic!("{codec} {name}: {e}"));
            assert_eq!(out.codec, codec, "{name}");
            assert_eq!(out.stats.engine, Engine::Cpu);
            assert_eq!(out.stats.input_len, data.len());
            assert_eq!(out.stats.output_len, out.bytes.len());
            assert!(out.stats.verified);
            if codec != Codec::Store {
                assert_eq!(detect_codec(&out.bytes), Some(codec), "{name}");
            }
            assert_eq!(
                &decompress(codec, &out.bytes).unwrap(),
                data,
                "{codec} {name}"
            );
        }
    }
}

#[test]
fn lz4_frames_shrink_compressible_data_and_bound_incompressible() {
    let c = compressor(CodecChoice::Fixed(Codec::Lz4));
    let text = common::text(1 << 20);
    let out = c.compress(&text).unwrap();
    assert!(out.stats.ratio > 2.0, "text ratio {}", out.stats.ratio);
    // Random blocks are stored raw: the frame grows only by headers (4 bytes a block).
    let random = common::random(1 << 20, 1);
    let out = c.compress(&random).unwrap();
    assert!(
        out.bytes.len() <= random.len() + 15 + 8 + 4 * 16,
        "{}",
        out.bytes.len()
    );
}

#[test]
fn zstd_level_changes_output_and_is_validated() {
    let text = common::text(512 << 10);
    let fast = Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(Codec::Zstd),
        level: Some(1),
        engine: EngineChoice::Cpu,
        verify: false,
    })
    .unwrap()
    .compress(&text)
    .unwrap();
    let strong = Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(Codec::Zstd),
        level: Some(19),
        engine: EngineChoice::Cpu,
        verify: false,
    })
    .unwrap()
    .compress(&text)
    .unwrap();
    assert!(
        strong.bytes.len() < fast.bytes.len(),
        "level 19 {} vs level 1 {}",
        strong.bytes.len(),
        fast.bytes.len()
    );
    assert_eq!(decompress(Codec::Zstd, &strong.bytes).unwrap(), text);
    let err = Compressor::new(CompressorConfig {
        level: Some(99),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
}

#[test]
fn auto_stores_random_and_compresses_text_and_zeros() {
    let c = compressor(CodecChoice::Auto);
    let random = c.compress(&common::random(1 << 20, 3)).unwrap();
    assert_eq!(random.codec, Codec::Store);
    let d = random
        .stats
        .auto
        .as_ref()
        .expect("auto records its decision");
    assert!(d.entropy_bits > 7.9, "{d:?}");

    let text = c.compress(&common::text(1 << 20)).unwrap();
    assert_eq!(text.codec, Codec::Zstd, "{:?}", text.stats.auto);

    let zeros = c.compress(&common::zeros(1 << 20)).unwrap();
    assert_eq!(zeros.codec, Codec::Lz4, "{:?}", zeros.stats.auto);

    let empty = c.compress(&[]).unwrap();
    assert_eq!(empty.codec, Codec::Store);
    assert!(empty.bytes.is_empty());

    // Whatever it picks, it never returns more bytes than it was given.
    for (name, data) in common::corpus() {
        let out = c.compress(&data).unwrap();
        assert!(
            out.bytes.len() <= data.len(),
            "{name}: {} > {}",
            out.bytes.len(),
            data.len()
        );
        assert_eq!(out.stats.auto.as_ref().unwrap().codec, out.codec, "{name}");
        assert_eq!(decompress(out.codec, &out.bytes).unwrap(), data, "{name}");
    }
}

#[test]
fn batch_matches_single_calls() {
    let corpus = common::corpus();
    let chunks: Vec<&[u8]> = corpus.iter().map(|(_, d)| d.as_slice()).collect();
    for choice in [
        CodecChoice::Fixed(Codec::Lz4),
        CodecChoice::Fixed(Codec::Zstd),
        CodecChoice::Auto,
    ] {
        let c = compressor(choice);
        let batch = c.compress_batch(&chunks).unwrap();
        assert_eq!(batch.len(), chunks.len());
        for ((name, data), out) in corpus.iter().zip(&batch) {
            let single = c.compress(data).unwrap();
            assert_eq!(out.codec, single.codec, "{choice} {name}");
            assert_eq!(
                out.bytes, single.bytes,
                "{choice} {name}: batch and single frames differ"
            );
            assert_eq!(&decompress(out.codec, &out.bytes).unwrap(), data);
        }
    }
}

#[test]
fn compressor_is_shared_across_threads() {
    let c = std::sync::Arc::new(compressor(CodecChoice::Auto));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                let data = if i % 2 == 0 {
                    common::text(300_000 + i)
                } else {
                    common::real_binary(300_000 + i)
                };
                let out = c.compress(&data).unwrap();
                assert_eq!(decompress(out.codec, &out.bytes).unwrap(), data);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn store_and_detect() {
    assert_eq!(decompress(Codec::Store, b"abc").unwrap(), b"abc");
    assert_eq!(detect_codec(b""), None);
}
