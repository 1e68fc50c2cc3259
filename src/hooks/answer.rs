//! Hook answers: what a blocking hook may send back, in the shape of tusd v2's
//! `HookResponse` (`HTTPResponse` {`StatusCode`, `Body`, `Header`}, `RejectUpload`,
//! `RejectTermination`, `ChangeFileInfo` {`ID`, `MetaData`}, `StopUpload`), plus one
//! field of tusring's own, `KeepUpload` (with `StopUpload`: keep the stopped upload),
//! parsed and checked as one pure function, [`parse_answer`].
//!
//! Read with `--hooks-answers` for pre-create, post-receive, pre-finish and pre-terminate
//! (the pool, `hooks`, parses what a notifier hands it; see DESIGN.md, "Hook answers").
//! The parser decides everything that does not
//! need the stores, so applying an [`Answer`] can never half-apply: either every
//! instruction in it is valid for the event, or the answer is refused whole with an
//! [`AnswerError`] saying why (the caller logs it and takes no instruction).
//!
//! Field names are matched exactly as tusd documents them; fields it does not know are
//! ignored, as tusd ignores them; a JSON `null` or a field's zero value (`false`, `0`,
//! `""`) is the same as leaving the field out; a field given twice is an error.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::http::body::is_tchar;
use crate::limits::{
    MAX_HOOK_ANSWER_BYTES, MAX_HOOK_ANSWER_HEADERS, MAX_HOOK_ANSWER_HEADER_BYTES,
    MAX_METADATA_BYTES,
};
use crate::storage::id::UploadId;
use crate::tus::metadata::{is_valid_key, Metadata};

/// The status of a refusal or a stop whose answer names none: tusd's
/// `ERR_UPLOAD_REJECTED`, `ERR_UPLOAD_TERMINATION_REJECTED` and `ERR_UPLOAD_STOPPED`.
pub const DEFAULT_REFUSAL_STATUS: u16 = 400;

/// Header fields an answer may not set, lowercase: the ones that frame the HTTP message
/// or the connection (a wrong `Content-Length` would desynchronise a keep-alive
/// connection), and `Location`. The tus protocol's own fields (`Tus-*`, `Upload-*`) are
/// refused by prefix ([`is_reserved_header`]).
const RESERVED_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "keep-alive",
    "location",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The blocking events an answer can be given to, each with the instructions it honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerEvent {
    /// `ChangeFileInfo`, `RejectUpload`, `HTTPResponse` (merged into the 201).
    PreCreate,
    /// `StopUpload` with its `HTTPResponse`.
    PostReceive,
    /// `HTTPResponse`: a 2xx answers the last PATCH, a 4xx/5xx refuses it.
    PreFinish,
    /// `RejectTermination`, `HTTPResponse` (merged into the 204).
    PreTerminate,
}

impl AnswerEvent {
    pub fn name(self) -> &'static str {
        match self {
            Self::PreCreate => "pre-create",
            Self::PostReceive => "post-receive",
            Self::PreFinish => "pre-finish",
            Self::PreTerminate => "pre-terminate",
        }
    }

    /// The status the daemon answers the event's request with when nothing changes it.
    fn success_status(self) -> u16 {
        match self {
            Self::PreCreate => 201,
            Self::PostReceive | Self::PreFinish | Self::PreTerminate => 204,
        }
    }
}

/// What an answer asks of the response (tusd's `HTTPResponse`), checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAnswer {
    /// `None`: the daemon's own status. Invariant: 200..=599; in [`Answer::Refuse`] and
    /// [`Answer::Stop`] always `Some(400..=599)`, in [`Answer::Proceed`] 2xx or `None`.
    pub status: Option<u16>,
    /// Sent as is, with its `Content-Length`. Invariant: when not empty, `status` is
    /// `Some` and not 204 or 205 (statuses that carry no content).
    pub body: String,
    /// In the answer's order. Invariant: names are tokens (RFC 9110 §5.6.2), unique
    /// ignoring case, none reserved ([`is_reserved_header`]); values hold no control
    /// byte but HTAB (no CR, LF or NUL); at most [`MAX_HOOK_ANSWER_HEADERS`] fields of
    /// at most [`MAX_HOOK_ANSWER_HEADER_BYTES`] names and values together.
    pub headers: Vec<(String, String)>,
}

impl HttpAnswer {
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.body.is_empty() && self.headers.is_empty()
    }
}

/// tusd's `ChangeFileInfo`, checked: what a pre-create answer changes before the upload
/// is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileInfoChange {
    /// The upload's ID instead of a random one, checked by [`UploadId::parse`]
    /// (uniqueness is for the store to check, when the upload is created).
    pub id: Option<UploadId>,
    /// Replaces the client's metadata whole (`Some` of an empty set clears it).
    /// Invariant: keys are valid `Upload-Metadata` keys and the header form is at most
    /// [`MAX_METADATA_BYTES`].
    pub metadata: Option<Metadata>,
}

impl FileInfoChange {
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.metadata.is_none()
    }
}

/// A checked answer: one verdict for the request, valid for the event it was parsed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Go on. `change` is empty except for pre-create; `response`, when not empty, is
    /// merged into the daemon's own answer (its status replaces the daemon's, its fields
    /// are added). Both empty: no instruction.
    Proceed {
        change: FileInfoChange,
        response: HttpAnswer,
    },
    /// Refuse the request with this response: `RejectUpload` (pre-create: nothing is
    /// created), `RejectTermination` (pre-terminate: nothing is removed), or a pre-finish
    /// 4xx/5xx (the upload stays complete on disk).
    Refuse(HttpAnswer),
    /// `StopUpload` (post-receive): end the upload, answering the PATCH in progress with
    /// `response`; the upload is removed (tusd's way), or kept, its later PATCHes
    /// refused, when the answer also says `KeepUpload` (tusring's own field).
    Stop { response: HttpAnswer, keep: bool },
}

impl Answer {
    /// No instruction: what an empty answer, `{}` or `null` is.
    pub const NONE: Answer = Answer::Proceed {
        change: FileInfoChange {
            id: None,
            metadata: None,
        },
        response: HttpAnswer {
            status: None,
            body: String::new(),
            headers: Vec::new(),
        },
    };

    pub fn is_none(&self) -> bool {
        matches!(self, Self::Proceed { change, response } if change.is_empty() && response.is_empty())
    }

    /// A short description for a log line (no string of the answer in it).
    pub fn summary(&self) -> String {
        let response = |r: &HttpAnswer| {
            let mut s = match r.status {
                Some(code) => format!("status {code}"),
                None => "the daemon's status".to_owned(),
            };
            if !r.headers.is_empty() {
                s.push_str(&format!(", {} header field(s)", r.headers.len()));
            }
            if !r.body.is_empty() {
                s.push_str(&format!(", a body of {} bytes", r.body.len()));
            }
            s
        };
        match self {
            Self::Proceed {
                change,
                response: r,
            } => {
                let mut s = "go on".to_owned();
                if change.id.is_some() {
                    s.push_str(", the upload ID changed");
                }
                if change.metadata.is_some() {
                    s.push_str(", the metadata replaced");
                }
                if !r.is_empty() {
                    s.push_str(&format!(", answered with {}", response(r)));
                }
                s
            }
            Self::Refuse(r) => format!("refuse, answered with {}", response(r)),
            Self::Stop { response: r, keep } => format!(
                "stop the upload ({}), answered with {}",
                if *keep { "kept" } else { "removed" },
                response(r)
            ),
        }
    }
}

/// Why an answer was refused whole. Strings taken from the answer are escaped and cut
/// short ([`shown`]), so they are safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// Longer than [`MAX_HOOK_ANSWER_BYTES`]; none of it was parsed.
    TooLarge { len: usize },
    /// Not JSON, not an object, a field of the wrong type, or a field given twice
    /// (serde_json's message, with line and column).
    Json(String),
    /// `StatusCode` outside what the instruction allows.
    Status { code: i64, why: &'static str },
    /// A header field name that is not a token.
    HeaderName(String),
    /// A header field value with a control byte (CR, LF, NUL, ...); the field's name.
    HeaderValue(String),
    /// A header field the daemon owns (framing, `Location`, `Tus-*`, `Upload-*`).
    ReservedHeader(String),
    /// The same header field twice (names compared ignoring case).
    DuplicateHeader(String),
    /// More than [`MAX_HOOK_ANSWER_HEADERS`] fields or [`MAX_HOOK_ANSWER_HEADER_BYTES`].
    TooManyHeaders,
    /// `ChangeFileInfo.ID` is not a valid upload ID ([`UploadId::parse`]): the
    /// creation is refused with 400 (see `hooks::read_answer`).
    Id { id: String, why: &'static str },
    /// A `ChangeFileInfo.MetaData` key that `Upload-Metadata` cannot carry.
    MetadataKey(String),
    /// `ChangeFileInfo.MetaData` longer than [`MAX_METADATA_BYTES`] as a header.
    MetadataTooLarge,
    /// An instruction tusring does not carry out (`ChangeFileInfo.Storage`).
    Unsupported(&'static str),
    /// An instruction the event does not honour (e.g. `StopUpload` in pre-create).
    NotForEvent {
        instruction: &'static str,
        event: AnswerEvent,
    },
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len } => write!(
                f,
                "the answer is {len} bytes, more than {MAX_HOOK_ANSWER_BYTES}"
            ),
            Self::Json(e) => write!(f, "the answer is not a valid HookResponse: {e}"),
            Self::Status { code, why } => write!(f, "StatusCode {code}: {why}"),
            Self::HeaderName(n) => write!(f, "header field name {n} is not a token"),
            Self::HeaderValue(n) => {
                write!(f, "header field {n} has a control character in its value")
            }
            Self::ReservedHeader(n) => {
                write!(f, "header field {n} is the daemon's to set")
            }
            Self::DuplicateHeader(n) => write!(f, "header field {n} is given twice"),
            Self::TooManyHeaders => write!(
                f,
                "more than {MAX_HOOK_ANSWER_HEADERS} header fields or \
                 {MAX_HOOK_ANSWER_HEADER_BYTES} bytes of them"
            ),
            Self::Id { id, why } => write!(f, "ChangeFileInfo.ID {id}: {why}"),
            Self::MetadataKey(k) => write!(f, "ChangeFileInfo.MetaData key {k} is invalid"),
            Self::MetadataTooLarge => write!(
                f,
                "ChangeFileInfo.MetaData is more than {MAX_METADATA_BYTES} bytes as a header"
            ),
            Self::Unsupported(what) => write!(f, "{what} is not supported"),
            Self::NotForEvent { instruction, event } => {
                write!(
                    f,
                    "{instruction} is not an instruction for {}",
                    event.name()
                )
            }
        }
    }
}

impl std::error::Error for AnswerError {}

/// Longest piece of the answer an error repeats.
const SHOWN_CHARS: usize = 64;

/// `s` quoted and escaped (no control character reaches a log line) and cut to
/// [`SHOWN_CHARS`] characters.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(SHOWN_CHARS).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// Whether the daemon owns the header field `name` (compared ignoring case).
pub fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str())
        || lower.starts_with("tus-")
        || lower.starts_with("upload-")
}

/// Parses and checks a hook's answer to `event`. Empty (or only JSON whitespace), `{}`
/// and `null` are [`Answer::NONE`]. An answer longer than [`MAX_HOOK_ANSWER_BYTES`] is
/// refused before any of it is parsed.
pub fn parse_answer(event: AnswerEvent, bytes: &[u8]) -> Result<Answer, AnswerError> {
    if bytes.len() > MAX_HOOK_ANSWER_BYTES {
        return Err(AnswerError::TooLarge { len: bytes.len() });
    }
    if bytes
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(Answer::NONE);
    }
    let raw: Option<Object<RawAnswer>> =
        serde_json::from_slice(bytes).map_err(|e| AnswerError::Json(json_error(&e)))?;
    let raw = raw.map(|o| o.0).unwrap_or_default();
    let response = match raw.http_response {
        Some(Object(r)) => check_response(r)?,
        None => HttpAnswer::default(),
    };
    // A ChangeFileInfo.ID that is not valid is said last, once the rest is known good:
    // it alone refuses a creation (see `AnswerError::Id`).
    let change = raw.change_file_info.map(|Object(c)| check_change(c));
    let given = Given {
        reject_upload: raw.reject_upload == Some(true),
        reject_termination: raw.reject_termination == Some(true),
        stop_upload: raw.stop_upload == Some(true),
        keep_upload: raw.keep_upload == Some(true),
        change: match &change {
            Some(Ok(c)) => !c.is_empty(),
            Some(Err(AnswerError::Id { .. })) => true,
            Some(Err(_)) | None => false,
        },
    };
    if let Some(Err(e)) = change {
        if matches!(e, AnswerError::Id { .. }) {
            given.allowed_for(event)?;
        }
        return Err(e);
    }
    given.allowed_for(event)?;
    let change = change.and_then(Result::ok).unwrap_or_default();
    match event {
        AnswerEvent::PreCreate if given.reject_upload => Ok(Answer::Refuse(refusal(response)?)),
        AnswerEvent::PreTerminate if given.reject_termination => {
            Ok(Answer::Refuse(refusal(response)?))
        }
        AnswerEvent::PostReceive if given.stop_upload => Ok(Answer::Stop {
            response: refusal(response)?,
            keep: given.keep_upload,
        }),
        AnswerEvent::PostReceive if given.keep_upload => Err(AnswerError::NotForEvent {
            instruction: "KeepUpload without StopUpload",
            event,
        }),
        AnswerEvent::PostReceive if !response.is_empty() => Err(AnswerError::NotForEvent {
            instruction: "HTTPResponse without StopUpload",
            event,
        }),
        AnswerEvent::PreFinish if response.status.is_some_and(|s| s >= 400) => {
            Ok(Answer::Refuse(response))
        }
        _ => Ok(Answer::Proceed {
            change,
            response: success(event, response)?,
        }),
    }
}

/// Which instructions an answer gives (set to `true`, or not empty).
struct Given {
    reject_upload: bool,
    reject_termination: bool,
    stop_upload: bool,
    /// tusring's own: with `StopUpload`, keep the stopped upload rather than remove it.
    keep_upload: bool,
    change: bool,
}

impl Given {
    /// Refuses an instruction the event does not honour (`HTTPResponse` is checked by
    /// the verdict, since post-receive takes it only with `StopUpload`).
    fn allowed_for(&self, event: AnswerEvent) -> Result<(), AnswerError> {
        use AnswerEvent::*;
        let checks = [
            (self.reject_upload, "RejectUpload", event == PreCreate),
            (
                self.reject_termination,
                "RejectTermination",
                event == PreTerminate,
            ),
            (self.stop_upload, "StopUpload", event == PostReceive),
            (self.keep_upload, "KeepUpload", event == PostReceive),
            (self.change, "ChangeFileInfo", event == PreCreate),
        ];
        match checks.iter().find(|(given, _, allowed)| *given && !allowed) {
            Some(&(_, instruction, _)) => Err(AnswerError::NotForEvent { instruction, event }),
            None => Ok(()),
        }
    }
}

/// The response of a refusal or a stop: a 4xx or 5xx, [`DEFAULT_REFUSAL_STATUS`] when
/// the answer names none.
fn refusal(mut response: HttpAnswer) -> Result<HttpAnswer, AnswerError> {
    let status = response.status.unwrap_or(DEFAULT_REFUSAL_STATUS);
    if status < 400 {
        return Err(AnswerError::Status {
            code: i64::from(status),
            why: "a refusal needs a 4xx or 5xx status",
        });
    }
    response.status = Some(status);
    Ok(response)
}

/// The response of a request that goes on: a 2xx or the daemon's own status. A body
/// without a status gets the event's success status, or 200 where that is a 204 (which
/// carries no content).
fn success(event: AnswerEvent, mut response: HttpAnswer) -> Result<HttpAnswer, AnswerError> {
    match response.status {
        Some(code) if !(200..300).contains(&code) => Err(AnswerError::Status {
            code: i64::from(code),
            why: "a request that goes on is answered with a 2xx (a refusal is another instruction)",
        }),
        Some(code @ (204 | 205)) if !response.body.is_empty() => Err(AnswerError::Status {
            code: i64::from(code),
            why: "this status carries no body",
        }),
        None if !response.body.is_empty() => {
            response.status = Some(match event.success_status() {
                204 => 200,
                other => other,
            });
            Ok(response)
        }
        _ => Ok(response),
    }
}

fn check_response(raw: RawHttpResponse) -> Result<HttpAnswer, AnswerError> {
    let status = match raw.status_code.unwrap_or(0) {
        0 => None,
        code @ 200..=599 => Some(code as u16),
        code => {
            return Err(AnswerError::Status {
                code,
                why: "not a final HTTP status (200 to 599)",
            })
        }
    };
    let headers = raw.header.map(|h| h.0).unwrap_or_default();
    let bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if headers.len() > MAX_HOOK_ANSWER_HEADERS || bytes > MAX_HOOK_ANSWER_HEADER_BYTES {
        return Err(AnswerError::TooManyHeaders);
    }
    let mut seen = Vec::with_capacity(headers.len());
    for (name, value) in &headers {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(AnswerError::HeaderName(shown(name)));
        }
        if is_reserved_header(name) {
            return Err(AnswerError::ReservedHeader(shown(name)));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(AnswerError::HeaderValue(shown(name)));
        }
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(AnswerError::DuplicateHeader(shown(name)));
        }
        seen.push(lower);
    }
    Ok(HttpAnswer {
        status,
        body: raw.body.unwrap_or_default(),
        headers,
    })
}

fn check_change(raw: RawChange) -> Result<FileInfoChange, AnswerError> {
    if raw.storage.is_some_and(|s| !s.is_empty()) {
        return Err(AnswerError::Unsupported("ChangeFileInfo.Storage"));
    }
    if let Some(metadata) = &raw.metadata {
        if let Some((key, _)) = metadata.iter().find(|(k, _)| !is_valid_key(k.as_bytes())) {
            return Err(AnswerError::MetadataKey(shown(key)));
        }
        if metadata.to_header().len() > MAX_METADATA_BYTES {
            return Err(AnswerError::MetadataTooLarge);
        }
    }
    let id = match raw.id.filter(|id| !id.is_empty()) {
        Some(id) => Some(UploadId::parse(&id).map_err(|why| AnswerError::Id {
            id: shown(&id),
            why: why.0,
        })?),
        None => None,
    };
    Ok(FileInfoChange {
        id,
        metadata: raw.metadata,
    })
}

/// serde_json's message, cut short: it can quote the answer.
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// tusd's `HookResponse` as JSON, before any check. `Option` so that `null` is the same
/// as a missing field, as in Go.
#[derive(Deserialize, Default)]
struct RawAnswer {
    #[serde(rename = "HTTPResponse", default)]
    http_response: Option<Object<RawHttpResponse>>,
    #[serde(rename = "RejectUpload", default)]
    reject_upload: Option<bool>,
    #[serde(rename = "RejectTermination", default)]
    reject_termination: Option<bool>,
    #[serde(rename = "ChangeFileInfo", default)]
    change_file_info: Option<Object<RawChange>>,
    #[serde(rename = "StopUpload", default)]
    stop_upload: Option<bool>,
    /// Not tusd's: with `StopUpload`, keep the upload (tusd always removes it).
    #[serde(rename = "KeepUpload", default)]
    keep_upload: Option<bool>,
}

#[derive(Deserialize)]
struct RawHttpResponse {
    #[serde(rename = "StatusCode", default)]
    status_code: Option<i64>,
    #[serde(rename = "Body", default)]
    body: Option<String>,
    #[serde(rename = "Header", default)]
    header: Option<HeaderPairs>,
}

#[derive(Deserialize)]
struct RawChange {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "MetaData", default)]
    metadata: Option<Metadata>,
    #[serde(rename = "Storage", default)]
    storage: Option<HashMap<String, String>>,
}

/// `T` read from a JSON object only: serde's derived structs also take an array of their
/// fields in order (so `["id"]` would be a `ChangeFileInfo` with that ID), which tusd's
/// JSON never is.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }

        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// A JSON object of string values as pairs in order, repeats kept (so they can be
/// refused rather than silently merged).
struct HeaderPairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for HeaderPairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;

        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = HeaderPairs;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderPairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(HeaderPairs(pairs))
            }
        }

        deserializer.deserialize_map(PairsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AnswerEvent::*;

    const EVENTS: [AnswerEvent; 4] = [PreCreate, PostReceive, PreFinish, PreTerminate];

    fn parse(event: AnswerEvent, s: &str) -> Result<Answer, AnswerError> {
        parse_answer(event, s.as_bytes())
    }

    fn response(status: Option<u16>, body: &str, headers: &[(&str, &str)]) -> HttpAnswer {
        HttpAnswer {
            status,
            body: body.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn proceed(response: HttpAnswer) -> Answer {
        Answer::Proceed {
            change: FileInfoChange::default(),
            response,
        }
    }

    fn metadata(pairs: &[(&str, &str)]) -> Metadata {
        let mut m = Metadata::new();
        for (k, v) in pairs {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
        m
    }

    /// tusd's documented hook responses (docs/_advanced-topics/hooks.md, "Common uses";
    /// the docs write them with trailing commas, which JSON does not allow).
    #[test]
    fn tusd_documented_examples() {
        let json_type = [("Content-Type", "application/json")];
        let table: &[(AnswerEvent, &str, Answer)] = &[
            // "Receiving and Validating User Data".
            (
                PreCreate,
                r#"{"HTTPResponse": {"StatusCode": 400,
                    "Body": "{\"message\":\"no project with ID 1234 found\"}",
                    "Header": {"Content-Type": "application/json"}},
                  "RejectUpload": true}"#,
                Answer::Refuse(response(
                    Some(400),
                    r#"{"message":"no project with ID 1234 found"}"#,
                    &json_type,
                )),
            ),
            // "Authenticating Users".
            (
                PreCreate,
                r#"{"HTTPResponse": {"StatusCode": 403,
                    "Body": "{\"message\":\"authentication failed\"}",
                    "Header": {"Content-Type": "application/json"}},
                  "RejectUpload": true}"#,
                Answer::Refuse(response(
                    Some(403),
                    r#"{"message":"authentication failed"}"#,
                    &json_type,
                )),
            ),
            // "Interrupting Uploads".
            (
                PostReceive,
                r#"{"HTTPResponse": {"StatusCode": 400,
                    "Body": "{\"message\":\"associated project is no longer available\"}",
                    "Header": {"Content-Type": "application/json"}},
                  "StopUpload": true}"#,
                Answer::Stop {
                    response: response(
                        Some(400),
                        r#"{"message":"associated project is no longer available"}"#,
                        &json_type,
                    ),
                    keep: false,
                },
            ),
            // "Sending Results to the Client", without the example's `StopUpload: true`
            // (which pre-finish does not honour; see `tusd_prefinish_example_as_printed`).
            (
                PreFinish,
                r#"{"HTTPResponse": {"Header": {
                    "Link": "<https://example.com/files/12345>; rel=\"related\""}}}"#,
                proceed(response(
                    None,
                    "",
                    &[(
                        "Link",
                        r#"<https://example.com/files/12345>; rel="related""#,
                    )],
                )),
            ),
            // The annotated example's ChangeFileInfo (its ID and MetaData), with every
            // flag false, as the annotated example writes them.
            (
                PreCreate,
                r#"{"HTTPResponse": {}, "RejectUpload": false, "RejectTermination": false,
                  "ChangeFileInfo": {"ID": "my-custom-upload-id",
                                     "MetaData": {"my-custom-field": "..."}},
                  "StopUpload": false}"#,
                Answer::Proceed {
                    change: FileInfoChange {
                        id: Some(UploadId::parse("my-custom-upload-id").unwrap()),
                        metadata: Some(metadata(&[("my-custom-field", "...")])),
                    },
                    response: HttpAnswer::default(),
                },
            ),
        ];
        for (event, json, want) in table {
            assert_eq!(parse(*event, json).as_ref(), Ok(want), "{event:?} {json}");
        }
    }

    /// tusd's pre-finish example also sets `StopUpload: true`, which tusd ignores there;
    /// here an answer is taken whole or not at all, so it is refused, saying why.
    #[test]
    fn tusd_prefinish_example_as_printed() {
        let json = r#"{"HTTPResponse": {"Header": {"Link": "<https://example.com/files/12345>"}},
                       "StopUpload": true}"#;
        let err = parse(PreFinish, json).unwrap_err();
        assert_eq!(
            err,
            AnswerError::NotForEvent {
                instruction: "StopUpload",
                event: PreFinish
            }
        );
        assert_eq!(
            err.to_string(),
            "StopUpload is not an instruction for pre-finish"
        );
    }

    #[test]
    fn no_instruction() {
        let table = [
            "",
            " \n\t\r",
            "{}",
            "null",
            " {} \n",
            r#"{"HTTPResponse": null, "ChangeFileInfo": null, "RejectUpload": null}"#,
            r#"{"HTTPResponse": {"StatusCode": 0, "Body": "", "Header": {}}}"#,
            r#"{"ChangeFileInfo": {"ID": "", "MetaData": null, "Storage": {}}}"#,
            r#"{"RejectUpload": false, "RejectTermination": false, "StopUpload": false}"#,
            // Fields tusd does not know are ignored, as tusd ignores them.
            r#"{"Unknown": [1, {"a": null}], "httpresponse": {"StatusCode": 500}}"#,
        ];
        for event in EVENTS {
            for json in table {
                let answer = parse(event, json);
                assert_eq!(answer, Ok(Answer::NONE), "{event:?} {json:?}");
                assert!(answer.unwrap().is_none());
            }
        }
    }

    #[test]
    fn verdicts_per_event() {
        let table: &[(AnswerEvent, &str, Answer)] = &[
            // A refusal without a status gets tusd's 400.
            (
                PreCreate,
                r#"{"RejectUpload": true}"#,
                Answer::Refuse(response(Some(400), "", &[])),
            ),
            (
                PreTerminate,
                r#"{"RejectTermination": true, "HTTPResponse": {"StatusCode": 423, "Body": "held"}}"#,
                Answer::Refuse(response(Some(423), "held", &[])),
            ),
            (
                PostReceive,
                r#"{"StopUpload": true}"#,
                Answer::Stop {
                    response: response(Some(400), "", &[]),
                    keep: false,
                },
            ),
            (
                PostReceive,
                r#"{"StopUpload": true, "HTTPResponse": {"StatusCode": 507}}"#,
                Answer::Stop {
                    response: response(Some(507), "", &[]),
                    keep: false,
                },
            ),
            // tusring's own: the stopped upload is kept.
            (
                PostReceive,
                r#"{"StopUpload": true, "KeepUpload": true, "HTTPResponse": {"StatusCode": 413, "Body": "quota"}}"#,
                Answer::Stop {
                    response: response(Some(413), "quota", &[]),
                    keep: true,
                },
            ),
            (
                PostReceive,
                r#"{"StopUpload": true, "KeepUpload": false}"#,
                Answer::Stop {
                    response: response(Some(400), "", &[]),
                    keep: false,
                },
            ),
            // Rejected: the changes are moot (nothing is created).
            (
                PreCreate,
                r#"{"RejectUpload": true, "ChangeFileInfo": {"ID": "k1"}}"#,
                Answer::Refuse(response(Some(400), "", &[])),
            ),
            // pre-finish: a 2xx answers the PATCH, a 4xx/5xx refuses it.
            (
                PreFinish,
                r#"{"HTTPResponse": {"StatusCode": 200, "Body": "{\"url\":\"/f/1\"}",
                    "Header": {"Content-Type": "application/json"}}}"#,
                proceed(response(
                    Some(200),
                    r#"{"url":"/f/1"}"#,
                    &[("Content-Type", "application/json")],
                )),
            ),
            (
                PreFinish,
                r#"{"HTTPResponse": {"StatusCode": 422, "Body": "not a PNG"}}"#,
                Answer::Refuse(response(Some(422), "not a PNG", &[])),
            ),
            // A body without a status: 200 where the daemon would answer 204, the 201 of
            // a creation.
            (
                PreFinish,
                r#"{"HTTPResponse": {"Body": "done"}}"#,
                proceed(response(Some(200), "done", &[])),
            ),
            (
                PreTerminate,
                r#"{"HTTPResponse": {"Body": "bye"}}"#,
                proceed(response(Some(200), "bye", &[])),
            ),
            (
                PreCreate,
                r#"{"HTTPResponse": {"Body": "made"}}"#,
                proceed(response(Some(201), "made", &[])),
            ),
            (
                PreCreate,
                r#"{"HTTPResponse": {"StatusCode": 204}}"#,
                proceed(response(Some(204), "", &[])),
            ),
            // MetaData {} clears the metadata; an empty ID keeps the random one.
            (
                PreCreate,
                r#"{"ChangeFileInfo": {"ID": "", "MetaData": {}}}"#,
                Answer::Proceed {
                    change: FileInfoChange {
                        id: None,
                        metadata: Some(Metadata::new()),
                    },
                    response: HttpAnswer::default(),
                },
            ),
            (
                PreCreate,
                r#"{"ChangeFileInfo": {"ID": "2026_db~Key-7.png",
                    "MetaData": {"filename": "a b,c.png", "owner": "42", "flag": ""}}}"#,
                Answer::Proceed {
                    change: FileInfoChange {
                        id: Some(UploadId::parse("2026_db~Key-7.png").unwrap()),
                        metadata: Some(metadata(&[
                            ("filename", "a b,c.png"),
                            ("owner", "42"),
                            ("flag", ""),
                        ])),
                    },
                    response: HttpAnswer::default(),
                },
            ),
        ];
        for (event, json, want) in table {
            assert_eq!(parse(*event, json).as_ref(), Ok(want), "{event:?} {json}");
        }
    }

    #[test]
    fn instructions_not_for_the_event() {
        let table: &[(AnswerEvent, &str, &str)] = &[
            (PreCreate, r#"{"StopUpload": true}"#, "StopUpload"),
            (PreCreate, r#"{"KeepUpload": true}"#, "KeepUpload"),
            (PreFinish, r#"{"KeepUpload": true}"#, "KeepUpload"),
            (PreTerminate, r#"{"KeepUpload": true}"#, "KeepUpload"),
            (
                PostReceive,
                r#"{"KeepUpload": true}"#,
                "KeepUpload without StopUpload",
            ),
            (
                PreCreate,
                r#"{"RejectTermination": true}"#,
                "RejectTermination",
            ),
            (PostReceive, r#"{"RejectUpload": true}"#, "RejectUpload"),
            (
                PostReceive,
                r#"{"ChangeFileInfo": {"ID": "x"}}"#,
                "ChangeFileInfo",
            ),
            (
                PostReceive,
                r#"{"HTTPResponse": {"StatusCode": 200}}"#,
                "HTTPResponse without StopUpload",
            ),
            (PreFinish, r#"{"RejectUpload": true}"#, "RejectUpload"),
            (
                PreFinish,
                r#"{"RejectTermination": true}"#,
                "RejectTermination",
            ),
            (
                PreFinish,
                r#"{"ChangeFileInfo": {"MetaData": {}}}"#,
                "ChangeFileInfo",
            ),
            (PreTerminate, r#"{"RejectUpload": true}"#, "RejectUpload"),
            (PreTerminate, r#"{"StopUpload": true}"#, "StopUpload"),
            (
                PreTerminate,
                r#"{"ChangeFileInfo": {"ID": "x"}}"#,
                "ChangeFileInfo",
            ),
            // An ID that is not valid is said only once the rest is allowed: to an event
            // that takes no ChangeFileInfo, it is that instruction that is wrong.
            (
                PreTerminate,
                r#"{"ChangeFileInfo": {"ID": "../x"}}"#,
                "ChangeFileInfo",
            ),
            (
                PreFinish,
                r#"{"ChangeFileInfo": {"ID": "x.chk"}}"#,
                "ChangeFileInfo",
            ),
        ];
        for (event, json, instruction) in table {
            assert_eq!(
                parse(*event, json),
                Err(AnswerError::NotForEvent {
                    instruction,
                    event: *event
                }),
                "{event:?} {json}"
            );
        }
    }

    #[test]
    fn not_json_or_wrong_types() {
        let table = [
            "OK",
            "{",
            "<html><body>accepted</body></html>",
            "{} x",
            "{}{}",
            "[]",
            "true",
            "\"RejectUpload\"",
            "{\"RejectUpload\": true,}",
            r#"{"RejectUpload": "true"}"#,
            r#"{"RejectUpload": 1}"#,
            r#"{"StopUpload": "yes"}"#,
            r#"{"HTTPResponse": "400"}"#,
            r#"{"HTTPResponse": {"StatusCode": "400"}}"#,
            r#"{"HTTPResponse": {"StatusCode": 400.5}}"#,
            r#"{"HTTPResponse": {"StatusCode": 1e3}}"#,
            r#"{"HTTPResponse": {"StatusCode": 99999999999999999999}}"#,
            r#"{"HTTPResponse": {"Body": 5}}"#,
            r#"{"HTTPResponse": {"Body": {"url": "/x"}}}"#,
            r#"{"HTTPResponse": {"Header": ["Link", "x"]}}"#,
            r#"{"HTTPResponse": {"Header": {"X-A": 1}}}"#,
            r#"{"HTTPResponse": {"Header": {"X-A": ["1", "2"]}}}"#,
            r#"{"HTTPResponse": {"Header": {"X-A": null}}}"#,
            r#"{"ChangeFileInfo": {"ID": 7}}"#,
            r#"{"ChangeFileInfo": {"MetaData": {"a": 1}}}"#,
            r#"{"ChangeFileInfo": {"MetaData": ["a"]}}"#,
            r#"{"ChangeFileInfo": "new-id"}"#,
            // serde's derived structs take arrays of their fields; tusd's JSON does not.
            r#"{"ChangeFileInfo": ["new-id"]}"#,
            r#"{"HTTPResponse": [400, "body"]}"#,
            r#"[{"StatusCode": 400}, true]"#,
            r#"{"StopUpload": true, "StopUpload": false}"#,
            "{\"HTTPResponse\": {\"Body\": \"\\ud800\"}}",
            "{\"RejectUpload\": tru\u{0}e}",
        ];
        for event in EVENTS {
            for json in table {
                let got = parse(event, json);
                assert!(
                    matches!(got, Err(AnswerError::Json(_))),
                    "{event:?} {json:?}: {got:?}"
                );
            }
        }
        // Not UTF-8.
        assert!(matches!(
            parse_answer(PreCreate, b"{\"HTTPResponse\": {\"Body\": \"\xff\"}}"),
            Err(AnswerError::Json(_))
        ));
    }

    /// Deep nesting is no stack overflow: in a field the parser reads, serde_json's
    /// recursion limit makes it an error; in an ignored field it is skipped.
    #[test]
    fn deep_nesting() {
        let depth = 10_000;
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let json = format!(r#"{{"HTTPResponse": {{"Header": {{"X-A": {deep}}}}}}}"#);
        assert!(json.len() <= MAX_HOOK_ANSWER_BYTES);
        assert!(matches!(parse(PreFinish, &json), Err(AnswerError::Json(_))));
        let deep = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let json = format!(r#"{{"ChangeFileInfo": {{"MetaData": {deep}}}}}"#);
        assert!(matches!(parse(PreCreate, &json), Err(AnswerError::Json(_))));
        let json = format!(r#"{{"x": {deep}}}"#);
        assert_eq!(parse(PreCreate, &json), Ok(Answer::NONE));
    }

    #[test]
    fn size_limit() {
        // A 10 MiB answer that is not even JSON: refused by its length alone.
        let huge = vec![b'{'; 10 << 20];
        assert_eq!(
            parse_answer(PreFinish, &huge),
            Err(AnswerError::TooLarge { len: 10 << 20 })
        );
        // A valid 10 MiB answer is refused the same way.
        let body = "x".repeat(10 << 20);
        let json = format!(r#"{{"HTTPResponse": {{"StatusCode": 200, "Body": "{body}"}}}}"#);
        assert!(matches!(
            parse(PreFinish, &json),
            Err(AnswerError::TooLarge { .. })
        ));
        // At the limit it is parsed; one byte more is refused.
        let fill = MAX_HOOK_ANSWER_BYTES - r#"{"HTTPResponse": {"Body": ""}}"#.len();
        let json = format!(r#"{{"HTTPResponse": {{"Body": "{}"}}}}"#, "y".repeat(fill));
        assert_eq!(json.len(), MAX_HOOK_ANSWER_BYTES);
        assert!(parse(PreFinish, &json).is_ok());
        let json = format!("{json} ");
        assert_eq!(
            parse(PreFinish, &json),
            Err(AnswerError::TooLarge {
                len: MAX_HOOK_ANSWER_BYTES + 1
            })
        );
    }

    #[test]
    fn upload_ids() {
        // The rules are `UploadId::parse`'s (table-tested in storage::id); here, that an
        // answer carries what they allow and names what they refuse, escaped.
        let good = [
            "a",
            "my-custom-upload-id",
            "db_key.2026~v1",
            "x.information",
        ];
        for id in good {
            let json = format!(r#"{{"ChangeFileInfo": {{"ID": "{id}"}}}}"#);
            let Ok(Answer::Proceed { change, .. }) = parse(PreCreate, &json) else {
                panic!("{id:?} refused");
            };
            assert_eq!(change.id.map(|i| i.to_string()).as_deref(), Some(id));
        }
        let long = "k".repeat(crate::limits::MAX_HOOK_UPLOAD_ID_BYTES + 1);
        let bad = [
            "a/b",
            "../x",
            "..",
            "x.info",
            "x.chk",
            "x.assembling",
            "a\0b",
            "a\r\nb",
            long.as_str(),
        ];
        for id in bad {
            let json = serde_json::json!({"ChangeFileInfo": {"ID": id}}).to_string();
            let err = parse(PreCreate, &json).unwrap_err();
            let why = UploadId::parse(id).unwrap_err().0;
            assert!(
                matches!(&err, AnswerError::Id { why: w, .. } if *w == why),
                "{id:?}: {err:?}"
            );
            // The log line escapes what the hook sent.
            assert!(!err.to_string().contains(['\r', '\n', '\0']), "{err}");
        }
    }

    #[test]
    fn statuses() {
        let bad: &[(AnswerEvent, &str, i64)] = &[
            // Never a final status, or not one at all.
            (PreFinish, r#"{"HTTPResponse": {"StatusCode": 100}}"#, 100),
            (PreFinish, r#"{"HTTPResponse": {"StatusCode": 101}}"#, 101),
            (PreFinish, r#"{"HTTPResponse": {"StatusCode": 199}}"#, 199),
            (PreFinish, r#"{"HTTPResponse": {"StatusCode": 600}}"#, 600),
            (PreFinish, r#"{"HTTPResponse": {"StatusCode": -1}}"#, -1),
            (
                PreFinish,
                r#"{"HTTPResponse": {"StatusCode": 70000}}"#,
                70000,
            ),
            (PreCreate, r#"{"HTTPResponse": {"StatusCode": 99}}"#, 99),
            // Redirects are not answers to a tus request.
            (PreFinish, r#"{"HTTPResponse": {"StatusCode": 302}}"#, 302),
            (PreCreate, r#"{"HTTPResponse": {"StatusCode": 301}}"#, 301),
            // A request that goes on is not answered with an error (the annotated
            // example's HTTPResponse in a pre-create without RejectUpload).
            (PreCreate, r#"{"HTTPResponse": {"StatusCode": 400}}"#, 400),
            (
                PreTerminate,
                r#"{"HTTPResponse": {"StatusCode": 500}}"#,
                500,
            ),
            // A refusal or a stop is not answered with a success.
            (
                PreCreate,
                r#"{"RejectUpload": true, "HTTPResponse": {"StatusCode": 201}}"#,
                201,
            ),
            (
                PreTerminate,
                r#"{"RejectTermination": true, "HTTPResponse": {"StatusCode": 204}}"#,
                204,
            ),
            (
                PostReceive,
                r#"{"StopUpload": true, "HTTPResponse": {"StatusCode": 200}}"#,
                200,
            ),
            // 204 and 205 carry no body: a body would be read as the next response.
            (
                PreFinish,
                r#"{"HTTPResponse": {"StatusCode": 204, "Body": "HTTP/1.1 200 OK"}}"#,
                204,
            ),
            (
                PreTerminate,
                r#"{"HTTPResponse": {"StatusCode": 205, "Body": "x"}}"#,
                205,
            ),
        ];
        for (event, json, want) in bad {
            let got = parse(*event, json);
            assert!(
                matches!(got, Err(AnswerError::Status { code, .. }) if code == *want),
                "{event:?} {json}: {got:?}"
            );
        }
    }

    #[test]
    fn header_fields() {
        let answer = |fields: &str| {
            parse(
                PreFinish,
                &format!(r#"{{"HTTPResponse": {{"Header": {fields}}}}}"#),
            )
        };
        assert_eq!(
            answer(r#"{"X-Processed-Url": "/f/1", "Cache-Control": "no-store", "X-T": "a\tb"}"#),
            Ok(proceed(response(
                None,
                "",
                &[
                    ("X-Processed-Url", "/f/1"),
                    ("Cache-Control", "no-store"),
                    ("X-T", "a\tb")
                ]
            )))
        );
        let name = |n: &str| AnswerError::HeaderName(shown(n));
        let value = |n: &str| AnswerError::HeaderValue(shown(n));
        let reserved = |n: &str| AnswerError::ReservedHeader(shown(n));
        let table: &[(&str, AnswerError)] = &[
            (r#"{"": "x"}"#, name("")),
            (r#"{"X A": "x"}"#, name("X A")),
            (r#"{"X-A:": "x"}"#, name("X-A:")),
            (r#"{"X-A\r\nSet-Cookie": "x"}"#, name("X-A\r\nSet-Cookie")),
            (r#"{"X-\u00e9": "x"}"#, name("X-é")),
            (r#"{"X-A": "a\r\nSet-Cookie: s=1"}"#, value("X-A")),
            (r#"{"X-A": "a\nb"}"#, value("X-A")),
            (r#"{"X-A": "a\rb"}"#, value("X-A")),
            (r#"{"X-A": "a\u0000b"}"#, value("X-A")),
            (r#"{"X-A": "a\u007fb"}"#, value("X-A")),
            (r#"{"X-A": "\u001b[31m"}"#, value("X-A")),
            (r#"{"Content-Length": "0"}"#, reserved("Content-Length")),
            (
                r#"{"transfer-encoding": "chunked"}"#,
                reserved("transfer-encoding"),
            ),
            (r#"{"Connection": "close"}"#, reserved("Connection")),
            (r#"{"Upgrade": "h2c"}"#, reserved("Upgrade")),
            (r#"{"Location": "/elsewhere"}"#, reserved("Location")),
            (r#"{"Upload-Offset": "0"}"#, reserved("Upload-Offset")),
            (r#"{"TUS-Resumable": "1.0.0"}"#, reserved("TUS-Resumable")),
            (
                r#"{"X-A": "1", "x-a": "2"}"#,
                AnswerError::DuplicateHeader(shown("x-a")),
            ),
            (
                r#"{"X-A": "1", "X-A": "2"}"#,
                AnswerError::DuplicateHeader(shown("X-A")),
            ),
        ];
        for (fields, want) in table {
            assert_eq!(answer(fields).as_ref(), Err(want), "{fields}");
        }

        let many = |n: usize, len: usize| {
            let fields: Vec<String> = (0..n)
                .map(|i| format!(r#""X-{i}": "{}""#, "v".repeat(len)))
                .collect();
            answer(&format!("{{{}}}", fields.join(",")))
        };
        assert!(many(MAX_HOOK_ANSWER_HEADERS, 1).is_ok());
        assert_eq!(
            many(MAX_HOOK_ANSWER_HEADERS + 1, 1),
            Err(AnswerError::TooManyHeaders)
        );
        assert!(many(4, MAX_HOOK_ANSWER_HEADER_BYTES / 4 - 8).is_ok());
        assert_eq!(
            many(4, MAX_HOOK_ANSWER_HEADER_BYTES / 4),
            Err(AnswerError::TooManyHeaders)
        );
    }

    #[test]
    fn metadata_and_storage() {
        let change = |inner: &str| parse(PreCreate, &format!(r#"{{"ChangeFileInfo": {inner}}}"#));
        let table: &[(&str, AnswerError)] = &[
            (
                r#"{"MetaData": {"file name": "x"}}"#,
                AnswerError::MetadataKey(shown("file name")),
            ),
            (
                r#"{"MetaData": {"a,b": "x"}}"#,
                AnswerError::MetadataKey(shown("a,b")),
            ),
            (
                r#"{"MetaData": {"": "x"}}"#,
                AnswerError::MetadataKey(shown("")),
            ),
            (
                r#"{"MetaData": {"k\n": "x"}}"#,
                AnswerError::MetadataKey(shown("k\n")),
            ),
            (
                r#"{"MetaData": {"clé": "x"}}"#,
                AnswerError::MetadataKey(shown("clé")),
            ),
            (
                r#"{"Storage": {"Path": "./elsewhere/presentation.pdf"}}"#,
                AnswerError::Unsupported("ChangeFileInfo.Storage"),
            ),
        ];
        for (inner, want) in table {
            assert_eq!(change(inner).as_ref(), Err(want), "{inner}");
        }
        // The header form is bounded as a client's is: 12 KiB of value is 16 KiB of base64.
        let value = "v".repeat(MAX_METADATA_BYTES * 3 / 4);
        assert_eq!(
            change(&format!(r#"{{"MetaData": {{"k": "{value}"}}}}"#)),
            Err(AnswerError::MetadataTooLarge)
        );
        let value = "v".repeat(MAX_METADATA_BYTES / 2);
        assert!(change(&format!(r#"{{"MetaData": {{"k": "{value}"}}}}"#)).is_ok());
    }

    /// Every prefix of a valid answer parses to something or to an error, for every
    /// event, and the errors read as one line.
    #[test]
    fn prefixes_never_panic() {
        let json = r#"{"HTTPResponse": {"StatusCode": 400, "Body": "b\n", "Header": {"X-A": "1"}},
            "RejectUpload": true, "ChangeFileInfo": {"ID": "k", "MetaData": {"a": "1"}},
            "StopUpload": false, "RejectTermination": false}"#;
        for end in 0..=json.len() {
            for event in EVENTS {
                if let Err(e) = parse_answer(event, &json.as_bytes()[..end]) {
                    assert!(!e.to_string().contains('\n'), "{e}");
                }
            }
        }
    }
}
