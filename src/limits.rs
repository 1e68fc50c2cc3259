//! Every limit of the daemon, named in one place. Each maps to one error and one status.

/// Largest request head (request line plus header fields plus the blank line), in bytes.
/// A head that does not end within this many bytes gets 431 and the connection is closed.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields in one request head; one more gets 431.
pub const MAX_HEADERS: usize = 100;

/// Longest request-target (path and query), in bytes; a longer one gets 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Longest chunk-size line of a chunked body (size, extensions, CRLF); longer gets 400.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;

/// Largest trailer section of a chunked body; larger gets 400.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Largest value tus integers may take (`Upload-Length`, `Upload-Offset`): 2^63-1.
pub const MAX_TUS_INTEGER: u64 = i64::MAX as u64;

/// Largest `Upload-Metadata` header value, in bytes; a larger one gets 400.
/// 16 KiB is far above what clients send (file names and types), leaves most of the
/// 64 KiB head for other fields, and bounds what every `.info` rewrite (one per PATCH),
/// every HEAD reply and every hook payload carries for the life of the upload.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Most worker threads (`-w/--workers`); each runs one io_uring runtime and listener.
/// A larger value is a usage error, and the CPU-count default is clamped to it.
pub const MAX_WORKERS: usize = 1024;

/// Largest value any `--*-timeout` flag accepts, in seconds: one week. Far below what
/// would make `Instant + timeout` overflow, far above any sensible grace period.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Room reserved in a data file ahead of the offset for a chunked body, whose length is
/// not announced (`fallocate` with `FALLOC_FL_KEEP_SIZE`): reserved before the body is
/// read, and moved ahead as it is written, so the reservation is never more than this
/// past the bytes stored. A Content-Length body reserves its whole announced range
/// instead; an upload that only declared a length reserves nothing. Room reserved and not
/// filled (a body cut short, a chunked body's last window) is given back when the request
/// ends. 8 MiB is 32 body buffers: a fallocate every 4 MiB costs nothing next to the
/// writes, and a thousand stalled chunked PATCHes hold at most 8 GiB until the body
/// timeout ends them.
pub const CHUNKED_RESERVE_BYTES: u64 = 8 * 1024 * 1024;

/// Largest hook answer (a tusd v2 `HookResponse`: an HTTP hook's body, an executable's
/// stdout, a NATS reply), in bytes; a larger one is refused before any of it is parsed
/// (`hooks::answer`). Room for a full `ChangeFileInfo.MetaData` ([`MAX_METADATA_BYTES`]
/// as JSON) and a response body; tusd's HTTP hooks stop at 5 KiB by default.
pub const MAX_HOOK_ANSWER_BYTES: usize = 64 * 1024;

/// Most header fields one hook answer may add to a response (`HTTPResponse.Header`).
pub const MAX_HOOK_ANSWER_HEADERS: usize = 32;

/// Largest sum of the names and values of a hook answer's header fields, in bytes, so the
/// response head it makes stays far below what clients accept (Node.js stops at 16 KiB).
pub const MAX_HOOK_ANSWER_HEADER_BYTES: usize = 8 * 1024;

/// Longest upload ID, in bytes (`storage::id::UploadId`, which holds it inline): what a
/// hook may choose (`ChangeFileInfo.ID`; longer is 400) and what a request path may name
/// (longer is 404). Well inside a file name (255 bytes, with `.info.tmp` appended) and a
/// URL path segment.
pub const MAX_HOOK_UPLOAD_ID_BYTES: usize = 128;

/// Chains of linked file operations (a small upload's data file; an info record) in
/// flight at once on one runtime, each with its own registered file slot
/// (`storage::file::chain`). More wait for none: they take the one-operation-at-a-time
/// path. 64 is far above what one core has in flight at once.
pub const MAX_FILE_CHAINS: usize = 64;

/// A submit of linked file operations the kernel refused (`EAGAIN`: short of memory) is
/// tried again after this, then after twice as long each time, up to
/// [`SUBMIT_RETRY_MAX`] (`storage::file::chain`): a chain waits at most that long after
/// the kernel would take it again.
pub const SUBMIT_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(1);

/// See [`SUBMIT_RETRY_FIRST`].
pub const SUBMIT_RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(50);
