//! The runtime: one driver loop ([`driver`]) feeds ZooKeeper events, control requests, hook
//! results and process exits to core's machines ([`PodMachine`], [`Leader`]) and carries out their
//! actions: the pod executor ([`pod_exec`]) runs hooks and the sub-process, the leader executor
//! ([`leader_exec`]) sends control requests and writes to ZooKeeper, the publisher ([`info`])
//! refreshes `/info` and the pod log, and the control handler ([`control`]) turns HTTP requests
//! into messages for the loop.

mod control;
mod driver;
mod info;
mod leader_exec;
mod pod_exec;
mod scripted;

pub(crate) use driver::run;
#[doc(hidden)]
pub use scripted::{start_scripted, Scripted};

use crate::lifecycle::{Failure, ProcessCommand};
use bytes::Bytes;
use futures::future::BoxFuture;
use ochopod_core::leader::{Answer, Leader, Verdict};
use ochopod_core::pod::{PodMachine, PodRequest, StepResult};
use ochopod_core::settings::{ModelSettings, ProcessSettings};
use ochopod_core::wire::{Epoch, Registration, RoundReport, Task};
use ochopod_core::DependencyPattern;
use ochopod_http::Reply;
use ochopod_supervisor::Reaper;
use ochopod_zk::{ZkCommand, ZkEvent, ZkSettings};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

use control::Shared;
use leader_exec::BodyCache;

/// The leader's side of the control protocol: sends one control request to a pod and says
/// what its answer means for the round. The agent's is [`ochopod_http::Client`]; the driver's
/// tests script one.
pub trait PodClient: Send + Sync + 'static {
    /// Sends `task` to the pod at `addr` (`host:port`) with the leader's `epoch` and the control
    /// `body`; `timeout_secs` is the URL's timeout, `timeout` the whole request's.
    fn control(
        &self,
        addr: String,
        task: Task,
        timeout_secs: u64,
        epoch: Epoch,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Answer>;
}

impl PodClient for ochopod_http::Client {
    fn control(
        &self,
        addr: String,
        task: Task,
        timeout_secs: u64,
        epoch: Epoch,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Answer> {
        let client = self.clone();
        Box::pin(async move {
            match client
                .control(&addr, task, timeout_secs, Some(epoch), body, timeout)
                .await
            {
                Ok(r) => ochopod_http::answer_of(&r),
                Err(e) => Answer::new(Verdict::Unreachable, e.to_string()),
            }
        })
    }
}

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
        /// The rest of its process group was waited for already (see [`Driver::on_exit`]).
        group_gone: bool,
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
    client: Arc<dyn PodClient>,
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
    /// Seeds the jitter of each leadership term's retry backoff (the pod machine has its own).
    jitter: ochopod_core::Jitter,
    /// The round whose control requests may still go out (0: none). Requests queued behind the
    /// fan-out limit check it once they get a permit, so an aborted round or a lost leadership
    /// stops sending at once.
    active_round: Arc<std::sync::atomic::AtomicU64>,
    /// Fan-out permits of replies just handled, released at the end of [`Driver::drain`]:
    /// once the leader has acted on a reply (a failure aborts the round and clears
    /// `active_round`), not before, so a request queued behind it never slips out for a round
    /// that this very reply ended.
    held: Vec<tokio::sync::OwnedSemaphorePermit>,
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
