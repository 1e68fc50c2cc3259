//! Write errors (EIO) from the storage: a 500 for that request, the upload consistent,
//! the daemon alive.
//!
//! The faults come from the real binary's test-only injection hook (`storage::fault`,
//! `TUSRING_FAULT_INJECT`), compiled in only with debug assertions, so these tests exist
//! only in that profile (`cargo test`, which builds the daemon the same way). A real
//! kernel fault (device-mapper `error`/`flakey` targets) is not available on the
//! machines the tests run on (no device-mapper in their kernel).
#![cfg(debug_assertions)]

use crate::harness::*;

const LEN: usize = 1 << 20;
/// Where the data write fails: the bytes before it are stored, the rest of that write
/// is not.
const FAIL_AT: usize = 300_000 + 13;

fn faulty(tmp: &TempDir, plan: &str, extra: &[&str]) -> Daemon {
    let d = Daemon::builder(tmp)
        .env("TUSRING_FAULT_INJECT", plan)
        .args(extra)
        .start();
    assert!(
        d.wait_log_line(&["TEST FAULT INJECTION ARMED"]).is_some(),
        "the daemon must announce the fault plan: {}",
        d.stderr_text()
    );
    d
}

/// Three small creations-with-upload of `body`, each answered 201.
fn small_creations_succeed(d: &Daemon, body: &[u8]) {
    for i in 0..3 {
        let r = d.send(
            &Req::new("POST", "/files")
                .tus()
                .h("Upload-Length", &body.len().to_string())
                .h("Content-Type", "application/offset+octet-stream")
                .body(body),
        );
        assert_eq!(r.status, 201, "{i}: {r:?}");
    }
}

/// The upload ID of a creation's `Location`.
fn location_id(r: &Response) -> String {
    r.header("location")
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn data_write_eio_gives_500_keeps_the_bytes_written_and_resumes() {
    for (path, extra) in [("splice", &[][..]), ("buffered", &["--disable-splice"][..])] {
        let tmp = TempDir::new(&format!("eio-{path}"));
        let d = faulty(&tmp, &format!("write_eio_after={FAIL_AT}"), extra);
        assert!(
            d.wait_log_line(&[&format!("data path: {path}")]).is_some(),
            "{path}: {}",
            d.stderr_text()
        );
        let data = random_bytes(901, LEN);
        let id = d.create(LEN as u64);
        let r = d.patch(&id, 0, &data);
        assert_eq!(r.status, 500, "{path}: {r:?}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            body.contains("write data file") && body.contains("Input/output error"),
            "{path}: a clear body: {body:?}"
        );
        assert_eq!(r.header("connection"), Some("close"), "{path}: {r:?}");
        assert_eq!(r.upload_offset(), FAIL_AT as u64, "{path}: {r:?}");
        // Consistent: HEAD is the bytes stored, the file holds exactly them, the record
        // parses and agrees.
        assert_eq!(d.offset(&id), FAIL_AT as u64, "{path}: HEAD");
        assert_bytes_eq(&d.read_data(&id), &data[..FAIL_AT], path);
        let info = read_info(&d.info_path(&id));
        assert_eq!(
            info["offset"].as_u64(),
            Some(FAIL_AT as u64),
            "{path}: {info}"
        );
        // The daemon is alive and serves other uploads.
        assert_eq!(d.send(&Req::new("GET", "/health")).status, 200);
        let other = d.create(1000);
        let r = d.patch(&other, 0, &data[..1000]);
        assert_eq!(r.status, 204, "{path}: another upload: {r:?}");
        // The fault was transient: the upload resumes from HEAD and completes exactly.
        let r = d.patch(&id, FAIL_AT as u64, &data[FAIL_AT..]);
        assert_eq!(r.status, 204, "{path}: resume: {r:?}");
        assert_eq!(r.upload_offset(), LEN as u64);
        assert_bytes_eq(&d.read_data(&id), &data, path);
        assert!(
            d.stderr_text().contains("Input/output error"),
            "{path}: the failure is logged"
        );
    }
}

/// A small creation-with-upload whose whole body came with its head is stored by one
/// chain of linked operations (`storage::file::chain`): a write failing there after
/// `k` bytes gives the same answer as the one-operation-at-a-time path, the upload
/// exists at the bytes stored, and it resumes.
#[test]
fn small_creation_with_upload_write_eio_keeps_the_bytes_written_and_resumes() {
    const SMALL: usize = 4096;
    const K: usize = 1000 + 7;
    let tmp = TempDir::new("eio-small");
    let d = faulty(&tmp, &format!("write_eio_after={K}"), &[]);
    let data = random_bytes(907, SMALL);
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", &SMALL.to_string())
            .h("Content-Type", "application/offset+octet-stream")
            .body(&data),
    );
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("write data file"),
        "{r:?}"
    );
    assert_eq!(r.upload_offset(), K as u64, "{r:?}");
    let id = location_id(&r);
    assert_eq!(d.offset(&id), K as u64, "HEAD");
    assert_bytes_eq(&d.read_data(&id), &data[..K], "stored");
    let info = read_info(&d.info_path(&id));
    assert_eq!(info["offset"].as_u64(), Some(K as u64), "{info}");
    // The next small creations take the same path and succeed (the fault fired once).
    small_creations_succeed(&d, &data[..100]);
    let r = d.patch(&id, K as u64, &data[K..]);
    assert_eq!(r.status, 204, "resume: {r:?}");
    assert_bytes_eq(&d.read_data(&id), &data, "resumed");
}

/// A submit of the linked file operations that the kernel refuses (`EAGAIN`: short of
/// memory) leaves them queued: it is tried again on a timer, so a lone small upload is
/// answered without waiting for another upload to submit (it used to wait for that,
/// here forever).
#[test]
fn a_refused_chain_submit_is_retried_for_a_lone_upload() {
    let tmp = TempDir::new("eio-submit");
    // Both chains of the creation (data file, record) and the first retry are refused.
    let d = faulty(&tmp, "chain_submit_eagain=3", &["--workers", "1"]);
    let data = random_bytes(911, 4096);
    let started = std::time::Instant::now();
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", "4096")
            .h("Content-Type", "application/offset+octet-stream")
            .body(&data),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(r.upload_offset(), 4096, "{r:?}");
    let id = location_id(&r);
    assert_bytes_eq(&d.read_data(&id), &data, "stored");
    let info = read_info(&d.info_path(&id));
    assert_eq!(info["offset"].as_u64(), Some(4096), "{info}");
    assert!(
        d.wait_log_line(&["linked file operations submitted again"])
            .is_some(),
        "{}",
        d.stderr_text()
    );
    // And the next ones go through as usual.
    small_creations_succeed(&d, &data[..100]);
}

#[test]
fn info_record_write_eio_gives_500_and_keeps_the_previous_record() {
    let tmp = TempDir::new("eio-info");
    // The creation's record (the first) is written; the next one fails.
    let d = faulty(&tmp, "info_eio_after=1", &[]);
    let data = random_bytes(902, 2000);
    let id = d.create(2000);
    let before = std::fs::read(d.info_path(&id)).unwrap();
    let r = d.patch(&id, 0, &data[..1000]);
    assert_eq!(r.status, 500, "{r:?}");
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("write info record") && body.contains("Input/output error"),
        "{body:?}"
    );
    // The previous record is intact (it is replaced only by a rename), no temporary
    // file is left, and the offset is still right: it comes from the data file.
    assert_eq!(std::fs::read(d.info_path(&id)).unwrap(), before);
    assert_eq!(read_info(&d.info_path(&id))["offset"].as_u64(), Some(0));
    let leftovers: Vec<_> = list_files(d.info_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(d.offset(&id), 1000);
    // Once the disk works again, the upload completes and the record catches up.
    let r = d.patch(&id, 1000, &data[1000..]);
    assert_eq!(r.status, 204, "{r:?}");
    assert_bytes_eq(&d.read_data(&id), &data, "after the info fault");
    assert_eq!(read_info(&d.info_path(&id))["offset"].as_u64(), Some(2000));
}
