//! The daemon's request errors: one small enum, mapped to a status and a body in one place.

use crate::draft::rules::Refusal;
use crate::hooks::answer::DEFAULT_REFUSAL_STATUS;
use crate::http::body::BodyError;
use crate::http::head::HeadError;
use crate::storage::StoreError;
use crate::tus::checksum::ChecksumError;
use std::io;

/// Whose fault an error is: used by the logs (client errors are not logged as failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The request was wrong; the answer is a 4xx.
    Client,
    /// The filesystem failed; the answer is a 5xx.
    Storage,
    /// The daemon itself cannot serve the request now (shutting down, overloaded).
    Internal,
}

/// Everything a request can fail with. The message is sent as the body (`text/plain`).
#[derive(Debug)]
pub enum Error {
    /// The request head could not be accepted (400, 414, 431, 501, 505).
    Head(HeadError),
    /// A chunked body was malformed (400).
    Body(BodyError),
    /// 400 with a one-line reason.
    BadRequest(&'static str),
    /// 400 with a reason built from the request.
    BadRequestOwned(String),
    /// 403: the request is not allowed on this upload (e.g. PATCH to a final upload).
    Forbidden(&'static str),
    /// 404: unknown route or upload.
    NotFound,
    /// 410: the upload expired (expiration extension) and is not yet swept away.
    Gone,
    /// 409 with a reason: the request conflicts with the upload's state (e.g. DELETE of
    /// a partial upload an unfinished final still waits for).
    Conflict(&'static str),
    /// 405, with the methods that are allowed.
    MethodNotAllowed(&'static str),
    /// 409: `Upload-Offset` does not match the stored offset.
    OffsetMismatch {
        /// The offset the upload is at.
        stored: u64,
    },
    /// 408: the request body stopped arriving for longer than the body timeout.
    BodyTimeout,
    /// 400: the client closed the connection before the body was complete.
    BodyIncomplete,
    /// 412: `Tus-Resumable` missing or unsupported.
    UnsupportedTusVersion,
    /// 413 with a reason.
    TooLarge(&'static str),
    /// 415: PATCH without `Content-Type: application/offset+octet-stream`.
    UnsupportedMediaType,
    /// 423: another request holds the upload (and did not let go within the takeover
    /// wait, `storage::locks::TAKEOVER_WAIT`).
    Locked,
    /// 400 (as tusd's `ERR_UPLOAD_INTERRUPTED`): a newer request for the upload took it
    /// over; this one stopped after storing what it had received.
    TakenOver,
    /// 503: the daemon is shutting down or cannot serve now.
    Unavailable(&'static str),
    /// 507: the filesystem is full.
    InsufficientStorage,
    /// 500: a storage operation failed; `what` names the operation.
    Storage {
        /// The operation, e.g. "write data file".
        what: &'static str,
        /// The OS error.
        err: io::Error,
    },
    /// 500: an info record on disk could not be parsed.
    CorruptInfo,
    /// 503 with `Retry-After`: the storage cannot answer now (a remote store that is
    /// down or slow); nothing was changed and the client may retry.
    StorageUnavailable(&'static str),
    /// A pre-hook refused the request or could not be asked; see [`HookError`].
    Hook(HookError),
    /// 400: `Upload-Checksum` (header or trailer) malformed, of an unknown algorithm,
    /// or missing from an announced trailer.
    Checksum(ChecksumError),
    /// 460 Checksum Mismatch: the body does not match `Upload-Checksum`; none of its
    /// bytes were stored.
    ChecksumMismatch,
    /// The resumable-uploads draft refused the request (its status and problem type:
    /// [`Refusal`]).
    Draft(Refusal),
    /// 400: a draft request's `Content-Digest` or `Repr-Digest` cannot be checked
    /// (RFC 9530): the reason.
    Digest(String),
}

/// Why a pre-hook (`pre-create`, `pre-terminate`) did not let a request through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// 400: an executable hook exited with a non-zero status, or was killed.
    Exit,
    /// 400: the directory hook `<dir>/<event>` does not exist.
    MissingFile(&'static str),
    /// 500: an executable hook could not be started.
    Spawn,
    /// An HTTP hook answered with a status other than 2xx: relayed to the client as it
    /// is (status, body, and the hook's content type or `text/plain; charset=utf-8`).
    Rejected {
        /// The hook's status (300-599).
        status: u16,
        /// The hook's body, at most 64 KiB of it.
        body: Vec<u8>,
        /// The hook's `Content-Type`, if it sent one.
        content_type: Option<String>,
    },
    /// A hook's answer refused the request (`--hooks-answers`: `RejectUpload`,
    /// `RejectTermination`): answered with its status (4xx or 5xx), fields and body.
    Answered(crate::hooks::answer::HttpAnswer),
    /// 504: the hook did not answer in time (or an executable hook ran past its
    /// timeout and was killed); the event name.
    Timeout(&'static str),
    /// 502: the HTTP hook could not be reached; the event name.
    Unreachable(&'static str),
    /// 503 with `Retry-After`: the hook queue is full.
    QueueFull,
    /// 503: the hook workers are gone (the daemon is stopping).
    Unavailable,
}

impl HookError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            HookError::Exit | HookError::MissingFile(_) => 400,
            HookError::Spawn => 500,
            HookError::Rejected { status, .. } => *status,
            HookError::Answered(a) => a.status.unwrap_or(DEFAULT_REFUSAL_STATUS),
            HookError::Timeout(_) => 504,
            HookError::Unreachable(_) => 502,
            HookError::QueueFull | HookError::Unavailable => 503,
        }
    }

    /// The one-line body (for `Rejected`, the hook's body, lossily as text).
    pub fn message(&self) -> String {
        match self {
            // rustus's bodies, word for word.
            HookError::Exit => {
                "Hook invocation failed. Reason: Returned wrong status code".to_string()
            }
            HookError::MissingFile(event) => {
                format!("Hook invocation failed. Reason: Hook file {event} not found.")
            }
            HookError::Spawn => {
                "Hook invocation failed. Reason: the hook could not be started".to_string()
            }
            HookError::Rejected { body, .. } => String::from_utf8_lossy(body).into_owned(),
            HookError::Answered(a) => a.body.clone(),
            HookError::Timeout(event) => format!("The {event} hook did not answer in time"),
            HookError::Unreachable(event) => format!("The {event} hook could not be reached"),
            HookError::QueueFull => "Too many hook events are waiting; retry later".to_string(),
            HookError::Unavailable => "The hooks are not available now; retry later".to_string(),
        }
    }

    /// A verdict of the hook itself (the client's request was refused), rather than a
    /// failure to ask it.
    pub fn is_verdict(&self) -> bool {
        matches!(
            self,
            HookError::Exit
                | HookError::MissingFile(_)
                | HookError::Rejected { .. }
                | HookError::Answered(_)
        )
    }
}

impl Error {
    /// Wraps an I/O error from the named storage operation; a full disk becomes 507.
    pub fn storage(what: &'static str, err: io::Error) -> Error {
        match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::InsufficientStorage,
            _ => Error::Storage { what, err },
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::Head(e) => e.status(),
            Error::Body(_) => 400,
            Error::BadRequest(_) | Error::BadRequestOwned(_) => 400,
            Error::Forbidden(_) => 403,
            Error::NotFound => 404,
            Error::Gone => 410,
            Error::Conflict(_) => 409,
            Error::MethodNotAllowed(_) => 405,
            Error::OffsetMismatch { .. } => 409,
            Error::BodyTimeout => 408,
            Error::BodyIncomplete => 400,
            Error::UnsupportedTusVersion => 412,
            Error::TooLarge(_) => 413,
            Error::UnsupportedMediaType => 415,
            Error::Locked => 423,
            Error::TakenOver => 400,
            Error::Unavailable(_) | Error::StorageUnavailable(_) => 503,
            Error::InsufficientStorage => 507,
            Error::Storage { .. } | Error::CorruptInfo => 500,
            Error::Hook(h) => h.status(),
            Error::Checksum(_) => 400,
            // tus 1.0 checksum extension (rustus answers 417).
            Error::ChecksumMismatch => 460,
            Error::Draft(r) => r.status(),
            Error::Digest(_) => 400,
        }
    }

    /// Whose fault it is.
    pub fn source(&self) -> Source {
        match self {
            Error::Storage { .. }
            | Error::CorruptInfo
            | Error::InsufficientStorage
            | Error::StorageUnavailable(_) => Source::Storage,
            Error::Unavailable(_) => Source::Internal,
            Error::Hook(h) if !h.is_verdict() => Source::Internal,
            _ => Source::Client,
        }
    }

    /// The one-line body sent to the client.
    pub fn message(&self) -> String {
        match self {
            Error::Head(e) => e.reason().to_string(),
            Error::Body(e) => e.reason().to_string(),
            Error::BadRequest(m) | Error::Forbidden(m) | Error::TooLarge(m) => m.to_string(),
            Error::Unavailable(m) | Error::StorageUnavailable(m) => m.to_string(),
            Error::BadRequestOwned(m) => m.clone(),
            Error::NotFound => String::new(),
            Error::Gone => "The upload expired".to_string(),
            Error::Conflict(m) => m.to_string(),
            Error::MethodNotAllowed(_) => "Method not allowed".to_string(),
            Error::OffsetMismatch { stored } => {
                format!("Upload-Offset does not match the upload's offset {stored}")
            }
            Error::UnsupportedTusVersion => "Unsupported or missing Tus-Resumable".to_string(),
            Error::BodyTimeout => "The request body stopped arriving".to_string(),
            Error::BodyIncomplete => "The request body ended early".to_string(),
            Error::UnsupportedMediaType => {
                "Content-Type must be application/offset+octet-stream".to_string()
            }
            Error::Locked => "The upload is in use by another request".to_string(),
            Error::TakenOver => "A newer request for this upload took it over; this request \
                                 stopped after the bytes it had received"
                .to_string(),
            Error::InsufficientStorage => "No space left on the storage".to_string(),
            Error::Storage { what, err } => format!("Storage error: {what}: {err}"),
            Error::CorruptInfo => "The upload's info record is corrupt".to_string(),
            Error::Hook(h) => h.message(),
            Error::Checksum(e) => e.reason().to_string(),
            Error::ChecksumMismatch => {
                "The request body does not match Upload-Checksum; nothing of it was stored"
                    .to_string()
            }
            Error::Draft(r) => r.detail(),
            Error::Digest(m) => m.clone(),
        }
    }
}

/// The 409 of a creation whose ID (chosen by a pre-create hook) is another upload's,
/// or is being created by another request.
pub const ID_IN_USE: &str =
    "The upload ID the pre-create hook chose is already in use by another upload";

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::NotFound,
            StoreError::Corrupt => Error::CorruptInfo,
            StoreError::TooLarge(m) => Error::TooLarge(m),
            StoreError::Io { what, err } => Error::storage(what, err),
            StoreError::Unavailable(m) => Error::StorageUnavailable(m),
            StoreError::Exists => Error::Conflict(ID_IN_USE),
        }
    }
}

impl From<HeadError> for Error {
    fn from(e: HeadError) -> Self {
        Error::Head(e)
    }
}

impl From<BodyError> for Error {
    fn from(e: BodyError) -> Self {
        Error::Body(e)
    }
}

impl From<ChecksumError> for Error {
    fn from(e: ChecksumError) -> Self {
        Error::Checksum(e)
    }
}

impl From<HookError> for Error {
    fn from(e: HookError) -> Self {
        Error::Hook(e)
    }
}
