//! Strict parsing of the bucket locations users type: `gs://bucket[/prefix]`,
//! `file:///absolute/path`, or a plain directory path.
//!
//! Strict because a typo must not turn into data written somewhere unexpected: `gs:/x`
//! once became a local directory named `gs:/x`, and `s3://…` a directory path. Anything
//! that looks like a URL (`word:` at the start) must be one of the supported schemes,
//! spelled in full; only text that does not look like a URL is a directory path.

use std::fmt;
use std::path::PathBuf;

/// The schemes [`BucketUrl::parse`] accepts, as shown in its errors.
pub const SUPPORTED: &str = "gs://bucket[/prefix], file:///absolute/path, or a directory path";

/// A parsed bucket location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketUrl {
    /// A Cloud Storage bucket, with every key under `prefix` (`""` for the root).
    Gcs {
        /// The bucket's name.
        bucket: String,
        /// The key prefix, without leading or trailing `/`.
        prefix: String,
    },
    /// A directory on this machine (`file:///path` or a plain path).
    Local(PathBuf),
}

/// Why a bucket location was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketUrlError {
    /// Nothing was given.
    #[error("the bucket location is empty (expected {SUPPORTED})")]
    Empty,
    /// A scheme this crate does not store into, such as `s3://`.
    #[error("the scheme {scheme}:// is not supported (expected {SUPPORTED})")]
    UnsupportedScheme {
        /// The location as given.
        url: String,
        /// The scheme, without `://`.
        scheme: String,
    },
    /// A supported scheme spelled or used wrongly (`gs:/x`, `file://relative`, `gs://`).
    #[error("{reason} (expected {SUPPORTED})")]
    Malformed {
        /// The location as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl BucketUrl {
    /// Parses `text` strictly; see the module documentation.
    pub fn parse(text: &str) -> Result<Self, BucketUrlError> {
        if text.trim().is_empty() {
            return Err(BucketUrlError::Empty);
        }
        let malformed = |reason: &str| BucketUrlError::Malformed {
            url: text.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = text.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket_name(bucket) {
                return Err(malformed(
                    "a bucket name has 3 to 222 lowercase letters, digits, '-', '_' or '.'",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
                return Err(malformed("the prefix has an empty, '.' or '..' segment"));
            }
            return Ok(BucketUrl::Gcs {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(rest) = text.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(malformed(
                    "a file URL needs an absolute path (file:///path)",
                ));
            }
            return Ok(BucketUrl::Local(PathBuf::from(rest)));
        }
        if let Some(scheme) = scheme_of(text) {
            return Err(match scheme {
                "gs" | "file" => malformed(&format!("{scheme}: must be followed by //")),
                _ if text[scheme.len()..].starts_with("://") => BucketUrlError::UnsupportedScheme {
                    url: text.to_owned(),
                    scheme: scheme.to_owned(),
                },
                _ => malformed("it looks like a URL with an unknown scheme"),
            });
        }
        Ok(BucketUrl::Local(PathBuf::from(text)))
    }
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketUrl::Gcs { bucket, prefix } if prefix.is_empty() => write!(f, "gs://{bucket}"),
            BucketUrl::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
            BucketUrl::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The scheme of text that starts like a URL (`letters:`), if it does. One letter is
/// not a scheme, so a Windows drive (`C:\…`) stays a path.
fn scheme_of(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (scheme.len() >= 2
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// Cloud Storage's naming rules, loosely: what can never name a bucket is refused here,
/// the rest is left to the service.
fn valid_bucket_name(name: &str) -> bool {
    (3..=222).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(
            BucketUrl::parse("gs://my-bucket/panini/").unwrap(),
            BucketUrl::Gcs {
                bucket: "my-bucket".into(),
                prefix: "panini".into()
            }
        );
        assert_eq!(
            BucketUrl::parse("file:///srv/bucket").unwrap(),
            BucketUrl::Local("/srv/bucket".into())
        );
        assert_eq!(
            BucketUrl::parse("some/dir").unwrap(),
            BucketUrl::Local("some/dir".into())
        );
        assert_eq!(
            BucketUrl::parse("C:\\bucket").unwrap(),
            BucketUrl::Local("C:\\bucket".into())
        );
    }

    #[test]
    fn refuses_typos_and_other_schemes() {
        for bad in [
            "gs:/x",
            "gs:x",
            "gs://",
            "gs://A",
            "file://rel",
            "s3://b",
            "http:x",
            "",
        ] {
            assert!(BucketUrl::parse(bad).is_err(), "{bad}");
        }
        let err = BucketUrl::parse("s3://b").unwrap_err().to_string();
        assert!(err.contains("gs://bucket"), "{err}");
    }
}
