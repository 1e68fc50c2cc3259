//! Socket operations with a deadline.
//!
//! Dropping an in-flight tokio-uring operation does not cancel it: a read stays armed
//! in the ring, keeps its buffer and would later swallow bytes. So an operation is never
//! dropped to time it out. [`with_deadline`] races it against a timer; when the timer
//! wins it calls `shutdown(2)` on the socket, which completes the pending operation (with
//! 0, or with the bytes that were in flight), and awaits the operation to its end.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use tokio_uring::buf::BoundedBufMut;
use tokio_uring::net::TcpStream;

/// `shutdown(2)` of a socket, ignoring the result (a socket already shut down or reset
/// answers `ENOTCONN`, which changes nothing).
pub fn shutdown_fd(fd: RawFd, how: libc::c_int) {
    // SAFETY: shutdown(2) on a descriptor number; at worst it fails with EBADF/ENOTCONN.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// Runs a socket operation with a deadline. When the deadline passes, the socket is
/// shut down (`how`), which completes the pending operation, and the operation is
/// still awaited to its end: nothing is dropped in flight. The flag says whether the
/// deadline passed.
pub async fn with_deadline<F: std::future::Future>(
    op: F,
    fd: RawFd,
    timeout: Duration,
    how: libc::c_int,
) -> (F::Output, bool) {
    tokio::pin!(op);
    tokio::select! {
        biased;
        out = &mut op => (out, false),
        _ = tokio::time::sleep(timeout) => {
            shutdown_fd(fd, how);
            (op.await, true)
        }
    }
}

/// A socket read with a deadline. On timeout the socket is shut down (`how`) so the
/// pending read completes; the third value says whether that happened.
pub async fn read_timeout<T: BoundedBufMut>(
    stream: &TcpStream,
    buf: T,
    timeout: Duration,
    how: libc::c_int,
) -> (io::Result<usize>, T, bool) {
    let ((res, buf), timed_out) =
        with_deadline(stream.read(buf), stream.as_raw_fd(), timeout, how).await;
    (res, buf, timed_out)
}
