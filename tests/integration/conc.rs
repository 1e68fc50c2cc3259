//! Concurrency on one upload: racing PATCHes, and uploads cut short by the client.

use crate::harness::*;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

// A second PATCH or DELETE during a PATCH takes the upload over (the older request
// stops, keeping its bytes), and a holder that does not let go gives 423: see
// `takeover.rs`.

#[test]
fn concurrent_full_patches_never_corrupt() {
    let tmp = TempDir::new("race");
    let d = Daemon::start(&tmp, &[]);
    const LEN: usize = 256 * 1024;
    for round in 0..4u64 {
        let id = d.create(LEN as u64);
        let bodies: Vec<Vec<u8>> = (0..2).map(|i| random_bytes(round * 10 + i, LEN)).collect();
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let barrier = barrier.clone();
                let port = d.port;
                let id = id.clone();
                thread::spawn(move || {
                    let mut c = Conn::connect(port);
                    let bytes = patch_req(&id, 0, &body).to_bytes(&c.host);
                    c.expect_response_to("PATCH");
                    barrier.wait();
                    // The loser may be answered (and closed) before its body is sent.
                    let _ = c.send_raw(&bytes);
                    c.read_response().expect("response to a racing PATCH")
                })
            })
            .collect();
        let results: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
        // Newest request wins: the later one takes the upload over from the earlier
        // (which stops, 400, keeping the bytes it stored), then proceeds at the true
        // offset: 204 if nothing was stored yet, else 409. Or the earlier one finished
        // first and the later gets 409. Never both 204, and never interleaved.
        for st in &statuses {
            assert!(
                [204, 400, 409, 423].contains(st),
                "round {round}: statuses {statuses:?}"
            );
        }
        let winners: Vec<usize> = (0..2).filter(|&i| statuses[i] == 204).collect();
        assert!(winners.len() <= 1, "round {round}: statuses {statuses:?}");
        let stored = d.read_data(&id);
        let off = d.offset(&id);
        assert_eq!(
            off,
            stored.len() as u64,
            "round {round}: HEAD = bytes stored"
        );
        // The stored bytes are a prefix of one body.
        let from: Vec<usize> = (0..2)
            .filter(|&i| bodies[i][..stored.len()] == stored[..])
            .collect();
        assert!(
            !from.is_empty(),
            "round {round}: stored bytes interleave the bodies"
        );
        if let Some(&w) = winners.first() {
            assert_eq!(results[w].upload_offset(), LEN as u64);
            assert_bytes_eq(&stored, &bodies[w], "racing PATCHes");
        } else {
            // A stopped request kept a prefix: the client resumes from HEAD.
            let b = &bodies[from[0]];
            let r = d.patch(&id, off, &b[off as usize..]);
            assert_eq!(r.status, 204, "round {round}: resume {r:?}");
            assert_bytes_eq(&d.read_data(&id), b, "resumed after a takeover");
        }
    }
}

fn cut_short(close: fn(&mut Conn)) {
    let tmp = TempDir::new("cut");
    let d = Daemon::start(&tmp, &[]);
    const LEN: usize = 1 << 20;
    const SENT: usize = 300 * 1024 + 7;
    let data = random_bytes(41, LEN);
    let id = d.create(LEN as u64);
    let mut c = d.conn();
    c.send_head(&patch_req(&id, 0, &data));
    c.send_raw(&data[..SENT]).unwrap();
    close(&mut c);
    drop(c);
    let off = d.wait_offset(&id, SENT as u64, Duration::from_secs(5));
    assert_eq!(off, SENT as u64, "HEAD after the client stopped mid-body");
    assert_bytes_eq(&d.read_data(&id), &data[..SENT], "stored prefix");
    let p = d.patch_resume(&id, SENT as u64, &data[SENT..]);
    assert_eq!(p.status, 204, "resume: {p:?}");
    assert_eq!(p.upload_offset(), LEN as u64);
    assert_bytes_eq(&d.read_data(&id), &data, "resumed upload");
}

#[test]
fn client_half_close_mid_body_keeps_received_bytes() {
    cut_short(|c| c.shutdown_write());
}

#[test]
fn client_drop_mid_body_keeps_received_bytes() {
    cut_short(|_| {});
}

#[test]
fn chunked_patch_cut_at_a_chunk_boundary_keeps_the_chunks() {
    let tmp = TempDir::new("cut-chunked");
    let d = Daemon::start(&tmp, &[]);
    const LEN: usize = 512 * 1024;
    const SENT: usize = 200 * 1000;
    let data = random_bytes(43, LEN);
    let id = d.create(LEN as u64);
    let mut c = d.conn();
    c.send_head(
        &patch_req(&id, 0, b"")
            .h("Transfer-Encoding", "chunked")
            .raw_framing(),
    );
    let wire = chunked(&data[..SENT], 1000);
    // Everything but the terminating `0\r\n\r\n`: the body is not finished.
    c.send_raw(&wire[..wire.len() - 5]).unwrap();
    c.shutdown_write();
    drop(c);
    let off = d.wait_offset(&id, SENT as u64, Duration::from_secs(5));
    assert_eq!(
        off, SENT as u64,
        "HEAD after a chunked body stopped between chunks"
    );
    assert_bytes_eq(&d.read_data(&id), &data[..SENT], "stored prefix");
    let p = d.patch_resume(&id, SENT as u64, &data[SENT..]);
    assert_eq!(p.status, 204, "resume: {p:?}");
    assert_bytes_eq(&d.read_data(&id), &data, "resumed upload");
}

#[test]
fn parallel_uploads_to_different_files() {
    let tmp = TempDir::new("parallel");
    let d = Daemon::start(&tmp, &[]);
    const N: usize = 8;
    const LEN: usize = 2 << 20;
    let ids: Vec<String> = (0..N).map(|_| d.create(LEN as u64)).collect();
    let port = d.port;
    let handles: Vec<_> = ids
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, id)| {
            thread::spawn(move || {
                let data = random_bytes(700 + i as u64, LEN);
                let mut c = Conn::connect(port);
                // Four PATCHes of 512 KiB each on one keep-alive connection.
                for (k, part) in data.chunks(LEN / 4).enumerate() {
                    let off = (k * LEN / 4) as u64;
                    let r = c.request(&patch_req(&id, off, part));
                    assert_eq!(r.status, 204, "upload {i} part {k}: {r:?}");
                    assert_eq!(r.upload_offset(), off + part.len() as u64);
                }
                data
            })
        })
        .collect();
    for (id, h) in ids.iter().zip(handles) {
        let data = h.join().expect("uploader thread");
        assert_eq!(d.offset(id), LEN as u64);
        assert_bytes_eq(&d.read_data(id), &data, "parallel upload");
    }
}
