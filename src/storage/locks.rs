//! The process-local [`Locker`]: a process-wide upload lock table, with takeover: the
//! newest request wins. It goes with file records (several processes sharing one data
//! directory are not coordinated, as with rustus).
//!
//! Requests for one upload may land on any core, so the lock table is shared by all
//! cores. A request that changes an upload (PATCH, DELETE, the creation that streams a
//! body) holds the upload's lock for its whole duration, so two writers never
//! interleave. HEAD and GET take no lock: they read the bytes stored so far.
//!
//! **Takeover.** A client whose connection died without the server noticing comes back
//! on a new connection while its old request still holds the upload. As tusd and the
//! IETF resumable-upload draft do, the newer PATCH or DELETE makes the old request stop:
//! [`UploadLock::acquire`] calls the holder's `Release::request`, which marks its stop
//! flag and calls `shutdown(SHUT_RD)` on its socket, completing the holder's pending
//! receive (a recv, or a poll and a splice) with end-of-file on whatever core it runs. The holder stores what it
//! received (the cut-short path keeps every byte and writes the info record), answers
//! (best effort: its connection is cut) and drops the lock. The newcomer polls the table
//! with short async sleeps, never blocking its core, for up to [`TAKEOVER_WAIT`]; then
//! it proceeds against the true offset, or gets 423 when the holder did not let go.
//!
//! Only a holder that gave a [`Release`] can be taken over (a PATCH). A DELETE holds
//! the lock briefly and registers none; a creation registers none either (its ID is only
//! known to the client after the 201), so a request for those waits for the bound, then
//! gets 423.
//!
//! Every request that asks for a lock gets a ticket from a process-wide counter, so
//! "newest" is well defined: a request takes over only an older holder, and a waiting
//! request gives up (423) as soon as a newer one waits for the same upload.
//!
//! The table is a fixed set of shards, each a `std::sync::Mutex<BTreeMap>`. A shard is
//! held only for one map lookup, insert or remove (and, for a takeover, one
//! `shutdown(2)` call, which does not block), never across an `.await`.

use super::{Acquired, Lock, LockGuard, Locker, StoreError, StoreFuture};
use crate::net::Release;
use crate::storage::id::UploadId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards of the lock table (a power of two).
const SHARDS: usize = 64;

/// How long a request waits for a held upload (after asking its holder to stop) before
/// it is answered 423.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(1);

/// How often a waiting request looks at the table again.
pub const TAKEOVER_POLL: Duration = Duration::from_millis(5);

/// One held upload.
struct Entry {
    /// The holder's ticket (see [`TICKETS`]).
    ticket: u64,
    /// How to ask the holder to let go, when its request may be taken over.
    /// Invariant: while the entry is in the table the release's socket is the holder's
    /// open socket: the lock lives inside the request handler, which borrows the
    /// connection, so the socket is closed only after [`UploadLock`]'s `Drop` removed the
    /// entry (under the shard mutex). A takeover calls [`Release::request`] under that
    /// same mutex, after finding the entry present, so it can never hit a recycled
    /// descriptor.
    release: Option<Release>,
    /// The newest ticket waiting for this upload (0: none); older waiters give up.
    newest_waiter: u64,
}

/// Invariant: an ID is in its shard's map exactly while one [`UploadLock`] for it exists.
static TABLE: [Mutex<BTreeMap<UploadId, Entry>>; SHARDS] =
    [const { Mutex::new(BTreeMap::new()) }; SHARDS];

/// Locks held in the whole process: the uploads a request is writing (PATCH, a creation)
/// or deleting right now. Invariant: incremented when an ID enters the table and
/// decremented when it leaves, so it equals the number of live [`UploadLock`]s. Relaxed:
/// a statistic for the `STATUS=` line, read without ordering.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Tickets: one per request that asks for a lock, increasing, so a larger ticket is a
/// newer request. Relaxed: only the order of the values matters, not of other memory.
static TICKETS: AtomicU64 = AtomicU64::new(1);

/// Uploads a request is writing or deleting right now (the locks held).
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

fn shard(id: &UploadId) -> &'static Mutex<BTreeMap<UploadId, Entry>> {
    &TABLE[(id.spread() as usize) & (SHARDS - 1)]
}

/// What a request that finds the upload held does about it (pure; table-tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contend {
    /// Ask the holder to stop (set its flag; shut its socket down if not done yet).
    TakeOver {
        /// Call `shutdown(SHUT_RD)` now.
        shutdown: bool,
    },
    /// Wait: the holder cannot be interrupted, or was already asked by us.
    Wait,
    /// Give up at once (423): a newer request holds or wants the upload.
    GiveUp,
}

/// The decision for a request with `ticket` that finds the upload held by `holder`
/// (its ticket, whether it gave a release handle, whether its socket was shut down) with
/// `newest_waiter` the newest ticket waiting.
pub fn contend(
    ticket: u64,
    holder: u64,
    interruptible: bool,
    shut: bool,
    newest_waiter: u64,
) -> Contend {
    if holder > ticket || newest_waiter > ticket {
        Contend::GiveUp
    } else if interruptible {
        Contend::TakeOver { shutdown: !shut }
    } else {
        Contend::Wait
    }
}

/// The process-local locker: a handle on the process-wide table.
#[derive(Debug, Clone, Copy)]
pub struct ProcessLocks;

impl Locker for ProcessLocks {
    fn try_lock(&self, id: UploadId) -> StoreFuture<'_, Result<Option<Lock>, StoreError>> {
        let got = UploadLock::try_acquire(id).map(|l| Lock::new(Box::new(l)));
        Box::pin(std::future::ready(Ok(got)))
    }

    fn lock(
        &self,
        id: UploadId,
        release: Option<Release>,
    ) -> StoreFuture<'_, Result<Acquired, StoreError>> {
        Box::pin(async move { Ok(UploadLock::acquire(id, release).await) })
    }

    fn held(&self) -> usize {
        held()
    }
}

/// Exclusive hold on one upload; released when dropped.
#[derive(Debug)]
pub struct UploadLock {
    id: UploadId,
    /// How a newer request asks this holder to let go (`None`: it cannot be asked).
    release: Option<Release>,
}

impl LockGuard for UploadLock {}

impl UploadLock {
    /// Takes the lock on `id` at once, not interruptible, or `None` when another
    /// request holds it (creation: its ID is new).
    pub fn try_acquire(id: UploadId) -> Option<UploadLock> {
        let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
        Self::attempt(id, ticket, None, false).ok()
    }

    /// Takes the lock on `id` for a request that may take it over from an older holder.
    /// `release` is this request's release handle when it may itself be taken over
    /// later (a PATCH), `None` otherwise (a DELETE). Waits, asynchronously, at most
    /// [`TAKEOVER_WAIT`].
    pub async fn acquire(id: UploadId, release: Option<Release>) -> Acquired {
        match Self::acquire_until(id, release, Instant::now() + TAKEOVER_WAIT).await {
            Some((lock, asked)) => Acquired::Lock(Lock::new(Box::new(lock)), asked),
            None => Acquired::Busy,
        }
    }

    /// [`UploadLock::acquire`] with the wait ending at `deadline`: the lock and whether
    /// an older holder was asked to let go, or `None` (423). A locker that adds a hold
    /// elsewhere (Redis, across nodes) takes this one first and spends what is left of
    /// the same wait there.
    pub async fn acquire_until(
        id: UploadId,
        release: Option<Release>,
        deadline: Instant,
    ) -> Option<(UploadLock, bool)> {
        let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
        let mut asked = false;
        loop {
            match Self::attempt(id, ticket, release.clone(), true) {
                Ok(lock) => return Some((lock, asked)),
                Err(Contend::GiveUp) => return None,
                Err(Contend::TakeOver { .. }) => asked = true,
                Err(Contend::Wait) => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(TAKEOVER_POLL).await;
        }
    }

    /// One look at the table: the lock, or what was done about its holder (nothing, and
    /// `GiveUp`, unless `take_over`).
    fn attempt(
        id: UploadId,
        ticket: u64,
        release: Option<Release>,
        take_over: bool,
    ) -> Result<UploadLock, Contend> {
        let mut map = shard(&id).lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&id) {
            None => {
                map.insert(
                    id,
                    Entry {
                        ticket,
                        release: release.clone(),
                        newest_waiter: 0,
                    },
                );
                HELD.fetch_add(1, Ordering::Relaxed);
                Ok(UploadLock { id, release })
            }
            Some(_) if !take_over => Err(Contend::GiveUp),
            Some(e) => {
                let what = contend(
                    ticket,
                    e.ticket,
                    e.release.is_some(),
                    e.release.as_ref().is_some_and(Release::is_shut),
                    e.newest_waiter,
                );
                if what != Contend::GiveUp {
                    e.newest_waiter = ticket;
                }
                if let (Contend::TakeOver { .. }, Some(release)) = (what, &e.release) {
                    // The entry is present and the shard is locked, so the release's
                    // socket is still the holder's open socket (see `Entry::release`).
                    // `request` shuts it down only the first time, as `shutdown` says.
                    release.request();
                }
                Err(what)
            }
        }
    }

    /// Whether a newer request asked this holder to stop.
    pub fn stop_requested(&self) -> bool {
        self.release.as_ref().is_some_and(Release::requested)
    }
}

/// Asks whichever request of this process holds `id` to let go, as a newer request on
/// this process would (a newer request on another node wants it, or the cross-node lock
/// was lost): its `Release::request`, under the shard mutex. Whether there was a holder
/// that can be asked (one that gave a release handle).
pub fn request_release(id: UploadId) -> bool {
    let map = shard(&id).lock().unwrap_or_else(|p| p.into_inner());
    match map.get(&id).and_then(|e| e.release.as_ref()) {
        Some(release) => {
            // The entry is present and the shard is locked: the release's socket is the
            // holder's open socket (see `Entry::release`).
            release.request();
            true
        }
        None => false,
    }
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        let mut map = shard(&self.id).lock().unwrap_or_else(|p| p.into_inner());
        if map.remove(&self.id).is_some() {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_until_dropped() {
        let id = UploadId::random();
        let a = UploadLock::try_acquire(id).expect("free");
        assert!(held() >= 1);
        assert!(UploadLock::try_acquire(id).is_none());
        let other = UploadLock::try_acquire(UploadId::random());
        assert!(other.is_some());
        drop(a);
        assert!(UploadLock::try_acquire(id).is_some());
    }

    #[test]
    fn across_threads_only_one_wins() {
        let id = UploadId::random();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let b = barrier.clone();
                std::thread::spawn(move || {
                    b.wait();
                    let got = UploadLock::try_acquire(id);
                    let won = got.is_some();
                    b.wait(); // hold until everyone tried
                    won
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|&won| won)
            .count();
        assert_eq!(wins, 1);
    }

    #[test]
    fn contend_table() {
        // (ticket, holder, interruptible, shut, newest_waiter) -> decision
        let cases = [
            ((5, 3, true, false, 0), Contend::TakeOver { shutdown: true }),
            ((5, 3, true, true, 5), Contend::TakeOver { shutdown: false }),
            ((5, 3, false, false, 0), Contend::Wait),
            ((5, 3, false, false, 5), Contend::Wait),
            // A newer request holds it: the older one never takes over.
            ((3, 5, true, false, 0), Contend::GiveUp),
            // A newer request waits for it: the older one gives up.
            ((5, 3, true, true, 7), Contend::GiveUp),
            ((5, 3, false, false, 7), Contend::GiveUp),
        ];
        for ((t, h, i, s, w), want) in cases {
            assert_eq!(contend(t, h, i, s, w), want, "{:?}", (t, h, i, s, w));
        }
    }

    #[test]
    fn takeover_sets_the_holders_flag_and_waits_for_it() {
        let id = UploadId::random();
        // A socket pair stands in for the holder's connection: the takeover shuts it
        // down for reading, so a read on it returns end-of-file.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let release = Release::new(Some(a.as_raw_fd()));
        let holder = {
            let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
            UploadLock::attempt(id, ticket, Some(release.clone()), false).unwrap()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // A creation's try-only lock never takes anything over.
        assert!(UploadLock::try_acquire(id).is_none());
        assert!(!holder.stop_requested());
        let t = std::thread::spawn(move || {
            // The holder notices and lets go.
            while !release.requested() {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(holder);
        });
        let started = Instant::now();
        let got = rt.block_on(UploadLock::acquire(id, None));
        assert!(matches!(got, Acquired::Lock(_, true)), "{got:?}");
        assert!(started.elapsed() < TAKEOVER_WAIT);
        t.join().unwrap();
        use std::io::Read;
        let mut buf = [0u8; 8];
        assert_eq!((&a).read(&mut buf).unwrap(), 0, "socket shut for reading");
    }

    #[test]
    fn an_uninterruptible_holder_gives_423_after_the_wait() {
        let id = UploadId::random();
        let _holder = UploadLock::try_acquire(id).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let started = Instant::now();
        let got = rt.block_on(UploadLock::acquire(id, None));
        assert!(matches!(got, Acquired::Busy), "{got:?}");
        assert!(started.elapsed() >= TAKEOVER_WAIT);
        assert!(!_holder.stop_requested());
    }
}
