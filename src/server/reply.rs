//! What request handling answers, in the words both sides use: the connection sends a
//! [`Reply`], the handler builds it. The reply carries facts about the request (its
//! route for the metrics, a download to stream, what it did to the connection), never a
//! decision the connection makes: whether the connection stays open is decided in one
//! place, `conn::keep_alive`.

use crate::error::{Error, HookError};
use crate::http::response::Response;
use crate::metrics::{Endpoint, Protocol};
use crate::storage::DataReader;

/// The handler's answer.
pub struct Reply {
    /// The response to send.
    pub resp: Response,
    /// What the request did that leaves its connection unable to carry another request,
    /// if anything (beyond what the connection sees itself).
    pub closes: Option<CloseCause>,
    /// A `/health` request (left out of the access log with
    /// `--disable-health-access-log`).
    pub health: bool,
    /// The route template, for the metrics.
    pub endpoint: Endpoint,
    /// The protocol the request spoke, for the metrics.
    pub protocol: Protocol,
    /// A body streamed from the data store after the head (a download);
    /// `resp.streamed_len` is its length.
    pub data: Option<Download>,
}

/// Why a request leaves its connection unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// An error stopped the body being stored (a failed write, a body past the limit,
    /// a body cut short): the rest of the stream cannot be trusted to be a new request.
    BodyError,
    /// A newer request took the upload over: the socket was shut down for reading.
    TakenOver,
}

/// A range of an upload's data to send after the head.
pub struct Download {
    /// The upload's data, open for reading.
    pub reader: Box<dyn DataReader>,
    /// First byte to send.
    pub start: u64,
    /// How many bytes to send.
    pub len: u64,
}

impl Reply {
    /// A reply with `resp` and nothing else to say.
    pub fn new(resp: Response) -> Reply {
        Reply {
            resp,
            closes: None,
            health: false,
            endpoint: Endpoint::Other,
            protocol: Protocol::Tus,
            data: None,
        }
    }
}

/// The response for an error: status, one-line text body, `Allow` for 405,
/// `Retry-After` when the client should come back (a full hook queue, a store that
/// cannot answer now); an HTTP pre-hook's refusal is relayed as it is (status, body,
/// and its content type or `text/plain; charset=utf-8`), a hook answer's refusal with its
/// status, fields and body.
pub fn error_response(err: &Error) -> Response {
    let mut resp = Response::new(err.status());
    match err {
        Error::MethodNotAllowed(allow) => resp.header("Allow", *allow),
        Error::Hook(HookError::Rejected {
            body, content_type, ..
        }) => {
            let ct = content_type
                .clone()
                .unwrap_or_else(|| "text/plain; charset=utf-8".to_string());
            resp.header("Content-Type", ct);
            resp.body = body.clone().into();
            return resp;
        }
        Error::Hook(HookError::Answered(a)) => {
            resp.merge_answer(a.status, &a.headers, &a.body);
            return resp;
        }
        Error::Hook(HookError::QueueFull) | Error::StorageUnavailable(_) => {
            resp.header("Retry-After", "1")
        }
        _ => {}
    }
    resp.text(err.message());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreError;

    #[test]
    fn store_errors_map_to_answers() {
        let eio = || std::io::Error::from_raw_os_error(libc::EIO);
        let enospc = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let cases: [(StoreError, u16, Option<&str>); 7] = [
            (StoreError::NotFound, 404, None),
            (StoreError::Corrupt, 500, None),
            (StoreError::TooLarge("too long"), 413, None),
            (StoreError::io("write data file", eio()), 500, None),
            (StoreError::io("write data file", enospc()), 507, None),
            (StoreError::Unavailable("Redis is down"), 503, Some("1")),
            (StoreError::Exists, 409, None),
        ];
        for (store_err, status, retry) in cases {
            let shown = format!("{store_err:?}");
            let resp = error_response(&Error::from(store_err));
            assert_eq!(resp.status, status, "{shown}");
            assert_eq!(resp.get("Retry-After"), retry, "{shown}");
        }
    }
}
