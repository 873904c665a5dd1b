//! The parallel walk over the chunk tree.
//!
//! Each directory is listed once and its subdirectories are walked in parallel (rayon);
//! directories no pattern can reach are never listed, and a chunk directory is not
//! listed at all when the patterns only want its `metadata.json` (the file is opened
//! directly). A tree that changes under the walk (a directory or file that vanished, a
//! chunk directory without metadata yet) is tolerated: what is gone is simply not there.
//!
//! Hidden entries (names starting with `.`) are skipped: they are the chunker's
//! in-progress directories and the temporary files of atomic writes. Symbolic links to
//! directories are never followed (reported instead); symbolic links to files are read.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use chrono::{DateTime, Utc};
use chunk_model::layout::DATA_FILE;
use chunk_model::object_keys;
use chunk_model::{ChunkInfo, ExtraFields};
use rayon::prelude::*;

use crate::config::split_base;
use crate::dirfd::{DirFd, FileStat, read_path, stat_path};
use crate::fast_meta;
use crate::patterns::{Patterns, State};
use crate::report::{InvalidFile, ScanReport, SelectedChunk, SkipCounts};
use crate::select::{Decision, SkipReason, decide_view, priority_of_view};
use crate::{DetectConfig, DetectError};

/// What the walk found at one matched file.
enum Found {
    Selected(Box<SelectedChunk>),
    Skipped(SkipReason),
    Invalid(InvalidFile),
}

struct Ctx<'a> {
    patterns: Patterns,
    config: &'a DetectConfig,
    now: DateTime<Utc>,
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Found {
    Found::Invalid(InvalidFile {
        path: path.into(),
        reason: reason.into(),
    })
}

/// Scans the chunk tree at `config.base` and applies the selection rules as of `now`.
///
/// Fails only on bad configuration or an unreadable base directory; every problem with
/// a single chunk is reported in [`ScanReport::invalid`] and the scan goes on. A missing
/// base directory is an empty report with [`ScanReport::base_missing`] set.
pub fn scan(config: &DetectConfig, now: DateTime<Utc>) -> Result<ScanReport, DetectError> {
    let (root, name) = split_base(&config.base)?;
    let base_dir = root.join(&name);
    let ctx = Ctx {
        patterns: Patterns::new(&config.include_patterns()?, &config.exclude)?,
        config,
        now,
    };
    let mut report = ScanReport {
        base: config.base.clone(),
        base_missing: false,
        scanned: 0,
        selected: Vec::new(),
        skipped: SkipCounts::default(),
        invalid: Vec::new(),
    };
    match fs::metadata(&base_dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(DetectError::InvalidBase {
                path: config.base.clone(),
                reason: "not a directory",
            });
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            report.base_missing = true;
            return Ok(report);
        }
        Err(source) => {
            return Err(DetectError::BaseUnreadable {
                path: config.base.clone(),
                source,
            });
        }
    }
    // Listing the base itself must work; below it, failures become invalid entries.
    fs::read_dir(&base_dir).map_err(|source| DetectError::BaseUnreadable {
        path: config.base.clone(),
        source,
    })?;

    let states = ctx.patterns.step(&ctx.patterns.start(), &name);
    let found = if states.is_empty() {
        Vec::new()
    } else if config.files.is_empty() {
        walk_dir(&ctx, &base_dir, &name, &states, None)
    } else {
        // The named trees only, each as the walk of the base would have reached it.
        config
            .files
            .par_iter()
            .filter(|file| is_one_component(file))
            .flat_map_iter(|file| {
                let rel = format!("{name}/{file}");
                walk_subdir(&ctx, &base_dir.join(file), &rel, &states, file, None)
            })
            .collect()
    };

    for item in found {
        match item {
            Found::Selected(chunk) => {
                report.scanned += 1;
                report.selected.push(*chunk);
            }
            Found::Skipped(reason) => {
                report.scanned += 1;
                let counts = &mut report.skipped;
                match reason {
                    SkipReason::Completed => counts.completed += 1,
                    SkipReason::Leased => counts.leased += 1,
                    SkipReason::AttemptsExhausted => counts.attempts_exhausted += 1,
                }
            }
            Found::Invalid(file) => {
                report.scanned += 1;
                report.invalid.push(file);
            }
        }
    }
    // The same tree always gives the same order, whatever order the threads finished in.
    report.selected.sort_by(|a, b| {
        (
            a.info.priority,
            &a.info.base_dir,
            a.info.chunk_id,
            &a.info.chunk_path,
        )
            .cmp(&(
                b.info.priority,
                &b.info.base_dir,
                b.info.chunk_id,
                &b.info.chunk_path,
            ))
    });
    report.invalid.sort();
    Ok(report)
}

/// Whether `name` names an entry of a directory (as a listing would give it), not a
/// path elsewhere or a hidden in-progress tree.
fn is_one_component(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\'])
}

/// A directory whose files are read: by path, or relative to its parent's open handle.
#[derive(Clone, Copy)]
struct At<'a> {
    dir: &'a Path,
    /// The parent directory, open, and this directory's name in it.
    parent: Option<(&'a DirFd, &'a str)>,
}

impl At<'_> {
    fn read(&self, name: &str, buf: &mut Vec<u8>, to_end: bool) -> std::io::Result<()> {
        match self.parent {
            Some((fd, me)) => fd.read(&format!("{me}/{name}"), buf, to_end),
            None => read_path(&self.dir.join(name), buf, to_end),
        }
    }

    fn stat(&self, name: &str) -> std::io::Result<FileStat> {
        match self.parent {
            Some((fd, me)) => fd.stat(&format!("{me}/{name}")),
            None => stat_path(&self.dir.join(name)),
        }
    }
}

/// Walks `dir` (at `rel` from the repository root) with the pattern states `states`;
/// `parent` is its parent directory's handle and its name there, when open.
fn walk_dir(
    ctx: &Ctx<'_>,
    dir: &Path,
    rel: &str,
    states: &[State],
    parent: Option<(&DirFd, &str)>,
) -> Vec<Found> {
    if let Some(names) = ctx.patterns.final_literals(states) {
        let at = At { dir, parent };
        return names
            .into_iter()
            .filter_map(|name| {
                let child_rel = format!("{rel}/{name}");
                if !ctx.patterns.is_selected_literal(states, &child_rel) {
                    return None;
                }
                visit_file(ctx, at, name, child_rel)
            })
            .collect();
    }

    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
        Err(e) => return vec![invalid(rel, format!("cannot list directory: {e}"))],
    };
    let mut found = Vec::new();
    let mut children = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                found.push(invalid(rel, format!("cannot list directory: {e}")));
                continue;
            }
        };
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            found.push(invalid(
                format!("{rel}/{}", file_name.to_string_lossy()),
                "name is not valid UTF-8; skipped",
            ));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // `file_type` comes from the directory listing; an entry that vanished since
        // is simply gone.
        if let Ok(file_type) = entry.file_type() {
            children.push((name.to_owned(), file_type));
        }
    }

    let handle = DirFd::open(dir);
    found.par_extend(children.into_par_iter().flat_map_iter(|(name, file_type)| {
        let child = dir.join(&name);
        let child_rel = format!("{rel}/{name}");
        if file_type.is_dir() {
            let parent = handle.as_ref().map(|fd| (fd, name.as_str()));
            walk_subdir(ctx, &child, &child_rel, states, &name, parent)
        } else if file_type.is_file() {
            file_if_selected(ctx, dir, &name, child_rel)
        } else if file_type.is_symlink() {
            visit_symlink(ctx, dir, child_rel, states, &name)
        } else {
            Vec::new()
        }
    }));
    found
}

fn walk_subdir(
    ctx: &Ctx<'_>,
    dir: &Path,
    rel: &str,
    states: &[State],
    name: &str,
    parent: Option<(&DirFd, &str)>,
) -> Vec<Found> {
    let next = ctx.patterns.step(states, name);
    if next.is_empty() || ctx.patterns.is_excluded_dir(rel) {
        return Vec::new();
    }
    walk_dir(ctx, dir, rel, &next, parent)
}

/// Visits the file `name` in `dir` (at `rel`) if the patterns select it.
fn file_if_selected(ctx: &Ctx<'_>, dir: &Path, name: &str, rel: String) -> Vec<Found> {
    if ctx.patterns.is_selected_file(&rel) {
        let at = At { dir, parent: None };
        visit_file(ctx, at, name, rel).into_iter().collect()
    } else {
        Vec::new()
    }
}

/// The symbolic link `name` in `dir` (at `rel`): files are read, directories reported.
fn visit_symlink(
    ctx: &Ctx<'_>,
    dir: &Path,
    rel: String,
    states: &[State],
    name: &str,
) -> Vec<Found> {
    match fs::metadata(dir.join(name)) {
        Ok(target) if target.is_dir() => {
            let reachable =
                !ctx.patterns.step(states, name).is_empty() && !ctx.patterns.is_excluded_dir(&rel);
            if reachable {
                vec![invalid(rel, "symbolic link to a directory; not followed")]
            } else {
                Vec::new()
            }
        }
        Ok(_) => file_if_selected(ctx, dir, name, rel),
        Err(e) if ctx.patterns.is_selected_file(&rel) => {
            vec![invalid(rel, format!("dangling symbolic link: {e}"))]
        }
        Err(_) => Vec::new(),
    }
}

/// Reads one matched `metadata.json` (`name` in the chunk directory `at`) and decides
/// about its chunk. `None` when the file is not there (a partial tree, or it vanished
/// during the walk).
fn visit_file(ctx: &Ctx<'_>, at: At<'_>, name: &str, rel: String) -> Option<Found> {
    thread_local! {
        /// The read buffer, reused from file to file (one per rayon thread).
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| visit_file_with(ctx, at, name, rel, buf))
}

fn visit_file_with(
    ctx: &Ctx<'_>,
    at: At<'_>,
    name: &str,
    rel: String,
    buf: &mut Vec<u8>,
) -> Option<Found> {
    let read = |buf: &mut Vec<u8>, to_end| match at.read(name, buf, to_end) {
        Ok(()) => None,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => Some(None),
        Err(e) => Some(Some(invalid(rel.as_str(), format!("cannot read: {e}")))),
    };
    if let Some(outcome) = read(buf, false) {
        return outcome;
    }
    let parsed = match fast_meta::parse(buf) {
        Ok(parsed) => parsed,
        Err(_) => {
            // The quick read may have stopped at a short read that was not the end.
            if let Some(outcome) = read(buf, true) {
                return outcome;
            }
            match fast_meta::parse(buf) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let field = match field_at(buf, e.line(), e.column()) {
                        Some(field) if e.is_data() => format!(" (field {field:?})"),
                        _ => String::new(),
                    };
                    return Some(invalid(
                        rel,
                        format!("not valid chunk metadata: {e}{field}"),
                    ));
                }
            }
        }
    };
    let meta = parsed.view();
    let reason = match decide_view(&meta, ctx.config, ctx.now) {
        Decision::Skip(reason) => return Some(Found::Skipped(reason)),
        Decision::Select(reason) => reason,
    };

    // Only chunks about to be dispatched need their bytes: a completed chunk's data may
    // legitimately have been cleaned up, and skipping the stat keeps the scan cheap.
    let chunk_path = rel.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
    let data_rel = || format!("{chunk_path}/{DATA_FILE}");
    // A staged chunk's bytes are in the bucket, not beside its metadata: the worker reads
    // and verifies them there. Its key must be the one its hash names, so a tree cannot
    // point a worker at another chunk's bytes.
    let staged_object = match meta.staged_object {
        Some(key) if object_keys::parse_staged_object(key) == Some(meta.original_hash) => {
            Some(key.to_owned())
        }
        Some(key) => {
            return Some(invalid(
                rel,
                format!(
                    "staged_object is {key:?}, not {:?}; not dispatched",
                    object_keys::staged_object(&meta.original_hash)
                ),
            ));
        }
        None => None,
    };
    if staged_object.is_none() {
        match at.stat(DATA_FILE) {
            Ok(m) if !m.is_file => return Some(invalid(data_rel(), "not a regular file")),
            Ok(m) if m.len != meta.size => {
                return Some(invalid(
                    data_rel(),
                    format!(
                        "is {} bytes but {rel} says size {}; not dispatched",
                        m.len, meta.size
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Some(invalid(
                    data_rel(),
                    format!("missing, but {rel} is {}; not dispatched", meta.status),
                ));
            }
            Err(e) => return Some(invalid(data_rel(), format!("cannot stat: {e}"))),
        }
    }

    let base_dir = chunk_path
        .rsplit_once('/')
        .map_or("", |(dir, _)| dir)
        .to_owned();
    Some(Found::Selected(Box::new(SelectedChunk {
        info: ChunkInfo {
            chunk_id: meta.chunk_id,
            pattern_type: meta.pattern_type.to_owned(),
            size: meta.size,
            hash: Some(meta.original_hash),
            base_dir,
            is_keyframe: meta.is_keyframe,
            priority: priority_of_view(&meta),
            staged_object,
            extra: ExtraFields::new(),
            chunk_path,
        },
        status: meta.status,
        attempts: meta.attempts,
        reason,
    })))
}

/// The top-level key whose value holds `line`:`column` (1-based, as serde_json reports
/// errors) in the JSON text `bytes`.
///
/// serde cannot name the field of a type error in a struct with flattened fields (it
/// buffers the document first), only its position; this recovers the name so that a
/// report says which field is wrong.
fn field_at(bytes: &[u8], line: usize, column: usize) -> Option<String> {
    let mut offset = 0;
    for _ in 1..line {
        offset += bytes.get(offset..)?.iter().position(|&b| b == b'\n')? + 1;
    }
    let end = (offset + column).min(bytes.len());
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let (mut string_start, mut last_string, mut key) = (0, None, None);
    for (i, &b) in bytes[..end].iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => {
                    in_string = false;
                    last_string = Some((string_start, i));
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i + 1;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' if depth == 1 => key = last_string,
            _ => {}
        }
    }
    let (start, stop) = key?;
    serde_json::from_slice(&bytes[start - 1..=stop]).ok()
}

#[cfg(test)]
mod tests {
    use super::field_at;

    #[test]
    fn finds_the_key_of_the_value_at_a_position() {
        let text = b"{\n  \"created_at\": \"2025-11-13T14:02:11\",\n  \"size\": \"big\",\n  \"x\": {\"a\": 1}\n}";
        assert_eq!(field_at(text, 2, 37).as_deref(), Some("created_at"));
        assert_eq!(field_at(text, 3, 15).as_deref(), Some("size"));
        assert_eq!(field_at(text, 4, 15).as_deref(), Some("x"));
        assert_eq!(field_at(b"[1]", 1, 2), None);
    }
}
