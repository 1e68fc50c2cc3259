//! The resumable-uploads draft's I/O shell: creation, offset retrieval, append,
//! cancellation and OPTIONS for a request that speaks interop version 6 or 8
//! (`draft::rules::detect`, asked by [`super::handler::handle`]), on the same uploads as
//! tus: the same `.info` record, data store, locks (with takeover), hooks, limits,
//! expiration and checksum verification. Every decision is asked of [`crate::draft`];
//! this module reads the request's fields, calls the stores and builds the answers,
//! including the `104 (Upload Resumption Supported)` interim answers, which it hands to
//! the body source ([`BodySource::send_interim`], [`BodySource::report_progress`]).
//!
//! Section numbers: "-05 §x" is draft-ietf-httpbis-resumable-upload-05 (interop 6),
//! "-11 §x" is -11 (interop 8). DESIGN.md has the whole mapping.

use super::core::Core;
use super::handler::{self, Finish};
use super::ingest::{self, close_cause};
use super::reply::Reply;
use super::request::{location, origin, RequestCtx};
use crate::config::Config;
use crate::draft::digest::parse_digest_field;
use crate::draft::fields::integer;
use crate::draft::metadata::{file_name, file_type};
use crate::draft::rules::{
    append_fields, append_plan, check_no_state_fields, complete_value, creation_plan, problem_json,
    settle, success_status, AppendPlan, Fields, Interop, Limits, Refusal, ServerRules, Settled,
    UploadFacts, PARTIAL_UPLOAD,
};
use crate::error::Error;
use crate::hooks::Event;
use crate::http::head::{Method, RequestHead};
use crate::http::response::{reason, Response};
use crate::limits::MAX_METADATA_BYTES;
use crate::metrics::{self, Interim};
use crate::net::BodySource;
use crate::storage::id::UploadId;
use crate::storage::info::UploadInfo;
use crate::storage::layout::new_upload_id;
use crate::storage::{Acquired, DataWriter, Written};
use crate::tus::checksum::Check;
use crate::tus::expiry::Expiry;
use crate::tus::metadata::{parse_upload_metadata, Metadata};
use crate::tus::routes::Route;
use std::borrow::Cow;
use std::rc::Rc;
use std::time::Duration;

/// A progress `104` (-05 §4, §6; -11 §4.2.2, §4.4.2) is sent once at least this many
/// more bytes are stored since the last one...
pub const PROGRESS_EVERY_BYTES: u64 = 16 << 20;

/// ... or once this long has passed since the last one and bytes were stored since.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The `protocol` label of the metrics for `v`.
pub fn metrics_protocol(v: Interop) -> metrics::Protocol {
    match v {
        Interop::V6 => metrics::Protocol::Draft6,
        Interop::V8 => metrics::Protocol::Draft8,
    }
}

/// Handles a request under the base path that speaks the draft at `v` (GET, a
/// download, stays tus's: the draft defines none).
pub async fn handle(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    route: Route,
    method: &Method,
    v: Interop,
    body: &mut BodySource<'_>,
) -> Result<Reply, Error> {
    let ext = &core.shared.config.extensions;
    match (route, method) {
        (_, Method::Options) => Ok(options(core, v)),
        (Route::Collection, Method::Post) if ext.creation => create(core, ctx, v, body).await,
        (Route::Upload(id), Method::Head) => offset(core, ctx, v, &id).await,
        (Route::Upload(id), Method::Patch) => append(core, ctx, v, &id, body).await,
        (Route::Upload(id), Method::Delete) if ext.termination => cancel(core, ctx, v, &id).await,
        _ => Err(Error::MethodNotAllowed(handler::allowed(route, ext))),
    }
}

/// The answer to an error of a draft request: its status and headers as for tus (`Allow`,
/// `Retry-After`), with a problem details body (RFC 9457) of the draft's type where it
/// defines one (-05 §10, -11 §7), else `about:blank`. A pre-hook's verdict (a refusal)
/// reaches the client exactly as for tus: the hook's status and body (an HTTP hook's, or
/// rustus's text for an executable's exit). A body that fails its digest is 400 (tus's
/// 460 is tus's own).
pub fn error_response(v: Interop, err: &Error) -> Response {
    let mut resp = super::reply::error_response(err);
    if matches!(err, Error::Hook(h) if h.is_verdict()) {
        return resp;
    }
    let mut detail = err.message();
    if matches!(err, Error::ChecksumMismatch) {
        resp.status = 400;
        detail = "The request body does not match its digest; nothing of it was stored".into();
    }
    let (problem, offsets) = match err {
        Error::Draft(r) => (
            r.problem_type(v),
            match r {
                Refusal::MismatchingOffset { expected, provided } => Some((*expected, *provided)),
                _ => None,
            },
        ),
        _ => (None, None),
    };
    resp.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
    resp.header("Content-Type", "application/problem+json");
    let json = problem_json(problem, resp.status, reason(resp.status), &detail, offsets);
    resp.body = json.into_bytes().into();
    resp
}

/// The draft's fields of a request, as received; a field sent more than once is joined
/// with ", " (RFC 9110 §5.3), which no Item parses.
struct RequestFields<'h> {
    complete: Option<Cow<'h, [u8]>>,
    offset: Option<Cow<'h, [u8]>>,
    length: Option<Cow<'h, [u8]>>,
}

impl<'h> RequestFields<'h> {
    fn of(head: &'h RequestHead) -> RequestFields<'h> {
        RequestFields {
            complete: joined(head, "upload-complete"),
            offset: joined(head, "upload-offset"),
            length: joined(head, "upload-length"),
        }
    }

    fn fields(&self, content_length: Option<u64>) -> Fields<'_> {
        Fields {
            complete: self.complete.as_deref(),
            offset: self.offset.as_deref(),
            length: self.length.as_deref(),
            content_length,
        }
    }
}

/// Every value of the field `name`, joined.
fn joined<'h>(head: &'h RequestHead, name: &str) -> Option<Cow<'h, [u8]>> {
    let mut values = head.headers.iter().filter(|(n, _)| n == name);
    let first = values.next()?.1.as_slice();
    let mut all: Option<Vec<u8>> = None;
    for (_, more) in values {
        let buf = all.get_or_insert_with(|| first.to_vec());
        buf.extend_from_slice(b", ");
        buf.extend_from_slice(more);
    }
    Some(all.map_or(Cow::Borrowed(first), Cow::Owned))
}

/// What of the configuration the draft's rules read.
fn server_rules(cfg: &Config) -> ServerRules {
    ServerRules {
        max_file_size: cfg.max_file_size,
        max_body_size: cfg.max_body_size,
        allow_empty: cfg.allow_empty,
        defer_enabled: cfg.extensions.creation_defer_length,
    }
}

/// `Upload-Limit` of an upload whose expiry is `expiry`, or (no `info`) of any.
fn upload_limit(cfg: &Config, v: Interop, info: Option<&UploadInfo>, expiry: Expiry) -> String {
    let max_age = match expiry {
        Expiry::At(at) => Some(at.saturating_sub(crate::time::now_unix()).max(0) as u64),
        Expiry::Never | Expiry::Expired => None,
    };
    let length = info.and_then(|i| i.length);
    Limits::new(&server_rules(cfg), length, max_age).render(v)
}

/// The upload's state (-05 §5, -11 §4.3.2): `Upload-Offset`, `Upload-Complete`,
/// `Upload-Length` when known, `Upload-Limit`.
fn state_headers(resp: &mut Response, cfg: &Config, v: Interop, info: &UploadInfo, exp: Expiry) {
    resp.header("Upload-Offset", integer(info.offset));
    resp.header("Upload-Complete", complete_value(info.is_complete()));
    if let Some(len) = info.length {
        resp.header("Upload-Length", integer(len));
    }
    resp.header("Upload-Limit", upload_limit(cfg, v, Some(info), exp));
}

/// An error answer about an upload that exists, with its state (a 409 must say the
/// right offset: -11 §4.4.2).
fn refused(core: &Core, v: Interop, err: &Error, info: &UploadInfo, exp: Expiry) -> Response {
    let mut resp = error_response(v, err);
    state_headers(&mut resp, &core.shared.config, v, info, exp);
    resp
}

/// OPTIONS (-05 §8.2, -11 §4.1.4): `Accept-Patch: application/partial-upload` and the
/// limits any upload gets.
fn options(core: &Core, v: Interop) -> Reply {
    let cfg = &core.shared.config;
    let lifetime = super::expire::lifetime(cfg).map_or(Expiry::Never, |secs| {
        Expiry::At(crate::time::now_unix().saturating_add(secs as i64))
    });
    let mut resp = Response::new(200);
    resp.header("Accept-Patch", PARTIAL_UPLOAD);
    resp.header("Upload-Limit", upload_limit(cfg, v, None, lifetime));
    Reply::new(resp)
}

/// The upload's metadata from a creation: `Upload-Metadata` when sent (tus's syntax;
/// tus-js-client sends it in its draft mode), else `filetype` from `Content-Type` and
/// `filename` from `Content-Disposition` (`draft::metadata`), within tus's size limit.
fn creation_metadata(head: &RequestHead) -> Result<Metadata, Error> {
    if let Some(v) = head.header("upload-metadata") {
        return parse_upload_metadata(v).map_err(|e| Error::BadRequest(e.reason()));
    }
    let mut md = Metadata::new();
    if let Some(t) = head.header_str("content-type").and_then(file_type) {
        md.insert("filetype".into(), t);
    }
    if let Some(n) = head.header_str("content-disposition").and_then(file_name) {
        md.insert("filename".into(), n);
    }
    if md.to_header().len() > MAX_METADATA_BYTES {
        return Err(Error::BadRequest(
            "The file name in Content-Disposition is too long",
        ));
    }
    Ok(md)
}

/// How the body is verified (-05 §15, -11 §10): against `Content-Digest`, or for a
/// request carrying the whole representation (`whole`) against `Repr-Digest`; only
/// with the checksum extension on (as `Upload-Checksum`).
fn digest_check(core: &Core, head: &RequestHead, whole: bool) -> Result<Option<Check>, Error> {
    if !core.shared.config.extensions.checksum {
        return Ok(None);
    }
    let mut names = vec![("content-digest", "Content-Digest")];
    if whole {
        names.push(("repr-digest", "Repr-Digest"));
    }
    for (name, shown) in names {
        if let Some(value) = head.header(name) {
            let expected = parse_digest_field(value).map_err(|e| Error::Digest(e.reason(shown)))?;
            if let Some(e) = expected {
                return Ok(Some(Check::Header(e)));
            }
        }
    }
    Ok(None)
}

/// Stores a body like tus's (`ingest::receive`: spliced, or staged and verified), and
/// unless it is verified (staged bytes are not stored yet), with progress `104`s.
async fn receive(
    core: &Core,
    v: Interop,
    body: &mut BodySource<'_>,
    writer: &mut dyn DataWriter,
    start: u64,
    limit: u64,
    check: Option<Check>,
) -> Written {
    if check.is_none() {
        let protocol = metrics_protocol(v);
        let progress = move |end: u64| {
            metrics::interim(protocol, Interim::Progress);
            let mut resp = Response::new(104);
            resp.header("Upload-Draft-Interop-Version", v.value());
            resp.header("Upload-Offset", integer(end));
            resp
        };
        body.report_progress(
            start,
            PROGRESS_EVERY_BYTES,
            PROGRESS_EVERY,
            Box::new(progress),
        );
    }
    ingest::receive(core, body, writer, start, limit, check).await
}

/// Applies how the body settled the upload (`draft::rules::settle`) to its record: a
/// length known only now. The error an incomplete `?1` answers with, if any.
fn apply_settled(info: &mut UploadInfo, complete_asked: bool, received: bool) -> Option<Error> {
    match settle(complete_asked, received, info.offset, info.length) {
        Settled::Complete {
            set_length: Some(len),
        } => {
            info.length = Some(len);
            info.deferred_size = false;
            None
        }
        Settled::Complete { set_length: None } | Settled::Incomplete => None,
        Settled::ShortOfLength => Some(Error::Draft(Refusal::InconsistentLength(
            "The body ended before the upload's length",
        ))),
    }
}

/// Upload creation (-05 §4, -11 §4.2): the upload is created and recorded, a `104` with
/// its `Location` is sent before the body is read, the body is stored on the same path
/// as a tus PATCH, and the answer says how far it got.
async fn create(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    v: Interop,
    body: &mut BodySource<'_>,
) -> Result<Reply, Error> {
    let cfg = &core.shared.config;
    let head = ctx.head;
    let fields = RequestFields::of(head);
    let plan = creation_plan(v, &fields.fields(body.content_length()), &server_rules(cfg))
        .map_err(Error::Draft)?;
    let metadata = creation_metadata(head)?;
    // Checked before anything exists: a bad digest field creates nothing.
    let check = digest_check(core, head, plan.complete)?;
    let id = new_upload_id();
    let stores = &core.stores;
    // -11 §4.6: a later request for the upload (its client lost this connection after
    // the 104) takes the upload over, as from a PATCH.
    let release = body.release();
    let lock = match stores.locker.lock(id, Some(release.clone())).await? {
        Acquired::Lock(lock, _) => lock,
        Acquired::Busy => return Err(Error::Locked),
    };
    let mut info = UploadInfo::new(
        id.to_string(),
        plan.length,
        crate::time::now_unix(),
        metadata,
    );
    info.storage = stores.data.storage_name().to_owned();
    let hooks = &core.shared.hooks;
    // As for tus: before anything exists; a refusal reaches the client, no 104 is sent.
    let mut answered = None;
    let mut chosen = None;
    if hooks.wants(Event::PreCreate) {
        let answer = hooks
            .pre(Event::PreCreate, &info, origin(core, ctx, "POST", None))
            .await?;
        (answered, chosen) = super::handler::apply_pre_create(&mut info, answer);
    }
    // An ID a hook chose: its lock, taken without taking over (409 when held).
    let chosen_lock = match chosen {
        Some(chosen) => Some((chosen, handler::lock_chosen(core, chosen).await?)),
        None => None,
    };
    let mut writer = stores.data.create(&mut info).await?;
    // Recorded before the 104, so the Location it gives answers HEAD at once; an ID a
    // hook chose is claimed by this write (409 when another upload has it).
    let recorded = match chosen {
        Some(_) => stores.info.create(&info).await,
        None => stores.info.put(&info).await,
    };
    if let Err(e) = recorded {
        drop(writer);
        let _ = stores.data.remove(&info).await;
        return Err(e.into());
    }
    // The upload is this request's now: its lock is taken again as the random ID's
    // was, so a later request for it takes it over (-11 §4.6).
    let _lock = match chosen_lock {
        Some((chosen, held)) => {
            drop(held);
            drop(lock);
            match stores.locker.lock(chosen, Some(release.clone())).await {
                Ok(Acquired::Lock(lock, _)) => lock,
                Ok(Acquired::Busy) | Err(_) => {
                    // A request for the new upload came first: it is that request's.
                    drop(writer);
                    return Err(Error::Locked);
                }
            }
        }
        None => lock,
    };
    let location = location(ctx, &cfg.url, &info.id);
    if body.has_body() {
        let mut interim = Response::new(104);
        interim.header("Upload-Draft-Interop-Version", v.value());
        interim.header("Location", location.clone());
        if v.limit_in_104() {
            let exp = super::expire::state_after_write(cfg, &info, true, None);
            interim.header("Upload-Limit", upload_limit(cfg, v, Some(&info), exp));
        }
        if body.send_interim(&interim).await.is_ok() {
            metrics::interim(metrics_protocol(v), Interim::Resumption);
        }
    }
    let got = receive(core, v, body, &mut *writer, 0, plan.limit, check).await;
    drop(writer); // a synchronous close(2), as in tus's PATCH
    info.offset = got.end_offset;
    let received = got.error.is_none() && body.finished();
    let short = apply_settled(&mut info, plan.complete, received);
    if info.offset > 0 || info.length != plan.length {
        stores.info.put(&info).await?;
    }
    metrics::upload_created(info.length, info.is_complete());
    let exp = super::expire::state_after_write(cfg, &info, true, None);
    // pre-finish before the answer, as for tus.
    let finish = if info.is_complete() {
        handler::pre_finish(core, &info, || origin(core, ctx, "POST", None)).await
    } else {
        Finish::None
    };
    let mut resp = match got.error.as_ref().or(short.as_ref()).or(finish.refusal()) {
        None => Response::new(success_status(v, true, info.is_complete())),
        Some(err) => error_response(v, err),
    };
    resp.header("Location", location);
    state_headers(&mut resp, cfg, v, &info, exp);
    if let (true, Some(a)) = (got.error.is_none() && short.is_none(), &answered) {
        resp.merge_answer(a.status, &a.headers, &a.body);
    }
    finish.merge_into(&mut resp);
    // post-finish once the data is where it stays (hybrid-s3: in S3), as for tus.
    if info.is_complete() {
        super::handler::finished(core, info, || origin(core, ctx, "POST", None)).await;
    } else if hooks.wants(Event::PostCreate) {
        hooks
            .post(Event::PostCreate, info, origin(core, ctx, "POST", None))
            .await;
    }
    Ok(Reply {
        closes: close_cause(got.error.as_ref(), release.requested()),
        ..Reply::new(resp)
    })
}

/// Offset retrieval (-05 §5, -11 §4.3): the upload's state, never cached. -11 §4.6: a
/// request still writing the upload is ended first (takeover), so the offset given is
/// the one the next append must use.
async fn offset(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    v: Interop,
    id: &UploadId,
) -> Result<Reply, Error> {
    let fields = RequestFields::of(ctx.head);
    check_no_state_fields(v, &fields.fields(None), true).map_err(Error::Draft)?;
    let lock = handler::take_over(core, id, None).await?;
    let upload = core.stores.load(id).await?;
    drop(lock);
    let cfg = &core.shared.config;
    let exp = super::expire::check(cfg, &upload)?;
    let mut resp = Response::new(204);
    state_headers(&mut resp, cfg, v, &upload.info, exp);
    resp.header("Cache-Control", "no-store");
    Ok(Reply::new(resp))
}

/// Upload append (-05 §6, -11 §4.4): the body at the upload's offset, spliced like a tus
/// PATCH; the request may make the length known and complete the upload.
async fn append(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    v: Interop,
    id: &UploadId,
    body: &mut BodySource<'_>,
) -> Result<Reply, Error> {
    let cfg = &core.shared.config;
    let head = ctx.head;
    let fields = RequestFields::of(head);
    let req = append_fields(
        v,
        head.header("content-type"),
        &fields.fields(body.content_length()),
    )
    .map_err(Error::Draft)?;
    let check = digest_check(core, head, false)?;
    let stores = &core.stores;
    // Newest request wins (-11 §4.6), as for tus's PATCH.
    let release = body.release();
    let _lock = handler::take_over(core, id, Some(release.clone())).await?;
    let mut upload = stores.load(id).await?;
    let exp = super::expire::check(cfg, &upload)?;
    super::stops::before_body(core, id, &mut upload.info).await?;
    let facts = UploadFacts {
        offset: upload.offset(),
        length: upload.info.length,
        is_final: upload.info.is_final,
    };
    let (limit, set_length, complete) = match append_plan(v, &req, &facts, &server_rules(cfg)) {
        Err(r) => {
            let resp = refused(core, v, &Error::Draft(r), &upload.info, exp);
            return Ok(Reply::new(resp));
        }
        Ok(AppendPlan::AlreadyComplete) => {
            let mut resp = Response::new(success_status(v, false, true));
            resp.header("Location", location(ctx, &cfg.url, &upload.info.id));
            state_headers(&mut resp, cfg, v, &upload.info, exp);
            return Ok(Reply::new(resp));
        }
        Ok(AppendPlan::Write {
            limit,
            set_length,
            complete,
        }) => (limit, set_length, complete),
    };
    let mut writer = stores.data.open(&upload.info).await?;
    if let Some(len) = set_length {
        upload.info.length = Some(len);
        upload.info.deferred_size = false;
    }
    let start = upload.offset();
    let checked = check.is_some();
    super::stops::report_progress(core, ctx, &upload.info, body);
    let mut got = receive(core, v, body, &mut *writer, start, limit, check).await;
    drop(writer);
    upload.info.offset = got.end_offset;
    if let Some(stop) = super::stops::after_body(core, id, &mut upload.info).await? {
        // Stopped by a hook (`server::stops`): as tus's PATCH.
        return Ok(Reply {
            closes: close_cause(Some(&stop), release.requested()),
            ..Reply::new(error_response(v, &stop))
        });
    }
    if checked && got.end_offset == start {
        if let Some(err) = got.error {
            // Refused as a whole (a digest mismatch, a cut body): the upload is as
            // before, its length included; no hook fires.
            let mut before = upload.info;
            before.length = facts.length;
            before.deferred_size = facts.length.is_none();
            let resp = refused(core, v, &err, &before, exp);
            return Ok(Reply {
                closes: close_cause(Some(&err), release.requested()),
                ..Reply::new(resp)
            });
        }
    }
    if release.requested() && matches!(got.error, Some(Error::BodyIncomplete)) {
        got.error = Some(Error::TakenOver);
    }
    upload.info.offset = got.end_offset;
    let received = got.error.is_none() && body.finished();
    let length_before = facts.length;
    let short = apply_settled(&mut upload.info, complete, received);
    if got.end_offset != start || upload.info.length != length_before {
        stores.info.put(&upload.info).await?;
    }
    let now_complete = upload.info.is_complete();
    if now_complete {
        metrics::upload_finished();
        if upload.info.is_partial {
            let from = origin(core, ctx, "PATCH", Some(id));
            super::concat::part_finished(core, id, &from);
        }
    }
    let exp = super::expire::state_after_write(
        cfg,
        &upload.info,
        got.end_offset != start,
        upload.modified,
    );
    let finish = if now_complete {
        handler::pre_finish(core, &upload.info, || origin(core, ctx, "PATCH", Some(id))).await
    } else {
        Finish::None
    };
    let mut resp = match got.error.as_ref().or(short.as_ref()).or(finish.refusal()) {
        None => Response::new(success_status(v, false, now_complete)),
        Some(err) => error_response(v, err),
    };
    if now_complete {
        // The answer the creation would have given had it carried everything.
        resp.header("Location", location(ctx, &cfg.url, &upload.info.id));
    }
    state_headers(&mut resp, cfg, v, &upload.info, exp);
    finish.merge_into(&mut resp);
    let hooks = &core.shared.hooks;
    if now_complete {
        let from = || origin(core, ctx, "PATCH", Some(id));
        super::handler::finished(core, upload.info, from).await;
    } else if got.end_offset != start && hooks.wants(Event::PostReceive) {
        let from = origin(core, ctx, "PATCH", Some(id));
        hooks.post(Event::PostReceive, upload.info, from).await;
    }
    Ok(Reply {
        closes: close_cause(got.error.as_ref(), release.requested()),
        ..Reply::new(resp)
    })
}

/// Upload cancellation (-05 §7, -11 §4.5): tus's termination (it takes over a request
/// still writing the upload, runs `pre-terminate`, removes, fires `post-terminate`).
async fn cancel(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    v: Interop,
    id: &UploadId,
) -> Result<Reply, Error> {
    let fields = RequestFields::of(ctx.head);
    check_no_state_fields(v, &fields.fields(None), false).map_err(Error::Draft)?;
    handler::delete(core, ctx, id).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HookError;
    use crate::http::head::parse_head;

    fn head(raw: &str) -> RequestHead {
        parse_head(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn repeated_fields_are_joined() {
        let h = head("HEAD /f HTTP/1.1\r\nUpload-Offset: 1\r\nUpload-Offset: 2\r\nUpload-Complete: ?1\r\n\r\n");
        let f = RequestFields::of(&h);
        assert_eq!(f.offset.as_deref(), Some(&b"1, 2"[..]));
        assert_eq!(f.complete.as_deref(), Some(&b"?1"[..]));
        assert_eq!(f.length, None);
    }

    #[test]
    fn metadata_from_representation_fields() {
        let h = head("POST /f HTTP/1.1\r\nContent-Type: image/png\r\nContent-Disposition: inline; filename=\"a b.png\"\r\n\r\n");
        let md = creation_metadata(&h).unwrap();
        assert_eq!(md.get("filetype"), Some("image/png"));
        assert_eq!(md.get("filename"), Some("a b.png"));
        // Upload-Metadata, when sent, is the metadata.
        let h = head("POST /f HTTP/1.1\r\nContent-Type: image/png\r\nUpload-Metadata: filename eC50eHQ=\r\n\r\n");
        let md = creation_metadata(&h).unwrap();
        assert_eq!(md.get("filename"), Some("x.txt"));
        assert_eq!(md.get("filetype"), None);
        let h = head("POST /f HTTP/1.1\r\nUpload-Metadata: bad key\r\n\r\n");
        assert_eq!(creation_metadata(&h).unwrap_err().status(), 400);
    }

    #[test]
    fn errors_are_problem_details() {
        let r = error_response(
            Interop::V8,
            &Error::Draft(Refusal::MismatchingOffset {
                expected: 5,
                provided: 7,
            }),
        );
        assert_eq!(r.status, 409);
        assert_eq!(r.get("Content-Type"), Some("application/problem+json"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["type"], crate::draft::rules::MISMATCHING_OFFSET);
        assert_eq!(v["expected-offset"], 5);
        let r = error_response(Interop::V6, &Error::MethodNotAllowed("OPTIONS, POST"));
        assert_eq!(r.get("Allow"), Some("OPTIONS, POST"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Method Not Allowed");
        let r = error_response(Interop::V8, &Error::ChecksumMismatch);
        assert_eq!(r.status, 400);
        // A hook's refusal is relayed unchanged; a hook that could not be asked is a
        // problem like any other.
        let exit = error_response(Interop::V8, &Error::Hook(HookError::Exit));
        assert_eq!(exit.get("Content-Type"), Some("text/plain; charset=utf-8"));
        let late = error_response(Interop::V8, &Error::Hook(HookError::Timeout("pre-create")));
        assert_eq!(late.status, 504);
        assert_eq!(late.get("Content-Type"), Some("application/problem+json"));
        let hook = Error::Hook(HookError::Rejected {
            status: 403,
            body: b"no".to_vec(),
            content_type: Some("text/x".into()),
        });
        let r = error_response(Interop::V8, &hook);
        assert_eq!((r.status, r.get("Content-Type")), (403, Some("text/x")));
        assert_eq!(&r.body[..], b"no");
    }
}
