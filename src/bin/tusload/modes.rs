//! The four modes: big, small, hold, verify.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::data::{self, IdLine, Pattern, BUF_LEN};
use crate::http::{self, Body, Conn, HttpError, Resp, Url};
use crate::{fmt_bytes, percentile, Opts, ERRORS};

const RECV_BUF: usize = 16 * 1024;

/// Why one tus operation failed.
enum Fail {
    Http(&'static str, HttpError),
    Status(&'static str, u16),
    Proto(String),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Http(_, e @ HttpError::Connect(_)) => write!(f, "{e}"),
            Fail::Http(what, e) => write!(f, "{what}: {e}"),
            Fail::Status(what, s) => write!(f, "{what}: unexpected status {s}"),
            Fail::Proto(m) => f.write_str(m),
        }
    }
}

struct Target {
    url: Url,
    addr: SocketAddr,
}

impl Target {
    fn new(url: &str) -> Result<Target, String> {
        let url = Url::parse(url)?;
        let addr = url.resolve()?;
        Ok(Target { url, addr })
    }

    fn conn(&self, o: &Opts, recv: usize) -> Conn {
        Conn::new(self.addr, &self.url.authority, o.timeout, recv)
    }
}

/// POST `Upload-Length: length`, with the first `body.2` bytes of content when `body`
/// is given (creation-with-upload). The new upload's path goes to `path`.
fn create(
    conn: &mut Conn,
    base: &str,
    length: u64,
    body: Option<(&Pattern, u64)>,
    path: &mut String,
) -> Result<Resp, Fail> {
    conn.begin("POST", base);
    conn.header("Upload-Length", length);
    let body = match body {
        Some((pat, pos)) if length > 0 => {
            conn.header("Content-Type", "application/offset+octet-stream");
            conn.header("Content-Length", length);
            Body::Data {
                pat,
                pos,
                len: length,
            }
        }
        _ => {
            conn.header("Content-Length", 0);
            Body::Empty
        }
    };
    let resp = conn.send(body, false).map_err(|e| Fail::Http("POST", e))?;
    if resp.status != 201 {
        return Err(Fail::Status("POST", resp.status));
    }
    if conn.location.is_empty() {
        return Err(Fail::Proto("POST: 201 without a Location".into()));
    }
    http::resolve_location_into(base, &conn.location, path);
    Ok(resp)
}

/// PATCH at `offset` with a body of `len` bytes; expects 204 and Upload-Offset
/// `offset + len`.
fn patch(conn: &mut Conn, path: &str, offset: u64, len: u64, body: Body<'_>) -> Result<(), Fail> {
    conn.begin("PATCH", path);
    conn.header("Upload-Offset", offset);
    conn.header("Content-Type", "application/offset+octet-stream");
    conn.header("Content-Length", len);
    let resp = conn.send(body, false).map_err(|e| Fail::Http("PATCH", e))?;
    if resp.status != 204 {
        return Err(Fail::Status("PATCH", resp.status));
    }
    if resp.upload_offset != Some(offset + len) {
        return Err(Fail::Proto(format!(
            "PATCH {path}: Upload-Offset {:?}, expected {}",
            resp.upload_offset,
            offset + len
        )));
    }
    Ok(())
}

/// HEAD; checks Upload-Offset (and Upload-Length when sent) against `length`.
fn head_check(conn: &mut Conn, path: &str, length: u64) -> Result<(), Fail> {
    conn.begin("HEAD", path);
    let resp = conn
        .send(Body::Empty, true)
        .map_err(|e| Fail::Http("HEAD", e))?;
    if resp.status != 200 && resp.status != 204 {
        return Err(Fail::Proto(format!("HEAD {path}: status {}", resp.status)));
    }
    if resp.upload_offset != Some(length) {
        return Err(Fail::Proto(format!(
            "HEAD {path}: Upload-Offset {:?}, expected {length}",
            resp.upload_offset
        )));
    }
    if resp.upload_length.is_some_and(|l| l != length) {
        return Err(Fail::Proto(format!(
            "HEAD {path}: Upload-Length {:?}, expected {length}",
            resp.upload_length
        )));
    }
    Ok(())
}

fn write_ids(o: &Opts, lines: &[IdLine]) -> Result<(), String> {
    if let Some(f) = &o.ids_file {
        data::write_ids(f, o.seed, lines).map_err(|e| format!("{}: {e}", f.display()))?;
        println!("  ids           {} written to {}", lines.len(), f.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------- big

pub fn big(o: &Opts) -> Result<(), String> {
    let t = Target::new(o.url.as_deref().unwrap_or_default())?;
    let size = o.size.unwrap_or(0);
    let pat = Pattern::new(o.seed, BUF_LEN, o.write_size);
    let mut conn = t.conn(o, RECV_BUF);
    let mut path = String::new();
    let chunk = if o.chunk == 0 { size } else { o.chunk };
    println!(
        "big: {} x {} to {} (PATCH {}, writes of {})",
        o.repeat,
        fmt_bytes(size),
        t.url.absolute(&t.url.path),
        if o.chunk == 0 || o.chunk >= size {
            "whole".to_owned()
        } else {
            format!("chunks of {}", fmt_bytes(o.chunk))
        },
        fmt_bytes(o.write_size as u64)
    );
    println!("  #   upload id                              secs       MB/s");
    let mut ids = Vec::new();
    let mut rates = Vec::new();
    for r in 0..o.repeat {
        let off = data::seed_offset(o.seed, 0xb16, r);
        let run = (|| -> Result<f64, Fail> {
            conn.connect().map_err(|e| Fail::Http("connect", e))?;
            create(&mut conn, &t.url.path, size, None, &mut path)?;
            conn.connect().map_err(|e| Fail::Http("connect", e))?;
            let t0 = Instant::now();
            let mut pos = 0;
            while pos < size {
                let n = chunk.min(size - pos);
                let body = Body::Data {
                    pat: &pat,
                    pos: off + pos,
                    len: n,
                };
                patch(&mut conn, &path, pos, n, body)?;
                pos += n;
            }
            Ok(t0.elapsed().as_secs_f64())
        })();
        match run {
            Ok(secs) => {
                let mbps = size as f64 / secs / 1e6;
                rates.push(mbps);
                println!(
                    "  {:<3} {:<38} {:>7.3} {:>10.1}",
                    r + 1,
                    http::last_segment(&path),
                    secs,
                    mbps
                );
                if o.csv {
                    println!("big,{size},{secs:.6},{mbps:.1}");
                }
                ids.push(IdLine {
                    url: t.url.absolute(&path),
                    length: size,
                    seed_offset: off,
                });
            }
            Err(f) => {
                println!("  {:<3} FAILED: {f}", r + 1);
                ERRORS.add(|| format!("upload {}: {f}", r + 1));
            }
        }
    }
    if !rates.is_empty() {
        let best = rates.iter().cloned().fold(0.0, f64::max);
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        println!(
            "  best {best:.1} MB/s, mean {mean:.1} MB/s over {} upload(s)",
            rates.len()
        );
    }
    println!("  reconnects    {}", conn.reconnects());
    write_ids(o, &ids)
}

// -------------------------------------------------------------------------------- small

struct SmallStats {
    lat_us: Vec<u32>,
    /// Count per status code (index = status, 0..1000) of unexpected statuses.
    statuses: Vec<u64>,
    io_errors: u64,
    proto_errors: u64,
    reconnects: u64,
    retries: u64,
    finished: Instant,
    ids: Vec<IdLine>,
}

struct SmallRun<'a> {
    o: &'a Opts,
    t: &'a Target,
    pat: &'a Pattern,
    size: u64,
    warm_end: Instant,
    end: Instant,
    fallback: &'a AtomicBool,
}

fn small_one(
    r: &SmallRun<'_>,
    conn: &mut Conn,
    path: &mut String,
    fallback: &mut bool,
    off: u64,
) -> Result<(), Fail> {
    let base = &r.t.url.path;
    let body = Body::Data {
        pat: r.pat,
        pos: off,
        len: r.size,
    };
    if !*fallback {
        let resp = create(conn, base, r.size, Some((r.pat, off)), path)?;
        match resp.upload_offset {
            Some(n) if n == r.size => return Ok(()),
            None if r.size == 0 => return Ok(()),
            None | Some(0) => {
                *fallback = true;
                r.fallback.store(true, Ordering::Relaxed);
            }
            Some(n) => {
                return Err(Fail::Proto(format!(
                    "POST with a {}-byte body: Upload-Offset {n}",
                    r.size
                )))
            }
        }
    } else {
        create(conn, base, r.size, None, path)?;
    }
    if r.size > 0 {
        patch(conn, path, 0, r.size, body)?;
    }
    Ok(())
}

fn small_worker(r: &SmallRun<'_>, id: u64) -> SmallStats {
    let per_sec = 100_000;
    let cap = ((r.o.duration.as_secs() + 1) * per_sec).min(16 << 20) as usize;
    let mut st = SmallStats {
        lat_us: Vec::with_capacity(cap),
        statuses: vec![0; 1000],
        io_errors: 0,
        proto_errors: 0,
        reconnects: 0,
        retries: 0,
        finished: Instant::now(),
        ids: Vec::new(),
    };
    let mut conn = r.t.conn(r.o, RECV_BUF);
    let mut path = String::with_capacity(256);
    let mut fallback = false;
    let mut n = 0;
    let mut failing = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= r.end {
            break;
        }
        let off = data::seed_offset(r.o.seed, 1000 + id, n);
        n += 1;
        match small_one(r, &mut conn, &mut path, &mut fallback, off) {
            Ok(()) => {
                failing = 0;
                if t0 >= r.warm_end {
                    let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    st.lat_us.push(us);
                }
                if r.o.keep_ids {
                    st.ids.push(IdLine {
                        url: r.t.url.absolute(&path),
                        length: r.size,
                        seed_offset: off,
                    });
                }
            }
            Err(f) => {
                failing += 1;
                match &f {
                    Fail::Status(_, s) => st.statuses[*s as usize % 1000] += 1,
                    Fail::Http(_, HttpError::Proto(_)) | Fail::Proto(_) => st.proto_errors += 1,
                    Fail::Http(..) => st.io_errors += 1,
                }
                ERRORS.add(|| format!("conn {id}: {f}"));
                if failing >= 100 {
                    ERRORS.add(|| format!("conn {id}: 100 failures in a row, stopping it"));
                    break;
                }
                if matches!(f, Fail::Http(_, HttpError::Connect(_))) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    st.finished = Instant::now();
    st.reconnects = conn.reconnects();
    st.retries = conn.retries;
    st
}

pub fn small(o: &Opts) -> Result<(), String> {
    let t = Target::new(o.url.as_deref().unwrap_or_default())?;
    let size = o.size.unwrap_or(0);
    let pat = Pattern::new(o.seed, BUF_LEN, 1 << 20);
    let fallback = AtomicBool::new(false);
    let start = Instant::now();
    let warm_end = start + o.warmup;
    let run = SmallRun {
        o,
        t: &t,
        pat: &pat,
        size,
        warm_end,
        end: warm_end + o.duration,
        fallback: &fallback,
    };
    let stats: Vec<SmallStats> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.conns as u64)
            .map(|id| {
                let run = &run;
                s.spawn(move || small_worker(run, id))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut lat: Vec<u32> = Vec::with_capacity(stats.iter().map(|s| s.lat_us.len()).sum());
    let mut statuses = vec![0u64; 1000];
    let (mut io, mut proto, mut reconnects, mut retries) = (0, 0, 0, 0);
    let mut finished = warm_end;
    let mut ids = Vec::new();
    for s in stats {
        lat.extend_from_slice(&s.lat_us);
        for (a, b) in statuses.iter_mut().zip(&s.statuses) {
            *a += b;
        }
        io += s.io_errors;
        proto += s.proto_errors;
        reconnects += s.reconnects;
        retries += s.retries;
        finished = finished.max(s.finished);
        ids.extend(s.ids);
    }
    lat.sort_unstable();
    let secs = finished.duration_since(warm_end).as_secs_f64().max(1e-9);
    let rate = lat.len() as f64 / secs;
    let by_status: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(s, n)| format!("{s} x{n}"))
        .collect();
    let errors = statuses.iter().sum::<u64>() + io + proto;
    let how = if fallback.load(Ordering::Relaxed) {
        "POST + PATCH (server answered 201 without Upload-Offset: no creation-with-upload)"
    } else {
        "creation-with-upload"
    };
    println!(
        "small: {} conns x {} uploads, {:.1} s measured (+{:.1} s warmup), {how}",
        o.conns,
        fmt_bytes(size),
        o.duration.as_secs_f64(),
        o.warmup.as_secs_f64()
    );
    println!("  uploads       {} ({rate:.1}/s)", lat.len());
    println!(
        "  latency us    p50 {}  p90 {}  p99 {}  max {}",
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(0)
    );
    let mut detail = by_status;
    if io > 0 {
        detail.push(format!("i/o x{io}"));
    }
    if proto > 0 {
        detail.push(format!("protocol x{proto}"));
    }
    if detail.is_empty() {
        println!("  errors        0");
    } else {
        println!("  errors        {errors} ({})", detail.join(", "));
    }
    println!("  reconnects    {reconnects} (stale-connection retries {retries})");
    if o.csv {
        println!(
            "small,{},{size},{rate:.1},{},{},{errors}",
            o.conns,
            percentile(&lat, 50.0),
            percentile(&lat, 99.0)
        );
    }
    write_ids(o, &ids)
}

// --------------------------------------------------------------------------------- hold

/// VmRSS of a process, in bytes.
fn read_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*g {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }
}

struct HoldResult {
    path: Option<String>,
    seed_offset: u64,
    patched: bool,
    reconnects: u64,
}

pub fn hold(o: &Opts) -> Result<(), String> {
    let t = Target::new(o.url.as_deref().unwrap_or_default())?;
    let size = o.size.unwrap_or(0);
    let m = o.uploads;
    let pat = Pattern::new(o.seed, BUF_LEN, 1 << 20);
    let pieces = size.div_ceil(o.piece).max(1);
    println!(
        "hold: {m} uploads x {}, {} every {:?} (~{:.1} s each)",
        fmt_bytes(size),
        fmt_bytes(o.piece),
        o.interval,
        o.interval.as_secs_f64() * (pieces - 1) as f64
    );
    let rss_before = o.server_pid.and_then(read_rss);
    if o.server_pid.is_some() && rss_before.is_none() {
        return Err(format!(
            "cannot read VmRSS from /proc/{}/status",
            o.server_pid.unwrap_or(0)
        ));
    }
    let gate = Gate {
        open: Mutex::new(false),
        cv: Condvar::new(),
    };
    let ready = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let t_start = Instant::now();
    let (results, created_secs, patch_secs, rss_peak) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = rss_before.unwrap_or(0);
            while let Some(pid) = o.server_pid {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                peak = peak.max(read_rss(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        let mut handles = Vec::with_capacity(m);
        for i in 0..m {
            let (t, pat, gate, ready) = (&t, &pat, &gate, &ready);
            let spawned = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn_scoped(s, move || {
                    let mut conn = t.conn(o, 4096);
                    let mut path = String::new();
                    let off = data::seed_offset(o.seed, 0x401d, i as u64);
                    let created = create(&mut conn, &t.url.path, size, None, &mut path);
                    ready.fetch_add(1, Ordering::SeqCst);
                    gate.wait();
                    let mut res = HoldResult {
                        path: None,
                        seed_offset: off,
                        patched: false,
                        reconnects: 0,
                    };
                    if let Err(f) = created {
                        ERRORS.add(|| format!("upload {i}: {f}"));
                        return res;
                    }
                    std::thread::sleep(o.interval * i as u32 / m as u32);
                    let body = Body::Trickle {
                        pat,
                        pos: off,
                        len: size,
                        piece: o.piece,
                        interval: o.interval,
                    };
                    match patch(&mut conn, &path, 0, size, body) {
                        Ok(()) => res.patched = true,
                        Err(f) => ERRORS.add(|| format!("upload {i} {path}: {f}")),
                    }
                    res.reconnects = conn.reconnects();
                    res.path = Some(path);
                    res
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    ERRORS.add(|| format!("spawning thread {i}: {e}"));
                    break;
                }
            }
        }
        while ready.load(Ordering::SeqCst) < handles.len() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let created_secs = t_start.elapsed().as_secs_f64();
        let t_patch = Instant::now();
        gate.open();
        let results: Vec<HoldResult> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
        let patch_secs = t_patch.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        let peak = sampler.join().unwrap_or(0);
        (results, created_secs, patch_secs, peak)
    });
    let created = results.iter().filter(|r| r.path.is_some()).count();
    let patched = results.iter().filter(|r| r.patched).count();
    let mut conn = t.conn(o, RECV_BUF);
    let (mut intact, mut failed) = (0, m - created);
    let mut ids = Vec::new();
    for r in &results {
        let Some(path) = &r.path else { continue };
        match head_check(&mut conn, path, size) {
            Ok(()) => intact += 1,
            Err(f) => {
                failed += 1;
                ERRORS.add(|| f.to_string());
            }
        }
        ids.push(IdLine {
            url: t.url.absolute(path),
            length: size,
            seed_offset: r.seed_offset,
        });
    }
    let reconnects: u64 = results.iter().map(|r| r.reconnects).sum::<u64>() + conn.reconnects();
    println!(
        "  create        {created} ok, {} failed, {created_secs:.2} s",
        m - created
    );
    println!(
        "  patch         {patched} ok (204), {} failed, {patch_secs:.2} s",
        created - patched
    );
    println!("  head          {intact} intact, {failed} failed");
    if o.csv {
        println!(
            "hold,{m},{size},{},{rss_peak},{intact},{failed}",
            rss_before.unwrap_or(0)
        );
    }
    if let Some(before) = rss_before {
        let after = o.server_pid.and_then(read_rss).unwrap_or(0);
        let delta = rss_peak.saturating_sub(before);
        println!(
            "  server RSS    before {}, peak {} (+{}, {} per upload), after {}",
            fmt_bytes(before),
            fmt_bytes(rss_peak),
            fmt_bytes(delta),
            fmt_bytes(delta / m.max(1) as u64),
            fmt_bytes(after)
        );
    }
    println!("  reconnects    {reconnects}");
    write_ids(o, &ids)
}

// ------------------------------------------------------------------------------- verify

/// Every file under `dir`, by file name (the first one found wins).
fn index_dir(dir: &Path) -> Result<HashMap<String, PathBuf>, String> {
    let mut map = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            let ft = e.file_type().map_err(|e| format!("{}: {e}", e))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                if let Some(name) = e.file_name().to_str() {
                    map.entry(name.to_owned()).or_insert_with(|| e.path());
                }
            }
        }
    }
    Ok(map)
}

fn check_file(path: &Path, l: &IdLine, pat: &Pattern, buf: &mut [u8]) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len != l.length {
        return Err(format!(
            "{}: {len} bytes, expected {}",
            path.display(),
            l.length
        ));
    }
    let mut pos = 0u64;
    while pos < len {
        let want = ((len - pos) as usize).min(buf.len());
        f.read_exact(&mut buf[..want])
            .map_err(|e| format!("{}: read at {pos}: {e}", path.display()))?;
        if let Some(i) = pat.first_mismatch(l.seed_offset + pos, &buf[..want]) {
            return Err(format!(
                "{}: content differs at byte {}",
                path.display(),
                pos + i as u64
            ));
        }
        pos += want as u64;
    }
    Ok(())
}

pub fn verify(o: &Opts) -> Result<(), String> {
    let ids_file = o.ids_file.as_deref().unwrap_or(Path::new(""));
    let ids = data::read_ids(ids_file)?;
    let seed = ids.seed.unwrap_or(o.seed);
    let files = match &o.data_dir {
        Some(d) => Some(index_dir(d)?),
        None => None,
    };
    let pat = files.as_ref().map(|_| Pattern::new(seed, BUF_LEN, 1 << 20));
    let mut buf = vec![0u8; if files.is_some() { 1 << 20 } else { 0 }];
    let forced = o.url.as_deref().map(Target::new).transpose()?;
    let mut current: Option<(String, Conn)> = None;
    let (mut ok, mut failed) = (0u64, 0u64);
    for l in &ids.lines {
        let res = (|| -> Result<(), String> {
            let url = Url::parse(&l.url)?;
            let key = match &forced {
                Some(t) => t.url.authority.clone(),
                None => url.authority.clone(),
            };
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                let conn = match &forced {
                    Some(t) => t.conn(o, RECV_BUF),
                    None => Target::new(&l.url)?.conn(o, RECV_BUF),
                };
                current = Some((key, conn));
            }
            let conn = &mut current.as_mut().expect("set above").1;
            head_check(conn, &url.path, l.length).map_err(|f| f.to_string())?;
            if let (Some(files), Some(pat)) = (&files, &pat) {
                let id = http::last_segment(&url.path);
                let path = files
                    .get(id)
                    .ok_or_else(|| format!("{}: no data file named {id}", l.url))?;
                check_file(path, l, pat, &mut buf)?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                ERRORS.add(|| e);
            }
        }
    }
    println!("verify: {ok} ok, {failed} failed");
    Ok(())
}
