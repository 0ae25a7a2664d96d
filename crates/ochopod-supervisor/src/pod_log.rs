//! The pod log: the last [`POD_LOG_CAP`] bytes of text, served by `/log`.
//!
//! As in Ochopod 1.x, it holds the agent's own events and the piped process output in one
//! stream, one line each in 1.x's format `asctime - LEVEL - message` (asctime in UTC,
//! `2024-05-01 12:00:00,123`), process lines as `pid N : line`. [`PodLog::layer`] is the
//! `tracing` layer that writes the agent's events into it.

use std::collections::VecDeque;
use std::fmt;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// Most bytes of text the pod log keeps: the sum of its lines' lengths, one newline each
/// included, so [`PodLog::text`] never exceeds it.
pub const POD_LOG_CAP: usize = 32 * 1024;

/// A ring of log lines holding at most [`POD_LOG_CAP`] bytes of text; the oldest lines go first.
///
/// Cheap to clone: clones share the same ring. Every line of [`PodLog::push`] and every
/// process line is also emitted through `tracing` (target [`PROCESS_TARGET`], level INFO), so
/// it reaches the agent's stderr; [`PodLog::layer`] skips that target, so nothing is written
/// twice.
#[derive(Clone, Default)]
pub struct PodLog {
    ring: Arc<Mutex<Ring>>,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
}

impl PodLog {
    /// An empty log.
    pub fn new() -> PodLog {
        PodLog::default()
    }

    /// Appends one line as it is (a line longer than the cap is cut to fit), dropping the
    /// oldest lines as needed.
    pub fn push(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(target: PROCESS_TARGET, "{line}");
        self.append(line);
    }

    /// Appends an event in 1.x's format, `asctime - LEVEL - message`, stamped now. `level` is
    /// 1.x's name (`DEBUG`, `INFO`, `WARNING`, `ERROR`); each further line of a multi-line
    /// message is kept as it is, as 1.x's file log does.
    pub fn event(&self, level: &str, message: &str) {
        let stamp = asctime(SystemTime::now());
        let mut lines = message.split('\n');
        let first = lines.next().unwrap_or("");
        self.append(format!("{stamp} - {level} - {first}"));
        for more in lines {
            self.append(more.to_string());
        }
    }

    /// Appends one line of the process's output: `pid N : line`, at INFO.
    pub fn process_line(&self, pid: u32, line: &str) {
        tracing::info!(target: PROCESS_TARGET, "pid {pid} : {line}");
        self.event("INFO", &format!("pid {pid} : {line}"));
    }

    /// The `tracing` layer writing the agent's events into this log: events of the `ochopod*`
    /// targets at INFO and above, DEBUG too with `debug` (1.x's `ochopod_debug=true`), in the
    /// format of [`PodLog::event`]; the message, then its fields as `key=value`.
    ///
    /// It filters on its own, but the subscriber asks every layer whether an event interests
    /// it: add it with a per-layer filter (e.g. `tracing_subscriber::filter::Targets` for
    /// `ochopod` at the same level) so the other crates' DEBUG events are not built for it.
    pub fn layer(&self, debug: bool) -> PodLogLayer {
        PodLogLayer {
            log: self.clone(),
            max: if debug { Level::DEBUG } else { Level::INFO },
        }
    }

    fn append(&self, mut line: String) {
        if line.len() >= POD_LOG_CAP {
            let mut end = POD_LOG_CAP - 1;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        let cost = line.len() + 1;
        let mut ring = self.lock();
        while ring.bytes + cost > POD_LOG_CAP {
            match ring.lines.pop_front() {
                Some(old) => ring.bytes -= old.len() + 1,
                None => break,
            }
        }
        ring.bytes += cost;
        ring.lines.push_back(line);
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lock().lines.iter().cloned().collect()
    }

    /// The lines kept, each followed by a newline: at most [`POD_LOG_CAP`] bytes.
    pub fn text(&self) -> String {
        let ring = self.lock();
        let mut text = String::with_capacity(ring.bytes);
        for line in &ring.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// The size of [`PodLog::text`] in bytes.
    pub fn len_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for PodLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.lock();
        f.debug_struct("PodLog")
            .field("lines", &ring.lines.len())
            .field("bytes", &ring.bytes)
            .finish()
    }
}

/// The `tracing` target of the process lines echoed to the agent's stderr.
pub const PROCESS_TARGET: &str = "ochopod::pod";

/// The layer of [`PodLog::layer`].
#[derive(Clone, Debug)]
pub struct PodLogLayer {
    log: PodLog,
    max: Level,
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for PodLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > self.max
            || !meta.target().starts_with("ochopod")
            || meta.target() == PROCESS_TARGET
        {
            return;
        }
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            _ => "DEBUG",
        };
        let mut text = Message::default();
        event.record(&mut text);
        self.log.event(level, &text.finish());
    }
}

/// An event's message followed by its other fields.
#[derive(Default)]
struct Message {
    message: String,
    fields: String,
}

impl Message {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else if self.message.is_empty() {
            self.fields.trim_start().to_string()
        } else {
            self.message + &self.fields
        }
    }
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// Python's `asctime` in UTC: `YYYY-MM-DD HH:MM:SS,mmm`.
pub(crate) fn asctime(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02},{:03}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Splits a byte stream into the process lines of the pod log (`pid N : line`).
pub(crate) struct LineSplitter {
    log: PodLog,
    pid: u32,
    partial: Vec<u8>,
}

/// A line without a newline is flushed once it gets this long.
const MAX_LINE: usize = 8 * 1024;

impl LineSplitter {
    pub(crate) fn new(log: PodLog, pid: u32) -> LineSplitter {
        LineSplitter {
            log,
            pid,
            partial: Vec::new(),
        }
    }

    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(at) = bytes.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&bytes[..at]);
            self.emit();
            bytes = &bytes[at + 1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            self.emit();
            self.partial = rest;
        }
    }

    pub(crate) fn finish(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }

    fn emit(&mut self) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let line = String::from_utf8_lossy(&self.partial);
        self.log.process_line(self.pid, &line);
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_never_exceeds_the_cap_and_keeps_the_newest_lines() {
        let log = PodLog::new();
        for i in 0..5000 {
            log.push(format!("line {i:05} {}", "x".repeat(i % 97)));
            assert!(log.len_bytes() <= POD_LOG_CAP);
            assert_eq!(log.text().len(), log.len_bytes());
        }
        let lines = log.lines();
        assert!(lines.last().unwrap().starts_with("line 04999"));
        assert!(
            log.len_bytes() > POD_LOG_CAP - 200,
            "the ring is kept nearly full"
        );
    }

    #[test]
    fn a_huge_line_is_cut_at_a_char_boundary() {
        let log = PodLog::new();
        log.push("é".repeat(POD_LOG_CAP));
        assert!(log.len_bytes() <= POD_LOG_CAP);
        assert_eq!(log.lines().len(), 1);
        log.push("after");
        assert_eq!(log.lines(), vec!["after".to_string()]);
    }

    /// The lines without their `asctime - ` stamp.
    fn unstamped(log: &PodLog) -> Vec<String> {
        log.lines()
            .iter()
            .map(|l| l.get(26..).unwrap_or(l).to_string())
            .collect()
    }

    #[test]
    fn splitter_prefixes_lines_and_flushes_partials() {
        let log = PodLog::new();
        let mut split = LineSplitter::new(log.clone(), 42);
        split.feed(b"one\r\ntw");
        split.feed(b"o\nthree");
        assert_eq!(
            unstamped(&log),
            vec!["INFO - pid 42 : one", "INFO - pid 42 : two"]
        );
        split.finish();
        assert_eq!(unstamped(&log).last().unwrap(), "INFO - pid 42 : three");
        split.feed(&vec![b'y'; MAX_LINE * 2 + 5]);
        split.finish();
        let lines = unstamped(&log);
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[5], "INFO - pid 42 : yyyyy");
    }

    #[test]
    fn events_have_1x_format_and_multi_line_messages_keep_their_lines() {
        let log = PodLog::new();
        log.event("WARNING", "check failed -> boom\n\tdetail");
        let lines = log.lines();
        assert_eq!(lines.len(), 2);
        let (stamp, rest) = lines[0].split_at(23);
        assert_eq!(rest, " - WARNING - check failed -> boom");
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99 99:99:99,999");
        assert_eq!(lines[1], "\tdetail");
    }

    #[test]
    fn asctime_is_utc_with_milliseconds() {
        let at = |secs: u64, ms: u64| {
            asctime(UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + ms))
        };
        assert_eq!(at(0, 0), "1970-01-01 00:00:00,000");
        assert_eq!(at(951_782_400 + 86_399, 7), "2000-02-29 23:59:59,007");
        assert_eq!(at(1_735_689_600, 999), "2025-01-01 00:00:00,999");
    }

    #[test]
    fn the_layer_writes_ochopod_events_at_its_level_only() {
        use tracing_subscriber::layer::SubscriberExt;
        let log = PodLog::new();
        let quiet = tracing_subscriber::registry().with(log.layer(false));
        tracing::subscriber::with_default(quiet, || {
            tracing::info!(target: "ochopod::runtime", pid = 7, "process started");
            tracing::debug!(target: "ochopod::runtime", "hidden without debug");
            tracing::warn!(target: "hyper::proto", "not ours");
            tracing::info!(target: PROCESS_TARGET, "echo of a process line");
            tracing::error!(target: "ochopod_zk::coordinator", "lost");
        });
        assert_eq!(
            unstamped(&log),
            vec!["INFO - process started pid=7", "ERROR - lost"]
        );
        let log = PodLog::new();
        let debug = tracing_subscriber::registry().with(log.layer(true));
        tracing::subscriber::with_default(debug, || {
            tracing::debug!(target: "ochopod::runtime", "shown with debug");
            tracing::trace!(target: "ochopod::runtime", "never");
        });
        assert_eq!(unstamped(&log), vec!["DEBUG - shown with debug"]);
    }
}
