//! The configuration's tests: through `load`, as `main` calls it, and of the parsers and
//! the table directly.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::dotenv::parse_dotenv;
use super::help::HELP_WIDTH;
use super::row::Fallback;
use super::sources::find_flag;
use super::table::{flags, DEFAULT_EXTENSIONS, UNSUPPORTED};
use super::validated::affinity_cpus;
use super::values::{check_dir_structure, normalize_url, parse_bool, parse_secs, parse_size};
use super::*;
use crate::hooks::{EventSet, Format as HookFormat};
use crate::limits::{MAX_TIMEOUT_SECS, MAX_WORKERS};

pub(super) fn run(
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

pub(super) fn config_of(args: &[&str], env: &[(&str, &str)], dotenv: Option<&str>) -> Config {
    match run(args, env, dotenv) {
        Ok(Action::Run(config)) => config,
        other => panic!("expected a config for {args:?}, got {other:?}"),
    }
}

pub(super) fn cfg(args: &[&str]) -> Config {
    config_of(args, &[], None)
}

pub(super) fn error_of(args: &[&str], env: &[(&str, &str)], dotenv: Option<&str>) -> ConfigError {
    match run(args, env, dotenv) {
        Err(err) => err,
        Ok(action) => panic!("expected an error for {args:?}, got {action:?}"),
    }
}

pub(super) fn err(args: &[&str]) -> ConfigError {
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
fn table_names_are_unique() {
    let mut longs: Vec<&str> = flags().map(|f| f.long).collect();
    longs.extend(flags().filter_map(|f| f.alias));
    longs.extend(UNSUPPORTED.iter().map(|u| u.long));
    longs.extend(UNSUPPORTED.iter().filter_map(|u| u.alias));
    longs.extend(["help", "version"]);
    let total = longs.len();
    longs.sort_unstable();
    longs.dedup();
    assert_eq!(longs.len(), total, "a long name appears twice");
    let mut envs: Vec<&str> = flags().map(|f| f.env).collect();
    envs.sort_unstable();
    envs.dedup();
    assert_eq!(envs.len(), flags().count());
    for flag in flags() {
        assert!(flag.env.starts_with("RUSTUS_"), "{}", flag.env);
    }
}

/// Every row, through every source: its example (a switch's `true`) given as
/// `--long=V`, `--long V`, by its alias and short form, by its variable and by a `.env`
/// line gives one and the same config, which differs from the default (unless the
/// example is the default: the storages have one valid value). A switch given `false`
/// gives the default. So every row's parse reaches `Config`, in every form, with no list
/// of flags to keep here.
#[test]
fn every_row_through_every_source() {
    let shown = |config: &Config| format!("{config:?}");
    let default = shown(&cfg(&[]));
    for flag in flags() {
        assert!(!flag.example.is_empty(), "--{} has no example", flag.long);
        let spellings: Vec<String> = [Some(flag.long), flag.alias]
            .into_iter()
            .flatten()
            .map(|long| format!("--{long}"))
            .collect();
        let value = flag.example;
        let mut forms: Vec<Vec<String>> = Vec::new();
        for name in &spellings {
            forms.push(vec![format!("{name}={value}")]);
            if flag.is_switch() {
                forms.push(vec![name.clone()]);
            } else {
                forms.push(vec![name.clone(), value.to_owned()]);
            }
        }
        if let Some(short) = flag.short {
            forms.push(vec![format!("-{short}"), value.to_owned()]);
            forms.push(vec![format!("-{short}{value}")]);
            forms.push(vec![format!("-{short}={value}")]);
        }
        let by_flag = |args: &[String]| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            shown(&cfg(&args))
        };
        let expected = by_flag(&forms[0]);
        for args in &forms[1..] {
            assert_eq!(by_flag(args), expected, "{args:?}");
        }
        let by_env = config_of(&[], &[(flag.env, value)], None);
        assert_eq!(shown(&by_env), expected, "{}={value}", flag.env);
        // Double quotes around the value, or single ones around a value holding double
        // quotes (a JSON example).
        let quoted = if value.contains('"') {
            format!("'{value}'")
        } else {
            format!("\"{value}\"")
        };
        let by_dotenv = config_of(&[], &[], Some(&format!("{}={quoted}", flag.env)));
        assert_eq!(shown(&by_dotenv), expected, "{}={value} in .env", flag.env);
        let is_default = matches!(flag.fallback, Fallback::Value(v) if v == value);
        if !is_default {
            assert_ne!(expected, default, "--{}={value} changes nothing", flag.long);
        }
        if flag.is_switch() {
            for off in [
                cfg(&[&format!("--{}=false", flag.long)]),
                config_of(&[], &[(flag.env, "false")], None),
            ] {
                assert_eq!(shown(&off), default, "--{}=false", flag.long);
            }
        }
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
    assert!(!c.allow_empty && !c.remove_parts && !c.hooks.behind_proxy);
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
            format!("{:?}", c.hooks.events)
        }),
        ("--hooks-format=tusd", "tusd", |c| {
            c.hooks.format.name().to_owned()
        }),
        ("--hooks-file=/srv/hook", "/srv/hook", |c| {
            format!("{:?}", c.hooks.exec.file)
        }),
        ("--hooks-dir=/srv/hooks", "/srv/hooks", |c| {
            format!("{:?}", c.hooks.exec.dir)
        }),
        ("--hooks-http-urls=http://h/x", "http://h/x", |c| {
            c.hooks.http.urls.join(",")
        }),
        (
            "--hooks-http-proxy-headers=Authorization",
            "Authorization",
            |c| c.hooks.http.proxy_headers.join(","),
        ),
        ("--http-hook-timeout=7", "7", |c| {
            format!("{:?}", c.hooks.http.timeout)
        }),
        ("--hook-timeout=8", "8", |c| {
            format!("{:?}", c.hooks.exec.timeout)
        }),
        ("--hooks-workers=7", "7", |c| c.hooks.workers.to_string()),
        ("--hooks-queue=9", "9", |c| c.hooks.queue.to_string()),
        ("--hooks-http-retries=0", "0", |c| {
            c.hooks.retry.retries.to_string()
        }),
        ("--hooks-http-retry-backoff=2", "2", |c| {
            format!("{:?}", c.hooks.retry.backoff)
        }),
        ("--max-connections=3", "3", |c| {
            c.max_connections.to_string()
        }),
        ("--backlog=16", "16", |c| c.backlog.to_string()),
        ("--log-format=json", "json", |c| {
            format!("{:?}", c.log_format)
        }),
        ("--hooks-amqp-url=amqp://h", "amqp://h", |c| {
            c.hooks.amqp.url.clone().unwrap_or_default()
        }),
        ("--hooks-amqp-queues-prefix=p", "p", |c| {
            c.hooks.amqp.queues_prefix.clone()
        }),
        ("--hooks-amqp-exchange=e", "e", |c| {
            c.hooks.amqp.exchange.clone()
        }),
        ("--hooks-amqp-exchange-kind=fanout", "fanout", |c| {
            c.hooks.amqp.exchange_kind.clone()
        }),
        ("--hooks-amqp-routing-key=k", "k", |c| {
            c.hooks.amqp.routing_key.clone().unwrap_or_default()
        }),
        ("--hooks-amqp-queue-size=3", "3", |c| {
            c.hooks.amqp.queue_size.to_string()
        }),
        ("--hooks-amqp-connection-pool-size=4", "4", |c| {
            c.hooks.amqp.connection_pool_size.to_string()
        }),
        ("--hooks-amqp-channel-pool-size=5", "5", |c| {
            c.hooks.amqp.channel_pool_size.to_string()
        }),
        ("--hooks-amqp-idle-connection-timeout=6", "6", |c| {
            format!("{:?}", c.hooks.amqp.idle_connection_timeout)
        }),
        ("--hooks-amqp-idle-channels-timeout=7", "7", |c| {
            format!("{:?}", c.hooks.amqp.idle_channels_timeout)
        }),
    ];
    for (joined, value, get) in cases {
        let (name, _) = joined.split_once('=').unwrap();
        let (_, flag) = find_flag(name).unwrap();
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
        ("--behind-proxy", |c| c.hooks.behind_proxy),
        ("--disable-health-access-log", |c| {
            c.disable_health_access_log
        }),
        ("--force-fsync", |c| c.force_fsync),
        ("--disable-splice", |c| c.disable_splice),
        ("--pin-cores", |c| c.pin_cores),
        ("--disable-access-log", |c| c.disable_access_log),
        ("--hooks-amqp-declare-exchange", |c| {
            c.hooks.amqp.declare_exchange
        }),
        ("--hooks-amqp-declare-queues", |c| {
            c.hooks.amqp.declare_queues
        }),
        ("--hooks-amqp-durable-exchange", |c| {
            c.hooks.amqp.durable_exchange
        }),
        ("--hooks_amqp_durable_exchange", |c| {
            c.hooks.amqp.durable_exchange
        }),
        ("--hooks-amqp-durable-queues", |c| {
            c.hooks.amqp.durable_queues
        }),
        ("--hooks-amqp-auto-delete", |c| c.hooks.amqp.auto_delete),
        ("--hooks-amqp-celery", |c| c.hooks.amqp.celery),
    ];
    for (name, get) in switches {
        let (_, flag) = find_flag(name).unwrap();
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
    for flag in flags() {
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
    let e = err(&["--storage", "s3"]);
    assert_eq!(e.flag, "--storage");
    assert!(e.message.contains("not supported by tusring"), "{e}");
    assert!(e.message.contains("use hybrid-s3"), "{e}");
    assert_eq!(cfg(&["--storage", "hybrid-s3"]).storage, "hybrid-s3");
    let e = err(&["--storage", "disk"]);
    assert!(e.message.contains("unknown storage 'disk'") && e.message.contains("file-storage"));
    assert!(e.message.contains("hybrid-s3"), "{e}");
    let e = error_of(&[], &[("RUSTUS_STORAGE", "s3")], None);
    assert!(e.message.contains("RUSTUS_STORAGE (--storage)"), "{e}");

    let e = err(&["-i", "db-info-storage"]);
    assert_eq!(e.flag, "--info-storage");
    assert!(
        e.message.contains("Unknown info storage 'db-info-storage'"),
        "{e}"
    );
    assert!(e.message.contains("file-info-storage, redis-info-storage"));
}

#[test]
fn redis_info_storage_flags() {
    let c = cfg(&[]);
    assert_eq!(c.info_storage, "file-info-storage");
    assert_eq!(c.info_db_dsn, None);
    assert_eq!(c.redis_info_expiration, None);
    assert_eq!(c.redis_lock_expiration, Duration::from_secs(5));
    // rustus's flags and variables.
    let c = config_of(
        &[],
        &[
            ("RUSTUS_INFO_STORAGE", "redis-info-storage"),
            ("RUSTUS_INFO_DB_DSN", "redis://user:pw@10.0.0.5:6380/2"),
            ("RUSTUS_REDIS_INFO_EXPIRATION", "3600"),
        ],
        None,
    );
    assert_eq!(c.info_storage, "redis-info-storage");
    assert_eq!(
        c.info_db_dsn.as_deref(),
        Some("redis://user:pw@10.0.0.5:6380/2")
    );
    assert_eq!(c.redis_info_expiration, Some(Duration::from_secs(3600)));
    let c = cfg(&[
        "-i",
        "redis-info-storage",
        "--info-db-dsn",
        "redis+unix:///run/redis.sock",
        "--redis-lock-expiration",
        "2.5",
    ]);
    assert_eq!(
        c.info_db_dsn.as_deref(),
        Some("redis+unix:///run/redis.sock")
    );
    assert_eq!(c.redis_lock_expiration, Duration::from_millis(2500));
    // Refused with the reason.
    for (args, says) in [
        (
            &["--info-db-dsn", "localhost:6379"][..],
            "expected a Redis URL",
        ),
        (&["--info-db-dsn", "rediss://h/0"], "TLS"),
        (&["--redis-info-expiration", "0"], "greater than 0"),
        (&["--redis-info-expiration", "1.5"], "whole seconds"),
        (&["--redis-lock-expiration", "0.5"], "between 1 and 3600"),
        (&["--redis-lock-expiration", "3601"], "between 1 and 3600"),
    ] {
        let e = err(args);
        assert_eq!(e.flag, args[0], "{args:?}");
        assert!(e.message.contains(says), "{args:?}: {e}");
    }
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
        "--sentry-dsn",
        "--sentry-sample-rate",
        "--hooks-kafka-urls",
        "--hooks-kafka-topic",
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
        ("RUSTUS_SENTRY_DSN", "https://key@sentry.example/1"),
        ("RUSTUS_HOOKS_KAFKA_URLS", "a:1"),
    ];
    let dotenv = "RUSTUS_HOOKS_KAFKA_TOPIC=x\nRUSTUS_HOOKS_KAFKA_PREFIX=x\n";
    let c = config_of(&[], &env, Some(dotenv));
    assert_eq!(c.port, 1081);
    assert!(c.hooks.exec.file.is_none() && c.hooks.http.urls.is_empty());
}

#[test]
fn nats_flags() {
    let c = cfg(&[]);
    assert!(!c.hooks.nats.is_on());
    assert_eq!(c.hooks.nats, crate::hooks::nats::NatsConfig::default());
    let c = cfg(&[
        "--hooks-nats-urls",
        "nats://a:4222, b:4223",
        "--hooks-nats-prefix",
        "tus.hooks",
        "--hooks-nats-wait-for-replies",
        "--hooks-nats-user",
        "u",
        "--hooks-nats-password",
        "p w",
    ]);
    let n = &c.hooks.nats;
    assert_eq!(n.urls, ["nats://a:4222", "b:4223"]);
    assert_eq!(n.prefix.as_deref(), Some("tus.hooks"));
    assert_eq!(
        n.subject(crate::hooks::Event::PostFinish),
        "tus.hooks.post-finish"
    );
    assert!(n.wait_for_replies);
    assert_eq!(
        (n.user.as_deref(), n.password.as_deref()),
        (Some("u"), Some("p w"))
    );
    // rustus's variables, from the environment and from .env.
    let c = config_of(
        &[],
        &[
            ("RUSTUS_HOOKS_NATS_URLS", "nats://n:4222"),
            ("RUSTUS_HOOKS_NATS_SUBJECT", "uploads"),
        ],
        Some("RUSTUS_HOOKS_NATS_TOKEN=s3cret\nRUSTUS_HOOKS_NATS_WAIT_FOR_REPLIES=true\n"),
    );
    let n = &c.hooks.nats;
    assert!(n.is_on() && n.wait_for_replies);
    assert_eq!(n.subject(crate::hooks::Event::PreCreate), "uploads");
    assert_eq!(n.token.as_deref(), Some("s3cret"));
    // The secrets stay out of debug output (logged configuration).
    assert!(!format!("{n:?}").contains("s3cret"));
    // Combinations rustus refuses: a usage error naming the flag (only with NATS on).
    for (args, flag, says) in [
        (
            &["--hooks-nats-subject", "a", "--hooks-nats-prefix", "b"][..],
            "--hooks-nats-subject",
            "cannot be used together",
        ),
        (
            &["--hooks-nats-user", "u"][..],
            "--hooks-nats-user",
            "requires --hooks-nats-password",
        ),
        (
            &["--hooks-nats-password", "p"][..],
            "--hooks-nats-password",
            "requires --hooks-nats-user",
        ),
    ] {
        let mut all = vec!["--hooks-nats-urls", "nats://a:4222"];
        all.extend_from_slice(args);
        let e = err(&all);
        assert_eq!(e.flag, flag, "{args:?}");
        assert!(e.message.contains(says), "{args:?}: {e}");
        assert!(cfg(args).hooks.nats.urls.is_empty());
    }
    for (flag, value, says) in [
        ("--hooks-nats-urls", "tls://a:4222", "only nats://"),
        ("--hooks-nats-urls", "http://a", "expected a nats://"),
        ("--hooks-nats-urls", ",", "no URL"),
        ("--hooks-nats-subject", "a b", "space"),
        ("--hooks-nats-prefix", "a.>", "wildcard"),
        ("--hooks-nats-prefix", "a..b", "empty token"),
    ] {
        let e = err(&[flag, value]);
        assert_eq!(e.flag, flag);
        assert!(e.message.contains(says), "{flag} {value}: {e}");
    }
}

/// Found by the config fuzz target: the NATS URL parser quotes the value back raw in
/// its reason, so a `\r` in the value split the one-line error in two.
#[test]
fn a_parser_reason_quoting_a_control_character_stays_on_one_line() {
    let e = err(&["--hooks-nats-urls", "E\0\0\u{4}S\0\rTU"]);
    assert_eq!(e.flag, "--hooks-nats-urls");
    assert!(!e.message.contains(char::is_control), "{:?}", e.message);
    assert!(e.message.contains("\\r"), "{:?}", e.message);
}

#[test]
fn s3_flags() {
    let c = cfg(&[]);
    assert_eq!(
        c.s3,
        crate::storage::s3::S3Config {
            concat_concurrent_downloads: 10,
            ..Default::default()
        }
    );
    let c = config_of(
        &[
            "-s",
            "hybrid-s3",
            "--s3-url",
            "http://127.0.0.1:9000/",
            "--s3-force-path-style",
        ],
        &[
            ("RUSTUS_S3_BUCKET", "up"),
            ("RUSTUS_S3_REGION", "eu-west-1"),
            ("RUSTUS_S3_ACCESS_KEY_PATH", "/run/secrets/ak"),
            ("RUSTUS_S3_SECRET_KEY", "sk"),
            ("RUSTUS_S3_HEADERS", r#"{"x-amz-acl":"public-read"}"#),
        ],
        None,
    );
    let s = &c.s3;
    assert_eq!(s.url.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(
        (s.bucket.as_deref(), s.region.as_deref()),
        (Some("up"), Some("eu-west-1"))
    );
    assert_eq!(
        s.access_key_path.as_deref(),
        Some(std::path::Path::new("/run/secrets/ak"))
    );
    assert_eq!(s.secret_key.as_deref(), Some("sk"));
    assert_eq!(
        s.headers,
        [("x-amz-acl".to_owned(), "public-read".to_owned())]
    );
    assert!(s.force_path_style);
    // Secrets never reach the debug text (which a log line could show).
    assert!(!format!("{c:?}").contains("sk\""), "{c:?}");
    // A bad --s3-headers is an error naming the flag, not a panic (rustus panics).
    let e = err(&["--s3-headers", "x-amz-acl: public-read"]);
    assert_eq!(e.flag, "--s3-headers");
    assert!(e.message.contains("not JSON"), "{e}");
    let e = error_of(&[], &[("RUSTUS_S3_HEADERS", r#"{"a":1}"#)], None);
    assert!(
        e.message.contains("RUSTUS_S3_HEADERS (--s3-headers)"),
        "{e}"
    );
    assert!(err(&["--s3-url", "s3.example.com"])
        .message
        .contains("http://"));
    assert!(err(&["--s3-bucket", ""])
        .message
        .contains("must not be empty"));
}

#[test]
fn amqp_flags() {
    let c = cfg(&[]);
    let a = &c.hooks.amqp;
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
        let a = &c.hooks.amqp;
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
    let a = &c.hooks.amqp;
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
    assert_eq!(c.hooks.events, EventSet::rustus());
    assert_eq!(c.hooks.format, HookFormat::Default);
    assert_eq!(
        (c.hooks.exec.file.as_ref(), c.hooks.exec.dir.as_ref()),
        (None, None)
    );
    assert!(c.hooks.http.urls.is_empty() && c.hooks.http.proxy_headers.is_empty());
    assert_eq!(c.hooks.http.timeout, Duration::from_secs(2));
    assert_eq!(c.hooks.exec.timeout, Duration::from_secs(30));
    assert_eq!(c.hooks.workers, 6);
    assert_eq!(cfg(&["-w", "1"]).hooks.workers, 2);
    assert_eq!(cfg(&["-w", "1000"]).hooks.workers, 64);
    assert_eq!(c.hooks.queue, 1024);
    assert_eq!(c.hooks.retry.retries, 3);
    assert_eq!(c.hooks.retry.backoff, Duration::from_millis(500));
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
    let events: Vec<_> = c
        .hooks
        .events
        .iter()
        .map(crate::hooks::Event::name)
        .collect();
    assert_eq!(events, ["pre-create", "post-finish"]);
    assert_eq!(
        c.hooks.http.urls,
        ["http://a:8000/hooks", "https://b.example/x"]
    );
    assert_eq!(c.hooks.http.proxy_headers, ["Authorization", "X-Tenant-Id"]);
    assert_eq!(c.hooks.format, HookFormat::V2);
    // An explicitly empty list on the command line turns every event off; an empty
    // variable counts as unset (the default: all).
    assert!(cfg(&["--hooks="]).hooks.events.is_empty());
    assert_eq!(
        config_of(&[], &[("RUSTUS_HOOKS", "")], None).hooks.events,
        EventSet::rustus()
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
    assert_eq!(c.hooks.events.iter().count(), 1);
    assert_eq!(c.hooks.format, HookFormat::Tusd);
    assert_eq!(c.hooks.exec.dir, Some(PathBuf::from("/etc/tusring/hooks")));
    assert_eq!((c.hooks.workers, c.hooks.queue), (3, 5));
    assert_eq!(c.hooks.retry.retries, 1);
}

#[test]
fn bad_hook_values() {
    let e = err(&["--hooks", "pre-create,pre-receive"]);
    assert_eq!(e.flag, "--hooks");
    assert!(e.message.contains("unknown hook 'pre-receive'"), "{e}");
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
