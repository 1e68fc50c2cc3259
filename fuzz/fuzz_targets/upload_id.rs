//! `storage::id::UploadId::parse`, the one gate between a string from outside (a request
//! path, a hook's `ChangeFileInfo.ID`, a record's file name, a Redis key) and a file
//! name, and what is built from an ID.
//!
//! Input: the bytes are the candidate ID (only UTF-8 is tried). Invariants:
//! * never panics;
//! * it is accepted exactly when an independent reading of the rule accepts it: 1 to
//!   `MAX_HOOK_UPLOAD_ID_BYTES` bytes of `A-Z a-z 0-9 - . _ ~`, not starting with `.`, no
//!   `..`, not ending in a side-file suffix (`.info`, `.tmp`, `.chk`, `.assembling`),
//!   not `health`, `metrics` or `ready`;
//! * an accepted ID is the same string, parses back to itself, and as a path segment
//!   under a base routes to exactly that upload (and refused, to no upload, unless it is
//!   an ID and the trailing slash a path may end with);
//! * its data path is one segment below the data directory, its record's name gives the
//!   ID back, and neither the record, its temporary file, the staging file nor the
//!   assembly file of it is itself an ID (no ID names another's side file);
//! * a lock name derived from it (the S3 claim) is never an ID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tusring::limits::MAX_HOOK_UPLOAD_ID_BYTES;
use tusring::storage::file::assemble::assembling_path;
use tusring::storage::id::UploadId;
use tusring::storage::layout::{
    data_path, id_of_info_file, info_path, info_tmp_path, staging_path,
};
use tusring::tus::routes::{route, Route};

fn model(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HOOK_UPLOAD_ID_BYTES
        && s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        && !s.starts_with('.')
        && !s.contains("..")
        && ![".info", ".tmp", ".chk", ".assembling"]
            .iter()
            .any(|x| s.ends_with(x))
        && !["health", "metrics", "ready"].contains(&s)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let got = UploadId::parse(s);
    assert_eq!(got.is_ok(), model(s), "{s:?}: {got:?}");
    let routed = route(&format!("/files/{s}"), "/files");
    let Ok(id) = got else {
        // Refused: no upload, but for the one trailing slash a path may end with.
        if let Route::Upload(id) = routed {
            assert_eq!(format!("{id}/"), s, "{s:?} routed");
        }
        return;
    };
    assert_eq!(id.as_str(), s);
    assert_eq!(UploadId::parse(&id.to_string()), Ok(id));
    assert_eq!(routed, Route::Upload(id));
    assert_eq!(route(&format!("/files/{s}/"), "/files"), Route::Upload(id));

    let data_dir = Path::new("/data");
    let data = data_path(data_dir, "", 0, id.as_str());
    assert_eq!(data.parent(), Some(data_dir), "{data:?}");
    let record = info_path(Path::new("/info"), id.as_str());
    assert_eq!(record.parent(), Some(Path::new("/info")));
    assert_eq!(id_of_info_file(record.file_name().unwrap()), Some(id));
    for side in [
        record.clone(),
        info_tmp_path(Path::new("/info"), id.as_str()),
        staging_path(&data),
        assembling_path(&data),
    ] {
        let name = side.file_name().unwrap().to_str().unwrap();
        assert!(UploadId::parse(name).is_err(), "{name} is an ID");
    }
    assert!(UploadId::parse(id.derived("s3").as_str()).is_err());
});
