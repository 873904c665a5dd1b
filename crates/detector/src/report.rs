//! What a scan found, and the files it is written to.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use chunk_model::{ChunkInfo, Priority, Status, json_file};
use serde::Serialize;

use crate::{DetectError, SelectReason};

/// One chunk to dispatch, with why it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelectedChunk {
    /// What goes into `chunks_to_process.json`.
    pub info: ChunkInfo,
    /// The chunk's status when scanned.
    pub status: Status,
    /// Dispatch attempts so far.
    pub attempts: u32,
    /// Which rule selected it.
    pub reason: SelectReason,
}

/// A metadata file that could not be used; the scan went on without it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct InvalidFile {
    /// The file (or directory), relative to the repository root.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for InvalidFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// How many chunks each rule left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SkipCounts {
    /// Already `completed`.
    pub completed: usize,
    /// `queued`/`processing` under an unexpired lease.
    pub leased: usize,
    /// `failed` with no attempts left.
    pub attempts_exhausted: usize,
}

/// The result of a scan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanReport {
    /// The base directory as configured.
    pub base: PathBuf,
    /// The base directory did not exist (nothing to do, not an error: a repository
    /// without pending chunks has no such directory).
    pub base_missing: bool,
    /// Metadata files matched by the patterns, valid or not.
    pub scanned: usize,
    /// Chunks to dispatch, in dispatch order.
    pub selected: Vec<SelectedChunk>,
    /// Chunks left out by the rules.
    pub skipped: SkipCounts,
    /// Files that could not be used, sorted by path.
    pub invalid: Vec<InvalidFile>,
}

impl ScanReport {
    /// The list written to `chunks_to_process.json`, in dispatch order.
    pub fn chunk_infos(&self) -> Vec<&ChunkInfo> {
        self.selected.iter().map(|s| &s.info).collect()
    }

    /// Writes the chunk list to `path` atomically (an empty list when nothing was found,
    /// so a later step never reads a stale one).
    pub fn write_chunks_file(&self, path: &Path) -> Result<(), DetectError> {
        let bytes = chunks_json(&self.chunk_infos()).map_err(|source| {
            DetectError::WriteOutput(chunk_model::ModelError::Json {
                path: path.to_owned(),
                source,
            })
        })?;
        json_file::write_bytes_atomic(path, &bytes).map_err(DetectError::WriteOutput)
    }

    /// The step outputs in `GITHUB_OUTPUT` syntax: `chunks_found`, `chunks_count`,
    /// `invalid_count`, one `key=value` line each.
    pub fn github_output(&self) -> String {
        format!(
            "chunks_found={}\nchunks_count={}\ninvalid_count={}\n",
            !self.selected.is_empty(),
            self.selected.len(),
            self.invalid.len()
        )
    }

    /// Appends [`ScanReport::github_output`] to the file GitHub Actions named in
    /// `GITHUB_OUTPUT`, in one write so that the lines never interleave with another
    /// writer's.
    pub fn append_github_output(&self, path: &Path) -> Result<(), DetectError> {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut file| file.write_all(self.github_output().as_bytes()))
            .map_err(|source| DetectError::GithubOutput {
                path: path.to_owned(),
                source,
            })
    }

    /// `Err` when any file was invalid: what `--strict` turns into a failing exit.
    pub fn check_strict(&self) -> Result<(), DetectError> {
        match self.invalid.first() {
            None => Ok(()),
            Some(first) => Err(DetectError::Strict {
                count: self.invalid.len(),
                first: first.to_string(),
            }),
        }
    }

    /// A human-readable account of the scan.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

/// `infos` as [`json_file::write_atomic`] writes them (pretty-printed, a final newline),
/// the elements serialized in parallel: on 100,000 chunks the serial serialization was an
/// eighth of a scan's CPU and all of it on one core.
///
/// An element pretty-printed alone is the element pretty-printed inside the list, less
/// one level of indentation after each line break (a JSON string never holds a raw line
/// break, so every `\n` is one), which is what is added back here.
pub(crate) fn chunks_json(infos: &[&ChunkInfo]) -> Result<Vec<u8>, serde_json::Error> {
    use rayon::prelude::*;
    if infos.is_empty() {
        return Ok(b"[]\n".to_vec());
    }
    let parts = infos
        .par_chunks(1024)
        .map(|part| {
            let mut out = Vec::with_capacity(part.len() * 320);
            let mut one = Vec::with_capacity(512);
            for info in part {
                one.clear();
                serde_json::to_writer_pretty(&mut one, &InfoOut::from(*info))?;
                out.extend_from_slice(b",\n  ");
                for line in one.split_inclusive(|&b| b == b'\n') {
                    out.extend_from_slice(line);
                    if line.ends_with(b"\n") {
                        out.extend_from_slice(b"  ");
                    }
                }
            }
            Ok(out)
        })
        .collect::<Result<Vec<Vec<u8>>, serde_json::Error>>()?;
    let mut bytes = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 8);
    bytes.push(b'[');
    for (i, part) in parts.iter().enumerate() {
        // The first element's separator, less its comma, is the list's opening line break.
        bytes.extend_from_slice(if i == 0 { &part[1..] } else { part });
    }
    bytes.extend_from_slice(b"\n]\n");
    Ok(bytes)
}

/// [`ChunkInfo`] as it serializes (a test checks the bytes are the same), with the digest
/// written through a table rather than `Display`'s `{:02x}` per byte, which was a
/// twentieth of a scan's CPU.
#[derive(Serialize)]
struct InfoOut<'a> {
    chunk_path: &'a str,
    chunk_id: u64,
    pattern_type: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<Hex>,
    base_dir: &'a str,
    is_keyframe: bool,
    priority: Priority,
    #[serde(skip_serializing_if = "Option::is_none")]
    staged_object: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a chunk_model::ExtraFields,
}

impl<'a> From<&'a ChunkInfo> for InfoOut<'a> {
    fn from(info: &'a ChunkInfo) -> Self {
        InfoOut {
            chunk_path: &info.chunk_path,
            chunk_id: info.chunk_id,
            pattern_type: &info.pattern_type,
            size: info.size,
            hash: info.hash.map(|digest| Hex(digest.0)),
            base_dir: &info.base_dir,
            is_keyframe: info.is_keyframe,
            priority: info.priority,
            staged_object: info.staged_object.as_deref(),
            extra: &info.extra,
        }
    }
}

/// A digest's bytes, serialized as lowercase hex.
struct Hex([u8; 32]);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 15)];
        }
        // Only ASCII digits were written.
        serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// Displays a [`ScanReport`] for people (see [`ScanReport::summary`]).
#[derive(Debug)]
pub struct Summary<'a>(&'a ScanReport);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = self.0;
        if report.base_missing {
            writeln!(
                f,
                "{} does not exist: no chunks to process",
                report.base.display()
            )?;
        }
        let mut by_priority: BTreeMap<Priority, usize> = BTreeMap::new();
        let mut by_reason: BTreeMap<SelectReason, usize> = BTreeMap::new();
        for chunk in &report.selected {
            *by_priority.entry(chunk.info.priority).or_default() += 1;
            *by_reason.entry(chunk.reason).or_default() += 1;
        }
        let list = |map: Vec<(String, usize)>| {
            map.into_iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "scanned {} metadata file(s) under {}: {} chunk(s) to process",
            report.scanned,
            report.base.display(),
            report.selected.len()
        )?;
        if !report.selected.is_empty() {
            let priorities = by_priority
                .into_iter()
                .map(|(k, v)| (format!("{k:?}").to_lowercase(), v))
                .collect();
            let reasons = by_reason
                .into_iter()
                .map(|(k, v)| (format!("{k:?}").to_lowercase(), v))
                .collect();
            writeln!(f, "  by priority: {}", list(priorities))?;
            writeln!(f, "  by reason:   {}", list(reasons))?;
        }
        let s = report.skipped;
        writeln!(
            f,
            "  skipped: {} completed, {} leased, {} out of attempts",
            s.completed, s.leased, s.attempts_exhausted
        )?;
        writeln!(f, "  invalid: {}", report.invalid.len())?;
        for invalid in &report.invalid {
            writeln!(f, "    {invalid}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chunk_model::{ChunkInfo, ExtraFields, Priority};

    use super::chunks_json;

    #[test]
    fn chunk_list_is_written_as_json_file_writes_it() {
        let mut extra = ExtraFields::new();
        extra.insert(
            "nested".into(),
            serde_json::json!({"a": [1, {"b": "x\ny"}], "c": []}),
        );
        let infos: Vec<ChunkInfo> = (0..2500u64)
            .map(|i| ChunkInfo {
                chunk_path: format!("pending_compression/f\"{i}/chunk_{i:04}"),
                chunk_id: i,
                pattern_type: "PNG_IDAT".into(),
                size: i * 7,
                hash: (i % 3 != 0).then(|| chunk_model::Sha256Digest::of(&i.to_le_bytes())),
                base_dir: "pending_compression".into(),
                is_keyframe: i % 2 == 0,
                priority: [
                    Priority::Keyframe,
                    Priority::Header,
                    Priority::Large,
                    Priority::Normal,
                ][i as usize % 4],
                staged_object: (i % 4 == 1).then(|| format!("staging/{i:064x}")),
                extra: if i % 5 == 0 {
                    extra.clone()
                } else {
                    ExtraFields::new()
                },
            })
            .collect();
        for n in [0, 1, 2, 1024, 1025, 2500] {
            let refs: Vec<&ChunkInfo> = infos[..n].iter().collect();
            let mut expected = serde_json::to_vec_pretty(&refs).unwrap();
            expected.push(b'\n');
            assert_eq!(
                String::from_utf8(chunks_json(&refs).unwrap()).unwrap(),
                String::from_utf8(expected).unwrap(),
                "{n} chunks"
            );
        }
    }
}
