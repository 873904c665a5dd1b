//! Deterministic generators of realistic sample files.
//!
//! One job: given a spec and a seed, produce the bytes of a structurally valid file of a
//! known format (PNG, MP4/MOV, JPEG, WebM/MKV, AVI, WAV, WebP, PDF, a text log, random
//! binary), always the same bytes for the same spec. Tests, benchmarks and the demo
//! pipeline use them instead of checked-in binaries, so sizes can go up to gigabytes
//! and every test states the structure it relies on.
//!
//! Every generator returns a [`Sample`]: the bytes plus the [`Part`]s it laid out
//! (top-level structures with their offsets and sizes) and, for video, the offsets of
//! the keyframe samples. Tests compare a parser's view of the file with this ground
//! truth instead of re-deriving it.
//!
//! This crate knows nothing about chunking, the chunk tree or the pipeline.

mod avi;
mod ebml;
mod jpeg;
mod mp4;
mod pdf;
mod png;
mod riff;
mod text;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub use avi::{AviSpec, avi};
pub use ebml::{WebmSpec, webm};
pub use jpeg::{JpegSpec, jpeg};
pub use mp4::{Mp4Spec, mp4};
pub use pdf::{PdfSpec, pdf};
pub use png::{PngSpec, png};
pub use riff::{WavSpec, WebpSpec, wav, webp};
pub use text::text_log;

/// A generated file and the ground truth of its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The structures the generator wrote, in file order; they need not cover every
    /// byte (nested structures are listed where a test needs them).
    pub parts: Vec<Part>,
    /// Absolute offsets of keyframe samples (video formats only), ascending.
    pub keyframes: Vec<u64>,
}

impl Sample {
    /// The parts named `name`, in file order.
    pub fn parts_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Part> + 'a {
        self.parts.iter().filter(move |part| part.name == name)
    }
}

/// One structure of a generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The format's own name for it (`IDAT`, `moov`, `Cluster`, `00dc`, `scan`, …).
    pub name: String,
    /// Offset of its first byte in the file.
    pub offset: u64,
    /// Its length in bytes, headers included.
    pub size: u64,
}

/// Appends bytes to a buffer while recording parts.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    pub(crate) bytes: Vec<u8>,
    pub(crate) parts: Vec<Part>,
}

impl Builder {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            parts: Vec::new(),
        }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Appends `bytes` as a part named `name`.
    pub(crate) fn part(&mut self, name: &str, bytes: &[u8]) {
        self.mark(name, self.pos(), bytes.len() as u64);
        self.bytes.extend_from_slice(bytes);
    }

    pub(crate) fn mark(&mut self, name: &str, offset: u64, size: u64) {
        self.parts.push(Part {
            name: name.to_owned(),
            offset,
            size,
        });
    }

    pub(crate) fn finish(self, keyframes: Vec<u64>) -> Sample {
        Sample {
            bytes: self.bytes,
            parts: self.parts,
            keyframes,
        }
    }
}

/// The generators' random source: ChaCha-based, so a seed gives the same bytes on every
/// platform and run.
pub(crate) fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `len` random bytes: incompressible, like already-compressed media.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rng(seed).fill_bytes(&mut bytes);
    bytes
}

/// Writes a mixed set of sample files into `dir` (created if missing) whose sizes add up
/// to about `total_bytes`: a PNG with a large IDAT, an MP4 with a keyframe every 30
/// samples, a text log and random binary, with distinct stems (`photo`, `movie`,
/// `server`, `blob`) so their chunk trees do not collide. Returns their paths.
pub fn sample_set(dir: &Path, total_bytes: u64) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let quarter = (total_bytes / 4).max(1024) as usize;
    let files = [
        (
            "photo.png",
            png(&PngSpec::with_approx_size(quarter, 1)).bytes,
        ),
        (
            "movie.mp4",
            mp4(&Mp4Spec::with_approx_size(quarter, 2)).bytes,
        ),
        ("server.log", text_log(quarter, 3)),
        ("blob.bin", random_bytes(quarter, 4)),
    ];
    let mut paths = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        let path = dir.join(name);
        fs::write(&path, bytes)?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(random_bytes(1000, 7), random_bytes(1000, 7));
        assert_ne!(random_bytes(1000, 7), random_bytes(1000, 8));
    }

    #[test]
    fn sample_set_writes_four_files_near_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let paths = sample_set(dir.path(), 4 << 20).unwrap();
        assert_eq!(paths.len(), 4);
        let total: u64 = paths.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        assert!((3 << 20..6 << 20).contains(&total), "{total}");
    }
}
