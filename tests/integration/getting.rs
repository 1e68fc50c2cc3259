//! rustus's `getting` extension: `GET /files/<id>` serves the bytes stored so far, with
//! a single `Range`, the media type and disposition from the metadata's `filename`, and
//! nothing that could run script in the server's origin.

use crate::harness::*;
use base64::Engine;
use std::io::{Read, Write};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Creates an upload of `body` named `filename` (if any) and stores all of it.
fn upload(d: &Daemon, body: &[u8], filename: Option<&str>) -> String {
    let len = body.len().to_string();
    let md = filename.map(|f| format!("filename {}", b64(f)));
    let mut hs = vec![("Upload-Length", len.as_str())];
    if let Some(md) = &md {
        hs.push(("Upload-Metadata", md.as_str()));
    }
    let r = d.post(&hs);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    if !body.is_empty() {
        let r = d.patch(&id, 0, body);
        assert_eq!(r.status, 204, "{r:?}");
    }
    id
}

fn get(d: &Daemon, id: &str, range: Option<&str>) -> Response {
    let mut req = Req::new("GET", &format!("/files/{id}"));
    if let Some(r) = range {
        req = req.h("Range", r);
    }
    d.send(&req)
}

#[test]
fn get_full_without_tus_resumable() {
    let tmp = TempDir::new("get-full");
    let d = Daemon::start(&tmp, &[]);
    let id = upload(&d, b"hello, world", Some("greeting.txt"));
    for path in [format!("/files/{id}"), format!("/files/{id}/")] {
        let r = d.send(&Req::new("GET", &path));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, b"hello, world");
        assert_eq!(r.header("Content-Length"), Some("12"), "{r:?}");
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"), "{r:?}");
        assert_eq!(
            r.header("Content-Type"),
            Some("text/plain; charset=utf-8"),
            "{r:?}"
        );
        assert_eq!(
            r.header("Content-Disposition"),
            Some("inline; filename=\"greeting.txt\""),
            "{r:?}"
        );
        assert_eq!(r.header("ETag"), Some(format!("\"{id}-12\"").as_str()));
        let lm = r.header("Last-Modified").expect("Last-Modified");
        assert!(lm.ends_with(" GMT") && lm.len() == 29, "{lm:?}");
        r.assert_tus();
    }
    // Keep-alive: two downloads on one connection.
    let mut c = d.conn();
    for _ in 0..2 {
        let r = c.request(&Req::new("GET", &format!("/files/{id}")));
        assert_eq!(r.body, b"hello, world", "{r:?}");
    }
    // HEAD stays tus's offset retrieval.
    let h = d.head(&id);
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(h.upload_offset(), 12);
    assert!(!h.has("Content-Disposition"), "{h:?}");
}

#[test]
fn get_ranges() {
    let tmp = TempDir::new("get-range");
    let d = Daemon::start(&tmp, &[]);
    let id = upload(&d, b"0123456789", None);
    let cases = [
        ("bytes=2-5", "2345", "bytes 2-5/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=8-100", "89", "bytes 8-9/10"),
    ];
    for (range, body, cr) in cases {
        let r = get(&d, &id, Some(range));
        assert_eq!(r.status, 206, "{range}: {r:?}");
        assert_eq!(r.body, body.as_bytes(), "{range}: {r:?}");
        assert_eq!(r.header("Content-Range"), Some(cr), "{range}: {r:?}");
        assert_eq!(
            r.header("Content-Length"),
            Some(body.len().to_string().as_str())
        );
    }
    for range in ["bytes=10-", "bytes=20-30", "bytes=-0"] {
        let r = get(&d, &id, Some(range));
        assert_eq!(r.status, 416, "{range}: {r:?}");
        assert_eq!(r.header("Content-Range"), Some("bytes */10"), "{r:?}");
        assert!(r.body.is_empty(), "{r:?}");
    }
    // Several ranges, or a malformed one: the whole representation.
    for range in ["bytes=0-1,4-5", "bytes=5-2", "lines=1-2"] {
        let r = get(&d, &id, Some(range));
        assert_eq!(r.status, 200, "{range}: {r:?}");
        assert_eq!(r.body, b"0123456789", "{range}");
        assert!(!r.has("Content-Range"), "{r:?}");
    }
    // No filename: named after the id, octet-stream, attachment.
    let r = get(&d, &id, None);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/octet-stream"),
        "{r:?}"
    );
    assert_eq!(
        r.header("Content-Disposition"),
        Some(format!("attachment; filename=\"{id}\"").as_str()),
        "{r:?}"
    );
}

#[test]
fn incomplete_upload_served_as_far_as_it_goes() {
    let tmp = TempDir::new("get-partial");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(100);
    let r = get(&d, &id, None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("Content-Length"), Some("0"), "{r:?}");
    let r = get(&d, &id, Some("bytes=0-"));
    assert_eq!(r.status, 416, "{r:?}");
    assert_eq!(d.patch(&id, 0, b"abcdef").status, 204);
    let r = get(&d, &id, None);
    assert_eq!(r.body, b"abcdef", "{r:?}");
    assert_eq!(r.header("ETag"), Some(format!("\"{id}-6\"").as_str()));
    let r = get(&d, &id, Some("bytes=4-99"));
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(r.body, b"ef");
    assert_eq!(r.header("Content-Range"), Some("bytes 4-5/6"), "{r:?}");
}

#[test]
fn unknown_or_bad_id_is_404() {
    let tmp = TempDir::new("get-404");
    let d = Daemon::start(&tmp, &[]);
    let r = get(&d, "9e9dd6f5-44b5-4c1c-a0a6-43e1d9c7a0b1", None);
    assert_eq!(r.status, 404, "{r:?}");
    let r = get(&d, "not-an-id", None);
    assert_eq!(r.status, 404, "{r:?}");
    // Deleted: 404 too.
    let id = upload(&d, b"x", None);
    assert_eq!(d.delete(&id).status, 204);
    assert_eq!(get(&d, &id, None).status, 404);
}

#[test]
fn content_type_and_disposition_from_filename() {
    let tmp = TempDir::new("get-types");
    let d = Daemon::start(&tmp, &[]);
    let cases = [
        ("photo.PNG", "image/png", "inline"),
        ("a.jpeg", "image/jpeg", "inline"),
        ("clip.mp4", "video/mp4", "inline"),
        ("data.json", "application/json", "attachment"),
        ("archive.zip", "application/zip", "attachment"),
        ("paper.pdf", "application/pdf", "attachment"),
        ("blob.bin", "application/octet-stream", "attachment"),
    ];
    for (name, ct, disp) in cases {
        let id = upload(&d, b"data", Some(name));
        let r = get(&d, &id, None);
        assert_eq!(r.header("Content-Type"), Some(ct), "{name}: {r:?}");
        assert_eq!(
            r.header("Content-Disposition"),
            Some(format!("{disp}; filename=\"{name}\"").as_str()),
            "{name}: {r:?}"
        );
    }
    let id = upload(&d, b"q", Some("say \"hi\"\\.txt"));
    let r = get(&d, &id, None);
    assert_eq!(
        r.header("Content-Disposition"),
        Some("inline; filename=\"say \\\"hi\\\"\\\\.txt\""),
        "{r:?}"
    );
}

#[test]
fn large_download_is_byte_exact() {
    let tmp = TempDir::new("get-large");
    let d = Daemon::start(&tmp, &[]);
    let body: Vec<u8> = (0..8u64 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let id = upload(&d, &body, Some("big.bin"));
    let r = get(&d, &id, None);
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "download differs from the upload");
    let (a, b) = (1_000_001usize, 5_000_000usize);
    let r = get(&d, &id, Some(&format!("bytes={a}-{b}")));
    assert_eq!(r.status, 206, "{:?}", r.headers);
    assert!(r.body == body[a..=b], "range differs");
}

#[test]
fn getting_disabled_is_not_served() {
    let tmp = TempDir::new("get-off");
    let d = Daemon::start(&tmp, &["--tus-extensions", "creation,termination"]);
    let id = upload(&d, b"abc", None);
    let r = get(&d, &id, None);
    assert_eq!(r.status, 405, "{r:?}");
    assert!(!r.body.starts_with(b"abc"), "{r:?}");
    let o = d.options("/files");
    assert_eq!(o.header("Tus-Extension"), Some("creation,termination"));
}

#[test]
fn downloads_are_identical_on_both_paths_back_to_back_and_to_a_slow_reader() {
    // The default path splices file -> pipe -> socket; --disable-splice reads through a
    // buffer. Both must give the same bytes, keep the connection usable (the pipe is
    // empty after each download), and serve a client that reads slowly.
    let tmp = TempDir::new("get-paths");
    let body: Vec<u8> = (0..3u64 * 1024 * 1024 + 777)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    for extra in [&[][..], &["--disable-splice"][..]] {
        let d = Daemon::builder(&tmp)
            .info_dir(tmp.join(if extra.is_empty() { "i-s" } else { "i-b" }))
            .args(extra)
            .start();
        let id = upload(&d, &body, Some("paths.bin"));
        // Several downloads on one keep-alive connection: full, ranges at odd offsets,
        // one byte, the tail.
        let mut c = d.conn();
        let ranges: [(usize, usize); 5] = [
            (0, body.len() - 1),
            (1, 1_048_577),
            (1_048_575, 2_097_153),
            (12345, 12345),
            (body.len() - 1000, body.len() - 1),
        ];
        for (a, b) in ranges {
            let req =
                Req::new("GET", &format!("/files/{id}")).h("Range", &format!("bytes={a}-{b}"));
            let r = c.request(&req);
            assert_eq!(r.status, 206, "{extra:?} {a}-{b}: {:?}", r.headers);
            assert!(r.body == body[a..=b], "{extra:?}: range {a}-{b} differs");
        }
        let r = c.request(&Req::new("GET", &format!("/files/{id}")));
        assert_eq!(r.status, 200);
        assert!(r.body == body, "{extra:?}: full download differs");
        // A slow reader: a small receive buffer, 64 KiB every 10 ms.
        let s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        assert_eq!(set_rcvbuf(&s, 16 * 1024), 0);
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut w = s.try_clone().unwrap();
        write!(
            w,
            "GET /files/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut r = s;
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(got.starts_with(b"HTTP/1.1 200"), "{extra:?}");
        assert!(
            got[head_end..] == body[..],
            "{extra:?}: slow download differs"
        );
        assert_eq!(d.send(&Req::new("GET", "/health")).status, 200);
    }
}

/// Shrinks a socket's receive buffer (so the server's sends fill it quickly).
fn set_rcvbuf(s: &std::net::TcpStream, bytes: i32) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt reads one int from a valid pointer.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    }
}

/// Every class of download: only types that cannot run script are `inline` (raster
/// images, audio, video, plain text); HTML, SVG, XML, JavaScript, JSON, CSS, wasm, PDF
/// and unknown types are `attachment`s. Every download, whole, partial (206) or refused
/// (416), carries `X-Content-Type-Options: nosniff` and a `sandbox` policy without
/// `allow-scripts`.
#[test]
fn downloads_run_no_script_in_the_servers_origin() {
    let tmp = TempDir::new("get-safe");
    let d = Daemon::start(&tmp, &[]);
    let page = b"<html><script>alert(document.cookie)</script></html>";
    let cases: &[(&str, &str, &str)] = &[
        // Raster images.
        ("a.png", "image/png", "inline"),
        ("b.JPG", "image/jpeg", "inline"),
        ("c.gif", "image/gif", "inline"),
        ("d.webp", "image/webp", "inline"),
        // Audio and video.
        ("e.mp3", "audio/mpeg", "inline"),
        ("f.wav", "audio/wav", "inline"),
        ("g.mp4", "video/mp4", "inline"),
        ("h.webm", "video/webm", "inline"),
        // Plain text (with HTML inside: nosniff keeps it text).
        ("i.txt", "text/plain; charset=utf-8", "inline"),
        // Documents that run script, or may.
        ("x.html", "text/html; charset=utf-8", "attachment"),
        ("x.HTM", "text/html; charset=utf-8", "attachment"),
        ("x.svg", "image/svg+xml", "attachment"),
        ("x.js", "text/javascript; charset=utf-8", "attachment"),
        ("x.mjs", "text/javascript; charset=utf-8", "attachment"),
        ("x.json", "application/json", "attachment"),
        ("x.css", "text/css; charset=utf-8", "attachment"),
        ("x.wasm", "application/wasm", "attachment"),
        ("x.pdf", "application/pdf", "attachment"),
        ("x.xml", "application/octet-stream", "attachment"),
        ("x.zip", "application/zip", "attachment"),
        ("x", "application/octet-stream", "attachment"),
    ];
    for (name, ct, disp) in cases {
        let id = upload(&d, page, Some(name));
        for (range, status) in [
            (None, 200),
            (Some("bytes=0-5"), 206),
            (Some("bytes=999-"), 416),
        ] {
            let r = get(&d, &id, range);
            let what = format!("{name} {range:?}");
            assert_eq!(r.status, status, "{what}: {r:?}");
            assert_safe_download(&r, &what);
            if status != 416 {
                assert_eq!(r.header("Content-Type"), Some(*ct), "{what}: {r:?}");
                assert_eq!(
                    r.header("Content-Disposition"),
                    Some(format!("{disp}; filename=\"{name}\"").as_str()),
                    "{what}: {r:?}"
                );
            }
        }
    }
    // No filename: the ID names it, and it is an attachment.
    let id = upload(&d, page, None);
    let r = get(&d, &id, None);
    assert_safe_download(&r, "no filename");
    assert_eq!(
        r.header("Content-Disposition"),
        Some(format!("attachment; filename=\"{id}\"").as_str()),
        "{r:?}"
    );
}

fn assert_safe_download(r: &Response, what: &str) {
    assert_eq!(
        r.header("X-Content-Type-Options"),
        Some("nosniff"),
        "{what}: {r:?}"
    );
    let csp = r
        .header("Content-Security-Policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy: {r:?}"));
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"sandbox"), "{what}: {csp}");
    assert!(!csp.contains("allow-scripts"), "{what}: {csp}");
    assert!(directives.contains(&"default-src 'none'"), "{what}: {csp}");
}
