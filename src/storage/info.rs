//! rustus's `.info` record: the upload state as compact JSON, byte-compatible both ways.
//!
//! Fields are written in rustus's order with rustus's (serde_json's) escaping, so a
//! rustus data directory can be taken over as is and handed back.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::tus::metadata::Metadata;

/// The `storage` value of file-storage records.
pub const STORAGE_NAME: &str = "file_storage";

/// One upload's state. Field order is the on-disk order; do not reorder.
///
/// Reading is lenient: unknown fields are ignored, and missing or `null` optional fields
/// take their defaults (`length`, `path`, `parts`: none; flags: false; `metadata`: empty;
/// `storage`: [`STORAGE_NAME`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub id: String,
    pub offset: u64,
    /// `None` while the length is deferred.
    #[serde(default)]
    pub length: Option<u64>,
    /// Absolute data-file path; `None` only in pre-create hook payloads.
    #[serde(default)]
    pub path: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    #[serde(default)]
    pub deferred_size: bool,
    #[serde(default)]
    pub is_partial: bool,
    #[serde(default)]
    pub is_final: bool,
    /// Part IDs of a final upload.
    #[serde(default)]
    pub parts: Option<Vec<String>>,
    #[serde(default = "default_storage")]
    pub storage: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: Metadata,
    /// tusring's own, not rustus's: a hook's `post-receive` answer stopped the upload and
    /// kept it (`StopUpload` with `KeepUpload`, `server::stops`); its PATCHes are refused.
    /// Written only when true, after rustus's fields, so every other record stays
    /// rustus's byte for byte; rustus reads it and ignores the field (serde's default).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stopped: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_storage() -> String {
    STORAGE_NAME.to_owned()
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
    Ok(Option::<Metadata>::deserialize(d)?.unwrap_or_default())
}

impl UploadInfo {
    /// A fresh upload: offset 0, no path yet, file storage, neither partial nor final.
    pub fn new(id: String, length: Option<u64>, created_at: i64, metadata: Metadata) -> Self {
        Self {
            id,
            offset: 0,
            length,
            path: None,
            created_at,
            deferred_size: length.is_none(),
            is_partial: false,
            is_final: false,
            parts: None,
            storage: STORAGE_NAME.to_owned(),
            metadata,
            stopped: false,
        }
    }

    /// The compact JSON record, exactly as rustus writes it.
    pub fn to_json(&self) -> Vec<u8> {
        // Cannot fail: every field is a string, number, bool, null, list or string map.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a record; trailing bytes other than whitespace make it corrupt.
    pub fn from_json(bytes: &[u8]) -> Result<Self, InfoError> {
        serde_json::from_slice(bytes).map_err(|e| InfoError::Corrupt(e.to_string()))
    }

    /// The length is known and every byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.length.is_some_and(|len| self.offset >= len)
    }
}

/// A record that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoError {
    /// Not valid JSON for an [`UploadInfo`] (e.g. half-written or truncated).
    Corrupt(String),
}

impl fmt::Display for InfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(why) => write!(f, "corrupt upload info: {why}"),
        }
    }
}

impl std::error::Error for InfoError {}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01";
    const RUSTUS: &str = r#"{"id":"9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01","offset":12,"length":10,"path":"/abs/data/9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01","created_at":1795801207,"deferred_size":false,"is_partial":false,"is_final":false,"parts":null,"storage":"file_storage","metadata":{}}"#;

    fn md(pairs: &[(&str, &str)]) -> Metadata {
        let mut m = Metadata::new();
        for (k, v) in pairs {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
        m
    }

    fn rustus_example() -> UploadInfo {
        UploadInfo {
            id: ID.to_owned(),
            offset: 12,
            length: Some(10),
            path: Some(format!("/abs/data/{ID}")),
            created_at: 1_795_801_207,
            deferred_size: false,
            is_partial: false,
            is_final: false,
            parts: None,
            storage: STORAGE_NAME.to_owned(),
            metadata: Metadata::new(),
            stopped: false,
        }
    }

    #[test]
    fn a_stopped_record_adds_one_field_after_rustuss() {
        let mut info = rustus_example();
        info.stopped = true;
        let json = String::from_utf8(info.to_json()).unwrap();
        let want = format!("{},\"stopped\":true}}", &RUSTUS[..RUSTUS.len() - 1]);
        assert_eq!(json, want);
        assert_eq!(UploadInfo::from_json(json.as_bytes()), Ok(info));
        // Not stopped: rustus's record exactly (`serialises_byte_exact`).
        assert!(!UploadInfo::from_json(RUSTUS.as_bytes()).unwrap().stopped);
    }

    #[test]
    fn parses_rustus_record() {
        assert_eq!(
            UploadInfo::from_json(RUSTUS.as_bytes()),
            Ok(rustus_example())
        );
    }

    #[test]
    fn serialises_byte_exact() {
        assert_eq!(rustus_example().to_json(), RUSTUS.as_bytes());

        let mut info = UploadInfo::new(
            ID.to_owned(),
            None,
            1_700_000_000,
            md(&[("filename", "a \"b\"/é\n.txt"), ("flag", "")]),
        );
        info.is_final = true;
        info.parts = Some(vec!["p1".into(), "p2".into()]);
        let want = r#"{"id":"9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01","offset":0,"length":null,"path":null,"created_at":1700000000,"deferred_size":true,"is_partial":false,"is_final":true,"parts":["p1","p2"],"storage":"file_storage","metadata":{"filename":"a \"b\"/é\n.txt","flag":""}}"#;
        assert_eq!(String::from_utf8(info.to_json()).unwrap(), want);
    }

    #[test]
    fn round_trips() {
        let mut info = UploadInfo::new(
            ID.to_owned(),
            Some(u64::MAX),
            -5,
            md(&[("z", "1"), ("a", "2"), ("m", "\u{0}\u{1f}")]),
        );
        info.offset = 7;
        info.path = Some("/data/2026/11/27/x".into());
        info.is_partial = true;
        let back = UploadInfo::from_json(&info.to_json()).unwrap();
        assert_eq!(back, info);
        assert_eq!(back.to_json(), info.to_json());
    }

    #[test]
    fn new_defaults() {
        let info = UploadInfo::new(ID.to_owned(), Some(4), 1, Metadata::new());
        assert_eq!(info.offset, 0);
        assert!(!info.deferred_size && !info.is_partial && !info.is_final);
        assert_eq!((info.path, info.parts), (None, None));
        assert_eq!(info.storage, STORAGE_NAME);
        assert!(UploadInfo::new(ID.to_owned(), None, 1, Metadata::new()).deferred_size);
    }

    #[test]
    fn tolerant_reading() {
        let minimal = r#"{"id":"x","offset":3,"created_at":9,"extra":{"nested":[1,2]}}"#;
        let info = UploadInfo::from_json(minimal.as_bytes()).unwrap();
        assert_eq!(info.length, None);
        assert_eq!(info.parts, None);
        assert_eq!(info.path, None);
        assert!(info.metadata.is_empty());
        assert_eq!(info.storage, STORAGE_NAME);
        let nulls = r#"{"id":"x","offset":3,"created_at":9,"metadata":null,"parts":null}"#;
        assert!(UploadInfo::from_json(nulls.as_bytes())
            .unwrap()
            .metadata
            .is_empty());
        let padded = format!("\n {RUSTUS}\n");
        assert_eq!(
            UploadInfo::from_json(padded.as_bytes()),
            Ok(rustus_example())
        );
        let with_meta = RUSTUS.replace(r#""metadata":{}"#, r#""metadata":{"b":"2","a":"1"}"#);
        let info = UploadInfo::from_json(with_meta.as_bytes()).unwrap();
        assert_eq!(info.metadata, md(&[("b", "2"), ("a", "1")]));
        assert_eq!(info.to_json(), with_meta.as_bytes());
    }

    #[test]
    fn corrupt_records() {
        let bad: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"   ".to_vec(),
            b"null".to_vec(),
            b"{}".to_vec(),
            b"[]".to_vec(),
            b"\xff\xfe".to_vec(),
            format!("{RUSTUS}{RUSTUS}").into_bytes(),
            format!("{RUSTUS}x").into_bytes(),
            RUSTUS
                .replace("\"offset\":12", "\"offset\":-1")
                .into_bytes(),
            RUSTUS
                .replace("\"offset\":12", "\"offset\":\"12\"")
                .into_bytes(),
            RUSTUS
                .replace("\"metadata\":{}", "\"metadata\":{\"a\":1}")
                .into_bytes(),
            RUSTUS
                .replace("\"created_at\":1795801207,", "")
                .into_bytes(),
        ];
        for b in &bad {
            let err = UploadInfo::from_json(b).unwrap_err();
            assert!(err.to_string().starts_with("corrupt upload info: "));
        }
        // Every truncation of a valid record is rejected.
        for cut in 0..RUSTUS.len() {
            assert!(
                UploadInfo::from_json(&RUSTUS.as_bytes()[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn completeness() {
        let mut info = UploadInfo::new(ID.to_owned(), Some(10), 0, Metadata::new());
        assert!(!info.is_complete());
        info.offset = 10;
        assert!(info.is_complete());
        info.offset = 12;
        assert!(info.is_complete());
        let mut deferred = UploadInfo::new(ID.to_owned(), None, 0, Metadata::new());
        deferred.offset = 100;
        assert!(!deferred.is_complete());
        assert!(UploadInfo::new(ID.to_owned(), Some(0), 0, Metadata::new()).is_complete());
    }
}
