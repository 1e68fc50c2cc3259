//! Downloads from a data file: the range is spliced file → pipe → socket without a copy
//! through user space (the socket half, polled for room, is [`BodySink::pipe_to_socket`]),
//! or, where the file cannot be spliced (or with `--disable-splice`), read into one
//! pooled body buffer and written a buffer at a time.

use super::data::Inner;
use crate::net::splice::{is_unsupported, splice};
use crate::net::BodySink;
use crate::storage::{DataReader, StoreFuture};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::File;

/// A data file open for a download, with its size and mtime when it was opened.
pub(super) struct FileReader {
    inner: Rc<Inner>,
    file: File,
    size: u64,
    modified: i64,
}

impl FileReader {
    pub(super) fn new(inner: Rc<Inner>, file: File, size: u64, modified: i64) -> FileReader {
        FileReader {
            inner,
            file,
            size,
            modified,
        }
    }

    /// Sends `len` bytes from `start`: spliced when the runtime splices, else, or when
    /// the file cannot be spliced, through one pooled body buffer.
    async fn send_range(&self, start: u64, len: u64, sink: &mut BodySink<'_>) -> io::Result<()> {
        if self.inner.splice_enabled() {
            match self.splice_range(start, len, sink).await {
                Ok(true) => return Ok(()),
                Ok(false) => {} // nothing sent yet: the buffered path sends it all
                Err(e) => {
                    crate::debug!("download cut short: {e}");
                    return Err(e);
                }
            }
        }
        self.buffered_range(start, len, sink).await
    }

    /// The file is spliced into the connection's pipe (a pipe-load at a time, on an
    /// io-wq thread) and the pipe into the socket. Returns `Ok(false)`, with nothing
    /// sent, when the file cannot be spliced here (the caller falls back to the buffered
    /// path and the runtime stops trying); an error once bytes have gone out. On any
    /// error the pipe is dropped, since it may hold bytes.
    async fn splice_range(
        &self,
        start: u64,
        len: u64,
        sink: &mut BodySink<'_>,
    ) -> io::Result<bool> {
        let (pipe_in, capacity) = match sink.pipe() {
            Ok(p) => (p.write_fd(), p.capacity),
            Err(_) => return Ok(false),
        };
        let file = self.file.as_raw_fd();
        let (mut pos, end) = (start, start + len);
        let mut result = Ok(true);
        while pos < end {
            let want = (end - pos).min(capacity as u64) as u32;
            let n = match splice(file, pos as i64, pipe_in, -1, want).await {
                Ok(0) => {
                    result = Err(shrank());
                    break;
                }
                Ok(n) => n,
                Err(e) if pos == start && is_unsupported(&e) => {
                    self.inner.disable_splice();
                    return Ok(false);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            pos += u64::from(n);
            if let Err(e) = sink.pipe_to_socket(n).await {
                result = Err(e);
                break;
            }
        }
        if result.is_err() {
            sink.discard_pipe();
        }
        result
    }

    /// Read from the file, write to the socket, a buffer at a time, each write with the
    /// body timeout.
    async fn buffered_range(
        &self,
        start: u64,
        len: u64,
        sink: &mut BodySink<'_>,
    ) -> io::Result<()> {
        let mut buf = self.inner.take_buffer();
        let cap = buf.capacity().max(1);
        let (mut pos, end) = (start, start + len);
        let mut result = Ok(());
        while pos < end {
            let want = (end - pos).min(cap as u64) as usize;
            buf.clear();
            let (res, slice) = self.file.read_at(buf.slice(0..want), pos).await;
            buf = slice.into_inner();
            match res {
                Ok(0) => {
                    result = Err(shrank());
                    break;
                }
                Ok(n) => pos += n as u64,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            let (res, b) = sink.write_all(buf).await;
            buf = b;
            if let Err(e) = res {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = &result {
            crate::debug!("download cut short at byte {pos}: {e}");
        }
        self.inner.give_buffer(buf);
        result
    }
}

fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the data file shrank while it was being sent",
    )
}

impl DataReader for FileReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn modified(&self) -> i64 {
        self.modified
    }

    fn send<'a, 'b>(
        self: Box<Self>,
        start: u64,
        len: u64,
        sink: &'a mut BodySink<'b>,
    ) -> StoreFuture<'a, io::Result<()>> {
        let this = *self;
        Box::pin(async move {
            let sent = this.send_range(start, len, sink).await;
            let _ = this.file.close().await;
            sent
        })
    }
}
