//! Hooks through the real binary: executable hooks (shell scripts written here), HTTP
//! hooks (a small receiver in this file, and the README's FastAPI example under uvicorn).
//!
//! Every wait is bounded; receivers and daemons stop when their handles drop.

use crate::harness::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for an asynchronous post-event to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Executable hooks
// ---------------------------------------------------------------------------------------

/// Writes an executable `#!/bin/sh` script.
fn script(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// A file hook that appends `<event> <files in data dir> <json>` to `log`, and exits
/// with 1 for the events in `refuse`.
fn recording_file_hook(tmp: &TempDir, log: &Path, refuse: &[&str]) -> PathBuf {
    let data = tmp.join("data");
    let refuse_lines: String = refuse
        .iter()
        .map(|e| format!("[ \"$1\" = {e} ] && exit 1\n"))
        .collect();
    script(
        &tmp.join("hook.sh"),
        &format!(
            "n=$(ls -1 '{}' 2>/dev/null | wc -l | tr -d ' ')\n\
             printf '%s %s %s\\n' \"$1\" \"$n\" \"$2\" >> '{}'\n\
             echo \"hook says hello on stdout\"\n{refuse_lines}exit 0",
            data.display(),
            log.display()
        ),
    )
}

/// One recorded hook call.
#[derive(Debug, Clone)]
struct Call {
    event: String,
    /// Files in the data dir when the hook ran (file hook only).
    files: usize,
    json: Value,
    text: String,
}

fn read_calls(log: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let event = parts.next().unwrap().to_string();
            let files = parts.next().unwrap().parse().unwrap();
            let text = parts.next().unwrap_or("").to_string();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("hook got bad JSON ({e}): {text}"));
            Call {
                event,
                files,
                json,
                text,
            }
        })
        .collect()
}

/// Waits until `log` holds `n` calls (and a little more, to catch extra ones).
fn wait_calls(log: &Path, n: usize) -> Vec<Call> {
    let ok = eventually(EVENT_WAIT, || read_calls(log).len() >= n);
    let calls = read_calls(log);
    assert!(
        ok,
        "expected {n} hook calls, got {}: {calls:#?}",
        calls.len()
    );
    calls
}

/// The calls whose upload ID is `id` (any format).
fn calls_for<'a>(calls: &'a [Call], id: &str) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| upload_id_of(&c.json) == id)
        .collect()
}

fn upload_id_of(v: &Value) -> String {
    v.pointer("/upload/id")
        .or_else(|| v.pointer("/Upload/ID"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn events(calls: &[&Call]) -> Vec<String> {
    calls.iter().map(|c| c.event.clone()).collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every object's keys in `text` must come in byte order, as rustus's serde_json output
/// has them.
fn assert_keys_sorted(text: &str) {
    // One entry per open container: `Some(last key)` for an object, `None` for an array.
    let mut stack: Vec<Option<Option<String>>> = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    let mut expect_key = false;
    while i < b.len() {
        match b[i] {
            b'{' => {
                stack.push(Some(None));
                expect_key = true;
            }
            b'[' => {
                stack.push(None);
                expect_key = false;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => expect_key = matches!(stack.last(), Some(Some(_))),
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while b[j] != b'"' {
                    if b[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if expect_key {
                    let key = text[start..j].to_string();
                    if let Some(Some(last)) = stack.last_mut() {
                        if let Some(prev) = last.as_ref() {
                            assert!(
                                *prev < key,
                                "keys out of order: {prev} then {key} in {text}"
                            );
                        }
                        *last = Some(key);
                    }
                    expect_key = false;
                }
                i = j;
            }
            _ => {}
        }
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------
// A tiny HTTP receiver
// ---------------------------------------------------------------------------------------

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    /// Lowercase names.
    headers: Vec<(String, String)>,
    body: String,
    at: Instant,
}

impl Hit {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn event(&self) -> String {
        self.header("hook-name").unwrap_or("").to_string()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("bad JSON {e}: {}", self.body))
    }
}

/// What the receiver answers.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    content_type: Option<String>,
    delay: Duration,
}

impl Answer {
    fn ok() -> Answer {
        Answer {
            status: 200,
            body: String::new(),
            content_type: None,
            delay: Duration::ZERO,
        }
    }
}

type Policy = Arc<dyn Fn(&Hit) -> Answer + Send + Sync>;

/// An HTTP/1.1 receiver on 127.0.0.1 that records every request and answers by
/// `policy`. Stops accepting when dropped.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(policy: impl Fn(&Hit) -> Answer + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let policy: Policy = Arc::new(policy);
        {
            let hits = hits.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let hits = hits.clone();
                            let policy = policy.clone();
                            let stop = stop.clone();
                            thread::spawn(move || serve_conn(s, hits, policy, stop));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Receiver { port, hits, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn wait_hits(&self, n: usize) -> Vec<Hit> {
        let ok = eventually(EVENT_WAIT, || self.hits().len() >= n);
        let hits = self.hits();
        assert!(
            ok,
            "expected {n} hook requests, got {}: {hits:#?}",
            hits.len()
        );
        hits
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_conn(s: TcpStream, hits: Arc<Mutex<Vec<Hit>>>, policy: Policy, stop: Arc<AtomicBool>) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let hit = Hit {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        };
        hits.lock().unwrap().push(hit.clone());
        let a = policy(&hit);
        if !a.delay.is_zero() {
            thread::sleep(a.delay);
        }
        let mut resp = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            a.status,
            a.body.len()
        );
        if let Some(ct) = &a.content_type {
            resp.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&a.body);
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

fn no_files(dir: &Path) {
    let files = list_files(dir);
    assert!(
        files.is_empty(),
        "expected nothing on disk, found {files:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Events, moments and payloads
// ---------------------------------------------------------------------------------------

const DEFAULT_UPLOAD_KEYS: [&str; 11] = [
    "created_at",
    "deferred_size",
    "id",
    "is_final",
    "is_partial",
    "length",
    "metadata",
    "offset",
    "parts",
    "path",
    "storage",
];

fn check_default_shape(c: &Call, uri_key: &str) {
    assert_eq!(keys(&c.json), set(&["request", "upload"]), "{}", c.text);
    assert_eq!(
        keys(&c.json["request"]),
        set(&[uri_key, "headers", "method", "remote_addr"]),
        "{}",
        c.text
    );
    assert_eq!(
        keys(&c.json["upload"]),
        set(&DEFAULT_UPLOAD_KEYS),
        "{}",
        c.text
    );
    assert_keys_sorted(&c.text);
}

#[test]
fn every_event_fires_at_its_moment_with_default_payload() {
    let tmp = TempDir::new("hooks-events");
    let log = tmp.join("calls.log");
    let hook = recording_file_hook(&tmp, &log, &[]);
    let d = Daemon::start(
        &tmp,
        &["--hooks-file", hook.to_str().unwrap(), "--allow-empty"],
    );
    let data = tmp.join("data");

    // POST without a body: pre-create before anything exists, then post-create.
    let r = d.post(&[
        ("Upload-Length", "10"),
        ("Upload-Metadata", "filename dGVzdC50eHQ=,empty"),
        ("Authorization", "Bearer x"),
    ]);
    r.assert_status(201, "create");
    let id = upload_id(&r);
    let calls = wait_calls(&log, 2);
    assert_eq!(
        events(&calls_for(&calls, &id)),
        ["pre-create", "post-create"]
    );
    let (pre, post) = (&calls[0], &calls[1]);
    assert_eq!(
        pre.files, 0,
        "pre-create must run before the data file exists"
    );
    assert_eq!(post.files, 2, "post-create runs after data and info exist");
    for c in [pre, post] {
        check_default_shape(c, "URI");
        let req = &c.json["request"];
        assert_eq!(req["URI"], "/files/");
        assert_eq!(req["method"], "POST");
        assert_eq!(req["remote_addr"], "127.0.0.1");
        assert_eq!(req["headers"]["upload-length"], "10");
        assert_eq!(req["headers"]["tus-resumable"], "1.0.0");
        assert_eq!(req["headers"]["authorization"], "Bearer x");
        assert_eq!(req["headers"]["host"], d.host());
        let up = &c.json["upload"];
        assert_eq!(up["id"], id.as_str());
        assert_eq!(up["offset"], 0);
        assert_eq!(up["length"], 10);
        assert_eq!(up["deferred_size"], false);
        assert_eq!(up["is_final"], false);
        assert_eq!(up["is_partial"], false);
        assert_eq!(up["parts"], Value::Null);
        assert_eq!(up["storage"], "file_storage");
        assert_eq!(up["metadata"]["filename"], "test.txt");
        assert_eq!(up["metadata"]["empty"], "");
        assert!(up["created_at"].as_i64().unwrap() > 1_600_000_000);
    }
    assert_eq!(pre.json["upload"]["path"], Value::Null);
    assert_eq!(
        post.json["upload"]["path"],
        data.join(&id).to_str().unwrap()
    );

    // A PATCH that does not complete: post-receive; the one that completes: post-finish.
    d.patch(&id, 0, b"hello").assert_status(204, "patch 1");
    let calls = wait_calls(&log, 3);
    d.patch(&id, 5, b"world").assert_status(204, "patch 2");
    let calls2 = wait_calls(&log, 4);
    assert_eq!(calls.len(), 3);
    let mine = calls_for(&calls2, &id);
    assert_eq!(
        events(&mine),
        ["pre-create", "post-create", "post-receive", "post-finish"]
    );
    for c in &mine[2..] {
        check_default_shape(c, "URI");
        assert_eq!(c.json["request"]["URI"], format!("/files/{id}/"));
        assert_eq!(c.json["request"]["method"], "PATCH");
        assert_eq!(c.json["request"]["headers"]["content-type"], OCTET.1);
    }
    assert_eq!(mine[2].json["upload"]["offset"], 5);
    assert_eq!(mine[3].json["upload"]["offset"], 10);

    // X-HTTP-Method-Override: the method in the payload is the overridden one.
    let r = d.send(
        &Req::new("POST", &format!("/files/{id}"))
            .tus()
            .h("X-HTTP-Method-Override", "DELETE"),
    );
    r.assert_status(204, "delete by override");
    let calls = wait_calls(&log, 6);
    let mine = calls_for(&calls, &id);
    assert_eq!(
        events(&mine)[4..],
        ["pre-terminate", "post-terminate"],
        "{mine:#?}"
    );
    assert_eq!(
        mine[4].files, 2,
        "pre-terminate runs before anything is removed"
    );
    assert_eq!(mine[5].files, 0, "post-terminate runs after removal");
    for c in &mine[4..] {
        check_default_shape(c, "URI");
        assert_eq!(c.json["request"]["method"], "DELETE");
        assert_eq!(c.json["request"]["URI"], format!("/files/{id}/"));
        assert_eq!(c.json["upload"]["offset"], 10);
    }

    // Creation-with-upload of the whole file: post-finish instead of post-create.
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", "4")
            .h(OCTET.0, OCTET.1)
            .body(b"abcd"),
    );
    r.assert_status(201, "creation-with-upload");
    let full = upload_id(&r);
    // An empty upload (--allow-empty): post-finish too.
    let r = d.post(&[("Upload-Length", "0")]);
    r.assert_status(201, "empty upload");
    let empty = upload_id(&r);
    // Creation-with-upload of part of the file: post-create, with the offset.
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", "8")
            .h(OCTET.0, OCTET.1)
            .body(b"abcd"),
    );
    r.assert_status(201, "partial creation-with-upload");
    let part = upload_id(&r);
    let calls = wait_calls(&log, 12);
    thread::sleep(Duration::from_millis(300));
    let calls_after = read_calls(&log);
    assert_eq!(calls_after.len(), 12, "no extra events: {calls_after:#?}");
    let f = calls_for(&calls, &full);
    assert_eq!(events(&f), ["pre-create", "post-finish"]);
    assert_eq!(f[1].json["upload"]["offset"], 4);
    assert_eq!(f[0].json["upload"]["offset"], 0);
    assert_eq!(f[0].json["upload"]["path"], Value::Null);
    let e = calls_for(&calls, &empty);
    assert_eq!(events(&e), ["pre-create", "post-finish"]);
    let p = calls_for(&calls, &part);
    assert_eq!(events(&p), ["pre-create", "post-create"]);
    assert_eq!(p[1].json["upload"]["offset"], 4);
    // The hook's stdout went to the log with the event and upload ID.
    assert!(
        d.wait_log_line(&["pre-create", &full, "hook says hello on stdout"])
            .is_some(),
        "{}",
        d.stderr_text()
    );
}

#[test]
fn directory_hooks_v2_format_and_filtering() {
    let tmp = TempDir::new("hooks-dir");
    let log = tmp.join("calls.log");
    let dir = tmp.join("hooks.d");
    std::fs::create_dir_all(&dir).unwrap();
    // Hooks for two events only; --hooks names exactly these.
    for event in ["pre-create", "post-finish"] {
        script(
            &dir.join(event),
            &format!(
                "printf '%s 0 %s\\n' {event} \"$1\" >> '{}'\n[ $# -eq 1 ] || exit 9",
                log.display()
            ),
        );
    }
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-dir",
            dir.to_str().unwrap(),
            "--hooks",
            "pre-create,post-finish",
            "--hooks-format",
            "v2",
            "--behind-proxy",
        ],
    );
    let r = d.post(&[
        ("Upload-Length", "3"),
        ("X-Forwarded-For", "9.9.9.9, 10.0.0.1"),
    ]);
    r.assert_status(201, "create");
    let id = upload_id(&r);
    d.patch(&id, 0, b"a").assert_status(204, "patch");
    d.patch(&id, 1, b"bc").assert_status(204, "patch");
    d.delete(&id).assert_status(204, "delete");
    let calls = wait_calls(&log, 2);
    thread::sleep(Duration::from_millis(300));
    let calls = {
        let again = read_calls(&log);
        assert_eq!(
            again.len(),
            calls.len(),
            "filtered events fired: {again:#?}"
        );
        again
    };
    assert_eq!(
        events(&calls.iter().collect::<Vec<_>>()),
        ["pre-create", "post-finish"]
    );
    for c in &calls {
        check_default_shape(c, "uri");
    }
    assert_eq!(calls[0].json["request"]["uri"], "/files/");
    assert_eq!(calls[0].json["request"]["remote_addr"], "9.9.9.9");
    assert_eq!(calls[1].json["request"]["uri"], format!("/files/{id}/"));
    assert_eq!(calls[1].json["request"]["remote_addr"], "127.0.0.1");
    assert_eq!(calls[1].json["upload"]["offset"], 3);
}

#[test]
fn tusd_format_over_http() {
    let tmp = TempDir::new("hooks-tusd");
    let rx = Receiver::start(|_| Answer::ok());
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &rx.url(),
            "--hooks-format",
            "tusd",
            "--hooks",
            "pre-create,post-create",
        ],
    );
    let r = d.post(&[
        ("Upload-Defer-Length", "1"),
        ("Upload-Metadata", "name YQ=="),
        ("X-Repeat", "first"),
        ("X-Repeat", "second"),
    ]);
    r.assert_status(201, "create");
    let id = upload_id(&r);
    let hits = rx.wait_hits(2);
    assert_eq!(
        hits.iter().map(Hit::event).collect::<Vec<_>>(),
        ["pre-create", "post-create"]
    );
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h.path, "/hooks");
        assert_keys_sorted(&h.body);
        let v = h.json();
        assert_eq!(keys(&v), set(&["HTTPRequest", "Upload"]));
        assert_eq!(
            keys(&v["HTTPRequest"]),
            set(&["Header", "Method", "RemoteAddr", "URI"])
        );
        assert_eq!(
            keys(&v["Upload"]),
            set(&[
                "ID",
                "IsFinal",
                "IsPartial",
                "MetaData",
                "Offset",
                "PartialUploads",
                "Size",
                "SizeIsDeferred",
                "Storage"
            ])
        );
        assert_eq!(keys(&v["Upload"]["Storage"]), set(&["Path", "Type"]));
        assert_eq!(v["Upload"]["ID"], id.as_str());
        assert_eq!(v["Upload"]["Size"], Value::Null);
        assert_eq!(v["Upload"]["SizeIsDeferred"], true);
        assert_eq!(v["Upload"]["MetaData"]["name"], "a");
        assert_eq!(v["Upload"]["Storage"]["Type"], "file_storage");
        assert_eq!(v["HTTPRequest"]["Method"], "POST");
        assert_eq!(v["HTTPRequest"]["URI"], "/files/");
        assert_eq!(v["HTTPRequest"]["RemoteAddr"], "127.0.0.1");
        assert_eq!(
            v["HTTPRequest"]["Header"]["upload-defer-length"],
            serde_json::json!(["1"])
        );
        // Repeated headers: the last value wins.
        assert_eq!(
            v["HTTPRequest"]["Header"]["x-repeat"],
            serde_json::json!(["second"])
        );
        let path = &v["Upload"]["Storage"]["Path"];
        if i == 0 {
            assert_eq!(*path, Value::Null);
        } else {
            assert_eq!(path.as_str().unwrap(), d.data_path(&id).to_str().unwrap());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Verdicts
// ---------------------------------------------------------------------------------------

#[test]
fn pre_create_refused_by_exit_code_leaves_nothing() {
    let tmp = TempDir::new("hooks-refuse");
    let log = tmp.join("calls.log");
    let hook = recording_file_hook(&tmp, &log, &["pre-create"]);
    let d = Daemon::start(&tmp, &["--hooks-file", hook.to_str().unwrap()]);
    let r = d.post(&[("Upload-Length", "10")]);
    r.assert_status(400, "refused by exit 1");
    r.assert_tus();
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "Hook invocation failed. Reason: Returned wrong status code"
    );
    assert!(!r.has("Location"));
    // With a body (creation-with-upload), Expect: 100-continue: refused before any byte.
    let mut c = d.conn();
    c.send_head(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", "4")
            .h(OCTET.0, OCTET.1)
            .h("Content-Length", "4")
            .h("Expect", "100-continue"),
    );
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.interim.is_empty(),
        "no 100 Continue before a refusal: {r:?}"
    );
    let calls = wait_calls(&log, 2);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(read_calls(&log).len(), 2, "no post-event after a refusal");
    assert!(calls.iter().all(|c| c.event == "pre-create"));
    no_files(&tmp.join("data"));
}

#[test]
fn pre_terminate_refusal_keeps_the_upload() {
    let tmp = TempDir::new("hooks-keep");
    let log = tmp.join("calls.log");
    let hook = recording_file_hook(&tmp, &log, &["pre-terminate"]);
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-terminate,post-terminate",
        ],
    );
    let id = d.create(5);
    d.patch(&id, 0, b"ab").assert_status(204, "patch");
    let r = d.delete(&id);
    r.assert_status(400, "refused delete");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "Hook invocation failed. Reason: Returned wrong status code"
    );
    assert_eq!(d.offset(&id), 2);
    assert!(d.data_path(&id).is_file() && d.info_path(&id).is_file());
    let calls = wait_calls(&log, 1);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read_calls(&log).len(),
        1,
        "no post-terminate after a refusal"
    );
    assert_eq!(calls[0].event, "pre-terminate");
    assert_eq!(calls[0].json["upload"]["offset"], 2);
    // The upload still works.
    d.patch(&id, 2, b"cde")
        .assert_status(204, "patch after refusal");
}

#[test]
fn missing_directory_hook_refuses_only_its_event() {
    let tmp = TempDir::new("hooks-missing");
    // An upload made before hooks were configured.
    let id = Daemon::start(&tmp, &[]).create(1);
    let dir = tmp.join("hooks.d");
    std::fs::create_dir_all(&dir).unwrap();
    let log = tmp.join("calls.log");
    script(
        &dir.join("pre-terminate"),
        &format!(
            "printf 'pre-terminate 0 %s\\n' \"$1\" >> '{}'",
            log.display()
        ),
    );
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-dir",
            dir.to_str().unwrap(),
            "--hooks",
            "pre-create,pre-terminate",
        ],
    );
    assert!(
        d.wait_log_line(&["directory hook", "pre-create", "not found"])
            .is_some(),
        "{}",
        d.stderr_text()
    );
    for _ in 0..2 {
        let r = d.post(&[("Upload-Length", "1")]);
        r.assert_status(400, "missing pre-create hook");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "Hook invocation failed. Reason: Hook file pre-create not found."
        );
    }
    // Logged once (at startup), not per request.
    let said = d.stderr_text();
    assert_eq!(
        said.lines()
            .filter(|l| l.contains("not found") && l.contains("pre-create"))
            .count(),
        1,
        "{said}"
    );
    // The other event works.
    d.delete(&id).assert_status(204, "delete");
    let calls = wait_calls(&log, 1);
    assert_eq!(calls[0].json["upload"]["id"], id.as_str());
    let files = list_files(&tmp.join("data"));
    assert!(files.is_empty(), "{files:?}");
}

#[test]
fn http_refusal_is_relayed_and_leaves_nothing() {
    let tmp = TempDir::new("hooks-http-refuse");
    let rx = Receiver::start(|h| {
        let auth = h.header("authorization").unwrap_or("");
        match (h.event().as_str(), auth) {
            ("pre-create", "Bearer good") => Answer::ok(),
            ("pre-create", "Bearer plain") => Answer {
                status: 403,
                body: "forbidden by hook".into(),
                content_type: None,
                delay: Duration::ZERO,
            },
            ("pre-create", _) => Answer {
                status: 401,
                body: r#"{"error":"rejected by hook"}"#.into(),
                content_type: Some("application/json".into()),
                delay: Duration::ZERO,
            },
            _ => Answer::ok(),
        }
    });
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &rx.url(),
            "--hooks-http-proxy-headers",
            "Authorization",
        ],
    );
    let r = d.post(&[("Upload-Length", "3")]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body, br#"{"error":"rejected by hook"}"#);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    r.assert_tus();
    let r = d.post(&[("Upload-Length", "3"), ("Authorization", "Bearer plain")]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, b"forbidden by hook");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    no_files(&tmp.join("data"));
    thread::sleep(Duration::from_millis(300));
    assert!(
        rx.hits().iter().all(|h| h.event() == "pre-create"),
        "no post-event after a refusal: {:?}",
        rx.hits()
    );
    let r = d.post(&[("Upload-Length", "3"), ("Authorization", "Bearer good")]);
    r.assert_status(201, "accepted");
    assert_eq!(metric(&d, "tusring_hook_rejected_total"), Some(2.0));
    assert_eq!(metric(&d, "tusring_hook_failed_total"), Some(0.0));
}

#[test]
fn hook_timeouts_and_unreachable_receivers() {
    let tmp = TempDir::new("hooks-timeout");
    let slow = Receiver::start(|_| Answer {
        delay: Duration::from_secs(3),
        ..Answer::ok()
    });
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &slow.url(),
            "--http-hook-timeout",
            "0.5",
        ],
    );
    let started = Instant::now();
    let r = d.post(&[("Upload-Length", "3")]);
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!r.body.is_empty() && !r.body.contains(&b'\n'));
    no_files(&tmp.join("data"));
    drop(d);

    let tmp = TempDir::new("hooks-unreachable");
    let url = format!("http://127.0.0.1:{}/hooks", closed_port());
    let d = Daemon::start(&tmp, &["--hooks-http-urls", &url]);
    let r = d.post(&[("Upload-Length", "3")]);
    assert_eq!(r.status, 502, "{r:?}");
    no_files(&tmp.join("data"));
    drop(d);

    let tmp = TempDir::new("hooks-exec-timeout");
    let hook = script(
        &tmp.join("slow.sh"),
        "[ \"$1\" = pre-create ] && sleep 20\nexit 0",
    );
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hook-timeout",
            "0.5",
        ],
    );
    let started = Instant::now();
    let r = d.post(&[("Upload-Length", "3")]);
    assert_eq!(r.status, 504, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    no_files(&tmp.join("data"));
}

#[test]
fn full_queue_answers_503_with_retry_after() {
    let tmp = TempDir::new("hooks-full");
    let rx = Receiver::start(|_| Answer {
        delay: Duration::from_millis(1500),
        ..Answer::ok()
    });
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &rx.url(),
            "--hooks",
            "pre-create",
            "--hooks-workers",
            "1",
            "--hooks-queue",
            "1",
        ],
    );
    let port = d.port;
    let post = move || {
        let mut c = Conn::connect(port);
        c.request(&Req::new("POST", "/files").tus().h("Upload-Length", "1"))
    };
    // One in delivery, one queued, the third finds the queue full.
    let first = thread::spawn(post);
    assert!(eventually(Duration::from_secs(3), || rx.hits().len() == 1));
    let second = thread::spawn(post);
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let third = post();
    assert_eq!(third.status, 503, "{third:?}");
    assert_eq!(third.header("Retry-After"), Some("1"));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(first.join().unwrap().status, 201);
    assert_eq!(second.join().unwrap().status, 201);
    assert_eq!(metric(&d, "tusring_hook_queue_full_total"), Some(1.0));
    assert_eq!(metric(&d, "tusring_hook_delivered_total"), Some(2.0));
    assert_eq!(metric(&d, "tusring_hook_dropped_total"), Some(0.0));
}

/// A pre-hook whose request stopped waiting for it (504 after the hooks' timeouts plus
/// 5 s in the queue) is not sent: it is dropped, and counted.
#[test]
fn a_pre_hook_nobody_waits_for_any_more_is_dropped_and_counted() {
    let tmp = TempDir::new("hooks-dropped");
    let rx = Receiver::start(|_| Answer {
        delay: Duration::from_millis(900),
        ..Answer::ok()
    });
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &rx.url(),
            "--hooks",
            "pre-create",
            "--hooks-workers",
            "1",
            "--http-hook-timeout",
            "1",
        ],
    );
    // One worker, 0.9 s per verdict, a wait of 1 + 5 s: the eighth request (and maybe
    // the seventh) gives up before its turn.
    let port = d.port;
    let posts: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Conn::connect(port);
                c.request(&Req::new("POST", "/files").tus().h("Upload-Length", "1"))
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = posts.into_iter().map(|t| t.join().unwrap()).collect();
    let late = statuses.iter().filter(|s| **s == 504).count();
    assert!(late >= 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 201).count() + late, 8);
    // Every job is either sent or dropped, and a dropped one belongs to a late request.
    let ok = eventually(Duration::from_secs(10), || {
        let dropped = metric(&d, "tusring_hook_dropped_total").unwrap_or(0.0) as usize;
        rx.hits().len() + dropped == 8
    });
    let dropped = metric(&d, "tusring_hook_dropped_total");
    assert!(ok, "{} sent, {dropped:?} dropped", rx.hits().len());
    let dropped = dropped.unwrap() as usize;
    assert!(
        (1..=late).contains(&dropped),
        "{dropped} dropped, {late} late"
    );
}

// ---------------------------------------------------------------------------------------
// Post-hooks: never in the way, ordered, retried, delivered at shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn slow_post_receive_receiver_does_not_delay_patch() {
    let tmp = TempDir::new("hooks-slow-post");
    let rx = Receiver::start(|h| Answer {
        delay: if h.event() == "post-receive" {
            Duration::from_secs(3)
        } else {
            Duration::ZERO
        },
        ..Answer::ok()
    });
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &rx.url(),
            "--hooks",
            "post-receive,post-finish",
            "--http-hook-timeout",
            "5",
        ],
    );
    let id = d.create(6);
    for (i, chunk) in [b"ab", b"cd", b"ef"].iter().enumerate() {
        let started = Instant::now();
        let r = d.patch(&id, (i * 2) as u64, *chunk);
        r.assert_status(204, "patch");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "PATCH {i} took {took:?} with a slow post-receive hook"
        );
    }
    // Delivered all the same, in order, one upload's events one after another.
    let ok = eventually(Duration::from_secs(10), || rx.hits().len() >= 3);
    let hits = rx.hits();
    assert!(ok, "{hits:#?}");
    assert_eq!(
        hits.iter().map(Hit::event).collect::<Vec<_>>(),
        ["post-receive", "post-receive", "post-finish"]
    );
    let offsets: Vec<u64> = hits
        .iter()
        .map(|h| h.json()["upload"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 4, 6]);
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(2900),
        "in order, not overlapping"
    );
}

#[test]
fn post_events_of_each_upload_arrive_in_order() {
    let tmp = TempDir::new("hooks-order");
    // Uneven delays, so that a later event would overtake an earlier one if it could.
    let rx = Receiver::start(|h| Answer {
        delay: Duration::from_millis((h.body.len() as u64 * 7919) % 23),
        ..Answer::ok()
    });
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &rx.url(),
            "--hooks",
            "post-create,post-receive,post-finish",
        ],
    );
    let port = d.port;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Conn::connect(port);
                let r = c.request(&Req::new("POST", "/files").tus().h("Upload-Length", "5"));
                assert_eq!(r.status, 201, "{r:?}");
                let id = upload_id(&r);
                for off in 0..5u64 {
                    let r = c.request(&patch_req(&id, off, b"x"));
                    assert_eq!(r.status, 204, "{r:?}");
                }
                id
            })
        })
        .collect();
    let ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let hits = rx.wait_hits(4 * 6);
    for id in &ids {
        let mine: Vec<&Hit> = hits
            .iter()
            .filter(|h| h.json()["upload"]["id"] == id.as_str())
            .collect();
        let seq: Vec<(String, u64)> = mine
            .iter()
            .map(|h| (h.event(), h.json()["upload"]["offset"].as_u64().unwrap()))
            .collect();
        let want: Vec<(String, u64)> = [
            ("post-create", 0),
            ("post-receive", 1),
            ("post-receive", 2),
            ("post-receive", 3),
            ("post-receive", 4),
            ("post-finish", 5),
        ]
        .iter()
        .map(|(e, o)| (e.to_string(), *o))
        .collect();
        assert_eq!(seq, want, "upload {id}");
    }
}

#[test]
fn idempotency_keys_and_proxied_headers_across_two_urls() {
    let tmp = TempDir::new("hooks-keys");
    let a = Receiver::start(|_| Answer::ok());
    let b = Receiver::start(|_| Answer::ok());
    let urls = format!("{},{}", a.url(), b.url());
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &urls,
            "--hooks-http-proxy-headers",
            "Authorization, X-Tenant",
            "--hooks",
            "pre-create,post-create",
        ],
    );
    let r = d.post(&[
        ("Upload-Length", "3"),
        ("Authorization", "Bearer jwt"),
        ("X-Other", "not forwarded"),
    ]);
    r.assert_status(201, "create");
    let ha = a.wait_hits(2);
    let hb = b.wait_hits(2);
    for h in ha.iter().chain(&hb) {
        assert_eq!(h.header("content-type"), Some("application/json"));
        assert_eq!(h.header("authorization"), Some("Bearer jwt"));
        assert_eq!(
            h.header("x-tenant"),
            None,
            "absent headers are not invented"
        );
        assert_eq!(h.header("x-other"), None);
        assert!(h.header("idempotency-key").is_some_and(is_uuid_v4), "{h:?}");
    }
    let key = |hits: &[Hit], event: &str| {
        hits.iter()
            .find(|h| h.event() == event)
            .and_then(|h| h.header("idempotency-key").map(str::to_string))
            .unwrap()
    };
    assert_eq!(key(&ha, "pre-create"), key(&hb, "pre-create"));
    assert_eq!(key(&ha, "post-create"), key(&hb, "post-create"));
    assert_ne!(key(&ha, "pre-create"), key(&ha, "post-create"));
    assert_eq!(ha[0].body, hb[0].body, "one message per event");
}

#[test]
fn post_hooks_are_retried_and_a_failing_notifier_does_not_stop_the_others() {
    let tmp = TempDir::new("hooks-retry");
    let attempts = Arc::new(Mutex::new(0u32));
    let rx = {
        let attempts = attempts.clone();
        Receiver::start(move |_| {
            let mut n = attempts.lock().unwrap();
            *n += 1;
            if *n <= 2 {
                Answer {
                    status: 503,
                    ..Answer::ok()
                }
            } else {
                Answer::ok()
            }
        })
    };
    let failing = script(&tmp.join("fail.sh"), "exit 1");
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            failing.to_str().unwrap(),
            "--hooks-http-urls",
            &rx.url(),
            "--hooks",
            "post-create",
            "--hooks-http-retry-backoff",
            "0.1",
        ],
    );
    d.create(3);
    let hits = rx.wait_hits(3);
    let keys: BTreeSet<_> = hits
        .iter()
        .map(|h| h.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 1, "retries keep the idempotency key");
    assert!(
        d.wait_log_line(&["post-create", "file hook", "exit status 1"])
            .is_some(),
        "{}",
        d.stderr_text()
    );
    // The hook counters: two retries, the HTTP delivery, the file hook's failure.
    assert_eq!(metric(&d, "tusring_hook_retries_total"), Some(2.0));
    assert_eq!(metric(&d, "tusring_hook_delivered_total"), Some(1.0));
    assert_eq!(metric(&d, "tusring_hook_failed_total"), Some(1.0));
    assert_eq!(metric(&d, "tusring_hook_rejected_total"), Some(0.0));
}

/// The post-events (by `Hook-Name`) a receiver got, in arrival order.
fn post_events(hits: &[Hit]) -> Vec<String> {
    hits.iter()
        .map(Hit::event)
        .filter(|e| e.starts_with("post-"))
        .collect()
}

/// The first hit of `event`, or a failure that shows every hit.
fn first<'a>(hits: &'a [Hit], event: &str, who: &str) -> &'a Hit {
    hits.iter()
        .find(|h| h.event() == event)
        .unwrap_or_else(|| panic!("{who} got no {event}: {hits:#?}"))
}

/// The issue's scenario, with every hook setting at its default (2 s timeout, 3 retries,
/// 0.5 s backoff): receiver A answers post-receive after 3 s, so each of its post-receive
/// deliveries times out. The post-receive has a newer event of its upload waiting
/// behind it (the post-finish), so after its one attempt it is not retried (superseded):
/// A and B get post-finish and post-terminate within 5 s of the last PATCH, and no event
/// is lost (every event reaches every URL, the superseded one once).
#[test]
fn a_slow_receiver_does_not_hold_back_the_later_events_of_an_upload() {
    slow_receiver_scenario("hooks-superseded", &[]);
}

/// The same with one hook worker: no other worker is free to take the newer events off
/// the queue, so the worker pausing before the retry looks there itself.
#[test]
fn a_slow_receiver_does_not_hold_back_the_later_events_with_one_worker() {
    slow_receiver_scenario("hooks-superseded-one", &["--hooks-workers", "1"]);
}

fn slow_receiver_scenario(tag: &str, extra: &[&str]) {
    let tmp = TempDir::new(tag);
    let a = Receiver::start(|h| Answer {
        delay: if h.event() == "post-receive" {
            Duration::from_secs(3)
        } else {
            Duration::ZERO
        },
        ..Answer::ok()
    });
    let b = Receiver::start(|_| Answer::ok());
    let urls = format!("{},{}", a.url(), b.url());
    let mut args = vec!["--hooks-http-urls", urls.as_str()];
    args.extend_from_slice(extra);
    let d = Daemon::start(&tmp, &args);
    let id = d.create(4);
    d.patch(&id, 0, b"ab").assert_status(204, "first PATCH");
    d.patch(&id, 2, b"cd").assert_status(204, "last PATCH");
    let last_patch = Instant::now();
    d.delete(&id).assert_status(204, "DELETE");
    let deleted = Instant::now();
    let want = [
        "post-create",
        "post-receive",
        "post-finish",
        "post-terminate",
    ];
    for (who, rx) in [("A", &a), ("B", &b)] {
        let ok = eventually(Duration::from_secs(30), || {
            rx.hits().iter().any(|h| h.event() == "post-terminate")
        });
        let hits = rx.hits();
        assert!(ok, "{who} got no post-terminate: {hits:#?}");
        let finish = first(&hits, "post-finish", who).at;
        let terminate = first(&hits, "post-terminate", who).at;
        eprintln!(
            "{who}: post-finish {:?} after the last PATCH, post-terminate {:?} after the DELETE",
            finish.saturating_duration_since(last_patch),
            terminate.saturating_duration_since(deleted)
        );
        assert!(
            finish.saturating_duration_since(last_patch) < Duration::from_secs(5),
            "{who} got post-finish {:?} after the last PATCH",
            finish.saturating_duration_since(last_patch)
        );
        assert!(
            terminate.saturating_duration_since(deleted) < Duration::from_secs(5),
            "{who} got post-terminate {:?} after the DELETE",
            terminate.saturating_duration_since(deleted)
        );
        // Every event, in order, once: the superseded post-receive was attempted once
        // (A got it; its answer came too late) and not retried.
        assert_eq!(post_events(&hits), want, "{who}: {hits:#?}");
        assert_eq!(
            hits.len(),
            6,
            "{who}: pre-create and pre-terminate too: {hits:#?}"
        );
        assert_eq!(
            first(&hits, "post-receive", who).json()["upload"]["offset"],
            2
        );
    }
    assert!(
        d.wait_log_line(&["post-receive", &id, "superseded"])
            .is_some(),
        "{}",
        d.stderr_text()
    );
    assert_eq!(metric(&d, "tusring_hook_superseded_total"), Some(1.0));
    assert_eq!(metric(&d, "tusring_hook_retries_total"), Some(0.0));
    assert_eq!(metric(&d, "tusring_hook_failed_total"), Some(0.0));
    // 6 events at B, 5 at A (its post-receive was superseded).
    assert_eq!(metric(&d, "tusring_hook_delivered_total"), Some(11.0));
}

/// A post-receive waiting to be retried stops waiting when a newer event of its upload
/// comes: the post-finish is delivered at once, not after the backoff.
#[test]
fn a_retry_pause_ends_when_a_newer_event_of_the_upload_comes() {
    let tmp = TempDir::new("hooks-superseded-wait");
    let rx = Receiver::start(|h| Answer {
        status: if h.event() == "post-receive" {
            503
        } else {
            200
        },
        ..Answer::ok()
    });
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &rx.url(),
            "--hooks",
            "post-receive,post-finish",
            "--hooks-http-retry-backoff",
            "3",
        ],
    );
    let id = d.create(4);
    d.patch(&id, 0, b"ab").assert_status(204, "first PATCH");
    // The first attempt failed: the worker now waits 3 s to retry.
    rx.wait_hits(1);
    thread::sleep(Duration::from_millis(200));
    d.patch(&id, 2, b"cd").assert_status(204, "last PATCH");
    let last_patch = Instant::now();
    let hits = rx.wait_hits(2);
    let finish = first(&hits, "post-finish", "the receiver").at;
    assert!(
        finish.saturating_duration_since(last_patch) < Duration::from_millis(1500),
        "post-finish {:?} after the last PATCH",
        finish.saturating_duration_since(last_patch)
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        post_events(&rx.hits()),
        ["post-receive", "post-finish"],
        "the superseded post-receive is not retried"
    );
    assert_eq!(metric(&d, "tusring_hook_superseded_total"), Some(1.0));
}

/// Supersession skips retries only when a newer event of the same upload waits: a
/// post-receive with nothing behind it is retried as any post-event.
#[test]
fn a_lone_post_receive_is_still_retried() {
    let tmp = TempDir::new("hooks-lone-receive");
    // The first two attempts for each upload fail.
    let attempts = Arc::new(Mutex::new(std::collections::HashMap::<String, u32>::new()));
    let rx = Receiver::start(move |h| {
        let mut seen = attempts.lock().unwrap();
        let n = seen.entry(upload_id_of(&h.json())).or_default();
        *n += 1;
        Answer {
            status: if *n <= 2 { 503 } else { 200 },
            ..Answer::ok()
        }
    });
    // Another upload's events do not supersede it.
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &rx.url(),
            "--hooks",
            "post-receive",
            "--hooks-http-retry-backoff",
            "0.3",
        ],
    );
    let id = d.create(4);
    let other = d.create(4);
    d.patch(&id, 0, b"ab").assert_status(204, "PATCH");
    rx.wait_hits(1);
    d.patch(&other, 0, b"ab")
        .assert_status(204, "PATCH of another upload");
    let hits = rx.wait_hits(6);
    for upload in [&id, &other] {
        let n = hits
            .iter()
            .filter(|h| upload_id_of(&h.json()) == *upload)
            .count();
        assert_eq!(n, 3, "{upload}: two retries: {hits:#?}");
    }
    assert_eq!(metric(&d, "tusring_hook_retries_total"), Some(4.0));
    assert_eq!(metric(&d, "tusring_hook_superseded_total"), Some(0.0));
    assert_eq!(metric(&d, "tusring_hook_delivered_total"), Some(2.0));
}

#[test]
fn queued_post_events_are_delivered_on_sigterm() {
    let tmp = TempDir::new("hooks-drain");
    let rx = Receiver::start(|_| Answer {
        delay: Duration::from_millis(300),
        ..Answer::ok()
    });
    let mut d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &rx.url(),
            "--hooks",
            "post-create",
            "--hooks-workers",
            "1",
            "--shutdown-timeout",
            "8",
        ],
    );
    for _ in 0..6 {
        d.create(1);
    }
    d.sigterm();
    let st = d
        .wait_exit(Duration::from_secs(15))
        .expect("exit after SIGTERM");
    assert!(st.success(), "{st:?}");
    assert_eq!(
        rx.hits().len(),
        6,
        "every queued event delivered before exit"
    );
}

// ---------------------------------------------------------------------------------------
// The same through RUSTUS_* variables
// ---------------------------------------------------------------------------------------

#[test]
fn configuration_through_environment_variables() {
    let tmp = TempDir::new("hooks-env");
    let log = tmp.join("calls.log");
    let hook = recording_file_hook(&tmp, &log, &[]);
    let rx = Receiver::start(|h| {
        if h.event() == "pre-create" && h.header("authorization").is_none() {
            Answer {
                status: 401,
                body: "token please".into(),
                content_type: Some("text/plain".into()),
                delay: Duration::ZERO,
            }
        } else {
            Answer::ok()
        }
    });
    let d = Daemon::builder(&tmp)
        .env("RUSTUS_HOOKS_FILE", hook.to_str().unwrap())
        .env("RUSTUS_HOOKS_HTTP_URLS", &rx.url())
        .env("RUSTUS_HOOKS_HTTP_PROXY_HEADERS", "Authorization")
        .env("RUSTUS_HOOKS", "pre-create,post-create")
        .env("RUSTUS_HOOKS_FORMAT", "tusd")
        .env("RUSTUS_HTTP_HOOK_TIMEOUT", "2")
        .env("RUSTUS_HOOK_TIMEOUT", "5")
        .env("RUSTUS_HOOKS_WORKERS", "2")
        .env("RUSTUS_HOOKS_QUEUE", "16")
        .env("RUSTUS_HOOKS_HTTP_RETRIES", "1")
        .env("RUSTUS_HOOKS_HTTP_RETRY_BACKOFF", "0.1")
        .start();
    let r = d.post(&[("Upload-Length", "2")]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body, b"token please");
    let r = d.post(&[("Upload-Length", "2"), ("Authorization", "Bearer t")]);
    r.assert_status(201, "with token");
    let id = upload_id(&r);
    let calls = wait_calls(&log, 3);
    let mine = calls_for(&calls, &id);
    assert_eq!(events(&mine), ["pre-create", "post-create"]);
    assert!(mine[0].json.get("HTTPRequest").is_some(), "tusd format");
    let hits = rx.wait_hits(3);
    assert_eq!(hits[1].header("authorization"), Some("Bearer t"));
}

// ---------------------------------------------------------------------------------------
// The README's FastAPI example, under uvicorn
// ---------------------------------------------------------------------------------------

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// A Python that can import fastapi and uvicorn.
fn fastapi_python() -> Option<PathBuf> {
    python_with("fastapi, uvicorn")
}

struct Uvicorn(Child);

impl Drop for Uvicorn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fastapi_example_from_the_readme() {
    let Some(python) = fastapi_python() else {
        if std::env::var_os("TUSRING_REQUIRE_INTEROP").is_some_and(|v| !v.is_empty()) {
            panic!("fastapi/uvicorn are not installed and TUSRING_REQUIRE_INTEROP is set; run scripts/test.sh");
        }
        let _ = std::io::stderr().write_all(
            b"\n!!! SKIPPED fastapi_example_from_the_readme: fastapi/uvicorn not installed (run scripts/test.sh)\n\n",
        );
        return;
    };
    let port = free_port();
    let child = Command::new(&python)
        .args([
            "-m",
            "uvicorn",
            "hooks_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-level",
            "warning",
        ])
        .current_dir(interop_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start uvicorn");
    let _server = Uvicorn(child);
    assert!(
        eventually(Duration::from_secs(20), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "uvicorn did not listen on {port}"
    );
    let tmp = TempDir::new("hooks-fastapi");
    let url = format!("http://127.0.0.1:{port}/hooks");
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &url,
            "--hooks-http-proxy-headers",
            "Authorization",
            "--hooks",
            "pre-create",
        ],
    );
    let r = d.post(&[("Upload-Length", "5")]);
    assert_eq!(r.status, 401, "without the token: {r:?}");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(
        String::from_utf8_lossy(&r.body).contains("Unauthorized"),
        "{r:?}"
    );
    no_files(&tmp.join("data"));
    let r = d.post(&[("Upload-Length", "5"), ("Authorization", "Bearer wrong")]);
    assert_eq!(r.status, 401, "with a wrong token: {r:?}");
    let r = d.post(&[("Upload-Length", "5"), ("Authorization", "Bearer jwt")]);
    assert_eq!(r.status, 201, "with the token: {r:?}");
    let id = upload_id(&r);
    d.patch(&id, 0, b"hello").assert_status(204, "upload");
}
