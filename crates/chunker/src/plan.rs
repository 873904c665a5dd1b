//! Planning: from a file's structure to the list of chunk spans.

use std::borrow::Cow;
use std::io::{Read, Seek};

use chunk_model::Strategy;

use crate::format::{Format, SNIFF_LEN, detect};
use crate::pack::{Cdc, Labeler, pack};
use crate::parse::{self, Flags, Regions, header_pattern};
use crate::source::{Source, Stop};

/// The default maximum chunk size: 1 MiB.
pub const DEFAULT_MAX_CHUNK_SIZE: u64 = 1 << 20;

/// The default minimum chunk size: 256 KiB, a quarter of the default maximum. Each
/// chunk costs a directory, two files, a webhook entry, an object and a completion
/// record whatever its size, so chunks are packed at least this large where the file
/// allows it; and content-defined cuts need room between the minimum and the maximum
/// (FastCDC's average is half the maximum).
pub const DEFAULT_MIN_CHUNK_SIZE: u64 = 256 << 10;

/// The pattern of chunks cut by size (or by content) without a structure of their own:
/// text, unknown binary, the unrecognized rest of a file.
pub const FIXED_SIZE: &str = "FIXED_SIZE";

/// How to cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// Semantic, size or adaptive.
    pub strategy: Strategy,
    /// No chunk is larger than this; at least 1.
    pub max_chunk_size: u64,
    /// No chunk is smaller than this unless the file's structure forces it: its header,
    /// a keyframe right after a short group of pictures, its end, a file smaller than
    /// this. A minimum above a quarter of the maximum is lowered to a quarter of the
    /// maximum (content-defined cuts need room between the two). Ignored by `size`.
    pub min_chunk_size: u64,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Semantic,
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
            min_chunk_size: DEFAULT_MIN_CHUNK_SIZE,
        }
    }
}

impl ChunkerConfig {
    /// `strategy` with the default maximum and minimum sizes.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }

    /// The minimum actually used: `min_chunk_size`, at most a quarter of the maximum.
    pub fn effective_min_chunk_size(&self) -> u64 {
        self.min_chunk_size.min(self.max_chunk_size / 4)
    }
}

/// Bytes of one kind of structure inside a chunk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Structure {
    /// The structures' pattern name.
    pub pattern: Cow<'static, str>,
    /// How many of them the chunk holds, whole or in part.
    pub count: u64,
    /// How many of the chunk's bytes they make up.
    pub bytes: u64,
}

/// One chunk to be: a byte range of the file and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte.
    pub offset: u64,
    /// Length in bytes, 1 to the maximum chunk size.
    pub size: u64,
    /// Pattern name (`PNG_IDAT`, `ISOBMFF_MDAT_KEYFRAMES`, `FIXED_SIZE`, …): the header
    /// chunk's name (`PNG_HEADER`, …), else that of the structure the span starts in.
    pub pattern: Cow<'static, str>,
    /// The span starts with a video keyframe.
    pub is_keyframe: bool,
    /// The structures the span holds, by pattern, in file order (for `size`, one
    /// `FIXED_SIZE`).
    pub structures: Vec<Structure>,
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
    /// The minimum chunk size used (see [`ChunkerConfig::min_chunk_size`]); 0 for `size`.
    pub min_chunk_size: u64,
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
        let mut check = SpanCheck::new(self.max_chunk_size, u64::MAX);
        for span in &self.spans {
            check.next(span)?;
        }
        check.end(self.file_size)
    }

    /// Number of spans that start with a keyframe.
    pub fn keyframe_count(&self) -> usize {
        self.spans.iter().filter(|s| s.is_keyframe).count()
    }
}

/// The plan's invariants, checked span by span as the spans are cut.
struct SpanCheck {
    max_chunk_size: u64,
    max_spans: u64,
    /// Where the next span must start.
    at: u64,
    count: u64,
}

impl SpanCheck {
    fn new(max_chunk_size: u64, max_spans: u64) -> Self {
        SpanCheck {
            max_chunk_size,
            max_spans,
            at: 0,
            count: 0,
        }
    }

    fn next(&mut self, span: &Span) -> Result<(), PlanError> {
        let i = self.count;
        if span.offset != self.at {
            return Err(PlanError::Invariant(format!(
                "span {i} starts at {} but the previous one ends at {}",
                span.offset, self.at
            )));
        }
        if span.size == 0 || span.size > self.max_chunk_size {
            return Err(PlanError::Invariant(format!(
                "span {i} has size {} (maximum {})",
                span.size, self.max_chunk_size
            )));
        }
        if i == self.max_spans {
            return Err(PlanError::Invariant(format!(
                "more than {} spans: a span below the minimum size where no boundary forced it",
                self.max_spans
            )));
        }
        self.at = span.end();
        self.count += 1;
        Ok(())
    }

    fn end(&self, file_size: u64) -> Result<(), PlanError> {
        if self.at != file_size {
            return Err(PlanError::Invariant(format!(
                "spans end at {} but the file has {file_size} bytes",
                self.at
            )));
        }
        Ok(())
    }
}

/// Plans the chunks of the `len`-byte input `reader`: detects the format, parses its
/// structure (reading headers, never the whole input at once), then packs the
/// structures into chunks between the minimum and maximum sizes, cutting spans without
/// finer structure by content (see the `pack` module), and checks the invariants. With
/// `size`, the file is cut every `max_chunk_size` bytes and nothing is parsed.
///
/// `semantic` and `adaptive` make the same plan: content-defined cuts, once what
/// `adaptive` added, are part of the semantic plan.
pub fn plan<R: Read + Seek>(
    reader: R,
    len: u64,
    config: &ChunkerConfig,
) -> Result<Plan, PlanError> {
    let mut planner = Planner::new(reader, len, config)?;
    let mut spans = Vec::new();
    planner.cut(&mut |span| {
        spans.push(span);
        Ok::<_, PlanError>(())
    })?;
    let plan = planner.into_plan(spans);
    plan.check()?;
    Ok(plan)
}

/// A plan under way: the format detected and its structure parsed (which reads headers
/// only); [`Planner::cut`] then cuts the spans, handing each on as soon as it is final,
/// so that chunks can be written while the rest of the file is still being cut by
/// content.
pub(crate) struct Planner<R> {
    src: Source<R>,
    format: Format,
    strategy: Strategy,
    max_chunk_size: u64,
    min_chunk_size: u64,
    file_size: u64,
    fallback: Option<Fallback>,
    regions: Regions,
    max_spans: u64,
}

impl<R: Read + Seek> Planner<R> {
    /// Detects the format of the `len`-byte input `reader` and parses its structure.
    pub(crate) fn new(reader: R, len: u64, config: &ChunkerConfig) -> Result<Self, PlanError> {
        if config.max_chunk_size == 0 {
            return Err(PlanError::InvalidConfig(
                "max chunk size must be at least 1 byte".into(),
            ));
        }
        let max = config.max_chunk_size;
        let mut src = Source::new(reader, len)?;
        let head = match src.read_upto(0, SNIFF_LEN) {
            Ok(head) => head,
            Err(Stop::Io(e)) => return Err(e.into()),
            Err(Stop::Corrupt(_)) => Vec::new(),
        };
        let format = detect(&head);
        let mut planner = Planner {
            src,
            format,
            strategy: config.strategy,
            max_chunk_size: max,
            min_chunk_size: 0,
            file_size: len,
            fallback: None,
            regions: Regions::default(),
            max_spans: len.div_ceil(max),
        };
        if config.strategy == Strategy::Size {
            return Ok(planner);
        }

        let regions = &mut planner.regions;
        if format.is_structured() {
            match parse::parse(format, &mut planner.src, regions) {
                Ok(()) if regions.end < len => {
                    planner.fallback = Some(Fallback {
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
                    planner.fallback = Some(Fallback {
                        offset: regions.end,
                        reason,
                    });
                }
            }
        }
        if let Some(fallback) = &planner.fallback {
            tracing::warn!(
                format = format.name(),
                offset = fallback.offset,
                reason = %fallback.reason,
                "structure not recognized to the end; cutting the rest by content"
            );
        }
        debug_assert!(regions.end <= len);
        regions.add(len - regions.end, FIXED_SIZE, Flags::opaque());
        // A header that is the whole file is no header.
        regions.header_end = regions.header_end.filter(|&h| h < len);

        let min = config.effective_min_chunk_size();
        planner.min_chunk_size = min;
        // Packing leaves a chunk below its smallest piece only where a boundary forces
        // it: the header's end, a keyframe, the end of the file.
        let smallest = match Cdc::new(max) {
            Some(cdc) => min.min(cdc.min_piece()),
            None => min,
        }
        .max(1);
        let keyframes = regions.list.iter().filter(|r| r.keyframe).count() as u64;
        planner.max_spans = len / smallest + keyframes + 2;
        Ok(planner)
    }

    /// At most this many spans: the count the chunk directories' names can be chosen
    /// for before the plan is complete (`chunk_model::layout::chunk_dir_name`).
    pub(crate) fn max_spans(&self) -> u64 {
        self.max_spans
    }

    /// The input's length.
    pub(crate) fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The detected format.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Cuts the spans and hands each to `on_span`, in file order, as soon as it is
    /// final, after checking it against the plan's invariants (and, once the last is
    /// cut, that they reach the end of the file). The first error `on_span` returns
    /// stops the cut.
    pub(crate) fn cut<E: From<PlanError>>(
        &mut self,
        on_span: &mut dyn FnMut(Span) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut check = SpanCheck::new(self.max_chunk_size, self.max_spans);
        let mut hand_on = |span: Span| {
            check.next(&span)?;
            on_span(span)
        };
        if self.strategy == Strategy::Size {
            for span in fixed_size(self.file_size, self.max_chunk_size) {
                hand_on(span)?;
            }
        } else {
            let regions = &self.regions;
            let header = regions.header_end.map(|h| (h, header_pattern(self.format)));
            let mut labeler = Labeler::new(&regions.list, header);
            let cdc = Cdc::new(self.max_chunk_size);
            pack(
                &mut self.src,
                &regions.list,
                regions.header_end,
                self.min_chunk_size,
                self.max_chunk_size,
                cdc.as_ref(),
                &mut |end| hand_on(labeler.span(end)),
            )?;
        }
        check.end(self.file_size)?;
        Ok(())
    }

    /// The plan made of `spans`, the spans [`Planner::cut`] handed on.
    pub(crate) fn into_plan(self, spans: Vec<Span>) -> Plan {
        Plan {
            format: self.format,
            strategy: self.strategy,
            max_chunk_size: self.max_chunk_size,
            min_chunk_size: self.min_chunk_size,
            file_size: self.file_size,
            spans,
            fallback: self.fallback,
        }
    }
}

/// `len` bytes cut every `max` bytes.
fn fixed_size(len: u64, max: u64) -> impl Iterator<Item = Span> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at == len {
            return None;
        }
        let size = max.min(len - at);
        let span = Span {
            offset: at,
            size,
            pattern: FIXED_SIZE.into(),
            is_keyframe: false,
            structures: vec![Structure {
                pattern: FIXED_SIZE.into(),
                count: 1,
                bytes: size,
            }],
        };
        at += size;
        Some(span)
    })
}
