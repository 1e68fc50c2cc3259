//! The resumable-uploads draft's header parsing and decisions (`tusring::draft`): the
//! structured fields (RFC 9651) its fields are, the digest fields (RFC 9530), the
//! `Content-Disposition` file name, protocol detection, and the creation and append
//! plans.
//!
//! The input is decoded with `arbitrary` into a `Case`. Invariants:
//! * never panics;
//! * `parse_item`: an Integer is within ±999,999,999,999,999; a Byte Sequence
//!   re-encoded (`:base64:`) parses back to the same bytes; `non_negative_integer` and
//!   `boolean` agree with `parse_item`, and a non-negative Integer serialized by
//!   `integer` parses back to itself;
//! * `parse_dictionary`: keys are valid keys (lowercase, `*` or a letter first) and
//!   never repeat; a Dictionary of Integers serialized by `dictionary_of_integers`
//!   parses back to the same members, in order;
//! * `Limits::render` always parses as a Dictionary of non-negative Integers with a
//!   `min-size`;
//! * `parse_digest_field`: a digest it returns has its algorithm's length;
//! * `file_name` never returns a name with a path separator or a control character;
//! * `detect` says `Draft(v)` exactly when the value is the Integer 6 or 8;
//! * `creation_plan` / `append_plan`: an accepted plan never lets the body pass the
//!   upload's known length, `--max-file-size`, 2^63-1 or `--max-body-size`; an accepted
//!   Content-Length fits in the limit; a mismatched offset on an unfinished upload is
//!   always 409 and says both offsets.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tusring::draft::digest::parse_digest_field;
use tusring::draft::fields::{
    boolean, dictionary_of_integers, integer, non_negative_integer, parse_dictionary,
    parse_item, BareItem, Member, MAX_INTEGER,
};
use tusring::draft::metadata::file_name;
use tusring::draft::rules::{
    append_fields, append_plan, creation_plan, detect, AppendPlan, Fields, Interop, Limits,
    Protocol, Refusal, ServerRules, UploadFacts,
};
use tusring::limits::MAX_TUS_INTEGER;

#[derive(Debug, Arbitrary)]
struct Case {
    value: Vec<u8>,
    ints: Vec<(u8, u64)>,
    complete: Option<Vec<u8>>,
    offset: Option<Vec<u8>>,
    length: Option<Vec<u8>>,
    content_length: Option<u32>,
    content_type: Option<Vec<u8>>,
    v8: bool,
    tus_applies: bool,
    max_file_size: Option<u32>,
    max_body_size: Option<u32>,
    allow_empty: bool,
    defer_enabled: bool,
    up_offset: u32,
    up_length: Option<u32>,
    is_final: bool,
    max_age: Option<u32>,
}

fuzz_target!(|case: Case| {
    items(&case.value);
    dictionaries(&case.value, &case.ints);
    others(&case);
    plans(&case);
});

fn items(value: &[u8]) {
    let item = parse_item(value);
    if let Ok(item) = &item {
        match &item.bare {
            BareItem::Integer(n) | BareItem::Date(n) => assert!(n.abs() <= MAX_INTEGER),
            BareItem::Bytes(b) => {
                let again = format!(":{}:", base64::engine::general_purpose::STANDARD.encode(b));
                assert_eq!(parse_item(again.as_bytes()).unwrap().bare, BareItem::Bytes(b.clone()));
            }
            _ => {}
        }
    }
    let bare = item.as_ref().ok().map(|i| &i.bare);
    let want_int = match bare {
        Some(BareItem::Integer(n)) if *n >= 0 => Some(*n as u64),
        _ => None,
    };
    assert_eq!(non_negative_integer(value), want_int);
    if let Some(n) = want_int {
        assert_eq!(non_negative_integer(integer(n).as_bytes()), Some(n));
    }
    let want_bool = match bare {
        Some(BareItem::Boolean(b)) => Some(*b),
        _ => None,
    };
    assert_eq!(boolean(value), want_bool);
}

fn dictionaries(value: &[u8], ints: &[(u8, u64)]) {
    if let Ok(d) = parse_dictionary(value) {
        for (i, (k, _)) in d.iter().enumerate() {
            let b = k.as_bytes();
            assert!(matches!(b.first(), Some(b'a'..=b'z' | b'*')), "{k:?}");
            assert!(!d[..i].iter().any(|(o, _)| o == k), "{k:?} twice");
        }
    }
    // Serialize a Dictionary of Integers with distinct keys and read it back.
    let keys = ["max-size", "min-size", "max-append-size", "min-append-size", "max-age", "a*b.c_d-e"];
    let mut members: Vec<(&str, u64)> = Vec::new();
    for (k, n) in ints.iter().take(keys.len()) {
        let key = keys[usize::from(*k) % keys.len()];
        if !members.iter().any(|(m, _)| *m == key) {
            members.push((key, *n));
        }
    }
    let text = dictionary_of_integers(&members);
    let d = parse_dictionary(text.as_bytes()).expect("our own dictionary parses");
    assert_eq!(d.len(), members.len());
    for ((k, n), (pk, m)) in members.iter().zip(d.iter()) {
        assert_eq!(k, pk);
        match m {
            Member::Item(i) => assert_eq!(i.bare, BareItem::Integer((*n).min(MAX_INTEGER as u64) as i64)),
            other => panic!("{other:?}"),
        }
    }
}

fn others(case: &Case) {
    if let Ok(Some(e)) = parse_digest_field(&case.value) {
        assert_eq!(e.digest.len(), e.alg.digest_len());
    }
    if let Ok(s) = std::str::from_utf8(&case.value) {
        if let Some(name) = file_name(s) {
            assert!(!name.is_empty());
            assert!(!name.chars().any(|c| c.is_control() || c == '/' || c == '\\'), "{name:?}");
        }
    }
    match detect(Some(&case.value), case.tus_applies) {
        Protocol::Draft(v) => assert_eq!(non_negative_integer(&case.value), Some(v.number())),
        Protocol::Tus => {
            assert!(case.tus_applies);
            assert!(!matches!(non_negative_integer(&case.value), Some(6 | 8)));
        }
        Protocol::Unsupported => {
            assert!(!case.tus_applies);
            assert!(!matches!(non_negative_integer(&case.value), Some(6 | 8)));
        }
    }
    let rules = rules(case);
    for v in Interop::ALL {
        let limits = Limits::new(&rules, case.up_length.map(u64::from), case.max_age.map(u64::from));
        let d = parse_dictionary(limits.render(v).as_bytes()).expect("Upload-Limit parses");
        assert!(d.iter().any(|(k, _)| k == "min-size"));
        for (_, m) in d {
            assert!(matches!(m, Member::Item(i) if matches!(i.bare, BareItem::Integer(n) if n >= 0)));
        }
    }
}

fn rules(case: &Case) -> ServerRules {
    ServerRules {
        max_file_size: case.max_file_size.map(u64::from),
        max_body_size: case.max_body_size.map(u64::from),
        allow_empty: case.allow_empty,
        defer_enabled: case.defer_enabled,
    }
}

/// The most a body may store from `offset` in an upload of `length`.
fn room(rules: &ServerRules, offset: u64, length: Option<u64>) -> u64 {
    let end = length.or(rules.max_file_size).unwrap_or(MAX_TUS_INTEGER).min(MAX_TUS_INTEGER);
    end.saturating_sub(offset).min(rules.max_body_size.unwrap_or(u64::MAX))
}

fn plans(case: &Case) {
    let v = if case.v8 { Interop::V8 } else { Interop::V6 };
    let rules = rules(case);
    let fields = Fields {
        complete: case.complete.as_deref(),
        offset: case.offset.as_deref(),
        length: case.length.as_deref(),
        content_length: case.content_length.map(u64::from),
    };
    let cl = fields.content_length;
    if let Ok(plan) = creation_plan(v, &fields, &rules) {
        assert!(plan.limit <= room(&rules, 0, plan.length));
        if let Some(cl) = cl {
            assert!(cl <= plan.limit, "{plan:?} {cl}");
            if plan.complete {
                assert_eq!(plan.length, Some(cl));
            }
        }
        assert!(plan.length.is_some() || rules.defer_enabled);
    }
    let Ok(req) = append_fields(v, case.content_type.as_deref(), &fields) else {
        return;
    };
    let up = UploadFacts {
        offset: u64::from(case.up_offset),
        length: case.up_length.map(u64::from).map(|l| l.max(u64::from(case.up_offset))),
        is_final: case.is_final,
    };
    match append_plan(v, &req, &up, &rules) {
        Ok(AppendPlan::Write { limit, set_length, .. }) => {
            assert!(!up.is_final && !up.is_complete());
            assert_eq!(req.offset, up.offset);
            assert!(up.length.is_none() || set_length.is_none());
            let length = up.length.or(set_length);
            assert!(limit <= room(&rules, up.offset, length));
            if let Some(cl) = cl {
                assert!(cl <= limit);
            }
        }
        Ok(AppendPlan::AlreadyComplete) => {
            assert!(up.is_complete() && req.complete && cl == Some(0));
        }
        Err(Refusal::MismatchingOffset { expected, provided }) => {
            assert_eq!((expected, provided), (up.offset, req.offset));
        }
        Err(_) => {
            assert!(up.is_final || up.is_complete() || req.offset == up.offset);
        }
    }
}
