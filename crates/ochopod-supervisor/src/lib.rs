//! Ochopod's supervisor: spawns the pod's sub-process in its own process group, reaps every
//! child, forwards signals and tears the process down. **Never depends on** ZooKeeper or HTTP.
//!
//! **Architecture Invariant**: this crate carries actions out, it never decides them. When to
//! restart, when to run a sanity check, how long to wait before SIGKILL: all of that lives in
//! `ochopod-core`'s pod machine. Here we spawn, signal, wait, run hooks and capture output.
//!
//! # One reaper owns every child
//!
//! [`Reaper::install`] makes the agent a child subreaper (when it is not PID 1, so orphaned
//! grandchildren come back to us like they would to PID 1) and starts a dedicated thread that
//! reaps **every** child with `waitpid(-1)` whenever SIGCHLD arrives. Each status goes to the
//! [`Child`] handle of that pid; statuses of pids nobody spawned through the reaper (orphans)
//! are dropped once reaped.
//!
//! # Nothing outlives the agent
//!
//! Every child is killed with the agent, even when the agent is SIGKILLed: each child gets
//! SIGKILL as its parent-death signal, and a small group guard (a `/bin/sh` in a process group
//! of its own) SIGKILLs every process group the agent started once the agent is gone. The
//! limits (processes that leave their group, set-user-ID programs, ...) are listed in the
//! `lifeline` module's source.
//!
//! Because `waitpid(-1)` is process-global, a process that installs the reaper must never wait
//! for a child any other way: no `tokio::process`, no `std::process::Command::{status, output}`,
//! no `std::process::Child::wait`. Spawn everything (the sub-process, hooks, probes, tools)
//! through [`Reaper::spawn`] or [`Reaper::run`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), ochopod_supervisor::Error> {
//! use std::time::Duration;
//! use ochopod_supervisor::{CommandSpec, OutputMode, PodLog, Reaper, Signal};
//!
//! let reaper = Reaper::install()?;
//! let log = PodLog::new();
//! let spec = CommandSpec::shell("exec python3 -m http.server 9000")
//!     .output(OutputMode::Pipe(log.clone()));
//! let mut child = reaper.spawn(&spec)?;
//! // tear-down: SIGTERM to the group, wait up to `grace`, then SIGKILL to the group
//! child.signal_group(Signal::SIGTERM)?;
//! if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
//!     child.signal_group(Signal::SIGKILL)?;
//!     child.wait().await;
//! }
//! let hook = reaper.run(&CommandSpec::shell("echo '{}'"), None, Duration::from_secs(60)).await?;
//! assert!(hook.status.success());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod command;
mod lifeline;
mod pod_log;
mod reaper;
mod signals;

use std::path::PathBuf;
use std::time::Duration;

pub use command::{Child, CommandSpec, ExitStatus, Output, OutputMode, Program};
pub use nix::sys::signal::Signal;
pub use pod_log::{PodLog, PodLogLayer, POD_LOG_CAP, PROCESS_TARGET};
pub use reaper::{Reaper, CAPTURE_CAP};
pub use signals::{agent_signals, group_alive, signal_group, AgentSignal};

/// Everything that can go wrong while supervising processes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("cannot become a child subreaper (prctl PR_SET_CHILD_SUBREAPER): {0}; orphaned grandchildren would not be reaped by the agent")]
    Subreaper(#[source] nix::Error),
    /// The reaper's thread or its runtime could not be started.
    #[error("cannot start the reaper thread: {0}")]
    ReaperStart(#[source] std::io::Error),
    /// An argv command with no program.
    #[error("empty argv: give at least the program to run, e.g. [\"sleep\", \"10\"]")]
    EmptyArgv,
    /// The process could not be started (missing program, bad cwd, NUL byte in an argument...).
    #[error("cannot start `{command}`{}: {source}", cwd.as_ref().map(|d| format!(" in `{}`", d.display())).unwrap_or_default())]
    Spawn {
        /// The command, as shown to humans.
        command: String,
        /// The working directory it was given, if any.
        cwd: Option<PathBuf>,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A command run with [`Reaper::run`] did not finish in time; its process group was killed.
    #[error("`{command}` did not finish within {after:?}: its process group was killed (raise the timeout or fix the command)")]
    Timeout {
        /// The command, as shown to humans.
        command: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// A process group id that must never be signalled.
    #[error("refusing to signal process group {pgid}: {reason}")]
    InvalidGroup {
        /// The group asked for.
        pgid: u32,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `killpg` failed (other than for a group that no longer exists).
    #[error("cannot send {signal} to process group {pgid}: {source}")]
    Signal {
        /// The group.
        pgid: u32,
        /// The signal.
        signal: Signal,
        /// What the OS said.
        #[source]
        source: nix::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot listen for {signal}: {source}")]
    SignalHandler {
        /// The signal.
        signal: Signal,
        /// What tokio said.
        #[source]
        source: std::io::Error,
    },
    /// A function that needs a tokio runtime was called outside one.
    #[error("{what} must be called from inside a tokio runtime (with IO and signals enabled)")]
    NoRuntime {
        /// The function.
        what: &'static str,
    },
}
