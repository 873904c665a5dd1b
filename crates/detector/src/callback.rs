//! Applying a worker's `chunk_compressed` event to the chunk's `metadata.json`.
//!
//! A worker reports back through GitHub's `repository_dispatch`; the workflow hands the
//! event file to [`apply_callback`]. The event comes from outside the repository, so it
//! is checked before anything is written: `chunk_path` must resolve (symbolic links
//! included) to a directory inside the base, the status change must be legal, and only
//! the changed keys are written back, atomically. Replaying an event is harmless: the
//! same `completed` event a second time changes nothing and succeeds.

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use chunk_model::layout::METADATA_FILE;
use chunk_model::{
    ChunkCompressed, ChunkMetadata, ModelError, Sha256Digest, Status, Timestamp, TransitionError,
};
use serde::Serialize;
use serde_json::Value;

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
        serde_json::from_slice(&bytes).map_err(|source| CallbackError::InvalidPayload {
            path: path.to_owned(),
            source,
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
    serde_json::from_value(value).map_err(|e| CallbackError::InvalidPayload {
        path: source.to_owned(),
        source: e,
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
    /// The payload is not JSON or lacks a field; serde's message names it.
    #[error("invalid callback payload in {path}: {source}")]
    InvalidPayload {
        /// The payload file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
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
    #[error("callback for {chunk_path} is {status} but has no {field}")]
    MissingField {
        /// The chunk.
        chunk_path: String,
        /// The payload's status.
        status: Status,
        /// The missing field.
        field: &'static str,
    },
    /// `chunk_path` does not lie inside the base directory.
    #[error("chunk_path {chunk_path:?} is outside {base}: {reason}")]
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
    /// `chunk_path` names no chunk directory.
    #[error("chunk_path {chunk_path:?}: no chunk directory at {path}")]
    ChunkNotFound {
        /// The path as given.
        chunk_path: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file system operation on the base or chunk failed.
    #[error("{path}: {source}")]
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
    /// Reading or writing the metadata failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Applies `payload` to its chunk under `base` at time `now`.
///
/// `completed` sets `status`, `compressed_at`, `upload_path`, `upload_hash`,
/// `worker_id` and `compression_stats`, and clears `lease_expires_at`; `failed` sets
/// `status`, `last_error`, `worker_id` and `compression_stats`, and clears the lease.
/// `attempts` is the dispatcher's to count and is left alone. Every other key, known or
/// not, is left exactly as it was.
pub fn apply_callback(
    base: &Path,
    payload: &ChunkCompressed,
    now: DateTime<Utc>,
) -> Result<CallbackOutcome, CallbackError> {
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
/// one without its upload.
pub fn check_payload(payload: &ChunkCompressed) -> Result<(), CallbackError> {
    if !matches!(payload.status, Status::Completed | Status::Failed) {
        return Err(CallbackError::UnsupportedStatus(payload.status));
    }
    if payload.status == Status::Completed {
        let missing = if payload.upload_path.is_none() {
            Some("upload_path")
        } else if payload.upload_hash.is_none() {
            Some("upload_hash")
        } else {
            None
        };
        if let Some(field) = missing {
            return Err(CallbackError::MissingField {
                chunk_path: payload.chunk_path.clone(),
                status: payload.status,
                field,
            });
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
/// chunk's `metadata.json`, refusing anything that is absolute, climbs with `..`, or
/// resolves through a symbolic link to somewhere outside the base. For many paths under
/// one base, [`ChunkResolver`] does the base's share of the work once.
pub fn resolve_metadata(base: &Path, chunk_path: &str) -> Result<PathBuf, CallbackError> {
    // The path's own faults come first, whatever the state of the base.
    check_relative(base, chunk_path)?;
    ChunkResolver::new(base)?.metadata_path(chunk_path)
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
/// [`resolve_metadata`] does, with the base's real path found once instead of per path.
#[derive(Debug, Clone)]
pub struct ChunkResolver {
    /// The base as given, for messages.
    base: PathBuf,
    /// The repository root as given (the base's parent): chunk paths are relative to it.
    root: PathBuf,
    /// The root with every symbolic link resolved.
    root_real: PathBuf,
    /// The base with every symbolic link resolved.
    base_real: PathBuf,
}

impl ChunkResolver {
    /// Finds the real paths of `base` and of its parent.
    pub fn new(base: &Path) -> Result<Self, CallbackError> {
        let (root, name) = split_base(base).map_err(|source| CallbackError::InvalidBase {
            base: base.to_owned(),
            source,
        })?;
        let io = |source| CallbackError::Io {
            path: base.to_owned(),
            source,
        };
        let base_real = fs::canonicalize(root.join(&name)).map_err(io)?;
        let root_real = fs::canonicalize(&root).map_err(io)?;
        Ok(ChunkResolver {
            base: base.to_owned(),
            root,
            root_real,
            base_real,
        })
    }

    /// The `metadata.json` of the chunk directory `chunk_path` names.
    ///
    /// Each component below the root is looked at without following links (one `lstat`
    /// each, instead of resolving the whole absolute path again); only a path that
    /// really goes through a symbolic link is resolved in full, and must still land
    /// inside the base.
    pub fn metadata_path(&self, chunk_path: &str) -> Result<PathBuf, CallbackError> {
        check_relative(&self.base, chunk_path)?;
        let candidate = self.root.join(chunk_path);
        let not_found = |path: PathBuf| CallbackError::ChunkNotFound {
            chunk_path: chunk_path.to_owned(),
            path,
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CallbackError::Io { path, source }
        };
        let mut real = self.root_real.clone();
        let mut last = None;
        for component in Path::new(chunk_path).components() {
            let Component::Normal(part) = component else {
                continue; // `.`; everything else was refused above
            };
            real.push(part);
            let meta = match fs::symlink_metadata(&real) {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(candidate)),
                Err(e) => return Err(io(&candidate)(e)),
            };
            if meta.file_type().is_symlink() {
                real = match fs::canonicalize(&candidate) {
                    Ok(real) => real,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(candidate)),
                    Err(e) => return Err(io(&candidate)(e)),
                };
                last = fs::metadata(&real).ok();
                break;
            }
            last = Some(meta);
        }
        if real == self.base_real || !real.starts_with(&self.base_real) {
            return Err(self.outside(chunk_path, format!("it resolves to {}", real.display())));
        }
        if !last.is_some_and(|meta| meta.is_dir()) {
            return Err(not_found(candidate));
        }
        let metadata = real.join(METADATA_FILE);
        match fs::symlink_metadata(&metadata) {
            Ok(m) if m.file_type().is_symlink() => Err(self.outside(
                chunk_path,
                format!("{} is a symbolic link", metadata.display()),
            )),
            Ok(_) => Ok(metadata),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(not_found(metadata)),
            Err(e) => Err(io(&metadata)(e)),
        }
    }

    fn outside(&self, chunk_path: &str, reason: String) -> CallbackError {
        CallbackError::OutsideBase {
            chunk_path: chunk_path.to_owned(),
            base: self.base.clone(),
            reason,
        }
    }
}

/// Refuses a chunk path that is empty, absolute or climbs with `..`, before any file
/// is looked at.
fn check_relative(base: &Path, chunk_path: &str) -> Result<(), CallbackError> {
    let outside = |reason: &str| CallbackError::OutsideBase {
        chunk_path: chunk_path.to_owned(),
        base: base.to_owned(),
        reason: reason.to_owned(),
    };
    if chunk_path.is_empty() {
        return Err(outside("it is empty"));
    }
    for component in Path::new(chunk_path).components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err(outside("it is an absolute path"));
            }
            Component::ParentDir => return Err(outside("it contains '..'")),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(())
}
