//! The hooks a pod implements: the [`Lifecycle`] trait (1.x's hooks, as async methods).
//!
//! Only [`Lifecycle::configure`] is required. `ochopod run --spec` is one implementation of this
//! trait (`spec_pod::SpecLifecycle`, feature `spec`); a Rust pod is another. The runtime runs
//! every hook in its own task, so a slow hook never blocks `/info`.
//!
//! # Reload or restart
//!
//! When the cluster changes while the process runs (a pod joins or leaves), the leader sends
//! every pod the new view. A pod whose [`ProcessSettings::strict`](crate::ProcessSettings) is
//! `false` (the default) and whose dependencies did not change keeps its process running and
//! calls [`Lifecycle::reload`]; every other case tears the process down and runs
//! [`Lifecycle::configure`] and a new process. The default `reload` runs `configure` again (so
//! the files it renders follow the cluster, as a spec pod re-renders its templates) and keeps
//! the running process and the command it was started with. Override `reload` to tell the
//! process (`kill -HUP`, an admin call), or set `strict` to restart it on every change.

use crate::ClusterView;
use ochopod_supervisor::Program;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;

/// A hook failed: the message goes into the control reply, `/info` and the pod log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Self {
        Failure(s.to_string())
    }
}

/// What a hook returns.
pub type HookResult<T> = Result<T, Failure>;

/// The process `configure` asks the pod to run.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessCommand {
    /// The program.
    pub program: Program,
    /// Working directory (the agent's when `None`).
    pub cwd: Option<PathBuf>,
    /// Environment overrides, on top of the agent's environment and `ochopod`.
    pub env: BTreeMap<String, String>,
}

impl ProcessCommand {
    /// Runs `argv` as is.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ProcessCommand {
            program: Program::Argv(argv.into_iter().map(Into::into).collect()),
            cwd: None,
            env: BTreeMap::new(),
        }
    }

    /// Runs `line` through `/bin/sh -c`.
    pub fn shell(line: impl Into<String>) -> Self {
        ProcessCommand {
            program: Program::Shell(line.into()),
            cwd: None,
            env: BTreeMap::new(),
        }
    }

    /// Adds an environment override.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
}

/// What a tool run through `/exec` printed.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Output lines (stdout then stderr).
    pub lines: Vec<String>,
}

/// The hooks of a pod. Only `configure` is required; every other method has a default that
/// succeeds and does nothing, as in Ochopod 1.x, except [`reload`](Lifecycle::reload), whose
/// default runs `configure` again (see [Reload or restart](crate::lifecycle#reload-or-restart)).
///
/// `configure` may therefore run several times for one process: write what it renders in full
/// each time (it is given the whole view).
///
/// ```
/// use ochopod::{ClusterView, HookResult, Lifecycle, ProcessCommand};
///
/// struct Broker;
///
/// impl Lifecycle for Broker {
///     async fn configure(&self, cluster: &ClusterView) -> HookResult<ProcessCommand> {
///         Ok(ProcessCommand::argv(["my-broker", "--id", &cluster.seq.to_string()])
///             .env("PEERS", cluster.grep("", 9092, false)))
///     }
/// }
/// ```
pub trait Lifecycle: Send + Sync + 'static {
    /// Runs once, before the first configuration.
    fn initialize(&self, cluster: &ClusterView) -> impl Future<Output = HookResult<()>> + Send {
        let _ = cluster;
        async { Ok(()) }
    }

    /// `check`: may the pod be configured with this view? (e.g. Kafka waits for ZooKeeper).
    fn can_configure(&self, cluster: &ClusterView) -> impl Future<Output = HookResult<()>> + Send {
        let _ = cluster;
        async { Ok(()) }
    }

    /// Renders configuration and returns the process to run.
    fn configure(
        &self,
        cluster: &ClusterView,
    ) -> impl Future<Output = HookResult<ProcessCommand>> + Send;

    /// `ok`: every pod of the round was configured.
    fn configured(&self, cluster: &ClusterView) -> impl Future<Output = HookResult<()>> + Send {
        let _ = cluster;
        async { Ok(()) }
    }

    /// A non-strict pod got a new view while running with unchanged dependencies: update its
    /// configuration in place (re-render, `kill -HUP`, ...). A failure makes the pod restart.
    ///
    /// The default runs [`configure`](Lifecycle::configure) with the new view and drops the
    /// command it returns: what `configure` renders follows the cluster, while the running
    /// process is left alone with the command line and environment it was started with (a
    /// restart after a crash runs that same command; a change that restarts the process runs
    /// `configure` and its new command). Override it to also tell the process, or to do
    /// nothing (`async { Ok(()) }`).
    fn reload(&self, cluster: &ClusterView) -> impl Future<Output = HookResult<()>> + Send {
        async move { self.configure(cluster).await.map(drop) }
    }

    /// The periodic sanity check of the running process; may return metrics (a JSON object).
    fn sanity_check(&self, pid: u32) -> impl Future<Output = HookResult<Option<Value>>> + Send {
        let _ = pid;
        async { Ok(None) }
    }

    /// Starts tearing the process down. Return `Ok(false)` to let the agent send SIGTERM to the
    /// process group (the default); either way the agent SIGKILLs after `grace` unless `soft`.
    fn tear_down(&self, pid: u32) -> impl Future<Output = HookResult<bool>> + Send {
        let _ = pid;
        async { Ok(false) }
    }

    /// `signal`: the request body in, a JSON reply out.
    fn signal(&self, body: Value) -> impl Future<Output = HookResult<Value>> + Send {
        let _ = body;
        async { Ok(Value::Null) }
    }

    /// `kill`, or the process exited 0: last words before the pod goes dead.
    fn finalize(&self) -> impl Future<Output = HookResult<()>> + Send {
        async { Ok(()) }
    }

    /// The leader's cluster probe: `Some(status)`; `None` when there is no probe.
    fn probe(
        &self,
        cluster: &ClusterView,
    ) -> impl Future<Output = HookResult<Option<String>>> + Send {
        let _ = cluster;
        async { Ok(None) }
    }

    /// `ochopod plan`'s dry run: the files [`configure`](Lifecycle::configure) (and the default
    /// `reload`) would write with this view, rendered into memory and compared with the files on
    /// disk, without writing anything or touching the process. `None` (the default): this pod
    /// cannot tell without running `configure`; the plan then names the reload or restart only.
    fn plan(
        &self,
        cluster: &ClusterView,
    ) -> impl Future<Output = HookResult<Option<crate::plan::Plan>>> + Send {
        let _ = cluster;
        async { Ok(None) }
    }

    /// Runs the operator tool `name` with `args` in `dir` (a temporary folder holding the
    /// uploaded files).
    fn tool(
        &self,
        name: &str,
        args: Vec<String>,
        dir: PathBuf,
    ) -> impl Future<Output = HookResult<ToolOutput>> + Send {
        let _ = (args, dir);
        let msg = format!("unknown tool {name:?}: this pod declares no tools");
        async move { Err(Failure(msg)) }
    }
}
