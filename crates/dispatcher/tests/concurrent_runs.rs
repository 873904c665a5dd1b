//! Two dispatch runs on one chunk tree at once, against a real HTTP server on 127.0.0.1:
//! every chunk is sent once, and no `attempts` update is lost. Each run detects first, as
//! `detect` then `dispatch` do, so both start from the same list of every chunk.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chunk_model::tree_lock::{TreeLock, Wait};
use chunk_model::{ChunkInfo, ChunkMetadata, Sha256Digest, Status, Timestamp, WebhookRequest};
use dispatcher::{DispatchConfig, DispatchError, DispatchReport, Dispatcher, Endpoint, Mode};

/// Longest any one step of these tests may take.
const LIMIT: Duration = Duration::from_secs(60);
const CHUNKS: u64 = 60;

/// A chunk tree of `CHUNKS` pending chunks of one file under `root/pending_compression`.
fn tree(root: &Path) -> PathBuf {
    let base = root.join("pending_compression");
    let layout = chunk_model::Layout::new(&base);
    for id in 0..CHUNKS {
        let dir = layout.chunk_dir("movie", id, CHUNKS).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let data = [id as u8; 100];
        std::fs::write(dir.join(chunk_model::layout::DATA_FILE), data).unwrap();
        let meta = ChunkMetadata::new_pending(
            id,
            id * 100,
            100,
            Sha256Digest::of(&data),
            "FIXED_SIZE",
            None,
            Timestamp::now(),
        );
        chunk_model::json_file::write_atomic(&dir.join("metadata.json"), &meta).unwrap();
    }
    base
}

fn detect(base: &Path) -> Vec<ChunkInfo> {
    let report = detector::scan(&detector::DetectConfig::new(base), chrono::Utc::now()).unwrap();
    report.selected.into_iter().map(|c| c.info).collect()
}

/// A webhook receiver on 127.0.0.1 that accepts every request (202, after a pause that
/// keeps requests of both runs in flight together) and counts each chunk it receives.
struct Receiver {
    url: String,
    received: Arc<Mutex<HashMap<String, usize>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(HashMap::new()));
        let counts = received.clone();
        // Ends with the test process; every connection has read and write time limits.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &counts);
                });
            }
        });
        Self { url, received }
    }

    fn counts(&self) -> HashMap<String, usize> {
        self.received.lock().unwrap().clone()
    }
}

/// Answers one request on `stream` and closes it.
fn serve(stream: TcpStream, counts: &Mutex<HashMap<String, usize>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(LIMIT))?;
    stream.set_write_timeout(Some(LIMIT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let paths: Vec<String> = match serde_json::from_slice(&body) {
        Ok(WebhookRequest::CompressBatch { chunks, .. }) => {
            chunks.into_iter().map(|c| c.chunk_path).collect()
        }
        Ok(WebhookRequest::CompressChunk { chunk_info, .. }) => vec![chunk_info.chunk_path],
        Err(_) => Vec::new(),
    };
    {
        let mut counts = counts.lock().unwrap();
        for path in &paths {
            *counts.entry(path.clone()).or_default() += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    let answer = serde_json::json!({ "status": "accepted", "accepted": paths }).to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}

fn config(url: &str, base: &Path) -> DispatchConfig {
    let mut config = DispatchConfig::new(vec![Endpoint::from_url(url)]);
    config.mode = Mode::Batch(5);
    config.concurrency = 4;
    config.base = Some(base.to_owned());
    config.timeout = Duration::from_secs(10);
    config.lock_wait = Wait::Timeout(LIMIT);
    config
}

/// One dispatch run on a runtime of its own, as a separate `dispatch` process runs.
fn dispatch(config: DispatchConfig, chunks: Vec<ChunkInfo>) -> DispatchReport {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dispatcher = Dispatcher::new(config).unwrap();
        tokio::time::timeout(LIMIT, dispatcher.run(chunks, |_| {}))
            .await
            .expect("the run ends in time")
    })
}

fn metadata(base: &Path) -> Vec<ChunkMetadata> {
    let layout = chunk_model::Layout::new(base);
    (0..CHUNKS)
        .map(|id| {
            let dir = layout.chunk_dir("movie", id, CHUNKS).unwrap();
            chunk_model::json_file::read(&dir.join("metadata.json")).unwrap()
        })
        .collect()
}

#[test]
fn two_runs_at_once_send_each_chunk_once_and_lose_no_attempts() {
    let work = tempfile::tempdir().unwrap();
    let base = tree(work.path());
    let receiver = Receiver::start();
    // Both runs list every chunk before either sends anything, and say when (as the
    // list file's time would).
    let listed_at = chrono::Utc::now();
    let (first, second) = (detect(&base), detect(&base));
    assert_eq!(
        (first.len(), second.len()),
        (CHUNKS as usize, CHUNKS as usize)
    );

    let runs: Vec<DispatchReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = [first, second]
            .into_iter()
            .map(|chunks| {
                let mut config = config(&receiver.url, &base);
                config.listed_at = Some(listed_at);
                scope.spawn(move || dispatch(config, chunks))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let counts = receiver.counts();
    eprintln!("DEBUG {runs:#?}");
    assert_eq!(counts.len(), CHUNKS as usize, "{counts:?}");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let accepted: usize = runs.iter().map(|r| r.accepted_chunks).sum();
    let skipped: usize = runs.iter().map(|r| r.skipped.len()).sum();
    assert_eq!((accepted, skipped), (CHUNKS as usize, CHUNKS as usize));
    assert!(
        runs.iter()
            .flat_map(|r| &r.skipped)
            .all(|s| s.reason == detector::SkipReason::Leased)
    );
    for meta in metadata(&base) {
        assert_eq!(
            (meta.status, meta.attempts),
            (Status::Queued, 1),
            "chunk {}",
            meta.chunk_id
        );
    }
    // The lock file is the tree's only new entry, and it is released.
    TreeLock::acquire(&base, Wait::No).unwrap();
}

#[test]
fn a_run_after_another_leaves_out_what_was_sent_since_its_list_was_made() {
    let work = tempfile::tempdir().unwrap();
    let base = tree(work.path());
    let receiver = Receiver::start();
    // Two detections, then one dispatch after the other (two workflow runs whose
    // dispatch steps do not overlap).
    let listed_at = chrono::Utc::now();
    let (first, second) = (detect(&base), detect(&base));
    let done = dispatch(config(&receiver.url, &base), first);
    assert_eq!(done.accepted_chunks, CHUNKS as usize);
    let mut later = config(&receiver.url, &base);
    later.listed_at = Some(listed_at);
    let report = dispatch(later, second);
    assert_eq!(
        (report.total_chunks, report.skipped.len()),
        (0, CHUNKS as usize)
    );
    assert!(receiver.counts().values().all(|&n| n == 1));
    assert!(metadata(&base).iter().all(|m| m.attempts == 1));

    // A list made after those dispatches (an expired lease, a forced scan) is sent.
    let mut rescue = config(&receiver.url, &base);
    rescue.listed_at = Some(chrono::Utc::now());
    let chunks = detect(&base);
    assert!(chunks.is_empty(), "all leased");
    let leased: Vec<ChunkInfo> = detector::scan(
        &detector::DetectConfig::new(&base),
        chrono::Utc::now() + chrono::TimeDelta::hours(1),
    )
    .unwrap()
    .selected
    .into_iter()
    .map(|c| c.info)
    .collect();
    let report = dispatch(rescue, leased);
    assert_eq!(report.accepted_chunks, CHUNKS as usize);
    assert!(metadata(&base).iter().all(|m| m.attempts == 2));
}

#[test]
fn a_run_that_cannot_have_the_lock_sends_nothing_and_says_who_holds_it() {
    let work = tempfile::tempdir().unwrap();
    let base = tree(work.path());
    let receiver = Receiver::start();
    let chunks = detect(&base);
    let before = metadata(&base);

    let held = TreeLock::acquire(&base, Wait::No).unwrap();
    let mut config = config(&receiver.url, &base);
    config.lock_wait = Wait::Timeout(Duration::from_millis(100));
    let report = std::thread::scope(|scope| {
        let chunks = chunks.clone();
        let config = config.clone();
        scope
            .spawn(move || dispatch(config, chunks))
            .join()
            .unwrap()
    });
    assert_eq!(report.accepted_chunks, 0);
    assert_eq!(report.outcomes.len(), (CHUNKS as usize).div_ceil(5));
    for outcome in &report.outcomes {
        let failure = outcome.result.as_ref().unwrap_err();
        assert!(failure.error.contains("another run"), "{}", failure.error);
        assert!(
            failure
                .error
                .contains(&format!("pid {}", std::process::id())),
            "{}",
            failure.error
        );
    }
    assert!(receiver.counts().is_empty());
    assert_eq!(metadata(&base), before, "nothing was recorded");

    // The typed way: a run given the lock its caller holds, or none.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dispatcher = Dispatcher::new(config).unwrap();
    let err = runtime
        .block_on(dispatcher.run_locked(None, chunks.clone(), |_| {}))
        .unwrap_err();
    assert!(matches!(err, DispatchError::NotLocked { .. }), "{err}");
    let report = runtime
        .block_on(async {
            tokio::time::timeout(LIMIT, dispatcher.run_locked(Some(&held), chunks, |_| {})).await
        })
        .expect("the run ends in time")
        .unwrap();
    assert_eq!(report.accepted_chunks, CHUNKS as usize);
    assert!(receiver.counts().values().all(|&n| n == 1));
    // A lock on another tree is no proof.
    let other = tempfile::tempdir().unwrap();
    let elsewhere = TreeLock::acquire(other.path(), Wait::No).unwrap();
    let err = runtime
        .block_on(dispatcher.run_locked(Some(&elsewhere), Vec::new(), |_| {}))
        .unwrap_err();
    assert!(matches!(err, DispatchError::Locked(_)), "{err}");
}
