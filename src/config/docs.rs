//! The README's flag table and `systemd/tusring.env`, generated from the flag table, and
//! the tests that fail when either file is stale. After changing a row, rewrite both with
//!
//! ```text
//! TUSRING_WRITE_DOCS=1 cargo test --lib config::docs
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use super::row::{Fallback, Flag};
use super::table::{flags, unsupported_features, SECTIONS};
use super::tests::config_of;

/// The variable that makes the tests rewrite the files instead of failing.
const WRITE: &str = "TUSRING_WRITE_DOCS";

/// The lines around the generated part of README.md.
const README_BEGIN: &str = concat!(
    "<!-- Generated from src/config/table.rs: edit the rows there, then run ",
    "TUSRING_WRITE_DOCS=1 cargo test --lib config::docs -->\n"
);
const README_END: &str = "<!-- End of the generated flag table. -->\n";

/// The top of `systemd/tusring.env`.
const ENV_FILE_HEAD: &str = "\
# tusring settings, read by tusring.service (EnvironmentFile=-/etc/tusring/tusring.env).
#
# The same RUSTUS_* variables as rustus: a rustus environment file works as it is
# (variables for features tusring does not have are ignored). Every line below is
# commented out and shows the default; uncomment and change what you need, then
# `systemctl restart tusring`. Values here override the unit's Environment= lines.
# Syntax: KEY=value, one per line, no `export`; quote values with spaces.
# `tusring --help` describes every setting.
";

/// The README's flag table and the paragraph on rustus's unsupported flags.
fn readme_table() -> String {
    let mut out = String::from("| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for flag in flags() {
        let mut names = match flag.short {
            Some(short) => format!("`-{short}`, `--{}`", flag.long),
            None => format!("`--{}`", flag.long),
        };
        if let Some(alias) = flag.alias {
            let _ = write!(names, " (also `--{alias}`, rustus's spelling)");
        }
        let default = match flag.fallback {
            Fallback::Value(_) if flag.is_switch() => "off".to_owned(),
            Fallback::Value("") => "empty".to_owned(),
            Fallback::Value(value) => format!("`{value}`"),
            Fallback::Unset(shown) | Fallback::Computed(shown, _) => shown.to_owned(),
        };
        let _ = writeln!(
            out,
            "| {names} | `{}` | {default} | {} |",
            flag.env, flag.doc
        );
    }
    out.push_str("| `-h`, `--help` | | | print the flags, their variables and defaults |\n");
    out.push_str("| `-V`, `--version` | | | print the version |\n");
    let unsupported = format!(
        "rustus flags for features tusring does not have ({}) are refused with an error naming \
         them; their environment variables are ignored, so a rustus `.env` file still starts.",
        unsupported_features().join(", ")
    );
    out.push('\n');
    for line in wrap(&unsupported, README_WIDTH) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// What `systemd/tusring.env` should hold: every variable commented out, showing its
/// default (or the unit's value), under the `--help` sections.
fn env_file() -> String {
    let mut out = String::from(ENV_FILE_HEAD);
    for section in SECTIONS {
        let _ = writeln!(out, "\n# ---- {}", section.title);
        comment(&mut out, section.env_note);
        for flag in section.flags {
            comment(&mut out, flag.env_note);
            let _ = writeln!(out, "#{}={}", flag.env, env_value(flag));
        }
    }
    out
}

/// The value a variable shows in `systemd/tusring.env`.
fn env_value(flag: &Flag) -> &'static str {
    match (flag.env_sample, flag.fallback) {
        (Some(sample), _) => sample,
        (None, Fallback::Value(value)) => value,
        (None, Fallback::Unset(_) | Fallback::Computed(..)) => "",
    }
}

/// Lines of `systemd/tusring.env` are wrapped to this many columns where the words allow.
const ENV_FILE_WIDTH: usize = 90;

/// Prose lines of the README are wrapped to this many columns.
const README_WIDTH: usize = 95;

/// `note` as `#` comment lines: each `\n`-separated paragraph wrapped at spaces.
fn comment(out: &mut String, note: &str) {
    for paragraph in note.lines() {
        for line in wrap(paragraph, ENV_FILE_WIDTH - "# ".len()) {
            let _ = writeln!(out, "# {line}");
        }
    }
}

/// Greedy word wrap at spaces: lines of at most `width` columns where the words allow.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn repository_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Compares `path` with `expected`; rewrites it when `TUSRING_WRITE_DOCS` is set, else
/// fails naming the first line that differs.
fn check(name: &str, current: &str, expected: &str) {
    if current == expected {
        return;
    }
    if std::env::var_os(WRITE).is_some() {
        std::fs::write(repository_file(name), expected).expect("write the generated file");
        return;
    }
    let line = current
        .lines()
        .zip(expected.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| current.lines().count().min(expected.lines().count()));
    panic!(
        "{name} is not what the flag table generates (first difference at line {}: {:?}, \
         expected {:?}); run {WRITE}=1 cargo test --lib config::docs",
        line + 1,
        current.lines().nth(line).unwrap_or("<end of file>"),
        expected.lines().nth(line).unwrap_or("<end of file>"),
    );
}

#[test]
fn readme_flag_table_is_current() {
    let readme = std::fs::read_to_string(repository_file("README.md")).unwrap();
    let begin = readme
        .find(README_BEGIN)
        .expect("README.md has the flag table's begin marker")
        + README_BEGIN.len();
    let end = begin
        + readme[begin..]
            .find(README_END)
            .expect("README.md has the flag table's end marker");
    let expected = format!("{}{}{}", &readme[..begin], readme_table(), &readme[end..]);
    check("README.md", &readme, &expected);
}

#[test]
fn env_file_is_current() {
    let current = std::fs::read_to_string(repository_file("systemd/tusring.env")).unwrap();
    check("systemd/tusring.env", &current, &env_file());
}

/// Every line of the environment file, uncommented, is accepted and gives the default,
/// but for the values the file shows on purpose (`env_sample`).
#[test]
fn env_file_shows_the_defaults() {
    let uncommented: String = env_file()
        .lines()
        .filter_map(|line| line.strip_prefix("#RUSTUS_"))
        .map(|line| format!("RUSTUS_{line}\n"))
        .collect();
    assert_eq!(uncommented.lines().count(), flags().count());
    let samples: String = flags()
        .filter_map(|flag| Some(format!("{}={}\n", flag.env, flag.env_sample?)))
        .collect();
    let from_file = config_of(&[], &[], Some(&uncommented));
    let expected = config_of(&[], &[], Some(&samples));
    assert_eq!(format!("{from_file:?}"), format!("{expected:?}"));
}

#[test]
fn every_row_is_documented() {
    for flag in flags() {
        for (what, text) in [("help", flag.help), ("doc", flag.doc)] {
            assert!(!text.is_empty(), "--{} has no {what}", flag.long);
            assert!(
                !text.contains(['\n', '|']),
                "--{}'s {what}: one line, no '|'",
                flag.long
            );
        }
    }
}
