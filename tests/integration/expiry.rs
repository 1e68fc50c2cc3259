//! The expiration extension through the real binary: `Upload-Expires` on POST, PATCH
//! and HEAD answers; an expired upload answers 410 until the sweep removes its files,
//! then 404; finished uploads are kept; the extension is off by default.

use crate::harness::*;
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Parses an IMF-fixdate (`Wed, 25 Jun 2014 16:00:00 GMT`) to unix seconds.
fn parse_imf_fixdate(v: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let f: Vec<&str> = v.split(' ').collect();
    if f.len() != 6 || f[5] != "GMT" || f[0].len() != 4 || !f[0].ends_with(',') {
        return None;
    }
    if f[1].len() != 2 || f[3].len() != 4 || f[4].len() != 8 {
        return None;
    }
    let day: i64 = f[1].parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == f[2])? as i64 + 1;
    let year: i64 = f[3].parse().ok()?;
    let t: Vec<i64> = f[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    if DAYS[days.rem_euclid(7) as usize] != &f[0][..3] {
        return None;
    }
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

#[test]
fn imf_fixdate_parser() {
    assert_eq!(
        parse_imf_fixdate("Wed, 25 Jun 2014 16:00:00 GMT"),
        Some(1_403_712_000)
    );
    assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(parse_imf_fixdate("Fri, 25 Jun 2014 16:00:00 GMT"), None);
    assert_eq!(parse_imf_fixdate("Wed, 25 Jun 2014 16:00:00 UTC"), None);
}

/// Runs a request and returns its answer with the unix seconds it was in flight: the
/// second it was sent ..= the second its answer arrived.
fn timed(f: impl FnOnce() -> Response) -> (Response, RangeInclusive<i64>) {
    let before = now();
    let r = f();
    (r, before..=now())
}

/// `Upload-Expires` of a response, checked to be an IMF-fixdate exactly `lifetime` after
/// the last write, which happened (in whole unix seconds) within `written`.
fn expires(r: &Response, lifetime: i64, written: &RangeInclusive<i64>) -> i64 {
    let v = r
        .header("Upload-Expires")
        .unwrap_or_else(|| panic!("no Upload-Expires in {r:?}"));
    let at = parse_imf_fixdate(v).unwrap_or_else(|| panic!("not an IMF-fixdate: {v:?}"));
    let (lo, hi) = (written.start() + lifetime, written.end() + lifetime);
    assert!(
        (lo..=hi).contains(&at),
        "Upload-Expires {v} ({at}) is not {lifetime} s after the last write (written \
         {written:?}, so {lo}..={hi})"
    );
    at
}

/// The seconds a write within `written` shows as the data file's mtime, which HEAD's
/// `Upload-Expires` counts from: the kernel stamps files from its coarse clock, which may
/// trail the wall clock by a tick, so up to a second earlier.
fn as_mtime(written: &RangeInclusive<i64>) -> RangeInclusive<i64> {
    written.start() - 1..=*written.end()
}

#[test]
fn expired_uploads_get_410_then_are_swept_and_finished_ones_stay() {
    let tmp = TempDir::new("expiry");
    // Lifetime 2 s; the sweep runs every 6 s, which leaves seconds in which an expired
    // upload is still on disk and answered 410.
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "creation,creation-with-upload,termination,getting,expiration",
            "--expiration-time",
            "2",
            "--expiration-sweep-interval",
            "6",
        ],
    );
    let ext = d
        .options("/files")
        .header("Tus-Extension")
        .unwrap()
        .to_string();
    assert_eq!(
        ext,
        "creation-with-upload,creation,termination,getting,expiration"
    );
    let (r, created) = timed(|| d.post(&[("Upload-Length", "10")]));
    r.assert_status(201, "create");
    expires(&r, 2, &created);
    let u = upload_id(&r);
    let (r, written) = timed(|| d.patch(&u, 0, b"abc"));
    r.assert_status(204, "patch");
    expires(&r, 2, &written);
    let h = d.head(&u);
    h.assert_status(200, "HEAD live");
    expires(&h, 2, &as_mtime(&written));

    // A finished upload never expires and carries no Upload-Expires.
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Length", "4")
            .h("Content-Type", "application/offset+octet-stream")
            .body(b"done"),
    );
    r.assert_status(201, "create finished");
    assert!(!r.has("Upload-Expires"), "{r:?}");
    let fin = upload_id(&r);

    // Expired: 410 on HEAD, PATCH and GET while the files are still there.
    let mut last = d.head(&u);
    assert!(
        eventually(Duration::from_secs(8), || {
            last = d.head(&u);
            last.status != 200
        }),
        "never expired: {last:?}"
    );
    assert_eq!(last.status, 410, "expired, not yet swept: {last:?}");
    assert!(find_file(d.data_dir(), &u).is_some(), "files still there");
    d.patch(&u, 3, b"d").assert_status(410, "PATCH expired");
    let g = d.send(&Req::new("GET", &format!("/files/{u}")));
    g.assert_status(410, "GET expired");

    // Swept: 404 and the files are gone.
    assert!(
        eventually(Duration::from_secs(20), || d.head(&u).status == 404),
        "never swept"
    );
    // The sweep removes the record first, then the data: a HEAD may see the first
    // before the second is done.
    let gone = eventually(Duration::from_secs(5), || {
        find_file(d.data_dir(), &u).is_none()
    });
    assert!(gone, "data removed");
    assert!(!d.info_path(&u).exists(), "info removed");
    assert!(d.stderr_text().contains(&format!("upload {u} expired")));

    // The finished upload is kept, well past the lifetime.
    let h = d.head(&fin);
    h.assert_status(200, "finished upload kept");
    assert!(!h.has("Upload-Expires"));
    assert_eq!(d.read_data(&fin), b"done");
}

#[test]
fn a_write_postpones_the_expiry() {
    let tmp = TempDir::new("expiry-slide");
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "creation,expiration",
            "--expiration-time",
            "3",
            "--expiration-sweep-interval",
            "0.5",
        ],
    );
    let u = d.create(100);
    // Keep writing more often than the lifetime: the upload lives on.
    for i in 0..5u64 {
        let (r, written) = timed(|| d.patch(&u, i, b"x"));
        r.assert_status(204, "patch keeps the upload alive");
        expires(&r, 3, &written);
        // HEAD counts from the same write (the data file's mtime).
        let h = d.head(&u);
        h.assert_status(200, "HEAD between writes");
        expires(&h, 3, &as_mtime(&written));
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert_eq!(d.offset(&u), 5);
    // Then stop: it expires and is swept.
    assert!(
        eventually(Duration::from_secs(15), || d.head(&u).status == 404),
        "never swept"
    );
    // The record goes first, then the data: wait for the second.
    assert!(
        eventually(Duration::from_secs(5), || find_file(d.data_dir(), &u)
            .is_none()),
        "data removed"
    );
}

#[test]
fn expiration_is_off_by_default() {
    let tmp = TempDir::new("expiry-off");
    let d = Daemon::start(&tmp, &[]);
    let ext = d
        .options("/files")
        .header("Tus-Extension")
        .unwrap()
        .to_string();
    assert!(!ext.contains("expiration"), "{ext}");
    let r = d.post(&[("Upload-Length", "10")]);
    assert!(!r.has("Upload-Expires"), "{r:?}");
    let u = upload_id(&r);
    let r = d.patch(&u, 0, b"abc");
    assert!(!r.has("Upload-Expires"), "{r:?}");
}

#[test]
fn a_waiting_final_goes_once_an_expired_part_is_swept() {
    let tmp = TempDir::new("expiry-concat");
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "creation,concatenation-unfinished,expiration",
            "--expiration-time",
            "2",
            "--expiration-sweep-interval",
            "0.5",
        ],
    );
    let mk = |len: &str| {
        let r = d.post(&[("Upload-Length", len), ("Upload-Concat", "partial")]);
        r.assert_status(201, "partial");
        upload_id(&r)
    };
    let done = mk("3");
    d.patch(&done, 0, b"abc")
        .assert_status(204, "complete part");
    let open = mk("3");
    let r = d.post(&[(
        "Upload-Concat",
        &format!("final;/files/{done} /files/{open}"),
    )]);
    r.assert_status(201, "waiting final");
    assert!(
        !r.has("Upload-Expires"),
        "a final does not expire itself: {r:?}"
    );
    let f = upload_id(&r);
    // The unfinished part expires and is swept; then the final that waited for it.
    assert!(
        eventually(Duration::from_secs(15), || d.head(&open).status == 404),
        "unfinished part not swept"
    );
    assert!(
        eventually(Duration::from_secs(15), || d.head(&f).status == 404),
        "waiting final not swept"
    );
    assert!(
        eventually(Duration::from_secs(5), || find_file(d.data_dir(), &f)
            .is_none()),
        "final's data removed"
    );
    // The complete part is finished: kept.
    let h = d.head(&done);
    h.assert_status(200, "complete part kept");
    assert_eq!(d.read_data(&done), b"abc");
}

/// The sweep reads records by the request path's rules: a record that is a symlink (to
/// a record kept elsewhere, by whoever can write the info directory) is not followed,
/// so the sweep neither judges nor removes what it names, as HEAD refuses it too.
#[test]
fn the_sweep_does_not_follow_a_symlinked_record() {
    let tmp = TempDir::new("expiry-symlink");
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "creation,expiration",
            "--expiration-time",
            "3",
            "--expiration-sweep-interval",
            "0.5",
        ],
    );
    let control = d.create(10);
    d.patch(&control, 0, b"a").assert_status(204, "control");
    let linked = d.create(10);
    d.patch(&linked, 0, b"b").assert_status(204, "linked");
    let data = d.data_path(&linked);
    let elsewhere = tmp.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let kept = elsewhere.join(format!("{linked}.info"));
    std::fs::rename(d.info_path(&linked), &kept).unwrap();
    std::os::unix::fs::symlink(&kept, d.info_path(&linked)).unwrap();

    // The control upload expires and is swept: the sweep has run over both.
    assert!(
        eventually(Duration::from_secs(15), || d.head(&control).status == 404),
        "control never swept"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(data.exists(), "the sweep followed the symlinked record");
    assert!(
        d.info_path(&linked).is_symlink(),
        "the planted link is left"
    );
    assert!(kept.exists());
    d.head(&linked)
        .assert_status(500, "HEAD refuses the symlinked record");
}

/// The sweep removes what a crash may leave beside an expired upload's data file: a
/// named checksum staging file (`<data>.chk`, used where `O_TMPFILE` is not available)
/// and, for a final, a partly assembled file (`<data>.assembling`).
#[test]
fn the_sweep_removes_files_a_crash_left_beside_the_data() {
    let tmp = TempDir::new("expiry-leftovers");
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "creation,concatenation-unfinished,expiration",
            "--expiration-time",
            "2",
            "--expiration-sweep-interval",
            "0.5",
        ],
    );
    let r = d.post(&[("Upload-Length", "10"), ("Upload-Concat", "partial")]);
    r.assert_status(201, "partial");
    let part = upload_id(&r);
    d.patch(&part, 0, b"abc").assert_status(204, "PATCH");
    let r = d.post(&[("Upload-Concat", &format!("final;/files/{part}"))]);
    r.assert_status(201, "waiting final");
    let fin = upload_id(&r);
    let beside = |id: &str, ext: &str| {
        let data = find_file(d.data_dir(), id).expect("data file");
        let p = std::path::PathBuf::from(format!("{}.{ext}", data.display()));
        std::fs::write(&p, b"left by a crash").unwrap();
        (data, p)
    };
    let (part_data, chk) = beside(&part, "chk");
    let (fin_data, assembling) = beside(&fin, "assembling");
    assert!(
        eventually(Duration::from_secs(15), || d.head(&part).status == 404),
        "part not swept"
    );
    assert!(
        eventually(Duration::from_secs(15), || d.head(&fin).status == 404),
        "final not swept"
    );
    for p in [part_data, chk, fin_data, assembling] {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}
