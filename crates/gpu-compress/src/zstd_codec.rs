//! Zstandard through the reference C library (the `zstd` crate), with its own worker threads.

use std::cell::RefCell;
use std::io::{Read, Write};

use chunk_model::Codec;

use crate::{CompressError, pipeline};

/// Magic number of a zstd frame (little endian on the wire).
pub const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// Inputs at least this large are split over zstd's worker threads. zstd's own job size at
/// the default levels is about 1-2 MiB, so below a few MiB the threads only add overhead.
const MT_THRESHOLD: usize = 4 << 20;

thread_local! {
    /// A compression context per thread, kept between calls: creating one and growing its
    /// tables costs more than compressing a small chunk. `Compressor` is shared across threads,
    /// a zstd context is not, hence thread-local rather than a field.
    /// Keyed by (level, workers): `auto` trials big chunks at level 1 beside the configured
    /// level.
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

/// Bytes per input segment and output piece of [`compress_stream`]: 1 MiB, a few calls into
/// zstd per job and per write.
const STREAM_PIECE: usize = 1 << 20;

/// Compresses `len` bytes from `input` into one zstd frame (content size, checksum) written to
/// `output`; returns the frame's length. zstd compresses in its own worker threads; a reader
/// and a writer thread do the file I/O (as the `zstd` tool's async I/O does), so this thread
/// only feeds zstd and reading, compressing and writing all overlap. Memory stays a few jobs'
/// worth whatever `len` is.
pub(crate) fn compress_stream<R, W>(
    input: R,
    len: u64,
    output: W,
    level: i32,
    threads: u32,
) -> Result<u64, CompressError>
where
    R: Read + Send,
    W: Write + Send,
{
    let workers = if len >= MT_THRESHOLD as u64 && threads > 1 {
        threads
    } else {
        0
    };
    let err = |source| CompressError::Zstd {
        operation: "compress",
        source,
    };
    pipeline::stream(input, len, STREAM_PIECE, output, |stages| {
        let pipe = pipeline::PipeWriter::new(STREAM_PIECE, stages.pieces, stages.free_pieces);
        let mut encoder = zstd::stream::write::Encoder::new(pipe, level).map_err(err)?;
        encoder.include_checksum(true).map_err(err)?;
        encoder.include_contentsize(true).map_err(err)?;
        encoder.multithread(workers).map_err(err)?;
        encoder.set_pledged_src_size(Some(len)).map_err(err)?;
        let mut read = 0u64;
        for segment in &stages.segments {
            read += segment.len() as u64;
            if read > len {
                // zstd would refuse more than pledged; `stream`'s length check reports it.
                return Ok(());
            }
            encoder.write_all(&segment).map_err(err)?;
            let _ = stages.free_segments.send(segment);
        }
        if read == len {
            encoder
                .finish()
                .and_then(|pipe| pipe.finish())
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Decodes every zstd frame in `frame` (concatenated and skippable frames included) into at
/// most `limit` bytes.
///
/// A bounded decode (any `limit` but `usize::MAX`) goes through zstd's one-shot decoder
/// into a buffer allocated once: no larger than the frames' recorded sizes (or zstd's
/// bound on them) and never larger than `limit`. zstd stops at the first block that
/// would write past it, which is [`CompressError::OutputLimit`]; the whole-frame decoder
/// needs no window buffer of its own, so a frame declaring a huge window costs nothing
/// either. Unbounded, frames stream through zstd's decoder into a growing buffer.
pub(crate) fn decompress(frame: &[u8], limit: usize) -> Result<Vec<u8>, CompressError> {
    check_magic(frame)?;
    if limit == usize::MAX {
        return zstd::stream::decode_all(frame).map_err(decode_error);
    }
    let mut out = Vec::new();
    decompress_into(frame, limit, &mut out)?;
    Ok(out)
}

thread_local! {
    /// A decompression context per thread, kept between calls like [`CONTEXTS`]: creating
    /// one allocates and initialises zstd's tables, once per frame otherwise.
    static DCONTEXT: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// The bounded [`decompress`] into `out` (cleared first), whose allocation is reused when
/// it is large enough, with this thread's decompression context.
pub(crate) fn decompress_into(
    frame: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    check_magic(frame)?;
    out.clear();
    let capacity = zstd::bulk::Decompressor::upper_bound(frame).map_or(limit, |b| b.min(limit));
    out.try_reserve_exact(capacity)
        .map_err(|e| decode_error(std::io::Error::new(std::io::ErrorKind::OutOfMemory, e)))?;
    // zstd calls nothing that could come back here, so the borrow cannot be taken twice.
    let decoded = DCONTEXT.with(|cell| {
        let mut context = cell.borrow_mut();
        context
            .get_or_insert_with(zstd::zstd_safe::DCtx::create)
            .decompress(out, frame)
    });
    match decoded {
        // A reused buffer may hold more than `limit`: what did not fit is refused the same.
        Ok(_) if out.len() > limit => Err(CompressError::OutputLimit {
            codec: Codec::Zstd,
            limit: limit as u64,
        }),
        Ok(_) => Ok(()),
        Err(code) => {
            // SAFETY: `ZSTD_getErrorCode` only classifies the integer zstd returned; it
            // reads no memory.
            let kind = unsafe { zstd::zstd_safe::zstd_sys::ZSTD_getErrorCode(code) };
            if kind == zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall
                && out.capacity() >= limit
            {
                Err(CompressError::OutputLimit {
                    codec: Codec::Zstd,
                    limit: limit as u64,
                })
            } else {
                Err(decode_error(std::io::Error::other(
                    zstd::zstd_safe::get_error_name(code),
                )))
            }
        }
    }
}

fn decode_error(source: std::io::Error) -> CompressError {
    CompressError::Zstd {
        operation: "decompress",
        source,
    }
}

/// A zstd frame or a skippable frame must start the input.
fn check_magic(frame: &[u8]) -> Result<(), CompressError> {
    let Some(m) = frame.get(..4) else {
        return Err(CompressError::Truncated {
            codec: Codec::Zstd,
            what: "magic number",
            offset: 0,
            needed: 4,
            available: frame.len(),
        });
    };
    let magic = u32::from_le_bytes(m.try_into().expect("4 bytes"));
    if magic != ZSTD_MAGIC && magic & 0xFFFF_FFF0 != 0x184D_2A50 {
        return Err(CompressError::BadMagic {
            codec: Codec::Zstd,
            found: magic,
            offset: 0,
        });
    }
    Ok(())
}
