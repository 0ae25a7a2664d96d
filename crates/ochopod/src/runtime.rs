//! The driver: one loop that feeds ZooKeeper events, control requests, hook results and process
//! exits to core's machines ([`PodMachine`], [`Leader`]) and carries out their actions with the
//! ZooKeeper, HTTP and supervisor layers.

use crate::lifecycle::{Failure, Lifecycle, ProcessCommand};
use bytes::Bytes;
use futures::future::BoxFuture;
use ochopod_core::leader::{Answer, Leader, LeaderAction};
use ochopod_core::pod::{Hook, PodAction, PodMachine, PodRequest, StepResult};
use ochopod_core::settings::{ModelSettings, ProcessSettings};
use ochopod_core::wire::{ControlBody, Epoch, Info, Registration, RoundReport, Task, PROTOCOL};
use ochopod_core::ClusterView;
use ochopod_core::DependencyPattern;
use ochopod_http::{ControlRequest, ExecRequest, Handler, Reply};
use ochopod_supervisor::{CommandSpec, OutputMode, PodLog, Reaper};
use ochopod_zk::{Coordinator, SessionState, ZkCommand, ZkEvent, ZkSettings};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::metrics::Metrics;

/// Everything the runtime needs, already merged from flags, spec, environment and binding.
#[derive(Clone, Debug)]
pub(crate) struct RuntimeSettings {
    /// The pod's key (a UUID), from `state_dir` or new.
    pub key: String,
    /// The pod's first seq, when `state_dir` remembers it.
    pub seq: Option<u64>,
    /// Where key and seq are kept, if anywhere.
    pub state_dir: Option<PathBuf>,
    /// The registration to publish (seq filled in by ZooKeeper).
    pub registration: Registration,
    /// ZooKeeper connection.
    pub zk: ZkSettings,
    /// The address the control plane listens on.
    pub listen: std::net::SocketAddr,
    /// Control-plane token.
    pub token: Option<String>,
    /// The control plane's TLS (server side, and the leader's client side).
    pub tls: Option<(ochopod_http::ServerTls, ochopod_http::ClientTls)>,
    /// The leader's settings.
    pub model: ModelSettings,
    /// The pod's settings.
    pub process: ProcessSettings,
    /// Forward the process output into the pod log.
    pub pipe: bool,
    /// The agent's environment, handed to the sub-process (plus `ochopod` and overrides).
    pub env: BTreeMap<String, String>,
}

/// Messages into the driver loop.
enum Msg {
    Zk(ZkEvent),
    Control(PodRequest, oneshot::Sender<Reply>),
    Reset(oneshot::Sender<Reply>),
    Step(StepResult),
    Configured(Result<ProcessCommand, Failure>),
    Exit {
        pid: u32,
        code: Option<i32>,
        /// How it ended, for the pod log (`exit code 1`, `killed by SIGKILL`).
        how: String,
    },
    LeaderReply {
        round: u64,
        key: String,
        reply: Answer,
        /// The request's fan-out permit, released once the reply is handled (see
        /// [`Driver::held`]).
        permit: tokio::sync::OwnedSemaphorePermit,
    },
    Probe(Result<String, String>),
    Shutdown,
    Left,
}

/// What `/info`, `/healthz`, `/readyz` and `/metrics` read, refreshed by the loop.
pub(crate) struct Shared {
    info_value: RwLock<Value>,
    ready: std::sync::atomic::AtomicBool,
    log: PodLog,
    pub(crate) metrics: Metrics,
}

struct ControlHandler<L> {
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    lifecycle: Arc<L>,
}

impl<L: Lifecycle> Handler for ControlHandler<L> {
    fn info(&self) -> Value {
        self.shared.info_value.read().expect("info lock").clone()
    }

    fn log(&self) -> Vec<String> {
        // Each line ends with its newline, as 1.x serves the lines of its log file.
        let mut lines = self.shared.log.lines();
        for l in &mut lines {
            l.push('\n');
        }
        lines
    }

    fn healthy(&self) -> bool {
        !self.tx.is_closed()
    }

    fn ready(&self) -> bool {
        self.shared.ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn metrics(&self) -> String {
        self.shared.metrics.encode()
    }

    fn control(&self, req: ControlRequest) -> BoxFuture<'static, Reply> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let deadline = req.timeout.map(|t| now + t);
        let pod_req = PodRequest {
            id: 0,
            task: req.task,
            epoch: req.epoch,
            body: req.body,
            deadline,
        };
        let sent = self.tx.send(Msg::Control(pod_req, tx));
        Box::pin(async move {
            if sent.is_err() {
                return Reply::error(503, "the agent is shutting down");
            }
            rx.await
                .unwrap_or_else(|_| Reply::error(503, "the agent is shutting down"))
        })
    }

    fn reset(&self) -> BoxFuture<'static, Reply> {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Msg::Reset(tx));
        Box::pin(async move {
            if sent.is_err() {
                return Reply::error(503, "the agent is shutting down");
            }
            rx.await
                .unwrap_or_else(|_| Reply::error(503, "the agent is shutting down"))
        })
    }

    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Reply> {
        let lifecycle = Arc::clone(&self.lifecycle);
        Box::pin(async move {
            let dir = match tempfile::Builder::new().prefix("ochopod-exec-").tempdir() {
                Ok(d) => d,
                Err(e) => return Reply::error(500, format!("cannot make a temporary folder: {e}")),
            };
            for (name, data) in &req.files {
                if let Err(e) = std::fs::write(dir.path().join(name), data) {
                    return Reply::error(500, format!("cannot write {name}: {e}"));
                }
            }
            let out = lifecycle
                .tool(&req.tool, req.args.clone(), dir.path().to_path_buf())
                .await;
            drop(dir);
            match out {
                Ok(o) => Reply::ok(json!({ "code": o.code, "lines": o.lines })),
                Err(e) => Reply::error(404, e.0),
            }
        })
    }
}

/// The running pod: its machines and what carries their actions out.
struct Driver<L> {
    settings: RuntimeSettings,
    lifecycle: Arc<L>,
    reaper: Reaper,
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    pod: PodMachine,
    leader: Option<(Leader, Epoch)>,
    patterns: Vec<DependencyPattern>,
    zk: mpsc::UnboundedSender<ZkCommand>,
    client: ochopod_http::Client,
    fan_out: Arc<Semaphore>,
    waiters: HashMap<u64, oneshot::Sender<Reply>>,
    next_id: u64,
    command: Option<ProcessCommand>,
    seq: Option<u64>,
    session: &'static str,
    last_round: Option<RoundReport>,
    /// Leader: pod nodes whose registration cannot be read (yet), by node name, with why.
    unreadable: BTreeMap<String, String>,
    body_cache: BodyCache,
    /// The last round id of this process's earlier leadership terms: a new term continues from
    /// it, so late replies of an old term never match a new round.
    last_round_id: u64,
    /// The round whose control requests may still go out (0: none). Requests queued behind the
    /// fan-out limit check it once they get a permit, so an aborted round or a lost leadership
    /// stops sending at once.
    active_round: Arc<std::sync::atomic::AtomicU64>,
    /// Fan-out permits of replies just handled, released at the end of [`Driver::drain`]:
    /// once the leader has acted on a reply (a failure aborts the round and clears
    /// `active_round`), not before, so a request queued behind it never slips out for a round
    /// that this very reply ended.
    held: Vec<tokio::sync::OwnedSemaphorePermit>,
    /// Set from a tear-down until the next spawn: the exit of the process's group leader is
    /// then reported only once its whole group is gone (or SIGKILLed at the grace).
    tearing_down: Arc<std::sync::atomic::AtomicBool>,
    shutdown: bool,
    done: bool,
    exit_code: i32,
    /// What the pod log last said about the pod: its process state and its last failure (a
    /// change is logged once), how many times the process started, the last round announced.
    logged: Logged,
}

#[derive(Default)]
struct Logged {
    process: Option<ochopod_core::pod::Process>,
    failure: Option<String>,
    checks: u64,
    starts: u64,
    round: u64,
}

/// The request id of the `off` that ends the agent after SIGTERM.
const SHUTDOWN_ID: u64 = u64::MAX - 1;

/// Runs the pod until it is told to stop; returns the agent's exit code.
pub(crate) async fn run<L: Lifecycle>(
    settings: RuntimeSettings,
    lifecycle: Arc<L>,
    reaper: Reaper,
    log: PodLog,
) -> Result<i32, crate::Error> {
    let cluster = settings.registration.full_cluster();
    let span = info_span!("pod", key = %settings.key, cluster = %cluster);
    async move {
        let patterns = ochopod_core::deps::parse_all(
            &settings.model.depends_on,
            &settings.registration.namespace,
        )
        .map_err(|e| crate::Error::Settings(e.to_string()))?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            info_value: RwLock::new(Value::Null),
            ready: std::sync::atomic::AtomicBool::new(false),
            log: log.clone(),
            metrics: Metrics::new(),
        });

        // The control plane first: the registration advertises it.
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| crate::Error::Listen {
                addr: settings.listen,
                source,
            })?;
        let handler = Arc::new(ControlHandler {
            tx: tx.clone(),
            shared: Arc::clone(&shared),
            lifecycle: Arc::clone(&lifecycle),
        });
        let (stop_http, http_stopped) = oneshot::channel::<()>();
        let config = ochopod_http::ServerConfig {
            token: settings.token.clone(),
            tls: settings.tls.as_ref().map(|t| t.0.clone()),
            ..Default::default()
        };
        let client = ochopod_http::Client::with_tls(
            settings.token.clone(),
            settings.tls.as_ref().map(|t| &t.1),
        )
        .map_err(|e| crate::Error::Settings(e.to_string()))?;
        let server = tokio::spawn(ochopod_http::serve(listener, handler, config, async move {
            let _ = http_stopped.await;
        }));

        // ZooKeeper.
        let id = ochopod_zk::PodId {
            namespace: settings.registration.namespace.clone(),
            cluster: settings.registration.cluster.clone(),
            key: settings.key.clone(),
            seq: settings.seq,
        };
        let (handle, mut events) = Coordinator::spawn(
            settings.zk.clone(),
            id,
            settings.registration.clone(),
            patterns.clone(),
        )
        .map_err(|e| crate::Error::Settings(e.to_string()))?;
        // Commands go through one ordered queue (a commit must follow the writes before it).
        let (zk, mut zk_rx) = mpsc::unbounded_channel::<ZkCommand>();
        tokio::spawn(async move {
            while let Some(cmd) = zk_rx.recv().await {
                if handle.send(cmd).await.is_err() {
                    break;
                }
            }
        });
        let ztx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if ztx.send(Msg::Zk(ev)).is_err() {
                    break;
                }
            }
        });

        // Agent signals: SIGTERM/SIGINT leave the cluster then stop; others go to the process.
        let mut signals = ochopod_supervisor::agent_signals()
            .map_err(|e| crate::Error::Settings(format!("cannot install signal handlers: {e}")))?;
        let stx = tx.clone();
        let forward_pid = Arc::new(Mutex::new(None::<u32>));
        let fp = Arc::clone(&forward_pid);
        tokio::spawn(async move {
            while let Some(sig) = signals.recv().await {
                match sig {
                    ochopod_supervisor::AgentSignal::Terminate => {
                        let _ = stx.send(Msg::Shutdown);
                    }
                    ochopod_supervisor::AgentSignal::Forward(s) => {
                        if let Some(pid) = *fp.lock().expect("pid lock") {
                            let _ = ochopod_supervisor::signal_group(pid, s);
                        }
                    }
                    other => debug!(?other, "signal ignored"),
                }
            }
        });

        let process = settings.process.clone();
        let key = settings.key.clone();
        let seq = settings.seq;
        let fan_out = settings.model.fan_out.clamp(1, Semaphore::MAX_PERMITS);
        let mut d = Driver {
            client,
            settings,
            lifecycle,
            reaper,
            tx,
            shared,
            pod: PodMachine::new(process, &key),
            leader: None,
            patterns,
            zk,
            fan_out: Arc::new(Semaphore::new(fan_out)),
            waiters: HashMap::new(),
            next_id: 1,
            command: None,
            seq,
            session: "connecting",
            last_round: None,
            unreadable: BTreeMap::new(),
            body_cache: BodyCache::default(),
            last_round_id: 0,
            active_round: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            held: Vec::new(),
            tearing_down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            shutdown: false,
            done: false,
            exit_code: 0,
            logged: Logged::default(),
        };
        d.publish();
        loop {
            let deadline = d.next_deadline();
            let msg = match deadline {
                Some(t) => {
                    let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(t));
                    tokio::select! {
                        m = rx.recv() => m,
                        _ = sleep => { d.on_timeout(); d.after(&forward_pid); continue; }
                    }
                }
                None => rx.recv().await,
            };
            let Some(msg) = msg else { break };
            d.on_msg(msg);
            // Take what is already queued before publishing `/info` once for the batch: a
            // round with 1,000 pods brings thousands of replies, and `/info` is not rebuilt
            // after each of them.
            for _ in 0..1024 {
                match rx.try_recv() {
                    Ok(msg) => {
                        // The previous message's changes are logged before its actions are
                        // carried out (a crash before the restart that follows at once).
                        d.log_changes();
                        d.drain();
                        d.on_msg(msg);
                    }
                    Err(_) => break,
                }
                if d.done {
                    break;
                }
            }
            d.after(&forward_pid);
            if d.done {
                break;
            }
        }
        // Stop the control plane and the coordinator.
        let _ = stop_http.send(());
        let _ = tokio::time::timeout(Duration::from_secs(6), server).await;
        Ok(d.exit_code)
    }
    .instrument(span)
    .await
}

impl<L: Lifecycle> Driver<L> {
    fn next_deadline(&self) -> Option<Instant> {
        let a = self.pod.poll_timeout();
        let b = self.leader.as_ref().and_then(|(l, _)| l.poll_timeout());
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timeout(&mut self) {
        let now = Instant::now();
        self.pod.handle_timeout(now);
        if let Some((l, _)) = &mut self.leader {
            l.handle_timeout(now);
        }
    }

    /// Carries out every pending action, then refreshes `/info`.
    fn after(&mut self, forward_pid: &Arc<Mutex<Option<u32>>>) {
        // What the message changed is logged before what its actions change (a crash, then
        // the restart that follows at once).
        self.log_changes();
        self.drain();
        self.log_changes();
        *forward_pid.lock().expect("pid lock") = self.pod.pid();
        self.publish();
    }

    /// Writes what changed in the pod's state to the log: its process state (`running ->
    /// stopped` when turned off) and a new failure (a crash and its restart delay, a failed
    /// check, the circuit breaker).
    fn log_changes(&mut self) {
        let process = self.pod.process();
        match self.logged.process.replace(process) {
            Some(old) if old != process => {
                info!("process {} -> {}", old.as_str(), process.as_str());
            }
            _ => {}
        }
        // A failed check, with its reason and its count, as 1.x words it.
        let checks = self.pod.sanity_failures();
        if checks > self.logged.checks {
            self.logged.checks = checks;
            warn!(
                "sanity check ({}/{}) failed -> {}",
                self.pod.failed_checks(),
                self.settings.process.checks.max(1),
                self.pod.last_check_failure().unwrap_or("")
            );
        }
        let failure = self.pod.last_failure();
        if failure != self.logged.failure.as_deref() {
            match failure {
                // Said just above.
                Some(f) if f.starts_with("sanity check failed: ") => {}
                Some(f) => warn!("{f}"),
                None => {}
            }
            self.logged.failure = failure.map(String::from);
        }
    }

    /// Handles one message.
    fn on_msg(&mut self, msg: Msg) {
        let now = Instant::now();
        match msg {
            Msg::Zk(ev) => self.on_zk(now, ev),
            Msg::Control(mut req, reply) => {
                let id = self.next_id;
                self.next_id += 1;
                req.id = id;
                self.waiters.insert(id, reply);
                debug!(task = %req.task, epoch = ?req.epoch, "control request");
                self.pod.handle_control(now, req);
            }
            Msg::Reset(reply) => {
                // Until the coordinator reports the new session, `/info` says so.
                self.session = "resetting";
                let _ = self.zk.send(ZkCommand::Reset);
                let _ = reply.send(Reply::ok(json!({ "reset": true })));
            }
            Msg::Step(result) => self.pod.handle_result(now, result),
            Msg::Configured(result) => {
                let step = match result {
                    Ok(cmd) => {
                        info!("configured");
                        self.command = Some(cmd);
                        Ok(())
                    }
                    Err(e) => {
                        warn!("failed to configure -> {}", e.0);
                        Err(e.0)
                    }
                };
                self.pod.handle_result(now, StepResult::Configured(step));
            }
            Msg::Exit { pid, code, how } => {
                if self.pod.process() == ochopod_core::pod::Process::Running {
                    warn!("pid {pid} died ({how})");
                } else {
                    info!("pid {pid} ended ({how})");
                }
                if code != Some(0) && self.pod.process() == ochopod_core::pod::Process::Running {
                    self.shared.metrics.restarts.inc();
                }
                self.pod.handle_exit(now, pid, code);
            }
            Msg::LeaderReply {
                round,
                key,
                reply,
                permit,
            } => {
                if let Some((l, _)) = &mut self.leader {
                    l.handle_reply(now, round, &key, reply);
                }
                self.held.push(permit);
            }
            Msg::Probe(result) => {
                if let Some((l, _)) = &mut self.leader {
                    l.handle_probe(now, result);
                }
            }
            Msg::Shutdown => {
                if self.shutdown {
                    return;
                }
                self.shutdown = true;
                self.pod.stopping();
                info!("stopping: leaving the cluster first, then tearing the process down");
                // Leadership moves at once: nothing more is led from here.
                self.end_term();
                let (done_tx, done_rx) = oneshot::channel();
                let sent = self.zk.send(ZkCommand::Leave(done_tx)).is_ok();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if sent
                        && tokio::time::timeout(Duration::from_secs(5), done_rx)
                            .await
                            .is_err()
                    {
                        warn!("leaving ZooKeeper took more than 5 s; tearing down anyway");
                    }
                    let _ = tx.send(Msg::Left);
                });
            }
            Msg::Left => {
                info!("left the cluster; tearing the process down");
                self.pod.handle_control(
                    now,
                    PodRequest {
                        id: SHUTDOWN_ID,
                        task: Task::Off,
                        epoch: None,
                        body: Value::Null,
                        deadline: None,
                    },
                );
            }
        }
    }

    fn on_zk(&mut self, now: Instant, ev: ZkEvent) {
        match ev {
            ZkEvent::Session(state) => {
                self.session = match state {
                    SessionState::Connected => "connected",
                    SessionState::Disconnected => "disconnected",
                    SessionState::Expired => "expired",
                };
                self.shared
                    .metrics
                    .zk_connected
                    .set(i64::from(matches!(state, SessionState::Connected)));
                match (state, &mut self.leader) {
                    (SessionState::Expired, _) => {
                        self.end_term();
                    }
                    (SessionState::Connected, Some((l, _))) => l.handle_connection(now, true),
                    (SessionState::Disconnected, Some((l, _))) => l.handle_connection(now, false),
                    (_, None) => {}
                }
            }
            ZkEvent::Registered {
                seq,
                node,
                after_expiry,
            } => {
                // The coordinator logs the registration at INFO already.
                debug!(seq, node = %node, after_expiry, "registered");
                self.seq = Some(seq);
                if after_expiry {
                    self.pod.reset_epoch();
                }
                if let Some(dir) = &self.settings.state_dir {
                    if let Err(e) = crate::state::save(dir, &self.settings.key, seq) {
                        warn!("cannot keep key and seq in {}: {e}", dir.display());
                    }
                }
            }
            ZkEvent::Elected {
                epoch,
                committed_hash,
                snapshot_exists: _,
                members,
                dependencies,
                pause,
            } => {
                // The coordinator logs the election at INFO already.
                debug!(%epoch, members = members.len(), "elected leader");
                self.end_term();
                self.unreadable.clear();
                let mut leader = Leader::new(
                    self.settings.model.clone(),
                    &self.settings.registration.full_cluster(),
                    self.patterns.clone(),
                )
                .continue_rounds(self.last_round_id);
                let deps = dependencies
                    .into_iter()
                    .map(|d| (d.cluster, d.snapshot, d.has_pods))
                    .collect();
                leader.handle_pause(now, pause);
                leader.handle_elected(now, committed_hash, members, deps);
                self.leader = Some((leader, epoch));
                self.shared.metrics.leader.set(1);
            }
            ZkEvent::Deposed { reason } => {
                if self.end_term() {
                    warn!(%reason, "no longer leader");
                }
                self.unreadable.clear();
                self.shared.metrics.leader.set(0);
            }
            ZkEvent::Unreadable(nodes) => self.unreadable = nodes,
            ZkEvent::Pause(pause) => {
                if let Some((l, _)) = &mut self.leader {
                    l.handle_pause(now, pause);
                }
            }
            ZkEvent::Members(pods) => {
                if let Some((l, _)) = &mut self.leader {
                    l.handle_members(now, pods);
                }
            }
            ZkEvent::Dependency(u) => {
                if let Some((l, _)) = &mut self.leader {
                    l.handle_dependency(now, &u.cluster, u.snapshot, u.has_pods);
                }
            }
            ZkEvent::Committed { round, result } => {
                if let Some((l, _)) = &mut self.leader {
                    l.handle_commit(now, round, result);
                }
            }
        }
    }

    /// Ends the current leadership term, if any (returns whether there was one): its round
    /// numbering is kept for the next term and its queued requests are not sent.
    fn end_term(&mut self) -> bool {
        self.active_round
            .store(0, std::sync::atomic::Ordering::Relaxed);
        match self.leader.take() {
            Some((l, _)) => {
                self.last_round_id = self.last_round_id.max(l.last_round_id());
                true
            }
            None => false,
        }
    }

    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(action) = self.pod.poll_action() {
                progressed = true;
                self.do_pod(action);
            }
            while let Some(action) = self.leader.as_mut().and_then(|(l, _)| l.poll_action()) {
                progressed = true;
                self.do_leader(action);
            }
            if !progressed {
                break;
            }
        }
        self.held.clear();
    }

    fn do_pod(&mut self, action: PodAction) {
        let now = Instant::now();
        match action {
            PodAction::Reply { id, code, body } => {
                if id == SHUTDOWN_ID {
                    // The process is down after SIGTERM: the agent stops.
                    self.done = true;
                    return;
                }
                if let Some(w) = self.waiters.remove(&id) {
                    let _ = w.send(Reply { code, body });
                }
            }
            PodAction::Hook { hook, view, input } => {
                let l = Arc::clone(&self.lifecycle);
                let tx = self.tx.clone();
                let pid = self.pod.pid().unwrap_or(0);
                tokio::spawn(async move {
                    let r = run_hook(&*l, hook, view, input, pid).await;
                    // A failed check is logged with its count once the pod machine has it.
                    match &r {
                        Err(e) if hook != Hook::SanityCheck => {
                            warn!("{} failed -> {e}", hook_name(hook));
                        }
                        _ => {}
                    }
                    let _ = tx.send(Msg::Step(StepResult::Hook(r)));
                });
            }
            PodAction::Configure { view } => {
                info!(
                    "configuring pod {}/{} (seq {})",
                    view.index + 1,
                    view.size,
                    view.seq
                );
                let l = Arc::clone(&self.lifecycle);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let r = l.configure(&view).await;
                    let _ = tx.send(Msg::Configured(r));
                });
            }
            PodAction::Spawn => {
                let result = self.spawn();
                self.pod.handle_result(now, StepResult::Spawned(result));
            }
            PodAction::Terminate => {
                let Some(pid) = self.pod.pid() else { return };
                self.tearing_down
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let l = Arc::clone(&self.lifecycle);
                tokio::spawn(async move {
                    match l.tear_down(pid).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = ochopod_supervisor::signal_group(pid, nix_signal("SIGTERM"));
                        }
                        Err(e) => {
                            warn!("tear_down hook failed ({e}); sending SIGTERM");
                            let _ = ochopod_supervisor::signal_group(pid, nix_signal("SIGTERM"));
                        }
                    }
                });
            }
            PodAction::Kill => {
                if let Some(pid) = self.pod.pid() {
                    warn!(pid, "grace ran out: SIGKILL to the process group");
                    let _ = ochopod_supervisor::signal_group(pid, nix_signal("SIGKILL"));
                }
            }
            PodAction::Exit { code } => {
                warn!("circuit breaker tripped with on_give_up = \"exit\": the agent exits");
                self.exit_code = code;
                let _ = self.tx.send(Msg::Shutdown);
            }
        }
    }

    fn spawn(&mut self) -> Result<u32, String> {
        let Some(cmd) = self.command.clone() else {
            return Err("no configured command".to_string());
        };
        let mut env = self.settings.env.clone();
        let mut reg = self.settings.registration.clone();
        reg.seq = self.seq.or(reg.seq);
        reg.scrub_secrets();
        env.insert("ochopod".to_string(), reg.to_json());
        env.extend(cmd.env.clone());
        let spec = CommandSpec {
            program: cmd.program.clone(),
            cwd: cmd.cwd.clone(),
            env,
            output: if self.settings.pipe {
                OutputMode::Pipe(self.shared.log.clone())
            } else {
                OutputMode::Inherit
            },
        };
        self.tearing_down
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let mut child = self.reaper.spawn(&spec).map_err(|e| e.to_string())?;
        let pid = child.pid();
        self.logged.starts += 1;
        info!(
            "started <{}> as pid {pid} (start #{})",
            cmd.program, self.logged.starts
        );
        let tx = self.tx.clone();
        let tearing_down = Arc::clone(&self.tearing_down);
        // Bound of the wait for the rest of the group: the pod machine SIGKILLs the group at
        // the grace (its pid is still current), or, when soft, gives up on it then.
        let bound = self.settings.process.grace + Duration::from_secs(5);
        tokio::spawn(async move {
            let status = child.wait().await;
            if tearing_down.load(std::sync::atomic::Ordering::Relaxed) {
                // The group leader is gone, but the tear-down is over only once the rest of
                // its group is (a `sh -c 'app; ...'` shell dies at SIGTERM before its app).
                let deadline = tokio::time::Instant::now() + bound;
                while ochopod_supervisor::group_alive(pid) && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let _ = tx.send(Msg::Exit {
                pid,
                code: status.code(),
                how: status.to_string(),
            });
        });
        Ok(pid)
    }

    fn do_leader(&mut self, action: LeaderAction) {
        let Some((_, epoch)) = &self.leader else {
            return;
        };
        let epoch = *epoch;
        match action {
            LeaderAction::Control {
                round,
                task,
                key,
                body,
                timeout_secs,
                request_timeout,
            } => {
                if task != Task::Ok && self.logged.round != round {
                    self.logged.round = round;
                    info!(
                        "configuration round {round}: asking {} pods to configure",
                        body.pods.len()
                    );
                }
                let addr = body.pods.get(&key).and_then(Registration::control_addr);
                let (pods, deps) = self.body_cache.serialized(&body);
                let client = self.client.clone();
                let tx = self.tx.clone();
                let permits = Arc::clone(&self.fan_out);
                let active = Arc::clone(&self.active_round);
                if task != Task::Ok {
                    active.store(round, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::spawn(async move {
                    let Ok(permit) = permits.acquire_owned().await else {
                        return; // the semaphore is never closed
                    };
                    // Queued behind the fan-out limit while the round ended (aborted, or the
                    // leadership lost): not sent. `ok` is sent after the round's end.
                    if task != Task::Ok
                        && active.load(std::sync::atomic::Ordering::Relaxed) != round
                    {
                        return;
                    }
                    // Built once a permit is held: at most `fan_out` bodies exist at once.
                    let payload = control_body(&pods, &deps, &key);
                    let reply = match addr {
                        None => Answer::Failed(format!("pod {key} has no usable control address")),
                        Some(addr) => match client
                            .control(
                                &addr,
                                task,
                                timeout_secs,
                                Some(epoch),
                                payload,
                                request_timeout,
                            )
                            .await
                        {
                            Ok(r) => {
                                let msg = r
                                    .body
                                    .get("error")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_string();
                                Answer::Status(r.code, msg)
                            }
                            Err(e) => Answer::Failed(e.to_string()),
                        },
                    };
                    if task == Task::Ok {
                        if !matches!(reply, Answer::Status(200, _)) {
                            warn!(%key, ?reply, "ok failed (logged only)");
                        }
                        return;
                    }
                    let _ = tx.send(Msg::LeaderReply {
                        round,
                        key,
                        reply,
                        permit,
                    });
                });
            }
            LeaderAction::Commit {
                round,
                hash,
                snapshot,
            } => {
                info!(round, %hash, pods = snapshot.len(), "committing configuration");
                let _ = self.zk.send(ZkCommand::Commit {
                    epoch,
                    round,
                    hash,
                    snapshot,
                });
            }
            LeaderAction::WriteSnapshot { snapshot } => {
                let _ = self.zk.send(ZkCommand::WriteSnapshot { epoch, snapshot });
            }
            LeaderAction::Probe { body } => {
                let l = Arc::clone(&self.lifecycle);
                let tx = self.tx.clone();
                let key = self.settings.key.clone();
                tokio::spawn(async move {
                    let r = match ClusterView::new(&key, &body) {
                        Ok(view) => match l.probe(&view).await {
                            Ok(s) => Ok(s.unwrap_or_default()),
                            Err(e) => Err(e.0),
                        },
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = tx.send(Msg::Probe(r));
                });
            }
            LeaderAction::RoundEnded(mut report) => {
                self.active_round
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                report.started_ms = unix_ms().saturating_sub(report.duration_ms);
                let ok = report.outcome == "ok";
                if ok {
                    info!(outcome = %report.outcome, ms = report.duration_ms, "configuration round ended");
                } else {
                    // A failed round (a pod answered 401, a hook failed) is worth a look.
                    warn!(outcome = %report.outcome, ms = report.duration_ms, "configuration round failed");
                }
                self.shared.metrics.round(ok, report.duration_ms);
                let entry = ochopod_core::HistoryEntry::from_report(&report, &self.settings.key);
                let _ = self.zk.send(ZkCommand::RecordRound(entry));
                self.last_round = Some(report);
            }
        }
    }

    fn publish(&self) {
        let now = Instant::now();
        let mut registration = self.settings.registration.clone();
        registration.seq = self.seq;
        registration.scrub_secrets();
        let (state, status, round_failure, pending_ms) = match &self.leader {
            Some((l, _)) => (
                l.state().to_string(),
                l.status(now),
                l.round_failure().map(String::from),
                l.dirty_since()
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            ),
            None => ("follower".to_string(), String::new(), None, None),
        };
        // As in 1.x: the last sanity check's metrics while the process runs, `{}` otherwise.
        let metrics = match self.pod.metrics() {
            m @ Value::Object(_) if self.pod.pid().is_some() => m.clone(),
            _ => Value::Object(Default::default()),
        };
        let info = Info {
            application: registration.application.clone(),
            dependencies: self.settings.model.depends_on.clone(),
            ip: registration.ip.clone(),
            metrics,
            node: registration.node.clone(),
            port: registration.port.clone(),
            ports: registration.ports.clone(),
            process: self.pod.process().as_str().to_string(),
            public: registration.public.clone(),
            state,
            status,
            task: registration.task.clone(),
            protocol: PROTOCOL,
            key: self.settings.key.clone(),
            seq: self.seq,
            cluster: registration.full_cluster(),
            registration,
            pid: self.pod.pid(),
            failed_checks: self.pod.failed_checks(),
            last_failure: self.pod.last_failure().map(String::from),
            zk: self.session.to_string(),
            last_round: self.last_round.clone(),
            round_failure,
            pending_ms,
            unreadable: self.unreadable.clone(),
            paused: self.leader.as_ref().and_then(|(l, _)| l.pause_status()),
        };
        let value = serde_json::to_value(&info).unwrap_or(Value::Null);
        *self.shared.info_value.write().expect("info lock") = value;
        self.shared
            .ready
            .store(self.pod.ready(), std::sync::atomic::Ordering::Relaxed);
        self.shared.metrics.observe_pod(&self.pod);
    }
}

/// A hook's name as the spec writes it.
fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Initialize => "initialize",
        Hook::CanConfigure => "can_configure",
        Hook::Configured => "configured",
        Hook::Reload => "reload",
        Hook::Finalize => "finalize",
        Hook::Signal => "signal",
        Hook::SanityCheck => "sanity check",
    }
}

async fn run_hook<L: Lifecycle>(
    l: &L,
    hook: Hook,
    view: Option<Arc<ClusterView>>,
    input: Value,
    pid: u32,
) -> Result<Value, String> {
    let need_view = || -> Result<Arc<ClusterView>, String> {
        view.clone()
            .ok_or_else(|| format!("internal error: {hook:?} without a cluster view"))
    };
    let r = match hook {
        Hook::Initialize => l.initialize(&*need_view()?).await.map(|_| Value::Null),
        Hook::CanConfigure => l.can_configure(&*need_view()?).await.map(|_| Value::Null),
        Hook::Configured => l.configured(&*need_view()?).await.map(|_| Value::Null),
        Hook::Reload => l.reload(&*need_view()?).await.map(|_| Value::Null),
        Hook::Finalize => l.finalize().await.map(|_| Value::Null),
        Hook::Signal => l.signal(input).await,
        Hook::SanityCheck => l.sanity_check(pid).await.map(|m| m.unwrap_or(Value::Null)),
    };
    r.map_err(|e| e.0)
}

fn nix_signal(name: &str) -> ochopod_supervisor::Signal {
    match name {
        "SIGKILL" => ochopod_supervisor::Signal::SIGKILL,
        _ => ochopod_supervisor::Signal::SIGTERM,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The pods and dependencies of a step's body, serialized once per step (a round sends the same
/// body to every pod). It holds the body's `Arc` itself: comparing bare addresses would match a
/// new body allocated where a freed one was, and send the pods a stale view.
#[derive(Default)]
struct BodyCache(Option<(Arc<ControlBody>, Bytes, Bytes)>);

impl BodyCache {
    fn serialized(&mut self, body: &Arc<ControlBody>) -> (Bytes, Bytes) {
        match &self.0 {
            Some((cached, pods, deps)) if Arc::ptr_eq(cached, body) => (pods.clone(), deps.clone()),
            _ => {
                let pods = Bytes::from(serde_json::to_vec(&body.pods).unwrap_or_default());
                let deps = Bytes::from(serde_json::to_vec(&body.dependencies).unwrap_or_default());
                self.0 = Some((Arc::clone(body), pods.clone(), deps.clone()));
                (pods, deps)
            }
        }
    }
}

/// The control body for pod `key`: `{"pods":..,"dependencies":..,"key":..}` from the step's
/// pre-serialized parts.
fn control_body(pods: &[u8], deps: &[u8], key: &str) -> Bytes {
    let key_json = serde_json::to_string(key).unwrap_or_default();
    let mut out = Vec::with_capacity(pods.len() + deps.len() + key_json.len() + 40);
    out.extend_from_slice(b"{\"pods\":");
    out.extend_from_slice(pods);
    out.extend_from_slice(b",\"dependencies\":");
    out.extend_from_slice(deps);
    out.extend_from_slice(b",\"key\":");
    out.extend_from_slice(key_json.as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ochopod_core::wire::Pods;

    #[test]
    fn control_body_is_the_wire_control_body() {
        let mut pods = Pods::new();
        pods.insert(
            "k\"1".to_string(),
            Registration {
                cluster: "web".into(),
                namespace: "demo".into(),
                ip: "127.0.0.1".into(),
                ..Default::default()
            },
        );
        let body = ControlBody {
            pods: pods.clone(),
            dependencies: [("db".to_string(), pods)].into(),
            key: String::new(),
        };
        let p = serde_json::to_vec(&body.pods).unwrap();
        let d = serde_json::to_vec(&body.dependencies).unwrap();
        let out: ControlBody = serde_json::from_slice(&control_body(&p, &d, "k\"1")).unwrap();
        assert_eq!(out.pods, body.pods);
        assert_eq!(out.dependencies, body.dependencies);
        assert_eq!(out.key, "k\"1");
    }

    fn body_of(keys: &[&str]) -> Arc<ControlBody> {
        let pods: Pods = keys
            .iter()
            .map(|k| (k.to_string(), Registration::default()))
            .collect();
        Arc::new(ControlBody {
            pods,
            dependencies: Default::default(),
            key: String::new(),
        })
    }

    /// A round's body is serialized once, and a later body is never served the earlier bytes,
    /// even when the earlier one was freed and the allocator hands out its address again (the
    /// bug this cache once had: a new pod was sent the previous view and answered 400).
    #[test]
    fn body_cache_never_serves_a_freed_body() {
        let mut cache = BodyCache::default();
        for n in 1..50 {
            let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let body = body_of(&keys);
            let (pods, _) = cache.serialized(&body);
            let again = cache.serialized(&body).0;
            assert!(
                std::ptr::eq(pods.as_ptr(), again.as_ptr()),
                "serialized once"
            );
            let decoded: Pods = serde_json::from_slice(&pods).unwrap();
            assert_eq!(decoded.len(), n, "body {n} was served another body's bytes");
            drop(body);
        }
    }
}
