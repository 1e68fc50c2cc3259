//! tusring: a thread-per-core io_uring tus 1.0 server, drop-in for rustus.
//!
//! The crate is split so that everything that decides is pure and everything that
//! does I/O is thin:
//!
//! * [`http`]: a sans-IO HTTP/1.1 layer: request heads (httparse), the chunked body
//!   decoder (memchr) and response encoding. Fed bytes, returns decisions.
//! * [`tus`]: the tus protocol as pure functions: header values, metadata, routes and
//!   the rules of each method.
//! * [`storage`]: the on-disk layout (rustus's `.info` records and data paths), the
//!   process-wide upload locks and the io_uring file operations.
//! * [`server`]: the I/O shell: one tokio-uring runtime per core, the cores sharing the
//!   daemon's one listening socket, driving connections through the pure layers.
//! * [`config`]: rustus's flags and `RUSTUS_*` variables, parsed and validated.
//! * [`hooks`]: rustus's hooks (file, directory, HTTP, AMQP) on a pool of blocking worker
//!   threads, fed by bounded channels; core threads only enqueue and await verdicts. AMQP
//!   publishes from a thread of its own, with publisher confirms and reconnects.
//!
//! `DESIGN.md` at the top of the repository explains the thread model, buffer
//! ownership, timeouts, durability and locking.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod error;
pub mod hooks;
pub mod http;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod server;
pub mod storage;
pub mod time;
pub mod tus;
