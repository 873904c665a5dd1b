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
/// checks every checksum the frames carry. The content may be at most `limit` bytes: the
/// output buffer never grows beyond that, and decoding stops with
/// [`CompressError::OutputLimit`] at the first byte past it, so a tiny frame of a huge
/// content (64 KiB of zeros compress to a few hundred bytes) costs no more memory than
/// the content the caller expects.
pub(crate) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, CompressError> {
    let mut out = Vec::new();
    decompress_into(input, limit, &mut out)?;
    Ok(out)
}

/// [`decompress`] into `out` (cleared first), whose allocation is reused when it is large
/// enough: a caller decoding many frames keeps one buffer instead of faulting in a fresh
/// one per frame.
pub(crate) fn decompress_into(
    input: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    out.clear();
    if input.is_empty() {
        return Err(truncated("magic number", 0, 4, 0));
    }
    // One allocation for everything: growing the buffer later would hold the old and the
    // new one at once, twice the content.
    out.reserve_exact(content_bound(input).min(limit));
    let mut pos = 0;
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
        pos = decode_frame(input, pos, out, limit)?;
    }
    Ok(())
}

/// The most bytes the frames in `input` can decode to, from their headers and block sizes
/// alone (nothing is decoded or allocated): a frame's content size when it records one,
/// else the sum of its blocks' largest sizes. Where the frames stop making sense the
/// walk stops; decoding then finds and reports the fault.
fn content_bound(input: &[u8]) -> usize {
    let word = |pos: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            input.get(pos..pos.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let mut total = 0usize;
    let mut pos = 0usize;
    while pos < input.len() {
        let Some(magic) = word(pos) else { break };
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            let Some(size) = word(pos + 4) else { break };
            pos = pos.saturating_add(8).saturating_add(size as usize);
            continue;
        }
        let (Some(&flg), Some(&bd)) = (input.get(pos + 4), input.get(pos + 5)) else {
            break;
        };
        if magic != LZ4_MAGIC {
            break;
        }
        let block_max: usize = match (bd >> 4) & 0b111 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            _ => break,
        };
        let mut at = pos + 6;
        let content_size = if flg & 0b0000_1000 != 0 {
            let Some(bytes) = input.get(at..at + 8) else {
                break;
            };
            at += 8;
            Some(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
        } else {
            None
        };
        at += usize::from(flg & 1 != 0) * 4 + 1;
        let block_checksum = flg & 0b0001_0000 != 0;
        let mut blocks = 0usize;
        loop {
            let Some(w) = word(at) else { return total };
            at += 4;
            if w == 0 {
                break;
            }
            let size = (w & !UNCOMPRESSED_BIT) as usize;
            blocks = blocks.saturating_add(if w & UNCOMPRESSED_BIT != 0 {
                size.min(block_max)
            } else {
                block_max
            });
            at = at
                .saturating_add(size)
                .saturating_add(usize::from(block_checksum) * 4);
        }
        let frame = match content_size {
            Some(size) => usize::try_from(size).unwrap_or(usize::MAX).min(blocks),
            None => blocks,
        };
        total = total.saturating_add(frame);
        pos = at.saturating_add(if flg & 0b0000_0100 != 0 { 4 } else { 0 });
    }
    total
}

/// Blocks decoded per parallel round of an independent-blocks frame: a few per rayon
/// thread, so the round's slots stay a few MiB at most.
fn round_blocks() -> usize {
    (4 * rayon::current_num_threads()).max(16)
}

/// One block as found in the frame, before decoding.
struct RawBlock<'a> {
    offset: usize,
    data: &'a [u8],
    stored: bool,
}

/// Decodes the frame starting at `start` (its magic number already checked), appends the
/// content to `out` (which never grows past `limit` bytes) and returns the offset just
/// past the frame.
fn decode_frame(
    input: &[u8],
    start: usize,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, CompressError> {
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

    let frame_start = out.len();
    if let Some(size) = content_size
        && size > limit.saturating_sub(frame_start) as u64
    {
        // The header already says the content is too large: refuse before decoding.
        return Err(CompressError::OutputLimit {
            codec: Codec::Lz4,
            limit: limit as u64,
        });
    }
    // Blocks are read and decoded a round at a time, so what is held beside the output
    // stays a round's worth however many blocks the frame has.
    let mut round: Vec<RawBlock<'_>> = Vec::with_capacity(round_blocks());
    let mut ended = false;
    while !ended {
        round.clear();
        while round.len() < round_blocks() {
            let word = read_u32(input, pos, "block size")?;
            if word == 0 {
                pos += 4;
                ended = true;
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
            round.push(RawBlock {
                offset,
                data,
                stored: word & UNCOMPRESSED_BIT != 0,
            });
        }
        if independent {
            let mut next = 0;
            while next < round.len() {
                next += decode_round(&round[next..], block_max, out, limit)?;
            }
        } else {
            // Linked blocks may copy from the previous 64 KiB of this frame's output, so
            // they are decoded one after the other, each straight into `out`.
            for b in &round {
                let dict_start = out.len().saturating_sub(64 << 10).max(frame_start);
                decode_into(b, block_max, out, dict_start, limit)?;
            }
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

/// The most bytes block `b` can decode to.
fn block_bound(b: &RawBlock<'_>, block_max: usize) -> usize {
    if b.stored { b.data.len() } else { block_max }
}

/// Decodes one block into `slot`; returns the bytes written, or `None` when the block
/// holds more than `slot` has room for.
fn decode_block(
    b: &RawBlock<'_>,
    slot: &mut [u8],
    dict: &[u8],
) -> Result<Option<usize>, CompressError> {
    if b.stored {
        return Ok(slot.get_mut(..b.data.len()).map(|dst| {
            dst.copy_from_slice(b.data);
            b.data.len()
        }));
    }
    match lz4_flex::block::decompress_into_with_dict(b.data, slot, dict) {
        Ok(n) => Ok(Some(n)),
        Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) => Ok(None),
        Err(e) => Err(corrupt(format!("block does not decode: {e}"), b.offset)),
    }
}

/// Decodes `b` at the end of `out`, after the dictionary `out[dict_start..]`, with room
/// for at most what `limit` leaves.
fn decode_into(
    b: &RawBlock<'_>,
    block_max: usize,
    out: &mut Vec<u8>,
    dict_start: usize,
    limit: usize,
) -> Result<(), CompressError> {
    let len = out.len();
    let bound = block_bound(b, block_max);
    let by_limit = bound.min(limit.saturating_sub(len));
    // Within the buffer's capacity first: growing it holds two buffers at once. The
    // capacity covers the content unless the frame's sizes lie; only then is more tried.
    let by_capacity = by_limit.min(out.capacity().saturating_sub(len));
    for room in [by_capacity, by_limit] {
        out.resize(len + room, 0);
        let (head, slot) = out.split_at_mut(len);
        match decode_block(b, slot, &head[dict_start..]) {
            Ok(Some(n)) => {
                out.truncate(len + n);
                return Ok(());
            }
            Ok(None) => out.truncate(len),
            Err(e) => {
                out.truncate(len);
                return Err(e);
            }
        }
        if room == by_limit {
            break;
        }
    }
    // The block does not fit: when the limit cut its room, the content runs past the
    // limit; otherwise the block claims more than a block may hold.
    if by_limit < bound {
        Err(CompressError::OutputLimit {
            codec: Codec::Lz4,
            limit: limit as u64,
        })
    } else {
        Err(corrupt(
            format!("block decodes to more than the frame's maximum {block_max}"),
            b.offset,
        ))
    }
}

/// Decodes a round of independent blocks from the start of `blocks` in parallel, each
/// into its own slot at the end of `out`, then closes the gaps short blocks leave.
/// Slots get a block's largest size while the limit allows; the block whose slot the
/// limit cuts ends the round and, if it did not fit, is decoded again alone once the
/// gaps before it are closed, so the limit is exact. Returns the blocks consumed.
fn decode_round(
    blocks: &[RawBlock<'_>],
    block_max: usize,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, CompressError> {
    let start = out.len();
    // Slots stay within the buffer's capacity (see `decode_into`).
    let mut budget = limit.min(out.capacity().max(start)) - start;
    let mut slots: Vec<usize> = Vec::new();
    for b in blocks.iter().take(round_blocks()) {
        let slot = block_bound(b, block_max).min(budget);
        budget -= slot;
        slots.push(slot);
        if slot < block_bound(b, block_max) {
            break;
        }
    }
    let total: usize = slots.iter().sum();
    out.resize(start + total, 0);
    let mut areas: Vec<&mut [u8]> = Vec::with_capacity(slots.len());
    let mut rest = &mut out[start..];
    for &slot in &slots {
        let (area, tail) = rest.split_at_mut(slot);
        areas.push(area);
        rest = tail;
    }
    let written = areas
        .into_par_iter()
        .zip(blocks.par_iter())
        .map(|(area, b)| decode_block(b, area, &[]))
        .collect::<Result<Vec<_>, _>>();
    let written = match written {
        Ok(written) => written,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    // Close the gaps: each block's bytes move down to just after the previous block's.
    let mut end = start;
    let mut slot_start = start;
    for (i, (&slot, n)) in slots.iter().zip(&written).enumerate() {
        match *n {
            Some(n) => {
                if end != slot_start {
                    out.copy_within(slot_start..slot_start + n, end);
                }
                end += n;
            }
            None => {
                // The block did not fit its slot: the limit cut the slot (only the last
                // one can be cut), or the block is corrupt. Decoded again alone, with
                // the room the closed gaps leave, it fits or says which.
                out.truncate(end);
                let dict_start = out.len();
                decode_into(&blocks[i], block_max, out, dict_start, limit)?;
                return Ok(i + 1);
            }
        }
        slot_start += slot;
    }
    out.truncate(end);
    Ok(slots.len())
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
