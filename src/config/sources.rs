//! Stage 1, collecting: the command line (lexopt), then the environment, the `.env`
//! pairs and the table's defaults fill one raw value per flag, each remembering where it
//! came from so that an error can name it.

use std::ffi::OsString;

use super::error::shown;
use super::row::{Fallback, Flag};
use super::table::{flags, Unsupported, UNSUPPORTED};
use super::ConfigError;

/// Where a raw value came from; error messages name it.
#[derive(Debug, Clone)]
pub(super) enum Origin {
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
pub(super) struct Raw {
    pub value: OsString,
    pub origin: Origin,
}

/// One slot per flag of the table, in `table::flags()` order; `None` when no source
/// gave a value and the row has no default value.
#[derive(Debug)]
pub(super) struct RawArgs {
    pub values: Vec<Option<Raw>>,
}

pub(super) enum Parsed {
    Help,
    Version,
    Args(RawArgs),
}

/// The lexopt loop: fills slots from the command line; the last repeat of a flag wins.
pub(super) fn parse_args(args: Vec<OsString>) -> Result<Parsed, ConfigError> {
    use lexopt::Arg;

    let mut raw = RawArgs {
        values: vec![None; flags().count()],
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
        let Some((index, flag)) = find_flag(&spelled) else {
            return Err(match find_unsupported(&spelled) {
                Some(row) => row.error(&spelled),
                None => {
                    let message = format!("unknown flag '{}'", shown(&spelled));
                    ConfigError::new(spelled, message)
                }
            });
        };
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

/// The row for `--long`, `--alias` or `-s`, and its index in the table.
pub(super) fn find_flag(spelled: &str) -> Option<(usize, &'static Flag)> {
    if let Some(long) = spelled.strip_prefix("--") {
        flags()
            .enumerate()
            .find(|(_, f)| f.long == long || f.alias == Some(long))
    } else {
        let short = spelled.strip_prefix('-')?.chars().next()?;
        flags().enumerate().find(|(_, f)| f.short == Some(short))
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
    pub(super) fn fill(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        dotenv: &[(String, String)],
    ) {
        for (slot, flag) in self.values.iter_mut().zip(flags()) {
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

    /// The row named `--long` and its raw value, if it has one.
    pub(super) fn get(&self, long: &str) -> Option<(&'static Flag, &Raw)> {
        flags()
            .zip(&self.values)
            .find(|(flag, _)| flag.long == long)
            .and_then(|(flag, slot)| Some((flag, slot.as_ref()?)))
    }
}

impl Raw {
    /// "invalid value 'V' for SOURCE: WHY", naming the flag or variable the value came
    /// from.
    pub(super) fn invalid(&self, flag: &Flag, why: &str) -> ConfigError {
        let value = shown(&self.value.to_string_lossy());
        let source = match &self.origin {
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
}
