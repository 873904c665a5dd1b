//! `panini compress` / `panini decompress`: one file through gpu-compress, with the
//! engine, device and numbers printed.

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::common::{self, human_bytes, outln};
use anyhow::{Context, bail};
use gpu_compress::{CodecChoice, Compressor, CompressorConfig, EngineChoice};

/// `panini compress INPUT -o OUTPUT`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    panini compress big.log -o big.log.zst --codec zstd\n  \
    tar c photos | panini compress - -o photos.tar.lz4 --codec lz4\n  \
    panini compress notes.txt -o - | wc -c")]
pub struct CompressArgs {
    /// File to compress; `-` reads standard input.
    pub input: PathBuf,
    /// Where to write the frame (atomically); `-` writes standard output.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Which codec; auto chooses from a sample of the input.
    #[arg(long, default_value = "auto", value_parser = super::common::choice::<CodecChoice>(super::common::CODECS))]
    pub codec: CodecChoice,
    /// zstd level (default 3); LZ4 has one level, that of `lz4 -1`.
    #[arg(long)]
    pub level: Option<i32>,
    /// Where LZ4 runs: auto (OpenCL on a GPU, else CPU), cpu, or opencl.
    #[arg(long, default_value = "auto", value_parser = super::common::choice::<EngineChoice>(super::common::ENGINES))]
    pub engine: EngineChoice,
    /// Decode the frame and compare it with the input before writing it.
    #[arg(long)]
    pub verify: bool,
    /// Replace OUTPUT when it exists.
    #[arg(short, long)]
    pub force: bool,
    /// Print the statistics as one JSON document on stdout (needs -o FILE; schema:
    /// docs/schemas/compress_output.schema.json).
    #[arg(long)]
    pub json: bool,
}

/// `panini decompress INPUT -o OUTPUT`: the codec is read from the frame's magic number.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    panini decompress big.log.zst -o big.log\n  \
    panini decompress photos.tar.lz4 -o - | tar x")]
pub struct DecompressArgs {
    /// LZ4 or zstd frame; `-` reads standard input.
    pub input: PathBuf,
    /// Where to write the decoded bytes (atomically); `-` writes standard output.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace OUTPUT when it exists.
    #[arg(short, long)]
    pub force: bool,
}

/// `-` as a path: standard input or output.
fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Refuses to replace an existing output unless `--force` says so.
fn check_output(output: &Path, force: bool) -> anyhow::Result<()> {
    if !is_stdio(output) && !force && std::fs::symlink_metadata(output).is_ok() {
        bail!("{} exists; pass --force to replace it", output.display());
    }
    Ok(())
}

/// All of standard input, or of a file that is not a regular one (a FIFO), whose size
/// is only known once read.
fn read_all(input: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if is_stdio(input) {
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
    } else {
        std::fs::File::open(input)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", input.display()))?;
    }
    Ok(bytes)
}

/// Human lines go to stdout, unless stdout carries the data.
fn say(to_stderr: bool, line: std::fmt::Arguments<'_>) {
    if to_stderr {
        eprintln!("{line}");
    } else {
        outln!("{line}");
    }
}

pub fn compress(args: CompressArgs) -> anyhow::Result<()> {
    let to_stdout = is_stdio(&args.output);
    if args.json && to_stdout {
        bail!("--json prints to standard output, so it needs -o FILE, not -o -");
    }
    check_output(&args.output, args.force)?;
    let config = CompressorConfig {
        codec: args.codec,
        level: args.level,
        engine: args.engine,
        verify: args.verify,
    };
    let compressor = Compressor::new(config).context("setting up the compressor")?;
    if let Some(note) = compressor.engine_note() {
        eprintln!("engine auto → cpu: {note}");
    }
    // A regular file is streamed: reading, compressing and writing overlap and memory
    // stays bounded (see `compress_stream`). Standard input and FIFOs have no size to
    // put in the frame header until read, so they are read whole first.
    let regular = !is_stdio(&args.input)
        && std::fs::metadata(&args.input)
            .with_context(|| format!("opening {}", args.input.display()))?
            .is_file();
    let stats = if to_stdout {
        // `Stdout` (not its lock guard) because the writer must be `Send`.
        let out = std::io::BufWriter::new(std::io::stdout());
        let stats = if regular {
            let input = std::fs::File::open(&args.input)
                .with_context(|| format!("opening {}", args.input.display()))?;
            let len = input.metadata()?.len();
            compressor.compress_stream(input, len, out)
        } else {
            let bytes = read_all(&args.input)?;
            compressor.compress_stream(&bytes[..], bytes.len() as u64, out)
        };
        stats.with_context(|| format!("compressing {}", args.input.display()))?
    } else {
        let dir = match args.output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        // Atomic like `json_file::write_bytes_atomic`: a temporary file beside the
        // output, fsynced, renamed over it; a failure leaves no partial frame behind.
        let temp = tempfile::Builder::new()
            .prefix(".panini-tmp-")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        let stats = if regular {
            let input = std::fs::File::open(&args.input)
                .with_context(|| format!("opening {}", args.input.display()))?;
            let len = input
                .metadata()
                .with_context(|| format!("reading the size of {}", args.input.display()))?
                .len();
            compressor.compress_stream(input, len, WritebackAhead::new(temp.as_file()))
        } else {
            let bytes = read_all(&args.input)?;
            compressor.compress_stream(
                &bytes[..],
                bytes.len() as u64,
                WritebackAhead::new(temp.as_file()),
            )
        }
        .with_context(|| format!("compressing {}", args.input.display()))?;
        temp.as_file()
            .sync_all()
            .with_context(|| format!("syncing {}", temp.path().display()))?;
        // Checked again just before the rename: the output may have appeared meanwhile.
        check_output(&args.output, args.force)?;
        temp.persist(&args.output)
            .with_context(|| format!("writing {}", args.output.display()))?;
        chunk_model::json_file::sync_dir(dir)
            .with_context(|| format!("syncing {}", dir.display()))?;
        stats
    };
    let s = &stats;
    if args.json {
        return common::print_json(&crate::output::CompressOutput {
            input: args.input.clone(),
            output: args.output.clone(),
            codec: s.codec.to_string(),
            engine: s.engine.to_string(),
            device: s.device.clone(),
            input_bytes: s.input_len as u64,
            output_bytes: s.output_len as u64,
            ratio: s.ratio,
            seconds: s.elapsed.as_secs_f64(),
            verified: s.verified,
            auto_reason: s.auto.as_ref().map(|d| d.reason.to_owned()),
        });
    }
    say(
        to_stdout,
        format_args!(
            "{} → {}: codec {}, engine {} on {}, {} → {}, ratio {:.3}, {:.1} ms, {:.1} MB/s{}",
            args.input.display(),
            args.output.display(),
            s.codec,
            s.engine,
            s.device,
            human_bytes(s.input_len as u64),
            human_bytes(s.output_len as u64),
            s.ratio,
            s.elapsed.as_secs_f64() * 1e3,
            mb_per_s(s.input_len, s.elapsed.as_secs_f64()),
            if s.verified { ", verified" } else { "" }
        ),
    );
    if let Some(d) = &s.auto {
        say(
            to_stdout,
            format_args!(
                "auto chose {}: {} (sample {}, entropy {:.2} bits/byte, LZ4 keeps {:.1}%{})",
                d.codec,
                d.reason,
                human_bytes(d.sample_len as u64),
                d.entropy_bits,
                d.lz4_sample_ratio * 100.0,
                d.zstd_sample_ratio
                    .zip(d.zstd_trial_level)
                    .map(|(z, level)| format!(", zstd -{level} keeps {:.1}%", z * 100.0))
                    .unwrap_or_default()
            ),
        );
    }
    Ok(())
}

pub fn decompress(args: DecompressArgs) -> anyhow::Result<()> {
    check_output(&args.output, args.force)?;
    let frame = read_all(&args.input)?;
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
    let to_stdout = is_stdio(&args.output);
    if to_stdout {
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(&data).and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("writing standard output");
        }
    } else {
        chunk_model::json_file::write_bytes_atomic(&args.output, &data)
            .with_context(|| format!("writing {}", args.output.display()))?;
    }
    say(
        to_stdout,
        format_args!(
            "{} → {}: codec {codec}, engine cpu, {} → {}, {:.1} ms, {:.1} MB/s",
            args.input.display(),
            args.output.display(),
            human_bytes(frame.len() as u64),
            human_bytes(data.len() as u64),
            secs * 1e3,
            mb_per_s(data.len(), secs)
        ),
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
