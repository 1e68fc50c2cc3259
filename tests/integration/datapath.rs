//! The two data paths — zero-copy splice and the buffered fallback — store the same
//! bytes for the same uploads, including the awkward ones.

use crate::harness::*;
use std::time::Duration;

/// Runs `scenario` against a daemon with splicing on and one with `--disable-splice`,
/// and returns the data file each produced.
fn both_paths(tag: &str, scenario: impl Fn(&Daemon) -> String) -> (Vec<u8>, Vec<u8>) {
    let tmp_a = TempDir::new(&format!("{tag}-splice"));
    let spliced = Daemon::start(&tmp_a, &[]);
    let tmp_b = TempDir::new(&format!("{tag}-buffered"));
    let buffered = Daemon::start(&tmp_b, &["--disable-splice"]);
    assert!(
        buffered.wait_log_line(&["data path: buffered"]).is_some(),
        "--disable-splice must select the buffered path: {}",
        buffered.stderr_text()
    );
    assert!(
        spliced.wait_log_line(&["data path: splice"]).is_some(),
        "splice is the default: {}",
        spliced.stderr_text()
    );
    let id_a = scenario(&spliced);
    let id_b = scenario(&buffered);
    (spliced.read_data(&id_a), buffered.read_data(&id_b))
}

#[test]
fn large_single_patch_is_identical() {
    let data = random_bytes(401, 12 * 1024 * 1024 + 17);
    let (a, b) = both_paths("large", |d| {
        let id = d.create(data.len() as u64);
        let r = d.patch(&id, 0, &data);
        assert_eq!(r.status, 204, "{r:?}");
        assert_eq!(
            r.header("upload-offset"),
            Some(data.len().to_string().as_str())
        );
        id
    });
    assert!(a == data, "spliced file differs");
    assert!(b == data, "buffered file differs");
}

#[test]
fn tiny_and_odd_offset_patches_are_identical() {
    let data = random_bytes(402, 1 + 7777 + 12345 + 3 + 999_999);
    let pieces = [1usize, 7777, 12345, 3, 999_999];
    let (a, b) = both_paths("odd", |d| {
        let id = d.create(data.len() as u64);
        let mut off = 0usize;
        for n in pieces {
            let r = d.patch(&id, off as u64, &data[off..off + n]);
            assert_eq!(r.status, 204, "{r:?}");
            off += n;
        }
        assert_eq!(d.offset(&id), data.len() as u64);
        id
    });
    assert!(a == data && b == data, "files differ from the source");
}

#[test]
fn body_bytes_arriving_with_the_head_are_identical() {
    // Head and the whole body in one write: the server reads body bytes with the head.
    let data = random_bytes(403, 300_000);
    let (a, b) = both_paths("withhead", |d| {
        let id = d.create(data.len() as u64);
        let mut c = d.conn();
        let mut bytes = patch_req(&id, 0, &data[..1000]).to_bytes(&d.host());
        // Two PATCHes pipelined in one write: the second one's head and body too.
        bytes.extend(patch_req(&id, 1000, &data[1000..]).to_bytes(&d.host()));
        c.send_raw(&bytes).unwrap();
        let r1 = c.read_response().unwrap();
        assert_eq!(r1.status, 204, "{r1:?}");
        let r2 = c.read_response().unwrap();
        assert_eq!(r2.status, 204, "{r2:?}");
        assert_eq!(r2.header("upload-offset"), Some("300000"));
        id
    });
    assert!(a == data && b == data, "files differ from the source");
}

#[test]
fn body_cut_short_keeps_the_same_bytes() {
    let data = random_bytes(404, 2_000_000);
    let sent = 777_777;
    let (a, b) = both_paths("cut", |d| {
        let id = d.create(data.len() as u64);
        let mut c = d.conn();
        c.send_head(&patch_req(&id, 0, &data));
        c.send_raw(&data[..sent]).unwrap();
        c.shutdown_write();
        assert_eq!(
            d.wait_offset(&id, sent as u64, Duration::from_secs(5)),
            sent as u64
        );
        // Resume from the offset the server reports. The cut request may still hold the
        // upload for a moment (it saves its info record after its last byte): the
        // resume takes it over and waits for it (a 423 is retried for a bounded time).
        let r = d.patch_resume(&id, sent as u64, &data[sent..]);
        assert_eq!(r.status, 204, "{r:?}");
        id
    });
    assert!(a == data && b == data, "files differ from the source");
}

#[test]
fn creation_with_upload_is_identical() {
    let data = random_bytes(405, 3_000_001);
    let (a, b) = both_paths("cwu", |d| {
        let len = data.len().to_string();
        let r = d.send(
            &Req::new("POST", "/files")
                .tus()
                .h("Upload-Length", &len)
                .h("Content-Type", "application/offset+octet-stream")
                .body(&data),
        );
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.header("upload-offset"), Some(len.as_str()));
        let loc = r.header("location").unwrap().to_string();
        loc.rsplit('/').next().unwrap().to_string()
    });
    assert!(a == data && b == data, "files differ from the source");
}
