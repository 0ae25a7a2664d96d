//! Lightweight simulated pods: registered in ZooKeeper with the agent's layout (`docs/protocol.md`,
//! sharing the harness's session) and answering the control protocol, one listener per
//! pod in this process.
//!
//! Two servers: [`SimServer::Raw`] (default) reads each request body to the end without parsing
//! it and answers 200 `{}`, so that on a shared 2-core machine the simulator does not steal the
//! CPU it measures; [`SimServer::Http`] is ochopod-http's own server (parses every body as JSON,
//! as a real pod does on its own machine).

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ochopod_core::Registration;
use ochopod_http::{ControlRequest, ExecRequest, Handler, Reply, ServerConfig};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use zookeeper_client::{Acls, Client, CreateMode, MultiWriteResult};

/// What the simulated pods were asked.
#[derive(Debug, Default)]
pub(crate) struct SimStats {
    pub(crate) on: AtomicU64,
    pub(crate) other: AtomicU64,
    /// Unix time (µs) of the latest `on` answered.
    pub(crate) last_on_us: AtomicU64,
}

impl SimStats {
    fn record(&self, on: bool) {
        if on {
            self.on.fetch_add(1, Ordering::Relaxed);
            let now = (crate::agent::unix_ms() * 1000.0) as u64;
            self.last_on_us.fetch_max(now, Ordering::Relaxed);
        } else {
            self.other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Which server answers for the simulated pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SimServer {
    /// hyper, bodies read but not parsed.
    Raw,
    /// ochopod-http's server (bodies parsed as JSON).
    Http,
}

struct SimHandler {
    stats: Arc<SimStats>,
}

impl Handler for SimHandler {
    fn info(&self) -> Value {
        json!({"state": "follower", "process": "running", "simulated": true})
    }
    fn log(&self) -> Vec<String> {
        Vec::new()
    }
    fn healthy(&self) -> bool {
        true
    }
    fn ready(&self) -> bool {
        true
    }
    fn metrics(&self) -> String {
        String::new()
    }
    fn control(&self, req: ControlRequest) -> BoxFuture<'static, Reply> {
        self.stats.record(req.task == ochopod_core::wire::Task::On);
        Box::pin(async { Reply::ok(json!({})) })
    }
    fn reset(&self) -> BoxFuture<'static, Reply> {
        Box::pin(async { Reply::ok(Value::Null) })
    }
    fn exec(&self, _: ExecRequest) -> BoxFuture<'static, Reply> {
        Box::pin(async { Reply::error(404, "simulated pod: no tools") })
    }
}

/// `n` simulated pods' control servers; they stop when the fleet is dropped.
pub(crate) struct SimFleet {
    pub(crate) stats: Arc<SimStats>,
    pub(crate) ports: Vec<u16>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl SimFleet {
    pub(crate) async fn start(n: usize, server: SimServer) -> Result<SimFleet> {
        let stats = Arc::new(SimStats::default());
        let handler: Arc<dyn Handler> = Arc::new(SimHandler {
            stats: Arc::clone(&stats),
        });
        let (stop, watch) = tokio::sync::watch::channel(false);
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("cannot bind a simulated pod's control port (raise `ulimit -n`?)")?;
            ports.push(listener.local_addr()?.port());
            let mut watch = watch.clone();
            let shutdown = async move {
                let _ = watch.wait_for(|stop| *stop).await;
            };
            match server {
                SimServer::Http => {
                    let handler = Arc::clone(&handler);
                    tokio::spawn(async move {
                        let _ = ochopod_http::serve(
                            listener,
                            handler,
                            ServerConfig::default(),
                            shutdown,
                        )
                        .await;
                    });
                }
                SimServer::Raw => {
                    tokio::spawn(serve_raw(listener, Arc::clone(&stats), shutdown));
                }
            }
        }
        Ok(SimFleet {
            stats,
            ports,
            stop: Some(stop),
        })
    }
}

/// Answers every request with 200 `{}` once its body is read (not parsed).
async fn serve_raw(
    listener: tokio::net::TcpListener,
    stats: Arc<SimStats>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let stats = Arc::clone(&stats);
                async move {
                    let on = req.uri().path().starts_with("/control/on");
                    let mut body = req.into_body();
                    while let Some(frame) = body.frame().await {
                        if frame.is_err() {
                            break;
                        }
                    }
                    stats.record(on);
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

/// The registration a simulated pod writes: what a `local` agent writes
/// (`docs/protocol.md#registration`).
pub(crate) fn registration(cluster: &str, port: u16, zk: &str) -> Registration {
    let mut reg = Registration {
        cluster: cluster.into(),
        namespace: "bench".into(),
        binding: "local".into(),
        fwk: "local".into(),
        ip: "127.0.0.1".into(),
        port: "8080".into(),
        node: "localhost".into(),
        application: format!("bench.{cluster}"),
        task: format!("sim-{port}"),
        zk: zk.into(),
        protocol: Some(ochopod_core::PROTOCOL),
        ..Default::default()
    };
    reg.ports.insert("8080".into(), port);
    for (k, v) in [
        ("status", json!("")),
        ("debug", json!(false)),
        ("local", json!(true)),
        ("start", json!(true)),
    ] {
        reg.extra.insert(k.into(), v);
    }
    reg
}

/// `P/pods` of `bench.<cluster>`.
pub(crate) fn pods_dir(cluster: &str) -> String {
    format!("/ochopod/clusters/bench.{cluster}/pods")
}

/// Registers one simulated pod per port (ephemeral sequential `P/pods/<uuid>.<seq>` nodes of the
/// harness's session), in multi transactions of at most 250 nodes. Returns the node paths.
pub(crate) async fn register(
    zk: &Client,
    zk_addr: &str,
    cluster: &str,
    ports: &[u16],
) -> Result<Vec<String>> {
    let dir = pods_dir(cluster);
    zk.mkdir(&dir, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
        .await
        .with_context(|| format!("cannot create {dir}"))?;
    let options = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
    let mut paths = Vec::with_capacity(ports.len());
    for batch in ports.chunks(250) {
        let mut w = zk.new_multi_writer();
        for port in batch {
            let key = uuid::Uuid::new_v4();
            let data = serde_json::to_vec(&registration(cluster, *port, zk_addr))?;
            w.add_create(&format!("{dir}/{key}."), &data, &options)?;
        }
        for result in w.commit().await.context("registering simulated pods")? {
            if let MultiWriteResult::Create { path, .. } = result {
                paths.push(path);
            }
        }
    }
    Ok(paths)
}

/// Deletes simulated pods' nodes.
pub(crate) async fn deregister(zk: &Client, paths: &[String]) -> Result<()> {
    for batch in paths.chunks(250) {
        let mut w = zk.new_multi_writer();
        for p in batch {
            w.add_delete(p, None)?;
        }
        w.commit().await.context("deleting simulated pods")?;
    }
    Ok(())
}
