//! Supervision through the real agent, at the agent's own level (`docs/protocol.md`): its SIGTERM
//! (leave the cluster first, then end the process group, exit 0), `on_give_up = "exit"` (exit
//! code 3) and `state_dir` (a restarted pod keeps its key and seq).
//!
//! ZooKeeper is watched with kazoo, independently of the agent. The SIGTERM test prints the time
//! from the signal to the pod's node vanishing (median over a few runs): run it with
//! `--nocapture` to read it.

use ochopod_e2e::supervision::*;
use ochopod_e2e::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const NS: &str = "supa";

fn spec(zk: &ZkServer, cluster: &str) -> Result<PodSpec> {
    let mut s = PodSpec::new(NS, cluster, &zk.connect_string())?;
    s.set("model", "control_timeout", 30.0)
        .set("process", "grace", 2.0)
        .set("process", "check_every", 1.0)
        .set("process", "restart_delay", 0.2)
        .set("hooks", "timeout", 10.0);
    Ok(s)
}

fn pods_path(cluster: &str) -> String {
    format!("{}/pods", Kazoo::cluster_path(NS, cluster))
}

fn wait_running(agent: &Agent) -> Result<Info> {
    agent.wait_info(Duration::from_secs(60), "the process to run", |i| {
        i.process == "running" && i.pid.is_some()
    })
}

/// The sub-process of the SIGTERM test: a kazoo client of its own that watches the pod nodes,
/// starts a grandchild in its process group, and on SIGTERM writes whether any pod node is left.
/// Everything goes to `events`, one `what value...` per line.
const WATCH_PY: &str = r#"
import logging, os, signal, subprocess, sys, threading, time
from kazoo.client import KazooClient
logging.basicConfig(level=logging.ERROR)
hosts, pods = sys.argv[1], sys.argv[2]
lock = threading.Lock()
def log(line):
    with lock:
        with open("events", "a") as f:
            f.write(line + "\n")
zk = KazooClient(hosts=hosts, timeout=10)
zk.start(timeout=10)
child = subprocess.Popen(["sleep", "600"])
log("grandchild %d" % child.pid)
state = {"seen": False}
@zk.ChildrenWatch(pods)
def watch(children):
    if children:
        if not state["seen"]:
            state["seen"] = True
            log("watching %d" % len(children))
    elif state["seen"]:
        log("node-gone %.6f" % time.time())
        return False
def term(signum, frame):
    now = time.time()
    left = zk.get_children(pods)
    log("term %.6f %d" % (now, len(left)))
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
while True:
    time.sleep(0.05)
"#;

/// One line of `events` starting with `what`: its remaining fields.
fn event(agent: &Agent, what: &str) -> Option<Vec<String>> {
    std::fs::read_to_string(agent.dir().join("events"))
        .ok()?
        .lines()
        .find(|l| l.split_whitespace().next() == Some(what))
        .map(|l| l.split_whitespace().skip(1).map(str::to_string).collect())
}

fn wait_event(agent: &Agent, what: &str) -> Result<Vec<String>> {
    wait_until(Duration::from_secs(30), &format!("event `{what}`"), || {
        event(agent, what).ok_or_else(|| {
            let all = std::fs::read_to_string(agent.dir().join("events")).unwrap_or_default();
            format!("events: {all:?} | {}", agent.summary())
        })
    })
}

#[test]
fn sigterm_leaves_the_cluster_first_then_ends_the_process_group() -> anyhow::Result<()> {
    ensure_python_deps()?;
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let mut to_node_gone = Vec::new();
    for run in 0..5 {
        let cluster = format!("term{run}");
        let mut s = spec(&zk, &cluster)?;
        s.set(
            "process",
            "argv",
            vec![
                "python3".to_string(),
                "watch.py".to_string(),
                zk.connect_string(),
                pods_path(&cluster),
            ],
        )
        .file("watch.py", WATCH_PY);
        let agent = Agent::spawn(&s)?;
        let info = wait_running(&agent)?;
        let pid = info.pid.expect("pid");
        wait_event(&agent, "watching")?;
        let grandchild: u32 = wait_event(&agent, "grandchild")?[0].parse()?;
        assert!(pid_alive(grandchild));
        let pods = kz.dump(&pods_path(&cluster))?.expect("pods");
        assert_eq!(pods.children.len(), 1, "our pod's node is there");
        assert!(pods.children[0].name.starts_with(&info.key));

        let sent = unix_now();
        agent.sigterm()?;
        let status = agent.wait_exit(Duration::from_secs(30))?;
        assert_eq!(status.code(), Some(0), "the agent exits 0 after SIGTERM");

        // The process group got SIGTERM only once the node was gone.
        let term = wait_event(&agent, "term")?;
        let (term_at, left): (f64, usize) = (term[0].parse()?, term[1].parse()?);
        assert_eq!(
            left, 0,
            "run {run}: pod node still there when the process got SIGTERM"
        );
        let gone_at: f64 = wait_event(&agent, "node-gone")?[0].parse()?;
        assert!(
            gone_at >= sent - 0.01,
            "run {run}: node gone before the signal?"
        );
        assert!(
            term_at >= sent,
            "run {run}: the process got SIGTERM before the agent did"
        );
        // Every process of the group ended: the sub-process and its grandchild.
        wait_until(
            Duration::from_secs(10),
            "the process group to be gone",
            || {
                let left: Vec<u32> = [pid, grandchild]
                    .into_iter()
                    .filter(|p| pid_alive(*p))
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("alive: {left:?}"))
                }
            },
        )?;
        assert!(agent.descendants().is_empty(), "{:?}", agent.descendants());
        let pods = kz.dump(&pods_path(&cluster))?.expect("pods");
        assert!(pods.children.is_empty(), "{:?}", pods.child_names());
        // How fast is the bench's business; here, the order: the node went before the process
        // got SIGTERM (above), and the agent left by closing its session, never waiting it out.
        let log = std::fs::read_to_string(agent.log_path())?;
        assert!(
            !log.contains("leaving ZooKeeper took more than"),
            "run {run}: {log}"
        );
        to_node_gone.push(gone_at - sent);
        eprintln!(
            "run {run}: SIGTERM -> node gone {:.1} ms, -> process SIGTERM {:.1} ms",
            (gone_at - sent) * 1000.0,
            (term_at - sent) * 1000.0
        );
    }
    let med = median(&to_node_gone).expect("runs");
    eprintln!(
        "SIGTERM to the pod's node vanishing: median {:.1} ms over {} runs ({:?})",
        med * 1000.0,
        to_node_gone.len(),
        to_node_gone
            .iter()
            .map(|s| format!("{:.1}", s * 1000.0))
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn on_give_up_exit_makes_the_agent_exit_3() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "giveup")?;
    s.set("process", "checks", 2)
        .set("process", "check_every", 0.5)
        .set("process", "on_give_up", "exit")
        .command("date +%s.%N >> starts; exit 1")
        .set("process", "shell", true);
    let agent = Agent::spawn(&s)?;
    let status = agent.wait_exit(Duration::from_secs(60))?;
    assert_eq!(status.code(), Some(3), "{}", agent.log_tail(2000));
    let starts = read_numbers(&agent.dir().join("starts"));
    assert!(starts.len() >= 2, "it crash-looped first: {starts:?}");
    assert!(agent.descendants().is_empty(), "{:?}", agent.descendants());
    Ok(())
}

/// The pod nodes of `cluster` as (key, seq from the payload).
fn zk_pods(kz: &Kazoo, cluster: &str) -> Result<Vec<(String, Option<u64>)>> {
    let Some(pods) = kz.dump(&pods_path(cluster))? else {
        return Ok(Vec::new());
    };
    pods.children
        .iter()
        .map(|n| {
            let key = n.name.split_once('.').map_or(n.name.as_str(), |(k, _)| k);
            let seq = n.json()?.get("seq").and_then(Value::as_u64);
            Ok((key.to_string(), seq))
        })
        .collect()
}

#[test]
fn a_pod_restarted_with_its_state_dir_keeps_its_key_and_seq() -> anyhow::Result<()> {
    ensure_python_deps()?;
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let state = tempfile::tempdir()?;
    let mut s = spec(&zk, "state")?;
    s.set("pod", "state_dir", state.path().display().to_string())
        .command("sleep 600");
    let mut a = Agent::spawn(&s)?;
    let first = wait_running(&a)?;
    let (key, seq) = (first.key.clone(), first.seq.expect("seq"));
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(
        state.path().join("ochopod-state.json"),
    )?)?;
    assert_eq!(kept["key"], key.as_str());
    assert_eq!(kept["seq"], seq);

    // A graceful stop, then a fresh pod (no state_dir) joins: a new key and a new seq.
    a.sigterm()?;
    assert_eq!(a.wait_exit(Duration::from_secs(30))?.code(), Some(0));
    let mut fresh = spec(&zk, "state")?;
    fresh.command("sleep 600");
    let b = Agent::spawn(&fresh)?;
    let other = wait_running(&b)?;
    assert_ne!(other.key, key, "a pod without state_dir is a new member");
    assert_ne!(other.seq, Some(seq), "a new member gets a new seq");

    // The first pod comes back as itself.
    a.respawn()?;
    let again = wait_running(&a)?;
    assert_eq!(again.key, key, "same key after a restart");
    assert_eq!(again.seq, Some(seq), "same seq after a restart");
    let nodes = wait_until(Duration::from_secs(30), "two pod nodes", || {
        let pods = zk_pods(&kz, "state").map_err(|e| e.to_string())?;
        if pods.len() == 2 {
            Ok(pods)
        } else {
            Err(format!("{pods:?}"))
        }
    })?;
    let expected: BTreeSet<(String, Option<u64>)> =
        [(key.clone(), Some(seq)), (other.key.clone(), other.seq)].into();
    assert_eq!(nodes.into_iter().collect::<BTreeSet<_>>(), expected);

    // A crash (SIGKILL: its old node lingers until the session expires), then a restart:
    // still itself, one node for its key once the old session is gone, and configured.
    a.kill9()?;
    a.respawn()?;
    let after_crash = wait_running(&a)?;
    assert_eq!(after_crash.key, key);
    assert_eq!(after_crash.seq, Some(seq));
    wait_until(Duration::from_secs(60), "one node per key again", || {
        let pods = zk_pods(&kz, "state").map_err(|e| e.to_string())?;
        let set: BTreeSet<_> = pods.iter().cloned().collect();
        if pods.len() == 2 && set == expected {
            Ok(())
        } else {
            Err(format!("{pods:?}"))
        }
    })?;
    let snapshot = wait_until(Duration::from_secs(60), "a snapshot of both pods", || {
        let node = kz
            .dump(&format!("{}/snapshot", Kazoo::cluster_path(NS, "state")))
            .map_err(|e| e.to_string())?
            .ok_or("no snapshot")?;
        let snap = node.json().map_err(|e| e.to_string())?;
        let keys: BTreeSet<String> = snap
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        if keys.contains(&key) && keys.contains(&other.key) {
            Ok(snap)
        } else {
            Err(format!("{keys:?} | {}", describe(&[&a, &b])))
        }
    })?;
    assert_eq!(snapshot[&key]["seq"], seq, "the snapshot keeps the seq");
    let now = a.info()?;
    assert_eq!(now.process, "running", "{}", describe(&[&a, &b]));
    Ok(())
}

#[test]
fn sigterm_kills_a_stubborn_process_after_grace_and_exits_0() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "stubborn")?;
    s.set("process", "grace", 1.5)
        .command("trap '' TERM; while :; do sleep 0.1; done")
        .set("process", "shell", true);
    let agent = Agent::spawn(&s)?;
    let pid = wait_running(&agent)?.pid.expect("pid");
    let started = std::time::Instant::now();
    agent.sigterm()?;
    let status = agent.wait_exit(Duration::from_secs(30))?;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", agent.log_tail(2000));
    assert!(
        took >= Duration::from_millis(1200),
        "exited after {took:?}: the 1.5 s grace was not waited out"
    );
    assert!(!pid_alive(pid), "SIGKILLed once the grace ran out");
    wait_until(Duration::from_secs(10), "the group to be gone", || {
        let left = agent.descendants();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })?;
    Ok(())
}

#[test]
fn sigterm_to_a_dead_pod_exits_0() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "deadterm")?;
    s.command("true");
    let agent = Agent::spawn(&s)?;
    agent.wait_info(Duration::from_secs(60), "the pod to die", |i| {
        i.process == "dead"
    })?;
    agent.sigterm()?;
    let status = agent.wait_exit(Duration::from_secs(30))?;
    assert_eq!(status.code(), Some(0), "{}", agent.log_tail(2000));
    Ok(())
}

/// An agent killed outright (SIGKILL, nothing runs) takes its process with it, and the whole
/// process group follows: a shell's background child as well as the group leader.
#[test]
fn kill_9_of_the_agent_takes_its_process_group_with_it() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "kill9")?;
    s.command("sleep 600 & exec sleep 600")
        .set("process", "shell", true);
    let agent = Agent::spawn(&s)?;
    let pid = wait_running(&agent)?.pid.expect("pid");
    let members = wait_until(
        Duration::from_secs(30),
        "two processes in the group",
        || {
            let members = group_members(pid);
            if members.len() == 2 {
                Ok(members)
            } else {
                Err(format!("{members:?}"))
            }
        },
    )?;
    assert!(members.contains(&pid), "{members:?}");
    agent.kill9()?;
    wait_until(
        Duration::from_secs(30),
        "the process group to be gone",
        || {
            let left = group_members(pid);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still alive: {left:?}"))
            }
        },
    )?;
    assert!(members.iter().all(|p| !pid_alive(*p)), "{members:?}");
    Ok(())
}

/// Ctrl-C reaches the agent's process group and, in a terminal, the process too: the process
/// ends while the agent is still leaving the cluster, and it must not be started again. The
/// agent reaches ZooKeeper through a proxy that drops every byte once the pod runs, so leaving
/// takes the agent's full 5 s wait and the process's end surely falls inside the stop.
#[test]
fn ctrl_c_does_not_restart_the_process_during_the_shutdown() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let proxy = Proxy::start(zk.addr())?;
    let mut s = spec(&zk, "ctrlc")?;
    s.set("pod", "zk", proxy.connect_string())
        .set("pod", "session_timeout", 30.0)
        .command("exec sleep 600")
        .set("process", "shell", true);
    let agent = Agent::spawn_own_group(&s, &[])?;
    let pid = wait_running(&agent)?.pid.expect("pid");
    let log = |agent: &Agent| std::fs::read_to_string(agent.log_path()).unwrap_or_default();
    proxy.blackhole()?;
    agent.signal_group(nix::sys::signal::Signal::SIGINT)?;
    wait_until(
        Duration::from_secs(30),
        "the agent to begin its stop",
        || {
            let text = log(&agent);
            if text.contains("stopping: leaving the cluster first") {
                Ok(())
            } else {
                Err(agent.log_tail(800))
            }
        },
    )?;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    // `died` while the pod meant it to run, `ended` otherwise: either way the exit was seen.
    let ends = [format!("pid {pid} died"), format!("pid {pid} ended")];
    let died = wait_until(Duration::from_secs(60), "the process to end", || {
        let text = log(&agent);
        ends.iter()
            .find(|e| text.contains(e.as_str()))
            .cloned()
            .ok_or_else(|| agent.log_tail(3000))
    })?;
    proxy.restore()?;
    let status = agent.wait_exit(Duration::from_secs(60))?;
    let text = log(&agent);
    assert_eq!(status.code(), Some(0), "{}", agent.log_tail(3000));
    let exited = text.find(&died).expect("seen above");
    let left = text.find("left the cluster; tearing the process down");
    assert!(
        left.is_none_or(|l| exited < l),
        "the process ended after the agent left the cluster: the test proved nothing\n{text}"
    );
    assert_eq!(
        text.matches(" as pid ").count(),
        1,
        "the process was started again during the stop:\n{text}"
    );
    Ok(())
}

/// A hook running when its agent is killed outright dies with it, its process group too.
#[test]
fn kill_9_of_the_agent_takes_a_running_hook_with_it() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "kill9hook")?;
    s.command("sleep 600")
        .hook(
            "initialize",
            "echo $$ > hook.pid; sleep 600 & exec sleep 600",
        )
        .set("hooks", "timeout", 600.0);
    let agent = Agent::spawn(&s)?;
    let hook: u32 = wait_until(Duration::from_secs(60), "the hook to run", || {
        let text = std::fs::read_to_string(agent.dir().join("hook.pid")).unwrap_or_default();
        text.trim().parse::<u32>().map_err(|_| agent.summary())
    })?;
    wait_until(
        Duration::from_secs(30),
        "two processes in the hook's group",
        || {
            let members = group_members(hook);
            if members.len() == 2 {
                Ok(())
            } else {
                Err(format!("{members:?}"))
            }
        },
    )?;
    agent.kill9()?;
    wait_until(
        Duration::from_secs(30),
        "the hook's group to be gone",
        || {
            let left = group_members(hook);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still alive: {left:?}"))
            }
        },
    )?;
    Ok(())
}
