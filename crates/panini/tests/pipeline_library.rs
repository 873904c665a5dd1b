//! The pipeline as another Rust program runs it: `panini::Pipeline` on real files, two
//! in-process workers on 127.0.0.1, a local bucket; then the bucket alone, read by an
//! outside tool, holds what the report says.

use std::process::Command;
use std::sync::{Arc, Mutex};

use panini::{Pipeline, PipelineConfig, PipelineEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_pipeline_rebuilds_every_file_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    let files = samples::sample_set(&inputs, 3 << 20).unwrap();
    let mut config = PipelineConfig::new(dir.path().join("work"));
    config.files = files.clone();
    config.chunker.max_chunk_size = 256 << 10;
    config.engine = panini::gpu_compress::EngineChoice::Cpu;

    let (report, events) = run_collecting_events(config.clone()).await;

    assert_eq!(report.files.len(), files.len(), "{report:#?}");
    assert!(report.files.iter().all(|f| f.verified), "{report:#?}");
    assert!(report.chunks_stored_now > 0);
    assert!(
        events.contains(&PipelineEvent::StageStarted {
            stage: "chunk",
            total: files
                .iter()
                .map(|f| std::fs::metadata(f).unwrap().len())
                .sum(),
        })
    );
    assert!(events.contains(&PipelineEvent::StageFinished { stage: "compress" }));

    // The report serializes (the CLI's --json) and names every stage.
    let json = serde_json::to_value(&report).unwrap();
    let stages: Vec<&str> = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "chunk",
            "detect",
            "dispatch",
            "compress+upload",
            "sync",
            "recipes",
            "reconstruct+verify"
        ]
    );

    // Every recipe in the bucket names objects that exist, and the bucket holds one
    // recipe per file.
    let bucket = dir.path().join("work/bucket");
    let recipes: Vec<_> = walk(&bucket.join("recipes"));
    assert_eq!(recipes.len(), files.len(), "{recipes:?}");

    // A second run stores nothing new.
    let again = Pipeline::new(config).run(|_| {}).await.unwrap();
    assert_eq!(again.chunks_stored_now, 0, "{again:#?}");
    assert!(again.files.iter().all(|f| f.verified));

    // `cargo test` builds the examples beside the binary: run the example program on one
    // file as a user would.
    let example_bin = std::path::Path::new(env!("CARGO_BIN_EXE_panini"))
        .with_file_name("examples")
        .join("pipeline");
    assert!(
        example_bin.is_file(),
        "{} was not built",
        example_bin.display()
    );
    let example = Command::new(&example_bin).arg(&files[0]).output().unwrap();
    assert!(
        example.status.success(),
        "{}",
        String::from_utf8_lossy(&example.stderr)
    );
    assert!(String::from_utf8_lossy(&example.stdout).contains("rebuilt bit for bit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_after_it_was_chunked_is_not_verified() {
    // Three files last changed an hour ago, so their stamps are not racy and an
    // unchanged source is not hashed again. While the workers run, one file gets other
    // bytes of the same length and has its modification time set back: only its
    // status-change time tells, and the pipeline must not call it verified.
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let files: Vec<std::path::PathBuf> = (0..3u8)
        .map(|i| {
            let path = inputs.join(format!("file{i}.bin"));
            let bytes: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8 ^ i).collect();
            std::fs::write(&path, bytes).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(an_hour_ago).unwrap();
            path
        })
        .collect();
    let mut config = PipelineConfig::new(dir.path().join("work"));
    config.files = files.clone();
    config.engine = panini::gpu_compress::EngineChoice::Cpu;

    let victim = files[1].clone();
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        Pipeline::new(config).run(move |event| {
            if event == (PipelineEvent::StageFinished { stage: "chunk" }) {
                let mut bytes = std::fs::read(&victim).unwrap();
                bytes[1000] ^= 0xff;
                std::fs::write(&victim, bytes).unwrap();
                let file = std::fs::File::options().write(true).open(&victim).unwrap();
                file.set_modified(an_hour_ago).unwrap();
            }
        }),
    )
    .await
    .expect("the pipeline ends in time")
    .expect("the pipeline runs");

    let row = |path: &std::path::Path| {
        report
            .files
            .iter()
            .find(|f| f.source.as_deref() == Some(path))
            .unwrap_or_else(|| panic!("{} not reported: {report:#?}", path.display()))
    };
    assert!(row(&files[0]).verified, "{report:#?}");
    assert!(row(&files[2]).verified, "{report:#?}");
    let changed = row(&files[1]);
    assert!(!changed.verified, "{report:#?}");
    let error = changed.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("SHA-256") && error.contains("file1.bin"),
        "{error}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_go_out_a_window_at_a_time_and_every_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let files = samples::sample_set(&dir.path().join("inputs"), 2 << 20).unwrap();
    let mut config = PipelineConfig::new(dir.path().join("work"));
    config.files = files.clone();
    config.chunker.max_chunk_size = 64 << 10;
    config.chunker.min_chunk_size = 16 << 10;
    config.engine = panini::gpu_compress::EngineChoice::Cpu;
    // Far fewer than the chunks: the run waits for the workers between windows.
    config.dispatch_window = 3;

    let progress = Arc::new(Mutex::new(Vec::new()));
    let seen = progress.clone();
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        Pipeline::new(config).run(move |e| {
            if let PipelineEvent::Progress {
                stage: "compress",
                done,
            } = e
            {
                seen.lock().unwrap().push(done);
            }
        }),
    )
    .await
    .expect("the pipeline ends in time")
    .expect("the pipeline runs");

    let chunks: u64 = report.files.iter().map(|f| f.chunks).sum();
    assert!(chunks > 10, "{chunks} chunks: too few to need windows");
    assert!(report.files.iter().all(|f| f.verified), "{report:#?}");
    assert_eq!(
        report.chunks_stored_now + report.chunks_already_stored,
        chunks,
        "{report:#?}"
    );
    let dispatch = report
        .stages
        .iter()
        .find(|s| s.stage == "dispatch")
        .unwrap();
    assert!(
        dispatch
            .note
            .starts_with(&format!("{chunks} chunks over HTTP")),
        "{}",
        dispatch.note
    );
    // Progress was reported between windows, never backwards, up to every chunk.
    let progress = progress.lock().unwrap();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last().copied(), Some(chunks), "{progress:?}");
    assert!(progress.len() > 3, "{progress:?}");
}

/// Runs the pipeline (within five minutes) and keeps every event it reported.
async fn run_collecting_events(
    config: PipelineConfig,
) -> (panini::PipelineReport, Vec<PipelineEvent>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        Pipeline::new(config).run(move |e| seen.lock().unwrap().push(e)),
    )
    .await
    .expect("the pipeline ends in time")
    .expect("the pipeline runs");
    let events = std::mem::take(&mut *events.lock().unwrap());
    (report, events)
}

/// The totals the compression bar was given, in order.
fn compression_totals(events: &[PipelineEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            PipelineEvent::TotalGrew {
                stage: "compress",
                total,
            } => Some(*total),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_goes_out_in_groups_and_files_are_rebuilt_while_the_workers_run() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("notes");
    // More files than one chunking group holds, so that the first groups are dispatched
    // (and their files rebuilt) while the next ones are still chunked.
    let count = panini::pipeline::CHUNK_GROUP_FILES * 2 + 17;
    for i in 0..count {
        let sub = folder.join(format!("day{:02}", i % 9));
        std::fs::create_dir_all(&sub).unwrap();
        let text = format!("note {i}\n").repeat(1 + i % 50);
        std::fs::write(sub.join(format!("n{i:04}.txt")), text).unwrap();
    }
    let mut config = PipelineConfig::new(dir.path().join("work"));
    config.files = vec![folder];
    config.engine = panini::gpu_compress::EngineChoice::Cpu;
    // One store request at a time, shared by the workers and the rebuilds: the rebuilds
    // that run beside the workers must never sit on the only request slot while the
    // lookup of further recipes (or a worker) waits for it.
    config.store.limits.max_in_flight = 1;

    let (report, events) = run_collecting_events(config).await;

    assert_eq!(report.files.len(), count);
    assert!(report.files.iter().all(|f| f.verified), "{report:#?}");
    let stage = |name: &str| {
        report
            .stages
            .iter()
            .find(|s| s.stage == name)
            .unwrap_or_else(|| panic!("no {name} stage: {report:#?}"))
    };
    let (chunk, compress, rebuild) = (
        stage("chunk"),
        stage("compress+upload"),
        stage("reconstruct+verify"),
    );
    assert!(
        chunk.note.starts_with(&format!("{count} chunks")),
        "{chunk:?}"
    );
    // Nothing is dispatched before its group is chunked, nor rebuilt before it is
    // dispatched; every stage's busy time is within its span.
    assert!(compress.started_s >= chunk.started_s, "{report:#?}");
    assert!(rebuild.started_s >= compress.started_s, "{report:#?}");
    for s in &report.stages {
        assert!(s.busy_s <= s.seconds && s.started_s >= 0.0, "{s:?}");
        assert!(s.started_s + s.seconds <= report.seconds + 1e-3, "{s:?}");
    }
    assert!(
        rebuild
            .note
            .ends_with("files rebuilt while the workers ran")
            && rebuild.note.contains(&format!(" of {count} ")),
        "{}",
        rebuild.note
    );

    // The compression bar's total grew group by group, up to every chunk.
    let totals = compression_totals(&events);
    assert!(totals.len() >= 3, "{totals:?}");
    assert!(totals.windows(2).all(|w| w[0] < w[1]), "{totals:?}");
    assert_eq!(totals.last().copied(), Some(count as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_file_counts_toward_the_compression_bar_chunk_by_chunk_as_it_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.bin");
    // 40 chunks of at most 64 KiB, cut by size so that the count is known.
    std::fs::write(&input, samples::random_bytes(40 * 65_536 - 1_000, 23)).unwrap();
    let mut config = PipelineConfig::new(dir.path().join("work"));
    config.files = vec![input];
    config.engine = panini::gpu_compress::EngineChoice::Cpu;
    config.chunker.strategy = panini::chunker::Strategy::Size;
    config.chunker.max_chunk_size = 65_536;

    let (report, events) = run_collecting_events(config).await;
    assert!(report.files[0].verified, "{report:#?}");

    // Its chunks go out while it is cut, so the bar counts them as they come, not all
    // at once when the file is done (it would stand at 0 of 0 until then).
    let totals = compression_totals(&events);
    assert_eq!(totals, (1..=40).collect::<Vec<u64>>());
}
