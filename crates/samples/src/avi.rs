//! AVI: `RIFF AVI ` with a `hdrl` LIST (avih, one video and one audio `strl`), a `movi`
//! LIST of `00dc` video frames and `01wb` audio chunks, and an `idx1` index.

use rand::{Rng, RngCore};

use crate::riff::{chunk, riff_header};
use crate::{Builder, Sample, rng};

/// What [`avi`] generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AviSpec {
    /// Number of video frames; each is followed by one audio chunk.
    pub frames: u32,
    /// Average video frame size in bytes (odd sizes get RIFF padding).
    pub frame_size: u32,
    /// Audio bytes per frame.
    pub audio_size: u32,
    /// A keyframe (flagged in `idx1`) every this many frames.
    pub keyframe_interval: u32,
    /// Seed of the sizes and payloads.
    pub seed: u64,
}

impl AviSpec {
    /// An AVI of about `bytes` with 30 KiB frames.
    pub fn with_approx_size(bytes: usize, seed: u64) -> Self {
        Self {
            frames: (bytes / (30 * 1024 + 6 * 1024)).max(1) as u32,
            frame_size: 30 * 1024,
            audio_size: 5880,
            keyframe_interval: 25,
            seed,
        }
    }
}

/// Generates an AVI. Parts: `RIFF` (12-byte header), `hdrl` (the whole LIST), `movi`
/// (the 12-byte LIST header), each `00dc` and `01wb` chunk, `idx1`;
/// [`Sample::keyframes`] holds the offsets of the key `00dc` chunks.
pub fn avi(spec: &AviSpec) -> Sample {
    let mut rng = rng(spec.seed);
    let mut avih = Vec::with_capacity(56);
    for v in [
        33_333u32,
        0,
        0,
        0x10,
        spec.frames,
        0,
        2,
        0,
        1920,
        1080,
        0,
        0,
        0,
        0,
    ] {
        avih.extend_from_slice(&v.to_le_bytes());
    }
    let strl = |kind: &[u8; 4], handler: &[u8; 4], format: &[u8]| {
        let mut strh = Vec::with_capacity(56);
        strh.extend_from_slice(kind);
        strh.extend_from_slice(handler);
        strh.extend_from_slice(&[0; 12]);
        for v in [1u32, 30, 0, spec.frames, 0, 0xFFFF_FFFF, 0, 0, 0] {
            strh.extend_from_slice(&v.to_le_bytes());
        }
        let body = [
            b"strl".as_slice(),
            &chunk(b"strh", &strh[..56]),
            &chunk(b"strf", format),
        ]
        .concat();
        chunk(b"LIST", &body)
    };
    let mut bih = Vec::with_capacity(40);
    bih.extend_from_slice(&40u32.to_le_bytes());
    bih.extend_from_slice(&1920i32.to_le_bytes());
    bih.extend_from_slice(&1080i32.to_le_bytes());
    bih.extend_from_slice(&1u16.to_le_bytes());
    bih.extend_from_slice(&24u16.to_le_bytes());
    bih.extend_from_slice(b"H264");
    bih.extend_from_slice(&[0; 20]);
    let wfx = [
        1u8, 0, 2, 0, 0x44, 0xAC, 0, 0, 0x10, 0xB1, 2, 0, 4, 0, 16, 0, 0, 0,
    ];
    let hdrl = chunk(
        b"LIST",
        &[
            b"hdrl".as_slice(),
            &chunk(b"avih", &avih),
            &strl(b"vids", b"H264", &bih),
            &strl(b"auds", &[0; 4], &wfx),
        ]
        .concat(),
    );

    let mut movi_body = b"movi".to_vec();
    let mut index = Vec::new();
    let mut frame_at = Vec::new(); // (offset in movi_body, name, key)
    let interval = spec.keyframe_interval.max(1);
    for f in 0..spec.frames {
        let base = spec.frame_size.max(2);
        let size = rng.gen_range(base / 2..=base + base / 2) as usize;
        let key = f % interval == 0;
        for (id, len) in [(b"00dc", size), (b"01wb", spec.audio_size as usize)] {
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            let at = movi_body.len();
            let is_video = id == b"00dc";
            index.extend_from_slice(id);
            index.extend_from_slice(&(if is_video && key { 0x10u32 } else { 0 }).to_le_bytes());
            index.extend_from_slice(&(at as u32).to_le_bytes()); // relative to "movi"
            index.extend_from_slice(&(len as u32).to_le_bytes());
            let bytes = chunk(id, &data);
            frame_at.push((
                at,
                bytes.len(),
                if is_video { "00dc" } else { "01wb" },
                is_video && key,
            ));
            movi_body.extend_from_slice(&bytes);
        }
    }
    let idx1 = chunk(b"idx1", &index);
    let movi_len = movi_body.len() + 8;
    let body_len = hdrl.len() + movi_len + idx1.len();

    let mut out = Builder::with_capacity(body_len + 12);
    out.part("RIFF", &riff_header(b"AVI ", body_len));
    out.part("hdrl", &hdrl);
    let movi_start = out.pos();
    out.mark("movi", movi_start, 12);
    out.bytes.extend_from_slice(b"LIST");
    out.bytes
        .extend_from_slice(&(movi_body.len() as u32).to_le_bytes());
    // Chunk offsets in movi_body count from the "movi" fourcc, 8 bytes into the LIST.
    let body_start = out.pos();
    out.bytes.extend_from_slice(&movi_body);
    let mut keyframes = Vec::new();
    for (at, len, name, key) in frame_at {
        let offset = body_start + at as u64;
        out.mark(name, offset, len as u64);
        if key {
            keyframes.push(offset);
        }
    }
    out.part("idx1", &idx1);
    out.finish(keyframes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_movi_header_and_riff_size_is_right() {
        let s = avi(&AviSpec {
            frames: 10,
            frame_size: 1001,
            audio_size: 101,
            keyframe_interval: 4,
            seed: 2,
        });
        let size = u32::from_le_bytes(s.bytes[4..8].try_into().unwrap()) as usize;
        assert_eq!(size + 8, s.bytes.len());
        let movi = s.parts_named("movi").next().unwrap();
        let first = s.parts_named("00dc").next().unwrap();
        assert_eq!(first.offset, movi.offset + 12);
        assert_eq!(s.keyframes.len(), 3);
        let covered: u64 = s.parts.iter().map(|p| p.size).sum();
        assert_eq!(covered, s.bytes.len() as u64);
    }
}
