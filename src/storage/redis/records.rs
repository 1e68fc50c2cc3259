//! The upload records in Redis, as rustus keeps them (`redis-info-storage`): the key is
//! the bare upload ID, the value exactly the `.info` JSON, written with
//! `SET <id> <json> [EX <secs>]` (the expiry, `--redis-info-expiration`, restarts with
//! every write, as rustus does), read with `GET`, removed with `DEL`. So rustus and
//! tusring read each other's records.
//!
//! Read by one reader with the same rules as the file records (at most
//! [`MAX_INFO_BYTES`], rustus's JSON, naming the ID asked for), plus one: the record's
//! data `path` must lie in the data directory ([`protocol::path_allowed`]), since
//! whoever can write to Redis could otherwise point an upload at any file.

use super::conn::{CallError, RedisConn, Retry};
use super::keeper::Keeper;
use super::protocol;
use crate::storage::file::MAX_INFO_BYTES;
use crate::storage::id::UploadId;
use crate::storage::info::UploadInfo;
use crate::storage::layout::parse_upload_id;
use crate::storage::{InfoScan, InfoStore, StoreError, StoreFuture};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Keys SCAN is asked to look at per call (a hint to Redis; it may return more or
/// fewer).
const SCAN_COUNT: usize = 512;

/// The records of one runtime, on its own connection.
pub struct RedisRecords {
    conn: Rc<RedisConn>,
    /// `--redis-info-expiration`.
    expiration: Option<Duration>,
    /// The canonical data directory: a record's `path` must be inside it.
    data_dir: PathBuf,
    /// The key of this node's write probe.
    probe_key: String,
    /// This process's lock keeper: ready only while it hears release requests.
    keeper: Arc<Keeper>,
}

impl RedisRecords {
    /// The records on `conn`.
    pub fn new(
        conn: Rc<RedisConn>,
        expiration: Option<Duration>,
        data_dir: PathBuf,
        node: &str,
        keeper: Arc<Keeper>,
    ) -> RedisRecords {
        RedisRecords {
            conn,
            expiration,
            data_dir,
            probe_key: protocol::probe_key(node),
            keeper,
        }
    }

    async fn read(&self, id: &UploadId) -> Result<UploadInfo, StoreError> {
        let key = &id.to_string();
        // At most one byte past the cap: a larger value is corrupt, and is never pulled
        // whole into memory.
        let end = MAX_INFO_BYTES as isize;
        let got = self
            .conn
            .call("read a record", Retry::Once, |mut c| async move {
                redis::cmd("GETRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(end)
                    .query_async::<Vec<u8>>(&mut c)
                    .await
            })
            .await;
        let bytes = match got {
            Ok(b) => b,
            Err(e) if e.is_code("WRONGTYPE") => {
                crate::error!("Redis key {id} is not an upload record (not a string)");
                return Err(StoreError::Corrupt);
            }
            Err(e) => return Err(e.unavailable()),
        };
        // GETRANGE answers "" for a missing key; an empty value is no record either.
        if bytes.is_empty() {
            return Err(StoreError::NotFound);
        }
        if bytes.len() as u64 > MAX_INFO_BYTES {
            crate::error!("Redis record {id} is larger than {MAX_INFO_BYTES} bytes");
            return Err(StoreError::Corrupt);
        }
        let info = UploadInfo::from_json(&bytes).map_err(|e| {
            crate::error!("Redis record {id} is corrupt: {e}");
            StoreError::Corrupt
        })?;
        if info.id != id.to_string() {
            crate::error!("Redis record {id} names another id");
            return Err(StoreError::Corrupt);
        }
        if let Some(path) = &info.path {
            if !protocol::path_allowed(path, &self.data_dir) {
                crate::error!(
                    "Redis record {id} names a data file outside the data directory {}: refused",
                    self.data_dir.display()
                );
                return Err(StoreError::Corrupt);
            }
        }
        Ok(info)
    }

    /// `SET`, or with `new` `SET ... NX`: set only if the key does not exist, so of two
    /// creations with the same ID, on any node, exactly one writes its record.
    async fn write(&self, info: &UploadInfo, new: bool) -> Result<(), StoreError> {
        let json = &info.to_json();
        let key = &info.id;
        let ex = self.expiration.map(|d| d.as_secs().max(1));
        // A claim is not retried: a first attempt that reached Redis and then lost its
        // answer would make the retry find its own record.
        let retry = if new { Retry::Never } else { Retry::Once };
        let set = self
            .conn
            .call("write a record", retry, |mut c| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(json);
                if let Some(secs) = ex {
                    cmd.arg("EX").arg(secs);
                }
                if new {
                    cmd.arg("NX");
                }
                // "OK", or nil when NX found the key.
                cmd.query_async::<Option<String>>(&mut c).await
            })
            .await
            .map_err(|e| e.unavailable())?;
        match set {
            None => Err(StoreError::Exists),
            Some(_) => Ok(()),
        }
    }
}

impl InfoStore for RedisRecords {
    fn get<'a>(&'a self, id: &'a UploadId) -> StoreFuture<'a, Result<UploadInfo, StoreError>> {
        Box::pin(self.read(id))
    }

    fn put<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write(info, false))
    }

    fn create<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write(info, true))
    }

    fn remove<'a>(&'a self, id: &'a UploadId) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let key = &id.to_string();
            let removed = self
                .conn
                .call("remove a record", Retry::Never, |mut c| async move {
                    redis::cmd("DEL").arg(key).query_async::<u64>(&mut c).await
                })
                .await
                .map_err(|e| e.unavailable())?;
            if removed == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
    }

    fn scan(&self) -> Result<Box<dyn InfoScan + '_>, StoreError> {
        Ok(Box::new(Scan {
            conn: &self.conn,
            cursor: Some(0),
        }))
    }

    fn probe(&self) -> StoreFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let key = &self.probe_key;
            // A write, so a read-only replica is not taken for ready.
            self.conn
                .call("probe", Retry::Once, |mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(crate::time::now_unix())
                        .arg("PX")
                        .arg(60_000)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
                .map_err(|e| probe_failure(self.conn.shown(), &e))?;
            if !self.keeper.subscribed() {
                return Err(format!(
                    "Redis at {}: not listening for release requests from other nodes yet",
                    self.conn.shown()
                ));
            }
            Ok(())
        })
    }
}

/// What `/ready` and `/health` say when Redis does not take a write.
fn probe_failure(shown: &str, e: &CallError) -> String {
    format!("Redis at {shown} is unreachable or refuses writes: {e}")
}

/// A scan of the record keys with `SCAN` (never `KEYS`, which blocks Redis for the
/// whole keyspace). As `SCAN` promises, a record that exists for the whole scan is
/// seen at least once; one may be seen twice.
struct Scan<'a> {
    conn: &'a RedisConn,
    /// The next cursor; `None` once Redis said 0 (the end).
    cursor: Option<u64>,
}

impl InfoScan for Scan<'_> {
    fn next_batch(&mut self) -> StoreFuture<'_, Option<Result<Vec<UploadId>, StoreError>>> {
        Box::pin(async move {
            let cursor = self.cursor?;
            let got = self
                .conn
                .call("scan the records", Retry::Once, |mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(protocol::RECORD_PATTERN)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .arg("TYPE")
                        .arg("string")
                        .query_async::<(u64, Vec<String>)>(&mut c)
                        .await
                })
                .await;
            match got {
                Ok((next, keys)) => {
                    self.cursor = (next != 0).then_some(next);
                    Some(Ok(keys.iter().filter_map(|k| parse_upload_id(k)).collect()))
                }
                Err(e) => {
                    // The scan cannot go on without its cursor: the caller tries again
                    // at its next pass.
                    self.cursor = None;
                    crate::warn!(
                        "Redis at {}: cannot list the records: {e}",
                        self.conn.shown()
                    );
                    Some(Err(e.unavailable()))
                }
            }
        })
    }
}
