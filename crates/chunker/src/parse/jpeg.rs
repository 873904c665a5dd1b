//! JPEG: SOI, marker segments, entropy-coded scan data after each SOS, EOI.

use std::borrow::Cow;
use std::io::{Read, Seek};

use super::{Flags, Pattern, Regions};
use crate::source::{Parsed, Source, corrupt};

/// `JPEG_SOI`, `JPEG_<marker>` per marker segment (`JPEG_APP0`, `JPEG_DQT`,
/// `JPEG_SOF0`, `JPEG_DHT`, `JPEG_SOS`, …; `JPEG_MARKER_XX` for markers without a
/// name), `JPEG_SCAN_DATA` after each SOS, `JPEG_EOI`. The header ends with the first
/// SOS; scan data is opaque (entropy-coded, cut by content). Bytes after EOI are left to
/// the planner.
pub(crate) fn parse<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    let mut soi = [0; 2];
    src.read_at(0, &mut soi)?;
    if soi != [0xFF, 0xD8] {
        return corrupt("JPEG does not start with SOI");
    }
    out.push(2, "JPEG_SOI");
    loop {
        let at = out.end;
        if at == src.len() {
            return corrupt("JPEG ends without EOI");
        }
        // A marker may be preceded by fill bytes (0xFF); they belong to its region.
        let head = src.read_upto(at, 16)?;
        let fill = head.iter().take_while(|&&b| b == 0xFF).count();
        if fill == 0 {
            return corrupt(format!("expected a JPEG marker at offset {at}"));
        }
        let Some(&code) = head.get(fill) else {
            return corrupt(format!("JPEG marker at offset {at} cut off"));
        };
        let marker_len = fill as u64 + 1;
        match code {
            0x00 => return corrupt(format!("invalid JPEG marker FF00 at offset {at}")),
            0xD9 => {
                out.push(marker_len, "JPEG_EOI");
                return Ok(());
            }
            // Markers without a length field.
            0x01 | 0xD0..=0xD8 => out.push(marker_len, name(code)),
            _ => {
                let mut len = [0; 2];
                src.read_at(at + marker_len, &mut len)?;
                let len = u64::from(u16::from_be_bytes(len));
                if len < 2 {
                    return corrupt(format!("JPEG segment at offset {at} has length {len}"));
                }
                let size = marker_len + len;
                if at + size > src.len() {
                    return corrupt(format!("JPEG segment at offset {at} runs past the end"));
                }
                out.push(size, name(code));
                if code == 0xDA {
                    out.end_header();
                    let scan_start = out.end;
                    match scan_end(src, scan_start)? {
                        Some(end) => out.add(end - scan_start, "JPEG_SCAN_DATA", Flags::opaque()),
                        None => {
                            out.add(src.len() - scan_start, "JPEG_SCAN_DATA", Flags::opaque());
                            return corrupt(
                                "JPEG scan data runs to the end of the file without EOI",
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The offset of the marker that ends the scan starting at `from`: the first 0xFF
/// followed by something other than a stuffed zero, a restart marker or fill.
fn scan_end<R: Read + Seek>(
    src: &mut Source<R>,
    from: u64,
) -> Result<Option<u64>, crate::source::Stop> {
    src.scan(from, 1, |window, _| {
        let mut pos = 0;
        while let Some(i) = memchr::memchr(0xFF, &window[pos..]) {
            let i = pos + i;
            let next = *window.get(i + 1)?;
            if next == 0x00 || next == 0xFF || (0xD0..=0xD7).contains(&next) {
                pos = i + 1;
            } else {
                return Some(i);
            }
        }
        None
    })
}

fn name(code: u8) -> Pattern {
    let fixed = match code {
        0xC4 => "JPEG_DHT",
        0xC8 => "JPEG_JPG",
        0xCC => "JPEG_DAC",
        0xD8 => "JPEG_SOI",
        0xDA => "JPEG_SOS",
        0xDB => "JPEG_DQT",
        0xDC => "JPEG_DNL",
        0xDD => "JPEG_DRI",
        0xDE => "JPEG_DHP",
        0xDF => "JPEG_EXP",
        0xFE => "JPEG_COM",
        0xC0..=0xCF => return Cow::Owned(format!("JPEG_SOF{}", code - 0xC0)),
        0xE0..=0xEF => return Cow::Owned(format!("JPEG_APP{}", code - 0xE0)),
        _ => return Cow::Owned(format!("JPEG_MARKER_{code:02X}")),
    };
    Cow::Borrowed(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names() {
        assert_eq!(name(0xC0), "JPEG_SOF0");
        assert_eq!(name(0xC2), "JPEG_SOF2");
        assert_eq!(name(0xE1), "JPEG_APP1");
        assert_eq!(name(0xC4), "JPEG_DHT");
        assert_eq!(name(0xD3), "JPEG_MARKER_D3");
        assert_eq!(name(0x01), "JPEG_MARKER_01");
    }
}
