//! The library's error: what stops a pod from running.

#[cfg(doc)]
use crate::PodBuilder;

/// Errors that stop a pod from running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad or missing settings: the message says which and names the builder method that sets
    /// it (and the `ochopod_*` variable, when there is one).
    #[error("{0}")]
    Settings(String),
    /// No cluster name: neither [`PodBuilder::cluster`] nor `ochopod_cluster` in
    /// [`PodBuilder::env`] gave one.
    #[error(
        "no cluster name: call PodBuilder::cluster, or set ochopod_cluster in the environment \
         given to PodBuilder::env"
    )]
    MissingCluster,
    /// The control plane cannot listen on its address (most often: another pod on this
    /// machine uses the port).
    #[error(
        "cannot listen on {addr} for the control plane: {source}; if another pod uses this \
         port, choose another with PodBuilder::port (or ochopod_port), or remap it with \
         PodBuilder::map_port"
    )]
    Listen {
        /// The address the control plane tried.
        addr: std::net::SocketAddr,
        /// Why it could not listen.
        #[source]
        source: std::io::Error,
    },
    /// ZooKeeper refused this pod's credential for its cluster's nodes (they belong to
    /// another credential, or need one and none was given): fix `zk_auth_file`.
    #[error("cluster {cluster}: {denied}")]
    ZkDenied {
        /// The cluster, `namespace.cluster`.
        cluster: String,
        /// What ZooKeeper refused.
        denied: ochopod_zk::Error,
    },
    /// A `depends_on` entry ([`ModelSettings::depends_on`](crate::ModelSettings::depends_on))
    /// that is not a dependency name; the message says which and what to write.
    #[error("{0}")]
    Dependency(ochopod_core::Error),
    /// The coordinator refused its ZooKeeper settings (`ochopod_zk::Error::Input`: the
    /// connection string, the auth, the names) or could not start.
    #[error("{0}")]
    Zk(ochopod_zk::Error),
    /// The leader's control client could not be built (its TLS configuration).
    #[error("{0}")]
    Client(ochopod_http::Error),
    /// The binding could not tell where the pod runs.
    #[error(transparent)]
    Binding(#[from] ochopod_bindings::Error),
    /// The supervisor could not start.
    #[error("supervisor: {0}")]
    Supervisor(#[from] ochopod_supervisor::Error),
}
