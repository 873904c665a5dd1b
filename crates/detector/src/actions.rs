//! Text for GitHub Actions logs that no outside value can turn into a workflow command.
//!
//! The runner reads every line a step prints, and a line starting with `::` is a
//! workflow command (`::error …::`, `::add-mask::`, `::stop-commands::`, …). A callback
//! payload, a worker's error text or a chunk path comes from outside the repository;
//! printed with a raw line break in it, `"x\n::error title=INJECTED::…"` becomes an
//! annotation of its own. Everything the tools print in Actions that holds such a value
//! goes through [`escape_data`] (a command's message, or any log line) or
//! [`escape_property`] (a command's `key=value` properties), GitHub's own escapes
//! (`@actions/core`'s `escapeData` / `escapeProperty`): the runner turns them back into
//! the original characters when it renders an annotation.

/// Escapes text for a workflow command's message, or for any log line: `%` → `%25`,
/// CR → `%0D`, LF → `%0A`. The result holds no line break, so it can never start a
/// line, let alone a command.
pub fn escape_data(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a workflow command's property value (`file=…`, `title=…`):
/// [`escape_data`], and also `:` → `%3A` (which would end the properties) and `,` →
/// `%2C` (which would start another property).
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// A whole workflow command line: `::<name> <key>=<value>,…::<message>`, every property
/// value and the message escaped. `name` and the keys are the caller's own constants
/// (`error`, `warning`, `file`, `title`), never outside text.
pub fn command(name: &str, properties: &[(&str, &str)], message: &str) -> String {
    let properties = properties
        .iter()
        .map(|(key, value)| format!("{key}={}", escape_property(value)))
        .collect::<Vec<_>>()
        .join(",");
    let space = if properties.is_empty() { "" } else { " " };
    format!("::{name}{space}{properties}::{}", escape_data(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status from the probe.
    const INJECTION: &str = "x\n::error title=INJECTED::pwned\r\n::add-mask::100%";

    #[test]
    fn escaped_text_never_starts_a_command() {
        let data = escape_data(INJECTION);
        assert_eq!(
            data,
            "x%0A::error title=INJECTED::pwned%0D%0A::add-mask::100%25"
        );
        assert!(!data.contains(['\n', '\r']));
        let property = escape_property("a:b,c\n%");
        assert_eq!(property, "a%3Ab%2Cc%0A%25");
        let line = command(
            "error",
            &[("file", "x,y::z"), ("title", INJECTION)],
            INJECTION,
        );
        assert_eq!(line.lines().count(), 1, "{line}");
        // The only `::` separators left are the command's own two.
        assert!(line.starts_with("::error file=x%2Cy%3A%3Az,title=x%0A%3A%3Aerror"));
        assert_eq!(command("notice", &[], "plain"), "::notice::plain");
    }
}
