//! A core thread: its io_uring runtime, its heartbeat, the accept loop, and the drain at
//! shutdown. Each accepted connection is served by [`super::conn::serve`] in a task of
//! the core's runtime.

use super::core::{millis_since_epoch, open_connections, Core, CORE_BEATS};
use super::{Phase, Shared};
use crate::net::shutdown_fd;
use std::net::TcpListener as StdListener;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_uring::net::TcpListener;

/// How often a draining core checks whether its connections have finished.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How often each core bumps its heartbeat counter (the systemd watchdog reads it).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(250);

/// The answer to a connection past `--max-connections`; it is then closed.
pub const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 37\r\n\r\nToo many connections; retry shortly.\n";

/// How long a refused connection is read from (and discarded) after its 503, so the
/// answer is not lost to a reset.
const REFUSE_LINGER: Duration = Duration::from_millis(200);

/// The body of a core thread: sets up the ring and serves until shutdown. `beat` is
/// this core's heartbeat counter, read by the main thread for the systemd watchdog.
pub fn run_thread(
    index: usize,
    shared: Arc<Shared>,
    listener: StdListener,
    phase: watch::Receiver<Phase>,
    ready: mpsc::Sender<Result<(), String>>,
    beat: Arc<AtomicU64>,
) {
    if shared.config.pin_cores {
        pin_to_cpu(index);
    }
    let mut builder = tokio_uring::builder();
    builder.entries(shared.config.uring_entries);
    let rt = match tokio_uring::Runtime::new(&builder) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(io_uring_failure(&e)));
            return;
        }
    };
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener);
        let core = Rc::new(Core::new(shared, index));
        // The first beat is stored before the core reports ready, so `/ready` never sees
        // a core that is up but whose heartbeat task has not run yet.
        if let Some(b) = CORE_BEATS.get(index) {
            b.store(millis_since_epoch(), Ordering::Relaxed);
        }
        tokio_uring::spawn(heartbeat(beat, index));
        let _ = ready.send(Ok(()));
        crate::debug!("core {index} up");
        serve(core, listener, phase).await;
        if let Some(b) = CORE_BEATS.get(index) {
            b.store(0, Ordering::Relaxed);
        }
        crate::debug!("core {index} stopped");
    });
}

/// Bumps `beat` every [`HEARTBEAT_PERIOD`] for as long as the core's runtime runs. A core
/// stuck in a busy loop or a blocking call stops bumping it, and the main thread then
/// withholds the systemd watchdog ping (`WATCHDOG=1`), so systemd restarts the daemon.
async fn heartbeat(beat: Arc<AtomicU64>, index: usize) {
    loop {
        beat.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = CORE_BEATS.get(index) {
            b.store(millis_since_epoch(), Ordering::Relaxed);
        }
        tokio::time::sleep(HEARTBEAT_PERIOD).await;
    }
}

/// Pins the calling thread to the `index`-th CPU (modulo their count) of its affinity
/// mask (`--pin-cores`). A failure is logged; the thread then runs unpinned.
fn pin_to_cpu(index: usize) {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes; pid 0 is this thread.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        crate::warn!(
            "core {index}: cannot read the CPU affinity mask ({}); not pinned",
            std::io::Error::last_os_error()
        );
        return;
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the size of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    if cpus.is_empty() {
        return;
    }
    let cpu = cpus[index % cpus.len()];
    // SAFETY: as above; `one` is a valid, zeroed cpu_set_t.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: `one` is a valid cpu_set_t of `size` bytes; pid 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, size, &one) } != 0 {
        crate::warn!(
            "core {index}: cannot pin to CPU {cpu} ({}); not pinned",
            std::io::Error::last_os_error()
        );
    } else {
        crate::debug!("core {index} pinned to CPU {cpu}");
    }
}

/// Answers a connection past `--max-connections` with [`OVERLOADED`] and closes it,
/// without registering it or reading a request: the answer is written, the socket
/// half-closed, and what the client sends is discarded for [`REFUSE_LINGER`] at most.
async fn refuse(stream: tokio_uring::net::TcpStream) {
    let (res, _) = stream.write_all(OVERLOADED).await;
    if res.is_err() {
        return;
    }
    let fd = stream.as_raw_fd();
    shutdown_fd(fd, libc::SHUT_WR);
    let read = stream.read(vec![0u8; 1024]);
    tokio::pin!(read);
    tokio::select! {
        _ = &mut read => {}
        _ = tokio::time::sleep(REFUSE_LINGER) => {
            // A dropped read would stay armed: shut the socket so it completes.
            shutdown_fd(fd, libc::SHUT_RDWR);
            let _ = read.await;
        }
    }
}

/// Explains why io_uring could not be set up.
fn io_uring_failure(e: &std::io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    let cause = match (e.raw_os_error(), sysctl.as_deref()) {
        (_, Some("1")) | (_, Some("2")) => format!(
            "io_uring is disabled by the sysctl kernel.io_uring_disabled={} (set it to 0, or add this user to kernel.io_uring_group when it is 1)",
            sysctl.as_deref().unwrap_or("?")
        ),
        (Some(libc::ENOSYS), _) => "the kernel has no io_uring (Linux 5.11 or later is needed), or a seccomp filter hides it".to_string(),
        (Some(libc::EPERM), _) => "io_uring_setup was refused: a seccomp filter (container runtimes block io_uring by default) or a security module forbids it".to_string(),
        (Some(libc::ENOMEM), _) => "not enough locked memory for the ring (raise RLIMIT_MEMLOCK / LimitMEMLOCK=)".to_string(),
        _ => "io_uring_setup failed".to_string(),
    };
    format!("cannot set up io_uring: {cause} ({e})")
}

async fn serve(core: Rc<Core>, listener: TcpListener, mut phase: watch::Receiver<Phase>) {
    let lfd = listener.as_raw_fd();
    loop {
        let accept = listener.accept();
        tokio::pin!(accept);
        let res = tokio::select! {
            r = &mut accept => r,
            _ = phase.changed() => {
                core.phase.set(*phase.borrow());
                if super::listen::listener_is_inherited() {
                    // systemd's socket (socket activation): shutting it down would stop
                    // it listening for systemd and the next start too. Drop the accept
                    // instead; the ring's teardown cancels it when the core ends.
                    break;
                }
                // A dropped accept would stay armed in the ring: shut the listener down
                // so the pending accept fails, and await it.
                shutdown_fd(lfd, libc::SHUT_RDWR);
                accept.await
            }
        };
        match res {
            Ok((stream, peer)) => {
                if core.draining() {
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                if open_connections() >= core.shared.config.max_connections {
                    crate::metrics::CONNECTIONS_REFUSED.fetch_add(1, Ordering::Relaxed);
                    tokio_uring::spawn(refuse(stream));
                    continue;
                }
                tokio_uring::spawn(super::conn::serve(core.clone(), stream, peer));
            }
            Err(e) => {
                // The cores share one listening socket: the first core to see the
                // shutdown shuts it down, and the others' accepts fail before they may
                // have seen the phase change themselves.
                if *phase.borrow() != Phase::Running {
                    core.phase.set(*phase.borrow());
                }
                if core.draining() {
                    break;
                }
                crate::warn!("accept failed: {e}");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    drain(&core, &mut phase).await;
}

/// Lets in-flight requests finish within the grace period, then cuts what is left.
async fn drain(core: &Rc<Core>, phase: &mut watch::Receiver<Phase>) {
    let grace = core.shared.config.shutdown_timeout;
    core.shutdown_conns(true, libc::SHUT_RDWR);
    let deadline = tokio::time::Instant::now() + grace;
    while core.connections() > 0 && tokio::time::Instant::now() < deadline {
        if *phase.borrow() == Phase::Force {
            break;
        }
        // Connections that just finished a request close themselves (they see the
        // phase); idle ones were shut down above.
        core.shutdown_conns(true, libc::SHUT_RDWR);
        tokio::time::sleep(DRAIN_POLL).await;
        if phase.has_changed().unwrap_or(false) {
            core.phase.set(*phase.borrow_and_update());
        }
    }
    if core.connections() > 0 {
        crate::warn!(
            "{} connection(s) still busy after the grace period: cutting them (received bytes are kept)",
            core.connections()
        );
        core.shutdown_conns(false, libc::SHUT_RD);
        let deadline = tokio::time::Instant::now() + super::FORCE_CLOSE_WAIT;
        while core.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        core.shutdown_conns(false, libc::SHUT_RDWR);
        let deadline = tokio::time::Instant::now() + super::FORCE_CLOSE_WAIT;
        while core.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}
