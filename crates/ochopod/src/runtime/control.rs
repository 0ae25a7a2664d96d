//! The control plane's handler: `/info`, `/healthz`, `/readyz` and `/metrics` read what the
//! loop last published; control and reset requests become messages for the loop.

use crate::lifecycle::Lifecycle;
use futures::future::BoxFuture;
use ochopod_core::pod::PodRequest;
use ochopod_http::{ControlRequest, ExecRequest, Handler, Reply};
use ochopod_supervisor::PodLog;
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};

use super::Msg;
use crate::metrics::Metrics;

/// What `/info`, `/healthz`, `/readyz` and `/metrics` read, refreshed by the loop.
pub(crate) struct Shared {
    pub(super) info_value: RwLock<Value>,
    pub(super) ready: std::sync::atomic::AtomicBool,
    pub(super) log: PodLog,
    pub(crate) metrics: Metrics,
}

pub(super) struct ControlHandler<L> {
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) shared: Arc<Shared>,
    pub(super) lifecycle: Arc<L>,
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
        let now = crate::clock::now();
        let deadline = req.timeout.map(|t| now + t);
        let pod_req = PodRequest {
            id: 0,
            task: req.task,
            epoch: req.epoch,
            input: ochopod_http::control_input(req.task, req.body),
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
