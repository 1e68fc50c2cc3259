//! Hooks: rustus's notifications of upload events (`rustus-compat.md` §3) to an
//! executable (`--hooks-file`), a directory of executables (`--hooks-dir`), HTTP
//! receivers (`--hooks-http-urls`) and RabbitMQ (`--hooks-amqp-url`, [`amqp`]: the
//! workers only queue for it; its own thread publishes).
//!
//! # Threads and channels
//!
//! Hooks block (a process to wait for, an HTTP exchange), so they never run on a core
//! thread. They run on a pool of `--hooks-workers` plain threads fed by two bounded
//! crossbeam channels of `--hooks-queue` jobs each: one for pre-hooks, one for
//! post-events. A core thread only ever `try_send`s (and counts a post-event in a
//! per-upload map, one short mutex section; see Ordering):
//!
//! * **pre-hooks** (`pre-create`, `pre-terminate`) carry a `tokio::sync::oneshot`
//!   sender; the request awaits the verdict without blocking its core. A full queue is
//!   answered 503 with `Retry-After` at once.
//!   With AMQP as the only notifier nothing can refuse: pre-events are then queued like
//!   post-events and the request does not wait.
//! * **post-events** are fire-and-forget: the request does not wait for delivery. When
//!   the queue is full the request waits for room (a `try_send` retried after short
//!   async sleeps, up to [`POST_ROOM_WAIT`]) rather than dropping the event; an event
//!   that still finds no room is dropped, logged and counted.
//!
//! Workers take pre-hooks first; with two or more workers, worker 0 takes only
//! pre-hooks, so a slow post-hook receiver cannot hold up uploads that wait for a
//! verdict.
//!
//! # Ordering
//!
//! Post-events of one upload are delivered in the order they happened. Events of one
//! upload are produced under its upload lock, so they enter the channel in order;
//! workers take jobs from it one at a time (under `recv_lock`), and a post-event whose
//! upload already has an event being delivered is parked behind it, to be run by the
//! worker that delivers that upload's events. Different uploads are delivered in
//! parallel.
//!
//! Ordering makes an upload's later events wait for the delivery of its earlier ones,
//! retries included. So stale progress does not hold back what follows it: an HTTP
//! `post-receive` that fails while a newer event of its upload is queued behind it is
//! not retried (it is *superseded*, logged and counted), and a retry pause ends when
//! such an event is queued. Only those retries are skipped: every event is attempted at
//! every URL, in order. The newer events are counted per upload as they are queued (by
//! the core, `Inner::behind`), so they are seen even while no worker is free to take
//! them from the channel.
//!
//! # Delivery
//!
//! The message is formatted once per event ([`payload`]). Each notifier gets every
//! post-event on its own (a failing file hook does not stop the HTTP hook); failures are
//! logged with the event, the upload ID and the reason, and counted
//! ([`metrics::HOOK_COUNTERS`], rendered at `/metrics`). HTTP post-hooks are retried
//! with a doubling backoff (a superseded `post-receive` excepted, see Ordering).
//! Pre-hooks go to the notifiers in rustus's order (file, directory, HTTP URLs) and the
//! first refusal is the verdict.
//!
//! # Shutdown
//!
//! `server::run` calls [`Hooks::shutdown`] after the cores have finished: the workers
//! deliver what is queued and exit; whatever is left at the deadline (the end of the
//! grace period) is logged and counted, and running hook processes are killed.

pub mod amqp;
pub mod answer;
pub mod exec;
pub mod http;
pub mod payload;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select_biased, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::error::HookError;
use crate::http::head::RequestHead;
use crate::metrics;
use crate::storage::info::UploadInfo;
pub use payload::RequestPart;

/// Longest a post-event waits for room in a full queue before it is dropped (logged and
/// counted).
pub const POST_ROOM_WAIT: Duration = Duration::from_secs(10);

/// Longest a pre-hook may wait in the queue for a worker, on top of its own timeouts;
/// past it the request gets 504.
pub const PRE_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The default of `--hooks-workers` for `workers` cores: two per core, at least 2, at
/// most 64.
pub fn default_workers(workers: usize) -> usize {
    workers.saturating_mul(2).clamp(2, 64)
}

// ---------------------------------------------------------------------------------------
// Events and formats
// ---------------------------------------------------------------------------------------

/// An upload event (`rustus-compat.md` §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    PreCreate,
    PostCreate,
    PostReceive,
    PreTerminate,
    PostTerminate,
    PostFinish,
}

impl Event {
    /// Every event, in rustus's order (the default of `--hooks`).
    pub const ALL: [Event; 6] = [
        Event::PreCreate,
        Event::PostCreate,
        Event::PostReceive,
        Event::PreTerminate,
        Event::PostTerminate,
        Event::PostFinish,
    ];

    /// The event's name: `pre-create`, …; also the directory hook's file name.
    pub fn name(self) -> &'static str {
        match self {
            Event::PreCreate => "pre-create",
            Event::PostCreate => "post-create",
            Event::PostReceive => "post-receive",
            Event::PreTerminate => "pre-terminate",
            Event::PostTerminate => "post-terminate",
            Event::PostFinish => "post-finish",
        }
    }

    /// The event for a name, exactly as spelled by [`Event::name`].
    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Whether the request waits for the hook's verdict.
    pub fn is_pre(self) -> bool {
        matches!(self, Event::PreCreate | Event::PreTerminate)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of events (`--hooks`).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct EventSet(u8);

impl EventSet {
    /// Every event.
    pub fn all() -> EventSet {
        EventSet(Event::ALL.iter().fold(0, |m, e| m | e.bit()))
    }

    /// No event.
    pub fn none() -> EventSet {
        EventSet(0)
    }

    /// Whether `event` is in the set.
    pub fn contains(self, event: Event) -> bool {
        self.0 & event.bit() != 0
    }

    /// Adds `event`.
    pub fn insert(&mut self, event: Event) {
        self.0 |= event.bit();
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The events in the set, in rustus's order.
    pub fn iter(self) -> impl Iterator<Item = Event> {
        Event::ALL.into_iter().filter(move |e| self.contains(*e))
    }

    /// Parses a comma list of event names (items trimmed, empty ones ignored). The
    /// error is the reason only.
    pub fn parse(list: &str) -> Result<EventSet, String> {
        let mut set = EventSet::none();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match Event::from_name(name) {
                Some(e) => set.insert(e),
                None => {
                    let allowed: Vec<&str> = Event::ALL.iter().map(|e| e.name()).collect();
                    return Err(format!(
                        "unknown hook '{}'; allowed values: {}",
                        name.escape_debug(),
                        allowed.join(", ")
                    ));
                }
            }
        }
        Ok(set)
    }
}

impl fmt::Debug for EventSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Event::name)).finish()
    }
}

/// The message format (`--hooks-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// rustus's own: `{"request": {"URI", …}, "upload": {…}}`.
    #[default]
    Default,
    /// `default` with `uri` in lower case.
    V2,
    /// tusd's v1 hook shape (`HTTPRequest`, `Upload`, PascalCase).
    Tusd,
}

impl Format {
    /// Parses `default`, `v2` or `tusd` (any case).
    pub fn parse(text: &str) -> Result<Format, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "default" => Ok(Format::Default),
            "v2" => Ok(Format::V2),
            "tusd" => Ok(Format::Tusd),
            _ => Err("unknown hooks format; allowed values: default, v2, tusd".to_owned()),
        }
    }

    /// The name `--hooks-format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Default => "default",
            Format::V2 => "v2",
            Format::Tusd => "tusd",
        }
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------
// The handle the cores use
// ---------------------------------------------------------------------------------------

/// Where an event came from: the request part of the message, and the client headers
/// the HTTP hooks forward (`--hooks-http-proxy-headers`).
#[derive(Debug, Clone)]
pub struct Origin {
    /// The request, as the message shows it.
    pub request: RequestPart,
    /// (name as configured, the client's value) of each proxied header present.
    pub proxied: Vec<(String, Vec<u8>)>,
}

/// The hooks of this daemon: cheap to ask ([`Hooks::wants`]) when none are configured.
pub struct Hooks {
    events: EventSet,
    pool: Option<Pool>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("events", &self.events)
            .field("enabled", &self.pool.is_some())
            .finish()
    }
}

struct Pool {
    pre_tx: Sender<Job>,
    post_tx: Sender<Job>,
    /// Dropped to tell the workers to drain and stop.
    stop_tx: Mutex<Option<Sender<()>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    inner: Arc<Inner>,
    /// How long a pre-hook request waits for its verdict at most.
    pre_wait: Duration,
    /// No notifier can refuse (AMQP only): pre-events are queued like post-events and
    /// the request does not wait for them.
    no_verdict: bool,
    behind_proxy: bool,
    proxy_headers: Vec<String>,
}

/// A post-event counted in `Inner::behind` while `Hooks::post` queues it: uncounted
/// when dropped before [`Counted::sent`] (the event never reached the channel).
struct Counted<'a> {
    inner: &'a Inner,
    id: Option<String>,
}

impl<'a> Counted<'a> {
    fn new(inner: &'a Inner, id: &str) -> Counted<'a> {
        inner.count_behind(id, true);
        Counted {
            inner,
            id: Some(id.to_owned()),
        }
    }

    /// The event is in the channel: the worker that takes it uncounts it.
    fn sent(&mut self) {
        self.id = None;
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.inner.count_behind(&id, false);
        }
    }
}

/// A queued event.
struct Job {
    event: Event,
    upload: UploadInfo,
    origin: Origin,
    /// Pre-hooks: where the verdict goes.
    reply: Option<oneshot::Sender<Result<(), HookError>>>,
}

impl Hooks {
    /// No hooks: every event is ignored.
    pub fn disabled() -> Hooks {
        Hooks {
            events: EventSet::none(),
            pool: None,
        }
    }

    /// Starts the worker pool for the configured hooks, or returns [`Hooks::disabled`]
    /// when no notifier (or no event) is configured. Checks the hook files and logs what
    /// is missing, once.
    pub fn start(config: &Config) -> Result<Hooks, String> {
        let has_notifier = config.hooks_file.is_some()
            || config.hooks_dir.is_some()
            || !config.hooks_http_urls.is_empty()
            || config.hooks_amqp.url.is_some();
        if !has_notifier {
            return Ok(Hooks::disabled());
        }
        if config.hooks.is_empty() {
            crate::warn!("hooks are configured but --hooks names no event: no hook will run");
            return Ok(Hooks::disabled());
        }
        check_files(config);
        let notifiers = Notifiers {
            file: config.hooks_file.as_deref().map(program_path),
            dir: config.hooks_dir.clone(),
            http: (!config.hooks_http_urls.is_empty()).then(|| {
                http::HttpHooks::new(config.hooks_http_urls.clone(), config.http_hook_timeout)
            }),
            amqp: match &config.hooks_amqp.url {
                Some(_) => Some(amqp::Amqp::start(&config.hooks_amqp)?),
                None => None,
            },
            exec_timeout: config.hook_timeout,
            retries: config.hooks_http_retries,
            backoff: config.hooks_http_retry_backoff,
        };
        let execs = u32::from(notifiers.file.is_some()) + u32::from(notifiers.dir.is_some());
        let urls = u32::try_from(config.hooks_http_urls.len()).unwrap_or(u32::MAX);
        let pre_wait = config.hook_timeout.saturating_mul(execs)
            + config.http_hook_timeout.saturating_mul(urls)
            + PRE_QUEUE_WAIT;
        let bound = config.hooks_queue.max(1);
        let (pre_tx, pre_rx) = crossbeam_channel::bounded(bound);
        let (post_tx, post_rx) = crossbeam_channel::bounded(bound);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let inner = Arc::new(Inner {
            pre_rx,
            post_rx,
            stop_rx,
            stopping: AtomicBool::new(false),
            recv_lock: Mutex::new(()),
            busy: Mutex::new(HashMap::new()),
            behind: Mutex::new(HashMap::new()),
            behind_cv: Condvar::new(),
            parked: AtomicUsize::new(0),
            park_bound: bound,
            notifiers,
            format: config.hooks_format,
            running: exec::Running::default(),
        });
        let no_verdict = config.hooks_file.is_none()
            && config.hooks_dir.is_none()
            && config.hooks_http_urls.is_empty();
        // With AMQP alone the cores queue every event for its publisher themselves
        // (`Hooks::post`): a worker would never get a job, so none is started.
        let count = if no_verdict {
            0
        } else {
            config.hooks_workers.max(1)
        };
        // Pre-events wait for a verdict (and get worker 0 to themselves) unless nothing
        // can refuse.
        let has_pre = config.hooks.iter().any(Event::is_pre) && !no_verdict;
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let inner = inner.clone();
            let pre_only = i == 0 && count >= 2 && has_pre;
            let handle = std::thread::Builder::new()
                .name(format!("tusring-hook-{i}"))
                .spawn(move || inner.work(pre_only))
                .map_err(|e| format!("cannot start a hook worker thread: {e}"))?;
            workers.push(handle);
        }
        let events: Vec<&str> = config.hooks.iter().map(Event::name).collect();
        let mut to = Vec::new();
        if let Some(f) = &config.hooks_file {
            to.push(format!("file {}", f.display()));
        }
        if let Some(d) = &config.hooks_dir {
            to.push(format!("directory {}", d.display()));
        }
        if config.hooks_amqp.url.is_some() {
            to.push(format!("AMQP exchange {}", config.hooks_amqp.exchange));
        }
        for u in &config.hooks_http_urls {
            to.push(format!("POST {u}"));
        }
        let workers_said = if no_verdict {
            "no hook worker: the cores queue events for the AMQP publisher".to_owned()
        } else {
            format!("{count} worker(s), queue {bound}")
        };
        crate::info!(
            "hooks: {} to {} ({} format, {workers_said})",
            events.join(","),
            to.join(", "),
            config.hooks_format.name(),
        );
        Ok(Hooks {
            events: config.hooks,
            pool: Some(Pool {
                pre_tx,
                post_tx,
                stop_tx: Mutex::new(Some(stop_tx)),
                workers: Mutex::new(workers),
                inner,
                pre_wait,
                no_verdict,
                behind_proxy: config.behind_proxy,
                proxy_headers: config.hooks_http_proxy_headers.clone(),
            }),
        })
    }

    /// Whether `event` goes to any hook. Cheap: check it before building a message.
    #[inline]
    pub fn wants(&self, event: Event) -> bool {
        self.pool.is_some() && self.events.contains(event)
    }

    /// The origin of an event from the request head: see [`RequestPart::new`].
    pub fn origin(
        &self,
        head: &RequestHead,
        method: &str,
        base: &str,
        id: Option<&str>,
        peer: SocketAddr,
    ) -> Origin {
        let (behind_proxy, names): (bool, &[String]) = match &self.pool {
            Some(p) => (p.behind_proxy, &p.proxy_headers),
            None => (false, &[]),
        };
        let proxied = names
            .iter()
            .filter_map(|n| {
                let lower = n.to_ascii_lowercase();
                head.header(&lower).map(|v| (n.clone(), v.to_vec()))
            })
            .collect();
        Origin {
            request: RequestPart::new(head, method, base, id, peer, behind_proxy),
            proxied,
        }
    }

    /// Asks the pre-hooks about `upload`; `Ok` lets the request through. Awaits the
    /// verdict without blocking the core.
    pub async fn pre(
        &self,
        event: Event,
        upload: &UploadInfo,
        origin: Origin,
    ) -> Result<(), HookError> {
        let Some(pool) = self.pool.as_ref().filter(|_| self.events.contains(event)) else {
            return Ok(());
        };
        if pool.no_verdict {
            // Only AMQP, which never refuses: nothing to wait for.
            self.post(event, upload.clone(), origin).await;
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            event,
            upload: upload.clone(),
            origin,
            reply: Some(tx),
        };
        let stats = &metrics::HOOK_COUNTERS;
        match pool.pre_tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                bump(&stats.queue_full, 1);
                crate::warn!(
                    "hook {event} {}: the pre-hook queue is full: answering 503",
                    upload.id
                );
                return Err(HookError::QueueFull);
            }
            Err(TrySendError::Disconnected(_)) => return Err(HookError::Unavailable),
        }
        match tokio::time::timeout(pool.pre_wait, rx).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_)) => Err(HookError::Unavailable),
            Err(_) => {
                crate::warn!(
                    "hook {event} {}: no verdict within {:.1} s: answering 504",
                    upload.id,
                    pool.pre_wait.as_secs_f64()
                );
                Err(HookError::Timeout(event.name()))
            }
        }
    }

    /// Queues a post-event. Returns once it is queued (not delivered); waits for room
    /// when the queue is full, at most [`POST_ROOM_WAIT`].
    pub async fn post(&self, event: Event, upload: UploadInfo, origin: Origin) {
        let Some(pool) = self.pool.as_ref().filter(|_| self.events.contains(event)) else {
            return;
        };
        if pool.no_verdict {
            // AMQP is the only notifier, and its queue is an in-memory one of its own
            // (`amqp::Amqp::enqueue`: a short mutex push, never waiting for the broker):
            // the event goes straight into it, without a hand-off to a hook worker
            // thread. Events of one upload are queued in the order they happen (each is
            // queued while its request holds the upload's lock).
            if let Some(a) = &pool.inner.notifiers.amqp {
                let json = payload::render(pool.inner.format, &upload, &origin.request);
                a.enqueue(event, &upload.id, &json);
            }
            return;
        }
        let stats = &metrics::HOOK_COUNTERS;
        // Counted before it can reach a worker; uncounted again if it never does (dropped
        // here, or this request's future dropped while it waits for room).
        let mut counted = Counted::new(&pool.inner, &upload.id);
        let mut job = Job {
            event,
            upload,
            origin,
            reply: None,
        };
        let mut started: Option<Instant> = None;
        let mut pause = Duration::from_millis(1);
        loop {
            match pool.post_tx.try_send(job) {
                Ok(()) => {
                    counted.sent();
                    return;
                }
                Err(TrySendError::Full(back)) => {
                    let since = *started.get_or_insert_with(Instant::now);
                    if since.elapsed() >= POST_ROOM_WAIT {
                        bump(&stats.dropped, 1);
                        crate::error!(
                            "hook {event} {}: dropped: the queue stayed full for {} s",
                            back.upload.id,
                            POST_ROOM_WAIT.as_secs()
                        );
                        return;
                    }
                    job = back;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(TrySendError::Disconnected(back)) => {
                    bump(&stats.dropped, 1);
                    crate::error!(
                        "hook {event} {}: dropped: the hook workers have stopped",
                        back.upload.id
                    );
                    return;
                }
            }
        }
    }

    /// Events queued or parked, not yet taken by a worker (0 without hooks).
    pub fn queue_depth(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.inner.pending())
    }

    /// Delivers what is queued, then stops the workers; gives up at `deadline`, logging
    /// and counting the events left and killing running hook processes. Call once,
    /// after the cores have finished.
    pub fn shutdown(&self, deadline: Instant) {
        let Some(pool) = &self.pool else {
            return;
        };
        let inner = &pool.inner;
        let queued = inner.pending();
        if queued > 0 {
            crate::info!("hooks: delivering {queued} queued event(s) before exit");
        }
        inner.stopping.store(true, Ordering::SeqCst);
        if let Ok(mut tx) = pool.stop_tx.lock() {
            tx.take();
        }
        let mut workers = match pool.workers.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => Vec::new(),
        };
        loop {
            if workers.iter().all(|w| w.is_finished()) {
                for w in workers.drain(..) {
                    let _ = w.join();
                }
                crate::debug!("hooks stopped: {:?}", metrics::HOOK_COUNTERS);
                if let Some(a) = &inner.notifiers.amqp {
                    a.shutdown(deadline);
                }
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = inner.pending();
        bump(&metrics::HOOK_COUNTERS.dropped, left as u64);
        let killed = inner.running.kill_all();
        crate::warn!(
            "hooks: the grace period ended with {left} queued event(s) undelivered; \
             {killed} running hook process(es) killed"
        );
        if let Some(a) = &inner.notifiers.amqp {
            a.shutdown(deadline);
        }
    }

    /// Events the AMQP notifier holds, queued or in flight (0 without it).
    pub fn amqp_backlog(&self) -> usize {
        self.pool
            .as_ref()
            .and_then(|p| p.inner.notifiers.amqp.as_ref())
            .map_or(0, |a| a.backlog())
    }
}

/// A bare file name (`hook.sh`) means the file in the working directory, as
/// `check_files` looks for it, not a `$PATH` lookup.
fn program_path(path: &Path) -> PathBuf {
    if path.is_relative() && path.components().count() == 1 {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}

/// Logs the hook files that cannot work, once, at startup.
fn check_files(config: &Config) {
    if let Some(file) = &config.hooks_file {
        if let Some(why) = not_runnable(file) {
            crate::warn!(
                "hooks: --hooks-file {}: {why}: every hook event will fail",
                file.display()
            );
        }
    }
    if let Some(dir) = &config.hooks_dir {
        for event in config.hooks.iter() {
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

// ---------------------------------------------------------------------------------------
// The workers
// ---------------------------------------------------------------------------------------

struct Notifiers {
    file: Option<PathBuf>,
    dir: Option<PathBuf>,
    http: Option<http::HttpHooks>,
    /// `--hooks-amqp-url`: publishes from its own thread; never blocks a worker.
    amqp: Option<amqp::Amqp>,
    exec_timeout: Duration,
    retries: u32,
    backoff: Duration,
}

/// What the workers share.
struct Inner {
    pre_rx: Receiver<Job>,
    post_rx: Receiver<Job>,
    /// Disconnected when the workers are to drain and stop.
    stop_rx: Receiver<()>,
    stopping: AtomicBool,
    /// Taken to receive a job and register its upload, so that two events of one
    /// upload are never taken out of order.
    recv_lock: Mutex<()>,
    /// Uploads with an event being delivered, and their events waiting behind it.
    busy: Mutex<HashMap<String, VecDeque<Job>>>,
    /// Post-events of each upload that are queued and not yet taken for delivery: in the
    /// channel, waiting for room in it, or parked. Invariant: an upload's count is the
    /// number of its post-events `Hooks::post` has begun to queue, less those a worker
    /// has begun to deliver ([`Inner::run`]) or that were dropped; an upload with none has
    /// no entry. Events of one upload are queued in order, so while one of its events is
    /// in delivery, a count above 0 means a newer event waits behind it (what supersedes
    /// a post-receive: [`Inner::pause_unless_superseded`]). Counted at queueing, by the
    /// core, so that an event still in the channel counts even when no worker is free
    /// to take it.
    behind: Mutex<HashMap<String, usize>>,
    /// Signalled (with `behind`) when a count goes up: wakes a worker pausing before an
    /// HTTP retry of a post-receive that the new event supersedes.
    behind_cv: Condvar,
    /// Jobs waiting in `busy`.
    parked: AtomicUsize,
    /// Most jobs parked before receiving stops (so memory stays bounded).
    park_bound: usize,
    notifiers: Notifiers,
    format: Format,
    running: exec::Running,
}

/// Which notifier, for the logs.
enum Via<'a> {
    File(&'a Path),
    Dir(&'a Path),
    Http(&'a str),
}

impl fmt::Display for Via<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::File(p) => write!(f, "file hook {}", p.display()),
            Via::Dir(p) => write!(f, "directory hook {}", p.display()),
            Via::Http(u) => write!(f, "HTTP hook {u}"),
        }
    }
}

impl Inner {
    /// Events queued or parked (not yet taken by a worker).
    fn pending(&self) -> usize {
        self.pre_rx.len() + self.post_rx.len() + self.parked.load(Ordering::Relaxed)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A worker's life: take jobs until told to stop and nothing is left.
    fn work(&self, pre_only: bool) {
        loop {
            let job = if pre_only {
                self.next_pre()
            } else {
                self.next_any()
            };
            let Some(job) = job else { return };
            // A pre-hook awaited for its verdict runs at once; every other job (a
            // post-event, or a pre-event nothing can refuse) keeps its upload's order.
            if job.reply.is_some() {
                self.run_guarded(job);
            } else {
                let key = job.upload.id.clone();
                self.run_guarded(job);
                self.finish(&key);
            }
        }
    }

    /// [`Inner::run`], surviving a panic (there should be none): the worker goes on,
    /// and the upload's later events are still delivered.
    fn run_guarded(&self, job: Job) {
        let tag = format!("{} {}", job.event, job.upload.id);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(job)));
        if ran.is_err() {
            bump(&metrics::HOOK_COUNTERS.failed, 1);
            crate::error!("hook {tag}: the hook worker panicked; event not delivered");
        }
    }

    fn next_pre(&self) -> Option<Job> {
        loop {
            if self.stopping() {
                return self.pre_rx.try_recv().ok();
            }
            select_biased! {
                recv(self.pre_rx) -> m => return m.ok(),
                recv(self.stop_rx) -> _ => continue,
            }
        }
    }

    /// The next job to run: a pre-hook first, else a post-event whose upload has no
    /// event in delivery (others are parked behind that one).
    fn next_any(&self) -> Option<Job> {
        let _turn = self.recv_lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let job = if self.stopping() {
                match self.pre_rx.try_recv().or_else(|_| self.post_rx.try_recv()) {
                    Ok(j) => j,
                    Err(_) => return None,
                }
            } else {
                select_biased! {
                    recv(self.pre_rx) -> m => match m { Ok(j) => j, Err(_) => return None },
                    recv(self.post_rx) -> m => match m { Ok(j) => j, Err(_) => return None },
                    recv(self.stop_rx) -> _ => continue,
                }
            };
            if job.reply.is_some() {
                return Some(job);
            }
            if let Some(job) = self.take_or_park(job) {
                return Some(job);
            }
        }
    }

    /// A post-event whose upload has no event in delivery is returned (to be run now,
    /// its upload marked busy); else it is parked behind that upload's events. Parking
    /// waits while `park_bound` jobs are parked, so memory stays bounded: the workers
    /// delivering those uploads drain them (they need only `busy`, never `recv_lock`).
    fn take_or_park(&self, job: Job) -> Option<Job> {
        loop {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            match busy.get_mut(&job.upload.id) {
                None => {
                    busy.insert(job.upload.id.clone(), VecDeque::new());
                    return Some(job);
                }
                Some(waiting) if self.parked.load(Ordering::Relaxed) < self.park_bound => {
                    waiting.push_back(job);
                    self.parked.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Some(_) => {
                    drop(busy);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// After delivering an event of `key`: delivers the ones parked behind it, in
    /// order, then marks the upload idle.
    fn finish(&self, key: &str) {
        loop {
            let next = {
                let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                match busy.get_mut(key).and_then(VecDeque::pop_front) {
                    Some(job) => {
                        self.parked.fetch_sub(1, Ordering::Relaxed);
                        job
                    }
                    None => {
                        busy.remove(key);
                        return;
                    }
                }
            };
            self.run_guarded(next);
        }
    }

    fn run(&self, job: Job) {
        if job.reply.is_none() {
            // A post-event begins its delivery: no longer behind anything.
            self.count_behind(&job.upload.id, false);
        }
        if job.reply.as_ref().is_some_and(|r| r.is_closed()) {
            // The request stopped waiting (504): asking now would be for nothing.
            bump(&metrics::HOOK_COUNTERS.dropped, 1);
            crate::debug!(
                "hook {} {}: skipped: the request no longer waits",
                job.event,
                job.upload.id
            );
            return;
        }
        let json = payload::render(self.format, &job.upload, &job.origin.request);
        let key = uuid::Uuid::new_v4().to_string();
        let tag = format!("{} {}", job.event, job.upload.id);
        if job.event.is_pre() {
            let verdict = self.ask(&job, &json, &key, &tag);
            if let Some(reply) = job.reply {
                let _ = reply.send(verdict);
            }
        } else {
            self.notify(&job, &json, &key, &tag);
        }
    }

    /// A pre-hook: each notifier in rustus's order; the first refusal is the verdict.
    fn ask(&self, job: &Job, json: &str, key: &str, tag: &str) -> Result<(), HookError> {
        let event = job.event;
        let n = &self.notifiers;
        let result = (|| {
            if let Some(file) = &n.file {
                self.exec(event, Via::File(file), file, &[event.name(), json], tag)?;
            }
            if let Some(dir) = &n.dir {
                let path = dir.join(event.name());
                self.exec(event, Via::Dir(&path), &path, &[json], tag)?;
            }
            if let Some(h) = &n.http {
                for url in h.urls() {
                    let started = Instant::now();
                    let sent = h.post(url, event, json, key, &job.origin.proxied);
                    let took = started.elapsed();
                    match sent {
                        Ok(()) => {
                            bump(&metrics::HOOK_COUNTERS.delivered, 1);
                            metrics::hook_delivery(event, metrics::Notifier::Http, false, took);
                        }
                        Err(f) => {
                            metrics::hook_delivery(event, metrics::Notifier::Http, true, took);
                            self.failed(tag, &Via::Http(url), &f, f.is_status());
                            return Err(f.into_hook_error(event));
                        }
                    }
                }
            }
            // AMQP last, as rustus; it only queues and never refuses.
            if let Some(a) = &n.amqp {
                a.enqueue(event, &job.upload.id, json);
            }
            Ok(())
        })();
        if let Err(e) = &result {
            if e.is_verdict() {
                bump(&metrics::HOOK_COUNTERS.rejected, 1);
            }
        }
        result
    }

    /// Runs one executable hook; failures are logged and counted.
    fn exec(
        &self,
        event: Event,
        via: Via<'_>,
        path: &Path,
        args: &[&str],
        tag: &str,
    ) -> Result<(), HookError> {
        let timeout = self.notifiers.exec_timeout;
        let kind = if matches!(via, Via::Dir(_)) {
            metrics::Notifier::Dir
        } else {
            metrics::Notifier::File
        };
        let started = Instant::now();
        let result = exec::run(path, args, timeout, tag, &self.running);
        metrics::hook_delivery(event, kind, result.is_err(), started.elapsed());
        match result {
            Ok(()) => {
                bump(&metrics::HOOK_COUNTERS.delivered, 1);
                Ok(())
            }
            Err(e) => {
                let dir = matches!(via, Via::Dir(_));
                let (err, verdict) = match &e {
                    exec::ExecError::NotFound if dir => {
                        (HookError::MissingFile(event.name()), true)
                    }
                    exec::ExecError::NotFound
                    | exec::ExecError::Spawn(_)
                    | exec::ExecError::Wait(_) => (HookError::Spawn, false),
                    exec::ExecError::Status(_) => (HookError::Exit, true),
                    exec::ExecError::Timeout(_) => (HookError::Timeout(event.name()), false),
                };
                if dir && matches!(e, exec::ExecError::NotFound) {
                    // Logged once at startup; counted, not logged again per event (a
                    // pre-hook refusal is counted as such by `ask`).
                    if !event.is_pre() {
                        bump(&metrics::HOOK_COUNTERS.failed, 1);
                    }
                    crate::debug!("hook {tag}: {via}: not found");
                } else {
                    self.failed(tag, &via, &e, verdict && event.is_pre());
                }
                Err(err)
            }
        }
    }

    /// A post-event: every notifier on its own; HTTP retried with backoff.
    fn notify(&self, job: &Job, json: &str, key: &str, tag: &str) {
        let event = job.event;
        let n = &self.notifiers;
        // AMQP first: it only queues, so a slow HTTP receiver does not delay it.
        if let Some(a) = &n.amqp {
            a.enqueue(event, &job.upload.id, json);
        }
        if let Some(file) = &n.file {
            let _ = self.exec(event, Via::File(file), file, &[event.name(), json], tag);
        }
        if let Some(dir) = &n.dir {
            let path = dir.join(event.name());
            let _ = self.exec(event, Via::Dir(&path), &path, &[json], tag);
        }
        if let Some(h) = &n.http {
            for url in h.urls() {
                let started = Instant::now();
                let mut attempt = 0u32;
                loop {
                    match h.post(url, event, json, key, &job.origin.proxied) {
                        Ok(()) => {
                            bump(&metrics::HOOK_COUNTERS.delivered, 1);
                            let took = started.elapsed();
                            metrics::hook_delivery(event, metrics::Notifier::Http, false, took);
                            break;
                        }
                        Err(f) if f.retryable() && attempt < n.retries => {
                            let pause = n.backoff.saturating_mul(1 << attempt.min(16));
                            crate::debug!(
                                "hook {tag}: {} {f}; retry {} of {} in {:.1} s",
                                Via::Http(url),
                                attempt + 1,
                                n.retries,
                                pause.as_secs_f64()
                            );
                            if self.pause_unless_superseded(job, pause) {
                                let took = started.elapsed();
                                metrics::hook_delivery(event, metrics::Notifier::Http, true, took);
                                bump(&metrics::HOOK_COUNTERS.superseded, 1);
                                crate::warn!(
                                    "hook {tag}: {} failed: {f}; not retried: superseded by a \
                                     newer event of the upload, delivered next",
                                    Via::Http(url)
                                );
                                break;
                            }
                            attempt += 1;
                            bump(&metrics::HOOK_COUNTERS.retried, 1);
                        }
                        Err(f) => {
                            let took = started.elapsed();
                            metrics::hook_delivery(event, metrics::Notifier::Http, true, took);
                            self.failed(tag, &Via::Http(url), &f, false);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Counts one more (`up`) or one fewer post-event of upload `id` queued behind the
    /// one in delivery (see `behind`).
    fn count_behind(&self, id: &str, up: bool) {
        let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        if up {
            match behind.get_mut(id) {
                Some(n) => *n += 1,
                None => {
                    behind.insert(id.to_owned(), 1);
                }
            }
            drop(behind);
            self.behind_cv.notify_all();
        } else if let Some(n) = behind.get_mut(id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                behind.remove(id);
            }
        }
    }

    /// Waits `pause` before an HTTP retry of `job`. For a `post-receive`, returns `true`
    /// as soon as a newer event of its upload is queued behind it (at once if one
    /// already is): the progress it reports is stale, and retrying it would only hold
    /// back what comes next, so it is superseded. Only retries are skipped this way:
    /// every event gets its first attempt at every URL, in order, and the other events
    /// (state changes a receiver must see) are retried as before.
    fn pause_unless_superseded(&self, job: &Job, pause: Duration) -> bool {
        if job.event != Event::PostReceive {
            std::thread::sleep(pause);
            return false;
        }
        let until = Instant::now() + pause;
        let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if behind.contains_key(&job.upload.id) {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            behind = self
                .behind_cv
                .wait_timeout(behind, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Logs and counts a failed delivery. A refusal by a pre-hook is the hook doing its
    /// job: logged at INFO; anything else at WARN.
    fn failed(&self, tag: &str, via: &Via<'_>, why: &dyn fmt::Display, refusal: bool) {
        if refusal {
            crate::info!("hook {tag}: refused by {via}: {why}");
        } else {
            bump(&metrics::HOOK_COUNTERS.failed, 1);
            crate::warn!("hook {tag}: {via} failed: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_and_sets() {
        for e in Event::ALL {
            assert_eq!(Event::from_name(e.name()), Some(e));
        }
        assert_eq!(Event::from_name("Pre-Create"), None);
        assert!(Event::PreCreate.is_pre() && Event::PreTerminate.is_pre());
        assert!(!Event::PostFinish.is_pre());
        let all = EventSet::all();
        assert_eq!(all.iter().count(), 6);
        let s = EventSet::parse(" pre-create, ,post-finish,pre-create").unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Event::PreCreate, Event::PostFinish]
        );
        assert!(EventSet::parse("").unwrap().is_empty());
        let e = EventSet::parse("pre-create,pre-finish").unwrap_err();
        assert!(e.contains("unknown hook 'pre-finish'"), "{e}");
        assert!(e.contains("post-terminate"), "{e}");
        assert_eq!(
            EventSet::parse(
                "pre-create,post-create,post-receive,pre-terminate,post-terminate,post-finish"
            )
            .unwrap(),
            all
        );
    }

    #[test]
    fn formats() {
        assert_eq!(Format::parse("default"), Ok(Format::Default));
        assert_eq!(Format::parse("V2"), Ok(Format::V2));
        assert_eq!(Format::parse(" tusd "), Ok(Format::Tusd));
        assert!(Format::parse("json").is_err());
        for f in [Format::Default, Format::V2, Format::Tusd] {
            assert_eq!(Format::parse(f.name()), Ok(f));
        }
    }

    #[test]
    fn bare_hook_file_names_are_in_the_working_directory() {
        assert_eq!(program_path(Path::new("hook.sh")), Path::new("./hook.sh"));
        assert_eq!(program_path(Path::new("a/hook")), Path::new("a/hook"));
        assert_eq!(program_path(Path::new("/bin/true")), Path::new("/bin/true"));
    }

    #[test]
    fn default_worker_count() {
        assert_eq!(default_workers(1), 2);
        assert_eq!(default_workers(2), 4);
        assert_eq!(default_workers(1000), 64);
    }
}
