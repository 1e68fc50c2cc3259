//! tusload: a load generator for tus 1.0 servers (tusring, rustus, tusd, @tus/server).
//! Raw HTTP/1.1 over std `TcpStream`s, one thread per connection. See `--help`.

mod data;
mod http;
mod mix;
mod modes;
mod sink;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const HELP: &str = "\
tusload - load generator for tus 1.0 servers (raw HTTP/1.1, keep-alive connections)

USAGE:
  tusload big    --url URL --size N [--chunk 0|N] [--repeat R] [--write-size N]
                 [--csv] [--ids-file F]
  tusload small  --url URL --size N [--conns C] [--duration D] [--warmup D] [--csv]
                 [--keep-ids --ids-file F]
  tusload hold   --url URL --uploads M --size N [--interval D] [--piece N]
                 [--server-pid PID] [--csv] [--ids-file F]
  tusload mix    --url URL [--size N] [--conns C] [--duration D] [--csv] [--ids-file F]
  tusload verify --ids-file F [--url URL] [--data-dir DIR]
  tusload sink   --listen ADDR --dir DIR [--pipe-size N] [--pin CPU]
  tusload touch  --size N

MODES:
  big     POST Upload-Length N, then PATCH the N bytes in one request (--chunk 0) or in
          PATCHes of --chunk bytes. Timed from the first PATCH byte to the last 204 and
          reported in MB/s (10^6 bytes/s); --repeat R uploads run one after another.
  small   C threads, each with its own keep-alive connection, create N-byte uploads with
          creation-with-upload (POST carrying the body) for --warmup + --duration; only
          the --duration part is measured. Falls back to POST + PATCH (and says so) when
          the server answers 201 without Upload-Offset N. Prints uploads/s, latency
          p50/p90/p99/max, errors by status, reconnects.
  hold    M threads each create an N-byte upload; then all send ONE PATCH each
          (Content-Length N) writing --piece bytes every --interval, so the M uploads are
          in flight together for about N/piece*interval. With --server-pid, samples the
          server's VmRSS every 100 ms (before and peak). At the end HEADs every upload and
          counts those with Upload-Offset == N as intact.
  mix     C threads, each with its own keep-alive connection, repeat for --duration a
          random scenario on an upload of 1..=N bytes (--size, default 64K): keep (POST,
          1-3 PATCHes each followed by a HEAD), keep with creation-with-upload, finish
          then DELETE (then HEAD: 404/410), abandon half-way then DELETE, conflict (PATCH
          at a wrong offset: 409, then DELETE). Expected 4xx (404/410 after DELETE, 409)
          are counted by status; any other answer is an error. --ids-file gets the kept
          uploads, for `verify --data-dir`. Prints requests by method, latency
          p50/p90/p99/max, scenarios, expected 4xx, errors.
  verify  For each line of --ids-file: HEAD, expect Upload-Offset == length (and
          Upload-Length, if sent). With --data-dir, also finds the file named <id> under
          DIR (recursively) and compares its bytes with the content that was sent.
  sink    The bare splice receiver, the loopback baseline: what one core takes in with
          no protocol work. One thread, blocking sockets, one connection at a time
          (keep-alive): finds the end of each head and its Content-Length and moves
          the body socket -> pipe -> file with plain splice(2) into a new file in DIR,
          then answers 204. Speaks just enough tus for `big`, `small --conns 1` and
          `verify`: POST with Upload-Length -> 201, Location <path>/<n> (file DIR/<n>);
          PATCH -> body at Upload-Offset, 204; HEAD -> 200 with Upload-Offset. Logs
          `listening on http://ADDR` to stderr (port 0 picks one); runs until killed.
  touch   Writes every page of an N-byte buffer and frees it (before a timed run, so
          that the measurement does not pay for memory the VM handed back to its host).

OPTIONS:
  --url URL         tus creation URL, e.g. http://127.0.0.1:1081/files (plain http).
                    verify: host:port to use instead of the one in each line
  --size N          upload length in bytes (mix: the largest [64K]); K, M, G = 2^10,
                    2^20, 2^30 (4K, 64M, 1G)
  --chunk N         big: bytes per PATCH, 0 = all in one PATCH [0]
  --repeat R        big: number of uploads [1]
  --write-size N    big: bytes per write() of a body [1M]
  --conns C         small, mix: connections (threads) [16]
  --duration D      small, mix: measured time; D like 10s, 500ms, 2m, 1.5s [10s]
  --warmup D        small: unmeasured time before it [1s]
  --csv             also print machine-readable lines: small: small,conns,size,
                    uploads_per_s,p50_us,p99_us,errors; big (one per upload): big,size,
                    secs,MB_per_s; hold: hold,uploads,size,rss_before,rss_peak,intact,
                    failed (RSS in bytes, 0 without --server-pid); mix: mix,conns,
                    max_size,requests,requests_per_s,p50_us,p99_us,kept,errors
  --keep-ids        small: remember every upload (required for --ids-file in small)
  --uploads M       hold: concurrent uploads / connections / threads [100]
  --interval D      hold: time between pieces [100ms]
  --piece N         hold: bytes per piece [1K]
  --server-pid PID  hold: sample VmRSS of this process from /proc/PID/status
  --ids-file F      big, small, hold, mix: write one `<url> <length> <seed_offset>` line
                    per upload (mix: the kept ones); verify: the file to read
  --data-dir DIR    verify: the server's data directory
  --seed S          content seed [1] (verify takes it from the ids file header)
  --timeout D       connect / read / write timeout [60s]
  --listen ADDR     sink: address to listen on, e.g. 127.0.0.1:0 [127.0.0.1:0]
  --dir DIR         sink: directory for the received bodies (created if missing)
  --pipe-size N     sink: pipe capacity (F_SETPIPE_SZ) [1M]
  --pin CPU         sink: pin the receiver to this CPU
  -h, --help        this text

CONTENT:
  Bodies are slices of one 64 MiB buffer filled once with xorshift64* (state =
  splitmix64(seed), u64 words little-endian). Byte i of an upload is
  buf[(i + o) mod 2^26], o being the upload's seed offset (third column of the ids file).

Every request carries Tus-Resumable: 1.0.0. A Location may be absolute or relative; only
its path is used, on the host:port of --url. Connections closed by the server
(Connection: close) are reopened and counted as reconnects.
big, small and hold end with `client cpu  S s (user U, sys Y)`, the CPU time tusload
itself used, so a benchmark can tell how much of the machine the client took.
Exit status: 0 ok; 1 connection, protocol, status or verify errors; 2 usage.
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Big,
    Small,
    Hold,
    Mix,
    Verify,
    Sink,
    Touch,
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub mode: Mode,
    pub url: Option<String>,
    pub size: Option<u64>,
    pub chunk: u64,
    pub repeat: u64,
    pub write_size: usize,
    pub conns: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub csv: bool,
    pub keep_ids: bool,
    pub uploads: usize,
    pub interval: Duration,
    pub piece: u64,
    pub server_pid: Option<u32>,
    pub ids_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub seed: u64,
    pub timeout: Duration,
    pub listen: Option<String>,
    pub dir: Option<PathBuf>,
    pub pipe_size: usize,
    pub pin: Option<usize>,
}

impl Opts {
    fn new(mode: Mode) -> Opts {
        Opts {
            mode,
            url: None,
            size: None,
            chunk: 0,
            repeat: 1,
            write_size: 1 << 20,
            conns: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            csv: false,
            keep_ids: false,
            uploads: 100,
            interval: Duration::from_millis(100),
            piece: 1024,
            server_pid: None,
            ids_file: None,
            data_dir: None,
            seed: 1,
            timeout: Duration::from_secs(60),
            listen: None,
            dir: None,
            pipe_size: 1 << 20,
            pin: None,
        }
    }
}

enum Cli {
    Run(Box<Opts>),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cli, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mode = match p.next().map_err(|e| e.to_string())? {
        Some(Short('h') | Long("help")) | None => return Ok(Cli::Help),
        Some(Value(v)) => match v.to_str() {
            Some("big") => Mode::Big,
            Some("small") => Mode::Small,
            Some("hold") => Mode::Hold,
            Some("mix") => Mode::Mix,
            Some("verify") => Mode::Verify,
            Some("sink") => Mode::Sink,
            Some("touch") => Mode::Touch,
            _ => {
                return Err(format!(
                    "unknown mode {v:?} (big, small, hold, mix, verify, sink, touch)"
                ))
            }
        },
        Some(other) => return Err(format!("expected a mode first, got {}", other.unexpected())),
    };
    let mut o = Opts::new(mode);
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(e)? {
        let name = match &arg {
            Long(n) => format!("--{n}"),
            Short(c) => format!("-{c}"),
            Value(v) => return Err(format!("unexpected argument {v:?}")),
        };
        let mut val = || -> Result<String, String> {
            let v = p.value().map_err(e)?;
            v.into_string()
                .map_err(|v| format!("{name}: not UTF-8: {v:?}"))
        };
        let bad = |what: String| format!("{name}: {what}");
        match name.as_str() {
            "-h" | "--help" => return Ok(Cli::Help),
            "--url" => o.url = Some(val()?),
            "--size" => o.size = Some(parse_size(&val()?).map_err(bad)?),
            "--chunk" => o.chunk = parse_size(&val()?).map_err(bad)?,
            "--repeat" => o.repeat = parse_count(&val()?).map_err(bad)?,
            "--write-size" => {
                o.write_size = parse_size(&val()?).map_err(bad)?.clamp(1, 1 << 30) as usize
            }
            "--conns" => o.conns = parse_count(&val()?).map_err(bad)? as usize,
            "--duration" => o.duration = parse_duration(&val()?).map_err(bad)?,
            "--warmup" => o.warmup = parse_duration(&val()?).map_err(bad)?,
            "--csv" => o.csv = true,
            "--keep-ids" => o.keep_ids = true,
            "--uploads" => o.uploads = parse_count(&val()?).map_err(bad)? as usize,
            "--interval" => o.interval = parse_duration(&val()?).map_err(bad)?,
            "--piece" => o.piece = parse_size(&val()?).map_err(bad)?,
            "--server-pid" => {
                let v = val()?;
                o.server_pid = Some(v.parse().map_err(|_| bad(format!("bad pid {v:?}")))?)
            }
            "--ids-file" => o.ids_file = Some(PathBuf::from(val()?)),
            "--data-dir" => o.data_dir = Some(PathBuf::from(val()?)),
            "--seed" => {
                let v = val()?;
                o.seed = v.parse().map_err(|_| bad(format!("bad seed {v:?}")))?
            }
            "--timeout" => o.timeout = parse_duration(&val()?).map_err(bad)?,
            "--listen" => o.listen = Some(val()?),
            "--dir" => o.dir = Some(PathBuf::from(val()?)),
            "--pipe-size" => {
                o.pipe_size = parse_size(&val()?).map_err(bad)?.clamp(4096, 1 << 30) as usize
            }
            "--pin" => {
                let v = val()?;
                o.pin = Some(v.parse().map_err(|_| bad(format!("bad CPU {v:?}")))?)
            }
            _ => return Err(format!("unknown option {name} (see --help)")),
        }
    }
    if matches!(o.mode, Mode::Big | Mode::Small | Mode::Hold | Mode::Mix) && o.url.is_none() {
        return Err("--url is required".into());
    }
    if matches!(o.mode, Mode::Big | Mode::Small | Mode::Hold | Mode::Touch) && o.size.is_none() {
        return Err("--size is required".into());
    }
    if o.mode == Mode::Sink && o.dir.is_none() {
        return Err("sink: --dir is required".into());
    }
    if o.mode == Mode::Verify && o.ids_file.is_none() {
        return Err("--ids-file is required".into());
    }
    if o.mode == Mode::Small && o.ids_file.is_some() && !o.keep_ids {
        return Err("small: --ids-file needs --keep-ids (it records every upload)".into());
    }
    if matches!(o.mode, Mode::Big | Mode::Hold) && o.size == Some(0) {
        return Err("--size must be > 0".into());
    }
    if o.mode == Mode::Hold && o.piece == 0 {
        return Err("--piece must be > 0".into());
    }
    if o.timeout.is_zero() {
        return Err("--timeout must be > 0".into());
    }
    Ok(Cli::Run(Box::new(o)))
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive integer, got {s:?}")),
    }
}

/// `123`, `4K`, `64M`, `1G`, `2T` (binary multiples; `KB`, `KiB`, `k` accepted too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let shift = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("bad size {s:?} (use e.g. 4096, 4K, 64M, 1G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// `10s`, `500ms`, `250us`, `2m`, `1h`, `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration {s:?} (use e.g. 10s, 500ms, 2m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad duration {s:?}"))
}

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice; 0 when empty.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `1.5 MiB`, `64 MiB`, `512 B`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Errors across all threads: a count and the first few messages.
pub struct ErrLog {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

const ERRORS_SHOWN: usize = 5;

pub static ERRORS: ErrLog = ErrLog {
    count: AtomicU64::new(0),
    first: Mutex::new(Vec::new()),
};

impl ErrLog {
    pub fn add(&self, msg: impl FnOnce() -> String) {
        if self.count.fetch_add(1, Ordering::Relaxed) < ERRORS_SHOWN as u64 {
            if let Ok(mut v) = self.first.lock() {
                if v.len() < ERRORS_SHOWN {
                    v.push(msg());
                }
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn print(&self) {
        let n = self.count();
        if n == 0 {
            return;
        }
        let first = self.first.lock().map(|v| v.clone()).unwrap_or_default();
        println!("errors: {n} (first {}):", first.len());
        for m in first {
            println!("  {m}");
        }
    }
}

/// Writes one byte in every page of a `size`-byte buffer, then frees it.
fn touch(size: u64) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    let len = usize::try_from(size).map_err(|_| "--size too large".to_owned())?;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|e| format!("cannot allocate {}: {e}", fmt_bytes(size)))?;
    // Spare capacity is written through raw pointers one byte per page; nothing reads it.
    let p = v.as_mut_ptr();
    for i in (0..len).step_by(4096) {
        // SAFETY: i < len <= capacity, so the write is inside the allocation.
        unsafe { p.add(i).write_volatile(1) };
    }
    drop(v);
    println!(
        "touch: {} in {:.2} s",
        fmt_bytes(size),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `client cpu` line: this process's user and system CPU time.
fn print_cpu() {
    // SAFETY: getrusage fills the zeroed struct we pass; RUSAGE_SELF is always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return;
        }
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (u, s) = (secs(ru.ru_utime), secs(ru.ru_stime));
    println!("  client cpu    {:.3} s (user {u:.3}, sys {s:.3})", u + s);
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args_os().skip(1)) {
        Ok(Cli::Run(o)) => *o,
        Ok(Cli::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tusload: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match opts.mode {
        Mode::Big => modes::big(&opts),
        Mode::Small => modes::small(&opts),
        Mode::Hold => modes::hold(&opts),
        Mode::Mix => mix::mix(&opts),
        Mode::Verify => modes::verify(&opts),
        Mode::Sink => sink::sink(&opts),
        Mode::Touch => touch(opts.size.unwrap_or(0)),
    };
    if matches!(opts.mode, Mode::Big | Mode::Small | Mode::Hold | Mode::Mix) {
        print_cpu();
    }
    ERRORS.print();
    match result {
        Err(e) => {
            eprintln!("tusload: {e}");
            ExitCode::from(1)
        }
        Ok(()) if ERRORS.count() > 0 => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("4096", 4096),
            ("4K", 4096),
            ("4k", 4096),
            ("4KB", 4096),
            ("4KiB", 4096),
            ("16M", 16 << 20),
            ("1G", 1 << 30),
            ("2T", 2 << 40),
            (" 64M ", 64 << 20),
        ];
        for (s, want) in ok {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for s in ["", "K", "4X", "-1", "1.5M", "99999999999T"] {
            assert!(parse_size(s).is_err(), "{s}");
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("10s", 10_000),
            ("500ms", 500),
            ("1.5s", 1500),
            ("2m", 120_000),
            ("3", 3000),
            ("0ms", 0),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for s in ["", "s", "10x", "-1s", "1..2s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 99.0), 7);
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        let v: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile(&v, 99.0), 10);
        assert_eq!(percentile(&v, 50.0), 5);
        assert_eq!(percentile(&v, 51.0), 6);
    }

    #[test]
    fn args() {
        let parse = |s: &str| parse_args(s.split_whitespace().map(Into::into));
        let Ok(Cli::Run(o)) = parse("small --url http://h/files --size 4K --conns 2 --csv") else {
            panic!()
        };
        assert_eq!(
            (o.mode, o.size, o.conns, o.csv),
            (Mode::Small, Some(4096), 2, true)
        );
        assert!(matches!(parse("--help"), Ok(Cli::Help)));
        assert!(parse("big --size 1M").is_err());
        assert!(parse("big --url http://h/f").is_err());
        assert!(parse("small --url http://h/f --size 1 --ids-file x").is_err());
        assert!(parse("verify").is_err());
        assert!(parse("mix --size 1K").is_err());
        let Ok(Cli::Run(o)) = parse("mix --url http://h/files --conns 3 --duration 2s") else {
            panic!()
        };
        assert_eq!((o.mode, o.conns, o.size), (Mode::Mix, 3, None));
        assert!(parse("nope").is_err());
        assert!(parse("big --url http://h/f --size 1 --bogus").is_err());
        assert_eq!(fmt_bytes(64 << 20), "64 MiB");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
    }
}
