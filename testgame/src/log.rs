//! Log lines in the vanilla server's format, to stdout: `[HH:MM:SS] [Server thread/INFO]: text`.
//! The wall clock is read here and nowhere else.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    #[allow(
        clippy::disallowed_methods,
        reason = "the test server's one clock: log times and save times"
    )]
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Info,
    Warn,
    Error,
}

pub fn log(level: Level, text: &str) {
    let seconds_of_day = (now_ms() / 1000) % 86_400;
    let level = match level {
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    let line = format!(
        "[{:02}:{:02}:{:02}] [Server thread/{level}]: {text}\n",
        seconds_of_day / 3600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60
    );
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the server.
    let _ignored = stdout.write_all(line.as_bytes()).and_then(|()| stdout.flush());
}

pub fn info(text: &str) {
    log(Level::Info, text);
}

pub fn warn(text: &str) {
    log(Level::Warn, text);
}

pub fn error(text: &str) {
    log(Level::Error, text);
}
