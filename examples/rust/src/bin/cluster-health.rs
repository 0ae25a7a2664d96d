//! `cluster-health`: a monitoring tool built on the crates, not on the CLI.
//!
//! Prints every cluster's committed configuration hash and leader (read from ZooKeeper with
//! `ochopod_zk::Directory`), asks each leader's `/info` (with `ochopod_http::Client`) for how
//! long its cluster has differed from its committed configuration, and exits non-zero when that
//! is longer than `--max-pending` seconds, or when a cluster with pods has no reachable leader.
//!
//! ```text
//! cluster-health [--zk HOSTS] [--max-pending SECS]
//!
//! demo.broker hash=9f2c... leader=0b6e4d0e-... pods=3 pending=-
//! demo.web hash=- leader=5a1f... pods=2 pending=42.0s
//! cluster-health: demo.web: configuration pending for 42.0 s (over --max-pending 30)
//! ```
//!
//! `--zk` defaults to `ochopod_zk`, then 127.0.0.1:2181; `--max-pending` to 300 s.
//! Exit codes: 0 every cluster is healthy; 1 at least one is not (each reason on stderr);
//! 2 the check could not run (bad flags, ZooKeeper unreachable).

use ochopod_http::Client;
use ochopod_zk::{Directory, ZkSettings};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: cluster-health [--zk HOSTS] [--max-pending SECS]";

struct Args {
    zk: String,
    max_pending: Duration,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut zk = std::env::var("ochopod_zk")
        .ok()
        .filter(|z| !z.is_empty())
        .unwrap_or_else(|| "127.0.0.1:2181".to_string());
    let mut max_pending = Duration::from_secs(300);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--zk" => zk = value("--zk")?,
            "--max-pending" => {
                let v = value("--max-pending")?;
                max_pending = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        format!("--max-pending {v:?} is not a number of seconds (e.g. 30 or 2.5)")
                    })?;
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(Some(Args { zk, max_pending }))
}

/// One cluster's line and, when unhealthy, why.
async fn check(
    dir: &Directory,
    client: &Client,
    cluster: &str,
    max_pending: Duration,
) -> Result<(String, Option<String>), ochopod_zk::Error> {
    let hash = dir.hash(cluster).await?;
    let pods = dir.pods(cluster).await?;
    let leader = dir.leader(cluster).await?;
    let mut pending = None;
    let problem = match &leader {
        None if pods.is_empty() => None,
        None => Some(format!("{} pods but no leader", pods.len())),
        Some(key) => match pods.iter().find(|p| &p.key == key) {
            None => Some(format!("the leader {key} is not registered")),
            Some(p) => match p.registration.control_addr() {
                None => Some(format!("the leader {key} has no usable control port")),
                Some(addr) => match client.pod_info(&addr, Duration::from_secs(3)).await {
                    Err(e) => Some(format!("the leader is unreachable: {e}")),
                    Ok(info) => {
                        pending = info.pending_ms.map(Duration::from_millis);
                        pending.filter(|p| *p > max_pending).map(|p| {
                            format!(
                                "configuration pending for {:.1} s (over --max-pending {})",
                                p.as_secs_f64(),
                                max_pending.as_secs_f64()
                            )
                        })
                    }
                },
            },
        },
    };
    let line = format!(
        "{cluster} hash={} leader={} pods={} pending={}",
        hash.as_deref().unwrap_or("-"),
        leader.as_deref().unwrap_or("-"),
        pods.len(),
        pending
            .map(|p| format!("{:.1}s", p.as_secs_f64()))
            .unwrap_or_else(|| "-".to_string())
    );
    Ok((line, problem))
}

async fn run(args: Args) -> Result<bool, String> {
    let settings = ZkSettings::new(args.zk.clone(), Duration::from_secs(5));
    let dir = Directory::connect(&settings)
        .await
        .map_err(|e| format!("cannot reach ZooKeeper at {} (set --zk): {e}", args.zk))?;
    let clusters = dir.clusters().await.map_err(|e| e.to_string())?;
    let client = Client::new(None);
    let mut healthy = true;
    for cluster in clusters {
        let (line, problem) = check(&dir, &client, &cluster, args.max_pending)
            .await
            .map_err(|e| format!("{cluster}: {e}"))?;
        println!("{line}");
        if let Some(why) = problem {
            eprintln!("cluster-health: {cluster}: {why}");
            healthy = false;
        }
    }
    dir.close().await;
    Ok(healthy)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cluster-health: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cluster-health: {e}");
            ExitCode::from(2)
        }
    }
}
