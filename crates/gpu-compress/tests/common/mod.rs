//! Test inputs shared by the integration tests: real binaries, text, random, zeros, and the
//! awkward sizes around the 64 KiB block boundary.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use rand::{RngCore, SeedableRng, rngs::StdRng};

pub const BLOCK: usize = 64 * 1024;

/// Sizes that hit every edge of the block layout.
pub const SIZES: [usize; 9] = [
    0,
    1,
    12,
    13,
    4096,
    BLOCK - 1,
    BLOCK,
    BLOCK + 1,
    3 * BLOCK + 1234,
];

pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn zeros(len: usize) -> Vec<u8> {
    vec![0u8; len]
}

/// Log-like text with repeated structure and varying numbers, like real logs.
pub fn text(len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(7);
    let words = [
        "compress",
        "chunk",
        "upload",
        "worker",
        "pending",
        "completed",
        "bucket",
        "frame",
        "error",
        "retry",
    ];
    let mut out = Vec::with_capacity(len + 128);
    let mut i = 0u64;
    while out.len() < len {
        let r = rng.next_u64();
        writeln!(
            out,
            "2025-11-13T14:{:02}:{:02}.{:06} INFO worker-{} {} {} id={} size={}",
            (r % 60),
            (r >> 8) % 60,
            (r >> 16) % 1_000_000,
            r % 8,
            words[(r >> 24) as usize % words.len()],
            words[(r >> 32) as usize % words.len()],
            i,
            (r >> 40) % 100_000
        )
        .unwrap();
        i += 1;
    }
    out.truncate(len);
    out
}

/// Up to `max` bytes of a real executable from /usr/bin.
pub fn real_binary(max: usize) -> Vec<u8> {
    for p in [
        "/usr/bin/bash",
        "/usr/bin/cargo",
        "/usr/bin/ls",
        "/usr/bin/env",
    ] {
        if let Ok(bytes) = std::fs::read(p) {
            return bytes[..bytes.len().min(max)].to_vec();
        }
    }
    let any = std::fs::read_dir("/usr/bin")
        .expect("/usr/bin exists")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("a file in /usr/bin");
    let bytes = std::fs::read(any).unwrap();
    bytes[..bytes.len().min(max)].to_vec()
}

/// Every kind of input at every awkward size, plus a few larger real ones.
pub fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for &n in &SIZES {
        all.push((format!("random-{n}"), random(n, n as u64)));
        all.push((format!("zeros-{n}"), zeros(n)));
        all.push((format!("text-{n}"), text(n)));
        all.push((format!("binary-{n}"), real_binary(n)));
    }
    all.push(("binary-2MiB".into(), real_binary(2 << 20)));
    all.push(("text-1MiB+7".into(), text((1 << 20) + 7)));
    all.push(("random-1MiB+3".into(), random((1 << 20) + 3, 99)));
    // Half random, half repetitive: blocks alternate between stored and compressed.
    let mut mixed = random(5 * BLOCK / 2, 5);
    mixed.extend(text(5 * BLOCK / 2));
    mixed.extend(random(BLOCK, 6));
    all.push(("mixed".into(), mixed));
    all
}

/// Runs a reference CLI, feeding `input` on stdin, and returns stdout. Panics (fails the
/// test) when the tool is missing: CI installs it, and a skipped check would hide that.
pub fn run_cli(tool: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{tool}` (install Debian's `{tool}` package): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "`{tool} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs a reference CLI on files in `dir`.
pub fn run_cli_files(tool: &str, args: &[&str], dir: &Path) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{tool}` (install Debian's `{tool}` package): {e}"));
    assert!(
        out.status.success(),
        "`{tool} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
