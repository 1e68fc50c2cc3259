//! rustus's `getting` extension (GET of an upload's bytes) as pure functions: the
//! `Range` header, the media type from a file name, `Content-Disposition`, and the
//! headers that keep a download from running script in the server's origin.

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
        Some("avif") => "image/avif",
        Some("bmp") => "image/bmp",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("mp3") => "audio/mpeg",
        Some("ogg" | "oga") => "audio/ogg",
        Some("wav") => "audio/wav",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Raster image types: a browser draws them and runs nothing (SVG is not one of them: an
/// SVG document runs its scripts).
const RASTER_IMAGES: [&str; 6] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
];

/// Whether a download of `content_type` is shown in the browser (`inline`): only types
/// that cannot run script, i.e. raster images, audio, video and plain text. Everything
/// else is an `attachment`, saved rather than opened in the server's origin: HTML, SVG,
/// XML, JavaScript, JSON, wasm, CSS, unknown types. PDF is an attachment too, as in
/// rustus: Chromium's PDF viewer does not run under the `sandbox` policy every download
/// carries ([`DOWNLOAD_CSP`]), so an inline PDF would show a blocked page there. (rustus,
/// through actix-files, inlines every `image/*`, `text/*`, `audio/*` and `video/*` type,
/// JavaScript, JSON and wasm.)
pub fn is_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let top = essence.split('/').next().unwrap_or("");
    matches!(top, "audio" | "video")
        || essence == "text/plain"
        || RASTER_IMAGES.contains(&essence.as_str())
}

/// The `Content-Security-Policy` of every download: `sandbox` makes the document an
/// opaque origin with scripts, forms, popups and plugins disabled, so even a browser
/// that renders an attachment (or sniffs a type) runs nothing in the server's origin;
/// `default-src 'none'` lets the document load nothing more, and `style-src
/// 'unsafe-inline'` keeps the styles browsers put into the pages they make to show an
/// image, a video or text. (raw.githubusercontent.com sends the same policy.)
pub const DOWNLOAD_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// Headers on every download, whatever its type: no type sniffing (a `text/plain` or
/// image upload holding HTML stays what its type says), and [`DOWNLOAD_CSP`].
pub const DOWNLOAD_HEADERS: [(&str, &str); 2] = [
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", DOWNLOAD_CSP),
];

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
                "attachment; filename=\"data.json\"",
            ),
            (
                Some("m.wasm"),
                "application/wasm",
                "attachment; filename=\"m.wasm\"",
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
            (
                Some("x.html"),
                "text/html; charset=utf-8",
                "attachment; filename=\"x.html\"",
            ),
            (
                Some("x.HTM"),
                "text/html; charset=utf-8",
                "attachment; filename=\"x.HTM\"",
            ),
            (
                Some("logo.svg"),
                "image/svg+xml",
                "attachment; filename=\"logo.svg\"",
            ),
            (
                Some("app.js"),
                "text/javascript; charset=utf-8",
                "attachment; filename=\"app.js\"",
            ),
            (
                Some("s.css"),
                "text/css; charset=utf-8",
                "attachment; filename=\"s.css\"",
            ),
            (Some("a.ogg"), "audio/ogg", "inline; filename=\"a.ogg\""),
            (Some("v.webm"), "video/webm", "inline; filename=\"v.webm\""),
            (Some("p.avif"), "image/avif", "inline; filename=\"p.avif\""),
            (None, "application/octet-stream", "attachment"),
        ];
        for (name, ct, cd) in cases {
            assert_eq!(content_type(*name), *ct, "{name:?}");
            assert_eq!(content_disposition(ct, *name), *cd, "{name:?}");
        }
    }

    /// Inline only for types that cannot run script, whatever the spelling of the type.
    #[test]
    fn inline_only_for_types_that_run_no_script() {
        let cases: &[(&str, bool)] = &[
            ("image/png", true),
            ("image/jpeg", true),
            ("image/gif", true),
            ("image/webp", true),
            ("IMAGE/PNG", true),
            ("audio/mpeg", true),
            ("audio/wav", true),
            ("video/mp4", true),
            ("text/plain", true),
            ("text/plain; charset=utf-8", true),
            (" Text/Plain ;charset=utf-8", true),
            ("image/svg+xml", false),
            ("image/svg+xml; charset=utf-8", false),
            ("image/x-icon", false),
            ("text/html", false),
            ("text/html; charset=utf-8", false),
            ("application/xhtml+xml", false),
            ("text/xml", false),
            ("application/xml", false),
            ("text/javascript", false),
            ("application/javascript", false),
            ("application/json", false),
            ("application/wasm", false),
            ("text/css", false),
            ("text/csv", false),
            ("application/pdf", false),
            ("application/octet-stream", false),
            ("", false),
            ("text/plain+html", false),
        ];
        for (ct, inline) in cases {
            assert_eq!(is_inline(ct), *inline, "{ct:?}");
        }
    }

    #[test]
    fn every_download_forbids_script_and_sniffing() {
        let get = |name: &str| {
            DOWNLOAD_HEADERS
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        assert_eq!(get("X-Content-Type-Options"), Some("nosniff"));
        let csp = get("Content-Security-Policy").expect("a CSP");
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        // `sandbox` with no `allow-scripts`, and no source may be loaded by default.
        assert!(directives.contains(&"sandbox"), "{csp}");
        assert!(!csp.contains("allow-"), "{csp}");
        assert!(directives.contains(&"default-src 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
    }
}
