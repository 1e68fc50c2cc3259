//! The S3 calls hybrid-s3 makes, over rust-s3 (the client rustus uses, so credentials,
//! profiles, extra headers and path style behave as they do there). One [`S3Client`] per
//! runtime: its HTTP connections (reqwest, on the runtime's tokio reactor) belong to the
//! runtime that made it, as the Redis connections do.
//!
//! Every call is bounded in time here, whatever the server does, and answers with a
//! small [`S3Fail`]: the object or the multipart upload is not there, or anything else
//! (the transfer retries those; a download is refused or cut).

use super::settings::{wire_key, S3Settings};
use bytes::Bytes;
use s3::creds::Credentials;
use s3::request::tokio_backend::ReqwestRequest;
use s3::request::Request as _;
use s3::{Bucket, Region};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

/// How long a call may take that moves no data (HEAD, DELETE, create, complete, abort,
/// list), and how long a download may wait for its next bytes.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one part (or a small file's one PUT) may take to upload: at least 28 KB/s
/// for an 8 MiB part.
pub const PART_TIMEOUT: Duration = Duration::from_secs(300);

/// What went wrong with an S3 call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Fail {
    /// No such object (404).
    NotFound,
    /// The multipart upload is gone (aborted, expired, or the server lost it): start a
    /// new one.
    NoSuchUpload,
    /// Anything else: the server is down or slow, refused the request, or said
    /// something unexpected. The text says what.
    Other(String),
}

impl std::fmt::Display for S3Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Fail::NotFound => f.write_str("no such object"),
            S3Fail::NoSuchUpload => f.write_str("no such multipart upload"),
            S3Fail::Other(why) => f.write_str(why),
        }
    }
}

fn fail(e: s3::error::S3Error) -> S3Fail {
    match e {
        s3::error::S3Error::HttpFailWithBody(404, body) if body.contains("NoSuchUpload") => {
            S3Fail::NoSuchUpload
        }
        s3::error::S3Error::HttpFailWithBody(404, body)
            if body.is_empty() || body.contains("NoSuchKey") =>
        {
            S3Fail::NotFound
        }
        s3::error::S3Error::HttpFailWithBody(status, body) => {
            S3Fail::Other(format!("HTTP {status}: {}", short(&body)))
        }
        other => S3Fail::Other(with_causes(&other)),
    }
}

/// The error and its causes, `: `-separated: "error sending request" alone does not say
/// that the connection was refused.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The first line of an error body, at most 200 bytes, for a log line.
fn short(body: &str) -> String {
    let code = body
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code);
    match code {
        Some(code) => code.to_owned(),
        None => body
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
    }
}

/// `call` within `limit`, or a timeout failure.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T, s3::error::S3Error>>,
) -> Result<T, S3Fail> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(fail),
        Err(_) => Err(S3Fail::Other(format!(
            "{what}: no answer within {} s",
            limit.as_secs()
        ))),
    }
}

/// An object's bytes as they arrive (a download's range).
pub struct ObjectBody {
    stream: s3::request::DataStream,
}

impl ObjectBody {
    /// The next bytes, `None` at the end; a wait longer than [`CALL_TIMEOUT`] is a
    /// failure.
    pub async fn next(&mut self) -> Option<Result<Bytes, S3Fail>> {
        match tokio::time::timeout(CALL_TIMEOUT, self.stream.next()).await {
            Ok(item) => item.map(|r| r.map_err(fail)),
            Err(_) => Some(Err(S3Fail::Other(format!(
                "GET: no bytes for {} s",
                CALL_TIMEOUT.as_secs()
            )))),
        }
    }
}

/// The bucket, as seen from one runtime.
pub struct S3Client {
    bucket: Box<Bucket>,
    /// What a client for another runtime is made from.
    made: Arc<Made>,
}

/// The settings a client is made from, resolved once at startup.
struct Made {
    name: String,
    region: Region,
    credentials: Credentials,
    headers: Vec<(String, String)>,
    path_style: bool,
}

impl Made {
    fn bucket(&self) -> Result<Box<Bucket>, String> {
        let mut bucket = Bucket::new(&self.name, self.region.clone(), self.credentials.clone())
            .map_err(|e| format!("S3 bucket {}: {e}", self.name))?;
        for (name, value) in &self.headers {
            bucket.add_header(name, value);
        }
        if self.path_style {
            bucket.set_path_style();
        }
        // Every call is bounded here (`bounded`), per call or per chunk of a download: a
        // whole-request timeout would cut a long download that is moving.
        bucket.set_request_timeout(None);
        Ok(bucket)
    }
}

impl S3Client {
    /// The client startup makes: the credentials are found now (the keys given, else
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else the profile), once. Says
    /// nothing about the server, which may be down now and up later: transfers wait for
    /// it.
    pub fn open(settings: &S3Settings) -> Result<S3Client, String> {
        // rust-s3 retries a failed request once after a second by default (a global);
        // the transfer has its own retries and pauses, and a download must fail fast.
        s3::set_retries(0);
        let credentials = Credentials::new(
            settings.access_key.as_deref(),
            settings.secret_key.as_deref(),
            settings.security_token.as_deref(),
            settings.session_token.as_deref(),
            settings.profile.as_deref(),
        )
        .map_err(|e| {
            format!(
                "S3 credentials: {e} (give --s3-access-key and --s3-secret-key, or their files)"
            )
        })?;
        let made = Arc::new(Made {
            name: settings.bucket.clone(),
            region: Region::Custom {
                region: settings.region.clone(),
                endpoint: settings.endpoint.clone(),
            },
            credentials,
            headers: settings.headers.clone(),
            path_style: settings.path_style,
        });
        Ok(S3Client {
            bucket: made.bucket()?,
            made,
        })
    }

    /// A client for the calling runtime, with a connection pool of its own (its
    /// connections are tasks of the runtime that opened them). Should making one fail
    /// (it did not at startup), this client's pool is shared.
    pub fn for_runtime(&self) -> S3Client {
        let bucket = self.made.bucket().unwrap_or_else(|e| {
            crate::warn!("{e}; sharing the startup client's connections");
            self.bucket.clone()
        });
        S3Client {
            bucket,
            made: self.made.clone(),
        }
    }

    /// The object's size, or `None` when there is no such object.
    pub async fn head(&self, path: &str) -> Result<Option<u64>, S3Fail> {
        match bounded(
            CALL_TIMEOUT,
            "HEAD",
            self.bucket.head_object(wire_key(path)),
        )
        .await
        {
            Ok((head, _)) => Ok(head.content_length.and_then(|l| u64::try_from(l).ok())),
            Err(S3Fail::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the object; none is fine.
    pub async fn delete(&self, path: &str) -> Result<(), S3Fail> {
        match bounded(
            CALL_TIMEOUT,
            "DELETE",
            self.bucket.delete_object(wire_key(path)),
        )
        .await
        {
            Ok(_) | Err(S3Fail::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Bytes `start..=end` of the object, as they arrive ([`ObjectBody::next`]).
    pub async fn get_range(&self, path: &str, start: u64, end: u64) -> Result<ObjectBody, S3Fail> {
        let key = wire_key(path);
        let command = s3::command::Command::GetObjectRange {
            start,
            end: Some(end),
        };
        let bucket = &*self.bucket;
        let open = async move {
            let request = ReqwestRequest::new(bucket, key, command).await?;
            request.response_data_to_stream().await
        };
        let response = bounded(CALL_TIMEOUT, "GET", open).await?;
        Ok(ObjectBody {
            stream: response.bytes,
        })
    }

    /// Stores a small object with one PUT.
    pub async fn put(&self, path: &str, content_type: &str, bytes: &[u8]) -> Result<(), S3Fail> {
        let put = self
            .bucket
            .put_object_with_content_type(wire_key(path), bytes, content_type);
        bounded(PART_TIMEOUT, "PUT", put).await.map(|_| ())
    }

    /// Starts a multipart upload; its ID.
    pub async fn create_multipart(&self, path: &str, content_type: &str) -> Result<String, S3Fail> {
        let create = self
            .bucket
            .initiate_multipart_upload(wire_key(path), content_type);
        bounded(CALL_TIMEOUT, "CreateMultipartUpload", create)
            .await
            .map(|r| r.upload_id)
    }

    /// Uploads part `number` (from 1); its ETag.
    pub async fn upload_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        bytes: Vec<u8>,
    ) -> Result<String, S3Fail> {
        let put = self.bucket.put_multipart_chunk(
            bytes,
            wire_key(path),
            number,
            upload_id,
            "application/octet-stream",
        );
        bounded(PART_TIMEOUT, "UploadPart", put)
            .await
            .map(|part| part.etag)
    }

    /// Completes the multipart upload from its parts (number, ETag), in order.
    pub async fn complete(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), S3Fail> {
        let parts = parts
            .iter()
            .map(|(n, etag)| s3::serde_types::Part {
                part_number: *n,
                etag: etag.clone(),
            })
            .collect();
        let complete = self
            .bucket
            .complete_multipart_upload(wire_key(path), upload_id, parts);
        // Assembling a large object can take the server a while.
        bounded(PART_TIMEOUT, "CompleteMultipartUpload", complete)
            .await
            .map(|_| ())
    }

    /// Aborts a multipart upload (its parts are freed); one already gone is fine.
    pub async fn abort(&self, path: &str, upload_id: &str) -> Result<(), S3Fail> {
        let abort = self.bucket.abort_upload(wire_key(path), upload_id);
        match bounded(CALL_TIMEOUT, "AbortMultipartUpload", abort).await {
            Ok(()) | Err(S3Fail::NoSuchUpload) | Err(S3Fail::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The multipart uploads in progress for exactly this key (left by a transfer that
    /// was interrupted).
    pub async fn uploads_of(&self, path: &str) -> Result<Vec<String>, S3Fail> {
        let key = wire_key(path);
        let pages = bounded(
            CALL_TIMEOUT,
            "ListMultipartUploads",
            self.bucket.list_multiparts_uploads(Some(key), None),
        )
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|page| page.uploads)
            .filter(|u| u.key == key)
            .map(|u| u.id)
            .collect())
    }
}
