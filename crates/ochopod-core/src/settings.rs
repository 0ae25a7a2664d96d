//! Settings of the leader (DESIGN section 5) and of the pod (section 6), already validated.
//!
//! Parsing (TOML, env, flags) happens in the runtime and the CLI; these are the plain values the
//! state machines run on.

use std::time::Duration;

/// The leader's settings for one cluster (the `[model]` table).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSettings {
    /// Wait this long after a change before configuring.
    pub damper: Duration,
    /// Run the cluster probe this often while clean (zero: never).
    pub probe_every: Duration,
    /// Dependencies as written (`db`, `/shared.zk`, `cache-*`).
    pub depends_on: Vec<String>,
    /// Send `off` to every pod before `on`.
    pub full_shutdown: bool,
    /// Send control requests one pod at a time, by key.
    pub sequential: bool,
    /// Seconds a pod may take per control call (1.x: `grace`).
    pub control_timeout: Duration,
    /// Whether a cluster probe is configured.
    pub has_probe: bool,
    /// Longest wait between two failed rounds.
    pub retry_cap: Duration,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            damper: Duration::ZERO,
            probe_every: Duration::from_secs(60),
            depends_on: Vec::new(),
            full_shutdown: false,
            sequential: false,
            control_timeout: Duration::from_secs(90),
            has_probe: false,
            retry_cap: Duration::from_secs(30),
        }
    }
}

impl ModelSettings {
    /// The per-request HTTP timeout of a control call: 1.25 x `control_timeout`.
    pub fn request_timeout(&self) -> Duration {
        self.control_timeout.mul_f64(1.25)
    }

    /// The first wait after a failed round: max(`damper`, 1 s).
    pub fn retry_base(&self) -> Duration {
        self.damper.max(Duration::from_secs(1))
    }
}

/// What the pod does when its circuit breaker trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// Turn the process off; an operator's `on` restarts it.
    Off,
    /// Exit the agent non-zero so the orchestrator replaces the container.
    Exit,
}

/// The pod's settings (the `[process]` table and `start`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSettings {
    /// Restart the process on every `on`, even when only the cluster's membership changed.
    pub strict: bool,
    /// Start the process on the first `on` (1.x `ochopod_start`).
    pub start: bool,
    /// How long a tear-down may take before SIGKILL.
    pub grace: Duration,
    /// Never SIGKILL: after `grace`, leave the process alone.
    pub soft: bool,
    /// Failed sanity checks in a row before the circuit breaker trips.
    pub checks: u32,
    /// Time between sanity checks.
    pub check_every: Duration,
    /// First delay of a crash loop; doubles up to `restart_delay_max`.
    pub restart_delay: Duration,
    /// Longest delay between two restarts.
    pub restart_delay_max: Duration,
    /// A process that ran this long resets the restart backoff.
    pub stable_after: Duration,
    /// What tripping the circuit breaker does.
    pub on_give_up: GiveUp,
    /// A non-strict pod also reloads (instead of restarting) when the members of its
    /// dependencies change, as long as the dependency names stay the same: for pods whose
    /// `reload` hook applies a new backend list (a load balancer). Without it, any change of
    /// a dependency restarts the process.
    pub reload_dependencies: bool,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            strict: false,
            start: true,
            grace: Duration::from_secs(60),
            soft: false,
            checks: 3,
            check_every: Duration::from_secs(60),
            restart_delay: Duration::from_secs(1),
            restart_delay_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            on_give_up: GiveUp::Off,
            reload_dependencies: false,
        }
    }
}
