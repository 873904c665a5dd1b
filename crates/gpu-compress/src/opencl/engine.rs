//! The OpenCL engine: one kernel launch compresses every 64 KiB block of a batch of chunks
//! into raw LZ4 blocks; the host wraps them into standard frames.
//!
//! Two traps of the `ocl` crate shape this module. `Platform::first()` sleeps ~10 s and
//! `Platform::list()` panics when no OpenCL platform is installed, so the platform count is
//! probed with `clGetPlatformIDs` first. Several threads creating contexts at once fail on
//! PoCL, so the engine is built once per process (`OnceLock`) and every launch goes through
//! one mutex-guarded queue.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use ocl::enums::{DeviceInfo, DeviceInfoResult};
use ocl::flags::{DeviceType, MemFlags};
use ocl::{Buffer, Context, Device, Kernel, Platform, Program, Queue};
use rayon::prelude::*;
use xxhash_rust::xxh32::xxh32;

use super::{DEVICE_ENV, DeviceDescription, Timings};
use crate::CompressError;
use crate::lz4::{self, BLOCK_SIZE};

const KERNEL_SRC: &str = include_str!("../kernels/lz4_blocks.cl");
/// Local memory one work-item's hash table takes (4096 × u16).
const TABLE_BYTES: u64 = 4096 * 2;
/// Upper bound on input bytes per launch, so input and output buffers stay allocatable.
const MAX_LAUNCH_BYTES: u64 = 1 << 30;

struct State {
    queue: Queue,
    program: Program,
}

/// The process-wide OpenCL engine.
pub(crate) struct ClEngine {
    description: DeviceDescription,
    max_launch_bytes: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for ClEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClEngine")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

static ENGINE: OnceLock<Result<ClEngine, String>> = OnceLock::new();

/// The device an engine is built on, found but not set up yet.
#[derive(Clone)]
pub(crate) struct Candidate {
    platform: Platform,
    device: Device,
    platform_name: String,
    /// The device's name.
    pub(crate) name: String,
    /// A GPU or an accelerator, not a CPU implementation.
    pub(crate) is_gpu: bool,
}

static CANDIDATE: OnceLock<Result<Candidate, String>> = OnceLock::new();

/// The device [`shared`] builds its engine on, found on first use without building
/// anything: `auto` looks at it first, so that on a machine whose only device is a CPU
/// implementation (PoCL) the kernel is never compiled, which takes LLVM's time and memory
/// (issue #17).
pub(crate) fn candidate() -> Result<&'static Candidate, String> {
    CANDIDATE.get_or_init(pick).as_ref().map_err(Clone::clone)
}

/// The shared engine, set up on first use; the error says why none is available.
pub(crate) fn shared() -> Result<&'static ClEngine, String> {
    ENGINE.get_or_init(init).as_ref().map_err(Clone::clone)
}

/// See [`super::device`].
pub(super) fn device() -> Result<DeviceDescription, CompressError> {
    shared()
        .map(|e| e.description.clone())
        .map_err(CompressError::OpenClUnavailable)
}

/// Whether the user picked a device explicitly through [`DEVICE_ENV`].
pub(crate) fn device_chosen_by_env() -> bool {
    std::env::var_os(DEVICE_ENV).is_some_and(|v| !v.is_empty())
}

fn platform_count() -> u32 {
    let mut n: ocl::ffi::cl_uint = 0;
    // SAFETY: asking only for the count, with a null list of length 0 and a valid pointer to
    // the count, is the documented way to size the list; nothing else is read or written.
    let status = unsafe { ocl::ffi::clGetPlatformIDs(0, std::ptr::null_mut(), &mut n) };
    if status == 0 { n } else { 0 }
}

fn pick() -> Result<Candidate, String> {
    if platform_count() == 0 {
        return Err("no OpenCL platform is installed (clGetPlatformIDs found none; Debian: pocl-opencl-icd or a GPU driver's ICD)".into());
    }
    let platforms =
        ocl::core::get_platform_ids().map_err(|e| format!("listing OpenCL platforms: {e}"))?;
    let mut all: Vec<Candidate> = Vec::new();
    for platform in platforms.into_iter().map(Platform::new) {
        let platform_name = platform.name().unwrap_or_default();
        // A platform with no devices answers with an error; skip it rather than fail.
        for device in Device::list_all(platform).unwrap_or_default() {
            let is_gpu = matches!(device.info(DeviceInfo::Type), Ok(DeviceInfoResult::Type(t)) if t.intersects(DeviceType::GPU | DeviceType::ACCELERATOR));
            all.push(Candidate {
                platform,
                device,
                platform_name: platform_name.clone(),
                name: device.name().unwrap_or_default(),
                is_gpu,
            });
        }
    }
    if all.is_empty() {
        return Err("OpenCL platforms exist but expose no device".into());
    }
    let pick = match std::env::var(DEVICE_ENV).ok().filter(|v| !v.is_empty()) {
        Some(want) => match want.parse::<usize>() {
            Ok(i) => all
                .get(i)
                .ok_or_else(|| format!("{DEVICE_ENV}={want}: only {} OpenCL devices", all.len()))?,
            Err(_) => {
                let w = want.to_lowercase();
                all.iter()
                    .find(|c| {
                        c.name.to_lowercase().contains(&w)
                            || c.platform_name.to_lowercase().contains(&w)
                    })
                    .ok_or_else(|| {
                        format!(
                            "{DEVICE_ENV}={want}: no OpenCL device or platform name contains it"
                        )
                    })?
            }
        },
        // GPUs first; among equals the driver's order.
        None => all.iter().find(|c| c.is_gpu).unwrap_or(&all[0]),
    };
    Ok(pick.clone())
}

fn init() -> Result<ClEngine, String> {
    let c = candidate()?.clone();
    let name = c.name.clone();
    build(c.platform, c.device, c.platform_name, c.name, c.is_gpu)
        .map_err(|e| format!("setting up OpenCL device {name:?}: {e}"))
}

fn build(
    platform: Platform,
    device: Device,
    pname: String,
    dname: String,
    is_gpu: bool,
) -> ocl::Result<ClEngine> {
    let local_mem = match device.info(DeviceInfo::LocalMemSize)? {
        DeviceInfoResult::LocalMemSize(n) => n,
        _ => 32 << 10,
    };
    let max_alloc = match device.info(DeviceInfo::MaxMemAllocSize)? {
        DeviceInfoResult::MaxMemAllocSize(n) => n,
        _ => 128 << 20,
    };
    // As many hash tables as local memory holds, at most 64 work-items per group.
    let wg = ((local_mem / TABLE_BYTES) as usize)
        .clamp(1, 64)
        .min(device.max_wg_size()?.max(1));
    let wg = 1usize << wg.ilog2();
    let context = Context::builder()
        .platform(platform)
        .devices(device)
        .build()?;
    let program = Program::builder()
        .devices(device)
        .src(KERNEL_SRC)
        .cmplr_opt(format!("-D BLOCK_SIZE={BLOCK_SIZE} -D WG_SIZE={wg}"))
        .build(&context)?;
    let queue = Queue::new(&context, device, None)?;
    let max_launch_bytes = (max_alloc / BLOCK_SIZE as u64 * BLOCK_SIZE as u64)
        .clamp(BLOCK_SIZE as u64, MAX_LAUNCH_BYTES);
    tracing::debug!(device = %dname, platform = %pname, work_group = wg, local_mem, max_alloc, "OpenCL engine ready");
    Ok(ClEngine {
        description: DeviceDescription {
            name: dname,
            platform: pname,
            is_gpu,
            work_group_size: wg,
        },
        max_launch_bytes,
        state: Mutex::new(State { queue, program }),
    })
}

/// A launch's output slots (one per block, `BLOCK_SIZE` apart) and compressed lengths
/// (0: the block did not shrink).
type LaunchOutput = (Vec<u8>, Vec<u32>);

/// One 64 KiB (or shorter, last) block of one chunk.
struct BlockRef {
    chunk: usize,
    start: usize,
    len: usize,
}

/// See [`super::compress_frames_timed`].
pub(super) fn compress_frames_timed(
    chunks: &[&[u8]],
) -> Result<(Vec<Vec<u8>>, Timings), CompressError> {
    shared()
        .map_err(CompressError::OpenClUnavailable)?
        .compress_frames(chunks)
}

impl ClEngine {
    pub(crate) fn description(&self) -> &DeviceDescription {
        &self.description
    }

    /// Compresses each chunk into an LZ4 frame; all blocks of all chunks share launches
    /// (one launch unless they exceed the per-launch memory bound).
    pub(crate) fn compress_frames(
        &self,
        chunks: &[&[u8]],
    ) -> Result<(Vec<Vec<u8>>, Timings), CompressError> {
        let mut timings = Timings::default();
        let blocks: Vec<BlockRef> = chunks
            .iter()
            .enumerate()
            .flat_map(|(chunk, c)| {
                (0..c.len()).step_by(BLOCK_SIZE).map(move |start| BlockRef {
                    chunk,
                    start,
                    len: BLOCK_SIZE.min(c.len() - start),
                })
            })
            .collect();

        // Content checksums run on the CPU while the device compresses.
        let (checksums, launched) = rayon::join(
            || chunks.par_iter().map(|c| xxh32(c, 0)).collect::<Vec<u32>>(),
            || -> Result<Vec<LaunchOutput>, CompressError> {
                let mut results = Vec::new();
                let mut i = 0;
                while i < blocks.len() {
                    let mut bytes = 0u64;
                    let mut j = i;
                    while j < blocks.len() && bytes + blocks[j].len as u64 <= self.max_launch_bytes
                    {
                        bytes += blocks[j].len as u64;
                        j += 1;
                    }
                    results.push(self.launch(chunks, &blocks[i..j], &mut timings)?);
                    i = j;
                }
                Ok(results)
            },
        );
        let launched = launched?;

        let t = Instant::now();
        let mut frames: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| {
                let mut f = Vec::with_capacity(lz4::frame_overhead(c.len()) + c.len() / 2);
                lz4::write_header(&mut f, c.len() as u64);
                f
            })
            .collect();
        let mut next = blocks.iter();
        for (out, lens) in &launched {
            for (slot, &n) in lens.iter().enumerate() {
                let b = next.next().expect("one length per block");
                let raw = &chunks[b.chunk][b.start..b.start + b.len];
                let compressed =
                    (n > 0).then(|| &out[slot * BLOCK_SIZE..slot * BLOCK_SIZE + n as usize]);
                lz4::write_block(&mut frames[b.chunk], raw, compressed);
            }
        }
        for (f, sum) in frames.iter_mut().zip(checksums) {
            lz4::write_trailer(f, sum);
        }
        timings.assemble = t.elapsed();
        Ok((frames, timings))
    }

    /// One kernel launch over `blocks`; returns the output slots and the per-block lengths.
    fn launch(
        &self,
        chunks: &[&[u8]],
        blocks: &[BlockRef],
        timings: &mut Timings,
    ) -> Result<LaunchOutput, CompressError> {
        let err = |operation: &'static str| {
            move |e: ocl::Error| CompressError::OpenCl {
                operation,
                message: e.to_string(),
            }
        };
        let total: usize = blocks.iter().map(|b| b.len).sum();
        let mut offsets = Vec::with_capacity(blocks.len());
        let mut acc = 0u64;
        for b in blocks {
            offsets.push(acc);
            acc += b.len as u64;
        }
        let lens: Vec<u32> = blocks.iter().map(|b| b.len as u32).collect();
        let n = blocks.len();

        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let q = &state.queue;
        let t = Instant::now();
        let src = Buffer::<u8>::builder()
            .queue(q.clone())
            .flags(MemFlags::new().read_only())
            .len(total)
            .build()
            .map_err(err("allocate input buffer"))?;
        // Blocks of one chunk are contiguous in the launch: one write per chunk segment.
        let mut k = 0;
        while k < n {
            let mut end = k;
            while end + 1 < n && blocks[end + 1].chunk == blocks[k].chunk {
                end += 1;
            }
            let c = blocks[k].chunk;
            let seg = &chunks[c][blocks[k].start..blocks[end].start + blocks[end].len];
            src.write(seg)
                .offset(offsets[k] as usize)
                .enq()
                .map_err(err("upload input"))?;
            k = end + 1;
        }
        let offs = Buffer::<u64>::builder()
            .queue(q.clone())
            .flags(MemFlags::new().read_only())
            .len(n)
            .copy_host_slice(&offsets)
            .build()
            .map_err(err("upload block offsets"))?;
        let lbuf = Buffer::<u32>::builder()
            .queue(q.clone())
            .flags(MemFlags::new().read_only())
            .len(n)
            .copy_host_slice(&lens)
            .build()
            .map_err(err("upload block lengths"))?;
        let dst = Buffer::<u8>::builder()
            .queue(q.clone())
            .flags(MemFlags::new().write_only())
            .len(n * BLOCK_SIZE)
            .build()
            .map_err(err("allocate output buffer"))?;
        let out_lens = Buffer::<u32>::builder()
            .queue(q.clone())
            .flags(MemFlags::new().write_only())
            .len(n)
            .build()
            .map_err(err("allocate length buffer"))?;
        q.finish().map_err(err("upload"))?;
        timings.upload += t.elapsed();

        let wg = self.description.work_group_size;
        let t = Instant::now();
        let kernel = Kernel::builder()
            .program(&state.program)
            .name("lz4_compress_blocks")
            .queue(q.clone())
            .global_work_size(n.div_ceil(wg) * wg)
            .local_work_size(wg)
            .arg(&src)
            .arg(&offs)
            .arg(&lbuf)
            .arg(&dst)
            .arg(&out_lens)
            .arg(n as u32)
            .build()
            .map_err(err("create kernel"))?;
        // SAFETY: every buffer argument is sized for `n` blocks as the kernel indexes them
        // (offsets/lengths: n entries; dst: n slots of BLOCK_SIZE; src covers every offset +
        // length), and work-items beyond `n` return before touching memory.
        unsafe { kernel.enq() }.map_err(err("run kernel"))?;
        q.finish().map_err(err("run kernel"))?;
        timings.kernel += t.elapsed();
        timings.launches += 1;

        let t = Instant::now();
        let mut out = vec![0u8; n * BLOCK_SIZE];
        let mut out_n = vec![0u32; n];
        dst.read(&mut out).enq().map_err(err("download output"))?;
        out_lens
            .read(&mut out_n)
            .enq()
            .map_err(err("download lengths"))?;
        timings.download += t.elapsed();
        if let Some((i, &bad)) = out_n
            .iter()
            .enumerate()
            .find(|&(i, &m)| m as usize >= lens[i] as usize && m != 0)
        {
            return Err(CompressError::OpenCl {
                operation: "check kernel output",
                message: format!(
                    "block {i} reports {bad} compressed bytes for {} input bytes",
                    lens[i]
                ),
            });
        }
        Ok((out, out_n))
    }
}
