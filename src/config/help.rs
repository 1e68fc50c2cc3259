//! `--help` and `--version`, written from the flag table.

use std::fmt::Write as _;

use super::row::{Fallback, Flag};
use super::table::{unsupported_features, SECTIONS, UNSUPPORTED};
use super::values::Extensions;

/// Lines of `--help` are wrapped to this many columns.
pub(super) const HELP_WIDTH: usize = 100;

pub(super) fn version_text() -> String {
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
            Fallback::Value(_) if self.is_switch() => return format!("[env: {}]", self.env),
            Fallback::Value("") => "\"\"",
            Fallback::Value(text) | Fallback::Unset(text) | Fallback::Computed(text, _) => text,
        };
        format!("[env: {}] [default: {default}]", self.env)
    }
}

pub(super) fn help_text() -> String {
    const HELP: &str = "-h, --help";
    const VERSION: &str = "-V, --version";
    // A usage longer than `MAX_USAGE_WIDTH` puts its help on the next line, so that
    // one long flag name does not push every help text to the right.
    const MAX_USAGE_WIDTH: usize = 32;
    let column = super::table::flags()
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
    for section in SECTIONS {
        let _ = writeln!(out, "\n{}:", section.title);
        for flag in section.flags {
            let usage = flag.usage();
            if usage.len() > MAX_USAGE_WIDTH {
                let _ = writeln!(out, "  {usage}\n{:column$}{}", "", flag.help);
            } else {
                let _ = writeln!(out, "  {usage:<width$}{}", flag.help, width = column - 2);
            }
            out.push_str(&wrap(&flag.notes(), column, column, HELP_WIDTH));
        }
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
    for feature in unsupported_features() {
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
