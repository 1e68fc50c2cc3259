//! Helper threads for storage-wide work off the cores: the expiration sweep, the
//! startup index of waiting finals and (hybrid-s3) the transfers to S3.
//!
//! Each runs a small io_uring runtime of its own, so it reaches the uploads through the
//! same stores, and the same interfaces, as the cores do (one record reader for every
//! caller; a remote store's client runs there too), while what may block (listing the
//! records, waiting between sweeps) blocks only this thread.

use super::Shared;
use crate::storage::Stores;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Submission queue entries of a helper thread's ring: it runs one task, with one
/// operation in flight at a time.
const HELPER_URING_ENTRIES: u32 = 64;

/// Starts the thread `name`, which runs `work` with its own stores on its own runtime.
pub fn spawn<F, Fut>(name: &str, shared: &Arc<Shared>, work: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce(Stores, Arc<Shared>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let shared = shared.clone();
    let name = name.to_string();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut builder = tokio_uring::builder();
            builder.entries(HELPER_URING_ENTRIES);
            let rt = match tokio_uring::Runtime::new(&builder) {
                Ok(rt) => rt,
                Err(e) => {
                    crate::error!("{name}: cannot set up io_uring: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let stores = shared.storage.stores();
                work(stores, shared).await
            });
        })
}
