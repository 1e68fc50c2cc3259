//! One connection: reads request heads, hands each request to the tus handler with a
//! body reader, writes the answer, and loops while the connection is kept alive.
//!
//! Buffer ownership: `inbuf` holds bytes read from the socket that the head parser or
//! the chunked decoder has not consumed yet (a head being received, body bytes that
//! arrived with the head, pipelined requests). It is small and bounded by
//! `MAX_HEAD_BYTES + HEAD_READ_BYTES`. Body bytes of Content-Length bodies are read from
//! the socket straight into the core's body buffers; chunked bodies are read into
//! `inbuf` and decoded into the body buffers.
//!
//! Timeouts: every socket read has a deadline. When it passes, the socket is shut down
//! with `shutdown(2)` — dropping an in-flight tokio-uring read would leave it armed —
//! and the read is awaited to completion, so its buffer comes back and no byte is lost.

use super::core::Core;
use super::handler;
use super::listen::{local_addr, shutdown_fd};
use super::splice::{is_unsupported, poll_readable, poll_writable, send_room, splice, Pipe};
use crate::error::Error;
use crate::http::body::{BodyError, ChunkedDecoder, Step};
use crate::http::head::{parse_head, BodyKind, Method, RequestHead};
use crate::http::response::{encode, Response, CONTINUE};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_uring::buf::{BoundedBuf, BoundedBufMut};
use tokio_uring::fs::File;
use tokio_uring::net::TcpStream;

/// Bytes reserved for each socket read while receiving a head.
pub const HEAD_READ_BYTES: usize = 8 * 1024;

/// Bytes reserved for each socket read of a chunked body.
pub const CHUNKED_READ_BYTES: usize = 64 * 1024;

/// A body read returns its buffer for writing once it holds this much and the socket
/// has nothing more right now (a slow client's bytes are stored in pieces this big).
pub const FLUSH_BYTES: usize = 64 * 1024;

/// `inbuf` capacity kept between requests; a larger one (after a big head) is shrunk.
pub const IDLE_INBUF_BYTES: usize = 4 * 1024;

/// When closing a connection whose request body was not read, discard at most this
/// many more bytes (for at most `LINGER_TIME`) so the answer is not lost to a reset.
pub const LINGER_BYTES: usize = 1024 * 1024;

/// See `LINGER_BYTES`.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// Serves one accepted connection until it closes.
pub async fn serve(core: Rc<Core>, stream: TcpStream, peer: SocketAddr) {
    let fd = stream.as_raw_fd();
    let guard = core.register(fd);
    let mut conn = Conn {
        local: local_addr(fd),
        core,
        stream,
        peer,
        inbuf: Vec::with_capacity(IDLE_INBUF_BYTES),
        out: Vec::with_capacity(512),
        served: 0,
        idle: guard.idle.clone(),
        pipe: None,
    };
    conn.run().await;
    drop(guard);
}

struct Conn {
    core: Rc<Core>,
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// Received bytes not consumed yet (see the module docs).
    inbuf: Vec<u8>,
    /// The encoded answer; reused.
    out: Vec<u8>,
    /// Requests answered on this connection.
    served: u64,
    /// Shared with the core: true while waiting for the next request.
    idle: Rc<std::cell::Cell<bool>>,
    /// The pipe bodies are spliced through (see `splice`); made on first use.
    pipe: Option<Pipe>,
}

enum HeadRead {
    Head(RequestHead),
    Closed,
    Bad(Error),
}

impl Conn {
    async fn run(&mut self) {
        loop {
            let head = match self.read_head().await {
                HeadRead::Head(h) => h,
                HeadRead::Closed => return,
                HeadRead::Bad(err) => {
                    let started = Instant::now();
                    let resp = handler::error_response(&err);
                    let _ = self.send(&resp, false, true).await;
                    crate::metrics::request(
                        crate::metrics::Endpoint::Other,
                        crate::metrics::METHOD_OTHER,
                        resp.status,
                        started.elapsed(),
                        0,
                    );
                    self.access_log("-", "-", resp.status, 0, started);
                    self.linger_close().await;
                    return;
                }
            };
            let started = Instant::now();
            let ctx = handler::RequestCtx {
                head: &head,
                peer: self.peer,
                local: self.local,
            };
            let timeout = self.core.shared.config.body_timeout;
            let mut body = BodyIo::new(
                &self.stream,
                &mut self.inbuf,
                &mut self.pipe,
                self.core.shared.config.pipe_size,
                &head,
                timeout,
            );
            let mut reply = handler::handle(&self.core, &ctx, &mut body).await;
            let body_done = body.finished();
            let received = body.received;
            let head_only = head.method == Method::Head;
            let close = !head.keep_alive || !body_done || reply.close || self.core.draining();
            // Counted before the answer goes out, so a client that has its answer sees
            // its request in /metrics; the duration is the time to produce the answer.
            crate::metrics::request(
                reply.endpoint,
                crate::metrics::method_index(&head.method),
                reply.resp.status,
                started.elapsed(),
                received,
            );
            let mut sent = self.send(&reply.resp, head_only, close).await;
            if let Some(fb) = reply.file.take() {
                if sent.is_ok() && !head_only {
                    sent = self.send_file(&fb).await;
                }
                let _ = fb.file.close().await;
            }
            self.served += 1;
            let quiet = reply.health && self.core.shared.config.disable_health_access_log;
            if !quiet {
                self.access_log(
                    head.method.as_str(),
                    &head.target,
                    reply.resp.status,
                    received,
                    started,
                );
            }
            if sent.is_err() {
                return;
            }
            if close {
                if !body_done {
                    self.linger_close().await;
                }
                return;
            }
            if self.inbuf.capacity() > IDLE_INBUF_BYTES * 4 && self.inbuf.len() <= IDLE_INBUF_BYTES
            {
                self.inbuf.shrink_to(IDLE_INBUF_BYTES);
            }
        }
    }

    /// Reads until a complete head is in `inbuf`, with the head (or idle) timeout.
    async fn read_head(&mut self) -> HeadRead {
        let cfg = &self.core.shared.config;
        let (head_timeout, idle_timeout) = (cfg.head_timeout, cfg.idle_timeout);
        // The head timeout bounds the whole head, not each read: a client trickling a
        // byte at a time (slowloris) is cut when it runs out, however often it sends.
        let mut head_deadline: Option<Instant> = None;
        loop {
            if !self.inbuf.is_empty() {
                match parse_head(&self.inbuf) {
                    Ok(Some((head, n))) => {
                        self.inbuf.drain(..n);
                        return HeadRead::Head(head);
                    }
                    Ok(None) => {}
                    Err(e) => return HeadRead::Bad(e.into()),
                }
            }
            let waiting = self.inbuf.is_empty();
            if waiting && self.core.draining() {
                return HeadRead::Closed;
            }
            let timeout = if waiting && self.served > 0 {
                idle_timeout
            } else {
                let deadline = *head_deadline.get_or_insert_with(|| Instant::now() + head_timeout);
                deadline.saturating_duration_since(Instant::now())
            };
            if self.inbuf.capacity() - self.inbuf.len() < HEAD_READ_BYTES {
                self.inbuf.reserve(HEAD_READ_BYTES);
            }
            self.idle.set(waiting);
            let buf = std::mem::take(&mut self.inbuf);
            let (len, cap) = (buf.len(), buf.capacity());
            let (res, slice, timed_out) =
                read_timeout(&self.stream, buf.slice(len..cap), timeout, libc::SHUT_RDWR).await;
            self.inbuf = slice.into_inner();
            self.idle.set(false);
            match res {
                Ok(n) if n > 0 && !timed_out => {}
                _ => return HeadRead::Closed,
            }
        }
    }

    async fn send(&mut self, resp: &Response, head_only: bool, close: bool) -> io::Result<()> {
        {
            let date = self.core.date();
            encode(resp, head_only, close, &date, &mut self.out);
        }
        let out = std::mem::take(&mut self.out);
        let (res, out) = self.stream.write_all(out).await;
        self.out = out;
        res
    }

    /// Streams `fb.len` bytes of a file from `fb.start` to the socket (the head is
    /// sent): spliced (`splice_file`) when the core splices, else, or when the file
    /// cannot be spliced, through one pooled body buffer (`send_file_buffered`). A
    /// client that stops reading has its socket shut down at the body timeout. An error
    /// means the body is cut short and the connection must close.
    async fn send_file(&mut self, fb: &handler::FileBody) -> io::Result<()> {
        if self.core.splice_enabled() {
            match self.splice_file(fb).await {
                Ok(true) => return Ok(()),
                Ok(false) => {} // nothing sent yet: the buffered path sends it all
                Err(e) => {
                    crate::debug!("download cut short: {e}");
                    return Err(e);
                }
            }
        }
        self.send_file_buffered(fb).await
    }

    /// Sends a download's byte range without copying it through user space: the file
    /// is spliced into the connection's pipe (a pipe-load at a time, on an io-wq
    /// thread) and the pipe into the socket. Before each splice into the socket, the
    /// socket is polled for room in the ring and the splice is cut to the room its send
    /// buffer has (`splice::send_room`), so a client that reads slowly never holds a
    /// kernel thread waiting; the body timeout bounds each wait. Returns `Ok(false)`,
    /// with nothing sent, when the file cannot be spliced here (the caller falls back
    /// to the buffered path and the core stops trying); an error once bytes have gone
    /// out. On any error the pipe is dropped, since it may hold bytes.
    async fn splice_file(&mut self, fb: &handler::FileBody) -> io::Result<bool> {
        let timeout = self.core.shared.config.body_timeout;
        if self.pipe.is_none() {
            match Pipe::new(self.core.shared.config.pipe_size) {
                Ok(p) => self.pipe = Some(p),
                Err(_) => return Ok(false),
            }
        }
        let Some(pipe) = self.pipe.as_ref() else {
            return Ok(false);
        };
        let sock = self.stream.as_raw_fd();
        let file = fb.file.as_raw_fd();
        let (mut pos, end) = (fb.start, fb.start + fb.len);
        let mut result = Ok(true);
        'file: while pos < end {
            let want = (end - pos).min(pipe.capacity as u64) as u32;
            let n = match splice(file, pos as i64, pipe.write_fd(), -1, want).await {
                Ok(0) => {
                    result = Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the data file shrank while it was being sent",
                    ));
                    break;
                }
                Ok(n) => n,
                Err(e) if pos == fb.start && is_unsupported(&e) => {
                    self.core.disable_splice();
                    return Ok(false);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            pos += u64::from(n);
            let mut left = n;
            while left > 0 {
                let (moved, timed_out) = with_deadline(
                    async {
                        poll_writable(sock).await?;
                        let room = send_room(sock).unwrap_or(64 * 1024).max(4096) as u32;
                        splice(pipe.read_fd(), -1, sock, -1, left.min(room)).await
                    },
                    sock,
                    timeout,
                    libc::SHUT_RDWR,
                )
                .await;
                match moved {
                    Ok(m) if m > 0 && !timed_out => left -= m,
                    Ok(_) if timed_out => {
                        result = Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client stopped reading the download",
                        ));
                        break 'file;
                    }
                    Ok(_) => {
                        result = Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "the client closed the connection during the download",
                        ));
                        break 'file;
                    }
                    Err(e) => {
                        result = Err(e);
                        break 'file;
                    }
                }
            }
        }
        if result.is_err() {
            self.pipe = None;
        }
        result
    }

    /// Sends a download's byte range through one pooled body buffer: read from the file,
    /// write to the socket, a buffer at a time, each write with the body timeout.
    async fn send_file_buffered(&mut self, fb: &handler::FileBody) -> io::Result<()> {
        let core = self.core.clone();
        let timeout = core.shared.config.body_timeout;
        let fd = self.stream.as_raw_fd();
        let mut buf = core.take_buffer();
        let cap = buf.capacity().max(1);
        let (mut pos, end) = (fb.start, fb.start + fb.len);
        let mut result = Ok(());
        while pos < end {
            let want = (end - pos).min(cap as u64) as usize;
            buf.clear();
            let (res, slice) = fb.file.read_at(buf.slice(0..want), pos).await;
            buf = slice.into_inner();
            match res {
                Ok(0) => {
                    result = Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the data file shrank while it was being sent",
                    ));
                    break;
                }
                Ok(n) => pos += n as u64,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            let ((res, b), timed_out) =
                with_deadline(self.stream.write_all(buf), fd, timeout, libc::SHUT_RDWR).await;
            buf = b;
            if let Err(e) = res {
                result = Err(e);
                break;
            }
            if timed_out {
                result = Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading the download",
                ));
                break;
            }
        }
        if let Err(e) = &result {
            crate::debug!("download cut short at byte {pos}: {e}");
        }
        core.give_buffer(buf);
        result
    }

    /// Half-closes and discards what the client still sends, briefly, so that the
    /// answer reaches it before the close (closing with unread bytes sends a reset).
    async fn linger_close(&mut self) {
        shutdown_fd(self.stream.as_raw_fd(), libc::SHUT_WR);
        let deadline = Instant::now() + LINGER_TIME;
        let mut discarded = 0;
        let mut buf = std::mem::take(&mut self.inbuf);
        buf.clear();
        if buf.capacity() < HEAD_READ_BYTES {
            buf.reserve(HEAD_READ_BYTES);
        }
        while discarded < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let cap = buf.capacity();
            let (res, slice, timed_out) =
                read_timeout(&self.stream, buf.slice(0..cap), left, libc::SHUT_RDWR).await;
            buf = slice.into_inner();
            buf.clear();
            match res {
                Ok(n) if n > 0 && !timed_out => discarded += n,
                _ => break,
            }
        }
    }

    fn access_log(&self, method: &str, target: &str, status: u16, bytes: u64, started: Instant) {
        if self.core.shared.config.disable_access_log {
            return;
        }
        crate::info!(
            "{method} {target} {status} {bytes}B {:.1}ms {}",
            started.elapsed().as_secs_f64() * 1000.0,
            self.peer
        );
    }
}

/// A socket read with a deadline. On timeout the socket is shut down (`how`) so the
/// pending read completes; the third value says whether that happened.
async fn read_timeout<T: BoundedBufMut>(
    stream: &TcpStream,
    buf: T,
    timeout: Duration,
    how: libc::c_int,
) -> (io::Result<usize>, T, bool) {
    let ((res, buf), timed_out) =
        with_deadline(stream.read(buf), stream.as_raw_fd(), timeout, how).await;
    (res, buf, timed_out)
}

/// Runs a socket operation with a deadline. When the deadline passes, the socket is
/// shut down (`how`), which completes the pending operation, and the operation is
/// still awaited to its end: nothing is dropped in flight. The flag says whether the
/// deadline passed.
async fn with_deadline<F: std::future::Future>(
    op: F,
    fd: std::os::fd::RawFd,
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
    /// A newer request took the upload over (see `storage::locks`): receiving stopped.
    Stopped,
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

/// A request body being received: the handler pulls decoded bytes from it with
/// [`BodyIo::fill`], in buffers it owns.
pub struct BodyIo<'a> {
    stream: &'a TcpStream,
    inbuf: &'a mut Vec<u8>,
    /// The connection's pipe for splicing, made on first use and kept for the next
    /// bodies.
    pipe: &'a mut Option<Pipe>,
    state: BodyState,
    /// Still to answer `100 Continue` before the first read from the socket.
    expect_continue: bool,
    timeout: Duration,
    /// Decoded body bytes handed out so far.
    pub received: u64,
    /// Set once the body has ended, for good or bad; no more bytes come after it.
    end: Option<BodyEnd>,
    /// The body timeout fired and the socket was shut down for reading.
    timed_out: bool,
    /// Capacity asked for a new pipe (`--pipe-size`).
    pipe_size: usize,
    content_length: Option<u64>,
    /// The upload lock's stop flag, once the handler holds the lock: a newer request
    /// for the upload sets it (and shuts the socket down for reading), and the body
    /// ends (`BodyEnd::Stopped`) after the bytes already received.
    stop: Option<Arc<AtomicBool>>,
}

impl<'a> BodyIo<'a> {
    fn new(
        stream: &'a TcpStream,
        inbuf: &'a mut Vec<u8>,
        pipe: &'a mut Option<Pipe>,
        pipe_size: usize,
        head: &RequestHead,
        timeout: Duration,
    ) -> Self {
        let (state, content_length, end) = match head.body {
            BodyKind::None => (
                BodyState::Length { remaining: 0 },
                Some(0),
                Some(BodyEnd::Complete),
            ),
            BodyKind::Length(0) => (
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
        BodyIo {
            stream,
            inbuf,
            pipe,
            state,
            expect_continue: head.expect_continue,
            timeout,
            received: 0,
            end,
            timed_out: false,
            pipe_size,
            content_length,
            stop: None,
        }
    }

    /// The connection's socket (registered with the upload lock, so that a newer
    /// request can shut it down for reading; see `storage::locks`).
    pub fn socket(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Ends the body once `flag` is set (checked after every receive).
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// A newer request asked for the upload and the body has not ended otherwise:
    /// end it here.
    fn check_stop(&mut self) {
        if self.end.is_none()
            && self
                .stop
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Acquire))
        {
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

    async fn send_continue(&mut self) -> io::Result<()> {
        if self.expect_continue {
            self.expect_continue = false;
            let (res, _) = self.stream.write_all(CONTINUE).await;
            res?;
        }
        Ok(())
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
            let BodyState::Length { remaining } = &mut self.state else {
                return;
            };
            let want = ((max - buf.len()) as u64).min(*remaining) as usize;
            let len = buf.len();
            let taken = std::mem::take(buf);
            let (res, slice, timed_out) = read_timeout(
                self.stream,
                taken.slice(len..len + want),
                self.timeout,
                libc::SHUT_RD,
            )
            .await;
            *buf = slice.into_inner();
            match res {
                Ok(0) => {
                    self.end = Some(if timed_out {
                        BodyEnd::TimedOut
                    } else {
                        BodyEnd::Eof
                    });
                    return;
                }
                Ok(n) => {
                    *remaining -= n as u64;
                    if *remaining == 0 {
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
                Err(e) => {
                    self.end = Some(if timed_out {
                        BodyEnd::TimedOut
                    } else {
                        BodyEnd::Failed(e)
                    });
                    return;
                }
            }
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

    /// Whether the body can be spliced: it has a Content-Length and nothing of it has
    /// been taken yet.
    pub fn can_splice(&self) -> bool {
        matches!(self.state, BodyState::Length { .. }) && self.end.is_none() && self.received == 0
    }

    /// Moves the rest of a Content-Length body into `file` at `pos` without copying it
    /// through user space: bytes that came with the head are written first, then the
    /// socket is spliced into the connection's pipe and the pipe into the file, one
    /// pipe-full at a time. The body must fit where it goes (the caller checked the
    /// Content-Length against the room left).
    pub async fn splice_into(&mut self, file: &File, mut pos: u64) -> Spliced {
        let BodyState::Length { remaining } = self.state else {
            return Spliced::fallback(pos);
        };
        let mut remaining = remaining;
        // Body bytes that arrived with the head.
        if !self.inbuf.is_empty() {
            let n = (self.inbuf.len() as u64).min(remaining) as usize;
            let buf = std::mem::take(self.inbuf);
            let (res, buf) = crate::storage::files::write_data(file, buf, 0..n, pos).await;
            *self.inbuf = buf;
            if let Err(e) = res {
                return Spliced::failed(pos, e);
            }
            self.inbuf.drain(..n);
            pos += n as u64;
            remaining -= n as u64;
            self.received += n as u64;
            self.state = BodyState::Length { remaining };
        }
        if remaining == 0 {
            self.end = Some(BodyEnd::Complete);
            return Spliced::done(pos);
        }
        if let Err(e) = self.send_continue().await {
            self.end = Some(BodyEnd::Failed(e));
            return Spliced::done(pos);
        }
        // The pipe is made only now, when the socket has body bytes to give: a body that
        // came whole with its head never needs one.
        if self.pipe.is_none() {
            match Pipe::new(self.pipe_size) {
                Ok(p) => *self.pipe = Some(p),
                Err(e) => {
                    crate::debug!("no pipe for splicing ({e}); buffered path");
                    return Spliced::fallback(pos);
                }
            }
        }
        let Some(pipe) = self.pipe.as_ref() else {
            return Spliced::fallback(pos);
        };
        let sock = self.stream.as_raw_fd();
        let fd = file.as_raw_fd();
        let mut need_poll = true;
        while remaining > 0 {
            let want = remaining.min(pipe.capacity as u64) as u32;
            // Wait for input in the ring (not in a kernel thread), then splice what is
            // there; a full pipe-load means more is probably waiting, so skip the poll.
            let (moved, timed_out) = with_deadline(
                async {
                    if need_poll {
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
                Ok(0) => {
                    self.end = Some(if timed_out {
                        BodyEnd::TimedOut
                    } else {
                        BodyEnd::Eof
                    });
                    break;
                }
                Ok(n) => n,
                Err(e) if is_unsupported(&e) => {
                    return Spliced::fallback(pos);
                }
                Err(e) => {
                    self.end = Some(if timed_out {
                        BodyEnd::TimedOut
                    } else {
                        BodyEnd::Failed(e)
                    });
                    break;
                }
            };
            need_poll = n < want;
            remaining -= u64::from(n);
            self.received += u64::from(n);
            self.state = BodyState::Length { remaining };
            if let Err(e) = drain_pipe(pipe, file, fd, &mut pos, n).await {
                return Spliced::failed(pos, e);
            }
            if timed_out {
                self.end = Some(if remaining == 0 {
                    BodyEnd::Complete
                } else {
                    BodyEnd::TimedOut
                });
                return Spliced::done(pos);
            }
            if remaining > 0
                && self
                    .stop
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Acquire))
            {
                self.end = Some(BodyEnd::Stopped);
                return Spliced::done(pos);
            }
        }
        if remaining == 0 {
            self.end = Some(BodyEnd::Complete);
        }
        Spliced::done(pos)
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
            if self.inbuf.capacity() - self.inbuf.len() < CHUNKED_READ_BYTES {
                self.inbuf.reserve(CHUNKED_READ_BYTES);
            }
            let taken = std::mem::take(self.inbuf);
            let (len, cap) = (taken.len(), taken.capacity());
            let (res, slice, timed_out) = read_timeout(
                self.stream,
                taken.slice(len..cap),
                self.timeout,
                libc::SHUT_RD,
            )
            .await;
            *self.inbuf = slice.into_inner();
            self.timed_out |= timed_out;
            match res {
                Ok(0) => {
                    self.end = Some(if self.timed_out {
                        BodyEnd::TimedOut
                    } else {
                        BodyEnd::Eof
                    });
                    return;
                }
                // After a timeout, decode what came with the shutdown; the next read ends.
                Ok(_) => {}
                Err(e) => {
                    self.end = Some(if timed_out {
                        BodyEnd::TimedOut
                    } else {
                        BodyEnd::Failed(e)
                    });
                    return;
                }
            }
        }
    }
}

/// Moves `n` bytes that are in the pipe into the file at `*pos`. If the filesystem
/// cannot take a splice, the bytes are read out of the pipe and written normally, so
/// none is lost; any other failure empties the pipe (keeping its invariant) and is
/// returned.
async fn drain_pipe(pipe: &Pipe, file: &File, fd: RawFd, pos: &mut u64, n: u32) -> io::Result<()> {
    let mut left = n;
    // Test builds may fail this write after `budget` bytes (`storage::fault`).
    let mut budget = crate::storage::fault::data_write(n as usize).map(|k| k as u32);
    while left > 0 {
        let moved = match budget {
            Some(0) => Err(crate::storage::fault::eio()),
            Some(b) => splice(pipe.read_fd(), -1, fd, *pos as i64, left.min(b)).await,
            None => splice(pipe.read_fd(), -1, fd, *pos as i64, left).await,
        };
        if let (Some(b), Ok(m)) = (budget.as_mut(), &moved) {
            *b -= (*m).min(*b);
        }
        match moved {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "splice into file moved nothing",
                ))
            }
            Ok(m) => {
                *pos += u64::from(m);
                left -= m;
            }
            Err(e) => {
                let mut rescued = vec![0u8; left as usize];
                let got = pipe.read_buffered(&mut rescued)?;
                rescued.truncate(got);
                if !is_unsupported(&e) {
                    return Err(e);
                }
                let len = rescued.len();
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the pipe held fewer bytes than were spliced into it",
                    ));
                }
                let (res, _) = crate::storage::files::write_data(file, rescued, 0..len, *pos).await;
                res?;
                // What was read and written, not what was asked for: the rest, if the read
                // came short, is still in the pipe for the next turn of the loop.
                *pos += len as u64;
                left -= len as u32;
            }
        }
    }
    Ok(())
}

/// What splicing a body achieved.
#[derive(Debug)]
pub struct Spliced {
    /// The file offset after the last byte written.
    pub pos: u64,
    /// Splicing was not possible: nothing was lost, the caller continues the body on the
    /// buffered path from `pos`.
    pub fallback: bool,
    /// Writing to the file failed (the body is abandoned).
    pub write_error: Option<io::Error>,
}

impl Spliced {
    fn done(pos: u64) -> Spliced {
        Spliced {
            pos,
            fallback: false,
            write_error: None,
        }
    }
    fn fallback(pos: u64) -> Spliced {
        Spliced {
            pos,
            fallback: true,
            write_error: None,
        }
    }
    fn failed(pos: u64, e: io::Error) -> Spliced {
        Spliced {
            pos,
            fallback: false,
            write_error: Some(e),
        }
    }
}
