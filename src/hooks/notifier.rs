//! The notifier seam: what the hook pool knows of a transport.
//!
//! A transport (executables, HTTP, NATS, AMQP) is a [`Notifier`]: it says what it is
//! called (the `notifier` label of the metrics, its name in the logs), whether it can
//! refuse a pre-event, how long a verdict may take, and it delivers one event at a time
//! ([`Notifier::deliver`], retries inside), reports what it still holds
//! ([`Notifier::backlog`]) and stops ([`Notifier::shutdown`]). The pool (`hooks`) owns
//! the order: notifiers are a list in rustus's order (file, directory, each HTTP URL,
//! NATS, AMQP); for a pre-event the first that does not pass is the verdict, for a
//! post-event each gets the event on its own. The pool also owns the accounting: it times
//! each delivery, counts and logs it from the [`Verdict`], so a transport only reports.
//!
//! Two kinds of notifier:
//!
//! * **One that can refuse** (executables, HTTP, NATS with `--hooks-nats-wait-for-replies`)
//!   blocks in `deliver` for the exchange (bounded by its own timeout) and runs on the
//!   hook worker threads only.
//! * **One that cannot** (AMQP, NATS publishing) must not wait in `deliver`: it hands the
//!   event to a queue of its own (a short mutex section) and answers [`Verdict::Queued`];
//!   its own thread delivers, counts and logs. When no configured notifier can refuse,
//!   the cores call `deliver` themselves and no hook worker is started.

use std::cell::OnceCell;
use std::fmt;
use std::time::{Duration, Instant};

use super::{Event, Origin};
use crate::error::HookError;
use crate::metrics;

/// A transport for hook events. See the module documentation for the contract.
pub trait Notifier: Send + Sync {
    /// The `notifier` label of the metrics: `file`, `dir`, `http`, `nats`, `amqp`.
    fn kind(&self) -> &'static str;

    /// What the startup line says it sends to (`POST http://...`, `file /srv/hook`).
    fn describe(&self) -> String;

    /// How the log lines about `event` name it (`HTTP hook http://...`, `directory hook
    /// /srv/hooks/pre-create`).
    fn name_for(&self, event: Event) -> String;

    /// Whether it can refuse a pre-event. One that cannot must never wait in
    /// [`Notifier::deliver`] (the cores may call it).
    fn can_refuse(&self) -> bool;

    /// The longest [`Notifier::deliver`] of a pre-event takes (its own timeouts); the
    /// request waits for the verdicts of all notifiers at most their sum, plus the queue.
    fn verdict_within(&self) -> Duration {
        Duration::ZERO
    }

    /// Delivers one event: for a post-event with its retries (see
    /// [`Delivery::retrying`]); for a pre-event once, the answer being the verdict.
    fn deliver(&self, delivery: &Delivery<'_>) -> Verdict;

    /// Events it holds that are not delivered yet (its own queue; 0 for a notifier that
    /// delivers in `deliver`).
    fn backlog(&self) -> usize {
        0
    }

    /// Called once, after the hook workers have stopped or at `deadline` (the end of the
    /// grace period), whichever is first: delivers what it still holds by `deadline`,
    /// then stops; past `deadline` it stops what is still running (a hook process). What
    /// it gives up is logged and counted.
    fn shutdown(&self, _deadline: Instant) {}
}

/// What a receiver said besides letting the request through. rustus's hooks only say yes
/// or no; with `--hooks-answers` a notifier hands the pool the bytes of a tusd v2 shaped
/// answer ([`Delivery::answers`]): an HTTP hook's 2xx body, an executable's stdout, a NATS
/// reply. The pool parses them ([`super::answer::parse_answer`]); a notifier never does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The answer's bytes as received, `None` when none was asked for or given. Bounded by
    /// the transport: at most [`crate::limits::MAX_HOOK_ANSWER_BYTES`] + 1 bytes for
    /// HTTP and executables (one more than an answer may have, so the parser refuses it by
    /// its length), a NATS message's size for NATS.
    pub bytes: Option<Vec<u8>>,
}

impl Answer {
    /// An answer of these bytes.
    pub fn of(bytes: Vec<u8>) -> Answer {
        Answer { bytes: Some(bytes) }
    }
}

/// A notifier's report on one delivery.
#[derive(Debug)]
pub enum Verdict {
    /// Delivered and not refused; the request goes on.
    Pass(Answer),
    /// Taken into the notifier's own queue, which delivers, counts and logs on its own.
    Queued,
    /// The receiver refused the request (for a pre-event, `answer` is the client's
    /// answer: status, body, content type). A post-event refused is counted and logged
    /// as a failed delivery.
    Refuse {
        answer: HookError,
        /// For the log line.
        why: String,
        /// Logged at DEBUG only (a missing directory hook: said once at startup).
        quiet: bool,
    },
    /// Not delivered, after the notifier's retries; for a pre-event `answer` is the
    /// client's answer (504, 502, 500).
    Fail {
        answer: HookError,
        why: String,
        quiet: bool,
    },
    /// A `post-receive` given up without its retries: a newer event of the upload waits
    /// behind it (see `hooks`, Ordering).
    Superseded { why: String },
}

impl Verdict {
    /// Passed, with nothing more to say.
    pub fn pass() -> Verdict {
        Verdict::Pass(Answer::default())
    }
}

/// Retries of a failed post-event delivery by a notifier that can refuse
/// (`--hooks-http-retries`, `--hooks-http-retry-backoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retry {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Pause before the first retry; doubles at each.
    pub backoff: Duration,
}

/// One event on its way to one notifier.
pub struct Delivery<'a> {
    pub event: Event,
    pub upload_id: &'a str,
    /// The message, formatted once per event (`--hooks-format`).
    pub json: &'a str,
    pub origin: &'a Origin,
    /// Whether the pool reads an answer to this event (`--hooks-answers`, and an event
    /// that takes one): a notifier that can refuse then passes with the answer's bytes
    /// ([`Answer`]).
    pub answers: bool,
    /// `"<event> <upload id>"`, for log lines.
    pub tag: &'a str,
    /// Made on first use: see [`Delivery::key`].
    pub(super) key: &'a OnceCell<String>,
    pub(super) retry: Retry,
    /// Sleeps before a retry; `true` when the event is superseded meanwhile.
    pub(super) pause: &'a dyn Fn(Duration) -> bool,
}

impl Delivery<'_> {
    /// A UUID for this event, the same for every notifier and every retry (HTTP's
    /// `Idempotency-Key`); made on first use.
    pub fn key(&self) -> &str {
        self.key.get_or_init(|| uuid::Uuid::new_v4().to_string())
    }

    /// Runs `attempt` once for a pre-event. For a post-event, a failure `retryable` says
    /// may mend is tried again up to the configured retries, after a pause that doubles
    /// from the configured backoff; a `post-receive` whose upload has a newer event queued
    /// is not retried ([`Ended::Superseded`]), and its pause ends when one is queued. Each
    /// retry is logged at DEBUG (naming the notifier `via`) and counted.
    pub fn retrying<T, F: fmt::Display>(
        &self,
        via: &dyn fmt::Display,
        mut attempt: impl FnMut() -> Result<T, F>,
        retryable: impl Fn(&F) -> bool,
    ) -> Result<T, Ended<F>> {
        let mut tries = 0u32;
        loop {
            match attempt() {
                Ok(got) => return Ok(got),
                Err(f) if !self.event.is_pre() && retryable(&f) && tries < self.retry.retries => {
                    let pause = self.retry.backoff.saturating_mul(1 << tries.min(16));
                    crate::debug!(
                        "hook {}: {via} {f}; retry {} of {} in {:.1} s",
                        self.tag,
                        tries + 1,
                        self.retry.retries,
                        pause.as_secs_f64()
                    );
                    if (self.pause)(pause) {
                        return Err(Ended::Superseded(f));
                    }
                    tries += 1;
                    metrics::HOOK_COUNTERS
                        .retried
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(f) => return Err(Ended::Failed(f)),
            }
        }
    }
}

impl Delivery<'_> {
    /// The verdict of a delivery that passed with `answer` (the bytes a receiver answered,
    /// if any): those bytes when this delivery reads answers ([`Delivery::answers`]).
    pub fn passed(&self, answer: Option<Vec<u8>>) -> Verdict {
        if self.answers {
            Verdict::Pass(Answer::of(answer.unwrap_or_default()))
        } else {
            Verdict::pass()
        }
    }
}

/// How [`Delivery::retrying`] gave up.
#[derive(Debug)]
pub enum Ended<F> {
    /// The last attempt failed (or the failure was not worth retrying).
    Failed(F),
    /// Not retried: a newer event of the upload supersedes it.
    Superseded(F),
}

impl<F: fmt::Display> Ended<F> {
    /// The verdict for this ending; `answer` maps the last failure to the client's answer
    /// and says whether it is the receiver's refusal (rather than a failure to ask).
    pub fn verdict(self, answer: impl FnOnce(F) -> (HookError, bool)) -> Verdict {
        match self {
            Ended::Superseded(f) => Verdict::Superseded { why: f.to_string() },
            Ended::Failed(f) => {
                let why = f.to_string();
                match answer(f) {
                    (answer, true) => Verdict::Refuse {
                        answer,
                        why,
                        quiet: false,
                    },
                    (answer, false) => Verdict::Fail {
                        answer,
                        why,
                        quiet: false,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::RequestPart;
    use std::cell::Cell;
    use std::collections::BTreeMap;

    fn origin() -> Origin {
        Origin {
            request: RequestPart {
                uri: "/files/".into(),
                method: "POST".into(),
                remote_addr: "127.0.0.1".into(),
                headers: BTreeMap::new(),
            },
            proxied: Vec::new(),
        }
    }

    /// Runs `retrying` for `event` with 3 retries over `failures` (true = retryable),
    /// the pause reporting "superseded" from the `superseded_at`-th pause on.
    fn run(event: Event, failures: &[bool], superseded_at: usize) -> (usize, String) {
        let origin = origin();
        let key = OnceCell::new();
        let pauses = Cell::new(0usize);
        let pause = |_d: Duration| {
            pauses.set(pauses.get() + 1);
            pauses.get() >= superseded_at
        };
        let d = Delivery {
            event,
            upload_id: "id",
            json: "{}",
            origin: &origin,
            answers: false,
            tag: "tag",
            key: &key,
            retry: Retry {
                retries: 3,
                backoff: Duration::ZERO,
            },
            pause: &pause,
        };
        let calls = Cell::new(0usize);
        let result = d.retrying(
            &"via",
            || {
                let i = calls.get();
                calls.set(i + 1);
                match failures.get(i) {
                    Some(&retryable) => Err(if retryable { "soft" } else { "hard" }),
                    None => Ok(()),
                }
            },
            |f| *f == "soft",
        );
        let end = match result {
            Ok(()) => "ok".to_owned(),
            Err(Ended::Failed(f)) => format!("failed {f}"),
            Err(Ended::Superseded(f)) => format!("superseded {f}"),
        };
        (calls.get(), end)
    }

    #[test]
    fn retries_post_events_only_while_it_may_help() {
        let never = usize::MAX;
        assert_eq!(run(Event::PostFinish, &[], never), (1, "ok".into()));
        assert_eq!(
            run(Event::PostFinish, &[true, true], never),
            (3, "ok".into())
        );
        // 1 attempt + 3 retries, then given up.
        assert_eq!(
            run(Event::PostFinish, &[true; 6], never),
            (4, "failed soft".into())
        );
        // A failure a retry cannot mend is not retried.
        assert_eq!(
            run(Event::PostFinish, &[true, false, true], never),
            (2, "failed hard".into())
        );
        // Pre-events: one attempt, whatever the failure.
        assert_eq!(
            run(Event::PreCreate, &[true, true], never),
            (1, "failed soft".into())
        );
        // Superseded during the first pause: no retry.
        assert_eq!(
            run(Event::PostReceive, &[true, true], 1),
            (1, "superseded soft".into())
        );
    }

    #[test]
    fn one_key_per_event() {
        let origin = origin();
        let key = OnceCell::new();
        let pause = |_d: Duration| false;
        let d = Delivery {
            event: Event::PostCreate,
            upload_id: "id",
            json: "{}",
            origin: &origin,
            answers: false,
            tag: "t",
            key: &key,
            retry: Retry::default(),
            pause: &pause,
        };
        let first = d.key().to_owned();
        assert_eq!(d.key(), first);
        assert_eq!(first.len(), 36);
    }
}
