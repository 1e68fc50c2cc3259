//! The checksum and checksum-trailer extensions (tus 1.0 §checksum), as pure functions:
//! the `Upload-Checksum` parser, the algorithm set, the decision of whether (and how) a
//! request's body is verified, and a streaming digest over the body's buffers.
//!
//! The I/O shell (`server::ingest::Verifier`, with the file store's staging in
//! `storage::file::write`) stages a verified body in an anonymous file, feeds every
//! buffer to [`Digests::update`] as it is written there, and moves the bytes into the
//! upload only after [`Digests::verify`] said they match.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// The `Tus-Checksum-Algorithm` value (rustus's list, in its order).
pub const ALGORITHMS_HEADER: &str = "md5,sha1,sha256,sha512";

/// Longest digest of any supported algorithm (sha512), in bytes.
pub const MAX_DIGEST_BYTES: usize = 64;

/// Standard base64 (`+/`), padding optional: clients differ on it, and the digest length
/// check below catches a truncated value either way.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A supported checksum algorithm. Names are matched exactly: the spec says they are
/// lowercase ASCII, and rustus refuses `SHA1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// Every algorithm, in `Tus-Checksum-Algorithm` order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Sha512,
    ];

    /// The algorithm a name stands for.
    pub fn parse(name: &[u8]) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().as_bytes() == name)
    }

    /// The name in `Upload-Checksum` and `Tus-Checksum-Algorithm`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The digest's length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

/// Why an `Upload-Checksum` (header or trailer) was refused. Every case is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumError {
    /// Not `<algorithm> <base64>`: no space, an empty part, more than one space, or
    /// bytes outside printable ASCII.
    Malformed,
    /// The algorithm is not one of [`ALGORITHMS_HEADER`].
    UnknownAlgorithm,
    /// The digest is not valid base64.
    BadBase64,
    /// The digest's length is not the algorithm's.
    WrongLength,
    /// `Upload-Checksum` came as a header and was also announced as a trailer.
    HeaderAndTrailer,
    /// `Trailer` announced `Upload-Checksum` but the trailer section did not carry it.
    TrailerMissing,
    /// The trailer section carried `Upload-Checksum` more than once.
    TrailerRepeated,
}

impl ChecksumError {
    /// The one-line answer.
    pub fn reason(self) -> &'static str {
        match self {
            ChecksumError::Malformed => "Upload-Checksum must be '<algorithm> <base64 digest>'",
            ChecksumError::UnknownAlgorithm => {
                "Upload-Checksum algorithm is not supported (supported: md5, sha1, sha256, sha512)"
            }
            ChecksumError::BadBase64 => "Upload-Checksum digest is not valid base64",
            ChecksumError::WrongLength => {
                "Upload-Checksum digest length does not match its algorithm"
            }
            ChecksumError::HeaderAndTrailer => {
                "Upload-Checksum sent both as a header and announced as a trailer"
            }
            ChecksumError::TrailerMissing => "The announced Upload-Checksum trailer did not arrive",
            ChecksumError::TrailerRepeated => "Upload-Checksum trailer sent more than once",
        }
    }
}

/// A digest the client expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The algorithm.
    pub alg: Algorithm,
    /// The digest. INVARIANT: `digest.len() == alg.digest_len()`.
    pub digest: Vec<u8>,
}

/// Parses an `Upload-Checksum` value: `<algorithm> SP <base64 digest>`. Whitespace
/// around the value is tolerated (a header value's is stripped anyway); inside it,
/// exactly one space.
pub fn parse_upload_checksum(value: &[u8]) -> Result<Expected, ChecksumError> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(ChecksumError::Malformed);
    }
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return Err(ChecksumError::Malformed);
    };
    let (name, b64) = (&value[..space], &value[space + 1..]);
    if name.is_empty() || b64.is_empty() || b64.contains(&b' ') {
        return Err(ChecksumError::Malformed);
    }
    let alg = Algorithm::parse(name).ok_or(ChecksumError::UnknownAlgorithm)?;
    // A valid digest is at most 88 base64 characters; do not decode a huge value.
    if b64.len() > MAX_DIGEST_BYTES.div_ceil(3) * 4 {
        return Err(ChecksumError::WrongLength);
    }
    let digest = BASE64.decode(b64).map_err(|_| ChecksumError::BadBase64)?;
    if digest.len() != alg.digest_len() {
        return Err(ChecksumError::WrongLength);
    }
    Ok(Expected { alg, digest })
}

/// Whether a `Trailer` header value names `Upload-Checksum` (a comma list of field
/// names, case-insensitive).
pub fn trailer_announced(trailer: Option<&[u8]>) -> bool {
    trailer.is_some_and(|v| {
        v.split(|&b| b == b',')
            .any(|name| name.trim_ascii().eq_ignore_ascii_case(b"upload-checksum"))
    })
}

/// How a request's body is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Against the `Upload-Checksum` header.
    Header(Expected),
    /// Against the `Upload-Checksum` trailer of the chunked body; the algorithm is
    /// only known at the end, so every algorithm is computed.
    Trailer,
}

/// What the request says about checksums.
#[derive(Debug, Clone, Copy)]
pub struct ChecksumAsk<'a> {
    /// The `checksum` extension is on.
    pub checksum: bool,
    /// The `checksum-trailer` extension is on.
    pub trailer: bool,
    /// The body is chunked (only a chunked body has trailers).
    pub chunked: bool,
    /// The `Upload-Checksum` header.
    pub header: Option<&'a [u8]>,
    /// The `Trailer` header.
    pub announce: Option<&'a [u8]>,
}

/// Decides whether a body is verified, and against what. `Ok(None)`: store it as it
/// comes. With `checksum` off the header is ignored (as rustus does); with
/// `checksum-trailer` off, or on a Content-Length body, a trailer is never looked at. A
/// trailer must be announced in `Trailer`: the body has to be staged from its first
/// byte, before the trailer can be seen.
pub fn checksum_plan(ask: &ChecksumAsk<'_>) -> Result<Option<Check>, ChecksumError> {
    if !ask.checksum {
        return Ok(None);
    }
    let announced = ask.trailer && ask.chunked && trailer_announced(ask.announce);
    match ask.header {
        Some(_) if announced => Err(ChecksumError::HeaderAndTrailer),
        Some(v) => parse_upload_checksum(v).map(|e| Some(Check::Header(e))),
        None if announced => Ok(Some(Check::Trailer)),
        None => Ok(None),
    }
}

/// The `Upload-Checksum` of a complete chunked body's trailer section (lower-case names,
/// as the decoder gives them).
pub fn trailer_checksum(trailers: &[(String, Vec<u8>)]) -> Result<Expected, ChecksumError> {
    let mut found = trailers.iter().filter(|(n, _)| n == "upload-checksum");
    let first = found.next().ok_or(ChecksumError::TrailerMissing)?;
    if found.next().is_some() {
        return Err(ChecksumError::TrailerRepeated);
    }
    parse_upload_checksum(&first.1)
}

/// One streaming digest.
#[derive(Clone)]
pub enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh digest of `alg`.
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Its algorithm.
    pub fn alg(&self) -> Algorithm {
        match self {
            Hasher::Md5(_) => Algorithm::Md5,
            Hasher::Sha1(_) => Algorithm::Sha1,
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// The digests a [`Check`] needs, fed the body as it streams.
pub struct Digests {
    /// One per algorithm that may be asked for (one for a header, all for a trailer).
    hashers: Vec<Hasher>,
}

impl Digests {
    /// The digests for a check.
    pub fn for_check(check: &Check) -> Digests {
        let hashers = match check {
            Check::Header(e) => vec![Hasher::new(e.alg)],
            Check::Trailer => Algorithm::ALL.into_iter().map(Hasher::new).collect(),
        };
        Digests { hashers }
    }

    /// Feeds body bytes.
    pub fn update(&mut self, data: &[u8]) {
        for h in &mut self.hashers {
            h.update(data);
        }
    }

    /// Whether the body fed matches `expected`. An algorithm that was not computed
    /// never matches.
    pub fn verify(self, expected: &Expected) -> bool {
        self.hashers
            .into_iter()
            .find(|h| h.alg() == expected.alg)
            .is_some_and(|h| h.finish() == expected.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(d: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(d)
    }

    /// Digests of "hello world" from coreutils (md5sum, sha1sum, sha256sum, sha512sum).
    const HELLO: [(Algorithm, &str); 4] = [
        (Algorithm::Md5, "5eb63bbbe01eeed093cb22bb8f5acdc3"),
        (Algorithm::Sha1, "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"),
        (
            Algorithm::Sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
        ),
        (
            Algorithm::Sha512,
            "309ecc489c12d6eb4cc40f50c902f2b4d0ed77ee511a7c7a9bcd3ca86d4cd86f\
             989dd35bc5ff499670da34255b45b0cfd830e81f605dcf7dc5542e93ae9cd76f",
        ),
    ];

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hashers_match_known_digests_at_any_split() {
        let data = b"hello world";
        for (alg, hex) in HELLO {
            let want = unhex(hex);
            assert_eq!(want.len(), alg.digest_len());
            for split in 0..=data.len() {
                let mut h = Hasher::new(alg);
                h.update(&data[..split]);
                h.update(&data[split..]);
                assert_eq!(h.finish(), want, "{alg:?} split at {split}");
            }
        }
    }

    #[test]
    fn parse_table() {
        let sha1 = unhex(HELLO[1].1);
        let md5 = unhex(HELLO[0].1);
        let good_sha1 = format!("sha1 {}", b64(&sha1));
        let unpadded = format!("md5 {}", b64(&md5).trim_end_matches('='));
        let too_long = format!("sha1 {}", "A".repeat(200));
        let short = format!("sha256 {}", b64(&sha1));
        let two_spaces = format!("sha1  {}", b64(&sha1));
        let trailing = format!("sha1 {} x", b64(&sha1));
        let upper = format!("SHA1 {}", b64(&sha1));
        let crc = format!("crc32 {}", b64(&[1, 2, 3, 4]));
        let url_safe = format!("sha1 {}", b64(&sha1).replace('+', "-").replace('/', "_"));
        use ChecksumError::*;
        let table: Vec<(&[u8], Result<Algorithm, ChecksumError>)> = vec![
            (good_sha1.as_bytes(), Ok(Algorithm::Sha1)),
            (unpadded.as_bytes(), Ok(Algorithm::Md5)),
            (b"", Err(Malformed)),
            (b"   ", Err(Malformed)),
            (b"sha1", Err(Malformed)),
            (b"sha1 ", Err(Malformed)),
            (b" sha1", Err(Malformed)),
            (two_spaces.as_bytes(), Err(Malformed)),
            (trailing.as_bytes(), Err(Malformed)),
            (b"sha1\tKq5sNclPz7QV2+lfQIuc6R7oRu0=", Err(Malformed)),
            (b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=\x00", Err(Malformed)),
            (b"sha1 \xc3\xa9", Err(Malformed)),
            (upper.as_bytes(), Err(UnknownAlgorithm)),
            (crc.as_bytes(), Err(UnknownAlgorithm)),
            (b"foo bar", Err(UnknownAlgorithm)),
            (b"sha1 !!!!", Err(BadBase64)),
            (b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0==", Err(BadBase64)),
            (url_safe.as_bytes(), Err(BadBase64)),
            (short.as_bytes(), Err(WrongLength)),
            (too_long.as_bytes(), Err(WrongLength)),
            (b"sha512 AAAA", Err(WrongLength)),
        ];
        for (value, want) in table {
            let got = parse_upload_checksum(value).map(|e| e.alg);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(value));
        }
        let e = parse_upload_checksum(good_sha1.as_bytes()).unwrap();
        assert_eq!(e.digest, sha1);
        // Surrounding whitespace is tolerated.
        let padded = format!("  {good_sha1} ");
        assert_eq!(parse_upload_checksum(padded.as_bytes()).unwrap(), e);
    }

    #[test]
    fn every_algorithm_round_trips() {
        for (alg, hex) in HELLO {
            let v = format!("{} {}", alg.name(), b64(&unhex(hex)));
            let e = parse_upload_checksum(v.as_bytes()).unwrap();
            assert_eq!(e.alg, alg);
            let check = Check::Header(e.clone());
            let mut d = Digests::for_check(&check);
            d.update(b"hello ");
            d.update(b"world");
            assert!(d.verify(&e), "{alg:?}");
            let mut d = Digests::for_check(&check);
            d.update(b"hello world!");
            assert!(!d.verify(&e), "{alg:?} must not match other bytes");
            // A trailer check computes every algorithm.
            let mut d = Digests::for_check(&Check::Trailer);
            d.update(b"hello world");
            assert!(d.verify(&e), "{alg:?} via trailer digests");
        }
        // A header check computes only its algorithm.
        let sha1 =
            parse_upload_checksum(format!("sha1 {}", b64(&unhex(HELLO[1].1))).as_bytes()).unwrap();
        let md5 = Expected {
            alg: Algorithm::Md5,
            digest: unhex(HELLO[0].1),
        };
        let mut d = Digests::for_check(&Check::Header(sha1));
        d.update(b"hello world");
        assert!(!d.verify(&md5));
        assert_eq!(
            Algorithm::ALL.map(Algorithm::name).join(","),
            ALGORITHMS_HEADER
        );
    }

    #[test]
    fn plan_table() {
        let good = b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=".as_slice();
        let ask = |checksum, trailer, chunked, header, announce| ChecksumAsk {
            checksum,
            trailer,
            chunked,
            header,
            announce,
        };
        let ann = Some(b"Upload-Checksum".as_slice());
        let ann_list = Some(b"x-foo , upload-CHECKSUM".as_slice());
        let other = Some(b"X-Foo".as_slice());
        let bad = Some(b"sha1".as_slice());
        use ChecksumError::*;
        #[allow(clippy::type_complexity)]
        let table: Vec<(ChecksumAsk<'_>, Result<Option<&str>, ChecksumError>)> = vec![
            // Off: everything is ignored, even a malformed header.
            (ask(false, false, false, bad, None), Ok(None)),
            (ask(false, false, true, Some(good), ann), Ok(None)),
            (ask(true, false, false, None, None), Ok(None)),
            (
                ask(true, false, false, Some(good), None),
                Ok(Some("header")),
            ),
            (ask(true, false, false, bad, None), Err(Malformed)),
            (ask(true, true, true, Some(good), other), Ok(Some("header"))),
            (ask(true, true, true, None, ann), Ok(Some("trailer"))),
            (ask(true, true, true, None, ann_list), Ok(Some("trailer"))),
            (ask(true, true, true, None, other), Ok(None)),
            (
                ask(true, true, true, Some(good), ann),
                Err(HeaderAndTrailer),
            ),
            // A trailer is only looked for with checksum-trailer on and a chunked body.
            (ask(true, false, true, None, ann), Ok(None)),
            (ask(true, true, false, None, ann), Ok(None)),
            (ask(true, false, true, Some(good), ann), Ok(Some("header"))),
        ];
        for (i, (a, want)) in table.into_iter().enumerate() {
            let got = checksum_plan(&a).map(|p| {
                p.map(|c| match c {
                    Check::Header(_) => "header",
                    Check::Trailer => "trailer",
                })
            });
            assert_eq!(got, want, "row {i}: {a:?}");
        }
    }

    #[test]
    fn trailer_lookup() {
        let good = b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=".to_vec();
        let t = |v: &[(&str, &[u8])]| -> Vec<(String, Vec<u8>)> {
            v.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect()
        };
        assert_eq!(
            trailer_checksum(&t(&[])).unwrap_err(),
            ChecksumError::TrailerMissing
        );
        assert_eq!(
            trailer_checksum(&t(&[("x-other", b"1")])).unwrap_err(),
            ChecksumError::TrailerMissing
        );
        assert_eq!(
            trailer_checksum(&t(&[("x-other", b"1"), ("upload-checksum", &good)]))
                .unwrap()
                .alg,
            Algorithm::Sha1
        );
        assert_eq!(
            trailer_checksum(&t(&[
                ("upload-checksum", &good),
                ("upload-checksum", &good)
            ]))
            .unwrap_err(),
            ChecksumError::TrailerRepeated
        );
        assert_eq!(
            trailer_checksum(&t(&[("upload-checksum", b"md5 x")])).unwrap_err(),
            ChecksumError::BadBase64
        );
    }
}
