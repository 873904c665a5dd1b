//! The OpenCL engine (PoCL in CI): its frames decode to the input with our decoder and with
//! `lz4 -d`, single chunks and batches alike. Compiled only with the `opencl` feature.
#![cfg(panini_opencl)]

mod common;

use gpu_compress::{
    Codec, CodecChoice, Compressor, CompressorConfig, Engine, EngineChoice, decompress, opencl,
};

fn compressor(codec: CodecChoice) -> Compressor {
    Compressor::new(CompressorConfig {
        codec,
        engine: EngineChoice::OpenCl,
        verify: true,
        ..Default::default()
    })
    .expect("an OpenCL device (CI installs pocl-opencl-icd)")
}

#[test]
fn opencl_frames_decode_to_the_input() {
    let c = compressor(CodecChoice::Fixed(Codec::Lz4));
    assert_eq!(c.engine(), Engine::OpenCl);
    let device = opencl::device().unwrap();
    assert_eq!(c.device(), device.name);
    for (name, data) in common::corpus() {
        let out = c.compress(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.codec, Codec::Lz4);
        assert_eq!(out.stats.engine, Engine::OpenCl, "{name}");
        assert_eq!(out.stats.device, device.name);
        assert_eq!(decompress(Codec::Lz4, &out.bytes).unwrap(), data, "{name}");
    }
}

#[test]
fn opencl_and_cpu_frames_both_decode_and_compress_alike() {
    let gpu = compressor(CodecChoice::Fixed(Codec::Lz4));
    let cpu = Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(Codec::Lz4),
        engine: EngineChoice::Cpu,
        ..Default::default()
    })
    .unwrap();
    for data in [
        common::text(1 << 20),
        common::real_binary(2 << 20),
        common::zeros(300_000),
    ] {
        let g = gpu.compress(&data).unwrap();
        let c = cpu.compress(&data).unwrap();
        assert_eq!(decompress(Codec::Lz4, &g.bytes).unwrap(), data);
        assert_eq!(decompress(Codec::Lz4, &c.bytes).unwrap(), data);
        // Same greedy parse family: the kernel's ratio stays near liblz4's.
        let (gl, cl) = (g.bytes.len() as f64, c.bytes.len() as f64);
        assert!(
            gl < cl * 1.15 && gl > cl * 0.85,
            "opencl {gl} vs cpu {cl} bytes"
        );
    }
    // Incompressible data: every block stored, same frame size on both engines.
    let random = common::random(500_000, 4);
    assert_eq!(
        gpu.compress(&random).unwrap().bytes.len(),
        cpu.compress(&random).unwrap().bytes.len()
    );
}

#[test]
fn lz4_cli_decodes_opencl_frames() {
    let c = compressor(CodecChoice::Fixed(Codec::Lz4));
    for (name, data) in common::corpus()
        .into_iter()
        .filter(|(n, _)| n.contains("MiB") || n == "mixed" || n.starts_with("text-"))
    {
        let out = c.compress(&data).unwrap();
        assert_eq!(
            common::run_cli("lz4", &["-d", "-c"], &out.bytes),
            data,
            "{name}"
        );
    }
}

#[test]
fn batch_runs_many_small_chunks_in_one_launch() {
    let corpus = common::corpus();
    let mut chunks: Vec<&[u8]> = corpus.iter().map(|(_, d)| d.as_slice()).collect();
    let text = common::text(3000);
    for i in 0..200 {
        chunks.push(&text[i..i + 1000 + i]);
    }
    let (frames, timings) = opencl::compress_frames_timed(&chunks).unwrap();
    assert_eq!(timings.launches, 1);
    assert_eq!(frames.len(), chunks.len());
    for (f, c) in frames.iter().zip(&chunks) {
        assert_eq!(&decompress(Codec::Lz4, f).unwrap(), c);
    }

    let c = compressor(CodecChoice::Auto);
    let out = c.compress_batch(&chunks).unwrap();
    for (o, data) in out.iter().zip(&chunks) {
        assert_eq!(&decompress(o.codec, &o.bytes).unwrap(), data);
        if o.codec == Codec::Lz4 {
            assert_eq!(o.stats.engine, Engine::OpenCl);
        }
    }
    assert!(
        out.iter().any(|o| o.codec == Codec::Lz4),
        "zeros chunks go to LZ4 on the device"
    );
}

#[test]
fn threads_share_one_engine() {
    let c = std::sync::Arc::new(compressor(CodecChoice::Fixed(Codec::Lz4)));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                let data = common::text(200_000 + 1000 * i);
                let out = c.compress(&data).unwrap();
                assert_eq!(decompress(Codec::Lz4, &out.bytes).unwrap(), data);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn streamed_input_reaches_the_opencl_engine() {
    let c = Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(Codec::Lz4),
        engine: EngineChoice::OpenCl,
        ..Default::default()
    })
    .expect("an OpenCL device (CI installs pocl-opencl-icd)");
    let data = common::text(3 << 20);
    let mut frame = Vec::new();
    let stats = c
        .compress_stream(std::io::Cursor::new(&data), data.len() as u64, &mut frame)
        .unwrap();
    assert_eq!(stats.engine, Engine::OpenCl);
    assert_eq!(stats.output_len, frame.len());
    assert_eq!(frame, c.compress(&data).unwrap().bytes);
    assert_eq!(decompress(Codec::Lz4, &frame).unwrap(), data);
}
