//! Process death and shutdown: SIGKILL mid-upload and restart, SIGTERM with an upload
//! in flight.

use crate::harness::*;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn kill9_during_patch_then_resume_after_restart() {
    let tmp = TempDir::new("kill9");
    let mut d = Daemon::start(&tmp, &[]);
    const LEN: usize = 8 << 20;
    const SENT: usize = 3 << 20;
    let data = random_bytes(51, LEN);
    let id = d.create(LEN as u64);
    let mut c = d.conn();
    c.send_head(&patch_req(&id, 0, &data));
    for piece in data[..SENT].chunks(256 * 1024) {
        c.send_raw(piece).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    d.kill9();
    drop(c);

    d.restart();
    let h = d.head(&id);
    assert_eq!(h.status, 200, "HEAD after restart: {h:?}");
    assert_eq!(h.upload_length(), Some(LEN as u64));
    let off = h.upload_offset() as usize;
    assert!(
        off <= SENT,
        "offset {off} is more than the {SENT} bytes sent"
    );
    let on_disk = d.read_data(&id);
    assert!(
        on_disk.len() >= off,
        "data file has {} bytes, fewer than the offset {off}",
        on_disk.len()
    );
    assert_bytes_eq(&on_disk[..off], &data[..off], "bytes up to the offset");

    let p = d.patch(&id, off as u64, &data[off..]);
    assert_eq!(p.status, 204, "resume from {off}: {p:?}");
    assert_eq!(p.upload_offset(), LEN as u64);
    assert_bytes_eq(&d.read_data(&id), &data, "resumed after kill -9");
    let info = read_info(&d.info_path(&id));
    assert_eq!(info["offset"], LEN as u64, "{info}");
}

#[test]
fn sigterm_exits_zero_and_keeps_in_flight_bytes() {
    let tmp = TempDir::new("sigterm");
    let mut d = Daemon::start(&tmp, &["--shutdown-timeout", "2"]);
    const LEN: usize = 1 << 20;
    const SENT: usize = 200 * 1024;
    let data = random_bytes(61, LEN);
    let id = d.create(LEN as u64);
    let mut c = d.conn();
    c.send_head(&patch_req(&id, 0, &data));
    c.send_raw(&data[..SENT]).unwrap();
    thread::sleep(Duration::from_millis(300));

    let start = Instant::now();
    d.sigterm();
    let status = d
        .wait_exit(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("no exit within 6 s of SIGTERM:\n{}", d.stderr_text()));
    let took = start.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status:?}"
    );
    assert!(
        took < Duration::from_millis(3500),
        "SIGTERM took {took:?}, over the 2 s shutdown grace"
    );
    drop(c);

    d.restart();
    let h = d.head(&id);
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(
        h.upload_offset(),
        SENT as u64,
        "in-flight bytes kept over SIGTERM"
    );
    assert_bytes_eq(&d.read_data(&id), &data[..SENT], "stored prefix");
    let p = d.patch(&id, SENT as u64, &data[SENT..]);
    assert_eq!(p.status, 204, "{p:?}");
    assert_bytes_eq(&d.read_data(&id), &data, "resumed after SIGTERM");
}

#[test]
fn sigterm_when_idle_exits_promptly() {
    let tmp = TempDir::new("sigterm-idle");
    let mut d = Daemon::start(&tmp, &["--shutdown-timeout", "2"]);
    // An idle keep-alive connection must not hold the shutdown up to the grace period.
    let mut c = d.conn();
    let r = c.request(&Req::new("OPTIONS", "/files"));
    assert_eq!(r.status, 200);
    let start = Instant::now();
    d.sigterm();
    let status = d
        .wait_exit(Duration::from_secs(6))
        .expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "idle shutdown took {took:?}"
    );
}
