//! Reading and atomically writing the JSON documents of the chunk tree.
//!
//! Every write goes to a temporary file in the target's directory, is flushed to disk,
//! and renamed over the target, so a reader (a detector, a crashed run's successor)
//! sees the old document or the new one, never half of one.
//!
//! [`update`] writes back only what the caller changed: it compares the typed document
//! before and after the change and patches just those keys into the original JSON, so
//! fields it does not know, explicit nulls and key order all survive.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ModelError;

/// Reads and parses `path`.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let bytes = fs::read(path).map_err(|e| ModelError::io(path, e))?;
    parse(path, &bytes)
}

/// Parses `bytes` read from `path` (named in errors).
pub fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, ModelError> {
    serde_json::from_slice(bytes).map_err(|source| ModelError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Writes `value` to `path` atomically, pretty-printed with a final newline.
pub fn write_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), ModelError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| ModelError::Json {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    write_bytes_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync,
/// rename, fsync of the directory.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".panini-tmp-")
        .tempfile_in(dir)
        .map_err(|e| ModelError::io(dir, e))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| ModelError::io(temp.path(), e))?;
    temp.persist(path)
        .map_err(|e| ModelError::io(path, e.error))?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable. Directories cannot be opened for syncing on every
/// platform; there the rename is as durable as the platform makes it.
pub fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ModelError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads `path` as a `T`, lets `change` modify it, and writes back only the keys whose
/// values changed. Nothing is written when nothing changed or `change` fails.
///
/// Returns what `change` returned.
pub fn update<T, R, E>(path: &Path, change: impl FnOnce(&mut T) -> Result<R, E>) -> Result<R, E>
where
    T: Serialize + DeserializeOwned,
    E: From<ModelError>,
{
    let bytes = fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let mut raw: serde_json::Map<String, Value> = match parse(path, &bytes)? {
        Value::Object(map) => map,
        _ => {
            return Err(ModelError::NotAnObject {
                path: path.to_owned(),
            }
            .into());
        }
    };
    let mut typed: T = parse(path, &bytes)?;
    let before = to_object(path, &typed)?;
    let result = change(&mut typed)?;
    let after = to_object(path, &typed)?;
    if before == after {
        return Ok(result);
    }
    for (key, value) in &after {
        if before.get(key) != Some(value) {
            raw.insert(key.clone(), value.clone());
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            // `shift_remove`: plain `remove` swaps the last key into the hole and so
            // reorders the document.
            raw.shift_remove(key);
        }
    }
    write_atomic(path, &raw)?;
    Ok(result)
}

fn to_object<T: Serialize>(
    path: &Path,
    value: &T,
) -> Result<serde_json::Map<String, Value>, ModelError> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ModelError::NotAnObject {
            path: path.to_owned(),
        }),
        Err(source) => Err(ModelError::Json {
            path: path.to_owned(),
            source,
        }),
    }
}
