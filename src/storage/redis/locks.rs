//! The upload locks across nodes ([`crate::storage::Locker`] with Redis): a request holds
//! this process's lock of the upload (the lock table of [`crate::storage::locks`], with
//! its newest-wins takeover between the requests of this node) *and* the upload's lock in
//! Redis, a token with an expiry that this node's keeper renews while it is held
//! ([`super::keeper`]).
//!
//! **Taking it** (`lock`, for a PATCH or DELETE): this process's lock first (an older
//! request here is taken over as on one node), then [`protocol::ACQUIRE`] in Redis. If
//! another node holds it, the request registers as the newest waiter and publishes a
//! release request naming the holder's token; the holder's node asks its request to let
//! go (it stores what it got, saves the record, answers, and its guard releases the
//! lock); this request looks again every [`REMOTE_POLL`], asks again every
//! [`ASK_AGAIN`] (a pub/sub message can be lost), and gives up (423) at the takeover
//! bound (1 s in all, this process's wait included), when a newer request registered
//! as waiter, or when a newer request of this node asked it to let go. Then it reads
//! the upload again, so it works from the true offset.
//!
//! **Letting go**: the guard's drop hands the token to the keeper (compare-and-delete
//! in Redis, off the core) and then lets go of this process's lock. A request of this
//! node that comes next may find the Redis key still holding the previous token of this
//! node: it takes it (see [`protocol::ACQUIRE`]).
//!
//! **A creation** (`lock_new`) needs no lock in Redis: nobody else knows the new ID
//! until its answer, which comes after the lock is let go of. An ID a pre-create hook
//! chose may be known to others (another creation given the same ID, on any node): that
//! creation takes `try_lock`, in Redis too, and claims the record with `SET NX`.
//!
//! The calls run on the runtime that made the locker (a core, a helper thread), on its
//! own connection; a lock can be taken from any runtime, and its guard dropped on any
//! thread (the keeper is shared), so a helper thread (e.g. a transfer of finished uploads
//! to another store) can take and hold upload locks the same way.

use super::conn::{RedisConn, Retry};
use super::keeper::Keeper;
use super::protocol::{self, lock_key, waiter_key, Acquire, Mode};
use crate::net::Release;
use crate::storage::id::UploadId;
use crate::storage::locks::{UploadLock, TAKEOVER_WAIT};
use crate::storage::{Acquired, Lock, LockGuard, Locker, StoreError, StoreFuture};
use redis::Script;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a request waiting for an upload held on another node looks again.
pub const REMOTE_POLL: Duration = Duration::from_millis(10);

/// How often a waiting request asks the holder again to let go.
pub const ASK_AGAIN: Duration = Duration::from_millis(250);

/// The locker of one runtime.
pub struct RedisLocks {
    conn: Rc<RedisConn>,
    keeper: Arc<Keeper>,
    acquire: Rc<Script>,
}

impl RedisLocks {
    /// The locker on `conn`, with this process's `keeper`.
    pub fn new(conn: Rc<RedisConn>, keeper: Arc<Keeper>) -> RedisLocks {
        RedisLocks {
            conn,
            keeper,
            acquire: Rc::new(Script::new(protocol::ACQUIRE)),
        }
    }

    /// One [`protocol::ACQUIRE`] call.
    async fn ask(&self, id: &UploadId, token: &str, mode: Mode) -> Result<Acquire, StoreError> {
        let lock_ms = self.keeper.lock_expiry().as_millis() as u64;
        let waiter_ms =
            protocol::waiter_expiry(self.keeper.lock_expiry(), TAKEOVER_WAIT).as_millis() as u64;
        let mut inv = self.acquire.prepare_invoke();
        inv.key(lock_key(id))
            .key(waiter_key(id))
            .arg(token)
            .arg(self.keeper.prefix())
            .arg(lock_ms)
            .arg(mode.arg())
            .arg(waiter_ms);
        let inv = &inv;
        let reply = self
            .conn
            .call("take a lock", Retry::Once, |mut c| async move {
                inv.invoke_async::<redis::Value>(&mut c).await
            })
            .await
            .map_err(|e| e.unavailable())?;
        Acquire::from_reply(&reply).ok_or_else(|| {
            crate::error!("Redis: unexpected reply to the lock script: {reply:?}");
            StoreError::Unavailable(super::conn::UNREACHABLE)
        })
    }

    /// Asks the node holding `id` with `holder` to let go.
    async fn ask_release(&self, id: &UploadId, holder: &str) -> Result<(), StoreError> {
        let msg = &protocol::release_message(id, holder);
        self.conn
            .call("ask for a release", Retry::Once, |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(protocol::RELEASE_CHANNEL)
                    .arg(msg)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map_err(|e| e.unavailable())?;
        crate::metrics::REDIS_RELEASES_ASKED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn guard(&self, id: UploadId, token: String, local: UploadLock) -> Lock {
        Lock::new(Box::new(RedisLock {
            id,
            token,
            keeper: self.keeper.clone(),
            _local: local,
        }))
    }

    async fn take(&self, id: UploadId, release: Option<Release>) -> Result<Acquired, StoreError> {
        let deadline = Instant::now() + TAKEOVER_WAIT;
        let Some((local, mut asked)) =
            UploadLock::acquire_until(id, release.clone(), deadline).await
        else {
            return Ok(Acquired::Busy);
        };
        let token = self.keeper.new_token();
        let mut mode = Mode::Register;
        let mut told: Option<(String, Instant)> = None;
        loop {
            let sent = Instant::now();
            match self.ask(&id, &token, mode).await? {
                Acquire::Taken => {
                    self.keeper.hold(id, token.clone(), sent);
                    return Ok(Acquired::Lock(self.guard(id, token, local), asked));
                }
                Acquire::Superseded => return Ok(Acquired::Busy),
                Acquire::HeldBy(holder) => {
                    let again = told
                        .as_ref()
                        .is_none_or(|(h, at)| *h != holder || at.elapsed() >= ASK_AGAIN);
                    if again {
                        self.ask_release(&id, &holder).await?;
                        told = Some((holder, Instant::now()));
                        asked = true;
                    }
                }
            }
            mode = Mode::Wait;
            // A newer request of this node wants the upload: it asked us to let go.
            if release.as_ref().is_some_and(Release::requested) || Instant::now() >= deadline {
                return Ok(Acquired::Busy);
            }
            tokio::time::sleep(REMOTE_POLL).await;
        }
    }

    async fn take_if_free(&self, id: UploadId) -> Result<Option<Lock>, StoreError> {
        let Some(local) = UploadLock::try_acquire(id) else {
            return Ok(None);
        };
        let token = self.keeper.new_token();
        let sent = Instant::now();
        match self.ask(&id, &token, Mode::Try).await? {
            Acquire::Taken => {
                self.keeper.hold(id, token.clone(), sent);
                Ok(Some(self.guard(id, token, local)))
            }
            Acquire::Superseded | Acquire::HeldBy(_) => Ok(None),
        }
    }
}

impl Locker for RedisLocks {
    fn try_lock(&self, id: UploadId) -> StoreFuture<'_, Result<Option<Lock>, StoreError>> {
        Box::pin(self.take_if_free(id))
    }

    fn lock_new(&self, id: UploadId) -> StoreFuture<'_, Result<Option<Lock>, StoreError>> {
        let got = UploadLock::try_acquire(id).map(|l| Lock::new(Box::new(l)));
        Box::pin(std::future::ready(Ok(got)))
    }

    fn lock(
        &self,
        id: UploadId,
        release: Option<Release>,
    ) -> StoreFuture<'_, Result<Acquired, StoreError>> {
        Box::pin(self.take(id, release))
    }

    fn held(&self) -> usize {
        crate::storage::locks::held()
    }
}

/// A held upload lock: this process's, and the one in Redis (see the module's docs).
struct RedisLock {
    id: UploadId,
    token: String,
    keeper: Arc<Keeper>,
    /// Dropped after `drop` below has handed the Redis lock to the keeper.
    _local: UploadLock,
}

impl LockGuard for RedisLock {}

impl Drop for RedisLock {
    fn drop(&mut self) {
        self.keeper.release(self.id, &self.token);
    }
}
