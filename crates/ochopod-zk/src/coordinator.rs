//! The coordinator: one actor owning a pod's whole ZooKeeper life (`docs/protocol.md`).
//!
//! Per session: connect, register under `P/pods/`, compete for the lock under `P/coordinator/`;
//! while holding it, watch `P/pods` and the dependencies and perform the fenced writes. A lost
//! session (expiry) starts the cycle again with a new client, the same key and the same first
//! seq. Everything arrives by watches: an idle pod sends ZooKeeper nothing but pings.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use std::time::Instant;

use ochopod_core::jitter::{seed_from, Jitter};
use ochopod_core::wire::HISTORY_MAX_BYTES;
use ochopod_core::{DependencyPattern, Epoch, HistoryEntry, Pause, Pods, Registration};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;
use zookeeper_client::{
    self as zk, Acl, Acls, AddWatchMode, Client, CreateMode, EventType, LockOptions, LockPrefix,
    OwnedLockClient, StateWatcher, WatchedEvent,
};

use crate::layout::{self, cluster_path, hex32, lock_seq, Cached, LOCK_NAME, ROOT};
use crate::settings::{Target, ZkSettings};
use crate::unreadable::Unreadables;
use crate::Error;

/// Who the pod is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodId {
    /// Namespace (`prod`).
    pub namespace: String,
    /// Cluster name without namespace (`web`).
    pub cluster: String,
    /// The pod's key, a UUID (with or without dashes); kept for the pod's whole life.
    pub key: String,
    /// The pod's first seq when already known (kept in `state_dir`), else `None`: the counter
    /// ZooKeeper gives the first registration becomes it.
    pub seq: Option<u64>,
}

/// The ZooKeeper session as the runtime needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Connected (first connection, or back after a disconnection with the same session).
    Connected,
    /// Connection lost, the session may still be alive: suspend leadership (no round starts or
    /// commits) until `Connected` or `Expired`.
    Disconnected,
    /// The session is gone: a new session and a new registration follow.
    Expired,
}

/// What a leader knows about one cluster matching its dependencies.
#[derive(Clone, Debug, PartialEq)]
pub struct DependencyUpdate {
    /// The matching cluster, `ns.cl`.
    pub cluster: String,
    /// Its `snapshot` (`None` when missing or unreadable).
    pub snapshot: Option<Pods>,
    /// Whether it has registered pods (`snapshot: None` means "no news" while true, "no pods"
    /// once false).
    pub has_pods: bool,
}

/// What the coordinator tells the runtime.
#[derive(Clone, Debug, PartialEq)]
pub enum ZkEvent {
    /// The session's state changed.
    Session(SessionState),
    /// The pod's registration node was written (first time, after an expiry, after a `Reset`,
    /// or after the node was deleted behind our back).
    Registered {
        /// The pod's FIRST seq, kept for its whole life (write it to `state_dir`).
        seq: u64,
        /// The node's name under `P/pods/` (`<key>.<counter>`).
        node: String,
        /// True when this registration follows a session expiry (reset the remembered epoch).
        after_expiry: bool,
    },
    /// This pod took the lock and leads the cluster.
    Elected {
        /// The leader's epoch: (czxid of `P/coordinator`, seq of our lock node).
        epoch: Epoch,
        /// `P/hash`, the hash last committed by a leader.
        committed_hash: Option<String>,
        /// Every registered pod, by key.
        members: Pods,
        /// Every cluster currently matching a dependency.
        dependencies: Vec<DependencyUpdate>,
        /// `P/pause`: the operator's pause of the cluster, if paused.
        pause: Option<Pause>,
    },
    /// Leadership ended (lock or session lost, or leaving): no leader write lands after this.
    Deposed {
        /// Why.
        reason: String,
    },
    /// Leader only: the whole membership, after any change of `P/pods`.
    Members(Pods),
    /// Leader only: the pod nodes whose registration cannot be read (yet), by node name, with
    /// why; sent whenever that set or a reason changes (empty once every node reads well).
    /// Such a node is read again when its data changes, and retried with backoff while bad.
    Unreadable(BTreeMap<String, String>),
    /// Leader only: a matching cluster's snapshot or pod count changed, a matching cluster
    /// appeared, or one disappeared (`snapshot: None, has_pods: false`).
    Dependency(DependencyUpdate),
    /// Leader only: `P/pause` was created, rewritten (`Some`) or deleted (`None`).
    Pause(Option<Pause>),
    /// The answer to [`ZkCommand::Commit`].
    Committed {
        /// The round given in the command.
        round: u64,
        /// `Ok` when `snapshot` and `hash` were both written, under the lock.
        result: Result<(), String>,
    },
}

/// What the runtime asks of the coordinator.
#[derive(Debug)]
pub enum ZkCommand {
    /// Leader: write `snapshot` and `hash` atomically, fenced by the lock; answered by
    /// [`ZkEvent::Committed`].
    Commit {
        /// Echoed in the answer.
        round: u64,
        /// The epoch the round ran under (from [`ZkEvent::Elected`]): a commit meant for an
        /// earlier term is refused even if this pod leads again.
        epoch: Epoch,
        /// The configuration hash to store in `P/hash`.
        hash: String,
        /// The pods just configured, stored in `P/snapshot`.
        snapshot: Pods,
    },
    /// Leader: (re)write `snapshot` only, fenced (a new leader whose committed hash still
    /// matches). Failures are logged.
    WriteSnapshot {
        /// The epoch this was decided under (from [`ZkEvent::Elected`]).
        epoch: Epoch,
        /// The pods to store in `P/snapshot`.
        snapshot: Pods,
    },
    /// Leader: append a round to `P/history` (bounded; the oldest rounds are dropped).
    /// Failures are logged.
    RecordRound(HistoryEntry),
    /// Close the session and register again (same key, same first seq).
    Reset,
    /// Release the lock, delete the pod node, close the session, then answer and stop.
    Leave(oneshot::Sender<()>),
}

/// Spawns coordinators.
#[derive(Debug)]
pub struct Coordinator;

impl Coordinator {
    /// Starts the coordinator task (needs a tokio runtime). It connects, registers
    /// `registration` (secrets scrubbed, `seq` filled in) and competes for the lock; events
    /// arrive on the receiver. Bad settings or names are refused here, before anything starts.
    pub fn spawn(
        settings: ZkSettings,
        id: PodId,
        registration: Registration,
        depends_on: Vec<DependencyPattern>,
    ) -> Result<(CoordinatorHandle, mpsc::Receiver<ZkEvent>), Error> {
        let target = Target::parse(&settings)?;
        check_id(&id)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let span = tracing::info_span!("zk", key = %id.key, cluster = %format!("{}.{}", id.namespace, id.cluster));
        let actor = Actor::new(target, id, registration, depends_on, cmd_rx, ev_tx);
        tokio::spawn(actor.run().instrument(span));
        Ok((CoordinatorHandle { tx: cmd_tx }, ev_rx))
    }
}

fn check_id(id: &PodId) -> Result<(), Error> {
    let bad_name =
        |s: &str| s.is_empty() || s.contains(['/', '.']) || s.contains(char::is_whitespace);
    if bad_name(&id.namespace) || bad_name(&id.cluster) {
        return Err(Error::Input(format!(
            "bad cluster name {:?}.{:?}: namespace and cluster must be non-empty, without `/`, `.` or spaces",
            id.namespace, id.cluster
        )));
    }
    let hex = hex32(&id.key);
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::Input(format!(
            "bad pod key {:?}: use a UUID (e.g. from `uuid::Uuid::new_v4()`)",
            id.key
        )));
    }
    Ok(())
}

/// Sends commands to a coordinator. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CoordinatorHandle {
    tx: mpsc::Sender<ZkCommand>,
}

impl CoordinatorHandle {
    /// Sends a command; fails only when the coordinator has stopped.
    pub async fn send(&self, cmd: ZkCommand) -> Result<(), Error> {
        self.tx.send(cmd).await.map_err(|_| Error::Stopped)
    }

    /// Leaves the cluster (lock released, pod node deleted, session closed) and waits for it.
    pub async fn leave(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(ZkCommand::Leave(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Whether the coordinator task has stopped.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What a watch forwarder reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Tag {
    /// Our pod node (its name).
    OwnNode(String),
    /// Our lock node (its path).
    Lock(String),
    /// `P/pods`.
    Pods,
    /// The children of [`ROOT`].
    Clusters,
    /// `D/pods` of a dependency cluster.
    DepPods(String),
    /// `D/snapshot` of a dependency cluster.
    DepSnapshot(String),
    /// `P/pause`.
    Pause,
}

type WatchTx = mpsc::UnboundedSender<(Tag, WatchedEvent)>;
type LockFuture = Pin<Box<dyn Future<Output = Result<OwnedLockClient, zk::Error>> + Send>>;

/// How a session ended.
enum Exit {
    Expired,
    Reset,
    Leave(oneshot::Sender<()>),
    Stopped,
}

enum Role {
    Idle,
    Contending(LockFuture),
    Backoff(Pin<Box<tokio::time::Sleep>>),
    Leading(Box<Leader>),
}

enum RoleEvent {
    Acquired(Result<OwnedLockClient, zk::Error>),
    Retry,
}

async fn role_step(role: &mut Role) -> RoleEvent {
    match role {
        Role::Contending(lock) => RoleEvent::Acquired(lock.await),
        Role::Backoff(sleep) => {
            sleep.await;
            RoleEvent::Retry
        }
        Role::Idle | Role::Leading(_) => std::future::pending().await,
    }
}

struct Leader {
    lock: OwnedLockClient,
    lock_path: String,
    epoch: Epoch,
    tasks: HashMap<Tag, JoinHandle<()>>,
    pods_cache: HashMap<String, Cached>,
    /// Pod nodes whose payload is not a registration (yet), with their retry schedule.
    unreadable: Unreadables,
    members: Pods,
    deps: BTreeMap<String, DependencyUpdate>,
    pause: Option<Pause>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

/// One session's state.
struct Sess {
    client: Client,
    state: StateWatcher,
    connected: bool,
    node: Option<String>,
    own_watch: Option<JoinHandle<()>>,
    role: Role,
    wtx: WatchTx,
}

impl Sess {
    fn leader(&self) -> Option<&Leader> {
        match &self.role {
            Role::Leading(leader) => Some(leader),
            _ => None,
        }
    }
}

impl Drop for Sess {
    fn drop(&mut self) {
        if let Some(task) = &self.own_watch {
            task.abort();
        }
    }
}

/// Why a fenced write failed.
enum WriteError {
    LockLost(String),
    Other(String),
}

impl WriteError {
    fn message(&self) -> &str {
        match self {
            WriteError::LockLost(m) | WriteError::Other(m) => m,
        }
    }
}

/// ZooKeeper's default `jute.maxbuffer` is 1 MiB for a whole request; keep room for the hash.
const MAX_SNAPSHOT_BYTES: usize = 1_000_000;

struct Actor {
    target: Target,
    acls: Vec<Acl>,
    id: PodId,
    full: String,
    p: String,
    registration: Registration,
    deps: Vec<DependencyPattern>,
    first_seq: Option<u64>,
    cmds: mpsc::Receiver<ZkCommand>,
    events: mpsc::Sender<ZkEvent>,
    /// The runtime dropped its event receiver: stop.
    gone: bool,
    /// Spreads every retry delay (seeded per agent, see [`agent_seed`]), so that agents that
    /// lost ZooKeeper at the same instant do not retry in lockstep.
    jitter: Jitter,
}

/// The first delay of [`Backoff`]; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// The longest delay of [`Backoff`].
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The delay before contending again after leadership could not be taken up.
const CONTEND_RETRY: Duration = Duration::from_secs(1);

/// The connect and registration retry schedule: 0.25 s doubling to 10 s, each delay `d` drawn
/// in `[d/2, d]`.
struct Backoff {
    next: Duration,
    jitter: Jitter,
}

impl Backoff {
    fn new(jitter: Jitter) -> Self {
        Backoff {
            next: BACKOFF_FIRST,
            jitter,
        }
    }
    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        self.jitter.spread(d)
    }
}

/// A seed that differs from agent to agent: the pod key, the process id and the time the
/// coordinator starts (two agents of one process, as in tests, differ by key).
fn agent_seed(key: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let text = format!("{key}/{}/{now}", std::process::id());
    seed_from(text.as_bytes())
}

impl Actor {
    fn new(
        target: Target,
        id: PodId,
        registration: Registration,
        deps: Vec<DependencyPattern>,
        cmds: mpsc::Receiver<ZkCommand>,
        events: mpsc::Sender<ZkEvent>,
    ) -> Actor {
        let full = format!("{}.{}", id.namespace, id.cluster);
        let jitter = Jitter::new(agent_seed(&id.key));
        Actor {
            acls: target.cluster_acls(),
            target,
            p: cluster_path(&full),
            full,
            first_seq: id.seq,
            id,
            registration,
            deps,
            cmds,
            events,
            gone: false,
            jitter,
        }
    }

    async fn run(mut self) {
        let mut after_expiry = false;
        loop {
            let client = match self.connect().await {
                Ok(client) => client,
                Err(exit) => return self.finish(exit),
            };
            match self.session(client, after_expiry).await {
                Exit::Expired => after_expiry = true,
                Exit::Reset => after_expiry = false,
                exit => return self.finish(exit),
            }
        }
    }

    fn finish(&self, exit: Exit) {
        if let Exit::Leave(tx) = exit {
            let _ = tx.send(());
        }
        tracing::info!("coordinator stopped");
    }

    async fn emit(&mut self, event: ZkEvent) {
        if self.events.send(event).await.is_err() {
            self.gone = true;
        }
    }

    /// A fresh retry schedule, drawing from this agent's jitter.
    fn backoff(&mut self) -> Backoff {
        Backoff::new(Jitter::new(self.jitter.next_u64()))
    }

    /// The delay before contending again after a failure, spread in `[d/2, d]`.
    fn contend_retry(&mut self) -> Pin<Box<tokio::time::Sleep>> {
        Box::pin(tokio::time::sleep(self.jitter.spread(CONTEND_RETRY)))
    }

    /// Connects, retrying with backoff; commands meanwhile get their "not connected" answer.
    async fn connect(&mut self) -> Result<Client, Exit> {
        let mut backoff = self.backoff();
        loop {
            let target = self.target.clone();
            // Every host refusing the connection is known at once: said now, not after the
            // client's connection timeout as a bare "timeout".
            let attempt = async move {
                let connect = target.connect();
                tokio::pin!(connect);
                tokio::select! {
                    r = &mut connect => r,
                    probe = crate::directory::refuse_early(&target.hosts) => match probe {
                        Err(refused) => Err(refused),
                        Ok(()) => connect.await,
                    },
                }
            };
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    r = &mut attempt => break r,
                    cmd = self.cmds.recv() => if let Some(exit) = self.offline(cmd).await {
                        return Err(exit);
                    },
                }
            };
            match result {
                Ok(client) => return Ok(client),
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(error = %e, ?delay, "cannot reach ZooKeeper, retrying");
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            cmd = self.cmds.recv() => if let Some(exit) = self.offline(cmd).await {
                                return Err(exit);
                            },
                        }
                    }
                }
            }
            if self.gone {
                return Err(Exit::Stopped);
            }
        }
    }

    /// A command while there is no session.
    async fn offline(&mut self, cmd: Option<ZkCommand>) -> Option<Exit> {
        match cmd {
            None => Some(Exit::Stopped),
            Some(ZkCommand::Leave(tx)) => Some(Exit::Leave(tx)),
            Some(ZkCommand::Commit { round, .. }) => {
                self.emit(ZkEvent::Committed {
                    round,
                    result: Err("not connected to ZooKeeper: nothing was written".into()),
                })
                .await;
                None
            }
            Some(ZkCommand::WriteSnapshot { .. }) => {
                tracing::warn!("snapshot not written: not connected to ZooKeeper");
                None
            }
            Some(ZkCommand::RecordRound(_)) => {
                tracing::warn!("round not recorded in the history: not connected to ZooKeeper");
                None
            }
            Some(ZkCommand::Reset) => None,
        }
    }

    async fn session(&mut self, client: Client, after_expiry: bool) -> Exit {
        let state = client.state_watcher();
        let (wtx, mut wrx) = mpsc::unbounded_channel();
        let mut sess = Sess {
            client,
            state,
            connected: true,
            node: None,
            own_watch: None,
            role: Role::Idle,
            wtx,
        };
        tracing::info!(session = %sess.client.session_id(), "connected to ZooKeeper");
        self.emit(ZkEvent::Session(SessionState::Connected)).await;
        let mut backoff = self.backoff();
        loop {
            match self.register(&mut sess, after_expiry).await {
                Ok(()) => break,
                Err(_) if sess.client.state().is_terminated() => {
                    self.emit(ZkEvent::Session(SessionState::Expired)).await;
                    return Exit::Expired;
                }
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(error = %e, ?delay, "registration failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        sess.role = Role::Contending(self.contend(&sess.client));
        loop {
            if self.gone {
                self.close(sess, "the runtime went away").await;
                return Exit::Stopped;
            }
            let next_retry = sess.leader().and_then(|l| l.unreadable.next_retry());
            tokio::select! {
                st = sess.state.changed() => {
                    if let Some(exit) = self.on_state(&mut sess, st).await {
                        return exit;
                    }
                }
                cmd = self.cmds.recv() => {
                    if let Some(exit) = self.on_command(&mut sess, cmd).await {
                        return match exit {
                            Exit::Stopped | Exit::Leave(_) | Exit::Reset => {
                                let why = match &exit {
                                    Exit::Reset => "reset",
                                    _ => "leaving the cluster",
                                };
                                self.close(sess, why).await;
                                exit
                            }
                            Exit::Expired => exit,
                        };
                    }
                }
                step = role_step(&mut sess.role) => self.on_role(&mut sess, step).await,
                Some((tag, event)) = wrx.recv() => self.on_watch(&mut sess, tag, event).await,
                () = retry_at(next_retry) => {
                    self.retry_unreadable(&mut sess).await;
                }
            }
        }
    }

    /// Makes sure `/ochopod/clusters` (open), `P`, `P/pods` and `P/coordinator` (cluster ACL)
    /// exist.
    async fn ensure_layout(&self, client: &Client) -> Result<(), Error> {
        let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
        match client.mkdir(ROOT, &open).await {
            Ok(()) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(Error::zk("mkdir", ROOT)(e)),
        }
        let ours = CreateMode::Persistent.with_acls(Acls::new(&self.acls));
        for path in [
            self.p.clone(),
            format!("{}/pods", self.p),
            format!("{}/coordinator", self.p),
        ] {
            match client.create(&path, b"", &ours).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(Error::zk("create", path)(e)),
            }
        }
        Ok(())
    }

    fn payload(&self, seq: Option<u64>) -> Vec<u8> {
        let mut reg = self.registration.clone();
        reg.scrub_secrets();
        reg.seq = seq;
        reg.to_json().into_bytes()
    }

    /// Registers the pod: `P/pods/<key>.` (ephemeral sequential) holding the registration with
    /// `seq` = the first seq.
    ///
    /// When the first seq is not known yet, the node is created with no `seq` in its payload
    /// (readers take the seq from the name's counter, so it is already right), then its payload
    /// is rewritten in place with `seq` = that counter. A data change is not a membership
    /// change, and it consumes no counter: pods started one after another get consecutive seqs.
    /// If the rewrite fails, the node stays as it is (it is correct as it is).
    async fn register(&mut self, sess: &mut Sess, after_expiry: bool) -> Result<(), Error> {
        self.ensure_layout(&sess.client).await?;
        let prefix = format!("{}/pods/{}.", self.p, self.id.key);
        let options = CreateMode::EphemeralSequential.with_acls(Acls::new(&self.acls));
        let (_, created) = sess
            .client
            .create(&prefix, &self.payload(self.first_seq), &options)
            .await
            .map_err(Error::zk("create", prefix.clone()))?;
        let counter = created.to_string();
        let seq = match self.first_seq {
            Some(seq) => seq,
            None => {
                let seq = u64::try_from(created.into_i64()).unwrap_or_default();
                self.first_seq = Some(seq);
                let path = format!("{prefix}{counter}");
                if let Err(e) = sess
                    .client
                    .set_data(&path, &self.payload(Some(seq)), None)
                    .await
                {
                    tracing::warn!(error = %e, %path, "could not write seq into the registration; readers take it from the node name");
                }
                seq
            }
        };
        let node = format!("{}.{counter}", self.id.key);
        self.watch_own_node(sess, &node).await?;
        sess.node = Some(node.clone());
        tracing::info!(%node, seq, "registered");
        self.emit(ZkEvent::Registered {
            seq,
            node,
            after_expiry,
        })
        .await;
        Ok(())
    }

    /// Watches our own pod node, so a deletion behind our back registers the pod again.
    /// Returns whether the node exists (the watch then fires on its deletion).
    async fn watch_own_node(&self, sess: &mut Sess, node: &str) -> Result<bool, Error> {
        if let Some(task) = sess.own_watch.take() {
            task.abort();
        }
        let path = format!("{}/pods/{node}", self.p);
        let (exists, task) = watch_exists(
            &sess.client,
            &path,
            Tag::OwnNode(node.to_string()),
            sess.wtx.clone(),
        )
        .await?;
        sess.own_watch = Some(task);
        Ok(exists)
    }

    fn contend(&self, client: &Client) -> LockFuture {
        let client = client.clone();
        let prefix = format!("{}/coordinator/{}{LOCK_NAME}", self.p, hex32(&self.id.key));
        let acls = self.acls.clone();
        let data = self.id.key.clone().into_bytes();
        Box::pin(async move {
            let prefix = LockPrefix::new_custom(prefix, LOCK_NAME)?;
            let options = LockOptions::new(Acls::new(&acls))
                .with_ancestor_options(CreateMode::Persistent.with_acls(Acls::new(&acls)))?;
            let lock = client.lock(prefix, &data, options).await?;
            Ok(lock.into_owned())
        })
    }

    async fn on_state(&mut self, sess: &mut Sess, state: zk::SessionState) -> Option<Exit> {
        match state {
            zk::SessionState::Disconnected => {
                tracing::warn!("disconnected from ZooKeeper");
                sess.connected = false;
                self.emit(ZkEvent::Session(SessionState::Disconnected))
                    .await;
                None
            }
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                tracing::info!("reconnected to ZooKeeper");
                sess.connected = true;
                if sess.node.is_none() {
                    // Our node was deleted and creating it again failed (the connection was
                    // lost meanwhile): try again now.
                    if let Err(e) = self.register(sess, false).await {
                        tracing::warn!(error = %e, "registering again failed");
                    }
                }
                if matches!(sess.role, Role::Leading(_)) {
                    // The client library does not register persistent watches again on the new
                    // connection (zookeeper-client 0.11 sends them in no SetWatches request):
                    // without this the leader never hears of a membership change again.
                    if let Err(e) = self.rearm_watches(sess).await {
                        self.depose(sess, format!("cannot watch the cluster again: {e}"))
                            .await;
                    }
                    // Persistent watches may miss events across a reconnection
                    // (ZOOKEEPER-4698): read everything once again, before the leader hears it
                    // is connected and may start a round.
                    self.refresh_all(sess).await;
                }
                self.emit(ZkEvent::Session(SessionState::Connected)).await;
                None
            }
            terminal => {
                tracing::warn!(state = %terminal, "ZooKeeper session lost");
                if matches!(sess.role, Role::Leading(_)) {
                    sess.role = Role::Idle;
                    self.emit(ZkEvent::Deposed {
                        reason: format!("ZooKeeper session {terminal}"),
                    })
                    .await;
                }
                sess.role = Role::Idle;
                self.emit(ZkEvent::Session(SessionState::Expired)).await;
                Some(Exit::Expired)
            }
        }
    }

    async fn on_command(&mut self, sess: &mut Sess, cmd: Option<ZkCommand>) -> Option<Exit> {
        match cmd {
            None => Some(Exit::Stopped),
            Some(ZkCommand::Leave(tx)) => Some(Exit::Leave(tx)),
            Some(ZkCommand::Reset) => Some(Exit::Reset),
            Some(ZkCommand::Commit {
                round,
                epoch,
                hash,
                snapshot,
            }) => {
                let result = self
                    .fenced_write(
                        &sess.client,
                        sess.leader(),
                        sess.connected,
                        epoch,
                        &snapshot,
                        Some(&hash),
                    )
                    .await;
                let answer = result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| e.message().to_string());
                if let Err(e) = &answer {
                    tracing::warn!(round, error = %e, "commit failed");
                } else {
                    tracing::info!(round, %hash, pods = snapshot.len(), "committed");
                }
                self.emit(ZkEvent::Committed {
                    round,
                    result: answer,
                })
                .await;
                if let Err(WriteError::LockLost(why)) = result {
                    self.depose(sess, why).await;
                }
                None
            }
            Some(ZkCommand::RecordRound(entry)) => {
                if let Some(leader) = sess.leader() {
                    match self.record_round(&sess.client, leader, entry).await {
                        Ok(()) => {}
                        Err(WriteError::Other(e)) => {
                            tracing::warn!(error = %e, "round not recorded in the history")
                        }
                        Err(WriteError::LockLost(why)) => {
                            tracing::warn!(error = %why, "round not recorded in the history");
                            self.depose(sess, why).await;
                        }
                    }
                }
                None
            }
            Some(ZkCommand::WriteSnapshot { epoch, snapshot }) => {
                match self
                    .fenced_write(
                        &sess.client,
                        sess.leader(),
                        sess.connected,
                        epoch,
                        &snapshot,
                        None,
                    )
                    .await
                {
                    Ok(()) => tracing::info!(pods = snapshot.len(), "snapshot written"),
                    Err(WriteError::Other(e)) => tracing::warn!(error = %e, "snapshot not written"),
                    Err(WriteError::LockLost(why)) => {
                        tracing::warn!(error = %why, "snapshot not written");
                        self.depose(sess, why).await;
                    }
                }
                None
            }
        }
    }

    /// Appends `entry` to `P/history` (read, append, drop the oldest past the bound, write back
    /// at the version read; a concurrent write makes it start again). The write is fenced like
    /// the commit: one transaction that first checks our lock node, so a deposed leader cannot
    /// append.
    async fn record_round(
        &self,
        client: &Client,
        leader: &Leader,
        entry: HistoryEntry,
    ) -> Result<(), WriteError> {
        let path = format!("{}/history", self.p);
        let other = |e: zk::Error| WriteError::Other(format!("{path}: {e}"));
        for _ in 0..5 {
            let (mut all, version) = match client.get_data(&path).await {
                Ok((data, stat)) => {
                    let all = HistoryEntry::parse_all(&data).unwrap_or_else(|why| {
                        tracing::warn!(%path, %why, "starting the history again");
                        Vec::new()
                    });
                    (all, Some(stat.version))
                }
                Err(zk::Error::NoNode) => (Vec::new(), None),
                Err(e) => return Err(other(e)),
            };
            let data = HistoryEntry::push_bounded(&mut all, entry.clone(), HISTORY_MAX_BYTES);
            let mut writer = leader.lock.new_check_writer();
            match version {
                Some(v) => writer.add_set_data(&path, &data, Some(v)),
                None => {
                    let options = CreateMode::Persistent.with_acls(Acls::new(&self.acls));
                    writer.add_create(&path, &data, &options)
                }
            }
            .map_err(other)?;
            match writer.commit().await {
                Ok(_) => return Ok(()),
                Err(zk::CheckWriteError::CheckFailed { source }) => {
                    return Err(WriteError::LockLost(format!(
                        "lock node {} is gone ({source}): the history append was refused",
                        leader.lock_path
                    )))
                }
                Err(zk::CheckWriteError::OperationFailed {
                    source: zk::Error::BadVersion | zk::Error::NodeExists,
                    ..
                }) => continue,
                Err(e) => return Err(WriteError::Other(format!("{path}: {e}"))),
            }
        }
        Err(WriteError::Other(format!("{path} kept changing under us")))
    }

    /// Writes `P/snapshot` (ephemeral, ours) and optionally `P/hash` in one transaction that
    /// first checks our lock node: after the lock is lost, nothing lands.
    async fn fenced_write(
        &self,
        client: &Client,
        leader: Option<&Leader>,
        connected: bool,
        epoch: Epoch,
        snapshot: &Pods,
        hash: Option<&str>,
    ) -> Result<(), WriteError> {
        let Some(leader) = leader else {
            return Err(WriteError::Other(
                "not the leader: nothing was written".into(),
            ));
        };
        if leader.epoch != epoch {
            return Err(WriteError::Other(format!(
                "stale epoch {epoch}: this pod now leads under {}; nothing was written",
                leader.epoch
            )));
        }
        if !connected {
            return Err(WriteError::Other(
                "disconnected from ZooKeeper: nothing was written".into(),
            ));
        }
        let json = serde_json::to_vec(snapshot).map_err(|e| WriteError::Other(e.to_string()))?;
        if json.len() > MAX_SNAPSHOT_BYTES {
            return Err(WriteError::Other(format!(
                "the snapshot of {} pods is {} bytes, over ZooKeeper's 1 MiB node limit \
                 (jute.maxbuffer, about 2,000 pods of ~400 bytes): split the cluster, or raise \
                 jute.maxbuffer on every server and client",
                snapshot.len(),
                json.len()
            )));
        }
        let snap_path = format!("{}/snapshot", self.p);
        let hash_path = format!("{}/hash", self.p);
        let other = |e: zk::Error| WriteError::Other(format!("ZooKeeper refused the write: {e}"));
        let (snap_stat, hash_stat) =
            tokio::join!(client.check_stat(&snap_path), client.check_stat(&hash_path));
        let (snap_stat, hash_stat) = (snap_stat.map_err(other)?, hash_stat.map_err(other)?);
        let ours = Acls::new(&self.acls);
        let mut writer = leader.lock.new_check_writer();
        let build = (|| {
            match snap_stat {
                None => {
                    writer.add_create(&snap_path, &json, &CreateMode::Ephemeral.with_acls(ours))?
                }
                Some(stat) if stat.ephemeral_owner == client.session_id().0 => {
                    writer.add_set_data(&snap_path, &json, Some(stat.version))?
                }
                Some(stat) => {
                    // A previous leader's (or a persistent) snapshot: replace it with ours.
                    writer.add_delete(&snap_path, Some(stat.version))?;
                    writer.add_create(&snap_path, &json, &CreateMode::Ephemeral.with_acls(ours))?;
                }
            }
            if let Some(hash) = hash {
                match hash_stat {
                    None => writer.add_create(
                        &hash_path,
                        hash.as_bytes(),
                        &CreateMode::Persistent.with_acls(ours),
                    )?,
                    Some(stat) => {
                        writer.add_set_data(&hash_path, hash.as_bytes(), Some(stat.version))?
                    }
                }
            }
            Ok::<_, zk::Error>(())
        })();
        build.map_err(other)?;
        match writer.commit().await {
            Ok(_) => Ok(()),
            Err(zk::CheckWriteError::CheckFailed { source }) => Err(WriteError::LockLost(format!(
                "lock node {} is gone ({source}): the write was refused",
                leader.lock_path
            ))),
            Err(e) => Err(WriteError::Other(format!(
                "ZooKeeper refused the write: {e}"
            ))),
        }
    }

    async fn on_role(&mut self, sess: &mut Sess, step: RoleEvent) {
        match step {
            RoleEvent::Retry => sess.role = Role::Contending(self.contend(&sess.client)),
            RoleEvent::Acquired(Ok(lock)) => {
                sess.role = Role::Idle;
                match self.lead(sess, lock).await {
                    Ok(leader) => sess.role = Role::Leading(leader),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not take up leadership; contending again");
                        sess.role = Role::Backoff(self.contend_retry());
                    }
                }
            }
            RoleEvent::Acquired(Err(e)) => {
                if sess.client.state().is_terminated() {
                    // The state watcher reports the expiry next.
                    sess.role = Role::Idle;
                } else if e == zk::Error::RuntimeInconsistent {
                    tracing::warn!("our lock contender vanished; contending again");
                    sess.role = Role::Contending(self.contend(&sess.client));
                } else {
                    tracing::warn!(error = %e, "lock contention failed; retrying");
                    sess.role = Role::Backoff(self.contend_retry());
                }
            }
        }
    }

    /// Takes up leadership: watches first, then reads, then `Elected`.
    async fn lead(&mut self, sess: &mut Sess, lock: OwnedLockClient) -> Result<Box<Leader>, Error> {
        let client = sess.client.clone();
        let lock_path = lock.lock_path().to_string();
        let seq = lock_seq(&lock_path)
            .ok_or_else(|| Error::Input(format!("lock node {lock_path} has no sequence number")))?;
        let mut leader = Box::new(Leader {
            lock,
            lock_path: lock_path.clone(),
            epoch: Epoch { czxid: 0, seq },
            tasks: HashMap::new(),
            pods_cache: HashMap::new(),
            unreadable: Unreadables::default(),
            members: Pods::new(),
            deps: BTreeMap::new(),
            pause: None,
        });
        let (exists, task) = watch_exists(
            &client,
            &lock_path,
            Tag::Lock(lock_path.clone()),
            sess.wtx.clone(),
        )
        .await?;
        leader.tasks.insert(Tag::Lock(lock_path.clone()), task);
        if !exists {
            return Err(Error::Input(format!("lock node {lock_path} vanished")));
        }
        let coordinator = format!("{}/coordinator", self.p);
        let stat = client
            .check_stat(&coordinator)
            .await
            .map_err(Error::zk("check_stat", coordinator.clone()))?
            .ok_or_else(|| Error::Input(format!("{coordinator} vanished")))?;
        leader.epoch.czxid = stat.czxid;
        let pods_dir = format!("{}/pods", self.p);
        // Recursive: a pod node's data change is seen too (a 1.x pod writes its registration
        // into its node after creating it empty).
        let task = watch_persistent_mode(
            &client,
            &pods_dir,
            AddWatchMode::PersistentRecursive,
            Tag::Pods,
            sess.wtx.clone(),
        )
        .await?;
        leader.tasks.insert(Tag::Pods, task);
        let pause_path = format!("{}/pause", self.p);
        let task = watch_persistent(&client, &pause_path, Tag::Pause, sess.wtx.clone()).await?;
        leader.tasks.insert(Tag::Pause, task);
        leader.pause = layout::read_pause(&client, &self.p).await?;
        if !self.deps.is_empty() {
            let task = watch_persistent(&client, ROOT, Tag::Clusters, sess.wtx.clone()).await?;
            leader.tasks.insert(Tag::Clusters, task);
        }
        let nodes = layout::read_pods(&client, &pods_dir, &mut leader.pods_cache).await?;
        leader.members = layout::to_pods(nodes);
        leader.unreadable.sync(Instant::now(), &leader.pods_cache);
        let committed_hash = layout::read_hash(&client, &self.p).await?;
        if !self.deps.is_empty() {
            for cluster in self.matching(&layout::list_clusters(&client).await?) {
                let update = self
                    .track(&client, &mut leader, &sess.wtx, &cluster)
                    .await?;
                leader.deps.insert(cluster, update);
            }
        }
        tracing::info!(epoch = %leader.epoch, pods = leader.members.len(), "elected leader");
        let unreadable = leader.unreadable.report();
        self.emit(ZkEvent::Elected {
            epoch: leader.epoch,
            committed_hash,
            members: leader.members.clone(),
            dependencies: leader.deps.values().cloned().collect(),
            pause: leader.pause.clone(),
        })
        .await;
        if !unreadable.is_empty() {
            self.emit(ZkEvent::Unreadable(unreadable)).await;
        }
        Ok(leader)
    }

    /// Sets every persistent watch of the leader again (on the connection the session has now),
    /// then drops the old watchers: the library keeps the path watched on the server while a
    /// watcher of the same mode remains, so nothing is unwatched in between.
    async fn rearm_watches(&mut self, sess: &mut Sess) -> Result<(), Error> {
        let Role::Leading(leader) = &mut sess.role else {
            return Ok(());
        };
        let tags: Vec<Tag> = leader.tasks.keys().cloned().collect();
        for tag in tags {
            let (path, mode) = match &tag {
                Tag::Pods => (
                    format!("{}/pods", self.p),
                    AddWatchMode::PersistentRecursive,
                ),
                Tag::Pause => (format!("{}/pause", self.p), AddWatchMode::Persistent),
                Tag::Clusters => (ROOT.to_string(), AddWatchMode::Persistent),
                Tag::DepPods(c) => (
                    format!("{}/pods", cluster_path(c)),
                    AddWatchMode::Persistent,
                ),
                Tag::DepSnapshot(c) => (
                    format!("{}/snapshot", cluster_path(c)),
                    AddWatchMode::Persistent,
                ),
                // One-shot watches: the library sets them again itself.
                Tag::OwnNode(_) | Tag::Lock(_) => continue,
            };
            let task =
                watch_persistent_mode(&sess.client, &path, mode, tag.clone(), sess.wtx.clone())
                    .await?;
            if let Some(old) = leader.tasks.insert(tag, task) {
                old.abort();
            }
        }
        Ok(())
    }

    /// Reads again the unreadable registrations whose retry is due.
    async fn retry_unreadable(&mut self, sess: &mut Sess) {
        let Role::Leading(leader) = &mut sess.role else {
            return;
        };
        if leader
            .unreadable
            .due(Instant::now(), &mut leader.pods_cache)
        {
            self.refresh_members(sess).await;
        }
    }

    fn matching(&self, clusters: &[String]) -> Vec<String> {
        clusters
            .iter()
            .filter(|c| ochopod_core::deps::matches_any(&self.deps, c, &self.full))
            .cloned()
            .collect()
    }

    /// Starts watching a dependency cluster, then reads it.
    async fn track(
        &self,
        client: &Client,
        leader: &mut Leader,
        wtx: &WatchTx,
        cluster: &str,
    ) -> Result<DependencyUpdate, Error> {
        let d = cluster_path(cluster);
        for (path, tag) in [
            (format!("{d}/pods"), Tag::DepPods(cluster.to_string())),
            (
                format!("{d}/snapshot"),
                Tag::DepSnapshot(cluster.to_string()),
            ),
        ] {
            if let std::collections::hash_map::Entry::Vacant(slot) = leader.tasks.entry(tag) {
                let tag = slot.key().clone();
                slot.insert(watch_persistent(client, &path, tag, wtx.clone()).await?);
            }
        }
        Ok(DependencyUpdate {
            cluster: cluster.to_string(),
            snapshot: layout::read_snapshot(client, &d).await?,
            has_pods: has_pods(client, &d).await?,
        })
    }

    async fn depose(&mut self, sess: &mut Sess, reason: String) {
        if let Role::Leading(leader) = std::mem::replace(&mut sess.role, Role::Idle) {
            // Dropping the leader stops its watches and deletes its lock node (if still there).
            drop(leader);
            tracing::warn!(%reason, "deposed");
            self.emit(ZkEvent::Deposed { reason }).await;
            sess.role = Role::Contending(self.contend(&sess.client));
        }
    }

    async fn on_watch(&mut self, sess: &mut Sess, tag: Tag, event: WatchedEvent) {
        match tag {
            Tag::OwnNode(node) => {
                if sess.node.as_deref() != Some(node.as_str()) {
                    return;
                }
                // Re-arm the watch; a node gone by then was deleted between the event and now.
                let deleted = event.event_type == EventType::NodeDeleted
                    || match self.watch_own_node(sess, &node).await {
                        Ok(exists) => !exists,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot watch our pod node");
                            false
                        }
                    };
                if deleted {
                    tracing::warn!(%node, "our pod node was deleted; registering again");
                    sess.node = None;
                    if let Err(e) = self.register(sess, false).await {
                        tracing::warn!(error = %e, "registering again failed");
                    }
                }
            }
            Tag::Lock(path) => {
                let ours = matches!(&sess.role, Role::Leading(l) if l.lock_path == path);
                if !ours {
                    return;
                }
                if event.event_type == EventType::NodeDeleted {
                    self.depose(sess, format!("lock node {path} was deleted"))
                        .await;
                } else {
                    self.check_lock(sess).await;
                }
            }
            Tag::Pods => {
                // A data change of a node already read well changes nothing (registrations
                // never change; a Rust pod's `seq` rewrite equals what readers derived): only
                // membership changes and unreadable nodes' writes need a read.
                if event.event_type == EventType::NodeDataChanged {
                    let name = event.path.rsplit('/').next().unwrap_or_default();
                    let Role::Leading(leader) = &mut sess.role else {
                        return;
                    };
                    if !matches!(leader.pods_cache.get(name), Some(Cached::Bad(_))) {
                        return;
                    }
                    leader.pods_cache.remove(name);
                }
                self.refresh_members(sess).await;
            }
            Tag::Clusters => self.refresh_clusters(sess).await,
            Tag::Pause => self.refresh_pause(sess).await,
            Tag::DepPods(cluster) => self.refresh_dep(sess, &cluster, false, true).await,
            Tag::DepSnapshot(cluster) => self.refresh_dep(sess, &cluster, true, false).await,
        }
    }

    /// Re-arms the watch on our lock node; deposes when it is gone.
    async fn check_lock(&mut self, sess: &mut Sess) {
        let Role::Leading(leader) = &mut sess.role else {
            return;
        };
        let path = leader.lock_path.clone();
        let tag = Tag::Lock(path.clone());
        match watch_exists(&sess.client, &path, tag.clone(), sess.wtx.clone()).await {
            Ok((true, task)) => {
                if let Some(old) = leader.tasks.insert(tag, task) {
                    old.abort();
                }
            }
            Ok((false, task)) => {
                task.abort();
                self.depose(sess, format!("lock node {path} was deleted"))
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot check our lock node"),
        }
    }

    async fn refresh_all(&mut self, sess: &mut Sess) {
        self.check_lock(sess).await;
        self.refresh_members(sess).await;
        self.refresh_pause(sess).await;
        if !self.deps.is_empty() {
            self.refresh_clusters(sess).await;
            let clusters: Vec<String> = match &sess.role {
                Role::Leading(l) => l.deps.keys().cloned().collect(),
                _ => Vec::new(),
            };
            for cluster in clusters {
                self.refresh_dep(sess, &cluster, true, true).await;
            }
        }
    }

    /// Reads `P/pause` again and reports a change.
    async fn refresh_pause(&mut self, sess: &mut Sess) {
        let Role::Leading(leader) = &mut sess.role else {
            return;
        };
        match layout::read_pause(&sess.client, &self.p).await {
            Ok(pause) if pause != leader.pause => {
                leader.pause = pause.clone();
                match &pause {
                    Some(p) => tracing::info!(reason = %p.reason, "cluster paused"),
                    None => tracing::info!("cluster resumed"),
                }
                self.emit(ZkEvent::Pause(pause)).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the cluster's pause node"),
        }
    }

    async fn refresh_members(&mut self, sess: &mut Sess) {
        let Role::Leading(leader) = &mut sess.role else {
            return;
        };
        let dir = format!("{}/pods", self.p);
        match layout::read_pods(&sess.client, &dir, &mut leader.pods_cache).await {
            Ok(nodes) => {
                if leader.unreadable.sync(Instant::now(), &leader.pods_cache) {
                    let report = leader.unreadable.report();
                    self.emit(ZkEvent::Unreadable(report)).await;
                }
                let Role::Leading(leader) = &mut sess.role else {
                    return;
                };
                let members = layout::to_pods(nodes);
                if members != leader.members {
                    leader.members = members.clone();
                    tracing::info!(pods = members.len(), "membership changed");
                    self.emit(ZkEvent::Members(members)).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the cluster's pods"),
        }
    }

    async fn refresh_clusters(&mut self, sess: &mut Sess) {
        let clusters = match layout::list_clusters(&sess.client).await {
            Ok(clusters) => self.matching(&clusters),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list clusters");
                return;
            }
        };
        let Role::Leading(leader) = &mut sess.role else {
            return;
        };
        let gone: Vec<String> = leader
            .deps
            .keys()
            .filter(|c| !clusters.contains(c))
            .cloned()
            .collect();
        let mut updates = Vec::new();
        for cluster in gone {
            leader.deps.remove(&cluster);
            for tag in [
                Tag::DepPods(cluster.clone()),
                Tag::DepSnapshot(cluster.clone()),
            ] {
                if let Some(task) = leader.tasks.remove(&tag) {
                    task.abort();
                }
            }
            updates.push(DependencyUpdate {
                cluster,
                snapshot: None,
                has_pods: false,
            });
        }
        for cluster in clusters {
            if leader.deps.contains_key(&cluster) {
                continue;
            }
            match self.track(&sess.client, leader, &sess.wtx, &cluster).await {
                Ok(update) => {
                    leader.deps.insert(cluster, update.clone());
                    updates.push(update);
                }
                Err(e) => tracing::warn!(error = %e, %cluster, "cannot read a dependency"),
            }
        }
        for update in updates {
            tracing::info!(cluster = %update.cluster, has_pods = update.has_pods, "dependency changed");
            self.emit(ZkEvent::Dependency(update)).await;
        }
    }

    async fn refresh_dep(&mut self, sess: &mut Sess, cluster: &str, snapshot: bool, pods: bool) {
        let Role::Leading(leader) = &mut sess.role else {
            return;
        };
        let Some(old) = leader.deps.get(cluster) else {
            return;
        };
        let d = cluster_path(cluster);
        let mut update = old.clone();
        if snapshot {
            match layout::read_snapshot(&sess.client, &d).await {
                Ok(s) => update.snapshot = s,
                Err(e) => return tracing::warn!(error = %e, %cluster, "cannot read a dependency"),
            }
        }
        if pods {
            match has_pods(&sess.client, &d).await {
                Ok(h) => update.has_pods = h,
                Err(e) => return tracing::warn!(error = %e, %cluster, "cannot read a dependency"),
            }
        }
        if &update != old {
            leader.deps.insert(cluster.to_string(), update.clone());
            tracing::info!(%cluster, has_pods = update.has_pods, "dependency changed");
            self.emit(ZkEvent::Dependency(update)).await;
        }
    }

    /// Leaves: lock released, pod node deleted, session closed (and waited for).
    async fn close(&mut self, mut sess: Sess, why: &str) {
        if let Role::Leading(leader) = std::mem::replace(&mut sess.role, Role::Idle) {
            self.emit(ZkEvent::Deposed {
                reason: why.to_string(),
            })
            .await;
            if let Err(e) = sess.client.delete(&leader.lock_path, None).await {
                tracing::debug!(error = %e, "lock node already gone");
            }
            drop(leader);
        }
        if let Some(task) = sess.own_watch.take() {
            task.abort();
        }
        if let Some(node) = sess.node.take() {
            let path = format!("{}/pods/{node}", self.p);
            if let Err(e) = sess.client.delete(&path, None).await {
                tracing::debug!(error = %e, %path, "pod node already gone");
            }
        }
        let mut state = sess.state.clone();
        drop(sess);
        // The session closes once every client clone is gone (background lock clean-ups hold
        // one briefly); wait for it, bounded.
        let timeout = self.target.session_timeout.max(Duration::from_secs(1));
        let _ = tokio::time::timeout(timeout, async {
            while !state.peek_state().is_terminated() {
                state.changed().await;
            }
        })
        .await;
        tracing::info!(%why, "left ZooKeeper");
    }
}

async fn has_pods(client: &Client, d: &str) -> Result<bool, Error> {
    let path = format!("{d}/pods");
    match client.list_children(&path).await {
        Ok(children) => Ok(!children.is_empty()),
        Err(zk::Error::NoNode) => Ok(false),
        Err(e) => Err(Error::zk("list_children", path)(e)),
    }
}

/// Sleeps until `at`, forever when `None`.
async fn retry_at(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Sets a persistent watch on `path` (which may not exist yet) and forwards its node events.
async fn watch_persistent(
    client: &Client,
    path: &str,
    tag: Tag,
    tx: WatchTx,
) -> Result<JoinHandle<()>, Error> {
    watch_persistent_mode(client, path, AddWatchMode::Persistent, tag, tx).await
}

/// [`watch_persistent`] in `mode` (`PersistentRecursive` also reports its descendants' events).
async fn watch_persistent_mode(
    client: &Client,
    path: &str,
    mode: AddWatchMode,
    tag: Tag,
    tx: WatchTx,
) -> Result<JoinHandle<()>, Error> {
    let mut watcher = client
        .watch(path, mode)
        .await
        .map_err(Error::zk("watch", path))?;
    Ok(tokio::spawn(async move {
        loop {
            let event = watcher.changed().await;
            if event.event_type == EventType::Session {
                if event.session_state.is_terminated() {
                    return;
                }
                continue;
            }
            if tx.send((tag.clone(), event)).is_err() {
                return;
            }
        }
    }))
}

/// Checks that `path` exists and watches it once; forwards the node event.
async fn watch_exists(
    client: &Client,
    path: &str,
    tag: Tag,
    tx: WatchTx,
) -> Result<(bool, JoinHandle<()>), Error> {
    let (stat, watcher) = client
        .check_and_watch_stat(path)
        .await
        .map_err(Error::zk("check_stat", path))?;
    let task = tokio::spawn(async move {
        let event = watcher.changed().await;
        if event.event_type != EventType::Session {
            let _ = tx.send((tag, event));
        }
    });
    Ok((stat.is_some(), task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_common::Zk;

    /// Two agents (two keys, one process, the same instant give or take) draw different retry
    /// delays, each within `[d/2, d]` of the 0.25 s doubling to 10 s schedule; one seed always
    /// gives the same delays.
    #[test]
    fn two_agents_spread_their_backoff_differently_within_its_bounds() {
        let schedule: Vec<Duration> = (0..8)
            .map(|i| (BACKOFF_FIRST * (1 << i)).min(BACKOFF_MAX))
            .collect();
        assert_eq!(schedule.last(), Some(&BACKOFF_MAX));
        let draw = |seed: u64| -> Vec<Duration> {
            let mut b = Backoff::new(Jitter::new(seed));
            schedule.iter().map(|_| b.next()).collect()
        };
        let a = draw(agent_seed("3f1c0e4e-agent-a"));
        let b = draw(agent_seed("3f1c0e4e-agent-b"));
        for (delays, who) in [(&a, "a"), (&b, "b")] {
            for (d, base) in delays.iter().zip(&schedule) {
                assert!(
                    *d >= *base / 2 && d <= base,
                    "{who}: {d:?} outside [{base:?}/2, {base:?}]"
                );
            }
        }
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert_eq!(same, 0, "lockstep delays: {a:?} vs {b:?}");
        assert_eq!(draw(7), draw(7), "one seed, one sequence");
    }

    /// The fence itself, without the actor's event loop in the way: once the lock node is
    /// gone, the leader's transaction is refused and nothing lands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_after_the_lock_is_lost_does_not_land() {
        let zk = Zk::start().await;
        let target = Target::parse(&zk.settings()).unwrap();
        let id = PodId {
            namespace: "t".into(),
            cluster: "fence".into(),
            key: uuid::Uuid::new_v4().to_string(),
            seq: None,
        };
        let (_cmd_tx, cmd_rx) = mpsc::channel(1);
        let (ev_tx, _ev_rx) = mpsc::channel(16);
        let actor = Actor::new(
            target.clone(),
            id,
            Registration::default(),
            Vec::new(),
            cmd_rx,
            ev_tx,
        );
        let client = target.connect().await.unwrap();
        actor.ensure_layout(&client).await.unwrap();
        let lock = actor.contend(&client).await.unwrap();
        let lock_path = lock.lock_path().to_string();
        let epoch = Epoch {
            czxid: 1,
            seq: lock_seq(&lock_path).unwrap(),
        };
        let leader = Leader {
            lock,
            lock_path: lock_path.clone(),
            epoch,
            tasks: HashMap::new(),
            pods_cache: HashMap::new(),
            unreadable: Unreadables::default(),
            members: Pods::new(),
            deps: BTreeMap::new(),
            pause: None,
        };
        let pods = Pods::new();
        let write = |hash: &'static str, epoch: Epoch| {
            actor.fenced_write(&client, Some(&leader), true, epoch, &pods, Some(hash))
        };
        assert!(write("h1", epoch).await.is_ok());
        let round = |outcome: &str| HistoryEntry {
            outcome: outcome.to_string(),
            ..Default::default()
        };
        assert!(actor
            .record_round(&client, &leader, round("first"))
            .await
            .is_ok());
        let stale = Epoch {
            seq: epoch.seq + 1,
            ..epoch
        };
        assert!(
            matches!(write("h0", stale).await, Err(WriteError::Other(m)) if m.contains("stale epoch"))
        );
        zk.kazoo("zk.delete(sys.argv[2])", &[&lock_path]).await;
        match write("h2", epoch).await {
            Err(WriteError::LockLost(m)) => assert!(m.contains(&lock_path), "{m}"),
            Err(WriteError::Other(m)) => panic!("not a lock loss: {m}"),
            Ok(()) => panic!("a write landed after the lock was lost"),
        }
        let (hash, _) = client
            .get_data("/ochopod/clusters/t.fence/hash")
            .await
            .unwrap();
        assert_eq!(hash, b"h1");
        // The history is fenced too: a deposed leader cannot append.
        match actor.record_round(&client, &leader, round("late")).await {
            Err(WriteError::LockLost(m)) => assert!(m.contains(&lock_path), "{m}"),
            Err(WriteError::Other(m)) => panic!("not a lock loss: {m}"),
            Ok(()) => panic!("a round was recorded after the lock was lost"),
        }
        let (history, _) = client
            .get_data("/ochopod/clusters/t.fence/history")
            .await
            .unwrap();
        let rounds = HistoryEntry::parse_all(&history).unwrap();
        assert_eq!(rounds.len(), 1, "{rounds:?}");
        assert_eq!(rounds[0].outcome, "first");
        drop(leader);
    }

    #[test]
    fn ids_are_checked() {
        let good = PodId {
            namespace: "prod".into(),
            cluster: "web".into(),
            key: uuid::Uuid::new_v4().to_string(),
            seq: None,
        };
        assert!(check_id(&good).is_ok());
        for bad in [
            PodId {
                namespace: "a.b".into(),
                ..good.clone()
            },
            PodId {
                cluster: "".into(),
                ..good.clone()
            },
            PodId {
                key: "x/y".into(),
                ..good.clone()
            },
            PodId {
                key: "".into(),
                ..good.clone()
            },
        ] {
            assert!(check_id(&bad).is_err(), "{bad:?}");
        }
    }
}
