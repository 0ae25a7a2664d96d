//! (8) Hundreds of real agents in tens of clusters on one ZooKeeper (`--only scale`).
//!
//! Every agent is a real `ochopod run` with a trivial process (`sleep`); the clusters form
//! three tiers (the first third depends on nothing, each later cluster on the one a third
//! before it). One run: cold start until every cluster is configured, an idle window (ZooKeeper
//! traffic per agent, leader and follower CPU and memory), a ZooKeeper restart shorter than the
//! session timeout (nothing may reconfigure), then one longer than the client-side expiry
//! (every session expires: time until every cluster is configured again, peak ZooKeeper
//! packets/s, no pod lost). Broken promises are collected and fail the run at the end, after
//! every figure is in the report.

use super::Bench;
use crate::agent::{cpu_ns_of, unix_ms, Agent, InfoView};
use crate::stats::median;
use crate::zk;
use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const S8: &str = "8 scale";

/// `/info` requests in flight at once while the harness polls the fleet.
const POLL_CONCURRENCY: usize = 32;
/// Pause between two polls of the fleet (each poll reads every agent's `/info`).
const POLL_EVERY: Duration = Duration::from_millis(500);

/// The clusters of scale run `run`: `(name, depends_on)`. The first third of the clusters
/// depends on nothing, each later cluster on the cluster a third before it (with 30 clusters:
/// `c10` on `c00`, `c20` on `c10`).
pub(crate) fn layout(run: usize, clusters: usize) -> Vec<(String, Vec<String>)> {
    let third = (clusters / 3).max(1);
    let name = |k: usize| format!("s{run}c{k:02}");
    (0..clusters)
        .map(|k| {
            let deps = if k >= third {
                vec![name(k - third)]
            } else {
                Vec::new()
            };
            (name(k), deps)
        })
        .collect()
}

/// Agents of one scale run.
struct Fleet {
    agents: Vec<Agent>,
    /// The cluster (index into `clusters`) of every agent.
    cluster_of: Vec<usize>,
    clusters: Vec<String>,
    /// Pods per cluster.
    sizes: Vec<usize>,
    /// Every agent's log.
    logs: Vec<std::path::PathBuf>,
}

/// What an agent logs when its ZooKeeper session ended (expired, by the server or by the client
/// itself), as the coordinator logs it.
const SESSION_LOST: &str = "ZooKeeper session lost";

/// What a run remembers to tell whether a ZooKeeper restart reconfigured anything.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    /// Per cluster: (the leading agent, its last round's start, the history node's version
    /// and number of rounds).
    clusters: Vec<(usize, f64, i32, usize)>,
    /// Per agent: its process's pid.
    pids: Vec<Option<u32>>,
}

/// Host ports for the control ports, from `next` up: below the kernel's ephemeral range (so
/// the agents' own outgoing connections cannot take one between the check and the agent's
/// bind), each checked free by binding it.
fn take_ports(next: &mut u16, n: usize) -> Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let p = *next;
        *next = next
            .checked_add(1)
            .ok_or_else(|| anyhow!("ran out of ports above --scale-base-port"))?;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            ports.push(p);
        }
    }
    Ok(ports)
}

/// The kernel's ephemeral port range.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse().ok());
    Some((it.next()??, it.next()??))
}

/// The soft limit of open files of this process (inherited by ZooKeeper and the agents).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn max(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().fold(f64::NEG_INFINITY, f64::max)
}

/// Samples ZooKeeper's `zk_packets_received` every second on a thread until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, f64)>>,
}

impl Sampler {
    fn start(port: u16) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(v) = zk::mntr_of(port)
                    .ok()
                    .and_then(|m| m.get("zk_packets_received")?.parse::<f64>().ok())
                {
                    samples.push((Instant::now(), v));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        });
        Sampler { stop, thread }
    }

    /// The highest rate between two consecutive samples, in packets/s.
    fn peak(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        max(samples.windows(2).filter_map(|w| {
            let dt = w[1].0.duration_since(w[0].0).as_secs_f64();
            (dt > 0.0 && w[1].1 >= w[0].1).then(|| (w[1].1 - w[0].1) / dt)
        }))
        .max(0.0)
    }
}

impl Bench {
    /// The scale scenario, `--scale-runs` times with fresh clusters each time.
    pub(super) async fn scale(&mut self) -> Result<()> {
        let (n, c) = (self.args.scale_agents, self.args.scale_clusters);
        if c == 0 || n < c {
            bail!(
                "--scale-agents ({n}) must be at least --scale-clusters ({c}), and that at least 1"
            );
        }
        let need = 2 * n as u64 + 256;
        if let Some(limit) = open_files_limit().filter(|l| *l < need) {
            bail!("{n} agents need about {need} open files here (ZooKeeper and the harness hold one connection per agent) but the limit is {limit}: raise it (`ulimit -n 65536`; scripts/bench.sh does)");
        }
        let base = self.args.scale_base_port;
        if let Some((lo, hi)) = ephemeral_range() {
            if (base as usize + n) as u64 > lo as u64 && (base as u64) <= hi as u64 {
                self.report.note(format!(
                    "--scale-base-port {base} overlaps the ephemeral range {lo}-{hi}: an agent's outgoing connection may take a control port"
                ));
            }
        }
        let mut next_port = base;
        let mut broken = Vec::new();
        for run in 0..self.args.scale_runs {
            let mut fleet = self.spawn_fleet(run, &mut next_port)?;
            let r = self.scale_run(&mut fleet, &mut broken).await;
            let agents = std::mem::take(&mut fleet.agents);
            self.stop(agents).await;
            r.with_context(|| format!("scale run {}", run + 1))?;
        }
        if !broken.is_empty() {
            bail!("{}", broken.join("; "));
        }
        Ok(())
    }

    fn spawn_fleet(&mut self, run: usize, next_port: &mut u16) -> Result<Fleet> {
        let (n, c) = (self.args.scale_agents, self.args.scale_clusters);
        let clusters = layout(run, c);
        let ports = take_ports(next_port, n)?;
        let mut fleet = Fleet {
            agents: Vec::with_capacity(n),
            cluster_of: Vec::with_capacity(n),
            clusters: clusters.iter().map(|(name, _)| name.clone()).collect(),
            sizes: vec![0; c],
            logs: Vec::with_capacity(n),
        };
        // Round-robin over the clusters: every cluster starts at once, as after a power cut.
        for (i, port) in ports.into_iter().enumerate() {
            let k = i % c;
            let (name, deps) = &clusters[k];
            let dir = self.next_dir(name);
            let agent = self.agents.spawn_with(
                name,
                &dir,
                port,
                Some(self.args.scale_session_timeout),
                deps,
            )?;
            fleet.agents.push(agent);
            fleet.logs.push(dir.join("agent.log"));
            fleet.cluster_of.push(k);
            fleet.sizes[k] += 1;
        }
        eprintln!(
            "ochopod-bench: scale run {}: {n} agents in {c} clusters started (load {})",
            run + 1,
            loadavg()
        );
        Ok(fleet)
    }

    /// Every agent's `/info`, in order (`None`: no answer within 2 s).
    async fn poll(&self, fleet: &Fleet) -> Vec<Option<InfoView>> {
        futures::stream::iter(fleet.agents.iter().map(|a| self.info(a.port)))
            .buffered(POLL_CONCURRENCY)
            .collect()
            .await
    }

    /// Per cluster, when it is configured: every pod answers, runs its process and is connected
    /// to ZooKeeper, and exactly one leader is clean (nothing pending). Its time is the end of
    /// the leader's last round when that round started after `since_ms` (it must have succeeded
    /// with every pod), else `at_ms`: a new leader that finds the committed configuration equal
    /// to the cluster runs no round at all.
    fn configured(
        fleet: &Fleet,
        infos: &[Option<InfoView>],
        since_ms: f64,
        at_ms: f64,
    ) -> Vec<Option<f64>> {
        let mut out = vec![None; fleet.clusters.len()];
        for (k, slot) in out.iter_mut().enumerate() {
            let members: Vec<&Option<InfoView>> = infos
                .iter()
                .zip(&fleet.cluster_of)
                .filter(|(_, c)| **c == k)
                .map(|(i, _)| i)
                .collect();
            let ready = members.iter().all(|i| {
                i.as_ref()
                    .is_some_and(|i| i.process == "running" && i.zk == "connected")
            });
            let leaders: Vec<&InfoView> = members
                .iter()
                .filter_map(|i| i.as_ref().filter(|i| i.leads()))
                .collect();
            if !ready || leaders.len() != 1 || !leaders[0].clean_leader() {
                continue;
            }
            match &leaders[0].round {
                Some((started, duration, outcome, answers)) if *started >= since_ms => {
                    if outcome == "ok" && *answers == fleet.sizes[k] {
                        *slot = Some(started + duration);
                    }
                }
                _ => *slot = Some(at_ms),
            }
        }
        out
    }

    /// Waits until every cluster is configured (after `since_ms`) on two polls in a row with the
    /// same rounds; returns the rounds' ends and the last poll.
    async fn wait_configured(
        &self,
        fleet: &mut Fleet,
        since_ms: f64,
        timeout: Duration,
        what: &str,
    ) -> Result<(Vec<f64>, Vec<Option<InfoView>>)> {
        let deadline = Instant::now() + timeout;
        let mut previous: Option<Vec<Option<f64>>> = None;
        loop {
            let at_ms = unix_ms();
            let infos = self.poll(fleet).await;
            for (a, i) in fleet.agents.iter_mut().zip(&infos) {
                if let Some(pid) = i.as_ref().and_then(|i| i.pid) {
                    a.sub_pid = Some(pid);
                }
            }
            let now = Self::configured(fleet, &infos, since_ms, at_ms);
            // Two polls in a row agree (a cluster seen without a round keeps its first time).
            if let Some(prev) = &previous {
                let same = now.iter().zip(prev).all(|(n, p)| match (n, p) {
                    (Some(n), Some(p)) => n == p || (*n >= at_ms && *p < at_ms),
                    _ => false,
                });
                if same {
                    let ends = now.iter().zip(prev).map(|(n, p)| {
                        let (n, p) = (n.unwrap_or(0.0), p.unwrap_or(0.0));
                        if n >= at_ms {
                            p
                        } else {
                            n
                        }
                    });
                    return Ok((ends.collect(), infos));
                }
            }
            if Instant::now() >= deadline {
                let missing: Vec<String> = now
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.is_none())
                    .map(|(k, _)| fleet.clusters[k].clone())
                    .collect();
                let silent = infos.iter().filter(|i| i.is_none()).count();
                bail!(
                    "{what}: {} of {} clusters not configured within {timeout:?} ({}; {silent} agents did not answer /info); see the agent.log files under {}",
                    missing.len(),
                    fleet.clusters.len(),
                    missing.join(", "),
                    self.work.display()
                );
            }
            previous = Some(now);
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Which agent leads each cluster, its last round, the history node, every process pid.
    async fn fingerprint(&self, fleet: &Fleet, infos: &[Option<InfoView>]) -> Result<Fingerprint> {
        let client = zk::connect(&self.zk.addr()).await?;
        let mut clusters = Vec::new();
        for (k, name) in fleet.clusters.iter().enumerate() {
            let leader = (0..fleet.agents.len())
                .find(|i| {
                    fleet.cluster_of[*i] == k && infos[*i].as_ref().is_some_and(InfoView::leads)
                })
                .ok_or_else(|| anyhow!("cluster {name} has no leader"))?;
            let started = infos[leader]
                .as_ref()
                .and_then(InfoView::round_started)
                .unwrap_or(0.0);
            let (version, rounds) = history(&client, name).await?;
            clusters.push((leader, started, version, rounds));
        }
        Ok(Fingerprint {
            clusters,
            pids: infos
                .iter()
                .map(|i| i.as_ref().and_then(|i| i.pid))
                .collect(),
        })
    }

    async fn scale_run(&mut self, fleet: &mut Fleet, broken: &mut Vec<String>) -> Result<()> {
        let n = fleet.agents.len();
        let c = fleet.clusters.len();
        let st = self.args.scale_session_timeout;
        let label = format!("{n} agents, {c} clusters");
        let load_start = loadavg();
        let t0 = fleet
            .agents
            .iter()
            .map(|a| a.spawned_ms)
            .fold(f64::INFINITY, f64::min);

        // Cold start.
        let (ends, infos) = self
            .wait_configured(fleet, 0.0, Duration::from_secs(600), "cold start")
            .await?;
        let cold = max(ends.iter().copied()) - t0;
        let leads: Vec<bool> = infos
            .iter()
            .map(|i| i.as_ref().is_some_and(InfoView::leads))
            .collect();
        let (mut lcpu, mut fcpu) = (Vec::new(), Vec::new());
        for (a, l) in fleet.agents.iter().zip(&leads) {
            let ms = a.cpu_ns() as f64 / 1e6;
            if *l {
                lcpu.push(ms)
            } else {
                fcpu.push(ms)
            }
        }
        self.report.add(
            S8,
            &format!("{label}: cold start -> every cluster configured"),
            "ms",
            &[cold],
            None,
            None,
        );
        self.report.add(
            S8,
            "cold start: CPU per leader, start to configured",
            "ms",
            &[median(&lcpu).unwrap_or(0.0)],
            None,
            None,
        );
        self.report.add(
            S8,
            "cold start: CPU per follower, start to configured",
            "ms",
            &[median(&fcpu).unwrap_or(0.0)],
            None,
            None,
        );

        // Idle.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let own = self.zkc.session_id().0;
        let zk_pid = self.zk.pid();
        let cons0: BTreeMap<i64, zk::Conn> =
            self.zk.cons()?.into_iter().map(|c| (c.sid, c)).collect();
        let mntr0 = self.zk.mntr()?;
        let cpu0: Vec<u64> = fleet.agents.iter().map(Agent::cpu_ns).collect();
        let zk_cpu0 = zk_pid.map(cpu_ns_of).unwrap_or(0);
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(self.args.scale_idle_secs)).await;
        let secs = t.elapsed().as_secs_f64();
        let cpu1: Vec<u64> = fleet.agents.iter().map(Agent::cpu_ns).collect();
        let zk_cpu1 = zk_pid.map(cpu_ns_of).unwrap_or(0);
        let cons1 = self.zk.cons()?;
        let mntr1 = self.zk.mntr()?;
        let (mut lpct, mut fpct, mut lrss, mut frss) = (vec![], vec![], vec![], vec![]);
        for (k, a) in fleet.agents.iter().enumerate() {
            let pct = cpu1[k].saturating_sub(cpu0[k]) as f64 / (secs * 1e9) * 100.0;
            let rss = a.rss_kib().unwrap_or(0) as f64 / 1024.0;
            if leads[k] {
                lpct.push(pct);
                lrss.push(rss);
            } else {
                fpct.push(pct);
                frss.push(rss);
            }
        }
        let (mut packets, mut requests, mut sessions) = (0u64, 0i64, 0usize);
        for conn in &cons1 {
            if conn.sid == own {
                continue;
            }
            if let Some(b) = cons0.get(&conn.sid) {
                packets += conn.recved.saturating_sub(b.recved);
                requests += conn.lcxid - b.lcxid;
                sessions += 1;
            }
        }
        let per = sessions.max(1) as f64 * secs;
        let whole = |k: &str| {
            let get = |m: &BTreeMap<String, String>| {
                m.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            };
            get(&mntr1) - get(&mntr0)
        };
        self.report.add(
            S8,
            "idle: ZooKeeper packets/s per agent (cons)",
            "req/s",
            &[packets as f64 / per],
            None,
            None,
        );
        self.report.add(
            S8,
            "idle: non-ping requests/s per agent (cons lcxid)",
            "req/s",
            &[requests as f64 / per],
            Some("0"),
            None,
        );
        self.report.add(
            S8,
            "idle: zk_packets_received/s, whole server (mntr)",
            "req/s",
            &[whole("zk_packets_received") / secs],
            None,
            None,
        );
        self.report.add(
            S8,
            "idle: ZooKeeper server CPU",
            "%",
            &[zk_cpu1.saturating_sub(zk_cpu0) as f64 / (secs * 1e9) * 100.0],
            None,
            None,
        );
        self.report.add(
            S8,
            "idle: CPU per leader (median)",
            "%",
            &[median(&lpct).unwrap_or(0.0)],
            None,
            None,
        );
        self.report.add(
            S8,
            "idle: CPU per follower (median)",
            "%",
            &[median(&fpct).unwrap_or(0.0)],
            None,
            None,
        );
        self.report.add(
            S8,
            "idle: CPU, busiest agent",
            "%",
            &[max(lpct.iter().chain(&fpct).copied())],
            None,
            None,
        );
        self.report.add(
            S8,
            "idle: RSS per leader (median)",
            "MiB",
            &[median(&lrss).unwrap_or(0.0)],
            None,
            None,
        );
        self.report.add(
            S8,
            "idle: RSS per follower (median)",
            "MiB",
            &[median(&frss).unwrap_or(0.0)],
            None,
            None,
        );
        if sessions != n {
            self.report.note(format!(
                "idle window: {sessions} agent sessions seen in cons on both reads, of {n} agents"
            ));
        }

        // A ZooKeeper restart shorter than the session timeout: nothing reconfigures.
        let (_, infos) = self
            .wait_configured(
                fleet,
                0.0,
                Duration::from_secs(120),
                "before the short restart",
            )
            .await?;
        let before = self.fingerprint(fleet, &infos).await?;
        let lost_before = sessions_lost(fleet);
        let down = Instant::now();
        self.zk.stop()?;
        self.zk.restart()?;
        let down_ms = down.elapsed().as_secs_f64() * 1000.0;
        let up = Instant::now();
        self.wait_connected(fleet, Duration::from_secs(120)).await?;
        let back_ms = up.elapsed().as_secs_f64() * 1000.0;
        // A session the client expired itself: the ZooKeeper client retries with a delay that
        // doubles from 0.1 s without a cap and gives a session up 7/5 of its timeout after the
        // last packet it received, so a restart shorter than the session timeout can still
        // outlast it (with a 10 s session, any outage over about 6.3 s may). Such a restart is
        // not short for that client: a leader whose session expired moves, as it must.
        let expired = sessions_lost(fleet).saturating_sub(lost_before);
        // Whatever the restart set off (a deposed leader, a new round) has started by now.
        tokio::time::sleep(Duration::from_secs_f64(st + 2.0)).await;
        let (_, infos) = self
            .wait_configured(
                fleet,
                0.0,
                Duration::from_secs(300),
                "after the short restart",
            )
            .await?;
        let after = self.fingerprint(fleet, &infos).await?;
        let changed: Vec<String> = before
            .clusters
            .iter()
            .zip(&after.clusters)
            .enumerate()
            .filter(|(_, (b, a))| b != a)
            .map(|(k, (b, a))| format!("{} {b:?} -> {a:?}", fleet.clusters[k]))
            .collect();
        let restarted = before
            .pids
            .iter()
            .zip(&after.pids)
            .filter(|(b, a)| b != a)
            .count();
        self.report.add(
            S8,
            "short ZooKeeper restart: ZooKeeper down (stop + start)",
            "ms",
            &[down_ms],
            Some(&format!("< {:.0} (session)", st * 1000.0)),
            None,
        );
        self.report.add(
            S8,
            "short restart: ZooKeeper up -> every agent connected",
            "ms",
            &[back_ms],
            None,
            None,
        );
        self.report.add(
            S8,
            "short restart: sessions the clients expired themselves",
            "sessions",
            &[expired as f64],
            None,
            None,
        );
        self.report.add(
            S8,
            "short restart: clusters that reconfigured or changed leader",
            "clusters",
            &[changed.len() as f64],
            Some("0"),
            None,
        );
        self.report.add(
            S8,
            "short restart: processes restarted",
            "processes",
            &[restarted as f64],
            Some("0"),
            None,
        );
        if down_ms >= st * 1000.0 {
            self.report.note(format!("the short restart took {down_ms:.0} ms, not shorter than the session timeout ({st} s): its figures say nothing (machine too loaded?)"));
        } else if expired > 0 {
            self.report.note(format!("the short restart took {down_ms:.0} ms and the agents were connected again {back_ms:.0} ms later, which outlasted the client-side expiry of {expired} sessions (the client's reconnection delay doubles from 0.1 s): not short for those clients, its figures say nothing (machine too loaded?)"));
        } else if !changed.is_empty() || restarted > 0 {
            broken.push(format!("a ZooKeeper restart of {down_ms:.0} ms (session timeout {st} s) reconfigured {} clusters ({}) and restarted {restarted} processes", changed.len(), changed.join("; ")));
        }
        self.zkc = zk::connect(&self.zk.addr()).await?;

        // A restart longer than the client-side expiry (7/5 of the session timeout): every
        // session expires, every agent registers again, every cluster elects and configures.
        // `cons` lists connected sessions: one listed after the restart that was listed before
        // is a client that resumed its session, i.e. the restart was not long enough.
        let own = self.zkc.session_id().0;
        let old_sessions = self.agent_sessions(own)?;
        let history0 = self.fingerprint(fleet, &infos).await?;
        let down = Instant::now();
        self.zk.stop()?;
        tokio::time::sleep(Duration::from_secs_f64(st * 1.4 + 2.0)).await;
        self.zk.restart()?;
        let down_ms = down.elapsed().as_secs_f64() * 1000.0;
        let up_ms = unix_ms();
        let sampler = Sampler::start(self.zk.port);
        let result = self
            .wait_configured(
                fleet,
                up_ms,
                Duration::from_secs(600),
                "after the long restart",
            )
            .await;
        let peak = sampler.peak();
        let (ends, infos) = result?;
        let recovered = max(ends.iter().copied()) - up_ms;
        let new_sessions: BTreeSet<i64> = self.zk.cons()?.into_iter().map(|c| c.sid).collect();
        let kept = old_sessions.intersection(&new_sessions).count();
        let alive = fleet
            .agents
            .iter_mut()
            .map(Agent::alive)
            .filter(|a| *a)
            .count();
        let history1 = self.fingerprint(fleet, &infos).await?;
        let rounds: Vec<f64> = history0
            .clusters
            .iter()
            .zip(&history1.clusters)
            .map(|(b, a)| a.3.saturating_sub(b.3) as f64)
            .collect();
        let restarted = history0
            .pids
            .iter()
            .zip(&history1.pids)
            .filter(|(b, a)| b != a)
            .count();
        self.report.add(
            S8,
            "long ZooKeeper restart: ZooKeeper down",
            "ms",
            &[down_ms],
            None,
            None,
        );
        self.report.add(
            S8,
            "long restart: ZooKeeper up -> every cluster configured again",
            "ms",
            &[recovered],
            None,
            None,
        );
        self.report.add(
            S8,
            "long restart: ZooKeeper down -> every cluster configured again",
            "ms",
            &[recovered + down_ms],
            None,
            None,
        );
        self.report.add(
            S8,
            "long restart: peak ZooKeeper packets/s (mntr, 1 s samples)",
            "req/s",
            &[peak],
            None,
            None,
        );
        self.report.add(
            S8,
            "long restart: rounds per cluster until configured (history)",
            "rounds",
            &[median(&rounds).unwrap_or(0.0)],
            None,
            None,
        );
        self.report.add(
            S8,
            "long restart: most rounds in one cluster",
            "rounds",
            &[max(rounds.iter().copied())],
            None,
            None,
        );
        self.report.add(
            S8,
            "long restart: processes restarted",
            "processes",
            &[restarted as f64],
            None,
            None,
        );
        self.report.add(
            S8,
            "long restart: sessions that survived",
            "sessions",
            &[kept as f64],
            Some("0"),
            None,
        );
        if kept > 0 {
            broken.push(format!("{kept} ZooKeeper sessions survived a restart longer than the expiry: the long restart did not expire every session"));
        }
        if alive != n {
            broken.push(format!(
                "{} agents died across the ZooKeeper restarts",
                n - alive
            ));
        }
        self.zkc = zk::connect(&self.zk.addr()).await?;
        self.report.note(format!(
            "scale run ({label}, session timeout {st} s): load average {load_start} at the start, {} at the end",
            loadavg()
        ));
        Ok(())
    }

    /// The sessions connected to ZooKeeper (`cons`), the harness's own `own` left out.
    fn agent_sessions(&self, own: i64) -> Result<BTreeSet<i64>> {
        Ok(self
            .zk
            .cons()?
            .into_iter()
            .map(|c| c.sid)
            .filter(|sid| *sid != own)
            .collect())
    }

    /// Waits until every agent says it is connected to ZooKeeper.
    async fn wait_connected(&self, fleet: &Fleet, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let infos = self.poll(fleet).await;
            let connected = infos
                .iter()
                .filter(|i| i.as_ref().is_some_and(|i| i.zk == "connected"))
                .count();
            if connected == fleet.agents.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "only {connected} of {} agents connected to ZooKeeper again within {timeout:?}",
                    fleet.agents.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many times the fleet's agents logged that their ZooKeeper session ended.
fn sessions_lost(fleet: &Fleet) -> usize {
    fleet
        .logs
        .iter()
        .map(|log| {
            std::fs::read_to_string(log)
                .map(|text| text.matches(SESSION_LOST).count())
                .unwrap_or(0)
        })
        .sum()
}

/// The version of a cluster's history node and its number of rounds (`(-1, 0)` when absent).
async fn history(client: &zookeeper_client::Client, cluster: &str) -> Result<(i32, usize)> {
    let path = format!("/ochopod/clusters/bench.{cluster}/history");
    match client.get_data(&path).await {
        Ok((data, stat)) => {
            let rounds = serde_json::from_slice::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v.as_array().map(Vec::len))
                .unwrap_or(0);
            Ok((stat.version, rounds))
        }
        Err(zookeeper_client::Error::NoNode) => Ok((-1, 0)),
        Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_clusters_form_three_tiers() {
        let l = layout(0, 30);
        assert_eq!(l.len(), 30);
        assert!(l[..10].iter().all(|(_, d)| d.is_empty()));
        assert_eq!(l[10], ("s0c10".to_string(), vec!["s0c00".to_string()]));
        assert_eq!(l[29], ("s0c29".to_string(), vec!["s0c19".to_string()]));
        let two = layout(1, 2);
        assert_eq!(two[0].1, Vec::<String>::new());
        assert_eq!(two[1], ("s1c01".to_string(), vec!["s1c00".to_string()]));
    }

    #[test]
    fn ports_skip_a_taken_one() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = held.local_addr().expect("addr").port();
        let mut next = taken;
        let ports = take_ports(&mut next, 2).expect("ports");
        assert!(!ports.contains(&taken));
        assert!(ports.iter().all(|p| *p > taken));
    }
}
