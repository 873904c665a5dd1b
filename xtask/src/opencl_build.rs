//! Building `cargo xtask` with OpenCL exactly when the machine can link it.
//!
//! The `opencl` feature links libOpenCL at build time, so a default build with it would
//! fail on a fresh machine that has only Rust, before `cargo xtask ci` could install
//! anything. xtask is therefore built without it, and on start re-executes the same
//! command from a build with `--features opencl` when the OpenCL loader is installed.
//! `PANINI_XTASK_OPENCL=0` turns this off; `cargo run -p xtask --features opencl -- …`
//! asks for it explicitly.

use std::path::Path;
use std::process::Command;

/// Set in the re-executed process so it never re-executes again.
const GUARD: &str = "PANINI_XTASK_OPENCL";

/// Replaces this process with an OpenCL-enabled build of xtask when one can be built.
/// Returns (and the caller goes on without OpenCL) when it cannot or need not.
pub fn reexec_with_opencl_if_available() {
    if cfg!(feature = "opencl") || std::env::var_os(GUARD).is_some() || !opencl_linkable() {
        return;
    }
    // Only when started through cargo: a copied xtask binary runs as it was built.
    let Some(cargo) = std::env::var_os("CARGO") else {
        return;
    };
    let mut command = Command::new(cargo);
    command
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--features",
            "opencl",
            "--",
        ])
        .args(std::env::args_os().skip(1))
        .env(GUARD, "1");
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // exec, not spawn: signals (SIGTERM to a worker) reach the real process.
        let error = command.exec();
        eprintln!("xtask: could not re-run with OpenCL ({error}); continuing without it");
    }
    #[cfg(not(unix))]
    {
        let _ = command;
    }
}

/// The linker needs the unversioned `libOpenCL.so` (Debian: `ocl-icd-opencl-dev`).
fn opencl_linkable() -> bool {
    let multiarch = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    let mut dirs = vec![
        multiarch,
        "/usr/lib".into(),
        "/usr/lib64".into(),
        "/usr/local/lib".into(),
    ];
    if let Some(paths) = std::env::var_os("LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&paths).map(|p| p.to_string_lossy().into_owned()));
    }
    dirs.iter()
        .any(|dir| Path::new(dir).join("libOpenCL.so").exists())
}
