//! `panini chunk FILE|DIR...`: cut files, and the files in folders, into the chunk tree
//! under `pending_compression/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chunk_model::Strategy;
use chunker::{
    ChunkOptions, ChunkReport, ChunkerConfig, DEFAULT_MAX_CHUNK_SIZE, InputError, chunk_file,
    chunk_files, expand_inputs,
};

use super::common::{self, human_bytes, outln};

/// Inputs at least this large get a progress bar (smaller ones take well under a second).
const PROGRESS_MIN_BYTES: u64 = 16 << 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files and folders to chunk. Folders are walked: .gitignore rules, hidden files and
    /// --exclude globs leave files out; each file is named by its stem, or by its path
    /// where stems collide (`a/x.txt` → `a__x.txt`; docs/FORMATS.md).
    #[arg(required = true, value_name = "PATH")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    inputs: common::InputArgs,
    /// Root of the chunk tree (`--output` is the older name).
    #[arg(long, visible_alias = "output", value_name = "DIR", default_value = chunk_model::layout::DEFAULT_ROOT)]
    base: PathBuf,
    /// semantic (the format's structure), size (fixed size) or adaptive (structure, then content-defined).
    #[arg(long, default_value = "semantic", value_parser = super::common::choice::<Strategy>(super::common::STRATEGIES))]
    strategy: Strategy,
    /// Maximum chunk size (e.g. 4M, 1GiB; K, M, G, T are powers of 1024).
    #[arg(long, default_value_t = DEFAULT_MAX_CHUNK_SIZE, value_parser = common::parse_size)]
    chunk_size: u64,
    /// Smallest chunk the semantic strategy emits, except a file's header, its tail, or a
    /// short group of pictures before a keyframe (e.g. 256K; at most a quarter of the
    /// maximum). `size` ignores it.
    #[arg(long, default_value_t = chunker::DEFAULT_MIN_CHUNK_SIZE, value_parser = common::parse_size)]
    min_chunk_size: u64,
    /// Directory name under the output root (default: the file stem); one file only, not a folder.
    #[arg(long)]
    name: Option<String>,
    /// Replace an existing chunk tree of the same name.
    #[arg(long)]
    force: bool,
    /// Then upload every pending chunk's bytes to this bucket (`staging/<sha256>`) and
    /// remove their data.bin, so that git carries metadata only (gs://bucket[/prefix],
    /// file:///path or a directory; workers must store into the same bucket). See
    /// `panini stage`.
    #[arg(long, value_name = "URL")]
    stage: Option<String>,
    /// How --stage reaches Cloud Storage.
    #[command(flatten)]
    gcs: super::store_cli::GcsArgs,
    /// Print the reports as one JSON document on stdout (`{"chunked": […], "failed": […]}`,
    /// and `"staged": {…}` with --stage).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.name.is_some() {
        if args.files.len() > 1 {
            bail!(
                "--name applies to one file; {} were given",
                args.files.len()
            );
        }
        return run_named(&args);
    }
    let mut walk = args.inputs.options();
    // `panini chunk .` must not chunk the chunk tree it writes into.
    walk.skip_dirs.push(args.base.clone());
    let expanded = expand_inputs(&args.files, &walk)?;
    for skipped in &expanded.skipped {
        eprintln!("warning: {skipped}");
    }
    // A folder the user named that gave nothing is worth a word, even when other inputs
    // did give files: it may be a typo or an over-eager ignore rule.
    for input in args.files.iter().filter(|p| p.is_dir()) {
        if !expanded.files.iter().any(|f| f.path.starts_with(input)) {
            eprintln!(
                "warning: {}: no files to chunk in this folder (every file was ignored, \
                 excluded or skipped; see --hidden, --no-ignore)",
                input.display()
            );
        }
    }
    let mut failures: Vec<(Vec<PathBuf>, String)> = Vec::new();
    let input_errors = expanded.errors.len();
    for error in expanded.errors {
        let paths = input_error_paths(&error);
        let error = anyhow::Error::from(error);
        eprintln!("{}", common::error_report(&error));
        failures.push((paths, error.to_string()));
    }
    if expanded.files.is_empty() && failures.is_empty() {
        bail!(
            "no files to chunk in {} (every file was ignored, excluded or skipped; see \
             --hidden, --no-ignore)",
            args.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let total: u64 = expanded.files.iter().map(|f| f.size).sum();
    let bar = (!args.json && total >= PROGRESS_MIN_BYTES)
        .then(|| common::bytes_bar(total, common::plural(expanded.files.len() as u64, "file")));
    let mut options = options(&args);
    options.progress = bar.clone().map(|bar| {
        Arc::new(move |p: chunker::Progress| bar.set_position(p.bytes_done)) as chunker::ProgressFn
    });
    let results = chunk_files(&expanded.files, &options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut reports = Vec::new();
    for (input, result) in expanded.files.iter().zip(results) {
        match result {
            Ok(report) => {
                if !args.json {
                    print_report(&report);
                }
                reports.push(report);
            }
            Err(err) => {
                let err = anyhow::Error::from(err);
                // The error names the path already.
                eprintln!("{}", common::error_report(&err));
                failures.push((vec![input.path.clone()], err.to_string()));
            }
        }
    }
    finish(
        &args,
        reports,
        &failures,
        expanded.files.len() + input_errors,
    )
}

/// The paths an input error is about, for the JSON report.
fn input_error_paths(error: &InputError) -> Vec<PathBuf> {
    match error {
        InputError::Unreadable { path, .. }
        | InputError::NotARegularFile { path }
        | InputError::Walk { path, .. }
        | InputError::InvalidName { path, .. } => vec![path.clone()],
        InputError::NameClash { paths, .. } => paths.clone(),
        // Fails the whole expansion before this is reached; and names no path.
        InputError::Exclude { .. } => Vec::new(),
    }
}

/// Prints the summary or the JSON document, and fails when anything failed.
fn finish(
    args: &Args,
    reports: Vec<ChunkReport>,
    failures: &[(Vec<PathBuf>, String)],
    inputs: usize,
) -> anyhow::Result<()> {
    // Staging covers every pending chunk of the tree, so chunks of an earlier run that
    // was interrupted before staging go up too.
    let staged = match &args.stage {
        Some(url) => Some(stage(args, url)?),
        None => None,
    };
    if args.json {
        let failed: Vec<_> = failures
            .iter()
            .flat_map(|(paths, error)| {
                paths
                    .iter()
                    .map(move |path| serde_json::json!({ "path": path, "error": error }))
            })
            .collect();
        let mut out = serde_json::json!({ "chunked": reports, "failed": failed });
        if let Some(staged) = &staged {
            out["staged"] = serde_json::to_value(staged)?;
        }
        common::print_json(&out)?;
    } else {
        print_summary(&reports, failures.len());
    }
    if let Some(staged) = &staged {
        if !args.json {
            outln!("{}", super::stage::stage_summary(staged));
        }
        super::stage::stage_outcome(staged)?;
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} files could not be chunked",
            failures.len(),
            inputs
        );
    }
    Ok(())
}

/// `--stage URL`: the tree's pending chunks into the bucket.
fn stage(args: &Args, url: &str) -> anyhow::Result<crate::stage::StageReport> {
    let config = uploader::StoreConfig {
        gcs: args.gcs.config(uploader::RetryPolicy::default()),
        ..uploader::StoreConfig::default()
    };
    super::store_cli::runtime()?.block_on(async {
        let store = uploader::open(url, &config)
            .await
            .with_context(|| format!("opening the bucket {url}"))?;
        let options = crate::stage::StageOptions::default();
        anyhow::Ok(crate::stage::stage(&args.base, store, &options).await?)
    })
}

fn options(args: &Args) -> ChunkOptions {
    ChunkOptions {
        output: args.base.clone(),
        name: args.name.clone(),
        config: ChunkerConfig {
            strategy: args.strategy,
            max_chunk_size: args.chunk_size,
            min_chunk_size: args.min_chunk_size,
        },
        force: args.force,
        sync: true,
        progress: None,
        stream: None,
    }
}

/// `--name`: one file, under the name given.
fn run_named(args: &Args) -> anyhow::Result<()> {
    let file = &args.files[0];
    match chunk_one(file, args) {
        Ok(report) => {
            if !args.json {
                print_report(&report);
            }
            finish(args, vec![report], &[], 1)
        }
        Err(err) => {
            eprintln!("{}", common::error_report(&err));
            finish(
                args,
                Vec::new(),
                &[(vec![file.clone()], err.to_string())],
                1,
            )
        }
    }
}

fn chunk_one(file: &Path, args: &Args) -> anyhow::Result<ChunkReport> {
    // A directory, /dev/null or a FIFO: say so, instead of the OS error a read of it
    // gives ("Is a directory" for /dev/null).
    let meta = std::fs::metadata(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if meta.is_dir() {
        bail!("{}: --name names one file, not a folder", file.display());
    }
    if !meta.is_file() {
        bail!("{}: not a regular file", file.display());
    }
    let len = meta.len();
    let bar = (!args.json && len >= PROGRESS_MIN_BYTES)
        .then(|| common::bytes_bar(len, file.display().to_string()));
    let mut options = options(args);
    options.progress = bar.clone().map(|bar| {
        Arc::new(move |p: chunker::Progress| bar.set_position(p.bytes_done)) as chunker::ProgressFn
    });
    let result = chunk_file(file, &options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // The error names the path already.
    Ok(result?)
}

fn print_report(r: &ChunkReport) {
    outln!(
        "{} -> {}: {}, {}, {} ({}), {}{}{}",
        r.source.display(),
        r.dir.display(),
        common::plural(r.total_chunks, "chunk"),
        human_bytes(r.file_size),
        r.format,
        r.grammar_id,
        r.strategy,
        if r.keyframe_chunks > 0 {
            format!(", {} keyframe chunks", r.keyframe_chunks)
        } else {
            String::new()
        },
        if r.replaced {
            ", replaced the previous tree"
        } else {
            ""
        },
    );
    if let Some(fallback) = &r.fallback {
        outln!("  cut by size {fallback}");
    }
    let patterns: Vec<String> = r
        .patterns
        .iter()
        .map(|(p, s)| format!("{p} x{} ({})", s.chunks, human_bytes(s.bytes)))
        .collect();
    outln!("  {}", patterns.join(", "));
}

fn print_summary(reports: &[ChunkReport], failed: usize) {
    let chunks: u64 = reports.iter().map(|r| r.total_chunks).sum();
    let bytes: u64 = reports.iter().map(|r| r.file_size).sum();
    let mut formats = std::collections::BTreeMap::<&str, usize>::new();
    for r in reports {
        *formats.entry(r.format.name()).or_default() += 1;
    }
    let formats: Vec<String> = formats.iter().map(|(f, n)| format!("{f} x{n}")).collect();
    outln!(
        "Chunked {}: {}, {}; formats: {}{}",
        common::plural(reports.len() as u64, "file"),
        common::plural(chunks, "chunk"),
        human_bytes(bytes),
        if formats.is_empty() {
            "none".to_owned()
        } else {
            formats.join(", ")
        },
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        },
    );
}
