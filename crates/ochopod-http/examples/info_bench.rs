//! Serves the control plane with a static handler on one thread, for load tests of `/info`:
//!
//! ```text
//! cargo run --release -p ochopod-http --example info_bench -- 127.0.0.1:18080 &
//! wrk -t1 -c32 -d10s --latency http://127.0.0.1:18080/info
//! ```

use futures::future::BoxFuture;
use ochopod_core::wire::{Info, Registration};
use ochopod_http::{ControlRequest, ExecRequest, Handler, Reply, ServerConfig};
use serde_json::Value;
use std::sync::Arc;

struct Static {
    info: Value,
}

impl Handler for Static {
    fn info(&self) -> Value {
        self.info.clone()
    }
    fn log(&self) -> Vec<String> {
        vec!["started".into()]
    }
    fn healthy(&self) -> bool {
        true
    }
    fn ready(&self) -> bool {
        true
    }
    fn metrics(&self) -> String {
        "ochopod_up 1\n".into()
    }
    fn control(&self, req: ControlRequest) -> BoxFuture<'static, Reply> {
        Box::pin(async move { Reply::ok(Value::from(req.task.as_str())) })
    }
    fn reset(&self) -> BoxFuture<'static, Reply> {
        Box::pin(async { Reply::ok(Value::Null) })
    }
    fn exec(&self, _: ExecRequest) -> BoxFuture<'static, Reply> {
        Box::pin(async { Reply::error(404, "no tools here") })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    let mut registration = Registration {
        cluster: "web".into(),
        namespace: "bench".into(),
        ip: "127.0.0.1".into(),
        port: "8080".into(),
        node: "localhost".into(),
        ..Default::default()
    };
    registration.ports.insert("8080".into(), 18080);
    let info = Info {
        ip: registration.ip.clone(),
        node: registration.node.clone(),
        port: registration.port.clone(),
        ports: registration.ports.clone(),
        metrics: serde_json::json!({}),
        protocol: 2,
        key: "6f1c2d3e-0000-4000-8000-000000000001".into(),
        seq: Some(1),
        cluster: "bench.web".into(),
        registration,
        process: "running".into(),
        state: "leader".into(),
        status: "ok".into(),
        zk: "connected".into(),
        ..Default::default()
    };
    let handler = Arc::new(Static {
        info: serde_json::to_value(info)?,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("serving on {addr}");
        ochopod_http::serve(
            listener,
            handler,
            ServerConfig::default(),
            std::future::pending(),
        )
        .await?;
        Ok(())
    })
}
