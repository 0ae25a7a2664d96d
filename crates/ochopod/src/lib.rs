//! Ochopod: the agent that makes a container a pod of a self-configuring cluster.
//!
//! This crate is the runtime that drives `ochopod-core`'s sans-IO machines with the ZooKeeper
//! (`ochopod-zk`), HTTP (`ochopod-http`) and supervisor (`ochopod-supervisor`) layers, and the
//! library API for pods written in Rust: implement [`Lifecycle`] and hand it to
//! [`Pod::builder`]. `ochopod run --spec` is one [`Lifecycle`] ([`spec_pod::SpecLifecycle`]) run
//! through this same builder.
//!
//! **Architecture invariant:** never depends on clap or anything CLI-specific, and never reads
//! the process environment: the caller passes it in ([`PodBuilder::env`]).
//!
//! ```no_run
//! use ochopod::{Cluster, HookResult, Lifecycle, Pod, ProcessCommand};
//!
//! struct Web;
//!
//! impl Lifecycle for Web {
//!     async fn configure(&self, cluster: &Cluster) -> HookResult<ProcessCommand> {
//!         Ok(ProcessCommand::argv(["python3", "-m", "http.server", "9000"])
//!             .env("PEERS", cluster.grep("", 9000, false)))
//!     }
//! }
//!
//! # async fn demo() -> Result<(), ochopod::Error> {
//! let code = Pod::builder()
//!     .namespace("demo")
//!     .cluster("web")
//!     .zk("127.0.0.1:2181")
//!     .env(std::env::vars())
//!     .run(Web)
//!     .await?;
//! std::process::exit(code);
//! # }
//! ```
#![warn(missing_docs)]

pub mod lifecycle;
mod metrics;
mod runtime;
pub mod spec;
pub mod spec_pod;
mod state;
pub mod template;

pub use lifecycle::{Failure, HookResult, Lifecycle, ProcessCommand, ToolOutput};
pub use ochopod_core::settings::{GiveUp, ModelSettings, ProcessSettings};
/// The view of the cluster handed to hooks: `key`, `index`, `seq`, `size`, `pods`,
/// `dependencies`, `pod`, and [`Cluster::grep`].
pub use ochopod_core::ClusterView as Cluster;
pub use ochopod_core::Registration;
pub use ochopod_supervisor::{PodLog, Reaper};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Errors that stop a pod from running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad or missing settings: the message says which and how to fix it.
    #[error("{0}")]
    Settings(String),
    /// The binding could not tell where the pod runs.
    #[error(transparent)]
    Binding(#[from] ochopod_bindings::Error),
    /// The supervisor could not start.
    #[error("supervisor: {0}")]
    Supervisor(#[from] ochopod_supervisor::Error),
}

/// The leader's settings and the optional cluster probe (the probe itself is
/// [`Lifecycle::probe`]).
pub type Model = ModelSettings;

/// Identity and coordination settings; every `None` falls back to `ochopod_*` variables, then
/// to what the binding finds, then to a default.
#[derive(Clone, Debug, Default)]
pub struct PodConfig {
    /// Namespace (`ochopod_namespace`, default `default`).
    pub namespace: Option<String>,
    /// Cluster (`ochopod_cluster`; required).
    pub cluster: Option<String>,
    /// Binding inputs (binding name, ip, public, zk, zk_service, control port, ports).
    pub explicit: ochopod_bindings::Explicit,
    /// ZooKeeper session timeout (default 5 s, as 1.x).
    pub session_timeout: Option<Duration>,
    /// `digest:user:password` (`ochopod_zk_auth`).
    pub zk_auth: Option<String>,
    /// Keep key and seq here.
    pub state_dir: Option<PathBuf>,
    /// Control-plane token (`ochopod_token`).
    pub token: Option<String>,
    /// Forward the process output into the pod log (default true).
    pub pipe: Option<bool>,
    /// Where the Mesos files and the Kubernetes service account are.
    pub binding_options: ochopod_bindings::Options,
}

/// Builds a pod: settings in, a future that runs it out.
#[derive(Default)]
pub struct PodBuilder {
    config: PodConfig,
    model: ModelSettings,
    process: ProcessSettings,
    env: BTreeMap<String, String>,
    reaper: Option<Reaper>,
    log: Option<PodLog>,
}

/// Entry point of the library API.
pub struct Pod;

impl Pod {
    /// A builder with the defaults of DESIGN sections 5, 6 and 8.
    pub fn builder() -> PodBuilder {
        PodBuilder::default()
    }
}

impl PodBuilder {
    /// The namespace.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.config.namespace = Some(ns.into());
        self
    }

    /// The cluster name.
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.config.cluster = Some(cluster.into());
        self
    }

    /// The ZooKeeper connection string (`h1:2181,h2:2181/chroot` or `zk://...`).
    pub fn zk(mut self, zk: impl Into<String>) -> Self {
        self.config.explicit.zk = Some(zk.into());
        self
    }

    /// The binding (`local`, `generic`, `marathon`, `kubernetes`, ..., `auto`).
    pub fn binding(mut self, binding: impl Into<String>) -> Self {
        self.config.explicit.binding = Some(binding.into());
        self
    }

    /// The control port (a container port).
    pub fn port(mut self, port: u16) -> Self {
        self.config.explicit.port = Some(port);
        self
    }

    /// A port remapping: container port -> host port.
    pub fn map_port(mut self, container: u16, host: u16) -> Self {
        self.config
            .explicit
            .ports
            .insert(container.to_string(), host);
        self
    }

    /// Every identity and coordination setting at once.
    pub fn config(mut self, config: PodConfig) -> Self {
        self.config = config;
        self
    }

    /// The leader's settings.
    pub fn model(mut self, model: ModelSettings) -> Self {
        self.model = model;
        self
    }

    /// The process settings.
    pub fn process(mut self, process: ProcessSettings) -> Self {
        self.process = process;
        self
    }

    /// The environment the pod runs in (e.g. `std::env::vars()`): read by the bindings and
    /// handed to the sub-process.
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
    pub async fn prepare(self) -> Result<PreparedPod, Error> {
        let env = &self.env;
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let found =
            ochopod_bindings::discover(&self.config.explicit, env, &self.config.binding_options)
                .await?;
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
            .ok_or_else(|| {
                Error::Settings(
                    "no cluster name: set [pod] cluster in the spec, --cluster, or ochopod_cluster"
                        .to_string(),
                )
            })?;
        for (what, name) in [("namespace", &namespace), ("cluster", &cluster)] {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::Settings(format!(
                    "bad {what} {name:?}: use letters, digits, '-' and '_' only"
                )));
            }
        }
        let zk_hosts = found.require_zk()?.to_string();
        let zk_auth = self
            .config
            .zk_auth
            .clone()
            .or_else(|| get("ochopod_zk_auth"))
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
        let token = self
            .config
            .token
            .clone()
            .or_else(|| get("ochopod_token"))
            .filter(|t| !t.is_empty());
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
            model: self.model,
            process: self.process,
            pipe: self.config.pipe.unwrap_or(true),
            env: self.env,
            fan_out: 256,
        };
        let reaper = match self.reaper {
            Some(r) => r,
            None => Reaper::install()?,
        };
        Ok(PreparedPod {
            settings,
            reaper,
            log: self.log.unwrap_or_default(),
        })
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

    /// Runs the pod until it stops; returns the agent's exit code.
    pub async fn run<L: Lifecycle>(self, lifecycle: L) -> Result<i32, Error> {
        runtime::run(self.settings, Arc::new(lifecycle), self.reaper, self.log).await
    }
}
