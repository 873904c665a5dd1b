//! Semantic splitting of each format, checked against the generators' ground truth:
//! the header chunk, structures packed between the minimum and the maximum, cuts only
//! where a chunk may start (every media cut at a keyframe), opaque data cut by content.

mod common;

use chunker::{FIXED_SIZE, Format, Plan, Strategy};
use common::{MIB, assert_tiles, pieces, plan_bytes, summary};
use samples::*;

/// The header chunk: `[0, end)`, named `pattern`, listing `structures` in order.
fn assert_header(plan: &Plan, end: u64, pattern: &str, structures: &[&str]) {
    let header = &plan.spans[0];
    assert_eq!((header.offset, header.size), (0, end), "{header:?}");
    assert_eq!(header.pattern, pattern);
    assert!(!header.is_keyframe);
    let listed: Vec<&str> = header
        .structures
        .iter()
        .map(|s| s.pattern.as_ref())
        .collect();
    assert_eq!(listed, structures);
}

/// Every chunk but the header and the last is at least the plan's minimum.
fn assert_min_between(plan: &Plan) {
    let n = plan.spans.len();
    for span in &plan.spans[1..n.saturating_sub(1)] {
        assert!(span.size >= plan.min_chunk_size, "{span:?}");
    }
}

/// The pieces of a span cut by content: contiguous, within the limits.
fn assert_cut_by_content(plan: &Plan, from: u64, to: u64, pattern: &str) {
    let inside: Vec<_> = plan
        .spans
        .iter()
        .filter(|s| s.offset >= from && s.offset < to)
        .collect();
    assert!(!inside.is_empty());
    assert_eq!(inside[0].offset, from);
    for span in &inside {
        assert_eq!(span.pattern, pattern, "{span:?}");
        assert!(span.size <= plan.max_chunk_size);
    }
    for span in &inside[..inside.len() - 1] {
        assert!(span.size >= plan.min_chunk_size, "{span:?}");
    }
}

fn part<'a>(s: &'a Sample, name: &'a str) -> &'a Part {
    s.parts_named(name)
        .next()
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn png_header_then_idat_cut_by_content() {
    let s = png(&PngSpec::with_approx_size(5 * MIB as usize, 11));
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Png);
    assert!(plan.fallback.is_none());
    let idat = part(&s, "IDAT");
    assert!(idat.size > 4 * MIB);
    assert_header(
        &plan,
        idat.offset,
        "PNG_HEADER",
        &["PNG_SIGNATURE", "PNG_IHDR"],
    );
    assert_cut_by_content(&plan, idat.offset, s.bytes.len() as u64, "PNG_IDAT");
    // IEND is packed with the last piece of image data.
    let last = plan.spans.last().unwrap();
    let listed: Vec<_> = last.structures.iter().map(|s| s.pattern.as_ref()).collect();
    assert_eq!(listed, ["PNG_IDAT", "PNG_IEND"]);
    assert_eq!(last.structures[1].bytes, part(&s, "IEND").size);
}

#[test]
fn png_truncated_in_idat_falls_back_to_content_cuts() {
    let s = png(&PngSpec::with_approx_size(3 * MIB as usize, 13));
    let cut = &s.bytes[..2 * MIB as usize];
    let plan = plan_bytes(cut, Strategy::Semantic, MIB);
    assert_tiles(&plan, cut.len() as u64);
    let fallback = plan.fallback.as_ref().expect("fallback");
    assert_eq!(
        fallback.offset,
        part(&s, "IHDR").offset + part(&s, "IHDR").size
    );
    assert!(fallback.reason.contains("IDAT"), "{}", fallback.reason);
    // No IDAT was recognized, so no header either: the first chunk starts with the
    // signature and takes the unrecognized bytes after it.
    let listed: Vec<_> = plan.spans[0]
        .structures
        .iter()
        .map(|s| s.pattern.as_ref())
        .collect();
    assert_eq!(listed, ["PNG_SIGNATURE", "PNG_IHDR", FIXED_SIZE]);
    assert_eq!(plan.spans[0].pattern, "PNG_SIGNATURE");
    assert!(plan.spans.len() >= 2);
    assert!(plan.spans[1..].iter().all(|s| s.pattern == FIXED_SIZE));
}

fn mp4_spec(co64: bool, moov_first: bool) -> Mp4Spec {
    Mp4Spec {
        samples: 300,
        sample_size: 20 * 1024,
        keyframe_interval: 30,
        samples_per_chunk: 7,
        co64,
        moov_first,
        free_box: true,
        brand: *b"isom",
        seed: 21,
    }
}

#[test]
fn mp4_groups_of_pictures_are_packed_and_cut_at_keyframes_from_stss() {
    for (co64, moov_first) in [(false, true), (true, true), (false, false), (true, false)] {
        let s = mp4(&mp4_spec(co64, moov_first));
        let case = format!("co64={co64} moov_first={moov_first}");
        let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
        assert_tiles(&plan, s.bytes.len() as u64);
        let mdat = part(&s, "mdat");
        let moov = part(&s, "moov");
        let mut header = vec!["ISOBMFF_FTYP", "ISOBMFF_FREE_SPACE"];
        if moov_first {
            header.push("ISOBMFF_MOOV_METADATA");
        }
        assert_header(&plan, mdat.offset, "ISOBMFF_HEADER", &header);
        // The groups of pictures (600 KiB) are packed one or two to a chunk, every
        // chunk of the mdat starting at a keyframe (the first one with the mdat header
        // before its keyframe).
        let media: Vec<_> = plan.spans[1..]
            .iter()
            .filter(|sp| sp.offset < mdat.offset + mdat.size)
            .collect();
        assert_eq!(media[0].offset, mdat.offset, "{case}");
        assert_eq!(s.keyframes[0], mdat.offset + 8);
        for span in &media {
            assert!(
                span.offset == mdat.offset || s.keyframes.contains(&span.offset),
                "{case}: {span:?}"
            );
            assert!(span.is_keyframe, "{case}: {span:?}");
            assert_eq!(span.pattern, "ISOBMFF_MDAT_KEYFRAMES");
        }
        // Greedy packing: no chunk could have taken the next group of pictures.
        for pair in media.windows(2) {
            let next_key = s.keyframes.iter().find(|&&k| k > pair[1].offset);
            let next_group_end = next_key.copied().unwrap_or(mdat.offset + mdat.size);
            assert!(next_group_end - pair[0].offset > MIB, "{case}: {pair:?}");
        }
        if !moov_first {
            // moov is packed with the last groups of pictures.
            let last = plan.spans.last().unwrap();
            assert_eq!(
                last.structures.last().unwrap().pattern,
                "ISOBMFF_MOOV_METADATA"
            );
            assert_eq!(last.end(), moov.offset + moov.size);
        }
    }
}

#[test]
fn mp4_groups_larger_than_the_max_are_split_after_the_keyframe() {
    let s = mp4(&mp4_spec(false, true));
    let max = 200 * 1024;
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, max);
    assert_tiles(&plan, s.bytes.len() as u64);
    for key in &s.keyframes[1..] {
        let span = plan
            .spans
            .iter()
            .find(|sp| sp.offset == *key)
            .expect("a span starts at each keyframe");
        assert!(span.is_keyframe);
        assert_eq!(span.pattern, "ISOBMFF_MDAT_KEYFRAMES");
    }
    let media: Vec<_> = plan
        .spans
        .iter()
        .filter(|sp| sp.pattern == "ISOBMFF_MDAT_MEDIA")
        .collect();
    assert!(!media.is_empty());
    assert!(
        media
            .iter()
            .all(|sp| !sp.is_keyframe && !s.keyframes.contains(&sp.offset))
    );
    assert_eq!(plan.keyframe_count(), s.keyframes.len());
}

#[test]
fn mov_brand_is_detected() {
    let s = mp4(&Mp4Spec {
        brand: *b"qt  ",
        ..mp4_spec(false, true)
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Mov);
    assert_eq!(plan.format.grammar_id(), "mov_v1");
    assert_eq!(plan.keyframe_count(), s.keyframes.len());
}

#[test]
fn jpeg_header_then_scan_data_cut_by_content() {
    let s = jpeg(&JpegSpec::with_approx_size(3 * MIB as usize, 31));
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Jpeg);
    let scan = part(&s, "scan");
    assert_header(
        &plan,
        scan.offset,
        "JPEG_HEADER",
        &[
            "JPEG_SOI",
            "JPEG_APP0",
            "JPEG_DQT",
            "JPEG_SOF0",
            "JPEG_DHT",
            "JPEG_DRI",
            "JPEG_SOS",
        ],
    );
    assert_eq!(plan.spans[0].structures[4].count, 4, "four DHT segments");
    assert_cut_by_content(&plan, scan.offset, s.bytes.len() as u64, "JPEG_SCAN_DATA");
    let last = plan.spans.last().unwrap();
    assert_eq!(last.structures.last().unwrap().pattern, "JPEG_EOI");
}

#[test]
fn webm_header_then_clusters_packed_at_keyframes() {
    for unknown_sizes in [false, true] {
        let s = webm(&WebmSpec {
            unknown_sizes,
            ..WebmSpec::with_approx_size(4 * MIB as usize, 41)
        });
        let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
        assert_eq!(plan.format, Format::Webm);
        assert_tiles(&plan, s.bytes.len() as u64);
        let clusters: Vec<_> = s.parts_named("Cluster").collect();
        assert_header(
            &plan,
            clusters[0].offset,
            "EBML_HEADER",
            &[
                "EBML_HEADER",
                "EBML_SEGMENT",
                "EBML_SEEKHEAD",
                "EBML_INFO",
                "EBML_TRACKS",
            ],
        );
        for span in &plan.spans[1..] {
            assert!(
                clusters.iter().any(|c| c.offset == span.offset),
                "unknown_sizes={unknown_sizes}: {span:?}"
            );
            assert!(span.is_keyframe && span.pattern == "EBML_CLUSTER");
        }
        // Greedy packing (clusters of about 600 KB here: one to a chunk).
        for pair in plan.spans[1..].windows(2) {
            let next = clusters
                .iter()
                .find(|c| c.offset == pair[1].offset)
                .unwrap();
            assert!(pair[0].size + next.size > MIB, "{pair:?}");
        }
        let last = plan.spans.last().unwrap();
        assert_eq!(last.structures.last().unwrap().pattern, "EBML_CUES");
        assert_min_between(&plan);
    }
}

#[test]
fn mkv_clusters_larger_than_the_max_are_split_after_the_keyframe() {
    let s = webm(&WebmSpec {
        doc_type: "matroska".into(),
        ..WebmSpec::with_approx_size(2 * MIB as usize, 42)
    });
    let max = 100_000;
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, max);
    assert_eq!(plan.format, Format::Mkv);
    assert_tiles(&plan, s.bytes.len() as u64);
    for cluster in s.parts_named("Cluster") {
        let end = cluster.offset + cluster.size;
        let inside: Vec<_> = plan
            .spans
            .iter()
            .filter(|sp| (cluster.offset..end).contains(&sp.offset))
            .collect();
        assert_eq!(inside[0].offset, cluster.offset);
        assert!(inside[0].is_keyframe);
        assert!(inside[1..].iter().all(|sp| !sp.is_keyframe));
        assert!(inside.len() >= 2, "a cluster larger than the max is split");
    }
    assert_eq!(plan.keyframe_count(), s.keyframes.len());
}

#[test]
fn avi_frames_travel_with_their_keyframe_and_audio_with_its_frames() {
    let s = avi(&AviSpec {
        frames: 40,
        frame_size: 30_001,
        audio_size: 5_881,
        keyframe_interval: 10,
        seed: 51,
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Avi);
    assert_tiles(&plan, s.bytes.len() as u64);
    let first_frame = part(&s, "00dc").offset;
    assert_header(
        &plan,
        first_frame,
        "AVI_RIFF_HEADER",
        &["AVI_RIFF_HEADER", "AVI_LIST_HEADERS", "AVI_LIST_MOVIE_DATA"],
    );
    // Groups of pictures of about 360 KB: two to a chunk, each chunk starting at a
    // keyframe, the index packed with the last.
    assert_eq!(s.keyframes.len(), 4);
    let starts: Vec<u64> = plan.spans[1..].iter().map(|sp| sp.offset).collect();
    assert_eq!(starts, [s.keyframes[0], s.keyframes[2]]);
    for span in &plan.spans[1..] {
        assert!(span.is_keyframe);
        assert_eq!(span.pattern, "AVI_VIDEO_FRAME");
        let listed: Vec<_> = span.structures.iter().map(|s| s.pattern.as_ref()).collect();
        assert_eq!(&listed[..2], ["AVI_VIDEO_FRAME", "AVI_AUDIO_DATA"]);
        assert_eq!(span.structures[0].count, 20);
    }
    let last = plan.spans.last().unwrap();
    assert_eq!(last.structures.last().unwrap().pattern, "AVI_INDEX");
}

#[test]
fn wav_and_webp_header_then_data() {
    let s = wav(&WavSpec {
        data_bytes: 2_500_001,
        seed: 61,
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Wav);
    let data = part(&s, "data");
    assert_header(
        &plan,
        data.offset,
        "RIFF_HEADER",
        &["RIFF_HEADER", "RIFF_fmt", "RIFF_LIST"],
    );
    assert_cut_by_content(&plan, data.offset, s.bytes.len() as u64, "RIFF_data");

    let s = webp(&WebpSpec {
        image_bytes: 100_001,
        seed: 62,
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Webp);
    let vp8 = part(&s, "VP8 ");
    assert_header(
        &plan,
        vp8.offset,
        "RIFF_HEADER",
        &["RIFF_HEADER", "RIFF_VP8X"],
    );
    assert_eq!(plan.spans.len(), 2);
    let listed: Vec<_> = plan.spans[1]
        .structures
        .iter()
        .map(|s| s.pattern.as_ref())
        .collect();
    assert_eq!(listed, ["RIFF_VP8", "RIFF_EXIF"]);
}

#[test]
fn pdf_objects_are_packed_and_streams_cut_by_content() {
    let s = pdf(&PdfSpec {
        pages: 6,
        image_bytes: 300_000,
        seed: 71,
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Pdf);
    assert!(plan.fallback.is_none());
    assert_tiles(&plan, s.bytes.len() as u64);
    // No separate header: the first chunk starts with it and is named after it.
    assert_eq!(plan.spans[0].pattern, "PDF_HEADER");
    assert!(plan.spans[0].structures.len() > 1);
    // Chunks start at objects, or inside an object with a stream.
    let objects: Vec<_> = s.parts_named("obj").collect();
    for span in &plan.spans[1..] {
        assert_eq!(span.pattern, "PDF_OBJECT");
        assert!(
            objects
                .iter()
                .any(|o| (o.offset..o.offset + o.size).contains(&span.offset)),
            "{span:?}"
        );
    }
    assert_min_between(&plan);
    assert!(plan.spans.len() >= 3);
    let last = plan.spans.last().unwrap();
    assert_eq!(last.structures.last().unwrap().pattern, "PDF_XREF");
}

#[test]
fn detected_but_unstructured_formats_are_cut_by_content() {
    let mut gif = b"GIF89a".to_vec();
    gif.extend(random_bytes(3_000_000, 81));
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend(random_bytes(2_000_000, 82));
    let text = text_log(2_500_000, 83);
    for (bytes, format) in [
        (gif, Format::Gif89),
        (zip, Format::Zip),
        (text, Format::Text),
    ] {
        let plan = plan_bytes(&bytes, Strategy::Semantic, MIB);
        assert_eq!(plan.format, format);
        assert_tiles(&plan, bytes.len() as u64);
        assert_cut_by_content(&plan, 0, bytes.len() as u64, FIXED_SIZE);
        assert!(plan.spans.len() >= 2);
    }
}

#[test]
fn size_strategy_ignores_structure() {
    let s = mp4(&mp4_spec(false, true));
    let plan = plan_bytes(&s.bytes, Strategy::Size, MIB);
    assert_eq!(plan.format, Format::Mp4);
    assert_eq!(
        summary(&plan),
        pieces(0, s.bytes.len() as u64, MIB, FIXED_SIZE)
    );
}

#[test]
fn trailing_data_after_the_structure_is_kept() {
    let mut bytes = jpeg(&JpegSpec::with_approx_size(100_000, 91)).bytes;
    let len = bytes.len() as u64;
    bytes.extend_from_slice(b"trailing junk that some cameras append");
    let plan = plan_bytes(&bytes, Strategy::Semantic, MIB);
    assert_tiles(&plan, bytes.len() as u64);
    assert_eq!(plan.fallback.as_ref().map(|f| f.offset), Some(len));
    // The trailing bytes are packed with the end of the image.
    let last = plan.spans.last().unwrap();
    let trailing = last.structures.last().unwrap();
    assert_eq!(trailing.pattern, FIXED_SIZE);
    assert_eq!(trailing.bytes, bytes.len() as u64 - len);
}
