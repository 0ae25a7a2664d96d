//! The driver with its IO scripted, for this crate's own tests (`tests/driver.rs`).

use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use ochopod_core::pod::PodRequest;
use ochopod_core::settings::{ModelSettings, ProcessSettings};
use ochopod_core::wire::{Epoch, Registration, Task};
use ochopod_http::Reply;
use ochopod_supervisor::{PodLog, Reaper};
use ochopod_zk::{ZkCommand, ZkEvent, ZkSettings};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::control::Shared;
use super::driver::drive;
use super::{Driver, Msg, PodClient, RuntimeSettings};

/// The driver with its IO scripted, for this crate's own tests (`tests/driver.rs`), not an API:
/// ZooKeeper is a pair of channels, the pods are a [`PodClient`], there is no control server
/// and no signal handler. The process side (the lifecycle's hooks, the reaper) is real.
#[doc(hidden)]
pub struct Scripted {
    /// Events, as the coordinator reports them.
    pub zk_events: mpsc::UnboundedSender<ZkEvent>,
    /// What the driver asks of ZooKeeper, in order.
    pub zk_commands: mpsc::UnboundedReceiver<ZkCommand>,
    /// The driver's end: the agent's exit code.
    pub done: tokio::task::JoinHandle<i32>,
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
}

impl Scripted {
    /// SIGTERM, as the agent gets it: leave the cluster, then tear the process down.
    pub fn terminate(&self) {
        let _ = self.tx.send(Msg::Shutdown);
    }

    /// A control request as the control plane hands it over (typed by its table); resolves to
    /// the reply the control plane would send.
    pub async fn control(&self, task: Task, epoch: Option<Epoch>, body: Value) -> Reply {
        let (tx, rx) = oneshot::channel();
        let req = PodRequest {
            id: 0,
            task,
            epoch,
            input: ochopod_http::control_input(task, body),
            deadline: None,
        };
        if self.tx.send(Msg::Control(req, tx)).is_err() {
            return Reply::error(503, "the agent is shutting down");
        }
        rx.await
            .unwrap_or_else(|_| Reply::error(503, "the agent is shutting down"))
    }

    /// The `/info` document as last published.
    pub fn info(&self) -> Value {
        self.shared.info_value.read().expect("info lock").clone()
    }
}

/// Starts the driver of pod `key` with scripted ZooKeeper and pods (see [`Scripted`]); needs
/// a tokio runtime (tests pause its time).
#[doc(hidden)]
pub fn start_scripted<L: Lifecycle>(
    key: &str,
    registration: Registration,
    model: ModelSettings,
    process: ProcessSettings,
    lifecycle: L,
    client: impl PodClient,
) -> Result<Scripted, crate::Error> {
    let patterns = ochopod_core::deps::parse_all(&model.depends_on, &registration.namespace)
        .map_err(crate::Error::Dependency)?;
    let settings = RuntimeSettings {
        key: key.to_string(),
        seq: None,
        state_dir: None,
        registration,
        zk: ZkSettings::new("127.0.0.1:2181", Duration::from_secs(10)),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        token: None,
        tls: None,
        model,
        process,
        pipe: false,
        env: BTreeMap::new(),
    };
    let reaper = Reaper::install()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        info_value: RwLock::new(Value::Null),
        ready: std::sync::atomic::AtomicBool::new(false),
        log: PodLog::new(),
        metrics: Metrics::new(Vec::new()),
    });
    let (zk, zk_commands) = mpsc::unbounded_channel();
    let (zk_events, mut events) = mpsc::unbounded_channel::<ZkEvent>();
    let ztx = tx.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if ztx.send(Msg::Zk(ev)).is_err() {
                break;
            }
        }
    });
    let d = Driver::new(
        settings,
        Arc::new(lifecycle),
        reaper,
        tx.clone(),
        Arc::clone(&shared),
        patterns,
        zk,
        Arc::new(client),
    );
    let done = tokio::spawn(async move { drive(d, rx, &AtomicU32::new(0)).await });
    Ok(Scripted {
        zk_events,
        zk_commands,
        done,
        tx,
        shared,
    })
}
