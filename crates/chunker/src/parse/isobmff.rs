//! MP4 / MOV (ISO BMFF): top-level boxes, with `mdat` cut at keyframe samples.
//!
//! Keyframes come from the video tracks' sample tables in `moov`
//! (`trak>mdia>minf>stbl`): `stss` names the sync samples, `stsz` gives every sample's
//! size, `stsc` maps samples to chunks and `stco`/`co64` gives each chunk's file offset;
//! together they give the absolute offset of every keyframe.
//!
//! A fragmented file (`moof`+`mdat` pairs) has no sample tables in `moov`: whether a
//! fragment starts with a keyframe comes from its video track's first sample flags
//! (`moof>traf>trun`, `tfhd` or `moov>mvex>trex` defaults). A fragment's `mdat`
//! travels with its `moof`, and a fragment that does not start with a keyframe with
//! the fragments before it.

use std::borrow::Cow;
use std::io::{Read, Seek};

use super::{Flags, Regions, fourcc_pattern};
use crate::source::{Parsed, Source, Stop, corrupt};

/// Largest `moov` read into memory for its sample tables. A movie of several hours has
/// a `moov` of a few MiB; anything beyond this is cut without keyframe information.
const MAX_MOOV: u64 = 64 << 20;
/// Upper bound on samples walked per track, so corrupt tables cannot make the walk
/// run for hours.
const MAX_SAMPLES: u64 = 50_000_000;

const MDAT_KEYFRAMES: &str = "ISOBMFF_MDAT_KEYFRAMES";
const MDAT_MEDIA: &str = "ISOBMFF_MDAT_MEDIA";
const MOOF: &str = "ISOBMFF_MOOF_FRAGMENT";
/// Largest `moof` read to find its first video sample's flags.
const MAX_MOOF: u64 = 16 << 20;
/// `sample_is_non_sync_sample` in ISO BMFF sample flags.
const NON_SYNC: u32 = 0x0001_0000;

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
/// The header is everything before the first `mdat` or `moof`.
pub(crate) fn parse<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    // Walk first, emit after: moov may come after mdat.
    let mut boxes = Vec::new();
    let stop = walk(src, &mut boxes);
    if let Err(Stop::Io(e)) = stop {
        return Err(Stop::Io(e));
    }
    let mut keyframes = Vec::new();
    let mut tracks = Tracks::default();
    if let Some(moov) = boxes.iter().find(|b| &b.kind == b"moov") {
        let payload = moov.size - moov.header;
        if payload > MAX_MOOV {
            tracks.unknown = true;
            tracing::warn!(
                size = moov.size,
                "moov too large to read; mdat is cut without keyframes"
            );
        } else {
            let mut bytes = vec![0; payload as usize];
            src.read_at(moov.offset + moov.header, &mut bytes)?;
            match keyframe_offsets(&bytes, src.len()) {
                Ok(found) => keyframes = found,
                Err(reason) => {
                    tracing::warn!(%reason, "unreadable sample tables; mdat is cut without keyframes")
                }
            }
            tracks = Tracks::of(&bytes).unwrap_or_else(|reason| {
                tracing::warn!(%reason, "unreadable track headers; fragments are cut without keyframes");
                Tracks {
                    unknown: true,
                    ..Tracks::default()
                }
            });
        }
    } else {
        tracks.unknown = true;
    }
    let mut in_fragment = false;
    for b in &boxes {
        match &b.kind {
            b"mdat" if in_fragment => {
                in_fragment = false;
                out.add(b.size, MDAT_MEDIA, Flags::inner());
            }
            b"mdat" => {
                out.end_header();
                mdat(out, b, &keyframes);
            }
            b"moof" => {
                out.end_header();
                in_fragment = true;
                let keyframe = fragment_starts_with_keyframe(src, b, &tracks)?;
                // Without video (or without readable track headers) every fragment is a
                // cut point; with video, only those that open with a keyframe.
                let inner = !keyframe && !tracks.video.is_empty() && !tracks.unknown;
                out.add(
                    b.size,
                    MOOF,
                    Flags {
                        keyframe,
                        inner,
                        ..Flags::default()
                    },
                );
            }
            kind => {
                in_fragment = false;
                out.push(b.size, pattern(kind));
            }
        }
    }
    stop
}

/// What the fragments need from `moov`: the video tracks and their default sample
/// flags (`mvex>trex`).
#[derive(Debug, Default)]
struct Tracks {
    /// (track ID, default sample flags from `trex`) of each video track.
    video: Vec<(u32, Option<u32>)>,
    /// `moov` was missing or unreadable.
    unknown: bool,
}

impl Tracks {
    fn of(moov: &[u8]) -> Result<Tracks, String> {
        let mut video = Vec::new();
        for item in children(moov) {
            let (kind, trak) = item?;
            if &kind != b"trak" {
                continue;
            }
            let Some(mdia) = child(trak, b"mdia")? else {
                continue;
            };
            if child(mdia, b"hdlr")?.and_then(|h| h.get(8..12)) != Some(b"vide") {
                continue;
            }
            let tkhd = child(trak, b"tkhd")?.ok_or("trak without tkhd")?;
            let id_at = if tkhd.first() == Some(&1) { 20 } else { 12 };
            video.push((be32(tkhd, id_at)?, None));
        }
        if let Some(mvex) = child(moov, b"mvex")? {
            for item in children(mvex) {
                let (kind, trex) = item?;
                if &kind != b"trex" {
                    continue;
                }
                let id = be32(trex, 4)?;
                let flags = be32(trex, 20)?;
                for track in video.iter_mut().filter(|(t, _)| *t == id) {
                    track.1 = Some(flags);
                }
            }
        }
        Ok(Tracks {
            video,
            unknown: false,
        })
    }
}

/// Whether the fragment `moof` opens with a video keyframe: the flags of the first
/// sample of its first video track run are those of a sync sample.
fn fragment_starts_with_keyframe<R: Read + Seek>(
    src: &mut Source<R>,
    moof: &TopBox,
    tracks: &Tracks,
) -> Result<bool, Stop> {
    let payload = moof.size - moof.header;
    if tracks.video.is_empty() || payload > MAX_MOOF {
        return Ok(false);
    }
    let mut bytes = vec![0; payload as usize];
    src.read_at(moof.offset + moof.header, &mut bytes)?;
    Ok(first_video_sample_flags(&bytes, tracks)
        .ok()
        .flatten()
        .is_some_and(|flags| flags & NON_SYNC == 0))
}

/// The sample flags of the first sample of the first video `traf` in a `moof` payload.
fn first_video_sample_flags(moof: &[u8], tracks: &Tracks) -> Result<Option<u32>, String> {
    for item in children(moof) {
        let (kind, traf) = item?;
        if &kind != b"traf" {
            continue;
        }
        let tfhd = child(traf, b"tfhd")?.ok_or("traf without tfhd")?;
        let tf_flags = be32(tfhd, 0)? & 0x00FF_FFFF;
        let id = be32(tfhd, 4)?;
        let Some(&(_, trex_flags)) = tracks.video.iter().find(|(t, _)| *t == id) else {
            continue;
        };
        // tfhd: base data offset (8), sample description index (4), default
        // duration (4), default size (4), then default flags (4), each if flagged.
        let mut at = 8;
        for (bit, len) in [(0x01, 8), (0x02, 4), (0x08, 4), (0x10, 4)] {
            if tf_flags & bit != 0 {
                at += len;
            }
        }
        let default_flags = if tf_flags & 0x20 != 0 {
            Some(be32(tfhd, at)?)
        } else {
            trex_flags
        };
        let Some(trun) = child(traf, b"trun")? else {
            continue;
        };
        let tr_flags = be32(trun, 0)? & 0x00FF_FFFF;
        if be32(trun, 4)? == 0 {
            continue; // no samples in this run
        }
        // trun: sample count (4), data offset (4) and first sample flags (4) if
        // flagged, then per sample: duration, size, flags, composition offset.
        let mut at = 8;
        if tr_flags & 0x01 != 0 {
            at += 4;
        }
        if tr_flags & 0x04 != 0 {
            return Ok(Some(be32(trun, at)?));
        }
        if tr_flags & 0x400 != 0 {
            for (bit, len) in [(0x100, 4), (0x200, 4)] {
                if tr_flags & bit != 0 {
                    at += len;
                }
            }
            return Ok(Some(be32(trun, at)?));
        }
        return Ok(default_flags);
    }
    Ok(None)
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

/// One `mdat`: a region per group of pictures, each starting at its keyframe; without
/// keyframes inside, one opaque region (audio, or video whose tables were unreadable).
fn mdat(out: &mut Regions, b: &TopBox, keyframes: &[u64]) {
    let payload = b.offset + b.header;
    let end = b.offset + b.size;
    let first = keyframes.partition_point(|&k| k < payload);
    let last = keyframes.partition_point(|&k| k < end);
    let inside = &keyframes[first..last];
    if inside.is_empty() {
        out.add(b.size, MDAT_MEDIA, Flags::opaque());
        return;
    }
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
        let flags = Flags {
            keyframe: true,
            rest_pattern: Some(MDAT_MEDIA.into()),
            ..Flags::default()
        };
        out.add(size, MDAT_KEYFRAMES, flags);
    } else {
        out.push(size, MDAT_MEDIA);
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
        // A 64-bit size from the file can be anything: compare without adding to it.
        if size < header || size > buf.len() - at {
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
fn keyframe_offsets(moov: &[u8], file_len: u64) -> Result<Vec<u64>, String> {
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
        track_keyframes(stbl, file_len, &mut keys)?;
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

/// Appends the file offsets of the track's sync samples that lie inside the file
/// (`file_len` bytes). The tables come from the file: their counts and offsets are
/// trusted only as far as the file's own size bounds them, so a few hundred bytes of
/// `moov` cannot make this walk (and the list it builds) grow to millions of entries.
fn track_keyframes(stbl: &[u8], file_len: u64, keys: &mut Vec<u64>) -> Result<(), String> {
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
        for i in 0..per_chunk {
            if sample >= count {
                return Ok(());
            }
            if at >= file_len {
                // The rest of this chunk lies past the end of the file: count its
                // samples without visiting them one by one.
                sample = sample.saturating_add(u64::from(per_chunk - i)).min(count);
                break;
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
            at = at.saturating_add(size_of(sample)?);
            sample += 1;
        }
    }
    Ok(())
}
