//! Hostile input: slowloris and idle-connection floods, oversized and numerous headers,
//! metadata and chunk extensions past their limits, integers at and past 2^63 and 2^64,
//! paths that try to leave the data directory, symlinks planted in it, and a data
//! directory shared with another server's uploads. Every answer is a 4xx (never a 5xx
//! the client did not cause, never a panic), and nothing outside the data and info
//! directories is read, written or created.

use crate::harness::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Raises this process's open-file limit to at least `want` (up to the hard limit), so
/// that the daemon started after it inherits it too. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write one `rlimit` we own; no other memory.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One request on a fresh connection, raw bytes in; the status out (None: the server
/// closed or reset without an answer).
fn raw_status(d: &Daemon, bytes: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    // The server may answer and close before taking everything: a write error is fine.
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

/// The daemon still answers (and so has not panicked or wedged).
fn assert_alive(d: &Daemon, what: &str) {
    let r = d.send(&Req::new("OPTIONS", "/files"));
    assert!(matches!(r.status, 200 | 204), "after {what}: OPTIONS {r:?}");
}

// ------------------------------------------------------------------ connection floods

/// How a slowloris connection ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ended {
    /// Answered 503: past `--max-connections`.
    Refused,
    /// Closed (or reset, or answered otherwise) without a 503: cut by the head timeout.
    Cut,
}

/// Slowloris: many connections each sending a request head one byte a second. They are
/// cut at the head timeout (not before it, and not kept alive by the trickle), the
/// daemon's connections stay within `--max-connections` (the excess get 503 at once), and
/// an honest client keeps being served throughout.
#[test]
fn slowloris_is_bounded_by_head_timeout_and_max_connections() {
    const HEAD_TIMEOUT: Duration = Duration::from_secs(3);
    // Each connection is looked at once a second, and a pass over all of them takes a
    // while on a loaded machine: a cut is seen up to this long after it happened.
    const SEEN_WITHIN: Duration = Duration::from_millis(2500);
    // 1,000 attackers, fewer if the hard open-file limit does not allow them (the test
    // process holds one fd per attacker, the daemon one per accepted connection).
    let limit = raise_nofile(4096) as usize;
    let attackers = 1000.min(limit.saturating_sub(300));
    assert!(
        attackers >= 300,
        "open-file limit {limit} is too low for a slowloris test"
    );
    let max_conns = attackers * 6 / 10;
    let tmp = TempDir::new("slowloris");
    let d = Daemon::start(
        &tmp,
        &[
            "--head-timeout",
            &HEAD_TIMEOUT.as_secs().to_string(),
            "--max-connections",
            &max_conns.to_string(),
            "--disable-access-log",
        ],
    );
    let pid = d.pid();
    let base_fds = open_fds(pid);
    let head = format!(
        "POST /files HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 10\r\nX-Pad: {}\r\n\r\n",
        d.host(),
        "a".repeat(64)
    );
    let head = head.as_bytes();
    let t0 = Instant::now();
    // Open them all (the kernel queues what the daemon has not accepted yet).
    let mut conns: Vec<(TcpStream, Option<(Duration, Ended)>)> = Vec::with_capacity(attackers);
    for _ in 0..attackers {
        let s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect attacker");
        s.set_nonblocking(true).unwrap();
        conns.push((s, None));
    }
    let opened = t0.elapsed();

    // The honest client: a whole upload every 200 ms, on fresh connections, with its
    // latency recorded; 503 (past --max-connections) is retried after its Retry-After.
    let honest = {
        let port = d.port;
        thread::spawn(move || {
            let mut lat = Vec::new();
            let mut refused = 0;
            let end = Instant::now() + Duration::from_secs(7);
            let mut n = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                let data = random_bytes(n, 1000);
                let served = loop {
                    let mut c = Conn::connect(port);
                    let r = c.request(&Req::new("POST", "/files").tus().h("Upload-Length", "1000"));
                    if r.status == 503 {
                        refused += 1;
                        if t.elapsed() > Duration::from_secs(6) {
                            break false;
                        }
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    assert_eq!(r.status, 201, "honest POST: {r:?}");
                    let id = upload_id(&r);
                    let p = c.request(&patch_req(&id, 0, &data));
                    assert_eq!(p.status, 204, "honest PATCH: {p:?}");
                    break true;
                };
                assert!(served, "the honest client was refused for 6 s");
                lat.push(t.elapsed());
                n += 1;
                thread::sleep(Duration::from_millis(200));
            }
            (lat, refused)
        })
    };

    // Trickle: one byte a second to every open attacker; note when each is closed.
    let mut peak_fds = 0;
    let mut sent = 0;
    while t0.elapsed() < Duration::from_secs(8) && sent < head.len() {
        for (s, closed) in conns.iter_mut() {
            if closed.is_some() {
                continue;
            }
            let mut b = [0u8; 512];
            let gone = match s.read(&mut b) {
                Ok(n) if b[..n].starts_with(b"HTTP/1.1 503 ") => Some(Ended::Refused),
                Ok(_) => Some(Ended::Cut), // closed, or an answer the server ended it with
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s
                    .write(&head[sent..sent + 1])
                    .is_err()
                    .then_some(Ended::Cut),
                Err(_) => Some(Ended::Cut),
            };
            if let Some(how) = gone {
                *closed = Some((t0.elapsed(), how));
            }
        }
        sent += 1;
        // Past the first second the refused burst has been closed (see below).
        if t0.elapsed() > Duration::from_secs(1) {
            peak_fds = peak_fds.max(open_fds(pid));
        }
        thread::sleep(Duration::from_millis(1000));
    }
    let (lat, refused) = honest.join().unwrap();
    let open_at_end = conns.iter().filter(|(_, c)| c.is_none()).count();
    let ended_at = |how: Ended| {
        let mut at: Vec<Duration> = conns
            .iter()
            .filter_map(|(_, c)| c.filter(|c| c.1 == how).map(|c| c.0))
            .collect();
        at.sort();
        at
    };
    let (refused_at, cut_at) = (ended_at(Ended::Refused), ended_at(Ended::Cut));
    let mut lat_sorted = lat.clone();
    lat_sorted.sort();
    eprintln!(
        "slowloris: {attackers} opened in {opened:?}; still open after 8 s: {open_at_end}; \
         daemon fds baseline {base_fds}, peak {peak_fds}; {} refused (seen {:?}..{:?}), \
         {} cut (seen {:?}..{:?}); honest uploads {} (p50 {:?}, max {:?}, 503s {refused})",
        refused_at.len(),
        refused_at.first(),
        refused_at.last(),
        cut_at.len(),
        cut_at.first(),
        cut_at.last(),
        lat.len(),
        lat_sorted.get(lat_sorted.len() / 2),
        lat_sorted.last()
    );
    assert_eq!(
        open_at_end, 0,
        "slowloris connections outlived the 3 s head timeout"
    );
    // Each was accepted after t0, so a cut seen before HEAD_TIMEOUT came too early; one
    // seen after HEAD_TIMEOUT + SEEN_WITHIN was kept alive past the head timeout (by the
    // trickle, say). The refused ones are answered at once.
    assert!(
        cut_at.len() >= max_conns / 2,
        "only {} connections were cut by the head timeout",
        cut_at.len()
    );
    assert!(
        cut_at[0] >= HEAD_TIMEOUT,
        "a connection was seen cut {:?} after the first was opened, before the {HEAD_TIMEOUT:?} head timeout",
        cut_at[0]
    );
    assert!(
        cut_at[cut_at.len() - 1] <= HEAD_TIMEOUT + SEEN_WITHIN,
        "a connection was seen cut only {:?} after the first was opened, for a {HEAD_TIMEOUT:?} head timeout",
        cut_at[cut_at.len() - 1]
    );
    assert!(
        refused_at.last().is_none_or(|t| *t < HEAD_TIMEOUT),
        "connections were seen refused only at {refused_at:?}, not at once"
    );
    // Each accepted connection costs the daemon one fd. Those past the limit are
    // accepted too, answered 503 and closed within 200 ms: in the first second all of
    // them may be open at once, so the peak is taken after it.
    assert!(
        peak_fds <= base_fds + max_conns + 50,
        "the daemon held {peak_fds} fds with --max-connections {max_conns}"
    );
    assert!(
        lat.len() >= 10,
        "the honest client completed only {} uploads in 7 s",
        lat.len()
    );
    assert!(
        lat_sorted.last().copied().unwrap_or_default() < Duration::from_secs(5),
        "an honest upload took {:?}",
        lat_sorted.last()
    );
    drop(conns);
    assert!(
        eventually(Duration::from_secs(10), || open_fds(pid) <= base_fds + 4),
        "fds after the flood: {} (baseline {base_fds})",
        open_fds(pid)
    );
    assert_alive(&d, "slowloris");
}

/// Connections that are opened and never send a byte are closed by the head timeout
/// too, and do not stop others from being served.
#[test]
fn idle_connection_flood_is_closed_by_the_head_timeout() {
    const IDLE: usize = 500;
    raise_nofile(2048);
    let tmp = TempDir::new("idleflood");
    let d = Daemon::start(&tmp, &["--head-timeout", "2", "--idle-timeout", "2"]);
    let t0 = Instant::now();
    let mut conns: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(("127.0.0.1", d.port)).expect("connect"))
        .collect();
    // Served meanwhile, promptly.
    let t = Instant::now();
    let id = d.create(5);
    assert_eq!(d.patch(&id, 0, b"hello").status, 204);
    let honest = t.elapsed();
    assert!(
        honest < Duration::from_secs(2),
        "honest upload took {honest:?}"
    );
    let mut last_close = Duration::ZERO;
    for s in conns.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!(
                "an idle connection got {:?}",
                String::from_utf8_lossy(&b[..n])
            ),
        }
        last_close = last_close.max(t0.elapsed());
    }
    eprintln!(
        "{IDLE} idle connections: all closed within {last_close:?}; honest upload {honest:?}"
    );
    assert!(
        last_close < Duration::from_secs(6),
        "idle connections held for {last_close:?} with a 2 s head timeout"
    );
    assert_alive(&d, "idle flood");
}

// --------------------------------------------------------------------- oversized input

/// Heads, headers, metadata, chunk lines and integers at and past their limits: each
/// is answered with the documented 4xx, and none with a 5xx.
#[test]
fn oversized_and_out_of_range_input_gets_4xx() {
    let tmp = TempDir::new("oversize");
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "getting,creation,termination,creation-with-upload,creation-defer-length",
        ],
    );
    let host = d.host();
    let (id, deferred) = ("fresh", "fresh-deferred");
    let post = |headers: &[(&str, &str)]| {
        Req::new("POST", "/files")
            .tus()
            .headers(headers)
            .to_bytes(&host)
    };
    // Each PATCH case gets an upload of its own, so that a case the server is still
    // winding down cannot answer 423 for the next one.
    let patch_at = |id: &str, headers: &[(&str, &str)], body: &[u8]| {
        let id = match id {
            "fresh" => d.create(100),
            "fresh-deferred" => d.create_deferred(),
            other => other.to_string(),
        };
        Req::new("PATCH", &format!("/files/{id}"))
            .tus()
            .h(OCTET.0, OCTET.1)
            .headers(headers)
            .body(body)
            .raw_framing()
            .to_bytes(&host)
    };
    const P63M1: &str = "9223372036854775807";
    const P63: &str = "9223372036854775808";
    const P64M1: &str = "18446744073709551615";
    const P64: &str = "18446744073709551616";
    const HUGE: &str = "340282366920938463463374607431768211456";
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_header = format!("X-Big: {}\r\n", "b".repeat(70 * 1024));
    let meta_over = format!("k {}", "A".repeat(16 * 1024 + 4));
    let meta_many: String = (0..2000)
        .map(|i| format!("k{i} YQ=="))
        .collect::<Vec<_>>()
        .join(",");
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000));
    let many_ext = format!("5{}\r\nhello\r\n0\r\n\r\n", ";a=b".repeat(900));
    let quoted_ext = "5;name=\"va\\\"lue\"\r\nhello\r\n0\r\n\r\n".to_string();

    // (what, request bytes, statuses allowed)
    let mut cases: Vec<(String, Vec<u8>, &[u16])> = vec![
        (
            "150 header fields".into(),
            format!("OPTIONS /files HTTP/1.1\r\nHost: {host}\r\n{many_headers}\r\n").into_bytes(),
            &[431],
        ),
        (
            "a 70 KiB header".into(),
            format!("OPTIONS /files HTTP/1.1\r\nHost: {host}\r\n{big_header}\r\n").into_bytes(),
            &[431],
        ),
        (
            "a 9 KiB URI".into(),
            format!(
                "HEAD /files/{} HTTP/1.1\r\nHost: {host}\r\n\r\n",
                "x".repeat(9000)
            )
            .into_bytes(),
            &[414],
        ),
        (
            "metadata over 16 KiB".into(),
            post(&[("Upload-Length", "10"), ("Upload-Metadata", &meta_over)]),
            &[400],
        ),
        (
            "2000 metadata keys over 16 KiB".into(),
            post(&[("Upload-Length", "10"), ("Upload-Metadata", &meta_many)]),
            &[400],
        ),
        (
            "chunk line with a 5000-byte extension".into(),
            patch_at(
                id,
                &[("Upload-Offset", "0"), ("Transfer-Encoding", "chunked")],
                long_ext.as_bytes(),
            ),
            &[400],
        ),
    ];
    for v in [P63, P64M1, P64, HUGE, "-1", "+5", "0x10", "1e3", " ", "5 5"] {
        cases.push((
            format!("Upload-Length {v:?}"),
            post(&[("Upload-Length", v)]),
            &[400],
        ));
        cases.push((
            format!("Upload-Offset {v:?}"),
            patch_at(id, &[("Upload-Offset", v), ("Content-Length", "1")], b"x"),
            &[400],
        ));
        cases.push((
            format!("deferred Upload-Length {v:?} on PATCH"),
            patch_at(
                deferred,
                &[
                    ("Upload-Offset", "0"),
                    ("Upload-Length", v),
                    ("Content-Length", "1"),
                ],
                b"x",
            ),
            &[400],
        ));
    }
    for v in [P63M1, P63, P64M1, P64, HUGE] {
        cases.push((
            format!("Content-Length {v} on a PATCH"),
            patch_at(
                id,
                &[("Upload-Offset", "0"), ("Content-Length", v)],
                b"xxxx",
            ),
            &[400, 413],
        ));
        cases.push((
            format!("Content-Length {v} on a creation-with-upload"),
            post(&[
                ("Upload-Length", "10"),
                (OCTET.0, OCTET.1),
                ("Content-Length", v),
            ]),
            &[400, 413],
        ));
    }
    for v in [
        "ffffffffffffffff",
        "10000000000000000",
        "fffffffffffffffffffffffff",
    ] {
        cases.push((
            format!("chunk size {v}"),
            patch_at(
                id,
                &[("Upload-Offset", "0"), ("Transfer-Encoding", "chunked")],
                format!("{v}\r\nhello{}\r\n0\r\n\r\n", "x".repeat(200)).as_bytes(),
            ),
            &[400, 409, 413],
        ));
    }
    // 2^63-1 itself: a valid tus integer; past --max-file-size or the filesystem: 413.
    cases.push((
        format!("Upload-Offset {P63M1}"),
        patch_at(
            id,
            &[("Upload-Offset", P63M1), ("Content-Length", "1")],
            b"x",
        ),
        &[409],
    ));
    cases.push((
        format!("Upload-Length {P63M1}"),
        post(&[("Upload-Length", P63M1)]),
        &[201, 413],
    ));

    let mut bad = Vec::new();
    for (what, bytes, allowed) in &cases {
        match raw_status(&d, bytes) {
            Some(s) if allowed.contains(&s) => {}
            other => bad.push(format!("{what}: got {other:?}, want one of {allowed:?}")),
        }
    }
    assert!(bad.is_empty(), "unexpected answers:\n{}", bad.join("\n"));

    // Within the limits, the same shapes are accepted.
    let ok_meta: String = (0..500)
        .map(|i| format!("k{i} YQ=="))
        .collect::<Vec<_>>()
        .join(",");
    let r = d.post(&[("Upload-Length", "5"), ("Upload-Metadata", &ok_meta)]);
    assert_eq!(r.status, 201, "500 metadata keys within 16 KiB: {r:?}");
    for (what, body) in [
        ("900 extensions", &many_ext),
        ("a quoted extension", &quoted_ext),
    ] {
        let id = d.create(5);
        let s = raw_status(
            &d,
            &patch_at(
                &id,
                &[("Upload-Offset", "0"), ("Transfer-Encoding", "chunked")],
                body.as_bytes(),
            ),
        );
        assert_eq!(s, Some(204), "chunk line with {what}");
        assert_eq!(d.read_data(&id), b"hello", "{what}");
    }
    assert!(!d.stderr_text().contains("panicked"), "{}", d.stderr_text());
    assert_alive(&d, "oversized input");
}

// ------------------------------------------------------------------- paths and files

/// Every file under `dir` (recursively) with its size, mode and mtime: a fingerprint to
/// check nothing was changed, added or removed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, SystemTime, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                stack.push(p.clone());
            }
            let content = if m.is_file() {
                std::fs::read(&p).unwrap_or_default()
            } else {
                Vec::new()
            };
            out.insert(p, (m.len(), m.mode(), m.modified().unwrap(), content));
        }
    }
    out
}

/// A valid upload (info record and data) written by another daemon into `dir`, to be a
/// target worth reaching from outside it.
fn plant_upload(dir: &Path, content: &[u8]) -> String {
    let tmp = TempDir::new("planter");
    let d = Daemon::builder(&tmp)
        .info_dir(dir.to_path_buf())
        .args(&["--data-dir", dir.to_str().unwrap()])
        .start();
    let id = d.create(content.len() as u64);
    assert_eq!(d.patch(&id, 0, content).status, 204);
    id
}

/// Request targets that try to leave the data directory or to smuggle a path into the
/// ID: none reaches a file outside it (an upload planted next to the data directory is
/// never found), none is answered 2xx, and nothing outside changes.
#[test]
fn traversal_and_malformed_ids_never_leave_the_data_dir() {
    let tmp = TempDir::new("traversal");
    let sentinel = tmp.join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("victim"), b"do not touch").unwrap();
    let outside = plant_upload(&sentinel, b"secret upload outside the data dir");
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "getting,creation,termination,creation-with-upload,creation-defer-length",
        ],
    );
    let inside = d.create(10);
    let before = snapshot(&sentinel);
    let root_before: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();

    let targets = vec![
        format!("/files/../sentinel/{outside}"),
        format!("/files/..%2fsentinel%2f{outside}"),
        format!("/files/..%2Fsentinel%2F{outside}"),
        format!("/files/%2e%2e%2fsentinel%2f{outside}"),
        format!("/files/{inside}/../../sentinel/{outside}"),
        format!("/files/{inside}%2f..%2f..%2fsentinel%2f{outside}"),
        "/files/../sentinel/victim".to_string(),
        "/files/..%2fsentinel%2fvictim".to_string(),
        format!("/files/{}/sentinel/victim", tmp.path().display()),
        format!("/files/{}", sentinel.join("victim").display()),
        format!("/files//{}", sentinel.join(&outside).display()),
        "/files/%2fetc%2fpasswd".to_string(),
        "/files/..".to_string(),
        "/files/.".to_string(),
        format!("/files/{outside}%00"),
        format!("/files/{inside}%00.info"),
        format!("/files/{inside}.info"),
        format!("/files/{}", inside.to_uppercase()),
        format!("/files/{inside}x"),
        format!("/files/{}", "a".repeat(4000)),
        format!("/files/{}", fresh_uuid(99).repeat(20)),
        "/files/%".to_string(),
        "/files/%zz".to_string(),
        format!("/files/{outside}"),
    ];
    let mut bad = Vec::new();
    for t in &targets {
        for method in ["HEAD", "GET", "PATCH", "DELETE", "POST"] {
            let mut req = Req::new(method, t).tus();
            if method == "PATCH" {
                req = req
                    .h(OCTET.0, OCTET.1)
                    .h("Upload-Offset", "0")
                    .body(b"overwrite");
            }
            if method == "POST" {
                req = req.h("Upload-Length", "5");
            }
            let s = raw_status(&d, &req.to_bytes(&d.host()));
            match s {
                // POST to a path that is not the creation URL may be routed to it only
                // when the path is exactly /files: none of these are.
                Some(s) if (400..500).contains(&s) => {}
                other => bad.push(format!("{method} {t}: {other:?}")),
            }
        }
    }
    // A NUL byte, raw, in the request line.
    for raw in [
        format!("HEAD /files/{inside}\0 HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n\r\n"),
        format!("HEAD /files/../sentinel/\0{outside} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        match raw_status(&d, raw.as_bytes()) {
            Some(s) if (400..500).contains(&s) => {}
            None => {}
            other => bad.push(format!("raw NUL in {raw:?}: {other:?}")),
        }
    }
    assert!(
        bad.is_empty(),
        "answers that are not 4xx:\n{}",
        bad.join("\n")
    );
    assert_eq!(
        snapshot(&sentinel),
        before,
        "the sentinel directory changed"
    );
    let root_after: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        root_before, root_after,
        "files appeared next to the data dir"
    );
    // The real upload is untouched by the attempts that named it with a suffix.
    assert_eq!(d.offset(&inside), 0);
    assert_alive(&d, "traversal attempts");
}

/// Symlinks planted in the data and info directories (by whoever can write there) to
/// files outside: the daemon neither writes through them nor serves what they point at.
#[test]
fn planted_symlinks_are_not_followed_out_of_the_data_dir() {
    use std::os::unix::fs::symlink;
    let tmp = TempDir::new("symlink");
    let sentinel = tmp.join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("victim"), b"do not touch").unwrap();
    std::fs::write(sentinel.join("victim-info"), b"do not touch either").unwrap();
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "getting,creation,termination,creation-with-upload,creation-defer-length",
        ],
    );

    // 1. An upload whose data file is replaced by a symlink to a file outside.
    let id = d.create(100);
    std::fs::remove_file(d.data_path(&id)).unwrap();
    symlink(sentinel.join("victim"), d.data_path(&id)).unwrap();
    // 2. An upload whose temporary info record is a planted symlink.
    let id2 = d.create(100);
    let tmp_info = d.info_dir().join(format!("{id2}.info.tmp"));
    symlink(sentinel.join("victim-info"), &tmp_info).unwrap();
    let before = snapshot(&sentinel);

    let mut seen = Vec::new();
    for off in ["0", "12"] {
        let r = d.patch(&id, off.parse().unwrap(), b"overwritten!");
        seen.push(format!("PATCH {off}: {}", r.status));
        assert!(
            r.status != 204,
            "a PATCH wrote through a symlink at {off}: {r:?}"
        );
    }
    let g = d.send(&Req::new("GET", &format!("/files/{id}")));
    seen.push(format!("GET: {}", g.status));
    assert!(
        !String::from_utf8_lossy(&g.body).contains("do not touch"),
        "GET served the symlink's target: {g:?}"
    );
    let r = d.patch(&id2, 0, b"0123456789");
    seen.push(format!("PATCH with a planted .info.tmp: {}", r.status));
    let h = d.head(&id2);
    seen.push(format!("HEAD after it: {}", h.status));
    eprintln!("symlinks: {seen:?}");
    assert_eq!(
        snapshot(&sentinel),
        before,
        "a file outside the data dir changed"
    );
    // DELETE removes the link, never its target.
    let r = d.delete(&id);
    assert!(matches!(r.status, 204 | 404 | 500), "{r:?}");
    assert_eq!(
        std::fs::read(sentinel.join("victim")).unwrap(),
        b"do not touch"
    );
    assert_alive(&d, "planted symlinks");
}

/// A data directory that already holds another server's uploads (and stray files with
/// upload-like names): starting on it and uploading beside them changes none of them.
#[test]
fn another_servers_uploads_survive_start_and_uploads_beside_them() {
    let tmp = TempDir::new("shared-dir");
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The other server's uploads: complete, partial, and a data file with no record.
    let mut theirs = Vec::new();
    {
        let other = Daemon::start(&tmp, &[]);
        for i in 0..5u64 {
            let content = random_bytes(300 + i, 5000);
            let id = other.create(5000);
            let sent = if i % 2 == 0 { 5000 } else { 1234 };
            assert_eq!(other.patch(&id, 0, &content[..sent]).status, 204);
            theirs.push(id);
        }
    }
    let orphan = fresh_uuid(4242);
    std::fs::write(data.join(&orphan), b"orphan data, no record").unwrap();
    std::fs::write(
        data.join(format!("{}.info.tmp", fresh_uuid(4343))),
        b"{ half",
    )
    .unwrap();
    let before = snapshot(&data);

    let d = Daemon::start(&tmp, &[]);
    for i in 0..200u64 {
        let id = d.create(64);
        assert!(
            !theirs.contains(&id) && id != orphan,
            "an ID was reissued: {id}"
        );
        let body = random_bytes(900 + i, 64);
        assert_eq!(d.patch(&id, 0, &body).status, 204);
        if i % 3 == 0 {
            assert_eq!(d.delete(&id).status, 204);
        }
    }
    drop(d);
    let after = snapshot(&data);
    for (p, v) in &before {
        assert_eq!(after.get(p), Some(v), "{p:?} changed or vanished");
    }
}

/// The head timeout bounds the whole head: a client that keeps sending a byte every
/// 200 ms is cut when `--head-timeout` runs out, not kept alive by each byte. (Before
/// this was fixed, each read restarted the timeout.)
#[test]
fn trickled_head_is_cut_at_the_head_timeout() {
    let tmp = TempDir::new("trickle");
    let d = Daemon::start(&tmp, &["--head-timeout", "1"]);
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let head = format!(
        "OPTIONS /files HTTP/1.1\r\nHost: {}\r\nX-Pad: {}\r\n\r\n",
        d.host(),
        "p".repeat(100)
    );
    let t0 = Instant::now();
    let mut cut = None;
    for b in head.as_bytes() {
        if s.write_all(&[*b]).is_err() {
            cut = Some(t0.elapsed());
            break;
        }
        let mut r = [0u8; 64];
        match s.read(&mut r) {
            Ok(0) => {
                cut = Some(t0.elapsed());
                break;
            }
            Ok(n) => panic!(
                "answered a trickled head: {:?}",
                String::from_utf8_lossy(&r[..n])
            ),
            Err(_) => {}
        }
        thread::sleep(Duration::from_millis(200));
    }
    let cut = cut.expect("the trickled head was read to its end: never cut");
    assert!(
        cut >= Duration::from_millis(800) && cut < Duration::from_millis(2500),
        "cut after {cut:?} with a 1 s head timeout"
    );
}
