//! WebM / Matroska (EBML): EBML header, then a Segment holding SeekHead, Info, Tracks,
//! Clusters of SimpleBlocks, and Cues.

use rand::{Rng, RngCore};

use crate::{Builder, Sample, rng};

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const INFO: u32 = 0x1549_A966;
const TRACKS: u32 = 0x1654_AE6B;
const CLUSTER: u32 = 0x1F43_B675;
const CUES: u32 = 0x1C53_BB6B;

/// What [`webm`] generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebmSpec {
    /// `webm` or `matroska`.
    pub doc_type: String,
    /// Number of clusters.
    pub clusters: u32,
    /// SimpleBlocks per cluster; the first of each cluster is a keyframe.
    pub blocks_per_cluster: u32,
    /// Average frame payload in bytes.
    pub block_size: u32,
    /// Write the Segment and the Clusters with unknown size, as live encoders do.
    pub unknown_sizes: bool,
    /// Seed of the frame sizes and payloads.
    pub seed: u64,
}

impl WebmSpec {
    /// A WebM of about `bytes` in clusters of about 600 KiB.
    pub fn with_approx_size(bytes: usize, seed: u64) -> Self {
        let block_size = 20 * 1024;
        let blocks_per_cluster = 30;
        Self {
            doc_type: "webm".to_owned(),
            clusters: (bytes / (block_size * blocks_per_cluster)).max(1) as u32,
            blocks_per_cluster: blocks_per_cluster as u32,
            block_size: block_size as u32,
            unknown_sizes: false,
            seed,
        }
    }
}

/// Generates a WebM/MKV. Parts: `EBML`, `Segment` (its ID and size only), `SeekHead`,
/// `Info`, `Tracks`, each `Cluster`, `Cues`; [`Sample::keyframes`] holds the offsets
/// of the keyframe SimpleBlock elements.
pub fn webm(spec: &WebmSpec) -> Sample {
    let mut rng = rng(spec.seed);
    let header = element(
        EBML,
        &[
            uint(0x4286, 1),
            uint(0x42F7, 1),
            uint(0x42F2, 4),
            uint(0x42F3, 8),
            element(0x4282, spec.doc_type.as_bytes()),
            uint(0x4287, 4),
            uint(0x4285, 2),
        ]
        .concat(),
    );
    let info = element(
        INFO,
        &[
            uint(0x2A_D7B1, 1_000_000),
            element(0x4D80, b"panini-samples"),
            element(0x5741, b"panini-samples"),
            element(0x4489, &(f64::from(spec.clusters) * 1000.0).to_be_bytes()),
        ]
        .concat(),
    );
    let video = element(0xE0, &[uint(0xB0, 1920), uint(0xBA, 1080)].concat());
    let track = element(
        0xAE,
        &[
            uint(0xD7, 1),
            uint(0x73C5, 1),
            uint(0x83, 1),
            element(
                0x86,
                if spec.doc_type == "webm" {
                    b"V_VP9"
                } else {
                    b"V_MPEG4/ISO/AVC"
                },
            ),
            video,
        ]
        .concat(),
    );
    let tracks = element(TRACKS, &track);

    // Clusters, with the offsets of their keyframe blocks relative to the cluster.
    let mut clusters = Vec::with_capacity(spec.clusters as usize);
    for c in 0..spec.clusters {
        let mut body = uint(0xE7, u64::from(c) * 1000);
        let mut key_at = 0;
        for b in 0..spec.blocks_per_cluster {
            let base = spec.block_size.max(2);
            let len = rng.gen_range(base / 2..=base + base / 2) as usize;
            let mut block = Vec::with_capacity(len + 4);
            block.push(0x81); // track 1
            block.extend_from_slice(&((b * 33) as i16).to_be_bytes());
            block.push(if b == 0 { 0x80 } else { 0x00 });
            let at = block.len();
            block.resize(at + len, 0);
            rng.fill_bytes(&mut block[at..]);
            if b == 0 {
                key_at = body.len();
            }
            body.extend_from_slice(&element(0xA3, &block));
        }
        let cluster = if spec.unknown_sizes {
            unknown_size_element(CLUSTER, &body)
        } else {
            element(CLUSTER, &body)
        };
        let header_len = cluster.len() - body.len();
        clusters.push((cluster, header_len + key_at));
    }

    // Positions in SeekHead and Cues are relative to the Segment's data. The SeekHead's
    // size does not depend on the positions (they are written as 8-byte integers).
    let seek_head_len = seek_head(&[0; 4]).len() as u64;
    let info_pos = seek_head_len;
    let tracks_pos = info_pos + info.len() as u64;
    let mut cluster_pos = Vec::with_capacity(clusters.len());
    let mut at = tracks_pos + tracks.len() as u64;
    for (cluster, _) in &clusters {
        cluster_pos.push(at);
        at += cluster.len() as u64;
    }
    let cues_pos = at;
    let mut cue_points = Vec::new();
    for (c, pos) in cluster_pos.iter().enumerate() {
        let positions = element(0xB7, &[uint(0xF7, 1), uint(0xF1, *pos)].concat());
        cue_points.extend_from_slice(&element(
            0xBB,
            &[uint(0xB3, c as u64 * 1000), positions].concat(),
        ));
    }
    let cues = element(CUES, &cue_points);
    let seek = seek_head(&[
        info_pos,
        tracks_pos,
        cluster_pos.first().copied().unwrap_or(cues_pos),
        cues_pos,
    ]);
    let segment_len = cues_pos + cues.len() as u64;

    let mut out = Builder::with_capacity((segment_len + 64) as usize);
    out.part("EBML", &header);
    let mut segment_header = id_bytes(SEGMENT);
    if spec.unknown_sizes {
        segment_header.extend_from_slice(&UNKNOWN_SIZE);
    } else {
        segment_header.extend_from_slice(&size8(segment_len));
    }
    out.part("Segment", &segment_header);
    out.part("SeekHead", &seek);
    out.part("Info", &info);
    out.part("Tracks", &tracks);
    let mut keyframes = Vec::with_capacity(clusters.len());
    for (cluster, key_at) in &clusters {
        keyframes.push(out.pos() + *key_at as u64);
        out.part("Cluster", cluster);
    }
    out.part("Cues", &cues);
    out.finish(keyframes)
}

const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

fn seek_head(positions: &[u64; 4]) -> Vec<u8> {
    let ids = [INFO, TRACKS, CLUSTER, CUES];
    let mut body = Vec::new();
    for (id, pos) in ids.iter().zip(positions) {
        let seek = [
            element(0x53AB, &id_bytes(*id)),
            element(0x53AC, &pos.to_be_bytes()),
        ]
        .concat();
        body.extend_from_slice(&element(0x4DBB, &seek));
    }
    element(SEEK_HEAD, &body)
}

/// An element ID as written: its own length marker is part of the value.
fn id_bytes(id: u32) -> Vec<u8> {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}

/// An 8-byte size VINT.
fn size8(size: u64) -> [u8; 8] {
    let mut bytes = size.to_be_bytes();
    bytes[0] = 0x01;
    bytes
}

fn element(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = id_bytes(id);
    out.extend_from_slice(&size8(body.len() as u64));
    out.extend_from_slice(body);
    out
}

fn unknown_size_element(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = id_bytes(id);
    out.extend_from_slice(&UNKNOWN_SIZE);
    out.extend_from_slice(body);
    out
}

fn uint(id: u32, value: u64) -> Vec<u8> {
    element(id, &value.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_and_keyframes_are_simpleblocks() {
        for unknown_sizes in [false, true] {
            let s = webm(&WebmSpec {
                unknown_sizes,
                ..WebmSpec::with_approx_size(2 << 20, 5)
            });
            let total: u64 = s.parts.iter().map(|p| p.size).sum();
            assert_eq!(total, s.bytes.len() as u64);
            assert_eq!(s.parts_named("Cluster").count(), s.keyframes.len());
            for k in &s.keyframes {
                assert_eq!(s.bytes[*k as usize], 0xA3);
            }
        }
    }
}
