//! Linked file operations, submitted at once and awaited once.
//!
//! tokio-uring submits one operation at a time and cannot register files, so each step
//! of a small upload's file work (open, write, rename) cost the core thread one wait
//! for an io-wq worker, one after another. [`Chains`] is a second, small io_uring of
//! the runtime's own, with a table of registered ("direct") file slots: a chain opens a
//! file into a slot, writes it through the slot, closes it and, for a record, renames
//! it into place, as linked operations (`IOSQE_IO_LINK`) submitted together. The
//! kernel runs a chain in order on an io-wq worker, and the core waits once for the
//! lot. Its completions reach the core as tokio-uring's do: the ring's descriptor is
//! watched by the runtime's reactor (an `AsyncFd`), and a task drains it.
//!
//! A chain stops at its first failure, and the kernel counts a short write as one: the
//! steps after it complete with `ECANCELED`, so a rename never publishes a file whose
//! write came short. Each chain owns the memory its operations point into (paths,
//! bytes) until its last completion has arrived, also if its caller stopped waiting.
//!
//! Where the kernel has `IOSQE_CQE_SKIP_SUCCESS` (`IORING_FEAT_CQE_SKIP`, Linux 5.17),
//! every step but the last is marked with it, so a chain that succeeds posts one
//! completion, not one per step. A step so marked still posts when it fails (a short
//! write included), and then the steps its failure cancels post nothing; so a chain is
//! over at its last step's completion, or at the completion of a failed step whose
//! failure cancels the rest (one linked with [`Link::Soft`]); a step that posted
//! nothing succeeded, with the result its [`Step`] names. Without the feature every
//! step posts and the chain is over when all have.
//!
//! A submit the kernel refuses (`EAGAIN` when it is short of memory) or takes only part
//! of leaves the rest in the queue: it is tried again on a timer (from
//! [`SUBMIT_RETRY_FIRST`] doubling up to [`SUBMIT_RETRY_MAX`]) until the kernel takes
//! it, so a lone chain never waits for another chain's submit; meanwhile new chains
//! are refused (their callers take the one-operation-at-a-time path).
//!
//! Every chain has its own slot, and its operations name it: [`MAX_FILE_CHAINS`] chains
//! run at once on a runtime; when all slots are busy (or the ring could not be made)
//! [`Chains::run`] says so and the caller takes the one-operation-at-a-time path.

use crate::limits::{MAX_FILE_CHAINS, SUBMIT_RETRY_FIRST, SUBMIT_RETRY_MAX};
use io_uring06::{opcode, squeue, types, IoUring};
use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tokio::io::unix::AsyncFd;

/// Most operations in one chain (open, write, close, rename).
pub(super) const MAX_CHAIN_OPS: usize = 4;

/// `user_data` of the operations nobody waits for (a close after a broken chain). The
/// others' is `generation << 16 | slot << 8 | step` (see [`user_data`]), always smaller.
const UNWATCHED: u64 = u64::MAX;

/// How a chain's step is tied to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    /// The next step runs only if this one succeeds (`IOSQE_IO_LINK`): its failure
    /// cancels the rest of the chain.
    Soft,
    /// The next step runs whatever this one's result (`IOSQE_IO_HARDLINK`).
    Hard,
    /// The chain's last step.
    End,
}

/// One step of a chain.
pub(super) struct Step {
    /// The operation, without link flags ([`Chains::run`] sets them from `link`).
    pub op: squeue::Entry,
    /// The result the step gives when it succeeds: a write's length, 0 for an open into
    /// a slot, a close, a rename. Reported for a step whose success posted nothing.
    pub ok: i32,
    pub link: Link,
}

/// What a chain's operations point into: kept alive until the kernel is done with it.
#[derive(Default)]
pub(super) struct Keep {
    /// Paths (an open's, a rename's two).
    pub paths: Vec<CString>,
    /// Bytes written.
    pub bytes: Vec<u8>,
}

/// The linked-operation ring of one runtime. Cheap to clone (one `Rc`).
#[derive(Clone)]
pub(super) struct Chains {
    inner: Rc<Inner>,
}

struct Inner {
    /// The ring's descriptor in the runtime's reactor: readable when completions wait.
    /// Declared before `ring`, so it is dropped (deregistered) while the ring is open.
    ready: AsyncFd<RingFd>,
    ring: RefCell<IoUring>,
    state: RefCell<State>,
    /// The kernel has `IOSQE_CQE_SKIP_SUCCESS`: steps before a chain's last post only
    /// when they fail (see the module docs).
    skips: bool,
    /// A retry of a refused submit is scheduled (see [`Inner::submit`]).
    retrying: Cell<bool>,
    /// Completions of chains' steps taken (unit tests count them).
    #[cfg(test)]
    posted: Cell<u64>,
}

struct State {
    /// One entry per file slot: the chain using it. Invariant: a slot is in `free`
    /// exactly when its entry is `None` and nothing submitted still names the slot's
    /// file except a close queued before any later open of the slot.
    chains: Vec<Option<Pending>>,
    free: Vec<u32>,
    /// Tells the chains that used a slot apart (in their `user_data`): a completion of
    /// an earlier chain in the slot is never taken for one of the current chain's.
    generation: u32,
}

/// A chain in flight.
struct Pending {
    /// Each step's result (a count, or `-errno`): its [`Step::ok`] until its completion
    /// arrives, `-ECANCELED` for the steps a failure cancelled without a completion.
    results: [i32; MAX_CHAIN_OPS],
    links: [Link; MAX_CHAIN_OPS],
    ops: usize,
    /// Completions taken.
    done: usize,
    /// Every completion the chain will post has arrived: the kernel is done with it.
    over: bool,
    /// Its steps before the last post only when they fail.
    skips: bool,
    /// In its `user_data`.
    generation: u32,
    waker: Option<Waker>,
    /// The caller stopped waiting: the slot is freed when the last completion arrives.
    abandoned: bool,
    /// Memory the operations point into.
    _keep: Keep,
}

impl Pending {
    /// Takes step `op`'s completion; true when the chain is over.
    fn complete(&mut self, op: usize, res: i32) -> bool {
        self.results[op] = res;
        self.done += 1;
        if !self.skips {
            return self.done >= self.ops;
        }
        // A step before the last posted: it failed. If its failure cancels the rest,
        // they post nothing: the chain is over. After a hard link the next step runs.
        if op + 1 >= self.ops {
            return true;
        }
        match self.links[op] {
            Link::Hard => false,
            Link::Soft | Link::End => {
                for r in &mut self.results[op + 1..self.ops] {
                    *r = -libc::ECANCELED;
                }
                true
            }
        }
    }
}

/// The `user_data` of step `op` of the chain of `generation` in `slot`.
fn user_data(generation: u32, slot: u32, op: usize) -> u64 {
    u64::from(generation) << 16 | u64::from(slot) << 8 | op as u64
}

struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

thread_local! {
    /// The ring of the runtime running on this thread; it lives as long as that runtime
    /// (its driving task holds it), so a later runtime on the thread makes its own.
    static CURRENT: RefCell<std::rc::Weak<Inner>> = const { RefCell::new(std::rc::Weak::new()) };
    /// The kernel gave no ring: not asked again on this thread.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
    /// Unit tests make rings without `IOSQE_CQE_SKIP_SUCCESS`, as an older kernel does.
    #[cfg(test)]
    static NO_SKIP: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread's rings go without `IOSQE_CQE_SKIP_SUCCESS` (unit tests only).
fn skips_refused() -> bool {
    #[cfg(test)]
    {
        NO_SKIP.get()
    }
    #[cfg(not(test))]
    {
        false
    }
}

impl Chains {
    /// The calling runtime's ring (made on first use), or `None` when the kernel gives
    /// none (no io_uring, no registered files): the callers then use tokio-uring alone.
    /// Must be called on a tokio-uring runtime (its reactor watches the ring).
    pub(super) fn current() -> Option<Chains> {
        if let Some(inner) = CURRENT.with(|c| c.borrow().upgrade()) {
            return Some(Chains { inner });
        }
        if REFUSED.get() {
            return None;
        }
        match Chains::try_new() {
            Ok(c) => {
                CURRENT.with(|cur| *cur.borrow_mut() = Rc::downgrade(&c.inner));
                Some(c)
            }
            Err(e) => {
                REFUSED.set(true);
                crate::debug!("no linked file operations here: {e}");
                None
            }
        }
    }

    fn try_new() -> io::Result<Chains> {
        let slots = MAX_FILE_CHAINS as u32;
        let ring = IoUring::builder().build(slots * MAX_CHAIN_OPS as u32)?;
        ring.submitter().register_files_sparse(slots)?;
        let skips = ring.params().is_feature_skip_cqe_on_success() && !skips_refused();
        // SAFETY: the descriptor is the ring's, which `Inner` keeps open for as long as
        // it holds this registration (its `ready` field is dropped before its `ring`).
        let ready = unsafe {
            AsyncFd::register_with_interest(RingFd(ring.as_raw_fd()), tokio::io::Interest::READABLE)
        }?;
        let inner = Rc::new(Inner {
            ready,
            ring: RefCell::new(ring),
            state: RefCell::new(State {
                chains: (0..slots).map(|_| None).collect(),
                free: (0..slots).rev().collect(),
                generation: 0,
            }),
            skips,
            retrying: Cell::new(false),
            #[cfg(test)]
            posted: Cell::new(0),
        });
        tokio_uring::spawn(drive(inner.clone()));
        Ok(Chains { inner })
    }

    /// Runs one chain: `build` gets the chain's file slot and `keep` (moved into the
    /// chain afterwards: what the operations point into must live in it) and returns
    /// the steps; the results come back in order. By convention step 0 opens the file
    /// into the slot and step 2 closes it; when the chain broke between the two, the
    /// slot's file is closed here. `None` (and nothing submitted) when every slot is
    /// busy, or a refused submit waits for its retry.
    pub(super) async fn run(
        &self,
        keep: Keep,
        build: impl FnOnce(types::Fixed, &Keep) -> Vec<Step>,
    ) -> Option<Vec<io::Result<u32>>> {
        {
            // Room for a whole chain, or none of it is queued. The queue is emptied by
            // every submit the kernel takes; one it refused waits for its retry, and
            // nothing is queued behind it meanwhile.
            let mut ring = self.inner.ring.borrow_mut();
            let sq = ring.submission();
            if !sq.is_empty() || sq.capacity() < MAX_CHAIN_OPS {
                return None;
            }
        }
        let slot = self.inner.state.borrow_mut().free.pop()?;
        let steps = build(types::Fixed(slot), &keep);
        let n = steps.len();
        assert!(
            (1..=MAX_CHAIN_OPS).contains(&n)
                && steps
                    .iter()
                    .enumerate()
                    .all(|(i, s)| (s.link == Link::End) == (i + 1 == n)),
            "a chain has 1 to {MAX_CHAIN_OPS} steps, only its last one the end"
        );
        let skips = self.inner.skips;
        let mut pending = Pending {
            results: [0; MAX_CHAIN_OPS],
            links: [Link::End; MAX_CHAIN_OPS],
            ops: n,
            done: 0,
            over: false,
            skips,
            generation: 0,
            waker: None,
            abandoned: false,
            _keep: keep,
        };
        let generation = {
            let mut state = self.inner.state.borrow_mut();
            state.generation = state.generation.wrapping_add(1);
            state.generation
        };
        pending.generation = generation;
        let mut ops = Vec::with_capacity(n);
        for (i, step) in steps.into_iter().enumerate() {
            pending.results[i] = step.ok;
            pending.links[i] = step.link;
            let mut flags = match step.link {
                Link::Soft => squeue::Flags::IO_LINK,
                Link::Hard => squeue::Flags::IO_HARDLINK,
                Link::End => squeue::Flags::empty(),
            };
            if skips && step.link != Link::End {
                flags |= squeue::Flags::SKIP_SUCCESS;
            }
            ops.push(
                step.op
                    .flags(flags)
                    .user_data(user_data(generation, slot, i)),
            );
        }
        self.inner.state.borrow_mut().chains[slot as usize] = Some(pending);
        {
            let mut ring = self.inner.ring.borrow_mut();
            let mut sq = ring.submission();
            for op in &ops {
                // SAFETY: what the operation points into lives in the chain's `Keep`,
                // which the state holds until the chain is over (or, if the ring is
                // dropped first, is leaked: see `Inner::drop`). The queue has room for
                // the whole chain (checked above, nothing ran since).
                unsafe { sq.push(op) }.expect("the chain ring's queue has room");
            }
        }
        Inner::submit(&self.inner);
        let results = Wait {
            inner: &self.inner,
            slot,
            finished: false,
        }
        .await;
        if n > 2 && results[0] >= 0 && results[2] < 0 {
            self.close_slot(types::Fixed(slot));
        }
        Some(
            results[..n]
                .iter()
                .map(|&r| {
                    if r >= 0 {
                        Ok(r as u32)
                    } else {
                        Err(io::Error::from_raw_os_error(-r))
                    }
                })
                .collect(),
        )
    }

    /// Closes `slot`'s file (a chain that broke before its own close), without waiting:
    /// a close of a registered file runs as it is submitted.
    fn close_slot(&self, slot: types::Fixed) {
        let op = opcode::Close::new(slot).build().user_data(UNWATCHED);
        let mut ring = self.inner.ring.borrow_mut();
        // SAFETY: a close points into no memory. The queue has room (see `run`).
        let pushed = unsafe { ring.submission().push(&op) };
        drop(ring);
        if pushed.is_ok() {
            Inner::submit(&self.inner);
        }
    }
}

impl Inner {
    /// Hands what is queued to the kernel (never waits for a completion). What the
    /// kernel did not take stays queued, and a retry is scheduled (see the module docs).
    fn submit(inner: &Rc<Inner>) {
        let Err(e) = inner.try_submit() else {
            return;
        };
        if !inner.retrying.replace(true) {
            crate::error!("submitting linked file operations: {e} (retrying)");
            tokio_uring::spawn(retry(inner.clone()));
        }
    }

    /// Submits what is queued; `Err` when some of it is left in the queue.
    fn try_submit(&self) -> io::Result<()> {
        loop {
            let res = if crate::storage::fault::chain_submit() {
                Err(io::Error::from_raw_os_error(libc::EAGAIN))
            } else {
                self.ring.borrow().submit()
            };
            match res {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // Completions are backed up: take them, then submit again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    self.complete();
                    continue;
                }
                Err(e) => return Err(e),
            }
            // The kernel may take only part of the queue (short of memory).
            let left = self.ring.borrow_mut().submission().len();
            return match left {
                0 => Ok(()),
                n => Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("the kernel took all but {n} operations"),
                )),
            };
        }
    }

    /// Takes the completions that arrived and wakes the chains they finish.
    fn complete(&self) {
        let mut ring = self.ring.borrow_mut();
        let mut state = self.state.borrow_mut();
        let mut freed = Vec::new();
        for cqe in ring.completion() {
            let data = cqe.user_data();
            if data == UNWATCHED {
                continue;
            }
            #[cfg(test)]
            self.posted.set(self.posted.get() + 1);
            let (generation, slot, op) = (
                (data >> 16) as u32,
                ((data >> 8) & 0xff) as usize,
                (data & 0xff) as usize,
            );
            let Some(p) = state.chains.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if p.generation != generation || p.over || op >= p.ops {
                continue;
            }
            if !p.complete(op, cqe.result()) {
                continue;
            }
            p.over = true;
            if p.abandoned {
                freed.push(slot);
            } else if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
        for slot in freed {
            state.chains[slot] = None;
            state.free.push(slot as u32);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The ring is going away with operations possibly still in the kernel: their
        // memory must outlive them, so it is leaked.
        for p in self.state.get_mut().chains.drain(..).flatten() {
            if !p.over {
                std::mem::forget(p);
            }
        }
    }
}

/// Submits what a refused submit left queued, on a timer, until the kernel takes it.
async fn retry(inner: Rc<Inner>) {
    let mut wait = SUBMIT_RETRY_FIRST;
    loop {
        tokio::time::sleep(wait).await;
        if inner.try_submit().is_ok() {
            break;
        }
        wait = (wait * 2).min(SUBMIT_RETRY_MAX);
    }
    inner.retrying.set(false);
    crate::info!("linked file operations submitted again");
}

/// Drains the ring whenever the reactor says completions wait. Runs as long as the
/// runtime (which drops it at its end, and with it the ring).
async fn drive(inner: Rc<Inner>) {
    loop {
        let Ok(mut guard) = inner.ready.readable().await else {
            return;
        };
        inner.complete();
        guard.clear_ready();
    }
}

/// Waits for the last completion of the chain in `slot`.
struct Wait<'a> {
    inner: &'a Inner,
    slot: u32,
    finished: bool,
}

impl Future for Wait<'_> {
    type Output = [i32; MAX_CHAIN_OPS];

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.inner.state.borrow_mut();
        let slot = self.slot as usize;
        let Some(p) = state.chains[slot].as_mut() else {
            unreachable!("a waited chain keeps its slot");
        };
        if !p.over {
            p.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let results = p.results;
        state.chains[slot] = None;
        state.free.push(self.slot);
        drop(state);
        self.finished = true;
        Poll::Ready(results)
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.inner.state.borrow_mut();
        let slot = self.slot as usize;
        match state.chains[slot].as_mut() {
            Some(p) if !p.over => p.abandoned = true,
            _ => {
                state.chains[slot] = None;
                state.free.push(self.slot);
            }
        }
    }
}

/// `path` for the kernel (`None` if it holds a NUL byte, which no path of ours does).
pub(super) fn c_path(path: &std::path::Path) -> Option<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// An `openat` of `path` (relative to the working directory, or absolute) into `slot`,
/// never through a symlink. The kernel refuses `O_CLOEXEC` for a registered file (it is
/// never inherited anyway).
pub(super) fn open_into(
    slot: types::Fixed,
    path: &CString,
    flags: i32,
    mode: u32,
) -> squeue::Entry {
    let dest = types::DestinationSlot::try_from_slot_target(slot.0)
        .expect("a slot below MAX_FILE_CHAINS is a valid target");
    opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(flags | libc::O_NOFOLLOW)
        .mode(mode)
        .file_index(Some(dest))
        .build()
}

/// The steps that write `keep.bytes` to a new file at `keep.paths[0]` (opened with
/// `flags` and `mode`) and rename it over `keep.paths[1]`: open into `slot`, write,
/// close, rename, linked, so the rename runs only after a write that stored every byte.
pub(super) fn publish_ops(slot: types::Fixed, keep: &Keep, flags: i32, mode: u32) -> Vec<Step> {
    let len = keep.bytes.len() as u32;
    vec![
        Step {
            op: open_into(slot, &keep.paths[0], flags, mode),
            ok: 0,
            link: Link::Soft,
        },
        Step {
            op: opcode::Write::new(slot, keep.bytes.as_ptr(), len)
                .offset(0)
                .build(),
            ok: len as i32,
            link: Link::Soft,
        },
        Step {
            op: opcode::Close::new(slot).build(),
            ok: 0,
            link: Link::Soft,
        },
        Step {
            op: opcode::RenameAt::new(
                types::Fd(libc::AT_FDCWD),
                keep.paths[0].as_ptr(),
                types::Fd(libc::AT_FDCWD),
                keep.paths[1].as_ptr(),
            )
            .build(),
            ok: 0,
            link: Link::End,
        },
    ]
}

/// A chain step's error, for a caller that reports it.
pub(super) fn clone_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// A write that stored fewer bytes than asked (its chain stopped there).
pub(super) fn short_write() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "short write")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const W: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tusring-chain-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The record's chain: open a temporary file, write, close, rename over the target.
    async fn publish(
        chains: &Chains,
        tmp: &std::path::Path,
        dest: &std::path::Path,
        bytes: &[u8],
        flags: i32,
    ) -> Vec<io::Result<u32>> {
        let keep = Keep {
            paths: vec![c_path(tmp).unwrap(), c_path(dest).unwrap()],
            bytes: bytes.to_vec(),
        };
        chains
            .run(keep, |slot, k| publish_ops(slot, k, flags, 0o600))
            .await
            .expect("a free slot")
    }

    #[test]
    fn a_chain_runs_its_steps_in_order_and_frees_its_slot() {
        runs_in_order(true);
    }

    #[test]
    fn a_chain_runs_its_steps_in_order_without_skipped_completions() {
        runs_in_order(false);
    }

    fn runs_in_order(skips: bool) {
        let d = dir();
        NO_SKIP.set(!skips);
        tokio_uring::start(async {
            let chains = Chains::current().expect("this kernel has linked operations");
            assert_eq!(chains.inner.skips, skips, "this kernel has CQE skipping");
            // Many more chains than slots, one after another: each frees its slot and
            // closes its file.
            for i in 0..3 * MAX_FILE_CHAINS {
                let body = format!("record {i}");
                let r = publish(&chains, &d.join("r.tmp"), &d.join("r"), body.as_bytes(), W).await;
                assert!(r.iter().all(|r| r.is_ok()), "{i}: {r:?}");
                assert_eq!(std::fs::read_to_string(d.join("r")).unwrap(), body);
                assert!(!d.join("r.tmp").exists());
            }
            // One completion per chain that succeeds when the steps before the last
            // skip theirs, else one per step.
            let per_chain = if skips { 1 } else { 4 };
            assert_eq!(
                chains.inner.posted.get(),
                per_chain * 3 * MAX_FILE_CHAINS as u64
            );
            assert_eq!(open_slots(&chains), 0);
            // The same ring serves the runtime's later callers.
            assert!(Rc::ptr_eq(&chains.inner, &Chains::current().unwrap().inner));
            // Chains at once, all in flight together.
            let many = (0..MAX_FILE_CHAINS).map(|i| {
                let (tmp, dest) = (d.join(format!("{i}.tmp")), d.join(format!("{i}")));
                let chains = chains.clone();
                async move { publish(&chains, &tmp, &dest, &[i as u8; 100], W).await }
            });
            for r in futures_join_all(many).await {
                assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
            }
            for i in 0..MAX_FILE_CHAINS {
                assert_eq!(
                    std::fs::read(d.join(format!("{i}"))).unwrap(),
                    vec![i as u8; 100]
                );
            }
            // Every slot is free again, and its file closed.
            assert_eq!(chains.inner.state.borrow().free.len(), MAX_FILE_CHAINS);
            assert_eq!(open_slots(&chains), 0);
        });
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_step_cancels_the_rest_of_its_chain() {
        failed_step_cancels(true);
    }

    #[test]
    fn a_failed_step_cancels_the_rest_of_its_chain_without_skipped_completions() {
        failed_step_cancels(false);
    }

    fn failed_step_cancels(skips: bool) {
        let d = dir();
        std::fs::write(d.join("r"), b"old record").unwrap();
        NO_SKIP.set(!skips);
        tokio_uring::start(async {
            let chains = Chains::current().unwrap();
            assert_eq!(chains.inner.skips, skips);
            // The open fails (no such directory): nothing after it runs, the old record
            // stays whole.
            let r = publish(&chains, &d.join("missing/r.tmp"), &d.join("r"), b"new", W).await;
            assert_eq!(
                r[0].as_ref().unwrap_err().raw_os_error(),
                Some(libc::ENOENT)
            );
            for step in &r[1..] {
                assert_eq!(
                    step.as_ref().unwrap_err().raw_os_error(),
                    Some(libc::ECANCELED)
                );
            }
            assert_eq!(std::fs::read(d.join("r")).unwrap(), b"old record");
            // The write fails (a symlink planted at the temporary path is not followed,
            // so the open fails with ELOOP): same.
            std::os::unix::fs::symlink(d.join("elsewhere"), d.join("r.tmp")).unwrap();
            let r = publish(&chains, &d.join("r.tmp"), &d.join("r"), b"new", W).await;
            assert_eq!(r[0].as_ref().unwrap_err().raw_os_error(), Some(libc::ELOOP));
            assert!(r[3].is_err());
            assert_eq!(std::fs::read(d.join("r")).unwrap(), b"old record");
            assert!(!d.join("elsewhere").exists());
            std::fs::remove_file(d.join("r.tmp")).unwrap();
            // The write fails (the file is open for reading only): the rename does not
            // run, and the slot's file is closed all the same.
            let r = publish(
                &chains,
                &d.join("r.tmp"),
                &d.join("r"),
                b"new",
                libc::O_RDONLY | libc::O_CREAT,
            )
            .await;
            assert!(r[0].is_ok(), "{r:?}");
            assert_eq!(r[1].as_ref().unwrap_err().raw_os_error(), Some(libc::EBADF));
            assert_eq!(
                r[3].as_ref().unwrap_err().raw_os_error(),
                Some(libc::ECANCELED)
            );
            assert_eq!(std::fs::read(d.join("r")).unwrap(), b"old record");
            assert_eq!(chains.inner.state.borrow().free.len(), MAX_FILE_CHAINS);
            assert_eq!(open_slots(&chains), 0);
        });
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_hard_linked_close_runs_after_a_failed_write() {
        for skips in [true, false] {
            hard_linked_close(skips);
        }
    }

    /// The small upload's data chain: open, write hard-linked to the close.
    fn hard_linked_close(skips: bool) {
        let d = dir();
        NO_SKIP.set(!skips);
        tokio_uring::start(async {
            let chains = Chains::current().unwrap();
            assert_eq!(chains.inner.skips, skips);
            let data_chain = |flags: i32, name: &str| {
                let keep = Keep {
                    paths: vec![c_path(&d.join(name)).unwrap()],
                    bytes: b"body".to_vec(),
                };
                chains.run(keep, move |slot, k| {
                    vec![
                        Step {
                            op: open_into(slot, &k.paths[0], flags, 0o600),
                            ok: 0,
                            link: Link::Soft,
                        },
                        Step {
                            op: opcode::Write::new(slot, k.bytes.as_ptr(), 4)
                                .offset(0)
                                .build(),
                            ok: 4,
                            link: Link::Hard,
                        },
                        Step {
                            op: opcode::Close::new(slot).build(),
                            ok: 0,
                            link: Link::End,
                        },
                    ]
                })
            };
            let before = chains.inner.posted.get();
            let r = data_chain(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, "a")
                .await
                .unwrap();
            assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
            assert_eq!(r[1].as_ref().ok(), Some(&4));
            assert_eq!(
                chains.inner.posted.get() - before,
                if skips { 1 } else { 3 }
            );
            assert_eq!(std::fs::read(d.join("a")).unwrap(), b"body");
            // The write fails: the close runs all the same, and says so.
            let r = data_chain(libc::O_RDONLY | libc::O_CREAT | libc::O_EXCL, "b")
                .await
                .unwrap();
            assert!(r[0].is_ok(), "{r:?}");
            assert_eq!(r[1].as_ref().unwrap_err().raw_os_error(), Some(libc::EBADF));
            assert!(r[2].is_ok(), "{r:?}");
            assert_eq!(open_slots(&chains), 0);
            // The open fails (the file exists): nothing else runs.
            let r = data_chain(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, "a")
                .await
                .unwrap();
            assert_eq!(
                r[0].as_ref().unwrap_err().raw_os_error(),
                Some(libc::EEXIST)
            );
            assert_eq!(
                r[1].as_ref().unwrap_err().raw_os_error(),
                Some(libc::ECANCELED)
            );
            assert_eq!(
                r[2].as_ref().unwrap_err().raw_os_error(),
                Some(libc::ECANCELED)
            );
            assert_eq!(std::fs::read(d.join("a")).unwrap(), b"body");
            assert_eq!(chains.inner.state.borrow().free.len(), MAX_FILE_CHAINS);
            assert_eq!(open_slots(&chains), 0);
        });
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The files open in the ring's slots, as the kernel lists them (`UserFiles` in the
    /// ring's fdinfo: one line per occupied slot).
    fn open_slots(chains: &Chains) -> usize {
        let fd = chains.inner.ring.borrow().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let files = info
            .split("UserFiles:")
            .nth(1)
            .expect("the ring's fdinfo lists its files");
        files
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with(' ') || l.starts_with('\t'))
            .filter(|l| {
                l.trim_start()
                    .split(':')
                    .next()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count()
    }

    /// Awaits every future, concurrently, on this runtime.
    async fn futures_join_all<F: Future + 'static>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F::Output: 'static,
    {
        let handles: Vec<_> = fs.map(tokio_uring::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
