//! What one row of the flag table is: a flag's names, environment variable, value,
//! default, documentation, an example value, and how it applies a value to the `Config`
//! being built.
//!
//! Rows are written with `const fn` builders (`Flag::value(..).help(..)...parse(..)`):
//! `Flag::value` and `Flag::switch` start a [`Draft`], and only `Draft::parse` or
//! `Draft::parse_path` turns it into a [`Flag`]. The table is a list of `Flag`s, so a row
//! without a parse does not compile.

use std::ffi::OsStr;

use super::validated::Config;

/// How a row applies a value to the `Config` being built. The `Err` is the reason only;
/// the caller adds the flag and where the value came from.
#[derive(Clone, Copy)]
pub(super) enum Parse {
    /// The value must be UTF-8 text (every value but paths).
    Text(fn(&mut Config, &str) -> Result<(), String>),
    /// A path: any bytes the OS allows.
    Path(fn(&mut Config, &OsStr) -> Result<(), String>),
}

/// What a setting is when no flag, variable or `.env` line gives it.
#[derive(Clone, Copy)]
pub(super) enum Fallback {
    /// This text, parsed by the row like a given value, and shown as is in the docs.
    Value(&'static str),
    /// No value: the field keeps its blank value (`Config::blank`: none, empty). The
    /// text describes that for the docs (`unlimited`, `every origin`).
    Unset(&'static str),
    /// Computed by the function once every given value is applied, in table order (so
    /// it may read the fields of the rows above it). The text describes it for the docs.
    Computed(&'static str, fn(&mut Config)),
}

/// A heading of `--help`, of the README's table and of the environment file, with the
/// rows under it.
pub(super) struct Section {
    pub title: &'static str,
    /// A comment under the heading in `systemd/tusring.env` (may be empty; wrapped
    /// there, `\n` starts a new line).
    #[cfg_attr(not(test), allow(dead_code))] // read by the docs generator (tests)
    pub env_note: &'static str,
    pub flags: &'static [Flag],
}

/// One supported flag: the single source for parsing, environment lookup, defaults,
/// `--help`, the README's flag table and `systemd/tusring.env`.
pub(super) struct Flag {
    /// Long name without the dashes.
    pub long: &'static str,
    /// A second long name rustus accepts (see `--hooks_amqp_durable_exchange`).
    pub alias: Option<&'static str>,
    pub short: Option<char>,
    pub env: &'static str,
    /// Value placeholder for `--help`; `None` for a switch, which takes no value but
    /// accepts `--flag=BOOL`.
    pub value: Option<&'static str>,
    pub fallback: Fallback,
    /// One line for `--help`.
    pub help: &'static str,
    /// The README's "meaning" column (Markdown).
    #[cfg_attr(not(test), allow(dead_code))] // read by the docs generator (tests)
    pub doc: &'static str,
    /// A comment above the variable in `systemd/tusring.env` (may be empty; wrapped
    /// there, `\n` starts a new line).
    #[cfg_attr(not(test), allow(dead_code))] // read by the docs generator (tests)
    pub env_note: &'static str,
    /// The value `systemd/tusring.env` shows, when it is not the default (the unit's
    /// directories, an example URL).
    #[cfg_attr(not(test), allow(dead_code))] // read by the docs generator (tests)
    pub env_sample: Option<&'static str>,
    /// A valid value other than the default (a switch's is `true`): the table's tests
    /// give it through every source and check that it changes the `Config`.
    #[cfg_attr(not(test), allow(dead_code))] // read by the table tests
    pub example: &'static str,
    pub parse: Parse,
}

/// A row being written: everything but its parse. See the module docs.
pub(super) struct Draft {
    long: &'static str,
    alias: Option<&'static str>,
    short: Option<char>,
    env: &'static str,
    value: Option<&'static str>,
    fallback: Fallback,
    help: &'static str,
    doc: &'static str,
    env_note: &'static str,
    env_sample: Option<&'static str>,
    example: &'static str,
}

impl Flag {
    /// A flag that takes a value, shown as `<placeholder>` in `--help`. It has no default
    /// (shown as "none") until `default`, `unset` or `computed` says otherwise.
    pub(super) const fn value(
        long: &'static str,
        env: &'static str,
        placeholder: &'static str,
    ) -> Draft {
        Draft {
            long,
            alias: None,
            short: None,
            env,
            value: Some(placeholder),
            fallback: Fallback::Unset("none"),
            help: "",
            doc: "",
            env_note: "",
            env_sample: None,
            example: "",
        }
    }

    /// A switch: no value (`--flag` means true, `--flag=false` works too), off by
    /// default.
    pub(super) const fn switch(long: &'static str, env: &'static str) -> Draft {
        Draft {
            value: None,
            fallback: Fallback::Value("false"),
            example: "true",
            ..Flag::value(long, env, "")
        }
    }

    /// Whether the flag is a switch.
    pub(super) fn is_switch(&self) -> bool {
        self.value.is_none()
    }
}

impl Draft {
    pub(super) const fn short(mut self, short: char) -> Draft {
        self.short = Some(short);
        self
    }

    pub(super) const fn alias(mut self, alias: &'static str) -> Draft {
        self.alias = Some(alias);
        self
    }

    /// The default value, parsed like a given one.
    pub(super) const fn default(mut self, value: &'static str) -> Draft {
        self.fallback = Fallback::Value(value);
        self
    }

    /// No default value; `shown` says what that means.
    pub(super) const fn unset(mut self, shown: &'static str) -> Draft {
        self.fallback = Fallback::Unset(shown);
        self
    }

    /// A default computed from the rest of the configuration; `shown` describes it.
    pub(super) const fn computed(mut self, shown: &'static str, compute: fn(&mut Config)) -> Draft {
        self.fallback = Fallback::Computed(shown, compute);
        self
    }

    pub(super) const fn help(mut self, help: &'static str) -> Draft {
        self.help = help;
        self
    }

    pub(super) const fn doc(mut self, doc: &'static str) -> Draft {
        self.doc = doc;
        self
    }

    pub(super) const fn env_note(mut self, note: &'static str) -> Draft {
        self.env_note = note;
        self
    }

    pub(super) const fn env_sample(mut self, sample: &'static str) -> Draft {
        self.env_sample = Some(sample);
        self
    }

    pub(super) const fn example(mut self, example: &'static str) -> Draft {
        self.example = example;
        self
    }

    /// Completes the row with a parse of UTF-8 text.
    pub(super) const fn parse(self, parse: fn(&mut Config, &str) -> Result<(), String>) -> Flag {
        self.done(Parse::Text(parse))
    }

    /// Completes the row with a parse of a path (any bytes).
    pub(super) const fn parse_path(
        self,
        parse: fn(&mut Config, &OsStr) -> Result<(), String>,
    ) -> Flag {
        self.done(Parse::Path(parse))
    }

    const fn done(self, parse: Parse) -> Flag {
        Flag {
            long: self.long,
            alias: self.alias,
            short: self.short,
            env: self.env,
            value: self.value,
            fallback: self.fallback,
            help: self.help,
            doc: self.doc,
            env_note: self.env_note,
            env_sample: self.env_sample,
            example: self.example,
            parse,
        }
    }
}

/// Stores a parsed value in its field; the rows' parses are written with it:
/// `|c, v| put(&mut c.port, parse_port(v))`.
pub(super) fn put<T>(field: &mut T, parsed: Result<T, String>) -> Result<(), String> {
    *field = parsed?;
    Ok(())
}
