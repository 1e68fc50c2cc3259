//! `config::load(args, env, dotenv)` with a command line, environment and `.env` text
//! built from the input (decoded with `arbitrary` into structured pieces, so most
//! inputs name real flags and variables).
//!
//! `load` resolves `--host` with DNS when it is not an IP literal. The fuzzer must never
//! do network lookups, so the host always ends up an IP literal:
//! * normally a final `--host=<ip>` is appended to the command line: the last repeat of
//!   a flag wins, so any host given earlier is never resolved, and if that final
//!   argument is not reached (an earlier error, `--help`) nothing is resolved at all;
//! * in the "host from the environment" mode nothing is appended; instead every
//!   argument starting with `--host` is dropped, `RUSTUS_SERVER_HOST` is given only if
//!   it is an IP literal (checked the way `load` checks it), and the `.env` text never
//!   defines it (so the default 0.0.0.0 applies).
//!
//! Invariants: never panics; errors are one line; an accepted `Config` keeps the
//! invariants its fields document.
#![no_main]

use std::ffi::OsString;
use std::net::IpAddr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tusring::config::{self, load, Action};
use tusring::limits::{MAX_TIMEOUT_SECS, MAX_WORKERS};

/// Long flags: every name the table knows (tusring's own, their aliases, rustus's
/// unsupported ones), then `help`, `version` and a few unknown.
fn longs() -> &'static [&'static str] {
    static LONGS: OnceLock<Vec<&'static str>> = OnceLock::new();
    LONGS.get_or_init(|| {
        let (mut longs, _) = config::known_names();
        longs.extend(["help", "version", "Port", "xyz", "", "-"]);
        longs
    })
}

const SHORTS: &[char] = &['w', 'm', 's', 'i', 'h', 'V', 'x', '-'];

/// Variables `load` may look up: every one the table reads, and one it does not.
fn vars() -> &'static [&'static str] {
    static VARS: OnceLock<Vec<&'static str>> = OnceLock::new();
    VARS.get_or_init(|| {
        let (_, mut vars) = config::known_names();
        vars.push("RUSTUS_S3_URL");
        vars
    })
}

/// Values worth trying for many flags.
const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "2",
    "64",
    "4096",
    "32768",
    "65536",
    "1024",
    "1025",
    "18446744073709551615",
    "18446744073709551616",
    "4K",
    "64M",
    "65M",
    "1G",
    "16T",
    "17179869184T",
    "k",
    "0.5",
    "0.0000000001",
    ".5",
    "5.",
    "604800",
    "604800.000000001",
    "true",
    "FALSE",
    "yes",
    "off",
    "maybe",
    "INFO",
    "trace",
    "/",
    "//",
    "files/",
    "/a b",
    "/a?b",
    "{year}/{month}",
    "../x",
    "/abs",
    "a\0b",
    "file-storage",
    "s3",
    "file-info-storage",
    "redis-info-storage",
    "getting,creation",
    "creation-with-upload",
    "checksum-trailer",
    "nope",
    "*",
    "a,,b",
    "127.0.0.1",
    "::1",
    "[::1]",
    "-1",
    "--",
    "-w",
    "é",
    "\u{feff}1",
    " 7 ",
];

const HOSTS: &[&str] = &[
    "127.0.0.1",
    "0.0.0.0",
    "::",
    "::1",
    "[::1]",
    " 127.0.0.1 ",
    "::ffff:127.0.0.1",
    "[::]",
    "255.255.255.255",
    "fe80::1",
];

#[derive(Debug, Arbitrary)]
enum Value {
    Pick(u8),
    Text(String),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Pick(i) => VALUES[usize::from(*i) % VALUES.len()].to_owned(),
            Value::Text(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Arg {
    /// `--name VALUE`, `--name=VALUE` or `--name`.
    Long {
        name: u8,
        value: Option<Value>,
        joined: bool,
    },
    /// `-c VALUE`, `-cVALUE` or `-c`.
    Short {
        name: u8,
        value: Option<Value>,
        joined: bool,
    },
    /// Anything at all.
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum DotLine {
    Pair {
        key: u8,
        value: Value,
        quote: u8,
        export: bool,
        comment: bool,
    },
    Comment(String),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Host {
    Pick(u8),
    Text(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    args: Vec<Arg>,
    env: Vec<(u8, Value)>,
    dotenv: Option<Vec<DotLine>>,
    host: Host,
    /// Take the host from the environment instead of a final `--host`.
    host_from_env: bool,
}

/// What `load` does with a host value before resolving it: trim, then strip brackets.
fn is_ip_literal(host: &str) -> bool {
    let host = host.trim();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok()
}

fn build_args(input: &Input) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for arg in &input.args {
        match arg {
            Arg::Long {
                name,
                value,
                joined,
            } => {
                let name = longs()[usize::from(*name) % longs().len()];
                match (value, joined) {
                    (Some(v), true) => out.push(format!("--{name}={}", v.text()).into()),
                    (Some(v), false) => {
                        out.push(format!("--{name}").into());
                        out.push(v.text().into());
                    }
                    (None, _) => out.push(format!("--{name}").into()),
                }
            }
            Arg::Short {
                name,
                value,
                joined,
            } => {
                let c = SHORTS[usize::from(*name) % SHORTS.len()];
                match (value, joined) {
                    (Some(v), true) => out.push(format!("-{c}{}", v.text()).into()),
                    (Some(v), false) => {
                        out.push(format!("-{c}").into());
                        out.push(v.text().into());
                    }
                    (None, _) => out.push(format!("-{c}").into()),
                }
            }
            Arg::Raw(s) => out.push(s.into()),
        }
    }
    if input.host_from_env {
        out.retain(|a| !a.to_string_lossy().starts_with("--host"));
    } else {
        let host = match &input.host {
            Host::Pick(i) => HOSTS[usize::from(*i) % HOSTS.len()].to_owned(),
            Host::Text(s) if is_ip_literal(s) => s.clone(),
            Host::Text(_) => "127.0.0.1".to_owned(),
        };
        out.push(format!("--host={host}").into());
    }
    out
}

fn build_dotenv(lines: &[DotLine]) -> String {
    let mut text = String::new();
    for line in lines {
        match line {
            DotLine::Pair {
                key,
                value,
                quote,
                export,
                comment,
            } => {
                if *export {
                    text.push_str("export ");
                }
                text.push_str(vars()[usize::from(*key) % vars().len()]);
                text.push('=');
                let v = value.text();
                match quote % 3 {
                    0 => text.push_str(&v),
                    1 => {
                        text.push('"');
                        text.push_str(&v);
                        text.push('"');
                    }
                    _ => {
                        text.push('\'');
                        text.push_str(&v);
                        text.push('\'');
                    }
                }
                if *comment {
                    text.push_str(" # note");
                }
            }
            DotLine::Comment(c) => {
                text.push('#');
                text.push_str(c);
            }
            DotLine::Raw(r) => text.push_str(r),
        }
        text.push('\n');
    }
    // The host variable is never defined in .env: see the module docs.
    text.replace("RUSTUS_SERVER_HOST", "RUSTUS_SERVER_HOSX")
}

fuzz_target!(|input: Input| {
    let args = build_args(&input);
    let env: Vec<(&str, String)> = input
        .env
        .iter()
        .map(|(k, v)| (vars()[usize::from(*k) % vars().len()], v.text()))
        .filter(|(k, v)| *k != "RUSTUS_SERVER_HOST" || (input.host_from_env && is_ip_literal(v)))
        .collect();
    let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let dotenv = input.dotenv.as_deref().map(build_dotenv);

    match load(args, &lookup, dotenv.as_deref()) {
        Ok(Action::Help(text)) => assert!(!text.is_empty()),
        Ok(Action::Version(text)) => assert!(!text.is_empty()),
        Ok(Action::Run(c)) => {
            assert!(
                c.workers >= 1 && c.workers <= MAX_WORKERS,
                "workers {}",
                c.workers
            );
            assert_ne!(c.max_body_size, Some(0));
            assert_ne!(c.max_file_size, Some(0));
            assert!(
                c.url.is_empty() || (c.url.starts_with('/') && !c.url.ends_with('/')),
                "url {:?} not normalised",
                c.url
            );
            assert!(!c.dir_structure.contains('\0'));
            assert!(!c.dir_structure.starts_with('/'));
            assert!(!c.dir_structure.split('/').any(|p| p == ".."));
            assert!(!c.data_dir.as_os_str().is_empty());
            assert!(!c.info_dir.as_os_str().is_empty());
            for t in [
                c.shutdown_timeout,
                c.head_timeout,
                c.idle_timeout,
                c.body_timeout,
            ] {
                assert!(!t.is_zero() && t.as_secs_f64() <= MAX_TIMEOUT_SECS as f64);
            }
            assert!((4 << 10..=64 << 20).contains(&c.body_buffer_size));
            assert!((4 << 10..=64 << 20).contains(&c.pipe_size));
            assert!(c.uring_entries.is_power_of_two());
            assert!((64..=32768).contains(&c.uring_entries));
            assert_eq!(c.listen.port(), c.port);
            assert!((1..=config::MAX_HOOK_WORKERS).contains(&c.hooks.workers));
            assert!((1..=config::MAX_HOOK_QUEUE).contains(&c.hooks.queue));
            assert!(c.max_connections >= 1 && c.backlog >= 1);
            let expiration = c.expiration_time.as_secs();
            assert!((1..=config::MAX_EXPIRATION_SECS).contains(&expiration));
            assert!(is_ip_literal(&c.host), "host {:?} was resolved", c.host);
            let e = c.extensions;
            assert!(!(e.creation_with_upload || e.creation_defer_length) || e.creation);
            assert!(!e.concatenation_unfinished || e.concatenation);
            assert!(!e.checksum_trailer || e.checksum);
        }
        Err(e) => {
            assert!(!e.message.is_empty());
            assert!(
                !e.message.contains(['\n', '\r']),
                "error message spans lines: {:?}",
                e.message
            );
            assert_eq!(e.to_string(), e.message);
        }
    }
});
