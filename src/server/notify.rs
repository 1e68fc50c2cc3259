//! The daemon's side of systemd's notification protocol (`sd_notify(3)`), hand-rolled.
//!
//! systemd passes `$NOTIFY_SOCKET`, the address of a datagram socket: a filesystem path,
//! or an abstract address written with a leading `@`. Each notification is one datagram
//! of newline-separated `KEY=VALUE` lines (`READY=1`, `STATUS=…`, `STOPPING=1`,
//! `WATCHDOG=1`). When the variable is unset (not started by systemd, or a unit that is
//! not `Type=notify`), every method is a no-op.
//!
//! Sending never blocks: the socket is nonblocking, and a datagram that cannot be sent
//! (no receiver, a full queue) is dropped. The first failure is logged at debug level;
//! later ones are silent, so a missing receiver cannot flood the log.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variable that names the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A connection to systemd's notification socket, or nothing (every call a no-op).
#[derive(Debug)]
pub struct Notifier {
    /// The unbound, nonblocking sending socket and where to send; `None` when there is
    /// no `$NOTIFY_SOCKET` (or it could not be used).
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Set after the first failed send (or a bad `$NOTIFY_SOCKET`) has been logged.
    failed: AtomicBool,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`; a no-op one when the variable is unset or empty.
    /// A value that cannot be used (an address too long, no socket) is logged once at
    /// debug level and gives a no-op notifier: systemd then times the start out, which
    /// names the problem better than refusing to start would.
    pub fn from_env() -> Notifier {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(v) if !v.is_empty() => Notifier::for_address(&v).unwrap_or_else(|e| {
                crate::debug!("sd_notify: cannot use NOTIFY_SOCKET={v:?}: {e}");
                Notifier::disabled()
            }),
            _ => Notifier::disabled(),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            failed: AtomicBool::new(false),
        }
    }

    /// A notifier for one `$NOTIFY_SOCKET` value: a path, or `@name` for an abstract
    /// address.
    pub fn for_address(value: &OsStr) -> io::Result<Notifier> {
        let bytes = value.as_bytes();
        let addr = match bytes.split_first() {
            Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(value)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an @abstract address",
                ))
            }
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Notifier {
            target: Some((sock, addr)),
            failed: AtomicBool::new(false),
        })
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one datagram of `KEY=VALUE` lines. Never blocks; failures are logged once.
    pub fn send(&self, message: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
            if !self.failed.swap(true, Ordering::Relaxed) {
                crate::debug!("sd_notify: cannot send to NOTIFY_SOCKET: {e} (further failures are not logged)");
            }
        }
    }

    /// `READY=1` with a `STATUS=` line: startup is complete.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=`: a one-line free-form status shown by `systemctl status`.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", one_line(text)));
    }

    /// `STOPPING=1` with a `STATUS=` line: the shutdown has begun.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the daemon is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// A status text cannot contain a newline (it would start a new `KEY=VALUE` line).
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\n') {
        text.replace('\n', " ").into()
    } else {
        text.into()
    }
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), from
/// `$WATCHDOG_USEC`; `None` when it is unset, zero or malformed, or when `$WATCHDOG_PID`
/// is set and names another process (the variables were inherited, not meant for us).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    match usec?.trim().parse::<u64>().ok()? {
        0 => None,
        n => Some(Duration::from_micros(n)),
    }
}

/// How often to ping within a watchdog interval: half of it, as sd_watchdog_enabled(3)
/// advises, so one late wakeup does not miss the deadline.
pub fn ping_period(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn receiver_at_path() -> (UnixDatagram, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "tusring-notify-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let sock = UnixDatagram::bind(&path).expect("bind receiver");
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (sock, path)
    }

    #[test]
    fn sends_to_a_path() {
        let (rx, path) = receiver_at_path();
        let n = Notifier::for_address(path.as_os_str()).expect("notifier");
        assert!(n.enabled());
        n.ready("serving on 127.0.0.1:1081, 2 cores");
        assert_eq!(
            recv(&rx),
            "READY=1\nSTATUS=serving on 127.0.0.1:1081, 2 cores"
        );
        n.status("a\nb");
        assert_eq!(recv(&rx), "STATUS=a b");
        n.watchdog();
        assert_eq!(recv(&rx), "WATCHDOG=1");
        n.stopping("draining");
        assert_eq!(recv(&rx), "STOPPING=1\nSTATUS=draining");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn sends_to_an_abstract_address() {
        let name = format!("tusring-notify-test-{}", uuid::Uuid::new_v4());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).expect("bind abstract receiver");
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::for_address(OsStr::new(&format!("@{name}"))).expect("notifier");
        n.watchdog();
        assert_eq!(recv(&rx), "WATCHDOG=1");
    }

    #[test]
    fn a_missing_receiver_neither_blocks_nor_panics() {
        let (rx, path) = receiver_at_path();
        let n = Notifier::for_address(path.as_os_str()).expect("notifier");
        drop(rx);
        let _ = std::fs::remove_file(&path);
        n.watchdog();
        assert!(n.failed.load(Ordering::Relaxed));
        n.watchdog();
    }

    #[test]
    fn a_full_receiver_does_not_block() {
        let (rx, path) = receiver_at_path();
        let n = Notifier::for_address(path.as_os_str()).expect("notifier");
        // Nobody reads: the receive queue fills and sends fail with EAGAIN at once.
        let start = std::time::Instant::now();
        for _ in 0..10_000 {
            n.status("x".repeat(1000).as_str());
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(n.failed.load(Ordering::Relaxed));
        drop(rx);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn disabled_is_a_no_op() {
        let n = Notifier::disabled();
        assert!(!n.enabled());
        n.ready("x");
        n.stopping("x");
        n.watchdog();
        assert!(!n.failed.load(Ordering::Relaxed));
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(Notifier::for_address(OsStr::new("relative/path")).is_err());
        let long = format!("/{}", "a".repeat(200));
        assert!(Notifier::for_address(OsStr::new(&long)).is_err());
    }

    #[test]
    fn watchdog_variables() {
        assert_eq!(parse_watchdog(None, None, 7), None);
        assert_eq!(
            parse_watchdog(Some("200000"), None, 7),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("30000000"), Some("x"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("-1"), None, 7), None);
        assert_eq!(parse_watchdog(Some(""), None, 7), None);
        assert_eq!(
            ping_period(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
    }
}
