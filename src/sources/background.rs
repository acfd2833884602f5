//! Where a reload runs: off the runtime's threads, below the checks.
//!
//! Data flow: [`super::files`] re-reads and recompiles changed files here,
//! on a thread of its own whose CPU priority is lowered ([`NICENESS`]), so
//! that on a busy CPU the checks (the runtime's workers, at normal
//! priority) run first and a 20,000-rule compile takes only the time they
//! leave. The value a reload replaced is dropped here too ([`retire`]), not
//! on whichever request thread happens to hold its last reference.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much the reload thread's nice value is raised (Linux: per thread).
const NICENESS: i32 = 10;

/// How long [`retire`] waits for the checks in flight to let go of a
/// replaced value before leaving its drop to them.
const RETIRE_WAIT: Duration = Duration::from_secs(1);

/// Runs `work` on a new thread at a lower CPU priority than the checks and
/// waits for it without holding a runtime thread; `None` when it panicked
/// or no thread could be started (the next event or resync tries again).
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("celador-reload".into())
        .spawn(move || {
            // Best effort: where the priority cannot change, the reload
            // runs at the checks' own, as it did on the blocking pool.
            let _ = rustix::process::nice(NICENESS);
            let _ = tx.send(work());
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a thread to reload files");
        return None;
    }
    rx.await.ok()
}

/// Drops `old` (a replaced policy: dropping 20,000 compiled rules takes
/// tens of milliseconds) on the calling thread once the checks still
/// holding it are done, waiting at most [`RETIRE_WAIT`]; after that its
/// last holder drops it, as before.
pub fn retire<T>(mut old: Arc<T>) {
    let deadline = Instant::now() + RETIRE_WAIT;
    loop {
        match Arc::try_unwrap(old) {
            Ok(value) => return drop(value),
            Err(shared) if Instant::now() < deadline => {
                old = shared;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_off_the_runtime_at_a_lower_priority() {
        let (name, niceness) = run(|| {
            let name = std::thread::current().name().map(str::to_owned);
            (name, rustix::process::getpriority_process(None).ok())
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("celador-reload"));
        let ours = rustix::process::getpriority_process(None).unwrap();
        assert_eq!(niceness, Some((ours + NICENESS).min(19)));
        assert!(run(|| panic!("boom")).await.is_none());
    }

    #[test]
    fn a_retired_value_is_dropped_here_once_its_last_holder_lets_go() {
        struct Noted(std::sync::mpsc::Sender<std::thread::ThreadId>);
        impl Drop for Noted {
            fn drop(&mut self) {
                let _ = self.0.send(std::thread::current().id());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let old = Arc::new(Noted(tx));
        let holder = Arc::clone(&old);
        let check = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(holder);
        });
        retire(old);
        check.join().unwrap();
        assert_eq!(rx.recv().unwrap(), std::thread::current().id());
    }
}
