//! The hybrid-s3 data store of one runtime: uploads are written as files, exactly as by
//! the file store (zero-copy, preallocated), and each complete one is handed to the
//! transfer thread ([`super::transfer`]), which moves it to S3. Downloads are served from
//! the file while it is there and from the object after; removal removes both.
//!
//! A hybrid-s3 record is rustus's: `storage` is `s3_storage` and `path` is the object
//! key (`/<id>` or `<rendered template>/<id>`), from creation on. The file is
//! `<data-dir>/<key>`, where rustus has it. Whether an upload is in S3 is not recorded
//! anywhere new: the file is removed only once the object is stored, so a complete
//! upload whose file is there is waiting for its transfer, and one whose file is gone
//! is in S3. That is what rustus's records and files say too, so both read the other's.
//! Records of another storage (`file_storage`, from before a switch to hybrid-s3) are
//! served as plain files and never moved.

use super::client::{ObjectBody, S3Client, S3Fail};
use super::settings::{is_key_of, local_path, object_path};
use super::transfer::Transfers;
use super::STORAGE_NAME;
use crate::net::BodySink;
use crate::storage::file::{FileData, FileSettings};
use crate::storage::info::UploadInfo;
use crate::storage::{
    Announce, DataReader, DataStat, DataStore, DataWriter, StoreError, StoreFuture,
};
use std::io;
use std::rc::Rc;
use std::sync::Arc;

/// What every runtime's hybrid store shares: settings and the transfer queue.
pub struct Hybrid {
    /// The file store's settings (data directory, template, fsync, splice).
    pub files: FileSettings,
    /// The S3 settings.
    pub s3: super::S3Settings,
    /// The client startup made; each runtime makes its own from it.
    pub client: S3Client,
    /// The transfer thread's queue.
    pub transfers: Transfers,
}

/// The hybrid-s3 store of one runtime.
pub struct HybridData {
    shared: Arc<Hybrid>,
    /// This runtime's file store (body buffers, splice switch).
    files: FileData,
    /// This runtime's S3 client (its connections live on this runtime).
    client: Rc<S3Client>,
}

/// An upload's place under hybrid-s3.
pub(super) struct Place {
    /// The object key, which is also the record's `path`.
    pub key: String,
    /// The record as the file store sees it: `path` is the local file.
    pub local: UploadInfo,
}

impl Hybrid {
    /// The object key of a hybrid record: its `path` when that is a key of its upload
    /// (rustus's, or ours), else where the configuration puts it.
    pub(super) fn key(&self, info: &UploadInfo) -> String {
        match &info.path {
            Some(p) if is_key_of(p, &info.id) => p.clone(),
            _ => object_path(&self.files.dir_structure, info.created_at, &info.id),
        }
    }

    /// Where a hybrid record's bytes are: its key, and the record with `path` set to the
    /// local file; `None` for a record of another storage (served as a file).
    pub(super) fn place(&self, info: &UploadInfo) -> Option<Place> {
        if info.storage != STORAGE_NAME {
            return None;
        }
        let key = self.key(info);
        let mut local = info.clone();
        local.path = Some(
            local_path(&self.files.data_dir, &key)
                .to_string_lossy()
                .into_owned(),
        );
        Some(Place { key, local })
    }
}

impl HybridData {
    /// The store of the calling runtime.
    pub fn new(shared: &Arc<Hybrid>) -> HybridData {
        HybridData {
            files: FileData::new(&shared.files),
            client: Rc::new(shared.client.for_runtime()),
            shared: shared.clone(),
        }
    }

    /// A new upload: a hybrid record whose `path` is its object key.
    fn name(&self, info: &mut UploadInfo) {
        info.storage = STORAGE_NAME.to_owned();
        info.path = Some(object_path(
            &self.shared.files.dir_structure,
            info.created_at,
            &info.id,
        ));
    }

    async fn create_upload(
        &self,
        info: &mut UploadInfo,
    ) -> Result<Box<dyn DataWriter>, StoreError> {
        self.name(info);
        let Some(mut place) = self.shared.place(info) else {
            return self.files.create(info).await;
        };
        self.files.create(&mut place.local).await
    }

    async fn open_upload(&self, info: &UploadInfo) -> Result<Box<dyn DataWriter>, StoreError> {
        match self.shared.place(info) {
            Some(place) => self.files.open(&place.local).await,
            None => self.files.open(info).await,
        }
    }

    async fn stat_upload(&self, info: &UploadInfo) -> Result<DataStat, StoreError> {
        let Some(place) = self.shared.place(info) else {
            return self.files.stat(info).await;
        };
        match self.files.stat_quiet(&place.local).await {
            // The file is removed only once the object is stored: a complete upload
            // whose file is gone is in S3, complete. Its last write is not known any more;
            // its creation stands in (a finished upload never expires).
            Err(StoreError::NotFound) if stored_in_s3(info) => Ok(DataStat {
                size: info.length.unwrap_or(0),
                modified: info.created_at,
            }),
            Err(StoreError::NotFound) => {
                crate::warn!(
                    "upload {}: data file {} is missing; answering 404",
                    info.id,
                    place.local.path.as_deref().unwrap_or("")
                );
                Err(StoreError::NotFound)
            }
            other => other,
        }
    }

    async fn read_upload(&self, info: &UploadInfo) -> Result<Box<dyn DataReader>, StoreError> {
        let Some(place) = self.shared.place(info) else {
            return self.files.read(info).await;
        };
        match self.files.read(&place.local).await {
            Err(StoreError::NotFound) if stored_in_s3(info) => {}
            other => return other,
        }
        // In S3: check that the object is there (and its size) before the answer's
        // head goes out, so a missing object is a 404, not a cut body.
        let size = match self.client.head(&place.key).await {
            Ok(Some(size)) => size,
            Ok(None) => {
                crate::warn!(
                    "upload {}: neither its file nor its object {} exists; answering 404",
                    info.id,
                    place.key
                );
                return Err(StoreError::NotFound);
            }
            Err(e) => {
                crate::warn!("upload {}: S3 HEAD {}: {e}", info.id, place.key);
                return Err(StoreError::Unavailable("S3 is not answering; try again"));
            }
        };
        Ok(Box::new(ObjectReader {
            client: self.client.clone(),
            key: place.key,
            size,
            modified: info.created_at,
        }))
    }

    async fn concat_upload(
        &self,
        parts: &[UploadInfo],
        dest: &mut UploadInfo,
    ) -> Result<(), StoreError> {
        // Parts are never moved to S3 (see `settle`), so the final is assembled from
        // their files, then moved as any complete upload is.
        self.name(dest);
        let parts: Vec<UploadInfo> = parts
            .iter()
            .map(|p| {
                self.shared
                    .place(p)
                    .map_or_else(|| p.clone(), |pl| pl.local)
            })
            .collect();
        let Some(mut place) = self.shared.place(dest) else {
            return self.files.concat(&parts, dest).await;
        };
        self.files.concat(&parts, &mut place.local).await
    }

    async fn remove_upload(&self, info: &UploadInfo) -> Result<(), StoreError> {
        let Some(place) = self.shared.place(info) else {
            return self.files.remove(info).await;
        };
        self.files.remove(&place.local).await?;
        if stored_in_s3(info) {
            // It may be in S3, or on its way: the transfer, finding the record gone when
            // it ends (under the upload's lock, which this DELETE holds), removes what it
            // stored. An incomplete upload has no object (a transfer starts only once the
            // record says complete, and the one a startup scan starts for a record behind
            // its complete file writes the record before the file goes), so its DELETE
            // never waits for S3. The record is already gone, so the upload is gone for
            // every client; an object S3 does not remove now is retried by the transfer
            // thread.
            if let Err(e) = self.client.delete(&place.key).await {
                crate::warn!(
                    "upload {}: S3 DELETE {}: {e}; retrying in the background",
                    info.id,
                    place.key
                );
                self.shared.transfers.delete_later(place.key);
            }
        }
        Ok(())
    }
}

/// The record says the upload is complete and it is one that moves to S3.
fn stored_in_s3(info: &UploadInfo) -> bool {
    info.is_complete() && !info.is_partial
}

impl DataStore for HybridData {
    fn storage_name(&self) -> &'static str {
        STORAGE_NAME
    }

    fn place(&self, info: &mut UploadInfo) {
        self.name(info);
    }

    fn create<'a>(
        &'a self,
        info: &'a mut UploadInfo,
    ) -> StoreFuture<'a, Result<Box<dyn DataWriter>, StoreError>> {
        Box::pin(self.create_upload(info))
    }

    fn open<'a>(
        &'a self,
        info: &'a UploadInfo,
    ) -> StoreFuture<'a, Result<Box<dyn DataWriter>, StoreError>> {
        Box::pin(self.open_upload(info))
    }

    fn stat<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<DataStat, StoreError>> {
        Box::pin(self.stat_upload(info))
    }

    fn read<'a>(
        &'a self,
        info: &'a UploadInfo,
    ) -> StoreFuture<'a, Result<Box<dyn DataReader>, StoreError>> {
        Box::pin(self.read_upload(info))
    }

    fn concat<'a>(
        &'a self,
        parts: &'a [UploadInfo],
        dest: &'a mut UploadInfo,
    ) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(self.concat_upload(parts, dest))
    }

    fn remove<'a>(&'a self, info: &'a UploadInfo) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(self.remove_upload(info))
    }

    fn settle(&self, info: &UploadInfo, announce: Announce) -> Option<Announce> {
        // A partial upload stays a file: it is only an input of a final, which is
        // assembled from the files and then moved (rustus moves parts to S3 and
        // downloads them again to assemble a final, inside the POST).
        if info.storage != STORAGE_NAME || info.is_partial {
            return Some(announce);
        }
        self.shared.transfers.start(info, announce);
        None
    }

    fn probe(&self) -> StoreFuture<'_, Result<(), String>> {
        // Uploads go on while S3 is away (the transfers wait for it), so S3 is not part
        // of health or readiness.
        self.files.probe()
    }
}

/// A download of an upload that is in S3: the range is fetched from the object
/// (`Range` passed through) and written to the client as it arrives.
struct ObjectReader {
    client: Rc<S3Client>,
    key: String,
    size: u64,
    modified: i64,
}

impl ObjectReader {
    async fn send_range(&self, start: u64, len: u64, sink: &mut BodySink<'_>) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let broken = |e: S3Fail| io::Error::other(format!("S3 GET {}: {e}", self.key));
        let mut body: ObjectBody = self
            .client
            .get_range(&self.key, start, start + len - 1)
            .await
            .map_err(broken)?;
        let mut sent = 0u64;
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(broken)?;
            let room = (len - sent).min(chunk.len() as u64) as usize;
            buf.clear();
            buf.extend_from_slice(&chunk[..room]);
            let (res, back) = sink.write_all(buf).await;
            buf = back;
            res?;
            sent += room as u64;
            if sent == len {
                return Ok(());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("S3 GET {}: {sent} of {len} bytes", self.key),
        ))
    }
}

impl DataReader for ObjectReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn modified(&self) -> i64 {
        self.modified
    }

    fn send<'a, 'b>(
        self: Box<Self>,
        start: u64,
        len: u64,
        sink: &'a mut BodySink<'b>,
    ) -> StoreFuture<'a, io::Result<()>> {
        Box::pin(async move { self.send_range(start, len, sink).await })
    }
}
