//! HTTP hooks (`--hooks-http-urls`): a POST of the message to each URL, with ureq on a
//! hook worker thread (`rustus-compat.md` §3.6).
//!
//! Each URL is a notifier of its own, in order; one ureq agent serves them all and every
//! worker, so connections to a receiver are pooled and reused. Each request carries `Content-Type: application/json`, `Hook-Name: <event>`,
//! `Idempotency-Key: <uuid>` (one per event, the same for every URL and every retry)
//! and each `--hooks-http-proxy-headers` header the client sent. The whole exchange,
//! redirects included, is bounded by `--http-hook-timeout`.

use std::io::Read;
use std::time::Duration;

use super::notifier::{Delivery, Notifier, Verdict};
use super::Event;
use crate::error::HookError;
use crate::limits::MAX_HOOK_ANSWER_BYTES;

/// Largest hook answer body that is read (and relayed to the client for a pre-hook).
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Idle pooled connections are not reused after this long: receivers commonly close
/// idle keep-alive connections after 5 s (uvicorn) and a POST on a connection the
/// receiver is closing would fail.
const MAX_IDLE_AGE: Duration = Duration::from_secs(4);

/// `--hooks-http-urls`, `--hooks-http-proxy-headers`, `--http-hook-timeout`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpSettings {
    /// URLs (`http://` or `https://`) that get a POST per event, in order.
    pub urls: Vec<String>,
    /// Client header names copied onto the hook requests (and allowed by CORS).
    pub proxy_headers: Vec<String>,
    /// Bound of one request, redirects included.
    pub timeout: Duration,
}

/// One HTTP notifier per URL, in order; they share one ureq agent (one connection pool).
pub fn notifiers(settings: &HttpSettings) -> Vec<HttpHook> {
    if settings.urls.is_empty() {
        return Vec::new();
    }
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(settings.timeout))
        .http_status_as_error(false)
        .max_idle_age(MAX_IDLE_AGE)
        .user_agent(concat!("tusring/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent: ureq::Agent = config.into();
    settings
        .urls
        .iter()
        .map(|url| HttpHook {
            agent: agent.clone(),
            url: url.clone(),
            timeout: settings.timeout,
        })
        .collect()
}

/// The HTTP notifier of one URL.
pub struct HttpHook {
    /// Shared by every URL's notifier (ureq's agent is a handle on one pool).
    agent: ureq::Agent,
    url: String,
    timeout: Duration,
}

impl Notifier for HttpHook {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn describe(&self) -> String {
        format!("POST {}", self.url)
    }

    fn name_for(&self, _event: Event) -> String {
        format!("HTTP hook {}", self.url)
    }

    fn can_refuse(&self) -> bool {
        true
    }

    fn verdict_within(&self) -> Duration {
        self.timeout
    }

    /// One POST (post-events: retried for transport errors, timeouts, 5xx, 408, 429,
    /// with the same `Idempotency-Key`). A status that is not 2xx is the receiver's
    /// refusal, relayed to a pre-event's client as it is. With answers, a 2xx body is the
    /// answer.
    fn deliver(&self, d: &Delivery<'_>) -> Verdict {
        let via = self.name_for(d.event);
        match d.retrying(&via, || self.post(d), Failure::retryable) {
            Ok(answer) => d.passed(answer),
            Err(end) => end.verdict(|f| {
                let refusal = f.is_status();
                (f.into_hook_error(d.event), refusal)
            }),
        }
    }
}

/// One request's outcome, when it is not a 2xx.
#[derive(Debug)]
pub enum Failure {
    /// The receiver answered with this status, body and content type.
    Status {
        status: u16,
        body: Vec<u8>,
        content_type: Option<String>,
    },
    /// No answer within the timeout.
    Timeout(String),
    /// The receiver could not be reached (connection refused, DNS, TLS, …).
    Unreachable(String),
}

impl Failure {
    /// Whether sending again may succeed (transport failures, 5xx, 408, 429).
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            Failure::Timeout(_) | Failure::Unreachable(_) => true,
        }
    }

    /// The receiver answered (with a status that is not 2xx).
    pub fn is_status(&self) -> bool {
        matches!(self, Failure::Status { .. })
    }

    /// The error a pre-hook request gets for this failure.
    pub fn into_hook_error(self, event: Event) -> HookError {
        match self {
            Failure::Status {
                status,
                body,
                content_type,
            } => HookError::Rejected {
                // rustus: a code that is not a valid HTTP status becomes 500. 304 has
                // no body in HTTP/1.1 framing, so it is not relayed either.
                status: if (300..=599).contains(&status) && status != 304 {
                    status
                } else {
                    500
                },
                body,
                content_type,
            },
            Failure::Timeout(_) => HookError::Timeout(event.name()),
            Failure::Unreachable(_) => HookError::Unreachable(event.name()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status { status, body, .. } => {
                let shown: String = String::from_utf8_lossy(&body[..body.len().min(200)])
                    .escape_debug()
                    .collect();
                write!(f, "answered {status}: {shown}")
            }
            Failure::Timeout(why) => write!(f, "timed out: {why}"),
            Failure::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

impl HttpHook {
    /// One POST of the message to the URL. `Ok` for any 2xx answer, with its body when
    /// the delivery reads answers ([`Delivery::answers`]).
    fn post(&self, d: &Delivery<'_>) -> Result<Option<Vec<u8>>, Failure> {
        let (url, event) = (self.url.as_str(), d.event);
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("Hook-Name", event.name())
            .header("Idempotency-Key", d.key());
        for (name, value) in &d.origin.proxied {
            req = req.header(name.as_str(), value.as_slice());
        }
        let mut resp = match req.send(d.json.as_bytes()) {
            Ok(r) => r,
            Err(e) => return Err(transport_failure(e)),
        };
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Read the answer (bounded) so the connection can be reused. An answer gets one
        // byte more than it may have, so that a longer one is refused by its length.
        let mut body = Vec::new();
        let bound = if d.answers {
            MAX_HOOK_ANSWER_BYTES as u64 + 1
        } else {
            MAX_ANSWER_BYTES
        };
        let read = resp
            .body_mut()
            .as_reader()
            .take(bound)
            .read_to_end(&mut body);
        let ok = (200..300).contains(&status);
        if let Err(e) = read {
            if ok && d.answers {
                // A 2xx whose body broke off: the verdict is in, its answer is not.
                crate::warn!(
                    "hook {}: answer body from {url} broken off: {e}; taken as no answer",
                    d.tag
                );
                return Ok(None);
            }
            if ok {
                // The verdict is in; a broken body does not change it.
                return Ok(None);
            }
            crate::debug!("hook {} answer body from {url}: {e}", event.name());
        }
        if ok {
            Ok(d.answers.then_some(body))
        } else {
            body.truncate(MAX_ANSWER_BYTES as usize);
            Err(Failure::Status {
                status,
                body,
                content_type,
            })
        }
    }
}

fn transport_failure(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Timeout(t) => Failure::Timeout(format!("{t:?}")),
        ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Failure::Timeout(e.to_string())
        }
        other => Failure::Unreachable(other.to_string()),
    }
}
