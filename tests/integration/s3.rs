//! `--storage hybrid-s3` against a real S3-compatible server: moto's server (PyPI
//! `moto[server]`, installed by `scripts/test.sh` into target/interop-venv), one per test,
//! on a free loopback port, started, stopped and started again by the test itself.
//!
//! Without moto these tests skip with a loud message, unless `TUSRING_REQUIRE_S3` is set
//! (as `scripts/test.sh` does): then they fail. The tests take [`SERIAL`] so that only one
//! Python S3 server runs at a time on the shared machine.
//!
//! What S3 holds is read back with plain HTTP (moto does not check signatures), never
//! through tusring's own client: `GET /<bucket>/<key>` on the server.

use crate::harness::*;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// One S3 test at a time (moto is CPU-hungry Python; the machine is shared).
static SERIAL: Mutex<()> = Mutex::new(());

const BUCKET: &str = "tusring-test";

/// How long a transfer may take to reach S3 (moto takes in a few MB/s on a busy 2-core
/// machine).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(180);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn required() -> bool {
    std::env::var_os("TUSRING_REQUIRE_S3").is_some_and(|v| !v.is_empty())
}

fn skip(test: &str, why: &str) {
    if required() {
        panic!("{test}: {why}, and TUSRING_REQUIRE_S3 is set; run scripts/test.sh");
    }
    let bang = "!".repeat(78);
    let msg = format!(
        "\n{bang}\n!!! SKIPPED {test}: {why}.\n\
         !!! Run scripts/test.sh (or set TUSRING_REQUIRE_S3=1 to make this fail).\n{bang}\n\n"
    );
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

/// A Python that can run moto's server: `$TUSRING_PYTHON`, the venv scripts/test.sh
/// makes, or `python3`.
fn moto_python() -> Option<PathBuf> {
    python_with("moto.server, flask")
}

/// moto's S3 server on a loopback port, killed on drop. All in memory: a restart loses
/// every bucket, object and multipart upload (so [`Moto::start_again`] makes the bucket
/// again, as an operator would).
struct Moto {
    python: PathBuf,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Moto {
    /// A running server with the test bucket, or `None` (after the skip message).
    fn start(test: &str) -> Option<Moto> {
        let Some(python) = moto_python() else {
            skip(
                test,
                "no Python with moto[server] (pip install 'moto[server]')",
            );
            return None;
        };
        let mut m = Moto {
            python,
            port: free_port(),
            child: None,
            log: Arc::default(),
        };
        m.spawn();
        Some(m)
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut child = Command::new(&self.python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto_server");
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (a, b) = (self.log.clone(), self.log.clone());
        thread::spawn(move || drain_lines(out, a, None));
        thread::spawn(move || drain_lines(err, b, None));
        self.child = Some(child);
        let up = eventually(Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(
            up,
            "moto did not listen on {}; its log:\n{}",
            self.port,
            self.log()
        );
        let r = self.request(&Req::new("PUT", &format!("/{BUCKET}")));
        assert_eq!(r.status, 200, "create bucket: {r:?}");
    }

    /// Stops the server (SIGKILL): S3 is gone.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, with an empty bucket.
    fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A request to the server. moto checks no signature, but answers an unsigned GET of
    /// a key holding a '/' with 403: a well-formed `Authorization` header with a dummy
    /// signature passes.
    fn request(&self, req: &Req) -> Response {
        let auth = "AWS4-HMAC-SHA256 Credential=test-access/20260101/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=00";
        Conn::connect(self.port).request(&req.clone().h("Authorization", auth))
    }

    /// The object `key` (no leading '/'): status and bytes.
    fn get(&self, key: &str) -> Response {
        self.request(&Req::new("GET", &format!("/{BUCKET}/{key}")))
    }

    /// The keys in the bucket.
    fn keys(&self) -> Vec<String> {
        let r = self.request(&Req::new("GET", &format!("/{BUCKET}")));
        assert_eq!(r.status, 200, "list: {r:?}");
        let text = String::from_utf8_lossy(&r.body).to_string();
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// The daemon's `--s3-*` flags for this server.
    fn flags(&self) -> Vec<String> {
        [
            "--storage",
            "hybrid-s3",
            "--s3-url",
            &self.url(),
            "--s3-bucket",
            BUCKET,
            "--s3-region",
            "us-east-1",
            "--s3-access-key",
            "test-access",
            "--s3-secret-key",
            "test-secret",
            "--s3-force-path-style",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn daemon(tmp: &TempDir, moto: &Moto, extra: &[&str]) -> Daemon {
    let flags = moto.flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Daemon::start(tmp, &args)
}

/// Uploads `data` in PATCHes of `chunk` bytes, with `filename`; its ID. Every PATCH,
/// the last included, answers 204 (the last one does not wait for S3).
fn upload(d: &Daemon, data: &[u8], chunk: usize, filename: &str) -> String {
    let meta = format!("filename {}", base64(filename.as_bytes()));
    let r = d.post(&[
        ("Upload-Length", &data.len().to_string()),
        ("Upload-Metadata", &meta),
    ]);
    assert_eq!(r.status, 201, "create: {r:?}");
    let id = upload_id(&r);
    let mut at = 0;
    for piece in data.chunks(chunk.max(1)) {
        let r = d.patch(&id, at as u64, piece);
        assert_eq!(r.status, 204, "PATCH at {at}: {r:?}");
        at += piece.len();
    }
    id
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The record's `path` (the object key, as rustus writes it).
fn record_path(d: &Daemon, id: &str) -> String {
    let info = read_info(&d.info_path(id));
    assert_eq!(info["storage"], "s3_storage", "{info}");
    info["path"].as_str().expect("a path").to_owned()
}

/// Waits until the upload's local file is gone (the object is stored then).
fn wait_moved(d: &Daemon, id: &str, timeout: Duration) {
    let gone = eventually(timeout, || find_file(d.data_dir(), id).is_none());
    assert!(
        gone,
        "upload {id} still has its local file after {timeout:?}; daemon log:\n{}",
        d.stderr_text()
    );
}

fn get(d: &Daemon, id: &str, range: Option<&str>) -> Response {
    let mut req = Req::new("GET", &format!("/files/{id}"));
    if let Some(r) = range {
        req = req.h("Range", r);
    }
    d.send(&req)
}

/// A `--hooks-file` that logs `<event> <id> <status of a HEAD of the upload's object
/// when it ran>` (bash's /dev/tcp: no other tool needed), so the log shows whether
/// `post-finish` came after the object was stored. (An earlier event may run after the
/// object is stored too: hooks are delivered in the background.)
fn object_checking_hook(tmp: &TempDir, moto: &Moto) -> (PathBuf, PathBuf) {
    let script = tmp.join("hook.sh");
    let log = tmp.join("hook.log");
    let text = format!(
        r#"#!/bin/bash
id=$(printf '%s' "$2" | grep -o '"id":"[^"]*"' | head -n 1 | cut -d'"' -f4)
key=$(printf '%s' "$2" | grep -o '"path":"[^"]*"' | head -n 1 | cut -d'"' -f4)
key=${{key#/}}
status=none
if exec 3<>/dev/tcp/127.0.0.1/{port}; then
    printf 'HEAD /{BUCKET}/%s HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\n\r\n' \
        "$key" 'AWS4-HMAC-SHA256 Credential=test-access/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00' >&3
    status=$(head -n 1 <&3 | cut -d' ' -f2)
    exec 3>&-
fi
echo "$1 $id $status" >> {log}
"#,
        port = moto.port,
        log = log.display()
    );
    std::fs::write(&script, text).unwrap();
    let st = Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success());
    (script, log)
}

/// An upload completes; the last PATCH answers at once, the object appears under
/// rustus's key (`--dir-structure` rendered, then the ID) with the upload's bytes (one
/// PUT for a small file, a multipart upload for a larger one), the local file goes,
/// `post-finish` fires once the object is there, GET and ranged GET are served from the
/// object, and DELETE removes it.
#[test]
fn complete_uploads_move_to_s3_under_rustus_keys() {
    let _serial = serial();
    let test = "complete_uploads_move_to_s3_under_rustus_keys";
    let Some(moto) = Moto::start(test) else {
        return;
    };
    let tmp = TempDir::new("s3-move");
    let (hook, hook_log) = object_checking_hook(&tmp, &moto);
    let hook = hook.display().to_string();
    let d = daemon(
        &tmp,
        &moto,
        &[
            "--dir-structure",
            "{year}/{month}",
            "--hooks-file",
            &hook,
            "--hooks",
            "post-create,post-finish",
        ],
    );
    let small = random_bytes(1, 1000);
    let large = random_bytes(2, 12 * 1024 * 1024 + 5);
    let small_id = upload(&d, &small, 600, "notes.txt");
    let large_id = upload(&d, &large, 4 * 1024 * 1024, "video.bin");

    let mut keys = Vec::new();
    for (id, data) in [(&small_id, &small), (&large_id, &large)] {
        wait_moved(&d, id, TRANSFER_TIMEOUT);
        // rustus's key: the rendered template, then the ID; the record keeps it as `path`.
        let info = read_info(&d.info_path(id));
        let created = info["created_at"].as_i64().unwrap();
        let (year, month) = utc_year_month(created);
        let key = format!("{year}/{month}/{id}");
        assert_eq!(record_path(&d, id), key);
        assert_eq!(info["offset"].as_u64(), Some(data.len() as u64));
        let obj = moto.get(&key);
        assert_eq!(obj.status, 200, "object {key}: {obj:?}");
        assert_bytes_eq(&obj.body, data, "the object");
        // HEAD still says complete; GET and a ranged GET come from the object.
        assert_eq!(d.offset(id), data.len() as u64);
        let r = get(&d, id, None);
        assert_eq!(r.status, 200, "{r:?}");
        assert_bytes_eq(&r.body, data, "GET from S3");
        let r = get(&d, id, Some("bytes=100-899"));
        assert_eq!(r.status, 206, "{r:?}");
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes 100-899/{}", data.len()).as_str())
        );
        assert_bytes_eq(&r.body, &data[100..900], "ranged GET from S3");
        keys.push(key);
    }
    assert_eq!(
        moto.get(&keys[0]).header("Content-Type"),
        Some("text/plain; charset=utf-8"),
        "the object's type comes from the filename"
    );
    // The large one went up in parts (8 MiB, as rustus), the small one in one PUT.
    let log = moto.log();
    assert!(
        log.contains(&format!("{large_id}?partNumber=2&uploadId=")),
        "no part 2 in moto's log:\n{log}"
    );
    assert!(!log.contains(&format!("{small_id}?partNumber")), "{log}");

    // post-finish came once per upload, after the object was stored (the hook found it).
    let done = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&hook_log).is_ok_and(|t| t.matches("post-finish").count() == 2)
    });
    let hooks = std::fs::read_to_string(&hook_log).unwrap_or_default();
    assert!(done, "post-finish events: {hooks}");
    for id in [&small_id, &large_id] {
        assert!(hooks.contains(&format!("post-finish {id} 200")), "{hooks}");
    }
    // (Counted once the transfer has ended, just after the file went.)
    let counted = eventually(Duration::from_secs(10), || {
        metric(&d, "tusring_s3_stored_total") == Some(2.0)
            && metric(&d, "tusring_s3_pending") == Some(0.0)
    });
    assert!(counted, "{:?}", metric(&d, "tusring_s3_stored_total"));

    // DELETE removes the object; the upload is gone.
    for id in [&small_id, &large_id] {
        let key = record_path(&d, id);
        assert_eq!(d.delete(id).status, 204);
        assert_eq!(moto.get(&key).status, 404, "{key} after DELETE");
        assert_eq!(d.head(id).status, 404);
        assert_eq!(get(&d, id, None).status, 404);
    }
    assert!(moto.keys().is_empty(), "{:?}", moto.keys());
}

/// The 64 MiB case: S3 goes away in the middle of the transfer, and the daemon is
/// restarted while it is away. The upload is complete for its client all along (GET
/// serves the local file), the daemon logs why the transfer fails, and once S3 is back
/// the restarted daemon moves the upload (a new multipart upload: the server lost the
/// old one), byte for byte, and serves it from there.
#[test]
fn s3_away_mid_transfer_and_a_restart_lose_nothing() {
    let _serial = serial();
    let test = "s3_away_mid_transfer_and_a_restart_lose_nothing";
    let Some(mut moto) = Moto::start(test) else {
        return;
    };
    let tmp = TempDir::new("s3-away");
    let mut d = daemon(&tmp, &moto, &[]);
    let data = random_bytes(3, 64 * 1024 * 1024);
    let started = Instant::now();
    let id = upload(&d, &data, 16 * 1024 * 1024, "big.bin");
    eprintln!("64 MiB uploaded in {:?}", started.elapsed());

    // S3 goes away once the first part is in.
    let first_part = eventually(TRANSFER_TIMEOUT, || moto.log().contains("partNumber="));
    assert!(first_part, "no part reached S3; moto:\n{}", moto.log());
    moto.stop();
    // The log says which upload and why (once the parts in flight have failed, the
    // tries find the port closed).
    let says_why = |l: &str| {
        l.contains("transfer to S3 failed")
            && l.contains(&id)
            && l.to_ascii_lowercase().contains("connection refused")
    };
    let logged = eventually(Duration::from_secs(60), || {
        d.stderr_text().lines().any(says_why)
    });
    assert!(
        logged,
        "no failed transfer logged with its reason:\n{}",
        d.stderr_text()
    );
    assert!(metric(&d, "tusring_s3_failures_total").unwrap_or(0.0) >= 1.0);

    // Nothing is lost while S3 is away: the upload is complete and served from its file.
    assert_eq!(d.offset(&id), data.len() as u64);
    let r = get(&d, &id, None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_bytes_eq(&r.body, &data, "GET while S3 is away");
    assert_bytes_eq(&d.read_data(&id), &data, "the local file");

    // A restart while S3 is away; then S3 comes back (empty: moto keeps nothing).
    d.sigterm();
    assert!(
        d.wait_exit(Duration::from_secs(30)).is_some(),
        "the daemon did not stop with S3 away:\n{}",
        d.stderr_text()
    );
    let mut d = daemon(&tmp, &moto, &[]);
    moto.start_again();
    wait_moved(&d, &id, TRANSFER_TIMEOUT);
    let key = record_path(&d, &id);
    assert_eq!(key, format!("/{id}"), "rustus's key without a template");
    let obj = moto.get(&id);
    assert_eq!(obj.status, 200, "{obj:?}");
    assert_bytes_eq(&obj.body, &data, "the object after the outage");
    let r = get(&d, &id, Some("bytes=33554430-33554441"));
    assert_eq!(r.status, 206, "{r:?}");
    assert_bytes_eq(&r.body, &data[33_554_430..33_554_442], "ranged GET");
    let r = get(&d, &id, None);
    assert_bytes_eq(&r.body, &data, "GET from S3");
    assert!(
        d.stderr_text().contains("found waiting to be moved"),
        "{}",
        d.stderr_text()
    );
    assert_eq!(d.delete(&id).status, 204);
    assert_eq!(moto.get(&id).status, 404);
    d.kill9();
}

/// A final upload is assembled from its parts' files (parts stay local, as partial
/// uploads are never moved) and then moved like any complete upload.
#[test]
fn a_final_upload_moves_to_s3_and_its_parts_stay_local() {
    let _serial = serial();
    let test = "a_final_upload_moves_to_s3_and_its_parts_stay_local";
    let Some(moto) = Moto::start(test) else {
        return;
    };
    let tmp = TempDir::new("s3-concat");
    let d = daemon(&tmp, &moto, &[]);
    let a = random_bytes(4, 3000);
    let b = random_bytes(5, 2000);
    let mut parts = Vec::new();
    for data in [&a, &b] {
        let r = d.post(&[
            ("Upload-Length", &data.len().to_string()),
            ("Upload-Concat", "partial"),
        ]);
        assert_eq!(r.status, 201, "{r:?}");
        let id = upload_id(&r);
        assert_eq!(d.patch(&id, 0, data).status, 204);
        parts.push(id);
    }
    let concat = format!("final;/files/{} /files/{}", parts[0], parts[1]);
    let r = d.post(&[("Upload-Concat", &concat)]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    wait_moved(&d, &id, TRANSFER_TIMEOUT);
    let whole: Vec<u8> = [a.as_slice(), b.as_slice()].concat();
    let obj = moto.get(&id);
    assert_eq!(obj.status, 200, "{obj:?}");
    assert_bytes_eq(&obj.body, &whole, "the final's object");
    assert_bytes_eq(&get(&d, &id, None).body, &whole, "GET of the final");
    for p in &parts {
        assert!(
            find_file(d.data_dir(), p).is_some(),
            "part {p} stays a file"
        );
    }
    assert_eq!(moto.keys(), vec![id.clone()]);
}

/// What `--storage hybrid-s3` needs is checked at startup, with a clear error: a missing
/// flag, a bad `--s3-headers` (rustus panics), a key file that cannot be read.
#[test]
fn hybrid_s3_startup_errors_are_clear() {
    let tmp = TempDir::new("s3-flags");
    let base = [
        "--storage",
        "hybrid-s3",
        "--data-dir",
        "d",
        "--s3-url",
        "http://127.0.0.1:1",
        "--s3-region",
        "r",
        "--s3-access-key",
        "a",
        "--s3-secret-key",
        "s",
    ];
    let (code, _, err) = run_cli(&base, tmp.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--storage hybrid-s3 needs --s3-bucket (RUSTUS_S3_BUCKET)"),
        "{err}"
    );
    let mut args = base.to_vec();
    args.extend(["--s3-bucket", "b", "--s3-headers", "x-amz-acl: public-read"]);
    let (code, _, err) = run_cli(&args, tmp.path(), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--s3-headers") && err.contains("not JSON"),
        "{err}"
    );
    let mut args = base.to_vec();
    args.extend([
        "--s3-bucket",
        "b",
        "--s3-secret-key-path",
        "/nonexistent/key",
    ]);
    args.retain(|a| *a != "--s3-secret-key" && *a != "s");
    let (code, _, err) = run_cli(&args, tmp.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--s3-secret-key-path /nonexistent/key"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["--storage", "s3"], tmp.path(), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("use hybrid-s3"), "{err}");
}
