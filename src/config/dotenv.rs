//! The `.env` file: dotenvy's syntax, parsed into `(key, value)` pairs.

use super::error::shown;
use super::ConfigError;

/// Parses a `.env` file (dotenvy's format) into `(key, value)` pairs in file order.
///
/// * `KEY=VALUE` lines; blank lines and `#` comment lines are skipped; an `export `
///   prefix is allowed; whitespace around the key and the value is trimmed.
/// * Unquoted values end at a `#` that starts the value or follows whitespace.
/// * `'single'` quoted values are literal; `"double"` quoted ones take the escapes
///   `\n \r \t \" \' \\ \$`. Either kind may span lines.
pub(super) fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
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
