//! In-process tests of request handling: a core built in the test, on a tokio-uring
//! runtime of the test's own, requests parsed from bytes and handed to
//! [`handler::handle`] with their body in memory (a [`BodySource`] without a socket:
//! what follows the head is all the body there is), the [`Reply`] and the stores read
//! back. No socket, no daemon: what the connection does (keep-alive, sending, splicing)
//! is tested from the outside in `tests/integration`.

use super::core::Core;
use super::handler;
use super::reply::{CloseCause, Reply};
use super::request::RequestCtx;
use super::{Phase, Shared};
use crate::config::{load, Action};
use crate::hooks::Hooks;
use crate::http::head::parse_head;
use crate::net::{BodySource, Release};
use crate::storage::id::UploadId;
use crate::storage::info::UploadInfo;
use crate::storage::{Acquired, Storage};
use std::ffi::OsString;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A core serving from its own temporary directory.
struct Rig {
    core: Rc<Core>,
    root: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn rig(extra: &[&str]) -> Rig {
    let root = std::env::temp_dir().join(format!("tusring-inprocess-{}", UploadId::random()));
    let (data, info) = (root.join("data"), root.join("info"));
    let mut args: Vec<OsString> = vec![
        "--data-dir".into(),
        data.into(),
        "--info-dir".into(),
        info.into(),
        "--log-level".into(),
        "ERROR".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    let Ok(Action::Run(config)) = load(args, &|_| None, None) else {
        panic!("bad test configuration {extra:?}");
    };
    let storage = Storage::open(&config).expect("storage");
    let hooks = Hooks::start(&config.hooks).expect("hooks");
    let shared = Arc::new(Shared::new(config, storage, hooks));
    Rig {
        core: Rc::new(Core::new(shared, 0)),
        root,
    }
}

/// What handling one request gave.
struct Answer {
    reply: Reply,
    /// The body was read to its end.
    finished: bool,
    /// Body bytes taken out of it.
    received: u64,
}

impl Answer {
    fn status(&self) -> u16 {
        self.reply.resp.status
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.reply.resp.get(name)
    }

    fn id(&self) -> UploadId {
        let loc = self.header("Location").expect("Location");
        loc.rsplit('/')
            .next()
            .unwrap()
            .parse()
            .expect("an upload ID")
    }
}

/// A tus request: `Tus-Resumable`, `Host` and the body's framing added (a
/// `Content-Length`, unless `headers` say `Transfer-Encoding`).
fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    cut_request(method, target, headers, body, body.len())
}

/// A request announcing a `Content-Length` of `declared` and carrying `body`: when it
/// is longer than the body, the body is cut short (nothing more arrives).
fn cut_request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    declared: usize,
) -> Vec<u8> {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\n");
    let chunked = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if !chunked {
        raw.push_str(&format!("Content-Length: {declared}\r\n"));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Handles `raw` (a head and what follows it) on the rig's core.
async fn handle(rig: &Rig, raw: &[u8]) -> Answer {
    let (head, n) = parse_head(raw)
        .expect("a valid head")
        .expect("a whole head");
    let mut inbuf = raw[n..].to_vec();
    let ctx = RequestCtx {
        head: &head,
        peer: "127.0.0.1:40000".parse().unwrap(),
        local: None,
    };
    let mut body = BodySource::new(None, &mut inbuf, &head, Duration::from_secs(5));
    let reply = handler::handle(&rig.core, &ctx, &mut body).await;
    Answer {
        finished: body.finished(),
        received: body.received(),
        reply,
    }
}

const OCTETS: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

async fn create(rig: &Rig, length: u64) -> UploadId {
    let len = length.to_string();
    let a = handle(
        rig,
        &request("POST", "/files", &[("Upload-Length", &len)], b""),
    )
    .await;
    assert_eq!(a.status(), 201, "create");
    a.id()
}

async fn patch(rig: &Rig, id: &UploadId, offset: u64, body: &[u8]) -> Answer {
    let off = offset.to_string();
    let target = format!("/files/{id}");
    let raw = request("PATCH", &target, &[OCTETS, ("Upload-Offset", &off)], body);
    handle(rig, &raw).await
}

/// The record of `id` as stored, and its data file's bytes.
fn stored(rig: &Rig, id: &UploadId) -> (UploadInfo, Vec<u8>) {
    let record = rig.root.join("info").join(format!("{id}.info"));
    let info = UploadInfo::from_json(&std::fs::read(record).expect("record")).expect("json");
    let data = std::fs::read(info.path.as_deref().expect("a path")).expect("data");
    (info, data)
}

#[test]
fn options_and_refusals_before_the_body() {
    tokio_uring::start(async {
        let rig = rig(&[]);
        let a = handle(&rig, b"OPTIONS /files HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(a.status(), 200);
        assert_eq!(a.header("Tus-Resumable"), Some("1.0.0"));
        assert!(a
            .header("Tus-Extension")
            .is_some_and(|e| e.contains("creation")));

        let id = create(&rig, 10).await;
        let target = format!("/files/{id}");
        // 412, 415, 409: refused before the body is read, which the connection sees
        // (the body is not finished) and so closes.
        let no_version =
            format!("PATCH {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
        let cases = [
            (no_version.into_bytes(), 412),
            (
                request("PATCH", &target, &[("Upload-Offset", "0")], b"abc"),
                415,
            ),
            (
                request("PATCH", &target, &[OCTETS, ("Upload-Offset", "5")], b"abc"),
                409,
            ),
        ];
        for (raw, status) in cases {
            let a = handle(&rig, &raw).await;
            assert_eq!(a.status(), status);
            assert_eq!((a.finished, a.received), (false, 0), "{status}");
            assert_eq!(a.reply.closes, None, "{status}");
        }
        let (info, data) = stored(&rig, &id);
        assert_eq!((info.offset, data.len()), (0, 0));
        let unknown = format!("/files/{}", UploadId::random());
        let a = handle(&rig, &request("HEAD", &unknown, &[], b"")).await;
        assert_eq!(a.status(), 404);
    });
}

#[test]
fn creation_with_upload_and_patches_reach_the_stores() {
    tokio_uring::start(async {
        let rig = rig(&[]);
        // The whole body with the head: the short path (record and data at once).
        let raw = request(
            "POST",
            "/files",
            &[OCTETS, ("Upload-Length", "11")],
            b"hello",
        );
        let a = handle(&rig, &raw).await;
        assert_eq!(a.status(), 201);
        assert_eq!(a.header("Upload-Offset"), Some("5"));
        assert!(a.header("Location").unwrap().starts_with("http://t/files/"));
        assert!(a.finished);
        let id = a.id();
        let (info, data) = stored(&rig, &id);
        assert_eq!((info.offset, data.as_slice()), (5, &b"hello"[..]));

        // A chunked PATCH, decoded from memory.
        let target = format!("/files/{id}");
        let chunked = [
            OCTETS,
            ("Upload-Offset", "5"),
            ("Transfer-Encoding", "chunked"),
        ];
        let raw = request(
            "PATCH",
            &target,
            &chunked,
            b"3\r\n wo\r\n2\r\nrl\r\n0\r\n\r\n",
        );
        let a = handle(&rig, &raw).await;
        assert_eq!(a.status(), 204);
        assert_eq!(a.header("Upload-Offset"), Some("10"));
        assert_eq!(a.received, 5);

        let a = patch(&rig, &id, 10, b"d").await;
        assert_eq!(a.status(), 204);
        assert_eq!(a.header("Upload-Offset"), Some("11"));
        let (info, data) = stored(&rig, &id);
        assert_eq!((info.offset, data.as_slice()), (11, &b"hello world"[..]));

        let a = handle(&rig, &request("HEAD", &target, &[], b"")).await;
        assert_eq!(a.status(), 200);
        assert_eq!(a.header("Upload-Offset"), Some("11"));
        assert_eq!(a.header("Upload-Length"), Some("11"));
    });
}

#[test]
fn a_body_cut_short_keeps_its_bytes_and_spoils_the_connection() {
    tokio_uring::start(async {
        let rig = rig(&[]);
        let id = create(&rig, 100).await;
        // Content-Length 10, 4 bytes: then end-of-file (nothing more arrives).
        let target = format!("/files/{id}");
        let raw = cut_request(
            "PATCH",
            &target,
            &[OCTETS, ("Upload-Offset", "0")],
            b"abcd",
            10,
        );
        let a = handle(&rig, &raw).await;
        assert_eq!(a.status(), 400);
        assert_eq!(a.header("Upload-Offset"), Some("4"));
        assert!(!a.finished);
        assert_eq!(a.reply.closes, Some(CloseCause::BodyError));
        let (info, data) = stored(&rig, &id);
        assert_eq!((info.offset, data.as_slice()), (4, &b"abcd"[..]));
    });
}

#[test]
fn a_checksum_mismatch_stores_nothing_and_keeps_the_connection() {
    tokio_uring::start(async {
        let rig = rig(&[]);
        let id = create(&rig, 10).await;
        let target = format!("/files/{id}");
        // sha1 of "abc" is qZk+NkcGgWq6PiVxeFDCbJzQ2J0=; the body is "abd".
        let sum = ("Upload-Checksum", "sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
        let raw = request(
            "PATCH",
            &target,
            &[OCTETS, ("Upload-Offset", "0"), sum],
            b"abd",
        );
        let a = handle(&rig, &raw).await;
        assert_eq!(a.status(), 460);
        assert_eq!(a.header("Upload-Offset"), Some("0"));
        assert!(a.finished);
        assert_eq!(a.reply.closes, None);
        let (info, data) = stored(&rig, &id);
        assert_eq!((info.offset, data.len()), (0, 0));
        let raw = request(
            "PATCH",
            &target,
            &[OCTETS, ("Upload-Offset", "0"), sum],
            b"abc",
        );
        let a = handle(&rig, &raw).await;
        assert_eq!(a.status(), 204);
        assert_eq!(stored(&rig, &id).1, b"abc");
    });
}

#[test]
fn get_answers_with_a_range_of_the_data_and_delete_removes_both() {
    tokio_uring::start(async {
        let rig = rig(&[]);
        let id = create(&rig, 5).await;
        patch(&rig, &id, 0, b"hello").await;
        let target = format!("/files/{id}");
        let raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\nRange: bytes=1-3\r\n\r\n");
        let a = handle(&rig, raw.as_bytes()).await;
        assert_eq!(a.status(), 206);
        assert_eq!(a.header("Content-Range"), Some("bytes 1-3/5"));
        assert_eq!(a.reply.resp.streamed_len, Some(3));
        let download = a.reply.data.as_ref().expect("a download");
        assert_eq!((download.start, download.len), (1, 3));
        assert_eq!(download.reader.size(), 5);

        let (info, _) = stored(&rig, &id);
        let a = handle(&rig, &request("DELETE", &target, &[], b"")).await;
        assert_eq!(a.status(), 204);
        assert!(!rig.root.join("info").join(format!("{id}.info")).exists());
        assert!(!std::path::Path::new(info.path.as_deref().unwrap()).exists());
        let a = handle(&rig, &request("HEAD", &target, &[], b"")).await;
        assert_eq!(a.status(), 404);
    });
}

#[test]
fn a_final_is_assembled_from_its_parts() {
    tokio_uring::start(async {
        let rig = rig(&["--tus-extensions", "creation,concatenation"]);
        let mut parts = Vec::new();
        for bytes in [&b"abc"[..], b"d", b"efg"] {
            let len = bytes.len().to_string();
            let headers = [
                ("Upload-Length", len.as_str()),
                ("Upload-Concat", "partial"),
            ];
            let a = handle(&rig, &request("POST", "/files", &headers, b"")).await;
            assert_eq!(a.status(), 201);
            let id = a.id();
            assert_eq!(patch(&rig, &id, 0, bytes).await.status(), 204);
            parts.push(format!("/files/{id}"));
        }
        let concat = format!("final;{}", parts.join(" "));
        let a = handle(
            &rig,
            &request("POST", "/files", &[("Upload-Concat", &concat)], b""),
        )
        .await;
        assert_eq!(a.status(), 201);
        assert_eq!(a.header("Upload-Offset"), Some("7"));
        let (info, data) = stored(&rig, &a.id());
        assert!(info.is_final);
        assert_eq!((info.offset, data.as_slice()), (7, &b"abcdefg"[..]));
    });
}

#[test]
fn a_newer_patch_takes_the_upload_over_and_an_unyielding_holder_gets_423() {
    tokio_uring::start(async {
        let rig = rig(&[]);
        let id = create(&rig, 10).await;
        let locker = rig.core.stores.locker.clone();

        // A holder that can be asked to let go, and lets go when asked.
        let release = Release::new(None);
        let Ok(Acquired::Lock(held, false)) = locker.lock(id, Some(release.clone())).await else {
            panic!("the upload was free");
        };
        let asked = release.clone();
        let holder = tokio_uring::spawn(async move {
            while !asked.requested() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            drop(held);
        });
        let a = patch(&rig, &id, 0, b"abc").await;
        assert_eq!(a.status(), 204, "took over");
        assert!(release.requested());
        holder.await.unwrap();

        // A holder that cannot be asked (a DELETE, an assembly): 423 after the wait.
        let Ok(Acquired::Lock(_held, _)) = locker.lock(id, None).await else {
            panic!("the upload was free");
        };
        let a = patch(&rig, &id, 3, b"def").await;
        assert_eq!(a.status(), 423);
        assert_eq!(stored(&rig, &id).1, b"abc");
    });
}

#[test]
fn draining_turns_a_cut_body_into_503() {
    tokio_uring::start(async {
        let rig = rig(&[]);
        let id = create(&rig, 100).await;
        rig.core.phase.set(Phase::Draining);
        let target = format!("/files/{id}");
        let raw = cut_request(
            "PATCH",
            &target,
            &[OCTETS, ("Upload-Offset", "0")],
            b"ab",
            10,
        );
        let a = handle(&rig, &raw).await;
        assert_eq!(a.status(), 503);
        assert_eq!(a.header("Upload-Offset"), Some("2"));
    });
}
