//! Storage faults: a full disk (the data directory is a small tmpfs mounted by the test:
//! the tests run as root in CI, where a failed mount fails the test; the info directory
//! stays on the normal filesystem), and a shortage of file descriptors for splice pipes.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted for the test, unmounted when dropped (before its TempDir is removed).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts it, or says why it could not.
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_gives_507_keeps_what_was_written_and_resumes() {
    let tmp = TempDir::new("fulldisk");
    let _mnt = match Tmpfs::mount(&tmp.join("data"), "4m") {
        Ok(mnt) => mnt,
        Err(why) => {
            // Only root can mount, so as root (as in CI) a failed mount is a failure,
            // not a reason to skip.
            // SAFETY: geteuid has no preconditions and cannot fail.
            let root = unsafe { libc::geteuid() } == 0;
            assert!(
                !root && std::env::var_os("CI").is_none(),
                "cannot mount the tmpfs the full-disk test needs (running as root): {why}"
            );
            eprintln!("SKIPPED full_disk test: not root, so no tmpfs can be mounted ({why})");
            return;
        }
    };
    for splice in [true, false] {
        let mut b =
            Daemon::builder(&tmp).info_dir(tmp.join(if splice { "info-a" } else { "info-b" }));
        if !splice {
            b = b.arg("--disable-splice");
        }
        let d = b.start();
        // An upload that cannot fit is refused at creation: fallocate finds no room.
        let r = d.post(&[("Upload-Length", &(64u64 << 20).to_string())]);
        assert_eq!(r.status, 507, "{r:?}");
        assert!(list_files(d.data_dir()).is_empty(), "nothing left behind");
        // Ballast: 1 MiB reserved by preallocation, deleted later to free room.
        let ballast = d.create(1 << 20);
        // A deferred upload is not preallocated: the disk fills in the middle of its body.
        let data = random_bytes(if splice { 61 } else { 62 }, 6 << 20);
        let id = d.create_deferred();
        let r = d.patch(&id, 0, &data);
        assert_eq!(r.status, 507, "{r:?}");
        let stored = d.offset(&id);
        assert!(stored > 0 && stored < data.len() as u64, "stored {stored}");
        assert_eq!(
            d.read_data(&id),
            &data[..stored as usize],
            "the bytes kept are the bytes sent"
        );
        // The record is whole and the daemon still serves.
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.info_path(&id)).unwrap()).unwrap();
        assert_eq!(info["offset"].as_u64(), Some(stored));
        assert_eq!(d.send(&Req::new("GET", "/health")).status, 200);
        // A small creation-with-upload whose whole body came with its head is not
        // preallocated (one write stores it): on the full disk that write fails, and it
        // is still a 507 at creation that leaves nothing behind.
        let before_data = list_files(d.data_dir()).len();
        let before_info = list_files(d.info_dir()).len();
        let small = random_bytes(63, 3000);
        let r = d.send(
            &Req::new("POST", "/files/")
                .tus()
                .h("Upload-Length", "3000")
                .h("Content-Type", "application/offset+octet-stream")
                .body(&small),
        );
        assert_eq!(r.status, 507, "{r:?}");
        assert_eq!(
            list_files(d.data_dir()).len(),
            before_data,
            "no data file left"
        );
        assert_eq!(
            list_files(d.info_dir()).len(),
            before_info,
            "no info record left"
        );
        // Free space, resume with a length that fits, and finish byte-exact.
        assert_eq!(d.delete(&ballast).status, 204);
        let total = stored + 1000;
        let rest = &data[stored as usize..total as usize];
        let r = d.send(&patch_req(&id, stored, rest).h("Upload-Length", &total.to_string()));
        assert_eq!(r.status, 204, "{r:?}");
        assert_eq!(d.read_data(&id), &data[..total as usize]);
        assert_eq!(d.delete(&id).status, 204);
    }
}

/// The descriptors open in process `pid`: (number, what it is).
fn open_fds(pid: u32) -> Vec<(i32, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.parse().ok()?;
            let to = std::fs::read_link(e.path()).ok()?;
            Some((n, to.display().to_string()))
        })
        .collect()
}

fn pipe_count(pid: u32) -> usize {
    open_fds(pid)
        .iter()
        .filter(|(_, to)| to.starts_with("pipe:"))
        .count()
}

/// Sets the soft `RLIMIT_NOFILE` of `pid`; returns the previous limits.
fn set_nofile(pid: u32, soft: u64) -> libc::rlimit {
    let mut old: libc::rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads the current ones into `old`.
    let r = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: both pointers are valid for the call.
    let r = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

/// No descriptor for a splice pipe (`EMFILE`) costs that one body its splice, nothing
/// more: it is stored byte for byte on the buffered path, splicing stays on for the core
/// (it used to be turned off until a restart), and the next body on the same connection
/// makes its pipe and splices.
#[test]
fn a_pipe_shortage_costs_only_that_body_its_splice() {
    let tmp = TempDir::new("nopipe");
    let d = Daemon::start(&tmp, &[]);
    let pid = d.pid();
    let data = random_bytes(81, 8 << 20);
    let half = data.len() / 2;
    let id = d.create(data.len() as u64);
    let mut c = d.conn();
    c.request(&Req::new("OPTIONS", "/files").tus())
        .assert_status(200, "OPTIONS");
    let pipes = pipe_count(pid);
    // Leave two free descriptor numbers below the limit: the PATCH's data file takes
    // one (and its record the other, for a moment), and a pipe needs two. The daemon's
    // helper threads may hold a descriptor for a moment (the startup scan): set the limit
    // again until the count holds still across it.
    let free_below = |limit: i32| {
        let used: Vec<i32> = open_fds(pid).iter().map(|(n, _)| *n).collect();
        (0..limit).filter(|n| !used.contains(n)).count()
    };
    let mut old = None;
    let settled = eventually(Duration::from_secs(5), || {
        let used: Vec<i32> = open_fds(pid).iter().map(|(n, _)| *n).collect();
        let free: Vec<i32> = (0..).filter(|n| !used.contains(n)).take(2).collect();
        let limit = free[1] + 1;
        let prev = set_nofile(pid, limit as u64);
        old.get_or_insert(prev);
        std::thread::sleep(Duration::from_millis(100));
        free_below(limit) == 2
    });
    assert!(settled, "the daemon's descriptors never held still");
    let old = old.unwrap();
    let r = c.request(&patch_req(&id, 0, &data[..half]));
    // SAFETY: `old` is valid for the call.
    let back = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    assert_eq!(back, 0, "restoring the limit");
    r.assert_status(204, "PATCH without a pipe");
    assert_eq!(pipe_count(pid), pipes, "no pipe could be made");
    assert!(
        !d.stderr_text().contains("splice is not available"),
        "splicing was turned off for the core: {}",
        d.stderr_text()
    );
    let r = c.request(&patch_req(&id, half as u64, &data[half..]));
    r.assert_status(204, "PATCH with descriptors to spare");
    assert_eq!(pipe_count(pid), pipes + 2, "the connection made its pipe");
    assert_eq!(d.read_data(&id), data);
    assert!(!d.stderr_text().contains("splice is not available"));
}
