//! rustus's `--s3-*` flags, what startup makes of them, and the pure rules of the
//! transfer: the object key, the part plan, the retry pauses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::storage::layout::render_dir_structure;

/// The `--s3-*` flags as given (`rustus-compat.md` §1.2). Only `--storage hybrid-s3`
/// reads them; [`S3Settings::resolve`] checks them at startup.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// `--s3-url`: the endpoint, `http://` or `https://`.
    pub url: Option<String>,
    /// `--s3-bucket`.
    pub bucket: Option<String>,
    /// `--s3-region`.
    pub region: Option<String>,
    /// `--s3-access-key`.
    pub access_key: Option<String>,
    /// `--s3-access-key-path`: a file holding the access key.
    pub access_key_path: Option<PathBuf>,
    /// `--s3-secret-key`.
    pub secret_key: Option<String>,
    /// `--s3-secret-key-path`: a file holding the secret key.
    pub secret_key_path: Option<PathBuf>,
    /// `--s3-security-token`.
    pub security_token: Option<String>,
    /// `--s3-session-token`.
    pub session_token: Option<String>,
    /// `--s3-profile`: a section of `~/.aws/credentials`.
    pub profile: Option<String>,
    /// `--s3-headers`: extra headers sent with every S3 request, in the order given.
    /// Invariant: names are HTTP tokens, values visible ASCII (checked by
    /// [`parse_headers`]).
    pub headers: Vec<(String, String)>,
    /// `--s3-force-path-style`: `<url>/<bucket>/<key>` rather than
    /// `<bucket>.<host>/<key>`.
    pub force_path_style: bool,
    /// `--s3-concat-concurrent-downloads`: accepted for rustus; tusring assembles finals
    /// from the local part files and downloads nothing.
    pub concat_concurrent_downloads: usize,
}

impl std::fmt::Debug for S3Config {
    /// The secrets are not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<hidden>");
        f.debug_struct("S3Config")
            .field("url", &self.url)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &hidden(&self.access_key))
            .field("access_key_path", &self.access_key_path)
            .field("secret_key", &hidden(&self.secret_key))
            .field("secret_key_path", &self.secret_key_path)
            .field("security_token", &hidden(&self.security_token))
            .field("session_token", &hidden(&self.session_token))
            .field("profile", &self.profile)
            .field("headers", &self.headers.len())
            .field("force_path_style", &self.force_path_style)
            .field(
                "concat_concurrent_downloads",
                &self.concat_concurrent_downloads,
            )
            .finish()
    }
}

/// `--s3-url`: an `http://` or `https://` URL with a host.
pub fn parse_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| "expected an http:// or https:// URL".to_owned())?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("the URL has no host".to_owned());
    }
    if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("the URL holds spaces or control characters".to_owned());
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// A non-empty value without spaces or control characters (bucket, region, keys,
/// tokens, profile).
pub fn parse_word(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("must not hold spaces or control characters".to_owned());
    }
    Ok(text.to_owned())
}

/// `--s3-headers`: a JSON object whose values are strings, e.g.
/// `{"x-amz-acl":"public-read"}` (rustus panics on anything else; here it is an error
/// saying what is wrong).
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!("not JSON ({e}); expected an object like {{\"x-amz-acl\":\"public-read\"}}")
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err("expected a JSON object of header names and string values".to_owned());
    };
    let mut headers = Vec::with_capacity(map.len());
    for (name, value) in map {
        let serde_json::Value::String(value) = value else {
            return Err(format!("the value of header {name:?} is not a string"));
        };
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(format!("{name:?} is not a valid header name"));
        }
        if !value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return Err(format!(
                "the value of header {name:?} holds control or non-ASCII characters"
            ));
        }
        headers.push((name, value));
    }
    Ok(headers)
}

/// What startup made of the `--s3-*` flags: everything a client needs, the key files
/// read.
#[derive(Clone)]
pub struct S3Settings {
    /// The endpoint, without a trailing `/`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The region.
    pub region: String,
    /// The access key (`None`: the usual AWS sources, see [`S3Settings::resolve`]).
    pub access_key: Option<String>,
    /// The secret key.
    pub secret_key: Option<String>,
    /// `--s3-security-token`.
    pub security_token: Option<String>,
    /// `--s3-session-token`.
    pub session_token: Option<String>,
    /// `--s3-profile`.
    pub profile: Option<String>,
    /// `--s3-headers`.
    pub headers: Vec<(String, String)>,
    /// `--s3-force-path-style`.
    pub path_style: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bucket {} at {}", self.bucket, self.endpoint)
    }
}

impl S3Settings {
    /// Checks the flags `--storage hybrid-s3` needs and reads the key files. A key given
    /// in a file is trimmed of surrounding whitespace (rustus keeps a trailing newline,
    /// which then signs every request wrong). Without a key, the usual AWS sources are
    /// asked (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, then `--s3-profile` or
    /// `default` in `~/.aws/credentials`) where rustus panics. Runs at startup.
    pub fn resolve(c: &S3Config) -> Result<S3Settings, String> {
        let need = |v: &Option<String>, flag: &str, env: &str| {
            v.clone()
                .ok_or_else(|| format!("--storage hybrid-s3 needs --{flag} ({env})"))
        };
        let endpoint = need(&c.url, "s3-url", "RUSTUS_S3_URL")?;
        let bucket = need(&c.bucket, "s3-bucket", "RUSTUS_S3_BUCKET")?;
        let region = need(&c.region, "s3-region", "RUSTUS_S3_REGION")?;
        let access_key = key_from(&c.access_key, &c.access_key_path, "--s3-access-key-path")?;
        let secret_key = key_from(&c.secret_key, &c.secret_key_path, "--s3-secret-key-path")?;
        // One key without the other would sign every request wrong.
        match (&access_key, &secret_key) {
            (Some(_), None) => {
                return Err(
                    "--s3-access-key (or its file) needs --s3-secret-key (or its file)".to_owned(),
                )
            }
            (None, Some(_)) => {
                return Err(
                    "--s3-secret-key (or its file) needs --s3-access-key (or its file)".to_owned(),
                )
            }
            _ => {}
        }
        Ok(S3Settings {
            endpoint,
            bucket,
            region,
            access_key,
            secret_key,
            security_token: c.security_token.clone(),
            session_token: c.session_token.clone(),
            profile: c.profile.clone(),
            headers: c.headers.clone(),
            path_style: c.force_path_style,
        })
    }
}

/// A key given as a value, else read from `path` and trimmed; `None` when neither.
fn key_from(
    value: &Option<String>,
    path: &Option<PathBuf>,
    flag: &str,
) -> Result<Option<String>, String> {
    if let Some(v) = value {
        return Ok(Some(v.clone()));
    }
    let Some(path) = path else { return Ok(None) };
    read_key_file(path)
        .map(Some)
        .map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// The key in `path`, trimmed of surrounding whitespace (a trailing newline above all).
pub fn read_key_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let key = text.trim();
    if key.is_empty() {
        return Err("the file is empty".to_owned());
    }
    if key.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("the key holds spaces or control characters".to_owned());
    }
    Ok(key.to_owned())
}

/// rustus's object key for an upload, which is also its record's `path`:
/// `<rendered --dir-structure, trailing '/' trimmed>/<id>`, so `/<id>` without a
/// template (rustus-compat §4.1, hybrid-s3).
pub fn object_path(template: &str, created_at: i64, id: &str) -> String {
    let rendered = render_dir_structure(template, created_at);
    format!("{}/{id}", rendered.trim_end_matches('/'))
}

/// Whether `path` (a record's `path`) is a key [`object_path`] can have made for the
/// upload `id`: it ends with `/<id>` (or is `<id>`), and has no `..`, `.` or empty
/// segment past its leading `/`, no backslash and no control character. A record whose
/// `path` is not (a planted or hand-edited one) is served by the key the configuration
/// gives, never by its own: a record can name no object or local file but its upload's.
pub fn is_key_of(path: &str, id: &str) -> bool {
    let rel = path.strip_prefix('/').unwrap_or(path);
    let Some(dir) = rel.strip_suffix(id) else {
        return false;
    };
    if !(dir.is_empty() || dir.ends_with('/')) {
        return false;
    }
    rel.bytes().all(|b| b > b' ' && b != 0x7f && b != b'\\')
        && rel
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// The key as S3 sees it: the record's path without its one leading `/` (rust-s3, which
/// rustus uses, drops it when it builds the request URL, so rustus's objects are there).
pub fn wire_key(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path)
}

/// Where a hybrid-s3 upload's bytes are kept until they are in S3: under the data
/// directory, at the key's place (the same file rustus uses:
/// `<data-dir>/<rendered template>/<id>`). `path` must pass [`is_key_of`].
pub fn local_path(data_dir: &Path, path: &str) -> PathBuf {
    data_dir.join(wire_key(path))
}

/// S3's limits on a multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// The smallest part S3 takes (all but the last part).
pub const MIN_PART: u64 = 5 * 1024 * 1024;

/// How a file of `len` bytes is cut into parts: the part size (a multiple of 1 MiB, at
/// least `base`, large enough that at most [`MAX_PARTS`] parts are needed) and the
/// number of parts (at least 1: an empty file is one empty part).
pub fn part_plan(len: u64, base: u64) -> (u64, u64) {
    const MIB: u64 = 1024 * 1024;
    let base = base.max(MIN_PART);
    let needed = len.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    let size = base.max(needed);
    (size, len.div_ceil(size).max(1))
}

/// The pause before retry `attempt` (1 for the first retry): `min` doubling, at most
/// `max`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01";

    #[test]
    fn object_path_is_rustus_key() {
        // 2026-03-01 12:05:00 UTC.
        let t = 1_772_366_700;
        assert_eq!(object_path("", t, ID), format!("/{ID}"));
        assert_eq!(
            object_path("{year}/{month}/{day}", t, ID),
            format!("2026/3/1/{ID}")
        );
        assert_eq!(object_path("{year}/", t, ID), format!("2026/{ID}"));
        assert_eq!(object_path("up/{hour}", t, ID), format!("up/12/{ID}"));
        assert_eq!(wire_key(&format!("/{ID}")), ID);
        assert_eq!(wire_key(&format!("2026/{ID}")), format!("2026/{ID}"));
    }

    #[test]
    fn only_keys_of_the_upload_are_trusted() {
        for ok in [
            format!("/{ID}"),
            ID.to_owned(),
            format!("2026/3/1/{ID}"),
            format!("/a/b/{ID}"),
        ] {
            assert!(is_key_of(&ok, ID), "{ok}");
        }
        for bad in [
            "/etc/passwd".to_owned(),
            format!("../{ID}"),
            format!("a/../../{ID}"),
            format!("a//{ID}"),
            format!("./{ID}"),
            format!("x{ID}"),
            format!("/{ID}/"),
            format!("/{ID}.info"),
            format!("a\\b/{ID}"),
            format!("a b/{ID}"),
            format!("a\0/{ID}"),
            format!("//{ID}"),
            String::new(),
        ] {
            assert!(!is_key_of(&bad, ID), "{bad:?}");
        }
        let data = Path::new("/srv/data");
        assert_eq!(local_path(data, &format!("/{ID}")), data.join(ID));
        assert_eq!(
            local_path(data, &format!("2026/3/{ID}")),
            data.join("2026").join("3").join(ID)
        );
    }

    #[test]
    fn parts_fit_s3_limits() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(part_plan(0, 8 * MIB), (8 * MIB, 1));
        assert_eq!(part_plan(1, 8 * MIB), (8 * MIB, 1));
        assert_eq!(part_plan(8 * MIB, 8 * MIB), (8 * MIB, 1));
        assert_eq!(part_plan(8 * MIB + 1, 8 * MIB), (8 * MIB, 2));
        assert_eq!(part_plan(1 << 30, 8 * MIB), (8 * MIB, 128));
        // A base below S3's minimum is raised to it.
        assert_eq!(part_plan(20 * MIB, MIB), (5 * MIB, 4));
        // 1 TiB: 8 MiB parts would be 131,072 of them.
        let (size, n) = part_plan(1 << 40, 8 * MIB);
        assert!(
            n <= MAX_PARTS && size % MIB == 0 && size * n >= 1 << 40,
            "{size} {n}"
        );
        // The largest upload tus allows still fits.
        let (size, n) = part_plan(i64::MAX as u64, 8 * MIB);
        assert!(n <= MAX_PARTS && size.checked_mul(n).is_some_and(|t| t >= i64::MAX as u64));
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(10));
        let got: Vec<u128> = (1..=8).map(|a| backoff(a, min, max).as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
        assert_eq!(backoff(200, min, max), max);
    }

    #[test]
    fn headers_are_a_json_object_of_strings() {
        assert_eq!(
            parse_headers(r#"{"x-amz-acl":"public-read","X-Two":"a b"}"#),
            Ok(vec![
                ("X-Two".to_owned(), "a b".to_owned()),
                ("x-amz-acl".to_owned(), "public-read".to_owned())
            ])
        );
        assert_eq!(parse_headers("{}"), Ok(vec![]));
        for (bad, says) in [
            ("x-amz-acl: public-read", "not JSON"),
            ("{\"a\":", "not JSON"),
            ("[\"a\"]", "expected a JSON object"),
            ("\"a\"", "expected a JSON object"),
            (r#"{"a":1}"#, "is not a string"),
            (r#"{"a":null}"#, "is not a string"),
            (r#"{"a b":"c"}"#, "not a valid header name"),
            (r#"{"":"c"}"#, "not a valid header name"),
            (r#"{"a":"c\nd"}"#, "control or non-ASCII"),
            (r#"{"a":"é"}"#, "control or non-ASCII"),
        ] {
            let err = parse_headers(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn urls_and_words() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/"),
            Ok("http://127.0.0.1:9000".into())
        );
        assert_eq!(
            parse_url(" https://s3.example.com "),
            Ok("https://s3.example.com".into())
        );
        for bad in [
            "s3.example.com",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_word(" us-east-1 "), Ok("us-east-1".into()));
        assert!(parse_word("").is_err());
        assert!(parse_word("a b").is_err());
    }

    #[test]
    fn key_files_are_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("tusring-s3key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, "AKIDEXAMPLE\n").unwrap();
        assert_eq!(read_key_file(&f), Ok("AKIDEXAMPLE".to_owned()));
        std::fs::write(&f, "  secret/with+chars\r\n\n").unwrap();
        assert_eq!(read_key_file(&f), Ok("secret/with+chars".to_owned()));
        std::fs::write(&f, "\n").unwrap();
        assert!(read_key_file(&f).unwrap_err().contains("empty"));
        std::fs::write(&f, "two\nlines\n").unwrap();
        assert!(read_key_file(&f).is_err());
        assert!(read_key_file(&dir.join("missing")).is_err());
        let mut c = S3Config {
            url: Some("http://127.0.0.1:1".into()),
            bucket: Some("b".into()),
            region: Some("r".into()),
            access_key_path: Some(dir.join("ak")),
            secret_key: Some("direct".into()),
            ..S3Config::default()
        };
        std::fs::write(dir.join("ak"), "AK\n").unwrap();
        let s = S3Settings::resolve(&c).unwrap();
        assert_eq!(s.access_key.as_deref(), Some("AK"));
        assert_eq!(s.secret_key.as_deref(), Some("direct"));
        c.secret_key = None;
        let err = S3Settings::resolve(&c).unwrap_err();
        assert!(err.contains("needs --s3-secret-key"), "{err}");
        c.secret_key = Some("direct".into());
        c.access_key_path = Some(dir.join("missing"));
        let err = S3Settings::resolve(&c).unwrap_err();
        assert!(err.starts_with("--s3-access-key-path "), "{err}");
        c.bucket = None;
        let err = S3Settings::resolve(&c).unwrap_err();
        assert!(err.contains("--s3-bucket (RUSTUS_S3_BUCKET)"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
