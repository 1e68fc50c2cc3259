//! The I/O shell: startup, the core threads, signals and shutdown.
//!
//! `--workers N` threads each run one single-threaded tokio-uring runtime with its own
//! `SO_REUSEPORT` listener on the same address; the kernel spreads connections over
//! them and a connection stays on the core that accepted it. The main thread binds the
//! listeners (so port 0 resolves once and every core shares it), waits for every core to
//! report its ring up, then waits for SIGTERM/SIGINT and drives the shutdown.

pub mod conn;
pub mod core;
pub mod handler;
pub mod listen;

use crate::config::Config;
use crate::storage::files::FileStore;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Submission-queue entries of each core's ring (the completion queue is twice this).
/// Each connection has at most three operations in flight (a read, a file write and a
/// timer-driven shutdown), so this covers thousands of connections per core; the
/// kernel's NODROP feature keeps overflowing completions rather than losing them.
pub const URING_ENTRIES: u32 = 4096;

/// How long after the grace period the cores get to finish the requests whose sockets
/// were shut down (their bytes are written and their info records saved).
pub const FORCE_CLOSE_WAIT: Duration = Duration::from_secs(5);

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

/// What every core shares: read-only settings and the storage description.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Where uploads are stored.
    pub store: FileStore,
    /// The `Tus-Extension` value: what is enabled and implemented, in rustus's order.
    pub extensions_header: String,
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
    ];
    let names: Vec<&str> = list.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
    names.join(",")
}

/// Extensions that `--tus-extensions` may name but this build does not implement yet.
fn unimplemented_extensions(config: &Config) -> Vec<&'static str> {
    let e = &config.extensions;
    [
        (e.getting, "getting"),
        (e.concatenation, "concatenation"),
        (e.concatenation_unfinished, "concatenation-unfinished"),
        (e.checksum, "checksum"),
        (e.checksum_trailer, "checksum-trailer"),
        (e.expiration, "expiration"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect()
}

/// Runs the daemon until a shutdown signal has been handled. Returns once every core
/// has finished.
pub fn run(config: Config) -> Result<(), StartError> {
    let store = FileStore::open(
        &config.data_dir,
        &config.info_dir,
        &config.dir_structure,
        config.force_fsync,
    )
    .map_err(|e| {
        StartError(format!(
            "cannot use data directory {} / info directory {}: {e}",
            config.data_dir.display(),
            config.info_dir.display()
        ))
    })?;
    let missing = unimplemented_extensions(&config);
    if !missing.is_empty() {
        crate::warn!(
            "tus extensions not implemented by this build are not advertised: {}",
            missing.join(", ")
        );
    }
    let listeners = listen::bind_all(config.listen, config.workers)
        .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.listen)))?;
    let local = listeners[0]
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;

    // Signals are taken synchronously by this thread; block them before spawning so
    // that every core thread inherits the mask and none is interrupted.
    let signals = listen::block_shutdown_signals();

    let shared = Arc::new(Shared {
        extensions_header: extensions_header(&config),
        config,
        store,
    });
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Running);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let phase = phase_rx.clone();
        let ready = ready_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tusring-core-{i}"))
            .spawn(move || core::run_thread(i, shared, listener, phase, ready))
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
        "tusring {} listening on http://{} with {} core(s), tus at {}/, data in {}, info in {}",
        env!("CARGO_PKG_VERSION"),
        local,
        threads.len(),
        shared.config.url,
        shared.store.data_dir.display(),
        shared.store.info_dir.display()
    );

    // Wait for SIGTERM/SIGINT; a second one forces the shutdown.
    let grace = shared.config.shutdown_timeout;
    let mut phase = Phase::Running;
    let mut deadline: Option<Instant> = None;
    loop {
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        if let Some(sig) = listen::wait_signal(&signals, Duration::from_millis(100)) {
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
    crate::info!("tusring stopped");
    Ok(())
}
