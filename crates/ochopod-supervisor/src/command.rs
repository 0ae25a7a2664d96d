//! What to run ([`CommandSpec`]) and the handle on what runs ([`Child`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{signal_group, Error, PodLog, Signal};

/// The program to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// A program and its arguments; the program is looked up in the child's `PATH`
    /// (libc's default path when the environment has none) unless it contains a `/`.
    Argv(Vec<String>),
    /// A shell line, run as `/bin/sh -c LINE`.
    Shell(String),
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Program::Shell(line) => f.write_str(line),
            Program::Argv(argv) => {
                for (i, arg) in argv.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    let plain = !arg.is_empty()
                        && arg
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
                    if plain {
                        f.write_str(arg)?;
                    } else {
                        write!(f, "'{}'", arg.replace('\'', r"'\''"))?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Where the child's stdout and stderr go.
#[derive(Clone, Debug, Default)]
pub enum OutputMode {
    /// Line by line into the pod log, each line prefixed with `[pid N] `.
    Pipe(PodLog),
    /// Collected for [`Child::output`] (at most [`crate::CAPTURE_CAP`] bytes per stream).
    Capture,
    /// The agent's own stdout and stderr.
    Inherit,
    /// `/dev/null`.
    #[default]
    Null,
}

/// Everything needed to start a process. Its stdin is `/dev/null` unless [`crate::Reaper::run`]
/// is given bytes for it.
#[derive(Clone, Debug)]
pub struct CommandSpec {
    /// What to run.
    pub program: Program,
    /// The working directory; the agent's own when `None`.
    pub cwd: Option<PathBuf>,
    /// The **full** environment the child gets: nothing of the agent's is inherited.
    pub env: BTreeMap<String, String>,
    /// Where stdout and stderr go.
    pub output: OutputMode,
}

impl CommandSpec {
    /// An argv command with an empty environment, no cwd and [`OutputMode::Null`].
    pub fn argv<I, S>(argv: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CommandSpec::new(Program::Argv(argv.into_iter().map(Into::into).collect()))
    }

    /// A `/bin/sh -c` command with an empty environment, no cwd and [`OutputMode::Null`].
    pub fn shell(line: impl Into<String>) -> CommandSpec {
        CommandSpec::new(Program::Shell(line.into()))
    }

    /// A command with an empty environment, no cwd and [`OutputMode::Null`].
    pub fn new(program: Program) -> CommandSpec {
        CommandSpec {
            program,
            cwd: None,
            env: BTreeMap::new(),
            output: OutputMode::Null,
        }
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> CommandSpec {
        self.cwd = Some(cwd.into());
        self
    }

    /// Replaces the environment.
    pub fn env(mut self, env: BTreeMap<String, String>) -> CommandSpec {
        self.env = env;
        self
    }

    /// Sets one environment variable.
    pub fn var(mut self, key: impl Into<String>, value: impl Into<String>) -> CommandSpec {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets where the output goes.
    pub fn output(mut self, output: OutputMode) -> CommandSpec {
        self.output = output;
        self
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal number (see [`ExitStatus::signal`]).
    Signaled(i32),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Code(code) => Some(*code),
            ExitStatus::Signaled(_) => None,
        }
    }

    /// The signal that killed it, if any (`None` for real-time signals too).
    pub fn signal(&self) -> Option<Signal> {
        match self {
            ExitStatus::Signaled(raw) => Signal::try_from(*raw).ok(),
            ExitStatus::Code(_) => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.signal()) {
            (ExitStatus::Code(code), _) => write!(f, "exit code {code}"),
            (_, Some(sig)) => write!(f, "killed by {sig}"),
            (ExitStatus::Signaled(raw), None) => write!(f, "killed by signal {raw}"),
        }
    }
}

/// What a finished command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout (invalid UTF-8 replaced).
    pub stdout: String,
    /// Its stderr (invalid UTF-8 replaced).
    pub stderr: String,
}

/// A process started by the [`crate::Reaper`], leader of its own process group
/// (its pgid is its pid).
///
/// Dropping it neither kills nor waits: the reaper still reaps the process, and its status is
/// then dropped.
#[derive(Debug)]
pub struct Child {
    pub(crate) pid: u32,
    pub(crate) command: String,
    pub(crate) status: watch::Receiver<Option<ExitStatus>>,
    pub(crate) captured: Option<Captured>,
}

/// The readers collecting stdout and stderr with [`OutputMode::Capture`].
pub(crate) type Captured = (JoinHandle<Vec<u8>>, JoinHandle<Vec<u8>>);

impl Child {
    /// Its pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command, as shown to humans.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Waits for it to end. Can be called again after it returned (same status), and from any
    /// runtime; cancel-safe.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Ok(status) = self.status.wait_for(Option::is_some).await {
            if let Some(status) = *status {
                return status;
            }
        }
        // The reaper keeps every registration until it delivers a status; it is never dropped.
        std::future::pending().await
    }

    /// Its status if it ended already.
    pub fn try_status(&self) -> Option<ExitStatus> {
        *self.status.borrow()
    }

    /// Sends `sig` to its whole process group (see [`signal_group`]).
    pub fn signal_group(&self, sig: Signal) -> Result<(), Error> {
        signal_group(self.pid, sig)
    }

    /// Waits for it to end and returns what it wrote (with [`OutputMode::Capture`]; otherwise
    /// stdout and stderr are empty). Output written after it ended by processes it left behind
    /// is not collected.
    pub async fn output(mut self) -> Output {
        let status = self.wait().await;
        let (stdout, stderr) = match self.captured.take() {
            Some((out, err)) => (out.await.unwrap_or_default(), err.await.unwrap_or_default()),
            None => (Vec::new(), Vec::new()),
        };
        Output {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_display_readably() {
        let argv = Program::Argv(vec!["echo".into(), "a b".into(), "it's".into(), "".into()]);
        assert_eq!(argv.to_string(), r#"echo 'a b' 'it'\''s' ''"#);
        assert_eq!(Program::Shell("exit 3".into()).to_string(), "exit 3");
    }

    #[test]
    fn statuses_explain_themselves() {
        assert!(ExitStatus::Code(0).success());
        assert!(!ExitStatus::Code(2).success());
        assert_eq!(ExitStatus::Code(2).code(), Some(2));
        assert_eq!(ExitStatus::Signaled(15).signal(), Some(Signal::SIGTERM));
        assert_eq!(ExitStatus::Signaled(15).to_string(), "killed by SIGTERM");
        assert_eq!(ExitStatus::Signaled(40).to_string(), "killed by signal 40");
    }
}
