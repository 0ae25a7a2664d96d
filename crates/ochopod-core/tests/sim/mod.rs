//! A small deterministic simulator for the two sans-IO machines, in the spirit of quinn-proto's
//! `tests/util.rs`: a virtual clock that starts at a fixed `Instant`, `step` / `run_until`
//! helpers that jump straight to the next `poll_timeout`, scripted pod answers, commit and probe
//! results for the leader, and scripted hooks and processes for the pod.
//!
//! Both drivers check the call-order contract on every wake-up: after `handle_timeout(now)` the
//! machine must not ask to be woken at `now` or earlier again (that would be a busy loop in a real
//! runtime), and the pod machine must never hand out a second step before the first one's result.
#![allow(dead_code)]

use ochopod_core::hash::config_hash;
use ochopod_core::leader::{Answer, Leader, LeaderAction, Verdict};
use ochopod_core::pod::{
    Accepted, ControlInput, Hook, Outcome, PodAction, PodMachine, PodRequest, Refusal, StepResult,
};
use ochopod_core::settings::{ModelSettings, ProcessSettings};
use ochopod_core::wire::{ControlBody, Dependencies, Epoch, Pods, Registration, Task};
use ochopod_core::DependencyPattern;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Upper bound on wake-ups in one `run_until`, so a machine that loops fails instead of hanging.
const MAX_STEPS: usize = 100_000;

/// The fixed origin of virtual time, shared by every test of a binary (one real instant, read
/// once: nothing else reads the clock).
#[allow(clippy::disallowed_methods)]
pub(crate) fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Seconds as a `Duration`.
pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A registration of cluster `prod.web`, distinct per key.
pub(crate) fn reg(key: &str) -> Registration {
    reg_in("prod", "web", key)
}

/// A registration of cluster `ns.cl`, distinct per key.
pub(crate) fn reg_in(ns: &str, cl: &str, key: &str) -> Registration {
    let n = key
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    Registration {
        cluster: cl.into(),
        namespace: ns.into(),
        binding: "local".into(),
        fwk: "local".into(),
        ip: format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff),
        ports: [("8080".to_string(), 8080u16)].into(),
        port: "8080".into(),
        seq: Some(u64::from(n % 1000)),
        ..Default::default()
    }
}

/// Pods of `prod.web` with these keys.
pub(crate) fn pods(keys: &[&str]) -> Pods {
    keys.iter().map(|k| (k.to_string(), reg(k))).collect()
}

/// Pods of `ns.cl` with these keys.
pub(crate) fn pods_in(ns: &str, cl: &str, keys: &[&str]) -> Pods {
    keys.iter()
        .map(|k| (k.to_string(), reg_in(ns, cl, k)))
        .collect()
}

/// The hash a leader commits for `pods` and no dependency.
pub(crate) fn hash_of(pods: &Pods) -> String {
    config_hash(pods, &BTreeSet::new(), &Dependencies::new())
}

/// The hash of `pods` with dependency views.
pub(crate) fn hash_with(pods: &Pods, deps: &Dependencies) -> String {
    config_hash(pods, &BTreeSet::new(), deps)
}

// ---------------------------------------------------------------------------------------------
// Leader
// ---------------------------------------------------------------------------------------------

/// One control request the leader sent and the simulator has not answered yet.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sent {
    pub(crate) round: u64,
    pub(crate) task: Task,
    pub(crate) key: String,
    pub(crate) body: ControlBody,
}

type ReplyScript = Box<dyn FnMut(u64, Task, &str) -> Answer>;

/// Drives a [`Leader`] with virtual time and scripted answers.
pub(crate) struct LeaderSim {
    pub(crate) leader: Leader,
    pub(crate) now: Instant,
    /// Every action, with the virtual time it was handed out at (from the origin).
    pub(crate) log: Vec<(Duration, LeaderAction)>,
    /// Control requests (not `ok`) waiting for an answer, in the order they were sent.
    pub(crate) inflight: Vec<Sent>,
    /// Rounds whose commit waits for an answer.
    pub(crate) commits: VecDeque<u64>,
    /// A probe waits for its answer.
    pub(crate) probing: bool,
    /// How pods answer (default: 200 to everything).
    pub(crate) reply: ReplyScript,
    /// How commits end (default: Ok).
    pub(crate) commit: Box<dyn FnMut(u64) -> Result<(), String>>,
    /// What the probe says (default: Ok("green")).
    pub(crate) probe: Box<dyn FnMut() -> Result<String, String>>,
    /// Answer inflight work automatically in `step` / `run_until`.
    pub(crate) auto: bool,
}

/// Model settings with a damper.
pub(crate) fn model(damper: f64) -> ModelSettings {
    ModelSettings {
        damper: secs(damper),
        ..ModelSettings::default()
    }
}

impl LeaderSim {
    /// A leader of `prod.web` depending on `depends_on`.
    pub(crate) fn new(settings: ModelSettings) -> Self {
        let patterns = settings
            .depends_on
            .iter()
            .map(|d| DependencyPattern::parse(d, "prod").expect("valid dependency"))
            .collect();
        LeaderSim {
            leader: Leader::new(settings, "prod.web", patterns),
            now: origin(),
            log: Vec::new(),
            inflight: Vec::new(),
            commits: VecDeque::new(),
            probing: false,
            reply: Box::new(|_, _, _| accepted()),
            commit: Box::new(|_| Ok(())),
            probe: Box::new(|| Ok("green".to_string())),
            auto: true,
        }
    }

    /// Virtual time since the origin.
    pub(crate) fn t(&self) -> Duration {
        self.now - origin()
    }

    /// Moves the clock (never backwards) without firing anything.
    pub(crate) fn at(&mut self, t: f64) -> &mut Self {
        let to = origin() + secs(t);
        assert!(to >= self.now, "virtual time never goes backwards");
        self.now = to;
        self
    }

    /// Drains every action into the log and the inflight tables.
    pub(crate) fn flush(&mut self) {
        while let Some(action) = self.leader.poll_action() {
            match &action {
                LeaderAction::Control {
                    round,
                    task,
                    key,
                    body,
                    ..
                } => {
                    assert!(body.key.is_empty(), "the runtime sets the key per pod");
                    if *task != Task::Ok {
                        self.inflight.push(Sent {
                            round: *round,
                            task: *task,
                            key: key.clone(),
                            body: (**body).clone(),
                        });
                    }
                }
                LeaderAction::Commit { round, .. } => self.commits.push_back(*round),
                LeaderAction::Probe { .. } => {
                    assert!(
                        !self.probing,
                        "a second probe before the first one's answer"
                    );
                    self.probing = true;
                }
                LeaderAction::WriteSnapshot { .. } | LeaderAction::RoundEnded { .. } => {}
            }
            self.log.push((self.t(), action));
        }
    }

    pub(crate) fn elected(&mut self, committed: Option<String>, members: Pods) {
        self.elected_with(committed, members, Vec::new());
    }

    pub(crate) fn elected_with(
        &mut self,
        committed: Option<String>,
        members: Pods,
        deps: Vec<(String, Option<Pods>, bool)>,
    ) {
        self.leader
            .handle_elected(self.now, committed, members, deps);
        self.flush();
    }

    pub(crate) fn members(&mut self, members: Pods) {
        self.leader.handle_members(self.now, members);
        self.flush();
    }

    pub(crate) fn dependency(&mut self, cluster: &str, snapshot: Option<Pods>, has_pods: bool) {
        self.leader
            .handle_dependency(self.now, cluster, snapshot, has_pods);
        self.flush();
    }

    pub(crate) fn connection(&mut self, connected: bool) {
        self.leader.handle_connection(self.now, connected);
        self.flush();
    }

    /// Answers the inflight request to `key` (panics when there is none).
    pub(crate) fn answer(&mut self, key: &str, reply: Answer) {
        let i = self
            .inflight
            .iter()
            .position(|s| s.key == key)
            .unwrap_or_else(|| panic!("no request in flight to {key}: {:?}", self.inflight));
        let sent = self.inflight.remove(i);
        self.leader.handle_reply(self.now, sent.round, key, reply);
        self.flush();
    }

    /// Answers the `i`-th inflight request (any round, stale ones included); returns it.
    pub(crate) fn answer_index(&mut self, i: usize, reply: Answer) -> Sent {
        let sent = self.inflight.remove(i);
        self.leader
            .handle_reply(self.now, sent.round, &sent.key, reply);
        self.flush();
        sent
    }

    /// Answers the oldest commit.
    pub(crate) fn answer_commit(&mut self, result: Result<(), String>) {
        let round = self.commits.pop_front().expect("a commit to answer");
        self.leader.handle_commit(self.now, round, result);
        self.flush();
    }

    /// Answers the probe.
    pub(crate) fn answer_probe(&mut self, result: Result<String, String>) {
        assert!(self.probing, "no probe to answer");
        self.probing = false;
        self.leader.handle_probe(self.now, result);
        self.flush();
    }

    /// Answers one piece of outstanding work with the scripts; false when there was none.
    fn answer_one(&mut self) -> bool {
        if !self.inflight.is_empty() {
            let sent = self.inflight[0].clone();
            let reply = (self.reply)(sent.round, sent.task, &sent.key);
            self.answer(&sent.key, reply);
            return true;
        }
        if let Some(&round) = self.commits.front() {
            let result = (self.commit)(round);
            self.answer_commit(result);
            return true;
        }
        if self.probing {
            let result = (self.probe)();
            self.answer_probe(result);
            return true;
        }
        false
    }

    /// Answers everything outstanding (answers take no time).
    pub(crate) fn settle(&mut self) {
        for _ in 0..MAX_STEPS {
            if !self.auto || !self.answer_one() {
                return;
            }
        }
        panic!("the leader never settles");
    }

    /// Fires the timer at `when` and checks the machine moved its deadline past it.
    fn fire(&mut self, when: Instant) {
        self.now = self.now.max(when);
        self.leader.handle_timeout(self.now);
        self.flush();
        if let Some(next) = self.leader.poll_timeout() {
            assert!(
                next > self.now,
                "busy loop: after handle_timeout at {:?} the leader asks again for {:?} (state {:?})",
                self.t(),
                next - origin(),
                self.leader.state()
            );
        }
    }

    /// Settles, then jumps to the next timer if it is due by `until`; false when nothing is.
    pub(crate) fn step(&mut self, until: Instant) -> bool {
        self.settle();
        match self.leader.poll_timeout() {
            Some(t) if t <= until => {
                self.fire(t);
                true
            }
            _ => false,
        }
    }

    /// Runs every answer and timer up to virtual time `t` (seconds since the origin).
    pub(crate) fn run_until(&mut self, t: f64) {
        let until = origin() + secs(t);
        for _ in 0..MAX_STEPS {
            if !self.step(until) {
                self.settle();
                self.now = self.now.max(until);
                return;
            }
        }
        panic!("the leader keeps waking up before {t} s");
    }

    /// Every control request, as (time, round, task, key).
    pub(crate) fn controls(&self) -> Vec<(Duration, u64, Task, String)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                LeaderAction::Control {
                    round, task, key, ..
                } => Some((*t, *round, *task, key.clone())),
                _ => None,
            })
            .collect()
    }

    /// Every commit, as (time, round, hash, snapshot).
    pub(crate) fn commit_log(&self) -> Vec<(Duration, u64, String, Pods)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                LeaderAction::Commit {
                    round,
                    hash,
                    snapshot,
                } => Some((*t, *round, hash.clone(), snapshot.clone())),
                _ => None,
            })
            .collect()
    }

    /// The times the rounds sent their first request (the round starts).
    pub(crate) fn round_starts(&self) -> Vec<(u64, Duration)> {
        let mut out: BTreeMap<u64, Duration> = BTreeMap::new();
        for (t, round, _, _) in self.controls() {
            out.entry(round).or_insert(t);
        }
        out.into_iter().collect()
    }

    /// The outcome of every ended round.
    pub(crate) fn outcomes(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|(_, a)| match a {
                LeaderAction::RoundEnded { outcome, report } => {
                    assert_eq!(
                        outcome.text(),
                        report.outcome,
                        "typed and reported outcomes agree"
                    );
                    Some(report.outcome.clone())
                }
                _ => None,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Pod
// ---------------------------------------------------------------------------------------------

/// How the simulated sub-process reacts to a tear-down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnTerm {
    /// Exits (code 0) as soon as it is asked.
    Exits,
    /// Ignores SIGTERM: only SIGKILL ends it.
    Ignores,
}

/// Drives a [`PodMachine`] with virtual time, scripted hooks and a scripted process.
pub(crate) struct PodSim {
    pub(crate) m: PodMachine,
    pub(crate) now: Instant,
    /// Every action with its virtual time.
    pub(crate) log: Vec<(Duration, PodAction)>,
    /// Replies by request id, with their time.
    pub(crate) replies: Vec<(Duration, u64, u16, Value)>,
    /// The step action waiting for its result.
    pub(crate) step: Option<PodAction>,
    /// Answer steps automatically.
    pub(crate) auto: bool,
    /// Results of hooks, consumed in order; an empty queue answers Ok(null).
    pub(crate) hooks: Vec<(Hook, VecDeque<Result<Value, String>>)>,
    /// Results of `configure`; empty = Ok.
    pub(crate) configures: VecDeque<Result<(), String>>,
    /// Failures of `spawn`; empty = a new pid.
    pub(crate) spawns: VecDeque<Result<(), String>>,
    /// The live process's pid.
    pub(crate) alive: Option<u32>,
    pub(crate) next_pid: u32,
    /// Each spawned process exits this long after it starts, with this code (None: lives on).
    pub(crate) lifetime: Option<(Duration, Option<i32>)>,
    /// A scheduled exit of the live process.
    pub(crate) exit_at: Option<(Instant, u32, Option<i32>)>,
    pub(crate) on_term: OnTerm,
    /// Ids of every request sent.
    pub(crate) sent: Vec<u64>,
    next_id: u64,
}

/// Process settings for tests.
pub(crate) fn process() -> ProcessSettings {
    ProcessSettings::default()
}

/// A control body for pod `key` of `members`, with `deps`.
pub(crate) fn body(members: &Pods, deps: &Dependencies) -> Value {
    serde_json::to_value(ControlBody {
        pods: members.clone(),
        dependencies: deps.clone(),
        key: String::new(),
    })
    .expect("a body serializes")
}

impl PodSim {
    /// Pod `pod-a` of `prod.web`.
    pub(crate) fn new(settings: ProcessSettings) -> Self {
        PodSim {
            m: PodMachine::new(settings, "pod-a"),
            now: origin(),
            log: Vec::new(),
            replies: Vec::new(),
            step: None,
            auto: true,
            hooks: Vec::new(),
            configures: VecDeque::new(),
            spawns: VecDeque::new(),
            alive: None,
            next_pid: 100,
            lifetime: None,
            exit_at: None,
            on_term: OnTerm::Exits,
            sent: Vec::new(),
            next_id: 1,
        }
    }

    pub(crate) fn t(&self) -> Duration {
        self.now - origin()
    }

    /// Scripts the next results of `hook`.
    pub(crate) fn script(&mut self, hook: Hook, results: Vec<Result<Value, String>>) {
        match self.hooks.iter_mut().find(|(h, _)| *h == hook) {
            Some((_, queue)) => queue.extend(results),
            None => self.hooks.push((hook, results.into())),
        }
    }

    fn flush(&mut self) {
        while let Some(action) = self.m.poll_action() {
            match &action {
                PodAction::Reply { id, outcome } => {
                    let (code, body) = wire_reply(outcome);
                    self.replies.push((self.t(), *id, code, body));
                }
                PodAction::Hook { .. } | PodAction::Configure { .. } | PodAction::Spawn => {
                    assert!(
                        self.step.is_none(),
                        "two steps without a result in between: {:?} then {action:?}",
                        self.step
                    );
                    self.step = Some(action.clone());
                }
                PodAction::Terminate => {
                    let pid = self.alive.expect("Terminate with no live process");
                    if self.on_term == OnTerm::Exits {
                        self.exit_at = Some((self.now, pid, Some(0)));
                    }
                }
                PodAction::Kill => {
                    let pid = self.alive.expect("Kill with no live process");
                    self.exit_at = Some((self.now, pid, None));
                }
                PodAction::Exit { .. } | PodAction::ShutDown => {}
            }
            self.log.push((self.t(), action));
        }
    }

    /// The agent shuts down ([`PodMachine::shutdown`]).
    pub(crate) fn shutdown(&mut self) {
        self.m.shutdown(self.now);
        self.flush();
    }

    /// Sends a control request; returns its id.
    pub(crate) fn control(&mut self, task: Task, body: Value) -> u64 {
        self.request(task, body, None, None)
    }

    /// Sends `on` for a cluster of `pod-a` (and `others`) with `deps`.
    pub(crate) fn on(&mut self, others: &[&str], deps: &Dependencies) -> u64 {
        let mut keys = vec!["pod-a"];
        keys.extend_from_slice(others);
        self.control(Task::On, body(&pods(&keys), deps))
    }

    /// Sends a control request with an epoch and a deadline.
    pub(crate) fn request(
        &mut self,
        task: Task,
        body: Value,
        epoch: Option<Epoch>,
        deadline: Option<Instant>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.sent.push(id);
        self.m.handle_control(
            self.now,
            PodRequest {
                id,
                task,
                epoch,
                input: input_of(task, body),
                deadline,
            },
        );
        self.flush();
        id
    }

    /// The reply to request `id`, if any (panics on two replies).
    pub(crate) fn reply_to(&self, id: u64) -> Option<(u16, Value)> {
        let all: Vec<_> = self.replies.iter().filter(|r| r.1 == id).collect();
        assert!(all.len() <= 1, "request {id} got {} replies", all.len());
        all.first().map(|r| (r.2, r.3.clone()))
    }

    /// The code answered to `id` (panics when there is no reply yet).
    pub(crate) fn code(&self, id: u64) -> u16 {
        self.reply_to(id)
            .unwrap_or_else(|| panic!("no reply to {id}; log {:?}", self.log))
            .0
    }

    /// Gives the outstanding step its result.
    pub(crate) fn result(&mut self, result: StepResult) {
        self.step.take().expect("a step to answer");
        if let StepResult::Spawned(Ok(pid)) = result {
            self.started(pid);
        }
        self.m.handle_result(self.now, result);
        self.flush();
    }

    fn started(&mut self, pid: u32) {
        self.alive = Some(pid);
        if let Some((life, code)) = self.lifetime {
            self.exit_at = Some((self.now + life, pid, code));
        }
    }

    /// The scripted result of the outstanding step.
    fn scripted(&mut self) -> Option<StepResult> {
        let step = self.step.as_ref()?;
        Some(match step {
            PodAction::Hook { hook, .. } => StepResult::Hook(
                self.hooks
                    .iter_mut()
                    .find(|(h, _)| h == hook)
                    .and_then(|(_, queue)| queue.pop_front())
                    .unwrap_or(Ok(Value::Null)),
            ),
            PodAction::Configure { .. } => {
                StepResult::Configured(self.configures.pop_front().unwrap_or(Ok(())))
            }
            PodAction::Spawn => match self.spawns.pop_front() {
                Some(Err(e)) => StepResult::Spawned(Err(e)),
                _ => {
                    self.next_pid += 1;
                    StepResult::Spawned(Ok(self.next_pid))
                }
            },
            other => unreachable!("not a step: {other:?}"),
        })
    }

    /// The live process exits now with `code`.
    pub(crate) fn exit(&mut self, code: Option<i32>) {
        let pid = self.alive.take().expect("a live process to exit");
        self.exit_at = None;
        self.m.handle_exit(self.now, pid, code);
        self.flush();
    }

    /// Answers steps and exits due now; no time passes.
    pub(crate) fn settle(&mut self) {
        for _ in 0..MAX_STEPS {
            if self.auto && self.step.is_some() {
                let r = self.scripted().expect("a step");
                self.result(r);
                continue;
            }
            match self.exit_at {
                Some((at, pid, code)) if at <= self.now => {
                    self.exit_at = None;
                    if self.alive == Some(pid) {
                        self.alive = None;
                        self.m.handle_exit(self.now, pid, code);
                        self.flush();
                    }
                }
                _ => return,
            }
        }
        panic!("the pod never settles");
    }

    /// Settles, then jumps to the next timer or exit if due by `until`.
    pub(crate) fn step(&mut self, until: Instant) -> bool {
        self.settle();
        let timer = self.m.poll_timeout();
        let exit = self.exit_at.map(|e| e.0);
        let next = match (timer, exit) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(x) => x,
                None => return false,
            },
        };
        if next > until {
            return false;
        }
        self.now = self.now.max(next);
        if exit == Some(next) {
            self.settle();
            return true;
        }
        self.m.handle_timeout(self.now);
        self.flush();
        if let Some(again) = self.m.poll_timeout() {
            assert!(
                again > self.now,
                "busy loop: after handle_timeout at {:?} the pod asks again for {:?}",
                self.t(),
                again - origin()
            );
        }
        true
    }

    /// Runs everything up to `t` seconds since the origin.
    pub(crate) fn run_until(&mut self, t: f64) {
        let until = origin() + secs(t);
        assert!(until >= self.now, "virtual time never goes backwards");
        for _ in 0..MAX_STEPS {
            if !self.step(until) {
                self.settle();
                self.now = self.now.max(until);
                return;
            }
        }
        panic!("the pod keeps waking up before {t} s");
    }

    /// Runs for `d` seconds more.
    pub(crate) fn run_for(&mut self, d: f64) {
        let t = (self.t() + secs(d)).as_secs_f64();
        self.run_until(t);
    }

    /// The actions other than replies, as short names (for order checks).
    pub(crate) fn names(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|(_, a)| match a {
                PodAction::Reply { .. } => None,
                other => Some(name(other)),
            })
            .collect()
    }

    /// Times at which `Spawn` was asked.
    pub(crate) fn spawn_times(&self) -> Vec<Duration> {
        self.log
            .iter()
            .filter(|(_, a)| matches!(a, PodAction::Spawn))
            .map(|(t, _)| *t)
            .collect()
    }

    /// How many times `hook` ran.
    pub(crate) fn hook_runs(&self, hook: Hook) -> usize {
        self.log
            .iter()
            .filter(|(_, a)| matches!(a, PodAction::Hook { hook: h, .. } if *h == hook))
            .count()
    }

    /// Clears the log (to look at what a later request does).
    pub(crate) fn clear(&mut self) {
        self.log.clear();
    }
}

/// A short name for an action: `Hook(Reload)`, `Configure`, `Spawn`, `Terminate`, ...
pub(crate) fn name(a: &PodAction) -> String {
    match a {
        PodAction::Reply { outcome, .. } => format!("Reply({})", wire_reply(outcome).0),
        PodAction::Hook { hook, .. } => format!("{hook:?}"),
        PodAction::Configure { .. } => "Configure".into(),
        PodAction::Spawn => "Spawn".into(),
        PodAction::Terminate => "Terminate".into(),
        PodAction::Kill => "Kill".into(),
        PodAction::Exit { code } => format!("Exit({code})"),
        PodAction::ShutDown => "ShutDown".into(),
    }
}

/// A pod's answer as the leader's client types it: 200 accepted, 410 dead, any other code
/// refused (`said` is `<code>` or `<code>: <error>`).
pub(crate) fn answer(code: u16, error: &str) -> Answer {
    let verdict = match code {
        200 => Verdict::Accepted,
        400 => Verdict::BadRequest,
        410 => Verdict::Dead,
        _ => Verdict::Refused,
    };
    let said = if error.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {error}")
    };
    Answer::new(verdict, said)
}

/// A pod that did what it was asked (200).
pub(crate) fn accepted() -> Answer {
    answer(200, "")
}

/// No answer at all (connection refused, timeout).
pub(crate) fn unreachable(why: &str) -> Answer {
    Answer::new(Verdict::Unreachable, why)
}

/// The body of a request typed as the control plane types it: a signal's body passes through,
/// an empty `on` is an operator's, `off` and `kill` carry nothing, `check`, `on` and `ok` carry
/// the cluster view.
pub(crate) fn input_of(task: Task, body: Value) -> ControlInput {
    let empty = match &body {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    match task {
        Task::Signal => ControlInput::Opaque(body),
        Task::Off | Task::Kill | Task::Health => ControlInput::Empty,
        Task::On if empty => ControlInput::Empty,
        _ => match serde_json::from_value::<ControlBody>(body) {
            Ok(b) => ControlInput::View(Box::new(b)),
            Err(e) => ControlInput::NotAView(format!("bad control body for {task}: {e}")),
        },
    }
}

/// The status code and body the control plane sends for an outcome: the protocol's table,
/// as `ochopod-http` applies it (its own tests check its table against these same pairs).
pub(crate) fn wire_reply(outcome: &Outcome) -> (u16, Value) {
    let error = |code: u16, msg: String| (code, json!({ "error": msg }));
    match outcome {
        Outcome::Accepted(Accepted::Done) => (200, json!({})),
        Outcome::Accepted(Accepted::Started { pid }) => (200, json!({ "pid": pid })),
        Outcome::Accepted(Accepted::Answer(v)) => (200, v.clone()),
        Outcome::Accepted(Accepted::Warning(w)) => (200, json!({ "warning": w })),
        Outcome::Refused(Refusal::BadRequest(why)) => error(400, why.clone()),
        Outcome::Refused(Refusal::NotReady(why)) => error(406, why.clone()),
        Outcome::Refused(Refusal::ConfigureFailed(why)) => error(406, why.clone()),
        Outcome::Refused(Refusal::TimedOut(task)) => {
            error(408, format!("{task} timed out before it started; dropped"))
        }
        Outcome::Refused(Refusal::Stale { epoch, kept }) => error(
            409,
            format!("stale leader epoch {epoch}: this pod obeys epoch {kept} or newer"),
        ),
        Outcome::Refused(Refusal::Dead) => error(410, "this pod is dead".to_string()),
        Outcome::Refused(Refusal::Unhealthy(why)) => error(503, why.clone()),
        Outcome::Refused(Refusal::Failed(why)) => error(500, why.clone()),
    }
}

/// An empty JSON object.
pub(crate) fn empty() -> Value {
    json!({})
}
