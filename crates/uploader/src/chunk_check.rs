//! Whether a stored chunk object really holds its chunk: the one check that lets a
//! caller rely on the bucket instead of local bytes (`prune` before it deletes the raw
//! bytes, a worker whose staged bytes were pruned because the chunk is stored).

use chunk_model::{Codec, Sha256Digest, object_keys};

use crate::{ObjectStore, StoreError};

/// What [`check_chunk_object`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkObject {
    /// The object decodes, within the chunk's size, to the chunk's SHA-256.
    Good {
        /// Its key.
        key: String,
        /// SHA-256 of the stored (encoded) bytes.
        upload_hash: Sha256Digest,
    },
    /// There is no object under any codec's key.
    Missing,
    /// An object is there but does not hold the chunk: why, naming the key.
    Corrupt(String),
}

/// Looks for `chunks/<original>.<codec>` under `codec` (or, when `None`, under every
/// codec in turn) and checks the first one found by decoding it, bounded by `size`.
///
/// Store failures are errors; a missing or corrupt object is an answer.
pub async fn check_chunk_object(
    store: &dyn ObjectStore,
    original: &Sha256Digest,
    size: u64,
    codec: Option<Codec>,
) -> Result<ChunkObject, StoreError> {
    Ok(
        match decode_chunk_object(store, original, size, codec).await? {
            None => ChunkObject::Missing,
            Some(Decoded {
                key,
                result: Ok((_, upload_hash)),
            }) => ChunkObject::Good { key, upload_hash },
            Some(Decoded {
                result: Err(why), ..
            }) => ChunkObject::Corrupt(why),
        },
    )
}

/// The chunk's original bytes, decoded from its stored object (any codec) and checked
/// against `original`; `Ok(None)` when no object is stored, `Ok(Some(Err(why)))` when
/// one is and does not hold the chunk.
pub async fn read_chunk_object(
    store: &dyn ObjectStore,
    original: &Sha256Digest,
    size: u64,
) -> Result<Option<Result<Vec<u8>, String>>, StoreError> {
    Ok(decode_chunk_object(store, original, size, None)
        .await?
        .map(|decoded| decoded.result.map(|(bytes, _)| bytes)))
}

struct Decoded {
    key: String,
    /// The original bytes and the SHA-256 of the stored ones, or why the object is not
    /// the chunk.
    result: Result<(Vec<u8>, Sha256Digest), String>,
}

async fn decode_chunk_object(
    store: &dyn ObjectStore,
    original: &Sha256Digest,
    size: u64,
    codec: Option<Codec>,
) -> Result<Option<Decoded>, StoreError> {
    let codecs: Vec<Codec> = match codec {
        Some(codec) => vec![codec],
        None => Codec::ALL.to_vec(),
    };
    for codec in codecs {
        let key = object_keys::chunk_object(original, codec);
        let object = match store.get(&key).await {
            Ok(object) => object,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let expected = *original;
        let shown = key.clone();
        // Decoding and hashing megabytes is CPU work: on rayon's pool (`crate::cpu`).
        let result = crate::cpu::on_rayon(move || {
            // A chunk larger than memory can address cannot be ours.
            let limit = usize::try_from(size).unwrap_or(usize::MAX);
            let corrupt = |why: String| format!("the stored object {shown} is corrupt: {why}");
            let decoded = gpu_compress::decompress_bounded(codec, &object.bytes, limit)
                .map_err(|e| corrupt(format!("it does not decode as {codec}: {e}")))?;
            let actual = Sha256Digest::of(&decoded);
            if decoded.len() as u64 != size || actual != expected {
                return Err(corrupt(format!(
                    "it decodes to {} bytes with SHA-256 {actual}, not to the chunk's \
                     {size} bytes with {expected}",
                    decoded.len()
                )));
            }
            Ok((decoded, Sha256Digest::of(&object.bytes)))
        })
        .await
        .map_err(StoreError::Task)?;
        return Ok(Some(Decoded { key, result }));
    }
    Ok(None)
}
