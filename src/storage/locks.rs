//! The process-wide upload locks.
//!
//! Requests for one upload may land on any core, so the lock table is shared by all
//! cores. A request that changes an upload (PATCH, DELETE, the creation that streams a
//! body) holds the upload's lock for its whole duration; a second such request gets 423
//! at once instead of waiting. HEAD takes no lock: it reads the bytes stored so far.
//!
//! The table is a fixed set of shards, each a `std::sync::Mutex<BTreeSet>`. A shard is
//! held only for one hash-set insert or remove, never across an `.await`, so a core
//! thread never waits on it for longer than a few hundred nanoseconds.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use uuid::Uuid;

/// Shards of the lock table (a power of two).
const SHARDS: usize = 64;

/// Invariant: an ID is in its shard's set exactly while one [`UploadLock`] for it exists.
static TABLE: [Mutex<BTreeSet<u128>>; SHARDS] = [const { Mutex::new(BTreeSet::new()) }; SHARDS];

/// Locks held in the whole process: the uploads a request is writing (PATCH, a creation)
/// or deleting right now. Invariant: incremented when an ID enters the table and
/// decremented when it leaves, so it equals the number of live [`UploadLock`]s. Relaxed:
/// a statistic for the `STATUS=` line, read without ordering.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Uploads a request is writing or deleting right now (the locks held).
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

fn shard(id: u128) -> &'static Mutex<BTreeSet<u128>> {
    // UUID v4 bits are random: the low bits spread evenly.
    &TABLE[(id as usize) & (SHARDS - 1)]
}

/// Exclusive hold on one upload; released when dropped.
#[derive(Debug)]
pub struct UploadLock {
    id: u128,
}

impl UploadLock {
    /// Takes the lock on `id`, or `None` when another request holds it.
    pub fn try_acquire(id: Uuid) -> Option<UploadLock> {
        let id = id.as_u128();
        let mut set = shard(id).lock().unwrap_or_else(|p| p.into_inner());
        set.insert(id).then(|| {
            HELD.fetch_add(1, Ordering::Relaxed);
            UploadLock { id }
        })
    }
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        let mut set = shard(self.id).lock().unwrap_or_else(|p| p.into_inner());
        if set.remove(&self.id) {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_until_dropped() {
        let id = Uuid::new_v4();
        let a = UploadLock::try_acquire(id).expect("free");
        assert!(held() >= 1);
        assert!(UploadLock::try_acquire(id).is_none());
        let other = UploadLock::try_acquire(Uuid::new_v4());
        assert!(other.is_some());
        drop(a);
        assert!(UploadLock::try_acquire(id).is_some());
    }

    #[test]
    fn across_threads_only_one_wins() {
        let id = Uuid::new_v4();
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
}
