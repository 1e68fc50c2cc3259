//! `tusload sink`: the bare splice receiver, the loopback baseline of `scripts/bench.sh`.
//!
//! What one core can take in over loopback TCP into files with no protocol work: a
//! single thread with blocking sockets serves one connection at a time (keep-alive), finds
//! the end of each request head and its Content-Length, and moves the body
//! socket → pipe → file with plain `splice(2)` calls, so the bytes are never copied to
//! user space. Bytes that arrived together with the head are written with `pwrite`
//! first.
//!
//! Just enough tus for `tusload big` (and `small --conns 1`, `verify`) to drive it
//! unchanged:
//!
//! * `POST` with `Upload-Length` (or `Upload-Defer-Length`): creates file `DIR/<n>`,
//!   stores the body if there is one (creation-with-upload), answers 201 with
//!   `Location: <path>/<n>` and `Upload-Offset`;
//! * `PATCH <path>/<n>`: appends the body at `Upload-Offset` (409 if it is not the
//!   current offset), answers 204 with the new `Upload-Offset`;
//! * `HEAD <path>/<n>`: 200 with `Upload-Offset` and `Upload-Length`;
//! * `OPTIONS`: 204 with `Tus-Version` and `Tus-Extension`;
//! * anything else: its body (if any) goes to a new file, and the answer is 204.
//!
//! It checks nothing else: no `Tus-Resumable`, no content type, no info records. The
//! state of the uploads lives in memory only.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{fmt_bytes, Opts};

/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Bodies at least this large get a line on stderr with their server-side rate.
const REPORT_BYTES: u64 = 64 << 20;

/// The parts of a request head the sink looks at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub content_length: u64,
    pub upload_length: Option<u64>,
    pub defer_length: bool,
    pub upload_offset: Option<u64>,
    pub close: bool,
    pub expect_continue: bool,
    pub chunked: bool,
}

/// The length of the head (through its blank line) if `buf` holds a complete one.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete head (`buf` ends with its blank line).
pub fn parse_req(head: &[u8]) -> Result<Req, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("bad request line");
    };
    if method.is_empty() || !path.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err("bad request line");
    }
    let mut req = Req {
        method: method.to_owned(),
        path: path.to_owned(),
        close: version == "HTTP/1.0",
        ..Req::default()
    };
    let int = |v: &str| v.parse::<u64>().map_err(|_| "bad integer header");
    for l in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = l.split_once(':').ok_or("header line without a colon")?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => req.content_length = int(value)?,
            "upload-length" => req.upload_length = Some(int(value)?),
            "upload-defer-length" => req.defer_length = value == "1",
            "upload-offset" => req.upload_offset = Some(int(value)?),
            "transfer-encoding" => req.chunked = true,
            "expect" => req.expect_continue = value.eq_ignore_ascii_case("100-continue"),
            "connection" => {
                for opt in value.split(',').map(str::trim) {
                    if opt.eq_ignore_ascii_case("close") {
                        req.close = true;
                    } else if opt.eq_ignore_ascii_case("keep-alive") {
                        req.close = false;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(req)
}

/// The upload number at the end of `path` (`/files/12` → 12).
fn upload_number(path: &str) -> Option<u64> {
    let path = path.split('?').next().unwrap_or_default();
    path.trim_end_matches('/').rsplit('/').next()?.parse().ok()
}

/// `Upload-Length` (`None` while deferred) and bytes stored.
struct Upload {
    length: Option<u64>,
    offset: u64,
}

/// A pipe whose ends are closed on drop.
struct Pipe {
    r: i32,
    w: i32,
    size: usize,
}

impl Pipe {
    fn new(want: usize) -> io::Result<Pipe> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut p = Pipe {
            r: fds[0],
            w: fds[1],
            size: 64 * 1024,
        };
        let want = want.clamp(4096, i32::MAX as usize) as libc::c_int;
        // SAFETY: fcntl on a pipe descriptor we own; F_SETPIPE_SZ takes an int.
        if unsafe { libc::fcntl(p.w, libc::F_SETPIPE_SZ, want) } < 0 {
            eprintln!(
                "tusload sink: F_SETPIPE_SZ {want}: {} (keeping the default)",
                io::Error::last_os_error()
            );
        }
        // SAFETY: as above; F_GETPIPE_SZ takes no argument.
        let got = unsafe { libc::fcntl(p.w, libc::F_GETPIPE_SZ) };
        if got > 0 {
            p.size = got as usize;
        }
        Ok(p)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: both descriptors are ours and closed exactly once.
        unsafe {
            libc::close(self.r);
            libc::close(self.w);
        }
    }
}

/// `splice(2)` retried on EINTR.
fn splice(
    from: i32,
    to: i32,
    to_off: Option<&mut i64>,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    let off_ptr = match to_off {
        Some(o) => o as *mut i64,
        None => std::ptr::null_mut(),
    };
    loop {
        // SAFETY: plain descriptors; `off_ptr` is null or points to a live i64 that
        // outlives the call; the input offset is null (a socket or a pipe).
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, off_ptr, len, flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

struct Sink {
    dir: PathBuf,
    pipe: Pipe,
    uploads: HashMap<u64, Upload>,
    next: u64,
}

/// How a request ended for the connection.
enum After {
    KeepAlive,
    Close,
}

impl Sink {
    /// Creates the next free `DIR/<n>`.
    fn create_file(&mut self) -> io::Result<(u64, File)> {
        loop {
            self.next += 1;
            let path = self.dir.join(self.next.to_string());
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(f) => return Ok((self.next, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            }
        }
    }

    fn open_file(&self, n: u64) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .open(self.dir.join(n.to_string()))
    }

    /// Stores `len` body bytes at `offset` of `file`: first those already in `early`
    /// (read with the head; the rest of `early` is left in it), then the rest straight
    /// from the socket. Returns the bytes stored (less than `len` if the client went away).
    fn store(
        &self,
        sock: &TcpStream,
        early: &mut Vec<u8>,
        file: &File,
        offset: u64,
        len: u64,
    ) -> io::Result<u64> {
        let t0 = Instant::now();
        let first = (early.len() as u64).min(len) as usize;
        file.write_all_at(&early[..first], offset)?;
        early.drain(..first);
        let mut done = first as u64;
        let mut off = (offset + done) as i64;
        let (s, f) = (sock.as_raw_fd(), file.as_raw_fd());
        while done < len {
            let want = ((len - done) as usize).min(self.pipe.size);
            let more = if done + (want as u64) < len {
                libc::SPLICE_F_MORE
            } else {
                0
            };
            let n = splice(s, self.pipe.w, None, want, libc::SPLICE_F_MOVE | more)?;
            if n == 0 {
                break; // the client closed mid-body
            }
            let mut moved = 0;
            while moved < n {
                let k = splice(
                    self.pipe.r,
                    f,
                    Some(&mut off),
                    n - moved,
                    libc::SPLICE_F_MOVE,
                )?;
                if k == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "splice to file: 0",
                    ));
                }
                moved += k;
            }
            done += n as u64;
        }
        if len >= REPORT_BYTES {
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "tusload sink: {} in {secs:.3} s, {:.1} MB/s",
                fmt_bytes(done),
                done as f64 / secs / 1e6
            );
        }
        Ok(done)
    }

    /// Serves one request whose head has been read; `early` holds the bytes after it.
    fn serve(
        &mut self,
        sock: &mut TcpStream,
        req: &Req,
        early: &mut Vec<u8>,
        out: &mut String,
    ) -> io::Result<After> {
        use std::fmt::Write as _;
        out.clear();
        if req.chunked {
            out.push_str(
                "HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            sock.write_all(out.as_bytes())?;
            return Ok(After::Close);
        }
        let len = req.content_length;
        if req.expect_continue && len > 0 && (early.len() as u64) < len {
            sock.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let known = upload_number(&req.path).filter(|n| self.uploads.contains_key(n));
        let mut close = req.close;
        let status;
        match (req.method.as_str(), known) {
            ("POST", _) if req.upload_length.is_some() || req.defer_length => {
                let (n, file) = self.create_file()?;
                let stored = self.store(sock, early, &file, 0, len)?;
                self.uploads.insert(
                    n,
                    Upload {
                        length: req.upload_length,
                        offset: stored,
                    },
                );
                if stored < len {
                    return Ok(After::Close);
                }
                let base = req.path.split('?').next().unwrap_or_default();
                let base = base.trim_end_matches('/');
                status = "201 Created";
                let _ = write!(out, "Location: {base}/{n}\r\nUpload-Offset: {stored}\r\n");
            }
            ("PATCH", Some(n)) => {
                let (offset, length) = match self.uploads.get(&n) {
                    Some(u) => (u.offset, u.length),
                    None => (0, None),
                };
                if req.upload_offset != Some(offset) {
                    status = "409 Conflict";
                    close = true;
                } else if length.is_some_and(|l| offset + len > l) {
                    status = "413 Payload Too Large";
                    close = true;
                } else {
                    let file = self.open_file(n)?;
                    let stored = self.store(sock, early, &file, offset, len)?;
                    if let Some(u) = self.uploads.get_mut(&n) {
                        u.offset += stored;
                    }
                    if stored < len {
                        return Ok(After::Close);
                    }
                    status = "204 No Content";
                    let _ = write!(out, "Upload-Offset: {}\r\n", offset + stored);
                }
            }
            ("HEAD", Some(n)) => {
                status = "200 OK";
                if let Some(u) = self.uploads.get(&n) {
                    let _ = write!(out, "Upload-Offset: {}\r\n", u.offset);
                    match u.length {
                        Some(l) => {
                            let _ = write!(out, "Upload-Length: {l}\r\n");
                        }
                        None => out.push_str("Upload-Defer-Length: 1\r\n"),
                    }
                }
                out.push_str("Cache-Control: no-store\r\n");
            }
            ("HEAD" | "PATCH", None) => {
                status = "404 Not Found";
                close = close || len > 0;
            }
            ("OPTIONS", _) => {
                status = "204 No Content";
                out.push_str(
                    "Tus-Version: 1.0.0\r\nTus-Extension: creation,creation-with-upload\r\n",
                );
            }
            _ => {
                if len > 0 {
                    let (_, file) = self.create_file()?;
                    if self.store(sock, early, &file, 0, len)? < len {
                        return Ok(After::Close);
                    }
                }
                status = "204 No Content";
            }
        }
        let head = format!(
            "HTTP/1.1 {status}\r\nTus-Resumable: 1.0.0\r\n{out}Content-Length: 0\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        );
        sock.write_all(head.as_bytes())?;
        Ok(if close {
            After::Close
        } else {
            After::KeepAlive
        })
    }

    /// Serves a connection until the client closes it or an answer closes it.
    fn connection(&mut self, mut sock: TcpStream) -> io::Result<()> {
        let _ = sock.set_nodelay(true);
        let mut buf: Vec<u8> = Vec::with_capacity(MAX_HEAD);
        let mut out = String::with_capacity(256);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let end = loop {
                if let Some(end) = head_end(&buf) {
                    break end;
                }
                if buf.len() >= MAX_HEAD {
                    sock.write_all(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )?;
                    return Ok(());
                }
                // Read the head in small pieces, so that little of a large body is
                // copied through user space before splicing takes over.
                let room = (MAX_HEAD - buf.len()).min(chunk.len());
                let n = match sock.read(&mut chunk[..room]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    return Ok(()); // closed between requests (or mid-head)
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let req = match parse_req(&buf[..end]) {
                Ok(r) => r,
                Err(why) => {
                    eprintln!("tusload sink: {why}");
                    sock.write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )?;
                    return Ok(());
                }
            };
            buf.drain(..end);
            match self.serve(&mut sock, &req, &mut buf, &mut out)? {
                After::KeepAlive => {}
                After::Close => return Ok(()),
            }
        }
    }
}

/// Pins the calling thread to one CPU.
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, CPU_SET writes in
    // bounds (checked below), and sched_setaffinity reads the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "CPU number too large",
            ));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn sink(o: &Opts) -> Result<(), String> {
    let listen = o.listen.as_deref().unwrap_or("127.0.0.1:0");
    let dir = o.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(cpu) = o.pin {
        pin_to(cpu).map_err(|e| format!("--pin {cpu}: {e}"))?;
    }
    let pipe = Pipe::new(o.pipe_size).map_err(|e| format!("pipe: {e}"))?;
    let listener = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "tusload sink: listening on http://{addr} (dir {}, pipe {}{})",
        dir.display(),
        fmt_bytes(pipe.size as u64),
        o.pin
            .map(|c| format!(", pinned to CPU {c}"))
            .unwrap_or_default()
    );
    let _ = io::stderr().flush();
    let mut sink = Sink {
        dir: canonical(&dir),
        pipe,
        uploads: HashMap::new(),
        next: 0,
    };
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                if let Err(e) = sink.connection(s) {
                    eprintln!("tusload sink: connection: {e}");
                }
            }
            Err(e) => eprintln!("tusload sink: accept: {e}"),
        }
    }
    Ok(())
}

fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h = b"PATCH /files/12 HTTP/1.1\r\nHost: x\r\nupload-offset: 5\r\n\
            Content-Length:  100 \r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(head_end(h), Some(h.len()));
        assert_eq!(head_end(&h[..h.len() - 1]), None);
        let r = parse_req(h).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("PATCH", "/files/12"));
        assert_eq!((r.content_length, r.upload_offset), (100, Some(5)));
        assert!(!r.close && !r.chunked);
        assert_eq!(upload_number(&r.path), Some(12));
        assert_eq!(upload_number("/files/7/?x=1"), Some(7));
        assert_eq!(upload_number("/files"), None);

        let r = parse_req(b"POST /files HTTP/1.0\r\nUpload-Length: 9\r\n\r\n").unwrap();
        assert_eq!(r.upload_length, Some(9));
        assert!(r.close);
        let r = parse_req(b"POST / HTTP/1.1\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n")
            .unwrap();
        assert!(r.close && r.expect_continue);
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / SPDY\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"PATCH / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        ] {
            assert!(parse_req(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// A real round trip over loopback: creation-with-upload, PATCH with body bytes
    /// arriving with the head and in later reads, HEAD, and the bytes on disk.
    #[test]
    fn splices_bodies_to_files() {
        let dir = std::env::temp_dir().join(format!("tusload-sink-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sink = Sink {
            dir: dir.clone(),
            pipe: Pipe::new(64 * 1024).unwrap(),
            uploads: HashMap::new(),
            next: 0,
        };
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            sink.connection(s).unwrap();
        });
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut c = TcpStream::connect(addr).unwrap();
        let mut resp = Vec::new();
        let mut read_head = |c: &mut TcpStream| -> String {
            resp.clear();
            let mut b = [0u8; 1];
            while head_end(&resp).is_none() {
                assert_eq!(c.read(&mut b).unwrap(), 1);
                resp.push(b[0]);
            }
            String::from_utf8(resp.clone()).unwrap()
        };
        let mut req = format!(
            "POST /files HTTP/1.1\r\nUpload-Length: {}\r\nContent-Length: 1000\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body[..1000]);
        c.write_all(&req).unwrap();
        let r = read_head(&mut c);
        assert!(r.starts_with("HTTP/1.1 201"), "{r}");
        assert!(
            r.contains("Location: /files/1\r\n") && r.contains("Upload-Offset: 1000\r\n"),
            "{r}"
        );

        let rest = &body[1000..];
        let mut req = format!(
            "PATCH /files/1 HTTP/1.1\r\nUpload-Offset: 1000\r\nContent-Length: {}\r\n\r\n",
            rest.len()
        )
        .into_bytes();
        req.extend_from_slice(&rest[..5000]);
        c.write_all(&req).unwrap();
        c.write_all(&rest[5000..]).unwrap();
        let r = read_head(&mut c);
        assert!(
            r.starts_with("HTTP/1.1 204") && r.contains("Upload-Offset: 300000\r\n"),
            "{r}"
        );

        c.write_all(
            b"HEAD /files/1 HTTP/1.1\r\n\r\nPATCH /files/1 HTTP/1.1\r\nUpload-Offset: 0\r\n\r\n",
        )
        .unwrap();
        let r = read_head(&mut c);
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("Upload-Length: 300000\r\n"),
            "{r}"
        );
        let r = read_head(&mut c);
        assert!(
            r.starts_with("HTTP/1.1 409") && r.contains("Connection: close"),
            "{r}"
        );
        drop(c);
        server.join().unwrap();
        assert_eq!(std::fs::read(dir.join("1")).unwrap(), body);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
