//! Giving memory back to the operating system after a burst.
//!
//! glibc's allocator keeps what a burst freed in its per-thread arenas:
//! after a flood of concurrent requests the server's RSS stayed where the
//! burst had taken it, although the memory was free (see the README's
//! flood benchmark). A background task asks glibc to return free pages
//! (`malloc_trim`) every few seconds, on a blocking thread; when nothing is
//! free it costs a walk over the arenas' free lists. Other platforms and
//! allocators need nothing here.

use std::time::Duration;

/// How often free memory is returned.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the trimmer; it stops when `shutdown` turns true.
pub fn spawn_trimmer(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(TRIM_INTERVAL) => {}
            }
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    });
}

/// Returns the allocator's free pages to the operating system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases memory glibc holds as free; it is
    // thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}
