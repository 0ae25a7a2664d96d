//! The cluster-level measurements (BENCHMARKS.md), one method per section.

mod scale;

use crate::agent::{free_port, unix_ms, Agent, AgentConfig, InfoView};
use crate::sim::{self, SimFleet};
use crate::stats::Report;
use crate::zk::{self, ZkServer};
use crate::Args;
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zookeeper_client::{Acls, AddWatchMode, CreateMode, EventType};

const S1: &str = "1 reconfiguration";
const S2: &str = "2 failover";
const S3: &str = "3 idle agent";
const S4: &str = "4 /info load";
const S5: &str = "5 ZooKeeper at idle";
const S6: &str = "6 start-up";
const S7: &str = "7 supervision";

/// Everything a run of the harness holds.
pub(crate) struct Bench {
    args: Args,
    zk: ZkServer,
    zkc: zookeeper_client::Client,
    http: ochopod_http::Client,
    agents: AgentConfig,
    work: PathBuf,
    report: Report,
    dirs: usize,
}

impl Bench {
    pub(crate) async fn new(args: Args, bin: PathBuf, work: PathBuf) -> Result<Bench> {
        let zk = ZkServer::start(&args.zk_script, &work.join("zk"), args.tick_ms)?;
        let zkc = zk::connect(&zk.addr()).await?;
        let agents = AgentConfig {
            bin,
            zk: zk.addr(),
            session_timeout: args.session_timeout,
        };
        eprintln!(
            "ochopod-bench: ZooKeeper on {} (tickTime {} ms), agent session timeout {} s, work in {}",
            zk.addr(),
            args.tick_ms,
            args.session_timeout,
            work.display()
        );
        Ok(Bench {
            args,
            zk,
            zkc,
            http: ochopod_http::Client::new(None),
            agents,
            work,
            report: Report::default(),
            dirs: 0,
        })
    }

    /// Runs the sections asked for; the first failure stops the run (figures so far are kept).
    pub(crate) async fn run_all(&mut self) -> Result<()> {
        let size = std::fs::metadata(&self.agents.bin)?.len() as f64 / (1024.0 * 1024.0);
        self.report.add(
            S3,
            "binary size (release, stripped)",
            "MiB",
            &[size],
            None,
            None,
        );
        if self.args.wants("startup") {
            self.startup().await.context("start-up")?;
        }
        let main_sections = ["idle", "info", "reconfig", "crash", "failover"];
        if main_sections.iter().any(|s| self.args.wants(s)) {
            let mut agents = self.start("web", 3)?;
            let r = self.main_cluster(&mut agents).await;
            self.stop(agents).await;
            r?;
        }
        if self.args.wants("big") {
            self.big().await.context("big cluster")?;
        }
        if self.args.wants("sim") {
            self.simulated().await.context("simulated pods")?;
        }
        if self.args.wants("scale") {
            self.scale().await.context("scale")?;
        }
        Ok(())
    }

    async fn main_cluster(&mut self, agents: &mut Vec<Agent>) -> Result<()> {
        self.settle(agents, 3, Duration::from_secs(30)).await?;
        if self.args.wants("idle") {
            self.idle(agents).await.context("idle")?;
        }
        if self.args.wants("info") {
            self.info_load(agents).await.context("/info load")?;
        }
        if self.args.wants("reconfig") {
            let leader = self.settle(agents, 3, Duration::from_secs(30)).await?;
            self.reconfig(
                "3 agents",
                "web",
                agents[leader].port,
                3,
                Duration::from_secs(30),
            )
            .await
            .context("reconfiguration, 3 agents")?;
        }
        if self.args.wants("crash") {
            self.crash(agents).await.context("crash restart")?;
        }
        if self.args.wants("failover") {
            for kind in [Victim::KillFollower, Victim::KillLeader, Victim::TermLeader] {
                self.failover(agents, kind)
                    .await
                    .with_context(|| format!("failover, {kind:?}"))?;
            }
        }
        Ok(())
    }

    /// The table and the JSON report; stops ZooKeeper.
    pub(crate) async fn finish(self) -> (String, Value) {
        let context = json!({
            "machine": machine(),
            "zookeeper": {"tick_ms": self.args.tick_ms, "version": "3.8 (Debian)", "maxClientCnxns": 0},
            "agent": {
                "binary": self.agents.bin.display().to_string(),
                "session_timeout_s": self.args.session_timeout,
                "damper_s": 0,
                "process": "sleep 1000000 (one template rendered on every on)",
            },
            "runs": self.args.runs,
            "failover_runs": self.args.failover_runs,
            "idle_secs": self.args.idle_secs,
            "wrk": format!("wrk -t1 -c10 -d{}s --latency", self.args.wrk_secs),
            "unix_ms": unix_ms() as u64,
        });
        let table = format!(
            "ochopod-bench: ZooKeeper 3.8 tickTime {} ms, session timeout {} s, damper 0, {} runs per figure\n{}",
            self.args.tick_ms,
            self.args.session_timeout,
            self.args.runs,
            self.report.table()
        );
        let json = self.report.json(context);
        let Bench { zkc, zk, .. } = self;
        drop(zkc);
        drop(zk);
        (table, json)
    }

    // ---------------------------------------------------------------- helpers

    fn next_dir(&mut self, cluster: &str) -> PathBuf {
        self.dirs += 1;
        self.work.join(cluster).join(format!("pod{}", self.dirs))
    }

    fn start(&mut self, cluster: &str, n: usize) -> Result<Vec<Agent>> {
        (0..n)
            .map(|_| {
                let dir = self.next_dir(cluster);
                self.agents.spawn(cluster, &dir, free_port()?)
            })
            .collect()
    }

    async fn stop(&self, agents: Vec<Agent>) {
        for a in &agents {
            a.signal(Signal::SIGTERM);
        }
        for mut a in agents {
            if !a.reap(Duration::from_secs(20)).await {
                eprintln!(
                    "ochopod-bench: agent {} did not stop on SIGTERM within 20 s",
                    a.pid()
                );
            }
        }
    }

    async fn info(&self, port: u16) -> Option<InfoView> {
        let addr = format!("127.0.0.1:{port}");
        self.http
            .info(&addr, Duration::from_secs(2))
            .await
            .ok()
            .map(|v| InfoView::from_json(&v))
    }

    async fn infos(&self, agents: &[Agent]) -> Vec<Option<InfoView>> {
        futures::future::join_all(agents.iter().map(|a| self.info(a.port))).await
    }

    /// Waits until every agent runs its process and one clean leader has committed a round
    /// with `members` answers; returns the leader's index.
    async fn settle(
        &self,
        agents: &mut [Agent],
        members: usize,
        timeout: Duration,
    ) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let infos = self.infos(agents).await;
            for (a, i) in agents.iter_mut().zip(&infos) {
                if let Some(pid) = i.as_ref().and_then(|i| i.pid) {
                    a.sub_pid = Some(pid);
                }
            }
            let running = infos
                .iter()
                .filter(|i| i.as_ref().is_some_and(|i| i.process == "running"))
                .count();
            let leaders: Vec<usize> = infos
                .iter()
                .enumerate()
                .filter(|(_, i)| i.as_ref().is_some_and(InfoView::leads))
                .map(|(k, _)| k)
                .collect();
            if running == agents.len() && leaders.len() == 1 {
                let l = infos[leaders[0]].as_ref().expect("leader has info");
                if l.clean_leader()
                    && l.round
                        .as_ref()
                        .is_some_and(|r| r.2 == "ok" && r.3 == members)
                {
                    return Ok(leaders[0]);
                }
            }
            let last = format!(
                "{running}/{} running, {} leader(s), leader round {:?}",
                agents.len(),
                leaders.len(),
                leaders
                    .first()
                    .and_then(|k| infos[*k].as_ref())
                    .map(|i| (&i.state, &i.round))
            );
            if Instant::now() >= deadline {
                bail!("the cluster did not settle within {timeout:?} ({last}); see the agent.log files under {}", self.work.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a round on the leader at `port` that started after `prev`, succeeded and had
    /// `answers` pods; returns (started_ms, duration_ms). Failed rounds are noted and skipped.
    async fn wait_round(
        &mut self,
        port: u16,
        mut prev: Option<f64>,
        answers: usize,
        timeout: Duration,
    ) -> Result<(f64, f64)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.info(port).await {
                if let Some((started, duration, outcome, n)) = i.round {
                    if Some(started) != prev {
                        if outcome == "ok" && n == answers {
                            return Ok((started, duration));
                        }
                        if outcome != "ok" {
                            self.report
                                .note(format!("a round failed on port {port}: {outcome}"));
                        }
                        prev = Some(started);
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("no successful round with {answers} pods on port {port} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---------------------------------------------------------------- sections

    /// (6) Time from process start to registered, and 3 pods started at once to all running.
    async fn startup(&mut self) -> Result<()> {
        let mut registered = Vec::new();
        let mut final_node = Vec::new();
        let mut all_running = Vec::new();
        let mut first_round = Vec::new();
        for r in 0..self.args.runs {
            let cluster = format!("start{r}");
            let dir = sim::pods_dir(&cluster);
            self.zkc
                .mkdir(&dir, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
                .await?;
            let mut watcher = self
                .zkc
                .watch(&dir, AddWatchMode::PersistentRecursive)
                .await?;
            let mut agents = self.start(&cluster, 3)?;
            let t0 = agents
                .iter()
                .map(|a| a.spawned_ms)
                .fold(f64::INFINITY, f64::min);
            let deadline = Instant::now() + Duration::from_secs(20);
            // The agent creates its node, then writes `seq` into it: the node's creation counts
            // as registered, the write as its final registration (matched by key).
            let mut first_seen: BTreeMap<String, f64> = BTreeMap::new();
            let mut seen = 0;
            let mut counted = std::collections::BTreeSet::new();
            while seen < agents.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                let event = tokio::time::timeout(left, watcher.changed())
                    .await
                    .map_err(|_| anyhow!("agents not registered within 20 s"))?;
                let t = unix_ms();
                if !matches!(
                    event.event_type,
                    EventType::NodeCreated | EventType::NodeDataChanged
                ) {
                    continue;
                }
                let name = event.path.rsplit('/').next().unwrap_or("");
                let key = name
                    .rsplit_once('.')
                    .map(|(k, _)| k)
                    .unwrap_or(name)
                    .to_string();
                let first = *first_seen.entry(key).or_insert(t);
                let Ok((data, _)) = self.zkc.get_data(&event.path).await else {
                    continue; // gone already
                };
                let reg: ochopod_core::Registration = serde_json::from_slice(&data)?;
                if reg.seq.is_none() {
                    continue; // created, its seq not written yet: its data change follows
                }
                let port = reg.ports.get("8080").copied().unwrap_or(0);
                if counted.insert(port) {
                    let Some(a) = agents.iter().find(|a| a.port == port) else {
                        continue;
                    };
                    registered.push(first - a.spawned_ms);
                    final_node.push(t - a.spawned_ms);
                    seen += 1;
                }
            }
            drop(watcher);
            // All three running: poll /info every 5 ms.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut running_at: Vec<Option<f64>> = vec![None; agents.len()];
            while running_at.iter().any(Option::is_none) {
                let infos = self.infos(&agents).await;
                let t = unix_ms();
                for (k, i) in infos.iter().enumerate() {
                    if running_at[k].is_none() && i.as_ref().is_some_and(|i| i.process == "running")
                    {
                        running_at[k] = Some(t);
                    }
                }
                if Instant::now() >= deadline {
                    bail!("3 agents not all running within 30 s (run {r})");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let last = running_at.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
            all_running.push(last - t0);
            let leader = self.settle(&mut agents, 3, Duration::from_secs(30)).await?;
            let l = self.info(agents[leader].port).await.and_then(|i| i.round);
            if let Some((started, duration, _, _)) = l {
                first_round.push(started + duration - t0);
            }
            self.stop(agents).await;
        }
        self.report.add(
            S6,
            "process start -> pod node in ZooKeeper",
            "ms",
            &registered,
            Some("< 100"),
            None,
        );
        self.report.add(
            S6,
            "process start -> final pod node (with seq)",
            "ms",
            &final_node,
            None,
            None,
        );
        self.report.add(
            S6,
            "3 pods started at once -> all running",
            "ms",
            &all_running,
            Some("< 500"),
            Some("6,400"),
        );
        self.report.add(
            S6,
            "3 pods started at once -> 3-pod round committed",
            "ms",
            &first_round,
            None,
            None,
        );
        Ok(())
    }

    /// (3) RSS and CPU of idle agents, (5) ZooKeeper requests of the idle cluster.
    async fn idle(&mut self, agents: &mut [Agent]) -> Result<()> {
        let leader = self.settle(agents, 3, Duration::from_secs(30)).await?;
        // Let the last `ok` and the first probe/check pass.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let own = self.zkc.session_id().0;
        let cons0: BTreeMap<i64, zk::Conn> =
            self.zk.cons()?.into_iter().map(|c| (c.sid, c)).collect();
        let mntr0 = self.zk.mntr()?;
        let cpu0: Vec<(u64, u64)> = agents.iter().map(|a| (a.cpu_ns(), a.cpu_ticks())).collect();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(self.args.idle_secs)).await;
        let secs = t0.elapsed().as_secs_f64();
        let cpu1: Vec<(u64, u64)> = agents.iter().map(|a| (a.cpu_ns(), a.cpu_ticks())).collect();
        let cons1 = self.zk.cons()?;
        let mntr1 = self.zk.mntr()?;
        let tck = 100.0; // USER_HZ on Linux
        let mut leader_cpu = Vec::new();
        let mut follower_cpu = Vec::new();
        let mut ticks_pct = Vec::new();
        let (mut rss, mut anon, mut pss) = (Vec::new(), Vec::new(), Vec::new());
        for (k, a) in agents.iter().enumerate() {
            let pct = (cpu1[k].0.saturating_sub(cpu0[k].0)) as f64 / (secs * 1e9) * 100.0;
            ticks_pct.push((cpu1[k].1.saturating_sub(cpu0[k].1)) as f64 / tck / secs * 100.0);
            if k == leader {
                leader_cpu.push(pct);
            } else {
                follower_cpu.push(pct);
            }
            if let Some(kib) = a.rss_kib() {
                rss.push(kib as f64 / 1024.0);
            }
            if let Some(kib) = a.rss_anon_kib() {
                anon.push(kib as f64 / 1024.0);
            }
            if let Some(kib) = a.pss_kib() {
                pss.push(kib as f64 / 1024.0);
            }
        }
        let (mut packets, mut requests, mut sessions) = (0u64, 0i64, 0);
        for c in cons1 {
            if c.sid == own {
                continue;
            }
            if let Some(b) = cons0.get(&c.sid) {
                packets += c.recved.saturating_sub(b.recved);
                requests += c.lcxid - b.lcxid;
                sessions += 1;
            }
        }
        let delta = |k: &str| -> f64 {
            let get = |m: &BTreeMap<String, String>| {
                m.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            };
            get(&mntr1) - get(&mntr0)
        };
        self.report.add(
            S3,
            "idle RSS per agent",
            "MiB",
            &rss,
            Some("< 6"),
            Some("39.5"),
        );
        self.report.add(
            S3,
            "  of which anonymous (heap, stacks)",
            "MiB",
            &anon,
            None,
            None,
        );
        self.report.add(
            S3,
            "idle PSS per agent (shared pages split)",
            "MiB",
            &pss,
            None,
            None,
        );
        self.report.add(
            S3,
            "idle CPU, leader (schedstat)",
            "%",
            &leader_cpu,
            Some("< 0.02"),
            Some("0.3"),
        );
        self.report.add(
            S3,
            "idle CPU, follower (schedstat)",
            "%",
            &follower_cpu,
            Some("< 0.02"),
            None,
        );
        self.report.add(
            S3,
            "idle CPU per agent (utime+stime ticks)",
            "%",
            &ticks_pct,
            None,
            None,
        );
        self.report.add(
            S5,
            "packets/s from the 3 agents (cons)",
            "req/s",
            &[packets as f64 / secs],
            Some("pings only"),
            Some("7.3"),
        );
        self.report.add(
            S5,
            "non-ping requests/s from the 3 agents (cons lcxid)",
            "req/s",
            &[requests as f64 / secs],
            Some("0"),
            None,
        );
        self.report.add(
            S5,
            "zk_packets_received/s, whole server (mntr)",
            "req/s",
            &[delta("zk_packets_received") / secs],
            None,
            None,
        );
        self.report.note(format!(
            "idle window {secs:.0} s over {sessions} agent sessions; the harness's own session is excluded from cons figures but not from mntr"
        ));
        Ok(())
    }

    /// (4) `/info` under `wrk -t1 -c10` on a follower.
    async fn info_load(&mut self, agents: &mut [Agent]) -> Result<()> {
        let leader = self.settle(agents, 3, Duration::from_secs(30)).await?;
        let port = agents[(leader + 1) % agents.len()].port;
        let mut rps = Vec::new();
        let mut p99 = Vec::new();
        for _ in 0..self.args.wrk_runs {
            let url = format!("http://127.0.0.1:{port}/info");
            let secs = self.args.wrk_secs;
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("wrk")
                    .args(["-t1", "-c10", &format!("-d{secs}s"), "--latency", &url])
                    .output()
            })
            .await?
            .context("cannot run wrk (apt-get install wrk)")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let (r, p) =
                parse_wrk(&text).ok_or_else(|| anyhow!("cannot read wrk's output: {text}"))?;
            rps.push(r);
            p99.push(p);
        }
        self.report.add(
            S4,
            "/info requests/s (wrk -t1 -c10, follower)",
            "req/s",
            &rps,
            Some("> 25,000"),
            Some("1,178"),
        );
        self.report.add(
            S4,
            "/info p99 latency",
            "ms",
            &p99,
            Some("< 2"),
            Some("13.6"),
        );
        Ok(())
    }

    /// (1) A simulated pod joins then leaves `bench.<cluster>`, whose leader is at `port` and
    /// which has `base` members; from the ZooKeeper write to the committed round.
    async fn reconfig(
        &mut self,
        label: &str,
        cluster: &str,
        port: u16,
        base: usize,
        timeout: Duration,
    ) -> Result<()> {
        let fleet = SimFleet::start(1, self.args.sim_server).await?;
        let (mut join, mut leave, mut dur, mut detect) = (vec![], vec![], vec![], vec![]);
        for _ in 0..self.args.runs {
            let prev = self.info(port).await.and_then(|i| i.round_started());
            let t0 = unix_ms();
            let paths = sim::register(&self.zkc, &self.zk.addr(), cluster, &fleet.ports).await?;
            let (s, d) = self.wait_round(port, prev, base + 1, timeout).await?;
            join.push(s + d - t0);
            dur.push(d);
            detect.push(s - t0);
            let t0 = unix_ms();
            sim::deregister(&self.zkc, &paths).await?;
            let (s2, d2) = self.wait_round(port, Some(s), base, timeout).await?;
            leave.push(s2 + d2 - t0);
            dur.push(d2);
            detect.push(s2 - t0);
        }
        let target = if base > 100 {
            "< 2,000"
        } else if base <= 3 {
            "< 100"
        } else {
            ""
        };
        let t = (!target.is_empty()).then_some(target);
        let v1 = (base <= 3).then_some("~3,000 (one round)");
        self.report.add(
            S1,
            &format!("{label}: pod joins -> all answered on, committed"),
            "ms",
            &join,
            t,
            v1,
        );
        self.report.add(
            S1,
            &format!("{label}: pod leaves -> all answered on, committed"),
            "ms",
            &leave,
            t,
            None,
        );
        self.report.add(
            S1,
            &format!("{label}: round duration (leader's last_round)"),
            "ms",
            &dur,
            None,
            None,
        );
        self.report.add(
            S1,
            &format!("{label}: change -> round start"),
            "ms",
            &detect,
            None,
            None,
        );
        Ok(())
    }

    /// (7) SIGKILL of each agent's process -> running again.
    async fn crash(&mut self, agents: &mut [Agent]) -> Result<()> {
        self.settle(agents, 3, Duration::from_secs(30)).await?;
        let mut restart = Vec::new();
        for agent in agents.iter_mut() {
            let port = agent.port;
            let old = self
                .info(port)
                .await
                .and_then(|i| i.pid)
                .ok_or_else(|| anyhow!("agent on {port} shows no process pid"))?;
            let t0 = Instant::now();
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), Signal::SIGKILL)?;
            let deadline = t0 + Duration::from_secs(10);
            loop {
                if let Some(i) = self.info(port).await {
                    if i.process == "running" && i.pid.is_some_and(|p| p != old) {
                        restart.push(t0.elapsed().as_secs_f64() * 1000.0);
                        agent.sub_pid = i.pid;
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    bail!("the process of the agent on {port} was not restarted within 10 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        self.report.add(
            S7,
            "crashed process (SIGKILL) -> running again, first restart",
            "ms",
            &restart,
            Some("< 50"),
            Some("1,500-2,000"),
        );
        Ok(())
    }

    /// (2) Failover after SIGKILL of a follower or the leader, and after SIGTERM of the leader.
    async fn failover(&mut self, agents: &mut Vec<Agent>, kind: Victim) -> Result<()> {
        let st = self.args.session_timeout;
        let timeout = Duration::from_secs_f64(st * 4.0 + 10.0);
        let (mut detected, mut leads, mut reconf) = (vec![], vec![], vec![]);
        for _ in 0..self.args.failover_runs {
            let leader = self.settle(agents, 3, Duration::from_secs(30)).await?;
            let prev: Vec<Option<f64>> = self
                .infos(agents)
                .await
                .into_iter()
                .map(|i| i.and_then(|i| i.round_started()))
                .collect();
            let victim = match kind {
                Victim::KillFollower => (leader + 1) % agents.len(),
                _ => leader,
            };
            let sig = if kind == Victim::TermLeader {
                Signal::SIGTERM
            } else {
                Signal::SIGKILL
            };
            let t0 = unix_ms();
            agents[victim].signal(sig);
            let mut gone = agents.remove(victim);
            let mut prev = prev;
            prev.remove(victim);
            if kind == Victim::KillFollower {
                let l = if leader > victim { leader - 1 } else { leader };
                let (s, d) = self.wait_round(agents[l].port, prev[l], 2, timeout).await?;
                detected.push(s - t0);
                reconf.push(s + d - t0);
            } else {
                let deadline = Instant::now() + timeout;
                let new = loop {
                    let infos = self.infos(agents).await;
                    if let Some(k) = infos
                        .iter()
                        .position(|i| i.as_ref().is_some_and(InfoView::leads))
                    {
                        leads.push(unix_ms() - t0);
                        break k;
                    }
                    if Instant::now() >= deadline {
                        bail!("no new leader within {timeout:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                let (s, d) = self
                    .wait_round(agents[new].port, prev[new], 2, timeout)
                    .await?;
                reconf.push(s + d - t0);
            }
            gone.reap(Duration::from_secs(20)).await;
            if sig == Signal::SIGKILL {
                gone.kill_sub();
            }
            drop(gone);
            let dir = self.next_dir("web");
            agents.push(self.agents.spawn("web", &dir, free_port()?)?);
        }
        self.settle(agents, 3, Duration::from_secs(30)).await?;
        let st_ms = st * 1000.0;
        match kind {
            Victim::KillFollower => {
                let target = format!("< {:.0} (session + 200)", st_ms + 200.0);
                self.report.add(
                    S2,
                    "SIGKILL follower -> leader sees it (round starts)",
                    "ms",
                    &detected,
                    Some(&target),
                    None,
                );
                self.report.add(
                    S2,
                    "SIGKILL follower -> survivors reconfigured",
                    "ms",
                    &reconf,
                    None,
                    Some("8,600"),
                );
            }
            Victim::KillLeader => {
                let target = format!("< {:.0} (session + 200)", st_ms + 200.0);
                self.report.add(
                    S2,
                    "SIGKILL leader -> new leader",
                    "ms",
                    &leads,
                    Some(&target),
                    Some("6,000"),
                );
                self.report.add(
                    S2,
                    "SIGKILL leader -> survivors reconfigured",
                    "ms",
                    &reconf,
                    None,
                    Some("9,400"),
                );
            }
            Victim::TermLeader => {
                self.report.add(
                    S2,
                    "SIGTERM leader -> new leader",
                    "ms",
                    &leads,
                    Some("< 300"),
                    None,
                );
                self.report.add(
                    S2,
                    "SIGTERM leader -> survivors reconfigured",
                    "ms",
                    &reconf,
                    None,
                    None,
                );
            }
        }
        Ok(())
    }

    /// (1) The big cluster of real agents.
    async fn big(&mut self) -> Result<()> {
        let n = self.args.agents;
        let mut agents = self.start("big", n)?;
        let r = async {
            let leader = self
                .settle(&mut agents, n, Duration::from_secs(180))
                .await?;
            let port = agents[leader].port;
            self.reconfig(
                &format!("{n} agents"),
                "big",
                port,
                n,
                Duration::from_secs(60),
            )
            .await
        }
        .await;
        self.stop(agents).await;
        r
    }

    /// (1) One real leader and many simulated pods: the leader's fan-out.
    async fn simulated(&mut self) -> Result<()> {
        let n = self.args.sim_pods;
        let mut agents = self.start("sim", 1)?;
        let r = async {
            self.settle(&mut agents, 1, Duration::from_secs(30)).await?;
            let port = agents[0].port;
            let fleet = SimFleet::start(n, self.args.sim_server).await?;
            let prev = self.info(port).await.and_then(|i| i.round_started());
            let cpu0 = agents[0].cpu_ns();
            let t0 = unix_ms();
            let paths = sim::register(&self.zkc, &self.zk.addr(), "sim", &fleet.ports).await?;
            let (s, d) = self
                .wait_round(port, prev, n + 1, Duration::from_secs(300))
                .await?;
            let last_on = fleet
                .stats
                .last_on_us
                .load(std::sync::atomic::Ordering::Relaxed) as f64
                / 1000.0;
            let label = format!("{n} simulated pods");
            self.report.add(
                S1,
                &format!("{label}: all join at once -> all answered on"),
                "ms",
                &[last_on - t0],
                None,
                None,
            );
            self.report.add(
                S1,
                &format!("{label}: all join at once -> committed"),
                "ms",
                &[s + d - t0],
                None,
                None,
            );
            self.report.add(
                S1,
                &format!("{label}: leader CPU for that round"),
                "ms",
                &[(agents[0].cpu_ns() - cpu0) as f64 / 1e6],
                None,
                None,
            );
            let cpu1 = agents[0].cpu_ns();
            let (user1, sys1) = agents[0].cpu_user_sys_ticks();
            let me1 = crate::agent::cpu_ns_of(std::process::id());
            let runs = self.args.runs;
            self.reconfig(&label, "sim", port, n + 1, Duration::from_secs(120))
                .await?;
            let per_round = (agents[0].cpu_ns() - cpu1) as f64 / 1e6 / (2 * runs) as f64;
            let (user2, sys2) = agents[0].cpu_user_sys_ticks();
            let rounds = (2 * runs) as f64;
            let user_ms = (user2 - user1) as f64 * 10.0 / rounds;
            let sys_ms = (sys2 - sys1) as f64 * 10.0 / rounds;
            self.report.add(
                S1,
                &format!("{label}: leader user CPU per round"),
                "ms",
                &[user_ms],
                None,
                None,
            );
            self.report.add(
                S1,
                &format!("{label}: leader system CPU per round"),
                "ms",
                &[sys_ms],
                None,
                None,
            );
            self.report.add(
                S1,
                &format!("{label}: leader CPU per round (join/leave)"),
                "ms",
                &[per_round],
                None,
                None,
            );
            let sim_cpu = (crate::agent::cpu_ns_of(std::process::id()) - me1) as f64
                / 1e6
                / (2 * runs) as f64;
            self.report.add(
                S1,
                &format!("{label}: harness CPU per round (simulated pods' servers)"),
                "ms",
                &[sim_cpu],
                None,
                None,
            );
            if let Some(kib) = agents[0].rss_kib() {
                self.report.add(
                    S1,
                    &format!("{label}: leader RSS"),
                    "MiB",
                    &[kib as f64 / 1024.0],
                    None,
                    None,
                );
            }
            sim::deregister(&self.zkc, &paths).await?;
            drop(fleet);
            Ok(())
        }
        .await;
        self.stop(agents).await;
        r
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    KillFollower,
    KillLeader,
    TermLeader,
}

/// Requests/s and the p99 latency (ms) of `wrk --latency`'s output.
pub(crate) fn parse_wrk(text: &str) -> Option<(f64, f64)> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))?
        .trim();
    let (num, unit) = p99.split_at(p99.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.trim().parse().ok()?;
    let ms = match unit.trim() {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    };
    Some((rps, ms))
}

/// CPU model, cores, memory and kernel of this machine.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpu": model,
        "cores": cores,
        "memory_gib": (mem * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
        "loadavg_at_end": load.trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_gives_rate_and_p99() {
        let text = "Running 10s test @ http://127.0.0.1:8080/info\n  1 threads and 10 connections\n  Latency Distribution\n     50%  210.00us\n     75%  250.00us\n     90%  300.00us\n     99%    1.52ms\n  312345 requests in 10.00s, 200.00MB read\nRequests/sec:  31234.50\nTransfer/sec:     20.00MB\n";
        assert_eq!(parse_wrk(text), Some((31234.5, 1.52)));
        let us = text.replace("1.52ms", "812.00us");
        assert_eq!(parse_wrk(&us), Some((31234.5, 0.812)));
        assert_eq!(parse_wrk("garbage"), None);
    }
}
