//! CORS as rustus does it (actix-cors 0.7, rustus-compat §2.8), as pure functions:
//! which origins `--cors` allows, what a preflight is, and the header values.

/// `Access-Control-Allow-Methods` of a preflight answer.
pub const ALLOW_METHODS: &str = "OPTIONS, GET, HEAD, POST, PATCH, DELETE";

/// The request headers a preflight allows (before the proxied hook headers).
pub const ALLOW_HEADERS: &[&str] = &[
    "Content-Type",
    "Upload-Offset",
    "Upload-Checksum",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Concat",
    "Upload-Defer-Length",
    // The resumable-uploads draft's request fields (`server::draft`).
    "Upload-Complete",
    "Upload-Draft-Interop-Version",
    "Content-Disposition",
    "Content-Digest",
    "Repr-Digest",
    "Tus-Resumable",
    "Tus-Version",
    "X-HTTP-Method-Override",
    "Authorization",
    "Origin",
    "X-Requested-With",
    "X-Request-ID",
];

/// `Access-Control-Expose-Headers`, on every answer under the base path.
pub const EXPOSE_HEADERS: &str = "Location, Tus-Version, Tus-Resumable, Tus-Max-Size, \
Tus-Extension, Tus-Checksum-Algorithm, Content-Type, Content-Length, Upload-Length, \
Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Offset, Upload-Complete, \
Upload-Limit, Accept-Patch";

/// `Access-Control-Max-Age` of a preflight answer (seconds).
pub const MAX_AGE: &str = "86400";

/// `Vary`, on every answer under the base path.
pub const VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// The body of a preflight refused for its origin.
pub const ORIGIN_NOT_ALLOWED: &str = "Origin is not allowed to make this request";

/// The body of a preflight without an `Origin`.
pub const ORIGIN_MISSING: &str = "The required Origin header is missing";

/// The body of a preflight asking for a header that is not allowed.
pub const HEADERS_NOT_ALLOWED: &str = "Requested headers are not allowed";

/// `Access-Control-Allow-Headers`: rustus's list plus each proxied hook header (once).
pub fn allow_headers(proxied: &[String]) -> String {
    let mut names: Vec<&str> = ALLOW_HEADERS.to_vec();
    for p in proxied {
        let p = p.trim();
        if !p.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(p)) {
            names.push(p);
        }
    }
    names.join(", ")
}

/// Whether `origin` may make requests: an empty list allows every origin; otherwise
/// one pattern must match the whole origin, where `*` stands for any run of bytes.
pub fn origin_allowed(patterns: &[String], origin: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| glob(p.as_bytes(), origin.as_bytes()))
}

/// `*` matches any (possibly empty) run of bytes; everything else matches itself,
/// ASCII case-insensitively (scheme and host are case-insensitive).
fn glob(pat: &[u8], s: &[u8]) -> bool {
    // Classic iterative wildcard match with one backtrack point.
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p].eq_ignore_ascii_case(&s[i]) {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

/// What CORS makes of a request under the base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A preflight from an allowed origin: answer 200 with the preflight headers and
    /// `Access-Control-Allow-Origin: <origin>`.
    PreflightOk(String),
    /// A preflight refused: 400 with this body and no `Access-Control-Allow-Origin`.
    PreflightRefused(&'static str),
    /// An actual request: processed; `Some(origin)` is echoed in
    /// `Access-Control-Allow-Origin`.
    Actual(Option<String>),
}

/// Whether every name in `Access-Control-Request-Headers` (a comma list) is in
/// rustus's list or among the proxied hook headers (ASCII case-insensitively).
pub fn headers_allowed(requested: Option<&str>, proxied: &[String]) -> bool {
    requested.unwrap_or("").split(',').all(|name| {
        let name = name.trim();
        name.is_empty()
            || ALLOW_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
            || proxied.iter().any(|h| h.trim().eq_ignore_ascii_case(name))
    })
}

/// The request headers CORS looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// The request is an OPTIONS.
    pub is_options: bool,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Access-Control-Request-Method` (its presence makes an OPTIONS a preflight).
    pub request_method: Option<&'a str>,
    /// `Access-Control-Request-Headers`.
    pub request_headers: Option<&'a str>,
}

/// Classifies a request: a preflight is an OPTIONS with `Access-Control-Request-Method`.
/// `proxied` are the `--hooks-http-proxy-headers`, allowed besides rustus's list.
pub fn decide(patterns: &[String], proxied: &[String], ask: &Ask<'_>) -> Decision {
    let origin = ask.origin.map(str::trim).filter(|o| !o.is_empty());
    if ask.is_options && ask.request_method.is_some() {
        return match origin {
            None => Decision::PreflightRefused(ORIGIN_MISSING),
            Some(o) if !origin_allowed(patterns, o) => {
                Decision::PreflightRefused(ORIGIN_NOT_ALLOWED)
            }
            Some(_) if !headers_allowed(ask.request_headers, proxied) => {
                Decision::PreflightRefused(HEADERS_NOT_ALLOWED)
            }
            Some(o) => Decision::PreflightOk(o.to_string()),
        };
    }
    Decision::Actual(
        origin
            .filter(|o| origin_allowed(patterns, o))
            .map(str::to_string),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn origin_table() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "https://anything.example", true),
            (&["https://a.example"], "https://a.example", true),
            (&["https://a.example"], "https://a.example:8443", false),
            (&["https://a.example"], "http://a.example", false),
            (&["https://a.example"], "https://A.Example", true),
            (&["https://*.b.example"], "https://x.b.example", true),
            (&["https://*.b.example"], "https://x.y.b.example", true),
            (&["https://*.b.example"], "https://b.example", false),
            (&["https://*.b.example"], "https://x.b.example.evil", false),
            (
                &["https://*.b.example"],
                "https://evil.example/.b.example",
                true,
            ),
            (&["*"], "null", true),
            (&["http://localhost:*"], "http://localhost:3000", true),
            (&["http://localhost:*"], "http://localhost", false),
            (&["a", "https://c.example"], "https://c.example", true),
            (&["**x"], "x", true),
            (&["a*b*c"], "abbbc", true),
            (&["a*b*c"], "abbbcd", false),
        ];
        for (pats, origin, want) in cases {
            assert_eq!(
                origin_allowed(&list(pats), origin),
                *want,
                "{pats:?} vs {origin}"
            );
        }
    }

    #[test]
    fn decisions() {
        let pats = list(&["https://ok.example"]);
        // (patterns, is OPTIONS, Origin, Access-Control-Request-Method, decision)
        type Case<'a> = (
            &'a [String],
            bool,
            Option<&'a str>,
            Option<&'a str>,
            Decision,
        );
        let cases: &[Case] = &[
            (
                &pats,
                true,
                Some("https://ok.example"),
                Some("PATCH"),
                Decision::PreflightOk("https://ok.example".into()),
            ),
            (
                &pats,
                true,
                Some("https://no.example"),
                Some("PATCH"),
                Decision::PreflightRefused(ORIGIN_NOT_ALLOWED),
            ),
            (
                &pats,
                true,
                None,
                Some("PATCH"),
                Decision::PreflightRefused(ORIGIN_MISSING),
            ),
            // OPTIONS without Access-Control-Request-Method is tus's OPTIONS.
            (
                &pats,
                true,
                Some("https://ok.example"),
                None,
                Decision::Actual(Some("https://ok.example".into())),
            ),
            (
                &pats,
                false,
                Some("https://no.example"),
                None,
                Decision::Actual(None),
            ),
            (&pats, false, None, None, Decision::Actual(None)),
            (
                &[],
                false,
                Some("https://any.example"),
                None,
                Decision::Actual(Some("https://any.example".into())),
            ),
        ];
        for (p, opt, o, m, want) in cases {
            let ask = Ask {
                is_options: *opt,
                origin: *o,
                request_method: *m,
                request_headers: Some("tus-resumable, Upload-Length,upload-metadata"),
            };
            assert_eq!(decide(p, &[], &ask), *want, "{opt} {o:?} {m:?}");
        }
    }

    #[test]
    fn requested_headers() {
        let proxied = list(&["X-Tenant-Id"]);
        let cases: &[(Option<&str>, bool)] = &[
            (None, true),
            (Some(""), true),
            (Some("content-type"), true),
            (Some("Tus-Resumable,UPLOAD-OFFSET , x-request-id"), true),
            (Some("x-tenant-id"), true),
            (Some("tus-resumable,x-custom"), false),
            (Some("cookie"), false),
        ];
        for (h, want) in cases {
            assert_eq!(headers_allowed(*h, &proxied), *want, "{h:?}");
        }
        let ask = Ask {
            is_options: true,
            origin: Some("https://a.example"),
            request_method: Some("POST"),
            request_headers: Some("x-custom"),
        };
        assert_eq!(
            decide(&[], &proxied, &ask),
            Decision::PreflightRefused(HEADERS_NOT_ALLOWED)
        );
    }

    #[test]
    fn allowed_headers_add_proxied_once() {
        let h = allow_headers(&list(&["X-Tenant-Id", "authorization", " "]));
        assert!(h.starts_with("Content-Type, Upload-Offset, "), "{h}");
        assert!(h.ends_with("X-Request-ID, X-Tenant-Id"), "{h}");
        assert_eq!(h.matches("uthorization").count(), 1, "{h}");
        assert_eq!(allow_headers(&[]).split(", ").count(), ALLOW_HEADERS.len());
    }
}
