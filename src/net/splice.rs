//! Zero-copy body transfer with IORING_OP_SPLICE: socket → pipe → file for uploads, and
//! file → pipe → socket for downloads.
//!
//! tokio-uring has no splice; its public `UnsubmittedOneshot` takes any io-uring 0.6
//! submission entry, which is how these operations are submitted. The kernel always runs
//! a splice on an io-wq worker thread, and a splice from a socket with no data blocks
//! that worker; so a socket is first polled for input (`IORING_OP_POLL_ADD`, which waits
//! in the ring, not in a thread), and only then spliced: a slow client never holds a
//! kernel thread.
//!
//! File descriptors: every operation here is awaited to completion by its caller, and
//! the kernel holds its own reference to each file while an operation is in flight, so
//! the raw descriptors passed in stay valid for the operation's whole life.

use io_uring06::{cqueue, opcode, types};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio_uring::{OneshotOutputTransform, UnsubmittedOneshot};

/// Turns a completion into the operation's result.
struct ResultTransform;

impl OneshotOutputTransform for ResultTransform {
    type Output = io::Result<u32>;
    type StoredData = ();

    fn transform_oneshot_output(self, _data: (), cqe: cqueue::Entry) -> io::Result<u32> {
        let res = cqe.result();
        if res >= 0 {
            Ok(res as u32)
        } else {
            Err(io::Error::from_raw_os_error(-res))
        }
    }
}

/// Submits one SQE through tokio-uring and awaits its result (a count, or the error).
/// Also used by the file store for an op tokio-uring lacks (`storage::file::write`).
pub(crate) async fn submit(sqe: io_uring06::squeue::Entry) -> io::Result<u32> {
    UnsubmittedOneshot::new((), ResultTransform, sqe)
        .submit()
        .await
}

/// `splice(2)` through the ring. `off_*` is -1 for a pipe or socket end.
pub async fn splice(
    fd_in: RawFd,
    off_in: i64,
    fd_out: RawFd,
    off_out: i64,
    len: u32,
) -> io::Result<u32> {
    let sqe = opcode::Splice::new(types::Fd(fd_in), off_in, types::Fd(fd_out), off_out, len)
        .flags(libc::SPLICE_F_MOVE)
        .build();
    submit(sqe).await
}

/// Waits in the ring until `fd` is readable (or hung up); returns the poll events.
pub async fn poll_readable(fd: RawFd) -> io::Result<u32> {
    let events = (libc::POLLIN | libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;
    submit(opcode::PollAdd::new(types::Fd(fd), events).build()).await
}

/// Waits in the ring until `fd` is writable (or hung up); returns the poll events.
pub async fn poll_writable(fd: RawFd) -> io::Result<u32> {
    let events = (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) as u32;
    submit(opcode::PollAdd::new(types::Fd(fd), events).build()).await
}

/// Room for new bytes in a TCP socket's send buffer, estimated from `SO_SNDBUF` (which
/// counts kernel overhead: about half of it holds data) minus the bytes queued
/// (`SIOCOUTQ`); `None` if either cannot be read. A splice into the socket of at most
/// this many bytes returns without waiting for the peer to read.
pub fn send_room(fd: RawFd) -> Option<usize> {
    let mut sndbuf: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `sndbuf` and `len` are valid for writes and `len` is the size of `sndbuf`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut sndbuf as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which is valid for it.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued as *mut libc::c_int) } != 0 {
        return None;
    }
    Some((sndbuf.max(0) as usize / 2).saturating_sub(queued.max(0) as usize))
}

/// A connection's pipe, created when its first body is spliced and reused for every
/// later one. Invariant: empty between bodies (every byte spliced in is spliced out or
/// read out before the body ends).
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// The pipe's capacity in bytes.
    pub capacity: usize,
}

impl Pipe {
    /// A new pipe of `size` bytes (`--pipe-size`: how much one splice moves), or what
    /// the kernel allows (`/proc/sys/fs/pipe-max-size` bounds unprivileged users).
    pub fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both descriptors are new and owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure leaves the default size.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
        // SAFETY: as above; F_GETPIPE_SZ only reads.
        let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        Ok(Pipe {
            read,
            write,
            capacity: if capacity > 0 {
                capacity as usize
            } else {
                64 * 1024
            },
        })
    }

    /// The read end.
    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The write end.
    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// Reads up to `buf.len()` of the bytes that are in the pipe now, and never waits:
    /// the pipe is blocking (a splice into or out of it waits in an io-wq thread), so
    /// the read is cut to what `FIONREAD` says it holds, and an empty pipe gives 0
    /// without a read. This process is the pipe's only reader and writes to it only
    /// through splices it awaits, so the count cannot shrink before the read. Used only
    /// to rescue bytes on a core thread when splicing them into the file failed.
    pub fn read_buffered(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut held: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which is valid for it.
        if unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut held) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let want = buf.len().min(held.max(0) as usize);
        if want == 0 {
            return Ok(0);
        }
        // SAFETY: `buf` is valid for writes of `want <= buf.len()` bytes.
        let n = unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Errors that mean "splice cannot be used here" (rather than "the I/O failed"): the
/// body falls back to the buffered path.
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) | Some(libc::EBADF)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The rescue read of an empty pipe, or one holding fewer bytes than asked for,
    /// returns at once (it used to wait for ever on the core thread).
    #[test]
    fn the_rescue_read_never_waits() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pipe = Pipe::new(64 * 1024).expect("pipe");
            let mut buf = vec![0u8; 100];
            let empty = pipe.read_buffered(&mut buf).map_err(|e| e.to_string());
            // SAFETY: the write end is open and the buffer is valid for 10 bytes.
            let w = unsafe { libc::write(pipe.write_fd(), b"0123456789".as_ptr().cast(), 10) };
            assert_eq!(w, 10);
            let short = pipe.read_buffered(&mut buf).map_err(|e| e.to_string());
            let again = pipe.read_buffered(&mut buf).map_err(|e| e.to_string());
            let _ = tx.send((empty, short, again, buf[..10].to_vec()));
        });
        let (empty, short, again, bytes) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the rescue read waited on an empty pipe");
        assert_eq!(empty, Ok(0));
        assert_eq!(short, Ok(10));
        assert_eq!(bytes, b"0123456789");
        assert_eq!(again, Ok(0), "drained: nothing more, and no wait");
    }
}
