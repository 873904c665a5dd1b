//! A file's recipe from its chunk tree: the manifest's chunks in order, each with the
//! object its `metadata.json` says it was stored as.
//!
//! Workers publish recipes themselves from the manifest and the objects in the bucket
//! (`uploader::publish`); this is the repository's view of the same recipe, for checking
//! a tree against the bucket and for tools that hold the tree but not the bucket.

use std::path::Path;

use chunk_model::{
    ChunkMetadata, Codec, Layout, Manifest, Recipe, RecipeChunk, Status, json_file, layout,
};

/// Why a file of the tree has no recipe yet, or cannot have one.
#[derive(Debug, thiserror::Error)]
pub enum RecipeFromTreeError {
    /// The manifest or a chunk's metadata cannot be read.
    #[error(transparent)]
    Model(#[from] chunk_model::ModelError),
    /// The manifest has no whole-file hash (a manifest of the original Python chunker).
    #[error("{name}: manifest has no file_hash, so the rebuilt file could not be checked")]
    NoFileHash {
        /// The file's name.
        name: String,
    },
    /// A chunk is not completed yet.
    #[error("{name}: chunk {chunk_id} is {status}{}", last_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Open {
        /// The file's name.
        name: String,
        /// The chunk.
        chunk_id: u64,
        /// Its status.
        status: Status,
        /// Its last error, if any.
        last_error: Option<String>,
    },
    /// A completed chunk does not name an object of a known codec.
    #[error("{path}: completed, but upload_path {upload_path:?} is not a chunk object")]
    BadUploadPath {
        /// The chunk's metadata file.
        path: String,
        /// What it says.
        upload_path: Option<String>,
    },
}

/// The recipe of the file `name` of the tree at `base`, when every chunk is completed.
pub fn recipe_from_tree(base: &Path, name: &str) -> Result<Recipe, RecipeFromTreeError> {
    let layout = Layout::new(base);
    let manifest: Manifest = json_file::read(&layout.manifest_path(name)?)?;
    let file_sha256 = manifest
        .file_hash
        .ok_or_else(|| RecipeFromTreeError::NoFileHash { name: name.into() })?;
    let mut chunks = Vec::with_capacity(manifest.chunks.len());
    for entry in &manifest.chunks {
        let path = layout
            .chunk_dir(name, entry.chunk_id, manifest.total_chunks)?
            .join(layout::METADATA_FILE);
        let meta: ChunkMetadata = json_file::read(&path)?;
        if meta.status != Status::Completed {
            return Err(RecipeFromTreeError::Open {
                name: name.into(),
                chunk_id: entry.chunk_id,
                status: meta.status,
                last_error: meta.last_error,
            });
        }
        let codec = meta
            .upload_path
            .as_deref()
            .and_then(|key| key.rsplit_once('.'))
            .and_then(|(_, ext)| ext.parse::<Codec>().ok());
        let (Some(key), Some(codec)) = (meta.upload_path.clone(), codec) else {
            return Err(RecipeFromTreeError::BadUploadPath {
                path: path.display().to_string(),
                upload_path: meta.upload_path,
            });
        };
        chunks.push(RecipeChunk {
            offset: entry.offset,
            size: entry.size,
            sha256: entry.hash,
            key,
            codec,
        });
    }
    Ok(Recipe {
        version: Recipe::VERSION,
        name: name.to_owned(),
        file_size: manifest.file_size.unwrap_or_default(),
        file_sha256,
        chunks,
    })
}
