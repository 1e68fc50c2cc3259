//! Integrity fields for the draft's requests (-05 §15, -11 §10): `Content-Digest` and
//! `Repr-Digest` (RFC 9530 §2, §3), each a Dictionary of algorithm keys and Byte
//! Sequence digests, turned into the digest a body is verified against (the same
//! verification as tus's `Upload-Checksum`, `tus::checksum`).
//!
//! RFC 9530 §5: a recipient picks among the algorithms it supports; tusring takes the
//! strongest (sha-512, sha-256, then the deprecated sha and md5) and ignores algorithms
//! it does not know, so a field naming only those is as if absent. A value that is not a
//! Dictionary, or whose chosen member is not a Byte Sequence of the algorithm's length,
//! is refused (400): the client asked for a check that cannot be made.

use super::fields::{parse_dictionary, BareItem, Member};
use crate::tus::checksum::{Algorithm, Expected};

/// RFC 9530 §7.2's algorithm keys tusring computes, strongest first.
const KEYS: [(&str, Algorithm); 4] = [
    ("sha-512", Algorithm::Sha512),
    ("sha-256", Algorithm::Sha256),
    ("sha", Algorithm::Sha1),
    ("md5", Algorithm::Md5),
];

/// Why a digest field was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestError {
    /// Not a structured-field Dictionary.
    NotDictionary,
    /// The chosen algorithm's member is not a Byte Sequence of its digest's length.
    BadDigest,
}

impl DigestError {
    /// The one-line answer, naming the field.
    pub fn reason(self, field: &str) -> String {
        match self {
            DigestError::NotDictionary => {
                format!("{field} is not a structured-field dictionary")
            }
            DigestError::BadDigest => {
                format!("{field}: the digest is not a byte sequence of the algorithm's length")
            }
        }
    }
}

/// The digest to verify from a `Content-Digest` or `Repr-Digest` value: the strongest
/// algorithm tusring supports, `Ok(None)` when it names none of them.
pub fn parse_digest_field(value: &[u8]) -> Result<Option<Expected>, DigestError> {
    let dict = parse_dictionary(value).map_err(|_| DigestError::NotDictionary)?;
    for (key, alg) in KEYS {
        let Some((_, member)) = dict.iter().find(|(k, _)| k == key) else {
            continue;
        };
        return match member {
            Member::Item(item) => match &item.bare {
                BareItem::Bytes(d) if d.len() == alg.digest_len() => Ok(Some(Expected {
                    alg,
                    digest: d.clone(),
                })),
                _ => Err(DigestError::BadDigest),
            },
            Member::InnerList(..) => Err(DigestError::BadDigest),
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    // sha-256 and sha-512 of "hello world", base64 (from sha256sum/sha512sum).
    const SHA256: &str = "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=";
    const SHA512: &str =
        "MJ7MSJwS1utMxA9QyQLytNDtd+5RGnx6m808qG1M2G+YndNbxf9JlnDaNCVbRbDP2DDoH2Bdz33FVC6TrpzXbw==";

    #[test]
    fn picks_the_strongest_known_algorithm() {
        let one = format!("sha-256=:{SHA256}:");
        let got = parse_digest_field(one.as_bytes()).unwrap().unwrap();
        assert_eq!(got.alg, Algorithm::Sha256);
        assert_eq!(got.digest.len(), 32);
        let both = format!("sha-256=:{SHA256}:, sha-512=:{SHA512}:");
        assert_eq!(
            parse_digest_field(both.as_bytes()).unwrap().unwrap().alg,
            Algorithm::Sha512
        );
        // Unknown algorithms are ignored; only unknown ones: nothing to check.
        let with_unknown = format!("crc32c=:AAAAAA==:, sha-256=:{SHA256}:");
        assert_eq!(
            parse_digest_field(with_unknown.as_bytes())
                .unwrap()
                .unwrap()
                .alg,
            Algorithm::Sha256
        );
        assert_eq!(parse_digest_field(b"crc32c=:AAAAAA==:"), Ok(None));
        assert_eq!(parse_digest_field(b""), Ok(None));
    }

    #[test]
    fn refuses_what_cannot_be_checked() {
        assert_eq!(
            parse_digest_field(b"sha-256=abc"),
            Err(DigestError::BadDigest)
        );
        assert_eq!(
            parse_digest_field(b"sha-256=:AAAA:"),
            Err(DigestError::BadDigest)
        );
        assert_eq!(
            parse_digest_field(b"sha-256=(:AAAA:)"),
            Err(DigestError::BadDigest)
        );
        assert_eq!(
            parse_digest_field(b"SHA-256=:AAAA:"),
            Err(DigestError::NotDictionary)
        );
        assert_eq!(
            parse_digest_field(b"sha-256 :AAAA:"),
            Err(DigestError::NotDictionary)
        );
        assert!(DigestError::BadDigest
            .reason("Content-Digest")
            .starts_with("Content-Digest"));
    }
}
