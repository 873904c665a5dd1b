//! Recording dispatch outcomes in `metadata.json`, atomically and touching only the
//! keys that change (`chunk_model::json_file::update`).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chunk_model::{ChunkMetadata, ModelError, Status, Timestamp, TransitionError};

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

fn update(
    base: &Path,
    chunk_path: &str,
    change: impl FnOnce(&mut ChunkMetadata) -> Result<(), TransitionError>,
) -> Result<(), MetadataError> {
    let path = detector::resolve_metadata(base, chunk_path)?;
    chunk_model::json_file::update(&path, |meta: &mut ChunkMetadata| {
        change(meta).map_err(|source| MetadataError::Transition {
            path: path.display().to_string(),
            source,
        })
    })
}

/// A worker accepted the chunk at `now`: `queued`, `dispatched_at`, `worker_id`,
/// `attempts + 1`, and a lease until `now + lease`.
pub fn record_accepted(
    base: &Path,
    chunk_path: &str,
    worker: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Result<(), MetadataError> {
    let expires = TimeDelta::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    update(base, chunk_path, |meta| {
        walk_to(meta, Status::Queued)?;
        meta.dispatched_at = Some(Timestamp::from_utc(now));
        meta.worker_id = Some(worker.to_owned());
        meta.attempts = meta.attempts.saturating_add(1);
        meta.lease_expires_at = Some(Timestamp::from_utc(expires));
        Ok(())
    })
}

/// A worker refused the chunk for good: `last_error`, `attempts + 1`, and `failed` once
/// `max_attempts` is reached. Returns whether the chunk is now `failed`.
pub fn record_refused(
    base: &Path,
    chunk_path: &str,
    error: &str,
    max_attempts: u32,
) -> Result<bool, MetadataError> {
    let mut failed = false;
    update(base, chunk_path, |meta| {
        meta.attempts = meta.attempts.saturating_add(1);
        meta.last_error = Some(error.to_owned());
        if meta.attempts >= max_attempts && meta.status != Status::Completed {
            walk_to(meta, Status::Failed)?;
            meta.lease_expires_at = None;
            failed = true;
        }
        Ok(())
    })?;
    Ok(failed)
}

/// The request could not be delivered (every worker busy or down): `last_error` only.
/// An outage is not the chunk's fault, so it costs no attempt.
pub fn record_undelivered(base: &Path, chunk_path: &str, error: &str) -> Result<(), MetadataError> {
    update(base, chunk_path, |meta| {
        meta.last_error = Some(error.to_owned());
        Ok(())
    })
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
