//! `http::body::ChunkedDecoder` fed the stream in pieces whose sizes come from the input.
//!
//! Input layout: byte 0 is a count K (mod 16), bytes 1..=K are piece sizes (0-255; a 0
//! feeds an empty slice), and the rest is the byte stream after the request head. The
//! sizes are used in turn, cycling, until the stream is used up; with K = 0 the stream
//! is delivered whole.
//!
//! The driver acts like the connection loop: it keeps the bytes the decoder did not
//! consume and appends the next piece to them.
//!
//! Invariants:
//! * never panics;
//! * every answer is well formed: `consumed <= input.len()`; a `Data` range is non-empty,
//!   inside the input, and ends at `consumed`; `NeedMore` consumes everything; after
//!   `Done` every call answers `(0, Done)`; after an error every call repeats it;
//! * decoding in pieces gives the same data, trailers, bytes consumed, end state and
//!   error as decoding the whole stream at once, and as feeding it one byte at a time
//!   (bytes consumed are compared only when there was no error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusring::http::body::{BodyError, ChunkedDecoder, Step};
use tusring::limits::MAX_TRAILER_BYTES;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
    consumed: usize,
    done: bool,
    error: Option<BodyError>,
    /// Bytes after the body (the next request's), when done.
    leftover: Vec<u8>,
}

fuzz_target!(|input: &[u8]| {
    let Some((&k, rest)) = input.split_first() else {
        return;
    };
    let k = usize::from(k % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(k);
    let sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s)).collect();

    let whole = run(stream, &[]);
    let pieces = run(stream, &sizes);
    assert_eq!(
        pieces, whole,
        "pieces {sizes:?} differ from the whole stream"
    );
    if stream.len() <= 4096 {
        let bytes = run(stream, &[1]);
        assert_eq!(
            bytes, whole,
            "one byte at a time differs from the whole stream"
        );
    }
    if whole.done {
        assert_eq!(whole.error, None);
        assert_eq!(whole.consumed + whole.leftover.len(), stream.len());
    }
});

/// Decodes `stream` delivered in pieces of `sizes` (cycled; empty: one piece).
fn run(stream: &[u8], sizes: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut out = Outcome {
        data: Vec::new(),
        trailers: Vec::new(),
        consumed: 0,
        done: false,
        error: None,
        leftover: Vec::new(),
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut from = 0;
    let mut turn = 0;
    // Zero-sized pieces are allowed, but a cycle of only zeros would never end.
    let progress = sizes.iter().any(|&s| s > 0);
    'feed: loop {
        let size = if sizes.is_empty() || !progress {
            stream.len() - from
        } else {
            let s = sizes[turn % sizes.len()];
            turn += 1;
            s.min(stream.len() - from)
        };
        pending.extend_from_slice(&stream[from..from + size]);
        from += size;
        loop {
            let result = decoder.decode(&pending);
            let (used, step) = match result {
                Ok(v) => v,
                Err(e) => {
                    out.error = Some(e);
                    // Errors are sticky, whatever comes next.
                    assert_eq!(decoder.decode(b"0\r\n\r\n"), Err(e));
                    assert_eq!(decoder.decode(b""), Err(e));
                    assert!(!decoder.is_done());
                    break 'feed;
                }
            };
            assert!(
                used <= pending.len(),
                "consumed {used} of {}",
                pending.len()
            );
            match step {
                Step::Data { start, end } => {
                    assert!(start < end, "empty data range {start}..{end}");
                    assert_eq!(end, used, "a data range must end at consumed");
                    assert!(end <= pending.len());
                    out.data.extend_from_slice(&pending[start..end]);
                }
                Step::NeedMore => {
                    assert_eq!(used, pending.len(), "NeedMore must consume everything");
                    assert!(!decoder.is_done());
                }
                Step::Done => assert!(decoder.is_done()),
            }
            out.consumed += used;
            pending.drain(..used);
            match step {
                Step::Data { .. } => continue,
                Step::NeedMore => break,
                Step::Done => {
                    out.done = true;
                    assert_eq!(decoder.decode(&pending), Ok((0, Step::Done)));
                    assert_eq!(decoder.decode(b"5\r\nhello"), Ok((0, Step::Done)));
                    pending.extend_from_slice(&stream[from..]);
                    out.leftover = std::mem::take(&mut pending);
                    break 'feed;
                }
            }
        }
        if from == stream.len() {
            break;
        }
    }
    out.trailers = decoder.trailers().to_vec();
    let trailer_bytes: usize = out.trailers.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(
        trailer_bytes <= MAX_TRAILER_BYTES,
        "trailers past the limit kept"
    );
    for (name, _) in &out.trailers {
        assert!(!name.is_empty() && !name.bytes().any(|b| b.is_ascii_uppercase()));
    }
    if out.error.is_some() {
        // How much an error call consumed is not reported; only what came before counts,
        // and that depends on the split.
        out.consumed = 0;
    }
    out
}
