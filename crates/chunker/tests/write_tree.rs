//! `chunk_file`: the chunk tree on disk, read back with chunk-model's types; bad input;
//! atomic installation.

mod common;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chunk_model::json_file;
use chunk_model::layout::{self, Layout};
use chunk_model::{ChunkMetadata, Manifest, Sha256Digest, Status, Strategy};
use chunker::{ChunkOptions, ChunkerError, chunk_file};
use common::MIB;
use samples::{Mp4Spec, mp4, random_bytes};

fn options(output: &Path) -> ChunkOptions {
    ChunkOptions {
        sync: false,
        ..ChunkOptions::new(output)
    }
}

fn visible_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn chunk_tree_reads_back_with_chunk_model_types_and_rebuilds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("holiday.mp4");
    let sample = mp4(&Mp4Spec::with_approx_size(5 * MIB as usize, 7));
    fs::write(&input, &sample.bytes).unwrap();
    let output = dir.path().join("pending_compression");

    let report = chunk_file(&input, &ChunkOptions::new(&output)).unwrap();
    assert_eq!(report.name, "holiday");
    assert_eq!(report.grammar_id, "mp4_v1");
    assert_eq!(report.file_hash, Sha256Digest::of(&sample.bytes));
    assert_eq!(report.keyframe_chunks as usize, sample.keyframes.len());
    assert!(!report.replaced);

    let layout = Layout::new(&output);
    let manifest: Manifest = json_file::read(&layout.manifest_path("holiday").unwrap()).unwrap();
    assert_eq!(manifest.base_name, "holiday");
    assert_eq!(manifest.total_chunks, report.total_chunks);
    assert_eq!(manifest.chunks.len() as u64, manifest.total_chunks);
    assert_eq!(manifest.grammar_id.as_deref(), Some("mp4_v1"));
    assert_eq!(manifest.file_size, Some(sample.bytes.len() as u64));
    assert_eq!(manifest.file_hash, Some(Sha256Digest::of(&sample.bytes)));
    assert_eq!(manifest.format.as_deref(), Some("mp4"));
    assert_eq!(manifest.strategy, Some(Strategy::Semantic));
    assert_eq!(manifest.max_chunk_size, Some(MIB));

    let mut rebuilt = Vec::new();
    for entry in &manifest.chunks {
        let chunk_dir = layout
            .chunk_dir("holiday", entry.chunk_id, manifest.total_chunks)
            .unwrap();
        let data = fs::read(chunk_dir.join(layout::DATA_FILE)).unwrap();
        let meta: ChunkMetadata = json_file::read(&chunk_dir.join(layout::METADATA_FILE)).unwrap();
        assert_eq!(meta.chunk_id, entry.chunk_id);
        assert_eq!(meta.offset, rebuilt.len() as u64);
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.original_hash, Sha256Digest::of(&data));
        assert_eq!(meta.original_hash, entry.hash);
        assert_eq!(meta.pattern_type, entry.pattern);
        assert_eq!(meta.is_keyframe, entry.is_keyframe);
        assert_eq!(meta.status, Status::Pending);
        assert_eq!(meta.grammar_id.as_deref(), Some("mp4_v1"));
        assert!(meta.size <= MIB);
        rebuilt.extend_from_slice(&data);
    }
    assert_eq!(rebuilt, sample.bytes);

    // The keys the Python chunker wrote are there, with its types.
    let first = layout
        .chunk_dir("holiday", 0, manifest.total_chunks)
        .unwrap();
    let raw: serde_json::Value = json_file::read(&first.join(layout::METADATA_FILE)).unwrap();
    assert_eq!(first.file_name().unwrap(), "chunk_0000");
    assert_eq!(raw["dependencies"], serde_json::json!([]));
    assert_eq!(raw["status"], "pending");
    // The header chunk, and the structures it packs (a field of Panini's own).
    assert_eq!(raw["pattern_type"], "ISOBMFF_HEADER");
    assert_eq!(raw["pattern"], "ISOBMFF_HEADER");
    assert_eq!(raw["structures"][0]["pattern"], "ISOBMFF_FTYP");
    assert_eq!(raw["structures"][0]["count"], 1);
    let packed: u64 = raw["structures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(packed, raw["size"].as_u64().unwrap());
    assert_eq!(
        manifest.extra["min_chunk_size"],
        chunker::DEFAULT_MIN_CHUNK_SIZE
    );
    assert!(raw["compression_status"].is_null() && raw["worker_id"].is_null());
    // Nothing else is left in the output root.
    assert_eq!(visible_entries(&output), ["holiday"]);
}

#[test]
fn chunks_finished_out_of_order_still_hash_the_file_in_order() {
    // 2,000 small chunks over eight workers: workers finish chunks out of order all the
    // time, and the file hash must still be that of the bytes in file order.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("many.bin");
    let bytes = random_bytes(2_000 * 4096 - 123, 11);
    fs::write(&input, &bytes).unwrap();
    let output = dir.path().join("out");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(8)
        .build()
        .unwrap();
    let report = pool
        .install(|| {
            chunk_file(
                &input,
                &ChunkOptions {
                    config: chunker::ChunkerConfig {
                        strategy: Strategy::Size,
                        max_chunk_size: 4096,
                        ..Default::default()
                    },
                    ..options(&output)
                },
            )
        })
        .unwrap();
    assert_eq!(report.total_chunks, 2_000);
    assert_eq!(report.file_hash, Sha256Digest::of(&bytes));
    let manifest: Manifest =
        json_file::read(&Layout::new(&output).manifest_path("many").unwrap()).unwrap();
    for (id, chunk) in manifest.chunks.iter().enumerate() {
        assert_eq!(chunk.chunk_id, id as u64);
        let range = chunk.offset as usize..(chunk.offset + chunk.size) as usize;
        assert_eq!(chunk.hash, Sha256Digest::of(&bytes[range]), "chunk {id}");
    }
}

#[test]
fn bad_inputs_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let missing = dir.path().join("missing.bin");
    let err = chunk_file(&missing, &options(&output)).unwrap_err();
    assert!(matches!(err, ChunkerError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("missing.bin"), "{err}");

    let err = chunk_file(dir.path(), &options(&output)).unwrap_err();
    assert!(matches!(err, ChunkerError::NotAFile { .. }), "{err}");
    assert!(
        err.to_string().contains(&*dir.path().to_string_lossy()),
        "{err}"
    );

    let empty = dir.path().join("empty.txt");
    fs::write(&empty, b"").unwrap();
    let err = chunk_file(&empty, &options(&output)).unwrap_err();
    assert!(
        matches!(err, ChunkerError::Empty { .. }) && err.to_string().contains("empty.txt"),
        "{err}"
    );

    let hidden = dir.path().join("data.bin");
    fs::write(&hidden, b"x").unwrap();
    let err = chunk_file(
        &hidden,
        &ChunkOptions {
            name: Some(".secret".into()),
            ..options(&output)
        },
    )
    .unwrap_err();
    assert!(matches!(err, ChunkerError::InvalidName { .. }), "{err}");
}

#[test]
fn name_collision_is_an_error_unless_forced_and_force_replaces_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let input = dir.path().join("blob.bin");
    fs::write(&input, random_bytes(3 * MIB as usize, 1)).unwrap();
    chunk_file(&input, &options(&output)).unwrap();
    let manifest_path = output.join("blob").join(layout::MANIFEST_FILE);
    let first = fs::read(&manifest_path).unwrap();

    // Smaller than the minimum: one chunk.
    fs::write(&input, random_bytes(200_000, 2)).unwrap();
    let err = chunk_file(&input, &options(&output)).unwrap_err();
    assert!(matches!(err, ChunkerError::NameCollision { .. }), "{err}");
    assert!(err.to_string().contains("blob"), "{err}");
    assert_eq!(
        fs::read(&manifest_path).unwrap(),
        first,
        "existing tree untouched"
    );

    let report = chunk_file(
        &input,
        &ChunkOptions {
            force: true,
            ..options(&output)
        },
    )
    .unwrap();
    assert!(report.replaced);
    let manifest: Manifest = json_file::read(&manifest_path).unwrap();
    assert_eq!(manifest.file_size, Some(200_000));
    assert_eq!(manifest.total_chunks, 1);
    assert!(
        !output.join("blob").join("chunk_0001").exists(),
        "old chunks gone"
    );
    assert_eq!(
        visible_entries(&output),
        ["blob"],
        "no parked or temporary directory left"
    );
}

#[test]
fn nothing_is_visible_before_the_rename() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let input = dir.path().join("big.bin");
    fs::write(&input, random_bytes(70 * MIB as usize, 3)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (seen_in, output_in) = (seen.clone(), output.clone());
    let progress = Arc::new(move |p: chunker::Progress| {
        // Mid-write, only hidden in-progress directories exist.
        let names = visible_entries(&output_in);
        seen_in.lock().unwrap().push((p.bytes_done, names));
    });
    chunk_file(
        &input,
        &ChunkOptions {
            progress: Some(progress),
            ..options(&output)
        },
    )
    .unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 3, "{} progress calls", seen.len());
    for (_, names) in seen.iter() {
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with(".big.tmp-"), "{names:?}");
    }
    assert_eq!(seen.last().unwrap().0, 70 * MIB);
    assert_eq!(visible_entries(&output), ["big"]);
}

#[test]
fn a_panicking_progress_callback_stops_every_worker_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let input = dir.path().join("panics.bin");
    fs::write(&input, random_bytes(40 * MIB as usize, 5)).unwrap();
    // Only the third call panics: the other worker goes on, and must be stopped.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let progress = Arc::new(move |_: chunker::Progress| {
        let call = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        assert_ne!(call, 3, "the callback fails on its third call");
    });
    let options = ChunkOptions {
        progress: Some(progress),
        ..options(&output)
    };
    // On a thread with a deadline: a worker left waiting would hang the test otherwise.
    // The thread sends only if `chunk_file` returns; its panic drops the sender.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let chunking = std::thread::spawn(move || {
        let _ = chunk_file(&input, &options);
        done_tx.send(()).unwrap();
    });
    match done_rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("chunk_file hung"),
        Ok(()) => panic!("the callback's panic did not reach the caller"),
    }
    assert!(chunking.join().is_err());
    assert!(visible_entries(&output).is_empty());
    assert_eq!(
        fs::read_dir(&output).unwrap().count(),
        0,
        "temporary directory removed"
    );
}

/// A progress callback that cuts `input` to 1 MiB, so that the chunking fails on a read.
fn shrink_to_one_mib_on_progress(input: &Path) -> chunker::ProgressFn {
    let path = input.to_owned();
    Arc::new(move |_: chunker::Progress| {
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(MIB)
            .unwrap();
    })
}

#[test]
fn a_failure_mid_write_leaves_no_trace_and_keeps_the_old_tree() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let input = dir.path().join("shrinking.bin");
    fs::write(&input, b"the previous version").unwrap();
    chunk_file(&input, &options(&output)).unwrap();
    let old_manifest = fs::read(output.join("shrinking").join(layout::MANIFEST_FILE)).unwrap();

    // 130 chunks: at most `2 × threads + 1` chunks are read ahead of the writes, so the
    // end cannot have been written before the first progress call truncates the file.
    fs::write(&input, random_bytes(130 * MIB as usize, 4)).unwrap();
    let progress = shrink_to_one_mib_on_progress(&input);
    let err = chunk_file(
        &input,
        &ChunkOptions {
            force: true,
            progress: Some(progress),
            ..options(&output)
        },
    )
    .unwrap_err();
    // Found by a writer, or by the cut still under way: either names the file.
    assert!(
        matches!(err, ChunkerError::Read { .. } | ChunkerError::Plan { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("shrinking.bin"), "{err}");
    assert_eq!(
        visible_entries(&output),
        ["shrinking"],
        "temporary directory removed"
    );
    assert_eq!(
        fs::read(output.join("shrinking").join(layout::MANIFEST_FILE)).unwrap(),
        old_manifest
    );
}

/// What a streamed chunk looked like on disk when it was handed over.
#[derive(Debug)]
struct SeenChunk {
    dir: String,
    written: u64,
    last: bool,
    /// `data.bin` had the metadata's size and SHA-256.
    data_complete: bool,
    /// `metadata.json` on disk said what the callback was given.
    metadata_on_disk: bool,
    manifest_present: bool,
}

#[test]
fn a_streamed_file_hands_over_each_chunk_complete_and_gets_its_manifest_last() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let big = dir.path().join("big.bin");
    let big_bytes = random_bytes(12 * MIB as usize + 4321, 21);
    fs::write(&big, &big_bytes).unwrap();
    let small = dir.path().join("small.txt");
    fs::write(&small, b"one chunk: never streamed").unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let (seen_in, output_in) = (seen.clone(), output.clone());
    let stream = Arc::new(move |chunk: chunker::WrittenChunk<'_>| {
        let tree = output_in.join(chunk.name);
        let chunk_dir = tree.join(chunk.dir);
        let data = fs::read(chunk_dir.join(layout::DATA_FILE)).unwrap();
        let on_disk: ChunkMetadata =
            json_file::read(&chunk_dir.join(layout::METADATA_FILE)).unwrap();
        seen_in.lock().unwrap().push(SeenChunk {
            dir: chunk.dir.to_owned(),
            written: chunk.written,
            last: chunk.last,
            data_complete: data.len() as u64 == chunk.metadata.size
                && Sha256Digest::of(&data) == chunk.metadata.original_hash,
            metadata_on_disk: on_disk == *chunk.metadata,
            manifest_present: tree.join(layout::MANIFEST_FILE).exists(),
        });
    });
    let files =
        [("big", &big, big_bytes.len()), ("small", &small, 25)].map(|(name, path, size)| {
            chunker::InputFile {
                path: path.clone(),
                name: name.to_owned(),
                size: size as u64,
            }
        });
    let options = ChunkOptions {
        stream: Some(stream),
        // Synced, as the pipeline chunks: the manifest follows a flush of the chunks.
        ..ChunkOptions::new(&output)
    };
    let reports: Vec<_> = chunker::chunk_files(&files, &options)
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let seen = seen.lock().unwrap();
    let total = reports[0].total_chunks;
    assert!(total >= 12, "{total} chunks");
    assert_eq!(
        seen.len() as u64,
        total,
        "each chunk of the big file once, none of the small one"
    );
    let mut dirs: Vec<&str> = seen.iter().map(|c| c.dir.as_str()).collect();
    dirs.sort_unstable();
    dirs.dedup();
    assert_eq!(dirs.len() as u64, total, "no chunk handed over twice");
    for (i, chunk) in seen.iter().enumerate() {
        assert_eq!(chunk.written, i as u64 + 1, "counted in the calls' order");
        assert_eq!(chunk.last, chunk.written == total, "only the last is last");
        assert!(
            chunk.data_complete,
            "{}: data.bin incomplete when handed over",
            chunk.dir
        );
        assert!(
            chunk.metadata_on_disk,
            "{}: metadata.json differs",
            chunk.dir
        );
        assert!(
            !chunk.manifest_present,
            "{}: the manifest came before a chunk",
            chunk.dir
        );
    }

    // Complete and in place, with nothing hidden left beside it or in its chunks.
    assert_eq!(visible_entries(&output), ["big", "small"]);
    assert_eq!(fs::read_dir(&output).unwrap().count(), 2);
    let manifest: Manifest =
        json_file::read(&Layout::new(&output).manifest_path("big").unwrap()).unwrap();
    assert_eq!(manifest.file_hash, Some(Sha256Digest::of(&big_bytes)));
    let mut rebuilt = Vec::new();
    for chunk in &manifest.chunks {
        let chunk_dir = output
            .join("big")
            .join(layout::chunk_dir_name(chunk.chunk_id, total));
        assert_eq!(
            visible_entries(&chunk_dir),
            [layout::DATA_FILE, layout::METADATA_FILE]
        );
        assert_eq!(
            fs::read_dir(&chunk_dir).unwrap().count(),
            2,
            "no temporary file left"
        );
        rebuilt.extend(fs::read(chunk_dir.join(layout::DATA_FILE)).unwrap());
    }
    assert_eq!(rebuilt, big_bytes);
}

#[test]
fn a_streamed_file_needs_a_free_name_and_is_removed_when_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let input = dir.path().join("shrinking.bin");
    let handed_over = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = handed_over.clone();
    let stream: chunker::ChunkFn = Arc::new(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });

    // A tree written in place cannot replace another atomically: even forced, the name
    // must be free, and the old tree stays as it was.
    fs::write(&input, random_bytes(3 * MIB as usize, 8)).unwrap();
    chunk_file(&input, &options(&output)).unwrap();
    let old_manifest = fs::read(output.join("shrinking").join(layout::MANIFEST_FILE)).unwrap();
    let err = chunk_file(
        &input,
        &ChunkOptions {
            force: true,
            stream: Some(stream.clone()),
            ..options(&output)
        },
    )
    .unwrap_err();
    assert!(matches!(err, ChunkerError::NameCollision { .. }), "{err}");
    assert_eq!(
        fs::read(output.join("shrinking").join(layout::MANIFEST_FILE)).unwrap(),
        old_manifest
    );
    fs::remove_dir_all(output.join("shrinking")).unwrap();

    // The file shrinks after its first chunks went out: its partial tree is removed.
    // (130 chunks: the end cannot have been read before the first progress call.)
    fs::write(&input, random_bytes(130 * MIB as usize, 4)).unwrap();
    let progress = shrink_to_one_mib_on_progress(&input);
    let err = chunk_file(
        &input,
        &ChunkOptions {
            progress: Some(progress),
            stream: Some(stream),
            ..options(&output)
        },
    )
    .unwrap_err();
    // Found by a writer, or by the cut still under way: either names the file.
    assert!(
        matches!(err, ChunkerError::Read { .. } | ChunkerError::Plan { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("shrinking.bin"), "{err}");
    assert!(handed_over.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(
        fs::read_dir(&output).unwrap().count(),
        0,
        "the partial tree is removed"
    );
}

/// Reads the tree of `name` back through its manifest, each chunk found under the name
/// `chunk_model::layout` gives it, and returns the rebuilt bytes.
fn rebuild_through_manifest(output: &Path, name: &str) -> (Manifest, Vec<u8>) {
    let layout = Layout::new(output);
    let manifest: Manifest = json_file::read(&layout.manifest_path(name).unwrap()).unwrap();
    let mut bytes = Vec::new();
    for chunk in &manifest.chunks {
        let dir = layout
            .chunk_dir(name, chunk.chunk_id, manifest.total_chunks)
            .unwrap();
        bytes.extend(fs::read(dir.join(layout::DATA_FILE)).unwrap());
    }
    (manifest, bytes)
}

#[test]
fn chunk_names_have_four_digits_up_to_10000_chunks_and_more_past_it_whether_cut_before_or_while_writing()
 {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");

    // 10,001 chunks: every name has five digits, so the file is cut whole before the first
    // is written.
    let many = dir.path().join("many.bin");
    let many_bytes = random_bytes(10_000 * 100 + 1, 31);
    fs::write(&many, &many_bytes).unwrap();
    let mut config = chunker::ChunkerConfig::new(Strategy::Size);
    config.max_chunk_size = 100;
    chunk_file(
        &many,
        &ChunkOptions {
            config,
            ..options(&output)
        },
    )
    .unwrap();
    let (manifest, rebuilt) = rebuild_through_manifest(&output, "many");
    assert_eq!(manifest.total_chunks, 10_001);
    assert_eq!(rebuilt, many_bytes);
    assert!(output.join("many/chunk_00000").is_dir());
    assert!(output.join("many/chunk_10000").is_dir());
    assert!(!output.join("many/chunk_0000").exists());

    // Content-defined cuts from 1 KiB up, which could make 12,290 chunks of 12 MiB: cut
    // whole first, then named for the count they came to (four digits). And the same
    // bytes with 4 KiB pieces at least, at most 3,074: cut while the chunks are written,
    // handed over as they are, with the same four-digit names.
    let bytes = random_bytes(12 * MIB as usize, 32);
    for (name, max_chunk_size, min_chunk_size) in [
        ("bound_too_high", 4096, 1024),
        ("cut_while_written", 16 << 10, 4096),
    ] {
        let path = dir.path().join(format!("{name}.bin"));
        fs::write(&path, &bytes).unwrap();
        let handed_over = Arc::new(Mutex::new(Vec::new()));
        let seen = handed_over.clone();
        let stream: chunker::ChunkFn = Arc::new(move |chunk| {
            seen.lock()
                .unwrap()
                .push((chunk.dir.to_owned(), chunk.written, chunk.last));
        });
        // The chunks planned when the first one was written.
        let first_planned = Arc::new(Mutex::new(None));
        let first = first_planned.clone();
        let progress: chunker::ProgressFn = Arc::new(move |p: chunker::Progress| {
            first.lock().unwrap().get_or_insert(p.total_chunks);
        });
        let config = chunker::ChunkerConfig {
            max_chunk_size,
            min_chunk_size,
            ..chunker::ChunkerConfig::default()
        };
        chunk_file(
            &path,
            &ChunkOptions {
                config,
                stream: Some(stream),
                progress: Some(progress),
                ..options(&output)
            },
        )
        .unwrap();
        let (manifest, rebuilt) = rebuild_through_manifest(&output, name);
        assert!(
            (500..10_000).contains(&manifest.total_chunks),
            "{name}: {} chunks",
            manifest.total_chunks
        );
        assert_eq!(rebuilt, bytes, "{name}");
        if name == "bound_too_high" {
            assert_eq!(
                *first_planned.lock().unwrap(),
                Some(manifest.total_chunks),
                "cut whole before the first chunk was written"
            );
        }
        let handed_over = handed_over.lock().unwrap();
        assert_eq!(handed_over.len() as u64, manifest.total_chunks, "{name}");
        for (i, (dir, written, last)) in handed_over.iter().enumerate() {
            assert_eq!(dir.len(), "chunk_0000".len(), "{name}: {dir}");
            assert_eq!(*written, i as u64 + 1, "{name}");
            assert_eq!(
                *last,
                i + 1 == handed_over.len(),
                "{name}: only the last is last"
            );
        }
    }
}
