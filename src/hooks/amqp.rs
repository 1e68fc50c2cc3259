//! The AMQP notifier (`--hooks-amqp-url`): every event published to RabbitMQ, as rustus
//! does (`rustus-compat.md` §3.7), but never blocking a request and never losing an
//! event it could deliver.
//!
//! # Shape
//!
//! A hook worker formats the event once (as for the other notifiers) and hands it to
//! [`Amqp::enqueue`], which only takes a mutex and pushes onto a bounded in-memory
//! queue (`--hooks-amqp-queue-size`): the worker is never held by the broker, so
//! neither is the request, pre-create included (the AMQP notifier has no verdict).
//!
//! One publisher thread (`tusring-amqp`) owns the connection and its one channel. It
//! takes up to [`MAX_BATCH`] events from the front of the queue, publishes them, and
//! waits for the broker's publisher confirms; an event counts as delivered only once
//! the broker has acked it. Events that were not confirmed (the connection dropped,
//! the broker nacked, no confirm within [`CONFIRM_TIMEOUT`]) go back to the front of
//! the queue, in their order, and are published again: delivery is at least once, in
//! the order the events were queued (an event published again may arrive twice). A
//! broker that nacks (a full queue with `x-overflow: reject-publish`) is asked again as
//! after a lost connection: after a doubling pause, and one event at a time until it
//! acks one, never in a loop.
//!
//! # Broker away
//!
//! The daemon starts whether the broker answers or not. The publisher connects at
//! startup, and again whenever the connection is lost, with a doubling backoff from
//! [`BACKOFF_MIN`] to [`BACKOFF_MAX`]; every connect declares the exchange and queues
//! again when asked to (a broker restart forgets transient ones). While the broker is
//! away events wait in the queue; when it is full, the oldest is dropped, logged and
//! counted (`tusring_amqp_dropped_total`).
//!
//! # Shutdown
//!
//! [`Amqp::shutdown`] runs after the hook workers have drained: the publisher keeps
//! publishing (and reconnecting) until the queue is empty and confirmed, or until the
//! deadline (the end of the grace period); what is left then is logged and counted.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use amiquip::{
    AmqpProperties, AmqpValue, Channel, Confirm, ConfirmSmoother, Connection,
    ExchangeDeclareOptions, ExchangeType, FieldTable, Publish, QueueDeclareOptions,
};
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::notifier::{Delivery, Notifier, Verdict};
use super::Event;
use crate::metrics;

/// Most events published before waiting for their confirms.
pub const MAX_BATCH: usize = 2048;

/// Longest wait for the broker to confirm a batch; past it the connection is
/// considered dead, dropped, and the unconfirmed events published again.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// First pause after a failed connect or a lost connection.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest pause between two connects: how late, at most, the publisher notices a
/// broker that came back.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Bound of a TCP connect and AMQP handshake, unless the URL sets `connection_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// AMQP heartbeat asked for, in seconds, unless the URL sets `heartbeat`.
pub const HEARTBEAT_SECS: u16 = 30;

/// The default of `--hooks-amqp-queue-size`.
pub const DEFAULT_QUEUE_SIZE: usize = 100_000;

/// Largest `--hooks-amqp-queue-size`.
pub const MAX_QUEUE_SIZE: usize = 1 << 24;

/// How often an idle publisher checks `--hooks-amqp-idle-*-timeout` and shutdown.
const IDLE_TICK: Duration = Duration::from_millis(500);

/// AMQP delivery mode of a persistent message.
const PERSISTENT: u8 = 2;

/// AMQP hook messages published (a message published again counts again).
pub static AMQP_PUBLISHED: AtomicU64 = AtomicU64::new(0);
/// AMQP hook events confirmed by the broker (delivered).
pub static AMQP_CONFIRMED: AtomicU64 = AtomicU64::new(0);
/// AMQP hook events dropped: the queue was full, or left at the end of the grace period.
pub static AMQP_DROPPED: AtomicU64 = AtomicU64::new(0);
/// AMQP connections opened (the first and every reconnect).
pub static AMQP_CONNECTS: AtomicU64 = AtomicU64::new(0);
/// AMQP hook events queued or in flight, not yet confirmed.
pub static AMQP_BACKLOG: AtomicI64 = AtomicI64::new(0);
/// 1 while the AMQP publisher has an open connection.
pub static AMQP_CONNECTED: AtomicI64 = AtomicI64::new(0);

/// The AMQP notifier's counters and gauges, at `/metrics` whether AMQP is on or not.
pub fn render_metrics(out: &mut String) {
    metrics::counters(
        out,
        &[
            (
                "tusring_amqp_published_total",
                "AMQP hook messages published (a message published again counts again).",
                &AMQP_PUBLISHED,
            ),
            (
                "tusring_amqp_confirmed_total",
                "AMQP hook events confirmed by the broker.",
                &AMQP_CONFIRMED,
            ),
            (
                "tusring_amqp_dropped_total",
                "AMQP hook events dropped: queue full, or left at the end of the grace period.",
                &AMQP_DROPPED,
            ),
            (
                "tusring_amqp_connects_total",
                "AMQP connections opened, reconnects included.",
                &AMQP_CONNECTS,
            ),
        ],
    );
    metrics::gauges(
        out,
        &[
            (
                "tusring_amqp_backlog",
                "AMQP hook events queued or in flight, not yet confirmed by the broker.",
                &AMQP_BACKLOG,
            ),
            (
                "tusring_amqp_connected",
                "1 while the AMQP publisher has an open connection.",
                &AMQP_CONNECTED,
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The `--hooks-amqp-*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// `--hooks-amqp-url`: `amqp://...`; `None` turns the notifier off.
    pub url: Option<String>,
    /// `--hooks-amqp-exchange`.
    pub exchange: String,
    /// `--hooks-amqp-exchange-kind`: `direct`, `fanout`, `topic`, `headers` or a
    /// plugin's `x-...` kind.
    pub exchange_kind: String,
    /// `--hooks-amqp-routing-key`: one key (and one queue) for every event.
    pub routing_key: Option<String>,
    /// `--hooks-amqp-queues-prefix`: routing keys and queues are `{prefix}.{event}`.
    pub queues_prefix: String,
    /// `--hooks-amqp-declare-exchange`.
    pub declare_exchange: bool,
    /// `--hooks-amqp-declare-queues`.
    pub declare_queues: bool,
    /// `--hooks-amqp-durable-exchange` (rustus: `--hooks_amqp_durable_exchange`).
    pub durable_exchange: bool,
    /// `--hooks-amqp-durable-queues`; also makes the messages persistent.
    pub durable_queues: bool,
    /// `--hooks-amqp-auto-delete`: declared exchange and queues are auto-delete.
    pub auto_delete: bool,
    /// `--hooks-amqp-celery`: Celery protocol v2 task messages.
    pub celery: bool,
    /// `--hooks-amqp-queue-size`: events held while the broker is away. Invariant:
    /// `1..=MAX_QUEUE_SIZE`.
    pub queue_size: usize,
    /// `--hooks-amqp-connection-pool-size`: accepted for rustus; one connection is used.
    pub connection_pool_size: usize,
    /// `--hooks-amqp-channel-pool-size`: accepted for rustus; one channel is used.
    pub channel_pool_size: usize,
    /// `--hooks-amqp-idle-connection-timeout`: close the connection after this long
    /// without an event (reopened by the next one).
    pub idle_connection_timeout: Option<Duration>,
    /// `--hooks-amqp-idle-channels-timeout`: the same for the channel; tusring's one
    /// channel lives as long as its connection, so the shorter of the two applies.
    pub idle_channels_timeout: Option<Duration>,
}

impl AmqpConfig {
    /// How long the connection may stay idle, if bounded.
    pub fn idle_timeout(&self) -> Option<Duration> {
        match (self.idle_connection_timeout, self.idle_channels_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The routing key of `event`'s messages.
    pub fn routing_key(&self, event: Event) -> String {
        match &self.routing_key {
            Some(key) => key.clone(),
            None => format!("{}.{}", self.queues_prefix, event.name()),
        }
    }

    /// The queues `--hooks-amqp-declare-queues` declares (each bound with binding key
    /// = its name): one per rustus event ([`Event::RUSTUS`]: not `pre-finish`), whatever
    /// `--hooks` says, or the one routing-key queue.
    pub fn queues(&self) -> Vec<String> {
        match &self.routing_key {
            Some(key) => vec![key.clone()],
            None => Event::RUSTUS.iter().map(|e| self.routing_key(*e)).collect(),
        }
    }

    /// Whether messages are published persistent (delivery mode 2): when the queues
    /// are durable, and in Celery mode (as Celery itself publishes).
    pub fn persistent(&self) -> bool {
        self.durable_queues || self.celery
    }
}

/// `--hooks-amqp-url`: an `amqp://` URL with a host. The error is the reason only.
pub fn parse_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("amqps://") {
        return Err("amqps:// (TLS) is not supported by this build; use amqp://".to_owned());
    }
    let Some(rest) = lower.strip_prefix("amqp://") else {
        return Err("expected an amqp:// URL".to_owned());
    };
    if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
        return Err("the URL names no host".to_owned());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL holds a space or control character".to_owned());
    }
    Ok(text.to_owned())
}

/// `--hooks-amqp-exchange-kind`: a kind RabbitMQ knows (the four built-in ones, any
/// case) or a plugin's `x-...` kind, kept as given.
pub fn parse_exchange_kind(text: &str) -> Result<String, String> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    if ["direct", "fanout", "topic", "headers"].contains(&lower.as_str()) {
        Ok(lower)
    } else if lower.len() > 2
        && lower.starts_with("x-")
        && text.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(text.to_owned())
    } else {
        Err("expected direct, fanout, topic, headers or a plugin's x-... kind".to_owned())
    }
}

/// An exchange or queue name or routing key: at most 255 bytes (AMQP short string).
pub fn parse_name(text: &str) -> Result<String, String> {
    const MAX_NAME_BYTES: usize = 255;
    if text.len() > MAX_NAME_BYTES {
        return Err(format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err("holds a control character".to_owned());
    }
    Ok(text.to_owned())
}

/// The URL given to amiquip: `connection_timeout` and `heartbeat` added unless set.
fn connect_url(url: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let has = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
    let mut out = url.to_owned();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    if !has("connection_timeout") {
        out.push(sep);
        out.push_str(&format!(
            "connection_timeout={}",
            CONNECT_TIMEOUT.as_millis()
        ));
        sep = '&';
    }
    if !has("heartbeat") {
        out.push(sep);
        out.push_str(&format!("heartbeat={HEARTBEAT_SECS}"));
    }
    out
}

/// The URL without its password, for the logs.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// The pause after `failures` failures in a row: doubling from [`BACKOFF_MIN`], capped.
fn backoff(failures: u32) -> Duration {
    BACKOFF_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// One event, ready to publish (formatted once, on the hook worker).
#[derive(Debug, Clone)]
struct Message {
    event: Event,
    upload_id: String,
    routing_key: String,
    body: Vec<u8>,
    /// Celery mode: the task id (kept when the message is published again).
    task_id: Option<String>,
}

/// The Celery protocol v2 body for one argument: `[[payload], {}, embed]`. `payload` is
/// the hook message, embedded as a JSON value (the task gets a dict, as with rustus).
fn celery_body(payload: &str) -> String {
    format!(
        "[[{payload}], {{}}, {{\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}}]"
    )
}

/// Longest `argsrepr` header, in characters (Celery truncates its own too).
const MAX_ARGSREPR_CHARS: usize = 1024;

/// The Celery protocol v2 headers of task `rustus.<event>` with id `id`.
fn celery_headers(event: Event, id: &str, payload: &str, origin: &str) -> FieldTable {
    let text = |s: String| AmqpValue::LongString(s);
    let mut argsrepr: String = format!("[{payload}]");
    if argsrepr.chars().count() > MAX_ARGSREPR_CHARS {
        argsrepr = argsrepr.chars().take(MAX_ARGSREPR_CHARS - 3).collect();
        argsrepr.push_str("...");
    }
    let mut h = FieldTable::new();
    h.insert("lang".into(), text("py".into()));
    h.insert("task".into(), text(format!("rustus.{}", event.name())));
    h.insert("id".into(), text(id.to_owned()));
    h.insert("shadow".into(), AmqpValue::Void);
    h.insert("eta".into(), AmqpValue::Void);
    h.insert("expires".into(), AmqpValue::Void);
    h.insert("group".into(), AmqpValue::Void);
    h.insert("group_index".into(), AmqpValue::Void);
    h.insert("retries".into(), AmqpValue::LongInt(0));
    h.insert(
        "timelimit".into(),
        AmqpValue::FieldArray(vec![AmqpValue::Void, AmqpValue::Void]),
    );
    h.insert("root_id".into(), text(id.to_owned()));
    h.insert("parent_id".into(), AmqpValue::Void);
    h.insert("argsrepr".into(), text(argsrepr));
    h.insert("kwargsrepr".into(), text("{}".into()));
    h.insert("origin".into(), text(origin.to_owned()));
    h.insert("ignore_result".into(), AmqpValue::Boolean(false));
    h
}

/// The properties of a message: JSON in UTF-8, persistent when asked; in Celery mode
/// the task headers and `correlation_id` = task id.
fn properties(config: &AmqpConfig, msg: &Message, origin: &str) -> AmqpProperties {
    let mut p = AmqpProperties::default()
        .with_content_type("application/json".to_owned())
        .with_content_encoding("utf-8".to_owned());
    if config.persistent() {
        p = p.with_delivery_mode(PERSISTENT);
    }
    match &msg.task_id {
        Some(id) => {
            let payload = std::str::from_utf8(&msg.body).unwrap_or("");
            // The payload inside `[[payload], {}, {...}]`, for argsrepr.
            let inner = payload
                .strip_prefix("[[")
                .and_then(|s| s.rsplit_once("], {}, {").map(|(p, _)| p))
                .unwrap_or("");
            p.with_headers(celery_headers(msg.event, id, inner, origin))
                .with_correlation_id(id.clone())
        }
        None => p.with_headers(FieldTable::new()),
    }
}

// ---------------------------------------------------------------------------------------
// The queue
// ---------------------------------------------------------------------------------------

/// The bounded queue the hook workers fill and the publisher drains.
#[derive(Debug, Default)]
struct Queue {
    /// Events not yet taken by the publisher, oldest first. Invariant: `len() <= bound`
    /// after every push (events put back after a failure may exceed it until the next
    /// push trims the oldest).
    waiting: VecDeque<Message>,
    /// Set by [`Amqp::shutdown`]: publish what is queued, then stop, by this instant.
    stop_by: Option<Instant>,
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

/// What the hook workers and the publisher share.
struct Shared {
    config: AmqpConfig,
    queue: Mutex<Queue>,
    /// Signalled on a push and on shutdown.
    wake: Condvar,
    /// Events taken by the publisher and not yet confirmed.
    in_flight: AtomicUsize,
    /// The `origin` header of Celery messages: `tusring@<host>`.
    origin: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backlog(&self) -> usize {
        self.lock().waiting.len() + self.in_flight.load(Ordering::Relaxed)
    }

    fn publish_gauges(&self, waiting: usize) {
        let total = waiting + self.in_flight.load(Ordering::Relaxed);
        AMQP_BACKLOG.store(total as i64, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// The handle the hook workers use
// ---------------------------------------------------------------------------------------

/// The AMQP notifier: a bounded queue and the publisher thread that drains it.
pub struct Amqp {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Amqp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Amqp")
            .field("exchange", &self.shared.config.exchange)
            .finish()
    }
}

impl Amqp {
    /// Starts the publisher thread. Does not wait for the broker: the thread connects
    /// (and declares) in the background and keeps trying.
    pub fn start(config: &AmqpConfig) -> Result<Amqp, String> {
        let url = config
            .url
            .clone()
            .ok_or_else(|| "no --hooks-amqp-url".to_owned())?;
        let host = hostname();
        let shared = Arc::new(Shared {
            config: config.clone(),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            origin: format!("tusring@{host}"),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tusring-amqp".to_owned())
            .spawn(move || Publisher::new(worker, url).run())
            .map_err(|e| format!("cannot start the AMQP publisher thread: {e}"))?;
        crate::info!(
            "hooks: AMQP {} exchange '{}' ({}), {}{}, queue of {}",
            redacted(config.url.as_deref().unwrap_or("")),
            config.exchange,
            config.exchange_kind,
            match &config.routing_key {
                Some(k) => format!("routing key '{k}'"),
                None => format!("routing keys '{}.<event>'", config.queues_prefix),
            },
            if config.celery { ", Celery tasks" } else { "" },
            config.queue_size
        );
        Ok(Amqp {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `event` (its hook message `json`) for publishing. Never waits for the
    /// broker: when the queue is full the oldest event is dropped (logged, counted).
    pub fn enqueue(&self, event: Event, upload_id: &str, json: &str) {
        let config = &self.shared.config;
        let (body, task_id) = if config.celery {
            let id = uuid::Uuid::new_v4().to_string();
            (celery_body(json).into_bytes(), Some(id))
        } else {
            (json.as_bytes().to_vec(), None)
        };
        let msg = Message {
            event,
            upload_id: upload_id.to_owned(),
            routing_key: config.routing_key(event),
            body,
            task_id,
        };
        let dropped = {
            let mut q = self.shared.lock();
            let dropped = push_bounded(&mut q.waiting, msg, config.queue_size);
            self.shared.publish_gauges(q.waiting.len());
            dropped
        };
        self.shared.wake.notify_one();
        for old in dropped {
            AMQP_DROPPED.fetch_add(1, Ordering::Relaxed);
            crate::error!(
                "hook {} {}: AMQP: dropped: {} events wait for the broker \
                 (--hooks-amqp-queue-size)",
                old.event,
                old.upload_id,
                config.queue_size
            );
        }
    }

    /// Events queued or in flight (not yet confirmed).
    pub fn backlog(&self) -> usize {
        self.shared.backlog()
    }

    /// Publishes what is queued, then stops the publisher; gives up at `deadline`,
    /// logging and counting the events left. Call after the hook workers have stopped.
    pub fn shutdown(&self, deadline: Instant) {
        let backlog = self.shared.backlog();
        if backlog > 0 {
            crate::info!("hooks: publishing {backlog} queued AMQP event(s) before exit");
        }
        self.shared.lock().stop_by = Some(deadline);
        self.shared.wake.notify_all();
        let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.shared.backlog();
        if thread.is_finished() {
            let _ = thread.join();
        }
        if left > 0 {
            AMQP_DROPPED.fetch_add(left as u64, Ordering::Relaxed);
            crate::warn!(
                "hooks: the grace period ended with {left} AMQP event(s) not confirmed by \
                 the broker"
            );
        }
    }
}

/// The AMQP notifier, when `--hooks-amqp-url` is set: its publisher is started.
pub fn notifiers(config: &AmqpConfig) -> Result<Vec<Amqp>, String> {
    match config.url {
        Some(_) => Ok(vec![Amqp::start(config)?]),
        None => Ok(Vec::new()),
    }
}

impl Notifier for Amqp {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn describe(&self) -> String {
        format!("AMQP exchange {}", self.shared.config.exchange)
    }

    fn name_for(&self, _event: Event) -> String {
        "AMQP".to_owned()
    }

    /// Never: AMQP only publishes (rustus's "AMQP never blocks an upload").
    fn can_refuse(&self) -> bool {
        false
    }

    fn deliver(&self, d: &Delivery<'_>) -> Verdict {
        self.enqueue(d.event, d.upload_id, d.json);
        Verdict::Queued
    }

    fn backlog(&self) -> usize {
        Amqp::backlog(self)
    }

    fn shutdown(&self, deadline: Instant) {
        Amqp::shutdown(self, deadline);
    }
}

/// This machine's host name, for Celery's `origin` header.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

// ---------------------------------------------------------------------------------------
// The publisher thread
// ---------------------------------------------------------------------------------------

/// An open connection with its confirm-mode channel.
struct Link {
    // Field order matters: the channel closes before its connection.
    channel: Channel,
    confirms: Receiver<Confirm>,
    smoother: ConfirmSmoother,
    connection: Connection,
}

/// Why a batch was not fully confirmed.
enum Failed {
    /// The connection is unusable: drop it and reconnect.
    Link(String),
    /// The deadline passed while waiting for confirms.
    Deadline,
}

struct Publisher {
    shared: Arc<Shared>,
    url: String,
    link: Option<Link>,
    /// Failed connects (or lost connections) in a row.
    failures: u32,
    /// Batches in a row in which the broker nacked an event (a queue that refuses
    /// publishes while full, `x-overflow: reject-publish`). While non-zero, events are
    /// published again one at a time, each after [`backoff`]`(refused)`.
    refused: u32,
    /// When the last event was confirmed (or the connection opened).
    last_active: Instant,
    /// The idle timeout closed the connection: reopen only for an event.
    idle_closed: bool,
}

impl Publisher {
    fn new(shared: Arc<Shared>, url: String) -> Publisher {
        Publisher {
            shared,
            url,
            link: None,
            failures: 0,
            refused: 0,
            last_active: Instant::now(),
            idle_closed: false,
        }
    }

    fn config(&self) -> &AmqpConfig {
        &self.shared.config
    }

    /// The thread's life: connect, publish, reconnect, until shutdown has nothing left.
    fn run(mut self) {
        loop {
            let (has_work, stop_by) = self.wait_for_work();
            if !has_work && stop_by.is_some() {
                self.close("shutting down");
                return;
            }
            if let Some(by) = stop_by {
                if Instant::now() >= by {
                    self.close("the grace period ended");
                    return;
                }
            }
            if self.link.is_none() {
                if !has_work && self.idle_closed {
                    continue;
                }
                if let Err(e) = self.connect() {
                    self.failures = self.failures.saturating_add(1);
                    let pause = backoff(self.failures);
                    if self.failures == 1 {
                        crate::warn!(
                            "hooks: AMQP: cannot connect to {}: {e}; retrying every {:.1}-{:.0} s \
                             while events wait",
                            redacted(&self.url),
                            BACKOFF_MIN.as_secs_f64(),
                            BACKOFF_MAX.as_secs_f64()
                        );
                    } else {
                        crate::debug!("hooks: AMQP: connect attempt {}: {e}", self.failures);
                    }
                    self.pause(pause, stop_by);
                    continue;
                }
            }
            if has_work {
                self.publish_batch(stop_by);
            }
        }
    }

    /// Waits until an event is queued, shutdown is asked, or (with no link yet) at
    /// once; closes an idle connection. Returns (events are waiting, stop deadline).
    fn wait_for_work(&mut self) -> (bool, Option<Instant>) {
        let shared = self.shared.clone();
        let mut q = shared.lock();
        loop {
            if !q.waiting.is_empty() {
                return (true, q.stop_by);
            }
            if q.stop_by.is_some() {
                return (false, q.stop_by);
            }
            if self.link.is_none() && !self.idle_closed {
                // Connect eagerly (declares happen at startup and after a restart).
                return (false, None);
            }
            if let (Some(idle), true) = (self.config().idle_timeout(), self.link.is_some()) {
                if self.last_active.elapsed() >= idle {
                    drop(q);
                    self.close("idle");
                    self.idle_closed = true;
                    q = shared.lock();
                    continue;
                }
            }
            q = shared
                .wake
                .wait_timeout(q, IDLE_TICK)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Sleeps `pause`, or less when shutdown is asked and its deadline is nearer.
    fn pause(&self, pause: Duration, stop_by: Option<Instant>) {
        let until = Instant::now() + pause;
        let until = stop_by.map_or(until, |by| until.min(by));
        let mut q = self.shared.lock();
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            if stop_by.is_none() && q.stop_by.is_some() {
                // Shutdown began: go on at once, the loop reads the deadline.
                return;
            }
            q = self
                .shared
                .wake
                .wait_timeout(q, until - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Opens the connection and channel, declares what is asked, enables confirms.
    fn connect(&mut self) -> Result<(), String> {
        let config = self.config().clone();
        let mut connection =
            Connection::insecure_open(&connect_url(&self.url)).map_err(|e| e.to_string())?;
        let channel = connection
            .open_channel(None)
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        if config.declare_exchange {
            let options = ExchangeDeclareOptions {
                durable: config.durable_exchange,
                auto_delete: config.auto_delete,
                internal: false,
                arguments: FieldTable::new(),
            };
            channel
                .exchange_declare(
                    exchange_type(&config.exchange_kind),
                    &config.exchange,
                    options,
                )
                .map_err(|e| format!("cannot declare exchange '{}': {e}", config.exchange))?;
        }
        if config.declare_queues {
            for name in config.queues() {
                let options = QueueDeclareOptions {
                    durable: config.durable_queues,
                    exclusive: false,
                    auto_delete: config.auto_delete,
                    arguments: FieldTable::new(),
                };
                channel
                    .queue_declare(name.as_str(), options)
                    .map_err(|e| format!("cannot declare queue '{name}': {e}"))?;
                channel
                    .queue_bind(
                        name.as_str(),
                        config.exchange.as_str(),
                        name.as_str(),
                        FieldTable::new(),
                    )
                    .map_err(|e| {
                        format!(
                            "cannot bind queue '{name}' to exchange '{}': {e}",
                            config.exchange
                        )
                    })?;
            }
        }
        let confirms = channel
            .listen_for_publisher_confirms()
            .map_err(|e| format!("cannot listen for publisher confirms: {e}"))?;
        channel
            .enable_publisher_confirms()
            .map_err(|e| format!("cannot enable publisher confirms: {e}"))?;
        let recovered = self.failures > 0;
        self.link = Some(Link {
            channel,
            confirms,
            smoother: ConfirmSmoother::new(),
            connection,
        });
        AMQP_CONNECTED.store(1, Ordering::Relaxed);
        AMQP_CONNECTS.fetch_add(1, Ordering::Relaxed);
        self.last_active = Instant::now();
        self.idle_closed = false;
        let backlog = self.shared.backlog();
        if recovered {
            crate::info!(
                "hooks: AMQP: connected to {} after {} failed attempt(s); {backlog} event(s) \
                 waiting",
                redacted(&self.url),
                self.failures
            );
        } else {
            crate::debug!("hooks: AMQP: connected to {}", redacted(&self.url));
        }
        Ok(())
    }

    /// Closes the connection (if any), politely.
    fn close(&mut self, why: &str) {
        if let Some(link) = self.link.take() {
            crate::debug!("hooks: AMQP: closing the connection: {why}");
            let Link {
                channel,
                connection,
                ..
            } = link;
            let _ = channel.close();
            let _ = connection.close();
        }
        AMQP_CONNECTED.store(0, Ordering::Relaxed);
    }

    /// Drops a broken connection; its events were already put back.
    fn lost(&mut self, why: &str) {
        self.link = None; // dropping closes what can still be closed
        AMQP_CONNECTED.store(0, Ordering::Relaxed);
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 {
            crate::warn!(
                "hooks: AMQP: connection to {} lost: {why}; reconnecting while events wait",
                redacted(&self.url)
            );
        } else {
            crate::debug!("hooks: AMQP: attempt {} failed: {why}", self.failures);
        }
    }

    /// Takes up to [`MAX_BATCH`] events (one while the broker refuses them), publishes
    /// them and waits for their confirms; what is not confirmed goes back to the front of
    /// the queue. After a nack, or a lost connection, the next batch waits a doubling
    /// pause: a broker that keeps refusing is asked again a few times a second at first,
    /// then every [`BACKOFF_MAX`], never in a loop.
    fn publish_batch(&mut self, stop_by: Option<Instant>) {
        let batch: Vec<Message> = {
            let mut q = self.shared.lock();
            let most = if self.refused > 0 { 1 } else { MAX_BATCH };
            let n = q.waiting.len().min(most);
            let batch: Vec<Message> = q.waiting.drain(..n).collect();
            self.shared.in_flight.store(batch.len(), Ordering::Relaxed);
            batch
        };
        if batch.is_empty() {
            return;
        }
        let Sent {
            acked,
            retry,
            nacked,
            failed,
        } = self.send(&batch, stop_by);
        let confirmed = acked as u64;
        let first_nacked = nacked.map(|i| (batch[i].event, batch[i].upload_id.clone()));
        let config_bound = self.config().queue_size;
        {
            let mut again = vec![false; batch.len()];
            for &i in &retry {
                again[i] = true;
            }
            let mut q = self.shared.lock();
            for (msg, again) in batch.into_iter().zip(again).rev() {
                if again {
                    q.waiting.push_front(msg);
                }
            }
            // Put-back events may exceed the bound only until the oldest are trimmed.
            while q.waiting.len() > config_bound.max(1) {
                if let Some(old) = q.waiting.pop_front() {
                    AMQP_DROPPED.fetch_add(1, Ordering::Relaxed);
                    crate::error!(
                        "hook {} {}: AMQP: dropped: the queue is full (--hooks-amqp-queue-size)",
                        old.event,
                        old.upload_id
                    );
                }
            }
            self.shared.in_flight.store(0, Ordering::Relaxed);
            self.shared.publish_gauges(q.waiting.len());
        }
        AMQP_CONFIRMED.fetch_add(confirmed, Ordering::Relaxed);
        if confirmed > 0 {
            self.last_active = Instant::now();
        }
        match (failed, first_nacked) {
            (None, Some((event, id))) => {
                self.refused = self.refused.saturating_add(1);
                let pause = backoff(self.refused);
                if self.refused == 1 {
                    crate::warn!(
                        "hook {event} {id}: AMQP: the broker refused (nacked) the event (a full \
                         queue with x-overflow reject-publish?); publishing again one at a \
                         time, every {:.1}-{:.0} s, while events wait",
                        BACKOFF_MIN.as_secs_f64(),
                        BACKOFF_MAX.as_secs_f64()
                    );
                } else {
                    crate::debug!(
                        "hook {event} {id}: AMQP: nacked again ({} in a row); next try in {:.1} s",
                        self.refused,
                        pause.as_secs_f64()
                    );
                }
                self.pause(pause, stop_by);
            }
            (None, None) => {
                if confirmed > 0 {
                    self.failures = 0;
                }
                if self.refused > 0 {
                    crate::info!(
                        "hooks: AMQP: the broker accepts events again after {} refused attempt(s)",
                        self.refused
                    );
                    self.refused = 0;
                }
            }
            (Some(Failed::Link(why)), _) => {
                self.lost(&why);
                self.pause(backoff(self.failures), stop_by);
            }
            (Some(Failed::Deadline), _) => {}
        }
    }

    /// Publishes `batch` and collects its confirms.
    fn send(&mut self, batch: &[Message], stop_by: Option<Instant>) -> Sent {
        let config = self.shared.config.clone();
        let origin = self.shared.origin.clone();
        let Some(link) = self.link.as_mut() else {
            return Sent {
                acked: 0,
                retry: (0..batch.len()).collect(),
                nacked: None,
                failed: None,
            };
        };
        let mut published = 0;
        let mut failed = None;
        for msg in batch {
            let publish = Publish::with_properties(
                &msg.body,
                msg.routing_key.as_str(),
                properties(&config, msg, &origin),
            );
            match link
                .channel
                .basic_publish(config.exchange.as_str(), publish)
            {
                Ok(()) => published += 1,
                Err(e) => {
                    failed = Some(Failed::Link(format!("publish failed: {e}")));
                    break;
                }
            }
        }
        AMQP_PUBLISHED.fetch_add(published as u64, Ordering::Relaxed);
        // Confirms arrive in order after the smoother: the n-th is for batch[n].
        let mut acked = 0;
        let mut nacked = None;
        let mut retry = Vec::new();
        let mut resolved = 0;
        let started = Instant::now();
        // After a failed publish the link is gone: publish everything again.
        while resolved < published && failed.is_none() {
            let mut wait = CONFIRM_TIMEOUT.saturating_sub(started.elapsed());
            if let Some(by) = stop_by {
                wait = wait.min(by.saturating_duration_since(Instant::now()));
            }
            if wait.is_zero() {
                failed.get_or_insert(if stop_by.is_some_and(|by| Instant::now() >= by) {
                    Failed::Deadline
                } else {
                    Failed::Link(format!(
                        "no publisher confirm within {} s",
                        CONFIRM_TIMEOUT.as_secs()
                    ))
                });
                break;
            }
            match link.confirms.recv_timeout(wait) {
                Ok(raw) => {
                    for c in link.smoother.process(raw) {
                        if resolved >= published {
                            break;
                        }
                        match c {
                            Confirm::Ack(_) => acked += 1,
                            Confirm::Nack(_) => {
                                nacked.get_or_insert(resolved);
                                retry.push(resolved);
                            }
                        }
                        resolved += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    // The broker closed the channel; a call on it returns its reason
                    // (e.g. NOT_FOUND for a missing exchange).
                    let why = match link.channel.qos(0, 0, false) {
                        Err(e) => format!("the channel closed: {e}"),
                        Ok(()) => "the channel closed before confirming".to_owned(),
                    };
                    failed.get_or_insert(Failed::Link(why));
                    break;
                }
            }
        }
        retry.extend(resolved..batch.len());
        Sent {
            acked,
            retry,
            nacked,
            failed,
        }
    }
}

/// What became of a published batch.
struct Sent {
    /// Events the broker confirmed.
    acked: usize,
    /// Indexes of the events to publish again (nacked, or not confirmed), in order.
    retry: Vec<usize>,
    /// The index of the first event the broker nacked, if any.
    nacked: Option<usize>,
    /// Why it stopped early.
    failed: Option<Failed>,
}

/// amiquip's exchange type for a `--hooks-amqp-exchange-kind`.
fn exchange_type(kind: &str) -> ExchangeType {
    match kind {
        "direct" => ExchangeType::Direct,
        "fanout" => ExchangeType::Fanout,
        "topic" => ExchangeType::Topic,
        "headers" => ExchangeType::Headers,
        other => ExchangeType::Custom(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AmqpConfig {
        AmqpConfig {
            url: Some("amqp://localhost".into()),
            exchange: "rustus".into(),
            exchange_kind: "topic".into(),
            routing_key: None,
            queues_prefix: "rustus".into(),
            declare_exchange: false,
            declare_queues: false,
            durable_exchange: false,
            durable_queues: false,
            auto_delete: false,
            celery: false,
            queue_size: DEFAULT_QUEUE_SIZE,
            connection_pool_size: 10,
            channel_pool_size: 10,
            idle_connection_timeout: None,
            idle_channels_timeout: None,
        }
    }

    fn msg(n: usize) -> Message {
        Message {
            event: Event::PostReceive,
            upload_id: n.to_string(),
            routing_key: "k".into(),
            body: Vec::new(),
            task_id: None,
        }
    }

    #[test]
    fn routing_keys_and_queues() {
        let mut c = config();
        assert_eq!(c.routing_key(Event::PostFinish), "rustus.post-finish");
        assert_eq!(
            c.queues(),
            [
                "rustus.pre-create",
                "rustus.post-create",
                "rustus.post-receive",
                "rustus.pre-terminate",
                "rustus.post-terminate",
                "rustus.post-finish"
            ]
        );
        c.queues_prefix = "up".into();
        assert_eq!(c.routing_key(Event::PreCreate), "up.pre-create");
        c.routing_key = Some("celery".into());
        assert_eq!(c.routing_key(Event::PreCreate), "celery");
        assert_eq!(c.queues(), ["celery"]);
        assert!(!c.persistent());
        c.celery = true;
        assert!(c.persistent());
        c.celery = false;
        c.durable_queues = true;
        assert!(c.persistent());
    }

    #[test]
    fn idle_timeout_is_the_shorter() {
        let mut c = config();
        assert_eq!(c.idle_timeout(), None);
        c.idle_channels_timeout = Some(Duration::from_secs(5));
        assert_eq!(c.idle_timeout(), Some(Duration::from_secs(5)));
        c.idle_connection_timeout = Some(Duration::from_secs(3));
        assert_eq!(c.idle_timeout(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn urls() {
        for (text, ok) in [
            ("amqp://guest:guest@localhost:5672", true),
            ("AMQP://h/vhost", true),
            (" amqp://h ", true),
            ("amqps://h", false),
            ("amqp://", false),
            ("amqp:///vhost", false),
            ("http://h", false),
            ("amqp://h x", false),
            ("", false),
        ] {
            assert_eq!(parse_url(text).is_ok(), ok, "{text}");
        }
        assert!(parse_url("amqps://h").unwrap_err().contains("TLS"));
        assert_eq!(
            connect_url("amqp://h"),
            "amqp://h?connection_timeout=10000&heartbeat=30"
        );
        assert_eq!(
            connect_url("amqp://h/?heartbeat=5"),
            "amqp://h/?heartbeat=5&connection_timeout=10000"
        );
        assert_eq!(
            connect_url("amqp://h?connection_timeout=1&heartbeat=0"),
            "amqp://h?connection_timeout=1&heartbeat=0"
        );
        assert_eq!(
            redacted("amqp://guest:secret@h:5672/v?x=1"),
            "amqp://guest:***@h:5672/v?x=1"
        );
        assert_eq!(redacted("amqp://h:5672"), "amqp://h:5672");
    }

    #[test]
    fn exchange_kinds() {
        for (text, want) in [
            ("topic", Some("topic")),
            ("Direct", Some("direct")),
            ("fanout", Some("fanout")),
            ("headers", Some("headers")),
            ("x-delayed-message", Some("x-delayed-message")),
            ("x-", None),
            ("match", None),
            ("", None),
        ] {
            assert_eq!(parse_exchange_kind(text).ok().as_deref(), want, "{text}");
        }
        assert!(matches!(exchange_type("direct"), ExchangeType::Direct));
        assert!(matches!(exchange_type("x-y"), ExchangeType::Custom(s) if s == "x-y"));
        assert!(parse_name(&"a".repeat(255)).is_ok());
        assert!(parse_name(&"a".repeat(256)).is_err());
        assert!(parse_name("a\nb").is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), BACKOFF_MIN);
        assert_eq!(backoff(1), BACKOFF_MIN);
        assert_eq!(backoff(2), BACKOFF_MIN * 2);
        assert_eq!(backoff(3), BACKOFF_MIN * 4);
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let mut q = VecDeque::new();
        for i in 0..3 {
            assert!(push_bounded(&mut q, msg(i), 3).is_empty());
        }
        let dropped = push_bounded(&mut q, msg(3), 3);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].upload_id, "0");
        let ids: Vec<&str> = q.iter().map(|m| m.upload_id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        // A bound of 0 behaves as 1.
        let mut q = VecDeque::new();
        push_bounded(&mut q, msg(0), 0);
        assert_eq!(push_bounded(&mut q, msg(1), 0).len(), 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn celery_message() {
        let payload = r#"{"upload":{"id":"x"}}"#;
        let body = celery_body(payload);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v[0][0]["upload"]["id"], "x");
        assert_eq!(v[0].as_array().unwrap().len(), 1);
        assert_eq!(v[1], serde_json::json!({}));
        assert_eq!(
            v[2],
            serde_json::json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null})
        );
        let mut c = config();
        c.celery = true;
        let m = Message {
            event: Event::PostFinish,
            upload_id: "x".into(),
            routing_key: "celery".into(),
            body: body.into_bytes(),
            task_id: Some("id-1".into()),
        };
        let p = properties(&c, &m, "tusring@h");
        assert_eq!(p.content_type().as_deref(), Some("application/json"));
        assert_eq!(p.content_encoding().as_deref(), Some("utf-8"));
        assert_eq!(p.correlation_id().as_deref(), Some("id-1"));
        assert_eq!(*p.delivery_mode(), Some(PERSISTENT));
        let h = p.headers().as_ref().unwrap();
        let s = |k: &str| match h.get(k) {
            Some(AmqpValue::LongString(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(s("task"), "rustus.post-finish");
        assert_eq!(s("id"), "id-1");
        assert_eq!(s("root_id"), "id-1");
        assert_eq!(s("lang"), "py");
        assert_eq!(s("argsrepr"), format!("[{payload}]"));
        assert_eq!(s("kwargsrepr"), "{}");
        assert_eq!(s("origin"), "tusring@h");
        for k in ["eta", "expires", "group", "parent_id", "shadow"] {
            assert_eq!(h.get(k), Some(&AmqpValue::Void), "{k}");
        }
        assert_eq!(h.get("retries"), Some(&AmqpValue::LongInt(0)));
        // Plain mode: no headers set, transient unless the queues are durable.
        let plain = config();
        let m = Message {
            task_id: None,
            body: payload.as_bytes().to_vec(),
            ..m
        };
        let p = properties(&plain, &m, "o");
        assert!(p.headers().as_ref().unwrap().is_empty());
        assert_eq!(*p.delivery_mode(), None);
        assert_eq!(*p.correlation_id(), None);
    }

    #[test]
    fn long_argsrepr_is_truncated() {
        let big = format!("\"{}\"", "a".repeat(5000));
        let h = celery_headers(Event::PostCreate, "i", &big, "o");
        match h.get("argsrepr") {
            Some(AmqpValue::LongString(s)) => {
                assert_eq!(s.chars().count(), MAX_ARGSREPR_CHARS);
                assert!(s.ends_with("..."));
            }
            other => panic!("{other:?}"),
        }
    }
}
