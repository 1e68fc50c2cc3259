//! A real browser uploading cross-origin: headless Chromium (Debian's `chromium`, driven by
//! playwright-core from `tests/interop/browser_upload.mjs`) opens a page served by this test
//! from one loopback origin (`http://127.0.0.1:<page port>`), and the page uploads to tusring
//! on another (`http://127.0.0.1:<tusring port>`) with the browser bundles of tus-js-client and
//! Uppy (`tests/interop/browser_page.html`). So every tus request is cross-origin: Chromium
//! sends preflights, reads `Location` and `Upload-Offset` only if they are exposed, and blocks
//! everything when tusring's `--cors` does not list the page's origin. The page also reads an
//! upload back with `fetch()` (GET) and terminates one (a preflighted DELETE).
//!
//! Chromium is installed by `scripts/test.sh` (apt-get), the npm packages by its `npm ci` in
//! `tests/interop`. When one is missing the tests are skipped with a loud message, unless
//! `TUSRING_REQUIRE_INTEROP` is set (as `scripts/test.sh` does), in which case they fail.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Bytes tus-js-client uploads: six whole chunks and a short one.
const TUSJS_SIZE: usize = 3 * CHUNK + 123;
/// Bytes Uppy uploads: four whole chunks and a short one.
const UPPY_SIZE: usize = 2 * CHUNK + 7;
/// The clients' `chunkSize`: one PATCH per chunk.
const CHUNK: usize = 512 << 10;
/// Bytes Uppy uploads in one PATCH that it pauses mid-body and resumes.
const PAUSE_SIZE: usize = 6 << 20;
/// Upload throughput (bytes/s) while that happens, so that the pause lands mid-body (the
/// page pauses between 1/16 and 3/4 of the bytes: a window of two seconds).
const PAUSE_BPS: usize = 2 << 20;
/// How long the page may take in the browser (the driver's own deadline, in ms).
const PAGE_TIMEOUT_MS: u64 = 60_000;
/// How long the driver process may run before it is killed.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(120);
/// The browser the driver starts (unless `$TUSRING_CHROMIUM` says otherwise).
const CHROMIUM: &str = "/usr/bin/chromium";

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
}

fn required() -> bool {
    std::env::var_os("TUSRING_REQUIRE_INTEROP").is_some_and(|v| !v.is_empty())
}

/// Skip (loudly) or fail when something the test needs is not installed.
fn missing(what: &str) {
    if required() {
        panic!("{what} is not installed and TUSRING_REQUIRE_INTEROP is set; run scripts/test.sh");
    }
    // Straight to fd 2, past the test harness's output capture, so it shows in a normal run.
    let bang = "!".repeat(78);
    let msg = format!(
        "\n{bang}\n!!! SKIPPED browser test: {what} is not installed.\n\
         !!! Run scripts/test.sh (or set TUSRING_REQUIRE_INTEROP=1 to make this fail).\n{bang}\n\n"
    );
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

fn chromium() -> PathBuf {
    std::env::var_os("TUSRING_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CHROMIUM))
}

/// `node`, if it runs and the browser, the driver's packages and the bundles are installed;
/// otherwise skips or fails (see [`missing`]).
fn node() -> Option<PathBuf> {
    let modules = interop_dir().join("node_modules");
    for (pkg, what) in [
        (
            "playwright-core",
            "playwright-core (npm package in tests/interop)",
        ),
        (
            "tus-js-client",
            "tus-js-client (npm package in tests/interop)",
        ),
        ("uppy", "uppy (npm package in tests/interop)"),
    ] {
        if !modules.join(pkg).join("package.json").is_file() {
            missing(what);
            return None;
        }
    }
    if !chromium().is_file() {
        missing(&format!(
            "Chromium ({}, Debian package `chromium`)",
            chromium().display()
        ));
        return None;
    }
    let node = PathBuf::from(std::env::var_os("TUSRING_NODE").unwrap_or_else(|| "node".into()));
    let runs = Command::new(&node)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        missing("node (Node.js 20)");
        return None;
    }
    Some(node)
}

// ---------------------------------------------------------------------------------------
// The page's origin: a tiny static file server
// ---------------------------------------------------------------------------------------

/// How long the page server waits for a request's head before dropping the connection.
const PAGE_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request head the page server reads.
const PAGE_MAX_HEAD: usize = 16 << 10;

/// The files the page server serves: URL path, file, Content-Type.
fn page_files() -> Vec<(&'static str, PathBuf, &'static str)> {
    let dir = interop_dir();
    vec![
        (
            "/browser_page.html",
            dir.join("browser_page.html"),
            "text/html; charset=utf-8",
        ),
        (
            "/tus.min.js",
            dir.join("node_modules/tus-js-client/dist/tus.min.js"),
            "text/javascript",
        ),
        (
            "/uppy.min.mjs",
            dir.join("node_modules/uppy/dist/uppy.min.mjs"),
            "text/javascript",
        ),
    ]
}

/// Serves [`page_files`] over HTTP/1.1 on 127.0.0.1 (one request per connection, each on
/// its own thread) until dropped. Its origin is the page's: `http://127.0.0.1:<port>`.
struct PageServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PageServer {
    fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let files = Arc::new(page_files());
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    // A thread per connection: Chromium may open a socket it sends nothing
                    // on (a preconnect), which must not hold up the others.
                    if let Ok(conn) = conn {
                        let files = files.clone();
                        thread::spawn(move || serve_one(conn, &files));
                    }
                }
            })
        };
        PageServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one GET: the file, or 404.
fn serve_one(mut conn: TcpStream, files: &[(&str, PathBuf, &str)]) -> std::io::Result<()> {
    conn.set_read_timeout(Some(PAGE_IO_TIMEOUT))?;
    conn.set_write_timeout(Some(PAGE_IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() > PAGE_MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let found = files.iter().find(|(p, _, _)| *p == path);
    let (status, ctype, body) = match found.map(|(_, f, t)| (std::fs::read(f), *t)) {
        Some((Ok(body), t)) => ("200 OK", t, body),
        _ => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(&body)
}

// ---------------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------------

/// Runs the driver against the page (bounded by [`DRIVER_TIMEOUT`]) and returns its JSON
/// report; panics when the driver fails or times out.
fn run_browser(node: &Path, page_url: &str) -> serde_json::Value {
    let mut child = Command::new(node)
        .arg(interop_dir().join("browser_upload.mjs"))
        .arg(page_url)
        .arg(PAGE_TIMEOUT_MS.to_string())
        .env("TUSRING_CHROMIUM", chromium())
        .current_dir(interop_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the browser driver: {e}"));
    let collect = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).to_string()
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = wait_timeout(&mut child, DRIVER_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("browser driver failed ({s}):\nstdout:\n{stdout}\nstderr:\n{stderr}"),
        None => panic!(
            "browser driver did not finish within {DRIVER_TIMEOUT:?}:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ),
    }
    eprintln!("browser driver: done in {:?}", start.elapsed());
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let line = line.unwrap_or_else(|| panic!("no JSON from the driver:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("driver JSON {e}: {line}"))
}

/// The page's URL, uploading to `endpoint` with bytes from `seed`; with `pause`, also
/// Uppy's pause and resume.
fn page_url(page: &PageServer, endpoint: &str, seed: u64, pause: bool) -> String {
    let mut url = format!(
        "{}/browser_page.html?endpoint={endpoint}&seed={seed}&tus_size={TUSJS_SIZE}\
         &uppy_size={UPPY_SIZE}&chunk={CHUNK}",
        page.origin()
    );
    if pause {
        url.push_str(&format!("&pause_size={PAUSE_SIZE}&pause_bps={PAUSE_BPS}"));
    }
    url
}

/// The client's `requests` counts as (method, count), sorted.
fn request_counts(client: &serde_json::Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = client["requests"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn counts(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(m, n)| (m.to_string(), *n)).collect()
}

/// Checks a finished upload at `url`: under the endpoint, complete, byte-exact, and with
/// the expected metadata in its info record.
fn verify_upload(d: &Daemon, url: &str, data: &[u8], metadata: &[(&str, &str)], what: &str) {
    assert!(
        url.starts_with(&d.endpoint()),
        "{what}: upload URL {url:?} is not under {}",
        d.endpoint()
    );
    let id = url.trim_end_matches('/').rsplit('/').next().unwrap();
    assert!(is_uuid_v4(id), "{what}: id {id:?}");
    let h = d.head(id);
    assert_eq!(h.status, 200, "{what}: {h:?}");
    assert_eq!(h.upload_offset(), data.len() as u64, "{what}: offset");
    assert_bytes_eq(&d.read_data(id), data, what);
    let info = read_info(&d.info_path(id));
    assert_eq!(info["offset"], data.len() as u64, "{what}: {info}");
    assert_eq!(info["length"], data.len() as u64, "{what}: {info}");
    for (k, v) in metadata {
        assert_eq!(info["metadata"][k], *v, "{what}: metadata {k}: {info}");
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn browser_uploads_cross_origin_with_tusjs_and_uppy() {
    let Some(node) = node() else { return };
    let page = PageServer::start();
    let tmp = TempDir::new("browser-ok");
    let d = Daemon::start(&tmp, &["--cors", &page.origin()]);
    let seed = 501;
    let report = run_browser(&node, &page_url(&page, &d.endpoint(), seed, true));
    let result = &report["result"];
    let tusjs = &result["tusjs"];
    let uppy = &result["uppy"];
    assert_eq!(tusjs["ok"], true, "tus-js-client failed: {report:#}");
    assert_eq!(uppy["ok"], true, "Uppy failed: {report:#}");

    // tus-js-client: two chunks, abort, then HEAD and the remaining chunks on the same URL.
    let url = tusjs["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(
        tusjs["resumedUrl"], url,
        "resumed another upload: {report:#}"
    );
    assert_eq!(
        request_counts(tusjs),
        counts(&[
            ("HEAD", 1),
            ("PATCH", TUSJS_SIZE.div_ceil(CHUNK) as u64),
            ("POST", 1)
        ]),
        "tus-js-client requests: {report:#}"
    );
    verify_upload(
        &d,
        url,
        &random_bytes(seed, TUSJS_SIZE),
        &[
            ("filename", "tusjs.bin"),
            ("filetype", "application/octet-stream"),
            ("client", "tus-js-client"),
        ],
        "tus-js-client in Chromium",
    );

    assert_eq!(
        tusjs["download"], "match",
        "fetch() read back other bytes: {report:#}"
    );

    // Termination: one chunk, then a (preflighted) DELETE; the upload is gone.
    let term = &result["terminate"];
    assert_eq!(term["ok"], true, "termination failed: {report:#}");
    assert_eq!(
        request_counts(term),
        counts(&[("DELETE", 1), ("PATCH", 1), ("POST", 1)]),
        "terminated upload's requests: {report:#}"
    );
    let gone = term["url"].as_str().unwrap_or_else(|| panic!("{report:#}"));
    assert!(gone.starts_with(&d.endpoint()), "{gone}");
    let gone = gone.rsplit('/').next().unwrap();
    assert_eq!(
        d.head(gone).status,
        404,
        "terminated upload {gone} still there"
    );
    assert!(
        find_file(d.data_dir(), gone).is_none(),
        "data of {gone} kept"
    );

    // Uppy: one POST, one PATCH per chunk.
    let url = uppy["url"].as_str().unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(
        request_counts(uppy),
        counts(&[("PATCH", UPPY_SIZE.div_ceil(CHUNK) as u64), ("POST", 1)]),
        "Uppy requests: {report:#}"
    );
    verify_upload(
        &d,
        url,
        &random_bytes(seed + 1, UPPY_SIZE),
        &[
            ("filename", "uppy.bin"),
            ("filetype", "application/octet-stream"),
            ("client", "uppy"),
        ],
        "Uppy in Chromium",
    );

    // Uppy paused mid-PATCH: the bytes that arrived were kept, HEAD said how many, and the
    // second PATCH sent the rest.
    let paused = &result["uppyPause"];
    assert_eq!(paused["ok"], true, "Uppy pause/resume failed: {report:#}");
    assert!(
        paused["pausedAt"].as_u64().is_some(),
        "never paused: {report:#}"
    );
    let kept = paused["resumedAt"].as_u64().unwrap_or(0);
    assert!(
        kept > 0 && kept < PAUSE_SIZE as u64,
        "HEAD after the pause said {kept} of {PAUSE_SIZE}: {report:#}"
    );
    eprintln!(
        "Uppy paused after sending {} bytes; HEAD said {kept} were stored",
        paused["pausedAt"]
    );
    assert_eq!(
        request_counts(paused),
        counts(&[("HEAD", 1), ("PATCH", 2), ("POST", 1)]),
        "paused Uppy's requests: {report:#}"
    );
    let paused_url = paused["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{report:#}"));
    verify_upload(
        &d,
        paused_url,
        &random_bytes(seed + 3, PAUSE_SIZE),
        &[("filename", "paused.bin"), ("client", "uppy-pause")],
        "Uppy paused and resumed in Chromium",
    );

    assert_eq!(
        list_files(d.data_dir()).len(),
        6,
        "three uploads, data and info each"
    );
    // The browser really preflighted (it caches an answer for Access-Control-Max-Age, so
    // not before every request): at least the creation and the first PATCH of an upload.
    assert!(
        d.wait_log_line(&["OPTIONS /files/ 200"]).is_some(),
        "no preflight of the creation in the access log:\n{}",
        d.stderr_text()
    );
    let id = url.rsplit('/').next().unwrap();
    assert!(
        d.wait_log_line(&[&format!("OPTIONS /files/{id} 200")])
            .is_some(),
        "no preflight of Uppy's PATCH in the access log:\n{}",
        d.stderr_text()
    );
}

#[test]
fn browser_upload_blocked_for_an_origin_not_allowed() {
    let Some(node) = node() else { return };
    let page = PageServer::start();
    let tmp = TempDir::new("browser-refused");
    // Same host and port as the page, another host name: a different origin.
    let other = format!("http://localhost:{}", page.port);
    let d = Daemon::start(&tmp, &["--cors", &other]);
    let report = run_browser(&node, &page_url(&page, &d.endpoint(), 502, false));
    let result = &report["result"];
    for client in ["tusjs", "terminate", "uppy"] {
        let r = &result[client];
        assert_eq!(r["ok"], false, "{client} succeeded: {report:#}");
        assert!(
            r["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{client} reported no error: {report:#}"
        );
        assert_eq!(r["url"], serde_json::Value::Null, "{client}: {report:#}");
        // The creation was attempted (and blocked): nothing after it.
        assert_eq!(
            request_counts(r),
            counts(&[("POST", 1)]),
            "{client}: {report:#}"
        );
    }
    let console = report["console"].to_string();
    assert!(
        console.contains("blocked by CORS policy"),
        "Chromium did not say CORS blocked it: {report:#}"
    );
    assert!(
        d.wait_log_line(&["OPTIONS /files/ 400"]).is_some(),
        "no refused preflight in the access log:\n{}",
        d.stderr_text()
    );
    assert!(
        !d.stderr_text().contains("POST /files/"),
        "a POST got through:\n{}",
        d.stderr_text()
    );
    assert_eq!(
        list_files(d.data_dir()),
        Vec::<PathBuf>::new(),
        "nothing may be stored"
    );
}
