//! The OpenCL engine's public face: which device it uses and a timed batch call for
//! `cargo xtask gpu-check`. The engine itself ([`engine`], one kernel launch for every
//! 64 KiB block of a batch) is compiled in only when the build found the OpenCL loader
//! (see `build.rs`); without it these functions say so instead of failing to link.

use std::time::Duration;

use crate::CompressError;

#[cfg(panini_opencl)]
pub(crate) mod engine;

/// Environment variable that picks the OpenCL device: an index into the list of all devices
/// of all platforms, or a case-insensitive substring of the device or platform name.
pub const DEVICE_ENV: &str = "PANINI_OPENCL_DEVICE";

/// What the engine runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDescription {
    /// Device name as the driver reports it.
    pub name: String,
    /// Platform (driver) name.
    pub platform: String,
    /// True for GPUs and accelerators, false for CPU implementations such as PoCL.
    pub is_gpu: bool,
    /// Work-items per work-group the kernel is built for.
    pub work_group_size: usize,
}

/// Where the time of one engine call went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Copying inputs to the device.
    pub upload: Duration,
    /// The kernel itself, from enqueue until the queue drained.
    pub kernel: Duration,
    /// Copying compressed blocks back.
    pub download: Duration,
    /// Content checksums and frame assembly on the host.
    pub assemble: Duration,
    /// Kernel launches made.
    pub launches: usize,
}

/// Whether this build has the OpenCL engine (the build found the OpenCL loader).
pub const BUILT: bool = cfg!(panini_opencl);

/// Why there is no OpenCL engine in a build without it.
#[cfg(not(panini_opencl))]
pub(crate) const NOT_BUILT: &str = "this build has no OpenCL engine: the OpenCL loader (libOpenCL.so.1, Debian: ocl-icd-libopencl1) was not found when it was built";

/// Describes the device the engine uses (setting it up if needed).
pub fn device() -> Result<DeviceDescription, CompressError> {
    #[cfg(panini_opencl)]
    return engine::device();
    #[cfg(not(panini_opencl))]
    Err(CompressError::OpenClUnavailable(NOT_BUILT.into()))
}

/// Compresses each chunk into an LZ4 frame on the shared OpenCL engine (all blocks in one
/// launch where they fit) and says where the time went. For `cargo xtask gpu-check` and
/// benchmarks; the pipeline goes through [`crate::Compressor::compress_batch`].
pub fn compress_frames_timed(chunks: &[&[u8]]) -> Result<(Vec<Vec<u8>>, Timings), CompressError> {
    #[cfg(panini_opencl)]
    return engine::compress_frames_timed(chunks);
    #[cfg(not(panini_opencl))]
    {
        let _ = chunks;
        Err(CompressError::OpenClUnavailable(NOT_BUILT.into()))
    }
}
