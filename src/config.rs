//! Configuration: rustus's flags and `RUSTUS_*` environment variables, parsed and
//! validated.
//!
//! tusring is a drop-in replacement for rustus, so every flag name, short form,
//! environment variable and default here is rustus's (see `rustus-compat.md` §1), plus a
//! few timeouts of tusring's own that follow the same naming pattern.
//!
//! # Two stages
//!
//! Parsing follows ripgrep's split between collecting and deciding:
//!
//! 1. `parse_args` runs the lexopt loop and fills a `RawArgs`: one optional raw value
//!    per row of `FLAGS`, each remembering where it came from (`Origin`). `--help` and
//!    `--version` stop here, before the environment or `.env` is even looked at. Then
//!    `RawArgs::fill` fills the rows the command line left empty from the environment,
//!    then from the `.env` file, then from the table's defaults.
//! 2. `Config::from_raw` turns the raw strings into typed values (sizes, durations, a
//!    `SocketAddr`, the extension set) and validates them. An error names the flag, or
//!    the environment variable when the value came from there, so the user knows which
//!    line to fix.
//!
//! # One table
//!
//! Everything about a flag (long and short names, environment variable, value
//! placeholder, default, one-line help) is one row of `FLAGS`; the parser, the
//! environment lookup, the defaults and `--help` all read that table, so they cannot
//! drift apart. rustus flags that tusring recognises but does not implement are rows of
//! `UNSUPPORTED`: using one is an error naming the flag (never "unknown flag"), while
//! their environment variables are ignored, so a rustus env file keeps working. When a
//! feature lands (hooks, first), its rows move from `UNSUPPORTED` into `FLAGS`.
//!
//! # Where tusring differs from rustus
//!
//! * Boolean values accept `true/false`, `1/0`, `yes/no`, `on/off` in any case; rustus
//!   accepts only lowercase `true`/`false`. A boolean flag also takes `--flag=false`.
//! * `--max-body-size` defaults to unlimited (bodies stream to disk instead of being
//!   buffered in RAM), and sizes take binary suffixes (`64M`).
//! * An empty environment variable (`RUSTUS_MAX_FILE_SIZE=`) counts as unset.
//! * A malformed `.env` line is an error; dotenvy stops loading there and rustus ignores
//!   the error. As with dotenvy, the first definition of a key in `.env` wins, and
//!   `$VAR` substitution is not supported.
//! * `-V/--version` exists.

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::hooks::amqp::{self, AmqpConfig};
use crate::hooks::{EventSet, Format as HookFormat};
use crate::limits::{MAX_TIMEOUT_SECS, MAX_WORKERS};

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

/// What `main` should do after parsing the command line.
// Built once at startup and matched at once; boxing the `Config` buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    /// Start the server with this configuration.
    Run(Config),
    /// Print this help text to stdout and exit 0.
    Help(String),
    /// Print this version line to stdout and exit 0.
    Version(String),
}

/// A usage error: a bad flag, value, environment variable or `.env` line. `main` prints
/// it and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag concerned, in its canonical long form (`--workers` even when `-w` was
    /// typed); the flag as typed for an unknown or unsupported flag; `.env` for a syntax
    /// error in the `.env` file.
    pub flag: String,
    /// The whole one-line message, naming the flag (or variable) and the value; this is
    /// what `Display` prints.
    pub message: String,
}

impl ConfigError {
    fn new(flag: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            flag: flag.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The log filter (`--log-level`), ordered from quietest to noisiest.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    const ALL: [LogLevel; 6] = [
        LogLevel::Off,
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The level's name as rustus spells it (`INFO`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "OFF",
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }

    fn parse(text: &str) -> Result<LogLevel, String> {
        LogLevel::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| "expected one of OFF, ERROR, WARN, INFO, DEBUG, TRACE".to_owned())
    }
}

/// The enabled tus extensions (`--tus-extensions`).
///
/// Invariant (established by [`Extensions::parse`]): `creation` is set whenever
/// `creation_with_upload` or `creation_defer_length` is, `concatenation` whenever
/// `concatenation_unfinished` is, and `checksum` whenever `checksum_trailer` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    pub getting: bool,
    pub creation: bool,
    pub creation_with_upload: bool,
    pub creation_defer_length: bool,
    pub termination: bool,
    pub concatenation: bool,
    pub concatenation_unfinished: bool,
    pub checksum: bool,
    pub checksum_trailer: bool,
    pub expiration: bool,
}

impl Extensions {
    /// Every extension name `--tus-extensions` accepts, in the order the help lists them.
    pub const ALLOWED: [&'static str; 10] = [
        "getting",
        "creation",
        "termination",
        "creation-with-upload",
        "creation-defer-length",
        "concatenation",
        "concatenation-unfinished",
        "checksum",
        "checksum-trailer",
        "expiration",
    ];

    /// The order of the `Tus-Extension` header: rustus's order (`rustus-compat.md`
    /// §2.1), with tusring's additions next to the extension each builds on.
    const HEADER_ORDER: [&'static str; 10] = [
        "creation-defer-length",
        "creation-with-upload",
        "creation",
        "termination",
        "concatenation",
        "concatenation-unfinished",
        "getting",
        "checksum",
        "checksum-trailer",
        "expiration",
    ];

    /// Parses a comma separated list of extension names (items trimmed, empty items
    /// ignored, order and repeats irrelevant) and adds the implied extensions. The error
    /// is the reason only, without the flag.
    pub fn parse(list: &str) -> Result<Extensions, String> {
        let mut ext = Extensions::default();
        for name in split_list(list) {
            match ext.slot(name) {
                Some(enabled) => *enabled = true,
                None => {
                    return Err(format!(
                        "unknown extension '{}'; allowed values: {}",
                        shown(name),
                        Extensions::ALLOWED.join(", ")
                    ))
                }
            }
        }
        // As rustus: either creation variant needs plain creation.
        ext.creation |= ext.creation_with_upload || ext.creation_defer_length;
        ext.concatenation |= ext.concatenation_unfinished;
        ext.checksum |= ext.checksum_trailer;
        Ok(ext)
    }

    /// The enabled extensions' names in `Tus-Extension` order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut copy = *self;
        Extensions::HEADER_ORDER
            .into_iter()
            .filter(|name| copy.slot(name).is_some_and(|enabled| *enabled))
            .collect()
    }

    /// The field for an extension name; the one place names map to fields.
    fn slot(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "getting" => &mut self.getting,
            "creation" => &mut self.creation,
            "creation-with-upload" => &mut self.creation_with_upload,
            "creation-defer-length" => &mut self.creation_defer_length,
            "termination" => &mut self.termination,
            "concatenation" => &mut self.concatenation,
            "concatenation-unfinished" => &mut self.concatenation_unfinished,
            "checksum" => &mut self.checksum,
            "checksum-trailer" => &mut self.checksum_trailer,
            "expiration" => &mut self.expiration,
            _ => return None,
        })
    }
}

/// The validated configuration. Each field's flag, variable and default are in
/// `FLAGS` (and in `--help`).
#[derive(Debug, Clone)]
pub struct Config {
    /// `--host`: the address to bind, as given (IP literal or host name).
    pub host: String,
    /// `--port`: the port to bind; 0 asks the kernel for a free one.
    pub port: u16,
    /// `host:port` resolved: the IP literal, or the first address the name resolves to.
    pub listen: SocketAddr,
    /// `--url`: the base path of the tus routes. Normalised: starts with `/`, never ends
    /// with `/`; the empty string means the root (`--url /`).
    pub url: String,
    /// `--log-level`.
    pub log_level: LogLevel,
    /// `-w/--workers`: worker threads, each with its own io_uring runtime and
    /// `SO_REUSEPORT` listener. Invariant: `1 <= workers <= MAX_WORKERS`.
    pub workers: usize,
    /// `-m/--max-body-size`: the largest request body in bytes; `None` = unlimited
    /// (bodies stream to disk). Never `Some(0)`.
    pub max_body_size: Option<u64>,
    /// `--max-file-size`: the largest `Upload-Length` in bytes; `None` = unlimited.
    /// Never `Some(0)`.
    pub max_file_size: Option<u64>,
    /// `--tus-extensions`, with the implied extensions added.
    pub extensions: Extensions,
    /// `--allow-empty`: accept `Upload-Length: 0`.
    pub allow_empty: bool,
    /// `--remove-parts`: delete the partial uploads after a final concatenation.
    pub remove_parts: bool,
    /// `--expiration-time`: how long an unfinished upload lives after its last write
    /// when the `expiration` extension is on. Invariant: in
    /// `[1 s, MAX_EXPIRATION_SECS]`, whole seconds.
    pub expiration_time: Duration,
    /// `--expiration-sweep-interval`: how often expired uploads are removed. In
    /// `(0, MAX_TIMEOUT_SECS]`.
    pub expiration_sweep_interval: Duration,
    /// `--cors`: allowed origins (may hold `*` wildcards); empty = every origin.
    pub cors: Vec<String>,
    /// `--behind-proxy`: take the client address from `Forwarded`/`X-Forwarded-For`.
    pub behind_proxy: bool,
    /// `--disable-health-access-log`: leave `/health` out of the access log.
    pub disable_health_access_log: bool,
    /// `--hooks`: the events sent to the hooks (all six by default).
    pub hooks: EventSet,
    /// `--hooks-format`: the hook message format.
    pub hooks_format: HookFormat,
    /// `--hooks-file`: one executable run for every event (`<path> <event> <json>`).
    pub hooks_file: Option<PathBuf>,
    /// `--hooks-dir`: a directory of executables named after the events.
    pub hooks_dir: Option<PathBuf>,
    /// `--hooks-http-urls`: URLs (`http://` or `https://`) that get a POST per event.
    pub hooks_http_urls: Vec<String>,
    /// `--hooks-http-proxy-headers`: client header names copied onto hook requests.
    pub hooks_http_proxy_headers: Vec<String>,
    /// `--http-hook-timeout`: bound of one HTTP hook request, redirects included.
    pub http_hook_timeout: Duration,
    /// `--hook-timeout`: how long an executable hook may run before it is killed.
    pub hook_timeout: Duration,
    /// `--hooks-workers`: hook worker threads. Invariant: `1..=MAX_HOOK_WORKERS`.
    pub hooks_workers: usize,
    /// `--hooks-queue`: bound of each hook queue (pre-hooks, post-events).
    pub hooks_queue: usize,
    /// `--hooks-http-retries`: retries of a failed HTTP post-hook.
    pub hooks_http_retries: u32,
    /// `--hooks-http-retry-backoff`: pause before the first retry; doubles each time.
    pub hooks_http_retry_backoff: Duration,
    /// `--hooks-amqp-*`: the AMQP notifier (on when `url` is set).
    pub hooks_amqp: AmqpConfig,
    /// `-s/--storage`: always `file-storage` (the only one tusring supports).
    pub storage: String,
    /// `--data-dir`: root directory of the upload data. Never empty.
    pub data_dir: PathBuf,
    /// `--dir-structure`: subdirectory template (`{year}` ... `{minute}`) under
    /// `data_dir`. Invariant: relative, no `..` component, no NUL.
    pub dir_structure: String,
    /// `--force-fsync`: `fdatasync` the data file after every chunk.
    pub force_fsync: bool,
    /// `-i/--info-storage`: always `file-info-storage`.
    pub info_storage: String,
    /// `--info-dir`: where `<id>.info` records go. Never empty.
    pub info_dir: PathBuf,
    /// `--shutdown-timeout`: grace period for in-flight requests after SIGTERM.
    /// This and the other timeouts are in `(0, MAX_TIMEOUT_SECS]`.
    pub shutdown_timeout: Duration,
    /// `--head-timeout`: time allowed to receive a complete request head.
    pub head_timeout: Duration,
    /// `--idle-timeout`: how long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// `--body-timeout`: how long a request body may stop arriving.
    pub body_timeout: Duration,
    /// `--disable-splice`: bodies always take the buffered path.
    pub disable_splice: bool,
    /// `--body-buffer-size`: bytes of each body buffer of the buffered path.
    pub body_buffer_size: usize,
    /// `--pipe-size`: capacity asked for each connection's splice pipe.
    pub pipe_size: usize,
    /// `--uring-entries`: submission queue entries per core.
    pub uring_entries: u32,
    /// `--max-connections`: open connections (all cores) before new ones get 503.
    /// Invariant: `>= 1`.
    pub max_connections: usize,
    /// `--backlog`: the `listen(2)` backlog of each listener. Invariant: `>= 1`.
    pub backlog: i32,
    /// `--pin-cores`: pin core thread i to the i-th CPU of the affinity mask.
    pub pin_cores: bool,
    /// `--log-format`: human lines or JSON lines.
    pub log_format: LogFormat,
    /// `--disable-access-log`: no access log lines.
    pub disable_access_log: bool,
}

/// The log line format (`--log-format`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-01-01 00:00:00.000 INFO msg`.
    Human,
    /// `{"ts":"…","level":"INFO","msg":"…"}`.
    Json,
}

impl LogFormat {
    fn parse(text: &str) -> Result<LogFormat, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected human or json".to_owned()),
        }
    }
}

/// Parses the command line `args` (without `argv[0]`), the environment (`env` looks a
/// variable up) and the contents of a `.env` file, if there is one. Pure apart from
/// resolving `--host` when it is a name rather than an IP address.
///
/// Precedence per setting: command-line flag > environment variable > `.env` > default.
pub fn load(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    dotenv: Option<&str>,
) -> Result<Action, ConfigError> {
    let mut raw = match parse_args(args)? {
        Parsed::Help => return Ok(Action::Help(help_text())),
        Parsed::Version => return Ok(Action::Version(version_text())),
        Parsed::Args(raw) => raw,
    };
    let dotenv = match dotenv {
        Some(text) => parse_dotenv(text)?,
        None => Vec::new(),
    };
    raw.fill(env, &dotenv);
    Config::from_raw(&raw).map(Action::Run)
}

/// [`load`] with the process's arguments and environment and `./.env` if it exists.
pub fn load_from_process() -> Result<Action, ConfigError> {
    let dotenv = match std::fs::read_to_string(".env") {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(ConfigError::new(".env", format!("cannot read .env: {err}"))),
    };
    load(
        std::env::args_os().skip(1).collect(),
        &|name| std::env::var(name).ok(),
        dotenv.as_deref(),
    )
}

/// The default for `--workers`: the CPUs in this process's affinity mask (so `taskset`
/// and cpusets are respected), falling back to `available_parallelism`; between 1 and
/// `MAX_WORKERS`.
pub fn default_workers() -> usize {
    affinity_cpus()
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .clamp(1, MAX_WORKERS)
}

/// Counts the CPUs in the calling thread's affinity mask, or `None` if the kernel says no.
fn affinity_cpus() -> Option<usize> {
    // Room for 65536 CPUs: the kernel rejects a mask smaller than its own, and glibc's
    // fixed `cpu_set_t` stops at 1024.
    let mut mask = vec![0u64; 1024];
    let bytes = mask.len() * std::mem::size_of::<u64>();
    // SAFETY: `mask` is a live, writable buffer of exactly `bytes` bytes, aligned for
    // u64 (which is `cpu_set_t`'s alignment: it is an array of unsigned longs), and the
    // kernel writes at most `bytes` bytes into it. pid 0 means the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, bytes, mask.as_mut_ptr().cast::<libc::cpu_set_t>()) };
    if rc != 0 {
        return None;
    }
    let count: u32 = mask.iter().map(|word| word.count_ones()).sum();
    usize::try_from(count).ok().filter(|&n| n > 0)
}

// ---------------------------------------------------------------------------------------
// The tables
// ---------------------------------------------------------------------------------------

/// Which setting a row of `FLAGS` fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Hooks,
    HooksFormat,
    HooksFile,
    HooksDir,
    HooksHttpUrls,
    HooksHttpProxyHeaders,
    HttpHookTimeout,
    HookTimeout,
    HooksWorkers,
    HooksQueue,
    HooksHttpRetries,
    HooksHttpRetryBackoff,
    HooksAmqpUrl,
    HooksAmqpQueuesPrefix,
    HooksAmqpExchange,
    HooksAmqpExchangeKind,
    HooksAmqpRouting,
    HooksAmqpDeclareExchange,
    HooksAmqpDeclareQueues,
    HooksAmqpDurableExchange,
    HooksAmqpDurableQueues,
    HooksAmqpAutoDelete,
    HooksAmqpCelery,
    HooksAmqpQueueSize,
    HooksAmqpConnectionPoolSize,
    HooksAmqpChannelPoolSize,
    HooksAmqpIdleConnectionTimeout,
    HooksAmqpIdleChannelsTimeout,
    Host,
    Port,
    Workers,
    LogLevel,
    DisableHealthAccessLog,
    BehindProxy,
    Cors,
    Url,
    TusExtensions,
    MaxBodySize,
    MaxFileSize,
    AllowEmpty,
    RemoveParts,
    ExpirationTime,
    ExpirationSweepInterval,
    Storage,
    DataDir,
    DirStructure,
    ForceFsync,
    InfoStorage,
    InfoDir,
    ShutdownTimeout,
    HeadTimeout,
    IdleTimeout,
    BodyTimeout,
    DisableSplice,
    BodyBufferSize,
    PipeSize,
    UringEntries,
    MaxConnections,
    Backlog,
    PinCores,
    LogFormat,
    DisableAccessLog,
}

/// What a setting is when neither flag nor variable gives it.
#[derive(Clone, Copy, Debug)]
enum Fallback {
    /// This text, parsed like any value, and shown as is in `--help`.
    Value(&'static str),
    /// No value; `Config::from_raw` decides. The text describes the outcome for `--help`.
    Unset(&'static str),
}

/// One supported flag: the single source for parsing, environment lookup, defaults and
/// help.
#[derive(Debug)]
struct Flag {
    key: Key,
    /// Heading the flag is listed under in `--help`.
    section: &'static str,
    /// Long name without the dashes.
    long: &'static str,
    /// A second long name rustus accepts (see `--hooks_amqp_durable_exchange`).
    alias: Option<&'static str>,
    short: Option<char>,
    env: &'static str,
    /// Value placeholder for `--help`; `None` for a switch, which takes no value but
    /// accepts `--flag=BOOL`.
    value: Option<&'static str>,
    fallback: Fallback,
    help: &'static str,
}

const SERVER: &str = "Server";
const PROTOCOL: &str = "Protocol";
const STORAGE: &str = "Storage";
const TIMEOUTS: &str = "Timeouts (seconds; decimals allowed)";
const HOOK_FLAGS: &str = "Hooks";

/// rustus's default `--hooks`: every event.
const DEFAULT_HOOKS: &str =
    "pre-create,post-create,post-receive,pre-terminate,post-terminate,post-finish";

/// Most hook worker threads (`--hooks-workers`).
pub const MAX_HOOK_WORKERS: usize = 1024;

/// Largest `--hooks-queue`.
pub const MAX_HOOK_QUEUE: usize = 1 << 20;
const DATA_PATH: &str = "Data path";

/// rustus's default extension list.
const DEFAULT_EXTENSIONS: &str =
    "getting,creation,termination,creation-with-upload,creation-defer-length,concatenation,checksum";

/// Every supported flag, in `--help` order. Each `Key` has exactly one row.
const FLAGS: &[Flag] = &[
    Flag {
        key: Key::Host,
        section: SERVER,
        long: "host",
        alias: None,
        short: None,
        env: "RUSTUS_SERVER_HOST",
        value: Some("HOST"),
        fallback: Fallback::Value("0.0.0.0"),
        help: "Address to listen on: an IP address or a host name",
    },
    Flag {
        key: Key::Port,
        section: SERVER,
        long: "port",
        alias: None,
        short: None,
        env: "RUSTUS_SERVER_PORT",
        value: Some("PORT"),
        fallback: Fallback::Value("1081"),
        help: "Port to listen on; 0 picks a free port",
    },
    Flag {
        key: Key::Workers,
        section: SERVER,
        long: "workers",
        alias: None,
        short: Some('w'),
        env: "RUSTUS_WORKERS",
        value: Some("N"),
        fallback: Fallback::Unset("CPUs available"),
        help: "Worker threads, one io_uring runtime and listener each (1-1024)",
    },
    Flag {
        key: Key::LogLevel,
        section: SERVER,
        long: "log-level",
        alias: None,
        short: None,
        env: "RUSTUS_LOG_LEVEL",
        value: Some("LEVEL"),
        fallback: Fallback::Value("INFO"),
        help: "OFF, ERROR, WARN, INFO, DEBUG or TRACE (any case)",
    },
    Flag {
        key: Key::DisableHealthAccessLog,
        section: SERVER,
        long: "disable-health-access-log",
        alias: None,
        short: None,
        env: "RUSTUS_DISABLE_HEALTH_ACCESS_LOG",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Leave /health requests out of the access log",
    },
    Flag {
        key: Key::DisableAccessLog,
        section: SERVER,
        long: "disable-access-log",
        alias: None,
        short: None,
        env: "RUSTUS_DISABLE_ACCESS_LOG",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Write no access log lines at all",
    },
    Flag {
        key: Key::LogFormat,
        section: SERVER,
        long: "log-format",
        alias: None,
        short: None,
        env: "RUSTUS_LOG_FORMAT",
        value: Some("FORMAT"),
        fallback: Fallback::Value("human"),
        help: "Log line format: human or json",
    },
    Flag {
        key: Key::MaxConnections,
        section: SERVER,
        long: "max-connections",
        alias: None,
        short: None,
        env: "RUSTUS_MAX_CONNECTIONS",
        value: Some("N"),
        fallback: Fallback::Value("10000"),
        help: "Open connections (all cores); past it new ones get 503",
    },
    Flag {
        key: Key::Backlog,
        section: SERVER,
        long: "backlog",
        alias: None,
        short: None,
        env: "RUSTUS_BACKLOG",
        value: Some("N"),
        fallback: Fallback::Value("1024"),
        help: "listen(2) backlog of each listener (capped by somaxconn)",
    },
    Flag {
        key: Key::PinCores,
        section: SERVER,
        long: "pin-cores",
        alias: None,
        short: None,
        env: "RUSTUS_PIN_CORES",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Pin core thread i to the i-th CPU of the affinity mask",
    },
    Flag {
        key: Key::BehindProxy,
        section: SERVER,
        long: "behind-proxy",
        alias: None,
        short: None,
        env: "RUSTUS_BEHIND_PROXY",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Take the client address from Forwarded / X-Forwarded-For",
    },
    Flag {
        key: Key::Cors,
        section: SERVER,
        long: "cors",
        alias: None,
        short: None,
        env: "RUSTUS_CORS",
        value: Some("ORIGINS"),
        fallback: Fallback::Unset("every origin"),
        help: "Comma list of allowed CORS origins; * is a wildcard",
    },
    Flag {
        key: Key::Url,
        section: PROTOCOL,
        long: "url",
        alias: None,
        short: None,
        env: "RUSTUS_URL",
        value: Some("PATH"),
        fallback: Fallback::Value("/files"),
        help: "Base path of the tus endpoints; / for the root",
    },
    Flag {
        key: Key::TusExtensions,
        section: PROTOCOL,
        long: "tus-extensions",
        alias: None,
        short: None,
        env: "RUSTUS_TUS_EXTENSIONS",
        value: Some("LIST"),
        fallback: Fallback::Value(DEFAULT_EXTENSIONS),
        help: "Comma list of enabled tus extensions (names below)",
    },
    Flag {
        key: Key::MaxBodySize,
        section: PROTOCOL,
        long: "max-body-size",
        alias: None,
        short: Some('m'),
        env: "RUSTUS_MAX_BODY_SIZE",
        value: Some("SIZE"),
        fallback: Fallback::Unset("unlimited"),
        help: "Largest request body (one chunk); a larger one gets 413",
    },
    Flag {
        key: Key::MaxFileSize,
        section: PROTOCOL,
        long: "max-file-size",
        alias: None,
        short: None,
        env: "RUSTUS_MAX_FILE_SIZE",
        value: Some("SIZE"),
        fallback: Fallback::Unset("unlimited"),
        help: "Largest Upload-Length accepted when an upload is created",
    },
    Flag {
        key: Key::AllowEmpty,
        section: PROTOCOL,
        long: "allow-empty",
        alias: None,
        short: None,
        env: "RUSTUS_ALLOW_EMPTY",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Allow uploads with Upload-Length: 0",
    },
    Flag {
        key: Key::RemoveParts,
        section: PROTOCOL,
        long: "remove-parts",
        alias: None,
        short: None,
        env: "RUSTUS_REMOVE_PARTS",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Delete the partial uploads after a final concatenation",
    },
    Flag {
        key: Key::ExpirationTime,
        section: PROTOCOL,
        long: "expiration-time",
        alias: None,
        short: None,
        env: "RUSTUS_EXPIRATION_TIME",
        value: Some("SECS"),
        fallback: Fallback::Value("86400"),
        help: "Lifetime of an unfinished upload after its last write",
    },
    Flag {
        key: Key::ExpirationSweepInterval,
        section: PROTOCOL,
        long: "expiration-sweep-interval",
        alias: None,
        short: None,
        env: "RUSTUS_EXPIRATION_SWEEP_INTERVAL",
        value: Some("SECS"),
        fallback: Fallback::Value("60"),
        help: "How often expired uploads are removed (expiration)",
    },
    Flag {
        key: Key::Storage,
        section: STORAGE,
        long: "storage",
        alias: None,
        short: Some('s'),
        env: "RUSTUS_STORAGE",
        value: Some("NAME"),
        fallback: Fallback::Value("file-storage"),
        help: "Data storage; only file-storage is supported",
    },
    Flag {
        key: Key::DataDir,
        section: STORAGE,
        long: "data-dir",
        alias: None,
        short: None,
        env: "RUSTUS_DATA_DIR",
        value: Some("DIR"),
        fallback: Fallback::Value("./data"),
        help: "Directory for upload data",
    },
    Flag {
        key: Key::DirStructure,
        section: STORAGE,
        long: "dir-structure",
        alias: None,
        short: None,
        env: "RUSTUS_DIR_STRUCTURE",
        value: Some("TEMPLATE"),
        fallback: Fallback::Value(""),
        help: "Subdirectory template: {year} {month} {day} {hour} {minute}",
    },
    Flag {
        key: Key::ForceFsync,
        section: STORAGE,
        long: "force-fsync",
        alias: None,
        short: None,
        env: "RUSTUS_FORCE_FSYNC",
        value: None,
        fallback: Fallback::Value("false"),
        help: "fdatasync the data file after every chunk",
    },
    Flag {
        key: Key::InfoStorage,
        section: STORAGE,
        long: "info-storage",
        alias: None,
        short: Some('i'),
        env: "RUSTUS_INFO_STORAGE",
        value: Some("NAME"),
        fallback: Fallback::Value("file-info-storage"),
        help: "Info storage; only file-info-storage is supported",
    },
    Flag {
        key: Key::InfoDir,
        section: STORAGE,
        long: "info-dir",
        alias: None,
        short: None,
        env: "RUSTUS_INFO_DIR",
        value: Some("DIR"),
        fallback: Fallback::Value("./data"),
        help: "Directory for the <id>.info records",
    },
    Flag {
        key: Key::ShutdownTimeout,
        section: TIMEOUTS,
        long: "shutdown-timeout",
        alias: None,
        short: None,
        env: "RUSTUS_SHUTDOWN_TIMEOUT",
        value: Some("SECS"),
        fallback: Fallback::Value("10"),
        help: "Grace period for in-flight requests after SIGTERM",
    },
    Flag {
        key: Key::HeadTimeout,
        section: TIMEOUTS,
        long: "head-timeout",
        alias: None,
        short: None,
        env: "RUSTUS_HEAD_TIMEOUT",
        value: Some("SECS"),
        fallback: Fallback::Value("30"),
        help: "Time allowed to receive a complete request head",
    },
    Flag {
        key: Key::IdleTimeout,
        section: TIMEOUTS,
        long: "idle-timeout",
        alias: None,
        short: None,
        env: "RUSTUS_IDLE_TIMEOUT",
        value: Some("SECS"),
        fallback: Fallback::Value("60"),
        help: "How long an idle keep-alive connection is kept open",
    },
    Flag {
        key: Key::BodyTimeout,
        section: TIMEOUTS,
        long: "body-timeout",
        alias: None,
        short: None,
        env: "RUSTUS_BODY_TIMEOUT",
        value: Some("SECS"),
        fallback: Fallback::Value("30"),
        help: "How long a request body may stall before the request fails",
    },
    Flag {
        key: Key::DisableSplice,
        section: DATA_PATH,
        long: "disable-splice",
        alias: None,
        short: None,
        env: "RUSTUS_DISABLE_SPLICE",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Never splice bodies or downloads (zero-copy); buffered path only",
    },
    Flag {
        key: Key::BodyBufferSize,
        section: DATA_PATH,
        long: "body-buffer-size",
        alias: None,
        short: None,
        env: "RUSTUS_BODY_BUFFER_SIZE",
        value: Some("SIZE"),
        fallback: Fallback::Value("256K"),
        help: "Buffered path: each of an upload's two body buffers (4K-64M)",
    },
    Flag {
        key: Key::PipeSize,
        section: DATA_PATH,
        long: "pipe-size",
        alias: None,
        short: None,
        env: "RUSTUS_PIPE_SIZE",
        value: Some("SIZE"),
        fallback: Fallback::Value("1M"),
        help: "Splice path: capacity asked for each connection's pipe (4K-64M)",
    },
    Flag {
        key: Key::UringEntries,
        section: DATA_PATH,
        long: "uring-entries",
        alias: None,
        short: None,
        env: "RUSTUS_URING_ENTRIES",
        value: Some("N"),
        fallback: Fallback::Value("4096"),
        help: "io_uring submission entries per core (power of two, 64-32768)",
    },
    Flag {
        key: Key::Hooks,
        section: HOOK_FLAGS,
        long: "hooks",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS",
        value: Some("EVENTS"),
        fallback: Fallback::Value(DEFAULT_HOOKS),
        help: "Comma list of the events sent to the hooks",
    },
    Flag {
        key: Key::HooksFormat,
        section: HOOK_FLAGS,
        long: "hooks-format",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_FORMAT",
        value: Some("FORMAT"),
        fallback: Fallback::Value("default"),
        help: "Hook message format: default, v2 or tusd",
    },
    Flag {
        key: Key::HooksFile,
        section: HOOK_FLAGS,
        long: "hooks-file",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_FILE",
        value: Some("PATH"),
        fallback: Fallback::Unset("none"),
        help: "Executable run for every event, as <path> <event> <json>",
    },
    Flag {
        key: Key::HooksDir,
        section: HOOK_FLAGS,
        long: "hooks-dir",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_DIR",
        value: Some("DIR"),
        fallback: Fallback::Unset("none"),
        help: "Directory of executables named after the events",
    },
    Flag {
        key: Key::HooksHttpUrls,
        section: HOOK_FLAGS,
        long: "hooks-http-urls",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_HTTP_URLS",
        value: Some("URLS"),
        fallback: Fallback::Unset("none"),
        help: "Comma list of URLs that get a POST of every event",
    },
    Flag {
        key: Key::HooksHttpProxyHeaders,
        section: HOOK_FLAGS,
        long: "hooks-http-proxy-headers",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_HTTP_PROXY_HEADERS",
        value: Some("HEADERS"),
        fallback: Fallback::Unset("none"),
        help: "Client headers (comma list) copied onto HTTP hook requests",
    },
    Flag {
        key: Key::HttpHookTimeout,
        section: HOOK_FLAGS,
        long: "http-hook-timeout",
        alias: None,
        short: None,
        env: "RUSTUS_HTTP_HOOK_TIMEOUT",
        value: Some("SECS"),
        fallback: Fallback::Value("2"),
        help: "Time allowed for one HTTP hook request, redirects included",
    },
    Flag {
        key: Key::HookTimeout,
        section: HOOK_FLAGS,
        long: "hook-timeout",
        alias: None,
        short: None,
        env: "RUSTUS_HOOK_TIMEOUT",
        value: Some("SECS"),
        fallback: Fallback::Value("30"),
        help: "Time an executable hook may run before it is killed",
    },
    Flag {
        key: Key::HooksWorkers,
        section: HOOK_FLAGS,
        long: "hooks-workers",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_WORKERS",
        value: Some("N"),
        fallback: Fallback::Unset("2 per worker, 2-64"),
        help: "Hook worker threads (1-1024)",
    },
    Flag {
        key: Key::HooksQueue,
        section: HOOK_FLAGS,
        long: "hooks-queue",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_QUEUE",
        value: Some("N"),
        fallback: Fallback::Value("1024"),
        help: "Events that may wait for a hook worker (per queue: pre, post)",
    },
    Flag {
        key: Key::HooksHttpRetries,
        section: HOOK_FLAGS,
        long: "hooks-http-retries",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_HTTP_RETRIES",
        value: Some("N"),
        fallback: Fallback::Value("3"),
        help: "Retries of a failed HTTP post-hook (0-100)",
    },
    Flag {
        key: Key::HooksHttpRetryBackoff,
        section: HOOK_FLAGS,
        long: "hooks-http-retry-backoff",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_HTTP_RETRY_BACKOFF",
        value: Some("SECS"),
        fallback: Fallback::Value("0.5"),
        help: "Pause before the first HTTP post-hook retry; doubles each retry",
    },
    Flag {
        key: Key::HooksAmqpUrl,
        section: AMQP,
        long: "hooks-amqp-url",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_URL",
        value: Some("URL"),
        fallback: Fallback::Unset("off"),
        help: "amqp:// URL of the broker; turns the AMQP notifier on",
    },
    Flag {
        key: Key::HooksAmqpQueuesPrefix,
        section: AMQP,
        long: "hooks-amqp-queues-prefix",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_QUEUES_PREFIX",
        value: Some("PREFIX"),
        fallback: Fallback::Value("rustus"),
        help: "Routing keys and queues are PREFIX.EVENT",
    },
    Flag {
        key: Key::HooksAmqpExchange,
        section: AMQP,
        long: "hooks-amqp-exchange",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_EXCHANGE",
        value: Some("NAME"),
        fallback: Fallback::Value("rustus"),
        help: "Exchange the events are published to",
    },
    Flag {
        key: Key::HooksAmqpExchangeKind,
        section: AMQP,
        long: "hooks-amqp-exchange-kind",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_EXCHANGE_KIND",
        value: Some("KIND"),
        fallback: Fallback::Value("topic"),
        help: "Exchange kind: direct, fanout, topic, headers, x-...",
    },
    Flag {
        key: Key::HooksAmqpRouting,
        section: AMQP,
        long: "hooks-amqp-routing-key",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_ROUTING_KEY",
        value: Some("KEY"),
        fallback: Fallback::Unset("PREFIX.EVENT"),
        help: "One routing key (and one queue) for every event",
    },
    Flag {
        key: Key::HooksAmqpDeclareExchange,
        section: AMQP,
        long: "hooks-amqp-declare-exchange",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_DECLARE_EXCHANGE",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Declare the exchange on every connect",
    },
    Flag {
        key: Key::HooksAmqpDeclareQueues,
        section: AMQP,
        long: "hooks-amqp-declare-queues",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_DECLARE_QUEUES",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Declare and bind the event queues on every connect",
    },
    Flag {
        key: Key::HooksAmqpDurableExchange,
        section: AMQP,
        long: "hooks-amqp-durable-exchange",
        alias: Some("hooks_amqp_durable_exchange"),
        short: None,
        env: "RUSTUS_HOOKS_AMQP_DURABLE_EXCHANGE",
        value: None,
        fallback: Fallback::Value("false"),
        help: "A declared exchange is durable",
    },
    Flag {
        key: Key::HooksAmqpDurableQueues,
        section: AMQP,
        long: "hooks-amqp-durable-queues",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_DURABLE_QUEUES",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Declared queues are durable and messages persistent",
    },
    Flag {
        key: Key::HooksAmqpAutoDelete,
        section: AMQP,
        long: "hooks-amqp-auto-delete",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_AUTO_DELETE",
        value: None,
        fallback: Fallback::Value("false"),
        help: "A declared exchange and queues are auto-delete",
    },
    Flag {
        key: Key::HooksAmqpCelery,
        section: AMQP,
        long: "hooks-amqp-celery",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_CELERY",
        value: None,
        fallback: Fallback::Value("false"),
        help: "Publish Celery tasks rustus.EVENT (protocol v2)",
    },
    Flag {
        key: Key::HooksAmqpQueueSize,
        section: AMQP,
        long: "hooks-amqp-queue-size",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_QUEUE_SIZE",
        value: Some("N"),
        fallback: Fallback::Value("100000"),
        help: "Events held while the broker is away; the oldest go first",
    },
    Flag {
        key: Key::HooksAmqpConnectionPoolSize,
        section: AMQP,
        long: "hooks-amqp-connection-pool-size",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_CONNECTION_POOL_SIZE",
        value: Some("N"),
        fallback: Fallback::Value("10"),
        help: "Accepted for rustus; tusring uses one connection",
    },
    Flag {
        key: Key::HooksAmqpChannelPoolSize,
        section: AMQP,
        long: "hooks-amqp-channel-pool-size",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_CHANNEL_POOL_SIZE",
        value: Some("N"),
        fallback: Fallback::Value("10"),
        help: "Accepted for rustus; tusring uses one channel",
    },
    Flag {
        key: Key::HooksAmqpIdleConnectionTimeout,
        section: AMQP,
        long: "hooks-amqp-idle-connection-timeout",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_IDLE_CONNECTION_TIMEOUT",
        value: Some("SECS"),
        fallback: Fallback::Unset("never"),
        help: "Close the connection after this long without events",
    },
    Flag {
        key: Key::HooksAmqpIdleChannelsTimeout,
        section: AMQP,
        long: "hooks-amqp-idle-channels-timeout",
        alias: None,
        short: None,
        env: "RUSTUS_HOOKS_AMQP_IDLE_CHANNELS_TIMEOUT",
        value: Some("SECS"),
        fallback: Fallback::Unset("never"),
        help: "Close the channel (and connection) after this idle time",
    },
];

/// A rustus flag tusring recognises but does not implement. Using it is an error naming
/// it; its environment variable is ignored.
#[derive(Debug)]
struct Unsupported {
    long: &'static str,
    /// A second spelling rustus accepts.
    alias: Option<&'static str>,
    /// The feature the flag belongs to, as `--help` groups them.
    feature: &'static str,
}

const fn unsupported(long: &'static str, feature: &'static str) -> Unsupported {
    Unsupported {
        long,
        alias: None,
        feature,
    }
}

const S3: &str = "S3 storage";
const INFO: &str = "Redis info storage";
const SENTRY: &str = "Sentry";
const AMQP: &str = "AMQP hooks";
const KAFKA: &str = "Kafka hooks";
const NATS: &str = "NATS hooks";

/// rustus's flags that tusring does not implement (`rustus-compat.md` §1.2-§1.5).
const UNSUPPORTED: &[Unsupported] = &[
    unsupported("s3-url", S3),
    unsupported("s3-bucket", S3),
    unsupported("s3-region", S3),
    unsupported("s3-access-key", S3),
    unsupported("s3-access-key-path", S3),
    unsupported("s3-secret-key", S3),
    unsupported("s3-secret-key-path", S3),
    unsupported("s3-security-token", S3),
    unsupported("s3-session-token", S3),
    unsupported("s3-profile", S3),
    unsupported("s3-headers", S3),
    unsupported("s3-force-path-style", S3),
    unsupported("s3-concat-concurrent-downloads", S3),
    unsupported("info-db-dsn", INFO),
    unsupported("redis-info-expiration", INFO),
    unsupported("sentry-dsn", SENTRY),
    unsupported("sentry-sample-rate", SENTRY),
    unsupported("hooks-kafka-urls", KAFKA),
    unsupported("hooks-kafka-client-id", KAFKA),
    unsupported("hooks-kafka-topic", KAFKA),
    unsupported("hooks-kafka-prefix", KAFKA),
    unsupported("hooks-kafka-required-acks", KAFKA),
    unsupported("hooks-kafka-compression", KAFKA),
    unsupported("hooks-kafka-idle-timeout", KAFKA),
    unsupported("hooks-kafka-send-timeout", KAFKA),
    unsupported("hooks-kafka-extra-options", KAFKA),
    unsupported("hooks-nats-urls", NATS),
    unsupported("hooks-nats-subject", NATS),
    unsupported("hooks-nats-prefix", NATS),
    unsupported("hooks-nats-wait-for-replies", NATS),
    unsupported("hooks-nats-user", NATS),
    unsupported("hooks-nats-password", NATS),
    unsupported("hooks-nats-token", NATS),
];

impl Unsupported {
    fn error(&self, spelled: &str) -> ConfigError {
        let message = format!("'{spelled}' is not supported by tusring ({})", self.feature);
        ConfigError::new(spelled, message)
    }
}

// ---------------------------------------------------------------------------------------
// Stage 1: raw values
// ---------------------------------------------------------------------------------------

/// Where a raw value came from; error messages name it.
#[derive(Debug, Clone)]
enum Origin {
    /// The command line, with the flag as typed (`-w`, `--workers`).
    Flag(String),
    /// A real environment variable.
    Env(&'static str),
    /// A line of the `.env` file.
    DotEnv(&'static str),
    /// The table's default.
    Default,
}

#[derive(Debug, Clone)]
struct Raw {
    value: OsString,
    origin: Origin,
}

/// One slot per row of `FLAGS`, same order.
#[derive(Debug)]
struct RawArgs {
    values: Vec<Option<Raw>>,
}

enum Parsed {
    Help,
    Version,
    Args(RawArgs),
}

/// The lexopt loop: fills slots from the command line; the last repeat of a flag wins.
fn parse_args(args: Vec<OsString>) -> Result<Parsed, ConfigError> {
    use lexopt::Arg;

    let mut raw = RawArgs {
        values: vec![None; FLAGS.len()],
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(lexopt_error)? {
        let spelled = match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Parsed::Help),
            Arg::Short('V') | Arg::Long("version") => return Ok(Parsed::Version),
            Arg::Short(c) => format!("-{c}"),
            Arg::Long(name) => format!("--{name}"),
            Arg::Value(value) => {
                let value = value.to_string_lossy().into_owned();
                let message = format!(
                    "unexpected argument '{}': tusring takes only flags",
                    shown(&value)
                );
                return Err(ConfigError::new(value, message));
            }
        };
        let Some(index) = find_flag(&spelled) else {
            return Err(match find_unsupported(&spelled) {
                Some(row) => row.error(&spelled),
                None => {
                    let message = format!("unknown flag '{}'", shown(&spelled));
                    ConfigError::new(spelled, message)
                }
            });
        };
        let flag = &FLAGS[index];
        let value = match (flag.value, parser.optional_value()) {
            (_, Some(joined)) => joined,
            (None, None) => OsString::from("true"),
            (Some(placeholder), None) => {
                let missing = |hint: &str| {
                    ConfigError::new(
                        format!("--{}", flag.long),
                        format!("missing value for '{spelled}': expected <{placeholder}>{hint}"),
                    )
                };
                let value = parser.value().map_err(|_| missing(""))?;
                // As clap: a following flag is not taken as this flag's value.
                if value
                    .to_str()
                    .is_some_and(|s| s.len() > 1 && s.starts_with('-'))
                {
                    return Err(missing(&format!(
                        " (write {spelled}=VALUE for a value starting with '-')"
                    )));
                }
                value
            }
        };
        raw.values[index] = Some(Raw {
            value,
            origin: Origin::Flag(spelled),
        });
    }
    Ok(Parsed::Args(raw))
}

fn lexopt_error(err: lexopt::Error) -> ConfigError {
    let flag = match &err {
        lexopt::Error::MissingValue { option: Some(o) } => o.clone(),
        lexopt::Error::UnexpectedOption(o) => o.clone(),
        lexopt::Error::UnexpectedValue { option, .. } => option.clone(),
        _ => String::new(),
    };
    ConfigError::new(flag, err.to_string())
}

/// The row for `--long`, `--alias` or `-s`.
fn find_flag(spelled: &str) -> Option<usize> {
    if let Some(long) = spelled.strip_prefix("--") {
        FLAGS
            .iter()
            .position(|f| f.long == long || f.alias == Some(long))
    } else {
        let short = spelled.strip_prefix('-')?.chars().next()?;
        FLAGS.iter().position(|f| f.short == Some(short))
    }
}

fn find_unsupported(spelled: &str) -> Option<&'static Unsupported> {
    let long = spelled.strip_prefix("--")?;
    UNSUPPORTED
        .iter()
        .find(|u| u.long == long || u.alias == Some(long))
}

impl RawArgs {
    /// Fills the slots the command line left empty: environment variable, then `.env`
    /// (first definition wins, as with dotenvy), then the default. An empty value counts
    /// as unset.
    fn fill(&mut self, env: &dyn Fn(&str) -> Option<String>, dotenv: &[(String, String)]) {
        for (slot, flag) in self.values.iter_mut().zip(FLAGS) {
            if slot.is_some() {
                continue;
            }
            let from_env = env(flag.env).filter(|v| !v.is_empty());
            let from_file = || {
                dotenv
                    .iter()
                    .find(|(key, _)| key == flag.env)
                    .map(|(_, value)| value.clone())
                    .filter(|v| !v.is_empty())
            };
            *slot = if let Some(value) = from_env {
                Some(Raw {
                    value: value.into(),
                    origin: Origin::Env(flag.env),
                })
            } else if let Some(value) = from_file() {
                Some(Raw {
                    value: value.into(),
                    origin: Origin::DotEnv(flag.env),
                })
            } else if let Fallback::Value(value) = flag.fallback {
                Some(Raw {
                    value: value.into(),
                    origin: Origin::Default,
                })
            } else {
                None
            };
        }
    }

    fn get(&self, key: Key) -> Option<(&'static Flag, &Raw)> {
        let index = FLAGS.iter().position(|f| f.key == key)?;
        let raw = self.values.get(index)?.as_ref()?;
        Some((&FLAGS[index], raw))
    }

    /// The setting parsed with `parse`, or `None` if it has no value at all (an
    /// `Fallback::Unset` default).
    fn opt<T>(
        &self,
        key: Key,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((flag, raw)) = self.get(key) else {
            return Ok(None);
        };
        let text = raw
            .value
            .to_str()
            .ok_or_else(|| invalid(flag, raw, "not valid UTF-8"))?;
        parse(text)
            .map(Some)
            .map_err(|why| invalid(flag, raw, &why))
    }

    /// The setting parsed with `parse`; for keys whose default is a `Fallback::Value`.
    fn one<T>(
        &self,
        key: Key,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.opt(key, parse)?
            .ok_or_else(|| ConfigError::new(format!("{key:?}"), format!("no value for {key:?}")))
    }

    fn switch(&self, key: Key) -> Result<bool, ConfigError> {
        self.one(key, parse_bool)
    }

    /// An optional path setting (`Fallback::Unset`): `None` when not given.
    fn path(&self, key: Key) -> Result<Option<PathBuf>, ConfigError> {
        match self.get(key) {
            Some((flag, raw)) if raw.value.is_empty() => {
                Err(invalid(flag, raw, "must not be empty"))
            }
            Some((_, raw)) => Ok(Some(PathBuf::from(&raw.value))),
            None => Ok(None),
        }
    }

    /// A directory setting: kept as an `OsString`, so any path the OS allows works.
    fn dir(&self, key: Key) -> Result<PathBuf, ConfigError> {
        match self.get(key) {
            Some((flag, raw)) if raw.value.is_empty() => {
                Err(invalid(flag, raw, "must not be empty"))
            }
            Some((_, raw)) => Ok(PathBuf::from(&raw.value)),
            None => Err(ConfigError::new(
                format!("{key:?}"),
                format!("no value for {key:?}"),
            )),
        }
    }
}

/// "invalid value 'V' for SOURCE: WHY", naming the flag or variable the value came from.
fn invalid(flag: &Flag, raw: &Raw, why: &str) -> ConfigError {
    let value = shown(&raw.value.to_string_lossy());
    let source = match &raw.origin {
        Origin::Flag(spelled) => format!("'{spelled}'"),
        Origin::Env(name) => format!("{name} (--{})", flag.long),
        Origin::DotEnv(name) => format!("{name} in .env (--{})", flag.long),
        Origin::Default => format!("the default of '--{}'", flag.long),
    };
    ConfigError::new(
        format!("--{}", flag.long),
        format!("invalid value '{value}' for {source}: {why}"),
    )
}

/// A user-supplied string made safe for a one-line message: escaped and shortened.
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() <= MAX_CHARS {
        escaped
    } else {
        let cut: String = escaped.chars().take(MAX_CHARS).collect();
        format!("{cut}...")
    }
}

// ---------------------------------------------------------------------------------------
// Stage 2: typed values
// ---------------------------------------------------------------------------------------

impl Config {
    fn from_raw(raw: &RawArgs) -> Result<Config, ConfigError> {
        let host = raw.one(Key::Host, |s| {
            if s.trim().is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(s.trim().to_owned())
            }
        })?;
        let port = raw.one(Key::Port, parse_port)?;
        let listen = raw.one(Key::Host, |_| resolve(&host, port))?;
        let workers = match raw.opt(Key::Workers, parse_workers)? {
            Some(n) => n,
            None => default_workers(),
        };
        Ok(Config {
            listen,
            host,
            port,
            url: raw.one(Key::Url, normalize_url)?,
            log_level: raw.one(Key::LogLevel, LogLevel::parse)?,
            workers,
            max_body_size: raw.opt(Key::MaxBodySize, parse_size)?,
            max_file_size: raw.opt(Key::MaxFileSize, parse_size)?,
            extensions: raw.one(Key::TusExtensions, Extensions::parse)?,
            allow_empty: raw.switch(Key::AllowEmpty)?,
            remove_parts: raw.switch(Key::RemoveParts)?,
            expiration_time: raw.one(Key::ExpirationTime, parse_expiration)?,
            expiration_sweep_interval: raw.one(Key::ExpirationSweepInterval, parse_secs)?,
            cors: raw
                .opt(Key::Cors, |s| {
                    Ok(split_list(s).map(str::to_owned).collect())
                })?
                .unwrap_or_default(),
            behind_proxy: raw.switch(Key::BehindProxy)?,
            disable_health_access_log: raw.switch(Key::DisableHealthAccessLog)?,
            hooks: raw.one(Key::Hooks, EventSet::parse)?,
            hooks_format: raw.one(Key::HooksFormat, HookFormat::parse)?,
            hooks_file: raw.path(Key::HooksFile)?,
            hooks_dir: raw.path(Key::HooksDir)?,
            hooks_http_urls: raw
                .opt(Key::HooksHttpUrls, parse_hook_urls)?
                .unwrap_or_default(),
            hooks_http_proxy_headers: raw
                .opt(Key::HooksHttpProxyHeaders, parse_header_names)?
                .unwrap_or_default(),
            http_hook_timeout: raw.one(Key::HttpHookTimeout, parse_secs)?,
            hook_timeout: raw.one(Key::HookTimeout, parse_secs)?,
            hooks_workers: raw
                .opt(Key::HooksWorkers, |s| parse_count(s, 1, MAX_HOOK_WORKERS))?
                .unwrap_or_else(|| crate::hooks::default_workers(workers)),
            hooks_queue: raw.one(Key::HooksQueue, |s| parse_count(s, 1, MAX_HOOK_QUEUE))?,
            hooks_http_retries: raw.one(Key::HooksHttpRetries, |s| {
                parse_count(s, 0, 100).map(|n| n as u32)
            })?,
            hooks_http_retry_backoff: raw.one(Key::HooksHttpRetryBackoff, parse_secs)?,
            hooks_amqp: amqp_config(raw)?,
            storage: raw.one(Key::Storage, parse_storage)?,
            data_dir: raw.dir(Key::DataDir)?,
            dir_structure: raw.one(Key::DirStructure, check_dir_structure)?,
            force_fsync: raw.switch(Key::ForceFsync)?,
            info_storage: raw.one(Key::InfoStorage, parse_info_storage)?,
            info_dir: raw.dir(Key::InfoDir)?,
            shutdown_timeout: raw.one(Key::ShutdownTimeout, parse_secs)?,
            head_timeout: raw.one(Key::HeadTimeout, parse_secs)?,
            idle_timeout: raw.one(Key::IdleTimeout, parse_secs)?,
            body_timeout: raw.one(Key::BodyTimeout, parse_secs)?,
            disable_splice: raw.switch(Key::DisableSplice)?,
            body_buffer_size: raw.one(Key::BodyBufferSize, |s| {
                parse_size_within(s, 4 << 10, 64 << 20)
            })?,
            pipe_size: raw.one(Key::PipeSize, |s| parse_size_within(s, 4 << 10, 64 << 20))?,
            uring_entries: raw.one(Key::UringEntries, parse_uring_entries)?,
            max_connections: raw.one(Key::MaxConnections, |s| parse_count(s, 1, 10_000_000))?,
            backlog: raw.one(Key::Backlog, |s| {
                parse_count(s, 1, 1 << 20).map(|n| n as i32)
            })?,
            pin_cores: raw.switch(Key::PinCores)?,
            log_format: raw.one(Key::LogFormat, LogFormat::parse)?,
            disable_access_log: raw.switch(Key::DisableAccessLog)?,
        })
    }
}

/// The `--hooks-amqp-*` settings.
fn amqp_config(raw: &RawArgs) -> Result<AmqpConfig, ConfigError> {
    Ok(AmqpConfig {
        url: raw.opt(Key::HooksAmqpUrl, amqp::parse_url)?,
        exchange: raw.one(Key::HooksAmqpExchange, amqp::parse_name)?,
        exchange_kind: raw.one(Key::HooksAmqpExchangeKind, amqp::parse_exchange_kind)?,
        routing_key: raw.opt(Key::HooksAmqpRouting, amqp::parse_name)?,
        queues_prefix: raw.one(Key::HooksAmqpQueuesPrefix, amqp::parse_name)?,
        declare_exchange: raw.switch(Key::HooksAmqpDeclareExchange)?,
        declare_queues: raw.switch(Key::HooksAmqpDeclareQueues)?,
        durable_exchange: raw.switch(Key::HooksAmqpDurableExchange)?,
        durable_queues: raw.switch(Key::HooksAmqpDurableQueues)?,
        auto_delete: raw.switch(Key::HooksAmqpAutoDelete)?,
        celery: raw.switch(Key::HooksAmqpCelery)?,
        queue_size: raw.one(Key::HooksAmqpQueueSize, |s| {
            parse_count(s, 1, amqp::MAX_QUEUE_SIZE)
        })?,
        connection_pool_size: raw.one(Key::HooksAmqpConnectionPoolSize, |s| {
            parse_count(s, 1, 65_535)
        })?,
        channel_pool_size: raw.one(Key::HooksAmqpChannelPoolSize, |s| parse_count(s, 1, 65_535))?,
        idle_connection_timeout: raw.opt(Key::HooksAmqpIdleConnectionTimeout, parse_secs)?,
        idle_channels_timeout: raw.opt(Key::HooksAmqpIdleChannelsTimeout, parse_secs)?,
    })
}

/// A size between `min` and `max` bytes.
fn parse_size_within(text: &str, min: u64, max: u64) -> Result<usize, String> {
    let n = parse_size(text)?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max} bytes"));
    }
    Ok(n as usize)
}

/// Ring entries: a power of two the kernel accepts without clamping.
fn parse_uring_entries(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|_| "not a whole number".to_owned())?;
    if !(64..=32768).contains(&n) || !n.is_power_of_two() {
        return Err("must be a power of two from 64 to 32768".to_owned());
    }
    Ok(n)
}

/// Comma list items, trimmed, empty ones dropped.
fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// A whole number between `min` and `max`.
fn parse_count(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number ({min}-{max})"));
    }
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be between {min} and {max}")),
    }
}

/// `--hooks-http-urls`: a comma list of `http://` or `https://` URLs with a host.
fn parse_hook_urls(list: &str) -> Result<Vec<String>, String> {
    split_list(list)
        .map(|url| {
            let lower = url.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"));
            let host_ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
            if !host_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(format!(
                    "'{}' is not an http:// or https:// URL",
                    shown(url)
                ))
            } else {
                Ok(url.to_owned())
            }
        })
        .collect()
}

/// `--hooks-http-proxy-headers`: a comma list of header names (RFC 9110 tokens).
fn parse_header_names(list: &str) -> Result<Vec<String>, String> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    split_list(list)
        .map(|name| {
            if name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b))
            {
                Ok(name.to_owned())
            } else {
                Err(format!("'{}' is not a header name", shown(name)))
            }
        })
        .collect()
}

fn parse_bool(text: &str) -> Result<bool, String> {
    const TRUE: [&str; 4] = ["true", "1", "yes", "on"];
    const FALSE: [&str; 4] = ["false", "0", "no", "off"];
    let text = text.trim();
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(text)) {
        Ok(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(text)) {
        Ok(false)
    } else {
        Err("expected true or false (also 1/0, yes/no, on/off)".to_owned())
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a port number (0-65535)".to_owned());
    }
    text.parse()
        .map_err(|_| "not a port number (0-65535)".to_owned())
}

fn parse_workers(text: &str) -> Result<usize, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a number of threads (1-{MAX_WORKERS})"));
    }
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) if n <= MAX_WORKERS => Ok(n),
        _ => Err(format!("must be at most {MAX_WORKERS}")),
    }
}

/// Bytes: a plain integer, or with a binary suffix K, M, G or T (any case): `64M` is
/// 64 MiB. Zero is refused: leave the setting unset for "no limit".
fn parse_size(text: &str) -> Result<u64, String> {
    const SHAPE: &str = "expected a number of bytes, optionally with a K, M, G or T suffix (64M)";
    let text = text.trim();
    let (digits, shift) = match text.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        Some(b'T') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SHAPE.to_owned());
    }
    let too_large = || format!("too large (at most {} bytes)", u64::MAX);
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    let bytes = number.checked_mul(1u64 << shift).ok_or_else(too_large)?;
    if bytes == 0 {
        return Err("must be greater than 0 (leave it unset for no limit)".to_owned());
    }
    Ok(bytes)
}

/// Longest `--expiration-time`: ten years.
pub const MAX_EXPIRATION_SECS: u64 = 10 * 365 * 24 * 3600;

/// `--expiration-time`: whole seconds in `[1, MAX_EXPIRATION_SECS]`.
fn parse_expiration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected whole seconds, e.g. 86400".to_owned());
    }
    match text.parse::<u64>() {
        Ok(0) => Err("must be greater than 0".to_owned()),
        Ok(n) if n <= MAX_EXPIRATION_SECS => Ok(Duration::from_secs(n)),
        _ => Err(format!("must be at most {MAX_EXPIRATION_SECS} seconds")),
    }
}

/// Seconds: an integer or a decimal with up to 9 places (`0.5`), greater than 0 and at
/// most `MAX_TIMEOUT_SECS`. Parsed exactly, without going through floating point.
fn parse_secs(text: &str) -> Result<Duration, String> {
    const SHAPE: &str = "expected seconds, e.g. 30 or 0.5";
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !all_digits(whole)
        || !all_digits(fraction)
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(SHAPE.to_owned());
    }
    if fraction.len() > 9 {
        return Err("at most 9 decimal places".to_owned());
    }
    let too_long = || format!("must be at most {MAX_TIMEOUT_SECS} seconds");
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_long())?
    };
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        // Right-pad to 9 digits: "5" -> 500_000_000.
        format!("{fraction:0<9}")
            .parse()
            .map_err(|_| SHAPE.to_owned())?
    };
    let duration = Duration::new(secs, nanos);
    if duration.is_zero() {
        Err("must be greater than 0".to_owned())
    } else if duration > Duration::from_secs(MAX_TIMEOUT_SECS) {
        Err(too_long())
    } else {
        Ok(duration)
    }
}

/// `files/` -> `/files`, `/a/b/` -> `/a/b`, `/` or empty -> `` (the root). Characters
/// that could never match a request path are refused.
fn normalize_url(text: &str) -> Result<String, String> {
    if let Some(bad) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
    {
        return Err(format!(
            "a base path cannot contain '{}'",
            bad.escape_debug()
        ));
    }
    let trimmed = text.trim_matches('/');
    Ok(if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    })
}

fn parse_storage(text: &str) -> Result<String, String> {
    match text.trim() {
        "file-storage" => Ok("file-storage".to_owned()),
        other @ ("hybrid-s3" | "s3") => Err(format!(
            "storage '{other}' is not supported by tusring; only file-storage is"
        )),
        other => Err(format!(
            "unknown storage '{}'; allowed values: file-storage \
             (hybrid-s3 and s3 are not supported by tusring)",
            shown(other)
        )),
    }
}

fn parse_info_storage(text: &str) -> Result<String, String> {
    match text.trim() {
        "file-info-storage" => Ok("file-info-storage".to_owned()),
        "redis-info-storage" => Err(
            "info storage 'redis-info-storage' is not supported by tusring; \
             only file-info-storage is"
                .to_owned(),
        ),
        other => Err(format!(
            "Unknown info storage '{}'; allowed values: file-info-storage \
             (redis-info-storage is not supported by tusring)",
            shown(other)
        )),
    }
}

/// The template is joined under `--data-dir`, so it must not escape it.
fn check_dir_structure(text: &str) -> Result<String, String> {
    if text.contains('\0') {
        Err("must not contain a NUL byte".to_owned())
    } else if text.starts_with('/') {
        Err("must be a relative path (it is placed under --data-dir)".to_owned())
    } else if text.split('/').any(|part| part == "..") {
        Err("must not contain a '..' component".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// `host:port` as an address: an IP literal (IPv6 with or without brackets), else the
/// first address the name resolves to.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (bare, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve the host name: {err}"))?
        .next()
        .ok_or_else(|| "the host name resolves to no address".to_owned())
}

// ---------------------------------------------------------------------------------------
// .env
// ---------------------------------------------------------------------------------------

/// Parses a `.env` file (dotenvy's format) into `(key, value)` pairs in file order.
///
/// * `KEY=VALUE` lines; blank lines and `#` comment lines are skipped; an `export `
///   prefix is allowed; whitespace around the key and the value is trimmed.
/// * Unquoted values end at a `#` that starts the value or follows whitespace.
/// * `'single'` quoted values are literal; `"double"` quoted ones take the escapes
///   `\n \r \t \" \' \\ \$`. Either kind may span lines.
fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        let line = line.trim_start();
        if line.trim_end().is_empty() || line.starts_with('#') {
            continue;
        }
        let line = strip_export(line);
        let Some((key, rest)) = line.split_once('=') else {
            return Err(dotenv_error(number, "expected KEY=VALUE"));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(dotenv_error(
                number,
                &format!("invalid variable name '{}'", shown(key)),
            ));
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let mut body = rest[1..].to_owned();
                loop {
                    match scan_quoted(&body, quote) {
                        Scan::Closed(value, after) => {
                            let after = after.trim();
                            if !after.is_empty() && !after.starts_with('#') {
                                return Err(dotenv_error(
                                    number,
                                    "unexpected text after the closing quote",
                                ));
                            }
                            break value;
                        }
                        Scan::BadEscape(c) => {
                            return Err(dotenv_error(
                                number,
                                &format!("unknown escape '\\{}'", c.escape_debug()),
                            ))
                        }
                        Scan::Open => match lines.next() {
                            Some((_, next)) => {
                                body.push('\n');
                                body.push_str(next);
                            }
                            None => return Err(dotenv_error(number, "unterminated quoted value")),
                        },
                    }
                }
            }
            _ => unquoted(rest).to_owned(),
        };
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

fn dotenv_error(line: usize, why: &str) -> ConfigError {
    ConfigError::new(".env", format!(".env line {line}: {why}"))
}

fn strip_export(line: &str) -> &str {
    match line.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => line,
    }
}

/// An unquoted value: up to a comment, trimmed.
fn unquoted(rest: &str) -> &str {
    let bytes = rest.as_bytes();
    let end = (0..bytes.len())
        .find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()))
        .unwrap_or(bytes.len());
    rest[..end].trim()
}

enum Scan<'a> {
    /// The value and the text after the closing quote.
    Closed(String, &'a str),
    /// No closing quote yet.
    Open,
    BadEscape(char),
}

/// Reads a quoted value from just after the opening `quote`.
fn scan_quoted(body: &str, quote: char) -> Scan<'_> {
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        if c == quote {
            return Scan::Closed(value, &body[at + c.len_utf8()..]);
        }
        if c == '\\' && quote == '"' {
            match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 'r')) => value.push('\r'),
                Some((_, 't')) => value.push('\t'),
                Some((_, e @ ('"' | '\'' | '\\' | '$'))) => value.push(e),
                Some((_, other)) => return Scan::BadEscape(other),
                None => return Scan::Open,
            }
        } else {
            value.push(c);
        }
    }
    Scan::Open
}

// ---------------------------------------------------------------------------------------
// Help and version
// ---------------------------------------------------------------------------------------

/// Lines of `--help` are wrapped to this many columns.
const HELP_WIDTH: usize = 100;

fn version_text() -> String {
    format!("tusring {}", env!("CARGO_PKG_VERSION"))
}

impl Flag {
    /// `-w, --workers <N>` / `    --host <HOST>`.
    fn usage(&self) -> String {
        let short = match self.short {
            Some(c) => format!("-{c}, "),
            None => "    ".to_owned(),
        };
        match self.value {
            Some(placeholder) => format!("{short}--{} <{placeholder}>", self.long),
            None => format!("{short}--{}", self.long),
        }
    }

    /// `[env: X] [default: Y]`; switches show no default (they are off).
    fn notes(&self) -> String {
        let default = match self.fallback {
            Fallback::Value(_) if self.value.is_none() => return format!("[env: {}]", self.env),
            Fallback::Value("") => "\"\"",
            Fallback::Value(text) | Fallback::Unset(text) => text,
        };
        format!("[env: {}] [default: {default}]", self.env)
    }
}

fn help_text() -> String {
    const HELP: &str = "-h, --help";
    const VERSION: &str = "-V, --version";
    // A usage longer than `MAX_USAGE_WIDTH` puts its help on the next line, so that
    // one long flag name does not push every help text to the right.
    const MAX_USAGE_WIDTH: usize = 32;
    let column = FLAGS
        .iter()
        .map(|f| f.usage().len())
        .chain([HELP.len(), VERSION.len()])
        .filter(|&n| n <= MAX_USAGE_WIDTH)
        .max()
        .unwrap_or(0)
        + 4;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{}: a tus 1.0 resumable-upload server, a drop-in replacement for rustus\n\n\
         Usage: tusring [OPTIONS]",
        version_text()
    );
    let mut section = "";
    for flag in FLAGS {
        if flag.section != section {
            section = flag.section;
            let _ = writeln!(out, "\n{section}:");
        }
        let usage = flag.usage();
        if usage.len() > MAX_USAGE_WIDTH {
            let _ = writeln!(out, "  {usage}\n{:column$}{}", "", flag.help);
        } else {
            let _ = writeln!(out, "  {usage:<width$}{}", flag.help, width = column - 2);
        }
        out.push_str(&wrap(&flag.notes(), column, column, HELP_WIDTH));
    }
    let _ = writeln!(out, "\nGeneral:");
    let _ = writeln!(out, "  {HELP:<width$}Print this help", width = column - 2);
    let _ = writeln!(
        out,
        "  {VERSION:<width$}Print the version",
        width = column - 2
    );

    let notes = [
        "Precedence: command-line flag > environment variable > ./.env file > default. \
         An empty variable counts as unset.",
        "Switches take no value, but --flag=false works too. Boolean values: true/false, \
         1/0, yes/no, on/off.",
        "SIZE is bytes, or a number with a binary suffix K, M, G or T (64M = 64 MiB). \
         SECS is seconds, decimals allowed (0.5).",
        &format!(
            "Extensions: {}. creation-with-upload and creation-defer-length imply creation; \
             concatenation-unfinished implies concatenation; checksum-trailer implies checksum.",
            Extensions::ALLOWED.join(", ")
        ),
    ];
    out.push('\n');
    for note in notes {
        out.push_str(&wrap(note, 0, 2, HELP_WIDTH));
    }

    out.push('\n');
    out.push_str(&wrap(
        "Unsupported rustus flags (an error if given; their environment variables are ignored):",
        0,
        2,
        HELP_WIDTH,
    ));
    let mut features: Vec<&str> = Vec::new();
    for row in UNSUPPORTED {
        if !features.contains(&row.feature) {
            features.push(row.feature);
        }
    }
    for feature in features {
        let names: Vec<String> = UNSUPPORTED
            .iter()
            .filter(|u| u.feature == feature)
            .map(|u| match u.alias {
                Some(alias) => format!("--{} (or --{alias})", u.long),
                None => format!("--{}", u.long),
            })
            .collect();
        let line = format!("{feature}: {}", names.join(", "));
        out.push_str(&wrap(&line, 2, 6, HELP_WIDTH));
    }

    out.push_str(
        "\nExit status: 0 success, 1 runtime failure, 2 usage error (bad flag or value).\n",
    );
    out
}

/// Greedy word wrap of `text`: the first line indented by `first`, the others by `rest`,
/// each at most `width` columns where the words allow. Breaks after spaces and commas.
fn wrap(text: &str, first: usize, rest: usize, width: usize) -> String {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (at, c) in text.char_indices() {
        if c == ' ' || c == ',' {
            pieces.push(&text[start..at + 1]);
            start = at + 1;
        }
    }
    pieces.push(&text[start..]);

    let mut out = String::new();
    let mut line = String::new();
    let mut indent = first;
    for piece in pieces {
        if !line.is_empty() && indent + line.len() + piece.trim_end().len() > width {
            let _ = writeln!(out, "{:indent$}{}", "", line.trim_end());
            line.clear();
            indent = rest;
        }
        line.push_str(piece);
    }
    if !line.trim_end().is_empty() {
        let _ = writeln!(out, "{:indent$}{}", "", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        args: &[&str],
        env: &[(&str, &str)],
        dotenv: Option<&str>,
    ) -> Result<Action, ConfigError> {
        let args = args.iter().map(OsString::from).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        load(args, &lookup, dotenv)
    }

    fn config_of(args: &[&str], env: &[(&str, &str)], dotenv: Option<&str>) -> Config {
        match run(args, env, dotenv) {
            Ok(Action::Run(config)) => config,
            other => panic!("expected a config for {args:?}, got {other:?}"),
        }
    }

    fn cfg(args: &[&str]) -> Config {
        config_of(args, &[], None)
    }

    fn error_of(args: &[&str], env: &[(&str, &str)], dotenv: Option<&str>) -> ConfigError {
        match run(args, env, dotenv) {
            Err(err) => err,
            Ok(action) => panic!("expected an error for {args:?}, got {action:?}"),
        }
    }

    fn err(args: &[&str]) -> ConfigError {
        error_of(args, &[], None)
    }

    /// Reads one setting out of a config.
    type Getter<T> = fn(&Config) -> T;

    fn help() -> String {
        match run(&["--help"], &[], None) {
            Ok(Action::Help(text)) => text,
            other => panic!("expected help, got {other:?}"),
        }
    }

    #[test]
    fn data_path_flags() {
        let c = cfg(&[
            "--disable-splice",
            "--body-buffer-size",
            "1M",
            "--pipe-size=64K",
        ]);
        assert!(c.disable_splice);
        assert_eq!(c.body_buffer_size, 1 << 20);
        assert_eq!(c.pipe_size, 64 << 10);
        assert_eq!(c.uring_entries, 4096);
        let d = cfg(&[]);
        assert!(!d.disable_splice);
        assert_eq!(d.body_buffer_size, 256 << 10);
        assert_eq!(d.pipe_size, 1 << 20);
        let e = config_of(
            &[],
            &[
                ("RUSTUS_DISABLE_SPLICE", "true"),
                ("RUSTUS_URING_ENTRIES", "256"),
            ],
            None,
        );
        assert!(e.disable_splice);
        assert_eq!(e.uring_entries, 256);
        for bad in [
            &["--body-buffer-size", "1"][..],
            &["--pipe-size", "1G"],
            &["--uring-entries", "1000"],
            &["--uring-entries", "32"],
        ] {
            let e = err(bad);
            assert!(e.message.contains(bad[0]), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn table_has_one_row_per_key_and_unique_names() {
        let keys = [
            Key::Host,
            Key::Port,
            Key::Workers,
            Key::LogLevel,
            Key::DisableHealthAccessLog,
            Key::BehindProxy,
            Key::Cors,
            Key::Url,
            Key::TusExtensions,
            Key::MaxBodySize,
            Key::MaxFileSize,
            Key::AllowEmpty,
            Key::RemoveParts,
            Key::ExpirationTime,
            Key::ExpirationSweepInterval,
            Key::Storage,
            Key::DataDir,
            Key::DirStructure,
            Key::ForceFsync,
            Key::InfoStorage,
            Key::InfoDir,
            Key::ShutdownTimeout,
            Key::HeadTimeout,
            Key::IdleTimeout,
            Key::BodyTimeout,
            Key::DisableSplice,
            Key::BodyBufferSize,
            Key::PipeSize,
            Key::UringEntries,
            Key::Hooks,
            Key::HooksFormat,
            Key::HooksFile,
            Key::HooksDir,
            Key::HooksHttpUrls,
            Key::HooksHttpProxyHeaders,
            Key::HttpHookTimeout,
            Key::HookTimeout,
            Key::HooksWorkers,
            Key::HooksQueue,
            Key::HooksHttpRetries,
            Key::HooksHttpRetryBackoff,
            Key::HooksAmqpUrl,
            Key::HooksAmqpQueuesPrefix,
            Key::HooksAmqpExchange,
            Key::HooksAmqpExchangeKind,
            Key::HooksAmqpRouting,
            Key::HooksAmqpDeclareExchange,
            Key::HooksAmqpDeclareQueues,
            Key::HooksAmqpDurableExchange,
            Key::HooksAmqpDurableQueues,
            Key::HooksAmqpAutoDelete,
            Key::HooksAmqpCelery,
            Key::HooksAmqpQueueSize,
            Key::HooksAmqpConnectionPoolSize,
            Key::HooksAmqpChannelPoolSize,
            Key::HooksAmqpIdleConnectionTimeout,
            Key::HooksAmqpIdleChannelsTimeout,
            Key::MaxConnections,
            Key::Backlog,
            Key::PinCores,
            Key::LogFormat,
            Key::DisableAccessLog,
        ];
        assert_eq!(keys.len(), FLAGS.len());
        for key in keys {
            assert_eq!(FLAGS.iter().filter(|f| f.key == key).count(), 1, "{key:?}");
        }
        let mut longs: Vec<&str> = FLAGS.iter().map(|f| f.long).collect();
        longs.extend(FLAGS.iter().filter_map(|f| f.alias));
        longs.extend(UNSUPPORTED.iter().map(|u| u.long));
        longs.extend(UNSUPPORTED.iter().filter_map(|u| u.alias));
        longs.extend(["help", "version"]);
        let total = longs.len();
        longs.sort_unstable();
        longs.dedup();
        assert_eq!(longs.len(), total, "a long name appears twice");
        let mut envs: Vec<&str> = FLAGS.iter().map(|f| f.env).collect();
        envs.sort_unstable();
        envs.dedup();
        assert_eq!(envs.len(), FLAGS.len());
        for flag in FLAGS {
            assert!(flag.env.starts_with("RUSTUS_"), "{}", flag.env);
        }
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.port, 1081);
        assert_eq!(c.listen, "0.0.0.0:1081".parse().unwrap());
        assert_eq!(c.url, "/files");
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.workers, default_workers());
        assert_eq!(c.max_body_size, None);
        assert_eq!(c.max_file_size, None);
        assert_eq!(c.extensions, Extensions::parse(DEFAULT_EXTENSIONS).unwrap());
        assert!(c.extensions.getting && c.extensions.checksum && c.extensions.concatenation);
        assert!(!c.extensions.expiration && !c.extensions.checksum_trailer);
        assert!(!c.allow_empty && !c.remove_parts && !c.behind_proxy);
        assert!(!c.disable_health_access_log && !c.force_fsync);
        assert!(c.cors.is_empty());
        assert_eq!(c.storage, "file-storage");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.dir_structure, "");
        assert_eq!(c.info_storage, "file-info-storage");
        assert_eq!(c.info_dir, PathBuf::from("./data"));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.head_timeout, Duration::from_secs(30));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.body_timeout, Duration::from_secs(30));
    }

    #[test]
    fn default_workers_is_at_least_one() {
        let n = default_workers();
        assert!((1..=MAX_WORKERS).contains(&n));
        assert_eq!(Some(n), affinity_cpus().map(|n| n.min(MAX_WORKERS)));
    }

    #[test]
    fn precedence_flag_env_dotenv_default() {
        let dotenv =
            "RUSTUS_SERVER_PORT=3000\nRUSTUS_URL=/dot\nRUSTUS_WORKERS=3\nRUSTUS_ALLOW_EMPTY=true\n";
        let env = [("RUSTUS_SERVER_PORT", "2000"), ("RUSTUS_URL", "/env")];

        // flag > env > .env
        let c = config_of(
            &["--port", "1000", "--url", "/flag", "-w", "5"],
            &env,
            Some(dotenv),
        );
        assert_eq!((c.port, c.url.as_str(), c.workers), (1000, "/flag", 5));
        // env > .env
        let c = config_of(&[], &env, Some(dotenv));
        assert_eq!((c.port, c.url.as_str(), c.workers), (2000, "/env", 3));
        assert!(c.allow_empty);
        // .env > default
        let c = config_of(&[], &[], Some(dotenv));
        assert_eq!((c.port, c.url.as_str(), c.workers), (3000, "/dot", 3));
        // flag beats env for a switch too, both ways
        let c = config_of(
            &["--allow-empty=false"],
            &[("RUSTUS_ALLOW_EMPTY", "true")],
            None,
        );
        assert!(!c.allow_empty);
        let c = config_of(&["--allow-empty"], &[("RUSTUS_ALLOW_EMPTY", "false")], None);
        assert!(c.allow_empty);
        // env beats .env for a switch
        let c = config_of(&[], &[("RUSTUS_ALLOW_EMPTY", "no")], Some(dotenv));
        assert!(!c.allow_empty);
    }

    #[test]
    fn empty_env_value_counts_as_unset() {
        let c = config_of(
            &[],
            &[("RUSTUS_MAX_FILE_SIZE", ""), ("RUSTUS_SERVER_PORT", "")],
            None,
        );
        assert_eq!(c.max_file_size, None);
        assert_eq!(c.port, 1081);
        let c = config_of(
            &[],
            &[("RUSTUS_SERVER_PORT", "")],
            Some("RUSTUS_SERVER_PORT=9\n"),
        );
        assert_eq!(c.port, 9);
    }

    #[test]
    fn every_value_flag_long_equals_and_env_forms() {
        // (args, env var, value) giving the same setting three ways.
        let cases: &[(&str, &str, Getter<String>)] = &[
            ("--host=127.0.0.1", "127.0.0.1", |c| c.host.clone()),
            ("--port=8080", "8080", |c| c.port.to_string()),
            ("--url=/up", "/up", |c| c.url.clone()),
            ("--log-level=debug", "debug", |c| {
                c.log_level.as_str().to_owned()
            }),
            ("--workers=7", "7", |c| c.workers.to_string()),
            ("--max-body-size=100", "100", |c| {
                format!("{:?}", c.max_body_size)
            }),
            ("--max-file-size=200", "200", |c| {
                format!("{:?}", c.max_file_size)
            }),
            ("--tus-extensions=getting", "getting", |c| {
                c.extensions.names().join(",")
            }),
            ("--cors=https://a.example", "https://a.example", |c| {
                c.cors.join(",")
            }),
            ("--storage=file-storage", "file-storage", |c| {
                c.storage.clone()
            }),
            ("--data-dir=/srv/d", "/srv/d", |c| {
                c.data_dir.display().to_string()
            }),
            ("--dir-structure={year}", "{year}", |c| {
                c.dir_structure.clone()
            }),
            (
                "--info-storage=file-info-storage",
                "file-info-storage",
                |c| c.info_storage.clone(),
            ),
            ("--info-dir=/srv/i", "/srv/i", |c| {
                c.info_dir.display().to_string()
            }),
            ("--shutdown-timeout=3", "3", |c| {
                format!("{:?}", c.shutdown_timeout)
            }),
            ("--head-timeout=4", "4", |c| format!("{:?}", c.head_timeout)),
            ("--idle-timeout=5", "5", |c| format!("{:?}", c.idle_timeout)),
            ("--body-timeout=6", "6", |c| format!("{:?}", c.body_timeout)),
            ("--expiration-time=7", "7", |c| {
                c.expiration_time.as_secs().to_string()
            }),
            ("--expiration-sweep-interval=8", "8", |c| {
                format!("{:?}", c.expiration_sweep_interval)
            }),
            ("--body-buffer-size=8K", "8K", |c| {
                format!("{}K", c.body_buffer_size >> 10)
            }),
            ("--pipe-size=8K", "8K", |c| {
                format!("{}K", c.pipe_size >> 10)
            }),
            ("--uring-entries=128", "128", |c| {
                c.uring_entries.to_string()
            }),
            ("--hooks=pre-create", "pre-create", |c| {
                format!("{:?}", c.hooks)
            }),
            ("--hooks-format=tusd", "tusd", |c| {
                c.hooks_format.name().to_owned()
            }),
            ("--hooks-file=/srv/hook", "/srv/hook", |c| {
                format!("{:?}", c.hooks_file)
            }),
            ("--hooks-dir=/srv/hooks", "/srv/hooks", |c| {
                format!("{:?}", c.hooks_dir)
            }),
            ("--hooks-http-urls=http://h/x", "http://h/x", |c| {
                c.hooks_http_urls.join(",")
            }),
            (
                "--hooks-http-proxy-headers=Authorization",
                "Authorization",
                |c| c.hooks_http_proxy_headers.join(","),
            ),
            ("--http-hook-timeout=7", "7", |c| {
                format!("{:?}", c.http_hook_timeout)
            }),
            ("--hook-timeout=8", "8", |c| format!("{:?}", c.hook_timeout)),
            ("--hooks-workers=7", "7", |c| c.hooks_workers.to_string()),
            ("--hooks-queue=9", "9", |c| c.hooks_queue.to_string()),
            ("--hooks-http-retries=0", "0", |c| {
                c.hooks_http_retries.to_string()
            }),
            ("--hooks-http-retry-backoff=2", "2", |c| {
                format!("{:?}", c.hooks_http_retry_backoff)
            }),
            ("--max-connections=3", "3", |c| {
                c.max_connections.to_string()
            }),
            ("--backlog=16", "16", |c| c.backlog.to_string()),
            ("--log-format=json", "json", |c| {
                format!("{:?}", c.log_format)
            }),
            ("--hooks-amqp-url=amqp://h", "amqp://h", |c| {
                c.hooks_amqp.url.clone().unwrap_or_default()
            }),
            ("--hooks-amqp-queues-prefix=p", "p", |c| {
                c.hooks_amqp.queues_prefix.clone()
            }),
            ("--hooks-amqp-exchange=e", "e", |c| {
                c.hooks_amqp.exchange.clone()
            }),
            ("--hooks-amqp-exchange-kind=fanout", "fanout", |c| {
                c.hooks_amqp.exchange_kind.clone()
            }),
            ("--hooks-amqp-routing-key=k", "k", |c| {
                c.hooks_amqp.routing_key.clone().unwrap_or_default()
            }),
            ("--hooks-amqp-queue-size=3", "3", |c| {
                c.hooks_amqp.queue_size.to_string()
            }),
            ("--hooks-amqp-connection-pool-size=4", "4", |c| {
                c.hooks_amqp.connection_pool_size.to_string()
            }),
            ("--hooks-amqp-channel-pool-size=5", "5", |c| {
                c.hooks_amqp.channel_pool_size.to_string()
            }),
            ("--hooks-amqp-idle-connection-timeout=6", "6", |c| {
                format!("{:?}", c.hooks_amqp.idle_connection_timeout)
            }),
            ("--hooks-amqp-idle-channels-timeout=7", "7", |c| {
                format!("{:?}", c.hooks_amqp.idle_channels_timeout)
            }),
        ];
        assert_eq!(
            cases.len(),
            FLAGS.iter().filter(|f| f.value.is_some()).count()
        );
        for (joined, value, get) in cases {
            let (name, _) = joined.split_once('=').unwrap();
            let flag = &FLAGS[find_flag(name).unwrap()];
            let default = get(&cfg(&[]));
            let by_equals = get(&cfg(&[joined]));
            let by_space = get(&cfg(&[name, value]));
            let by_env = get(&config_of(&[], &[(flag.env, value)], None));
            let by_dotenv = get(&config_of(&[], &[], Some(&format!("{}={value}", flag.env))));
            // The storages have a single valid value; everything else must change.
            if !joined.contains("storage=") {
                assert_ne!(by_equals, default, "{joined} must differ from the default");
            }
            assert_eq!(by_space, by_equals, "{joined}");
            assert_eq!(by_env, by_equals, "{joined}");
            assert_eq!(by_dotenv, by_equals, "{joined}");
        }
    }

    #[test]
    fn short_forms() {
        for args in [&["-w", "4"][..], &["-w4"], &["-w=4"], &["--workers", "4"]] {
            assert_eq!(cfg(args).workers, 4, "{args:?}");
        }
        for args in [
            &["-m", "64M"][..],
            &["-m64M"],
            &["-m=64M"],
            &["--max-body-size=64M"],
        ] {
            assert_eq!(cfg(args).max_body_size, Some(64 << 20), "{args:?}");
        }
        assert_eq!(cfg(&["-s", "file-storage"]).storage, "file-storage");
        assert_eq!(cfg(&["-sfile-storage"]).storage, "file-storage");
        assert_eq!(
            cfg(&["-i", "file-info-storage"]).info_storage,
            "file-info-storage"
        );
        assert!(err(&["-s", "s3"]).message.contains("'-s'"));
        assert!(err(&["-i", "x"]).message.contains("'-i'"));
    }

    #[test]
    fn repeated_flag_last_wins() {
        assert_eq!(cfg(&["--port", "1", "--port", "2"]).port, 2);
        assert_eq!(cfg(&["-w", "1", "--workers=3"]).workers, 3);
        assert!(!cfg(&["--force-fsync", "--force-fsync=off"]).force_fsync);
    }

    #[test]
    fn tuning_and_log_defaults_and_bounds() {
        let c = cfg(&[]);
        assert_eq!(c.max_connections, 10000);
        assert_eq!(c.backlog, 1024);
        assert!(!c.pin_cores && !c.disable_access_log);
        assert_eq!(c.log_format, LogFormat::Human);
        assert_eq!(cfg(&["--log-format", "JSON"]).log_format, LogFormat::Json);
        assert!(err(&["--log-format", "xml"])
            .message
            .contains("--log-format"));
        assert!(err(&["--max-connections", "0"])
            .message
            .contains("--max-connections"));
        assert!(err(&["--backlog", "0"]).message.contains("--backlog"));
    }

    #[test]
    fn switches() {
        let switches: &[(&str, Getter<bool>)] = &[
            ("--allow-empty", |c| c.allow_empty),
            ("--remove-parts", |c| c.remove_parts),
            ("--behind-proxy", |c| c.behind_proxy),
            ("--disable-health-access-log", |c| {
                c.disable_health_access_log
            }),
            ("--force-fsync", |c| c.force_fsync),
            ("--disable-splice", |c| c.disable_splice),
            ("--pin-cores", |c| c.pin_cores),
            ("--disable-access-log", |c| c.disable_access_log),
            ("--hooks-amqp-declare-exchange", |c| {
                c.hooks_amqp.declare_exchange
            }),
            ("--hooks-amqp-declare-queues", |c| {
                c.hooks_amqp.declare_queues
            }),
            ("--hooks-amqp-durable-exchange", |c| {
                c.hooks_amqp.durable_exchange
            }),
            ("--hooks_amqp_durable_exchange", |c| {
                c.hooks_amqp.durable_exchange
            }),
            ("--hooks-amqp-durable-queues", |c| {
                c.hooks_amqp.durable_queues
            }),
            ("--hooks-amqp-auto-delete", |c| c.hooks_amqp.auto_delete),
            ("--hooks-amqp-celery", |c| c.hooks_amqp.celery),
        ];
        assert_eq!(
            switches.len(),
            // + 1: the durable-exchange switch is listed under both its spellings.
            FLAGS.iter().filter(|f| f.value.is_none()).count() + 1
        );
        for (name, get) in switches {
            let flag = &FLAGS[find_flag(name).unwrap()];
            assert!(!get(&cfg(&[])), "{name}");
            assert!(get(&cfg(&[name])), "{name}");
            assert!(get(&cfg(&[&format!("{name}=true")])), "{name}");
            assert!(!get(&cfg(&[&format!("{name}=false")])), "{name}");
            assert!(get(&config_of(&[], &[(flag.env, "true")], None)), "{name}");
            assert!(
                !get(&config_of(&[], &[(flag.env, "false")], None)),
                "{name}"
            );
        }
        // A switch does not swallow the next argument.
        let c = cfg(&["--allow-empty", "--port", "9"]);
        assert!(c.allow_empty);
        assert_eq!(c.port, 9);
    }

    #[test]
    fn bool_spellings() {
        for yes in ["true", "TRUE", "True", "1", "yes", "YES", "on", "On"] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
            assert!(config_of(&[], &[("RUSTUS_REMOVE_PARTS", yes)], None).remove_parts);
        }
        for no in ["false", "FALSE", "0", "no", "No", "off", "OFF"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
            assert!(!cfg(&[&format!("--remove-parts={no}")]).remove_parts);
        }
        for bad in ["maybe", "", "2", "tru", "y"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
        let e = error_of(&[], &[("RUSTUS_ALLOW_EMPTY", "maybe")], None);
        assert_eq!(e.flag, "--allow-empty");
        assert_eq!(
            e.message,
            "invalid value 'maybe' for RUSTUS_ALLOW_EMPTY (--allow-empty): \
             expected true or false (also 1/0, yes/no, on/off)"
        );
        let e = error_of(&[], &[], Some("RUSTUS_ALLOW_EMPTY=maybe"));
        assert!(e
            .message
            .starts_with("invalid value 'maybe' for RUSTUS_ALLOW_EMPTY in .env (--allow-empty)"));
        let e = err(&["--allow-empty=maybe"]);
        assert!(e
            .message
            .starts_with("invalid value 'maybe' for '--allow-empty'"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1"), Ok(1));
        assert_eq!(parse_size("262144"), Ok(262_144));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("3t"), Ok(3 << 40));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "", "K", "1.5M", "-1", "1 M", "1MB", "1KiB", "abc", "0x10", "1P",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("0").unwrap_err().contains("greater than 0"));
        assert!(parse_size("0M").is_err());
        assert!(parse_size("18446744073709551616")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("16777216T").unwrap_err().contains("too large"));
        assert_eq!(
            cfg(&["--max-file-size", "10G"]).max_file_size,
            Some(10 << 30)
        );
        let e = err(&["-m", "lots"]);
        assert_eq!(e.flag, "--max-body-size");
        assert!(
            e.message.starts_with("invalid value 'lots' for '-m': "),
            "{e}"
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_secs("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_secs(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_secs("1.000000001"), Ok(Duration::new(1, 1)));
        assert_eq!(
            parse_secs("604800"),
            Ok(Duration::from_secs(MAX_TIMEOUT_SECS))
        );
        for bad in [
            "",
            ".",
            "1.",
            "-1",
            "1e3",
            "inf",
            "NaN",
            "1s",
            "1.2.3",
            "1.0000000001",
        ] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        for zero in ["0", "0.0", "0.000000000"] {
            assert!(
                parse_secs(zero).unwrap_err().contains("greater than 0"),
                "{zero}"
            );
        }
        assert!(parse_secs("604801").is_err());
        assert!(parse_secs("99999999999999999999999").is_err());
        let c = cfg(&["--head-timeout", "1.5", "--body-timeout=0.1"]);
        assert_eq!(c.head_timeout, Duration::from_millis(1500));
        assert_eq!(c.body_timeout, Duration::from_millis(100));
        let e = error_of(&[], &[("RUSTUS_IDLE_TIMEOUT", "0")], None);
        assert_eq!(e.flag, "--idle-timeout");
        assert!(
            e.message.contains("RUSTUS_IDLE_TIMEOUT (--idle-timeout)"),
            "{e}"
        );
    }

    #[test]
    fn url_normalisation() {
        let table = [
            ("/files", "/files"),
            ("files", "/files"),
            ("files/", "/files"),
            ("/files/", "/files"),
            ("//files//", "/files"),
            ("/a/b/", "/a/b"),
            ("a/b", "/a/b"),
            ("/", ""),
            ("", ""),
            ("///", ""),
        ];
        for (input, want) in table {
            assert_eq!(normalize_url(input).as_deref(), Ok(want), "{input:?}");
            assert_eq!(cfg(&[&format!("--url={input}")]).url, want, "{input:?}");
        }
        for bad in ["/a b", "/a?x", "/a#x", "/a\tb"] {
            assert!(normalize_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(config_of(&[], &[("RUSTUS_URL", "/")], None).url, "");
    }

    #[test]
    fn log_levels() {
        for (text, level) in [
            ("OFF", LogLevel::Off),
            ("error", LogLevel::Error),
            ("Warn", LogLevel::Warn),
            ("INFO", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("TRACE", LogLevel::Trace),
        ] {
            assert_eq!(cfg(&["--log-level", text]).log_level, level);
        }
        assert!(LogLevel::Off < LogLevel::Error && LogLevel::Debug < LogLevel::Trace);
        assert!(err(&["--log-level", "loud"])
            .message
            .contains("expected one of OFF"));
    }

    #[test]
    fn extensions_implied_unknown_and_order() {
        let e = Extensions::parse("creation-with-upload").unwrap();
        assert!(e.creation && e.creation_with_upload && !e.creation_defer_length);
        let e = Extensions::parse("creation-defer-length").unwrap();
        assert!(e.creation && e.creation_defer_length);
        let e = Extensions::parse("concatenation-unfinished").unwrap();
        assert!(e.concatenation && e.concatenation_unfinished);
        let e = Extensions::parse("checksum-trailer").unwrap();
        assert!(e.checksum && e.checksum_trailer);
        let e = Extensions::parse("getting").unwrap();
        assert_eq!(e.names(), ["getting"]);

        let a = Extensions::parse("checksum,getting,termination").unwrap();
        let b = Extensions::parse(" termination , , getting,checksum,getting ").unwrap();
        assert_eq!(a, b);
        assert_eq!(Extensions::parse("").unwrap(), Extensions::default());

        let all = Extensions::parse(&Extensions::ALLOWED.join(",")).unwrap();
        assert_eq!(all.names().len(), 10);
        assert_eq!(
            Extensions::parse(DEFAULT_EXTENSIONS).unwrap().names().join(","),
            "creation-defer-length,creation-with-upload,creation,termination,concatenation,getting,checksum"
        );

        let e = err(&["--tus-extensions", "getting,resumable"]);
        assert_eq!(e.flag, "--tus-extensions");
        assert!(e.message.contains("unknown extension 'resumable'"), "{e}");
        for name in Extensions::ALLOWED {
            assert!(e.message.contains(name), "{name}");
        }
        let c = config_of(
            &[],
            &[("RUSTUS_TUS_EXTENSIONS", "creation-defer-length")],
            None,
        );
        assert!(c.extensions.creation && !c.extensions.getting);
    }

    #[test]
    fn cors_list() {
        let c = cfg(&["--cors", " https://a.example , ,https://*.b.example,"]);
        assert_eq!(c.cors, ["https://a.example", "https://*.b.example"]);
    }

    #[test]
    fn dotenv_parsing() {
        let text = "\
# a comment
   # an indented comment

export RUSTUS_A=plain
RUSTUS_B = spaced value  # trailing comment
RUSTUS_C='single # not a comment \\n'
RUSTUS_D=\"double \\\"quoted\\\" \\\\ line\\nnext\"   # comment
RUSTUS_E=
RUSTUS_F=a#b
RUSTUS_G=\"multi
line\"
export\tRUSTUS_H=tab
RUSTUS_A=second definition is ignored
RUSTUS_I=\"\"\r
";
        let pairs = parse_dotenv(text).unwrap();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("RUSTUS_A"), Some("plain"));
        assert_eq!(get("RUSTUS_B"), Some("spaced value"));
        assert_eq!(get("RUSTUS_C"), Some("single # not a comment \\n"));
        assert_eq!(get("RUSTUS_D"), Some("double \"quoted\" \\ line\nnext"));
        assert_eq!(get("RUSTUS_E"), Some(""));
        assert_eq!(get("RUSTUS_F"), Some("a#b"));
        assert_eq!(get("RUSTUS_G"), Some("multi\nline"));
        assert_eq!(get("RUSTUS_H"), Some("tab"));
        assert_eq!(get("RUSTUS_I"), Some(""));
        assert_eq!(pairs.len(), 10);

        // First definition wins when loading, as with dotenvy.
        let c = config_of(
            &[],
            &[],
            Some("RUSTUS_SERVER_PORT=1\nRUSTUS_SERVER_PORT=2\n"),
        );
        assert_eq!(c.port, 1);
        // Quoted values reach the config.
        let c = config_of(&[], &[], Some("export RUSTUS_DATA_DIR=\"/srv/my data\"\n"));
        assert_eq!(c.data_dir, PathBuf::from("/srv/my data"));
    }

    #[test]
    fn dotenv_malformed_lines() {
        let cases = [
            ("RUSTUS_A=1\nno equals sign\n", 2, "expected KEY=VALUE"),
            ("=value\n", 1, "invalid variable name"),
            ("BAD KEY=1\n", 1, "invalid variable name"),
            ("\n\nRUSTUS_A=\"open\n", 3, "unterminated"),
            ("RUSTUS_A='open\n", 1, "unterminated"),
            ("RUSTUS_A=\"x\" y\n", 1, "after the closing quote"),
            ("RUSTUS_A=\"\\q\"\n", 1, "unknown escape"),
        ];
        for (text, line, why) in cases {
            let e = parse_dotenv(text).unwrap_err();
            assert_eq!(e.flag, ".env", "{text:?}");
            assert!(
                e.message.starts_with(&format!(".env line {line}: ")),
                "{text:?}: {e}"
            );
            assert!(e.message.contains(why), "{text:?}: {e}");
            assert!(!e.message.contains('\n'));
            // And through load():
            assert_eq!(error_of(&[], &[], Some(text)), e);
        }
    }

    #[test]
    fn help_and_version_stop_early() {
        // Even with a broken .env and bad values, help and version work.
        for args in [&["--help"][..], &["-h"], &["--port", "x", "-h"]] {
            let out = run(args, &[("RUSTUS_SERVER_PORT", "bad")], Some("garbage"));
            assert!(matches!(out, Ok(Action::Help(_))), "{args:?}");
        }
        for args in [&["--version"][..], &["-V"]] {
            match run(args, &[], Some("garbage")) {
                Ok(Action::Version(v)) => {
                    assert_eq!(v, format!("tusring {}", env!("CARGO_PKG_VERSION")))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn help_mentions_every_flag() {
        let text = help();
        for flag in FLAGS {
            assert!(
                text.contains(&format!("--{}", flag.long)),
                "--{}",
                flag.long
            );
            assert!(text.contains(flag.env), "{}", flag.env);
            assert!(text.contains(flag.help), "{}", flag.help);
            if let Some(c) = flag.short {
                assert!(text.contains(&format!("-{c}, --{}", flag.long)));
            }
        }
        for row in UNSUPPORTED {
            assert!(text.contains(&format!("--{}", row.long)), "--{}", row.long);
        }
        assert!(text.contains("[env: RUSTUS_WORKERS] [default: CPUs available]"));
        assert!(text.contains("-V, --version") && text.contains("-h, --help"));
        assert!(text.contains("Precedence"));
        assert!(text.contains("0 success, 1 runtime failure, 2 usage error"));
        assert!(text.contains("64M"));
        for line in text.lines() {
            assert!(line.chars().count() <= HELP_WIDTH, "too long: {line}");
            assert_eq!(line, line.trim_end());
        }
    }

    #[test]
    fn unknown_flag_and_stray_argument() {
        let e = err(&["--xyz"]);
        assert_eq!(e.flag, "--xyz");
        assert_eq!(e.message, "unknown flag '--xyz'");
        assert_eq!(err(&["-x"]).message, "unknown flag '-x'");
        assert_eq!(err(&["--Port", "1"]).message, "unknown flag '--Port'");
        let e = err(&["serve"]);
        assert!(e.message.starts_with("unexpected argument 'serve'"), "{e}");
    }

    #[test]
    fn missing_value() {
        for args in [
            &["--port"][..],
            &["-w"],
            &["--url", "--port", "1"],
            &["-m", "-w", "2"],
        ] {
            let e = err(args);
            assert!(
                e.message
                    .starts_with(&format!("missing value for '{}'", args[0])),
                "{e}"
            );
            assert!(!e.flag.is_empty());
        }
        // An explicit `=` takes anything, even a leading dash (rejected later if bad).
        assert!(err(&["--port=-1"])
            .message
            .starts_with("invalid value '-1' for '--port'"));
    }

    #[test]
    fn bad_port() {
        for bad in ["abc", "65536", "-1", "", "1.5", "0x50"] {
            let e = err(&[&format!("--port={bad}")]);
            assert_eq!(e.flag, "--port");
            assert_eq!(
                e.message,
                format!("invalid value '{bad}' for '--port': not a port number (0-65535)")
            );
        }
        assert_eq!(cfg(&["--port", "0"]).port, 0);
        assert_eq!(cfg(&["--port", "65535"]).listen.port(), 65535);
        let e = error_of(&[], &[("RUSTUS_SERVER_PORT", "http")], None);
        assert!(e.message.contains("RUSTUS_SERVER_PORT (--port)"), "{e}");
    }

    #[test]
    fn workers_bounds() {
        let e = err(&["-w", "0"]);
        assert_eq!(e.flag, "--workers");
        assert_eq!(e.message, "invalid value '0' for '-w': must be at least 1");
        assert!(err(&["--workers=1025"]).message.contains("at most 1024"));
        assert!(err(&["--workers=many"])
            .message
            .contains("expected a number"));
        assert_eq!(cfg(&["-w", "1024"]).workers, 1024);
        assert_eq!(cfg(&["-w", "1"]).workers, 1);
    }

    #[test]
    fn hosts() {
        let c = cfg(&["--host", "127.0.0.1", "--port", "0"]);
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        let c = cfg(&["--host", "::1", "--port", "80"]);
        assert_eq!(c.listen, "[::1]:80".parse().unwrap());
        let c = cfg(&["--host", "[::]"]);
        assert_eq!(c.listen, "[::]:1081".parse().unwrap());
        let c = cfg(&["--host", "localhost"]);
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.host, "localhost");
        assert!(err(&["--host="]).message.contains("must not be empty"));
    }

    #[test]
    fn unsupported_storages() {
        for s3 in ["s3", "hybrid-s3"] {
            let e = err(&["--storage", s3]);
            assert_eq!(e.flag, "--storage");
            assert!(e.message.contains("not supported by tusring"), "{e}");
        }
        let e = err(&["--storage", "disk"]);
        assert!(e.message.contains("unknown storage 'disk'") && e.message.contains("file-storage"));
        let e = error_of(&[], &[("RUSTUS_STORAGE", "s3")], None);
        assert!(e.message.contains("RUSTUS_STORAGE (--storage)"), "{e}");

        let e = err(&["--info-storage", "redis-info-storage"]);
        assert_eq!(e.flag, "--info-storage");
        assert!(e.message.contains("not supported by tusring"), "{e}");
        let e = err(&["-i", "db-info-storage"]);
        assert!(
            e.message.contains("Unknown info storage 'db-info-storage'"),
            "{e}"
        );
        assert!(e.message.contains("file-info-storage"));
    }

    #[test]
    fn dir_structure_must_stay_inside_data_dir() {
        assert_eq!(
            cfg(&["--dir-structure", "{year}/{month}/{day}"]).dir_structure,
            "{year}/{month}/{day}"
        );
        assert_eq!(
            cfg(&["--dir-structure", "a/./b..c/{x}"]).dir_structure,
            "a/./b..c/{x}"
        );
        for bad in ["/abs/{year}", "..", "a/../b", "{year}/.."] {
            let e = err(&[&format!("--dir-structure={bad}")]);
            assert_eq!(e.flag, "--dir-structure", "{bad}");
        }
        assert!(check_dir_structure("a\0b").unwrap_err().contains("NUL"));
        let e = error_of(&[], &[], Some("RUSTUS_DIR_STRUCTURE=\"/x\"\n"));
        assert!(e.message.contains("RUSTUS_DIR_STRUCTURE in .env"), "{e}");
    }

    #[test]
    fn empty_dirs_rejected() {
        assert!(err(&["--data-dir="]).message.contains("must not be empty"));
        assert!(err(&["--info-dir", ""])
            .message
            .contains("must not be empty"));
    }

    #[test]
    fn unsupported_flags_error_by_name() {
        for flag in [
            "--s3-url",
            "--s3-force-path-style",
            "--info-db-dsn",
            "--redis-info-expiration",
            "--sentry-dsn",
            "--sentry-sample-rate",
            "--hooks-kafka-urls",
            "--hooks-nats-token",
        ] {
            let e = err(&[flag, "x"]);
            assert_eq!(e.flag, flag);
            assert!(
                e.message
                    .starts_with(&format!("'{flag}' is not supported by tusring")),
                "{e}"
            );
        }
        // Every row errors by name, never "unknown flag".
        for row in UNSUPPORTED {
            let e = err(&[&format!("--{}", row.long)]);
            assert!(e.message.contains("not supported"), "{}", row.long);
        }
    }

    #[test]
    fn env_of_unsupported_features_is_ignored() {
        let env = [
            ("RUSTUS_S3_URL", "https://s3.example"),
            ("RUSTUS_SENTRY_DSN", "https://key@sentry.example/1"),
            ("RUSTUS_INFO_DB_DSN", "redis://localhost/0"),
            ("RUSTUS_HOOKS_KAFKA_URLS", "a:1"),
        ];
        let dotenv = "RUSTUS_HOOKS_KAFKA_TOPIC=x\nRUSTUS_HOOKS_NATS_URLS=nats://x\n";
        let c = config_of(&[], &env, Some(dotenv));
        assert_eq!(c.port, 1081);
        assert!(c.hooks_file.is_none() && c.hooks_http_urls.is_empty());
    }

    #[test]
    fn amqp_flags() {
        let c = cfg(&[]);
        let a = &c.hooks_amqp;
        assert_eq!(a.url, None);
        assert_eq!(
            (a.exchange.as_str(), a.exchange_kind.as_str()),
            ("rustus", "topic")
        );
        assert_eq!(a.queues_prefix, "rustus");
        assert_eq!(a.routing_key, None);
        assert_eq!(a.queue_size, crate::hooks::amqp::DEFAULT_QUEUE_SIZE);
        assert_eq!((a.connection_pool_size, a.channel_pool_size), (10, 10));
        assert_eq!(a.idle_timeout(), None);
        assert!(!a.celery && !a.declare_exchange && !a.declare_queues);
        // The documented Celery setup, by flags and by environment.
        let flags = cfg(&[
            "--hooks-amqp-url",
            "amqp://guest:guest@localhost:5672",
            "--hooks-amqp-exchange",
            "celery",
            "--hooks-amqp-exchange-kind",
            "direct",
            "--hooks-amqp-routing-key",
            "celery",
            "--hooks-amqp-celery",
        ]);
        let env = config_of(
            &[],
            &[
                ("RUSTUS_HOOKS_AMQP_URL", "amqp://guest:guest@localhost:5672"),
                ("RUSTUS_HOOKS_AMQP_EXCHANGE", "celery"),
                ("RUSTUS_HOOKS_AMQP_EXCHANGE_KIND", "direct"),
                ("RUSTUS_HOOKS_AMQP_ROUTING_KEY", "celery"),
                ("RUSTUS_HOOKS_AMQP_CELERY", "yes"),
            ],
            None,
        );
        for c in [&flags, &env] {
            let a = &c.hooks_amqp;
            assert_eq!(a.url.as_deref(), Some("amqp://guest:guest@localhost:5672"));
            assert_eq!(a.exchange, "celery");
            assert_eq!(a.exchange_kind, "direct");
            assert_eq!(a.routing_key.as_deref(), Some("celery"));
            assert!(a.celery);
        }
        let c = config_of(
            &[
                "--hooks-amqp-queues-prefix=up",
                "--hooks-amqp-queue-size=5",
                "--hooks-amqp-connection-pool-size=2",
                "--hooks-amqp-channel-pool-size=3",
                "--hooks-amqp-idle-connection-timeout=7",
                "--hooks-amqp-exchange-kind=x-delayed-message",
            ],
            &[
                ("RUSTUS_HOOKS_AMQP_IDLE_CHANNELS_TIMEOUT", "4.5"),
                ("RUSTUS_HOOKS_AMQP_DURABLE_EXCHANGE", "true"),
                ("RUSTUS_HOOKS_AMQP_AUTO_DELETE", "false"),
            ],
            None,
        );
        let a = &c.hooks_amqp;
        assert_eq!(a.queues_prefix, "up");
        assert_eq!(a.queue_size, 5);
        assert_eq!((a.connection_pool_size, a.channel_pool_size), (2, 3));
        assert_eq!(a.idle_timeout(), Some(Duration::from_millis(4500)));
        assert_eq!(a.exchange_kind, "x-delayed-message");
        assert!(a.durable_exchange && !a.auto_delete);
        for (flag, value, why) in [
            ("--hooks-amqp-url", "http://x", "amqp://"),
            ("--hooks-amqp-url", "amqps://x", "TLS"),
            ("--hooks-amqp-exchange-kind", "match", "direct, fanout"),
            ("--hooks-amqp-queue-size", "0", "between"),
            ("--hooks-amqp-channel-pool-size", "x", "whole number"),
            ("--hooks-amqp-idle-connection-timeout", "1x", "seconds"),
        ] {
            let e = err(&[flag, value]);
            assert_eq!(e.flag, flag);
            assert!(e.message.contains(why), "{flag} {value}: {}", e.message);
        }
        let e = error_of(&[], &[("RUSTUS_HOOKS_AMQP_CELERY", "maybe")], None);
        assert!(e.message.contains("RUSTUS_HOOKS_AMQP_CELERY"), "{e}");
    }

    #[test]
    fn errors_are_one_line() {
        let e = error_of(&[], &[], Some("RUSTUS_URL=\"/a\\nb\"\n"));
        assert!(!e.message.contains('\n'), "{e}");
        assert!(e.message.contains("\\n"), "{e}");
        assert_eq!(e.to_string(), e.message);
        let long = "x".repeat(500);
        let e = err(&[&format!("--port={long}")]);
        assert!(e.message.len() < 200);
    }

    #[test]
    fn hook_defaults() {
        let c = cfg(&["-w", "3"]);
        assert_eq!(c.hooks, EventSet::all());
        assert_eq!(c.hooks_format, HookFormat::Default);
        assert_eq!((c.hooks_file.as_ref(), c.hooks_dir.as_ref()), (None, None));
        assert!(c.hooks_http_urls.is_empty() && c.hooks_http_proxy_headers.is_empty());
        assert_eq!(c.http_hook_timeout, Duration::from_secs(2));
        assert_eq!(c.hook_timeout, Duration::from_secs(30));
        assert_eq!(c.hooks_workers, 6);
        assert_eq!(cfg(&["-w", "1"]).hooks_workers, 2);
        assert_eq!(cfg(&["-w", "1000"]).hooks_workers, 64);
        assert_eq!(c.hooks_queue, 1024);
        assert_eq!(c.hooks_http_retries, 3);
        assert_eq!(c.hooks_http_retry_backoff, Duration::from_millis(500));
    }

    #[test]
    fn hook_flags() {
        let c = cfg(&[
            "--hooks",
            " post-finish , pre-create,",
            "--hooks-http-urls",
            "http://a:8000/hooks, https://b.example/x",
            "--hooks-http-proxy-headers",
            "Authorization,X-Tenant-Id",
            "--hooks-format",
            "V2",
        ]);
        let events: Vec<_> = c.hooks.iter().map(crate::hooks::Event::name).collect();
        assert_eq!(events, ["pre-create", "post-finish"]);
        assert_eq!(
            c.hooks_http_urls,
            ["http://a:8000/hooks", "https://b.example/x"]
        );
        assert_eq!(c.hooks_http_proxy_headers, ["Authorization", "X-Tenant-Id"]);
        assert_eq!(c.hooks_format, HookFormat::V2);
        // An explicitly empty list on the command line turns every event off; an empty
        // variable counts as unset (the default: all).
        assert!(cfg(&["--hooks="]).hooks.is_empty());
        assert_eq!(
            config_of(&[], &[("RUSTUS_HOOKS", "")], None).hooks,
            EventSet::all()
        );
        let c = config_of(
            &[],
            &[
                ("RUSTUS_HOOKS", "pre-terminate"),
                ("RUSTUS_HOOKS_FORMAT", "tusd"),
                ("RUSTUS_HOOKS_DIR", "/etc/tusring/hooks"),
                ("RUSTUS_HOOKS_WORKERS", "3"),
            ],
            Some("RUSTUS_HOOKS_QUEUE=5\nRUSTUS_HOOKS_HTTP_RETRIES=1\n"),
        );
        assert_eq!(c.hooks.iter().count(), 1);
        assert_eq!(c.hooks_format, HookFormat::Tusd);
        assert_eq!(c.hooks_dir, Some(PathBuf::from("/etc/tusring/hooks")));
        assert_eq!((c.hooks_workers, c.hooks_queue), (3, 5));
        assert_eq!(c.hooks_http_retries, 1);
    }

    #[test]
    fn bad_hook_values() {
        let e = err(&["--hooks", "pre-create,pre-finish"]);
        assert_eq!(e.flag, "--hooks");
        assert!(e.message.contains("unknown hook 'pre-finish'"), "{e}");
        assert!(e.message.contains("post-terminate"), "{e}");
        let e = error_of(&[], &[("RUSTUS_HOOKS", "everything")], None);
        assert!(e.message.contains("RUSTUS_HOOKS (--hooks)"), "{e}");
        let e = err(&["--hooks-format", "json"]);
        assert_eq!(e.flag, "--hooks-format");
        assert!(e.message.contains("default, v2, tusd"), "{e}");
        for bad in [
            "ftp://x/y",
            "localhost:8000",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            let e = err(&[&format!("--hooks-http-urls=http://ok,{bad}")]);
            assert_eq!(e.flag, "--hooks-http-urls", "{bad}");
            assert!(
                e.message.contains("is not an http:// or https:// URL"),
                "{e}"
            );
        }
        let e = err(&["--hooks-http-proxy-headers", "Authorization,Bad Header"]);
        assert!(
            e.message.contains("'Bad Header' is not a header name"),
            "{e}"
        );
        assert!(err(&["--hooks-file="])
            .message
            .contains("must not be empty"));
        assert!(err(&["--hooks-dir="]).message.contains("must not be empty"));
        for (flag, bad) in [
            ("--http-hook-timeout", "0"),
            ("--hook-timeout", "soon"),
            ("--hooks-http-retry-backoff", "-1"),
            ("--hooks-workers", "0"),
            ("--hooks-workers", "1025"),
            ("--hooks-queue", "0"),
            ("--hooks-queue", "x"),
            ("--hooks-http-retries", "101"),
            ("--hooks-http-retries", "-1"),
        ] {
            let e = err(&[&format!("{flag}={bad}")]);
            assert_eq!(e.flag, flag, "{bad}");
        }
        let e = error_of(&[], &[("RUSTUS_HTTP_HOOK_TIMEOUT", "0")], None);
        assert!(
            e.message
                .contains("RUSTUS_HTTP_HOOK_TIMEOUT (--http-hook-timeout)"),
            "{e}"
        );
        let e = error_of(&[], &[], Some("RUSTUS_HOOKS_WORKERS=lots\n"));
        assert!(
            e.message
                .contains("RUSTUS_HOOKS_WORKERS in .env (--hooks-workers)"),
            "{e}"
        );
    }
}
