//! `tus::metadata::parse_upload_metadata` on arbitrary header values.
//!
//! Invariants:
//! * never panics;
//! * on `Ok(m)`: every key is printable ASCII without space or comma, keys are unique,
//!   `to_header` is one header line (no CR, LF or NUL) and parses back to `m` (unless
//!   re-encoding with canonical padding made it longer than `MAX_METADATA_BYTES`, when
//!   the parse must answer `TooLarge`), and `m` survives the JSON form of `.info`
//!   records (`UploadInfo::to_json` / `from_json`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusring::limits::MAX_METADATA_BYTES;
use tusring::storage::info::UploadInfo;
use tusring::tus::metadata::{parse_upload_metadata, MetadataError};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = parse_upload_metadata(data) else {
        if data.len() > MAX_METADATA_BYTES {
            assert_eq!(parse_upload_metadata(data), Err(MetadataError::TooLarge));
        }
        return;
    };
    assert!(data.len() <= MAX_METADATA_BYTES);

    let mut keys: Vec<&str> = Vec::with_capacity(m.len());
    for (k, v) in m.iter() {
        assert!(
            !k.is_empty() && k.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','),
            "bad key {k:?} accepted"
        );
        assert_eq!(m.get(k), Some(v));
        keys.push(k);
    }
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), before, "duplicate keys kept");

    let header = m.to_header();
    assert!(
        !header.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')),
        "to_header breaks the header line: {header:?}"
    );
    match parse_upload_metadata(header.as_bytes()) {
        Ok(again) => assert_eq!(again, m, "to_header {header:?} parses to another set"),
        Err(MetadataError::TooLarge) if header.len() > MAX_METADATA_BYTES => {}
        Err(e) => panic!("to_header {header:?} does not parse back: {e:?}"),
    }

    let info = UploadInfo::new(
        "9e9dd6f5-44b5-4c1c-a0a6-43e1d9c7a0b1".to_owned(),
        Some(1),
        0,
        m.clone(),
    );
    let json = info.to_json();
    match UploadInfo::from_json(&json) {
        Ok(back) => assert_eq!(back.metadata, m, "metadata changed through JSON"),
        Err(e) => panic!("record with this metadata does not read back: {e:?}"),
    }
});
