//! Responses: a small owned description, encoded into a reusable byte buffer.

use std::borrow::Cow;

/// A response head plus a (small) body. Headers are written in the order added.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields other than `Content-Length`, `Date` and `Connection`, which the
    /// encoder adds. Invariant: names are tokens and values hold no CR, LF or NUL (the
    /// daemon's own, or a hook answer's, checked by `hooks::answer`).
    pub headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    /// The body; empty for most tus answers.
    pub body: Cow<'static, [u8]>,
    /// The length of a body that is streamed after the head instead of `body` (a
    /// download): `Content-Length` says this, and `body` must be empty.
    pub streamed_len: Option<u64>,
}

impl Response {
    /// A response with no headers and no body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::with_capacity(8),
            body: Cow::Borrowed(b""),
            streamed_len: None,
        }
    }

    /// Adds a header field.
    pub fn header(&mut self, name: &'static str, value: impl Into<Cow<'static, str>>) {
        self.headers.push((Cow::Borrowed(name), value.into()));
    }

    /// Merges a hook's answer (`hooks::answer::HttpAnswer`, already checked: its names
    /// are tokens the daemon does not own, its values hold no control byte but HTAB):
    /// its status replaces this one, each of its fields replaces a field of that name,
    /// and a body it gives replaces this one.
    pub fn merge_answer(&mut self, status: Option<u16>, headers: &[(String, String)], body: &str) {
        if let Some(status) = status {
            self.status = status;
        }
        for (name, value) in headers {
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            self.headers
                .push((Cow::Owned(name.clone()), Cow::Owned(value.clone())));
        }
        if !body.is_empty() {
            self.body = Cow::Owned(body.as_bytes().to_vec());
        }
    }

    /// Sets a `text/plain` body (left out when empty).
    pub fn text(&mut self, body: String) {
        if !body.is_empty() {
            self.header("Content-Type", "text/plain; charset=utf-8");
            self.body = Cow::Owned(body.into_bytes());
        }
    }

    /// The value of a header set on this response, if any (first match).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        // The resumable-uploads draft (-05 §19, -11 §5); suggested value.
        104 => "Upload Resumption Supported",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        // Statuses an HTTP pre-hook's refusal may relay.
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Content",
        423 => "Locked",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        460 => "Checksum Mismatch",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// Encodes an informational (1xx) answer into `out` (cleared first): status line and
/// header fields only, since a 1xx answer has no body, no `Content-Length` and no `Date`
/// (RFC 9110 §15.2). `100 Continue` answers `Expect: 100-continue`; `104 (Upload
/// Resumption Supported)` is the resumable-uploads draft's.
pub fn encode_interim(resp: &Response, out: &mut Vec<u8>) {
    debug_assert!((100..200).contains(&resp.status), "{}", resp.status);
    push_status_and_headers(resp, out);
    out.extend_from_slice(b"\r\n");
}

/// Clears `out` and writes the status line and `resp`'s header fields.
fn push_status_and_headers(resp: &Response, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(reason(resp.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &resp.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Encodes `resp` into `out` (cleared first). `head_only` leaves the body out (HEAD
/// requests); `close` adds `Connection: close`. `date` is the IMF-fixdate to send.
pub fn encode(resp: &Response, head_only: bool, close: bool, date: &[u8], out: &mut Vec<u8>) {
    push_status_and_headers(resp, out);
    // RFC 9110 §8.6: no Content-Length in 1xx and 204 answers. HEAD answers leave it out
    // as well: they describe no representation here.
    if resp.status != 204 && resp.status >= 200 && !head_only {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, resp.streamed_len.unwrap_or(resp.body.len() as u64));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
}

/// Appends the decimal form of `n`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_answer_is_merged() {
        let mut r = Response::new(201);
        r.header("Location", "/files/x");
        r.header("Content-Type", "text/plain");
        let fields = [
            ("content-type".to_owned(), "application/json".to_owned()),
            ("X-Hook".to_owned(), "a\tb".to_owned()),
        ];
        r.merge_answer(Some(200), &fields, "{}");
        let mut out = Vec::new();
        encode(&r, false, false, b"D", &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nLocation: /files/x\r\ncontent-type: application/json\r\n\
              X-Hook: a\tb\r\nContent-Length: 2\r\nDate: D\r\n\r\n{}"
                .as_slice()
        );
        // Nothing given: nothing changes.
        let before = r.clone();
        r.merge_answer(None, &[], "");
        assert_eq!(format!("{before:?}"), format!("{r:?}"));
    }

    #[test]
    fn encodes_status_headers_length_and_body() {
        let mut r = Response::new(400);
        r.header("Tus-Resumable", "1.0.0");
        r.text("bad".to_string());
        let mut out = Vec::new();
        encode(&r, false, true, b"D", &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\nTus-Resumable: 1.0.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nDate: D\r\nConnection: close\r\n\r\nbad".to_vec()
        );
    }

    #[test]
    fn no_content_length_on_204_or_head() {
        let mut out = Vec::new();
        encode(&Response::new(204), false, false, b"D", &mut out);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nDate: D\r\n\r\n".to_vec());
        encode(&Response::new(200), true, false, b"D", &mut out);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nDate: D\r\n\r\n".to_vec());
    }

    #[test]
    fn streamed_length_is_announced() {
        let mut r = Response::new(206);
        r.streamed_len = Some(12);
        let mut out = Vec::new();
        encode(&r, false, false, b"D", &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 12\r\nDate: D\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn interim_answers_have_no_length_and_no_date() {
        let mut out = b"junk".to_vec();
        encode_interim(&Response::new(100), &mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec());
        let mut r = Response::new(103);
        r.header("Link", "</a>; rel=preload");
        encode_interim(&r, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 103 Unknown\r\nLink: </a>; rel=preload\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
        }
    }
}
