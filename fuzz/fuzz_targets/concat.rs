//! The concatenation extension's pure parts: `tus::concat::parse_upload_concat`,
//! `final_header` and `plan_final`.
//!
//! The input is decoded with `arbitrary` into a `Case`. Invariants:
//! * never panics;
//! * `parse_upload_concat`: a `Final` has 1..=`MAX_CONCAT_PARTS` parts, no two the same,
//!   each an upload ID (`UploadId::parse`) that occurs in the header value; what `final_header` renders for
//!   those parts parses back to the same list (the HEAD value round-trips), as does the
//!   list of absolute URLs; `partial` is recognised only as the whole (trimmed) value;
//! * `plan_final`: an accepted plan's length is the sum of the parts' lengths and within
//!   `--max-file-size` and 2^63-1; it is ready exactly when every part is complete; an
//!   unfinished part is refused without `concatenation-unfinished`; a part that is not
//!   partial is always refused.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tusring::limits::MAX_TUS_INTEGER;
use tusring::tus::concat::{
    final_header, parse_upload_concat, plan_final, Concat, PartState, PartsError,
    MAX_CONCAT_PARTS,
};

#[derive(Debug, Arbitrary)]
struct Part {
    is_partial: bool,
    length: Option<u64>,
    offset: u64,
}

#[derive(Debug, Arbitrary)]
struct Case {
    value: Vec<u8>,
    /// 0: tus at the root, 1: `/files`, else `/a/b`.
    base: u8,
    parts: Vec<Part>,
    unfinished: bool,
    max_file_size: Option<u64>,
}

fuzz_target!(|case: Case| {
    let base = match case.base % 3 {
        0 => "",
        1 => "/files",
        _ => "/a/b",
    };
    match parse_upload_concat(&case.value, base) {
        Ok(Concat::Partial) => {
            let text = std::str::from_utf8(&case.value).expect("partial is UTF-8");
            assert_eq!(text.trim_matches([' ', '\t']), "partial");
        }
        Ok(Concat::Final(ids)) => {
            assert!(!ids.is_empty() && ids.len() <= MAX_CONCAT_PARTS);
            let mut distinct = ids.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), ids.len(), "a part named twice: {ids:?}");
            let text = std::str::from_utf8(&case.value).expect("final is UTF-8");
            let names: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            for n in &names {
                assert!(tusring::storage::id::UploadId::parse(n).is_ok(), "{n}");
                assert!(text.contains(n.as_str()), "{n} not in {text:?}");
            }
            let head = final_header(base, &names);
            assert_eq!(
                parse_upload_concat(head.as_bytes(), base),
                Ok(Concat::Final(ids.clone())),
                "{head}"
            );
            let absolute: Vec<String> = names
                .iter()
                .map(|n| format!("https://h.example:8443{base}/{n}/"))
                .collect();
            let value = format!("final;{}", absolute.join(" "));
            assert_eq!(
                parse_upload_concat(value.as_bytes(), base),
                Ok(Concat::Final(ids))
            );
        }
        Err(e) => assert!(!e.reason().is_empty()),
    }

    let states: Vec<PartState> = case
        .parts
        .iter()
        .map(|p| PartState {
            is_partial: p.is_partial,
            length: p.length,
            offset: p.offset,
        })
        .collect();
    let complete = |p: &PartState| p.length.is_some_and(|l| p.offset >= l);
    match plan_final(&states, case.unfinished, case.max_file_size) {
        Ok(plan) => {
            let sum: u128 = states.iter().map(|p| u128::from(p.length.unwrap())).sum();
            assert_eq!(u128::from(plan.length), sum);
            assert!(plan.length <= MAX_TUS_INTEGER);
            assert!(case.max_file_size.is_none_or(|m| plan.length <= m));
            assert_eq!(plan.ready, states.iter().all(complete));
            assert!(case.unfinished || plan.ready);
            assert!(states.iter().all(|p| p.is_partial));
        }
        Err(PartsError::NotPartial(i)) => assert!(!states[i].is_partial),
        Err(PartsError::Unfinished(i)) => {
            assert!(!complete(&states[i]));
            assert!(!case.unfinished);
        }
        Err(PartsError::DeferredLength(i)) => {
            assert!(states[i].length.is_none() && case.unfinished)
        }
        Err(PartsError::TooLarge) => {}
    }
});
