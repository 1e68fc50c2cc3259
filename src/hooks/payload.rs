//! The hook message: what an event says about the request and the upload, in rustus's
//! three formats (`rustus-compat.md` §3.3), byte for byte.
//!
//! rustus builds a `serde_json::Value` and serialises it, so every object's keys come
//! out sorted (serde_json's map is a `BTreeMap`). Here the structs declare their fields
//! in that sorted order and the maps are `BTreeMap`s, so the text is the same whatever
//! features serde_json is built with.
//!
//! The request part is pure: [`RequestPart::new`] takes the parsed head and the peer
//! address and applies rustus's rules (URI with a trailing slash, method after
//! `X-HTTP-Method-Override`, lowercase header names with the last value winning,
//! values that are not visible ASCII left out, `--behind-proxy` client address).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::Format;
use crate::http::head::RequestHead;
use crate::storage::info::UploadInfo;

/// The request an event came from, as the hook message shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPart {
    /// The normalised request URI: `<base>/` or `<base>/<id>/`, plus `?query` if any.
    pub uri: String,
    /// The method after `X-HTTP-Method-Override`.
    pub method: String,
    /// The client's IP address, without a port.
    pub remote_addr: String,
    /// Lowercase names; the last value of a repeated field; values that are not
    /// visible ASCII are left out (as `http::HeaderValue::to_str` does in rustus).
    pub headers: BTreeMap<String, String>,
}

impl RequestPart {
    /// The request part of a message. `base` is the tus base path (`/files`, or empty
    /// for the root), `id` the upload the request names, if any.
    pub fn new(
        head: &RequestHead,
        method: &str,
        base: &str,
        id: Option<&str>,
        peer: SocketAddr,
        behind_proxy: bool,
    ) -> RequestPart {
        let mut headers = BTreeMap::new();
        for (name, value) in &head.headers {
            // Last value wins, as rustus's HeaderMap iteration into a JSON map does.
            if let Some(v) = visible_ascii(value) {
                headers.insert(name.to_ascii_lowercase(), v.to_owned());
            }
        }
        RequestPart {
            uri: normalized_uri(base, id, head.target.split_once('?').map(|(_, q)| q)),
            method: method.to_owned(),
            remote_addr: remote_addr(head, peer.ip(), behind_proxy),
            headers,
        }
    }
}

/// The header value as text if every byte is visible ASCII, space or tab.
fn visible_ascii(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// `<base>/` or `<base>/<id>/`: rustus normalises paths to end with a slash.
pub fn normalized_uri(base: &str, id: Option<&str>, query: Option<&str>) -> String {
    let mut uri = String::with_capacity(base.len() + 40);
    uri.push_str(base);
    uri.push('/');
    if let Some(id) = id {
        uri.push_str(id);
        uri.push('/');
    }
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(q);
    }
    uri
}

/// The client address: the peer's IP; with `--behind-proxy`, the first `for=` of
/// `Forwarded`, else the first item of `X-Forwarded-For`, else the peer's IP. A port
/// (`1.2.3.4:5`, `"[::1]:5"`) and IPv6 brackets are removed.
pub fn remote_addr(head: &RequestHead, peer: IpAddr, behind_proxy: bool) -> String {
    if behind_proxy {
        let forwarded = head.header_str("forwarded").and_then(|v| {
            v.split([',', ';'])
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        });
        let xff = || {
            head.header_str("x-forwarded-for")
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
        };
        if let Some(addr) = forwarded.or_else(xff).filter(|a| !a.is_empty()) {
            return bare_ip(&addr);
        }
    }
    peer.to_string()
}

/// `1.2.3.4:5` -> `1.2.3.4`, `[::1]:5` / `[::1]` -> `::1`; anything else as is (e.g. an
/// obfuscated `_hidden` identifier or `unknown`).
fn bare_ip(addr: &str) -> String {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return sa.ip().to_string();
    }
    let unbracketed = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    match unbracketed.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => addr.to_owned(),
    }
}

/// The message for one event, in `format`.
pub fn render(format: Format, upload: &UploadInfo, request: &RequestPart) -> String {
    let metadata: BTreeMap<&str, &str> = upload.metadata.iter().collect();
    let result = match format {
        Format::Default => serde_json::to_string(&DefaultMessage {
            request: DefaultRequest {
                uri: &request.uri,
                headers: &request.headers,
                method: &request.method,
                remote_addr: &request.remote_addr,
            },
            upload: upload_part(upload, &metadata),
        }),
        Format::V2 => serde_json::to_string(&V2Message {
            request: V2Request {
                headers: &request.headers,
                method: &request.method,
                remote_addr: &request.remote_addr,
                uri: &request.uri,
            },
            upload: upload_part(upload, &metadata),
        }),
        Format::Tusd => serde_json::to_string(&TusdMessage {
            http_request: TusdRequest {
                header: request
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), [v.as_str()]))
                    .collect(),
                method: &request.method,
                remote_addr: &request.remote_addr,
                uri: &request.uri,
            },
            upload: TusdUpload {
                id: &upload.id,
                is_final: upload.is_final,
                is_partial: upload.is_partial,
                metadata: &metadata,
                offset: upload.offset,
                partial_uploads: upload.parts.as_deref(),
                size: upload.length,
                size_is_deferred: upload.deferred_size,
                storage: TusdStorage {
                    path: upload.path.as_deref(),
                    kind: &upload.storage,
                },
            },
        }),
    };
    // Cannot fail: strings, numbers, booleans, nulls, lists and string maps only.
    result.unwrap_or_default()
}

fn upload_part<'a>(upload: &'a UploadInfo, metadata: &'a BTreeMap<&'a str, &'a str>) -> Upload<'a> {
    Upload {
        created_at: upload.created_at,
        deferred_size: upload.deferred_size,
        id: &upload.id,
        is_final: upload.is_final,
        is_partial: upload.is_partial,
        length: upload.length,
        metadata,
        offset: upload.offset,
        parts: upload.parts.as_deref(),
        path: upload.path.as_deref(),
        storage: &upload.storage,
    }
}

// Field order below is the alphabetical (byte) order of the serialised keys.

#[derive(Serialize)]
struct DefaultMessage<'a> {
    request: DefaultRequest<'a>,
    upload: Upload<'a>,
}

#[derive(Serialize)]
struct DefaultRequest<'a> {
    #[serde(rename = "URI")]
    uri: &'a str,
    headers: &'a BTreeMap<String, String>,
    method: &'a str,
    remote_addr: &'a str,
}

#[derive(Serialize)]
struct V2Message<'a> {
    request: V2Request<'a>,
    upload: Upload<'a>,
}

#[derive(Serialize)]
struct V2Request<'a> {
    headers: &'a BTreeMap<String, String>,
    method: &'a str,
    remote_addr: &'a str,
    uri: &'a str,
}

#[derive(Serialize)]
struct Upload<'a> {
    created_at: i64,
    deferred_size: bool,
    id: &'a str,
    is_final: bool,
    is_partial: bool,
    length: Option<u64>,
    metadata: &'a BTreeMap<&'a str, &'a str>,
    offset: u64,
    parts: Option<&'a [String]>,
    path: Option<&'a str>,
    storage: &'a str,
}

#[derive(Serialize)]
struct TusdMessage<'a> {
    #[serde(rename = "HTTPRequest")]
    http_request: TusdRequest<'a>,
    #[serde(rename = "Upload")]
    upload: TusdUpload<'a>,
}

#[derive(Serialize)]
struct TusdRequest<'a> {
    #[serde(rename = "Header")]
    header: BTreeMap<&'a str, [&'a str; 1]>,
    #[serde(rename = "Method")]
    method: &'a str,
    #[serde(rename = "RemoteAddr")]
    remote_addr: &'a str,
    #[serde(rename = "URI")]
    uri: &'a str,
}

#[derive(Serialize)]
struct TusdUpload<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "IsFinal")]
    is_final: bool,
    #[serde(rename = "IsPartial")]
    is_partial: bool,
    #[serde(rename = "MetaData")]
    metadata: &'a BTreeMap<&'a str, &'a str>,
    #[serde(rename = "Offset")]
    offset: u64,
    #[serde(rename = "PartialUploads")]
    partial_uploads: Option<&'a [String]>,
    #[serde(rename = "Size")]
    size: Option<u64>,
    #[serde(rename = "SizeIsDeferred")]
    size_is_deferred: bool,
    #[serde(rename = "Storage")]
    storage: TusdStorage<'a>,
}

#[derive(Serialize)]
struct TusdStorage<'a> {
    #[serde(rename = "Path")]
    path: Option<&'a str>,
    #[serde(rename = "Type")]
    kind: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_head;
    use crate::tus::metadata::Metadata;

    const ID: &str = "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01";

    fn head(raw: &str) -> RequestHead {
        parse_head(raw.as_bytes()).unwrap().unwrap().0
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:50000".parse().unwrap()
    }

    /// The request of the spec's `default` example (§3.3).
    fn spec_request() -> RequestPart {
        let h = head(
            "POST /files HTTP/1.1\r\nHost: 127.0.0.1:18081\r\nUser-Agent: curl/7.88.1\r\n\
             Accept: */*\r\nAuthorization: Bearer x\r\nUpload-Length: 10\r\n\
             Upload-Metadata: filename dGVzdC50eHQ=\r\n\r\n",
        );
        RequestPart::new(&h, "POST", "/files", None, peer(), false)
    }

    fn spec_upload() -> UploadInfo {
        let mut md = Metadata::new();
        md.insert("filename".into(), "test.txt".into());
        UploadInfo::new(ID.into(), Some(10), 1_795_801_195, md)
    }

    #[test]
    fn default_format_matches_rustus() {
        let want = format!(
            r#"{{"request":{{"URI":"/files/","headers":{{"accept":"*/*","authorization":"Bearer x","host":"127.0.0.1:18081","upload-length":"10","upload-metadata":"filename dGVzdC50eHQ=","user-agent":"curl/7.88.1"}},"method":"POST","remote_addr":"127.0.0.1"}},"upload":{{"created_at":1795801195,"deferred_size":false,"id":"{ID}","is_final":false,"is_partial":false,"length":10,"metadata":{{"filename":"test.txt"}},"offset":0,"parts":null,"path":null,"storage":"file_storage"}}}}"#
        );
        assert_eq!(
            render(Format::Default, &spec_upload(), &spec_request()),
            want
        );
    }

    #[test]
    fn v2_format_is_default_with_lowercase_uri() {
        let v2 = render(Format::V2, &spec_upload(), &spec_request());
        let want = format!(
            r#"{{"request":{{"headers":{{"accept":"*/*","authorization":"Bearer x","host":"127.0.0.1:18081","upload-length":"10","upload-metadata":"filename dGVzdC50eHQ=","user-agent":"curl/7.88.1"}},"method":"POST","remote_addr":"127.0.0.1","uri":"/files/"}},"upload":{{"created_at":1795801195,"deferred_size":false,"id":"{ID}","is_final":false,"is_partial":false,"length":10,"metadata":{{"filename":"test.txt"}},"offset":0,"parts":null,"path":null,"storage":"file_storage"}}}}"#
        );
        assert_eq!(v2, want);
    }

    #[test]
    fn tusd_format_matches_rustus() {
        // The spec's tusd example: behind a proxy, with Origin and X-Forwarded-For.
        let h = head(
            "POST /api/up HTTP/1.1\r\nHost: 127.0.0.1:18082\r\nAccept: */*\r\n\
             Origin: https://a.example.com\r\nUpload-Length: 4\r\n\
             X-Forwarded-For: 9.9.9.9, 10.0.0.1\r\n\r\n",
        );
        let req = RequestPart::new(&h, "POST", "/api/up", None, peer(), true);
        let upload = UploadInfo::new(ID.into(), Some(4), 1, Metadata::new());
        let want = format!(
            r#"{{"HTTPRequest":{{"Header":{{"accept":["*/*"],"host":["127.0.0.1:18082"],"origin":["https://a.example.com"],"upload-length":["4"],"x-forwarded-for":["9.9.9.9, 10.0.0.1"]}},"Method":"POST","RemoteAddr":"9.9.9.9","URI":"/api/up/"}},"Upload":{{"ID":"{ID}","IsFinal":false,"IsPartial":false,"MetaData":{{}},"Offset":0,"PartialUploads":null,"Size":4,"SizeIsDeferred":false,"Storage":{{"Path":null,"Type":"file_storage"}}}}}}"#
        );
        assert_eq!(render(Format::Tusd, &upload, &req), want);
    }

    #[test]
    fn deferred_path_parts_and_sorted_metadata() {
        let mut md = Metadata::new();
        md.insert("z".into(), "1".into());
        md.insert("a".into(), "\"q\"\n".into());
        let mut up = UploadInfo::new(ID.into(), None, 7, md);
        up.offset = 3;
        up.path = Some("/d/x".into());
        up.parts = Some(vec!["p1".into()]);
        let req = spec_request();
        let v: serde_json::Value =
            serde_json::from_str(&render(Format::Default, &up, &req)).unwrap();
        let u = &v["upload"];
        assert_eq!(u["length"], serde_json::Value::Null);
        assert_eq!(u["deferred_size"], true);
        assert_eq!(u["path"], "/d/x");
        assert_eq!(u["parts"], serde_json::json!(["p1"]));
        assert_eq!(u["offset"], 3);
        let text = render(Format::Default, &up, &req);
        assert!(
            text.contains(r#""metadata":{"a":"\"q\"\n","z":"1"}"#),
            "{text}"
        );
        let t: serde_json::Value = serde_json::from_str(&render(Format::Tusd, &up, &req)).unwrap();
        assert_eq!(t["Upload"]["Size"], serde_json::Value::Null);
        assert_eq!(t["Upload"]["SizeIsDeferred"], true);
        assert_eq!(t["Upload"]["Storage"]["Path"], "/d/x");
        assert_eq!(t["Upload"]["PartialUploads"], serde_json::json!(["p1"]));
    }

    #[test]
    fn headers_last_value_wins_and_non_ascii_left_out() {
        let raw = b"PATCH /files/x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-Bin: caf\xc3\xa9\r\nX-Tab: a\tb\r\n\r\n";
        let h = parse_head(raw).unwrap().unwrap().0;
        let req = RequestPart::new(&h, "PATCH", "/files", Some(ID), peer(), false);
        assert_eq!(req.headers.get("x-a").map(String::as_str), Some("2"));
        assert!(!req.headers.contains_key("x-bin"));
        assert_eq!(req.headers.get("x-tab").map(String::as_str), Some("a\tb"));
        assert_eq!(req.uri, format!("/files/{ID}/"));
        assert_eq!(req.method, "PATCH");
    }

    #[test]
    fn uris() {
        assert_eq!(normalized_uri("/files", None, None), "/files/");
        assert_eq!(normalized_uri("", None, None), "/");
        assert_eq!(normalized_uri("", Some("i"), None), "/i/");
        assert_eq!(
            normalized_uri("/a/b", Some("i"), Some("x=1")),
            "/a/b/i/?x=1"
        );
    }

    #[test]
    fn remote_addresses() {
        let p: IpAddr = "10.1.2.3".parse().unwrap();
        let cases: &[(&str, bool, &str)] = &[
            ("", false, "10.1.2.3"),
            ("", true, "10.1.2.3"),
            ("X-Forwarded-For: 9.9.9.9, 10.0.0.1\r\n", false, "10.1.2.3"),
            ("X-Forwarded-For: 9.9.9.9, 10.0.0.1\r\n", true, "9.9.9.9"),
            ("X-Forwarded-For: 9.9.9.9:1234\r\n", true, "9.9.9.9"),
            (
                "Forwarded: for=192.0.2.60;proto=http;by=203.0.113.43\r\nX-Forwarded-For: 9.9.9.9\r\n",
                true,
                "192.0.2.60",
            ),
            ("Forwarded: proto=https;For=\"[2001:db8::1]:4711\"\r\n", true, "2001:db8::1"),
            ("Forwarded: for=_hidden, for=1.2.3.4\r\n", true, "_hidden"),
            ("Forwarded: proto=https\r\nX-Forwarded-For: 8.8.8.8\r\n", true, "8.8.8.8"),
        ];
        for (extra, proxy, want) in cases {
            let h = head(&format!("GET / HTTP/1.1\r\nHost: h\r\n{extra}\r\n"));
            assert_eq!(remote_addr(&h, p, *proxy), *want, "{extra:?} {proxy}");
        }
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            remote_addr(&head("GET / HTTP/1.1\r\n\r\n"), v6, false),
            "::1"
        );
    }
}
