//! Storage faults: a full disk and what a declared length reserves (the data directory is
//! a small tmpfs mounted by the test: the tests run as root in CI, where a failed mount
//! fails the test; the info directory stays on the normal filesystem), the order of the
//! durability steps with `--force-fsync`, and a shortage of file descriptors for splice
//! pipes.

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

/// Mounts a tmpfs of `size` at `at` for the test `what`, or says why not and gives
/// `None` (the caller skips). Only root can mount, so as root (as in CI) a failed mount
/// is a failure, not a reason to skip.
fn tmpfs_or_skip(at: &Path, size: &str, what: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(at, size) {
        Ok(mnt) => Some(mnt),
        Err(why) => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let root = unsafe { libc::geteuid() } == 0;
            assert!(
                !root && std::env::var_os("CI").is_none(),
                "cannot mount the tmpfs the {what} test needs (running as root): {why}"
            );
            eprintln!("SKIPPED {what} test: not root, so no tmpfs can be mounted ({why})");
            None
        }
    }
}

/// Bytes in use on the filesystem holding `at`.
fn used_bytes(at: &Path) -> u64 {
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: all-zero is a valid `statvfs` (integers only).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` is valid for writes.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    (st.f_blocks - st.f_bfree) as u64 * st.f_frsize as u64
}

/// A daemon with its data on the tmpfs under `tmp` (its records beside, one directory
/// per data path), splicing bodies or not.
fn on_data_path(tmp: &TempDir, splice: bool) -> Daemon {
    let info = tmp.join(if splice { "info-a" } else { "info-b" });
    let b = Daemon::builder(tmp).info_dir(info);
    if splice {
        b.start()
    } else {
        b.arg("--disable-splice").start()
    }
}

/// A PATCH announcing `len` bytes at offset 0 with `Expect: 100-continue` gets 507 and
/// no `100 Continue` (the body is never sent).
fn assert_refused_before_the_body(d: &Daemon, id: &str, len: u64) {
    let mut c = d.conn();
    c.send_head(
        &patch_req(id, 0, &[])
            .h("Content-Length", &len.to_string())
            .h("Expect", "100-continue"),
    );
    let r = c
        .read_next_within(Duration::from_secs(10))
        .expect("an answer without the body");
    assert_eq!(r.status, 507, "refused before the body: {r:?}");
}

#[test]
fn full_disk_gives_507_keeps_what_was_written_and_resumes() {
    let tmp = TempDir::new("fulldisk");
    let Some(_mnt) = tmpfs_or_skip(&tmp.join("data"), "4m", "full-disk") else {
        return;
    };
    for splice in [true, false] {
        let d = on_data_path(&tmp, splice);
        let data = random_bytes(if splice { 61 } else { 62 }, 6 << 20);
        let id = d.create_deferred();
        // A body that cannot fit is refused before a byte of it is read (no 100
        // Continue): 507, nothing stored, the upload stays.
        assert_refused_before_the_body(&d, &id, data.len() as u64);
        assert_eq!(d.offset(&id), 0);
        assert_eq!(used_bytes(d.data_dir()), 0, "nothing held");
        // Ballast: 1 MiB stored, deleted later to free room.
        let ballast = d.create(1 << 20);
        d.patch(&ballast, 0, &random_bytes(60, 1 << 20))
            .assert_status(204, "ballast");
        // A chunked body's length is unknown, so its reserved window is best effort:
        // the disk fills in the middle of the body (4 MiB, about 3 fit: the rest is
        // within what the daemon drains after its answer, so the answer is read).
        let sent = 4 << 20;
        let r = d.send(
            &patch_req(&id, 0, &[])
                .h("Transfer-Encoding", "chunked")
                .raw_framing()
                .body(&chunked(&data[..sent], 64 << 10)),
        );
        assert_eq!(r.status, 507, "{r:?}");
        let stored = d.offset(&id);
        assert!(stored > 0 && stored < sent as u64, "stored {stored}");
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

/// A declared `Upload-Length` reserves nothing (issue 12 §2: ten POSTs declaring 32 MiB on
/// a 64 MiB filesystem got one 201 and nine 507s): all ten are created and hold (nearly)
/// nothing, a real 16 MiB upload fits beside them, a Content-Length body is reserved and
/// refused before it is read when it cannot fit, and room reserved for a body and not
/// filled (a chunked body's window) is given back when the request ends.
#[test]
fn a_declared_length_reserves_nothing() {
    let tmp = TempDir::new("reserve");
    let Some(_mnt) = tmpfs_or_skip(&tmp.join("data"), "64m", "reservation") else {
        return;
    };
    for splice in [true, false] {
        let d = on_data_path(&tmp, splice);
        let declared: Vec<String> = (0..10).map(|_| d.create(32 << 20)).collect();
        let held = used_bytes(d.data_dir());
        assert!(held < 2 << 20, "ten declared uploads hold {held} bytes");
        // A real upload fits, and holds its bytes, not more.
        let data = random_bytes(if splice { 71 } else { 72 }, 16 << 20);
        let real = d.create(data.len() as u64);
        d.patch(&real, 0, &data).assert_status(204, "16 MiB PATCH");
        assert_eq!(d.read_data(&real), data);
        let held = used_bytes(d.data_dir());
        assert!(
            held < (16 << 20) + (2 << 20),
            "after the 16 MiB upload: {held} bytes"
        );
        // A body that cannot fit (60 MiB, with 48 MiB free) is refused before it is read
        // (no 100 Continue), with nothing stored and nothing held.
        let wide = d.create(60 << 20);
        assert_refused_before_the_body(&d, &wide, 60 << 20);
        assert_eq!(d.offset(&wide), 0);
        let after = used_bytes(d.data_dir());
        assert!(after <= held + (64 << 10), "held {held}, then {after}");
        // A chunked body gets a window of room ahead of it, given back when it ends.
        let small = random_bytes(73, 100_000);
        let r = d.send(
            &patch_req(&wide, 0, &[])
                .h("Transfer-Encoding", "chunked")
                .raw_framing()
                .body(&chunked(&small, 16 << 10)),
        );
        r.assert_status(204, "chunked PATCH");
        assert_eq!(d.read_data(&wide), small);
        let after = used_bytes(d.data_dir());
        assert!(
            after <= held + (256 << 10),
            "a 100 kB chunked body left {} bytes held",
            after - held
        );
        for id in declared.iter().chain([&real, &wide]) {
            assert_eq!(d.delete(id).status, 204);
        }
        assert!(used_bytes(d.data_dir()) < 1 << 20);
    }
}

/// The durability steps the daemon logged, in order (test builds, with
/// `TUSRING_FAULT_INJECT=trace_durability=1`).
fn durability_steps(d: &Daemon) -> Vec<String> {
    d.stderr_text()
        .lines()
        .filter_map(|l| Some(l.split_once(" durability: ")?.1.trim().to_string()))
        .collect()
}

/// Waits for the first `step` logged at or after index `from`; its index.
fn step_at(d: &Daemon, step: &str, from: usize) -> usize {
    let mut at = None;
    let found = eventually(Duration::from_secs(5), || {
        at = durability_steps(d)
            .iter()
            .skip(from)
            .position(|s| s == step)
            .map(|i| i + from);
        at.is_some()
    });
    assert!(found, "{step:?} never logged: {:?}", durability_steps(d));
    at.unwrap()
}

/// With `--force-fsync`, every directory on a new data file's way (its `--dir-structure`
/// levels and the data directory) is fsynced before its record is written, for each way
/// a data file comes to be (a creation, a creation whose whole body came with its head, a
/// final renamed into place after its assembly); and a DELETE's record removal is made
/// durable before the data is removed. So a record can never outlive its data file after
/// a power loss. (This shows the order of the calls; whether the disk honours an fsync
/// would take a power cut.)
#[test]
fn force_fsync_makes_the_data_file_durable_before_its_record() {
    let tmp = TempDir::new("fsync-order");
    let d = Daemon::builder(&tmp)
        .info_dir(tmp.join("info"))
        .args(&["--force-fsync", "--dir-structure", "{year}/{month}/{day}"])
        .env("TUSRING_FAULT_INJECT", "trace_durability=1")
        .start();
    let data_dir = d.data_dir().to_path_buf();
    let mut since = 0;
    let mut check = |id: &str, what: &str| {
        let record = format!("record {id} renamed into place");
        let at = step_at(&d, &record, since);
        let file = find_file(&data_dir, id).expect("data file");
        let steps = durability_steps(&d);
        let dirs: Vec<&Path> = file
            .ancestors()
            .skip(1)
            .take_while(|p| p.starts_with(&data_dir))
            .collect();
        assert_eq!(dirs.len(), 4, "{what}: {file:?}");
        for dir in dirs {
            let want = format!("fsync dir {}", dir.display());
            assert!(
                steps[since..at].contains(&want),
                "{what}: {want:?} is not between the previous record and {record:?}: {:?}",
                &steps[since..=at]
            );
        }
        since = at + 1;
    };
    let plain = d.create(10);
    check(&plain, "creation");
    let mut parts = Vec::new();
    for body in [&b"abc"[..], b"defg"] {
        let r = d.send(
            &Req::new("POST", "/files")
                .tus()
                .h("Upload-Length", &body.len().to_string())
                .h("Upload-Concat", "partial")
                .h("Content-Type", "application/offset+octet-stream")
                .body(body),
        );
        r.assert_status(201, "creation-with-upload");
        let id = upload_id(&r);
        check(&id, "creation-with-upload");
        parts.push(format!("/files/{id}"));
    }
    let r = d.post(&[("Upload-Concat", &format!("final;{}", parts.join(" ")))]);
    r.assert_status(201, "final");
    let fin = upload_id(&r);
    check(&fin, "assembled final");
    assert_eq!(d.read_data(&fin), b"abcdefg");

    d.delete(&plain).assert_status(204, "DELETE");
    let removed = step_at(&d, &format!("record {plain} removed"), 0);
    let info_synced = step_at(
        &d,
        &format!("fsync dir {}", d.info_dir().display()),
        removed,
    );
    let data_gone = step_at(&d, &format!("data {plain} removed"), 0);
    assert!(
        removed < info_synced && info_synced < data_gone,
        "record removed at {removed}, its directory fsynced at {info_synced}, data removed at {data_gone}"
    );
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
    let back =
        unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
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
