//! Leveled logging to stderr. Quiet by default (warn and above). Lines are
//! text (`ts LEVEL message`) or, with `server.log_format = "json"`, one JSON
//! object per line for log shippers: `ts` (Unix seconds), `level`, `shard`
//! (null off the shards), `message` and `fields` (the call site, and how
//! many lines like it the rate limit kept back).
//!
//! Owns: the process-wide log level and the rate limit of log lines: each
//! call site writes at most `LINES_PER_SITE_PER_S` lines a second on each
//! thread; the rest are counted (`suppressed_total`, on /metrics) and the
//! next line written from that site says how many it stands for. A client
//! that makes the server log (refused connections, say) cannot turn the
//! shared stderr into the bottleneck of every shard. Must never: be called
//! per message on the delivery path above debug level (a log line is a
//! syscall).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Lines one call site writes per second on one thread before it counts
/// the rest instead.
pub const LINES_PER_SITE_PER_S: u32 = 5;

static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Lines not written because of the rate limit, since the start.
pub fn suppressed_total() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

/// The rate limit of one call site on one thread (a `thread_local!` made
/// by the `log_*!` macros: no lock, no shared counter but the total).
pub struct Limiter {
    second: Cell<u64>,
    written: Cell<u32>,
    suppressed: Cell<u64>,
}

impl Limiter {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Limiter {
        Limiter { second: Cell::new(u64::MAX), written: Cell::new(0), suppressed: Cell::new(0) }
    }

    /// Whether a line may be written now; if so, how many before it were
    /// suppressed.
    pub fn admit(&self) -> Option<u64> {
        let second = STARTED.get_or_init(Instant::now).elapsed().as_secs();
        if second != self.second.get() {
            self.second.set(second);
            self.written.set(0);
        }
        if self.written.get() < LINES_PER_SITE_PER_S {
            self.written.set(self.written.get() + 1);
            return Some(self.suppressed.replace(0));
        }
        self.suppressed.set(self.suppressed.get() + 1);
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Log levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "error" => Some(Level::Error),
            "warn" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);
static JSON: AtomicBool = AtomicBool::new(false);

/// `server.log_format`: "text" (the default) or "json".
pub fn set_format(format: &str) -> Result<(), String> {
    match format {
        "text" => JSON.store(false, Ordering::Relaxed),
        "json" => JSON.store(true, Ordering::Relaxed),
        other => return Err(format!("unknown log format {other:?} (text or json)")),
    }
    Ok(())
}

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line; use the `log_*!` macros instead. `suppressed`: lines
/// of the same call site the rate limit kept back since the last one.
pub fn write(level: Level, args: std::fmt::Arguments, suppressed: u64, site: (&str, u32)) {
    use std::io::Write;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut line = if JSON.load(Ordering::Relaxed) {
        json_line(now, level, &args.to_string(), suppressed, site)
    } else {
        let mut line = format!("{}.{:03} {} {}", now.as_secs(), now.subsec_millis(), level.name(), args);
        if suppressed > 0 {
            line.push_str(&format!(" ({suppressed} more like this suppressed)"));
        }
        line
    };
    line.push('\n');
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The shard whose thread this is (executor threads are named `shard-N`,
/// which glommio may suffix with its own `-id`).
fn shard_of_thread() -> Option<usize> {
    let rest = std::thread::current().name()?.strip_prefix("shard-")?.to_string();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn json_line(now: std::time::Duration, level: Level, message: &str, suppressed: u64, site: (&str, u32)) -> String {
    let mut line = format!(
        "{{\"ts\":{}.{:03},\"level\":\"{}\",\"shard\":",
        now.as_secs(),
        now.subsec_millis(),
        level.name().to_ascii_lowercase()
    );
    match shard_of_thread() {
        Some(shard) => line.push_str(&shard.to_string()),
        None => line.push_str("null"),
    }
    line.push_str(",\"message\":");
    json_string(&mut line, message);
    line.push_str(",\"fields\":{\"site\":");
    json_string(&mut line, &format!("{}:{}", site.0, site.1));
    line.push_str(&format!(",\"suppressed\":{suppressed}}}}}"));
    line
}

fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            thread_local! {
                static SITE: $crate::log::Limiter = const { $crate::log::Limiter::new() };
            }
            // A thread being torn down has no limiter left: write.
            if let Some(suppressed) = SITE.try_with(|site| site.admit()).unwrap_or(Some(0)) {
                $crate::log::write($level, format_args!($($arg)*), suppressed, (module_path!(), line!()));
            }
        }
    };
}
#[macro_export]
macro_rules! log_error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) }; }
#[macro_export]
macro_rules! log_warn { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warn, $($arg)*) }; }
#[macro_export]
macro_rules! log_info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($arg)*) }; }
#[macro_export]
macro_rules! log_debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_the_message_and_name_the_site() {
        let line = json_line(std::time::Duration::from_millis(1500), Level::Warn, "a \"b\"\n\u{1}", 2, ("m::n", 7));
        assert_eq!(
            line,
            r#"{"ts":1.500,"level":"warn","shard":null,"message":"a \"b\"\n\u0001","fields":{"site":"m::n:7","suppressed":2}}"#
        );
    }

    #[test]
    fn a_site_writes_a_few_lines_a_second_and_counts_the_rest() {
        let site = Limiter::new();
        let before = suppressed_total();
        let admitted: Vec<Option<u64>> = (0..20).map(|_| site.admit()).collect();
        let written = admitted.iter().filter(|a| a.is_some()).count();
        // All in one second, unless the test straddles a second boundary.
        assert!(written as u32 >= LINES_PER_SITE_PER_S && written as u32 <= 2 * LINES_PER_SITE_PER_S, "{admitted:?}");
        assert!(suppressed_total() - before >= 20 - 2 * LINES_PER_SITE_PER_S as u64);
    }
}
