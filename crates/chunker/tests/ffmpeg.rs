//! Real encoder output: files made by ffmpeg (x264 in MP4, MOV, fragmented MP4 and
//! MKV; MPEG-4 with PCM audio in AVI), chunked with the default strategy, every cut
//! inside the media checked against the keyframe positions ffprobe reports.
//!
//! Skipped, with a note on stderr, where `ffmpeg` or `ffprobe` is not installed
//! (`cargo xtask ci` installs Debian's).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use chunker::{ChunkerConfig, Plan, Strategy, plan_file};

/// Small enough that the few-second test files span many chunks (each file is more
/// than eight times this), large enough for a group of pictures (about 80 KiB here).
const MAX: u64 = 128 << 10;

/// The container bytes a cut may lie before the keyframe's data: RIFF chunk header
/// (AVI), cluster header and the audio blocks muxed before the frame (MKV), `moof` and
/// `mdat` headers (fragmented MP4).
const SLACK: u64 = 16 << 10;

fn tools_available() -> bool {
    let works = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let found = works("ffmpeg") && works("ffprobe");
    if !found {
        eprintln!("note: ffmpeg/ffprobe not installed; skipping the real-encoder tests");
    }
    found
}

fn run(command: &mut Command) {
    let output = command.output().expect("run ffmpeg");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Noisy test pattern (so frames do not compress to nothing) with a tone; a keyframe
/// every 12 frames.
const SOURCE: [&str; 8] = [
    "-f",
    "lavfi",
    "-i",
    "testsrc=size=320x240:rate=25,noise=alls=40:allf=t+u",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:sample_rate=44100",
];

fn ffmpeg(args: &[&str], out: &Path) {
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(out));
}

/// The test files: x264 + AAC encoded once into MKV and remuxed into MP4, MOV and
/// fragmented MP4; MPEG-4 + PCM in AVI.
fn encode(dir: &Path, seconds: u32) -> Vec<PathBuf> {
    let t = seconds.to_string();
    let mkv = dir.join("x264.mkv");
    let mut args = SOURCE.to_vec();
    args.extend([
        "-t",
        &t,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "12",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
    ]);
    ffmpeg(&args, &mkv);
    let mkv_str = mkv.to_str().expect("utf-8 temp path");
    let remux = |extra: &[&str], name: &str| {
        let out = dir.join(name);
        let mut args = vec!["-i", mkv_str, "-c", "copy"];
        args.extend(extra);
        ffmpeg(&args, &out);
        out
    };
    let mp4 = remux(&[], "x264.mp4");
    let mov = remux(&["-f", "mov"], "x264.mov");
    let fmp4 = remux(&["-movflags", "frag_keyframe+empty_moov"], "fragmented.mp4");
    let avi = dir.join("mpeg4.avi");
    let mut args = SOURCE.to_vec();
    args.extend([
        "-t",
        &t,
        "-c:v",
        "mpeg4",
        "-g",
        "12",
        "-q:v",
        "4",
        "-c:a",
        "pcm_s16le",
    ]);
    ffmpeg(&args, &avi);
    vec![mp4, mov, fmp4, mkv, avi]
}

/// (position, keyframe) of every video packet, by position.
fn video_packets(path: &Path) -> Vec<(u64, bool)> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_packets"])
        .args(["-show_entries", "packet=pos,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(output.status.success(), "ffprobe {}", path.display());
    let mut packets: Vec<(u64, bool)> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (pos, flags) = line.split_once(',').expect("pos,flags");
            (pos.trim().parse().expect("a position"), flags.contains('K'))
        })
        .collect();
    packets.sort_unstable();
    packets
}

fn plan_of(path: &Path, max: u64) -> Plan {
    let config = ChunkerConfig {
        max_chunk_size: max,
        ..ChunkerConfig::new(Strategy::Semantic)
    };
    let plan = plan_file(path, &config).expect("plan");
    common::assert_tiles(&plan, std::fs::metadata(path).unwrap().len());
    assert!(
        plan.fallback.is_none(),
        "{}: {:?}",
        path.display(),
        plan.fallback
    );
    plan
}

/// Checks every cut inside the media (after the first video packet, up to the last):
/// the first video packet at or after it is a keyframe, at most `SLACK` bytes on, and
/// the chunk is flagged as starting with a keyframe. Returns the number of such cuts.
fn check_cuts(path: &Path, plan: &Plan, packets: &[(u64, bool)]) -> usize {
    let name = path.display();
    let (first, last) = (packets[0].0, packets[packets.len() - 1].0);
    let mut cuts = 0;
    for span in plan
        .spans
        .iter()
        .filter(|s| s.offset > first && s.offset <= last)
    {
        let next = packets.partition_point(|&(pos, _)| pos < span.offset);
        let (pos, key) = packets[next];
        assert!(
            key,
            "{name}: chunk at {} starts before a frame that is not a keyframe ({pos})",
            span.offset
        );
        assert!(
            pos - span.offset <= SLACK,
            "{name}: chunk at {} starts {} bytes before its keyframe",
            span.offset,
            pos - span.offset
        );
        assert!(
            span.is_keyframe,
            "{name}: {span:?} not flagged as a keyframe"
        );
        cuts += 1;
    }
    cuts
}

fn small_chunks(plan: &Plan) -> usize {
    plan.spans.iter().filter(|s| s.size < 4096).count()
}

fn mean(plan: &Plan) -> u64 {
    plan.file_size / plan.spans.len() as u64
}

#[test]
fn media_cuts_fall_on_keyframes_in_every_container() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for path in encode(dir.path(), 10) {
        let name = path.display();
        let packets = video_packets(&path);
        let keyframes = packets.iter().filter(|p| p.1).count();
        assert!(keyframes >= 10, "{name}: {keyframes} keyframes");
        let plan = plan_of(&path, MAX);
        let cuts = check_cuts(&path, &plan, &packets);
        eprintln!(
            "{name}: {} bytes, {} chunks (mean {} bytes, {} under 4 KiB), {cuts} cuts at keyframes, {keyframes} keyframes",
            plan.file_size,
            plan.spans.len(),
            mean(&plan),
            small_chunks(&plan)
        );
        assert!(plan.file_size >= 8 * MAX, "{name}: test file too small");
        // Groups of pictures (about 80 KiB) are packed up to the maximum: the cuts
        // are a subset of the keyframes, and there are many.
        assert!(cuts >= 5, "{name}: {cuts} cuts");
        assert!(small_chunks(&plan) <= 2, "{name}: {:#?}", plan.spans);
        assert!(
            mean(&plan) >= MAX / 2,
            "{name}: mean chunk {} bytes",
            mean(&plan)
        );
        assert!(
            plan.spans[0].pattern.contains("HEADER"),
            "{name}: {:?}",
            plan.spans[0]
        );
    }
}

#[test]
fn groups_larger_than_the_maximum_are_split_and_only_their_first_piece_is_a_keyframe() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A maximum below the size of a group of pictures (about 80 KiB).
    let max = 32 << 10;
    for path in encode(dir.path(), 3) {
        let name = path.display();
        let packets = video_packets(&path);
        let plan = plan_of(&path, max);
        let keys: Vec<u64> = packets.iter().filter(|p| p.1).map(|p| p.0).collect();
        // Each keyframe after the first opens a chunk flagged as a keyframe, which
        // starts at most SLACK bytes before it; the pieces after it are not flagged.
        for &key in &keys[1..] {
            let i = plan.spans.partition_point(|s| s.end() <= key);
            let span = (0..=i)
                .rev()
                .map(|j| &plan.spans[j])
                .find(|s| s.is_keyframe)
                .unwrap_or_else(|| panic!("{name}: no keyframe chunk before {key}"));
            assert!(
                key - span.offset <= SLACK && span.end() > key.saturating_sub(SLACK),
                "{name}: keyframe at {key}, nearest keyframe chunk {span:?}"
            );
        }
        let flagged = plan.spans.iter().filter(|s| s.is_keyframe).count();
        assert_eq!(
            flagged,
            keys.len(),
            "{name}: one flagged chunk per keyframe"
        );
        assert!(plan.spans.iter().all(|s| s.size <= max));
    }
}

/// Chunk counts and mean sizes of larger files at the default maximum (1 MiB), for the
/// record: `cargo test -p chunker --test ffmpeg -- --ignored --nocapture`.
#[test]
#[ignore = "encodes about 60 MiB of video; run by hand to measure"]
fn large_media_at_the_default_maximum() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for path in encode(dir.path(), 60) {
        let packets = video_packets(&path);
        let plan = plan_of(&path, chunker::DEFAULT_MAX_CHUNK_SIZE);
        let cuts = check_cuts(&path, &plan, &packets);
        eprintln!(
            "{}: {:.1} MiB, {} chunks, mean {:.0} KiB, {} under 4 KiB, {cuts} cuts at keyframes",
            path.display(),
            plan.file_size as f64 / (1 << 20) as f64,
            plan.spans.len(),
            mean(&plan) as f64 / 1024.0,
            small_chunks(&plan)
        );
        assert!(small_chunks(&plan) <= 2);
        if plan.file_size >= 8 << 20 {
            assert!(mean(&plan) >= chunker::DEFAULT_MAX_CHUNK_SIZE / 2);
        }
    }
}
