//! Resumable Uploads for HTTP (the IETF draft) over raw HTTP/1.1: interop version 8
//! (draft -11) for every operation, version 6 (draft -05) where it differs, reading the
//! `104 (Upload Resumption Supported)` interim answers off the socket. Each test starts
//! its own daemon. tus-js-client's `ietf-draft-05` mode is in `interop.rs`.

use crate::harness::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

const VERSION: &str = "Upload-Draft-Interop-Version";
const PARTIAL: (&str, &str) = ("Content-Type", "application/partial-upload");

/// A request speaking interop version `v`.
fn draft(method: &str, target: &str, v: &str) -> Req {
    Req::new(method, target).h(VERSION, v)
}

/// The upload's path from a `Location`.
fn path_of(location: &str) -> String {
    let id = location.rsplit('/').next().unwrap();
    assert!(is_uuid_v4(id), "{location}");
    format!("/files/{id}")
}

/// `Upload-Limit` as (key, integer) pairs; panics on anything but a Dictionary of
/// non-negative Integers.
fn limits(r: &Response) -> Vec<(String, u64)> {
    let v = r
        .header("Upload-Limit")
        .unwrap_or_else(|| panic!("no Upload-Limit in {r:?}"));
    v.split(',')
        .map(|m| {
            let (k, n) = m.trim().split_once('=').unwrap_or_else(|| panic!("{v}"));
            (k.to_string(), n.parse().unwrap_or_else(|_| panic!("{v}")))
        })
        .collect()
}

fn limit(r: &Response, key: &str) -> Option<u64> {
    limits(r)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, n)| n)
}

/// The problem details of an error answer (RFC 9457).
fn problem(r: &Response) -> Value {
    assert_eq!(
        r.header("Content-Type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

const MISMATCH: &str = "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
const COMPLETED: &str = "https://iana.org/assignments/http-problem-types#completed-upload";
const INCONSISTENT: &str =
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";

/// Sends a creation's head and reads its 104 before any body byte is sent: the answer
/// must come while the server has not read the body. Returns the connection and the 104.
fn start_creation(d: &Daemon, v: &str, headers: &[(&str, &str)]) -> (Conn, Response) {
    let mut c = d.conn();
    c.send_head(&draft("POST", "/files", v).headers(headers));
    let r = c
        .read_next_within(Duration::from_secs(5))
        .expect("a 104 before the body");
    assert_eq!(r.status, 104, "{r:?}");
    assert_eq!(r.reason, "Upload Resumption Supported");
    assert_eq!(
        r.header(VERSION),
        Some(v),
        "the 104 echoes the version: {r:?}"
    );
    assert!(r.has("Location"), "{r:?}");
    (c, r)
}

/// Reads messages until the final answer; returns it and the interim answers before it.
fn read_all(c: &mut Conn) -> (Response, Vec<Response>) {
    let mut interims = Vec::new();
    loop {
        let r = c.read_next().expect("an answer");
        if (100..200).contains(&r.status) {
            interims.push(r);
        } else {
            return (r, interims);
        }
    }
}

/// A HEAD (offset retrieval) in version `v`.
fn retrieve(d: &Daemon, path: &str, v: &str) -> Response {
    d.send(&draft("HEAD", path, v))
}

/// An append in version 8.
fn append(d: &Daemon, path: &str, offset: u64, complete: bool, body: &[u8]) -> Response {
    d.send(
        &draft("PATCH", path, "8")
            .h(PARTIAL.0, PARTIAL.1)
            .h("Upload-Offset", &offset.to_string())
            .h("Upload-Complete", if complete { "?1" } else { "?0" })
            .body(body),
    )
}

#[test]
fn creation_complete_in_one_request() {
    let tmp = TempDir::new("draft-whole");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(1, 3 << 20);
    let len = data.len().to_string();
    let (mut c, first) = start_creation(
        &d,
        "8",
        &[
            ("Upload-Complete", "?1"),
            ("Content-Length", &len),
            ("Content-Type", "image/png"),
            ("Content-Disposition", "inline; filename=\"a b.png\""),
        ],
    );
    // -11 §4.2.2: the 104 carries the limits; max-size is the length Content-Length
    // and Upload-Complete: ?1 say.
    assert_eq!(
        limit(&first, "max-size"),
        Some(data.len() as u64),
        "{first:?}"
    );
    assert!(!first.has("Tus-Resumable"), "{first:?}");
    c.send_raw(&data).unwrap();
    let (r, interims) = read_all(&mut c);
    assert_eq!(r.status, 201, "{r:?}");
    assert!(interims.is_empty(), "no progress for 3 MiB: {interims:?}");
    assert_eq!(r.header("Location"), first.header("Location"));
    assert_eq!(r.header("Upload-Complete"), Some("?1"));
    assert_eq!(r.upload_offset(), data.len() as u64);
    assert!(!r.has("Tus-Resumable"), "{r:?}");
    let path = path_of(first.header("Location").unwrap());
    let id = path.rsplit('/').next().unwrap();
    assert_bytes_eq(&d.read_data(id), &data, "stored");
    // Offset retrieval of the complete upload (-11 §4.3.3 B).
    let h = retrieve(&d, &path, "8");
    assert_eq!(h.status, 204, "{h:?}");
    assert_eq!(h.header("Upload-Complete"), Some("?1"));
    assert_eq!(h.upload_offset(), data.len() as u64);
    assert_eq!(h.upload_length(), Some(data.len() as u64));
    assert_eq!(h.header("Cache-Control"), Some("no-store"));
    assert!(h.has("Upload-Limit"));
    // The same upload for tus, with the representation's metadata.
    let t = d.head(id);
    assert_eq!(t.status, 200);
    assert_eq!(t.upload_offset(), data.len() as u64);
    assert_eq!(
        parse_metadata(t.header("Upload-Metadata").unwrap()),
        vec![
            ("filename".to_string(), "YSBiLnBuZw==".to_string()),
            ("filetype".to_string(), "aW1hZ2UvcG5n".to_string()),
        ]
    );
    let info = read_info(&d.info_path(id));
    assert_eq!(info["offset"], data.len() as u64);
    assert_eq!(info["length"], data.len() as u64);
    // The connection stays usable.
    let h = c.request(&draft("HEAD", &path, "8"));
    assert_eq!(h.status, 204);
}

/// Creation interrupted mid-body (the client's connection drops after the 104), offset
/// retrieval, then an append to completion: on both data paths.
#[test]
fn interrupted_creation_resumes_by_offset_retrieval_and_append() {
    for (what, extra) in [("splice", &[][..]), ("buffered", &["--disable-splice"][..])] {
        let tmp = TempDir::new("draft-resume");
        let d = Daemon::start(&tmp, extra);
        let data = random_bytes(2, 8 << 20);
        let cut = 3 << 20;
        let len = data.len().to_string();
        let (mut c, first) = start_creation(
            &d,
            "8",
            &[
                ("Upload-Complete", "?1"),
                ("Upload-Length", &len),
                ("Content-Length", &len),
            ],
        );
        let path = path_of(first.header("Location").unwrap());
        c.send_raw(&data[..cut]).unwrap();
        thread::sleep(Duration::from_millis(200));
        drop(c);
        // The server keeps what it received; offset retrieval tells how much.
        let deadline = Instant::now() + Duration::from_secs(5);
        let h = loop {
            let h = retrieve(&d, &path, "8");
            assert_eq!(h.status, 204, "{what}: {h:?}");
            if h.upload_offset() == cut as u64 || Instant::now() > deadline {
                break h;
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(h.upload_offset(), cut as u64, "{what}: {h:?}");
        assert_eq!(h.header("Upload-Complete"), Some("?0"), "{what}");
        assert_eq!(h.upload_length(), Some(data.len() as u64), "{what}");
        let r = append(&d, &path, cut as u64, true, &data[cut..]);
        assert_eq!(r.status, 201, "{what}: {r:?}");
        assert_eq!(r.header("Upload-Complete"), Some("?1"), "{what}");
        assert_eq!(r.upload_offset(), data.len() as u64, "{what}");
        let id = path.rsplit('/').next().unwrap();
        assert_bytes_eq(&d.read_data(id), &data, what);
    }
}

/// -11 §4.6: a new request for an upload ends the one still writing it (a creation whose
/// client is gone without the server noticing); the offset retrieved is then final.
#[test]
fn offset_retrieval_ends_a_stalled_creation() {
    let tmp = TempDir::new("draft-takeover");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(3, 1 << 20);
    let (mut c, first) = start_creation(
        &d,
        "8",
        &[("Upload-Complete", "?0"), ("Content-Length", "2000000")],
    );
    let path = path_of(first.header("Location").unwrap());
    c.send_raw(&data).unwrap();
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let h = retrieve(&d, &path, "8");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "HEAD waited {:?}",
        started.elapsed()
    );
    assert_eq!(h.status, 204, "{h:?}");
    assert_eq!(h.upload_offset(), data.len() as u64, "{h:?}");
    // The stalled creation was ended: answered 400 (taken over) with its state.
    let (r, _) = read_all(&mut c);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.upload_offset(), data.len() as u64);
    assert_eq!(r.header("Upload-Complete"), Some("?0"));
    c.assert_closed(Duration::from_secs(3), "the taken-over creation");
    // The offset retrieved is accepted by the next append.
    let more = random_bytes(4, 1000);
    let r = append(&d, &path, data.len() as u64, false, &more);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("Upload-Complete"), Some("?0"));
    assert_eq!(r.upload_offset(), (data.len() + more.len()) as u64);
}

/// Progress 104s during a long body: at most every 16 MiB or every second, each with
/// the version and an offset of bytes stored, never a Location, never decreasing, and
/// never past what the final answer says.
#[test]
fn progress_interims_report_the_stored_offset() {
    let tmp = TempDir::new("draft-progress");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(5, 40 << 20);
    let len = data.len().to_string();
    let (mut c, _first) = start_creation(
        &d,
        "8",
        &[("Upload-Complete", "?1"), ("Content-Length", &len)],
    );
    // 36 MiB at once (two 16 MiB reports are due), then a pause of more than a
    // second before each of two more MiB (a report each), then the rest.
    c.send_raw(&data[..36 << 20]).unwrap();
    thread::sleep(Duration::from_millis(1300));
    c.send_raw(&data[36 << 20..37 << 20]).unwrap();
    thread::sleep(Duration::from_millis(1300));
    c.send_raw(&data[37 << 20..38 << 20]).unwrap();
    thread::sleep(Duration::from_millis(1300));
    c.send_raw(&data[38 << 20..]).unwrap();
    let (r, interims) = read_all(&mut c);
    assert_eq!(r.status, 201, "{r:?}");
    let offsets: Vec<u64> = interims
        .iter()
        .map(|i| {
            assert_eq!(i.status, 104, "{i:?}");
            assert_eq!(i.header(VERSION), Some("8"), "{i:?}");
            assert!(
                !i.has("Location"),
                "-11 §4.4.2: no Location in progress: {i:?}"
            );
            i.upload_offset()
        })
        .collect();
    assert!(offsets.len() >= 4, "{offsets:?}");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert!(*offsets.last().unwrap() <= r.upload_offset(), "{offsets:?}");
    assert!(offsets.iter().any(|&o| o >= 16 << 20), "{offsets:?}");
    assert!(
        offsets.iter().any(|&o| o > 36 << 20),
        "a report after a pause: {offsets:?}"
    );
    assert_eq!(
        metric(
            &d,
            "tusring_interim_responses_total{protocol=\"ietf-draft-8\",kind=\"progress\"}"
        ),
        Some(offsets.len() as f64)
    );
}

#[test]
fn mismatched_offset_is_409_with_the_problem_and_the_offset() {
    let tmp = TempDir::new("draft-409");
    let d = Daemon::start(&tmp, &[]);
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .h("Upload-Length", "100")
            .body(&[7u8; 10]),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("Upload-Complete"), Some("?0"));
    assert_eq!(r.upload_offset(), 10);
    assert_eq!(r.interim, vec![104]);
    let path = path_of(r.header("Location").unwrap());
    for stale in [5u64, 11] {
        let r = append(&d, &path, stale, false, b"xyz");
        assert_eq!(r.status, 409, "{r:?}");
        assert_eq!(r.upload_offset(), 10, "-11 §4.4.2: the right offset");
        let p = problem(&r);
        assert_eq!(p["type"], MISMATCH);
        assert_eq!(p["expected-offset"], 10);
        assert_eq!(p["provided-offset"], stale);
        assert_eq!(p["status"], 409);
    }
    assert_eq!(
        retrieve(&d, &path, "8").upload_offset(),
        10,
        "nothing changed"
    );
    // Version 6 says the same with its own rules.
    let r = d.send(
        &draft("PATCH", &path, "6")
            .h(PARTIAL.0, PARTIAL.1)
            .h("Upload-Offset", "3")
            .body(b"x"),
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(problem(&r)["type"], MISMATCH);
}

#[test]
fn completed_uploads_and_inconsistent_lengths_are_refused() {
    let tmp = TempDir::new("draft-400");
    let d = Daemon::start(&tmp, &[]);
    // Two indicators of the length that disagree (-11 §4.1.3): nothing is created.
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?1")
            .h("Upload-Length", "50")
            .body(&[1u8; 40]),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.interim.is_empty(), "no 104 for a refused creation: {r:?}");
    assert_eq!(problem(&r)["type"], INCONSISTENT);
    assert!(list_files(d.data_dir()).is_empty());
    // An upload of 20 bytes: a body past the length is refused before it is read.
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .h("Upload-Length", "20")
            .body(&[1u8; 5]),
    );
    let path = path_of(r.header("Location").unwrap());
    let r = append(&d, &path, 5, false, &[2u8; 16]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(problem(&r)["type"], INCONSISTENT);
    assert_eq!(r.upload_offset(), 5);
    // ?1 with a length that is not the upload's.
    let r = append(&d, &path, 5, true, &[2u8; 10]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(problem(&r)["type"], INCONSISTENT);
    // The rest with ?1: complete.
    let r = append(&d, &path, 5, true, &[2u8; 15]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("Upload-Complete"), Some("?1"));
    assert!(
        r.has("Location"),
        "the completing append answers as a creation: {r:?}"
    );
    // A complete upload: more bytes are an inconsistent length (-11 §4.4.2), an empty
    // ?0 append is refused as completed, an empty ?1 append answers as the completion.
    let r = append(&d, &path, 20, false, b"more");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(problem(&r)["type"], INCONSISTENT);
    assert_eq!(r.header("Upload-Complete"), Some("?1"));
    let r = append(&d, &path, 20, false, b"");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(problem(&r)["type"], COMPLETED);
    let r = append(&d, &path, 20, true, b"");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("Upload-Complete"), Some("?1"));
    // Version 6 (-05 §6): completed-upload for a body too.
    let r = d.send(
        &draft("PATCH", &path, "6")
            .h(PARTIAL.0, PARTIAL.1)
            .h("Upload-Offset", "20")
            .h("Upload-Complete", "?1")
            .body(b"x"),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(problem(&r)["type"], COMPLETED);
    let id = path.rsplit('/').next().unwrap();
    let mut want = vec![1u8; 5];
    want.extend_from_slice(&[2u8; 15]);
    assert_bytes_eq(&d.read_data(id), &want, "untouched");
    // An append must say application/partial-upload, an offset and (v8) completeness.
    let r = d.send(
        &draft("PATCH", &path, "8")
            .h("Content-Type", "application/offset+octet-stream")
            .h("Upload-Offset", "20")
            .h("Upload-Complete", "?0")
            .body(b""),
    );
    assert_eq!(r.status, 415, "{r:?}");
    let r = d.send(
        &draft("PATCH", &path, "8")
            .h(PARTIAL.0, PARTIAL.1)
            .h("Upload-Offset", "20")
            .body(b""),
    );
    assert_eq!(r.status, 400, "{r:?}");
}

/// A chunked ?1 creation without a length: the length is what arrived.
#[test]
fn chunked_creation_learns_its_length_at_the_end() {
    let tmp = TempDir::new("draft-chunked");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(6, 300_000);
    let mut c = d.conn();
    c.send_head(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?1")
            .h("Transfer-Encoding", "chunked"),
    );
    c.send_raw(&chunked(&data, 7000)).unwrap();
    let (r, interims) = read_all(&mut c);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(interims.len(), 1, "{interims:?}");
    assert_eq!(r.header("Upload-Complete"), Some("?1"));
    assert_eq!(r.upload_length(), Some(data.len() as u64));
    let id = upload_id(&r);
    assert_bytes_eq(&d.read_data(id.as_str()), &data, "chunked");
    assert_eq!(d.head(&id).upload_length(), Some(data.len() as u64));
}

#[test]
fn limits_options_and_expiry() {
    let tmp = TempDir::new("draft-limits");
    let d = Daemon::start(
        &tmp,
        &[
            "--max-file-size",
            "1000",
            "--max-body-size",
            "500",
            "--tus-extensions",
            "getting,creation,termination,creation-with-upload,creation-defer-length,expiration",
            "--expiration-time",
            "2",
        ],
    );
    // OPTIONS (-11 §4.1.4): Accept-Patch and the limits any upload gets.
    let o = d.send(&draft("OPTIONS", "/files", "8"));
    assert_eq!(o.status, 200, "{o:?}");
    assert_eq!(o.header("Accept-Patch"), Some("application/partial-upload"));
    assert_eq!(limit(&o, "max-size"), Some(1000));
    assert_eq!(limit(&o, "min-size"), Some(1));
    assert_eq!(limit(&o, "max-append-size"), Some(500));
    assert_eq!(limit(&o, "max-age"), Some(2));
    // -05 called the lifetime `expires` (§8.2).
    let o6 = d.send(&draft("OPTIONS", "/files", "6"));
    assert_eq!(limit(&o6, "expires"), Some(2), "{o6:?}");
    assert_eq!(limit(&o6, "max-age"), None);
    // Past the limits: 413, before anything exists.
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .h("Upload-Length", "1001")
            .body(b""),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(problem(&r)["type"], "about:blank");
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .body(&[0u8; 501]),
    );
    assert_eq!(r.status, 413, "{r:?}");
    // A deferred upload: appends up to the limits.
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .body(b"abc"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(limit(&r, "max-size"), Some(1000));
    assert!(limit(&r, "max-age").is_some_and(|a| a <= 2));
    let path = path_of(r.header("Location").unwrap());
    let r = append(&d, &path, 3, false, &[0u8; 501]);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.upload_offset(), 3);
    // Expired (-11 §4.1.4 max-age): 410 until the sweep removes it.
    thread::sleep(Duration::from_millis(3100));
    let h = retrieve(&d, &path, "8");
    assert!(matches!(h.status, 410 | 404), "{h:?}");
}

#[test]
fn cancellation_removes_the_upload() {
    let tmp = TempDir::new("draft-cancel");
    let d = Daemon::start(&tmp, &[]);
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .body(b"partial"),
    );
    let path = path_of(r.header("Location").unwrap());
    let id = path.rsplit('/').next().unwrap().to_string();
    assert!(d.info_path(&id).exists());
    let x = d.send(&draft("DELETE", &path, "8"));
    assert_eq!(x.status, 204, "{x:?}");
    assert!(!x.has("Tus-Resumable"));
    assert!(!d.info_path(&id).exists());
    assert!(find_file(d.data_dir(), &id).is_none());
    let h = retrieve(&d, &path, "8");
    assert_eq!(h.status, 404, "{h:?}");
    let x = d.send(&draft("DELETE", &path, "8"));
    assert_eq!(x.status, 404, "{x:?}");
    assert_eq!(problem(&x)["title"], "Not Found");
    // -05 §7: a cancellation must not carry Upload-Offset or Upload-Complete.
    let r = d.send(
        &draft("POST", "/files", "6")
            .h("Upload-Complete", "?0")
            .body(b""),
    );
    let path = path_of(r.header("Location").unwrap());
    let x = d.send(&draft("DELETE", &path, "6").h("Upload-Offset", "0"));
    assert_eq!(x.status, 400, "{x:?}");
    let x = d.send(&draft("DELETE", &path, "6"));
    assert_eq!(x.status, 204, "{x:?}");
}

/// One upload, both protocols: tus sees a draft upload as an upload of its length (or a
/// deferred one), and a tus PATCH continues it; the draft sees a tus upload likewise.
#[test]
fn tus_and_the_draft_share_the_upload() {
    let tmp = TempDir::new("draft-tus");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(7, 100);
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .h("Upload-Length", "100")
            .body(&data[..40]),
    );
    let path = path_of(r.header("Location").unwrap());
    let id = path.rsplit('/').next().unwrap().to_string();
    let t = d.head(&id);
    assert_eq!(t.status, 200, "{t:?}");
    assert_eq!(t.upload_offset(), 40);
    assert_eq!(t.upload_length(), Some(100));
    let p = d.patch(&id, 40, &data[40..70]);
    assert_eq!(p.status, 204, "{p:?}");
    let h = retrieve(&d, &path, "8");
    assert_eq!(h.upload_offset(), 70);
    assert_eq!(h.header("Upload-Complete"), Some("?0"));
    // A tus PATCH completes it; the draft sees it complete.
    d.patch(&id, 70, &data[70..])
        .assert_status(204, "tus completes");
    let h = retrieve(&d, &path, "8");
    assert_eq!(h.header("Upload-Complete"), Some("?1"));
    assert_bytes_eq(&d.read_data(&id), &data, "both protocols");
    // A tus upload, appended to and completed through the draft.
    let tid = d.create(10);
    let tpath = format!("/files/{tid}");
    let h = retrieve(&d, &tpath, "8");
    assert_eq!((h.status, h.upload_offset()), (204, 0), "{h:?}");
    assert_eq!(h.header("Upload-Complete"), Some("?0"));
    let r = append(&d, &tpath, 0, true, b"0123456789");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(d.offset(&tid), 10);
    // A tus request naming an interop version tusring does not speak is tus's.
    let t = d.send(&Req::new("HEAD", &path).tus().h(VERSION, "7"));
    assert_eq!(t.status, 200, "{t:?}");
    t.assert_tus();
}

#[test]
fn detection_and_interop_versions() {
    let tmp = TempDir::new("draft-detect");
    let d = Daemon::start(&tmp, &[]);
    // tus: never a 104.
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", "5")
            .h(OCTET.0, OCTET.1)
            .h("Upload-Complete", "?1")
            .body(b"hello"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.interim.is_empty(), "{r:?}");
    r.assert_tus();
    // Versions tusring does not speak: 400 naming those it speaks, no 104, nothing made.
    let files = list_files(d.data_dir()).len();
    for v in ["5", "7", "9", "x", "6, 8"] {
        let r = d.send(
            &draft("POST", "/files", v)
                .h("Upload-Complete", "?1")
                .body(b"hello"),
        );
        assert_eq!(r.status, 400, "version {v}: {r:?}");
        assert!(r.interim.is_empty(), "version {v}: {r:?}");
        assert!(String::from_utf8_lossy(&r.body).contains("6, 8"), "{r:?}");
    }
    assert_eq!(list_files(d.data_dir()).len(), files);
    // Version 6: the 104 echoes 6 and carries no Upload-Limit (-05 §4 does not ask it).
    let (mut c, first) = start_creation(
        &d,
        "6",
        &[("Upload-Complete", "?1"), ("Content-Length", "5")],
    );
    assert!(!first.has("Upload-Limit"), "{first:?}");
    c.send_raw(b"hello").unwrap();
    let (r, _) = read_all(&mut c);
    assert_eq!(r.status, 201, "{r:?}");
    let path = path_of(r.header("Location").unwrap());
    // -05 §5: no upload fields on an offset retrieval.
    for (k, v) in [
        ("Upload-Offset", "0"),
        ("Upload-Complete", "?0"),
        ("Upload-Length", "5"),
    ] {
        let h = d.send(&draft("HEAD", &path, "6").h(k, v));
        assert_eq!(h.status, 400, "{k}: {h:?}");
    }
    let h = retrieve(&d, &path, "6");
    assert_eq!(h.status, 204, "{h:?}");
    // -11 lets them be (and ignores them).
    let h = d.send(&draft("HEAD", &path, "8").h("Upload-Offset", "0"));
    assert_eq!(h.status, 204, "{h:?}");
    // A creation needs Upload-Complete.
    let r = d.send(&draft("POST", "/files", "8").body(b"x"));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.interim.is_empty());
    // No 104 for an empty creation: the final answer has the Location.
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .body(b""),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.interim.is_empty(), "{r:?}");
    assert_eq!(r.upload_offset(), 0);
    // A download is tus's (the draft defines none).
    let g = d.send(&draft("GET", &path, "8"));
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(g.body, b"hello");
    // 405 names what the route takes.
    let r = d.send(&draft("PUT", &path, "8").body(b"x"));
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("Allow"), Some("OPTIONS, GET, HEAD, PATCH, DELETE"));
}

#[test]
fn pre_create_refusal_reaches_the_client_and_hooks_see_the_upload() {
    let tmp = TempDir::new("draft-hooks");
    let log = tmp.join("events.log");
    let hook = tmp.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\ncase \"$2\" in *refuse-me*) [ \"$1\" = pre-create ] && exit 1;; esac\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create,post-create,post-receive,post-finish,post-terminate",
        ],
    );
    // Refused: the hook's verdict with rustus's body, no 104, nothing created.
    let mut c = d.conn();
    c.send_head(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?1")
            .h("Content-Length", "5")
            .h("Content-Disposition", "inline; filename=refuse-me.txt"),
    );
    let r = c.read_next_within(Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "Hook invocation failed. Reason: Returned wrong status code"
    );
    assert!(list_files(d.data_dir()).is_empty());
    // Accepted: post-create for the part, post-receive and post-finish for the appends.
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .h("Upload-Length", "6")
            .body(b"ab"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let path = path_of(r.header("Location").unwrap());
    append(&d, &path, 2, false, b"cd").assert_status(204, "append");
    append(&d, &path, 4, true, b"ef").assert_status(201, "complete");
    let want = [
        "pre-create",
        "pre-create",
        "post-create",
        "post-receive",
        "post-finish",
    ];
    let ok = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            >= want.len()
    });
    assert!(ok);
    let got: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn digests_are_verified() {
    let tmp = TempDir::new("draft-digest");
    let d = Daemon::start(&tmp, &[]);
    let data = b"hello world";
    // sha-256 of "hello world".
    let good = "sha-256=:uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=:";
    let bad = "sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:";
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?1")
            .h("Repr-Digest", good)
            .body(data),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?0")
            .h("Upload-Length", "22")
            .body(b""),
    );
    let path = path_of(r.header("Location").unwrap());
    let mismatch = d.send(
        &draft("PATCH", &path, "8")
            .h(PARTIAL.0, PARTIAL.1)
            .h("Upload-Offset", "0")
            .h("Upload-Complete", "?0")
            .h("Content-Digest", bad)
            .body(data),
    );
    assert_eq!(mismatch.status, 400, "{mismatch:?}");
    assert_eq!(mismatch.upload_offset(), 0, "nothing of it stored");
    assert_eq!(problem(&mismatch)["type"], "about:blank");
    let ok = d.send(
        &draft("PATCH", &path, "8")
            .h(PARTIAL.0, PARTIAL.1)
            .h("Upload-Offset", "0")
            .h("Upload-Complete", "?0")
            .h("Content-Digest", good)
            .body(data),
    );
    assert_eq!(ok.status, 204, "{ok:?}");
    assert_eq!(ok.upload_offset(), 11);
    // A digest field that is not a dictionary: 400 before anything is read.
    let r = d.send(
        &draft("PATCH", &path, "8")
            .h(PARTIAL.0, PARTIAL.1)
            .h("Upload-Offset", "11")
            .h("Upload-Complete", "?0")
            .h("Content-Digest", "sha-256 nope")
            .body(data),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(retrieve(&d, &path, "8").upload_offset(), 11);
}

#[test]
fn metrics_are_labelled_by_protocol() {
    let tmp = TempDir::new("draft-metrics");
    let d = Daemon::start(&tmp, &[]);
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Upload-Complete", "?1")
            .body(b"abc"),
    );
    assert_eq!(r.status, 201);
    let r = d.send(
        &draft("POST", "/files", "6")
            .h("Upload-Complete", "?1")
            .body(b"abc"),
    );
    assert_eq!(r.status, 201);
    d.create(3);
    let m = |n: &str| metric(&d, n).unwrap_or(0.0);
    assert_eq!(m("tusring_protocol_requests_total{protocol=\"ietf-draft-8\",method=\"POST\",status_class=\"2xx\"}"), 1.0);
    assert_eq!(m("tusring_protocol_requests_total{protocol=\"ietf-draft-6\",method=\"POST\",status_class=\"2xx\"}"), 1.0);
    assert_eq!(m("tusring_protocol_requests_total{protocol=\"tus\",method=\"POST\",status_class=\"2xx\"}"), 1.0);
    assert_eq!(
        m("tusring_protocol_bytes_received_total{protocol=\"ietf-draft-8\"}"),
        3.0
    );
    assert_eq!(
        m("tusring_interim_responses_total{protocol=\"ietf-draft-6\",kind=\"resumption\"}"),
        1.0
    );
}

/// A browser's draft requests pass CORS: the preflight allows the draft's fields and
/// the answers expose them.
#[test]
fn cors_allows_and_exposes_the_draft_fields() {
    let tmp = TempDir::new("draft-cors");
    let d = Daemon::start(&tmp, &[]);
    let p = d.send(
        &Req::new("OPTIONS", "/files")
            .h("Origin", "https://app.example")
            .h("Access-Control-Request-Method", "POST")
            .h(
                "Access-Control-Request-Headers",
                "upload-draft-interop-version,upload-complete,upload-length,content-disposition,content-digest,repr-digest",
            ),
    );
    assert_eq!(p.status, 200, "{p:?}");
    let r = d.send(
        &draft("POST", "/files", "8")
            .h("Origin", "https://app.example")
            .h("Upload-Complete", "?0")
            .body(b"x"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    let expose = r.header("Access-Control-Expose-Headers").unwrap();
    for h in [
        "Location",
        "Upload-Offset",
        "Upload-Complete",
        "Upload-Limit",
        "Upload-Length",
    ] {
        assert!(expose.contains(h), "{h} not in {expose}");
    }
}

#[test]
fn a_pre_finish_answer_is_the_completing_appends_answer() {
    let tmp = TempDir::new("draft-pre-finish");
    let hook = tmp.join("hook.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\n[ \"$1\" = pre-finish ] || exit 0\necho '{\"HTTPResponse\": {\"Header\": {\"X-Finished-By\": \"file-hook\"}}}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-answers",
            "--hooks",
            "pre-finish",
            "--hooks-file",
            hook.to_str().unwrap(),
        ],
    );
    let r = d.send(
        &draft("POST", "/files/", "8")
            .h("Upload-Complete", "?0")
            .body(b"ab"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(!r.has("X-Finished-By"), "{r:?}");
    let path = path_of(r.header("Location").unwrap());
    let r = append(&d, &path, 2, true, b"cd");
    assert!((200..300).contains(&r.status), "{r:?}");
    assert_eq!(r.header("X-Finished-By"), Some("file-hook"), "{r:?}");
    assert_eq!(r.header("Upload-Complete"), Some("?1"), "{r:?}");
}
