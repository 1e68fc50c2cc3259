//! Executable hooks that misbehave: hang, crash, flood their output, or get metadata made
//! to look like shell code. The daemon must bound each (timeout, output cap), answer
//! with the documented status, keep serving, and never run the metadata as code.

use crate::harness::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Writes an executable `#!/bin/sh` script.
fn script(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purpose (it holds no pipes, runs nothing).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// PIDs written one per line to `file` by the hook scripts.
fn pids(file: &Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn vm_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A hook that hangs (and leaves a background child holding its pipes) is killed, with
/// its whole process group, at `--hook-timeout`: pre-create answers 504 and creates
/// nothing; hanging post-events do not hold up the requests that queued them.
#[test]
fn hanging_hook_is_bounded_by_hook_timeout() {
    let tmp = TempDir::new("hook-hang");
    let pidfile = tmp.join("pids");
    let hook = script(
        &tmp.join("hang.sh"),
        &format!(
            "echo $$ >> '{p}'\nsleep 1000 &\necho $! >> '{p}'\nsleep 1000",
            p = pidfile.display()
        ),
    );
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
            "--hook-timeout",
            "1",
        ],
    );
    let t0 = Instant::now();
    let r = d.post(&[("Upload-Length", "10")]);
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(took >= Duration::from_millis(900), "504 after {took:?}");
    assert!(took < Duration::from_secs(4), "504 only after {took:?}");
    assert!(
        list_files(d.data_dir()).is_empty(),
        "a timed-out pre-create created {:?}",
        list_files(d.data_dir())
    );
    // The hook and the child it left in the background are gone.
    let hung = pids(&pidfile);
    assert_eq!(hung.len(), 2, "pids written by the hook: {hung:?}");
    assert!(
        eventually(Duration::from_secs(3), || hung.iter().all(|&p| !alive(p))),
        "hook processes still running after the timeout: {hung:?}"
    );
    // Other requests were served while it hung, and are now.
    let o = d.options("/files");
    assert!(matches!(o.status, 200 | 204), "{o:?}");
    drop(d);

    // The same hook on every post-event: uploads complete at full speed.
    let tmp = TempDir::new("hook-hang-post");
    let pidfile = tmp.join("pids");
    let hook = script(
        &tmp.join("hang.sh"),
        &format!("echo $$ >> '{}'\nsleep 1000", pidfile.display()),
    );
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "post-create,post-receive,post-finish,post-terminate",
            "--hook-timeout",
            "1",
        ],
    );
    let data = random_bytes(901, 1000);
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..4 {
        let t = Instant::now();
        let id = d.create(1000);
        let p = d.patch(&id, 0, &data[..500]);
        assert_eq!(p.status, 204, "{p:?}");
        let p = d.patch(&id, 500, &data[500..]);
        assert_eq!(p.status, 204, "{p:?}");
        assert_eq!(d.read_data(&id), data);
        slowest = slowest.max(t.elapsed());
    }
    eprintln!(
        "4 uploads with hanging post-hooks: {:?}, slowest {slowest:?}",
        t0.elapsed()
    );
    assert!(
        slowest < Duration::from_secs(1),
        "an upload took {slowest:?} with hanging post-hooks (timeout 1 s)"
    );
    // Every hook run is killed at the timeout: a few seconds on, none is left.
    thread::sleep(Duration::from_secs(1));
    assert!(
        eventually(Duration::from_secs(30), || {
            let p = pids(&pidfile);
            !p.is_empty() && p.iter().all(|&p| !alive(p)) && {
                thread::sleep(Duration::from_millis(1500));
                pids(&pidfile).iter().all(|&p| !alive(p))
            }
        }),
        "hanging post-hooks not all killed: {:?}",
        pids(&pidfile)
            .into_iter()
            .filter(|&p| alive(p))
            .collect::<Vec<_>>()
    );
    assert!(
        d.stderr_text().contains("killed"),
        "the timeouts are logged:\n{}",
        d.stderr_text()
    );
}

/// A hook that dies of a signal (SIGSEGV, SIGABRT) refuses a pre-create like any
/// non-zero exit (400, rustus's message); the signal is logged and the daemon serves on.
/// A crashing post-hook changes nothing for the upload.
#[test]
fn crashing_hook_refuses_pre_create_and_daemon_serves_on() {
    for sig in ["SEGV", "ABRT"] {
        let tmp = TempDir::new("hook-crash");
        let hook = script(&tmp.join("crash.sh"), &format!("kill -{sig} $$\nexit 0"));
        let d = Daemon::start(
            &tmp,
            &[
                "--hooks-file",
                hook.to_str().unwrap(),
                "--hooks",
                "pre-create,post-finish",
            ],
        );
        let r = d.post(&[("Upload-Length", "10")]);
        assert_eq!(r.status, 400, "pre-create hook killed by SIG{sig}: {r:?}");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "Hook invocation failed. Reason: Returned wrong status code"
        );
        assert!(list_files(d.data_dir()).is_empty());
        let num = if sig == "SEGV" { "11" } else { "6" };
        assert!(
            d.wait_log_line(&["pre-create", &format!("signal {num}")])
                .is_some(),
            "the signal is logged:\n{}",
            d.stderr_text()
        );
        // The daemon is fine: a plain request, and an upload whose only hook is the
        // crashing post-finish, which cannot change its outcome.
        let o = d.options("/files");
        assert!(matches!(o.status, 200 | 204), "{o:?}");
        drop(d);
        let tmp2 = TempDir::new("hook-crash-post");
        let hook = script(&tmp2.join("crash.sh"), &format!("kill -{sig} $$"));
        let d = Daemon::start(
            &tmp2,
            &[
                "--hooks-file",
                hook.to_str().unwrap(),
                "--hooks",
                "post-finish",
            ],
        );
        let id = d.create(3);
        let p = d.patch(&id, 0, b"abc");
        assert_eq!(p.status, 204, "{p:?}");
        assert_eq!(d.read_data(&id), b"abc");
        assert!(d.wait_log_line(&["post-finish", "signal"]).is_some());
        let h = d.head(&id);
        assert_eq!(h.upload_offset(), 3);
    }
}

/// A hook that writes 100 MiB to stdout and stderr as fast as it can: the daemon reads
/// and drops it (memory stays within +64 MiB), logs at most the capped number of lines,
/// each cut to its cap, and the hook runs to its end (here: success, so 201).
#[test]
fn flooding_hook_output_is_bounded() {
    let tmp = TempDir::new("hook-flood");
    // stdout: 50 MiB of short lines; stderr: 50 MiB without a newline.
    let hook = script(
        &tmp.join("flood.sh"),
        "yes 'flood flood flood flood' | head -c 52428800\n\
         head -c 52428800 /dev/zero | tr '\\0' x >&2\n\
         echo done\nexit 0",
    );
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
            "--hook-timeout",
            "60",
        ],
    );
    let pid = d.pid();
    // Let the daemon settle before taking the baseline.
    thread::sleep(Duration::from_millis(300));
    let base = vm_rss(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(vm_rss(pid));
                thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let t0 = Instant::now();
    let r = d.post(&[("Upload-Length", "10")]);
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    eprintln!(
        "100 MiB of hook output: answered in {took:?}; daemon RSS {} KiB -> peak {} KiB",
        base >> 10,
        peak >> 10
    );
    assert_eq!(r.status, 201, "the flooding hook succeeded: {r:?}");
    assert!(
        peak <= base + (64 << 20),
        "daemon RSS grew from {} KiB to {} KiB while a hook wrote 100 MiB",
        base >> 10,
        peak >> 10
    );
    thread::sleep(Duration::from_millis(300));
    let log = d.stderr_text();
    let hook_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("hook pre-create"))
        .collect();
    assert!(
        hook_lines.len() <= 70,
        "{} hook output lines logged (cap 64)",
        hook_lines.len()
    );
    assert!(
        hook_lines.iter().all(|l| l.len() < 2048),
        "a logged hook line is longer than the 1 KiB cap plus its prefix"
    );
    assert!(
        log.contains("more output line(s) not logged"),
        "the dropped lines are counted:\n{}",
        &log[..log.len().min(3000)]
    );
    assert!(log.len() < 1 << 20, "the daemon logged {} bytes", log.len());
}

/// Metadata made of shell metacharacters reaches a file hook as data (argv, JSON), and
/// nothing in it is executed.
#[test]
fn shell_metacharacters_in_metadata_are_never_executed() {
    let tmp = TempDir::new("hook-shell");
    let canary = tmp.join("canary");
    std::fs::create_dir(&canary).unwrap();
    let c = canary.display();
    let values = [
        format!("$(touch {c}/dollar)"),
        format!("`touch {c}/backtick`"),
        format!("x; touch {c}/semicolon"),
        format!("x\ntouch {c}/newline"),
        format!("x && touch {c}/and | touch {c}/pipe > {c}/redirect"),
        format!("'\"; touch {c}/quote; echo \""),
    ];
    let record = tmp.join("calls");
    // The hook stores its JSON argument untouched ("$2" is quoted, as a hook should do).
    let hook = script(
        &tmp.join("rec.sh"),
        &format!("printf '%s\\n' \"$2\" >> '{}'\nexit 0", record.display()),
    );
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
        ],
    );
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let meta: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("k{i} {}", b64(v)))
        .collect();
    let r = d.post(&[("Upload-Length", "5"), ("Upload-Metadata", &meta.join(","))]);
    assert_eq!(r.status, 201, "{r:?}");
    let text = std::fs::read_to_string(&record).expect("the hook ran");
    // The JSON may span lines only inside strings if it had raw newlines: it must not.
    let first = text.lines().next().unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("hook JSON: {e}: {text}"));
    let md = &v["upload"]["metadata"];
    for (i, want) in values.iter().enumerate() {
        assert_eq!(
            md[format!("k{i}")].as_str(),
            Some(want.as_str()),
            "metadata k{i} in the hook payload: {v}"
        );
    }
    thread::sleep(Duration::from_millis(300));
    let made: Vec<_> = std::fs::read_dir(&canary).unwrap().flatten().collect();
    assert!(made.is_empty(), "metadata was executed: {made:?}");
    let id = upload_id(&r);
    let info = read_info(&d.info_path(&id));
    assert_eq!(info["metadata"]["k0"].as_str(), Some(values[0].as_str()));
}
