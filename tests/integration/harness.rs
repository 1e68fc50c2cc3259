//! Test support: temporary directories, the daemon under test, and a tiny raw HTTP/1.1
//! client built on `std::net::TcpStream`.
//!
//! Everything here is bounded in time: every socket has a read and write timeout, every
//! wait has a deadline, and the daemon is killed when its handle is dropped.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest any single socket read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the daemon may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The header every tus request (other than OPTIONS and GET) must carry.
pub const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
/// The PATCH content type.
pub const OCTET: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

// ---------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------

/// A directory under the system temp dir, unique per call, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let base = std::env::temp_dir();
        let path = base.join(format!(
            "tusring-it-{}-{}-{}-{}",
            tag,
            std::process::id(),
            n,
            nanos
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        // Canonical, so that paths the daemon reports (rustus canonicalizes the data dir)
        // compare equal to ours even when the temp dir sits behind a symlink.
        let path = path.canonicalize().expect("canonicalize temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tusring")
}

/// A port that was free a moment ago (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
    l.local_addr().unwrap().port()
}

/// How to start a daemon. Defaults: `--host 127.0.0.1 --port 0 --data-dir <tmp>/data
/// --info-dir <tmp>/data --workers 2`, cwd = the temp dir, no `RUSTUS_*` variables.
#[derive(Clone)]
pub struct DaemonBuilder {
    root: PathBuf,
    data_dir: PathBuf,
    info_dir: PathBuf,
    port: Option<String>,
    workers: bool,
    extra: Vec<String>,
    envs: Vec<(String, String)>,
}

impl DaemonBuilder {
    pub fn new(tmp: &TempDir) -> DaemonBuilder {
        DaemonBuilder {
            root: tmp.path().to_path_buf(),
            data_dir: tmp.join("data"),
            info_dir: tmp.join("data"),
            port: Some("0".into()),
            workers: true,
            extra: Vec::new(),
            envs: Vec::new(),
        }
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.extra.extend(a.iter().map(|s| s.to_string()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.to_string(), v.to_string()));
        self
    }

    pub fn info_dir(mut self, p: PathBuf) -> Self {
        self.info_dir = p;
        self
    }

    /// `None` leaves `--port` off the command line (so env / `.env` decide).
    pub fn port(mut self, p: Option<u16>) -> Self {
        self.port = p.map(|p| p.to_string());
        self
    }

    pub fn command_line(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["--host".into(), "127.0.0.1".into()];
        if let Some(p) = &self.port {
            v.push("--port".into());
            v.push(p.clone());
        }
        v.push("--data-dir".into());
        v.push(self.data_dir.display().to_string());
        v.push("--info-dir".into());
        v.push(self.info_dir.display().to_string());
        if self.workers {
            v.push("--workers".into());
            v.push("2".into());
        }
        v.extend(self.extra.iter().cloned());
        v
    }

    pub fn start(self) -> Daemon {
        match self.try_start() {
            Ok(d) => d,
            Err(e) => panic!("daemon did not start: {e}"),
        }
    }

    pub fn try_start(self) -> Result<Daemon, String> {
        let args = self.command_line();
        let mut cmd = Command::new(binary());
        cmd.args(&args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clear_rustus_env(&mut cmd);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary()))?;
        let stderr_buf = Arc::new(Mutex::new(String::new()));
        let stdout_buf = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let err = child.stderr.take().unwrap();
        {
            let buf = stderr_buf.clone();
            thread::spawn(move || drain_lines(err, buf, Some(tx)));
        }
        let out = child.stdout.take().unwrap();
        {
            let buf = stdout_buf.clone();
            thread::spawn(move || drain_lines(out, buf, None));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no `listening on` line within {START_TIMEOUT:?}; args {args:?}; stderr:\n{}",
                    stderr_buf.lock().unwrap()
                ));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(p) = parse_listening(&line) {
                        break p;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: the process is exiting.
                    let status = wait_timeout(&mut child, Duration::from_secs(5));
                    if status.is_none() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    thread::sleep(Duration::from_millis(50));
                    return Err(format!(
                        "daemon exited before listening ({status:?}); args {args:?}; stderr:\n{}\nstdout:\n{}",
                        stderr_buf.lock().unwrap(),
                        stdout_buf.lock().unwrap()
                    ));
                }
            }
        };
        Ok(Daemon {
            child: Some(child),
            port,
            builder: self,
            stderr: stderr_buf,
            stdout: stdout_buf,
        })
    }
}

/// Variables the test process may have (e.g. when the test run is itself a systemd
/// service) that would change how the daemon starts: systemd's notification, watchdog
/// and socket-activation variables. Tests that want them set them explicitly.
pub const SYSTEMD_VARS: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

pub fn clear_rustus_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("RUSTUS_") {
                cmd.env_remove(k);
            }
        }
    }
    for k in SYSTEMD_VARS {
        cmd.env_remove(k);
    }
}

pub fn drain_lines<R: Read>(r: R, buf: Arc<Mutex<String>>, tx: Option<mpsc::Sender<String>>) {
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let s = String::from_utf8_lossy(&line).to_string();
                buf.lock().unwrap().push_str(&s);
                if let Some(tx) = &tx {
                    let _ = tx.send(s);
                }
            }
        }
    }
}

pub fn parse_listening(line: &str) -> Option<u16> {
    let marker = "listening on http://127.0.0.1:";
    let i = line.find(marker)?;
    let rest = &line[i + marker.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Poll `try_wait` until the child exits or `timeout` passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running daemon. Killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    builder: DaemonBuilder,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Daemon {
    /// Start with the default flags plus `extra`.
    pub fn start(tmp: &TempDir, extra: &[&str]) -> Daemon {
        DaemonBuilder::new(tmp).args(extra).start()
    }

    pub fn builder(tmp: &TempDir) -> DaemonBuilder {
        DaemonBuilder::new(tmp)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/files/", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.builder.data_dir
    }

    pub fn info_dir(&self) -> &Path {
        &self.builder.info_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// SIGTERM through `kill(1)` (no libc in tests).
    pub fn sigterm(&self) {
        let pid = self.pid().to_string();
        let st = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(st.success(), "kill -TERM {pid} failed: {st:?}");
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let st = wait_timeout(child, timeout);
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// Kill this process (if still running) and start a new one with the same flags,
    /// on the same directories.
    pub fn restart(&mut self) {
        self.kill9();
        let fresh = self.builder.clone().start();
        *self = fresh;
    }

    /// A new keep-alive connection.
    pub fn conn(&self) -> Conn {
        Conn::connect(self.port)
    }

    /// One request on a fresh connection.
    pub fn send(&self, req: &Req) -> Response {
        let mut c = self.conn();
        c.request(req)
    }

    // ---- tus shorthands; each asserts `Tus-Resumable: 1.0.0` on the response ----

    pub fn options(&self, path: &str) -> Response {
        let r = self.send(&Req::new("OPTIONS", path));
        r.assert_tus();
        r
    }

    /// POST /files with the given headers (Tus-Resumable is added).
    pub fn post(&self, headers: &[(&str, &str)]) -> Response {
        let r = self.send(&Req::new("POST", "/files").tus().headers(headers));
        r.assert_tus();
        r
    }

    /// Create an upload of `len` bytes; returns its id.
    pub fn create(&self, len: u64) -> String {
        let r = self.post(&[("Upload-Length", &len.to_string())]);
        assert_eq!(r.status, 201, "create: {r:?}");
        upload_id(&r)
    }

    /// Create an upload with a deferred length; returns its id.
    pub fn create_deferred(&self) -> String {
        let r = self.post(&[("Upload-Defer-Length", "1")]);
        assert_eq!(r.status, 201, "create deferred: {r:?}");
        upload_id(&r)
    }

    pub fn head(&self, id: &str) -> Response {
        let r = self.send(&Req::new("HEAD", &format!("/files/{id}")).tus());
        r.assert_tus();
        r
    }

    /// The `Upload-Offset` a HEAD reports (asserts 200).
    pub fn offset(&self, id: &str) -> u64 {
        let r = self.head(id);
        assert_eq!(r.status, 200, "HEAD {id}: {r:?}");
        r.upload_offset()
    }

    pub fn patch(&self, id: &str, offset: u64, body: &[u8]) -> Response {
        self.patch_with(id, offset, body, &[])
    }

    pub fn patch_with(
        &self,
        id: &str,
        offset: u64,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Response {
        let r = self.send(&patch_req(id, offset, body).headers(headers));
        r.assert_tus();
        r
    }

    /// A PATCH that resumes after an interrupted one. The interrupted request may still be
    /// winding down (its bytes already visible) for a moment, so a 423 is retried for up to
    /// 3 s, as a real client would; any other status is returned at once.
    pub fn patch_resume(&self, id: &str, offset: u64, body: &[u8]) -> Response {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let r = self.patch(id, offset, body);
            if r.status != 423 || Instant::now() >= deadline {
                return r;
            }
            eprintln!("note: resume PATCH of {id} at {offset} got 423; retrying");
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn delete(&self, id: &str) -> Response {
        let r = self.send(&Req::new("DELETE", &format!("/files/{id}")).tus());
        r.assert_tus();
        r
    }

    /// Poll HEAD until `Upload-Offset` stops changing and equals `want`, for up to
    /// `timeout`. Returns the last offset seen.
    pub fn wait_offset(&self, id: &str, want: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            last = self.offset(id);
            if last == want || Instant::now() >= deadline {
                return last;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Path of an upload's data file when no `--dir-structure` is set.
    pub fn data_path(&self, id: &str) -> PathBuf {
        self.data_dir().join(id)
    }

    pub fn info_path(&self, id: &str) -> PathBuf {
        self.info_dir().join(format!("{id}.info"))
    }

    /// Read the data file wherever it lives under the data dir.
    pub fn read_data(&self, id: &str) -> Vec<u8> {
        let p = find_file(self.data_dir(), id)
            .unwrap_or_else(|| panic!("no data file for {id} under {:?}", self.data_dir()));
        std::fs::read(&p).unwrap_or_else(|e| panic!("read {p:?}: {e}"))
    }

    /// Wait (up to 5 s) for an access-log line on stderr that contains every needle.
    pub fn wait_log_line(&self, needles: &[&str]) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.stderr_text();
            if let Some(l) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Some(l.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Find a regular file named `name` anywhere under `dir`.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(_) => continue,
        };
        for e in rd.flatten() {
            let p = e.path();
            let ft = match e.file_type() {
                Ok(ft) => ft,
                Err(_) => continue,
            };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && e.file_name().to_str() == Some(name) {
                return Some(p);
            }
        }
    }
    None
}

/// All regular files under `dir` (recursively), sorted.
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(ft) if ft.is_dir() => stack.push(p),
                    Ok(ft) if ft.is_file() => out.push(p),
                    _ => {}
                }
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// A request to be serialised by hand. `Host` is added from the connection unless set;
/// `Content-Length` is added for a body (or for POST/PATCH/PUT) unless the request
/// already carries `Content-Length` or `Transfer-Encoding`, or `raw_framing()` was called.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    auto_framing: bool,
    auto_host: bool,
}

impl Req {
    pub fn new(method: &str, target: &str) -> Req {
        Req {
            method: method.to_string(),
            target: target.to_string(),
            version: "HTTP/1.1".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            auto_framing: true,
            auto_host: true,
        }
    }

    pub fn h(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn headers(mut self, hs: &[(&str, &str)]) -> Req {
        for (k, v) in hs {
            self.headers.push((k.to_string(), v.to_string()));
        }
        self
    }

    pub fn tus(self) -> Req {
        self.h(TUS.0, TUS.1)
    }

    pub fn body(mut self, b: &[u8]) -> Req {
        self.body = b.to_vec();
        self
    }

    pub fn version(mut self, v: &str) -> Req {
        self.version = v.to_string();
        self
    }

    /// Send the headers and body exactly as given (no automatic Content-Length).
    pub fn raw_framing(mut self) -> Req {
        self.auto_framing = false;
        self
    }

    pub fn no_host(mut self) -> Req {
        self.auto_host = false;
        self
    }

    fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// The request head (through the blank line).
    pub fn head_bytes(&self, host: &str) -> Vec<u8> {
        let mut s = format!("{} {} {}\r\n", self.method, self.target, self.version);
        if self.auto_host && !self.has("host") {
            let _ = write!(s, "Host: {host}\r\n");
        }
        for (k, v) in &self.headers {
            let _ = write!(s, "{k}: {v}\r\n");
        }
        if self.auto_framing
            && !self.has("content-length")
            && !self.has("transfer-encoding")
            && (!self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PATCH" | "PUT"))
        {
            let _ = write!(s, "Content-Length: {}\r\n", self.body.len());
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut v = self.head_bytes(host);
        v.extend_from_slice(&self.body);
        v
    }
}

/// A PATCH of `body` at `offset` (Tus-Resumable, Content-Type and Upload-Offset set).
pub fn patch_req(id: &str, offset: u64, body: &[u8]) -> Req {
    Req::new("PATCH", &format!("/files/{id}"))
        .tus()
        .h(OCTET.0, OCTET.1)
        .h("Upload-Offset", &offset.to_string())
        .body(body)
}

/// Encode `body` as a chunked transfer-coding with chunks of `chunk` bytes.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Interim (1xx) responses that came before this one, by status.
    pub interim: Vec<u16>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.version, self.status, self.reason)?;
        for (k, v) in &self.headers {
            write!(f, "\n  {k}: {v}")?;
        }
        if !self.interim.is_empty() {
            write!(f, "\n  (interim: {:?})", self.interim)?;
        }
        if !self.body.is_empty() {
            let shown = &self.body[..self.body.len().min(300)];
            write!(f, "\n  body: {:?}", String::from_utf8_lossy(shown))?;
        }
        Ok(())
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// `Upload-Offset` as a number (panics with the response if absent or bad).
    pub fn upload_offset(&self) -> u64 {
        let v = self
            .header("Upload-Offset")
            .unwrap_or_else(|| panic!("no Upload-Offset in {self:?}"));
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad Upload-Offset {v:?} in {self:?}"))
    }

    pub fn upload_length(&self) -> Option<u64> {
        self.header("Upload-Length")
            .map(|v| v.trim().parse().expect("numeric Upload-Length"))
    }

    pub fn assert_tus(&self) {
        assert_eq!(
            self.header("Tus-Resumable"),
            Some("1.0.0"),
            "every response under /files must carry Tus-Resumable: 1.0.0; got {self:?}"
        );
    }

    pub fn assert_status(&self, want: u16, what: &str) {
        assert_eq!(self.status, want, "{what}: {self:?}");
    }
}

/// The upload id: the last path segment of `Location`, checked to be a lowercase UUID v4.
pub fn upload_id(r: &Response) -> String {
    let loc = r
        .header("Location")
        .unwrap_or_else(|| panic!("no Location in {r:?}"));
    let id = loc
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        is_uuid_v4(&id),
        "id {id:?} from Location {loc:?} is not a UUID v4"
    );
    id
}

/// The last path segment of `Location`, whatever it is (an ID a hook chose).
pub fn location_id(r: &Response) -> String {
    let loc = r
        .header("Location")
        .unwrap_or_else(|| panic!("no Location in {r:?}"));
    loc.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        };
        if !ok {
            return false;
        }
    }
    b[14] == b'4' && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// A random-looking UUID v4 string that the server never issued.
pub fn fresh_uuid(seed: u64) -> String {
    let bytes = random_bytes(seed ^ 0x5eed, 16);
    let mut h = String::new();
    for b in bytes {
        let _ = write!(h, "{b:02x}");
    }
    let mut v: Vec<char> = h.chars().collect();
    v[12] = '4';
    v[16] = 'a';
    let h: String = v.into_iter().collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

// ---------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------

/// What happened when we waited for the peer to close.
#[derive(Debug)]
pub enum CloseOutcome {
    /// EOF or reset, after this long; `extra` holds any bytes received meanwhile.
    Closed { after: Duration, extra: Vec<u8> },
    /// Still open at the deadline.
    StillOpen { extra: Vec<u8> },
}

pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub host: String,
    pending: VecDeque<String>,
}

impl Conn {
    pub fn connect(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
            host: format!("127.0.0.1:{port}"),
            pending: VecDeque::new(),
        }
    }

    /// Write raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Write a whole request and remember its method for framing the response.
    pub fn send(&mut self, req: &Req) {
        let bytes = req.to_bytes(&self.host);
        self.send_raw(&bytes)
            .unwrap_or_else(|e| panic!("send {} {}: {e}", req.method, req.target));
        self.pending.push_back(req.method.clone());
    }

    /// Write only the head of a request (its body is to be sent with `send_raw`).
    pub fn send_head(&mut self, req: &Req) {
        let bytes = req.head_bytes(&self.host);
        self.send_raw(&bytes)
            .unwrap_or_else(|e| panic!("send head {} {}: {e}", req.method, req.target));
        self.pending.push_back(req.method.clone());
    }

    /// Write several whole requests with a single write (pipelining).
    pub fn send_pipelined(&mut self, reqs: &[Req]) {
        let mut all = Vec::new();
        for r in reqs {
            all.extend(r.to_bytes(&self.host));
            self.pending.push_back(r.method.clone());
        }
        self.send_raw(&all).expect("send pipelined requests");
    }

    /// Note that a response to `method` is expected (for bytes sent with `send_raw`).
    pub fn expect_response_to(&mut self, method: &str) {
        self.pending.push_back(method.to_string());
    }

    /// Send and read the final response.
    pub fn request(&mut self, req: &Req) -> Response {
        self.send(req);
        self.read_response()
            .unwrap_or_else(|e| panic!("{} {}: reading response: {e}", req.method, req.target))
    }

    /// Read the final response to the oldest request sent through `send`/`send_head`,
    /// skipping interim (1xx) responses and recording them in `interim`.
    pub fn read_response(&mut self) -> io::Result<Response> {
        let method = self.pending.pop_front().unwrap_or_else(|| "GET".into());
        let mut interim = Vec::new();
        loop {
            let mut r = self.read_message(method == "HEAD")?;
            if (100..200).contains(&r.status) {
                interim.push(r.status);
                continue;
            }
            r.interim = interim;
            return Ok(r);
        }
    }

    /// Read the next message, interim or final, for a request with `method` (the
    /// pending queue is popped only when the message is final).
    pub fn read_next(&mut self) -> io::Result<Response> {
        let is_head = self.pending.front().map(|m| m == "HEAD").unwrap_or(false);
        let r = self.read_message(is_head)?;
        if !(100..200).contains(&r.status) {
            self.pending.pop_front();
        }
        Ok(r)
    }

    /// Read the next message, interim or final, waiting at most `timeout` for it to begin.
    pub fn read_next_within(&mut self, timeout: Duration) -> io::Result<Response> {
        self.stream.set_read_timeout(Some(timeout))?;
        let r = self.read_next();
        self.stream.set_read_timeout(Some(IO_TIMEOUT))?;
        r
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn read_message(&mut self, is_head: bool) -> io::Result<Response> {
        // Head.
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > 1 << 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response head too large",
                ));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a full response head (got {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        let text = String::from_utf8_lossy(&head[..end]).to_string();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status: u16 = parts.next().unwrap_or("").parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
        let reason = parts.next().unwrap_or("").to_string();
        if !version.starts_with("HTTP/1.") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            ));
        }
        let mut headers = Vec::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad header line {l:?}"),
                ));
            }
        }
        let mut r = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            interim: Vec::new(),
        };
        // Body.
        if (100..200).contains(&status) || status == 204 || status == 304 || is_head {
            return Ok(r);
        }
        let chunked_te = r
            .header("Transfer-Encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false);
        if chunked_te {
            r.body = self.read_chunked_body()?;
        } else if let Some(cl) = r.header("Content-Length") {
            let n: usize = cl
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
            while self.buf.len() < n {
                if self.fill()? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                }
            }
            r.body = self.buf.drain(..n).collect();
        } else {
            // Delimited by close.
            while self.fill()? != 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        Ok(r)
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(line[..i].to_vec());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "eof in chunked body",
                ));
            }
        }
    }

    fn read_chunked_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let line = String::from_utf8_lossy(&line).to_string();
            let size_str = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_str, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers until the blank line.
                loop {
                    if self.read_line()?.is_empty() {
                        return Ok(body);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if self.fill()? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in chunk"));
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Wait up to `timeout` for the server to close the connection (EOF or reset).
    pub fn wait_closed(&mut self, timeout: Duration) -> CloseOutcome {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut extra = std::mem::take(&mut self.buf);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return CloseOutcome::StillOpen { extra };
            }
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut tmp = [0u8; 16 * 1024];
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    return CloseOutcome::Closed {
                        after: start.elapsed(),
                        extra,
                    }
                }
                Ok(n) => extra.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return CloseOutcome::StillOpen { extra };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    return CloseOutcome::Closed {
                        after: start.elapsed(),
                        extra,
                    }
                }
            }
        }
    }

    /// Assert the server closes the connection within `timeout`; returns how long it took.
    pub fn assert_closed(&mut self, timeout: Duration, what: &str) -> Duration {
        match self.wait_closed(timeout) {
            CloseOutcome::Closed { after, .. } => after,
            CloseOutcome::StillOpen { extra } => panic!(
                "{what}: connection still open after {timeout:?} (extra bytes {:?})",
                String::from_utf8_lossy(&extra)
            ),
        }
    }

    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (splitmix64).
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Assert two byte strings are equal without dumping megabytes on failure.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first_diff = got
        .iter()
        .zip(want.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: bytes differ (got {} bytes, want {} bytes, first difference at {})",
        got.len(),
        want.len(),
        first_diff
    );
}

// ---------------------------------------------------------------------------------------
// Metadata and JSON helpers
// ---------------------------------------------------------------------------------------

/// Parse an `Upload-Metadata` value into sorted (key, base64 value) pairs; a key with no
/// value gets "".
pub fn parse_metadata(v: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once(' ') {
            Some((k, v)) => (k.to_string(), v.trim().to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect();
    out.sort();
    out
}

/// The top-level keys of a JSON object, in the order they appear in the text.
pub fn json_top_level_keys(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut keys = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    // Whether the next string at depth 1 is a key (after `{` or `,`).
    let mut expect_key = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'{' | b'[' => {
                depth += 1;
                expect_key = c == b'{' && depth == 1;
                i += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                i += 1;
            }
            b',' => {
                if depth == 1 {
                    expect_key = true;
                }
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if depth == 1 && expect_key {
                    keys.push(text[start..j].to_string());
                    expect_key = false;
                }
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    keys
}

/// The field order of a rustus `.info` record.
pub const INFO_KEYS: [&str; 11] = [
    "id",
    "offset",
    "length",
    "path",
    "created_at",
    "deferred_size",
    "is_partial",
    "is_final",
    "parts",
    "storage",
    "metadata",
];

/// Read and parse `<info-dir>/<id>.info`, checking the field order.
pub fn read_info(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    let keys = json_top_level_keys(&text);
    assert_eq!(keys, INFO_KEYS, "field order of {path:?}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path:?}: {e}: {text}"))
}

/// (year, month) in UTC of a unix timestamp (month 1..=12).
pub fn utc_year_month(unix: i64) -> (i64, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m)
}

/// Run the binary with `args` in `cwd` and wait (at most 10 s) for it to exit.
/// Returns (exit code, stdout, stderr); the code is None if killed by a signal.
pub fn run_cli(args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clear_rustus_env(&mut cmd);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tusring");
    let out_buf = Arc::new(Mutex::new(String::new()));
    let err_buf = Arc::new(Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let t1 = {
        let b = out_buf.clone();
        thread::spawn(move || drain_lines(out, b, None))
    };
    let t2 = {
        let b = err_buf.clone();
        thread::spawn(move || drain_lines(err, b, None))
    };
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "tusring {args:?} did not exit within 10 s; stderr:\n{}",
            err_buf.lock().unwrap()
        );
    }
    let _ = t1.join();
    let _ = t2.join();
    let code = status.unwrap().code();
    let o = out_buf.lock().unwrap().clone();
    let e = err_buf.lock().unwrap().clone();
    (code, o, e)
}

/// A Python that can run `import <modules>`: `$TUSRING_PYTHON`, the venv that
/// scripts/test.sh makes (target/interop-venv), or `python3`.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("TUSRING_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    candidates
        .push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python"));
    candidates.push(PathBuf::from("python3"));
    let import = format!("import {modules}");
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", &import])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Poll `f` every 50 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Open connections per core thread (`tusring_connections{core="i"}` of `/metrics`),
/// read over `c`, in core order.
pub fn connections_per_core(c: &mut Conn) -> Vec<u64> {
    let r = c.request(&Req::new("GET", "/metrics"));
    assert_eq!(r.status, 200, "{r:?}");
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with("tusring_connections{core="))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// The value of an unlabelled metric from `/metrics`, if it is there.
pub fn metric(d: &Daemon, name: &str) -> Option<f64> {
    let r = d.send(&Req::new("GET", "/metrics"));
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------
// A server that goes away: a TCP proxy in front of the real one
// ---------------------------------------------------------------------------------------

/// Forwards 127.0.0.1:`port` to `target` (a broker, a NATS server) while up; while down
/// nothing listens there (connections are refused) and the connections it carried are
/// cut, as when the server goes away, without stopping the real one. While stalled, the
/// connections stay open but every byte either way is read and thrown away (a network
/// that loses what is in flight).
pub struct TcpProxy {
    port: u16,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TcpProxy {
    /// A proxy to `target` (`host:port`) that starts down.
    pub fn down(target: String) -> TcpProxy {
        let port = free_port();
        let up = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, st, s) = (up.clone(), stalled.clone(), stop.clone());
        let thread = thread::spawn(move || proxy_loop(port, &target, &u, &st, &s));
        TcpProxy {
            port,
            up,
            stalled,
            stop,
            thread: Some(thread),
        }
    }

    /// The loopback port it listens on while up.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Throws away every byte either way (connections stay open) until set back.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_loop(
    port: u16,
    target: &str,
    up: &AtomicBool,
    stalled: &Arc<AtomicBool>,
    stop: &AtomicBool,
) {
    let mut open: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if !up.load(Ordering::SeqCst) {
            for s in open.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        listener.set_nonblocking(true).expect("nonblocking");
        while up.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    for (mut from, mut to) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server.try_clone().unwrap(), client.try_clone().unwrap()),
                    ] {
                        let stalled = stalled.clone();
                        thread::spawn(move || {
                            let mut buf = [0u8; 16 * 1024];
                            loop {
                                let n = match from.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                if !stalled.load(Ordering::SeqCst)
                                    && to.write_all(&buf[..n]).is_err()
                                {
                                    break;
                                }
                            }
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        });
                    }
                    open.push(client);
                    open.push(server);
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    for s in open {
        let _ = s.shutdown(Shutdown::Both);
    }
}
