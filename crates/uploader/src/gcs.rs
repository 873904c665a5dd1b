//! [`Gcs`]: a Google Cloud Storage bucket (and optional prefix) as an object store.
//!
//! Reads and writes go through the official `google-cloud-storage` crate. Listing and
//! metadata lookups use the JSON API directly over `reqwest` (with the same
//! credentials): that crate only offers them through the gRPC control plane, which
//! the storage emulator used in tests does not serve.
//!
//! Create-only writes use the `ifGenerationMatch=0` precondition on single-request
//! (multipart) uploads; the server answers 412 when the object exists, which is
//! deduplication, not an error. Every write carries the CRC32C of its bytes, which
//! the server checks, and every read is checked against the CRC32C the server
//! recorded.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_storage::client::Storage;
use google_cloud_storage::read_resume_policy::NeverResume;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::local::verify;
use crate::retry::RetryPolicy;
use crate::store::{ObjectInfo, ObjectMeta, ObjectStore, PutOutcome, check_existing, validate_key};
use crate::{Object, StoreError};

/// The public endpoint of Cloud Storage.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// The environment variable that points every Cloud Storage client at an emulator.
pub const EMULATOR_HOST_ENV: &str = "STORAGE_EMULATOR_HOST";

/// The environment variable that names a credentials file (a service-account key) for
/// the Application Default Credentials.
pub const CREDENTIALS_FILE_ENV: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// How to reach Cloud Storage.
#[derive(Debug, Clone, Default)]
pub struct GcsConfig {
    /// Another endpoint: an emulator (`http://127.0.0.1:4443`), or a private or proxied
    /// endpoint of the real service. When unset, `STORAGE_EMULATOR_HOST` is used if set.
    pub endpoint: Option<String>,
    /// What the requests carry.
    pub credentials: GcsCredentials,
    /// Retries of every operation.
    pub retry: RetryPolicy,
}

/// Which credentials the requests carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GcsCredentials {
    /// The convention of Google's client libraries: anonymous when the endpoint is
    /// overridden (an emulator, through [`GcsConfig::endpoint`] or
    /// `STORAGE_EMULATOR_HOST`), [`ApplicationDefault`](Self::ApplicationDefault)
    /// otherwise.
    #[default]
    Auto,
    /// None: an emulator.
    Anonymous,
    /// The Application Default Credentials, whatever the endpoint: the key file that
    /// `GOOGLE_APPLICATION_CREDENTIALS` names, else gcloud's application-default login,
    /// else the machine's service account (metadata server).
    ApplicationDefault,
}

/// Objects up to this size go up in one multipart request; larger ones use a resumable
/// upload session. Chunk objects are a few MiB at most, so they always take the
/// single-request path, the one where the `ifGenerationMatch=0` precondition is
/// honoured everywhere. (fake-gcs-server builds a resumable session's URL from the Host
/// header, which the client library sends without the port, so sessions fail on an
/// emulator that is not on port 80.)
pub const RESUMABLE_THRESHOLD: usize = 256 << 20;

/// A bucket, or a prefix inside one, as an object store.
#[derive(Debug, Clone)]
pub struct Gcs {
    client: Storage,
    http: reqwest::Client,
    credentials: Credentials,
    /// Where the credentials come from, for errors.
    credentials_from: String,
    endpoint: String,
    bucket: String,
    prefix: String,
    retry: RetryPolicy,
}

/// Characters that must be escaped in a URL path segment (object names contain `/`,
/// which the JSON API wants escaped too).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Gcs {
    /// Opens `gs://bucket` or `gs://bucket/prefix`.
    pub async fn from_url(url: &str, config: &GcsConfig) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("gs://")
            .ok_or_else(|| invalid("expected gs://bucket[/prefix]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("empty bucket name"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            validate_key(prefix).map_err(|e| invalid(&e.to_string()))?;
        }
        Self::new(bucket, prefix, config).await
    }

    /// Opens `bucket`, storing every key under `prefix` (`""` for the bucket's root).
    pub async fn new(bucket: &str, prefix: &str, config: &GcsConfig) -> Result<Self, StoreError> {
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| {
                std::env::var(EMULATOR_HOST_ENV)
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .map(|host| {
                if host.contains("://") {
                    host
                } else {
                    format!("http://{host}")
                }
            });
        let anonymous = match config.credentials {
            GcsCredentials::Auto => endpoint.is_some(),
            GcsCredentials::Anonymous => true,
            GcsCredentials::ApplicationDefault => false,
        };
        let (credentials, credentials_from) = if anonymous {
            (
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
                "none (anonymous)".to_owned(),
            )
        } else {
            let from = application_default_source();
            let built = google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| StoreError::Credentials {
                    from: from.clone(),
                    reason: one_line(&e),
                })?;
            (built, from)
        };
        let endpoint = endpoint.unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let client = Storage::builder()
            .with_endpoint(endpoint.clone())
            .with_credentials(credentials.clone())
            // Retries are ours (see `retry`), uniform across the library and JSON calls.
            .with_retry_policy(NeverRetry)
            .with_resumable_upload_threshold(RESUMABLE_THRESHOLD)
            .build()
            .await
            .map_err(|e| StoreError::Client(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| StoreError::Client(e.to_string()))?;
        Ok(Self {
            client,
            http,
            credentials,
            credentials_from,
            endpoint,
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            retry: config.retry,
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn object_name(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    fn gcs_error(
        &self,
        op: &'static str,
        object: &str,
        source: google_cloud_storage::Error,
    ) -> StoreError {
        if source.is_authentication() {
            // The credentials could not make a request's headers (a key that does not
            // parse, a token that cannot be had): no retry helps.
            return StoreError::Credentials {
                from: self.credentials_from.clone(),
                reason: one_line(&source),
            };
        }
        if source.http_status_code() == Some(404) {
            return StoreError::NotFound {
                store: self.url(),
                key: object
                    .strip_prefix(self.prefix.as_str())
                    .unwrap_or(object)
                    .to_owned(),
            };
        }
        StoreError::Gcs {
            op,
            bucket: self.bucket.clone(),
            object: object.to_owned(),
            source: Box::new(source),
        }
    }

    async fn auth_headers(&self) -> Result<reqwest::header::HeaderMap, StoreError> {
        match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            // Only returned when the caller passes a cached entity tag, which we never do.
            Ok(CacheableResource::NotModified) => Ok(reqwest::header::HeaderMap::new()),
            Err(e) => Err(StoreError::Credentials {
                from: self.credentials_from.clone(),
                reason: one_line(&e),
            }),
        }
    }

    /// One JSON API request: the response body, or `Ok(None)` on 404.
    async fn json_api(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<Bytes>, StoreError> {
        let headers = self.auth_headers().await?;
        let request_error = |source| StoreError::Request {
            op,
            url: url.to_owned(),
            source,
        };
        let response = self
            .http
            .request(method, url)
            .headers(headers)
            .query(query)
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = response.bytes().await.map_err(request_error)?;
        if !status.is_success() {
            return Err(StoreError::Http {
                op,
                url: url.to_owned(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            });
        }
        Ok(Some(body))
    }

    /// One JSON API GET, parsed; `Ok(None)` on 404.
    async fn json_get<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<T>, StoreError> {
        let Some(body) = self.json_api(op, reqwest::Method::GET, url, query).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| StoreError::InvalidMetadata {
                key: url.to_owned(),
                field: "response",
                reason: e.to_string(),
            })
    }

    /// The JSON API URL of the object `name`.
    fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            utf8_percent_encode(&self.bucket, SEGMENT),
            utf8_percent_encode(name, SEGMENT)
        )
    }

    fn info_from_resource(&self, resource: JsonObject) -> Result<ObjectInfo, StoreError> {
        let key = resource
            .name
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(&resource.name)
            .to_owned();
        let invalid = |field: &'static str, reason: String| StoreError::InvalidMetadata {
            key: key.clone(),
            field,
            reason,
        };
        let size = resource
            .size
            .parse()
            .map_err(|e: std::num::ParseIntError| invalid("size", e.to_string()))?;
        let crc32c = resource
            .crc32c
            .as_deref()
            .map(|text| {
                decode_crc32c(text)
                    .ok_or_else(|| invalid("crc32c", format!("{text:?} is not 4 base64 bytes")))
            })
            .transpose()?;
        let meta = ObjectMeta::from_lookup(&key, |name| {
            resource
                .metadata
                .as_ref()
                .and_then(|m| m.get(name))
                .map(String::as_str)
        })?;
        let updated = resource
            .updated
            .as_deref()
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            .map(SystemTime::from);
        Ok(ObjectInfo {
            key,
            size,
            crc32c,
            meta,
            updated,
        })
    }

    async fn put_once(
        &self,
        key: &str,
        name: &str,
        bytes: &Bytes,
        crc32c: u32,
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError> {
        let content_type = if key.ends_with(".json") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        // `send_buffered` below the resumable threshold is one multipart request, where
        // the emulator (like the service) honours `ifGenerationMatch=0`; the known CRC32C
        // goes in that request's metadata for the server to check.
        let result = self
            .client
            .write_object(self.bucket_path(), name, bytes.clone())
            .set_if_generation_match(0)
            .set_content_type(content_type)
            .set_metadata(meta.to_pairs())
            .with_known_crc32c(crc32c)
            .with_retry_policy(NeverRetry)
            .send_buffered()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            // The precondition failed: the object exists (maybe written by an earlier
            // attempt of ours whose answer was lost). The caller checks its content.
            Err(e) if e.http_status_code() == Some(412) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.gcs_error("put", name, e)),
        }
    }

    async fn get_once(&self, key: &str, name: &str) -> Result<Object, StoreError> {
        let mut response = self
            .client
            .read_object(self.bucket_path(), name)
            .with_retry_policy(NeverRetry)
            // A read cut short is retried whole by `retry`, under one deadline.
            .with_read_resume_policy(NeverResume)
            .send()
            .await
            .map_err(|e| self.gcs_error("get", name, e))?;
        let highlights = response.object();
        let mut bytes = BytesMut::with_capacity(usize::try_from(highlights.size).unwrap_or(0));
        while let Some(piece) = response.next().await {
            bytes.extend_from_slice(&piece.map_err(|e| self.gcs_error("get", name, e))?);
        }
        let bytes = bytes.freeze();
        let mut crc32c = highlights.checksums.as_ref().and_then(|c| c.crc32c);
        // `x-goog-stored-content-length` is missing on some servers (the emulator):
        // then the CRC32C alone vouches for the length.
        let mut size = u64::try_from(highlights.size).ok().filter(|&s| s > 0);
        if crc32c.is_none() {
            // No `x-goog-hash` on the response: ask for the object's record instead of
            // accepting unverified bytes.
            let info = self
                .stat_once(name)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    store: self.url(),
                    key: key.to_owned(),
                })?;
            crc32c = info.crc32c;
            size = Some(info.size);
        }
        let Some(crc32c) = crc32c else {
            return Err(StoreError::InvalidMetadata {
                key: key.to_owned(),
                field: "crc32c",
                reason: "the server recorded no CRC32C, so the bytes cannot be verified".into(),
            });
        };
        let size = size.unwrap_or(bytes.len() as u64);
        verify(key, &bytes, size, Some(crc32c))?;
        let meta =
            ObjectMeta::from_lookup(key, |k| highlights.metadata.get(k).map(String::as_str))?;
        Ok(Object {
            info: ObjectInfo {
                key: key.to_owned(),
                size,
                crc32c: Some(crc32c),
                meta,
                updated: None,
            },
            bytes,
        })
    }

    async fn stat_once(&self, name: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let url = self.object_url(name);
        match self.json_get::<JsonObject>("stat", &url, &[]).await? {
            Some(resource) => self.info_from_resource(resource).map(Some),
            None => Ok(None),
        }
    }

    /// One JSON API DELETE; `Ok(false)` on 404.
    async fn delete_once(&self, name: &str) -> Result<bool, StoreError> {
        let url = self.object_url(name);
        let deleted = self
            .json_api("delete", reqwest::Method::DELETE, &url, &[])
            .await?;
        Ok(deleted.is_some())
    }

    async fn list_page(
        &self,
        prefix: &str,
        page_token: Option<&str>,
    ) -> Result<JsonList, StoreError> {
        let url = format!(
            "{}/storage/v1/b/{}/o",
            self.endpoint,
            utf8_percent_encode(&self.bucket, SEGMENT)
        );
        let mut query = vec![("prefix", prefix), ("maxResults", "1000")];
        if let Some(token) = page_token {
            query.push(("pageToken", token));
        }
        let page = self.json_get::<JsonList>("list", &url, &query).await?;
        // The listing itself is 404 only when the bucket does not exist.
        page.ok_or_else(|| StoreError::NotFound {
            store: self.url(),
            key: format!("(bucket {})", self.bucket),
        })
    }
}

#[async_trait]
impl ObjectStore for Gcs {
    fn url(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.prefix)
    }

    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> Result<PutOutcome, StoreError> {
        let name = self.object_name(key)?;
        let crc32c = crc32c::crc32c(&bytes);
        let outcome = self
            .retry
            .run("put", key, || {
                self.put_once(key, &name, &bytes, crc32c, meta)
            })
            .await?;
        if outcome == PutOutcome::AlreadyExists {
            let existing = self
                .retry
                .run("stat", key, || self.stat_once(&name))
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    store: self.url(),
                    key: key.to_owned(),
                })?;
            return check_existing(
                &self.url(),
                key,
                &existing,
                bytes.len() as u64,
                crc32c,
                meta,
            );
        }
        Ok(outcome)
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        let name = self.object_name(key)?;
        self.retry
            .run("get", key, || self.get_once(key, &name))
            .await
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let name = self.object_name(key)?;
        self.retry.run("stat", key, || self.stat_once(&name)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut infos = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry
                .run("list", prefix, || {
                    self.list_page(&full_prefix, token.as_deref())
                })
                .await?;
            for item in page.items {
                infos.push(self.info_from_resource(item)?);
            }
            match page.next_page_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        infos.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(infos)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let name = self.object_name(key)?;
        self.retry
            .run("delete", key, || self.delete_once(&name))
            .await
    }
}

/// Where the Application Default Credentials come from, for errors: the key file and the
/// variable that names it, when it does.
fn application_default_source() -> String {
    match std::env::var_os(CREDENTIALS_FILE_ENV) {
        Some(path) => format!(
            "{}, the file {CREDENTIALS_FILE_ENV} names",
            std::path::Path::new(&path).display()
        ),
        None => "the Application Default Credentials".to_owned(),
    }
}

/// An error and its sources on one line (a library's message may span several).
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let more = next.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = next.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The JSON API's object resource, the fields used here.
#[derive(Debug, Deserialize)]
struct JsonObject {
    name: String,
    /// Decimal, as a string (int64 in JSON).
    size: String,
    /// Base64 of the big-endian CRC32C.
    #[serde(default)]
    crc32c: Option<String>,
    #[serde(default)]
    metadata: Option<std::collections::HashMap<String, String>>,
    #[serde(default)]
    updated: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonList {
    #[serde(default)]
    items: Vec<JsonObject>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// The JSON API writes a CRC32C as base64 of its four big-endian bytes.
fn decode_crc32c(text: &str) -> Option<u32> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_base64_big_endian() {
        // The JSON API's documented example: "hello world" has CRC32C yZRlqg==.
        assert_eq!(
            decode_crc32c("yZRlqg=="),
            Some(crc32c::crc32c(b"hello world"))
        );
        assert_eq!(decode_crc32c("yZRl"), None);
        assert_eq!(decode_crc32c("!!"), None);
    }
}
