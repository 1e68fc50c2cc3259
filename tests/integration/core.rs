//! The tus 1.0.0 core protocol and the extensions tusring implements (creation,
//! creation-with-upload, creation-defer-length, termination), plus routing.

use crate::harness::*;

const EXTENSIONS: &str =
    "creation-defer-length,creation-with-upload,creation,termination,concatenation,getting,checksum";

fn data_files(d: &Daemon) -> Vec<std::path::PathBuf> {
    let mut v = list_files(d.data_dir());
    if d.info_dir() != d.data_dir() {
        v.extend(list_files(d.info_dir()));
    }
    v
}

// ----------------------------------------------------------------------------- OPTIONS

#[test]
fn options_advertises_version_and_extensions() {
    let tmp = TempDir::new("options");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    for path in ["/files", "/files/", &format!("/files/{id}")] {
        // No Tus-Resumable on OPTIONS, and a bogus one must be ignored.
        for bogus in [false, true] {
            let mut req = Req::new("OPTIONS", path);
            if bogus {
                req = req.h("Tus-Resumable", "0.2.2");
            }
            let r = d.send(&req);
            assert_eq!(r.status, 200, "OPTIONS {path} (bogus={bogus}): {r:?}");
            r.assert_tus();
            assert_eq!(r.header("Tus-Version"), Some("1.0.0"), "{r:?}");
            assert_eq!(r.header("Tus-Extension"), Some(EXTENSIONS), "{r:?}");
            assert!(!r.has("Tus-Max-Size"), "no max size configured: {r:?}");
            assert!(r.body.is_empty(), "OPTIONS body must be empty: {r:?}");
        }
    }
}

#[test]
fn options_lists_only_enabled_extensions_in_rustus_order() {
    let tmp = TempDir::new("options-ext");
    // `creation` is implied by creation-with-upload; the list is re-ordered.
    let d = Daemon::start(
        &tmp,
        &["--tus-extensions", "termination,creation-with-upload"],
    );
    let r = d.options("/files");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("Tus-Extension"),
        Some("creation-with-upload,creation,termination"),
        "{r:?}"
    );
}

#[test]
fn max_file_size_is_advertised_and_enforced() {
    let tmp = TempDir::new("maxsize");
    let d = Daemon::start(&tmp, &["--max-file-size", "100"]);
    let r = d.options("/files");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Tus-Max-Size"), Some("100"), "{r:?}");

    let r = d.post(&[("Upload-Length", "101")]);
    assert_eq!(r.status, 413, "length above --max-file-size: {r:?}");
    assert!(data_files(&d).is_empty(), "nothing may be created by a 413");

    let r = d.post(&[("Upload-Length", "100")]);
    assert_eq!(r.status, 201, "length equal to --max-file-size: {r:?}");
}

// ----------------------------------------------------------------------- Tus-Resumable

#[test]
fn missing_or_wrong_tus_resumable_is_412_and_changes_nothing() {
    let tmp = TempDir::new("412");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    d.patch(&id, 0, b"abc").assert_status(204, "setup patch");
    let before = data_files(&d);

    let check = |r: &Response, what: &str| {
        assert_eq!(r.status, 412, "{what}: {r:?}");
        assert_eq!(r.header("Tus-Version"), Some("1.0.0"), "{what}: {r:?}");
        r.assert_tus();
    };
    for version in [None, Some("0.2.2"), Some("2.0.0"), Some("")] {
        let with = |req: Req| match version {
            Some(v) => req.h("Tus-Resumable", v),
            None => req,
        };
        let what = format!("Tus-Resumable {version:?}");
        let r = d.send(&with(Req::new("POST", "/files").h("Upload-Length", "5")));
        check(&r, &format!("POST, {what}"));
        let r = d.send(&with(
            Req::new("PATCH", &format!("/files/{id}"))
                .h(OCTET.0, OCTET.1)
                .h("Upload-Offset", "3")
                .body(b"xyz"),
        ));
        check(&r, &format!("PATCH, {what}"));
        let r = d.send(&with(Req::new("DELETE", &format!("/files/{id}"))));
        check(&r, &format!("DELETE, {what}"));
        let r = d.send(&with(Req::new("HEAD", &format!("/files/{id}"))));
        check(&r, &format!("HEAD, {what}"));
    }
    assert_eq!(
        data_files(&d),
        before,
        "a 412 must not create or remove files"
    );
    let r = d.head(&id);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upload_offset(), 3, "a 412 PATCH must not write");
    assert_eq!(d.read_data(&id), b"abc");
}

// ---------------------------------------------------------------------------- creation

#[test]
fn create_returns_absolute_location_and_head_reports_it() {
    let tmp = TempDir::new("create");
    let d = Daemon::start(&tmp, &[]);
    for path in ["/files", "/files/"] {
        let r = d.send(&Req::new("POST", path).tus().h("Upload-Length", "100"));
        assert_eq!(r.status, 201, "POST {path}: {r:?}");
        r.assert_tus();
        let id = upload_id(&r);
        assert_eq!(
            r.header("Location"),
            Some(format!("http://{}/files/{id}", d.host()).as_str()),
            "{r:?}"
        );
        assert_eq!(r.upload_offset(), 0, "{r:?}");

        let h = d.head(&id);
        assert_eq!(h.status, 200, "{h:?}");
        assert_eq!(h.upload_offset(), 0);
        assert_eq!(h.upload_length(), Some(100));
        assert_eq!(h.header("Cache-Control"), Some("no-store"), "{h:?}");
        assert!(!h.has("Upload-Defer-Length"), "{h:?}");
        assert!(!h.has("Upload-Metadata"), "no metadata was sent: {h:?}");
        assert!(
            d.data_path(&id).is_file(),
            "data file exists after creation"
        );
        assert!(
            d.info_path(&id).is_file(),
            "info file exists after creation"
        );
    }
}

#[test]
fn create_ids_are_unique() {
    let tmp = TempDir::new("unique");
    let d = Daemon::start(&tmp, &[]);
    let mut seen = std::collections::HashSet::new();
    let mut c = d.conn();
    for _ in 0..50 {
        let r = c.request(&Req::new("POST", "/files").tus().h("Upload-Length", "1"));
        assert_eq!(r.status, 201, "{r:?}");
        assert!(seen.insert(upload_id(&r)), "duplicate id");
    }
}

#[test]
fn location_follows_host_and_forwarding_headers() {
    let tmp = TempDir::new("forwarded");
    let d = Daemon::start(&tmp, &[]);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("Host", "uploads.test:8080")],
            "http://uploads.test:8080/files/",
        ),
        (
            vec![
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "up.example.com"),
            ],
            "https://up.example.com/files/",
        ),
        (
            vec![("Forwarded", "proto=https;host=a.example")],
            "https://a.example/files/",
        ),
    ];
    for (headers, prefix) in cases {
        let r = d.send(
            &Req::new("POST", "/files")
                .tus()
                .h("Upload-Length", "5")
                .headers(&headers),
        );
        assert_eq!(r.status, 201, "{headers:?}: {r:?}");
        let id = upload_id(&r);
        assert_eq!(
            r.header("Location"),
            Some(format!("{prefix}{id}").as_str()),
            "{headers:?}: {r:?}"
        );
    }
}

#[test]
fn create_with_deferred_length() {
    let tmp = TempDir::new("defer");
    let d = Daemon::start(&tmp, &[]);
    let r = d.post(&[("Upload-Defer-Length", "1")]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    let h = d.head(&id);
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(h.upload_offset(), 0);
    assert_eq!(h.header("Upload-Defer-Length"), Some("1"), "{h:?}");
    assert!(!h.has("Upload-Length"), "{h:?}");
    assert_eq!(h.header("Cache-Control"), Some("no-store"), "{h:?}");

    // The very first PATCH may carry the length.
    let id = d.create_deferred();
    let p = d.patch_with(&id, 0, b"abc", &[("Upload-Length", "3")]);
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 3);
    let h = d.head(&id);
    assert_eq!(
        (h.upload_offset(), h.upload_length()),
        (3, Some(3)),
        "{h:?}"
    );
    assert!(!h.has("Upload-Defer-Length"), "{h:?}");
    assert_eq!(d.read_data(&id), b"abc");
}

#[test]
fn create_rejects_bad_length_headers() {
    let tmp = TempDir::new("badlen");
    let d = Daemon::start(&tmp, &[]);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("Upload-Length", "10"), ("Upload-Defer-Length", "1")],
        vec![("Upload-Length", "-5")],
        vec![("Upload-Length", "abc")],
        vec![("Upload-Length", "")],
        vec![("Upload-Length", "1.5")],
        vec![("Upload-Length", "0")],
        vec![("Upload-Length", "9223372036854775808")],
        vec![("Upload-Length", "18446744073709551616")],
        vec![("Upload-Length", "99999999999999999999999999")],
        vec![("Upload-Defer-Length", "2")],
        vec![("Upload-Defer-Length", "0")],
        vec![("Upload-Defer-Length", "yes")],
    ];
    for headers in cases {
        let r = d.post(&headers);
        assert_eq!(r.status, 400, "POST with {headers:?}: {r:?}");
        assert!(!r.has("Location"), "{headers:?}: {r:?}");
    }
    assert!(data_files(&d).is_empty(), "rejected POSTs created files");

    // 2^63-1 is a valid tus integer: created, or refused as too large (413), never a 400.
    let r = d.post(&[("Upload-Length", "9223372036854775807")]);
    assert!(
        r.status == 201 || r.status == 413,
        "Upload-Length 2^63-1: {r:?}"
    );
}

#[test]
fn empty_upload_needs_allow_empty() {
    let tmp = TempDir::new("empty");
    let d = Daemon::start(&tmp, &["--allow-empty"]);
    let r = d.post(&[("Upload-Length", "0")]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    let h = d.head(&id);
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(h.upload_offset(), 0);
    assert_eq!(h.upload_length(), Some(0));
    assert_eq!(d.read_data(&id), b"");
    // Already complete: an empty PATCH at its offset is a no-op 204.
    let p = d.patch(&id, 0, b"");
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 0);
}

#[test]
fn metadata_round_trips_and_key_without_value_is_kept() {
    let tmp = TempDir::new("meta");
    let d = Daemon::start(&tmp, &[]);
    let r = d.post(&[
        ("Upload-Length", "5"),
        ("Upload-Metadata", "filename d29ybGQ=,flag"),
    ]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    let h = d.head(&id);
    let md = h
        .header("Upload-Metadata")
        .unwrap_or_else(|| panic!("HEAD must echo metadata: {h:?}"));
    assert_eq!(
        parse_metadata(md),
        vec![
            ("filename".to_string(), "d29ybGQ=".to_string()),
            ("flag".to_string(), String::new())
        ],
        "Upload-Metadata {md:?}"
    );
    let info = read_info(&d.info_path(&id));
    assert_eq!(info["metadata"]["filename"], "world", "{info}");
    assert!(
        info["metadata"].get("flag").is_some(),
        "key without value kept in info: {info}"
    );
}

#[test]
fn metadata_with_invalid_base64_is_400() {
    let tmp = TempDir::new("meta-bad");
    let d = Daemon::start(&tmp, &[]);
    for md in ["filename !!!notbase64!!!", "filename d29ybGQ=,other a"] {
        let r = d.post(&[("Upload-Length", "5"), ("Upload-Metadata", md)]);
        assert_eq!(r.status, 400, "metadata {md:?}: {r:?}");
    }
    assert!(data_files(&d).is_empty());
}

#[test]
fn creation_with_upload_stores_the_body() {
    let tmp = TempDir::new("cwu");
    let d = Daemon::start(&tmp, &[]);
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", "11")
            .h(OCTET.0, OCTET.1)
            .body(b"hello"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    r.assert_tus();
    assert_eq!(r.upload_offset(), 5, "{r:?}");
    let id = upload_id(&r);
    assert_eq!(d.read_data(&id), b"hello");
    assert_eq!(d.offset(&id), 5);
    let p = d.patch(&id, 5, b" world");
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 11);
    assert_eq!(d.read_data(&id), b"hello world");

    // The whole file in the POST: complete at once.
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", "3")
            .h(OCTET.0, OCTET.1)
            .body(b"abc"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.upload_offset(), 3);
    let id = upload_id(&r);
    let h = d.head(&id);
    assert_eq!((h.upload_offset(), h.upload_length()), (3, Some(3)));
    assert_eq!(d.read_data(&id), b"abc");
}

// -------------------------------------------------------------------------------- HEAD

#[test]
fn head_of_unknown_or_malformed_id_is_404() {
    let tmp = TempDir::new("head404");
    let d = Daemon::start(&tmp, &[]);
    std::fs::write(tmp.join("secret"), b"x").unwrap();
    for path in [
        format!("/files/{}", fresh_uuid(1)),
        "/files/not-a-uuid".to_string(),
        "/files/..%2f..%2fetc".to_string(),
        "/files/..%2fsecret".to_string(),
        "/files/%2e%2e".to_string(),
    ] {
        let r = d.send(&Req::new("HEAD", &path).tus());
        assert_eq!(r.status, 404, "HEAD {path}: {r:?}");
        assert_eq!(
            r.header("Tus-Resumable"),
            Some("1.0.0"),
            "HEAD {path}: every response under /files carries Tus-Resumable: {r:?}"
        );
        assert!(!r.has("Upload-Offset"), "HEAD {path}: {r:?}");
    }
    let r = d.send(&patch_req("not-a-uuid", 0, b"a"));
    assert_eq!(r.status, 404, "PATCH /files/not-a-uuid: {r:?}");
}

// ------------------------------------------------------------------------------- PATCH

#[test]
fn patch_appends_and_reports_new_offset() {
    let tmp = TempDir::new("patch");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    let p = d.patch(&id, 0, b"0123");
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 4);
    assert_eq!(d.offset(&id), 4);
    let p = d.patch(&id, 4, b"456789");
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 10);
    let h = d.head(&id);
    assert_eq!((h.upload_offset(), h.upload_length()), (10, Some(10)));
    assert_eq!(d.read_data(&id), b"0123456789");
    let info = read_info(&d.info_path(&id));
    assert_eq!(info["offset"], 10, "{info}");
}

#[test]
fn patch_requires_offset_octet_stream_content_type() {
    let tmp = TempDir::new("patch415");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    for ct in [None, Some("text/plain"), Some("application/octet-stream")] {
        let mut req = Req::new("PATCH", &format!("/files/{id}"))
            .tus()
            .h("Upload-Offset", "0")
            .body(b"abc");
        if let Some(ct) = ct {
            req = req.h("Content-Type", ct);
        }
        let r = d.send(&req);
        assert_eq!(r.status, 415, "Content-Type {ct:?}: {r:?}");
        r.assert_tus();
    }
    assert_eq!(d.offset(&id), 0);
    assert_eq!(d.read_data(&id), b"");
}

#[test]
fn patch_with_missing_or_invalid_offset_is_400() {
    let tmp = TempDir::new("patch400");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    for off in [
        None,
        Some("abc"),
        Some("-1"),
        Some(""),
        Some("1.0"),
        Some("99999999999999999999"),
    ] {
        let mut req = Req::new("PATCH", &format!("/files/{id}"))
            .tus()
            .h(OCTET.0, OCTET.1)
            .body(b"abc");
        if let Some(o) = off {
            req = req.h("Upload-Offset", o);
        }
        let r = d.send(&req);
        assert_eq!(r.status, 400, "Upload-Offset {off:?}: {r:?}");
        r.assert_tus();
    }
    assert_eq!(d.offset(&id), 0);
    assert_eq!(d.read_data(&id), b"");
}

#[test]
fn patch_at_wrong_offset_is_409_and_changes_nothing() {
    let tmp = TempDir::new("patch409");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    d.patch(&id, 0, b"abcd").assert_status(204, "first patch");
    for off in [0u64, 3, 5, 10] {
        let r = d.patch(&id, off, b"zz");
        assert_eq!(r.status, 409, "offset {off}: {r:?}");
    }
    assert_eq!(d.offset(&id), 4);
    assert_eq!(d.read_data(&id), b"abcd");
}

#[test]
fn patch_past_length_with_content_length_is_413_and_stores_nothing() {
    let tmp = TempDir::new("patch413");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    d.patch(&id, 0, b"abcd").assert_status(204, "first patch");
    let r = d.patch(&id, 4, b"0123456789");
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(d.offset(&id), 4);
    assert_eq!(d.read_data(&id), b"abcd");
}

#[test]
fn patch_past_length_chunked_stores_up_to_length_then_413() {
    let tmp = TempDir::new("patch413c");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    d.patch(&id, 0, b"abcd").assert_status(204, "first patch");
    let body = chunked(b"0123456789", 3);
    let r = d.send(
        &patch_req(&id, 4, &body)
            .h("Transfer-Encoding", "chunked")
            .raw_framing(),
    );
    assert_eq!(r.status, 413, "{r:?}");
    r.assert_tus();
    let h = d.head(&id);
    assert_eq!((h.upload_offset(), h.upload_length()), (10, Some(10)));
    assert_eq!(d.read_data(&id), b"abcd012345");
}

#[test]
fn patch_with_chunked_body() {
    let tmp = TempDir::new("chunked");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(7, 100_000);
    let id = d.create(data.len() as u64);
    // Odd chunk sizes, including a 1-byte chunk, in two PATCHes.
    let r = d.send(
        &patch_req(&id, 0, &chunked(&data[..1], 1))
            .h("Transfer-Encoding", "chunked")
            .raw_framing(),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.upload_offset(), 1);
    let r = d.send(
        &patch_req(&id, 1, &chunked(&data[1..], 4093))
            .h("Transfer-Encoding", "chunked")
            .raw_framing(),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.upload_offset(), data.len() as u64);
    assert_bytes_eq(&d.read_data(&id), &data, "chunked upload");
}

#[test]
fn deferred_length_is_set_once_by_patch() {
    let tmp = TempDir::new("defer-patch");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create_deferred();
    // Data without a length: still deferred.
    let p = d.patch(&id, 0, b"ab");
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 2);
    let h = d.head(&id);
    assert_eq!(h.header("Upload-Defer-Length"), Some("1"), "{h:?}");
    // The length arrives with the next PATCH.
    let p = d.patch_with(&id, 2, b"cd", &[("Upload-Length", "10")]);
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 4);
    let h = d.head(&id);
    assert_eq!(h.upload_length(), Some(10), "{h:?}");
    assert!(!h.has("Upload-Defer-Length"), "{h:?}");
    // Repeating it, even unchanged, is refused.
    let p = d.patch_with(&id, 4, b"ef", &[("Upload-Length", "10")]);
    assert_eq!(p.status, 400, "{p:?}");
    assert_eq!(d.offset(&id), 4);
    let p = d.patch(&id, 4, b"efghij");
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 10);
    assert_eq!(d.read_data(&id), b"abcdefghij");
    let info = read_info(&d.info_path(&id));
    assert_eq!(info["length"], 10, "{info}");
    assert_eq!(info["deferred_size"], false, "{info}");
}

#[test]
fn patch_to_complete_upload_at_its_offset_is_204() {
    let tmp = TempDir::new("complete");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(3);
    d.patch(&id, 0, b"abc").assert_status(204, "fill");
    let p = d.patch(&id, 3, b"");
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 3);
    let p = d.patch(&id, 0, b"x");
    assert_eq!(p.status, 409, "wrong offset on a complete upload: {p:?}");
    assert_eq!(d.read_data(&id), b"abc");
}

#[test]
fn patch_unknown_upload_is_404() {
    let tmp = TempDir::new("patch404");
    let d = Daemon::start(&tmp, &[]);
    let r = d.patch(&fresh_uuid(2), 0, b"abc");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(data_files(&d).is_empty());
}

#[test]
fn many_small_patches_on_one_connection() {
    let tmp = TempDir::new("small");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(11, 300);
    let id = d.create(data.len() as u64);
    let mut c = d.conn();
    for (i, b) in data.iter().enumerate() {
        let r = c.request(&patch_req(&id, i as u64, &[*b]));
        assert_eq!(r.status, 204, "patch {i}: {r:?}");
        assert_eq!(r.upload_offset(), i as u64 + 1);
    }
    assert_eq!(d.read_data(&id), data);
}

// ------------------------------------------------------------------------- termination

#[test]
fn delete_removes_upload_and_files() {
    let tmp = TempDir::new("delete");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    d.patch(&id, 0, b"abc").assert_status(204, "patch");
    assert!(d.data_path(&id).exists() && d.info_path(&id).exists());
    let r = d.delete(&id);
    assert_eq!(r.status, 204, "{r:?}");
    assert!(!d.data_path(&id).exists(), "data file must be gone");
    assert!(!d.info_path(&id).exists(), "info file must be gone");
    assert_eq!(d.head(&id).status, 404);
    assert_eq!(d.patch(&id, 3, b"d").status, 404);
    assert_eq!(d.delete(&id).status, 404);
    // A completed upload can be deleted too.
    let id = d.create(1);
    d.patch(&id, 0, b"z").assert_status(204, "patch");
    assert_eq!(d.delete(&id).status, 204);
    assert_eq!(d.head(&id).status, 404);
    assert!(
        list_files(d.data_dir()).is_empty(),
        "{:?}",
        list_files(d.data_dir())
    );
}

#[test]
fn method_override_on_post() {
    let tmp = TempDir::new("override");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(6);
    let r = d.send(
        &Req::new("POST", &format!("/files/{id}"))
            .tus()
            .h("X-HTTP-Method-Override", "PATCH")
            .h(OCTET.0, OCTET.1)
            .h("Upload-Offset", "0")
            .body(b"abc"),
    );
    assert_eq!(r.status, 204, "POST overridden to PATCH: {r:?}");
    assert_eq!(r.upload_offset(), 3);
    assert_eq!(d.read_data(&id), b"abc");
    let r = d.send(
        &Req::new("POST", &format!("/files/{id}"))
            .tus()
            .h("X-HTTP-Method-Override", "DELETE"),
    );
    assert_eq!(r.status, 204, "POST overridden to DELETE: {r:?}");
    assert_eq!(d.head(&id).status, 404);
}

// ----------------------------------------------------------------------------- routing

#[test]
fn trailing_slash_routes_and_wrong_methods_get_405() {
    let tmp = TempDir::new("routes");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(4);
    let slash = format!("/files/{id}/");
    let r = d.send(&Req::new("HEAD", &slash).tus());
    assert_eq!(r.status, 200, "HEAD {slash}: {r:?}");
    let r = d.send(
        &Req::new("PATCH", &slash)
            .tus()
            .h(OCTET.0, OCTET.1)
            .h("Upload-Offset", "0")
            .body(b"ab"),
    );
    assert_eq!(r.status, 204, "PATCH {slash}: {r:?}");
    assert_eq!(d.offset(&id), 2);

    for (method, path) in [
        ("PUT", format!("/files/{id}")),
        ("POST", format!("/files/{id}")),
        ("GET", "/files".to_string()),
        ("PUT", "/files".to_string()),
        ("DELETE", "/files".to_string()),
    ] {
        let r = d.send(&Req::new(method, &path).tus());
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        let allow = r
            .header("Allow")
            .unwrap_or_else(|| panic!("405 needs Allow: {method} {path}: {r:?}"));
        assert!(!allow.trim().is_empty(), "empty Allow: {r:?}");
        if method == "PUT" {
            assert!(!allow.contains("PUT"), "Allow {allow:?} lists PUT");
        }
        r.assert_tus();
    }
    for path in ["/nope", "/", "/filesx", "/files/a/b"] {
        let r = d.send(&Req::new("HEAD", path).tus());
        assert_eq!(r.status, 404, "HEAD {path}: {r:?}");
    }
    let r = d.send(&Req::new("GET", "/nope"));
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(d.offset(&id), 2, "nothing above may touch the upload");
}

// ------------------------------------------------------------------------ on-disk info

#[test]
fn info_file_has_rustus_layout() {
    let tmp = TempDir::new("info");
    let d = Daemon::start(&tmp, &[]);
    let r = d.post(&[
        ("Upload-Length", "8"),
        ("Upload-Metadata", "filename YS50eHQ="),
    ]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    d.patch(&id, 0, b"12345").assert_status(204, "patch");
    let info = read_info(&d.info_path(&id));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(info["id"], id.as_str(), "{info}");
    assert_eq!(info["offset"], 5, "{info}");
    assert_eq!(info["length"], 8, "{info}");
    assert_eq!(
        info["path"],
        d.data_path(&id).display().to_string().as_str(),
        "{info}"
    );
    let created = info["created_at"]
        .as_i64()
        .expect("created_at is an integer");
    assert!(
        (now - created).abs() < 120,
        "created_at {created} vs now {now}"
    );
    assert_eq!(info["deferred_size"], false, "{info}");
    assert_eq!(info["is_partial"], false, "{info}");
    assert_eq!(info["is_final"], false, "{info}");
    assert!(info["parts"].is_null(), "{info}");
    assert_eq!(info["storage"], "file_storage", "{info}");
    assert_eq!(
        info["metadata"],
        serde_json::json!({"filename": "a.txt"}),
        "{info}"
    );

    // Deferred: length null, deferred_size true.
    let id = d.create_deferred();
    let info = read_info(&d.info_path(&id));
    assert!(info["length"].is_null(), "{info}");
    assert_eq!(info["deferred_size"], true, "{info}");
}

#[test]
fn separate_info_dir() {
    let tmp = TempDir::new("infodir");
    let d = Daemon::builder(&tmp).info_dir(tmp.join("info")).start();
    let id = d.create(3);
    d.patch(&id, 0, b"xyz").assert_status(204, "patch");
    assert_eq!(std::fs::read(tmp.join("data").join(&id)).unwrap(), b"xyz");
    let info = read_info(&tmp.join("info").join(format!("{id}.info")));
    assert_eq!(info["offset"], 3);
    assert!(
        !tmp.join("data").join(format!("{id}.info")).exists(),
        "the info file belongs in --info-dir"
    );
}

#[test]
fn dir_structure_places_data_under_year_and_month() {
    let tmp = TempDir::new("dirstruct");
    let d = Daemon::start(&tmp, &["--dir-structure", "{year}/{month}"]);
    let id = d.create(4);
    d.patch(&id, 0, b"data").assert_status(204, "patch");
    let info = read_info(&d.info_path(&id));
    let (y, m) = utc_year_month(info["created_at"].as_i64().unwrap());
    let want = d
        .data_dir()
        .join(y.to_string())
        .join(m.to_string())
        .join(&id);
    assert_eq!(
        std::fs::read(&want).unwrap_or_else(|e| panic!("read {want:?}: {e}")),
        b"data"
    );
    assert_eq!(info["path"], want.display().to_string().as_str(), "{info}");
    // Info records stay flat.
    assert!(d.info_path(&id).is_file());
    // Deleting removes the nested data file.
    assert_eq!(d.delete(&id).status, 204);
    assert!(!want.exists());
}

#[test]
fn serves_a_rustus_data_dir() {
    let tmp = TempDir::new("rustus-compat");
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let id = "0f9a3c2e-8b1d-4e6f-9a7b-5c4d3e2f1a0b";
    let path = data.join(id);
    let info = format!(
        r#"{{"id":"{id}","offset":5,"length":10,"path":"{}","created_at":1795801207,"deferred_size":false,"is_partial":false,"is_final":false,"parts":null,"storage":"file_storage","metadata":{{"filename":"a.txt"}}}}"#,
        path.display()
    );
    std::fs::write(data.join(format!("{id}.info")), info).unwrap();
    std::fs::write(&path, b"hello").unwrap();

    let d = Daemon::start(&tmp, &[]);
    let h = d.head(id);
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!((h.upload_offset(), h.upload_length()), (5, Some(10)));
    assert_eq!(
        parse_metadata(h.header("Upload-Metadata").unwrap_or("")),
        vec![("filename".to_string(), "YS50eHQ=".to_string())],
        "{h:?}"
    );
    let p = d.patch(id, 5, b"world");
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 10);
    assert_eq!(std::fs::read(&path).unwrap(), b"helloworld");
    let info = read_info(&data.join(format!("{id}.info")));
    assert_eq!(info["offset"], 10, "{info}");
    assert_eq!(info["length"], 10, "{info}");
    assert_eq!(info["created_at"], 1795801207, "{info}");
    assert_eq!(info["path"], path.display().to_string().as_str(), "{info}");
    assert_eq!(info["metadata"]["filename"], "a.txt", "{info}");
}

// ------------------------------------------------------------------ health and logging

#[test]
fn health_reports_storage_state() {
    let tmp = TempDir::new("health");
    let info = tmp.join("info");
    let d = Daemon::builder(&tmp).info_dir(info.clone()).start();
    let r = d.send(&Req::new("GET", "/health"));
    assert_eq!(r.status, 200, "{r:?}");
    // chmod does not stop root, so break the info dir by turning it into a regular file.
    std::fs::remove_dir_all(&info).unwrap();
    std::fs::write(&info, b"not a directory").unwrap();
    let r = d.send(&Req::new("GET", "/health"));
    assert_eq!(r.status, 503, "info dir replaced by a file: {r:?}");
}

#[test]
fn access_log_has_one_line_per_request() {
    let tmp = TempDir::new("accesslog");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(3);
    d.patch(&id, 0, b"abc").assert_status(204, "patch");
    d.head(&id);
    for needles in [
        vec!["POST", "/files", "201"],
        vec!["PATCH", id.as_str(), "204"],
        vec!["HEAD", id.as_str(), "200"],
    ] {
        assert!(
            d.wait_log_line(&needles).is_some(),
            "no access-log line with {needles:?} on stderr:\n{}",
            d.stderr_text()
        );
    }
    let patch_lines = d
        .stderr_text()
        .lines()
        .filter(|l| l.contains("PATCH") && l.contains(id.as_str()))
        .count();
    assert_eq!(patch_lines, 1, "one line per request:\n{}", d.stderr_text());
}
