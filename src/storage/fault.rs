//! Test-only fault injection for the storage: makes data or info-record writes, or the
//! assembly of a final, fail with `EIO` as a failing disk would, so the real binary's
//! error paths can be tested from the outside (`tests/integration/eio.rs`, `concat.rs`);
//! and traces the durability steps, so their order can be checked (`faults.rs`).
//!
//! **Compiled in only with `debug_assertions`** (the test and dev builds). In a release
//! build every function here is a constant "no fault" that the compiler removes, and the
//! variable is never read.
//!
//! The plan comes from `TUSRING_FAULT_INJECT`, read once (at startup, see [`announce`]):
//! comma-separated `key=value` items,
//!
//! * `write_eio_after=N`: the process's data writes (every upload, both data paths) are
//!   counted; the write that would take the count past `N` bytes stores only the bytes up
//!   to `N` and then fails with `EIO`. It fires once: later writes succeed (a transient
//!   device error, so a resumed upload can complete).
//! * `info_eio_after=K`: the first `K` info-record writes succeed; the next one fails
//!   with `EIO` (as the temporary file is written, before the rename). Once.
//! * `assemble_eio_after=K`: the first `K` assemblies of a final succeed; the next one
//!   fails with `EIO` before it copies anything. Once.
//! * `chain_submit_eagain=N`: the first `N` submits of linked file operations
//!   (`storage::file::chain`, the small upload's data file and the info records) fail
//!   with `EAGAIN`, as from a kernel short of memory, leaving the operations queued.
//! * `trace_durability=1`: each durability step is logged when it completes, as a line
//!   with `durability:` (a directory fsynced, a record renamed into place), so a test can
//!   check their order ([`trace`]). What a test cannot see this way is whether the disk
//!   honours an fsync: that takes a power cut.
//!
//! A value that does not parse stops the daemon at startup.

use std::io;

/// The environment variable holding the plan.
pub const ENV: &str = "TUSRING_FAULT_INJECT";

/// The error a faulty disk gives.
pub fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// The parsed plan.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Plan {
        pub write_eio_after: Option<u64>,
        pub info_eio_after: Option<u64>,
        pub assemble_eio_after: Option<u64>,
        pub chain_submit_eagain: u64,
        pub trace_durability: bool,
    }

    /// Parses `TUSRING_FAULT_INJECT` (pure; table-tested).
    pub fn parse(spec: &str) -> Result<Plan, String> {
        let mut plan = Plan::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected key=value"))?;
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{item:?}: the value must be a number"))?;
            match k.trim() {
                "write_eio_after" => plan.write_eio_after = Some(n),
                "info_eio_after" => plan.info_eio_after = Some(n),
                "assemble_eio_after" => plan.assemble_eio_after = Some(n),
                "chain_submit_eagain" => plan.chain_submit_eagain = n,
                "trace_durability" => plan.trace_durability = n != 0,
                other => return Err(format!("unknown fault {other:?}")),
            }
        }
        Ok(plan)
    }

    static PLAN: OnceLock<Result<Plan, String>> = OnceLock::new();
    /// Data bytes written so far (counted only while a write fault is armed).
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    /// Info records written so far.
    static INFOS: AtomicU64 = AtomicU64::new(0);
    /// Assemblies started so far.
    static ASSEMBLIES: AtomicU64 = AtomicU64::new(0);
    /// Chain submits refused so far.
    static CHAIN_SUBMITS: AtomicU64 = AtomicU64::new(0);
    /// Each fault fires once.
    static WRITE_FIRED: AtomicBool = AtomicBool::new(false);
    static INFO_FIRED: AtomicBool = AtomicBool::new(false);
    static ASSEMBLE_FIRED: AtomicBool = AtomicBool::new(false);

    pub fn plan() -> &'static Result<Plan, String> {
        PLAN.get_or_init(|| match std::env::var(super::ENV) {
            Ok(spec) => parse(&spec),
            Err(_) => Ok(Plan::default()),
        })
    }

    pub fn data_write(len: usize) -> Option<usize> {
        let limit = plan().as_ref().ok()?.write_eio_after?;
        if WRITE_FIRED.load(Ordering::Relaxed) {
            return None;
        }
        let before = WRITTEN.fetch_add(len as u64, Ordering::Relaxed);
        if before + len as u64 <= limit {
            return None;
        }
        if WRITE_FIRED.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(limit.saturating_sub(before).min(len as u64) as usize)
    }

    pub fn info_write() -> bool {
        let Some(k) = plan().as_ref().ok().and_then(|p| p.info_eio_after) else {
            return false;
        };
        let n = INFOS.fetch_add(1, Ordering::Relaxed);
        n >= k && !INFO_FIRED.swap(true, Ordering::Relaxed)
    }

    pub fn assemble() -> bool {
        let Some(k) = plan().as_ref().ok().and_then(|p| p.assemble_eio_after) else {
            return false;
        };
        let n = ASSEMBLIES.fetch_add(1, Ordering::Relaxed);
        n >= k && !ASSEMBLE_FIRED.swap(true, Ordering::Relaxed)
    }

    pub fn chain_submit() -> bool {
        let Some(n) = plan().as_ref().ok().map(|p| p.chain_submit_eagain) else {
            return false;
        };
        n > 0 && CHAIN_SUBMITS.fetch_add(1, Ordering::Relaxed) < n
    }

    pub fn tracing() -> bool {
        plan().as_ref().is_ok_and(|p| p.trace_durability)
    }
}

/// Checks the plan at startup: `Ok(Some(text))` when faults are armed (to be logged),
/// `Err` when the variable does not parse.
pub fn announce() -> Result<Option<String>, String> {
    #[cfg(debug_assertions)]
    {
        match armed::plan() {
            Ok(p) if *p == armed::Plan::default() => Ok(None),
            Ok(p) => Ok(Some(format!("TEST FAULT INJECTION ARMED ({ENV}): {p:?}"))),
            Err(e) => Err(format!("{ENV}: {e}")),
        }
    }
    #[cfg(not(debug_assertions))]
    {
        Ok(None)
    }
}

/// A data write of `len` bytes is about to be issued: `None` lets it through; `Some(k)`
/// means store only the first `k` bytes and then fail with [`eio`].
#[inline]
pub fn data_write(len: usize) -> Option<usize> {
    #[cfg(debug_assertions)]
    {
        armed::data_write(len)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = len;
        None
    }
}

/// An info record is about to be written: `true` means fail it with [`eio`].
#[inline]
pub fn info_write() -> bool {
    #[cfg(debug_assertions)]
    {
        armed::info_write()
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// An assembly of a final is about to copy its parts: `true` means fail it with [`eio`].
#[inline]
pub fn assemble() -> bool {
    #[cfg(debug_assertions)]
    {
        armed::assemble()
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// Linked file operations are about to be submitted: `true` means refuse the submit
/// with `EAGAIN`, leaving them queued.
#[inline]
pub fn chain_submit() -> bool {
    #[cfg(debug_assertions)]
    {
        armed::chain_submit()
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// A durability step completed (`what()` says which, e.g. `fsync dir <path>`): logged as
/// `durability: <what>` when `trace_durability` is armed, else nothing (`what` is not
/// called).
#[inline]
pub fn trace(what: impl FnOnce() -> String) {
    #[cfg(debug_assertions)]
    {
        if armed::tracing() {
            crate::info!("durability: {}", what());
        }
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = what;
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::armed::{parse, Plan};

    #[test]
    fn parse_table() {
        let ok = [
            ("", Plan::default()),
            (
                "write_eio_after=100",
                Plan {
                    write_eio_after: Some(100),
                    ..Plan::default()
                },
            ),
            (
                " write_eio_after = 5 , info_eio_after=1 ",
                Plan {
                    write_eio_after: Some(5),
                    info_eio_after: Some(1),
                    ..Plan::default()
                },
            ),
            (
                "chain_submit_eagain=3",
                Plan {
                    chain_submit_eagain: 3,
                    ..Plan::default()
                },
            ),
            (
                "assemble_eio_after=0,trace_durability=1",
                Plan {
                    assemble_eio_after: Some(0),
                    trace_durability: true,
                    ..Plan::default()
                },
            ),
        ];
        for (spec, want) in ok {
            assert_eq!(parse(spec), Ok(want), "{spec:?}");
        }
        for bad in ["write_eio_after", "write_eio_after=x", "read_eio=1", "=3"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
