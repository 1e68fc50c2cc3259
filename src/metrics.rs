//! Process-wide metrics, rendered at `GET /metrics` in the Prometheus text format 0.0.4.
//!
//! Every value is a relaxed atomic in a static: the cores update them without locks or
//! allocation. Labels are bounded by construction: each label value indexes a fixed
//! array (route templates, a fixed method set, status codes 100..=599, status classes,
//! hook events and notifier kinds), so no request can create a new series.

use crate::hooks::Event;
use crate::http::head::Method;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// A route template, the `endpoint` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `<base>/`: OPTIONS and POST.
    Collection = 0,
    /// `<base>/{id}/`.
    Upload = 1,
    /// `/health`.
    Health = 2,
    /// `/metrics`.
    Metrics = 3,
    /// `/ready`.
    Ready = 4,
    /// Anything else (404s, malformed heads).
    Other = 5,
}

const ENDPOINTS: usize = 6;

impl Endpoint {
    fn label(self, base: &str, out: &mut String) {
        match self {
            Endpoint::Collection => {
                out.push_str(base);
                out.push('/');
            }
            Endpoint::Upload => {
                out.push_str(base);
                out.push_str("/{id}/");
            }
            Endpoint::Health => out.push_str("/health"),
            Endpoint::Metrics => out.push_str("/metrics"),
            Endpoint::Ready => out.push_str("/ready"),
            Endpoint::Other => out.push_str("other"),
        }
    }

    const ALL: [Endpoint; ENDPOINTS] = [
        Endpoint::Collection,
        Endpoint::Upload,
        Endpoint::Health,
        Endpoint::Metrics,
        Endpoint::Ready,
        Endpoint::Other,
    ];
}

/// The protocol a request spoke, the `protocol` label: tus 1.0, or the resumable-uploads
/// draft at one of the interop versions tusring speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// tus 1.0.0 (and requests no protocol claims: `/health`, malformed heads).
    Tus = 0,
    /// The IETF draft, interop version 6.
    Draft6 = 1,
    /// The IETF draft, interop version 8.
    Draft8 = 2,
}

const PROTOCOLS: usize = 3;
const PROTOCOL_NAMES: [&str; PROTOCOLS] = ["tus", "ietf-draft-6", "ietf-draft-8"];

/// The kinds of informational answers counted in `tusring_interim_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interim {
    /// A creation's `104 (Upload Resumption Supported)` with the upload's `Location`.
    Resumption = 0,
    /// A `104` reporting progress (`Upload-Offset`) during a body.
    Progress = 1,
}

const INTERIM_NAMES: [&str; 2] = ["resumption", "progress"];

const METHOD_NAMES: [&str; 7] = ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "other"];

/// The `method` label's index for a method (`other` for the rest).
pub fn method_index(m: &Method) -> usize {
    match m {
        Method::Get => 0,
        Method::Head => 1,
        Method::Post => 2,
        Method::Patch => 3,
        Method::Delete => 4,
        Method::Options => 5,
        _ => 6,
    }
}

/// The `method` index for a request whose head could not be parsed.
pub const METHOD_OTHER: usize = 6;

const METHODS: usize = METHOD_NAMES.len();
const STATUSES: usize = 500; // 100..=599
const CLASSES: usize = 5; // 1xx..5xx

/// Upper bounds of the request duration buckets, in seconds (actix-web-prom's defaults).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of `uploads_sizes`: 2^1 … 2^40 bytes (rustus's).
pub const SIZE_BUCKETS: usize = 40;

/// A histogram with `N` finite buckets. `buckets[i]` counts observations in bucket `i`
/// only (not cumulative; rendering accumulates); `count` includes those above the last
/// bound (`+Inf`). `sum` is in the histogram's integer unit (microseconds, bytes).
pub struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; N],
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, bucket: Option<usize>, value: u64) {
        if let Some(b) = bucket {
            self.buckets[b].fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(value, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

/// The rustus counters and gauges, plus tusring's own.
pub static STARTED_UPLOADS: AtomicU64 = AtomicU64::new(0);
/// Uploads completed (by a PATCH or by their creation).
pub static FINISHED_UPLOADS: AtomicU64 = AtomicU64::new(0);
/// Uploads terminated.
pub static TERMINATED_UPLOADS: AtomicU64 = AtomicU64::new(0);
/// Uploads created and neither finished nor terminated since (by this process).
pub static ACTIVE_UPLOADS: AtomicI64 = AtomicI64::new(0);
/// Request body bytes received (every request, stored or not).
pub static BYTES_RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Connections answered 503 because `--max-connections` was reached.
pub static CONNECTIONS_REFUSED: AtomicU64 = AtomicU64::new(0);
/// Requests that took their upload over from an older request holding it (see
/// `storage::locks`), counted when they got the lock.
pub static LOCK_TAKEOVERS: AtomicU64 = AtomicU64::new(0);
/// Request bodies refused because they did not match their `Upload-Checksum` (460).
pub static CHECKSUM_MISMATCHES: AtomicU64 = AtomicU64::new(0);

/// hybrid-s3: uploads moved to S3 (object stored, file removed).
pub static S3_STORED: AtomicU64 = AtomicU64::new(0);
/// hybrid-s3: failed tries of a transfer to S3 (each is tried again).
pub static S3_FAILURES: AtomicU64 = AtomicU64::new(0);
/// hybrid-s3: bytes uploaded to S3 (parts and whole small files; a part sent again
/// counts again).
pub static S3_BYTES: AtomicU64 = AtomicU64::new(0);
/// hybrid-s3: complete uploads waiting for their transfer or being moved.
pub static S3_PENDING: AtomicI64 = AtomicI64::new(0);

/// The hook pool's counters (`hooks`: the notifiers the workers deliver through; those
/// with a queue of their own, AMQP and NATS without replies, count their deliveries
/// themselves). Each is rendered as `tusring_hook_<name>_total`.
#[derive(Debug)]
pub struct HookCounters {
    /// Deliveries that succeeded: one per notifier and event, each URL counting.
    pub delivered: AtomicU64,
    /// Deliveries that failed and were given up: after the retries, or at once for a
    /// failure a retry cannot mend (one per notifier and event). Not superseded ones.
    pub failed: AtomicU64,
    /// Pre-hook requests refused by a hook's verdict.
    pub rejected: AtomicU64,
    /// HTTP post-hook retries.
    pub retried: AtomicU64,
    /// Events never delivered: a post-event that found no room in the queue in time (a
    /// progress `post-receive` during a body: at once, `Hooks::post_progress`), a
    /// pre-hook whose request had stopped waiting, or events left at the end of the
    /// grace period.
    pub dropped: AtomicU64,
    /// Pre-hook requests answered 503 because the queue was full.
    pub queue_full: AtomicU64,
    /// HTTP post-receive deliveries that failed and were not retried because a newer
    /// event of the same upload was waiting behind them (one per URL).
    pub superseded: AtomicU64,
    /// Hook answers not taken (`--hooks-answers`): not valid, or asking for what is not
    /// supported; each was logged and counted as no instruction.
    pub bad_answers: AtomicU64,
}

/// The hook counters.
pub static HOOK_COUNTERS: HookCounters = HookCounters {
    delivered: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    rejected: AtomicU64::new(0),
    retried: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    queue_full: AtomicU64::new(0),
    superseded: AtomicU64::new(0),
    bad_answers: AtomicU64::new(0),
};

static UPLOAD_SIZES: Histogram<SIZE_BUCKETS> = Histogram::new();
static REQUESTS: [[[AtomicU64; STATUSES]; METHODS]; ENDPOINTS] =
    [const { [const { [const { AtomicU64::new(0) }; STATUSES] }; METHODS] }; ENDPOINTS];
static DURATIONS: [[[Histogram<11>; CLASSES]; METHODS]; ENDPOINTS] =
    [const { [const { [const { Histogram::new() }; CLASSES] }; METHODS] }; ENDPOINTS];

static PROTOCOL_REQUESTS: [[[AtomicU64; CLASSES]; METHODS]; PROTOCOLS] =
    [const { [const { [const { AtomicU64::new(0) }; CLASSES] }; METHODS] }; PROTOCOLS];
static PROTOCOL_BYTES: [AtomicU64; PROTOCOLS] = [const { AtomicU64::new(0) }; PROTOCOLS];
static INTERIMS: [[AtomicU64; 2]; PROTOCOLS] =
    [const { [const { AtomicU64::new(0) }; 2] }; PROTOCOLS];

/// Connections per core, for `tusring_connections{core}`.
static CORE_CONNECTIONS: [AtomicU64; crate::limits::MAX_WORKERS] =
    [const { AtomicU64::new(0) }; crate::limits::MAX_WORKERS];

/// Most distinct `notifier` labels (one per transport kind: `file`, `dir`, `http`, ...).
pub const MAX_NOTIFIER_KINDS: usize = 8;

/// The `notifier` labels in use, in the order the hooks registered them; the index of a
/// label is its slot in the tables below.
static NOTIFIER_KINDS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
static HOOK_CALLS: [[AtomicU64; MAX_NOTIFIER_KINDS]; Event::ALL.len()] =
    [const { [const { AtomicU64::new(0) }; MAX_NOTIFIER_KINDS] }; Event::ALL.len()];
static HOOK_FAILURES: [[AtomicU64; MAX_NOTIFIER_KINDS]; Event::ALL.len()] =
    [const { [const { AtomicU64::new(0) }; MAX_NOTIFIER_KINDS] }; Event::ALL.len()];
static HOOK_DURATIONS: [[Histogram<11>; MAX_NOTIFIER_KINDS]; Event::ALL.len()] =
    [const { [const { Histogram::new() }; MAX_NOTIFIER_KINDS] }; Event::ALL.len()];

fn notifier_kinds() -> Vec<&'static str> {
    NOTIFIER_KINDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// The slot of the `notifier` label `kind`, registered on first use (at hook startup).
/// The labels are the transports' fixed names, so there are at most a handful; past
/// [`MAX_NOTIFIER_KINDS`] the last slot is shared.
pub fn notifier_slot(kind: &'static str) -> usize {
    let mut kinds = NOTIFIER_KINDS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = kinds.iter().position(|k| *k == kind) {
        return i;
    }
    if kinds.len() < MAX_NOTIFIER_KINDS {
        kinds.push(kind);
        kinds.len() - 1
    } else {
        MAX_NOTIFIER_KINDS - 1
    }
}

fn event_index(e: Event) -> usize {
    Event::ALL.iter().position(|x| *x == e).unwrap_or(0)
}

/// Counts one hook delivery (after its retries), whether it failed (an error or a
/// refusal by a pre-hook) and how long it took, retries included.
/// `slot` is the notifier's label slot ([`notifier_slot`]).
pub fn hook_delivery(event: Event, slot: usize, failed: bool, took: Duration) {
    let e = event_index(event);
    let n = slot.min(MAX_NOTIFIER_KINDS - 1);
    HOOK_CALLS[e][n].fetch_add(1, Relaxed);
    let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
    HOOK_DURATIONS[e][n].observe(duration_bucket(took.as_secs_f64()), micros);
    if failed {
        HOOK_FAILURES[e][n].fetch_add(1, Relaxed);
    }
}

/// A connection was opened (`+1`) or closed on core `core`.
pub fn core_connection(core: usize, opened: bool) {
    if let Some(c) = CORE_CONNECTIONS.get(core) {
        if opened {
            c.fetch_add(1, Relaxed);
        } else {
            c.fetch_sub(1, Relaxed);
        }
    }
}

/// An upload was created; `length` when it is known, `finished` when the creation
/// completed it (an empty upload, creation-with-upload of everything).
pub fn upload_created(length: Option<u64>, finished: bool) {
    STARTED_UPLOADS.fetch_add(1, Relaxed);
    if let Some(len) = length {
        UPLOAD_SIZES.observe(size_bucket(len), len);
    }
    if finished {
        FINISHED_UPLOADS.fetch_add(1, Relaxed);
    } else {
        ACTIVE_UPLOADS.fetch_add(1, Relaxed);
    }
}

/// A body did not match its `Upload-Checksum` and was discarded.
pub fn checksum_mismatch() {
    CHECKSUM_MISMATCHES.fetch_add(1, Relaxed);
}

/// A PATCH completed an upload.
pub fn upload_finished() {
    FINISHED_UPLOADS.fetch_add(1, Relaxed);
    ACTIVE_UPLOADS.fetch_sub(1, Relaxed);
}

/// An unfinished upload expired and was removed by the sweep.
pub fn upload_expired() {
    ACTIVE_UPLOADS.fetch_sub(1, Relaxed);
}

/// An upload was terminated; `unfinished` if it was not complete.
pub fn upload_terminated(unfinished: bool) {
    TERMINATED_UPLOADS.fetch_add(1, Relaxed);
    if unfinished {
        ACTIVE_UPLOADS.fetch_sub(1, Relaxed);
    }
}

/// The bucket of a size: the first `i` with `len <= 2^(i+1)`.
fn size_bucket(len: u64) -> Option<usize> {
    (0..SIZE_BUCKETS).find(|&i| len <= 1u64 << (i + 1))
}

fn duration_bucket(secs: f64) -> Option<usize> {
    DURATION_BUCKETS.iter().position(|&b| secs <= b)
}

/// Upper bounds of the Redis call latency buckets, in seconds.
pub const REDIS_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Redis calls made (records, locks, renewals, releases, probes), failed or not.
pub static REDIS_CALLS: AtomicU64 = AtomicU64::new(0);
/// Redis calls that failed: no connection, no reply in time, or an error reply.
pub static REDIS_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Redis connections attempted (each runtime connects lazily, and again after a failure).
pub static REDIS_CONNECTS: AtomicU64 = AtomicU64::new(0);
/// Upload locks renewed in Redis.
pub static REDIS_RENEWALS: AtomicU64 = AtomicU64::new(0);
/// Upload locks found lost (expired, taken, or not renewable in time): their holder was
/// asked to stop.
pub static REDIS_LOCKS_LOST: AtomicU64 = AtomicU64::new(0);
/// Release requests this node published for uploads another node held.
pub static REDIS_RELEASES_ASKED: AtomicU64 = AtomicU64::new(0);
/// Release requests from other nodes for uploads this node held.
pub static REDIS_RELEASES_HEARD: AtomicU64 = AtomicU64::new(0);
static REDIS_LATENCY: Histogram<12> = Histogram::new();

/// Records one Redis call: how long it took (waiting for a connection included) and
/// whether it failed.
pub fn redis_call(took: Duration, failed: bool) {
    REDIS_CALLS.fetch_add(1, Relaxed);
    if failed {
        REDIS_ERRORS.fetch_add(1, Relaxed);
    }
    let secs = took.as_secs_f64();
    let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
    REDIS_LATENCY.observe(REDIS_BUCKETS.iter().position(|&b| secs <= b), micros);
}

/// Records one answered request, spoken in `protocol`.
pub fn request(
    endpoint: Endpoint,
    protocol: Protocol,
    method: usize,
    status: u16,
    elapsed: Duration,
    body: u64,
) {
    let e = endpoint as usize;
    let m = method.min(METHODS - 1);
    let s = (status.clamp(100, 599) - 100) as usize;
    REQUESTS[e][m][s].fetch_add(1, Relaxed);
    let class = s / 100;
    PROTOCOL_REQUESTS[protocol as usize][m][class].fetch_add(1, Relaxed);
    let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
    DURATIONS[e][m][class].observe(duration_bucket(elapsed.as_secs_f64()), micros);
    if body > 0 {
        BYTES_RECEIVED.fetch_add(body, Relaxed);
        PROTOCOL_BYTES[protocol as usize].fetch_add(body, Relaxed);
    }
}

/// An informational answer of `kind` was sent to a request spoken in `protocol`.
pub fn interim(protocol: Protocol, kind: Interim) {
    INTERIMS[protocol as usize][kind as usize].fetch_add(1, Relaxed);
}

/// Values read from elsewhere at render time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Core threads.
    pub cores: usize,
    /// Open connections (process-wide).
    pub open_connections: usize,
    /// Held upload locks.
    pub uploads_in_progress: usize,
    /// Hook events queued or parked, not yet taken by a worker.
    pub hook_queue_depth: usize,
}

/// The `# HELP` and `# TYPE` lines of a family.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn float(v: f64, out: &mut String) {
    if v.is_infinite() {
        out.push_str("+Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Writes a histogram's `_bucket`, `_sum` and `_count` lines. `labels` is the label
/// list without braces (may be empty); `scale` turns the sum's unit into the metric's.
fn histogram<const N: usize>(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64; N],
    h: &Histogram<N>,
    scale: f64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut acc = 0;
    for (bound, b) in bounds.iter().zip(h.buckets.iter()) {
        acc += b.load(Relaxed);
        let _ = write!(out, "{name}_bucket{{{labels}{sep}le=\"");
        float(*bound, out);
        let _ = writeln!(out, "\"}} {acc}");
    }
    let count = h.count.load(Relaxed).max(acc);
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = |out: &mut String| {
        if !labels.is_empty() {
            let _ = write!(out, "{{{labels}}}");
        }
    };
    out.push_str(name);
    out.push_str("_sum");
    braces(out);
    out.push(' ');
    float(h.sum.load(Relaxed) as f64 * scale, out);
    out.push('\n');
    out.push_str(name);
    out.push_str("_count");
    braces(out);
    let _ = writeln!(out, " {count}");
}

/// The whole exposition, in the Prometheus text format 0.0.4. `base` is the tus base
/// path (`--url`), used in the route templates.
pub fn render(base: &str, g: &Gauges) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    };
    counter(
        &mut out,
        "started_uploads",
        "Uploads created.",
        STARTED_UPLOADS.load(Relaxed),
    );
    counter(
        &mut out,
        "finished_uploads",
        "Uploads completed, by a PATCH or by their creation.",
        FINISHED_UPLOADS.load(Relaxed),
    );
    counter(
        &mut out,
        "terminated_uploads",
        "Uploads terminated.",
        TERMINATED_UPLOADS.load(Relaxed),
    );
    header(
        &mut out,
        "active_uploads",
        "gauge",
        "Uploads created by this process and neither finished nor terminated.",
    );
    let _ = writeln!(out, "active_uploads {}", ACTIVE_UPLOADS.load(Relaxed));
    header(
        &mut out,
        "uploads_sizes",
        "histogram",
        "Upload-Length of created uploads, in bytes.",
    );
    let bounds: [f64; SIZE_BUCKETS] = std::array::from_fn(|i| (1u64 << (i + 1)) as f64);
    histogram(&mut out, "uploads_sizes", "", &bounds, &UPLOAD_SIZES, 1.0);

    let mut ep = String::new();
    header(
        &mut out,
        "http_requests_total",
        "counter",
        "Requests answered, by route template, method and status.",
    );
    for e in Endpoint::ALL {
        ep.clear();
        e.label(base, &mut ep);
        for (m, method) in METHOD_NAMES.iter().enumerate() {
            for (s, c) in REQUESTS[e as usize][m].iter().enumerate() {
                let v = c.load(Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "http_requests_total{{endpoint=\"{ep}\",method=\"{method}\",status=\"{}\"}} {v}",
                        s + 100
                    );
                }
            }
        }
    }
    header(
        &mut out,
        "http_requests_duration_seconds",
        "histogram",
        "Time from a complete request head to the answer written, by route template, method and status class.",
    );
    for e in Endpoint::ALL {
        ep.clear();
        e.label(base, &mut ep);
        for (m, method) in METHOD_NAMES.iter().enumerate() {
            for (c, h) in DURATIONS[e as usize][m].iter().enumerate() {
                if h.count.load(Relaxed) == 0 {
                    continue;
                }
                let labels = format!(
                    "endpoint=\"{ep}\",method=\"{method}\",status_class=\"{}xx\"",
                    c + 1
                );
                histogram(
                    &mut out,
                    "http_requests_duration_seconds",
                    &labels,
                    &DURATION_BUCKETS,
                    h,
                    1e-6,
                );
            }
        }
    }
    header(
        &mut out,
        "tusring_protocol_requests_total",
        "counter",
        "Requests answered, by protocol (tus, or the resumable-uploads draft by interop version), method and status class.",
    );
    for (p, protocol) in PROTOCOL_NAMES.iter().enumerate() {
        for (m, method) in METHOD_NAMES.iter().enumerate() {
            for (c, n) in PROTOCOL_REQUESTS[p][m].iter().enumerate() {
                let v = n.load(Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "tusring_protocol_requests_total{{protocol=\"{protocol}\",method=\"{method}\",status_class=\"{}xx\"}} {v}",
                        c + 1
                    );
                }
            }
        }
    }
    header(
        &mut out,
        "tusring_protocol_bytes_received_total",
        "counter",
        "Request body bytes received, by protocol.",
    );
    for (p, protocol) in PROTOCOL_NAMES.iter().enumerate() {
        let _ = writeln!(
            out,
            "tusring_protocol_bytes_received_total{{protocol=\"{protocol}\"}} {}",
            PROTOCOL_BYTES[p].load(Relaxed)
        );
    }
    header(
        &mut out,
        "tusring_interim_responses_total",
        "counter",
        "104 (Upload Resumption Supported) answers sent, by protocol and kind: resumption (a creation's Location) or progress (Upload-Offset during a body).",
    );
    for (p, protocol) in PROTOCOL_NAMES.iter().enumerate().skip(1) {
        for (k, kind) in INTERIM_NAMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "tusring_interim_responses_total{{protocol=\"{protocol}\",kind=\"{kind}\"}} {}",
                INTERIMS[p][k].load(Relaxed)
            );
        }
    }
    counter(
        &mut out,
        "tusring_bytes_received_total",
        "Request body bytes received.",
        BYTES_RECEIVED.load(Relaxed),
    );
    counter(
        &mut out,
        "tusring_connections_refused_total",
        "Connections answered 503 because --max-connections was reached.",
        CONNECTIONS_REFUSED.load(Relaxed),
    );
    counter(
        &mut out,
        "tusring_lock_takeovers_total",
        "PATCH or DELETE requests that made an older request holding their upload stop, then got it.",
        LOCK_TAKEOVERS.load(Relaxed),
    );
    counter(
        &mut out,
        "tusring_checksum_mismatches_total",
        "Request bodies discarded because they did not match Upload-Checksum (460).",
        CHECKSUM_MISMATCHES.load(Relaxed),
    );
    let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    };
    gauge(&mut out, "tusring_cores", "Core threads.", g.cores);
    gauge(
        &mut out,
        "tusring_open_connections",
        "Open client connections.",
        g.open_connections,
    );
    header(
        &mut out,
        "tusring_connections",
        "gauge",
        "Open client connections per core.",
    );
    for (i, c) in CORE_CONNECTIONS.iter().take(g.cores).enumerate() {
        let _ = writeln!(
            out,
            "tusring_connections{{core=\"{i}\"}} {}",
            c.load(Relaxed)
        );
    }
    gauge(
        &mut out,
        "tusring_uploads_in_progress",
        "Uploads with a request in progress (held upload locks).",
        g.uploads_in_progress,
    );
    gauge(
        &mut out,
        "tusring_hook_queue_depth",
        "Hook events queued, not yet taken by a worker.",
        g.hook_queue_depth,
    );
    let kinds = notifier_kinds();
    for (name, table, help) in [
        (
            "tusring_hook_invocations_total",
            &HOOK_CALLS,
            "Hook deliveries (after retries), by event and notifier.",
        ),
        (
            "tusring_hook_failures_total",
            &HOOK_FAILURES,
            "Hook deliveries that failed or refused, by event and notifier.",
        ),
    ] {
        header(&mut out, name, "counter", help);
        for (e, row) in table.iter().enumerate() {
            for (n, c) in row.iter().enumerate().take(kinds.len()) {
                let v = c.load(Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "{name}{{event=\"{}\",notifier=\"{}\"}} {v}",
                        Event::ALL[e].name(),
                        kinds[n]
                    );
                }
            }
        }
    }
    header(
        &mut out,
        "tusring_hook_duration_seconds",
        "histogram",
        "Time of a hook delivery, retries included, by event and notifier.",
    );
    for (e, row) in HOOK_DURATIONS.iter().enumerate() {
        for (n, h) in row.iter().enumerate().take(kinds.len()) {
            if h.count.load(Relaxed) == 0 {
                continue;
            }
            let labels = format!(
                "event=\"{}\",notifier=\"{}\"",
                Event::ALL[e].name(),
                kinds[n]
            );
            histogram(
                &mut out,
                "tusring_hook_duration_seconds",
                &labels,
                &DURATION_BUCKETS,
                h,
                1e-6,
            );
        }
    }
    render_hook_counters(&mut out);
    crate::hooks::render_transport_metrics(&mut out);
    render_redis(&mut out);
    render_s3(&mut out);
    out
}

/// The Redis counters and the call latency (all zero with file records).
fn render_redis(out: &mut String) {
    counters(
        out,
        &[
            (
                "tusring_redis_calls_total",
                "Redis calls (records, locks, renewals, releases, probes), failed or not.",
                &REDIS_CALLS,
            ),
            (
                "tusring_redis_errors_total",
                "Redis calls that failed: no connection, no reply in time, or an error reply.",
                &REDIS_ERRORS,
            ),
            (
                "tusring_redis_connects_total",
                "Redis connections attempted, reconnects included.",
                &REDIS_CONNECTS,
            ),
            (
                "tusring_redis_lock_renewals_total",
                "Upload locks renewed in Redis.",
                &REDIS_RENEWALS,
            ),
            (
                "tusring_redis_locks_lost_total",
                "Upload locks found lost (expired, taken, or not renewable in time); their holder was stopped.",
                &REDIS_LOCKS_LOST,
            ),
            (
                "tusring_redis_release_requests_sent_total",
                "Release requests published for uploads another node held.",
                &REDIS_RELEASES_ASKED,
            ),
            (
                "tusring_redis_release_requests_heard_total",
                "Release requests from other nodes for uploads this node held.",
                &REDIS_RELEASES_HEARD,
            ),
        ],
    );
    header(
        out,
        "tusring_redis_call_seconds",
        "histogram",
        "Redis call latency, waiting for a connection included.",
    );
    histogram(
        out,
        "tusring_redis_call_seconds",
        "",
        &REDIS_BUCKETS,
        &REDIS_LATENCY,
        1e-6,
    );
}

/// Unlabelled counters: (name, help, value).
pub(crate) fn counters(out: &mut String, list: &[(&str, &str, &AtomicU64)]) {
    for (name, help, v) in list {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Relaxed));
    }
}

/// The hook pool's counters.
fn render_hook_counters(out: &mut String) {
    let c = &HOOK_COUNTERS;
    counters(
        out,
        &[
        (
            "tusring_hook_delivered_total",
            "Hook deliveries that succeeded, one per notifier and event (each URL counts).",
            &c.delivered,
        ),
        (
            "tusring_hook_failed_total",
            "Hook deliveries given up: failed after their retries, or at once when a retry cannot help.",
            &c.failed,
        ),
        (
            "tusring_hook_rejected_total",
            "Requests refused by a pre-hook's verdict.",
            &c.rejected,
        ),
        (
            "tusring_hook_retries_total",
            "HTTP post-hook retries.",
            &c.retried,
        ),
        (
            "tusring_hook_dropped_total",
            "Hook events never delivered: no room in the queue in time (at once for a progress post-receive), a pre-hook nobody waited for any more, or left at shutdown.",
            &c.dropped,
        ),
        (
            "tusring_hook_queue_full_total",
            "Pre-hook requests answered 503 because the hook queue was full.",
            &c.queue_full,
        ),
        (
            "tusring_hook_superseded_total",
            "HTTP post-receive deliveries that failed and were not retried because a newer event of the upload was waiting (one per URL).",
            &c.superseded,
        ),
        (
            "tusring_hook_bad_answers_total",
            "Hook answers not taken (--hooks-answers): not valid or not supported; logged, taken as no instruction.",
            &c.bad_answers,
        ),
        ],
    );
}

/// Unlabelled gauges: (name, help, value).
pub(crate) fn gauges(out: &mut String, list: &[(&str, &str, &AtomicI64)]) {
    for (name, help, v) in list {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {}", v.load(Relaxed));
    }
}

/// The hybrid-s3 transfers' counters and gauge.
fn render_s3(out: &mut String) {
    counters(
        out,
        &[
            (
                "tusring_s3_stored_total",
                "Uploads moved to S3 (object stored, local file removed).",
                &S3_STORED,
            ),
            (
                "tusring_s3_failures_total",
                "Failed tries of a transfer to S3 (each is tried again).",
                &S3_FAILURES,
            ),
            (
                "tusring_s3_bytes_total",
                "Bytes uploaded to S3 (a part sent again counts again).",
                &S3_BYTES,
            ),
        ],
    );
    let name = "tusring_s3_pending";
    header(
        out,
        name,
        "gauge",
        "Complete uploads waiting for their transfer to S3 or being moved.",
    );
    let _ = writeln!(out, "{name} {}", S3_PENDING.load(Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_buckets_are_powers_of_two() {
        assert_eq!(size_bucket(0), Some(0));
        assert_eq!(size_bucket(2), Some(0));
        assert_eq!(size_bucket(3), Some(1));
        assert_eq!(size_bucket(1 << 40), Some(39));
        assert_eq!(size_bucket((1 << 40) + 1), None);
    }

    #[test]
    fn histogram_lines_are_cumulative_and_consistent() {
        let h: Histogram<3> = Histogram::new();
        let bounds = [1.0, 2.0, 4.0];
        h.observe(Some(0), 1);
        h.observe(Some(2), 3);
        h.observe(None, 9);
        let mut out = String::new();
        histogram(&mut out, "x", "a=\"b\"", &bounds, &h, 1.0);
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"1\"} 1\n\
             x_bucket{a=\"b\",le=\"2\"} 1\n\
             x_bucket{a=\"b\",le=\"4\"} 2\n\
             x_bucket{a=\"b\",le=\"+Inf\"} 3\n\
             x_sum{a=\"b\"} 13\n\
             x_count{a=\"b\"} 3\n"
        );
        let mut out = String::new();
        histogram(&mut out, "y", "", &[0.5], &Histogram::<1>::new(), 1e-6);
        assert_eq!(
            out,
            "y_bucket{le=\"0.5\"} 0\ny_bucket{le=\"+Inf\"} 0\ny_sum 0\ny_count 0\n"
        );
    }

    #[test]
    fn render_has_help_and_type_for_every_family_and_bounded_labels() {
        request(
            Endpoint::Upload,
            Protocol::Draft8,
            3,
            204,
            Duration::from_millis(3),
            10,
        );
        interim(Protocol::Draft8, Interim::Progress);
        request(
            Endpoint::Other,
            Protocol::Tus,
            METHOD_OTHER,
            404,
            Duration::from_secs(20),
            0,
        );
        let text = render(
            "/files",
            &Gauges {
                cores: 2,
                ..Gauges::default()
            },
        );
        assert!(text.contains(
            "http_requests_total{endpoint=\"/files/{id}/\",method=\"PATCH\",status=\"204\"}"
        ));
        assert!(text.contains(
            "http_requests_duration_seconds_bucket{endpoint=\"other\",method=\"other\",status_class=\"4xx\",le=\"+Inf\"}"
        ));
        assert!(text.contains("tusring_connections{core=\"1\"} "));
        assert!(text.contains(
            "tusring_protocol_requests_total{protocol=\"ietf-draft-8\",method=\"PATCH\",status_class=\"2xx\"}"
        ));
        assert!(text.contains("tusring_protocol_bytes_received_total{protocol=\"ietf-draft-8\"} "));
        assert!(text.contains(
            "tusring_interim_responses_total{protocol=\"ietf-draft-8\",kind=\"progress\"} "
        ));
        assert!(!text.contains("tusring_interim_responses_total{protocol=\"tus\""));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(typed.insert(rest.split(' ').next().unwrap().to_string()));
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(name);
                assert!(typed.contains(family), "{line}");
            }
        }
    }
}
