//! One core: a tokio-uring runtime, its listener, its connections and its buffers.
//!
//! Everything in a [`Core`] belongs to one thread (`Rc`, `Cell`, `RefCell`): no locks
//! on the request path. The only state shared with other cores is the read-only
//! [`Shared`], the upload lock table and the relaxed atomic counters of
//! [`crate::metrics`] and of this module (open connections, heartbeats).

use super::listen::shutdown_fd;
use super::{Phase, Shared};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_uring::net::TcpListener;

/// Body buffers an upload holds at once on the buffered path: one being filled from the
/// socket while the other is written to the file. So a receiving connection holds at
/// most `BODY_BUFS_PER_UPLOAD * --body-buffer-size` of body buffers (256 KiB each by
/// default: measured here, 64 KiB buffers write about 1.1 GB/s, 256 KiB 1.9 GB/s, 1 MiB
/// 3 GB/s per core); an idle or splicing one holds none.
pub const BODY_BUFS_PER_UPLOAD: usize = 2;

/// Free body buffers a core keeps for reuse; more are freed.
pub const POOLED_BODY_BUFS: usize = 64;

/// How often a draining core checks whether its connections have finished.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How often each core bumps its heartbeat counter (the systemd watchdog reads it).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(250);

/// Open connections in the whole process, for the main thread's `STATUS=` line.
/// Invariant: incremented by [`Core::register`] and decremented when its [`ConnGuard`]
/// drops, so it equals the number of live guards (the sum of every core's
/// [`Core::connections`]). Relaxed: it is a statistic, read without ordering.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Open connections in the whole process (every core's registered connections).
pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

/// When each core's heartbeat last ran, in milliseconds since [`epoch`] plus one (0: the
/// core has not started, or has stopped serving). Read by `/ready`.
static CORE_BEATS: [AtomicU64; crate::limits::MAX_WORKERS] =
    [const { AtomicU64::new(0) }; crate::limits::MAX_WORKERS];

/// A process-wide monotonic origin for [`CORE_BEATS`].
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

fn millis_since_epoch() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Whether cores `0..workers` all serve: each has started and its heartbeat ran within
/// [`super::CORE_STALL`]. The error names the first core that does not.
pub fn cores_alive(workers: usize) -> Result<(), String> {
    let now = millis_since_epoch();
    let limit = super::CORE_STALL.as_millis() as u64;
    for (i, beat) in CORE_BEATS.iter().take(workers).enumerate() {
        match beat.load(Ordering::Relaxed) {
            0 => return Err(format!("core {i} is not serving")),
            b if now.saturating_sub(b) > limit => {
                return Err(format!(
                    "core {i} is stuck: no heartbeat for {} ms",
                    now.saturating_sub(b)
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The answer to a connection past `--max-connections`; it is then closed.
pub const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 37\r\n\r\nToo many connections; retry shortly.\n";

/// How long a refused connection is read from (and discarded) after its 503, so the
/// answer is not lost to a reset.
const REFUSE_LINGER: Duration = Duration::from_millis(200);

/// A registered connection, as the core sees it for shutdown.
#[derive(Debug)]
struct ConnEntry {
    fd: RawFd,
    /// True while the connection waits for a new request (it can be closed at once).
    idle: Rc<Cell<bool>>,
}

/// Per-core state.
pub struct Core {
    /// This core's number (0-based).
    pub index: usize,
    /// Settings shared by every core.
    pub shared: Arc<Shared>,
    /// The current shutdown phase (`Phase::Running` while serving).
    pub phase: Cell<Phase>,
    /// Open connections by connection number.
    conns: RefCell<HashMap<u64, ConnEntry>>,
    next_conn: Cell<u64>,
    /// Free body buffers. Invariant: each has capacity `buf_bytes()` and length 0.
    buffers: RefCell<Vec<Vec<u8>>>,
    /// The `Date` header value and the second it was made for.
    date: RefCell<(i64, Vec<u8>)>,
    /// Bodies may be spliced: on unless disabled by configuration, and turned off for
    /// good on this core when the kernel or filesystem refuses a splice.
    splice: Cell<bool>,
}

/// A connection's registration; unregisters on drop.
pub struct ConnGuard {
    core: Rc<Core>,
    id: u64,
    /// Shared with the core: set while the connection waits for a request.
    pub idle: Rc<Cell<bool>>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.core.conns.borrow_mut().remove(&self.id);
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::core_connection(self.core.index, false);
    }
}

impl Core {
    fn new(shared: Arc<Shared>, index: usize) -> Core {
        Core {
            index,
            phase: Cell::new(Phase::Running),
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
            buffers: RefCell::new(Vec::new()),
            date: RefCell::new((i64::MIN, Vec::new())),
            splice: Cell::new(shared.splice),
            shared,
        }
    }

    /// Bytes of one body buffer (`--body-buffer-size`).
    pub fn buf_bytes(&self) -> usize {
        self.shared.config.body_buffer_size
    }

    /// Whether bodies may be spliced (zero-copy) on this core.
    pub fn splice_enabled(&self) -> bool {
        self.splice.get()
    }

    /// Turns splicing off on this core after the kernel or filesystem refused it.
    pub fn disable_splice(&self) {
        if self.splice.replace(false) {
            crate::warn!("splice is not available here; bodies use the buffered path");
        }
    }

    /// Whether the daemon is shutting down.
    pub fn draining(&self) -> bool {
        self.phase.get() != Phase::Running
    }

    /// Registers a connection so shutdown can reach its socket.
    pub fn register(self: &Rc<Self>, fd: RawFd) -> ConnGuard {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let idle = Rc::new(Cell::new(true));
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        crate::metrics::core_connection(self.index, true);
        self.conns.borrow_mut().insert(
            id,
            ConnEntry {
                fd,
                idle: idle.clone(),
            },
        );
        ConnGuard {
            core: self.clone(),
            id,
            idle,
        }
    }

    /// Open connections on this core.
    pub fn connections(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Takes a body buffer (capacity `buf_bytes()`, empty) from the pool.
    pub fn take_buffer(&self) -> Vec<u8> {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buf_bytes()))
    }

    /// Returns a body buffer to the pool.
    pub fn give_buffer(&self, mut buf: Vec<u8>) {
        let mut pool = self.buffers.borrow_mut();
        if buf.capacity() == self.buf_bytes() && pool.len() < POOLED_BODY_BUFS {
            buf.clear();
            pool.push(buf);
        }
    }

    /// The current `Date` header value (IMF-fixdate), made at most once a second.
    pub fn date(&self) -> std::cell::Ref<'_, [u8]> {
        let now = crate::time::now_unix();
        if self.date.borrow().0 != now {
            let mut d = self.date.borrow_mut();
            d.1.clear();
            crate::time::write_http_date(now, &mut d.1);
            d.0 = now;
        }
        std::cell::Ref::map(self.date.borrow(), |d| d.1.as_slice())
    }

    /// Shuts down the sockets of connections that wait for a request (`idle_only`) or
    /// of all connections. SHUT_RD ends pending reads: a body being received ends and
    /// its bytes are kept; the answer can still be written.
    fn shutdown_conns(&self, idle_only: bool, how: libc::c_int) {
        for entry in self.conns.borrow().values() {
            if !idle_only || entry.idle.get() {
                shutdown_fd(entry.fd, how);
            }
        }
    }
}

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
