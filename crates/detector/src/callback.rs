//! Applying a worker's `chunk_compressed` event to the chunk's `metadata.json`.
//!
//! A worker reports back through GitHub's `repository_dispatch`; the workflow hands the
//! event file to [`apply_callback`]. The event comes from outside the repository, so it
//! is checked before anything is written: `chunk_path` must resolve (symbolic links
//! included) to a directory inside the base whose `metadata.json` is a regular file, not
//! a link (`chunk_model::chunk_path`, the check the worker makes too), a `completed`
//! event must be about this chunk's content (its `original_hash` is the chunk's, and its
//! `upload_path` is the chunk object key of that hash), the status change must be legal,
//! and only the changed keys are written back, atomically, under the tree's lock.
//! Replaying an event is harmless: the same `completed` event a second time changes
//! nothing and succeeds.
//!
//! Error messages quote the payload's text escaped ([`crate::actions::escape_data`] or
//! `{:?}`), never raw: they are printed in the callback job's log, where a line break
//! followed by `::error` would be read as a workflow command.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use chunk_model::chunk_path::{ChunkPath, ChunkPathError, ChunkPathFault, TreeRoot};
use chunk_model::layout::METADATA_FILE;
use chunk_model::object_keys::{self, parse_chunk_object};
use chunk_model::tree_lock::{self, TreeLock, TreeLockError, Wait};
use chunk_model::{
    ChunkCompressed, ChunkMetadata, ModelError, Sha256Digest, Status, Timestamp, TransitionError,
};
use serde::Serialize;
use serde_json::Value;

use crate::actions::escape_data;
use crate::config::split_base;

/// The key under which a worker's free-form `stats` are kept in `metadata.json`.
pub const STATS_FIELD: &str = "compression_stats";

/// The event type a callback must carry when it comes as a full event file.
pub const EVENT_TYPE: &str = "chunk_compressed";

/// Reads a `chunk_compressed` payload from `path`: either the payload object itself or
/// a whole GitHub `repository_dispatch` event (`$GITHUB_EVENT_PATH`) with it under
/// `client_payload`.
pub fn read_payload(path: &Path) -> Result<ChunkCompressed, CallbackError> {
    let bytes = fs::read(path).map_err(|source| CallbackError::ReadPayload {
        path: path.to_owned(),
        source,
    })?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|error| CallbackError::InvalidPayload {
            path: path.to_owned(),
            error,
        })?;
    payload_from_value(path, value)
}

/// Interprets a parsed payload or event; `source` names it in errors.
pub fn payload_from_value(
    source: &Path,
    mut value: Value,
) -> Result<ChunkCompressed, CallbackError> {
    if let Some(event) = value.as_object_mut()
        && let Some(payload) = event.remove("client_payload")
    {
        // In an event file `action` is the dispatch's event_type.
        if let Some(action) = event.get("action").and_then(Value::as_str)
            && action != EVENT_TYPE
        {
            return Err(CallbackError::WrongEventType {
                path: source.to_owned(),
                action: action.to_owned(),
            });
        }
        value = payload;
    }
    serde_json::from_value(value).map_err(|error| CallbackError::InvalidPayload {
        path: source.to_owned(),
        error,
    })
}

/// What applying a callback did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackOutcome {
    /// The metadata file concerned (resolved, inside the base).
    pub metadata_path: PathBuf,
    /// The change.
    pub change: Change,
}

/// The change a callback made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The status moved and the fields were written.
    Applied {
        /// Status before.
        from: Status,
        /// Status after.
        to: Status,
    },
    /// The chunk already had this outcome; nothing was written.
    AlreadyApplied {
        /// The chunk's (unchanged) status.
        status: Status,
    },
}

/// Why a callback was refused. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The payload file cannot be read.
    #[error("cannot read callback payload {path}: {source}")]
    ReadPayload {
        /// The payload file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The payload is not JSON or lacks a field; serde's message names it. The message
    /// quotes the payload's text, so it is shown escaped, and the serde error is not a
    /// `source` (error chains print sources raw).
    #[error("invalid callback payload in {path}: {}", escape_data(&.error.to_string()))]
    InvalidPayload {
        /// The payload file.
        path: PathBuf,
        /// serde's error (line, column, and the offending text).
        error: serde_json::Error,
    },
    /// The event file is for another event type.
    #[error("{path}: event type {action:?} is not {EVENT_TYPE:?}")]
    WrongEventType {
        /// The event file.
        path: PathBuf,
        /// The event's `action`.
        action: String,
    },
    /// The payload's status is neither `completed` nor `failed`.
    #[error("callback status {0} is not accepted (expected completed or failed)")]
    UnsupportedStatus(Status),
    /// A field the status requires is absent.
    #[error("callback for {chunk_path:?} is {status} but has no {field}")]
    MissingField {
        /// The chunk.
        chunk_path: String,
        /// The payload's status.
        status: Status,
        /// The missing field.
        field: &'static str,
    },
    /// `chunk_path` does not lie inside the base directory: by its grammar (empty,
    /// absolute, `..`, a NUL or a backslash), through a symbolic link, or because its
    /// `metadata.json` is a symbolic link.
    #[error("chunk_path {chunk_path:?} is outside {base}: {}", escape_data(.reason))]
    OutsideBase {
        /// The path as given.
        chunk_path: String,
        /// The base directory.
        base: PathBuf,
        /// How it escapes.
        reason: String,
    },
    /// The base directory cannot be used (no name, unreadable).
    #[error("base {base}: {source}")]
    InvalidBase {
        /// The base directory.
        base: PathBuf,
        /// Why.
        #[source]
        source: crate::DetectError,
    },
    /// `chunk_path` names no chunk directory, or one without a regular `metadata.json`.
    #[error(
        "chunk_path {chunk_path:?}: no chunk directory with its metadata at {}",
        escape_data(&.path.display().to_string())
    )]
    ChunkNotFound {
        /// The path as given.
        chunk_path: String,
        /// What is missing, or is not a directory or a regular file.
        path: PathBuf,
    },
    /// A file system operation on the base or chunk failed.
    #[error("{}: {source}", escape_data(&.path.display().to_string()))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The state machine forbids the change.
    #[error("{path}: {source}")]
    Transition {
        /// The metadata file.
        path: PathBuf,
        /// The illegal transition.
        #[source]
        source: TransitionError,
    },
    /// The chunk is already completed with a different upload.
    #[error(
        "{path}: already completed with upload {existing_path:?} ({existing_hash}); \
         the callback says {incoming_path:?} ({incoming_hash})"
    )]
    Conflict {
        /// The metadata file.
        path: PathBuf,
        /// What the metadata records.
        existing_path: Option<String>,
        /// What the metadata records.
        existing_hash: String,
        /// What the callback says.
        incoming_path: Option<String>,
        /// What the callback says.
        incoming_hash: String,
    },
    /// A `completed` callback's `original_hash` is not the chunk's: the object it
    /// reports holds other content.
    #[error(
        "{path}: the callback's original_hash {found} is not the chunk's original_hash \
         {expected}; refusing to mark it completed"
    )]
    OriginalHashMismatch {
        /// The metadata file.
        path: PathBuf,
        /// The chunk's `original_hash`, from its metadata.
        expected: Sha256Digest,
        /// The callback's `original_hash`.
        found: Sha256Digest,
    },
    /// A `completed` callback's `upload_path` is not the object key of this chunk's
    /// content (`chunks/<original_hash>.<codec>`).
    #[error("callback for {chunk_path:?}: upload_path {upload_path:?} {reason}")]
    InvalidUploadPath {
        /// The chunk, as the payload names it.
        chunk_path: String,
        /// The payload's `upload_path`.
        upload_path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another run holds the chunk tree's lock (or this thread does already).
    #[error(transparent)]
    Locked(#[from] TreeLockError),
    /// Reading or writing the metadata failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Applies `payload` to its chunk under `base` at time `now`, holding the tree's lock
/// ([`TreeLock`], waiting at most [`tree_lock::DEFAULT_WAIT`] for another run) while it
/// reads and writes the metadata.
///
/// `completed` sets `status`, `compressed_at`, `upload_path`, `upload_hash`,
/// `worker_id` and `compression_stats`, and clears `lease_expires_at`; `failed` sets
/// `status`, `last_error`, `worker_id` and `compression_stats`, and clears the lease.
/// `attempts` is the dispatcher's to count and is left alone. Every other key, known or
/// not, is left exactly as it was.
///
/// A run that holds the lock already (a pipeline looping over detect, dispatch and
/// sync) calls [`apply_callback_locked`] instead: taking it again from the same thread
/// is refused ([`TreeLockError::HeldByThisThread`]) rather than waiting forever.
pub fn apply_callback(
    base: &Path,
    payload: &ChunkCompressed,
    now: DateTime<Utc>,
) -> Result<CallbackOutcome, CallbackError> {
    // A payload that is refused anyway need not wait for the lock.
    check_payload(payload)?;
    let lock = TreeLock::acquire(base, Wait::Timeout(tree_lock::DEFAULT_WAIT))?;
    apply_callback_locked(&lock, payload, now)
}

/// [`apply_callback`] for a caller that holds the lock of the tree the payload is for;
/// the base is the lock's.
pub fn apply_callback_locked(
    lock: &TreeLock,
    payload: &ChunkCompressed,
    now: DateTime<Utc>,
) -> Result<CallbackOutcome, CallbackError> {
    let base = lock.base();
    check_payload(payload)?;
    let metadata_path = resolve_metadata(base, &payload.chunk_path)?;
    let change = chunk_model::json_file::update(&metadata_path, |meta: &mut ChunkMetadata| {
        apply_to_metadata(meta, payload, &metadata_path, now)
    })?;
    Ok(CallbackOutcome {
        metadata_path,
        change,
    })
}

/// Refuses a payload whose status is neither `completed` nor `failed`, or a `completed`
/// one without its upload and original hash, or whose `upload_path` is not a chunk
/// object key made from its `original_hash` (`../../etc/passwd`, another chunk's key).
/// Whether that hash is the chunk's own is for [`apply_to_metadata`], which has the
/// chunk's metadata.
pub fn check_payload(payload: &ChunkCompressed) -> Result<(), CallbackError> {
    if !matches!(payload.status, Status::Completed | Status::Failed) {
        return Err(CallbackError::UnsupportedStatus(payload.status));
    }
    if payload.status == Status::Completed {
        let missing = |field| CallbackError::MissingField {
            chunk_path: payload.chunk_path.clone(),
            status: payload.status,
            field,
        };
        let upload_path = payload
            .upload_path
            .as_deref()
            .ok_or_else(|| missing("upload_path"))?;
        if payload.upload_hash.is_none() {
            return Err(missing("upload_hash"));
        }
        let original = payload
            .original_hash
            .ok_or_else(|| missing("original_hash"))?;
        let invalid = |reason: String| CallbackError::InvalidUploadPath {
            chunk_path: payload.chunk_path.clone(),
            upload_path: upload_path.to_owned(),
            reason,
        };
        match parse_chunk_object(upload_path) {
            None => {
                return Err(invalid(format!(
                    "is not a chunk object key ({}<sha256>.<codec>)",
                    object_keys::CHUNKS_PREFIX
                )));
            }
            Some((named, _)) if named != original => {
                return Err(invalid(format!(
                    "is the object of chunk {named}, not of the callback's original_hash \
                     {original}"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The change [`apply_callback`] makes, on metadata in memory: for callers that write
/// many chunks' metadata in one batch (`json_file::update_many`). `payload` must have
/// passed [`check_payload`]; `path` names the metadata file in errors.
pub fn apply_to_metadata(
    meta: &mut ChunkMetadata,
    payload: &ChunkCompressed,
    path: &Path,
    now: DateTime<Utc>,
) -> Result<Change, CallbackError> {
    // A completion is accepted only for this chunk's content: `check_payload` tied the
    // upload key to the payload's hash, and here that hash must be the chunk's own.
    if payload.status == Status::Completed
        && let Some(found) = payload.original_hash
        && found != meta.original_hash
    {
        return Err(CallbackError::OriginalHashMismatch {
            path: path.to_owned(),
            expected: meta.original_hash,
            found,
        });
    }
    let from = meta.status;
    if from == payload.status {
        if from == Status::Completed
            && (meta.upload_path != payload.upload_path || meta.upload_hash != payload.upload_hash)
        {
            let hash = |h: &Option<Sha256Digest>| {
                h.as_ref()
                    .map_or_else(|| "no hash".to_owned(), |h| h.to_hex())
            };
            return Err(CallbackError::Conflict {
                path: path.to_owned(),
                existing_path: meta.upload_path.clone(),
                existing_hash: hash(&meta.upload_hash),
                incoming_path: payload.upload_path.clone(),
                incoming_hash: hash(&payload.upload_hash),
            });
        }
        return Ok(Change::AlreadyApplied { status: from });
    }
    meta.status =
        from.transition_to(payload.status)
            .map_err(|source| CallbackError::Transition {
                path: path.to_owned(),
                source,
            })?;
    meta.lease_expires_at = None;
    if let Some(worker) = &payload.worker_id {
        meta.worker_id = Some(worker.clone());
    }
    if !payload.stats.is_null() {
        meta.extra
            .insert(STATS_FIELD.to_owned(), payload.stats.clone());
    }
    if payload.status == Status::Completed {
        meta.compressed_at = Some(Timestamp::from_utc(now));
        meta.upload_path.clone_from(&payload.upload_path);
        meta.upload_hash = payload.upload_hash;
    } else {
        let worker = payload.worker_id.as_deref().unwrap_or("unknown worker");
        meta.last_error = Some(
            payload
                .error
                .clone()
                .unwrap_or_else(|| format!("{worker} reported failure without a reason")),
        );
    }
    Ok(Change::Applied {
        from,
        to: meta.status,
    })
}

/// Resolves `chunk_path` (relative to the base's parent, the repository root) to the
/// chunk's `metadata.json` with `chunk_model::chunk_path`, the check the worker uses too:
/// it refuses a path that is empty, absolute, climbs with `..` or holds a NUL or a
/// backslash, one that resolves (symbolic links included) to anything but a directory
/// strictly inside the base, and a `metadata.json` that is a symbolic link or not a
/// regular file. For many paths under one base, [`ChunkResolver`] does the base's share
/// of the work once.
pub fn resolve_metadata(base: &Path, chunk_path: &str) -> Result<PathBuf, CallbackError> {
    // The path's own faults come first, whatever the state of the base.
    let parsed = parse(base, chunk_path)?;
    ChunkResolver::new(base)?.resolve(&parsed)
}

/// [`resolve_metadata`] for many chunk paths under `base`: one [`ChunkResolver`] for
/// all of them, or, when the base itself cannot be resolved, that error for each path.
pub fn metadata_resolver(base: &Path) -> impl Fn(&str) -> Result<PathBuf, CallbackError> + '_ {
    let resolver = ChunkResolver::new(base);
    move |chunk_path| match &resolver {
        Ok(resolver) => resolver.metadata_path(chunk_path),
        Err(_) => resolve_metadata(base, chunk_path),
    }
}

/// Resolves chunk paths to `metadata.json` files under one base, as
/// [`resolve_metadata`] does, with the real paths of the base and of the repository root
/// found once instead of per path.
#[derive(Debug, Clone)]
pub struct ChunkResolver {
    /// The base as given, for messages.
    base: PathBuf,
    /// Chunk paths resolve under the base's parent and must stay inside the base.
    tree: TreeRoot,
}

impl ChunkResolver {
    /// Finds the real paths of `base` and of its parent.
    pub fn new(base: &Path) -> Result<Self, CallbackError> {
        let (root, name) = split_base(base).map_err(|source| CallbackError::InvalidBase {
            base: base.to_owned(),
            source,
        })?;
        let tree = TreeRoot::with_bound(&root, &root.join(&name)).map_err(|e| match e {
            ModelError::Io { source, .. } => CallbackError::Io {
                path: base.to_owned(),
                source,
            },
            other => CallbackError::Model(other),
        })?;
        Ok(ChunkResolver {
            base: base.to_owned(),
            tree,
        })
    }

    /// The `metadata.json` of the chunk directory `chunk_path` names (its real path).
    pub fn metadata_path(&self, chunk_path: &str) -> Result<PathBuf, CallbackError> {
        self.resolve(&parse(&self.base, chunk_path)?)
    }

    /// [`metadata_path`](Self::metadata_path) for many chunk paths, in order, with the
    /// same answer for each, but each directory above the chunks looked at once per
    /// call (`TreeRoot::resolve_files`): two `lstat`s a chunk instead of one per
    /// component. For a batch that one holder of the tree's lock works on.
    pub fn metadata_paths<'a>(
        &self,
        chunk_paths: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Result<PathBuf, CallbackError>> {
        let parsed: Vec<Result<ChunkPath, CallbackError>> = chunk_paths
            .into_iter()
            .map(|chunk_path| parse(&self.base, chunk_path))
            .collect();
        let mut resolved = self
            .tree
            .resolve_files(parsed.iter().filter_map(|p| p.as_ref().ok()), METADATA_FILE)
            .into_iter();
        parsed
            .into_iter()
            .map(|p| {
                p.and_then(|_| {
                    resolved
                        .next()
                        .expect("one answer per parsed path")
                        .map_err(|e| refused(&self.base, e))
                })
            })
            .collect()
    }

    fn resolve(&self, chunk_path: &ChunkPath) -> Result<PathBuf, CallbackError> {
        self.tree
            .resolve_file(chunk_path, METADATA_FILE)
            .map_err(|e| refused(&self.base, e))
    }
}

/// Checks the grammar of `chunk_path`, before any file is looked at.
fn parse(base: &Path, chunk_path: &str) -> Result<ChunkPath, CallbackError> {
    ChunkPath::parse(chunk_path).map_err(|e| refused(base, e))
}

/// A refused chunk path as a callback error: a path that does not stay inside the base
/// (by its grammar, a symbolic link, or a linked `metadata.json`) is
/// [`CallbackError::OutsideBase`]; one that finds no chunk there is
/// [`CallbackError::ChunkNotFound`].
fn refused(base: &Path, error: ChunkPathError) -> CallbackError {
    let ChunkPathError { path, fault } = error;
    match fault {
        ChunkPathFault::Missing { at: found }
        | ChunkPathFault::NotADirectory { at: found }
        | ChunkPathFault::NotAFile { file: found } => CallbackError::ChunkNotFound {
            chunk_path: path,
            path: found,
        },
        ChunkPathFault::Io { at, source } => CallbackError::Io { path: at, source },
        reason => CallbackError::OutsideBase {
            chunk_path: path,
            base: base.to_owned(),
            reason: reason.to_string(),
        },
    }
}
