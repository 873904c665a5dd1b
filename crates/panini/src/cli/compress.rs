//! `panini compress` / `panini decompress`: one file through gpu-compress, with the
//! engine, device and numbers printed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use gpu_compress::{CodecChoice, Compressor, CompressorConfig, EngineChoice};

/// `panini compress INPUT -o OUTPUT`.
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

/// `panini decompress INPUT -o OUTPUT`: the codec is read from the frame's magic number.
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
    // Streamed: reading, compressing and writing overlap and memory stays bounded, instead
    // of reading the whole file, compressing it, then writing it (see `compress_stream`).
    let input = std::fs::File::open(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    let len = input
        .metadata()
        .with_context(|| format!("reading the size of {}", args.input.display()))?
        .len();
    let dir = match args.output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    // Atomic like `json_file::write_bytes_atomic`: a temporary file beside the output,
    // fsynced, renamed over it; a failure leaves no partial frame behind.
    let temp = tempfile::Builder::new()
        .prefix(".panini-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let stats = compressor
        .compress_stream(input, len, WritebackAhead::new(temp.as_file()))
        .with_context(|| format!("compressing {}", args.input.display()))?;
    temp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", temp.path().display()))?;
    temp.persist(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    chunk_model::json_file::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    let s = &stats;
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

/// A [`Write`] to a file that asks the kernel to start writing each [`WritebackAhead::STEP`]
/// bytes to disk as soon as they are written (`fs_batch::start_writeback`, which does
/// not wait), so the disk works while compression goes on and the closing
/// `fsync` waits for the last step only instead of the whole output: that `fsync` was
/// 10–15% of the command on a 50 MB file here. Durability still comes from the `fsync`;
/// this only moves the disk's work earlier.
struct WritebackAhead<'a> {
    file: &'a std::fs::File,
    written: u64,
    flushed: u64,
}

impl<'a> WritebackAhead<'a> {
    /// Large enough that each call covers many pages, small enough to start early.
    const STEP: u64 = 1 << 20;

    fn new(file: &'a std::fs::File) -> Self {
        WritebackAhead {
            file,
            written: 0,
            flushed: 0,
        }
    }

    fn start_writeback(&mut self) {
        chunk_model::fs_batch::start_writeback(
            self.file,
            self.flushed,
            self.written - self.flushed,
        );
        self.flushed = self.written;
    }
}

impl Write for WritebackAhead<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed >= Self::STEP {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decimal megabytes per second, as the reference tools count.
fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}
