//! CORS as rustus does it (rustus-compat §2.8): preflights, the allowed and exposed
//! headers, `--cors` origin patterns with wildcards, and the proxied hook headers.

use crate::harness::*;

const METHODS: &str = "OPTIONS, GET, HEAD, POST, PATCH, DELETE";
const VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

fn preflight(d: &Daemon, path: &str, origin: &str) -> Response {
    d.send(
        &Req::new("OPTIONS", path)
            .h("Origin", origin)
            .h("Access-Control-Request-Method", "POST")
            .h(
                "Access-Control-Request-Headers",
                "tus-resumable,upload-length,upload-metadata",
            ),
    )
}

#[test]
fn preflight_from_any_origin_without_cors_list() {
    let tmp = TempDir::new("cors-any");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(3);
    for path in ["/files".to_string(), format!("/files/{id}")] {
        let r = preflight(&d, &path, "https://app.example");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("Access-Control-Allow-Origin"),
            Some("https://app.example"),
            "echoed, never *: {r:?}"
        );
        assert_eq!(r.header("Access-Control-Allow-Methods"), Some(METHODS));
        assert_eq!(r.header("Access-Control-Max-Age"), Some("86400"));
        assert_eq!(r.header("Vary"), Some(VARY));
        let allowed = r.header("Access-Control-Allow-Headers").expect("allowed");
        for h in [
            "Content-Type",
            "Upload-Offset",
            "Upload-Length",
            "Upload-Metadata",
            "Tus-Resumable",
            "X-HTTP-Method-Override",
            "X-Request-ID",
        ] {
            assert!(allowed.contains(h), "{h} not in {allowed}");
        }
        // A preflight is answered by CORS, not by tus.
        assert!(!r.has("Tus-Resumable") && !r.has("Tus-Extension"), "{r:?}");
        assert!(r.body.is_empty(), "{r:?}");
    }
    // Plain OPTIONS (no Access-Control-Request-Method) is still tus's.
    let r = d.send(&Req::new("OPTIONS", "/files").h("Origin", "https://app.example"));
    assert_eq!(r.status, 200, "{r:?}");
    r.assert_tus();
    assert!(r.has("Tus-Extension"), "{r:?}");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
}

#[test]
fn origin_list_with_wildcards() {
    let tmp = TempDir::new("cors-list");
    let d = Daemon::start(
        &tmp,
        &["--cors", "https://app.example,https://*.tenants.example"],
    );
    for origin in [
        "https://app.example",
        "https://a.tenants.example",
        "https://x.y.tenants.example",
    ] {
        let r = preflight(&d, "/files", origin);
        assert_eq!(r.status, 200, "{origin}: {r:?}");
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some(origin));
    }
    for origin in [
        "https://evil.example",
        "https://app.example.evil",
        "http://app.example",
        "https://tenants.example",
    ] {
        let r = preflight(&d, "/files", origin);
        assert_eq!(r.status, 400, "{origin}: {r:?}");
        assert_eq!(
            r.body, b"Origin is not allowed to make this request",
            "{r:?}"
        );
        assert!(!r.has("Access-Control-Allow-Origin"), "{r:?}");
        assert!(!r.has("Tus-Resumable"), "{r:?}");
    }
    // A preflight without Origin is refused as well.
    let r = d.send(&Req::new("OPTIONS", "/files").h("Access-Control-Request-Method", "POST"));
    assert_eq!(r.status, 400, "{r:?}");
}

#[test]
fn actual_requests_get_allow_origin_only_when_allowed() {
    let tmp = TempDir::new("cors-actual");
    let d = Daemon::start(&tmp, &["--cors", "https://app.example"]);
    // Allowed: created, and told so.
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Origin", "https://app.example")
            .h("Upload-Length", "4"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    let expose = r.header("Access-Control-Expose-Headers").expect("expose");
    for h in [
        "Location",
        "Upload-Offset",
        "Upload-Length",
        "Tus-Resumable",
        "Tus-Extension",
    ] {
        assert!(expose.contains(h), "{h} not in {expose}");
    }
    assert_eq!(r.header("Vary"), Some(VARY));
    let id = upload_id(&r);
    // Disallowed: still processed, but no Access-Control-Allow-Origin.
    let r = d.send(&patch_req(&id, 0, b"abcd").h("Origin", "https://evil.example"));
    assert_eq!(r.status, 204, "{r:?}");
    assert!(!r.has("Access-Control-Allow-Origin"), "{r:?}");
    assert!(r.has("Access-Control-Expose-Headers"), "{r:?}");
    assert_eq!(d.read_data(&id), b"abcd");
    // No Origin: no Allow-Origin either; errors carry the CORS headers too.
    let r = d.head(&id);
    assert!(!r.has("Access-Control-Allow-Origin"), "{r:?}");
    let r = d.send(
        &Req::new("HEAD", "/files/9e9dd6f5-44b5-4c1c-a0a6-43e1d9c7a0b1")
            .tus()
            .h("Origin", "https://app.example"),
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    // /health is not under the base path: no CORS.
    let r = d.send(&Req::new("GET", "/health").h("Origin", "https://app.example"));
    assert!(!r.has("Access-Control-Allow-Origin"), "{r:?}");
}

#[test]
fn proxied_hook_headers_are_allowed() {
    let tmp = TempDir::new("cors-proxy");
    let d = Daemon::start(
        &tmp,
        &["--hooks-http-proxy-headers", "X-Tenant-Id,X-Api-Key"],
    );
    let r = preflight(&d, "/files", "https://app.example");
    assert_eq!(r.status, 200, "{r:?}");
    let allowed = r.header("Access-Control-Allow-Headers").expect("allowed");
    assert!(
        allowed.ends_with("X-Request-ID, X-Tenant-Id, X-Api-Key"),
        "{allowed}"
    );
}

#[test]
fn preflight_asking_for_unknown_header_is_refused() {
    let tmp = TempDir::new("cors-hdr");
    let d = Daemon::start(&tmp, &["--hooks-http-proxy-headers", "X-Tenant-Id"]);
    let ask = |headers: &str| {
        d.send(
            &Req::new("OPTIONS", "/files")
                .h("Origin", "https://app.example")
                .h("Access-Control-Request-Method", "PATCH")
                .h("Access-Control-Request-Headers", headers),
        )
    };
    let r = ask("tus-resumable,upload-offset,content-type,x-tenant-id");
    assert_eq!(r.status, 200, "{r:?}");
    let r = ask("tus-resumable,x-custom");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(!r.has("Access-Control-Allow-Origin"), "{r:?}");
}
