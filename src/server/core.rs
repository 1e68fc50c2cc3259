//! One core's state: its connections, its shutdown phase, its cached `Date`, and its
//! handles on the storage (the data store keeps its body-buffer pool per core).
//!
//! Everything in a [`Core`] belongs to one thread (`Rc`, `Cell`, `RefCell`): no locks
//! on the request path. The only state shared with other cores is the read-only
//! [`Shared`], the upload lock table, the index of waiting finals and the relaxed atomic
//! counters of [`crate::metrics`] and of this module (open connections, heartbeats). The
//! thread that drives a core (its runtime, accept loop and shutdown) is
//! [`super::core_thread`].

use super::{Phase, Shared};
use crate::net::shutdown_fd;
use crate::storage::Stores;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Open connections in the whole process, for the main thread's `STATUS=` line.
/// Invariant: incremented by [`Core::register`] and decremented when its [`ConnGuard`]
/// drops, so it equals the number of live guards (the sum of every core's
/// [`Core::connections`]). Relaxed: it is a statistic, read without ordering.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Open connections in the whole process (every core's registered connections).
pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

/// When each core's heartbeat last ran, in milliseconds since [`epoch`] plus one (0: the
/// core has not started, or has stopped serving). Read by `/ready`.
pub(super) static CORE_BEATS: [AtomicU64; crate::limits::MAX_WORKERS] =
    [const { AtomicU64::new(0) }; crate::limits::MAX_WORKERS];

/// A process-wide monotonic origin for [`CORE_BEATS`].
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

pub(super) fn millis_since_epoch() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Whether cores `0..workers` all serve: each has started and its heartbeat ran within
/// [`super::CORE_STALL`]. The error names the first core that does not.
pub fn cores_alive(workers: usize) -> Result<(), String> {
    let now = millis_since_epoch();
    let limit = super::CORE_STALL.as_millis() as u64;
    for (i, beat) in CORE_BEATS.iter().take(workers).enumerate() {
        match beat.load(Ordering::Relaxed) {
            0 => return Err(format!("core {i} is not serving")),
            b if now.saturating_sub(b) > limit => {
                return Err(format!(
                    "core {i} is stuck: no heartbeat for {} ms",
                    now.saturating_sub(b)
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A registered connection, as the core sees it for shutdown.
#[derive(Debug)]
struct ConnEntry {
    fd: RawFd,
    /// True while the connection waits for a new request (it can be closed at once).
    idle: Rc<Cell<bool>>,
}

/// Per-core state.
pub struct Core {
    /// This core's number (0-based).
    pub index: usize,
    /// Settings shared by every core.
    pub shared: Arc<Shared>,
    /// This core's handles on the storage (records, data, locks), made on this core.
    pub stores: Stores,
    /// The current shutdown phase (`Phase::Running` while serving).
    pub phase: Cell<Phase>,
    /// Open connections by connection number.
    conns: RefCell<HashMap<u64, ConnEntry>>,
    next_conn: Cell<u64>,
    /// The `Date` header value and the second it was made for.
    date: RefCell<(i64, Vec<u8>)>,
}

/// A connection's registration; unregisters on drop.
pub struct ConnGuard {
    core: Rc<Core>,
    id: u64,
    /// Shared with the core: set while the connection waits for a request.
    pub idle: Rc<Cell<bool>>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.core.conns.borrow_mut().remove(&self.id);
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::core_connection(self.core.index, false);
    }
}

impl Core {
    /// Core `index`'s state, with its storage handles made on the calling thread (the
    /// core's own, inside its runtime).
    pub fn new(shared: Arc<Shared>, index: usize) -> Core {
        Core {
            index,
            stores: shared.storage.stores(),
            phase: Cell::new(Phase::Running),
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
            date: RefCell::new((i64::MIN, Vec::new())),
            shared,
        }
    }

    /// Whether the daemon is shutting down.
    pub fn draining(&self) -> bool {
        self.phase.get() != Phase::Running
    }

    /// Registers a connection so shutdown can reach its socket.
    pub fn register(self: &Rc<Self>, fd: RawFd) -> ConnGuard {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let idle = Rc::new(Cell::new(true));
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        crate::metrics::core_connection(self.index, true);
        self.conns.borrow_mut().insert(
            id,
            ConnEntry {
                fd,
                idle: idle.clone(),
            },
        );
        ConnGuard {
            core: self.clone(),
            id,
            idle,
        }
    }

    /// Open connections on this core.
    pub fn connections(&self) -> usize {
        self.conns.borrow().len()
    }

    /// The current `Date` header value (IMF-fixdate), made at most once a second.
    pub fn date(&self) -> std::cell::Ref<'_, [u8]> {
        let now = crate::time::now_unix();
        if self.date.borrow().0 != now {
            let mut d = self.date.borrow_mut();
            d.1.clear();
            crate::time::write_http_date(now, &mut d.1);
            d.0 = now;
        }
        std::cell::Ref::map(self.date.borrow(), |d| d.1.as_slice())
    }

    /// Shuts down the sockets of connections that wait for a request (`idle_only`) or
    /// of all connections. SHUT_RD ends pending reads: a body being received ends and
    /// its bytes are kept; the answer can still be written.
    pub(super) fn shutdown_conns(&self, idle_only: bool, how: libc::c_int) {
        for entry in self.conns.borrow().values() {
            if !idle_only || entry.idle.get() {
                shutdown_fd(entry.fd, how);
            }
        }
    }
}
