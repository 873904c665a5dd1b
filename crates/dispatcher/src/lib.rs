//! Sends chunks to compression workers and records in the chunk tree that it did.
//!
//! This crate's one job is delivery: it reads the detector's list of chunks
//! (`chunks_to_process.json`), groups them into requests (one chunk per request or
//! batches), sends each to the least-loaded healthy worker with a bearer token and a
//! Standard Webhooks signature, retries what can be retried (429, 5xx, timeouts, refused
//! connections) with exponential backoff and jitter honouring `Retry-After`, cools off a
//! worker that keeps failing and moves its work to the others, and writes each outcome
//! into the chunk's `metadata.json` (`queued` with a lease on acceptance; `last_error`,
//! and `failed` after the last attempt, on refusal). Completing chunks from the bucket's
//! records (`sync`) is the `panini` crate's: this crate knows no storage.
//!
//! It must never know how chunks are compressed or stored, nor how they were selected: the detector
//! decides what to send, the worker what to do with it.

mod config;
mod deliver;
mod error;
pub mod metadata;
pub mod signing;

pub use config::{
    DEFAULT_BATCH_SIZE, DEFAULT_TIMEOUT, DispatchConfig, Endpoint, Mode, RetryPolicy,
    endpoints_from_env,
};
pub use deliver::{
    Accepted, Delivery, DeliveryOutcome, DispatchReport, Dispatcher, Failure, read_chunks_file,
};
pub use error::DispatchError;
