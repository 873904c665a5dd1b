//! `cargo xtask gpu-check`: runs the LZ4 kernel over ≥ 1 GiB on the OpenCL device (a GPU when
//! there is one), checks every frame by decoding it, and prints GB/s.

use anyhow::bail;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// MiB of data to compress.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: usize,
    /// Chunk size for the batch pass (many chunks, one launch), in KiB.
    #[arg(long, default_value_t = 1024)]
    pub chunk_kib: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    use std::time::Instant;

    use anyhow::Context;
    use gpu_compress::{Codec, decompress, opencl};
    use rayon::prelude::*;

    if args.size_mib == 0 || args.chunk_kib == 0 {
        bail!("--size-mib and --chunk-kib must be positive");
    }
    let device = opencl::device().context("no OpenCL device")?;
    println!(
        "device: {} (platform {}, {}, work-group {})",
        device.name,
        device.platform,
        if device.is_gpu {
            "GPU"
        } else {
            "CPU implementation"
        },
        device.work_group_size
    );
    let data = crate::bench_compress::mixed_data(args.size_mib << 20);
    let gb = data.len() as f64 / 1e9;
    println!(
        "input: {} MiB of mixed text, binaries, zeros and random data",
        args.size_mib
    );

    // Warm-up: the first launch pays for buffer allocation and kernel JIT on some drivers.
    opencl::compress_frames_timed(&[&data[..data.len().min(4 << 20)]]).context("warm-up launch")?;

    for (label, chunks) in [
        ("one chunk", vec![&data[..]]),
        (
            "batch",
            data.chunks(args.chunk_kib << 10).collect::<Vec<_>>(),
        ),
    ] {
        let start = Instant::now();
        let (frames, t) = opencl::compress_frames_timed(&chunks)
            .with_context(|| format!("compressing ({label})"))?;
        let total = start.elapsed().as_secs_f64();
        let out: usize = frames.iter().map(Vec::len).sum();
        let bad = frames
            .par_iter()
            .zip(&chunks)
            .filter(|(f, c)| decompress(Codec::Lz4, f).map_or(true, |d| d != **c))
            .count();
        if bad > 0 {
            bail!(
                "{label}: {bad} of {} frames do not decode to their input",
                frames.len()
            );
        }
        println!(
            "{label}: {} chunks, {} launches, ratio {:.3}, kernel {:.2} GB/s ({:.3} s), end-to-end {:.2} GB/s ({:.3} s: upload {:.3}, kernel {:.3}, download {:.3}, frames {:.3}), all frames verified",
            chunks.len(),
            t.launches,
            data.len() as f64 / out as f64,
            gb / t.kernel.as_secs_f64(),
            t.kernel.as_secs_f64(),
            gb / total,
            total,
            t.upload.as_secs_f64(),
            t.kernel.as_secs_f64(),
            t.download.as_secs_f64(),
            t.assemble.as_secs_f64()
        );
    }
    Ok(())
}
