//! Decoding a frame from outside is capped by the size its content must have: a frame of a
//! few KiB that expands to 2 GiB is refused at the limit, having taken no more memory than
//! the limit. Every allocation of this test binary is counted to check that.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read as _, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use gpu_compress::{
    Codec, CodecChoice, CompressError, Compressor, CompressorConfig, EngineChoice,
    decompress_bounded,
};

/// The system allocator, counting the bytes live and the most ever live at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A moving realloc holds the old and the new block at once: count both.
        PEAK.fetch_max(LIVE.load(Ordering::SeqCst) + new_size, Ordering::SeqCst);
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time: the counters are global to the process.
static MEASURING: Mutex<()> = Mutex::new(());

/// `f`'s result and the most bytes it held beyond what was live when it started.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.load(Ordering::SeqCst);
    PEAK.store(start, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - start)
}

/// The chunk size the recipe names.
const EXPECTED: usize = 1_000_000;
/// Bookkeeping the decoders may take beside the output buffer.
const SLACK: usize = 64 << 10;
/// What the frames expand to.
const HUGE: u64 = 2 << 30;

/// Streams `len` zero bytes into `writer`, 1 MiB at a time.
fn write_zeros(writer: &mut impl std::io::Write, len: u64) {
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        writer.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
}

fn zstd_frame(content: &[u8], pledged: bool) -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    encoder.include_checksum(true).unwrap();
    if pledged {
        encoder
            .set_pledged_src_size(Some(content.len() as u64))
            .unwrap();
    }
    encoder.write_all(content).unwrap();
    encoder.finish().unwrap()
}

/// A frame made by C liblz4's frame encoder (as the `lz4` tool makes them).
fn liblz4_encoder(block: lz4::BlockSize, mode: lz4::BlockMode) -> lz4::Encoder<Vec<u8>> {
    lz4::EncoderBuilder::new()
        .block_size(block)
        .block_mode(mode)
        .build(Vec::new())
        .unwrap()
}

fn assert_refused(codec: Codec, frame: &[u8], what: &str) {
    let (result, peak) = peak_during(|| decompress_bounded(codec, frame, EXPECTED));
    match result {
        Err(CompressError::OutputLimit { codec: c, limit }) => {
            assert_eq!((c, limit), (codec, EXPECTED as u64), "{what}");
            let message = CompressError::OutputLimit { codec, limit }.to_string();
            assert!(message.contains("1000000"), "{message}");
        }
        other => panic!("{what}: {:?}", other.map(|v| v.len())),
    }
    assert!(
        peak <= EXPECTED + SLACK,
        "{what}: decoding a {}-byte frame took {peak} bytes (limit {EXPECTED} + {SLACK})",
        frame.len()
    );
}

#[test]
fn a_zstd_frame_of_2_gib_of_zeros_is_refused_at_the_expected_size() {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    // Streamed without a size, as an attacker would: the header does not say 2 GiB.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    write_zeros(&mut encoder, HUGE);
    let frame = encoder.finish().unwrap();
    assert!(frame.len() < 1 << 20, "{} bytes", frame.len());
    assert_refused(Codec::Zstd, &frame, "zstd, no content size");

    // With the size in its header, and after a small valid frame.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.set_pledged_src_size(Some(HUGE)).unwrap();
    write_zeros(&mut encoder, HUGE);
    let sized = encoder.finish().unwrap();
    assert_refused(Codec::Zstd, &sized, "zstd, content size 2 GiB");
    let mut two = zstd_frame(b"hello", true);
    two.extend_from_slice(&frame);
    assert_refused(Codec::Zstd, &two, "zstd, second frame");
}

#[test]
fn an_lz4_frame_of_2_gib_of_zeros_is_refused_at_the_expected_size() {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    // liblz4, linked 64 KiB blocks, no content size: decoded one block after another.
    let mut encoder = liblz4_encoder(lz4::BlockSize::Max64KB, lz4::BlockMode::Linked);
    write_zeros(&mut encoder, HUGE);
    let (linked, result) = encoder.finish();
    result.unwrap();
    assert_refused(Codec::Lz4, &linked, "lz4, linked blocks");

    // liblz4, independent 4 MiB blocks: decoded in parallel, the limit cuts a block.
    let mut encoder = liblz4_encoder(lz4::BlockSize::Max4MB, lz4::BlockMode::Independent);
    write_zeros(&mut encoder, HUGE);
    let (independent, result) = encoder.finish();
    result.unwrap();
    assert_refused(Codec::Lz4, &independent, "lz4, independent 4 MiB blocks");

    // This crate's own frames (independent 64 KiB blocks, content size in the header).
    let compressor = Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(Codec::Lz4),
        engine: EngineChoice::Cpu,
        ..Default::default()
    })
    .unwrap();
    let mut own = Vec::new();
    compressor
        .compress_stream(std::io::repeat(0).take(HUGE), HUGE, &mut own)
        .unwrap();
    assert_refused(Codec::Lz4, &own, "lz4, this crate's frame");
}

#[test]
fn content_of_exactly_the_limit_decodes_and_one_byte_less_is_refused() {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    // Text and random bytes: compressed and stored blocks, some blocks short.
    let mut data = common::text(700_000);
    data.extend(common::random(300_000, 7));
    let own = |codec| {
        Compressor::new(CompressorConfig {
            codec: CodecChoice::Fixed(codec),
            engine: EngineChoice::Cpu,
            ..Default::default()
        })
        .unwrap()
        .compress(&data)
        .unwrap()
        .bytes
    };
    let lib = |block, mode| {
        let mut encoder = liblz4_encoder(block, mode);
        encoder.write_all(&data).unwrap();
        let (frame, result) = encoder.finish();
        result.unwrap();
        frame
    };
    // Two frames back to back: the limit counts the content of both.
    let mut concatenated = lib(lz4::BlockSize::Max64KB, lz4::BlockMode::Independent);
    concatenated.extend(lib(lz4::BlockSize::Max256KB, lz4::BlockMode::Linked));
    let mut zstd_two = zstd_frame(&data, false);
    zstd_two.extend(zstd_frame(&data, true));
    let double: Vec<u8> = data.iter().chain(&data).copied().collect();
    let cases: Vec<(&str, Codec, Vec<u8>, &[u8])> = vec![
        ("own lz4", Codec::Lz4, own(Codec::Lz4), &data),
        ("own zstd", Codec::Zstd, own(Codec::Zstd), &data),
        ("store", Codec::Store, data.clone(), &data),
        (
            "liblz4 linked",
            Codec::Lz4,
            lib(lz4::BlockSize::Max64KB, lz4::BlockMode::Linked),
            &data,
        ),
        (
            "liblz4 independent 1 MiB",
            Codec::Lz4,
            lib(lz4::BlockSize::Max1MB, lz4::BlockMode::Independent),
            &data,
        ),
        (
            "zstd without size",
            Codec::Zstd,
            zstd_frame(&data, false),
            &data,
        ),
        ("two lz4 frames", Codec::Lz4, concatenated, &double),
        ("two zstd frames", Codec::Zstd, zstd_two, &double),
    ];
    for (what, codec, frame, content) in cases {
        let (decoded, peak) =
            peak_during(|| decompress_bounded(codec, &frame, content.len()).unwrap());
        assert!(decoded == content, "{what}: wrong bytes");
        assert!(
            peak <= content.len() + SLACK,
            "{what}: {peak} bytes for {}",
            content.len()
        );
        let short = decompress_bounded(codec, &frame, content.len() - 1).map(|v| v.len());
        assert!(
            matches!(short, Err(CompressError::OutputLimit { limit, .. }) if limit == content.len() as u64 - 1),
            "{what}: {short:?}"
        );
        // Far more room than needed changes nothing.
        assert!(decompress_bounded(codec, &frame, usize::MAX).unwrap() == content);
        assert!(decompress_bounded(codec, &frame, 1 << 30).unwrap() == content);
    }
}
