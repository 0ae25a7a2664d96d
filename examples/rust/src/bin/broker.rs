//! `broker`: a pod written in Rust, running a broker whose id must never change.
//!
//! Brokers of a Kafka-like cluster need two things from their configuration: an id that stays
//! the same for the broker's whole life (`cluster.seq`, kept across container restarts with
//! `ochopod_state_dir`), and the list of every peer (`cluster.grep("", port, false)`). This
//! example writes both into `broker.properties` and serves that folder with
//! `python3 -m http.server`, standing in for the real broker. When the cluster changes while the
//! broker runs, the pod is not restarted: [`Lifecycle::reload`] rewrites the peers in place and
//! the id stays what it was.
//!
//! Settings come from the environment, as for any pod (`.env(std::env::vars())`):
//! - `ochopod_cluster` (default `broker`), `ochopod_namespace`, `ochopod_zk`, `ochopod_port`,
//!   `ochopod_binding`, `ochopod_state_dir`, `ochopod_token`, `PORT_<n>` (port remapping);
//! - `BROKER_PORT`: the broker's container port (default 9092; remap it with `PORT_9092`);
//! - `BROKER_DIR`: where `broker.properties` is written and served (default `./broker-data`);
//! - `BROKER_GRACE`: seconds the broker gets to stop before SIGKILL (default 10);
//! - `BROKER_CHECK_EVERY`: seconds between sanity checks (default 10).
//!
//! ```text
//! ochopod_zk=127.0.0.1:2181 ochopod_binding=local ochopod_port=8081 PORT_9092=19092 \
//!     ochopod_state_dir=/var/lib/broker cargo run -p ochopod-examples --bin broker
//! curl -s 127.0.0.1:19092/broker.properties
//! ```
//!
//! Exit codes: the agent's (0 after SIGTERM), 2 for bad settings.

use ochopod::{
    ClusterView, Failure, HookResult, Lifecycle, ModelSettings, Pod, ProcessCommand,
    ProcessSettings,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

/// What the broker was last configured with.
#[derive(Clone, Debug)]
struct Current {
    id: u64,
    listen: String,
    peers: String,
}

struct Broker {
    /// The broker's container port.
    port: u16,
    /// Where `broker.properties` lives.
    dir: PathBuf,
    current: Mutex<Option<Current>>,
}

impl Broker {
    /// Where the broker listens: its host port on the pod's ip without NAT (the local binding),
    /// its container port on every interface otherwise.
    fn listen(&self, cluster: &ClusterView) -> (String, u16) {
        if cluster.pod.binding == "local" {
            (cluster.pod.ip.clone(), cluster.pod.host_port(self.port))
        } else {
            ("0.0.0.0".to_string(), self.port)
        }
    }

    /// Writes `broker.properties` (atomically: readers never see half a file).
    fn write(&self, cluster: &ClusterView) -> HookResult<Current> {
        let (ip, port) = self.listen(cluster);
        let current = Current {
            id: cluster.seq,
            listen: format!("{ip}:{port}"),
            peers: cluster.grep("", self.port, false),
        };
        let text = format!(
            "broker.id={}\nlisteners={}\npeers={}\nsize={}\n",
            current.id, current.listen, current.peers, cluster.size
        );
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Failure(format!("cannot create {}: {e}", self.dir.display())))?;
        let target = self.dir.join("broker.properties");
        let tmp = self.dir.join(".broker.properties.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &target))
            .map_err(|e| Failure(format!("cannot write {}: {e}", target.display())))?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(current.clone());
        Ok(current)
    }

    fn current(&self) -> Option<Current> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Lifecycle for Broker {
    async fn configure(&self, cluster: &ClusterView) -> HookResult<ProcessCommand> {
        let current = self.write(cluster)?;
        let (ip, port) = self.listen(cluster);
        tracing::info!(id = current.id, peers = %current.peers, "configuring the broker");
        let dir = self.dir.display().to_string();
        Ok(ProcessCommand::argv([
            "python3",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            &ip,
            "--directory",
            &dir,
        ])
        .env("BROKER_ID", current.id.to_string())
        .env("BROKER_PEERS", current.peers))
    }

    /// The cluster changed while the broker runs: new peers, same id, no restart.
    async fn reload(&self, cluster: &ClusterView) -> HookResult<()> {
        let current = self.write(cluster)?;
        tracing::info!(id = current.id, peers = %current.peers, "peers updated in place");
        Ok(())
    }

    /// The broker answers on its port; its id is the pod's metric.
    async fn sanity_check(&self, _pid: u32) -> HookResult<Option<Value>> {
        let Some(current) = self.current() else {
            return Ok(None);
        };
        let connect = tokio::net::TcpStream::connect(current.listen.as_str());
        match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(_)) => Ok(Some(json!({ "broker_id": current.id }))),
            Ok(Err(e)) => Err(Failure(format!("broker on {}: {e}", current.listen))),
            Err(_) => Err(Failure(format!(
                "broker on {}: no connection within 3 s",
                current.listen
            ))),
        }
    }

    /// `ochopod signal POD`: what the broker runs with.
    async fn signal(&self, _body: Value) -> HookResult<Value> {
        match self.current() {
            Some(c) => Ok(json!({ "id": c.id, "listen": c.listen, "peers": c.peers })),
            None => Err(Failure("the broker is not configured yet".to_string())),
        }
    }
}

fn secs(env: &BTreeMap<String, String>, name: &str, default: f64) -> Result<Duration, String> {
    match env.get(name).filter(|v| !v.is_empty()) {
        None => Ok(Duration::from_secs_f64(default)),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{name}={v:?} is not a number of seconds (e.g. 10 or 2.5)")),
    }
}

async fn run(env: BTreeMap<String, String>) -> Result<i32, String> {
    let port = match env.get("BROKER_PORT").filter(|v| !v.is_empty()) {
        None => 9092,
        Some(v) => v
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("BROKER_PORT={v:?} is not a port number (1-65535)"))?,
    };
    let dir = env
        .get("BROKER_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("broker-data"));
    let dir = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot read the current folder: {e}"))?
            .join(dir)
    };
    let grace = secs(&env, "BROKER_GRACE", 10.0)?;
    let check_every = secs(&env, "BROKER_CHECK_EVERY", 10.0)?;
    let mut builder = Pod::builder();
    if !env.contains_key("ochopod_cluster") {
        builder = builder.cluster("broker");
    }
    let broker = Broker {
        port,
        dir,
        current: Mutex::new(None),
    };
    builder
        .model(ModelSettings {
            // An `on` may include a tear-down: leave it more than the grace.
            control_timeout: (grace * 3).max(Duration::from_secs(30)),
            ..ModelSettings::default()
        })
        .process(ProcessSettings {
            grace,
            check_every,
            ..ProcessSettings::default()
        })
        .env(env)
        .run(broker)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    match run(env).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("broker: {e}");
            ExitCode::from(2)
        }
    }
}
