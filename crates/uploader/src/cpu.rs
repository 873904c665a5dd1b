//! CPU-bound work (decoding, hashing megabytes) from async code, on rayon's pool.
//!
//! tokio's blocking pool grows a thread for every task that finds the others busy (up to
//! 512), and each thread that ever decoded keeps its own zstd context and buffers
//! (`gpu-compress` caches them per thread): a long run grew to 36 threads and several
//! MiB more resident memory than a short one. rayon's pool has one thread per core, the
//! threads `gpu-compress` compresses on already, so those caches exist once per core and
//! CPU work never outnumbers the cores. File I/O stays on the blocking pool.

/// Runs `work` on rayon's pool and waits for it without holding an async thread. A panic
/// comes back as an error, with its message.
pub async fn on_rayon<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        // The receiver is gone only when the caller was dropped.
        let _ = tx.send(outcome);
    });
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())),
        Err(_) => Err("the task was dropped".into()),
    }
}
