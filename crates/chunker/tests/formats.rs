//! Semantic splitting of each format, checked against the generators' ground truth.

mod common;

use chunker::{FIXED_SIZE, Format, Strategy};
use common::{MIB, assert_tiles, pieces, plan_bytes, summary};
use samples::*;

fn part<'a>(s: &'a Sample, name: &'a str) -> &'a Part {
    s.parts_named(name)
        .next()
        .unwrap_or_else(|| panic!("no {name}"))
}

fn one(p: &Part, pattern: &str) -> (u64, u64, String, bool) {
    (p.offset, p.size, pattern.to_owned(), false)
}

#[test]
fn png_with_a_multi_mib_idat_is_split_at_the_max() {
    let s = png(&PngSpec::with_approx_size(5 * MIB as usize, 11));
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Png);
    assert!(plan.fallback.is_none());
    let idat = part(&s, "IDAT");
    assert!(idat.size > 4 * MIB);
    let mut want = vec![
        (0, 8, "PNG_SIGNATURE".to_owned(), false),
        one(part(&s, "IHDR"), "PNG_IHDR"),
    ];
    want.extend(pieces(idat.offset, idat.size, MIB, "PNG_IDAT"));
    want.push(one(part(&s, "IEND"), "PNG_IEND"));
    assert_eq!(summary(&plan), want);
}

#[test]
fn png_small_idats_are_packed_at_chunk_boundaries() {
    let s = png(&PngSpec {
        idat_chunk_size: 8192,
        ..PngSpec::with_approx_size(3 * MIB as usize, 12)
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_tiles(&plan, s.bytes.len() as u64);
    let idats: Vec<_> = s.parts_named("IDAT").collect();
    let spans: Vec<_> = plan
        .spans
        .iter()
        .filter(|sp| sp.pattern == "PNG_IDAT")
        .collect();
    assert!(
        spans.len() >= 3 && spans.len() < idats.len() / 10,
        "{} spans",
        spans.len()
    );
    for span in &spans {
        assert!(
            idats.iter().any(|p| p.offset == span.offset),
            "span inside an IDAT: {span:?}"
        );
    }
}

#[test]
fn png_truncated_in_idat_falls_back_to_size() {
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
    assert_eq!(plan.spans[2].pattern, FIXED_SIZE);
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
fn mp4_mdat_is_cut_at_every_keyframe_from_stss() {
    for (co64, moov_first) in [(false, true), (true, true), (false, false), (true, false)] {
        let s = mp4(&mp4_spec(co64, moov_first));
        let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
        assert_tiles(&plan, s.bytes.len() as u64);
        let mdat = part(&s, "mdat");
        let mut want = vec![
            one(part(&s, "ftyp"), "ISOBMFF_FTYP"),
            one(part(&s, "free"), "ISOBMFF_FREE_SPACE"),
        ];
        let moov = one(part(&s, "moov"), "ISOBMFF_MOOV_METADATA");
        if moov_first {
            want.push(moov.clone());
        }
        // Every group of pictures (< 1 MiB here) is one chunk starting with its keyframe;
        // the first keyframe opens the mdat payload, so it takes the mdat header along.
        let mut starts = vec![mdat.offset];
        starts.extend(&s.keyframes[1..]);
        starts.push(mdat.offset + mdat.size);
        for w in starts.windows(2) {
            want.push((w[0], w[1] - w[0], "ISOBMFF_MDAT_KEYFRAMES".to_owned(), true));
        }
        if !moov_first {
            want.push(moov);
        }
        assert_eq!(summary(&plan), want, "co64={co64} moov_first={moov_first}");
        assert_eq!(plan.keyframe_count(), s.keyframes.len());
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
fn jpeg_markers_and_scan_data() {
    let s = jpeg(&JpegSpec::with_approx_size(3 * MIB as usize, 31));
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Jpeg);
    let dht: Vec<_> = s.parts_named("DHT").collect();
    let mut want = vec![
        one(part(&s, "SOI"), "JPEG_SOI"),
        one(part(&s, "APP0"), "JPEG_APP0"),
        one(part(&s, "DQT"), "JPEG_DQT"),
        one(part(&s, "SOF0"), "JPEG_SOF0"),
        // The four consecutive DHT segments are one chunk.
        (
            dht[0].offset,
            dht.iter().map(|p| p.size).sum(),
            "JPEG_DHT".to_owned(),
            false,
        ),
        one(part(&s, "DRI"), "JPEG_DRI"),
        one(part(&s, "SOS"), "JPEG_SOS"),
    ];
    let scan = part(&s, "scan");
    want.extend(pieces(scan.offset, scan.size, MIB, "JPEG_SCAN_DATA"));
    want.push(one(part(&s, "EOI"), "JPEG_EOI"));
    assert_eq!(summary(&plan), want);
}

#[test]
fn webm_elements_and_clusters() {
    for unknown_sizes in [false, true] {
        let s = webm(&WebmSpec {
            unknown_sizes,
            ..WebmSpec::with_approx_size(4 * MIB as usize, 41)
        });
        let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
        assert_eq!(plan.format, Format::Webm);
        let mut want = vec![
            one(part(&s, "EBML"), "EBML_HEADER"),
            one(part(&s, "Segment"), "EBML_SEGMENT"),
            one(part(&s, "SeekHead"), "EBML_SEEKHEAD"),
            one(part(&s, "Info"), "EBML_INFO"),
            one(part(&s, "Tracks"), "EBML_TRACKS"),
        ];
        for cluster in s.parts_named("Cluster") {
            want.push((
                cluster.offset,
                cluster.size,
                "EBML_CLUSTER".to_owned(),
                true,
            ));
        }
        want.push(one(part(&s, "Cues"), "EBML_CUES"));
        assert_eq!(summary(&plan), want, "unknown_sizes={unknown_sizes}");
    }
}

#[test]
fn mkv_clusters_larger_than_the_max_are_split() {
    let s = webm(&WebmSpec {
        doc_type: "matroska".into(),
        ..WebmSpec::with_approx_size(2 * MIB as usize, 42)
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, 100_000);
    assert_eq!(plan.format, Format::Mkv);
    assert_tiles(&plan, s.bytes.len() as u64);
    for cluster in s.parts_named("Cluster") {
        let want = pieces(cluster.offset, cluster.size, 100_000, "EBML_CLUSTER");
        let got: Vec<_> = summary(&plan)
            .into_iter()
            .filter(|(o, ..)| (cluster.offset..cluster.offset + cluster.size).contains(o))
            .map(|(o, n, p, _)| (o, n, p, false))
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn avi_frames_audio_and_index() {
    let s = avi(&AviSpec {
        frames: 40,
        frame_size: 30_001,
        audio_size: 5_881,
        keyframe_interval: 10,
        seed: 51,
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Avi);
    let want: Vec<_> = s
        .parts
        .iter()
        .map(|p| {
            let pattern = match p.name.as_str() {
                "RIFF" => "AVI_RIFF_HEADER",
                "hdrl" => "AVI_LIST_HEADERS",
                "movi" => "AVI_LIST_MOVIE_DATA",
                "00dc" => "AVI_VIDEO_FRAME",
                "01wb" => "AVI_AUDIO_DATA",
                "idx1" => "AVI_INDEX",
                other => panic!("{other}"),
            };
            one(p, pattern)
        })
        .collect();
    assert_eq!(summary(&plan), want);
}

#[test]
fn wav_and_webp_riff_chunks() {
    let s = wav(&WavSpec {
        data_bytes: 2_500_001,
        seed: 61,
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Wav);
    let mut want = vec![
        one(part(&s, "RIFF"), "RIFF_HEADER"),
        one(part(&s, "fmt "), "RIFF_fmt"),
        one(part(&s, "LIST"), "RIFF_LIST"),
    ];
    let data = part(&s, "data");
    want.extend(pieces(data.offset, data.size, MIB, "RIFF_data"));
    assert_eq!(summary(&plan), want);

    let s = webp(&WebpSpec {
        image_bytes: 100_001,
        seed: 62,
    });
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, MIB);
    assert_eq!(plan.format, Format::Webp);
    let want = vec![
        one(part(&s, "RIFF"), "RIFF_HEADER"),
        one(part(&s, "VP8X"), "RIFF_VP8X"),
        one(part(&s, "VP8 "), "RIFF_VP8"),
        one(part(&s, "EXIF"), "RIFF_EXIF"),
    ];
    assert_eq!(summary(&plan), want);
}

#[test]
fn pdf_objects_are_packed_and_xref_kept() {
    let s = pdf(&PdfSpec {
        pages: 6,
        image_bytes: 300_000,
        seed: 71,
    });
    let max = MIB;
    let plan = plan_bytes(&s.bytes, Strategy::Semantic, max);
    assert_eq!(plan.format, Format::Pdf);
    let mut want = vec![one(part(&s, "header"), "PDF_HEADER")];
    // Neighbouring objects are packed greedily up to the max.
    for obj in s.parts_named("obj") {
        match want.last_mut() {
            Some((_, size, pattern, _)) if pattern == "PDF_OBJECT" && *size + obj.size <= max => {
                *size += obj.size
            }
            _ => want.push(one(obj, "PDF_OBJECT")),
        }
    }
    want.push(one(part(&s, "xref"), "PDF_XREF"));
    assert_eq!(summary(&plan), want);
    assert!(plan.fallback.is_none());
}

#[test]
fn detected_but_unstructured_formats_are_cut_by_size() {
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
        assert_eq!(
            summary(&plan),
            pieces(0, bytes.len() as u64, MIB, FIXED_SIZE)
        );
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
    assert_eq!(plan.spans.last().unwrap().pattern, FIXED_SIZE);
}
