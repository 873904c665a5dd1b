//! SIGTERM and SIGINT as the worker's shutdown signal, kept in place whatever a driver
//! does to them.
//!
//! A worker drains on SIGTERM (what systemd and every orchestrator send): it stops
//! accepting, finishes the chunks it accepted and reports them. Some OpenCL drivers load
//! code that installs its own handlers for these signals when the platform is probed or
//! a kernel is built (PoCL's LLVM installs handlers that clean up and re-raise with the
//! default action): after that, SIGTERM kills the process at once and accepted work is
//! lost. So the worker installs its handlers, remembers them, and puts them back
//! ([`reassert`]) after building the compressor and after every compression batch.

use std::io;

/// The signals the worker drains on.
#[cfg(unix)]
const SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// The dispositions [`install`] saw right after installing the handlers.
#[cfg(unix)]
static INSTALLED: std::sync::Mutex<Vec<(libc::c_int, libc::sigaction)>> =
    std::sync::Mutex::new(Vec::new());

/// The installed shutdown signal: resolves [`ShutdownSignal::recv`] on SIGTERM or SIGINT.
#[derive(Debug)]
pub struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

/// Installs the SIGTERM and SIGINT handlers now (in a Tokio runtime) and remembers them,
/// so [`reassert`] can put them back. Call it before building the compressor, and pass
/// [`ShutdownSignal::recv`] to [`crate::Worker::serve`].
pub fn install() -> io::Result<ShutdownSignal> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        let mut saved = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        saved.clear();
        for sig in SIGNALS {
            saved.push((sig, current(sig)?));
        }
        Ok(ShutdownSignal { term, int })
    }
    #[cfg(not(unix))]
    {
        Ok(ShutdownSignal {})
    }
}

impl ShutdownSignal {
    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn recv(self) {
        #[cfg(unix)]
        {
            let Self { mut term, mut int } = self;
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The current disposition of `sig`.
#[cfg(unix)]
fn current(sig: libc::c_int) -> io::Result<libc::sigaction> {
    // SAFETY: a zeroed `sigaction` is a valid value of the plain C struct, and a null
    // `act` only queries: nothing is changed.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }
}

/// Whether the handlers [`install`] installed are still the process's: `false` when
/// [`install`] was not called or something replaced one since.
pub fn are_ours() -> bool {
    #[cfg(unix)]
    {
        let saved = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        !saved.is_empty()
            && saved.iter().all(|(sig, ours)| {
                current(*sig).is_ok_and(|now| now.sa_sigaction == ours.sa_sigaction)
            })
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Puts back the handlers [`install`] installed where something replaced them (an
/// OpenCL driver, see the module documentation) and returns how many it put back.
/// Does nothing when [`install`] was not called: a library user who handles signals
/// their own way keeps them.
pub fn reassert() -> usize {
    #[cfg(unix)]
    {
        let saved = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        let mut restored = 0;
        for (sig, ours) in saved.iter() {
            let Ok(now) = current(*sig) else { continue };
            if now.sa_sigaction == ours.sa_sigaction {
                continue;
            }
            // SAFETY: `ours` is the disposition the kernel reported for this signal
            // right after Tokio installed its handler, which stays installed for the
            // life of the process; setting it again only re-points the signal at it.
            let set = unsafe { libc::sigaction(*sig, ours, std::ptr::null_mut()) };
            if set == 0 {
                restored += 1;
                tracing::warn!(
                    signal = *sig,
                    "a driver replaced the worker's signal handler; put it back so the \
                     worker drains on SIGTERM"
                );
            } else {
                tracing::error!(
                    signal = *sig,
                    "cannot restore the worker's signal handler: {}",
                    io::Error::last_os_error()
                );
            }
        }
        restored
    }
    #[cfg(not(unix))]
    {
        0
    }
}
