//! The context a dispatch carries to workers: which repository and commit its chunks
//! come from, and which workflow run sent them.
//!
//! Workers started with `--repo` read each chunk at the dispatched commit, so a dispatch
//! always names one: `GITHUB_SHA` in GitHub Actions, else `HEAD` of the repository the
//! chunk tree lives in, else one given explicitly. Values come in through a lookup
//! function, never from this process's environment directly, so the rules are testable.

use std::path::Path;
use std::process::Command;

use chunk_model::wire::{RepositoryRef, WorkflowRef};

use crate::Error;

/// The repository and workflow run from GitHub Actions' variables (`GITHUB_REPOSITORY`,
/// `GITHUB_SHA`, `GITHUB_REF`, `GITHUB_RUN_ID`, `GITHUB_RUN_NUMBER`), when
/// `GITHUB_ACTIONS` is `true`. `var` looks a variable up (e.g. `std::env::var(..).ok()`).
pub fn from_actions(
    var: impl Fn(&str) -> Option<String>,
) -> (Option<RepositoryRef>, Option<WorkflowRef>) {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    if var("GITHUB_ACTIONS").as_deref() != Some("true") {
        return (None, None);
    }
    let repository = var("GITHUB_REPOSITORY").and_then(|slug| {
        let (owner, repo) = slug.split_once('/')?;
        Some(RepositoryRef {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            commit_sha: var("GITHUB_SHA").unwrap_or_default(),
            git_ref: var("GITHUB_REF").unwrap_or_default(),
        })
    });
    let workflow = match (var("GITHUB_RUN_ID"), var("GITHUB_RUN_NUMBER")) {
        (Some(id), Some(number)) => Some(WorkflowRef {
            run_id: id.parse().unwrap_or_default(),
            run_number: number.parse().unwrap_or_default(),
        }),
        _ => None,
    };
    (repository, workflow)
}

/// The repository reference a dispatch sends: the Actions one when there is one, with
/// its commit replaced by `commit` when given; else a reference naming only the commit
/// (`commit`, or `HEAD` of the git repository at `repo_dir`). `None` when no commit can
/// be found (not a git repository): workers reading a local tree need none.
pub fn repository_ref(
    actions: Option<RepositoryRef>,
    commit: Option<&str>,
    repo_dir: &Path,
) -> Result<Option<RepositoryRef>, Error> {
    let commit = match commit {
        Some(commit) => Some(commit.to_owned()),
        None => match actions.as_ref().filter(|r| !r.commit_sha.is_empty()) {
            Some(r) => Some(r.commit_sha.clone()),
            None => head_commit(repo_dir)?,
        },
    };
    let Some(commit_sha) = commit else {
        return Ok(actions);
    };
    Ok(Some(match actions {
        Some(actions) => RepositoryRef {
            commit_sha,
            ..actions
        },
        None => RepositoryRef {
            owner: String::new(),
            repo: String::new(),
            commit_sha,
            git_ref: symbolic_head(repo_dir).unwrap_or_default(),
        },
    }))
}

/// `HEAD`'s commit id in the git repository containing `dir`; `None` outside one.
pub fn head_commit(dir: &Path) -> Result<Option<String>, Error> {
    let output = Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
        .current_dir(dir)
        .output();
    let output = match output {
        Ok(output) => output,
        // No git on this machine: nothing to name, as outside a repository.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Git {
                args: "rev-parse HEAD".into(),
                reason: e.to_string(),
            });
        }
    };
    if !output.status.success() {
        return Ok(None);
    }
    let sha = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok((!sha.is_empty()).then_some(sha))
}

fn symbolic_head(dir: &Path) -> Option<String> {
    let output = Command::new("git")
        .args(["symbolic-ref", "--quiet", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn actions_variables_name_repository_commit_and_run() {
        let (repo, run) = from_actions(env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "octo/photos"),
            ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
            ("GITHUB_REF", "refs/heads/main"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_NUMBER", "7"),
        ]));
        let repo = repo.unwrap();
        assert_eq!(
            (repo.owner.as_str(), repo.repo.as_str()),
            ("octo", "photos")
        );
        assert_eq!(repo.commit_sha, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(run.unwrap().run_id, 42);
        assert_eq!(from_actions(env(&[("GITHUB_SHA", "x")])), (None, None));
    }

    #[test]
    fn an_explicit_commit_wins_and_outside_git_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(repository_ref(None, None, dir.path()).unwrap(), None);
        let r = repository_ref(None, Some("abc"), dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(r.commit_sha, "abc");
    }

    #[test]
    fn head_of_a_real_repository_is_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(ok.status.success(), "{ok:?}");
            String::from_utf8(ok.stdout).unwrap()
        };
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(dir.path().join("f"), "x").unwrap();
        git(&["add", "f"]);
        git(&["commit", "-q", "-m", "one"]);
        let head = git(&["rev-parse", "HEAD"]).trim().to_owned();
        let r = repository_ref(None, None, dir.path()).unwrap().unwrap();
        assert_eq!(r.commit_sha, head);
        assert_eq!(r.git_ref, "refs/heads/main");
    }
}
