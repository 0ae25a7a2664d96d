//! The pod's lifecycle machine, sans IO: what a pod does with each control request (`check`,
//! `on`, `off`, `ok`, `kill`, `signal`, `health`, `plan`) and with its process (start, reload or restart, sanity
//! checks, crash backoff, circuit breaker).
//!
//! It decides what the pod does with each control request and when its timers fire (restart
//! backoff, sanity-check schedule, tear-down grace, circuit breaker); the runtime carries out the
//! actions (run a hook, render and configure, spawn, signal) and feeds the results back.
//!
//! # Call order
//!
//! 1. [`PodMachine::handle_control`] for every control request, in arrival order (the machine
//!    queues them and runs one at a time).
//! 2. Drain [`PodMachine::poll_action`]; for each action that expects an answer, call
//!    [`PodMachine::handle_result`] once it is done (actions are strictly one at a time: the
//!    machine never asks for a second step before the first one's result).
//! 3. [`PodMachine::handle_exit`] whenever the sub-process exits.
//! 4. Arm a timer for [`PodMachine::poll_timeout`]; call [`PodMachine::handle_timeout`] then.

use crate::jitter::Jitter;
use crate::settings::{GiveUp, ProcessSettings};
use crate::timer::{TimerKind, TimerTable};
use crate::view::ClusterView;
use crate::wire::{ControlBody, Dependencies, DependencyChange, Epoch, PlanDecision, Task, Would};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The process state shown in `/info` as `process`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// Idle: not configured yet, or turned off.
    Stopped,
    /// Configured and meant to run (it may be between two restarts of a crash loop).
    Running,
    /// Being torn down.
    Terminating,
    /// Killed or failed to configure: the agent answers, control requests are refused as dead.
    Dead,
}

impl Process {
    /// `stopped`, `running`, `terminating` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            Process::Stopped => "stopped",
            Process::Running => "running",
            Process::Terminating => "terminating",
            Process::Dead => "dead",
        }
    }
}

/// The user hooks (a [`PodAction::Hook`] names one; the runtime runs it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Once, before the first configuration.
    Initialize,
    /// `check`: may the pod be configured now?
    CanConfigure,
    /// `ok`: the round succeeded.
    Configured,
    /// A non-strict pod was given a new view while running: re-render, reload if changed.
    Reload,
    /// `kill`, or a clean exit: last words.
    Finalize,
    /// `signal`: its JSON result is the response.
    Signal,
    /// The periodic sanity check; may return metrics (a JSON object).
    SanityCheck,
    /// `plan`: render into memory what `on` would write with the view, and complete the
    /// machine's decision (the hook's input: `would`, `why`, `dependencies`) with the files.
    Plan,
}

/// What the pod machine asks the runtime to do.
#[derive(Clone, Debug, PartialEq)]
pub enum PodAction {
    /// Answer control request `id` (the control plane turns the outcome into its status code
    /// and body).
    Reply {
        /// The id given to [`PodMachine::handle_control`].
        id: u64,
        /// What became of the request.
        outcome: Outcome,
    },
    /// Run a hook; answer with [`StepResult::Hook`].
    Hook {
        /// Which hook.
        hook: Hook,
        /// The cluster view, for hooks that get one.
        view: Option<Arc<ClusterView>>,
        /// Extra input (a `signal`'s body, `plan`'s decision).
        input: HookInput,
    },
    /// Render templates and compute the command (`configure`); answer with
    /// [`StepResult::Configured`].
    Configure {
        /// The view to configure with.
        view: Arc<ClusterView>,
    },
    /// Start the configured process; answer with [`StepResult::Spawned`].
    Spawn,
    /// Begin the tear-down (the `tear_down` hook, or SIGTERM to the process group). The exit
    /// comes back through [`PodMachine::handle_exit`].
    Terminate,
    /// SIGKILL the process group (the grace ran out).
    Kill,
    /// The circuit breaker tripped with `on_give_up = "exit"`: leave the cluster and exit
    /// the agent with this code.
    Exit {
        /// Exit code for the agent.
        code: i32,
    },
    /// The shutdown asked for with [`PodMachine::shutdown`] is complete: the process is down
    /// (finalized or torn down) and the agent may end.
    ShutDown,
}

/// What a control request carries, typed by the control plane before it reaches the machine.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlInput {
    /// No body (empty, `null` or `{}`). An `on` without a body is an operator's: it starts the
    /// last configuration again and never re-renders; `off` and `kill` need nothing else.
    Empty,
    /// The cluster view a leader sends with `check`, `on` and `ok`.
    View(Box<ControlBody>),
    /// A body that is not a cluster view, and why (the request is refused as a bad request
    /// when it runs).
    NotAView(String),
    /// A `signal`'s body, handed to the hook untouched (`null` when empty).
    Opaque(Value),
}

/// What a hook is given beside the cluster view.
#[derive(Clone, Debug, PartialEq)]
pub enum HookInput {
    /// Nothing.
    None,
    /// A `signal`'s body, user JSON passed through (`null` when empty).
    Opaque(Value),
    /// `plan`: the machine's decision, for the lifecycle to complete with its files.
    Plan(PlanDecision),
}

/// What became of a control request.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Done.
    Accepted(Accepted),
    /// Not done, and why.
    Refused(Refusal),
}

/// How a request that was done ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Accepted {
    /// Nothing to report.
    Done,
    /// The process was started with this pid.
    Started {
        /// The sub-process's pid.
        pid: u32,
    },
    /// The signal hook's answer (user JSON, passed through).
    Answer(Value),
    /// Done, with a warning (a `kill` whose `finalize` hook failed: the pod is dead anyway).
    Warning(String),
}

/// Why a control request was not done.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// The request cannot be run as sent (a body that is not a cluster view, a view that does
    /// not hold this pod).
    BadRequest(String),
    /// The pod cannot do it now: `can_configure` said no, or an operator's `on` reached a pod
    /// that was never configured.
    NotReady(String),
    /// The configuration failed (initialize, configure or the start): the pod is dead now.
    ConfigureFailed(String),
    /// Its deadline passed before it started: dropped, never run late.
    TimedOut(Task),
    /// Sent by a leader of an older epoch than one this pod already obeyed.
    Stale {
        /// The request's epoch.
        epoch: Epoch,
        /// The newest epoch this pod obeyed.
        kept: Epoch,
    },
    /// This pod is dead (killed, finished or failed to configure): it answers but does nothing.
    Dead,
    /// `health`: the process is not running, or its sanity check failed.
    Unhealthy(String),
    /// A hook failed (`ok`'s `configured`, `signal`), or the machine met a step it did not
    /// expect.
    Failed(String),
}

/// The result of a step the machine asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum StepResult {
    /// A hook ended: its JSON output (Null when none) or its failure.
    Hook(Result<Value, String>),
    /// `configure` ended.
    Configured(Result<(), String>),
    /// `spawn` ended: the pid, or why it failed.
    Spawned(Result<u32, String>),
}

/// A control request as the pod machine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRequest {
    /// Runtime-chosen id, echoed in the [`PodAction::Reply`].
    pub id: u64,
    /// The task.
    pub task: Task,
    /// The leader's epoch, when the request carries one.
    pub epoch: Option<Epoch>,
    /// What the request carries.
    pub input: ControlInput,
    /// Drop the request (refused as timed out) if it has not started by then.
    pub deadline: Option<Instant>,
}

/// The pod machine's timers (their deadlines live in one [`TimerTable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Start the crashed process again (the crash backoff ran out).
    Restart,
    /// Run the periodic sanity check (every `check_every` while the process is meant to run).
    Check,
    /// SIGKILL the process: the tear-down's `grace` ran out.
    Kill,
    /// The earliest deadline of a queued request: drop it (refused as timed out) then.
    Request,
}

impl Timer {
    const COUNT: usize = 4;
}

impl TimerKind for Timer {
    const ALL: &'static [Timer] = &[Timer::Restart, Timer::Check, Timer::Kill, Timer::Request];
    fn slot(self) -> usize {
        self as usize
    }
}

/// Who waits for a request's outcome.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Origin {
    /// A control request: its outcome is a [`PodAction::Reply`].
    Client(u64),
    /// The process exited 0 while a step ran: the pod finishes (finalize, dead) once it is done.
    Finish,
    /// The agent shuts down ([`PodMachine::shutdown`]): [`PodAction::ShutDown`] once done.
    Shutdown,
}

/// A request as the machine queues and runs it.
#[derive(Clone, Debug, PartialEq)]
struct Job {
    origin: Origin,
    task: Task,
    epoch: Option<Epoch>,
    input: ControlInput,
    deadline: Option<Instant>,
}

impl Job {
    fn internal(origin: Origin, task: Task) -> Self {
        Job {
            origin,
            task,
            epoch: None,
            input: ControlInput::Empty,
            deadline: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Initialize,
    Hook,
    Reload,
    Stop,
    Configure,
    Spawn,
    Finalize,
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Idle,
    /// A control request under way.
    Task {
        req: Job,
        step: Step,
        view: Option<Arc<ClusterView>>,
    },
    /// A periodic sanity check.
    Check,
    /// A restart after a crash.
    Restart,
    /// The circuit breaker is turning the process off.
    BreakerOff,
    /// The process exited 0: finalize, then dead.
    Finish,
}

/// The pod's lifecycle machine. See the module docs for the call order.
#[derive(Debug)]
pub struct PodMachine {
    settings: ProcessSettings,
    key: String,
    process: Process,
    op: Op,
    queue: VecDeque<Job>,
    actions: VecDeque<PodAction>,
    initialized: bool,
    configured: bool,
    /// A configuration succeeded once: the runtime holds a command to start again.
    has_command: bool,
    ever_started: bool,
    pid: Option<u32>,
    epoch: Option<Epoch>,
    last_deps: Option<Dependencies>,
    started_at: Option<Instant>,
    crash_streak: u32,
    exited_since_check: bool,
    failed_checks: u32,
    timers: TimerTable<Timer, { Timer::COUNT }>,
    /// Spreads the crash backoff; `None`: exact delays.
    jitter: Option<Jitter>,
    metrics: Value,
    last_failure: Option<String>,
    check_failure: Option<String>,
    restarts: u64,
    sanity_failures: u64,
    /// The agent is stopping: a process that ends is never started again.
    stopping: bool,
}

impl PodMachine {
    /// A stopped pod with key `key`. Its crash backoff waits the exact delays of the settings
    /// (see [`PodMachine::with_jitter`]).
    pub fn new(settings: ProcessSettings, key: &str) -> Self {
        PodMachine {
            settings,
            key: key.to_string(),
            process: Process::Stopped,
            op: Op::Idle,
            queue: VecDeque::new(),
            actions: VecDeque::new(),
            initialized: false,
            configured: false,
            has_command: false,
            ever_started: false,
            pid: None,
            epoch: None,
            last_deps: None,
            started_at: None,
            crash_streak: 0,
            exited_since_check: false,
            failed_checks: 0,
            timers: TimerTable::default(),
            jitter: None,
            metrics: Value::Null,
            last_failure: None,
            check_failure: None,
            restarts: 0,
            sanity_failures: 0,
            stopping: false,
        }
    }

    /// Spreads every crash-backoff delay `d` with `jitter`, uniformly in `[d/2, d]`
    /// ([`Jitter::spread`]), so that the pods of a cluster that crash together (a dependency
    /// went away) do not restart in lockstep. The agent seeds it per pod; a machine without it
    /// waits the exact delays (the rules' tests read them as written). The first restart of a
    /// crash loop stays immediate.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// The process state.
    pub fn process(&self) -> Process {
        self.process
    }

    /// The sub-process's pid while it is alive.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The highest leader epoch this pod obeyed.
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// Failed sanity checks in a row.
    pub fn failed_checks(&self) -> u32 {
        self.failed_checks
    }

    /// The last failure (crash, sanity check, configure), if any.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Metrics returned by the last successful sanity check.
    pub fn metrics(&self) -> &Value {
        &self.metrics
    }

    /// Restarts after a crash since the agent started (the `process_restarts` metric).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Failed sanity checks since the agent started.
    pub fn sanity_failures(&self) -> u64 {
        self.sanity_failures
    }

    /// Why the last failed sanity check failed (kept when a later failure, e.g. the circuit
    /// breaker, replaces [`PodMachine::last_failure`]).
    pub fn last_check_failure(&self) -> Option<&str> {
        self.check_failure.as_deref()
    }

    /// Configured and the process alive (`/readyz`).
    pub fn ready(&self) -> bool {
        self.configured && self.process == Process::Running && self.pid.is_some()
    }

    /// The pod registered again after a session expiry: forget the remembered epoch (an
    /// ensemble rebuilt from scratch restarts its counters).
    pub fn reset_epoch(&mut self) {
        self.epoch = None;
    }

    /// The agent began to stop (SIGTERM, SIGINT): from now on a process that ends is not
    /// restarted (a Ctrl-C reaches the process too, and it may end before the agent tears it
    /// down). A restart already scheduled is cancelled.
    pub fn stopping(&mut self) {
        self.stopping = true;
        self.timers.stop(Timer::Restart);
    }

    /// The agent left its cluster and shuts down: the process is torn down (as by an `off`,
    /// after the requests already queued) and never started again; [`PodAction::ShutDown`]
    /// says when it is down. Call [`PodMachine::stopping`] first, when the shutdown begins.
    pub fn shutdown(&mut self, now: Instant) {
        self.stopping();
        self.queue
            .push_back(Job::internal(Origin::Shutdown, Task::Off));
        self.pump(now);
    }

    /// A control request arrived. It runs when the requests before it are done.
    pub fn handle_control(&mut self, now: Instant, req: PodRequest) {
        self.queue.push_back(Job {
            origin: Origin::Client(req.id),
            task: req.task,
            epoch: req.epoch,
            input: req.input,
            deadline: req.deadline,
        });
        self.queue_changed();
        self.pump(now);
    }

    /// The step the machine asked for ended.
    pub fn handle_result(&mut self, now: Instant, result: StepResult) {
        match std::mem::replace(&mut self.op, Op::Idle) {
            Op::Idle => {}
            Op::Check => {
                let outcome = match result {
                    // A crash while the check ran fails it, whatever the hook said.
                    StepResult::Hook(_) if self.exited_since_check => {
                        Err(self.last_failure.clone().unwrap_or_default())
                    }
                    StepResult::Hook(r) => r,
                    _ => Err("unexpected result for a sanity check".to_string()),
                };
                self.check_done(now, outcome);
            }
            Op::Restart => match result {
                StepResult::Spawned(Ok(pid)) => self.started(now, pid),
                StepResult::Spawned(Err(e)) => self.crashed(now, format!("restart failed: {e}")),
                _ => {}
            },
            Op::BreakerOff => {}
            Op::Finish => {
                self.process = Process::Dead;
                self.configured = false;
            }
            Op::Task { req, step, view } => self.task_step_done(now, req, step, view, result),
        }
        self.pump(now);
    }

    /// The sub-process `pid` exited with `code` (`None`: killed by a signal).
    pub fn handle_exit(&mut self, now: Instant, pid: u32, code: Option<i32>) {
        if self.pid != Some(pid) {
            return;
        }
        self.pid = None;
        self.timers.stop(Timer::Kill);
        match &self.op {
            Op::Task {
                step: Step::Stop, ..
            } => {
                let Op::Task { req, view, .. } = std::mem::replace(&mut self.op, Op::Idle) else {
                    unreachable!("matched above");
                };
                self.process = Process::Stopped;
                self.continue_after_stop(now, req, view);
            }
            Op::BreakerOff => {
                self.op = Op::Idle;
                self.process = Process::Stopped;
            }
            _ if self.process == Process::Terminating => {
                self.process = Process::Stopped;
            }
            _ => {
                if code == Some(0) {
                    self.last_failure = Some("process exited with code 0: the pod finishes".into());
                    self.timers.stop(Timer::Restart);
                    self.timers.stop(Timer::Check);
                    if self.op == Op::Idle {
                        self.finish();
                    } else {
                        // Finish once the step under way is done.
                        self.timers.stop(Timer::Restart);
                        self.process = Process::Stopped;
                        self.queue
                            .push_front(Job::internal(Origin::Finish, Task::Kill));
                    }
                } else {
                    let why = match code {
                        Some(c) => format!("process exited with code {c}"),
                        None => "process killed by a signal".to_string(),
                    };
                    self.crashed(now, why);
                }
            }
        }
        self.pump(now);
    }

    /// A timer fired (spurious calls are fine).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.is_due(Timer::Kill, now) && self.pid.is_some() {
            self.timers.stop(Timer::Kill);
            if self.settings.soft {
                // Soft: leave the process alone after the grace.
                self.pid = None;
                self.last_failure =
                    Some("tear-down grace ran out; process left running (soft)".into());
                self.handle_exit_soft(now);
            } else {
                self.actions.push_back(PodAction::Kill);
            }
        }
        // Queued requests whose deadline passed while another step ran: refuse them now and drop
        // them (never run late). Left queued, their deadline would stay in `poll_timeout` and
        // the runtime would wake up at once, again and again, until the step ends.
        let (expired, waiting): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|req| req.deadline.is_some_and(|d| now >= d));
        self.queue = waiting;
        self.queue_changed();
        for req in expired {
            self.refuse(req.origin, Refusal::TimedOut(req.task));
        }
        self.pump(now);
    }

    /// The next action, one at a time.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<PodAction> {
        self.actions.pop_front()
    }

    /// When [`PodMachine::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // The restart and the sanity check wait for the step under way, and run only while
        // the process is meant to run: `pump` starts them, never in the middle of a step.
        let between_steps = self.op == Op::Idle && self.process == Process::Running;
        self.timers.next(|timer| match timer {
            Timer::Kill | Timer::Request => true,
            Timer::Restart | Timer::Check => between_steps,
        })
    }

    fn handle_exit_soft(&mut self, now: Instant) {
        let op = std::mem::replace(&mut self.op, Op::Idle);
        match op {
            Op::Task {
                req,
                step: Step::Stop,
                view,
            } => {
                self.process = Process::Stopped;
                self.continue_after_stop(now, req, view);
            }
            Op::BreakerOff => self.process = Process::Stopped,
            other => {
                self.op = other;
                if self.process == Process::Terminating {
                    self.process = Process::Stopped;
                }
            }
        }
    }

    /// Re-arms [`Timer::Request`] for the earliest deadline of the queued requests.
    fn queue_changed(&mut self) {
        let first = self.queue.iter().filter_map(|req| req.deadline).min();
        self.timers.set_opt(Timer::Request, first);
    }

    /// Starts the next queued request, or a due timer, when nothing is under way.
    fn pump(&mut self, now: Instant) {
        while self.op == Op::Idle {
            if let Some(req) = self.queue.pop_front() {
                if req.deadline.is_some() {
                    self.queue_changed();
                }
                self.start_task(now, req);
                continue;
            }
            if self.process != Process::Running {
                return;
            }
            if self.timers.is_due(Timer::Restart, now) && self.pid.is_none() {
                self.timers.stop(Timer::Restart);
                self.restarts += 1;
                self.op = Op::Restart;
                self.actions.push_back(PodAction::Spawn);
                return;
            }
            if self.timers.is_due(Timer::Check, now) {
                self.timers
                    .set(Timer::Check, now + self.settings.check_every);
                if self.exited_since_check {
                    // A crash since the last check fails this one (at most one per period).
                    self.check_done(now, Err(self.last_failure.clone().unwrap_or_default()));
                    continue;
                }
                if self.pid.is_none() {
                    return;
                }
                self.op = Op::Check;
                self.actions.push_back(PodAction::Hook {
                    hook: Hook::SanityCheck,
                    view: None,
                    input: HookInput::None,
                });
            }
            return;
        }
    }

    /// Hands a request's outcome to whoever waits for it.
    fn reply(&mut self, origin: Origin, outcome: Outcome) {
        match origin {
            Origin::Client(id) => self.actions.push_back(PodAction::Reply { id, outcome }),
            Origin::Finish => {}
            Origin::Shutdown => self.actions.push_back(PodAction::ShutDown),
        }
    }

    fn accept(&mut self, origin: Origin, how: Accepted) {
        self.reply(origin, Outcome::Accepted(how));
    }

    fn refuse(&mut self, origin: Origin, why: Refusal) {
        self.reply(origin, Outcome::Refused(why));
    }

    fn start_task(&mut self, now: Instant, mut req: Job) {
        if req.deadline.is_some_and(|d| now >= d) {
            // Timed out before it started: dropped, never run late.
            return self.refuse(req.origin, Refusal::TimedOut(req.task));
        }
        if let (Some(epoch), Some(kept)) = (req.epoch, self.epoch) {
            if epoch < kept {
                return self.refuse(req.origin, Refusal::Stale { epoch, kept });
            }
        }
        if self.process == Process::Dead {
            return self.refuse(req.origin, Refusal::Dead);
        }
        if let Some(e) = req.epoch {
            self.epoch = Some(self.epoch.map_or(e, |k| k.max(e)));
        }
        if req.task == Task::On && req.input == ControlInput::Empty {
            return self.operator_on(req);
        }
        let view = match req.task {
            Task::Check | Task::On | Task::Ok | Task::Plan => {
                match std::mem::replace(&mut req.input, ControlInput::Empty) {
                    ControlInput::View(body) => match ClusterView::new(&self.key, &body) {
                        Ok(v) => Some(Arc::new(v)),
                        Err(e) => {
                            return self.refuse(req.origin, Refusal::BadRequest(e.to_string()))
                        }
                    },
                    ControlInput::NotAView(why) => {
                        return self.refuse(req.origin, Refusal::BadRequest(why))
                    }
                    _ => {
                        let why = format!("{} needs the cluster view in its body", req.task);
                        return self.refuse(req.origin, Refusal::BadRequest(why));
                    }
                }
            }
            _ => None,
        };
        match req.task {
            Task::Check => self.run_hook(req, Hook::CanConfigure, view, HookInput::None),
            Task::Ok => self.run_hook(req, Hook::Configured, view, HookInput::None),
            Task::Signal => {
                let input = match std::mem::replace(&mut req.input, ControlInput::Empty) {
                    ControlInput::Opaque(v) => HookInput::Opaque(v),
                    _ => HookInput::Opaque(Value::Null),
                };
                self.run_hook(req, Hook::Signal, None, input)
            }
            Task::On => {
                if !self.initialized {
                    self.op = Op::Task {
                        req,
                        step: Step::Initialize,
                        view: view.clone(),
                    };
                    self.actions.push_back(PodAction::Hook {
                        hook: Hook::Initialize,
                        view,
                        input: HookInput::None,
                    });
                } else {
                    self.on_initialized(now, req, view);
                }
            }
            Task::Off | Task::Kill => self.stop_then(now, req, None),
            Task::Plan => {
                let input = match &view {
                    Some(v) => HookInput::Plan(self.plan(v)),
                    None => HookInput::None,
                };
                self.run_hook(req, Hook::Plan, view, input)
            }
            Task::Health => {
                if self.process != Process::Running || self.pid.is_none() {
                    let msg = format!("the process is not running ({})", self.process.as_str());
                    return self.refuse(req.origin, Refusal::Unhealthy(msg));
                }
                self.run_hook(req, Hook::SanityCheck, None, HookInput::None)
            }
        }
    }

    /// An `on` without a view is an operator's (as in 1.x): it never re-renders. Running:
    /// nothing to do. Stopped after a configuration: the last command starts again with its
    /// last overrides. Never configured: refused as not ready, and the pod stays alive.
    fn operator_on(&mut self, req: Job) {
        if self.process == Process::Running {
            return self.accept(req.origin, Accepted::Done);
        }
        if !self.has_command {
            let msg = "this pod was never configured, so there is nothing to start: its leader                        configures it (an `on` carrying the cluster view)"
                .to_string();
            return self.refuse(req.origin, Refusal::NotReady(msg));
        }
        self.exited_since_check = false;
        self.op = Op::Task {
            req,
            step: Step::Spawn,
            view: None,
        };
        self.actions.push_back(PodAction::Spawn);
    }

    fn run_hook(&mut self, req: Job, hook: Hook, view: Option<Arc<ClusterView>>, input: HookInput) {
        self.op = Op::Task {
            req,
            step: Step::Hook,
            view: view.clone(),
        };
        self.actions
            .push_back(PodAction::Hook { hook, view, input });
    }

    fn on_initialized(&mut self, now: Instant, req: Job, view: Option<Arc<ClusterView>>) {
        let Some(v) = view.clone() else {
            let why = "on needs a cluster view".to_string();
            return self.refuse(req.origin, Refusal::BadRequest(why));
        };
        if self.process == Process::Running && !self.settings.strict && self.same_dependencies(&v) {
            // Scaling the cluster does not restart every member: re-render and maybe reload.
            self.op = Op::Task {
                req,
                step: Step::Reload,
                view: view.clone(),
            };
            self.actions.push_back(PodAction::Hook {
                hook: Hook::Reload,
                view,
                input: HookInput::None,
            });
            return;
        }
        self.stop_then(now, req, view);
    }

    /// Whether a view's dependencies let a running, non-strict pod reload instead of restarting:
    /// the same dependencies (with a reload hook: the same dependency names).
    fn same_dependencies(&self, v: &ClusterView) -> bool {
        match &self.last_deps {
            Some(last) if self.settings.reload_dependencies => {
                last.keys().eq(v.dependencies.keys())
            }
            Some(last) => *last == v.dependencies,
            None => false,
        }
    }

    /// What an `on` with view `v` would do, as `plan` answers it before the files are added:
    /// `would` (`start`, `configure`, `restart` or `reload`), `why`, and per dependency the
    /// pods that joined and left since the last configuration.
    fn plan(&self, v: &ClusterView) -> PlanDecision {
        let (would, why) = if self.process != Process::Running {
            if !self.settings.start && !self.ever_started {
                (
                    Would::Configure,
                    "start = false: the round configures it; an operator's on starts the process"
                        .to_string(),
                )
            } else if !self.has_command {
                (
                    Would::Start,
                    "never configured: the round configures it and starts its process".to_string(),
                )
            } else {
                (
                    Would::Start,
                    format!(
                        "the process is {}: the round configures it and starts it",
                        self.process.as_str()
                    ),
                )
            }
        } else if self.settings.strict {
            (
                Would::Restart,
                "strict: every on restarts the process".to_string(),
            )
        } else if !self.same_dependencies(v) {
            let why = if self.settings.reload_dependencies {
                "a dependency was added or removed"
            } else {
                "its dependencies changed (without a reload hook, that restarts)"
            };
            (Would::Restart, why.to_string())
        } else {
            (
                Would::Reload,
                "not strict, same dependencies: the process keeps running".to_string(),
            )
        };
        let mut dependencies = std::collections::BTreeMap::new();
        let empty = Default::default();
        let last = self.last_deps.as_ref().unwrap_or(&empty);
        let names: std::collections::BTreeSet<&String> =
            last.keys().chain(v.dependencies.keys()).collect();
        for name in names {
            let (old, new) = (last.get(name), v.dependencies.get(name));
            let keys = |p: Option<&crate::wire::Pods>| -> Vec<String> {
                p.map(|p| p.keys().cloned().collect()).unwrap_or_default()
            };
            let (old_keys, new_keys) = (keys(old), keys(new));
            let joined: Vec<&String> = new_keys.iter().filter(|k| !old_keys.contains(k)).collect();
            let left: Vec<&String> = old_keys.iter().filter(|k| !new_keys.contains(k)).collect();
            if self.last_deps.is_some()
                && (old.is_none() || new.is_none() || !joined.is_empty() || !left.is_empty())
            {
                dependencies.insert(
                    name.clone(),
                    DependencyChange {
                        joined: joined.into_iter().cloned().collect(),
                        left: left.into_iter().cloned().collect(),
                        added: old.is_none(),
                        removed: new.is_none(),
                    },
                );
            }
        }
        PlanDecision {
            would,
            why,
            dependencies,
        }
    }

    /// Tears the process down if it is alive, then continues the request.
    fn stop_then(&mut self, now: Instant, req: Job, view: Option<Arc<ClusterView>>) {
        self.timers.stop(Timer::Restart);
        self.timers.stop(Timer::Check);
        if self.pid.is_some() {
            self.process = Process::Terminating;
            self.timers.set(Timer::Kill, now + self.settings.grace);
            self.op = Op::Task {
                req,
                step: Step::Stop,
                view,
            };
            self.actions.push_back(PodAction::Terminate);
        } else {
            if self.process != Process::Dead {
                self.process = Process::Stopped;
            }
            self.continue_after_stop(now, req, view);
        }
    }

    fn continue_after_stop(&mut self, _now: Instant, req: Job, view: Option<Arc<ClusterView>>) {
        self.exited_since_check = false;
        match req.task {
            Task::On => {
                let v = view.clone().expect("on always has a view");
                self.op = Op::Task {
                    req,
                    step: Step::Configure,
                    view,
                };
                self.actions.push_back(PodAction::Configure { view: v });
            }
            Task::Kill => {
                self.op = Op::Task {
                    req,
                    step: Step::Finalize,
                    view: None,
                };
                self.actions.push_back(PodAction::Hook {
                    hook: Hook::Finalize,
                    view: None,
                    input: HookInput::None,
                });
            }
            _ => {
                self.configured = false;
                self.accept(req.origin, Accepted::Done);
            }
        }
    }

    fn task_step_done(
        &mut self,
        now: Instant,
        req: Job,
        step: Step,
        view: Option<Arc<ClusterView>>,
        result: StepResult,
    ) {
        match (step, result) {
            (Step::Hook, StepResult::Hook(r)) => match r {
                Ok(v) if req.task == Task::Signal && !v.is_null() => {
                    self.accept(req.origin, Accepted::Answer(v))
                }
                // The sanity check's metrics, as the pod's periodic check keeps them.
                Ok(v) if matches!(req.task, Task::Health | Task::Plan) && v.is_object() => {
                    self.accept(req.origin, Accepted::Answer(v))
                }
                Ok(_) => self.accept(req.origin, Accepted::Done),
                Err(e) if req.task == Task::Check => self.refuse(req.origin, Refusal::NotReady(e)),
                Err(e) if req.task == Task::Health => {
                    self.refuse(req.origin, Refusal::Unhealthy(e))
                }
                Err(e) => self.refuse(req.origin, Refusal::Failed(e)),
            },
            (Step::Initialize, StepResult::Hook(r)) => match r {
                Ok(_) => {
                    self.initialized = true;
                    self.on_initialized(now, req, view);
                }
                Err(e) => self.configure_failed(req.origin, format!("initialize failed: {e}")),
            },
            (Step::Reload, StepResult::Hook(r)) => match r {
                Ok(_) => {
                    self.configured = true;
                    self.accept(req.origin, Accepted::Done);
                }
                Err(e) => {
                    // Reload failed: fall back to a full restart with the new view.
                    self.last_failure = Some(format!("reload failed, restarting: {e}"));
                    self.stop_then(now, req, view);
                }
            },
            (Step::Configure, StepResult::Configured(r)) => match r {
                Ok(()) => {
                    let v = view.clone().expect("on always has a view");
                    self.last_deps = Some(v.dependencies.clone());
                    self.has_command = true;
                    // With `start = false` an `on` carrying a view (the leader's) only
                    // configures until the process has run once; an operator's empty `on`
                    // starts it. Leader and operator are told apart by the body, as in 1.x
                    // (whose leaders send no epoch).
                    if self.settings.start || self.ever_started {
                        self.op = Op::Task {
                            req,
                            step: Step::Spawn,
                            view,
                        };
                        self.actions.push_back(PodAction::Spawn);
                    } else {
                        self.configured = true;
                        self.accept(req.origin, Accepted::Done);
                    }
                }
                Err(e) => self.configure_failed(req.origin, e),
            },
            (Step::Spawn, StepResult::Spawned(r)) => match r {
                Ok(pid) => {
                    self.started(now, pid);
                    self.crash_streak = 0;
                    self.failed_checks = 0;
                    self.configured = true;
                    self.accept(req.origin, Accepted::Started { pid });
                }
                Err(e) => {
                    self.configure_failed(req.origin, format!("cannot start the process: {e}"))
                }
            },
            (Step::Finalize, StepResult::Hook(r)) => {
                self.process = Process::Dead;
                self.configured = false;
                match r {
                    Ok(_) => self.accept(req.origin, Accepted::Done),
                    Err(e) => {
                        let why = format!("finalize failed: {e}");
                        self.last_failure = Some(why.clone());
                        self.accept(req.origin, Accepted::Warning(why));
                    }
                }
            }
            (step, result) => {
                let msg = format!("internal error: step {step:?} got {result:?}");
                self.refuse(req.origin, Refusal::Failed(msg));
            }
        }
    }

    /// A configure failure is refused and, as in 1.x, turns the pod dead.
    fn configure_failed(&mut self, origin: Origin, why: String) {
        self.process = Process::Dead;
        self.configured = false;
        self.last_failure = Some(why.clone());
        self.refuse(origin, Refusal::ConfigureFailed(why));
    }

    fn started(&mut self, now: Instant, pid: u32) {
        self.pid = Some(pid);
        self.process = Process::Running;
        self.ever_started = true;
        self.started_at = Some(now);
        self.timers.stop(Timer::Restart);
        if self.timers.get(Timer::Check).is_none() {
            self.timers
                .set(Timer::Check, now + self.settings.check_every);
        }
    }

    fn crashed(&mut self, now: Instant, why: String) {
        self.exited_since_check = true;
        if self.stopping {
            self.last_failure = Some(format!("{why}; not restarted: the agent is stopping"));
            self.timers.stop(Timer::Restart);
            return;
        }
        let stable = self
            .started_at
            .is_some_and(|t| now.saturating_duration_since(t) >= self.settings.stable_after);
        if stable {
            self.crash_streak = 0;
        }
        let delay = if self.crash_streak == 0 {
            Duration::ZERO
        } else {
            let exp = (self.crash_streak - 1).min(20);
            self.settings
                .restart_delay
                .saturating_mul(1u32 << exp)
                .min(self.settings.restart_delay_max)
        };
        let delay = match &mut self.jitter {
            Some(j) => j.spread(delay),
            None => delay,
        };
        self.crash_streak += 1;
        self.last_failure = Some(format!("{why}; restarting in {:.1} s", delay.as_secs_f64()));
        self.timers.set(Timer::Restart, now + delay);
    }

    fn check_done(&mut self, now: Instant, outcome: Result<Value, String>) {
        self.exited_since_check = false;
        match outcome {
            Ok(metrics) => {
                self.failed_checks = 0;
                if metrics.is_object() {
                    self.metrics = metrics;
                }
            }
            Err(e) => {
                self.failed_checks += 1;
                self.sanity_failures += 1;
                self.last_failure = Some(format!("sanity check failed: {e}"));
                self.check_failure = Some(e);
                if self.failed_checks >= self.settings.checks.max(1) {
                    self.give_up(now);
                }
            }
        }
    }

    fn give_up(&mut self, now: Instant) {
        let why = format!(
            "circuit breaker: {} failed sanity checks in a row",
            self.failed_checks
        );
        self.last_failure = Some(why);
        self.timers.stop(Timer::Restart);
        self.timers.stop(Timer::Check);
        self.configured = false;
        match self.settings.on_give_up {
            GiveUp::Exit => self.actions.push_back(PodAction::Exit { code: 3 }),
            GiveUp::Off => {
                if self.pid.is_some() {
                    self.process = Process::Terminating;
                    self.timers.set(Timer::Kill, now + self.settings.grace);
                    self.op = Op::BreakerOff;
                    self.actions.push_back(PodAction::Terminate);
                } else {
                    self.process = Process::Stopped;
                }
            }
        }
    }

    fn finish(&mut self) {
        self.process = Process::Stopped;
        self.op = Op::Finish;
        self.actions.push_back(PodAction::Hook {
            hook: Hook::Finalize,
            view: None,
            input: HookInput::None,
        });
    }
}
