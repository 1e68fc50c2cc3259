//! The AMQP notifier against a real RabbitMQ (and a real Celery worker).
//!
//! The broker is `$TUSRING_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672`),
//! started by `scripts/test.sh` through `scripts/rabbitmq.sh`. Without a broker these
//! tests skip with a loud message, unless `TUSRING_REQUIRE_AMQP` is set (as
//! `scripts/test.sh` does): then they fail. The tests that stop or kill the broker run
//! `scripts/rabbitmq.sh` (root) and hold [`BROKER`] for writing, so no other AMQP test
//! runs meanwhile; they start the broker again when they end, even when they fail.
//!
//! Each test uses its own exchange, routing keys and queues (a per-run suffix), so tests
//! never see each other's messages. A small TCP proxy ([`TcpProxy`]) in front of the broker
//! plays a broker that is away and comes back, without stopping the real one.

use crate::harness::*;
use amiquip::{
    AmqpValue, Channel, Connection, Delivery, ExchangeDeclareOptions, ExchangeType, FieldTable,
    Publish, QueueDeclareOptions, QueueDeleteOptions,
};
use serde_json::Value;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Held for reading by every AMQP test, for writing by those that stop the broker.
static BROKER: RwLock<()> = RwLock::new(());

/// Longest wait for events to reach a queue.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker outage under steady upload traffic that must lose nothing.
const OUTAGE: Duration = Duration::from_secs(30);

fn required() -> bool {
    std::env::var_os("TUSRING_REQUIRE_AMQP").is_some_and(|v| !v.is_empty())
}

fn skip(test: &str, why: &str) {
    if required() {
        panic!("{test}: {why}, and TUSRING_REQUIRE_AMQP is set; run scripts/test.sh");
    }
    let bang = "!".repeat(78);
    let msg = format!(
        "\n{bang}\n!!! SKIPPED {test}: {why}.\n\
         !!! Run scripts/test.sh (or set TUSRING_REQUIRE_AMQP=1 to make this fail).\n{bang}\n\n"
    );
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

fn broker_url() -> String {
    std::env::var("TUSRING_AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672".to_owned())
}

/// The broker's host:port, from its URL.
fn broker_addr() -> String {
    let url = broker_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5672")
    }
}

fn read_lock() -> RwLockReadGuard<'static, ()> {
    BROKER.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock() -> RwLockWriteGuard<'static, ()> {
    BROKER.write().unwrap_or_else(|p| p.into_inner())
}

/// A client of the broker, or `None` (after the skip message) when there is none.
fn client(test: &str) -> Option<Client> {
    let url = broker_url();
    match Connection::insecure_open(&url) {
        Ok(conn) => Some(Client { conn }),
        Err(e) => {
            skip(test, &format!("no RabbitMQ at {url} ({e})"));
            None
        }
    }
}

/// A name unique to this run and test.
fn unique(tag: &str) -> String {
    let n = uuid::Uuid::new_v4().simple().to_string();
    format!("tusring-test-{tag}-{}", &n[..8])
}

/// The test's side of the broker: inspects and empties queues.
struct Client {
    conn: Connection,
}

impl Client {
    fn channel(&mut self) -> Channel {
        self.conn.open_channel(None).expect("open a test channel")
    }

    /// Messages in `queue`, or `None` when it does not exist (a passive declare).
    fn count(&mut self, queue: &str) -> Option<u32> {
        let ch = self.channel();
        let n = ch
            .queue_declare_passive(queue)
            .ok()
            .and_then(|q| q.declared_message_count());
        let _ = ch.close();
        n
    }

    /// Waits until `queue` holds at least `want` messages, then takes them all (acked).
    fn take(&mut self, queue: &str, want: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(queue).unwrap_or(0) as usize;
            if n >= want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{queue}: {n} message(s) after {timeout:?}, want {want}"
            );
            thread::sleep(Duration::from_millis(100));
        }
        // A straggler may still come: wait a moment so a surplus is seen too.
        thread::sleep(Duration::from_millis(300));
        let ch = self.channel();
        let mut out = Vec::new();
        while let Some(get) = ch.basic_get(queue, true).expect("basic_get") {
            out.push(get.delivery);
        }
        let _ = ch.close();
        out
    }

    fn delete_queues(&mut self, queues: &[String]) {
        let ch = self.channel();
        for q in queues {
            let _ = ch.queue_delete(q.as_str(), QueueDeleteOptions::default());
        }
        let _ = ch.close();
    }

    fn delete_exchange(&mut self, exchange: &str) {
        let ch = self.channel();
        let _ = ch.exchange_delete(exchange, false);
        let _ = ch.close();
    }

    /// Declares a durable queue bound to `exchange` with key = its name (for tests that
    /// do not make the daemon declare).
    fn bind_queue(&mut self, exchange: &str, queue: &str) {
        self.bind_queue_with(exchange, queue, FieldTable::new());
    }

    /// [`Client::bind_queue`] with queue arguments (`x-max-length`, `x-overflow`, …).
    fn bind_queue_with(&mut self, exchange: &str, queue: &str, arguments: FieldTable) {
        let ch = self.channel();
        ch.exchange_declare(
            ExchangeType::Direct,
            exchange,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
        )
        .expect("declare test exchange");
        ch.queue_declare(
            queue,
            QueueDeclareOptions {
                durable: true,
                arguments,
                ..QueueDeclareOptions::default()
            },
        )
        .expect("declare test queue");
        ch.queue_bind(queue, exchange, queue, Default::default())
            .expect("bind test queue");
        let _ = ch.close();
    }

    /// Publishes `body` to `exchange` with routing key `key`.
    fn publish(&mut self, exchange: &str, key: &str, body: &[u8]) {
        let ch = self.channel();
        ch.basic_publish(exchange, Publish::new(body, key))
            .expect("publish from the test");
        let _ = ch.close();
    }
}

/// `rabbitmqctl -q <what> <columns>` as rows of columns, or `None` when it cannot run.
fn rabbitmqctl(args: &[&str]) -> Option<Vec<Vec<String>>> {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    Some(
        text.lines()
            .skip(1) // the header row
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect(),
    )
}

/// Runs `scripts/rabbitmq.sh <what>`; panics when it fails.
fn rabbitmq_script(what: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg(what)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {script:?} {what}: {e}"));
    assert!(st.success(), "scripts/rabbitmq.sh {what} failed: {st:?}");
}

/// Whether this process may stop and start the broker (root, script, local broker).
fn can_control_broker() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root && broker_addr().starts_with("127.0.0.1:")
}

/// Starts the broker again when dropped (a test that stops it must leave it running).
struct RestartBroker;

impl Drop for RestartBroker {
    fn drop(&mut self) {
        rabbitmq_script("start");
    }
}

/// The hook message of a delivery, as JSON.
fn json_of(d: &Delivery) -> Value {
    serde_json::from_slice(&d.body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&d.body).escape_debug()
        )
    })
}

/// A whole upload of `size` bytes: create, then one PATCH. Returns its ID.
fn upload(d: &Daemon, size: usize) -> String {
    let id = d.create(size as u64);
    d.patch(&id, 0, &vec![b'a'; size])
        .assert_status(204, "patch");
    id
}

fn amqp_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--hooks-amqp-url", url];
    v.extend_from_slice(extra);
    v
}

// ---------------------------------------------------------------------------------------
// Declares, routing and message properties
// ---------------------------------------------------------------------------------------

#[test]
fn exchange_and_queues_are_declared_as_flagged() {
    let _shared = read_lock();
    let Some(mut c) = client("exchange_and_queues_are_declared_as_flagged") else {
        return;
    };
    let url = broker_url();
    let events = [
        "pre-create",
        "post-create",
        "post-receive",
        "pre-terminate",
        "post-terminate",
        "post-finish",
    ];

    // Durable topic exchange and six durable queues, one per event.
    let exchange = unique("decl");
    let prefix = unique("decl-q");
    let queues: Vec<String> = events.iter().map(|e| format!("{prefix}.{e}")).collect();
    let tmp = TempDir::new("amqp-declare");
    let d = Daemon::start(
        &tmp,
        &amqp_args(
            &url,
            &[
                "--hooks-amqp-exchange",
                &exchange,
                "--hooks-amqp-queues-prefix",
                &prefix,
                "--hooks-amqp-declare-exchange",
                "--hooks-amqp-declare-queues",
                "--hooks_amqp_durable_exchange",
                "--hooks-amqp-durable-queues",
            ],
        ),
    );
    assert!(
        eventually(Duration::from_secs(20), || queues
            .iter()
            .all(|q| c.count(q) == Some(0))),
        "the six queues were not declared: {}",
        d.stderr_text()
    );
    // Kind, durable and auto-delete as the broker has them.
    let second_exchange = unique("decl2");
    let key = unique("decl2-key");
    let tmp2 = TempDir::new("amqp-declare2");
    let d2 = Daemon::start(
        &tmp2,
        &amqp_args(
            &url,
            &[
                "--hooks-amqp-exchange",
                &second_exchange,
                "--hooks-amqp-exchange-kind",
                "fanout",
                "--hooks-amqp-routing-key",
                &key,
                "--hooks-amqp-declare-exchange",
                "--hooks-amqp-declare-queues",
                "--hooks-amqp-auto-delete",
            ],
        ),
    );
    assert!(
        eventually(Duration::from_secs(20), || c.count(&key) == Some(0)),
        "the routing-key queue was not declared: {}",
        d2.stderr_text()
    );
    for q in &queues {
        assert_eq!(c.count(&format!("{q}x")), None, "only the six queues exist");
    }
    match rabbitmqctl(&["list_exchanges", "name", "type", "durable", "auto_delete"]) {
        Some(rows) => {
            let row = |name: &str| {
                rows.iter()
                    .find(|r| r[0] == name)
                    .cloned()
                    .unwrap_or_else(|| panic!("exchange {name} not listed: {rows:?}"))
            };
            assert_eq!(row(&exchange)[1..], ["topic", "true", "false"]);
            assert_eq!(row(&second_exchange)[1..], ["fanout", "false", "true"]);
            let qrows = rabbitmqctl(&["list_queues", "name", "durable", "auto_delete"])
                .expect("rabbitmqctl list_queues");
            let qrow = |name: &str| {
                qrows
                    .iter()
                    .find(|r| r[0] == name)
                    .cloned()
                    .unwrap_or_else(|| panic!("queue {name} not listed"))
            };
            for q in &queues {
                assert_eq!(qrow(q)[1..], ["true", "false"], "{q}");
            }
            assert_eq!(qrow(&key)[1..], ["false", "true"]);
            let brows = rabbitmqctl(&[
                "list_bindings",
                "source_name",
                "destination_name",
                "routing_key",
            ])
            .expect("rabbitmqctl list_bindings");
            for q in queues.iter().chain([&key]) {
                let src = if *q == key {
                    &second_exchange
                } else {
                    &exchange
                };
                assert!(
                    brows
                        .iter()
                        .any(|r| r[0] == *src && r[1] == *q && r[2] == *q),
                    "{q} is not bound to {src} with key {q}"
                );
            }
        }
        None => {
            if required() {
                panic!("rabbitmqctl cannot list the broker's exchanges (run as root)");
            }
            // Without rabbitmqctl: a declare that differs in durability must be refused.
            let ch = c.channel();
            let r = ch.exchange_declare(
                ExchangeType::Topic,
                exchange.as_str(),
                ExchangeDeclareOptions::default(),
            );
            assert!(r.is_err(), "{exchange} is not durable");
        }
    }
    drop((d, d2));
    let mut all = queues.clone();
    all.push(key);
    c.delete_queues(&all);
    c.delete_exchange(&exchange);
    c.delete_exchange(&second_exchange);
}

#[test]
fn every_event_lands_on_its_queue_with_the_right_properties() {
    let _shared = read_lock();
    let Some(mut c) = client("every_event_lands_on_its_queue_with_the_right_properties") else {
        return;
    };
    let url = broker_url();
    let exchange = unique("events");
    let prefix = unique("events-q");
    let tmp = TempDir::new("amqp-events");
    let d = Daemon::start(
        &tmp,
        &amqp_args(
            &url,
            &[
                "--hooks-amqp-exchange",
                &exchange,
                "--hooks-amqp-queues-prefix",
                &prefix,
                "--hooks-amqp-declare-exchange",
                "--hooks-amqp-declare-queues",
                "--hooks-format",
                "v2",
            ],
        ),
    );
    assert!(eventually(Duration::from_secs(20), || c
        .count(&format!("{prefix}.post-finish"))
        .is_some()));
    let id = d.create(10);
    d.patch(&id, 0, b"hello").assert_status(204, "patch 1");
    d.patch(&id, 5, b"world").assert_status(204, "patch 2");
    d.delete(&id).assert_status(204, "delete");
    for (event, method) in [
        ("pre-create", "POST"),
        ("post-create", "POST"),
        ("post-receive", "PATCH"),
        ("post-finish", "PATCH"),
        ("pre-terminate", "DELETE"),
        ("post-terminate", "DELETE"),
    ] {
        let queue = format!("{prefix}.{event}");
        let got = c.take(&queue, 1, ARRIVAL_TIMEOUT);
        assert_eq!(got.len(), 1, "{queue}: {got:?}");
        let m = &got[0];
        assert_eq!(m.routing_key, queue);
        assert_eq!(m.exchange, exchange);
        let p = &m.properties;
        assert_eq!(p.content_type().as_deref(), Some("application/json"));
        assert_eq!(p.content_encoding().as_deref(), Some("utf-8"));
        assert_eq!(
            *p.delivery_mode(),
            None,
            "transient: the queues are not durable"
        );
        assert!(p.headers().as_ref().is_none_or(|h| h.is_empty()));
        let v = json_of(m);
        assert_eq!(v["upload"]["id"], id.as_str(), "{event}");
        assert_eq!(v["request"]["method"], method, "{event}");
        assert_eq!(
            v["request"]["uri"],
            if method == "POST" {
                "/files/".to_owned()
            } else {
                format!("/files/{id}/")
            }
        );
    }
    drop(d);
    let queues: Vec<String> = [
        "pre-create",
        "post-create",
        "post-receive",
        "pre-terminate",
        "post-terminate",
        "post-finish",
    ]
    .iter()
    .map(|e| format!("{prefix}.{e}"))
    .collect();
    c.delete_queues(&queues);
    c.delete_exchange(&exchange);
}

#[test]
fn a_routing_key_sends_every_event_to_one_queue_in_order() {
    let _shared = read_lock();
    let Some(mut c) = client("a_routing_key_sends_every_event_to_one_queue_in_order") else {
        return;
    };
    let url = broker_url();
    let exchange = unique("rk");
    let key = unique("rk-key");
    let tmp = TempDir::new("amqp-rk");
    let d = Daemon::start(
        &tmp,
        &amqp_args(
            &url,
            &[
                "--hooks-amqp-exchange",
                &exchange,
                "--hooks-amqp-exchange-kind",
                "direct",
                "--hooks-amqp-routing-key",
                &key,
                "--hooks-amqp-declare-exchange",
                "--hooks-amqp-declare-queues",
                "--hooks-amqp-durable-queues",
                "--hooks-workers",
                "1",
            ],
        ),
    );
    assert!(eventually(Duration::from_secs(20), || c
        .count(&key)
        .is_some()));
    let ids: Vec<String> = (0..5).map(|_| upload(&d, 100)).collect();
    let got = c.take(&key, 15, ARRIVAL_TIMEOUT);
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|m| {
            let v = json_of(m);
            assert_eq!(m.routing_key, key);
            assert_eq!(
                *m.properties.delivery_mode(),
                Some(2),
                "durable: persistent"
            );
            let event = if v["request"]["method"] == "PATCH" {
                "post-finish"
            } else if v["upload"]["path"].is_null() {
                "pre-create"
            } else {
                "post-create"
            };
            (
                v["upload"]["id"].as_str().unwrap().to_owned(),
                event.to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = ids
        .iter()
        .flat_map(|id| {
            ["pre-create", "post-create", "post-finish"].map(|e| (id.clone(), e.to_owned()))
        })
        .collect();
    assert_eq!(seen, want);
    drop(d);
    c.delete_queues(&[key]);
    c.delete_exchange(&exchange);
}

// ---------------------------------------------------------------------------------------
// Celery
// ---------------------------------------------------------------------------------------

fn celery_python() -> Option<PathBuf> {
    python_with("celery")
}

/// A Celery worker, killed on drop.
struct Worker {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_celery_worker_runs_every_task() {
    let _shared = read_lock();
    let Some(_c) = client("a_celery_worker_runs_every_task") else {
        return;
    };
    let Some(python) = celery_python() else {
        skip("a_celery_worker_runs_every_task", "celery is not installed");
        return;
    };
    let url = broker_url();
    let tmp = TempDir::new("amqp-celery");
    let record = tmp.join("tasks.jsonl");
    let mut child = Command::new(&python)
        .args([
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--pool=solo",
            "-Q",
            "celery",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname",
            &format!("tusring-test-{}@localhost", std::process::id()),
        ])
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop"))
        .env("CELERY_BROKER_URL", &url)
        .env("CELERY_RECORD_FILE", &record)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the celery worker");
    let log = Arc::new(Mutex::new(String::new()));
    for r in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        thread::spawn(move || drain_lines(r, log, None));
    }
    let worker = Worker { child, log };
    assert!(
        eventually(Duration::from_secs(90), || worker
            .log
            .lock()
            .unwrap()
            .contains("ready.")),
        "the celery worker did not get ready:\n{}",
        worker.log.lock().unwrap()
    );
    // tusring as the README documents it, by flags.
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-amqp-url",
            &url,
            "--hooks-amqp-exchange",
            "celery",
            "--hooks-amqp-exchange-kind",
            "direct",
            "--hooks-amqp-routing-key",
            "celery",
            "--hooks-amqp-celery",
        ],
    );
    let id = d.create(10);
    d.patch(&id, 0, b"hello").assert_status(204, "patch 1");
    d.patch(&id, 5, b"world").assert_status(204, "patch 2");
    d.delete(&id).assert_status(204, "delete");
    let want = [
        "rustus.pre-create",
        "rustus.post-create",
        "rustus.post-receive",
        "rustus.post-finish",
        "rustus.pre-terminate",
        "rustus.post-terminate",
    ];
    let mine = || -> Vec<Value> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["args"][0]["upload"]["id"] == id.as_str())
            .collect()
    };
    assert!(
        eventually(ARRIVAL_TIMEOUT, || mine().len() >= want.len()),
        "tasks run: {:?}\nworker log:\n{}\ndaemon log:\n{}",
        mine(),
        worker.log.lock().unwrap(),
        d.stderr_text()
    );
    let runs = mine();
    let mut names: Vec<&str> = runs.iter().map(|v| v["task"].as_str().unwrap()).collect();
    names.sort_unstable();
    let mut sorted = want.to_vec();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "each task ran once");
    for v in &runs {
        let args = v["args"].as_array().unwrap();
        assert_eq!(args.len(), 1, "the payload is the only argument: {v}");
        assert!(args[0]["request"].is_object() && args[0]["upload"].is_object());
    }
    // The same setup by environment variables.
    let tmp2 = TempDir::new("amqp-celery-env");
    let d2 = Daemon::builder(&tmp2)
        .env("RUSTUS_HOOKS_AMQP_URL", &url)
        .env("RUSTUS_HOOKS_AMQP_EXCHANGE", "celery")
        .env("RUSTUS_HOOKS_AMQP_EXCHANGE_KIND", "direct")
        .env("RUSTUS_HOOKS_AMQP_ROUTING_KEY", "celery")
        .env("RUSTUS_HOOKS_AMQP_CELERY", "true")
        .env("RUSTUS_HOOKS", "post-create")
        .start();
    let id2 = d2.create(3);
    assert!(
        eventually(ARRIVAL_TIMEOUT, || std::fs::read_to_string(&record)
            .unwrap_or_default()
            .contains(&id2)),
        "the env-configured daemon's task did not run:\n{}",
        worker.log.lock().unwrap()
    );
}

// ---------------------------------------------------------------------------------------
// A broker that is slow or away
// ---------------------------------------------------------------------------------------

#[test]
fn a_broker_that_never_answers_delays_no_upload() {
    let _shared = read_lock();
    // Accepts connections and never says a word: the AMQP handshake hangs.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        thread::spawn(move || {
            for s in listener.incoming().flatten() {
                held.lock().unwrap().push(s);
            }
        });
    }
    let url = format!("amqp://guest:guest@127.0.0.1:{port}");
    let tmp = TempDir::new("amqp-silent");
    let d = Daemon::start(&tmp, &amqp_args(&url, &[]));
    for i in 0..10 {
        let started = Instant::now();
        let id = upload(&d, 4096);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "upload {i} ({id}) took {took:?} with a silent broker"
        );
        d.delete(&id).assert_status(204, "delete");
    }
    assert!(!held.lock().unwrap().is_empty(), "the daemon never tried");
    // Five events per upload, all waiting.
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &d,
            "tusring_amqp_backlog"
        ) == Some(50.0)),
        "backlog {:?}",
        metric(&d, "tusring_amqp_backlog")
    );
    assert_eq!(metric(&d, "tusring_amqp_connected"), Some(0.0));
}

#[test]
fn a_full_queue_drops_the_oldest_and_the_rest_arrive_in_order() {
    let _shared = read_lock();
    let Some(mut c) = client("a_full_queue_drops_the_oldest_and_the_rest_arrive_in_order") else {
        return;
    };
    let proxy = TcpProxy::down(broker_addr());
    let url = format!("amqp://guest:guest@127.0.0.1:{}", proxy.port());
    let exchange = unique("full");
    let key = unique("full-key");
    c.bind_queue(&exchange, &key);
    let tmp = TempDir::new("amqp-full");
    let d = Daemon::start(
        &tmp,
        &amqp_args(
            &url,
            &[
                "--hooks-amqp-exchange",
                &exchange,
                "--hooks-amqp-routing-key",
                &key,
                "--hooks-amqp-queue-size",
                "3",
                "--hooks",
                "post-finish",
                "--hooks-workers",
                "1",
            ],
        ),
    );
    let ids: Vec<String> = (0..6).map(|_| upload(&d, 10)).collect();
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &d,
            "tusring_amqp_dropped_total"
        ) == Some(3.0)),
        "dropped: {:?}",
        metric(&d, "tusring_amqp_dropped_total")
    );
    assert_eq!(metric(&d, "tusring_amqp_backlog"), Some(3.0));
    for id in &ids[..3] {
        assert!(
            d.wait_log_line(&["post-finish", id, "AMQP: dropped"])
                .is_some(),
            "no drop logged for {id}:\n{}",
            d.stderr_text()
        );
    }
    proxy.set_up(true);
    let got = c.take(&key, 3, ARRIVAL_TIMEOUT);
    let seen: Vec<String> = got
        .iter()
        .map(|m| json_of(m)["upload"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ids[3..], "the three newest, in order");
    assert!(eventually(Duration::from_secs(10), || metric(
        &d,
        "tusring_amqp_backlog"
    ) == Some(0.0)));
    assert_eq!(metric(&d, "tusring_amqp_confirmed_total"), Some(3.0));
    drop(d);
    c.delete_queues(&[key]);
    c.delete_exchange(&exchange);
}

#[test]
fn sigterm_publishes_the_queued_events_before_exit() {
    let _shared = read_lock();
    let Some(mut c) = client("sigterm_publishes_the_queued_events_before_exit") else {
        return;
    };
    let proxy = TcpProxy::down(broker_addr());
    let url = format!("amqp://guest:guest@127.0.0.1:{}", proxy.port());
    let exchange = unique("term");
    let key = unique("term-key");
    c.bind_queue(&exchange, &key);
    let tmp = TempDir::new("amqp-term");
    let mut d = Daemon::start(
        &tmp,
        &amqp_args(
            &url,
            &[
                "--hooks-amqp-exchange",
                &exchange,
                "--hooks-amqp-routing-key",
                &key,
                "--hooks",
                "post-finish",
                "--hooks-workers",
                "1",
                "--shutdown-timeout",
                "30",
            ],
        ),
    );
    let ids: Vec<String> = (0..5).map(|_| upload(&d, 10)).collect();
    assert!(eventually(Duration::from_secs(10), || metric(
        &d,
        "tusring_amqp_backlog"
    ) == Some(5.0)));
    d.sigterm();
    thread::sleep(Duration::from_secs(1));
    assert_eq!(c.count(&key), Some(0));
    proxy.set_up(true);
    let status = d.wait_exit(Duration::from_secs(25));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}:\n{}",
        d.stderr_text()
    );
    let got = c.take(&key, 5, Duration::from_secs(5));
    let seen: Vec<String> = got
        .iter()
        .map(|m| json_of(m)["upload"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ids);
    c.delete_queues(&[key]);
    c.delete_exchange(&exchange);
}

/// Uploads 4 KiB files one after another until `until`, each timed.
fn steady_uploads(d: &Daemon, until: Instant, pause: Duration) -> (Vec<String>, Vec<Duration>) {
    let mut ids = Vec::new();
    let mut took = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        ids.push(upload(d, 4096));
        took.push(started.elapsed());
        thread::sleep(pause);
    }
    (ids, took)
}

fn ids_of(got: &[Delivery]) -> Vec<String> {
    got.iter()
        .map(|m| json_of(m)["upload"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn with_the_broker_stopped_uploads_go_on_and_events_arrive_after_it_returns() {
    const TEST: &str = "with_the_broker_stopped_uploads_go_on_and_events_arrive_after_it_returns";
    /// Between two uploads, the same with the broker up and down: steady traffic.
    const PAUSE: Duration = Duration::from_millis(20);
    let _exclusive = write_lock();
    let Some(mut c) = client(TEST) else {
        return;
    };
    if !can_control_broker() {
        skip(
            TEST,
            "stopping the broker needs root and a broker on 127.0.0.1",
        );
        return;
    }
    let url = broker_url();
    let exchange = unique("stop");
    let key = unique("stop-key");
    let tmp = TempDir::new("amqp-stop");
    let d = Daemon::start(
        &tmp,
        &amqp_args(
            &url,
            &[
                "--hooks-amqp-exchange",
                &exchange,
                "--hooks-amqp-exchange-kind",
                "direct",
                "--hooks-amqp-routing-key",
                &key,
                "--hooks-amqp-declare-exchange",
                "--hooks-amqp-durable-exchange",
                "--hooks-amqp-declare-queues",
                "--hooks-amqp-durable-queues",
                "--hooks",
                "post-finish",
                "--hooks-workers",
                "1",
            ],
        ),
    );
    assert!(eventually(Duration::from_secs(20), || c
        .count(&key)
        .is_some()));
    drop(c);
    let (mut ids, before) = steady_uploads(&d, Instant::now() + Duration::from_secs(3), PAUSE);
    assert!(eventually(Duration::from_secs(20), || metric(
        &d,
        "tusring_amqp_backlog"
    ) == Some(0.0)));
    let guard = RestartBroker;
    rabbitmq_script("stop");
    let (during_ids, during) =
        steady_uploads(&d, Instant::now() + OUTAGE, Duration::from_millis(20));
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
    let worst = during.iter().max().copied().unwrap_or_default();
    eprintln!(
        "broker stopped {OUTAGE:?}: {} uploads, mean {:?} (broker up: {:?}), worst {worst:?}",
        during.len(),
        mean(&during),
        mean(&before)
    );
    assert!(worst < Duration::from_secs(2), "an upload took {worst:?}");
    assert!(
        mean(&during) < mean(&before) * 3 + Duration::from_millis(50),
        "uploads slowed down: {:?} vs {:?}",
        mean(&during),
        mean(&before)
    );
    assert_eq!(
        metric(&d, "tusring_amqp_backlog"),
        Some(during_ids.len() as f64)
    );
    ids.extend(during_ids);
    drop(guard); // starts the broker
    let mut c = client(TEST).expect("the broker is back");
    let got = c.take(&key, ids.len(), ARRIVAL_TIMEOUT);
    assert_eq!(got.len(), ids.len(), "each event exactly once");
    assert_eq!(ids_of(&got), ids, "in order");
    assert_eq!(metric(&d, "tusring_amqp_dropped_total"), Some(0.0));
    drop(d);
    c.delete_queues(&[key]);
    c.delete_exchange(&exchange);
}

#[test]
fn a_broker_killed_mid_stream_loses_nothing() {
    const TEST: &str = "a_broker_killed_mid_stream_loses_nothing";
    let _exclusive = write_lock();
    let Some(mut c) = client(TEST) else {
        return;
    };
    if !can_control_broker() {
        skip(
            TEST,
            "killing the broker needs root and a broker on 127.0.0.1",
        );
        return;
    }
    let url = broker_url();
    let exchange = unique("kill");
    let key = unique("kill-key");
    let tmp = TempDir::new("amqp-kill");
    let d = Daemon::start(
        &tmp,
        &amqp_args(
            &url,
            &[
                "--hooks-amqp-exchange",
                &exchange,
                "--hooks-amqp-routing-key",
                &key,
                "--hooks-amqp-declare-exchange",
                "--hooks-amqp-durable-exchange",
                "--hooks-amqp-declare-queues",
                "--hooks-amqp-durable-queues",
                "--hooks",
                "post-create,post-finish",
                "--hooks-workers",
                "1",
            ],
        ),
    );
    assert!(eventually(Duration::from_secs(20), || c
        .count(&key)
        .is_some()));
    drop(c);
    let guard = RestartBroker;
    let ids = thread::scope(|s| {
        let uploads = s.spawn(|| {
            steady_uploads(&d, Instant::now() + Duration::from_secs(12), Duration::ZERO).0
        });
        thread::sleep(Duration::from_secs(3));
        rabbitmq_script("kill");
        rabbitmq_script("start");
        uploads.join().unwrap()
    });
    drop(guard);
    let mut c = client(TEST).expect("the broker is back");
    let got = c.take(&key, 2 * ids.len(), ARRIVAL_TIMEOUT);
    // At least once: an event published again after the kill may come twice; none is
    // missing, and first arrivals keep the order of the events.
    let mut first = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in &got {
        let v = json_of(m);
        let event = if v["request"]["method"] == "PATCH" {
            "post-finish"
        } else {
            "post-create"
        };
        let key = (v["upload"]["id"].as_str().unwrap().to_owned(), event);
        if seen.insert(key.clone()) {
            first.push(key);
        }
    }
    let want: Vec<(String, &str)> = ids
        .iter()
        .flat_map(|id| [(id.clone(), "post-create"), (id.clone(), "post-finish")])
        .collect();
    eprintln!(
        "broker killed: {} events, {} messages ({} duplicates)",
        want.len(),
        got.len(),
        got.len() - first.len()
    );
    assert_eq!(first, want);
    assert_eq!(metric(&d, "tusring_amqp_dropped_total"), Some(0.0));
    drop(d);
    c.delete_queues(&[key]);
    c.delete_exchange(&exchange);
}

#[test]
fn an_idle_connection_is_closed_and_reopened_by_the_next_event() {
    let _shared = read_lock();
    let Some(mut c) = client("an_idle_connection_is_closed_and_reopened_by_the_next_event") else {
        return;
    };
    let url = broker_url();
    let exchange = unique("idle");
    let key = unique("idle-key");
    c.bind_queue(&exchange, &key);
    let tmp = TempDir::new("amqp-idle");
    let d = Daemon::start(
        &tmp,
        &amqp_args(
            &url,
            &[
                "--hooks-amqp-exchange",
                &exchange,
                "--hooks-amqp-routing-key",
                &key,
                "--hooks-amqp-idle-connection-timeout",
                "1",
                "--hooks",
                "post-finish",
            ],
        ),
    );
    let first = upload(&d, 10);
    assert_eq!(ids_of(&c.take(&key, 1, ARRIVAL_TIMEOUT)), [first]);
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &d,
            "tusring_amqp_connected"
        ) == Some(0.0)),
        "the idle connection stayed open"
    );
    assert_eq!(metric(&d, "tusring_amqp_connects_total"), Some(1.0));
    let second = upload(&d, 10);
    assert_eq!(ids_of(&c.take(&key, 1, ARRIVAL_TIMEOUT)), [second]);
    assert_eq!(metric(&d, "tusring_amqp_connects_total"), Some(2.0));
    drop(d);
    c.delete_queues(&[key]);
    c.delete_exchange(&exchange);
}

// ---------------------------------------------------------------------------------------
// A broker that refuses, and the threads AMQP needs
// ---------------------------------------------------------------------------------------

/// CPU time (user + system) process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // The fields after the command name (which may hold spaces) in parentheses: state is
    // field 3 of stat(5), utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_millis(ticks * 1000 / u64::try_from(hz).unwrap_or(100).max(1))
}

/// The names of process `pid`'s threads.
fn thread_names(pid: u32) -> Vec<String> {
    let dir = format!("/proc/{pid}/task");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_owned())
        .collect()
}

/// A queue that refuses publishes while full (`x-overflow: reject-publish`) makes the
/// broker nack every message. The daemon publishes again after a doubling pause, as for
/// a lost connection (0.1 s to 3 s), one event at a time until one is confirmed, not in a
/// hot loop: its CPU stays near idle and it publishes a handful of times, not thousands.
/// Once the queue has room every event arrives, in order.
#[test]
fn a_broker_that_keeps_nacking_gets_republishes_with_backoff() {
    /// Events refused, and the queue's length (full of fillers from the start).
    const EVENTS: usize = 100;
    let _shared = read_lock();
    let Some(mut c) = client("a_broker_that_keeps_nacking_gets_republishes_with_backoff") else {
        return;
    };
    let exchange = unique("nack");
    let key = unique("nack-key");
    let mut arguments = FieldTable::new();
    arguments.insert("x-max-length".into(), AmqpValue::LongInt(EVENTS as i32));
    arguments.insert(
        "x-overflow".into(),
        AmqpValue::LongString("reject-publish".into()),
    );
    c.bind_queue_with(&exchange, &key, arguments);
    for _ in 0..EVENTS {
        c.publish(&exchange, &key, b"filler");
    }
    assert!(
        eventually(Duration::from_secs(10), || c.count(&key)
            == Some(EVENTS as u32)),
        "the fillers did not land"
    );
    let tmp = TempDir::new("amqp-nack");
    let d = Daemon::start(
        &tmp,
        &amqp_args(
            &broker_url(),
            &[
                "--hooks-amqp-exchange",
                &exchange,
                "--hooks-amqp-routing-key",
                &key,
                "--hooks",
                "post-finish",
            ],
        ),
    );
    let ids: Vec<String> = (0..EVENTS).map(|_| upload(&d, 10)).collect();
    assert!(
        d.wait_log_line(&["AMQP", "nack"]).is_some(),
        "no nack logged:\n{}",
        d.stderr_text()
    );
    let window = Duration::from_secs(5);
    let (cpu0, published0) = (
        cpu_time(d.pid()),
        metric(&d, "tusring_amqp_published_total").unwrap(),
    );
    thread::sleep(window);
    let (cpu1, published1) = (
        cpu_time(d.pid()),
        metric(&d, "tusring_amqp_published_total").unwrap(),
    );
    let cpu = cpu1.saturating_sub(cpu0);
    let published = published1 - published0;
    eprintln!("nacking broker: {cpu:?} of CPU and {published} publishes in {window:?}");
    assert!(
        cpu < Duration::from_millis(250),
        "the daemon used {cpu:?} of CPU in {window:?} against a nacking broker"
    );
    // One event a round, a round after 0.1, 0.2, 0.4, … 3 s.
    assert!(
        published <= 10.0,
        "{published} publishes in {window:?} against a nacking broker"
    );
    assert_eq!(metric(&d, "tusring_amqp_confirmed_total"), Some(0.0));
    assert_eq!(metric(&d, "tusring_amqp_dropped_total"), Some(0.0));
    assert_eq!(metric(&d, "tusring_amqp_backlog"), Some(EVENTS as f64));
    // Room again: every event arrives, in order, and the connection was never dropped
    // for the refusals.
    let ch = c.channel();
    ch.queue_purge(key.as_str()).expect("purge the fillers");
    let _ = ch.close();
    let got = c.take(&key, EVENTS, ARRIVAL_TIMEOUT);
    assert_eq!(ids_of(&got), ids);
    assert!(eventually(Duration::from_secs(10), || metric(
        &d,
        "tusring_amqp_backlog"
    ) == Some(0.0)));
    assert_eq!(
        metric(&d, "tusring_amqp_confirmed_total"),
        Some(EVENTS as f64)
    );
    assert_eq!(metric(&d, "tusring_amqp_connects_total"), Some(1.0));
    drop(d);
    c.delete_queues(&[key]);
    c.delete_exchange(&exchange);
}

/// With AMQP as the only notifier the cores queue events straight for the publisher:
/// no hook worker thread is started (it would only sit idle). With a notifier that
/// needs them, `--hooks-workers` are there.
#[test]
fn amqp_alone_starts_no_hook_worker_threads() {
    // No broker is needed: the publisher keeps trying in the background.
    let url = format!("amqp://guest:guest@127.0.0.1:{}", free_port());
    let hook_threads = |names: &[String]| {
        names
            .iter()
            .filter(|n| n.starts_with("tusring-hook"))
            .count()
    };
    let tmp = TempDir::new("amqp-threads");
    let d = Daemon::start(&tmp, &amqp_args(&url, &["--hooks-workers", "3"]));
    let id = upload(&d, 10);
    d.delete(&id).assert_status(204, "delete");
    let names = thread_names(d.pid());
    assert!(names.iter().any(|n| n == "tusring-amqp"), "{names:?}");
    assert_eq!(hook_threads(&names), 0, "{names:?}");
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &d,
            "tusring_amqp_backlog"
        ) == Some(5.0)),
        "the events went to the AMQP queue"
    );
    drop(d);
    let tmp = TempDir::new("amqp-threads-http");
    let http = format!("http://127.0.0.1:{}/hooks", free_port());
    let d = Daemon::start(
        &tmp,
        &amqp_args(&url, &["--hooks-http-urls", &http, "--hooks-workers", "3"]),
    );
    let names = thread_names(d.pid());
    assert_eq!(hook_threads(&names), 3, "{names:?}");
}
