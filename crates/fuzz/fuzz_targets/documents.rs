//! Every JSON document Panini reads from outside: metadata.json, manifest.json, recipes,
//! chunks_to_process.json, webhook bodies, callback payloads and events.
#![no_main]

use chunk_model::{ChunkCompressed, ChunkInfo, ChunkMetadata, Manifest, Recipe, WebhookRequest};

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    // What parsed must serialize again.
    serde_json::to_vec(&value).expect("a parsed document serializes");
    Some(value)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = roundtrip::<ChunkMetadata>(data);
    let _ = roundtrip::<Manifest>(data);
    if let Some(recipe) = roundtrip::<Recipe>(data) {
        let _ = recipe.validate();
    }
    let _ = roundtrip::<Vec<ChunkInfo>>(data);
    let _ = roundtrip::<WebhookRequest>(data);
    if let Some(payload) = roundtrip::<ChunkCompressed>(data) {
        let _ = detector::check_payload(&payload);
    }
    if let Ok(value) = serde_json::from_slice(data) {
        if let Ok(payload) = detector::payload_from_value(std::path::Path::new("fuzz"), value) {
            let _ = detector::check_payload(&payload);
        }
    }
});
