//! Where things live on disk: upload IDs, the `--dir-structure` template, data and info
//! paths (rustus's layout).

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::storage::id::UploadId;
use crate::time::civil_from_unix;

/// The suffix of an upload's record: `<id>.info`.
pub const INFO_SUFFIX: &str = ".info";

/// The suffix of a file written then renamed over another (a record's `<id>.info.tmp`).
pub const TMP_SUFFIX: &str = ".tmp";

/// The suffix of a checksum's named staging file, `<data>.chk` (only where `O_TMPFILE`
/// is not available: see `file::write`).
pub const STAGING_SUFFIX: &str = ".chk";

/// Parses an upload ID from a URL segment, a record's name or a key:
/// [`UploadId::parse`], the one gate between such strings and file names.
pub fn parse_upload_id(segment: &str) -> Option<UploadId> {
    UploadId::parse(segment).ok()
}

/// Random bytes fetched from the kernel at once per thread for upload IDs: one
/// `getrandom(2)` serves this many bytes / 16 IDs instead of one call per ID.
const ID_RANDOM_BATCH: usize = 4096;

/// A per-thread reserve of kernel random bytes. Invariant: `bytes[used..]` have never
/// been handed out.
struct IdRandom {
    bytes: [u8; ID_RANDOM_BATCH],
    used: usize,
}

thread_local! {
    static ID_RANDOM: std::cell::RefCell<IdRandom> = const {
        std::cell::RefCell::new(IdRandom { bytes: [0; ID_RANDOM_BATCH], used: ID_RANDOM_BATCH })
    };
}

/// Fills `buf` from the kernel's CSPRNG (`getrandom(2)`, which does not block once the
/// pool is initialised, as it is long before a server accepts requests).
fn fill_random(buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of its length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        done += n as usize;
    }
    true
}

/// A fresh random (v4) upload ID: 122 random bits from the kernel's CSPRNG, as
/// `Uuid::new_v4` gives, but taken from a per-thread batch. Its lowercase hyphenated
/// form is the ID ([`UploadId::random`]).
pub fn new_upload_id() -> UploadId {
    UploadId::random()
}

/// The random (v4) UUID behind [`new_upload_id`].
pub fn new_uuid() -> Uuid {
    ID_RANDOM.with(|r| {
        let mut r = r.borrow_mut();
        if r.used + 16 > ID_RANDOM_BATCH {
            if !fill_random(&mut r.bytes) {
                return Uuid::new_v4();
            }
            r.used = 0;
        }
        let mut b = [0u8; 16];
        let at = r.used;
        b.copy_from_slice(&r.bytes[at..at + 16]);
        // Never hand the same bytes out twice.
        r.bytes[at..at + 16].fill(0);
        r.used += 16;
        uuid::Builder::from_random_bytes(b).into_uuid()
    })
}

/// Renders rustus's `--dir-structure`: `{year}` `{month}` `{day}` `{hour}` `{minute}` in
/// UTC from `created_at`, not zero-padded; anything else is kept literally.
pub fn render_dir_structure(template: &str, created_at: i64) -> String {
    if !template.contains('{') {
        return template.to_owned();
    }
    let c = civil_from_unix(created_at);
    let mut out = String::with_capacity(template.len() + 8);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = match after.find('}').map(|close| (&after[..close], close)) {
            Some(("year", n)) => Some((c.year, n)),
            Some(("month", n)) => Some((i64::from(c.month), n)),
            Some(("day", n)) => Some((i64::from(c.day), n)),
            Some(("hour", n)) => Some((i64::from(c.hour), n)),
            Some(("minute", n)) => Some((i64::from(c.minute), n)),
            _ => None,
        };
        match value {
            Some((v, close)) => {
                out.push_str(&v.to_string());
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `data_dir/<rendered template>/<id>`; the rendered part is trimmed of `/` at both ends
/// and left out when empty.
pub fn data_path(data_dir: &Path, template: &str, created_at: i64, id: &str) -> PathBuf {
    let rendered = render_dir_structure(template, created_at);
    let sub = rendered.trim_matches('/');
    let mut path = data_dir.to_path_buf();
    if !sub.is_empty() {
        path.push(sub);
    }
    path.push(id);
    path
}

/// The data file of the upload `info` describes: the record's `path` when it has one (a
/// record written by rustus or an earlier tusring says where the file is), else where
/// [`data_path`] puts it.
pub fn upload_data_path(
    info: &crate::storage::info::UploadInfo,
    data_dir: &Path,
    template: &str,
) -> PathBuf {
    match &info.path {
        Some(p) => PathBuf::from(p),
        None => data_path(data_dir, template, info.created_at, &info.id),
    }
}

/// `info_dir/<id>.info` (one flat directory, whatever the template says).
pub fn info_path(info_dir: &Path, id: &str) -> PathBuf {
    info_dir.join(format!("{id}{INFO_SUFFIX}"))
}

/// The upload ID an info directory entry is the record of (`<id>.info`), if it is one.
pub fn id_of_info_file(name: &std::ffi::OsStr) -> Option<UploadId> {
    name.to_str()
        .and_then(|n| n.strip_suffix(INFO_SUFFIX))
        .and_then(parse_upload_id)
}

/// `info_dir/<id>.info.tmp`, written then renamed over the record.
pub fn info_tmp_path(info_dir: &Path, id: &str) -> PathBuf {
    info_dir.join(format!("{id}{INFO_SUFFIX}{TMP_SUFFIX}"))
}

/// The named staging file of an upload whose data is at `data_path`
/// (`<data>.chk`), used only where `O_TMPFILE` is not available.
pub fn staging_path(data_path: &Path) -> PathBuf {
    let mut name = data_path.as_os_str().to_os_string();
    name.push(STAGING_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01";

    #[test]
    fn id_gate() {
        // Any ID the one rule allows (storage::id's table), not only generated UUIDs;
        // an uppercase or older-version UUID is an ID no upload has here (404).
        let accepted = [
            V4,
            "9E9DD6F5-44B5-4A4E-9A57-2C2D1F0B6A01",
            "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            "9e9dd6f544b54a4e9a572c2d1f0b6a01",
            "my-db-key_7",
        ];
        for s in accepted {
            assert_eq!(
                parse_upload_id(s).map(|u| u.to_string()),
                Some(s.to_owned())
            );
        }
        let rejected = [
            "{9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01}", // braced
            "urn:uuid:9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01",
            " 9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a0",
            "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a0\0",
            "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a0/",
            "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a%2f",
            "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6aé", // non-ASCII
            "9e9dd6f5-44b5-4a4e-9a57-2c2d1f0b6a01.info",
            "..",
            "../../../../../../../../etc/passwd",
            "%2f",
            "a/b",
            "\0",
            "",
        ];
        for s in rejected {
            assert_eq!(parse_upload_id(s), None, "{s:?}");
        }
    }

    #[test]
    fn new_ids_pass_the_gate() {
        for _ in 0..100 {
            let id = new_upload_id();
            assert_eq!(parse_upload_id(&id.to_string()), Some(id));
        }
        assert_ne!(new_upload_id(), new_upload_id());
    }

    #[test]
    fn new_ids_are_unique_across_batch_refills() {
        // Several refills of the per-thread batch, on two threads.
        let n = 3 * ID_RANDOM_BATCH / 16 + 7;
        let other = std::thread::spawn(move || (0..n).map(|_| new_upload_id()).collect::<Vec<_>>());
        let mut all: Vec<UploadId> = (0..n).map(|_| new_upload_id()).collect();
        all.extend(other.join().unwrap());
        let before = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), before, "an ID was handed out twice");
        assert!(all
            .iter()
            .all(|u| Uuid::parse_str(u.as_str()).unwrap().get_version_num() == 4));
    }

    #[test]
    fn template_table() {
        // 2026-03-05 07:08:09 UTC
        let t = 1_772_694_489;
        let table = [
            ("", ""),
            ("uploads", "uploads"),
            ("{year}", "2026"),
            ("{month}", "3"),
            ("{day}", "5"),
            ("{hour}", "7"),
            ("{minute}", "8"),
            ("{second}", "{second}"),
            ("{Year}", "{Year}"),
            ("{year", "{year"),
            ("year}", "year}"),
            ("{}", "{}"),
            ("{", "{"),
            ("}{", "}{"),
            ("{{year}}", "{2026}"),
            ("{ye{year}ar}", "{ye2026ar}"),
            ("{year}{month}", "20263"),
            ("{year}/{month}/{day}/{hour}", "2026/3/5/7"),
            ("/a/{year}-{month}/", "/a/2026-3/"),
            ("{minute}/{minute}", "8/8"),
            ("é{day}é", "é5é"),
        ];
        for (tpl, want) in table {
            assert_eq!(render_dir_structure(tpl, t), want, "{tpl:?}");
        }
        // The spec's example: 1795801207 is 2026-11-27 17:40:07 UTC.
        assert_eq!(
            render_dir_structure("{year}/{month}/{day}/{hour}/{minute}", 1_795_801_207),
            "2026/11/27/17/40"
        );
        assert_eq!(render_dir_structure("{year}/{month}", -1), "1969/12");
    }

    #[test]
    fn paths() {
        let data = Path::new("/abs/data");
        let t = 1_795_801_207;
        assert_eq!(
            data_path(data, "", t, V4),
            PathBuf::from(format!("/abs/data/{V4}"))
        );
        assert_eq!(
            data_path(data, "{year}/{month}/{day}/{hour}", t, V4),
            PathBuf::from(format!("/abs/data/2026/11/27/17/{V4}"))
        );
        assert_eq!(
            data_path(data, "/{year}/", t, V4),
            PathBuf::from(format!("/abs/data/2026/{V4}"))
        );
        assert_eq!(
            data_path(data, "///", t, V4),
            PathBuf::from(format!("/abs/data/{V4}"))
        );
        assert_eq!(
            data_path(Path::new("rel"), "x", t, V4),
            PathBuf::from(format!("rel/x/{V4}"))
        );
        let info = Path::new("/abs/info");
        assert_eq!(
            info_path(info, V4),
            PathBuf::from(format!("/abs/info/{V4}.info"))
        );
        assert_eq!(
            info_tmp_path(info, V4),
            PathBuf::from(format!("/abs/info/{V4}.info.tmp"))
        );
    }
}
