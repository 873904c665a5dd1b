//! A new user's first hour (issue #15): the README's quick start and the walkthrough of
//! docs/OPERATIONS.md section 6, read from the documents themselves and run with the
//! built binary, so a command the docs show that no longer parses or runs fails here.
//!
//! Substitutions, each because this machine is not the deployment: `cargo xtask` is the
//! built xtask binary; `panini` is the same binary (its user commands are panini's);
//! `gs://my-bucket/panini` is a local `file://` bucket; the GitHub Actions steps and the
//! GPU workers (steps 2 to 4, comments in the walkthrough) are `pipeline --base`, which
//! runs detect, dispatch to in-process workers over HTTP, compression and sync on the
//! pushed tree (the full GitHub flow is crates/panini/tests/actions_loop.rs);
//! `cargo xtask ci` is not run: it is the whole CI, which runs this test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The shell blocks (```sh) of a Markdown document, in order.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, fence) if fence.starts_with("```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// The commands of a shell block: comments dropped, `a && b` split.
fn commands(block: &str) -> Vec<String> {
    block
        .lines()
        .map(|line| line.split(" #").next().unwrap_or("").trim())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .flat_map(|line| line.split("&&").map(|c| c.trim().to_owned()))
        .collect()
}

/// Splits a command into words (the docs' commands quote nothing but commit messages).
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = command;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        rest = &rest[start..];
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("a closing quote");
            out.push(quoted[..end].to_owned());
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

fn xtask(args: &[String], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(cwd)
        .env_remove("GOOGLE_ONE_BUCKET")
        .env_remove("STORAGE_EMULATOR_HOST")
        .env_remove("COLAB_AUTH_TOKEN")
        .env_remove("PANINI_WEBHOOK_SECRET")
        .output()
        .expect("the xtask binary runs")
}

fn git(args: &[String], cwd: &Path) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "New User")
        .env("GIT_AUTHOR_EMAIL", "user@example.com")
        .env("GIT_COMMITTER_NAME", "New User")
        .env("GIT_COMMITTER_EMAIL", "user@example.com")
        .output()
        .expect("git runs")
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let readme = std::fs::read_to_string(project_root().join("README.md")).unwrap();
    let section = &readme[readme.find("## Quick start").expect("a quick start")..];
    let block = shell_blocks(section)
        .into_iter()
        .next()
        .expect("a shell block");
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for command in commands(&block) {
        let words = words(&command);
        assert_eq!(words[..2], ["cargo", "xtask"], "{command}");
        if words[2] == "ci" {
            continue; // The whole CI, which runs this test.
        }
        let out = xtask(&words[2..], dir.path());
        check(&out, &command);
        ran += 1;
        if words[2] == "pipeline" {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("rebuilt, SHA-256 ok"), "{stdout}");
            // Where the README says the work goes: ./panini-work.
            assert!(dir.path().join("panini-work/bucket/recipes").is_dir());
            assert!(
                readme.contains("panini-work"),
                "the README names the work directory"
            );
        }
    }
    assert!(ran > 0, "the quick start ran no command");
}

#[test]
fn the_operations_walkthrough_runs_as_written() {
    let ops = std::fs::read_to_string(project_root().join("docs/OPERATIONS.md")).unwrap();
    let section = &ops[ops.find("## 6.").expect("section 6")..];
    let section = &section[..section.find("\n## 7.").unwrap_or(section.len())];
    let block = shell_blocks(section)
        .into_iter()
        .next()
        .expect("a shell block");
    let all = commands(&block);

    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path().join("clone");
    let elsewhere = dir.path().join("elsewhere");
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let bucket_url = format!("file://{}", bucket.display());
    let s = |v: &[&str]| v.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    check(
        &git(
            &s(&["init", "--bare", "-b", "main", "origin.git"]),
            dir.path(),
        ),
        "git init",
    );
    check(
        &git(&s(&["clone", "origin.git", "clone"]), dir.path()),
        "git clone",
    );
    // The user's files, in the clone.
    let files = samples::sample_set(&clone, 2 << 20).unwrap();
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap();
        if !["photo.png", "movie.mp4"].contains(&name) {
            std::fs::remove_file(&file).unwrap();
        }
    }

    // Step 1 on the user's machine, up to the push; step 5 "anywhere": a new clone.
    let push = all.iter().position(|c| c == "git push").expect("git push") + 1;
    let run = |command: &str, cwd: &Path| {
        let words: Vec<String> = words(command)
            .into_iter()
            .map(|w| w.replace("gs://my-bucket/panini", &bucket_url))
            .collect();
        let out = match words[0].as_str() {
            "panini" => xtask(&words[1..], cwd),
            "git" => git(&words[1..], cwd),
            other => panic!("the walkthrough runs {other}, which this test does not know"),
        };
        check(&out, command);
        out
    };
    for command in &all[..push] {
        run(command, &clone);
    }

    // Steps 2 to 4, as on one machine: the pushed tree through workers into the bucket,
    // its new statuses pushed back (what the callbacks do).
    let out = xtask(
        &s(&[
            "pipeline",
            "--base",
            "pending_compression",
            "--bucket",
            &bucket_url,
            "--workers",
            "1",
        ]),
        &clone,
    );
    check(
        &out,
        "pipeline --base (the stand-in for Actions and workers)",
    );
    check(&git(&s(&["add", "pending_compression"]), &clone), "git add");
    check(
        &git(&s(&["commit", "-qm", "statuses"]), &clone),
        "git commit",
    );
    check(&git(&s(&["push", "-q"]), &clone), "git push");

    check(
        &git(&s(&["clone", "-q", "origin.git", "elsewhere"]), dir.path()),
        "clone",
    );
    let mut saw = Vec::new();
    for command in &all[push..] {
        let out = run(command, &elsewhere);
        saw.push(command.clone());
        if command == "panini status" {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("completed"), "{stdout}");
        }
    }
    assert!(
        saw.iter()
            .any(|c| c.starts_with("panini reconstruct photo")),
        "{saw:?}"
    );
    assert_eq!(
        std::fs::read(elsewhere.join("photo.png")).unwrap(),
        std::fs::read(clone.join("photo.png")).unwrap(),
        "the rebuilt photo is the original, bit for bit"
    );
}
