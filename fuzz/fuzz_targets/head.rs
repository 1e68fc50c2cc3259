//! `http::head::parse_head` on arbitrary bytes.
//!
//! Input layout (inputs shorter than 4 bytes are parsed as they are):
//!
//! * byte 0: where to split the stream for the prefix check (scaled to its length);
//! * bytes 1-2: a repeat count R (u16, little endian) and byte 3 a position P: the byte
//!   at P of the rest is repeated R more times, so the fuzzer reaches the 8 KiB URI and
//!   64 KiB head limits without needing 64 KiB inputs;
//! * the rest: the bytes received on the connection.
//!
//! Invariants:
//! * never panics;
//! * `Ok(Some((head, n)))`: `n <= input.len()`, `n <= MAX_HEAD_BYTES`, the target is at
//!   most `MAX_URI_BYTES`, at most `MAX_HEADERS` fields, and parsing `input[..n]` alone
//!   gives the same head and `n` (nothing after the head is looked at);
//! * a prefix of the stream gives `Ok(None)` or exactly the whole stream's answer (the
//!   outcome does not depend on how the bytes were split across reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusring::http::head::{parse_head, BodyKind};
use tusring::limits::{MAX_HEADERS, MAX_HEAD_BYTES, MAX_URI_BYTES};

fuzz_target!(|data: &[u8]| {
    let (split, stream) = decode_input(data);
    check(&stream, split);
});

/// The split selector and the (possibly stretched) stream.
fn decode_input(data: &[u8]) -> (u8, Vec<u8>) {
    let [selector, r0, r1, pos, rest @ ..] = data else {
        return (data.first().copied().unwrap_or(0), data.to_vec());
    };
    let repeat = usize::from(u16::from_le_bytes([*r0, *r1]));
    let mut stream = Vec::with_capacity(rest.len() + repeat);
    match rest.len() {
        0 => {}
        len => {
            let p = usize::from(*pos) % len;
            stream.extend_from_slice(&rest[..=p]);
            stream.resize(stream.len() + repeat, rest[p]);
            stream.extend_from_slice(&rest[p + 1..]);
        }
    }
    (*selector, stream)
}

fn check(stream: &[u8], selector: u8) {
    let whole = parse_head(stream);

    if let Ok(Some((head, n))) = &whole {
        let n = *n;
        assert!(n <= stream.len(), "n {n} past the input ({})", stream.len());
        assert!(n <= MAX_HEAD_BYTES, "head of {n} bytes accepted");
        assert!(
            head.target.len() <= MAX_URI_BYTES,
            "target too long accepted"
        );
        assert!(
            head.headers.len() <= MAX_HEADERS,
            "too many fields accepted"
        );
        assert!(
            head.headers
                .iter()
                .all(|(name, _)| !name.bytes().any(|b| b.is_ascii_uppercase())),
            "field names are lower-cased"
        );
        if head.body == BodyKind::Chunked {
            assert_eq!(head.version, tusring::http::head::Version::Http11);
        }
        match parse_head(&stream[..n]) {
            Ok(Some((again, m))) => {
                assert_eq!(m, n, "the head alone parses to another length");
                assert_eq!(&again, head, "the head alone parses differently");
            }
            other => panic!("the head alone ({n} bytes) gives {other:?}"),
        }
    }

    // A prefix is what an earlier read would have seen.
    let cut = usize::from(selector) * (stream.len() + 1) / 256;
    let prefix = parse_head(&stream[..cut]);
    match (&prefix, &whole) {
        (Ok(None), _) => {}
        (p, w) if p == w => {}
        (p, w) => panic!("prefix of {cut} bytes gives {p:?}, the whole stream {w:?}"),
    }
    // The empty buffer and every prefix of a complete head are merely incomplete.
    if let Ok(Some((_, n))) = &whole {
        if cut < *n {
            assert_eq!(prefix, Ok(None), "prefix {cut} of a {n}-byte head");
        }
    }
}
