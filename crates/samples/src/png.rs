//! PNG: signature, IHDR, zlib-compressed IDAT data (one or several chunks), IEND.

use rand::RngCore;

use crate::{Builder, Sample, rng};

/// What [`png`] generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PngSpec {
    /// Image width in pixels (RGB, 8 bits per channel).
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Split the zlib stream into IDAT chunks of at most this many bytes; `0` puts it
    /// all in one IDAT.
    pub idat_chunk_size: usize,
    /// How many low bits of each channel are noise (0..=8). With 8 the pixels are
    /// random and the IDAT is about as large as the raw image; fewer bits compress.
    pub noise_bits: u8,
    /// zlib compression level (0..=10).
    pub level: u8,
    /// Seed of the noise.
    pub seed: u64,
}

impl PngSpec {
    /// A square noisy image whose file is about `bytes` long, in a single IDAT.
    pub fn with_approx_size(bytes: usize, seed: u64) -> Self {
        let side = ((bytes / 3) as f64).sqrt().ceil().max(1.0) as u32;
        Self {
            width: side,
            height: side,
            idat_chunk_size: 0,
            noise_bits: 8,
            level: 1,
            seed,
        }
    }
}

/// Generates a PNG. Parts: `signature`, `IHDR`, each `IDAT`, `IEND` (each chunk with
/// its length, type and CRC).
pub fn png(spec: &PngSpec) -> Sample {
    let row_len = spec.width as usize * 3;
    let mut raw = vec![0u8; (row_len + 1) * spec.height as usize];
    let mut noise = vec![0u8; row_len];
    let mut rng = rng(spec.seed);
    let mask = if spec.noise_bits >= 8 {
        0xFF
    } else {
        (1u8 << spec.noise_bits) - 1
    };
    for (y, row) in raw.chunks_exact_mut(row_len + 1).enumerate() {
        row[0] = 0; // filter type None
        rng.fill_bytes(&mut noise);
        for (x, (pixel, n)) in row[1..].iter_mut().zip(&noise).enumerate() {
            // A diagonal gradient with noise in the low bits: photographs look like this
            // to a compressor.
            let gradient = ((x / 3 + y) & 0xFF) as u8;
            *pixel = (gradient & !mask) | (n & mask);
        }
    }
    let zlib = miniz_oxide::deflate::compress_to_vec_zlib(&raw, spec.level);
    drop(raw);

    let mut out = Builder::with_capacity(zlib.len() + 1024);
    out.part("signature", b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&spec.width.to_be_bytes());
    ihdr.extend_from_slice(&spec.height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, adaptive, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    let split = if spec.idat_chunk_size == 0 {
        zlib.len().max(1)
    } else {
        spec.idat_chunk_size
    };
    for piece in zlib.chunks(split) {
        chunk(&mut out, b"IDAT", piece);
    }
    chunk(&mut out, b"IEND", &[]);
    out.finish(Vec::new())
}

fn chunk(out: &mut Builder, kind: &[u8; 4], data: &[u8]) {
    let start = out.pos();
    out.bytes
        .extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.bytes.extend_from_slice(kind);
    out.bytes.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.bytes.extend_from_slice(&crc.finalize().to_be_bytes());
    let name = std::str::from_utf8(kind).expect("chunk types are ASCII");
    out.mark(name, start, out.pos() - start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_crc_are_valid() {
        let spec = PngSpec {
            idat_chunk_size: 10_000,
            ..PngSpec::with_approx_size(100_000, 1)
        };
        let sample = png(&spec);
        let b = &sample.bytes;
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        assert!(sample.parts_named("IDAT").count() > 5);
        let mut zlib = Vec::new();
        for part in &sample.parts[1..] {
            let (o, s) = (part.offset as usize, part.size as usize);
            let len = u32::from_be_bytes(b[o..o + 4].try_into().unwrap()) as usize;
            assert_eq!(len + 12, s);
            let crc = crc32fast::hash(&b[o + 4..o + 8 + len]);
            assert_eq!(crc.to_be_bytes(), b[o + 8 + len..o + 12 + len]);
            if part.name == "IDAT" {
                zlib.extend_from_slice(&b[o + 8..o + 8 + len]);
            }
        }
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&zlib).unwrap();
        assert_eq!(
            raw.len(),
            (spec.width as usize * 3 + 1) * spec.height as usize
        );
        assert_eq!(sample.parts.last().unwrap().offset + 12, b.len() as u64);
    }
}
