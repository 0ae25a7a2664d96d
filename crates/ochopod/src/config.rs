//! `PodConfig`: the identity and coordination settings as one value.

use std::path::PathBuf;
use std::time::Duration;

use crate::bindings;
#[cfg(doc)]
use crate::PodBuilder;

/// Identity and coordination settings; every `None` falls back to `ochopod_*` variables, then
/// to what the binding finds, then to a default.
///
/// Each field also has a [`PodBuilder`] method; [`PodBuilder::config`] merges a whole
/// `PodConfig` into the builder, and a setting given two different values is refused by
/// [`PodBuilder::prepare`].
#[derive(Clone, Debug, Default)]
pub struct PodConfig {
    /// Namespace (`ochopod_namespace`, default `default`).
    pub namespace: Option<String>,
    /// Cluster (`ochopod_cluster`; required).
    pub cluster: Option<String>,
    /// Binding inputs (binding name, ip, public, zk, zk_service, control port, ports).
    pub explicit: bindings::Explicit,
    /// ZooKeeper session timeout (default 5 s, as 1.x).
    pub session_timeout: Option<Duration>,
    /// `digest:user:password` (`ochopod_zk_auth`).
    pub zk_auth: Option<String>,
    /// A file holding `digest:user:password` (`ochopod_zk_auth_file`): the credential stays
    /// out of the command line and the environment. Not with `zk_auth`.
    pub zk_auth_file: Option<PathBuf>,
    /// Keep key and seq here (`ochopod_state_dir`; default nowhere: a new key at each start).
    pub state_dir: Option<PathBuf>,
    /// Control-plane token (`ochopod_token`; default none: no token required).
    pub token: Option<String>,
    /// A file holding the control-plane token (`ochopod_token_file`): the token stays out of
    /// the command line and the environment. Not with `token`.
    pub token_file: Option<PathBuf>,
    /// The pod's PEM certificate, served by its control plane and presented by its leader
    /// (`ochopod_tls_cert`; with `tls_key` and `tls_ca` the control plane speaks mutual TLS).
    pub tls_cert: Option<PathBuf>,
    /// The PEM key of `tls_cert` (`ochopod_tls_key`).
    pub tls_key: Option<PathBuf>,
    /// The cluster's PEM CA: clients must present a certificate it signed, and pods'
    /// certificates must be signed by it (`ochopod_tls_ca`).
    pub tls_ca: Option<PathBuf>,
    /// The name the leader expects in the pods' certificates (`ochopod_tls_server_name`;
    /// default the pod's IP).
    pub tls_server_name: Option<String>,
    /// Let clients without a certificate read `/info`, `/log`, `/healthz`, `/readyz` and
    /// `/metrics` (`ochopod_tls_open_read_only`; default false).
    pub tls_open_read_only: Option<bool>,
    /// Start the process on the first `on` (`ochopod_start`; default
    /// [`ProcessSettings::start`](crate::ProcessSettings::start), true). `false`: the leader's
    /// `on` only configures until an operator's `on` starts the process.
    pub start: Option<bool>,
    /// Forward the process output into the pod log (default true).
    pub pipe: Option<bool>,
    /// Where the Mesos files and the Kubernetes service account are (default
    /// [`bindings::Options::default`]).
    pub binding_options: Option<bindings::Options>,
}
