//! The file storage: data files and info records, through io_uring.
//!
//! Every path-level operation on upload files (create, open, stat, rename, remove) and
//! on the info records is here; request bodies are written into the handles it opens.
//! Everything here runs on a core thread and every operation is an io_uring op (open,
//! statx, read, write, fallocate, fsync, rename, unlink), so a core never blocks on the
//! filesystem.
//!
//! Truth about an upload's offset is the data file's size: data is only ever written
//! sequentially at the end (one write in flight per upload), and preallocation uses
//! `FALLOC_FL_KEEP_SIZE`, so `st_size` is exactly the bytes received. The info record's
//! `offset` is written when a request ends; after a crash it may lag the data file, and
//! [`FileStore::load`] recovers the offset from the file. See DESIGN.md, "Durability".

use crate::error::Error;
use crate::storage::fault;
use crate::storage::info::UploadInfo;
use crate::storage::layout;
use std::io;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::{File, OpenOptions};
use uuid::Uuid;

/// Largest info record read from disk; a larger `.info` file is treated as corrupt.
pub const MAX_INFO_BYTES: u64 = 1024 * 1024;

/// `fallocate` flag: reserve blocks without changing the file size.
const FALLOC_FL_KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;

/// Writes `buf[range]` into a data file at `pos`: all of it, or an error (after which
/// the file's size says how much was stored). Every body write goes through here (the
/// splice path's file splices through [`fault::data_write`] too), so a test build can
/// make it fail like a faulty disk (`storage::fault`).
pub async fn write_data(
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

/// Where and how uploads are stored. Shared by all cores (it holds only settings).
#[derive(Debug, Clone)]
pub struct FileStore {
    /// Absolute data directory (`--data-dir`, canonicalised at startup).
    pub data_dir: PathBuf,
    /// Absolute info directory (`--info-dir`).
    pub info_dir: PathBuf,
    /// `--dir-structure` template.
    pub dir_structure: String,
    /// `--force-fsync`: fdatasync data before acknowledging, fsync info records and
    /// their directory.
    pub force_fsync: bool,
}

/// An upload as loaded from disk.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The info record; its `offset` is set to the recovered offset.
    pub info: UploadInfo,
    /// The data file.
    pub data_path: PathBuf,
    /// The data file's modification time (unix seconds): the upload's last write, for
    /// the expiration extension. `None` when only the record was read.
    pub modified: Option<i64>,
}

impl Upload {
    /// Bytes stored (the data file's size when it was loaded).
    pub fn offset(&self) -> u64 {
        self.info.offset
    }
}

fn is_not_found(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

impl FileStore {
    /// Creates the directories if missing and makes their paths absolute. Runs once at
    /// startup, before any core starts, so it may block.
    pub fn open(
        data_dir: &Path,
        info_dir: &Path,
        dir_structure: &str,
        force_fsync: bool,
    ) -> io::Result<FileStore> {
        std::fs::create_dir_all(data_dir)?;
        std::fs::create_dir_all(info_dir)?;
        Ok(FileStore {
            data_dir: std::fs::canonicalize(data_dir)?,
            info_dir: std::fs::canonicalize(info_dir)?,
            dir_structure: dir_structure.to_string(),
            force_fsync,
        })
    }

    /// Reads an upload's info record (its `offset` is as recorded, not recovered).
    pub async fn read_info(&self, id: &Uuid) -> Result<Upload, Error> {
        let id_str = id.to_string();
        let info_path = layout::info_path(&self.info_dir, &id_str);
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&info_path)
            .await;
        let file = match opened {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Err(Error::NotFound),
            Err(e) => return Err(Error::storage("open info record", e)),
        };
        let bytes = read_whole(&file).await;
        drop(file); // a synchronous close(2): see `write_info`
        let bytes = bytes?;
        let info = UploadInfo::from_json(&bytes).map_err(|e| {
            crate::error!("info record {} is corrupt: {e}", info_path.display());
            Error::CorruptInfo
        })?;
        if info.id != id_str {
            crate::error!("info record {} names another id", info_path.display());
            return Err(Error::CorruptInfo);
        }
        let data_path = self.data_path_for(&info);
        Ok(Upload {
            info,
            data_path,
            modified: None,
        })
    }

    /// Loads an upload: its info record and, from the data file's size, its offset.
    pub async fn load(&self, id: &Uuid) -> Result<Upload, Error> {
        let mut upload = self.read_info(id).await?;
        let stat = match tokio_uring::fs::StatxBuilder::new().pathname(&upload.data_path) {
            Ok(b) => {
                b.flags(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
                    .statx()
                    .await
            }
            Err(e) => Err(e),
        };
        let size = match stat {
            // Only a regular file is an upload's data: a symlink planted in the data
            // directory must not lead reads or writes outside it.
            Ok(st) if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFREG => {
                crate::warn!(
                    "upload {id}: data file {} is not a regular file (a symlink?); refusing it",
                    upload.data_path.display()
                );
                return Err(Error::storage(
                    "stat data file",
                    io::Error::from_raw_os_error(libc::ELOOP),
                ));
            }
            Ok(st) => {
                upload.modified = Some(st.stx_mtime.tv_sec);
                st.stx_size
            }
            Err(e) if is_not_found(&e) => {
                crate::warn!(
                    "upload {id}: data file {} is missing; answering 404",
                    upload.data_path.display()
                );
                return Err(Error::NotFound);
            }
            Err(e) => return Err(Error::storage("stat data file", e)),
        };
        if size != upload.info.offset {
            crate::debug!(
                "upload {id}: offset {size} recovered from the data file (record said {})",
                upload.info.offset
            );
        }
        upload.info.offset = size;
        Ok(upload)
    }

    /// Sets `info.path` to where the data file of a new upload goes.
    pub fn set_data_path(&self, info: &mut UploadInfo) {
        info.path = Some(self.data_path_for(info).to_string_lossy().into_owned());
    }

    /// The data file of `info`'s upload: its record's `path`, or (a new upload) where
    /// `--dir-structure` puts it under the data directory.
    pub fn data_path_for(&self, info: &UploadInfo) -> PathBuf {
        layout::upload_data_path(info, &self.data_dir, &self.dir_structure)
    }

    /// Removes the info record (and its temporary file) of an upload that could not be
    /// created; best effort.
    pub async fn remove_info(&self, id: &str) {
        let _ = tokio_uring::fs::remove_file(layout::info_path(&self.info_dir, id)).await;
        let _ = tokio_uring::fs::remove_file(layout::info_tmp_path(&self.info_dir, id)).await;
    }

    /// Creates the data file of a new upload exclusively (`O_EXCL`), preallocates its
    /// length when known and `preallocate` is set, and sets `info.path`. The directory
    /// from `--dir-structure` is created only when the first open finds it missing.
    pub async fn create_data(
        &self,
        info: &mut UploadInfo,
        preallocate: bool,
    ) -> Result<(File, PathBuf), Error> {
        let path = self.data_path_for(info);
        let file = match create_exclusive(&path).await {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => {
                if let Some(parent) = path.parent() {
                    tokio_uring::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| Error::storage("create data directory", e))?;
                }
                create_exclusive(&path)
                    .await
                    .map_err(|e| Error::storage("create data file", e))?
            }
            Err(e) => return Err(Error::storage("create data file", e)),
        };
        if let Some(len) = info.length.filter(|&l| l > 0 && preallocate) {
            if let Err(e) = file.fallocate(0, len, FALLOC_FL_KEEP_SIZE).await {
                match e.raw_os_error() {
                    Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                        crate::debug!("fallocate not supported for {}: {e}", path.display());
                    }
                    _ => {
                        let _ = file.close().await;
                        let _ = tokio_uring::fs::remove_file(&path).await;
                        return Err(match e.raw_os_error() {
                            Some(libc::EFBIG) => Error::TooLarge(
                                "Upload-Length is above what the filesystem can hold",
                            ),
                            _ => Error::storage("preallocate data file", e),
                        });
                    }
                }
            }
        }
        info.path = Some(path.to_string_lossy().into_owned());
        Ok((file, path))
    }

    /// Reserves the blocks of a data file whose length just became known (best effort).
    pub async fn preallocate(&self, file: &File, length: u64) {
        if length > 0 {
            if let Err(e) = file.fallocate(0, length, FALLOC_FL_KEEP_SIZE).await {
                crate::debug!("fallocate failed: {e}");
            }
        }
    }

    /// Opens an existing data file for writing.
    pub async fn open_data(&self, path: &Path) -> Result<File, Error> {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    Error::NotFound
                } else {
                    Error::storage("open data file", e)
                }
            })
    }

    /// Opens an existing data file for reading (a download).
    pub async fn open_read(&self, path: &Path) -> Result<File, Error> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .await;
        file.map_err(|e| {
            if is_not_found(&e) {
                Error::NotFound
            } else {
                Error::storage("open data file", e)
            }
        })
    }

    /// Opens a staging file for a body that must be verified before it becomes part
    /// of the upload at `data_path` (the checksum extension): an anonymous `O_TMPFILE`
    /// in the data file's directory, so it has no name, is never mistaken for an
    /// upload, and vanishes with its descriptor, even after a crash. A filesystem
    /// without `O_TMPFILE` gets `<data>.chk` (not a UUID, so never an upload), opened
    /// under the upload's lock with `O_TRUNC` and unlinked at once: a stale one left by
    /// a crash in between is reused by the next checksummed request of the upload and
    /// removed with the upload.
    pub async fn open_staging(&self, data_path: &Path) -> Result<File, Error> {
        let dir = data_path.parent().unwrap_or(&self.data_dir);
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
            Err(e) => return Err(Error::storage("create staging file", e)),
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
            .map_err(|e| Error::storage("create staging file", e))?;
        if let Err(e) = tokio_uring::fs::remove_file(&named).await {
            let _ = file.close().await;
            return Err(Error::storage("unlink staging file", e));
        }
        Ok(file)
    }

    /// Writes the info record atomically: a temporary file renamed over the record
    /// (with `--force-fsync`, the file and then its directory are fsynced).
    pub async fn write_info(&self, info: &UploadInfo) -> Result<(), Error> {
        let json = info.to_json();
        let tmp = layout::info_tmp_path(&self.info_dir, &info.id);
        let dest = layout::info_path(&self.info_dir, &info.id);
        // O_NOFOLLOW: a symlink planted at the temporary path is not written through.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .await
            .map_err(|e| Error::storage("create info record", e))?;
        let (mut res, _) = file.write_all_at(json, 0).await;
        if res.is_ok() && fault::info_write() {
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
            return Err(Error::storage("write info record", e));
        }
        tokio_uring::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| Error::storage("rename info record", e))?;
        if self.force_fsync {
            sync_dir(&self.info_dir)
                .await
                .map_err(|e| Error::storage("fsync info directory", e))?;
        }
        Ok(())
    }

    /// Removes an upload: the info record first (the upload is gone for every later
    /// request), then the data file.
    pub async fn remove(&self, upload: &Upload) -> Result<(), Error> {
        let info_path = layout::info_path(&self.info_dir, &upload.info.id);
        match tokio_uring::fs::remove_file(&info_path).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Err(Error::NotFound),
            Err(e) => return Err(Error::storage("remove info record", e)),
        }
        // A staging file a crash left behind (see `open_staging`), if any.
        let _ = tokio_uring::fs::remove_file(staging_path(&upload.data_path)).await;
        match tokio_uring::fs::remove_file(&upload.data_path).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::storage("remove data file", e)),
        }
    }

    /// Health probe: a file can be created in the data and the info directory.
    pub async fn probe(&self) -> Result<(), String> {
        for (what, dir) in [("data", &self.data_dir), ("info", &self.info_dir)] {
            probe_dir(dir)
                .await
                .map_err(|e| format!("{what} directory {} is not writable: {e}", dir.display()))?;
        }
        Ok(())
    }
}

impl FileStore {
    /// Startup write probe, before the daemon tells systemd it is ready: creates, writes
    /// and removes a file in the data and the info directory with blocking `std::fs`
    /// calls (no core runs yet). The error names the directory and, for a read-only
    /// file system, the likely cause (a sandbox such as `ProtectSystem=strict`).
    pub fn probe_blocking(&self) -> Result<(), String> {
        for (what, dir) in [("data", &self.data_dir), ("info", &self.info_dir)] {
            probe_dir_blocking(dir).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EROFS) {
                    " (a read-only file system: under systemd's ProtectSystem=strict, add the directory to ReadWritePaths=)"
                } else {
                    ""
                };
                format!(
                    "{what} directory {} is not writable: {e}{hint}",
                    dir.display()
                )
            })?;
        }
        Ok(())
    }
}

fn probe_dir_blocking(dir: &Path) -> io::Result<()> {
    use std::io::Write;
    let p = dir.join(format!(".tusring-probe-{}", uuid::Uuid::new_v4()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .and_then(|mut f| f.write_all(b"tusring write probe\n"));
    let removed = std::fs::remove_file(&p);
    written?;
    removed
}

/// The named staging file of an upload, used only where `O_TMPFILE` is not available.
fn staging_path(data_path: &Path) -> PathBuf {
    let mut name = data_path.as_os_str().to_os_string();
    name.push(".chk");
    PathBuf::from(name)
}

async fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .await
}

/// Reads a whole (small) file.
async fn read_whole(file: &File) -> Result<Vec<u8>, Error> {
    let st = file
        .statx()
        .await
        .map_err(|e| Error::storage("stat info record", e))?;
    if st.stx_size > MAX_INFO_BYTES {
        return Err(Error::CorruptInfo);
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
            Err(e) => return Err(Error::storage("read info record", e)),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .await?;
    let r = d.sync_all().await;
    let _ = d.close().await;
    r
}

async fn probe_dir(dir: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
        .await
    {
        Ok(f) => f.close().await,
        Err(e)
            if e.raw_os_error() == Some(libc::EOPNOTSUPP)
                || e.raw_os_error() == Some(libc::EISDIR) =>
        {
            // No O_TMPFILE on this filesystem: create and remove a named probe file.
            let p = dir.join(format!(".tusring-probe-{}", uuid::Uuid::new_v4()));
            let f = create_exclusive(&p).await?;
            let _ = f.close().await;
            tokio_uring::fs::remove_file(&p).await
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_blocking_leaves_nothing_behind_and_names_the_directory() {
        let root = std::env::temp_dir().join(format!("tusring-probe-{}", Uuid::new_v4()));
        let store = FileStore::open(&root.join("d"), &root.join("i"), "", false).expect("open");
        store.probe_blocking().expect("writable");
        assert_eq!(std::fs::read_dir(&store.data_dir).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&store.info_dir).unwrap().count(), 0);
        std::fs::remove_dir(&store.info_dir).unwrap();
        let err = store.probe_blocking().expect_err("info dir gone");
        assert!(err.starts_with("info directory "), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
