//! Compresses chunks into standard LZ4 and zstd frames, on an OpenCL device or on the CPU,
//! and decompresses them.
//!
//! This crate's one job is bytes in, frame out (and back): every frame it writes is one the
//! reference `lz4 -d` / `zstd -d` decode byte-identically, and every frame those tools write
//! decodes here. Engines only differ in *where* LZ4 blocks are compressed: the CPU engine
//! spreads 64 KiB blocks over rayon's threads (C liblz4 encodes, `lz4_flex` decodes), the
//! OpenCL engine (cargo feature `opencl`) compresses all blocks of a batch of chunks in one
//! kernel launch; the frame around the blocks is assembled by the same host code.
//!
//! It must never know where bytes come from or go to: no files, chunk metadata, storage or
//! network. Callers hand it slices, or any reader and writer for inputs too large to hold
//! ([`Compressor::compress_stream`]), and get back frames and [`CompressStats`].

mod auto;
mod error;
mod lz4;
pub mod opencl;
mod pipeline;
mod zstd_codec;

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;
use std::time::{Duration, Instant};

pub use chunk_model::Codec;
use rayon::prelude::*;

pub use auto::AutoDecision;
pub use error::CompressError;
pub use lz4::{BLOCK_SIZE as LZ4_BLOCK_SIZE, LZ4_MAGIC};
pub use zstd_codec::ZSTD_MAGIC;

/// zstd level used when none is configured (the `zstd` tool's default too).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Which codec a [`Compressor`] uses: a fixed one, or `auto` per chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodecChoice {
    /// Always this codec.
    Fixed(Codec),
    /// Per chunk from a sample: store what will not shrink, zstd where its extra ratio pays,
    /// LZ4 for the rest.
    #[default]
    Auto,
}

impl FromStr for CodecChoice {
    type Err = CompressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(CodecChoice::Auto),
            "lz4" => Ok(CodecChoice::Fixed(Codec::Lz4)),
            "zstd" => Ok(CodecChoice::Fixed(Codec::Zstd)),
            "store" => Ok(CodecChoice::Fixed(Codec::Store)),
            other => Err(CompressError::InvalidConfig(format!(
                "codec {other:?}: expected lz4, zstd, store or auto"
            ))),
        }
    }
}

impl fmt::Display for CodecChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecChoice::Fixed(c) => c.fmt(f),
            CodecChoice::Auto => f.write_str("auto"),
        }
    }
}

/// Which engine a [`Compressor`] should use for LZ4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// OpenCL when a GPU (or accelerator) is present or `PANINI_OPENCL_DEVICE` names a device,
    /// else the CPU, with the reason logged once.
    #[default]
    Auto,
    /// rayon threads with C liblz4.
    Cpu,
    /// The OpenCL kernel; building the compressor fails when no device is usable.
    OpenCl,
}

impl FromStr for EngineChoice {
    type Err = CompressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(EngineChoice::Auto),
            "cpu" => Ok(EngineChoice::Cpu),
            "opencl" => Ok(EngineChoice::OpenCl),
            other => Err(CompressError::InvalidConfig(format!(
                "engine {other:?}: expected auto, cpu or opencl"
            ))),
        }
    }
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Cpu => "cpu",
            EngineChoice::OpenCl => "opencl",
        })
    }
}

/// The engine that actually ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Host CPU threads (LZ4 through rayon + C liblz4; zstd through its own threads; store).
    Cpu,
    /// The OpenCL kernel.
    OpenCl,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Cpu => "cpu",
            Engine::OpenCl => "opencl",
        })
    }
}

/// How to compress; build a [`Compressor`] from it once and share that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompressorConfig {
    /// Codec, or `auto`.
    pub codec: CodecChoice,
    /// zstd level (default [`DEFAULT_ZSTD_LEVEL`]). LZ4 has one speed here, that of `lz4 -1`,
    /// so the level does not change LZ4 output.
    pub level: Option<i32>,
    /// Engine for LZ4.
    pub engine: EngineChoice,
    /// Decode every frame and compare it with the input before returning it.
    pub verify: bool,
}

/// What one compression did.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressStats {
    /// Codec of the frame.
    pub codec: Codec,
    /// Engine that produced it.
    pub engine: Engine,
    /// Device that ran: the OpenCL device name, or `cpu (N threads)`.
    pub device: String,
    /// Input bytes.
    pub input_len: usize,
    /// Frame bytes.
    pub output_len: usize,
    /// `input_len / output_len` (higher is better; 1.0 for empty input).
    pub ratio: f64,
    /// Wall time. In a batch, the batch's wall time shared out by input size.
    pub elapsed: Duration,
    /// Why `auto` picked the codec; `None` for a fixed codec.
    pub auto: Option<AutoDecision>,
    /// Whether the frame was decoded and compared with the input.
    pub verified: bool,
}

/// A frame and how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Compressed {
    /// Codec of `bytes`.
    pub codec: Codec,
    /// The frame (or, for `store`, the input itself).
    pub bytes: Vec<u8>,
    /// Statistics of this call.
    pub stats: CompressStats,
}

#[derive(Debug, Clone, Copy)]
enum EngineImpl {
    Cpu,
    #[cfg(panini_opencl)]
    OpenCl(&'static opencl::engine::ClEngine),
}

/// Compresses chunks with one configuration. Cheap to share: `Send + Sync`, and the OpenCL
/// engine behind it is one per process.
#[derive(Debug)]
pub struct Compressor {
    config: CompressorConfig,
    level: i32,
    engine: EngineImpl,
    engine_note: Option<String>,
    zstd_threads: u32,
}

impl Compressor {
    /// Checks the configuration and sets up the engine (OpenCL device discovery and kernel
    /// build happen here, once per process).
    pub fn new(config: CompressorConfig) -> Result<Self, CompressError> {
        let level = config.level.unwrap_or(DEFAULT_ZSTD_LEVEL);
        let range = zstd::compression_level_range();
        if !range.contains(&level) {
            return Err(CompressError::InvalidConfig(format!(
                "zstd level {level} outside {}..={}",
                range.start(),
                range.end()
            )));
        }
        let (engine, engine_note) = select_engine(config.engine)?;
        let zstd_threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Ok(Compressor {
            config,
            level,
            engine,
            engine_note,
            zstd_threads,
        })
    }

    /// The configuration this compressor was built from.
    pub fn config(&self) -> &CompressorConfig {
        &self.config
    }

    /// The engine LZ4 work goes to.
    pub fn engine(&self) -> Engine {
        match self.engine {
            EngineImpl::Cpu => Engine::Cpu,
            #[cfg(panini_opencl)]
            EngineImpl::OpenCl(_) => Engine::OpenCl,
        }
    }

    /// Why `--engine auto` settled on the CPU, when it did (the same words it logged).
    pub fn engine_note(&self) -> Option<&str> {
        self.engine_note.as_deref()
    }

    /// Name of the device LZ4 work goes to.
    pub fn device(&self) -> String {
        match self.engine {
            EngineImpl::Cpu => cpu_device(),
            #[cfg(panini_opencl)]
            EngineImpl::OpenCl(e) => e.description().name.clone(),
        }
    }

    /// Compresses one chunk.
    pub fn compress(&self, data: &[u8]) -> Result<Compressed, CompressError> {
        let start = Instant::now();
        let (codec, auto, trial) = self.choose(data);
        let (codec, bytes, engine) = match codec {
            Codec::Lz4 => {
                let (bytes, engine) = self.lz4(data)?;
                (Codec::Lz4, bytes, engine)
            }
            other => {
                let bytes = self.cpu_frame(other, data, trial)?;
                (other, bytes, Engine::Cpu)
            }
        };
        self.finish(data, codec, bytes, engine, auto, start.elapsed())
    }

    /// Compresses many chunks at once. With the OpenCL engine, every LZ4 block of every chunk
    /// goes to the device in one launch (split only if the batch exceeds the device's buffer
    /// limit), so small chunks do not pay a launch each; zstd and store chunks run on the CPU
    /// meanwhile.
    pub fn compress_batch(&self, chunks: &[&[u8]]) -> Result<Vec<Compressed>, CompressError> {
        let start = Instant::now();
        // Each chunk's codec, and its zstd frame when `auto`'s trial made it.
        let (choices, mut trials): (Vec<(Codec, Option<AutoDecision>)>, Vec<_>) = chunks
            .par_iter()
            .map(|c| {
                let (codec, auto, trial) = self.choose(c);
                ((codec, auto), trial)
            })
            .unzip();
        let mut frames: Vec<Option<(Vec<u8>, Engine)>> = vec![None; chunks.len()];
        match self.engine {
            #[cfg(panini_opencl)]
            EngineImpl::OpenCl(cl) => {
                let lz4_idx: Vec<usize> = (0..chunks.len())
                    .filter(|&i| choices[i].0 == Codec::Lz4)
                    .collect();
                let lz4_chunks: Vec<&[u8]> = lz4_idx.iter().map(|&i| chunks[i]).collect();
                let (gpu, cpu) = rayon::join(
                    || {
                        if lz4_chunks.is_empty() {
                            Ok((Vec::new(), Default::default()))
                        } else {
                            cl.compress_frames(&lz4_chunks)
                        }
                    },
                    || {
                        trials
                            .par_iter_mut()
                            .enumerate()
                            .filter(|(i, _)| choices[*i].0 != Codec::Lz4)
                            .map(|(i, trial)| {
                                Ok((i, self.cpu_frame(choices[i].0, chunks[i], trial.take())?))
                            })
                            .collect::<Result<Vec<_>, CompressError>>()
                    },
                );
                for (&i, f) in lz4_idx.iter().zip(gpu?.0) {
                    frames[i] = Some((f, Engine::OpenCl));
                }
                for (i, f) in cpu? {
                    frames[i] = Some((f, Engine::Cpu));
                }
            }
            EngineImpl::Cpu => {
                let done = chunks
                    .par_iter()
                    .zip(&choices)
                    .zip(trials.par_iter_mut())
                    .map(|((c, (codec, _)), trial)| match codec {
                        Codec::Lz4 => lz4::compress_cpu(c),
                        other => self.cpu_frame(*other, c, trial.take()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                for (slot, f) in frames.iter_mut().zip(done) {
                    *slot = Some((f, Engine::Cpu));
                }
            }
        }
        let elapsed = start.elapsed();
        let total: usize = chunks.iter().map(|c| c.len()).sum::<usize>().max(1);
        chunks
            .par_iter()
            .zip(choices.into_par_iter())
            .zip(frames.into_par_iter())
            .map(|((data, (codec, auto)), frame)| {
                let (bytes, engine) = frame.expect("every chunk compressed");
                let share = elapsed.mul_f64(data.len() as f64 / total as f64);
                self.finish(data, codec, bytes, engine, auto, share)
            })
            .collect()
    }

    /// Compresses `len` bytes read from `input` into one frame written to `output`: the same
    /// frame [`Compressor::compress`] makes of those bytes, for inputs of any size.
    ///
    /// For a fixed codec on the CPU the bytes stream through with bounded memory (a few tens
    /// of MiB) and reading, compressing and writing overlap: LZ4 in segments of a few blocks
    /// per rayon thread, zstd through its own worker threads. `auto` (whose last rule
    /// needs the whole frame before choosing), `verify` and the OpenCL engine (one launch
    /// per chunk) read the whole input into memory first and compress it as
    /// [`Compressor::compress`] does.
    ///
    /// `len` goes into the frame header; an input that turns out shorter or longer is
    /// [`CompressError::InputLength`]. On any error the output holds a partial frame that
    /// the caller must discard (write to a temporary file, rename on success).
    pub fn compress_stream<R, W>(
        &self,
        mut input: R,
        len: u64,
        mut output: W,
    ) -> Result<CompressStats, CompressError>
    where
        R: Read + Send,
        W: Write + Send,
    {
        let start = Instant::now();
        let streamed = match (self.config.codec, self.engine) {
            _ if self.config.verify => None,
            (CodecChoice::Fixed(Codec::Lz4), EngineImpl::Cpu) => Some(Codec::Lz4),
            (CodecChoice::Fixed(c @ (Codec::Zstd | Codec::Store)), _) => Some(c),
            _ => None,
        };
        let Some(codec) = streamed else {
            let data = read_exact_len(input, len)?;
            let out = self.compress(&data)?;
            output
                .write_all(&out.bytes)
                .and_then(|()| output.flush())
                .map_err(|source| CompressError::Io {
                    operation: "writing the output",
                    source,
                })?;
            let mut stats = out.stats;
            stats.elapsed = start.elapsed();
            return Ok(stats);
        };
        let output_len = match codec {
            Codec::Lz4 => lz4::compress_stream(input, len, output)?,
            Codec::Zstd => {
                zstd_codec::compress_stream(input, len, output, self.level, self.zstd_threads)?
            }
            Codec::Store => {
                let copied = io::copy(&mut (&mut input).take(len.saturating_add(1)), &mut output)
                    .and_then(|n| output.flush().map(|()| n))
                    .map_err(|source| CompressError::Io {
                        operation: "copying the input to the output",
                        source,
                    })?;
                if copied != len {
                    return Err(CompressError::InputLength {
                        expected: len,
                        read: copied,
                    });
                }
                copied
            }
        };
        let (input_len, output_len) = (len as usize, output_len as usize);
        Ok(CompressStats {
            codec,
            engine: Engine::Cpu,
            device: cpu_device(),
            input_len,
            output_len,
            ratio: if output_len == 0 {
                1.0
            } else {
                input_len as f64 / output_len as f64
            },
            elapsed: start.elapsed(),
            auto: None,
            verified: false,
        })
    }

    /// The codec for `data`, why `auto` chose it, and the zstd frame its trial made.
    fn choose(&self, data: &[u8]) -> (Codec, Option<AutoDecision>, Option<Vec<u8>>) {
        match self.config.codec {
            CodecChoice::Fixed(c) => (c, None, None),
            CodecChoice::Auto => {
                let choice = auto::choose(data, self.level);
                let codec = choice.decision.codec;
                (codec, Some(choice.decision), choice.zstd_frame)
            }
        }
    }

    /// [`Compressor::cpu_codec`], or the zstd frame `auto`'s trial already made of
    /// `data` at this compressor's level.
    fn cpu_frame(
        &self,
        codec: Codec,
        data: &[u8],
        trial: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CompressError> {
        match (codec, trial) {
            (Codec::Zstd, Some(frame)) => Ok(frame),
            (codec, _) => self.cpu_codec(codec, data),
        }
    }

    fn lz4(&self, data: &[u8]) -> Result<(Vec<u8>, Engine), CompressError> {
        match self.engine {
            EngineImpl::Cpu => Ok((lz4::compress_cpu(data)?, Engine::Cpu)),
            #[cfg(panini_opencl)]
            EngineImpl::OpenCl(cl) => {
                let (mut frames, _) = cl.compress_frames(&[data])?;
                Ok((frames.pop().expect("one frame per chunk"), Engine::OpenCl))
            }
        }
    }

    fn cpu_codec(&self, codec: Codec, data: &[u8]) -> Result<Vec<u8>, CompressError> {
        match codec {
            Codec::Lz4 => lz4::compress_cpu(data),
            Codec::Zstd => zstd_codec::compress(data, self.level, self.zstd_threads),
            Codec::Store => Ok(data.to_vec()),
        }
    }

    /// Applies `auto`'s last rule (a frame no smaller than the input is stored instead),
    /// verifies when asked, and fills in the stats.
    fn finish(
        &self,
        data: &[u8],
        mut codec: Codec,
        mut bytes: Vec<u8>,
        mut engine: Engine,
        mut auto: Option<AutoDecision>,
        elapsed: Duration,
    ) -> Result<Compressed, CompressError> {
        if let Some(d) = auto.as_mut()
            && codec != Codec::Store
            && bytes.len() >= data.len()
        {
            codec = Codec::Store;
            bytes = data.to_vec();
            engine = Engine::Cpu;
            d.codec = Codec::Store;
            d.reason = "the chosen codec's frame was not smaller than the input";
        }
        if self.config.verify {
            verify(codec, &bytes, data)?;
        }
        let device = match engine {
            Engine::Cpu => cpu_device(),
            Engine::OpenCl => self.device(),
        };
        let stats = CompressStats {
            codec,
            engine,
            device,
            input_len: data.len(),
            output_len: bytes.len(),
            ratio: if bytes.is_empty() {
                1.0
            } else {
                data.len() as f64 / bytes.len() as f64
            },
            elapsed,
            auto,
            verified: self.config.verify,
        };
        Ok(Compressed {
            codec,
            bytes,
            stats,
        })
    }
}

/// Most bytes of decoding buffer a thread keeps between [`verify`] calls; a larger one
/// (a rare huge chunk) is freed after its use.
const VERIFY_BUFFER_KEPT: usize = 16 << 20;

thread_local! {
    /// The buffer [`verify`] decodes into, kept per thread: a fresh one per frame would be
    /// page-faulted in (and zeroed by the kernel) every time, a cost as large as a fast
    /// decode's.
    static VERIFY_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Decodes `frame` of `codec` and compares it with `data`, the input it was made from.
///
/// The decode is bounded to `data.len()` bytes: a frame that would decode to more stops
/// there ([`CompressError::OutputLimit`]). A `store` frame is its content (decoding it is
/// the identity), so it is compared as it is.
fn verify(codec: Codec, frame: &[u8], data: &[u8]) -> Result<(), CompressError> {
    let mismatch = |decoded_len| CompressError::VerifyMismatch {
        codec,
        input_len: data.len(),
        decoded_len,
    };
    let decode = match codec {
        Codec::Lz4 => lz4::decompress_into,
        Codec::Zstd => zstd_codec::decompress_into,
        Codec::Store if frame == data => return Ok(()),
        Codec::Store => return Err(mismatch(frame.len())),
    };
    // Taken out of the cell, not borrowed: decoding LZ4 runs on rayon, which may start
    // another verification on this thread meanwhile (that one then uses a buffer of its own).
    let mut decoded = VERIFY_BUFFER.take();
    let outcome = decode(frame, data.len(), &mut decoded).and_then(|()| {
        if decoded == data {
            Ok(())
        } else {
            Err(mismatch(decoded.len()))
        }
    });
    if decoded.capacity() <= VERIFY_BUFFER_KEPT {
        VERIFY_BUFFER.set(decoded);
    }
    outcome
}

/// Reads exactly `len` bytes of `input` into memory; more or fewer is
/// [`CompressError::InputLength`].
fn read_exact_len(input: impl Read, len: u64) -> Result<Vec<u8>, CompressError> {
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    input
        .take(len.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|source| CompressError::Io {
            operation: "reading the input",
            source,
        })?;
    if data.len() as u64 != len {
        return Err(CompressError::InputLength {
            expected: len,
            read: data.len() as u64,
        });
    }
    Ok(data)
}

fn cpu_device() -> String {
    format!("cpu ({} threads)", rayon::current_num_threads())
}

/// Where Linux shows a GPU or accelerator to programs: NVIDIA's nodes, DRM render nodes
/// (AMD, Intel, ARM and most others), AMD's compute node, WSL's GPU, ARM Mali. `*` ends a
/// prefix.
#[cfg(panini_opencl)]
const GPU_DEVICE_NODES: [&str; 5] = [
    "/dev/nvidia*",
    "/dev/dri/renderD*",
    "/dev/kfd",
    "/dev/dxg",
    "/dev/mali*",
];

/// Whether any of [`GPU_DEVICE_NODES`] exists. Elsewhere than Linux there is no such
/// convention: always `true`, and the drivers are asked.
#[cfg(panini_opencl)]
fn gpu_device_node_present() -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    GPU_DEVICE_NODES
        .iter()
        .any(|node| match node.strip_suffix('*') {
            None => std::path::Path::new(node).exists(),
            Some(prefix) => {
                let (dir, name) = prefix.rsplit_once('/').unwrap_or(("/", prefix));
                std::fs::read_dir(dir).is_ok_and(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(name))
                })
            }
        })
}

/// Picks the engine; for `auto` also the reason it fell back to the CPU, logged once here.
#[cfg(panini_opencl)]
fn select_engine(choice: EngineChoice) -> Result<(EngineImpl, Option<String>), CompressError> {
    let reason = match choice {
        EngineChoice::Cpu => return Ok((EngineImpl::Cpu, None)),
        EngineChoice::OpenCl => {
            return opencl::engine::shared()
                .map(|e| (EngineImpl::OpenCl(e), None))
                .map_err(CompressError::OpenClUnavailable);
        }
        // Loading the OpenCL drivers costs tens of milliseconds and, with PoCL's LLVM,
        // tens of MiB of memory (issue #17); without a GPU to be found they are not loaded.
        EngineChoice::Auto
            if !opencl::engine::device_chosen_by_env() && !gpu_device_node_present() =>
        {
            format!(
                "no GPU device node ({}), so the OpenCL drivers were not loaded; set {}=<index|name> or --engine opencl to use a CPU implementation such as PoCL",
                GPU_DEVICE_NODES.join(", "),
                opencl::DEVICE_ENV
            )
        }
        EngineChoice::Auto => match opencl::engine::candidate() {
            Ok(c) if c.is_gpu || opencl::engine::device_chosen_by_env() => {
                match opencl::engine::shared() {
                    Ok(e) => return Ok((EngineImpl::OpenCl(e), None)),
                    Err(reason) => reason,
                }
            }
            // PoCL and other CPU implementations run the kernel on the same cores rayon uses,
            // slower than the CPU engine; they are for tests and explicit requests. Their
            // engine is not even built.
            Ok(c) => format!(
                "the only OpenCL device, {:?}, is a CPU implementation, slower than the native CPU engine; set {}=<index|name> or --engine opencl to use it",
                c.name,
                opencl::DEVICE_ENV
            ),
            Err(reason) => reason,
        },
    };
    tracing::info!(%reason, "engine auto: using the CPU engine");
    Ok((EngineImpl::Cpu, Some(reason)))
}

/// Picks the engine; without the `opencl` feature only the CPU exists.
#[cfg(not(panini_opencl))]
fn select_engine(choice: EngineChoice) -> Result<(EngineImpl, Option<String>), CompressError> {
    const WHY: &str = opencl::NOT_BUILT;
    match choice {
        EngineChoice::Cpu => Ok((EngineImpl::Cpu, None)),
        EngineChoice::OpenCl => Err(CompressError::OpenClUnavailable(WHY.into())),
        EngineChoice::Auto => {
            tracing::info!(reason = WHY, "engine auto: using the CPU engine");
            Ok((EngineImpl::Cpu, Some(WHY.into())))
        }
    }
}

/// Decodes a frame of `codec` on the CPU. `store` returns the bytes as they are. Truncated
/// or corrupt frames are a typed error, never a panic or wrong bytes (every checksum the
/// frame carries is checked).
///
/// The output is as large as the frame says: a frame of a few KiB can decode to GiB. For
/// a frame from outside (a stored object, a request) use [`decompress_bounded`] with the
/// size the content must have.
pub fn decompress(codec: Codec, frame: &[u8]) -> Result<Vec<u8>, CompressError> {
    decompress_bounded(codec, frame, usize::MAX)
}

/// [`decompress`] into at most `max_output` bytes: the output buffer is never allocated
/// larger, and decoding stops with [`CompressError::OutputLimit`] at the first byte beyond
/// it (a `store` object longer than `max_output` is refused without a copy). Pass the
/// size the content is known to have (a recipe's or a chunk's size); the caller still
/// compares the result's length and hash with what it expects.
pub fn decompress_bounded(
    codec: Codec,
    frame: &[u8],
    max_output: usize,
) -> Result<Vec<u8>, CompressError> {
    match codec {
        Codec::Lz4 => lz4::decompress(frame, max_output),
        Codec::Zstd => zstd_codec::decompress(frame, max_output),
        Codec::Store if frame.len() > max_output => Err(CompressError::OutputLimit {
            codec,
            limit: max_output as u64,
        }),
        Codec::Store => Ok(frame.to_vec()),
    }
}

/// The codec of a frame from its magic number; `None` for anything else (a `store` object
/// has no header, so it is never detected).
pub fn detect_codec(frame: &[u8]) -> Option<Codec> {
    let magic = u32::from_le_bytes(frame.get(..4)?.try_into().ok()?);
    match magic {
        LZ4_MAGIC => Some(Codec::Lz4),
        ZSTD_MAGIC => Some(Codec::Zstd),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn compressor_is_shareable() {
        assert_send_sync::<Compressor>();
    }

    #[test]
    fn choices_parse_and_print() {
        for s in ["auto", "lz4", "zstd", "store"] {
            assert_eq!(s.parse::<CodecChoice>().unwrap().to_string(), s);
        }
        for s in ["auto", "cpu", "opencl"] {
            assert_eq!(s.parse::<EngineChoice>().unwrap().to_string(), s);
        }
        assert!("gzip".parse::<CodecChoice>().is_err());
    }

    #[test]
    fn verify_refuses_a_frame_of_more_bytes_even_with_a_larger_buffer_kept() {
        let big: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
        let (data, longer) = (&big[..1 << 20], &big[..(1 << 20) + 1]);
        for codec in [Codec::Lz4, Codec::Zstd] {
            let frame = |content: &[u8]| match codec {
                Codec::Lz4 => lz4::compress_cpu(content).unwrap(),
                _ => zstd_codec::compress(content, 3, 0).unwrap(),
            };
            // Leaves this thread a decoding buffer of 2 MiB.
            verify(codec, &frame(&big), &big).unwrap();
            verify(codec, &frame(data), data).unwrap();
            let err = verify(codec, &frame(longer), data).unwrap_err();
            assert!(
                matches!(err, CompressError::OutputLimit { limit, .. } if limit == 1 << 20),
                "{codec}: {err}"
            );
            let mut other = data.to_vec();
            other[12345] ^= 1;
            let err = verify(codec, &frame(&other), data).unwrap_err();
            assert!(
                matches!(err, CompressError::VerifyMismatch { decoded_len, .. } if decoded_len == 1 << 20),
                "{codec}: {err}"
            );
        }
        verify(Codec::Store, data, data).unwrap();
        assert!(matches!(
            verify(Codec::Store, longer, data),
            Err(CompressError::VerifyMismatch { .. })
        ));
    }

    #[test]
    fn detects_magic_numbers() {
        assert_eq!(detect_codec(&[0x04, 0x22, 0x4D, 0x18, 0]), Some(Codec::Lz4));
        assert_eq!(detect_codec(&[0x28, 0xB5, 0x2F, 0xFD]), Some(Codec::Zstd));
        assert_eq!(detect_codec(b"PNG"), None);
        assert_eq!(detect_codec(b"\x89PNG"), None);
    }
}
