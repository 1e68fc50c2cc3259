//! Structured Field Values for HTTP (RFC 9651, which obsoletes RFC 8941), as the
//! resumable-uploads draft uses them: `Upload-Offset` and `Upload-Length` are Integers,
//! `Upload-Complete` a Boolean, `Upload-Limit` a Dictionary, and the digest fields of
//! RFC 9530 (`Content-Digest`, `Repr-Digest`) Dictionaries of Byte Sequences.
//!
//! The parsers follow RFC 9651 §4.2 step by step, for every item type (Integers,
//! Decimals, Strings, Tokens, Byte Sequences, Booleans, Dates, Display Strings), with
//! Parameters and Inner Lists, so a Dictionary member of a type the draft does not use
//! is parsed and can be ignored rather than failing the whole field. They are linear in
//! the input and never allocate more than the input's size. Serialization is only what
//! tusring sends: Integers and a Dictionary of Integers.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};

/// The largest Integer a structured field can carry (RFC 9651 §3.3.1: 15 digits).
pub const MAX_INTEGER: i64 = 999_999_999_999_999;

/// Byte Sequences are base64 (RFC 4648 §4); RFC 9651 §4.2.7 lets a parser accept them
/// without padding, which some senders leave out.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a field value is not a valid structured field. The draft's rule for a field
/// that does not parse is to ignore it (or refuse the request); which one is the
/// caller's decision, so the reason is only for messages and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SfError(pub &'static str);

/// A bare item (RFC 9651 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BareItem {
    /// An Integer, at most 15 digits.
    Integer(i64),
    /// A Decimal, kept as its text (nothing here computes with one).
    Decimal(String),
    /// A String (printable ASCII).
    String(String),
    /// A Token.
    Token(String),
    /// A Byte Sequence, decoded.
    Bytes(Vec<u8>),
    /// A Boolean (`?1`, `?0`).
    Boolean(bool),
    /// A Date (`@` and an Integer of seconds), RFC 9651 §3.3.7.
    Date(i64),
    /// A Display String (`%"..."`, percent-encoded UTF-8), RFC 9651 §3.3.8.
    DisplayString(String),
}

/// Parameters: ordered keys with values (a key given twice keeps its first place and
/// its last value, RFC 9651 §4.2.3.2).
pub type Params = Vec<(String, BareItem)>;

/// An Item: a bare item and its Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The value.
    pub bare: BareItem,
    /// Its Parameters.
    pub params: Params,
}

/// A Dictionary member's value: an Item, or an Inner List with its Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// An Item.
    Item(Item),
    /// An Inner List and its Parameters.
    InnerList(Vec<Item>, Params),
}

/// A Dictionary: ordered keys with members (a key given twice keeps its first place and
/// its last value, RFC 9651 §4.2.2).
pub type Dictionary = Vec<(String, Member)>;

/// The input being parsed: a byte slice consumed from the front.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn next(&mut self) -> Option<u8> {
        let (&c, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.rest = &self.rest[1..];
            true
        } else {
            false
        }
    }

    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.rest = &self.rest[1..];
        }
    }
}

/// Trims the field value's surrounding whitespace (an HTTP parser strips it; a value
/// handed in from elsewhere might not be).
fn field(value: &[u8]) -> Input<'_> {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    Input {
        rest: &value[start..end],
    }
}

/// Parses a field value as an Item (RFC 9651 §4.2.3).
pub fn parse_item(value: &[u8]) -> Result<Item, SfError> {
    let mut input = field(value);
    let item = item(&mut input)?;
    if !input.rest.is_empty() {
        return Err(SfError("trailing characters after the item"));
    }
    Ok(item)
}

/// Parses a field value as a Dictionary (RFC 9651 §4.2.2). An empty value is an empty
/// Dictionary.
pub fn parse_dictionary(value: &[u8]) -> Result<Dictionary, SfError> {
    let mut input = field(value);
    let mut dict: Dictionary = Vec::new();
    while !input.rest.is_empty() {
        let name = key(&mut input)?;
        let member = if input.eat(b'=') {
            item_or_inner_list(&mut input)?
        } else {
            Member::Item(Item {
                bare: BareItem::Boolean(true),
                params: parameters(&mut input)?,
            })
        };
        match dict.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = member,
            None => dict.push((name, member)),
        }
        input.skip_ows();
        if input.rest.is_empty() {
            return Ok(dict);
        }
        if !input.eat(b',') {
            return Err(SfError("expected a comma between dictionary members"));
        }
        input.skip_ows();
        if input.rest.is_empty() {
            return Err(SfError("a dictionary cannot end with a comma"));
        }
    }
    Ok(dict)
}

/// A non-negative Integer Item (its Parameters ignored), as the draft's `Upload-Offset`
/// and `Upload-Length` are; `None` for anything else.
pub fn non_negative_integer(value: &[u8]) -> Option<u64> {
    match parse_item(value).ok()?.bare {
        BareItem::Integer(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

/// A Boolean Item (its Parameters ignored), as the draft's `Upload-Complete` is; `None`
/// for anything else.
pub fn boolean(value: &[u8]) -> Option<bool> {
    match parse_item(value).ok()?.bare {
        BareItem::Boolean(b) => Some(b),
        _ => None,
    }
}

/// Serializes a non-negative Integer (RFC 9651 §4.1.4); values past [`MAX_INTEGER`]
/// cannot be sent and are clamped to it.
pub fn integer(n: u64) -> String {
    n.min(MAX_INTEGER as u64).to_string()
}

/// Serializes a Dictionary whose members are all non-negative Integers (RFC 9651
/// §4.1.2), in the order given. Keys must be valid keys (lowercase, as the draft's are).
pub fn dictionary_of_integers(members: &[(&str, u64)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in members.iter().enumerate() {
        debug_assert!(is_key(k.as_bytes()), "{k}");
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&integer(*v));
    }
    out
}

/// Whether `k` is a valid key (RFC 9651 §3.1.2).
fn is_key(k: &[u8]) -> bool {
    matches!(k.first(), Some(b'a'..=b'z' | b'*')) && k.iter().all(|&c| is_key_char(c))
}

fn is_key_char(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn item_or_inner_list(input: &mut Input<'_>) -> Result<Member, SfError> {
    if input.peek() == Some(b'(') {
        inner_list(input)
    } else {
        item(input).map(Member::Item)
    }
}

fn inner_list(input: &mut Input<'_>) -> Result<Member, SfError> {
    if !input.eat(b'(') {
        return Err(SfError("an inner list starts with '('"));
    }
    let mut items = Vec::new();
    loop {
        input.skip_sp();
        if input.eat(b')') {
            let params = parameters(input)?;
            return Ok(Member::InnerList(items, params));
        }
        if input.rest.is_empty() {
            return Err(SfError("an inner list must end with ')'"));
        }
        items.push(item(input)?);
        if !matches!(input.peek(), Some(b' ' | b')')) {
            return Err(SfError("inner list items are separated by spaces"));
        }
    }
}

fn item(input: &mut Input<'_>) -> Result<Item, SfError> {
    let bare = bare_item(input)?;
    let params = parameters(input)?;
    Ok(Item { bare, params })
}

fn parameters(input: &mut Input<'_>) -> Result<Params, SfError> {
    let mut params: Params = Vec::new();
    while input.eat(b';') {
        input.skip_sp();
        let name = key(input)?;
        let value = if input.eat(b'=') {
            bare_item(input)?
        } else {
            BareItem::Boolean(true)
        };
        match params.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => params.push((name, value)),
        }
    }
    Ok(params)
}

fn key(input: &mut Input<'_>) -> Result<String, SfError> {
    if !matches!(input.peek(), Some(b'a'..=b'z' | b'*')) {
        return Err(SfError("a key starts with a lowercase letter or '*'"));
    }
    let len = input
        .rest
        .iter()
        .position(|&c| !is_key_char(c))
        .unwrap_or(input.rest.len());
    let (k, rest) = input.rest.split_at(len);
    input.rest = rest;
    // Only ASCII key characters were taken.
    Ok(String::from_utf8_lossy(k).into_owned())
}

fn bare_item(input: &mut Input<'_>) -> Result<BareItem, SfError> {
    match input.peek() {
        Some(b'-' | b'0'..=b'9') => number(input),
        Some(b'"') => string(input).map(BareItem::String),
        Some(b'*' | b'a'..=b'z' | b'A'..=b'Z') => Ok(BareItem::Token(token(input))),
        Some(b':') => byte_sequence(input).map(BareItem::Bytes),
        Some(b'?') => {
            input.next();
            match input.next() {
                Some(b'1') => Ok(BareItem::Boolean(true)),
                Some(b'0') => Ok(BareItem::Boolean(false)),
                _ => Err(SfError("a boolean is ?1 or ?0")),
            }
        }
        Some(b'@') => {
            input.next();
            match number(input)? {
                BareItem::Integer(n) => Ok(BareItem::Date(n)),
                _ => Err(SfError("a date is an integer")),
            }
        }
        Some(b'%') => display_string(input).map(BareItem::DisplayString),
        _ => Err(SfError("not the start of an item")),
    }
}

/// RFC 9651 §4.2.4: an Integer or a Decimal.
fn number(input: &mut Input<'_>) -> Result<BareItem, SfError> {
    let negative = input.eat(b'-');
    if !matches!(input.peek(), Some(b'0'..=b'9')) {
        return Err(SfError("a number starts with a digit"));
    }
    let mut digits = String::new();
    let mut decimal = false;
    while let Some(c) = input.peek() {
        match c {
            b'0'..=b'9' => digits.push(c as char),
            b'.' if !decimal => {
                if digits.len() > 12 {
                    return Err(SfError("a decimal has at most 12 integer digits"));
                }
                digits.push('.');
                decimal = true;
            }
            _ => break,
        }
        input.next();
        if (!decimal && digits.len() > 15) || (decimal && digits.len() > 16) {
            return Err(SfError("too many digits"));
        }
    }
    if decimal {
        let frac = digits.len() - digits.find('.').map_or(0, |i| i + 1);
        if digits.ends_with('.') || frac > 3 {
            return Err(SfError("a decimal has one to three fraction digits"));
        }
        if negative {
            digits.insert(0, '-');
        }
        return Ok(BareItem::Decimal(digits));
    }
    // At most 15 digits: always fits.
    let n: i64 = digits.parse().map_err(|_| SfError("bad integer"))?;
    Ok(BareItem::Integer(if negative { -n } else { n }))
}

/// RFC 9651 §4.2.5.
fn string(input: &mut Input<'_>) -> Result<String, SfError> {
    input.next();
    let mut out = String::new();
    loop {
        match input.next() {
            None => return Err(SfError("a string must end with '\"'")),
            Some(b'"') => return Ok(out),
            Some(b'\\') => match input.next() {
                Some(c @ (b'"' | b'\\')) => out.push(c as char),
                _ => return Err(SfError("only '\"' and '\\' may be escaped in a string")),
            },
            Some(c @ 0x20..=0x7e) => out.push(c as char),
            Some(_) => return Err(SfError("a string holds printable ASCII only")),
        }
    }
}

/// RFC 9651 §4.2.6.
fn token(input: &mut Input<'_>) -> String {
    let len = input
        .rest
        .iter()
        .skip(1)
        .position(|&c| !(is_tchar(c) || c == b':' || c == b'/'))
        .map_or(input.rest.len(), |i| i + 1);
    let (t, rest) = input.rest.split_at(len);
    input.rest = rest;
    String::from_utf8_lossy(t).into_owned()
}

/// RFC 9651 §4.2.7.
fn byte_sequence(input: &mut Input<'_>) -> Result<Vec<u8>, SfError> {
    input.next();
    let Some(end) = input.rest.iter().position(|&c| c == b':') else {
        return Err(SfError("a byte sequence must end with ':'"));
    };
    let (b64, rest) = input.rest.split_at(end);
    if !b64
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    {
        return Err(SfError("a byte sequence holds base64 characters only"));
    }
    input.rest = &rest[1..];
    BASE64
        .decode(b64)
        .map_err(|_| SfError("a byte sequence is not valid base64"))
}

/// RFC 9651 §4.2.10.
fn display_string(input: &mut Input<'_>) -> Result<String, SfError> {
    input.next();
    if !input.eat(b'"') {
        return Err(SfError("a display string starts with '%\"'"));
    }
    let mut bytes = Vec::new();
    loop {
        match input.next() {
            None => return Err(SfError("a display string must end with '\"'")),
            Some(b'"') => {
                return String::from_utf8(bytes)
                    .map_err(|_| SfError("a display string is not valid UTF-8"))
            }
            Some(b'%') => {
                let hex = |c: Option<u8>| match c {
                    Some(c @ b'0'..=b'9') => Ok(c - b'0'),
                    Some(c @ b'a'..=b'f') => Ok(c - b'a' + 10),
                    _ => Err(SfError("a display string escapes as %xx, lowercase hex")),
                };
                let hi = hex(input.next())?;
                let lo = hex(input.next())?;
                bytes.push(hi << 4 | lo);
            }
            Some(c @ 0x20..=0x7e) => bytes.push(c),
            Some(_) => return Err(SfError("a display string holds printable ASCII only")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(n: i64) -> BareItem {
        BareItem::Integer(n)
    }

    #[test]
    fn integers_as_the_draft_reads_them() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"100", Some(100)),
            (b" 42 ", Some(42)),
            (b"007", Some(7)),
            (b"999999999999999", Some(999_999_999_999_999)),
            // 16 digits, negative, decimals, other types: not an offset.
            (b"1000000000000000", None),
            (b"-1", None),
            (b"-0", Some(0)),
            (b"1.0", None),
            (b"?1", None),
            (b"\"5\"", None),
            (b"5a", None),
            (b"5 5", None),
            (b"5,6", None),
            (b"", None),
            (b"+5", None),
            // Parameters are allowed and ignored.
            (b"5;a=1", Some(5)),
            (b"5;A=1", None),
            (b"5;", None),
        ];
        for (v, want) in cases {
            assert_eq!(
                non_negative_integer(v),
                *want,
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn booleans_as_the_draft_reads_them() {
        let cases: &[(&[u8], Option<bool>)] = &[
            (b"?1", Some(true)),
            (b"?0", Some(false)),
            (b" ?1", Some(true)),
            (b"?1;x", Some(true)),
            (b"?2", None),
            (b"?", None),
            (b"1", None),
            (b"true", None),
            (b"?1 ?0", None),
            (b"?1,?0", None),
            (b"", None),
        ];
        for (v, want) in cases {
            assert_eq!(boolean(v), *want, "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn items_of_every_type() {
        let cases: &[(&[u8], BareItem)] = &[
            (b"-12", int(-12)),
            (b"1.5", BareItem::Decimal("1.5".into())),
            (b"-0.125", BareItem::Decimal("-0.125".into())),
            (
                b"\"a \\\"q\\\" \\\\\"",
                BareItem::String("a \"q\" \\".into()),
            ),
            (b"foo/bar:baz", BareItem::Token("foo/bar:baz".into())),
            (b"*x", BareItem::Token("*x".into())),
            (b":aGVsbG8=:", BareItem::Bytes(b"hello".to_vec())),
            (b":aGVsbG8:", BareItem::Bytes(b"hello".to_vec())),
            (b"::", BareItem::Bytes(Vec::new())),
            (b"@1659578233", BareItem::Date(1_659_578_233)),
            (b"%\"f%c3%bc\"", BareItem::DisplayString("f\u{fc}".into())),
        ];
        for (v, want) in cases {
            assert_eq!(
                parse_item(v).map(|i| i.bare),
                Ok(want.clone()),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
        let bad: &[&[u8]] = &[
            b"1.",
            b"1.1234",
            b"1234567890123.1",
            b"\"open",
            b"\"\\n\"",
            b"\"\x7f\"",
            b":a*b:",
            b":abc",
            b"@1.5",
            b"%\"%C3\"",
            b"%\"%c3\"",
            b"%x",
            b"(1 2)",
            b"-",
            b"-a",
            b"1;=2",
        ];
        for v in bad {
            assert!(parse_item(v).is_err(), "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn dictionaries() {
        let d =
            parse_dictionary(b"max-size=1000, min-size=0,expires=60;x, flag, l=(1 2);p").unwrap();
        let keys: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["max-size", "min-size", "expires", "flag", "l"]);
        assert_eq!(
            d[0].1,
            Member::Item(Item {
                bare: int(1000),
                params: vec![]
            })
        );
        assert_eq!(
            d[3].1,
            Member::Item(Item {
                bare: BareItem::Boolean(true),
                params: vec![]
            })
        );
        assert_eq!(
            d[4].1,
            Member::InnerList(
                vec![
                    Item {
                        bare: int(1),
                        params: vec![]
                    },
                    Item {
                        bare: int(2),
                        params: vec![]
                    }
                ],
                vec![("p".into(), BareItem::Boolean(true))]
            )
        );
        // A key given twice keeps its place and takes the last value.
        let d = parse_dictionary(b"a=1, b=2, a=3").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            (
                "a".into(),
                Member::Item(Item {
                    bare: int(3),
                    params: vec![]
                })
            )
        );
        assert_eq!(parse_dictionary(b"").unwrap(), vec![]);
        assert_eq!(parse_dictionary(b"  ").unwrap(), vec![]);
        for bad in [
            &b"a=1,"[..],
            b"a=1,,b=2",
            b"A=1",
            b"a=1 b=2",
            b"a=(1",
            b"a=(1,2)",
            b"=1",
            b"a=1;",
            b",a=1",
        ] {
            assert!(
                parse_dictionary(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn serializes_what_it_parses() {
        let text = dictionary_of_integers(&[("max-size", 1_000_000_000), ("min-size", 0)]);
        assert_eq!(text, "max-size=1000000000, min-size=0");
        let d = parse_dictionary(text.as_bytes()).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(integer(u64::MAX), "999999999999999");
        assert_eq!(
            non_negative_integer(integer(u64::MAX).as_bytes()),
            Some(999_999_999_999_999)
        );
    }
}
