//! One runtime's connection to Redis: a multiplexed connection of the `redis` crate,
//! made on the runtime that uses it (its driver is a task of that runtime), lazily, and
//! made again after it broke. Every call is bounded in time, counted and timed in
//! [`crate::metrics`], and a failure is [`StoreError::Unavailable`] (503 with
//! `Retry-After`), never a wrong answer.
//!
//! **Timeouts a busy core cannot trip.** A call waits [`REPLY_TIMEOUT`] for its reply,
//! measured by the runtime's timer. A core that was busy (a long checksum, a burst of
//! requests) may find its timer expired while the reply sits unread in the socket: its
//! connection's driver task has not run yet. So an expired call gets [`REPLY_GRACE`]
//! more, in which the runtime turns once and the driver reads what arrived; only a reply
//! that is still missing then is a timeout. The crate's own response timeout (500 ms by
//! default, measured the same way) is off.
//!
//! **Reconnecting.** A connection that failed (an I/O error, a closed connection, a
//! timeout: a Redis that stopped answering on an open socket, or a network that dropped
//! it silently, would otherwise hold every later call) is dropped; the next call connects
//! again, one connect at a time per runtime, bounded by [`CONNECT_TIMEOUT`]. After a
//! failed connect, calls fail at once for [`RECONNECT_PAUSE`], so a Redis that is down
//! costs each request one 503, not a connect attempt each.
//!
//! A connection that broke while idle (Redis restarted) is found broken only by the next
//! call on it, which fails at once; a call that may be repeated ([`Retry::Once`]: each
//! of tusring's calls but the removal of a record, whose repeat would say "not found")
//! is then made once more on a new connection, so a restart of Redis costs no request
//! an error.
//!
//! A call that timed out may still be applied by Redis later (it was sent): each of
//! tusring's writes is safe to land late (a record says at most the bytes that are in
//! the data file, whose size is the offset; a lock taken late expires, or is taken back
//! by this node; a release or renewal compares its token).

use crate::storage::StoreError;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a call waits for its reply (before [`REPLY_GRACE`]).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// What an expired call gets more, for a reply that came while the runtime was busy.
pub const REPLY_GRACE: Duration = Duration::from_millis(100);

/// How long a connect may take (before [`REPLY_GRACE`]).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// After a failed connect, calls fail at once for this long.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// The message of a 503 while Redis cannot be reached.
pub const UNREACHABLE: &str = "The upload records (Redis) cannot be reached now; retry shortly";

/// Runs `fut` for at most `limit`, plus [`REPLY_GRACE`] once `limit` has passed (see
/// the module's docs); `None` if it did not finish.
pub async fn bounded<F: Future>(fut: F, limit: Duration) -> Option<F::Output> {
    tokio::pin!(fut);
    tokio::select! {
        biased;
        out = &mut fut => return Some(out),
        () = tokio::time::sleep(limit) => {}
    }
    tokio::time::timeout(REPLY_GRACE, fut).await.ok()
}

/// Whether a call may be made again on a new connection when its connection turned out
/// to be broken (it may then have been applied once already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The call gives the same result when repeated (a read, a `SET`, a script that
    /// compares tokens, a `PUBLISH`).
    Once,
    /// It does not (a `DEL` whose count is the answer).
    Never,
}

/// Why a call failed, for the log and for what happens to the connection.
#[derive(Debug)]
pub enum CallError {
    /// No connection (connect failed, or paused after a failed connect).
    Down(String),
    /// No reply in time.
    Timeout,
    /// Redis or the connection said no.
    Redis(RedisError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Down(why) => write!(f, "not connected: {why}"),
            CallError::Timeout => write!(
                f,
                "no reply within {:.1} s",
                (REPLY_TIMEOUT + REPLY_GRACE).as_secs_f64()
            ),
            CallError::Redis(e) => write!(f, "{e}"),
        }
    }
}

impl CallError {
    /// The store's error: Redis could not answer (503).
    pub fn unavailable(&self) -> StoreError {
        StoreError::Unavailable(UNREACHABLE)
    }

    /// Whether Redis answered with an error of this code (e.g. `WRONGTYPE`).
    pub fn is_code(&self, code: &str) -> bool {
        matches!(self, CallError::Redis(e) if e.code() == Some(code))
    }
}

/// A runtime's connection to Redis (see the module's docs). Not `Send`: each runtime
/// makes its own.
pub struct RedisConn {
    client: Client,
    /// Where Redis is, for the log (no password).
    shown: String,
    /// The connection, while it works.
    conn: RefCell<Option<MultiplexedConnection>>,
    /// One connect at a time on this runtime; the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    /// Until when calls fail at once, after a failed connect.
    paused_until: Cell<Option<Instant>>,
    /// The last connect's error, said again while paused.
    last_error: RefCell<String>,
}

impl RedisConn {
    /// A connection (not made yet) to `client`'s Redis; `shown` says where, for the log.
    pub fn new(client: Client, shown: String) -> RedisConn {
        RedisConn {
            client,
            shown,
            conn: RefCell::new(None),
            connecting: tokio::sync::Mutex::new(()),
            paused_until: Cell::new(None),
            last_error: RefCell::new(String::new()),
        }
    }

    /// Where Redis is (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The connection, made now if there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, CallError> {
        if let Some(c) = self.conn.borrow().as_ref() {
            return Ok(c.clone());
        }
        let _turn = self.connecting.lock().await;
        // Made by the call this one waited for?
        if let Some(c) = self.conn.borrow().as_ref() {
            return Ok(c.clone());
        }
        if self.paused_until.get().is_some_and(|t| Instant::now() < t) {
            return Err(CallError::Down(self.last_error.borrow().clone()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let made = bounded(
            self.client
                .get_multiplexed_async_connection_with_config(&config),
            CONNECT_TIMEOUT,
        )
        .await;
        crate::metrics::REDIS_CONNECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let why = match made {
            Some(Ok(c)) => {
                if self.paused_until.take().is_some() {
                    crate::info!("Redis at {} answers again", self.shown);
                }
                *self.conn.borrow_mut() = Some(c.clone());
                return Ok(c);
            }
            Some(Err(e)) => e.to_string(),
            None => format!(
                "no connection within {:.1} s",
                (CONNECT_TIMEOUT + REPLY_GRACE).as_secs_f64()
            ),
        };
        if self.paused_until.get().is_none() {
            crate::warn!(
                "Redis at {} cannot be reached: {why}; requests that need it get 503 until it answers",
                self.shown
            );
        }
        self.paused_until
            .set(Some(Instant::now() + RECONNECT_PAUSE));
        *self.last_error.borrow_mut() = why.clone();
        Err(CallError::Down(why))
    }

    /// Runs one call on the connection: `call` gets a handle on it and returns the
    /// request's future. Bounded, counted and timed; a broken connection is dropped, and
    /// with [`Retry::Once`] a call that found it broken is made again on a new one.
    pub async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        retry: Retry,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = Instant::now();
        let mut out = self.attempt(what, &call).await;
        if retry == Retry::Once
            && matches!(&out, Err(CallError::Redis(e)) if e.is_connection_dropped() || e.is_io_error())
        {
            out = self.attempt(what, &call).await;
        }
        crate::metrics::redis_call(started.elapsed(), out.is_err());
        out
    }

    /// One try of [`RedisConn::call`].
    async fn attempt<T, F, Fut>(&self, what: &'static str, call: &F) -> Result<T, CallError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let out = match self.connection().await {
            Err(e) => Err(e),
            Ok(conn) => match bounded(call(conn), REPLY_TIMEOUT).await {
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => Err(CallError::Redis(e)),
                None => Err(CallError::Timeout),
            },
        };
        if let Err(e) = &out {
            let broken = match e {
                CallError::Down(_) => false,
                CallError::Timeout => true,
                CallError::Redis(e) => {
                    e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.is_timeout()
                        || e.is_unrecoverable_error()
                }
            };
            if broken && self.conn.borrow_mut().take().is_some() {
                crate::warn!(
                    "Redis at {}: {what} failed ({e}); connecting again",
                    self.shown
                );
            } else if !broken {
                crate::debug!("Redis at {}: {what} failed: {e}", self.shown);
            }
        }
        out
    }
}
