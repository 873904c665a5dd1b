//! Format parsers: each walks one format's structure and records it as [`Regions`].
//!
//! A parser records only structures it has verified (header read, size within the
//! file), each starting where the previous ended, so the regions always tile the file
//! from offset 0 up to [`Regions::end`]. When it meets something truncated or corrupt
//! it stops with [`Stop::Corrupt`](crate::source::Stop) and the planner cuts the rest by
//! size. Parsers never decide chunk sizes: the planner merges and splits regions.

pub(crate) mod ebml;
pub(crate) mod isobmff;
pub(crate) mod jpeg;
pub(crate) mod pdf;
pub(crate) mod png;
pub(crate) mod riff;

use std::borrow::Cow;
use std::io::{Read, Seek};

use crate::Format;
use crate::source::{Parsed, Source};

/// A pattern name (`PNG_IDAT`, `ISOBMFF_MDAT_KEYFRAMES`, …).
pub(crate) type Pattern = Cow<'static, str>;

/// One structure of a file, as a parser saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Region {
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) pattern: Pattern,
    /// The region starts with a video keyframe.
    pub(crate) keyframe: bool,
    /// The pattern of a chunk that starts inside the region rather than at its start
    /// (a keyframe group's later pieces no longer start with the keyframe).
    pub(crate) rest_pattern: Option<Pattern>,
    /// A chunk may start here. False for the structures inside a group of pictures (a
    /// frame that is not a keyframe, the audio between two keyframes, a `moof`'s
    /// `mdat`): they travel with the structures before them.
    pub(crate) cut: bool,
    /// The region has no finer structure worth keeping (image data, scan data, a
    /// stream, unknown bytes): the planner may cut it anywhere, by content.
    pub(crate) opaque: bool,
}

impl Region {
    /// One past the last byte.
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// How a region may be cut and named, beyond its pattern (see [`Region`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Flags {
    pub(crate) keyframe: bool,
    pub(crate) rest_pattern: Option<Pattern>,
    /// The region travels with the one before it (no chunk starts here).
    pub(crate) inner: bool,
    pub(crate) opaque: bool,
}

impl Flags {
    /// A region inside a group of pictures.
    pub(crate) fn inner() -> Self {
        Flags {
            inner: true,
            ..Flags::default()
        }
    }

    /// A region without finer structure.
    pub(crate) fn opaque() -> Self {
        Flags {
            opaque: true,
            ..Flags::default()
        }
    }
}

/// The regions a parser recorded, contiguous from offset 0.
#[derive(Debug, Default)]
pub(crate) struct Regions {
    pub(crate) list: Vec<Region>,
    pub(crate) end: u64,
    /// Where the file's header (the small structures before its first media, image
    /// or body structure) ends, when the parser got that far: the planner puts the
    /// header in a chunk of its own.
    pub(crate) header_end: Option<u64>,
}

impl Regions {
    /// Records the next `size` bytes as a structure a chunk may start at.
    pub(crate) fn push(&mut self, size: u64, pattern: impl Into<Pattern>) {
        self.add(size, pattern, Flags::default());
    }

    /// Records the next `size` bytes as `pattern` with `flags`.
    pub(crate) fn add(&mut self, size: u64, pattern: impl Into<Pattern>, flags: Flags) {
        if size == 0 {
            return;
        }
        self.list.push(Region {
            offset: self.end,
            size,
            pattern: pattern.into(),
            keyframe: flags.keyframe,
            rest_pattern: flags.rest_pattern,
            cut: !flags.inner,
            opaque: flags.opaque,
        });
        self.end += size;
    }

    /// Marks the current end as the end of the file's header (the first call wins;
    /// an empty header is none).
    pub(crate) fn end_header(&mut self) {
        if self.header_end.is_none() && self.end > 0 {
            self.header_end = Some(self.end);
        }
    }
}

/// Runs the parser of `format`, if it has one.
pub(crate) fn parse<R: Read + Seek>(
    format: Format,
    src: &mut Source<R>,
    out: &mut Regions,
) -> Parsed {
    match format {
        Format::Png => png::parse(src, out),
        Format::Jpeg => jpeg::parse(src, out),
        Format::Mp4 | Format::Mov => isobmff::parse(src, out),
        Format::Webm | Format::Mkv => ebml::parse(src, out),
        Format::Avi | Format::Wav | Format::Webp => riff::parse(src, out),
        Format::Pdf => pdf::parse(src, out),
        Format::Gif87
        | Format::Gif89
        | Format::Zip
        | Format::Gzip
        | Format::Bmp
        | Format::Text
        | Format::Binary => Ok(()),
    }
}

/// The pattern of a file's header chunk: the small structures before its first media,
/// image or body structure, packed together. It contains `HEADER`, which the detector's
/// priority order looks for; where the format already had such a name it is reused.
pub(crate) fn header_pattern(format: Format) -> &'static str {
    match format {
        Format::Png => "PNG_HEADER",
        Format::Jpeg => "JPEG_HEADER",
        Format::Mp4 | Format::Mov => "ISOBMFF_HEADER",
        Format::Webm | Format::Mkv => "EBML_HEADER",
        Format::Avi => "AVI_RIFF_HEADER",
        Format::Wav | Format::Webp => "RIFF_HEADER",
        Format::Pdf => "PDF_HEADER",
        Format::Gif87
        | Format::Gif89
        | Format::Zip
        | Format::Gzip
        | Format::Bmp
        | Format::Text
        | Format::Binary => "HEADER",
    }
}

/// `prefix` + a four-character code, keeping letters and digits and turning anything
/// else into `_` (so a pattern name is always a plain identifier).
pub(crate) fn fourcc_pattern(prefix: &str, code: &[u8], uppercase: bool) -> Pattern {
    let trimmed = code.strip_suffix(b" ").unwrap_or(code);
    let trimmed = trimmed.strip_suffix(b" ").unwrap_or(trimmed);
    let mut name = String::with_capacity(prefix.len() + 4);
    name.push_str(prefix);
    for &b in trimmed {
        let c = if b.is_ascii_alphanumeric() {
            b as char
        } else {
            '_'
        };
        name.push(if uppercase { c.to_ascii_uppercase() } else { c });
    }
    Cow::Owned(name)
}
