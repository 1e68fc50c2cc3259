//! tusring: a thread-per-core io_uring tus 1.0 server, drop-in for rustus.
//!
//! The crate is split so that everything that decides is pure and everything that
//! does I/O is thin:
//!
//! * [`http`]: a sans-IO HTTP/1.1 layer: request heads (httparse), the chunked body
//!   decoder (memchr) and response encoding. Fed bytes, returns decisions.
//! * [`tus`]: the tus protocol as pure functions: header values, metadata, routes and
//!   the rules of each method.
//! * [`draft`]: the IETF resumable-uploads draft (interop versions 6 and 8) as pure
//!   functions: its structured fields, its rules and problem details, on the same
//!   uploads as tus.
//! * [`net`]: socket I/O shared by the server and the stores: reads and writes with
//!   deadlines, io_uring splice and poll, a request body as a source, a download's sink.
//! * [`storage`]: the interfaces uploads are kept behind (info records, data, locks) and
//!   their implementations: rustus's files through io_uring, the process-wide lock table.
//! * [`server`]: the I/O shell: one tokio-uring runtime per core, the cores sharing the
//!   daemon's one listening socket, driving connections through the pure layers; a
//!   request goes connection → request handling → body ingest → storage.
//! * [`config`]: rustus's flags and `RUSTUS_*` variables, parsed and validated.
//! * [`hooks`]: rustus's hooks (file, directory, HTTP, AMQP) on a pool of blocking worker
//!   threads, fed by bounded channels; core threads only enqueue and await verdicts. AMQP
//!   publishes from a thread of its own, with publisher confirms and reconnects.
//!
//! `DESIGN.md` at the top of the repository explains the thread model, buffer
//! ownership, timeouts, durability and locking.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod draft;
pub mod error;
pub mod hooks;
pub mod http;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod net;
pub mod server;
pub mod storage;
pub mod time;
pub mod tus;
