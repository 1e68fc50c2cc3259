//! The NATS notifier against a real `nats-server` (Debian's package, which
//! `scripts/test.sh` installs): each test starts its own server on a free loopback port,
//! and a real NATS client (async-nats, on a small runtime of the test's own) subscribes
//! and, for the replies mode, answers. Without the server binary these tests skip with a
//! loud message, unless `TUSRING_REQUIRE_NATS` is set (as `scripts/test.sh` does): then
//! they fail. A [`TcpProxy`] in front of the server plays a server that is away and
//! comes back while the test's subscriber stays connected; killing and restarting the
//! server itself plays a crash.

use crate::harness::*;
use async_nats::{ConnectOptions, HeaderMap};
use futures_util::StreamExt;
use serde_json::Value;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest wait for events to arrive.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

fn required() -> bool {
    std::env::var_os("TUSRING_REQUIRE_NATS").is_some_and(|v| !v.is_empty())
}

fn skip(test: &str, why: &str) {
    if required() {
        panic!("{test}: {why}, and TUSRING_REQUIRE_NATS is set; run scripts/test.sh");
    }
    let bang = "!".repeat(78);
    let msg = format!(
        "\n{bang}\n!!! SKIPPED {test}: {why}.\n\
         !!! Run scripts/test.sh (or set TUSRING_REQUIRE_NATS=1 to make this fail).\n{bang}\n\n"
    );
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

/// The `nats-server` binary: `$TUSRING_NATS_SERVER` (none when that file does not
/// exist), else Debian's path, else `$PATH`.
fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TUSRING_NATS_SERVER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.exists().then_some(p);
    }
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.exists())
}

/// A `nats-server` of one test on a loopback port; killed when dropped.
struct Server {
    bin: PathBuf,
    port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// A server on a free port, or `None` (after the skip message) without the binary.
    fn start(test: &str, extra: &[&str]) -> Option<Server> {
        let Some(bin) = server_binary() else {
            skip(test, "no nats-server binary (Debian package nats-server)");
            return None;
        };
        let mut s = Server {
            bin,
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        s.run();
        Some(s)
    }

    /// Starts the process (again) on the same port and waits until it listens.
    fn run(&mut self) {
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", self.bin));
        self.child = Some(child);
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect(self.addr())
                .is_ok()),
            "nats-server did not listen on {}",
            self.addr()
        );
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message a test client received.
#[derive(Debug, Clone)]
struct Got {
    subject: String,
    headers: Option<HeaderMap>,
    payload: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.payload).escape_debug()
            )
        })
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .as_ref()?
            .get(name)
            .map(|v| v.as_str().to_owned())
    }

    fn upload_id(&self) -> String {
        self.json()["upload"]["id"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// The answer a [`Subscriber`] gives to a request: (payload, content type).
type Answer = fn(&Got) -> (Vec<u8>, Option<&'static str>);

/// A real NATS client of the test, on a thread with its own runtime: subscribed to
/// `subject` (wildcards allowed), recording every message, answering requests with
/// `answer` if given. It reconnects (every 50 ms) and subscribes again after a loss.
struct Subscriber {
    got: Arc<Mutex<Vec<Got>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribed (the server has registered the subscription) when this returns.
    fn start(url: &str, subject: &str, answer: Option<Answer>) -> Subscriber {
        Subscriber::start_with(url, subject, answer, ConnectOptions::new())
    }

    /// [`Subscriber::start`] with `options` (credentials).
    fn start_with(
        url: &str,
        subject: &str,
        answer: Option<Answer>,
        options: ConnectOptions,
    ) -> Subscriber {
        let got = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (url, subject, record) = (url.to_owned(), subject.to_owned(), got.clone());
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test runtime");
            rt.block_on(async move {
                let client = options
                    .reconnect_delay_callback(|_| Duration::from_millis(50))
                    .connect(url.as_str())
                    .await
                    .expect("test client connects");
                let mut sub = client.subscribe(subject).await.expect("subscribe");
                // A round trip: the server has the subscription once it answers.
                let _ = client.request("tusring.test.nobody", "".into()).await;
                let _ = ready_tx.send(());
                let mut stop_rx = stop_rx;
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        msg = sub.next() => {
                            let Some(msg) = msg else { break };
                            let g = Got {
                                subject: msg.subject.to_string(),
                                headers: msg.headers.clone(),
                                payload: msg.payload.to_vec(),
                            };
                            if let (Some(answer), Some(reply)) = (answer, msg.reply.clone()) {
                                let (body, content_type) = answer(&g);
                                let mut h = HeaderMap::new();
                                if let Some(ct) = content_type {
                                    h.insert("Content-Type", ct);
                                }
                                let _ = client.publish_with_headers(reply, h, body.into()).await;
                                let _ = client.flush().await;
                            }
                            record.lock().unwrap().push(g);
                        }
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the test subscriber did not get ready");
        Subscriber {
            got,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    fn wait(&self, n: usize, timeout: Duration) -> Vec<Got> {
        let ok = eventually(timeout, || self.got.lock().unwrap().len() >= n);
        let all = self.all();
        assert!(
            ok,
            "{} message(s) after {timeout:?}, want {n}: {:?}",
            all.len(),
            all.iter().map(|g| &g.subject).collect::<Vec<_>>()
        );
        all
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A subject prefix unique to this run and test.
fn unique(tag: &str) -> String {
    let n = uuid::Uuid::new_v4().simple().to_string();
    format!("tusring-test-{tag}-{}", &n[..8])
}

/// The messages of upload `id`, in arrival order: (subject, message).
fn of_upload(all: &[Got], id: &str) -> Vec<Got> {
    all.iter()
        .filter(|g| g.upload_id() == id)
        .cloned()
        .collect()
}

fn subjects(list: &[Got]) -> Vec<String> {
    list.iter().map(|g| g.subject.clone()).collect()
}

// ---------------------------------------------------------------------------------------
// Subjects, payloads and headers
// ---------------------------------------------------------------------------------------

#[test]
fn every_event_on_its_subject_with_payload_and_headers() {
    let Some(server) = Server::start("every_event_on_its_subject", &[]) else {
        return;
    };
    let prefix = unique("events");
    let sub = Subscriber::start(&server.url(), &format!("{prefix}.>"), None);
    let tmp = TempDir::new("nats-events");
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-nats-urls",
            &server.url(),
            "--hooks-nats-prefix",
            &prefix,
        ],
    );
    // POST, two PATCHes, with a header to forward and one whose value is not ASCII.
    let r = d.send(&Req::new("POST", "/files").tus().headers(&[
        ("Upload-Length", "10"),
        ("Upload-Metadata", "filename dGVzdC50eHQ="),
        ("Authorization", "Bearer t0k3n"),
        ("X-Name", "caf\u{e9}"),
    ]));
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    d.patch(&id, 0, b"hello").assert_status(204, "patch 1");
    d.patch(&id, 5, b"world").assert_status(204, "patch 2");
    // A second upload, terminated.
    let gone = d.create(3);
    d.delete(&gone).assert_status(204, "delete");

    let all = sub.wait(8, ARRIVAL_TIMEOUT);
    let mine = of_upload(&all, &id);
    let want: Vec<String> = ["pre-create", "post-create", "post-receive", "post-finish"]
        .iter()
        .map(|e| format!("{prefix}.{e}"))
        .collect();
    assert_eq!(subjects(&mine), want);
    let theirs = of_upload(&all, &gone);
    let want: Vec<String> = [
        "pre-create",
        "post-create",
        "pre-terminate",
        "post-terminate",
    ]
    .iter()
    .map(|e| format!("{prefix}.{e}"))
    .collect();
    assert_eq!(subjects(&theirs), want);

    // The payload is the hook message (default format).
    let pre = mine[0].json();
    assert_eq!(pre["request"]["method"], "POST");
    assert_eq!(pre["request"]["URI"], "/files/");
    assert_eq!(pre["upload"]["offset"], 0);
    assert_eq!(pre["upload"]["length"], 10);
    assert_eq!(pre["upload"]["metadata"]["filename"], "test.txt");
    assert!(pre["upload"]["path"].is_null());
    let receive = mine[2].json();
    assert_eq!(receive["request"]["method"], "PATCH");
    assert_eq!(receive["request"]["URI"], format!("/files/{id}/"));
    assert_eq!(receive["upload"]["offset"], 5);
    assert_eq!(mine[3].json()["upload"]["offset"], 10);
    // Headers: the client's request headers, lowercase, as the message shows them; the
    // value that is not ASCII is left out (rustus aborts the process on it).
    for g in &mine[..2] {
        assert_eq!(
            g.header("authorization").as_deref(),
            Some("Bearer t0k3n"),
            "{g:?}"
        );
        assert_eq!(g.header("upload-length").as_deref(), Some("10"));
        assert_eq!(g.header("tus-resumable").as_deref(), Some("1.0.0"));
        assert_eq!(g.header("x-name"), None, "{g:?}");
        let shown = g.json()["request"]["headers"].clone();
        assert_eq!(shown["authorization"], "Bearer t0k3n");
        assert!(shown.get("x-name").is_none());
    }
    assert_eq!(
        mine[2].header("upload-offset").as_deref(),
        Some("0"),
        "{:?}",
        mine[2]
    );
    // The daemon is alive, and counted what it confirmed.
    assert!(eventually(Duration::from_secs(10), || {
        metric(&d, "tusring_nats_confirmed_total") == Some(8.0)
    }));
    assert_eq!(metric(&d, "tusring_nats_connected"), Some(1.0));
    assert_eq!(metric(&d, "tusring_nats_dropped_total"), Some(0.0));
    assert_eq!(metric(&d, "tusring_nats_backlog"), Some(0.0));
    assert_eq!(sub.all().len(), 8, "{:?}", subjects(&sub.all()));
}

#[test]
fn one_subject_or_the_event_names_by_rustus_variables() {
    let Some(server) = Server::start("one_subject_or_the_event_names", &[]) else {
        return;
    };
    // One subject for every event, set by rustus's variables; tusd format.
    let subject = unique("one");
    let sub = Subscriber::start(&server.url(), &subject, None);
    let tmp = TempDir::new("nats-one");
    let d = Daemon::builder(&tmp)
        .env("RUSTUS_HOOKS_NATS_URLS", &server.url())
        .env("RUSTUS_HOOKS_NATS_SUBJECT", &subject)
        .env("RUSTUS_HOOKS", "post-create,post-finish")
        .env("RUSTUS_HOOKS_FORMAT", "tusd")
        .start();
    let id = d.create(4);
    d.patch(&id, 0, b"abcd").assert_status(204, "patch");
    let all = sub.wait(2, ARRIVAL_TIMEOUT);
    assert_eq!(subjects(&all), [subject.clone(), subject.clone()]);
    assert_eq!(all[0].json()["Upload"]["ID"], id.as_str());
    assert_eq!(all[1].json()["Upload"]["Offset"], 4);
    drop(d);

    // Neither: the bare event name is the subject.
    let sub = Subscriber::start(&server.url(), "post-create", None);
    let tmp = TempDir::new("nats-bare");
    let d = Daemon::start(
        &tmp,
        &["--hooks-nats-urls", &server.url(), "--hooks", "post-create"],
    );
    let id = d.create(4);
    let all = sub.wait(1, ARRIVAL_TIMEOUT);
    assert_eq!(all[0].subject, "post-create");
    assert_eq!(all[0].upload_id(), id);

    // Both: refused at startup, as rustus does.
    let tmp = TempDir::new("nats-both");
    let e = Daemon::builder(&tmp)
        .args(&[
            "--hooks-nats-urls",
            &server.url(),
            "--hooks-nats-subject",
            "a",
            "--hooks-nats-prefix",
            "b",
        ])
        .try_start()
        .err()
        .expect("a subject and a prefix are refused");
    assert!(e.contains("cannot be used together"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Replies: a verdict
// ---------------------------------------------------------------------------------------

/// Refuses pre-create without a file name (JSON, with a content type) and every
/// pre-terminate (text); lets everything else through (empty or `OK`).
fn gatekeeper(g: &Got) -> (Vec<u8>, Option<&'static str>) {
    let event = g.subject.rsplit('.').next().unwrap_or("");
    let json = g.json();
    match event {
        "pre-create" if json["upload"]["metadata"]["filename"].is_null() => (
            br#"{"error":"a file name is required"}"#.to_vec(),
            Some("application/json"),
        ),
        "pre-create" => (b"OK".to_vec(), None),
        "pre-terminate" => (b"uploads are kept".to_vec(), None),
        _ => (Vec::new(), None),
    }
}

#[test]
fn a_reply_refuses_with_400_and_its_body() {
    let Some(server) = Server::start("a_reply_refuses", &[]) else {
        return;
    };
    let prefix = unique("replies");
    let sub = Subscriber::start(&server.url(), &format!("{prefix}.>"), Some(gatekeeper));
    let tmp = TempDir::new("nats-replies");
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-nats-urls",
            &server.url(),
            "--hooks-nats-prefix",
            &prefix,
            "--hooks-nats-wait-for-replies",
        ],
    );
    // Refused: 400, the reply as body, its content type; nothing created.
    let r = d.post(&[("Upload-Length", "4")]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body, br#"{"error":"a file name is required"}"#);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(list_files(d.data_dir()).is_empty(), "something was created");
    // Let through ("OK").
    let r = d.post(&[
        ("Upload-Length", "4"),
        ("Upload-Metadata", "filename dGVzdC50eHQ="),
    ]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    d.patch(&id, 0, b"abcd").assert_status(204, "patch");
    // pre-terminate refused (text: the default content type); the upload is kept.
    let r = d.delete(&id);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body, b"uploads are kept");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(d.offset(&id), 4);
    // Every event was a request the subscriber saw (the refused pre-create included).
    let all = sub.wait(5, ARRIVAL_TIMEOUT);
    let mut names: Vec<&str> = all
        .iter()
        .map(|g| g.subject.rsplit('.').next().unwrap_or(""))
        .collect();
    // (post-finish and pre-terminate may cross: different worker queues.)
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "post-create",
            "post-finish",
            "pre-create",
            "pre-create",
            "pre-terminate"
        ]
    );
    assert_eq!(metric(&d, "tusring_hook_rejected_total"), Some(2.0));
    assert_eq!(metric(&d, "tusring_hook_failed_total"), Some(0.0));

    // Nobody answers: a pre-hook cannot be asked, 502; the upload is not created.
    let tmp = TempDir::new("nats-noresponders");
    let lonely = Daemon::start(
        &tmp,
        &[
            "--hooks-nats-urls",
            &server.url(),
            "--hooks-nats-prefix",
            &unique("nobody"),
            "--hooks-nats-wait-for-replies",
            "--hooks",
            "pre-create",
        ],
    );
    let r = lonely.post(&[("Upload-Length", "4")]);
    assert_eq!(r.status, 502, "{r:?}");
    assert!(list_files(lonely.data_dir()).is_empty());
}

/// With `--hooks-answers`: refuses pre-create without a file name with a tusd v2 answer
/// (403, its body and field), renames the file of the others (`ChangeFileInfo`), and
/// refuses every pre-terminate in plain text (rustus's convention, still a refusal).
fn answerer(g: &Got) -> (Vec<u8>, Option<&'static str>) {
    let event = g.subject.rsplit('.').next().unwrap_or("");
    let json = g.json();
    match event {
        "pre-create" if json["upload"]["metadata"]["filename"].is_null() => (
            br#"{"RejectUpload":true,"HTTPResponse":{"StatusCode":403,"Body":"name it","Header":{"X-Why":"no name"}}}"#
                .to_vec(),
            Some("application/json"),
        ),
        "pre-create" => (
            br#" {"ChangeFileInfo":{"MetaData":{"filename":"from-nats.txt"}}}"#.to_vec(),
            None,
        ),
        "pre-terminate" => (b"uploads are kept".to_vec(), None),
        _ => (Vec::new(), None),
    }
}

#[test]
fn a_reply_can_be_a_tusd_answer() {
    let Some(server) = Server::start("a_reply_can_be_a_tusd_answer", &[]) else {
        return;
    };
    let prefix = unique("answers");
    let _sub = Subscriber::start(&server.url(), &format!("{prefix}.>"), Some(answerer));
    let tmp = TempDir::new("nats-answers");
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-nats-urls",
            &server.url(),
            "--hooks-nats-prefix",
            &prefix,
            "--hooks-nats-wait-for-replies",
            "--hooks-answers",
        ],
    );
    let r = d.post(&[("Upload-Length", "4")]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, b"name it");
    assert_eq!(r.header("X-Why"), Some("no name"));
    assert!(list_files(d.data_dir()).is_empty(), "something was created");
    let r = d.post(&[
        ("Upload-Length", "4"),
        ("Upload-Metadata", "filename dGVzdC50eHQ="),
    ]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    // "from-nats.txt"
    assert_eq!(
        d.head(&id).header("Upload-Metadata"),
        Some("filename ZnJvbS1uYXRzLnR4dA==")
    );
    let r = d.delete(&id);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body, b"uploads are kept");
    assert_eq!(d.offset(&id), 0);
}

// ---------------------------------------------------------------------------------------
// The server away
// ---------------------------------------------------------------------------------------

/// `n` whole uploads of 4 bytes; each request must succeed, and quickly.
fn uploads(d: &Daemon, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            let id = d.create(4);
            d.patch(&id, 0, b"abcd").assert_status(204, "patch");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "an upload took {:?} while NATS was away",
                started.elapsed()
            );
            id
        })
        .collect()
}

/// A daemon that reaches `server` only through a [`TcpProxy`] (down until set up),
/// publishing to subjects `<unique prefix>.<event>` with `extra` arguments, and a
/// subscriber of those subjects connected to the server itself. Bind `_tmp` first (it is
/// the data directory; dropped last).
struct ViaProxy {
    d: Daemon,
    proxy: TcpProxy,
    sub: Subscriber,
    _tmp: TempDir,
}

fn via_proxy(server: &Server, tag: &str, extra: &[&str]) -> ViaProxy {
    let prefix = unique(tag);
    let sub = Subscriber::start(&server.url(), &format!("{prefix}.>"), None);
    let proxy = TcpProxy::down(server.addr());
    let tmp = TempDir::new(&format!("nats-{tag}"));
    let url = format!("nats://127.0.0.1:{}", proxy.port());
    let mut args = vec!["--hooks-nats-urls", &url, "--hooks-nats-prefix", &prefix];
    args.extend_from_slice(extra);
    let d = Daemon::start(&tmp, &args);
    ViaProxy {
        d,
        proxy,
        sub,
        _tmp: tmp,
    }
}

/// [`via_proxy`] with the proxy up and the daemon connected through it.
fn connected_via_proxy(server: &Server, tag: &str, extra: &[&str]) -> ViaProxy {
    let v = via_proxy(server, tag, extra);
    v.proxy.set_up(true);
    assert!(
        eventually(Duration::from_secs(10), || {
            metric(&v.d, "tusring_nats_connected") == Some(1.0)
        }),
        "the daemon did not connect through the proxy"
    );
    v
}

#[test]
fn server_away_at_start_and_mid_run_loses_nothing() {
    let Some(server) = Server::start("server_away", &[]) else {
        return;
    };
    // The daemon reaches the server only through the proxy, down at start.
    let ViaProxy {
        _tmp,
        d,
        proxy,
        sub,
    } = via_proxy(&server, "away", &["--hooks", "post-create,post-finish"]);
    // Away at start: uploads go on; events wait in the queue.
    let first = uploads(&d, 20);
    assert_eq!(metric(&d, "tusring_nats_connected"), Some(0.0));
    assert_eq!(metric(&d, "tusring_nats_backlog"), Some(40.0));
    assert!(sub.all().is_empty());
    // Up: every queued event arrives, in order.
    proxy.set_up(true);
    let all = sub.wait(40, ARRIVAL_TIMEOUT);
    for id in &first {
        let names: Vec<String> = of_upload(&all, id)
            .iter()
            .map(|g| g.subject.rsplit('.').next().unwrap_or("").to_owned())
            .collect();
        assert_eq!(names, ["post-create", "post-finish"], "{id}");
    }
    let order: Vec<String> = all.iter().step_by(2).map(Got::upload_id).collect();
    assert_eq!(order, first, "the events arrived out of order");
    assert!(eventually(Duration::from_secs(10), || {
        metric(&d, "tusring_nats_backlog") == Some(0.0)
    }));

    // Away mid-run (the connection cut): uploads go on; the events arrive once it is back.
    proxy.set_up(false);
    assert!(
        eventually(Duration::from_secs(15), || {
            metric(&d, "tusring_nats_connected") == Some(0.0)
        }),
        "the lost connection was not noticed"
    );
    let second = uploads(&d, 20);
    proxy.set_up(true);
    let all = sub.wait(80, ARRIVAL_TIMEOUT);
    for id in &second {
        assert_eq!(of_upload(&all, id).len(), 2, "{id}: {:?}", subjects(&all));
    }
    assert!(eventually(Duration::from_secs(10), || {
        metric(&d, "tusring_nats_confirmed_total") == Some(80.0)
    }));
    assert_eq!(metric(&d, "tusring_nats_dropped_total"), Some(0.0));
    assert!(metric(&d, "tusring_nats_connects_total").unwrap_or(0.0) >= 2.0);
    // At least once: an event published again after a cut may arrive twice, never zero
    // times.
    assert!(sub.all().len() >= 80);
}

#[test]
fn connection_cut_while_events_stream_loses_none() {
    let Some(server) = Server::start("connection_cut_while_events_stream", &[]) else {
        return;
    };
    // The subscriber stays connected to the server; only the daemon's connection is cut.
    let ViaProxy {
        _tmp,
        d,
        proxy,
        sub,
    } = connected_via_proxy(&server, "cut", &["--hooks", "post-finish"]);
    // Uploads go on without a pause while the connection is cut under them, again and
    // again; none is slowed, and every event arrives (those the daemon had written to a
    // connection that died are published again; `events_lost_in_flight_are_published_again`
    // makes that loss certain).
    const CUTS: usize = 5;
    let done = std::sync::atomic::AtomicBool::new(false);
    let ids = thread::scope(|s| {
        let uploader = s.spawn(|| {
            let mut ids = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                ids.extend(uploads(&d, 1));
            }
            ids
        });
        for _ in 0..CUTS {
            thread::sleep(Duration::from_millis(250));
            proxy.set_up(false);
            thread::sleep(Duration::from_millis(300));
            proxy.set_up(true);
        }
        thread::sleep(Duration::from_millis(300));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        uploader.join().expect("uploader")
    });
    assert!(ids.len() >= 20, "only {} uploads", ids.len());
    let missing = || {
        let got: std::collections::HashSet<String> = sub.all().iter().map(Got::upload_id).collect();
        ids.iter()
            .filter(|id| !got.contains(*id))
            .cloned()
            .collect::<Vec<String>>()
    };
    let arrived = eventually(ARRIVAL_TIMEOUT, || missing().is_empty());
    let missing = missing();
    assert!(
        arrived,
        "{} of {} events never arrived: {missing:?}; {}",
        missing.len(),
        ids.len(),
        d.stderr_text()
    );
    assert_eq!(metric(&d, "tusring_nats_dropped_total"), Some(0.0));
}

#[test]
fn events_lost_in_flight_are_published_again() {
    let Some(server) = Server::start("events_lost_in_flight", &[]) else {
        return;
    };
    let ViaProxy {
        _tmp,
        d,
        proxy,
        sub,
    } = connected_via_proxy(&server, "lost", &["--hooks", "post-finish"]);
    let before = uploads(&d, 3);
    sub.wait(3, ARRIVAL_TIMEOUT);
    // The network swallows what the daemon sends (the connection still looks up), then
    // the connection is cut: the events published meanwhile were never confirmed, so
    // they are published again after the reconnect, not counted as delivered.
    proxy.set_stalled(true);
    let lost = uploads(&d, 10);
    thread::sleep(Duration::from_millis(500));
    proxy.set_up(false);
    proxy.set_stalled(false);
    thread::sleep(Duration::from_millis(300));
    proxy.set_up(true);
    let all = sub.wait(13, ARRIVAL_TIMEOUT);
    for id in before.iter().chain(&lost) {
        assert!(!of_upload(&all, id).is_empty(), "{id} never arrived");
    }
    assert_eq!(metric(&d, "tusring_nats_dropped_total"), Some(0.0));
    assert!(eventually(Duration::from_secs(10), || {
        metric(&d, "tusring_nats_confirmed_total") == Some(13.0)
    }));
}

#[test]
fn server_crash_and_restart_fail_no_upload() {
    let Some(mut server) = Server::start("server_crash", &[]) else {
        return;
    };
    let prefix = unique("crash");
    let tmp = TempDir::new("nats-crash");
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-nats-urls",
            &server.url(),
            "--hooks-nats-prefix",
            &prefix,
            "--hooks",
            "post-finish",
        ],
    );
    let sub = Subscriber::start(&server.url(), &format!("{prefix}.>"), None);
    uploads(&d, 5);
    sub.wait(5, ARRIVAL_TIMEOUT);
    // The server crashes: uploads go on, their events wait.
    server.kill();
    let during = uploads(&d, 10);
    assert!(eventually(Duration::from_secs(10), || {
        metric(&d, "tusring_nats_connected") == Some(0.0)
    }));
    // It comes back on the same port: the daemon reconnects and publishes what waited
    // (to the subscribers present then: plain NATS keeps nothing for absent ones).
    server.run();
    assert!(
        eventually(ARRIVAL_TIMEOUT, || {
            metric(&d, "tusring_nats_confirmed_total") == Some(15.0)
        }),
        "confirmed {:?}, backlog {:?}: {}",
        metric(&d, "tusring_nats_confirmed_total"),
        metric(&d, "tusring_nats_backlog"),
        d.stderr_text()
    );
    assert_eq!(metric(&d, "tusring_nats_connected"), Some(1.0));
    assert_eq!(metric(&d, "tusring_nats_connects_total"), Some(2.0));
    assert_eq!(metric(&d, "tusring_nats_dropped_total"), Some(0.0));
    // The subscriber is back too: new events reach it.
    let after = uploads(&d, 3);
    assert!(eventually(ARRIVAL_TIMEOUT, || {
        let all = sub.all();
        after.iter().all(|id| !of_upload(&all, id).is_empty())
    }));
    let _ = during;
}

#[test]
fn queued_events_are_published_at_shutdown() {
    let Some(server) = Server::start("queued_events_at_shutdown", &[]) else {
        return;
    };
    let ViaProxy {
        _tmp,
        mut d,
        proxy,
        sub,
    } = via_proxy(
        &server,
        "drain",
        &["--hooks", "post-finish", "--shutdown-timeout", "20"],
    );
    let ids = uploads(&d, 10);
    // SIGTERM while the server is away; it comes back within the grace period.
    d.sigterm();
    thread::sleep(Duration::from_millis(500));
    proxy.set_up(true);
    let st = d
        .wait_exit(Duration::from_secs(30))
        .expect("the daemon exits");
    assert!(st.success(), "{st:?}: {}", d.stderr_text());
    let all = sub.wait(10, ARRIVAL_TIMEOUT);
    let got: Vec<String> = all.iter().map(Got::upload_id).collect();
    assert_eq!(got, ids);
}

#[test]
fn user_password_and_token_authenticate() {
    // A server that wants a user and password.
    let Some(server) = Server::start("nats_auth", &["--user", "tus", "--pass", "s3cret"]) else {
        return;
    };
    let sub = Subscriber::start_with(
        &server.url(),
        "post-create",
        None,
        ConnectOptions::with_user_and_password("tus".into(), "s3cret".into()),
    );
    let tmp = TempDir::new("nats-auth");
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-nats-urls",
            &server.url(),
            "--hooks-nats-user",
            "tus",
            "--hooks-nats-password",
            "s3cret",
            "--hooks",
            "post-create",
        ],
    );
    let id = d.create(1);
    assert_eq!(sub.wait(1, ARRIVAL_TIMEOUT)[0].upload_id(), id);
    assert!(
        !d.stderr_text().contains("s3cret"),
        "the password was logged"
    );
    // A user without a password is refused at startup, as rustus does.
    let tmp = TempDir::new("nats-auth-half");
    let e = Daemon::builder(&tmp)
        .args(&[
            "--hooks-nats-urls",
            &server.url(),
            "--hooks-nats-user",
            "tus",
        ])
        .try_start()
        .err()
        .expect("a user without a password is refused");
    assert!(e.contains("requires --hooks-nats-password"), "{e}");
    drop((d, sub, server));

    // Token authentication.
    let Some(server) = Server::start("nats_token", &["--auth", "t0k3n"]) else {
        return;
    };
    let sub = Subscriber::start_with(
        &server.url(),
        "post-create",
        None,
        ConnectOptions::with_token("t0k3n".into()),
    );
    let tmp = TempDir::new("nats-token");
    let d = Daemon::builder(&tmp)
        .args(&["--hooks", "post-create"])
        .env("RUSTUS_HOOKS_NATS_URLS", &server.url())
        .env("RUSTUS_HOOKS_NATS_TOKEN", "t0k3n")
        .start();
    let id = d.create(1);
    assert_eq!(sub.wait(1, ARRIVAL_TIMEOUT)[0].upload_id(), id);
}
