//! A request body as it arrives: the connection's socket, the bytes it already read
//! past the head, the framing (Content-Length or chunked), the body timeout and the
//! takeover flag.
//!
//! The connection makes one [`BodySource`] per request; the request handling asks it
//! about the body (its length, whether it is whole in hand, how it ended) and passes it
//! to a data store, which takes the bytes out of it in one of two ways:
//!
//! * decoded, into buffers the store owns ([`BodySource::fill`]): every body, chunked
//!   ones included;
//! * raw, socket → the connection's pipe ([`BodySource::splice_to_pipe`], after the bytes
//!   that came with the head, [`BodySource::lend_early`]): a Content-Length body, for a
//!   store that can splice the pipe into its file.
//!
//! Every socket read has the body timeout ([`super::deadline`]): when it passes, the
//! socket is shut down for reading and the read is awaited, so every byte received is
//! kept. `Expect: 100-continue` is answered just before the first read from the socket,
//! so a request refused before its body is read never gets a 100. The same way out,
//! [`BodySource::send_interim`], can carry other informational (1xx) answers the
//! request handling wants to send before or during the body; and, when asked
//! ([`BodySource::report_progress`]), the body source sends one reporting the bytes the
//! data store says it has stored ([`BodySource::stored_to`]) before a socket read, at
//! most every so many bytes or seconds, and only when the socket has room for it.

use super::deadline::{read_timeout, with_deadline};
use super::release::Release;
use super::splice::{is_unsupported, poll_readable, send_room, splice, Pipe};
use crate::http::body::{BodyError, ChunkedDecoder, Step};
use crate::http::head::{BodyKind, RequestHead};
use crate::http::response::{encode_interim, Response};
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tokio_uring::buf::{BoundedBuf, BoundedBufMut};
use tokio_uring::net::TcpStream;

/// Bytes reserved for each socket read of a chunked body.
pub const CHUNKED_READ_BYTES: usize = 64 * 1024;

/// A fill returns its buffer for writing once it holds this much and the socket has
/// nothing more right now (a slow client's bytes are stored in pieces this big).
pub const FLUSH_BYTES: usize = 64 * 1024;

/// A progress answer is sent only when the socket's send buffer has at least this much
/// room ([`send_room`]), so writing it never waits for the client: a client that does not
/// read its answers during the body (its window closed) just gets fewer of them.
pub const PROGRESS_ROOM: usize = 4 * 1024;

/// Progress answers asked for by the request handling ([`BodySource::report_progress`]).
struct Progress {
    /// The answer reporting that the upload's data ends at the given offset.
    interim: Box<dyn Fn(u64) -> Response>,
    /// Report after at least this many more bytes were stored...
    every_bytes: u64,
    /// ... or after this long, if any were.
    every: Duration,
    /// The offset last reported (at first, where the body starts).
    reported: u64,
    /// When it was reported (at first, when reporting was asked for).
    at: Instant,
}

/// How a request body ended.
#[derive(Debug)]
pub enum BodyEnd {
    /// Every byte of the body was received.
    Complete,
    /// The client closed the connection before the body was complete.
    Eof,
    /// The body stopped arriving for longer than the body timeout.
    TimedOut,
    /// The socket failed.
    Failed(io::Error),
    /// The chunked framing was malformed.
    Malformed(BodyError),
    /// A newer request took the upload over (see [`Release`]): receiving stopped.
    Stopped,
}

impl BodyEnd {
    /// What a socket read (or splice) that returned `res` says: `Ok(n)` bytes arrived
    /// (`n > 0`), or the body ended. A read that returned nothing, or failed, ended the
    /// body by the timeout when the deadline had passed (its `shutdown(2)` is what
    /// completed the read), else by the client's close or by the error.
    pub fn of_read(res: io::Result<usize>, timed_out: bool) -> Result<usize, BodyEnd> {
        match res {
            Ok(n) if n > 0 => Ok(n),
            _ if timed_out => Err(BodyEnd::TimedOut),
            Ok(_) => Err(BodyEnd::Eof),
            Err(e) => Err(BodyEnd::Failed(e)),
        }
    }
}

/// What one step of the splice path did ([`BodySource::splice_to_pipe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceIn {
    /// This many body bytes are now in the pipe: move them out before the next step.
    /// The body may have ended with them ([`BodySource::end`]).
    Moved(u32),
    /// The body has ended ([`BodySource::end`] says how); nothing was moved.
    Ended,
    /// Splicing is not possible here (no socket, or the kernel refused): nothing was
    /// lost, the rest of the body can be taken with [`BodySource::fill`].
    Unsupported,
    /// No pipe could be made for this body now (`EMFILE`, `ENFILE`, `ENOMEM`): nothing
    /// was lost, the rest of it can be taken with [`BodySource::fill`], and the next body
    /// tries again (a passing shortage of descriptors says nothing about splicing).
    NoPipe,
}

/// The connection's socket side of a body or download.
pub struct Wire<'a> {
    /// The connection's socket.
    pub stream: &'a TcpStream,
    /// The connection's pipe for splicing, made on first use and kept for the next
    /// bodies and downloads. Invariant: empty between bodies and downloads.
    pub pipe: &'a mut Option<Pipe>,
    /// Capacity asked for a new pipe (`--pipe-size`).
    pub pipe_size: usize,
}

enum BodyState {
    Length {
        remaining: u64,
    },
    Chunked {
        decoder: ChunkedDecoder,
        /// Bytes at the front of `inbuf` the decoder has consumed.
        parsed: usize,
    },
}

/// Progress reported to the hooks during the body ([`BodySource::report_to_hooks`]).
struct HookProgress {
    /// Called with the offset the upload's data now ends at.
    report: Box<dyn FnMut(u64)>,
    /// At most this often, and only when more was stored.
    every: Duration,
    /// The offset last reported (at first, where the body starts).
    reported: u64,
    /// When it was last reported (at first, when the body starts).
    at: Instant,
}

/// A request body being received.
pub struct BodySource<'a> {
    /// The socket; `None` for a request handled in-process, whose body is whatever
    /// `inbuf` holds (nothing more arrives: a read past it sees end-of-file).
    wire: Option<Wire<'a>>,
    /// Bytes received but not consumed yet: body bytes that arrived with the head and
    /// (chunked) read from the socket, and possibly the next pipelined request.
    inbuf: &'a mut Vec<u8>,
    state: BodyState,
    /// Still to answer `100 Continue` before the first read from the socket.
    expect_continue: bool,
    timeout: Duration,
    /// Decoded body bytes handed out so far.
    received: u64,
    /// Set once the body has ended, for good or bad; no more bytes come after it.
    end: Option<BodyEnd>,
    /// The body timeout fired and the socket was shut down for reading.
    timed_out: bool,
    content_length: Option<u64>,
    /// The request's release handle, once it asked for one ([`BodySource::release`]):
    /// when a newer request sets it (and shuts the socket down for reading), the body
    /// ends ([`BodyEnd::Stopped`]) after the bytes already received.
    release: Option<Release>,
    /// The splice path waits in the ring for input before its next splice: the last
    /// splice did not fill the pipe, so the socket may be empty.
    splice_poll: bool,
    /// Progress answers to send during the body, if asked for.
    progress: Option<Progress>,
    /// Where the upload's data ends, as the data store last said ([`Self::stored_to`]).
    /// INVARIANT: only offsets of bytes the store has written (never bytes in a buffer
    /// or the pipe), so a progress answer never acknowledges a byte that is not stored.
    stored: u64,
    /// Progress for the hooks during the body, if asked for.
    hook_progress: Option<HookProgress>,
}

impl<'a> BodySource<'a> {
    /// The body `head` announces, arriving on `wire` after the bytes in `inbuf`.
    pub fn new(
        wire: Option<Wire<'a>>,
        inbuf: &'a mut Vec<u8>,
        head: &RequestHead,
        timeout: Duration,
    ) -> Self {
        let (state, content_length, end) = match head.body {
            BodyKind::None | BodyKind::Length(0) => (
                BodyState::Length { remaining: 0 },
                Some(0),
                Some(BodyEnd::Complete),
            ),
            BodyKind::Length(n) => (BodyState::Length { remaining: n }, Some(n), None),
            BodyKind::Chunked => (
                BodyState::Chunked {
                    decoder: ChunkedDecoder::new(),
                    parsed: 0,
                },
                None,
                None,
            ),
        };
        BodySource {
            wire,
            inbuf,
            state,
            expect_continue: head.expect_continue,
            timeout,
            received: 0,
            end,
            timed_out: false,
            content_length,
            release: None,
            splice_poll: true,
            progress: None,
            stored: 0,
            hook_progress: None,
        }
    }

    /// Asks for `report(end)` during the body, before a socket read, when the data store
    /// has said (through [`Self::stored_to`]) that the upload's data now ends at `end`,
    /// past the last report (at first `from`, where the body starts), and at least `every`
    /// after it (at first, after the body started). A synchronous call: it must not wait
    /// (`post-receive` during a long PATCH, `server::stops`).
    pub fn report_to_hooks(&mut self, from: u64, every: Duration, report: Box<dyn FnMut(u64)>) {
        self.hook_progress = Some(HookProgress {
            report,
            every,
            reported: from,
            at: Instant::now(),
        });
    }

    /// Asks for progress answers during the body: before a socket read, `interim(end)`
    /// is sent when the data store has said (through [`Self::stored_to`]) that the
    /// upload's data now ends at `end`, at least `every_bytes` past the last report (at
    /// first `from`, where the body starts), or `every` after it and past it; never when
    /// the socket lacks [`PROGRESS_ROOM`]. A store that never says sends none.
    pub fn report_progress(
        &mut self,
        from: u64,
        every_bytes: u64,
        every: Duration,
        interim: Box<dyn Fn(u64) -> Response>,
    ) {
        self.stored = from;
        self.progress = Some(Progress {
            interim,
            every_bytes,
            every,
            reported: from,
            at: Instant::now(),
        });
    }

    /// The data store's word that the upload's data now ends at `offset` (every byte
    /// before it written; see the field's invariant). Stores call it after each write
    /// of an unverified body; it only feeds progress answers.
    pub fn stored_to(&mut self, offset: u64) {
        self.stored = self.stored.max(offset);
    }

    /// Sends a progress answer if one is due (see [`Self::report_progress`]).
    async fn send_progress(&mut self) {
        let stored = self.stored;
        if let Some(h) = self.hook_progress.as_mut() {
            if stored > h.reported && h.at.elapsed() >= h.every {
                (h.report)(stored);
                h.reported = stored;
                h.at = Instant::now();
            }
        }
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        if stored <= p.reported || (stored - p.reported < p.every_bytes && p.at.elapsed() < p.every)
        {
            return;
        }
        let room = self
            .wire
            .as_ref()
            .and_then(|w| send_room(w.stream.as_raw_fd()));
        if room.is_none_or(|r| r < PROGRESS_ROOM) {
            return;
        }
        let resp = (p.interim)(stored);
        p.reported = stored;
        p.at = Instant::now();
        // A failed write means the connection is gone: the next read says so.
        let _ = self.send_interim(&resp).await;
    }

    /// This request's release handle (made on the first call): given to the locker with
    /// a lock request, so that a newer request can make this one stop; the body ends once
    /// it is set (checked after every receive).
    pub fn release(&mut self) -> Release {
        let socket = self.wire.as_ref().map(|w| w.stream.as_raw_fd());
        self.release
            .get_or_insert_with(|| Release::new(socket))
            .clone()
    }

    /// A newer request asked for the upload and the body has not ended otherwise:
    /// end it here.
    fn check_stop(&mut self) {
        if self.end.is_none() && self.release.as_ref().is_some_and(Release::requested) {
            self.end = Some(BodyEnd::Stopped);
        }
    }

    /// The body's Content-Length (`None` when chunked).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the request carries a non-empty (or chunked) body.
    pub fn has_body(&self) -> bool {
        self.content_length != Some(0)
    }

    /// Decoded body bytes taken out so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// How the body ended, once it has.
    pub fn end(&self) -> Option<&BodyEnd> {
        self.end.as_ref()
    }

    /// Whether the whole body has been received (so the connection can be reused).
    pub fn finished(&self) -> bool {
        matches!(self.end, Some(BodyEnd::Complete))
    }

    /// Trailer fields of a chunked body, once it is complete.
    pub fn trailers(&self) -> &[(String, Vec<u8>)] {
        match &self.state {
            BodyState::Chunked { decoder, .. } => decoder.trailers(),
            BodyState::Length { .. } => &[],
        }
    }

    /// Whether the whole of a Content-Length body already sits in the connection's input
    /// buffer (it came with the head), so storing it takes one write and no socket read.
    pub fn whole_in_hand(&self) -> bool {
        match self.state {
            BodyState::Length { remaining } => {
                self.end.is_none() && self.received == 0 && self.inbuf.len() as u64 >= remaining
            }
            BodyState::Chunked { .. } => false,
        }
    }

    /// Whether the body can be spliced: it has a Content-Length, arrives on a socket,
    /// and nothing of it has been taken yet.
    pub fn can_splice(&self) -> bool {
        self.wire.is_some()
            && matches!(self.state, BodyState::Length { .. })
            && self.end.is_none()
            && self.received == 0
    }

    /// Sends an informational (1xx) answer on the connection now, before the final one:
    /// `100 Continue` (sent here before the first read from the socket when the client
    /// asked for it), or another the request handling wants the client to see before or
    /// during the body. Nothing is sent for a request handled in-process.
    pub async fn send_interim(&mut self, resp: &Response) -> io::Result<()> {
        let Some(wire) = self.wire.as_ref() else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(64);
        encode_interim(resp, &mut out);
        let (res, _) = wire.stream.write_all(out).await;
        res
    }

    async fn send_continue(&mut self) -> io::Result<()> {
        if self.expect_continue {
            self.expect_continue = false;
            self.send_interim(&Response::new(100)).await?;
        }
        Ok(())
    }

    /// One socket read into `buf` with the body timeout (`SHUT_RD` when it passes);
    /// without a socket, end-of-file.
    async fn recv<T: BoundedBufMut>(&self, buf: T) -> (io::Result<usize>, T, bool) {
        match &self.wire {
            Some(w) => read_timeout(w.stream, buf, self.timeout, libc::SHUT_RD).await,
            None => (Ok(0), buf, false),
        }
    }

    /// Fills `buf` (empty, owned by the caller) with up to `max` body bytes. Returns
    /// early when the body ends, or when the buffer holds `FLUSH_BYTES` and the socket
    /// has nothing more right now. An empty buffer means the body has ended.
    pub async fn fill(&mut self, mut buf: Vec<u8>, max: usize) -> Vec<u8> {
        debug_assert!(buf.is_empty());
        let max = max.min(buf.capacity());
        if self.end.is_some() || max == 0 {
            return buf;
        }
        match self.state {
            BodyState::Length { .. } => self.fill_length(&mut buf, max).await,
            BodyState::Chunked { .. } => self.fill_chunked(&mut buf, max).await,
        }
        self.received += buf.len() as u64;
        self.check_stop();
        buf
    }

    async fn fill_length(&mut self, buf: &mut Vec<u8>, max: usize) {
        let BodyState::Length { remaining } = &mut self.state else {
            return;
        };
        // Body bytes that arrived with the head come first.
        if !self.inbuf.is_empty() {
            let n = (self.inbuf.len() as u64).min(*remaining).min(max as u64) as usize;
            buf.extend_from_slice(&self.inbuf[..n]);
            self.inbuf.drain(..n);
            *remaining -= n as u64;
            if *remaining == 0 {
                self.end = Some(BodyEnd::Complete);
                return;
            }
            if buf.len() == max {
                return;
            }
        }
        if let Err(e) = self.send_continue().await {
            self.end = Some(BodyEnd::Failed(e));
            return;
        }
        loop {
            let BodyState::Length { remaining } = self.state else {
                return;
            };
            self.send_progress().await;
            let want = ((max - buf.len()) as u64).min(remaining) as usize;
            let len = buf.len();
            let taken = std::mem::take(buf);
            let (res, slice, timed_out) = self.recv(taken.slice(len..len + want)).await;
            *buf = slice.into_inner();
            let n = match BodyEnd::of_read(res, timed_out) {
                Ok(n) => n,
                Err(end) => {
                    self.end = Some(end);
                    return;
                }
            };
            let remaining = remaining - n as u64;
            self.state = BodyState::Length { remaining };
            if remaining == 0 {
                self.end = Some(BodyEnd::Complete);
                return;
            }
            if timed_out {
                self.end = Some(BodyEnd::TimedOut);
                return;
            }
            if buf.len() == max || (n < want && buf.len() >= FLUSH_BYTES) {
                return;
            }
        }
    }

    async fn fill_chunked(&mut self, buf: &mut Vec<u8>, max: usize) {
        loop {
            // Decode what is already buffered. The decoder is fed at most as many bytes
            // as the buffer has room for, so a data range always fits.
            {
                let BodyState::Chunked { decoder, parsed } = &mut self.state else {
                    return;
                };
                while *parsed < self.inbuf.len() {
                    let room = max - buf.len();
                    if room == 0 {
                        return;
                    }
                    let avail = &self.inbuf[*parsed..];
                    let input = &avail[..avail.len().min(room)];
                    match decoder.decode(input) {
                        Ok((c, Step::Data { start, end })) => {
                            buf.extend_from_slice(&input[start..end]);
                            *parsed += c;
                        }
                        Ok((c, Step::NeedMore)) => {
                            *parsed += c;
                            if c == 0 {
                                break;
                            }
                        }
                        Ok((c, Step::Done)) => {
                            *parsed += c;
                            let p = *parsed;
                            self.inbuf.drain(..p);
                            *parsed = 0;
                            self.end = Some(BodyEnd::Complete);
                            return;
                        }
                        Err(e) => {
                            self.end = Some(BodyEnd::Malformed(e));
                            return;
                        }
                    }
                }
                if *parsed == self.inbuf.len() {
                    self.inbuf.clear();
                    *parsed = 0;
                }
            }
            if buf.len() >= FLUSH_BYTES {
                return;
            }
            if let Err(e) = self.send_continue().await {
                self.end = Some(BodyEnd::Failed(e));
                return;
            }
            self.send_progress().await;
            if self.inbuf.capacity() - self.inbuf.len() < CHUNKED_READ_BYTES {
                self.inbuf.reserve(CHUNKED_READ_BYTES);
            }
            let taken = std::mem::take(self.inbuf);
            let (len, cap) = (taken.len(), taken.capacity());
            let (res, slice, timed_out) = self.recv(taken.slice(len..cap)).await;
            *self.inbuf = slice.into_inner();
            // After a timeout, decode what came with the shutdown; the next read ends.
            self.timed_out |= timed_out;
            if let Err(end) = BodyEnd::of_read(res, self.timed_out) {
                self.end = Some(end);
                return;
            }
        }
    }

    /// The splice path: body bytes that arrived with the head, lent out for one write
    /// (`buffer[..n]` are the bytes), or `None` when there are none. The buffer must come
    /// back through [`BodySource::keep_early`] (the bytes were stored) or
    /// [`BodySource::restore_early`] (they were not).
    pub fn lend_early(&mut self) -> Option<(Vec<u8>, usize)> {
        let BodyState::Length { remaining } = self.state else {
            return None;
        };
        if self.inbuf.is_empty() || self.end.is_some() {
            return None;
        }
        let n = (self.inbuf.len() as u64).min(remaining) as usize;
        Some((std::mem::take(self.inbuf), n))
    }

    /// The `n` lent bytes were stored: they are taken out of the body.
    pub fn keep_early(&mut self, buf: Vec<u8>, n: usize) {
        *self.inbuf = buf;
        self.inbuf.drain(..n);
        if let BodyState::Length { remaining } = &mut self.state {
            *remaining -= n as u64;
            self.received += n as u64;
            if *remaining == 0 {
                self.end = Some(BodyEnd::Complete);
            }
        }
    }

    /// The lent bytes were not stored: they stay where they were.
    pub fn restore_early(&mut self, buf: Vec<u8>) {
        *self.inbuf = buf;
    }

    /// The splice path, socket side: moves the next body bytes from the socket into the
    /// connection's pipe (made now, on the first body that needs one), at most a
    /// pipe-load, without copying them through user space. The socket is first polled in
    /// the ring whenever the previous splice did not fill the pipe, so a splice never
    /// waits in a kernel thread for a slow client. Answers `100 Continue` first if asked.
    /// The caller must move the bytes out of the pipe ([`BodySource::pipe`]) before the
    /// next step.
    pub async fn splice_to_pipe(&mut self) -> SpliceIn {
        let BodyState::Length { remaining } = self.state else {
            return SpliceIn::Unsupported;
        };
        if self.end.is_some() || remaining == 0 {
            return SpliceIn::Ended;
        }
        if self.wire.is_none() {
            return SpliceIn::Unsupported;
        }
        if let Err(e) = self.send_continue().await {
            self.end = Some(BodyEnd::Failed(e));
            return SpliceIn::Ended;
        }
        self.send_progress().await;
        let Some(wire) = self.wire.as_mut() else {
            return SpliceIn::Unsupported;
        };
        if wire.pipe.is_none() {
            match Pipe::new(wire.pipe_size) {
                Ok(p) => *wire.pipe = Some(p),
                Err(e) => {
                    crate::debug!("no pipe for splicing ({e}); this body takes the buffered path");
                    return SpliceIn::NoPipe;
                }
            }
        }
        let Some(pipe) = wire.pipe.as_ref() else {
            return SpliceIn::Unsupported;
        };
        let sock = wire.stream.as_raw_fd();
        let want = remaining.min(pipe.capacity as u64) as u32;
        let poll = self.splice_poll;
        // Wait for input in the ring (not in a kernel thread), then splice what is
        // there; a full pipe-load means more is probably waiting, so the next step skips
        // the poll.
        let (moved, timed_out) = with_deadline(
            async {
                if poll {
                    poll_readable(sock).await?;
                }
                splice(sock, -1, pipe.write_fd(), -1, want).await
            },
            sock,
            self.timeout,
            libc::SHUT_RD,
        )
        .await;
        let n = match moved {
            Err(e) if is_unsupported(&e) => return SpliceIn::Unsupported,
            other => match BodyEnd::of_read(other.map(|n| n as usize), timed_out) {
                Ok(n) => n as u32,
                Err(end) => {
                    self.end = Some(end);
                    return SpliceIn::Ended;
                }
            },
        };
        self.splice_poll = n < want;
        let remaining = remaining - u64::from(n);
        self.state = BodyState::Length { remaining };
        self.received += u64::from(n);
        if remaining == 0 {
            self.end = Some(BodyEnd::Complete);
        } else if timed_out {
            self.end = Some(BodyEnd::TimedOut);
        } else {
            self.check_stop();
        }
        SpliceIn::Moved(n)
    }

    /// The connection's pipe, once [`BodySource::splice_to_pipe`] has made it.
    pub fn pipe(&self) -> Option<&Pipe> {
        self.wire.as_ref().and_then(|w| w.pipe.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_a_read_ended() {
        let eio = || Err(io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(BodyEnd::of_read(Ok(5), false), Ok(5)));
        // Bytes that came with the timeout's shutdown are still bytes.
        assert!(matches!(BodyEnd::of_read(Ok(5), true), Ok(5)));
        assert!(matches!(BodyEnd::of_read(Ok(0), false), Err(BodyEnd::Eof)));
        assert!(matches!(
            BodyEnd::of_read(Ok(0), true),
            Err(BodyEnd::TimedOut)
        ));
        assert!(matches!(
            BodyEnd::of_read(eio(), false),
            Err(BodyEnd::Failed(_))
        ));
        assert!(matches!(
            BodyEnd::of_read(eio(), true),
            Err(BodyEnd::TimedOut)
        ));
    }
}
