//! `mix`: many connections, each running a random mix of tus operations for a while.
//!
//! Every connection (one thread, one keep-alive `Conn`) repeats, until the duration is
//! over, one of these scenarios on a fresh upload of a random size in `1..=--size`:
//!
//! | share | scenario | requests and the answers they must get |
//! |---|---|---|
//! | 35 % | keep | POST 201; 1–3 PATCHes 204, a HEAD 200 after each with the offset reached |
//! | 15 % | keep, creation-with-upload | POST with the whole body 201 (`Upload-Offset` = size) |
//! | 20 % | finish then delete | as keep, then DELETE 204, then HEAD 404 or 410 |
//! | 15 % | abandon then delete | POST; a PATCH of part of the body; HEAD; DELETE 204 |
//! | 15 % | conflict | POST; PATCH at a wrong offset 409; HEAD 200 offset 0; DELETE 204 |
//!
//! The 404/410 and 409 answers are the expected 4xx: counted by status, not errors. Any
//! other answer, an I/O error or a wrong offset is an error (exit status 1). The kept
//! uploads (the first two scenarios) go to `--ids-file`, for `tusload verify
//! --data-dir` to check byte for byte.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::data::{self, IdLine, Pattern, Xorshift, BUF_LEN};
use crate::http::{self, Body, Conn, HttpError, Resp, Url};
use crate::{fmt_bytes, percentile, Opts, ERRORS};

/// Kinds of request, for the counts and latencies.
const KINDS: [&str; 4] = ["POST", "PATCH", "HEAD", "DELETE"];

/// What one connection did.
#[derive(Default)]
struct MixStats {
    /// Requests by kind (index into `KINDS`).
    requests: [u64; 4],
    /// Latency of every request, in microseconds.
    lat_us: Vec<u32>,
    /// Expected 4xx answers, by status.
    expected: Vec<(u16, u64)>,
    kept: Vec<IdLine>,
    deleted: u64,
    abandoned: u64,
    conflicts: u64,
    reconnects: u64,
}

impl MixStats {
    fn expect(&mut self, status: u16) {
        match self.expected.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.expected.push((status, 1)),
        }
    }
}

struct Worker<'a> {
    conn: Conn,
    base: &'a str,
    authority: &'a Url,
    pat: &'a Pattern,
    stats: MixStats,
    path: String,
}

/// A failed step: the message for the error log.
type Step<T> = Result<T, String>;

impl Worker<'_> {
    fn timed(&mut self, kind: usize, body: Body<'_>) -> Step<Resp> {
        let t0 = Instant::now();
        let head = kind == 2;
        let r = self.conn.send(body, head);
        self.stats.requests[kind] += 1;
        self.stats
            .lat_us
            .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        r.map_err(|e: HttpError| format!("{} {}: {e}", KINDS[kind], self.path))
    }

    /// POST; with `body`, the whole upload goes with it.
    fn create(&mut self, size: u64, body: Option<u64>) -> Step<()> {
        self.conn.begin("POST", self.base);
        self.conn.header("Upload-Length", size);
        let b = match body {
            Some(pos) => {
                self.conn
                    .header("Content-Type", "application/offset+octet-stream");
                self.conn.header("Content-Length", size);
                Body::Data {
                    pat: self.pat,
                    pos,
                    len: size,
                }
            }
            None => {
                self.conn.header("Content-Length", 0);
                Body::Empty
            }
        };
        self.path.clear();
        let r = self.timed(0, b)?;
        if r.status != 201 || self.conn.location.is_empty() {
            return Err(format!(
                "POST: status {} (want 201 with a Location)",
                r.status
            ));
        }
        let want = body.map(|_| size).unwrap_or(0);
        if r.upload_offset.unwrap_or(0) != want {
            return Err(format!(
                "POST: Upload-Offset {:?}, want {want}",
                r.upload_offset
            ));
        }
        let loc = std::mem::take(&mut self.conn.location);
        http::resolve_location_into(self.base, &loc, &mut self.path);
        Ok(())
    }

    /// PATCH `len` bytes of content (pattern position `pos`) at `offset`; returns the
    /// status and the `Upload-Offset` answered.
    fn patch(&mut self, offset: u64, pos: u64, len: u64) -> Step<(u16, Option<u64>)> {
        let path = std::mem::take(&mut self.path);
        self.conn.begin("PATCH", &path);
        self.path = path;
        self.conn.header("Upload-Offset", offset);
        self.conn
            .header("Content-Type", "application/offset+octet-stream");
        self.conn.header("Content-Length", len);
        let r = self.timed(
            1,
            Body::Data {
                pat: self.pat,
                pos,
                len,
            },
        )?;
        Ok((r.status, r.upload_offset))
    }

    fn patch_ok(&mut self, offset: u64, pos: u64, len: u64) -> Step<()> {
        match self.patch(offset, pos, len)? {
            (204, Some(o)) if o == offset + len => Ok(()),
            (s, o) => Err(format!(
                "PATCH {} at {offset} (+{len}): status {s}, Upload-Offset {o:?}; want 204, {}",
                self.path,
                offset + len
            )),
        }
    }

    fn head(&mut self) -> Step<Resp> {
        let path = std::mem::take(&mut self.path);
        self.conn.begin("HEAD", &path);
        self.path = path;
        self.timed(2, Body::Empty)
    }

    fn head_at(&mut self, offset: u64, size: u64) -> Step<()> {
        let r = self.head()?;
        if r.status != 200 || r.upload_offset != Some(offset) || r.upload_length != Some(size) {
            return Err(format!(
                "HEAD {}: status {}, Upload-Offset {:?}, Upload-Length {:?}; want 200, {offset}, {size}",
                self.path, r.status, r.upload_offset, r.upload_length
            ));
        }
        Ok(())
    }

    fn delete(&mut self) -> Step<()> {
        let path = std::mem::take(&mut self.path);
        self.conn.begin("DELETE", &path);
        self.path = path;
        self.conn.header("Content-Length", 0);
        let r = self.timed(3, Body::Empty)?;
        if r.status != 204 {
            return Err(format!(
                "DELETE {}: status {} (want 204)",
                self.path, r.status
            ));
        }
        Ok(())
    }

    /// POST then the body in `pieces` PATCHes, a HEAD after each.
    fn upload(&mut self, size: u64, pos: u64, pieces: u64) -> Step<()> {
        self.create(size, None)?;
        let mut off = 0;
        for k in 0..pieces {
            let end = if k + 1 == pieces {
                size
            } else {
                size * (k + 1) / pieces
            };
            if end > off {
                self.patch_ok(off, pos + off, end - off)?;
                off = end;
                self.head_at(off, size)?;
            }
        }
        Ok(())
    }

    fn scenario(&mut self, rng: &mut Xorshift, max: u64, n: u64, seed: u64, id: u64) -> Step<()> {
        let size = 1 + rng.next_u64() % max;
        let pos = data::seed_offset(seed, 0x313 ^ (id << 20), n);
        let pick = rng.next_u64() % 100;
        let pieces = 1 + rng.next_u64() % 3;
        match pick {
            0..50 => {
                if pick < 35 {
                    self.upload(size, pos, pieces)?;
                } else {
                    self.create(size, Some(pos))?;
                }
                self.stats.kept.push(IdLine {
                    url: self.authority.absolute(&self.path),
                    length: size,
                    seed_offset: pos,
                });
            }
            50..70 => {
                self.upload(size, pos, pieces)?;
                self.delete()?;
                let r = self.head()?;
                if r.status != 404 && r.status != 410 {
                    return Err(format!(
                        "HEAD {} after DELETE: status {} (want 404 or 410)",
                        self.path, r.status
                    ));
                }
                self.stats.expect(r.status);
                self.stats.deleted += 1;
            }
            70..85 => {
                self.create(size, None)?;
                let part = size / 2;
                if part > 0 {
                    self.patch_ok(0, pos, part)?;
                }
                self.head_at(part, size)?;
                self.delete()?;
                self.stats.abandoned += 1;
            }
            _ => {
                self.create(size, None)?;
                let wrong = 1 + rng.next_u64() % size;
                match self.patch(wrong, pos, 1)? {
                    (409, _) => self.stats.expect(409),
                    (s, _) => {
                        return Err(format!(
                            "PATCH {} at wrong offset {wrong}: status {s} (want 409)",
                            self.path
                        ))
                    }
                }
                self.head_at(0, size)?;
                self.delete()?;
                self.stats.conflicts += 1;
            }
        }
        Ok(())
    }
}

pub fn mix(o: &Opts) -> Result<(), String> {
    let url = Url::parse(o.url.as_deref().unwrap_or_default())?;
    let addr = url.resolve()?;
    let max = o.size.unwrap_or(64 << 10).max(1);
    let pat = Pattern::new(o.seed, BUF_LEN, 1 << 20);
    println!(
        "mix: {} conns, uploads of 1 B..{}, {:.1} s",
        o.conns,
        fmt_bytes(max),
        o.duration.as_secs_f64()
    );
    let started = AtomicU64::new(0);
    let t0 = Instant::now();
    let end = t0 + o.duration;
    let stats: Vec<MixStats> = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(o.conns);
        for id in 0..o.conns as u64 {
            let (url, pat, started) = (&url, &pat, &started);
            let spawned = std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn_scoped(s, move || {
                    let mut w = Worker {
                        conn: Conn::new(addr, &url.authority, o.timeout, 4096),
                        base: &url.path,
                        authority: url,
                        pat,
                        stats: MixStats::default(),
                        path: String::new(),
                    };
                    let mut rng = Xorshift::new(o.seed ^ (id << 32) ^ 0x006d_6978);
                    let mut n = 0;
                    while Instant::now() < end {
                        started.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = w.scenario(&mut rng, max, n, o.seed, id) {
                            ERRORS.add(|| format!("conn {id}: {e}"));
                            // Start the next scenario on a fresh connection.
                            w.conn.close();
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        n += 1;
                    }
                    w.stats.reconnects = w.conn.reconnects();
                    w.stats
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    ERRORS.add(|| format!("spawning thread {id}: {e}"));
                    break;
                }
            }
        }
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let mut requests = [0u64; 4];
    let mut lat = Vec::new();
    let mut expected: Vec<(u16, u64)> = Vec::new();
    let mut kept = Vec::new();
    let (mut deleted, mut abandoned, mut conflicts, mut reconnects) = (0, 0, 0, 0);
    for st in stats {
        for (a, b) in requests.iter_mut().zip(st.requests) {
            *a += b;
        }
        lat.extend_from_slice(&st.lat_us);
        for (s, n) in st.expected {
            match expected.iter_mut().find(|(e, _)| *e == s) {
                Some((_, m)) => *m += n,
                None => expected.push((s, n)),
            }
        }
        kept.extend(st.kept);
        deleted += st.deleted;
        abandoned += st.abandoned;
        conflicts += st.conflicts;
        reconnects += st.reconnects;
    }
    lat.sort_unstable();
    expected.sort_unstable();
    let total: u64 = requests.iter().sum();
    println!(
        "  requests      {total} in {secs:.1} s ({:.0}/s): {}",
        total as f64 / secs.max(1e-9),
        KINDS
            .iter()
            .zip(requests)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  latency us    p50 {}  p90 {}  p99 {}  max {}",
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(0)
    );
    println!(
        "  scenarios     {} started; {} kept, {deleted} finished+deleted, {abandoned} abandoned+deleted, {conflicts} conflicts",
        started.load(Ordering::Relaxed),
        kept.len()
    );
    let exp: Vec<String> = expected.iter().map(|(s, n)| format!("{s} x{n}")).collect();
    println!(
        "  expected 4xx  {}",
        if exp.is_empty() {
            "none".to_owned()
        } else {
            exp.join(", ")
        }
    );
    println!("  errors        {}", ERRORS.count());
    println!("  reconnects    {reconnects}");
    if o.csv {
        println!(
            "mix,{},{max},{total},{:.1},{},{},{},{}",
            o.conns,
            total as f64 / secs.max(1e-9),
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            kept.len(),
            ERRORS.count()
        );
    }
    if let Some(f) = &o.ids_file {
        data::write_ids(f, o.seed, &kept).map_err(|e| format!("{}: {e}", f.display()))?;
        println!("  ids           {} written to {}", kept.len(), f.display());
    }
    Ok(())
}
