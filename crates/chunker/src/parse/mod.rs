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
    /// The pattern of the pieces after the first when the region must be split (a
    /// keyframe group's later pieces no longer start with the keyframe).
    pub(crate) rest_pattern: Option<Pattern>,
}

/// The regions a parser recorded, contiguous from offset 0.
#[derive(Debug, Default)]
pub(crate) struct Regions {
    pub(crate) list: Vec<Region>,
    pub(crate) end: u64,
}

impl Regions {
    /// Records the next `size` bytes as `pattern`.
    pub(crate) fn push(&mut self, size: u64, pattern: impl Into<Pattern>) {
        self.push_region(size, pattern.into(), false, None);
    }

    pub(crate) fn push_region(
        &mut self,
        size: u64,
        pattern: Pattern,
        keyframe: bool,
        rest_pattern: Option<Pattern>,
    ) {
        if size == 0 {
            return;
        }
        self.list.push(Region {
            offset: self.end,
            size,
            pattern,
            keyframe,
            rest_pattern,
        });
        self.end += size;
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
