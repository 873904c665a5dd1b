//! Recording dispatch outcomes in `metadata.json`, atomically, touching only the keys
//! that change, many deliveries per batch (`chunk_model::json_file::update_many`: one
//! flush to disk for the whole batch).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chunk_model::{ChunkInfo, ChunkMetadata, ModelError, Status, Timestamp, TransitionError};
use detector::SkipReason;
use serde::Serialize;

/// Why a chunk's metadata was not updated.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// `chunk_path` does not resolve to a chunk inside the base.
    #[error(transparent)]
    Resolve(#[from] detector::CallbackError),
    /// Reading or writing the file failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The chunk's status does not allow the change (it was completed meanwhile, …).
    #[error("{path}: {source}")]
    Transition {
        /// The metadata file.
        path: String,
        /// The illegal step.
        #[source]
        source: TransitionError,
    },
}

/// A chunk of the list that was not sent: read under the tree's lock, its metadata says
/// another run sent it, or it was completed, since the list was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The chunk.
    pub chunk_path: String,
    /// What its metadata says now: `completed`, or `leased` to a worker another run sent
    /// it to.
    pub reason: SkipReason,
}

/// Splits `chunks` into those to send, in their order, and those another run has dealt
/// with since `listed_at`, reading each chunk's metadata under `base` now.
///
/// A chunk list is a snapshot: two runs that listed the same chunks would each send all
/// of them. The dispatcher calls this while it holds the tree's lock, so a chunk that is
/// `completed`, or `queued`/`processing` with a `dispatched_at` from `listed_at` on (sent
/// by a run that held the lock meanwhile), is left out. Chunks dispatched before the list
/// was made were in it on purpose (an expired lease, a forced scan) and are sent. A
/// chunk whose metadata cannot be read is kept: sending it goes as before, and
/// recording its outcome reports the problem.
pub fn recheck(
    base: &Path,
    chunks: Vec<ChunkInfo>,
    listed_at: DateTime<Utc>,
) -> (Vec<ChunkInfo>, Vec<Skipped>) {
    let resolver = Resolver::new(base);
    // On a few threads, each resolving a run of the list (chunks of one file share its
    // directory) and reading what it resolved.
    let verdicts = chunk_model::fs_batch::map_parts(chunks.iter().collect(), |part| {
        let paths = resolver.resolve(part.iter().map(|c| c.chunk_path.as_str()));
        paths
            .into_iter()
            .map(|path| {
                let path = path.ok()?;
                let bytes = std::fs::read(&path).ok()?;
                // The two fields first; a chunk is left out only when its whole metadata
                // reads and says so, as before.
                let quick: DispatchFields = chunk_model::json_file::parse(&path, &bytes).ok()?;
                skip_reason(quick.status, quick.dispatched_at.as_ref(), listed_at)?;
                let meta: ChunkMetadata = chunk_model::json_file::parse(&path, &bytes).ok()?;
                skip_reason(meta.status, meta.dispatched_at.as_ref(), listed_at)
            })
            .collect()
    });
    let mut send = Vec::with_capacity(chunks.len());
    let mut skipped = Vec::new();
    for (chunk, verdict) in chunks.into_iter().zip(verdicts) {
        match verdict {
            Some(reason) => skipped.push(Skipped {
                chunk_path: chunk.chunk_path,
                reason,
            }),
            None => send.push(chunk),
        }
    }
    (send, skipped)
}

/// The fields of `metadata.json` that [`recheck`] decides by. Reading just these skips
/// building the whole document for each chunk: a document that gives a whole
/// [`ChunkMetadata`] gives these two with the same values, so when they say "send", the
/// whole would too, and when they say "skip", the whole document is read to confirm.
#[derive(serde::Deserialize)]
struct DispatchFields {
    status: Status,
    #[serde(default)]
    dispatched_at: Option<Timestamp>,
}

/// Why a chunk with this status and `dispatched_at` is no longer to be sent by a run
/// that listed it at `listed_at`; `None` when it is.
fn skip_reason(
    status: Status,
    dispatched_at: Option<&Timestamp>,
    listed_at: DateTime<Utc>,
) -> Option<SkipReason> {
    match status {
        Status::Completed => Some(SkipReason::Completed),
        Status::Queued | Status::Processing
            if dispatched_at.is_some_and(|at| at.utc() >= listed_at) =>
        {
            Some(SkipReason::Leased)
        }
        _ => None,
    }
}

/// Finds the `metadata.json` of chunk paths under one base, many at a time
/// (`detector::ChunkResolver::metadata_paths`: each file's directory looked at once per
/// call, not once per chunk). When the base itself cannot be resolved, each path gets
/// the error `detector::resolve_metadata` gives it.
struct Resolver<'a> {
    base: &'a Path,
    resolver: Option<detector::ChunkResolver>,
}

impl<'a> Resolver<'a> {
    fn new(base: &'a Path) -> Self {
        Self {
            base,
            resolver: detector::ChunkResolver::new(base).ok(),
        }
    }

    /// One answer per chunk path, in order.
    fn resolve<'p>(
        &self,
        chunk_paths: impl IntoIterator<Item = &'p str>,
    ) -> Vec<Result<PathBuf, detector::CallbackError>> {
        match &self.resolver {
            Some(resolver) => resolver.metadata_paths(chunk_paths),
            None => chunk_paths
                .into_iter()
                .map(|path| detector::resolve_metadata(self.base, path))
                .collect(),
        }
    }
}

/// Walks `meta` to `to` through the legal steps: `failed`, `queued` and `processing`
/// pass through `pending` on the way to `queued`, and `pending` passes through `queued`
/// on the way to `failed`. Each step is checked by the state machine.
pub fn walk_to(meta: &mut ChunkMetadata, to: Status) -> Result<(), TransitionError> {
    use Status::*;
    let steps: &[Status] = match (meta.status, to) {
        (from, to) if from == to => &[],
        (Failed | Queued | Processing, Queued) => &[Pending, Queued],
        (Pending, Failed) => &[Queued, Failed],
        (Failed, Completed) => &[Pending, Queued, Completed],
        (Pending, Completed) => &[Queued, Completed],
        _ => std::slice::from_ref(match to {
            Pending => &Pending,
            Queued => &Queued,
            Processing => &Processing,
            Completed => &Completed,
            Failed => &Failed,
        }),
    };
    for &step in steps {
        meta.set_status(step)?;
    }
    Ok(())
}

/// What became of one delivery, as its chunks' metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A worker accepted the chunks at `at`: `queued`, `dispatched_at`, `worker_id`,
    /// `attempts + 1`, and a lease until `at + lease`.
    Accepted {
        /// The worker's name (`worker_id`).
        worker: String,
        /// When it answered `202`.
        at: DateTime<Utc>,
        /// How long the chunks stay leased to it.
        lease: Duration,
    },
    /// A worker refused the chunks for good: `last_error`, `attempts + 1`, and `failed`
    /// once `max_attempts` is reached.
    Refused {
        /// What the worker said.
        error: String,
        /// Attempts after which the chunk is `failed`.
        max_attempts: u32,
    },
    /// Nobody could take the request (every worker busy or down): `last_error` only. An
    /// outage is not the chunks' fault, so it costs no attempt.
    Undelivered {
        /// What the last try got.
        error: String,
    },
}

impl Outcome {
    /// Applies the outcome to one chunk's metadata. `Ok(true)`: the chunk is now
    /// `failed` (a refusal used up its attempts).
    fn apply(&self, meta: &mut ChunkMetadata) -> Result<bool, TransitionError> {
        match self {
            Outcome::Accepted { worker, at, lease } => {
                let expires = TimeDelta::from_std(*lease)
                    .ok()
                    .and_then(|lease| at.checked_add_signed(lease))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                walk_to(meta, Status::Queued)?;
                meta.dispatched_at = Some(Timestamp::from_utc(*at));
                meta.worker_id = Some(worker.clone());
                meta.attempts = meta.attempts.saturating_add(1);
                meta.lease_expires_at = Some(Timestamp::from_utc(expires));
                Ok(false)
            }
            Outcome::Refused {
                error,
                max_attempts,
            } => {
                meta.attempts = meta.attempts.saturating_add(1);
                meta.last_error = Some(error.clone());
                if meta.attempts >= *max_attempts && meta.status != Status::Completed {
                    walk_to(meta, Status::Failed)?;
                    meta.lease_expires_at = None;
                    return Ok(true);
                }
                Ok(false)
            }
            Outcome::Undelivered { error } => {
                meta.last_error = Some(error.clone());
                Ok(false)
            }
        }
    }
}

/// Records the outcomes of many deliveries as one batch: every changed `metadata.json`
/// is written atomically and the whole batch is made durable with one flush
/// (`json_file::update_many`), so the cost of flushing is shared by every delivery that
/// finished while the previous batch was being written.
///
/// `deliveries` pairs each delivery's chunk paths with its outcome. Returns, per
/// delivery and per chunk in order, whether the chunk is now `failed`, or why its
/// metadata was not updated. A chunk named by several deliveries is changed once per
/// delivery, in order, each change seeing the one before.
pub fn record_outcomes(
    base: &Path,
    deliveries: &[(&[String], &Outcome)],
) -> Vec<Vec<Result<bool, MetadataError>>> {
    let mut all = Resolver::new(base)
        .resolve(
            deliveries
                .iter()
                .flat_map(|(paths, _)| paths.iter().map(String::as_str)),
        )
        .into_iter();
    let resolved: Vec<Vec<Result<PathBuf, MetadataError>>> = deliveries
        .iter()
        .map(|(paths, _)| {
            paths
                .iter()
                .map(|_| Ok(all.next().expect("one answer per chunk path")?))
                .collect()
        })
        .collect();
    // `update_many` calls `change` for a file's occurrences in order (and for none of
    // them when the file cannot be read or parsed), so a queue per file says which
    // delivery each call belongs to.
    let mut owners: HashMap<&Path, VecDeque<&Outcome>> = HashMap::new();
    let mut paths: Vec<&Path> = Vec::new();
    for ((_, outcome), chunks) in deliveries.iter().zip(&resolved) {
        for path in chunks.iter().filter_map(|r| r.as_ref().ok()) {
            owners.entry(path).or_default().push_back(outcome);
            paths.push(path);
        }
    }
    let mut written =
        chunk_model::json_file::update_many(&paths, |path, meta: &mut ChunkMetadata| {
            let outcome = owners
                .get_mut(path)
                .and_then(VecDeque::pop_front)
                .expect("one owner per occurrence of a path");
            outcome
                .apply(meta)
                .map_err(|source| MetadataError::Transition {
                    path: path.display().to_string(),
                    source,
                })
        })
        .into_iter();
    resolved
        .into_iter()
        .map(|chunks| {
            chunks
                .into_iter()
                .map(|r| r.and_then(|_| written.next().expect("one result per resolved path")))
                .collect()
        })
        .collect()
}

/// [`record_outcomes`] for one delivery.
fn record_one(
    base: &Path,
    chunk_paths: &[String],
    outcome: &Outcome,
) -> Vec<Result<bool, MetadataError>> {
    record_outcomes(base, &[(chunk_paths, outcome)])
        .pop()
        .unwrap_or_default()
}

/// Workers accepted the chunks at `now`: `queued`, `dispatched_at`, `worker_id`,
/// `attempts + 1`, and a lease until `now + lease`. One result per chunk.
pub fn record_accepted(
    base: &Path,
    chunk_paths: &[String],
    worker: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Vec<Result<(), MetadataError>> {
    let outcome = Outcome::Accepted {
        worker: worker.to_owned(),
        at: now,
        lease,
    };
    record_one(base, chunk_paths, &outcome)
        .into_iter()
        .map(|r| r.map(|_| ()))
        .collect()
}

/// A worker refused the chunks for good: `last_error`, `attempts + 1`, and `failed` once
/// `max_attempts` is reached. One result per chunk: whether it is now `failed`.
pub fn record_refused(
    base: &Path,
    chunk_paths: &[String],
    error: &str,
    max_attempts: u32,
) -> Vec<Result<bool, MetadataError>> {
    let outcome = Outcome::Refused {
        error: error.to_owned(),
        max_attempts,
    };
    record_one(base, chunk_paths, &outcome)
}

/// The request could not be delivered (every worker busy or down): `last_error` only.
/// An outage is not the chunks' fault, so it costs no attempt. One result per chunk.
pub fn record_undelivered(
    base: &Path,
    chunk_paths: &[String],
    error: &str,
) -> Vec<Result<(), MetadataError>> {
    let outcome = Outcome::Undelivered {
        error: error.to_owned(),
    };
    record_one(base, chunk_paths, &outcome)
        .into_iter()
        .map(|r| r.map(|_| ()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: Status) -> ChunkMetadata {
        let mut m = ChunkMetadata::new_pending(
            0,
            0,
            1,
            chunk_model::Sha256Digest::of(b"x"),
            "FIXED_SIZE",
            None,
            Timestamp::now(),
        );
        m.status = status;
        m
    }

    /// A chunk tree of `n` pending chunks under `root/pending_compression/img`; returns
    /// the base and the chunk paths.
    fn tree(root: &Path, n: u64) -> (PathBuf, Vec<String>) {
        let base = root.join("pending_compression");
        let paths = (0..n)
            .map(|i| {
                let chunk_path = format!("pending_compression/img/chunk_{i:03}");
                let dir = root.join(&chunk_path);
                std::fs::create_dir_all(&dir).unwrap();
                let mut m = meta(Status::Pending);
                m.chunk_id = i;
                chunk_model::json_file::write_atomic(&dir.join("metadata.json"), &m).unwrap();
                chunk_path
            })
            .collect();
        (base, paths)
    }

    fn read(base: &Path, chunk_path: &str) -> ChunkMetadata {
        chunk_model::json_file::read(&detector::resolve_metadata(base, chunk_path).unwrap())
            .unwrap()
    }

    #[test]
    fn a_delivery_is_recorded_chunk_by_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (base, mut paths) = tree(dir.path(), 4);
        // 1: malformed; 2: completed meanwhile; 4: outside the base.
        let malformed = detector::resolve_metadata(&base, &paths[1]).unwrap();
        std::fs::write(&malformed, "{").unwrap();
        let completed = detector::resolve_metadata(&base, &paths[2]).unwrap();
        let mut m = meta(Status::Completed);
        m.chunk_id = 2;
        chunk_model::json_file::write_atomic(&completed, &m).unwrap();
        paths.push("../elsewhere".to_owned());

        let now = Utc::now();
        let results = record_accepted(&base, &paths, "w1", now, Duration::from_secs(60));

        assert_eq!(results.len(), 5);
        assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
        assert!(
            matches!(
                &results[1],
                Err(MetadataError::Model(ModelError::Json { .. }))
            ),
            "{:?}",
            results[1]
        );
        assert!(
            matches!(&results[2], Err(MetadataError::Transition { path, .. }) if path.contains("chunk_002")),
            "{:?}",
            results[2]
        );
        assert!(
            matches!(&results[4], Err(MetadataError::Resolve(_))),
            "{:?}",
            results[4]
        );
        for i in [0, 3] {
            let m = read(&base, &paths[i]);
            assert_eq!(m.status, Status::Queued);
            assert_eq!(m.attempts, 1);
            assert_eq!(m.worker_id.as_deref(), Some("w1"));
            assert_eq!(m.dispatched_at, Some(Timestamp::from_utc(now)));
        }
        assert_eq!(std::fs::read_to_string(&malformed).unwrap(), "{");
        assert_eq!(read(&base, &paths[2]).status, Status::Completed);

        let refused = record_refused(&base, &paths[..1], "HTTP 401", 2);
        assert!(
            refused[0].as_ref().unwrap(),
            "second attempt of two fails it"
        );
        let m = read(&base, &paths[0]);
        assert_eq!((m.status, m.attempts), (Status::Failed, 2));
        assert_eq!(m.last_error.as_deref(), Some("HTTP 401"));

        let undelivered = record_undelivered(&base, &paths[3..4], "all busy");
        assert!(undelivered[0].is_ok());
        let m = read(&base, &paths[3]);
        assert_eq!((m.status, m.attempts), (Status::Queued, 1));
        assert_eq!(m.last_error.as_deref(), Some("all busy"));
    }

    #[test]
    fn outcomes_of_many_deliveries_are_recorded_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (base, paths) = tree(dir.path(), 5);
        let malformed = detector::resolve_metadata(&base, &paths[4]).unwrap();
        std::fs::write(&malformed, "[").unwrap();
        let now = Utc::now();
        let accepted = Outcome::Accepted {
            worker: "w1".into(),
            at: now,
            lease: Duration::from_secs(60),
        };
        let refused = Outcome::Refused {
            error: "HTTP 400".into(),
            max_attempts: 1,
        };
        let undelivered = Outcome::Undelivered {
            error: "all busy".into(),
        };
        let later = Outcome::Accepted {
            worker: "w2".into(),
            at: now,
            lease: Duration::from_secs(60),
        };
        let batch: Vec<(&[String], &Outcome)> = vec![
            (&paths[0..2], &accepted),
            (&paths[2..3], &refused),
            (&paths[3..5], &undelivered),
            // chunk 0 again, in a later delivery: it sees the first change.
            (&paths[0..1], &later),
        ];
        let results = record_outcomes(&base, &batch);

        assert_eq!(
            results.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 1, 2, 1]
        );
        assert!(
            matches!(results[0][..], [Ok(false), Ok(false)]),
            "{results:?}"
        );
        assert!(matches!(results[1][..], [Ok(true)]), "{results:?}");
        assert!(matches!(results[2][0], Ok(false)), "{results:?}");
        assert!(
            matches!(
                &results[2][1],
                Err(MetadataError::Model(ModelError::Json { .. }))
            ),
            "{results:?}"
        );
        assert!(matches!(results[3][..], [Ok(false)]), "{results:?}");

        let m = read(&base, &paths[0]);
        assert_eq!((m.status, m.attempts), (Status::Queued, 2));
        assert_eq!(m.worker_id.as_deref(), Some("w2"));
        let m = read(&base, &paths[1]);
        assert_eq!((m.status, m.attempts), (Status::Queued, 1));
        let m = read(&base, &paths[2]);
        assert_eq!((m.status, m.attempts), (Status::Failed, 1));
        assert!(m.worker_id.is_none() && m.dispatched_at.is_none());
        let m = read(&base, &paths[3]);
        assert_eq!((m.status, m.attempts), (Status::Pending, 0));
        assert_eq!(m.last_error.as_deref(), Some("all busy"));
        assert_eq!(std::fs::read_to_string(&malformed).unwrap(), "[");
    }

    #[test]
    fn walks_only_through_legal_steps() {
        for from in [
            Status::Pending,
            Status::Failed,
            Status::Queued,
            Status::Processing,
        ] {
            let mut m = meta(from);
            walk_to(&mut m, Status::Queued).unwrap();
            assert_eq!(m.status, Status::Queued, "from {from}");
        }
        let mut m = meta(Status::Pending);
        walk_to(&mut m, Status::Failed).unwrap();
        assert_eq!(m.status, Status::Failed);
        let mut m = meta(Status::Completed);
        assert!(walk_to(&mut m, Status::Queued).is_err());
    }
}
