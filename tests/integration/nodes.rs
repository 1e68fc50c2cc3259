//! Several nodes: two tusring daemons on two ports sharing one Redis (records and locks)
//! and one data directory, as behind a load balancer without sticky sessions: any node
//! serves any request of any upload; a PATCH stalled on one node is taken over by a
//! newer PATCH or DELETE on the other within the takeover bound; a node killed while it
//! holds an upload blocks it no longer than the lock expiry; 200 uploads by tuspy with
//! every request sent to a random node arrive byte for byte.

use crate::harness::*;
use crate::redis::{record, redis_node};
use crate::redisd::Redis;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const LEN: usize = 1 << 20;
/// Bytes the stalled request sends before going quiet.
const SENT: usize = 300 * 1024 + 7;
/// The takeover bound.
const TAKEOVER_WAIT: Duration = Duration::from_secs(1);

/// Two nodes on one Redis and one data directory (the same `tmp`).
fn two_nodes(tmp: &TempDir, redis: &Redis, extra: &[&str]) -> (Daemon, Daemon) {
    let a = redis_node(tmp, redis, extra);
    let b = redis_node(tmp, redis, extra);
    assert_ne!(a.port, b.port);
    assert_eq!(a.data_dir(), b.data_dir());
    (a, b)
}

/// Starts a PATCH of `data` at 0 on `on`, sends `SENT` bytes of its body and keeps the
/// connection open; returns once `seen_by` reports most of them stored.
fn hold(on: &Daemon, seen_by: &Daemon, id: &str, data: &[u8]) -> Conn {
    let mut c = on.conn();
    c.send_head(&patch_req(id, 0, data));
    c.send_raw(&data[..SENT]).unwrap();
    let floor = (SENT - 64 * 1024) as u64;
    assert!(
        eventually(Duration::from_secs(10), || seen_by.offset(id) >= floor),
        "the held PATCH's bytes are stored"
    );
    c
}

/// The stalled request's answer: 400 "taken over" with every byte it got counted.
fn assert_old_was_stopped(old: &mut Conn, what: &str) {
    let r = old
        .read_next_within(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{what}: the old request got no answer: {e}"));
    assert_eq!(r.status, 400, "{what}: {r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("took it over"),
        "{what}: {r:?}"
    );
    assert_eq!(r.upload_offset(), SENT as u64, "{what}: {r:?}");
    old.assert_closed(Duration::from_secs(5), what);
}

/// A counter of `/metrics`.
fn metric(d: &Daemon, name: &str) -> u64 {
    let m = d.send(&Req::new("GET", "/metrics"));
    String::from_utf8_lossy(&m.body)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn any_node_serves_any_request() {
    let tmp = TempDir::new("nodes-any");
    let Some(redis) = Redis::start(&tmp) else {
        return;
    };
    let (a, b) = two_nodes(&tmp, &redis, &[]);
    let data = random_bytes(1601, 300_000);
    // Create on A, PATCH on A, HEAD and PATCH on B, GET on A.
    let id = a.create(data.len() as u64);
    assert_eq!(a.patch(&id, 0, &data[..100_000]).status, 204);
    let h = b.head(&id);
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(h.upload_offset(), 100_000);
    // A stale offset on B is refused: B reads the record and the shared file.
    assert_eq!(b.patch(&id, 50_000, &data[50_000..60_000]).status, 409);
    let r = b.patch(&id, 100_000, &data[100_000..]);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.upload_offset(), data.len() as u64);
    let g = a.send(&Req::new("GET", &format!("/files/{id}")));
    assert_eq!(g.status, 200);
    assert_bytes_eq(&g.body, &data, "GET on A of what B completed");
    assert_eq!(record(&redis, &id)["offset"], data.len() as u64);
    // DELETE on B; A knows it is gone.
    assert_eq!(b.delete(&id).status, 204);
    assert_eq!(a.head(&id).status, 404);
    assert!(!a.data_path(&id).exists());
}

#[test]
fn a_patch_stalled_on_one_node_is_taken_over_from_the_other() {
    let tmp = TempDir::new("nodes-takeover");
    let Some(redis) = Redis::start(&tmp) else {
        return;
    };
    let (a, b) = two_nodes(&tmp, &redis, &[]);
    let mut times = Vec::new();

    // A newer PATCH on B with the offset its client started at (stale): A's request
    // stops, keeps its bytes and answers; B gets 409 within the bound.
    for round in 0..3u64 {
        let data = random_bytes(1610 + round, LEN);
        let id = a.create(LEN as u64);
        let mut old = hold(&a, &b, &id, &data);
        let started = Instant::now();
        let r = b.patch(&id, 0, &data);
        let took = started.elapsed();
        times.push(took);
        assert_eq!(r.status, 409, "round {round}: {r:?}");
        assert!(took < TAKEOVER_WAIT, "round {round}: took {took:?}");
        assert_old_was_stopped(&mut old, "stale");
        assert_eq!(b.offset(&id), SENT as u64, "HEAD on B after the takeover");
        assert_eq!(a.offset(&id), SENT as u64, "HEAD on A after the takeover");
        let r = b.patch(&id, SENT as u64, &data[SENT..]);
        assert_eq!(r.status, 204, "{r:?}");
        assert_bytes_eq(&a.read_data(&id), &data, "stale round");
    }

    // At the true offset: B takes over and completes.
    let data = random_bytes(1620, LEN);
    let id = a.create(LEN as u64);
    let mut old = hold(&a, &b, &id, &data);
    let started = Instant::now();
    let r = b.patch(&id, SENT as u64, &data[SENT..]);
    times.push(started.elapsed());
    assert_eq!(r.status, 204, "{r:?}");
    assert_old_was_stopped(&mut old, "true offset");
    assert_bytes_eq(&b.read_data(&id), &data, "true offset");

    // A DELETE on B takes the upload over too.
    let id = a.create(LEN as u64);
    let mut old = hold(&a, &b, &id, &data);
    let started = Instant::now();
    let r = b.delete(&id);
    times.push(started.elapsed());
    assert_eq!(r.status, 204, "{r:?}");
    assert_old_was_stopped(&mut old, "delete");
    assert!(!a.data_path(&id).exists());
    assert_eq!(a.head(&id).status, 404);
    assert_eq!(redis.get(&id), None);

    eprintln!("takeover across nodes, answer times: {times:?}");
    assert_eq!(metric(&b, "tusring_lock_takeovers_total"), 5);
    assert!(metric(&b, "tusring_redis_release_requests_sent_total") >= 5);
    assert!(metric(&a, "tusring_redis_release_requests_heard_total") >= 5);
}

#[test]
fn a_node_killed_holding_an_upload_blocks_it_no_longer_than_the_lock_expiry() {
    let tmp = TempDir::new("nodes-kill");
    let Some(redis) = Redis::start(&tmp) else {
        return;
    };
    const EXPIRY: Duration = Duration::from_secs(2);
    let (mut a, b) = two_nodes(&tmp, &redis, &["--redis-lock-expiration", "2"]);
    let data = random_bytes(1630, LEN);
    let id = a.create(LEN as u64);
    let _old = hold(&a, &b, &id, &data);
    // Held long enough for renewals to have run: the lock lives on its renewals.
    std::thread::sleep(EXPIRY * 2);
    let lock: Option<Vec<u8>> = redis.get(&format!("tusring:lock:{id}"));
    assert!(lock.is_some(), "the lock is in Redis while A holds it");
    a.kill9();
    let killed = Instant::now();
    // Nobody answers B's release requests: 423 after the bound, until the lock expires.
    let r = b.patch(&id, SENT as u64, &data[SENT..]);
    assert_eq!(r.status, 423, "the dead node's lock still holds: {r:?}");
    let resumed = loop {
        let offset = b.offset(&id);
        let r = b.patch(&id, offset, &data[offset as usize..]);
        if r.status == 204 {
            break killed.elapsed();
        }
        assert_eq!(r.status, 423, "{r:?}");
        assert!(
            killed.elapsed() < EXPIRY + Duration::from_secs(5),
            "still locked {:?} after the kill",
            killed.elapsed()
        );
    };
    eprintln!("the dead node's upload was resumed on B {resumed:?} after the kill (lock expiry {EXPIRY:?})");
    assert!(
        resumed <= EXPIRY + TAKEOVER_WAIT * 2,
        "resumed {resumed:?} after the kill"
    );
    assert_bytes_eq(&b.read_data(&id), &data, "after the kill");
}

/// Waits (up to `within`) until `/ready` of `d` answers `want`.
fn ready_is(d: &Daemon, want: u16, within: Duration) -> bool {
    eventually(within, || d.send(&Req::new("GET", "/ready")).status == want)
}

/// Redis stopped while node A holds an upload, then started again: A cannot renew its
/// lock, so it lets go within the lock expiry (keeping the bytes it got) before the
/// lock could lapse in Redis and B write too; both nodes answer 503 and are not ready
/// while Redis is away; once it is back both serve again by themselves, B resumes the
/// upload at the offset of the bytes on disk, and a takeover across nodes works again
/// (A listens for release requests on a new subscription).
#[test]
fn redis_restarted_under_two_nodes_loses_nothing_and_takeover_works_again() {
    let tmp = TempDir::new("nodes-redis-restart");
    let Some(mut redis) = Redis::start(&tmp) else {
        return;
    };
    const EXPIRY: Duration = Duration::from_secs(2);
    let (a, b) = two_nodes(&tmp, &redis, &["--redis-lock-expiration", "2"]);
    assert!(ready_is(&a, 200, Duration::from_secs(10)), "A ready");
    assert!(ready_is(&b, 200, Duration::from_secs(10)), "B ready");
    let data = random_bytes(1640, LEN);
    let id = a.create(LEN as u64);
    let mut old = hold(&a, &b, &id, &data);

    redis.stop();
    let stopped = Instant::now();
    // A's lock can no longer be renewed: its request lets go before the lock could
    // have expired in Redis, and says it could not save the record.
    let r = old
        .read_next_within(EXPIRY + Duration::from_secs(3))
        .expect("the held PATCH answers once its lock cannot be renewed");
    let let_go = stopped.elapsed();
    eprintln!(
        "A let go {let_go:?} after Redis stopped: {} {:?}",
        r.status,
        r.header("Retry-After")
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("Retry-After"), Some("1"), "{r:?}");
    assert!(let_go < EXPIRY + Duration::from_millis(500), "{let_go:?}");
    old.assert_closed(Duration::from_secs(5), "the held PATCH");
    assert_eq!(
        std::fs::metadata(a.data_path(&id)).unwrap().len(),
        SENT as u64,
        "every byte A got is on the shared disk"
    );
    for (name, d) in [("A", &a), ("B", &b)] {
        let h = d.head(&id);
        assert_eq!(h.status, 503, "{name}: {h:?}");
        assert_eq!(h.header("Retry-After"), Some("1"), "{name}: {h:?}");
        assert!(ready_is(d, 503, Duration::from_secs(5)), "{name} not ready");
    }

    redis.spawn();
    let back = Instant::now();
    assert!(ready_is(&a, 200, Duration::from_secs(10)), "A ready again");
    assert!(ready_is(&b, 200, Duration::from_secs(10)), "B ready again");
    eprintln!(
        "both nodes ready {:?} after Redis came back",
        back.elapsed()
    );
    crate::redis::every_core_reconnects();
    assert_eq!(b.offset(&id), SENT as u64, "nothing A stored was lost");

    let r = b.patch(&id, SENT as u64, &data[SENT..]);
    assert_eq!(r.status, 204, "{r:?}");
    assert_bytes_eq(&a.read_data(&id), &data, "after Redis restarted");

    // A takeover across nodes works again: A heard B's release request.
    let id = a.create(LEN as u64);
    let mut old = hold(&a, &b, &id, &data);
    let started = Instant::now();
    let r = b.patch(&id, SENT as u64, &data[SENT..]);
    let took = started.elapsed();
    assert_eq!(r.status, 204, "{r:?}");
    assert!(took < TAKEOVER_WAIT, "took {took:?}");
    assert_old_was_stopped(&mut old, "after Redis restarted");
    assert_bytes_eq(&b.read_data(&id), &data, "taken over after Redis restarted");
}

/// Redis frozen (SIGSTOP: connections open, nothing answered, as a network partition
/// between the node and Redis looks) while node A holds an upload with a short lock
/// expiry: A's renewal hangs, yet A lets go before the lock could expire in Redis, so a
/// node that still reached Redis could never write the upload at the same time as A.
#[test]
fn a_node_cut_off_from_redis_lets_go_before_its_lock_could_expire() {
    let tmp = TempDir::new("nodes-cut-off");
    let Some(redis) = Redis::start(&tmp) else {
        return;
    };
    const EXPIRY: Duration = Duration::from_secs(2);
    let (a, b) = two_nodes(&tmp, &redis, &["--redis-lock-expiration", "2"]);
    let data = random_bytes(1650, LEN);
    let id = a.create(LEN as u64);
    let mut old = hold(&a, &b, &id, &data);
    // Renewals have run: the lock lives on them.
    std::thread::sleep(EXPIRY);
    assert_eq!(metric(&a, "tusring_redis_locks_lost_total"), 0);
    redis.freeze();
    let frozen = Instant::now();
    // The moment A gives the lock up and stops its request (counted as a lost lock).
    let lost = eventually(EXPIRY * 3, || {
        metric(&a, "tusring_redis_locks_lost_total") == 1
    });
    let let_go = frozen.elapsed();
    let r = old.read_next_within(Duration::from_secs(5));
    redis.thaw();
    assert!(lost, "A never gave its lock up");
    eprintln!("A let go {let_go:?} after Redis froze");
    // Renewed last no later than the freeze, the lock lives in Redis at least the expiry
    // after it: A must have stopped by then.
    assert!(
        let_go < EXPIRY,
        "A let go {let_go:?} after the freeze: its lock could have expired already"
    );
    // Its answer waits for the record (Redis frozen): 503, every byte it got kept.
    let r = r.expect("the held PATCH answers");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        std::fs::metadata(a.data_path(&id)).unwrap().len(),
        SENT as u64
    );
}

fn python() -> Option<PathBuf> {
    crate::interop::python()
}

#[test]
fn tuspy_uploads_with_a_random_node_per_request() {
    let Some(py) = python() else {
        crate::interop::missing("tuspy (Python package `tuspy`)");
        return;
    };
    let tmp = TempDir::new("nodes-tuspy");
    let Some(redis) = Redis::start(&tmp) else {
        return;
    };
    let (a, b) = two_nodes(&tmp, &redis, &[]);
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut files = Vec::new();
    for i in 0..200u64 {
        // 1 byte to 300 KiB: one to five 64 KiB chunks.
        let size = 1 + (i * 7919 % (300 * 1024)) as usize;
        let data = random_bytes(1700 + i, size);
        let name = format!("f{i:03}.bin");
        std::fs::write(src.join(&name), &data).unwrap();
        files.push((name, data));
    }
    let nodes = format!("{},{}", a.base_url(), b.base_url());
    let mut cmd = Command::new(py);
    cmd.arg(crate::interop::interop_dir().join("tuspy_nodes.py"))
        .arg(&nodes)
        .arg(&src)
        .arg((64 * 1024).to_string())
        .arg("8")
        .arg("42");
    let out = crate::interop::run_client(cmd, "tuspy over two nodes");
    let mut urls = std::collections::HashMap::new();
    for line in out.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["node", node, counts @ ..] => {
                eprintln!("{node}: {}", counts.join(" "));
                for c in counts {
                    let n: u64 = c.split('=').nth(1).unwrap().parse().unwrap();
                    assert!(n >= 20, "{node} got few requests: {line}");
                }
            }
            [name, url] => {
                urls.insert(name.to_string(), url.to_string());
            }
            _ => {}
        }
    }
    assert_eq!(urls.len(), files.len(), "{out}");
    for (n, (name, data)) in files.iter().enumerate() {
        let id = urls[name].trim_end_matches('/').rsplit('/').next().unwrap();
        let node = if n % 2 == 0 { &a } else { &b };
        let g = node.send(&Req::new("GET", &format!("/files/{id}")));
        assert_eq!(g.status, 200, "{name}: {g:?}");
        assert_bytes_eq(&g.body, data, name);
        assert_eq!(record(&redis, id)["offset"], data.len() as u64, "{name}");
    }
}
