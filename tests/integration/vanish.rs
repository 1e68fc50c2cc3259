//! Clients that vanish or stall in the middle of a PATCH body: a FIN (half close), a
//! reset (SO_LINGER 0, then close), and a client that sends half a body and then nothing.
//! Each on the splice path and the buffered path (and chunked), and each checked for the
//! three things the failure model promises: the bytes received are kept (HEAD offset =
//! the data file's size, the file is the prefix sent), the upload's lock is released
//! within a bound (a resume at the HEAD offset succeeds), and the upload then completes
//! byte for byte.

use crate::harness::*;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

/// How long after the client vanished a resume may still be refused (423 while the old
/// request winds down, or 409 while its last bytes land). Measured here: well under
/// 100 ms; the bound leaves room for a loaded 2-core machine.
const RESUME_BOUND: Duration = Duration::from_secs(2);

/// How the client goes away.
#[derive(Clone, Copy, Debug)]
enum Vanish {
    /// `shutdown(SHUT_WR)`: the server reads EOF.
    Fin,
    /// SO_LINGER {on, 0} then close: the kernel sends RST.
    Rst,
}

/// Sets SO_LINGER to {on, 0 s}, so that closing the socket resets the connection.
pub fn set_linger_zero(s: &std::net::TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a valid, live `linger`;
    // the fd is owned by `s`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        std::io::Error::last_os_error()
    );
}

/// Polls HEAD until the offset holds still for 200 ms (the cut request has ended and
/// written what it received); returns it.
fn settled_offset(d: &Daemon, id: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = d.offset(id);
    loop {
        thread::sleep(Duration::from_millis(200));
        let now = d.offset(id);
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// Resumes `id` from its HEAD offset until a PATCH is accepted; a 423 (old request still
/// holding the lock) or 409 (its last bytes landed after our HEAD) is retried. Returns the
/// offset resumed from and how long after `since` the successful PATCH was answered.
fn resume(d: &Daemon, id: &str, data: &[u8], since: Instant) -> (u64, Duration) {
    let mut refusals = Vec::new();
    loop {
        let off = d.offset(id);
        let r = d.patch(id, off, &data[off as usize..]);
        match r.status {
            204 => {
                assert_eq!(r.upload_offset(), data.len() as u64, "{r:?}");
                let took = since.elapsed();
                if !refusals.is_empty() {
                    eprintln!("note: resume of {id} refused first with {refusals:?}");
                }
                return (off, took);
            }
            423 | 409 if since.elapsed() < RESUME_BOUND * 2 => {
                refusals.push(r.status);
                thread::sleep(Duration::from_millis(20));
            }
            _ => panic!(
                "resume at {off}, {:?} after the client left: {r:?} (earlier: {refusals:?})",
                since.elapsed()
            ),
        }
    }
}

/// One PATCH cut by `how` after `sent` bytes of a `len`-byte body; checks the stored
/// prefix, the resume bound, and the completed file. `chunked` sends the body chunked.
/// With `settle`, the stored state is checked before the resume (after HEAD stops
/// moving); without, the resume starts at once, which measures how long the lock is held.
fn cut_and_resume(
    d: &Daemon,
    seed: u64,
    len: usize,
    sent: usize,
    how: Vanish,
    chunked_body: bool,
    settle: bool,
) {
    let data = random_bytes(seed, len);
    let id = d.create(len as u64);
    let mut c = d.conn();
    if chunked_body {
        c.send_head(
            &patch_req(&id, 0, b"")
                .h("Transfer-Encoding", "chunked")
                .raw_framing(),
        );
        let wire = chunked(&data[..sent], 16 * 1024);
        c.send_raw(&wire[..wire.len() - 5]).unwrap();
    } else {
        c.send_head(&patch_req(&id, 0, &data));
        for piece in data[..sent].chunks(64 * 1024) {
            c.send_raw(piece).unwrap();
        }
    }
    // Give the server the bytes before the client goes: what is asserted below is that
    // what it received is kept, not how fast loopback is.
    thread::sleep(Duration::from_millis(300));
    match how {
        Vanish::Fin => c.shutdown_write(),
        Vanish::Rst => set_linger_zero(&c.stream),
    }
    let left = Instant::now();
    drop(c);

    let what = format!("{how:?} after {sent} of {len} bytes (chunked {chunked_body})");
    if settle {
        let off = settled_offset(d, &id) as usize;
        match how {
            Vanish::Fin => assert_eq!(off, sent, "{what}: HEAD offset"),
            Vanish::Rst => assert!(off <= sent, "{what}: offset {off} > bytes sent"),
        }
        let stored = d.read_data(&id);
        assert_eq!(stored.len(), off, "{what}: data file size vs HEAD offset");
        assert_bytes_eq(&stored, &data[..off], &format!("{what}: stored prefix"));
        let info = read_info(&d.info_path(&id));
        assert_eq!(
            info["offset"], off as u64,
            "{what}: info record after the cut"
        );
        let p = d.patch(&id, off as u64, &data[off..]);
        assert_eq!(p.status, 204, "{what}: resume after settling: {p:?}");
        assert_bytes_eq(
            &d.read_data(&id),
            &data,
            &format!("{what}: completed upload"),
        );
        return;
    }
    // Resume at once: how long the upload stays locked (or its offset moving) after the
    // client left is what is measured.
    let (from, took) = resume(d, &id, &data, left);
    let from = from as usize;
    eprintln!("{what}: kept {from} bytes, resume accepted {took:?} after the client left");
    match how {
        // A FIN loses nothing: every byte sent was received.
        Vanish::Fin => assert_eq!(from, sent, "{what}: resumed from"),
        // A reset may drop what the kernel had not handed to the server yet.
        Vanish::Rst => assert!(from <= sent, "{what}: resumed from {from} > bytes sent"),
    }
    assert!(
        took < RESUME_BOUND,
        "{what}: the resume was accepted only {took:?} after the client left"
    );
    assert_bytes_eq(
        &d.read_data(&id),
        &data,
        &format!("{what}: completed upload"),
    );
    let info = read_info(&d.info_path(&id));
    assert_eq!(info["offset"], len as u64, "{what}: {info}");
}

fn vanish_all(extra: &[&str]) {
    let tmp = TempDir::new("vanish");
    let d = Daemon::start(&tmp, extra);
    let mut seed = 700;
    for settle in [false, true] {
        for how in [Vanish::Fin, Vanish::Rst] {
            for chunked_body in [false, true] {
                seed += 1;
                cut_and_resume(&d, seed, 4 << 20, (1 << 20) + 7, how, chunked_body, settle);
            }
        }
    }
}

#[test]
fn fin_or_rst_mid_body_keeps_bytes_and_releases_the_lock_splice() {
    vanish_all(&[]);
}

#[test]
fn fin_or_rst_mid_body_keeps_bytes_and_releases_the_lock_buffered() {
    vanish_all(&["--disable-splice"]);
}

/// The client sends half a body and then nothing, keeping the connection open: the
/// server gives up after `--body-timeout`, keeps the bytes, answers 408 and closes, and
/// the upload can be resumed at once.
fn stall(extra: &[&str], chunked_body: bool) {
    let tmp = TempDir::new("stall");
    let mut args = vec!["--body-timeout", "1"];
    args.extend_from_slice(extra);
    let d = Daemon::start(&tmp, &args);
    const LEN: usize = 2 << 20;
    const SENT: usize = (512 << 10) + 3;
    let data = random_bytes(777 + chunked_body as u64, LEN);
    let id = d.create(LEN as u64);
    let mut c = d.conn();
    if chunked_body {
        c.send_head(
            &patch_req(&id, 0, b"")
                .h("Transfer-Encoding", "chunked")
                .raw_framing(),
        );
        let wire = chunked(&data[..SENT], 32 * 1024);
        c.send_raw(&wire[..wire.len() - 5]).unwrap();
    } else {
        c.send_head(&patch_req(&id, 0, &data));
        c.send_raw(&data[..SENT]).unwrap();
    }
    let stalled = Instant::now();
    // The answer (408, with the offset reached and `Connection: close`) and the close
    // come after about one body timeout. The body's read is shut with SHUT_RD only, so
    // the answer always reaches the client.
    let r = c
        .read_response()
        .unwrap_or_else(|e| panic!("no answer to the stalled PATCH: {e}"));
    let answered = stalled.elapsed();
    r.assert_status(408, "stalled PATCH");
    assert_eq!(r.upload_offset(), SENT as u64, "408's Upload-Offset: {r:?}");
    assert_eq!(
        r.header("Connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "408 closes the connection: {r:?}"
    );
    assert!(
        answered >= Duration::from_millis(800) && answered < Duration::from_secs(4),
        "408 after {answered:?}, for a 1 s body timeout"
    );
    let closed = match c.wait_closed(Duration::from_secs(10)) {
        CloseOutcome::Closed { .. } => stalled.elapsed(),
        CloseOutcome::StillOpen { .. } => panic!("stalled connection still open after 10 s"),
    };
    eprintln!(
        "stall (chunked {chunked_body}, {extra:?}): answered after {answered:?}, closed after {closed:?}"
    );
    assert!(
        closed >= Duration::from_millis(800),
        "cut after {closed:?}, before the 1 s body timeout"
    );
    assert!(
        closed < Duration::from_secs(4),
        "the server took {closed:?} to give up on a 1 s body timeout"
    );
    // The 408 is sent once the received bytes are written and the record saved: the
    // state is final as soon as the connection is closed.
    let off = d.offset(&id) as usize;
    assert_eq!(off, SENT, "bytes received before the stall are kept");
    assert_bytes_eq(&d.read_data(&id), &data[..SENT], "stored prefix");
    let info = read_info(&d.info_path(&id));
    assert_eq!(info["offset"], SENT as u64, "info record after the stall");
    let (_, took) = resume(&d, &id, &data, stalled + closed);
    eprintln!("stall: resumed {took:?} after the server closed");
    assert!(
        took < RESUME_BOUND,
        "resume accepted only {took:?} after the close"
    );
    assert_bytes_eq(&d.read_data(&id), &data, "completed after a stall");
    drop(c);
}

#[test]
fn stalled_body_gives_up_after_body_timeout_splice() {
    stall(&[], false);
}

#[test]
fn stalled_body_gives_up_after_body_timeout_buffered() {
    stall(&["--disable-splice"], false);
}

#[test]
fn stalled_chunked_body_gives_up_after_body_timeout() {
    stall(&[], true);
}

/// A creation-with-upload POST whose client resets mid-body: the upload exists, holds
/// what was received, and is resumable.
#[test]
fn rst_during_creation_with_upload_keeps_the_upload() {
    let tmp = TempDir::new("vanish-post");
    let d = Daemon::start(&tmp, &[]);
    const LEN: usize = 2 << 20;
    const SENT: usize = 700 * 1024;
    let data = random_bytes(790, LEN);
    let mut c = d.conn();
    c.send_head(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", &LEN.to_string())
            .h(OCTET.0, OCTET.1)
            .h("Content-Length", &LEN.to_string())
            .raw_framing(),
    );
    c.send_raw(&data[..SENT]).unwrap();
    thread::sleep(Duration::from_millis(300));
    set_linger_zero(&c.stream);
    let left = Instant::now();
    drop(c);
    // The client never saw a Location: find the upload on disk.
    let mut infos = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            infos = list_files(d.info_dir())
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "info"))
                .collect();
            infos.len() == 1
        }),
        "one info record after the reset POST; found {infos:?}"
    );
    let info = read_info(&infos[0]);
    let id = info["id"].as_str().expect("id").to_string();
    let off = settled_offset(&d, &id) as usize;
    assert!(off <= SENT, "offset {off} > {SENT} sent");
    assert_bytes_eq(&d.read_data(&id), &data[..off], "stored prefix of the POST");
    let (_, took) = resume(&d, &id, &data, left);
    assert!(took < RESUME_BOUND, "resume after {took:?}");
    assert_bytes_eq(&d.read_data(&id), &data, "completed");
}
