//! Ochopod: the agent that makes a container a pod of a self-configuring cluster.
//!
//! This crate is the runtime that drives `ochopod-core`'s sans-IO machines with the ZooKeeper
//! (`ochopod-zk`), HTTP (`ochopod-http`) and supervisor (`ochopod-supervisor`) layers, and the
//! library API for pods written in Rust: implement [`Lifecycle`] and hand it to
//! [`Pod::builder`]. `ochopod run --spec` is one [`Lifecycle`] ([`spec_pod::SpecLifecycle`]) run
//! through this same builder. Every type the API names is re-exported here (the [`view`],
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
//! [`ModelSettings::default`] and [`ProcessSettings::default`] (each field states its default).
//! The `local` binding (one machine, no NAT) listens on 127.0.0.1 and finds ZooKeeper at
//! 127.0.0.1:2181 unless told otherwise. The cluster name has no default.
#![warn(missing_docs)]

mod clock;
pub mod lifecycle;
mod metrics;
pub mod plan;
mod runtime;
/// The driver with its IO scripted, for this crate's own tests: not an API, no stability.
#[doc(hidden)]
pub mod testing {
    pub use crate::runtime::{start_scripted, PodClient, Scripted};
}
pub mod spec;
pub mod spec_pod;
mod state;
pub mod template;

pub use lifecycle::{Failure, HookResult, Lifecycle, ProcessCommand, ToolOutput};
pub use ochopod_core::settings::{GiveUp, ModelSettings, ProcessSettings};
pub use ochopod_core::{ClusterView, ControlBody, Dependencies, Pods, Registration};
pub use ochopod_supervisor::{PodLog, Program, Reaper};
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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// The binding could not tell where the pod runs.
    #[error(transparent)]
    Binding(#[from] ochopod_bindings::Error),
    /// The supervisor could not start.
    #[error("supervisor: {0}")]
    Supervisor(#[from] ochopod_supervisor::Error),
}

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
    /// Forward the process output into the pod log (default true).
    pub pipe: Option<bool>,
    /// Where the Mesos files and the Kubernetes service account are (default
    /// [`bindings::Options::default`]).
    pub binding_options: Option<bindings::Options>,
}

/// Builds a pod: settings in, a future that runs it out.
///
/// Every setting has a method. A setting left unset falls back to its `ochopod_*` variable in
/// [`PodBuilder::env`], then to what the binding finds, then to its default (see
/// [Defaults](crate#defaults)). A setting is given once: setting it again to another value
/// (by its method or by [`PodBuilder::config`]) makes [`PodBuilder::prepare`] fail with an
/// [`Error::Settings`] naming both, so nothing set is silently dropped.
#[derive(Default)]
pub struct PodBuilder {
    config: PodConfig,
    model: ModelSettings,
    process: ProcessSettings,
    env: BTreeMap<String, String>,
    reaper: Option<Reaper>,
    log: Option<PodLog>,
    /// Which method set each setting, to name both in a conflict.
    set_by: BTreeMap<String, &'static str>,
    /// Settings given two different values, reported by `prepare`.
    conflicts: Vec<String>,
}

/// A secret given inline (setting, then its variable) or as a file (setting, then its
/// variable): one of the two, the file read once and trimmed. Errors name the setting and the
/// file, never the secret.
fn secret(
    (name, inline, var): (&str, Option<String>, &str),
    (file_name, file, file_var): (&str, Option<PathBuf>, &str),
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, Error> {
    let inline = inline.filter(|v| !v.is_empty()).or_else(|| get(var));
    let file = file
        .filter(|f| !f.as_os_str().is_empty())
        .or_else(|| get(file_var).map(PathBuf::from));
    match (inline, file) {
        (Some(_), Some(_)) => Err(Error::Settings(format!(
            "{name} ({var}) and {file_name} ({file_var}) are both set: keep {file_name} only, \
             so the secret stays out of the command line and the environment"
        ))),
        (Some(v), None) => Ok(Some(v)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::Settings(format!(
                    "cannot read {file_name} {}: {} (give a readable file, or unset \
                     {file_name} and {file_var})",
                    path.display(),
                    e
                ))
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(Error::Settings(format!(
                    "{file_name} {} is empty: write the secret in it",
                    path.display()
                )));
            }
            Ok(Some(text.to_string()))
        }
    }
}

/// Entry point of the library API.
pub struct Pod;

impl Pod {
    /// A builder with every default (see [Defaults](crate#defaults)).
    pub fn builder() -> PodBuilder {
        PodBuilder::default()
    }
}

/// Sets `slot` to `value` unless it already holds another value: then records the conflict.
fn set_once<T: PartialEq + std::fmt::Debug>(
    slot: &mut Option<T>,
    value: T,
    setting: &str,
    by: &'static str,
    set_by: &mut BTreeMap<String, &'static str>,
    conflicts: &mut Vec<String>,
) {
    match slot {
        Some(old) if *old != value => {
            let first = set_by.get(setting).copied().unwrap_or("PodBuilder::config");
            conflicts.push(format!(
                "{setting} is set twice, to {old:?} by {first} and to {value:?} by {by}: set it once"
            ));
        }
        _ => {
            *slot = Some(value);
            set_by.insert(setting.to_string(), by);
        }
    }
}

impl PodBuilder {
    fn set<T: PartialEq + std::fmt::Debug>(
        &mut self,
        setting: &str,
        by: &'static str,
        value: T,
        slot: impl FnOnce(&mut PodConfig) -> &mut Option<T>,
    ) {
        set_once(
            slot(&mut self.config),
            value,
            setting,
            by,
            &mut self.set_by,
            &mut self.conflicts,
        );
    }

    /// The namespace (`ochopod_namespace`; default `default`).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.set("namespace", "PodBuilder::namespace", ns.into(), |c| {
            &mut c.namespace
        });
        self
    }

    /// The cluster name (`ochopod_cluster`; required).
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.set("cluster", "PodBuilder::cluster", cluster.into(), |c| {
            &mut c.cluster
        });
        self
    }

    /// The ZooKeeper connection string, `h1:2181,h2:2181/chroot` or `zk://...` (`ochopod_zk`;
    /// default: what the binding finds, 127.0.0.1:2181 for `local`).
    pub fn zk(mut self, zk: impl Into<String>) -> Self {
        self.set("zk", "PodBuilder::zk", zk.into(), |c| &mut c.explicit.zk);
        self
    }

    /// Kubernetes: the Service whose endpoints are ZooKeeper, `name` or `namespace/name`
    /// (`ochopod_zk_service`).
    pub fn zk_service(mut self, service: impl Into<String>) -> Self {
        self.set(
            "zk_service",
            "PodBuilder::zk_service",
            service.into(),
            |c| &mut c.explicit.zk_service,
        );
        self
    }

    /// The binding, one of [`bindings::BINDINGS`] (`ochopod_binding`; default `auto`).
    pub fn binding(mut self, binding: impl Into<String>) -> Self {
        self.set("binding", "PodBuilder::binding", binding.into(), |c| {
            &mut c.explicit.binding
        });
        self
    }

    /// The internal ip other pods reach this one at (`ochopod_ip`; default: the binding's).
    pub fn ip(mut self, ip: impl Into<String>) -> Self {
        self.set("ip", "PodBuilder::ip", ip.into(), |c| &mut c.explicit.ip);
        self
    }

    /// The public ip (`ochopod_public`; default: the binding's, often none).
    pub fn public(mut self, ip: impl Into<String>) -> Self {
        self.set("public", "PodBuilder::public", ip.into(), |c| {
            &mut c.explicit.public
        });
        self
    }

    /// The control port, a container port (`ochopod_port`; default 8080). With the `local`
    /// binding the agent listens on its host port (see [`PodBuilder::map_port`]).
    pub fn port(mut self, port: u16) -> Self {
        self.set("port", "PodBuilder::port", port, |c| &mut c.explicit.port);
        self
    }

    /// A port remapping, container port -> host port (`PORT_<container>`); the other pods
    /// reach this one's `container` port at `host` ([`Registration::host_port`]).
    pub fn map_port(mut self, container: u16, host: u16) -> Self {
        self.map_port_by("PodBuilder::map_port", container.to_string(), host);
        self
    }

    fn map_port_by(&mut self, by: &'static str, container: String, host: u16) {
        let setting = format!("ports.{container}");
        let mut slot = self.config.explicit.ports.get(&container).copied();
        set_once(
            &mut slot,
            host,
            &setting,
            by,
            &mut self.set_by,
            &mut self.conflicts,
        );
        if let Some(host) = slot {
            self.config.explicit.ports.insert(container, host);
        }
    }

    /// The ZooKeeper session timeout (default 5 s, as 1.x).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.set(
            "session_timeout",
            "PodBuilder::session_timeout",
            timeout,
            |c| &mut c.session_timeout,
        );
        self
    }

    /// ZooKeeper credentials, `digest:user:password` (`ochopod_zk_auth`; default none).
    pub fn zk_auth(mut self, auth: impl Into<String>) -> Self {
        self.set("zk_auth", "PodBuilder::zk_auth", auth.into(), |c| {
            &mut c.zk_auth
        });
        self
    }

    /// A file holding the ZooKeeper credentials, `digest:user:password`
    /// (`ochopod_zk_auth_file`); read once at start, surrounding whitespace ignored.
    pub fn zk_auth_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.set(
            "zk_auth_file",
            "PodBuilder::zk_auth_file",
            path.into(),
            |c| &mut c.zk_auth_file,
        );
        self
    }

    /// Keeps the pod's key and seq in this folder, so a restarted container keeps its
    /// identity (`ochopod_state_dir`; default nowhere: a new key at each start).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.set("state_dir", "PodBuilder::state_dir", dir.into(), |c| {
            &mut c.state_dir
        });
        self
    }

    /// The control-plane token the leader and tools must send (`ochopod_token`; default none).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.set("token", "PodBuilder::token", token.into(), |c| &mut c.token);
        self
    }

    /// A file holding the control-plane token (`ochopod_token_file`); read once at start,
    /// surrounding whitespace ignored.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.set("token_file", "PodBuilder::token_file", path.into(), |c| {
            &mut c.token_file
        });
        self
    }

    /// Whether the process output goes into the pod log (`/log`) (default true; `false`
    /// leaves it on the agent's stdout and stderr).
    pub fn pipe(mut self, pipe: bool) -> Self {
        self.set("pipe", "PodBuilder::pipe", pipe, |c| &mut c.pipe);
        self
    }

    /// Where the bindings find the platform's files and how long they wait for its services
    /// (default [`bindings::Options::default`]).
    pub fn binding_options(mut self, options: bindings::Options) -> Self {
        self.set(
            "binding_options",
            "PodBuilder::binding_options",
            options,
            |c| &mut c.binding_options,
        );
        self
    }

    /// Merges every setting of `config` that is `Some` (and every port) into the builder;
    /// what it leaves `None` keeps what earlier calls set. A setting given another value
    /// before is a conflict that [`PodBuilder::prepare`] reports.
    pub fn config(mut self, config: PodConfig) -> Self {
        const BY: &str = "PodBuilder::config";
        let PodConfig {
            namespace,
            cluster,
            explicit,
            session_timeout,
            zk_auth,
            zk_auth_file,
            state_dir,
            token,
            token_file,
            tls_cert,
            tls_key,
            tls_ca,
            tls_server_name,
            tls_open_read_only,
            pipe,
            binding_options,
        } = config;
        let bindings::Explicit {
            binding,
            ip,
            public,
            zk,
            zk_service,
            port,
            ports,
        } = explicit;
        macro_rules! merge {
            ($name:literal, $value:expr, $($slot:tt)+) => {
                if let Some(v) = $value {
                    self.set($name, BY, v, |c| &mut c.$($slot)+);
                }
            };
        }
        merge!("namespace", namespace, namespace);
        merge!("cluster", cluster, cluster);
        merge!("binding", binding, explicit.binding);
        merge!("ip", ip, explicit.ip);
        merge!("public", public, explicit.public);
        merge!("zk", zk, explicit.zk);
        merge!("zk_service", zk_service, explicit.zk_service);
        merge!("port", port, explicit.port);
        merge!("session_timeout", session_timeout, session_timeout);
        merge!("zk_auth", zk_auth, zk_auth);
        merge!("zk_auth_file", zk_auth_file, zk_auth_file);
        merge!("state_dir", state_dir, state_dir);
        merge!("token", token, token);
        merge!("token_file", token_file, token_file);
        merge!("tls_cert", tls_cert, tls_cert);
        merge!("tls_key", tls_key, tls_key);
        merge!("tls_ca", tls_ca, tls_ca);
        merge!("tls_server_name", tls_server_name, tls_server_name);
        merge!("tls_open_read_only", tls_open_read_only, tls_open_read_only);
        merge!("pipe", pipe, pipe);
        merge!("binding_options", binding_options, binding_options);
        for (container, host) in ports {
            self.map_port_by(BY, container, host);
        }
        self
    }

    /// The leader's settings, all at once (default [`ModelSettings::default`]; start from it
    /// and change the fields you need).
    pub fn model(mut self, model: ModelSettings) -> Self {
        self.model = model;
        self
    }

    /// The process settings, all at once (default [`ProcessSettings::default`]; start from it
    /// and change the fields you need).
    pub fn process(mut self, process: ProcessSettings) -> Self {
        self.process = process;
        self
    }

    /// The environment the pod runs in (e.g. `std::env::vars()`): read by the bindings and
    /// for the `ochopod_*` fallbacks, and handed to the sub-process. Default: empty (the
    /// process environment is never read by the library); a second call replaces the first.
    pub fn env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// Uses this reaper (one per process) instead of installing one.
    pub fn reaper(mut self, reaper: Reaper) -> Self {
        self.reaper = Some(reaper);
        self
    }

    /// Uses this pod log (e.g. one shared with a [`spec_pod::SpecLifecycle`]).
    pub fn log(mut self, log: PodLog) -> Self {
        self.log = Some(log);
        self
    }

    /// Finds out where the pod runs and prepares its registration, without starting anything.
    ///
    /// Fails with [`Error::Settings`] for a setting given two values or a bad one,
    /// [`Error::MissingCluster`] without a cluster name, [`Error::Binding`] when the binding
    /// cannot tell where the pod runs.
    pub async fn prepare(self) -> Result<PreparedPod, Error> {
        let (settings, reaper, log) = self.resolve().await?;
        let reaper = match reaper {
            Some(r) => r,
            None => Reaper::install()?,
        };
        Ok(PreparedPod {
            settings,
            reaper,
            log: log.unwrap_or_default(),
        })
    }

    /// Everything `prepare` does but install the reaper.
    async fn resolve(
        self,
    ) -> Result<(runtime::RuntimeSettings, Option<Reaper>, Option<PodLog>), Error> {
        if !self.conflicts.is_empty() {
            return Err(Error::Settings(self.conflicts.join("; ")));
        }
        let env = &self.env;
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let options = self.config.binding_options.clone().unwrap_or_default();
        let found = ochopod_bindings::discover(&self.config.explicit, env, &options).await?;
        let namespace = self
            .config
            .namespace
            .clone()
            .or_else(|| get("ochopod_namespace"))
            .unwrap_or_else(|| "default".to_string());
        let cluster = self
            .config
            .cluster
            .clone()
            .or_else(|| get("ochopod_cluster"))
            .ok_or(Error::MissingCluster)?;
        for (what, name) in [("namespace", &namespace), ("cluster", &cluster)] {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::Settings(format!(
                    "bad {what} name {name:?}: use letters, digits, '-' and '_' only"
                )));
            }
        }
        let zk_hosts = found.require_zk()?.to_string();
        let zk_auth = secret(
            ("zk_auth", self.config.zk_auth.clone(), "ochopod_zk_auth"),
            (
                "zk_auth_file",
                self.config.zk_auth_file.clone(),
                "ochopod_zk_auth_file",
            ),
            &get,
        )?
        .or_else(|| {
            found
                .zk_auth
                .as_ref()
                .map(|(u, p)| format!("digest:{u}:{p}"))
        });
        let state_dir = self
            .config
            .state_dir
            .clone()
            .or_else(|| get("ochopod_state_dir").map(PathBuf::from));
        let (key, seq) = match &state_dir {
            Some(dir) => match state::load(dir).map_err(Error::Settings)? {
                Some((k, s)) => (k, s),
                None => (uuid::Uuid::new_v4().to_string(), None),
            },
            None => (uuid::Uuid::new_v4().to_string(), None),
        };
        let token = secret(
            ("token", self.config.token.clone(), "ochopod_token"),
            (
                "token_file",
                self.config.token_file.clone(),
                "ochopod_token_file",
            ),
            &get,
        )?;
        let tls = self.tls(&get)?;
        let debug = get("ochopod_debug").unwrap_or_else(|| "false".to_string());
        let mut registration = Registration {
            cluster,
            namespace,
            binding: found.binding.clone(),
            fwk: found.binding.clone(),
            ip: found.ip.clone(),
            public: found.public.clone(),
            ports: found.ports.clone(),
            port: found.control_port.to_string(),
            node: found.node.clone(),
            application: found.application.clone(),
            task: found.task.clone(),
            seq,
            zk: zk_hosts.clone(),
            protocol: Some(ochopod_core::PROTOCOL),
            extra: Default::default(),
        };
        registration
            .extra
            .insert("status".to_string(), serde_json::Value::from(""));
        registration
            .extra
            .insert("debug".to_string(), serde_json::Value::from(debug));
        registration.extra.insert(
            "local".to_string(),
            serde_json::Value::from(if found.binding == "local" {
                "true"
            } else {
                "false"
            }),
        );
        // Whether the control plane speaks TLS: a leader that does not (or does) says so
        // instead of failing its calls without a reason.
        registration.extra.insert(
            "tls".to_string(),
            serde_json::Value::from(if tls.is_some() { "true" } else { "false" }),
        );
        registration.extra.insert(
            "start".to_string(),
            serde_json::Value::from(self.process.start.to_string()),
        );
        for (k, v) in &found.settings {
            if matches!(
                k.as_str(),
                "cluster" | "namespace" | "debug" | "local" | "start"
            ) || ochopod_bindings::is_secret(k)
            {
                continue;
            }
            registration
                .extra
                .entry(k.clone())
                .or_insert_with(|| serde_json::Value::from(v.clone()));
        }
        registration.scrub_secrets();
        // Without NAT (the local binding) the agent listens on the host port itself.
        let control_host_port = registration.host_port(found.control_port);
        let listen = if found.binding == "local" {
            std::net::SocketAddr::from(([127, 0, 0, 1], control_host_port))
        } else {
            std::net::SocketAddr::from(([0, 0, 0, 0], found.control_port))
        };
        let session_timeout = self
            .config
            .session_timeout
            .unwrap_or(Duration::from_secs(5));
        if self.model.control_timeout <= self.process.grace {
            tracing::warn!(
                control_timeout = self.model.control_timeout.as_secs_f64(),
                grace = self.process.grace.as_secs_f64(),
                "control_timeout should exceed the process grace: an `on` may include a tear-down"
            );
        }
        let settings = runtime::RuntimeSettings {
            key,
            seq,
            state_dir,
            registration,
            zk: ochopod_zk::ZkSettings {
                connect: zk_hosts,
                session_timeout,
                auth: zk_auth,
            },
            listen,
            token,
            tls,
            model: self.model,
            process: self.process,
            pipe: self.config.pipe.unwrap_or(true),
            env: self.env,
        };
        Ok((settings, self.reaper, self.log))
    }

    /// The control plane's TLS, from the settings and `ochopod_tls_*`: all of cert, key and CA,
    /// or none; every file is read once here so a bad one fails at start.
    fn tls(
        &self,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<(ochopod_http::ServerTls, ochopod_http::ClientTls)>, Error> {
        let c = &self.config;
        let path = |v: &Option<PathBuf>, k: &str| v.clone().or_else(|| get(k).map(PathBuf::from));
        let cert = path(&c.tls_cert, "ochopod_tls_cert");
        let key = path(&c.tls_key, "ochopod_tls_key");
        let ca = path(&c.tls_ca, "ochopod_tls_ca");
        let server_name = c
            .tls_server_name
            .clone()
            .or_else(|| get("ochopod_tls_server_name"));
        let open = match c.tls_open_read_only {
            Some(b) => b,
            None => match get("ochopod_tls_open_read_only").as_deref() {
                None | Some("false" | "0" | "no" | "off") => false,
                Some("true" | "1" | "yes" | "on") => true,
                Some(other) => {
                    return Err(Error::Settings(format!(
                        "bad ochopod_tls_open_read_only {other:?}: use true or false"
                    )))
                }
            },
        };
        let (cert, key, ca) = match (cert, key, ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), "tls_cert (ochopod_tls_cert)"),
                    (key.is_none(), "tls_key (ochopod_tls_key)"),
                    (ca.is_none(), "tls_ca (ochopod_tls_ca)"),
                ]
                .into_iter()
                .filter_map(|(m, n)| m.then_some(n))
                .collect();
                return Err(Error::Settings(format!(
                    "TLS needs the pod's certificate, its key and the cluster's CA: {} missing",
                    missing.join(", ")
                )));
            }
        };
        let server = ochopod_http::ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: Some(ca.clone()),
            open_read_only: open,
        };
        let client = ochopod_http::ClientTls {
            ca,
            cert: Some(cert),
            key: Some(key),
            server_name,
        };
        server
            .check()
            .and_then(|()| client.check())
            .map_err(|e| Error::Settings(e.to_string()))?;
        Ok(Some((server, client)))
    }

    /// Prepares and runs the pod until it stops; returns the agent's exit code (0 after
    /// SIGTERM, non-zero when the circuit breaker gives up with `on_give_up = "exit"`).
    pub async fn run<L: Lifecycle>(self, lifecycle: L) -> Result<i32, Error> {
        self.prepare().await?.run(lifecycle).await
    }
}

/// A pod whose environment is known: its registration can be read (e.g. to hand it to hooks)
/// before it runs.
pub struct PreparedPod {
    settings: runtime::RuntimeSettings,
    reaper: Reaper,
    log: PodLog,
}

impl PreparedPod {
    /// The registration the pod will publish (seq not known yet).
    pub fn registration(&self) -> &Registration {
        &self.settings.registration
    }

    /// The pod's key.
    pub fn key(&self) -> &str {
        &self.settings.key
    }

    /// The environment handed to the sub-process and hooks: the agent's, plus `ochopod` (the
    /// registration JSON, secrets removed).
    pub fn process_env(&self) -> BTreeMap<String, String> {
        let mut env = self.settings.env.clone();
        // The agent's secrets are not the process's.
        for secret in ["ochopod_token", "ochopod_zk_auth"] {
            env.remove(secret);
        }
        env.insert("ochopod".to_string(), self.settings.registration.to_json());
        env
    }

    /// The process-wide reaper.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// The pod log (last 32 KiB, served by `/log`).
    pub fn log(&self) -> &PodLog {
        &self.log
    }

    /// Runs the pod until it stops; returns the agent's exit code. When ZooKeeper answers and
    /// refuses this pod's credential for its cluster's nodes, fails at once with
    /// [`Error::ZkDenied`] (retrying cannot help); when it does not answer yet, the coordinator
    /// keeps trying as usual.
    pub async fn run<L: Lifecycle>(self, lifecycle: L) -> Result<i32, Error> {
        let cluster = self.settings.registration.full_cluster();
        match ochopod_zk::check_access(&self.settings.zk, &cluster).await {
            Ok(ochopod_zk::Access::Granted) => {}
            Ok(ochopod_zk::Access::Unknown(why)) => {
                tracing::debug!(%why, "ZooKeeper access not checked before starting");
            }
            Err(denied @ ochopod_zk::Error::Denied { .. }) => {
                return Err(Error::ZkDenied { cluster, denied })
            }
            Err(e) => tracing::debug!(error = %e, "ZooKeeper access not checked before starting"),
        }
        runtime::run(self.settings, Arc::new(lifecycle), self.reaper, self.log).await
    }
}
