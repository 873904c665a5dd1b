//! Names of objects in the bucket. Workers, the uploader and reconstruction all derive
//! keys here, so a chunk is found by content wherever it was stored from.

use crate::{Codec, Sha256Digest};

/// `chunks/<sha256 of the original bytes>.<codec>`: identical chunks across files and
/// reruns share one object.
pub fn chunk_object(original: &Sha256Digest, codec: Codec) -> String {
    format!("chunks/{original}.{codec}")
}

/// The prefix all chunk objects share.
pub const CHUNKS_PREFIX: &str = "chunks/";

/// `recipes/<name>/<file sha256>.json`.
pub fn recipe(name: &str, file: &Sha256Digest) -> String {
    format!("{}{file}.json", recipe_prefix(name))
}

/// `recipes/<name>/`: every recipe ever stored for that name.
pub fn recipe_prefix(name: &str) -> String {
    format!("recipes/{name}/")
}

/// `status/<sha256 of the original chunk>.json`: a worker's completion record.
pub fn status_record(original: &Sha256Digest) -> String {
    format!("status/{original}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_content_addressed() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            chunk_object(&d, Codec::Zstd),
            format!("chunks/{}.zstd", d.to_hex())
        );
        assert_eq!(
            recipe("movie", &d),
            format!("recipes/movie/{}.json", d.to_hex())
        );
        assert_eq!(status_record(&d), format!("status/{}.json", d.to_hex()));
    }
}
