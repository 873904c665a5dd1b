//! Truncated and corrupted frames give typed errors: never a panic, never wrong bytes.

mod common;

use gpu_compress::{
    Codec, CodecChoice, CompressError, Compressor, CompressorConfig, EngineChoice, decompress,
};

fn frame(codec: Codec, data: &[u8]) -> Vec<u8> {
    Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(codec),
        engine: EngineChoice::Cpu,
        ..Default::default()
    })
    .unwrap()
    .compress(data)
    .unwrap()
    .bytes
}

/// Text then random: the frame has both compressed and stored blocks.
fn input() -> Vec<u8> {
    let mut d = common::text(100_000);
    d.extend(common::random(70_000, 1));
    d
}

#[test]
fn every_truncation_of_an_lz4_frame_is_an_error() {
    let data = input();
    let f = frame(Codec::Lz4, &data);
    for cut in 0..f.len() {
        let err =
            decompress(Codec::Lz4, &f[..cut]).expect_err(&format!("truncated at {cut} decoded"));
        assert!(
            matches!(
                err,
                CompressError::Truncated { .. } | CompressError::Corrupt { .. }
            ),
            "cut {cut}: {err:?}"
        );
    }
    let err = decompress(Codec::Lz4, &f[..f.len() - 2]).unwrap_err();
    assert!(
        matches!(
            err,
            CompressError::Truncated {
                what: "content checksum",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn every_bit_flip_in_an_lz4_frame_header_and_trailer_is_an_error() {
    let data = input();
    let f = frame(Codec::Lz4, &data);
    // Header (15 bytes), first block size, and the last 12 bytes (last block's tail, end
    // mark, checksum) bit by bit; the data in between at a stride.
    let positions: Vec<usize> = (0..19)
        .chain((19..f.len() - 12).step_by(97))
        .chain(f.len() - 12..f.len())
        .collect();
    for pos in positions {
        for bit in 0..8 {
            let mut bad = f.clone();
            bad[pos] ^= 1 << bit;
            match decompress(Codec::Lz4, &bad) {
                Err(_) => {}
                // Inside block data a flip can leave the content as it was (a match offset
                // moved to an identical earlier copy, a literal run cut where the match that
                // follows restores the same bytes): the content checksum then rightly passes.
                // Wrong bytes must never come out, and header and trailer flips always fail.
                Ok(got) if got == data && (19..f.len() - 12).contains(&pos) => {}
                Ok(got) => panic!(
                    "flip at byte {pos} bit {bit} decoded ({} bytes, equal: {})",
                    got.len(),
                    got == data
                ),
            }
        }
    }
}

#[test]
fn content_checksum_mismatch_is_reported_as_such() {
    let data = common::text(10_000);
    let mut f = frame(Codec::Lz4, &data);
    let n = f.len();
    f[n - 1] ^= 0xFF;
    let err = decompress(Codec::Lz4, &f).unwrap_err();
    assert!(
        matches!(
            err,
            CompressError::ChecksumMismatch {
                what: "content",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn wrong_magic_is_named() {
    let z = frame(Codec::Zstd, b"hello hello hello hello");
    let err = decompress(Codec::Lz4, &z).unwrap_err();
    assert!(
        matches!(
            err,
            CompressError::BadMagic {
                codec: Codec::Lz4,
                found: 0xFD2F_B528,
                offset: 0
            }
        ),
        "{err:?}"
    );
    let l = frame(Codec::Lz4, b"hello hello hello hello");
    let err = decompress(Codec::Zstd, &l).unwrap_err();
    assert!(
        matches!(
            err,
            CompressError::BadMagic {
                codec: Codec::Zstd,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        decompress(Codec::Lz4, b""),
        Err(CompressError::Truncated { .. })
    ));
    assert!(matches!(
        decompress(Codec::Zstd, b"\x28\xb5"),
        Err(CompressError::Truncated { .. })
    ));
    // Trailing garbage after a valid frame is not silently ignored.
    let mut trailing = l.clone();
    trailing.extend_from_slice(b"junk");
    assert!(
        matches!(decompress(Codec::Lz4, &trailing), Err(CompressError::BadMagic { offset, .. }) if offset == l.len())
    );
}

#[test]
fn zstd_truncations_and_flips_never_give_wrong_bytes() {
    let data = input();
    let f = frame(Codec::Zstd, &data);
    for cut in (0..f.len()).step_by(7).chain(f.len() - 8..f.len()) {
        let err = decompress(Codec::Zstd, &f[..cut])
            .expect_err(&format!("zstd truncated at {cut} decoded"));
        assert!(
            matches!(
                err,
                CompressError::Zstd { .. } | CompressError::Truncated { .. }
            ),
            "{err:?}"
        );
    }
    for pos in (0..f.len()).step_by(13) {
        let mut bad = f.clone();
        bad[pos] ^= 0x10;
        if let Ok(got) = decompress(Codec::Zstd, &bad) {
            assert!(got == data, "flip at {pos} decoded to wrong bytes");
        }
    }
}

#[test]
fn corrupt_block_data_is_caught() {
    // A frame with one compressed block whose match offset points before the block start.
    let data = common::text(50_000);
    let mut f = frame(Codec::Lz4, &data);
    // Byte 19 is the first token of block 1: make its literal run claim more bytes than exist.
    f[19] = 0xF0;
    f[20] = 0xFF;
    f[21] = 0xFF;
    let err = decompress(Codec::Lz4, &f).unwrap_err();
    assert!(
        matches!(
            err,
            CompressError::Corrupt { .. } | CompressError::ChecksumMismatch { .. }
        ),
        "{err:?}"
    );
}
