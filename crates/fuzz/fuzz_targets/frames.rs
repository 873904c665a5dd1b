//! LZ4 and zstd frame decoding, bounded: never more output than the bound, never a panic.
#![no_main]

use gpu_compress::{Codec, decompress_bounded};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the bound, the rest is the frame; LZ4 and zstd magic
    // numbers are put in front half of the time so both decoders get past the header.
    let Some((&[a, b], rest)) = data.split_first_chunk::<2>().map(|(h, r)| (h, r)) else {
        return;
    };
    let bound = usize::from(u16::from_le_bytes([a, b]));
    for (codec, magic) in [
        (Codec::Lz4, &[0x04, 0x22, 0x4D, 0x18][..]),
        (Codec::Zstd, &[0x28, 0xB5, 0x2F, 0xFD][..]),
    ] {
        for frame in [rest.to_vec(), [magic, rest].concat()] {
            if let Ok(out) = decompress_bounded(codec, &frame, bound) {
                assert!(out.len() <= bound, "{codec}: {} bytes over a bound of {bound}", out.len());
            }
        }
    }
});
