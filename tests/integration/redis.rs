//! `--info-storage redis-info-storage` on one node, against a real `redis-server`
//! (started per test on a free port): records in rustus's key and format both ways and
//! `--redis-info-expiration` as rustus applies it; a record pointing outside the data
//! directory refused; Redis stopped, frozen, or down at startup (503 with `Retry-After`,
//! no byte lost, recovery on its own); the expiration sweep over `SCAN`.
//!
//! Two nodes sharing Redis and a data directory are in `nodes.rs`.

use crate::harness::*;
use crate::redisd::Redis;
use std::time::{Duration, Instant};

/// A node with its records in `redis`, plus `extra` flags.
pub fn redis_node(tmp: &TempDir, redis: &Redis, extra: &[&str]) -> Daemon {
    let flags = redis.flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Daemon::start(tmp, &args)
}

/// The record of `id` in Redis, parsed.
pub fn record(redis: &Redis, id: &str) -> serde_json::Value {
    let raw = redis
        .get(id)
        .unwrap_or_else(|| panic!("no Redis record for {id}"));
    serde_json::from_slice(&raw).expect("the record is JSON")
}

/// Waits (up to `within`) until `/ready` answers `want`; its last answer.
fn ready_becomes(d: &Daemon, want: u16, within: Duration) -> Response {
    let mut last = d.send(&Req::new("GET", "/ready"));
    eventually(within, || {
        last = d.send(&Req::new("GET", "/ready"));
        last.status == want
    });
    last
}

/// After a failed connect, a core's calls fail at once (503) for the reconnect pause
/// (250 ms, `storage::redis::conn::RECONNECT_PAUSE`), so once one core answers again
/// another may still answer 503 with `Retry-After` for that long, as a client retrying
/// would see. Waits it out, so that every core connects on its next call.
pub fn every_core_reconnects() {
    std::thread::sleep(Duration::from_millis(250 + 150));
}

/// A record exactly as rustus writes it (field order, compact JSON).
fn rustus_record(id: &str, offset: u64, length: u64, path: &str, created_at: i64) -> String {
    format!(
        "{{\"id\":\"{id}\",\"offset\":{offset},\"length\":{length},\"path\":\"{path}\",\
         \"created_at\":{created_at},\"deferred_size\":false,\"is_partial\":false,\
         \"is_final\":false,\"parts\":null,\"storage\":\"file_storage\",\
         \"metadata\":{{\"filename\":\"notes.txt\"}}}}"
    )
}

#[test]
fn records_are_rustus_records_both_ways() {
    let tmp = TempDir::new("redis-rustus");
    let Some(redis) = Redis::start(&tmp) else {
        return;
    };
    let d = redis_node(&tmp, &redis, &["--redis-info-expiration", "600"]);

    // Written by tusring, read as rustus would: the bare ID as key, rustus's JSON.
    let r = d.post(&[
        ("Upload-Length", "10"),
        ("Upload-Metadata", "filename bm90ZXMudHh0"),
    ]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    let r = d.patch(&id, 0, b"hello");
    assert_eq!(r.status, 204, "{r:?}");
    let path = d.data_dir().join(&id).display().to_string();
    let created = record(&redis, &id)["created_at"].as_i64().unwrap();
    let want = rustus_record(&id, 5, 10, &path, created);
    assert_eq!(
        String::from_utf8(redis.get(&id).unwrap()).unwrap(),
        want,
        "the value is exactly rustus's .info JSON"
    );
    let ttl = redis.ttl(&id);
    assert!((590..=600).contains(&ttl), "EX applied on write: TTL {ttl}");
    assert!(
        !d.info_path(&id).exists(),
        "no .info file with Redis records"
    );

    // Written by rustus, served by tusring, and written back in rustus's format.
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let path = d.data_dir().join(id);
    std::fs::write(&path, b"0123456").unwrap();
    let path = path.display().to_string();
    redis.set(
        id,
        rustus_record(id, 7, 12, &path, 1_795_801_207).as_bytes(),
    );
    assert_eq!(redis.ttl(id), -1);
    let h = d.head(id);
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(h.upload_offset(), 7);
    assert_eq!(h.header("Upload-Length"), Some("12"));
    assert_eq!(h.header("Upload-Metadata"), Some("filename bm90ZXMudHh0"));
    let r = d.patch(id, 7, b"789ab");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.upload_offset(), 12);
    let g = d.send(&Req::new("GET", &format!("/files/{id}")));
    assert_eq!(g.status, 200);
    assert_eq!(g.body, b"0123456789ab");
    assert_eq!(
        String::from_utf8(redis.get(id).unwrap()).unwrap(),
        rustus_record(id, 12, 12, &path, 1_795_801_207),
        "written back byte for byte, offset moved"
    );
    let ttl = redis.ttl(id);
    assert!(
        (590..=600).contains(&ttl),
        "the expiration restarts with every write, as rustus: TTL {ttl}"
    );

    // DELETE removes the key and the file.
    assert_eq!(d.delete(id).status, 204);
    assert_eq!(redis.get(id), None);
    assert!(!std::path::Path::new(&path).exists());
    assert_eq!(d.head(id).status, 404);
}

#[test]
fn a_record_pointing_outside_the_data_directory_is_refused() {
    let tmp = TempDir::new("redis-path");
    let Some(redis) = Redis::start(&tmp) else {
        return;
    };
    let d = redis_node(&tmp, &redis, &[]);
    let secret = tmp.join("secret.txt");
    std::fs::write(&secret, b"top secret").unwrap();
    let dotdot = format!("{}/../secret.txt", d.data_dir().display());
    for (n, path) in [secret.display().to_string(), dotdot].iter().enumerate() {
        let id = format!("0f8fad5b-d9cb-469f-a165-70867728950{n}");
        redis.set(
            &id,
            rustus_record(&id, 3, 20, path, 1_795_801_207).as_bytes(),
        );
        let h = d.head(&id);
        assert_eq!(h.status, 500, "{path}: {h:?}");
        let g = d.send(&Req::new("GET", &format!("/files/{id}")));
        assert_eq!(g.status, 500, "{path}: {g:?}");
        assert!(!String::from_utf8_lossy(&g.body).contains("top secret"));
        let p = d.patch(&id, 3, b"XXXX");
        assert_eq!(p.status, 500, "{path}: {p:?}");
        assert_eq!(d.delete(&id).status, 500, "{path}");
        assert_eq!(std::fs::read(&secret).unwrap(), b"top secret", "{path}");
        assert!(d.stderr_text().contains("outside the data directory"));
    }
}

#[test]
fn redis_stopped_or_frozen_gives_503_and_loses_nothing() {
    let tmp = TempDir::new("redis-down");
    let Some(mut redis) = Redis::start(&tmp) else {
        return;
    };
    let d = redis_node(&tmp, &redis, &[]);
    const LEN: usize = 1 << 20;
    let data = random_bytes(1501, LEN);
    let id = d.create(LEN as u64);
    assert_eq!(d.patch(&id, 0, &data[..300_000]).status, 204);
    assert_eq!(ready_becomes(&d, 200, Duration::from_secs(5)).status, 200);

    // A PATCH in flight when Redis stops: its bytes reach the file, its record cannot
    // be saved, and it says so (503); nothing it stored is lost.
    let mut c = d.conn();
    c.send_head(&patch_req(&id, 300_000, &data[300_000..600_000]));
    c.send_raw(&data[300_000..400_000]).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::metadata(d.data_path(&id))
            .map(|m| m.len())
            .unwrap_or(0)
            >= 380_000
    }));
    redis.stop();
    c.send_raw(&data[400_000..600_000]).unwrap();
    let r = c.read_response().expect("an answer");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("Retry-After"), Some("1"), "{r:?}");
    assert_eq!(std::fs::metadata(d.data_path(&id)).unwrap().len(), 600_000);

    // While it is away: 503 with Retry-After for whatever needs a record; /ready says
    // why; the errors are counted.
    let h = d.head(&id);
    assert_eq!(h.status, 503, "{h:?}");
    assert_eq!(h.header("Retry-After"), Some("1"));
    let p = d.post(&[("Upload-Length", "5")]);
    assert_eq!(p.status, 503, "{p:?}");
    let p = d.patch(&id, 600_000, &data[600_000..700_000]);
    assert_eq!(p.status, 503, "{p:?}");
    let ready = d.send(&Req::new("GET", "/ready"));
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(
        String::from_utf8_lossy(&ready.body).contains("Redis"),
        "{ready:?}"
    );
    let m = String::from_utf8_lossy(&d.send(&Req::new("GET", "/metrics")).body).to_string();
    let errors: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("tusring_redis_errors_total "))
        .and_then(|v| v.parse().ok())
        .expect("tusring_redis_errors_total");
    assert!(errors >= 3, "Redis errors counted: {errors}");
    assert!(m.contains("tusring_redis_call_seconds_count"));
    assert_eq!(std::fs::metadata(d.data_path(&id)).unwrap().len(), 600_000);

    // Back: the node reconnects by itself; the offset is every byte stored.
    let back = Instant::now();
    redis.spawn();
    assert!(
        eventually(Duration::from_secs(5), || d.head(&id).status == 200),
        "served again after Redis came back"
    );
    eprintln!("served again {:?} after Redis came back", back.elapsed());
    every_core_reconnects();
    assert_eq!(d.offset(&id), 600_000, "nothing stored was lost");
    assert_eq!(ready_becomes(&d, 200, Duration::from_secs(5)).status, 200);

    // Frozen (a Redis that stops answering on open connections): 503 in bounded time,
    // then served again once it answers.
    redis.freeze();
    let started = Instant::now();
    let h = d.head(&id);
    let took = started.elapsed();
    redis.thaw();
    assert_eq!(h.status, 503, "{h:?}");
    assert!(
        took < Duration::from_secs(4),
        "a frozen Redis is a 503 within the call timeout: {took:?}"
    );
    assert!(eventually(Duration::from_secs(5), || d.head(&id).status == 200));
    assert_eq!(d.patch(&id, 600_000, &data[600_000..]).status, 204);
    assert_bytes_eq(&d.read_data(&id), &data, "after Redis stopped and froze");
}

#[test]
fn starts_while_redis_is_down_and_serves_when_it_comes() {
    let tmp = TempDir::new("redis-late");
    let Some(mut redis) = Redis::start(&tmp) else {
        return;
    };
    redis.stop();
    let d = redis_node(&tmp, &redis, &[]);
    assert!(
        d.stderr_text().contains("cannot be reached"),
        "{}",
        d.stderr_text()
    );
    let ready = d.send(&Req::new("GET", "/ready"));
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.body).contains("Redis"));
    let p = d.post(&[("Upload-Length", "5")]);
    assert_eq!(p.status, 503, "{p:?}");
    assert_eq!(p.header("Retry-After"), Some("1"));

    redis.spawn();
    let r = ready_becomes(&d, 200, Duration::from_secs(10));
    assert_eq!(r.status, 200, "{r:?}");
    every_core_reconnects();
    let id = d.create(5);
    assert_eq!(d.patch(&id, 0, b"abcde").status, 204);
    assert!(record(&redis, &id)["offset"] == 5);
}

#[test]
fn the_expiration_sweep_scans_redis() {
    let tmp = TempDir::new("redis-sweep");
    let Some(redis) = Redis::start(&tmp) else {
        return;
    };
    // Keys that are not records: the sweep's SCAN must pass over them.
    let mut c = redis.client();
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd("SET").arg(format!("other:{i}")).arg(i).ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let d = redis_node(
        &tmp,
        &redis,
        &[
            "--tus-extensions",
            "creation,termination,expiration",
            "--expiration-time",
            "2",
            "--expiration-sweep-interval",
            "0.3",
        ],
    );
    // Expiry is in whole seconds from the last write (the creation here): a PATCH after
    // it could already find the upload gone with a lifetime of 1 s.
    let ids: Vec<String> = (0..30).map(|_| d.create(10)).collect();
    let done = d.create(3);
    assert_eq!(d.patch(&done, 0, b"xyz").status, 204);
    assert!(
        eventually(Duration::from_secs(10), || ids
            .iter()
            .all(|id| redis.get(id).is_none())),
        "every expired record removed"
    );
    for id in &ids {
        assert!(!d.data_path(id).exists(), "data of {id} removed");
        assert_eq!(d.head(id).status, 404);
    }
    assert!(redis.get(&done).is_some(), "a finished upload stays");
    assert!(redis.get("other:2999").is_some(), "other keys untouched");
}
