//! `cargo xtask bench compress`: Panini's codecs and engines beside the reference `lz4` and
//! `zstd` tools on the same generated corpus in the same run. Whole commands are timed for
//! both sides (median of several runs), the library alone beside them; the tables go to
//! `target/bench/compress.md` and `target/bench/compress.json`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use gpu_compress::{Codec, CodecChoice, Compressor, CompressorConfig, EngineChoice};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Corpus size in MiB, split over logs, source, binaries, random, zeros, PNG- and MP4-like files.
    #[arg(long, default_value_t = 256)]
    pub corpus_mib: usize,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// Corpus files: name and share of the corpus in percent.
const FILES: [(&str, usize); 7] = [
    ("logs.txt", 20),
    ("source.txt", 15),
    ("binaries.bin", 20),
    ("random.bin", 10),
    ("zeros.bin", 5),
    ("png-like.png", 15),
    ("mp4-like.mp4", 15),
];

/// One way of compressing a file.
#[derive(Debug, Clone)]
enum Tool {
    /// A reference CLI: program and arguments before IN / OUT.
    Cli {
        name: &'static str,
        program: &'static str,
        args: &'static [&'static str],
        out_flag: Option<&'static str>,
    },
    /// `xtask compress` as a whole command, and the library call in process.
    Panini {
        name: String,
        codec: CodecChoice,
        level: Option<i32>,
        engine: EngineChoice,
    },
}

impl Tool {
    fn name(&self) -> String {
        match self {
            Tool::Cli { name, .. } => (*name).to_string(),
            Tool::Panini { name, .. } => name.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Measure {
    tool: String,
    kind: &'static str,
    file: String,
    input: usize,
    output: usize,
    median_s: f64,
    runs_s: Vec<f64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.corpus_mib == 0 || args.runs == 0 {
        bail!("--corpus-mib and --runs must be positive");
    }
    let bench_dir = crate_target_dir().join("bench");
    let corpus_dir = bench_dir.join("compress-corpus");
    std::fs::create_dir_all(&corpus_dir)
        .with_context(|| format!("creating {}", corpus_dir.display()))?;
    let files = write_corpus(&corpus_dir, args.corpus_mib << 20)?;
    measure_corpus(&args, &files, &bench_dir.join("compress-out"))?.write(&bench_dir)?;
    Ok(())
}

/// What one `bench compress` run measured; [`Outcome::write`] turns it into the report.
#[derive(Debug)]
pub struct Outcome {
    corpus_mib: usize,
    runs: usize,
    files: Vec<(PathBuf, usize)>,
    tools: Vec<Tool>,
    results: Vec<Measure>,
}

/// One tool's throughput over the whole corpus, in one way of timing it.
#[derive(Debug, Clone)]
pub struct Total {
    /// `lz4 -1`, `panini lz4 cpu`, ….
    pub tool: String,
    /// `command` (a reference CLI), `panini command` or `panini in-process`.
    pub kind: &'static str,
    pub input_bytes: usize,
    /// MB/s (10^6 bytes) over the sum of the per-file medians.
    pub mb_per_s: f64,
    /// Input bytes over output bytes.
    pub ratio: f64,
}

/// One of the issues' speed targets, checked against its reference tool.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: String,
    pub ours_mb_per_s: f64,
    pub reference_mb_per_s: f64,
    /// Ours over the reference.
    pub speedup: f64,
    /// Input over output bytes, ours and the reference's.
    pub ours_ratio: f64,
    pub reference_ratio: f64,
    /// What the target asks for, in words.
    pub wanted: String,
    pub met: bool,
}

impl Outcome {
    /// Every tool and kind that was measured, reference tools first.
    pub fn totals(&self) -> Vec<Total> {
        let mut out = Vec::new();
        for t in &self.tools {
            for kind in ["command", "panini command", "panini in-process"] {
                let (input_bytes, mb_per_s, ratio) = totals(&self.results, &t.name(), kind);
                if input_bytes > 0 {
                    out.push(Total {
                        tool: t.name(),
                        kind,
                        input_bytes,
                        mb_per_s,
                        ratio,
                    });
                }
            }
        }
        out
    }

    /// The issues' targets, met or missed.
    pub fn targets(&self) -> Vec<Target> {
        targets(&self.results).0
    }

    /// Writes `compress.md` and `compress.json` into `dir` and prints the table.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        report(
            dir,
            self.corpus_mib,
            self.runs,
            &self.files,
            &self.tools,
            &self.results,
        )
    }
}

/// Times every tool on every corpus file (`files` from [`write_corpus`]), `args.runs`
/// rounds, writing the compressed outputs under `out_dir` (deleted after each run).
pub fn measure_corpus(
    args: &Args,
    files: &[(PathBuf, usize)],
    out_dir: &Path,
) -> anyhow::Result<Outcome> {
    if args.runs == 0 {
        bail!("--runs must be positive");
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out_dir = out_dir.to_owned();
    let files = files.to_vec();
    let mut tools = vec![
        Tool::Cli {
            name: "lz4 -1",
            program: "lz4",
            args: &["-1", "-f", "-q"],
            out_flag: None,
        },
        Tool::Cli {
            name: "zstd -1 -T0",
            program: "zstd",
            args: &["-1", "-T0", "-f", "-q"],
            out_flag: Some("-o"),
        },
        Tool::Cli {
            name: "zstd -3 -T0",
            program: "zstd",
            args: &["-3", "-T0", "-f", "-q"],
            out_flag: Some("-o"),
        },
        Tool::Panini {
            name: "panini lz4 cpu".into(),
            codec: CodecChoice::Fixed(Codec::Lz4),
            level: None,
            engine: EngineChoice::Cpu,
        },
        Tool::Panini {
            name: "panini zstd -1".into(),
            codec: CodecChoice::Fixed(Codec::Zstd),
            level: Some(1),
            engine: EngineChoice::Cpu,
        },
        Tool::Panini {
            name: "panini zstd -3".into(),
            codec: CodecChoice::Fixed(Codec::Zstd),
            level: Some(3),
            engine: EngineChoice::Cpu,
        },
        Tool::Panini {
            name: "panini auto cpu".into(),
            codec: CodecChoice::Auto,
            level: None,
            engine: EngineChoice::Cpu,
        },
    ];
    match Compressor::new(CompressorConfig {
        engine: EngineChoice::OpenCl,
        ..Default::default()
    }) {
        Ok(c) => tools.push(Tool::Panini {
            name: format!("panini lz4 opencl ({})", c.device()),
            codec: CodecChoice::Fixed(Codec::Lz4),
            level: None,
            engine: EngineChoice::OpenCl,
        }),
        Err(e) => println!("bench: no OpenCL row: {e}"),
    }

    // A private copy of this very binary: the target dir is shared, and a `cargo build` from
    // elsewhere (without `--features opencl`) could replace `target/debug/xtask` mid-run.
    let exe = out_dir.join("xtask-under-test");
    std::fs::copy(
        std::env::current_exe().context("locating the xtask binary")?,
        &exe,
    )
    .with_context(|| format!("copying the xtask binary to {}", exe.display()))?;
    // Rounds interleave every tool and file, so load from elsewhere on the machine spreads
    // over all rows instead of skewing whichever tool ran at the wrong moment.
    let inputs: Vec<Vec<u8>> = files
        .iter()
        .map(|(f, _)| std::fs::read(f).with_context(|| format!("reading {}", f.display())))
        .collect::<anyhow::Result<_>>()?;
    let compressors: Vec<Option<Compressor>> = tools
        .iter()
        .map(|t| match t {
            Tool::Panini {
                codec,
                level,
                engine,
                ..
            } => Compressor::new(CompressorConfig {
                codec: *codec,
                level: *level,
                engine: *engine,
                verify: false,
            })
            .map(Some),
            Tool::Cli { .. } => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    // (tool, file) -> (command seconds, in-process seconds, command output, in-process output)
    let mut cells = vec![vec![(Vec::new(), Vec::new(), 0usize, 0usize); files.len()]; tools.len()];
    for round in 0..args.runs {
        for (ti, tool) in tools.iter().enumerate() {
            for (fi, (file, _)) in files.iter().enumerate() {
                let name = file.file_name().unwrap().to_string_lossy().to_string();
                let out = out_dir.join(format!(
                    "{name}.{}",
                    tool.name().replace([' ', '(', ')', '/'], "_")
                ));
                let mut cmd = match tool {
                    Tool::Cli {
                        program,
                        args,
                        out_flag,
                        ..
                    } => {
                        let mut c = Command::new(program);
                        c.args(*args).arg(file);
                        if let Some(f) = out_flag {
                            c.arg(f);
                        }
                        c.arg(&out);
                        c
                    }
                    Tool::Panini {
                        codec,
                        level,
                        engine,
                        ..
                    } => {
                        let mut c = Command::new(&exe);
                        c.arg("compress")
                            .arg(file)
                            .arg("-o")
                            .arg(&out)
                            .arg("--codec")
                            .arg(codec.to_string())
                            .arg("--engine")
                            .arg(engine.to_string());
                        if let Some(l) = level {
                            c.arg("--level").arg(l.to_string());
                        }
                        c
                    }
                };
                // Panini's command fsyncs its output (atomic, durable write); the reference
                // tools do not, so their output is fsynced right after they exit, inside the
                // timing: both sides are measured to the same point, bytes on disk.
                let sync = matches!(tool, Tool::Cli { .. }).then_some(out.as_path());
                let secs = time_command(&mut cmd, sync)?;
                let cell = &mut cells[ti][fi];
                cell.0.push(secs);
                cell.2 = std::fs::metadata(&out)
                    .with_context(|| format!("{} wrote no {}", tool.name(), out.display()))?
                    .len() as usize;
                std::fs::remove_file(&out).ok();
                if let Some(c) = &compressors[ti] {
                    let start = Instant::now();
                    cell.3 = c.compress(&inputs[fi])?.bytes.len();
                    cell.1.push(start.elapsed().as_secs_f64());
                }
            }
        }
        println!("bench: round {}/{} done", round + 1, args.runs);
    }
    let mut results = Vec::new();
    for (ti, tool) in tools.iter().enumerate() {
        for (fi, (file, input)) in files.iter().enumerate() {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            let (cmd_s, lib_s, cmd_out, lib_out) = cells[ti][fi].clone();
            let kind = if matches!(tool, Tool::Cli { .. }) {
                "command"
            } else {
                "panini command"
            };
            results.push(measure(
                tool.name(),
                kind,
                name.clone(),
                *input,
                cmd_out,
                cmd_s,
            ));
            if !lib_s.is_empty() {
                results.push(measure(
                    tool.name(),
                    "panini in-process",
                    name,
                    *input,
                    lib_out,
                    lib_s,
                ));
            }
        }
    }
    std::fs::remove_file(&exe).ok();
    Ok(Outcome {
        corpus_mib: args.corpus_mib,
        runs: args.runs,
        files,
        tools,
        results,
    })
}

fn measure(
    tool: String,
    kind: &'static str,
    file: String,
    input: usize,
    output: usize,
    mut runs: Vec<f64>,
) -> Measure {
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    let median_s = sorted[sorted.len() / 2];
    runs.shrink_to_fit();
    Measure {
        tool,
        kind,
        file,
        input,
        output,
        median_s,
        runs_s: runs,
    }
}

fn time_command(cmd: &mut Command, sync: Option<&Path>) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (is it installed?)"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(path) = sync {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// (input bytes, MB/s over the sum of medians, input/output ratio) of one tool and kind.
fn totals(results: &[Measure], tool: &str, kind: &str) -> (usize, f64, f64) {
    let rows: Vec<&Measure> = results
        .iter()
        .filter(|m| m.tool == tool && m.kind == kind)
        .collect();
    let input: usize = rows.iter().map(|m| m.input).sum();
    let output: usize = rows.iter().map(|m| m.output).sum();
    let secs: f64 = rows.iter().map(|m| m.median_s).sum();
    (
        input,
        mb_per_s(input, secs),
        input as f64 / output.max(1) as f64,
    )
}

fn report(
    dir: &Path,
    corpus_mib: usize,
    runs: usize,
    files: &[(PathBuf, usize)],
    tools: &[Tool],
    results: &[Measure],
) -> anyhow::Result<()> {
    let mut md = String::new();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    md += &format!(
        "# Compression benchmark\n\nCorpus: {} MiB in {} files, {} runs each (median), {} CPU threads. \
         \"command\" rows time whole commands (read, compress, write, fsync: Panini's `xtask compress` fsyncs its atomic write, the reference tools' output is fsynced right after they exit, inside the timing); \
         \"in-process\" times the library call on data in memory.\n\n",
        corpus_mib,
        files.len(),
        runs,
        threads
    );
    md += "| tool | kind | MB/s | ratio |\n|---|---|---:|---:|\n";
    let mut rows = Vec::new();
    for t in tools {
        for kind in ["command", "panini command", "panini in-process"] {
            let (input, mbs, ratio) = totals(results, &t.name(), kind);
            if input > 0 {
                md += &format!("| {} | {kind} | {mbs:.1} | {ratio:.3} |\n", t.name());
                rows.push(json!({"tool": t.name(), "kind": kind, "input_bytes": input, "mb_per_s": mbs, "ratio": ratio}));
            }
        }
    }

    md += "\n## Targets\n\n";
    let (target_list, target_md) = targets(results);
    md += &target_md;
    let targets: Vec<_> = target_list
        .iter()
        .map(|t| json!({"target": t.label, "ours_mb_per_s": t.ours_mb_per_s, "reference_mb_per_s": t.reference_mb_per_s, "speedup": t.speedup, "ours_ratio": t.ours_ratio, "reference_ratio": t.reference_ratio, "wanted": t.wanted, "met": t.met}))
        .collect();

    md += "\n## Per file (MB/s, ratio)\n\n| tool | kind |";
    for (f, _) in files {
        md += &format!(" {} |", f.file_name().unwrap().to_string_lossy());
    }
    md += "\n|---|---|";
    md += &"---:|".repeat(files.len());
    md += "\n";
    for t in tools {
        for kind in ["command", "panini command", "panini in-process"] {
            let per: Vec<&Measure> = results
                .iter()
                .filter(|m| m.tool == t.name() && m.kind == kind)
                .collect();
            if per.is_empty() {
                continue;
            }
            md += &format!("| {} | {kind} |", t.name());
            for m in per {
                md += &format!(
                    " {:.0}, {:.2} |",
                    mb_per_s(m.input, m.median_s),
                    m.input as f64 / m.output.max(1) as f64
                );
            }
            md += "\n";
        }
    }

    let per_file: Vec<_> = results
        .iter()
        .map(|m| json!({"tool": m.tool, "kind": m.kind, "file": m.file, "input_bytes": m.input, "output_bytes": m.output, "median_s": m.median_s, "runs_s": m.runs_s}))
        .collect();
    let doc = json!({
        "corpus_mib": corpus_mib,
        "runs": runs,
        "threads": threads,
        "files": files.iter().map(|(f, n)| json!({"file": f.file_name().unwrap().to_string_lossy(), "bytes": n})).collect::<Vec<_>>(),
        "totals": rows,
        "targets": targets,
        "measurements": per_file,
    });
    let md_path = dir.join("compress.md");
    let json_path = dir.join("compress.json");
    chunk_model::json_file::write_bytes_atomic(&md_path, md.as_bytes())
        .with_context(|| format!("writing {}", md_path.display()))?;
    chunk_model::json_file::write_atomic(&json_path, &doc)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!(
        "\n{md}\nwrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    Ok(())
}

/// The issues' speed targets against the reference tools, and their markdown lines.
fn targets(results: &[Measure]) -> (Vec<Target>, String) {
    let mut md = String::new();
    let mut targets = Vec::new();
    let mut check = |label: &str,
                     ours: (&str, &str),
                     theirs: &str,
                     speed: f64,
                     ratio_tol: Option<f64>| {
        let o = totals(results, ours.0, ours.1);
        let r = totals(results, theirs, "command");
        let speedup = o.1 / r.1;
        let ratio_ok = ratio_tol.is_none_or(|tol| o.2 >= r.2 * (1.0 - tol));
        let pass = speedup >= speed && ratio_ok;
        let wanted = format!(
            "≥ {speed}× {theirs}{}",
            ratio_tol
                .map(|t| format!(", ratio within {:.0}%", t * 100.0))
                .unwrap_or_default()
        );
        md += &format!(
            "- {label}: {:.1} vs {:.1} MB/s = {speedup:.2}× (target ≥ {speed}×), ratio {:.3} vs {:.3}{} → **{}**\n",
            o.1,
            r.1,
            o.2,
            r.2,
            ratio_tol
                .map(|t| format!(" (target within {:.0}%)", t * 100.0))
                .unwrap_or_default(),
            if pass { "met" } else { "MISSED" }
        );
        targets.push(Target {
            label: label.to_owned(),
            ours_mb_per_s: o.1,
            reference_mb_per_s: r.1,
            speedup,
            ours_ratio: o.2,
            reference_ratio: r.2,
            wanted,
            met: pass,
        });
    };
    for kind in ["panini command", "panini in-process"] {
        check(
            &format!("CPU LZ4 ({kind}) vs lz4 -1"),
            ("panini lz4 cpu", kind),
            "lz4 -1",
            1.5,
            Some(0.02),
        );
        check(
            &format!("zstd -1 ({kind}) vs zstd -1 -T0"),
            ("panini zstd -1", kind),
            "zstd -1 -T0",
            0.95,
            None,
        );
        check(
            &format!("zstd -3 ({kind}) vs zstd -3 -T0"),
            ("panini zstd -3", kind),
            "zstd -3 -T0",
            0.95,
            None,
        );
    }
    (targets, md)
}

pub fn crate_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("xtask sits in the workspace")
                .join("target")
        })
}

/// Writes the corpus files (deterministic for a size) and returns their paths and sizes.
pub fn write_corpus(dir: &Path, total: usize) -> anyhow::Result<Vec<(PathBuf, usize)>> {
    let mut files = Vec::new();
    for (i, (name, pct)) in FILES.iter().enumerate() {
        let len = total * pct / 100;
        let path = dir.join(name);
        if std::fs::metadata(&path)
            .map(|m| m.len() as usize == len)
            .unwrap_or(false)
        {
            files.push((path, len));
            continue;
        }
        let data = match *name {
            "logs.txt" => logs(len, i as u64),
            "source.txt" => tree_bytes(&source_roots(), len, |p| {
                p.extension()
                    .is_some_and(|e| ["rs", "c", "h", "toml", "md"].iter().any(|x| e == *x))
            }),
            "binaries.bin" => tree_bytes(
                &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib")],
                len,
                |_| true,
            ),
            "random.bin" => random(len, i as u64),
            "zeros.bin" => vec![0u8; len],
            "png-like.png" => png_like(len),
            _ => mp4_like(len),
        };
        std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
        files.push((path, len));
    }
    Ok(files)
}

/// A mix of every corpus kind, for `gpu-check`.
pub fn mixed_data(len: usize) -> Vec<u8> {
    let piece = (16 << 20).min(len.max(1));
    let mut base = logs(piece / 4, 1);
    base.extend(tree_bytes(
        &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib")],
        piece / 4,
        |_| true,
    ));
    base.extend(png_like(piece / 4));
    base.extend(vec![0u8; piece / 8]);
    base.extend(random(piece - base.len(), 2));
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = base.len().min(len - out.len());
        out.extend_from_slice(&base[..n]);
    }
    out
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn logs(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
    let msgs = [
        "accepted chunk for compression",
        "uploaded object to gs://panini-compressed-chunks/chunks",
        "retrying request after 503 Service Unavailable",
        "webhook dispatched batch",
        "worker heartbeat ok",
        "chunk status pending -> queued",
    ];
    let mut out = Vec::with_capacity(len + 256);
    let mut t = 1_700_000_000_000u64;
    while out.len() < len {
        let r = rng.next_u64();
        t += r % 5000;
        writeln!(
            out,
            "{}.{:03} {} [worker-{}] {} chunk_id={} size={} sha256={:016x}{:08x} latency_ms={}",
            t / 1000,
            t % 1000,
            levels[(r % 6) as usize],
            (r >> 8) % 16,
            msgs[((r >> 16) % 6) as usize],
            (r >> 20) % 10_000,
            (r >> 32) % 2_000_000,
            rng.next_u64(),
            r as u32,
            (r >> 40) % 900
        )
        .expect("writing to a Vec");
    }
    out.truncate(len);
    out
}

fn source_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    {
        roots.push(home.join("registry").join("src"));
    }
    roots.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace")
            .join("crates"),
    );
    roots.push(PathBuf::from("/usr/include"));
    roots
}

/// Concatenates regular files under `roots` (sorted walk, so the corpus is stable) until
/// `len` bytes; repeats them if the trees hold less.
fn tree_bytes(roots: &[PathBuf], len: usize, keep: impl Fn(&Path) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut stack: Vec<PathBuf> = roots.iter().rev().cloned().collect();
    while out.len() < len {
        let Some(p) = stack.pop() else { break };
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else if meta.is_file()
            && keep(&p)
            && let Ok(bytes) = std::fs::read(&p)
        {
            let n = bytes.len().min(len - out.len());
            out.extend_from_slice(&bytes[..n]);
        }
    }
    if out.is_empty() {
        return logs(len, 9);
    }
    while out.len() < len {
        let n = out.len().min(len - out.len());
        out.extend_from_within(..n);
    }
    out
}

/// PNG structure (signature, IHDR, IDAT chunks, IEND) around image rows compressed the way
/// PNG does (an entropy coder; zstd stands in for deflate): high-entropy payload, as in
/// real PNGs.
fn png_like(len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&png_crc(kind, data).to_be_bytes());
    };
    chunk(&mut out, b"IHDR", &[0, 0, 4, 0, 0, 0, 4, 0, 8, 2, 0, 0, 0]);
    while out.len() + 12 < len {
        // A photo-like row band: smooth gradients plus sensor noise.
        let mut rows = vec![0u8; 256 << 10];
        for (i, b) in rows.iter_mut().enumerate() {
            *b = ((i / 3 % 1024) as u8).wrapping_add((rng.next_u32() % 24) as u8);
        }
        let idat = zstd::bulk::compress(&rows, 3).expect("zstd on memory");
        let n = idat.len().min(len.saturating_sub(out.len() + 24));
        chunk(&mut out, b"IDAT", &idat[..n]);
    }
    chunk(&mut out, b"IEND", &[]);
    out.resize(len, 0);
    out
}

/// ISO BMFF structure (ftyp, moov with sample tables, mdat of length-prefixed NAL units with
/// high-entropy payloads), as in an H.264 MP4.
fn mp4_like(len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(13);
    let boxed = |kind: &[u8], body: &[u8]| {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    };
    let mut out = boxed(b"ftyp", b"isom\0\0\x02\0isomiso2avc1mp41");
    let samples = len / 40_000 + 1;
    let mut stsz = Vec::new();
    for _ in 0..samples {
        stsz.extend_from_slice(&(20_000 + rng.next_u32() % 40_000).to_be_bytes());
    }
    out.extend(boxed(b"moov", &boxed(b"stsz", &stsz)));
    let mdat_body_len = len.saturating_sub(out.len() + 8);
    let mut mdat = Vec::with_capacity(mdat_body_len);
    while mdat.len() < mdat_body_len {
        let nal = (20_000 + rng.next_u32() % 40_000) as usize;
        mdat.extend_from_slice(&(nal as u32).to_be_bytes());
        mdat.push(if rng.next_u32() % 30 == 0 { 0x65 } else { 0x41 });
        let start = mdat.len();
        mdat.resize(start + nal - 1, 0);
        rng.fill_bytes(&mut mdat[start..]);
    }
    mdat.truncate(mdat_body_len);
    out.extend(boxed(b"mdat", &mdat));
    out.resize(len, 0);
    out
}

/// PNG's CRC-32 (ISO 3309) over chunk type and data, bit by bit: the corpus is written once.
fn png_crc(kind: &[u8], data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in kind.iter().chain(data) {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}
