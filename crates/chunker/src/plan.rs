//! Planning: from a file's structure to the list of chunk spans.

use std::borrow::Cow;
use std::io::{Read, Seek};

use chunk_model::Strategy;
use fastcdc::v2020;

use crate::format::{Format, SNIFF_LEN, detect};
use crate::parse::{self, Region, Regions};
use crate::source::{Source, Stop};

/// The default maximum chunk size: 1 MiB.
pub const DEFAULT_MAX_CHUNK_SIZE: u64 = 1 << 20;

/// The pattern of chunks cut by size (or by content, in `adaptive`) without a
/// structure of their own.
pub const FIXED_SIZE: &str = "FIXED_SIZE";

/// How to cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// Semantic, size or adaptive.
    pub strategy: Strategy,
    /// No chunk is larger than this; at least 1.
    pub max_chunk_size: u64,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Semantic,
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
        }
    }
}

/// One chunk to be: a byte range of the file and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte.
    pub offset: u64,
    /// Length in bytes, 1 to the maximum chunk size.
    pub size: u64,
    /// Pattern name (`PNG_IDAT`, `ISOBMFF_MDAT_KEYFRAMES`, `FIXED_SIZE`, …).
    pub pattern: Cow<'static, str>,
    /// The span starts with a video keyframe.
    pub is_keyframe: bool,
}

impl Span {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// How a file will be cut: spans that tile it exactly, none larger than the maximum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The detected format.
    pub format: Format,
    /// The strategy used.
    pub strategy: Strategy,
    /// The maximum chunk size used.
    pub max_chunk_size: u64,
    /// The file's length.
    pub file_size: u64,
    /// The spans, in file order.
    pub spans: Vec<Span>,
    /// Where the format's structure stopped being recognized, if before the end (the
    /// rest was cut by size), and why.
    pub fallback: Option<Fallback>,
}

/// The part of a file cut by size because its structure was truncated, corrupt, or
/// followed by unknown trailing data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// Offset where size chunking took over.
    pub offset: u64,
    /// Why.
    pub reason: String,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Reading the input failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration cannot produce chunks.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The spans do not tile the file or exceed the maximum: a bug in the chunker,
    /// caught before anything is written.
    #[error("chunk plan violates its invariants: {0}")]
    Invariant(String),
}

impl Plan {
    /// Checks the invariants: the spans tile `[0, file_size)` with no gap or overlap,
    /// and each is 1 to `max_chunk_size` bytes long.
    pub fn check(&self) -> Result<(), PlanError> {
        let mut at = 0u64;
        for (i, span) in self.spans.iter().enumerate() {
            if span.offset != at {
                return Err(PlanError::Invariant(format!(
                    "span {i} starts at {} but the previous one ends at {at}",
                    span.offset
                )));
            }
            if span.size == 0 || span.size > self.max_chunk_size {
                return Err(PlanError::Invariant(format!(
                    "span {i} has size {} (maximum {})",
                    span.size, self.max_chunk_size
                )));
            }
            at = span.end();
        }
        if at != self.file_size {
            return Err(PlanError::Invariant(format!(
                "spans end at {at} but the file has {} bytes",
                self.file_size
            )));
        }
        Ok(())
    }

    /// Number of spans that start with a keyframe.
    pub fn keyframe_count(&self) -> usize {
        self.spans.iter().filter(|s| s.is_keyframe).count()
    }
}

/// Plans the chunks of the `len`-byte input `reader`: detects the format, parses its
/// structure (reading headers, never the whole input at once), merges small neighbouring
/// structures of one kind, splits those larger than the maximum (by size, or by content
/// in `adaptive`), and checks the invariants.
pub fn plan<R: Read + Seek>(
    reader: R,
    len: u64,
    config: &ChunkerConfig,
) -> Result<Plan, PlanError> {
    if config.max_chunk_size == 0 {
        return Err(PlanError::InvalidConfig(
            "max chunk size must be at least 1 byte".into(),
        ));
    }
    let mut src = Source::new(reader, len)?;
    let head = match src.read_upto(0, SNIFF_LEN) {
        Ok(head) => head,
        Err(Stop::Io(e)) => return Err(e.into()),
        Err(Stop::Corrupt(_)) => Vec::new(),
    };
    let format = detect(&head);

    let mut regions = Regions::default();
    let mut fallback = None;
    if config.strategy != Strategy::Size && format.is_structured() {
        match parse::parse(format, &mut src, &mut regions) {
            Ok(()) if regions.end < len => {
                fallback = Some(Fallback {
                    offset: regions.end,
                    reason: format!(
                        "{} bytes of unknown data after the {format} structure",
                        len - regions.end
                    ),
                });
            }
            Ok(()) => {}
            Err(Stop::Io(e)) => return Err(e.into()),
            Err(Stop::Corrupt(reason)) => {
                fallback = Some(Fallback {
                    offset: regions.end,
                    reason,
                });
            }
        }
    }
    if let Some(fallback) = &fallback {
        tracing::warn!(
            format = format.name(),
            offset = fallback.offset,
            reason = %fallback.reason,
            "structure not recognized to the end; cutting the rest by size"
        );
    }
    debug_assert!(regions.end <= len);
    regions.push(len - regions.end, FIXED_SIZE);

    let max = config.max_chunk_size;
    let merged = if config.strategy == Strategy::Size {
        regions.list
    } else {
        coalesce(regions.list, max)
    };
    let mut spans = Vec::with_capacity(merged.len() + (len / max) as usize);
    for region in merged {
        if region.size <= max {
            spans.push(Span {
                offset: region.offset,
                size: region.size,
                pattern: region.pattern,
                is_keyframe: region.keyframe,
            });
        } else if config.strategy == Strategy::Adaptive && cdc_sizes(max).is_some() {
            split_by_content(&mut src, &region, max, &mut spans)?;
        } else {
            split_by_size(&region, max, &mut spans);
        }
    }
    let plan = Plan {
        format,
        strategy: config.strategy,
        max_chunk_size: max,
        file_size: len,
        spans,
        fallback,
    };
    plan.check()?;
    Ok(plan)
}

/// Merges runs of neighbouring regions with the same pattern while the result stays
/// within `max`, so a PNG's hundreds of 8 KiB IDATs or an AVI's frames make a few
/// chunks instead of thousands. A keyframe region never joins a chunk that does not
/// start with a keyframe.
fn coalesce(regions: Vec<Region>, max: u64) -> Vec<Region> {
    let mut out: Vec<Region> = Vec::with_capacity(regions.len());
    for region in regions {
        if let Some(last) = out.last_mut()
            && last.pattern == region.pattern
            && last.size + region.size <= max
            && (last.keyframe || !region.keyframe)
        {
            last.size += region.size;
            continue;
        }
        out.push(region);
    }
    out
}

fn split_by_size(region: &Region, max: u64, spans: &mut Vec<Span>) {
    let end = region.offset + region.size;
    let mut at = region.offset;
    while at < end {
        let size = max.min(end - at);
        spans.push(piece(region, at, size));
        at += size;
    }
}

/// The span for `[at, at + size)` of `region`: the first piece keeps the keyframe
/// flag, later ones take the region's rest pattern.
fn piece(region: &Region, at: u64, size: u64) -> Span {
    let first = at == region.offset;
    Span {
        offset: at,
        size,
        pattern: match (&region.rest_pattern, first) {
            (Some(rest), false) => rest.clone(),
            _ => region.pattern.clone(),
        },
        is_keyframe: region.keyframe && first,
    }
}

/// FastCDC's (min, avg, max) for a maximum chunk size, or `None` when the maximum is
/// below what FastCDC supports. The max is capped at FastCDC's own limit, so chunks
/// never exceed `max`.
pub(crate) fn cdc_sizes(max: u64) -> Option<(u32, u32, u32)> {
    if max < u64::from(v2020::MAXIMUM_MIN) {
        return None;
    }
    let cdc_max = max.min(u64::from(v2020::MAXIMUM_MAX)) as u32;
    let avg = (cdc_max / 2).clamp(v2020::AVERAGE_MIN, v2020::AVERAGE_MAX);
    let min = (cdc_max / 4).clamp(v2020::MINIMUM_MIN, v2020::MINIMUM_MAX);
    Some((min, avg, cdc_max))
}

/// Splits `region` at content-defined cut points: they depend only on the bytes near
/// them, so inserting bytes early in a region moves only the cuts near the insertion.
fn split_by_content<R: Read + Seek>(
    src: &mut Source<R>,
    region: &Region,
    max: u64,
    spans: &mut Vec<Span>,
) -> Result<(), PlanError> {
    let (min, avg, cdc_max) = cdc_sizes(max).expect("checked by the caller");
    let reader = src.reader_at(region.offset)?.take(region.size);
    let mut at = region.offset;
    for chunk in v2020::StreamCDC::new(reader, min, avg, cdc_max) {
        let chunk = chunk.map_err(std::io::Error::from)?;
        spans.push(piece(region, at, chunk.length as u64));
        at += chunk.length as u64;
    }
    src.moved(at);
    if at != region.offset + region.size {
        return Err(PlanError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "input ended at {at} inside a span ending at {}",
                region.offset + region.size
            ),
        )));
    }
    Ok(())
}
