//! WebM / Matroska (EBML): the EBML header, then a Segment whose top-level children
//! (SeekHead, Info, Tracks, Clusters, Cues, …) are the regions.

use std::io::{Read, Seek};

use super::{Pattern, Regions};
use crate::source::{Parsed, Source, corrupt};

/// The EBML header's element ID, as the file's first four bytes.
pub(crate) const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const INFO: u32 = 0x1549_A966;
const TRACKS: u32 = 0x1654_AE6B;
const CLUSTER: u32 = 0x1F43_B675;
const CUES: u32 = 0x1C53_BB6B;
const CHAPTERS: u32 = 0x1043_A770;
const TAGS: u32 = 0x1254_C367;
const ATTACHMENTS: u32 = 0x1941_A469;
const DOC_TYPE: u32 = 0x4282;
const SIMPLE_BLOCK: u32 = 0xA3;

/// An element ID (marker bits kept, as IDs are written) and its length: 1 to 4 bytes.
fn vint_id(buf: &[u8]) -> Option<(u32, usize)> {
    let first = *buf.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return None;
    }
    let bytes = buf.get(..len)?;
    Some((
        bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)),
        len,
    ))
}

/// An element size (`None` for "unknown") and its length: 1 to 8 bytes.
fn vint_size(buf: &[u8]) -> Option<(Option<u64>, usize)> {
    let first = *buf.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let bytes = buf.get(..len)?;
    let mask = 0xFFu8.checked_shr(len as u32).unwrap_or(0);
    let value = bytes[1..]
        .iter()
        .fold(u64::from(first & mask), |v, &b| (v << 8) | u64::from(b));
    let all_ones = (1u64 << (7 * len)) - 1;
    Some(((value != all_ones).then_some(value), len))
}

/// An element header in `buf`: (id, size, header length).
fn header(buf: &[u8]) -> Option<(u32, Option<u64>, usize)> {
    let (id, id_len) = vint_id(buf)?;
    let (size, size_len) = vint_size(&buf[id_len..])?;
    Some((id, size, id_len + size_len))
}

/// The DocType in an EBML header held in memory (`webm`, `matroska`, …).
pub(crate) fn doc_type(head: &[u8]) -> Option<&[u8]> {
    let (id, size, len) = header(head)?;
    if id != EBML {
        return None;
    }
    let end = head.len().min(len.saturating_add(size? as usize));
    let mut at = len;
    while at < end {
        let (id, size, hlen) = header(&head[at..])?;
        let size = size? as usize;
        let body = head.get(at + hlen..at + hlen + size)?;
        if id == DOC_TYPE {
            return Some(body.strip_suffix(&[0]).unwrap_or(body));
        }
        at += hlen + size;
    }
    None
}

/// Reads the element header at `at`.
fn read_header<R: Read + Seek>(
    src: &mut Source<R>,
    at: u64,
) -> Result<(u32, Option<u64>, u64), crate::source::Stop> {
    let buf = src.read_upto(at, 12)?;
    match header(&buf) {
        Some((id, size, len)) => Ok((id, size, len as u64)),
        None => corrupt(format!("invalid EBML element header at offset {at}")),
    }
}

/// `EBML_HEADER`, `EBML_SEGMENT` (the Segment's own header and children without a
/// pattern of their own), `EBML_SEEKHEAD`, `EBML_INFO`, `EBML_TRACKS`, `EBML_CLUSTER`
/// (keyframe when its first SimpleBlock is one), `EBML_CUES`.
pub(crate) fn parse<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    while out.end < src.len() {
        let at = out.end;
        let (id, size, hlen) = read_header(src, at)?;
        match id {
            EBML => {
                let Some(size) = size.filter(|s| at + hlen + s <= src.len()) else {
                    return corrupt("EBML header truncated or of unknown size");
                };
                out.push(hlen + size, "EBML_HEADER");
            }
            SEGMENT => {
                let end = size.map_or(src.len(), |s| (at + hlen).saturating_add(s).min(src.len()));
                out.push(hlen, "EBML_SEGMENT");
                segment_children(src, out, end)?;
            }
            _ => {
                return corrupt(format!(
                    "unexpected top-level EBML element {id:X} at offset {at}"
                ));
            }
        }
    }
    Ok(())
}

fn segment_children<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions, end: u64) -> Parsed {
    while out.end < end {
        let at = out.end;
        let (id, size, hlen) = read_header(src, at)?;
        let size = match size {
            Some(size) => size,
            None if id == CLUSTER => cluster_len(src, at + hlen)? - at - hlen,
            None => return corrupt(format!("element {id:X} at offset {at} has unknown size")),
        };
        let total = hlen + size;
        if at.saturating_add(total) > src.len() {
            return corrupt(format!(
                "element {id:X} at offset {at} runs past the end of the file"
            ));
        }
        let pattern: Pattern = match id {
            SEEK_HEAD => "EBML_SEEKHEAD".into(),
            INFO => "EBML_INFO".into(),
            TRACKS => "EBML_TRACKS".into(),
            CLUSTER => "EBML_CLUSTER".into(),
            CUES => "EBML_CUES".into(),
            _ => "EBML_SEGMENT".into(),
        };
        let keyframe = id == CLUSTER && starts_with_keyframe(src, at + hlen, at + total)?;
        out.push_region(total, pattern, keyframe, None);
    }
    Ok(())
}

/// Where a cluster of unknown size ends: at the first element that cannot be a
/// cluster's child (the next top-level element) or at the end of the file.
fn cluster_len<R: Read + Seek>(
    src: &mut Source<R>,
    mut at: u64,
) -> Result<u64, crate::source::Stop> {
    while at < src.len() {
        let (id, size, hlen) = read_header(src, at)?;
        if matches!(
            id,
            CLUSTER
                | CUES
                | SEEK_HEAD
                | INFO
                | TRACKS
                | CHAPTERS
                | TAGS
                | ATTACHMENTS
                | EBML
                | SEGMENT
        ) {
            return Ok(at);
        }
        let Some(size) = size else {
            return corrupt(format!(
                "cluster child {id:X} at offset {at} has unknown size"
            ));
        };
        at = at.saturating_add(hlen + size);
    }
    if at > src.len() {
        return corrupt("cluster runs past the end of the file");
    }
    Ok(at)
}

/// Whether the cluster whose children start at `from` begins with a key SimpleBlock.
fn starts_with_keyframe<R: Read + Seek>(
    src: &mut Source<R>,
    from: u64,
    end: u64,
) -> Result<bool, crate::source::Stop> {
    let buf = src.read_upto(from, (end - from).min(64) as usize)?;
    let mut at = 0;
    while let Some((id, Some(size), hlen)) = buf.get(at..).and_then(header) {
        if id == SIMPLE_BLOCK {
            // Track number (a size-style VINT), 2 bytes of timecode, then flags.
            let body = &buf[(at + hlen).min(buf.len())..];
            let Some((_, track_len)) = vint_size(body) else {
                return Ok(false);
            };
            return Ok(body
                .get(track_len + 2)
                .is_some_and(|flags| flags & 0x80 != 0));
        }
        if id == 0xA0 {
            return Ok(false); // BlockGroup: keyframe-ness lives in ReferenceBlock
        }
        at = at.saturating_add(hlen).saturating_add(size as usize);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vints() {
        assert_eq!(vint_id(&[0x1A, 0x45, 0xDF, 0xA3]), Some((EBML, 4)));
        assert_eq!(vint_id(&[0xA3]), Some((0xA3, 1)));
        assert_eq!(vint_size(&[0x81]), Some((Some(1), 1)));
        assert_eq!(vint_size(&[0x40, 0x02]), Some((Some(2), 2)));
        assert_eq!(vint_size(&[0xFF]), Some((None, 1)));
        assert_eq!(
            vint_size(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Some((None, 8))
        );
        assert_eq!(vint_size(&[0x00]), None);
    }
}
