//! Stopping an upload on a hook's word: a `post-receive` answer with `StopUpload`
//! (tusd v2's; only with `--hooks-answers`, see DESIGN.md, "Stopping an upload").
//!
//! The answer is read on a hook worker thread, while the PATCH it is about may be
//! receiving on any core, or may have ended. So the order goes through two things that
//! need no core:
//!
//! * **the stop table** (this module, process-wide, keyed by upload ID): the order
//!   waits there until it is carried out. A PATCH (tus or the draft's append) looks at
//!   it, under the upload's lock, before its body and after it, and carries it out
//!   itself ([`before_body`], [`after_body`]): the PATCH in progress, or the next one,
//!   is answered with the answer's `HTTPResponse`.
//! * **the applier** (`tusring-stop`, a helper thread with stores of its own): woken
//!   over a channel for each order, it takes the upload's lock like a newer request
//!   would, which cuts a PATCH in progress on whatever core (or node) it runs
//!   (`net::Release`: the stop flag and `shutdown(SHUT_RD)` of its socket, the takeover
//!   path). The cut PATCH keeps its bytes, finds the order and carries it out before it
//!   lets go; with no PATCH in progress the applier carries it out itself.
//!
//! Carrying it out ([`apply`]) under the lock: the upload is removed (tusd's way: data
//! and record, then `post-terminate`), or kept with `KeepUpload`: its record says
//! `stopped`, so every later PATCH, on any core, on any node sharing Redis records, and
//! after a restart, is refused with 403. A complete upload is left alone (nothing is
//! left to stop), as is a removal of a part a waiting final still needs (kept instead).

use super::core::Core;
use super::helper;
use super::request::origin;
use super::Shared;
use crate::error::{Error, HookError};
use crate::hooks::answer::HttpAnswer;
use crate::hooks::{Event, Origin, StopOrder};
use crate::metrics;
use crate::net::BodySource;
use crate::storage::id::UploadId;
use crate::storage::info::UploadInfo;
use crate::storage::{Acquired, StoreError, Stores};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a PATCH reports its progress to the hooks (`post-receive`) while its body
/// arrives, when a hook can stop it ([`crate::hooks::Hooks::can_stop`]): tusd's
/// `-progress-hooks-interval` default.
pub const PROGRESS_HOOK_EVERY: Duration = Duration::from_secs(1);

/// Times the applier asks for an upload's lock before it leaves the order to the
/// requests of this process (each ask waits up to the takeover bound, 1 s).
const APPLY_TRIES: u32 = 20;

/// The applier's pause between two asks.
const APPLY_PAUSE: Duration = Duration::from_millis(250);

/// The answer to a PATCH of an upload a hook stopped and kept.
pub const STOPPED: &str =
    "The upload was stopped by the server (a hook's StopUpload); it takes no more data";

/// An order waiting in the table.
#[derive(Debug, Clone)]
pub struct Stop {
    /// The answer for the PATCH the stop cuts (4xx/5xx: `hooks::answer`'s invariant).
    pub response: HttpAnswer,
    /// Keep the upload (refusing its PATCHes) rather than remove it.
    pub keep: bool,
    /// The request whose `post-receive` was answered (for `post-terminate`).
    pub origin: Origin,
}

/// Orders not carried out yet. Invariant: an ID is here from the hook's answer until a
/// request or the applier carried the order out under the upload's lock (or found the
/// upload gone or complete). Held for one map operation at a time, never across an
/// `.await`.
static TABLE: Mutex<BTreeMap<UploadId, Stop>> = Mutex::new(BTreeMap::new());

/// The number of entries in [`TABLE`], so that a PATCH looks at the table only when it
/// holds something. Changed under the table's mutex; read without it (Relaxed: a PATCH
/// that misses an order entered at this instant is cut by the applier's takeover).
static WAITING: AtomicUsize = AtomicUsize::new(0);

fn table() -> std::sync::MutexGuard<'static, BTreeMap<UploadId, Stop>> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

fn enter(id: UploadId, stop: Stop) {
    let mut t = table();
    if t.insert(id, stop).is_none() {
        WAITING.fetch_add(1, Ordering::Relaxed);
    }
}

/// The order waiting for `id`, if any.
pub fn waiting(id: &UploadId) -> Option<Stop> {
    if WAITING.load(Ordering::Relaxed) == 0 {
        return None;
    }
    table().get(id).cloned()
}

fn forget(id: &UploadId) {
    if table().remove(id).is_some() {
        WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sets the hooks' stop sink and starts the applier, when a hook can stop an upload
/// (`Hooks::can_stop`); else does nothing.
pub fn start(shared: &Arc<Shared>) -> std::io::Result<()> {
    if !shared.hooks.can_stop() {
        return Ok(());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<UploadId>();
    shared.hooks.on_stop(Box::new(move |order: StopOrder| {
        // On a hook worker: one map insert and a channel send, never a wait.
        let Ok(id) = UploadId::parse(&order.upload.id) else {
            crate::warn!("stop of upload {}: not an upload ID", order.upload.id);
            return;
        };
        let how = if order.keep { "kept" } else { "removed" };
        crate::info!("upload {id}: stopped by a post-receive answer; to be {how}");
        enter(
            id,
            Stop {
                response: order.response,
                keep: order.keep,
                origin: order.origin,
            },
        );
        let _ = tx.send(id);
    }));
    helper::spawn("tusring-stop", shared, move |stores, shared| async move {
        applier(stores, shared, rx).await
    })
    .map(drop)
}

/// The applier's life: each order in turn, until the daemon exits.
async fn applier(
    stores: Stores,
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<UploadId>,
) {
    while let Some(id) = rx.recv().await {
        apply_alone(&stores, &shared, id).await;
    }
}

/// Carries out the order for `id` from the applier: takes the upload's lock (cutting a
/// PATCH in progress, which then carries the order out itself) and carries it out if it
/// still waits. A lock it cannot get is asked for again; after [`APPLY_TRIES`] the order
/// stays in the table for this process's requests.
async fn apply_alone(stores: &Stores, shared: &Shared, id: UploadId) {
    for _ in 0..APPLY_TRIES {
        if waiting(&id).is_none() {
            return;
        }
        if let Ok(Acquired::Lock(_lock, took_over)) = stores.locker.lock(id, None).await {
            if took_over {
                crate::debug!("upload {id}: the PATCH in progress was cut for its stop");
            }
            let Some(stop) = waiting(&id) else { return };
            match stores.info.get(&id).await {
                Err(StoreError::NotFound) => {
                    forget(&id);
                    return;
                }
                Ok(mut info) => match apply(stores, shared, &mut info, &stop).await {
                    Ok(()) => {
                        forget(&id);
                        return;
                    }
                    Err(e) => {
                        crate::warn!("upload {id}: stop not carried out yet: {}", e.message())
                    }
                },
                Err(e) => crate::warn!(
                    "upload {id}: stop not carried out yet: {}",
                    Error::from(e).message()
                ),
            }
        }
        tokio::time::sleep(APPLY_PAUSE).await;
    }
    crate::warn!(
        "upload {id}: its stop could not be carried out (the upload stayed busy or the \
         store failed); a PATCH to it on this process still carries it out"
    );
}

/// Carries out `stop` on the upload whose record is `info`, under its lock: removed
/// (data and record, then `post-terminate`), or kept with its record marked stopped. A
/// complete upload is left as it is.
async fn apply(
    stores: &Stores,
    shared: &Shared,
    info: &mut UploadInfo,
    stop: &Stop,
) -> Result<(), Error> {
    let Ok(id) = UploadId::parse(&info.id) else {
        return Ok(());
    };
    if info.is_complete() {
        crate::info!("upload {id}: complete before its stop was carried out; left as it is");
        return Ok(());
    }
    let keep = stop.keep || shared.finals.part_in_use(&id);
    if keep {
        if !stop.keep {
            crate::info!("upload {id}: a waiting final needs it: stopped and kept");
        }
        info.stopped = true;
        stores.info.put(info).await?;
        crate::info!("upload {id}: stopped and kept at offset {}", info.offset);
        return Ok(());
    }
    stores.remove(&id, info).await?;
    metrics::upload_terminated(true);
    crate::info!("upload {id}: stopped and removed at offset {}", info.offset);
    if shared.hooks.wants(Event::PostTerminate) {
        shared
            .hooks
            .post(Event::PostTerminate, info.clone(), stop.origin.clone())
            .await;
    }
    Ok(())
}

/// In a PATCH holding the upload's lock, before its body: a kept stopped upload is
/// refused (403); an order waiting for it is carried out now and answers this request.
pub async fn before_body(core: &Core, id: &UploadId, info: &mut UploadInfo) -> Result<(), Error> {
    if info.stopped {
        return Err(Error::Forbidden(STOPPED));
    }
    match after_body(core, id, info).await? {
        Some(answer) => Err(answer),
        None => Ok(()),
    }
}

/// In a PATCH holding the upload's lock, once its body ended (cut by the applier, or
/// not) and `info.offset` says what is stored: the order waiting for the upload, if any,
/// carried out now; the error to answer the PATCH with (the answer's `HTTPResponse`).
/// `None` when no order waits, or the upload is complete (the order is dropped).
pub async fn after_body(
    core: &Core,
    id: &UploadId,
    info: &mut UploadInfo,
) -> Result<Option<Error>, Error> {
    let Some(stop) = waiting(id) else {
        return Ok(None);
    };
    let complete = info.is_complete();
    apply(&core.stores, &core.shared, info, &stop).await?;
    forget(id);
    if complete {
        return Ok(None);
    }
    Ok(Some(Error::Hook(HookError::Answered(stop.response))))
}

/// Has the body report its progress to the hooks every [`PROGRESS_HOOK_EVERY`] while it
/// arrives (`post-receive` with the offset stored so far), when a hook can stop the
/// upload; else leaves the body as it is (the event count stays rustus's).
pub fn report_progress(
    core: &Rc<Core>,
    ctx: &super::request::RequestCtx<'_>,
    info: &UploadInfo,
    body: &mut BodySource<'_>,
) {
    let shared = core.shared.clone();
    if !shared.hooks.can_stop() {
        return;
    }
    let Ok(id) = UploadId::parse(&info.id) else {
        return;
    };
    let from = origin(core, ctx, "PATCH", Some(&id));
    let info = info.clone();
    let start = info.offset;
    body.report_to_hooks(
        start,
        PROGRESS_HOOK_EVERY,
        Box::new(move |end| {
            let mut now = info.clone();
            now.offset = end;
            shared.hooks.post_progress(now, from.clone());
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(keep: bool) -> Stop {
        Stop {
            response: HttpAnswer {
                status: Some(413),
                body: "quota".into(),
                headers: Vec::new(),
            },
            keep,
            origin: Origin {
                request: crate::hooks::RequestPart {
                    uri: "/files/x".into(),
                    method: "PATCH".into(),
                    remote_addr: String::new(),
                    headers: Default::default(),
                },
                proxied: Vec::new(),
            },
        }
    }

    #[test]
    fn the_table_holds_one_order_per_upload_until_forgotten() {
        let (a, b) = (UploadId::random(), UploadId::random());
        assert!(waiting(&a).is_none());
        enter(a, stop(false));
        enter(a, stop(true));
        let got = waiting(&a).expect("waiting");
        assert!(got.keep, "the newer order replaces the older");
        assert!(waiting(&b).is_none());
        forget(&a);
        forget(&a);
        assert!(waiting(&a).is_none());
    }
}
