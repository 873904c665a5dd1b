//! WebM / Matroska (EBML): the EBML header, then a Segment whose top-level children
//! (SeekHead, Info, Tracks, Clusters, Cues, …) are the regions.
//!
//! A cluster whose first video block is a keyframe starts a group of pictures; the
//! clusters after it that do not travel with it. The video tracks come from `Tracks`;
//! a file without video, or whose clusters show no keyframe at all, may be cut at
//! every cluster.

use std::io::{Read, Seek};

use super::{Flags, Pattern, Regions};
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
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const REFERENCE_BLOCK: u32 = 0xFB;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_TYPE: u32 = 0x83;
/// TrackType of a video track.
const TRACK_TYPE_VIDEO: u64 = 1;
/// Largest `Tracks` element read for the video track numbers.
const MAX_TRACKS: u64 = 1 << 20;
/// Cluster children looked at for the first video block: enough to pass the audio
/// blocks muxed before it, without walking a whole cluster when there is none.
const MAX_BLOCKS_SCANNED: usize = 256;

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
/// (keyframe when its first video block is one), `EBML_CUES`. The header is everything
/// before the first cluster.
pub(crate) fn parse<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    let first = out.list.len();
    let result = elements(src, out);
    // Only once every cluster is known can a cluster without a keyframe be told to
    // travel with the one before: if none has a keyframe (audio only, or keyframes
    // marked in a way not read here), every cluster stays a cut point.
    let clusters = || {
        out.list[first..]
            .iter()
            .filter(|r| r.pattern == "EBML_CLUSTER")
    };
    if clusters().any(|r| r.keyframe) {
        for region in out.list[first..].iter_mut() {
            if region.pattern == "EBML_CLUSTER" && !region.keyframe {
                region.cut = false;
            }
        }
    }
    result
}

fn elements<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    let mut video = None;
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
                segment_children(src, out, end, &mut video)?;
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

/// The Segment's children up to `end`. `video` is the video track numbers, once
/// `Tracks` has been read (`Some(empty)` for a file without video).
fn segment_children<R: Read + Seek>(
    src: &mut Source<R>,
    out: &mut Regions,
    end: u64,
    video: &mut Option<Vec<u64>>,
) -> Parsed {
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
        if id == TRACKS && size <= MAX_TRACKS {
            let body = src.read_upto(at + hlen, size as usize)?;
            *video = Some(video_tracks(&body));
        }
        if id == CLUSTER {
            out.end_header();
        }
        let keyframe =
            id == CLUSTER && starts_with_keyframe(src, at + hlen, at + total, video.as_deref())?;
        let flags = Flags {
            keyframe,
            ..Flags::default()
        };
        out.add(total, pattern, flags);
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

/// The numbers of the video tracks among the `TrackEntry`s of a `Tracks` body.
fn video_tracks(body: &[u8]) -> Vec<u64> {
    let mut video = Vec::new();
    for (id, entry) in elements_in(body) {
        if id != TRACK_ENTRY {
            continue;
        }
        let (mut number, mut kind) = (None, None);
        for (id, value) in elements_in(entry) {
            match id {
                TRACK_NUMBER => number = Some(uint(value)),
                TRACK_TYPE => kind = Some(uint(value)),
                _ => {}
            }
        }
        if let (Some(number), Some(TRACK_TYPE_VIDEO)) = (number, kind) {
            video.push(number);
        }
    }
    video
}

/// The (id, body) of the elements in `buf`, up to the first malformed one.
fn elements_in(buf: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let (id, size, hlen) = header(buf.get(at..)?)?;
        let body = buf.get(at + hlen..at + hlen + usize::try_from(size?).ok()?)?;
        at += hlen + body.len();
        Some((id, body))
    })
}

/// A big-endian unsigned integer element body.
fn uint(body: &[u8]) -> u64 {
    body.iter().fold(0, |v, &b| (v << 8) | u64::from(b))
}

/// Whether the cluster whose children start at `from` opens with a video keyframe: the
/// first block of a video track (of any track when `video` is unknown) is a key
/// SimpleBlock, or a BlockGroup without a ReferenceBlock. Audio blocks before it are
/// skipped.
fn starts_with_keyframe<R: Read + Seek>(
    src: &mut Source<R>,
    from: u64,
    end: u64,
    video: Option<&[u64]>,
) -> Result<bool, crate::source::Stop> {
    // Unknown tracks: any block will do. Known tracks without video: no keyframes.
    let is_video = |track: u64| video.is_none_or(|v| v.contains(&track));
    let mut at = from;
    for _ in 0..MAX_BLOCKS_SCANNED {
        if at >= end {
            break;
        }
        let buf = src.read_upto(at, (end - at).min(24) as usize)?;
        let Some((id, Some(size), hlen)) = header(&buf) else {
            return Ok(false);
        };
        let body_at = at + hlen as u64;
        match id {
            SIMPLE_BLOCK => {
                // Track number (a size-style VINT), 2 bytes of timecode, then flags.
                let body = src.read_upto(body_at, size.min(12) as usize)?;
                let Some((Some(track), track_len)) = vint_size(&body) else {
                    return Ok(false);
                };
                if is_video(track) {
                    return Ok(body
                        .get(track_len + 2)
                        .is_some_and(|flags| flags & 0x80 != 0));
                }
            }
            BLOCK_GROUP => {
                if let Some(key) = block_group_keyframe(src, body_at, body_at + size, &is_video)? {
                    return Ok(key);
                }
            }
            _ => {}
        }
        at = body_at.saturating_add(size);
    }
    Ok(false)
}

/// For a BlockGroup of a video track, whether it is a keyframe (no ReferenceBlock);
/// `None` for another track's.
fn block_group_keyframe<R: Read + Seek>(
    src: &mut Source<R>,
    from: u64,
    end: u64,
    is_video: &dyn Fn(u64) -> bool,
) -> Result<Option<bool>, crate::source::Stop> {
    let (mut video, mut referenced) = (false, false);
    let mut at = from;
    while at < end {
        let buf = src.read_upto(at, (end - at).min(24) as usize)?;
        let Some((id, Some(size), hlen)) = header(&buf) else {
            break;
        };
        match id {
            BLOCK => {
                let Some((Some(track), _)) = buf.get(hlen..).and_then(vint_size) else {
                    return Ok(None);
                };
                video = is_video(track);
            }
            REFERENCE_BLOCK => referenced = true,
            _ => {}
        }
        at = at.saturating_add(hlen as u64).saturating_add(size);
    }
    Ok(video.then_some(!referenced))
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
