//! The tus rules, as pure functions: `parse_tus_integer`, `creation_length`,
//! `patch_plan`, the header checks, and `tus::routes::route` (upload IDs from paths).
//! (The `Upload-Concat` and `Upload-Checksum` parsers have targets of their own:
//! `concat` and `checksum`.)
//!
//! The input is decoded with `arbitrary` into a `Case`. Invariants:
//! * never panics;
//! * `parse_tus_integer` equals a reference (1*DIGIT, leading zeros allowed, at most
//!   2^63-1);
//! * `creation_length` accepts exactly what the spec allows, within `--max-file-size`;
//! * `patch_plan`: a `Write` plan's `limit` never lets `offset + limit` pass the known
//!   length, `--max-file-size` for a deferred one, 2^63-1, or `--max-body-size`; a known
//!   Content-Length that is accepted fits in `limit`; a mismatched offset is always 409;
//! * `route`: an `Upload(id)` is exactly the last path segment, and that segment passes
//!   the upload ID rule (`UploadId::parse`: no `/`, `%`, `..`, leading `.` or side-file
//!   suffix), so a path never names a file outside the upload directories.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tusring::error::Error;
use tusring::limits::MAX_TUS_INTEGER;
use tusring::tus::routes::{route, Route};
use tusring::tus::rules::{
    creation_length, is_offset_octet_stream, parse_tus_integer, patch_plan, tus_resumable_ok,
    CreateLimits, PatchLimits, PatchPlan, PatchRequest, UploadState,
};

/// A number the fuzzer can pick near the interesting edges as well as anywhere.
#[derive(Debug, Arbitrary, Clone, Copy)]
enum Num {
    Small(u16),
    NearMax(u8),
    AboveMax(u8),
    Any(u64),
}

impl Num {
    fn get(self) -> u64 {
        match self {
            Num::Small(n) => u64::from(n),
            Num::NearMax(d) => MAX_TUS_INTEGER - u64::from(d),
            Num::AboveMax(d) => MAX_TUS_INTEGER.saturating_add(u64::from(d)),
            Num::Any(n) => n,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Case {
    integer: Vec<u8>,
    upload_length: Option<Vec<u8>>,
    defer_length: Option<Vec<u8>>,
    defer_enabled: bool,
    allow_empty: bool,
    create_max_file_size: Option<Num>,
    // PATCH
    req_offset: Num,
    /// Take the request's offset from the upload's (the common, matching case).
    offset_matches: bool,
    new_length: Option<Num>,
    content_length: Option<Num>,
    state_offset: Num,
    state_length: Option<Num>,
    is_final: bool,
    max_file_size: Option<Num>,
    max_body_size: Option<Num>,
    // headers
    content_type: Option<Vec<u8>>,
    tus_resumable: Option<Vec<u8>>,
    // routes
    path: String,
    base: String,
}

fuzz_target!(|case: Case| {
    integers(&case.integer);
    if let Some(v) = &case.upload_length {
        integers(v);
    }
    creation(&case);
    patch(&case);
    let _ = is_offset_octet_stream(case.content_type.as_deref());
    let ok = tus_resumable_ok(case.tus_resumable.as_deref());
    assert_eq!(ok, case.tus_resumable.as_deref() == Some(&b"1.0.0"[..]));
    routes(&case.path, &case.base);
});

/// The reference reading of a tus integer.
fn reference_integer(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digits = &value[value.iter().position(|&d| d != b'0').unwrap_or(value.len())..];
    if digits.len() > 19 {
        return None;
    }
    let n: u128 = digits.iter().fold(0, |n, &d| n * 10 + u128::from(d - b'0'));
    u64::try_from(n).ok().filter(|&n| n <= MAX_TUS_INTEGER)
}

fn integers(value: &[u8]) {
    let got = parse_tus_integer(value);
    assert_eq!(
        got,
        reference_integer(value),
        "parse_tus_integer({value:?})"
    );
}

fn creation(case: &Case) {
    let limits = CreateLimits {
        defer_enabled: case.defer_enabled,
        allow_empty: case.allow_empty,
        max_file_size: case.create_max_file_size.map(Num::get),
    };
    let got = creation_length(
        case.upload_length.as_deref(),
        case.defer_length.as_deref(),
        &limits,
    );
    match (&case.upload_length, &case.defer_length, &got) {
        (Some(v), None, Ok(Some(n))) => {
            assert_eq!(Some(*n), parse_tus_integer(v));
            assert!(*n <= MAX_TUS_INTEGER);
            assert!(*n > 0 || limits.allow_empty, "empty upload accepted");
            assert!(
                limits.max_file_size.is_none_or(|m| *n <= m),
                "over max size"
            );
        }
        (None, Some(d), Ok(None)) => {
            assert!(
                limits.defer_enabled,
                "deferred length accepted while disabled"
            );
            assert_eq!(d.as_slice(), b"1");
        }
        (_, _, Ok(v)) => panic!("creation_length accepted {v:?} for {case:?}"),
        (Some(v), None, Err(e)) => {
            let valid = parse_tus_integer(v).filter(|&n| {
                (n > 0 || limits.allow_empty) && limits.max_file_size.is_none_or(|m| n <= m)
            });
            assert!(valid.is_none(), "valid length {valid:?} refused: {e:?}");
            let status = e.status();
            assert!(status == 400 || status == 413, "status {status}");
        }
        (None, Some(d), Err(_)) => {
            assert!(!(limits.defer_enabled && d.as_slice() == b"1"));
        }
        (_, _, Err(e)) => assert_eq!(e.status(), 400),
    }
}

fn patch(case: &Case) {
    let state = UploadState {
        offset: case.state_offset.get(),
        length: case.state_length.map(Num::get),
        is_final: case.is_final,
    };
    let req = PatchRequest {
        offset: if case.offset_matches {
            state.offset
        } else {
            case.req_offset.get()
        },
        new_length: case.new_length.map(Num::get),
        content_length: case.content_length.map(Num::get),
    };
    let limits = PatchLimits {
        max_file_size: case.max_file_size.map(Num::get),
        max_body_size: case.max_body_size.map(Num::get),
    };
    let plan = patch_plan(&req, &state, &limits);
    let plan = match plan {
        Err(e) => {
            if state.is_final {
                assert_eq!(e.status(), 403);
            } else if req.offset != state.offset {
                assert!(
                    matches!(e, Error::OffsetMismatch { stored } if stored == state.offset),
                    "offset mismatch answered {e:?}"
                );
            } else {
                assert!(matches!(e.status(), 400 | 413), "{e:?}");
            }
            return;
        }
        Ok(plan) => plan,
    };
    assert!(!state.is_final, "PATCH accepted on a final upload");
    assert_eq!(
        req.offset, state.offset,
        "PATCH accepted at the wrong offset"
    );
    match plan {
        PatchPlan::AlreadyComplete => {
            assert_eq!(state.length, Some(state.offset));
            assert_eq!(req.new_length, None);
        }
        PatchPlan::Write {
            set_length,
            limit,
            length,
        } => {
            let end = u128::from(state.offset) + u128::from(limit);
            if limit > 0 {
                assert!(end <= u128::from(MAX_TUS_INTEGER), "limit passes 2^63-1");
            }
            match (state.length, req.new_length) {
                (Some(l), None) => {
                    assert_eq!(length, Some(l));
                    assert_eq!(set_length, None);
                }
                (None, Some(n)) => {
                    assert_eq!(length, Some(n));
                    assert_eq!(set_length, Some(n));
                    assert!(n >= state.offset, "length set below the offset");
                    assert!(limits.max_file_size.is_none_or(|m| n <= m));
                }
                (None, None) => {
                    assert_eq!(length, None);
                    assert_eq!(set_length, None);
                }
                (Some(_), Some(_)) => panic!("length set twice"),
            }
            if let Some(l) = length {
                assert!(
                    limit == 0 || end <= u128::from(l),
                    "limit passes the length"
                );
            } else if let Some(m) = limits.max_file_size {
                assert!(
                    limit == 0 || end <= u128::from(m),
                    "limit passes max-file-size"
                );
            }
            if let Some(b) = limits.max_body_size {
                assert!(limit <= b, "limit above max-body-size");
            }
            if let Some(cl) = req.content_length {
                assert!(
                    cl <= limit,
                    "Content-Length {cl} accepted above limit {limit}"
                );
            }
        }
    }
}

fn routes(path: &str, base: &str) {
    // The base is normalised by config: empty, or "/seg..." without a trailing slash.
    let base = base.trim_end_matches('/');
    let base = if base.is_empty() || base.starts_with('/') {
        base.to_owned()
    } else {
        format!("/{base}")
    };
    match route(path, &base) {
        Route::Upload(id) => {
            let text = id.to_string();
            assert_eq!(tusring::storage::id::UploadId::parse(&text), Ok(id));
            assert!(!text.contains(['/', '%', '\\']) && !text.starts_with('.'));
            assert!(
                path == format!("{base}/{text}") || path == format!("{base}/{text}/"),
                "{path:?} under {base:?} routed to upload {text}"
            );
            assert!(!path.contains(".."));
            assert!(!path.contains('\0'));
        }
        Route::Health => assert!(path == "/health" || path == "/health/"),
        Route::Metrics => assert!(path == "/metrics" || path == "/metrics/"),
        Route::Ready => assert!(path == "/ready" || path == "/ready/"),
        Route::Collection => {
            assert!(
                path == base || path == format!("{base}/"),
                "{path:?} under {base:?}"
            )
        }
        Route::BadId | Route::NotFound => {}
    }
}
