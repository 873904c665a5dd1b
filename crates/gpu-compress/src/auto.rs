//! `auto`: choosing a codec per chunk from a sample of it.
//!
//! The estimate is cheap next to the compression it steers: byte entropy of up to four
//! 64 KiB sample blocks, an LZ4 trial on them (liblz4, as the LZ4 codec) and, unless the
//! data is plainly incompressible, a zstd level-1 trial.

use chunk_model::Codec;

use crate::lz4::BLOCK_SIZE;

/// Sample blocks taken from a chunk, spread over its length.
const SAMPLE_BLOCKS: usize = 4;
/// LZ4 must save at least this fraction of the sample, or the data counts as incompressible.
const MIN_LZ4_SAVING: f64 = 0.02;
/// Bits per byte above which data without LZ4 matches is stored (zstd's entropy coder cannot
/// win enough either).
const STORE_ENTROPY: f64 = 7.8;
/// zstd is chosen when it keeps at least this much less of the sample than LZ4 does (as a
/// fraction of the input): a real gain in bytes stored, worth its slower speed.
const ZSTD_EXTRA_SAVING: f64 = 0.05;

/// Why `auto` chose the codec it chose, kept in the stats.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoDecision {
    /// The codec chosen.
    pub codec: Codec,
    /// Bytes of the chunk examined.
    pub sample_len: usize,
    /// Shannon entropy of the sample, bits per byte (0..=8).
    pub entropy_bits: f64,
    /// LZ4 output size / input size on the sample.
    pub lz4_sample_ratio: f64,
    /// zstd level-1 output size / input size on the sample, when it was tried.
    pub zstd_sample_ratio: Option<f64>,
    /// The rule that decided, in words.
    pub reason: &'static str,
}

/// Picks a codec for `data`.
pub(crate) fn choose(data: &[u8]) -> AutoDecision {
    let samples = sample(data);
    let sample_len: usize = samples.iter().map(|s| s.len()).sum();
    let entropy_bits = entropy(&samples);
    // C liblz4, the encoder the LZ4 codec itself uses: the trial then predicts what
    // that codec makes, and it is 1.5-2.5× faster than `lz4_flex` (the trial is a
    // quarter of every 1 MiB chunk). A sample it cannot encode counts as incompressible.
    let lz4_out: usize = samples
        .iter()
        .map(|s| lz4::block::compress(s, None, false).map_or(s.len(), |c| c.len().min(s.len())))
        .sum();
    let lz4_sample_ratio = ratio(lz4_out, sample_len);
    let mut d = AutoDecision {
        codec: Codec::Lz4,
        sample_len,
        entropy_bits,
        lz4_sample_ratio,
        zstd_sample_ratio: None,
        reason: "",
    };
    if sample_len == 0 {
        d.codec = Codec::Store;
        d.reason = "empty input";
        return d;
    }
    if lz4_sample_ratio > 1.0 - MIN_LZ4_SAVING && entropy_bits >= STORE_ENTROPY {
        d.codec = Codec::Store;
        d.reason = "high entropy and LZ4 saves under 2% of the sample";
        return d;
    }
    let zstd_out: usize = samples
        .iter()
        .map(|s| crate::zstd_codec::compress(s, 1, 0).map_or(s.len(), |c| c.len().min(s.len())))
        .sum();
    let zstd_ratio = ratio(zstd_out, sample_len);
    d.zstd_sample_ratio = Some(zstd_ratio);
    if lz4_sample_ratio - zstd_ratio >= ZSTD_EXTRA_SAVING {
        d.codec = Codec::Zstd;
        d.reason = "zstd saves at least 5% more of the sample than LZ4";
    } else if lz4_sample_ratio > 1.0 - MIN_LZ4_SAVING {
        d.codec = Codec::Store;
        d.reason = "neither LZ4 nor zstd saves 2% of the sample";
    } else {
        d.codec = Codec::Lz4;
        d.reason = "LZ4 gets close to zstd's ratio, at several times its speed";
    }
    d
}

fn ratio(out: usize, input: usize) -> f64 {
    if input == 0 {
        1.0
    } else {
        out as f64 / input as f64
    }
}

/// Up to [`SAMPLE_BLOCKS`] blocks evenly spread over `data` (all of it when it is small).
fn sample(data: &[u8]) -> Vec<&[u8]> {
    if data.len() <= SAMPLE_BLOCKS * BLOCK_SIZE {
        return vec![data];
    }
    let stride = (data.len() - BLOCK_SIZE) / (SAMPLE_BLOCKS - 1);
    (0..SAMPLE_BLOCKS)
        .map(|i| &data[i * stride..i * stride + BLOCK_SIZE])
        .collect()
}

/// Shannon entropy in bits per byte.
fn entropy(samples: &[&[u8]]) -> f64 {
    let mut counts = [0u64; 256];
    let mut total = 0u64;
    for s in samples {
        for &b in *s {
            counts[b as usize] += 1;
        }
        total += s.len() as u64;
    }
    if total == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_and_constant_bytes() {
        let all: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
        assert!((entropy(&[&all]) - 8.0).abs() < 1e-9);
        assert_eq!(entropy(&[&[7u8; 100][..]]), 0.0);
    }

    #[test]
    fn samples_cover_start_and_end() {
        let data: Vec<u8> = (0..10 * BLOCK_SIZE).map(|i| i as u8).collect();
        let s = sample(&data);
        assert_eq!(s.len(), SAMPLE_BLOCKS);
        assert_eq!(s[0].as_ptr(), data.as_ptr());
        assert_eq!(
            s[3].as_ptr() as usize + BLOCK_SIZE,
            data.as_ptr() as usize + data.len()
        );
    }
}
