//! Small shared helpers: paths and running helper commands.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the folder holding `scripts/` and `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Keeps the last `max` bytes of `s` (on a char boundary).
pub(crate) fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}

/// Runs `cmd` to completion; returns its stdout, or an error with its output when it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let line = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("starting {line}"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(Error::Command {
        command: line,
        status: out.status.to_string(),
        output: tail(&format!("{stdout}{stderr}"), 4000).to_string(),
    })
}

/// Reads a file's tail for error messages (empty when unreadable).
pub(crate) fn file_tail(path: &Path, max: usize) -> String {
    std::fs::read(path)
        .map(|b| tail(&String::from_utf8_lossy(&b), max).to_string())
        .unwrap_or_default()
}
