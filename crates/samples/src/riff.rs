//! RIFF: WAV (`fmt `, `LIST INFO`, `data`) and WebP (`VP8X`, `VP8 `, `EXIF`).

use rand::RngCore;

use crate::{Builder, Sample, rng};

/// What [`wav`] generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavSpec {
    /// Bytes of 16-bit stereo PCM in the `data` chunk.
    pub data_bytes: usize,
    /// Seed of the samples.
    pub seed: u64,
}

/// What [`webp`] generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebpSpec {
    /// Bytes of the `VP8 ` bitstream (odd sizes exercise RIFF padding).
    pub image_bytes: usize,
    /// Seed of the bitstream.
    pub seed: u64,
}

/// A RIFF chunk: fourcc, little-endian size, data, a pad byte when the size is odd.
pub(crate) fn chunk(fourcc: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 9);
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// The 12-byte `RIFF <size> <form>` header for a body of `body_len` bytes.
pub(crate) fn riff_header(form: &[u8; 4], body_len: usize) -> Vec<u8> {
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body_len as u32 + 4).to_le_bytes());
    out.extend_from_slice(form);
    out
}

/// Generates a WAV. Parts: `RIFF` (the 12-byte header), `fmt `, `LIST`, `data`.
pub fn wav(spec: &WavSpec) -> Sample {
    let mut fmt = Vec::with_capacity(16);
    fmt.extend_from_slice(&1u16.to_le_bytes()); // PCM
    fmt.extend_from_slice(&2u16.to_le_bytes()); // stereo
    fmt.extend_from_slice(&44_100u32.to_le_bytes());
    fmt.extend_from_slice(&(44_100u32 * 4).to_le_bytes());
    fmt.extend_from_slice(&4u16.to_le_bytes());
    fmt.extend_from_slice(&16u16.to_le_bytes());
    let list = chunk(
        b"LIST",
        &[b"INFO".as_slice(), &chunk(b"ISFT", b"panini-samples\0")].concat(),
    );
    let mut pcm = vec![0u8; spec.data_bytes];
    rng(spec.seed).fill_bytes(&mut pcm);
    let parts = [
        ("fmt ", chunk(b"fmt ", &fmt)),
        ("LIST", list),
        ("data", chunk(b"data", &pcm)),
    ];
    assemble(b"WAVE", &parts)
}

/// Generates an extended WebP. Parts: `RIFF`, `VP8X`, `VP8 `, `EXIF`.
pub fn webp(spec: &WebpSpec) -> Sample {
    let mut vp8x = vec![0x08, 0, 0, 0]; // EXIF present
    vp8x.extend_from_slice(&[0xFF, 0x03, 0x00, 0xFF, 0x03, 0x00]); // 1024 x 1024
    let mut vp8 = vec![0u8; spec.image_bytes.max(10)];
    rng(spec.seed).fill_bytes(&mut vp8);
    vp8[3..6].copy_from_slice(&[0x9D, 0x01, 0x2A]); // VP8 key frame start code
    let exif = b"Exif\0\0II*\0\x08\0\0\0\0\0";
    let parts = [
        ("VP8X", chunk(b"VP8X", &vp8x)),
        ("VP8 ", chunk(b"VP8 ", &vp8)),
        ("EXIF", chunk(b"EXIF", exif)),
    ];
    assemble(b"WEBP", &parts)
}

fn assemble(form: &[u8; 4], parts: &[(&str, Vec<u8>)]) -> Sample {
    let body_len: usize = parts.iter().map(|(_, b)| b.len()).sum();
    let mut out = Builder::with_capacity(body_len + 12);
    out.part("RIFF", &riff_header(form, body_len));
    for (name, bytes) in parts {
        out.part(name, bytes);
    }
    out.finish(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn riff_size_covers_the_file() {
        for s in [
            wav(&WavSpec {
                data_bytes: 1001,
                seed: 1,
            }),
            webp(&WebpSpec {
                image_bytes: 777,
                seed: 1,
            }),
        ] {
            let size = u32::from_le_bytes(s.bytes[4..8].try_into().unwrap()) as usize;
            assert_eq!(size + 8, s.bytes.len());
            let total: u64 = s.parts.iter().map(|p| p.size).sum();
            assert_eq!(total, s.bytes.len() as u64);
        }
    }
}
