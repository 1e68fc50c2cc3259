//! `hooks::answer::parse_answer`: a hook's answer (tusd v2's `HookResponse` JSON) for
//! each of the four events that take one.
//!
//! Input: the first byte chooses the event (its low two bits) and whether the answer is
//! padded past `MAX_HOOK_ANSWER_BYTES` with spaces (bit 2); the rest is the answer.
//! Invariants:
//! * never panics;
//! * an answer longer than the limit is `TooLarge`, whatever it holds; one within it never
//!   is, and a trailing newline changes nothing (but the message of a `Json` error);
//! * whether the bytes are JSON of the right shape does not depend on the event: a
//!   `Json` error (same message) or `TooLarge` for one event is the same for all four;
//! * an accepted answer is one the event honours (`Stop` only for post-receive, kept or
//!   not, `Refuse` never for it, a `ChangeFileInfo` only for pre-create, nothing but no
//!   instruction for a post-receive that goes on) and keeps `HttpAnswer`'s invariants:
//!   a refusal's status is 4xx/5xx, a going-on status 2xx, a body never without a
//!   status nor with 204/205;
//! * its header fields cannot inject: written as a response head with the body's
//!   `Content-Length`, httparse reads back exactly that status, those fields (values
//!   trimmed of blanks) and that length, and the head ends where it was written to end;
//!   no field is one the daemon owns, none twice;
//! * a new upload ID is 1 to `MAX_HOOK_UPLOAD_ID_BYTES` of `A-Z a-z 0-9 - . _ ~`, with
//!   no `..`, not starting with `.`, not ending in a side-file suffix (`.info`, `.tmp`,
//!   `.chk`, `.assembling`); one that is not is `AnswerError::Id`, and only for
//!   pre-create (to another event a `ChangeFileInfo` is not for the event);
//! * new metadata is within `MAX_METADATA_BYTES` as a header and parses back from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusring::hooks::answer::{
    is_reserved_header, parse_answer, Answer, AnswerError, AnswerEvent, HttpAnswer,
};
use tusring::limits::{
    MAX_HOOK_ANSWER_BYTES, MAX_HOOK_ANSWER_HEADERS, MAX_HOOK_ANSWER_HEADER_BYTES,
    MAX_HOOK_UPLOAD_ID_BYTES, MAX_METADATA_BYTES,
};
use tusring::tus::metadata::parse_upload_metadata;

const EVENTS: [AnswerEvent; 4] = [
    AnswerEvent::PreCreate,
    AnswerEvent::PostReceive,
    AnswerEvent::PreFinish,
    AnswerEvent::PreTerminate,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, answer)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(selector & 3)];
    let mut bytes = answer.to_vec();
    if selector & 4 != 0 {
        bytes.resize(MAX_HOOK_ANSWER_BYTES + 1, b' ');
    }

    let got = parse_answer(event, &bytes);
    if bytes.len() > MAX_HOOK_ANSWER_BYTES {
        assert_eq!(got, Err(AnswerError::TooLarge { len: bytes.len() }));
        return;
    }
    assert!(!matches!(got, Err(AnswerError::TooLarge { .. })));
    if bytes.len() < MAX_HOOK_ANSWER_BYTES {
        let mut longer = bytes.clone();
        longer.push(b'\n');
        match (&got, parse_answer(event, &longer)) {
            // Inside an unfinished string the newline is a byte of it: another message.
            (Err(AnswerError::Json(_)), Err(AnswerError::Json(_))) => {}
            (got, again) => assert_eq!(&again, got, "a trailing newline changed it"),
        }
    }
    if let Err(AnswerError::Json(_)) = &got {
        for other in EVENTS {
            assert_eq!(
                parse_answer(other, &bytes),
                got,
                "{other:?} parses it otherwise"
            );
        }
    } else {
        for other in EVENTS {
            assert!(!matches!(
                parse_answer(other, &bytes),
                Err(AnswerError::Json(_))
            ));
        }
    }
    if let Err(AnswerError::Id { .. }) = &got {
        assert_eq!(event, AnswerEvent::PreCreate, "an ID error for {event:?}");
    }
    let Ok(answer) = got else {
        return;
    };

    match &answer {
        Answer::Stop { response: r, .. } => {
            assert_eq!(event, AnswerEvent::PostReceive);
            assert!(matches!(r.status, Some(400..=599)), "{r:?}");
            check_response(r);
        }
        Answer::Refuse(r) => {
            assert_ne!(event, AnswerEvent::PostReceive);
            assert!(matches!(r.status, Some(400..=599)), "{r:?}");
            check_response(r);
        }
        Answer::Proceed { change, response } => {
            if event == AnswerEvent::PostReceive {
                assert!(answer.is_none(), "{answer:?}");
            }
            if event != AnswerEvent::PreCreate {
                assert!(change.is_empty(), "{change:?}");
            }
            assert!(
                response.status.is_none() || matches!(response.status, Some(200..=299)),
                "{response:?}"
            );
            check_response(response);
            if let Some(id) = &change.id {
                check_id(id.as_str());
            }
            if let Some(m) = &change.metadata {
                let header = m.to_header();
                assert!(header.len() <= MAX_METADATA_BYTES);
                assert_eq!(parse_upload_metadata(header.as_bytes()).as_ref(), Ok(m));
            }
        }
    }
});

fn check_id(id: &str) {
    assert!(
        !id.is_empty() && id.len() <= MAX_HOOK_UPLOAD_ID_BYTES,
        "{id:?}"
    );
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')),
        "{id:?}"
    );
    assert!(!id.contains("..") && !id.starts_with('.'), "{id:?}");
    for suffix in [".info", ".tmp", ".chk", ".assembling"] {
        assert!(!id.ends_with(suffix), "{id:?}");
    }
}

/// `r`'s invariants, and that written as a response head it reads back as itself.
fn check_response(r: &HttpAnswer) {
    assert!(r.headers.len() <= MAX_HOOK_ANSWER_HEADERS);
    let bytes: usize = r.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(bytes <= MAX_HOOK_ANSWER_HEADER_BYTES);
    if !r.body.is_empty() {
        assert!(
            r.status.is_some() && !matches!(r.status, Some(204 | 205)),
            "{r:?}"
        );
    }
    let mut lower: Vec<String> = r
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    lower.sort_unstable();
    let before = lower.len();
    lower.dedup();
    assert_eq!(lower.len(), before, "a field twice: {r:?}");
    assert!(
        !r.headers.iter().any(|(n, _)| is_reserved_header(n)),
        "{r:?}"
    );

    let status = r.status.unwrap_or(204);
    let mut head = format!("HTTP/1.1 {status} X\r\n").into_bytes();
    for (name, value) in &r.headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", r.body.len()).as_bytes());
    let end = head.len();
    head.extend_from_slice(r.body.as_bytes());

    let mut fields = [httparse::EMPTY_HEADER; MAX_HOOK_ANSWER_HEADERS + 1];
    let mut parsed = httparse::Response::new(&mut fields);
    let parsed_end = match parsed.parse(&head) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("the head does not parse ({other:?}): {r:?}"),
    };
    assert_eq!(parsed_end, end, "the head ends elsewhere: {r:?}");
    assert_eq!(parsed.code, Some(status));
    assert_eq!(parsed.headers.len(), r.headers.len() + 1);
    for ((name, value), field) in r.headers.iter().zip(parsed.headers.iter()) {
        assert_eq!(field.name, name);
        assert_eq!(field.value, trim_blanks(value.as_bytes()), "{name}");
    }
    let length = parsed.headers.last().unwrap();
    assert!(length.name.eq_ignore_ascii_case("content-length"));
    assert_eq!(length.value, r.body.len().to_string().as_bytes());
}

fn trim_blanks(v: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !blank(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
    &v[start..end]
}
