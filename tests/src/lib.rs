//! Harness for Ochopod's cross-crate end-to-end suites: real ZooKeeper servers, real `ochopod`
//! agent processes, real sub-processes and real HTTP on loopback, observed from the outside.
//!
//! This crate only drives the agent as a black box through its contract (`ochopod run
//! --spec pod.toml`, `/info`, `/control/*`, the ZooKeeper layout of `docs/protocol.md`); it
//! must never depend on the agent's internals (runtime, zk, http, supervisor crates), so a suite
//! proves what operators and 1.x tools see.
//!
//! # Pieces
//! - [`ZkServer`]: a throw-away standalone ZooKeeper (`scripts/zk.sh`), restartable on its port;
//!   [`Ensemble`]: three quorum members on loopback, each stoppable on its own.
//! - [`Proxy`]: a fault-injecting TCP proxy (cut, blackhole, delay, restore) to put between one
//!   agent and ZooKeeper.
//! - [`Agent`]: one `ochopod run` process built from a [`PodSpec`] (or a spec text or folder),
//!   with signals (`kill9`, `sigterm`, `sigstop`, `sigcont`) and HTTP (`info`, `control`).
//! - [`Kazoo`]: an independent ZooKeeper reader/writer (python kazoo, `tests/py/zkdump.py`);
//!   [`ClusterZk`]: one cluster as ZooKeeper holds it, read with it; [`wait_settled`]: a cluster
//!   at rest by `/info` and ZooKeeper; [`control_with_epoch`]: a control call as a leader of a
//!   given epoch sends it.
//! - [`wait_until`]: poll a condition until a deadline; failures show the last observed state.
//! - [`free_port`]: a loopback port nobody else in this test process was given.
//!
//! Everything started (servers, agents, their sub-processes, proxies) is stopped on `Drop`,
//! also when a test panics.
//!
//! ```no_run
//! use ochopod_e2e::*;
//! use std::time::Duration;
//! # fn main() -> Result<()> {
//! let zk = ZkServer::start()?;
//! let mut spec = PodSpec::new("demo", "web", &zk.connect_string())?;
//! spec.command("sleep 600");
//! let agent = Agent::spawn(&spec)?;
//! let info = wait_until(Duration::from_secs(30), "the pod to run", || {
//!     let info = agent.info().map_err(|e| e.to_string())?;
//!     if info.process == "running" { Ok(info) } else { Err(format!("{info:?}")) }
//! })?;
//! # let _ = info; Ok(()) }
//! ```
#![warn(missing_docs)]

mod agent;
pub mod boxes;
mod cluster;
pub mod docker;
mod error;
pub mod interop;
mod kazoo;
mod ports;
mod proxy;
pub mod scenario;
pub mod stand_ins;
pub mod supervision;
pub mod tools;
mod util;
mod wait;
mod zk;

pub use agent::{
    agent_binary, describe, infos_by_key, Agent, PodSpec, Reply, SpecSource, NO_BUILD, OCHOPOD_BIN,
};
pub use cluster::{control_with_epoch, wait_settled, ClusterZk, Settled};
pub use error::{Error, Result};
pub use kazoo::{ensure_python_deps, Kazoo, ZNode};
pub use ochopod_core::wire::Info;
pub use ports::free_port;
pub use proxy::{Proxy, ProxyMode};
pub use util::workspace_root;
pub use wait::{wait_until, wait_until_with};
pub use zk::{Ensemble, ZkServer};
