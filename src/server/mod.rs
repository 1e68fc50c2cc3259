//! The I/O shell: startup, the core threads, signals and shutdown.
//!
//! `--workers N` threads each run one single-threaded tokio-uring runtime with its own
//! descriptor of the daemon's one listening socket (bound without `SO_REUSEPORT`, so no
//! other process can share the address); the cores' accepts wait on its one queue and a
//! connection stays on the core that accepted it. The main thread binds the socket (a
//! second daemon on the address exits 1; a killed one's lingering listener is waited
//! for), waits for every core to report its ring up, then waits for SIGTERM/SIGINT and
//! drives the shutdown.
//!
//! A request goes one way through the modules: [`conn`] (bytes, keep-alive, timeouts)
//! → [`handler`] (tus decisions; [`mod@concat`] and [`expire`] for those extensions;
//! [`mod@draft`] for a request that speaks the resumable-uploads draft) →
//! [`ingest`] (a body into the data store) → [`crate::storage`]. The answer comes back
//! as a [`reply::Reply`]; the connection knows the handler only through
//! [`handler::handle`], and the handler knows the connection only through the
//! [`request::RequestCtx`] and the body's source it is given.

pub mod concat;
pub mod conn;
pub mod core;
pub mod core_thread;
pub mod draft;
pub mod expire;
pub mod finals;
pub mod handler;
pub mod helper;
pub mod ingest;
#[cfg(test)]
mod inprocess;
pub mod listen;
pub mod notify;
pub mod reply;
pub mod request;
pub mod stops;

use crate::config::Config;
use crate::hooks::Hooks;
use crate::storage::Storage;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after the grace period the cores get to finish the requests whose sockets
/// were shut down (their bytes are written and their info records saved).
pub const FORCE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How often the main thread refreshes systemd's `STATUS=` line (when it changed).
pub const STATUS_PERIOD: Duration = Duration::from_secs(2);

/// A core whose heartbeat has not moved for this long (or the watchdog interval, if
/// longer) is taken as stuck: the main thread stops sending `WATCHDOG=1`.
pub const CORE_STALL: Duration = Duration::from_secs(5);

/// The least time queued hook events get after the cores have finished.
pub const HOOKS_LAST_WAIT: Duration = Duration::from_secs(1);

/// Shutdown phases, sent to every core over a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Running,
    /// Stop accepting; let in-flight requests finish within the grace period.
    Draining,
    /// A second signal: cut every connection now (bytes received are still kept).
    Force,
}

/// What every core shares: read-only settings, the storage startup chose, the hooks
/// and the index of waiting finals.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Where uploads are stored; each core takes its own handles from it.
    pub storage: Storage,
    /// The `Tus-Extension` value: what is enabled and implemented, in rustus's order.
    pub extensions_header: String,
    /// The hooks: events go to their worker pool; [`Hooks::wants`] is cheap.
    pub hooks: Hooks,
    /// The finals waiting for their parts (`concatenation-unfinished`).
    pub finals: finals::WaitingFinals,
}

impl Shared {
    /// The shared state of a daemon with `config`, its storage and its hooks.
    pub fn new(config: Config, storage: Storage, hooks: Hooks) -> Shared {
        Shared {
            extensions_header: extensions_header(&config),
            config,
            storage,
            hooks,
            finals: finals::WaitingFinals::new(),
        }
    }
}

/// Why the daemon could not start (exit code 1).
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `Tus-Extension` list for the enabled extensions that this build implements.
pub fn extensions_header(config: &Config) -> String {
    let e = &config.extensions;
    // rustus's order (rustus-compat §2.1).
    let list = [
        (e.creation_defer_length, "creation-defer-length"),
        (e.creation_with_upload, "creation-with-upload"),
        (e.creation, "creation"),
        (e.termination, "termination"),
        (e.concatenation, "concatenation"),
        (e.concatenation_unfinished, "concatenation-unfinished"),
        (e.getting, "getting"),
        (e.checksum, "checksum"),
        (e.checksum_trailer, "checksum-trailer"),
        (e.expiration, "expiration"),
    ];
    let names: Vec<&str> = list.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
    names.join(",")
}

/// Runs the daemon until a shutdown signal has been handled. Returns once every core
/// has finished.
pub fn run(config: Config) -> Result<(), StartError> {
    // Checked to take a write now, before READY=1 can be sent.
    let storage = Storage::open(&config).map_err(StartError)?;
    // Test builds only (`storage::fault`): a fault plan is checked and logged now.
    match crate::storage::fault::announce() {
        Ok(Some(armed)) => crate::warn!("{armed}"),
        Ok(None) => {}
        Err(e) => return Err(StartError(e)),
    }
    let notifier = notify::Notifier::from_env();
    let listeners = match listen::inherited_listeners(config.workers) {
        Some(inherited) => {
            let l = inherited
                .map_err(|e| StartError(format!("cannot use the socket passed by systemd: {e}")))?;
            crate::info!("socket activation: serving the socket passed by systemd (--host and --port are not used)");
            l
        }
        None => listen::listen_exclusive(config.listen, config.workers, config.backlog)
            .map_err(StartError)?,
    };
    let local = listeners[0]
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;

    // Signals are taken synchronously by this thread; block them before spawning so
    // that every core thread inherits the mask and none is interrupted.
    let signals = listen::block_shutdown_signals();

    // The hook workers start before the cores (they inherit the blocked signals);
    // missing hook files are logged here, once.
    let hooks = Hooks::start(&config.hooks).map_err(StartError)?;
    let shared = Arc::new(Shared::new(config, storage, hooks));
    // A hook's post-receive answer can stop an upload (`--hooks-answers`): the table
    // the PATCHes look at and the thread that carries the stops out.
    stops::start(&shared).map_err(|e| StartError(format!("cannot start the stop thread: {e}")))?;
    let sweeper = expire::Sweeper::start(&shared);
    // hybrid-s3: the thread that moves complete uploads to S3 (and finds, at once and
    // every few minutes, those a restart or a dead node left waiting).
    if let Some((worker, hybrid)) = shared.storage.take_transfers() {
        let announcer = stand_in_announcer(&shared);
        let started = helper::spawn("tusring-s3", &shared, move |stores, _| async move {
            worker.run(stores, hybrid, announcer).await
        });
        if let Err(e) = started {
            return Err(StartError(format!(
                "cannot start the S3 transfer thread: {e}"
            )));
        }
    }
    // Ends a scan still running when the daemon stops (its thread is not waited for).
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if shared.config.extensions.concatenation_unfinished {
        let stop = stopped.clone();
        let started = helper::spawn(
            "tusring-concat-index",
            &shared,
            |stores, shared| async move {
                let stop = || stop.load(Ordering::Relaxed);
                concat::rebuild_index(&stores, &shared.finals, &stop).await
            },
        );
        if let Err(e) = started {
            crate::warn!("cannot scan for waiting final uploads: {e}");
        }
    }
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Running);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::new();
    let mut beats = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let phase = phase_rx.clone();
        let ready = ready_tx.clone();
        let beat = Arc::new(AtomicU64::new(0));
        beats.push(beat.clone());
        let handle = std::thread::Builder::new()
            .name(format!("tusring-core-{i}"))
            .spawn(move || core_thread::run_thread(i, shared, listener, phase, ready, beat))
            .map_err(|e| StartError(format!("cannot start core thread: {e}")))?;
        threads.push(handle);
    }
    drop(ready_tx);
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(StartError(msg)),
            Err(_) => return Err(StartError("a core thread died during startup".into())),
        }
    }
    crate::info!(
        "tusring {} listening on http://{} with {} core(s), tus at {}/, {}",
        env!("CARGO_PKG_VERSION"),
        local,
        threads.len(),
        shared.config.url,
        shared.storage.describe()
    );
    // Every core's ring is up, every listener bound, the directories took a write.
    let cores = threads.len();
    let mut status = status_line(local, cores);
    notifier.ready(&status);
    let watchdog = notify::watchdog_interval().filter(|_| notifier.enabled());
    let mut next_ping = Instant::now();
    let mut next_status = Instant::now() + STATUS_PERIOD;
    let mut liveness = Liveness::new(&beats);

    let cfg = &shared.config;
    if !cfg.disable_splice {
        crate::info!(
            "data path: splice (socket -> pipe -> file, pipes of {} bytes); buffered fallback with 2 x {} byte buffers",
            cfg.pipe_size,
            cfg.body_buffer_size
        );
    } else {
        crate::info!(
            "data path: buffered (2 x {} byte buffers per upload; splice disabled)",
            cfg.body_buffer_size
        );
    }

    // Wait for SIGTERM/SIGINT; a second one forces the shutdown.
    let grace = shared.config.shutdown_timeout;
    let mut phase = Phase::Running;
    let mut deadline: Option<Instant> = None;
    loop {
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        let now = Instant::now();
        if let Some(interval) = watchdog {
            if now >= next_ping {
                // Ping only while every core still runs its tasks.
                let limit = interval.max(CORE_STALL);
                match liveness.stalled(&beats, &threads, limit, phase == Phase::Running) {
                    None => notifier.watchdog(),
                    Some(i) => crate::warn!(
                        "core {i} is stuck or gone (no heartbeat for {:.1} s): withholding the systemd watchdog ping",
                        limit.as_secs_f64()
                    ),
                }
                next_ping = now + notify::ping_period(interval);
            }
        }
        if now >= next_status {
            let fresh = if phase == Phase::Running {
                status_line(local, cores)
            } else {
                format!(
                    "stopping: {} connection(s) still open",
                    core::open_connections()
                )
            };
            if fresh != status {
                notifier.status(&fresh);
                status = fresh;
            }
            next_status = now + STATUS_PERIOD;
        }
        let mut wait = Duration::from_millis(100);
        if watchdog.is_some() {
            wait = wait.min(next_ping.saturating_duration_since(now));
        }
        if let Some(sig) = listen::wait_signal(&signals, wait) {
            if sig == "SIGHUP" {
                crate::info!("signal SIGHUP ignored (logs go to stderr; nothing to reload)");
                continue;
            }
            if phase == Phase::Running {
                notifier.stopping(&format!(
                    "stopping: draining {} connection(s)",
                    core::open_connections()
                ));
            }
            phase = if phase == Phase::Running {
                crate::info!(
                    "signal {sig}: stopping accepting, letting in-flight requests finish (up to {:.1} s)",
                    grace.as_secs_f64()
                );
                Phase::Draining
            } else {
                crate::warn!("signal {sig} again: closing every connection now");
                Phase::Force
            };
            let _ = phase_tx.send(phase);
            deadline.get_or_insert(Instant::now() + grace + FORCE_CLOSE_WAIT * 2);
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            crate::error!("cores did not finish after the grace period; exiting anyway");
            break;
        }
    }
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
        }
    }
    stopped.store(true, Ordering::Relaxed);
    if let Some(sweeper) = sweeper {
        sweeper.stop();
    }
    shared.storage.stop();
    // Events already queued are delivered within the grace period (counted from the
    // signal), and get at least HOOKS_LAST_WAIT after the cores finished, for the events
    // of the last requests.
    let grace_end = deadline
        .map(|d| d - FORCE_CLOSE_WAIT * 2)
        .unwrap_or_else(|| Instant::now() + grace);
    shared
        .hooks
        .shutdown(grace_end.max(Instant::now() + HOOKS_LAST_WAIT));
    // No request runs any more: the locks they let go of are released in Redis.
    shared
        .storage
        .close(grace_end.max(Instant::now() + HOOKS_LAST_WAIT));
    crate::info!("tusring stopped");
    Ok(())
}

/// The announcement of an upload whose transfer to S3 a scan found (interrupted by a
/// restart, or left by a node that died): `post-finish`, with a stand-in for the
/// request that completed it, which is not known any more (method PATCH, the upload's
/// URI, no headers, no client address).
fn stand_in_announcer(shared: &Arc<Shared>) -> crate::storage::s3::Announcer {
    let shared = shared.clone();
    Arc::new(move |info: &crate::storage::info::UploadInfo| {
        let shared = shared.clone();
        let request = crate::hooks::payload::RequestPart {
            uri: crate::hooks::payload::normalized_uri(&shared.config.url, Some(&info.id), None),
            method: "PATCH".to_owned(),
            remote_addr: String::new(),
            headers: Default::default(),
        };
        Box::new(move |info| {
            Box::pin(async move {
                if shared.hooks.wants(crate::hooks::Event::PostFinish) {
                    let from = crate::hooks::Origin {
                        request,
                        proxied: Vec::new(),
                    };
                    shared
                        .hooks
                        .post(crate::hooks::Event::PostFinish, info, from)
                        .await;
                }
            })
        })
    })
}

/// The `STATUS=` line while serving.
fn status_line(local: std::net::SocketAddr, cores: usize) -> String {
    format!(
        "serving on {local}: {cores} core(s), {} connection(s), {} upload(s) in progress",
        core::open_connections(),
        crate::storage::locks::held()
    )
}

/// When each core's heartbeat (bumped by the core every `core::HEARTBEAT_PERIOD`) last
/// moved, as seen by the main thread.
struct Liveness {
    seen: Vec<(u64, Instant)>,
}

impl Liveness {
    fn new(beats: &[Arc<AtomicU64>]) -> Liveness {
        let now = Instant::now();
        Liveness {
            seen: beats
                .iter()
                .map(|b| (b.load(Ordering::Relaxed), now))
                .collect(),
        }
    }

    /// The first core whose heartbeat has not moved for `limit`. While `serving`, a core
    /// thread that ended (a panic) counts too; during a shutdown, ended cores are done.
    fn stalled(
        &mut self,
        beats: &[Arc<AtomicU64>],
        threads: &[std::thread::JoinHandle<()>],
        limit: Duration,
        serving: bool,
    ) -> Option<usize> {
        let now = Instant::now();
        let mut stuck = None;
        for (i, (beat, seen)) in beats.iter().zip(self.seen.iter_mut()).enumerate() {
            let v = beat.load(Ordering::Relaxed);
            if v != seen.0 {
                *seen = (v, now);
            } else if stuck.is_none()
                && now.duration_since(seen.1) > limit
                && (serving || !threads.get(i).is_some_and(|t| t.is_finished()))
            {
                stuck = Some(i);
            }
        }
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_whose_heartbeat_stops_is_found() {
        let beats: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let mut l = Liveness::new(&beats);
        let limit = Duration::from_millis(50);
        assert_eq!(l.stalled(&beats, &[], limit, true), None);
        std::thread::sleep(Duration::from_millis(30));
        beats[0].fetch_add(1, Ordering::Relaxed);
        beats[1].fetch_add(1, Ordering::Relaxed);
        assert_eq!(l.stalled(&beats, &[], limit, true), None);
        std::thread::sleep(Duration::from_millis(80));
        beats[0].fetch_add(1, Ordering::Relaxed);
        assert_eq!(l.stalled(&beats, &[], limit, true), Some(1));
        beats[1].fetch_add(1, Ordering::Relaxed);
        assert_eq!(l.stalled(&beats, &[], limit, true), None);
    }
}
