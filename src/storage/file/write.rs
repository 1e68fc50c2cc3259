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
//!
//! Before a byte of a body is read, room is reserved for it in the data file
//! ([`Reservation`]): the range its Content-Length announces, or a window ahead of the
//! offset for a chunked body; what was reserved and not filled is given back when the
//! body ends, so an upload holds room only while bytes are on their way.

use super::data::{Inner, FALLOC_FL_KEEP_SIZE};
use crate::error::Error;
use crate::limits::CHUNKED_RESERVE_BYTES;
use crate::net::splice::{is_unsupported, splice, submit, Pipe};
use crate::net::{BodyEnd, BodySource, SpliceIn};
use crate::storage::fault;
use crate::storage::{BodyCheck, DataWriter, StoreError, StoreFuture, Written};
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
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
    /// path. `for_good`: the kernel or filesystem refused it (the runtime stops trying);
    /// else only this body could not have a pipe (`EMFILE` and the like), and the next
    /// one tries again.
    Fallback { for_good: bool },
}

/// Room reserved in the data file for the bytes of one body on their way (`fallocate`
/// with `FALLOC_FL_KEEP_SIZE`, so the file's size still counts only the bytes stored),
/// and given back when fewer came ([`Reservation::release`]).
///
/// Invariant: blocks past the file's size are only ever this reservation's (the upload's
/// lock is held, one body is written at a time, and every request gives back what it
/// reserved before it lets the lock go), so truncating the file to its size frees exactly
/// what is left of it.
struct Reservation {
    /// Reserved up to this file offset (the body's start when nothing is).
    end: u64,
    /// A chunked body's window, moved ahead as the body is written, never past this
    /// offset (the body's limit); `None` for a Content-Length body, whose whole range is
    /// reserved at once, or once the window cannot move.
    window_to: Option<u64>,
    /// A `fallocate` failed: part of its range may be allocated all the same (ext4
    /// keeps what it allocated before it ran out of room), so the file is truncated at
    /// the end whatever `end` says.
    spilt: bool,
}

impl Reservation {
    /// Reserves room for the bytes `body` will bring, from `start` and at most `limit`:
    /// its Content-Length, or [`CHUNKED_RESERVE_BYTES`] for a chunked body. Nothing for
    /// a body whose every byte came with the head: one write stores it, and a full disk
    /// fails that write before anything more is read. For a Content-Length body, an
    /// error (507 when there is no room, 413 past what the filesystem can hold) means
    /// nothing is reserved and the body must not be read. A chunked body's window is
    /// best effort: its length is not known, so a disk without room for the window may
    /// still have room for the body, which goes on unreserved (its writes find a full
    /// disk and keep what they stored). A filesystem that cannot reserve gets no
    /// reservation.
    async fn take(
        file: &File,
        body: &BodySource<'_>,
        start: u64,
        limit: u64,
    ) -> Result<Reservation, Error> {
        let mut room = Reservation {
            end: start,
            window_to: None,
            spilt: false,
        };
        let len = match body.content_length() {
            _ if body.whole_in_hand() => 0,
            Some(cl) => cl.min(limit),
            None => {
                room.window_to = Some(start.saturating_add(limit));
                CHUNKED_RESERVE_BYTES.min(limit)
            }
        };
        if len == 0 {
            return Ok(room);
        }
        match file.fallocate(start, len, FALLOC_FL_KEEP_SIZE).await {
            Ok(()) => {
                room.end = start + len;
                Ok(room)
            }
            Err(e) if fallocate_unsupported(&e) => {
                crate::debug!("fallocate is not supported here: {e}");
                room.window_to = None;
                Ok(room)
            }
            Err(e) if room.window_to.is_some() => {
                crate::debug!("no room for a chunked body's window, it goes on unreserved: {e}");
                room.spilt = true;
                room.window_to = None;
                Ok(room)
            }
            Err(e) => {
                room.spilt = true;
                room.release(file, start).await;
                Err(match e.raw_os_error() {
                    Some(libc::EFBIG) => {
                        Error::TooLarge("The request body would pass what the filesystem can hold")
                    }
                    _ => Error::storage("reserve room for the body", e),
                })
            }
        }
    }

    /// A chunked body is about to be written up to `upto`: when less than half the
    /// window is left ahead of it, the window moves to [`CHUNKED_RESERVE_BYTES`] past
    /// `upto` (best effort: when there is no room, the writes find the full disk and
    /// keep what they stored).
    async fn advance(&mut self, file: &File, upto: u64) {
        let Some(to) = self.window_to else {
            return;
        };
        if self.end >= to || self.end >= upto.saturating_add(CHUNKED_RESERVE_BYTES / 2) {
            return;
        }
        let from = self.end;
        let new_end = upto.saturating_add(CHUNKED_RESERVE_BYTES).min(to);
        match file
            .fallocate(from, new_end - from, FALLOC_FL_KEEP_SIZE)
            .await
        {
            Ok(()) => self.end = new_end,
            Err(e) => {
                crate::debug!("moving the chunked body's reservation failed: {e}");
                self.spilt = true;
                self.window_to = None;
            }
        }
    }

    /// The body has ended with the file's size at `stored`: room reserved past it is
    /// given back, by truncating the file to its size. Measured here (`fallocate -n`, 32
    /// MiB past a 3-byte file): on ext4 and tmpfs the blocks stay allocated after the
    /// file is closed, for as long as the file exists; truncating to the same size frees
    /// them on both; punching a hole past the size frees them on tmpfs but not on ext4.
    /// Best effort: a failure is logged, and the room is freed with the upload.
    async fn release(&self, file: &File, stored: u64) {
        if !self.spilt && self.end <= stored {
            return;
        }
        if let Err(e) = truncate_to_size(file).await {
            crate::warn!("giving back room reserved for a body failed: {e}");
        }
    }
}

impl FileWriter {
    pub(super) fn new(inner: Rc<Inner>, file: File, path: PathBuf) -> FileWriter {
        FileWriter { inner, file, path }
    }

    /// Spliced when it can be, else buffered; at most `limit` bytes from `start`, into
    /// room reserved before the body is read.
    async fn write_plain(&mut self, body: &mut BodySource<'_>, start: u64, limit: u64) -> Written {
        let end = start.saturating_add(limit);
        let mut room = match Reservation::take(&self.file, body, start, limit).await {
            Ok(room) => room,
            Err(e) => return refused(start, Some(e)),
        };
        let mut out = Progress::at(start);
        // Zero-copy when nothing needs to see the bytes and the whole body fits (a
        // Content-Length body always does: its overrun was refused before reading).
        if self.inner.splice_enabled()
            && body.can_splice()
            && body.content_length().is_some_and(|cl| cl <= limit)
        {
            match splice_body(&self.file, body, &mut out.pos).await {
                Ok(Spliced::Done) => {}
                Ok(Spliced::Fallback { for_good: true }) => self.inner.disable_splice(),
                Ok(Spliced::Fallback { for_good: false }) => {}
                Err(e) => out.failed(e),
            }
        }
        if out.error.is_none() && body.end().is_none() {
            let (file, inner) = (&self.file, &self.inner);
            buffered(inner, body, file, end, &mut out, None, Some(&mut room)).await;
        }
        if out.write_failed {
            // A failed write may have stored part of its buffer: the file size says.
            if let Ok(st) = self.file.statx().await {
                out.pos = st.stx_size.max(start);
            }
        }
        room.release(&self.file, out.pos).await;
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
        // Room in the data file for the verified copy, reserved before the body is read.
        let room = match Reservation::take(&self.file, body, start, limit).await {
            Ok(room) => room,
            Err(e) => return refused(start, Some(e)),
        };
        let staging = match open_staging(&self.inner, &self.path).await {
            Ok(f) => f,
            Err(e) => {
                room.release(&self.file, start).await;
                return refused(start, Some(e.into()));
            }
        };
        let mut staged = Progress::at(0);
        buffered(
            &self.inner,
            body,
            &staging,
            limit,
            &mut staged,
            Some(&mut *check),
            None,
        )
        .await;
        let verdict = match staged.error.take() {
            Some(e) => Err(Some(e)),
            None if body.end().is_some_and(|e| !matches!(e, BodyEnd::Complete)) => Err(None),
            None => check.verdict(body).map_err(Some),
        };
        if let Err(e) = verdict {
            let _ = staging.close().await;
            room.release(&self.file, start).await;
            return refused(start, e);
        }
        let (pos, error) = copy_staged(&self.inner, &staging, &self.file, start, staged.pos).await;
        let _ = staging.close().await;
        room.release(&self.file, pos).await;
        let error = self.sync(start, pos).await.or(error);
        Written {
            end_offset: pos,
            error,
        }
    }
}

/// A body refused (or cut short) with nothing stored: the offset stays at `start`.
fn refused(start: u64, error: Option<Error>) -> Written {
    Written {
        end_offset: start,
        error,
    }
}

impl DataWriter for FileWriter {
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

/// Errors of `fallocate` that mean "this filesystem cannot reserve" (no room to give
/// back, nothing to refuse).
fn fallocate_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS)
    )
}

/// `IORING_OP_FTRUNCATE` (Linux 6.9), which io-uring 0.6 has no builder for.
const IORING_OP_FTRUNCATE: u8 = 55;

/// Truncates `file` to its own size (`statx`), which frees blocks allocated past it.
/// In the ring where the kernel has `IORING_OP_FTRUNCATE`; before 6.9 (`EINVAL`) the
/// blocking `ftruncate(2)` runs on a short-lived thread of its own, never on the core.
async fn truncate_to_size(file: &File) -> io::Result<()> {
    let size = file.statx().await?.stx_size;
    let fd = file.as_raw_fd();
    // The FTRUNCATE SQE is FALLOCATE's with the length in `off` and nothing else set
    // (the kernel refuses it otherwise): built as a fallocate of 0 bytes at `size`, then
    // given the FTRUNCATE opcode.
    let mut sqe = io_uring06::opcode::Fallocate::new(io_uring06::types::Fd(fd), 0)
        .offset(size)
        .build();
    // SAFETY: `Entry` is `#[repr(C)]` around the kernel's `io_uring_sqe`, whose first
    // field is the one-byte opcode; only that byte is written.
    unsafe { *(&mut sqe as *mut io_uring06::squeue::Entry).cast::<u8>() = IORING_OP_FTRUNCATE };
    match submit(sqe).await {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => truncate_on_thread(fd, size).await,
        Err(e) => Err(e),
    }
}

/// `ftruncate(2)` on a thread of its own (kernels without `IORING_OP_FTRUNCATE`), on a
/// duplicate of `fd`; the caller awaits it, holding the upload's lock.
async fn truncate_on_thread(fd: RawFd, size: u64) -> io::Result<()> {
    // SAFETY: `fd` is the caller's open file for the whole call; `dup` makes a new
    // descriptor that the thread owns and closes.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a new descriptor owned by nothing else.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tusring-truncate".into())
        .spawn(move || {
            // SAFETY: `owned` is open for the call.
            let r = unsafe { libc::ftruncate(owned.as_raw_fd(), size as libc::off_t) };
            let _ = tx.send(if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            });
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("the truncate thread ended early")))
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
            SpliceIn::Unsupported => return Ok(Spliced::Fallback { for_good: true }),
            SpliceIn::NoPipe => return Ok(Spliced::Fallback { for_good: false }),
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
/// is reported to the body source ([`BodySource::stored_to`]: progress answers). With
/// `reserved`, a chunked body's reserved window is moved ahead of each write.
async fn buffered(
    inner: &Inner,
    body: &mut BodySource<'_>,
    file: &File,
    end: u64,
    out: &mut Progress,
    mut check: Option<&mut dyn BodyCheck>,
    mut reserved: Option<&mut Reservation>,
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
        if let Some(r) = reserved.as_deref_mut() {
            r.advance(file, out.pos + n).await;
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
/// without `O_TMPFILE` gets `<data>.chk` (a name no upload ID may have), opened
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
    let named = crate::storage::layout::staging_path(data_path);
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
