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

/// The chunk hash and codec a chunk object key names, when `key` is exactly a key
/// [`chunk_object`] makes (`chunks/`, 64 lowercase hex digits, `.`, a codec name);
/// `None` for anything else: other prefixes, upper-case hex, `..`, extra path parts.
///
/// Keys come back from workers and callbacks, i.e. from outside; only the canonical
/// spelling is accepted so that one chunk has exactly one key.
pub fn parse_chunk_object(key: &str) -> Option<(Sha256Digest, Codec)> {
    let (hex, codec) = key.strip_prefix(CHUNKS_PREFIX)?.split_once('.')?;
    let digest: Sha256Digest = hex.parse().ok()?;
    let codec: Codec = codec.parse().ok()?;
    // The digest parser accepts either case; the key must be the one we would write.
    (chunk_object(&digest, codec) == key).then_some((digest, codec))
}

/// The prefix all staged raw chunks share.
pub const STAGING_PREFIX: &str = "staging/";

/// `staging/<sha256 of the chunk>`: a chunk's raw bytes, uploaded by `chunk --stage`
/// instead of committed to git, until `prune` removes them once the chunk is stored.
pub fn staged_object(original: &Sha256Digest) -> String {
    format!("{STAGING_PREFIX}{original}")
}

/// The chunk hash a staged-object key names, when `key` is exactly what
/// [`staged_object`] makes; `None` for anything else. Like [`parse_chunk_object`], only
/// the canonical spelling is accepted: the key arrives from outside, in webhooks.
pub fn parse_staged_object(key: &str) -> Option<Sha256Digest> {
    let digest: Sha256Digest = key.strip_prefix(STAGING_PREFIX)?.parse().ok()?;
    (staged_object(&digest) == key).then_some(digest)
}

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

    #[test]
    fn only_canonical_staged_keys_parse() {
        let d = Sha256Digest::of(b"abc");
        let hex = d.to_hex();
        assert_eq!(staged_object(&d), format!("staging/{hex}"));
        assert_eq!(parse_staged_object(&staged_object(&d)), Some(d));
        for bad in [
            String::new(),
            "staging/".to_owned(),
            format!("staging/{}", hex.to_uppercase()),
            format!("staging/{hex}.lz4"),
            format!("staging/{hex}/x"),
            format!("staging/../{hex}"),
            format!("/staging/{hex}"),
            format!("chunks/{hex}"),
        ] {
            assert_eq!(parse_staged_object(&bad), None, "{bad}");
        }
    }

    #[test]
    fn only_canonical_chunk_keys_parse() {
        let d = Sha256Digest::of(b"abc");
        for codec in Codec::ALL {
            assert_eq!(
                parse_chunk_object(&chunk_object(&d, codec)),
                Some((d, codec))
            );
        }
        let hex = d.to_hex();
        for bad in [
            String::new(),
            "../../etc/passwd".to_owned(),
            format!("chunks/{hex}"),
            format!("chunks/{hex}.gz"),
            format!("chunks/{}.lz4", hex.to_uppercase()),
            format!("chunks/{hex}.lz4/x"),
            format!("chunks/../{hex}.lz4"),
            format!("/chunks/{hex}.lz4"),
            format!("gs://bucket/chunks/{hex}.lz4"),
            format!("status/{hex}.json"),
            format!("chunks/{}.lz4", &hex[..63]),
        ] {
            assert_eq!(parse_chunk_object(&bad), None, "{bad:?}");
        }
    }
}
