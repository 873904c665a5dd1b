//! The LZ4 frame format: writing frames from compressed blocks and reading any frame the
//! reference `lz4` tool writes.
//!
//! Engines only produce raw LZ4 *blocks*; this module owns the frame around them (header,
//! block sizes, the "stored uncompressed" bit, end mark and content checksum), so the CPU and
//! OpenCL engines emit byte-compatible frames.

use std::io::{Read, Write};

use chunk_model::Codec;
use rayon::prelude::*;
use xxhash_rust::xxh32::{Xxh32, xxh32};

use crate::{CompressError, pipeline};

/// Magic number of an LZ4 frame (little endian on the wire).
pub const LZ4_MAGIC: u32 = 0x184D_2204;
/// Every block of a frame this crate writes holds at most this many input bytes.
pub const BLOCK_SIZE: usize = 64 * 1024;

/// FLG: version 01, independent blocks, content size present, content checksum present.
const FLG: u8 = 0b0110_1100;
/// BD: maximum block size code 4 = 64 KiB.
const BD: u8 = 4 << 4;
/// High bit of a block size: the block is stored uncompressed.
const UNCOMPRESSED_BIT: u32 = 0x8000_0000;
/// Blocks compressed per parallel round on the CPU: enough to keep every core busy, small
/// enough that the per-block scratch slots stay a few MiB whatever the input size.
const CPU_ROUND_BLOCKS: usize = 256;

/// Size of the frame header this crate writes (magic, FLG, BD, content size, HC).
const HEADER_LEN: usize = 4 + 2 + 8 + 1;

/// Writes the frame header for `content_len` input bytes.
pub(crate) fn write_header(out: &mut Vec<u8>, content_len: u64) {
    out.extend_from_slice(&LZ4_MAGIC.to_le_bytes());
    let descriptor_start = out.len();
    out.push(FLG);
    out.push(BD);
    out.extend_from_slice(&content_len.to_le_bytes());
    let hc = (xxh32(&out[descriptor_start..], 0) >> 8) as u8;
    out.push(hc);
}

/// Appends one block: the compressed bytes when they are shorter than the input block,
/// otherwise the input stored as is with the high bit of the size set.
pub(crate) fn write_block(out: &mut Vec<u8>, raw: &[u8], compressed: Option<&[u8]>) {
    match compressed {
        Some(c) if !c.is_empty() && c.len() < raw.len() => {
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(c);
        }
        _ => {
            out.extend_from_slice(&(raw.len() as u32 | UNCOMPRESSED_BIT).to_le_bytes());
            out.extend_from_slice(raw);
        }
    }
}

/// Appends the end mark and the content checksum.
pub(crate) fn write_trailer(out: &mut Vec<u8>, content_checksum: u32) {
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&content_checksum.to_le_bytes());
}

/// A frame's size before any block is compressed: the header, the trailer, and four bytes of
/// size per block. Used to reserve the output once.
pub(crate) fn frame_overhead(content_len: usize) -> usize {
    HEADER_LEN + 8 + 4 * content_len.div_ceil(BLOCK_SIZE)
}

/// Room for one compressed block: at least the C encoder's bound for a full block (a block
/// that does not shrink is stored raw by [`write_block`] anyway).
fn slot_len() -> usize {
    lz4_flex::block::get_maximum_output_size(BLOCK_SIZE)
}

/// Compresses one block with C liblz4's `LZ4_compress_default`, the encoder and speed of
/// `lz4 -1`, into `slot`; returns the compressed length. liblz4 rather than `lz4_flex`:
/// 1.5-2.5× faster per core on compressible data here, at the same ratio (±1%); decoding
/// stays in `lz4_flex`, whose safe, checked decoder is what corrupt input needs.
fn encode_block(block: &[u8], slot: &mut [u8]) -> Result<usize, CompressError> {
    lz4::block::compress_to_buffer(block, None, false, slot)
        .map_err(|e| CompressError::Lz4Encode(e.to_string()))
}

/// Compresses the blocks of `round` in parallel into `slots` (one [`slot_len`] slot per
/// block), appends them to `out`, and hashes `round` into `hasher` meanwhile.
fn compress_round(
    round: &[u8],
    slots: &mut [u8],
    hasher: &mut Xxh32,
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    let bound = slot_len();
    let (lens, ()) = rayon::join(
        || {
            slots
                .par_chunks_mut(bound)
                .zip(round.par_chunks(BLOCK_SIZE))
                .map(|(slot, block)| encode_block(block, slot))
                .collect::<Result<Vec<usize>, _>>()
        },
        || hasher.update(round),
    );
    for ((block, slot), len) in round.chunks(BLOCK_SIZE).zip(slots.chunks(bound)).zip(lens?) {
        write_block(out, block, Some(&slot[..len]));
    }
    Ok(())
}

/// Compresses `data` into an LZ4 frame on the CPU: rayon spreads 64 KiB blocks over all cores
/// while one task computes the content checksum beside them.
pub(crate) fn compress_cpu(data: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut out = Vec::with_capacity(frame_overhead(data.len()) + data.len() / 2);
    write_header(&mut out, data.len() as u64);
    let mut hasher = Xxh32::new(0);
    let mut slots = vec![0u8; CPU_ROUND_BLOCKS.min(data.len().div_ceil(BLOCK_SIZE)) * slot_len()];
    for round in data.chunks(CPU_ROUND_BLOCKS * BLOCK_SIZE) {
        compress_round(round, &mut slots, &mut hasher, &mut out)?;
    }
    write_trailer(&mut out, hasher.digest());
    Ok(out)
}

/// Input bytes per segment of [`compress_stream`]'s pipeline: four blocks per rayon thread,
/// at least 16 blocks (1 MiB). Small segments measured faster than large ones (64 or 256
/// blocks) on the 2-core CI machine: a segment is still in cache when it is compressed and
/// written, and the few buffers in flight are not page-faulted in again and again.
fn stream_segment() -> usize {
    (4 * rayon::current_num_threads()).max(16) * BLOCK_SIZE
}

/// Compresses `len` bytes from `input` into one LZ4 frame written to `output`, the same bytes
/// [`compress_cpu`] makes, with bounded memory: a reader thread fills segments, rayon
/// compresses one segment while the next is read and the previous one written by a writer
/// thread, so file I/O overlaps compression. Returns the frame's length.
///
/// The frame header carries `len`; an input that ends early or runs on is an error
/// ([`CompressError::InputLength`]), and the output written so far must then be discarded.
pub(crate) fn compress_stream<R, W>(input: R, len: u64, output: W) -> Result<u64, CompressError>
where
    R: Read + Send,
    W: Write + Send,
{
    let segment_len = stream_segment();
    pipeline::stream(input, len, segment_len, output, |stages| {
        let piece_cap = frame_overhead(segment_len) + segment_len;
        let mut piece = Vec::with_capacity(HEADER_LEN);
        write_header(&mut piece, len);
        // A closed channel means the writer stopped on an error, which `stream` reports.
        if stages.pieces.send(piece).is_err() {
            return Ok(());
        }
        let mut hasher = Xxh32::new(0);
        let mut slots = vec![0u8; segment_len / BLOCK_SIZE * slot_len()];
        for segment in &stages.segments {
            let mut piece = stages
                .free_pieces
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(piece_cap));
            piece.clear();
            compress_round(&segment, &mut slots, &mut hasher, &mut piece)?;
            // The reader may have stopped; then the buffer is simply dropped.
            let _ = stages.free_segments.send(segment);
            if stages.pieces.send(piece).is_err() {
                return Ok(());
            }
        }
        let mut piece = Vec::with_capacity(8);
        write_trailer(&mut piece, hasher.digest());
        let _ = stages.pieces.send(piece);
        Ok(())
    })
}

/// Decodes every LZ4 frame in `input` (concatenated frames and skippable frames included) and
/// checks every checksum the frames carry.
pub(crate) fn decompress(input: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut out = Vec::new();
    let mut pos = 0;
    if input.is_empty() {
        return Err(truncated("magic number", 0, 4, 0));
    }
    while pos < input.len() {
        let magic = read_u32(input, pos, "magic number")?;
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            // Skippable frame: a size and that many bytes of user data.
            let size = read_u32(input, pos + 4, "skippable frame size")? as usize;
            let end = (pos + 8).checked_add(size).filter(|&e| e <= input.len());
            pos = end.ok_or_else(|| {
                truncated("skippable frame", pos + 8, size, input.len() - pos - 8)
            })?;
            continue;
        }
        if magic != LZ4_MAGIC {
            return Err(CompressError::BadMagic {
                codec: Codec::Lz4,
                found: magic,
                offset: pos,
            });
        }
        pos = decode_frame(input, pos, &mut out)?;
    }
    Ok(out)
}

/// One block as found in the frame, before decoding.
struct RawBlock<'a> {
    offset: usize,
    data: &'a [u8],
    stored: bool,
}

/// Decodes the frame starting at `start` (its magic number already checked), appends the
/// content to `out` and returns the offset just past the frame.
fn decode_frame(input: &[u8], start: usize, out: &mut Vec<u8>) -> Result<usize, CompressError> {
    let mut pos = start + 4;
    let flg = read_u8(input, pos, "frame descriptor FLG")?;
    let bd = read_u8(input, pos + 1, "frame descriptor BD")?;
    if flg >> 6 != 0b01 {
        return Err(corrupt(
            format!("frame version {} (only 1 exists)", flg >> 6),
            pos,
        ));
    }
    if flg & 0b10 != 0 || bd & 0b1000_1111 != 0 {
        return Err(corrupt(
            "reserved bits set in the frame descriptor".into(),
            pos,
        ));
    }
    let independent = flg & 0b0010_0000 != 0;
    let block_checksum = flg & 0b0001_0000 != 0;
    let has_content_size = flg & 0b0000_1000 != 0;
    let has_content_checksum = flg & 0b0000_0100 != 0;
    let has_dict_id = flg & 0b0000_0001 != 0;
    let block_max = match (bd >> 4) & 0b111 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        code => return Err(corrupt(format!("block maximum size code {code}"), pos + 1)),
    };
    let descriptor_start = pos;
    pos += 2;
    let content_size = if has_content_size {
        let v = u64::from_le_bytes(
            take(input, pos, 8, "content size")?
                .try_into()
                .expect("8 bytes"),
        );
        pos += 8;
        Some(v)
    } else {
        None
    };
    if has_dict_id {
        return Err(CompressError::Unsupported {
            codec: Codec::Lz4,
            what: "dictionary ID",
            offset: pos,
        });
    }
    let hc = read_u8(input, pos, "header checksum")?;
    let computed = (xxh32(&input[descriptor_start..pos], 0) >> 8) as u8;
    if hc != computed {
        return Err(CompressError::ChecksumMismatch {
            codec: Codec::Lz4,
            what: "header",
            offset: pos,
            stored: hc.into(),
            computed: computed.into(),
        });
    }
    pos += 1;

    let mut blocks = Vec::new();
    loop {
        let word = read_u32(input, pos, "block size")?;
        if word == 0 {
            pos += 4;
            break;
        }
        let size = (word & !UNCOMPRESSED_BIT) as usize;
        if size > block_max {
            return Err(corrupt(
                format!("block size {size} exceeds the frame's maximum {block_max}"),
                pos,
            ));
        }
        let data = take(input, pos + 4, size, "block data")?;
        let offset = pos;
        pos += 4 + size;
        if block_checksum {
            let stored = read_u32(input, pos, "block checksum")?;
            let computed = xxh32(data, 0);
            if stored != computed {
                return Err(CompressError::ChecksumMismatch {
                    codec: Codec::Lz4,
                    what: "block",
                    offset: pos,
                    stored,
                    computed,
                });
            }
            pos += 4;
        }
        blocks.push(RawBlock {
            offset,
            data,
            stored: word & UNCOMPRESSED_BIT != 0,
        });
    }

    let frame_start = out.len();
    if let Some(size) = content_size {
        // The stored size is only a hint for the allocation: a corrupt header must not make
        // us reserve terabytes, and no block expands more than 255-fold.
        let cap = size.min(input.len().saturating_mul(255) as u64) as usize;
        out.reserve(cap);
    }
    if independent {
        let decoded = blocks
            .par_iter()
            .map(|b| decode_block(b, block_max, &[]))
            .collect::<Result<Vec<_>, _>>()?;
        for d in decoded {
            out.extend_from_slice(&d);
        }
    } else {
        // Linked blocks may copy from the previous 64 KiB of this frame's output.
        for b in &blocks {
            let dict_start = out.len().saturating_sub(64 << 10).max(frame_start);
            let d = decode_block(b, block_max, &out[dict_start..])?;
            out.extend_from_slice(&d);
        }
    }

    let content = &out[frame_start..];
    if let Some(size) = content_size
        && size != content.len() as u64
    {
        return Err(corrupt(
            format!(
                "content size field says {size} bytes, the blocks hold {}",
                content.len()
            ),
            descriptor_start + 2,
        ));
    }
    if has_content_checksum {
        let stored = read_u32(input, pos, "content checksum")?;
        let computed = xxh32(content, 0);
        if stored != computed {
            return Err(CompressError::ChecksumMismatch {
                codec: Codec::Lz4,
                what: "content",
                offset: pos,
                stored,
                computed,
            });
        }
        pos += 4;
    }
    Ok(pos)
}

fn decode_block(b: &RawBlock<'_>, block_max: usize, dict: &[u8]) -> Result<Vec<u8>, CompressError> {
    if b.stored {
        return Ok(b.data.to_vec());
    }
    let mut buf = vec![0u8; block_max];
    let n = lz4_flex::block::decompress_into_with_dict(b.data, &mut buf, dict)
        .map_err(|e| corrupt(format!("block does not decode: {e}"), b.offset))?;
    buf.truncate(n);
    Ok(buf)
}

fn corrupt(what: String, offset: usize) -> CompressError {
    CompressError::Corrupt {
        codec: Codec::Lz4,
        what,
        offset,
    }
}

fn truncated(what: &'static str, offset: usize, needed: usize, available: usize) -> CompressError {
    CompressError::Truncated {
        codec: Codec::Lz4,
        what,
        offset,
        needed,
        available,
    }
}

fn take<'a>(
    input: &'a [u8],
    pos: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], CompressError> {
    let available = input.len().saturating_sub(pos);
    if available < len {
        return Err(truncated(what, pos, len, available));
    }
    Ok(&input[pos..pos + len])
}

fn read_u8(input: &[u8], pos: usize, what: &'static str) -> Result<u8, CompressError> {
    Ok(take(input, pos, 1, what)?[0])
}

fn read_u32(input: &[u8], pos: usize, what: &'static str) -> Result<u32, CompressError> {
    Ok(u32::from_le_bytes(
        take(input, pos, 4, what)?.try_into().expect("4 bytes"),
    ))
}
