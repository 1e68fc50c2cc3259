//! A download's way out: the connection's socket, after the answer's head, with the body
//! timeout on every wait.
//!
//! A data store sends a range of an upload through a [`BodySink`], either from buffers
//! ([`BodySink::write_all`]) or, zero-copy, by filling the connection's pipe
//! ([`BodySink::pipe`]) and handing it to [`BodySink::pipe_to_socket`]. Before each splice
//! into the socket the socket is polled for room in the ring and the splice is cut to
//! the room its send buffer has ([`super::splice::send_room`]), so a client that reads
//! slowly never holds a kernel thread waiting. A client that stops reading for longer
//! than the body timeout has its socket shut down.

use super::deadline::with_deadline;
use super::source::Wire;
use super::splice::{poll_writable, send_room, splice, Pipe};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A download being sent.
pub struct BodySink<'a> {
    wire: Wire<'a>,
    timeout: Duration,
}

impl<'a> BodySink<'a> {
    /// Sends on `wire`, each wait bounded by `timeout` (`--body-timeout`).
    pub fn new(wire: Wire<'a>, timeout: Duration) -> BodySink<'a> {
        BodySink { wire, timeout }
    }

    fn stopped_reading() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading the download",
        )
    }

    /// Writes all of `buf`, with the body timeout; the buffer comes back.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let fd = self.wire.stream.as_raw_fd();
        let ((res, buf), timed_out) = with_deadline(
            self.wire.stream.write_all(buf),
            fd,
            self.timeout,
            libc::SHUT_RDWR,
        )
        .await;
        match res {
            Ok(()) if timed_out => (Err(Self::stopped_reading()), buf),
            other => (other, buf),
        }
    }

    /// The connection's pipe, made now if it has none yet.
    pub fn pipe(&mut self) -> io::Result<&Pipe> {
        if self.wire.pipe.is_none() {
            *self.wire.pipe = Some(Pipe::new(self.wire.pipe_size)?);
        }
        self.wire
            .pipe
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Drops the connection's pipe (after a failure: it may still hold bytes).
    pub fn discard_pipe(&mut self) {
        *self.wire.pipe = None;
    }

    /// Moves `n` bytes that are in the pipe into the socket: each time the socket has
    /// room (polled in the ring), a splice of at most that room; every wait has the body
    /// timeout.
    pub async fn pipe_to_socket(&mut self, n: u32) -> io::Result<()> {
        let sock = self.wire.stream.as_raw_fd();
        let Some(pipe) = self.wire.pipe.as_ref() else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let mut left = n;
        while left > 0 {
            let (moved, timed_out) = with_deadline(
                async {
                    poll_writable(sock).await?;
                    let room = send_room(sock).unwrap_or(64 * 1024).max(4096) as u32;
                    splice(pipe.read_fd(), -1, sock, -1, left.min(room)).await
                },
                sock,
                self.timeout,
                libc::SHUT_RDWR,
            )
            .await;
            match moved {
                Ok(m) if m > 0 && !timed_out => left -= m,
                Ok(_) if timed_out => return Err(Self::stopped_reading()),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the client closed the connection during the download",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
