//! How a request body reaches its data file.
//!
//! * **Spliced** (a Content-Length body nobody needs to see, the default): the bytes that
//!   came with the head are written from the connection's input buffer, then the socket
//!   is spliced into the connection's pipe and the pipe into the file, a pipe-load at a
//!   time ([`crate::net::BodySource::splice_to_pipe`] is the socket half, [`drain_pipe`]
//!   the file half). No copy through user space.
//! * **Buffered** (chunked bodies, bodies to verify, the fallback): two body buffers
//!   ping-pong, one written to the file while the other is filled from the socket.
//! * **Verified** (the checksum extension): the buffered path into an anonymous staging
//!   file, each buffer hashed as it goes; only a body whose check passes is copied into
//!   the data file.
//!
//! On every path exactly one write is in flight per upload, so the file never has a
//! hole and its size is always the count of bytes stored. Every write goes through
//! [`write_data`] or [`drain_pipe`], which a test build can make fail like a faulty disk
//! (`storage::fault`).

use super::data::{Inner, FALLOC_FL_KEEP_SIZE};
use crate::error::Error;
use crate::net::splice::{is_unsupported, splice, Pipe};
use crate::net::{BodyEnd, BodySource, SpliceIn};
use crate::storage::fault;
use crate::storage::{BodyCheck, DataWriter, StoreError, StoreFuture, Written};
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::{File, OpenOptions};

/// An upload's data file, open for one request.
pub(super) struct FileWriter {
    inner: Rc<Inner>,
    file: File,
    path: PathBuf,
}

/// Progress of a body into a file.
struct Progress {
    /// File offset after the last byte written.
    pos: u64,
    /// Why storing stopped early, if it did.
    error: Option<Error>,
    /// A file write failed: `pos` must be re-read from the file's size.
    write_failed: bool,
}

impl Progress {
    fn at(pos: u64) -> Progress {
        Progress {
            pos,
            error: None,
            write_failed: false,
        }
    }

    fn failed(&mut self, e: io::Error) {
        self.error = Some(Error::storage("write data file", e));
        self.write_failed = true;
    }
}

/// How the splice path ended.
enum Spliced {
    /// The body ended (how: `body.end()`).
    Done,
    /// Splicing was not possible: nothing was lost, the body continues on the buffered
    /// path.
    Fallback,
}

impl FileWriter {
    pub(super) fn new(inner: Rc<Inner>, file: File, path: PathBuf) -> FileWriter {
        FileWriter { inner, file, path }
    }

    /// Spliced when it can be, else buffered; at most `limit` bytes from `start`.
    async fn write_plain(&mut self, body: &mut BodySource<'_>, start: u64, limit: u64) -> Written {
        let end = start.saturating_add(limit);
        let mut out = Progress::at(start);
        // Zero-copy when nothing needs to see the bytes and the whole body fits (a
        // Content-Length body always does: its overrun was refused before reading).
        if self.inner.splice_enabled()
            && body.can_splice()
            && body.content_length().is_some_and(|cl| cl <= limit)
        {
            match splice_body(&self.file, body, &mut out.pos).await {
                Ok(Spliced::Done) => {}
                Ok(Spliced::Fallback) => self.inner.disable_splice(),
                Err(e) => out.failed(e),
            }
        }
        if out.error.is_none() && body.end().is_none() {
            buffered(&self.inner, body, &self.file, end, &mut out, None).await;
        }
        if out.write_failed {
            // A failed write may have stored part of its buffer: the file size says.
            if let Ok(st) = self.file.statx().await {
                out.pos = st.stx_size.max(start);
            }
        }
        let error = self.sync(start, out.pos).await.or(out.error);
        Written {
            end_offset: out.pos,
            error,
        }
    }

    /// With `--force-fsync`, fdatasyncs the file when bytes were stored after `start`:
    /// the error, if that failed.
    async fn sync(&self, start: u64, pos: u64) -> Option<Error> {
        if self.inner.settings.force_fsync && pos > start {
            if let Err(e) = self.file.sync_data().await {
                return Some(Error::storage("fdatasync data file", e));
            }
        }
        None
    }

    /// Receives a body that must pass `check` and stores it at `start` only if it does;
    /// at most `limit` bytes.
    ///
    /// The body goes through the buffered path (a body that must be hashed cannot be
    /// spliced) into an anonymous staging file next to the data file, each buffer fed
    /// to the check as it is written. Only a complete body that passes is then copied
    /// into the data file at `start`, through the same two body buffers (io_uring reads
    /// and writes, one write in flight). So the upload's offset, which is the data
    /// file's size, never counts an unverified byte, not even after a crash
    /// mid-request: the staging file has no name and disappears with the process. A
    /// refusal, a body cut short or running past `limit`: nothing is stored and
    /// `end_offset` is `start` (`error` is `None` when the body was cut short: its end
    /// says why). A failure while copying keeps the verified bytes copied so far (the
    /// offset is re-read from the file), as a failed write does on the unchecked path.
    async fn write_checked(
        &mut self,
        body: &mut BodySource<'_>,
        start: u64,
        limit: u64,
        check: &mut dyn BodyCheck,
    ) -> Written {
        let refused = |error| Written {
            end_offset: start,
            error,
        };
        let staging = match open_staging(&self.inner, &self.path).await {
            Ok(f) => f,
            Err(e) => return refused(Some(e.into())),
        };
        let mut staged = Progress::at(0);
        buffered(
            &self.inner,
            body,
            &staging,
            limit,
            &mut staged,
            Some(&mut *check),
        )
        .await;
        let verdict = match staged.error.take() {
            Some(e) => Err(Some(e)),
            None if body.end().is_some_and(|e| !matches!(e, BodyEnd::Complete)) => Err(None),
            None => check.verdict(body).map_err(Some),
        };
        if let Err(e) = verdict {
            let _ = staging.close().await;
            return refused(e);
        }
        let (pos, error) = copy_staged(&self.inner, &staging, &self.file, start, staged.pos).await;
        let _ = staging.close().await;
        let error = self.sync(start, pos).await.or(error);
        Written {
            end_offset: pos,
            error,
        }
    }
}

impl DataWriter for FileWriter {
    fn reserve(&mut self, length: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if length > 0 {
                if let Err(e) = self.file.fallocate(0, length, FALLOC_FL_KEEP_SIZE).await {
                    crate::debug!("fallocate failed: {e}");
                }
            }
        })
    }

    fn write_body<'a, 'b>(
        &'a mut self,
        body: &'a mut BodySource<'b>,
        at: u64,
        limit: u64,
        check: Option<&'a mut dyn BodyCheck>,
    ) -> StoreFuture<'a, Written> {
        match check {
            Some(check) => Box::pin(self.write_checked(body, at, limit, check)),
            None => Box::pin(self.write_plain(body, at, limit)),
        }
    }
}

/// Writes `buf[range]` into a data file at `pos`: all of it, or an error (after which
/// the file's size says how much was stored). Every buffered write goes through here
/// (the splice path's file splices through [`fault::data_write`] too), so a test build
/// can make it fail like a faulty disk (`storage::fault`).
async fn write_data(
    file: &File,
    buf: Vec<u8>,
    range: Range<usize>,
    pos: u64,
) -> (io::Result<()>, Vec<u8>) {
    let (range, fail) = match fault::data_write(range.len()) {
        None => (range, false),
        Some(k) => (range.start..range.start + k, true),
    };
    let (res, slice) = file.write_all_at(buf.slice(range), pos).await;
    let res = match res {
        Ok(()) if fail => Err(fault::eio()),
        other => other,
    };
    (res, slice.into_inner())
}

/// The splice path: the bytes that came with the head, written from the connection's
/// input buffer, then socket → pipe → file a pipe-load at a time. `pos` follows the
/// bytes stored. The body must fit where it goes (the caller checked its Content-Length
/// against the room left).
async fn splice_body(file: &File, body: &mut BodySource<'_>, pos: &mut u64) -> io::Result<Spliced> {
    if let Some((buf, n)) = body.lend_early() {
        let (res, buf) = write_data(file, buf, 0..n, *pos).await;
        if let Err(e) = res {
            body.restore_early(buf);
            return Err(e);
        }
        body.keep_early(buf, n);
        *pos += n as u64;
        body.stored_to(*pos);
    }
    let fd = file.as_raw_fd();
    loop {
        match body.splice_to_pipe().await {
            SpliceIn::Ended => return Ok(Spliced::Done),
            SpliceIn::Unsupported => return Ok(Spliced::Fallback),
            SpliceIn::Moved(n) => {
                let Some(pipe) = body.pipe() else {
                    return Err(io::Error::from_raw_os_error(libc::EBADF));
                };
                drain_pipe(pipe, file, fd, pos, n).await?;
                body.stored_to(*pos);
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
    let mut budget = fault::data_write(n as usize).map(|k| k as u32);
    while left > 0 {
        let moved = match budget {
            Some(0) => Err(fault::eio()),
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
                let (res, _) = write_data(file, rescued, 0..len, *pos).await;
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

/// The buffered path: two body buffers ping-pong, one written to the file while the
/// other is filled from the socket. Stores up to file offset `end`; a body that runs
/// past it (only a chunked one can) is cut there and answered 413. With `check`, each
/// buffer is fed to it before it is written (to a staging file); without, each write
/// is reported to the body source ([`BodySource::stored_to`]: progress answers).
async fn buffered(
    inner: &Inner,
    body: &mut BodySource<'_>,
    file: &File,
    end: u64,
    out: &mut Progress,
    mut check: Option<&mut dyn BodyCheck>,
) {
    // Ask for one byte more than the room left, to notice a chunked body that runs on.
    let cap = inner.buf_bytes() as u64;
    let want = |pos: u64| (end - pos).saturating_add(1).min(cap) as usize;
    let reports = check.is_none();
    let mut spare = inner.take_buffer();
    let mut cur = body.fill(inner.take_buffer(), want(out.pos)).await;
    while !cur.is_empty() {
        let room = end - out.pos;
        if cur.len() as u64 > room {
            cur.truncate(room as usize);
            out.error = Some(Error::TooLarge("Request body would pass Upload-Length"));
        }
        let n = cur.len() as u64;
        if let Some(c) = check.as_deref_mut() {
            c.update(&cur);
        }
        if out.error.is_some() || body.end().is_some() {
            let len = cur.len();
            let (res, buf) = write_data(file, cur, 0..len, out.pos).await;
            cur = buf;
            match res {
                Ok(()) => out.pos += n,
                Err(e) => out.failed(e),
            }
            if reports {
                body.stored_to(out.pos);
            }
            break;
        }
        let next_want = want(out.pos + n);
        let len = cur.len();
        let ((res, written), next) = tokio::join!(
            write_data(file, cur, 0..len, out.pos),
            body.fill(spare, next_want)
        );
        spare = written;
        spare.clear();
        cur = next;
        match res {
            Ok(()) => out.pos += n,
            Err(e) => {
                out.failed(e);
                break;
            }
        }
        if reports {
            body.stored_to(out.pos);
        }
    }
    inner.give_buffer(cur);
    inner.give_buffer(spare);
}

/// Opens a staging file for a body that must be verified before it becomes part
/// of the upload at `data_path` (the checksum extension): an anonymous `O_TMPFILE`
/// in the data file's directory, so it has no name, is never mistaken for an
/// upload, and vanishes with its descriptor, even after a crash. A filesystem
/// without `O_TMPFILE` gets `<data>.chk` (not a UUID, so never an upload), opened
/// under the upload's lock with `O_TRUNC` and unlinked at once: a stale one left by
/// a crash in between is reused by the next checksummed request of the upload and
/// removed with the upload.
async fn open_staging(inner: &Inner, data_path: &Path) -> Result<File, StoreError> {
    let dir = data_path.parent().unwrap_or(&inner.settings.data_dir);
    let anon = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
        .await;
    match anon {
        Ok(f) => return Ok(f),
        Err(e)
            if e.raw_os_error() == Some(libc::EOPNOTSUPP)
                || e.raw_os_error() == Some(libc::EISDIR) => {}
        Err(e) => return Err(StoreError::io("create staging file", e)),
    }
    let named = staging_path(data_path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&named)
        .await
        .map_err(|e| StoreError::io("create staging file", e))?;
    if let Err(e) = tokio_uring::fs::remove_file(&named).await {
        let _ = file.close().await;
        return Err(StoreError::io("unlink staging file", e));
    }
    Ok(file)
}

/// The named staging file of an upload, used only where `O_TMPFILE` is not available.
pub(super) fn staging_path(data_path: &Path) -> PathBuf {
    let mut name = data_path.as_os_str().to_os_string();
    name.push(".chk");
    PathBuf::from(name)
}

/// Copies the first `len` bytes of `staging` into `file` at `start`, reading the next
/// buffer while the last one is written. Returns the file offset after the last byte
/// stored and the error that stopped the copy, if one did.
async fn copy_staged(
    inner: &Inner,
    staging: &File,
    file: &File,
    start: u64,
    len: u64,
) -> (u64, Option<Error>) {
    let cap = inner.buf_bytes() as u64;
    let read = |buf: Vec<u8>, from: u64| async move {
        let want = (len - from).min(cap) as usize;
        if want == 0 {
            return (Ok(()), buf);
        }
        let (res, slice) = staging.read_at(buf.slice(0..want), from).await;
        let buf = slice.into_inner();
        match res {
            Ok(0) => (
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the staging file is shorter than the body",
                )),
                buf,
            ),
            Ok(_) => (Ok(()), buf),
            Err(e) => (Err(e), buf),
        }
    };
    let mut copied = 0u64;
    let mut error = None;
    let (res, mut cur) = read(inner.take_buffer(), 0).await;
    let mut spare = inner.take_buffer();
    if let Err(e) = res {
        error = Some(Error::storage("read staging file", e));
        cur.clear();
    }
    while !cur.is_empty() {
        let n = cur.len() as u64;
        spare.clear();
        let len = cur.len();
        let ((wres, written), (rres, next)) = tokio::join!(
            write_data(file, cur, 0..len, start + copied),
            read(spare, copied + n)
        );
        spare = written;
        cur = next;
        if let Err(e) = wres {
            error = Some(Error::storage("write data file", e));
            // Part of the buffer may be in the file: its size says.
            if let Ok(st) = file.statx().await {
                copied = st.stx_size.saturating_sub(start);
            }
            break;
        }
        copied += n;
        if let Err(e) = rres {
            error = Some(Error::storage("read staging file", e));
            break;
        }
    }
    inner.give_buffer(cur);
    inner.give_buffer(spare);
    (start + copied, error)
}
