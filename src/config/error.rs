//! The usage error every stage returns, and how a user's text is shown in it.

use std::fmt;

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
    /// The message is kept on one line whatever a parser's reason quotes: a control
    /// character a library echoed back from the user's value (a NATS URL parser quoting
    /// a `\r`, say) is escaped here, so no message can span lines or move a terminal's
    /// cursor.
    pub(super) fn new(flag: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let message: String = message.into();
        let message = if message.contains(char::is_control) {
            message
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_debug().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        } else {
            message
        };
        ConfigError {
            flag: flag.into(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A user-supplied string made safe for a one-line message: escaped and shortened.
pub(super) fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() <= MAX_CHARS {
        escaped
    } else {
        let cut: String = escaped.chars().take(MAX_CHARS).collect();
        format!("{cut}...")
    }
}
