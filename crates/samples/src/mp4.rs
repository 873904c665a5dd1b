//! MP4 / MOV (ISO BMFF): `ftyp`, `moov` with one video track whose sample table has
//! `stsd`, `stts`, `stss`, `stsz`, `stsc` and `stco` (or `co64`), and `mdat`.

use rand::{Rng, RngCore};

use crate::{Builder, Sample, rng};

/// What [`mp4`] generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mp4Spec {
    /// Number of video samples (frames).
    pub samples: u32,
    /// Average size of a non-key sample in bytes; keyframes are three times larger.
    pub sample_size: u32,
    /// A keyframe every this many samples, starting with the first.
    pub keyframe_interval: u32,
    /// Samples per `stco` chunk (the last chunk may hold fewer).
    pub samples_per_chunk: u32,
    /// Write chunk offsets as `co64` instead of `stco`.
    pub co64: bool,
    /// Put `moov` before `mdat` ("fast start"); otherwise after it.
    pub moov_first: bool,
    /// Add a `free` box between `ftyp` and the rest.
    pub free_box: bool,
    /// Major brand: `isom` for MP4, `qt  ` for QuickTime MOV.
    pub brand: [u8; 4],
    /// Seed of the sample sizes and payloads.
    pub seed: u64,
}

impl Mp4Spec {
    /// An MP4 of about `bytes` with a keyframe every 30 samples of ~20 KiB.
    pub fn with_approx_size(bytes: usize, seed: u64) -> Self {
        let sample_size = 20 * 1024u32;
        // A 30-sample group holds one 3x keyframe and 29 average samples.
        let per_group = sample_size as usize * 32;
        let samples = ((bytes / per_group).max(1) * 30) as u32;
        Self {
            samples,
            sample_size,
            keyframe_interval: 30,
            samples_per_chunk: 10,
            co64: false,
            moov_first: true,
            free_box: false,
            brand: *b"isom",
            seed,
        }
    }
}

/// Generates an MP4. Parts: `ftyp`, `free`, `moov`, `mdat` (whole boxes) and `stss`
/// (nested in `moov`); [`Sample::keyframes`] holds the absolute offsets of the sync
/// samples.
pub fn mp4(spec: &Mp4Spec) -> Sample {
    let mut rng = rng(spec.seed);
    let interval = spec.keyframe_interval.max(1);
    let sizes: Vec<u32> = (0..spec.samples)
        .map(|i| {
            let base = spec.sample_size.max(2);
            let size = rng.gen_range(base / 2..=base + base / 2);
            if i % interval == 0 { size * 3 } else { size }
        })
        .collect();
    let sync: Vec<u32> = (0..spec.samples)
        .filter(|i| i % interval == 0)
        .map(|i| i + 1)
        .collect();
    let per_chunk = spec.samples_per_chunk.max(1) as usize;
    let mdat_payload: u64 = sizes.iter().map(|&s| u64::from(s)).sum();

    let ftyp = {
        let mut c = Vec::new();
        c.extend_from_slice(&spec.brand);
        c.extend_from_slice(&0x200u32.to_be_bytes());
        for brand in [&spec.brand, b"iso2", b"avc1", b"mp41"] {
            c.extend_from_slice(brand);
        }
        bx(b"ftyp", &c)
    };
    let free = spec.free_box.then(|| bx(b"free", &[0u8; 64]));
    let head_len = ftyp.len() as u64 + free.as_ref().map_or(0, |f| f.len() as u64);
    // The chunk offsets depend on where mdat starts, which depends on the size of moov
    // when moov comes first; moov's size does not depend on the offsets' values.
    let moov_len = moov(spec, &sizes, &sync, per_chunk, 0).len() as u64;
    let mdat_header = 8u64;
    let data_start = if spec.moov_first {
        head_len + moov_len + mdat_header
    } else {
        head_len + mdat_header
    };
    let moov_box = moov(spec, &sizes, &sync, per_chunk, data_start);

    let mut out = Builder::with_capacity((data_start + mdat_payload) as usize + 4096);
    out.part("ftyp", &ftyp);
    if let Some(free) = &free {
        out.part("free", free);
    }
    let push_moov = |out: &mut Builder| {
        let start = out.pos();
        out.part("moov", &moov_box);
        let stss = find(&moov_box, b"stss").expect("moov has stss");
        out.mark("stss", start + stss.0 as u64, stss.1 as u64);
    };
    if spec.moov_first {
        push_moov(&mut out);
    }
    let mdat_start = out.pos();
    out.bytes
        .extend_from_slice(&((mdat_header + mdat_payload) as u32).to_be_bytes());
    out.bytes.extend_from_slice(b"mdat");
    let mut keyframes = Vec::with_capacity(sync.len());
    for (i, &size) in sizes.iter().enumerate() {
        if (i as u32).is_multiple_of(interval) {
            keyframes.push(out.pos());
        }
        let at = out.bytes.len();
        out.bytes.resize(at + size as usize, 0);
        rng.fill_bytes(&mut out.bytes[at..]);
    }
    out.mark("mdat", mdat_start, out.pos() - mdat_start);
    if !spec.moov_first {
        push_moov(&mut out);
    }
    out.finish(keyframes)
}

fn moov(spec: &Mp4Spec, sizes: &[u32], sync: &[u32], per_chunk: usize, data_start: u64) -> Vec<u8> {
    let count = sizes.len() as u32;
    let timescale = 30_000u32;
    let delta = 1_001u32;
    let duration = count * delta;

    let mut mvhd = Vec::new();
    mvhd.extend_from_slice(&[0; 8]); // creation, modification
    mvhd.extend_from_slice(&timescale.to_be_bytes());
    mvhd.extend_from_slice(&duration.to_be_bytes());
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    mvhd.extend_from_slice(&[0; 10]);
    mvhd.extend_from_slice(&identity_matrix());
    mvhd.extend_from_slice(&[0; 24]); // pre_defined
    mvhd.extend_from_slice(&2u32.to_be_bytes()); // next track id

    let mut tkhd = Vec::new();
    tkhd.extend_from_slice(&[0; 8]);
    tkhd.extend_from_slice(&1u32.to_be_bytes()); // track id
    tkhd.extend_from_slice(&[0; 4]);
    tkhd.extend_from_slice(&duration.to_be_bytes());
    tkhd.extend_from_slice(&[0; 16]); // reserved, layer, group, volume, reserved
    tkhd.extend_from_slice(&identity_matrix());
    tkhd.extend_from_slice(&(1920u32 << 16).to_be_bytes());
    tkhd.extend_from_slice(&(1080u32 << 16).to_be_bytes());

    let mut mdhd = Vec::new();
    mdhd.extend_from_slice(&[0; 8]);
    mdhd.extend_from_slice(&timescale.to_be_bytes());
    mdhd.extend_from_slice(&duration.to_be_bytes());
    mdhd.extend_from_slice(&0x55c4u16.to_be_bytes()); // language "und"
    mdhd.extend_from_slice(&[0; 2]);

    let mut hdlr = Vec::new();
    hdlr.extend_from_slice(&[0; 4]);
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0; 12]);
    hdlr.extend_from_slice(b"VideoHandler\0");

    let mut entry = Vec::new(); // VisualSampleEntry 'avc1' without codec config
    entry.extend_from_slice(&[0; 6]);
    entry.extend_from_slice(&1u16.to_be_bytes()); // data reference index
    entry.extend_from_slice(&[0; 16]);
    entry.extend_from_slice(&1920u16.to_be_bytes());
    entry.extend_from_slice(&1080u16.to_be_bytes());
    entry.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    entry.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    entry.extend_from_slice(&[0; 4]);
    entry.extend_from_slice(&1u16.to_be_bytes()); // frame count
    entry.extend_from_slice(&[0; 32]); // compressor name
    entry.extend_from_slice(&0x0018u16.to_be_bytes());
    entry.extend_from_slice(&0xFFFFu16.to_be_bytes());
    let stsd = full(
        b"stsd",
        &[&1u32.to_be_bytes()[..], &bx(b"avc1", &entry)].concat(),
    );

    let stts = full(
        b"stts",
        &[1u32.to_be_bytes(), count.to_be_bytes(), delta.to_be_bytes()].concat(),
    );
    let mut stss = (sync.len() as u32).to_be_bytes().to_vec();
    for s in sync {
        stss.extend_from_slice(&s.to_be_bytes());
    }
    let mut stsz = Vec::with_capacity(8 + sizes.len() * 4);
    stsz.extend_from_slice(&0u32.to_be_bytes()); // sizes vary
    stsz.extend_from_slice(&count.to_be_bytes());
    for s in sizes {
        stsz.extend_from_slice(&s.to_be_bytes());
    }
    let chunks = sizes.len().div_ceil(per_chunk);
    let last = sizes.len() - (chunks.saturating_sub(1)) * per_chunk;
    let mut stsc = Vec::new();
    let mut runs = vec![(1u32, per_chunk as u32)];
    if chunks > 1 && last != per_chunk {
        runs.push((chunks as u32, last as u32));
    } else if chunks == 1 {
        runs = vec![(1, last as u32)];
    }
    stsc.extend_from_slice(&(runs.len() as u32).to_be_bytes());
    for (first, n) in runs {
        stsc.extend_from_slice(&first.to_be_bytes());
        stsc.extend_from_slice(&n.to_be_bytes());
        stsc.extend_from_slice(&1u32.to_be_bytes());
    }
    let mut offsets = Vec::with_capacity(chunks);
    let mut at = data_start;
    for group in sizes.chunks(per_chunk) {
        offsets.push(at);
        at += group.iter().map(|&s| u64::from(s)).sum::<u64>();
    }
    let mut co = (offsets.len() as u32).to_be_bytes().to_vec();
    for offset in &offsets {
        if spec.co64 {
            co.extend_from_slice(&offset.to_be_bytes());
        } else {
            co.extend_from_slice(&(*offset as u32).to_be_bytes());
        }
    }
    let co = full(if spec.co64 { b"co64" } else { b"stco" }, &co);

    let stbl = bx(
        b"stbl",
        &[
            stsd,
            stts,
            full(b"stss", &stss),
            full(b"stsz", &stsz),
            full(b"stsc", &stsc),
            co,
        ]
        .concat(),
    );
    let dref = full(
        b"dref",
        &[
            &1u32.to_be_bytes()[..],
            &[0, 0, 0, 12],
            b"url ",
            &[0, 0, 0, 1],
        ]
        .concat(),
    );
    let minf = bx(
        b"minf",
        &[full(b"vmhd", &[0; 8]), bx(b"dinf", &dref), stbl].concat(),
    );
    let mdia = bx(
        b"mdia",
        &[full(b"mdhd", &mdhd), full(b"hdlr", &hdlr), minf].concat(),
    );
    let trak = bx(b"trak", &[full(b"tkhd", &tkhd), mdia].concat());
    bx(b"moov", &[full(b"mvhd", &mvhd), trak].concat())
}

fn identity_matrix() -> Vec<u8> {
    [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

fn bx(kind: &[u8; 4], content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 8);
    out.extend_from_slice(&(content.len() as u32 + 8).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(content);
    out
}

/// A full box: version 0, flags 0 (1 for `url `, written by hand above).
fn full(kind: &[u8; 4], content: &[u8]) -> Vec<u8> {
    bx(kind, &[&[0u8; 4][..], content].concat())
}

/// Offset and size of the first box of type `kind` in a tree of boxes (by scanning for
/// the type; fine for the generator's own output).
fn find(tree: &[u8], kind: &[u8; 4]) -> Option<(usize, usize)> {
    let at = tree.windows(4).position(|w| w == kind)? - 4;
    let size = u32::from_be_bytes(tree[at..at + 4].try_into().ok()?) as usize;
    Some((at, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_lie_in_mdat_and_moov_first_layout_holds() {
        for co64 in [false, true] {
            for moov_first in [true, false] {
                let spec = Mp4Spec {
                    samples: 95,
                    sample_size: 1000,
                    keyframe_interval: 30,
                    samples_per_chunk: 10,
                    co64,
                    moov_first,
                    free_box: true,
                    brand: *b"isom",
                    seed: 3,
                };
                let s = mp4(&spec);
                assert_eq!(s.keyframes.len(), 4);
                let mdat = s.parts_named("mdat").next().unwrap();
                assert_eq!(s.keyframes[0], mdat.offset + 8);
                for k in &s.keyframes {
                    assert!((mdat.offset + 8..mdat.offset + mdat.size).contains(k));
                }
                let total: u64 = s
                    .parts
                    .iter()
                    .filter(|p| p.name != "stss")
                    .map(|p| p.size)
                    .sum();
                assert_eq!(total, s.bytes.len() as u64);
            }
        }
    }
}
