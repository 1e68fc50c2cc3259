//! A draft creation's representation metadata (-05 §4, -11 §4.2.1) as the upload's
//! tus metadata, so hooks and `GET` see the same `filename` and `filetype` keys as for a
//! tus upload (tusd does the same): `filetype` from `Content-Type`, `filename` from
//! `Content-Disposition` (RFC 6266: `filename*` in RFC 8187's UTF-8 encoding preferred
//! to `filename`). A client that sends `Upload-Metadata` (tus-js-client does, in its
//! draft mode) has that instead; see `server::draft`.

/// The `filetype` for a creation's `Content-Type`: its media type (parameters dropped),
/// unless it is one of the upload protocols' own body types, which say nothing of the
/// representation.
pub fn file_type(content_type: &str) -> Option<String> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let own = [
        "application/partial-upload",
        "application/offset+octet-stream",
    ];
    let valid = media.split_once('/').is_some_and(|(t, s)| {
        !t.is_empty() && !s.is_empty() && (t.to_owned() + s).bytes().all(is_token_char)
    });
    (valid && !own.iter().any(|o| media.eq_ignore_ascii_case(o))).then(|| media.to_string())
}

/// The `filename` of a `Content-Disposition` value: the `filename*` parameter when it
/// decodes (`UTF-8''` and percent-encoding), else `filename` (a token or a quoted
/// string). Path separators and control characters make a name unusable: `None`.
pub fn file_name(disposition: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for (name, value) in params(disposition) {
        if name.eq_ignore_ascii_case("filename*") {
            extended = extended.or_else(|| decode_ext(&value));
        } else if name.eq_ignore_ascii_case("filename") {
            plain = plain.or(Some(value));
        }
    }
    extended
        .or(plain)
        .filter(|n| !n.is_empty() && !n.chars().any(|c| c.is_control() || c == '/' || c == '\\'))
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `;`-separated parameters after the disposition type, values unquoted.
fn params(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = match value.split_once(';') {
        Some((_, r)) => r,
        None => return out,
    };
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some((name, after)) = rest.split_once('=') else {
            return out;
        };
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            val.push(e);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => val.push(c),
                }
            }
            let Some(end) = end else {
                return out;
            };
            (val, &q[end..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((name.trim().to_string(), val));
        rest = next;
    }
}

/// RFC 8187 §3.2: `charset'language'percent-encoded`, UTF-8 only.
fn decode_ext(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let charset = parts.next()?;
    let _language = parts.next()?;
    let encoded = parts.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if is_token_char(b) && b != b'*' && b != b'\'' && b != b'%' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_types() {
        let cases: &[(&str, Option<&str>)] = &[
            ("image/jpeg", Some("image/jpeg")),
            ("text/plain; charset=utf-8", Some("text/plain")),
            ("application/partial-upload", None),
            ("Application/Offset+Octet-Stream", None),
            ("", None),
            ("nonsense", None),
            ("a/b c", None),
        ];
        for (ct, want) in cases {
            assert_eq!(file_type(ct).as_deref(), *want, "{ct}");
        }
    }

    #[test]
    fn file_names() {
        let cases: &[(&str, Option<&str>)] = &[
            // -11 §4.2.3's example.
            (
                "inline; filename=\"file name.jpg\"; filename*=UTF-8''file%20name.jpg",
                Some("file name.jpg"),
            ),
            ("attachment; filename=a.txt", Some("a.txt")),
            ("inline; filename=\"q\\\"uote.txt\"", Some("q\"uote.txt")),
            (
                "inline; filename*=utf-8''%e2%82%ac.txt",
                Some("\u{20ac}.txt"),
            ),
            ("inline; filename*=UTF-8''%e2%82.txt; filename=x", Some("x")),
            ("inline; filename*=iso-8859-1''x", None),
            ("inline", None),
            ("inline; filename=\"../../etc/passwd\"", None),
            ("inline; filename=\"a\\\\b\"", None),
            ("inline; filename=\"unterminated", None),
            ("inline; filename=\"\"", None),
        ];
        for (cd, want) in cases {
            assert_eq!(file_name(cd).as_deref(), *want, "{cd}");
        }
    }
}
