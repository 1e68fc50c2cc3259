//! The resumable-uploads draft's rules as pure functions: which protocol a request
//! speaks, what a creation, an append, an offset retrieval and a cancellation may do,
//! how a request that stored a body settles the upload, the `Upload-Limit` tusring
//! announces, and the problem details (RFC 9457) of its refusals.
//!
//! Section numbers are the draft's: "-05 §x" is draft-ietf-httpbis-resumable-upload-05
//! (interop version 6), "-11 §x" is -11 (interop version 8). DESIGN.md ("Resumable
//! uploads (the IETF draft)") says what is taken from each and where tusring chooses.

use super::fields::{boolean, dictionary_of_integers, non_negative_integer};
use crate::limits::MAX_TUS_INTEGER;

/// The media type of an append's body (-05 §6, §9; -11 §4.4, §6).
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// The problem types (-05 §10, -11 §7).
pub const MISMATCHING_OFFSET: &str =
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
/// See [`MISMATCHING_OFFSET`].
pub const COMPLETED_UPLOAD: &str =
    "https://iana.org/assignments/http-problem-types#completed-upload";
/// See [`MISMATCHING_OFFSET`]; -11 only (§7.3).
pub const INCONSISTENT_LENGTH: &str =
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";

/// An interop version tusring speaks (`Upload-Draft-Interop-Version`, -05 §4.2, -11
/// Appendix B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interop {
    /// Interop version 6: drafts -04 and -05 (tus-js-client's `ietf-draft-05`, tusd).
    V6,
    /// Interop version 8: drafts -09 to -11 (Apple's URLSession since iOS 26.2).
    V8,
}

impl Interop {
    /// Every version spoken, oldest first.
    pub const ALL: [Interop; 2] = [Interop::V6, Interop::V8];

    /// The version's number.
    pub fn number(self) -> u64 {
        match self {
            Interop::V6 => 6,
            Interop::V8 => 8,
        }
    }

    /// The `Upload-Draft-Interop-Version` value, echoed in every 104.
    pub fn value(self) -> &'static str {
        match self {
            Interop::V6 => "6",
            Interop::V8 => "8",
        }
    }

    /// The `Upload-Limit` key of the remaining lifetime: `expires` before -06, then
    /// `max-age` (-05 §8.2, -11 §4.1.4).
    fn lifetime_key(self) -> &'static str {
        match self {
            Interop::V6 => "expires",
            Interop::V8 => "max-age",
        }
    }

    /// Whether the creation's 104 carries `Upload-Limit`: -11 §4.2.2 says it MUST
    /// (when limits exist); -05 §4 only allows it in any response.
    pub fn limit_in_104(self) -> bool {
        self == Interop::V8
    }

    /// Whether a field that is not a valid structured field is ignored (-11 §4.1.1 to
    /// §4.1.4: "Other values MUST cause the entire header field to be ignored") rather
    /// than refused (-05 defines no such rule: tusring answers 400).
    fn ignores_bad_fields(self) -> bool {
        self == Interop::V8
    }
}

/// Which protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// tus 1.0.
    Tus,
    /// The draft, at this interop version.
    Draft(Interop),
    /// An interop version tusring does not speak, on a request tus cannot take either:
    /// 400, naming the versions spoken.
    Unsupported,
}

/// Decides the protocol from `Upload-Draft-Interop-Version` (an Integer) and whether
/// tus would take the request anyway (`Tus-Resumable` sent, or a method tus exempts
/// from it: OPTIONS, GET). A request without the field is tus. A version tusring speaks
/// makes it the draft's, whatever else it carries. Another version is never the draft's
/// (no 104 goes to it, -05 §4.2, -11 Appendix B): tus takes it when it can, else 400.
pub fn detect(interop: Option<&[u8]>, tus_applies: bool) -> Protocol {
    let Some(value) = interop else {
        return Protocol::Tus;
    };
    let spoken = non_negative_integer(value)
        .and_then(|n| Interop::ALL.into_iter().find(|v| v.number() == n));
    match spoken {
        Some(v) => Protocol::Draft(v),
        None if tus_applies => Protocol::Tus,
        None => Protocol::Unsupported,
    }
}

/// The server's settings that the draft's rules and limits look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerRules {
    /// `--max-file-size`.
    pub max_file_size: Option<u64>,
    /// `--max-body-size`: the most one request may store (`max-append-size`).
    pub max_body_size: Option<u64>,
    /// `--allow-empty`: an upload of length 0 may be created.
    pub allow_empty: bool,
    /// The `creation-defer-length` extension: an upload may start without a known length.
    pub defer_enabled: bool,
}

/// The limits announced in `Upload-Limit` (-05 §8.2, -11 §4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max-size`: the upload's length once known, else `--max-file-size`.
    pub max_size: Option<u64>,
    /// `min-size`: 1 when empty uploads are refused, else 0 (always sent: -05 §8.2 wants
    /// `min-size=0` rather than an empty field).
    pub min_size: u64,
    /// `max-append-size`: `--max-body-size`.
    pub max_append_size: Option<u64>,
    /// `max-age` (`expires` in -05): seconds until an unfinished upload expires.
    pub max_age: Option<u64>,
}

impl Limits {
    /// The limits of an upload of `length` (known or not) that expires in `max_age`
    /// seconds (`None`: never); with `length` `None` and no upload, what OPTIONS says.
    pub fn new(rules: &ServerRules, length: Option<u64>, max_age: Option<u64>) -> Limits {
        Limits {
            max_size: length.or(rules.max_file_size),
            min_size: u64::from(!rules.allow_empty),
            max_append_size: rules.max_body_size,
            max_age,
        }
    }

    /// The `Upload-Limit` value for `v`.
    pub fn render(&self, v: Interop) -> String {
        let mut members: Vec<(&str, u64)> = Vec::with_capacity(4);
        if let Some(n) = self.max_size {
            members.push(("max-size", n));
        }
        members.push(("min-size", self.min_size));
        if let Some(n) = self.max_append_size {
            members.push(("max-append-size", n));
        }
        if let Some(n) = self.max_age {
            members.push((v.lifetime_key(), n));
        }
        dictionary_of_integers(&members)
    }
}

/// Why the draft refuses a request. Each maps to one status and one problem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: an interop version tusring does not speak (and tus cannot take the request).
    UnsupportedVersion,
    /// 400: a creation without a valid `Upload-Complete` (-05 §4, -11 §4.2.1), or an
    /// append without one in -11 (§4.4.1).
    CompleteRequired,
    /// 400: an append without a valid `Upload-Offset` (-05 §6, -11 §4.4.1).
    OffsetRequired,
    /// 400 (-05 only): the named field is not a valid structured field.
    Malformed(&'static str),
    /// 400 (-05 only): the named field is not allowed on this request (`Upload-Offset`
    /// on a creation, §4; the upload's fields on an offset retrieval, §5, or a
    /// cancellation, §7).
    NotAllowed(&'static str),
    /// 415: an append whose media type is not `application/partial-upload`.
    MediaType,
    /// 409: the append's offset is not the upload's (-05 §6, -11 §4.4.2).
    MismatchingOffset {
        /// The upload's offset.
        expected: u64,
        /// The request's.
        provided: u64,
    },
    /// 400: the upload is complete and takes no more (-05 §6, -11 §4.4.2).
    Completed,
    /// 400: the lengths the requests indicate do not agree, or the body would pass the
    /// upload's length (-05 §4, §6; -11 §4.1.3, §4.4.2).
    InconsistentLength(&'static str),
    /// 400: `--allow-empty` is off and the upload's length is 0.
    Empty,
    /// 400: the upload's length cannot be known and `creation-defer-length` is off.
    LengthRequired,
    /// 413: past `--max-file-size` or `--max-body-size`.
    TooLarge(&'static str),
    /// 403: a final concatenation (made through tus) takes no appends.
    Final,
}

impl Refusal {
    /// The status.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::MismatchingOffset { .. } => 409,
            Refusal::MediaType => 415,
            Refusal::TooLarge(_) => 413,
            Refusal::Final => 403,
            _ => 400,
        }
    }

    /// The one-line explanation (the problem's `detail`).
    pub fn detail(&self) -> String {
        match self {
            Refusal::UnsupportedVersion => format!(
                "Upload-Draft-Interop-Version is not one this server speaks ({})",
                Interop::ALL.map(|v| v.value()).join(", ")
            ),
            Refusal::CompleteRequired => {
                "Upload-Complete must be a structured-field boolean (?1 or ?0)".to_string()
            }
            Refusal::OffsetRequired => {
                "Upload-Offset must be a non-negative structured-field integer".to_string()
            }
            Refusal::Malformed(f) => format!("{f} is not a valid structured field"),
            Refusal::NotAllowed(f) => format!("{f} is not allowed on this request"),
            Refusal::MediaType => format!("Content-Type must be {PARTIAL_UPLOAD}"),
            Refusal::MismatchingOffset { expected, provided } => {
                format!("Upload-Offset {provided} does not match the upload's offset {expected}")
            }
            Refusal::Completed => "The upload is already complete".to_string(),
            Refusal::InconsistentLength(why) | Refusal::TooLarge(why) => why.to_string(),
            Refusal::Empty => "The upload's length must be greater than zero".to_string(),
            Refusal::LengthRequired => "The upload's length must be known: send Upload-Length, \
                                        or Upload-Complete: ?1 with a Content-Length"
                .to_string(),
            Refusal::Final => "The upload is a final concatenation".to_string(),
        }
    }

    /// The problem type and title (-05 §10, -11 §7), when the draft defines one for
    /// this refusal in `v`; else the answer is `about:blank`.
    pub fn problem_type(&self, v: Interop) -> Option<(&'static str, &'static str)> {
        match self {
            Refusal::MismatchingOffset { .. } => Some((
                MISMATCHING_OFFSET,
                "offset from request does not match offset of resource",
            )),
            Refusal::Completed => Some((COMPLETED_UPLOAD, "upload is already completed")),
            Refusal::InconsistentLength(_) if v == Interop::V8 => {
                Some((INCONSISTENT_LENGTH, "inconsistent length values for upload"))
            }
            _ => None,
        }
    }
}

/// A problem details object (RFC 9457 §3) as `application/problem+json`: `type` (or
/// `about:blank`), `title` (the status's reason phrase for `about:blank`), `status`,
/// `detail`, and for a mismatching offset the `expected-offset` and `provided-offset`
/// members (-05 §10.1, -11 §7.1).
pub fn problem_json(
    type_uri: Option<(&str, &str)>,
    status: u16,
    reason: &str,
    detail: &str,
    offsets: Option<(u64, u64)>,
) -> String {
    let (ty, title) = type_uri.unwrap_or(("about:blank", reason));
    let mut obj = serde_json::Map::new();
    obj.insert("type".into(), ty.into());
    obj.insert("title".into(), title.into());
    obj.insert("status".into(), status.into());
    if !detail.is_empty() {
        obj.insert("detail".into(), detail.into());
    }
    if let Some((expected, provided)) = offsets {
        obj.insert("expected-offset".into(), expected.into());
        obj.insert("provided-offset".into(), provided.into());
    }
    serde_json::Value::Object(obj).to_string()
}

/// The fields of a request that the draft's rules read, as received (a field sent more
/// than once is given joined with ", ", which no Item parses).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    /// `Upload-Complete`.
    pub complete: Option<&'a [u8]>,
    /// `Upload-Offset`.
    pub offset: Option<&'a [u8]>,
    /// `Upload-Length`.
    pub length: Option<&'a [u8]>,
    /// The body's `Content-Length`; `None` when it is chunked.
    pub content_length: Option<u64>,
}

/// `Upload-Length`: `Ok(None)` when absent, or when it is not a valid Integer and `v`
/// ignores such fields; 400 when `v` does not.
fn upload_length(v: Interop, value: Option<&[u8]>) -> Result<Option<u64>, Refusal> {
    let Some(raw) = value else {
        return Ok(None);
    };
    match non_negative_integer(raw) {
        Some(n) if n <= MAX_TUS_INTEGER => Ok(Some(n)),
        _ if v.ignores_bad_fields() => Ok(None),
        _ => Err(Refusal::Malformed("Upload-Length")),
    }
}

/// The length a request indicates (-05 §4, §6; -11 §4.1.3): `Upload-Length`, and with
/// `Upload-Complete: ?1` and a Content-Length, the offset plus the Content-Length. When
/// both are there they must agree.
fn indicated_length(
    upload_length: Option<u64>,
    complete: bool,
    offset: u64,
    content_length: Option<u64>,
) -> Result<Option<u64>, Refusal> {
    let implied = content_length
        .filter(|_| complete)
        .map(|cl| offset.saturating_add(cl));
    match (upload_length, implied) {
        (Some(a), Some(b)) if a != b => Err(Refusal::InconsistentLength(
            "Upload-Length does not match the length Upload-Complete: ?1 and Content-Length indicate",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// How much of a body may be stored from `offset` in an upload of `length` (known or
/// not): up to the length, else to `--max-file-size` (or 2^63-1), and at most
/// `--max-body-size`. A Content-Length that does not fit is refused before the body is
/// read: past the length is an inconsistent length, past the server's limits 413.
fn room(
    offset: u64,
    length: Option<u64>,
    content_length: Option<u64>,
    rules: &ServerRules,
) -> Result<u64, Refusal> {
    let end = length
        .or(rules.max_file_size)
        .unwrap_or(MAX_TUS_INTEGER)
        .min(MAX_TUS_INTEGER);
    let room = end.saturating_sub(offset);
    if let Some(cl) = content_length {
        if cl > room {
            return Err(match length {
                Some(_) => Refusal::InconsistentLength("The body would pass the upload's length"),
                None => Refusal::TooLarge("The body would pass the maximum file size"),
            });
        }
        if rules.max_body_size.is_some_and(|m| cl > m) {
            return Err(Refusal::TooLarge(
                "The body is above the maximum append size",
            ));
        }
    }
    Ok(room.min(rules.max_body_size.unwrap_or(u64::MAX)))
}

/// A new upload's length, checked against the server's rules.
fn checked_length(length: Option<u64>, rules: &ServerRules) -> Result<(), Refusal> {
    match length {
        None if !rules.defer_enabled => Err(Refusal::LengthRequired),
        Some(0) if !rules.allow_empty => Err(Refusal::Empty),
        Some(n) if rules.max_file_size.is_some_and(|m| n > m) => Err(Refusal::TooLarge(
            "The upload's length is above the maximum file size",
        )),
        _ => Ok(()),
    }
}

/// What a creation (-05 §4, -11 §4.2) will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreationPlan {
    /// `Upload-Complete: ?1`: the body is the whole representation.
    pub complete: bool,
    /// The upload's length, when the request indicates it.
    pub length: Option<u64>,
    /// Most bytes the body may store.
    pub limit: u64,
}

/// Decides a creation: `Upload-Complete` is required; -05 refuses `Upload-Offset` on
/// it; the lengths indicated must agree and fit the server's rules; a Content-Length
/// that does not fit is refused before anything exists.
pub fn creation_plan(
    v: Interop,
    fields: &Fields<'_>,
    rules: &ServerRules,
) -> Result<CreationPlan, Refusal> {
    let complete = fields
        .complete
        .and_then(boolean)
        .ok_or(Refusal::CompleteRequired)?;
    if v == Interop::V6 && fields.offset.is_some() {
        return Err(Refusal::NotAllowed("Upload-Offset"));
    }
    let declared = upload_length(v, fields.length)?;
    let length = indicated_length(declared, complete, 0, fields.content_length)?;
    checked_length(length, rules)?;
    let limit = room(0, length, fields.content_length, rules)?;
    Ok(CreationPlan {
        complete,
        length,
        limit,
    })
}

/// An append's fields, read before the upload is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendFields {
    /// `Upload-Offset`.
    pub offset: u64,
    /// `Upload-Complete` (-05: absent counts as ?0; -11 requires it).
    pub complete: bool,
    /// `Upload-Length`, when valid.
    pub length: Option<u64>,
    /// The body's Content-Length; `None` when chunked.
    pub content_length: Option<u64>,
}

/// Reads an append's fields (-05 §6, -11 §4.4.1): the media type must be
/// `application/partial-upload` (parameters allowed), `Upload-Offset` a non-negative
/// Integer, `Upload-Complete` a Boolean (-05 lets a request that does not complete the
/// upload leave it out).
pub fn append_fields(
    v: Interop,
    content_type: Option<&[u8]>,
    fields: &Fields<'_>,
) -> Result<AppendFields, Refusal> {
    if !is_partial_upload(content_type) {
        return Err(Refusal::MediaType);
    }
    let offset = fields
        .offset
        .and_then(non_negative_integer)
        .filter(|&n| n <= MAX_TUS_INTEGER)
        .ok_or(Refusal::OffsetRequired)?;
    let complete = match (fields.complete.map(boolean), v) {
        (Some(Some(b)), _) => b,
        (None, Interop::V6) => false,
        (Some(None), Interop::V6) => return Err(Refusal::Malformed("Upload-Complete")),
        (_, Interop::V8) => return Err(Refusal::CompleteRequired),
    };
    Ok(AppendFields {
        offset,
        complete,
        length: upload_length(v, fields.length)?,
        content_length: fields.content_length,
    })
}

/// Whether a `Content-Type` is `application/partial-upload` (case-insensitive,
/// parameters ignored).
pub fn is_partial_upload(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(|&b| b == b';')
            .next()
            .unwrap_or(b"")
            .trim_ascii()
            .eq_ignore_ascii_case(PARTIAL_UPLOAD.as_bytes())
    })
}

/// What the rules know of the upload an append is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadFacts {
    /// Bytes stored.
    pub offset: u64,
    /// Its length, once known.
    pub length: Option<u64>,
    /// A final concatenation (created through tus).
    pub is_final: bool,
}

impl UploadFacts {
    /// Complete: its length is known and reached. One upload underneath for both
    /// protocols, so completeness is tus's (as in tusd); see DESIGN.md.
    pub fn is_complete(&self) -> bool {
        self.length == Some(self.offset)
    }
}

/// What an accepted append does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendPlan {
    /// Store at most `limit` bytes at the upload's offset; `set_length` is the length
    /// this request makes known (record it first); `complete` is `Upload-Complete`.
    Write {
        /// Most bytes to store.
        limit: u64,
        /// The upload's length, newly known.
        set_length: Option<u64>,
        /// The request completes the upload once its body is received.
        complete: bool,
    },
    /// An empty `Upload-Complete: ?1` append at the end of an upload already complete:
    /// nothing changes and the answer is the completion's (so a client that lost the
    /// answer of the request that completed it, or reached the length with ?0, can
    /// finish).
    AlreadyComplete,
}

/// Decides an append against the upload (-05 §6, -11 §4.4.2).
///
/// In this order: a final takes no appends (403); a complete upload takes nothing
/// (400 completed-upload; in -11 a non-empty body is an inconsistent length), except an
/// empty ?1 at its offset; the offset must be the upload's (409); the lengths the
/// request indicates must agree with each other and with the upload's (400); the body
/// must fit (400 past the length, 413 past the server's limits).
pub fn append_plan(
    v: Interop,
    req: &AppendFields,
    upload: &UploadFacts,
    rules: &ServerRules,
) -> Result<AppendPlan, Refusal> {
    if upload.is_final {
        return Err(Refusal::Final);
    }
    let empty = req.content_length == Some(0);
    if upload.is_complete() {
        return if req.complete && empty && req.offset == upload.offset {
            Ok(AppendPlan::AlreadyComplete)
        } else if v == Interop::V8 && !empty {
            Err(Refusal::InconsistentLength(
                "The upload is complete: nothing can be appended to it",
            ))
        } else {
            Err(Refusal::Completed)
        };
    }
    if req.offset != upload.offset {
        return Err(Refusal::MismatchingOffset {
            expected: upload.offset,
            provided: req.offset,
        });
    }
    let indicated = indicated_length(req.length, req.complete, req.offset, req.content_length)?;
    let set_length = match (upload.length, indicated) {
        (Some(known), Some(new)) if known != new => {
            return Err(Refusal::InconsistentLength(
                "The length this request indicates is not the upload's length",
            ))
        }
        (Some(_), _) => None,
        (None, Some(new)) if new < upload.offset => {
            return Err(Refusal::InconsistentLength(
                "The length this request indicates is smaller than the upload's offset",
            ))
        }
        (None, Some(new)) if rules.max_file_size.is_some_and(|m| new > m) => {
            return Err(Refusal::TooLarge(
                "The upload's length is above the maximum file size",
            ))
        }
        (None, new) => new,
    };
    let length = upload.length.or(set_length);
    let limit = room(upload.offset, length, req.content_length, rules)?;
    Ok(AppendPlan::Write {
        limit,
        set_length,
        complete: req.complete,
    })
}

/// -05 §5 and §7: an offset retrieval must not carry `Upload-Offset`, `Upload-Complete`
/// or `Upload-Length`, a cancellation not the first two (400). -11 drops both rules.
pub fn check_no_state_fields(
    v: Interop,
    fields: &Fields<'_>,
    length_too: bool,
) -> Result<(), Refusal> {
    if v != Interop::V6 {
        return Ok(());
    }
    if fields.offset.is_some() {
        return Err(Refusal::NotAllowed("Upload-Offset"));
    }
    if fields.complete.is_some() {
        return Err(Refusal::NotAllowed("Upload-Complete"));
    }
    if length_too && fields.length.is_some() {
        return Err(Refusal::NotAllowed("Upload-Length"));
    }
    Ok(())
}

/// How a request that stored a body leaves the upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Complete; `set_length` when its length became known only now (an
    /// `Upload-Complete: ?1` chunked body of an upload of unknown length).
    Complete {
        /// The length to record.
        set_length: Option<u64>,
    },
    /// Not complete: more can be appended.
    Incomplete,
    /// `Upload-Complete: ?1`, the body fully received, but the upload does not end at
    /// its length (a chunked body shorter than the length): 400, inconsistent length;
    /// the bytes stay and the upload can be resumed.
    ShortOfLength,
}

/// Settles the upload after a body (-05 §4, §6; -11 §4.1.2, §4.2.2, §4.4.2): complete
/// when the request said ?1 and its body was fully received, or (tus's completeness,
/// the same upload underneath) when the stored bytes reached a known length.
pub fn settle(
    complete_asked: bool,
    body_received: bool,
    end_offset: u64,
    length: Option<u64>,
) -> Settled {
    match length {
        Some(len) if len == end_offset => Settled::Complete { set_length: None },
        None if complete_asked && body_received => Settled::Complete {
            set_length: Some(end_offset),
        },
        Some(_) if complete_asked && body_received => Settled::ShortOfLength,
        _ => Settled::Incomplete,
    }
}

/// The success status of a creation or an append: 201 for a creation and for an
/// append that completes the upload (-05 §4, §6; -11 §4.2.2 leaves the completing
/// answer to the resource, and a creation that completes gets 201 here, so the append
/// completing it answers as the creation would have); an append that does not complete
/// gets 201 in -05 (§6) and 204 in -11 (§4.4.3).
pub fn success_status(v: Interop, creation: bool, complete: bool) -> u16 {
    match (creation || complete, v) {
        (true, _) | (false, Interop::V6) => 201,
        (false, Interop::V8) => 204,
    }
}

/// A `Upload-Complete` value.
pub fn complete_value(complete: bool) -> &'static str {
    if complete {
        "?1"
    } else {
        "?0"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Interop::{V6, V8};

    #[test]
    fn protocol_detection() {
        let cases: &[(Option<&[u8]>, bool, Protocol)] = &[
            (None, false, Protocol::Tus),
            (None, true, Protocol::Tus),
            (Some(b"6"), false, Protocol::Draft(V6)),
            (Some(b"8"), true, Protocol::Draft(V8)),
            (Some(b" 8 "), false, Protocol::Draft(V8)),
            (Some(b"8;x=1"), false, Protocol::Draft(V8)),
            // Versions tusring does not speak: tus when tus takes the request, else 400.
            (Some(b"7"), false, Protocol::Unsupported),
            (Some(b"7"), true, Protocol::Tus),
            (Some(b"5"), false, Protocol::Unsupported),
            (Some(b"3"), true, Protocol::Tus),
            (Some(b"06"), false, Protocol::Draft(V6)),
            (Some(b"6.0"), false, Protocol::Unsupported),
            (Some(b"-6"), false, Protocol::Unsupported),
            (Some(b"six"), false, Protocol::Unsupported),
            (Some(b"6, 8"), false, Protocol::Unsupported),
            (Some(b""), true, Protocol::Tus),
        ];
        for (value, tus, want) in cases {
            assert_eq!(detect(*value, *tus), *want, "{value:?} tus {tus}");
        }
    }

    #[test]
    fn upload_limit_values() {
        let rules = ServerRules {
            max_file_size: Some(1000),
            max_body_size: Some(100),
            allow_empty: false,
            defer_enabled: true,
        };
        let l = Limits::new(&rules, None, Some(60));
        assert_eq!(
            l.render(V8),
            "max-size=1000, min-size=1, max-append-size=100, max-age=60"
        );
        assert_eq!(
            l.render(V6),
            "max-size=1000, min-size=1, max-append-size=100, expires=60"
        );
        // An upload of known length: max-size is its length.
        assert_eq!(
            Limits::new(&rules, Some(5), None).render(V8),
            "max-size=5, min-size=1, max-append-size=100"
        );
        // No limits at all: min-size=0, never an empty field (-05 §8.2).
        let open = ServerRules {
            allow_empty: true,
            ..ServerRules::default()
        };
        assert_eq!(Limits::new(&open, None, None).render(V6), "min-size=0");
    }

    fn fields<'a>(
        complete: Option<&'a [u8]>,
        offset: Option<&'a [u8]>,
        length: Option<&'a [u8]>,
        cl: Option<u64>,
    ) -> Fields<'a> {
        Fields {
            complete,
            offset,
            length,
            content_length: cl,
        }
    }

    #[test]
    fn creation_plans() {
        let rules = ServerRules {
            max_file_size: Some(1000),
            max_body_size: None,
            allow_empty: false,
            defer_enabled: true,
        };
        let plan = |complete, length| {
            Ok(CreationPlan {
                complete,
                length,
                limit: length.unwrap_or(1000),
            })
        };
        type Case<'a> = (Interop, Fields<'a>, Result<CreationPlan, u16>);
        let cases: &[Case] = &[
            // Whole upload in one request: the length is the Content-Length.
            (
                V8,
                fields(Some(b"?1"), None, None, Some(100)),
                plan(true, Some(100)),
            ),
            (
                V8,
                fields(Some(b"?1"), None, Some(b"100"), Some(100)),
                plan(true, Some(100)),
            ),
            // Both indicators must agree (-05 §4 400, -11 §4.1.3).
            (
                V8,
                fields(Some(b"?1"), None, Some(b"99"), Some(100)),
                Err(400),
            ),
            (
                V6,
                fields(Some(b"?1"), None, Some(b"99"), Some(100)),
                Err(400),
            ),
            // ?0: the Content-Length is a part; the length is Upload-Length if any.
            (
                V8,
                fields(Some(b"?0"), None, Some(b"500"), Some(100)),
                plan(false, Some(500)),
            ),
            (
                V8,
                fields(Some(b"?0"), None, None, Some(100)),
                plan(false, None),
            ),
            (
                V8,
                fields(Some(b"?0"), None, None, Some(0)),
                plan(false, None),
            ),
            // Chunked ?1 without Upload-Length: known at the end.
            (V8, fields(Some(b"?1"), None, None, None), plan(true, None)),
            // Upload-Complete is required and must be a boolean.
            (V8, fields(None, None, Some(b"10"), Some(10)), Err(400)),
            (
                V8,
                fields(Some(b"1"), None, Some(b"10"), Some(10)),
                Err(400),
            ),
            // -05 refuses Upload-Offset on a creation; -11 ignores it.
            (
                V6,
                fields(Some(b"?1"), Some(b"0"), None, Some(10)),
                Err(400),
            ),
            (
                V8,
                fields(Some(b"?1"), Some(b"0"), None, Some(10)),
                plan(true, Some(10)),
            ),
            // A malformed Upload-Length: 400 in -05, ignored in -11.
            (
                V6,
                fields(Some(b"?0"), None, Some(b"ten"), Some(1)),
                Err(400),
            ),
            (
                V8,
                fields(Some(b"?0"), None, Some(b"ten"), Some(1)),
                plan(false, None),
            ),
            // The server's rules: empty, too large, body past the length.
            (V8, fields(Some(b"?1"), None, None, Some(0)), Err(400)),
            (
                V8,
                fields(Some(b"?0"), None, Some(b"1001"), Some(0)),
                Err(413),
            ),
            (V8, fields(Some(b"?1"), None, None, Some(1001)), Err(413)),
            (
                V8,
                fields(Some(b"?0"), None, Some(b"10"), Some(11)),
                Err(400),
            ),
            (V8, fields(Some(b"?0"), None, None, Some(1001)), Err(413)),
        ];
        for (i, (v, f, want)) in cases.iter().enumerate() {
            let got = creation_plan(*v, f, &rules).map_err(|r| r.status());
            assert_eq!(got, *want, "case {i}: {v:?} {f:?}");
        }
        let no_defer = ServerRules {
            defer_enabled: false,
            ..rules
        };
        assert_eq!(
            creation_plan(V8, &fields(Some(b"?0"), None, None, Some(5)), &no_defer),
            Err(Refusal::LengthRequired)
        );
        let with_body_limit = ServerRules {
            max_body_size: Some(50),
            ..rules
        };
        assert_eq!(
            creation_plan(V8, &fields(Some(b"?0"), None, None, None), &with_body_limit),
            Ok(CreationPlan {
                complete: false,
                length: None,
                limit: 50
            })
        );
        assert_eq!(
            creation_plan(
                V8,
                &fields(Some(b"?0"), None, None, Some(51)),
                &with_body_limit
            )
            .map_err(|r| r.status()),
            Err(413)
        );
    }

    #[test]
    fn append_field_reading() {
        let pu: Option<&[u8]> = Some(b"application/partial-upload");
        let f = |complete, offset| fields(complete, offset, None, Some(5));
        let ok = |complete| {
            Ok(AppendFields {
                offset: 10,
                complete,
                length: None,
                content_length: Some(5),
            })
        };
        assert_eq!(
            append_fields(V8, pu, &f(Some(b"?1"), Some(b"10"))),
            ok(true)
        );
        assert_eq!(
            append_fields(
                V8,
                Some(b"Application/Partial-Upload; x=1"),
                &f(Some(b"?0"), Some(b"10"))
            ),
            ok(false)
        );
        assert_eq!(
            append_fields(
                V8,
                Some(b"application/offset+octet-stream"),
                &f(Some(b"?0"), Some(b"10"))
            ),
            Err(Refusal::MediaType)
        );
        assert_eq!(
            append_fields(V8, None, &f(Some(b"?0"), Some(b"10"))),
            Err(Refusal::MediaType)
        );
        assert_eq!(
            append_fields(V8, pu, &f(Some(b"?0"), None)),
            Err(Refusal::OffsetRequired)
        );
        assert_eq!(
            append_fields(V8, pu, &f(Some(b"?0"), Some(b"-1"))),
            Err(Refusal::OffsetRequired)
        );
        assert_eq!(
            append_fields(V8, pu, &f(Some(b"?0"), Some(b"1.0"))),
            Err(Refusal::OffsetRequired)
        );
        // -11 requires Upload-Complete; -05 takes its absence as ?0.
        assert_eq!(
            append_fields(V8, pu, &f(None, Some(b"10"))),
            Err(Refusal::CompleteRequired)
        );
        assert_eq!(
            append_fields(V8, pu, &f(Some(b"yes"), Some(b"10"))),
            Err(Refusal::CompleteRequired)
        );
        assert_eq!(append_fields(V6, pu, &f(None, Some(b"10"))), ok(false));
        assert_eq!(
            append_fields(V6, pu, &f(Some(b"yes"), Some(b"10"))),
            Err(Refusal::Malformed("Upload-Complete"))
        );
    }

    #[test]
    fn append_plans() {
        let rules = ServerRules {
            max_file_size: Some(1000),
            max_body_size: Some(100),
            allow_empty: false,
            defer_enabled: true,
        };
        let req = |offset, complete, length, cl| AppendFields {
            offset,
            complete,
            length,
            content_length: cl,
        };
        let up = |offset, length| UploadFacts {
            offset,
            length,
            is_final: false,
        };
        let write = |limit, set_length, complete| {
            Ok(AppendPlan::Write {
                limit,
                set_length,
                complete,
            })
        };
        let status = |r: Result<AppendPlan, Refusal>| r.map_err(|e| e.status());
        type Case = (Interop, AppendFields, UploadFacts, Result<AppendPlan, u16>);
        let cases: &[Case] = &[
            // A part, then the last part.
            (
                V8,
                req(10, false, None, Some(20)),
                up(10, Some(50)),
                write(40, None, false),
            ),
            (
                V8,
                req(30, true, None, Some(20)),
                up(30, Some(50)),
                write(20, None, true),
            ),
            // ?1 with a Content-Length makes an unknown length known.
            (
                V8,
                req(30, true, None, Some(20)),
                up(30, None),
                write(20, Some(50), true),
            ),
            (
                V8,
                req(30, false, Some(70), Some(20)),
                up(30, None),
                write(40, Some(70), false),
            ),
            // Chunked ?1 of unknown length: room to the maximum file size (and body size).
            (
                V8,
                req(30, true, None, None),
                up(30, None),
                write(100, None, true),
            ),
            // The offset must match: 409.
            (V8, req(9, false, None, Some(1)), up(10, Some(50)), Err(409)),
            (V6, req(11, false, None, Some(1)), up(10, None), Err(409)),
            // Inconsistent lengths: 400.
            (
                V8,
                req(30, true, None, Some(10)),
                up(30, Some(50)),
                Err(400),
            ),
            (
                V8,
                req(30, true, Some(60), Some(20)),
                up(30, None),
                Err(400),
            ),
            (
                V8,
                req(30, false, Some(60), Some(20)),
                up(30, Some(50)),
                Err(400),
            ),
            (
                V8,
                req(30, false, Some(20), Some(0)),
                up(30, None),
                Err(400),
            ),
            // Past the length: 400; past the server's limits: 413.
            (
                V8,
                req(30, false, None, Some(21)),
                up(30, Some(50)),
                Err(400),
            ),
            (
                V8,
                req(30, false, Some(1001), Some(1)),
                up(30, None),
                Err(413),
            ),
            (V8, req(30, false, None, Some(101)), up(30, None), Err(413)),
            (V8, req(950, false, None, Some(60)), up(950, None), Err(413)),
            // A complete upload: the empty ?1 answers as the completion; anything
            // else is refused (-11: a body is an inconsistent length).
            (
                V8,
                req(50, true, None, Some(0)),
                up(50, Some(50)),
                Ok(AppendPlan::AlreadyComplete),
            ),
            (
                V8,
                req(50, false, None, Some(0)),
                up(50, Some(50)),
                Err(400),
            ),
            (V8, req(50, true, None, Some(5)), up(50, Some(50)), Err(400)),
            (V8, req(40, true, None, Some(0)), up(50, Some(50)), Err(400)),
            (
                V6,
                req(50, false, None, Some(5)),
                up(50, Some(50)),
                Err(400),
            ),
            // A final takes no appends.
            (
                V8,
                req(0, false, None, Some(1)),
                UploadFacts {
                    offset: 0,
                    length: Some(5),
                    is_final: true,
                },
                Err(403),
            ),
        ];
        for (i, (v, r, u, want)) in cases.iter().enumerate() {
            assert_eq!(
                status(append_plan(*v, r, u, &rules)),
                *want,
                "case {i}: {r:?} {u:?}"
            );
        }
        // The problem types each refusal carries.
        let completed = append_plan(
            V6,
            &req(50, false, None, Some(5)),
            &up(50, Some(50)),
            &rules,
        );
        assert_eq!(completed, Err(Refusal::Completed));
        let inconsistent =
            append_plan(V8, &req(50, true, None, Some(5)), &up(50, Some(50)), &rules);
        assert_eq!(
            inconsistent.unwrap_err().problem_type(V8).map(|p| p.0),
            Some(INCONSISTENT_LENGTH)
        );
        let mismatch = append_plan(V8, &req(9, false, None, Some(1)), &up(10, None), &rules);
        assert_eq!(
            mismatch,
            Err(Refusal::MismatchingOffset {
                expected: 10,
                provided: 9
            })
        );
    }

    #[test]
    fn settling() {
        use Settled::*;
        // (Upload-Complete asked, body fully received, end offset, length) → settled
        type Case = ((bool, bool, u64, Option<u64>), Settled);
        let cases: &[Case] = &[
            ((true, true, 50, Some(50)), Complete { set_length: None }),
            (
                (true, true, 50, None),
                Complete {
                    set_length: Some(50),
                },
            ),
            ((true, true, 40, Some(50)), ShortOfLength),
            // A body cut short never completes, whatever it asked.
            ((true, false, 40, Some(50)), Incomplete),
            ((true, false, 40, None), Incomplete),
            // ?0 reaching the known length: complete (tus's rule, one upload).
            ((false, true, 50, Some(50)), Complete { set_length: None }),
            ((false, true, 40, Some(50)), Incomplete),
            ((false, true, 40, None), Incomplete),
        ];
        for ((asked, received, end, length), want) in cases {
            assert_eq!(settle(*asked, *received, *end, *length), *want);
        }
    }

    #[test]
    fn statuses_and_problems() {
        assert_eq!(success_status(V6, true, false), 201);
        assert_eq!(success_status(V8, true, false), 201);
        assert_eq!(success_status(V8, false, true), 201);
        assert_eq!(success_status(V6, false, false), 201);
        assert_eq!(success_status(V8, false, false), 204);
        let body = problem_json(
            Refusal::MismatchingOffset {
                expected: 100,
                provided: 200,
            }
            .problem_type(V8),
            409,
            "Conflict",
            "d",
            Some((100, 200)),
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], MISMATCHING_OFFSET);
        assert_eq!(v["expected-offset"], 100);
        assert_eq!(v["provided-offset"], 200);
        assert_eq!(v["status"], 409);
        let blank: serde_json::Value =
            serde_json::from_str(&problem_json(None, 413, "Content Too Large", "x", None)).unwrap();
        assert_eq!(blank["type"], "about:blank");
        assert_eq!(blank["title"], "Content Too Large");
        // -05 has no inconsistent-length type: about:blank there.
        assert_eq!(Refusal::InconsistentLength("x").problem_type(V6), None);
        assert!(Refusal::UnsupportedVersion.detail().contains("6, 8"));
    }

    #[test]
    fn state_fields_on_head_and_delete() {
        let f = fields(None, Some(b"1"), None, None);
        assert_eq!(
            check_no_state_fields(V6, &f, true),
            Err(Refusal::NotAllowed("Upload-Offset"))
        );
        assert_eq!(check_no_state_fields(V8, &f, true), Ok(()));
        let l = fields(None, None, Some(b"1"), None);
        assert_eq!(
            check_no_state_fields(V6, &l, true),
            Err(Refusal::NotAllowed("Upload-Length"))
        );
        assert_eq!(check_no_state_fields(V6, &l, false), Ok(()));
        let c = fields(Some(b"?1"), None, None, None);
        assert_eq!(
            check_no_state_fields(V6, &c, false),
            Err(Refusal::NotAllowed("Upload-Complete"))
        );
    }
}
