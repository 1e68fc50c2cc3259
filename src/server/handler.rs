//! Request handling: routes a request and applies the pure rules of [`crate::tus`]
//! with the stores of [`crate::storage`]. Each method is one small async function; all
//! the decisions they make are in `tus::rules`, which is table-tested. It knows the
//! connection only through what it is handed (the [`RequestCtx`] and the body's
//! [`BodySource`]), has bodies stored through [`super::ingest`], and answers with a
//! [`Reply`]; it never sees a file or a descriptor.

use super::core::Core;
use super::ingest::{self, checksum_check, close_cause};
use super::reply::{error_response, Download, Reply};
use super::request::{location, origin, RequestCtx};
use crate::config::Extensions;
use crate::draft::rules::{detect, Protocol, Refusal};
use crate::error::{Error, Source};
use crate::hooks::answer::{Answer, HttpAnswer};
use crate::hooks::{Event, Origin};
use crate::http::head::{Method, RequestHead};
use crate::http::response::Response;
use crate::limits::MAX_TUS_INTEGER;
use crate::metrics::{self, Endpoint};
use crate::net::{BodySource, Release};
use crate::storage::id::UploadId;
use crate::storage::info::UploadInfo;
use crate::storage::layout::new_upload_id;
use crate::storage::{Acquired, Announce, Lock, Upload, Written};
use crate::tus::checksum;
use crate::tus::concat::{parse_upload_concat, Concat};
use crate::tus::cors::{self, Decision};
use crate::tus::getting::{
    content_disposition, content_type, parse_range, RangeAsk, DOWNLOAD_HEADERS,
};
use crate::tus::metadata::{parse_upload_metadata, Metadata};
use crate::tus::routes::{route, Route};
use crate::tus::rules::{
    creation_length, is_offset_octet_stream, parse_tus_integer, patch_plan, tus_resumable_ok,
    CreateLimits, PatchLimits, PatchPlan, PatchRequest, UploadState, TUS_VERSION,
};
use std::rc::Rc;

/// The method after `X-HTTP-Method-Override`, which rustus honours on every request.
fn effective_method(head: &RequestHead) -> Method {
    match head.header_str("x-http-method-override") {
        Some(m) if !m.trim().is_empty() => Method::parse(m.trim()),
        _ => head.method.clone(),
    }
}

/// Handles one request. Never fails: errors become answers.
pub async fn handle(core: &Rc<Core>, ctx: &RequestCtx<'_>, body: &mut BodySource<'_>) -> Reply {
    let cfg = &core.shared.config;
    let method = effective_method(ctx.head);
    let route = route(ctx.head.path(), &cfg.url);
    // rustus-compat §2.8: CORS applies to everything under the base path; a preflight
    // is answered here and never reaches tus (so it carries no Tus-* headers).
    let cors = if route.is_tus() {
        let head = ctx.head;
        let ask = cors::Ask {
            is_options: head.method == Method::Options,
            origin: head.header_str("origin"),
            request_method: head.header_str("access-control-request-method"),
            request_headers: head.header_str("access-control-request-headers"),
        };
        let decision = cors::decide(&cfg.cors, &cfg.hooks.http.proxy_headers, &ask);
        match decision {
            Decision::Actual(origin) => origin,
            preflight => return preflight_reply(core, route, preflight),
        }
    } else {
        None
    };
    // Tus, or the resumable-uploads draft at an interop version it speaks (a download
    // is tus's whatever the request says: the draft defines none).
    let protocol = if route.is_tus() && method != Method::Get {
        let tus_applies = ctx.head.header("tus-resumable").is_some() || method == Method::Options;
        detect(ctx.head.header("upload-draft-interop-version"), tus_applies)
    } else {
        Protocol::Tus
    };
    let result = match (route, protocol) {
        (Route::Health, _) => health(core, &method).await,
        (Route::Metrics, _) => metrics_page(core, &method),
        (Route::Ready, _) => ready(core, &method).await,
        (Route::NotFound | Route::BadId, _) => Err(Error::NotFound),
        (_, Protocol::Draft(v)) => super::draft::handle(core, ctx, route, &method, v, body).await,
        (_, Protocol::Unsupported) => Err(Error::Draft(Refusal::UnsupportedVersion)),
        (Route::Collection | Route::Upload(_), Protocol::Tus) => {
            tus(core, ctx, route, &method, body).await
        }
    };
    let mut reply = result.unwrap_or_else(|err| {
        if err.source() != Source::Client {
            crate::error!(
                "{} {}: {} {}",
                method.as_str(),
                ctx.head.target,
                err.status(),
                err.message()
            );
        }
        Reply::new(match protocol {
            Protocol::Draft(v) => super::draft::error_response(v, &err),
            Protocol::Tus | Protocol::Unsupported => error_response(&err),
        })
    });
    if route.is_tus() {
        // §1.1: every answer under the base path names the protocol version (the
        // draft's answers name none).
        if !matches!(protocol, Protocol::Draft(_)) {
            reply.resp.header("Tus-Resumable", TUS_VERSION);
            reply.resp.header("Tus-Version", TUS_VERSION);
        }
        cors_headers(&mut reply.resp, cors);
    }
    reply.health = route == Route::Health;
    reply.endpoint = endpoint(route);
    if let Protocol::Draft(v) = protocol {
        reply.protocol = super::draft::metrics_protocol(v);
    }
    reply
}

/// The headers every answer under the base path carries for CORS, and
/// `Access-Control-Allow-Origin` when the request came from an allowed origin.
fn cors_headers(resp: &mut Response, origin: Option<String>) {
    if let Some(origin) = origin {
        resp.header("Access-Control-Allow-Origin", origin);
    }
    resp.header("Access-Control-Expose-Headers", cors::EXPOSE_HEADERS);
    resp.header("Vary", cors::VARY);
}

/// The answer to a CORS preflight: 200 with what may be sent, or 400.
fn preflight_reply(core: &Rc<Core>, route: Route, decision: Decision) -> Reply {
    let mut resp = match decision {
        Decision::PreflightOk(origin) => {
            let mut resp = Response::new(200);
            resp.header("Access-Control-Allow-Origin", origin);
            resp.header("Access-Control-Allow-Methods", cors::ALLOW_METHODS);
            resp.header(
                "Access-Control-Allow-Headers",
                cors::allow_headers(&core.shared.config.hooks.http.proxy_headers),
            );
            resp.header("Access-Control-Max-Age", cors::MAX_AGE);
            resp
        }
        Decision::PreflightRefused(why) => {
            let mut resp = Response::new(400);
            resp.text(why.to_string());
            resp
        }
        Decision::Actual(_) => Response::new(200),
    };
    resp.header("Vary", cors::VARY);
    Reply {
        endpoint: endpoint(route),
        ..Reply::new(resp)
    }
}

/// The route template, for the metrics.
fn endpoint(route: Route) -> Endpoint {
    match route {
        Route::Collection => Endpoint::Collection,
        Route::Upload(_) => Endpoint::Upload,
        Route::Health => Endpoint::Health,
        Route::Metrics => Endpoint::Metrics,
        Route::Ready => Endpoint::Ready,
        Route::BadId | Route::NotFound => Endpoint::Other,
    }
}

/// `GET /metrics`: the Prometheus exposition (text format 0.0.4).
fn metrics_page(core: &Rc<Core>, method: &Method) -> Result<Reply, Error> {
    if !matches!(method, Method::Get | Method::Head) {
        return Err(Error::MethodNotAllowed(Route::Metrics.allow(false, false)));
    }
    let shared = &core.shared;
    let gauges = metrics::Gauges {
        cores: shared.config.workers,
        open_connections: super::core::open_connections(),
        uploads_in_progress: core.stores.locker.held(),
        hook_queue_depth: shared.hooks.queue_depth(),
    };
    let mut resp = Response::new(200);
    resp.header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    resp.body = metrics::render(&shared.config.url, &gauges)
        .into_bytes()
        .into();
    Ok(Reply::new(resp))
}

/// `GET /ready`: 200 when every core serves (its heartbeat moves), the daemon is not
/// shutting down and the data and info directories take a write; else 503 and why.
async fn ready(core: &Rc<Core>, method: &Method) -> Result<Reply, Error> {
    if !matches!(method, Method::Get | Method::Head) {
        return Err(Error::MethodNotAllowed(Route::Ready.allow(false, false)));
    }
    let verdict = if core.draining() {
        Err("shutting down".to_string())
    } else {
        match super::core::cores_alive(core.shared.config.workers) {
            Err(e) => Err(e),
            Ok(()) => core.stores.probe().await,
        }
    };
    match verdict {
        Ok(()) => Ok(Reply::new(Response::new(200))),
        Err(reason) => {
            let mut resp = Response::new(503);
            resp.text(reason);
            Ok(Reply::new(resp))
        }
    }
}

async fn health(core: &Rc<Core>, method: &Method) -> Result<Reply, Error> {
    if !matches!(method, Method::Get | Method::Head) {
        return Err(Error::MethodNotAllowed(Route::Health.allow(false, false)));
    }
    match core.stores.probe().await {
        Ok(()) => Ok(Reply::new(Response::new(200))),
        Err(reason) => {
            crate::warn!("health check failed: {reason}");
            let mut resp = Response::new(503);
            resp.text(reason);
            Ok(Reply::new(resp))
        }
    }
}

async fn tus(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    route: Route,
    method: &Method,
    body: &mut BodySource<'_>,
) -> Result<Reply, Error> {
    let ext = &core.shared.config.extensions;
    // §1.1: OPTIONS ignores Tus-Resumable; GET is exempt so browsers can fetch.
    if !matches!(method, Method::Options | Method::Get)
        && !tus_resumable_ok(ctx.head.header("tus-resumable"))
    {
        return Err(Error::UnsupportedTusVersion);
    }
    match (route, method) {
        (_, Method::Options) => Ok(options(core)),
        (Route::Collection, Method::Post) if ext.creation => create(core, ctx, body).await,
        (Route::Upload(id), Method::Head) => head(core, ctx, &id).await,
        (Route::Upload(id), Method::Patch) => patch(core, ctx, &id, body).await,
        (Route::Upload(id), Method::Delete) if ext.termination => delete(core, ctx, &id).await,
        (Route::Upload(id), Method::Get) if ext.getting => get(core, ctx, &id).await,
        _ => Err(Error::MethodNotAllowed(allowed(route, ext))),
    }
}

/// The methods a route takes with the extensions enabled (405's `Allow`), for tus and the
/// draft alike.
pub(super) fn allowed(route: Route, ext: &Extensions) -> &'static str {
    match (route, ext.getting) {
        (Route::Upload(_), true) if ext.termination => "OPTIONS, GET, HEAD, PATCH, DELETE",
        (Route::Upload(_), true) => "OPTIONS, GET, HEAD, PATCH",
        _ => route.allow(ext.creation, ext.termination),
    }
}

/// rustus-compat §2.7 (`getting`): the upload's bytes as stored so far, with a
/// single `Range` honoured. The body is streamed from the data store by the connection.
async fn get(core: &Rc<Core>, ctx: &RequestCtx<'_>, id: &UploadId) -> Result<Reply, Error> {
    let stores = &core.stores;
    let mut info = stores.info.get(id).await?;
    let reader = stores.data.read(&info).await?;
    // The bytes stored so far: an incomplete upload is served as far as it goes.
    let len = reader.size();
    info.offset = len;
    let upload = Upload {
        info,
        modified: Some(reader.modified()),
    };
    super::expire::check(&core.shared.config, &upload)?;
    let mut resp = Response::new(200);
    for (name, value) in DOWNLOAD_HEADERS {
        resp.header(name, value);
    }
    resp.header("Accept-Ranges", "bytes");
    resp.header("ETag", format!("\"{id}-{len}\""));
    resp.header("Last-Modified", crate::time::http_date(reader.modified()));
    let (start, n) = match parse_range(ctx.head.header_str("range"), len) {
        RangeAsk::Full => (0, len),
        RangeAsk::Part { start, end } => {
            resp.status = 206;
            resp.header("Content-Range", format!("bytes {start}-{end}/{len}"));
            (start, end - start + 1)
        }
        RangeAsk::Unsatisfiable => {
            resp.status = 416;
            resp.header("Content-Range", format!("bytes */{len}"));
            return Ok(Reply::new(resp));
        }
    };
    let id_name = id.to_string();
    let name = upload.info.metadata.get("filename").unwrap_or(&id_name);
    let ct = content_type(Some(name));
    resp.header("Content-Type", ct);
    resp.header("Content-Disposition", content_disposition(ct, Some(name)));
    resp.streamed_len = Some(n);
    Ok(Reply {
        data: Some(Download {
            reader,
            start,
            len: n,
        }),
        ..Reply::new(resp)
    })
}

/// §1.2: what the server supports.
fn options(core: &Rc<Core>) -> Reply {
    let mut resp = Response::new(200);
    let ext = &core.shared.extensions_header;
    if !ext.is_empty() {
        resp.header("Tus-Extension", ext.clone());
    }
    if let Some(max) = core.shared.config.max_file_size {
        resp.header("Tus-Max-Size", max.to_string());
    }
    if core.shared.config.extensions.checksum {
        resp.header("Tus-Checksum-Algorithm", checksum::ALGORITHMS_HEADER);
    }
    Reply::new(resp)
}

/// §2.1, §2.2, §2.3: creation, with an optional body (creation-with-upload).
async fn create(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    body: &mut BodySource<'_>,
) -> Result<Reply, Error> {
    let cfg = &core.shared.config;
    let head = ctx.head;
    let concat = match head.header("upload-concat") {
        None => None,
        Some(_) if !cfg.extensions.concatenation => {
            return Err(Error::BadRequest(
                "Upload-Concat is not supported: the concatenation extension is not available",
            ))
        }
        Some(v) => {
            Some(parse_upload_concat(v, &cfg.url).map_err(|e| Error::BadRequestOwned(e.reason()))?)
        }
    };
    if let Some(Concat::Final(parts)) = concat {
        // §2.7: the final's length is the sum of its parts (Upload-Length is ignored).
        let metadata = match head.header("upload-metadata") {
            Some(v) => parse_upload_metadata(v).map_err(|e| Error::BadRequest(e.reason()))?,
            None => Metadata::new(),
        };
        return super::concat::create_final(core, ctx, parts, metadata, body.has_body()).await;
    }
    let limits = CreateLimits {
        defer_enabled: cfg.extensions.creation_defer_length,
        allow_empty: cfg.allow_empty,
        max_file_size: cfg.max_file_size,
    };
    let length = creation_length(
        head.header("upload-length"),
        head.header("upload-defer-length"),
        &limits,
    )?;
    let metadata = match head.header("upload-metadata") {
        Some(v) => parse_upload_metadata(v).map_err(|e| Error::BadRequest(e.reason()))?,
        None => Metadata::new(),
    };
    // §2.2: only a body of the tus media type is stored (rustus ignores others).
    let with_body = body.has_body()
        && cfg.extensions.creation_with_upload
        && is_offset_octet_stream(head.header("content-type"));
    // Checked before anything exists: a bad Upload-Checksum creates nothing.
    let check = if with_body {
        checksum_check(core, head, body)?
    } else {
        None
    };
    let limit = if with_body {
        let room = length
            .or(cfg.max_file_size)
            .unwrap_or(MAX_TUS_INTEGER)
            .min(MAX_TUS_INTEGER);
        if let Some(cl) = body.content_length() {
            if cl > room {
                return Err(Error::TooLarge("Request body would pass Upload-Length"));
            }
            if cfg.max_body_size.is_some_and(|m| cl > m) {
                return Err(Error::TooLarge(
                    "Request body is above the maximum body size",
                ));
            }
        }
        room.min(cfg.max_body_size.unwrap_or(u64::MAX))
    } else {
        0
    };

    let id = new_upload_id();
    let stores = &core.stores;
    // Nobody else knows the new ID before the 201.
    let lock = stores.locker.lock_new(id).await?.ok_or(Error::Locked)?;
    let mut info = UploadInfo::new(id.to_string(), length, crate::time::now_unix(), metadata);
    info.storage = stores.data.storage_name().to_owned();
    info.is_partial = concat == Some(Concat::Partial);
    let hooks = &core.shared.hooks;
    // rustus-compat §3.1: after validation, before anything exists; a refusal leaves
    // nothing behind (the body, if any, is never read).
    let mut answered = None;
    let mut chosen = None;
    if hooks.wants(Event::PreCreate) {
        let from = origin(core, ctx, "POST", None);
        let answer = hooks.pre(Event::PreCreate, &info, from).await?;
        (answered, chosen) = apply_pre_create(&mut info, answer);
    }
    let (id, _lock) = match chosen {
        Some(chosen) => {
            drop(lock);
            (chosen, lock_chosen(core, chosen).await?)
        }
        None => (id, lock),
    };
    // A small upload whose whole body came with the head (the common case for small
    // files) takes the short path: see `create_whole`. A body to verify is staged
    // first (see `DataWriter::write_body`), so it takes the general path, and so does
    // an upload whose ID a hook chose (its record is claimed before its body is read).
    let whole = check.is_none()
        && chosen.is_none()
        && with_body
        && body.whole_in_hand()
        && body.content_length() == length;
    let (info, body_error) = if whole {
        create_whole(core, body, id, info).await?
    } else {
        let mut writer = stores.data.create(&mut info).await?;
        if chosen.is_some() {
            // The claim of the chosen ID, before the body is read: a 409 reads nothing.
            if let Err(e) = stores.info.create(&info).await {
                drop(writer);
                let _ = stores.data.remove(&info).await;
                return Err(e.into());
            }
        }
        let mut body_error = None;
        if with_body {
            let got = ingest::receive(core, body, &mut *writer, 0, limit, check).await;
            if no_room(&got, body) {
                // No room for the body, found before reading it: nothing is created (a
                // creation that cannot take its body is refused as a whole).
                drop(writer);
                let _ = stores.data.remove(&info).await;
                if chosen.is_some() {
                    let _ = stores.info.remove(&id).await;
                }
                return Err(got.error.unwrap_or(Error::InsufficientStorage));
            }
            info.offset = got.end_offset;
            body_error = got.error;
        }
        drop(writer); // a synchronous close(2): see `patch`
        if let Err(e) = stores.info.put(&info).await {
            let _ = stores.data.remove(&info).await;
            if chosen.is_some() {
                let _ = stores.info.remove(&id).await;
            }
            return Err(e.into());
        }
        (info, body_error)
    };
    metrics::upload_created(info.length, info.is_complete());
    let location = location(ctx, &cfg.url, &info.id);
    // pre-finish when this POST completed the upload (creation-with-upload of
    // everything, an empty upload), before it is answered.
    let finish = if info.is_complete() {
        pre_finish(core, &info, || origin(core, ctx, "POST", None)).await
    } else {
        Finish::None
    };
    let mut resp = match body_error.as_ref().or(finish.refusal()) {
        Some(err) => error_response(err),
        None => Response::new(201),
    };
    resp.header("Location", location);
    resp.header("Upload-Offset", info.offset.to_string());
    super::expire::expires_header(
        &mut resp,
        super::expire::state_after_write(cfg, &info, true, None),
    );
    if let (None, Some(a)) = (&body_error, &answered) {
        resp.merge_answer(a.status, &a.headers, &a.body);
    }
    finish.merge_into(&mut resp);
    // The upload exists (even if its body was cut short): post-finish when this POST
    // completed it, once its data is where it stays; else post-create.
    if info.is_complete() {
        finished(core, info, || origin(core, ctx, "POST", None)).await;
    } else if hooks.wants(Event::PostCreate) {
        hooks
            .post(Event::PostCreate, info, origin(core, ctx, "POST", None))
            .await;
    }
    Ok(Reply {
        closes: close_cause(body_error.as_ref(), false),
        ..Reply::new(resp)
    })
}

/// Whether the store refused a body for want of room before reading any of it (507,
/// or 413 past what the filesystem can hold): nothing was stored or read.
fn no_room(got: &Written, body: &BodySource<'_>) -> bool {
    got.end_offset == 0
        && body.received() == 0
        && matches!(
            got.error,
            Some(Error::InsufficientStorage) | Some(Error::TooLarge(_))
        )
}

/// Creation of an upload whose whole body is already in hand (it came with the head and
/// is exactly `Upload-Length` bytes): one write stores it, so nothing is preallocated,
/// and the info record (saying the offset that write reaches) is written at the same
/// time as the data file is created and written, instead of after it. That halves the
/// chain of kernel round trips a small upload waits for. It is safe: nobody knows the
/// ID before the 201, and after a crash the offset comes from the data file's size
/// (DESIGN, Durability), never from the record. If the data side fails, the record is
/// rewritten with the true offset, or both are removed when the upload could not be
/// created at all; a full disk is then a 507 at creation, as with preallocation.
async fn create_whole(
    core: &Rc<Core>,
    body: &mut BodySource<'_>,
    id: UploadId,
    mut info: UploadInfo,
) -> Result<(UploadInfo, Option<Error>), Error> {
    let stores = &core.stores;
    let expect = body.content_length().unwrap_or(0);
    stores.data.place(&mut info);
    let mut early = info.clone();
    early.offset = expect;
    let data = async {
        if let Some(done) = stores.data.create_whole(&mut info, body).await {
            return done
                .map(|w| ingest::body_stored(core, body, w))
                .map_err(Error::from);
        }
        let mut writer = stores.data.create(&mut info).await?;
        let got = ingest::receive(core, body, &mut *writer, 0, expect, None).await;
        drop(writer);
        Ok::<_, Error>(got)
    };
    let (data, wrote) = if core.shared.config.force_fsync {
        // The data file (and the directories on its way) is durable before its record
        // is written, so the record can never outlive it after a power loss.
        let data = data.await;
        (data, stores.info.put(&early).await)
    } else {
        tokio::join!(data, stores.info.put(&early))
    };
    let got = match data {
        Ok(v) => v,
        Err(e) => {
            if wrote.is_ok() {
                let _ = stores.info.remove(&id).await;
            }
            return Err(e);
        }
    };
    if matches!(got.error, Some(Error::InsufficientStorage)) {
        let _ = stores.data.remove(&info).await;
        let _ = stores.info.remove(&id).await;
        return Err(Error::InsufficientStorage);
    }
    info.offset = got.end_offset;
    if wrote.is_err() || got.end_offset != expect {
        if let Err(e) = stores.info.put(&info).await {
            let _ = stores.data.remove(&info).await;
            let _ = stores.info.remove(&id).await;
            return Err(e.into());
        }
    }
    Ok((info, got.error))
}

/// §1.3: the offset and what else the server knows of an upload.
async fn head(core: &Rc<Core>, ctx: &RequestCtx<'_>, id: &UploadId) -> Result<Reply, Error> {
    let upload = core.stores.load(id).await?;
    let expiry = super::expire::check(&core.shared.config, &upload)?;
    let mut resp = Response::new(200);
    upload_headers(&upload, &mut resp);
    let finals = &core.shared.finals;
    super::concat::head_headers(&core.shared.config.url, finals, &upload, &mut resp);
    super::expire::expires_header(&mut resp, expiry);
    if upload.info.is_final && !upload.info.is_complete() {
        // A final left waiting by a restart: assemble it if its parts are there.
        super::concat::recover(core, &upload, origin(core, ctx, "HEAD", Some(id)));
    }
    resp.header("Cache-Control", "no-store");
    Ok(Reply::new(resp))
}

fn upload_headers(upload: &Upload, resp: &mut Response) {
    let info = &upload.info;
    resp.header("Upload-Offset", info.offset.to_string());
    match info.length {
        Some(len) => resp.header("Upload-Length", len.to_string()),
        None => resp.header("Upload-Defer-Length", "1"),
    }
    if !info.metadata.is_empty() {
        resp.header("Upload-Metadata", info.metadata.to_header());
    }
    resp.header("Upload-Created", info.created_at.to_string());
}

/// §1.4: append bytes at the upload's offset.
async fn patch(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    id: &UploadId,
    body: &mut BodySource<'_>,
) -> Result<Reply, Error> {
    let cfg = &core.shared.config;
    let head = ctx.head;
    if !is_offset_octet_stream(head.header("content-type")) {
        return Err(Error::UnsupportedMediaType);
    }
    let offset = head
        .header("upload-offset")
        .and_then(parse_tus_integer)
        .ok_or(Error::BadRequest(
            "Upload-Offset must be a non-negative integer below 2^63",
        ))?;
    let new_length = match head.header("upload-length") {
        Some(v) => Some(parse_tus_integer(v).ok_or(Error::BadRequest(
            "Upload-Length must be a non-negative integer below 2^63",
        ))?),
        None => None,
    };
    // As rustus: the checksum header is checked before the upload is looked at.
    let check = checksum_check(core, head, body)?;
    let stores = &core.stores;
    // Newest request wins: an older PATCH still holding the upload is made to stop, and
    // this one can be made to stop in turn (its body ends when `release` is asked).
    let release = body.release();
    let _lock = match take_over(core, id, Some(release.clone())).await {
        Ok(lock) => lock,
        // §2.7: a final is never written, even while it is being assembled (which
        // holds its lock and cannot be taken over).
        Err(Error::Locked) => {
            return Err(match stores.info.get(id).await {
                Ok(info) if info.is_final => Error::Forbidden("Upload is a final concatenation"),
                _ => Error::Locked,
            })
        }
        Err(e) => return Err(e),
    };
    let mut upload = stores.load(id).await?;
    super::expire::check(cfg, &upload)?;
    // A hook's StopUpload (`--hooks-answers`): a kept stopped upload takes no more.
    super::stops::before_body(core, id, &mut upload.info).await?;
    let request = PatchRequest {
        offset,
        new_length,
        content_length: body.content_length(),
    };
    let state = UploadState {
        offset: upload.offset(),
        length: upload.info.length,
        is_final: upload.info.is_final,
    };
    let limits = PatchLimits {
        max_file_size: cfg.max_file_size,
        max_body_size: cfg.max_body_size,
    };
    let (set_length, limit) = match patch_plan(&request, &state, &limits)? {
        PatchPlan::AlreadyComplete => {
            let mut resp = Response::new(204);
            resp.header("Upload-Offset", upload.offset().to_string());
            return Ok(Reply::new(resp));
        }
        PatchPlan::Write {
            set_length, limit, ..
        } => (set_length, limit),
    };
    let mut writer = stores.data.open(&upload.info).await?;
    if let Some(len) = set_length {
        upload.info.length = Some(len);
        upload.info.deferred_size = false;
    }
    let start = upload.offset();
    let checked = check.is_some();
    super::stops::report_progress(core, ctx, &upload.info, body);
    let mut got = ingest::receive(core, body, &mut *writer, start, limit, check).await;
    // Closed synchronously by the drop: close(2) of a regular file does not wait for
    // I/O, and an io_uring close would cost the core one more wake-up.
    drop(writer);
    upload.info.offset = got.end_offset;
    if let Some(stop) = super::stops::after_body(core, id, &mut upload.info).await? {
        // Stopped by a hook while this PATCH held the upload: the bytes stored are kept
        // (or went with the upload); the client gets the hook's answer.
        let mut resp = error_response(&stop);
        resp.header("Upload-Offset", got.end_offset.to_string());
        return Ok(Reply {
            closes: close_cause(Some(&stop), release.requested()),
            ..Reply::new(resp)
        });
    }
    if checked && got.end_offset == start {
        if let Some(err) = got.error {
            // Refused as a whole (a mismatch, a bad trailer, a cut body): the upload is
            // as before, its length included; no hook fires.
            let mut resp = error_response(&err);
            resp.header("Upload-Offset", start.to_string());
            return Ok(Reply {
                closes: close_cause(Some(&err), release.requested()),
                ..Reply::new(resp)
            });
        }
    }
    if release.requested() && matches!(got.error, Some(Error::BodyIncomplete)) {
        // The takeover's shutdown(2) ended the body before the flag was looked at.
        got.error = Some(Error::TakenOver);
    }
    upload.info.offset = got.end_offset;
    if got.end_offset != start || set_length.is_some() {
        stores.info.put(&upload.info).await?;
    }
    if upload.info.is_complete() {
        // Not complete before: a complete upload took the `AlreadyComplete` path.
        metrics::upload_finished();
        if upload.info.is_partial {
            // concatenation-unfinished: finals waiting for this part may be ready.
            let from = origin(core, ctx, "PATCH", Some(id));
            super::concat::part_finished(core, id, &from);
        }
    }
    let expiry = super::expire::state_after_write(
        cfg,
        &upload.info,
        got.end_offset != start,
        upload.modified,
    );
    // pre-finish then post-finish when this PATCH completed the upload (post-finish
    // once its data is where it stays), post-receive when it stored bytes (even if its
    // body then failed: the upload moved on).
    let hooks = &core.shared.hooks;
    let mut finish = Finish::None;
    if upload.info.is_complete() {
        let from = || origin(core, ctx, "PATCH", Some(id));
        finish = pre_finish(core, &upload.info, from).await;
        finished(core, upload.info, from).await;
    } else if got.end_offset != start && hooks.wants(Event::PostReceive) {
        let from = origin(core, ctx, "PATCH", Some(id));
        hooks.post(Event::PostReceive, upload.info, from).await;
    }
    let mut resp = match got.error.as_ref().or(finish.refusal()) {
        Some(err) => error_response(err),
        None => Response::new(204),
    };
    finish.merge_into(&mut resp);
    resp.header("Upload-Offset", got.end_offset.to_string());
    super::expire::expires_header(&mut resp, expiry);
    Ok(Reply {
        // Taken over just after the body ended: the socket is shut for reading, so
        // the connection cannot carry another request; say so.
        closes: close_cause(got.error.as_ref(), release.requested()),
        ..Reply::new(resp)
    })
}

/// §2.6: termination (also the draft's cancellation, `server::draft`).
pub(super) async fn delete(
    core: &Rc<Core>,
    ctx: &RequestCtx<'_>,
    id: &UploadId,
) -> Result<Reply, Error> {
    // A DELETE takes the upload over from a PATCH still holding it; it cannot be taken
    // over itself (no body to stop).
    let _lock = take_over(core, id, None).await?;
    let stores = &core.stores;
    let info = stores.info.get(id).await?;
    if core.shared.finals.part_in_use(id) {
        return Err(Error::Conflict(
            "The upload is a part of an unfinished final upload; delete the final first",
        ));
    }
    let hooks = &core.shared.hooks;
    // rustus-compat §3.1: before anything is removed; a refusal keeps the upload.
    let mut resp = Response::new(204);
    if hooks.wants(Event::PreTerminate) {
        let from = origin(core, ctx, "DELETE", Some(id));
        // A refusal (`RejectTermination` included) is the `Err`; what goes on may say
        // how the 204 is answered.
        if let Answer::Proceed { response: a, .. } =
            hooks.pre(Event::PreTerminate, &info, from).await?
        {
            resp.merge_answer(a.status, &a.headers, &a.body);
        }
    }
    stores.remove(id, &info).await?;
    if info.is_final {
        core.shared.finals.forget(id);
    }
    metrics::upload_terminated(!info.is_complete());
    if hooks.wants(Event::PostTerminate) {
        let from = origin(core, ctx, "DELETE", Some(id));
        hooks.post(Event::PostTerminate, info, from).await;
    }
    Ok(Reply::new(resp))
}

/// Applies what a pre-create answer asks of the upload before anything exists
/// (`--hooks-answers`): `ChangeFileInfo.MetaData` replaces its metadata, and
/// `ChangeFileInfo.ID` its ID (already checked by [`UploadId::parse`]). Returns the
/// response fields the answer adds to the 201, if any, and the chosen ID, if one was:
/// the caller then takes its lock ([`lock_chosen`]) and claims its record atomically
/// (`InfoStore::create`) before anything else of the upload exists.
pub(super) fn apply_pre_create(
    info: &mut UploadInfo,
    answer: Answer,
) -> (Option<HttpAnswer>, Option<UploadId>) {
    let Answer::Proceed { change, response } = answer else {
        // Refusals are `Hooks::pre`'s `Err`; a stop is not a pre-create answer.
        return (None, None);
    };
    if let Some(metadata) = change.metadata {
        info.metadata = metadata;
    }
    if let Some(id) = change.id {
        info.id = id.to_string();
    }
    ((!response.is_empty()).then_some(response), change.id)
}

/// The lock of an upload ID a pre-create hook chose, taken without ever taking over
/// (another upload of that ID may be being written): 409 when another request holds it
/// (that upload's, or another creation of the same ID).
pub(super) async fn lock_chosen(core: &Core, id: UploadId) -> Result<Lock, Error> {
    core.stores
        .locker
        .try_lock(id)
        .await?
        .ok_or(Error::Conflict(crate::error::ID_IN_USE))
}

/// What `pre-finish` asks of the answer to the request that completed an upload.
pub(super) enum Finish {
    /// No instruction (no pre-finish hook, or one that gave none).
    None,
    /// `HTTPResponse` 2xx (`--hooks-answers`): merged into the daemon's own answer.
    Answered(HttpAnswer),
    /// A refusal (a 4xx/5xx answer, a failing hook, no verdict in time): the client is
    /// answered with it; the upload stays complete.
    Refused(Error),
}

impl Finish {
    /// The refusal the client is answered with, if any.
    pub(super) fn refusal(&self) -> Option<&Error> {
        match self {
            Finish::Refused(err) => Some(err),
            _ => None,
        }
    }

    /// Merges a 2xx answer into `resp` (a refusal is the caller's `error_response`).
    pub(super) fn merge_into(&self, resp: &mut Response) {
        if let Finish::Answered(a) = self {
            resp.merge_answer(a.status, &a.headers, &a.body);
        }
    }
}

/// `pre-finish` (not a rustus event: only when `--hooks` lists it): asks the hooks about
/// an upload that just became complete, before the request that completed it is
/// answered. Awaits the verdict without blocking the core. Whatever it says, the upload
/// stays complete and `post-finish` follows (the caller's `finished`).
pub(super) async fn pre_finish(
    core: &Rc<Core>,
    info: &UploadInfo,
    from: impl FnOnce() -> Origin,
) -> Finish {
    let hooks = &core.shared.hooks;
    if !hooks.wants(Event::PreFinish) {
        return Finish::None;
    }
    match hooks.pre(Event::PreFinish, info, from()).await {
        Ok(Answer::Proceed { response, .. }) if !response.is_empty() => Finish::Answered(response),
        Ok(_) => Finish::None,
        Err(e) => Finish::Refused(Error::Hook(e)),
    }
}

/// An upload just became complete (its record says so): `post-finish` now, or, when
/// the data store moves the data on first (hybrid-s3), once it is where it stays
/// (`DataStore::settle`). `from` (the event's origin, which copies the request's
/// headers) is only made when a hook wants the event.
pub(super) async fn finished(core: &Rc<Core>, info: UploadInfo, from: impl FnOnce() -> Origin) {
    let shared = core.shared.clone();
    let from = shared.hooks.wants(Event::PostFinish).then(from);
    let announce: Announce = Box::new(move |info: UploadInfo| {
        Box::pin(async move {
            if let Some(from) = from {
                shared.hooks.post(Event::PostFinish, info, from).await;
            }
        })
    });
    if let Some(now) = core.stores.data.settle(&info, announce) {
        now(info).await;
    }
}

/// The upload's lock for a PATCH or DELETE: an older request holding it is asked to
/// let go and awaited (at most `locks::TAKEOVER_WAIT`); 423 if it does not let go.
/// `release` is given when this request may itself be taken over (a PATCH).
pub(super) async fn take_over(
    core: &Core,
    id: &UploadId,
    release: Option<Release>,
) -> Result<Lock, Error> {
    match core.stores.locker.lock(*id, release).await? {
        Acquired::Lock(lock, took_over) => {
            if took_over {
                metrics::LOCK_TAKEOVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::debug!("upload {id} taken over from an older request");
            }
            Ok(lock)
        }
        Acquired::Busy => Err(Error::Locked),
    }
}
