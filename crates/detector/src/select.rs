//! Which chunks are dispatchable, and in what order.

use chrono::{DateTime, TimeDelta, Utc};
use chunk_model::{ChunkInfo, ChunkMetadata, ExtraFields, Priority, Status};
use serde::Serialize;

use crate::fast_meta::View;
use crate::{DetectConfig, LARGE_CHUNK_BYTES};

/// Why a chunk was selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectReason {
    /// `status == "pending"`.
    Pending,
    /// `failed` with `attempts` below the maximum.
    Retry,
    /// `queued` or `processing`, and the worker's lease ran out.
    LeaseExpired,
    /// Not `completed`, and the scan was forced.
    Forced,
}

/// Why a chunk was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Already compressed and stored.
    Completed,
    /// A worker holds it and its lease has not run out.
    Leased,
    /// `failed` and out of attempts.
    AttemptsExhausted,
}

/// What the rules say about one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Dispatch it.
    Select(SelectReason),
    /// Leave it.
    Skip(SkipReason),
}

/// Applies the selection rules to one chunk at time `now`.
///
/// A `queued`/`processing` chunk's lease ends at `lease_expires_at`, else at
/// `dispatched_at + config.lease`; one with neither has no owner on record and is
/// treated as expired, so that a chunk can never be stuck forever.
pub fn decide(meta: &ChunkMetadata, config: &DetectConfig, now: DateTime<Utc>) -> Decision {
    decide_view(&View::from(meta), config, now)
}

/// [`decide`] on the fields a scan parsed.
pub(crate) fn decide_view(meta: &View<'_>, config: &DetectConfig, now: DateTime<Utc>) -> Decision {
    let natural = match meta.status {
        Status::Completed => return Decision::Skip(SkipReason::Completed),
        Status::Pending => Ok(SelectReason::Pending),
        Status::Failed if meta.attempts < config.max_attempts => Ok(SelectReason::Retry),
        Status::Failed => Err(SkipReason::AttemptsExhausted),
        Status::Queued | Status::Processing => {
            if lease_expired(meta, config, now) {
                Ok(SelectReason::LeaseExpired)
            } else {
                Err(SkipReason::Leased)
            }
        }
    };
    match natural {
        Ok(reason) => Decision::Select(reason),
        Err(_) if config.force => Decision::Select(SelectReason::Forced),
        Err(skip) => Decision::Skip(skip),
    }
}

fn lease_expired(meta: &View<'_>, config: &DetectConfig, now: DateTime<Utc>) -> bool {
    let expires = match (meta.lease_expires_at, meta.dispatched_at) {
        (Some(expires), _) => expires.utc(),
        (None, Some(dispatched)) => {
            // A lease too long for chrono is, for any practical purpose, forever.
            match TimeDelta::from_std(config.lease)
                .ok()
                .and_then(|lease| dispatched.utc().checked_add_signed(lease))
            {
                Some(expires) => expires,
                None => return false,
            }
        }
        (None, None) => return true,
    };
    now >= expires
}

/// What a scan hands over for a dispatchable chunk, made from the metadata its writer
/// has just written rather than read back: for a caller that dispatches a chunk as soon
/// as it is cut (the pipeline streaming a big file). `chunk_path` is the chunk's
/// directory relative to the repository root (`pending_compression/<name>/chunk_NNNN`).
/// Whether the chunk is dispatchable at all is [`decide`]'s question, not this one's.
pub fn chunk_info(chunk_path: String, meta: &ChunkMetadata) -> ChunkInfo {
    let base_dir = chunk_path
        .rsplit_once('/')
        .map_or("", |(dir, _)| dir)
        .to_owned();
    ChunkInfo {
        chunk_id: meta.chunk_id,
        pattern_type: meta.pattern_type.clone(),
        size: meta.size,
        hash: Some(meta.original_hash),
        base_dir,
        is_keyframe: meta.is_keyframe,
        priority: priority_of(meta),
        staged_object: meta.staged_object.clone(),
        extra: ExtraFields::new(),
        chunk_path,
    }
}

/// The dispatch priority: keyframes, then headers (`HEADER` in `pattern` or
/// `pattern_type`), then chunks over 1 MiB, then the rest.
pub fn priority_of(meta: &ChunkMetadata) -> Priority {
    priority_of_view(&View::from(meta))
}

/// [`priority_of`] on the fields a scan parsed.
pub(crate) fn priority_of_view(meta: &View<'_>) -> Priority {
    let header = |s: &str| s.contains("HEADER");
    if meta.is_keyframe {
        Priority::Keyframe
    } else if meta.pattern.is_some_and(header) || header(meta.pattern_type) {
        Priority::Header
    } else if meta.size > LARGE_CHUNK_BYTES {
        Priority::Large
    } else {
        Priority::Normal
    }
}
