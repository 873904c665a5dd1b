//! RIFF: AVI (including OpenDML `AVIX` extensions), WAV and WebP.
//!
//! An AVI is walked whole before any region is recorded: its keyframes are known only
//! from its index (`idx1` after the movie data, or the OpenDML `ix##` chunks), and a
//! chunk of the file may start only at a video keyframe's RIFF chunk. Audio chunks and
//! the frames between two keyframes travel with the keyframe before them.

use std::collections::HashSet;
use std::io::{Read, Seek};

use super::{Flags, Pattern, Regions, fourcc_pattern};
use crate::source::{Parsed, Source, Stop, corrupt};

/// `AVIIF_KEYFRAME` in an `idx1` entry's flags.
const IDX1_KEYFRAME: u32 = 0x10;
/// In an OpenDML standard index entry's size: the frame is not a keyframe.
const IX_DELTA_FRAME: u32 = 0x8000_0000;
/// Largest index chunk read for keyframe flags (16 bytes per `idx1` entry: four
/// million frames).
const MAX_INDEX: u64 = 64 << 20;

/// For AVI: `AVI_RIFF_HEADER`, `AVI_LIST_HEADERS` (the `hdrl` LIST), the `movi` LIST's
/// 12-byte header as `AVI_LIST_MOVIE_DATA` followed by its chunks as `AVI_VIDEO_FRAME`
/// (`##dc`, `##db`), `AVI_AUDIO_DATA` (`##wb`) or `AVI_LIST_MOVIE_DATA` (anything else),
/// `AVI_INDEX` (`idx1`) and `RIFF_<fourcc>` for other chunks (`RIFF_JUNK`, and a LIST
/// as `RIFF_<list type>`); the header ends at the first chunk of the movie data. For
/// WAV and WebP: `RIFF_HEADER`, then `RIFF_<fourcc>` per chunk (`RIFF_fmt`,
/// `RIFF_data`, `RIFF_VP8X`, `RIFF_VP8`, …); the header ends at the sound or image data
/// (`data`, `VP8 `, `VP8L`), which is opaque.
pub(crate) fn parse<R: Read + Seek>(src: &mut Source<R>, out: &mut Regions) -> Parsed {
    let mut head = [0; 12];
    src.read_at(0, &mut head)?;
    if &head[..4] != b"RIFF" {
        return corrupt("not a RIFF file");
    }
    if &head[8..12] == b"AVI " {
        let mut avi = Avi::default();
        let walked = avi.walk(src);
        if let Err(Stop::Io(e)) = walked {
            return Err(Stop::Io(e));
        }
        avi.emit(out);
        return walked;
    }
    loop {
        let at = out.end;
        src.read_at(at, &mut head)?;
        if &head[..4] != b"RIFF" {
            // Data after the RIFF form (an ID3 tag after a WAV, …) is the planner's.
            return Ok(());
        }
        let size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        out.push(12, "RIFF_HEADER");
        if size < 4 {
            return corrupt(format!("RIFF size {size} at offset {at}"));
        }
        // A RIFF size past the end (a recording cut short) still lets the chunks that
        // are complete be recognized.
        let end = (at + 8 + size).min(src.len());
        while out.end < end {
            let (fourcc, _, total) = chunk_header(src, out.end, end)?;
            let pattern = fourcc_pattern("RIFF_", &fourcc, false);
            if matches!(&fourcc, b"data" | b"VP8 " | b"VP8L") {
                out.end_header();
                out.add(total, pattern, Flags::opaque());
            } else {
                out.push(total, pattern);
            }
        }
        if out.end >= src.len() {
            return Ok(());
        }
    }
}

/// The RIFF chunk header at `at` inside a container ending at `end`: (fourcc, declared
/// size, bytes taken including the pad byte).
fn chunk_header<R: Read + Seek>(
    src: &mut Source<R>,
    at: u64,
    end: u64,
) -> Result<([u8; 4], u64, u64), Stop> {
    if at + 8 > end {
        return corrupt(format!("RIFF chunk header cut off at offset {at}"));
    }
    let mut head = [0; 8];
    src.read_at(at, &mut head)?;
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
    Ok((fourcc, size, (8 + size + (size & 1)).min(end - at)))
}

/// What an AVI structure is, for cutting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Outside the movie data: a chunk may start here.
    Outside,
    /// The first `movi` LIST's header: the last structure of the file's header.
    FirstMovi,
    /// A video frame: a cut point if it is a keyframe.
    Video,
    /// Inside the movie data (audio, padding, an OpenDML extension's headers, `ix##`):
    /// travels with the frames before it.
    Inner,
}

#[derive(Debug)]
struct Item {
    size: u64,
    pattern: Pattern,
    slot: Slot,
}

/// An AVI walked whole: its structures in file order and what its indexes say.
#[derive(Debug, Default)]
struct Avi {
    items: Vec<Item>,
    end: u64,
    /// Offsets of video chunks (their RIFF chunk headers), in file order.
    video: Vec<u64>,
    /// Offset of the first `movi` LIST's list type, the origin of `idx1` offsets.
    movi_origin: Option<u64>,
    /// (offset as written, keyframe) of each video entry of `idx1`.
    idx1: Vec<(u64, bool)>,
    /// Chunk-header offsets of the video keyframes the OpenDML indexes name.
    ix_keys: Vec<u64>,
    /// An OpenDML index of a video stream was read.
    ix_seen: bool,
}

impl Avi {
    fn push(&mut self, size: u64, pattern: impl Into<Pattern>, slot: Slot) {
        if size > 0 {
            self.items.push(Item {
                size,
                pattern: pattern.into(),
                slot,
            });
            self.end += size;
        }
    }

    /// Walks every RIFF form (`AVI `, then `AVIX` extensions) to the end of the file.
    fn walk<R: Read + Seek>(&mut self, src: &mut Source<R>) -> Parsed {
        loop {
            let at = self.end;
            let mut head = [0; 12];
            src.read_at(at, &mut head)?;
            if &head[..4] != b"RIFF" || !matches!(&head[8..12], b"AVI " | b"AVIX") {
                // Data after the RIFF forms is the planner's.
                return Ok(());
            }
            let size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
            let slot = if at == 0 { Slot::Outside } else { Slot::Inner };
            self.push(12, "AVI_RIFF_HEADER", slot);
            if size < 4 {
                return corrupt(format!("RIFF size {size} at offset {at}"));
            }
            let end = (at + 8 + size).min(src.len());
            self.form(src, end)?;
            if self.end >= src.len() {
                return Ok(());
            }
        }
    }

    /// The chunks of one RIFF form, up to `end`.
    fn form<R: Read + Seek>(&mut self, src: &mut Source<R>, end: u64) -> Parsed {
        while self.end < end {
            let at = self.end;
            let (fourcc, size, total) = chunk_header(src, at, end)?;
            let mut list_type = [0; 4];
            if &fourcc == b"LIST" && size >= 4 {
                src.read_at(at + 8, &mut list_type)?;
            }
            match (&fourcc, &list_type) {
                (b"LIST", b"hdrl") => self.push(total, "AVI_LIST_HEADERS", Slot::Outside),
                (b"LIST", b"movi") => {
                    let slot = if self.movi_origin.is_none() {
                        self.movi_origin = Some(at + 8);
                        Slot::FirstMovi
                    } else {
                        Slot::Inner
                    };
                    self.push(12, "AVI_LIST_MOVIE_DATA", slot);
                    self.movi(src, at + 8 + size)?;
                    // The pad byte of an odd-sized movi LIST.
                    self.push(at + total - self.end, "AVI_LIST_MOVIE_DATA", Slot::Inner);
                }
                (b"LIST", _) if size >= 4 => self.push(
                    total,
                    fourcc_pattern("RIFF_", &list_type, false),
                    Slot::Outside,
                ),
                (b"idx1", _) => {
                    self.idx1(src, at + 8, size)?;
                    self.push(total, "AVI_INDEX", Slot::Outside);
                }
                _ => self.push(
                    total,
                    fourcc_pattern("RIFF_", &fourcc, false),
                    Slot::Outside,
                ),
            }
        }
        Ok(())
    }

    /// The chunks of a `movi` LIST, up to `end`.
    fn movi<R: Read + Seek>(&mut self, src: &mut Source<R>, end: u64) -> Parsed {
        while self.end < end {
            let at = self.end;
            let (fourcc, size, total) = chunk_header(src, at, end)?;
            match &fourcc[2..] {
                b"dc" | b"db" => {
                    self.video.push(at);
                    self.push(total, "AVI_VIDEO_FRAME", Slot::Video);
                }
                b"wb" => self.push(total, "AVI_AUDIO_DATA", Slot::Inner),
                _ => {
                    if fourcc.starts_with(b"ix") {
                        self.ix(src, at + 8, size)?;
                    }
                    self.push(total, "AVI_LIST_MOVIE_DATA", Slot::Inner);
                }
            }
        }
        Ok(())
    }

    /// Reads the video entries of an `idx1` body of `size` bytes at `at`.
    fn idx1<R: Read + Seek>(&mut self, src: &mut Source<R>, at: u64, size: u64) -> Parsed {
        if size > MAX_INDEX {
            tracing::warn!(
                size,
                "idx1 too large to read; AVI frames are cut without keyframes"
            );
            return Ok(());
        }
        let body = src.read_upto(at, size as usize)?;
        for entry in body.chunks_exact(16) {
            if matches!(&entry[2..4], b"dc" | b"db") {
                let flags = u32::from_le_bytes(entry[4..8].try_into().expect("4 bytes"));
                let offset = u32::from_le_bytes(entry[8..12].try_into().expect("4 bytes"));
                self.idx1
                    .push((u64::from(offset), flags & IDX1_KEYFRAME != 0));
            }
        }
        Ok(())
    }

    /// Reads an OpenDML standard index (`ix##`) body of `size` bytes at `at`.
    fn ix<R: Read + Seek>(&mut self, src: &mut Source<R>, at: u64, size: u64) -> Parsed {
        if !(24..=MAX_INDEX).contains(&size) {
            return Ok(());
        }
        let body = src.read_upto(at, size as usize)?;
        let longs_per_entry = u16::from_le_bytes([body[0], body[1]]);
        let index_type = body[3];
        let chunk_id = &body[8..12];
        // Only an index of chunks (type 1, two longs per entry) of a video stream.
        if longs_per_entry != 2 || index_type != 1 || !matches!(&chunk_id[2..], b"dc" | b"db") {
            return Ok(());
        }
        let entries = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes")) as usize;
        let base = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes"));
        self.ix_seen = true;
        for entry in body[24..].chunks_exact(8).take(entries) {
            let offset = u32::from_le_bytes(entry[..4].try_into().expect("4 bytes"));
            let size = u32::from_le_bytes(entry[4..].try_into().expect("4 bytes"));
            // Offsets point at the frame's data, after its 8-byte chunk header.
            if size & IX_DELTA_FRAME == 0
                && let Some(header) = (base + u64::from(offset)).checked_sub(8)
            {
                self.ix_keys.push(header);
            }
        }
        Ok(())
    }

    /// The chunk-header offsets of the video keyframes, or `None` when no index says
    /// which frames are keyframes.
    fn keyframes(&self) -> Option<HashSet<u64>> {
        let frames: HashSet<u64> = self.video.iter().copied().collect();
        let mut keys: HashSet<u64> = self.ix_keys.iter().copied().collect();
        let mut known = self.ix_seen;
        // idx1 offsets are relative to the movi list type, or (some writers) absolute:
        // take the reading under which the index names the frames that are there.
        let origins = [self.movi_origin.unwrap_or(0), 0];
        let origin = origins.into_iter().find(|origin| {
            let named = &self.idx1[..self.idx1.len().min(16)];
            !named.is_empty() && named.iter().all(|(o, _)| frames.contains(&(origin + o)))
        });
        if let Some(origin) = origin {
            known = true;
            keys.extend(
                self.idx1
                    .iter()
                    .filter(|(_, key)| *key)
                    .map(|(o, _)| origin + o),
            );
        }
        known.then_some(keys)
    }

    /// Records the walked structures as regions.
    fn emit(self, out: &mut Regions) {
        let keys = self.keyframes();
        for item in self.items {
            let flags = match item.slot {
                Slot::Outside => Flags::default(),
                Slot::FirstMovi => {
                    out.add(item.size, item.pattern, Flags::default());
                    out.end_header();
                    continue;
                }
                Slot::Video => match &keys {
                    Some(keys) if keys.contains(&out.end) => Flags {
                        keyframe: true,
                        ..Flags::default()
                    },
                    Some(_) => Flags::inner(),
                    // Without an index every frame is a cut point.
                    None => Flags::default(),
                },
                Slot::Inner => Flags::inner(),
            };
            out.add(item.size, item.pattern, flags);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use crate::{ChunkerConfig, Strategy, plan};

    fn chunk(fourcc: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = fourcc.to_vec();
        out.extend((body.len() as u32).to_le_bytes());
        out.extend(body);
        if body.len() % 2 == 1 {
            out.push(0);
        }
        out
    }

    fn list(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        chunk(b"LIST", &[&kind[..], body].concat())
    }

    /// An AVI indexed only by an OpenDML standard index (`ix00` in `movi`, no `idx1`),
    /// as muxers write past 1 GiB: eight frames, keyframes at 0 and 4, audio between.
    /// Returns the file and the offsets of the keyframe chunks.
    fn opendml_avi() -> (Vec<u8>, Vec<u64>) {
        let hdrl = list(b"hdrl", &chunk(b"avih", &[0; 56]));
        let movi_start = (12 + hdrl.len()) as u64; // the movi LIST
        let mut movi = Vec::new();
        let mut entries = Vec::new();
        let mut keys = Vec::new();
        for frame in 0..8u8 {
            let at = movi_start + 12 + movi.len() as u64;
            let key = frame % 4 == 0;
            if key {
                keys.push(at);
            }
            let size = 1500u32;
            movi.extend(chunk(b"00dc", &vec![frame; size as usize]));
            // ix00 offsets point at the data, relative to the base offset.
            let delta = if key { 0 } else { 0x8000_0000 };
            entries.push(((at + 8 - movi_start) as u32, size | delta));
            movi.extend(chunk(b"01wb", &[0xA5; 301]));
        }
        let mut ix = vec![2, 0, 0, 1];
        ix.extend((entries.len() as u32).to_le_bytes());
        ix.extend(b"00dc");
        ix.extend(movi_start.to_le_bytes());
        ix.extend([0; 4]);
        for (offset, size) in entries {
            ix.extend(offset.to_le_bytes());
            ix.extend(size.to_le_bytes());
        }
        movi.extend(chunk(b"ix00", &ix));
        let body = [&b"AVI "[..], &hdrl, &list(b"movi", &movi)].concat();
        (chunk(b"RIFF", &body), keys)
    }

    #[test]
    fn opendml_index_gives_the_keyframes_without_idx1() {
        let (bytes, keys) = opendml_avi();
        let config = ChunkerConfig {
            strategy: Strategy::Semantic,
            max_chunk_size: 8000,
            min_chunk_size: 0,
        };
        let plan = plan(Cursor::new(&bytes), bytes.len() as u64, &config).unwrap();
        assert!(plan.fallback.is_none(), "{:?}", plan.fallback);
        // The header, then one chunk per group of pictures (four frames and their audio,
        // 7.2 KB: two do not fit in 8000 bytes), each starting at its keyframe.
        let starts: Vec<u64> = plan.spans.iter().map(|s| s.offset).collect();
        assert_eq!(starts, [0, keys[0], keys[1]]);
        assert_eq!(plan.spans[0].pattern, "AVI_RIFF_HEADER");
        assert!(plan.spans[1..].iter().all(|s| s.is_keyframe));
        assert!(
            plan.spans[1..]
                .iter()
                .all(|s| s.pattern == "AVI_VIDEO_FRAME")
        );
        // The index travels with the last group.
        let last = plan.spans.last().unwrap();
        assert_eq!(last.end(), bytes.len() as u64);
        assert_eq!(
            last.structures.last().unwrap().pattern,
            "AVI_LIST_MOVIE_DATA"
        );
    }

    #[test]
    fn without_an_index_every_frame_may_start_a_chunk() {
        let (mut bytes, _) = opendml_avi();
        // Rename ix00 to JUNK: no index left.
        let at = bytes.windows(4).position(|w| w == b"ix00").unwrap();
        bytes[at..at + 4].copy_from_slice(b"JUNK");
        let config = ChunkerConfig {
            strategy: Strategy::Semantic,
            max_chunk_size: 2000,
            min_chunk_size: 0,
        };
        let plan = plan(Cursor::new(&bytes), bytes.len() as u64, &config).unwrap();
        // Frame + audio = 1817 bytes: one per chunk, none flagged a keyframe.
        assert!(plan.spans.iter().all(|s| !s.is_keyframe));
        let frames = plan
            .spans
            .iter()
            .filter(|s| s.pattern == "AVI_VIDEO_FRAME")
            .count();
        assert_eq!(frames, 8);
    }
}
