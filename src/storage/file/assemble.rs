//! Assembling a final upload's data file from its parts, off the core threads.
//!
//! `copy_file_range(2)` has no io_uring opcode and blocks for as long as the copy takes,
//! so each assembly runs on its own short-lived helper thread (`tusring-assemble`) and
//! hands the result back to the core over a `tokio::sync::oneshot`; the core goes on
//! serving meanwhile. The bytes never pass through user space: `copy_file_range` copies
//! inside the kernel, and on filesystems that share extents (btrfs, XFS with reflink,
//! bcachefs) the kernel clones them instead of copying. Where the kernel refuses
//! (`EXDEV`, `EOPNOTSUPP`, `ENOSYS`, `EINVAL`: e.g. a part on another filesystem) the
//! rest of that part is copied with `read`/`write`.
//!
//! Crash safety: the parts are copied into `<data path>.assembling` (truncated first, so a
//! leftover of an interrupted assembly is reused), which is renamed over the data path
//! only once every byte is there (and, with `--force-fsync`, fdatasynced, with every
//! directory on its way fsynced after the rename). Since an upload's offset is its data file's
//! size, a final is never seen complete with bytes missing. On failure the temporary
//! file is removed and the data path is untouched.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Most bytes one `copy_file_range` call is asked for (the kernel caps a call near
/// 2 GiB anyway); smaller calls would only add syscalls.
const COPY_CHUNK: usize = 1 << 30;

/// Buffer of the `read`/`write` fallback.
const FALLBACK_BUF: usize = 1 << 20;

/// One part to copy: its data file and how many bytes of it (its length).
#[derive(Debug, Clone)]
pub struct PartFile {
    pub path: PathBuf,
    pub len: u64,
}

/// The suffix of the temporary file a final is assembled in.
pub const ASSEMBLING_SUFFIX: &str = ".assembling";

/// The temporary path for assembling into `dest`.
pub fn assembling_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(ASSEMBLING_SUFFIX);
    PathBuf::from(s)
}

/// How an assembly went, for the logs: bytes copied in the kernel and through the
/// fallback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub in_kernel: u64,
    pub fallback: u64,
}

/// Why an assembly failed.
#[derive(Debug)]
pub enum AssembleError {
    /// Part `.0` (its index) is gone.
    PartMissing(usize),
    /// Part `.0` holds fewer bytes than its length.
    PartShort(usize),
    /// A filesystem operation failed.
    Io(&'static str, io::Error),
}

/// Copies `parts` in order into `dest` through the temporary file; blocking. Creates
/// `dest`'s directory if it is missing. With `sync_below` (`--force-fsync`: the data
/// directory), the file is fdatasynced before the rename and every directory from
/// `dest`'s up to `sync_below` fsynced after it.
pub fn assemble_blocking(
    parts: &[PartFile],
    dest: &Path,
    sync_below: Option<&Path>,
) -> Result<Copied, AssembleError> {
    let tmp = assembling_path(dest);
    let result = if crate::storage::fault::assemble() {
        Err(AssembleError::Io(
            "copy part data",
            crate::storage::fault::eio(),
        ))
    } else {
        assemble_into(parts, &tmp, dest, sync_below)
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn assemble_into(
    parts: &[PartFile],
    tmp: &Path,
    dest: &Path,
    sync_below: Option<&Path>,
) -> Result<Copied, AssembleError> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(tmp)
    };
    let out = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| AssembleError::Io("create data directory", e))?;
            }
            open().map_err(|e| AssembleError::Io("create final data file", e))?
        }
        Err(e) => return Err(AssembleError::Io("create final data file", e)),
    };
    let total: u64 = parts.iter().map(|p| p.len).sum();
    if total > 0 {
        // Best effort: find a full disk before copying, as creation does.
        // SAFETY: `out` is an open file descriptor for the call's duration.
        let r = unsafe {
            libc::fallocate(
                out.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                0,
                total as libc::off_t,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                return Err(AssembleError::Io("preallocate final data file", e));
            }
        }
    }
    let mut copied = Copied::default();
    let mut at: u64 = 0;
    for (i, part) in parts.iter().enumerate() {
        let src = match File::open(&part.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(AssembleError::PartMissing(i))
            }
            Err(e) => return Err(AssembleError::Io("open part data file", e)),
        };
        let size = src
            .metadata()
            .map_err(|e| AssembleError::Io("stat part data file", e))?
            .len();
        if size < part.len {
            return Err(AssembleError::PartShort(i));
        }
        let n = copy_range(&src, &out, part.len, at, &mut copied)
            .map_err(|e| AssembleError::Io("copy part data", e))?;
        if n < part.len {
            return Err(AssembleError::PartShort(i));
        }
        at += n;
    }
    if sync_below.is_some() {
        out.sync_data()
            .map_err(|e| AssembleError::Io("fdatasync final data file", e))?;
    }
    drop(out);
    std::fs::rename(tmp, dest).map_err(|e| AssembleError::Io("rename final data file", e))?;
    if let Some(top) = sync_below {
        super::sync_entry_dirs_blocking(dest, top)
            .map_err(|e| AssembleError::Io("fsync data directory", e))?;
    }
    Ok(copied)
}

/// Copies `len` bytes from the start of `src` to `out` at `at`; returns the bytes copied
/// (fewer only if `src` ended early).
fn copy_range(src: &File, out: &File, len: u64, at: u64, copied: &mut Copied) -> io::Result<u64> {
    let mut done: u64 = 0;
    while done < len {
        let want = (len - done).min(COPY_CHUNK as u64) as usize;
        let mut off_in = done as libc::loff_t;
        let mut off_out = (at + done) as libc::loff_t;
        // SAFETY: both descriptors are open for the call's duration; the offsets are
        // valid pointers to locals, and the kernel advances them.
        let r = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                out.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if r > 0 {
            done += r as u64;
            copied.in_kernel += r as u64;
            continue;
        }
        if r == 0 {
            return Ok(done); // the part ended early
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::ENOSYS)
            | Some(libc::EINVAL) => {
                let n = copy_fallback(src, out, done, len - done, at + done)?;
                copied.fallback += n;
                return Ok(done + n);
            }
            _ => return Err(e),
        }
    }
    Ok(done)
}

/// The `read`/`write` copy, for when the kernel cannot copy between the two files.
fn copy_fallback(src: &File, out: &File, from: u64, len: u64, to: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; FALLBACK_BUF];
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(FALLBACK_BUF as u64) as usize;
        let n = match src.read_at(&mut buf[..want], from + done) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all_at(&buf[..n], to + done)?;
        done += n as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tusring-assemble-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn joins_parts_in_order_and_leaves_no_temp() {
        let d = dir();
        let mut parts = Vec::new();
        let mut want = Vec::new();
        for (i, len) in [3usize, 0, 70_000, 5].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
            let p = d.join(format!("p{i}"));
            std::fs::write(&p, &bytes).unwrap();
            want.extend_from_slice(&bytes);
            parts.push(PartFile {
                path: p,
                len: len as u64,
            });
        }
        // A part listed twice.
        parts.push(parts[0].clone());
        let head = want[..3].to_vec();
        want.extend(head);
        let dest = d.join("sub/dir/final");
        let c = assemble_blocking(&parts, &dest, Some(&d)).unwrap();
        assert_eq!(c.in_kernel + c.fallback, want.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), want);
        assert!(!assembling_path(&dest).exists());
        // Reassembling over an existing file replaces it.
        let c = assemble_blocking(&parts[..1], &dest, None).unwrap();
        assert_eq!(c.in_kernel + c.fallback, 3);
        assert_eq!(std::fs::read(&dest).unwrap(), want[..3]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn fallback_copies_the_range() {
        let d = dir();
        let p = d.join("p");
        std::fs::write(&p, b"0123456789").unwrap();
        let src = File::open(&p).unwrap();
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.join("o"))
            .unwrap();
        assert_eq!(copy_fallback(&src, &out, 2, 5, 1).unwrap(), 5);
        assert_eq!(copy_fallback(&src, &out, 8, 5, 6).unwrap(), 2);
        assert_eq!(std::fs::read(d.join("o")).unwrap(), b"\x002345689");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn failures_leave_the_destination_untouched() {
        let d = dir();
        let p = d.join("p");
        std::fs::write(&p, b"abc").unwrap();
        let dest = d.join("final");
        std::fs::write(&dest, b"").unwrap();
        let short = [
            PartFile {
                path: p.clone(),
                len: 3,
            },
            PartFile {
                path: p.clone(),
                len: 4,
            },
        ];
        assert!(matches!(
            assemble_blocking(&short, &dest, None),
            Err(AssembleError::PartShort(1))
        ));
        let missing = [PartFile {
            path: d.join("nope"),
            len: 1,
        }];
        assert!(matches!(
            assemble_blocking(&missing, &dest, None),
            Err(AssembleError::PartMissing(0))
        ));
        assert_eq!(std::fs::read(&dest).unwrap(), b"");
        assert!(!assembling_path(&dest).exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
