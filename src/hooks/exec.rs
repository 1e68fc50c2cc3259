//! Executable hooks: `--hooks-file` (argv `[path, event, json]`) and `--hooks-dir`
//! (`<dir>/<event>`, argv `[path, json]`), run on a hook worker thread.
//!
//! The program is executed directly (no shell), with stdin from `/dev/null` and the
//! daemon's environment and working directory. It runs in its own process group so that a
//! timeout kills it together with whatever it started. Its stdout and stderr are read as
//! they come (`poll(2)` on both pipes) and logged line by line, prefixed with the event
//! and the upload ID; past [`MAX_LOGGED_LINES`] lines the output is still read, so the
//! hook never blocks on a full pipe, but only counted.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::notifier::{Delivery, Notifier, Verdict};
use super::{Event, EventSet};
use crate::error::HookError;
use crate::limits::MAX_HOOK_ANSWER_BYTES;

/// Lines of one hook run that are logged; the rest are counted.
pub const MAX_LOGGED_LINES: usize = 64;

/// Longest logged line, in bytes; longer lines are cut (and marked with `…`).
pub const MAX_LINE_BYTES: usize = 1024;

/// How often a running hook is checked for having exited while its pipes stay open (a
/// background process it started may hold them).
const EXIT_POLL: Duration = Duration::from_millis(50);

/// How an executable hook run ended, when it did not succeed.
#[derive(Debug)]
pub enum ExecError {
    /// The program does not exist.
    NotFound,
    /// It could not be started (not executable, E2BIG, …).
    Spawn(io::Error),
    /// It exited with a non-zero status or was killed by a signal.
    Status(ExitStatus),
    /// It ran past the timeout and was killed.
    Timeout(Duration),
    /// Waiting for it failed (it is no longer this process's child to wait for).
    Wait(io::Error),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::NotFound => f.write_str("the file does not exist"),
            ExecError::Spawn(e) => write!(f, "cannot start it: {e}"),
            ExecError::Status(st) => match (st.code(), st.signal()) {
                (Some(code), _) => write!(f, "exit status {code}"),
                (None, Some(sig)) => write!(f, "killed by signal {sig}"),
                _ => write!(f, "{st}"),
            },
            ExecError::Wait(e) => write!(f, "cannot wait for it: {e}"),
            ExecError::Timeout(t) => {
                write!(f, "still running after {:.1} s: killed", t.as_secs_f64())
            }
        }
    }
}

/// The process groups of hooks running now, so that shutdown can kill them when the
/// grace period ends.
///
/// Invariant: a process group ID is in the set only while its leader (the hook, whose
/// PID it is) has not been reaped. An unreaped child keeps its PID, so the kernel cannot
/// give that ID to another process or group, and [`Running::kill_all`] (which signals
/// under the lock) can only hit the hook's own group. So a hook leaves the set *before*
/// it is reaped: `Running::try_reap` does both under the lock, and after a timeout the
/// group is killed and removed before the wait.
#[derive(Debug, Default)]
pub struct Running(Mutex<HashSet<i32>>);

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, pgid: i32) {
        self.lock().insert(pgid);
    }

    /// Stops tracking `pgid`. Only for a hook not yet reaped (see the invariant).
    fn remove(&self, pgid: i32) {
        self.lock().remove(&pgid);
    }

    /// Reaps `child` (the leader of group `pgid`) if it has exited, taking the group out
    /// of the set in the same critical section, so `kill_all` never sees it reaped.
    fn try_reap(&self, pgid: i32, child: &mut Child) -> io::Result<Option<ExitStatus>> {
        let mut set = self.lock();
        let reaped = child.try_wait();
        if !matches!(reaped, Ok(None)) {
            // Exited and reaped, or (an error) no longer ours to wait for: either way
            // its ID may be given to another process from now on.
            set.remove(&pgid);
        }
        reaped
    }

    /// Calls `f` with each process group held, under the lock `kill_all` takes.
    #[cfg(test)]
    fn each(&self, mut f: impl FnMut(i32)) {
        if let Ok(set) = self.0.lock() {
            set.iter().for_each(|&pgid| f(pgid));
        }
    }

    /// SIGKILLs every running hook's process group.
    pub fn kill_all(&self) -> usize {
        let set = self.lock();
        for &pgid in set.iter() {
            kill_group(pgid);
        }
        set.len()
    }
}

/// SIGKILLs process group `pgid`. Call only while its leader has not been reaped.
fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is
        // involved. The group is the hook's own (process_group(0) at spawn), and callers
        // signal it only before the hook has been reaped (`Running`'s invariant), so the
        // ID cannot have been reused.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Times a hook whose file is busy (`ETXTBSY`) is spawned again before giving up.
const SPAWN_BUSY_RETRIES: u32 = 5;
/// Wait before each of those attempts.
const SPAWN_BUSY_WAIT: Duration = Duration::from_millis(20);

/// Runs `program` with `args` (argv[0] is the program path), logging its output with
/// `tag` (`"<event> <upload id>"`), for at most `timeout`. With `keep_stdout` (an answer
/// is read, `--hooks-answers`) the stdout of a successful run is returned too, at most
/// [`MAX_HOOK_ANSWER_BYTES`] + 1 bytes of it (so a longer one is refused by its length);
/// else an empty vector.
pub fn run(
    program: &Path,
    args: &[&str],
    timeout: Duration,
    tag: &str,
    running: &Running,
    keep_stdout: bool,
) -> Result<Vec<u8>, ExecError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut attempt = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ExecError::NotFound),
            // "Text file busy": some process still holds the hook file open for writing,
            // typically for an instant (a deploy replacing it, or a fork elsewhere that
            // inherited the writer's descriptor and has not exec'd yet). This runs on a
            // hook thread, so a short wait is fine.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < SPAWN_BUSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(SPAWN_BUSY_WAIT);
            }
            Err(e) => return Err(ExecError::Spawn(e)),
        }
    };
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    running.add(pgid);
    supervise(&mut child, pgid, timeout, tag, running, keep_stdout)
}

/// Reads the output until the child exits (or the timeout), then reaps it; `pgid` leaves
/// `running` before that (see [`Running`]).
fn supervise(
    child: &mut Child,
    pgid: i32,
    timeout: Duration,
    tag: &str,
    running: &Running,
    keep_stdout: bool,
) -> Result<Vec<u8>, ExecError> {
    let deadline = Instant::now() + timeout;
    let mut out = Stream::new(child.stdout.take(), "stdout");
    if keep_stdout {
        out.kept = Some(Vec::new());
    }
    let mut err = Stream::new(child.stderr.take(), "stderr");
    let mut logged = 0usize;
    let mut skipped = 0usize;
    let mut status: Option<ExitStatus> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            kill_group(pgid);
            running.remove(pgid);
            let _ = child.wait();
            out.flush(tag, &mut logged, &mut skipped);
            err.flush(tag, &mut logged, &mut skipped);
            report_skipped(tag, skipped);
            return Err(ExecError::Timeout(timeout));
        }
        if out.open() || err.open() {
            let wait = (deadline - now).min(EXIT_POLL);
            poll_read(
                &mut [&mut out, &mut err],
                wait,
                tag,
                &mut logged,
                &mut skipped,
            );
        } else {
            // Both pipes closed: wait for the exit itself, a little at a time.
            std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
        }
        match running.try_reap(pgid, child) {
            Ok(Some(st)) => status = Some(st),
            Ok(None) => {}
            Err(e) => {
                out.flush(tag, &mut logged, &mut skipped);
                err.flush(tag, &mut logged, &mut skipped);
                return Err(ExecError::Wait(e));
            }
        }
        if let Some(st) = status {
            // Exited: take what is already in the pipes, without waiting for EOF (a
            // background process it started may keep them open).
            if out.open() || err.open() {
                poll_read(
                    &mut [&mut out, &mut err],
                    Duration::ZERO,
                    tag,
                    &mut logged,
                    &mut skipped,
                );
            }
            out.flush(tag, &mut logged, &mut skipped);
            err.flush(tag, &mut logged, &mut skipped);
            report_skipped(tag, skipped);
            return if st.success() {
                Ok(out.kept.take().unwrap_or_default())
            } else {
                Err(ExecError::Status(st))
            };
        }
    }
}

fn report_skipped(tag: &str, skipped: usize) {
    if skipped > 0 {
        crate::info!("hook {tag}: {skipped} more output line(s) not logged");
    }
}

/// One of the child's output pipes and its partial line.
struct Stream {
    pipe: Option<Box<dyn ReadFd>>,
    name: &'static str,
    line: Vec<u8>,
    /// The current line passed `MAX_LINE_BYTES` and was cut.
    cut: bool,
    /// Everything read, when kept (a hook's answer on stdout). Invariant: at most
    /// `MAX_HOOK_ANSWER_BYTES + 1` bytes; the rest is read and not kept.
    kept: Option<Vec<u8>>,
}

trait ReadFd: Read {
    fn fd(&self) -> i32;
}

impl ReadFd for ChildStdout {
    fn fd(&self) -> i32 {
        self.as_raw_fd()
    }
}

impl ReadFd for ChildStderr {
    fn fd(&self) -> i32 {
        self.as_raw_fd()
    }
}

impl Stream {
    fn new<R: ReadFd + 'static>(pipe: Option<R>, name: &'static str) -> Stream {
        Stream {
            pipe: pipe.map(|p| Box::new(p) as Box<dyn ReadFd>),
            name,
            line: Vec::new(),
            cut: false,
            kept: None,
        }
    }

    fn open(&self) -> bool {
        self.pipe.is_some()
    }

    /// Reads what is available (the fd polled readable, so one read does not block).
    fn read_some(&mut self, tag: &str, logged: &mut usize, skipped: &mut usize) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut buf = [0u8; 8192];
        match pipe.read(&mut buf) {
            Ok(0) => {
                self.pipe = None;
            }
            Ok(n) => {
                if let Some(kept) = self.kept.as_mut() {
                    let room = (MAX_HOOK_ANSWER_BYTES + 1).saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                for &b in &buf[..n] {
                    if b == b'\n' {
                        self.emit(tag, logged, skipped);
                    } else if self.line.len() < MAX_LINE_BYTES {
                        self.line.push(b);
                    } else {
                        self.cut = true;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.pipe = None,
        }
    }

    fn emit(&mut self, tag: &str, logged: &mut usize, skipped: &mut usize) {
        if *logged < MAX_LOGGED_LINES {
            *logged += 1;
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim_end_matches('\r');
            let mark = if self.cut { "…" } else { "" };
            crate::info!("hook {tag} {}: {}{mark}", self.name, text.escape_debug());
        } else {
            *skipped += 1;
        }
        self.line.clear();
        self.cut = false;
    }

    /// Logs a last line that had no newline.
    fn flush(&mut self, tag: &str, logged: &mut usize, skipped: &mut usize) {
        if !self.line.is_empty() || self.cut {
            self.emit(tag, logged, skipped);
        }
        self.pipe = None;
    }
}

/// Waits up to `wait` for either pipe to be readable (or closed), then reads each one
/// that is.
fn poll_read(
    streams: &mut [&mut Stream],
    wait: Duration,
    tag: &str,
    logged: &mut usize,
    skipped: &mut usize,
) {
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2);
    let mut which: Vec<usize> = Vec::with_capacity(2);
    for (i, s) in streams.iter().enumerate() {
        if let Some(p) = &s.pipe {
            fds.push(libc::pollfd {
                fd: p.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            which.push(i);
        }
    }
    if fds.is_empty() {
        return;
    }
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a live, writable array of `fds.len()` pollfd structs, and the
    // kernel writes only their `revents` fields.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return;
    }
    for (pfd, &i) in fds.iter().zip(&which) {
        if pfd.revents != 0 {
            streams[i].read_some(tag, logged, skipped);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The notifiers
// ---------------------------------------------------------------------------------------

/// `--hooks-file`, `--hooks-dir`, `--hook-timeout`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSettings {
    /// One executable run for every event (`<path> <event> <json>`).
    pub file: Option<PathBuf>,
    /// A directory of executables named after the events (`<dir>/<event> <json>`).
    pub dir: Option<PathBuf>,
    /// How long a hook may run before it is killed.
    pub timeout: Duration,
}

/// Which of the two executable hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

/// An executable hook: `--hooks-file` or `--hooks-dir`. Each keeps the process groups of
/// its running hooks, which shutdown kills at the end of the grace period.
pub struct ExecHook {
    kind: Kind,
    /// The file, or the directory.
    path: PathBuf,
    timeout: Duration,
    running: Running,
}

/// The file hook and the directory hook, in rustus's order, as configured; logs once
/// what cannot work (a missing or non-executable file) for the events in `events`.
pub fn notifiers(settings: &ExecSettings, events: EventSet) -> Vec<ExecHook> {
    let mut out = Vec::new();
    if let Some(file) = &settings.file {
        if let Some(why) = not_runnable(file) {
            crate::warn!(
                "hooks: --hooks-file {}: {why}: every hook event will fail",
                file.display()
            );
        }
        out.push(ExecHook::new(
            Kind::File,
            program_path(file),
            settings.timeout,
        ));
    }
    if let Some(dir) = &settings.dir {
        for event in events.iter() {
            let path = dir.join(event.name());
            if let Some(why) = not_runnable(&path) {
                let effect = if event.is_pre() {
                    "its requests will be refused with 400"
                } else {
                    "these events will not reach the directory hook"
                };
                crate::warn!(
                    "hooks: directory hook {} for {event}: {why}: {effect}",
                    path.display()
                );
            }
        }
        out.push(ExecHook::new(Kind::Dir, dir.clone(), settings.timeout));
    }
    out
}

impl ExecHook {
    fn new(kind: Kind, path: PathBuf, timeout: Duration) -> ExecHook {
        ExecHook {
            kind,
            path,
            timeout,
            running: Running::default(),
        }
    }

    /// The program run for `event`.
    fn program(&self, event: Event) -> Cow<'_, Path> {
        match self.kind {
            Kind::File => Cow::Borrowed(&self.path),
            Kind::Dir => Cow::Owned(self.path.join(event.name())),
        }
    }
}

impl Notifier for ExecHook {
    fn kind(&self) -> &'static str {
        match self.kind {
            Kind::File => "file",
            Kind::Dir => "dir",
        }
    }

    fn describe(&self) -> String {
        match self.kind {
            Kind::File => format!("file {}", self.path.display()),
            Kind::Dir => format!("directory {}", self.path.display()),
        }
    }

    fn name_for(&self, event: Event) -> String {
        match self.kind {
            Kind::File => format!("file hook {}", self.path.display()),
            Kind::Dir => format!("directory hook {}", self.program(event).display()),
        }
    }

    fn can_refuse(&self) -> bool {
        true
    }

    fn verdict_within(&self) -> Duration {
        self.timeout
    }

    /// Runs the hook once (no retries: a hook that fails is not run again). A non-zero
    /// exit (or a signal) is its refusal, as is a directory hook file that does not
    /// exist (rustus's `Hook file <event> not found.`; said once at startup, so only
    /// logged at DEBUG here).
    fn deliver(&self, d: &Delivery<'_>) -> Verdict {
        let event = d.event;
        let program = self.program(event);
        let args: &[&str] = match self.kind {
            Kind::File => &[event.name(), d.json],
            Kind::Dir => &[d.json],
        };
        let e = match run(
            &program,
            args,
            self.timeout,
            d.tag,
            &self.running,
            d.answers,
        ) {
            Ok(stdout) => return d.passed(Some(stdout)),
            Err(e) => e,
        };
        let why = e.to_string();
        match e {
            ExecError::NotFound if self.kind == Kind::Dir => Verdict::Refuse {
                answer: HookError::MissingFile(event.name()),
                why: "not found".to_owned(),
                quiet: true,
            },
            ExecError::Status(_) => Verdict::Refuse {
                answer: HookError::Exit,
                why,
                quiet: false,
            },
            ExecError::NotFound | ExecError::Spawn(_) | ExecError::Wait(_) => Verdict::Fail {
                answer: HookError::Spawn,
                why,
                quiet: false,
            },
            ExecError::Timeout(_) => Verdict::Fail {
                answer: HookError::Timeout(event.name()),
                why,
                quiet: false,
            },
        }
    }

    /// Kills the hooks still running (the workers have stopped or the grace period is
    /// over).
    fn shutdown(&self, _deadline: Instant) {
        let killed = self.running.kill_all();
        if killed > 0 {
            crate::warn!(
                "hooks: {} still running at the end of the grace period: {killed} \
                 process(es) killed",
                self.describe()
            );
        }
    }
}

/// A bare file name (`hook.sh`) means the file in the working directory, as the startup
/// check looks for it, not a `$PATH` lookup.
fn program_path(path: &Path) -> PathBuf {
    if path.is_relative() && path.components().count() == 1 {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}

/// Why `path` cannot be executed, if it cannot.
fn not_runnable(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("not found".to_owned()),
        Err(e) => Some(e.to_string()),
        Ok(m) if !m.is_file() => Some("not a regular file".to_owned()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some("not executable".to_owned()),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_hook_file_names_are_in_the_working_directory() {
        assert_eq!(program_path(Path::new("hook.sh")), Path::new("./hook.sh"));
        assert_eq!(program_path(Path::new("a/hook")), Path::new("a/hook"));
        assert_eq!(program_path(Path::new("/bin/true")), Path::new("/bin/true"));
    }

    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tusring-exec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn exit_codes_args_and_timeout() {
        let d = tmp("codes");
        let running = Running::default();
        let t = Duration::from_secs(5);
        let out = d.join("args");
        let ok = script(
            &d,
            "ok",
            &format!("printf '%s\\n' \"$@\" > {}", out.display()),
        );
        run(&ok, &["pre-create", "{\"a\": 1}"], t, "x", &running, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "pre-create\n{\"a\": 1}\n"
        );
        let bad = script(&d, "bad", "echo nope >&2; exit 3");
        match run(&bad, &[], t, "x", &running, false) {
            Err(ExecError::Status(st)) => assert_eq!(st.code(), Some(3)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(&d.join("missing"), &[], t, "x", &running, false),
            Err(ExecError::NotFound)
        ));
        let noexec = d.join("noexec");
        std::fs::write(&noexec, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            run(&noexec, &[], t, "x", &running, false),
            Err(ExecError::Spawn(_))
        ));
        // A hook that sleeps, with a child of its own holding the pipes: killed on time.
        let slow = script(&d, "slow", "sleep 30 & sleep 30");
        let started = Instant::now();
        let r = run(&slow, &[], Duration::from_millis(300), "x", &running, false);
        assert!(matches!(r, Err(ExecError::Timeout(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(running.kill_all(), 0);
        // Exits at once while a background child keeps the pipes open: not waited for.
        let bg = script(&d, "bg", "sleep 5 & exit 0");
        let started = Instant::now();
        run(&bg, &[], t, "x", &running, false).unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Whether `pid` is a child of this process that has not been reaped (running, or a
    /// zombie): its ID, and so its process group's, cannot have been given to another.
    fn unreaped(pid: i32) -> bool {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid(2).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is a live, writable siginfo_t; WNOWAIT leaves the child as it is.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        r == 0
    }

    /// `kill_all` signals only process groups whose leader (the hook) has not been
    /// reaped: an ID the kernel may have given to another process since is never in the
    /// set. A checker looks at the set, under the lock `kill_all` takes, while hooks that
    /// exit at once run on four threads.
    #[test]
    fn running_never_holds_a_reaped_hook() {
        let d = tmp("reaped");
        let running = Running::default();
        let quick = script(&d, "quick", "exit 0");
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (checks, stale) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    running.each(|pgid| {
                        checks.fetch_add(1, Ordering::Relaxed);
                        if !unreaped(pgid) {
                            stale.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
            let hooks: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..150 {
                            run(&quick, &[], Duration::from_secs(10), "x", &running, false)
                                .unwrap();
                        }
                    })
                })
                .collect();
            for h in hooks {
                h.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        let (checks, stale) = (checks.into_inner(), stale.into_inner());
        assert!(checks > 0, "the checker never saw a running hook");
        assert_eq!(
            stale, 0,
            "{stale} of {checks} checks found a reaped hook's group"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_flood_of_output_does_not_block() {
        let d = tmp("flood");
        let running = Running::default();
        // Megabytes on each pipe, far beyond a pipe's buffer: short lines on stdout, one
        // endless line on stderr.
        let flood = script(
            &d,
            "flood",
            "yes . | head -n 1000000; head -c 8000000 /dev/zero >&2; exit 0",
        );
        let started = Instant::now();
        run(
            &flood,
            &[],
            Duration::from_secs(20),
            "flood",
            &running,
            false,
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        // Kept as an answer: all of it is read, one byte more than an answer may have is
        // kept.
        let kept = run(
            &flood,
            &[],
            Duration::from_secs(20),
            "flood",
            &running,
            true,
        )
        .unwrap();
        assert_eq!(kept.len(), MAX_HOOK_ANSWER_BYTES + 1);
        assert!(kept.starts_with(b".\n.\n"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stdout_is_kept_only_when_asked_and_only_on_success() {
        let d = tmp("keep");
        let running = Running::default();
        let t = Duration::from_secs(10);
        let ok = script(&d, "ok", "printf '{\"a\":1}'; echo to-stderr >&2; exit 0");
        assert_eq!(run(&ok, &[], t, "x", &running, true).unwrap(), b"{\"a\":1}");
        assert!(run(&ok, &[], t, "x", &running, false).unwrap().is_empty());
        let bad = script(&d, "bad", "echo '{}'; exit 3");
        assert!(matches!(
            run(&bad, &[], t, "x", &running, true),
            Err(ExecError::Status(_))
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
