//! The NATS notifier (`--hooks-nats-urls`): every event published to a NATS server, as
//! rustus does (`rustus-compat.md` §3.9), without ever blocking a core, and without
//! losing an event it could deliver.
//!
//! # What is sent
//!
//! The subject is `<prefix>.<event>` with `--hooks-nats-prefix`, else the one
//! `--hooks-nats-subject`, else the event name. The payload is the hook message
//! (`--hooks-format`); the NATS headers are the client's request headers as the message
//! shows them (lowercase names, the last value of a repeated header). A value that is not
//! plain ASCII is left out, as it is from the message (rustus aborts the whole process on
//! one), and so is a name NATS cannot carry.
//!
//! # Two modes
//!
//! * **Publish** (the default): NATS gives no verdict, so the notifier cannot refuse and
//!   only queues ([`Nats::deliver`] pushes onto a bounded in-memory queue,
//!   [`QUEUE_SIZE`] events, the oldest dropped past it, logged and counted). A task on
//!   the notifier's own thread publishes in batches of up to [`MAX_BATCH`] and then asks
//!   the server for a round trip (a request to a subject nobody serves, answered by the
//!   server's "no responders" after everything published before it on the connection):
//!   only then does the batch count as delivered. A batch not confirmed (the connection
//!   lost, or re-established meanwhile, no answer within [`CONFIRM_TIMEOUT`]) goes back
//!   to the front of the queue and is published again after the reconnect: delivery is
//!   at least once, in queue order (an event published again may arrive twice). As with
//!   any plain NATS publish, an event the server accepted reaches the subscribers present
//!   at that moment only.
//! * **Replies** (`--hooks-nats-wait-for-replies`): each event is a request, and the
//!   notifier can refuse: a reply that is neither empty nor `OK` refuses a pre-event,
//!   answered [`REFUSAL_STATUS`] (400) with the reply as body (and the reply's
//!   `Content-Type` header, if any); rustus answers 500. No reply within
//!   [`REPLY_TIMEOUT`] (the client's default, as rustus) is 504, no responder or no
//!   connection 502. Post-events are retried like HTTP post-hooks. The hook workers wait
//!   for the replies (never a core).
//!
//! # Threads and the server away
//!
//! async-nats needs a tokio runtime; the cores' runtimes are not for blocking clients and
//! the hook workers are plain threads, so the notifier runs its own: one thread,
//! `tusring-nats`, with a current-thread runtime that holds the client (its connection
//! task, the publishing task, the requests of the replies mode). The daemon starts
//! whether the server answers or not; the client connects in the background and
//! reconnects for ever after a loss, pausing [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`].
//! Meanwhile, in publish mode, events wait in the queue and are published once connected.
//!
//! # Shutdown
//!
//! [`Nats::shutdown`] sets the deadline: the publishing task goes on (and reconnects)
//! until the queue is empty and confirmed, or the deadline; what is left is logged and
//! counted as dropped.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::client::{Request, RequestErrorKind};
use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, HeaderMap, HeaderName, ServerAddr};
use bytes::Bytes;
use tokio::sync::Notify;

use super::notifier::{Delivery, Notifier, Verdict};
use super::{Event, RequestPart};
use crate::error::HookError;
use crate::metrics;

/// Events held while the server is away or slow; past it the oldest are dropped.
pub const QUEUE_SIZE: usize = 100_000;

/// Most events published before asking the server for the round trip that confirms them.
pub const MAX_BATCH: usize = 1024;

/// Longest wait for a batch to be published and confirmed; past it the batch is
/// published again once connected.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for a reply (`--hooks-nats-wait-for-replies`): async-nats's default
/// request timeout, which rustus uses.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound of one connection attempt (TCP connect and the NATS handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// First pause after a failed connect or a lost connection; it doubles.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest pause between two connects: how late, at most, a server that came back is
/// noticed.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// How long startup waits for the first connection in the replies mode, so that the
/// first pre-events find it (the publish mode does not wait: its events queue).
pub const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(2);

/// The status a pre-event's request gets when a reply refuses it. 400, as for a refusal
/// by an executable hook (rustus's `Hook invocation failed`) and tusd's default for an
/// upload a hook rejects: a reply carries no status of its own, and 4xx tells a tus
/// client not to retry the same request (a 5xx, rustus's answer, makes it try again).
pub const REFUSAL_STATUS: u16 = 400;

/// Longest reply body relayed to the client.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// How often the publishing task looks at the connection while it is away.
const AWAY_TICK: Duration = Duration::from_millis(50);

/// NATS hook messages published (a message published again counts again).
pub static NATS_PUBLISHED: AtomicU64 = AtomicU64::new(0);
/// NATS hook events confirmed by the server's round trip (delivered).
pub static NATS_CONFIRMED: AtomicU64 = AtomicU64::new(0);
/// NATS hook events dropped: the queue was full, or left at the end of the grace period.
pub static NATS_DROPPED: AtomicU64 = AtomicU64::new(0);
/// NATS connections made (the first and every reconnect).
pub static NATS_CONNECTS: AtomicU64 = AtomicU64::new(0);
/// NATS hook events queued or in flight, not yet confirmed.
pub static NATS_BACKLOG: AtomicI64 = AtomicI64::new(0);
/// 1 while the client is connected.
pub static NATS_CONNECTED: AtomicI64 = AtomicI64::new(0);

/// The NATS notifier's counters and gauges, at `/metrics` whether NATS is on or not.
pub fn render_metrics(out: &mut String) {
    metrics::counters(
        out,
        &[
            (
                "tusring_nats_published_total",
                "NATS hook messages published (a message published again counts again).",
                &NATS_PUBLISHED,
            ),
            (
                "tusring_nats_confirmed_total",
                "NATS hook events confirmed by a round trip to the server.",
                &NATS_CONFIRMED,
            ),
            (
                "tusring_nats_dropped_total",
                "NATS hook events dropped: queue full, or left at the end of the grace period.",
                &NATS_DROPPED,
            ),
            (
                "tusring_nats_connects_total",
                "NATS connections made, reconnects included.",
                &NATS_CONNECTS,
            ),
        ],
    );
    metrics::gauges(
        out,
        &[
            (
                "tusring_nats_backlog",
                "NATS hook events queued or in flight, not yet confirmed.",
                &NATS_BACKLOG,
            ),
            (
                "tusring_nats_connected",
                "1 while the NATS client is connected.",
                &NATS_CONNECTED,
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The `--hooks-nats-*` settings.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsConfig {
    /// `--hooks-nats-urls`: the servers (`nats://host:port`, `host:port`); empty turns
    /// the notifier off.
    pub urls: Vec<String>,
    /// `--hooks-nats-subject`: one subject for every event.
    pub subject: Option<String>,
    /// `--hooks-nats-prefix`: subjects are `<prefix>.<event>`.
    pub prefix: Option<String>,
    /// `--hooks-nats-wait-for-replies`: requests, whose replies can refuse.
    pub wait_for_replies: bool,
    /// `--hooks-nats-user` (requires the password).
    pub user: Option<String>,
    /// `--hooks-nats-password` (requires the user).
    pub password: Option<String>,
    /// `--hooks-nats-token`.
    pub token: Option<String>,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redacted(u)).collect();
        f.debug_struct("NatsConfig")
            .field("urls", &urls)
            .field("subject", &self.subject)
            .field("prefix", &self.prefix)
            .field("wait_for_replies", &self.wait_for_replies)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl NatsConfig {
    /// Whether the notifier is on (`--hooks-nats-urls` given).
    pub fn is_on(&self) -> bool {
        !self.urls.is_empty()
    }

    /// The subject of `event`'s messages: `<prefix>.<event>`, else the one subject, else
    /// the event's name (rustus's order of precedence).
    pub fn subject(&self, event: Event) -> String {
        match (&self.prefix, &self.subject) {
            (Some(prefix), _) => format!("{prefix}.{}", event.name()),
            (None, Some(subject)) => subject.clone(),
            (None, None) => event.name().to_owned(),
        }
    }

    /// The combinations rustus refuses at startup: a subject and a prefix; a user without
    /// a password or the reverse. The error names the flag concerned and says why (a usage
    /// error: see `hooks::Settings::check`).
    pub fn check(&self) -> Result<(), super::Conflict> {
        let refuse = |flag, why: &str| Err((flag, why.to_owned()));
        if self.subject.is_some() && self.prefix.is_some() {
            return refuse(
                "--hooks-nats-subject",
                "--hooks-nats-subject and --hooks-nats-prefix cannot be used together",
            );
        }
        match (&self.user, &self.password) {
            (Some(_), None) => refuse(
                "--hooks-nats-user",
                "--hooks-nats-user requires --hooks-nats-password",
            ),
            (None, Some(_)) => refuse(
                "--hooks-nats-password",
                "--hooks-nats-password requires --hooks-nats-user",
            ),
            _ => Ok(()),
        }
    }
}

/// `--hooks-nats-urls`: a comma list of `nats://host[:port]` or `host[:port]` (items
/// trimmed, empty ones ignored). The error is the reason only.
pub fn parse_urls(text: &str) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let lower = item.to_ascii_lowercase();
        if ["tls://", "ws://", "wss://"]
            .iter()
            .any(|s| lower.starts_with(s))
        {
            return Err(format!(
                "'{}': only nats:// URLs are supported by this build",
                redacted(item)
            ));
        }
        if lower.contains("://") && !lower.starts_with("nats://") {
            return Err(format!("'{}': expected a nats:// URL", redacted(item)));
        }
        ServerAddr::from_str(item).map_err(|e| format!("'{}': {e}", redacted(item)))?;
        urls.push(item.to_owned());
    }
    if urls.is_empty() {
        return Err("no URL given".to_owned());
    }
    Ok(urls)
}

/// `--hooks-nats-subject`, `--hooks-nats-prefix`: a subject NATS accepts for a publish:
/// dot-separated tokens, none empty, no space or control character, no wildcard.
pub fn parse_subject(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("holds a space or control character".to_owned());
    }
    for token in text.split('.') {
        if token.is_empty() {
            return Err("holds an empty token (a leading, trailing or double dot)".to_owned());
        }
        if token == "*" || token == ">" {
            return Err("holds a wildcard (* or >), which cannot be published to".to_owned());
        }
    }
    Ok(text.to_owned())
}

/// The URL without its password or token, for the logs.
fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let shown = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}:***@{host}{tail}")
        }
        None => return url.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{shown}"),
        None => shown,
    }
}

/// The pause before connect attempt `attempts` (1 = the first after a loss).
fn backoff(attempts: usize) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    BACKOFF_MIN.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

// ---------------------------------------------------------------------------------------
// Messages and replies (pure)
// ---------------------------------------------------------------------------------------

/// The NATS headers of an event: the request's headers as the message shows them, each
/// name NATS cannot carry left out (there are none after HTTP's own rules, but a name is
/// never allowed to panic the client).
pub fn headers(request: &RequestPart) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &request.headers {
        if let Ok(name) = HeaderName::from_str(name) {
            map.insert(name, value.as_str());
        }
    }
    map
}

/// Why a delivery in the replies mode did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The reply was neither empty nor `OK`: the receiver refuses.
    Refused {
        /// The reply, at most [`MAX_REPLY_BYTES`] of it.
        body: Vec<u8>,
        /// The reply's `Content-Type` header, if it had one.
        content_type: Option<String>,
    },
    /// No responder is subscribed to the subject.
    NoResponders(String),
    /// No reply in time.
    Timeout,
    /// The client is not connected now.
    NotConnected,
    /// Anything else the client reported.
    Other(String),
}

impl Failure {
    /// Whether asking again may help (everything but a refusal).
    pub fn retryable(&self) -> bool {
        !matches!(self, Failure::Refused { .. })
    }

    /// The answer a pre-event's request gets, and whether it is the receiver's refusal.
    pub fn answer(self, event: Event) -> (HookError, bool) {
        match self {
            Failure::Refused { body, content_type } => (
                HookError::Rejected {
                    status: REFUSAL_STATUS,
                    body,
                    content_type,
                },
                true,
            ),
            Failure::Timeout => (HookError::Timeout(event.name()), false),
            Failure::NoResponders(_) | Failure::NotConnected | Failure::Other(_) => {
                (HookError::Unreachable(event.name()), false)
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused { body, .. } => {
                let shown: String = String::from_utf8_lossy(&body[..body.len().min(200)])
                    .escape_debug()
                    .collect();
                write!(f, "replied: {shown}")
            }
            Failure::NoResponders(subject) => write!(f, "no responders on {subject}"),
            Failure::Timeout => write!(f, "no reply within {:.0} s", REPLY_TIMEOUT.as_secs_f64()),
            Failure::NotConnected => f.write_str("not connected to the server"),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// rustus's reply convention: an empty reply or exactly `OK` passes; anything else is
/// a refusal carrying the reply. When the delivery reads answers (`answers`), a reply
/// that is JSON (a `{` or `null` after JSON whitespace) passes with itself as the answer
/// (the pool parses it; an invalid one is no instruction); any other reply keeps rustus's
/// meaning, so a plain-text refusal still refuses.
pub fn judge_reply(
    payload: &[u8],
    content_type: Option<&str>,
    answers: bool,
) -> Result<Option<Vec<u8>>, Failure> {
    if payload.is_empty() || payload == b"OK" {
        return Ok(None);
    }
    if answers && looks_like_json_answer(payload) {
        return Ok(Some(payload.to_vec()));
    }
    Err(Failure::Refused {
        body: payload[..payload.len().min(MAX_REPLY_BYTES)].to_vec(),
        content_type: content_type.map(str::to_owned),
    })
}

/// Whether a reply is meant as a JSON answer: its first byte after JSON whitespace opens
/// an object, or it is `null`.
fn looks_like_json_answer(payload: &[u8]) -> bool {
    let start = payload
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match start.map(|i| &payload[i..]) {
        Some(rest) => rest.starts_with(b"{") || rest.trim_ascii_end() == b"null",
        None => false,
    }
}

/// One event, ready to publish (formatted once).
#[derive(Debug, Clone)]
struct Message {
    event: Event,
    upload_id: String,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

/// Pushes `msg`, dropping the oldest events while the queue holds `bound` or more;
/// returns the dropped ones.
fn push_bounded(q: &mut VecDeque<Message>, msg: Message, bound: usize) -> Vec<Message> {
    let mut dropped = Vec::new();
    while q.len() >= bound.max(1) {
        match q.pop_front() {
            Some(old) => dropped.push(old),
            None => break,
        }
    }
    q.push_back(msg);
    dropped
}

// ---------------------------------------------------------------------------------------
// The notifier
// ---------------------------------------------------------------------------------------

/// The queue the cores (or the hook workers) fill and the publishing task drains.
#[derive(Default)]
struct Queue {
    /// Events not yet taken by the publisher, oldest first. Invariant: `len() <=
    /// QUEUE_SIZE` after every push (a batch put back after a failure may exceed it until
    /// the next push trims the oldest).
    waiting: VecDeque<Message>,
    /// Set by [`Nats::shutdown`]: publish what is queued, then stop, by this instant.
    stop_by: Option<Instant>,
}

/// What the notifier's callers and its thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled on a push and on shutdown (a permit is kept when nobody waits).
    wake: Notify,
    /// Events taken by the publisher and not yet confirmed.
    in_flight: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backlog(&self) -> usize {
        self.lock().waiting.len() + self.in_flight.load(Ordering::Relaxed)
    }

    fn publish_gauge(&self, waiting: usize) {
        let total = waiting + self.in_flight.load(Ordering::Relaxed);
        NATS_BACKLOG.store(total as i64, Ordering::Relaxed);
    }
}

/// The NATS notifier: the client on its own thread and, in publish mode, the queue.
pub struct Nats {
    config: NatsConfig,
    client: Client,
    runtime: tokio::runtime::Handle,
    shared: Arc<Shared>,
    /// Told when the thread is to finish (after the queue is drained or the deadline).
    stop: Arc<Notify>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The NATS notifier, when `--hooks-nats-urls` is set: its thread is started and the
/// client connects in the background.
pub fn notifiers(config: &NatsConfig) -> Result<Vec<Nats>, String> {
    if !config.is_on() {
        return Ok(Vec::new());
    }
    config.check().map_err(|(_, why)| why)?;
    Ok(vec![Nats::start(config)?])
}

impl Nats {
    /// Starts the thread with its runtime and the client. Does not wait for the server
    /// (but for [`FIRST_CONNECT_WAIT`] in the replies mode).
    fn start(config: &NatsConfig) -> Result<Nats, String> {
        let addrs = config
            .urls
            .iter()
            .map(|u| ServerAddr::from_str(u).map_err(|e| format!("{}: {e}", redacted(u))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut options = ConnectOptions::new()
            .name(concat!("tusring/", env!("CARGO_PKG_VERSION")))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REPLY_TIMEOUT))
            .reconnect_delay_callback(backoff)
            .event_callback(|event| async move { on_client_event(event) });
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
        });
        let stop = Arc::new(Notify::new());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let publish = !config.wait_for_replies;
        let (task_shared, task_stop) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("tusring-nats".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("cannot start the NATS runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let client = match options.connect(addrs).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = tx.send(Err(format!("NATS: {e}")));
                            return;
                        }
                    };
                    let handle = tokio::runtime::Handle::current();
                    if tx.send(Ok((client.clone(), handle))).is_err() {
                        return;
                    }
                    if publish {
                        publish_loop(&task_shared, &client).await;
                    } else {
                        task_stop.notified().await;
                    }
                    // Whatever was handed to the client goes out before the connection
                    // closes (bounded: the server may be away).
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
                });
            })
            .map_err(|e| format!("cannot start the NATS thread: {e}"))?;
        let (client, runtime) = rx
            .recv()
            .map_err(|_| "the NATS thread ended at startup".to_owned())??;
        let urls: Vec<String> = config.urls.iter().map(|u| redacted(u)).collect();
        crate::info!(
            "hooks: NATS {} subject {}, {}",
            urls.join(","),
            match (&config.prefix, &config.subject) {
                (Some(p), _) => format!("'{p}.<event>'"),
                (None, Some(s)) => format!("'{s}'"),
                (None, None) => "'<event>'".to_owned(),
            },
            if config.wait_for_replies {
                "waiting for replies (empty or OK passes)".to_owned()
            } else {
                format!("publishing, queue of {QUEUE_SIZE}")
            }
        );
        if config.wait_for_replies {
            let until = Instant::now() + FIRST_CONNECT_WAIT;
            while client.connection_state() != State::Connected && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if client.connection_state() != State::Connected {
                crate::warn!(
                    "hooks: NATS: not connected yet; pre-hook requests get 502 until it is"
                );
            }
        }
        Ok(Nats {
            config: config.clone(),
            client,
            runtime,
            shared,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `event` for the publishing task. Never waits for the server: when the queue
    /// is full the oldest event is dropped (logged, counted).
    fn enqueue(&self, d: &Delivery<'_>) {
        let msg = Message {
            event: d.event,
            upload_id: d.upload_id.to_owned(),
            subject: self.config.subject(d.event),
            headers: headers(&d.origin.request),
            payload: Bytes::copy_from_slice(d.json.as_bytes()),
        };
        let dropped = {
            let mut q = self.shared.lock();
            let dropped = push_bounded(&mut q.waiting, msg, QUEUE_SIZE);
            self.shared.publish_gauge(q.waiting.len());
            dropped
        };
        self.shared.wake.notify_one();
        for old in dropped {
            NATS_DROPPED.fetch_add(1, Ordering::Relaxed);
            crate::error!(
                "hook {} {}: NATS: dropped: {QUEUE_SIZE} events wait for the server",
                old.event,
                old.upload_id
            );
        }
    }

    /// One request and its reply (the replies mode), waited for on this (worker) thread:
    /// the reply when it is an answer the delivery reads.
    fn request(&self, d: &Delivery<'_>) -> Result<Option<Vec<u8>>, Failure> {
        if self.client.connection_state() != State::Connected {
            return Err(Failure::NotConnected);
        }
        let subject = self.config.subject(d.event);
        let request = Request::new()
            .headers(headers(&d.origin.request))
            .payload(Bytes::copy_from_slice(d.json.as_bytes()))
            .timeout(Some(REPLY_TIMEOUT));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let client = self.client.clone();
        let asked = subject.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(client.send_request(asked, request).await);
        });
        match rx.recv_timeout(REPLY_TIMEOUT + Duration::from_secs(1)) {
            Ok(Ok(reply)) => {
                let content_type = reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Content-Type"))
                    .map(|v| v.as_str().to_owned());
                judge_reply(&reply.payload, content_type.as_deref(), d.answers)
            }
            Ok(Err(e)) => Err(match e.kind() {
                RequestErrorKind::NoResponders => Failure::NoResponders(subject),
                RequestErrorKind::TimedOut => Failure::Timeout,
                _ => Failure::Other(e.to_string()),
            }),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

impl Notifier for Nats {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn describe(&self) -> String {
        let urls: Vec<String> = self.config.urls.iter().map(|u| redacted(u)).collect();
        format!("NATS {}", urls.join(","))
    }

    fn name_for(&self, event: Event) -> String {
        format!("NATS subject {}", self.config.subject(event))
    }

    /// Only with `--hooks-nats-wait-for-replies`: a reply is a verdict.
    fn can_refuse(&self) -> bool {
        self.config.wait_for_replies
    }

    fn verdict_within(&self) -> Duration {
        if self.config.wait_for_replies {
            REPLY_TIMEOUT
        } else {
            Duration::ZERO
        }
    }

    fn deliver(&self, d: &Delivery<'_>) -> Verdict {
        if !self.config.wait_for_replies {
            self.enqueue(d);
            return Verdict::Queued;
        }
        let via = self.name_for(d.event);
        match d.retrying(&via, || self.request(d), Failure::retryable) {
            Ok(answer) => d.passed(answer),
            Err(end) => end.verdict(|f| f.answer(d.event)),
        }
    }

    fn backlog(&self) -> usize {
        self.shared.backlog()
    }

    /// Publishes what is queued (publish mode), then stops the thread; gives up at
    /// `deadline`, logging and counting the events left.
    fn shutdown(&self, deadline: Instant) {
        let backlog = self.shared.backlog();
        if backlog > 0 {
            crate::info!("hooks: publishing {backlog} queued NATS event(s) before exit");
        }
        self.shared.lock().stop_by = Some(deadline);
        self.shared.wake.notify_one();
        self.stop.notify_one();
        let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        // The thread's own flush takes up to 1 s after the deadline.
        let until = deadline + Duration::from_secs(1);
        while !thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.shared.backlog();
        if thread.is_finished() {
            let _ = thread.join();
        }
        if left > 0 {
            NATS_DROPPED.fetch_add(left as u64, Ordering::Relaxed);
            crate::warn!(
                "hooks: the grace period ended with {left} NATS event(s) not confirmed by \
                 the server"
            );
        }
    }
}

/// Set once a client error (a failed connect) has been logged at WARN since the last
/// connection: the next ones, one per reconnect attempt, go to DEBUG.
static CLIENT_ERROR_SAID: AtomicBool = AtomicBool::new(false);

/// The client's connection events: logged, and the connected gauge kept.
fn on_client_event(event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            NATS_CONNECTS.fetch_add(1, Ordering::Relaxed);
            NATS_CONNECTED.store(1, Ordering::Relaxed);
            CLIENT_ERROR_SAID.store(false, Ordering::Relaxed);
            crate::info!("hooks: NATS: connected");
        }
        async_nats::Event::ClientError(e) => {
            if CLIENT_ERROR_SAID.swap(true, Ordering::Relaxed) {
                crate::debug!("hooks: NATS: {e}");
            } else {
                crate::warn!(
                    "hooks: NATS: {e}; retrying (further errors at DEBUG until connected)"
                );
            }
        }
        async_nats::Event::Disconnected => {
            NATS_CONNECTED.store(0, Ordering::Relaxed);
            crate::warn!(
                "hooks: NATS: disconnected; reconnecting every {:.1}-{:.0} s",
                BACKOFF_MIN.as_secs_f64(),
                BACKOFF_MAX.as_secs_f64()
            );
        }
        other => crate::warn!("hooks: NATS: {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// The publishing task
// ---------------------------------------------------------------------------------------

/// The publish mode's task: takes batches off the queue while connected, publishes and
/// confirms them, puts back what was not confirmed; returns when shutdown finds the queue
/// empty, or at the deadline.
async fn publish_loop(shared: &Shared, client: &Client) {
    // A subject nobody serves: the server answers a request to it with "no responders",
    // after everything published before on the same connection.
    let confirm_subject = format!("_INBOX.tusring-confirm.{}", uuid::Uuid::new_v4().simple());
    let mut failures: u32 = 0;
    let mut said_away = false;
    loop {
        let (has_work, stop_by) = {
            let q = shared.lock();
            (!q.waiting.is_empty(), q.stop_by)
        };
        if let Some(by) = stop_by {
            if !has_work || Instant::now() >= by {
                return;
            }
        }
        if !has_work {
            shared.wake.notified().await;
            continue;
        }
        if client.connection_state() != State::Connected {
            if !said_away {
                said_away = true;
                crate::warn!(
                    "hooks: NATS: not connected; {} event(s) wait for the server",
                    shared.backlog()
                );
            }
            sleep_until_stop(AWAY_TICK, stop_by).await;
            continue;
        }
        let batch: Vec<Message> = {
            let mut q = shared.lock();
            let n = q.waiting.len().min(MAX_BATCH);
            let batch: Vec<Message> = q.waiting.drain(..n).collect();
            shared.in_flight.store(batch.len(), Ordering::Relaxed);
            shared.publish_gauge(q.waiting.len());
            batch
        };
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        let limit = stop_by.map_or(CONFIRM_TIMEOUT, |by| {
            by.saturating_duration_since(Instant::now())
                .min(CONFIRM_TIMEOUT)
        });
        let sent =
            tokio::time::timeout(limit, publish_and_confirm(client, &batch, &confirm_subject))
                .await
                .unwrap_or_else(|_| Err("no confirmation in time".to_owned()));
        // A reconnect meanwhile may have lost what the old connection had not written.
        let same_connection = client.statistics().connects.load(Ordering::Relaxed) == connects;
        match sent {
            Ok(()) if same_connection => {
                NATS_CONFIRMED.fetch_add(batch.len() as u64, Ordering::Relaxed);
                shared.in_flight.store(0, Ordering::Relaxed);
                shared.publish_gauge(shared.lock().waiting.len());
                if failures > 0 || said_away {
                    crate::info!("hooks: NATS: events are confirmed again");
                }
                failures = 0;
                said_away = false;
            }
            result => {
                let why = match result {
                    Err(why) => why,
                    Ok(()) => "the connection was re-established meanwhile".to_owned(),
                };
                let n = batch.len();
                {
                    let mut q = shared.lock();
                    for msg in batch.into_iter().rev() {
                        q.waiting.push_front(msg);
                    }
                    shared.in_flight.store(0, Ordering::Relaxed);
                    shared.publish_gauge(q.waiting.len());
                }
                failures = failures.saturating_add(1);
                if failures == 1 {
                    crate::warn!(
                        "hooks: NATS: {n} event(s) not confirmed ({why}); publishing them \
                         again once connected"
                    );
                } else {
                    crate::debug!("hooks: NATS: batch not confirmed ({why}), {failures} in a row");
                }
                sleep_until_stop(backoff(failures as usize), stop_by).await;
            }
        }
    }
}

/// Publishes `batch` in order, then waits for the server's round trip.
async fn publish_and_confirm(
    client: &Client,
    batch: &[Message],
    confirm_subject: &str,
) -> Result<(), String> {
    for msg in batch {
        client
            .publish_with_headers(
                msg.subject.clone(),
                msg.headers.clone(),
                msg.payload.clone(),
            )
            .await
            .map_err(|e| format!("publish: {e}"))?;
        NATS_PUBLISHED.fetch_add(1, Ordering::Relaxed);
    }
    let probe = Request::new().timeout(Some(CONFIRM_TIMEOUT));
    match client.send_request(confirm_subject.to_owned(), probe).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(format!("round trip: {e}")),
    }
}

/// Sleeps `pause`, or until the stop deadline when it is nearer.
async fn sleep_until_stop(pause: Duration, stop_by: Option<Instant>) {
    let pause = stop_by.map_or(pause, |by| {
        pause.min(by.saturating_duration_since(Instant::now()))
    });
    tokio::time::sleep(pause).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn subjects_in_rustus_order_of_precedence() {
        let mut c = NatsConfig::default();
        assert_eq!(c.subject(Event::PreCreate), "pre-create");
        c.subject = Some("uploads".into());
        assert_eq!(c.subject(Event::PostFinish), "uploads");
        c.prefix = Some("tus.hooks".into());
        assert_eq!(c.subject(Event::PostFinish), "tus.hooks.post-finish");
        // rustus refuses the two together at startup.
        let (flag, why) = c.check().unwrap_err();
        assert_eq!(flag, "--hooks-nats-subject");
        assert!(why.contains("cannot be used together"), "{why}");
        c.subject = None;
        assert_eq!(c.check(), Ok(()));
        c.user = Some("u".into());
        let (flag, why) = c.check().unwrap_err();
        assert_eq!(flag, "--hooks-nats-user");
        assert!(why.contains("requires --hooks-nats-password"), "{why}");
        c.password = Some("p".into());
        assert_eq!(c.check(), Ok(()));
        c.user = None;
        let (flag, why) = c.check().unwrap_err();
        assert_eq!(flag, "--hooks-nats-password");
        assert!(why.contains("requires --hooks-nats-user"), "{why}");
    }

    #[test]
    fn url_lists() {
        assert_eq!(
            parse_urls(" nats://a:4222, b:1 ,,localhost").unwrap(),
            ["nats://a:4222", "b:1", "localhost"]
        );
        assert!(parse_urls("").is_err());
        assert!(parse_urls(" , ").is_err());
        let e = parse_urls("tls://u:secret@a:4222").unwrap_err();
        assert!(e.contains("only nats://") && !e.contains("secret"), "{e}");
        assert!(parse_urls("http://a")
            .unwrap_err()
            .contains("expected a nats://"));
        assert!(parse_urls("nats://a:notaport").is_err());
    }

    #[test]
    fn subject_rules() {
        assert_eq!(parse_subject(" a.b-c_d "), Ok("a.b-c_d".to_owned()));
        for bad in ["", "a b", "a..b", ".a", "a.", "a.*", ">", "a\tb"] {
            assert!(parse_subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replies_pass_when_empty_or_ok() {
        for answers in [false, true] {
            assert_eq!(judge_reply(b"", None, answers), Ok(None));
            assert_eq!(judge_reply(b"OK", None, answers), Ok(None));
        }
        // With answers, a JSON reply is the answer; without, a refusal as in rustus.
        for json in [&b"{}"[..], b" {\"RejectUpload\":true}", b"{bad", b"null\n"] {
            assert_eq!(judge_reply(json, None, true), Ok(Some(json.to_vec())));
            assert!(judge_reply(json, None, false).is_err());
        }
        for refusal in [&b"ok"[..], b"OK ", b"no", b"\xff", b"nullx", b"[1]"] {
            assert!(judge_reply(refusal, None, true).is_err(), "{refusal:?}");
            let e = judge_reply(refusal, Some("text/plain"), false).unwrap_err();
            assert_eq!(
                e,
                Failure::Refused {
                    body: refusal.to_vec(),
                    content_type: Some("text/plain".into())
                }
            );
            let (answer, refused) = e.answer(Event::PreCreate);
            assert!(refused);
            assert_eq!(answer.status(), REFUSAL_STATUS);
            assert_eq!(answer.message(), String::from_utf8_lossy(refusal));
        }
        let big = vec![b'x'; MAX_REPLY_BYTES + 10];
        match judge_reply(&big, None, false) {
            Err(Failure::Refused { body, .. }) => assert_eq!(body.len(), MAX_REPLY_BYTES),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failures_map_to_answers() {
        let e = Event::PreTerminate;
        assert_eq!(Failure::Timeout.answer(e).0.status(), 504);
        assert_eq!(Failure::NotConnected.answer(e).0.status(), 502);
        assert_eq!(Failure::NoResponders("s".into()).answer(e).0.status(), 502);
        assert!(!Failure::Timeout.answer(e).1);
        assert!(Failure::Timeout.retryable() && Failure::NotConnected.retryable());
        assert!(!judge_reply(b"no", None, false).unwrap_err().retryable());
    }

    #[test]
    fn headers_are_the_request_headers() {
        let mut h = BTreeMap::new();
        h.insert("authorization".to_owned(), "Bearer x".to_owned());
        h.insert("upload-length".to_owned(), "10".to_owned());
        h.insert("bad:name".to_owned(), "v".to_owned());
        h.insert("sp ace".to_owned(), "v".to_owned());
        let request = RequestPart {
            uri: "/files/".into(),
            method: "POST".into(),
            remote_addr: "127.0.0.1".into(),
            headers: h,
        };
        let map = headers(&request);
        assert_eq!(
            map.get("authorization").map(|v| v.as_str()),
            Some("Bearer x")
        );
        assert_eq!(map.get("upload-length").map(|v| v.as_str()), Some("10"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn redaction_and_backoff() {
        assert_eq!(redacted("nats://u:p@h:1"), "nats://u:***@h:1");
        assert_eq!(redacted("tok@h"), "tok:***@h");
        assert_eq!(redacted("nats://h:1"), "nats://h:1");
        assert_eq!(backoff(1), BACKOFF_MIN);
        assert_eq!(backoff(2), BACKOFF_MIN * 2);
        assert_eq!(backoff(100), BACKOFF_MAX);
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let msg = |n: &str| Message {
            event: Event::PostCreate,
            upload_id: n.to_owned(),
            subject: "s".into(),
            headers: HeaderMap::new(),
            payload: Bytes::new(),
        };
        let mut q = VecDeque::new();
        assert!(push_bounded(&mut q, msg("a"), 2).is_empty());
        assert!(push_bounded(&mut q, msg("b"), 2).is_empty());
        let dropped = push_bounded(&mut q, msg("c"), 2);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].upload_id, "a");
        let left: Vec<&str> = q.iter().map(|m| m.upload_id.as_str()).collect();
        assert_eq!(left, ["b", "c"]);
    }
}
