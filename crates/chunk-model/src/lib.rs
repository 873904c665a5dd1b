//! Shared types of the Panini pipeline.
//!
//! Every other Panini crate speaks in these types, so this crate stays small and free of
//! policy: it knows the shape of the data (chunk metadata, manifests, recipes, the
//! detector→dispatcher→worker wire types), the legal status transitions, and the on-disk
//! layout under `pending_compression/`, including how to write a JSON file atomically
//! and how a chunk path from outside is checked and resolved without leaving the tree
//! ([`chunk_path`]).
//! It knows nothing about HTTP, GCS, OpenCL or compression.
//!
//! Compatibility is a contract: files written by the original Python chunker (local
//! timestamps without zone, `dependencies`, explicit nulls, fields Panini does not know)
//! must read, and writing back through [`json_file::update`] changes only the keys the
//! caller changed.

pub mod chunk_path;
pub mod digest;
pub mod error;
pub mod file_mode;
pub mod fs_batch;
pub mod json_file;
pub mod layout;
pub mod manifest;
pub mod metadata;
pub mod object_keys;
pub mod recipe;
pub mod schema;
pub mod status;
pub mod timestamp;
pub mod tree_lock;
pub mod webhook_signature;
pub mod wire;

pub use chunk_path::{ChunkPath, ChunkPathError, TreeRoot};
pub use digest::Sha256Digest;
pub use error::ModelError;
pub use layout::Layout;
pub use manifest::{Manifest, ManifestChunk, Strategy};
pub use metadata::ChunkMetadata;
pub use recipe::{Codec, Recipe, RecipeChunk, RecipeError};
pub use status::{Status, TransitionError};
pub use timestamp::Timestamp;
pub use wire::{ChunkCompressed, ChunkInfo, Priority, WebhookRequest};

/// Unknown JSON fields, kept so that writing a document back never drops them.
pub type ExtraFields = serde_json::Map<String, serde_json::Value>;
