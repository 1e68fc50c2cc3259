//! Stage 2, deciding: the validated `Config` the daemon reads, built by applying each
//! row's parse to its raw value, then the computed defaults, then the listen address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::row::{Fallback, Parse};
use super::sources::RawArgs;
use super::table::flags;
use super::values::{resolve, Extensions, LogFormat, LogLevel};
use super::ConfigError;
use crate::hooks::amqp::AmqpConfig;
use crate::hooks::exec::ExecSettings;
use crate::hooks::http::HttpSettings;
use crate::hooks::nats::NatsConfig;
use crate::hooks::{EventSet, Format as HookFormat, Retry, Settings as HookSettings};
use crate::limits::MAX_WORKERS;
use crate::storage::s3::S3Config;

/// The validated configuration. Each field's flag, variable, default and parse are one
/// row of the flag table (`table.rs`, and `--help`).
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
    /// `-w/--workers`: worker threads, each with its own io_uring runtime and its own
    /// descriptor of the one listening socket. Invariant: `1 <= workers <= MAX_WORKERS`.
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
    /// `--disable-health-access-log`: leave `/health` out of the access log.
    pub disable_health_access_log: bool,
    /// The hooks' settings (`--hooks*`, `--hook-timeout`, `--http-hook-timeout`,
    /// `--behind-proxy`), which `hooks::Hooks::start` takes.
    pub hooks: HookSettings,
    /// `-s/--storage`: `file-storage` or `hybrid-s3`.
    pub storage: String,
    /// `--s3-*`: the S3 bucket of `--storage hybrid-s3` (read only with it).
    pub s3: S3Config,
    /// `--data-dir`: root directory of the upload data. Never empty.
    pub data_dir: PathBuf,
    /// `--dir-structure`: subdirectory template (`{year}` ... `{minute}`) under
    /// `data_dir`. Invariant: relative, no `..` component, no NUL.
    pub dir_structure: String,
    /// `--force-fsync`: `fdatasync` the data file after every chunk.
    pub force_fsync: bool,
    /// `-i/--info-storage`: `file-info-storage` or `redis-info-storage`.
    pub info_storage: String,
    /// `--info-db-dsn`: the Redis URL of `redis-info-storage` (required there).
    pub info_db_dsn: Option<String>,
    /// `--redis-info-expiration`: records are written with `EX` this many (whole)
    /// seconds; `None`: they never expire.
    pub redis_info_expiration: Option<Duration>,
    /// `--redis-lock-expiration`: how long a Redis upload lock lives unless its node
    /// renews it. In `[1 s, MAX_LOCK_EXPIRATION_SECS]`.
    pub redis_lock_expiration: Duration,
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

impl Config {
    /// Every field at its "not given" value: `None`, empty, `false`, zero. Building starts
    /// here; the rows then overwrite each field they have a value or a default for, so the
    /// values here only last for a flag whose default is `Fallback::Unset` (and there
    /// they are what "unset" means: no limit, every origin, no hook).
    fn blank() -> Config {
        Config {
            host: String::new(),
            port: 0,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            url: String::new(),
            log_level: LogLevel::Info,
            workers: 0,
            max_body_size: None,
            max_file_size: None,
            extensions: Extensions::default(),
            allow_empty: false,
            remove_parts: false,
            expiration_time: Duration::ZERO,
            expiration_sweep_interval: Duration::ZERO,
            cors: Vec::new(),
            disable_health_access_log: false,
            hooks: HookSettings {
                events: EventSet::none(),
                format: HookFormat::Default,
                answers: false,
                behind_proxy: false,
                workers: 0,
                queue: 0,
                retry: Retry::default(),
                exec: ExecSettings::default(),
                http: HttpSettings::default(),
                nats: NatsConfig::default(),
                amqp: AmqpConfig {
                    url: None,
                    exchange: String::new(),
                    exchange_kind: String::new(),
                    routing_key: None,
                    queues_prefix: String::new(),
                    declare_exchange: false,
                    declare_queues: false,
                    durable_exchange: false,
                    durable_queues: false,
                    auto_delete: false,
                    celery: false,
                    queue_size: 0,
                    connection_pool_size: 0,
                    channel_pool_size: 0,
                    idle_connection_timeout: None,
                    idle_channels_timeout: None,
                },
            },
            storage: String::new(),
            s3: S3Config::default(),
            data_dir: PathBuf::new(),
            dir_structure: String::new(),
            force_fsync: false,
            info_storage: String::new(),
            info_db_dsn: None,
            redis_info_expiration: None,
            redis_lock_expiration: Duration::ZERO,
            info_dir: PathBuf::new(),
            shutdown_timeout: Duration::ZERO,
            head_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            body_timeout: Duration::ZERO,
            disable_splice: false,
            body_buffer_size: 0,
            pipe_size: 0,
            uring_entries: 0,
            max_connections: 0,
            backlog: 0,
            pin_cores: false,
            log_format: LogFormat::Human,
            disable_access_log: false,
        }
    }

    /// Applies every raw value with its row's parse, in table order (the first bad value
    /// is the error, naming its flag or variable); then the computed defaults of the rows
    /// no source gave; then checks the hook settings that go together
    /// (`hooks::Settings::check`); then resolves `host:port` (an error names `--host`).
    pub(super) fn from_raw(raw: &RawArgs) -> Result<Config, ConfigError> {
        let mut config = Config::blank();
        for (flag, slot) in flags().zip(&raw.values) {
            let Some(value) = slot else { continue };
            let applied = match flag.parse {
                Parse::Text(parse) => match value.value.to_str() {
                    Some(text) => parse(&mut config, text),
                    None => Err("not valid UTF-8".to_owned()),
                },
                Parse::Path(parse) => parse(&mut config, &value.value),
            };
            applied.map_err(|why| value.invalid(flag, &why))?;
        }
        for (flag, slot) in flags().zip(&raw.values) {
            if let (None, Fallback::Computed(_, compute)) = (slot, flag.fallback) {
                compute(&mut config);
            }
        }
        // Hook settings that cannot work together (rustus refuses them too).
        config
            .hooks
            .check()
            .map_err(|(flag, why)| ConfigError::new(flag, why))?;
        config.listen =
            resolve(&config.host, config.port).map_err(|why| match raw.get("host") {
                Some((flag, host)) => host.invalid(flag, &why),
                None => ConfigError::new("--host", why),
            })?;
        Ok(config)
    }
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
pub(super) fn affinity_cpus() -> Option<usize> {
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
