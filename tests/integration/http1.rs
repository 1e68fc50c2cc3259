//! HTTP/1.1 behaviour: keep-alive, close, HTTP/1.0, pipelining, 100-continue, limits on
//! heads, malformed framing, and the head/idle/body timeouts.

use crate::harness::*;
use std::time::Duration;

const CLOSE_WAIT: Duration = Duration::from_secs(3);

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let tmp = TempDir::new("keepalive");
    let d = Daemon::start(&tmp, &[]);
    let mut c = d.conn();
    let r = c.request(&Req::new("OPTIONS", "/files"));
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.request(&Req::new("POST", "/files").tus().h("Upload-Length", "6"));
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    let r = c.request(&Req::new("HEAD", &format!("/files/{id}")).tus());
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upload_offset(), 0);
    let r = c.request(&patch_req(&id, 0, b"abc"));
    assert_eq!(r.status, 204, "{r:?}");
    // A refused PATCH whose body was not read may end the connection, but only if the
    // response says so.
    let r = c.request(&patch_req(&id, 0, b"abc"));
    assert_eq!(r.status, 409, "{r:?}");
    if r.header("Connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        c.assert_closed(CLOSE_WAIT, "after a 409 with Connection: close");
        c = d.conn();
    }
    let r = c.request(&patch_req(&id, 3, b"def"));
    assert_eq!(r.status, 204, "{r:?}");
    let r = c.request(&Req::new("HEAD", &format!("/files/{id}")).tus());
    assert_eq!(r.upload_offset(), 6);
    let r = c.request(&Req::new("GET", "/health"));
    assert_eq!(r.status, 200, "{r:?}");
    match c.wait_closed(Duration::from_millis(300)) {
        CloseOutcome::StillOpen { extra } => assert!(extra.is_empty(), "stray bytes {extra:?}"),
        CloseOutcome::Closed { .. } => panic!("keep-alive connection was closed"),
    }
}

#[test]
fn connection_close_is_honoured() {
    let tmp = TempDir::new("connclose");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(3);
    let mut c = d.conn();
    let r = c.request(
        &Req::new("HEAD", &format!("/files/{id}"))
            .tus()
            .h("Connection", "close"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    c.assert_closed(CLOSE_WAIT, "after Connection: close");
    // Also on a PATCH with a body.
    let mut c = d.conn();
    let r = c.request(&patch_req(&id, 0, b"abc").h("Connection", "close"));
    assert_eq!(r.status, 204, "{r:?}");
    c.assert_closed(CLOSE_WAIT, "after PATCH with Connection: close");
    assert_eq!(d.offset(&id), 3);
}

#[test]
fn http10_closes_unless_keep_alive() {
    let tmp = TempDir::new("http10");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(3);
    let mut c = d.conn();
    let r = c.request(
        &Req::new("HEAD", &format!("/files/{id}"))
            .tus()
            .version("HTTP/1.0"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upload_offset(), 0);
    c.assert_closed(CLOSE_WAIT, "HTTP/1.0 without keep-alive");

    let mut c = d.conn();
    for _ in 0..3 {
        let r = c.request(
            &Req::new("HEAD", &format!("/files/{id}"))
                .tus()
                .version("HTTP/1.0")
                .h("Connection", "keep-alive"),
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let tmp = TempDir::new("pipeline");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    let head = Req::new("HEAD", &format!("/files/{id}")).tus();
    let reqs = vec![
        head.clone(),
        patch_req(&id, 0, b"01234"),
        head.clone(),
        Req::new("OPTIONS", "/files"),
        patch_req(&id, 5, b"56789"),
        head.clone(),
        patch_req(&id, 0, b"x"),
    ];
    let mut c = d.conn();
    c.send_pipelined(&reqs);
    let expect: [(u16, Option<u64>); 7] = [
        (200, Some(0)),
        (204, Some(5)),
        (200, Some(5)),
        (200, None),
        (204, Some(10)),
        (200, Some(10)),
        (409, None),
    ];
    for (i, (req, (status, off))) in reqs.iter().zip(expect).enumerate() {
        let r = c.read_response().expect("pipelined response");
        assert_eq!(r.status, status, "pipelined #{i} {}: {r:?}", req.method);
        if let Some(o) = off {
            assert_eq!(r.upload_offset(), o, "pipelined #{i}: {r:?}");
        }
    }
    assert_eq!(d.read_data(&id), b"0123456789");
}

#[test]
fn expect_100_continue_on_accepted_patch() {
    let tmp = TempDir::new("expect100");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(5);
    let mut c = d.conn();
    c.send_head(&patch_req(&id, 0, b"hello").h("Expect", "100-continue"));
    let r = c.read_next().expect("interim response");
    assert_eq!(r.status, 100, "want 100 Continue before the body: {r:?}");
    assert_eq!(r.version, "HTTP/1.1", "{r:?}");
    c.send_raw(b"hello").unwrap();
    let r = c.read_response().expect("final response");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.upload_offset(), 5);
    // The connection is still usable.
    let r = c.request(&Req::new("HEAD", &format!("/files/{id}")).tus());
    assert_eq!(r.upload_offset(), 5, "{r:?}");
    assert_eq!(d.read_data(&id), b"hello");
}

#[test]
fn expect_100_continue_is_not_sent_for_rejected_patch() {
    let tmp = TempDir::new("expect-rej");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(5);
    d.patch(&id, 0, b"ab").assert_status(204, "setup");
    let cases = [
        (patch_req(&id, 0, b"cde"), 409),
        (patch_req(&id, 2, b"cdefgh"), 413),
        (patch_req(&fresh_uuid(3), 0, b"cde"), 404),
        (
            Req::new("PATCH", &format!("/files/{id}"))
                .tus()
                .h("Upload-Offset", "2")
                .body(b"cde"),
            415,
        ),
    ];
    for (req, want) in cases {
        let mut c = d.conn();
        c.send_head(&req.h("Expect", "100-continue"));
        let r = c.read_next().expect("response without the body");
        assert_eq!(
            r.status, want,
            "a refused PATCH gets its final status, not 100: {r:?}"
        );
        assert!(r.interim.is_empty());
    }
    assert_eq!(d.offset(&id), 2);
    assert_eq!(d.read_data(&id), b"ab");
}

fn filler_headers(n: usize, value_len: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("X-Filler-{i:03}"), "a".repeat(value_len)))
        .collect()
}

fn with_headers(mut req: Req, hs: &[(String, String)]) -> Req {
    for (k, v) in hs {
        req = req.h(k, v);
    }
    req
}

#[test]
fn large_head_under_limits_is_accepted() {
    let tmp = TempDir::new("bighead");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(3);
    // ~60 KiB of headers in 50 fields.
    let req = with_headers(
        Req::new("HEAD", &format!("/files/{id}")).tus(),
        &filler_headers(50, 1200),
    );
    let len = req.head_bytes("127.0.0.1:65535").len();
    assert!(len > 60_000 && len < 64 * 1024, "head is {len} bytes");
    let r = d.send(&req);
    assert_eq!(r.status, 200, "{len}-byte head: {r:?}");
    // Exactly 100 header fields (Host + Tus-Resumable + 98).
    let req = with_headers(
        Req::new("HEAD", &format!("/files/{id}")).tus(),
        &filler_headers(98, 10),
    );
    let r = d.send(&req);
    assert_eq!(r.status, 200, "100 header fields: {r:?}");
}

#[test]
fn head_over_64k_is_431() {
    let tmp = TempDir::new("431");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(3);
    let req = with_headers(
        Req::new("HEAD", &format!("/files/{id}")).tus(),
        &filler_headers(56, 1200),
    );
    assert!(req.head_bytes("127.0.0.1:65535").len() > 64 * 1024);
    let mut c = d.conn();
    let _ = c.send_raw(&req.to_bytes(&c.host.clone()));
    c.expect_response_to("HEAD");
    let r = c.read_response().expect("431 response");
    assert_eq!(r.status, 431, "{r:?}");
}

#[test]
fn more_than_100_headers_is_431() {
    let tmp = TempDir::new("431n");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(3);
    // Host + Tus-Resumable + 99 = 101 fields.
    let req = with_headers(
        Req::new("HEAD", &format!("/files/{id}")).tus(),
        &filler_headers(99, 10),
    );
    let r = d.send(&req);
    assert_eq!(r.status, 431, "101 header fields: {r:?}");
}

#[test]
fn uri_over_8k_is_414() {
    let tmp = TempDir::new("414");
    let d = Daemon::start(&tmp, &[]);
    let path = format!("/files/{}", "a".repeat(9000));
    let r = d.send(&Req::new("HEAD", &path).tus());
    assert_eq!(r.status, 414, "{r:?}");
}

#[test]
fn transfer_encoding_with_content_length_is_400_and_closes() {
    let tmp = TempDir::new("te-cl");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    let mut c = d.conn();
    let r = c.request(
        &patch_req(&id, 0, &chunked(b"hello", 5))
            .h("Transfer-Encoding", "chunked")
            .h("Content-Length", "5")
            .raw_framing(),
    );
    assert_eq!(r.status, 400, "{r:?}");
    c.assert_closed(CLOSE_WAIT, "after TE + CL");
    assert_eq!(d.offset(&id), 0);
}

#[test]
fn conflicting_content_lengths_are_400_and_close() {
    let tmp = TempDir::new("cl-cl");
    let d = Daemon::start(&tmp, &[]);
    let id = d.create(10);
    let mut c = d.conn();
    let r = c.request(
        &patch_req(&id, 0, b"hello!")
            .h("Content-Length", "5")
            .h("Content-Length", "6")
            .raw_framing(),
    );
    assert_eq!(r.status, 400, "{r:?}");
    c.assert_closed(CLOSE_WAIT, "after two Content-Length values");
    assert_eq!(d.offset(&id), 0);
}

#[test]
fn garbage_request_line_is_400_and_closes() {
    let tmp = TempDir::new("garbage");
    let d = Daemon::start(&tmp, &[]);
    for garbage in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        &b"GET /files HTTP/1.1 extra\r\nHost: x\r\n\r\n"[..],
    ] {
        let mut c = d.conn();
        c.send_raw(garbage).unwrap();
        c.expect_response_to("GET");
        let r = c.read_response().expect("400 response");
        assert_eq!(
            r.status,
            400,
            "{:?}: {r:?}",
            String::from_utf8_lossy(garbage)
        );
        c.assert_closed(CLOSE_WAIT, "after a garbage request line");
    }
    // The daemon still serves.
    assert_eq!(d.options("/files").status, 200);
}

// ------------------------------------------------------------------------------ timeouts

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let tmp = TempDir::new("idle");
    let d = Daemon::start(&tmp, &["--idle-timeout", "0.5"]);
    let mut c = d.conn();
    let r = c.request(&Req::new("OPTIONS", "/files"));
    assert_eq!(r.status, 200, "{r:?}");
    let after = c.assert_closed(Duration::from_secs(5), "idle keep-alive connection");
    assert!(
        after >= Duration::from_millis(350),
        "closed after {after:?}, before the 0.5 s idle timeout"
    );
}

#[test]
fn partial_head_is_closed_after_head_timeout() {
    let tmp = TempDir::new("headto");
    let d = Daemon::start(&tmp, &["--head-timeout", "0.5"]);
    let mut c = d.conn();
    c.send_raw(b"HEAD /files/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Res")
        .unwrap();
    match c.wait_closed(Duration::from_secs(5)) {
        CloseOutcome::Closed { after, extra } => {
            assert!(
                after >= Duration::from_millis(350),
                "closed after {after:?}, before the 0.5 s head timeout"
            );
            // Either a bare close or a 408 first.
            if !extra.is_empty() {
                let text = String::from_utf8_lossy(&extra);
                assert!(
                    text.starts_with("HTTP/1.1 408"),
                    "unexpected reply {text:?}"
                );
            }
        }
        CloseOutcome::StillOpen { .. } => panic!("partial head not timed out within 5 s"),
    }
}

#[test]
fn stalled_body_is_cut_after_body_timeout_and_bytes_are_kept() {
    let tmp = TempDir::new("bodyto");
    let d = Daemon::start(&tmp, &["--body-timeout", "0.5"]);
    let data = random_bytes(21, 100);
    let id = d.create(100);
    let mut c = d.conn();
    c.send_head(&patch_req(&id, 0, &data));
    c.send_raw(&data[..40]).unwrap();
    match c.wait_closed(Duration::from_secs(5)) {
        CloseOutcome::Closed { after, .. } => assert!(
            after >= Duration::from_millis(350),
            "cut after {after:?}, before the 0.5 s body timeout"
        ),
        CloseOutcome::StillOpen { .. } => panic!("stalled PATCH not cut within 5 s"),
    }
    let off = d.wait_offset(&id, 40, Duration::from_secs(5));
    assert_eq!(off, 40, "bytes received before the stall are kept");
    let p = d.patch_resume(&id, 40, &data[40..]);
    assert_eq!(p.status, 204, "{p:?}");
    assert_eq!(p.upload_offset(), 100);
    assert_eq!(d.read_data(&id), data);
}
