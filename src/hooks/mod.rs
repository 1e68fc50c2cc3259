//! Hooks: rustus's notifications of upload events (`rustus-compat.md` §3), through the
//! notifiers configured: an executable (`--hooks-file`), a directory of executables
//! (`--hooks-dir`), HTTP receivers (`--hooks-http-urls`), NATS (`--hooks-nats-urls`,
//! [`nats`]) and RabbitMQ (`--hooks-amqp-url`, [`amqp`]).
//!
//! # Notifiers
//!
//! Each transport is a [`Notifier`] ([`notifier`] says the contract); `hooks` knows them
//! only as a list in rustus's order (file, directory, each HTTP URL, NATS, AMQP), built
//! from [`TRANSPORTS`], the one place that names them. A notifier that can refuse a
//! pre-event (executables, HTTP, NATS with replies) blocks while it delivers and runs on
//! the hook workers; one that cannot (AMQP, NATS without replies) only queues for a
//! thread of its own.
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
//!   When no configured notifier can refuse, pre-events are handled like post-events and
//!   the request does not wait.
//! * **post-events** are fire-and-forget: the request does not wait for delivery. When
//!   the queue is full the request waits for room (a `try_send` retried after short
//!   async sleeps, up to [`POST_ROOM_WAIT`]) rather than dropping the event; an event
//!   that still finds no room is dropped, logged and counted.
//!
//! When no notifier can refuse, no worker is started: the core formats the message and
//! hands it to each notifier's own queue itself (one short mutex section each).
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
//! retries included. So stale progress does not hold back what follows it: a
//! `post-receive` whose delivery fails while a newer event of its upload is queued behind
//! it is not retried (it is *superseded*, logged and counted), and a retry pause ends
//! when such an event is queued ([`Delivery::retrying`]). Only those retries are skipped:
//! every event is attempted at every notifier, in order. The newer events are counted per
//! upload as they are queued (by the core, `Inner::behind`), so they are seen even while
//! no worker is free to take them from the channel.
//!
//! # Delivery
//!
//! The message is formatted once per event ([`payload`]). Each notifier gets every
//! post-event on its own (a failing file hook does not stop the HTTP hook), those that
//! only queue first; failures are logged with the event, the upload ID and the reason,
//! and counted ([`metrics::HOOK_COUNTERS`], rendered at `/metrics`), from the notifier's
//! [`Verdict`]. Pre-hooks go to the notifiers in rustus's order and the first refusal
//! (or failure) is the verdict.
//!
//! # Answers
//!
//! With `--hooks-answers`, a notifier that can refuse hands the pool the bytes of its
//! answer to `pre-create`, `pre-finish`, `pre-terminate` or `post-receive`
//! ([`answer_event`]); the pool parses them ([`answer::parse_answer`]) on the worker,
//! logs and counts one that is not taken, and sends the request the checked
//! [`answer::Answer`] (a refusal as [`HookError::Answered`]). A `post-receive` answer's
//! `StopUpload` has no request waiting for it: it goes to the stop sink the daemon set
//! ([`Hooks::on_stop`], `server::stops`) as a [`StopOrder`].
//!
//! # Shutdown
//!
//! `server::run` calls [`Hooks::shutdown`] after the cores have finished: the workers
//! deliver what is queued and exit; whatever is left at the deadline (the end of the
//! grace period) is logged and counted; then each notifier's own shutdown runs (in
//! parallel) against the same deadline: the queues of AMQP and NATS are drained, running
//! hook processes are killed.

pub mod amqp;
pub mod answer;
pub mod exec;
pub mod http;
pub mod nats;
pub mod notifier;
pub mod payload;

use std::cell::OnceCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select_biased, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::error::HookError;
use crate::http::head::RequestHead;
use crate::metrics;
use crate::storage::info::UploadInfo;
pub use notifier::{Answer, Delivery, Notifier, Retry, Verdict};
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
    /// Not a rustus event (tusd's): blocking, after the last byte is stored and before
    /// the request that completed the upload is answered. Never in the default list.
    PreFinish,
    PostFinish,
}

impl Event {
    /// Every event, in rustus's order, `pre-finish` (not rustus's) before `post-finish`.
    pub const ALL: [Event; 7] = [
        Event::PreCreate,
        Event::PostCreate,
        Event::PostReceive,
        Event::PreTerminate,
        Event::PostTerminate,
        Event::PreFinish,
        Event::PostFinish,
    ];

    /// rustus's events: the default of `--hooks` (`pre-finish` fires only when listed,
    /// so a deployment that does not know it behaves as under rustus).
    pub const RUSTUS: [Event; 6] = [
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
            Event::PreFinish => "pre-finish",
            Event::PostFinish => "post-finish",
        }
    }

    /// The event for a name, exactly as spelled by [`Event::name`].
    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Whether the request waits for the hook's verdict.
    pub fn is_pre(self) -> bool {
        matches!(
            self,
            Event::PreCreate | Event::PreTerminate | Event::PreFinish
        )
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

    /// rustus's events ([`Event::RUSTUS`]): the default of `--hooks`.
    pub fn rustus() -> EventSet {
        EventSet(Event::RUSTUS.iter().fold(0, |m, e| m | e.bit()))
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
// Settings and the transports
// ---------------------------------------------------------------------------------------

/// What the hooks take of the configuration: their rows of the flag table (`--hooks*`,
/// `--hook-timeout`, `--http-hook-timeout`, `--behind-proxy`), grouped per transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--hooks`: the events sent (all six by default).
    pub events: EventSet,
    /// `--hooks-format`.
    pub format: Format,
    /// `--hooks-answers`: blocking hooks may answer in tusd v2's shape ([`answer`]).
    pub answers: bool,
    /// `--behind-proxy`: the message's client address from `Forwarded`/`X-Forwarded-For`.
    pub behind_proxy: bool,
    /// `--hooks-workers`. Invariant: `1..=MAX_HOOK_WORKERS` (`config`).
    pub workers: usize,
    /// `--hooks-queue`: bound of each hook queue (pre-hooks, post-events).
    pub queue: usize,
    /// `--hooks-http-retries`, `--hooks-http-retry-backoff`: retries of a failed
    /// post-event by a notifier that blocks (HTTP; NATS with replies).
    pub retry: Retry,
    /// `--hooks-file`, `--hooks-dir`, `--hook-timeout`.
    pub exec: exec::ExecSettings,
    /// `--hooks-http-*`, `--http-hook-timeout`.
    pub http: http::HttpSettings,
    /// `--hooks-nats-*`.
    pub nats: nats::NatsConfig,
    /// `--hooks-amqp-*`.
    pub amqp: amqp::AmqpConfig,
}

/// Settings that cannot work together: the flag concerned and why (`config` makes it a
/// usage error).
pub type Conflict = (&'static str, String);

/// A transport's started notifiers, in order (none when it is off), or why it cannot
/// start.
type Started = Result<Vec<Box<dyn Notifier>>, String>;

/// One transport: whether the settings turn it on, how its notifiers are started, and its
/// own metrics, rendered at `/metrics` whatever the settings.
struct Transport {
    on: fn(&Settings) -> bool,
    /// Settings of this transport that cannot work together, checked (when it is on)
    /// before anything starts: the flag concerned and why.
    check: fn(&Settings) -> Result<(), Conflict>,
    start: fn(&Settings) -> Started,
    metrics: Option<fn(&mut String)>,
}

fn boxed<N: Notifier + 'static>(list: Vec<N>) -> Vec<Box<dyn Notifier>> {
    list.into_iter()
        .map(|n| Box::new(n) as Box<dyn Notifier>)
        .collect()
}

/// Every transport, in rustus's order (file, directory, HTTP, NATS, AMQP): the order of
/// pre-hook verdicts. Adding a transport is one line here, its module and its settings.
const TRANSPORTS: [Transport; 4] = [
    Transport {
        on: |s| s.exec.file.is_some() || s.exec.dir.is_some(),
        check: |_| Ok(()),
        start: |s| Ok(boxed(exec::notifiers(&s.exec, s.events))),
        metrics: None,
    },
    Transport {
        on: |s| !s.http.urls.is_empty(),
        check: |_| Ok(()),
        start: |s| Ok(boxed(http::notifiers(&s.http))),
        metrics: None,
    },
    Transport {
        on: |s| s.nats.is_on(),
        check: |s| s.nats.check(),
        start: |s| nats::notifiers(&s.nats).map(boxed),
        metrics: Some(nats::render_metrics),
    },
    Transport {
        on: |s| s.amqp.url.is_some(),
        check: |_| Ok(()),
        start: |s| amqp::notifiers(&s.amqp).map(boxed),
        metrics: Some(amqp::render_metrics),
    },
];

impl Settings {
    /// Combinations of settings that cannot work (a NATS subject and prefix together, a
    /// user without a password), for the transports that are on: the flag concerned and
    /// why. `config` makes this a usage error, before anything starts.
    pub fn check(&self) -> Result<(), Conflict> {
        for t in TRANSPORTS.iter().filter(|t| (t.on)(self)) {
            (t.check)(self)?;
        }
        Ok(())
    }
}

/// The transports' own metrics (`/metrics`).
pub fn render_transport_metrics(out: &mut String) {
    for render in TRANSPORTS.iter().filter_map(|t| t.metrics) {
        render(out);
    }
}

/// A started notifier and its `notifier` label slot in the metrics.
struct Entry {
    notifier: Box<dyn Notifier>,
    slot: usize,
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
    /// No notifier can refuse: no worker runs; the cores hand every event (pre-events
    /// included, which they do not wait for) to the notifiers' own queues themselves.
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
    reply: Option<oneshot::Sender<Result<answer::Answer, HookError>>>,
}

/// A `post-receive` answer's `StopUpload` (`--hooks-answers`), for the daemon to carry
/// out (`server::stops`): the upload as the event showed it, the answer's response for
/// the PATCH it cuts, whether to keep the upload, and the event's origin (for the
/// `post-terminate` of a removal).
#[derive(Debug, Clone)]
pub struct StopOrder {
    pub upload: UploadInfo,
    pub response: answer::HttpAnswer,
    pub keep: bool,
    pub origin: Origin,
}

/// Takes a [`StopOrder`] on a hook worker thread: must not block.
pub type StopSink = Box<dyn Fn(StopOrder) + Send + Sync>;

impl Hooks {
    /// Whether a hook can stop an upload from its `post-receive` answer: answers are read
    /// (`--hooks-answers`), `post-receive` is one of the events, and a notifier can answer
    /// (one that only queues, AMQP or NATS publishing, cannot).
    pub fn can_stop(&self) -> bool {
        self.wants(Event::PostReceive)
            && self
                .pool
                .as_ref()
                .is_some_and(|p| p.inner.answers && !p.no_verdict)
    }

    /// Sets where `post-receive` answers' stops go (once, before the cores start; a later
    /// call is ignored). Without one, a stop is logged and not carried out.
    pub fn on_stop(&self, sink: StopSink) {
        if let Some(pool) = &self.pool {
            let _ = pool.inner.stop_sink.set(sink);
        }
    }

    /// Queues a `post-receive` reporting progress during a body ([`Hooks::can_stop`]):
    /// never waits, since the request is receiving; dropped (and counted) when the queue
    /// is full, as the next report or the request's own `post-receive` supersedes it.
    pub fn post_progress(&self, upload: UploadInfo, origin: Origin) {
        let Some(pool) = self.pool.as_ref().filter(|_| self.can_stop()) else {
            return;
        };
        let mut counted = Counted::new(&pool.inner, &upload.id);
        let job = Job {
            event: Event::PostReceive,
            upload,
            origin,
            reply: None,
        };
        match pool.post_tx.try_send(job) {
            Ok(()) => counted.sent(),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                bump(&metrics::HOOK_COUNTERS.dropped, 1);
                crate::debug!(
                    "hook post-receive {}: progress report dropped: the queue is full",
                    job.upload.id
                );
            }
        }
    }

    /// No hooks: every event is ignored.
    pub fn disabled() -> Hooks {
        Hooks {
            events: EventSet::none(),
            pool: None,
        }
    }

    /// Starts the configured notifiers and the worker pool, or returns
    /// [`Hooks::disabled`] when no notifier (or no event) is configured. The notifiers
    /// check what they can at startup (hook files, settings) and log what cannot work,
    /// once; an error is a setting that cannot work at all.
    pub fn start(settings: &Settings) -> Result<Hooks, String> {
        if !TRANSPORTS.iter().any(|t| (t.on)(settings)) {
            return Ok(Hooks::disabled());
        }
        if settings.events.is_empty() {
            crate::warn!("hooks are configured but --hooks names no event: no hook will run");
            return Ok(Hooks::disabled());
        }
        let mut notifiers = Vec::new();
        for transport in &TRANSPORTS {
            for notifier in (transport.start)(settings)? {
                let slot = metrics::notifier_slot(notifier.kind());
                notifiers.push(Entry { notifier, slot });
            }
        }
        let no_verdict = !notifiers.iter().any(|e| e.notifier.can_refuse());
        let pre_wait = notifiers
            .iter()
            .map(|e| e.notifier.verdict_within())
            .fold(PRE_QUEUE_WAIT, Duration::saturating_add);
        let to: Vec<String> = notifiers.iter().map(|e| e.notifier.describe()).collect();
        let bound = settings.queue.max(1);
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
            format: settings.format,
            answers: settings.answers,
            retry: settings.retry,
            stop_sink: std::sync::OnceLock::new(),
        });
        // When nothing can refuse, the cores hand every event to the notifiers' queues
        // themselves (`Hooks::post`): a worker would never get a job, so none is started.
        let count = if no_verdict {
            0
        } else {
            settings.workers.max(1)
        };
        // Pre-events wait for a verdict (and get worker 0 to themselves) unless nothing
        // can refuse.
        let has_pre = settings.events.iter().any(Event::is_pre) && !no_verdict;
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
        let events: Vec<&str> = settings.events.iter().map(Event::name).collect();
        let workers_said = if no_verdict {
            "no hook worker: no notifier can refuse, the cores queue every event for it".to_owned()
        } else {
            format!("{count} worker(s), queue {bound}")
        };
        crate::info!(
            "hooks: {} to {} ({} format, {workers_said})",
            events.join(","),
            to.join(", "),
            settings.format.name(),
        );
        Ok(Hooks {
            events: settings.events,
            pool: Some(Pool {
                pre_tx,
                post_tx,
                stop_tx: Mutex::new(Some(stop_tx)),
                workers: Mutex::new(workers),
                inner,
                pre_wait,
                no_verdict,
                behind_proxy: settings.behind_proxy,
                proxy_headers: settings.http.proxy_headers.clone(),
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

    /// Asks the pre-hooks about `upload`; `Ok` lets the request through, with what the
    /// hooks answered besides (with `--hooks-answers`: an [`answer::Answer::Proceed`],
    /// checked; else no instruction). A refusal, an answer's included
    /// ([`HookError::Answered`]), is the `Err`. Awaits the verdict without blocking the
    /// core.
    pub async fn pre(
        &self,
        event: Event,
        upload: &UploadInfo,
        origin: Origin,
    ) -> Result<answer::Answer, HookError> {
        let Some(pool) = self.pool.as_ref().filter(|_| self.events.contains(event)) else {
            return Ok(answer::Answer::NONE);
        };
        if pool.no_verdict {
            // Nothing can refuse: nothing to wait for.
            self.post(event, upload.clone(), origin).await;
            return Ok(answer::Answer::NONE);
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
            // Every notifier only queues (`Notifier::deliver` of one that cannot refuse is
            // a short mutex push, never waiting for its server): the event goes straight
            // into their queues, without a hand-off to a hook worker thread. Events of one
            // upload are queued in the order they happen (each is queued while its
            // request holds the upload's lock).
            pool.inner.deliver_here(event, &upload, &origin);
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

    /// Events the notifiers hold in queues of their own, not yet delivered (0 without
    /// hooks).
    pub fn backlog(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| {
            p.inner.notifiers.iter().map(|e| e.notifier.backlog()).sum()
        })
    }

    /// Delivers what is queued, then stops the workers; gives up at `deadline`, logging
    /// and counting the events left; then each notifier's own shutdown runs against the
    /// same deadline (queues drained, running hook processes killed). Call once, after
    /// the cores have finished.
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
                crate::debug!("hook workers stopped: {:?}", metrics::HOOK_COUNTERS);
                break;
            }
            if Instant::now() >= deadline {
                let left = inner.pending();
                bump(&metrics::HOOK_COUNTERS.dropped, left as u64);
                crate::warn!(
                    "hooks: the grace period ended with {left} queued event(s) undelivered"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // In parallel: each may take until the deadline to drain its queue.
        std::thread::scope(|s| {
            for e in &inner.notifiers {
                s.spawn(move || e.notifier.shutdown(deadline));
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// The workers
// ---------------------------------------------------------------------------------------

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
    /// Signalled (with `behind`) when a count goes up: wakes a worker pausing before a
    /// retry of a post-receive that the new event supersedes.
    behind_cv: Condvar,
    /// Jobs waiting in `busy`.
    parked: AtomicUsize,
    /// Most jobs parked before receiving stops (so memory stays bounded).
    park_bound: usize,
    /// In rustus's order.
    notifiers: Vec<Entry>,
    format: Format,
    /// `--hooks-answers`.
    answers: bool,
    retry: Retry,
    /// Where a `post-receive` answer's `StopUpload` goes ([`Hooks::on_stop`]).
    stop_sink: std::sync::OnceLock<StopSink>,
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
            // post-event) keeps its upload's order.
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

    fn run(&self, mut job: Job) {
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
        let reply = job.reply.take();
        let json = payload::render(self.format, &job.upload, &job.origin.request);
        let tag = format!("{} {}", job.event, job.upload.id);
        let key = OnceCell::new();
        let pause =
            |pause: Duration| self.pause_unless_superseded(job.event, &job.upload.id, pause);
        let d = Delivery {
            event: job.event,
            upload_id: &job.upload.id,
            json: &json,
            origin: &job.origin,
            answers: self.answers && answer_event(job.event).is_some(),
            tag: &tag,
            key: &key,
            retry: self.retry,
            pause: &pause,
        };
        if job.event.is_pre() {
            let verdict = self.ask(&d);
            if let Some(reply) = reply {
                let _ = reply.send(verdict);
            }
        } else {
            self.notify(&d, &job.upload);
        }
    }

    /// A pre-hook: each notifier in rustus's order; the first that does not pass is the
    /// verdict. With answers ([`Delivery::answers`]), each one's answer is parsed as it
    /// comes: one that refuses is the verdict like any refusal; of those that go on, the
    /// first with an instruction is taken and a later one is logged and left.
    fn ask(&self, d: &Delivery<'_>) -> Result<answer::Answer, HookError> {
        let mut taken = answer::Answer::NONE;
        let mut taken_from = String::new();
        for entry in &self.notifiers {
            let got = self.deliver(entry, d).map(|said| match said {
                Some(Answer { bytes: Some(bytes) }) if d.answers => {
                    read_answer(d, &entry.notifier.name_for(d.event), &bytes)
                }
                _ => answer::Answer::NONE,
            });
            let got = match got {
                Ok(answer::Answer::Refuse(response)) => Err(HookError::Answered(response)),
                other => other,
            };
            match got {
                Ok(a) if a.is_none() => {}
                Ok(a) if taken.is_none() => {
                    taken = a;
                    taken_from = entry.notifier.name_for(d.event);
                }
                Ok(_) => crate::warn!(
                    "hook {}: the answer of {} is left: {taken_from} answered first",
                    d.tag,
                    entry.notifier.name_for(d.event)
                ),
                Err(e) => {
                    if e.is_verdict() {
                        bump(&metrics::HOOK_COUNTERS.rejected, 1);
                    }
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }

    /// A post-event: every notifier on its own, those that only queue first (a slow
    /// receiver does not delay them), then the others in rustus's order.
    /// With answers, a `post-receive` answer that stops the upload (`StopUpload`) is
    /// handed to the stop sink ([`Hooks::on_stop`]), the first one only.
    fn notify(&self, d: &Delivery<'_>, upload: &UploadInfo) {
        let (queues, blocking): (Vec<&Entry>, Vec<&Entry>) = self
            .notifiers
            .iter()
            .partition(|e| !e.notifier.can_refuse());
        let mut stopped_by: Option<String> = None;
        for entry in queues.into_iter().chain(blocking) {
            let said = self.deliver(entry, d);
            let Ok(Some(Answer { bytes: Some(bytes) })) = said else {
                continue;
            };
            if !d.answers {
                continue;
            }
            let via = entry.notifier.name_for(d.event);
            let answer::Answer::Stop { response, keep } = read_answer(d, &via, &bytes) else {
                continue;
            };
            if let Some(first) = &stopped_by {
                crate::warn!(
                    "hook {}: the stop of {via} is left: {first} stopped it first",
                    d.tag
                );
                continue;
            }
            stopped_by = Some(via);
            match self.stop_sink.get() {
                Some(sink) => sink(StopOrder {
                    upload: upload.clone(),
                    response,
                    keep,
                    origin: d.origin.clone(),
                }),
                None => crate::warn!("hook {}: StopUpload cannot be carried out here", d.tag),
            }
        }
    }

    /// The cores' path when no notifier can refuse: the message is formatted here and
    /// handed to every notifier's own queue (none of them waits).
    fn deliver_here(&self, event: Event, upload: &UploadInfo, origin: &Origin) {
        let json = payload::render(self.format, upload, &origin.request);
        let tag = format!("{event} {}", upload.id);
        let key = OnceCell::new();
        // Never sleeps on a core: a retry is never due (such notifiers do not retry).
        let give_up = |_pause: Duration| true;
        let d = Delivery {
            event,
            upload_id: &upload.id,
            json: &json,
            origin,
            answers: false,
            tag: &tag,
            key: &key,
            retry: Retry::default(),
            pause: &give_up,
        };
        for entry in &self.notifiers {
            let _ = self.deliver(entry, &d);
        }
    }

    /// One notifier's delivery, timed, counted and logged from its verdict: `Ok` with
    /// what it answered (`None` for an event it only queued), or the error a pre-event's
    /// request gets.
    fn deliver(&self, entry: &Entry, d: &Delivery<'_>) -> Result<Option<Answer>, HookError> {
        let stats = &metrics::HOOK_COUNTERS;
        let started = Instant::now();
        let verdict = entry.notifier.deliver(d);
        let took = started.elapsed();
        let count = |failed| metrics::hook_delivery(d.event, entry.slot, failed, took);
        let via = || entry.notifier.name_for(d.event);
        let tag = d.tag;
        match verdict {
            Verdict::Queued => Ok(None),
            Verdict::Pass(answer) => {
                bump(&stats.delivered, 1);
                count(false);
                Ok(Some(answer))
            }
            Verdict::Refuse { answer, why, quiet } if d.event.is_pre() => {
                // The hook doing its job: INFO.
                count(true);
                if quiet {
                    crate::debug!("hook {tag}: {}: {why}", via());
                } else {
                    crate::info!("hook {tag}: refused by {}: {why}", via());
                }
                Err(answer)
            }
            Verdict::Refuse { answer, why, quiet } | Verdict::Fail { answer, why, quiet } => {
                count(true);
                bump(&stats.failed, 1);
                if quiet {
                    crate::debug!("hook {tag}: {}: {why}", via());
                } else {
                    crate::warn!("hook {tag}: {} failed: {why}", via());
                }
                Err(answer)
            }
            Verdict::Superseded { why } => {
                count(true);
                bump(&stats.superseded, 1);
                crate::warn!(
                    "hook {tag}: {} failed: {why}; not retried: superseded by a newer event \
                     of the upload, delivered next",
                    via()
                );
                Err(HookError::Unavailable)
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

    /// Waits `pause` before a retry of an event of upload `id`. For a `post-receive`,
    /// returns `true` as soon as a newer event of its upload is queued behind it (at once
    /// if one already is): the progress it reports is stale, and retrying it would only
    /// hold back what comes next, so it is superseded. Only retries are skipped this way:
    /// every event gets its first attempt at every notifier, in order, and the other
    /// events (state changes a receiver must see) are retried as before.
    fn pause_unless_superseded(&self, event: Event, id: &str, pause: Duration) -> bool {
        if event != Event::PostReceive {
            std::thread::sleep(pause);
            return false;
        }
        let until = Instant::now() + pause;
        let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if behind.contains_key(id) {
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
}

/// The answer event of `event`, when a hook's answer to it is read (`--hooks-answers`).
pub fn answer_event(event: Event) -> Option<answer::AnswerEvent> {
    match event {
        Event::PreCreate => Some(answer::AnswerEvent::PreCreate),
        Event::PostReceive => Some(answer::AnswerEvent::PostReceive),
        Event::PreTerminate => Some(answer::AnswerEvent::PreTerminate),
        Event::PreFinish => Some(answer::AnswerEvent::PreFinish),
        _ => None,
    }
}

/// Parses the answer `via` gave to delivery `d`. One that is not valid is logged (WARN,
/// with the reason), counted, and is no instruction: nothing of it is applied. One whose
/// only fault is a `ChangeFileInfo.ID` that is not a valid upload ID refuses the creation
/// instead, with 400 and the reason: the hook meant the upload to have another ID, and
/// creating it under a random one would lose that.
fn read_answer(d: &Delivery<'_>, via: &str, bytes: &[u8]) -> answer::Answer {
    let Some(event) = answer_event(d.event) else {
        return answer::Answer::NONE;
    };
    match answer::parse_answer(event, bytes) {
        Ok(a) => {
            if !a.is_none() {
                crate::info!("hook {}: {via} answered: {}", d.tag, a.summary());
            }
            a
        }
        Err(e) => {
            bump(&metrics::HOOK_COUNTERS.bad_answers, 1);
            if let answer::AnswerError::Id { why, .. } = &e {
                crate::warn!(
                    "hook {}: {via} chose an upload ID that is not taken: {e}; the creation \
                     is refused with 400",
                    d.tag
                );
                return answer::Answer::Refuse(answer::HttpAnswer {
                    status: Some(400),
                    body: format!(
                        "The upload ID the pre-create hook chose is not valid: it {why}\n"
                    ),
                    headers: Vec::new(),
                });
            }
            crate::warn!(
                "hook {}: {via} gave an answer that is not taken: {e}; going on as if it \
                 had given no instruction",
                d.tag
            );
            answer::Answer::NONE
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
        assert!(Event::PreFinish.is_pre() && !Event::PostFinish.is_pre());
        let all = EventSet::all();
        assert_eq!(all.iter().count(), 7);
        let rustus = EventSet::rustus();
        assert_eq!(rustus.iter().count(), 6);
        assert!(!rustus.contains(Event::PreFinish));
        let s = EventSet::parse(" pre-create, ,post-finish,pre-create").unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Event::PreCreate, Event::PostFinish]
        );
        assert!(EventSet::parse("").unwrap().is_empty());
        let s = EventSet::parse("pre-finish,post-finish").unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Event::PreFinish, Event::PostFinish]
        );
        let e = EventSet::parse("pre-create,pre-receive").unwrap_err();
        assert!(e.contains("unknown hook 'pre-receive'"), "{e}");
        assert!(e.contains("post-terminate, pre-finish, post-finish"), "{e}");
        assert_eq!(
            EventSet::parse(
                "pre-create,post-create,post-receive,pre-terminate,post-terminate,post-finish"
            )
            .unwrap(),
            rustus
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
    fn answers_are_read_for_the_blocking_events_only_and_never_half_applied() {
        let origin = Origin {
            request: RequestPart {
                uri: "/files/".into(),
                method: "POST".into(),
                remote_addr: "127.0.0.1".into(),
                headers: Default::default(),
            },
            proxied: Vec::new(),
        };
        let key = OnceCell::new();
        let pause = |_d: Duration| false;
        let read = |event: Event, bytes: &[u8]| {
            let d = Delivery {
                event,
                upload_id: "id",
                json: "{}",
                origin: &origin,
                answers: true,
                tag: "t",
                key: &key,
                retry: Retry::default(),
                pause: &pause,
            };
            read_answer(&d, "test hook", bytes)
        };
        let meta = br#"{"ChangeFileInfo": {"MetaData": {"filename": "x"}}}"#;
        match read(Event::PreCreate, meta) {
            answer::Answer::Proceed { change, .. } => {
                assert_eq!(change.metadata.unwrap().get("filename"), Some("x"))
            }
            other => panic!("{other:?}"),
        }
        let with_id = br#"{"ChangeFileInfo": {"ID": "abc", "MetaData": {"filename": "x"}}}"#;
        match read(Event::PreCreate, with_id) {
            answer::Answer::Proceed { change, .. } => {
                assert_eq!(change.id.map(|i| i.to_string()).as_deref(), Some("abc"));
                assert_eq!(change.metadata.unwrap().get("filename"), Some("x"));
            }
            other => panic!("{other:?}"),
        }
        // An ID that is not valid refuses the creation whole (400, saying why).
        for bad in [
            &br#"{"ChangeFileInfo": {"ID": "../x", "MetaData": {"a": "1"}}}"#[..],
            br#"{"ChangeFileInfo": {"ID": "x.chk"}}"#,
        ] {
            match read(Event::PreCreate, bad) {
                answer::Answer::Refuse(r) => {
                    assert_eq!(r.status, Some(400));
                    assert!(
                        r.body
                            .starts_with("The upload ID the pre-create hook chose is not valid"),
                        "{}",
                        r.body
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(read(Event::PreCreate, b"not json").is_none());
        let reject = br#"{"RejectTermination": true}"#;
        assert!(matches!(
            read(Event::PreTerminate, reject),
            answer::Answer::Refuse(_)
        ));
        let url = br#"{"HTTPResponse": {"StatusCode": 200, "Body": "{\"url\": 1}"}}"#;
        match read(Event::PreFinish, url) {
            answer::Answer::Proceed { response, .. } => assert_eq!(response.status, Some(200)),
            other => panic!("{other:?}"),
        }
        let refuse = br#"{"HTTPResponse": {"StatusCode": 422}}"#;
        assert!(matches!(
            read(Event::PreFinish, refuse),
            answer::Answer::Refuse(_)
        ));
        let stop = br#"{"StopUpload": true, "KeepUpload": true}"#;
        assert!(matches!(
            read(Event::PostReceive, stop),
            answer::Answer::Stop { keep: true, .. }
        ));
        assert!(read(Event::PostReceive, reject).is_none());
        // Events whose answers are not read.
        for e in [Event::PostFinish, Event::PostCreate] {
            assert_eq!(answer_event(e), None);
            assert!(read(e, reject).is_none());
        }
    }

    #[test]
    fn default_worker_count() {
        assert_eq!(default_workers(1), 2);
        assert_eq!(default_workers(2), 4);
        assert_eq!(default_workers(1000), 64);
    }
}
