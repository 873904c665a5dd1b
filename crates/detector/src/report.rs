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
        json_file::write_atomic(path, &self.chunk_infos()).map_err(DetectError::WriteOutput)
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
