//! The concatenation and concatenation-unfinished extensions: the I/O shell around the
//! pure decisions of [`crate::tus::concat`].
//!
//! A final whose parts are all complete is assembled inside its POST (on a helper
//! thread, see [`crate::storage::assemble`]) and answered 201 with
//! `Upload-Offset = Upload-Length`. With `concatenation-unfinished`, a final naming
//! unfinished parts is created empty (offset 0, no `Upload-Offset` on HEAD) and put in
//! the process-wide [`PENDING`] index; the PATCH that completes one of its parts looks
//! it up there and starts the assembly in a task of its core, after its own answer is
//! decided, so the PATCH is not held up by the copy.

use super::core::Core;
use super::handler::{location, origin, Reply, RequestCtx};
use crate::error::Error;
use crate::hooks::{Event, Origin};
use crate::http::response::Response;
use crate::metrics;
use crate::storage::assemble::{assemble_blocking, AssembleError, PartFile};
use crate::storage::files::Upload;
use crate::storage::info::UploadInfo;
use crate::storage::layout::{self, new_upload_id, parse_upload_id};
use crate::storage::locks::UploadLock;
use crate::tus::concat::{final_header, plan_final, PartState, PartsError};
use crate::tus::expiry::Expiry;
use crate::tus::metadata::Metadata;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Mutex;
use uuid::Uuid;

/// Finals created before all their parts were complete and not yet reported assembled:
/// final ID → its part IDs. Invariant: a final is in the map from the moment its info
/// record is written until its assembly has written the complete record and (with
/// `--remove-parts`) removed its parts, or until it is deleted or swept; while it is in
/// the map its HEAD shows no `Upload-Offset` ([`head_headers`]), even once its data file
/// is complete. The map is per process and is not persisted: after a restart a waiting final
/// is found again by the next HEAD or GET of it ([`recover`]). Lookups by part scan the
/// map (O(pending finals)), which stays small: finals are only waiting while their
/// parts upload.
static PENDING: Mutex<BTreeMap<u128, Vec<u128>>> = Mutex::new(BTreeMap::new());

fn pending() -> std::sync::MutexGuard<'static, BTreeMap<u128, Vec<u128>>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

fn register(final_id: Uuid, parts: &[Uuid]) {
    let parts = parts.iter().map(|p| p.as_u128()).collect();
    pending().insert(final_id.as_u128(), parts);
}

/// Takes a final out of the waiting index (assembled, deleted or swept).
pub fn forget(final_id: &Uuid) {
    pending().remove(&final_id.as_u128());
}

/// Whether a waiting final names this upload as a part (such a part is not deleted by
/// DELETE or `--remove-parts`).
pub fn part_in_use(part: &Uuid) -> bool {
    needed_by_another(part, None)
}

/// Whether a final in the index other than `assembled` names `part`.
fn needed_by_another(part: &Uuid, assembled: Option<&Uuid>) -> bool {
    let p = part.as_u128();
    let skip = assembled.map(Uuid::as_u128);
    pending()
        .iter()
        .any(|(f, parts)| Some(*f) != skip && parts.contains(&p))
}

/// Whether a final is in the index (waiting for its parts, or assembled and having its
/// parts removed).
fn is_pending(final_id: &str) -> bool {
    parse_upload_id(final_id).is_some_and(|id| pending().contains_key(&id.as_u128()))
}

/// The waiting finals that name `part`.
fn waiting_on(part: &Uuid) -> Vec<Uuid> {
    let p = part.as_u128();
    pending()
        .iter()
        .filter(|(_, parts)| parts.contains(&p))
        .map(|(f, _)| Uuid::from_u128(*f))
        .collect()
}

/// The part IDs recorded in a final's info record.
fn recorded_parts(info: &UploadInfo) -> Result<Vec<Uuid>, Error> {
    let parts = info.parts.as_deref().unwrap_or(&[]);
    let ids: Option<Vec<Uuid>> = parts.iter().map(|p| parse_upload_id(p)).collect();
    match ids {
        Some(ids) if !ids.is_empty() => Ok(ids),
        _ => {
            crate::error!("final upload {} has no valid parts list", info.id);
            Err(Error::CorruptInfo)
        }
    }
}

/// Startup, on a helper thread (`concatenation-unfinished` only): finds the finals left
/// waiting by the previous run (records with `"is_final":true` whose data file is shorter
/// than their length) and puts them back in the index, so the PATCH completing their last
/// part assembles them. Reads every info record once; a final whose last part completes
/// before the scan reaches it is assembled by the next HEAD of it ([`recover`]).
pub fn rebuild_index(info_dir: &std::path::Path, data_dir: &std::path::Path, template: &str) {
    let Ok(entries) = std::fs::read_dir(info_dir) else {
        return;
    };
    let mut found = 0usize;
    for entry in entries.flatten() {
        let Some(id) = crate::storage::layout::id_of_info_file(&entry.file_name()) else {
            continue;
        };
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        if !bytes.windows(15).any(|w| w == b"\"is_final\":true") {
            continue;
        }
        let Ok(info) = UploadInfo::from_json(&bytes) else {
            continue;
        };
        let path = layout::upload_data_path(&info, data_dir, template);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if !info.is_final || info.length.is_none_or(|l| size >= l) {
            continue;
        }
        if let Ok(parts) = recorded_parts(&info) {
            register(id, &parts);
            found += 1;
        }
    }
    if found > 0 {
        crate::info!("{found} final upload(s) wait for their parts");
    }
}

/// HEAD's concatenation headers: `Upload-Concat` on a partial or a final, and no
/// `Upload-Offset` on a final whose assembly has not finished (tus §2.7). Finished means
/// its data file is complete *and* it has left the index, which `--remove-parts` makes
/// wait until its parts are removed ([`try_assemble`]).
pub fn head_headers(base: &str, upload: &Upload, resp: &mut Response) {
    let info = &upload.info;
    if info.is_partial {
        resp.header("Upload-Concat", "partial");
    } else if info.is_final {
        let parts = info.parts.as_deref().unwrap_or(&[]);
        resp.header("Upload-Concat", final_header(base, parts));
        if !info.is_complete() || is_pending(&info.id) {
            resp.headers.retain(|(name, _)| *name != "Upload-Offset");
        }
    }
}

/// A final found unassembled outside the index (after a restart): put it back in the
/// index and try to assemble it now, in a task of this core.
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
    if pending().contains_key(&id.as_u128()) {
        return; // known: its last part's PATCH will assemble it
    }
    register(id, &parts);
    let core = core.clone();
    tokio_uring::spawn(async move {
        if let Err(e) = try_assemble(&core, id, from).await {
            crate::warn!("final upload {id}: assembly failed: {}", e.message());
        }
    });
}

/// A PATCH completed `part`: assemble, in tasks of this core, every waiting final whose
/// parts are now all complete.
pub fn part_finished(core: &Rc<Core>, part: &Uuid, from: &Origin) {
    for id in waiting_on(part) {
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
async fn load_parts(core: &Rc<Core>, ids: &[Uuid]) -> Result<Vec<Upload>, Error> {
    let mut loaded: BTreeMap<u128, Upload> = BTreeMap::new();
    for id in ids {
        if loaded.contains_key(&id.as_u128()) {
            continue;
        }
        let upload = core.shared.store.load(id).await?;
        if super::expire::state(&core.shared.config, &upload) == Expiry::Expired {
            return Err(Error::Gone);
        }
        loaded.insert(id.as_u128(), upload);
    }
    Ok(ids
        .iter()
        .filter_map(|id| loaded.get(&id.as_u128()).cloned())
        .collect())
}

fn part_state(u: &Upload) -> PartState {
    PartState {
        is_partial: u.info.is_partial,
        length: u.info.length,
        offset: u.offset(),
    }
}

fn part_files(parts: &[Upload]) -> Vec<PartFile> {
    parts
        .iter()
        .map(|p| PartFile {
            path: p.data_path.clone(),
            len: p.info.length.unwrap_or(0),
        })
        .collect()
}

/// Copies the parts into `dest` on a helper thread; the core awaits the result.
async fn assemble(files: Vec<PartFile>, dest: PathBuf, fsync: bool) -> Result<(), Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let shown = dest.clone();
    std::thread::Builder::new()
        .name("tusring-assemble".into())
        .spawn(move || {
            let _ = tx.send(assemble_blocking(&files, &dest, fsync));
        })
        .map_err(|e| Error::storage("start the assembly thread", e))?;
    match rx.await {
        Ok(Ok(copied)) => {
            crate::debug!(
                "assembled {}: {} bytes copied in the kernel, {} through user space",
                shown.display(),
                copied.in_kernel,
                copied.fallback
            );
            Ok(())
        }
        Ok(Err(AssembleError::PartMissing(_))) => Err(Error::NotFound),
        Ok(Err(AssembleError::PartShort(i))) => Err(Error::storage(
            "copy part data",
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("part {i} is shorter than its length"),
            ),
        )),
        Ok(Err(AssembleError::Io(what, e))) => Err(Error::storage(what, e)),
        Err(_) => Err(Error::Unavailable("The assembly thread ended early")),
    }
}

fn parts_error(err: PartsError, ids: &[Uuid]) -> Error {
    let name = |i: usize| ids.get(i).map(Uuid::to_string).unwrap_or_default();
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
    ids: Vec<Uuid>,
    metadata: Metadata,
    has_body: bool,
) -> Result<Reply, Error> {
    let cfg = &core.shared.config;
    let store = &core.shared.store;
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
    let lock = UploadLock::try_acquire(id).ok_or(Error::Locked)?;
    let mut info = UploadInfo::new(
        id.to_string(),
        Some(plan.length),
        crate::time::now_unix(),
        metadata,
    );
    info.is_final = true;
    info.parts = Some(ids.iter().map(Uuid::to_string).collect());
    let hooks = &core.shared.hooks;
    if hooks.wants(Event::PreCreate) {
        let from = origin(core, ctx, "POST", None);
        hooks.pre(Event::PreCreate, &info, from).await?;
    }
    let loc = location(ctx, &cfg.url, &info.id);
    if plan.ready {
        let dest = store.data_path_for(&info);
        assemble(part_files(&parts), dest.clone(), store.force_fsync).await?;
        info.path = Some(dest.to_string_lossy().into_owned());
        info.offset = plan.length;
        if let Err(e) = store.write_info(&info).await {
            let _ = tokio_uring::fs::remove_file(&dest).await;
            return Err(e);
        }
        metrics::upload_created(info.length, true);
        drop(lock);
        // Before the 201 and post-finish: the final is not known to anyone yet.
        if cfg.remove_parts {
            remove_parts(core, &ids, &id).await;
        }
        // rustus-compat §3.1: a final's creation fires post-finish instead of post-create.
        if hooks.wants(Event::PostFinish) {
            hooks
                .post(Event::PostFinish, info, origin(core, ctx, "POST", None))
                .await;
        }
        let mut resp = Response::new(201);
        resp.header("Location", loc);
        resp.header("Upload-Offset", plan.length.to_string());
        return Ok(Reply::new(resp));
    }
    // concatenation-unfinished: an empty data file (offset 0) until the assembly.
    let (file, path) = store.create_data(&mut info, false).await?;
    let _ = file.close().await;
    if let Err(e) = store.write_info(&info).await {
        let _ = tokio_uring::fs::remove_file(&path).await;
        return Err(e);
    }
    register(id, &ids);
    metrics::upload_created(info.length, false);
    if hooks.wants(Event::PostCreate) {
        hooks
            .post(Event::PostCreate, info, origin(core, ctx, "POST", None))
            .await;
    }
    drop(lock);
    // A part may have completed between the check above and the registration: look
    // again now that the final is in the index.
    try_assemble(core, id, origin(core, ctx, "POST", None)).await?;
    let mut resp = Response::new(201);
    resp.header("Location", loc);
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
/// complete afterwards.
async fn try_assemble(core: &Rc<Core>, id: Uuid, from: Origin) -> Result<bool, Error> {
    let Some(_lock) = lock_within(id, LOCK_WAIT).await else {
        return Ok(false);
    };
    let store = &core.shared.store;
    let mut upload = match store.load(&id).await {
        Ok(u) => u,
        Err(Error::NotFound) => {
            forget(&id);
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    if !upload.info.is_final {
        return Ok(false);
    }
    if upload.info.is_complete() {
        forget(&id);
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
    assemble(
        part_files(&parts),
        upload.data_path.clone(),
        store.force_fsync,
    )
    .await?;
    upload.info.offset = plan.length;
    if let Err(e) = store.write_info(&upload.info).await {
        // The data file is complete, and the offset is its size: the final is
        // complete whatever its record says. Its parts are kept.
        forget(&id);
        return Err(e);
    }
    metrics::upload_finished();
    crate::debug!("final upload {id} assembled ({} bytes)", plan.length);
    // The final stays in the index (so its HEAD shows no offset yet) until its parts
    // are gone: a client that sees it complete finds no part left.
    let cfg = &core.shared.config;
    if cfg.remove_parts {
        remove_parts(core, &ids, &id).await;
    }
    forget(&id);
    let hooks = &core.shared.hooks;
    if hooks.wants(Event::PostFinish) {
        hooks.post(Event::PostFinish, upload.info, from).await;
    }
    Ok(true)
}

/// The upload's lock, waiting up to `wait` for its holder to let go (async sleeps of
/// [`LOCK_RETRY`], never blocking the core); `None` if it is still held then.
async fn lock_within(id: Uuid, wait: std::time::Duration) -> Option<UploadLock> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(lock) = UploadLock::try_acquire(id) {
            return Some(lock);
        }
        if std::time::Instant::now() >= deadline {
            return None;
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
async fn remove_parts(core: &Rc<Core>, ids: &[Uuid], assembled: &Uuid) {
    let mut done: Vec<Uuid> = Vec::new();
    for id in ids {
        if done.contains(id) {
            continue;
        }
        done.push(*id);
        if needed_by_another(id, Some(assembled)) {
            crate::debug!("part {id} is kept: a waiting final upload needs it");
            continue;
        }
        let Some(_lock) = lock_within(*id, LOCK_WAIT).await else {
            crate::warn!("part {id} is kept: another request held it for too long");
            continue;
        };
        let store = &core.shared.store;
        match store.read_info(id).await {
            Ok(upload) => {
                if let Err(e) = store.remove(&upload).await {
                    crate::warn!("part {id} could not be removed: {}", e.message());
                }
            }
            Err(e) => crate::debug!("part {id} is already gone: {}", e.message()),
        }
    }
}
