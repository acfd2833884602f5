//! Accepting TCP connections for celador's HTTP listeners so that no client
//! can starve the others: the admission webhook uses it, and the admin
//! listener can.
//!
//! Data flow: `accept()` -> [`Table::admit`] (a slot, or a refusal) -> the
//! first byte awaited for at most [`Limits::first_byte`] -> the listener's
//! handler, which marks its connection [`Slot::busy`] while a TLS handshake
//! or a request is in progress.
//!
//! Why it is shaped this way. A listener that caps its connections and
//! holds each for seconds is starved by anyone who opens that many and
//! sends nothing (1,000 idle connections from one pod left the webhook
//! answering no AdmissionReview). Here a connection costs a socket and a
//! small task until it sends its first byte, and is closed if that does not
//! come within a second; each peer address may hold at most
//! [`Limits::per_peer`] connections and all peers [`Limits::total`] (which
//! fits the open-file limit, raised at start). When either bound is
//! reached, the **oldest idle** connection (waiting for its first byte, or
//! between requests) of that peer, or of all, is closed to make room; a
//! busy one never is. So a flood of idle connections, even from the API
//! server's own address, only ever closes idle connections, and a new
//! connection that sends its request at once is served.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once, all peers together.
    pub total: usize,
    /// Connections held at once from one peer address.
    pub per_peer: usize,
    /// How long a new connection may take to send its first byte.
    pub first_byte: Duration,
}

/// File descriptors kept for everything but connections (files read,
/// the listener, logs, the runtime).
const RESERVED_FILES: u64 = 64;

impl Limits {
    /// `self` with `total` lowered to what the process's open-file limit
    /// allows, after raising its soft limit as far as the hard one (a
    /// container's soft limit is often 1024). Returns the limit found too.
    pub fn fitting_open_files(self) -> (Limits, u64) {
        let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
        let room = usize::try_from(files.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
        let total = self.total.min(room).max(1);
        (
            Limits {
                total,
                per_peer: self.per_peer.min(total),
                ..self
            },
            files,
        )
    }
}

/// The top bit of a slot's state: the slot was closed to make room.
const EVICTED: u64 = 1 << 63;

/// One admitted connection: whether it is busy, and the signal that closes
/// it to make room.
#[derive(Debug)]
struct SlotState {
    id: u64,
    peer: IpAddr,
    /// The number of busy marks held, or [`EVICTED`].
    state: AtomicU64,
    evicted: Notify,
}

/// A connection's place in its listener's table, handed to the handler.
#[derive(Debug, Clone)]
pub struct Slot(Arc<SlotState>);

impl Slot {
    /// Marks the connection busy (not to be closed for room) until the
    /// mark is dropped: a TLS handshake, a request being answered.
    pub fn busy(&self) -> Busy {
        let marked = self
            .0
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & EVICTED == 0).then_some(s + 1)
            })
            .is_ok();
        Busy {
            slot: marked.then(|| Arc::clone(&self.0)),
        }
    }
}

/// A busy mark; dropping it makes the connection idle again.
#[derive(Debug)]
pub struct Busy {
    slot: Option<Arc<SlotState>>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            slot.state.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Every connection held, by age, overall and per peer.
#[derive(Debug, Default)]
struct Entries {
    next: u64,
    all: BTreeMap<u64, Arc<SlotState>>,
    by_peer: HashMap<IpAddr, BTreeMap<u64, Arc<SlotState>>>,
}

/// A listener's connections and its bounds.
#[derive(Debug)]
pub struct Table {
    limits: Limits,
    entries: Mutex<Entries>,
}

impl Table {
    /// An empty table with `limits`.
    pub fn new(limits: Limits) -> Table {
        Table {
            limits,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Admits a connection from `peer`, closing the oldest idle one of the
    /// same peer, or of all, when a bound is reached; `None` when every
    /// connection in the way is busy.
    pub fn admit(self: &Arc<Table>, peer: IpAddr) -> Option<Admitted> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let peer_full = entries
            .by_peer
            .get(&peer)
            .is_some_and(|m| m.len() >= self.limits.per_peer);
        if peer_full {
            let oldest = entries.by_peer.get(&peer).and_then(evict_oldest_idle)?;
            remove(&mut entries, oldest.id, oldest.peer);
        }
        if entries.all.len() >= self.limits.total {
            let oldest = evict_oldest_idle(&entries.all)?;
            remove(&mut entries, oldest.id, oldest.peer);
        }
        entries.next += 1;
        let slot = Arc::new(SlotState {
            id: entries.next,
            peer,
            state: AtomicU64::new(0),
            evicted: Notify::new(),
        });
        entries.all.insert(slot.id, Arc::clone(&slot));
        entries
            .by_peer
            .entry(peer)
            .or_default()
            .insert(slot.id, Arc::clone(&slot));
        Some(Admitted {
            slot: Slot(slot),
            table: Arc::clone(self),
        })
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all
            .len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Marks the oldest idle slot of `slots` evicted and wakes its task.
fn evict_oldest_idle(slots: &BTreeMap<u64, Arc<SlotState>>) -> Option<Arc<SlotState>> {
    let oldest = slots.values().find(|slot| {
        slot.state
            .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })?;
    oldest.evicted.notify_one();
    Some(Arc::clone(oldest))
}

fn remove(entries: &mut Entries, id: u64, peer: IpAddr) {
    entries.all.remove(&id);
    if let Some(slots) = entries.by_peer.get_mut(&peer) {
        slots.remove(&id);
        if slots.is_empty() {
            entries.by_peer.remove(&peer);
        }
    }
}

/// An admitted connection: its slot, given up when this is dropped.
#[derive(Debug)]
pub struct Admitted {
    slot: Slot,
    table: Arc<Table>,
}

impl Admitted {
    /// The connection's slot.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// Resolves when the connection was closed to make room.
    pub async fn evicted(&self) {
        self.slot.0.evicted.notified().await;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut entries = self.table.entries.lock().unwrap_or_else(|p| p.into_inner());
        remove(&mut entries, self.slot.0.id, self.slot.0.peer);
    }
}

/// The listen backlog: connections the kernel completes before they are
/// accepted. A flood of connections fills a small one (128 is the usual
/// default) faster than any loop accepts, and then a real client's SYN is
/// dropped and retried a second later.
pub const BACKLOG: u32 = 4096;

/// Binds `address` with [`BACKLOG`] (the kernel caps it at
/// `net.core.somaxconn`).
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// Accepts connections on `listener` until `shutdown` completes, and runs
/// `handler` for each that sends a first byte in time, with the slot and a
/// busy mark held until the handler drops it (its TLS handshake, say).
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, Slot, Busy) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let table = Arc::new(Table::new(limits));
    let handler = Arc::new(handler);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some
                    // to close rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = table.admit(peer.ip()) else {
            tracing::debug!(%peer, "refused: every connection of this peer is busy");
            continue;
        };
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let slot = admitted.slot().clone();
            tokio::select! {
                () = admitted.evicted() => tracing::debug!(%peer, "an idle connection was closed to make room"),
                () = first_byte_then(stream, peer, slot, limits.first_byte, handler.as_ref()) => {}
            }
            drop(admitted);
        });
    }
}

/// Waits up to `timeout` for the first byte, then runs `handler` busy.
async fn first_byte_then<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    timeout: Duration,
    handler: &H,
) where
    H: Fn(TcpStream, SocketAddr, Slot, Busy) -> F,
    F: Future<Output = ()>,
{
    let mut byte = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut byte)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return,
        Err(_) => {
            tracing::debug!(%peer, "no first byte within {timeout:?}: closed");
            return;
        }
    }
    let opening = slot.busy();
    handler(stream, peer, slot, opening).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_peer: usize) -> Limits {
        Limits {
            total,
            per_peer,
            first_byte: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_full_peer_makes_room_by_closing_its_oldest_idle_connection_never_a_busy_one() {
        let table = Arc::new(Table::new(limits(100, 3)));
        let a = IpAddr::from([10, 0, 0, 1]);
        let first = table.admit(a).unwrap();
        let second = table.admit(a).unwrap();
        let third = table.admit(a).unwrap();
        let busy_first = first.slot().busy();
        // The fourth closes the oldest idle one: the second.
        let fourth = table.admit(a).unwrap();
        assert_eq!(second.slot().0.state.load(Ordering::Acquire), EVICTED);
        assert_eq!(first.slot().0.state.load(Ordering::Acquire), 1);
        // An evicted connection cannot be marked busy again.
        let late = second.slot().busy();
        assert!(late.slot.is_none());
        drop(second);
        assert_eq!(table.len(), 3);
        // When every one is busy, the new one is refused.
        let _busy_third = third.slot().busy();
        let _busy_fourth = fourth.slot().busy();
        assert!(table.admit(a).is_none());
        // Another peer is not affected by this one's bound.
        let b = IpAddr::from([10, 0, 0, 2]);
        assert!(table.admit(b).is_some());
        drop(busy_first);
        assert!(table.admit(a).is_some(), "the first is idle again");
    }

    #[test]
    fn the_total_bound_closes_the_oldest_idle_connection_of_any_peer() {
        let table = Arc::new(Table::new(limits(2, 2)));
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let first = table.admit(ip(1)).unwrap();
        let second = table.admit(ip(2)).unwrap();
        let _third = table.admit(ip(3)).unwrap();
        assert_eq!(first.slot().0.state.load(Ordering::Acquire), EVICTED);
        assert_eq!(second.slot().0.state.load(Ordering::Acquire), 0);
        assert_eq!(table.len(), 2);
    }
}
