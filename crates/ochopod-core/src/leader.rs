//! The leader's reconfiguration machine, sans IO: when the cluster or a dependency changes it
//! waits out the damper, then runs a round (`check` every pod, `on` every pod, commit the
//! snapshot and hash, `ok`), and retries a failed round with backoff.
//!
//! # Call order
//!
//! Create a [`Leader`] when the pod takes the lock, then feed it what ZooKeeper says and what the
//! pods answer; after every `handle_*` call, drain [`Leader::poll_action`] until it returns
//! `None`, then arm a timer for [`Leader::poll_timeout`] and call [`Leader::handle_timeout`] when
//! it fires. Time is always passed in; the machine never reads a clock.
//!
//! 1. [`Leader::handle_elected`] once, with the committed hash and the first membership.
//! 2. [`Leader::handle_members`] and [`Leader::handle_dependency`] on every watch event.
//! 3. [`Leader::handle_reply`] for every [`LeaderAction::Control`] it asked for (in any order).
//! 4. [`Leader::handle_commit`] after every [`LeaderAction::Commit`].
//! 5. [`Leader::handle_probe`] after every [`LeaderAction::Probe`].
//! 6. [`Leader::handle_connection`] when the ZooKeeper session disconnects or comes back.
//! 7. [`Leader::handle_pause`] when the operator pauses or resumes the cluster (before
//!    [`Leader::handle_elected`] too, with the pause read at election).
//!
//! # A dependency without a snapshot
//!
//! A dependency cluster that has registered pods but whose `snapshot` this leader has not seen
//! (a newly elected leader after every session expired: the snapshot was ephemeral, and the
//! dependency's own new leader rewrites it a moment later) is no news: no round starts until
//! its snapshot arrives or [`ModelSettings::dependency_wait`] has passed since it was first
//! seen that way; then the leader configures with what it has. A snapshot that vanishes after
//! it was seen keeps its last view (no news) for as long as the cluster has pods.
//!
//! # Pause
//!
//! While the cluster is paused the leader keeps tracking membership and dependencies (and
//! reports what changed) but starts no round, not even a retry; a round already under way
//! finishes. Resuming starts one round at once if the cluster differs from its committed
//! configuration.
//!
//! # Health gate
//!
//! With [`ModelSettings::gate`] in sequential mode, a pod that accepted `on` is asked `health`
//! (its sanity check, run now) at once, then every `gate_every` while it fails; the next pod is
//! asked `on` only once it passed, and the round commits only once the last one passed. A pod
//! still failing `gate_timeout` after its `on` fails the round, with the check's last answer
//! as the why. A pod that answers 400 (a 1.x pod does not know `health`) is not gated.
//!
//! When leadership is lost, drop the machine: it holds no state worth keeping.

use crate::deps::DependencyPattern;
use crate::hash::config_hash;
use crate::jitter::Jitter;
use crate::settings::ModelSettings;
use crate::timer::{TimerKind, TimerTable};
use crate::wire::{
    utc_text, ControlBody, Dependencies, Pause, PauseStatus, Pods, RoundReport, Task, ROUND_OK,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the leader asks the runtime to do.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaderAction {
    /// Send `task` to pod `key`; answer with [`Leader::handle_reply`] (except for `ok`, which is
    /// fire and forget: its answer may be fed back or not, it is only logged).
    Control {
        /// The round this request belongs to.
        round: u64,
        /// `check`, `off`, `on` or `ok`.
        task: Task,
        /// The receiving pod's key.
        key: String,
        /// The body, shared by every request of this step; the runtime sets `key` per pod.
        body: Arc<ControlBody>,
        /// The whole-second timeout for the URL (`/control/<task>/<secs>`).
        timeout_secs: u64,
        /// The HTTP request timeout (1.25 x `control_timeout`).
        request_timeout: Duration,
    },
    /// Write `snapshot` then `hash` with fenced writes; answer with [`Leader::handle_commit`].
    Commit {
        /// The round being committed.
        round: u64,
        /// The new configuration hash.
        hash: String,
        /// The pods that accepted `on`.
        snapshot: Pods,
    },
    /// Rewrite the ephemeral `snapshot` (a new leader whose committed hash still matches).
    WriteSnapshot {
        /// The live pods, which are the pods of the committed configuration.
        snapshot: Pods,
    },
    /// Run the cluster probe; answer with [`Leader::handle_probe`].
    Probe {
        /// The current view of the cluster (key empty).
        body: Arc<ControlBody>,
    },
    /// A round ended (committed or aborted): for `/info`, metrics and logs.
    RoundEnded {
        /// Committed, or aborted and why.
        outcome: RoundOutcome,
        /// The round's report (its `started_ms` is the runtime's to fill in: the machine reads
        /// no wall clock).
        report: RoundReport,
    },
}

/// How a round ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Every pod took its configuration and the commit landed.
    Committed,
    /// The round stopped, and why (it is retried with backoff).
    Aborted(String),
}

impl RoundOutcome {
    /// The report's `outcome` text: `ok`, or why the round stopped.
    pub fn text(&self) -> &str {
        match self {
            RoundOutcome::Committed => ROUND_OK,
            RoundOutcome::Aborted(why) => why,
        }
    }
}

/// A pod's answer to a control request, typed by the control plane's client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// What the answer means for the round.
    pub verdict: Verdict,
    /// How the pod's answer read (`200`, `406: <why>`, `connection refused`), for the round's
    /// report.
    pub said: String,
}

impl Answer {
    /// An answer with its verdict and how it read.
    pub fn new(verdict: Verdict, said: impl Into<String>) -> Self {
        Answer {
            verdict,
            said: said.into(),
        }
    }
}

/// What a pod's answer means for the round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The pod did what it was asked.
    Accepted,
    /// The pod is dead: it leaves the configuration while this leader leads.
    Dead,
    /// The pod refused (not ready, stale epoch, a failed hook): the round stops.
    Refused,
    /// The pod could not take the request as sent: the round stops, except for `health`, which
    /// a 1.x pod does not know (it is then not gated).
    BadRequest,
    /// No answer: connection refused, timeout, ...: the round stops.
    Unreachable,
}

/// What the leader knows of one cluster its dependencies match.
#[derive(Clone, Debug, Default, PartialEq)]
struct DepCluster {
    /// The last snapshot seen (kept as "no news" while the snapshot node is missing).
    pods: Pods,
    /// Since when the cluster has pods but this leader has seen no snapshot of it: a new leader
    /// holds its round up to [`ModelSettings::dependency_wait`] from then rather than configure
    /// without it (after every session expired, the dependency's new leader rewrites its
    /// snapshot a moment later, and a round without it would restart every pod twice).
    awaiting: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    /// The committed hash matches the cluster.
    Clean,
    /// Something changed: configure when [`Timer::Damper`] fires.
    Pending,
    /// The last round failed: retry when [`Timer::Retry`] fires.
    Backoff,
    /// A round is under way.
    Round(Box<Round>),
}

#[derive(Clone, Debug, PartialEq)]
struct Round {
    id: u64,
    started: Instant,
    task: Task,
    members: Pods,
    dependencies: Dependencies,
    /// Pods of the current step still to answer.
    waiting: BTreeSet<String>,
    /// Sequential mode: pods of the current step not yet asked, in key order.
    queue: VecDeque<String>,
    answers: BTreeMap<String, String>,
    /// Set once `on` succeeded and the commit was asked for.
    committing: Option<String>,
    /// Why it runs, what joined and left, the hash it commits: for the round's report.
    why: Vec<String>,
    joined: Vec<String>,
    left: Vec<String>,
    hash: String,
    /// Health-gated sequential rounds: the pod that accepted `on` and whose sanity check the
    /// round waits on before it asks the next pod.
    gate: Option<Gate>,
}

/// A health gate under way (see [`ModelSettings::gate`]). When its check runs next is
/// [`Timer::Gate`]: stopped while a check is under way.
#[derive(Clone, Debug, PartialEq)]
struct Gate {
    key: String,
    /// A check still failing after this fails the round. Not a timer: it is judged when the
    /// check answers (the last check is due at this instant at the latest).
    deadline: Instant,
    /// The check's last failure.
    last: String,
    /// Checks run so far.
    runs: u32,
}

/// The leader's timers (their deadlines live in one [`TimerTable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Start the round of a change once the damper ran out ([`Phase::Pending`]).
    Damper,
    /// Start the retry of a failed round once its backoff ran out ([`Phase::Backoff`]).
    Retry,
    /// Run the health-gated pod's sanity check again (stopped while one is under way).
    Gate,
    /// Run the cluster probe (every `probe_every` while clean).
    Probe,
}

impl Timer {
    const COUNT: usize = 4;
}

impl TimerKind for Timer {
    const ALL: &'static [Timer] = &[Timer::Damper, Timer::Retry, Timer::Gate, Timer::Probe];
    fn slot(self) -> usize {
        self as usize
    }
}

/// The leader's reconfiguration machine for one cluster. See the module docs for the call order.
#[derive(Debug)]
pub struct Leader {
    settings: ModelSettings,
    cluster: String,
    patterns: Vec<DependencyPattern>,
    members: Pods,
    dep_clusters: BTreeMap<String, DepCluster>,
    dead: BTreeSet<String>,
    committed: Option<String>,
    phase: Phase,
    connected: bool,
    elected: bool,
    rounds: u64,
    failures: u32,
    actions: VecDeque<LeaderAction>,
    status: String,
    timers: TimerTable<Timer, { Timer::COUNT }>,
    /// Spreads the retry backoff; `None`: exact delays.
    jitter: Option<Jitter>,
    probing: bool,
    last_failure: Option<String>,
    dirty_since: Option<Instant>,
    pause: Option<Pause>,
    /// Set by a resume that left changes pending: the next round runs for the operator.
    resumed: bool,
    /// A round sent `on` (or `off`) and did not commit: some pods may hold a view other than
    /// the committed one, so the cluster stays dirty, even with the committed hash, until a
    /// round commits.
    unsettled: bool,
    /// The last configuration this leader knows of (committed, or found committed at
    /// election): what a paused cluster's pending changes are measured against.
    baseline: Option<(Pods, Dependencies)>,
}

impl Leader {
    /// A leader for cluster `cluster` (`ns.cl`) with resolved dependency patterns. Its retry
    /// backoff waits the exact delays of the settings (see [`Leader::with_jitter`]).
    pub fn new(settings: ModelSettings, cluster: &str, patterns: Vec<DependencyPattern>) -> Self {
        Leader {
            settings,
            cluster: cluster.to_string(),
            patterns,
            members: Pods::new(),
            dep_clusters: BTreeMap::new(),
            dead: BTreeSet::new(),
            committed: None,
            phase: Phase::Clean,
            connected: true,
            elected: false,
            rounds: 0,
            failures: 0,
            actions: VecDeque::new(),
            status: String::new(),
            timers: TimerTable::default(),
            jitter: None,
            probing: false,
            last_failure: None,
            dirty_since: None,
            pause: None,
            resumed: false,
            unsettled: false,
            baseline: None,
        }
    }

    /// Spreads every retry delay `d` of a failed round with `jitter`, uniformly in `[d/2, d]`
    /// ([`Jitter::spread`]), so that the leaders of clusters that fail together (ZooKeeper or a
    /// shared dependency went away) do not retry in lockstep. The agent seeds it per leadership
    /// term; a machine without it waits the exact delays (the rules' tests read them as
    /// written). The damper is not a backoff and is never spread.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Continues the round numbering of an earlier leadership term of the same process (pass
    /// that term's [`Leader::last_round_id`]). Round ids then stay unique for the process's
    /// life, so a reply or commit result of a round from an earlier term, arriving late, can
    /// never be taken for one of a round of this term.
    pub fn continue_rounds(mut self, last_round_id: u64) -> Self {
        self.rounds = last_round_id;
        self
    }

    /// Leadership is lost (deposed, session expired, the agent leaves): the machine is done.
    /// Its pending actions are dropped (a round under way is not reported: its requests must
    /// not go out, and the next leader runs its own round); returns the last round id, to
    /// continue the numbering in a later term ([`Leader::continue_rounds`]).
    pub fn abandon(self) -> u64 {
        self.rounds
    }

    /// The id of the last round this leader started (or was continued from); 0 before any.
    pub fn last_round_id(&self) -> u64 {
        self.rounds
    }

    /// Leadership starts: the committed hash read from `P/hash`, whether `P/snapshot` exists, the
    /// current members and the snapshots of every matching dependency cluster.
    pub fn handle_elected(
        &mut self,
        now: Instant,
        committed_hash: Option<String>,
        members: Pods,
        dependencies: Vec<(String, Option<Pods>, bool)>,
    ) {
        self.elected = true;
        self.committed = committed_hash;
        self.members = members;
        for (cluster, snapshot, has_pods) in dependencies {
            self.apply_dependency(now, &cluster, snapshot, has_pods);
        }
        let hash = self.current_hash();
        if self.committed.as_deref() == Some(hash.as_str()) {
            // The cluster is as the previous leader left it: restore the ephemeral snapshot.
            self.actions.push_back(LeaderAction::WriteSnapshot {
                snapshot: self.live_members(),
            });
            self.baseline = Some((self.live_members(), self.dependency_views()));
        }
        self.evaluate(now);
    }

    /// The membership of `P/pods` changed; `members` is the whole new set.
    pub fn handle_members(&mut self, now: Instant, members: Pods) {
        self.members = members;
        // A dead pod whose node is gone is forgotten: if it comes back (same key, from a
        // `state_dir`), it is a new process and gets configured again.
        let members = &self.members;
        self.dead.retain(|k| members.contains_key(k));
        // A pod the current step still waits on (or has yet to ask) left ZooKeeper: the step
        // cannot succeed, so abort now instead of waiting out its request timeout.
        if let Phase::Round(r) = &self.phase {
            let gone = r
                .waiting
                .iter()
                .chain(r.queue.iter())
                .chain(r.gate.as_ref().map(|g| &g.key))
                .find(|k| !self.members.contains_key(*k));
            if let (Some(key), None) = (gone, &r.committing) {
                let why = format!("pod {key} left the cluster during {}", r.task);
                self.abort(now, why);
            }
        }
        self.evaluate(now);
    }

    /// A matching dependency cluster changed: its snapshot (`None` when the node is missing)
    /// and whether it still has registered pods.
    pub fn handle_dependency(
        &mut self,
        now: Instant,
        cluster: &str,
        snapshot: Option<Pods>,
        has_pods: bool,
    ) {
        self.apply_dependency(now, cluster, snapshot, has_pods);
        self.evaluate(now);
    }

    /// The ZooKeeper session disconnected (`false`) or came back (`true`). While disconnected
    /// no round starts and none commits; a round under way is aborted.
    pub fn handle_connection(&mut self, now: Instant, connected: bool) {
        self.connected = connected;
        if !connected {
            if let Phase::Round(_) = self.phase {
                self.abort(
                    now,
                    "ZooKeeper connection lost during the round".to_string(),
                );
            }
        } else {
            self.evaluate(now);
        }
    }

    /// The operator paused the cluster (`Some`, also when the pause's reason changed) or
    /// resumed it (`None`). Resuming starts a round at once if anything changed meanwhile.
    pub fn handle_pause(&mut self, now: Instant, pause: Option<Pause>) {
        let resumed = self.pause.is_some() && pause.is_none();
        self.pause = pause;
        if resumed {
            if let Some(timer) = self.round_timer() {
                // The changes gathered while paused: no damper, no backoff left to wait out.
                self.timers.set(timer, now);
                self.resumed = true;
            }
        }
        self.evaluate(now);
    }

    /// The operator's pause, while the cluster is paused.
    pub fn pause(&self) -> Option<&Pause> {
        self.pause.as_ref()
    }

    /// A paused cluster's report for `/info`: since when, why and what is pending.
    pub fn pause_status(&self) -> Option<PauseStatus> {
        let pause = self.pause.as_ref()?;
        let pending =
            self.unsettled || self.committed.as_deref() != Some(self.current_hash().as_str());
        let mut status = PauseStatus {
            since_ms: pause.since_ms,
            reason: pause.reason.clone(),
            pending,
            ..Default::default()
        };
        if let Some((pods, deps)) = &self.baseline {
            let live = self.live_members();
            status.known = true;
            status.joined = live
                .keys()
                .filter(|k| !pods.contains_key(*k))
                .cloned()
                .collect();
            status.left = pods
                .keys()
                .filter(|k| !live.contains_key(*k))
                .cloned()
                .collect();
            status.dependencies_changed = *deps != self.dependency_views();
        }
        Some(status)
    }

    /// A pod answered (or failed to answer) a control request of round `round`.
    pub fn handle_reply(&mut self, now: Instant, round: u64, key: &str, reply: Answer) {
        let gated = self.gated();
        let Phase::Round(r) = &mut self.phase else {
            return;
        };
        if r.id != round || r.committing.is_some() {
            return;
        }
        if r.gate.as_ref().is_some_and(|g| g.key == key) && self.timers.get(Timer::Gate).is_none() {
            return self.gate_reply(now, key, reply);
        }
        if !r.waiting.remove(key) {
            return;
        }
        let task = r.task;
        let text = match reply.verdict {
            Verdict::Unreachable => format!("{task} failed: {}", reply.said),
            _ => format!("{task} {}", reply.said),
        };
        r.answers.insert(key.to_string(), text.clone());
        match reply.verdict {
            Verdict::Accepted if task == Task::On && gated => {
                // Hold the next pod until this one's sanity check passes.
                r.gate = Some(Gate {
                    key: key.to_string(),
                    deadline: now + self.settings.gate_timeout,
                    last: String::new(),
                    runs: 0,
                });
                self.timers.set(Timer::Gate, now);
                self.gate_send(now);
                return;
            }
            Verdict::Accepted => {}
            Verdict::Dead => {
                // The pod is dead: drop it and remember it while leading.
                self.dead.insert(key.to_string());
                r.members.remove(key);
                if task == Task::On {
                    // Every other pod was just configured with it: configure them again.
                    let why = format!("pod {key} is dead during on");
                    self.abort(now, why);
                    return;
                }
            }
            Verdict::Refused | Verdict::BadRequest | Verdict::Unreachable => {
                self.abort(now, format!("pod {key}: {text}"));
                return;
            }
        }
        self.advance();
    }

    /// The commit of round `round` landed (`Ok`) or failed.
    pub fn handle_commit(&mut self, now: Instant, round: u64, result: Result<(), String>) {
        let Phase::Round(r) = &self.phase else {
            return;
        };
        if r.id != round || r.committing.is_none() {
            return;
        }
        match result {
            Ok(()) => {
                let r = match std::mem::replace(&mut self.phase, Phase::Clean) {
                    Phase::Round(r) => r,
                    _ => unreachable!("checked above"),
                };
                self.committed = r.committing.clone();
                self.baseline = Some((r.members.clone(), r.dependencies.clone()));
                self.failures = 0;
                self.last_failure = None;
                self.unsettled = false;
                self.actions.push_back(LeaderAction::RoundEnded {
                    outcome: RoundOutcome::Committed,
                    report: RoundReport {
                        started_ms: 0,
                        duration_ms: millis(now.saturating_duration_since(r.started)),
                        outcome: ROUND_OK.to_string(),
                        answers: r.answers,
                        why: r.why,
                        joined: r.joined,
                        left: r.left,
                        hash: r.hash,
                    },
                });
                self.timers.set(Timer::Probe, now);
                self.evaluate(now);
            }
            Err(e) => self.abort(now, format!("commit failed: {e}")),
        }
    }

    /// The cluster probe answered: `Ok(status)` or `Err(message)`.
    pub fn handle_probe(&mut self, now: Instant, result: Result<String, String>) {
        if !self.probing {
            // A result nobody waits for (a probe of an earlier leadership term).
            return;
        }
        self.probing = false;
        self.status = match result {
            Ok(s) => s.trim().to_string(),
            Err(e) => format!("* {}", e.trim()),
        };
        self.timers
            .set(Timer::Probe, now + self.settings.probe_every);
    }

    /// A timer fired (call it whenever `now >= poll_timeout()`, spurious calls are fine).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.round_timer() {
            Some(timer)
                if self.timers.is_due(timer, now)
                    && self.pause.is_none()
                    && self.held(now).is_none() =>
            {
                self.start_round(now);
            }
            Some(_) => {}
            None => self.gate_send(now),
        }
        if self.probe_due(now) {
            self.probing = true;
            self.timers.stop(Timer::Probe);
            self.actions.push_back(LeaderAction::Probe {
                body: Arc::new(ControlBody {
                    pods: self.live_members(),
                    dependencies: self.dependency_views(),
                    key: String::new(),
                }),
            });
        }
    }

    /// The next action to carry out, one at a time.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<LeaderAction> {
        self.actions.pop_front()
    }

    /// When [`Leader::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Only the timers `handle_timeout` would act on now count: any other deadline would be a
        // busy loop for the runtime. Nothing fires while disconnected.
        if !self.connected {
            return None;
        }
        let round_timer = self.round_timer();
        let in_round = matches!(self.phase, Phase::Round(_));
        // While a dependency's snapshot is awaited past the round's deadline, the round waits
        // for the end of that wait instead.
        let held = round_timer
            .and_then(|t| self.timers.get(t))
            .and_then(|deadline| self.held(deadline))
            .map(|(until, _)| until)
            .filter(|_| self.pause.is_none());
        let next = self.timers.next(|timer| match timer {
            Timer::Damper | Timer::Retry => {
                round_timer == Some(timer) && self.pause.is_none() && held.is_none()
            }
            Timer::Gate => in_round,
            // Same conditions as `probe_due`.
            Timer::Probe => {
                self.probe_enabled() && matches!(self.phase, Phase::Clean) && !self.probing
            }
        });
        next.into_iter().chain(held).min()
    }

    /// `leader`, `leader (configuration pending)`, `leader (configuring)`, ...
    pub fn state(&self) -> &'static str {
        match (&self.phase, self.connected) {
            (_, false) => "leader (suspended: ZooKeeper disconnected)",
            (Phase::Round(_), _) if self.pause.is_some() => "leader (paused, finishing a round)",
            _ if self.pause.is_some() => "leader (paused)",
            (Phase::Clean, _) => "leader",
            (Phase::Pending, _) => "leader (configuration pending)",
            (Phase::Backoff, _) => "leader (retrying)",
            (Phase::Round(_), _) => "leader (configuring)",
        }
    }

    /// The `status` string of `/info`: the probe's result, or the pending countdown.
    pub fn status(&self, now: Instant) -> String {
        if let Some(p) = self.pause_status() {
            let mut out = match p.since_ms {
                0 => "paused".to_string(),
                ms => format!("paused since {}", utc_text(ms)),
            };
            if !p.reason.is_empty() {
                out.push_str(&format!(" ({})", p.reason));
            }
            if !p.pending {
                out.push_str(": nothing pending");
            } else if !p.known {
                out.push_str(": changes pending");
            } else {
                let mut what = Vec::new();
                if !p.joined.is_empty() {
                    what.push(format!("{} joined", p.joined.len()));
                }
                if !p.left.is_empty() {
                    what.push(format!("{} left", p.left.len()));
                }
                if p.dependencies_changed {
                    what.push("dependencies changed".to_string());
                }
                if what.is_empty() {
                    what.push("a round to retry".to_string());
                }
                out.push_str(&format!(": pending {}", what.join(", ")));
            }
            return out;
        }
        match &self.phase {
            Phase::Pending | Phase::Backoff => {
                let deadline = self.round_timer().and_then(|t| self.timers.get(t));
                if let Some((until, cluster)) = self.held(deadline.map_or(now, |d| d.max(now))) {
                    let left = until.saturating_duration_since(now).as_secs_f64();
                    return format!(
                        "configuration held up to {left:.1} s for the snapshot of dependency \
                         cluster {cluster}"
                    );
                }
                let left = deadline
                    .map_or(Duration::ZERO, |d| d.saturating_duration_since(now))
                    .as_secs_f64();
                format!("configuration in {left:.1} s")
            }
            Phase::Round(r) => match &r.gate {
                Some(g) if g.last.is_empty() => {
                    format!("configuring: waiting for pod {}'s sanity check", g.key)
                }
                Some(g) => format!(
                    "configuring: waiting for pod {}'s sanity check ({} failed: {})",
                    g.key, g.runs, g.last
                ),
                None => "configuring".to_string(),
            },
            Phase::Clean => self.status.clone(),
        }
    }

    /// Since when the cluster differs from its committed configuration (`None` while clean).
    pub fn dirty_since(&self) -> Option<Instant> {
        self.dirty_since
    }

    /// Why the last round failed, while the leader retries.
    pub fn round_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// The hash last committed (read at election or written since).
    pub fn committed_hash(&self) -> Option<&str> {
        self.committed.as_deref()
    }

    /// Pods found dead while leading.
    pub fn dead(&self) -> &BTreeSet<String> {
        &self.dead
    }

    /// The hash of the cluster as it is now (live members and dependency views).
    pub fn current_hash(&self) -> String {
        config_hash(&self.members, &self.dead, &self.dependency_views())
    }

    /// The view of every dependency, by name as written: the union of its matching clusters.
    pub fn dependency_views(&self) -> Dependencies {
        crate::deps::views(
            &self.patterns,
            &self.cluster,
            self.dep_clusters.iter().map(|(c, d)| (c.as_str(), &d.pods)),
        )
    }

    fn apply_dependency(
        &mut self,
        now: Instant,
        cluster: &str,
        snapshot: Option<Pods>,
        has_pods: bool,
    ) {
        if !crate::deps::matches_any(&self.patterns, cluster, &self.cluster) {
            return;
        }
        match (snapshot, has_pods) {
            (Some(pods), _) => {
                let dep = DepCluster {
                    pods,
                    awaiting: None,
                };
                self.dep_clusters.insert(cluster.to_string(), dep);
            }
            // No snapshot while the cluster still has pods: no news, keep the last view; a
            // cluster never seen with a snapshot is awaited (see the module docs).
            (None, true) => {
                self.dep_clusters
                    .entry(cluster.to_string())
                    .or_insert_with(|| DepCluster {
                        pods: Pods::new(),
                        awaiting: Some(now),
                    });
            }
            // No snapshot and no pods: the cluster is gone.
            (None, false) => {
                self.dep_clusters.remove(cluster);
            }
        }
    }

    fn live_members(&self) -> Pods {
        self.members
            .iter()
            .filter(|(k, _)| !self.dead.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The timer that starts the next round: the damper while pending, the backoff while
    /// retrying, none while clean or configuring.
    fn round_timer(&self) -> Option<Timer> {
        match self.phase {
            Phase::Pending => Some(Timer::Damper),
            Phase::Backoff => Some(Timer::Retry),
            Phase::Clean | Phase::Round(_) => None,
        }
    }

    fn probe_enabled(&self) -> bool {
        self.settings.has_probe && !self.settings.probe_every.is_zero()
    }

    fn probe_due(&self, now: Instant) -> bool {
        self.probe_enabled()
            && self.connected
            && !self.probing
            && matches!(self.phase, Phase::Clean)
            && self.timers.is_due(Timer::Probe, now)
    }

    /// Until when a round is held for a dependency cluster whose snapshot has not come yet, and
    /// which one (`None` when nothing is awaited any more at `now`).
    fn held(&self, now: Instant) -> Option<(Instant, &str)> {
        self.dep_clusters
            .iter()
            .filter_map(|(cluster, dep)| {
                let until = dep.awaiting? + self.settings.dependency_wait;
                (until > now).then_some((until, cluster.as_str()))
            })
            .max()
    }

    /// Compares the current hash with the committed one and moves between clean and pending.
    fn evaluate(&mut self, now: Instant) {
        if !self.elected {
            return;
        }
        let dirty =
            self.unsettled || self.committed.as_deref() != Some(self.current_hash().as_str());
        match (&self.phase, dirty) {
            (Phase::Round(_), _) => {} // re-evaluated when the round ends
            (Phase::Clean, true) => {
                self.phase = Phase::Pending;
                self.timers.set(Timer::Damper, now + self.settings.damper);
            }
            // Back to the committed value before the damper ran out: nothing restarts.
            (Phase::Pending, false) | (Phase::Backoff, false) => {
                self.phase = Phase::Clean;
                self.timers.stop(Timer::Damper);
                self.timers.stop(Timer::Retry);
                if self.baseline.is_none() {
                    // A leader elected while a pod was briefly gone (its hash differed then)
                    // has not written the ephemeral snapshot yet: the cluster is as committed
                    // again, so restore it now, as on an election with a matching hash.
                    self.actions.push_back(LeaderAction::WriteSnapshot {
                        snapshot: self.live_members(),
                    });
                    self.baseline = Some((self.live_members(), self.dependency_views()));
                }
                self.failures = 0;
                self.last_failure = None;
                if self.timers.get(Timer::Probe).is_none() {
                    self.timers.set(Timer::Probe, now);
                }
            }
            (Phase::Clean, false) => {
                if self.timers.get(Timer::Probe).is_none() && !self.probing {
                    self.timers.set(Timer::Probe, now);
                }
            }
            (Phase::Pending, true) | (Phase::Backoff, true) => {}
        }
        match self.phase {
            Phase::Clean => self.dirty_since = None,
            _ => {
                self.dirty_since.get_or_insert(now);
            }
        }
        if self.connected {
            self.handle_timeout(now);
        }
    }

    fn start_round(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        self.rounds += 1;
        let members = self.live_members();
        let dependencies = self.dependency_views();
        let mut why = Vec::new();
        let (mut joined, mut left) = (Vec::new(), Vec::new());
        match &self.baseline {
            Some((pods, deps)) => {
                joined = members
                    .keys()
                    .filter(|k| !pods.contains_key(*k))
                    .cloned()
                    .collect();
                left = pods
                    .keys()
                    .filter(|k| !members.contains_key(*k))
                    .cloned()
                    .collect();
                if !joined.is_empty() {
                    why.push("joined".to_string());
                }
                if !left.is_empty() {
                    why.push("left".to_string());
                }
                if *deps != dependencies {
                    why.push("dependency".to_string());
                }
            }
            None => why.push("elected".to_string()),
        }
        if std::mem::take(&mut self.resumed) {
            why.push("operator".to_string());
        }
        if self.failures > 0 {
            why.push("retry".to_string());
        }
        let hash = config_hash(&members, &BTreeSet::new(), &dependencies);
        let mut round = Round {
            id: self.rounds,
            started: now,
            task: Task::Check,
            members,
            dependencies,
            waiting: BTreeSet::new(),
            queue: VecDeque::new(),
            answers: BTreeMap::new(),
            committing: None,
            why,
            joined,
            left,
            hash,
            gate: None,
        };
        self.begin_step(&mut round, Task::Check);
        self.timers.stop(Timer::Damper);
        self.timers.stop(Timer::Retry);
        self.timers.stop(Timer::Gate);
        self.phase = Phase::Round(Box::new(round));
        self.advance();
    }

    /// Queues the requests of step `task` for every member of the round.
    fn begin_step(&mut self, round: &mut Round, task: Task) {
        round.task = task;
        round.queue = round.members.keys().cloned().collect();
        round.waiting.clear();
    }

    /// Sends what can be sent, and moves to the next step when the current one is done.
    fn advance(&mut self) {
        loop {
            let Phase::Round(mut round) = std::mem::replace(&mut self.phase, Phase::Clean) else {
                return;
            };
            if round.gate.is_some() {
                self.phase = Phase::Round(round);
                return;
            }
            // Send: everything at once, or one at a time in sequential mode.
            if !round.queue.is_empty() && (!self.settings.sequential || round.waiting.is_empty()) {
                let body = Arc::new(ControlBody {
                    pods: round.members.clone(),
                    dependencies: round.dependencies.clone(),
                    key: String::new(),
                });
                while let Some(key) = round.queue.pop_front() {
                    if !round.members.contains_key(&key) {
                        continue;
                    }
                    round.waiting.insert(key.clone());
                    if matches!(round.task, Task::On | Task::Off) {
                        self.unsettled = true;
                    }
                    self.actions
                        .push_back(self.control(round.id, round.task, key, &body));
                    if self.settings.sequential {
                        break;
                    }
                }
            }
            if !round.waiting.is_empty() || !round.queue.is_empty() {
                self.phase = Phase::Round(round);
                return;
            }
            // The step is complete: every remaining member accepted.
            let next = match round.task {
                Task::Check if self.settings.full_shutdown => Task::Off,
                Task::Check | Task::Off => Task::On,
                _ => Task::Ok,
            };
            if next == Task::Ok {
                let body = Arc::new(ControlBody {
                    pods: round.members.clone(),
                    dependencies: round.dependencies.clone(),
                    key: String::new(),
                });
                for key in round.members.keys() {
                    self.actions
                        .push_back(self.control(round.id, Task::Ok, key.clone(), &body));
                }
                let hash = config_hash(&round.members, &BTreeSet::new(), &round.dependencies);
                round.task = Task::Ok;
                round.committing = Some(hash.clone());
                self.actions.push_back(LeaderAction::Commit {
                    round: round.id,
                    hash,
                    snapshot: round.members.clone(),
                });
                self.phase = Phase::Round(round);
                return;
            }
            self.begin_step(&mut round, next);
            self.phase = Phase::Round(round);
        }
    }

    /// Health-gated rounds are on (they need sequential mode).
    fn gated(&self) -> bool {
        self.settings.gate && self.settings.sequential
    }

    /// Runs the gated pod's sanity check when it is due.
    fn gate_send(&mut self, now: Instant) {
        let Phase::Round(r) = &mut self.phase else {
            return;
        };
        let Some(g) = &mut r.gate else {
            return;
        };
        if !self.connected || !self.timers.is_due(Timer::Gate, now) {
            return;
        }
        self.timers.stop(Timer::Gate);
        g.runs += 1;
        let (id, key) = (r.id, g.key.clone());
        let body = Arc::new(ControlBody {
            pods: r.members.clone(),
            dependencies: r.dependencies.clone(),
            key: String::new(),
        });
        let action = self.control(id, Task::Health, key, &body);
        self.actions.push_back(action);
    }

    /// The gated pod's sanity check answered.
    fn gate_reply(&mut self, now: Instant, key: &str, reply: Answer) {
        let Phase::Round(r) = &mut self.phase else {
            return;
        };
        let Some(g) = &mut r.gate else {
            return;
        };
        let text = match reply.verdict {
            Verdict::Unreachable => format!("health failed: {}", reply.said),
            _ => format!("health {}", reply.said),
        };
        match reply.verdict {
            Verdict::Accepted => {
                r.answers.insert(key.to_string(), text);
                r.gate = None;
                self.advance();
            }
            Verdict::BadRequest => {
                // A pod that does not know the task (1.x): it cannot be gated.
                r.answers
                    .insert(key.to_string(), format!("{text} (not gated)"));
                r.gate = None;
                self.advance();
            }
            Verdict::Dead => {
                self.dead.insert(key.to_string());
                let why = format!("pod {key} is dead during its health gate");
                self.abort(now, why);
            }
            _ => {
                r.answers.insert(key.to_string(), text.clone());
                g.last = text;
                if now >= g.deadline {
                    let waited =
                        now.saturating_duration_since(g.deadline) + self.settings.gate_timeout;
                    let why = format!(
                        "pod {key}: its sanity check did not pass within {:.0} s of its on \
                         ({} checks; the last: {})",
                        waited.as_secs_f64(),
                        g.runs,
                        g.last
                    );
                    self.abort(now, why);
                } else {
                    let next = (now + self.settings.gate_every).min(g.deadline);
                    self.timers.set(Timer::Gate, next);
                }
            }
        }
    }

    fn control(
        &self,
        round: u64,
        task: Task,
        key: String,
        body: &Arc<ControlBody>,
    ) -> LeaderAction {
        LeaderAction::Control {
            round,
            task,
            key,
            body: Arc::clone(body),
            timeout_secs: self.settings.control_timeout.as_secs_f64().ceil() as u64,
            request_timeout: self.settings.request_timeout(),
        }
    }

    fn abort(&mut self, now: Instant, why: String) {
        if let Phase::Round(r) = std::mem::replace(&mut self.phase, Phase::Clean) {
            let mut answers = r.answers;
            for key in r.waiting {
                answers
                    .entry(key)
                    .or_insert_with(|| format!("{} abandoned", r.task));
            }
            let checking = self.timers.get(Timer::Gate).is_none();
            if let Some(g) = r.gate.filter(|g| checking && g.last.is_empty()) {
                answers.insert(g.key, "health abandoned".to_string());
            }
            self.actions.push_back(LeaderAction::RoundEnded {
                outcome: RoundOutcome::Aborted(why.clone()),
                report: RoundReport {
                    started_ms: 0,
                    duration_ms: millis(now.saturating_duration_since(r.started)),
                    outcome: why.clone(),
                    answers,
                    why: r.why,
                    joined: r.joined,
                    left: r.left,
                    hash: r.hash,
                },
            });
        }
        self.failures += 1;
        let exp = self.failures.saturating_sub(1).min(16);
        let delay = self
            .settings
            .retry_base()
            .saturating_mul(1u32 << exp)
            .min(self.settings.retry_cap.max(self.settings.retry_base()));
        let delay = match &mut self.jitter {
            Some(j) => j.spread(delay),
            None => delay,
        };
        self.last_failure = Some(why);
        self.phase = Phase::Backoff;
        self.timers.stop(Timer::Damper);
        self.timers.stop(Timer::Gate);
        self.timers.set(Timer::Retry, now + delay);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
// The tests take one real instant as the arbitrary origin of their simulated time.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::wire::Registration;

    fn pods(keys: &[&str]) -> Pods {
        keys.iter()
            .map(|k| {
                let reg = Registration {
                    cluster: "web".into(),
                    namespace: "demo".into(),
                    ip: "127.0.0.1".into(),
                    port: "8080".into(),
                    ..Default::default()
                };
                (k.to_string(), reg)
            })
            .collect()
    }

    #[test]
    fn dirty_since_spans_pending_and_round_and_clears_on_commit() {
        let t0 = Instant::now();
        let settings = ModelSettings {
            damper: Duration::from_secs(30),
            ..Default::default()
        };
        let mut l = Leader::new(settings, "demo.web", Vec::new());
        l.handle_elected(t0, None, pods(&["a"]), Vec::new());
        assert_eq!(l.dirty_since(), Some(t0));
        let t1 = t0 + Duration::from_secs(30);
        l.handle_timeout(t1);
        assert_eq!(l.dirty_since(), Some(t0), "still dirty while configuring");
        let round = match l.poll_action() {
            Some(LeaderAction::Control { round, .. }) => round,
            other => panic!("expected check, got {other:?}"),
        };
        l.handle_reply(t1, round, "a", Answer::new(Verdict::Accepted, "200"));
        l.handle_reply(t1, round, "a", Answer::new(Verdict::Accepted, "200"));
        l.handle_commit(t1, round, Ok(()));
        assert_eq!(l.dirty_since(), None, "clean after the commit");
    }

    fn first_control(l: &mut Leader) -> (u64, Task, String) {
        match l.poll_action() {
            Some(LeaderAction::Control {
                round, task, key, ..
            }) => (round, task, key),
            other => panic!("expected a control request, got {other:?}"),
        }
    }

    /// A new leadership term of the same process continues the round ids, so a late reply and
    /// a late commit result of the earlier term's round 1 do not count for the new round.
    #[test]
    fn a_new_term_never_takes_an_earlier_terms_replies() {
        let t0 = Instant::now();
        let mut old = Leader::new(ModelSettings::default(), "demo.web", Vec::new());
        old.handle_elected(t0, None, pods(&["a", "b"]), Vec::new());
        let (r1, _, _) = first_control(&mut old);
        assert_eq!(r1, 1);
        // Deposed mid-round, elected again: a fresh machine continuing the numbering.
        let mut l = Leader::new(ModelSettings::default(), "demo.web", Vec::new())
            .continue_rounds(old.last_round_id());
        l.handle_elected(t0, None, pods(&["a", "b"]), Vec::new());
        let (r2, task, _) = first_control(&mut l);
        assert_eq!((r2, task), (2, Task::Check));
        while l.poll_action().is_some() {}
        // The old term's answers (its `on` of round 1, say) arrive now: ignored.
        l.handle_reply(t0, r1, "a", Answer::new(Verdict::Accepted, "200"));
        l.handle_reply(t0, r1, "b", Answer::new(Verdict::Accepted, "200"));
        l.handle_commit(t0, r1, Ok(()));
        assert!(
            l.poll_action().is_none(),
            "no step may advance on another round's replies"
        );
        // The new round's own replies move it to `on`.
        l.handle_reply(t0, r2, "a", Answer::new(Verdict::Accepted, "200"));
        l.handle_reply(t0, r2, "b", Answer::new(Verdict::Accepted, "200"));
        let (r, task, _) = first_control(&mut l);
        assert_eq!((r, task), (r2, Task::On));
    }

    fn pause(reason: &str) -> Pause {
        Pause {
            since_ms: 1_764_604_800_000,
            reason: reason.to_string(),
        }
    }

    fn clean_leader(t0: Instant, keys: &[&str]) -> Leader {
        let settings = ModelSettings {
            damper: Duration::from_secs(10),
            ..Default::default()
        };
        let mut l = Leader::new(settings, "demo.web", Vec::new());
        let hash = config_hash(&pods(keys), &BTreeSet::new(), &Dependencies::new());
        l.handle_elected(t0, Some(hash), pods(keys), Vec::new());
        while l.poll_action().is_some() {}
        l
    }

    /// Paused: membership is tracked and reported, but no round starts however long it waits;
    /// resuming starts one at once (no damper).
    #[test]
    fn a_paused_leader_tracks_changes_but_starts_no_round_until_resumed() {
        let t0 = Instant::now();
        let mut l = clean_leader(t0, &["a", "b"]);
        l.handle_pause(t0, Some(pause("disk swap")));
        assert_eq!(l.state(), "leader (paused)");
        assert_eq!(
            l.status(t0),
            "paused since 2025-12-01 16:00:00 UTC (disk swap): nothing pending"
        );
        l.handle_members(t0, pods(&["b", "c"]));
        for secs in [10, 60, 3600] {
            let t = t0 + Duration::from_secs(secs);
            assert_eq!(l.poll_timeout(), None, "no timer while paused");
            l.handle_timeout(t);
            assert_eq!(l.poll_action(), None, "no round while paused");
        }
        let p = l.pause_status().expect("paused");
        assert!(p.pending && p.known);
        assert_eq!(
            (p.joined, p.left),
            (vec!["c".to_string()], vec!["a".to_string()])
        );
        assert_eq!(
            l.status(t0),
            "paused since 2025-12-01 16:00:00 UTC (disk swap): pending 1 joined, 1 left"
        );
        let t1 = t0 + Duration::from_secs(7200);
        l.handle_pause(t1, None);
        assert_eq!(l.pause_status(), None);
        let (_, task, _) = first_control(&mut l);
        assert_eq!(task, Task::Check, "resuming runs the pending round at once");
    }

    /// Resuming a cluster where nothing changed starts nothing.
    #[test]
    fn resuming_an_unchanged_cluster_starts_no_round() {
        let t0 = Instant::now();
        let mut l = clean_leader(t0, &["a"]);
        l.handle_pause(t0, Some(pause("")));
        l.handle_members(t0, pods(&["a", "b"]));
        l.handle_members(t0, pods(&["a"]));
        assert_eq!(
            l.status(t0),
            "paused since 2025-12-01 16:00:00 UTC: nothing pending"
        );
        l.handle_pause(t0, None);
        l.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(l.poll_action(), None);
        assert_eq!(l.state(), "leader");
    }

    /// A pause read at election holds the first round too; a failed round's retry is held as
    /// well, and a round under way when the pause lands finishes.
    #[test]
    fn a_pause_holds_the_first_round_and_retries_but_lets_a_round_finish() {
        let t0 = Instant::now();
        let mut l = Leader::new(ModelSettings::default(), "demo.web", Vec::new());
        l.handle_pause(t0, Some(pause("x")));
        l.handle_elected(t0, None, pods(&["a"]), Vec::new());
        l.handle_timeout(t0 + Duration::from_secs(3600));
        assert_eq!(l.poll_action(), None, "paused at election: no round");
        assert_eq!(
            l.pause_status().map(|p| (p.pending, p.known)),
            Some((true, false)),
            "a leader elected dirty knows no configuration to compare with"
        );
        l.handle_pause(t0, None);
        let (r, task, key) = first_control(&mut l);
        assert_eq!((task, key.as_str()), (Task::Check, "a"));
        // The round fails: the retry waits for a resume.
        l.handle_reply(t0, r, "a", Answer::new(Verdict::Refused, "500: boom"));
        while l.poll_action().is_some() {}
        l.handle_pause(t0, Some(pause("x")));
        l.handle_timeout(t0 + Duration::from_secs(3600));
        assert_eq!(l.poll_action(), None, "no retry while paused");
        l.handle_pause(t0, None);
        let (r, task, _) = first_control(&mut l);
        assert_eq!(task, Task::Check);
        // Paused mid-round: the round goes on to its commit.
        l.handle_pause(t0, Some(pause("x")));
        assert_eq!(l.state(), "leader (paused, finishing a round)");
        l.handle_reply(t0, r, "a", Answer::new(Verdict::Accepted, "200"));
        let (r2, task, _) = first_control(&mut l);
        assert_eq!((r2, task), (r, Task::On));
    }

    #[test]
    fn a_malformed_pause_node_still_pauses_and_says_how_to_fix_it() {
        let p = Pause::from_slice(b"not json");
        assert!(p.reason.contains("unreadable pause node"), "{}", p.reason);
        assert_eq!(Pause::from_slice(b""), Pause::default());
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    fn report_of(l: &mut Leader) -> RoundReport {
        loop {
            match l.poll_action() {
                Some(LeaderAction::RoundEnded { report, .. }) => return report,
                Some(_) => {}
                None => panic!("no round ended"),
            }
        }
    }

    /// A round's report says why it ran and who joined and left; a history keeps it within
    /// its byte bound, oldest dropped first, big rounds summarized.
    #[test]
    fn rounds_say_why_and_the_history_stays_bounded() {
        use crate::wire::{HistoryEntry, HISTORY_LIST_MAX};
        let t0 = Instant::now();
        let mut l = clean_leader(t0, &["a", "b"]);
        l.handle_pause(t0, Some(pause("")));
        l.handle_members(t0, pods(&["b", "c"]));
        l.handle_pause(t0, None);
        let (r, _, _) = first_control(&mut l);
        l.handle_reply(t0, r, "b", Answer::new(Verdict::Accepted, "200"));
        l.handle_reply(t0, r, "c", Answer::new(Verdict::Refused, "406: nope"));
        let rep = report_of(&mut l);
        assert_eq!(rep.why, ["joined", "left", "operator"]);
        assert_eq!(
            (rep.joined.clone(), rep.left.clone()),
            (vec!["c".to_string()], vec!["a".to_string()])
        );
        assert_eq!(
            rep.hash,
            config_hash(&pods(&["b", "c"]), &BTreeSet::new(), &Dependencies::new())
        );
        let e = HistoryEntry::from_report(&rep, "b");
        assert_eq!(e.failed.keys().collect::<Vec<_>>(), ["c"]);
        // The retry says so.
        l.handle_timeout(t0 + Duration::from_secs(3600));
        let (_, task, _) = first_control(&mut l);
        assert_eq!(task, Task::Check);
        // Bounded: 2000 entries never exceed the bound; the newest is kept.
        let mut all = Vec::new();
        let mut last = Vec::new();
        for n in 0..2000u64 {
            let mut e = e.clone();
            e.started_ms = n;
            last = HistoryEntry::push_bounded(&mut all, e, 8 * 1024);
            assert!(last.len() <= 8 * 1024);
        }
        let back = HistoryEntry::parse_all(&last).expect("parses");
        assert_eq!(back.last().map(|e| e.started_ms), Some(1999));
        assert!(
            back.len() > 10
                && back
                    .windows(2)
                    .all(|w| w[0].started_ms + 1 == w[1].started_ms)
        );
        // A round of 500 pods is summarized.
        let keys: Vec<String> = (0..500).map(|i| format!("k{i:03}")).collect();
        let big = RoundReport {
            answers: keys
                .iter()
                .map(|k| (k.clone(), "on 200".to_string()))
                .collect(),
            joined: keys.clone(),
            ..Default::default()
        };
        let e = HistoryEntry::from_report(&big, "x");
        assert_eq!(e.pods.len(), HISTORY_LIST_MAX);
        assert_eq!(e.joined.last().map(String::as_str), Some("+485 more"));
        assert!(HistoryEntry::parse_all(b"{")
            .unwrap_err()
            .contains("not a list of rounds"));
    }
}
