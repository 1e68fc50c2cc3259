//! `--storage hybrid-s3`: uploads are written as files, as with `file-storage`, and each
//! complete one is then moved to an S3 bucket by a thread of its own, with rustus's
//! flags, records and object keys.
//!
//! * `settings`: the `--s3-*` flags, checked at startup (key files read and trimmed,
//!   `--s3-headers` parsed); the object key, the part plan and the retry pauses (pure).
//! * `client`: the S3 calls (rust-s3), each bounded in time.
//! * `hybrid`: the data store of one runtime ([`HybridData`]): the file store's writes,
//!   downloads from the file or the object, removal of both.
//! * `transfer`: the transfer thread: claims, multipart uploads, retries, the scan for
//!   transfers a restart or a dead node left, and the announcement once stored.
//!
//! See DESIGN.md, "Finished files in S3".

mod client;
mod hybrid;
mod settings;
pub mod transfer;

pub use client::S3Client;
pub use hybrid::{Hybrid, HybridData};
pub use settings::{
    is_key_of, object_path, parse_headers, parse_url, parse_word, wire_key, S3Config, S3Settings,
};
pub use transfer::{Announcer, TransferWorker, Transfers};

/// The `storage` value of hybrid-s3 records (rustus's name).
pub const STORAGE_NAME: &str = "s3_storage";
