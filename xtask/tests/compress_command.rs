//! `cargo xtask compress` / `decompress` end to end: the real binary streams a file larger
//! than one pipeline segment into a frame the reference `lz4` / `zstd` tools decode, and a bad
//! input or output path fails with the path named and nothing left behind.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::Output;

/// Generous: a loaded 2-core machine runs these in seconds.
const LIMIT: Duration = Duration::from_secs(300);

fn xtask(args: &[&str], cwd: &Path) -> Output {
    support::xtask(args, cwd, LIMIT)
}

/// Several MiB of log-like text with incompressible stretches between, so frames hold both
/// compressed and stored blocks over several streaming segments.
fn sample() -> Vec<u8> {
    let mut out = Vec::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..120_000u64 {
        out.extend_from_slice(
            format!(
                "{i:08} INFO worker-{} chunk accepted size={}\n",
                i % 7,
                i * 31
            )
            .as_bytes(),
        );
        if i % 10_000 == 0 {
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.push(x as u8);
            }
        }
    }
    out
}

/// What the reference tool decodes `frame` to.
fn reference_decode(tool: &str, frame: &Path) -> Vec<u8> {
    let out = Command::new(tool)
        .args(["-d", "-c", "-q"])
        .arg(frame)
        .output()
        .unwrap_or_else(|e| panic!("running {tool} (CI installs it): {e}"));
    assert!(out.status.success(), "{tool} -d failed: {out:?}");
    out.stdout
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".panini-tmp-"))
        .collect()
}

#[test]
fn streamed_frames_decode_with_the_reference_tools_and_back() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input.log");
    let data = sample();
    assert!(data.len() > 4 << 20, "spans several segments");
    std::fs::write(&input, &data).unwrap();
    let input_arg = input.to_str().unwrap();

    for (codec, level, tool) in [
        ("lz4", None, Some("lz4")),
        ("zstd", Some("3"), Some("zstd")),
        ("zstd", Some("1"), Some("zstd")),
        ("store", None, None),
        ("auto", None, None),
    ] {
        let frame = work.path().join(format!("out.{codec}"));
        let mut args = vec![
            "compress",
            input_arg,
            "-o",
            frame.to_str().unwrap(),
            "--codec",
            codec,
            "--engine",
            "cpu",
            // zstd runs twice into the same file: replacing it is asked for.
            "--force",
            "--json",
        ];
        if let Some(l) = level {
            args.extend(["--level", l]);
        }
        let out = xtask(&args, work.path());
        assert!(out.status.success(), "{codec}: {}", out.text());
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(stats["input_bytes"], data.len(), "{codec}: {stats}");
        match tool {
            Some(tool) => assert!(reference_decode(tool, &frame) == data, "{codec}"),
            None if codec == "store" => assert!(std::fs::read(&frame).unwrap() == data),
            None => {}
        }
        if codec != "store" {
            let back = work.path().join(format!("back.{codec}"));
            let out = xtask(
                &[
                    "decompress",
                    frame.to_str().unwrap(),
                    "-o",
                    back.to_str().unwrap(),
                    "--force",
                ],
                work.path(),
            );
            assert!(out.status.success(), "{codec}: {}", out.text());
            assert!(std::fs::read(&back).unwrap() == data, "{codec}");
        }
    }
    assert!(leftovers(work.path()).is_empty());
}

#[test]
fn missing_input_or_output_directory_is_named_and_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("no-such-file");
    let frame = work.path().join("out.lz4");
    let out = xtask(
        &[
            "compress",
            missing.to_str().unwrap(),
            "-o",
            frame.to_str().unwrap(),
            "--codec",
            "lz4",
        ],
        work.path(),
    );
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-file"),
        "{}",
        out.text()
    );
    assert!(!frame.exists());
    assert!(leftovers(work.path()).is_empty());

    let input = work.path().join("input.log");
    std::fs::write(&input, sample()).unwrap();
    let nowhere = work.path().join("missing-dir").join("out.lz4");
    let out = xtask(
        &[
            "compress",
            input.to_str().unwrap(),
            "-o",
            nowhere.to_str().unwrap(),
            "--codec",
            "lz4",
        ],
        work.path(),
    );
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing-dir"),
        "{}",
        out.text()
    );
}
