//! `Compressor::compress_stream`: the streamed frame is the in-memory frame, the reference
//! tools decode it, and a short, long or failing input or output is a typed error, never a
//! hang or a silently wrong frame.

mod common;

use std::io::{self, Cursor, Read, Write};

use common::run_cli;
use gpu_compress::{
    Codec, CodecChoice, CompressError, Compressor, CompressorConfig, EngineChoice, LZ4_BLOCK_SIZE,
    decompress,
};

fn compressor(codec: CodecChoice) -> Compressor {
    Compressor::new(CompressorConfig {
        codec,
        level: None,
        engine: EngineChoice::Cpu,
        verify: false,
    })
    .unwrap()
}

fn stream(c: &Compressor, data: &[u8]) -> (Vec<u8>, gpu_compress::CompressStats) {
    let mut out = Vec::new();
    let stats = c
        .compress_stream(Cursor::new(data), data.len() as u64, &mut out)
        .unwrap();
    (out, stats)
}

/// Sizes around the block and the streaming segment edges (16 blocks, or four per thread on
/// larger machines), and a mix of kinds spanning several segments.
fn inputs() -> Vec<(String, Vec<u8>)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let seg = (4 * threads).max(16) * LZ4_BLOCK_SIZE;
    let mut mixed = common::text(3 << 20);
    mixed.extend(common::random(2 << 20, 7));
    mixed.extend(common::zeros(1 << 20));
    mixed.extend(common::real_binary(3 << 20));
    vec![
        ("empty".into(), Vec::new()),
        ("one byte".into(), b"x".to_vec()),
        ("one block".into(), common::text(LZ4_BLOCK_SIZE)),
        ("segment-1".into(), common::text(seg - 1)),
        ("segment".into(), common::text(seg)),
        ("segment+1".into(), common::text(seg + 1)),
        ("mixed 9 MiB".into(), mixed),
    ]
}

#[test]
fn streamed_lz4_frame_is_the_in_memory_frame() {
    let c = compressor(CodecChoice::Fixed(Codec::Lz4));
    for (name, data) in inputs() {
        let (streamed, stats) = stream(&c, &data);
        let whole = c.compress(&data).unwrap();
        assert_eq!(streamed, whole.bytes, "{name}");
        assert_eq!(stats.codec, Codec::Lz4, "{name}");
        assert_eq!(stats.input_len, data.len(), "{name}");
        assert_eq!(stats.output_len, streamed.len(), "{name}");
        assert_eq!(decompress(Codec::Lz4, &streamed).unwrap(), data, "{name}");
    }
}

#[test]
fn reference_tools_decode_streamed_frames() {
    let lz4 = compressor(CodecChoice::Fixed(Codec::Lz4));
    let zstd = compressor(CodecChoice::Fixed(Codec::Zstd));
    for (name, data) in inputs().into_iter().filter(|(_, d)| !d.is_empty()) {
        let (frame, _) = stream(&lz4, &data);
        assert_eq!(run_cli("lz4", &["-d", "-c"], &frame), data, "lz4 {name}");
        let (frame, stats) = stream(&zstd, &data);
        assert_eq!(stats.codec, Codec::Zstd);
        assert_eq!(run_cli("zstd", &["-d", "-c"], &frame), data, "zstd {name}");
        assert_eq!(
            decompress(Codec::Zstd, &frame).unwrap(),
            data,
            "zstd {name}"
        );
    }
}

#[test]
fn store_auto_and_verify_stream_too() {
    let data = common::text(5 << 20);
    let (stored, stats) = stream(&compressor(CodecChoice::Fixed(Codec::Store)), &data);
    assert_eq!(stored, data);
    assert_eq!(stats.codec, Codec::Store);

    // `auto` takes the in-memory path: same decision and frame as `compress`.
    let auto = compressor(CodecChoice::Auto);
    let (frame, stats) = stream(&auto, &data);
    let whole = auto.compress(&data).unwrap();
    assert_eq!(frame, whole.bytes);
    assert_eq!(stats.codec, whole.codec);
    assert!(stats.auto.is_some());

    let verifying = Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(Codec::Lz4),
        engine: EngineChoice::Cpu,
        verify: true,
        ..Default::default()
    })
    .unwrap();
    let (frame, stats) = stream(&verifying, &data);
    assert!(stats.verified);
    assert_eq!(decompress(Codec::Lz4, &frame).unwrap(), data);
}

#[test]
fn input_shorter_or_longer_than_announced_is_an_error() {
    let data = common::text(5 << 20);
    for codec in [Codec::Lz4, Codec::Zstd, Codec::Store] {
        let c = compressor(CodecChoice::Fixed(codec));
        for announced in [data.len() as u64 - 1, data.len() as u64 + 1, 0] {
            let err = c
                .compress_stream(Cursor::new(&data), announced, io::sink())
                .unwrap_err();
            match err {
                CompressError::InputLength { expected, read } => {
                    assert_eq!(expected, announced, "{codec}");
                    assert_ne!(read, announced, "{codec}");
                }
                other => panic!("{codec}, announced {announced}: {other}"),
            }
        }
    }
    let auto = compressor(CodecChoice::Auto);
    assert!(matches!(
        auto.compress_stream(Cursor::new(&data), 10, io::sink()),
        Err(CompressError::InputLength { .. })
    ));
}

/// Reads `ok` bytes of `data`, then fails.
struct FailingReader<'a> {
    data: &'a [u8],
    ok: usize,
}

impl Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.ok -= n;
        Ok(n)
    }
}

/// Accepts `room` bytes, then fails.
struct FailingWriter {
    room: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn failing_reader_or_writer_is_an_io_error() {
    let data = common::text(12 << 20);
    let len = data.len() as u64;
    for codec in [Codec::Lz4, Codec::Zstd, Codec::Store] {
        let c = compressor(CodecChoice::Fixed(codec));
        let reader = FailingReader {
            data: &data,
            ok: 5 << 20,
        };
        match c.compress_stream(reader, len, io::sink()) {
            Err(CompressError::Io { source, .. }) => assert_eq!(source.to_string(), "disk on fire"),
            other => panic!("{codec}: {other:?}"),
        }
        match c.compress_stream(Cursor::new(&data), len, FailingWriter { room: 100_000 }) {
            Err(CompressError::Io { source, .. }) => {
                assert_eq!(source.to_string(), "disk full", "{codec}")
            }
            other => panic!("{codec}: {other:?}"),
        }
    }
}
