//! Upload IDs: [`UploadId`], the one type every upload ID is carried in (routes, stores,
//! locks, hooks), with the one constructor that checks what an ID may be
//! ([`UploadId::parse`]).
//!
//! A generated ID is a random (v4) UUID in its lowercase hyphenated form, as rustus
//! makes them ([`UploadId::random`]). A `pre-create` hook may choose another
//! (`ChangeFileInfo.ID`, `--hooks-answers`), and a request path, a record's name or a
//! Redis key may name one: every such string passes [`UploadId::parse`] or is no upload.

use std::fmt;

use crate::limits::MAX_HOOK_UPLOAD_ID_BYTES;
use crate::storage::file::assemble::ASSEMBLING_SUFFIX;
use crate::storage::layout::{INFO_SUFFIX, STAGING_SUFFIX, TMP_SUFFIX};

/// Room for an ID and a [`UploadId::derived`] tag (`:` and at most
/// [`MAX_DERIVED_TAG_BYTES`]).
const CAPACITY: usize = MAX_HOOK_UPLOAD_ID_BYTES + 1 + MAX_DERIVED_TAG_BYTES;

/// Longest tag of a derived lock name ([`UploadId::derived`]).
const MAX_DERIVED_TAG_BYTES: usize = 7;

/// The suffixes the storage puts on names beside an upload's data file or record (the
/// record `<id>.info`, its temporary `<id>.info.tmp`, a checksum staging file
/// `<data>.chk`, a final being assembled `<data>.assembling`). An ID ending in one of
/// them could name another upload's side file, so none does.
pub const SIDE_SUFFIXES: [&str; 4] = [INFO_SUFFIX, TMP_SUFFIX, STAGING_SUFFIX, ASSEMBLING_SUFFIX];

/// The paths the daemon answers at the root whatever the base path (`/health`,
/// `/metrics`, `/ready`): with tus at the root (`--url ""`) an upload of such an ID
/// could not be reached.
const ENDPOINTS: [&str; 3] = ["health", "metrics", "ready"];

/// One upload's ID, held inline (`Copy`, no allocation).
///
/// Invariant: `bytes[..len]` passed [`UploadId::parse`] (or is a [`UploadId::derived`]
/// lock name: a valid ID, `:` and a tag), so it is ASCII; `bytes[len..]` are zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId {
    len: u8,
    bytes: [u8; CAPACITY],
}

/// Why a string is not an upload ID (the reason, for a log line or an answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadId(pub &'static str);

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl UploadId {
    /// Checks `id` and takes it as an upload ID. It must be safe as a file name beside
    /// the others (the data file `<id>`, the record `<id>.info`, their side files) and
    /// as a URL path segment: 1 to [`MAX_HOOK_UPLOAD_ID_BYTES`] bytes of RFC 3986
    /// unreserved characters (`A-Z a-z 0-9 - . _ ~`: no `/`, `%`, `:` or anything that
    /// needs escaping), not starting with `.`, no `..`, and not ending in one of
    /// [`SIDE_SUFFIXES`], and not one of the daemon's own root paths (`health`,
    /// `metrics`, `ready`). This is the only gate between a string from outside (a request
    /// path, a hook's answer, a directory entry, a Redis key) and a file name.
    pub fn parse(id: &str) -> Result<UploadId, BadId> {
        if id.is_empty() {
            return Err(BadId("is empty"));
        }
        if id.len() > MAX_HOOK_UPLOAD_ID_BYTES {
            return Err(BadId("is too long"));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            return Err(BadId("may hold only A-Z a-z 0-9 - . _ ~"));
        }
        if id.starts_with('.') {
            return Err(BadId("may not start with '.'"));
        }
        if id.contains("..") {
            return Err(BadId("may not contain '..'"));
        }
        if ENDPOINTS.contains(&id) {
            return Err(BadId(
                "may not be health, metrics or ready (the daemon's own paths)",
            ));
        }
        if SIDE_SUFFIXES.iter().any(|s| id.ends_with(s)) {
            return Err(BadId(
                "may not end in .info, .tmp, .chk or .assembling (the names of the files \
                 the storage keeps beside an upload)",
            ));
        }
        Ok(Self::from_ascii(id.as_bytes()))
    }

    /// A fresh random (v4) ID, lowercase hyphenated as rustus's (see
    /// [`crate::storage::layout::new_uuid`]).
    pub fn random() -> UploadId {
        let uuid = crate::storage::layout::new_uuid();
        Self::from_ascii(
            uuid.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        )
    }

    /// A lock name derived from this ID that no upload has (an ID holds no `:`):
    /// `<id>:<tag>`, for a lock that must not be the upload's own (hybrid-s3's transfer
    /// claim). `tag` is at most 7 bytes of what an ID may hold.
    pub fn derived(&self, tag: &'static str) -> UploadId {
        assert!(
            tag.len() <= MAX_DERIVED_TAG_BYTES && UploadId::parse(tag).is_ok(),
            "a derived tag is short and ID-safe"
        );
        let mut out = *self;
        let at = out.len as usize;
        out.bytes[at] = b':';
        out.bytes[at + 1..at + 1 + tag.len()].copy_from_slice(tag.as_bytes());
        out.len = (at + 1 + tag.len()) as u8;
        out
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see the invariant).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    /// A hash of the ID's bytes (FNV-1a), to spread IDs over shards.
    pub fn spread(&self) -> u64 {
        self.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    fn from_ascii(s: &[u8]) -> UploadId {
        let mut bytes = [0u8; CAPACITY];
        bytes[..s.len()].copy_from_slice(s);
        UploadId {
            len: s.len() as u8,
            bytes,
        }
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UploadId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<UploadId, BadId> {
        UploadId::parse(s)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({:?})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONLY: &str = "may hold only A-Z a-z 0-9 - . _ ~";
    const ENDPOINT: &str = "may not be health, metrics or ready (the daemon's own paths)";
    const SIDE: &str = "may not end in .info, .tmp, .chk or .assembling (the names of the \
                        files the storage keeps beside an upload)";

    #[test]
    fn ids_table() {
        let good = [
            "a",
            "my-custom-upload-id",
            "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01",
            "9E9DD6F5-44B5-4A4E-9A57-2C2D1F0B6A01",
            "db_key.2026~v1",
            "a.b.c",
            "info",
            "x.information",
            "x.info2",
            "x.chk1",
            "x.tmpl",
            "assembling",
            "x-info",
            "healthy",
            "Health",
        ];
        for id in good {
            let parsed = UploadId::parse(id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
            assert_eq!(parsed.as_str(), id);
            assert_eq!(parsed.to_string(), id);
        }
        let longest = "k".repeat(MAX_HOOK_UPLOAD_ID_BYTES);
        assert_eq!(UploadId::parse(&longest).unwrap().as_str(), longest);

        let long = "k".repeat(MAX_HOOK_UPLOAD_ID_BYTES + 1);
        let bad: &[(&str, &str)] = &[
            ("", "is empty"),
            (long.as_str(), "is too long"),
            ("a/b", ONLY),
            ("/abs", ONLY),
            ("trailing/", ONLY),
            ("../x", ONLY),
            ("../../etc/passwd", ONLY),
            ("..", "may not start with '.'"),
            (".", "may not start with '.'"),
            (".hidden", "may not start with '.'"),
            (".tusring-probe-1", "may not start with '.'"),
            ("a..b", "may not contain '..'"),
            ("a..", "may not contain '..'"),
            ("x.info", SIDE),
            ("x.info.tmp", SIDE),
            ("x.tmp", SIDE),
            ("x.chk", SIDE),
            ("x.assembling", SIDE),
            ("9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01.info", SIDE),
            ("9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01.chk", SIDE),
            ("%2f", ONLY),
            ("a%2e%2e", ONLY),
            ("a b", ONLY),
            ("a\\b", ONLY),
            ("a?b", ONLY),
            ("a#b", ONLY),
            ("a:b", ONLY),
            ("tusring:lock:x", ONLY),
            ("a\0b", ONLY),
            ("a\r\nb", ONLY),
            ("é", ONLY),
            ("{9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01}", ONLY),
            ("urn:uuid:9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01", ONLY),
            ("health", ENDPOINT),
            ("metrics", ENDPOINT),
            ("ready", ENDPOINT),
        ];
        for (id, why) in bad {
            assert_eq!(UploadId::parse(id), Err(BadId(why)), "{id:?}");
        }
    }

    #[test]
    fn every_side_file_suffix_is_refused() {
        // What the storage actually names beside an upload, built by its own helpers.
        use crate::storage::file::assemble::assembling_path;
        use crate::storage::layout::{info_path, info_tmp_path, staging_path};
        use std::path::Path;
        let id = UploadId::random();
        let dir = Path::new("/d");
        let data = dir.join(id.as_str());
        let side = [
            info_path(dir, id.as_str()),
            info_tmp_path(dir, id.as_str()),
            staging_path(&data),
            assembling_path(&data),
        ];
        for path in side {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(
                UploadId::parse(name).is_err(),
                "{name} could be an upload's ID"
            );
        }
    }

    #[test]
    fn random_ids_are_rustus_uuids() {
        for _ in 0..100 {
            let id = UploadId::random();
            let u = uuid::Uuid::parse_str(id.as_str()).unwrap();
            assert_eq!(u.get_version_num(), 4);
            assert_eq!(u.hyphenated().to_string(), id.as_str());
            assert_eq!(UploadId::parse(id.as_str()), Ok(id));
        }
        assert_ne!(UploadId::random(), UploadId::random());
    }

    #[test]
    fn derived_names_are_never_ids() {
        let id = UploadId::parse(&"k".repeat(MAX_HOOK_UPLOAD_ID_BYTES)).unwrap();
        let claim = id.derived("s3");
        assert_eq!(claim.as_str(), format!("{id}:s3"));
        assert!(UploadId::parse(claim.as_str()).is_err());
        assert_ne!(claim, id);
        let short = UploadId::parse("a").unwrap();
        assert_ne!(short.derived("s3"), id.derived("s3"));
        assert_ne!(short.spread(), UploadId::parse("b").unwrap().spread());
    }
}
