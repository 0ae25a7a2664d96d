//! The cluster-level benchmark harness (BENCHMARKS.md).
//!
//! Starts a throw-away ZooKeeper (`scripts/zk.sh`), real `ochopod run` agents and lightweight
//! simulated pods, measures reconfiguration latency, failover, idle cost,
//! `/info` throughput, ZooKeeper traffic and start-up, prints a table and writes the figures as
//! JSON. Every figure is the median of several runs; nothing here asserts a timing.
//!
//! Exit codes: 0 done, 1 a scenario failed (the error says which), 2 bad arguments.

mod agent;
mod scenarios;
mod sim;
mod stats;
mod zk;

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Sections of the harness, in the order they run.
const SECTIONS: [&str; 9] = [
    "startup", "idle", "info", "reconfig", "crash", "failover", "big", "sim", "scale",
];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ochopod-bench",
    about = "Cluster-level benchmarks of the ochopod agent on a local ZooKeeper (BENCHMARKS.md)"
)]
pub(crate) struct Args {
    /// The agent binary (default: `ochopod` beside this binary, i.e. the same target profile).
    #[arg(long)]
    pub(crate) bin: Option<PathBuf>,
    /// Work directory for ZooKeeper, the agents' folders and logs (default: a fresh temp dir).
    #[arg(long)]
    pub(crate) work: Option<PathBuf>,
    /// `scripts/zk.sh` of the repository.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/zk.sh"))]
    pub(crate) zk_script: PathBuf,
    /// ZooKeeper tickTime in ms: sessions expire on tick boundaries.
    #[arg(long, default_value_t = 100)]
    pub(crate) tick_ms: u64,
    /// The agents' ZooKeeper session timeout in seconds (Ochopod 1.x used 5 s).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) session_timeout: f64,
    /// Runs per figure (start-up, reconfiguration joins and leaves).
    #[arg(long, default_value_t = 5)]
    pub(crate) runs: usize,
    /// Runs per failover kind (each SIGKILL run waits a whole session timeout).
    #[arg(long, default_value_t = 3)]
    pub(crate) failover_runs: usize,
    /// The idle window for RSS, CPU and ZooKeeper traffic, in seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) idle_secs: u64,
    /// Duration of one `wrk` run against `/info`, in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) wrk_secs: u64,
    /// Number of `wrk` runs.
    #[arg(long, default_value_t = 3)]
    pub(crate) wrk_runs: usize,
    /// Real agents of the big cluster.
    #[arg(long, default_value_t = 30)]
    pub(crate) agents: usize,
    /// Simulated pods behind one real leader.
    #[arg(long, default_value_t = 1000)]
    pub(crate) sim_pods: usize,
    /// The simulated pods' server: `raw` reads bodies without parsing them (measures the
    /// leader), `http` is ochopod-http's server (parses every body, as a real pod does).
    #[arg(long, value_enum, default_value_t = sim::SimServer::Raw)]
    pub(crate) sim_server: sim::SimServer,
    /// Real agents of the scale scenario (`--only scale`, BENCHMARKS.md), spread round-robin over
    /// --scale-clusters clusters.
    #[arg(long, default_value_t = 300)]
    pub(crate) scale_agents: usize,
    /// Clusters of the scale scenario: the first third depends on nothing, each later cluster
    /// on the one a third before it.
    #[arg(long, default_value_t = 30)]
    pub(crate) scale_clusters: usize,
    /// The scale agents' ZooKeeper session timeout in seconds (the short ZooKeeper restart must
    /// fit in it; the long one lasts 7/5 of it plus 2 s, past the clients' own expiry).
    #[arg(long, default_value_t = 20.0)]
    pub(crate) scale_session_timeout: f64,
    /// The scale scenario's idle window, in seconds.
    #[arg(long, default_value_t = 30)]
    pub(crate) scale_idle_secs: u64,
    /// Runs of the whole scale scenario (fresh clusters each time).
    #[arg(long, default_value_t = 1)]
    pub(crate) scale_runs: usize,
    /// First host port of the scale agents' control ports (taken ports are skipped); keep the
    /// range below the kernel's ephemeral ports (ip_local_port_range).
    #[arg(long, default_value_t = 20000)]
    pub(crate) scale_base_port: u16,
    /// Only these sections (comma separated): startup, idle, info, reconfig, crash, failover,
    /// big, sim, scale. `scale` (hundreds of agents, two ZooKeeper restarts, ~5 minutes per
    /// run) runs only when named here.
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Where to write the JSON report (default: WORK/results.json).
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

impl Args {
    /// Whether `section` runs: every section but `scale` runs when `--only` is absent.
    pub(crate) fn wants(&self, section: &str) -> bool {
        (self.only.is_empty() && section != "scale") || self.only.iter().any(|s| s == section)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(bad) = args.only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        eprintln!(
            "ochopod-bench: unknown section {bad:?} in --only; use some of: {}",
            SECTIONS.join(",")
        );
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ochopod-bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ochopod-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder around this binary")?
            .join("ochopod"),
    };
    if !bin.is_file() {
        bail!(
            "no agent binary at {}: build it (`cargo build --release -p ochopod-cli`) or pass --bin",
            bin.display()
        );
    }
    // The agents run in their own folders: a relative path would point elsewhere there.
    let bin = std::fs::canonicalize(&bin)
        .with_context(|| format!("cannot resolve the agent binary {}", bin.display()))?;
    let work = match &args.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("ochopod-bench-{}", std::process::id())),
    };
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot clear the work folder {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| work.join("results.json"));
    let mut bench = scenarios::Bench::new(args, bin, work).await?;
    let outcome = bench.run_all().await;
    let (table, json) = bench.finish().await;
    println!("{table}");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    println!("JSON report: {}", json_path.display());
    outcome
}
