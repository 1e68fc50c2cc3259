//! The `Upload-Checksum` parser and the checksum decision (`tus::checksum`).
//!
//! Invariants:
//! * never panics;
//! * an accepted value is `<name> <base64>` with a known, lowercase algorithm name and
//!   a digest of exactly that algorithm's length; re-encoding it (padded base64) parses
//!   back to the same value;
//! * a refused value is refused for a reason that holds: no single inner space or a
//!   byte outside printable ASCII (malformed), an unknown name, undecodable base64, or
//!   the wrong length;
//! * `checksum_plan` with the extension off never verifies and never refuses; with it
//!   on, a header is verified exactly when it parses, and a trailer is expected only
//!   with checksum-trailer on, a chunked body, an announcement and no header;
//! * the digests verify what they were fed, split anywhere, and not other bytes.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tusring::tus::checksum::{
    checksum_plan, parse_upload_checksum, trailer_announced, Algorithm, Check, ChecksumAsk,
    ChecksumError, Digests, Expected,
};

#[derive(Debug, Arbitrary)]
struct Case {
    value: Vec<u8>,
    announce: Option<Vec<u8>>,
    checksum: bool,
    trailer: bool,
    chunked: bool,
    header: bool,
    alg: u8,
    body: Vec<u8>,
    split: usize,
}

fuzz_target!(|case: Case| {
    parse(&case.value);
    plan(&case);
    digests(&case);
});

fn parse(value: &[u8]) {
    let got = parse_upload_checksum(value);
    let v = value.trim_ascii();
    match got {
        Ok(e) => {
            assert_eq!(e.digest.len(), e.alg.digest_len());
            let (name, b64) = v.split_at(v.iter().position(|&b| b == b' ').unwrap());
            assert_eq!(name, e.alg.name().as_bytes());
            assert!(!b64[1..].contains(&b' '));
            let again = format!(
                "{} {}",
                e.alg.name(),
                base64::engine::general_purpose::STANDARD.encode(&e.digest)
            );
            assert_eq!(parse_upload_checksum(again.as_bytes()), Ok(e));
        }
        Err(ChecksumError::Malformed) => {
            let spaces = v.iter().filter(|&&b| b == b' ').count();
            let printable = v.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
            let halves_ok = v
                .iter()
                .position(|&b| b == b' ')
                .is_some_and(|p| p > 0 && p + 1 < v.len());
            assert!(spaces != 1 || !printable || !halves_ok, "{v:?}");
        }
        Err(ChecksumError::UnknownAlgorithm) => {
            let name = &v[..v.iter().position(|&b| b == b' ').unwrap()];
            assert!(Algorithm::parse(name).is_none());
        }
        Err(ChecksumError::BadBase64) | Err(ChecksumError::WrongLength) => {
            let name = &v[..v.iter().position(|&b| b == b' ').unwrap()];
            assert!(Algorithm::parse(name).is_some());
        }
        Err(e) => panic!("the parser gave a trailer error {e:?}"),
    }
}

fn plan(case: &Case) {
    let ask = ChecksumAsk {
        checksum: case.checksum,
        trailer: case.trailer,
        chunked: case.chunked,
        header: case.header.then_some(case.value.as_slice()),
        announce: case.announce.as_deref(),
    };
    let got = checksum_plan(&ask);
    if !case.checksum {
        assert_eq!(got, Ok(None));
        return;
    }
    let announced = case.trailer && case.chunked && trailer_announced(case.announce.as_deref());
    match (case.header, got) {
        (true, Err(ChecksumError::HeaderAndTrailer)) => assert!(announced),
        (true, Ok(Some(Check::Header(e)))) => {
            assert!(!announced);
            assert_eq!(parse_upload_checksum(&case.value), Ok(e));
        }
        (true, Err(e)) => {
            assert!(!announced);
            assert_eq!(parse_upload_checksum(&case.value), Err(e));
        }
        (false, Ok(Some(Check::Trailer))) => assert!(announced),
        (false, Ok(None)) => assert!(!announced),
        (h, g) => panic!("header {h}: {g:?}"),
    }
}

fn digests(case: &Case) {
    let alg = Algorithm::ALL[usize::from(case.alg) % Algorithm::ALL.len()];
    let split = case.split % (case.body.len() + 1);
    // The expected digest, from one pass over the whole body.
    let mut whole = Digests::for_check(&Check::Trailer);
    whole.update(&case.body);
    let probe = |d: Digests, digest: Vec<u8>| d.verify(&Expected { alg, digest });
    let mut reference = tusring::tus::checksum::Hasher::new(alg);
    reference.update(&case.body);
    let want = reference.finish();
    assert!(probe(whole, want.clone()));
    let check = Check::Header(Expected {
        alg,
        digest: want.clone(),
    });
    let mut split_fed = Digests::for_check(&check);
    split_fed.update(&case.body[..split]);
    split_fed.update(&case.body[split..]);
    assert!(probe(split_fed, want.clone()));
    let mut other = Digests::for_check(&check);
    other.update(&case.body);
    other.update(b"x");
    assert!(!probe(other, want));
}
