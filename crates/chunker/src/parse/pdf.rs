//! PDF: the header, each indirect object (`N G obj … endobj`), and each cross-reference
//! section (`xref` table or `startxref`, trailer, through `%%EOF`).
//!
//! Every byte belongs to a region: whitespace and comments between two structures go
//! with the one before (the original chunker dropped them, so its chunks did not add
//! up to the file).

use std::io::{Read, Seek};

use memchr::memmem;

use super::{Flags, Pattern, Regions};
use crate::source::{Parsed, Source, Stop, corrupt};

const HEADER: &str = "PDF_HEADER";
const OBJECT: &str = "PDF_OBJECT";
/// Cross-reference table, trailer, `startxref` and `%%EOF`. The original chunker had no
/// name for them because it dropped these bytes.
const XREF: &str = "PDF_XREF";

/// `PDF_HEADER`, `PDF_OBJECT` per object, `PDF_XREF` per cross-reference section. An
/// object with a stream is opaque (compressed page content, an image, a font: cut by
/// content when large). No header is marked: the first chunk starts with `PDF_HEADER`
/// and takes the objects after it.
pub(crate) fn parse<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    let mut start = 0u64; // start of the region being built
    let mut pattern: Pattern = HEADER.into();
    let mut opaque = false;
    let mut cursor = 5u64; // past "%PDF-"
    loop {
        let flags = || Flags {
            opaque,
            ..Flags::default()
        };
        let Some((token, at)) = next_top_token(src, cursor)? else {
            // The rest (line ends, a final comment) belongs to the last region.
            out.add(src.len() - start, pattern, flags());
            return Ok(());
        };
        out.add(at - start, pattern, flags());
        start = at;
        opaque = false;
        match token {
            Token::Object { after_obj } => {
                pattern = OBJECT.into();
                (cursor, opaque) = object_end(src, after_obj)?;
            }
            Token::Xref => {
                pattern = XREF.into();
                let Some(eof) = find_any(src, at, &[b"%%EOF"])?.map(|(_, p)| p) else {
                    return corrupt(format!(
                        "PDF cross-reference section at offset {at} has no %%EOF"
                    ));
                };
                cursor = eof + 5;
            }
        }
    }
}

enum Token {
    /// An object starts at the token's offset; `obj` ends at `after_obj`.
    Object { after_obj: u64 },
    /// A cross-reference section (`xref`, `trailer` or `startxref`) starts here.
    Xref,
}

/// The earliest occurrence of any of `patterns` at or after `from`: (index, offset).
fn find_any<R: Read + Seek>(
    src: &mut Source<R>,
    from: u64,
    patterns: &[&[u8]],
) -> Result<Option<(usize, u64)>, Stop> {
    let longest = patterns.iter().map(|p| p.len()).max().unwrap_or(1);
    let mut which = 0;
    let found = src.scan(from, longest - 1, |window, _| {
        let mut best: Option<usize> = None;
        for (i, pattern) in patterns.iter().enumerate() {
            let limit = best.map_or(window.len(), |b| (b + pattern.len()).min(window.len()));
            if let Some(p) = memmem::find(&window[..limit], pattern)
                && best.is_none_or(|b| p < b)
            {
                best = Some(p);
                which = i;
            }
        }
        best
    })?;
    Ok(found.map(|at| (which, at)))
}

fn next_top_token<R: Read + Seek>(
    src: &mut Source<R>,
    mut cursor: u64,
) -> Result<Option<(Token, u64)>, Stop> {
    loop {
        let Some((which, at)) = find_any(src, cursor, &[b"obj", b"xref", b"trailer"])? else {
            return Ok(None);
        };
        match which {
            0 => {
                if let Some(start) = object_start(src, at)? {
                    return Ok(Some((Token::Object { after_obj: at + 3 }, start)));
                }
                cursor = at + 3;
            }
            1 => {
                let before = if at >= 5 {
                    src.read_upto(at - 5, 5)?
                } else {
                    Vec::new()
                };
                let start = if before == b"start" { at - 5 } else { at };
                return Ok(Some((Token::Xref, start)));
            }
            _ => return Ok(Some((Token::Xref, at))),
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0C | 0x00)
}

/// If the `obj` keyword at `at` is the `obj` of `N G obj`, the offset of `N`.
fn object_start<R: Read + Seek>(src: &mut Source<R>, at: u64) -> Result<Option<u64>, Stop> {
    let back = at.min(40);
    let before = src.read_upto(at - back, back as usize)?;
    let after = src.read_upto(at + 3, 1)?;
    if after.first().is_some_and(|&b| b.is_ascii_alphanumeric()) {
        return Ok(None); // "object", "objstm", …
    }
    // Walk back: space, generation digits, space, object number digits.
    let mut i = before.len();
    let mut take = |pred: fn(u8) -> bool| {
        let end = i;
        while i > 0 && pred(before[i - 1]) {
            i -= 1;
        }
        end - i
    };
    if take(is_space) == 0
        || take(|b| b.is_ascii_digit()) == 0
        || take(is_space) == 0
        || take(|b| b.is_ascii_digit()) == 0
    {
        return Ok(None);
    }
    // The number must not continue a longer token.
    let boundary = i == 0 || !before[i - 1].is_ascii_alphanumeric() || before.len() < back as usize;
    Ok(boundary.then(|| at - back + i as u64))
}

/// The offset just past the `endobj` of the object whose `obj` keyword ends at `from`,
/// and whether the object has a stream.
fn object_end<R: Read + Seek>(src: &mut Source<R>, from: u64) -> Result<(u64, bool), Stop> {
    match find_any(src, from, &[b"stream", b"endobj"])? {
        Some((0, at)) => {
            // Stream data is binary: skip to its endstream before looking for endobj.
            let Some((_, end)) = find_any(src, at + 6, &[b"endstream"])? else {
                return corrupt(format!("PDF stream at offset {at} has no endstream"));
            };
            match find_any(src, end + 9, &[b"endobj"])? {
                Some((_, e)) => Ok((e + 6, true)),
                None => corrupt(format!("PDF object before offset {from} has no endobj")),
            }
        }
        Some((_, at)) => Ok((at + 6, false)),
        None => corrupt(format!("PDF object before offset {from} has no endobj")),
    }
}
