//! PNG: the 8-byte signature, then chunks of length, type, data and CRC.

use std::io::{Read, Seek};

use super::{Flags, Regions, fourcc_pattern};
use crate::source::{Parsed, Source, corrupt};

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// `PNG_SIGNATURE`, then `PNG_<type>` per chunk (`PNG_IHDR`, `PNG_IDAT`, `PNG_IEND`, …).
/// The header ends at the first image data chunk; image data (`IDAT`, and an animated
/// PNG's `fdAT`) is opaque: one compressed stream split across chunks at arbitrary
/// points, so a run of them is cut by content. Bytes after `IEND` are left to the
/// planner.
pub(crate) fn parse<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    let mut sig = [0; 8];
    src.read_at(0, &mut sig)?;
    if &sig != SIGNATURE {
        return corrupt("bad PNG signature");
    }
    out.push(8, "PNG_SIGNATURE");
    loop {
        let at = out.end;
        if at == src.len() {
            return corrupt("PNG ends without an IEND chunk");
        }
        let mut header = [0; 8];
        src.read_at(at, &mut header)?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = &header[4..8];
        if len > 0x7FFF_FFFF || !kind.iter().all(u8::is_ascii_alphabetic) {
            return corrupt(format!("invalid PNG chunk header at offset {at}"));
        }
        let size = 12 + u64::from(len);
        if at + size > src.len() {
            return corrupt(format!(
                "PNG chunk {} at offset {at} runs past the end of the file",
                String::from_utf8_lossy(kind)
            ));
        }
        if kind == b"IDAT" || kind == b"fdAT" {
            out.end_header();
            out.add(size, fourcc_pattern("PNG_", kind, false), Flags::opaque());
        } else {
            out.push(size, fourcc_pattern("PNG_", kind, false));
        }
        if kind == b"IEND" {
            return Ok(());
        }
    }
}
