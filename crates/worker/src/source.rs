//! Where a worker reads chunks from: a checkout on local disk, or a git repository read
//! at the commit each request names (fetched on demand into a bare cache the worker
//! owns).
//!
//! Everything a request names (`chunk_path`, `base_dir`) is untrusted, and is checked by
//! `chunk_model::chunk_path`, which the detector's callbacks use too: the same grammar
//! for both sources ([`relative_path`]); under a tree, the path is resolved and must stay
//! inside the root, symbolic links included, and the file must be a regular file, not a
//! link ([`resolve_in_tree`]). In a repository, paths are looked up in the commit's tree
//! objects, which cannot point outside the repository, and an entry must be a regular
//! blob (a symbolic link's blob is its target's name, not data).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chunk_model::chunk_path::{ChunkPath, ChunkPathFault, TreeRoot};
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use crate::metrics::Metrics;

/// Default limit on one `git` command (a fetch of a large commit included).
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time a worker keeps trying to fetch a commit it does not have yet (the
/// webhook may arrive before the push is visible) before it reports the chunk failed.
pub const DEFAULT_FETCH_RETRY_FOR: Duration = Duration::from_secs(300);
/// Default first pause between fetch attempts; it doubles up to [`MAX_FETCH_BACKOFF`].
pub const DEFAULT_FETCH_BACKOFF: Duration = Duration::from_secs(1);
/// The longest pause between two fetch attempts.
pub const MAX_FETCH_BACKOFF: Duration = Duration::from_secs(30);

/// Where a worker reads the chunks that requests name.
#[derive(Debug, Clone)]
pub enum ChunkSource {
    /// A repository checkout on local disk: `chunk_path`s resolve under this directory,
    /// nothing outside it (through symbolic links either) is read, and a `data.bin` or
    /// `metadata.json` that is a symbolic link is refused, as a blob that is one is.
    /// Requests need not name a commit; the checkout must be up to date before webhooks
    /// arrive.
    Tree(PathBuf),
    /// A git repository read at the commit each request names
    /// (`repository.commit_sha`), fetched on demand.
    Repo(RepoSource),
}

/// A git remote a worker fetches dispatched commits from, and the bare repository it
/// caches them in.
#[derive(Clone)]
pub struct RepoSource {
    /// The remote: `https://…`, `file://…` or a plain path to a repository.
    pub url: String,
    /// A token for private HTTPS repositories (a GitHub PAT). It reaches `git` only
    /// through its environment, as an `http.extraHeader`, never on a command line that
    /// `ps` would show.
    pub token: Option<String>,
    /// The bare repository the worker owns and fetches into; created when missing.
    pub cache_dir: PathBuf,
    /// Limit on one `git` command.
    pub git_timeout: Duration,
    /// How long to keep trying to fetch a commit the remote does not have yet, before
    /// the chunks that need it are reported failed.
    pub fetch_retry_for: Duration,
    /// First pause between fetch attempts (doubling, at most [`MAX_FETCH_BACKOFF`]).
    pub fetch_backoff: Duration,
}

impl RepoSource {
    /// Defaults for fetching from `url` into the bare repository `cache_dir`.
    pub fn new(url: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            token: None,
            cache_dir: cache_dir.into(),
            git_timeout: DEFAULT_GIT_TIMEOUT,
            fetch_retry_for: DEFAULT_FETCH_RETRY_FOR,
            fetch_backoff: DEFAULT_FETCH_BACKOFF,
        }
    }
}

// By hand, so the token never reaches a log line.
impl fmt::Debug for RepoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoSource")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("git_timeout", &self.git_timeout)
            .field("fetch_retry_for", &self.fetch_retry_for)
            .field("fetch_backoff", &self.fetch_backoff)
            .finish()
    }
}

/// Why reading from a repository failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// `git` could not be started.
    #[error("cannot run git {args}: {message}")]
    Spawn {
        /// The arguments.
        args: String,
        /// The system's error.
        message: String,
    },
    /// `git` exited with an error.
    #[error("git {args} failed ({status}): {stderr}")]
    Git {
        /// The arguments.
        args: String,
        /// Its exit status.
        status: String,
        /// The end of what it wrote to standard error.
        stderr: String,
    },
    /// `git` ran past [`RepoSource::git_timeout`] and was killed.
    #[error("git {args} did not finish within {after:?}")]
    Timeout {
        /// The arguments.
        args: String,
        /// The limit.
        after: Duration,
    },
    /// The commit could not be fetched within [`RepoSource::fetch_retry_for`].
    #[error("commit {commit} could not be fetched from {url} within {waited:?}: {last}")]
    CommitUnavailable {
        /// The commit.
        commit: String,
        /// The remote.
        url: String,
        /// How long the worker tried.
        waited: Duration,
        /// The last attempt's error.
        last: String,
    },
    /// The commit has no entry at the path.
    #[error("commit {commit} has no {path}")]
    NotInCommit {
        /// The commit.
        commit: String,
        /// The path inside the repository.
        path: String,
    },
    /// The entry at the path is not a regular file (a symbolic link, a directory, a
    /// submodule).
    #[error("{path} at commit {commit} is not a regular file (mode {mode})")]
    NotAFile {
        /// The commit.
        commit: String,
        /// The path inside the repository.
        path: String,
        /// The tree entry's mode.
        mode: String,
    },
    /// `git` answered something this module cannot parse.
    #[error("unexpected output from git {args}: {output:?}")]
    Unexpected {
        /// The arguments.
        args: String,
        /// The output.
        output: String,
    },
}

/// Checks `path` against the chunk-path grammar ([`ChunkPath::parse`]: relative, no `..`,
/// no NUL or backslash) and returns its normal form (`/` separators, no `.` components:
/// the form git trees and object keys use). `what` names the field in messages
/// (`chunk_path`, `base_dir`).
pub(crate) fn relative_path(what: &str, path: &str) -> Result<String, String> {
    ChunkPath::parse(path)
        .map(String::from)
        .map_err(|e| format!("{what} {e}"))
}

/// Resolves `<dir>/<file>` under `root` with [`TreeRoot`]: `dir` must pass the grammar
/// and resolve, symbolic links included, to a directory strictly inside `root`, and
/// `file` must be a regular file there, not a symbolic link. `what` names `dir` in
/// messages (`chunk_path`, `base_dir`), which become the `400` a request gets.
pub(crate) fn resolve_in_tree(
    root: &TreeRoot,
    what: &str,
    dir: &str,
    file: &str,
) -> Result<PathBuf, String> {
    let dir = ChunkPath::parse(dir).map_err(|e| format!("{what} {e}"))?;
    root.resolve_file(&dir, file)
        .map_err(|e| format!("{what} {e}"))
}

/// [`resolve_in_tree`] for many directories, in order, with each answer the same: the
/// directories they share (a file's chunks sit in one) are looked at once per call
/// ([`TreeRoot::resolve_files`]), not once per path.
pub(crate) fn resolve_many_in_tree<'a>(
    root: &TreeRoot,
    what: &str,
    dirs: impl IntoIterator<Item = &'a str>,
    file: &str,
) -> Vec<Result<PathBuf, NotInTree>> {
    let refused = |message: String| NotInTree {
        message,
        missing: false,
    };
    let parsed: Vec<Result<ChunkPath, String>> = dirs
        .into_iter()
        .map(|dir| ChunkPath::parse(dir).map_err(|e| format!("{what} {e}")))
        .collect();
    let mut resolved = root
        .resolve_files(parsed.iter().flatten(), file)
        .into_iter();
    parsed
        .iter()
        .map(|dir| match dir {
            Ok(_) => match resolved.next() {
                Some(path) => path.map_err(|e| NotInTree {
                    missing: matches!(e.fault, ChunkPathFault::Missing { .. }),
                    message: format!("{what} {e}"),
                }),
                None => Err(refused(format!("{what}: the path check gave no answer"))),
            },
            Err(e) => Err(refused(e.clone())),
        })
        .collect()
}

/// Why [`resolve_many_in_tree`] gave no path: the message (a request's `400`), and
/// whether the file, or a directory on its way, is simply not there.
#[derive(Debug, Clone)]
pub(crate) struct NotInTree {
    pub(crate) message: String,
    pub(crate) missing: bool,
}

impl std::fmt::Display for NotInTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks a commit id: 40 (SHA-1) or 64 (SHA-256) hex digits. Returns it lowercased.
pub(crate) fn commit_id(commit: &str) -> Result<String, String> {
    if (commit.len() == 40 || commit.len() == 64) && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(commit.to_ascii_lowercase())
    } else {
        Err(format!(
            "repository.commit_sha {commit:?} is not a commit id (40 or 64 hex digits)"
        ))
    }
}

/// The source a running worker reads from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A checkout, its root's real path found once (not once per chunk: that was two
    /// `canonicalize` calls, a `readlink` per component, for every chunk path).
    Tree(TreeRoot),
    /// A repository.
    Repo(Arc<GitCache>),
}

/// What a worker's own `git` says about one path at one commit.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The blob's object id.
    pub(crate) oid: String,
    /// Its length.
    pub(crate) size: u64,
}

type FetchFuture = Shared<BoxFuture<'static, Result<(), SourceError>>>;

/// The bare repository a worker fetches dispatched commits into.
#[derive(Debug)]
pub(crate) struct GitCache {
    config: RepoSource,
    metrics: Arc<Metrics>,
    /// Commits known to be in the cache, so jobs for them skip even the `git` check.
    present: Mutex<HashSet<String>>,
    /// The fetch (with its retries) in progress per commit: every job for that commit
    /// awaits the same one, so a commit is fetched once however many chunks need it.
    fetching: Mutex<HashMap<String, FetchFuture>>,
}

impl GitCache {
    /// Creates the bare cache repository when missing. Runs at start-up, before any
    /// async runtime work, so it uses a blocking child with a deadline.
    pub(crate) fn open(config: RepoSource, metrics: Arc<Metrics>) -> Result<Self, SourceError> {
        if !config.cache_dir.join("objects").is_dir() {
            let args = ["init", "--bare", "--quiet"];
            let mut child = std::process::Command::new("git")
                .args(args)
                .arg(&config.cache_dir)
                .env("GIT_TERMINAL_PROMPT", "0")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| SourceError::Spawn {
                    args: args.join(" "),
                    message: e.to_string(),
                })?;
            let deadline = Instant::now() + config.git_timeout;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(SourceError::Timeout {
                            args: args.join(" "),
                            after: config.git_timeout,
                        });
                    }
                }
            };
            if !status.success() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                return Err(SourceError::Git {
                    args: format!("{} {}", args.join(" "), config.cache_dir.display()),
                    status: status.to_string(),
                    stderr: tail(&stderr),
                });
            }
        }
        Ok(Self {
            config,
            metrics,
            present: Mutex::default(),
            fetching: Mutex::default(),
        })
    }

    /// Runs `git` on the cache with `args`; `remote` adds the credentials for the
    /// remote. Returns standard output.
    async fn git(&self, args: &[&str], remote: bool) -> Result<Vec<u8>, SourceError> {
        let shown = args.join(" ");
        let mut command = tokio::process::Command::new("git");
        command
            .arg("--git-dir")
            .arg(&self.config.cache_dir)
            // Unreferenced commits fetched by id must survive; the cache is the worker's
            // and only grows with what it is asked for.
            .args(["-c", "gc.auto=0"])
            // Fetched objects stay in their pack, which appears whole (its index is
            // renamed into place last). Unpacked into loose objects (git does that for
            // fewer than 100), a commit is written before its trees: a read for a commit
            // that a concurrent fetch had half written failed with "Could not read
            // <tree>" (seen under load in CI).
            .args(["-c", "fetch.unpackLimit=1"])
            .args(args)
            // Never wait for a password on a terminal that is not there.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            // Paths are names, never patterns.
            .env("GIT_LITERAL_PATHSPECS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if remote && let Some(token) = &self.config.token {
            // Through the environment (`GIT_CONFIG_COUNT`), not `-c`: a command line is
            // visible to every user in `ps`, a process's environment only to its owner.
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        let child = command.spawn().map_err(|e| SourceError::Spawn {
            args: shown.clone(),
            message: e.to_string(),
        })?;
        let output =
            match tokio::time::timeout(self.config.git_timeout, child.wait_with_output()).await {
                Ok(Ok(output)) => output,
                Ok(Err(e)) => {
                    return Err(SourceError::Spawn {
                        args: shown,
                        message: e.to_string(),
                    });
                }
                // Dropping the future kills the child (`kill_on_drop`).
                Err(_) => {
                    return Err(SourceError::Timeout {
                        args: shown,
                        after: self.config.git_timeout,
                    });
                }
            };
        if !output.status.success() {
            return Err(SourceError::Git {
                args: shown,
                status: output.status.to_string(),
                stderr: tail(&String::from_utf8_lossy(&output.stderr)),
            });
        }
        Ok(output.stdout)
    }

    /// Whether the commit is in the cache (known, or found by `git`).
    async fn has_commit(&self, commit: &str) -> bool {
        if self.is_present(commit) {
            return true;
        }
        let spec = format!("{commit}^{{commit}}");
        let found = self.git(&["cat-file", "-e", &spec], false).await.is_ok();
        if found {
            self.present
                .lock()
                .expect("present lock")
                .insert(commit.to_owned());
        }
        found
    }

    /// Whether the commit is known to be in the cache, without running `git`.
    pub(crate) fn is_present(&self, commit: &str) -> bool {
        self.present.lock().expect("present lock").contains(commit)
    }

    /// One fetch attempt: the commit by id (GitHub and `git` ≥ 2.x serve reachable
    /// commits by id), and when the remote refuses that, every branch.
    async fn fetch(&self, commit: &str) -> Result<(), SourceError> {
        self.metrics.add_git_fetch();
        let url = self.config.url.as_str();
        let base = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"];
        let by_id = [&base[..], &["--", url, commit]].concat();
        match self.git(&by_id, true).await {
            Ok(_) => Ok(()),
            Err(by_id_error) => {
                tracing::debug!(%commit, "fetching by id failed ({by_id_error}); fetching all branches");
                let all = [
                    &base[..],
                    &["--", url, "+refs/heads/*:refs/remotes/origin/*"],
                ]
                .concat();
                self.git(&all, true).await.map(|_| ())
            }
        }
    }

    /// Makes sure the commit is in the cache: fetches it when it is not, retrying with
    /// backoff for up to [`RepoSource::fetch_retry_for`], since a webhook may arrive
    /// before its push is visible. Concurrent callers for the same commit share one
    /// fetch; callers for other commits do not wait for it.
    pub(crate) async fn ensure(self: &Arc<Self>, commit: &str) -> Result<(), SourceError> {
        if self.is_present(commit) {
            return Ok(());
        }
        let fetch = {
            let mut fetching = self.fetching.lock().expect("fetching lock");
            fetching
                .entry(commit.to_owned())
                .or_insert_with(|| {
                    let cache = self.clone();
                    let commit = commit.to_owned();
                    async move { cache.fetch_with_retries(&commit).await }
                        .boxed()
                        .shared()
                })
                .clone()
        };
        let result = fetch.clone().await;
        // The first caller back clears the entry, so a later request for a commit that
        // could not be fetched starts a fresh round of attempts.
        let mut fetching = self.fetching.lock().expect("fetching lock");
        if fetching.get(commit).is_some_and(|f| f.ptr_eq(&fetch)) {
            fetching.remove(commit);
        }
        result
    }

    async fn fetch_with_retries(&self, commit: &str) -> Result<(), SourceError> {
        let start = Instant::now();
        let mut backoff = self.config.fetch_backoff;
        loop {
            if self.has_commit(commit).await {
                return Ok(());
            }
            let error = match self.fetch(commit).await {
                // A fetch that "succeeded" fetched branches without the commit.
                Ok(()) if self.has_commit(commit).await => return Ok(()),
                Ok(()) => format!("no branch of {} contains it yet", self.config.url),
                // A failed fetch may still have brought the commit (a concurrent fetch of
                // all branches held a ref lock, say).
                Err(_) if self.has_commit(commit).await => return Ok(()),
                Err(e) => e.to_string(),
            };
            let waited = start.elapsed();
            if waited + backoff > self.config.fetch_retry_for {
                return Err(SourceError::CommitUnavailable {
                    commit: commit.to_owned(),
                    url: self.config.url.clone(),
                    waited,
                    last: error,
                });
            }
            tracing::info!(%commit, "commit not fetchable yet ({error}); retrying in {backoff:?}");
            // A pause between attempts, not a synchronisation: nothing tells a worker
            // when a push becomes visible.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_FETCH_BACKOFF);
        }
    }

    /// The regular file at `path` in `commit` (which must be in the cache).
    pub(crate) async fn entry(&self, commit: &str, path: &str) -> Result<Entry, SourceError> {
        let args = ["ls-tree", "-l", "-z", commit, "--", path];
        let out = self.git(&args, false).await?;
        let unexpected = || SourceError::Unexpected {
            args: args.join(" "),
            output: String::from_utf8_lossy(&out).into_owned(),
        };
        // `<mode> SP <type> SP <object> SP+ <size> TAB <path> NUL`
        let Some(record) = out.split(|&b| b == 0).find(|r| !r.is_empty()) else {
            return Err(SourceError::NotInCommit {
                commit: commit.to_owned(),
                path: path.to_owned(),
            });
        };
        let text = std::str::from_utf8(record).map_err(|_| unexpected())?;
        let (info, name) = text.split_once('\t').ok_or_else(unexpected)?;
        if name != path {
            return Err(SourceError::NotInCommit {
                commit: commit.to_owned(),
                path: path.to_owned(),
            });
        }
        let fields: Vec<&str> = info.split_whitespace().collect();
        let [mode, kind, oid, size] = fields[..] else {
            return Err(unexpected());
        };
        if kind != "blob" || !(mode == "100644" || mode == "100755") {
            return Err(SourceError::NotAFile {
                commit: commit.to_owned(),
                path: path.to_owned(),
                mode: mode.to_owned(),
            });
        }
        Ok(Entry {
            oid: oid.to_owned(),
            size: size.parse().map_err(|_| unexpected())?,
        })
    }

    /// The bytes of a blob.
    pub(crate) async fn blob(&self, oid: &str) -> Result<Vec<u8>, SourceError> {
        self.git(&["cat-file", "blob", oid], false).await
    }

    /// The regular file at `path` in `commit`, whole.
    pub(crate) async fn read(&self, commit: &str, path: &str) -> Result<Vec<u8>, SourceError> {
        let entry = self.entry(commit, path).await?;
        self.blob(&entry.oid).await
    }
}

/// The last few hundred characters of a command's error output, enough to say why.
fn tail(text: &str) -> String {
    let text = text.trim();
    let start = text.char_indices().rev().nth(499).map_or(0, |(i, _)| i);
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised_and_escapes_refused() {
        assert_eq!(
            relative_path("p", "./pending_compression/a/chunk_0000/").unwrap(),
            "pending_compression/a/chunk_0000"
        );
        // The same grammar as a callback's: refused with the field's name and the path.
        for bad in ["", ".", "/etc", "a/../b", "../a", "a\\b", "a\0b"] {
            let message = relative_path("base_dir", bad).unwrap_err();
            assert!(
                message.starts_with(&format!("base_dir {bad:?} ")),
                "{message}"
            );
        }
    }

    #[test]
    fn commit_ids_are_40_or_64_hex_digits() {
        let sha1 = "A".repeat(40);
        assert_eq!(commit_id(&sha1).unwrap(), "a".repeat(40));
        assert!(commit_id(&"0".repeat(64)).is_ok());
        for bad in ["", "abc", "main", &"g".repeat(40), &"0".repeat(41)] {
            assert!(commit_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let mut source = RepoSource::new("https://github.com/o/r", "/cache");
        source.token = Some("ghp_secret".into());
        assert!(!format!("{source:?}").contains("ghp_secret"));
    }
}
