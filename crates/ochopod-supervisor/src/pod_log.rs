//! The pod log: the last [`POD_LOG_CAP`] bytes of text, served by `/log`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most bytes of text the pod log keeps: the sum of its lines' lengths, one newline each
/// included, so [`PodLog::text`] never exceeds it.
pub const POD_LOG_CAP: usize = 32 * 1024;

/// A ring of log lines holding at most [`POD_LOG_CAP`] bytes of text; the oldest lines go first.
///
/// Cheap to clone: clones share the same ring. Every pushed line is also emitted through
/// `tracing` (target `ochopod::pod`, level INFO), so it reaches the agent's stderr.
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

    /// Appends one line (a line longer than the cap is cut to fit), dropping the oldest lines
    /// as needed.
    pub fn push(&self, line: impl Into<String>) {
        let mut line = line.into();
        if line.len() >= POD_LOG_CAP {
            let mut end = POD_LOG_CAP - 1;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        tracing::info!(target: "ochopod::pod", "{line}");
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

/// Splits a byte stream into lines for the pod log, prefixed with `[pid N] `.
pub(crate) struct LineSplitter {
    log: PodLog,
    prefix: String,
    partial: Vec<u8>,
}

/// A line without a newline is flushed once it gets this long.
const MAX_LINE: usize = 8 * 1024;

impl LineSplitter {
    pub(crate) fn new(log: PodLog, pid: u32) -> LineSplitter {
        LineSplitter {
            log,
            prefix: format!("[pid {pid}] "),
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
        self.log.push(format!("{}{line}", self.prefix));
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

    #[test]
    fn splitter_prefixes_lines_and_flushes_partials() {
        let log = PodLog::new();
        let mut split = LineSplitter::new(log.clone(), 42);
        split.feed(b"one\r\ntw");
        split.feed(b"o\nthree");
        assert_eq!(log.lines(), vec!["[pid 42] one", "[pid 42] two"]);
        split.finish();
        assert_eq!(log.lines().last().unwrap(), "[pid 42] three");
        split.feed(&vec![b'y'; MAX_LINE * 2 + 5]);
        split.finish();
        let lines = log.lines();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[5], "[pid 42] yyyyy");
    }
}
