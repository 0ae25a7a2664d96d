//! Helpers for the supervision suites (`docs/protocol.md#the-pod`): an operator's control body, the
//! pod log, and what the kernel says about a pid (alive, zombie, gone), all read from the outside.

use crate::agent::Agent;
use crate::error::{Error, Result};
use ochopod_core::wire::Info;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The body an operator posts with `on`, `check` or `ok` to a one-pod cluster: the pod's own
/// registration as the only member, no dependencies, and its key (`docs/http.md`).
pub fn operator_body(info: &Info) -> Value {
    let registration = serde_json::to_value(&info.registration).unwrap_or(Value::Null);
    json!({
        "pods": { info.key.clone(): registration },
        "dependencies": {},
        "key": info.key,
    })
}

/// `/log`: the pod log's lines (a JSON array of strings).
pub fn log_lines(agent: &Agent) -> Result<Vec<String>> {
    let reply = agent.get("/log")?;
    let bad = |why: String| Error::Payload {
        from: agent.url("/log"),
        why,
    };
    if reply.status != 200 {
        return Err(bad(format!("status {}: {}", reply.status, reply.body)));
    }
    let lines = reply
        .body
        .as_array()
        .ok_or_else(|| bad(format!("not a JSON array: {}", reply.body)))?;
    lines
        .iter()
        .map(|l| {
            l.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("a line is not a string: {l}")))
        })
        .collect()
}

/// The size of a log as kept: every line's bytes with one newline each (lines are served with
/// their newline, as 1.x serves the lines of its log file).
pub fn log_bytes(lines: &[String]) -> usize {
    lines
        .iter()
        .map(|l| l.len() + usize::from(!l.ends_with('\n')))
        .sum()
}

/// The state letter of `pid` from `/proc/<pid>/stat` (`R`, `S`, `Z`...), `None` once it is gone
/// (reaped, or never existed).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.chars().next()
}

/// The parent of `pid` from `/proc/<pid>/stat` (`None` once it is gone).
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z')
}

/// Every live (not zombie) process of process group `pgid`, from `/proc/*/stat`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(") ")?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let group: u32 = fields.nth(1)?.parse().ok()?;
            (group == pgid && state != "Z").then_some(pid)
        })
        .collect()
}

/// The command line of `pid`, arguments joined by spaces (`None` once it is gone).
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Seconds since the Unix epoch, as `date +%s.%N` and python's `time.time()` print them.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The numbers of a file holding one number per line (missing file: none; other lines skipped).
pub fn read_numbers(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The median of `values` (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_numbers() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n");
        std::fs::write(&f, "1.5\nnope\n2\n").unwrap();
        assert_eq!(read_numbers(&f), vec![1.5, 2.0]);
        assert!(read_numbers(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn our_own_pid_is_alive_and_a_reaped_child_is_gone() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(proc_state(pid), None);
        assert!(cmdline(std::process::id()).is_some());
        assert_eq!(
            parent_pid(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }
}
