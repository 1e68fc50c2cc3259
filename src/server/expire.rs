//! The expiration extension: the request-path check (410 for an expired upload until it
//! is swept), the `Upload-Expires` header, and the background sweep.
//!
//! The sweep runs on its own thread (`tusring-expire`), not on a core: listing a
//! directory has no io_uring operation, and the sweep's few blocking calls per upload
//! must not stall a core's requests. Every `--expiration-sweep-interval` it reads each
//! info record, and removes (info first, then data, as DELETE does) each unfinished
//! upload whose data file was last written more than `--expiration-time` ago, under the
//! upload's lock so a request never sees half of it. It fires no hook: rustus has no
//! expiration, so its hook consumers know no event for it, and `post-terminate` would
//! claim a DELETE that no client sent.

use super::Shared;
use crate::config::Config;
use crate::http::response::Response;
use crate::storage::files::{Upload, MAX_INFO_BYTES};
use crate::storage::info::UploadInfo;
use crate::storage::layout::{self, parse_upload_id};
use crate::storage::locks::UploadLock;
use crate::tus::expiry::{expiry, Expiry};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The lifetime of an unfinished upload in seconds, when the extension is on.
pub fn lifetime(cfg: &Config) -> Option<u64> {
    cfg.extensions
        .expiration
        .then_some(cfg.expiration_time.as_secs())
}

/// An upload's standing, from its record and data file (`load`). A final is never
/// expired on the request path: its client has nothing more to send to it (a waiting
/// final is removed by the sweep once a part is gone, see [`sweep_once`]).
pub fn state(cfg: &Config, upload: &Upload) -> Expiry {
    let finished = upload.info.is_complete() || upload.info.is_final;
    let last = upload.modified.unwrap_or(i64::MAX);
    expiry(crate::time::now_unix(), last, lifetime(cfg), finished)
}

/// The standing of an upload just written (now), for POST and PATCH answers.
pub fn state_after_write(
    cfg: &Config,
    info: &UploadInfo,
    wrote: bool,
    before: Option<i64>,
) -> Expiry {
    let now = crate::time::now_unix();
    let last = if wrote { now } else { before.unwrap_or(now) };
    expiry(
        now,
        last,
        lifetime(cfg),
        info.is_complete() || info.is_final,
    )
}

/// 410 for an expired upload that the sweep has not removed yet.
pub fn check(cfg: &Config, upload: &Upload) -> Result<Expiry, crate::error::Error> {
    match state(cfg, upload) {
        Expiry::Expired => Err(crate::error::Error::Gone),
        other => Ok(other),
    }
}

/// `Upload-Expires` (IMF-fixdate) when the upload will expire.
pub fn expires_header(resp: &mut Response, state: Expiry) {
    if let Expiry::At(at) = state {
        resp.header("Upload-Expires", crate::time::http_date(at));
    }
}

/// The running sweep thread; [`Sweeper::stop`] ends it.
pub struct Sweeper {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Sweeper {
    /// Starts the sweep when the expiration extension is on.
    pub fn start(shared: &Arc<Shared>) -> Option<Sweeper> {
        let lifetime = lifetime(&shared.config)?;
        let interval = shared.config.expiration_sweep_interval;
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tusring-expire".into())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let store = &shared.store;
                let n = sweep_once(
                    &store.info_dir,
                    &store.data_dir,
                    &store.dir_structure,
                    lifetime,
                    &stopped,
                );
                if n > 0 {
                    crate::info!("expiration: removed {n} expired upload(s)");
                }
            });
        match thread {
            Ok(thread) => Some(Sweeper { stop, thread }),
            Err(e) => {
                crate::error!("cannot start the expiration thread: {e}; uploads will not expire");
                None
            }
        }
    }

    /// Stops the sweep (a sweep in progress ends after the upload it is at).
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// What the sweep needs of one data file.
struct DataStat {
    size: u64,
    modified: i64,
}

fn stat(path: &Path) -> Option<DataStat> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(DataStat {
        size: m.len(),
        modified: m.mtime(),
    })
}

fn read_record(path: &Path) -> Option<UploadInfo> {
    let m = std::fs::metadata(path).ok()?;
    if m.len() > MAX_INFO_BYTES {
        return None;
    }
    UploadInfo::from_json(&std::fs::read(path).ok()?).ok()
}

/// Where the sweep looks.
struct Dirs<'a> {
    info: &'a Path,
    data: &'a Path,
    template: &'a str,
}

/// Whether the upload recorded in `info` has expired now.
fn expired(info: &UploadInfo, dirs: &Dirs<'_>, lifetime: u64) -> bool {
    let Some(data) = stat(&layout::upload_data_path(info, dirs.data, dirs.template)) else {
        return false; // no data file: not ours to judge (the request path answers 404)
    };
    let finished = info.length.is_some_and(|l| data.size >= l);
    if info.is_final && !finished {
        // A waiting final expires only once a part is gone (expired or deleted): until
        // then its last part's completion will assemble it.
        let parts = info.parts.as_deref().unwrap_or(&[]);
        let all_there = parts.iter().all(|p| {
            parse_upload_id(p).is_some()
                && std::fs::metadata(layout::info_path(dirs.info, p)).is_ok()
        });
        if all_there {
            return false;
        }
    }
    expiry(
        crate::time::now_unix(),
        data.modified,
        Some(lifetime),
        finished,
    ) == Expiry::Expired
}

/// One pass over the info directory; returns how many uploads were removed. Stops early
/// when `stop` is disconnected (shutdown).
pub fn sweep_once(
    info_dir: &Path,
    data_dir: &Path,
    template: &str,
    lifetime: u64,
    stop: &mpsc::Receiver<()>,
) -> usize {
    let entries = match std::fs::read_dir(info_dir) {
        Ok(e) => e,
        Err(e) => {
            crate::warn!("expiration: cannot list {}: {e}", info_dir.display());
            return 0;
        }
    };
    let dirs = Dirs {
        info: info_dir,
        data: data_dir,
        template,
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if matches!(stop.try_recv(), Err(TryRecvError::Disconnected) | Ok(())) {
            break;
        }
        let Some(id) = crate::storage::layout::id_of_info_file(&entry.file_name()) else {
            continue;
        };
        let info_path = entry.path();
        let Some(info) = read_record(&info_path) else {
            continue;
        };
        if info.id != id.to_string() || !expired(&info, &dirs, lifetime) {
            continue;
        }
        // Under the lock, read and judge again: a PATCH may have just written.
        let Some(_lock) = UploadLock::try_acquire(id) else {
            continue;
        };
        let Some(info) = read_record(&info_path) else {
            continue;
        };
        if !expired(&info, &dirs, lifetime) {
            continue;
        }
        if let Err(e) = std::fs::remove_file(&info_path) {
            crate::warn!("expiration: cannot remove {}: {e}", info_path.display());
            continue;
        }
        let data = layout::upload_data_path(&info, data_dir, template);
        if let Err(e) = std::fs::remove_file(&data) {
            if e.kind() != std::io::ErrorKind::NotFound {
                crate::warn!("expiration: cannot remove {}: {e}", data.display());
            }
        }
        if info.is_final {
            super::concat::forget(&id);
        }
        crate::metrics::upload_expired();
        crate::info!("expiration: upload {id} expired and was removed");
        removed += 1;
    }
    removed
}
