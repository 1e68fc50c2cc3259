//! Load held: the CI-sized version of `scripts/load.sh`. `tusload mix` (creations,
//! PATCHes, HEADs and DELETEs) over 200 connections for 10 s against `--workers 2`; no
//! error but the expected 4xx, the daemon's open fds back to the baseline and its RSS
//! back near it afterwards, and every upload the run kept byte for byte on disk.

use crate::harness::*;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const CONNS: &str = "200";
const DURATION: &str = "10s";
/// Open fds the daemon may hold above the baseline once the load is over.
const FD_TOLERANCE: usize = 8;
/// RSS the daemon may hold above the baseline once the load is over.
const RSS_TOLERANCE: u64 = 64 << 20;

pub fn tusload() -> &'static str {
    env!("CARGO_BIN_EXE_tusload")
}

/// VmRSS of `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// Open file descriptors of `pid`.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs tusload with `args`; returns (exit status success, stdout+stderr).
fn run_tusload(args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new(tusload())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tusload");
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let buf = Arc::new(std::sync::Mutex::new(String::new()));
    let t1 = {
        let b = buf.clone();
        thread::spawn(move || drain_lines(out, b, None))
    };
    let t2 = {
        let b = buf.clone();
        thread::spawn(move || drain_lines(err, b, None))
    };
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = t1.join();
    let _ = t2.join();
    let text = buf.lock().unwrap().clone();
    let ok = status.is_some_and(|s| s.success());
    assert!(
        status.is_some(),
        "tusload {args:?} ran past {limit:?}:\n{text}"
    );
    (ok, text)
}

#[test]
fn mixed_load_leaks_nothing_and_loses_nothing() {
    let tmp = TempDir::new("load");
    let d = Daemon::start(&tmp, &["--disable-access-log"]);
    let pid = d.pid();
    let url = format!("{}/files", d.base_url());
    // Warm-up: the per-core buffer pools and the allocator's arenas grow here.
    let (ok, out) = run_tusload(
        &["mix", "--url", &url, "--conns", "20", "--duration", "1s"],
        Duration::from_secs(60),
    );
    assert!(ok, "warm-up:\n{out}");
    eventually(Duration::from_secs(5), || fds(pid) < 30);
    thread::sleep(Duration::from_millis(300));
    let base_fds = fds(pid);
    let base_rss = rss(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let (mut peak_fds, mut peak_rss) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                peak_fds = peak_fds.max(fds(pid));
                peak_rss = peak_rss.max(rss(pid));
                thread::sleep(Duration::from_millis(250));
            }
            (peak_fds, peak_rss)
        })
    };
    let ids = tmp.join("kept.ids");
    let started = Instant::now();
    let (ok, out) = run_tusload(
        &[
            "mix",
            "--url",
            &url,
            "--conns",
            CONNS,
            "--duration",
            DURATION,
            "--ids-file",
            ids.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (peak_fds, peak_rss) = sampler.join().unwrap();
    eprintln!("{out}");
    assert!(ok, "tusload mix reported errors:\n{out}");
    assert!(out.contains("  errors        0"), "{out}");

    let t_after = Instant::now();
    let back = eventually(Duration::from_secs(20), || {
        fds(pid) <= base_fds + FD_TOLERANCE
    });
    let after_fds = fds(pid);
    let after_rss = rss(pid);
    eprintln!(
        "load: {took:?}; fds baseline {base_fds}, peak {peak_fds}, after {after_fds} \
         ({:?} after the load); RSS baseline {} KiB, peak {} KiB, after {} KiB",
        t_after.elapsed(),
        base_rss >> 10,
        peak_rss >> 10,
        after_rss >> 10
    );
    assert!(
        peak_fds > base_fds + 100,
        "the load never held many connections (peak {peak_fds} fds): not a load test"
    );
    assert!(
        back,
        "open fds did not come back: {after_fds}, baseline {base_fds}"
    );
    assert!(
        after_rss <= base_rss + RSS_TOLERANCE,
        "RSS after the load {} KiB, baseline {} KiB",
        after_rss >> 10,
        base_rss >> 10
    );

    let (ok, out) = run_tusload(
        &[
            "verify",
            "--ids-file",
            ids.to_str().unwrap(),
            "--data-dir",
            d.data_dir().to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(ok, "verify:\n{out}");
    let verified: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("verify: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no verify line:\n{out}"));
    assert!(verified > 100, "only {verified} uploads kept and verified");
    assert!(
        !d.stderr_text().contains("panicked"),
        "daemon log:\n{}",
        d.stderr_text()
    );
}
