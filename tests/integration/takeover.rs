//! Lock takeover, newest request wins: an old PATCH held open mid-body (its client gone
//! quiet, the server not knowing) is made to stop by a new PATCH or DELETE for the same
//! upload, keeping the bytes it received; a HEAD never interrupts it.
//!
//! Every scenario runs on both data paths (splice, `--disable-splice`) with two cores, and
//! the stale-offset scenario repeats until the two requests have landed on different
//! cores at least once (seen in the per-core connection gauge, read when the two are the
//! only connections open).

use crate::harness::*;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

const LEN: usize = 1 << 20;
/// Bytes the old request sends before going quiet.
const SENT: usize = 300 * 1024 + 7;
/// The takeover bound (`storage::locks::TAKEOVER_WAIT`).
const TAKEOVER_WAIT: Duration = Duration::from_secs(1);

/// Daemons with two cores (the harness's `--workers 2`) on each data path.
fn daemons(tag: &str, f: impl Fn(&Daemon, &str)) {
    for (path, args) in [("splice", &[][..]), ("buffered", &["--disable-splice"][..])] {
        let tmp = TempDir::new(&format!("{tag}-{path}"));
        let d = Daemon::start(&tmp, args);
        f(&d, path);
    }
}

/// Starts a PATCH of `data` at 0 and sends `SENT` bytes of its body, keeping the
/// connection open; returns once the server has stored most of them. (A receive buffer
/// holding less than `FLUSH_BYTES` waits for more before it is written, so HEAD may stay
/// a little below `SENT` while the old request lives; every byte is written when it
/// stops.)
fn hold(d: &Daemon, id: &str, data: &[u8]) -> Conn {
    let mut c = d.conn();
    c.send_head(&patch_req(id, 0, data));
    c.send_raw(&data[..SENT]).unwrap();
    let floor = (SENT - 64 * 1024) as u64;
    assert!(
        eventually(Duration::from_secs(10), || d.offset(id) >= floor),
        "the held PATCH's bytes are stored"
    );
    c
}

/// The old request's answer, if it gets one: 400 saying it was taken over (the server
/// sends it best effort, with `Connection: close`), then the connection closes.
fn assert_old_was_stopped(old: &mut Conn, what: &str) {
    match old.read_next_within(Duration::from_secs(5)) {
        Ok(r) => {
            assert_eq!(r.status, 400, "{what}: old request's answer {r:?}");
            assert!(
                String::from_utf8_lossy(&r.body).contains("took it over"),
                "{what}: {r:?}"
            );
            assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
            assert_eq!(r.upload_offset(), SENT as u64, "{what}: {r:?}");
        }
        Err(e) => panic!("{what}: the old request got no answer: {e}"),
    }
    old.assert_closed(Duration::from_secs(5), what);
}

/// Open connections per core, read from `/metrics` over `c` (kept alive).
fn per_core_connections(c: &mut Conn) -> Vec<u64> {
    let r = c.request(&Req::new("GET", "/metrics"));
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with("tusring_connections{core="))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn head_never_interrupts_a_live_patch() {
    daemons("to-head", |d, path| {
        let data = random_bytes(801, LEN);
        let id = d.create(LEN as u64);
        let mut old = hold(d, &id, &data);
        let first = d.offset(&id);
        assert!(first <= SENT as u64, "{path}: HEAD {first}");
        for _ in 0..3 {
            let h = d.head(&id);
            assert_eq!(h.status, 200, "{path}: {h:?}");
            assert_eq!(h.upload_offset(), first, "{path}: HEAD during the PATCH");
            thread::sleep(Duration::from_millis(100));
        }
        // The old request was not cut: it takes the rest of its body and completes.
        old.send_raw(&data[SENT..]).unwrap();
        let r = old.read_response().expect("the old PATCH completes");
        assert_eq!(r.status, 204, "{path}: {r:?}");
        assert_eq!(r.upload_offset(), LEN as u64);
        assert_bytes_eq(&d.read_data(&id), &data, path);
    });
}

#[test]
fn new_patch_with_the_stale_offset_stops_the_old_one_and_gets_409() {
    daemons("to-stale", |d, path| {
        let (mut cross, mut same) = (0, 0);
        for round in 0..12u64 {
            let data = random_bytes(810 + round, LEN);
            let id = d.create(LEN as u64);
            let mut old = hold(d, &id, &data);
            let mut new = d.conn();
            // The cores of `old` and `new`: the gauge is read until these two are the
            // only connections open (the HEADs `hold` made are closed by their client
            // first and may linger a moment in the server), so a lingering HEAD on the
            // other core is not taken for `old` or `new`.
            let mut cores = per_core_connections(&mut new);
            assert!(
                eventually(Duration::from_secs(5), || {
                    cores = per_core_connections(&mut new);
                    cores.iter().sum::<u64>() == 2
                }),
                "{path} round {round}: connections per core {cores:?}, not just old and new"
            );
            if cores == [1, 1] {
                cross += 1;
            } else {
                same += 1;
            }
            // The client resumes with the offset it started at: stale.
            let started = Instant::now();
            let r = new.request(&patch_req(&id, 0, &data));
            let took = started.elapsed();
            eprintln!(
                "{path} round {round}: cores {cores:?}, answer {} after {took:?}",
                r.status
            );
            // 409, not 423: the old request stopped within the takeover bound.
            assert_eq!(r.status, 409, "{path} round {round}: {r:?}");
            assert!(took < TAKEOVER_WAIT, "{path}: took {took:?}");
            assert_old_was_stopped(&mut old, path);
            // The true offset is what the old request stored; resuming there completes.
            assert_eq!(
                d.offset(&id),
                SENT as u64,
                "{path}: HEAD after the takeover"
            );
            // (The 409 left its body unread, so that connection was closed.)
            let r = d.patch(&id, SENT as u64, &data[SENT..]);
            assert_eq!(r.status, 204, "{path}: {r:?}");
            assert_eq!(r.upload_offset(), LEN as u64);
            assert_bytes_eq(&d.read_data(&id), &data, path);
            if cross >= 1 && same >= 1 && round >= 2 {
                break;
            }
        }
        assert!(
            cross >= 1,
            "{path}: the two requests never landed on different cores"
        );
    });
}

#[test]
fn new_patch_with_the_true_offset_takes_over_and_completes() {
    daemons("to-true", |d, path| {
        let data = random_bytes(820, LEN);
        let id = d.create(LEN as u64);
        let mut old = hold(d, &id, &data);
        let started = Instant::now();
        let r = d.patch(&id, SENT as u64, &data[SENT..]);
        assert_eq!(r.status, 204, "{path}: {r:?}");
        assert_eq!(r.upload_offset(), LEN as u64);
        eprintln!(
            "{path}: takeover and the rest of the body in {:?}",
            started.elapsed()
        );
        assert_old_was_stopped(&mut old, path);
        assert_eq!(d.offset(&id), LEN as u64);
        assert_bytes_eq(&d.read_data(&id), &data, path);
        let m = d.send(&Req::new("GET", "/metrics"));
        assert!(
            String::from_utf8_lossy(&m.body).contains("tusring_lock_takeovers_total 1"),
            "{path}: takeover counted"
        );
    });
}

#[test]
fn delete_takes_over() {
    daemons("to-delete", |d, path| {
        let data = random_bytes(830, LEN);
        let id = d.create(LEN as u64);
        let mut old = hold(d, &id, &data);
        let data_file = d.data_path(&id);
        assert!(data_file.exists());
        let r = d.delete(&id);
        assert_eq!(r.status, 204, "{path}: {r:?}");
        assert_old_was_stopped(&mut old, path);
        assert!(!data_file.exists(), "{path}: data file removed");
        assert!(!d.info_path(&id).exists(), "{path}: info record removed");
        assert_eq!(d.head(&id).status, 404);
    });
}

/// A holder that cannot be interrupted (a DELETE waiting for its pre-terminate hook)
/// keeps the upload: a PATCH waits for the takeover bound, then gets 423 and changes
/// nothing.
#[test]
fn a_holder_that_does_not_let_go_gives_423_after_the_bound() {
    let tmp = TempDir::new("to-423");
    let hook = tmp.join("hook.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\n[ \"$1\" = pre-terminate ] && sleep 3\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-terminate",
        ],
    );
    let data = random_bytes(840, 1000);
    let id = d.create(1000);
    let port = d.port;
    let del_id = id.clone();
    let deleter = thread::spawn(move || {
        let mut c = Conn::connect(port);
        c.request(&Req::new("DELETE", &format!("/files/{del_id}")).tus())
    });
    // Let the DELETE reach its hook (it holds the lock while it waits).
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let r = d.patch(&id, 0, &data);
    let took = started.elapsed();
    assert_eq!(r.status, 423, "{r:?}");
    assert!(took >= TAKEOVER_WAIT, "423 only after the bound: {took:?}");
    let r = deleter.join().unwrap();
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(d.head(&id).status, 404);
}

/// A chunked body (always the buffered path) is taken over the same way: the chunks
/// received are kept, the new request works from the true offset.
#[test]
fn a_chunked_patch_is_taken_over_too() {
    let tmp = TempDir::new("to-chunked");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(850, LEN);
    let id = d.create(LEN as u64);
    let mut old = d.conn();
    old.send_head(
        &patch_req(&id, 0, b"")
            .h("Transfer-Encoding", "chunked")
            .raw_framing(),
    );
    let wire = chunked(&data[..SENT], 1000);
    // Every chunk but the terminating one: the body is not finished.
    old.send_raw(&wire[..wire.len() - 5]).unwrap();
    let floor = (SENT - 64 * 1024) as u64;
    assert!(eventually(Duration::from_secs(10), || d.offset(&id) >= floor));
    let started = Instant::now();
    let r = d.patch(&id, 0, &data);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(started.elapsed() < TAKEOVER_WAIT);
    assert_old_was_stopped(&mut old, "chunked");
    assert_eq!(d.offset(&id), SENT as u64);
    let r = d.patch(&id, SENT as u64, &data[SENT..]);
    assert_eq!(r.status, 204, "{r:?}");
    assert_bytes_eq(&d.read_data(&id), &data, "chunked takeover");
}
