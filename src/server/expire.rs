//! The expiration extension: the request-path check (410 for an expired upload until it
//! is swept), the `Upload-Expires` header, and the background sweep.
//!
//! The sweep runs on a helper thread of its own (`tusring-expire`, see
//! [`super::helper`]), not on a core: listing the records may block, and the sweep must
//! not stall a core's requests. Every `--expiration-sweep-interval` it scans the records
//! through the same stores as the cores, and removes (record first, then data, as DELETE
//! does) each unfinished upload whose data was last written more than
//! `--expiration-time` ago, under the upload's lock so a request never sees half of it.
//! It fires no hook: rustus has no expiration, so its hook consumers know no event for
//! it, and `post-terminate` would claim a DELETE that no client sent.

use super::finals::WaitingFinals;
use super::Shared;
use crate::config::Config;
use crate::error::Error;
use crate::http::response::Response;
use crate::storage::id::UploadId;
use crate::storage::info::UploadInfo;
use crate::storage::layout::parse_upload_id;
use crate::storage::Upload;
use crate::storage::{StoreError, Stores};
use crate::tus::expiry::{expiry, Expiry};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The lifetime of an unfinished upload in seconds, when the extension is on.
pub fn lifetime(cfg: &Config) -> Option<u64> {
    cfg.extensions
        .expiration
        .then_some(cfg.expiration_time.as_secs())
}

/// An upload's standing, from its record and data file (`load`). A final is never
/// expired on the request path: its client has nothing more to send to it (a waiting
/// final is removed by the sweep once a part is gone, see [`sweep_once`]).
pub fn state(cfg: &Config, upload: &Upload) -> Expiry {
    let finished = upload.info.is_complete() || upload.info.is_final;
    let last = upload.modified.unwrap_or(i64::MAX);
    expiry(crate::time::now_unix(), last, lifetime(cfg), finished)
}

/// The standing of an upload just written (now), for POST and PATCH answers.
pub fn state_after_write(
    cfg: &Config,
    info: &UploadInfo,
    wrote: bool,
    before: Option<i64>,
) -> Expiry {
    let now = crate::time::now_unix();
    let last = if wrote { now } else { before.unwrap_or(now) };
    expiry(
        now,
        last,
        lifetime(cfg),
        info.is_complete() || info.is_final,
    )
}

/// 410 for an expired upload that the sweep has not removed yet.
pub fn check(cfg: &Config, upload: &Upload) -> Result<Expiry, crate::error::Error> {
    match state(cfg, upload) {
        Expiry::Expired => Err(crate::error::Error::Gone),
        other => Ok(other),
    }
}

/// `Upload-Expires` (IMF-fixdate) when the upload will expire.
pub fn expires_header(resp: &mut Response, state: Expiry) {
    if let Expiry::At(at) = state {
        resp.header("Upload-Expires", crate::time::http_date(at));
    }
}

/// The running sweep thread; [`Sweeper::stop`] ends it.
pub struct Sweeper {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Sweeper {
    /// Starts the sweep when the expiration extension is on.
    pub fn start(shared: &Arc<Shared>) -> Option<Sweeper> {
        let lifetime = lifetime(&shared.config)?;
        let interval = shared.config.expiration_sweep_interval;
        let (stop, stopped) = mpsc::channel::<()>();
        // The wait between sweeps blocks this thread, which runs nothing else.
        let thread =
            super::helper::spawn("tusring-expire", shared, move |stores, shared| async move {
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let n = sweep_once(&stores, &shared.finals, lifetime, &stopped).await;
                    if n > 0 {
                        crate::info!("expiration: removed {n} expired upload(s)");
                    }
                }
            });
        match thread {
            Ok(thread) => Some(Sweeper { stop, thread }),
            Err(e) => {
                crate::error!("cannot start the expiration thread: {e}; uploads will not expire");
                None
            }
        }
    }

    /// Stops the sweep (a sweep in progress ends after the upload it is at).
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Whether the upload recorded in `info` has expired now. An upload whose data cannot
/// be looked at is not the sweep's to judge (the request path answers for it).
async fn expired(stores: &Stores, info: &UploadInfo, lifetime: u64) -> bool {
    let Ok(data) = stores.data.stat(info).await else {
        return false;
    };
    let finished = info.length.is_some_and(|l| data.size >= l);
    if info.is_final && !finished {
        // A waiting final expires only once a part is gone (expired or deleted): until
        // then its last part's completion will assemble it.
        let parts = info.parts.as_deref().unwrap_or(&[]);
        let mut all_there = true;
        for part in parts {
            all_there = match parse_upload_id(part) {
                Some(id) => !matches!(stores.info.get(&id).await, Err(StoreError::NotFound)),
                None => false,
            };
            if !all_there {
                break;
            }
        }
        if all_there {
            return false;
        }
    }
    expiry(
        crate::time::now_unix(),
        data.modified,
        Some(lifetime),
        finished,
    ) == Expiry::Expired
}

/// One pass over the records; returns how many uploads were removed. Stops early when
/// `stop` is disconnected (shutdown).
pub async fn sweep_once(
    stores: &Stores,
    finals: &WaitingFinals,
    lifetime: u64,
    stop: &mpsc::Receiver<()>,
) -> usize {
    let mut scan = match stores.info.scan() {
        Ok(scan) => scan,
        Err(e) => {
            crate::warn!(
                "expiration: cannot list the records: {}",
                Error::from(e).message()
            );
            return 0;
        }
    };
    let stopping = || matches!(stop.try_recv(), Err(TryRecvError::Disconnected) | Ok(()));
    let mut removed = 0;
    while let Some(batch) = scan.next_batch().await {
        let Ok(ids) = batch else {
            continue;
        };
        for id in ids {
            if stopping() {
                return removed;
            }
            if sweep_one(stores, finals, &id, lifetime).await {
                removed += 1;
            }
        }
    }
    removed
}

/// Removes the upload `id` if it has expired; whether it did.
async fn sweep_one(stores: &Stores, finals: &WaitingFinals, id: &UploadId, lifetime: u64) -> bool {
    let Ok(info) = stores.info.get(id).await else {
        return false;
    };
    if !expired(stores, &info, lifetime).await {
        return false;
    }
    // Under the lock, read and judge again: a PATCH may have just written.
    let Ok(Some(_lock)) = stores.locker.try_lock(*id).await else {
        return false;
    };
    let Ok(info) = stores.info.get(id).await else {
        return false;
    };
    if !expired(stores, &info, lifetime).await {
        return false;
    }
    if let Err(e) = stores.info.remove(id).await {
        crate::warn!(
            "expiration: cannot remove the record of {id}: {}",
            Error::from(e).message()
        );
        return false;
    }
    if let Err(e) = stores.data.remove(&info).await {
        crate::warn!(
            "expiration: cannot remove the data of {id}: {}",
            Error::from(e).message()
        );
    }
    if info.is_final {
        finals.forget(id);
    }
    crate::metrics::upload_expired();
    crate::info!("expiration: upload {id} expired and was removed");
    true
}
