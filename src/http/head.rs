//! Request heads: the request line and header section (RFC 9112 §2–§5), parsed by
//! httparse, then framed per RFC 9112 §6.
//!
//! [`parse_head`] is a pure function over the bytes received so far. It never
//! allocates until a head is complete, never looks past the end of the head, and
//! never hands httparse more than [`MAX_HEAD_BYTES`], which also bounds the cost of
//! re-parsing a growing buffer on every read.

use std::fmt;

use crate::limits::{MAX_HEADERS, MAX_HEAD_BYTES, MAX_URI_BYTES};

/// A request method. Methods are case-sensitive (RFC 9110 §9.1), so `get` is
/// [`Method::Other`], not [`Method::Get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// Any other token, exactly as sent.
    Other(String),
}

impl Method {
    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(s) => s,
        }
    }

    /// Maps a method token to a [`Method`], case-sensitively.
    pub fn parse(s: &str) -> Method {
        // RFC 9110 §9.1: "The method token is case-sensitive".
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The HTTP version of a request; httparse only accepts these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    Http11,
}

/// How the body of a request is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: neither `Content-Length` nor `Transfer-Encoding` was sent.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// The body uses the chunked transfer coding; see [`crate::http::body`].
    Chunked,
}

/// A parsed and framed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request-target exactly as sent (path and optional `?query`); at most
    /// [`MAX_URI_BYTES`] long and always valid UTF-8 (httparse checks both).
    pub target: String,
    /// The protocol version from the request line.
    pub version: Version,
    /// Header fields in the order received. Names are lower-cased ASCII; values are
    /// the raw bytes with leading and trailing whitespace (OWS) removed.
    pub headers: Vec<(String, Vec<u8>)>,
    /// How the body is framed.
    pub body: BodyKind,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// Whether an HTTP/1.1 client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The value of the first field named `name` (compared case-insensitively;
    /// callers pass lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Like [`RequestHead::header`], but only if the value is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The request-target without its `?query`.
    pub fn path(&self) -> &str {
        match self.target.split_once('?') {
            Some((path, _query)) => path,
            None => &self.target,
        }
    }

    /// Every value of the fields named `name` (lower case), in order.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Why a request head was refused. Each maps to one status; the connection is
/// closed after the response because the framing of what follows is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head did not end within [`MAX_HEAD_BYTES`].
    TooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    TooManyHeaders,
    /// The request-target is longer than [`MAX_URI_BYTES`].
    UriTooLong,
    /// The request line or a header field does not follow the grammar, or the
    /// framing is faulty.
    Malformed,
    /// A `Content-Length` value is not a decimal number that fits in a `u64`.
    BadContentLength,
    /// `Content-Length` values disagree, or both `Content-Length` and
    /// `Transfer-Encoding` were sent.
    ConflictingLength,
    /// A transfer coding other than `chunked` was applied.
    UnsupportedTransferEncoding,
    /// An HTTP version other than 1.0 and 1.1.
    UnsupportedVersion,
}

impl HeadError {
    /// The response status for this error.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UriTooLong => 414,
            HeadError::Malformed | HeadError::BadContentLength | HeadError::ConflictingLength => {
                400
            }
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::UnsupportedVersion => 505,
        }
    }

    /// One short human-readable line; not API, may change.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::TooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::UriTooLong => "request-target too long",
            HeadError::Malformed => "malformed request head",
            HeadError::BadContentLength => "invalid Content-Length",
            HeadError::ConflictingLength => "conflicting message length",
            HeadError::UnsupportedTransferEncoding => "unsupported transfer coding",
            HeadError::UnsupportedVersion => "HTTP version not supported",
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HeadError {}

/// Parses the request head at the start of `buf`, everything received so far for
/// this request.
///
/// * `Ok(None)`: the head is incomplete; read more and call again with the longer
///   buffer.
/// * `Ok(Some((head, n)))`: `buf[..n]` is the head including its final blank line;
///   `buf[n..]` (body or pipelined bytes) is not looked at.
/// * `Err(e)`: refuse with `e.status()` and close the connection.
///
/// The outcome depends only on the bytes, not on how they were split across reads:
/// a prefix of a stream never yields an error the whole stream would not.
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // A head that has not ended within the limit is refused (431), so httparse never
    // needs to see more than MAX_HEAD_BYTES. A complete head longer than the limit
    // is therefore seen as incomplete here, and refused below.
    let window = buf.get(..MAX_HEAD_BYTES).unwrap_or(buf);

    // RFC 9112 §3.2 / RFC 9110 §4.1: refuse an over-long request-target with 414 as
    // soon as its length is known, long before the head limit is reached.
    check_target_length(window)?;

    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => build(&req, n).map(|head| Some((head, n))),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => match classify_version(window) {
            Some(e) => Err(e),
            None if buf.len() > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
            None => Ok(None),
        },
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Refuses a request-target longer than [`MAX_URI_BYTES`] (414), but only once the
/// method and the first `MAX_URI_BYTES + 1` bytes of the target have been checked
/// by httparse, so that garbage still gets 400 and the answer does not depend on
/// how the bytes were split.
fn check_target_length(window: &[u8]) -> Result<(), HeadError> {
    // RFC 9112 §2.2: empty lines before the request line are skipped (httparse
    // accepts CRLF and bare LF there; a stray CR is its error, found below).
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let line = window.get(start..).unwrap_or_default();
    // RFC 9112 §3: request-line = method SP request-target SP HTTP-version. A
    // method never contains SP, and a target never contains SP, CR or LF.
    let Some(method_end) = memchr::memchr(b' ', line) else {
        return Ok(());
    };
    let target_start = start + method_end + 1;
    let rest = window.get(target_start..).unwrap_or_default();
    let target_len = memchr::memchr3(b' ', b'\r', b'\n', rest).unwrap_or(rest.len());
    if target_len <= MAX_URI_BYTES {
        return Ok(());
    }
    // The target is known to be too long; make sure what precedes the limit is a
    // plausible request line at all.
    let probe = window
        .get(..target_start + MAX_URI_BYTES + 1)
        .unwrap_or(window);
    let mut fields = [httparse::EMPTY_HEADER; 0];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(probe) {
        Ok(httparse::Status::Partial) => Err(HeadError::UriTooLong),
        // Complete is impossible (the probe ends inside the target); either way
        // httparse found the request line bad before the target ended.
        Ok(httparse::Status::Complete(_)) | Err(_) => Err(HeadError::Malformed),
    }
}

/// httparse reports every unknown version as `Error::Version`. A syntactically
/// valid `HTTP/x.y` gets 505; any other token is a malformed request line. A version
/// token that the buffer ends inside, and that may still become valid, is decided only
/// when it is complete (`None`: need more), so the answer never depends on how the bytes
/// were split (a fuzz finding: `fuzz/regressions/head/`).
fn classify_version(window: &[u8]) -> Option<HeadError> {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let line = window.get(start..).unwrap_or_default();
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(_method), Some(_target), Some(rest)) = (parts.next(), parts.next(), parts.next())
    else {
        return Some(HeadError::Malformed);
    };
    let end = memchr::memchr3(b' ', b'\r', b'\n', rest);
    let version = rest.get(..end.unwrap_or(rest.len())).unwrap_or_default();
    // RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT
    let shape: [fn(u8) -> bool; 8] = [
        |b| b == b'H',
        |b| b == b'T',
        |b| b == b'T',
        |b| b == b'P',
        |b| b == b'/',
        |b| b.is_ascii_digit(),
        |b| b == b'.',
        |b| b.is_ascii_digit(),
    ];
    let matches =
        version.len() <= shape.len() && version.iter().zip(shape.iter()).all(|(&b, ok)| ok(b));
    if end.is_none() {
        // The buffer ends inside the token: wait while it can still become valid.
        return (!matches).then_some(HeadError::Malformed);
    }
    if matches && version.len() == shape.len() {
        Some(HeadError::UnsupportedVersion)
    } else {
        Some(HeadError::Malformed)
    }
}

/// Builds the owned head from a complete httparse result and frames it.
fn build(req: &httparse::Request<'_, '_>, n: usize) -> Result<RequestHead, HeadError> {
    if n > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    if target.len() > MAX_URI_BYTES {
        return Err(HeadError::UriTooLong);
    }
    let version = match version {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HeadError::UnsupportedVersion),
    };
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), trim_ows(h.value).to_vec()))
        .collect();
    let mut head = RequestHead {
        method: Method::parse(method),
        target: target.to_owned(),
        version,
        headers,
        body: BodyKind::None,
        keep_alive: false,
        expect_continue: false,
    };
    head.body = framing(&head)?;
    head.keep_alive = keep_alive(&head);
    head.expect_continue = expect_continue(&head);
    Ok(head)
}

/// Decides how the body is delimited.
fn framing(head: &RequestHead) -> Result<BodyKind, HeadError> {
    let has_te = head.values("transfer-encoding").next().is_some();
    let has_cl = head.values("content-length").next().is_some();

    if has_te {
        // RFC 9112 §6.3 (3): a message with both Transfer-Encoding and
        // Content-Length "ought to be handled as an error" (request smuggling).
        if has_cl {
            return Err(HeadError::ConflictingLength);
        }
        // RFC 9112 §6.1: a server that receives an HTTP/1.0 message containing
        // Transfer-Encoding MUST treat the framing as faulty.
        if head.version == Version::Http10 {
            return Err(HeadError::Malformed);
        }
        return transfer_coding(head);
    }

    if has_cl {
        // RFC 9112 §6.3 (5), (6): a valid Content-Length gives the body length.
        return content_length(head).map(BodyKind::Length);
    }

    // RFC 9112 §6.3 (7): a request with neither field has a zero-length body.
    Ok(BodyKind::None)
}

/// Reads every `Transfer-Encoding` field as one list of codings.
fn transfer_coding(head: &RequestHead) -> Result<BodyKind, HeadError> {
    // RFC 9110 §5.3: repeated fields combine into one comma-separated list;
    // RFC 9110 §5.6.1: empty list elements are ignored.
    let codings: Vec<&[u8]> = head
        .values("transfer-encoding")
        .flat_map(list_elements)
        .collect();
    let Some((last, earlier)) = codings.split_last() else {
        // A Transfer-Encoding field with no coding at all: the framing is unknown.
        return Err(HeadError::Malformed);
    };
    // RFC 9112 §6.3 (4): if chunked is not the final coding of a request, the body
    // length cannot be determined; the server MUST respond 400 and close.
    if !is_chunked(last) {
        return Err(HeadError::Malformed);
    }
    for coding in earlier {
        // RFC 9112 §7: a sender MUST NOT apply chunked more than once.
        if is_chunked(coding) {
            return Err(HeadError::Malformed);
        }
    }
    // RFC 9112 §6.1: a server that receives a transfer coding it does not
    // understand SHOULD respond 501. Only chunked is implemented.
    if !earlier.is_empty() {
        return Err(HeadError::UnsupportedTransferEncoding);
    }
    Ok(BodyKind::Chunked)
}

/// `chunked` (RFC 9112 §7: coding names are case-insensitive; chunked takes no
/// parameters, so `chunked;x=y` is some other, unknown coding).
fn is_chunked(coding: &[u8]) -> bool {
    coding.eq_ignore_ascii_case(b"chunked")
}

/// Reads every `Content-Length` field.
fn content_length(head: &RequestHead) -> Result<u64, HeadError> {
    let mut values = Vec::new();
    for field in head.values("content-length") {
        // RFC 9112 §6.3 (5): a comma-separated list is accepted only if every
        // element is valid and all are the same. Empty elements are not valid here.
        for element in field.split(|&b| b == b',') {
            // RFC 9110 §8.6: Content-Length = 1*DIGIT (no sign, no inner spaces).
            let value = parse_decimal(trim_ows(element)).ok_or(HeadError::BadContentLength)?;
            values.push(value);
        }
    }
    let Some((&first, rest)) = values.split_first() else {
        return Err(HeadError::BadContentLength);
    };
    if rest.iter().any(|&v| v != first) {
        // RFC 9112 §6.3 (5): differing values make the framing invalid.
        return Err(HeadError::ConflictingLength);
    }
    Ok(first)
}

/// `1*DIGIT` as a `u64`; `None` if empty, not all digits, or overflowing.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Whether the connection persists after this request.
fn keep_alive(head: &RequestHead) -> bool {
    // RFC 9112 §9.3: the `Connection` field is a list of case-insensitive options.
    let mut close = false;
    let mut keep = false;
    for option in head.values("connection").flat_map(list_elements) {
        if option.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if option.eq_ignore_ascii_case(b"keep-alive") {
            keep = true;
        }
    }
    match head.version {
        // RFC 9112 §9.3: HTTP/1.1 persists unless the "close" option is present.
        Version::Http11 => !close,
        // RFC 9112 §9.3: HTTP/1.0 persists only with "keep-alive" (and no "close").
        Version::Http10 => keep && !close,
    }
}

/// Whether the client waits for `100 Continue` before sending the body.
fn expect_continue(head: &RequestHead) -> bool {
    // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be
    // ignored; the expectation token is case-insensitive.
    head.version == Version::Http11
        && head
            .values("expect")
            .flat_map(list_elements)
            .any(|e| e.eq_ignore_ascii_case(b"100-continue"))
}

/// The non-empty, OWS-trimmed elements of a comma-separated list (RFC 9110 §5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Strips leading and trailing SP / HTAB (RFC 9110 §5.6.3 OWS).
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(buf: &[u8]) -> (RequestHead, usize) {
        match parse_head(buf) {
            Ok(Some(v)) => v,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn err(buf: &[u8]) -> HeadError {
        match parse_head(buf) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn with_headers(version: &str, fields: &str) -> Vec<u8> {
        format!("PATCH /files/abc {version}\r\nHost: x\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn complete_head() {
        let buf = b"PATCH /files/abc?x=1 HTTP/1.1\r\nHost: example.com\r\nTus-Resumable: 1.0.0\r\nContent-Length: 5\r\n\r\n";
        let (head, n) = ok(buf);
        assert_eq!(n, buf.len());
        assert_eq!(head.method, Method::Patch);
        assert_eq!(head.target, "/files/abc?x=1");
        assert_eq!(head.path(), "/files/abc");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.body, BodyKind::Length(5));
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
        assert_eq!(
            head.headers,
            vec![
                ("host".to_owned(), b"example.com".to_vec()),
                ("tus-resumable".to_owned(), b"1.0.0".to_vec()),
                ("content-length".to_owned(), b"5".to_vec()),
            ]
        );
    }

    #[test]
    fn pipelined_bytes_are_not_consumed() {
        let first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut buf = first.to_vec();
        buf.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, n) = ok(&buf);
        assert_eq!(n, first.len());
        assert_eq!(head.path(), "/a");
        let (head, m) = ok(&buf[n..]);
        assert_eq!(head.path(), "/b");
        assert_eq!(n + m, buf.len());

        let mut buf = b"POST /files HTTP/1.1\r\nContent-Length: 3\r\n\r\n".to_vec();
        let head_len = buf.len();
        buf.extend_from_slice(b"abc");
        let (head, n) = ok(&buf);
        assert_eq!(n, head_len);
        assert_eq!(head.body, BodyKind::Length(3));
    }

    #[test]
    fn every_prefix_is_partial() {
        let buf = b"PATCH /files/abc HTTP/1.1\r\nHost: x\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n\r\n";
        for i in 0..buf.len() {
            assert_eq!(parse_head(&buf[..i]), Ok(None), "prefix {i}");
        }
        let (_, n) = ok(buf);
        assert_eq!(n, buf.len());
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        let (head, n) = ok(buf);
        assert_eq!(head.method, Method::Get);
        assert_eq!(n, buf.len() - 4);
        assert_eq!(parse_head(b"\r\n"), Ok(None));
        assert_eq!(err(b"\rGET / HTTP/1.1\r\n\r\n"), HeadError::Malformed);
    }

    #[test]
    fn bare_lf_line_endings() {
        // RFC 9112 §2.2: a recipient MAY recognise a single LF as a line terminator;
        // httparse does, and `n` still covers exactly the head.
        let buf = b"GET / HTTP/1.1\nHost: x\r\n\nrest";
        let (head, n) = ok(buf);
        assert_eq!(n, buf.len() - 4);
        assert_eq!(head.header("host"), Some(&b"x"[..]));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n\r"), Ok(None));
    }

    #[test]
    fn methods_are_case_sensitive() {
        for (text, method) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("PATCH", Method::Patch),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("get", Method::Other("get".to_owned())),
            ("BREW", Method::Other("BREW".to_owned())),
        ] {
            assert_eq!(Method::parse(text), method);
            assert_eq!(method.as_str(), text);
        }
        let (head, _) = ok(b"patch / HTTP/1.1\r\n\r\n");
        assert_eq!(head.method, Method::Other("patch".to_owned()));
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "Connection: close\r\n", false),
            ("HTTP/1.1", "Connection: CLOSE\r\n", false),
            ("HTTP/1.1", "Connection: keep-alive\r\n", true),
            ("HTTP/1.1", "Connection: Upgrade, Close\r\n", false),
            (
                "HTTP/1.1",
                "Connection: upgrade\r\nConnection: close\r\n",
                false,
            ),
            ("HTTP/1.1", "Connection: closed\r\n", true),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "Connection: keep-alive\r\n", true),
            ("HTTP/1.0", "Connection: Keep-Alive\r\n", true),
            ("HTTP/1.0", "Connection: keep-alive, Upgrade\r\n", true),
            ("HTTP/1.0", "Connection: Upgrade ,  keep-alive \r\n", true),
            ("HTTP/1.0", "Connection: keep-alive, close\r\n", false),
            ("HTTP/1.0", "Connection: close\r\n", false),
        ];
        for &(version, fields, expected) in cases {
            let (head, _) = ok(&with_headers(version, fields));
            assert_eq!(head.keep_alive, expected, "{version} {fields:?}");
        }
    }

    #[test]
    fn expect_continue() {
        let cases: &[(&str, &str, bool)] = &[
            ("HTTP/1.1", "Expect: 100-continue\r\n", true),
            ("HTTP/1.1", "Expect: 100-Continue\r\n", true),
            ("HTTP/1.1", "expect:   100-CONTINUE  \r\n", true),
            ("HTTP/1.1", "Expect: something-else\r\n", false),
            ("HTTP/1.1", "", false),
            ("HTTP/1.0", "Expect: 100-continue\r\n", false),
        ];
        for &(version, fields, expected) in cases {
            let (head, _) = ok(&with_headers(version, fields));
            assert_eq!(head.expect_continue, expected, "{version} {fields:?}");
        }
    }

    #[test]
    fn framing_matrix() {
        use BodyKind::*;
        use HeadError::*;
        let cases: &[(&str, &str, Result<BodyKind, HeadError>)] = &[
            ("HTTP/1.1", "", Ok(None)),
            ("HTTP/1.1", "Content-Length: 0\r\n", Ok(Length(0))),
            ("HTTP/1.1", "Content-Length: 42\r\n", Ok(Length(42))),
            ("HTTP/1.1", "Content-Length:   42  \r\n", Ok(Length(42))),
            ("HTTP/1.1", "Content-Length: 007\r\n", Ok(Length(7))),
            (
                "HTTP/1.1",
                "Content-Length: 18446744073709551615\r\n",
                Ok(Length(u64::MAX)),
            ),
            (
                "HTTP/1.1",
                "Content-Length: 18446744073709551616\r\n",
                Err(BadContentLength),
            ),
            (
                "HTTP/1.1",
                "Content-Length: 99999999999999999999999999\r\n",
                Err(BadContentLength),
            ),
            ("HTTP/1.1", "Content-Length: +5\r\n", Err(BadContentLength)),
            ("HTTP/1.1", "Content-Length: -1\r\n", Err(BadContentLength)),
            ("HTTP/1.1", "Content-Length: 5 5\r\n", Err(BadContentLength)),
            ("HTTP/1.1", "Content-Length: 0x5\r\n", Err(BadContentLength)),
            ("HTTP/1.1", "Content-Length: 5.0\r\n", Err(BadContentLength)),
            ("HTTP/1.1", "Content-Length:\r\n", Err(BadContentLength)),
            ("HTTP/1.1", "Content-Length: 5,\r\n", Err(BadContentLength)),
            ("HTTP/1.1", "Content-Length: 5, 5\r\n", Ok(Length(5))),
            (
                "HTTP/1.1",
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                Ok(Length(5)),
            ),
            (
                "HTTP/1.1",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                Err(ConflictingLength),
            ),
            (
                "HTTP/1.1",
                "Content-Length: 5, 6\r\n",
                Err(ConflictingLength),
            ),
            ("HTTP/1.0", "Content-Length: 5\r\n", Ok(Length(5))),
            ("HTTP/1.1", "Transfer-Encoding: chunked\r\n", Ok(Chunked)),
            ("HTTP/1.1", "Transfer-Encoding: Chunked\r\n", Ok(Chunked)),
            (
                "HTTP/1.1",
                "Transfer-Encoding: , chunked ,\r\n",
                Ok(Chunked),
            ),
            (
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                Err(ConflictingLength),
            ),
            (
                "HTTP/1.1",
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                Err(ConflictingLength),
            ),
            (
                "HTTP/1.1",
                "Transfer-Encoding: gzip, chunked\r\n",
                Err(UnsupportedTransferEncoding),
            ),
            (
                "HTTP/1.1",
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                Err(UnsupportedTransferEncoding),
            ),
            // Chunked not final: the length cannot be determined (400, not 501).
            ("HTTP/1.1", "Transfer-Encoding: gzip\r\n", Err(Malformed)),
            (
                "HTTP/1.1",
                "Transfer-Encoding: chunked, gzip\r\n",
                Err(Malformed),
            ),
            (
                "HTTP/1.1",
                "Transfer-Encoding: chunked, chunked\r\n",
                Err(Malformed),
            ),
            (
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                Err(Malformed),
            ),
            (
                "HTTP/1.1",
                "Transfer-Encoding: chunked;q=1\r\n",
                Err(Malformed),
            ),
            ("HTTP/1.1", "Transfer-Encoding:\r\n", Err(Malformed)),
            (
                "HTTP/1.1",
                "Transfer-Encoding: xchunked\r\n",
                Err(Malformed),
            ),
            ("HTTP/1.0", "Transfer-Encoding: chunked\r\n", Err(Malformed)),
            ("HTTP/1.0", "Transfer-Encoding: gzip\r\n", Err(Malformed)),
        ];
        for &(version, fields, expected) in cases {
            let got = parse_head(&with_headers(version, fields)).map(|r| r.map(|(h, _)| h.body));
            assert_eq!(got, expected.map(Some), "{version} {fields:?}");
        }
    }

    #[test]
    fn head_size_limit() {
        // Exactly MAX_HEAD_BYTES is accepted.
        let prefix = b"GET / HTTP/1.1\r\nX-Pad: ";
        let suffix = b"\r\n\r\n";
        let pad = MAX_HEAD_BYTES - prefix.len() - suffix.len();
        let mut buf = prefix.to_vec();
        buf.resize(prefix.len() + pad, b'a');
        buf.extend_from_slice(suffix);
        assert_eq!(buf.len(), MAX_HEAD_BYTES);
        let (_, n) = ok(&buf);
        assert_eq!(n, MAX_HEAD_BYTES);
        // Bytes after a head of exactly the limit do not matter.
        buf.extend_from_slice(b"body");
        assert_eq!(ok(&buf).1, MAX_HEAD_BYTES);

        // One byte more, complete.
        let mut big = prefix.to_vec();
        big.resize(prefix.len() + pad + 1, b'a');
        big.extend_from_slice(suffix);
        assert_eq!(big.len(), MAX_HEAD_BYTES + 1);
        assert_eq!(err(&big), HeadError::TooLarge);
        // Its first MAX_HEAD_BYTES bytes are merely incomplete.
        assert_eq!(parse_head(&big[..MAX_HEAD_BYTES]), Ok(None));

        // Partial and over the limit.
        let mut partial = prefix.to_vec();
        partial.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(err(&partial), HeadError::TooLarge);
        assert_eq!(parse_head(&partial[..MAX_HEAD_BYTES]), Ok(None));
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn too_many_headers() {
        let mut fields = String::new();
        // The request line plus Host from `with_headers`, then MAX_HEADERS - 1 more.
        for i in 0..MAX_HEADERS - 1 {
            fields.push_str(&format!("X-H{i}: v\r\n"));
        }
        let (head, _) = ok(&with_headers("HTTP/1.1", &fields));
        assert_eq!(head.headers.len(), MAX_HEADERS);
        fields.push_str("X-One-More: v\r\n");
        let e = err(&with_headers("HTTP/1.1", &fields));
        assert_eq!(e, HeadError::TooManyHeaders);
        assert_eq!(e.status(), 431);
    }

    #[test]
    fn uri_too_long() {
        let at_limit = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_BYTES - 1));
        let (head, _) = ok(at_limit.as_bytes());
        assert_eq!(head.target.len(), MAX_URI_BYTES);

        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_URI_BYTES)
        );
        assert_eq!(err(long.as_bytes()), HeadError::UriTooLong);
        assert_eq!(HeadError::UriTooLong.status(), 414);
        // Refused as soon as the limit is passed, long before the head limit.
        let target_start = 4;
        let cut = target_start + MAX_URI_BYTES + 1;
        assert_eq!(err(&long.as_bytes()[..cut]), HeadError::UriTooLong);
        for i in [0, 10, cut - 1] {
            assert_eq!(parse_head(&long.as_bytes()[..i]), Ok(None), "prefix {i}");
        }
        // Also when the line ends without a version, or after empty lines.
        let no_version = format!("GET /{}\r\n", "a".repeat(MAX_URI_BYTES));
        assert_eq!(err(no_version.as_bytes()), HeadError::UriTooLong);
        let leading = format!("\r\n\r\nGET /{}", "a".repeat(MAX_URI_BYTES + 10));
        assert_eq!(err(leading.as_bytes()), HeadError::UriTooLong);
        // Garbage before the target is still 400.
        let garbage = format!("G\0T /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_BYTES));
        assert_eq!(err(garbage.as_bytes()), HeadError::Malformed);
        let bad_char = format!("GET /{}\x01{}", "a".repeat(10), "a".repeat(MAX_URI_BYTES));
        assert_eq!(err(bad_char.as_bytes()), HeadError::Malformed);
    }

    #[test]
    fn malformed_request_lines() {
        let cases: &[&[u8]] = &[
            b"garbage\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET /  HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET\0 / HTTP/1.1\r\n\r\n",
            b"GET /\0 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
            b"GET / HTTP/1.1\rX\n\r\n",
            b"GET / FOO/1.1\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / HTTP/1.x\r\n\r\n",
            b"GET / HTTP/11\r\n\r\n",
            b"\0\0\0\0",
            b" GET / HTTP/1.1\r\n\r\n",
            b"/ HTTP/1.1\r\n\r\n",
        ];
        for &case in cases {
            let e = err(case);
            assert_eq!(
                e,
                HeadError::Malformed,
                "{:?}",
                String::from_utf8_lossy(case)
            );
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn unsupported_versions() {
        for case in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / HTTP/0.9\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/3.0 ",
        ] {
            let e = err(case);
            assert_eq!(
                e,
                HeadError::UnsupportedVersion,
                "{:?}",
                String::from_utf8_lossy(case)
            );
            assert_eq!(e.status(), 505);
        }
    }

    #[test]
    fn unterminated_version_waits_for_its_end() {
        // Fuzz finding: the answer must not depend on where the bytes were split.
        for prefix in [
            &b"GET / HTTP/3"[..],
            b"GET / HTTP/2.0",
            b"GET / HTTP/1.2",
            b"GET / HTTP/2",
        ] {
            assert_eq!(
                parse_head(prefix),
                Ok(None),
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
        assert_eq!(
            parse_head(b"GET / HTTP/2.0)\r\n\r\n").err(),
            Some(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/2x\r\n\r\n").err(),
            Some(HeadError::Malformed)
        );
        assert_eq!(parse_head(b"GET / HTTPX").err(), Some(HeadError::Malformed));
    }

    #[test]
    fn header_lookup() {
        let (head, _) = ok(
            b"POST /files HTTP/1.1\r\nUpload-Length: 10\r\nUPLOAD-METADATA: a b\r\nX-Bin: \xff\xfe\r\nupload-length: 20\r\n\r\n",
        );
        assert_eq!(head.header("upload-length"), Some(&b"10"[..]));
        assert_eq!(head.header("Upload-Length"), Some(&b"10"[..]));
        assert_eq!(head.header_str("upload-metadata"), Some("a b"));
        assert_eq!(head.header("x-bin"), Some(&b"\xff\xfe"[..]));
        assert_eq!(head.header_str("x-bin"), None);
        assert_eq!(head.header("missing"), None);
        assert_eq!(head.headers[1].0, "upload-metadata");
    }

    #[test]
    fn values_are_trimmed() {
        let (head, _) = ok(b"GET / HTTP/1.1\r\nA: \t x y \t\r\nB:\r\nC:  \r\n\r\n");
        assert_eq!(head.header("a"), Some(&b"x y"[..]));
        assert_eq!(head.header("b"), Some(&b""[..]));
        assert_eq!(head.header("c"), Some(&b""[..]));
    }

    #[test]
    fn path_without_query() {
        let (head, _) = ok(b"GET /files/x?a=b?c HTTP/1.1\r\n\r\n");
        assert_eq!(head.path(), "/files/x");
        let (head, _) = ok(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!(head.path(), "*");
        let (head, _) = ok(b"GET /? HTTP/1.1\r\n\r\n");
        assert_eq!(head.path(), "/");
    }

    #[test]
    fn no_panic_on_arbitrary_bytes() {
        // A small LCG drives random byte soups and random mutations of a valid head.
        let valid = b"PATCH /files/a HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for _ in 0..2000 {
            let mut buf = valid.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let i = next() % buf.len();
                buf[i] = (next() % 256) as u8;
            }
            let _ = parse_head(&buf);
            let len = next() % 64;
            let alphabet = b"GET / HTTP/1.\r\n: \0\xff";
            let soup: Vec<u8> = (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            let _ = parse_head(&soup);
        }
    }
}
