//! Real agent processes (`ochopod run`) and what /proc says about them.

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as the agents stamp their rounds.
pub(crate) fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    Ok(l.local_addr()?.port())
}

const TEMPLATE: &str =
    "{% for key, pod in cluster.pods|items %}{{ pod.ip }}:{{ pod.ports[\"8080\"] }}\n{% endfor %}";

/// How agents are started.
#[derive(Clone, Debug)]
pub(crate) struct AgentConfig {
    pub(crate) bin: PathBuf,
    pub(crate) zk: String,
    pub(crate) session_timeout: f64,
}

impl AgentConfig {
    /// The pod spec of every benchmarked agent: a trivial process, one template, damper 0;
    /// `session_timeout` overrides the configured one, `depends_on` lists clusters.
    fn spec(&self, cluster: &str, session_timeout: Option<f64>, depends_on: &[String]) -> String {
        let deps: Vec<String> = depends_on.iter().map(|d| format!("{d:?}")).collect();
        format!(
            r#"[pod]
namespace = "bench"
cluster = "{cluster}"
binding = "local"
port = 8080
session_timeout = {st}

[ports]
"8080" = 8080

[model]
damper = 0.0
control_timeout = 10.0
depends_on = [{deps}]

[process]
argv = ["sleep", "1000000"]
grace = 2.0
check_every = 60.0

[[templates]]
source = "members.txt.j2"
target = "members.txt"
"#,
            st = session_timeout.unwrap_or(self.session_timeout),
            deps = deps.join(", ")
        )
    }

    /// Starts one agent of `cluster` in `dir` with control port `port`.
    pub(crate) fn spawn(&self, cluster: &str, dir: &Path, port: u16) -> Result<Agent> {
        self.spawn_with(cluster, dir, port, None, &[])
    }

    /// [`AgentConfig::spawn`] with its own session timeout and dependencies.
    pub(crate) fn spawn_with(
        &self,
        cluster: &str,
        dir: &Path,
        port: u16,
        session_timeout: Option<f64>,
        depends_on: &[String],
    ) -> Result<Agent> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("pod.toml"),
            self.spec(cluster, session_timeout, depends_on),
        )?;
        std::fs::write(dir.join("members.txt.j2"), TEMPLATE)?;
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let spawned_ms = unix_ms();
        let child = Command::new(&self.bin)
            .arg("run")
            .arg("--spec")
            .arg(dir.join("pod.toml"))
            .arg("--zk")
            .arg(&self.zk)
            .arg("--set")
            .arg(format!("ports.\"8080\"={port}"))
            .arg("--set")
            .arg("model.damper=0")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start the agent {}", self.bin.display()))?;
        Ok(Agent {
            child,
            port,
            spawned_ms,
            sub_pid: None,
        })
    }
}

/// One running agent.
pub(crate) struct Agent {
    child: Child,
    pub(crate) port: u16,
    pub(crate) spawned_ms: f64,
    /// The last sub-process pid seen in /info (killed with the agent when it is SIGKILLed).
    pub(crate) sub_pid: Option<u32>,
}

impl Agent {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the agent process is still running (not exited, not reaped).
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), sig);
    }

    /// Waits for the agent to exit; SIGKILLs it (and its sub-process) after `timeout`.
    pub(crate) async fn reap(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.kill_sub();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// SIGKILLs the sub-process and its group (left behind by a SIGKILLed agent).
    pub(crate) fn kill_sub(&self) {
        if let Some(pid) = self.sub_pid {
            let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }

    /// Resident memory of the agent process alone, in KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        status_field(self.pid(), "VmRSS:")
    }

    /// The anonymous part of the resident memory (heap, stacks: the agent's own), in KiB.
    pub(crate) fn rss_anon_kib(&self) -> Option<u64> {
        status_field(self.pid(), "RssAnon:")
    }

    /// The proportional set size (shared pages of the binary and libc divided among the
    /// processes that map them), in KiB.
    pub(crate) fn pss_kib(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid())).ok()?;
        text.lines()
            .find(|l| l.starts_with("Pss:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// CPU time of every thread of the agent, in nanoseconds (sum of `/proc/PID/task/*/schedstat`).
    pub(crate) fn cpu_ns(&self) -> u64 {
        cpu_ns_of(self.pid())
    }

    /// utime + stime in clock ticks (`/proc/PID/stat`), the coarse cross-check of [`Agent::cpu_ns`].
    pub(crate) fn cpu_ticks(&self) -> u64 {
        let (user, sys) = self.cpu_user_sys_ticks();
        user + sys
    }

    /// (utime, stime) in clock ticks.
    pub(crate) fn cpu_user_sys_ticks(&self) -> (u64, u64) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) else {
            return (0, 0);
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return (0, 0);
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
        let get = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (get(14), get(15))
    }
}

impl Drop for Agent {
    /// An agent dropped while running (a scenario failed half-way) gets SIGTERM, so it stops its
    /// process itself, then SIGKILL after 5 s with its process group.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while let Ok(None) = self.child.try_wait() {
                if std::time::Instant::now() >= deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill_sub();
    }
}

/// CPU time of every live thread of process `pid`, in nanoseconds.
pub(crate) fn cpu_ns_of(pid: u32) -> u64 {
    let dir = format!("/proc/{pid}/task");
    let Ok(tasks) = std::fs::read_dir(dir) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Fields of `/info` the harness reads.
#[derive(Clone, Debug, Default)]
pub(crate) struct InfoView {
    pub(crate) state: String,
    pub(crate) process: String,
    pub(crate) pid: Option<u32>,
    /// The ZooKeeper session as the agent sees it (`connected`, `disconnected`, ...).
    pub(crate) zk: String,
    /// The last round: (started_ms, duration_ms, outcome, number of answers).
    pub(crate) round: Option<(f64, f64, String, usize)>,
}

impl InfoView {
    pub(crate) fn from_json(v: &Value) -> InfoView {
        let round = v.get("last_round").filter(|r| !r.is_null()).map(|r| {
            (
                r["started_ms"].as_f64().unwrap_or(0.0),
                r["duration_ms"].as_f64().unwrap_or(0.0),
                r["outcome"].as_str().unwrap_or("").to_string(),
                r["answers"].as_object().map(|a| a.len()).unwrap_or(0),
            )
        });
        InfoView {
            state: v["state"].as_str().unwrap_or("").to_string(),
            process: v["process"].as_str().unwrap_or("").to_string(),
            pid: v["pid"].as_u64().map(|p| p as u32),
            zk: v["zk"].as_str().unwrap_or("").to_string(),
            round,
        }
    }

    pub(crate) fn leads(&self) -> bool {
        self.state.starts_with("leader")
    }

    pub(crate) fn clean_leader(&self) -> bool {
        self.state == "leader"
    }

    pub(crate) fn round_started(&self) -> Option<f64> {
        self.round.as_ref().map(|r| r.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_from_json() {
        let v = serde_json::json!({
            "state": "leader", "process": "running", "pid": 42, "zk": "connected",
            "last_round": {"started_ms": 1000, "duration_ms": 12, "outcome": "ok",
                           "answers": {"a": "on 200", "b": "on 200"}}
        });
        let i = InfoView::from_json(&v);
        assert!(i.leads() && i.clean_leader());
        assert_eq!(i.pid, Some(42));
        assert_eq!(i.zk, "connected");
        assert_eq!(i.round, Some((1000.0, 12.0, "ok".into(), 2)));
        let f = InfoView::from_json(&serde_json::json!({"state": "follower", "last_round": null}));
        assert!(!f.leads() && f.round.is_none());
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = Command::new("sleep").arg("5").spawn().expect("sleep");
        // On a loaded machine the child may not have run yet: wait until it has exec'd.
        let comm = format!("/proc/{}/comm", me.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            assert!(std::time::Instant::now() < deadline, "sleep never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let a = Agent {
            child: me,
            port: 1,
            spawned_ms: unix_ms(),
            sub_pid: None,
        };
        assert!(a.rss_kib().unwrap_or(0) > 0);
        assert!(a.rss_anon_kib().is_some() && a.pss_kib().unwrap_or(0) > 0);
        // `sleep` has run at least its exec: some nanoseconds, whatever the ticks say. The
        // kernel adds a slice to schedstat when the task leaves the CPU, so wait for that.
        while a.cpu_ns() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no CPU time ever read"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
