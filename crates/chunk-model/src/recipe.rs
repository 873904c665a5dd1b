//! The reconstruction recipe: how to rebuild one original file from stored objects.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Sha256Digest;

/// How a stored chunk object is encoded. Every codec's output is a standard frame that
/// the stock tool decodes (`lz4 -d`, `zstd -d`), or the bytes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// LZ4 frame format.
    Lz4,
    /// Zstandard frame format.
    Zstd,
    /// The original bytes.
    Store,
}

impl Codec {
    /// Every codec.
    pub const ALL: [Codec; 3] = [Codec::Lz4, Codec::Zstd, Codec::Store];

    /// The wire name, also the object key's extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
            Codec::Store => "store",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown codec name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec {0:?} (expected lz4, zstd or store)")]
pub struct ParseCodecError(pub String);

impl FromStr for Codec {
    type Err = ParseCodecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Codec::ALL
            .into_iter()
            .find(|codec| codec.as_str() == s)
            .ok_or_else(|| ParseCodecError(s.to_owned()))
    }
}

/// Rebuilds one file: concatenate the decoded chunks in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Recipe {
    /// Format version of this document.
    pub version: u32,
    /// The file's name in the chunk tree (`base_name`).
    pub name: String,
    /// Size of the original file.
    pub file_size: u64,
    /// SHA-256 of the original file.
    pub file_sha256: Sha256Digest,
    /// The chunks, ordered by offset, tiling `[0, file_size)`.
    pub chunks: Vec<RecipeChunk>,
}

/// One chunk of a recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecipeChunk {
    /// Offset in the original file.
    pub offset: u64,
    /// Length of the original bytes.
    pub size: u64,
    /// SHA-256 of the original bytes.
    pub sha256: Sha256Digest,
    /// The object key holding the encoded bytes.
    pub key: String,
    /// How the object is encoded.
    pub codec: Codec,
}

/// A recipe whose chunks do not rebuild its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// Chunks out of order, overlapping or leaving a gap.
    #[error("recipe {name}: chunk {index} starts at {offset}, expected {expected}")]
    NotContiguous {
        /// The recipe's file name.
        name: String,
        /// Index of the offending chunk.
        index: usize,
        /// Its offset.
        offset: u64,
        /// Where the previous chunk ended.
        expected: u64,
    },
    /// The chunks do not add up to the file size.
    #[error("recipe {name}: chunks cover {covered} bytes, file has {file_size}")]
    SizeMismatch {
        /// The recipe's file name.
        name: String,
        /// Bytes the chunks cover.
        covered: u64,
        /// The declared file size.
        file_size: u64,
    },
    /// A version this crate cannot read.
    #[error("recipe {name}: unsupported version {version}")]
    UnsupportedVersion {
        /// The recipe's file name.
        name: String,
        /// The version found.
        version: u32,
    },
}

impl Recipe {
    /// The version this crate writes.
    pub const VERSION: u32 = 1;

    /// Checks that the chunks tile the file exactly.
    pub fn validate(&self) -> Result<(), RecipeError> {
        if self.version != Self::VERSION {
            return Err(RecipeError::UnsupportedVersion {
                name: self.name.clone(),
                version: self.version,
            });
        }
        let mut expected = 0u64;
        for (index, chunk) in self.chunks.iter().enumerate() {
            if chunk.offset != expected {
                return Err(RecipeError::NotContiguous {
                    name: self.name.clone(),
                    index,
                    offset: chunk.offset,
                    expected,
                });
            }
            expected = expected.saturating_add(chunk.size);
        }
        if expected != self.file_size {
            return Err(RecipeError::SizeMismatch {
                name: self.name.clone(),
                covered: expected,
                file_size: self.file_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, size: u64) -> RecipeChunk {
        RecipeChunk {
            offset,
            size,
            sha256: Sha256Digest([0; 32]),
            key: "chunks/x.lz4".into(),
            codec: Codec::Lz4,
        }
    }

    fn recipe(chunks: Vec<RecipeChunk>, file_size: u64) -> Recipe {
        Recipe {
            version: Recipe::VERSION,
            name: "f".into(),
            file_size,
            file_sha256: Sha256Digest([0; 32]),
            chunks,
        }
    }

    #[test]
    fn validate_accepts_tilings_and_names_the_first_gap() {
        assert_eq!(recipe(vec![], 0).validate(), Ok(()));
        assert_eq!(
            recipe(vec![chunk(0, 5), chunk(5, 5)], 10).validate(),
            Ok(())
        );
        assert!(matches!(
            recipe(vec![chunk(0, 5), chunk(6, 4)], 10).validate(),
            Err(RecipeError::NotContiguous {
                index: 1,
                offset: 6,
                expected: 5,
                ..
            })
        ));
        assert!(matches!(
            recipe(vec![chunk(0, 5)], 10).validate(),
            Err(RecipeError::SizeMismatch { covered: 5, .. })
        ));
    }

    #[test]
    fn codec_names() {
        for codec in Codec::ALL {
            assert_eq!(codec.as_str().parse::<Codec>().unwrap(), codec);
        }
    }
}
