//! Timestamps as they appear in Panini's and the Python chunker's files.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, SubsecRound, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time that remembers how it was written.
///
/// Panini writes RFC 3339 in UTC (`2026-11-28T17:35:32.123456Z`). The Python chunker
/// wrote local time without a zone (`2025-11-13T14:02:11.123456`); such values are read
/// as UTC, since the zone they were written in is unknown, and the original text is
/// written back unchanged so that reading a file never rewrites its timestamps.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Timestamp {
    text: String,
    utc: DateTime<Utc>,
}

/// A timestamp in neither accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {0:?} (expected RFC 3339 or ISO 8601 without zone)")]
pub struct ParseTimestampError(pub String);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_utc(Utc::now())
    }

    /// A timestamp written in Panini's own form, to the microsecond.
    pub fn from_utc(utc: DateTime<Utc>) -> Self {
        let utc = utc.trunc_subsecs(6);
        Self {
            text: utc.to_rfc3339_opts(SecondsFormat::Micros, true),
            utc,
        }
    }

    /// The instant, in UTC.
    pub fn utc(&self) -> DateTime<Utc> {
        self.utc
    }

    /// The text as read or written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let utc = DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| NaiveDateTime::from_str(text).map(|t| t.and_utc()))
            .map_err(|_| ParseTimestampError(text.to_owned()))?;
        Ok(Self {
            text: text.to_owned(),
            utc,
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "RFC 3339 (Panini) or ISO 8601 local time without zone (Python chunker, read as UTC)",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_python_local_time_and_keeps_its_text() {
        let t: Timestamp = "2025-11-13T14:02:11.123456".parse().unwrap();
        assert_eq!(t.as_str(), "2025-11-13T14:02:11.123456");
        assert_eq!(t.utc().to_rfc3339(), "2025-11-13T14:02:11.123456+00:00");
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2025-11-13T14:02:11.123456\""
        );
    }

    #[test]
    fn reads_rfc3339_with_offsets() {
        let t: Timestamp = "2025-11-13T14:02:11+02:00".parse().unwrap();
        assert_eq!(t.utc().to_rfc3339(), "2025-11-13T12:02:11+00:00");
    }

    #[test]
    fn rejects_garbage_with_the_value_in_the_message() {
        let err = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
        assert!(err.to_string().contains("yesterday"), "{err}");
    }

    #[test]
    fn now_round_trips() {
        let t = Timestamp::now();
        assert!(t.as_str().ends_with('Z'));
        assert_eq!(t.as_str().parse::<Timestamp>().unwrap(), t);
    }
}
