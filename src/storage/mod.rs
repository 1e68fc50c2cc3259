//! Where uploads live, behind three small interfaces, as rustus splits them (and tusd's
//! stores and lockers do):
//!
//! * [`InfoStore`]: the upload records (rustus's `.info` JSON): get, put atomically,
//!   remove, and scan (the startup index of waiting finals and the expiration sweep).
//! * [`DataStore`]: the uploaded bytes. It owns how a body reaches storage: it takes the
//!   connection's body *source* ([`crate::net::BodySource`]) and writes it at an offset
//!   up to a limit ([`DataWriter::write_body`]), so a file store can splice the socket
//!   into its file and a remote store can read into its own buffers; it sends a range
//!   to a download's sink ([`DataReader::send`]); it concatenates finals, removes, and
//!   says how many bytes it holds ([`DataStore::stat`]: the recovered offset).
//! * [`Locker`]: one writer per upload, with newest-wins takeover (a lock request
//!   carries a [`crate::net::Release`] by which a newer request asks the holder to let
//!   go). It is chosen with the info store: process-local with file records.
//!
//! The request path speaks only to these: no file, descriptor or path of the data
//! reaches it. [`Storage`] is what startup chose (`--info-storage`, `--storage`) and is
//! shared by every thread; each runtime (a core, a helper thread) takes its own handles
//! from it ([`Storage::stores`]), whose futures run on that runtime. Records are files
//! ([`file::FileRecords`]) or Redis ([`redis::RedisRecords`]); data is files
//! ([`file::FileData`]); the locker goes with the records: the process-wide lock table
//! ([`locks::ProcessLocks`]) with files, that table plus a lock in Redis
//! ([`redis::RedisLocks`]) with Redis, so that several nodes can share the uploads.
//!
//! Store errors are a small enum ([`StoreError`]) mapped to the answer in
//! [`mod@crate::error`]; a store that cannot answer now (a remote one that is down) says
//! [`StoreError::Unavailable`], which the client gets as 503 with `Retry-After`.

pub mod fault;
pub mod file;
pub mod id;
pub mod info;
pub mod layout;
pub mod locks;
pub mod redis;
pub mod s3;

use crate::config::Config;
use crate::error::Error;
use crate::net::{BodySink, BodySource, Release};
use crate::storage::id::UploadId;
use info::UploadInfo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// The future of a store call: it runs on the runtime of the thread that made the
/// store's handle (a core's, or a helper thread's own), so it need not be `Send`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What a store can say went wrong.
#[derive(Debug)]
pub enum StoreError {
    /// No such upload (404).
    NotFound,
    /// The upload's record cannot be used: too big, not rustus's JSON, or naming another
    /// upload (500).
    Corrupt,
    /// The store cannot hold an upload that long (413), e.g. `EFBIG` when reserving it.
    TooLarge(&'static str),
    /// An operation failed; `what` names it (500, or 507 for a full disk).
    Io {
        /// The operation, e.g. "write data file".
        what: &'static str,
        /// The OS error.
        err: io::Error,
    },
    /// The store cannot answer now (a remote store that is down or slow): 503 with
    /// `Retry-After`; nothing was changed.
    Unavailable(&'static str),
    /// A new upload's record or data is already there (an ID a hook chose that another
    /// upload has): 409; nothing was changed.
    Exists,
}

impl StoreError {
    /// An I/O failure of the operation `what`.
    pub fn io(what: &'static str, err: io::Error) -> StoreError {
        StoreError::Io { what, err }
    }
}

/// The upload records.
pub trait InfoStore {
    /// The record of `id`, read by the store's one reader (for files: no symlinks, a size
    /// cap, and the record must name `id`). Its `offset` is as recorded; the true offset
    /// is the data's ([`Stores::load`]).
    fn get<'a>(&'a self, id: &'a UploadId) -> StoreFuture<'a, Result<UploadInfo, StoreError>>;
    /// Writes the record atomically: a reader sees the old one or the new one, never a
    /// mix (with `--force-fsync`, durably before it returns).
    fn put<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<(), StoreError>>;
    /// Writes the record of a new upload only if the upload has none, as one atomic step
    /// ([`StoreError::Exists`] if it has, with nothing changed): the claim of an ID a
    /// hook chose, so of two creations with the same ID exactly one gets it, on any node.
    fn create<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<(), StoreError>>;
    /// Removes the record; [`StoreError::NotFound`] when there is none.
    fn remove<'a>(&'a self, id: &'a UploadId) -> StoreFuture<'a, Result<(), StoreError>>;
    /// Every upload that has a record, in batches. Used only off the cores (the startup
    /// index of waiting finals, the expiration sweep), so an implementation may block
    /// while listing.
    fn scan(&self) -> Result<Box<dyn InfoScan + '_>, StoreError>;
    /// Whether the store takes a write now (`/health`, `/ready`); the reason if not.
    fn probe(&self) -> StoreFuture<'_, Result<(), String>>;
}

/// A scan in progress ([`InfoStore::scan`]).
pub trait InfoScan {
    /// The next IDs (an empty batch may come before the end), or `None` at the end.
    fn next_batch(&mut self) -> StoreFuture<'_, Option<Result<Vec<UploadId>, StoreError>>>;
}

/// What a data store holds of one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataStat {
    /// Bytes stored: the upload's offset, whatever its record says.
    pub size: u64,
    /// The last write (unix seconds), for the expiration extension.
    pub modified: i64,
}

/// The uploaded bytes.
pub trait DataStore {
    /// The `storage` value of the records of new uploads (rustus's name of the storage:
    /// every hook payload of the upload shows it, `pre-create`'s included).
    fn storage_name(&self) -> &'static str {
        info::STORAGE_NAME
    }
    /// Sets where a new upload's data goes (a file store: the record's `path`).
    fn place(&self, info: &mut UploadInfo);
    /// Creates the data of a new upload, exclusively (never over another's), sets its
    /// place in `info`, and opens it for the creating request. It reserves no room: a
    /// declared length is not on its way ([`DataWriter::write_body`] reserves for a body).
    fn create<'a>(
        &'a self,
        info: &'a mut UploadInfo,
    ) -> StoreFuture<'a, Result<Box<dyn DataWriter>, StoreError>>;
    /// Creates a new upload's data, exclusively, holding the whole body that came with
    /// the request's head ([`BodySource::whole_in_hand`]), in one go where the store can
    /// (the file store: one chain of linked operations, no reservation), and sets its
    /// place in `info`. `None` when it does not, with nothing created and the body
    /// untouched: the caller then uses [`DataStore::create`] and writes the body.
    fn create_whole<'a, 'b>(
        &'a self,
        info: &'a mut UploadInfo,
        body: &'a mut BodySource<'b>,
    ) -> StoreFuture<'a, Option<Result<Written, StoreError>>> {
        let _ = (info, body);
        Box::pin(std::future::ready(None))
    }
    /// Opens an existing upload's data for a request that appends to it.
    fn open<'a>(
        &'a self,
        info: &'a UploadInfo,
    ) -> StoreFuture<'a, Result<Box<dyn DataWriter>, StoreError>>;
    /// How many bytes are stored, and when they were last written.
    fn stat<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<DataStat, StoreError>>;
    /// Opens the data for a download, as it is now.
    fn read<'a>(
        &'a self,
        info: &'a UploadInfo,
    ) -> StoreFuture<'a, Result<Box<dyn DataReader>, StoreError>>;
    /// Writes the parts' bytes, in order, as `dest`'s data, all or nothing (sets `dest`'s
    /// place); the parts are not changed. [`StoreError::NotFound`] when a part is gone.
    fn concat<'a>(
        &'a self,
        parts: &'a [UploadInfo],
        dest: &'a mut UploadInfo,
    ) -> StoreFuture<'a, Result<(), StoreError>>;
    /// Removes the upload's data (and whatever the store keeps beside it); none is fine.
    fn remove<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<(), StoreError>>;
    /// The upload just became complete (its last byte is stored and its record says
    /// so). A store that keeps the data where it is gives `announce` back, and the
    /// caller runs it now (`post-finish`); one that moves the data on first (hybrid-s3:
    /// to S3) keeps it and runs it once the data is where it stays.
    fn settle(&self, info: &UploadInfo, announce: Announce) -> Option<Announce> {
        let _ = info;
        Some(announce)
    }
    /// Whether the store takes a write now (`/health`, `/ready`); the reason if not.
    fn probe(&self) -> StoreFuture<'_, Result<(), String>>;
}

/// What to do once a complete upload's data is where it stays (`post-finish`): run with
/// the upload's record, on whatever thread the data store finishes on
/// ([`DataStore::settle`]).
pub type Announce = Box<dyn FnOnce(UploadInfo) -> StoreFuture<'static, ()> + Send>;

/// An upload's data, open for one request that appends to it.
pub trait DataWriter {
    /// Stores the body from `body` at offset `at`, at most `limit` bytes; bytes past the
    /// limit (a chunked body running on) are refused with 413.
    ///
    /// Room is reserved for the bytes on their way before any is read (and so before a
    /// `100 Continue`): the body's `Content-Length` (at most `limit`), or for a chunked
    /// body [`crate::limits::CHUNKED_RESERVE_BYTES`] ahead of the bytes stored. A store
    /// without room for a Content-Length body answers [`Error::InsufficientStorage`]
    /// (507) with nothing read and nothing stored (a chunked body's window is best
    /// effort: its length is unknown); room reserved and not filled is given back
    /// before it returns, so a body cut short holds nothing. With `check`, the body is
    /// verified first and becomes part of the upload only if the check passes: none of
    /// it is stored otherwise, even after a crash in the middle. The offset afterwards
    /// counts every byte stored, also of a body cut short; `error` is what the store
    /// itself saw (a failed write, the overrun, the check's refusal), not how the body
    /// ended (the caller asks `body.end()`).
    fn write_body<'a, 'b>(
        &'a mut self,
        body: &'a mut BodySource<'b>,
        at: u64,
        limit: u64,
        check: Option<&'a mut dyn BodyCheck>,
    ) -> StoreFuture<'a, Written>;
}

/// A verification of a body as it is stored (the checksum extension).
pub trait BodyCheck {
    /// The next bytes of the body, in order.
    fn update(&mut self, bytes: &[u8]);
    /// Once the whole body has arrived (`body` says its trailers): may it be kept?
    fn verdict(&mut self, body: &BodySource<'_>) -> Result<(), Error>;
}

/// What [`DataWriter::write_body`] achieved.
#[derive(Debug)]
pub struct Written {
    /// The upload's offset afterwards: every byte stored, including those of a body
    /// that was cut short.
    pub end_offset: u64,
    /// Why storing stopped early or was refused, if it was.
    pub error: Option<Error>,
}

/// An upload's data, open for a download.
pub trait DataReader {
    /// Bytes stored when it was opened (what a download of all of it sends).
    fn size(&self) -> u64;
    /// The last write (unix seconds).
    fn modified(&self) -> i64;
    /// Sends `len` bytes from offset `start` to `sink` (the answer's head is sent). An
    /// error means the body was cut short and the connection must close.
    fn send<'a, 'b>(
        self: Box<Self>,
        start: u64,
        len: u64,
        sink: &'a mut BodySink<'b>,
    ) -> StoreFuture<'a, io::Result<()>>;
}

/// The upload locks.
pub trait Locker {
    /// Takes the lock on `id` at once, or `None` when another request holds it; never
    /// takes anything over (a creation, an assembly, the sweep, `--remove-parts`).
    fn try_lock(&self, id: UploadId) -> StoreFuture<'_, Result<Option<Lock>, StoreError>>;
    /// The lock of an upload being created, whose ID nobody else knows yet (it is told
    /// in the creation's answer, after the lock is let go of): a locker that also holds
    /// locks elsewhere (Redis) may skip that. As `try_lock` otherwise.
    fn lock_new(&self, id: UploadId) -> StoreFuture<'_, Result<Option<Lock>, StoreError>> {
        self.try_lock(id)
    }
    /// Takes the lock on `id` for a request that may take it over from an older holder,
    /// newest request first: an older holder that gave a [`Release`] is asked to let go
    /// and awaited, at most [`locks::TAKEOVER_WAIT`]. `release` is this request's own,
    /// when it may be taken over in turn (a PATCH).
    fn lock(
        &self,
        id: UploadId,
        release: Option<Release>,
    ) -> StoreFuture<'_, Result<Acquired, StoreError>>;
    /// Locks this process holds now (uploads being written or deleted).
    fn held(&self) -> usize;
}

/// How [`Locker::lock`] ended.
#[derive(Debug)]
pub enum Acquired {
    /// The lock, and whether an older holder had to be asked to let go first.
    Lock(Lock, bool),
    /// The upload stayed held (423).
    Busy,
}

/// A held upload lock; released when dropped.
pub struct Lock {
    /// The locker's hold; its `Drop` releases the lock.
    _guard: Box<dyn LockGuard>,
}

impl Lock {
    /// Wraps a locker's guard.
    pub fn new(guard: Box<dyn LockGuard>) -> Lock {
        Lock { _guard: guard }
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lock")
    }
}

/// A locker's hold on one upload: its `Drop` releases the lock.
pub trait LockGuard {}

/// An upload as the request path sees it: its record, with the offset recovered from
/// the data.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The info record; its `offset` is set to the bytes stored.
    pub info: UploadInfo,
    /// The last write (unix seconds), for the expiration extension; `None` when only the
    /// record was read.
    pub modified: Option<i64>,
}

impl Upload {
    /// Bytes stored (when it was loaded).
    pub fn offset(&self) -> u64 {
        self.info.offset
    }
}

/// One runtime's handles on the storage (see [`Storage::stores`]).
#[derive(Clone)]
pub struct Stores {
    /// The records.
    pub info: Rc<dyn InfoStore>,
    /// The bytes.
    pub data: Rc<dyn DataStore>,
    /// The locks.
    pub locker: Rc<dyn Locker>,
}

impl Stores {
    /// Loads an upload: its record and, from its data, its offset and last write.
    pub async fn load(&self, id: &UploadId) -> Result<Upload, StoreError> {
        let mut info = self.info.get(id).await?;
        let stat = self.data.stat(&info).await?;
        if stat.size != info.offset {
            crate::debug!(
                "upload {id}: offset {} recovered from the data (record said {})",
                stat.size,
                info.offset
            );
        }
        info.offset = stat.size;
        Ok(Upload {
            info,
            modified: Some(stat.modified),
        })
    }

    /// Removes an upload: the record first (the upload is gone for every later request),
    /// then its data. [`StoreError::NotFound`] when it has no record.
    pub async fn remove(&self, id: &UploadId, info: &UploadInfo) -> Result<(), StoreError> {
        self.info.remove(id).await?;
        self.data.remove(info).await
    }

    /// Whether the data and the records take a write now; the first reason if not.
    pub async fn probe(&self) -> Result<(), String> {
        self.data.probe().await?;
        self.info.probe().await
    }
}

/// The storage startup chose, shared by every thread: settings, and how each runtime
/// makes its handles.
pub struct Storage {
    /// Makes a runtime's info store.
    info: Box<dyn Fn() -> Rc<dyn InfoStore> + Send + Sync>,
    /// Makes a runtime's data store.
    data: Box<dyn Fn() -> Rc<dyn DataStore> + Send + Sync>,
    /// Makes a runtime's locker.
    locker: Box<dyn Fn() -> Rc<dyn Locker> + Send + Sync>,
    /// Where the data and the records are, for the startup log line.
    description: String,
    /// What must be done before the process exits (the Redis lock keeper releases the
    /// locks still queued), given a deadline.
    close: Option<Box<dyn Fn(std::time::Instant) + Send + Sync>>,
    /// hybrid-s3: what every runtime's store shares, and the transfer thread's work
    /// until [`Storage::take_transfers`] takes it.
    hybrid: Option<(Arc<s3::Hybrid>, Mutex<Option<s3::TransferWorker>>)>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Storage {
    /// Opens the storage `config` names (`--info-storage`, `--storage`), checking at once
    /// that it takes a write. Runs at startup, before any core, so it may block.
    pub fn open(config: &Config) -> Result<Storage, String> {
        let files = file::FileSettings::open(config)?;
        let mut description;
        let info: Box<dyn Fn() -> Rc<dyn InfoStore> + Send + Sync>;
        let locker: Box<dyn Fn() -> Rc<dyn Locker> + Send + Sync>;
        let close: Option<Box<dyn Fn(std::time::Instant) + Send + Sync>>;
        if config.info_storage == "redis-info-storage" {
            let redis = redis::RedisSettings::open(config, &files.data_dir)?;
            description = format!("data in {}, {}", files.data_dir.display(), redis.describe());
            let (records, locks, keeper) = (redis.clone(), redis.clone(), redis);
            info = Box::new(move || Rc::new(records.records()));
            locker = Box::new(move || Rc::new(locks.locks()));
            close = Some(Box::new(move |deadline| keeper.close(deadline)));
        } else {
            description = format!(
                "data in {}, info in {}",
                files.data_dir.display(),
                files.info_dir.display()
            );
            let records = files.clone();
            info = Box::new(move || Rc::new(file::FileRecords::new(&records)));
            locker = Box::new(|| Rc::new(locks::ProcessLocks));
            close = None;
        }
        if config.storage == "hybrid-s3" {
            let settings = s3::S3Settings::resolve(&config.s3)?;
            let client = s3::S3Client::open(&settings)?;
            description = format!("{description}, complete uploads moved to S3 {settings:?}");
            let (transfers, worker) = s3::Transfers::new();
            let hybrid = Arc::new(s3::Hybrid {
                files,
                s3: settings,
                client,
                transfers,
            });
            let shared = hybrid.clone();
            return Ok(Storage {
                info,
                data: Box::new(move || Rc::new(s3::HybridData::new(&shared))),
                locker,
                description,
                close,
                hybrid: Some((hybrid, Mutex::new(Some(worker)))),
            });
        }
        Ok(Storage {
            info,
            data: Box::new(move || Rc::new(file::FileData::new(&files))),
            locker,
            description,
            close,
            hybrid: None,
        })
    }

    /// Before the process exits, once no request runs any more: lets the stores finish
    /// what they do in the background (releasing the Redis locks still queued), until
    /// `deadline` at most.
    pub fn close(&self, deadline: std::time::Instant) {
        if let Some(close) = &self.close {
            close(deadline);
        }
    }

    /// hybrid-s3: the transfer thread's work, once (`None` for another storage, or when
    /// taken already). Its caller runs it on a thread of its own with that thread's
    /// [`Stores`].
    pub fn take_transfers(&self) -> Option<(s3::TransferWorker, Arc<s3::Hybrid>)> {
        let (hybrid, worker) = self.hybrid.as_ref()?;
        let worker = worker.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some((worker, hybrid.clone()))
    }

    /// Stops the storage's own threads (hybrid-s3: the transfers, which are moved after
    /// the next start).
    pub fn stop(&self) {
        if let Some((hybrid, _)) = &self.hybrid {
            hybrid.transfers.stop();
        }
    }

    /// The handles for the calling thread's runtime.
    pub fn stores(&self) -> Stores {
        Stores {
            info: (self.info)(),
            data: (self.data)(),
            locker: (self.locker)(),
        }
    }

    /// Where the data and the records are (for the log).
    pub fn describe(&self) -> &str {
        &self.description
    }
}
