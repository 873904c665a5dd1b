//! MP4 / MOV (ISO BMFF): top-level boxes, with `mdat` cut at keyframe samples.
//!
//! Keyframes come from the video tracks' sample tables in `moov`
//! (`trak>mdia>minf>stbl`): `stss` names the sync samples, `stsz` gives every sample's
//! size, `stsc` maps samples to chunks and `stco`/`co64` gives each chunk's file offset;
//! together they give the absolute offset of every keyframe.

use std::borrow::Cow;
use std::io::{Read, Seek};

use super::{Regions, fourcc_pattern};
use crate::source::{Parsed, Source, Stop, corrupt};

/// Largest `moov` read into memory for its sample tables. A movie of several hours has
/// a `moov` of a few MiB; anything beyond this is cut without keyframe information.
const MAX_MOOV: u64 = 64 << 20;
/// Upper bound on samples walked per track, so corrupt tables cannot make the walk
/// run for hours.
const MAX_SAMPLES: u64 = 50_000_000;

const MDAT_KEYFRAMES: &str = "ISOBMFF_MDAT_KEYFRAMES";
const MDAT_MEDIA: &str = "ISOBMFF_MDAT_MEDIA";

struct TopBox {
    offset: u64,
    size: u64,
    header: u64,
    kind: [u8; 4],
}

/// `ISOBMFF_FTYP`, `ISOBMFF_MOOV_METADATA`, `ISOBMFF_FREE_SPACE` (`free`, `skip`),
/// `ISOBMFF_MOOF_FRAGMENT`, `ISOBMFF_SIDX_INDEX`, `ISOBMFF_BOX_<TYPE>` for other boxes,
/// and `mdat` as `ISOBMFF_MDAT_MEDIA` up to the first keyframe, then one
/// `ISOBMFF_MDAT_KEYFRAMES` region per keyframe (the planner packs them into chunks).
pub(crate) fn parse<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    // Walk first, emit after: moov may come after mdat.
    let mut boxes = Vec::new();
    let stop = walk(src, &mut boxes);
    if let Err(Stop::Io(e)) = stop {
        return Err(Stop::Io(e));
    }
    let mut keyframes = Vec::new();
    if let Some(moov) = boxes.iter().find(|b| &b.kind == b"moov") {
        let payload = moov.size - moov.header;
        if payload > MAX_MOOV {
            tracing::warn!(
                size = moov.size,
                "moov too large to read; mdat is cut without keyframes"
            );
        } else {
            let mut bytes = vec![0; payload as usize];
            src.read_at(moov.offset + moov.header, &mut bytes)?;
            match keyframe_offsets(&bytes) {
                Ok(found) => keyframes = found,
                Err(reason) => {
                    tracing::warn!(%reason, "unreadable sample tables; mdat is cut without keyframes")
                }
            }
        }
    }
    for b in &boxes {
        match &b.kind {
            b"mdat" => mdat(out, b, &keyframes),
            kind => out.push(b.size, pattern(kind)),
        }
    }
    stop
}

fn pattern(kind: &[u8; 4]) -> Cow<'static, str> {
    match kind {
        b"ftyp" => "ISOBMFF_FTYP".into(),
        b"moov" => "ISOBMFF_MOOV_METADATA".into(),
        b"free" | b"skip" => "ISOBMFF_FREE_SPACE".into(),
        b"moof" => "ISOBMFF_MOOF_FRAGMENT".into(),
        b"sidx" => "ISOBMFF_SIDX_INDEX".into(),
        other => fourcc_pattern("ISOBMFF_BOX_", other, true),
    }
}

fn walk<R: Read + Seek>(src: &mut Source<R>, boxes: &mut Vec<TopBox>) -> Parsed {
    let mut at = 0;
    while at < src.len() {
        let mut head = [0; 8];
        src.read_at(at, &mut head)?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = [head[4], head[5], head[6], head[7]];
        if !kind.iter().all(|b| (0x20..0x7F).contains(b)) {
            return corrupt(format!("invalid box type at offset {at}"));
        }
        let (size, header) = match size32 {
            0 => (src.len() - at, 8), // to the end of the file
            1 => {
                let mut large = [0; 8];
                src.read_at(at + 8, &mut large)?;
                (u64::from_be_bytes(large), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header {
            return corrupt(format!(
                "box {} at offset {at} has size {size}",
                String::from_utf8_lossy(&kind)
            ));
        }
        if at.checked_add(size).is_none_or(|end| end > src.len()) {
            return corrupt(format!(
                "box {} at offset {at} runs past the end of the file",
                String::from_utf8_lossy(&kind)
            ));
        }
        boxes.push(TopBox {
            offset: at,
            size,
            header,
            kind,
        });
        at += size;
    }
    Ok(())
}

fn mdat(out: &mut Regions, b: &TopBox, keyframes: &[u64]) {
    let payload = b.offset + b.header;
    let end = b.offset + b.size;
    let first = keyframes.partition_point(|&k| k < payload);
    let last = keyframes.partition_point(|&k| k < end);
    let inside = &keyframes[first..last];
    // A keyframe right at the payload start makes the header part of its group.
    let mut start = b.offset;
    let mut key = inside.first() == Some(&payload);
    for &k in inside.iter().filter(|&&k| k > payload) {
        push(out, k - start, key);
        start = k;
        key = true;
    }
    push(out, end - start, key);
}

fn push(out: &mut Regions, size: u64, key: bool) {
    if key {
        out.push_region(size, MDAT_KEYFRAMES.into(), true, Some(MDAT_MEDIA.into()));
    } else {
        out.push_region(size, MDAT_MEDIA.into(), false, None);
    }
}

/// Iterates the boxes in `buf`: (type, payload).
fn children(buf: &[u8]) -> impl Iterator<Item = Result<([u8; 4], &[u8]), String>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + 8 > buf.len() {
            return None;
        }
        let size32 = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        let kind: [u8; 4] = buf[at + 4..at + 8].try_into().expect("4 bytes");
        let (size, header) = match size32 {
            0 => (buf.len() - at, 8),
            1 => match buf.get(at + 8..at + 16) {
                Some(b) => (
                    u64::from_be_bytes(b.try_into().expect("8 bytes")) as usize,
                    16,
                ),
                None => return Some(Err("truncated large box size".to_owned())),
            },
            n => (n as usize, 8),
        };
        if size < header || at + size > buf.len() {
            at = buf.len();
            return Some(Err(format!(
                "box {} has a bad size",
                String::from_utf8_lossy(&kind)
            )));
        }
        let payload = &buf[at + header..at + size];
        at += size;
        Some(Ok((kind, payload)))
    })
}

fn child<'a>(buf: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, String> {
    for item in children(buf) {
        let (k, payload) = item?;
        if &k == kind {
            return Ok(Some(payload));
        }
    }
    Ok(None)
}

/// Absolute offsets of the sync samples of every video track, sorted.
fn keyframe_offsets(moov: &[u8]) -> Result<Vec<u64>, String> {
    let mut keys = Vec::new();
    for item in children(moov) {
        let (kind, trak) = item?;
        if &kind != b"trak" {
            continue;
        }
        let Some(mdia) = child(trak, b"mdia")? else {
            continue;
        };
        let is_video = child(mdia, b"hdlr")?.and_then(|h| h.get(8..12)) == Some(b"vide");
        if !is_video {
            continue;
        }
        let Some(stbl) = child(mdia, b"minf")?
            .map(|m| child(m, b"stbl"))
            .transpose()?
            .flatten()
        else {
            continue;
        };
        track_keyframes(stbl, &mut keys)?;
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

fn be32(buf: &[u8], at: usize) -> Result<u32, String> {
    buf.get(at..at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| "sample table truncated".to_owned())
}

fn be64(buf: &[u8], at: usize) -> Result<u64, String> {
    buf.get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| "sample table truncated".to_owned())
}

fn track_keyframes(stbl: &[u8], keys: &mut Vec<u64>) -> Result<(), String> {
    // Full boxes: 4 bytes of version and flags first.
    let stsz = child(stbl, b"stsz")?.ok_or("no stsz")?;
    let stsc = child(stbl, b"stsc")?.ok_or("no stsc")?;
    let chunk_offsets: Vec<u64> = if let Some(stco) = child(stbl, b"stco")? {
        let n = be32(stco, 4)? as usize;
        (0..n)
            .map(|i| be32(stco, 8 + 4 * i).map(u64::from))
            .collect::<Result<_, _>>()?
    } else if let Some(co64) = child(stbl, b"co64")? {
        let n = be32(co64, 4)? as usize;
        (0..n)
            .map(|i| be64(co64, 8 + 8 * i))
            .collect::<Result<_, _>>()?
    } else {
        return Err("no stco or co64".to_owned());
    };
    // Without stss every sample is a sync sample.
    let mut sync: Option<Vec<u32>> = match child(stbl, b"stss")? {
        Some(stss) => {
            let n = be32(stss, 4)? as usize;
            Some(
                (0..n)
                    .map(|i| be32(stss, 8 + 4 * i))
                    .collect::<Result<_, _>>()?,
            )
        }
        None => None,
    };
    if let Some(sync) = &mut sync {
        sync.sort_unstable();
    }
    let uniform = be32(stsz, 4)?;
    let count = u64::from(be32(stsz, 8)?);
    if count > MAX_SAMPLES {
        return Err(format!("{count} samples"));
    }
    let size_of = |k: u64| -> Result<u64, String> {
        if uniform != 0 {
            Ok(u64::from(uniform))
        } else {
            be32(stsz, 12 + 4 * k as usize).map(u64::from)
        }
    };
    let runs = be32(stsc, 4)? as usize;
    let run = |i: usize| -> Result<(u32, u32), String> {
        Ok((be32(stsc, 8 + 12 * i)?, be32(stsc, 12 + 12 * i)?))
    };

    let mut sample = 0u64; // 0-based
    let mut sync_at = 0usize;
    let mut r = 0usize;
    for (chunk, &offset) in chunk_offsets.iter().enumerate() {
        let chunk_number = chunk as u32 + 1;
        while r + 1 < runs && run(r + 1)?.0 <= chunk_number {
            r += 1;
        }
        let per_chunk = if runs == 0 { 0 } else { run(r)?.1 };
        let mut at = offset;
        for _ in 0..per_chunk {
            if sample >= count {
                return Ok(());
            }
            let number = sample as u32 + 1;
            let is_sync = match &sync {
                None => true,
                Some(list) => {
                    while sync_at < list.len() && list[sync_at] < number {
                        sync_at += 1;
                    }
                    list.get(sync_at) == Some(&number)
                }
            };
            if is_sync {
                keys.push(at);
            }
            at += size_of(sample)?;
            sample += 1;
        }
    }
    Ok(())
}
