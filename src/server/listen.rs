//! Listening sockets and signal masks: the few raw syscalls of the daemon's startup.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Pending connections each listener's accept queue holds (`listen(2)` backlog), unless
/// `--backlog` says otherwise.
pub const LISTEN_BACKLOG: i32 = 1024;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// How long a starting daemon waits for its address to be released by listeners that no
/// running process owns any more: those of a daemon killed a moment ago, which the kernel
/// closes only when the dead process's io_uring has been torn down (measured here: 10 to
/// 40 ms after the process was reaped). Past it the daemon exits 1.
pub const ORPHAN_LISTENER_WAIT: Duration = Duration::from_secs(5);

/// How often the bind is tried again while the address is held by such a listener.
const ORPHAN_RETRY: Duration = Duration::from_millis(20);

/// How often, while waiting, the holders of the address are looked up again (reading
/// `/proc/net/tcp` and every process's descriptors costs tens of milliseconds on a busy
/// machine, so not at every retry).
const HOLDER_RECHECK: Duration = Duration::from_millis(250);

/// Binds the one listening socket of this daemon on `addr` and returns it plus `count - 1`
/// duplicates, one per core: the cores share its accept queue. The socket is bound without
/// `SO_REUSEPORT`, so the kernel refuses the address to every other socket while it
/// listens (no second daemon can join, and none can be joined). When the address is
/// taken, the holder decides: a running process (not one that is exiting) is an error at
/// once, naming it; a listener that no running process owns is waited for, up to
/// [`ORPHAN_LISTENER_WAIT`], and logged. When `addr` has port 0 the kernel picks the port.
/// `backlog` is the `listen(2)` backlog (`--backlog`).
pub fn listen_exclusive(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> Result<Vec<TcpListener>, String> {
    let started = Instant::now();
    let mut next_check = started;
    let mut waiting = false;
    loop {
        let err = match bind_one(addr, backlog) {
            Ok(l) => {
                if waiting {
                    crate::info!(
                        "{addr} was released after {} ms",
                        started.elapsed().as_millis()
                    );
                }
                return with_duplicates(l, count)
                    .map_err(|e| format!("cannot listen on {addr}: {e}"));
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => e,
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        };
        let now = Instant::now();
        if now >= next_check {
            if let Some((pid, name)) = running_holder(addr) {
                return Err(format!(
                    "cannot listen on {addr}: it is already served by process {pid} ({name}); one daemon per address"
                ));
            }
            next_check = now + HOLDER_RECHECK;
        }
        if now.duration_since(started) >= ORPHAN_LISTENER_WAIT {
            return Err(format!(
                "cannot listen on {addr}: {err}, and no running process this one can see holds it; it was not released within {} s",
                ORPHAN_LISTENER_WAIT.as_secs()
            ));
        }
        if !waiting {
            crate::warn!(
                "{addr} is still held by a listener that no running process owns (a daemon that was just killed: the kernel closes its sockets once its io_uring is torn down); waiting up to {} s",
                ORPHAN_LISTENER_WAIT.as_secs()
            );
            waiting = true;
        }
        std::thread::sleep(ORPHAN_RETRY);
    }
}

/// `first` and `count - 1` duplicates of it (each close-on-exec), one per core.
fn with_duplicates(first: TcpListener, count: usize) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(count.max(1));
    for _ in 1..count.max(1) {
        out.push(first.try_clone()?);
    }
    out.insert(0, first);
    Ok(out)
}

/// A running process that holds a listening TCP socket whose address conflicts with
/// `addr`: its pid and name. `None` when every such listener is held by no process this
/// one can see, or only by processes that are exiting (killed, not yet gone).
fn running_holder(addr: SocketAddr) -> Option<(u32, String)> {
    let mut inodes = Vec::new();
    for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        inodes.extend(
            proc_net_listeners(&text, v6)
                .into_iter()
                .filter(|(a, _)| conflicts(addr, *a))
                .map(|(_, inode)| inode),
        );
    }
    if inodes.is_empty() {
        return None;
    }
    let own = std::process::id();
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own || !holds_socket(pid, &inodes) {
            continue;
        }
        // A process that has just been sent SIGKILL may not show it yet for an instant:
        // look twice before calling it running.
        if !process_exiting(pid) {
            std::thread::sleep(ORPHAN_RETRY);
            if !process_exiting(pid) && holds_socket(pid, &inodes) {
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Some((pid, name));
            }
        }
    }
    None
}

/// Whether process `pid` has one of the socket `inodes` open (false when its descriptors
/// cannot be read: another user's process, or one hidden by `ProtectProc=`).
fn holds_socket(pid: u32, inodes: &[u64]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| socket_inode(target.to_str()?))
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

/// The inode of a `/proc/PID/fd` link target `socket:[N]`.
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether process `pid` is gone or on its way out (see [`exiting`]).
fn process_exiting(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
    match (stat, status) {
        (Ok(stat), Ok(status)) => exiting(&stat, &status),
        _ => true,
    }
}

/// `PF_EXITING` in the `flags` field of `/proc/PID/stat`: the process is in `exit(2)`.
const PF_EXITING: u64 = 0x4;

/// Whether a process, from its `/proc/PID/stat` and `/proc/PID/status`, is exiting: a
/// zombie or dead, in `exit(2)` (`PF_EXITING`), or with SIGKILL pending (sent, not yet
/// acted on).
fn exiting(stat: &str, status: &str) -> bool {
    // "pid (comm) state ppid pgrp session tty tpgid flags ...": comm may hold spaces
    // and parentheses, so the fields are counted from the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&("Z" | "X" | "x"))) {
        return true;
    }
    if fields
        .get(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0)
    {
        return true;
    }
    let sigkill = 1u64 << (libc::SIGKILL - 1);
    status.lines().any(|line| {
        let Some((key, value)) = line.split_once(':') else {
            return false;
        };
        matches!(key, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(value.trim(), 16).is_ok_and(|set| set & sigkill != 0)
    })
}

/// The listening sockets in a `/proc/net/tcp` (or, with `v6`, `/proc/net/tcp6`) table:
/// local address and socket inode. Lines that do not parse are skipped.
fn proc_net_listeners(text: &str, v6: bool) -> Vec<(SocketAddr, u64)> {
    const TCP_LISTEN: &str = "0A";
    let mut out = Vec::new();
    // The table lists every TCP socket (tens of thousands of TIME_WAIT ones on a busy
    // machine): fields are taken lazily, and a line stops at its state unless it listens.
    // Fields: sl, local, remote, state, queues, timer, retransmits, uid, timeout, inode.
    for line in text.lines().skip(1) {
        let mut f = line.split_ascii_whitespace();
        let (Some(local), Some(TCP_LISTEN)) = (f.nth(1), f.nth(1)) else {
            continue;
        };
        let (Some(addr), Some(Ok(inode))) =
            (proc_net_addr(local, v6), f.nth(5).map(str::parse::<u64>))
        else {
            continue;
        };
        out.push((addr, inode));
    }
    out
}

/// A `/proc/net/tcp{,6}` address, `HEXADDR:HEXPORT`. The kernel prints the address as
/// 32-bit words in the machine's byte order (one for IPv4, four for IPv6), the port in
/// plain hex.
fn proc_net_addr(field: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = if v6 { 4 } else { 1 };
    if ip.len() != 8 * words {
        return None;
    }
    let mut bytes = Vec::with_capacity(4 * words);
    for i in 0..words {
        let word = u32::from_str_radix(ip.get(8 * i..8 * i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip: std::net::IpAddr = if v6 {
        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into()
    } else {
        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).into()
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether a listener on `theirs` keeps a socket from listening on `ours`: the same port,
/// and the same address or a wildcard on either side. An IPv6 wildcard listener may take
/// IPv4 too (dual stack, unless `IPV6_V6ONLY`, which the table does not show: it is
/// taken to conflict); IPv4-mapped IPv6 addresses compare as IPv4.
fn conflicts(ours: SocketAddr, theirs: SocketAddr) -> bool {
    use std::net::IpAddr;
    fn canonical(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        }
    }
    if ours.port() != theirs.port() {
        return false;
    }
    let (a, b) = (canonical(ours.ip()), canonical(theirs.ip()));
    if a == b {
        return true;
    }
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.is_unspecified() || b.is_unspecified(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.is_unspecified() || b.is_unspecified(),
        (IpAddr::V4(_), IpAddr::V6(b)) => b.is_unspecified(),
        (IpAddr::V6(a), IpAddr::V4(_)) => a.is_unspecified(),
    }
}

/// One listening socket on `addr`, with `SO_REUSEADDR` (a restart may bind while the old
/// connections on the port linger in TIME_WAIT) and without `SO_REUSEPORT`: while it
/// listens, the kernel refuses the address to every other socket (`EADDRINUSE`).
fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: `one` lives across the call and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for this family.
    cvt(unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    // SAFETY: listen(2) on a socket we own.
    cvt(unsafe { libc::listen(fd, backlog.max(1)) })?;
    Ok(TcpListener::from(owned))
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                storage,
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                storage,
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// Set once the cores listen on a socket inherited from systemd rather than their own.
static INHERITED: AtomicBool = AtomicBool::new(false);

/// Whether the listeners are systemd's socket (socket activation). Such a socket must not
/// be `shutdown(2)` at the end: systemd keeps listening on it for the next start.
pub fn listener_is_inherited() -> bool {
    INHERITED.load(Ordering::Relaxed)
}

/// The first descriptor systemd passes to a socket-activated service (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Socket activation: when systemd passed listening sockets to this process
/// (`$LISTEN_PID` is our pid and `$LISTEN_FDS` >= 1), the first of them (fd 3) and
/// `count - 1` duplicates of it, one per core; `None` when nothing was passed. Every
/// passed descriptor is made close-on-exec, so hook processes do not inherit them.
/// The cores share the one socket (and its accept queue, sized by the `.socket` unit's
/// `Backlog=`) instead of an `SO_REUSEPORT` group.
pub fn inherited_listeners(count: usize) -> Option<io::Result<Vec<TcpListener>>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let n = passed_fds(pid.as_deref(), fds.as_deref(), std::process::id())?;
    for fd in LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(n) {
        // SAFETY: fcntl on descriptor numbers systemd said it passed; at worst EBADF.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    if n > 1 {
        crate::warn!("systemd passed {n} sockets (LISTEN_FDS); only the first (fd 3) is used");
    }
    let adopted = adopt_listener(LISTEN_FDS_START, count);
    if adopted.is_ok() {
        INHERITED.store(true, Ordering::Relaxed);
    }
    Some(adopted)
}

/// The number of sockets passed to `own_pid` according to `$LISTEN_PID`/`$LISTEN_FDS`.
fn passed_fds(pid: Option<&str>, fds: Option<&str>, own_pid: u32) -> Option<RawFd> {
    if pid?.trim().parse::<u32>().ok()? != own_pid {
        return None;
    }
    match fds?.trim().parse::<RawFd>().ok()? {
        n if n >= 1 => Some(n),
        _ => None,
    }
}

fn getsockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes for the duration of the call.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

/// Takes ownership of `fd`, checks that it is a listening TCP socket, and returns it
/// plus `count - 1` duplicates (each close-on-exec).
fn adopt_listener(fd: RawFd, count: usize) -> io::Result<Vec<TcpListener>> {
    let not_tcp = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} passed by systemd is not a listening TCP socket (the .socket unit needs ListenStream=)"),
        )
    };
    if getsockopt_int(fd, libc::SO_TYPE)? != libc::SOCK_STREAM
        || getsockopt_int(fd, libc::SO_ACCEPTCONN)? != 1
    {
        return Err(not_tcp());
    }
    // SAFETY: systemd handed this descriptor to this process for it to own; it was
    // checked above to be an open socket, and nothing else in the process uses it.
    let first = TcpListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if !matches!(first.local_addr(), Ok(a) if a.is_ipv4() || a.is_ipv6()) {
        return Err(not_tcp());
    }
    with_duplicates(first, count)
}

/// `shutdown(2)` on a raw socket. Used to end reads that io_uring would otherwise keep
/// pending (dropping a tokio-uring read does not cancel it): after SHUT_RD a pending
/// recv completes with 0, and a pending accept on a listener fails.
pub fn shutdown_fd(fd: std::os::fd::RawFd, how: libc::c_int) {
    // SAFETY: shutdown(2) on a descriptor number; at worst it fails with EBADF/ENOTCONN.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// The signals that stop the daemon.
pub struct Signals(libc::sigset_t);

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (threads spawned later inherit
/// the mask), so they are only ever taken by [`wait_signal`]. SIGHUP is taken only to be
/// ignored (logs go to stderr: there is no log file to reopen), so a stray one does not
/// kill the daemon.
pub fn block_shutdown_signals() -> Signals {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    Signals(set)
}

/// Waits up to `timeout` for one of the blocked signals; returns its name.
pub fn wait_signal(signals: &Signals, timeout: Duration) -> Option<&'static str> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the set and timespec are valid for the call; siginfo may be null.
    let sig = unsafe { libc::sigtimedwait(&signals.0, std::ptr::null_mut(), &ts) };
    match sig {
        libc::SIGTERM => Some("SIGTERM"),
        libc::SIGINT => Some("SIGINT"),
        libc::SIGHUP => Some("SIGHUP"),
        _ => None,
    }
}

/// The local address of a connected socket (for `Location` when a request has no Host).
pub fn local_addr(fd: std::os::fd::RawFd) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; getsockname writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid for writes for the duration of the call.
    let r = unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn listen_variables() {
        assert_eq!(passed_fds(None, None, 7), None);
        assert_eq!(passed_fds(Some("7"), Some("1"), 7), Some(1));
        assert_eq!(passed_fds(Some("7"), Some("2"), 7), Some(2));
        assert_eq!(passed_fds(Some("8"), Some("1"), 7), None);
        assert_eq!(passed_fds(Some("7"), Some("0"), 7), None);
        assert_eq!(passed_fds(Some("7"), None, 7), None);
        assert_eq!(passed_fds(Some("x"), Some("1"), 7), None);
    }

    #[test]
    fn adopts_a_listener_and_duplicates_it_per_core() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let fd = l.into_raw_fd();
        let ls = adopt_listener(fd, 3).expect("adopt");
        assert_eq!(ls.len(), 3);
        for l in &ls {
            assert_eq!(l.local_addr().unwrap(), addr);
        }
        let _c = std::net::TcpStream::connect(addr).unwrap();
        let (_, peer) = ls[2].accept().expect("accept through a duplicate");
        assert!(peer.ip().is_loopback());
    }

    #[test]
    fn proc_net_tables_parse() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 20 4 30 10 -1\n\
   3: garbage\n";
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51 1 0000000000000000 100 0 0 10 0\n\
   1: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52 1 0000000000000000 100 0 0 10 0\n\
   2: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 53 1 0000000000000000 100 0 0 10 0\n";
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(
                proc_net_listeners(v4, false),
                vec![(a("127.0.0.1:8080"), 4242), (a("0.0.0.0:80"), 17)]
            );
            assert_eq!(
                proc_net_listeners(v6, true),
                vec![
                    (a("[::]:8080"), 51),
                    (a("[::ffff:127.0.0.1]:8081"), 52),
                    (a("[::1]:8082"), 53)
                ]
            );
        }
        assert_eq!(proc_net_addr("0100007F", false), None);
        assert_eq!(proc_net_addr("0100007:1F90", false), None);
        assert_eq!(proc_net_addr("0100007F:1F90", true), None);
        assert_eq!(proc_net_addr("XX00007F:1F90", false), None);
    }

    #[test]
    fn finds_a_real_listener_in_proc_net_tcp() {
        use std::os::fd::AsRawFd;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // SAFETY: `stat` is plain old data; all-zero is a valid value.
        let mut st: libc::stat = unsafe { mem::zeroed() };
        // SAFETY: fstat on a descriptor we own, into a buffer that lives across the call.
        assert_eq!(unsafe { libc::fstat(l.as_raw_fd(), &mut st) }, 0);
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let found = proc_net_listeners(&table, false);
        assert!(
            found.contains(&(addr, st.st_ino as u64)),
            "{addr} inode {} not in {found:?}",
            st.st_ino
        );
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        assert_eq!(socket_inode(link.to_str().unwrap()), Some(st.st_ino as u64));
        assert!(holds_socket(std::process::id(), &[st.st_ino as u64]));
        assert!(!process_exiting(std::process::id()));
    }

    #[test]
    fn conflicting_addresses() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let cases = [
            ("127.0.0.1:80", "127.0.0.1:80", true),
            ("127.0.0.1:80", "127.0.0.1:81", false),
            ("127.0.0.1:80", "0.0.0.0:80", true),
            ("0.0.0.0:80", "10.0.0.1:80", true),
            ("127.0.0.1:80", "10.0.0.1:80", false),
            ("127.0.0.1:80", "[::]:80", true),
            ("127.0.0.1:80", "[::1]:80", false),
            ("127.0.0.1:80", "[::ffff:127.0.0.1]:80", true),
            ("127.0.0.1:80", "[::ffff:10.0.0.1]:80", false),
            ("[::1]:80", "[::1]:80", true),
            ("[::1]:80", "[::]:80", true),
            ("[::1]:80", "[::2]:80", false),
            ("[::1]:80", "0.0.0.0:80", false),
            ("[::]:80", "0.0.0.0:80", true),
            ("[::]:80", "127.0.0.1:80", true),
            ("[::]:80", "127.0.0.1:81", false),
        ];
        for (ours, theirs, want) in cases {
            assert_eq!(conflicts(a(ours), a(theirs)), want, "{ours} vs {theirs}");
        }
    }

    #[test]
    fn exiting_processes() {
        let quiet = "SigQ:\t0/1\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n";
        let killed = "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\n";
        let killed_thread = "SigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n";
        let termed = "SigPnd:\t0000000000000000\nShdPnd:\t0000000000004000\n";
        let running = "1234 (tusring) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3";
        let in_exit = "1234 (tusring) S 1 1234 1234 0 -1 4194564 100 0 0 0 5 3";
        let zombie = "1234 (tusring) Z 1 1234 1234 0 -1 4194560 100 0 0 0 5 3";
        let dead = "1234 (tusring) X 1 1234 1234 0 -1 4194560 100 0 0 0 5 3";
        let odd_name = "1234 (a) b (c) R 1 1234 1234 0 -1 4194560 100 0";
        let cases = [
            (running, quiet, false),
            (running, termed, false),
            (running, killed, true),
            (running, killed_thread, true),
            (in_exit, quiet, true),
            (zombie, quiet, true),
            (dead, quiet, true),
            (odd_name, quiet, false),
            ("garbage", quiet, false),
            (running, "", false),
        ];
        for (stat, status, want) in cases {
            assert_eq!(exiting(stat, status), want, "{stat} / {status:?}");
        }
    }

    #[test]
    fn refuses_a_socket_that_does_not_listen() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = s.into_raw_fd();
        assert!(adopt_listener(fd, 1).is_err());
        // SAFETY: adopt_listener refused before taking ownership; the fd is still ours.
        unsafe {
            libc::close(fd);
        }
    }
}
