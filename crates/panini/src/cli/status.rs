//! `panini status [DIR]`: chunks and bytes per status, per file of the chunk tree.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chunk_model::layout::{self, parse_chunk_dir_name};
use chunk_model::{ChunkMetadata, Manifest, Status, json_file};

use super::common::human_bytes;
use super::common::outln;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root of the chunk tree (also accepted as a positional DIR, the older form).
    #[arg(long, value_name = "DIR", default_value = layout::DEFAULT_ROOT)]
    base: PathBuf,
    /// The older spelling of --base.
    #[arg(hide = true, conflicts_with = "base")]
    dir: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Chunks and bytes in one status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub chunks: u64,
    pub bytes: u64,
}

/// One file's chunk tree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileStatus {
    pub name: String,
    pub by_status: BTreeMap<Status, Tally>,
    /// Chunks whose `metadata.json` could not be read.
    pub invalid: u64,
    /// `total_chunks` from the manifest, when it reads.
    pub manifest_chunks: Option<u64>,
}

/// The whole tree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeStatus {
    pub files: Vec<FileStatus>,
    /// Every unreadable document: path and error.
    pub invalid: Vec<(PathBuf, String)>,
}

/// Reads every `<root>/<name>/chunk_*/metadata.json`. Directories whose names start with
/// `.` are a chunker's work in progress and are skipped.
pub fn scan(root: &Path) -> anyhow::Result<TreeStatus> {
    let mut tree = TreeStatus::default();
    let mut names = sorted_entries(root)
        .with_context(|| format!("cannot read the chunk tree {}", root.display()))?;
    names.retain(|(name, path)| !name.starts_with('.') && path.is_dir());
    for (name, dir) in names {
        let mut file = FileStatus {
            name,
            ..FileStatus::default()
        };
        let manifest_path = dir.join(layout::MANIFEST_FILE);
        if manifest_path.exists() {
            match json_file::read::<Manifest>(&manifest_path) {
                Ok(manifest) => file.manifest_chunks = Some(manifest.total_chunks),
                Err(e) => tree.invalid.push((manifest_path.clone(), e.to_string())),
            }
        }
        let chunks =
            sorted_entries(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for (chunk_name, chunk_dir) in chunks {
            if parse_chunk_dir_name(&chunk_name).is_none() {
                continue;
            }
            let meta_path = chunk_dir.join(layout::METADATA_FILE);
            match json_file::read::<ChunkMetadata>(&meta_path) {
                Ok(meta) => {
                    let tally = file.by_status.entry(meta.status).or_default();
                    tally.chunks += 1;
                    tally.bytes += meta.size;
                }
                Err(e) => {
                    file.invalid += 1;
                    tree.invalid.push((meta_path, e.to_string()));
                }
            }
        }
        if file.manifest_chunks.is_none()
            && !manifest_path.exists()
            && (file.invalid > 0 || !file.by_status.is_empty())
        {
            tree.invalid.push((
                manifest_path,
                "missing, yet the file has chunks: its cut did not finish, or the manifest \
                 was removed; chunk the file again (`panini chunk --force` replaces them)"
                    .into(),
            ));
        }
        tree.files.push(file);
    }
    Ok(tree)
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = args.dir.as_ref().unwrap_or(&args.base);
    let tree = scan(root)?;
    for (path, error) in &tree.invalid {
        eprintln!("invalid: {}: {error}", path.display());
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&to_json(root, &tree))?);
    } else {
        print_table(&tree);
    }
    Ok(())
}

fn to_json(root: &Path, tree: &TreeStatus) -> serde_json::Value {
    let tally_json = |by: &BTreeMap<Status, Tally>| -> serde_json::Value {
        Status::ALL
            .iter()
            .map(|s| {
                let t = by.get(s).copied().unwrap_or_default();
                (
                    s.as_str().to_owned(),
                    serde_json::json!({ "chunks": t.chunks, "bytes": t.bytes }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let files: Vec<_> = tree
        .files
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "chunks": f.by_status.values().map(|t| t.chunks).sum::<u64>(),
                "bytes": f.by_status.values().map(|t| t.bytes).sum::<u64>(),
                "by_status": tally_json(&f.by_status),
                "invalid": f.invalid,
                "manifest_total_chunks": f.manifest_chunks,
            })
        })
        .collect();
    let invalid: Vec<_> = tree
        .invalid
        .iter()
        .map(|(path, error)| serde_json::json!({ "path": path, "error": error }))
        .collect();
    serde_json::json!({
        "root": root,
        "files": files,
        "totals": tally_json(&totals(tree)),
        "invalid_count": tree.invalid.len(),
        "invalid": invalid,
    })
}

fn totals(tree: &TreeStatus) -> BTreeMap<Status, Tally> {
    let mut all = BTreeMap::<Status, Tally>::new();
    for f in &tree.files {
        for (s, t) in &f.by_status {
            let a = all.entry(*s).or_default();
            a.chunks += t.chunks;
            a.bytes += t.bytes;
        }
    }
    all
}

fn print_table(tree: &TreeStatus) {
    let width = tree
        .files
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(4)
        .max(5);
    let header: Vec<String> = Status::ALL
        .iter()
        .map(|s| format!("{:>20}", s.as_str()))
        .collect();
    outln!("{:width$} {} {:>8}", "FILE", header.join(""), "INVALID");
    let row = |name: &str, by: &BTreeMap<Status, Tally>, invalid: u64| {
        let cells: Vec<String> = Status::ALL
            .iter()
            .map(|s| {
                let t = by.get(s).copied().unwrap_or_default();
                format!("{:>20}", format!("{} ({})", t.chunks, human_bytes(t.bytes)))
            })
            .collect();
        outln!("{name:width$} {} {invalid:>8}", cells.join(""));
    };
    for f in &tree.files {
        row(&f.name, &f.by_status, f.invalid);
        if let Some(total) = f.manifest_chunks {
            let found: u64 = f.by_status.values().map(|t| t.chunks).sum::<u64>() + f.invalid;
            if found != total {
                outln!(
                    "{:width$}   (manifest lists {total} chunks, {found} found)",
                    ""
                );
            }
        }
    }
    row("TOTAL", &totals(tree), tree.invalid.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree exactly as the Python chunker wrote it (local time without zone,
    /// `dependencies`, nulls, a field Panini does not know), plus a chunk already
    /// completed, a broken metadata file and an in-progress hidden directory.
    #[test]
    fn counts_a_python_tree_and_reports_invalid_metadata() {
        let root = tempfile::tempdir().unwrap();
        let movie = root.path().join("movie");
        let python_meta = |id: u64, size: u64, status: &str| {
            format!(
                r#"{{"chunk_id": {id}, "offset": {off}, "size": {size}, "original_hash": "{hash}", "pattern_type": "ISOBMFF_MDAT_MEDIA", "dependencies": [], "grammar_id": "mp4_v1", "status": "{status}", "created_at": "2025-11-13T14:02:11.123456", "compression_status": null, "dispatched_at": null, "compressed_at": null, "worker_id": null, "legacy_field": 1}}"#,
                off = id * 1000,
                hash = "ab".repeat(32)
            )
        };
        for (id, size, status) in [
            (0, 100, "pending"),
            (1, 200, "pending"),
            (2, 300, "completed"),
        ] {
            let dir = movie.join(format!("chunk_{id:04}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("metadata.json"), python_meta(id, size, status)).unwrap();
        }
        let broken = movie.join("chunk_0003");
        fs::create_dir_all(&broken).unwrap();
        fs::write(
            broken.join("metadata.json"),
            r#"{"chunk_id": 3, "status": "lost"}"#,
        )
        .unwrap();
        fs::write(
            movie.join("manifest.json"),
            r#"{"base_name": "movie", "total_chunks": 4, "created_at": "2025-11-13T14:02:11.123456", "grammar_id": "mp4_v1", "chunks": []}"#,
        )
        .unwrap();
        fs::create_dir_all(root.path().join(".movie.tmp-x1/chunk_0000")).unwrap();

        let tree = scan(root.path()).unwrap();
        assert_eq!(tree.files.len(), 1);
        let f = &tree.files[0];
        assert_eq!(
            f.by_status[&Status::Pending],
            Tally {
                chunks: 2,
                bytes: 300
            }
        );
        assert_eq!(
            f.by_status[&Status::Completed],
            Tally {
                chunks: 1,
                bytes: 300
            }
        );
        assert_eq!(f.invalid, 1);
        assert_eq!(f.manifest_chunks, Some(4));
        assert_eq!(tree.invalid.len(), 1);
        assert!(tree.invalid[0].0.ends_with("chunk_0003/metadata.json"));
        let json = to_json(root.path(), &tree);
        assert_eq!(json["totals"]["pending"]["bytes"], 300);
        assert_eq!(json["invalid_count"], 1);
    }

    #[test]
    fn reads_what_the_chunker_writes() {
        let root = tempfile::tempdir().unwrap();
        let input = root.path().join("clip.bin");
        fs::write(&input, vec![7u8; 3 << 20]).unwrap();
        let output = root.path().join("pending_compression");
        chunker::chunk_file(&input, &chunker::ChunkOptions::new(&output)).unwrap();
        let tree = scan(&output).unwrap();
        assert_eq!(tree.files[0].name, "clip");
        assert_eq!(
            tree.files[0].by_status[&Status::Pending],
            Tally {
                chunks: 3,
                bytes: 3 << 20
            }
        );
        assert!(tree.invalid.is_empty());
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let err = scan(Path::new("/nonexistent/panini-root")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/panini-root"));
    }
}
