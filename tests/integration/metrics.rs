//! `/metrics` (Prometheus text), `/ready`, `--max-connections`, `--log-format json` and
//! `--disable-access-log`.

use crate::harness::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::time::Duration;

/// One sample: metric name, labels (sorted), value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict parser of the Prometheus text format 0.0.4 as tusring writes it: every
/// family has `# HELP` then `# TYPE` before its samples, every sample belongs to the
/// family last typed, no series repeats, label values are quoted and escaped, and each
/// histogram series has increasing `le` buckets ending in `+Inf` equal to `_count`,
/// and a `_sum`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut current: Option<(String, String)> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in the exposition");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_string()), "second HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(valid_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "kind: {line}"
            );
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "second TYPE: {line}"
            );
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (family, kind) = current.clone().expect("sample before any TYPE");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                (name.to_string(), parse_labels(body, line))
            }
        };
        assert!(valid_name(&name), "{line}");
        let ok = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{family}{s}")),
            _ => name == family,
        };
        assert!(ok, "sample {name} outside its family {family}");
        if kind == "counter" {
            assert!(value >= 0.0, "negative counter: {line}");
        }
        assert!(seen.insert(series.to_string()), "repeated series: {line}");
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    // Histogram consistency.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut sums: HashMap<String, f64> = HashMap::new();
        let mut counts: HashMap<String, f64> = HashMap::new();
        for s in out.iter().filter(|s| s.name.starts_with(family.as_str())) {
            let mut key_labels = s.labels.clone();
            let le = key_labels.remove("le");
            let key = format!("{key_labels:?}");
            if s.name == format!("{family}_bucket") {
                let le = le.expect("bucket has le");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le is a number")
                };
                buckets.entry(key).or_default().push((bound, s.value));
            } else if s.name == format!("{family}_sum") {
                sums.insert(key, s.value);
            } else {
                counts.insert(key, s.value);
            }
        }
        assert_eq!(buckets.len(), counts.len(), "{family}: _count per series");
        assert_eq!(buckets.len(), sums.len(), "{family}: _sum per series");
        for (key, bs) in &buckets {
            for w in bs.windows(2) {
                assert!(w[0].0 < w[1].0, "{family}{key}: le not increasing");
                assert!(w[0].1 <= w[1].1, "{family}{key}: buckets not cumulative");
            }
            let last = bs.last().unwrap();
            assert!(last.0.is_infinite(), "{family}{key}: no +Inf bucket");
            assert_eq!(last.1, counts[key], "{family}{key}: +Inf != _count");
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
        assert!(
            valid_name(name) && !name.contains(':'),
            "label name: {line}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => panic!("bad escape: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "repeated label: {line}"
        );
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
            assert!(!rest.is_empty(), "trailing comma: {line}");
        } else {
            assert!(rest.is_empty(), "junk after a label: {line}");
        }
    }
    labels
}

fn scrape(d: &Daemon) -> Vec<Sample> {
    let r = d.send(&Req::new("GET", "/metrics"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_exposition(&String::from_utf8(r.body).expect("utf-8"))
}

/// The value of the series `name` with exactly `labels` (0 when absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map_or(0.0, |s| s.value)
}

#[test]
fn metrics_parse_and_count_the_requests_made() {
    let tmp = TempDir::new("metrics");
    let d = Daemon::start(&tmp, &[]);
    let a = d.create(10);
    let b = d.create(10);
    let c = d.create(5);
    assert_eq!(d.patch(&a, 0, &random_bytes(1, 10)).status, 204);
    assert_eq!(d.patch(&b, 0, &random_bytes(2, 4)).status, 204);
    assert_eq!(d.delete(&c).status, 204);
    assert_eq!(d.send(&Req::new("GET", "/nope/at/all")).status, 404);

    let m = scrape(&d);
    assert_eq!(value(&m, "started_uploads", &[]), 3.0);
    assert_eq!(value(&m, "finished_uploads", &[]), 1.0);
    assert_eq!(value(&m, "terminated_uploads", &[]), 1.0);
    // 3 created - 1 finished - 1 terminated unfinished.
    assert_eq!(value(&m, "active_uploads", &[]), 1.0);
    assert_eq!(value(&m, "tusring_bytes_received_total", &[]), 14.0);
    assert_eq!(value(&m, "uploads_sizes_count", &[]), 3.0);
    assert_eq!(value(&m, "uploads_sizes_sum", &[]), 25.0);
    assert_eq!(value(&m, "uploads_sizes_bucket", &[("le", "8")]), 1.0);
    assert_eq!(value(&m, "uploads_sizes_bucket", &[("le", "16")]), 3.0);
    let req = |ep: &str, method: &str, status: &str| {
        value(
            &m,
            "http_requests_total",
            &[("endpoint", ep), ("method", method), ("status", status)],
        )
    };
    assert_eq!(req("/files/", "POST", "201"), 3.0);
    assert_eq!(req("/files/{id}/", "PATCH", "204"), 2.0);
    assert_eq!(req("/files/{id}/", "DELETE", "204"), 1.0);
    assert_eq!(req("other", "GET", "404"), 1.0);
    // The scrape itself is counted after its answer.
    assert_eq!(req("/metrics", "GET", "200"), 0.0);
    let total: f64 = m
        .iter()
        .filter(|s| s.name == "http_requests_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(total, 7.0, "only the requests made are counted");
    let dur = |method: &str, class: &str| {
        value(
            &m,
            "http_requests_duration_seconds_count",
            &[
                ("endpoint", "/files/{id}/"),
                ("method", method),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(dur("PATCH", "2xx"), 2.0);
    assert_eq!(dur("DELETE", "2xx"), 1.0);
    // Bounded labels: no raw path or upload ID anywhere.
    for s in &m {
        for v in s.labels.values() {
            assert!(!v.contains(&a) && !v.contains("nope"), "{s:?}");
        }
    }
    assert_eq!(value(&m, "tusring_cores", &[]), 2.0);
    let open = value(&m, "tusring_open_connections", &[]);
    assert!(open >= 1.0, "the scrape's own connection is open");

    assert_eq!(
        m.iter().filter(|s| s.name == "tusring_connections").count(),
        2
    );
    assert_eq!(value(&m, "tusring_uploads_in_progress", &[]), 0.0);
    assert_eq!(value(&m, "tusring_hook_queue_depth", &[]), 0.0);

    let m2 = scrape(&d);
    assert_eq!(
        value(
            &m2,
            "http_requests_total",
            &[
                ("endpoint", "/metrics"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        1.0
    );
    // The total and the per-core gauges are read one after the other while earlier
    // connections may still be closing: they must agree once those closes are seen.
    let agree = eventually(Duration::from_secs(5), || {
        let m = scrape(&d);
        let per_core: f64 = m
            .iter()
            .filter(|s| s.name == "tusring_connections")
            .map(|s| s.value)
            .sum();
        per_core == value(&m, "tusring_open_connections", &[])
    });
    assert!(agree, "per-core connection gauges never matched the total");
    // Finishing the last upload brings active_uploads to 0.
    assert_eq!(d.patch(&b, 4, &random_bytes(3, 6)).status, 204);
    let m3 = scrape(&d);
    assert_eq!(value(&m3, "active_uploads", &[]), 0.0);
    assert_eq!(value(&m3, "finished_uploads", &[]), 2.0);
    assert_eq!(value(&m3, "tusring_bytes_received_total", &[]), 20.0);
}

#[test]
fn metrics_count_a_completion_by_creation_and_a_hook() {
    let tmp = TempDir::new("metrics-hook");
    let hook = tmp.join("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(
        &tmp,
        &[
            "--hooks-file",
            hook.to_str().unwrap(),
            "--hooks",
            "pre-create",
        ],
    );
    let body = random_bytes(4, 7);
    let r = d.send(
        &Req::new("POST", "/files")
            .tus()
            .headers(&[("Upload-Length", "7"), OCTET])
            .body(&body),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let m = scrape(&d);
    assert_eq!(value(&m, "started_uploads", &[]), 1.0);
    assert_eq!(value(&m, "finished_uploads", &[]), 1.0);
    assert_eq!(value(&m, "active_uploads", &[]), 0.0);
    assert_eq!(value(&m, "tusring_bytes_received_total", &[]), 7.0);
    let labels = [("event", "pre-create"), ("notifier", "file")];
    assert_eq!(
        value(&m, "tusring_hook_invocations_total", &labels),
        1.0,
        "{m:?}"
    );
    assert_eq!(value(&m, "tusring_hook_failures_total", &labels), 0.0);
    assert_eq!(
        value(&m, "tusring_hook_duration_seconds_count", &labels),
        1.0
    );
}

/// The CPUs a thread may run on, from `/proc/<pid>/task/<tid>/status`.
fn cpus_allowed(task: &std::path::Path) -> String {
    let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn pin_cores_pins_each_core_thread_to_one_cpu() {
    let tmp = TempDir::new("pin");
    let d = Daemon::start(&tmp, &["--pin-cores"]);
    let tasks = std::path::PathBuf::from(format!("/proc/{}/task", d.pid()));
    let mut cores = Vec::new();
    for entry in std::fs::read_dir(&tasks).unwrap() {
        let path = entry.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim().starts_with("tusring-core-") {
            cores.push((comm.trim().to_string(), cpus_allowed(&path)));
        }
    }
    assert_eq!(cores.len(), 2, "{cores:?}");
    for (name, cpus) in &cores {
        assert!(
            !cpus.is_empty() && cpus.chars().all(|c| c.is_ascii_digit()),
            "{name} is not pinned to one CPU: {cpus:?}"
        );
    }
    // Without the flag, core threads keep the whole mask.
    let tmp2 = TempDir::new("nopin");
    let d2 = Daemon::start(&tmp2, &[]);
    let main_mask = cpus_allowed(&std::path::PathBuf::from(format!("/proc/{}", d2.pid())));
    let tasks = std::path::PathBuf::from(format!("/proc/{}/task", d2.pid()));
    for entry in std::fs::read_dir(&tasks).unwrap() {
        let path = entry.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim().starts_with("tusring-core-") {
            assert_eq!(cpus_allowed(&path), main_mask);
        }
    }
}

#[test]
fn ready_and_health() {
    let tmp = TempDir::new("ready");
    let d = Daemon::start(&tmp, &[]);
    let r = d.send(&Req::new("GET", "/ready"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(d.send(&Req::new("GET", "/health")).status, 200);
    let r = d.send(&Req::new("POST", "/ready"));
    assert_eq!(r.status, 405, "{r:?}");
}

/// Reads what the server sends until it closes, for at most 5 s.
fn read_to_close(c: &mut Conn) -> String {
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut all = Vec::new();
    let _ = c.stream.read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn max_connections_refuses_past_the_limit_and_recovers() {
    let tmp = TempDir::new("maxconn");
    let d = Daemon::start(&tmp, &["--max-connections", "3"]);
    // Three connections, each known to be accepted (it answered a request).
    let mut open: Vec<Conn> = (0..3)
        .map(|_| {
            let mut c = d.conn();
            let r = c.request(&Req::new("GET", "/health"));
            assert_eq!(r.status, 200);
            c
        })
        .collect();
    let mut fourth = d.conn();
    let text = read_to_close(&mut fourth);
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text:?}"
    );
    assert!(text.contains("\r\nRetry-After: 1\r\n"), "{text:?}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text:?}");
    // The kept connections still work.
    let r = open[0].request(&Req::new("GET", "/health"));
    assert_eq!(r.status, 200);
    open.clear();
    // Once they are closed, new connections are served again.
    let recovered = eventually(Duration::from_secs(5), || {
        let mut c = d.conn();
        c.send(&Req::new("GET", "/health"));
        matches!(c.read_response(), Ok(r) if r.status == 200)
    });
    assert!(recovered, "no connection served after the others closed");
    // The server may not have seen every earlier close yet: wait until a scrape fits.
    assert!(eventually(Duration::from_secs(5), || {
        let mut c = d.conn();
        c.send(&Req::new("GET", "/metrics"));
        matches!(c.read_response(), Ok(r) if r.status == 200)
    }));
    let m = scrape(&d);
    assert!(value(&m, "tusring_connections_refused_total", &[]) >= 1.0);
}

#[test]
fn json_log_lines_parse() {
    let tmp = TempDir::new("logjson");
    let d = Daemon::start(&tmp, &["--log-format", "json"]);
    let id = d.create(3);
    assert!(d.wait_log_line(&["POST /files"]).is_some());
    let _ = id;
    let text = d.stderr_text();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let keys = json_top_level_keys(line);
        assert_eq!(keys, ["ts", "level", "msg"], "{line}");
        assert!(v["ts"].is_string() && v["level"].is_string() && v["msg"].is_string());
        n += 1;
    }
    assert!(n >= 2, "{text}");
}

#[test]
fn disable_access_log_writes_no_access_lines() {
    let tmp = TempDir::new("noaccess");
    let d = Daemon::start(&tmp, &["--disable-access-log"]);
    let id = d.create(3);
    assert_eq!(d.patch(&id, 0, b"abc").status, 204);
    // A request after which the daemon logs something else, to know the log is flushed.
    assert_eq!(d.send(&Req::new("GET", "/health")).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let text = d.stderr_text();
    assert!(text.contains("listening on"), "{text}");
    for needle in ["POST /files", "PATCH /files", "GET /health"] {
        assert!(!text.contains(needle), "{needle} logged:\n{text}");
    }
}
