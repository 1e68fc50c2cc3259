//! Socket-level I/O shared by the server (heads, answers) and the stores (bodies):
//! reads and writes with deadlines, the ring's splice and poll operations, a request
//! body as its source ([`BodySource`]), a download's way out ([`BodySink`]) and the
//! handle by which a newer request asks an older one to let its upload go
//! ([`Release`]).
//!
//! It sits below both `server` and `storage`: the connection builds a body source and a
//! sink from its socket, the request handling passes them on untouched, and a data
//! store moves the bytes (spliced, or through its buffers) without the handler ever
//! seeing a file descriptor.

pub mod deadline;
pub mod release;
pub mod sink;
pub mod source;
pub mod splice;

pub use deadline::shutdown_fd;
pub use release::Release;
pub use sink::BodySink;
pub use source::{BodyEnd, BodySource, SpliceIn, Wire};
