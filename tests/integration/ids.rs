//! An upload ID a pre-create hook chooses (`ChangeFileInfo.ID`, `--hooks-answers`), end
//! to end through the real binary: a FastAPI receiver (`tests/interop/answers_app.py`)
//! and a file hook choosing it; the Location, record, HEAD, data file and later hook
//! payloads showing it; 400 for an ID that is not valid and 409 for one in use, also
//! when two creations race for it, with nothing created; a final and its parts; Redis
//! records; a restart and the expiry sweep; and tus-js-client and tuspy resuming an
//! interrupted upload at the chosen URL.

use crate::answers::{fetch_seen, metadata, script, Uvicorn};
use crate::harness::*;
use crate::interop::{interop_dir, missing, node, python, run_client};
use crate::redis::{record, redis_node};
use crate::redisd::Redis;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// POST asking the answers app to choose `id` for an upload of `len` bytes.
fn choose(d: &Daemon, id: &str, len: u64) -> Response {
    let meta = metadata(&[("answer", "chooseid"), ("id", id), ("filename", "f.bin")]);
    let len = len.to_string();
    d.post(&[
        ("Upload-Length", len.as_str()),
        ("Upload-Metadata", meta.as_str()),
    ])
}

/// Asserts `r` is a 201 whose Location names `id`.
fn created_as(r: &Response, id: &str) {
    assert_eq!(r.status, 201, "{r:?}");
    let loc = r.header("Location").unwrap_or_default();
    assert!(loc.ends_with(&format!("/files/{id}")), "{loc}");
    assert_eq!(location_id(r), id);
}

/// Asserts `r` refused the creation with `status` and a message containing `says`.
fn refused(r: &Response, status: u16, says: &str) {
    assert_eq!(r.status, status, "{r:?}");
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains(says), "{body}");
    assert!(r.header("Location").is_none(), "{r:?}");
}

/// The IDs a hook may not choose, with what the 400 says.
fn bad_ids() -> Vec<String> {
    vec![
        "../x".into(),
        "a/b".into(),
        "x.info".into(),
        "x.chk".into(),
        "x.assembling".into(),
        ".hidden".into(),
        "k".repeat(129),
    ]
}

/// A file hook that answers every pre-create with the upload's `filename` as its ID
/// (after `pause` seconds, so that creations overlap).
fn naming_hook(tmp: &TempDir, pause: &str) -> PathBuf {
    script(
        &tmp.join("name-hook.sh"),
        &format!(
            r#"[ "$1" = pre-create ] || exit 0
id=$(printf '%s' "$2" | sed -n 's/.*"filename":"\([A-Za-z0-9_.~-]*\)".*/\1/p')
sleep {pause}
printf '{{"ChangeFileInfo": {{"ID": "%s"}}}}' "$id""#
        ),
    )
}

/// POST with `filename` (the ID the naming hook chooses) and the given extra fields.
fn named(d: &Daemon, filename: &str, extra: &[(&str, &str)]) -> Response {
    let meta = metadata(&[("filename", filename)]);
    let mut h = vec![("Upload-Metadata", meta.as_str())];
    h.extend_from_slice(extra);
    d.post(&h)
}

/// The record (rustus's JSON) of a complete 4-byte upload `id` whose data file is in a
/// subdirectory (as a record rustus wrote under a `--dir-structure` may say), so that
/// nothing sits where a new upload of that ID would put its data: only the record
/// claim can refuse the new one.
fn complete_elsewhere(d: &Daemon, id: &str) -> String {
    let elsewhere = d.data_dir().join("sub").join(id);
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    std::fs::write(&elsewhere, b"kept").unwrap();
    format!(
        "{{\"id\":\"{id}\",\"offset\":4,\"length\":4,\"path\":\"{}\",\"created_at\":1,\
         \"deferred_size\":false,\"is_partial\":false,\"is_final\":false,\"parts\":null,\
         \"storage\":\"file_storage\",\"metadata\":{{}}}}",
        elsewhere.display()
    )
}

#[test]
fn a_fastapi_receiver_chooses_the_upload_id() {
    let Some(app) = Uvicorn::start("a_fastapi_receiver_chooses_the_upload_id", "answers_app")
    else {
        return;
    };
    let tmp = TempDir::new("ids-fastapi");
    let d = Daemon::start(&tmp, &["--hooks-answers", "--hooks-http-urls", &app.url()]);
    let id = "user-42_photo.v1";
    let r = choose(&d, id, 5);
    created_as(&r, id);
    // The record is <id>.info and names it; the data file is <id>; HEAD answers at it.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.info_path(id)).unwrap()).unwrap();
    assert_eq!(info["id"], id, "{info}");
    assert!(d.data_path(id).is_file());
    let head = d.head(id);
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.upload_offset(), 0);
    d.patch(id, 0, b"hel").assert_status(204, "first patch");
    d.patch(id, 3, b"lo").assert_status(204, "last patch");
    assert_eq!(std::fs::read(d.data_path(id)).unwrap(), b"hello");
    assert_eq!(d.offset(id), 5);
    // Every later hook payload names the chosen ID.
    assert!(
        eventually(Duration::from_secs(10), || {
            let seen = fetch_seen(app.port);
            ["post-create", "post-receive", "post-finish"]
                .iter()
                .all(|e| seen.iter().any(|s| s["event"] == *e && s["id"] == id))
        }),
        "{:#?}",
        fetch_seen(app.port)
    );

    // Not a valid ID: 400 saying why; nothing created.
    let files = list_files(tmp.path()).len();
    let bad = bad_ids();
    for bad in &bad {
        refused(
            &choose(&d, bad, 5),
            400,
            "upload ID the pre-create hook chose is not valid",
        );
    }
    assert_eq!(
        list_files(tmp.path()).len(),
        files,
        "a refusal created something"
    );
    assert_eq!(
        metric(&d, "tusring_hook_bad_answers_total"),
        Some(bad.len() as f64)
    );
    // In use: 409; the upload that has it is untouched.
    refused(&choose(&d, id, 7), 409, "already in use");
    assert_eq!(
        list_files(tmp.path()).len(),
        files,
        "a refusal created something"
    );
    assert_eq!(d.read_data(id), b"hello");
    assert_eq!(d.head(id).upload_length(), Some(5));

    // Creation-with-upload: the body lands under the chosen ID.
    let meta = metadata(&[("answer", "chooseid"), ("id", "with-body.1")]);
    let r = d.send(
        &Req::new("POST", "/files/")
            .tus()
            .h("Upload-Length", "3")
            .h("Upload-Metadata", &meta)
            .h("Content-Type", "application/offset+octet-stream")
            .body(b"abc"),
    );
    created_as(&r, "with-body.1");
    assert_eq!(r.upload_offset(), 3);
    assert_eq!(std::fs::read(d.data_path("with-body.1")).unwrap(), b"abc");

    // A final of two parts, all three with chosen IDs; the parts referenced by URL.
    for (part, body) in [("part-a", &b"abc"[..]), ("part-b", b"def")] {
        let meta = metadata(&[("answer", "chooseid"), ("id", part)]);
        let r = d.post(&[
            ("Upload-Length", "3"),
            ("Upload-Concat", "partial"),
            ("Upload-Metadata", meta.as_str()),
        ]);
        created_as(&r, part);
        d.patch(part, 0, body).assert_status(204, part);
    }
    let meta = metadata(&[("answer", "chooseid"), ("id", "joined~1")]);
    let concat = format!("final;{}part-a /files/part-b", d.endpoint());
    let r = d.post(&[
        ("Upload-Concat", concat.as_str()),
        ("Upload-Metadata", meta.as_str()),
    ]);
    created_as(&r, "joined~1");
    assert_eq!(std::fs::read(d.data_path("joined~1")).unwrap(), b"abcdef");
    let head = d.head("joined~1");
    assert_eq!(head.upload_offset(), 6);
    assert_eq!(
        head.header("Upload-Concat"),
        Some("final; /files/part-a /files/part-b")
    );
    // A final may not take an ID in use either.
    let meta = metadata(&[("answer", "chooseid"), ("id", "part-a")]);
    let r = d.post(&[
        ("Upload-Concat", "final;/files/part-a /files/part-b"),
        ("Upload-Metadata", meta.as_str()),
    ]);
    refused(&r, 409, "already in use");
    assert_eq!(d.read_data("part-a"), b"abc");
}

#[test]
fn a_file_hook_chooses_the_id_and_a_race_for_it_is_one_201() {
    let tmp = TempDir::new("ids-file-hook");
    let hook = naming_hook(&tmp, "0.3");
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-answers",
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
        ],
    );
    let r = named(&d, "file-one", &[("Upload-Length", "4")]);
    created_as(&r, "file-one");
    d.patch("file-one", 0, b"abcd").assert_status(204, "patch");
    assert_eq!(d.read_data("file-one"), b"abcd");
    refused(
        &named(&d, "file-one", &[("Upload-Length", "4")]),
        409,
        "already in use",
    );
    refused(
        &named(&d, "x.chk", &[("Upload-Length", "4")]),
        400,
        "is not valid",
    );
    // A draft (IETF resumable uploads) creation takes it the same way: the metadata's
    // filename comes from Content-Disposition.
    let draft = |name: &str| {
        d.send(
            &Req::new("POST", "/files/")
                .h("Upload-Draft-Interop-Version", "8")
                .h("Upload-Complete", "?1")
                .h(
                    "Content-Disposition",
                    &format!("attachment; filename=\"{name}\""),
                )
                .body(b"draft"),
        )
    };
    let r = draft("draft-1");
    created_as(&r, "draft-1");
    assert_eq!(d.read_data("draft-1"), b"draft");
    assert_eq!(draft("draft-1").status, 409);
    assert_eq!(draft("draft.info").status, 400);
    assert_eq!(d.read_data("draft-1"), b"draft");

    // Eight creations at once, all answered with the same ID: one 201, seven 409, and
    // one upload of that ID on disk. Five rounds.
    for round in 0..5 {
        let id = format!("race-{round}");
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let all: Vec<_> = (0..8)
                .map(|_| s.spawn(|| named(&d, &id, &[("Upload-Length", "2")]).status))
                .collect();
            all.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = statuses.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [201, 409, 409, 409, 409, 409, 409, 409], "{id}");
        assert!(d.data_path(&id).is_file());
        assert_eq!(d.offset(&id), 0);
        d.patch(&id, 0, b"ok").assert_status(204, &id);
    }

    // The claim itself is atomic, not only the lock: a record that names a data file
    // elsewhere (as rustus may write one) keeps its ID when no lock is held on it and no
    // file sits where the new upload's data would go.
    let rec = complete_elsewhere(&d, "taken-1");
    std::fs::write(d.info_path("taken-1"), &rec).unwrap();
    refused(
        &named(&d, "taken-1", &[("Upload-Length", "4")]),
        409,
        "already in use",
    );
    assert!(
        !d.data_path("taken-1").exists(),
        "the refused creation left its data file"
    );
    assert_eq!(
        std::fs::read_to_string(d.info_path("taken-1")).unwrap(),
        rec
    );
    assert_eq!(d.offset("taken-1"), 4);
}

#[test]
fn chosen_ids_survive_a_restart_and_expire() {
    let tmp = TempDir::new("ids-restart");
    let hook = naming_hook(&tmp, "0");
    let mut d = Daemon::start(
        &tmp,
        &[
            "--hooks-answers",
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
            "--tus-extensions",
            "creation,creation-with-upload,termination,concatenation,concatenation-unfinished",
        ],
    );
    created_as(&named(&d, "half-1", &[("Upload-Length", "6")]), "half-1");
    d.patch("half-1", 0, b"abc").assert_status(204, "half");
    // A final waiting for parts with chosen IDs, itself with one.
    for part in ["wp-a", "wp-b"] {
        let r = named(
            &d,
            part,
            &[("Upload-Length", "2"), ("Upload-Concat", "partial")],
        );
        created_as(&r, part);
    }
    let r = named(
        &d,
        "wf-1",
        &[("Upload-Concat", "final;/files/wp-a /files/wp-b")],
    );
    created_as(&r, "wf-1");
    assert!(d.head("wf-1").header("Upload-Offset").is_none(), "waiting");

    d.restart();
    // The records are found by their chosen IDs; the waiting final is assembled once
    // its parts complete (the index rebuilt from the records).
    assert_eq!(d.offset("half-1"), 3);
    d.patch("half-1", 3, b"def").assert_status(204, "resumed");
    assert_eq!(d.read_data("half-1"), b"abcdef");
    d.patch("wp-a", 0, b"12").assert_status(204, "part a");
    d.patch("wp-b", 0, b"34").assert_status(204, "part b");
    assert!(
        eventually(Duration::from_secs(10), || d
            .head("wf-1")
            .header("Upload-Offset")
            == Some("4")),
        "{:?}",
        d.head("wf-1")
    );
    assert_eq!(d.read_data("wf-1"), b"1234");

    // The expiry sweep removes an expired upload of a chosen ID, record and data.
    let tmp2 = TempDir::new("ids-expiry");
    let hook = naming_hook(&tmp2, "0");
    let e = Daemon::start(
        &tmp2,
        &[
            "--hooks-answers",
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
            "--tus-extensions",
            "creation,termination,expiration",
            "--expiration-time",
            "2",
            "--expiration-sweep-interval",
            "0.3",
        ],
    );
    created_as(&named(&e, "old-1", &[("Upload-Length", "10")]), "old-1");
    assert!(e.info_path("old-1").is_file() && e.data_path("old-1").is_file());
    // The sweep removes the record, then the data.
    assert!(
        eventually(Duration::from_secs(10), || !e.info_path("old-1").exists()
            && !e.data_path("old-1").exists()),
        "the expired upload was not swept"
    );
    assert_eq!(e.head("old-1").status, 404);
}

#[test]
fn redis_records_take_a_chosen_id() {
    let tmp = TempDir::new("ids-redis");
    let Some(redis) = Redis::start(&tmp) else {
        return;
    };
    let hook = naming_hook(&tmp, "0");
    let d = redis_node(
        &tmp,
        &redis,
        &[
            "--hooks-answers",
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
            "--tus-extensions",
            "creation,termination,expiration",
            "--expiration-time",
            "3",
            "--expiration-sweep-interval",
            "0.3",
        ],
    );
    created_as(&named(&d, "r-key.1", &[("Upload-Length", "3")]), "r-key.1");
    assert_eq!(record(&redis, "r-key.1")["id"], "r-key.1");
    d.patch("r-key.1", 0, b"xyz").assert_status(204, "patch");
    assert_eq!(d.read_data("r-key.1"), b"xyz");
    assert_eq!(record(&redis, "r-key.1")["offset"], 3);
    refused(
        &named(&d, "r-key.1", &[("Upload-Length", "3")]),
        409,
        "already in use",
    );
    // SET NX: a record whose data lies elsewhere keeps its key; nothing is left behind.
    let rec = complete_elsewhere(&d, "r-taken");
    redis.set("r-taken", rec.as_bytes());
    refused(
        &named(&d, "r-taken", &[("Upload-Length", "4")]),
        409,
        "already in use",
    );
    assert!(!d.data_path("r-taken").exists());
    assert_eq!(redis.get("r-taken").unwrap(), rec.as_bytes());
    // The sweep's SCAN finds a chosen ID's record (the finished one above stays).
    created_as(&named(&d, "r-old", &[("Upload-Length", "10")]), "r-old");
    assert!(
        eventually(Duration::from_secs(10), || redis.get("r-old").is_none()
            && !d.data_path("r-old").exists()),
        "the expired record was not swept"
    );
    assert!(redis.get("r-key.1").is_some());
}

/// A 4 MiB source file for a client.
fn source(tmp: &TempDir, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = random_bytes(seed, 4 << 20);
    let path = tmp.join("source.bin");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// A daemon whose pre-create goes to the answers app, and a 4 MiB source file, for a
/// client test (`None`: the app cannot run, the test is skipped).
fn client_rig(test: &str, seed: u64) -> Option<(Uvicorn, TempDir, Daemon, PathBuf, Vec<u8>)> {
    let app = Uvicorn::start(test, "answers_app")?;
    let tmp = TempDir::new(test);
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-answers",
            "--hooks-http-urls",
            &app.url(),
            "--hooks",
            "pre-create",
        ],
    );
    let (file, data) = source(&tmp, seed);
    Some((app, tmp, d, file, data))
}

#[test]
fn tus_js_client_resumes_at_the_chosen_url() {
    let Some(node) = node() else {
        missing("node and tus-js-client");
        return;
    };
    let Some((_app, _tmp, d, file, data)) =
        client_rig("tus_js_client_resumes_at_the_chosen_url", 71)
    else {
        return;
    };
    let id = "js_upload-71";
    let mut cmd = Command::new(node);
    cmd.arg(interop_dir().join("tusjs_resume.mjs"))
        .arg(d.endpoint())
        .arg(&file)
        .arg((1 << 20).to_string())
        .arg("answer=chooseid")
        .arg(format!("id={id}"));
    let out = run_client(cmd, "tus-js-client, a chosen ID, interrupted");
    let lines: Vec<&str> = out.lines().collect();
    let url = format!("{}{id}", d.endpoint());
    assert_eq!(lines.last().copied(), Some(url.as_str()), "{out}");
    // After the abort, the client asks the chosen URL for its offset, and every PATCH
    // goes to it.
    let at = lines
        .iter()
        .position(|l| l.starts_with("aborting"))
        .unwrap_or_else(|| panic!("never aborted: {out}"));
    assert_eq!(
        lines.get(at + 1).copied(),
        Some(format!("HEAD {url}").as_str()),
        "{out}"
    );
    let patches: Vec<&&str> = lines.iter().filter(|l| l.starts_with("PATCH")).collect();
    assert!(patches.len() >= 2, "{out}");
    assert!(
        patches.iter().all(|l| **l == format!("PATCH {url}")),
        "{out}"
    );
    assert_eq!(d.offset(id), data.len() as u64);
    assert!(d.read_data(id) == data, "the data is not whole");
}

#[test]
fn tuspy_resumes_at_the_chosen_url() {
    let Some(py) = python() else {
        missing("tuspy (Python package `tuspy`)");
        return;
    };
    let Some((_app, tmp, d, file, data)) = client_rig("tuspy_resumes_at_the_chosen_url", 72) else {
        return;
    };
    let id = "py.upload-72";
    let mut cmd = Command::new(py);
    cmd.arg(interop_dir().join("tuspy_resume.py"))
        .arg(d.endpoint())
        .arg(&file)
        .arg((1 << 20).to_string())
        .arg(tmp.join("tuspy-urls.json"))
        .arg("answer=chooseid")
        .arg(format!("id={id}"));
    let out = run_client(cmd, "tuspy, a chosen ID, interrupted");
    let url = format!("{}{id}", d.endpoint());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last().copied(), Some(url.as_str()), "{out}");
    let half = data.len() / 2;
    assert!(
        out.contains(&format!("created {url} offset={half}")),
        "{out}"
    );
    // The second uploader found the chosen URL in tuspy's storage and its offset by HEAD.
    assert!(
        out.contains(&format!("resumed {url} offset={half}")),
        "{out}"
    );
    assert_eq!(d.offset(id), data.len() as u64);
    assert!(d.read_data(id) == data, "the data is not whole");
}

/// With `--force-fsync` a record takes the one-operation-at-a-time path, not the chain,
/// so the claim's no-replace rename runs on its thread off the core: the chosen ID is
/// taken, a second claim of it is 409 (also where only the record is there to refuse
/// it), and the upload is served whole.
#[test]
fn with_force_fsync_the_claim_off_the_chain_holds() {
    let tmp = TempDir::new("ids-force-fsync");
    let hook = naming_hook(&tmp, "0");
    let d = Daemon::start(
        &tmp,
        &[
            "--force-fsync",
            "--hooks-answers",
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
        ],
    );
    let r = named(&d, "fsynced", &[("Upload-Length", "4")]);
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.header("Location").unwrap().ends_with("/fsynced"), "{r:?}");
    refused(
        &named(&d, "fsynced", &[("Upload-Length", "4")]),
        409,
        "already in use",
    );
    // Only the record stands where the new upload's record would go.
    let rec = complete_elsewhere(&d, "taken-f");
    std::fs::write(d.info_path("taken-f"), &rec).unwrap();
    refused(
        &named(&d, "taken-f", &[("Upload-Length", "4")]),
        409,
        "already in use",
    );
    d.patch("fsynced", 0, b"abcd").assert_status(204, "patch");
    assert_eq!(d.read_data("fsynced"), b"abcd");
    assert_eq!(
        std::fs::read_to_string(d.info_path("taken-f")).unwrap(),
        rec
    );
    assert!(
        !d.data_path("taken-f").exists(),
        "the refused creation's data is removed"
    );
}
