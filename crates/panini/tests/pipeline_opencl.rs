//! `panini pipeline --engine opencl` on real files into a local bucket, checked by tools
//! Panini does not contain: every stored chunk object decoded by the stock `lz4 -d` /
//! `zstd -d` and compared with the chunk, every file rebuilt by `panini reconstruct` and
//! compared with `cmp` and `sha256sum`. The LZ4 frames here come from the OpenCL kernel
//! (PoCL in CI), which the completion records and the report confirm.
//!
//! Skipped, saying why, only where the build has no OpenCL engine or the machine no
//! OpenCL device (as the worker's OpenCL test decides).

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use support::{sha256sum, tool};

fn panini(args: &[&str], cwd: &Path) {
    support::panini_ok(args, cwd, &[]);
}

/// Inputs whose chunks `auto` sends to LZ4 (long repeats, where zstd gains little), to
/// zstd (text) and to `store` (random bytes).
fn write_inputs(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    };
    let block = random(997);
    let repeats: Vec<u8> = block.iter().copied().cycle().take(1_500_000).collect();
    let text: String = (0..30_000)
        .map(|i| {
            format!(
                "{i:06} GET /objects/{} 200 {}\n",
                i % 311,
                (i * 7919) % 10007
            )
        })
        .collect();
    let noise = random(700_000);
    [
        ("repeats", "repeats.bin", repeats),
        ("access", "access.log", text.into_bytes()),
        ("noise", "noise.bin", noise),
    ]
    .into_iter()
    .map(|(name, file, bytes)| {
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        (name, path)
    })
    .collect()
}

#[test]
fn an_opencl_pipeline_stores_frames_that_stock_tools_decode_and_files_that_rebuild() {
    if !gpu_compress::opencl::BUILT {
        println!("skipped: this build has no OpenCL engine");
        return;
    }
    if let Err(e) = gpu_compress::opencl::device() {
        println!("skipped: no OpenCL device here ({e})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let bucket = dir.path().join("bucket");
    let inputs = write_inputs(dir.path());
    let mut args = vec![
        "pipeline",
        "--engine",
        "opencl",
        "--workers",
        "2",
        "--strategy",
        "size",
        "--chunk-size",
        "256K",
        "--work-dir",
        work.to_str().unwrap(),
        "--bucket",
        bucket.to_str().unwrap(),
        "--json",
    ];
    args.extend(inputs.iter().map(|(_, p)| p.to_str().unwrap()));
    let out = support::panini_ok(&args, dir.path(), &[]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["engine"], "opencl", "{report:#}");
    assert_eq!(report["files"].as_array().unwrap().len(), 3, "{report:#}");

    // Every chunk of the tree by the SHA-256 of its data.bin.
    let tree = work.join("pending_compression");
    let mut chunks: HashMap<String, PathBuf> = HashMap::new();
    for (name, _) in &inputs {
        for entry in std::fs::read_dir(tree.join(name)).unwrap() {
            let data = entry.unwrap().path().join("data.bin");
            if data.is_file() {
                chunks.insert(sha256sum(&data), data);
            }
        }
    }

    // Every stored object decoded by the stock tool for its codec.
    let scratch = tempfile::tempdir().unwrap();
    let mut codecs: HashMap<String, usize> = HashMap::new();
    for object in std::fs::read_dir(bucket.join("chunks")).unwrap() {
        let object = object.unwrap().path();
        let file_name = object.file_name().unwrap().to_str().unwrap().to_owned();
        let (hash, codec) = file_name.split_once('.').unwrap();
        let decoded = scratch.path().join(hash);
        let (o, d) = (object.to_str().unwrap(), decoded.to_str().unwrap());
        match codec {
            "lz4" => drop(tool("lz4", &["-d", "-q", "-f", o, d])),
            "zstd" => drop(tool("zstd", &["-d", "-q", "-f", o, "-o", d])),
            "store" => drop(tool("cp", &[o, d])),
            other => panic!("{file_name}: unknown codec {other}"),
        }
        let chunk = chunks
            .get(hash)
            .unwrap_or_else(|| panic!("{file_name} names no chunk of the tree"));
        tool("cmp", &[d, chunk.to_str().unwrap()]);
        assert_eq!(sha256sum(&decoded), hash, "{file_name}");
        *codecs.entry(codec.to_owned()).or_default() += 1;

        // The completion record says which engine made the object.
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(bucket.join("status").join(format!("{hash}.json"))).unwrap(),
        )
        .unwrap();
        if codec == "lz4" {
            assert_eq!(
                record["stats"]["engine"], "opencl",
                "{file_name}: {record:#}"
            );
        }
    }
    assert_eq!(codecs.values().sum::<usize>(), chunks.len(), "{codecs:?}");
    assert!(
        codecs.get("lz4").copied().unwrap_or(0) >= 5,
        "the repeats file's chunks are LZ4, from the kernel: {codecs:?}"
    );

    // Every file rebuilt, as a user rebuilds it, and compared byte for byte.
    for (name, original) in &inputs {
        let rebuilt = dir.path().join(format!("{name}.rebuilt"));
        panini(
            &[
                "reconstruct",
                name,
                "--bucket",
                bucket.to_str().unwrap(),
                "-o",
                rebuilt.to_str().unwrap(),
            ],
            dir.path(),
        );
        tool(
            "cmp",
            &[original.to_str().unwrap(), rebuilt.to_str().unwrap()],
        );
        assert_eq!(sha256sum(&rebuilt), sha256sum(original), "{name}");
    }
}
