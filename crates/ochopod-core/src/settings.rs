//! Settings of the leader (`[model]`: how a cluster is reconfigured) and of the pod (`[process]`:
//! how its process is run), already validated. Each field says its default.
//!
//! Parsing (TOML, env, flags) happens in the runtime and the CLI; these are the plain values the
//! state machines run on.

use std::time::Duration;

/// The default of [`ModelSettings::fan_out`].
pub const DEFAULT_FAN_OUT: usize = 256;

/// The leader's settings for one cluster (the `[model]` table). `ModelSettings::default()`
/// holds the defaults each field names:
///
/// ```
/// # use ochopod_core::settings::ModelSettings;
/// # use std::time::Duration;
/// let d = ModelSettings::default();
/// assert_eq!(d.damper, Duration::ZERO);
/// assert_eq!(d.probe_every, Duration::from_secs(60));
/// assert!(d.depends_on.is_empty() && !d.full_shutdown && !d.sequential && !d.has_probe);
/// assert_eq!(d.control_timeout, Duration::from_secs(90));
/// assert_eq!(d.retry_cap, Duration::from_secs(30));
/// assert_eq!(d.fan_out, 256);
/// assert!(!d.gate);
/// assert_eq!((d.gate_every, d.gate_timeout), (Duration::from_secs(1), Duration::from_secs(300)));
/// assert_eq!(d.dependency_wait, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSettings {
    /// Wait this long after a change before configuring (default 0: at once).
    pub damper: Duration,
    /// Run the cluster probe this often while clean (zero: never; default 60 s).
    pub probe_every: Duration,
    /// Dependencies as written (`db`, `/shared.zk`, `cache-*`; default none).
    pub depends_on: Vec<String>,
    /// Send `off` to every pod before `on` (default false).
    pub full_shutdown: bool,
    /// Send control requests one pod at a time, by key (default false: all at once).
    pub sequential: bool,
    /// How long a pod may take per control call (1.x: `grace`; default 90 s). Keep it above
    /// the process settings' `grace`: an `on` may include a tear-down.
    pub control_timeout: Duration,
    /// Whether a cluster probe is configured (default false; a Rust pod's probe is its
    /// `probe` hook, run only when this is set).
    pub has_probe: bool,
    /// Longest wait between two failed rounds (default 30 s). The agent spreads each wait `d`
    /// uniformly in `[d/2, d]` (see `Leader::with_jitter`).
    pub retry_cap: Duration,
    /// Control requests the leader has in flight at once; the others queue (in the order the
    /// round sends them), and a queued request of a round that ended is dropped, never sent.
    /// 1 or more (0 counts as 1; default 256).
    pub fan_out: usize,
    /// Health-gated rounds (needs `sequential`; default false): after a pod accepts `on`, the
    /// leader runs its sanity check (the `health` task) at once, then every `gate_every`, and
    /// configures the next pod only once it passes; a pod still failing after `gate_timeout`
    /// fails the round with the check's last answer. A pod that does not know `health` (a 1.x
    /// pod answers 400) is not gated.
    pub gate: bool,
    /// How often the gate runs a pod's sanity check while it fails (default 1 s).
    pub gate_every: Duration,
    /// How long the gate waits for a pod's sanity check to pass (default 300 s).
    pub gate_timeout: Duration,
    /// How long the leader waits for the snapshot of a dependency cluster that has registered
    /// pods but no `snapshot` it has seen (its leader is not elected yet or has not written it,
    /// as after every session expired): until then the dependency is "no news" and no round
    /// starts; after it, the leader configures without that cluster (default 10 s; zero: no
    /// wait).
    pub dependency_wait: Duration,
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
            fan_out: DEFAULT_FAN_OUT,
            gate: false,
            gate_every: Duration::from_secs(1),
            gate_timeout: Duration::from_secs(300),
            dependency_wait: Duration::from_secs(10),
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

/// The pod's settings (the `[process]` table and `start`). `ProcessSettings::default()` holds
/// the defaults each field names.
///
/// **Reload or restart:** when a new view arrives while the process runs, a pod that is not
/// `strict` and whose dependencies are unchanged keeps its process and runs its `reload` hook
/// (a Rust pod's default `reload` runs `configure` again, re-rendering what it writes; a spec
/// pod re-renders its templates); otherwise the process is torn down and configured again.
///
/// ```
/// # use ochopod_core::settings::{GiveUp, ProcessSettings};
/// # use std::time::Duration;
/// let d = ProcessSettings::default();
/// assert!(!d.strict && d.start && !d.soft && !d.reload_dependencies);
/// assert_eq!((d.grace, d.check_every), (Duration::from_secs(60), Duration::from_secs(60)));
/// assert_eq!(d.checks, 3);
/// assert_eq!(d.restart_delay, Duration::from_secs(1));
/// assert_eq!((d.restart_delay_max, d.stable_after), (Duration::from_secs(60), Duration::from_secs(60)));
/// assert_eq!(d.on_give_up, GiveUp::Off);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSettings {
    /// Restart the process on every `on`, even when only the cluster's membership changed
    /// (default false: reload instead, as described above).
    pub strict: bool,
    /// Start the process on the first `on` (1.x `ochopod_start`; default true).
    pub start: bool,
    /// How long a tear-down may take before SIGKILL (default 60 s).
    pub grace: Duration,
    /// Never SIGKILL: after `grace`, leave the process alone (default false).
    pub soft: bool,
    /// Failed sanity checks in a row before the circuit breaker trips (default 3).
    pub checks: u32,
    /// Time between sanity checks (default 60 s).
    pub check_every: Duration,
    /// First delay of a crash loop; doubles up to `restart_delay_max` (default 1 s). The agent
    /// spreads each delay `d` uniformly in `[d/2, d]` (see `PodMachine::with_jitter`).
    pub restart_delay: Duration,
    /// Longest delay between two restarts (default 60 s).
    pub restart_delay_max: Duration,
    /// A process that ran this long resets the restart backoff (default 60 s).
    pub stable_after: Duration,
    /// What tripping the circuit breaker does (default [`GiveUp::Off`]).
    pub on_give_up: GiveUp,
    /// A non-strict pod also reloads (instead of restarting) when the members of its
    /// dependencies change, as long as the dependency names stay the same: for pods whose
    /// `reload` hook applies a new backend list (a load balancer). Without it, any change of
    /// a dependency restarts the process (default false).
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
