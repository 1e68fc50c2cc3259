//! Value parsers and the value types they produce: sizes, seconds, counts, booleans,
//! lists, the base path, the storages, `--dir-structure`, the log level and format, and
//! the tus extension set. Each parser takes the text of one value and returns the typed
//! value or the reason it is refused, without the flag: the caller adds that.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::error::shown;
use crate::limits::{MAX_TIMEOUT_SECS, MAX_WORKERS};

/// The log filter (`--log-level`), ordered from quietest to noisiest.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    const ALL: [LogLevel; 6] = [
        LogLevel::Off,
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The level's name as rustus spells it (`INFO`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "OFF",
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }

    pub(super) fn parse(text: &str) -> Result<LogLevel, String> {
        LogLevel::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| "expected one of OFF, ERROR, WARN, INFO, DEBUG, TRACE".to_owned())
    }
}

/// The enabled tus extensions (`--tus-extensions`).
///
/// Invariant (established by [`Extensions::parse`]): `creation` is set whenever
/// `creation_with_upload` or `creation_defer_length` is, `concatenation` whenever
/// `concatenation_unfinished` is, and `checksum` whenever `checksum_trailer` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    pub getting: bool,
    pub creation: bool,
    pub creation_with_upload: bool,
    pub creation_defer_length: bool,
    pub termination: bool,
    pub concatenation: bool,
    pub concatenation_unfinished: bool,
    pub checksum: bool,
    pub checksum_trailer: bool,
    pub expiration: bool,
}

impl Extensions {
    /// Every extension name `--tus-extensions` accepts, in the order the help lists them.
    pub const ALLOWED: [&'static str; 10] = [
        "getting",
        "creation",
        "termination",
        "creation-with-upload",
        "creation-defer-length",
        "concatenation",
        "concatenation-unfinished",
        "checksum",
        "checksum-trailer",
        "expiration",
    ];

    /// The order of the `Tus-Extension` header: rustus's order (`rustus-compat.md`
    /// §2.1), with tusring's additions next to the extension each builds on.
    const HEADER_ORDER: [&'static str; 10] = [
        "creation-defer-length",
        "creation-with-upload",
        "creation",
        "termination",
        "concatenation",
        "concatenation-unfinished",
        "getting",
        "checksum",
        "checksum-trailer",
        "expiration",
    ];

    /// Parses a comma separated list of extension names (items trimmed, empty items
    /// ignored, order and repeats irrelevant) and adds the implied extensions. The error
    /// is the reason only, without the flag.
    pub fn parse(list: &str) -> Result<Extensions, String> {
        let mut ext = Extensions::default();
        for name in split_list(list) {
            match ext.slot(name) {
                Some(enabled) => *enabled = true,
                None => {
                    return Err(format!(
                        "unknown extension '{}'; allowed values: {}",
                        shown(name),
                        Extensions::ALLOWED.join(", ")
                    ))
                }
            }
        }
        // As rustus: either creation variant needs plain creation.
        ext.creation |= ext.creation_with_upload || ext.creation_defer_length;
        ext.concatenation |= ext.concatenation_unfinished;
        ext.checksum |= ext.checksum_trailer;
        Ok(ext)
    }

    /// The enabled extensions' names in `Tus-Extension` order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut copy = *self;
        Extensions::HEADER_ORDER
            .into_iter()
            .filter(|name| copy.slot(name).is_some_and(|enabled| *enabled))
            .collect()
    }

    /// The field for an extension name; the one place names map to fields.
    fn slot(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "getting" => &mut self.getting,
            "creation" => &mut self.creation,
            "creation-with-upload" => &mut self.creation_with_upload,
            "creation-defer-length" => &mut self.creation_defer_length,
            "termination" => &mut self.termination,
            "concatenation" => &mut self.concatenation,
            "concatenation-unfinished" => &mut self.concatenation_unfinished,
            "checksum" => &mut self.checksum,
            "checksum-trailer" => &mut self.checksum_trailer,
            "expiration" => &mut self.expiration,
            _ => return None,
        })
    }
}

/// The validated configuration. Each field's flag, variable and default are in
/// `FLAGS` (and in `--help`).
/// The log line format (`--log-format`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-01-01 00:00:00.000 INFO msg`.
    Human,
    /// `{"ts":"…","level":"INFO","msg":"…"}`.
    Json,
}

impl LogFormat {
    pub(super) fn parse(text: &str) -> Result<LogFormat, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected human or json".to_owned()),
        }
    }
}

/// `--host`: trimmed, not empty. It is resolved (`resolve`) once the port is known.
pub(super) fn parse_host(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(text.trim().to_owned())
    }
}

/// A comma list (`--cors`): items trimmed, empty ones dropped.
pub(super) fn parse_list(list: &str) -> Result<Vec<String>, String> {
    Ok(split_list(list).map(str::to_owned).collect())
}

/// A path setting: any bytes the OS allows, but not empty.
pub(super) fn non_empty_path(value: &OsStr) -> Result<PathBuf, String> {
    if value.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(PathBuf::from(value))
    }
}

/// A size between `min` and `max` bytes.
pub(super) fn parse_size_within(text: &str, min: u64, max: u64) -> Result<usize, String> {
    let n = parse_size(text)?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max} bytes"));
    }
    Ok(n as usize)
}

/// Ring entries: a power of two the kernel accepts without clamping.
pub(super) fn parse_uring_entries(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|_| "not a whole number".to_owned())?;
    if !(64..=32768).contains(&n) || !n.is_power_of_two() {
        return Err("must be a power of two from 64 to 32768".to_owned());
    }
    Ok(n)
}

/// Comma list items, trimmed, empty ones dropped.
pub(super) fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// A whole number between `min` and `max`.
pub(super) fn parse_count(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number ({min}-{max})"));
    }
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be between {min} and {max}")),
    }
}

/// `--hooks-http-urls`: a comma list of `http://` or `https://` URLs with a host.
pub(super) fn parse_hook_urls(list: &str) -> Result<Vec<String>, String> {
    split_list(list)
        .map(|url| {
            let lower = url.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"));
            let host_ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
            if !host_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(format!(
                    "'{}' is not an http:// or https:// URL",
                    shown(url)
                ))
            } else {
                Ok(url.to_owned())
            }
        })
        .collect()
}

/// `--hooks-http-proxy-headers`: a comma list of header names (RFC 9110 tokens).
pub(super) fn parse_header_names(list: &str) -> Result<Vec<String>, String> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    split_list(list)
        .map(|name| {
            if name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b))
            {
                Ok(name.to_owned())
            } else {
                Err(format!("'{}' is not a header name", shown(name)))
            }
        })
        .collect()
}

pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    const TRUE: [&str; 4] = ["true", "1", "yes", "on"];
    const FALSE: [&str; 4] = ["false", "0", "no", "off"];
    let text = text.trim();
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(text)) {
        Ok(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(text)) {
        Ok(false)
    } else {
        Err("expected true or false (also 1/0, yes/no, on/off)".to_owned())
    }
}

pub(super) fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a port number (0-65535)".to_owned());
    }
    text.parse()
        .map_err(|_| "not a port number (0-65535)".to_owned())
}

pub(super) fn parse_workers(text: &str) -> Result<usize, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a number of threads (1-{MAX_WORKERS})"));
    }
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) if n <= MAX_WORKERS => Ok(n),
        _ => Err(format!("must be at most {MAX_WORKERS}")),
    }
}

/// Bytes: a plain integer, or with a binary suffix K, M, G or T (any case): `64M` is
/// 64 MiB. Zero is refused: leave the setting unset for "no limit".
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    const SHAPE: &str = "expected a number of bytes, optionally with a K, M, G or T suffix (64M)";
    let text = text.trim();
    let (digits, shift) = match text.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        Some(b'T') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SHAPE.to_owned());
    }
    let too_large = || format!("too large (at most {} bytes)", u64::MAX);
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    let bytes = number.checked_mul(1u64 << shift).ok_or_else(too_large)?;
    if bytes == 0 {
        return Err("must be greater than 0 (leave it unset for no limit)".to_owned());
    }
    Ok(bytes)
}

/// Longest `--expiration-time`: ten years.
pub const MAX_EXPIRATION_SECS: u64 = 10 * 365 * 24 * 3600;

/// `--expiration-time`: whole seconds in `[1, MAX_EXPIRATION_SECS]`.
pub(super) fn parse_expiration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected whole seconds, e.g. 86400".to_owned());
    }
    match text.parse::<u64>() {
        Ok(0) => Err("must be greater than 0".to_owned()),
        Ok(n) if n <= MAX_EXPIRATION_SECS => Ok(Duration::from_secs(n)),
        _ => Err(format!("must be at most {MAX_EXPIRATION_SECS} seconds")),
    }
}

/// Seconds: an integer or a decimal with up to 9 places (`0.5`), greater than 0 and at
/// most `MAX_TIMEOUT_SECS`. Parsed exactly, without going through floating point.
pub(super) fn parse_secs(text: &str) -> Result<Duration, String> {
    const SHAPE: &str = "expected seconds, e.g. 30 or 0.5";
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !all_digits(whole)
        || !all_digits(fraction)
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(SHAPE.to_owned());
    }
    if fraction.len() > 9 {
        return Err("at most 9 decimal places".to_owned());
    }
    let too_long = || format!("must be at most {MAX_TIMEOUT_SECS} seconds");
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_long())?
    };
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        // Right-pad to 9 digits: "5" -> 500_000_000.
        format!("{fraction:0<9}")
            .parse()
            .map_err(|_| SHAPE.to_owned())?
    };
    let duration = Duration::new(secs, nanos);
    if duration.is_zero() {
        Err("must be greater than 0".to_owned())
    } else if duration > Duration::from_secs(MAX_TIMEOUT_SECS) {
        Err(too_long())
    } else {
        Ok(duration)
    }
}

/// `files/` -> `/files`, `/a/b/` -> `/a/b`, `/` or empty -> `` (the root). Characters
/// that could never match a request path are refused.
pub(super) fn normalize_url(text: &str) -> Result<String, String> {
    if let Some(bad) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
    {
        return Err(format!(
            "a base path cannot contain '{}'",
            bad.escape_debug()
        ));
    }
    let trimmed = text.trim_matches('/');
    Ok(if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    })
}

pub(super) fn parse_storage(text: &str) -> Result<String, String> {
    match text.trim() {
        v @ ("file-storage" | "hybrid-s3") => Ok(v.to_owned()),
        "s3" => Err(
            "storage 's3' is not supported by tusring; use hybrid-s3 (uploads are written \
             locally, then moved to S3 once complete) or file-storage"
                .to_owned(),
        ),
        other => Err(format!(
            "unknown storage '{}'; allowed values: file-storage, hybrid-s3 \
             (s3 is not supported by tusring)",
            shown(other)
        )),
    }
}

pub(super) fn parse_info_storage(text: &str) -> Result<String, String> {
    match text.trim() {
        v @ ("file-info-storage" | "redis-info-storage") => Ok(v.to_owned()),
        other => Err(format!(
            "Unknown info storage '{}'; allowed values: file-info-storage, redis-info-storage",
            shown(other)
        )),
    }
}

/// `--info-db-dsn`: a Redis URL (`redis://`, `redis+unix://` or `unix://`). The rest is
/// checked by the Redis client when the storage opens; this says early what it is not.
pub(super) fn parse_redis_dsn(text: &str) -> Result<String, String> {
    let text = text.trim();
    let scheme = text.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis" | "redis+unix" | "unix") if !text.chars().any(char::is_whitespace) => {
            Ok(text.to_owned())
        }
        Some("rediss") => Err("rediss:// (TLS) is not supported by tusring; use redis://".into()),
        _ => Err("expected a Redis URL, e.g. redis://127.0.0.1:6379/0".to_owned()),
    }
}

/// Longest `--redis-lock-expiration`, in seconds.
pub const MAX_LOCK_EXPIRATION_SECS: u64 = 3600;

/// `--redis-lock-expiration`: seconds (decimals allowed), from 1 to
/// [`MAX_LOCK_EXPIRATION_SECS`]: below a second the renewals (every third of it) would
/// race the takeover wait.
pub(super) fn parse_lock_expiration(text: &str) -> Result<Duration, String> {
    let d = parse_secs(text)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(MAX_LOCK_EXPIRATION_SECS) {
        return Err(format!(
            "must be between 1 and {MAX_LOCK_EXPIRATION_SECS} seconds"
        ));
    }
    Ok(d)
}

/// The template is joined under `--data-dir`, so it must not escape it.
pub(super) fn check_dir_structure(text: &str) -> Result<String, String> {
    if text.contains('\0') {
        Err("must not contain a NUL byte".to_owned())
    } else if text.starts_with('/') {
        Err("must be a relative path (it is placed under --data-dir)".to_owned())
    } else if text.split('/').any(|part| part == "..") {
        Err("must not contain a '..' component".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// `host:port` as an address: an IP literal (IPv6 with or without brackets), else the
/// first address the name resolves to.
pub(super) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (bare, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve the host name: {err}"))?
        .next()
        .ok_or_else(|| "the host name resolves to no address".to_owned())
}
