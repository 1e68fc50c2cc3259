//! Logging to stderr without blocking a core thread.
//!
//! Lines are formatted on the calling thread and handed to one logger thread over a
//! bounded channel; the logger thread does the (possibly blocking) write to stderr. When
//! the channel is full the line is dropped and counted, and the count is reported with
//! the next line that gets through: a slow log sink never stalls an upload.

use crate::config::LogLevel;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

/// Lines that may wait for the logger thread before new ones are dropped.
pub const LOG_QUEUE_LINES: usize = 16 * 1024;

static LEVEL: AtomicU8 = AtomicU8::new(3);
static COLOR: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static SENDER: OnceLock<SyncSender<Msg>> = OnceLock::new();
static THREAD: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

fn level_num(level: LogLevel) -> u8 {
    match level {
        LogLevel::Off => 0,
        LogLevel::Error => 1,
        LogLevel::Warn => 2,
        LogLevel::Info => 3,
        LogLevel::Debug => 4,
        LogLevel::Trace => 5,
    }
}

/// Writes JSON lines (`{"ts":…,"level":…,"msg":…}`) instead of human ones
/// (`--log-format json`). Call before [`init`].
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Appends `text` to `out` as the contents of a JSON string (no quotes).
fn json_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = fmt::write(out, format_args!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
}

/// One JSON log line (without the newline).
fn json_line(ts: &str, level: &str, msg: &str) -> String {
    let mut line = String::with_capacity(msg.len() + 64);
    line.push_str("{\"ts\":\"");
    json_escape(ts, &mut line);
    line.push_str("\",\"level\":\"");
    line.push_str(level);
    line.push_str("\",\"msg\":\"");
    json_escape(msg, &mut line);
    line.push_str("\"}");
    line
}

/// Sets the level and starts the logger thread. Colours are used only when stderr is a
/// terminal. Before `init`, lines are written directly (startup errors).
pub fn init(level: LogLevel) {
    LEVEL.store(level_num(level), Ordering::Relaxed);
    // SAFETY: isatty only inspects the file descriptor number; any value is allowed.
    let tty = unsafe { libc::isatty(2) } == 1;
    COLOR.store(tty, Ordering::Relaxed);
    let (tx, rx) = sync_channel(LOG_QUEUE_LINES);
    if SENDER.set(tx).is_ok() {
        let handle = std::thread::Builder::new()
            .name("tusring-log".into())
            .spawn(move || writer(rx))
            .ok();
        if let Ok(mut t) = THREAD.lock() {
            *t = handle;
        }
    }
}

fn writer(rx: Receiver<Msg>) {
    let stderr = std::io::stderr();
    for msg in rx {
        match msg {
            Msg::Line(line) => {
                let mut lock = stderr.lock();
                let _ = lock.write_all(line.as_bytes());
            }
            Msg::Flush(ack) => {
                let _ = stderr.lock().flush();
                let _ = ack.send(());
            }
        }
    }
}

/// Waits until every queued line has been written (used before exit).
pub fn flush() {
    if let Some(tx) = SENDER.get() {
        let (ack_tx, ack_rx) = sync_channel(1);
        if tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// Whether lines of `level` are written.
pub fn enabled(level: LogLevel) -> bool {
    level_num(level) <= LEVEL.load(Ordering::Relaxed) && level != LogLevel::Off
}

/// Lines dropped because the logger thread could not keep up.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Formats and queues one line. Use the `error!`..`trace!` macros.
pub fn write(level: LogLevel, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (name, colour) = match level {
        LogLevel::Error => ("ERROR", "\x1b[31m"),
        LogLevel::Warn => ("WARN ", "\x1b[33m"),
        LogLevel::Info => ("INFO ", "\x1b[32m"),
        LogLevel::Debug => ("DEBUG", "\x1b[34m"),
        LogLevel::Trace | LogLevel::Off => ("TRACE", "\x1b[35m"),
    };
    let lost = DROPPED.swap(0, Ordering::Relaxed);
    let mut line = if JSON.load(Ordering::Relaxed) {
        let mut msg = String::with_capacity(128);
        let _ = fmt::write(&mut msg, args);
        if lost > 0 {
            msg.push_str(&format!(
                " ({lost} earlier log lines dropped: stderr too slow)"
            ));
        }
        json_line(&crate::time::log_timestamp(millis), name.trim_end(), &msg)
    } else {
        human_line(millis, name, colour, args, lost)
    };
    line.push('\n');
    queue(line, lost);
}

/// One human log line (without the newline).
fn human_line(
    millis: i64,
    name: &str,
    colour: &str,
    args: fmt::Arguments<'_>,
    lost: u64,
) -> String {
    let mut line = String::with_capacity(128);
    line.push_str(&crate::time::log_timestamp(millis));
    line.push(' ');
    if COLOR.load(Ordering::Relaxed) {
        line.push_str(colour);
        line.push_str(name);
        line.push_str("\x1b[0m");
    } else {
        line.push_str(name);
    }
    line.push(' ');
    let _ = fmt::write(&mut line, args);
    if lost > 0 {
        line.push_str(&format!(
            " ({lost} earlier log lines dropped: stderr too slow)"
        ));
    }
    line
}

/// Hands a line to the logger thread (or writes it directly before `init`).
fn queue(line: String, lost: u64) {
    match SENDER.get() {
        Some(tx) => match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1 + lost, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(Msg::Line(line))) => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Err(TrySendError::Disconnected(_)) => {}
        },
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Logs at ERROR.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::write($crate::config::LogLevel::Error, format_args!($($t)*)) };
}
/// Logs at WARN.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::write($crate::config::LogLevel::Warn, format_args!($($t)*)) };
}
/// Logs at INFO.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::write($crate::config::LogLevel::Info, format_args!($($t)*)) };
}
/// Logs at DEBUG.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::log::enabled($crate::config::LogLevel::Debug) {
            $crate::log::write($crate::config::LogLevel::Debug, format_args!($($t)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_the_message() {
        assert_eq!(
            json_line("2026-01-01 00:00:00.000", "INFO", "a \"b\"\\\n\u{1}é"),
            r#"{"ts":"2026-01-01 00:00:00.000","level":"INFO","msg":"a \"b\"\\\n\u0001é"}"#
        );
    }
}
