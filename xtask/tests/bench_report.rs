//! `cargo xtask bench` end to end on a tiny corpus: the real binary runs every stage (the
//! upload and the pipeline against its own fake-gcs-server) and writes report.md,
//! report.json and report.svg. Only the reports' structure is checked, never a timing.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Every stage the report must hold, each with Panini's row and a peer's.
const STAGES_WITH_PEERS: [&str; 6] = [
    "chunk",
    "compress lz4",
    "compress zstd",
    "upload",
    "dispatch",
    "pipeline (local)",
];

/// The original design's detect script, where the bench looks for it: beside this
/// checkout in the shared peers, or where `PANINI_SEED_DETECT` says.
fn seed_detect_script() -> Option<std::path::PathBuf> {
    std::env::var_os("PANINI_SEED_DETECT")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/peers/seed/detect_pending_chunks.py")
        })
        .canonicalize()
        .ok()
}

#[test]
fn bench_writes_a_report_with_every_stage_beside_its_peer_and_a_chart() {
    let out = tempfile::tempdir().unwrap();
    // Without the seed script, the detect comparison cannot run: the bench is told to
    // skip it, and must say so.
    let seed = seed_detect_script();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "--corpus-mib",
            "8",
            "--runs",
            "1",
            "--dispatch-chunks",
            "200",
            // 32 and 64 MiB files: the memory stage's two sizes, small.
            "--memory-gib",
            "0.03125,0.0625",
            "--small-files",
            "200",
            "--detect-chunks",
            if seed.is_some() { "2000" } else { "0" },
            "--out",
        ])
        .arg(out.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("xtask runs");
    assert!(
        output.status.success(),
        "bench failed: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    let rows = report["rows"].as_array().expect("rows");
    let mut stages = STAGES_WITH_PEERS.to_vec();
    stages.extend([
        "pipeline (emulator)",
        "pipeline (200 small files)",
        "memory",
    ]);
    for stage in &stages {
        let in_stage: Vec<&Value> = rows.iter().filter(|r| r["stage"] == *stage).collect();
        let ours: Vec<&&Value> = in_stage.iter().filter(|r| r["peer"] == false).collect();
        let peers: Vec<&&Value> = in_stage.iter().filter(|r| r["peer"] == true).collect();
        assert!(!ours.is_empty(), "no Panini row for {stage}: {in_stage:?}");
        assert!(!peers.is_empty(), "no peer row for {stage}: {in_stage:?}");
        for row in &in_stage {
            let mb = row["mb_per_s"].as_f64().unwrap_or(f64::NAN);
            assert!(
                mb.is_finite() && mb > 0.0,
                "{stage}: MB/s not positive in {row}"
            );
            assert!(
                row["bytes"].as_u64().unwrap() > 0,
                "{stage}: no bytes in {row}"
            );
        }
    }
    let compared: Vec<&str> = report["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["stage"].as_str().unwrap())
        .collect();
    // Detect is counted in chunks per second: its rows carry no bytes.
    if seed.is_some() {
        let detect: Vec<&Value> = rows.iter().filter(|r| r["stage"] == "detect").collect();
        assert_eq!(detect.len(), 3, "{detect:?}");
        for row in &detect {
            let per_s = row["chunks_per_s"].as_f64().unwrap_or(f64::NAN);
            assert!(per_s.is_finite() && per_s > 0.0, "detect: {row}");
        }
        stages.push("detect");
    }
    for stage in &stages {
        assert!(
            compared.contains(stage),
            "{stage} not compared: {compared:?}"
        );
    }
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), usize::from(seed.is_none()), "{skipped:?}");
    // The whole pipeline rebuilt and verified every file: the corpus into a local bucket
    // (work directories on the output's disk, then on tmpfs) and the emulator, the
    // folder of small files, and the memory stage's one file of each size.
    let pipelines = report["pipelines"].as_array().unwrap();
    let files_per_run: Vec<usize> = pipelines
        .iter()
        .map(|p| p["summary"]["files"].as_array().unwrap().len())
        .collect();
    assert_eq!(files_per_run, [7, 7, 7, 200, 1, 1], "{pipelines:?}");
    for p in pipelines {
        let files = p["summary"]["files"].as_array().unwrap();
        assert!(files.iter().all(|f| f["verified"] == true), "{p}");
    }
    // Peak memory is measured for every process the memory stage runs.
    for row in rows.iter().filter(|r| r["stage"] == "memory") {
        let mib = row["peak_rss_mib"].as_f64().unwrap_or(f64::NAN);
        assert!(mib.is_finite() && mib > 0.0, "no peak memory in {row}");
    }
    let machine = &report["machine"];
    assert!(machine["cpu_threads"].as_u64().unwrap() >= 1);
    assert!(!machine["loadavg_start"].as_str().unwrap().is_empty());
    assert!(!report["targets"].as_array().unwrap().is_empty());

    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for heading in [
        "## Machine",
        "## Per stage",
        "## Targets",
        "## Every measurement",
    ] {
        assert!(md.contains(heading), "report.md lacks {heading}");
    }
    for stage in &stages {
        assert!(
            md.lines().any(|l| l.starts_with(&format!("| {stage} |"))),
            "report.md has no row for {stage}"
        );
    }

    let svg = std::fs::read_to_string(out.path().join("report.svg")).unwrap();
    assert!(
        svg.starts_with("<svg"),
        "not an SVG: {}",
        &svg[..svg.len().min(80)]
    );
    // The chart is in MB/s; detect, in chunks per second, is not on it.
    for stage in stages.iter().filter(|stage| **stage != "detect") {
        assert!(svg.contains(stage), "the chart has no {stage} group");
    }
    // A bar per row, besides the background and the legend's swatches.
    assert!(svg.matches("<rect").count() > rows.len(), "too few bars");

    // The stage benchmarks' own reports land beside it, and nothing else is left behind.
    for file in ["compress.md", "compress.json", "upload.md", "upload.json"] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("scratch-"))
        .collect();
    assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");
    assert!(Path::new(&out.path().join("corpus")).is_dir());
}
