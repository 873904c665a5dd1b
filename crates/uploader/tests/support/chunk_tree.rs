//! Writes a chunk tree (`<root>/<name>/manifest.json`, `chunk_NNNN/data.bin`) the way the
//! chunker lays it out, for tests that upload from disk.

use std::path::Path;

use chunk_model::{Layout, Manifest, ManifestChunk, Sha256Digest, Timestamp};

/// Cuts `data` into `chunk_size` pieces under `root/name`; returns the manifest written.
pub fn write(
    root: &Path,
    name: &str,
    data: &[u8],
    chunk_size: usize,
    with_file_hash: bool,
) -> Manifest {
    let layout = Layout::new(root);
    let pieces: Vec<&[u8]> = data.chunks(chunk_size).collect();
    let total = pieces.len() as u64;
    let mut chunks = Vec::new();
    let mut offset = 0u64;
    for (id, piece) in pieces.iter().enumerate() {
        let dir = layout.chunk_dir(name, id as u64, total).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data.bin"), piece).unwrap();
        chunks.push(ManifestChunk {
            chunk_id: id as u64,
            offset,
            size: piece.len() as u64,
            hash: Sha256Digest::of(piece),
            pattern: "FIXED_SIZE".into(),
            is_keyframe: false,
            extra: Default::default(),
        });
        offset += piece.len() as u64;
    }
    let manifest = Manifest {
        base_name: name.to_owned(),
        total_chunks: total,
        created_at: Timestamp::now(),
        grammar_id: None,
        chunks,
        file_size: with_file_hash.then_some(data.len() as u64),
        file_hash: with_file_hash.then(|| Sha256Digest::of(data)),
        format: None,
        strategy: None,
        max_chunk_size: Some(chunk_size as u64),
        extra: Default::default(),
    };
    chunk_model::json_file::write_atomic(&layout.manifest_path(name).unwrap(), &manifest).unwrap();
    manifest
}

/// A CPU zstd-3 compressor, to store chunks with.
pub fn zstd() -> gpu_compress::Compressor {
    use gpu_compress::{CodecChoice, Compressor, CompressorConfig, EngineChoice};
    Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(chunk_model::Codec::Zstd),
        level: Some(3),
        engine: EngineChoice::Cpu,
        verify: false,
    })
    .unwrap()
}
