//! The lock keeper: one thread per process (`tusring-redis`) that looks after this
//! node's upload locks in Redis, so that no core spends time on them and a busy core
//! cannot let a lock expire:
//!
//! * **renews** every lock held here, every third of `--redis-lock-expiration`, in one
//!   script call for all of them (the token must still be ours); a lock Redis says is no
//!   longer ours, or that could not be renewed for two thirds of its expiry (Redis
//!   unreachable), is *lost*: its holder is asked to let go at once, as for a takeover,
//!   so it stops writing before another node can take the upload;
//! * **releases** the locks requests let go of (compare-and-delete by token, batched),
//!   and, at shutdown, every release still queued;
//! * **listens** for release requests ([`protocol::RELEASE_CHANNEL`], a pub/sub
//!   connection of its own, pinged to find a connection that died silently) and asks
//!   the holder of this node whose token a request names to let go
//!   ([`crate::storage::locks::request_release`]).
//!
//! It runs a plain tokio current-thread runtime (no io_uring: it has no file to touch).
//! Cores talk to it through [`Keeper::hold`] and [`Keeper::release`]: a mutex held for
//! one map operation, and a wake-up.

use super::conn::{bounded, RedisConn, Retry, CONNECT_TIMEOUT, REPLY_TIMEOUT};
use super::protocol::{self, lock_key, parse_release_message, presumed_lost, renew_period};
use crate::storage::id::UploadId;
use futures_util::StreamExt;
use redis::{Client, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Most locks renewed or released by one script call.
const BATCH: usize = 256;

/// How often the subscriber's connection is pinged.
const SUBSCRIBER_PING: Duration = Duration::from_secs(2);

/// Pauses between the subscriber's reconnects: doubling from the first to the second.
const SUBSCRIBER_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(2));

/// A release that failed (Redis away) is tried again this often, this many times; then
/// the lock is left to expire.
const RELEASE_RETRY: (Duration, u32) = (Duration::from_millis(200), 10);

/// A lock this node holds in Redis.
struct Held {
    token: String,
    /// When the last renewal that succeeded (or the acquisition) was sent.
    renewed: Instant,
}

/// What the cores and the keeper thread share.
struct Inner {
    client: Client,
    /// Where Redis is (no password), for the log.
    shown: String,
    /// This process's name among the nodes (random per process).
    node: String,
    /// [`protocol::token_prefix`] of `node`.
    prefix: String,
    /// `--redis-lock-expiration`.
    lock_expiry: Duration,
    /// Tokens handed out (the `n` of `<node>:<n>`).
    tokens: AtomicU64,
    /// The locks held here, by upload. Invariant: an upload is here from when its lock
    /// was taken in Redis until its guard's drop (or until it is found lost); with the
    /// token it was taken with. Lock order: this mutex, then a lock-table shard (never
    /// the other way round).
    held: Mutex<HashMap<UploadId, Held>>,
    /// Locks let go of, to be deleted in Redis (upload, token).
    releases: Mutex<Vec<(UploadId, String)>>,
    /// Wakes the releaser.
    release_wake: Notify,
    /// The subscriber listens now (release requests from other nodes reach us).
    subscribed: AtomicBool,
    /// The scripts (see [`protocol`]).
    renew: Script,
    release: Script,
}

/// The keeper of one process (see the module's docs).
pub struct Keeper {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keeper(node {})", self.inner.node)
    }
}

impl Keeper {
    /// Starts the keeper thread of a process whose locks expire after `lock_expiry`.
    pub fn start(client: Client, shown: String, lock_expiry: Duration) -> Result<Keeper, String> {
        let node = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let inner = Arc::new(Inner {
            client,
            shown,
            prefix: protocol::token_prefix(&node),
            node,
            lock_expiry,
            tokens: AtomicU64::new(1),
            held: Mutex::new(HashMap::new()),
            releases: Mutex::new(Vec::new()),
            release_wake: Notify::new(),
            subscribed: AtomicBool::new(false),
            renew: Script::new(protocol::RENEW),
            release: Script::new(protocol::RELEASE),
        });
        let (stop, stopped) = watch::channel(false);
        let thread_inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("tusring-redis".into())
            .spawn(move || run(thread_inner, stopped))
            .map_err(|e| format!("cannot start the Redis lock keeper thread: {e}"))?;
        Ok(Keeper {
            inner,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// This process's name among the nodes.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The prefix of this node's tokens.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// `--redis-lock-expiration`.
    pub fn lock_expiry(&self) -> Duration {
        self.inner.lock_expiry
    }

    /// A token no other lock request of any node has.
    pub fn new_token(&self) -> String {
        let n = self.inner.tokens.fetch_add(1, Ordering::Relaxed);
        format!("{}{n}", self.inner.prefix)
    }

    /// A lock was taken in Redis with `token`; the request to take it was sent at
    /// `sent` (its expiry runs from no earlier than that).
    pub fn hold(&self, id: UploadId, token: String, sent: Instant) {
        self.inner.held_map().insert(
            id,
            Held {
                token,
                renewed: sent,
            },
        );
    }

    /// The lock taken with `token` is let go of: no more renewals, and it is deleted in
    /// Redis (if it is still ours there).
    pub fn release(&self, id: UploadId, token: &str) {
        {
            let mut held = self.inner.held_map();
            if held.get(&id).is_some_and(|h| h.token == token) {
                held.remove(&id);
            }
        }
        self.inner
            .releases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, token.to_string()));
        self.inner.release_wake.notify_one();
    }

    /// Whether release requests from other nodes reach this one now.
    pub fn subscribed(&self) -> bool {
        self.inner.subscribed.load(Ordering::Relaxed)
    }

    /// Stops the thread after it has released what is queued, waiting for it until
    /// `deadline` at most (it is left behind after that; the locks then expire).
    pub fn close(&self, deadline: Instant) {
        let _ = self.stop.send(true);
        self.inner.release_wake.notify_one();
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            crate::warn!("the Redis lock keeper did not finish in time; its locks will expire");
        }
    }
}

impl Inner {
    fn held_map(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock of `id` taken with `token` is lost (`why`): if it is still held here,
    /// it is forgotten and its holder asked to let go. Under the map's mutex, so the
    /// holder asked is the one that took it (its guard removes it from the map before
    /// it lets go of this process's lock).
    fn lost(&self, id: UploadId, token: &str, why: &str) {
        let mut held = self.held_map();
        if held.get(&id).is_some_and(|h| h.token == token) {
            held.remove(&id);
            crate::metrics::REDIS_LOCKS_LOST.fetch_add(1, Ordering::Relaxed);
            let asked = crate::storage::locks::request_release(id);
            crate::warn!(
                "upload {id}: its Redis lock is lost ({why}); {}",
                if asked {
                    "the request holding it is stopped"
                } else {
                    "the request holding it cannot be stopped and ends on its own"
                }
            );
        }
    }

    /// A node asks for the upload `id` held with `token`: if that is a lock of ours,
    /// its holder is asked to let go.
    fn release_requested(&self, id: UploadId, token: &str) {
        if !protocol::is_own_token(token, &self.prefix) {
            return;
        }
        let held = self.held_map();
        if held.get(&id).is_some_and(|h| h.token == token) {
            crate::metrics::REDIS_RELEASES_HEARD.fetch_add(1, Ordering::Relaxed);
            // Under the map's mutex: see `lost`.
            if crate::storage::locks::request_release(id) {
                crate::debug!("upload {id}: another node asks for it; the holder lets go");
            }
        }
    }
}

/// The keeper thread.
fn run(inner: Arc<Inner>, stopped: watch::Receiver<bool>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::error!(
                "the Redis lock keeper cannot start its runtime: {e}; locks will not be renewed"
            );
            return;
        }
    };
    rt.block_on(async {
        let conn = RedisConn::new(inner.client.clone(), inner.shown.clone());
        tokio::join!(
            renewer(&inner, &conn, stopped.clone()),
            releaser(&inner, &conn, stopped.clone()),
            subscriber(&inner, stopped),
        );
    });
}

/// Waits `d`; false if the keeper is told to stop meanwhile.
async fn pause(d: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    if *stopped.borrow() {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        _ = stopped.changed() => false,
    }
}

async fn renewer(inner: &Inner, conn: &RedisConn, mut stopped: watch::Receiver<bool>) {
    let ttl_ms = inner.lock_expiry.as_millis() as u64;
    while pause(renew_period(inner.lock_expiry), &mut stopped).await {
        let snapshot: Vec<(UploadId, String, Instant)> = inner
            .held_map()
            .iter()
            .map(|(id, h)| (*id, h.token.clone(), h.renewed))
            .collect();
        for batch in snapshot.chunks(BATCH) {
            let sent = Instant::now();
            let mut inv = inner.renew.prepare_invoke();
            inv.arg(ttl_ms);
            for (id, token, _) in batch {
                inv.key(lock_key(id)).arg(token.as_str());
            }
            let inv = &inv;
            // A renewal that hangs (Redis frozen, or cut off) must not keep the check
            // below from running before a lock of the batch is presumed lost: the call
            // is given up then, however long its own timeout.
            let give_up = batch
                .iter()
                .map(|(_, _, renewed)| protocol::lost_at(*renewed, inner.lock_expiry))
                .min()
                .unwrap_or(sent);
            let call = conn.call("renew locks", Retry::Once, |mut c| async move {
                inv.invoke_async::<Vec<i64>>(&mut c).await
            });
            let got = match tokio::time::timeout_at(give_up.into(), call).await {
                Ok(got) => got,
                Err(_) => Err(super::conn::CallError::Timeout),
            };
            let batch: Vec<(UploadId, String)> = batch
                .iter()
                .map(|(id, token, _)| (*id, token.clone()))
                .collect();
            match got {
                Ok(results) if results.len() == batch.len() => {
                    crate::metrics::REDIS_RENEWALS.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for ((id, token), ok) in batch.iter().zip(results) {
                        if ok == 1 {
                            if let Some(h) = inner.held_map().get_mut(id) {
                                if h.token == *token {
                                    h.renewed = sent;
                                }
                            }
                        } else {
                            inner.lost(*id, token, "it expired or another node took it");
                        }
                    }
                }
                other => {
                    if let Err(e) = other {
                        crate::warn!(
                            "Redis at {}: cannot renew {} lock(s): {e}",
                            inner.shown,
                            batch.len()
                        );
                    }
                    let now = Instant::now();
                    let late: Vec<(UploadId, String)> = inner
                        .held_map()
                        .iter()
                        .filter(|(_, h)| presumed_lost(now - h.renewed, inner.lock_expiry))
                        .map(|(id, h)| (*id, h.token.clone()))
                        .collect();
                    for (id, token) in late {
                        inner.lost(id, &token, "it could not be renewed in time");
                    }
                }
            }
        }
    }
}

async fn releaser(inner: &Inner, conn: &RedisConn, mut stopped: watch::Receiver<bool>) {
    loop {
        let batch: Vec<(UploadId, String)> = {
            let mut q = inner.releases.lock().unwrap_or_else(|p| p.into_inner());
            let n = q.len().min(BATCH);
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            if *stopped.borrow() {
                return;
            }
            tokio::select! {
                () = inner.release_wake.notified() => {}
                _ = stopped.changed() => {}
            }
            continue;
        }
        for attempt in 0..=RELEASE_RETRY.1 {
            let mut inv = inner.release.prepare_invoke();
            for (id, token) in &batch {
                inv.key(lock_key(id)).arg(token.as_str());
            }
            let inv = &inv;
            let got = conn
                .call("release locks", Retry::Once, |mut c| async move {
                    inv.invoke_async::<i64>(&mut c).await
                })
                .await;
            match got {
                Ok(_) => break,
                Err(e) if attempt == RELEASE_RETRY.1 || *stopped.borrow() => {
                    crate::warn!(
                        "Redis at {}: cannot release {} lock(s) ({e}); they expire within {:.1} s",
                        inner.shown,
                        batch.len(),
                        inner.lock_expiry.as_secs_f64()
                    );
                    break;
                }
                Err(_) => tokio::time::sleep(RELEASE_RETRY.0).await,
            }
        }
    }
}

async fn subscriber(inner: &Inner, mut stopped: watch::Receiver<bool>) {
    let mut backoff = SUBSCRIBER_BACKOFF.0;
    let mut said_down = false;
    loop {
        if *stopped.borrow() {
            return;
        }
        match listen(inner, &mut stopped).await {
            Ok(()) => return,
            Err(why) => {
                if inner.subscribed.swap(false, Ordering::Relaxed) {
                    backoff = SUBSCRIBER_BACKOFF.0;
                    said_down = false;
                }
                if !said_down {
                    crate::warn!(
                        "Redis at {}: not listening for release requests ({why}); reconnecting",
                        inner.shown
                    );
                    said_down = true;
                }
            }
        }
        if !pause(backoff, &mut stopped).await {
            return;
        }
        backoff = (backoff * 2).min(SUBSCRIBER_BACKOFF.1);
    }
}

/// Subscribes and handles release requests until the connection fails (`Err`) or the
/// keeper stops (`Ok`).
async fn listen(inner: &Inner, stopped: &mut watch::Receiver<bool>) -> Result<(), String> {
    let mut pubsub = match bounded(inner.client.get_async_pubsub(), CONNECT_TIMEOUT).await {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("no connection in time".into()),
    };
    match bounded(pubsub.subscribe(protocol::RELEASE_CHANNEL), REPLY_TIMEOUT).await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("no reply to SUBSCRIBE in time".into()),
    }
    let (mut sink, mut stream) = pubsub.split();
    if !inner.subscribed.swap(true, Ordering::Relaxed) {
        crate::info!(
            "Redis at {}: node {} listens for release requests",
            inner.shown,
            inner.node
        );
    }
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => {
                    if let Some((id, token)) = parse_release_message(msg.get_payload_bytes()) {
                        inner.release_requested(id, token);
                    }
                }
                None => return Err("the connection closed".into()),
            },
            () = tokio::time::sleep(SUBSCRIBER_PING) => {
                match bounded(sink.ping::<redis::Value>(), REPLY_TIMEOUT).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("no reply to PING in time".into()),
                }
            }
            _ = stopped.changed() => return Ok(()),
        }
    }
}
