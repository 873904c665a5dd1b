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

    /// Appends to `ends` the end of each content-defined piece of `[from, to)`, settling
    /// them as it goes: all but the last two (the last piece stays open, and the one
    /// before it may yet take a small chunk after it).
    ///
    /// Reads only what FastCDC looks at: for each piece, the bytes from `min` to at most
    /// `max` past its start, keeping those already read that the next piece needs. The
    /// cut points are those of `StreamCDC` over the same bytes.
    fn split<R: Read + Seek, E: From<PlanError>>(
        &self,
        src: &mut Source<R>,
        from: u64,
        to: u64,
        buf: &mut Vec<u8>,
        ends: &mut Ends<'_, E>,
    ) -> Result<(), E> {
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
                ends.list.push(to);
                break;
            }
            let n = remaining.min(self.max as u64) as usize;
            if have < n {
                src.read_at(at + have as u64, &mut buf[have..n])
                    .map_err(stop_error)?;
                have = n;
            }
            let count = self.cut(&buf[..n]);
            at += count as u64;
            ends.list.push(at);
            ends.settle(2)?;
            if count + skip < have {
                buf.copy_within(count + skip..have, skip);
                have -= count;
            } else {
                have = skip;
            }
        }
        Ok(())
    }

    /// The smallest piece [`Cdc::split`] cuts before the end of its span.
    pub(crate) fn min_piece(&self) -> u64 {
        self.min as u64
    }
}

/// Chunk ends in file order, each handed on as soon as packing can no longer move it.
pub(crate) struct Ends<'s, E> {
    list: Vec<u64>,
    /// `list[..settled]` went to `sink`.
    settled: usize,
    sink: &'s mut dyn FnMut(u64) -> Result<(), E>,
}

impl<E> Ends<'_, E> {
    /// Hands on every end but the last `open` ones, which packing may still drop or move
    /// (see [`Packer::emit`]).
    fn settle(&mut self, open: usize) -> Result<(), E> {
        while self.settled + open < self.list.len() {
            (self.sink)(self.list[self.settled])?;
            self.settled += 1;
        }
        Ok(())
    }

    /// Drops the last end, which must not have been handed on.
    fn pop(&mut self) -> Option<u64> {
        debug_assert!(self.list.len() > self.settled, "a settled end moved");
        self.list.pop()
    }

    /// The last end, which must not have been handed on.
    fn last_mut(&mut self) -> Option<&mut u64> {
        debug_assert!(self.list.len() > self.settled, "a settled end moved");
        self.list.last_mut()
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
struct Packer<'a, 's, R, E> {
    src: &'a mut Source<R>,
    min: u64,
    max: u64,
    cdc: Option<&'a Cdc>,
    buf: Vec<u8>,
    ends: Ends<'s, E>,
    /// The chunk being filled: `[start, end)`.
    start: u64,
    end: u64,
    /// `start` was chosen inside a span (by content or size), so it may move.
    soft: bool,
}

impl<R: Read + Seek, E: From<PlanError>> Packer<'_, '_, R, E> {
    fn add(&mut self, group: Group) -> Result<(), E> {
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
            self.emit()?;
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
            self.emit()?;
            group.start
        };
        let first = self.ends.list.len();
        match self.cdc {
            Some(cdc) => cdc.split(self.src, from, group.end, &mut self.buf, &mut self.ends)?,
            None => {
                let mut at = from;
                while at < group.end {
                    at = (at + self.max).min(group.end);
                    self.ends.list.push(at);
                    self.ends.settle(2)?;
                }
            }
        }
        // The last piece stays open: the structures after it may join it.
        let last = self.ends.pop();
        debug_assert_eq!(last, Some(group.end));
        if self.ends.list.len() > first {
            self.start = *self.ends.list.last().expect("a piece before the last");
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
    fn emit(&mut self) -> Result<(), E> {
        if self.end == self.start {
            return Ok(());
        }
        if self.end - self.start < self.min && self.soft {
            let list = &self.ends.list;
            let before = list.len().checked_sub(2).map_or(0, |i| list[i]);
            let combined = self.end - before;
            if combined <= self.max {
                self.ends.pop();
            } else if let Some(cut) = self.ends.last_mut() {
                *cut = before + combined / 2;
            }
        }
        self.ends.list.push(self.end);
        self.start = self.end;
        self.soft = false;
        self.ends.settle(1)
    }
}

/// Hands `sink` the end of each chunk of the file whose structure is `regions`
/// (contiguous from 0 to the file's end), with `header_end` as a forced boundary, in
/// order and as soon as it is final: a long span's pieces go out while it is still being
/// cut. The first error `sink` returns stops packing.
pub(crate) fn pack<R: Read + Seek, E: From<PlanError>>(
    src: &mut Source<R>,
    regions: &[Region],
    header_end: Option<u64>,
    min: u64,
    max: u64,
    cdc: Option<&Cdc>,
    sink: &mut dyn FnMut(u64) -> Result<(), E>,
) -> Result<(), E> {
    let mut packer = Packer {
        src,
        min,
        max,
        cdc,
        buf: Vec::new(),
        ends: Ends {
            list: Vec::new(),
            settled: 0,
            sink,
        },
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
            packer.add(g)?;
        }
        if forced {
            packer.emit()?;
        }
        group = Some(Group {
            start: region.offset,
            end: region.end(),
            keyframe: region.keyframe,
            opaque: region.opaque,
        });
    }
    if let Some(g) = group {
        packer.add(g)?;
    }
    packer.emit()?;
    packer.ends.settle(0)
}

/// A read past the end while cutting by content means the file shrank.
fn stop_error<E: From<PlanError>>(stop: Stop) -> E {
    let error = match stop {
        Stop::Io(e) => PlanError::Io(e),
        Stop::Corrupt(reason) => PlanError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{reason} (the file shrank while being read?)"),
        )),
    };
    error.into()
}

/// Turns chunk ends into spans named by the structures they hold, one end at a time.
///
/// The naming rule: a chunk inside the header is named `header` (`PNG_HEADER`, …); any
/// other chunk after the structure its first byte belongs to — that structure's pattern
/// when the chunk starts with it, else its `rest_pattern` if it has one (a keyframe
/// group's later pieces are `ISOBMFF_MDAT_MEDIA`). A chunk is a keyframe only when it
/// starts exactly at a structure that starts with a keyframe. Every chunk lists the
/// structures it holds, by pattern, in file order.
pub(crate) struct Labeler<'r> {
    regions: &'r [Region],
    header: Option<(u64, &'static str)>,
    /// The first region that ends after the next chunk's start.
    first: usize,
    /// The next chunk's start.
    start: u64,
}

impl<'r> Labeler<'r> {
    pub(crate) fn new(regions: &'r [Region], header: Option<(u64, &'static str)>) -> Self {
        Labeler {
            regions,
            header,
            first: 0,
            start: 0,
        }
    }

    /// The span of the next chunk, which ends at `end`.
    pub(crate) fn span(&mut self, end: u64) -> Span {
        let start = self.start;
        while self.regions[self.first].end() <= start {
            self.first += 1;
        }
        let region = &self.regions[self.first];
        let at_start = region.offset == start;
        let (pattern, is_keyframe): (Pattern, bool) = match self.header {
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
        for r in self.regions[self.first..]
            .iter()
            .take_while(|r| r.offset < end)
        {
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
        self.start = end;
        Span {
            offset: start,
            size: end - start,
            pattern,
            is_keyframe,
            structures,
        }
    }
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
            let mut found = Vec::new();
            let mut sink = |end| {
                found.push(end);
                Ok::<_, PlanError>(())
            };
            let mut ends = Ends {
                list: Vec::new(),
                settled: 0,
                sink: &mut sink,
            };
            cdc.split(&mut src, 0, data.len() as u64, &mut Vec::new(), &mut ends)
                .unwrap();
            ends.settle(0).unwrap();
            let mut want = Vec::new();
            let stream =
                v2020::StreamCDC::new(&data[..], cdc.min as u32, cdc.avg as u32, cdc.max as u32);
            for chunk in stream {
                let chunk = chunk.unwrap();
                want.push(chunk.offset + chunk.length as u64);
            }
            assert_eq!(found, want, "max {max}");
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
