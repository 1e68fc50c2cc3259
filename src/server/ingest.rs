//! Body ingest: how request handling has a body stored, and what it makes of the result.
//!
//! The data store moves the bytes ([`DataWriter::write_body`]: spliced or buffered,
//! staged when verified); this module decides whether the body is verified (the
//! checksum extension, [`checksum_check`]), supplies the verification
//! ([`Verifier`]), and turns how the body ended into the answer's error
//! ([`body_end_error`]) and its effect on the connection ([`close_cause`]).

use super::core::Core;
use super::reply::CloseCause;
use crate::error::{Error, Source};
use crate::http::head::RequestHead;
use crate::metrics;
use crate::net::{BodyEnd, BodySource};
use crate::storage::{BodyCheck, DataWriter, Written};
use crate::tus::checksum::{self, Check, ChecksumAsk, Digests};

/// Stores the body into `writer` from offset `start`, at most `limit` bytes: verified
/// first when `check` says so (nothing of a body that fails is stored). The result's
/// error says why the body did not complete normally, whether the store saw it (a
/// failed write, the overrun, the check) or the body ended early (cut short, timed out,
/// taken over, the daemon stopping).
pub async fn receive(
    core: &Core,
    body: &mut BodySource<'_>,
    writer: &mut dyn DataWriter,
    start: u64,
    limit: u64,
    check: Option<Check>,
) -> Written {
    let mut verifier = check.map(Verifier::new);
    let check = verifier.as_mut().map(|v| v as &mut dyn BodyCheck);
    let written = writer.write_body(body, start, limit, check).await;
    body_stored(core, body, written)
}

/// What storing `body` achieved, with how the body ended (when storing itself did not
/// fail) and a storage failure logged.
pub fn body_stored(core: &Core, body: &BodySource<'_>, mut written: Written) -> Written {
    if written.error.is_none() {
        written.error = body_end_error(core.draining(), body.end());
    }
    // The answer carries the error; a storage failure is also logged (as errors the
    // handler returns are, in `handler::handle`).
    if let Some(e) = written
        .error
        .as_ref()
        .filter(|e| e.source() == Source::Storage)
    {
        crate::error!(
            "storing a request body, stopped at offset {}: {} {}",
            written.end_offset,
            e.status(),
            e.message()
        );
    }
    written
}

/// The error for a body that ended other than complete (`None` when it completed, or
/// has not ended). While the daemon is draining, a cut body is its doing: 503.
pub fn body_end_error(draining: bool, end: Option<&BodyEnd>) -> Option<Error> {
    match end {
        None | Some(BodyEnd::Complete) => None,
        Some(_) if draining => Some(Error::Unavailable(
            "The server is shutting down; resume the upload from its offset",
        )),
        Some(BodyEnd::Eof) | Some(BodyEnd::Failed(_)) => Some(Error::BodyIncomplete),
        Some(BodyEnd::TimedOut) => Some(Error::BodyTimeout),
        Some(BodyEnd::Malformed(e)) => Some(Error::Body(*e)),
        Some(BodyEnd::Stopped) => Some(Error::TakenOver),
    }
}

/// What a request that stored a body did to its connection: a request taken over has
/// its socket shut for reading; an error that stopped the body leaves the stream
/// unusable, except a checksum refusal, which comes after the whole body was read (the
/// connection closes anyway when it was not: `conn::keep_alive` sees the body unread).
pub fn close_cause(error: Option<&Error>, taken_over: bool) -> Option<CloseCause> {
    if taken_over {
        Some(CloseCause::TakenOver)
    } else if error.is_some_and(|e| !matches!(e, Error::ChecksumMismatch | Error::Checksum(_))) {
        Some(CloseCause::BodyError)
    } else {
        None
    }
}

/// How this request's body is to be verified (checksum extension), or a 400.
pub fn checksum_check(
    core: &Core,
    head: &RequestHead,
    body: &BodySource<'_>,
) -> Result<Option<Check>, Error> {
    let ext = &core.shared.config.extensions;
    let ask = ChecksumAsk {
        checksum: ext.checksum,
        trailer: ext.checksum_trailer,
        chunked: body.content_length().is_none(),
        header: head.header("upload-checksum"),
        announce: head.header("trailer"),
    };
    Ok(checksum::checksum_plan(&ask)?)
}

/// The checksum extension's verification of a body: the digests it asks for, fed as
/// the body is stored, compared at its end with `Upload-Checksum` (the header, or the
/// announced trailer).
pub struct Verifier {
    check: Check,
    /// `None` once the verdict is given.
    digests: Option<Digests>,
}

impl Verifier {
    /// A verification of `check`.
    pub fn new(check: Check) -> Verifier {
        Verifier {
            digests: Some(Digests::for_check(&check)),
            check,
        }
    }
}

impl BodyCheck for Verifier {
    fn update(&mut self, bytes: &[u8]) {
        if let Some(d) = self.digests.as_mut() {
            d.update(bytes);
        }
    }

    fn verdict(&mut self, body: &BodySource<'_>) -> Result<(), Error> {
        let expected = match &self.check {
            Check::Header(expected) => expected.clone(),
            Check::Trailer => checksum::trailer_checksum(body.trailers())?,
        };
        if self.digests.take().is_some_and(|d| d.verify(&expected)) {
            Ok(())
        } else {
            metrics::checksum_mismatch();
            Err(Error::ChecksumMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::BodyError;

    #[test]
    fn how_a_body_ended_becomes_the_answer() {
        let eio = || std::io::Error::from_raw_os_error(libc::EIO);
        let status = |draining, end: Option<BodyEnd>| {
            body_end_error(draining, end.as_ref()).map(|e| e.status())
        };
        assert_eq!(status(false, None), None);
        assert_eq!(status(false, Some(BodyEnd::Complete)), None);
        assert_eq!(status(true, Some(BodyEnd::Complete)), None);
        assert_eq!(status(false, Some(BodyEnd::Eof)), Some(400));
        assert_eq!(status(false, Some(BodyEnd::Failed(eio()))), Some(400));
        assert_eq!(status(false, Some(BodyEnd::TimedOut)), Some(408));
        let malformed = Some(BodyEnd::Malformed(BodyError::BadChunkSize));
        assert_eq!(status(false, malformed), Some(400));
        assert!(matches!(
            body_end_error(false, Some(&BodyEnd::Stopped)),
            Some(Error::TakenOver)
        ));
        // Cut by the shutdown: the client resumes later.
        for end in [BodyEnd::Eof, BodyEnd::TimedOut, BodyEnd::Stopped] {
            assert_eq!(status(true, Some(end)), Some(503));
        }
    }

    #[test]
    fn which_errors_close_the_connection() {
        assert_eq!(close_cause(None, false), None);
        assert_eq!(close_cause(None, true), Some(CloseCause::TakenOver));
        assert_eq!(close_cause(Some(&Error::ChecksumMismatch), false), None);
        let bad = crate::tus::checksum::ChecksumError::UnknownAlgorithm;
        assert_eq!(close_cause(Some(&Error::Checksum(bad)), false), None);
        assert_eq!(
            close_cause(Some(&Error::ChecksumMismatch), true),
            Some(CloseCause::TakenOver)
        );
        for e in [
            Error::BodyIncomplete,
            Error::BodyTimeout,
            Error::TooLarge("Request body would pass Upload-Length"),
            Error::InsufficientStorage,
        ] {
            assert_eq!(
                close_cause(Some(&e), false),
                Some(CloseCause::BodyError),
                "{e:?}"
            );
        }
    }
}
