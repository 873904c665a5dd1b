//! The `chunk_compressed` callback: a GitHub `repository_dispatch` event.

use std::time::Duration;

use chunk_model::ChunkCompressed;
use serde::Serialize;

/// GitHub's REST API.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// The event type the repository's callback workflow listens for.
pub const EVENT_TYPE: &str = "chunk_compressed";

/// Where and how to send callbacks.
#[derive(Clone)]
pub struct GithubConfig {
    /// API base URL (`https://api.github.com`; a local server in tests).
    pub api_base: String,
    /// Repository owner.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// A token allowed to create repository_dispatch events (`GITHUB_PAT`, `repo` scope).
    pub token: String,
}

impl std::fmt::Debug for GithubConfig {
    // The token stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConfig")
            .field("api_base", &self.api_base)
            .field("owner", &self.owner)
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

impl GithubConfig {
    /// A configuration from `OWNER/REPO`, a token and an API base URL.
    pub fn from_slug(
        slug: &str,
        token: impl Into<String>,
        api_base: impl Into<String>,
    ) -> Option<Self> {
        let (owner, repo) = slug.split_once('/')?;
        if owner.is_empty() || repo.is_empty() || repo.contains('/') {
            return None;
        }
        Some(Self {
            api_base: api_base.into(),
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            token: token.into(),
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/repos/{}/{}/dispatches",
            self.api_base.trim_end_matches('/'),
            self.owner,
            self.repo
        )
    }
}

#[derive(Serialize)]
struct Dispatch<'a> {
    event_type: &'static str,
    client_payload: &'a ChunkCompressed,
}

/// Sends one `chunk_compressed` event, retrying transient failures a few times.
/// GitHub answers `204 No Content` on success.
pub(crate) async fn send(
    http: &reqwest::Client,
    config: &GithubConfig,
    payload: &ChunkCompressed,
) -> Result<(), String> {
    let body = serde_json::to_vec(&Dispatch {
        event_type: EVENT_TYPE,
        client_payload: payload,
    })
    .map_err(|e| e.to_string())?;
    let mut delay = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 1..=4 {
        let result = http
            .post(config.url())
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header("Authorization", format!("Bearer {}", config.token))
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                last = format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                );
                // Only rate limits and server errors are worth another try.
                if !(status.is_server_error() || status.as_u16() == 429) {
                    break;
                }
            }
            Err(e) => last = e.to_string(),
        }
        if attempt < 4 {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    Err(format!("repository_dispatch to {}: {last}", config.url()))
}
