//! The fields of `metadata.json` a scan needs, parsed without copying.
//!
//! [`ChunkMetadata`] keeps unknown fields (`#[serde(flatten)]`), which makes serde buffer
//! the whole document into an owned tree first: every key and string allocated, then
//! converted a second time. On a scan of 100,000 chunks that was the largest share of
//! the user CPU. [`ScanMetadata`] has exactly the same fields with the same types (so it
//! validates the same things: the digest, the timestamps, the status), but strings are
//! borrowed from the file's bytes where they contain no escape, and unknown fields are
//! skipped rather than kept.
//!
//! It is only a fast path: [`parse`] falls back to [`ChunkMetadata`] whenever the fast
//! parse fails, so an invalid file is reported exactly as before, with serde's message.
//! A document the fast path accepts is one [`ChunkMetadata`] accepts too (same fields,
//! same types; a test checks the two agree), with one exception handled here: a derived
//! struct also accepts a JSON array of its fields in order, a flattened one does not, so
//! anything but an object goes the slow way.

use std::borrow::Cow;

use chunk_model::{ChunkMetadata, Sha256Digest, Status, Timestamp};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// [`ChunkMetadata`] less what the scan never reads, borrowing its strings.
#[derive(Debug, Deserialize)]
pub(crate) struct ScanMetadata<'a> {
    pub(crate) chunk_id: u64,
    #[allow(dead_code)] // validated, as ChunkMetadata does, but not used
    offset: u64,
    pub(crate) size: u64,
    pub(crate) original_hash: Sha256Digest,
    #[serde(borrow)]
    pub(crate) pattern_type: Cow<'a, str>,
    #[serde(default)]
    #[allow(dead_code)]
    dependencies: Vec<IgnoredAny>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    grammar_id: Option<Cow<'a, str>>,
    pub(crate) status: Status,
    #[allow(dead_code)]
    created_at: Timestamp,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    compression_status: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) dispatched_at: Option<Timestamp>,
    #[serde(default)]
    #[allow(dead_code)]
    compressed_at: Option<Timestamp>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    worker_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) is_keyframe: bool,
    #[serde(default, borrow)]
    pub(crate) pattern: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) attempts: u32,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    last_error: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) lease_expires_at: Option<Timestamp>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    upload_path: Option<Cow<'a, str>>,
    #[serde(default)]
    #[allow(dead_code)]
    upload_hash: Option<Sha256Digest>,
    #[serde(default, borrow)]
    pub(crate) staged_object: Option<Cow<'a, str>>,
}

/// What the selection rules look at, from either parse.
#[allow(clippy::large_enum_variant)] // lives on the stack for one file; never stored
pub(crate) enum Parsed<'a> {
    Fast(ScanMetadata<'a>),
    Full(Box<ChunkMetadata>),
}

/// Parses `bytes` the fast way, or as [`ChunkMetadata`] when that fails (the error is
/// then [`ChunkMetadata`]'s own).
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed<'_>, serde_json::Error> {
    let object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if object && let Ok(meta) = serde_json::from_slice::<ScanMetadata<'_>>(bytes) {
        return Ok(Parsed::Fast(meta));
    }
    serde_json::from_slice::<ChunkMetadata>(bytes).map(|meta| Parsed::Full(Box::new(meta)))
}

/// The fields the selection rules and the chunk list need, whichever parse gave them.
pub(crate) struct View<'p> {
    pub(crate) chunk_id: u64,
    pub(crate) size: u64,
    pub(crate) original_hash: Sha256Digest,
    pub(crate) pattern_type: &'p str,
    pub(crate) status: Status,
    pub(crate) dispatched_at: Option<&'p Timestamp>,
    pub(crate) lease_expires_at: Option<&'p Timestamp>,
    pub(crate) is_keyframe: bool,
    pub(crate) pattern: Option<&'p str>,
    pub(crate) attempts: u32,
    pub(crate) staged_object: Option<&'p str>,
}

impl Parsed<'_> {
    pub(crate) fn view(&self) -> View<'_> {
        match self {
            Parsed::Fast(m) => View {
                chunk_id: m.chunk_id,
                size: m.size,
                original_hash: m.original_hash,
                pattern_type: &m.pattern_type,
                status: m.status,
                dispatched_at: m.dispatched_at.as_ref(),
                lease_expires_at: m.lease_expires_at.as_ref(),
                is_keyframe: m.is_keyframe,
                pattern: m.pattern.as_deref(),
                attempts: m.attempts,
                staged_object: m.staged_object.as_deref(),
            },
            Parsed::Full(m) => View::from(&**m),
        }
    }
}

impl<'p> From<&'p ChunkMetadata> for View<'p> {
    fn from(m: &'p ChunkMetadata) -> Self {
        View {
            chunk_id: m.chunk_id,
            size: m.size,
            original_hash: m.original_hash,
            pattern_type: &m.pattern_type,
            status: m.status,
            dispatched_at: m.dispatched_at.as_ref(),
            lease_expires_at: m.lease_expires_at.as_ref(),
            is_keyframe: m.is_keyframe,
            pattern: m.pattern.as_deref(),
            attempts: m.attempts,
            staged_object: m.staged_object.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "00000000000000000000000000000000000000000000000000000000000000ab";

    fn doc(extra: &str) -> String {
        format!(
            "{{\"chunk_id\": 7, \"offset\": 0, \"size\": 10, \"original_hash\": \"{HASH}\", \
             \"pattern_type\": \"PNG_\\u0049DAT\", \"dependencies\": [], \"grammar_id\": null, \
             \"status\": \"queued\", \"created_at\": \"2025-11-13T14:02:11.123456\"{extra}}}"
        )
    }

    fn same(view: &View<'_>, full: &ChunkMetadata) {
        let other = View::from(full);
        assert_eq!(view.chunk_id, other.chunk_id);
        assert_eq!(view.size, other.size);
        assert_eq!(view.original_hash, other.original_hash);
        assert_eq!(view.pattern_type, other.pattern_type);
        assert_eq!(view.status, other.status);
        assert_eq!(view.dispatched_at, other.dispatched_at);
        assert_eq!(view.lease_expires_at, other.lease_expires_at);
        assert_eq!(view.is_keyframe, other.is_keyframe);
        assert_eq!(view.pattern, other.pattern);
        assert_eq!(view.attempts, other.attempts);
    }

    /// Whatever the fast path accepts, ChunkMetadata accepts with the same values; what
    /// it refuses gets ChunkMetadata's own answer.
    #[test]
    fn agrees_with_chunk_metadata() {
        let docs = [
            doc(""),
            doc(", \"unknown\": {\"a\": [1, 2]}, \"pattern\": \"HEADER\""),
            doc(", \"dispatched_at\": \"2025-12-31T23:59:00Z\", \"attempts\": 2"),
            doc(", \"lease_expires_at\": \"2026-01-01T00:00:00Z\", \"is_keyframe\": true"),
            doc(", \"upload_hash\": null, \"worker_id\": \"w\\n1\", \"last_error\": null"),
            doc(", \"size\": 11"),
            doc(", \"attempts\": -1"),
            doc(", \"is_keyframe\": null"),
            doc(", \"dispatched_at\": \"yesterday\""),
            doc(", \"upload_hash\": \"abc\""),
            doc(", \"dependencies\": 3"),
            doc(", \"dependencies\": [1, \"x\", {}]"),
            doc(", \"status\": \"done\""),
            "{\"chunk_id\": 7}".to_owned(),
            format!(
                "[7, 0, 10, \"{HASH}\", \"X\", [], null, \"pending\", \"2025-11-13T14:02:11\"]"
            ),
            "{\"chunk_id\": 7".to_owned(),
            "null".to_owned(),
            String::new(),
        ];
        let mut fast = 0;
        for text in &docs {
            let full = serde_json::from_str::<ChunkMetadata>(text);
            match parse(text.as_bytes()) {
                Ok(Parsed::Fast(meta)) => {
                    fast += 1;
                    let full = full.unwrap_or_else(|e| panic!("{text}: fast ok, full {e}"));
                    same(&Parsed::Fast(meta).view(), &full);
                }
                Ok(Parsed::Full(meta)) => assert_eq!(*meta, full.unwrap(), "{text}"),
                Err(e) => assert_eq!(e.to_string(), full.unwrap_err().to_string(), "{text}"),
            }
        }
        assert_eq!(
            fast, 5,
            "the valid documents without repeated keys take the fast path"
        );
    }
}
