//! Figures for comparing ways of cutting a file: how many chunks, how small, and how
//! many chunks an edit costs. For benchmarks and reports (`cargo xtask bench` puts
//! the default plan beside `split -b 1M` and a FastCDC-only baseline).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use chunk_model::Sha256Digest;
use fastcdc::v2020;

use crate::{ChunkerConfig, ChunkerError, Strategy, plan_file};

/// Chunks under this size are counted as small (each costs as much to track as a
/// large one).
pub const SMALL_CHUNK: u64 = 4096;

/// A way of cutting a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutter {
    /// This crate's plan with this configuration.
    Plan(ChunkerConfig),
    /// Every `n` bytes, as `split -b n` does.
    FixedSize(u64),
    /// FastCDC over the whole file, ignoring its structure, with minimum, average and
    /// maximum of a quarter, half and all of `max_chunk_size` (within FastCDC's limits).
    FastCdc {
        /// The largest chunk.
        max_chunk_size: u64,
    },
}

/// How a file is cut.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CutFigures {
    /// The file's size.
    pub bytes: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// Chunks per MiB of file.
    pub chunks_per_mib: f64,
    /// Chunks under [`SMALL_CHUNK`] bytes.
    pub small_chunks: u64,
    /// Mean chunk size in bytes.
    pub mean_chunk: u64,
}

/// What an edit costs: the edited file's chunks that are not chunks of the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EditFigures {
    /// Chunks of the edited file.
    pub chunks: u64,
    /// Of them, chunks the original did not have (to store again).
    pub changed: u64,
    /// Of them, chunks the original had (stored already).
    pub reused: u64,
}

/// The chunks' `(offset, size)` of the file at `path` cut by `cutter`.
pub fn cut(path: &Path, cutter: Cutter) -> Result<Vec<(u64, u64)>, ChunkerError> {
    match cutter {
        Cutter::Plan(config) => Ok(plan_file(path, &config)?
            .spans
            .iter()
            .map(|s| (s.offset, s.size))
            .collect()),
        Cutter::FixedSize(n) => {
            let config = ChunkerConfig {
                strategy: Strategy::Size,
                max_chunk_size: n,
                ..ChunkerConfig::default()
            };
            cut(path, Cutter::Plan(config))
        }
        Cutter::FastCdc { max_chunk_size } => {
            let max = max_chunk_size
                .clamp(u64::from(v2020::MAXIMUM_MIN), u64::from(v2020::MAXIMUM_MAX))
                as u32;
            let min = (max / 4).clamp(v2020::MINIMUM_MIN, v2020::MINIMUM_MAX);
            let avg = (max / 2).clamp(v2020::AVERAGE_MIN, v2020::AVERAGE_MAX);
            let file = open(path)?;
            let mut chunks = Vec::new();
            for chunk in v2020::StreamCDC::new(BufReader::new(file), min, avg, max) {
                let chunk = chunk.map_err(|e| read_error(path, e.into()))?;
                chunks.push((chunk.offset, chunk.length as u64));
            }
            Ok(chunks)
        }
    }
}

/// Chunk counts and sizes of the file at `path` cut by `cutter`.
pub fn cut_figures(path: &Path, cutter: Cutter) -> Result<CutFigures, ChunkerError> {
    let chunks = cut(path, cutter)?;
    let bytes: u64 = chunks.iter().map(|c| c.1).sum();
    let n = chunks.len() as u64;
    Ok(CutFigures {
        bytes,
        chunks: n,
        chunks_per_mib: n as f64 / (bytes as f64 / (1u64 << 20) as f64),
        small_chunks: chunks.iter().filter(|c| c.1 < SMALL_CHUNK).count() as u64,
        mean_chunk: bytes.checked_div(n).unwrap_or(0),
    })
}

/// How many of `edited`'s chunks `original` already had, both cut by `cutter`
/// (chunks compared by SHA-256, as the bucket stores them).
pub fn edit_figures(
    original: &Path,
    edited: &Path,
    cutter: Cutter,
) -> Result<EditFigures, ChunkerError> {
    let before: HashSet<Sha256Digest> = hashes(original, cutter)?.into_iter().collect();
    let after = hashes(edited, cutter)?;
    let reused = after.iter().filter(|h| before.contains(h)).count() as u64;
    Ok(EditFigures {
        chunks: after.len() as u64,
        changed: after.len() as u64 - reused,
        reused,
    })
}

fn hashes(path: &Path, cutter: Cutter) -> Result<Vec<Sha256Digest>, ChunkerError> {
    let chunks = cut(path, cutter)?;
    let mut file = open(path)?;
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(chunks.len());
    for (offset, size) in chunks {
        buf.resize(size as usize, 0);
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| read_error(path, e))?;
        out.push(Sha256Digest::of(&buf));
    }
    Ok(out)
}

fn open(path: &Path) -> Result<File, ChunkerError> {
    File::open(path).map_err(|source| ChunkerError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

fn read_error(path: &Path, source: std::io::Error) -> ChunkerError {
    ChunkerError::Read {
        path: path.to_owned(),
        source,
    }
}
