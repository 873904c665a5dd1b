//! `auto`: choosing a codec per chunk from a sample of it.
//!
//! The estimate is cheap next to the compression it steers: byte entropy of up to four
//! 64 KiB sample blocks, an LZ4 trial on them (liblz4, as the LZ4 codec) and, unless the
//! data is plainly incompressible, a zstd level-1 trial.
//!
//! A chunk of at most four blocks is its own sample. Its zstd trial then runs at the
//! level the chunk would be compressed at, and the trial's frame is the chunk's frame when
//! zstd wins: a small chunk is compressed once, not twice. (A folder of small files is
//! mostly such chunks; the second compression was a twelfth of its CPU.)

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
    /// zstd output size / input size on the sample, when it was tried.
    pub zstd_sample_ratio: Option<f64>,
    /// The level of that trial: 1, or the chunk's own level when the sample is the whole
    /// chunk.
    pub zstd_trial_level: Option<i32>,
    /// The rule that decided, in words.
    pub reason: &'static str,
}

/// A codec for a chunk, and the chunk's zstd frame when the trial made it.
pub(crate) struct Choice {
    pub(crate) decision: AutoDecision,
    /// The whole chunk compressed at the chunk's level (with the frame options of
    /// [`crate::zstd_codec::compress`]), when zstd was chosen on a trial of all of it.
    pub(crate) zstd_frame: Option<Vec<u8>>,
}

/// Picks a codec for `data`, which is compressed at zstd level `level` if zstd wins.
pub(crate) fn choose(data: &[u8], level: i32) -> Choice {
    let samples = sample(data);
    let whole = samples.len() == 1;
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
        zstd_trial_level: None,
        reason: "",
    };
    let decided = |d| Choice {
        decision: d,
        zstd_frame: None,
    };
    if sample_len == 0 {
        d.codec = Codec::Store;
        d.reason = "empty input";
        return decided(d);
    }
    if lz4_sample_ratio > 1.0 - MIN_LZ4_SAVING && entropy_bits >= STORE_ENTROPY {
        d.codec = Codec::Store;
        d.reason = "high entropy and LZ4 saves under 2% of the sample";
        return decided(d);
    }
    let trial_level = if whole { level } else { 1 };
    // Multithreading stays off, as `zstd_codec::compress` has it below its threshold (far
    // above four blocks), so a whole chunk's trial is the frame it would make.
    let mut trials: Vec<Option<Vec<u8>>> = samples
        .iter()
        .map(|s| crate::zstd_codec::compress(s, trial_level, 0).ok())
        .collect();
    let zstd_out: usize = samples
        .iter()
        .zip(&trials)
        .map(|(s, trial)| trial.as_ref().map_or(s.len(), |c| c.len().min(s.len())))
        .sum();
    let zstd_ratio = ratio(zstd_out, sample_len);
    d.zstd_sample_ratio = Some(zstd_ratio);
    d.zstd_trial_level = Some(trial_level);
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
    Choice {
        zstd_frame: if whole && d.codec == Codec::Zstd {
            trials.pop().flatten()
        } else {
            None
        },
        decision: d,
    }
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
    // Four tables, one per byte of every 4: a run of one byte value (zeros, padding,
    // spaces) would otherwise make each increment wait for the one before, several
    // times slower than counting different bytes.
    let mut tables = [[0u64; 256]; 4];
    let mut total = 0u64;
    for s in samples {
        let mut quads = s.chunks_exact(4);
        for quad in &mut quads {
            for (table, &b) in tables.iter_mut().zip(quad) {
                table[b as usize] += 1;
            }
        }
        for &b in quads.remainder() {
            tables[0][b as usize] += 1;
        }
        total += s.len() as u64;
    }
    let counts: [u64; 256] = std::array::from_fn(|b| tables.iter().map(|t| t[b]).sum());
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
    fn entropy_counts_every_byte_whatever_the_lengths() {
        // Lengths that are not multiples of the four tables, over several samples.
        let data: Vec<u8> = (0..10_007u32).map(|i| (i * i % 251) as u8).collect();
        let samples = [&data[..1], &data[1..4_098], &data[4_098..]];
        let mut counts = [0u64; 256];
        for &b in &data {
            counts[b as usize] += 1;
        }
        let expected: f64 = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / data.len() as f64;
                -p * p.log2()
            })
            .sum();
        assert!((entropy(&samples) - expected).abs() < 1e-12);
    }

    /// Text of `len` bytes that zstd compresses well beyond LZ4 (many distinct words).
    fn text(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 16);
        let mut x = 0x9e37_79b9_u32;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.extend_from_slice(format!("w{} ", x % 5000).as_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn a_small_chunk_won_by_zstd_keeps_the_trial_frame() {
        let data = text(100_000);
        let choice = choose(&data, 3);
        assert_eq!(choice.decision.codec, Codec::Zstd, "{:?}", choice.decision);
        let frame = choice.zstd_frame.expect("the trial's frame");
        assert_eq!(frame, crate::zstd_codec::compress(&data, 3, 0).unwrap());
        assert_eq!(zstd::decode_all(&frame[..]).unwrap(), data);
    }

    #[test]
    fn a_chunk_larger_than_its_sample_or_not_won_by_zstd_has_no_frame() {
        let big = text(2 * SAMPLE_BLOCKS * BLOCK_SIZE);
        let choice = choose(&big, 3);
        assert_eq!(choice.decision.codec, Codec::Zstd);
        assert!(choice.zstd_frame.is_none());
        let mut noise = vec![0u8; 100_000];
        let mut x = 1u64;
        for b in &mut noise {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (x >> 56) as u8;
        }
        let choice = choose(&noise, 3);
        assert_eq!(choice.decision.codec, Codec::Store);
        assert!(choice.zstd_frame.is_none());
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
