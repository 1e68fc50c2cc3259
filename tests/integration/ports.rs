//! One daemon per address: a second tusring on a port already served exits at once
//! naming the address (and the first keeps every upload), a restart right after
//! `kill -9` resets no client, and `--workers N` still spreads connections over cores.

use crate::harness::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A second daemon, as the same user, with its own data directory, on the port the first
/// serves: it must exit 1 within a second or two with one line naming the address, and
/// the kernel must not split connections between the two: every upload of the first
/// stays reachable on new connections, while the second is starting and after.
#[test]
fn second_daemon_on_a_served_port_exits_naming_the_address() {
    let tmp = TempDir::new("ports-first");
    let port = free_port();
    let first = Daemon::builder(&tmp).port(Some(port)).start();
    let ids: Vec<String> = (0..20).map(|_| first.create(1000)).collect();

    let tmp2 = TempDir::new("ports-second");
    let started = Instant::now();
    let mut second = Command::new(binary())
        .args(Daemon::builder(&tmp2).port(Some(port)).command_line())
        .current_dir(tmp2.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second daemon");
    let stderr = second.stderr.take().unwrap();
    let err_text = Arc::new(Mutex::new(String::new()));
    let drain = {
        let buf = err_text.clone();
        thread::spawn(move || drain_lines(stderr, buf, None))
    };
    let status = wait_timeout(&mut second, Duration::from_secs(3));
    let took = started.elapsed();
    // Whether or not it exited: the first daemon must answer for every upload.
    let heads = probe_heads(port, &ids, 4, Duration::from_millis(500));
    if status.is_none() {
        let _ = second.kill();
        let _ = second.wait();
    }
    let _ = drain.join();
    let err = err_text.lock().unwrap().clone();
    heads.assert_all_answered(
        "to the first daemon while a second one was started on its port",
        &format!("second daemon's stderr:\n{err}"),
    );
    let code = status.and_then(|s| s.code());
    assert_eq!(
        code,
        Some(1),
        "second daemon's exit ({took:?}); stderr:\n{err}"
    );
    assert!(
        took < Duration::from_secs(2),
        "the second daemon took {took:?} to give up; stderr:\n{err}"
    );
    let address = format!("127.0.0.1:{port}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(&address)).collect();
    assert_eq!(lines.len(), 1, "one line naming {address}; stderr:\n{err}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains("already served by process"),
        "{}",
        lines[0]
    );
    // And the first daemon goes on: an upload completes on it.
    let id = first.create(5);
    let p = first.patch(&id, 0, b"hello");
    assert_eq!(p.status, 204, "{p:?}");
}

/// Twenty PATCHes are streaming when the daemon is killed with SIGKILL and reaped (as
/// systemd does before `Restart=`); a new one starts on the same port at once. The dead
/// daemon's listeners linger for a moment (io_uring releases its files after the process
/// is gone): no client of the new daemon may land on one of them and be reset.
#[test]
fn restart_right_after_kill9_resets_no_client() {
    restart_after_kill9(true);
}

/// The same, but the new daemon starts right after the signal is sent, before the killed
/// process is gone (a shell's `kill -9 $pid; tusring`): its listeners still show in the
/// dying process's descriptor table, and it must be waited for, not taken for a running
/// daemon.
#[test]
fn restart_right_after_kill9_unreaped_resets_no_client() {
    restart_after_kill9(false);
}

fn restart_after_kill9(reap: bool) {
    const UPLOADS: usize = 20;
    const LEN: usize = 256 << 20;
    let tmp = TempDir::new("ports-restart");
    let port = free_port();
    let builder = Daemon::builder(&tmp).port(Some(port));
    let mut old = builder.clone().start();
    let ids: Vec<String> = (0..UPLOADS).map(|_| old.create(LEN as u64)).collect();
    let started = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let streams: Vec<_> = ids
        .iter()
        .map(|id| {
            let (started, stop, id) = (started.clone(), stop.clone(), id.clone());
            thread::spawn(move || {
                let mut c = Conn::connect(port);
                c.send_head(
                    &patch_req(&id, 0, b"")
                        .raw_framing()
                        .h("Content-Length", &LEN.to_string()),
                );
                let piece = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                started.fetch_add(1, Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) && sent + piece.len() < LEN {
                    if c.send_raw(&piece).is_err() {
                        break;
                    }
                    sent += piece.len();
                }
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || started.load(Ordering::SeqCst)
            == UPLOADS),
        "the PATCHes did not start"
    );
    thread::sleep(Duration::from_millis(300));
    if reap {
        old.kill9();
    } else {
        let st = Command::new("kill")
            .args(["-KILL", &old.pid().to_string()])
            .status()
            .expect("run kill -KILL");
        assert!(st.success(), "kill -KILL: {st:?}");
    }
    let d = builder.start();
    stop.store(true, Ordering::SeqCst);

    // Right away, from 8 threads for 1 s: HEADs, each on a new connection.
    let heads = probe_heads(port, &ids, 8, Duration::from_secs(1));
    for s in streams {
        let _ = s.join();
    }
    drop(old);
    heads.assert_all_answered(
        "after the restart",
        &format!("stderr:\n{}", d.stderr_text()),
    );
    // What the new daemon said about the old listeners (shown with --nocapture).
    for line in d.stderr_text().lines() {
        if line.contains("released") || line.contains("waiting up to") {
            eprintln!("restart (reaped: {reap}): {line}");
        }
    }
    // Every upload of the killed daemon is served by the new one.
    for id in &ids {
        let h = d.head(id);
        assert_eq!(h.status, 200, "{h:?}");
    }
}

/// A listening socket that no process holds: the test sends it over a Unix socket pair
/// (`SCM_RIGHTS`) and closes its own descriptor, so it lives on only in flight, as a
/// killed daemon's listener lives on in its io_uring until the ring is torn down. A
/// daemon started on its address waits for it, logged, and binds once it is released;
/// one that is never released makes the daemon exit 1 after the bounded wait, naming
/// the address.
#[test]
fn a_listener_no_process_holds_is_waited_for_within_a_bound() {
    let tmp = TempDir::new("ports-orphan");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");

    // Never released: exit 1 after the wait (5 s), with one error line naming the address.
    let held = orphan_listener(port);
    let started = Instant::now();
    let (code, _out, err) = run_cli(
        &Daemon::builder(&tmp)
            .port(Some(port))
            .command_line()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        tmp.path(),
        &[],
    );
    let took = started.elapsed();
    assert_eq!(code, Some(1), "stderr:\n{err}");
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(9),
        "gave up after {took:?}; stderr:\n{err}"
    );
    assert!(err.contains("waiting up to 5 s"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(&address), "{err}");
    drop(held);

    // Released after a second: the daemon binds then and serves.
    let held = orphan_listener(port);
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_secs(1));
        drop(held);
    });
    let started = Instant::now();
    let d = Daemon::builder(&tmp).port(Some(port)).start();
    let took = started.elapsed();
    releaser.join().unwrap();
    assert!(
        took >= Duration::from_millis(900),
        "listening after {took:?}"
    );
    let log = d.stderr_text();
    assert!(
        log.contains("waiting up to 5 s") && log.contains("was released after"),
        "{log}"
    );
    let id = d.create(3);
    d.patch(&id, 0, b"abc")
        .assert_status(204, "an upload after the wait");
}

/// A listening TCP socket on 127.0.0.1:`port` that no process has open: it is in flight
/// in the returned Unix socket pair, and closes when the pair is dropped.
fn orphan_listener(
    port: u16,
) -> (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
) {
    use std::os::fd::AsRawFd;
    // The previous orphan on this port may still be closing: a descriptor in flight in a
    // Unix socket is released by the kernel after the pair is dropped, not within the
    // drop (seen once in four suite runs: EADDRINUSE right after the drop).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let listener = loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => break l,
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("bind the orphan: {e:?}"),
        }
    };
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = listener.as_raw_fd();
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `control`, which has room for one SCM_RIGHTS header and
    // one descriptor; `iov` and `byte` outlive the sendmsg call.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
        libc::sendmsg(a.as_raw_fd(), &msg, 0)
    };
    assert_eq!(sent, 1, "sendmsg: {}", std::io::Error::last_os_error());
    drop(listener);
    (a, b)
}

/// `--workers 2`, one shared listening socket: connections are spread over both cores.
/// Twenty keep-alive connections, opened one after another on an idle daemon, are held
/// open; `/metrics` then shows each core holding a fair share of them.
#[test]
fn workers_share_the_connections() {
    let tmp = TempDir::new("ports-spread");
    let d = Daemon::start(&tmp, &[]);
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut c = d.conn();
        let r = c.request(&Req::new("OPTIONS", "/files"));
        assert_eq!(r.status, 200, "{r:?}");
        held.push(c);
    }
    let mut probe = d.conn();
    let per_core = connections_per_core(&mut probe);
    assert_eq!(per_core.len(), 2, "{per_core:?}");
    assert_eq!(per_core.iter().sum::<u64>(), 21, "{per_core:?}");
    assert!(
        per_core.iter().all(|&n| n >= 5),
        "connections per core: {per_core:?}"
    );
}

/// What [`probe_heads`] saw: HEADs answered 200, and what went wrong with the others.
struct Heads {
    ok: usize,
    failures: Vec<String>,
}

impl Heads {
    /// Every HEAD was answered 200, and there was at least one.
    fn assert_all_answered(&self, when: &str, context: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} HEADs {when} failed: {:?}\n{context}",
            self.failures.len(),
            self.ok + self.failures.len(),
            &self.failures[..self.failures.len().min(10)],
        );
        assert!(self.ok > 0, "no HEAD {when} was answered\n{context}");
    }
}

/// New connections from `threads` threads for `span`, each one HEAD of an upload of
/// `ids`.
fn probe_heads(port: u16, ids: &[String], threads: usize, span: Duration) -> Heads {
    let ids = Arc::new(ids.to_vec());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ids = ids.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + span;
                let (mut ok, mut bad) = (0usize, Vec::new());
                let mut i = t;
                while Instant::now() < deadline {
                    i += 1;
                    let id = &ids[i % ids.len()];
                    match head_once(port, id) {
                        Ok(200) => ok += 1,
                        Ok(s) => bad.push(format!("HEAD {id}: status {s}")),
                        Err(e) => bad.push(format!("HEAD {id}: {e} ({:?})", e.kind())),
                    }
                }
                (ok, bad)
            })
        })
        .collect();
    let mut heads = Heads {
        ok: 0,
        failures: Vec::new(),
    };
    for h in handles {
        let (ok, failures) = h.join().unwrap();
        heads.ok += ok;
        heads.failures.extend(failures);
    }
    heads
}

/// One HEAD on a new connection, with nothing of the harness that panics: a refused
/// connect, a reset or an early close is returned as the error it is.
fn head_once(port: u16, id: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let req = format!(
        "HEAD /files/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTus-Resumable: 1.0.0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed before a response head",
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, text.to_string()))
}
