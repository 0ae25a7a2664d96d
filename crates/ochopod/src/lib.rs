//! Ochopod: the agent that makes a container a pod of a self-configuring cluster.
//!
//! This crate is the runtime that drives `ochopod-core`'s sans-IO machines with the ZooKeeper
//! (`ochopod-zk`), HTTP (`ochopod-http`) and supervisor (`ochopod-supervisor`) layers, and the
//! library API for pods written in Rust: implement [`Lifecycle`] and hand it to
//! [`Pod::builder`]. `ochopod run --spec` is one [`Lifecycle`] (`spec_pod::SpecLifecycle`, in the
//! default feature `spec` with the spec file and its templates) run through this same builder;
//! a Rust pod may leave the feature out (`default-features = false`). Every type the API names is re-exported here (the [`view`],
//! [`bindings`] and [`supervisor`] modules hold those with clashing names): a pod needs this one
//! dependency.
//!
//! **Architecture invariant:** never depends on clap or anything CLI-specific, and never reads
//! the process environment: the caller passes it in ([`PodBuilder::env`]).
//!
//! # A pod
//!
//! A web server whose `cluster.txt` says where the pod sits in its cluster. Two copies run side
//! by side on one machine with the `local` binding, each with its own control port
//! (`ochopod_port`) and its own host port for the server (`PORT_9000`): when the second joins,
//! the first one's `cluster.txt` says `index 0 of 2` while its server keeps running (see
//! [Reload or restart](lifecycle#reload-or-restart)).
//!
//! ```text
//! ochopod_zk=127.0.0.1:2181 ochopod_binding=local ochopod_port=8081 PORT_9000=19001 \
//!     WEB_DIR=/tmp/web-1 cargo run --bin web
//! ochopod_zk=127.0.0.1:2181 ochopod_binding=local ochopod_port=8082 PORT_9000=19002 \
//!     WEB_DIR=/tmp/web-2 cargo run --bin web
//! curl -s 127.0.0.1:19001/cluster.txt
//! ```
//!
//! ```no_run
#![doc = include_str!("../docs/web_pod.rs")]
//! ```
//!
//! # Logs
//!
//! The runtime logs through [`tracing`](https://docs.rs/tracing) (spans carry the pod's key and
//! cluster): without a subscriber, as in the example above, nothing is printed. A configuration
//! round that fails (a pod answers 401, a hook fails) is logged at WARN, a round that succeeds at
//! INFO. The process's own output goes to the pod log (`/log`) and, by default, nowhere else.
//! Add [`PodLog::layer`] of the pod's log ([`PodBuilder::log`], [`PreparedPod::log`]) to the
//! subscriber, as the `ochopod` binary does, and the pod log also holds the agent's events,
//! interleaved with the output in Ochopod 1.x's line format (`asctime - LEVEL - message`,
//! process lines `pid N : line`).
//!
//! # Defaults
//!
//! Without settings, a pod uses the `auto` binding (Kubernetes, Marathon, else `generic`), control
//! port 8080 (`ochopod_port`), namespace `default`, a 5 s ZooKeeper session, and
//! [`ModelSettings::default`] and [`ProcessSettings::default`] (each field states its default;
//! `ochopod_start` stands in for [`ProcessSettings::start`] unless [`PodBuilder::start`] is set).
//! The `local` binding (one machine, no NAT) listens on 127.0.0.1 and finds ZooKeeper at
//! 127.0.0.1:2181 unless told otherwise. The cluster name has no default.
#![warn(missing_docs)]

mod builder;
mod clock;
mod config;
mod error;
pub mod lifecycle;
mod metrics;
pub mod plan;
mod prepared;
mod runtime;
/// The driver with its IO scripted, for this crate's own tests: not an API, no stability.
#[doc(hidden)]
pub mod testing {
    pub use crate::runtime::{start_scripted, PodClient, Scripted};
}
#[cfg(feature = "spec")]
pub mod spec;
#[cfg(feature = "spec")]
pub mod spec_pod;
mod state;
#[cfg(feature = "spec")]
pub mod template;

pub use builder::{Pod, PodBuilder};
pub use config::PodConfig;
pub use error::Error;
pub use lifecycle::{Failure, HookResult, Lifecycle, ProcessCommand, ToolOutput};
pub use ochopod_core::settings::{GiveUp, ModelSettings, ProcessSettings};
pub use ochopod_core::{ClusterView, ControlBody, Dependencies, Pods, Registration};
pub use ochopod_supervisor::{PodLog, Program, Reaper};
pub use prepared::PreparedPod;
/// JSON, as the hooks `signal` and `sanity_check` take and return it.
pub use serde_json;

/// The cluster view a hook is given, and what it is built from (re-exported from
/// `ochopod-core`, with the error of [`ClusterView::new`] and [`Registration::from_slice`]).
pub mod view {
    pub use ochopod_core::{ClusterView, ControlBody, Dependencies, Error, Pods, Registration};
}

/// Where the pod runs: the binding inputs of [`PodConfig`] and the error of
/// [`Error::Binding`] (re-exported from `ochopod-bindings`).
pub mod bindings {
    pub use ochopod_bindings::{Error, Explicit, Options, BINDINGS, DEFAULT_CONTROL_PORT};
}

/// The process side: what [`ProcessCommand`] runs, the reaper and pod log the builder takes
/// (with what their methods name), and the error of [`Error::Supervisor`] (re-exported from
/// `ochopod-supervisor`).
pub mod supervisor {
    pub use ochopod_supervisor::{
        Child, CommandSpec, Error, ExitStatus, Output, OutputMode, PodLog, Program, Reaper,
        CAPTURE_CAP, POD_LOG_CAP,
    };
}

/// One name per thing: the aliases that once named a type twice are gone (checked by these
/// doc tests, which must not compile).
///
/// ```compile_fail
/// use ochopod::Cluster; // ClusterView
/// ```
/// ```compile_fail
/// use ochopod::Model; // ModelSettings
/// ```
/// ```compile_fail
/// use ochopod_http::ClientError; // ochopod_http::Error
/// ```
/// ```compile_fail
/// use ochopod_core::leader::Reply; // leader::Answer (ochopod_http::Reply is the HTTP one)
/// ```
/// ```compile_fail
/// use ochopod_core::pod::ControlRequest; // pod::PodRequest (ochopod_http's is the HTTP one)
/// ```
#[cfg(doctest)]
pub struct OneNamePerThing;
