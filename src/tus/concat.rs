//! The concatenation extension as pure functions (tus-protocol §2.7, rustus-compat §2.3
//! step 4, §2.5): parsing `Upload-Concat`, the HEAD value, and the checks a final's
//! parts must pass.

use crate::storage::id::UploadId;
use crate::storage::layout::parse_upload_id;
use crate::tus::routes::{route, Route};

/// Most parts one final may name. A 64 KiB head holds at most ~1500 absolute URLs; this
/// bounds the work of one POST (each part is opened and stat'ed).
pub const MAX_CONCAT_PARTS: usize = 1024;

/// A parsed `Upload-Concat` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concat {
    /// `partial`: a part of a later final upload.
    Partial,
    /// `final;<url> <url> ...`: the parts in order. Invariant: not empty, at most
    /// [`MAX_CONCAT_PARTS`], no ID twice.
    Final(Vec<UploadId>),
}

/// Why an `Upload-Concat` value was refused (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConcatError {
    /// Neither `partial` nor `final;...`.
    Malformed,
    /// `final;` with no URL.
    NoParts,
    /// More than [`MAX_CONCAT_PARTS`] URLs.
    TooManyParts,
    /// A URL that does not name an upload of this server.
    BadUrl(String),
    /// The same upload named twice (the second URL naming it). One part named many times
    /// would make one small request write its bytes over and over: ~1,500 names fit in a
    /// head, so a 1 GiB part would become 1.5 TB of writes.
    RepeatedPart(String),
}

impl ConcatError {
    /// The one-line reason sent to the client.
    pub fn reason(&self) -> String {
        match self {
            ConcatError::Malformed => {
                "Upload-Concat must be `partial` or `final;<url> <url> ...`".to_string()
            }
            // rustus's text.
            ConcatError::NoParts => {
                "Upload-Concat header has no parts to create final upload.".to_string()
            }
            ConcatError::TooManyParts => {
                format!("Upload-Concat names more than {MAX_CONCAT_PARTS} parts")
            }
            ConcatError::BadUrl(url) => {
                let shown: String = url.chars().take(200).collect();
                format!("Upload-Concat part {shown:?} is not an upload URL of this server")
            }
            ConcatError::RepeatedPart(url) => {
                let shown: String = url.chars().take(200).collect();
                format!("Upload-Concat names a part more than once: {shown:?}; each part may be named once")
            }
        }
    }
}

/// Parses an `Upload-Concat` value against the base path `base` (`--url`, normalised:
/// empty or `/a[/b]`). A part is an absolute URL (`http://host/files/<id>`), an
/// absolute path (`/files/<id>`), either with a trailing slash, or a bare ID; its path
/// must route to an upload (the same ID validation as request paths). The value is
/// case-sensitive like rustus's (`partial`, `final;`); whitespace around the value,
/// after the `;` and between URLs is tolerated. An upload named twice, in any spelling,
/// is refused ([`ConcatError::RepeatedPart`]): unlike rustus, which copies it again.
pub fn parse_upload_concat(value: &[u8], base: &str) -> Result<Concat, ConcatError> {
    let value = std::str::from_utf8(value).map_err(|_| ConcatError::Malformed)?;
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if value == "partial" {
        return Ok(Concat::Partial);
    }
    let Some(list) = value.strip_prefix("final;") else {
        return Err(ConcatError::Malformed);
    };
    let mut parts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for url in list.split([' ', '\t']).filter(|s| !s.is_empty()) {
        if parts.len() == MAX_CONCAT_PARTS {
            return Err(ConcatError::TooManyParts);
        }
        let id = part_id(url, base).ok_or_else(|| ConcatError::BadUrl(url.to_string()))?;
        if !seen.insert(id) {
            return Err(ConcatError::RepeatedPart(url.to_string()));
        }
        parts.push(id);
    }
    if parts.is_empty() {
        return Err(ConcatError::NoParts);
    }
    Ok(Concat::Final(parts))
}

/// The upload ID a part URL names, if it names one under `base`.
fn part_id(url: &str, base: &str) -> Option<UploadId> {
    if let Some(id) = parse_upload_id(url.strip_suffix('/').unwrap_or(url)) {
        return Some(id); // a bare ID
    }
    let path = match url.split_once("://") {
        Some((scheme, rest)) => {
            if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphabetic()) {
                return None;
            }
            // The path starts at the first '/' after the authority.
            &rest[rest.find('/')?..]
        }
        None => url,
    };
    // A query or fragment is not part of the path.
    let path = path.split(['?', '#']).next().unwrap_or(path);
    match route(path, base) {
        Route::Upload(id) => Some(id),
        _ => None,
    }
}

/// The `Upload-Concat` value HEAD shows for a final, as rustus writes it: `final; `
/// then the parts as paths under the base, separated by spaces.
pub fn final_header(base: &str, parts: &[String]) -> String {
    let mut out = String::from("final;");
    for p in parts {
        out.push(' ');
        out.push_str(base);
        out.push('/');
        out.push_str(p);
    }
    out
}

/// What is known about one part when a final is created or assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartState {
    /// Created with `Upload-Concat: partial`.
    pub is_partial: bool,
    /// `None` while the part's length is deferred.
    pub length: Option<u64>,
    /// Bytes stored.
    pub offset: u64,
}

impl PartState {
    fn complete(&self) -> bool {
        self.length.is_some_and(|l| self.offset >= l)
    }
}

/// Why a final cannot be created from its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartsError {
    /// Part `.0` (its index) was not created as a partial upload (400).
    NotPartial(usize),
    /// Part `.0` is not complete and `concatenation-unfinished` is off (400).
    Unfinished(usize),
    /// Part `.0` has a deferred length, so the final's length cannot be known (400).
    DeferredLength(usize),
    /// The parts' lengths sum above `--max-file-size` or 2^63-1 (413).
    TooLarge,
}

/// The final's decision: its length (the sum of the parts' lengths) and whether every
/// part is complete (the final can be assembled now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalPlan {
    pub length: u64,
    pub ready: bool,
}

/// Checks a final's parts (in order) and sums their lengths.
pub fn plan_final(
    parts: &[PartState],
    allow_unfinished: bool,
    max_file_size: Option<u64>,
) -> Result<FinalPlan, PartsError> {
    let mut length: u64 = 0;
    let mut ready = true;
    for (i, p) in parts.iter().enumerate() {
        if !p.is_partial {
            return Err(PartsError::NotPartial(i));
        }
        let Some(len) = p.length else {
            return Err(if allow_unfinished {
                PartsError::DeferredLength(i)
            } else {
                PartsError::Unfinished(i)
            });
        };
        if !p.complete() {
            if !allow_unfinished {
                return Err(PartsError::Unfinished(i));
            }
            ready = false;
        }
        length = length.checked_add(len).ok_or(PartsError::TooLarge)?;
    }
    let cap = max_file_size
        .unwrap_or(crate::limits::MAX_TUS_INTEGER)
        .min(crate::limits::MAX_TUS_INTEGER);
    if length > cap {
        return Err(PartsError::TooLarge);
    }
    Ok(FinalPlan { length, ready })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "9e9dd6f5-44b5-4c1c-a0a6-43e1d9c7a0b1";
    const B: &str = "0b5d2a58-3f0e-4d7e-9d2b-7f1e6c1a2b3c";

    fn id(s: &str) -> UploadId {
        parse_upload_id(s).unwrap()
    }

    #[test]
    fn parse_table() {
        let a = id(A);
        let b = id(B);
        let ok: &[(&str, &str, Concat)] = &[
            ("partial", "/files", Concat::Partial),
            ("  partial ", "/files", Concat::Partial),
            (
                &format!("final;/files/{A} /files/{B}"),
                "/files",
                Concat::Final(vec![a, b]),
            ),
            (
                &format!("final; /files/{A}/ /files/{B}/"),
                "/files",
                Concat::Final(vec![a, b]),
            ),
            (
                &format!("final;http://h:1080/files/{A} https://x.example/files/{B}/"),
                "/files",
                Concat::Final(vec![a, b]),
            ),
            (
                &format!("final;{A}  {B}\t"),
                "/files",
                Concat::Final(vec![a, b]),
            ),
            // IDs a hook chose, bare or in URLs.
            (
                "final;my-part_1 http://h/files/db.key~2/",
                "/files",
                Concat::Final(vec![id("my-part_1"), id("db.key~2")]),
            ),
            (
                &format!("final;/{A} http://h/{B}"),
                "",
                Concat::Final(vec![a, b]),
            ),
            (
                &format!("final;/a/b/{A}?x=1"),
                "/a/b",
                Concat::Final(vec![a]),
            ),
        ];
        for (v, base, want) in ok {
            assert_eq!(
                parse_upload_concat(v.as_bytes(), base).as_ref(),
                Ok(want),
                "{v}"
            );
        }
        let bad: &[(&str, ConcatError)] = &[
            ("", ConcatError::Malformed),
            ("Partial", ConcatError::Malformed),
            ("partial;x", ConcatError::Malformed),
            ("final", ConcatError::Malformed),
            (&format!("final {A}"), ConcatError::Malformed),
            ("final;", ConcatError::NoParts),
            ("final;   ", ConcatError::NoParts),
            (
                &format!("final;/other/{A}"),
                ConcatError::BadUrl(format!("/other/{A}")),
            ),
            (
                "final;/files/not..an-id",
                ConcatError::BadUrl("/files/not..an-id".into()),
            ),
            (
                "final;/files/x.info",
                ConcatError::BadUrl("/files/x.info".into()),
            ),
            (
                &format!("final;/files/{A}/x"),
                ConcatError::BadUrl(format!("/files/{A}/x")),
            ),
            ("final;/files/", ConcatError::BadUrl("/files/".into())),
            (
                &format!("final;http:/files/{A}x"),
                ConcatError::BadUrl(format!("http:/files/{A}x")),
            ),
            (
                &format!("final;http://host-only{A}"),
                ConcatError::BadUrl(format!("http://host-only{A}")),
            ),
            (
                &format!("final;1ttp://h/files/{A}"),
                ConcatError::BadUrl(format!("1ttp://h/files/{A}")),
            ),
            // One upload twice, however it is spelled: refused at the second name.
            (
                &format!("final;{A}  {A}\t{B}"),
                ConcatError::RepeatedPart(A.into()),
            ),
            (
                &format!("final;/files/{A} /files/{B} /files/{A}"),
                ConcatError::RepeatedPart(format!("/files/{A}")),
            ),
            (
                &format!("final;/files/{A} http://h/files/{A}/"),
                ConcatError::RepeatedPart(format!("http://h/files/{A}/")),
            ),
            (
                &format!("final;/files/{B}/ {B}"),
                ConcatError::RepeatedPart(B.into()),
            ),
        ];
        for (v, want) in bad {
            assert_eq!(
                parse_upload_concat(v.as_bytes(), "/files").as_ref(),
                Err(want),
                "{v}"
            );
        }
        assert_eq!(
            parse_upload_concat(b"final;\xff", "/files"),
            Err(ConcatError::Malformed)
        );
        // MAX_CONCAT_PARTS distinct IDs parse; one more is too many.
        let distinct: Vec<String> = (0..=MAX_CONCAT_PARTS)
            .map(|n| format!("part-{n}"))
            .collect();
        let many = format!("final;{}", distinct[..MAX_CONCAT_PARTS].join(" "));
        assert!(parse_upload_concat(many.as_bytes(), "/files").is_ok());
        let too_many = format!("{many} {}", distinct[MAX_CONCAT_PARTS]);
        assert_eq!(
            parse_upload_concat(too_many.as_bytes(), "/files"),
            Err(ConcatError::TooManyParts)
        );
        for e in [
            ConcatError::Malformed,
            ConcatError::NoParts,
            ConcatError::TooManyParts,
            ConcatError::BadUrl("x".repeat(1000)),
            ConcatError::RepeatedPart("x".repeat(1000)),
        ] {
            assert!(!e.reason().is_empty() && e.reason().len() < 300);
        }
    }

    #[test]
    fn header_value_is_rustus_shape() {
        assert_eq!(
            final_header("/files", &[A.into(), B.into()]),
            format!("final; /files/{A} /files/{B}")
        );
        assert_eq!(final_header("", &[A.into()]), format!("final; /{A}"));
    }

    #[test]
    fn plan_table() {
        let part = |len: Option<u64>, off: u64| PartState {
            is_partial: true,
            length: len,
            offset: off,
        };
        let done = part(Some(5), 5);
        let half = part(Some(5), 2);
        let deferred = part(None, 3);
        let plain = PartState {
            is_partial: false,
            ..done
        };
        type Case = (
            Vec<PartState>,
            bool,
            Option<u64>,
            Result<FinalPlan, PartsError>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![done, done, done],
                false,
                None,
                Ok(FinalPlan {
                    length: 15,
                    ready: true,
                }),
            ),
            (
                vec![done, plain],
                false,
                None,
                Err(PartsError::NotPartial(1)),
            ),
            (
                vec![done, half],
                false,
                None,
                Err(PartsError::Unfinished(1)),
            ),
            (
                vec![done, half],
                true,
                None,
                Ok(FinalPlan {
                    length: 10,
                    ready: false,
                }),
            ),
            (vec![deferred], false, None, Err(PartsError::Unfinished(0))),
            (
                vec![deferred],
                true,
                None,
                Err(PartsError::DeferredLength(0)),
            ),
            (
                vec![done, done],
                false,
                Some(10),
                Ok(FinalPlan {
                    length: 10,
                    ready: true,
                }),
            ),
            (
                vec![done, done, done],
                false,
                Some(14),
                Err(PartsError::TooLarge),
            ),
            (
                vec![part(Some(u64::MAX), u64::MAX), done],
                false,
                None,
                Err(PartsError::TooLarge),
            ),
            (
                vec![part(Some(1 << 62), 1 << 62), part(Some(1 << 62), 1 << 62)],
                false,
                None,
                Err(PartsError::TooLarge),
            ),
            (
                vec![part(Some(0), 0)],
                false,
                None,
                Ok(FinalPlan {
                    length: 0,
                    ready: true,
                }),
            ),
        ];
        for (parts, unfinished, max, want) in cases {
            assert_eq!(plan_final(&parts, unfinished, max), want, "{parts:?}");
        }
    }
}
