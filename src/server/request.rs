//! What request handling knows of a request besides its body, and what it builds from
//! it: the absolute `Location` of a new upload, the origin of a hook event.

use super::core::Core;
use crate::hooks::Origin;
use crate::http::head::RequestHead;
use crate::storage::id::UploadId;
use std::net::SocketAddr;

/// What the connection passes on about a request besides its body.
pub struct RequestCtx<'a> {
    /// The parsed head.
    pub head: &'a RequestHead,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address on this connection (for `Location` without a Host header).
    pub local: Option<SocketAddr>,
}

/// Where a hook event of this request comes from (the message's request part).
pub fn origin(core: &Core, ctx: &RequestCtx<'_>, method: &str, id: Option<&UploadId>) -> Origin {
    let id = id.map(UploadId::to_string);
    core.shared.hooks.origin(
        ctx.head,
        method,
        &core.shared.config.url,
        id.as_deref(),
        ctx.peer,
    )
}

/// The absolute URL of a new upload, from `Forwarded`, then `X-Forwarded-Proto` /
/// `X-Forwarded-Host`, then `Host`, as rustus builds it.
pub fn location(ctx: &RequestCtx<'_>, base: &str, id: &str) -> String {
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
