//! The upload data as files: creation, opening, stat (the recovered offset), removal,
//! assembly of finals; and a runtime's body buffers and splice switch, which the body
//! writes ([`super::write`]) and downloads ([`super::read`]) share.

use super::assemble::{assemble_blocking, assembling_path, AssembleError, PartFile};
use super::chain::{c_path, clone_err, open_into, Chains, Keep, Link, Step};
use super::read::FileReader;
use super::write::FileWriter;
use super::{create_exclusive, is_not_found, probe, sync_entry_dirs, FileSettings};
use crate::error::Error;
use crate::net::BodySource;
use crate::storage::fault;
use crate::storage::info::UploadInfo;
use crate::storage::layout;
use crate::storage::layout::staging_path;
use crate::storage::{
    DataReader, DataStat, DataStore, DataWriter, StoreError, StoreFuture, Written,
};
use io_uring06::opcode;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::rc::Rc;
use tokio_uring::fs::{File, OpenOptions};

/// Body buffers an upload holds at once on the buffered path: one being filled from the
/// socket while the other is written to the file. So a receiving connection holds at
/// most `BODY_BUFS_PER_UPLOAD * --body-buffer-size` of body buffers (256 KiB each by
/// default: measured here, 64 KiB buffers write about 1.1 GB/s, 256 KiB 1.9 GB/s, 1 MiB
/// 3 GB/s per core); an idle or splicing one holds none.
pub const BODY_BUFS_PER_UPLOAD: usize = 2;

/// Free body buffers a runtime keeps for reuse; more are freed.
pub const POOLED_BODY_BUFS: usize = 64;

/// `fallocate` flag: reserve blocks without changing the file size.
pub(super) const FALLOC_FL_KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;

/// The upload data of one runtime (a core): settings, plus the runtime's body-buffer
/// pool and splice switch, shared with the writers and readers it opens.
pub struct FileData {
    pub(super) inner: Rc<Inner>,
}

/// What the store, its writers and its readers share on one runtime.
pub(super) struct Inner {
    pub(super) settings: FileSettings,
    /// Free body buffers. Invariant: each has capacity `settings.body_buffer_size` and
    /// length 0.
    buffers: RefCell<Vec<Vec<u8>>>,
    /// Bodies and downloads may be spliced: on unless `--disable-splice`, and turned off
    /// for good on this runtime when the kernel or filesystem refuses a splice.
    splice: Cell<bool>,
}

impl Inner {
    /// Bytes of one body buffer (`--body-buffer-size`).
    pub(super) fn buf_bytes(&self) -> usize {
        self.settings.body_buffer_size
    }

    /// Takes a body buffer (capacity `buf_bytes()`, empty) from the pool.
    pub(super) fn take_buffer(&self) -> Vec<u8> {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buf_bytes()))
    }

    /// Returns a body buffer to the pool.
    pub(super) fn give_buffer(&self, mut buf: Vec<u8>) {
        let mut pool = self.buffers.borrow_mut();
        if buf.capacity() == self.buf_bytes() && pool.len() < POOLED_BODY_BUFS {
            buf.clear();
            pool.push(buf);
        }
    }

    /// Whether bodies and downloads may be spliced (zero-copy) on this runtime.
    pub(super) fn splice_enabled(&self) -> bool {
        self.splice.get()
    }

    /// Turns splicing off on this runtime after the kernel or filesystem refused it.
    pub(super) fn disable_splice(&self) {
        if self.splice.replace(false) {
            crate::warn!("splice is not available here; bodies use the buffered path");
        }
    }

    /// The data file of `info`'s upload: its record's `path`, or (a new upload) where
    /// `--dir-structure` puts it under the data directory.
    pub(super) fn data_path(&self, info: &UploadInfo) -> PathBuf {
        let s = &self.settings;
        layout::upload_data_path(info, &s.data_dir, &s.dir_structure)
    }
}

impl FileData {
    /// The data store of `files` for the calling runtime.
    pub fn new(files: &FileSettings) -> FileData {
        FileData {
            inner: Rc::new(Inner {
                splice: Cell::new(files.splice),
                settings: files.clone(),
                buffers: RefCell::new(Vec::new()),
            }),
        }
    }

    /// Creates the data file (`O_EXCL`; its `--dir-structure` directory when missing).
    /// Nothing is reserved (a declared length is not on its way: see
    /// [`DataWriter::write_body`]). With `--force-fsync`, every directory on the file's
    /// way is fsynced before this returns, so its record, written after, can never
    /// outlive it after a power loss.
    async fn create_file(&self, info: &mut UploadInfo) -> Result<Box<dyn DataWriter>, StoreError> {
        let path = self.inner.data_path(info);
        let file = match create_exclusive(&path).await {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => {
                if let Some(parent) = path.parent() {
                    tokio_uring::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| StoreError::io("create data directory", e))?;
                }
                create_exclusive(&path).await.map_err(create_failed)?
            }
            Err(e) => return Err(create_failed(e)),
        };
        if self.inner.settings.force_fsync {
            if let Err(e) = sync_entry_dirs(&path, &self.inner.settings.data_dir).await {
                drop(file);
                let _ = tokio_uring::fs::remove_file(&path).await;
                return Err(StoreError::io("fsync data directory", e));
            }
        }
        info.path = Some(path.to_string_lossy().into_owned());
        Ok(Box::new(FileWriter::new(self.inner.clone(), file, path)))
    }

    /// [`DataStore::create_whole`]: the data file created, written and closed by one
    /// chain of linked operations (see `chain`), so the core waits once instead of
    /// twice. Not with `--force-fsync` (its directories are fsynced on the other path),
    /// nor when the file's `--dir-structure` directory is missing (the other path makes
    /// it). A write that came short is finished one operation at a time.
    async fn create_whole_file(
        &self,
        info: &mut UploadInfo,
        body: &mut BodySource<'_>,
    ) -> Option<Result<Written, StoreError>> {
        if self.inner.settings.force_fsync || !body.whole_in_hand() {
            return None;
        }
        let chains = Chains::current()?;
        let path = self.inner.data_path(info);
        let keep = Keep {
            paths: vec![c_path(&path)?],
            bytes: Vec::new(),
        };
        let (buf, n) = body.lend_early()?;
        let keep = Keep {
            bytes: buf[..n].to_vec(),
            ..keep
        };
        // Test builds may fail this write after `k` bytes (`storage::fault`).
        let fault = Cell::new(None);
        let done = chains
            .run(keep, |slot, k| {
                fault.set(fault::data_write(n));
                let len = fault.get().unwrap_or(n);
                vec![
                    Step {
                        op: open_into(
                            slot,
                            &k.paths[0],
                            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                            0o644,
                        ),
                        ok: 0,
                        link: Link::Soft,
                    },
                    // Hard-linked: the close runs even when the write fails.
                    Step {
                        op: opcode::Write::new(slot, k.bytes.as_ptr(), len as u32)
                            .offset(0)
                            .build(),
                        ok: len as i32,
                        link: Link::Hard,
                    },
                    Step {
                        op: opcode::Close::new(slot).build(),
                        ok: 0,
                        link: Link::End,
                    },
                ]
            })
            .await;
        let done = match done {
            Some(done) => done,
            None => {
                body.restore_early(buf);
                return None;
            }
        };
        match &done[0] {
            Ok(_) => {}
            Err(e) if is_not_found(e) => {
                body.restore_early(buf);
                return None;
            }
            Err(e) => {
                body.restore_early(buf);
                return Some(Err(create_failed(clone_err(e))));
            }
        }
        info.path = Some(path.to_string_lossy().into_owned());
        let (stored, error) = match (&done[1], fault.get()) {
            (Ok(m), Some(_)) => (*m as usize, Some(fault::eio())),
            (Ok(m), None) if (*m as usize) < n => {
                // Short (a disk filling up): the rest as the other path writes it.
                let m = *m as usize;
                match open(&path, false).await {
                    Ok(f) => {
                        let (res, _) = f.write_all_at(buf[m..n].to_vec(), m as u64).await;
                        let stored = match &res {
                            Ok(()) => n,
                            Err(_) => f.statx().await.map_or(m, |st| st.stx_size as usize),
                        };
                        (stored, res.err())
                    }
                    Err(e) => (m, Some(e)),
                }
            }
            (Ok(m), None) => (*m as usize, None),
            (Err(e), _) => (0, Some(clone_err(e))),
        };
        body.keep_early(buf, stored);
        body.stored_to(stored as u64);
        Some(Ok(Written {
            end_offset: stored as u64,
            error: error.map(|e| Error::storage("write data file", e)),
        }))
    }

    async fn open_file(&self, info: &UploadInfo) -> Result<Box<dyn DataWriter>, StoreError> {
        let path = self.inner.data_path(info);
        let file = open(&path, false)
            .await
            .map_err(|e| not_found_or(e, "open data file"))?;
        Ok(Box::new(FileWriter::new(self.inner.clone(), file, path)))
    }

    async fn stat_file(&self, info: &UploadInfo) -> Result<DataStat, StoreError> {
        let stat = self.stat_quiet(info).await;
        if let Err(StoreError::NotFound) = stat {
            crate::warn!(
                "upload {}: data file {} is missing; answering 404",
                info.id,
                self.inner.data_path(info).display()
            );
        }
        stat
    }

    /// [`DataStore::stat`] without the warning about a missing file (`NotFound`), for
    /// a store to which a missing file can be normal (hybrid-s3: moved to S3).
    pub async fn stat_quiet(&self, info: &UploadInfo) -> Result<DataStat, StoreError> {
        let path = self.inner.data_path(info);
        let id = &info.id;
        let stat = match tokio_uring::fs::StatxBuilder::new().pathname(&path) {
            Ok(b) => {
                b.flags(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
                    .statx()
                    .await
            }
            Err(e) => Err(e),
        };
        match stat {
            // Only a regular file is an upload's data: a symlink planted in the data
            // directory must not lead reads or writes outside it.
            Ok(st) if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFREG => {
                crate::warn!(
                    "upload {id}: data file {} is not a regular file (a symlink?); refusing it",
                    path.display()
                );
                Err(StoreError::io(
                    "stat data file",
                    io::Error::from_raw_os_error(libc::ELOOP),
                ))
            }
            Ok(st) => Ok(DataStat {
                size: st.stx_size,
                modified: st.stx_mtime.tv_sec,
            }),
            Err(e) if is_not_found(&e) => Err(StoreError::NotFound),
            Err(e) => Err(StoreError::io("stat data file", e)),
        }
    }

    async fn read_file(&self, info: &UploadInfo) -> Result<Box<dyn DataReader>, StoreError> {
        let path = self.inner.data_path(info);
        let file = open(&path, true)
            .await
            .map_err(|e| not_found_or(e, "open data file"))?;
        let st = match file.statx().await {
            Ok(st) => st,
            Err(e) => {
                let _ = file.close().await;
                return Err(StoreError::io("stat data file", e));
            }
        };
        Ok(Box::new(FileReader::new(
            self.inner.clone(),
            file,
            st.stx_size,
            st.stx_mtime.tv_sec,
        )))
    }

    /// Copies the parts into `dest` on a helper thread (`copy_file_range(2)` has no
    /// io_uring op and blocks for the whole copy); the core awaits the result.
    async fn assemble(
        &self,
        parts: &[UploadInfo],
        dest: &mut UploadInfo,
    ) -> Result<(), StoreError> {
        let files: Vec<PartFile> = parts
            .iter()
            .map(|p| PartFile {
                path: self.inner.data_path(p),
                len: p.length.unwrap_or(0),
            })
            .collect();
        let path = self.inner.data_path(dest);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let target = path.clone();
        let sync_below = self
            .inner
            .settings
            .force_fsync
            .then(|| self.inner.settings.data_dir.clone());
        std::thread::Builder::new()
            .name("tusring-assemble".into())
            .spawn(move || {
                let _ = tx.send(assemble_blocking(&files, &target, sync_below.as_deref()));
            })
            .map_err(|e| StoreError::io("start the assembly thread", e))?;
        match rx.await {
            Ok(Ok(copied)) => {
                crate::debug!(
                    "assembled {}: {} bytes copied in the kernel, {} through user space",
                    path.display(),
                    copied.in_kernel,
                    copied.fallback
                );
            }
            Ok(Err(AssembleError::PartMissing(_))) => return Err(StoreError::NotFound),
            Ok(Err(AssembleError::PartShort(i))) => {
                return Err(StoreError::io(
                    "copy part data",
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("part {i} is shorter than its length"),
                    ),
                ))
            }
            Ok(Err(AssembleError::Io(what, e))) => return Err(StoreError::io(what, e)),
            Err(_) => return Err(StoreError::Unavailable("The assembly thread ended early")),
        }
        dest.path = Some(path.to_string_lossy().into_owned());
        Ok(())
    }

    /// Removes the data file, and what a crash may have left beside it: a checksum
    /// staging file (`<data>.chk`, see `write::open_staging`) and, for a final, a partly
    /// assembled one (`<data>.assembling`). The caller holds the upload's lock, so
    /// neither is in use.
    async fn remove_file(&self, info: &UploadInfo) -> Result<(), StoreError> {
        let path = self.inner.data_path(info);
        let _ = tokio_uring::fs::remove_file(staging_path(&path)).await;
        if info.is_final {
            let _ = tokio_uring::fs::remove_file(assembling_path(&path)).await;
        }
        match tokio_uring::fs::remove_file(&path).await {
            Ok(()) => {
                fault::trace(|| format!("data {} removed", info.id));
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(StoreError::io("remove data file", e)),
        }
    }
}

/// Why a new data file could not be created: [`StoreError::Exists`] when a file is
/// there already (an ID a hook chose, whose data path another upload's file holds).
fn create_failed(e: std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(libc::EEXIST) {
        StoreError::Exists
    } else {
        StoreError::io("create data file", e)
    }
}

impl DataStore for FileData {
    fn place(&self, info: &mut UploadInfo) {
        info.path = Some(self.inner.data_path(info).to_string_lossy().into_owned());
    }

    fn create<'a>(
        &'a self,
        info: &'a mut UploadInfo,
    ) -> StoreFuture<'a, Result<Box<dyn DataWriter>, StoreError>> {
        Box::pin(self.create_file(info))
    }

    fn create_whole<'a, 'b>(
        &'a self,
        info: &'a mut UploadInfo,
        body: &'a mut BodySource<'b>,
    ) -> StoreFuture<'a, Option<Result<Written, StoreError>>> {
        Box::pin(self.create_whole_file(info, body))
    }

    fn open<'a>(
        &'a self,
        info: &'a UploadInfo,
    ) -> StoreFuture<'a, Result<Box<dyn DataWriter>, StoreError>> {
        Box::pin(self.open_file(info))
    }

    fn stat<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<DataStat, StoreError>> {
        Box::pin(self.stat_file(info))
    }

    fn read<'a>(
        &'a self,
        info: &'a UploadInfo,
    ) -> StoreFuture<'a, Result<Box<dyn DataReader>, StoreError>> {
        Box::pin(self.read_file(info))
    }

    fn concat<'a>(
        &'a self,
        parts: &'a [UploadInfo],
        dest: &'a mut UploadInfo,
    ) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(self.assemble(parts, dest))
    }

    fn remove<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(self.remove_file(info))
    }

    fn probe(&self) -> StoreFuture<'_, Result<(), String>> {
        Box::pin(probe("data", &self.inner.settings.data_dir))
    }
}

/// Opens an existing data file, for reading (a download) or writing (an append), never
/// through a symlink.
async fn open(path: &std::path::Path, read: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(read)
        .write(!read)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .await
}

fn not_found_or(e: io::Error, what: &'static str) -> StoreError {
    if is_not_found(&e) {
        StoreError::NotFound
    } else {
        StoreError::io(what, e)
    }
}
