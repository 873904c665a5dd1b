//! Decides whether this build has the OpenCL engine.
//!
//! With the `opencl` feature on, the engine is compiled in when the OpenCL loader
//! (`libOpenCL.so`, or the runtime's `libOpenCL.so.1`) is on this machine, and left out
//! otherwise, so one `cargo build` works on a machine with only Rust and on a GPU
//! machine alike, with no feature to remember and no rebuild between `cargo build` and
//! `cargo xtask`. Without the loader, the `ocl` crate is never referenced and so never
//! linked. `PANINI_OPENCL=0` leaves the engine out; `PANINI_OPENCL=1` demands it (the
//! build fails at link time if the loader is missing).
//!
//! Only the runtime package (Debian `ocl-icd-libopencl1`) is needed: when the
//! unversioned development link is missing, one is made in `OUT_DIR` and put on the
//! link path.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(panini_opencl)");
    println!("cargo::rerun-if-env-changed=PANINI_OPENCL");
    println!("cargo::rerun-if-env-changed=LIBRARY_PATH");
    if std::env::var_os("CARGO_FEATURE_OPENCL").is_none() {
        return;
    }
    let wanted = std::env::var("PANINI_OPENCL").unwrap_or_default();
    if wanted == "0" {
        return;
    }
    let dirs = candidate_dirs();
    let found = dirs.iter().find_map(|dir| {
        ["libOpenCL.so", "libOpenCL.so.1"]
            .into_iter()
            .map(|name| dir.join(name))
            .find(|path| path.exists())
    });
    match found {
        Some(library) => {
            // Rebuild if the loader goes away; an existing path costs nothing to watch.
            println!("cargo::rerun-if-changed={}", library.display());
            if library.file_name().is_some_and(|n| n == "libOpenCL.so.1") {
                link_versioned(&library);
            }
            println!("cargo::rustc-cfg=panini_opencl");
        }
        None if wanted == "1" => {
            // Asked for: let the link fail loudly rather than build a CPU-only binary.
            println!("cargo::rustc-cfg=panini_opencl");
        }
        None => {
            // Rebuild when a loader is installed later (e.g. by `cargo xtask ci`): watch
            // the directories it would appear in (a missing path would rerun every build).
            for dir in dirs.iter().filter(|d| d.is_dir()) {
                println!("cargo::rerun-if-changed={}", dir.display());
            }
            println!(
                "cargo::warning=no OpenCL loader (libOpenCL.so.1) found: built with the CPU engine only; \
                 install ocl-icd-libopencl1 and rebuild for the OpenCL engine"
            );
        }
    }
}

/// Where Debian and most distributions put the loader, plus `LIBRARY_PATH`.
fn candidate_dirs() -> Vec<PathBuf> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let mut dirs = vec![
        PathBuf::from(format!("/usr/lib/{arch}-linux-gnu")),
        PathBuf::from("/usr/lib64"),
        PathBuf::from("/usr/local/lib"),
    ];
    if let Some(paths) = std::env::var_os("LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs
}

/// Makes `OUT_DIR/libOpenCL.so` point at the runtime library so `-lOpenCL` links
/// without the development package.
fn link_versioned(library: &Path) {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let link = out.join("libOpenCL.so");
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    std::os::unix::fs::symlink(library, &link).expect("linking libOpenCL.so in OUT_DIR");
    println!("cargo::rustc-link-search=native={}", out.display());
}
