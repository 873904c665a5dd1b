//! Packing: from a file's structures to chunk boundaries, and the chunks' names.
//!
//! A parser's regions say where a chunk may start (every structure, except those inside
//! a group of pictures) and which spans have no finer structure (opaque: image data,
//! scan data, streams, unknown bytes). The packer walks them in file order:
//!
//! - The header (the small structures before the first media or body structure) is a
//!   chunk of its own, however small: the detector gives it priority.
//! - Consecutive structures are packed into one chunk up to the maximum size, cutting
//!   only where a chunk may start.
//! - An opaque span, a group larger than the maximum, or a structure that would leave
//!   the chunk before it below the minimum, is cut by content (FastCDC bounded by the
//!   minimum and maximum), so an edit moves only the cuts near it. A group of pictures
//!   is never joined to the chunk before it this way: its first piece starts at its
//!   keyframe.
//! - A chunk below the minimum whose start was chosen by content is merged into the
//!   chunk before it, or the two are split evenly: small chunks remain only where a
//!   forced boundary leaves them (the header, a keyframe after a short group, the end
//!   of the file).

use std::borrow::Cow;
use std::io::{self, Read, Seek};

use fastcdc::v2020;

use crate::parse::{Pattern, Region};
use crate::plan::{PlanError, Span, Structure};
use crate::source::{Source, Stop};

/// FastCDC's parameters, with its gear tables built once per plan.
pub(crate) struct Cdc {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Cdc {
    /// FastCDC for pieces of three quarters of the maximum to the maximum, or `None`
    /// when the maximum is below what FastCDC supports. Sizes outside FastCDC's limits
    /// are brought inside them, never above `max`.
    ///
    /// Why not the plan's minimum as FastCDC's: the rolling hash runs only between a
    /// piece's minimum and its cut, and planning is a sequential pass before any chunk
    /// is written. From three quarters of the maximum it reads about a third and hashes
    /// about a seventh of the bytes it cuts (with the minimum at a quarter, two thirds
    /// and two thirds: the default strategy's throughput fell by a fifth). `avg` is set
    /// to a quarter of the maximum only for its mask: past the minimum a cut falls with
    /// probability 1/(max/8) per byte, so 86% of pieces end at a content-defined cut
    /// (the others at the maximum) and an edit's effect stops within a piece or two.
    /// Pieces average about 0.86 × the maximum: fewer chunks, each well above the
    /// plan's minimum.
    pub(crate) fn new(max: u64) -> Option<Cdc> {
        if max < u64::from(v2020::MAXIMUM_MIN) {
            return None;
        }
        let max = max.min(u64::from(v2020::MAXIMUM_MAX)) as u32;
        let min = (max / 4 * 3).clamp(v2020::MINIMUM_MIN, v2020::MINIMUM_MAX);
        let avg = (max / 4).clamp(v2020::AVERAGE_MIN, v2020::AVERAGE_MAX);
        // Normalization level 1, as `v2020::StreamCDC::new`: the same cut points.
        let bits = v2020::logarithm2(avg);
        let (gear, gear_ls) = v2020::get_gear_with_seed(0);
        Some(Cdc {
            min: min as usize,
            avg: avg as usize,
            max: max as usize,
            mask_s: v2020::MASKS[(bits + 1) as usize],
            mask_l: v2020::MASKS[(bits - 1) as usize],
            gear,
            gear_ls,
        })
    }

    /// The length of the first chunk of `data` (FastCDC looks at most at `max` bytes and
    /// never at the first `min`).
    fn cut(&self, data: &[u8]) -> usize {
        v2020::cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        )
        .1
    }

    /// Appends to `ends` the end of each content-defined piece of `[from, to)`.
    ///
    /// Reads only what FastCDC looks at: for each piece, the bytes from `min` to at most
    /// `max` past its start, keeping those already read that the next piece needs. The
    /// cut points are those of `StreamCDC` over the same bytes.
    fn split<R: Read + Seek>(
        &self,
        src: &mut Source<R>,
        from: u64,
        to: u64,
        buf: &mut Vec<u8>,
        ends: &mut Vec<u64>,
    ) -> Result<(), Stop> {
        // `cut_gear` starts at the even index at or below `min`.
        let skip = self.min & !1;
        // No piece reads past `to`: a small file needs a buffer of its size, not of
        // `max` (zeroing and faulting in 1 MiB per small file was a visible share of a
        // folder's chunking).
        let span = usize::try_from(to - from).unwrap_or(usize::MAX);
        buf.resize(self.max.min(span), 0);
        // buf[i] holds the byte at `at + i` for i in [skip, have).
        let mut have = skip;
        let mut at = from;
        while at < to {
            let remaining = to - at;
            if remaining <= self.min as u64 {
                ends.push(to);
                break;
            }
            let n = remaining.min(self.max as u64) as usize;
            if have < n {
                src.read_at(at + have as u64, &mut buf[have..n])?;
                have = n;
            }
            let count = self.cut(&buf[..n]);
            at += count as u64;
            ends.push(at);
            if count + skip < have {
                buf.copy_within(count + skip..have, skip);
                have -= count;
            } else {
                have = skip;
            }
        }
        Ok(())
    }
}

/// Consecutive regions that go into one chunk unless they must be split: a structure
/// a chunk may start at with those that travel with it, or a run of opaque regions.
#[derive(Debug)]
struct Group {
    start: u64,
    end: u64,
    /// Starts with a video keyframe.
    keyframe: bool,
    /// Has no structure worth keeping: always cut by content.
    opaque: bool,
}

/// The chunk boundaries of a file: each chunk's end offset, in order.
struct Packer<'a, R> {
    src: &'a mut Source<R>,
    min: u64,
    max: u64,
    cdc: Option<&'a Cdc>,
    buf: Vec<u8>,
    ends: Vec<u64>,
    /// The chunk being filled: `[start, end)`.
    start: u64,
    end: u64,
    /// `start` was chosen inside a span (by content or size), so it may move.
    soft: bool,
}

impl<R: Read + Seek> Packer<'_, R> {
    fn add(&mut self, group: Group) -> Result<(), Stop> {
        let size = group.end - group.start;
        let filled = self.end - self.start;
        // A keyframe after the last piece of a split group opens a chunk of its own
        // (that piece goes back to the one before it if small): packing it with a piece
        // that starts mid-group would leave the keyframe in no chunk's first byte.
        let after_split_group = group.keyframe && self.soft;
        if !group.opaque && filled + size <= self.max && !after_split_group {
            self.end = group.end;
            return Ok(());
        }
        if !group.opaque && size <= self.max && (group.keyframe || filled >= self.min) {
            self.emit();
            self.start = group.start;
            self.end = group.end;
            self.soft = false;
            return Ok(());
        }
        // By content. A chunk still below the minimum joins the group's first piece,
        // unless the group starts with a keyframe that must open a chunk.
        let from = if filled > 0 && filled < self.min && !group.keyframe {
            self.start
        } else {
            self.emit();
            group.start
        };
        let first = self.ends.len();
        match self.cdc {
            Some(cdc) => cdc.split(self.src, from, group.end, &mut self.buf, &mut self.ends)?,
            None => {
                let mut at = from;
                while at < group.end {
                    at = (at + self.max).min(group.end);
                    self.ends.push(at);
                }
            }
        }
        // The last piece stays open: the structures after it may join it.
        let last = self.ends.pop();
        debug_assert_eq!(last, Some(group.end));
        if self.ends.len() > first {
            self.start = *self.ends.last().expect("a piece before the last");
            self.soft = true;
        } else {
            self.start = from;
        }
        self.end = group.end;
        Ok(())
    }

    /// Closes the chunk being filled. One below the minimum whose start was chosen by
    /// content joins the chunk before it, or shares it evenly when both do not fit in
    /// one: both halves are then above twice the minimum (the minimum is at most a
    /// quarter of the maximum), and the new cut lies inside the chunk before, which was
    /// cut out of the same span.
    fn emit(&mut self) {
        if self.end == self.start {
            return;
        }
        if self.end - self.start < self.min && self.soft {
            let before = self.ends.len().checked_sub(2).map_or(0, |i| self.ends[i]);
            let combined = self.end - before;
            if combined <= self.max {
                self.ends.pop();
            } else if let Some(cut) = self.ends.last_mut() {
                *cut = before + combined / 2;
            }
        }
        self.ends.push(self.end);
        self.start = self.end;
        self.soft = false;
    }
}

/// The chunk ends of the file whose structure is `regions` (contiguous from 0 to the
/// file's end), with `header_end` as a forced boundary.
pub(crate) fn pack<R: Read + Seek>(
    src: &mut Source<R>,
    regions: &[Region],
    header_end: Option<u64>,
    min: u64,
    max: u64,
    cdc: Option<&Cdc>,
) -> Result<Vec<u64>, PlanError> {
    let mut packer = Packer {
        src,
        min,
        max,
        cdc,
        buf: Vec::new(),
        ends: Vec::new(),
        start: 0,
        end: 0,
        soft: false,
    };
    let mut group: Option<Group> = None;
    for region in regions {
        let forced = header_end == Some(region.offset);
        if let Some(g) = &mut group
            && !forced
            && (!region.cut || (region.opaque && g.opaque))
        {
            g.end = region.end();
            continue;
        }
        if let Some(g) = group.take() {
            packer.add(g).map_err(stop_error)?;
        }
        if forced {
            packer.emit();
        }
        group = Some(Group {
            start: region.offset,
            end: region.end(),
            keyframe: region.keyframe,
            opaque: region.opaque,
        });
    }
    if let Some(g) = group {
        packer.add(g).map_err(stop_error)?;
    }
    packer.emit();
    Ok(packer.ends)
}

/// A read past the end while cutting by content means the file shrank.
fn stop_error(stop: Stop) -> PlanError {
    match stop {
        Stop::Io(e) => PlanError::Io(e),
        Stop::Corrupt(reason) => PlanError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{reason} (the file shrank while being read?)"),
        )),
    }
}

/// The spans of the chunks ending at `ends`, named by the structures they hold.
///
/// The naming rule: a chunk inside the header is named `header` (`PNG_HEADER`, …); any
/// other chunk after the structure its first byte belongs to — that structure's pattern
/// when the chunk starts with it, else its `rest_pattern` if it has one (a keyframe
/// group's later pieces are `ISOBMFF_MDAT_MEDIA`). A chunk is a keyframe only when it
/// starts exactly at a structure that starts with a keyframe. Every chunk lists the
/// structures it holds, by pattern, in file order.
pub(crate) fn label(
    regions: &[Region],
    ends: &[u64],
    header: Option<(u64, &'static str)>,
) -> Vec<Span> {
    let mut spans = Vec::with_capacity(ends.len());
    let mut first = 0; // the first region that ends after the chunk's start
    let mut start = 0;
    for &end in ends {
        while regions[first].end() <= start {
            first += 1;
        }
        let region = &regions[first];
        let at_start = region.offset == start;
        let (pattern, is_keyframe): (Pattern, bool) = match header {
            Some((header_end, name)) if end <= header_end => (Cow::Borrowed(name), false),
            _ if at_start => (region.pattern.clone(), region.keyframe),
            _ => (
                region
                    .rest_pattern
                    .clone()
                    .unwrap_or_else(|| region.pattern.clone()),
                false,
            ),
        };
        let mut structures: Vec<Structure> = Vec::new();
        for r in regions[first..].iter().take_while(|r| r.offset < end) {
            let bytes = r.end().min(end) - r.offset.max(start);
            match structures.iter_mut().find(|s| s.pattern == r.pattern) {
                Some(s) => {
                    s.count += 1;
                    s.bytes += bytes;
                }
                None => structures.push(Structure {
                    pattern: r.pattern.clone(),
                    count: 1,
                    bytes,
                }),
            }
        }
        spans.push(Span {
            offset: start,
            size: end - start,
            pattern,
            is_keyframe,
            structures,
        });
        start = end;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn split_finds_the_cut_points_of_stream_cdc() {
        let data = random(5_000_000, 7);
        for max in [256 << 10, 1 << 20, 1500] {
            let cdc = Cdc::new(max).expect("supported sizes");
            let mut src = Source::new(io::Cursor::new(&data), data.len() as u64).unwrap();
            let mut ends = Vec::new();
            cdc.split(&mut src, 0, data.len() as u64, &mut Vec::new(), &mut ends)
                .unwrap();
            let mut want = Vec::new();
            let stream =
                v2020::StreamCDC::new(&data[..], cdc.min as u32, cdc.avg as u32, cdc.max as u32);
            for chunk in stream {
                let chunk = chunk.unwrap();
                want.push(chunk.offset + chunk.length as u64);
            }
            assert_eq!(ends, want, "max {max}");
        }
    }

    #[test]
    fn cdc_sizes_stay_within_fastcdc_limits_and_the_maximum() {
        assert!(Cdc::new(1023).is_none());
        let cdc = Cdc::new(1024).unwrap();
        assert_eq!((cdc.min, cdc.avg, cdc.max), (768, 256, 1024));
        let cdc = Cdc::new(1 << 20).unwrap();
        assert_eq!((cdc.min, cdc.avg, cdc.max), (768 << 10, 256 << 10, 1 << 20));
        let cdc = Cdc::new(64 << 20).unwrap();
        assert_eq!((cdc.min, cdc.avg, cdc.max), (1 << 20, 4 << 20, 16 << 20));
    }
}
