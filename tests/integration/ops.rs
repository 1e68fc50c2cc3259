//! Running as a service: systemd's side of sd_notify, SIGHUP, the startup write probe,
//! socket activation, `scripts/install.sh`, and the shipped `systemd/` files.

use crate::harness::*;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// sd_notify: the test plays systemd
// ---------------------------------------------------------------------------------------

/// systemd's end of `$NOTIFY_SOCKET`: a bound datagram socket and what it received.
struct NotifyRx {
    sock: UnixDatagram,
    /// Every datagram received so far, in order.
    seen: Vec<String>,
}

impl NotifyRx {
    fn at_path(path: &Path) -> NotifyRx {
        let sock = UnixDatagram::bind(path).expect("bind notify socket");
        NotifyRx::new(sock)
    }

    fn abstract_name(name: &str) -> NotifyRx {
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
        NotifyRx::new(sock)
    }

    fn new(sock: UnixDatagram) -> NotifyRx {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifyRx {
            sock,
            seen: Vec::new(),
        }
    }

    /// Waits up to `timeout` for a datagram with a line for which `want` is true;
    /// returns that datagram. Datagrams received meanwhile are kept in `seen`.
    fn wait_for(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.lines().any(&want) {
                    return Some(msg);
                }
            }
        }
        None
    }

    fn wait_line(&mut self, timeout: Duration, line: &str) -> Option<String> {
        self.wait_for(timeout, |l| l == line)
    }
}

/// READY=1 after the port answers, STATUS= with the counts, WATCHDOG=1, STOPPING=1 on
/// SIGTERM, exit 0: the whole conversation, on a socket at `notify_socket`.
fn notify_conversation(tmp: &TempDir, mut rx: NotifyRx, notify_socket: &str) {
    let mut d = Daemon::builder(tmp)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", "200000")
        .start();

    let ready = rx
        .wait_line(Duration::from_secs(10), "READY=1")
        .unwrap_or_else(|| panic!("no READY=1; got {:?}", rx.seen));
    // The port answers once READY=1 is out (it answered before: the datagram was sent
    // after every core reported its listener up).
    let r = d.send(&Req::new("GET", "/health"));
    assert_eq!(r.status, 200, "/health right after READY=1: {r:?}");
    assert_eq!(
        rx.seen.len(),
        1,
        "READY=1 is the first notification: {:?}",
        rx.seen
    );
    assert!(
        ready.contains(&format!(
            "STATUS=serving on 127.0.0.1:{}: 2 core(s)",
            d.port
        )),
        "READY=1 comes with a STATUS= line: {ready:?}"
    );

    rx.wait_line(Duration::from_secs(3), "WATCHDOG=1")
        .unwrap_or_else(|| panic!("no WATCHDOG=1 with WATCHDOG_USEC=200000; got {:?}", rx.seen));

    // An open connection shows in the next STATUS= (refreshed every 2 s when it changed).
    let mut c = d.conn();
    let r = c.request(&Req::new("GET", "/health"));
    assert_eq!(r.status, 200);
    let status = rx.wait_for(Duration::from_secs(8), |l| {
        l.starts_with("STATUS=") && l.contains(" 1 connection(s)")
    });
    assert!(
        status.is_some(),
        "no STATUS= counting the open connection; got {:?}",
        rx.seen
    );
    drop(c);

    d.sigterm();
    rx.wait_line(Duration::from_secs(5), "STOPPING=1")
        .unwrap_or_else(|| panic!("no STOPPING=1 after SIGTERM; got {:?}", rx.seen));
    let st = d
        .wait_exit(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert!(
        st.success(),
        "exit status {st:?}; stderr:\n{}",
        d.stderr_text()
    );
}

#[test]
fn sd_notify_on_a_socket_path() {
    let tmp = TempDir::new("ops-notify-path");
    let path = tmp.join("notify.sock");
    let rx = NotifyRx::at_path(&path);
    notify_conversation(&tmp, rx, path.to_str().unwrap());
}

#[test]
fn sd_notify_on_an_abstract_socket() {
    let tmp = TempDir::new("ops-notify-abstract");
    let name = format!(
        "tusring-it-notify-{}-{}",
        std::process::id(),
        tmp.path().file_name().unwrap().to_string_lossy()
    );
    let rx = NotifyRx::abstract_name(&name);
    notify_conversation(&tmp, rx, &format!("@{name}"));
}

#[test]
fn no_watchdog_pings_for_another_pid() {
    // WATCHDOG_PID names another process: the variables were inherited, not ours.
    let tmp = TempDir::new("ops-notify-wdpid");
    let path = tmp.join("notify.sock");
    let mut rx = NotifyRx::at_path(&path);
    let _d = Daemon::builder(&tmp)
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "100000")
        .env("WATCHDOG_PID", "1")
        .start();
    rx.wait_line(Duration::from_secs(10), "READY=1")
        .unwrap_or_else(|| panic!("no READY=1; got {:?}", rx.seen));
    assert!(
        rx.wait_line(Duration::from_millis(600), "WATCHDOG=1")
            .is_none(),
        "pinged a watchdog that is not ours: {:?}",
        rx.seen
    );
}

#[test]
fn sighup_is_ignored() {
    let tmp = TempDir::new("ops-sighup");
    let mut d = Daemon::start(&tmp, &[]);
    let st = Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .expect("run kill -HUP");
    assert!(st.success());
    assert!(
        d.wait_log_line(&["SIGHUP ignored"]).is_some(),
        "no log line for SIGHUP; stderr:\n{}",
        d.stderr_text()
    );
    assert_eq!(d.send(&Req::new("GET", "/health")).status, 200);
    assert!(
        d.wait_exit(Duration::from_millis(200)).is_none(),
        "SIGHUP stopped it"
    );
}

#[test]
fn unwritable_data_dir_fails_the_start_without_ready() {
    let tmp = TempDir::new("ops-probe");
    let path = tmp.join("notify.sock");
    let mut rx = NotifyRx::at_path(&path);
    let info = tmp.join("info");
    // Nobody, root included, can create a file in procfs's root.
    let (code, _out, err) = run_cli(
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            "/proc",
            "--info-dir",
            info.to_str().unwrap(),
        ],
        tmp.path(),
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(
        err.contains("write probe failed: data directory /proc is not writable"),
        "{err}"
    );
    assert!(
        rx.wait_line(Duration::from_millis(300), "READY=1")
            .is_none(),
        "READY=1 sent although the probe failed: {:?}",
        rx.seen
    );
}

// ---------------------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------------------

/// A socket-activated daemon: the test binds the port, as systemd's `.socket` would, and
/// passes it as fd 3 with `LISTEN_PID`/`LISTEN_FDS` (set by a shell that then `exec`s
/// the daemon, so the pid matches).
#[test]
fn socket_activation_serves_the_passed_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let tmp = TempDir::new("ops-socket");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let data = tmp.join("data");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#)
        .arg(binary())
        // --port 1 would fail to bind: it must not be used.
        .args(["--host", "127.0.0.1", "--port", "1", "--workers", "2"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--info-dir")
        .arg(&data)
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    clear_rustus_env(&mut cmd);
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // dup2(3, 3) would keep close-on-exec: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn sh -c exec tusring");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, lines) = mpsc::channel();
    {
        let err = child.stderr.take().unwrap();
        let log = log.clone();
        thread::spawn(move || drain_lines(err, log, Some(tx)));
    }
    let kill = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let mut listening = None;
    while listening.is_none() && Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => listening = parse_listening(&l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if listening != Some(port) {
        kill(&mut child);
        panic!(
            "expected `listening on` port {port}, got {listening:?}; stderr:\n{}",
            log.lock().unwrap()
        );
    }
    assert!(log.lock().unwrap().contains("socket activation"));

    // Requests on several connections: every core takes from the one accept queue.
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut c = Conn::connect(port);
        let r = c.request(&Req::new("GET", "/health"));
        assert_eq!(r.status, 200, "{r:?}");
        held.push(c);
    }
    let per_core = connections_per_core(&mut held[0]);
    assert!(
        per_core.len() == 2 && per_core.iter().all(|&n| n >= 2),
        "both cores serve the passed socket: connections per core {per_core:?}"
    );
    drop(held);
    let id = {
        let r = Conn::connect(port).request(
            &Req::new("POST", "/files")
                .tus()
                .h("Upload-Length", "5")
                .h("Content-Type", "application/offset+octet-stream")
                .body(b"hello"),
        );
        assert_eq!(r.status, 201, "{r:?}");
        upload_id(&r)
    };
    assert_eq!(std::fs::read(data.join(&id)).unwrap(), b"hello");

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let st = wait_timeout(&mut child, Duration::from_secs(20));
    if st.is_none() {
        kill(&mut child);
    }
    assert!(
        st.is_some_and(|s| s.success()),
        "exit after SIGTERM: {st:?}; stderr:\n{}",
        log.lock().unwrap()
    );
    // The socket still listens for "systemd" (this test's copy): the daemon did not
    // shut it down, so the next start would be handed a working socket.
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("still listening");
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("the passed socket no longer accepts: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// scripts/install.sh
// ---------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/install.sh args` (bounded to 60 s); returns (success, stdout+stderr).
fn install_sh(args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/install.sh"))
        .args(args)
        .env_remove("DESTDIR")
        .env_remove("PREFIX")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run scripts/install.sh");
    let out = Arc::new(Mutex::new(String::new()));
    let t1 = {
        let o = out.clone();
        let s = child.stdout.take().unwrap();
        thread::spawn(move || drain_lines(s, o, None))
    };
    let t2 = {
        let o = out.clone();
        let s = child.stderr.take().unwrap();
        thread::spawn(move || drain_lines(s, o, None))
    };
    let st = wait_timeout(&mut child, Duration::from_secs(60));
    if st.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = t1.join();
    let _ = t2.join();
    let text = out.lock().unwrap().clone();
    (st.is_some_and(|s| s.success()), text)
}

/// Every regular file under `dir`, relative, with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    list_files(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.strip_prefix(dir).unwrap().to_path_buf(), bytes)
        })
        .collect()
}

#[test]
fn install_sh_installs_idempotently_and_uninstalls() {
    let tmp = TempDir::new("ops-install");
    let dest = tmp.join("root");
    let dest_s = dest.to_str().unwrap();
    let common = [
        "--no-build",
        "--binary",
        binary(),
        "--destdir",
        dest_s,
        "--prefix",
        "/opt/tusring",
    ];

    let (ok, out) = install_sh(&common);
    assert!(ok, "install failed:\n{out}");
    assert!(out.contains("systemctl enable --now tusring"), "{out}");
    let bin = dest.join("opt/tusring/bin/tusring");
    let unit = dest.join("etc/systemd/system/tusring.service");
    let socket = dest.join("etc/systemd/system/tusring.socket");
    let env = dest.join("etc/tusring/tusring.env");
    let doc = dest.join("opt/tusring/share/doc/tusring/systemd.md");
    for f in [&bin, &unit, &socket, &env, &doc] {
        assert!(f.is_file(), "{f:?} not installed:\n{out}");
    }
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(binary()).unwrap()
    );
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text
            .lines()
            .any(|l| l == "ExecStart=/opt/tusring/bin/tusring"),
        "ExecStart not rewritten for the prefix:\n{unit_text}"
    );
    assert!(!unit_text.contains("/usr/local"), "{unit_text}");
    assert_eq!(
        std::fs::read(&env).unwrap(),
        std::fs::read(repo().join("systemd/tusring.env")).unwrap()
    );

    // Again: nothing changes.
    let before = snapshot(&dest);
    let (ok, out) = install_sh(&common);
    assert!(ok, "second install failed:\n{out}");
    assert_eq!(
        snapshot(&dest),
        before,
        "a second run changed files:\n{out}"
    );

    // Local settings are never overwritten: the new example goes next to them.
    std::fs::write(&env, "RUSTUS_SERVER_PORT=9000\n").unwrap();
    let (ok, out) = install_sh(&common);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "RUSTUS_SERVER_PORT=9000\n"
    );
    assert!(dest.join("etc/tusring/tusring.env.new").is_file(), "{out}");

    // Uninstall keeps the settings; --purge removes them.
    let mut un = common.to_vec();
    un.push("--uninstall");
    let (ok, out) = install_sh(&un);
    assert!(ok, "uninstall failed:\n{out}");
    for f in [&bin, &unit, &socket, &doc] {
        assert!(!f.exists(), "{f:?} left by --uninstall:\n{out}");
    }
    assert!(!dest.join("etc/tusring/tusring.env.new").exists());
    assert!(env.is_file(), "--uninstall removed the settings");
    un.push("--purge");
    let (ok, out) = install_sh(&un);
    assert!(ok, "uninstall --purge failed:\n{out}");
    assert!(
        list_files(&dest).is_empty(),
        "left after --uninstall --purge: {:?}",
        list_files(&dest)
    );
}

#[test]
fn install_sh_refuses_bad_options() {
    let (ok, out) = install_sh(&["--bogus"]);
    assert!(!ok);
    assert!(out.contains("--bogus"), "{out}");
    let (ok, out) = install_sh(&["--prefix", "relative", "--no-build"]);
    assert!(!ok);
    assert!(out.contains("absolute"), "{out}");
}

// ---------------------------------------------------------------------------------------
// The shipped files
// ---------------------------------------------------------------------------------------

/// The `KEY=value` examples of `systemd/tusring.env` (its `#KEY=value` lines).
fn env_examples() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("systemd/tusring.env")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        assert!(
            line.is_empty() || line.starts_with('#'),
            "tusring.env must only hold comments (it ships as an example): {line:?}"
        );
        if let Some((k, v)) = line.trim_start_matches('#').split_once('=') {
            if k.starts_with("RUSTUS_") && !k.contains(' ') {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

#[test]
fn env_file_names_every_variable_of_help() {
    let tmp = TempDir::new("ops-envfile");
    let (code, out, err) = run_cli(&["--help"], tmp.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    let examples = env_examples();
    let mut missing = Vec::new();
    for word in out.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("RUSTUS_") && !examples.iter().any(|(k, _)| k == word) {
            missing.push(word.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "systemd/tusring.env lacks {missing:?} (listed by --help)"
    );
}

#[test]
fn env_file_examples_are_accepted_by_the_daemon() {
    // Every example uncommented at once: the daemon starts (the flags the harness
    // passes, --port 0 and the directories, win over the variables).
    let tmp = TempDir::new("ops-envvalues");
    let mut b = Daemon::builder(&tmp);
    for (k, v) in env_examples() {
        b = b.env(&k, &v);
    }
    let d = b.start();
    assert_eq!(d.send(&Req::new("GET", "/health")).status, 200);
}

#[test]
fn unit_file_has_what_the_daemon_relies_on() {
    let text = std::fs::read_to_string(repo().join("systemd/tusring.service")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/local/bin/tusring",
        "EnvironmentFile=-/etc/tusring/tusring.env",
        "DynamicUser=yes",
        "StateDirectory=tusring",
        "Environment=RUSTUS_DATA_DIR=/var/lib/tusring/data",
        "Environment=RUSTUS_INFO_DIR=/var/lib/tusring/data",
        "WorkingDirectory=/var/lib/tusring",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
        "KillMode=mixed",
        "Restart=on-failure",
        "WatchdogSec=30s",
    ] {
        assert!(lines.contains(&want), "tusring.service lacks {want:?}");
    }
    // TimeoutStopSec= must exceed the default grace period plus the forced-close waits.
    let stop = lines
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.strip_suffix('s'))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("TimeoutStopSec=<n>s");
    assert!(stop > 10 + 10, "TimeoutStopSec={stop}s");
}
