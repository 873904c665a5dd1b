//! Every example in the docs is checked (issue #15, item 13): each `panini …` or
//! `cargo xtask …` command in a shell block parses (run with `--help` appended, so
//! clap reads every option and value before it answers), and each JSON example — the
//! ```json blocks and JSON here-documents in shell blocks — is valid JSON whose object
//! keys (`upload_path: chunks/<sha256>.<codec>`) follow the formats the code writes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// README.md and every docs/*.md, with their text.
fn documents() -> Vec<(String, String)> {
    let root = project_root();
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    docs.sort();
    docs.into_iter()
        .map(|p| {
            let name = p.strip_prefix(&root).unwrap().display().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The fenced blocks of one language (`sh`, `json`), their indentation removed.
fn blocks(markdown: &str, language: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut current {
            None if trimmed.strip_prefix("```") == Some(language) => {
                current = Some((indent, String::new()));
            }
            Some(_) if trimmed == "```" => out.push(current.take().unwrap().1),
            Some((indent, block)) => {
                block.push_str(line.get(*indent..).unwrap_or(line.trim_start()));
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Shapes written in prose (`{chunk_info}`, `…`) rather than documents.
fn is_shape(json: &str) -> bool {
    json.contains('…') || json.contains("{chunk_info}")
}

/// Every `upload_path` in `value` names a chunk object as the code stores it.
fn check_keys(value: &serde_json::Value, place: &str) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(path) = map.get("upload_path").and_then(|v| v.as_str()) {
                let (stem, codec) = path.rsplit_once('.').unwrap_or((path, ""));
                assert!(
                    stem.starts_with("chunks/") && ["lz4", "zstd", "store"].contains(&codec),
                    "{place}: upload_path {path:?} is not chunks/<sha256>.<codec>"
                );
            }
            map.values().for_each(|v| check_keys(v, place));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| check_keys(v, place)),
        _ => {}
    }
}

#[test]
fn json_examples_are_valid_and_use_the_real_formats() {
    let mut checked = 0;
    for (name, text) in documents() {
        let mut examples = blocks(&text, "json");
        // Here-documents in shell blocks (`<<'EOF'` … `EOF`) that hold JSON.
        for block in blocks(&text, "sh") {
            let mut rest = block.as_str();
            while let Some(start) = rest.find("<<'EOF'\n") {
                let body = &rest[start + 8..];
                let end = body.find("\nEOF").expect("a closed here-document");
                if body.trim_start().starts_with('{') {
                    examples.push(body[..end].to_owned());
                }
                rest = &body[end..];
            }
        }
        for example in examples {
            if is_shape(&example) {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(&example)
                .unwrap_or_else(|e| panic!("{name}: invalid JSON example ({e}):\n{example}"));
            check_keys(&value, &name);
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} JSON examples found");
}

/// The commands of a shell block that run panini: comments dropped, `a && b` and
/// `a | b` split, environment assignments in front removed.
fn panini_commands(block: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in block.lines() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.starts_with('#') {
            continue;
        }
        for part in line.split("&&").flat_map(|p| p.split(" | ")) {
            let words: Vec<&str> = part
                .split_whitespace()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .take_while(|w| !w.starts_with('>') && !w.starts_with('<'))
                .collect();
            let args = match words.as_slice() {
                ["panini", rest @ ..] => rest,
                ["cargo", "xtask", rest @ ..] => rest,
                _ => continue,
            };
            // `bench compress|upload|dispatch`: each alternative is a command.
            match args.iter().position(|w| w.contains('|')) {
                Some(i) => {
                    for choice in args[i].split('|') {
                        let mut one: Vec<String> = args.iter().map(|w| w.to_string()).collect();
                        one[i] = choice.to_owned();
                        out.push(one);
                    }
                }
                None => out.push(args.iter().map(|w| w.to_string()).collect()),
            }
        }
    }
    out
}

#[test]
fn every_documented_command_parses() {
    let mut checked = 0;
    for (name, text) in documents() {
        for block in blocks(&text, "sh") {
            for args in panini_commands(&block) {
                let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
                    .args(&args)
                    .arg("--help")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{name}: `panini {}` does not parse:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} commands found");
}
