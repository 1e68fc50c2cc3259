//! Hook answers (`--hooks-answers`, tusd v2's `HookResponse`) through the real binary:
//! a FastAPI receiver under uvicorn (`tests/interop/answers_app.py`) answering each
//! instruction, a file hook and a directory hook printing JSON, and malformed answers
//! (not JSON, wrong types, a 10 MiB body) that are logged and taken as no instruction
//! while the daemon keeps serving, or, for an ID with `..`, refuse the creation with 400.
//! (NATS replies: `nats.rs`; a chosen upload ID end to end: `ids.rs`.)

use crate::harness::*;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `Upload-Metadata` of `pairs` (values base64-encoded).
pub(crate) fn metadata(pairs: &[(&str, &str)]) -> String {
    use base64::Engine;
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {}",
                base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The upload's metadata as its `.info` record holds it.
pub(crate) fn recorded_metadata(d: &Daemon, id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(d.info_path(id)).expect("the info record");
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    info["metadata"].clone()
}

/// A uvicorn serving `tests/interop/<module>:app`; killed when dropped.
pub(crate) struct Uvicorn {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Uvicorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Uvicorn {
    /// `None` (the test skips, loudly) when fastapi/uvicorn are not installed, unless
    /// `TUSRING_REQUIRE_INTEROP` is set.
    pub(crate) fn start(test: &str, module: &str) -> Option<Uvicorn> {
        let Some(python) = python_with("fastapi, uvicorn") else {
            if std::env::var_os("TUSRING_REQUIRE_INTEROP").is_some_and(|v| !v.is_empty()) {
                panic!("fastapi/uvicorn are not installed and TUSRING_REQUIRE_INTEROP is set; run scripts/test.sh");
            }
            let _ = std::io::stderr().write_all(
                format!(
                    "\n!!! SKIPPED {test}: fastapi/uvicorn not installed (run scripts/test.sh)\n\n"
                )
                .as_bytes(),
            );
            return None;
        };
        let port = free_port();
        let child = Command::new(&python)
            .args([
                "-m",
                "uvicorn",
                &format!("{module}:app"),
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--log-level",
                "warning",
            ])
            .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start uvicorn");
        let server = Uvicorn { child, port };
        assert!(
            eventually(Duration::from_secs(20), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "uvicorn did not listen on {port}"
        );
        Some(server)
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }
}

/// A daemon with answers on, sending `events` to `app`.
fn answering(tmp: &TempDir, app: &Uvicorn, events: &str) -> Daemon {
    let url = app.url();
    Daemon::start(
        tmp,
        &[
            "--hooks-answers",
            "--hooks-http-urls",
            &url,
            "--hooks",
            events,
        ],
    )
}

/// Creates an upload of 5 bytes whose `answer` metadata tells the receiver what to say.
fn post_asking(d: &Daemon, answer: &str, filename: &str) -> Response {
    let meta = metadata(&[("answer", answer), ("filename", filename)]);
    d.post(&[("Upload-Length", "5"), ("Upload-Metadata", meta.as_str())])
}

#[test]
fn answers_off_hooks_only_say_yes_or_no() {
    let Some(app) = Uvicorn::start("answers_off_hooks_only_say_yes_or_no", "answers_app") else {
        return;
    };
    let tmp = TempDir::new("answers-off");
    let d = Daemon::start(&tmp, &["--hooks-http-urls", &app.url()]);
    // The receiver answers RejectUpload and a metadata change with a 200: without
    // --hooks-answers a 2xx lets the request through and nothing of its body is read.
    let r = post_asking(&d, "reject", "A.TXT");
    assert_eq!(r.status, 201, "{r:?}");
    let r = post_asking(&d, "normalise", "A.TXT");
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    assert_eq!(recorded_metadata(&d, &id)["filename"], "A.TXT");
    let log = d.stderr_text();
    assert!(
        !log.contains("answered") && !log.contains("not taken"),
        "{log}"
    );
}

#[test]
fn a_fastapi_receiver_answers_each_instruction() {
    let Some(app) = Uvicorn::start("a_fastapi_receiver_answers_each_instruction", "answers_app")
    else {
        return;
    };
    let tmp = TempDir::new("answers-fastapi");
    let d = Daemon::start(&tmp, &["--hooks-answers", "--hooks-http-urls", &app.url()]);

    // RejectUpload: the client gets the answer's status, body and fields; nothing exists.
    let r = post_asking(&d, "reject", "a.txt");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, br#"{"error": "quota exceeded"}"#);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("X-Reason"), Some("quota"));
    assert!(r.header("Location").is_none(), "{r:?}");
    assert!(list_files(d.data_dir()).is_empty(), "something was created");

    // ChangeFileInfo.MetaData: replaced before the record is written; HEAD and the
    // later hook payloads show it.
    let r = post_asking(&d, "normalise", "Report.PDF");
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    let meta = recorded_metadata(&d, &id);
    assert_eq!(meta["filename"], "report.pdf", "{meta}");
    assert_eq!(meta["checked"], "yes", "{meta}");
    let head = d.head(&id);
    let want = metadata(&[
        ("answer", "normalise"),
        ("checked", "yes"),
        ("filename", "report.pdf"),
    ]);
    assert_eq!(
        parse_metadata(head.header("Upload-Metadata").unwrap_or("")),
        parse_metadata(&want),
        "{head:?}"
    );
    d.patch(&id, 0, b"hello").assert_status(204, "patch");

    // HTTPResponse on a creation that goes on: merged into the 201 (Location kept).
    let r = post_asking(&d, "respond", "b.txt");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body, br#"{"note":"welcome"}"#);
    assert_eq!(r.header("X-Hook"), Some("said-hello"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let responded = upload_id(&r);
    assert_eq!(d.offset(&responded), 0);

    // RejectTermination: the answer's 409 and body; the upload is kept.
    let r = post_asking(&d, "keep", "c.txt");
    assert_eq!(r.status, 201, "{r:?}");
    let kept = upload_id(&r);
    let r = d.delete(&kept);
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.body, b"this upload is kept");
    assert_eq!(d.offset(&kept), 0);
    // A pre-terminate with no instruction: the upload goes.
    d.delete(&responded).assert_status(204, "delete");
    assert_eq!(d.head(&responded).status, 404);

    // The receiver saw the normalised metadata in the events after the creation.
    let seen = fetch_seen(app.port);
    let after: Vec<&serde_json::Value> = seen
        .iter()
        .filter(|s| s["id"] == id.as_str() && s["event"] != "pre-create")
        .collect();
    assert!(!after.is_empty(), "{seen:#?}");
    for s in after {
        assert_eq!(s["metadata"]["filename"], "report.pdf", "{s}");
    }
    assert_eq!(metric(&d, "tusring_hook_bad_answers_total"), Some(0.0));
}

/// GET /seen of the answers app: every message it got.
pub(crate) fn fetch_seen(port: u16) -> Vec<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /seen HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("[]");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn malformed_answers_are_logged_and_change_nothing() {
    let Some(app) = Uvicorn::start(
        "malformed_answers_are_logged_and_change_nothing",
        "answers_app",
    ) else {
        return;
    };
    let tmp = TempDir::new("answers-malformed");
    let d = answering(&tmp, &app, "pre-create");
    for (answer, why) in [
        ("garbage", "not a valid HookResponse"),
        ("wrongtype", "invalid type"),
        ("huge", "65536"),
    ] {
        let r = post_asking(&d, answer, "Keep.Me");
        assert_eq!(r.status, 201, "{answer}: {r:?}");
        let id = upload_id(&r);
        assert_eq!(recorded_metadata(&d, &id)["filename"], "Keep.Me");
        let line = d
            .wait_log_line(&["gave an answer that is not taken", why])
            .unwrap_or_else(|| panic!("{answer}: no log line naming {why:?}: {}", d.stderr_text()));
        assert!(line.contains("pre-create"), "{line}");
    }
    // An ID that is not valid ("../escape") refuses the creation (400, saying why),
    // logged and counted as a bad answer; nothing is created.
    let before = list_files(d.data_dir()).len();
    let r = post_asking(&d, "badid", "Keep.Me");
    assert_eq!(r.status, 400, "{r:?}");
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("upload ID the pre-create hook chose is not valid"),
        "{body}"
    );
    assert!(r.header("Location").is_none(), "{r:?}");
    assert_eq!(
        list_files(d.data_dir()).len(),
        before,
        "something was created"
    );
    assert!(
        d.wait_log_line(&["chose an upload ID that is not taken", "escape"])
            .is_some(),
        "{}",
        d.stderr_text()
    );
    assert!(!list_files(d.data_dir())
        .iter()
        .any(|p| p.to_string_lossy().contains("escape")));
    assert_eq!(metric(&d, "tusring_hook_bad_answers_total"), Some(4.0));
    // The daemon serves on.
    let id = d.create(3);
    d.patch(&id, 0, b"abc")
        .assert_status(204, "patch after the bad answers");
}

/// Writes an executable `#!/bin/sh` script.
pub(crate) fn script(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

#[test]
fn a_file_hook_answers_on_stdout() {
    let tmp = TempDir::new("answers-file");
    // Refuses uploads whose JSON names the file "secret"; normalises the others' metadata;
    // says nothing to other events.
    let hook = script(
        &tmp.join("hook.sh"),
        r#"[ "$1" = pre-create ] || exit 0
case "$2" in
  *'"filename":"secret"'*)
    echo '{"RejectUpload": true, "HTTPResponse": {"StatusCode": 451, "Body": "not this one"}}' ;;
  *)
    printf '%s' '{"ChangeFileInfo": {"MetaData": {"filename": "renamed.bin"}}}' ;;
esac"#,
    );
    let d = Daemon::start(
        &tmp,
        &["--hooks-answers", "--hooks-file", hook.to_str().unwrap()],
    );
    let meta = metadata(&[("filename", "secret")]);
    let r = d.post(&[("Upload-Length", "3"), ("Upload-Metadata", meta.as_str())]);
    assert_eq!(r.status, 451, "{r:?}");
    assert_eq!(r.body, b"not this one");
    assert!(list_files(d.data_dir()).is_empty(), "something was created");
    let meta = metadata(&[("filename", "Original Name.BIN"), ("kind", "x")]);
    let r = d.post(&[("Upload-Length", "3"), ("Upload-Metadata", meta.as_str())]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = upload_id(&r);
    assert_eq!(
        recorded_metadata(&d, &id),
        serde_json::json!({"filename": "renamed.bin"})
    );
    d.patch(&id, 0, b"abc").assert_status(204, "patch");
    // The same hook without --hooks-answers: stdout is only logged.
    let tmp2 = TempDir::new("answers-file-off");
    let off = Daemon::start(&tmp2, &["--hooks-file", hook.to_str().unwrap()]);
    let meta = metadata(&[("filename", "secret")]);
    let r = off.post(&[("Upload-Length", "3"), ("Upload-Metadata", meta.as_str())]);
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn a_directory_hook_answers_and_a_flood_is_refused_by_its_length() {
    let tmp = TempDir::new("answers-dir");
    let dir = tmp.join("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    script(
        &dir.join("pre-create"),
        r#"case "$1" in
  *'"filename":"flood"'*) head -c 10485760 /dev/zero | tr '\0' 'x' ;;
  *) echo '{"HTTPResponse": {"Header": {"X-Checked-By": "dir-hook"}}}' ;;
esac"#,
    );
    script(
        &dir.join("pre-terminate"),
        r#"echo '{"RejectTermination": true}'"#,
    );
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-answers",
            "--hooks-dir",
            dir.to_str().unwrap(),
            "--hooks",
            "pre-create,pre-terminate",
        ],
    );
    let r = d.post(&[("Upload-Length", "3")]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("X-Checked-By"), Some("dir-hook"));
    let id = upload_id(&r);
    // RejectTermination without an HTTPResponse: 400, the upload kept.
    let r = d.delete(&id);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(d.offset(&id), 0);
    // 10 MiB on stdout: read (the hook is not blocked), kept only to the limit, refused
    // by its length, and the upload created as if the hook had said nothing.
    let meta = metadata(&[("filename", "flood")]);
    let r = d.post(&[("Upload-Length", "3"), ("Upload-Metadata", meta.as_str())]);
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.header("X-Checked-By").is_none(), "{r:?}");
    assert!(
        d.wait_log_line(&["gave an answer that is not taken", "65536"])
            .is_some(),
        "{}",
        d.stderr_text()
    );
    let id = upload_id(&r);
    d.patch(&id, 0, b"abc").assert_status(204, "patch");
}

#[test]
fn a_final_upload_takes_its_creation_answer() {
    let tmp = TempDir::new("answers-final");
    // Every pre-create is answered with a file name and a header for the 201.
    let hook = script(
        &tmp.join("hook.sh"),
        r#"[ "$1" = pre-create ] || exit 0
echo '{"ChangeFileInfo": {"MetaData": {"filename": "joined.bin"}}, "HTTPResponse": {"Header": {"X-Joined": "yes"}}}'"#,
    );
    let d = Daemon::start(
        &tmp,
        &["--hooks-answers", "--hooks-file", hook.to_str().unwrap()],
    );
    let mut parts = Vec::new();
    for body in [&b"abc"[..], b"def"] {
        let r = d.post(&[("Upload-Length", "3"), ("Upload-Concat", "partial")]);
        assert_eq!(r.status, 201, "{r:?}");
        let id = upload_id(&r);
        d.patch(&id, 0, body).assert_status(204, "part");
        parts.push(id);
    }
    let concat = format!("final;/files/{} /files/{}", parts[0], parts[1]);
    let r = d.post(&[("Upload-Concat", concat.as_str())]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("X-Joined"), Some("yes"));
    let f = upload_id(&r);
    assert_eq!(d.read_data(&f), b"abcdef");
    assert_eq!(
        recorded_metadata(&d, &f),
        serde_json::json!({"filename": "joined.bin"})
    );
}

#[test]
fn a_pre_finish_answer_is_the_last_patchs_answer() {
    let Some(app) = Uvicorn::start(
        "a_pre_finish_answer_is_the_last_patchs_answer",
        "answers_app",
    ) else {
        return;
    };
    let tmp = TempDir::new("answers-pre-finish");
    let d = answering(&tmp, &app, "pre-finish,post-finish");
    // A 2xx with a body: the last PATCH is answered with it (Upload-Offset kept).
    let id = upload_id(&post_asking(&d, "processed", "a.txt"));
    d.patch(&id, 0, b"he").assert_status(204, "first part");
    let r = d.patch(&id, 2, b"llo");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["url"], format!("/processed/{id}"));
    assert_eq!(r.upload_offset(), 5);

    // A refusal: the client gets it; the upload is complete on disk all the same.
    let refused = upload_id(&post_asking(&d, "refused", "b.txt"));
    let r = d.patch(&refused, 0, b"hello");
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.body, b"virus found");
    assert_eq!(r.header("X-Scan"), Some("infected"));
    assert_eq!(d.offset(&refused), 5);
    assert_eq!(d.read_data(&refused), b"hello");

    // No instruction: the PATCH is answered as without the hook.
    let plain = upload_id(&post_asking(&d, "", "c.txt"));
    let r = d.patch(&plain, 0, b"hello");
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");

    // pre-finish came first, and post-finish followed it for each (the refused one too).
    assert!(
        eventually(Duration::from_secs(10), || {
            let seen = fetch_seen(app.port);
            [&id, &refused, &plain].iter().all(|u| {
                let events: Vec<&serde_json::Value> = seen
                    .iter()
                    .filter(|s| s["id"] == u.as_str())
                    .map(|s| &s["event"])
                    .collect();
                events == ["pre-finish", "post-finish"]
            })
        }),
        "{:#?}",
        fetch_seen(app.port)
    );
    assert_eq!(metric(&d, "tusring_hook_bad_answers_total"), Some(0.0));
}

#[test]
fn a_file_hook_answers_pre_finish_and_a_failing_one_refuses() {
    let tmp = TempDir::new("answers-pre-finish-file");
    // Answers every pre-finish with a header and a body; exits 1 when the upload's
    // metadata names the file "bad" (a refusal, with or without answers).
    let hook = script(
        &tmp.join("hook.sh"),
        r#"[ "$1" = pre-finish ] || exit 0
case "$2" in
  *'"filename":"bad"'*) exit 1 ;;
esac
echo '{"HTTPResponse": {"StatusCode": 200, "Body": "stored", "Header": {"X-Finished-By": "file-hook"}}}'"#,
    );
    let args = [
        "--hooks-file",
        hook.to_str().unwrap(),
        "--hooks",
        "pre-finish",
    ];
    let bad = metadata(&[("filename", "bad")]);
    for answers in [true, false] {
        let tmp = TempDir::new("answers-pre-finish-file-d");
        let mut all = args.to_vec();
        if answers {
            all.push("--hooks-answers");
        }
        let d = Daemon::start(&tmp, &all);
        let id = d.create(3);
        let r = d.patch(&id, 0, b"abc");
        if answers {
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.body, b"stored");
            assert_eq!(r.header("X-Finished-By"), Some("file-hook"));
            // A concatenation's final, complete at its creation: its POST takes the answer
            // too (Location kept).
            let mut parts = Vec::new();
            for body in [&b"ab"[..], b"cd"] {
                let part =
                    upload_id(&d.post(&[("Upload-Length", "2"), ("Upload-Concat", "partial")]));
                d.patch(&part, 0, body).assert_status(200, "part");
                parts.push(part);
            }
            let concat = format!("final;/files/{} /files/{}", parts[0], parts[1]);
            let r = d.post(&[("Upload-Concat", concat.as_str())]);
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.header("X-Finished-By"), Some("file-hook"));
            assert_eq!(d.read_data(&upload_id(&r)), b"abcd");
        } else {
            // Without --hooks-answers, stdout is only logged.
            assert_eq!(r.status, 204, "{r:?}");
            assert!(r.header("X-Finished-By").is_none(), "{r:?}");
        }
        // A failing pre-finish refuses the request (as a failing pre-create does); the
        // upload stays complete. Here, a creation-with-upload that completes it.
        let r = d.send(
            &Req::new("POST", "/files/")
                .tus()
                .h("Upload-Length", "3")
                .h("Upload-Metadata", &bad)
                .h("Content-Type", "application/offset+octet-stream")
                .body(b"xyz"),
        );
        assert_eq!(r.status, 400, "answers {answers}: {r:?}");
        let id = upload_id(&r);
        assert_eq!(d.offset(&id), 3);
        assert_eq!(d.read_data(&id), b"xyz");
    }
    // The default --hooks (rustus's six events) has no pre-finish: the hook is not asked.
    let plain = TempDir::new("answers-pre-finish-default");
    let p = Daemon::start(
        &plain,
        &["--hooks-answers", "--hooks-file", hook.to_str().unwrap()],
    );
    let id = p.create(3);
    let r = p.patch(&id, 0, b"abc");
    assert_eq!(r.status, 204, "default --hooks: {r:?}");
}

/// The real clients read a pre-finish answer: tus-js-client's `onSuccess` payload and
/// tuspy's last request both carry the status, a header and the body the hook gave to
/// the PATCH that completed the upload, which is whole on disk.
#[test]
fn interop_clients_read_the_pre_finish_answer() {
    use crate::interop::{interop_dir, missing, node, python, run_client};
    let tmp = TempDir::new("answers-pre-finish-clients");
    let hook = script(
        &tmp.join("hook.sh"),
        r#"[ "$1" = pre-finish ] || exit 0
echo '{"HTTPResponse": {"StatusCode": 200, "Body": "{\"url\": \"/processed/report.pdf\"}", "Header": {"X-Finished-By": "file-hook", "Content-Type": "application/json"}}}'"#,
    );
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-finish",
            "--hooks-answers",
        ],
    );
    let data = random_bytes(31, 300 * 1024);
    let src = tmp.join("source.bin");
    std::fs::write(&src, &data).unwrap();
    let clients: [(&str, Option<PathBuf>, &str); 2] = [
        ("tus-js-client", node(), "tusjs_pre_finish.mjs"),
        ("tuspy", python(), "tuspy_pre_finish.py"),
    ];
    for (what, client, file) in clients {
        let Some(client) = client else {
            missing(what);
            continue;
        };
        let mut cmd = Command::new(client);
        cmd.arg(interop_dir().join(file))
            .arg(d.endpoint())
            .arg(&src);
        let out = run_client(cmd, what);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"status=200"), "{what}: {out}");
        assert!(lines.contains(&"header=file-hook"), "{what}: {out}");
        assert!(
            lines.contains(&r#"body={"url": "/processed/report.pdf"}"#),
            "{what}: {out}"
        );
        let url = lines.last().unwrap_or_else(|| panic!("{what}: no output"));
        let id = url.trim_end_matches('/').rsplit('/').next().unwrap();
        assert_eq!(d.head(id).upload_offset(), data.len() as u64, "{what}");
        assert_eq!(d.read_data(id), data, "{what}");
    }
}
