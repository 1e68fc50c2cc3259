//! The concatenation and concatenation-unfinished extensions through the real binary:
//! partial and final uploads, byte-exact assembly, HEAD's `Upload-Concat`, PATCH to a
//! final, every rejection leaving nothing on disk, `--remove-parts`, `--max-file-size`,
//! the unfinished flow and the hooks a final fires.

use crate::harness::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Creates a partial upload of `body.len()` bytes and stores `stored` of them.
fn partial(d: &Daemon, body: &[u8], stored: usize) -> String {
    let r = d.post(&[
        ("Upload-Length", &body.len().to_string()),
        ("Upload-Concat", "partial"),
    ]);
    r.assert_status(201, "create partial");
    let id = upload_id(&r);
    if stored > 0 {
        d.patch(&id, 0, &body[..stored])
            .assert_status(204, "patch partial");
    }
    id
}

/// POST a final with this `Upload-Concat` value (and extra headers).
fn post_final(d: &Daemon, value: &str, extra: &[(&str, &str)]) -> Response {
    let mut hs = vec![("Upload-Concat", value)];
    hs.extend_from_slice(extra);
    d.post(&hs)
}

fn final_value(urls: &[String]) -> String {
    format!("final;{}", urls.join(" "))
}

fn rel(id: &str) -> String {
    format!("/files/{id}")
}

fn info_json(d: &Daemon, id: &str) -> Value {
    let text = std::fs::read_to_string(d.info_path(id)).expect("info record");
    serde_json::from_str(&text).expect("info JSON")
}

#[test]
fn three_partials_make_a_byte_exact_final() {
    let tmp = TempDir::new("concat3");
    let d = Daemon::start(&tmp, &[]);
    let ext = d
        .options("/files")
        .header("Tus-Extension")
        .unwrap()
        .to_string();
    assert!(ext.split(',').any(|e| e == "concatenation"), "{ext}");
    assert!(!ext.contains("concatenation-unfinished"), "{ext}");

    let bodies: Vec<Vec<u8>> = [70_001usize, 1, 300_000]
        .iter()
        .enumerate()
        .map(|(i, n)| random_bytes(500 + i as u64, *n))
        .collect();
    // Part 0 carries metadata, which the final must not inherit.
    let r = d.post(&[
        ("Upload-Length", &bodies[0].len().to_string()),
        ("Upload-Concat", "partial"),
        ("Upload-Metadata", "filename cGFydC5iaW4="),
    ]);
    r.assert_status(201, "create partial 0");
    let p0 = upload_id(&r);
    d.patch(&p0, 0, &bodies[0]).assert_status(204, "patch 0");
    let p1 = partial(&d, &bodies[1], 1);
    let p2 = partial(&d, &bodies[2], bodies[2].len());

    let h = d.head(&p1);
    assert_eq!(h.header("Upload-Concat"), Some("partial"), "{h:?}");
    assert_eq!(h.upload_offset(), 1);
    assert_eq!(info_json(&d, &p1)["is_partial"], Value::Bool(true));

    // Absolute URL with a trailing slash, a relative path, a relative path with a slash.
    let urls = vec![
        format!("{}/files/{p0}/", d.base_url()),
        rel(&p1),
        format!("{}/", rel(&p2)),
    ];
    let r = post_final(
        &d,
        &final_value(&urls),
        &[("Upload-Metadata", "filename ZmluYWwuYmlu")],
    );
    r.assert_status(201, "create final");
    let total: usize = bodies.iter().map(Vec::len).sum();
    assert_eq!(r.upload_offset(), total as u64);
    let f = upload_id(&r);

    let h = d.head(&f);
    h.assert_status(200, "HEAD final");
    assert_eq!(
        h.header("Upload-Concat"),
        Some(format!("final; /files/{p0} /files/{p1} /files/{p2}").as_str()),
        "{h:?}"
    );
    assert_eq!(h.upload_offset(), total as u64);
    assert_eq!(h.upload_length(), Some(total as u64));
    assert_eq!(
        parse_metadata(h.header("Upload-Metadata").unwrap()),
        vec![("filename".to_string(), "ZmluYWwuYmlu".to_string())],
        "the final carries only its own metadata"
    );
    let want: Vec<u8> = bodies.concat();
    assert_bytes_eq(&d.read_data(&f), &want, "final bytes");
    let info = info_json(&d, &f);
    assert_eq!(info["is_final"], Value::Bool(true));
    assert_eq!(info["is_partial"], Value::Bool(false));
    assert_eq!(info["offset"], Value::from(total as u64));
    assert_eq!(
        info["parts"],
        serde_json::json!([p0.clone(), p1.clone(), p2.clone()])
    );
    // The parts stay (no --remove-parts) and are untouched.
    assert_bytes_eq(&d.read_data(&p0), &bodies[0], "part 0 kept");

    // PATCH to a final: 403, and nothing changes.
    let r = d.patch(&f, total as u64, b"more");
    r.assert_status(403, "PATCH final");
    let r = d.patch(&f, 0, b"x");
    r.assert_status(403, "PATCH final at 0");
    assert_bytes_eq(&d.read_data(&f), &want, "final unchanged");

    // GET serves the assembled bytes.
    let g = d.send(&Req::new("GET", &format!("/files/{f}")));
    g.assert_status(200, "GET final");
    assert_bytes_eq(&g.body, &want, "GET final");
    assert!(
        list_files(d.data_dir())
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".assembling")),
        "no temporary file left"
    );
}

#[test]
fn a_partial_is_reused_in_two_finals() {
    let tmp = TempDir::new("concat-reuse");
    let d = Daemon::start(&tmp, &[]);
    let a = random_bytes(601, 5000);
    let b = random_bytes(602, 777);
    let pa = partial(&d, &a, a.len());
    let pb = partial(&d, &b, b.len());
    let r1 = post_final(&d, &final_value(&[rel(&pa), rel(&pb)]), &[]);
    r1.assert_status(201, "final 1");
    let r2 = post_final(&d, &final_value(&[pb.clone(), rel(&pa)]), &[]);
    r2.assert_status(201, "final 2 (a bare ID, the other order)");
    let f1 = upload_id(&r1);
    let f2 = upload_id(&r2);
    assert_bytes_eq(&d.read_data(&f1), &[&a[..], &b[..]].concat(), "final 1");
    assert_bytes_eq(&d.read_data(&f2), &[&b[..], &a[..]].concat(), "final 2");
    assert_eq!(d.head(&pa).status, 200);
    // A final is not a partial: it cannot be a part.
    let r = post_final(&d, &final_value(&[rel(&f1)]), &[]);
    r.assert_status(400, "final as a part");
}

/// The files under the daemon's directories, to compare before and after a refusal.
fn snapshot(d: &Daemon) -> Vec<PathBuf> {
    let mut v = list_files(d.data_dir());
    v.extend(list_files(d.info_dir()));
    v.sort();
    v.dedup();
    v
}

#[test]
fn every_rejection_leaves_nothing_behind() {
    let tmp = TempDir::new("concat-refuse");
    let d = Daemon::start(&tmp, &["--max-file-size", "10"]);
    let done = partial(&d, b"123456", 6);
    let done2 = partial(&d, b"abcdef", 6);
    let half = partial(&d, b"12345", 2);
    let plain = d.create(3);
    d.patch(&plain, 0, b"xyz").assert_status(204, "plain");
    let r = d.post(&[("Upload-Defer-Length", "1"), ("Upload-Concat", "partial")]);
    r.assert_status(201, "deferred partial");
    let deferred = upload_id(&r);
    let before = snapshot(&d);

    let unknown = fresh_uuid(77);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            final_value(&[rel(&done), rel(&unknown)]),
            404,
            "unknown part",
        ),
        (final_value(&[rel(&plain)]), 400, "not a partial"),
        (
            final_value(&[rel(&done), rel(&half)]),
            400,
            "unfinished part",
        ),
        (final_value(&[rel(&deferred)]), 400, "deferred-length part"),
        ("final;".to_string(), 400, "no parts"),
        ("final; ".to_string(), 400, "no parts, a space"),
        ("final;/other/x".to_string(), 400, "not an upload URL"),
        (format!("final;/files/{done}/extra"), 400, "extra segment"),
        ("partial;x".to_string(), 400, "malformed"),
        ("Final;/files/x".to_string(), 400, "wrong case"),
        (
            final_value(&[rel(&done), rel(&done2)]),
            413,
            "above --max-file-size",
        ),
    ];
    for (value, status, what) in &cases {
        let r = post_final(&d, value, &[]);
        assert_eq!(r.status, *status, "{what}: {value}: {r:?}");
        assert_eq!(snapshot(&d), before, "{what}: files changed");
    }
    // A final carrying data: refused before anything exists.
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .h("Upload-Concat", &final_value(&[rel(&done)]))
            .h("Content-Type", "application/offset+octet-stream")
            .body(b"data"),
    );
    r.assert_status(403, "final with a body");
    assert_eq!(snapshot(&d), before, "final with a body: files changed");
    // Exactly --max-file-size is allowed.
    let four = partial(&d, b"wxyz", 4);
    let r = post_final(&d, &final_value(&[rel(&done), rel(&four)]), &[]);
    r.assert_status(201, "exactly --max-file-size");

    // Concatenation switched off: Upload-Concat is refused.
    let tmp2 = TempDir::new("concat-off");
    let d2 = Daemon::start(&tmp2, &["--tus-extensions", "creation,termination"]);
    let ext = d2
        .options("/files")
        .header("Tus-Extension")
        .unwrap()
        .to_string();
    assert_eq!(ext, "creation,termination");
    let r = d2.post(&[("Upload-Length", "3"), ("Upload-Concat", "partial")]);
    r.assert_status(400, "partial without the extension");
    assert!(list_files(d2.data_dir()).is_empty());
}

#[test]
fn remove_parts_deletes_the_parts_after_the_final() {
    let tmp = TempDir::new("concat-remove");
    let d = Daemon::start(&tmp, &["--remove-parts"]);
    let a = random_bytes(701, 1000);
    let b = random_bytes(702, 2000);
    let pa = partial(&d, &a, a.len());
    let pb = partial(&d, &b, b.len());
    let r = post_final(&d, &final_value(&[rel(&pa), rel(&pb)]), &[]);
    r.assert_status(201, "final");
    let f = upload_id(&r);
    assert_bytes_eq(&d.read_data(&f), &[&a[..], &b[..]].concat(), "final");
    for p in [&pa, &pb] {
        assert_eq!(d.head(p).status, 404, "part {p} removed");
        assert!(find_file(d.data_dir(), p).is_none(), "data of {p} removed");
        assert!(!d.info_path(p).exists(), "info of {p} removed");
    }
    // A later final naming a removed part: 404.
    let r = post_final(&d, &final_value(&[rel(&pa)]), &[]);
    r.assert_status(404, "removed part");
}

/// `--remove-parts` with a part locked by another request when the final is assembled: the
/// removal waits for the lock (a DELETE whose `pre-terminate` hook takes 1 s and refuses),
/// so the part is gone before the 201 and before the final's `post-finish`, not kept.
#[test]
fn remove_parts_waits_for_a_part_held_by_a_request() {
    let tmp = TempDir::new("concat-remove-held");
    let marker = tmp.join("deleting");
    let left = tmp.join("left.log");
    let d = Daemon::start(&tmp, &[]);
    let pa = partial(&d, b"held ", 5);
    let pb = partial(&d, b"part", 4);
    drop(d);
    let hook = tmp.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n\
             pre-terminate) : > '{marker}'; sleep 1; exit 1 ;;\n\
             post-finish) for f in '{ia}' '{ib}'; do [ -e \"$f\" ] && echo \"$f\" >> '{left}'; done\n\
             echo done >> '{left}' ;;\n\
             esac\nexit 0\n",
            marker = marker.display(),
            ia = tmp.join("data").join(format!("{pa}.info")).display(),
            ib = tmp.join("data").join(format!("{pb}.info")).display(),
            left = left.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(
        &tmp,
        &[
            "--remove-parts",
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-terminate,post-finish",
        ],
    );
    assert!(d.info_path(&pa).exists(), "info path layout");
    std::thread::scope(|s| {
        let deleting = s.spawn(|| d.delete(&pa));
        assert!(
            eventually(Duration::from_secs(5), || marker.exists()),
            "the DELETE's pre-terminate hook did not start"
        );
        let r = post_final(&d, &final_value(&[rel(&pa), rel(&pb)]), &[]);
        r.assert_status(201, "final");
        for p in [&pa, &pb] {
            assert_eq!(d.head(p).status, 404, "part {p} kept after the 201");
            assert!(!d.info_path(p).exists(), "info of {p} removed");
        }
        assert_eq!(d.read_data(&upload_id(&r)), b"held part");
        deleting
            .join()
            .unwrap()
            .assert_status(400, "DELETE refused by its hook");
    });
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&left)
            .unwrap_or_default()
            .contains("done")),
        "post-finish of the final did not run"
    );
    assert_eq!(
        std::fs::read_to_string(&left).unwrap(),
        "done\n",
        "parts left when post-finish ran"
    );
}

#[test]
fn unfinished_parts_with_concatenation_unfinished() {
    let tmp = TempDir::new("concat-unfinished");
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "creation-defer-length,termination,getting,concatenation-unfinished",
            "--remove-parts",
        ],
    );
    let ext = d
        .options("/files")
        .header("Tus-Extension")
        .unwrap()
        .to_string();
    assert_eq!(
        ext,
        "creation-defer-length,creation,termination,concatenation,concatenation-unfinished,getting"
    );
    let a = random_bytes(801, 4000);
    let b = random_bytes(802, 6000);
    let pa = partial(&d, &a, 1000);
    let pb = partial(&d, &b, 0);
    let r = post_final(&d, &final_value(&[rel(&pa), rel(&pb)]), &[]);
    r.assert_status(201, "final before its parts are complete");
    let f = upload_id(&r);
    let h = d.head(&f);
    h.assert_status(200, "HEAD waiting final");
    assert!(!h.has("Upload-Offset"), "no offset until assembled: {h:?}");
    assert_eq!(h.upload_length(), Some(10_000));
    assert!(h.header("Upload-Concat").unwrap().starts_with("final; "));
    // A part a waiting final needs cannot be deleted; PATCH to the final is 403.
    d.delete(&pb).assert_status(409, "DELETE a needed part");
    d.patch(&f, 0, b"x")
        .assert_status(403, "PATCH waiting final");
    // A deferred-length part cannot join (the final's length would be unknown).
    let r = d.post(&[("Upload-Defer-Length", "1"), ("Upload-Concat", "partial")]);
    let deferred = upload_id(&r);
    post_final(&d, &final_value(&[rel(&deferred)]), &[]).assert_status(400, "deferred part");

    d.patch(&pb, 0, &b).assert_status(204, "complete part b");
    d.patch(&pa, 1000, &a[1000..])
        .assert_status(204, "complete part a");
    let mut h = d.head(&f);
    let ok = eventually(Duration::from_secs(10), || {
        h = d.head(&f);
        h.has("Upload-Offset")
    });
    assert!(ok, "final was not assembled: {h:?}");
    assert_eq!(h.upload_offset(), 10_000);
    assert_bytes_eq(&d.read_data(&f), &[&a[..], &b[..]].concat(), "final");
    // --remove-parts: every part is gone before the final is reported assembled (its
    // HEAD shows an Upload-Offset), so no waiting here.
    for p in [&pa, &pb] {
        assert_eq!(d.head(p).status, 404, "part {p} still there: {h:?}");
        assert!(find_file(d.data_dir(), p).is_none(), "data of {p} removed");
        assert!(!d.info_path(p).exists(), "info of {p} removed");
    }

    // All parts complete: assembled inside the POST, as without -unfinished.
    let pc = partial(&d, b"hello ", 6);
    let pd = partial(&d, b"world", 5);
    let r = post_final(&d, &final_value(&[rel(&pc), rel(&pd)]), &[]);
    r.assert_status(201, "final of complete parts");
    assert_eq!(r.upload_offset(), 11);
    assert_eq!(d.read_data(&upload_id(&r)), b"hello world");
}

/// A file hook appending `<event> <json>` lines to `log`.
fn recording_hook(tmp: &TempDir, log: &Path) -> PathBuf {
    let path = tmp.join("hook.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf '%s %s\\n' \"$1\" \"$2\" >> '{}'\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn hook_calls(log: &Path) -> Vec<(String, Value)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (ev, json) = l.split_once(' ').unwrap();
            (
                ev.to_string(),
                serde_json::from_str(json).expect("hook JSON"),
            )
        })
        .collect()
}

fn events_of(log: &Path, id: &str) -> Vec<(String, Value)> {
    hook_calls(log)
        .into_iter()
        .filter(|(_, v)| v["upload"]["id"] == id)
        .collect()
}

#[test]
fn a_final_fires_post_finish_not_post_create() {
    let tmp = TempDir::new("concat-hooks");
    let log = tmp.join("calls.log");
    let hook = recording_hook(&tmp, &log);
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--tus-extensions",
            "creation,concatenation-unfinished",
        ],
    );
    let pa = partial(&d, b"abc", 3);
    let pb = partial(&d, b"defg", 4);
    let r = post_final(&d, &final_value(&[rel(&pa), rel(&pb)]), &[]);
    r.assert_status(201, "final");
    let f = upload_id(&r);
    assert!(eventually(Duration::from_secs(5), || events_of(&log, &f)
        .len()
        >= 2));
    std::thread::sleep(Duration::from_millis(300));
    let calls = events_of(&log, &f);
    let names: Vec<&str> = calls.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["pre-create", "post-finish"], "{calls:?}");
    let pre = &calls[0].1["upload"];
    assert_eq!(pre["is_final"], Value::Bool(true));
    assert_eq!(pre["path"], Value::Null);
    assert_eq!(pre["length"], Value::from(7));
    let fin = &calls[1].1["upload"];
    assert_eq!(fin["is_final"], Value::Bool(true));
    assert_eq!(fin["offset"], Value::from(7));
    assert_eq!(fin["length"], Value::from(7));
    assert_eq!(fin["parts"], serde_json::json!([pa.clone(), pb.clone()]));
    assert_eq!(calls[1].1["request"]["method"], "POST");
    // A partial's completion is a plain post-finish with is_partial.
    let pa_calls = events_of(&log, &pa);
    let names: Vec<&str> = pa_calls.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["pre-create", "post-create", "post-finish"]);
    assert_eq!(pa_calls[2].1["upload"]["is_partial"], Value::Bool(true));

    // With an unfinished part: post-create at creation, post-finish at assembly.
    let pc = partial(&d, b"xyz", 0);
    let r = post_final(&d, &final_value(&[rel(&pa), rel(&pc)]), &[]);
    r.assert_status(201, "waiting final");
    let g = upload_id(&r);
    d.patch(&pc, 0, b"xyz").assert_status(204, "complete part");
    assert!(eventually(Duration::from_secs(10), || events_of(&log, &g)
        .len()
        >= 3));
    std::thread::sleep(Duration::from_millis(300));
    let calls = events_of(&log, &g);
    let names: Vec<&str> = calls.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["pre-create", "post-create", "post-finish"],
        "{calls:?}"
    );
    assert_eq!(calls[1].1["upload"]["offset"], Value::from(0));
    assert_eq!(calls[2].1["upload"]["offset"], Value::from(6));
    assert_eq!(d.read_data(&g), b"abcxyz");
}

#[test]
fn a_waiting_final_survives_a_restart_and_an_interrupted_assembly() {
    let tmp = TempDir::new("concat-restart");
    let mut d = Daemon::start(
        &tmp,
        &["--tus-extensions", "creation,concatenation-unfinished"],
    );
    let a = random_bytes(901, 3000);
    let b = random_bytes(902, 5000);
    let pa = partial(&d, &a, a.len());
    let pb = partial(&d, &b, 100);
    let r = post_final(&d, &final_value(&[rel(&pa), rel(&pb)]), &[]);
    r.assert_status(201, "waiting final");
    let f = upload_id(&r);
    d.kill9();
    // What an assembly cut by the crash would leave: a partial temporary file.
    let data = find_file(d.data_dir(), &f).expect("final's data file");
    let tmp_file = PathBuf::from(format!("{}.assembling", data.display()));
    std::fs::write(&tmp_file, &a[..1234]).unwrap();
    d.restart();
    assert!(
        d.wait_log_line(&["1 final upload(s) wait for their parts"])
            .is_some(),
        "startup scan: {}",
        d.stderr_text()
    );
    let h = d.head(&f);
    h.assert_status(200, "HEAD after restart");
    assert!(!h.has("Upload-Offset"), "not complete: {h:?}");
    assert_eq!(
        std::fs::read(&data).unwrap(),
        b"",
        "the data file is still empty"
    );
    // The PATCH completing the last part assembles it (the index was rebuilt at
    // startup); watched on disk, not through HEAD, which could also trigger it.
    d.patch(&pb, 100, &b[100..])
        .assert_status(204, "complete part b");
    let want = [&a[..], &b[..]].concat();
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read(&data)
            .is_ok_and(|v| v == want)),
        "final not assembled after the restart"
    );
    assert!(!tmp_file.exists(), "temporary file replaced");
    // The final is reported complete once its record is written, just after the
    // rename that filled its data file.
    assert!(
        eventually(Duration::from_secs(10), || d
            .head(&f)
            .header("Upload-Offset")
            .is_some_and(|v| v.trim() == "8000")),
        "final not reported complete: {:?}",
        d.head(&f)
    );
}

#[test]
fn parts_completing_together_assemble_their_final_once() {
    let tmp = TempDir::new("concat-race");
    let log = tmp.join("calls.log");
    let hook = recording_hook(&tmp, &log);
    let d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "creation,concatenation-unfinished",
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "post-finish",
        ],
    );
    let mut finals = Vec::new();
    for round in 0..6u64 {
        let a = random_bytes(1000 + round, 40_000);
        let b = random_bytes(2000 + round, 30_000);
        let pa = partial(&d, &a, 1);
        let pb = partial(&d, &b, 1);
        let r = post_final(&d, &final_value(&[rel(&pa), rel(&pb)]), &[]);
        r.assert_status(201, "waiting final");
        let f = upload_id(&r);
        // Both last PATCHes at once, from two threads.
        std::thread::scope(|s| {
            let (d, a, b, pa, pb) = (&d, &a, &b, &pa, &pb);
            let ta = s.spawn(move || d.patch(pa, 1, &a[1..]).status);
            let tb = s.spawn(move || d.patch(pb, 1, &b[1..]).status);
            assert_eq!((ta.join().unwrap(), tb.join().unwrap()), (204, 204));
        });
        finals.push((f, [&a[..], &b[..]].concat()));
    }
    for (f, want) in &finals {
        let data = find_file(d.data_dir(), f).unwrap();
        assert!(
            eventually(Duration::from_secs(10), || std::fs::read(&data)
                .is_ok_and(|v| v == *want)),
            "final {f} not assembled"
        );
        assert!(eventually(Duration::from_secs(5), || events_of(&log, f)
            .len()
            == 1));
    }
    std::thread::sleep(Duration::from_millis(500));
    for (f, _) in &finals {
        let names: Vec<String> = events_of(&log, f).into_iter().map(|(e, _)| e).collect();
        assert_eq!(names, ["post-finish"], "final {f}: one post-finish");
    }
}

/// The startup scan for waiting finals reads records by the request path's rules: a
/// record that names another upload than its file (planted, or copied by hand) is
/// refused, so it cannot make a part undeletable (409) as a waiting final would.
#[test]
fn the_startup_scan_refuses_a_record_naming_another_upload() {
    let tmp = TempDir::new("concat-scan-rules");
    let mut d = Daemon::start(
        &tmp,
        &[
            "--tus-extensions",
            "creation,termination,concatenation-unfinished",
        ],
    );
    // A genuine waiting final, so the scan has something to report when it is done.
    let q = partial(&d, b"abcdef", 2);
    let r = post_final(&d, &final_value(&[rel(&q)]), &[]);
    r.assert_status(201, "waiting final");
    let f = upload_id(&r);
    // Under another upload's file name: a copy of that final's record, waiting on `p`.
    let p = partial(&d, b"xyz", 1);
    let mut forged = info_json(&d, &f);
    forged["parts"] = Value::from(vec![p.clone()]);
    let other = "0b7c1c2e-5f9a-4d3b-8e21-6a4f0c9d7e15";
    std::fs::write(d.info_path(other), forged.to_string()).unwrap();

    d.restart();
    let line = d
        .wait_log_line(&["final upload(s) wait for their parts"])
        .unwrap_or_else(|| panic!("startup scan: {}", d.stderr_text()));
    assert!(line.contains(" 1 final upload(s)"), "{line}");
    d.delete(&p)
        .assert_status(204, "p is no waiting final's part");
    d.delete(&q).assert_status(409, "q is");
}

/// A daemon (with `extra` flags) whose `pre-create` hook records its calls, two complete
/// partial uploads holding `a` and `b`, and what the hook log and the directories held
/// before any final: a refused final must change neither.
struct TwoParts {
    d: Daemon,
    log: PathBuf,
    pa: String,
    pb: String,
    hooks_before: usize,
    files_before: Vec<PathBuf>,
    _tmp: TempDir,
}

impl TwoParts {
    fn new(tag: &str, extra: &[&str], a: &[u8], b: &[u8]) -> TwoParts {
        let tmp = TempDir::new(tag);
        let log = tmp.join("calls.log");
        let hook = recording_hook(&tmp, &log);
        let mut args = vec![
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
        ];
        args.extend_from_slice(extra);
        let d = Daemon::start(&tmp, &args);
        let pa = partial(&d, a, a.len());
        let pb = partial(&d, b, b.len());
        TwoParts {
            hooks_before: hook_calls(&log).len(),
            files_before: snapshot(&d),
            d,
            log,
            pa,
            pb,
            _tmp: tmp,
        }
    }

    /// Nothing was created and `pre-create` did not run.
    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            snapshot(&self.d),
            self.files_before,
            "{what}: files changed"
        );
        assert_eq!(
            hook_calls(&self.log).len(),
            self.hooks_before,
            "{what}: pre-create ran"
        );
    }
}

/// A final naming one part more than once (in any spelling, or 200 times as one POST
/// that would write 200 MiB from a 1 MiB part) is refused with 400 saying so, before any
/// part is read: nothing is created and no hook runs. The part stays usable.
#[test]
fn a_final_naming_a_part_twice_is_refused() {
    let a = random_bytes(611, 1 << 20);
    let b = random_bytes(612, 100);
    let t = TwoParts::new("concat-repeat", &[], &a, &b);
    let (d, pa, pb) = (&t.d, &t.pa, &t.pb);
    let cases: Vec<(String, &str)> = vec![
        (final_value(&[rel(pa), rel(pa)]), "twice in a row"),
        (
            final_value(&[rel(pa), rel(pb), pa.clone()]),
            "a path, then a bare ID",
        ),
        (
            final_value(&[
                format!("{}/files/{pa}", d.base_url()),
                format!("/files/{pa}/"),
            ]),
            "an absolute URL, then a path with a slash",
        ),
        (final_value(&vec![rel(pa); 200]), "200 times"),
    ];
    for (value, what) in &cases {
        let started = std::time::Instant::now();
        let r = post_final(d, value, &[]);
        assert_eq!(r.status, 400, "{what}: {r:?}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("more than once"), "{what}: body {body:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: took {:?}",
            started.elapsed()
        );
        t.assert_untouched(what);
    }
    let r = post_final(d, &final_value(&[rel(pa), rel(pb)]), &[]);
    r.assert_status(201, "the same parts, once each");
    assert_bytes_eq(
        &d.read_data(&upload_id(&r)),
        &[&a[..], &b[..]].concat(),
        "final",
    );
}

/// A final whose parts sum above `--max-file-size` is refused (413) from the parts'
/// records, before `pre-create` and before a byte is copied: no hook runs and nothing
/// is created, while the same parts within the limit make a final.
#[test]
fn a_final_above_max_file_size_is_refused_before_copying() {
    let a = random_bytes(621, 2 << 20);
    let b = random_bytes(622, (1 << 20) + 1);
    let t = TwoParts::new("concat-max", &["--max-file-size", "3M"], &a, &b);
    let r = post_final(&t.d, &final_value(&[rel(&t.pa), rel(&t.pb)]), &[]);
    assert_eq!(r.status, 413, "3 MiB + 1 byte above a 3 MiB limit: {r:?}");
    t.assert_untouched("above --max-file-size");
    let r = post_final(&t.d, &final_value(&[rel(&t.pa)]), &[]);
    r.assert_status(201, "2 MiB within the limit");
    assert_bytes_eq(&t.d.read_data(&upload_id(&r)), &a, "final");
}

/// A final whose assembly inside its POST fails (an injected `EIO`, as a failing disk
/// would) is answered 500 without a `Location`, and nothing of it is left (its record is
/// written only after the assembly), so the client's retry of the POST creates the one
/// final there is.
#[test]
fn a_failed_assembly_leaves_nothing_and_the_retry_makes_the_final() {
    let tmp = TempDir::new("concat-eio");
    let d = Daemon::builder(&tmp)
        .info_dir(tmp.join("info"))
        .env("TUSRING_FAULT_INJECT", "assemble_eio_after=0")
        .start();
    let a = partial(&d, b"hello ", 6);
    let b = partial(&d, b"world", 5);
    let value = final_value(&[rel(&a), rel(&b)]);
    let (data, info) = (list_files(d.data_dir()), list_files(d.info_dir()));
    let r = post_final(&d, &value, &[]);
    assert_eq!(r.status, 500, "{r:?}");
    assert!(!r.has("Location"), "no final exists: {r:?}");
    assert_eq!(list_files(d.data_dir()), data, "no data of a final left");
    assert_eq!(list_files(d.info_dir()), info, "no record of a final left");
    let r = post_final(&d, &value, &[]);
    r.assert_status(201, "the retry");
    let f = upload_id(&r);
    assert_eq!(r.header("Upload-Offset"), Some("11"));
    assert_eq!(d.read_data(&f), b"hello world");
    assert_eq!(list_files(d.info_dir()).len(), info.len() + 1);
}

/// A waiting final whose assembly fails when its last part completes (an injected `EIO`)
/// is not stuck: it stays waiting (no `Upload-Offset`), and its next HEAD tries the
/// assembly again, which completes it byte for byte. (It used to wait for a restart.)
#[test]
fn a_waiting_finals_failed_assembly_is_tried_again_by_its_head() {
    let tmp = TempDir::new("concat-eio-wait");
    let d = Daemon::builder(&tmp)
        .args(&["--tus-extensions", "creation,concatenation-unfinished"])
        .env("TUSRING_FAULT_INJECT", "assemble_eio_after=0")
        .start();
    let a = partial(&d, b"hello ", 6);
    let b = partial(&d, b"world", 2);
    let r = post_final(&d, &final_value(&[rel(&a), rel(&b)]), &[]);
    r.assert_status(201, "waiting final");
    let f = upload_id(&r);
    d.patch(&b, 2, b"rld").assert_status(204, "last part");
    assert!(
        d.wait_log_line(&[&f, "assembly failed"]).is_some(),
        "the assembly did not fail: {}",
        d.stderr_text()
    );
    let h = d.head(&f);
    h.assert_status(200, "HEAD of the waiting final");
    assert!(!h.has("Upload-Offset"), "not assembled yet: {h:?}");
    assert!(
        eventually(Duration::from_secs(5), || d
            .head(&f)
            .header("Upload-Offset")
            .is_some()),
        "the final was never assembled: {}",
        d.stderr_text()
    );
    assert_eq!(d.head(&f).header("Upload-Offset"), Some("11"));
    assert_eq!(d.read_data(&f), b"hello world");
}
