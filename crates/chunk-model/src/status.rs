//! The chunk status machine.
//!
//! ```text
//!            ┌──────────── lease expired ───────────┐
//!            ▼                                      │
//! pending ──► queued ──► processing ──► completed   │
//!    ▲          │  │         │  └─────► failed ─────┘ (retry: failed → pending)
//!    │          │  └─────────┼────────► completed | failed   (remote worker report)
//!    └──────────┴────────────┘ lease expired
//! ```

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a chunk is in the pipeline. Lowercase on the wire (`"pending"`, …).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Written by the chunker; waiting for dispatch.
    Pending,
    /// Accepted by a worker; the lease says until when.
    Queued,
    /// Being compressed.
    Processing,
    /// Compressed, uploaded and verified.
    Completed,
    /// Gave up on this attempt; `last_error` says why.
    Failed,
}

/// A status change the state machine forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal status transition {from} → {to}")]
pub struct TransitionError {
    /// The current status.
    pub from: Status,
    /// The status that was asked for.
    pub to: Status,
}

impl Status {
    /// Every status, in pipeline order.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Queued,
        Status::Processing,
        Status::Completed,
        Status::Failed,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Processing => "processing",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }

    /// Whether `self → to` is a legal step.
    ///
    /// Staying in the same status is not a transition and is not legal here; callers
    /// that must be idempotent (a callback applied twice) compare first.
    pub fn can_transition_to(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Pending, Queued)
                | (Queued, Processing)
                | (Queued, Completed | Failed)
                | (Processing, Completed | Failed)
                | (Failed, Pending)
                | (Queued | Processing, Pending)
        )
    }

    /// Checks `self → to` and returns `to`.
    pub fn transition_to(self, to: Status) -> Result<Status, TransitionError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// `completed` is the only status nothing leaves.
    pub fn is_terminal(self) -> bool {
        self == Status::Completed
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?} (expected pending, queued, processing, completed or failed)")]
pub struct ParseStatusError(pub String);

impl FromStr for Status {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        use Status::*;
        let legal = [
            (Pending, Queued),
            (Queued, Processing),
            (Queued, Completed),
            (Queued, Failed),
            (Queued, Pending),
            (Processing, Completed),
            (Processing, Failed),
            (Processing, Pending),
            (Failed, Pending),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} → {to}");
                assert_eq!(from.transition_to(to).is_ok(), expected, "{from} → {to}");
            }
        }
        assert_eq!(
            Completed.transition_to(Pending),
            Err(TransitionError {
                from: Completed,
                to: Pending
            })
        );
    }

    #[test]
    fn wire_names_round_trip() {
        for status in Status::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
            assert_eq!(status.as_str().parse::<Status>().unwrap(), status);
        }
        assert!("Pending".parse::<Status>().is_err());
        assert!(serde_json::from_str::<Status>("\"done\"").is_err());
    }
}
