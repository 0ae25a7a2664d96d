//! Ochopod's ZooKeeper coordination: session, registration, leader lock, watches, snapshots and
//! the configuration hash. **Never depends on** the HTTP control plane or the supervisor.
//!
//! Two entry points:
//!
//! - [`Coordinator`]: an actor that owns one pod's whole ZooKeeper life.
//!   It registers the pod under `P/pods/`, competes for the cluster lock at `P/coordinator/`
//!   (kazoo-compatible, so 1.x and Rust pods share one lock), and, while it leads, watches the
//!   cluster and its dependencies and performs the leader's fenced writes of `P/snapshot` and
//!   `P/hash`. The runtime talks to it with [`ZkCommand`]s and hears from it through
//!   [`ZkEvent`]s.
//! - [`Directory`]: a read-only view for operators and tools (`ochopod ls`): clusters, pods,
//!   hashes, snapshots, leaders, and a change feed.
//!
//! The core types its signatures name ([`Registration`], [`Pods`], [`Epoch`],
//! [`DependencyPattern`]) are re-exported here: with `ochopod-http` for the control plane, a
//! tool needs no other Ochopod crate.
//!
//! Layout (with `P = /ochopod/clusters/NS.CL`, under the connection string's chroot if any):
//!
//! | node | kind | written by |
//! |---|---|---|
//! | `P/pods/<key>.<seq>` | ephemeral sequential, registration JSON | every pod |
//! | `P/coordinator/<hex32>__lock__<seq>` | ephemeral sequential lock contender, data = key | every pod |
//! | `P/snapshot` | ephemeral, JSON `{key: registration}` | the leader, fenced by its lock |
//! | `P/hash` | persistent, the committed configuration hash | the leader, fenced by its lock |
//!
//! **No polling**: membership and dependency changes arrive by ZooKeeper watches. An idle
//! cluster sends ZooKeeper nothing but session pings.
#![warn(missing_docs)]

mod access;
mod coordinator;
mod directory;
mod layout;
mod settings;
mod unreadable;

#[cfg(test)]
extern crate self as ochopod_zk;
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_common;

pub use access::{check_access, Access};
pub use coordinator::{
    Coordinator, CoordinatorHandle, DependencyUpdate, PodId, SessionState, ZkCommand, ZkEvent,
};
pub use directory::{Directory, DirectoryWatch, PodEntry};
pub use layout::{cluster_path, ROOT};
pub use settings::ZkSettings;

// What this crate's signatures name, so a tool needs no other dependency to call them.
pub use ochopod_core::{DependencyPattern, Epoch, Pods, Registration};

/// Errors of the ZooKeeper layer, each naming what failed and, for bad input, how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad settings or arguments (connection string, auth, cluster name, pod key).
    #[error("{0}")]
    Input(String),
    /// A ZooKeeper operation failed.
    #[error("ZooKeeper {op} {path}: {source}")]
    Zk {
        /// The operation (`connect`, `get_data`, ...).
        op: &'static str,
        /// The path it was applied to (or the hosts, for `connect`).
        path: String,
        /// What ZooKeeper or the client said.
        #[source]
        source: zookeeper_client::Error,
    },
    /// ZooKeeper refused a write (`NoAuth`): the node belongs to another ZooKeeper credential,
    /// or needs one and this client gave none.
    #[error(
        "ZooKeeper refused to {op} {path}: the cluster's nodes belong to another ZooKeeper \
         credential, or need one and none was given; give the cluster's credential \
         (digest:user:password) with zk_auth_file ([pod] zk_auth_file, ochopod_zk_auth_file, \
         --zk-auth-file)"
    )]
    Denied {
        /// The operation (`create`, `set_data`, ...).
        op: &'static str,
        /// The path it was applied to.
        path: String,
    },
    /// The coordinator's task has stopped (it left the cluster, or its runtime went away).
    #[error("the ZooKeeper coordinator has stopped")]
    Stopped,
    /// The ZooKeeper session behind a [`Directory`] ended (expired or closed): connect again.
    #[error("the ZooKeeper session ended: connect again")]
    SessionEnded,
}

impl Error {
    pub(crate) fn zk(
        op: &'static str,
        path: impl Into<String>,
    ) -> impl FnOnce(zookeeper_client::Error) -> Error {
        let path = path.into();
        move |source| match source {
            zookeeper_client::Error::NoAuth => Error::Denied { op, path },
            source => Error::Zk { op, path, source },
        }
    }
}
