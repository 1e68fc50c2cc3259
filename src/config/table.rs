//! The flag table: every supported flag as one row (names, environment variable,
//! default, `--help` line, README text, `systemd/tusring.env` note, an example value and
//! its parse), grouped in the sections `--help` shows; and rustus's flags that tusring
//! recognises but does not implement.
//!
//! Adding a flag is adding a row here and its field to `Config` (with its blank value in
//! `Config::blank`); `--help`, the environment lookup, the table tests, the README's flag
//! table and `systemd/tusring.env` all follow from the row (the last two are rewritten by
//! `TUSRING_WRITE_DOCS=1 cargo test --lib config::docs`).

use super::row::{put, Flag, Section};
use super::validated::default_workers;
use super::values::{
    check_dir_structure, non_empty_path, normalize_url, parse_bool, parse_count, parse_expiration,
    parse_header_names, parse_hook_urls, parse_host, parse_info_storage, parse_list,
    parse_lock_expiration, parse_port, parse_redis_dsn, parse_secs, parse_size, parse_size_within,
    parse_storage, parse_uring_entries, parse_workers, Extensions, LogFormat, LogLevel,
};
use super::ConfigError;
use crate::hooks::{amqp, nats};
use crate::hooks::{EventSet, Format as HookFormat};
use crate::storage::s3;

/// rustus's default `--hooks`: every event.
pub(super) const DEFAULT_HOOKS: &str =
    "pre-create,post-create,post-receive,pre-terminate,post-terminate,post-finish";

/// rustus's default extension list.
pub(super) const DEFAULT_EXTENSIONS: &str = concat!(
    "getting,creation,termination,creation-with-upload,creation-defer-length,",
    "concatenation,checksum"
);

/// Most hook worker threads (`--hooks-workers`).
pub const MAX_HOOK_WORKERS: usize = 1024;

/// Largest `--hooks-queue`.
pub const MAX_HOOK_QUEUE: usize = 1 << 20;

/// Every supported flag, in `--help` order.
pub(super) const SECTIONS: &[Section] = &[
    Section {
        title: "Server",
        env_note: "",
        flags: SERVER,
    },
    Section {
        title: "Protocol",
        env_note: "",
        flags: PROTOCOL,
    },
    Section {
        title: "Storage",
        env_note: "",
        flags: STORAGE,
    },
    Section {
        title: "S3 (--storage hybrid-s3)",
        env_note: "With RUSTUS_STORAGE=hybrid-s3: uploads are written to RUSTUS_DATA_DIR, and \
                   each complete one is then moved to this bucket (the local file is removed \
                   once the object is stored).",
        flags: S3_FLAGS,
    },
    Section {
        title: "Timeouts (seconds; decimals allowed)",
        env_note: "",
        flags: TIMEOUTS,
    },
    Section {
        title: "Data path",
        env_note: "",
        flags: DATA_PATH,
    },
    Section {
        title: "Hooks",
        env_note: "Programs run under the unit's sandbox: see systemd/README.md.",
        flags: HOOKS,
    },
    Section {
        title: NATS,
        env_note: "On when RUSTUS_HOOKS_NATS_URLS is set. Without replies, events wait in memory \
                   while the server is away and are published (each batch confirmed by a \
                   round trip) when it comes back.",
        flags: NATS_HOOKS,
    },
    Section {
        title: AMQP,
        env_note: "RabbitMQ. On when RUSTUS_HOOKS_AMQP_URL is set. Events wait in memory \
                   while the broker is away (RUSTUS_HOOKS_AMQP_QUEUE_SIZE of them; the oldest \
                   go first) and are published, with publisher confirms, when it comes back.",
        flags: AMQP_HOOKS,
    },
];

const SERVER: &[Flag] = &[
    Flag::value("host", "RUSTUS_SERVER_HOST", "HOST")
        .default("0.0.0.0")
        .help("Address to listen on: an IP address or a host name")
        .doc("address to listen on")
        .env_note(
            "Address and port to listen on (not used with socket activation: tusring.socket).\n\
             A port below 1024 needs CAP_NET_BIND_SERVICE (see systemd/README.md).",
        )
        .example("127.0.0.1")
        .parse(|c, v| put(&mut c.host, parse_host(v))),
    Flag::value("port", "RUSTUS_SERVER_PORT", "PORT")
        .default("1081")
        .help("Port to listen on; 0 picks a free port")
        .doc("port; `0` picks a free one (the log line `listening on http://…` says which)")
        .example("8080")
        .parse(|c, v| put(&mut c.port, parse_port(v))),
    Flag::value("workers", "RUSTUS_WORKERS", "N")
        .short('w')
        .computed("CPUs available", |c| c.workers = default_workers())
        .help("Core threads, one io_uring runtime each, one listener (1-1024)")
        .doc(
            "core threads, one io_uring runtime each, all accepting from one listening \
             socket; by default one per CPU in the affinity mask",
        )
        .env_note(
            "Core threads, one io_uring runtime each, all accepting from one listening socket \
             (default: the CPUs in the affinity mask, so CPUAffinity= and cpusets are honoured).",
        )
        .example("7")
        .parse(|c, v| put(&mut c.workers, parse_workers(v))),
    Flag::value("log-level", "RUSTUS_LOG_LEVEL", "LEVEL")
        .default("INFO")
        .help("OFF, ERROR, WARN, INFO, DEBUG or TRACE (any case)")
        .doc("`OFF` `ERROR` `WARN` `INFO` `DEBUG` `TRACE`")
        .env_note(
            "OFF, ERROR, WARN, INFO, DEBUG or TRACE. Logs go to the journal: journalctl -u tusring",
        )
        .example("debug")
        .parse(|c, v| put(&mut c.log_level, LogLevel::parse(v))),
    Flag::switch(
        "disable-health-access-log",
        "RUSTUS_DISABLE_HEALTH_ACCESS_LOG",
    )
    .help("Leave /health requests out of the access log")
    .doc("leave `/health` out of the access log")
    .parse(|c, v| put(&mut c.disable_health_access_log, parse_bool(v))),
    Flag::switch("disable-access-log", "RUSTUS_DISABLE_ACCESS_LOG")
        .help("Write no access log lines at all")
        .doc("no access log lines at all (errors and warnings are still logged)")
        .env_note("Turn the access log off entirely (errors and warnings are still logged).")
        .parse(|c, v| put(&mut c.disable_access_log, parse_bool(v))),
    Flag::value("log-format", "RUSTUS_LOG_FORMAT", "FORMAT")
        .default("human")
        .help("Log line format: human or json")
        .doc(
            "`human`, or `json`: one `{\"ts\":…,\"level\":…,\"msg\":…}` object a line, \
             for log shippers",
        )
        .env_note("human, or json: one {\"ts\",\"level\",\"msg\"} object a line, for log shippers.")
        .example("json")
        .parse(|c, v| put(&mut c.log_format, LogFormat::parse(v))),
    Flag::value("max-connections", "RUSTUS_MAX_CONNECTIONS", "N")
        .default("10000")
        .help("Open connections (all cores); past it new ones get 503")
        .doc(
            "open connections across all cores; past it a new connection gets `503` with \
             `Retry-After: 1` and is closed",
        )
        .env_note(
            "Open connections across all cores; past it a new connection gets 503 + Retry-After \
             and is closed. Keep it below LimitNOFILE= (each connection is one descriptor).",
        )
        .example("3")
        .parse(|c, v| put(&mut c.max_connections, parse_count(v, 1, 10_000_000))),
    Flag::value("backlog", "RUSTUS_BACKLOG", "N")
        .default("1024")
        .help("listen(2) backlog of the shared listener (capped by somaxconn)")
        .doc(
            "`listen(2)` backlog of the listening socket, the one accept queue the cores \
             share (the kernel caps it at `net.core.somaxconn`)",
        )
        .env_note(
            "listen(2) backlog of the listening socket, the one accept queue all cores share (the \
             kernel caps it at net.core.somaxconn).",
        )
        .example("16")
        .parse(|c, v| put(&mut c.backlog, parse_count(v, 1, 1 << 20).map(|n| n as i32))),
    Flag::switch("pin-cores", "RUSTUS_PIN_CORES")
        .help("Pin core thread i to the i-th CPU of the affinity mask")
        .doc("pin core thread *i* to the *i*-th CPU of the affinity mask")
        .env_note(
            "Pin core thread i to the i-th CPU of the affinity mask (opt-in; see README \
             \"Tuning\").",
        )
        .parse(|c, v| put(&mut c.pin_cores, parse_bool(v))),
    Flag::switch("behind-proxy", "RUSTUS_BEHIND_PROXY")
        .help("Take the client address from Forwarded / X-Forwarded-For")
        .doc(
            "hook messages take the client address from `Forwarded: for=`, else \
             `X-Forwarded-For`",
        )
        .parse(|c, v| put(&mut c.hooks.behind_proxy, parse_bool(v))),
    Flag::value("cors", "RUSTUS_CORS", "ORIGINS")
        .unset("every origin")
        .help("Comma list of allowed CORS origins; * is a wildcard")
        .doc(
            "comma list of allowed origins; `*` matches any run of characters, against \
             the whole `Origin` (e.g. `https://*.example.com`); empty = every origin",
        )
        .env_note("Allowed CORS origins, comma-separated (default: every origin).")
        .example("https://a.example")
        .parse(|c, v| put(&mut c.cors, parse_list(v))),
];

const PROTOCOL: &[Flag] = &[
    Flag::value("url", "RUSTUS_URL", "PATH")
        .default("/files")
        .help("Base path of the tus endpoints; / for the root")
        .doc("base path of the tus endpoints (`/` for the root)")
        .env_note("Base path of the tus endpoints.")
        .example("/up")
        .parse(|c, v| put(&mut c.url, normalize_url(v))),
    Flag::value("tus-extensions", "RUSTUS_TUS_EXTENSIONS", "LIST")
        .default(DEFAULT_EXTENSIONS)
        .help("Comma list of enabled tus extensions (names below)")
        .doc("enabled extensions (see above); the default is rustus's list")
        .example("getting")
        .parse(|c, v| put(&mut c.extensions, Extensions::parse(v))),
    Flag::value("max-body-size", "RUSTUS_MAX_BODY_SIZE", "SIZE")
        .short('m')
        .unset("unlimited")
        .help("Largest request body (one chunk); a larger one gets 413")
        .doc(
            "largest request body; a larger Content-Length gets 413 before anything is \
             stored (a chunked body is stored up to the limit, then 413)",
        )
        .env_note("Largest request body and largest upload: bytes or K/M/G/T (empty = unlimited).")
        .example("100")
        .parse(|c, v| put(&mut c.max_body_size, parse_size(v).map(Some))),
    Flag::value("max-file-size", "RUSTUS_MAX_FILE_SIZE", "SIZE")
        .unset("unlimited")
        .help("Largest Upload-Length accepted when an upload is created")
        .doc("largest upload; sent as `Tus-Max-Size`; a larger `Upload-Length` gets 413")
        .example("200")
        .parse(|c, v| put(&mut c.max_file_size, parse_size(v).map(Some))),
    Flag::switch("allow-empty", "RUSTUS_ALLOW_EMPTY")
        .help("Allow uploads with Upload-Length: 0")
        .doc("allow `Upload-Length: 0`")
        .parse(|c, v| put(&mut c.allow_empty, parse_bool(v))),
    Flag::switch("remove-parts", "RUSTUS_REMOVE_PARTS")
        .help("Delete the partial uploads after a final concatenation")
        .doc(
            "delete the partial uploads (data and info) once a final made of them is \
             assembled, and before the final is reported complete (its 201, its HEAD's \
             `Upload-Offset`, its `post-finish`); a part another waiting final still needs is \
             kept, and so is one another request holds for more than 2 s (logged)",
        )
        .parse(|c, v| put(&mut c.remove_parts, parse_bool(v))),
    Flag::value("expiration-time", "RUSTUS_EXPIRATION_TIME", "SECS")
        .default("86400")
        .help("Lifetime of an unfinished upload after its last write")
        .doc(
            "with `expiration` in `--tus-extensions`: whole seconds an unfinished upload \
             lives after its last write",
        )
        .env_note(
            "With the expiration extension: lifetime of an unfinished upload after its last \
             write, and how often expired uploads are removed (seconds).",
        )
        .example("7")
        .parse(|c, v| put(&mut c.expiration_time, parse_expiration(v))),
    Flag::value(
        "expiration-sweep-interval",
        "RUSTUS_EXPIRATION_SWEEP_INTERVAL",
        "SECS",
    )
    .default("60")
    .help("How often expired uploads are removed (expiration)")
    .doc("with `expiration`: seconds between two sweeps that remove expired uploads")
    .example("8")
    .parse(|c, v| put(&mut c.expiration_sweep_interval, parse_secs(v))),
];

const STORAGE: &[Flag] = &[
    Flag::value("storage", "RUSTUS_STORAGE", "NAME")
        .short('s')
        .default("file-storage")
        .help("Data storage: file-storage, or hybrid-s3 (complete files to S3)")
        .doc(
            "`file-storage`, or `hybrid-s3`: uploads are written to the data directory, and \
             each complete one is then moved to the S3 bucket of the `--s3-*` flags (see \
             [S3](#finished-files-in-s3-hybrid-s3)); rustus's `s3` is not supported",
        )
        .example("hybrid-s3")
        .parse(|c, v| put(&mut c.storage, parse_storage(v))),
    Flag::value("data-dir", "RUSTUS_DATA_DIR", "DIR")
        .default("./data")
        .help("Directory for upload data")
        .doc("data directory (created if missing)")
        .env_note(
            "The unit sets RUSTUS_DATA_DIR and RUSTUS_INFO_DIR to /var/lib/tusring/data (its \
             StateDirectory). A directory outside /var/lib/tusring also needs ReadWritePaths= \
             and a fixed user (systemctl edit tusring; see systemd/README.md, \"Uploads on \
             another disk\").",
        )
        .env_sample("/var/lib/tusring/data")
        .example("/srv/d")
        .parse_path(|c, v| put(&mut c.data_dir, non_empty_path(v))),
    Flag::value("dir-structure", "RUSTUS_DIR_STRUCTURE", "TEMPLATE")
        .default("")
        .help("Subdirectory template: {year} {month} {day} {hour} {minute}")
        .doc(
            "subdirectory template: `{year}` `{month}` `{day}` `{hour}` `{minute}`, UTC, \
             unpadded, as rustus",
        )
        .env_note("Subdirectory template: {year} {month} {day} {hour} {minute} (UTC).")
        .example("{year}")
        .parse(|c, v| put(&mut c.dir_structure, check_dir_structure(v))),
    Flag::switch("force-fsync", "RUSTUS_FORCE_FSYNC")
        .help("fdatasync the data file after every chunk")
        .doc("fdatasync data before acknowledging; fsync a new data file's directories before its record, info records and their directory")
        .parse(|c, v| put(&mut c.force_fsync, parse_bool(v))),
    Flag::value("info-storage", "RUSTUS_INFO_STORAGE", "NAME")
        .short('i')
        .default("file-info-storage")
        .help("Info storage: file-info-storage or redis-info-storage")
        .doc(
            "`file-info-storage` (`<id>.info` files in `--info-dir`) or `redis-info-storage` \
             (one key per upload in `--info-db-dsn`, rustus's key and JSON; the upload locks \
             are then held in Redis too, so several nodes can share the uploads: see \
             [Several nodes](#several-nodes))",
        )
        .env_note(
            "redis-info-storage keeps the records, and the upload locks, in Redis \
             (RUSTUS_INFO_DB_DSN): several nodes can then serve one data directory.",
        )
        .example("redis-info-storage")
        .parse(|c, v| put(&mut c.info_storage, parse_info_storage(v))),
    Flag::value("info-dir", "RUSTUS_INFO_DIR", "DIR")
        .default("./data")
        .help("Directory for the <id>.info records")
        .doc("directory of the `<id>.info` records")
        .env_note("See RUSTUS_DATA_DIR above.")
        .env_sample("/var/lib/tusring/data")
        .example("/srv/i")
        .parse_path(|c, v| put(&mut c.info_dir, non_empty_path(v))),
    Flag::value("info-db-dsn", "RUSTUS_INFO_DB_DSN", "DSN")
        .unset("none")
        .help("Redis for redis-info-storage: redis://[user:pass@]host:port/db")
        .doc(
            "with `redis-info-storage` (required there): \
             `redis://[user:password@]host[:port][/db]`, or `redis+unix:///path/to/socket`",
        )
        .env_sample("redis://127.0.0.1:6379/0")
        .example("redis://10.0.0.5:6380/2")
        .parse(|c, v| put(&mut c.info_db_dsn, parse_redis_dsn(v).map(Some))),
    Flag::value(
        "redis-info-expiration",
        "RUSTUS_REDIS_INFO_EXPIRATION",
        "SECS",
    )
    .unset("never")
    .help("Expire Redis records this many seconds after their last write")
    .doc(
        "with `redis-info-storage`: each record is written with `SET … EX <secs>`, so \
             it expires that long after its last write (every PATCH writes it), as rustus; \
             the data file stays (use the `expiration` extension to remove unfinished \
             uploads)",
    )
    .example("3600")
    .parse(|c, v| put(&mut c.redis_info_expiration, parse_expiration(v).map(Some))),
    Flag::value(
        "redis-lock-expiration",
        "RUSTUS_REDIS_LOCK_EXPIRATION",
        "SECS",
    )
    .default("5")
    .help("A Redis upload lock lives this long unless its node renews it")
    .doc(
        "with `redis-info-storage`: an upload lock in Redis lives this long unless its \
             node renews it (every third of it while held), so a node that dies holding \
             uploads blocks them no longer than this; 1 to 3600 s",
    )
    .example("2.5")
    .parse(|c, v| put(&mut c.redis_lock_expiration, parse_lock_expiration(v))),
];

const S3_FLAGS: &[Flag] = &[
    Flag::value("s3-url", "RUSTUS_S3_URL", "URL")
        .help("S3 endpoint, http:// or https:// (hybrid-s3)")
        .doc("the S3 endpoint, `http://` or `https://` (needed by `hybrid-s3`)")
        .example("http://127.0.0.1:9000")
        .parse(|c, v| put(&mut c.s3.url, s3::parse_url(v).map(Some))),
    Flag::value("s3-bucket", "RUSTUS_S3_BUCKET", "NAME")
        .help("S3 bucket (hybrid-s3)")
        .doc("the bucket (needed by `hybrid-s3`)")
        .example("uploads")
        .parse(|c, v| put(&mut c.s3.bucket, s3::parse_word(v).map(Some))),
    Flag::value("s3-region", "RUSTUS_S3_REGION", "REGION")
        .help("S3 region (hybrid-s3)")
        .doc("the region (needed by `hybrid-s3`)")
        .example("eu-west-1")
        .parse(|c, v| put(&mut c.s3.region, s3::parse_word(v).map(Some))),
    Flag::value("s3-access-key", "RUSTUS_S3_ACCESS_KEY", "KEY")
        .help("S3 access key")
        .doc(
            "the access key; without it or its file, `AWS_ACCESS_KEY_ID` or the profile \
             (rustus panics)",
        )
        .example("AKIDEXAMPLE")
        .parse(|c, v| put(&mut c.s3.access_key, s3::parse_word(v).map(Some))),
    Flag::value("s3-access-key-path", "RUSTUS_S3_ACCESS_KEY_PATH", "FILE")
        .help("File holding the S3 access key (trimmed)")
        .doc(
            "a file holding the access key, read at startup and trimmed (rustus keeps the newline)",
        )
        .example("/run/secrets/s3-access-key")
        .parse_path(|c, v| put(&mut c.s3.access_key_path, non_empty_path(v).map(Some))),
    Flag::value("s3-secret-key", "RUSTUS_S3_SECRET_KEY", "KEY")
        .help("S3 secret key")
        .doc("the secret key; without it or its file, `AWS_SECRET_ACCESS_KEY` or the profile")
        .example("wJalrXUtnFEMI")
        .parse(|c, v| put(&mut c.s3.secret_key, s3::parse_word(v).map(Some))),
    Flag::value("s3-secret-key-path", "RUSTUS_S3_SECRET_KEY_PATH", "FILE")
        .help("File holding the S3 secret key (trimmed)")
        .doc("a file holding the secret key, read at startup and trimmed")
        .example("/run/secrets/s3-secret-key")
        .parse_path(|c, v| put(&mut c.s3.secret_key_path, non_empty_path(v).map(Some))),
    Flag::value("s3-security-token", "RUSTUS_S3_SECURITY_TOKEN", "TOKEN")
        .help("S3 security token (temporary credentials)")
        .doc("sent as `x-amz-security-token` (temporary credentials)")
        .example("FQoGZXIvYXdzEXAMPLE")
        .parse(|c, v| put(&mut c.s3.security_token, s3::parse_word(v).map(Some))),
    Flag::value("s3-session-token", "RUSTUS_S3_SESSION_TOKEN", "TOKEN")
        .help("S3 session token (used when no security token is given)")
        .doc("the same, used when no security token is given (as rust-s3 does for rustus)")
        .example("IQoJb3JpZ2luEXAMPLE")
        .parse(|c, v| put(&mut c.s3.session_token, s3::parse_word(v).map(Some))),
    Flag::value("s3-profile", "RUSTUS_S3_PROFILE", "NAME")
        .help("Section of ~/.aws/credentials to take keys from")
        .doc("the section of `~/.aws/credentials` keys are taken from when none is given")
        .example("uploads")
        .parse(|c, v| put(&mut c.s3.profile, s3::parse_word(v).map(Some))),
    Flag::value("s3-headers", "RUSTUS_S3_HEADERS", "JSON")
        .help("Extra headers for every S3 request, a JSON object")
        .doc(
            "extra headers sent with every S3 request, a JSON object such as \
             `{\"x-amz-acl\":\"public-read\"}` (a bad one stops the startup with the reason)",
        )
        .example("{\"x-amz-acl\":\"public-read\"}")
        .parse(|c, v| put(&mut c.s3.headers, s3::parse_headers(v))),
    Flag::switch("s3-force-path-style", "RUSTUS_S3_FORCE_PATH_STYLE")
        .help("Path-style bucket URLs (<url>/<bucket>/<key>)")
        .doc("path-style URLs, `<url>/<bucket>/<key>` (MinIO and most S3-compatible servers)")
        .parse(|c, v| put(&mut c.s3.force_path_style, parse_bool(v))),
    Flag::value(
        "s3-concat-concurrent-downloads",
        "RUSTUS_S3_CONCAT_CONCURRENT_DOWNLOADS",
        "N",
    )
    .default("10")
    .help("Accepted for rustus; finals are assembled from local files")
    .doc(
        "accepted for rustus compatibility (1-65535); tusring assembles a final from the \
         local part files, so it downloads nothing",
    )
    .example("4")
    .parse(|c, v| {
        put(
            &mut c.s3.concat_concurrent_downloads,
            parse_count(v, 1, 65_535),
        )
    }),
];

const TIMEOUTS: &[Flag] = &[
    Flag::value("shutdown-timeout", "RUSTUS_SHUTDOWN_TIMEOUT", "SECS")
        .default("10")
        .help("Grace period for in-flight requests after SIGTERM")
        .doc("seconds in-flight requests get after SIGTERM")
        .env_note(
            "Grace period after SIGTERM. Raising it? Keep the unit's TimeoutStopSec= above \
             it + 10 s.",
        )
        .example("3")
        .parse(|c, v| put(&mut c.shutdown_timeout, parse_secs(v))),
    Flag::value("head-timeout", "RUSTUS_HEAD_TIMEOUT", "SECS")
        .default("30")
        .help("Time allowed to receive a complete request head")
        .doc("seconds to receive a complete request head")
        .example("4")
        .parse(|c, v| put(&mut c.head_timeout, parse_secs(v))),
    Flag::value("idle-timeout", "RUSTUS_IDLE_TIMEOUT", "SECS")
        .default("60")
        .help("How long an idle keep-alive connection is kept open")
        .doc("seconds an idle keep-alive connection stays open")
        .example("5")
        .parse(|c, v| put(&mut c.idle_timeout, parse_secs(v))),
    Flag::value("body-timeout", "RUSTUS_BODY_TIMEOUT", "SECS")
        .default("30")
        .help("How long a request body may stall before the request fails")
        .doc("seconds a body may stall; its bytes so far are kept, the answer is 408")
        .example("6")
        .parse(|c, v| put(&mut c.body_timeout, parse_secs(v))),
];

const DATA_PATH: &[Flag] = &[
    Flag::switch("disable-splice", "RUSTUS_DISABLE_SPLICE")
        .help("Never splice bodies or downloads (zero-copy); buffered path only")
        .doc("never splice; every body, and every download, takes the buffered path")
        .parse(|c, v| put(&mut c.disable_splice, parse_bool(v))),
    Flag::value("body-buffer-size", "RUSTUS_BODY_BUFFER_SIZE", "SIZE")
        .default("256K")
        .help("Buffered path: each of an upload's two body buffers (4K-64M)")
        .doc("buffered path: each of an upload's two buffers (4K-64M)")
        .example("8K")
        .parse(|c, v| {
            put(
                &mut c.body_buffer_size,
                parse_size_within(v, 4 << 10, 64 << 20),
            )
        }),
    Flag::value("pipe-size", "RUSTUS_PIPE_SIZE", "SIZE")
        .default("1M")
        .help("Splice path: capacity asked for each connection's pipe (4K-64M)")
        .doc("splice path: capacity of each connection's pipe (4K-64M)")
        .example("8K")
        .parse(|c, v| put(&mut c.pipe_size, parse_size_within(v, 4 << 10, 64 << 20))),
    Flag::value("uring-entries", "RUSTUS_URING_ENTRIES", "N")
        .default("4096")
        .help("io_uring submission entries per core (power of two, 64-32768)")
        .doc("io_uring submission entries per core (a power of two, 64-32768)")
        .example("128")
        .parse(|c, v| put(&mut c.uring_entries, parse_uring_entries(v))),
];

const HOOKS: &[Flag] = &[
    Flag::value("hooks", "RUSTUS_HOOKS", "EVENTS")
        .default(DEFAULT_HOOKS)
        .help("Comma list of the events sent to the hooks")
        .doc(
            "comma list of the events sent to the hooks (see [Hooks](#hooks)); the default is \
             rustus's six: `pre-finish` fires only when listed",
        )
        .env_note("Events sent to the hooks.")
        .example("pre-create")
        .parse(|c, v| put(&mut c.hooks.events, EventSet::parse(v))),
    Flag::value("hooks-format", "RUSTUS_HOOKS_FORMAT", "FORMAT")
        .default("default")
        .help("Hook message format: default, v2 or tusd")
        .doc("`default`, `v2` or `tusd`")
        .env_note("Message format: default, v2 or tusd.")
        .example("tusd")
        .parse(|c, v| put(&mut c.hooks.format, HookFormat::parse(v))),
    Flag::switch("hooks-answers", "RUSTUS_HOOKS_ANSWERS")
        .help("Read tusd v2 answers from blocking hooks")
        .doc(
            "read a tusd v2 answer from each blocking hook (an HTTP hook's 2xx body, an \
             executable's stdout, a NATS reply): choose a new upload's ID and metadata, \
             refuse with a response of its own, answer the request that completes an upload \
             (pre-finish), stop an upload from post-receive (see [Hook \
             answers](#hook-answers)); off, hooks only say yes or no, as in rustus",
        )
        .env_note("Read tusd v2 answers from blocking hooks (off: yes or no only, as rustus).")
        .parse(|c, v| put(&mut c.hooks.answers, parse_bool(v))),
    Flag::value("hooks-file", "RUSTUS_HOOKS_FILE", "PATH")
        .unset("none")
        .help("Executable run for every event, as <path> <event> <json>")
        .doc("executable run for every event: `<path> <event> <json>`")
        .env_note(
            "An executable run for every event, a directory of executables named after the events, \
             and URLs that get a POST of every event (comma-separated); none by default. Hook \
             scripts can live in /etc/tusring/hooks (read-only for the service).",
        )
        .example("/srv/hook")
        .parse_path(|c, v| put(&mut c.hooks.exec.file, non_empty_path(v).map(Some))),
    Flag::value("hooks-dir", "RUSTUS_HOOKS_DIR", "DIR")
        .unset("none")
        .help("Directory of executables named after the events")
        .doc("directory of executables named after the events: `<dir>/<event> <json>`")
        .example("/srv/hooks")
        .parse_path(|c, v| put(&mut c.hooks.exec.dir, non_empty_path(v).map(Some))),
    Flag::value("hooks-http-urls", "RUSTUS_HOOKS_HTTP_URLS", "URLS")
        .unset("none")
        .help("Comma list of URLs that get a POST of every event")
        .doc("comma list of `http://`/`https://` URLs that get a POST of every event")
        .example("http://h/x")
        .parse(|c, v| put(&mut c.hooks.http.urls, parse_hook_urls(v))),
    Flag::value("hooks-http-proxy-headers", "RUSTUS_HOOKS_HTTP_PROXY_HEADERS", "HEADERS")
        .unset("none")
        .help("Client headers (comma list) copied onto HTTP hook requests")
        .doc("comma list of client headers copied onto the hook POSTs (e.g. `Authorization`)")
        .env_note("Client headers (comma-separated) copied onto HTTP hook requests.")
        .example("Authorization")
        .parse(|c, v| put(&mut c.hooks.http.proxy_headers, parse_header_names(v))),
    Flag::value("http-hook-timeout", "RUSTUS_HTTP_HOOK_TIMEOUT", "SECS")
        .default("2")
        .help("Time allowed for one HTTP hook request, redirects included")
        .doc("seconds one HTTP hook request may take, redirects included")
        .example("7")
        .parse(|c, v| put(&mut c.hooks.http.timeout, parse_secs(v))),
    Flag::value("hook-timeout", "RUSTUS_HOOK_TIMEOUT", "SECS")
        .default("30")
        .help("Time an executable hook may run before it is killed")
        .doc("seconds an executable hook may run; then it is killed (with what it started)")
        .example("8")
        .parse(|c, v| put(&mut c.hooks.exec.timeout, parse_secs(v))),
    Flag::value("hooks-workers", "RUSTUS_HOOKS_WORKERS", "N")
        .computed("2 per worker, 2-64", |c| {
            c.hooks.workers = crate::hooks::default_workers(c.workers)
        })
        .help("Hook worker threads (1-1024)")
        .doc("hook worker threads (1-1024; none are started when no notifier can refuse, e.g. AMQP alone)")
        .env_note(
            "Hook worker threads (default: 2 per core, between 2 and 64). Each counts in the \
             unit's TasksMax=, as does each running hook process.",
        )
        .example("7")
        .parse(|c, v| put(&mut c.hooks.workers, parse_count(v, 1, MAX_HOOK_WORKERS))),
    Flag::value("hooks-queue", "RUSTUS_HOOKS_QUEUE", "N")
        .default("1024")
        .help("Events that may wait for a hook worker (per queue: pre, post)")
        .doc("events that may wait for a worker, per queue (pre-hooks, post-events)")
        .example("9")
        .parse(|c, v| put(&mut c.hooks.queue, parse_count(v, 1, MAX_HOOK_QUEUE))),
    Flag::value("hooks-http-retries", "RUSTUS_HOOKS_HTTP_RETRIES", "N")
        .default("3")
        .help("Retries of a failed HTTP post-hook (0-100)")
        .doc(
            "retries of a failed HTTP post-hook (transport errors, timeouts, 5xx, 408, 429); a \
             superseded `post-receive` is not retried (see [Hooks](#hooks))",
        )
        .example("0")
        .parse(|c, v| put(&mut c.hooks.retry.retries, parse_count(v, 0, 100).map(|n| n as u32))),
    Flag::value("hooks-http-retry-backoff", "RUSTUS_HOOKS_HTTP_RETRY_BACKOFF", "SECS")
        .default("0.5")
        .help("Pause before the first HTTP post-hook retry; doubles each retry")
        .doc("seconds before the first retry; doubles at each retry")
        .example("2")
        .parse(|c, v| put(&mut c.hooks.retry.backoff, parse_secs(v))),
];

const NATS_HOOKS: &[Flag] = &[
    Flag::value("hooks-nats-urls", "RUSTUS_HOOKS_NATS_URLS", "URLS")
        .unset("off")
        .help("Comma list of nats:// server URLs; turns the NATS notifier on")
        .doc(
            "comma list of `nats://host:port` servers: turns the [NATS notifier](#nats) on \
             (no `tls://` in this build)",
        )
        .env_sample("nats://localhost:4222")
        .example("nats://h:4222")
        .parse(|c, v| put(&mut c.hooks.nats.urls, nats::parse_urls(v))),
    Flag::value("hooks-nats-subject", "RUSTUS_HOOKS_NATS_SUBJECT", "SUBJECT")
        .unset("the event name")
        .help("One subject for every event (not with --hooks-nats-prefix)")
        .doc("one subject for every event; not with `--hooks-nats-prefix`")
        .env_note("One subject for every event, or subjects PREFIX.EVENT; default: the event name.")
        .example("s")
        .parse(|c, v| put(&mut c.hooks.nats.subject, nats::parse_subject(v).map(Some))),
    Flag::value("hooks-nats-prefix", "RUSTUS_HOOKS_NATS_PREFIX", "PREFIX")
        .unset("none")
        .help("Subjects are PREFIX.EVENT")
        .doc("each event goes to subject `<prefix>.<event>`")
        .example("p")
        .parse(|c, v| put(&mut c.hooks.nats.prefix, nats::parse_subject(v).map(Some))),
    Flag::switch(
        "hooks-nats-wait-for-replies",
        "RUSTUS_HOOKS_NATS_WAIT_FOR_REPLIES",
    )
    .help("Send requests; a reply other than empty or OK refuses a pre-hook")
    .doc(
        "send each event as a request; a reply other than empty or `OK` refuses a \
             pre-hook's request (400, the reply as body)",
    )
    .env_note("Requests: a reply other than empty or OK refuses a pre-hook's request (400).")
    .parse(|c, v| put(&mut c.hooks.nats.wait_for_replies, parse_bool(v))),
    Flag::value("hooks-nats-user", "RUSTUS_HOOKS_NATS_USER", "USER")
        .unset("none")
        .help("User name (with --hooks-nats-password)")
        .doc("user name; requires `--hooks-nats-password`")
        .env_note("User and password (each requires the other), or a token.")
        .example("u")
        .parse(|c, v| put(&mut c.hooks.nats.user, Ok(Some(v.to_owned())))),
    Flag::value(
        "hooks-nats-password",
        "RUSTUS_HOOKS_NATS_PASSWORD",
        "PASSWORD",
    )
    .unset("none")
    .help("Password (with --hooks-nats-user)")
    .doc("password; requires `--hooks-nats-user`")
    .example("pw")
    .parse(|c, v| put(&mut c.hooks.nats.password, Ok(Some(v.to_owned())))),
    Flag::value("hooks-nats-token", "RUSTUS_HOOKS_NATS_TOKEN", "TOKEN")
        .unset("none")
        .help("Token for the server's token authentication")
        .doc("token for the server's token authentication")
        .example("t")
        .parse(|c, v| put(&mut c.hooks.nats.token, Ok(Some(v.to_owned())))),
];

const AMQP_HOOKS: &[Flag] = &[
    Flag::value("hooks-amqp-url", "RUSTUS_HOOKS_AMQP_URL", "URL")
        .unset("off")
        .help("amqp:// URL of the broker; turns the AMQP notifier on")
        .doc(
            "`amqp://user:pass@host:port/vhost` of a RabbitMQ broker: turns the \
             [AMQP notifier](#amqp-rabbitmq-and-celery) on (no `amqps://` in this build)",
        )
        .env_sample("amqp://guest:guest@localhost:5672")
        .example("amqp://h")
        .parse(|c, v| put(&mut c.hooks.amqp.url, amqp::parse_url(v).map(Some))),
    Flag::value(
        "hooks-amqp-queues-prefix",
        "RUSTUS_HOOKS_AMQP_QUEUES_PREFIX",
        "PREFIX",
    )
    .default("rustus")
    .help("Routing keys and queues are PREFIX.EVENT")
    .doc("without a routing key, each event goes to routing key (and queue) `<prefix>.<event>`")
    .env_note("Without a routing key, each event goes to routing key PREFIX.EVENT.")
    .example("p")
    .parse(|c, v| put(&mut c.hooks.amqp.queues_prefix, amqp::parse_name(v))),
    Flag::value("hooks-amqp-exchange", "RUSTUS_HOOKS_AMQP_EXCHANGE", "NAME")
        .default("rustus")
        .help("Exchange the events are published to")
        .doc("exchange the events are published to")
        .example("e")
        .parse(|c, v| put(&mut c.hooks.amqp.exchange, amqp::parse_name(v))),
    Flag::value(
        "hooks-amqp-exchange-kind",
        "RUSTUS_HOOKS_AMQP_EXCHANGE_KIND",
        "KIND",
    )
    .default("topic")
    .help("Exchange kind: direct, fanout, topic, headers, x-...")
    .doc(
        "kind of a declared exchange: `direct`, `fanout`, `topic`, `headers` or a \
             plugin's `x-…` kind",
    )
    .env_note("direct, fanout, topic, headers or a plugin's x-... kind.")
    .example("fanout")
    .parse(|c, v| {
        put(
            &mut c.hooks.amqp.exchange_kind,
            amqp::parse_exchange_kind(v),
        )
    }),
    Flag::value(
        "hooks-amqp-routing-key",
        "RUSTUS_HOOKS_AMQP_ROUTING_KEY",
        "KEY",
    )
    .unset("PREFIX.EVENT")
    .help("One routing key (and one queue) for every event")
    .doc("one routing key (and one queue) for every event")
    .example("k")
    .parse(|c, v| put(&mut c.hooks.amqp.routing_key, amqp::parse_name(v).map(Some))),
    Flag::switch(
        "hooks-amqp-declare-exchange",
        "RUSTUS_HOOKS_AMQP_DECLARE_EXCHANGE",
    )
    .help("Declare the exchange on every connect")
    .doc("declare the exchange at every connect")
    .parse(|c, v| put(&mut c.hooks.amqp.declare_exchange, parse_bool(v))),
    Flag::switch(
        "hooks-amqp-declare-queues",
        "RUSTUS_HOOKS_AMQP_DECLARE_QUEUES",
    )
    .help("Declare and bind the event queues on every connect")
    .doc(
        "declare the six event queues (or the routing-key queue) at every connect, \
             each bound with binding key = its name",
    )
    .parse(|c, v| put(&mut c.hooks.amqp.declare_queues, parse_bool(v))),
    Flag::switch(
        "hooks-amqp-durable-exchange",
        "RUSTUS_HOOKS_AMQP_DURABLE_EXCHANGE",
    )
    .alias("hooks_amqp_durable_exchange")
    .help("A declared exchange is durable")
    .doc("a declared exchange is durable")
    .parse(|c, v| put(&mut c.hooks.amqp.durable_exchange, parse_bool(v))),
    Flag::switch(
        "hooks-amqp-durable-queues",
        "RUSTUS_HOOKS_AMQP_DURABLE_QUEUES",
    )
    .help("Declared queues are durable and messages persistent")
    .doc("declared queues are durable, and messages are published persistent")
    .env_note("Durable queues also make the messages persistent.")
    .parse(|c, v| put(&mut c.hooks.amqp.durable_queues, parse_bool(v))),
    Flag::switch("hooks-amqp-auto-delete", "RUSTUS_HOOKS_AMQP_AUTO_DELETE")
        .help("A declared exchange and queues are auto-delete")
        .doc("a declared exchange and queues are auto-delete")
        .parse(|c, v| put(&mut c.hooks.amqp.auto_delete, parse_bool(v))),
    Flag::switch("hooks-amqp-celery", "RUSTUS_HOOKS_AMQP_CELERY")
        .help("Publish Celery tasks rustus.EVENT (protocol v2)")
        .doc("publish Celery protocol v2 tasks `rustus.<event>`")
        .env_note("Celery protocol v2 task messages, tasks rustus.EVENT.")
        .parse(|c, v| put(&mut c.hooks.amqp.celery, parse_bool(v))),
    Flag::value("hooks-amqp-queue-size", "RUSTUS_HOOKS_AMQP_QUEUE_SIZE", "N")
        .default("100000")
        .help("Events held while the broker is away; the oldest go first")
        .doc(
            "events held in memory while the broker is away or slow; past it the oldest \
             are dropped (logged, counted)",
        )
        .example("3")
        .parse(|c, v| {
            put(
                &mut c.hooks.amqp.queue_size,
                parse_count(v, 1, amqp::MAX_QUEUE_SIZE),
            )
        }),
    Flag::value(
        "hooks-amqp-connection-pool-size",
        "RUSTUS_HOOKS_AMQP_CONNECTION_POOL_SIZE",
        "N",
    )
    .default("10")
    .help("Accepted for rustus; tusring uses one connection")
    .doc("accepted for rustus compatibility (1-65535); tusring publishes over one connection")
    .env_note("Accepted for rustus: tusring publishes over one connection and one channel.")
    .example("4")
    .parse(|c, v| {
        put(
            &mut c.hooks.amqp.connection_pool_size,
            parse_count(v, 1, 65_535),
        )
    }),
    Flag::value(
        "hooks-amqp-channel-pool-size",
        "RUSTUS_HOOKS_AMQP_CHANNEL_POOL_SIZE",
        "N",
    )
    .default("10")
    .help("Accepted for rustus; tusring uses one channel")
    .doc("accepted for rustus compatibility (1-65535); tusring publishes over one channel")
    .example("5")
    .parse(|c, v| {
        put(
            &mut c.hooks.amqp.channel_pool_size,
            parse_count(v, 1, 65_535),
        )
    }),
    Flag::value(
        "hooks-amqp-idle-connection-timeout",
        "RUSTUS_HOOKS_AMQP_IDLE_CONNECTION_TIMEOUT",
        "SECS",
    )
    .unset("never")
    .help("Close the connection after this long without events")
    .doc(
        "seconds without an event after which the connection is closed (the next \
             event reopens it)",
    )
    .env_note("Close the connection after this many idle seconds (reopened by the next event).")
    .example("6")
    .parse(|c, v| {
        put(
            &mut c.hooks.amqp.idle_connection_timeout,
            parse_secs(v).map(Some),
        )
    }),
    Flag::value(
        "hooks-amqp-idle-channels-timeout",
        "RUSTUS_HOOKS_AMQP_IDLE_CHANNELS_TIMEOUT",
        "SECS",
    )
    .unset("never")
    .help("Close the channel (and connection) after this idle time")
    .doc(
        "the same for the channel; tusring's one channel lives as long as its \
             connection, so the shorter of the two applies",
    )
    .example("7")
    .parse(|c, v| {
        put(
            &mut c.hooks.amqp.idle_channels_timeout,
            parse_secs(v).map(Some),
        )
    }),
];

/// Every supported flag, in table order; the index of a flag here is its slot in
/// `RawArgs`.
pub(super) fn flags() -> impl Iterator<Item = &'static Flag> {
    SECTIONS.iter().flat_map(|section| section.flags)
}

/// A rustus flag tusring recognises but does not implement. Using it is an error naming
/// it; its environment variable is ignored.
#[derive(Debug)]
pub(super) struct Unsupported {
    pub long: &'static str,
    /// A second spelling rustus accepts.
    pub alias: Option<&'static str>,
    /// The feature the flag belongs to, as `--help` groups them.
    pub feature: &'static str,
}

const fn unsupported(long: &'static str, feature: &'static str) -> Unsupported {
    Unsupported {
        long,
        alias: None,
        feature,
    }
}

const SENTRY: &str = "Sentry";
const AMQP: &str = "AMQP hooks";
const KAFKA: &str = "Kafka hooks";
const NATS: &str = "NATS hooks";

/// rustus's flags that tusring does not implement (`rustus-compat.md` §1.2-§1.5). When a
/// feature lands, its rows move from here into `SECTIONS`.
pub(super) const UNSUPPORTED: &[Unsupported] = &[
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
];

/// The features of `UNSUPPORTED`, in table order.
pub(super) fn unsupported_features() -> Vec<&'static str> {
    let mut features: Vec<&str> = Vec::new();
    for row in UNSUPPORTED {
        if !features.contains(&row.feature) {
            features.push(row.feature);
        }
    }
    features
}

impl Unsupported {
    pub(super) fn error(&self, spelled: &str) -> ConfigError {
        let message = format!("'{spelled}' is not supported by tusring ({})", self.feature);
        ConfigError::new(spelled, message)
    }
}
