//! Listening sockets and signal masks: the few raw syscalls of the daemon's startup.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// Binds `count` listeners to `addr`, all in one `SO_REUSEPORT` group. When `addr` has
/// port 0, the first bind picks the port and the others join it. `backlog` is each
/// listener's `listen(2)` backlog (`--backlog`).
pub fn bind_all(addr: SocketAddr, count: usize, backlog: i32) -> io::Result<Vec<TcpListener>> {
    let mut out: Vec<TcpListener> = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let l = bind_one(addr, backlog)?;
        if addr.port() == 0 {
            addr = l.local_addr()?;
        }
        out.push(l);
    }
    Ok(out)
}

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
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: `one` lives across the call and its size is passed.
        cvt(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
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
    let mut out = Vec::with_capacity(count.max(1));
    for _ in 1..count.max(1) {
        out.push(first.try_clone()?);
    }
    out.insert(0, first);
    Ok(out)
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
