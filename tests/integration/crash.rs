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
    // Killed once the daemon has stored what it received (a buffered fill may hold back
    // less than FLUSH_BYTES, waiting for more), while the PATCH is still open.
    let floor = (SENT - 64 * 1024) as u64;
    let mut seen = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            seen = d.offset(&id);
            seen >= floor
        }),
        "the PATCH's bytes were not stored: offset {seen}"
    );
    d.kill9();
    drop(c);

    d.restart();
    let h = d.head(&id);
    assert_eq!(h.status, 200, "HEAD after restart: {h:?}");
    assert_eq!(h.upload_length(), Some(LEN as u64));
    let off = h.upload_offset() as usize;
    // Every byte in the page cache survives the kill, and the offset is the data file's
    // size (the record may lag behind it): nothing HEAD showed
    // before the kill is lost.
    assert!(
        off as u64 >= seen && off <= SENT,
        "offset {off} after kill -9: HEAD showed {seen} before it, {SENT} bytes were sent"
    );
    let on_disk = d.read_data(&id);
    assert_eq!(on_disk.len(), off, "the offset is the data file's size");
    assert_bytes_eq(&on_disk, &data[..off], "bytes up to the offset");

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

/// Fifty uploads in flight, each on its own connection with its body arriving in pieces,
/// when the daemon is killed with SIGKILL. After a restart on the same directories every
/// info record parses, every upload's HEAD offset is at most what its client sent and
/// the data file holds exactly those bytes, and every upload resumes from its HEAD
/// offset to a byte-exact end.
#[test]
fn kill9_during_50_concurrent_uploads_then_all_resume_splice() {
    kill9_during_50_uploads(&[]);
}

#[test]
fn kill9_during_50_concurrent_uploads_then_all_resume_buffered() {
    kill9_during_50_uploads(&["--disable-splice"]);
}

/// One upload in five sends its body chunked (so the buffered decoder is cut too).
fn kill9_during_50_uploads(extra: &[&str]) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    const UPLOADS: usize = 50;
    let tmp = TempDir::new("kill9-50");
    let mut d = Daemon::start(&tmp, extra);
    let lens: Vec<usize> = (0..UPLOADS).map(|i| (2 << 20) + 4096 * i + i).collect();
    let datas: Arc<Vec<Vec<u8>>> = Arc::new(
        lens.iter()
            .enumerate()
            .map(|(i, &n)| random_bytes(5000 + i as u64, n))
            .collect(),
    );
    let ids: Vec<String> = lens.iter().map(|&n| d.create(n as u64)).collect();
    let ready = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let port = d.port;
    let handles: Vec<_> = (0..UPLOADS)
        .map(|i| {
            let (datas, ready, killed, id) =
                (datas.clone(), ready.clone(), killed.clone(), ids[i].clone());
            thread::spawn(move || {
                let data = &datas[i];
                let mut c = Conn::connect(port);
                let mut sent = 0usize;
                let chunked_body = i % 5 == 4;
                let wire = if chunked_body {
                    c.send_head(
                        &patch_req(&id, 0, b"")
                            .h("Transfer-Encoding", "chunked")
                            .raw_framing(),
                    );
                    chunked(data, 32 * 1024)
                } else {
                    c.send_head(&patch_req(&id, 0, data));
                    data.clone()
                };
                // A first part at once (10 % to 60 % of the body, by upload)...
                let first = wire.len() * (10 + i % 6 * 10) / 100;
                if c.send_raw(&wire[..first]).is_ok() {
                    sent = first;
                }
                ready.fetch_add(1, Ordering::SeqCst);
                // ...then 16 KiB every 10 ms until the daemon is gone.
                while sent < wire.len() - 5 && !killed.load(Ordering::SeqCst) {
                    let end = (sent + 16 * 1024).min(wire.len() - 5);
                    if c.send_raw(&wire[sent..end]).is_err() {
                        break;
                    }
                    sent = end;
                    thread::sleep(Duration::from_millis(10));
                }
                // Wire bytes sent, as body bytes: for chunked, at most that many.
                sent
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(20), || ready.load(Ordering::SeqCst)
            == UPLOADS),
        "only {} uploads started",
        ready.load(Ordering::SeqCst)
    );
    thread::sleep(Duration::from_millis(300));
    d.kill9();
    killed.store(true, Ordering::SeqCst);
    let sent: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    d.restart();
    // No torn record: every .info parses (and has rustus's field order).
    let infos: Vec<_> = list_files(d.info_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "info"))
        .collect();
    assert_eq!(infos.len(), UPLOADS, "info records: {infos:?}");
    for p in &infos {
        let v = read_info(p);
        assert!(v["offset"].as_u64().is_some(), "{p:?}: {v}");
    }
    let mut offsets = Vec::new();
    let mut in_flight = 0;
    for (i, id) in ids.iter().enumerate() {
        let h = d.head(id);
        assert_eq!(h.status, 200, "HEAD {id} after kill -9: {h:?}");
        assert_eq!(h.upload_length(), Some(lens[i] as u64));
        let off = h.upload_offset() as usize;
        assert!(
            off <= sent[i],
            "upload {i}: offset {off} is past the {} bytes its client sent",
            sent[i]
        );
        let stored = d.read_data(id);
        assert_eq!(
            stored.len(),
            off,
            "upload {i}: data file size vs HEAD offset"
        );
        assert_bytes_eq(&stored, &datas[i][..off], &format!("upload {i} prefix"));
        if off > 0 && off < lens[i] {
            in_flight += 1;
        }
        offsets.push(off);
    }
    assert!(
        in_flight >= UPLOADS * 9 / 10,
        "only {in_flight} of {UPLOADS} uploads were caught mid-body: {offsets:?}"
    );

    // Every upload resumes from its HEAD offset, 50 at once.
    let port = d.port;
    let resumed: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (datas, id, off) = (datas.clone(), id.clone(), offsets[i]);
            thread::spawn(move || {
                let mut c = Conn::connect(port);
                let r = c.request(&patch_req(&id, off as u64, &datas[i][off..]));
                (r.status, r.header("Upload-Offset").map(str::to_string))
            })
        })
        .collect();
    for (i, h) in resumed.into_iter().enumerate() {
        let (status, off) = h.join().unwrap();
        assert_eq!(status, 204, "resume of upload {i}");
        assert_eq!(off, Some(lens[i].to_string()), "upload {i}");
    }
    for (i, id) in ids.iter().enumerate() {
        assert_bytes_eq(
            &d.read_data(id),
            &datas[i],
            &format!("upload {i} completed"),
        );
        let info = read_info(&d.info_path(id));
        assert_eq!(info["offset"], lens[i] as u64, "upload {i}: {info}");
    }
}
