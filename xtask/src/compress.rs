//! `cargo xtask compress` / `cargo xtask decompress`: one file through gpu-compress, with the
//! engine, device and numbers printed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use gpu_compress::{CodecChoice, Compressor, CompressorConfig, EngineChoice};

/// `cargo xtask compress INPUT -o OUTPUT`.
#[derive(Debug, clap::Args)]
pub struct CompressArgs {
    /// File to compress.
    pub input: PathBuf,
    /// Where to write the frame (atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// lz4, zstd, store, or auto (chosen from a sample of the file).
    #[arg(long, default_value = "auto")]
    pub codec: CodecChoice,
    /// zstd level (default 3); LZ4 has one level, that of `lz4 -1`.
    #[arg(long)]
    pub level: Option<i32>,
    /// auto (OpenCL on a GPU, else CPU), cpu, or opencl.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
    /// Decode the frame and compare it with the input before writing it.
    #[arg(long)]
    pub verify: bool,
}

/// `cargo xtask decompress INPUT -o OUTPUT`: the codec is read from the frame's magic number.
#[derive(Debug, clap::Args)]
pub struct DecompressArgs {
    /// LZ4 or zstd frame.
    pub input: PathBuf,
    /// Where to write the decoded bytes (atomically).
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn compress(args: CompressArgs) -> anyhow::Result<()> {
    let config = CompressorConfig {
        codec: args.codec,
        level: args.level,
        engine: args.engine,
        verify: args.verify,
    };
    let compressor = Compressor::new(config).context("setting up the compressor")?;
    if let Some(note) = compressor.engine_note() {
        println!("engine auto → cpu: {note}");
    }
    let data =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let out = compressor
        .compress(&data)
        .with_context(|| format!("compressing {}", args.input.display()))?;
    chunk_model::json_file::write_bytes_atomic(&args.output, &out.bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let s = &out.stats;
    println!(
        "{} → {}: codec {}, engine {} on {}, {} → {} bytes, ratio {:.3}, {:.1} ms, {:.1} MB/s{}",
        args.input.display(),
        args.output.display(),
        s.codec,
        s.engine,
        s.device,
        s.input_len,
        s.output_len,
        s.ratio,
        s.elapsed.as_secs_f64() * 1e3,
        mb_per_s(s.input_len, s.elapsed.as_secs_f64()),
        if s.verified { ", verified" } else { "" }
    );
    if let Some(d) = &s.auto {
        println!(
            "auto chose {}: {} (sample {} bytes, entropy {:.2} bits/byte, LZ4 keeps {:.1}%{})",
            d.codec,
            d.reason,
            d.sample_len,
            d.entropy_bits,
            d.lz4_sample_ratio * 100.0,
            d.zstd_sample_ratio
                .map(|z| format!(", zstd -1 keeps {:.1}%", z * 100.0))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub fn decompress(args: DecompressArgs) -> anyhow::Result<()> {
    let frame =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let codec = gpu_compress::detect_codec(&frame).with_context(|| {
        format!(
            "{} is neither an LZ4 nor a zstd frame (no magic number)",
            args.input.display()
        )
    })?;
    let start = Instant::now();
    let data = gpu_compress::decompress(codec, &frame)
        .with_context(|| format!("decoding {}", args.input.display()))?;
    let secs = start.elapsed().as_secs_f64();
    chunk_model::json_file::write_bytes_atomic(&args.output, &data)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{} → {}: codec {codec}, engine cpu, {} → {} bytes, {:.1} ms, {:.1} MB/s",
        args.input.display(),
        args.output.display(),
        frame.len(),
        data.len(),
        secs * 1e3,
        mb_per_s(data.len(), secs)
    );
    Ok(())
}

/// Decimal megabytes per second, as the reference tools count.
pub fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}
