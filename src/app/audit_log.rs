//! The audit records' way to standard output.
//!
//! Data flow: every check appends its record, a JSON line, to one shared
//! buffer ([`AuditLog`], installed as the edge's [`audit::Sink`]); one
//! writer thread takes the whole buffer at a time and writes it out. A
//! check never waits for standard output: when the reader of the pod's logs
//! falls behind by [`MAX_PENDING_BYTES`], records are dropped and counted
//! (`celador_audit_records_dropped_total`).
//!
//! Why not a channel of lines: a channel costs an allocation and a copy per
//! record, and its receiver spins and yields before it sleeps, which on a
//! sidecar's one core takes time from the runtime and from the proxy
//! beside it. Here the writer is woken only when it is asleep, and after
//! each write it lets records gather for a millisecond before it looks
//! again, so under load one wake-up and one `write` carry many records
//! (BENCHMARKS.md), and at rest a record is written at once.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::edge::audit;

/// How many bytes of records may wait for standard output before new ones
/// are dropped: over a second of a saturated sidecar's records.
pub const MAX_PENDING_BYTES: usize = 8 << 20;
/// What the buffers start with, and shrink back to after a burst.
const BUFFER_BYTES: usize = 64 * 1024;
/// How long the writer lets records gather after writing: it is then
/// neither woken nor writing, so a busy sidecar makes at most this many
/// wake-ups and writes a second, not one per record.
const GATHER: Duration = Duration::from_millis(1);
/// How long stopping waits for the last records to be written.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Records waiting to be written, shared by the checks and the writer.
#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// The writer is asleep and must be woken for new records.
    asleep: bool,
    stopping: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The audit records' writer: cloned handles append, one thread writes.
#[derive(Debug, Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl audit::Sink for AuditLog {
    fn write_line(&self, line: &str) {
        let mut pending = self.shared.pending();
        if pending.lines.len() + line.len() >= MAX_PENDING_BYTES {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.lines.extend_from_slice(line.as_bytes());
        pending.lines.push(b'\n');
        let wake = std::mem::take(&mut pending.asleep);
        drop(pending);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

impl AuditLog {
    /// Starts the writer thread, writing to `out`. Dropping the returned
    /// [`Writer`] writes what is pending and stops it.
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(AuditLog, Writer)> {
        let shared = Arc::new(Shared::default());
        let (done, stopped) = std::sync::mpsc::channel();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("celador-audit".into())
                .spawn(move || {
                    write_until_stopped(&shared, out);
                    let _ = done.send(());
                })?
        };
        let log = AuditLog { shared };
        let writer = Writer {
            log: log.clone(),
            stopped,
            _thread: thread,
        };
        Ok((log, writer))
    }

    /// How many records were dropped so far because the writer fell behind
    /// or standard output failed.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// The writer thread's loop: sleep until records are pending, take them
/// all, write them at once.
fn write_until_stopped(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::with_capacity(BUFFER_BYTES);
    loop {
        let mut pending = shared.pending();
        while pending.lines.is_empty() && !pending.stopping {
            pending.asleep = true;
            pending = shared
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        pending.asleep = false;
        if pending.lines.is_empty() {
            return;
        }
        std::mem::swap(&mut pending.lines, &mut batch);
        drop(pending);
        if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            let lines = batch.iter().filter(|&&b| b == b'\n').count();
            shared
                .dropped
                .fetch_add(u64::try_from(lines).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        batch.clear();
        // A burst's buffer is not kept resident.
        if batch.capacity() > 4 * BUFFER_BYTES {
            batch = Vec::with_capacity(BUFFER_BYTES);
        }
        std::thread::sleep(GATHER);
    }
}

/// Keeps the writer thread; dropping it writes what is pending (waiting at
/// most a second for standard output) and stops the thread.
#[derive(Debug)]
pub struct Writer {
    log: AuditLog,
    stopped: std::sync::mpsc::Receiver<()>,
    _thread: std::thread::JoinHandle<()>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.log.shared.pending().stopping = true;
        self.log.shared.wake.notify_one();
        let _ = self.stopped.recv_timeout(STOP_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::audit::Sink;

    /// A writer that keeps what it is given, or refuses it.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<(Vec<u8>, usize)>>, bool);

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.1 {
                return Err(std::io::Error::other("closed"));
            }
            let mut kept = self.0.lock().unwrap();
            kept.0.extend_from_slice(buf);
            kept.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_record_is_written_once_as_a_line_in_order_and_stopping_writes_the_rest() {
        let kept = Kept::default();
        let (log, writer) = AuditLog::start(kept.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        log.write_line(&format!("{{\"t\":{t},\"i\":{i}}}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(writer);
        let (bytes, writes) = kept.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("{{\"t\":{t},")))
                .collect();
            let expected: Vec<String> = (0..5_000)
                .map(|i| format!("{{\"t\":{t},\"i\":{i}}}"))
                .collect();
            assert_eq!(mine, expected, "thread {t}'s records, in order");
        }
        // Batched: far fewer writes than records.
        assert!(writes < 20_000, "{writes} writes for 20,000 records");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_failing_output_counts_its_records_as_dropped_and_checks_go_on() {
        let (log, writer) = AuditLog::start(Kept(Arc::default(), true)).unwrap();
        for i in 0..10 {
            log.write_line(&format!("record {i}"));
        }
        drop(writer);
        assert_eq!(log.dropped(), 10);
    }

    #[test]
    fn records_beyond_the_pending_limit_are_dropped_and_counted_not_waited_for() {
        /// An output that never returns until told, like a stuck log reader.
        struct Stuck(std::sync::mpsc::Receiver<()>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (release, stuck) = std::sync::mpsc::channel();
        let (log, writer) = AuditLog::start(Stuck(stuck)).unwrap();
        let line = "x".repeat(1023);
        let records = 4 * MAX_PENDING_BYTES / 1024;
        let started = std::time::Instant::now();
        for _ in 0..records {
            log.write_line(&line);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "checks waited");
        // At most two buffers' worth is kept: the one stuck in the write
        // and the one pending; the rest is dropped.
        let dropped = log.dropped();
        assert!(
            dropped >= (records - 2 * MAX_PENDING_BYTES / 1024) as u64 && dropped < records as u64,
            "{dropped} of {records} dropped"
        );
        drop(release);
        drop(writer);
    }
}
