//! The rules of each tus request, as pure functions from header values and upload
//! state to a decision. Numbers in comments refer to ../shared/spec/tus-protocol.md.

use crate::error::Error;
use crate::limits::MAX_TUS_INTEGER;

/// The one protocol version tusring speaks.
pub const TUS_VERSION: &str = "1.0.0";

/// The media type of PATCH bodies (and creation-with-upload POST bodies).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// §1.1: `Tus-Resumable` must name a version the server supports.
pub fn tus_resumable_ok(value: Option<&[u8]>) -> bool {
    value == Some(TUS_VERSION.as_bytes())
}

/// A tus integer (`Upload-Length`, `Upload-Offset`): ASCII digits only, no sign, at most
/// 2^63-1 (§1.1). Anything else is `None`.
pub fn parse_tus_integer(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        // 19 digits hold every value up to 2^63-1; longer strings overflow or pad.
        return leading_zero_padded(value);
    }
    let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    (n <= MAX_TUS_INTEGER).then_some(n)
}

/// Values longer than 19 digits are accepted only when the extra digits are leading zeros.
fn leading_zero_padded(value: &[u8]) -> Option<u64> {
    if value.len() <= 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let first_nonzero = value.iter().position(|&d| d != b'0').unwrap_or(value.len());
    let rest = &value[first_nonzero..];
    if rest.is_empty() {
        return Some(0);
    }
    if rest.len() > 19 {
        return None;
    }
    parse_tus_integer(rest)
}

/// §1.4: the body's media type must be `application/offset+octet-stream` (compared
/// case-insensitively; parameters are ignored).
pub fn is_offset_octet_stream(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let media = ct.split(|&b| b == b';').next().unwrap_or(b"");
    media
        .trim_ascii()
        .eq_ignore_ascii_case(OFFSET_OCTET_STREAM.as_bytes())
}

/// What the server is configured to accept at creation.
#[derive(Debug, Clone, Copy)]
pub struct CreateLimits {
    /// `creation-defer-length` is enabled.
    pub defer_enabled: bool,
    /// `--allow-empty`.
    pub allow_empty: bool,
    /// `--max-file-size`.
    pub max_file_size: Option<u64>,
}

/// §2.1, §2.3: the length of a new upload from `Upload-Length` and
/// `Upload-Defer-Length`. `Ok(None)` means deferred.
pub fn creation_length(
    upload_length: Option<&[u8]>,
    defer_length: Option<&[u8]>,
    limits: &CreateLimits,
) -> Result<Option<u64>, Error> {
    match (upload_length, defer_length) {
        (Some(_), Some(_)) => Err(Error::BadRequest(
            "Upload-Length and Upload-Defer-Length are mutually exclusive",
        )),
        (None, Some(defer)) => {
            if !limits.defer_enabled {
                Err(Error::BadRequest(
                    "Upload-Length header is required (creation-defer-length is disabled)",
                ))
            } else if defer != b"1" {
                Err(Error::BadRequest("Upload-Defer-Length must be 1"))
            } else {
                Ok(None)
            }
        }
        (Some(value), None) => {
            let n = parse_tus_integer(value).ok_or(Error::BadRequest(
                "Upload-Length must be a non-negative integer below 2^63",
            ))?;
            if n == 0 && !limits.allow_empty {
                return Err(Error::BadRequest(
                    "Upload-Length should be greater than zero",
                ));
            }
            if limits.max_file_size.is_some_and(|max| n > max) {
                return Err(Error::TooLarge(
                    "Upload-Length is above the maximum file size",
                ));
            }
            Ok(Some(n))
        }
        (None, None) => Err(Error::BadRequest("Upload-Length header is required")),
    }
}

/// The parts of a PATCH request the rules look at, already parsed.
#[derive(Debug, Clone, Copy, Default)]
pub struct PatchRequest {
    /// `Upload-Offset`.
    pub offset: u64,
    /// `Upload-Length` sent on the PATCH (sets a deferred length).
    pub new_length: Option<u64>,
    /// The body's Content-Length, when the body is not chunked.
    pub content_length: Option<u64>,
}

/// The state of the upload the PATCH is for.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadState {
    /// Bytes stored.
    pub offset: u64,
    /// Total length, `None` while deferred.
    pub length: Option<u64>,
    /// A final concatenation (PATCH is forbidden, §2.7).
    pub is_final: bool,
}

/// Server limits that apply to a PATCH.
#[derive(Debug, Clone, Copy, Default)]
pub struct PatchLimits {
    /// `--max-file-size`.
    pub max_file_size: Option<u64>,
    /// `--max-body-size`.
    pub max_body_size: Option<u64>,
}

/// What to do with an accepted PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchPlan {
    /// The upload is already complete and the offset matches: answer 204 with the
    /// unchanged offset and leave the body unread.
    AlreadyComplete,
    /// Read the body and store at most `limit` bytes of it at the upload's offset.
    Write {
        /// A deferred length this request sets (write it to the info record).
        set_length: Option<u64>,
        /// Most bytes this request may store: up to the length, the body limit and 2^63-1.
        limit: u64,
        /// The length after this request (`None`: still deferred).
        length: Option<u64>,
    },
}

/// §1.4, §2.3, §2.7: decides a PATCH against the upload's state. Header syntax (415,
/// 400) is checked before this; this decides 403, 409, 400, 413 and what to write.
pub fn patch_plan(
    req: &PatchRequest,
    state: &UploadState,
    limits: &PatchLimits,
) -> Result<PatchPlan, Error> {
    // §2.7: a final upload never takes PATCH.
    if state.is_final {
        return Err(Error::Forbidden("Upload is a final concatenation"));
    }
    // §1.4: the offset must match, else 409 and nothing changes.
    if req.offset != state.offset {
        return Err(Error::OffsetMismatch {
            stored: state.offset,
        });
    }
    // §2.3: a deferred length is set once, never below the offset or above the limit.
    let mut set_length = None;
    let length = match (state.length, req.new_length) {
        (Some(_), Some(_)) => return Err(Error::BadRequest("Upload-Length is already known")),
        (Some(len), None) => Some(len),
        (None, Some(new)) => {
            if new < state.offset {
                return Err(Error::BadRequest(
                    "Upload-Length is smaller than the upload's offset",
                ));
            }
            if limits.max_file_size.is_some_and(|max| new > max) {
                return Err(Error::TooLarge(
                    "Upload-Length is above the maximum file size",
                ));
            }
            set_length = Some(new);
            Some(new)
        }
        (None, None) => None,
    };
    // tusd: a PATCH at the offset of a complete upload changes nothing and reads nothing.
    if length == Some(state.offset) && set_length.is_none() {
        return Ok(PatchPlan::AlreadyComplete);
    }
    if let (Some(cl), Some(max)) = (req.content_length, limits.max_body_size) {
        if cl > max {
            return Err(Error::TooLarge(
                "Request body is above the maximum body size",
            ));
        }
    }
    // The room left: to the length, or for a deferred upload to --max-file-size / 2^63-1.
    let end = length
        .or(limits.max_file_size)
        .unwrap_or(MAX_TUS_INTEGER)
        .min(MAX_TUS_INTEGER);
    let room = end.saturating_sub(state.offset);
    // §1.4 (tusd): with a known Content-Length, an overrun is refused before reading.
    if let Some(cl) = req.content_length {
        if cl > room {
            return Err(Error::TooLarge("Request body would pass Upload-Length"));
        }
    }
    let limit = room.min(limits.max_body_size.unwrap_or(u64::MAX));
    Ok(PatchPlan::Write {
        set_length,
        limit,
        length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tus_integers() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"10", Some(10)),
            (b"007", Some(7)),
            (b"9223372036854775807", Some(i64::MAX as u64)),
            (b"9223372036854775808", None),
            (b"18446744073709551616", None),
            (b"0000000000000000000000042", Some(42)),
            (b"", None),
            (b"-1", None),
            (b"+1", None),
            (b" 1", None),
            (b"1 ", None),
            (b"1.0", None),
            (b"0x10", None),
            (b"abc", None),
        ];
        for (v, want) in cases {
            assert_eq!(
                parse_tus_integer(v),
                *want,
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn content_types() {
        assert!(is_offset_octet_stream(Some(
            b"application/offset+octet-stream"
        )));
        assert!(is_offset_octet_stream(Some(
            b"Application/Offset+Octet-Stream"
        )));
        assert!(is_offset_octet_stream(Some(
            b"application/offset+octet-stream; charset=x"
        )));
        assert!(!is_offset_octet_stream(Some(b"application/octet-stream")));
        assert!(!is_offset_octet_stream(Some(b"")));
        assert!(!is_offset_octet_stream(None));
    }

    #[test]
    fn resumable_header() {
        assert!(tus_resumable_ok(Some(b"1.0.0")));
        assert!(!tus_resumable_ok(Some(b"0.2.2")));
        assert!(!tus_resumable_ok(Some(b"1.0.0 ")));
        assert!(!tus_resumable_ok(None));
    }

    fn status(r: Result<Option<u64>, Error>) -> Result<Option<u64>, u16> {
        r.map_err(|e| e.status())
    }

    #[test]
    fn creation_lengths() {
        let on = CreateLimits {
            defer_enabled: true,
            allow_empty: false,
            max_file_size: Some(100),
        };
        let empty_ok = CreateLimits {
            allow_empty: true,
            ..on
        };
        let no_defer = CreateLimits {
            defer_enabled: false,
            ..on
        };
        type Case<'a> = (
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            CreateLimits,
            Result<Option<u64>, u16>,
        );
        let cases: &[Case] = &[
            (Some(b"10"), None, on, Ok(Some(10))),
            (Some(b"100"), None, on, Ok(Some(100))),
            (Some(b"101"), None, on, Err(413)),
            (Some(b"0"), None, on, Err(400)),
            (Some(b"0"), None, empty_ok, Ok(Some(0))),
            (Some(b"-5"), None, on, Err(400)),
            (Some(b"ten"), None, on, Err(400)),
            (Some(b"9223372036854775808"), None, empty_ok, Err(400)),
            (None, Some(b"1"), on, Ok(None)),
            (None, Some(b"2"), on, Err(400)),
            (None, Some(b"1"), no_defer, Err(400)),
            (Some(b"10"), Some(b"1"), on, Err(400)),
            (None, None, on, Err(400)),
        ];
        for (i, (len, defer, limits, want)) in cases.iter().enumerate() {
            assert_eq!(
                status(creation_length(*len, *defer, limits)),
                *want,
                "case {i}"
            );
        }
    }

    fn plan(
        offset: u64,
        new_length: Option<u64>,
        cl: Option<u64>,
        state: (u64, Option<u64>, bool),
        limits: PatchLimits,
    ) -> Result<PatchPlan, u16> {
        let req = PatchRequest {
            offset,
            new_length,
            content_length: cl,
        };
        let st = UploadState {
            offset: state.0,
            length: state.1,
            is_final: state.2,
        };
        patch_plan(&req, &st, &limits).map_err(|e| e.status())
    }

    #[test]
    fn patch_plans() {
        let none = PatchLimits::default();
        let write = |set_length, limit, length| {
            Ok(PatchPlan::Write {
                set_length,
                limit,
                length,
            })
        };
        // Success, exact fit, and the offset rules.
        assert_eq!(
            plan(0, None, Some(5), (0, Some(10), false), none),
            write(None, 10, Some(10))
        );
        assert_eq!(
            plan(5, None, Some(5), (5, Some(10), false), none),
            write(None, 5, Some(10))
        );
        assert_eq!(plan(4, None, Some(5), (5, Some(10), false), none), Err(409));
        assert_eq!(plan(6, None, Some(1), (5, Some(10), false), none), Err(409));
        // Overrun with a known length: 413 before reading. Chunked: limit to the room.
        assert_eq!(plan(5, None, Some(6), (5, Some(10), false), none), Err(413));
        assert_eq!(
            plan(5, None, None, (5, Some(10), false), none),
            write(None, 5, Some(10))
        );
        // Final uploads: 403 even at a matching offset.
        assert_eq!(plan(0, None, Some(1), (0, Some(10), true), none), Err(403));
        // Complete: 204 unchanged, body unread; a wrong offset is still 409.
        assert_eq!(
            plan(10, None, Some(3), (10, Some(10), false), none),
            Ok(PatchPlan::AlreadyComplete)
        );
        assert_eq!(
            plan(9, None, Some(3), (10, Some(10), false), none),
            Err(409)
        );
        // Deferred length: set once, not below the offset, not above the maximum.
        assert_eq!(
            plan(0, Some(8), Some(3), (0, None, false), none),
            write(Some(8), 8, Some(8))
        );
        assert_eq!(
            plan(4, Some(4), Some(0), (4, None, false), none),
            write(Some(4), 0, Some(4))
        );
        assert_eq!(plan(5, Some(4), None, (5, None, false), none), Err(400));
        assert_eq!(plan(0, Some(8), None, (0, Some(8), false), none), Err(400));
        let max = PatchLimits {
            max_file_size: Some(100),
            max_body_size: Some(16),
        };
        assert_eq!(plan(0, Some(101), None, (0, None, false), max), Err(413));
        // Deferred without a length: room up to --max-file-size, body up to -m.
        assert_eq!(
            plan(90, None, None, (90, None, false), max),
            write(None, 10, None)
        );
        assert_eq!(plan(0, None, Some(17), (0, Some(50), false), max), Err(413));
        assert_eq!(
            plan(0, None, None, (0, Some(50), false), max),
            write(None, 16, Some(50))
        );
        assert_eq!(
            plan(0, None, None, (0, None, false), none),
            write(None, MAX_TUS_INTEGER, None)
        );
    }
}
