//! Our frames decode with the reference `lz4` and `zstd` tools, and theirs decode here.
//! The tools are required: a missing one fails the test (CI installs Debian's `lz4`, `zstd`).

mod common;

use common::run_cli;
use gpu_compress::{
    Codec, CodecChoice, Compressor, CompressorConfig, EngineChoice, decompress, detect_codec,
};

fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = common::corpus()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("-12") && !n.ends_with("-4096"))
        .collect();
    v.push(("binary-3MiB".into(), common::real_binary(3 << 20)));
    v
}

fn ours(codec: Codec, data: &[u8]) -> Vec<u8> {
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

#[test]
fn lz4_cli_decodes_our_frames() {
    for (name, data) in inputs() {
        let frame = ours(Codec::Lz4, &data);
        assert_eq!(run_cli("lz4", &["-d", "-c"], &frame), data, "{name}");
    }
}

#[test]
fn zstd_cli_decodes_our_frames() {
    for (name, data) in inputs() {
        let frame = ours(Codec::Zstd, &data);
        assert_eq!(run_cli("zstd", &["-d", "-c"], &frame), data, "{name}");
    }
}

#[test]
fn we_decode_lz4_cli_frames() {
    // Default (4 MiB independent blocks), linked blocks, 256 KiB blocks with block
    // checksums, content size stored, and the high-compression mode. (64 KiB blocks, `-B4`,
    // are left out: lz4 1.9.4 itself fails on an incompressible 65535-byte input with them.)
    let variants: [&[&str]; 5] = [
        &["-1"],
        &["-1", "-BD"],
        &["-1", "-B5", "-BX"],
        &["-1", "--content-size"],
        &["-9", "-BD", "-B5"],
    ];
    for (name, data) in inputs() {
        for args in variants {
            let mut a = args.to_vec();
            a.extend(["-c"]);
            let frame = run_cli("lz4", &a, &data);
            assert_eq!(detect_codec(&frame), Some(Codec::Lz4));
            let got =
                decompress(Codec::Lz4, &frame).unwrap_or_else(|e| panic!("{name} {args:?}: {e}"));
            assert!(got == data, "{name} {args:?}: wrong bytes");
        }
    }
}

#[test]
fn we_decode_zstd_cli_frames() {
    let variants: [&[&str]; 3] = [&["-1", "-T0"], &["-3", "-T0"], &["-19", "--no-check"]];
    for (name, data) in inputs() {
        for args in variants {
            let mut a = args.to_vec();
            a.extend(["-c", "-q"]);
            let frame = run_cli("zstd", &a, &data);
            assert_eq!(detect_codec(&frame), Some(Codec::Zstd));
            let got =
                decompress(Codec::Zstd, &frame).unwrap_or_else(|e| panic!("{name} {args:?}: {e}"));
            assert!(got == data, "{name} {args:?}: wrong bytes");
        }
    }
}

#[test]
fn concatenated_frames_decode_to_the_concatenation() {
    let a = common::text(100_000);
    let b = common::real_binary(70_000);
    for codec in [Codec::Lz4, Codec::Zstd] {
        let mut frames = ours(codec, &a);
        frames.extend(ours(codec, &b));
        let mut both = a.clone();
        both.extend(&b);
        assert_eq!(decompress(codec, &frames).unwrap(), both);
        let tool = if codec == Codec::Lz4 { "lz4" } else { "zstd" };
        assert_eq!(run_cli(tool, &["-d", "-c"], &frames), both, "{tool}");
    }
}

#[test]
fn cli_round_trip_through_files() {
    // The file path the CLIs take in the benchmark: `lz4 -d IN OUT` on a file we wrote.
    let dir = tempfile::tempdir().unwrap();
    let data = common::text(777_777);
    std::fs::write(dir.path().join("x.lz4"), ours(Codec::Lz4, &data)).unwrap();
    std::fs::write(dir.path().join("x.zst"), ours(Codec::Zstd, &data)).unwrap();
    common::run_cli_files(
        "lz4",
        &["-d", "-q", "-f", "x.lz4", "x.from-lz4"],
        dir.path(),
    );
    common::run_cli_files(
        "zstd",
        &["-d", "-q", "-f", "x.zst", "-o", "x.from-zstd"],
        dir.path(),
    );
    assert_eq!(std::fs::read(dir.path().join("x.from-lz4")).unwrap(), data);
    assert_eq!(std::fs::read(dir.path().join("x.from-zstd")).unwrap(), data);
}
