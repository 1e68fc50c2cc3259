//! rustus's `getting` extension (GET of an upload's bytes) as pure functions: the
//! `Range` header, the media type from a file name, and `Content-Disposition`.

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) range: send everything, 200. Multiple ranges land here too.
    Full,
    /// One satisfiable range: bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// Not satisfiable: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Parses `Range` (RFC 9110 §14.2) for a representation of `len` bytes. A header that
/// is not a `bytes` range, is malformed, or asks for several ranges is ignored (200).
pub fn parse_range(value: Option<&str>, len: u64) -> RangeAsk {
    let Some(v) = value else {
        return RangeAsk::Full;
    };
    let v = v.trim();
    let Some((unit, spec)) = v.split_once('=') else {
        return RangeAsk::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAsk::Full;
    }
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeAsk::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeAsk::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            // Absurdly long numbers saturate: still "past the end".
            Some(s.parse().unwrap_or(u64::MAX))
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // "-n": the last n bytes.
        (true, false) => match num(b) {
            None => RangeAsk::Full,
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if len == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part {
                start: len - n.min(len),
                end: len - 1,
            },
        },
        // "a-": from a to the end.
        (false, true) => match num(a) {
            None => RangeAsk::Full,
            Some(s) if s >= len => RangeAsk::Unsatisfiable,
            Some(s) => RangeAsk::Part {
                start: s,
                end: len - 1,
            },
        },
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= len {
                    RangeAsk::Unsatisfiable
                } else {
                    RangeAsk::Part {
                        start: s,
                        end: e.min(len - 1),
                    }
                }
            }
            _ => RangeAsk::Full,
        },
        (true, true) => RangeAsk::Full,
    }
}

/// The media type for a file name, from its extension (a small table; anything
/// else is `application/octet-stream`).
pub fn content_type(filename: Option<&str>) -> &'static str {
    let ext = filename
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt") => "text/plain; charset=utf-8",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("mp4") => "video/mp4",
        Some("mp3") => "audio/mpeg",
        Some("wav") => "audio/wav",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// `inline` for the types a browser shows (image, text, audio, video, JavaScript, JSON,
/// wasm), as actix-files decides; `attachment` otherwise.
pub fn is_inline(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let top = essence.split('/').next().unwrap_or("");
    matches!(top, "image" | "text" | "audio" | "video")
        || matches!(
            essence,
            "application/javascript" | "application/json" | "application/wasm"
        )
}

/// `Content-Disposition` for a download of `filename` (its quotes and backslashes
/// escaped, control characters dropped) with the given media type.
pub fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let Some(name) = filename else {
        return kind.to_string();
    };
    let mut out = String::with_capacity(kind.len() + name.len() + 13);
    out.push_str(kind);
    out.push_str("; filename=\"");
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAsk::*;

    #[test]
    fn ranges() {
        let cases: &[(Option<&str>, u64, RangeAsk)] = &[
            (None, 10, Full),
            (Some("bytes=0-4"), 10, Part { start: 0, end: 4 }),
            (Some("bytes=2-2"), 10, Part { start: 2, end: 2 }),
            (Some("bytes=5-100"), 10, Part { start: 5, end: 9 }),
            (Some("bytes=3-"), 10, Part { start: 3, end: 9 }),
            (Some("bytes=-3"), 10, Part { start: 7, end: 9 }),
            (Some("bytes=-30"), 10, Part { start: 0, end: 9 }),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=10-20"), 10, Unsatisfiable),
            (Some("bytes=0-0"), 0, Unsatisfiable),
            (Some("bytes=-5"), 0, Unsatisfiable),
            (Some("bytes=99999999999999999999999-"), 10, Unsatisfiable),
            (Some("bytes=5-2"), 10, Full),
            (Some("bytes=0-1,3-4"), 10, Full),
            (Some("items=0-1"), 10, Full),
            (Some("bytes=a-b"), 10, Full),
            (Some("bytes=-"), 10, Full),
            (Some("bytes 0-1"), 10, Full),
            (Some(" BYTES = 1 - 2 "), 10, Part { start: 1, end: 2 }),
            (Some("bytes=+1-2"), 10, Full),
        ];
        for (v, len, want) in cases {
            assert_eq!(parse_range(*v, *len), *want, "{v:?} of {len}");
        }
    }

    #[test]
    fn types_and_disposition() {
        let cases: &[(Option<&str>, &str, &str)] = &[
            (
                Some("a.txt"),
                "text/plain; charset=utf-8",
                "inline; filename=\"a.txt\"",
            ),
            (
                Some("Photo.JPG"),
                "image/jpeg",
                "inline; filename=\"Photo.JPG\"",
            ),
            (
                Some("x.tar.zip"),
                "application/zip",
                "attachment; filename=\"x.tar.zip\"",
            ),
            (
                Some("data.json"),
                "application/json",
                "inline; filename=\"data.json\"",
            ),
            (
                Some("m.wasm"),
                "application/wasm",
                "inline; filename=\"m.wasm\"",
            ),
            (
                Some("doc.pdf"),
                "application/pdf",
                "attachment; filename=\"doc.pdf\"",
            ),
            (
                Some("noext"),
                "application/octet-stream",
                "attachment; filename=\"noext\"",
            ),
            (
                Some("a\"b\\c\r\nd.mp4"),
                "video/mp4",
                "inline; filename=\"a\\\"b\\\\cd.mp4\"",
            ),
            (None, "application/octet-stream", "attachment"),
        ];
        for (name, ct, cd) in cases {
            assert_eq!(content_type(*name), *ct, "{name:?}");
            assert_eq!(content_disposition(ct, *name), *cd, "{name:?}");
        }
        assert!(is_inline("audio/mpeg") && is_inline("image/svg+xml"));
        assert!(!is_inline("application/zip"));
    }
}
