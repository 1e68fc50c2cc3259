//! The checksum and checksum-trailer extensions: `Upload-Checksum` on PATCH (Content-Length
//! and chunked), on creation-with-upload, and as a chunked trailer; every algorithm right
//! and wrong; unknown and malformed values; the upload (HEAD, info record, data file)
//! unchanged by a refused body; the extension switched off; both data paths; a kill -9 in
//! the middle of a checksummed PATCH.

use crate::harness::*;
use base64::Engine;
use sha2::Digest;
use std::thread;
use std::time::Duration;

const ALGS: [&str; 4] = ["md5", "sha1", "sha256", "sha512"];

/// The digest of `data` with the named algorithm, computed here with the RustCrypto crates.
fn digest(alg: &str, data: &[u8]) -> Vec<u8> {
    match alg {
        "md5" => md5::Md5::digest(data).to_vec(),
        "sha1" => sha1::Sha1::digest(data).to_vec(),
        "sha256" => sha2::Sha256::digest(data).to_vec(),
        "sha512" => sha2::Sha512::digest(data).to_vec(),
        _ => panic!("unknown algorithm {alg}"),
    }
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// `Upload-Checksum` for `data`.
fn checksum(alg: &str, data: &[u8]) -> String {
    format!("{alg} {}", b64(&digest(alg, data)))
}

/// `Upload-Checksum` of the right algorithm and length, for other bytes.
fn wrong_checksum(alg: &str, data: &[u8]) -> String {
    let mut other = data.to_vec();
    other.push(0);
    checksum(alg, &other)
}

/// The upload's state as every observer sees it: HEAD's offset, the info record's
/// offset, the data file's bytes.
fn assert_upload(d: &Daemon, id: &str, want: &[u8], what: &str) {
    assert_eq!(d.offset(id), want.len() as u64, "{what}: HEAD offset");
    let info = read_info(&d.info_path(id));
    assert_eq!(
        info["offset"],
        want.len() as u64,
        "{what}: info record {info}"
    );
    assert_bytes_eq(&d.read_data(id), want, what);
    // Only the upload's own files: no staging file left behind.
    let names: Vec<String> = list_files(d.data_dir())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| is_uuid_v4(n) || n.strip_suffix(".info").is_some_and(is_uuid_v4)),
        "{what}: stray files in the data dir: {names:?}"
    );
}

/// A chunked PATCH with the given extra headers and trailer section.
fn chunked_patch(
    id: &str,
    offset: u64,
    body: &[u8],
    headers: &[(&str, &str)],
    trailer: &str,
) -> Req {
    let mut enc = chunked(body, 100_000);
    // `chunked` ends with the last chunk and an empty trailer section: "0\r\n\r\n".
    enc.truncate(enc.len() - 2);
    enc.extend_from_slice(trailer.as_bytes());
    enc.extend_from_slice(b"\r\n");
    Req::new("PATCH", &format!("/files/{id}"))
        .tus()
        .h(OCTET.0, OCTET.1)
        .h("Upload-Offset", &offset.to_string())
        .h("Transfer-Encoding", "chunked")
        .headers(headers)
        .raw_framing()
        .body(&enc)
}

fn send_tus(d: &Daemon, req: &Req) -> Response {
    let r = d.send(req);
    r.assert_tus();
    r
}

/// Pipes the daemon holds open: each connection makes one the first time it splices a
/// body and keeps it until it closes, so a new pipe on a connection kept open is the
/// evidence that a body of it was spliced.
fn pipe_fds(d: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .expect("the daemon's fds")
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("pipe:"))
        })
        .count()
}

/// Every algorithm, right then wrong then right, Content-Length and chunked bodies,
/// several body buffers long (the staging copy runs over many buffers), then an unchecked
/// last part, all on one keep-alive connection. A checksummed body must pass through user
/// space to be hashed, so it is never spliced, even with splicing on: the connection
/// makes no pipe for it. The unchecked part is spliced when splicing is on (the connection
/// then holds a pipe) and buffered with `--disable-splice` (no pipe, ever).
fn patch_every_algorithm(splice: bool, tag: &str) {
    let tmp = TempDir::new(tag);
    let extra: &[&str] = if splice { &[] } else { &["--disable-splice"] };
    let d = Daemon::start(&tmp, extra);
    const PART: usize = 300 * 1024 + 17;
    for (i, alg) in ALGS.iter().enumerate() {
        let data = random_bytes(700 + i as u64, 4 * PART);
        let id = d.create(data.len() as u64);
        let parts: Vec<&[u8]> = data.chunks(PART).collect();
        let mut c = d.conn();
        let pipes = pipe_fds(&d);
        let mut send = |req: &Req| {
            let r = c.request(req);
            r.assert_tus();
            r
        };
        let patch = |offset: usize, body: &[u8], value: Option<String>| {
            let req = patch_req(&id, offset as u64, body);
            match value {
                Some(v) => req.h("Upload-Checksum", &v),
                None => req,
            }
        };

        let r = send(&patch(0, parts[0], Some(checksum(alg, parts[0]))));
        assert_eq!(r.status, 204, "{alg}: right checksum: {r:?}");
        assert_eq!(r.upload_offset(), PART as u64);
        assert_upload(&d, &id, parts[0], &format!("{alg} after the first part"));

        let r = send(&patch(PART, parts[1], Some(wrong_checksum(alg, parts[1]))));
        assert_eq!(r.status, 460, "{alg}: wrong checksum: {r:?}");
        assert_eq!(r.reason, "Checksum Mismatch", "{r:?}");
        assert_upload(&d, &id, parts[0], &format!("{alg}: unchanged after a 460"));

        // Chunked, wrong then right.
        for (value, status) in [
            (wrong_checksum(alg, parts[1]), 460),
            (checksum(alg, parts[1]), 204),
        ] {
            let req = chunked_patch(
                &id,
                PART as u64,
                parts[1],
                &[("Upload-Checksum", &value)],
                "",
            );
            let r = send(&req);
            assert_eq!(r.status, status, "{alg}: chunked, {value}: {r:?}");
        }
        assert_upload(
            &d,
            &id,
            &data[..2 * PART],
            &format!("{alg}: chunked part stored"),
        );

        // Content-Length again: staged, not spliced, on either path.
        let r = send(&patch(2 * PART, parts[2], Some(checksum(alg, parts[2]))));
        assert_eq!(r.status, 204, "{alg}: {r:?}");
        assert_eq!(
            pipe_fds(&d),
            pipes,
            "{alg}: a checksummed body was spliced (the connection made a pipe)"
        );
        // The last part without a checksum (still allowed): spliced when splicing is on.
        let r = send(&patch(3 * PART, parts[3], None));
        assert_eq!(r.status, 204, "{alg}: unchecked last part: {r:?}");
        let want = if splice { pipes + 2 } else { pipes };
        assert_eq!(
            pipe_fds(&d),
            want,
            "{alg}: the unchecked body {}",
            if splice {
                "was not spliced (no pipe on its connection)"
            } else {
                "was spliced with --disable-splice"
            }
        );
        assert_upload(&d, &id, &data, &format!("{alg}: complete"));
    }
}

/// With splicing on (the default), checksummed PATCHes are staged and verified, and the
/// unchecked part of the same upload, on the same connection, is spliced.
#[test]
fn checksum_patch_every_algorithm_staged_beside_a_spliced_part() {
    patch_every_algorithm(true, "chk-splice");
}

#[test]
fn checksum_patch_every_algorithm_buffered() {
    patch_every_algorithm(false, "chk-buffered");
}

#[test]
fn checksum_options_advertise_algorithms_only_when_on() {
    let tmp = TempDir::new("chk-options");
    let d = Daemon::start(&tmp, &[]);
    let r = d.options("/files");
    assert_eq!(
        r.header("Tus-Checksum-Algorithm"),
        Some("md5,sha1,sha256,sha512"),
        "{r:?}"
    );
    let ext = r.header("Tus-Extension").unwrap_or("");
    assert!(ext.split(',').any(|e| e == "checksum"), "{r:?}");
    assert!(
        !ext.split(',').any(|e| e == "checksum-trailer"),
        "off by default: {r:?}"
    );
    drop(d);

    let tmp = TempDir::new("chk-options-trailer");
    let d = Daemon::start(&tmp, &["--tus-extensions", "creation,checksum-trailer"]);
    let r = d.options("/files");
    assert_eq!(
        r.header("Tus-Extension"),
        Some("creation,checksum,checksum-trailer"),
        "{r:?}"
    );
    assert_eq!(
        r.header("Tus-Checksum-Algorithm"),
        Some("md5,sha1,sha256,sha512"),
        "{r:?}"
    );
    drop(d);

    // Off: not advertised, and the header is ignored (as rustus does), even a wrong one.
    let tmp = TempDir::new("chk-options-off");
    let d = Daemon::start(
        &tmp,
        &["--tus-extensions", "creation-with-upload,termination"],
    );
    let r = d.options("/files");
    assert!(!r.has("Tus-Checksum-Algorithm"), "{r:?}");
    assert_eq!(
        r.header("Tus-Extension"),
        Some("creation-with-upload,creation,termination")
    );
    let id = d.create(8);
    let r = d.patch_with(
        &id,
        0,
        b"abcd",
        &[("Upload-Checksum", &wrong_checksum("sha1", b"abcd"))],
    );
    assert_eq!(r.status, 204, "checksum off: header ignored: {r:?}");
    let r = d.patch_with(&id, 4, b"efgh", &[("Upload-Checksum", "sha1")]);
    assert_eq!(
        r.status, 204,
        "checksum off: even a malformed header is ignored: {r:?}"
    );
    assert_upload(&d, &id, b"abcdefgh", "checksum off");
}

#[test]
fn checksum_unknown_and_malformed_are_400_and_change_nothing() {
    let tmp = TempDir::new("chk-bad");
    let d = Daemon::start(&tmp, &[]);
    let body = b"0123456789";
    let id = d.create(20);
    let r = d.patch(&id, 0, b"abcde");
    assert_eq!(r.status, 204);
    let good_sha1 = b64(&digest("sha1", body));
    let mut cases: Vec<(String, &str)> = vec![
        (
            format!("crc32 {}", b64(&[1, 2, 3, 4])),
            "unknown algorithm crc32",
        ),
        (format!("foo {good_sha1}"), "unknown algorithm foo"),
        (format!("SHA1 {good_sha1}"), "names are lowercase"),
        ("sha1".to_string(), "no space"),
        (format!("sha1{good_sha1}"), "no space"),
        ("sha1 ".to_string(), "no digest"),
        (format!("sha1  {good_sha1}"), "two spaces"),
        ("sha1 !!notbase64!!".to_string(), "bad base64"),
        (good_sha1.clone(), "digest only"),
    ];
    for alg in ALGS {
        // The right base64, the wrong length for the algorithm.
        let short = &digest(alg, body)[..8];
        cases.push((format!("{alg} {}", b64(short)), "wrong length"));
        let long = [digest(alg, body), vec![0; 4]].concat();
        cases.push((format!("{alg} {}", b64(&long)), "wrong length"));
    }
    for (value, what) in &cases {
        let r = d.patch_with(&id, 5, body, &[("Upload-Checksum", value)]);
        assert_eq!(r.status, 400, "{what} ({value:?}): {r:?}");
        assert!(!r.body.is_empty(), "{what}: the answer says why: {r:?}");
        let r = send_tus(
            &d,
            &chunked_patch(&id, 5, body, &[("Upload-Checksum", value)], ""),
        );
        assert_eq!(r.status, 400, "chunked, {what} ({value:?}): {r:?}");
        // On a POST with a body: refused before the upload exists.
        let before = list_files(d.data_dir()).len();
        let r = d.send(
            &Req::new("POST", "/files")
                .tus()
                .h("Upload-Length", "10")
                .h(OCTET.0, OCTET.1)
                .h("Upload-Checksum", value)
                .body(body),
        );
        assert_eq!(r.status, 400, "POST, {what} ({value:?}): {r:?}");
        assert!(!r.has("Location"), "{r:?}");
        assert_eq!(
            list_files(d.data_dir()).len(),
            before,
            "POST {what} created a file"
        );
    }
    assert_upload(&d, &id, b"abcde", "after every refused checksum");
    // Checked before the upload is looked at (as rustus): an unknown upload is 400 too.
    let r = d.patch_with(&fresh_uuid(9), 0, body, &[("Upload-Checksum", "foo bar")]);
    assert_eq!(r.status, 400, "{r:?}");
    // The right one still goes through, on the same upload.
    let r = d.patch_with(
        &id,
        5,
        body,
        &[("Upload-Checksum", &format!("sha1 {good_sha1}"))],
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_upload(&d, &id, b"abcde0123456789", "after the right checksum");
}

#[test]
fn checksum_on_creation_with_upload() {
    for (extra, tag) in [
        (&[][..], "chk-post"),
        (&["--disable-splice"][..], "chk-post-buf"),
    ] {
        let tmp = TempDir::new(tag);
        let d = Daemon::start(&tmp, extra);
        for (i, alg) in ALGS.iter().enumerate() {
            let data = random_bytes(800 + i as u64, 200 * 1024 + 3);
            let post = |value: &str| {
                d.send(
                    &Req::new("POST", "/files")
                        .tus()
                        .h("Upload-Length", &(2 * data.len()).to_string())
                        .h(OCTET.0, OCTET.1)
                        .h("Upload-Checksum", value)
                        .body(&data),
                )
            };
            let r = post(&checksum(alg, &data));
            assert_eq!(r.status, 201, "{alg}: {r:?}");
            assert_eq!(r.upload_offset(), data.len() as u64, "{r:?}");
            let id = upload_id(&r);
            assert_upload(
                &d,
                &id,
                &data,
                &format!("{alg}: POST with the right checksum"),
            );

            // Wrong: the upload exists (it was created before the body came), with
            // none of the body; the client can resume it at offset 0.
            let r = post(&wrong_checksum(alg, &data));
            assert_eq!(r.status, 460, "{alg}: {r:?}");
            r.assert_tus();
            assert_eq!(r.upload_offset(), 0, "{r:?}");
            let id = upload_id(&r);
            assert_upload(&d, &id, b"", &format!("{alg}: POST with a wrong checksum"));
            let r = d.patch_with(&id, 0, &data, &[("Upload-Checksum", &checksum(alg, &data))]);
            assert_eq!(r.status, 204, "{alg}: resume after the 460: {r:?}");
            assert_upload(&d, &id, &data, &format!("{alg}: resumed"));
        }
    }
}

#[test]
fn checksum_trailer_every_algorithm() {
    let tmp = TempDir::new("chk-trailer");
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "creation,creation-with-upload,checksum-trailer",
        ],
    );
    let announce = [("Trailer", "Upload-Checksum")];
    for (i, alg) in ALGS.iter().enumerate() {
        let data = random_bytes(900 + i as u64, 3 * 150 * 1024);
        let parts: Vec<&[u8]> = data.chunks(150 * 1024).collect();
        let id = d.create(data.len() as u64);
        let trailer = |v: &str| format!("Upload-Checksum: {v}\r\n");

        let r = send_tus(
            &d,
            &chunked_patch(
                &id,
                0,
                parts[0],
                &announce,
                &trailer(&checksum(alg, parts[0])),
            ),
        );
        assert_eq!(r.status, 204, "{alg}: right trailer: {r:?}");
        assert_upload(&d, &id, parts[0], &format!("{alg}: right trailer"));

        let wrong = trailer(&wrong_checksum(alg, parts[1]));
        let r = send_tus(
            &d,
            &chunked_patch(&id, parts[0].len() as u64, parts[1], &announce, &wrong),
        );
        assert_eq!(r.status, 460, "{alg}: wrong trailer: {r:?}");
        assert_upload(&d, &id, parts[0], &format!("{alg}: wrong trailer"));

        // Announced but absent: 400, nothing stored.
        let r = send_tus(
            &d,
            &chunked_patch(
                &id,
                parts[0].len() as u64,
                parts[1],
                &announce,
                "X-Other: 1\r\n",
            ),
        );
        assert_eq!(r.status, 400, "{alg}: missing trailer: {r:?}");
        assert_upload(&d, &id, parts[0], &format!("{alg}: missing trailer"));

        // Malformed or unknown in the trailer: 400.
        for bad in ["sha1", "foo AAAA", &format!("{alg} AAAA")] {
            let r = send_tus(
                &d,
                &chunked_patch(
                    &id,
                    parts[0].len() as u64,
                    parts[1],
                    &announce,
                    &trailer(bad),
                ),
            );
            assert_eq!(r.status, 400, "{alg}: trailer {bad:?}: {r:?}");
        }
        // Header and announced trailer at once: 400.
        let both = [
            ("Trailer", "Upload-Checksum"),
            ("Upload-Checksum", &checksum(alg, parts[1])[..]),
        ];
        let r = send_tus(
            &d,
            &chunked_patch(
                &id,
                parts[0].len() as u64,
                parts[1],
                &both,
                &trailer(&checksum(alg, parts[1])),
            ),
        );
        assert_eq!(r.status, 400, "{alg}: header and trailer: {r:?}");
        assert_upload(&d, &id, parts[0], &format!("{alg}: after the 400s"));

        let r = send_tus(
            &d,
            &chunked_patch(
                &id,
                parts[0].len() as u64,
                parts[1],
                &announce,
                &trailer(&checksum(alg, parts[1])),
            ),
        );
        assert_eq!(r.status, 204, "{alg}: {r:?}");
        // A creation-with-upload POST with a trailer.
        let post = Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", &parts[2].len().to_string())
            .h(OCTET.0, OCTET.1)
            .h("Transfer-Encoding", "chunked")
            .h("Trailer", "upload-checksum")
            .raw_framing();
        let mut enc = chunked(parts[2], 40_000);
        enc.truncate(enc.len() - 2);
        for (value, status) in [
            (wrong_checksum(alg, parts[2]), 460),
            (checksum(alg, parts[2]), 201),
        ] {
            let mut body = enc.clone();
            body.extend_from_slice(trailer(&value).as_bytes());
            body.extend_from_slice(b"\r\n");
            let r = send_tus(&d, &post.clone().body(&body));
            assert_eq!(r.status, status, "{alg}: POST with trailer: {r:?}");
            let pid = upload_id(&r);
            let want: &[u8] = if status == 201 { parts[2] } else { b"" };
            assert_upload(&d, &pid, want, &format!("{alg}: POST with trailer"));
        }
    }
}

#[test]
fn checksum_trailer_ignored_when_the_extension_is_off() {
    // The default extensions have checksum but not checksum-trailer: a trailer is not
    // looked at (as rustus), the body is stored as it comes.
    let tmp = TempDir::new("chk-trailer-off");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    let trailer = format!(
        "Upload-Checksum: {}\r\n",
        wrong_checksum("sha1", b"0123456789")
    );
    let r = send_tus(
        &d,
        &chunked_patch(
            &id,
            0,
            b"0123456789",
            &[("Trailer", "Upload-Checksum")],
            &trailer,
        ),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_upload(&d, &id, b"0123456789", "trailer ignored");
}

#[test]
fn checksum_refusals_keep_length_connection_and_count() {
    let tmp = TempDir::new("chk-misc");
    let d = Daemon::start(&tmp, &[]);
    // A deferred length set by a refused PATCH stays deferred.
    let id = d.create_deferred();
    let r = d.patch_with(
        &id,
        0,
        b"abc",
        &[
            ("Upload-Length", "3"),
            ("Upload-Checksum", &wrong_checksum("md5", b"abc")),
        ],
    );
    assert_eq!(r.status, 460, "{r:?}");
    let h = d.head(&id);
    assert_eq!(h.header("Upload-Defer-Length"), Some("1"), "{h:?}");
    assert!(!h.has("Upload-Length"), "{h:?}");
    assert_upload(&d, &id, b"", "deferred, after a 460");

    // The connection serves the next request after a 460 (the whole body was read).
    let mut c = d.conn();
    let r = c.request(
        &patch_req(&id, 0, b"abc").h("Upload-Checksum", &wrong_checksum("sha256", b"abc")),
    );
    assert_eq!(r.status, 460, "{r:?}");
    assert_ne!(r.header("Connection"), Some("close"), "{r:?}");
    let r = c.request(
        &patch_req(&id, 0, b"abc")
            .h("Upload-Length", "3")
            .h("Upload-Checksum", &checksum("sha256", b"abc")),
    );
    assert_eq!(r.status, 204, "same connection: {r:?}");
    assert_upload(&d, &id, b"abc", "after the right checksum");

    // A checksummed chunked body that runs past Upload-Length: 413, nothing stored.
    let id = d.create(4);
    let r = send_tus(
        &d,
        &chunked_patch(
            &id,
            0,
            b"abcdefgh",
            &[("Upload-Checksum", &checksum("sha1", b"abcdefgh"))],
            "",
        ),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_upload(&d, &id, b"", "overrun");
    // A Content-Length one is refused before it is read, as without a checksum.
    let r = d.patch_with(
        &id,
        0,
        b"abcdefgh",
        &[("Upload-Checksum", &checksum("sha1", b"abcdefgh"))],
    );
    assert_eq!(r.status, 413, "{r:?}");
    // An empty body matches the digest of nothing.
    let r = d.patch_with(&id, 0, b"", &[("Upload-Checksum", &checksum("sha1", b""))]);
    assert_eq!(r.status, 204, "{r:?}");
    let r = d.patch_with(&id, 0, b"", &[("Upload-Checksum", &checksum("sha1", b"x"))]);
    assert_eq!(r.status, 460, "{r:?}");

    // The mismatches are counted.
    let m = d.send(&Req::new("GET", "/metrics"));
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.lines()
            .any(|l| l == "tusring_checksum_mismatches_total 3"),
        "{text}"
    );
}

#[test]
fn checksum_body_cut_short_stores_nothing() {
    let tmp = TempDir::new("chk-cut");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(31, 1 << 20);
    let id = d.create(data.len() as u64);
    let mut c = d.conn();
    c.send_head(&patch_req(&id, 0, &data).h("Upload-Checksum", &checksum("sha1", &data)));
    c.send_raw(&data[..300 * 1024]).unwrap();
    thread::sleep(Duration::from_millis(200));
    drop(c);
    // The request winds down; nothing of an unverifiable body is kept.
    thread::sleep(Duration::from_millis(300));
    assert_upload(&d, &id, b"", "checksummed body cut short");
}

#[test]
fn checksum_kill9_mid_patch_leaves_no_unverified_bytes() {
    let tmp = TempDir::new("chk-kill9");
    let mut d = Daemon::start(&tmp, &[]);
    let data = random_bytes(41, 8 << 20);
    let id = d.create(data.len() as u64);
    assert_eq!(d.patch(&id, 0, &data[..1000]).status, 204);
    let mut c = d.conn();
    c.send_head(
        &patch_req(&id, 1000, &data[1000..])
            .h("Upload-Checksum", &checksum("sha512", &data[1000..])),
    );
    for piece in data[1000..4 << 20].chunks(256 * 1024) {
        c.send_raw(piece).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    d.kill9();
    drop(c);
    d.restart();
    assert_upload(
        &d,
        &id,
        &data[..1000],
        "after kill -9 mid checksummed PATCH",
    );
    let r = d.patch_with(
        &id,
        1000,
        &data[1000..],
        &[("Upload-Checksum", &checksum("sha512", &data[1000..]))],
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_upload(&d, &id, &data, "resumed");
}

#[test]
fn checksum_mismatch_fires_no_hook() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("chk-hooks");
    let log = tmp.join("events.log");
    let hook = tmp.join("hook.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$1\" >> '{}'\nexit 0\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(&tmp, &["--hooks-file", hook.to_str().unwrap()]);
    let events = || std::fs::read_to_string(&log).unwrap_or_default();
    let id = d.create(8);
    let wrong = |b: &[u8]| wrong_checksum("sha256", b);
    let right = |b: &[u8]| checksum("sha256", b);
    let steps: [(u64, &[u8], String, u16); 4] = [
        (0, b"abcd", wrong(b"abcd"), 460),
        (0, b"abcd", right(b"abcd"), 204),
        (4, b"efgh", wrong(b"efgh"), 460),
        (4, b"efgh", right(b"efgh"), 204),
    ];
    for (off, body, value, status) in steps {
        let r = d.patch_with(&id, off, body, &[("Upload-Checksum", &value)]);
        assert_eq!(r.status, status, "{r:?}");
    }
    let want = "pre-create\npost-create\npost-receive\npost-finish\n";
    assert!(
        eventually(Duration::from_secs(5), || events() == want),
        "{:?}",
        events()
    );
    // Nothing more arrives late.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(events(), want);
    assert_upload(&d, &id, b"abcdefgh", "hooks");
}
