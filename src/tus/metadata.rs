//! `Upload-Metadata` (tus 1.0 §3): parsing, the header form, and the JSON object form
//! stored in `.info` records and hook payloads.
//!
//! Stricter than rustus and tusd: a malformed pair rejects the request (400) instead of
//! being dropped silently, and a key without a value is kept with an empty value.

use std::collections::HashMap;
use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::MAX_METADATA_BYTES;

/// Standard alphabet, padding optional, non-canonical trailing bits rejected.
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Upload-Metadata pairs in the order the client sent them; a key appears once (a later
/// duplicate replaces the earlier value in place).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(Vec<(String, String)>);

impl Metadata {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Appends the pair, or replaces the value in place if `k` is already present.
    pub fn insert(&mut self, k: String, v: String) {
        match self.0.iter_mut().find(|(key, _)| *key == k) {
            Some((_, old)) => *old = v,
            None => self.0.push((k, v)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Header form: `key base64(value)` joined by `,`; a key whose value is empty is
    /// rendered as the bare key. Keys that could not have come from a header (possible
    /// only in a hand-edited record) are skipped, so nothing can break the header line.
    pub fn to_header(&self) -> String {
        let mut out = String::new();
        for (k, v) in self.iter().filter(|(k, _)| is_valid_key(k.as_bytes())) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(k);
            if !v.is_empty() {
                out.push(' ');
                STANDARD.encode_string(v, &mut out);
            }
        }
        out
    }

    /// Builds from pairs in order, later duplicates replacing earlier values in place,
    /// in linear time (the pair count is bounded only by the header size).
    fn from_pairs<K, I>(pairs: I) -> Self
    where
        K: AsRef<str> + Into<String>,
        I: IntoIterator<Item = (K, String)>,
    {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            if let Some(&i) = index.get(k.as_ref()) {
                if let Some(slot) = out.get_mut(i) {
                    slot.1 = v;
                }
            } else {
                let k: String = k.into();
                index.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
        Self(out)
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;

        impl<'de> Visitor<'de> for MapVisitor {
            type Value = Metadata;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Metadata::from_pairs(pairs))
            }
        }

        deserializer.deserialize_map(MapVisitor)
    }
}

/// Why an `Upload-Metadata` value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataError {
    /// Not produced by [`parse_upload_metadata`] (an empty value is an empty set); for
    /// callers that require metadata to be present.
    Empty,
    /// A key is not printable ASCII without spaces and commas.
    BadKey,
    /// A value is not standard-alphabet base64.
    BadBase64,
    /// A decoded value is not UTF-8 (the `.info` format stores strings).
    NotUtf8,
    /// The header value is longer than [`MAX_METADATA_BYTES`].
    TooLarge,
}

impl MetadataError {
    /// The body of the 400 reply.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "Upload-Metadata is empty",
            Self::BadKey => "Upload-Metadata has an invalid key",
            Self::BadBase64 => "Upload-Metadata has a value that is not valid base64",
            Self::NotUtf8 => "Upload-Metadata has a value that is not valid UTF-8",
            Self::TooLarge => "Upload-Metadata is too large",
        }
    }
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for MetadataError {}

/// Parses an `Upload-Metadata` header value.
///
/// Pairs are `key` or `key value`, separated by `,`; blanks (space, tab) around a pair
/// and between key and value are tolerated, and empty items are skipped. The first bad
/// pair fails the whole value. Duplicate keys: the last value wins, at the first position.
pub fn parse_upload_metadata(value: &[u8]) -> Result<Metadata, MetadataError> {
    if value.len() > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge);
    }
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for item in value.split(|&b| b == b',') {
        let item = trim_blanks(item);
        if item.is_empty() {
            continue;
        }
        let (key, encoded) = match item.iter().position(|&b| is_blank(b)) {
            Some(i) => (&item[..i], trim_blanks(&item[i..])),
            None => (item, &b""[..]),
        };
        if !is_valid_key(key) {
            return Err(MetadataError::BadKey);
        }
        let key = std::str::from_utf8(key).map_err(|_| MetadataError::BadKey)?;
        let decoded = if encoded.is_empty() {
            Vec::new()
        } else {
            DECODER
                .decode(encoded)
                .map_err(|_| MetadataError::BadBase64)?
        };
        let decoded = String::from_utf8(decoded).map_err(|_| MetadataError::NotUtf8)?;
        pairs.push((key, decoded));
    }
    Ok(Metadata::from_pairs(pairs))
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_blank(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_blank(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Non-empty, printable ASCII, no space (excluded by the range) and no comma.
pub(crate) fn is_valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> Metadata {
        let mut m = Metadata::new();
        for (k, v) in pairs {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
        m
    }

    fn parse(s: &str) -> Result<Metadata, MetadataError> {
        parse_upload_metadata(s.as_bytes())
    }

    #[test]
    fn parse_valid_table() {
        let table: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("   ", &[]),
            (",,", &[]),
            (
                "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential",
                &[
                    ("filename", "world_domination_plan.pdf"),
                    ("is_confidential", ""),
                ],
            ),
            ("filename dGVzdC50eHQ=", &[("filename", "test.txt")]),
            ("flag ", &[("flag", "")]),
            ("flag", &[("flag", "")]),
            ("a YQ==,,b Yg==", &[("a", "a"), ("b", "b")]),
            (" a YQ== ,\tb  Yg==\t", &[("a", "a"), ("b", "b")]),
            ("a\tYQ==", &[("a", "a")]),
            ("a YQ", &[("a", "a")]),
            ("a YWI", &[("a", "ab")]),
            ("a YQ=", &[("a", "a")]),
            ("a w6k=", &[("a", "é")]),
            ("a YQ==,b Yg==,a Yw==", &[("a", "c"), ("b", "b")]),
            (
                "z YQ==,y Yg==,x Yw==",
                &[("z", "a"), ("y", "b"), ("x", "c")],
            ),
            (
                "k!#$%&'*+-.^_`|~:;<=>?@[]{}\"/\\ YQ==",
                &[("k!#$%&'*+-.^_`|~:;<=>?@[]{}\"/\\", "a")],
            ),
            ("a ", &[("a", "")]),
            ("a AA==", &[("a", "\0")]),
        ];
        for (input, want) in table {
            assert_eq!(parse(input), Ok(md(want)), "input {input:?}");
        }
    }

    #[test]
    fn parse_error_table() {
        let table: &[(&[u8], MetadataError)] = &[
            (b"a YQ== Yg==", MetadataError::BadBase64),
            (b"a x", MetadataError::BadBase64),
            (b"a YQ=x", MetadataError::BadBase64),
            (b"a Y", MetadataError::BadBase64),
            (b"a YQ===", MetadataError::BadBase64),
            (b"a _-8=", MetadataError::BadBase64), // url-safe alphabet
            (b"a YR==", MetadataError::BadBase64), // non-canonical trailing bits
            (b"a !!!!", MetadataError::BadBase64),
            (b"ok YQ==,a @@", MetadataError::BadBase64),
            (b"a /w==", MetadataError::NotUtf8),
            (b"a wA==", MetadataError::NotUtf8),
            (b"\xc3\xa9 YQ==", MetadataError::BadKey),
            (b"a\x01 YQ==", MetadataError::BadKey),
            (b"a\x7f", MetadataError::BadKey),
            (b"a\0b YQ==", MetadataError::BadKey),
            (b"a\r\nX-Evil: 1", MetadataError::BadKey),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_upload_metadata(input),
                Err(*want),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn size_limit() {
        let mut ok = "k ".to_owned();
        ok.push_str(&"A".repeat(MAX_METADATA_BYTES - 2));
        assert_eq!(ok.len(), MAX_METADATA_BYTES);
        assert!(parse(&ok).is_ok());
        ok.push('A');
        assert_eq!(parse(&ok), Err(MetadataError::TooLarge));
    }

    #[test]
    fn many_keys_parse_in_linear_time() {
        let input: Vec<String> = (0..2500).map(|i| format!("k{i}")).collect();
        let input = input.join(",");
        let m = parse(&input).unwrap();
        assert_eq!(m.len(), 2500);
        assert_eq!(m.get("k2499"), Some(""));
    }

    #[test]
    fn tusd_lenient_example_is_accepted_with_strict_base64() {
        // tusd trims around pairs; the values must still be base64.
        assert_eq!(parse("a eA==, b eQ=="), Ok(md(&[("a", "x"), ("b", "y")])));
    }

    #[test]
    fn reasons_are_distinct() {
        let all = [
            MetadataError::Empty,
            MetadataError::BadKey,
            MetadataError::BadBase64,
            MetadataError::NotUtf8,
            MetadataError::TooLarge,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(!a.reason().is_empty());
            assert_eq!(a.to_string(), a.reason());
            for b in &all[i + 1..] {
                assert_ne!(a.reason(), b.reason());
            }
        }
    }

    #[test]
    fn to_header_forms() {
        let m = md(&[
            ("filename", "world_domination_plan.pdf"),
            ("is_confidential", ""),
            ("b", "é,\r\n x"),
        ]);
        assert_eq!(
            m.to_header(),
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential,b w6ksDQogeA=="
        );
        assert_eq!(Metadata::new().to_header(), "");
        // Keys that cannot be sent in a header are skipped.
        let bad = md(&[("bad key", "x"), ("ok", "a"), ("", "y"), ("a\r\nb", "z")]);
        assert_eq!(bad.to_header(), "ok YQ==");
    }

    #[test]
    fn header_round_trip() {
        let cases = [
            md(&[]),
            md(&[("a", "")]),
            md(&[("z", "1"), ("a", ""), ("m", "three")]),
            md(&[
                ("filename", "résumé final (2).pdf"),
                ("filetype", "application/pdf"),
                ("relativePath", "null"),
                ("nul", "\0\u{7f}"),
                ("flag", ""),
            ]),
        ];
        for m in cases {
            assert_eq!(parse(&m.to_header()), Ok(m.clone()));
        }
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut m = md(&[("a", "1"), ("b", "2")]);
        m.insert("a".into(), "3".into());
        m.insert("c".into(), "4".into());
        let got: Vec<_> = m.iter().collect();
        assert_eq!(got, [("a", "3"), ("b", "2"), ("c", "4")]);
        assert_eq!(m.len(), 3);
        assert!(!m.is_empty());
        assert_eq!(m.get("b"), Some("2"));
        assert_eq!(m.get("x"), None);
        assert!(Metadata::new().is_empty());
    }

    #[test]
    fn json_preserves_order() {
        let m = md(&[("zeta", "1"), ("alpha", ""), ("mid", "é\"\\\n")]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"zeta":"1","alpha":"","mid":"é\"\\\n"}"#);
        let back: Metadata = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let keys: Vec<_> = back.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn json_duplicates_last_wins_in_place() {
        let m: Metadata = serde_json::from_str(r#"{"a":"1","b":"2","a":"3"}"#).unwrap();
        assert_eq!(m, md(&[("a", "3"), ("b", "2")]));
    }

    #[test]
    fn json_rejects_non_strings() {
        assert!(serde_json::from_str::<Metadata>(r#"{"a":1}"#).is_err());
        assert!(serde_json::from_str::<Metadata>(r#"{"a":null}"#).is_err());
        assert!(serde_json::from_str::<Metadata>(r#"["a"]"#).is_err());
        assert_eq!(
            serde_json::from_str::<Metadata>("{}").unwrap(),
            Metadata::new()
        );
    }
}
