//! RIFF: AVI (including OpenDML `AVIX` extensions), WAV and WebP.

use std::io::{Read, Seek};

use super::{Pattern, Regions, fourcc_pattern};
use crate::source::{Parsed, Source, corrupt};

/// For AVI: `AVI_RIFF_HEADER`, `AVI_LIST_HEADERS` (the `hdrl` LIST), the `movi` LIST's
/// 12-byte header as `AVI_LIST_MOVIE_DATA` followed by its chunks as `AVI_VIDEO_FRAME`
/// (`##dc`, `##db`), `AVI_AUDIO_DATA` (`##wb`) or `AVI_LIST_MOVIE_DATA` (anything else),
/// `AVI_INDEX` (`idx1`) and `RIFF_<fourcc>` for other chunks (`RIFF_JUNK`, and a LIST
/// as `RIFF_<list type>`). For WAV and WebP: `RIFF_HEADER`, then `RIFF_<fourcc>` per
/// chunk (`RIFF_fmt`, `RIFF_data`, `RIFF_VP8X`, `RIFF_VP8`, …).
pub(crate) fn parse<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    loop {
        let at = out.end;
        let mut head = [0; 12];
        src.read_at(at, &mut head)?;
        if &head[..4] != b"RIFF" {
            if at == 0 {
                return corrupt("not a RIFF file");
            }
            // Data after the RIFF form (an ID3 tag after a WAV, …) is the planner's.
            return Ok(());
        }
        let size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        let form = [head[8], head[9], head[10], head[11]];
        let avi = &form == b"AVI " || &form == b"AVIX";
        out.push(
            12,
            if avi {
                "AVI_RIFF_HEADER"
            } else {
                "RIFF_HEADER"
            },
        );
        // A RIFF size past the end (a recording cut short) still lets the chunks that
        // are complete be recognized.
        let end = (at + 8 + size).min(src.len());
        if size < 4 {
            return corrupt(format!("RIFF size {size} at offset {at}"));
        }
        chunks(src, out, end, avi, false)?;
        if out.end >= src.len() {
            return Ok(());
        }
    }
}

fn chunks<R: Read + Seek>(
    src: &mut Source<R>,
    out: &mut Regions,
    end: u64,
    avi: bool,
    in_movi: bool,
) -> Parsed {
    while out.end < end {
        let at = out.end;
        if at + 8 > end {
            return corrupt(format!("RIFF chunk header cut off at offset {at}"));
        }
        let mut head = [0; 12];
        src.read_at(at, &mut head[..8])?;
        let fourcc = [head[0], head[1], head[2], head[3]];
        let size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        if at + 8 + size > end {
            return corrupt(format!(
                "RIFF chunk {} at offset {at} runs past its container",
                String::from_utf8_lossy(&fourcc)
            ));
        }
        // Chunks are padded to an even size; a missing pad byte at the very end of the
        // file is tolerated.
        let total = (8 + size + (size & 1)).min(end - at);
        let is_list = &fourcc == b"LIST";
        let list_type = if is_list && size >= 4 {
            src.read_at(at + 8, &mut head[8..12])?;
            Some([head[8], head[9], head[10], head[11]])
        } else {
            None
        };
        if !avi {
            out.push(total, fourcc_pattern("RIFF_", &fourcc, false));
            continue;
        }
        if in_movi {
            let pattern: Pattern = match &fourcc[2..] {
                b"dc" | b"db" => "AVI_VIDEO_FRAME".into(),
                b"wb" => "AVI_AUDIO_DATA".into(),
                _ => "AVI_LIST_MOVIE_DATA".into(),
            };
            out.push(total, pattern);
            continue;
        }
        match (list_type.as_ref(), &fourcc) {
            (Some(b"hdrl"), _) => out.push(total, "AVI_LIST_HEADERS"),
            (Some(b"movi"), _) => {
                out.push(12, "AVI_LIST_MOVIE_DATA");
                chunks(src, out, at + 8 + size, true, true)?;
                // The pad byte of an odd-sized movi LIST.
                out.push(at + total - out.end, "AVI_LIST_MOVIE_DATA");
            }
            (Some(list_type), _) => out.push(total, fourcc_pattern("RIFF_", list_type, false)),
            (None, b"idx1") => out.push(total, "AVI_INDEX"),
            (None, _) => out.push(total, fourcc_pattern("RIFF_", &fourcc, false)),
        }
    }
    Ok(())
}
