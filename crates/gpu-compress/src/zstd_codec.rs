//! Zstandard through the reference C library (the `zstd` crate), with its own worker threads.

use std::cell::RefCell;

use chunk_model::Codec;

use crate::CompressError;

/// Magic number of a zstd frame (little endian on the wire).
pub const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// Inputs at least this large are split over zstd's worker threads. zstd's own job size at
/// the default levels is about 1-2 MiB, so below a few MiB the threads only add overhead.
const MT_THRESHOLD: usize = 4 << 20;

thread_local! {
    /// A compression context per thread, kept between calls: creating one and growing its
    /// tables costs more than compressing a small chunk. `Compressor` is shared across threads,
    /// a zstd context is not, hence thread-local rather than a field.
    /// Keyed by (level, workers): `auto` trials at level 1 beside the configured level.
    static CONTEXTS: RefCell<Vec<(i32, u32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `data` into one zstd frame with content size and checksum.
pub(crate) fn compress(data: &[u8], level: i32, threads: u32) -> Result<Vec<u8>, CompressError> {
    let workers = if data.len() >= MT_THRESHOLD && threads > 1 {
        threads
    } else {
        0
    };
    let err = |source| CompressError::Zstd {
        operation: "compress",
        source,
    };
    CONTEXTS.with(|cell| {
        let mut contexts = cell.borrow_mut();
        let i = match contexts
            .iter()
            .position(|(l, w, _)| *l == level && *w == workers)
        {
            Some(i) => i,
            None => {
                let mut c = zstd::bulk::Compressor::new(level).map_err(err)?;
                c.include_checksum(true).map_err(err)?;
                c.include_contentsize(true).map_err(err)?;
                c.multithread(workers).map_err(err)?;
                if contexts.len() >= 4 {
                    contexts.remove(0);
                }
                contexts.push((level, workers, c));
                contexts.len() - 1
            }
        };
        contexts[i].2.compress(data).map_err(err)
    })
}

/// Decodes every zstd frame in `frame` (concatenated and skippable frames included).
pub(crate) fn decompress(frame: &[u8]) -> Result<Vec<u8>, CompressError> {
    match frame.get(..4) {
        None => {
            return Err(CompressError::Truncated {
                codec: Codec::Zstd,
                what: "magic number",
                offset: 0,
                needed: 4,
                available: frame.len(),
            });
        }
        Some(m) => {
            let magic = u32::from_le_bytes(m.try_into().expect("4 bytes"));
            if magic != ZSTD_MAGIC && magic & 0xFFFF_FFF0 != 0x184D_2A50 {
                return Err(CompressError::BadMagic {
                    codec: Codec::Zstd,
                    found: magic,
                    offset: 0,
                });
            }
        }
    }
    zstd::stream::decode_all(frame).map_err(|source| CompressError::Zstd {
        operation: "decompress",
        source,
    })
}
