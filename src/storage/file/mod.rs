//! The file storage: rustus's `file-info-storage` and `file-storage`, through io_uring.
//!
//! * [`FileRecords`] ([`super::InfoStore`]): `<info-dir>/<id>.info`, written atomically
//!   (temporary file and rename), read by one reader with one set of rules for every
//!   caller (the request path, the expiration sweep, the index of waiting finals).
//! * [`FileData`] ([`super::DataStore`]): `<data-dir>/<--dir-structure>/<id>`. Bodies are
//!   spliced socket → pipe → file, or written from two body buffers; a body to verify is
//!   staged in an anonymous `O_TMPFILE`; a final is assembled with `copy_file_range`
//!   (`assemble`); a known length is reserved with `fallocate`. None of that leaves
//!   this module.
//!
//! Everything here runs on a core thread (or the helper thread's own runtime) and every
//! operation is an io_uring op (open, statx, read, write, splice, fallocate, fsync,
//! rename, unlink), so a core never blocks on the filesystem; only the assembly (its
//! own thread), the listing of the info directory ([`super::InfoStore::scan`], off the
//! cores) and the startup probe block.
//!
//! Truth about an upload's offset is the data file's size: data is only ever written
//! sequentially at the end (one write in flight per upload), and preallocation uses
//! `FALLOC_FL_KEEP_SIZE`, so `st_size` is exactly the bytes received. The info record's
//! `offset` is written when a request ends; after a crash it may lag the data file, and
//! [`super::Stores::load`] recovers the offset from the file. See DESIGN.md,
//! "Durability".

pub mod assemble;
mod chain;
mod data;
mod read;
mod records;
mod write;

pub use data::{FileData, BODY_BUFS_PER_UPLOAD, POOLED_BODY_BUFS};
pub use records::{FileRecords, MAX_INFO_BYTES};

use crate::config::Config;
use crate::storage::fault;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio_uring::fs::{File, OpenOptions};

/// Where and how uploads are stored as files. Shared by every thread (it holds only
/// settings); each runtime makes its own [`FileRecords`] and [`FileData`] from it.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// Absolute data directory (`--data-dir`, canonicalised at startup).
    pub data_dir: PathBuf,
    /// Absolute info directory (`--info-dir`).
    pub info_dir: PathBuf,
    /// `--dir-structure` template.
    pub dir_structure: String,
    /// `--force-fsync`: fdatasync data before acknowledging, fsync info records and
    /// their directory.
    pub force_fsync: bool,
    /// Bodies and downloads may be spliced (no `--disable-splice`).
    pub splice: bool,
    /// `--body-buffer-size`: bytes of each body buffer of the buffered path.
    pub body_buffer_size: usize,
}

impl FileSettings {
    /// The file storage of `config`: its directories created if missing, made absolute,
    /// and checked to take a write. Runs at startup, before any core, so it may block.
    pub fn open(config: &Config) -> Result<FileSettings, String> {
        let mut files = FileSettings::dirs(&config.data_dir, &config.info_dir).map_err(|e| {
            format!(
                "cannot use data directory {} / info directory {}: {e}",
                config.data_dir.display(),
                config.info_dir.display()
            )
        })?;
        files.dir_structure = config.dir_structure.clone();
        files.force_fsync = config.force_fsync;
        files.splice = !config.disable_splice;
        files.body_buffer_size = config.body_buffer_size;
        // Before READY=1 can be sent: the directories must take a write now, not only at
        // the first upload (a read-only mount, a sandbox without ReadWritePaths=).
        files
            .probe_blocking()
            .map_err(|e| format!("write probe failed: {e}"))?;
        Ok(files)
    }

    /// Creates the directories if missing and makes their paths absolute; the other
    /// settings are their defaults.
    pub fn dirs(data_dir: &Path, info_dir: &Path) -> io::Result<FileSettings> {
        std::fs::create_dir_all(data_dir)?;
        std::fs::create_dir_all(info_dir)?;
        Ok(FileSettings {
            data_dir: std::fs::canonicalize(data_dir)?,
            info_dir: std::fs::canonicalize(info_dir)?,
            dir_structure: String::new(),
            force_fsync: false,
            splice: true,
            body_buffer_size: 256 * 1024,
        })
    }

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

/// Health probe of one directory (`what`: "data" or "info"): a file can be created in it.
async fn probe(what: &str, dir: &Path) -> Result<(), String> {
    probe_dir(dir)
        .await
        .map_err(|e| format!("{what} directory {} is not writable: {e}", dir.display()))
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

async fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .await
}

fn is_not_found(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

/// fsyncs a directory, so the entries made in it (a new file, a new directory, a rename)
/// survive a power loss.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .await?;
    let r = d.sync_all().await;
    let _ = d.close().await;
    r?;
    fault::trace(|| format!("fsync dir {}", dir.display()));
    Ok(())
}

/// The directories whose entries lead from `top` to `file`: its own directory and each
/// one above it up to and including `top` (with `--dir-structure`, one per level), the
/// deepest first. Only `file`'s own directory when it is not under `top`.
fn entry_dirs(file: &Path, top: &Path) -> Vec<PathBuf> {
    let Some(dir) = file.parent() else {
        return Vec::new();
    };
    if !dir.starts_with(top) {
        return vec![dir.to_path_buf()];
    }
    dir.ancestors()
        .take_while(|d| d.starts_with(top))
        .map(Path::to_path_buf)
        .collect()
}

/// `--force-fsync` for a new data file (or a final renamed into place) under `top`: every
/// directory on its way ([`entry_dirs`]) is fsynced, so the file is reachable after a
/// power loss before its record is written. All of them, not only those this request
/// made: a level another request has just made may not be durable yet when this one
/// finds it, and fsyncing a directory with nothing new in it costs little.
async fn sync_entry_dirs(file: &Path, top: &Path) -> io::Result<()> {
    for dir in entry_dirs(file, top) {
        sync_dir(&dir).await?;
    }
    Ok(())
}

/// The blocking form of [`sync_entry_dirs`], for the assembly's own thread.
fn sync_entry_dirs_blocking(file: &Path, top: &Path) -> io::Result<()> {
    for dir in entry_dirs(file, top) {
        std::fs::File::open(&dir).and_then(|d| d.sync_all())?;
        fault::trace(|| format!("fsync dir {}", dir.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn the_directories_on_a_data_files_way() {
        let top = Path::new("/d");
        let cases: [(&str, &[&str]); 5] = [
            ("/d/f", &["/d"]),
            (
                "/d/2026/11/28/f",
                &["/d/2026/11/28", "/d/2026/11", "/d/2026", "/d"],
            ),
            ("/d/x/f", &["/d/x", "/d"]),
            // A record's path outside the data directory (written by rustus): its own.
            ("/elsewhere/f", &["/elsewhere"]),
            ("/dd/f", &["/dd"]),
        ];
        for (file, want) in cases {
            let got = entry_dirs(Path::new(file), top);
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(got, want, "{file}");
        }
    }

    #[test]
    fn probe_blocking_leaves_nothing_behind_and_names_the_directory() {
        let root = std::env::temp_dir().join(format!("tusring-probe-{}", Uuid::new_v4()));
        let store = FileSettings::dirs(&root.join("d"), &root.join("i")).expect("open");
        store.probe_blocking().expect("writable");
        assert_eq!(std::fs::read_dir(&store.data_dir).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&store.info_dir).unwrap().count(), 0);
        std::fs::remove_dir(&store.info_dir).unwrap();
        let err = store.probe_blocking().expect_err("info dir gone");
        assert!(err.starts_with("info directory "), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
