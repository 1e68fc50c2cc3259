//! `storage::info::UploadInfo::from_json` on arbitrary bytes (a damaged or hostile
//! `.info` record).
//!
//! Invariants:
//! * never panics;
//! * on `Ok(x)`: `to_json(x)` is one line of UTF-8 JSON, `from_json(to_json(x)) == x`,
//!   and writing it again gives the same bytes (the record format is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusring::storage::info::UploadInfo;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = UploadInfo::from_json(data) else {
        return;
    };
    let json = info.to_json();
    assert!(!json.is_empty(), "to_json gave nothing for {info:?}");
    let text = std::str::from_utf8(&json).expect("to_json is UTF-8");
    assert!(!text.contains('\n'), "to_json spans lines: {text:?}");
    let back = match UploadInfo::from_json(&json) {
        Ok(back) => back,
        Err(e) => panic!("to_json output does not read back: {e:?}\n{text}"),
    };
    assert_eq!(back, info, "the record changed through to_json/from_json");
    assert_eq!(back.to_json(), json, "writing the record twice differs");
    let _ = info.is_complete();
});
