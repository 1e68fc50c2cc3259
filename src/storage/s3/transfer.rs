//! Moving complete uploads to S3: one thread (`tusring-s3`, a small io_uring runtime of
//! its own), never a core. The request that completes an upload answers as soon as its
//! bytes are on disk and hands the upload here ([`Transfers::start`]); the thread reads
//! the file a part at a time (never the whole file in memory) and uploads it as a
//! multipart upload, several parts in flight.
//!
//! **States** of a complete hybrid-s3 upload, and what says so (nothing beyond rustus's
//! record and files): *waiting* (its record is complete, its file is there),
//! *transferring* (a transfer holds its claim), *stored* (the object is in S3, its file
//! is gone). A transfer:
//!
//! 1. takes the upload's **claim**, a lock of the [`crate::storage::Locker`] under an ID
//!    derived from the upload's ([`claim_id`]), so with a locker shared by several nodes
//!    one node moves an upload while every node can serve it; a claim it does not get is
//!    left to its holder;
//! 2. reads the record and the file: record gone (deleted), file gone (stored already)
//!    or not complete: nothing to do;
//! 3. asks S3 for the object: there with the upload's size (a transfer that stored it
//!    and stopped before removing the file), go to 5;
//! 4. uploads: a small file with one PUT; else aborts multipart uploads left on the key by
//!    an interrupted transfer, starts one, uploads the parts (at most
//!    [`PARTS_IN_FLIGHT`] at once), completes it, and checks the object's size;
//! 5. takes the upload's lock (so no DELETE or PATCH is half done), reads the record
//!    again (gone: a DELETE raced the transfer, so the object is removed), writes the
//!    record complete if a crash left it behind its file, announces the upload
//!    (`post-finish`), and only then removes the file.
//!
//! A failure at any step (S3 down, refusing, slow; the locker or records unavailable)
//! is logged and the transfer retried from where it stopped, after a pause doubling from
//! [`RETRY_MIN`] to [`RETRY_MAX`], with its claim held and the parts already uploaded
//! kept; a multipart upload S3 no longer knows (`NoSuchUpload`) is started again. A
//! transfer interrupted by a restart or a crash is found by the scan of the records at
//! startup and every [`RESCAN`] (any node's, once the claim of a node that died has
//! expired) and done again from step 1. So the object is stored at least once and the
//! file removed only after it; `post-finish` is sent after the object is stored, once,
//! or again after a crash between the announcement and the file's removal.

use super::client::{S3Client, S3Fail};
use super::hybrid::Hybrid;
use super::settings::{backoff, part_plan};
use crate::metrics;
use crate::storage::id::UploadId;
use crate::storage::info::UploadInfo;
use crate::storage::layout::parse_upload_id;
use crate::storage::{Announce, Lock, StoreError, Stores};
use crate::tus::getting::content_type;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_uring::buf::BoundedBuf;

/// Transfers running at once (each with up to [`PARTS_IN_FLIGHT`] parts in memory).
pub const TRANSFERS_AT_ONCE: usize = 4;

/// Parts of one transfer uploaded at once.
pub const PARTS_IN_FLIGHT: usize = 4;

/// The part size (8 MiB, as rustus; larger when a file needs more than 10,000 parts).
pub const PART_BYTES: u64 = 8 * 1024 * 1024;

/// The first pause before a failed transfer is tried again; it doubles up to
/// [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(500);

/// The longest pause between two tries of a failed transfer.
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// How often the records are scanned for uploads waiting for a transfer that no one
/// holds (interrupted by a crash, or by another node that died).
pub const RESCAN: Duration = Duration::from_secs(60);

/// How long the end of a transfer waits for the upload's lock (a DELETE or a PATCH
/// holding it) before it tries again later.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_RETRY: Duration = Duration::from_millis(20);

enum Msg {
    /// Move this upload; announce it with this when it is stored.
    Start(UploadId, Announce),
    /// Remove this object (a DELETE whose S3 call failed).
    Delete(String),
    /// The daemon stops: abandon what runs (it is found again at the next start).
    Stop,
}

/// The transfer thread's queue; every runtime's hybrid store holds it.
#[derive(Clone)]
pub struct Transfers {
    tx: mpsc::UnboundedSender<Msg>,
}

/// The receiving end, for the thread ([`TransferWorker::run`]).
pub struct TransferWorker {
    rx: mpsc::UnboundedReceiver<Msg>,
}

/// Builds the announcement of an upload whose transfer was found by a scan (no request
/// completed it in this process): `post-finish` with a stand-in request.
pub type Announcer = Arc<dyn Fn(&UploadInfo) -> Announce + Send + Sync>;

impl Transfers {
    /// A queue and its receiving end.
    pub fn new() -> (Transfers, TransferWorker) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Transfers { tx }, TransferWorker { rx })
    }

    /// Moves the upload `info` (complete, its record written) to S3; `announce` runs once
    /// the object is stored.
    pub fn start(&self, info: &UploadInfo, announce: Announce) {
        if let Some(id) = parse_upload_id(&info.id) {
            if self.tx.send(Msg::Start(id, announce)).is_err() {
                crate::warn!(
                    "upload {id}: the transfer thread has stopped; the next start moves it"
                );
            }
        }
    }

    /// Removes the object `key` in the background, retrying until S3 does it.
    pub fn delete_later(&self, key: String) {
        let _ = self.tx.send(Msg::Delete(key));
    }

    /// Stops the thread (transfers running are abandoned and found again at the next
    /// start).
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

/// The lock ID of an upload's transfer claim: `<id>:s3` ([`UploadId::derived`]). No
/// upload ID holds a `:`, so a claim never names an upload and two uploads never share a
/// claim.
pub fn claim_id(id: UploadId) -> UploadId {
    id.derived("s3")
}

/// What the thread works with.
struct Ctx {
    stores: Stores,
    client: Rc<S3Client>,
    hybrid: Arc<Hybrid>,
    announcer: Announcer,
    /// Announcements of uploads queued or running, taken by the transfer that stores
    /// the upload.
    announce: RefCell<HashMap<UploadId, Announce>>,
    stopping: std::cell::Cell<bool>,
}

/// How one try of a transfer ended.
enum Outcome {
    /// Stored, announced, file removed.
    Done,
    /// Nothing to do: the upload is gone, not complete, stored already, or another
    /// transfer holds its claim.
    Nothing,
}

/// Why a try failed (it is tried again).
struct Failed(String);

impl From<S3Fail> for Failed {
    fn from(e: S3Fail) -> Failed {
        Failed(format!("S3: {e}"))
    }
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Failed {
        Failed(format!(
            "storage: {}",
            crate::error::Error::from(e).message()
        ))
    }
}

impl TransferWorker {
    /// The thread's work, on its own runtime, with its own `stores`: transfers handed
    /// over, the startup scan and the rescans, until [`Transfers::stop`].
    pub async fn run(mut self, stores: Stores, hybrid: Arc<Hybrid>, announcer: Announcer) {
        let client = Rc::new(hybrid.client.for_runtime());
        let ctx = Rc::new(Ctx {
            stores,
            client,
            hybrid,
            announcer,
            announce: RefCell::new(HashMap::new()),
            stopping: std::cell::Cell::new(false),
        });
        // Uploads to move, in the order they came; and those running.
        let mut queue: std::collections::VecDeque<UploadId> = Default::default();
        let mut queued: HashSet<UploadId> = HashSet::new();
        let running: Rc<RefCell<HashSet<UploadId>>> = Rc::default();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<UploadId>();
        let mut next_scan = Instant::now();
        loop {
            while running.borrow().len() < TRANSFERS_AT_ONCE {
                let Some(id) = queue.pop_front() else { break };
                queued.remove(&id);
                running.borrow_mut().insert(id);
                let (ctx, done) = (ctx.clone(), done_tx.clone());
                tokio_uring::spawn(async move {
                    transfer(&ctx, id).await;
                    let _ = done.send(id);
                });
            }
            let pending = queue.len() + running.borrow().len();
            metrics::S3_PENDING.store(pending as i64, Ordering::Relaxed);
            let add = |id: UploadId,
                       queue: &mut std::collections::VecDeque<UploadId>,
                       queued: &mut HashSet<UploadId>| {
                if !running.borrow().contains(&id) && queued.insert(id) {
                    queue.push_back(id);
                }
            };
            let scan_in = next_scan.saturating_duration_since(Instant::now());
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(Msg::Start(id, announce)) => {
                        ctx.announce.borrow_mut().insert(id, announce);
                        add(id, &mut queue, &mut queued);
                    }
                    Some(Msg::Delete(key)) => {
                        let ctx = ctx.clone();
                        tokio_uring::spawn(async move { delete_object(&ctx, &key).await });
                    }
                    Some(Msg::Stop) | None => break,
                },
                Some(id) = done_rx.recv() => {
                    running.borrow_mut().remove(&id);
                    ctx.announce.borrow_mut().remove(&id);
                }
                _ = tokio::time::sleep(scan_in) => {
                    match waiting_uploads(&ctx).await {
                        Ok(found) => {
                            for id in found {
                                add(id, &mut queue, &mut queued);
                            }
                        }
                        Err(e) => crate::warn!("S3 transfers: scan of the records failed: {}", e.0),
                    }
                    next_scan = Instant::now() + RESCAN;
                }
            }
        }
        ctx.stopping.set(true);
        let left = queue.len() + running.borrow().len();
        if left > 0 {
            crate::info!(
                "S3 transfers: {left} upload(s) not moved yet; they are moved after the next start"
            );
        }
    }
}

/// The uploads whose records say they are complete hybrid-s3 uploads (not partial) and
/// whose file is still there and complete: waiting for a transfer.
async fn waiting_uploads(ctx: &Ctx) -> Result<Vec<UploadId>, Failed> {
    let mut found = Vec::new();
    let mut scan = ctx.stores.info.scan()?;
    while let Some(batch) = scan.next_batch().await {
        for id in batch? {
            let info = match ctx.stores.info.get(&id).await {
                Ok(info) => info,
                Err(_) => continue, // gone, or refused by the reader (logged there)
            };
            let (Some(len), false) = (info.length, info.is_partial) else {
                continue;
            };
            let Some(place) = ctx.hybrid.place(&info) else {
                continue;
            };
            let Some(path) = place.local.path.as_deref() else {
                continue;
            };
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_file() && m.len() == len => found.push(id),
                _ => {}
            }
        }
    }
    if !found.is_empty() {
        crate::info!(
            "S3 transfers: {} upload(s) found waiting to be moved",
            found.len()
        );
    }
    Ok(found)
}

/// Moves one upload, trying again until it is done, the upload needs nothing more, or
/// the thread stops.
async fn transfer(ctx: &Ctx, id: UploadId) {
    // Step 1: the claim, held until the transfer ends.
    let claim = loop {
        match ctx.stores.locker.try_lock(claim_id(id)).await {
            Ok(Some(claim)) => break claim,
            Ok(None) => {
                crate::debug!("upload {id}: another transfer holds it");
                return;
            }
            Err(e) => {
                let e = Failed::from(e);
                crate::warn!("upload {id}: cannot claim its transfer: {}", e.0);
                tokio::time::sleep(RETRY_MAX).await;
                if ctx.stopping.get() {
                    return;
                }
            }
        }
    };
    let started = Instant::now();
    let mut multipart: Option<Multipart> = None;
    let mut attempt = 0u32;
    loop {
        if ctx.stopping.get() {
            return;
        }
        match try_transfer(ctx, id, &mut multipart).await {
            Ok(Outcome::Done) => {
                metrics::S3_STORED.fetch_add(1, Ordering::Relaxed);
                crate::info!(
                    "upload {id}: moved to S3 in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            Ok(Outcome::Nothing) => break,
            Err(Failed(why)) => {
                attempt += 1;
                metrics::S3_FAILURES.fetch_add(1, Ordering::Relaxed);
                let pause = backoff(attempt, RETRY_MIN, RETRY_MAX);
                crate::warn!(
                    "upload {id}: transfer to S3 failed ({why}); try {} in {:.1} s",
                    attempt + 1,
                    pause.as_secs_f64()
                );
                tokio::time::sleep(pause).await;
            }
        }
    }
    drop(claim);
}

/// A multipart upload in progress: its ID and the parts stored (number, ETag), kept
/// across tries.
struct Multipart {
    key: String,
    upload_id: String,
    parts: Vec<(u32, String)>,
}

/// Why uploading the parts stopped.
enum PartsEnd {
    /// The upload's record is gone (a DELETE): stop, and abort.
    Gone,
    /// S3 no longer knows the multipart upload: start it again.
    Lost,
    /// Anything else: try again later.
    Failed(Failed),
}

/// One try: steps 2 to 5.
async fn try_transfer(
    ctx: &Ctx,
    id: UploadId,
    multipart: &mut Option<Multipart>,
) -> Result<Outcome, Failed> {
    let info = match ctx.stores.info.get(&id).await {
        Ok(info) => info,
        Err(StoreError::NotFound) => {
            abandon(ctx, multipart).await;
            return Ok(Outcome::Nothing);
        }
        Err(e) => return Err(e.into()),
    };
    let (Some(len), Some(place)) = (info.length, ctx.hybrid.place(&info)) else {
        return Ok(Outcome::Nothing);
    };
    if info.is_partial {
        return Ok(Outcome::Nothing);
    }
    let path = place.local.path.clone().unwrap_or_default();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        // Stored and removed by an earlier transfer (or another node's).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::Nothing),
        Err(e) => return Err(Failed(format!("open {path}: {e}"))),
    };
    let size = file
        .metadata()
        .map_err(|e| Failed(format!("stat {path}: {e}")))?
        .len();
    if size != len {
        // Not complete (a scan raced a PATCH, or the record is ahead of a crash).
        return Ok(Outcome::Nothing);
    }
    let key = place.key.clone();
    let stored = multipart.is_none() && ctx.client.head(&key).await? == Some(len);
    if !stored {
        let file = tokio_uring::fs::File::from_std(file);
        let ct = content_type(info.metadata.get("filename"));
        let result = upload(ctx, id, &file, &key, len, ct, multipart).await;
        let _ = file.close().await;
        if !result? {
            return Ok(Outcome::Nothing);
        }
        match ctx.client.head(&key).await? {
            Some(n) if n == len => {}
            other => {
                *multipart = None;
                return Err(Failed(format!(
                    "the stored object has {other:?} bytes, not {len}"
                )));
            }
        }
    }
    finish(ctx, id, &key, len).await
}

/// Step 4: the file into the object `key`. `Ok(false)`: the upload was deleted
/// meanwhile (its multipart upload is aborted).
async fn upload(
    ctx: &Ctx,
    id: UploadId,
    file: &tokio_uring::fs::File,
    key: &str,
    len: u64,
    ct: &str,
    multipart: &mut Option<Multipart>,
) -> Result<bool, Failed> {
    let (part, count) = part_plan(len, PART_BYTES);
    if count == 1 {
        let bytes = read_part(file, 0, len as usize).await?;
        ctx.client.put(key, ct, &bytes).await?;
        metrics::S3_BYTES.fetch_add(len, Ordering::Relaxed);
        return Ok(true);
    }
    if multipart.is_none() {
        // Multipart uploads an interrupted transfer left on this key hold storage.
        for stale in ctx.client.uploads_of(key).await? {
            crate::debug!("{key}: aborting a multipart upload left by an earlier transfer");
            ctx.client.abort(key, &stale).await?;
        }
        let upload_id = ctx.client.create_multipart(key, ct).await?;
        *multipart = Some(Multipart {
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
        });
    }
    let Some(mp) = multipart.as_mut() else {
        return Err(Failed("no multipart upload".into()));
    };
    let lost = || Failed("S3 lost the multipart upload; starting it again".into());
    match upload_parts(ctx, id, file, len, part, count, mp).await {
        Ok(()) => {}
        Err(PartsEnd::Gone) => {
            abandon(ctx, multipart).await;
            return Ok(false);
        }
        Err(PartsEnd::Lost) => {
            *multipart = None;
            return Err(lost());
        }
        Err(PartsEnd::Failed(e)) => return Err(e),
    }
    match ctx.client.complete(key, &mp.upload_id, &mp.parts).await {
        Ok(()) => {
            *multipart = None;
            Ok(true)
        }
        Err(S3Fail::NoSuchUpload) => {
            *multipart = None;
            Err(lost())
        }
        Err(e) => Err(e.into()),
    }
}

/// The parts not stored yet, [`PARTS_IN_FLIGHT`] at a time (`mp.parts` stays sorted);
/// between two windows, whether the upload still exists.
async fn upload_parts(
    ctx: &Ctx,
    id: UploadId,
    file: &tokio_uring::fs::File,
    len: u64,
    part: u64,
    count: u64,
    mp: &mut Multipart,
) -> Result<(), PartsEnd> {
    let done: HashSet<u32> = mp.parts.iter().map(|(n, _)| *n).collect();
    let todo: Vec<u32> = (1..=count as u32).filter(|n| !done.contains(n)).collect();
    for window in todo.chunks(PARTS_IN_FLIGHT) {
        match ctx.stores.info.get(&id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(PartsEnd::Gone),
            Err(e) => return Err(PartsEnd::Failed(e.into())),
        }
        if ctx.stopping.get() {
            return Err(PartsEnd::Failed(Failed("stopping".into())));
        }
        let mut sends = Vec::with_capacity(window.len());
        for &n in window {
            let at = u64::from(n - 1) * part;
            let bytes = read_part(file, at, (len - at).min(part) as usize)
                .await
                .map_err(PartsEnd::Failed)?;
            let size = bytes.len() as u64;
            let (client, key, upload_id) = (&ctx.client, &mp.key, &mp.upload_id);
            sends.push(async move {
                let etag = client.upload_part(key, upload_id, n, bytes).await?;
                metrics::S3_BYTES.fetch_add(size, Ordering::Relaxed);
                Ok::<_, S3Fail>((n, etag))
            });
        }
        let mut first_error = None;
        for r in join_all(sends).await {
            match r {
                Ok(p) => mp.parts.push(p),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        mp.parts.sort_unstable_by_key(|(n, _)| *n);
        match first_error {
            None => {}
            Some(S3Fail::NoSuchUpload) => return Err(PartsEnd::Lost),
            Some(e) => return Err(PartsEnd::Failed(e.into())),
        }
    }
    Ok(())
}

/// Runs the futures concurrently on this task; their results in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut slots: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in pinned.iter_mut().zip(slots.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().flatten().collect()
}

/// `len` bytes of the file from `at` (io_uring reads; the file is complete and never
/// changes while it waits for its transfer).
async fn read_part(file: &tokio_uring::fs::File, at: u64, len: usize) -> Result<Vec<u8>, Failed> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let (res, back) = file
            .read_at(buf.slice(filled..len), at + filled as u64)
            .await;
        buf = back.into_inner();
        match res {
            Ok(0) => return Err(Failed(format!("the file ended at {}", at + filled as u64))),
            Ok(_) => {}
            Err(e) => return Err(Failed(format!("read the file: {e}"))),
        }
    }
    Ok(buf)
}

/// Step 5, under the upload's lock: the record again, the announcement, the file's
/// removal.
async fn finish(ctx: &Ctx, id: UploadId, key: &str, len: u64) -> Result<Outcome, Failed> {
    let Some(lock) = lock_within(&ctx.stores, id).await? else {
        return Err(Failed("the upload stayed locked by a request".into()));
    };
    let mut info = match ctx.stores.info.get(&id).await {
        Ok(info) => info,
        Err(StoreError::NotFound) => {
            // Deleted while it was moving: the DELETE found no object yet.
            drop(lock);
            ctx.client.delete(key).await?;
            return Ok(Outcome::Nothing);
        }
        Err(e) => return Err(e.into()),
    };
    if info.offset != len {
        // A crash left the record behind its complete file: once the file is gone, the
        // record is all that says the upload is complete.
        info.offset = len;
        ctx.stores.info.put(&info).await?;
    }
    let announce = ctx
        .announce
        .borrow_mut()
        .remove(&id)
        .unwrap_or_else(|| (ctx.announcer)(&info));
    announce(info.clone()).await;
    let Some(place) = ctx.hybrid.place(&info) else {
        return Ok(Outcome::Done);
    };
    if let Some(path) = place.local.path.as_deref() {
        match tokio_uring::fs::remove_file(path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => crate::error!(
                "upload {id}: stored in S3, but its file {path} could not be removed: {e}"
            ),
        }
    }
    drop(lock);
    Ok(Outcome::Done)
}

/// The upload's lock, waiting up to [`LOCK_WAIT`] for its holder.
async fn lock_within(stores: &Stores, id: UploadId) -> Result<Option<Lock>, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        if let Some(lock) = stores.locker.try_lock(id).await? {
            return Ok(Some(lock));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(LOCK_RETRY).await;
    }
}

/// The upload is gone: abort its multipart upload, if one was started.
async fn abandon(ctx: &Ctx, multipart: &mut Option<Multipart>) {
    if let Some(mp) = multipart.take() {
        if let Err(e) = ctx.client.abort(&mp.key, &mp.upload_id).await {
            crate::warn!("{}: abort of the multipart upload failed: {e}", mp.key);
        }
    }
}

/// Removes `key`, retrying with the transfer's pauses until it is done or the thread
/// stops.
async fn delete_object(ctx: &Ctx, key: &str) {
    let mut attempt = 0;
    loop {
        match ctx.client.delete(key).await {
            Ok(()) => return,
            Err(e) => {
                attempt += 1;
                let pause = backoff(attempt, RETRY_MIN, RETRY_MAX);
                crate::warn!(
                    "S3 DELETE {key} failed ({e}); again in {:.1} s",
                    pause.as_secs_f64()
                );
                tokio::time::sleep(pause).await;
                if ctx.stopping.get() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_never_name_an_upload() {
        for _ in 0..1000 {
            let id = UploadId::random();
            let claim = claim_id(id);
            assert_ne!(claim, id);
            assert!(parse_upload_id(&claim.to_string()).is_none());
            assert_eq!(claim.to_string(), format!("{id}:s3"));
        }
    }

    #[test]
    fn join_all_keeps_order() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let got = rt.block_on(join_all(
            [30u64, 10, 20]
                .into_iter()
                .map(|ms| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ms
                })
                .collect(),
        ));
        assert_eq!(got, [30, 10, 20]);
    }
}
