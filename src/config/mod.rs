//! Configuration: rustus's flags and `RUSTUS_*` environment variables, parsed and
//! validated.
//!
//! tusring is a drop-in replacement for rustus, so every flag name, short form,
//! environment variable and default here is rustus's (see `rustus-compat.md` §1), plus a
//! few settings of tusring's own that follow the same naming pattern.
//!
//! # One row per flag
//!
//! Everything about a flag is one row of the table (`table.rs`, rows of the type in
//! `row.rs`): its long and short names, environment variable, value placeholder,
//! default, `--help` line, README text, `systemd/tusring.env` note, an example value, and
//! its parse, which applies a value to the `Config` being built. The parser, the
//! environment lookup, the defaults, `--help`, the table tests and the generated docs all
//! read that table, so they cannot drift apart, and a row without a parse does not
//! compile. rustus flags that tusring recognises but does not implement are rows of
//! `UNSUPPORTED`: using one is an error naming the flag (never "unknown flag"), while
//! their environment variables are ignored, so a rustus env file keeps working.
//!
//! # Two stages
//!
//! Parsing follows ripgrep's split between collecting and deciding:
//!
//! 1. `sources::parse_args` runs the lexopt loop and fills a `RawArgs`: one optional raw
//!    value per row, each remembering where it came from (`Origin`). `--help` and
//!    `--version` stop here, before the environment or `.env` is even looked at. Then
//!    `RawArgs::fill` fills the rows the command line left empty from the environment,
//!    then from the `.env` file (`dotenv`), then from the table's defaults.
//! 2. `Config::from_raw` (`validated.rs`) applies each raw value with its row's parse
//!    (the value parsers are in `values.rs`), then the computed defaults, then resolves
//!    the listen address. An error names the flag, or the environment variable or `.env`
//!    line when the value came from there, so the user knows which line to fix.
//!
//! # Modules
//!
//! * `row`: what a row is (`Flag`, its `const fn` builder, `Fallback`, `Section`).
//! * `table`: the rows, in `--help` order, and the unsupported rustus flags.
//! * `sources`: the command line, the environment and the precedence between them.
//! * `dotenv`: the `.env` file's syntax.
//! * `values`: the value parsers and value types (sizes, seconds, extensions, ...).
//! * `validated`: the `Config` the daemon reads, and how it is built from raw values.
//! * `help`: `--help` and `--version`.
//! * `docs` (tests only): the README's flag table and `systemd/tusring.env`, generated
//!   from the table and checked to be current.
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

mod dotenv;
mod error;
mod help;
mod row;
mod sources;
mod table;
mod validated;
mod values;

#[cfg(test)]
mod docs;
#[cfg(test)]
mod tests;

pub use error::ConfigError;
pub use table::{MAX_HOOK_QUEUE, MAX_HOOK_WORKERS};
pub use validated::{default_workers, Config};
pub use values::{Extensions, LogFormat, LogLevel, MAX_EXPIRATION_SECS};

use dotenv::parse_dotenv;
use help::{help_text, version_text};
use sources::{parse_args, Parsed};

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

/// Every long flag name the parser knows (supported, their aliases, and rustus's
/// unsupported ones) and every environment variable it reads, for tools that generate
/// inputs (the `config` fuzz target).
pub fn known_names() -> (Vec<&'static str>, Vec<&'static str>) {
    let mut longs: Vec<&'static str> = table::flags()
        .flat_map(|flag| [Some(flag.long), flag.alias])
        .flatten()
        .collect();
    longs.extend(table::UNSUPPORTED.iter().map(|u| u.long));
    let envs = table::flags().map(|flag| flag.env).collect();
    (longs, envs)
}
