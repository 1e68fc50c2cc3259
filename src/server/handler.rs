//! The tus handler: routes a request and applies the pure rules of [`crate::tus`] with
//! the storage of [`crate::storage`]. Each method is one small async function; all the
//! decisions they make are in `tus::rules`, which is table-tested.

use super::conn::{BodyEnd, BodyIo};
use super::core::Core;
use crate::error::{Error, HookError, Source};
use crate::hooks::{Event, Origin};
use crate::http::head::{Method, RequestHead};
use crate::http::response::Response;
use crate::limits::MAX_TUS_INTEGER;
use crate::metrics::{self, Endpoint};
use crate::storage::files::{write_data, Upload};
use crate::storage::info::UploadInfo;
use crate::storage::layout::new_upload_id;
use crate::storage::locks::{Acquired, UploadLock};
use crate::tus::checksum::{self, Check, ChecksumAsk, Digests};
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
use std::net::SocketAddr;
use std::rc::Rc;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::File;
use uuid::Uuid;

/// What the connection needs to know about a request besides its head.
pub struct RequestCtx<'a> {
    /// The parsed head.
    pub head: &'a RequestHead,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address on this connection (for `Location` without a Host header).
    pub local: Option<SocketAddr>,
}

/// The handler's answer.
pub struct Reply {
    /// The response to send.
    pub resp: Response,
    /// Close the connection after the answer.
    pub close: bool,
    /// A `/health` request (left out of the access log with
    /// `--disable-health-access-log`).
    pub health: bool,
    /// The route template, for the metrics.
    pub endpoint: Endpoint,
    /// A body streamed from a file after the head (a download); `resp.streamed_len`
    /// is its length.
    pub file: Option<FileBody>,
}

/// Bytes of an open file to send as the body: `len` bytes from offset `start`.
pub struct FileBody {
    /// The data file, open for reading.
    pub file: File,
    /// First byte to send.
    pub start: u64,
    /// How many bytes to send.
    pub len: u64,
}

impl Reply {
    pub(super) fn new(resp: Response) -> Reply {
        Reply {
            resp,
            close: false,
            health: false,
            endpoint: Endpoint::Other,
            file: None,
        }
    }
}

/// The response for an error: status, one-line text body, `Allow` for 405,
/// `Retry-After` for a full hook queue; an HTTP pre-hook's refusal is relayed as it
/// is (status, body, and its content type or `text/plain; charset=utf-8`).
pub fn error_response(err: &Error) -> Response {
    let mut resp = Response::new(err.status());
    match err {
        Error::MethodNotAllowed(allow) => resp.header("Allow", *allow),
        Error::Hook(HookError::Rejected {
            body, content_type, ..
        }) => {
            let ct = content_type
                .clone()
                .unwrap_or_else(|| "text/plain; charset=utf-8".to_string());
            resp.header("Content-Type", ct);
            resp.body = body.clone().into();
            return resp;
        }
        Error::Hook(HookError::QueueFull) => resp.header("Retry-After", "1"),
        _ => {}
    }
    resp.text(err.message());
    resp
}

/// Where a hook event of this request comes from (the message's request part).
pub(super) fn origin(core: &Core, ctx: &RequestCtx<'_>, method: &str, id: Option<&Uuid>) -> Origin {
    let id = id.map(Uuid::to_string);
    core.shared.hooks.origin(
        ctx.head,
        method,
        &core.shared.config.url,
        id.as_deref(),
        ctx.peer,
    )
}

/// The method after `X-HTTP-Method-Override`, which rustus honours on every request.
fn effective_method(head: &RequestHead) -> Method {
    match head.header_str("x-http-method-override") {
        Some(m) if !m.trim().is_empty() => Method::parse(m.trim()),
        _ => head.method.clone(),
    }
}

/// Handles one request. Never fails: errors become answers.
pub async fn handle(core: &Rc<Core>, ctx: &RequestCtx<'_>, body: &mut BodyIo<'_>) -> Reply {
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
        let decision = cors::decide(&cfg.cors, &cfg.hooks_http_proxy_headers, &ask);
        match decision {
            Decision::Actual(origin) => origin,
            preflight => return preflight_reply(core, route, preflight),
        }
    } else {
        None
    };
    let result = match route {
        Route::Health => health(core, &method).await,
        Route::Metrics => metrics_page(core, &method),
        Route::Ready => ready(core, &method).await,
        Route::NotFound | Route::BadId => Err(Error::NotFound),
        Route::Collection | Route::Upload(_) => tus(core, ctx, route, &method, body).await,
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
        Reply::new(error_response(&err))
    });
    if route.is_tus() {
        // §1.1: every answer under the base path names the protocol version.
        reply.resp.header("Tus-Resumable", TUS_VERSION);
        reply.resp.header("Tus-Version", TUS_VERSION);
        cors_headers(&mut reply.resp, cors);
    }
    reply.health = route == Route::Health;
    reply.endpoint = endpoint(route);
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
                cors::allow_headers(&core.shared.config.hooks_http_proxy_headers),
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
        uploads_in_progress: crate::storage::locks::held(),
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
            Ok(()) => core.shared.store.probe().await,
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
    match core.shared.store.probe().await {
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
    body: &mut BodyIo<'_>,
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
        _ => Err(Error::MethodNotAllowed(match (route, ext.getting) {
            (Route::Upload(_), true) if ext.termination => "OPTIONS, GET, HEAD, PATCH, DELETE",
            (Route::Upload(_), true) => "OPTIONS, GET, HEAD, PATCH",
            _ => route.allow(ext.creation, ext.termination),
        })),
    }
}

/// rustus-compat §2.7 (`getting`): the upload's bytes as stored so far, with a
/// single `Range` honoured. The body is streamed from the file by the connection.
async fn get(core: &Rc<Core>, ctx: &RequestCtx<'_>, id: &Uuid) -> Result<Reply, Error> {
    let store = &core.shared.store;
    let mut upload = store.read_info(id).await?;
    let file = store.open_read(&upload.data_path).await?;
    let st = match file.statx().await {
        Ok(st) => st,
        Err(e) => {
            let _ = file.close().await;
            return Err(Error::storage("stat data file", e));
        }
    };
    // The bytes stored so far: an incomplete upload is served as far as it goes.
    let len = st.stx_size;
    upload.info.offset = len;
    upload.modified = Some(st.stx_mtime.tv_sec);
    if let Err(e) = super::expire::check(&core.shared.config, &upload) {
        let _ = file.close().await;
        return Err(e);
    }
    let mut resp = Response::new(200);
    for (name, value) in DOWNLOAD_HEADERS {
        resp.header(name, value);
    }
    resp.header("Accept-Ranges", "bytes");
    resp.header("ETag", format!("\"{id}-{len}\""));
    resp.header("Last-Modified", crate::time::http_date(st.stx_mtime.tv_sec));
    let (start, n) = match parse_range(ctx.head.header_str("range"), len) {
        RangeAsk::Full => (0, len),
        RangeAsk::Part { start, end } => {
            resp.status = 206;
            resp.header("Content-Range", format!("bytes {start}-{end}/{len}"));
            (start, end - start + 1)
        }
        RangeAsk::Unsatisfiable => {
            let _ = file.close().await;
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
        file: Some(FileBody {
            file,
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
    body: &mut BodyIo<'_>,
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
    let _lock = UploadLock::try_acquire(id).ok_or(Error::Locked)?;
    let mut info = UploadInfo::new(id.to_string(), length, crate::time::now_unix(), metadata);
    info.is_partial = concat == Some(Concat::Partial);
    let hooks = &core.shared.hooks;
    // rustus-compat §3.1: after validation, before anything exists; a refusal leaves
    // nothing behind (the body, if any, is never read).
    if hooks.wants(Event::PreCreate) {
        let from = origin(core, ctx, "POST", None);
        hooks.pre(Event::PreCreate, &info, from).await?;
    }
    let store = &core.shared.store;
    // A small upload whose whole body came with the head (the common case for small
    // files) takes the short path: see `create_whole`. A body to verify is staged
    // first (see `receive_checked`), so it takes the general path.
    let whole =
        check.is_none() && with_body && body.whole_in_hand() && body.content_length() == length;
    let (info, body_error) = if whole {
        create_whole(core, body, info).await?
    } else {
        let (file, path) = store.create_data(&mut info, true).await?;
        let mut body_error = None;
        if with_body {
            let got = match check {
                Some(check) => receive_checked(core, body, &file, &path, 0, limit, check).await,
                None => receive(core, body, &file, 0, limit).await,
            };
            info.offset = got.end_offset;
            body_error = got.error;
        }
        drop(file); // a synchronous close(2): see `patch`
        if let Err(e) = store.write_info(&info).await {
            let _ = tokio_uring::fs::remove_file(&path).await;
            return Err(e);
        }
        (info, body_error)
    };
    metrics::upload_created(info.length, info.is_complete());
    let location = location(ctx, &cfg.url, &info.id);
    let mut resp = match &body_error {
        None => Response::new(201),
        Some(err) => error_response(err),
    };
    resp.header("Location", location);
    resp.header("Upload-Offset", info.offset.to_string());
    super::expire::expires_header(
        &mut resp,
        super::expire::state_after_write(cfg, &info, true, None),
    );
    // The upload exists (even if its body was cut short): post-finish when this POST
    // completed it (creation-with-upload of everything, an empty upload), else
    // post-create.
    let event = if info.is_complete() {
        Event::PostFinish
    } else {
        Event::PostCreate
    };
    if hooks.wants(event) {
        hooks
            .post(event, info, origin(core, ctx, "POST", None))
            .await;
    }
    Ok(Reply {
        close: body_error.as_ref().is_some_and(|e| !keeps_connection(e)),
        ..Reply::new(resp)
    })
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
    body: &mut BodyIo<'_>,
    mut info: UploadInfo,
) -> Result<(UploadInfo, Option<Error>), Error> {
    let store = &core.shared.store;
    let expect = body.content_length().unwrap_or(0);
    store.set_data_path(&mut info);
    let mut early = info.clone();
    early.offset = expect;
    let data = async {
        let (file, path) = store.create_data(&mut info, false).await?;
        let got = receive(core, body, &file, 0, expect).await;
        drop(file);
        Ok::<_, Error>((path, got))
    };
    let (data, wrote) = tokio::join!(data, store.write_info(&early));
    let (path, got) = match data {
        Ok(v) => v,
        Err(e) => {
            if wrote.is_ok() {
                store.remove_info(&info.id).await;
            }
            return Err(e);
        }
    };
    if matches!(got.error, Some(Error::InsufficientStorage)) {
        let _ = tokio_uring::fs::remove_file(&path).await;
        store.remove_info(&info.id).await;
        return Err(Error::InsufficientStorage);
    }
    info.offset = got.end_offset;
    if wrote.is_err() || got.end_offset != expect {
        if let Err(e) = store.write_info(&info).await {
            let _ = tokio_uring::fs::remove_file(&path).await;
            store.remove_info(&info.id).await;
            return Err(e);
        }
    }
    Ok((info, got.error))
}

/// §1.3: the offset and what else the server knows of an upload.
async fn head(core: &Rc<Core>, ctx: &RequestCtx<'_>, id: &Uuid) -> Result<Reply, Error> {
    let upload = core.shared.store.load(id).await?;
    let expiry = super::expire::check(&core.shared.config, &upload)?;
    let mut resp = Response::new(200);
    upload_headers(&upload, &mut resp);
    super::concat::head_headers(&core.shared.config.url, &upload, &mut resp);
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
    id: &Uuid,
    body: &mut BodyIo<'_>,
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
    let store = &core.shared.store;
    // Newest request wins: an older PATCH still holding the upload is made to stop.
    let lock = match take_over(id, Some(body.socket())).await {
        Ok(lock) => lock,
        // §2.7: a final is never written, even while it is being assembled (which
        // holds its lock and cannot be taken over).
        Err(Error::Locked) => {
            return Err(match store.read_info(id).await {
                Ok(u) if u.info.is_final => Error::Forbidden("Upload is a final concatenation"),
                _ => Error::Locked,
            })
        }
        Err(e) => return Err(e),
    };
    body.stop_on(lock.stop_flag());
    let mut upload = store.load(id).await?;
    super::expire::check(cfg, &upload)?;
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
    let file = store.open_data(&upload.data_path).await?;
    if let Some(len) = set_length {
        upload.info.length = Some(len);
        upload.info.deferred_size = false;
        store.preallocate(&file, len).await;
    }
    let start = upload.offset();
    let mut got = match check {
        Some(check) => {
            let path = upload.data_path.clone();
            let got = receive_checked(core, body, &file, &path, start, limit, check).await;
            if got.end_offset == start {
                if let Some(err) = got.error {
                    // Refused as a whole (a mismatch, a bad trailer, a cut body): the
                    // upload is as before, its length included; no hook fires.
                    drop(file);
                    let mut resp = error_response(&err);
                    resp.header("Upload-Offset", start.to_string());
                    return Ok(Reply {
                        close: !keeps_connection(&err) || lock.stop_requested(),
                        ..Reply::new(resp)
                    });
                }
            }
            got
        }
        None => receive(core, body, &file, start, limit).await,
    };
    // Closed synchronously by the drop: close(2) of a regular file does not wait for
    // I/O, and an io_uring close would cost the core one more wake-up.
    drop(file);
    if lock.stop_requested() && matches!(got.error, Some(Error::BodyIncomplete)) {
        // The takeover's shutdown(2) ended the body before the flag was looked at.
        got.error = Some(Error::TakenOver);
    }
    upload.info.offset = got.end_offset;
    if got.end_offset != start || set_length.is_some() {
        store.write_info(&upload.info).await?;
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
    // post-finish when this PATCH completed the upload, post-receive when it stored
    // bytes (even if its body then failed: the upload moved on).
    let event = if upload.info.is_complete() {
        Some(Event::PostFinish)
    } else if got.end_offset != start {
        Some(Event::PostReceive)
    } else {
        None
    };
    let hooks = &core.shared.hooks;
    if let Some(event) = event.filter(|e| hooks.wants(*e)) {
        let from = origin(core, ctx, "PATCH", Some(id));
        hooks.post(event, upload.info, from).await;
    }
    let mut resp = match &got.error {
        None => Response::new(204),
        Some(err) => error_response(err),
    };
    resp.header("Upload-Offset", got.end_offset.to_string());
    super::expire::expires_header(&mut resp, expiry);
    Ok(Reply {
        // Taken over just after the body ended: the socket is shut for reading, so
        // the connection cannot carry another request; say so.
        close: got.error.as_ref().is_some_and(|e| !keeps_connection(e)) || lock.stop_requested(),
        ..Reply::new(resp)
    })
}

/// §2.6: termination.
async fn delete(core: &Rc<Core>, ctx: &RequestCtx<'_>, id: &Uuid) -> Result<Reply, Error> {
    // A DELETE takes the upload over from a PATCH still holding it; it cannot be taken
    // over itself (no body to stop).
    let _lock = take_over(id, None).await?;
    let store = &core.shared.store;
    let upload = store.read_info(id).await?;
    if super::concat::part_in_use(id) {
        return Err(Error::Conflict(
            "The upload is a part of an unfinished final upload; delete the final first",
        ));
    }
    let hooks = &core.shared.hooks;
    // rustus-compat §3.1: before anything is removed; a refusal keeps the upload.
    if hooks.wants(Event::PreTerminate) {
        let from = origin(core, ctx, "DELETE", Some(id));
        hooks.pre(Event::PreTerminate, &upload.info, from).await?;
    }
    store.remove(&upload).await?;
    if upload.info.is_final {
        super::concat::forget(id);
    }
    metrics::upload_terminated(!upload.info.is_complete());
    if hooks.wants(Event::PostTerminate) {
        let from = origin(core, ctx, "DELETE", Some(id));
        hooks.post(Event::PostTerminate, upload.info, from).await;
    }
    Ok(Reply::new(Response::new(204)))
}

/// The upload's lock for a PATCH or DELETE: an older request holding it is asked to
/// stop and awaited (at most `locks::TAKEOVER_WAIT`); 423 if it does not let go.
/// `socket` is given when this request may itself be taken over (a PATCH).
async fn take_over(id: &Uuid, socket: Option<std::os::fd::RawFd>) -> Result<UploadLock, Error> {
    match UploadLock::acquire(*id, socket).await {
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

/// What receiving a body achieved.
struct Received {
    /// The upload's offset afterwards: every byte stored, including those of a body
    /// that was cut short.
    end_offset: u64,
    /// Why the body did not complete normally, if it did not.
    error: Option<Error>,
}

/// Streams the body into `file` from offset `start`, storing at most `limit` bytes:
/// spliced (zero-copy) when it can be, else through the buffered path. Either way
/// exactly one write is in flight, so the file never has a hole and its size is always
/// the count of bytes stored.
async fn receive(
    core: &Rc<Core>,
    body: &mut BodyIo<'_>,
    file: &File,
    start: u64,
    limit: u64,
) -> Received {
    let end = start.saturating_add(limit);
    let mut out = Stored {
        pos: start,
        error: None,
        write_failed: false,
    };
    // Zero-copy when nothing needs to see the bytes and the whole body fits (a
    // Content-Length body always does: its overrun was refused before reading).
    if core.splice_enabled()
        && body.can_splice()
        && body.content_length().is_some_and(|cl| cl <= limit)
    {
        let spliced = body.splice_into(file, start).await;
        out.pos = spliced.pos;
        if let Some(e) = spliced.write_error {
            out.error = Some(Error::storage("write data file", e));
            out.write_failed = true;
        } else if spliced.fallback {
            core.disable_splice();
        }
    }
    if out.error.is_none() && body.end().is_none() {
        receive_buffered(core, body, file, end, &mut out, None).await;
    }
    if out.write_failed {
        // A failed write may have stored part of its buffer: the file size says.
        if let Ok(st) = file.statx().await {
            out.pos = st.stx_size.max(start);
        }
    }
    let mut error = out.error;
    if error.is_none() {
        error = body_end_error(core, body);
    }
    if core.shared.config.force_fsync && out.pos > start {
        if let Err(e) = file.sync_data().await {
            error = Some(Error::storage("fdatasync data file", e));
        }
    }
    // The answer carries the error; a storage failure is also logged (as errors the
    // handler returns are, in `handle`).
    if let Some(e) = error.as_ref().filter(|e| e.source() == Source::Storage) {
        crate::error!(
            "storing a request body, stopped at offset {}: {} {}",
            out.pos,
            e.status(),
            e.message()
        );
    }
    Received {
        end_offset: out.pos,
        error,
    }
}

/// Progress of a body into its file.
struct Stored {
    /// File offset after the last byte written.
    pos: u64,
    /// Why storing stopped early, if it did.
    error: Option<Error>,
    /// A file write failed: `pos` must be re-read from the file's size.
    write_failed: bool,
}

/// The buffered path: two body buffers ping-pong, one written to the file while the
/// other is filled from the socket. Stores up to file offset `end`; a body that runs
/// past it (only a chunked one can) is cut there and answered 413.
async fn receive_buffered(
    core: &Rc<Core>,
    body: &mut BodyIo<'_>,
    file: &File,
    end: u64,
    out: &mut Stored,
    mut digests: Option<&mut Digests>,
) {
    // Ask for one byte more than the room left, to notice a chunked body that runs on.
    let cap = core.buf_bytes() as u64;
    let want = |pos: u64| (end - pos).saturating_add(1).min(cap) as usize;
    let mut spare = core.take_buffer();
    let mut cur = body.fill(core.take_buffer(), want(out.pos)).await;
    while !cur.is_empty() {
        let room = end - out.pos;
        if cur.len() as u64 > room {
            cur.truncate(room as usize);
            out.error = Some(Error::TooLarge("Request body would pass Upload-Length"));
        }
        let n = cur.len() as u64;
        if let Some(d) = digests.as_deref_mut() {
            d.update(&cur);
        }
        if out.error.is_some() || body.end().is_some() {
            let len = cur.len();
            let (res, buf) = write_data(file, cur, 0..len, out.pos).await;
            cur = buf;
            match res {
                Ok(()) => out.pos += n,
                Err(e) => {
                    out.error = Some(Error::storage("write data file", e));
                    out.write_failed = true;
                }
            }
            break;
        }
        let next_want = want(out.pos + n);
        let len = cur.len();
        let ((res, written), next) = tokio::join!(
            write_data(file, cur, 0..len, out.pos),
            body.fill(spare, next_want)
        );
        spare = written;
        spare.clear();
        cur = next;
        match res {
            Ok(()) => out.pos += n,
            Err(e) => {
                out.error = Some(Error::storage("write data file", e));
                out.write_failed = true;
                break;
            }
        }
    }
    core.give_buffer(cur);
    core.give_buffer(spare);
}

/// Whether the connection may serve another request after this error: a checksum
/// refusal comes after the whole body was read (the connection closes anyway when
/// it was not).
fn keeps_connection(err: &Error) -> bool {
    matches!(err, Error::ChecksumMismatch | Error::Checksum(_))
}

/// How this request's body is to be verified (checksum extension), or a 400.
fn checksum_check(
    core: &Core,
    head: &RequestHead,
    body: &BodyIo<'_>,
) -> Result<Option<Check>, Error> {
    let ext = &core.shared.config.extensions;
    let ask = ChecksumAsk {
        checksum: ext.checksum,
        trailer: ext.checksum_trailer,
        chunked: body.content_length().is_none(),
        header: head.header("upload-checksum"),
        announce: head.header("trailer"),
    };
    Ok(checksum::checksum_plan(&ask)?)
}

/// The error for a body that ended other than complete (`None` when it completed).
fn body_end_error(core: &Core, body: &BodyIo<'_>) -> Option<Error> {
    match body.end() {
        None | Some(BodyEnd::Complete) => None,
        Some(_) if core.draining() => Some(Error::Unavailable(
            "The server is shutting down; resume the upload from its offset",
        )),
        Some(BodyEnd::Eof) | Some(BodyEnd::Failed(_)) => Some(Error::BodyIncomplete),
        Some(BodyEnd::TimedOut) => Some(Error::BodyTimeout),
        Some(BodyEnd::Malformed(e)) => Some(Error::Body(*e)),
        Some(BodyEnd::Stopped) => Some(Error::TakenOver),
    }
}

/// Receives a body that must match its `Upload-Checksum` (checksum extension) and
/// stores it in `file` at `start` only if it does; at most `limit` bytes.
///
/// The body goes through the buffered path (a body that must be hashed cannot be
/// spliced) into an anonymous staging file next to the data file, each buffer hashed
/// as it is written. Only a complete body whose digest matches is then copied into the
/// data file at `start`, through the same two body buffers (io_uring reads and writes,
/// one write in flight). So the upload's offset, which is the data file's size, never
/// counts an unverified byte, not even after a crash mid-request: the staging file has
/// no name and disappears with the process. A mismatch, a malformed or missing trailer,
/// a body cut short or running past `limit`: nothing is stored and `end_offset` is
/// `start`. A failure while copying keeps the verified bytes copied so far (the offset
/// is re-read from the file), as a failed write does on the unchecked path.
async fn receive_checked(
    core: &Rc<Core>,
    body: &mut BodyIo<'_>,
    file: &File,
    data_path: &std::path::Path,
    start: u64,
    limit: u64,
    check: Check,
) -> Received {
    let refused = |error| Received {
        end_offset: start,
        error: Some(error),
    };
    let staging = match core.shared.store.open_staging(data_path).await {
        Ok(f) => f,
        Err(e) => return refused(e),
    };
    let mut digests = Digests::for_check(&check);
    let mut staged = Stored {
        pos: 0,
        error: None,
        write_failed: false,
    };
    receive_buffered(core, body, &staging, limit, &mut staged, Some(&mut digests)).await;
    let verdict = match staged.error.take().or_else(|| body_end_error(core, body)) {
        Some(e) => Err(e),
        None => match &check {
            Check::Header(expected) => Ok(expected.clone()),
            Check::Trailer => checksum::trailer_checksum(body.trailers()).map_err(Error::from),
        },
    };
    let verdict = verdict.and_then(|expected| {
        if digests.verify(&expected) {
            Ok(())
        } else {
            metrics::checksum_mismatch();
            Err(Error::ChecksumMismatch)
        }
    });
    if let Err(e) = verdict {
        let _ = staging.close().await;
        return refused(e);
    }
    let (pos, mut error) = copy_staged(core, &staging, file, start, staged.pos).await;
    let _ = staging.close().await;
    if core.shared.config.force_fsync && pos > start {
        if let Err(e) = file.sync_data().await {
            error = Some(Error::storage("fdatasync data file", e));
        }
    }
    Received {
        end_offset: pos,
        error,
    }
}

/// Copies the first `len` bytes of `staging` into `file` at `start`, reading the next
/// buffer while the last one is written. Returns the file offset after the last byte
/// stored and the error that stopped the copy, if one did.
async fn copy_staged(
    core: &Rc<Core>,
    staging: &File,
    file: &File,
    start: u64,
    len: u64,
) -> (u64, Option<Error>) {
    let cap = core.buf_bytes() as u64;
    let read = |buf: Vec<u8>, from: u64| async move {
        let want = (len - from).min(cap) as usize;
        if want == 0 {
            return (Ok(()), buf);
        }
        let (res, slice) = staging.read_at(buf.slice(0..want), from).await;
        let buf = slice.into_inner();
        match res {
            Ok(0) => (
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the staging file is shorter than the body",
                )),
                buf,
            ),
            Ok(_) => (Ok(()), buf),
            Err(e) => (Err(e), buf),
        }
    };
    let mut copied = 0u64;
    let mut error = None;
    let (res, mut cur) = read(core.take_buffer(), 0).await;
    let mut spare = core.take_buffer();
    if let Err(e) = res {
        error = Some(Error::storage("read staging file", e));
        cur.clear();
    }
    while !cur.is_empty() {
        let n = cur.len() as u64;
        spare.clear();
        let len = cur.len();
        let ((wres, written), (rres, next)) = tokio::join!(
            crate::storage::files::write_data(file, cur, 0..len, start + copied),
            read(spare, copied + n)
        );
        spare = written;
        cur = next;
        if let Err(e) = wres {
            error = Some(Error::storage("write data file", e));
            // Part of the buffer may be in the file: its size says.
            if let Ok(st) = file.statx().await {
                copied = st.stx_size.saturating_sub(start);
            }
            break;
        }
        copied += n;
        if let Err(e) = rres {
            error = Some(Error::storage("read staging file", e));
            break;
        }
    }
    core.give_buffer(cur);
    core.give_buffer(spare);
    (start + copied, error)
}

/// The absolute URL of a new upload, from `Forwarded`, then `X-Forwarded-Proto` /
/// `X-Forwarded-Host`, then `Host`, as rustus builds it.
pub(super) fn location(ctx: &RequestCtx<'_>, base: &str, id: &str) -> String {
    let head = ctx.head;
    let (mut proto, mut host) = (None, None);
    if let Some(fwd) = head.header_str("forwarded") {
        let first = fwd.split(',').next().unwrap_or("");
        for pair in first.split(';') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "proto" => proto = Some(v.to_string()),
                "host" => host = Some(v.to_string()),
                _ => {}
            }
        }
    }
    let first_item = |name: &str| {
        head.header_str(name)
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
    };
    let proto = proto
        .or_else(|| first_item("x-forwarded-proto"))
        .filter(|p| p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("https"))
        .map(|p| p.to_ascii_lowercase())
        .unwrap_or_else(|| "http".to_string());
    let host = host
        .or_else(|| first_item("x-forwarded-host"))
        .filter(|h| valid_host(h))
        .or_else(|| {
            head.header_str("host")
                .map(str::to_string)
                .filter(|h| valid_host(h))
        })
        .or_else(|| ctx.local.map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".to_string());
    format!("{proto}://{host}{base}/{id}")
}

/// A host (and port) safe to put in a `Location` header.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}
