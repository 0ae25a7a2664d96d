//! Ochopod bindings: where does this pod run? Each binding turns a given environment map (and
//! the platform's own files or APIs) into one `Environment`. **Never depends on** ZooKeeper,
//! HTTP or the supervisor.
//!
//! The environment is never read from the process: the caller hands it over as a map (the CLI
//! passes the process environment), and files are only read under the roots of [`Options`], so
//! every binding runs in tests with a made-up environment and a temporary directory.
//!
//! Precedence, highest first: [`Explicit`] (what the caller was given: the pod builder's
//! settings, or `ochopod run`'s flags and spec, merged by it), then the `ochopod_*` variables, then what the binding discovers on the platform.
//!
//! | binding | ip | node | application / task | ZooKeeper when not given |
//! |---|---|---|---|---|
//! | `local` | 127.0.0.1 | hostname | cluster or `local` / `local-<pid>` | 127.0.0.1:2181 |
//! | `generic` | first non-loopback IPv4 | hostname | cluster or `generic` / hostname | none |
//! | `marathon` | `LIBPROCESS_IP`, `HOST` | `HOST` | `MARATHON_APP_ID` / `MESOS_TASK_ID` | the Mesos agent's files |
//! | `kubernetes` | the pod's `podIP` | node name | owner / pod name | endpoints of `zk_service` |
//! | `*-ec2` | as above, with public ip and node (instance id) from IMDSv2 | | | |
//!
//! `auto` picks `kubernetes` when `KUBERNETES_SERVICE_HOST` is set, `marathon` when
//! `MARATHON_APP_ID` or `MESOS_TASK_ID` is, else `generic`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ochopod_bindings::Error> {
//! use std::collections::BTreeMap;
//! use ochopod_bindings::{discover, Explicit, Options};
//!
//! let env = BTreeMap::from([
//!     ("ochopod_binding".to_string(), "local".to_string()),
//!     ("ochopod_cluster".to_string(), "web".to_string()),
//!     ("PORT_9000".to_string(), "9001".to_string()),
//! ]);
//! let found = discover(&Explicit::default(), &env, &Options::default()).await?;
//! assert_eq!(found.ip, "127.0.0.1");
//! assert_eq!(found.ports["9000"], 9001);
//! assert_eq!(found.zk.as_deref(), Some("127.0.0.1:2181"));
//! assert_eq!(found.settings["cluster"], "web");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod error;
mod facts;
mod instance;
mod platform;
mod zk;

#[cfg(feature = "ec2")]
mod ec2;
#[cfg(feature = "ec2-api")]
mod ec2_api;
#[cfg(feature = "kubernetes")]
mod kubernetes;

pub use error::Error;
pub use zk::{parse_zk, ZkAddress, DEFAULT_ZK_PORT, MESOS_ZK_FILES};

/// The control port when neither a flag, the spec nor `ochopod_port` names one.
pub const DEFAULT_CONTROL_PORT: u16 = 8080;

/// The binding names, as accepted by [`Explicit::binding`] and `ochopod_binding`.
pub const BINDINGS: [&str; 7] = [
    "local",
    "generic",
    "marathon",
    "marathon-ec2",
    "kubernetes",
    "kubernetes-ec2",
    "auto",
];

/// Where the pod runs: the answer of [`discover`].
#[derive(Clone, PartialEq, Eq)]
pub struct Environment {
    /// The binding that answered (`auto` is resolved: never `auto`).
    pub binding: String,
    /// Internal IPv4 the other pods reach this one at.
    pub ip: String,
    /// External IPv4, or empty.
    pub public: String,
    /// Host or instance id.
    pub node: String,
    /// Application (Marathon app, Kubernetes owner, ...).
    pub application: String,
    /// Task (Mesos task id, Kubernetes pod name, ...).
    pub task: String,
    /// Container port (as a string) -> host port. Always holds the control port.
    pub ports: BTreeMap<String, u16>,
    /// The control port inside the container (default 8080).
    pub control_port: u16,
    /// ZooKeeper as `h1:2181,h2:2181[/chroot]`, without credentials; `None` when nothing named
    /// one and the platform has no default (see [`Environment::require_zk`]).
    pub zk: Option<String>,
    /// `user:password` from a `zk://user:password@...` address (never publish it).
    pub zk_auth: Option<(String, String)>,
    /// The other `ochopod_*` variables, prefix stripped (`ochopod_cluster` -> `cluster`).
    /// Those the bindings consume (`ip`, `public`, `port`, `zk`, `zk_service`, `binding`) are
    /// not repeated here.
    pub settings: BTreeMap<String, String>,
}

impl Environment {
    /// The ZooKeeper address, or a one-line error telling how to give one.
    pub fn require_zk(&self) -> Result<&str, Error> {
        let binding = facts::static_name(&self.binding);
        self.zk.as_deref().ok_or_else(|| {
            Error::missing(
                binding,
                "no ZooKeeper address",
                "set ochopod_zk (PodBuilder::zk in a Rust pod, [pod] zk or --zk for ochopod run), e.g. ochopod_zk=10.0.0.5:2181",
            )
        })
    }
}

/// Secrets (ZooKeeper credentials, settings named `*token*`, `*password*`, `*secret*`) are
/// redacted.
impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings: BTreeMap<&str, &str> = self
            .settings
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("Environment")
            .field("binding", &self.binding)
            .field("ip", &self.ip)
            .field("public", &self.public)
            .field("node", &self.node)
            .field("application", &self.application)
            .field("task", &self.task)
            .field("ports", &self.ports)
            .field("control_port", &self.control_port)
            .field("zk", &self.zk)
            .field(
                "zk_auth",
                &self.zk_auth.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("settings", &settings)
            .finish()
    }
}

/// True for setting names that hold secrets (`*token*`, `*password*`, `*secret*`, `zk_auth`).
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("token") || n.contains("password") || n.contains("secret") || n == "zk_auth"
}

/// What flags and the spec said; the caller merges them (flags beat the spec). Every `Some`
/// beats the environment, which beats the platform.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explicit {
    /// One of [`BINDINGS`]; `None` reads `ochopod_binding`, then falls back to `auto`.
    pub binding: Option<String>,
    /// Internal ip (beats `ochopod_ip` and the platform).
    pub ip: Option<String>,
    /// Public ip (beats `ochopod_public` and the platform).
    pub public: Option<String>,
    /// ZooKeeper address, or `ec2-tag:KEY=VALUE` (beats `ochopod_zk` and the platform).
    pub zk: Option<String>,
    /// Kubernetes: the Service whose endpoints are ZooKeeper, `name` or `namespace/name`
    /// (beats `ochopod_zk_service`).
    pub zk_service: Option<String>,
    /// Control port (beats `ochopod_port`).
    pub port: Option<u16>,
    /// Container port -> host port (the spec's `[ports]`; merges over `PORT_<n>`).
    pub ports: BTreeMap<String, u16>,
}

/// Where the platform's files are and how long to wait for its services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Root under which the Mesos agent's files are read (default `/`).
    pub files_root: PathBuf,
    /// The Kubernetes service-account directory: `token`, `ca.crt`, `namespace`
    /// (default `/var/run/secrets/kubernetes.io/serviceaccount`).
    pub service_account_dir: PathBuf,
    /// Per-request timeout for the EC2 instance metadata service (default 1 s).
    pub metadata_timeout: Duration,
    /// Per-request timeout for the Kubernetes and EC2 APIs (default 10 s).
    pub api_timeout: Duration,
    /// How long the Kubernetes binding waits for its pod to get a `podIP` (default 60 s).
    pub pod_ip_timeout: Duration,
    /// Delay between two reads of the pod while it has no `podIP` (default 1 s).
    pub retry_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            files_root: PathBuf::from("/"),
            service_account_dir: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount"),
            metadata_timeout: Duration::from_secs(1),
            api_timeout: Duration::from_secs(10),
            pod_ip_timeout: Duration::from_secs(60),
            retry_every: Duration::from_secs(1),
        }
    }
}

/// Finds out where the pod runs. `env` is the environment to use (the CLI passes the process
/// environment); nothing else is read from the process.
pub async fn discover(
    explicit: &Explicit,
    env: &BTreeMap<String, String>,
    opts: &Options,
) -> Result<Environment, Error> {
    platform::discover(explicit, env, opts).await
}
