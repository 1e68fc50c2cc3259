//! The chunked transfer coding (RFC 9112 §7.1) as a pure, push-style decoder.
//!
//! [`ChunkedDecoder::decode`] is fed whatever bytes have arrived, split anywhere,
//! and answers with the decoded data as ranges of its input (zero-copy), a request
//! for more bytes, or the end of the body. All state that spans calls (where in the
//! grammar it is, a chunk size being read, a partial trailer line) lives in the
//! decoder, so callers never have to keep unconsumed bytes around except after
//! [`Step::Done`], when the rest of the input belongs to the next request.
//!
//! The decoder is strict: lines end in CRLF (a bare LF is an error), the CRLF after
//! each chunk's data and the blank line ending the trailer section are checked,
//! and chunk extensions are skipped but validated byte by byte. Leniency in chunk
//! framing is a request-smuggling vector.

use std::fmt;

use crate::limits::{MAX_CHUNK_LINE_BYTES, MAX_TRAILER_BYTES};

/// Why a chunked body was refused. Every variant answers 400 and closes the
/// connection, since the framing of anything that follows is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A chunk-size line does not start with a hex digit, or has stray bytes after
    /// the size.
    BadChunkSize,
    /// A chunk size does not fit in a `u64`.
    ChunkTooLarge,
    /// A chunk-size line (size, extensions, CRLF) is longer than
    /// [`MAX_CHUNK_LINE_BYTES`].
    ChunkLineTooLong,
    /// The trailer section is longer than [`MAX_TRAILER_BYTES`].
    TrailersTooLarge,
    /// Any other violation: a missing CRLF, a bare LF, a bad extension or trailer.
    Malformed,
}

impl BodyError {
    /// The response status; always 400.
    pub fn status(self) -> u16 {
        400
    }

    /// One short human-readable line; not API, may change.
    pub fn reason(self) -> &'static str {
        match self {
            BodyError::BadChunkSize => "invalid chunk size",
            BodyError::ChunkTooLarge => "chunk size too large",
            BodyError::ChunkLineTooLong => "chunk size line too long",
            BodyError::TrailersTooLarge => "trailer section too large",
            BodyError::Malformed => "malformed chunked body",
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for BodyError {}

/// What [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `input[start..end]` is body data (decoded); the caller writes it out.
    /// Never empty, and `end` equals the `consumed` returned with it.
    Data {
        /// First data byte, as an index into the input.
        start: usize,
        /// One past the last data byte.
        end: usize,
    },
    /// The decoder consumed everything it could and needs more input.
    /// `consumed` is then the whole input: partial lines are kept inside.
    NeedMore,
    /// The last chunk and the trailer section have been read; the body is complete.
    Done,
}

/// Where the next input byte belongs in the chunked grammar:
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Start of a chunk-size line; a hex digit must come first.
    SizeStart,
    /// Reading the hex digits of the chunk size.
    Size {
        /// The size so far.
        size: u64,
    },
    /// Whitespace after the size; only more whitespace or `;` may follow (BWS is
    /// only allowed before an extension).
    SizeWs {
        /// The chunk size.
        size: u64,
    },
    /// Inside the chunk extensions, outside a quoted-string.
    Ext {
        /// The chunk size.
        size: u64,
    },
    /// Inside a quoted-string extension value.
    ExtQuoted {
        /// The chunk size.
        size: u64,
    },
    /// Right after a backslash inside a quoted-string.
    ExtEscape {
        /// The chunk size.
        size: u64,
    },
    /// The CR ending the chunk-size line was seen; LF must follow.
    SizeLf {
        /// The chunk size; 0 means the last chunk.
        size: u64,
    },
    /// Reading chunk data.
    Data {
        /// Data bytes still to come. INVARIANT: never 0.
        remaining: u64,
    },
    /// The chunk data ended; CR must follow.
    DataCr,
    /// The chunk data and a CR ended; LF must follow.
    DataLf,
    /// After the last chunk: trailer field lines, until an empty line.
    Trailers,
    /// The body is complete; nothing more is consumed.
    Done,
    /// An error was returned; every later call returns it again.
    Failed {
        /// The error first returned.
        error: BodyError,
    },
}

/// Decodes one chunked request body. One decoder per body; see the module docs.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    /// Where the next byte belongs.
    state: State,
    /// Bytes of the current chunk-size line consumed so far, CRLF included.
    /// INVARIANT: at most [`MAX_CHUNK_LINE_BYTES`]; reset at each new line.
    line_len: usize,
    /// The trailer line being read, carried across calls until its LF arrives.
    /// INVARIANT: its length is included in `trailer_len`.
    partial_trailer: Vec<u8>,
    /// Bytes of the trailer section consumed so far, the final CRLF included.
    /// INVARIANT: at most [`MAX_TRAILER_BYTES`].
    trailer_len: usize,
    /// Trailer fields read so far: lower-cased names, OWS-trimmed values, in order.
    trailers: Vec<(String, Vec<u8>)>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder positioned before the first chunk-size line.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            line_len: 0,
            partial_trailer: Vec::new(),
            trailer_len: 0,
            trailers: Vec::new(),
        }
    }

    /// Feeds `input`. Returns (consumed, step). `consumed` counts bytes of `input` used
    /// (including the data range when Step::Data). The caller calls again with
    /// `&input[consumed..]` (or with more bytes appended after NeedMore).
    ///
    /// After [`Step::Done`] every call returns `(0, Step::Done)`; the bytes after
    /// the body are the next request's. After an error, every call returns the
    /// same error.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Step), BodyError> {
        if let State::Failed { error } = self.state {
            return Err(error);
        }
        let result = self.decode_inner(input);
        if let Err(error) = result {
            self.state = State::Failed { error };
            self.partial_trailer = Vec::new();
        }
        result
    }

    /// Whether the whole body, trailers included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Trailer fields collected after the last chunk (lower-case names), e.g. for `Upload-Checksum`.
    pub fn trailers(&self) -> &[(String, Vec<u8>)] {
        &self.trailers
    }

    /// [`ChunkedDecoder::decode`] without the error latch.
    fn decode_inner(&mut self, input: &[u8]) -> Result<(usize, Step), BodyError> {
        // INVARIANT: pos <= input.len().
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            match self.state {
                State::Done => return Ok((pos, Step::Done)),
                State::Failed { error } => return Err(error),
                State::Data { remaining } => {
                    if rest.is_empty() {
                        return Ok((pos, Step::NeedMore));
                    }
                    let take = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    // take <= remaining, so this cannot underflow.
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining: left }
                    };
                    let end = pos + take;
                    return Ok((end, Step::Data { start: pos, end }));
                }
                State::Trailers => {
                    let (used, done) = self.read_trailers(rest)?;
                    pos += used;
                    if !done {
                        return Ok((pos, Step::NeedMore));
                    }
                    self.state = State::Done;
                }
                _ => {
                    let Some(&byte) = rest.first() else {
                        return Ok((pos, Step::NeedMore));
                    };
                    pos += 1;
                    self.state = self.line_byte(byte)?;
                }
            }
        }
    }

    /// Advances over one byte of a chunk-size line or of the CRLF after data.
    fn line_byte(&mut self, byte: u8) -> Result<State, BodyError> {
        let state = self.state;
        if matches!(state, State::DataCr | State::DataLf) {
            return match (state, byte) {
                // RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF;
                // the CRLF after the data is checked, not assumed.
                (State::DataCr, b'\r') => Ok(State::DataLf),
                (State::DataLf, b'\n') => {
                    self.line_len = 0;
                    Ok(State::SizeStart)
                }
                _ => Err(BodyError::Malformed),
            };
        }

        // The chunk-size line is bounded, extensions included (hyper bounds its
        // extensions the same way), so a peer cannot stream an endless line.
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE_BYTES {
            return Err(BodyError::ChunkLineTooLong);
        }

        match state {
            // RFC 9112 §7.1: chunk-size = 1*HEXDIG
            State::SizeStart => match hex_value(byte) {
                Some(digit) => Ok(State::Size {
                    size: u64::from(digit),
                }),
                None if byte == b'\n' => Err(BodyError::Malformed),
                None => Err(BodyError::BadChunkSize),
            },
            State::Size { size } => match (hex_value(byte), byte) {
                // RFC 9112 §7.1: "The chunk-size field is a string of hex digits";
                // a recipient MUST anticipate large sizes and guard against overflow.
                (Some(digit), _) => size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(digit)))
                    .map(|size| State::Size { size })
                    .ok_or(BodyError::ChunkTooLarge),
                (None, b' ' | b'\t') => Ok(State::SizeWs { size }),
                (None, b';') => Ok(State::Ext { size }),
                (None, b'\r') => Ok(State::SizeLf { size }),
                // RFC 9112 §2.2 permits recognising a bare LF; we do not, to leave no
                // disagreement with a stricter front end.
                (None, b'\n') => Err(BodyError::Malformed),
                (None, _) => Err(BodyError::BadChunkSize),
            },
            // RFC 9112 §7.1.1: chunk-ext = *( BWS ";" ... ); BWS only precedes ";".
            State::SizeWs { size } => match byte {
                b' ' | b'\t' => Ok(State::SizeWs { size }),
                b';' => Ok(State::Ext { size }),
                _ => Err(BodyError::BadChunkSize),
            },
            // RFC 9112 §7.1.1: extensions are skipped ("a recipient MUST ignore
            // unrecognized chunk extensions") but must still be well-formed:
            // names and unquoted values are tokens, separated by BWS, "=" and ";".
            State::Ext { size } => match byte {
                b'\r' => Ok(State::SizeLf { size }),
                b'"' => Ok(State::ExtQuoted { size }),
                b' ' | b'\t' | b';' | b'=' => Ok(State::Ext { size }),
                _ if is_tchar(byte) => Ok(State::Ext { size }),
                _ => Err(BodyError::Malformed),
            },
            // RFC 9110 §5.6.4: qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
            State::ExtQuoted { size } => match byte {
                b'"' => Ok(State::Ext { size }),
                b'\\' => Ok(State::ExtEscape { size }),
                b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF => {
                    Ok(State::ExtQuoted { size })
                }
                _ => Err(BodyError::Malformed),
            },
            // RFC 9110 §5.6.4: quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            State::ExtEscape { size } => match byte {
                b'\t' | b' ' | 0x21..=0x7E | 0x80..=0xFF => Ok(State::ExtQuoted { size }),
                _ => Err(BodyError::Malformed),
            },
            State::SizeLf { size } => match byte {
                // RFC 9112 §7.1: last-chunk = 1*("0") [ chunk-ext ] CRLF, then the
                // trailer section.
                b'\n' if size == 0 => {
                    self.trailer_len = 0;
                    Ok(State::Trailers)
                }
                b'\n' => Ok(State::Data { remaining: size }),
                _ => Err(BodyError::Malformed),
            },
            // Handled by the caller; reaching here would be a bug, reported as bad
            // input rather than a panic.
            State::DataCr
            | State::DataLf
            | State::Data { .. }
            | State::Trailers
            | State::Done
            | State::Failed { .. } => Err(BodyError::Malformed),
        }
    }

    /// Reads trailer lines from `rest`. Returns the bytes consumed and whether the
    /// empty line ending the trailer section was read.
    fn read_trailers(&mut self, rest: &[u8]) -> Result<(usize, bool), BodyError> {
        let mut used = 0;
        loop {
            let avail = rest.get(used..).unwrap_or_default();
            let Some(lf) = memchr::memchr(b'\n', avail) else {
                // No line end yet: keep the partial line, within the limit.
                self.count_trailer_bytes(avail.len())?;
                self.partial_trailer.extend_from_slice(avail);
                return Ok((used + avail.len(), false));
            };
            let piece = avail.get(..=lf).unwrap_or(avail);
            self.count_trailer_bytes(piece.len())?;
            used += piece.len();

            let mut line = std::mem::take(&mut self.partial_trailer);
            line.extend_from_slice(piece);
            let finished = self.trailer_line(&line)?;
            line.clear();
            self.partial_trailer = line;
            if finished {
                return Ok((used, true));
            }
        }
    }

    /// Adds `n` bytes to the trailer section, refusing to exceed the limit.
    fn count_trailer_bytes(&mut self, n: usize) -> Result<(), BodyError> {
        // RFC 9112 §7.1.2 sets no limit; ours is MAX_TRAILER_BYTES (hyper uses the
        // same 16 KiB) so a peer cannot make us buffer an endless trailer.
        match self.trailer_len.checked_add(n) {
            Some(total) if total <= MAX_TRAILER_BYTES => {
                self.trailer_len = total;
                Ok(())
            }
            _ => Err(BodyError::TrailersTooLarge),
        }
    }

    /// Handles one complete trailer line (ending in LF). Returns true for the empty
    /// line that ends the body.
    fn trailer_line(&mut self, line: &[u8]) -> Result<bool, BodyError> {
        // RFC 9112 §7.1: chunked-body = *chunk last-chunk trailer-section CRLF. Every
        // line, the final empty one included, must end in CRLF (httparse issue #149:
        // the CRLF after the zero chunk must be verified, not assumed).
        let Some(content) = line.strip_suffix(b"\r\n") else {
            return Err(BodyError::Malformed);
        };
        if content.is_empty() {
            return Ok(true);
        }
        // RFC 9112 §7.1.2: trailer-section = *( field-line CRLF ), and
        // RFC 9112 §5: field-line = field-name ":" OWS field-value OWS, with no
        // whitespace before the colon and no obsolete line folding.
        let colon = memchr::memchr(b':', content).ok_or(BodyError::Malformed)?;
        let name = content.get(..colon).unwrap_or_default();
        let value = trim_ows(content.get(colon + 1..).unwrap_or_default());
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(BodyError::Malformed);
        }
        // RFC 9110 §5.5: field-vchar = VCHAR / obs-text, with SP / HTAB inside.
        if !value
            .iter()
            .all(|&b| matches!(b, b'\t' | b' '..=0x7E | 0x80..=0xFF))
        {
            return Err(BodyError::Malformed);
        }
        let name = name
            .iter()
            .map(|&b| char::from(b.to_ascii_lowercase()))
            .collect();
        self.trailers.push((name, value.to_vec()));
        Ok(false)
    }
}

/// The value of an ASCII hex digit.
fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 §5.6.2: tchar, the bytes of a token.
pub(crate) fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Strips leading and trailing SP / HTAB (RFC 9110 §5.6.3 OWS).
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What decoding a whole stream produced.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        data: Vec<u8>,
        trailers: Vec<(String, Vec<u8>)>,
        consumed: usize,
        done: bool,
        leftover: Vec<u8>,
    }

    /// Decodes `stream` delivered in pieces cut at `cuts` (ascending offsets),
    /// acting like a connection loop: it keeps unconsumed bytes and appends each
    /// new piece to them.
    fn run(stream: &[u8], cuts: &[usize]) -> Result<Outcome, BodyError> {
        let mut decoder = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut consumed = 0;
        let mut pending: Vec<u8> = Vec::new();
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(stream.len());
        let mut from = 0;
        let mut done = false;
        for &to in &bounds {
            pending.extend_from_slice(&stream[from..to]);
            from = to;
            loop {
                let (used, step) = decoder.decode(&pending)?;
                assert!(used <= pending.len());
                match step {
                    Step::Data { start, end } => {
                        assert!(start < end, "empty data range");
                        assert_eq!(end, used);
                        data.extend_from_slice(&pending[start..end]);
                    }
                    Step::NeedMore => assert_eq!(used, pending.len()),
                    Step::Done => {}
                }
                consumed += used;
                pending.drain(..used);
                match step {
                    Step::Data { .. } => continue,
                    Step::NeedMore => break,
                    Step::Done => {
                        done = true;
                        break;
                    }
                }
            }
            if done {
                break;
            }
        }
        if done {
            assert!(decoder.is_done());
            assert_eq!(decoder.decode(&pending), Ok((0, Step::Done)));
            pending.extend_from_slice(&stream[from..]);
        }
        Ok(Outcome {
            data,
            trailers: decoder.trailers().to_vec(),
            consumed,
            done,
            leftover: pending,
        })
    }

    /// A tiny deterministic PRNG (64-bit LCG), so tests need no `rand`.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as usize
        }
    }

    const NEXT_REQUEST: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

    /// Valid streams, each with the data and trailers it must decode to.
    /// (stream, expected data, expected trailers)
    type Case = (Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn valid_streams() -> Vec<Case> {
        let mut streams = Vec::new();

        streams.push((
            b"5\r\nhello\r\n0\r\n\r\n".to_vec(),
            b"hello".to_vec(),
            vec![],
        ));

        streams.push((b"0\r\n\r\n".to_vec(), Vec::new(), vec![]));

        streams.push((
            b"5;foo=bar;baz\r\nhello\r\n6 ; q=\"a \\\"quoted\\\" ;value\" ; r = s\r\n world\r\n000;last=\"\"\r\nUpload-Checksum: sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=\r\nX-Other: \t v w \r\n\r\n"
                .to_vec(),
            b"hello world".to_vec(),
            vec![
                (
                    "upload-checksum".to_owned(),
                    b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=".to_vec(),
                ),
                ("x-other".to_owned(), b"v w".to_vec()),
            ],
        ));

        // Many chunks of varying sizes, hex in both cases.
        let mut stream = Vec::new();
        let mut data = Vec::new();
        for i in 1..=120usize {
            let size = i % 37 + 1;
            let chunk: Vec<u8> = (0..size).map(|j| (i * 7 + j) as u8).collect();
            if i % 2 == 0 {
                stream.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            } else {
                stream.extend_from_slice(format!("{size:X}\r\n").as_bytes());
            }
            stream.extend_from_slice(&chunk);
            stream.extend_from_slice(b"\r\n");
            data.extend_from_slice(&chunk);
        }
        stream.extend_from_slice(b"0\r\nA: 1\r\nb: 2\r\n\r\n");
        streams.push((
            stream,
            data,
            vec![
                ("a".to_owned(), b"1".to_vec()),
                ("b".to_owned(), b"2".to_vec()),
            ],
        ));

        // Big hex sizes with leading zeros; data containing CRLF and "0\r\n\r\n".
        let big: Vec<u8> = (0..0x1234u32).map(|i| (i % 251) as u8).collect();
        let mut stream = b"00000000000000000000000000001234\r\n".to_vec();
        stream.extend_from_slice(&big);
        stream.extend_from_slice(b"\r\n0000000a;x\r\n0\r\n\r\n\r\n\r\nX\r\n00000\r\n\r\n");
        let mut data = big.clone();
        data.extend_from_slice(b"0\r\n\r\n\r\n\r\nX");
        streams.push((stream, data, vec![]));

        // Data bytes that look like framing, and an empty trailer value.
        streams.push((
            b"3\r\n\r\n\n\r\n1\r\n0\r\n0\r\nEmpty:\r\n\r\n".to_vec(),
            b"\r\n\n0".to_vec(),
            vec![("empty".to_owned(), Vec::new())],
        ));

        streams
    }

    #[test]
    fn whole_streams() {
        for (stream, data, trailers) in valid_streams() {
            let mut input = stream.clone();
            input.extend_from_slice(NEXT_REQUEST);
            let out = run(&input, &[]).unwrap();
            assert_eq!(out.data, data);
            assert_eq!(out.trailers, trailers);
            assert_eq!(out.consumed, stream.len());
            assert!(out.done);
            assert_eq!(out.leftover, NEXT_REQUEST);
        }
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        for (stream, _, _) in valid_streams() {
            let mut input = stream.clone();
            input.extend_from_slice(NEXT_REQUEST);
            let whole = run(&input, &[]).unwrap();
            for cut in 0..=input.len() {
                assert_eq!(run(&input, &[cut]).unwrap(), whole, "cut at {cut}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        for (stream, _, _) in valid_streams() {
            let mut input = stream.clone();
            input.extend_from_slice(NEXT_REQUEST);
            let whole = run(&input, &[]).unwrap();
            let cuts: Vec<usize> = (1..input.len()).collect();
            assert_eq!(run(&input, &cuts).unwrap(), whole);
        }
    }

    #[test]
    fn random_multi_splits() {
        let mut rng = Lcg(0x2545_f491_4f6c_dd1d);
        for (stream, _, _) in valid_streams() {
            let mut input = stream.clone();
            input.extend_from_slice(NEXT_REQUEST);
            let whole = run(&input, &[]).unwrap();
            for _ in 0..300 {
                let mut cuts: Vec<usize> = (0..rng.next() % 12 + 1)
                    .map(|_| rng.next() % (input.len() + 1))
                    .collect();
                cuts.sort_unstable();
                assert_eq!(run(&input, &cuts).unwrap(), whole, "cuts {cuts:?}");
            }
        }
    }

    #[test]
    fn fresh_input_after_need_more() {
        // Callers may hand each read to the decoder on its own (NeedMore consumed
        // everything), with Data ranges indexing that read only.
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(decoder.decode(b"a;e"), Ok((3, Step::NeedMore)));
        assert_eq!(
            decoder.decode(b"xt\r\n0123"),
            Ok((8, Step::Data { start: 4, end: 8 }))
        );
        assert_eq!(decoder.decode(b""), Ok((0, Step::NeedMore)));
        assert_eq!(
            decoder.decode(b"456789"),
            Ok((6, Step::Data { start: 0, end: 6 }))
        );
        assert_eq!(decoder.decode(b"\r"), Ok((1, Step::NeedMore)));
        assert_eq!(decoder.decode(b"\n0\r\nT: v"), Ok((8, Step::NeedMore)));
        assert!(!decoder.is_done());
        assert_eq!(decoder.decode(b"\r\n\r\nNEXT"), Ok((4, Step::Done)));
        assert!(decoder.is_done());
        assert_eq!(decoder.decode(b"NEXT"), Ok((0, Step::Done)));
        assert_eq!(decoder.trailers(), &[("t".to_owned(), b"v".to_vec())]);
    }

    #[test]
    fn huge_chunk_size_is_streamed() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.decode(b"FFFFFFFFFFFFFFFF\r\nabc"),
            Ok((21, Step::Data { start: 18, end: 21 }))
        );
        assert_eq!(
            decoder.decode(b"de"),
            Ok((2, Step::Data { start: 0, end: 2 }))
        );
    }

    /// Asserts that `stream` fails with `expected` however it is split.
    fn assert_fails(stream: &[u8], expected: BodyError) {
        assert_eq!(
            run(stream, &[]),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(stream)
        );
        let cuts: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            run(stream, &cuts),
            Err(expected),
            "1-byte {:?}",
            String::from_utf8_lossy(stream)
        );
        for cut in 0..=stream.len() {
            assert_eq!(run(stream, &[cut]), Err(expected), "cut {cut}");
        }
    }

    #[test]
    fn bad_chunk_sizes() {
        use BodyError::*;
        for (stream, error) in [
            (&b"x\r\n"[..], BadChunkSize),
            (b"5x\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            (b"\r\n", BadChunkSize),
            (b";ext\r\n", BadChunkSize),
            (b" 5\r\n", BadChunkSize),
            (b"5 \r\nhello\r\n0\r\n\r\n", BadChunkSize),
            (b"-5\r\n", BadChunkSize),
            (b"+5\r\n", BadChunkSize),
            (b"0x5\r\n", BadChunkSize),
            (b"5\r\nhello\r\ng\r\n", BadChunkSize),
            (b"10000000000000000\r\n", ChunkTooLarge),
            (b"0000FFFFFFFFFFFFFFFFF\r\n", ChunkTooLarge),
        ] {
            assert_fails(stream, error);
        }
    }

    #[test]
    fn missing_or_bad_crlf() {
        use BodyError::*;
        for stream in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\r\nhello\r\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello!\r\n",
            b"5\rhello\r\n",
            b"0\rX\r\n",
            b"0\r\nX\r\n\r\n",
            b"0\r\n\rX\n",
            b"0\r\n\r\r\n",
            b"0\r\n\n",
            b"0\r\nA: 1\n\r\n",
        ] {
            assert_fails(stream, Malformed);
        }
    }

    #[test]
    fn lf_only_is_refused() {
        assert_fails(b"5\nhello\n0\n\n", BodyError::Malformed);
        assert_fails(b"5\r\nhello\r\n0\n\n", BodyError::Malformed);
        assert_fails(b"\n", BodyError::Malformed);
        assert_fails(b"5;a=b\nhello", BodyError::Malformed);
    }

    #[test]
    fn bad_extensions() {
        for stream in [
            &b"5;a\0\r\nhello\r\n"[..],
            b"5;a=\"x\r\n\"\r\nhello\r\n",
            b"5;a=\"x\x7f\"\r\n",
            b"5;a=\"\\\x01\"\r\n",
            b"5;a@b\r\n",
            b"5;a=b\rc\r\n",
        ] {
            assert_fails(stream, BodyError::Malformed);
        }
    }

    #[test]
    fn over_long_chunk_line() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE_BYTES - 2, b'a');
        line.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        // Exactly at the limit (CRLF included) is fine.
        let out = run(&line, &[]).unwrap();
        assert_eq!(out.data, b"x");

        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE_BYTES - 1, b'a');
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(run(&long, &[]), Err(BodyError::ChunkLineTooLong));

        let mut endless = b"1;".to_vec();
        endless.resize(MAX_CHUNK_LINE_BYTES * 3, b'a');
        assert_fails(
            &endless[..MAX_CHUNK_LINE_BYTES + 1],
            BodyError::ChunkLineTooLong,
        );
        assert_eq!(run(&endless, &[]), Err(BodyError::ChunkLineTooLong));

        // Leading zeros count towards the line too.
        let zeros = vec![b'0'; MAX_CHUNK_LINE_BYTES + 1];
        assert_eq!(run(&zeros, &[]), Err(BodyError::ChunkLineTooLong));
    }

    #[test]
    fn over_long_trailers() {
        // A trailer section of exactly MAX_TRAILER_BYTES (final CRLF included).
        let mut ok = b"0\r\nX: ".to_vec();
        ok.resize(3 + MAX_TRAILER_BYTES - 4, b'v');
        ok.extend_from_slice(b"\r\n\r\n");
        let out = run(&ok, &[]).unwrap();
        assert!(out.done);
        assert_eq!(out.trailers.len(), 1);

        let mut too_big = b"0\r\nX: ".to_vec();
        too_big.resize(3 + MAX_TRAILER_BYTES - 3, b'v');
        too_big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&too_big, &[]), Err(BodyError::TrailersTooLarge));
        assert_eq!(
            run(&too_big, &[10, 100, 5000]),
            Err(BodyError::TrailersTooLarge)
        );

        // Endless partial line, and many small lines.
        let mut endless = b"0\r\nX: ".to_vec();
        endless.resize(MAX_TRAILER_BYTES * 2, b'v');
        assert_eq!(run(&endless, &[]), Err(BodyError::TrailersTooLarge));
        let mut many = b"0\r\n".to_vec();
        while many.len() < MAX_TRAILER_BYTES + 100 {
            many.extend_from_slice(b"A: b\r\n");
        }
        assert_eq!(run(&many, &[]), Err(BodyError::TrailersTooLarge));
    }

    #[test]
    fn bad_trailers() {
        for stream in [
            &b"0\r\nBad Name: v\r\n\r\n"[..],
            b"0\r\nName : v\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nA: 1\r\n folded\r\n\r\n",
            b"0\r\nA: a\0b\r\n\r\n",
            b"0\r\nA: a\rb\r\n\r\n",
            b"0\r\nNoColon\r\n\r\n",
        ] {
            assert_fails(stream, BodyError::Malformed);
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(decoder.decode(b"zz"), Err(BodyError::BadChunkSize));
        assert_eq!(decoder.decode(b"5\r\nhello"), Err(BodyError::BadChunkSize));
        assert!(!decoder.is_done());
        assert_eq!(BodyError::Malformed.status(), 400);
    }

    #[test]
    fn incomplete_stream_needs_more() {
        let stream = b"5\r\nhello\r\n0\r\nA: b\r\n\r\n";
        for end in 0..stream.len() {
            let out = run(&stream[..end], &[]).unwrap();
            assert!(!out.done, "prefix {end}");
            assert_eq!(out.consumed, end);
        }
    }

    #[test]
    fn no_panic_on_arbitrary_bytes() {
        let alphabet = b"0123456789abcdefABCDEFxyz;=\"\\ \t\r\n:\0\xff";
        let mut rng = Lcg(7);
        for _ in 0..3000 {
            let len = rng.next() % 48;
            let soup: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.next() % alphabet.len()])
                .collect();
            let cut = rng.next() % (soup.len() + 1);
            let _ = run(&soup, &[cut]);
        }
    }
}
