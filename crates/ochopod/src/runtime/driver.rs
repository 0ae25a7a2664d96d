//! The driver loop: one queue of messages, the machines' next deadline, and the dispatch of
//! each message to the pod machine or the leader.

use crate::lifecycle::Lifecycle;
use ochopod_core::jitter::{seed_from, Jitter};
use ochopod_core::leader::Leader;
use ochopod_core::pod::{PodMachine, StepResult};
use ochopod_http::Reply;
use ochopod_supervisor::{PodLog, Reaper};
use ochopod_zk::{Coordinator, SessionState, ZkCommand, ZkEvent};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, info, info_span, warn, Instrument};

use super::control::{ControlHandler, Shared};
use super::{BodyCache, Driver, Logged, Msg, PodClient, RuntimeSettings};
use crate::metrics::Metrics;
use ochopod_core::DependencyPattern;

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
        .map_err(crate::Error::Dependency)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            info_value: RwLock::new(Value::Null),
            ready: std::sync::atomic::AtomicBool::new(false),
            log: log.clone(),
            metrics: Metrics::new(vec![
                ("namespace".into(), settings.registration.namespace.clone()),
                ("cluster".into(), settings.registration.cluster.clone()),
                ("key".into(), settings.key.clone()),
            ]),
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
        .map_err(crate::Error::Client)?;
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
        .map_err(crate::Error::Zk)?;
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
        // A failure here is the system's, not the settings': it keeps its cause and its class.
        let mut signals = ochopod_supervisor::agent_signals()?;
        let stx = tx.clone();
        // The process to forward signals to (0: none), set by the loop after every batch.
        let forward_pid = Arc::new(AtomicU32::new(0));
        let fp = Arc::clone(&forward_pid);
        tokio::spawn(async move {
            while let Some(sig) = signals.recv().await {
                match sig {
                    ochopod_supervisor::AgentSignal::Terminate => {
                        let _ = stx.send(Msg::Shutdown);
                    }
                    ochopod_supervisor::AgentSignal::Forward(s) => {
                        let pid = fp.load(Ordering::Relaxed);
                        if pid != 0 {
                            let _ = ochopod_supervisor::signal_group(pid, s);
                        }
                    }
                    other => debug!(?other, "signal ignored"),
                }
            }
        });

        let client: Arc<dyn PodClient> = Arc::new(client);
        let d = Driver::new(
            settings, lifecycle, reaper, tx, shared, patterns, zk, client,
        );
        let exit_code = drive(d, rx, &forward_pid).await;
        // Stop the control plane and the coordinator.
        let _ = stop_http.send(());
        let _ = tokio::time::timeout(Duration::from_secs(6), server).await;
        Ok(exit_code)
    }
    .instrument(span)
    .await
}
/// The loop: the next message or the machines' next deadline, whichever comes first (time is
/// tokio's, see [`crate::clock`]); then what is already queued, as one batch, before `/info`
/// is published once. Returns the agent's exit code once the pod machine says the shutdown is
/// complete (or every sender is gone).
pub(super) async fn drive<L: Lifecycle>(
    mut d: Driver<L>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    forward_pid: &AtomicU32,
) -> i32 {
    d.publish();
    loop {
        let deadline = d.next_deadline();
        let msg = match deadline {
            Some(t) => {
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(t));
                tokio::select! {
                    m = rx.recv() => m,
                    _ = sleep => { d.on_timeout(); d.after(forward_pid); continue; }
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
        d.after(forward_pid);
        if d.done {
            break;
        }
    }
    d.exit_code
}

impl<L: Lifecycle> Driver<L> {
    /// A driver with nothing under way: a stopped pod, no leadership.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        settings: RuntimeSettings,
        lifecycle: Arc<L>,
        reaper: Reaper,
        tx: mpsc::UnboundedSender<Msg>,
        shared: Arc<Shared>,
        patterns: Vec<DependencyPattern>,
        zk: mpsc::UnboundedSender<ZkCommand>,
        client: Arc<dyn PodClient>,
    ) -> Self {
        let process = settings.process.clone();
        let key = settings.key.clone();
        let seq = settings.seq;
        let fan_out = settings.model.fan_out.clamp(1, Semaphore::MAX_PERMITS);
        // Backoffs are spread per agent: the pod key and the process id differ between the
        // agents of a cluster (and between two agents of one process, by key), so agents that
        // crash or fail together do not retry in lockstep.
        let mut jitter = Jitter::new(seed_from(
            format!("{key}/{}", std::process::id()).as_bytes(),
        ));
        let pod_jitter = Jitter::new(jitter.next_u64());
        Driver {
            client,
            settings,
            lifecycle,
            reaper,
            tx,
            shared,
            pod: PodMachine::new(process, &key).with_jitter(pod_jitter),
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
            jitter,
            active_round: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            held: Vec::new(),
            shutdown: false,
            done: false,
            exit_code: 0,
            logged: Logged::default(),
        }
    }
}

impl<L: Lifecycle> Driver<L> {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let a = self.pod.poll_timeout();
        let b = self.leader.as_ref().and_then(|(l, _)| l.poll_timeout());
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn on_timeout(&mut self) {
        let now = crate::clock::now();
        self.pod.handle_timeout(now);
        if let Some((l, _)) = &mut self.leader {
            l.handle_timeout(now);
        }
    }

    /// Carries out every pending action, then refreshes `/info`.
    pub(super) fn after(&mut self, forward_pid: &AtomicU32) {
        // What the message changed is logged before what its actions change (a crash, then
        // the restart that follows at once).
        self.log_changes();
        self.drain();
        self.log_changes();
        forward_pid.store(self.pod.pid().unwrap_or(0), Ordering::Relaxed);
        self.publish();
    }

    /// Handles one message.
    pub(super) fn on_msg(&mut self, msg: Msg) {
        let now = crate::clock::now();
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
            Msg::Exit {
                pid,
                code,
                how,
                group_gone,
            } => self.on_exit(now, pid, code, how, group_gone),
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
                self.pod.shutdown(now);
            }
        }
    }

    pub(super) fn on_zk(&mut self, now: Instant, ev: ZkEvent) {
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
                .continue_rounds(self.last_round_id)
                .with_jitter(Jitter::new(self.jitter.next_u64()));
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
    pub(super) fn end_term(&mut self) -> bool {
        self.active_round
            .store(0, std::sync::atomic::Ordering::Relaxed);
        match self.leader.take() {
            Some((l, _)) => {
                self.last_round_id = self.last_round_id.max(l.abandon());
                true
            }
            None => false,
        }
    }

    pub(super) fn drain(&mut self) {
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
}
