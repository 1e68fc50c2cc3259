//! The concatenation and concatenation-unfinished extensions: the I/O shell around the
//! pure decisions of [`crate::tus::concat`].
//!
//! A final whose parts are all complete is assembled inside its POST (on a helper
//! thread, see [`crate::storage::file::assemble`]) and answered 201 with
//! `Upload-Offset = Upload-Length`. With `concatenation-unfinished`, a final naming
//! unfinished parts is created empty (offset 0, no `Upload-Offset` on HEAD) and put in
//! the index of waiting finals ([`super::finals::WaitingFinals`]); the PATCH that
//! completes one of its parts looks it up there and starts the assembly in a task of its
//! core, after its own answer is decided, so the PATCH is not held up by the copy.

use super::core::Core;
use super::finals::WaitingFinals;
use super::reply::{error_response, Reply};
use super::request::{location, origin, RequestCtx};
use crate::error::Error;
use crate::hooks::{Event, Origin};
use crate::http::response::Response;
use crate::metrics;
use crate::storage::id::UploadId;
use crate::storage::info::UploadInfo;
use crate::storage::layout::{new_upload_id, parse_upload_id};
use crate::storage::{Lock, StoreError, Stores, Upload};
use crate::tus::concat::{final_header, plan_final, PartState, PartsError};
use crate::tus::expiry::Expiry;
use crate::tus::metadata::Metadata;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The part IDs recorded in a final's info record.
fn recorded_parts(info: &UploadInfo) -> Result<Vec<UploadId>, Error> {
    let parts = info.parts.as_deref().unwrap_or(&[]);
    let ids: Option<Vec<UploadId>> = parts.iter().map(|p| parse_upload_id(p)).collect();
    match ids {
        Some(ids) if !ids.is_empty() => Ok(ids),
        _ => {
            crate::error!("final upload {} has no valid parts list", info.id);
            Err(Error::CorruptInfo)
        }
    }
}

/// Startup, on a helper thread (`concatenation-unfinished` only): finds the finals left
/// waiting by the previous run (records with `is_final` whose data is shorter than their
/// length) and puts them back in the index, so the PATCH completing their last part
/// assembles them. Reads every record once, with the stores' one reader; a final whose
/// last part completes before the scan reaches it is assembled by the next HEAD of it
/// ([`recover`]). `stop` ends the scan early (shutdown).
pub async fn rebuild_index(stores: &Stores, finals: &WaitingFinals, stop: &dyn Fn() -> bool) {
    let mut scan = match stores.info.scan() {
        Ok(scan) => scan,
        Err(e) => {
            crate::warn!(
                "cannot scan for waiting final uploads: {}",
                Error::from(e).message()
            );
            return;
        }
    };
    let mut found = 0usize;
    while let Some(batch) = scan.next_batch().await {
        let Ok(ids) = batch else {
            continue;
        };
        for id in ids {
            if stop() {
                return;
            }
            let Ok(info) = stores.info.get(&id).await else {
                continue;
            };
            if !info.is_final {
                continue;
            }
            let size = stores.data.stat(&info).await.map(|s| s.size).unwrap_or(0);
            if info.length.is_none_or(|l| size >= l) {
                continue;
            }
            if let Ok(parts) = recorded_parts(&info) {
                finals.register(id, &parts);
                // Its last part may have completed before the restart (an assembly cut
                // by it): then no PATCH is left to assemble it, and its next HEAD does.
                finals.retry_later(&id);
                found += 1;
            }
        }
    }
    if found > 0 {
        crate::info!("{found} final upload(s) wait for their parts");
    }
}

/// HEAD's concatenation headers: `Upload-Concat` on a partial or a final, and no
/// `Upload-Offset` on a final whose assembly has not finished (tus §2.7). Finished means
/// its data file is complete *and* it has left the index, which `--remove-parts` makes
/// wait until its parts are removed (`try_assemble`).
pub fn head_headers(base: &str, finals: &WaitingFinals, upload: &Upload, resp: &mut Response) {
    let info = &upload.info;
    if info.is_partial {
        resp.header("Upload-Concat", "partial");
    } else if info.is_final {
        let parts = info.parts.as_deref().unwrap_or(&[]);
        resp.header("Upload-Concat", final_header(base, parts));
        let pending = parse_upload_id(&info.id).is_some_and(|id| finals.contains(&id));
        if !info.is_complete() || pending {
            resp.headers.retain(|(name, _)| name != "Upload-Offset");
        }
    }
}

/// A final found unassembled by a HEAD: outside the index (after a restart, before the
/// rebuild reached it), put it back in the index and try to assemble it now, in a task
/// of this core; in the index, try again only if it is marked to be (its last assembly
/// failed, or the index was rebuilt), since otherwise the PATCH completing its last part
/// will.
pub fn recover(core: &Rc<Core>, upload: &Upload, from: Origin) {
    let info = &upload.info;
    if !info.is_final || info.is_complete() {
        return;
    }
    let Ok(parts) = recorded_parts(info) else {
        return;
    };
    let Some(id) = parse_upload_id(&info.id) else {
        return;
    };
    let finals = &core.shared.finals;
    if finals.contains(&id) {
        if !finals.take_retry(&id) {
            return; // known: its last part's PATCH will assemble it
        }
    } else {
        finals.register(id, &parts);
    }
    let core = core.clone();
    tokio_uring::spawn(async move {
        if let Err(e) = try_assemble(&core, id, from).await {
            crate::warn!("final upload {id}: assembly failed: {}", e.message());
        }
    });
}

/// A PATCH completed `part`: assemble, in tasks of this core, every waiting final whose
/// parts are now all complete.
pub fn part_finished(core: &Rc<Core>, part: &UploadId, from: &Origin) {
    for id in core.shared.finals.waiting_on(part) {
        let core = core.clone();
        let from = from.clone();
        tokio_uring::spawn(async move {
            if let Err(e) = try_assemble(&core, id, from).await {
                crate::warn!("final upload {id}: assembly failed: {}", e.message());
            }
        });
    }
}

/// Loads the parts (each once) and says what they are, in the listed order. An unknown
/// part is 404; an expired one 410.
async fn load_parts(core: &Rc<Core>, ids: &[UploadId]) -> Result<Vec<Upload>, Error> {
    let mut loaded: BTreeMap<UploadId, Upload> = BTreeMap::new();
    for id in ids {
        if loaded.contains_key(id) {
            continue;
        }
        let upload = core.stores.load(id).await?;
        if super::expire::state(&core.shared.config, &upload) == Expiry::Expired {
            return Err(Error::Gone);
        }
        loaded.insert(*id, upload);
    }
    Ok(ids
        .iter()
        .filter_map(|id| loaded.get(id).cloned())
        .collect())
}

fn part_state(u: &Upload) -> PartState {
    PartState {
        is_partial: u.info.is_partial,
        length: u.info.length,
        offset: u.offset(),
    }
}

fn parts_error(err: PartsError, ids: &[UploadId]) -> Error {
    let name = |i: usize| ids.get(i).map(UploadId::to_string).unwrap_or_default();
    match err {
        // rustus's texts.
        PartsError::NotPartial(i) => {
            Error::BadRequestOwned(format!("{} upload is not partial.", name(i)))
        }
        PartsError::Unfinished(i) => {
            Error::BadRequestOwned(format!("{} upload is not complete.", name(i)))
        }
        PartsError::DeferredLength(i) => Error::BadRequestOwned(format!(
            "{} upload has a deferred length; the final's length cannot be known",
            name(i)
        )),
        PartsError::TooLarge => {
            Error::TooLarge("The parts' lengths sum above the maximum upload size")
        }
    }
}

/// POST with `Upload-Concat: final;...`: checks every part before anything is created
/// (so a refused final leaves nothing behind), runs `pre-create`, then assembles the
/// final now (every part complete) or registers it to be assembled when its last part
/// completes (`concatenation-unfinished`).
pub async fn create_final(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    ids: Vec<UploadId>,
    metadata: Metadata,
    has_body: bool,
) -> Result<Reply, Error> {
    let cfg = &core.shared.config;
    let stores = &core.stores;
    if has_body {
        return Err(Error::Forbidden("A final upload cannot carry data"));
    }
    let parts = load_parts(core, &ids).await?;
    let states: Vec<PartState> = parts.iter().map(part_state).collect();
    let plan = plan_final(
        &states,
        cfg.extensions.concatenation_unfinished,
        cfg.max_file_size,
    )
    .map_err(|e| parts_error(e, &ids))?;

    let id = new_upload_id();
    // Nobody else knows the new ID before the answer.
    let lock = stores.locker.lock_new(id).await?.ok_or(Error::Locked)?;
    let mut info = UploadInfo::new(
        id.to_string(),
        Some(plan.length),
        crate::time::now_unix(),
        metadata,
    );
    info.storage = stores.data.storage_name().to_owned();
    info.is_final = true;
    info.parts = Some(ids.iter().map(UploadId::to_string).collect());
    let hooks = &core.shared.hooks;
    let mut answered = None;
    let mut chosen = None;
    if hooks.wants(Event::PreCreate) {
        let from = origin(core, ctx, "POST", None);
        let answer = hooks.pre(Event::PreCreate, &info, from).await?;
        (answered, chosen) = super::handler::apply_pre_create(&mut info, answer);
    }
    let (id, lock) = match chosen {
        Some(chosen) => {
            drop(lock);
            (chosen, super::handler::lock_chosen(core, chosen).await?)
        }
        None => (id, lock),
    };
    let loc = location(ctx, &cfg.url, &info.id);
    if plan.ready {
        let parts: Vec<UploadInfo> = parts.into_iter().map(|p| p.info).collect();
        // An ID a hook chose is claimed first (its record, offset 0), so the assembly
        // can never write where another upload of that ID keeps its data.
        if chosen.is_some() {
            stores.info.create(&info).await?;
        }
        // Assembled before the record is written: when the assembly fails, nothing of
        // the final is left (the store removes its partial file) and the error carries
        // no Location, so a client's retry creates the one final there is.
        if let Err(e) = stores.data.concat(&parts, &mut info).await {
            if chosen.is_some() {
                let _ = stores.info.remove(&id).await;
            }
            return Err(e.into());
        }
        info.offset = plan.length;
        if let Err(e) = stores.info.put(&info).await {
            let _ = stores.data.remove(&info).await;
            if chosen.is_some() {
                let _ = stores.info.remove(&id).await;
            }
            return Err(e.into());
        }
        metrics::upload_created(info.length, true);
        drop(lock);
        // Before the 201 and post-finish: the final is not known to anyone yet.
        if cfg.remove_parts {
            remove_parts(core, &ids, &id).await;
        }
        // rustus-compat §3.1: a final's creation fires post-finish instead of post-create
        // (after pre-finish, when listed).
        let from = || origin(core, ctx, "POST", None);
        let finish = super::handler::pre_finish(core, &info, from).await;
        super::handler::finished(core, info, from).await;
        let mut resp = match finish.refusal() {
            Some(err) => error_response(err),
            None => Response::new(201),
        };
        resp.header("Location", loc);
        resp.header("Upload-Offset", plan.length.to_string());
        if let Some(a) = &answered {
            resp.merge_answer(a.status, &a.headers, &a.body);
        }
        finish.merge_into(&mut resp);
        return Ok(Reply::new(resp));
    }
    // concatenation-unfinished: empty data (offset 0) until the assembly.
    drop(stores.data.create(&mut info).await?);
    let recorded = match chosen {
        Some(_) => stores.info.create(&info).await,
        None => stores.info.put(&info).await,
    };
    if let Err(e) = recorded {
        let _ = stores.data.remove(&info).await;
        return Err(e.into());
    }
    core.shared.finals.register(id, &ids);
    metrics::upload_created(info.length, false);
    if hooks.wants(Event::PostCreate) {
        hooks
            .post(Event::PostCreate, info, origin(core, ctx, "POST", None))
            .await;
    }
    drop(lock);
    // A part may have completed between the check above and the registration: look
    // again now that the final is in the index.
    if let Err(e) = try_assemble(core, id, origin(core, ctx, "POST", None)).await {
        // The final exists (its record; post-create told the hooks): the error carries
        // its Location, so a client's retry asks for this final instead of creating a
        // second one, and its next HEAD tries the assembly again.
        crate::warn!("final upload {id}: assembly failed: {}", e.message());
        let mut resp = error_response(&e);
        resp.header("Location", loc);
        return Ok(Reply::new(resp));
    }
    let mut resp = Response::new(201);
    resp.header("Location", loc);
    if let Some(a) = &answered {
        resp.merge_answer(a.status, &a.headers, &a.body);
    }
    Ok(Reply::new(resp))
}

/// How long [`try_assemble`] waits for a final's lock, and [`remove_parts`] for a part's,
/// and how often they try. A final's holder is usually another check of the same final
/// (a few `statx`), which may have seen the part this caller just completed as
/// unfinished; giving up at once would leave the final waiting. A holder that keeps it
/// longer is assembling or deleting it, and either way the final needs nothing more from
/// this caller.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Assembles a waiting final if every part is complete. Returns whether the final is
/// complete afterwards. A failure marks the final to be tried again by its next HEAD.
async fn try_assemble(core: &Rc<Core>, id: UploadId, from: Origin) -> Result<bool, Error> {
    let result = assemble_waiting(core, id, from).await;
    if result.is_err() {
        core.shared.finals.retry_later(&id);
    }
    result
}

async fn assemble_waiting(core: &Rc<Core>, id: UploadId, from: Origin) -> Result<bool, Error> {
    let stores = &core.stores;
    let finals = &core.shared.finals;
    let Some(_lock) = lock_within(stores, id, LOCK_WAIT).await? else {
        return Ok(false);
    };
    let mut upload = match stores.load(&id).await {
        Ok(u) => u,
        Err(StoreError::NotFound) => {
            finals.forget(&id);
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    if !upload.info.is_final {
        return Ok(false);
    }
    if upload.info.is_complete() {
        finals.forget(&id);
        return Ok(true);
    }
    let ids = recorded_parts(&upload.info)?;
    let parts = match load_parts(core, &ids).await {
        Ok(p) => p,
        Err(Error::NotFound) | Err(Error::Gone) => return Ok(false),
        Err(e) => return Err(e),
    };
    let states: Vec<PartState> = parts.iter().map(part_state).collect();
    let plan = match plan_final(&states, true, None) {
        Ok(plan) if plan.ready => plan,
        _ => return Ok(false),
    };
    if upload.info.length != Some(plan.length) {
        crate::error!(
            "final upload {id}: its parts now sum to {} bytes, not its length {:?}",
            plan.length,
            upload.info.length
        );
        return Err(Error::CorruptInfo);
    }
    let parts: Vec<UploadInfo> = parts.into_iter().map(|p| p.info).collect();
    stores.data.concat(&parts, &mut upload.info).await?;
    upload.info.offset = plan.length;
    if let Err(e) = stores.info.put(&upload.info).await {
        // The data file is complete, and the offset is its size: the final is
        // complete whatever its record says. Its parts are kept.
        finals.forget(&id);
        return Err(e.into());
    }
    metrics::upload_finished();
    crate::debug!("final upload {id} assembled ({} bytes)", plan.length);
    // The final stays in the index (so its HEAD shows no offset yet) until its parts
    // are gone: a client that sees it complete finds no part left.
    let cfg = &core.shared.config;
    if cfg.remove_parts {
        remove_parts(core, &ids, &id).await;
    }
    finals.forget(&id);
    super::handler::finished(core, upload.info, move || from).await;
    Ok(true)
}

/// The upload's lock, waiting up to `wait` for its holder to let go (async sleeps of
/// [`LOCK_RETRY`], never blocking the core); `None` if it is still held then.
async fn lock_within(
    stores: &Stores,
    id: UploadId,
    wait: std::time::Duration,
) -> Result<Option<Lock>, Error> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(lock) = stores.locker.try_lock(id).await? {
            return Ok(Some(lock));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(LOCK_RETRY).await;
    }
}

/// `--remove-parts` for the final `assembled` (whose data file and record are complete):
/// deletes each part's info and data before the final is reported complete, except a
/// part another waiting final still needs, or one a request keeps locked for longer
/// than [`LOCK_WAIT`] (both logged). A complete part's holder is usually brief (a PATCH
/// answered "already complete", a DELETE); what can outlast the wait is a DELETE whose
/// `pre-terminate` hook is slower than that, or the PATCH that completed the part
/// waiting for room in a full hook queue (up to `POST_ROOM_WAIT`).
async fn remove_parts(core: &Rc<Core>, ids: &[UploadId], assembled: &UploadId) {
    let mut done: Vec<UploadId> = Vec::new();
    for id in ids {
        if done.contains(id) {
            continue;
        }
        done.push(*id);
        if core.shared.finals.needed_by_another(id, Some(assembled)) {
            crate::debug!("part {id} is kept: a waiting final upload needs it");
            continue;
        }
        let stores = &core.stores;
        let Ok(Some(_lock)) = lock_within(stores, *id, LOCK_WAIT).await else {
            crate::warn!("part {id} is kept: another request held it for too long");
            continue;
        };
        match stores.info.get(id).await {
            Ok(info) => {
                if let Err(e) = stores.remove(id, &info).await {
                    crate::warn!(
                        "part {id} could not be removed: {}",
                        Error::from(e).message()
                    );
                }
            }
            Err(e) => crate::debug!("part {id} is already gone: {}", Error::from(e).message()),
        }
    }
}
