//! What every command shares, so they all speak alike: the size and duration parsers,
//! human byte counts, the one progress-bar style, the global `-v/-q`, writing to a
//! stdout that may be a closed pipe, and the one-line error report.

use std::io::Write as _;
use std::sync::atomic::{AtomicI8, Ordering};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Options every command takes (`panini -q chunk …`, `panini chunk -v …`).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct GlobalArgs {
    /// More log output on stderr (-v: info, -vv: debug); RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr: no progress bars, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// -1 quiet, 0 default, 1.. verbose; set once by [`super::run`].
static VERBOSITY: AtomicI8 = AtomicI8::new(0);

pub(crate) fn set_verbosity(global: &GlobalArgs) {
    let level = if global.quiet {
        -1
    } else {
        global.verbose.min(3) as i8
    };
    VERBOSITY.store(level, Ordering::Relaxed);
}

/// The log filter for a command whose default is `default`, after `-v`/`-q`.
pub(crate) fn log_filter(default: &str) -> String {
    match VERBOSITY.load(Ordering::Relaxed) {
        i8::MIN..=-1 => "error".to_owned(),
        0 => default.to_owned(),
        1 => "info".to_owned(),
        2 => "debug".to_owned(),
        _ => "trace".to_owned(),
    }
}

/// Whether `-q` was given.
pub(crate) fn quiet() -> bool {
    VERBOSITY.load(Ordering::Relaxed) < 0
}

/// Writes one line to stdout. A closed pipe (`panini chunk f | head -1`) ends the
/// process quietly with status 0, as ripgrep does: the reader has what it wanted, and a
/// panic from `println!` (exit 101) would read as a crash.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for the commands: see [`write_stdout`].
macro_rules! outln {
    () => { $crate::cli::common::write_stdout(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::common::write_stdout(format_args!($($arg)*)) };
}
pub(crate) use outln;

/// Prints `value` as the one JSON document of a `--json` run.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The one size parser: bytes, or a number with K, M, G, T (powers of 1024; `KiB`,
/// `KB`, `k` are the same), e.g. `4M`, `1GiB`, `512k`, `1.5G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use K, M, G or T, e.g. 4M or 1GiB)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 4096, 4M, 1GiB)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    if bytes < 1.0 {
        return Err("a size must be at least 1 byte".to_owned());
    }
    if bytes.fract() != 0.0 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// The one duration parser: seconds, or a number with `ms`, `s`, `m`, `h`, e.g. `90s`,
/// `30m`, `1.5h`. A plain number is seconds, as the older `--…-s` options took.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "" | "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h, e.g. 90s or 30m)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 30m)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{text:?} is out of range"))
}

/// Sizes as people read them: `12 B`, `1.50 KiB`, `24.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

/// The one progress style: bytes done of total, rate, time left. Hidden when stderr is
/// not a terminal (logs, pipes, CI) or with `-q`.
pub(crate) fn bytes_bar(total: u64, message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), draw_target());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.into());
    bar
}

/// The same style for things counted, not sized (chunks).
pub(crate) fn count_bar(total: u64, message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), draw_target());
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:30}] {human_pos}/{human_len} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.into());
    bar
}

/// Where bars draw: stderr when it is a terminal and output is not quiet.
pub(crate) fn draw_target() -> ProgressDrawTarget {
    use std::io::IsTerminal as _;
    if quiet() || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}

/// `n thing` or `n things`.
pub(crate) fn plural(n: impl Into<u64>, thing: &str) -> String {
    crate::pipeline::plural(n.into(), thing)
}

/// Whether `error` comes from writing to a pipe whose reader has gone.
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error as one line: each cause once (a cause whose text the line already holds is
/// dropped, so `x: Is a directory (os error 21): Is a directory (os error 21)` does not
/// happen), then a hint on the next line where one is known.
pub(crate) fn error_report(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    // A cause may itself name what its context named (`list x.json: x.json: No such
    // file`): drop a segment the one before it ends with.
    let mut segments: Vec<&str> = Vec::new();
    for segment in line.split(": ") {
        if segments.last().is_some_and(|last| last.ends_with(segment)) {
            continue;
        }
        segments.push(segment);
    }
    let line = segments.join(": ");
    match hint(&line) {
        Some(hint) => format!("error: {line}\nhint: {hint}"),
        None => format!("error: {line}"),
    }
}

fn hint(line: &str) -> Option<&'static str> {
    if line.contains(detector::DEFAULT_OUTPUT) && line.contains("No such file") {
        Some("run `panini detect` first: it writes the list of chunks to dispatch")
    } else if line.contains("the file GOOGLE_APPLICATION_CREDENTIALS names") {
        Some(
            "point GOOGLE_APPLICATION_CREDENTIALS at a service-account key file (JSON, as the \
             Cloud console downloads it), or unset it to use gcloud's application-default login",
        )
    } else if line.contains("credential")
        || line.contains("metadata server")
        || line.contains("ADC")
    {
        Some(
            "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run \
             `gcloud auth application-default login`, or pass --endpoint for an emulator",
        )
    } else if line.contains("invalid store URL") {
        Some(
            "e.g. --bucket gs://my-bucket/panini, --bucket file:///srv/bucket or --bucket ./bucket",
        )
    } else if line.contains("manifest.json") && line.contains("No such file") {
        Some("chunk the file first (`panini chunk FILE`), or point --base at the chunk tree")
    } else {
        None
    }
}

/// The choices of a `--strategy`, `--codec` or `--engine` option, listed in `--help`
/// and checked by clap (the types live in other crates, so they cannot derive
/// `ValueEnum`; the listed names are exactly what their `FromStr` accepts).
pub(crate) fn choice<T>(
    names: &'static [&'static str],
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(names)
        .map(|name| name.parse::<T>().expect("a listed name parses"))
}

/// `--strategy`'s names.
pub(crate) const STRATEGIES: &[&str] = &["semantic", "size", "adaptive"];
/// `--codec`'s names.
pub(crate) const CODECS: &[&str] = &["auto", "lz4", "zstd", "store"];
/// `--engine`'s names.
pub(crate) const ENGINES: &[&str] = &["auto", "cpu", "opencl"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(human_bytes(12), "12 B");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn every_listed_choice_parses() {
        for name in STRATEGIES {
            name.parse::<chunk_model::Strategy>().unwrap();
        }
        for name in CODECS {
            name.parse::<gpu_compress::CodecChoice>().unwrap();
        }
        for name in ENGINES {
            name.parse::<gpu_compress::EngineChoice>().unwrap();
        }
    }

    #[test]
    fn errors_do_not_repeat_their_causes() {
        let io = std::io::Error::from_raw_os_error(21);
        let err =
            anyhow::Error::new(io).context(format!("x: {}", std::io::Error::from_raw_os_error(21)));
        let line = error_report(&err);
        assert_eq!(line.matches("os error 21").count(), 1, "{line}");
        let err = anyhow::anyhow!("chunk list a.json: a.json: No such file or directory");
        assert_eq!(
            error_report(&err),
            "error: chunk list a.json: No such file or directory"
        );
    }
}

/// How the folders among a command's inputs are walked (`chunk`, `pipeline`).
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Leave out paths inside folders that match GLOB (.gitignore syntax, relative to the
    /// folder given: `*.log`, `build/`, `/out`); repeatable. Files named are always taken.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Take hidden files and folders (names starting with `.`) in folders too.
    #[arg(long)]
    pub hidden: bool,
    /// Take files that .gitignore, .ignore or .git/info/exclude rules leave out.
    #[arg(long)]
    pub no_ignore: bool,
}

impl InputArgs {
    /// The walk these arguments ask for.
    pub fn options(&self) -> chunker::InputOptions {
        chunker::InputOptions {
            exclude: self.exclude.clone(),
            hidden: self.hidden,
            no_ignore: self.no_ignore,
            ..chunker::InputOptions::default()
        }
    }
}

/// A secret from the first line of `file` when given, else from the environment
/// variable `env`; never from a command-line value, which every user sees in `ps`.
pub(crate) fn secret(file: Option<&std::path::Path>, env: &str) -> anyhow::Result<Option<String>> {
    match file {
        Some(path) => read_secret_file(path).map(Some),
        None => Ok(std::env::var(env).ok().filter(|v| !v.is_empty())),
    }
}

/// The secret in the first line of `path` (a token file, mode 0600 by convention).
pub(crate) fn read_secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the secret file {}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        anyhow::bail!("the secret file {} is empty", path.display());
    }
    Ok(secret)
}
