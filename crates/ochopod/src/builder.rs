//! `Pod::builder()`: every setting has a method; `prepare` resolves them (see `resolve`).

mod resolve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(doc)]
use crate::Registration;
use crate::{
    bindings, Error, Lifecycle, ModelSettings, PodConfig, PodLog, PreparedPod, ProcessSettings,
    Reaper,
};

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

    /// Whether the leader's first `on` starts the process (`ochopod_start`; default
    /// [`ProcessSettings::start`], true). With `false` the leader's `on` only configures until
    /// an operator's `on` (`ochopod on`) starts it. Wins over the `start` of
    /// [`PodBuilder::process`].
    pub fn start(mut self, start: bool) -> Self {
        self.set("start", "PodBuilder::start", start, |c| &mut c.start);
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
            start,
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
        merge!("start", start, start);
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

    /// Uses this pod log (e.g. one shared with a `spec_pod::SpecLifecycle`).
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

    /// Prepares and runs the pod until it stops; returns the agent's exit code (0 after
    /// SIGTERM, non-zero when the circuit breaker gives up with `on_give_up = "exit"`).
    pub async fn run<L: Lifecycle>(self, lifecycle: L) -> Result<i32, Error> {
        self.prepare().await?.run(lifecycle).await
    }
}
