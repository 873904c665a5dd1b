//! Baseline JPEG: SOI, APP0 (JFIF), DQT, SOF0, DHT, DRI, SOS, entropy-coded scan data
//! with byte stuffing (`FF 00`) and restart markers, EOI.

use rand::RngCore;

use crate::{Builder, Sample, rng};

/// What [`jpeg`] generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegSpec {
    /// Image width in pixels.
    pub width: u16,
    /// Image height in pixels.
    pub height: u16,
    /// Entropy-coded bytes before stuffing and restart markers.
    pub scan_bytes: usize,
    /// A restart marker (`FF D0`..`FF D7`) after every this many scan bytes; `0` for none.
    pub restart_every: usize,
    /// Seed of the scan data.
    pub seed: u64,
}

impl JpegSpec {
    /// A JPEG of about `bytes` with a restart marker every 4 KiB of scan data.
    pub fn with_approx_size(bytes: usize, seed: u64) -> Self {
        Self {
            width: 4000,
            height: 3000,
            scan_bytes: bytes.saturating_sub(700).max(16),
            restart_every: 4096,
            seed,
        }
    }
}

/// Generates a JPEG. Parts: `SOI`, `APP0`, `DQT`, `SOF0`, `DHT` (four segments), `DRI`,
/// `SOS`, `scan`, `EOI`; each marker segment includes its marker and length.
pub fn jpeg(spec: &JpegSpec) -> Sample {
    let mut out = Builder::with_capacity(spec.scan_bytes * 2 + 1024);
    out.part("SOI", &[0xFF, 0xD8]);
    segment(
        &mut out,
        "APP0",
        0xE0,
        b"JFIF\0\x01\x02\x00\x00\x48\x00\x48\x00\x00",
    );
    let mut dqt = Vec::with_capacity(130);
    for table in 0..2u8 {
        dqt.push(table);
        dqt.extend((1..=64u8).map(|q| q.saturating_add(table * 8)));
    }
    segment(&mut out, "DQT", 0xDB, &dqt);
    let mut sof = vec![8];
    sof.extend_from_slice(&spec.height.to_be_bytes());
    sof.extend_from_slice(&spec.width.to_be_bytes());
    sof.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    segment(&mut out, "SOF0", 0xC0, &sof);
    for (class_id, counts) in [
        (0x00u8, [0u8, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),
        (0x10, [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d]),
        (0x01, [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]),
        (0x11, [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77]),
    ] {
        let symbols: u16 = counts.iter().map(|&c| u16::from(c)).sum();
        let mut dht = vec![class_id];
        dht.extend_from_slice(&counts);
        dht.extend((0..symbols).map(|s| s as u8));
        segment(&mut out, "DHT", 0xC4, &dht);
    }
    let restart_every = spec.restart_every;
    if restart_every > 0 {
        segment(
            &mut out,
            "DRI",
            0xDD,
            &(restart_every.min(0xFFFF) as u16).to_be_bytes(),
        );
    }
    segment(
        &mut out,
        "SOS",
        0xDA,
        &[3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0],
    );

    let scan_start = out.pos();
    let mut raw = vec![0u8; spec.scan_bytes];
    rng(spec.seed).fill_bytes(&mut raw);
    let mut restart = 0u8;
    for (i, &byte) in raw.iter().enumerate() {
        if restart_every > 0 && i > 0 && i % restart_every == 0 {
            out.bytes.extend_from_slice(&[0xFF, 0xD0 + restart]);
            restart = (restart + 1) % 8;
        }
        out.bytes.push(byte);
        if byte == 0xFF {
            out.bytes.push(0x00); // byte stuffing
        }
    }
    out.mark("scan", scan_start, out.pos() - scan_start);
    out.part("EOI", &[0xFF, 0xD9]);
    out.finish(Vec::new())
}

fn segment(out: &mut Builder, name: &str, marker: u8, payload: &[u8]) {
    let mut bytes = vec![0xFF, marker];
    bytes.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    bytes.extend_from_slice(payload);
    out.part(name, &bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_has_no_bare_markers_and_parts_tile() {
        let s = jpeg(&JpegSpec::with_approx_size(50_000, 9));
        let scan = s.parts_named("scan").next().unwrap();
        let data = &s.bytes[scan.offset as usize..(scan.offset + scan.size) as usize];
        for pair in data.windows(2).filter(|w| w[0] == 0xFF) {
            assert!(
                pair[1] == 0 || (0xD0..=0xD7).contains(&pair[1]),
                "{pair:x?}"
            );
        }
        assert!(data.windows(2).any(|w| w == [0xFF, 0xD3]));
        let total: u64 = s.parts.iter().map(|p| p.size).sum();
        assert_eq!(total, s.bytes.len() as u64);
    }
}
