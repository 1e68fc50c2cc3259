//! The info records as files: `<info-dir>/<id>.info`, rustus's JSON.
//!
//! One reader ([`FileRecords::get`]) with one set of rules serves every caller: the
//! request path, the expiration sweep and the startup index of waiting finals. A record
//! is opened with `O_NOFOLLOW` (a symlink planted in the info directory is never read
//! through), refused above [`MAX_INFO_BYTES`], and must parse and name the upload it
//! is the record of. Writes go to `<id>.info.tmp` and are renamed over the record; a
//! new record whose ID a hook chose is renamed only where no record is
//! ([`InfoStore::create`]).

use super::chain::{c_path, clone_err, publish_ops, short_write, Chains, Keep};
use super::{is_not_found, probe, sync_dir, FileSettings};
use crate::storage::fault;
use crate::storage::id::UploadId;
use crate::storage::info::UploadInfo;
use crate::storage::layout;
use crate::storage::{InfoScan, InfoStore, StoreError, StoreFuture};
use io_uring06::{opcode, types};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::{File, OpenOptions};

/// Largest info record read from disk; a larger `.info` file is treated as corrupt.
pub const MAX_INFO_BYTES: u64 = 1024 * 1024;

/// IDs a scan hands out at once.
const SCAN_BATCH: usize = 256;

/// The info records of one runtime (settings only; every operation is an io_uring op).
#[derive(Debug, Clone)]
pub struct FileRecords {
    /// Absolute info directory.
    info_dir: PathBuf,
    /// `--force-fsync`: fsync each record before its rename and the directory after.
    force_fsync: bool,
}

impl FileRecords {
    /// The records of `files`.
    pub fn new(files: &FileSettings) -> FileRecords {
        FileRecords {
            info_dir: files.info_dir.clone(),
            force_fsync: files.force_fsync,
        }
    }

    async fn read(&self, id: &UploadId) -> Result<UploadInfo, StoreError> {
        let id_str = id.to_string();
        let info_path = layout::info_path(&self.info_dir, &id_str);
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&info_path)
            .await;
        let file = match opened {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Err(StoreError::NotFound),
            Err(e) => return Err(StoreError::io("open info record", e)),
        };
        let bytes = read_whole(&file).await;
        drop(file); // a synchronous close(2): see `write`
        let bytes = bytes?;
        let info = UploadInfo::from_json(&bytes).map_err(|e| {
            crate::error!("info record {} is corrupt: {e}", info_path.display());
            StoreError::Corrupt
        })?;
        if info.id != id_str {
            crate::error!("info record {} names another id", info_path.display());
            return Err(StoreError::Corrupt);
        }
        Ok(info)
    }

    /// Writes the record atomically: a temporary file renamed over the record (with
    /// `--force-fsync`, the file and then its directory are fsynced). On failure the
    /// temporary file is removed and the previous record, if any, is whole. With `new`,
    /// the rename never replaces a record ([`publish_new`]): [`StoreError::Exists`] when
    /// the upload has one, with nothing changed.
    async fn write(&self, info: &UploadInfo, new: bool) -> Result<(), StoreError> {
        let json = info.to_json();
        let tmp = layout::info_tmp_path(&self.info_dir, &info.id);
        let dest = layout::info_path(&self.info_dir, &info.id);
        // Test builds may fail this write (`storage::fault`): counted once per record.
        let fail = fault::info_write();
        if !fail && !self.force_fsync {
            if let Some(done) = write_linked(json.clone(), &tmp, &dest, new).await {
                if done.is_ok() {
                    fault::trace(|| format!("record {} renamed into place", info.id));
                }
                return done;
            }
        }
        // O_NOFOLLOW: a symlink planted at the temporary path is not written through.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .await
            .map_err(|e| StoreError::io("create info record", e))?;
        let (mut res, _) = file.write_all_at(json, 0).await;
        if res.is_ok() && fail {
            res = Err(fault::eio());
        }
        let res = match res {
            Ok(()) if self.force_fsync => file.sync_all().await,
            other => other,
        };
        // Closed synchronously by the drop: close(2) of a regular file does not wait
        // for I/O, and an io_uring close would cost the core one more wake-up.
        drop(file);
        if let Err(e) = res {
            let _ = tokio_uring::fs::remove_file(&tmp).await;
            return Err(StoreError::io("write info record", e));
        }
        let renamed = if new {
            publish_new_off_core(&tmp, &dest, None).await
        } else {
            tokio_uring::fs::rename(&tmp, &dest)
                .await
                .map_err(|e| StoreError::io("rename info record", e))
        };
        if let Err(e) = renamed {
            let _ = tokio_uring::fs::remove_file(&tmp).await;
            return Err(e);
        }
        fault::trace(|| format!("record {} renamed into place", info.id));
        if self.force_fsync {
            sync_dir(&self.info_dir)
                .await
                .map_err(|e| StoreError::io("fsync info directory", e))?;
        }
        Ok(())
    }
}

/// Publishes the written temporary record `tmp` as the new record `dest` only if
/// `dest` does not exist, atomically: `renameat2(RENAME_NOREPLACE)`, or, where the
/// filesystem has no such rename (`EINVAL`), `link(2)` (which never replaces either)
/// and the temporary name unlinked. `tried`: the result of a no-replace rename the chain
/// already ran. [`StoreError::Exists`] when `dest` exists; `tmp` is left for the caller
/// to remove on any error. Blocking metadata calls: a core reaches them only through
/// [`publish_new_off_core`].
/// [`publish_new`] without blocking the core: when it has a syscall to make (no rename
/// tried yet, or the filesystem refused `RENAME_NOREPLACE` and `link(2)` is next), that
/// runs on a short-lived thread of its own, as the `ftruncate` fallback does, and the
/// core awaits its result. Only the creation of an upload whose ID a hook chose gets
/// here, and only off the chain's path (all slots busy, `--force-fsync`, a submit being
/// retried) or where the chain's rename was refused.
async fn publish_new_off_core(
    tmp: &Path,
    dest: &Path,
    tried: Option<std::io::Error>,
) -> Result<(), StoreError> {
    let needs_call = match &tried {
        None => true,
        Some(e) => e.raw_os_error() == Some(libc::EINVAL),
    };
    if !needs_call {
        return publish_new(tmp, dest, tried);
    }
    let (tmp, dest) = (tmp.to_path_buf(), dest.to_path_buf());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tusring-claim".into())
        .spawn(move || {
            let _ = tx.send(publish_new(&tmp, &dest, tried));
        })
        .map_err(|e| StoreError::io("start the record claim thread", e))?;
    rx.await.unwrap_or_else(|_| {
        Err(StoreError::io(
            "claim info record",
            std::io::Error::other("the record claim thread ended early"),
        ))
    })
}

fn publish_new(tmp: &Path, dest: &Path, tried: Option<std::io::Error>) -> Result<(), StoreError> {
    let renamed = match tried {
        Some(e) => Err(e),
        None => {
            let (Some(from), Some(to)) = (c_path(tmp), c_path(dest)) else {
                return Err(StoreError::io(
                    "rename info record",
                    std::io::Error::from_raw_os_error(libc::EINVAL),
                ));
            };
            // SAFETY: both paths are NUL-terminated strings that live across the call.
            let r = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    };
    match renamed {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Err(StoreError::Exists),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match std::fs::hard_link(tmp, dest) {
            Ok(()) => {
                let _ = std::fs::remove_file(tmp);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Err(StoreError::Exists),
            Err(e) => Err(StoreError::io("link info record", e)),
        },
        Err(e) => Err(StoreError::io("rename info record", e)),
    }
}

/// The record written as one chain of linked operations (see `chain`): the temporary
/// file opened, written, closed and renamed over the record, submitted together, so the
/// core waits once instead of three times. The rename runs only when the write stored
/// every byte (a chain stops at a short write), so a reader still sees the old record
/// or the new one, never a torn one. With `new`, the rename is `RENAME_NOREPLACE`
/// ([`publish_new`]). `None` when no chain could run (nothing was done): the caller
/// writes the record one operation at a time. Not with `--force-fsync`, whose fsyncs
/// take the other path.
async fn write_linked(
    json: Vec<u8>,
    tmp: &Path,
    dest: &Path,
    new: bool,
) -> Option<Result<(), StoreError>> {
    let chains = Chains::current()?;
    let len = json.len();
    let keep = Keep {
        paths: vec![c_path(tmp)?, c_path(dest)?],
        bytes: json,
    };
    let done = chains
        .run(keep, |slot, k| {
            let mut ops = publish_ops(
                slot,
                k,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o666,
            );
            if new {
                ops[3].op = opcode::RenameAt::new(
                    types::Fd(libc::AT_FDCWD),
                    k.paths[0].as_ptr(),
                    types::Fd(libc::AT_FDCWD),
                    k.paths[1].as_ptr(),
                )
                .flags(libc::RENAME_NOREPLACE)
                .build();
            }
            ops
        })
        .await?;
    let step = |i: usize| done[i].as_ref().copied().map_err(clone_err);
    if let Err(e) = step(0) {
        return Some(Err(StoreError::io("create info record", e)));
    }
    let failed = match step(1) {
        Ok(n) if n as usize != len => Err(StoreError::io("write info record", short_write())),
        Ok(_) => match step(3) {
            Ok(_) => Ok(()),
            Err(e) if new => publish_new_off_core(tmp, dest, Some(e)).await,
            Err(e) => Err(StoreError::io("rename info record", e)),
        },
        Err(e) => Err(StoreError::io("write info record", e)),
    };
    if failed.is_err() {
        let _ = tokio_uring::fs::remove_file(tmp).await;
    }
    Some(failed)
}

impl InfoStore for FileRecords {
    fn get<'a>(&'a self, id: &'a UploadId) -> StoreFuture<'a, Result<UploadInfo, StoreError>> {
        Box::pin(self.read(id))
    }

    fn put<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write(info, false))
    }

    fn create<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write(info, true))
    }

    fn remove<'a>(&'a self, id: &'a UploadId) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let path = layout::info_path(&self.info_dir, &id.to_string());
            match tokio_uring::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => return Err(StoreError::NotFound),
                Err(e) => return Err(StoreError::io("remove info record", e)),
            }
            fault::trace(|| format!("record {id} removed"));
            // The caller removes the data next: with --force-fsync the record's removal
            // is durable first, so a power loss can never leave it without its data.
            if self.force_fsync {
                sync_dir(&self.info_dir)
                    .await
                    .map_err(|e| StoreError::io("fsync info directory", e))?;
            }
            Ok(())
        })
    }

    fn scan(&self) -> Result<Box<dyn InfoScan + '_>, StoreError> {
        let entries = std::fs::read_dir(&self.info_dir)
            .map_err(|e| StoreError::io("list info directory", e))?;
        Ok(Box::new(Scan { entries }))
    }

    fn probe(&self) -> StoreFuture<'_, Result<(), String>> {
        Box::pin(probe("info", &self.info_dir))
    }
}

/// A listing of the info directory. `getdents` has no io_uring op, so it blocks: scans
/// run off the cores only (see [`InfoStore::scan`]).
struct Scan {
    entries: std::fs::ReadDir,
}

impl InfoScan for Scan {
    fn next_batch(&mut self) -> StoreFuture<'_, Option<Result<Vec<UploadId>, StoreError>>> {
        let mut ids = Vec::new();
        let mut seen = 0;
        for entry in self.entries.by_ref() {
            seen += 1;
            if let Some(id) = entry
                .ok()
                .and_then(|e| layout::id_of_info_file(&e.file_name()))
            {
                ids.push(id);
            }
            if seen == SCAN_BATCH {
                break;
            }
        }
        let batch = (seen > 0).then_some(Ok(ids));
        Box::pin(std::future::ready(batch))
    }
}

/// Reads a whole record: at most [`MAX_INFO_BYTES`], else it is corrupt.
async fn read_whole(file: &File) -> Result<Vec<u8>, StoreError> {
    let st = file
        .statx()
        .await
        .map_err(|e| StoreError::io("stat info record", e))?;
    if st.stx_size > MAX_INFO_BYTES {
        return Err(StoreError::Corrupt);
    }
    let size = st.stx_size as usize;
    let mut buf = Vec::with_capacity(size.max(1));
    let mut done = 0;
    while done < size {
        let (res, slice) = file.read_at(buf.slice(done..size), done as u64).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => return Err(StoreError::io("read info record", e)),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tusring-records-{}", UploadId::random()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn records(d: &Path, force_fsync: bool) -> FileRecords {
        FileRecords {
            info_dir: d.to_path_buf(),
            force_fsync,
        }
    }

    fn info(id: &str, offset: u64) -> UploadInfo {
        let mut info = UploadInfo::new(id.into(), Some(9), 1, Default::default());
        info.offset = offset;
        info
    }

    #[test]
    fn a_claim_never_replaces_a_record_on_either_path() {
        let d = dir();
        tokio_uring::start(async {
            // The chain's path, and the one-operation-at-a-time path (--force-fsync).
            for (n, fsync) in [(0, false), (1, true)] {
                let r = records(&d, fsync);
                let id = UploadId::parse(&format!("claimed-{n}")).unwrap();
                r.create(&info(id.as_str(), 1))
                    .await
                    .expect("no record yet");
                match r.create(&info(id.as_str(), 2)).await {
                    Err(StoreError::Exists) => {}
                    other => panic!("a second claim: {other:?}"),
                }
                assert_eq!(r.get(&id).await.unwrap().offset, 1, "the first record kept");
                assert!(!d.join(format!("claimed-{n}.info.tmp")).exists());
                // An ordinary write replaces it, as for every later write.
                r.put(&info(id.as_str(), 3)).await.unwrap();
                assert_eq!(r.get(&id).await.unwrap().offset, 3);
            }
        });
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn publishing_a_new_record_falls_back_to_a_link() {
        let d = dir();
        let (tmp, dest) = (d.join("a.info.tmp"), d.join("a.info"));
        std::fs::write(&tmp, b"new").unwrap();
        std::fs::write(&dest, b"old").unwrap();
        let einval = || Some(std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(matches!(
            publish_new(&tmp, &dest, None),
            Err(StoreError::Exists)
        ));
        // A filesystem without RENAME_NOREPLACE: link(2), which never replaces either.
        assert!(matches!(
            publish_new(&tmp, &dest, einval()),
            Err(StoreError::Exists)
        ));
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        std::fs::remove_file(&dest).unwrap();
        publish_new(&tmp, &dest, einval()).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert!(!tmp.exists(), "the temporary name is gone");
        std::fs::write(&tmp, b"newer").unwrap();
        std::fs::remove_file(&dest).unwrap();
        publish_new(&tmp, &dest, None).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"newer");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
