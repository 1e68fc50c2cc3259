//! How a newer request asks an older one to let its upload go (tusd's `requestRelease`).
//!
//! A request that may be taken over (a PATCH) makes a [`Release`] from its body source
//! and gives it to the locker with its lock request. When a newer request wants the
//! upload, the locker calls `Release::request`: the holder's stop flag is set and its
//! socket is shut down for reading, once, which completes a receive pending on it (a
//! recv, or a poll and a splice) with end-of-file on whatever core it runs. The holder's
//! body source sees the flag after its next receive and ends the body
//! ([`super::BodyEnd::Stopped`]); the holder stores what it received, answers and drops
//! its lock.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A request's release handle; clones share one state.
#[derive(Debug, Clone)]
pub struct Release(Arc<State>);

#[derive(Debug)]
struct State {
    /// Set once a newer request asked for the upload.
    requested: AtomicBool,
    /// The request's connection socket, shut down for reading on the first request;
    /// `None` for a body that does not come from a socket (in-process handling).
    /// Invariant: open for as long as a locker may call [`Release::request`], that is
    /// while the lock this handle was given with is held: the lock lives in the request
    /// handler, which borrows the connection, so the connection closes its socket only
    /// after the lock was released (for the process-local locker: after its `Drop`
    /// removed the table entry under the shard mutex, the same mutex under which
    /// `request` is called).
    socket: Option<RawFd>,
    /// `shutdown(2)` was already called on `socket`.
    shut: AtomicBool,
}

impl Release {
    /// A handle for a request whose body arrives on `socket` (or on no socket).
    pub fn new(socket: Option<RawFd>) -> Release {
        Release(Arc::new(State {
            requested: AtomicBool::new(false),
            socket,
            shut: AtomicBool::new(false),
        }))
    }

    /// Asks the holder to stop: sets its flag and, the first time, shuts its socket down
    /// for reading. Lockers call this only while the lock it was given with is held (see
    /// the invariant on `socket`).
    pub(crate) fn request(&self) {
        // Release: the holder reads the flag after its receive completes.
        self.0.requested.store(true, Ordering::Release);
        if let Some(fd) = self.0.socket {
            if !self.0.shut.swap(true, Ordering::AcqRel) {
                // The socket is the holder's open socket (see `State::socket`), never a
                // recycled descriptor; at worst the call fails with ENOTCONN.
                super::shutdown_fd(fd, libc::SHUT_RD);
            }
        }
    }

    /// Whether a newer request asked for the upload.
    pub fn requested(&self) -> bool {
        self.0.requested.load(Ordering::Acquire)
    }

    /// Whether the holder's socket was already shut down for reading.
    pub fn is_shut(&self) -> bool {
        self.0.shut.load(Ordering::Acquire)
    }
}
