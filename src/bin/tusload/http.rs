//! A minimal HTTP/1.1 client: one keep-alive `TcpStream` per worker, request heads built
//! in a reused buffer, responses parsed from a reused read buffer (no allocation per
//! request once the buffers have grown).

use std::fmt::{self, Display};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::data::Pattern;

/// Bodies up to this size are copied behind the request head and sent in one write.
const INLINE_BODY: u64 = 64 * 1024;

/// A parsed `http://authority/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host[:port]` as written (used for the Host header).
    pub authority: String,
    /// The path (with query, if any); `/` when the URL has none.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, String> {
        let rest = strip_prefix_ci(url.trim(), "http://").ok_or_else(|| {
            if strip_prefix_ci(url, "https://").is_some() {
                format!("{url}: https is not supported (plain HTTP/1.1 only)")
            } else {
                format!("{url}: expected an http:// URL")
            }
        })?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.is_empty() {
            return Err(format!("{url}: missing host"));
        }
        let mut path = rest[end..].split('#').next().unwrap_or("").to_owned();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Ok(Url {
            authority: authority.to_owned(),
            path,
        })
    }

    /// Resolves the authority to a socket address (port 80 when none is given).
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        let a = &self.authority;
        let has_port = match a.rfind(']') {
            Some(close) => a[close..].contains(':'),
            None => a.contains(':'),
        };
        let with_port = if has_port {
            a.clone()
        } else {
            format!("{a}:80")
        };
        with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {a}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {a}: no address"))
    }

    /// `http://authority` + `path`.
    pub fn absolute(&self, path: &str) -> String {
        format!("http://{}{}", self.authority, path)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Resolves a `Location` header value to a request path on the same host:port. An
/// absolute (`http://host/files/x`) or scheme-relative (`//host/files/x`) value keeps only
/// its path; a path-absolute value is used as is; a relative one (`x`, `files/x`) is
/// merged with the directory of `base_path` (RFC 3986 §5.2.3, without dot segments).
pub fn resolve_location_into(base_path: &str, location: &str, out: &mut String) {
    out.clear();
    let loc = location.trim();
    let after_authority = strip_prefix_ci(loc, "http://")
        .or_else(|| strip_prefix_ci(loc, "https://"))
        .or_else(|| loc.strip_prefix("//"));
    if let Some(rest) = after_authority {
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => out.push_str(&rest[i..]),
            Some(i) => {
                out.push('/');
                out.push_str(&rest[i..]);
            }
            None => out.push('/'),
        }
    } else if loc.starts_with('/') {
        out.push_str(loc);
    } else {
        let base = base_path.split('?').next().unwrap_or("");
        match base.rfind('/') {
            Some(i) => out.push_str(&base[..=i]),
            None => out.push('/'),
        }
        out.push_str(loc);
    }
}

/// The last path segment (the upload id for tus URLs).
pub fn last_segment(path: &str) -> &str {
    let p = path.split('?').next().unwrap_or("").trim_end_matches('/');
    p.rsplit('/').next().unwrap_or(p)
}

/// What a response head told us.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    pub content_length: Option<u64>,
    /// The connection cannot be reused after this response (`Connection: close`,
    /// HTTP/1.0 without keep-alive, or a body we do not delimit).
    pub close: bool,
    pub upload_offset: Option<u64>,
    pub upload_length: Option<u64>,
    pub has_location: bool,
    /// `Transfer-Encoding` was present: the body is read as chunked and discarded
    /// (@tus/server answers a POST with a chunked body).
    pub transfer_encoding: bool,
}

#[derive(Debug)]
pub enum HttpError {
    Connect(io::Error),
    Io(io::Error),
    /// The peer closed the connection; `partial` when some of a response had arrived.
    Eof {
        partial: bool,
    },
    Proto(String),
}

impl Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect: {e}"),
            HttpError::Io(e) => write!(f, "i/o: {e}"),
            HttpError::Eof { partial: true } => f.write_str("connection closed mid-response"),
            HttpError::Eof { partial: false } => f.write_str("connection closed before a response"),
            HttpError::Proto(m) => write!(f, "protocol: {m}"),
        }
    }
}

fn proto<T>(msg: impl Into<String>) -> Result<T, HttpError> {
    Err(HttpError::Proto(msg.into()))
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = v {
        v = rest;
    }
    v
}

/// Parses a complete response head (status line through the blank line). The Location
/// value, if any, is copied into `location` (cleared first).
pub fn parse_head(head: &[u8], location: &mut String) -> Result<Resp, HttpError> {
    location.clear();
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = trim(lines.next().unwrap_or(b""));
    let (version, rest) = match status_line.iter().position(|&b| b == b' ') {
        Some(i) => (&status_line[..i], &status_line[i + 1..]),
        None => return proto("malformed status line"),
    };
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => {
            let shown = String::from_utf8_lossy(&status_line[..status_line.len().min(40)]);
            return proto(format!("not an HTTP/1.x response: {shown:?}"));
        }
    };
    let code = rest.get(..3).unwrap_or(b"");
    let status = match parse_u64(code) {
        Some(s) if (100..1000).contains(&s) && matches!(rest.get(3), None | Some(b' ')) => s as u16,
        _ => return proto("malformed status code"),
    };
    let mut r = Resp {
        status,
        close: http10,
        ..Resp::default()
    };
    for line in lines {
        let line = trim(line);
        if line.is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return proto("header line without a colon");
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-length") {
            let n =
                parse_u64(value).ok_or_else(|| HttpError::Proto("bad Content-Length".into()))?;
            if r.content_length.is_some_and(|old| old != n) {
                return proto("conflicting Content-Length headers");
            }
            r.content_length = Some(n);
        } else if is("connection") {
            for token in value.split(|&b| b == b',') {
                let t = trim(token);
                if t.eq_ignore_ascii_case(b"close") {
                    r.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    r.close = false;
                }
            }
        } else if is("upload-offset") {
            r.upload_offset =
                Some(parse_u64(value).ok_or_else(|| HttpError::Proto("bad Upload-Offset".into()))?);
        } else if is("upload-length") {
            r.upload_length =
                Some(parse_u64(value).ok_or_else(|| HttpError::Proto("bad Upload-Length".into()))?);
        } else if is("location") {
            r.has_location = true;
            location.push_str(&String::from_utf8_lossy(value));
        } else if is("transfer-encoding") {
            r.transfer_encoding = true;
        }
    }
    Ok(r)
}

/// A reusable read buffer: bytes `start..end` of `data` are received but unconsumed.
pub struct RecvBuf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    pub fn new(cap: usize) -> RecvBuf {
        RecvBuf {
            data: vec![0; cap].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    fn pending(&self) -> bool {
        self.end > self.start
    }
}

fn read_some<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads one final response (interim 1xx responses are skipped) and consumes its body.
/// `head_request`: the request was HEAD, so there is no body whatever the headers say.
pub fn read_response<R: Read>(
    r: &mut R,
    rb: &mut RecvBuf,
    head_request: bool,
    location: &mut String,
) -> Result<Resp, HttpError> {
    loop {
        if !rb.pending() {
            rb.clear();
        }
        let mut scan = rb.start;
        let head_end = loop {
            if let Some(i) = rb.data[scan..rb.end]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break scan + i + 4;
            }
            scan = rb.end.saturating_sub(3).max(rb.start);
            if rb.end == rb.data.len() {
                if rb.start == 0 {
                    return proto("response head larger than the read buffer");
                }
                rb.data.copy_within(rb.start..rb.end, 0);
                scan -= rb.start;
                rb.end -= rb.start;
                rb.start = 0;
            }
            let n = read_some(r, &mut rb.data[rb.end..]).map_err(HttpError::Io)?;
            if n == 0 {
                return Err(HttpError::Eof {
                    partial: rb.pending(),
                });
            }
            rb.end += n;
        };
        let mut resp = parse_head(&rb.data[rb.start..head_end], location)?;
        rb.start = head_end;
        if (100..200).contains(&resp.status) && resp.status != 101 {
            continue;
        }
        let bodiless = head_request || resp.status == 204 || resp.status == 304;
        if !bodiless {
            if resp.transfer_encoding {
                discard_chunked(r, rb)?;
            } else if let Some(n) = resp.content_length {
                discard(r, rb, n)?;
            } else {
                // Delimited by the close: we do not need it, so just drop the connection.
                resp.close = true;
            }
        }
        if resp.close {
            rb.clear();
        }
        return Ok(resp);
    }
}

fn discard<R: Read>(r: &mut R, rb: &mut RecvBuf, mut left: u64) -> Result<(), HttpError> {
    let buffered = ((rb.end - rb.start) as u64).min(left);
    rb.start += buffered as usize;
    left -= buffered;
    while left > 0 {
        rb.clear();
        let n = read_some(r, &mut rb.data).map_err(HttpError::Io)?;
        if n == 0 {
            return Err(HttpError::Eof { partial: true });
        }
        if (n as u64) > left {
            rb.start = left as usize;
            rb.end = n;
            return Ok(());
        }
        left -= n as u64;
    }
    Ok(())
}

/// Makes `rb` hold a complete CRLF-terminated line at `rb.start`; returns its length
/// without the CRLF.
fn fill_line<R: Read>(r: &mut R, rb: &mut RecvBuf) -> Result<usize, HttpError> {
    let mut scan = rb.start;
    loop {
        if let Some(i) = rb.data[scan..rb.end].windows(2).position(|w| w == b"\r\n") {
            return Ok(scan + i - rb.start);
        }
        scan = rb.end.saturating_sub(1).max(rb.start);
        if rb.start > 0 {
            rb.data.copy_within(rb.start..rb.end, 0);
            scan -= rb.start;
            rb.end -= rb.start;
            rb.start = 0;
        }
        if rb.end == rb.data.len() {
            return proto("chunked response: line longer than the read buffer");
        }
        let n = read_some(r, &mut rb.data[rb.end..]).map_err(HttpError::Io)?;
        if n == 0 {
            return Err(HttpError::Eof { partial: true });
        }
        rb.end += n;
    }
}

/// Reads and drops a chunked response body, trailers included.
fn discard_chunked<R: Read>(r: &mut R, rb: &mut RecvBuf) -> Result<(), HttpError> {
    loop {
        let len = fill_line(r, rb)?;
        let line = &rb.data[rb.start..rb.start + len];
        let digits = trim(line.split(|&b| b == b';').next().unwrap_or(b""));
        let size = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u64::from_str_radix(d, 16).ok())
            .ok_or_else(|| HttpError::Proto("chunked response: bad chunk size".into()))?;
        rb.start += len + 2;
        if size == 0 {
            loop {
                let len = fill_line(r, rb)?;
                rb.start += len + 2;
                if len == 0 {
                    return Ok(());
                }
            }
        }
        discard(r, rb, size)?;
        if fill_line(r, rb)? != 0 {
            return proto("chunked response: no CRLF after a chunk");
        }
        rb.start += 2;
    }
}

/// A request body.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    Empty,
    /// `len` bytes of the pattern starting at pattern position `pos`.
    Data {
        pat: &'a Pattern,
        pos: u64,
        len: u64,
    },
    /// Like `Data`, but `piece` bytes are written every `interval` (the first at once).
    Trickle {
        pat: &'a Pattern,
        pos: u64,
        len: u64,
        piece: u64,
        interval: Duration,
    },
}

/// One keep-alive connection to the server, reconnected transparently when the server
/// closes it (`Connection: close`, idle timeouts).
pub struct Conn {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// Responses received on the current stream.
    served: u64,
    req: Vec<u8>,
    inline: bool,
    rb: RecvBuf,
    /// Location of the last response (empty when it had none).
    pub location: String,
    pub connects: u64,
    /// Requests re-sent once because a reused connection turned out to be closed.
    pub retries: u64,
}

impl Conn {
    pub fn new(addr: SocketAddr, host: &str, timeout: Duration, recv_cap: usize) -> Conn {
        Conn {
            addr,
            host: host.to_owned(),
            timeout,
            stream: None,
            served: 0,
            req: Vec::with_capacity(INLINE_BODY as usize + 1024),
            inline: false,
            rb: RecvBuf::new(recv_cap),
            location: String::with_capacity(256),
            connects: 0,
            retries: 0,
        }
    }

    /// New connections after the first one.
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }

    /// Starts a request: request line, Host and Tus-Resumable.
    pub fn begin(&mut self, method: &str, path: &str) {
        self.req.clear();
        self.inline = false;
        let _ = write!(
            self.req,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\n",
            self.host
        );
    }

    pub fn header(&mut self, name: &str, value: impl Display) {
        let _ = write!(self.req, "{name}: {value}\r\n");
    }

    /// Connects now if there is no open connection (to keep connecting out of a timing).
    pub fn connect(&mut self) -> Result<(), HttpError> {
        if self.stream.is_some() {
            return Ok(());
        }
        let s = TcpStream::connect_timeout(&self.addr, self.timeout).map_err(HttpError::Connect)?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .map_err(HttpError::Connect)?;
        self.stream = Some(s);
        self.served = 0;
        self.rb.clear();
        self.connects += 1;
        Ok(())
    }

    pub fn close(&mut self) {
        self.stream = None;
        self.rb.clear();
    }

    /// Finishes the head, sends the request and reads the response.
    pub fn send(&mut self, body: Body<'_>, head_request: bool) -> Result<Resp, HttpError> {
        self.req.extend_from_slice(b"\r\n");
        if let Body::Data { pat, pos, len } = body {
            if len <= INLINE_BODY {
                pat.append_to(&mut self.req, pos, len);
                self.inline = true;
            }
        }
        let retryable_body = !matches!(body, Body::Trickle { .. });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reused = self.stream.is_some() && self.served > 0;
            self.connect()?;
            match self.exchange(body, head_request) {
                Ok(resp) => {
                    self.served += 1;
                    if resp.close {
                        self.close();
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    self.close();
                    let stale = match &e {
                        HttpError::Eof { partial } => !partial,
                        HttpError::Io(io) => matches!(
                            io.kind(),
                            io::ErrorKind::BrokenPipe
                                | io::ErrorKind::ConnectionReset
                                | io::ErrorKind::ConnectionAborted
                        ),
                        _ => false,
                    };
                    if attempt == 1 && reused && stale && retryable_body {
                        self.retries += 1;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    fn exchange(&mut self, body: Body<'_>, head_request: bool) -> Result<Resp, HttpError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(HttpError::Eof { partial: false });
        };
        let written = (|| -> io::Result<()> {
            stream.write_all(&self.req)?;
            match body {
                Body::Empty => Ok(()),
                Body::Data { .. } if self.inline => Ok(()),
                Body::Data { pat, pos, len } => pat.write_to(stream, pos, len),
                Body::Trickle {
                    pat,
                    pos,
                    len,
                    piece,
                    interval,
                } => {
                    let start = Instant::now();
                    let mut sent = 0;
                    let mut k = 0u32;
                    while sent < len {
                        let due = start + interval * k;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let n = piece.min(len - sent);
                        pat.write_to(stream, pos + sent, n)?;
                        sent += n;
                        k += 1;
                    }
                    Ok(())
                }
            }
        })();
        let read = read_response(stream, &mut self.rb, head_request, &mut self.location);
        match (written, read) {
            (Ok(()), r) => r,
            // The server answered early (e.g. 413, 409) and stopped reading: report that.
            (Err(_), Ok(mut resp)) => {
                resp.close = true;
                Ok(resp)
            }
            (Err(e), Err(_)) => Err(HttpError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields the input in pieces of at most `step` bytes.
    struct Chunky<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Chunky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read_all(input: &[u8], step: usize, cap: usize, head: &[bool]) -> Vec<(Resp, String)> {
        let mut r = Chunky { data: input, step };
        let mut rb = RecvBuf::new(cap);
        let mut loc = String::new();
        head.iter()
            .map(|&h| {
                let resp = read_response(&mut r, &mut rb, h, &mut loc).unwrap();
                (resp, loc.clone())
            })
            .collect()
    }

    const TWO: &[u8] = b"HTTP/1.1 201 Created\r\nlocation: http://h:1/files/abc\r\n\
        Upload-Offset: 4\r\ncontent-length: 5\r\n\r\nhello\
        HTTP/1.1 204 No Content\r\nUPLOAD-OFFSET:  10 \r\nConnection: keep-alive\r\n\r\n";

    #[test]
    fn parses_pipelined_responses_with_split_reads() {
        for step in [1, 2, 3, 7, 64, 4096] {
            for cap in [128, 4096] {
                let got = read_all(TWO, step, cap, &[false, false]);
                assert_eq!(got[0].0.status, 201, "step {step}");
                assert_eq!(got[0].0.upload_offset, Some(4));
                assert_eq!(got[0].0.content_length, Some(5));
                assert!(got[0].0.has_location && !got[0].0.close);
                assert_eq!(got[0].1, "http://h:1/files/abc");
                assert_eq!(got[1].0.status, 204);
                assert_eq!(got[1].0.upload_offset, Some(10));
                assert!(!got[1].0.close && !got[1].0.has_location);
                assert_eq!(got[1].1, "");
            }
        }
    }

    #[test]
    fn large_body_is_discarded_across_reads() {
        let mut input = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 1000\r\n\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 1000]);
        input
            .extend_from_slice(b"HTTP/1.1 200 OK\r\nUpload-Length: 7\r\nContent-Length: 0\r\n\r\n");
        for step in [1, 13, 100, 5000] {
            let got = read_all(&input, step, 128, &[false, false]);
            assert_eq!(got[0].0.status, 400);
            assert_eq!(got[1].0.status, 200);
            assert_eq!(got[1].0.upload_length, Some(7));
        }
    }

    #[test]
    fn connection_close_and_http10() {
        let got = read_all(
            b"HTTP/1.1 204 No Content\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
            5,
            256,
            &[false],
        );
        assert!(got[0].0.close);
        let got = read_all(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            5,
            256,
            &[false],
        );
        assert!(got[0].0.close);
        let got = read_all(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            5,
            256,
            &[false],
        );
        assert!(!got[0].0.close);
        // No Content-Length on a response with a body: delimited by close.
        let got = read_all(b"HTTP/1.1 500 Oops\r\n\r\nbody", 5, 256, &[false]);
        assert!(got[0].0.close);
        let got = read_all(
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
            5,
            256,
            &[false],
        );
        assert!(!got[0].0.close && got[0].0.transfer_encoding);
    }

    #[test]
    fn chunked_bodies_are_discarded() {
        let input = b"HTTP/1.1 201 Created\r\nLocation: /files/abc\r\n\
            Transfer-Encoding: chunked\r\n\r\n20\r\n787fe332ba286c62e2a31dd1c103126d\r\n\
            3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n\
            HTTP/1.1 204 No Content\r\nUpload-Offset: 7\r\n\r\n";
        for step in [1, 2, 5, 64, 4096] {
            for cap in [128, 4096] {
                let got = read_all(input, step, cap, &[false, false]);
                assert_eq!(got[0].0.status, 201, "step {step} cap {cap}");
                assert!(got[0].0.transfer_encoding && !got[0].0.close);
                assert_eq!(got[0].1, "/files/abc");
                assert_eq!(got[1].0.status, 204);
                assert_eq!(got[1].0.upload_offset, Some(7));
            }
        }
        let mut rb = RecvBuf::new(64);
        let mut loc = String::new();
        let mut bad = Chunky {
            data: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            step: 3,
        };
        assert!(matches!(
            read_response(&mut bad, &mut rb, false, &mut loc),
            Err(HttpError::Proto(_))
        ));
    }

    #[test]
    fn head_response_has_no_body_and_interim_is_skipped() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\
            Upload-Offset: 3\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let got = read_all(input, 3, 256, &[true, false]);
        assert_eq!(got[0].0.status, 200);
        assert_eq!(got[0].0.upload_offset, Some(3));
        assert_eq!(got[1].0.status, 204);
    }

    #[test]
    fn errors() {
        let mut rb = RecvBuf::new(64);
        let mut loc = String::new();
        let mut eof = Chunky {
            data: b"HTTP/1.1 20",
            step: 4,
        };
        assert!(matches!(
            read_response(&mut eof, &mut rb, false, &mut loc),
            Err(HttpError::Eof { partial: true })
        ));
        rb.clear();
        let mut empty = Chunky { data: b"", step: 4 };
        assert!(matches!(
            read_response(&mut empty, &mut rb, false, &mut loc),
            Err(HttpError::Eof { partial: false })
        ));
        let bad = [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 204 OK\r\nUpload-Offset: ten\r\n\r\n",
            b"HTTP/1.1 204 OK\r\nno colon\r\n\r\n",
        ];
        for b in bad {
            assert!(
                matches!(parse_head(b, &mut loc), Err(HttpError::Proto(_))),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        let mut big = Chunky {
            data: &[b'a'; 200],
            step: 50,
        };
        rb.clear();
        assert!(matches!(
            read_response(&mut big, &mut rb, false, &mut loc),
            Err(HttpError::Proto(_))
        ));
        assert!(parse_head(b"HTTP/1.1 204\r\n\r\n", &mut loc).is_ok());
    }

    #[test]
    fn location_absolute_and_relative() {
        let mut out = String::new();
        let cases = [
            ("/files", "http://127.0.0.1:1081/files/abc", "/files/abc"),
            ("/files", "HTTPS://example.com/up/abc?x=1", "/up/abc?x=1"),
            ("/files", "http://example.com", "/"),
            ("/files", "http://example.com?q", "/?q"),
            ("/files", "//example.com/files/abc", "/files/abc"),
            ("/files", "/files/abc", "/files/abc"),
            ("/files", "  /files/abc ", "/files/abc"),
            ("/files/", "abc", "/files/abc"),
            ("/files", "files/abc", "/files/abc"),
            ("/api/files", "abc", "/api/abc"),
            ("/files/?a=b/c", "abc", "/files/abc"),
        ];
        for (base, loc, want) in cases {
            resolve_location_into(base, loc, &mut out);
            assert_eq!(out, want, "{base} + {loc}");
        }
        assert_eq!(last_segment("/files/abc"), "abc");
        assert_eq!(last_segment("/files/abc/"), "abc");
        assert_eq!(last_segment("/files/abc?x=/y"), "abc");
    }

    #[test]
    fn url_parsing() {
        let u = Url::parse("http://127.0.0.1:1081/files").unwrap();
        assert_eq!(u.authority, "127.0.0.1:1081");
        assert_eq!(u.path, "/files");
        assert_eq!(u.resolve().unwrap().port(), 1081);
        assert_eq!(u.absolute("/files/x"), "http://127.0.0.1:1081/files/x");
        let u = Url::parse("HTTP://localhost").unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("localhost", "/"));
        let u = Url::parse("http://[::1]:8080/f/?a#frag").unwrap();
        assert_eq!(u.authority, "[::1]:8080");
        assert_eq!(u.path, "/f/?a");
        assert_eq!(u.resolve().unwrap().port(), 8080);
        assert_eq!(
            Url::parse("http://[::1]/x")
                .unwrap()
                .resolve()
                .unwrap()
                .port(),
            80
        );
        assert!(Url::parse("https://x/files").is_err());
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http:///files").is_err());
    }
}
