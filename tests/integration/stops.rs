//! A hook stops an upload (`--hooks-answers`, a `post-receive` answer with tusd's
//! `StopUpload`; `server::stops`): the PATCH in progress is cut with its bytes kept, the
//! client gets the answer's response, later PATCHes are refused, and the upload is
//! removed (with `post-terminate`) or kept (`KeepUpload`, across a restart). The FastAPI
//! receiver of `answers.rs` (`tests/interop/answers_app.py`) answers `StopUpload` once the
//! offset passes the upload's `limit` metadata; a file hook answers on stdout. With
//! answers off the same answers change nothing. (tus-js-client and tuspy: `interop.rs`.)

use crate::answers::{fetch_seen, metadata, script, Uvicorn};
use crate::harness::*;
use crate::interop::{interop_dir, missing, node, python, run_client};
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The upload's length: a slow PATCH of it lasts about 5 s.
const LEN: usize = 4 << 20;

/// The receiver stops the upload once its offset passes this.
const LIMIT: u64 = 256 * 1024;

/// The slow client's pace.
const PIECE: usize = 32 * 1024;
const PAUSE: Duration = Duration::from_millis(40);

/// Creates an upload of `LEN` bytes whose metadata asks the receiver for `answer`.
fn create_asking(d: &Daemon, answer: &str) -> String {
    let meta = metadata(&[("answer", answer), ("limit", &LIMIT.to_string())]);
    let r = d.post(&[
        ("Upload-Length", &LEN.to_string()),
        ("Upload-Metadata", meta.as_str()),
    ]);
    assert_eq!(r.status, 201, "{r:?}");
    upload_id(&r)
}

/// Sends `req`'s head, then `data` slowly (`PIECE` every `PAUSE`) from a thread that
/// stops at the first failed write or once an answer came; returns the answer (within
/// 20 s), how long it took, the bytes sent by then, and the connection.
fn slow_patch(d: &Daemon, req: Req, data: &[u8]) -> (Response, Duration, usize, Conn) {
    let mut c = d.conn();
    c.send_head(&req);
    let mut writer = c.stream.try_clone().unwrap();
    let answered = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (flag, count, bytes) = (answered.clone(), sent.clone(), data.to_vec());
    let t = std::thread::spawn(move || {
        for piece in bytes.chunks(PIECE) {
            if flag.load(Ordering::SeqCst) || writer.write_all(piece).is_err() {
                return;
            }
            count.fetch_add(piece.len(), Ordering::SeqCst);
            std::thread::sleep(PAUSE);
        }
    });
    let started = Instant::now();
    // The final answer (a draft append also gets progress `104`s).
    let r = loop {
        let r = c
            .read_next_within(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("no answer to the slow PATCH: {e}"));
        if r.status >= 200 {
            break r;
        }
    };
    let took = started.elapsed();
    answered.store(true, Ordering::SeqCst);
    t.join().unwrap();
    (r, took, sent.load(Ordering::SeqCst), c)
}

/// The answer a stopped PATCH gets: the receiver's 413, body and field, the connection
/// closing, well before the whole body could have been sent.
fn assert_stopped(r: &Response, took: Duration, what: &str) {
    assert_eq!(r.status, 413, "{what}: {r:?}");
    assert_eq!(r.body, br#"{"error": "quota exceeded"}"#, "{what}");
    assert_eq!(r.header("X-Quota"), Some("exceeded"), "{what}: {r:?}");
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{what}");
    let whole = PAUSE * (LEN / PIECE) as u32;
    assert!(took < whole / 2, "{what}: answered after {took:?}");
    eprintln!("{what}: the stop's answer came {took:?} after the PATCH began");
}

/// A tus PATCH, or an append of the draft (interop 6), of `data` at 0.
fn patch_of(id: &str, data: &[u8], draft: bool) -> Req {
    let req = if draft {
        Req::new("PATCH", &format!("/files/{id}"))
            .h("Upload-Draft-Interop-Version", "6")
            .h("Content-Type", "application/partial-upload")
            .h("Upload-Offset", "0")
            .h("Upload-Complete", "?0")
    } else {
        patch_req(id, 0, &[])
    };
    req.h("Content-Length", &data.len().to_string())
}

#[test]
fn a_receiver_stops_a_slow_patch_and_the_upload_is_removed() {
    let Some(app) = Uvicorn::start(
        "a_receiver_stops_a_slow_patch_and_the_upload_is_removed",
        "answers_app",
    ) else {
        return;
    };
    let tmp = TempDir::new("stops-removed");
    let d = stopping_daemon(&tmp, &app);
    let data = random_bytes(7, LEN);
    for draft in [false, true] {
        let what = if draft { "draft append" } else { "tus PATCH" };
        let id = create_asking(&d, "stop");
        let (r, took, sent, mut c) = slow_patch(&d, patch_of(&id, &data, draft), &data);
        assert_stopped(&r, took, what);
        assert!(sent < LEN / 2, "{what}: {sent} bytes sent");
        c.assert_closed(Duration::from_secs(5), what);
        // Removed: HEAD 404, the files gone, a resumed PATCH refused (404).
        assert_eq!(d.head(&id).status, 404, "{what}");
        assert!(!d.data_path(&id).exists(), "{what}: data left");
        assert!(!d.info_path(&id).exists(), "{what}: record left");
        let r = d.patch(&id, 0, &data[..PIECE]);
        assert_eq!(r.status, 404, "{what}: {r:?}");
        // The receiver got post-receive during the PATCH (one passing the limit), then
        // post-terminate.
        assert!(
            eventually(Duration::from_secs(10), || fetch_seen(app.port)
                .iter()
                .any(|s| s["id"] == id.as_str() && s["event"] == "post-terminate")),
            "{what}: no post-terminate: {:#?}",
            fetch_seen(app.port)
        );
        let seen = fetch_seen(app.port);
        let progress: Vec<u64> = seen
            .iter()
            .filter(|s| s["id"] == id.as_str() && s["event"] == "post-receive")
            .filter_map(|s| s["offset"].as_u64())
            .collect();
        assert!(
            progress.iter().any(|&o| o > LIMIT && o < LEN as u64),
            "{what}: {progress:?}"
        );
    }
    assert_eq!(metric(&d, "tusring_hook_bad_answers_total"), Some(0.0));
}

#[test]
fn a_kept_stopped_upload_keeps_its_bytes_and_refuses_patches_after_a_restart() {
    let Some(app) = Uvicorn::start(
        "a_kept_stopped_upload_keeps_its_bytes_and_refuses_patches_after_a_restart",
        "answers_app",
    ) else {
        return;
    };
    let tmp = TempDir::new("stops-kept");
    let mut d = stopping_daemon(&tmp, &app);
    let data = random_bytes(8, LEN);
    let id = create_asking(&d, "stopkeep");
    let (r, took, _, _c) = slow_patch(&d, patch_of(&id, &data, false), &data);
    assert_stopped(&r, took, "kept");
    // The bytes stored so far are kept and counted: HEAD, the answer and the file agree.
    let offset = d.offset(&id);
    assert!(offset > LIMIT && offset < LEN as u64, "offset {offset}");
    assert_eq!(r.upload_offset(), offset, "{r:?}");
    assert_eq!(d.read_data(&id), &data[..offset as usize]);
    let record = std::fs::read_to_string(d.info_path(&id)).unwrap();
    assert!(record.ends_with(r#","stopped":true}"#), "{record}");
    // Later PATCHes are refused, at the true offset too, and after a restart.
    for round in ["before the restart", "after the restart"] {
        let r = d.patch(&id, offset, &data[offset as usize..offset as usize + 10]);
        assert_eq!(r.status, 403, "{round}: {r:?}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("stopped"),
            "{round}: {r:?}"
        );
        assert_eq!(d.offset(&id), offset, "{round}");
        if round == "before the restart" {
            d.restart();
        }
    }
    // Kept: no post-terminate; a DELETE still removes it.
    let seen = fetch_seen(app.port);
    assert!(
        !seen
            .iter()
            .any(|s| s["id"] == id.as_str() && s["event"] == "post-terminate"),
        "{seen:#?}"
    );
    d.delete(&id).assert_status(204, "delete a stopped upload");
    assert_eq!(d.head(&id).status, 404);
}

#[test]
fn a_file_hook_stops_an_upload_between_patches() {
    let tmp = TempDir::new("stops-file");
    let marks = tmp.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // Stops every upload at its first post-receive; records post-terminate.
    let hook = script(
        &tmp.join("hook.sh"),
        &format!(
            r#"case "$1" in
  post-receive) echo '{{"StopUpload": true, "HTTPResponse": {{"StatusCode": 429, "Body": "slow down"}}}}' ;;
  post-terminate) touch {}/terminated ;;
esac"#,
            marks.display()
        ),
    );
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-answers",
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "post-receive,post-terminate",
        ],
    );
    let id = d.create(10);
    // A quick PATCH ends before the hook answers: it is answered as usual, and the stop
    // is carried out without it: the upload is removed and post-terminate fires.
    d.patch(&id, 0, b"hello").assert_status(204, "first patch");
    assert!(
        eventually(Duration::from_secs(10), || d.head(&id).status == 404),
        "the stopped upload is still there"
    );
    assert!(
        eventually(Duration::from_secs(10), || marks
            .join("terminated")
            .exists()),
        "no post-terminate"
    );
    let r = d.patch(&id, 5, b"world");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(d.stderr_text().contains("stopped and removed at offset 5"));
}

#[test]
fn answers_off_a_stop_answer_changes_nothing() {
    let Some(app) = Uvicorn::start("answers_off_a_stop_answer_changes_nothing", "answers_app")
    else {
        return;
    };
    let tmp = TempDir::new("stops-off");
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-http-urls",
            &app.url(),
            "--hooks",
            "post-receive,post-terminate",
        ],
    );
    let data = random_bytes(9, LEN);
    let id = create_asking(&d, "stop");
    let (r, _, sent, _c) = slow_patch(&d, patch_of(&id, &data, false), &data);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(sent, LEN);
    assert_eq!(d.offset(&id), LEN as u64);
    assert_eq!(d.read_data(&id), data);
    // One post-receive for the PATCH, as rustus sends (none during its body).
    std::thread::sleep(Duration::from_millis(500));
    let seen = fetch_seen(app.port);
    let events: Vec<&serde_json::Value> = seen.iter().filter(|s| s["id"] == id.as_str()).collect();
    assert!(
        events.iter().all(|s| s["event"] != "post-receive"),
        "a complete upload's PATCH fires post-finish, not post-receive: {events:#?}"
    );
    // An incomplete one: exactly one post-receive, and the upload stays.
    let id = create_asking(&d, "stop");
    let part = &data[..LEN / 2];
    let (r, _, _, _c) = slow_patch(&d, patch_of(&id, part, false), part);
    assert_eq!(r.status, 204, "{r:?}");
    assert!(eventually(Duration::from_secs(10), || {
        fetch_seen(app.port)
            .iter()
            .any(|s| s["id"] == id.as_str() && s["event"] == "post-receive")
    }));
    std::thread::sleep(Duration::from_millis(500));
    let receives = fetch_seen(app.port)
        .iter()
        .filter(|s| s["id"] == id.as_str() && s["event"] == "post-receive")
        .count();
    assert_eq!(receives, 1);
    assert_eq!(d.offset(&id), (LEN / 2) as u64);
    d.patch(&id, (LEN / 2) as u64, &data[LEN / 2..])
        .assert_status(204, "the rest");
}

/// A daemon stopping uploads through the answers app, for a real client.
fn stopping_daemon(tmp: &TempDir, app: &Uvicorn) -> Daemon {
    Daemon::start(
        tmp,
        &[
            "--hooks-answers",
            "--hooks-http-urls",
            &app.url(),
            "--hooks",
            "post-receive,post-terminate",
        ],
    )
}

/// Runs a real client (`command(daemon, source file)`) against a daemon stopping
/// uploads through the answers app; the upload ID on its last line, its lines, and the
/// daemon. `None` when the client or the app is not installed (skipped loudly).
fn stopped_client(
    test: &str,
    client: Option<std::path::PathBuf>,
    seed: u64,
    command: impl FnOnce(Command, &Daemon, &std::path::Path) -> Command,
    what: &str,
) -> Option<(String, Vec<String>, Daemon)> {
    let Some(client) = client else {
        missing(what);
        return None;
    };
    let app = Uvicorn::start(test, "answers_app")?;
    let tmp = TempDir::new("stops-client");
    let d = stopping_daemon(&tmp, &app);
    let src = tmp.join("source.bin");
    std::fs::write(&src, random_bytes(seed, LEN)).unwrap();
    let out = run_client(command(Command::new(client), &d, &src), what);
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    let url = lines.last().unwrap_or_else(|| panic!("{what}: no output"));
    let id = url.trim_end_matches('/').rsplit('/').next().unwrap();
    assert!(is_uuid_v4(id), "{what}: {out}");
    // Nothing of the stopped upload is left.
    assert_eq!(d.head(id).status, 404, "{what}");
    Some((id.to_string(), lines, d))
}

#[test]
fn interop_tusjs_sees_the_stop_mid_patch_and_cannot_resume() {
    let what = "tus-js-client, a slow PATCH stopped";
    let Some((_, lines, _d)) = stopped_client(
        "interop_tusjs_sees_the_stop_mid_patch_and_cannot_resume",
        node(),
        10,
        |mut cmd, d, src| {
            cmd.arg(interop_dir().join("tusjs_stopped.mjs"))
                .arg(d.endpoint())
                .arg(src)
                .arg(LIMIT.to_string());
            cmd
        },
        what,
    ) else {
        return;
    };
    // The PATCH in progress got the stop's own answer; the resume's HEAD found nothing.
    let said = |want: &str| lines.iter().any(|l| l.starts_with(want));
    assert!(
        said(r#"stopped: status=413 body={"error": "quota exceeded"}"#),
        "{what}: {lines:?}"
    );
    assert!(said("resume refused: status=404"), "{what}: {lines:?}");
}

#[test]
fn interop_tuspy_sees_the_stop_and_cannot_resume() {
    let what = "tuspy, stopped between chunks";
    // 64 KiB PATCHes: each is quick, so the stop comes from the post-receive after one
    // of them and meets the next (its answer: the stop's 413, or 404 once removed).
    let Some((_, lines, _d)) = stopped_client(
        "interop_tuspy_sees_the_stop_and_cannot_resume",
        python(),
        11,
        |mut cmd, d, src| {
            cmd.arg(interop_dir().join("tuspy_stopped.py"))
                .arg(d.endpoint())
                .arg(src)
                .arg((64 * 1024).to_string())
                .arg(LIMIT.to_string());
            cmd
        },
        what,
    ) else {
        return;
    };
    let stopped = lines
        .iter()
        .find_map(|l| l.strip_prefix("stopped: status="))
        .unwrap_or_else(|| panic!("{what}: {lines:?}"));
    assert!(
        stopped.starts_with("413 ") || stopped.starts_with("404 "),
        "{what}: {lines:?}"
    );
    let offset: u64 = stopped.rsplit("offset=").next().unwrap().parse().unwrap();
    assert!(offset > LIMIT && offset < LEN as u64, "{what}: {lines:?}");
    assert!(
        lines.iter().any(|l| l == "resume refused: status=404"),
        "{what}: {lines:?}"
    );
}

#[test]
fn with_redis_records_a_stop_holds_on_every_node() {
    let tmp = TempDir::new("stops-redis");
    let Some(redis) = crate::redisd::Redis::start(&tmp) else {
        return;
    };
    // Node A's file hook stops every upload at its first post-receive: kept when its
    // metadata says `mode keep`, else removed. Node B has no hooks.
    let hook = script(
        &tmp.join("hook.sh"),
        r#"[ "$1" = post-receive ] || exit 0
case "$2" in
  *'"mode":"keep"'*) echo '{"StopUpload": true, "KeepUpload": true}' ;;
  *) echo '{"StopUpload": true}' ;;
esac"#,
    );
    let hook = hook.to_str().unwrap();
    let a = crate::redis::redis_node(
        &tmp,
        &redis,
        &[
            "--hooks-answers",
            "--hooks-file",
            hook,
            "--hooks",
            "post-receive",
        ],
    );
    let b = crate::redis::redis_node(&tmp, &redis, &[]);
    let keep = metadata(&[("mode", "keep")]);
    for mode in ["keep", "remove"] {
        let r = if mode == "keep" {
            a.post(&[("Upload-Length", "10"), ("Upload-Metadata", keep.as_str())])
        } else {
            a.post(&[("Upload-Length", "10")])
        };
        assert_eq!(r.status, 201, "{mode}: {r:?}");
        let id = upload_id(&r);
        a.patch(&id, 0, b"hello").assert_status(204, mode);
        if mode == "keep" {
            // The stop is in the record in Redis: node B refuses the next PATCH.
            assert!(
                eventually(Duration::from_secs(10), || redis.get(&id).is_some_and(
                    |raw| String::from_utf8_lossy(&raw).contains(r#""stopped":true"#)
                )),
                "{mode}: the record never said stopped"
            );
            let r = b.patch(&id, 5, b"world");
            assert_eq!(r.status, 403, "{mode}: {r:?}");
            assert_eq!(b.offset(&id), 5, "{mode}");
            assert_eq!(crate::redis::record(&redis, &id)["offset"], 5);
        } else {
            assert!(
                eventually(Duration::from_secs(10), || b.head(&id).status == 404),
                "{mode}: node B still serves the removed upload"
            );
            assert_eq!(b.patch(&id, 5, b"world").status, 404, "{mode}");
        }
    }
}
