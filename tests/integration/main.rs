//! tusring's black-box integration tests: each test starts its own daemon (the real
//! binary, on 127.0.0.1 port 0, in its own temporary directory) and talks raw HTTP/1.1 to
//! it, or drives a real tus client against it.
//!
//! Run with `cargo test --test integration` (or `scripts/test.sh`, which also installs the
//! real clients and makes the interop tests mandatory).

mod harness;

mod amqp;
mod answers;
mod browser;
mod checksum;
mod cli;
mod conc;
mod concat;
mod core;
mod cors;
mod crash;
mod datapath;
mod draft;
mod eio;
mod expiry;
mod faults;
mod getting;
mod hookabuse;
mod hooks;
mod hostile;
mod http1;
mod ids;
mod interop;
mod load;
mod metrics;
mod nats;
mod nodes;
mod ops;
mod ports;
mod redis;
mod redisd;
mod s3;
mod stops;
mod takeover;
mod vanish;
