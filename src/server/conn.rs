//! One connection: reads request heads, hands each request to the request handling
//! with the body's source, writes the answer (and a download's bytes, through the data
//! store), and loops while the connection is kept alive. Whether it is, is decided here
//! and only here ([`keep_alive`]).
//!
//! Buffer ownership: `inbuf` holds bytes read from the socket that the head parser or
//! the chunked decoder has not consumed yet (a head being received, body bytes that
//! arrived with the head, pipelined requests). It is small and bounded by
//! `MAX_HEAD_BYTES + HEAD_READ_BYTES`. Body bytes of Content-Length bodies are read from
//! the socket straight into the data store's body buffers (or spliced); chunked bodies
//! are read into `inbuf` and decoded into the body buffers (see [`crate::net::source`]).
//!
//! Timeouts: every socket read has a deadline. When it passes, the socket is shut down
//! with `shutdown(2)` (dropping an in-flight tokio-uring read would leave it armed) and
//! the read is awaited to completion, so its buffer comes back and no byte is lost
//! ([`crate::net::deadline`]).

use super::core::Core;
use super::handler;
use super::listen::local_addr;
use super::reply::{error_response, CloseCause, Download};
use super::request::RequestCtx;
use crate::error::Error;
use crate::http::head::{parse_head, Method, RequestHead};
use crate::http::response::{encode, Response};
use crate::net::deadline::read_timeout;
use crate::net::splice::Pipe;
use crate::net::{shutdown_fd, BodySink, BodySource, Wire};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// Bytes reserved for each socket read while receiving a head.
pub const HEAD_READ_BYTES: usize = 8 * 1024;

/// `inbuf` capacity kept between requests; a larger one (after a big head) is shrunk.
pub const IDLE_INBUF_BYTES: usize = 4 * 1024;

/// When closing a connection whose request body was not read, discard at most this
/// many more bytes (for at most `LINGER_TIME`) so the answer is not lost to a reset.
pub const LINGER_BYTES: usize = 1024 * 1024;

/// See `LINGER_BYTES`.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// Whether the connection may carry another request after an answer: the client did
/// not ask to close (HTTP/1.0, `Connection: close`; `client` is false for a head that
/// could not be read), the request's body was read to its end, the request did nothing
/// that spoils the connection (`closes`), and the daemon is not draining. The one place
/// that decides.
pub fn keep_alive(
    client: bool,
    body_complete: bool,
    closes: Option<CloseCause>,
    draining: bool,
) -> bool {
    client && body_complete && closes.is_none() && !draining
}

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
    /// The pipe bodies and downloads are spliced through (see `crate::net::splice`);
    /// made on first use.
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
                    let resp = error_response(&err);
                    let close = !keep_alive(false, false, None, self.core.draining());
                    let _ = self.send(&resp, false, close).await;
                    crate::metrics::request(
                        crate::metrics::Endpoint::Other,
                        crate::metrics::Protocol::Tus,
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
            let ctx = RequestCtx {
                head: &head,
                peer: self.peer,
                local: self.local,
            };
            let cfg = &self.core.shared.config;
            let wire = Wire {
                stream: &self.stream,
                pipe: &mut self.pipe,
                pipe_size: cfg.pipe_size,
            };
            let mut body = BodySource::new(Some(wire), &mut self.inbuf, &head, cfg.body_timeout);
            let mut reply = handler::handle(&self.core, &ctx, &mut body).await;
            let body_done = body.finished();
            let received = body.received();
            drop(body);
            let head_only = head.method == Method::Head;
            let close = !keep_alive(
                head.keep_alive,
                body_done,
                reply.closes,
                self.core.draining(),
            );
            // Counted before the answer goes out, so a client that has its answer sees
            // its request in /metrics; the duration is the time to produce the answer.
            crate::metrics::request(
                reply.endpoint,
                reply.protocol,
                crate::metrics::method_index(&head.method),
                reply.resp.status,
                started.elapsed(),
                received,
            );
            let mut sent = self.send(&reply.resp, head_only, close).await;
            if let Some(download) = reply.data.take() {
                if sent.is_ok() && !head_only {
                    sent = self.send_data(download).await;
                }
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

    /// Sends a download's bytes (the head is sent) through the data store, which
    /// splices or copies them into the socket. A client that stops reading has its
    /// socket shut down at the body timeout. An error means the body is cut short and
    /// the connection must close.
    async fn send_data(&mut self, download: Download) -> io::Result<()> {
        let wire = Wire {
            stream: &self.stream,
            pipe: &mut self.pipe,
            pipe_size: self.core.shared.config.pipe_size,
        };
        let mut sink = BodySink::new(wire, self.core.shared.config.body_timeout);
        let Download { reader, start, len } = download;
        reader.send(start, len, &mut sink).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_table() {
        use CloseCause::{BodyError, TakenOver};
        // (client keeps alive, body read to its end, what the request did, draining)
        let cases = [
            ((true, true, None, false), true),
            ((false, true, None, false), false),
            ((true, false, None, false), false),
            ((true, true, Some(BodyError), false), false),
            ((true, true, Some(TakenOver), false), false),
            ((true, true, None, true), false),
            ((false, false, None, false), false),
        ];
        for ((client, body, closes, draining), want) in cases {
            assert_eq!(
                keep_alive(client, body, closes, draining),
                want,
                "{:?}",
                (client, body, closes, draining)
            );
        }
    }
}
