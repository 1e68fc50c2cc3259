//! Concurrency on one upload: the per-upload lock, and uploads cut short by the client.

use crate::harness::*;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// Start a PATCH of `data` at 0 on a new connection and send `sent` bytes of its body,
/// keeping the connection open. Uses `Expect: 100-continue` as a synchronisation point
/// (the server has accepted the PATCH, so it holds the upload) when the server sends it.
fn start_patch(d: &Daemon, id: &str, data: &[u8], sent: usize) -> Conn {
    let mut c = d.conn();
    c.send_head(&patch_req(id, 0, data).h("Expect", "100-continue"));
    match c.read_next_within(Duration::from_secs(2)) {
        Ok(r) => assert_eq!(r.status, 100, "accepted PATCH: {r:?}"),
        Err(e) => eprintln!("note: no 100 Continue within 2 s ({e}); sending the body anyway"),
    }
    c.send_raw(&data[..sent]).unwrap();
    thread::sleep(Duration::from_millis(200));
    c
}

#[test]
fn second_patch_and_delete_during_a_patch_get_423() {
    let tmp = TempDir::new("lock");
    let d = Daemon::start(&tmp, &[]);
    let data = random_bytes(31, 1000);
    let id = d.create(1000);
    let mut first = start_patch(&d, &id, &data, 100);

    let r = d.patch(&id, 0, &data);
    assert_eq!(r.status, 423, "second PATCH while one is streaming: {r:?}");
    let r = d.patch(&id, 100, &data[100..]);
    assert_eq!(r.status, 423, "second PATCH at the streamed offset: {r:?}");
    let r = d.delete(&id);
    assert_eq!(r.status, 423, "DELETE while a PATCH is streaming: {r:?}");
    let h = d.head(&id);
    assert_eq!(h.status, 200, "HEAD during a PATCH: {h:?}");
    let during = h.upload_offset();
    assert!(during <= 1000, "HEAD offset {during} during the PATCH");

    first.send_raw(&data[100..]).unwrap();
    let r = first.read_response().expect("first PATCH completes");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.upload_offset(), 1000);
    assert!(during <= r.upload_offset());
    let h = d.head(&id);
    assert_eq!((h.upload_offset(), h.upload_length()), (1000, Some(1000)));
    assert_bytes_eq(&d.read_data(&id), &data, "after the locked PATCH");
    // Unlocked now.
    assert_eq!(d.delete(&id).status, 204);
}

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
        let winners: Vec<usize> = (0..2).filter(|&i| statuses[i] == 204).collect();
        assert_eq!(winners.len(), 1, "round {round}: statuses {statuses:?}");
        let w = winners[0];
        let loser = statuses[1 - w];
        assert!(
            loser == 423 || loser == 409,
            "round {round}: loser got {loser}"
        );
        assert_eq!(results[w].upload_offset(), LEN as u64);
        let h = d.head(&id);
        assert_eq!(h.upload_offset(), LEN as u64);
        assert_bytes_eq(&d.read_data(&id), &bodies[w], "racing PATCHes");
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
