//! A whole connection: arbitrary bytes in, through the HTTP layer and the tus handler of
//! a real tusring daemon, with its storage in a temporary directory.
//!
//! # Design
//!
//! The daemons run in the fuzzer's own process: on the first input, two daemons are
//! started with `tusring::server::run` on background threads, each with its config from
//! `config::load` (`--host 127.0.0.1 --port <free port> --workers 1`, data and info
//! directories under a fresh temporary directory, short timeouts, `--max-file-size 64K`
//! so creations never preallocate much):
//!
//! * daemon A: the defaults (bodies spliced socket -> pipe -> file);
//! * daemon B: `--disable-splice` (the buffered path), `--allow-empty`,
//!   `--max-body-size 4K`.
//!
//! Running in-process rather than spawning the binary has two benefits: the daemon's code
//! is instrumented, so libFuzzer is guided by coverage of the connection loop and the
//! handler too; and libfuzzer-sys's panic hook aborts the process on a panic in *any*
//! thread, so a panic on a core thread is reported as a crash of the input being
//! processed. The port is found by binding port 0, closing it and passing the number
//! with `--port` (retried if another process takes it in between); readiness is a
//! `/health` that answers 200.
//!
//! # Per input
//!
//! Byte 0 holds flags, byte 1 a parameter P, the rest is what the client sends:
//!
//! * bits 0-1: set-up before the connection, on a connection of its own: 0 none; 1 create
//!   an upload with `Upload-Length: P+1`; 2 create a deferred-length upload; 3 create an
//!   upload of length P+1 with its first (P+1)/2 bytes (creation-with-upload);
//! * bit 2: use daemon B;
//! * bit 3: send the bytes in two writes, split at P/256 of their length, 2 ms apart, so
//!   the head and body readers see a request arrive in pieces;
//! * every `$ID` in the bytes is replaced by the created upload's ID (or, without one, a
//!   valid upload ID that names no upload), so PATCH, HEAD and DELETE reach a real upload.
//!
//! The client connects, writes the bytes, half-closes (FIN), and reads until the daemon
//! closes. Then, before the next input, the harness checks:
//!
//! * the daemon closed the connection within 10 s of the FIN (its own timeouts are 2 s),
//!   without a reset (it lingers to avoid one);
//! * every byte it sent parses as complete HTTP/1.1 responses (`Content-Length` framed),
//!   and none is a 500 (a storage or internal failure: the disk here is healthy);
//! * what is on disk is consistent: every `.info` record reads back, its data file holds
//!   exactly `offset` bytes (at most the length), no `.info.tmp` or record-less data file
//!   is left;
//! * the connection is gone (`open_connections() == 0`), every upload lock is released
//!   (`locks::held() == 0`), and the process has no more file descriptors than before
//!   the input (no leaked file, pipe or socket);
//! * the daemon still answers `GET /health` with 200.
//!
//! Then the data and info directories are emptied, so each input starts from the same
//! state and a crash reproduces from its input alone.
//!
//! Run it with `-detect_leaks=0`: the daemons' threads allocate while an input runs, and
//! LeakSanitizer cannot tell that from a leak. `TUSRING_FUZZ_LOG=info` shows the
//! daemons' logs (default: errors only); `TUSRING_FUZZ_TIMING=1` prints each input's
//! time and statuses; `TUSRING_FUZZ_DIR` picks where the scratch directory goes.
#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tusring::config::{load, Action, LogLevel};
use tusring::storage::info::UploadInfo;

/// How long the daemon may take to close a connection after the client's FIN.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// An upload ID that names no upload (used for `$ID` when none was created).
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

struct Daemon {
    name: &'static str,
    addr: SocketAddr,
    data_dir: PathBuf,
    info_dir: PathBuf,
}

struct Daemons {
    a: Daemon,
    b: Daemon,
}

static DAEMONS: OnceLock<Daemons> = OnceLock::new();

fn daemons() -> &'static Daemons {
    DAEMONS.get_or_init(|| {
        let level = match std::env::var("TUSRING_FUZZ_LOG").as_deref() {
            Ok("off") => LogLevel::Off,
            Ok("warn") => LogLevel::Warn,
            Ok("info") => LogLevel::Info,
            Ok("debug") => LogLevel::Debug,
            Ok("trace") => LogLevel::Trace,
            _ => LogLevel::Error,
        };
        tusring::log::init(level);
        let root = scratch_root();
        let a = start("a", &root, &[]);
        let b = start(
            "b",
            &root,
            &["--disable-splice", "--allow-empty", "--max-body-size", "4K"],
        );
        // Warm up: one full upload on each, so lazily made things (pipes, buffers) exist.
        for d in [&a, &b] {
            let id = create(d, Some(4), 4);
            let req = format!(
                "PATCH /files/{id} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 4\r\n\
                 Content-Type: application/offset+octet-stream\r\nContent-Length: 0\r\n\r\n\
                 DELETE /files/{id} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nConnection: close\r\n\r\n"
            );
            let _ = exchange(d, req.as_bytes(), None);
            wait_idle();
            wipe(d);
        }
        Daemons { a, b }
    })
}

/// A fresh directory for this process's daemons (tmpfs when there is one). The
/// directories of earlier fuzzer processes that are gone (a crash ends the process
/// without cleaning up) are removed first.
fn scratch_root() -> PathBuf {
    let base = std::env::var_os("TUSRING_FUZZ_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            shm.is_dir().then_some(shm)
        })
        .unwrap_or_else(std::env::temp_dir);
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("tusring-fuzz-") else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let root = base.join(format!("tusring-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create the scratch directory");
    root
}

fn start(name: &'static str, root: &Path, extra: &[&str]) -> Daemon {
    let data_dir = root.join(name).join("data");
    let info_dir = root.join(name).join("info");
    std::fs::create_dir_all(&data_dir).expect("create the data directory");
    std::fs::create_dir_all(&info_dir).expect("create the info directory");
    for _attempt in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let mut args: Vec<String> = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            "1",
            "--head-timeout",
            "2",
            "--body-timeout",
            "2",
            "--idle-timeout",
            "2",
            "--shutdown-timeout",
            "1",
            "--max-file-size",
            "64K",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--data-dir".into());
        args.push(data_dir.to_string_lossy().into_owned());
        args.push("--info-dir".into());
        args.push(info_dir.to_string_lossy().into_owned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = match load(args.into_iter().map(Into::into).collect(), &|_| None, None) {
            Ok(Action::Run(c)) => c,
            other => panic!("daemon {name}: config refused: {other:?}"),
        };
        let addr = config.listen;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("tusring-fuzz-{name}"))
            .spawn(move || {
                let result = tusring::server::run(config);
                let _ = tx.send(result.map_err(|e| e.to_string()));
            })
            .expect("start the daemon thread");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(result) = rx.try_recv() {
                eprintln!("daemon {name} on {addr} ended: {result:?}; retrying");
                break;
            }
            if health(addr) == Some(200) {
                return Daemon {
                    name,
                    addr,
                    data_dir,
                    info_dir,
                };
            }
            assert!(Instant::now() < deadline, "daemon {name} did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("daemon {name} could not start");
}

/// `GET /health`'s status, or `None` if the daemon does not answer.
fn health(addr: SocketAddr) -> Option<u16> {
    health_answer(addr).map(|(status, _)| status)
}

/// `GET /health`'s status and whole answer.
fn health_answer(addr: SocketAddr) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((status, text))
}

/// The bytes the daemon sent back, and whether it closed the connection normally.
struct Exchange {
    received: Vec<u8>,
    reset: bool,
}

/// Sends `bytes` on a new connection (in two writes if `split` is given), half-closes,
/// and reads until the daemon closes.
fn exchange(d: &Daemon, bytes: &[u8], split: Option<usize>) -> Exchange {
    let mut s = TcpStream::connect(d.addr).expect("connect to the daemon");
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(CLOSE_DEADLINE));
    // Write errors are fine: the daemon may refuse the request and close early.
    match split {
        Some(at) => {
            let (first, second) = bytes.split_at(at.min(bytes.len()));
            if s.write_all(first).is_ok() {
                std::thread::sleep(Duration::from_millis(2));
                let _ = s.write_all(second);
            }
        }
        None => {
            let _ = s.write_all(bytes);
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + CLOSE_DEADLINE;
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut reset = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "daemon {} did not close the connection within {CLOSE_DEADLINE:?} of the \
             client's FIN; received so far: {:?}",
            d.name,
            String::from_utf8_lossy(&received)
        );
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                reset = true;
                break;
            }
            Err(e) => panic!("reading from daemon {}: {e}", d.name),
        }
    }
    Exchange { received, reset }
}

/// Creates an upload (`length` None: deferred) with its first `with_body` bytes; the ID.
fn create(d: &Daemon, length: Option<u64>, with_body: u64) -> String {
    let mut req = String::from("POST /files HTTP/1.1\r\nHost: fuzz\r\nTus-Resumable: 1.0.0\r\n");
    match length {
        Some(n) => req.push_str(&format!("Upload-Length: {n}\r\n")),
        None => req.push_str("Upload-Defer-Length: 1\r\n"),
    }
    if with_body > 0 {
        req.push_str(&format!(
            "Content-Type: application/offset+octet-stream\r\nContent-Length: {with_body}\r\n"
        ));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend((0..with_body).map(|i| b'a' + (i % 26) as u8));
    let ex = exchange(d, &bytes, None);
    let text = String::from_utf8_lossy(&ex.received);
    assert!(
        text.starts_with("HTTP/1.1 201 "),
        "daemon {}: creation failed: {text:?}",
        d.name
    );
    let location = text
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .expect("201 without Location");
    location
        .rsplit('/')
        .next()
        .expect("Location ends in the ID")
        .trim()
        .to_owned()
}

/// Checks that `bytes` is a sequence of complete responses; returns their statuses.
fn responses(d: &Daemon, bytes: &[u8]) -> Vec<u16> {
    let mut statuses = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut fields);
        let n = match resp.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "daemon {}: not a complete response ({other:?}): {:?}",
                d.name,
                String::from_utf8_lossy(rest)
            ),
        };
        let status = resp.code.expect("a status");
        assert_eq!(resp.version, Some(1), "daemon {}: not HTTP/1.1", d.name);
        let length = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| {
                std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .expect("a numeric Content-Length")
            })
            .unwrap_or(0);
        assert!(
            n + length <= rest.len(),
            "daemon {}: response body cut short: {:?}",
            d.name,
            String::from_utf8_lossy(rest)
        );
        statuses.push(status);
        rest = &rest[n + length..];
    }
    statuses
}

/// Waits until the daemons have no connection open.
fn wait_idle() {
    let deadline = Instant::now() + CLOSE_DEADLINE;
    while tusring::server::core::open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connection(s) still open {CLOSE_DEADLINE:?} after the client closed",
            tusring::server::core::open_connections()
        );
        std::thread::sleep(Duration::from_micros(50));
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Checks what the daemon left on disk once it is idle: every record reads back (none is
/// torn, no `.info.tmp` is left), its data file exists and holds exactly `offset` bytes
/// (the offset never runs ahead of or behind the data), the offset does not pass the
/// length, and every data file has a record.
fn check_storage(d: &Daemon) {
    let mut data_files: Vec<PathBuf> = std::fs::read_dir(&d.data_dir)
        .expect("list the data directory")
        .flatten()
        .map(|e| e.path())
        .collect();
    for entry in std::fs::read_dir(&d.info_dir)
        .expect("list the info directory")
        .flatten()
    {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".info"),
            "daemon {}: stray file {name} in the info directory",
            d.name
        );
        let bytes = std::fs::read(&path).expect("read an info record");
        let info = match UploadInfo::from_json(&bytes) {
            Ok(info) => info,
            Err(e) => panic!(
                "daemon {}: record {name} does not read back ({e}): {:?}",
                d.name,
                String::from_utf8_lossy(&bytes)
            ),
        };
        assert_eq!(
            format!("{}.info", info.id),
            name,
            "record named after another ID"
        );
        let data = PathBuf::from(info.path.as_deref().expect("a record without a data path"));
        let size = std::fs::metadata(&data)
            .unwrap_or_else(|e| panic!("daemon {}: data file of {name}: {e}", d.name))
            .len();
        assert_eq!(
            size, info.offset,
            "daemon {}: {name} says offset {} but the data file holds {size} bytes",
            d.name, info.offset
        );
        if let Some(length) = info.length {
            assert!(
                info.offset <= length,
                "daemon {}: {name} is past its length",
                d.name
            );
        }
        data_files.retain(|p| *p != data);
    }
    let leftover: Vec<String> = data_files
        .iter()
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        leftover.is_empty(),
        "daemon {}: data files without a record: {leftover:?}",
        d.name
    );
}

/// What each open file descriptor is, for the leak message.
fn describe_fds() -> String {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return String::new();
    };
    let mut out: Vec<String> = dir
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{}={}", e.file_name().to_string_lossy(), target.display())
        })
        .collect();
    out.sort();
    out.join(" ")
}

/// Empties the data and info directories.
fn wipe(d: &Daemon) {
    for dir in [&d.data_dir, &d.info_dir] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let all = daemons();
    let (flags, param, body) = match data {
        [flags, param, body @ ..] => (*flags, *param, body),
        _ => (0, 0, data),
    };
    let d = if flags & 4 != 0 { &all.b } else { &all.a };
    // Counted per input, not once at start-up: the sanitizer's symbolizer, started
    // between inputs to print new functions, holds two pipes of its own.
    let fds_before = open_fds();
    let started = Instant::now();

    let length = u64::from(param) + 1;
    let id = match flags & 3 {
        1 => Some(create(d, Some(length), 0)),
        2 => Some(create(d, None, 0)),
        3 => Some(create(d, Some(length), length / 2)),
        _ => None,
    };
    let id = id.as_deref().unwrap_or(UNKNOWN_ID);
    let bytes = replace_all(body, b"$ID", id.as_bytes());
    let split = (flags & 8 != 0).then(|| usize::from(param) * bytes.len() / 256);

    let ex = exchange(d, &bytes, split);
    assert!(
        !ex.reset,
        "daemon {} reset the connection (an answer may be lost); received: {:?}",
        d.name,
        String::from_utf8_lossy(&ex.received)
    );
    let statuses = responses(d, &ex.received);
    assert!(
        !statuses.contains(&500),
        "daemon {} answered 500: {:?}",
        d.name,
        String::from_utf8_lossy(&ex.received)
    );

    wait_idle();
    assert_eq!(
        tusring::storage::locks::held(),
        0,
        "an upload lock is still held after the connection closed"
    );
    // File closes may finish a moment after the connection is unregistered.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut fds = open_fds();
    while fds > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        fds = open_fds();
    }
    assert!(
        fds <= fds_before,
        "file descriptors leaked: {fds} open, {fds_before} before the input: {}",
        describe_fds()
    );
    check_storage(d);
    match health_answer(d.addr) {
        Some((200, _)) => {}
        other => panic!("daemon {} stopped answering /health: {other:?}", d.name),
    }
    wait_idle();
    wipe(d);
    if std::env::var_os("TUSRING_FUZZ_TIMING").is_some() {
        eprintln!("input done in {:?}: {statuses:?}", started.elapsed());
    }
});
