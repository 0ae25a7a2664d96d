//! The agent in Docker: the project's own images (built from Debian packages by
//! `scripts/docker-build.sh`), on private networks with a coordination ZooKeeper in a container.
//!
//! - the agent is PID 1 and reaps the orphans of its process tree;
//! - `docker stop` removes the pod's ZooKeeper node first, then stops the process within its
//!   grace, and the container exits 0;
//! - the ZooKeeper example forms a working three-member ensemble;
//! - scaling the web tier reconfigures the HAProxy balancer;
//! - `docker kill` of the leader moves leadership;
//! - a `docker network disconnect` shorter than the damper restarts nothing.
//!
//! Every scenario builds its own network and removes it, with its containers, on drop. The
//! scenarios run one at a time (each starts several JVMs and agents on a small machine).

use ochopod_e2e::docker::{ensure_images, four_letter, http_get, Container, Network};
use ochopod_e2e::{wait_until, Kazoo, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

const MINUTE: Duration = Duration::from_secs(60);

/// `docker run` options for a pod of `namespace` registering in ZooKeeper at `zk`.
fn pod_env(namespace: &str, zk: &Container) -> Vec<String> {
    vec![
        "-e".into(),
        format!("ochopod_namespace={namespace}"),
        "-e".into(),
        format!("ochopod_zk={}:2181", zk.ip()),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The pods registered under `namespace.cluster`: key -> node name.
fn registered(kazoo: &Kazoo, namespace: &str, cluster: &str) -> Result<BTreeMap<String, String>> {
    let path = format!("{}/pods", Kazoo::cluster_path(namespace, cluster));
    let Some(pods) = kazoo.dump(&path)? else {
        return Ok(BTreeMap::new());
    };
    Ok(pods
        .children
        .iter()
        .map(|c| {
            let key = c.name.split('.').next().unwrap_or_default().to_string();
            (key, c.name.clone())
        })
        .collect())
}

fn running_info(c: &Container) -> std::result::Result<ochopod_e2e::Info, String> {
    let info = c.info().map_err(|e| e.to_string())?;
    if info.process == "running" {
        Ok(info)
    } else {
        Err(format!(
            "{}: process={} state={} failure={:?}",
            c.hostname(),
            info.process,
            info.state,
            info.last_failure
        ))
    }
}

/// Waits until every pod runs and exactly one of them leads with a clean configuration.
fn wait_cluster_ready(pods: &[&Container], timeout: Duration) -> Result<usize> {
    wait_until(timeout, "every pod running, one clean leader", || {
        let mut leaders = Vec::new();
        for (i, c) in pods.iter().enumerate() {
            let info = running_info(c)?;
            if info.state.starts_with("leader") {
                if info.state != "leader" || info.pending_ms.is_some() {
                    return Err(format!("leader {} is {:?}", c.hostname(), info.state));
                }
                leaders.push(i);
            }
        }
        match leaders.as_slice() {
            [one] => Ok(*one),
            other => Err(format!("leaders: {other:?}")),
        }
    })
}

#[test]
fn the_agent_is_pid_1_and_reaps_orphans() -> Result<()> {
    let _one = serial();
    ensure_images()?;
    let net = Network::create("pid1")?;
    let zk = net.coordination_zk()?;
    // The process double-forks 20 short sleeps: each one's parent exits at once, so the sleeps
    // are re-parented to PID 1, and must be reaped by it when they exit.
    let spec = r#"
[pod]
cluster = "pid1"
binding = "generic"
port = 8080
session_timeout = 3.0
[process]
shell = true
command = "for i in $(seq 1 20); do sh -c 'sleep 5 & echo $! >> /tmp/orphans'; done; exec sleep infinity"
grace = 2.0
"#;
    let opts = pod_env("pid1", &zk);
    let pod = net.run_with_files(
        "pod",
        "ochopod/agent:latest",
        &strs(&opts),
        &[],
        &[("/etc/ochopod/pod.toml", spec)],
    )?;

    let cmdline = pod.exec(&["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"])?;
    assert!(
        cmdline.starts_with("/usr/local/bin/ochopod run --spec /etc/ochopod/pod.toml"),
        "PID 1 is {cmdline:?}"
    );
    wait_until(MINUTE, "the pod to run", || running_info(&pod).map(drop))
        .map_err(|e| with_logs(e, &[&pod]))?;

    let orphans = wait_until(MINUTE, "20 orphans started", || {
        let out = pod
            .exec(&["sh", "-c", "cat /tmp/orphans 2>/dev/null || true"])
            .map_err(|e| e.to_string())?;
        let pids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        if pids.len() == 20 {
            Ok(pids)
        } else {
            Err(format!("{} orphans so far", pids.len()))
        }
    })?;
    // Each orphan's parent is PID 1 while it sleeps (5 s), and once it exits its /proc entry (a
    // zombie until someone waits for it) disappears: PID 1 reaped it.
    let script = format!(
        "for p in {}; do [ -e /proc/$p ] && echo $p $(cut -d' ' -f3,4 /proc/$p/stat); done; true",
        orphans.join(" ")
    );
    let mut seen_reparented = false;
    wait_until(MINUTE, "every orphan reaped", || {
        let left = pod
            .exec(&["sh", "-c", &script])
            .map_err(|e| e.to_string())?;
        for line in left.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(2) == Some(&"1") {
                seen_reparented = true;
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still there (pid state ppid): {left}"))
        }
    })
    .map_err(|e| with_logs(e, &[&pod]))?;
    assert!(
        seen_reparented,
        "no orphan was seen with PID 1 as its parent: {orphans:?}"
    );
    // The pod is still fine after reaping (its own process was not mistaken for an orphan).
    let info = running_info(&pod).map_err(ochopod_e2e::Error::Usage)?;
    assert!(info.pid.is_some(), "{info:?}");
    Ok(())
}

#[test]
fn docker_stop_leaves_zookeeper_first_and_stops_within_the_grace() -> Result<()> {
    let _one = serial();
    ensure_images()?;
    let net = Network::create("stop")?;
    let zk = net.coordination_zk()?;
    let kazoo = Kazoo::new(&format!("{}:2181", zk.ip()))?;
    // The process takes 4 s to stop after SIGTERM (well inside its 10 s grace).
    let spec = r#"
[pod]
cluster = "stop"
binding = "generic"
port = 8080
session_timeout = 10.0
[process]
shell = true
command = "trap 'sleep 4; exit 0' TERM; while :; do sleep 0.2; done"
grace = 10.0
"#;
    let opts = pod_env("stop", &zk);
    let pod = net.run_with_files(
        "pod",
        "ochopod/agent:latest",
        &strs(&opts),
        &[],
        &[("/etc/ochopod/pod.toml", spec)],
    )?;
    wait_until(MINUTE, "the pod to run", || running_info(&pod).map(drop))
        .map_err(|e| with_logs(e, &[&pod]))?;
    assert_eq!(registered(&kazoo, "stop", "stop")?.len(), 1);

    // docker stop waits up to 30 s before SIGKILL; the agent must be done well before.
    let mut stop = pod.stop_in_background(30)?;
    // The node goes at once (not after the 10 s session timeout), while the process still
    // runs its 4 s tear-down: the container is still up when the node is gone.
    wait_until(Duration::from_secs(20), "the pod's node to go", || {
        let n = registered(&kazoo, "stop", "stop").map_err(|e| e.to_string())?;
        if n.is_empty() {
            Ok(())
        } else {
            Err(format!("{n:?}"))
        }
    })?;
    assert!(
        pod.running()?,
        "the node must be gone before the process finished its tear-down"
    );
    let status = stop
        .wait()
        .map_err(|e| ochopod_e2e::Error::Usage(e.to_string()))?;
    assert!(status.success(), "docker stop failed: {status}");
    let code = pod.inspect("{{.State.ExitCode}} {{.State.OOMKilled}}")?;
    assert_eq!(
        code,
        "0 false",
        "the agent exits 0 after a clean stop (137 would be docker's SIGKILL); logs: {}",
        pod.logs()
    );
    Ok(())
}

#[test]
fn the_zookeeper_example_forms_a_working_ensemble() -> Result<()> {
    let _one = serial();
    ensure_images()?;
    let net = Network::create("ens")?;
    let zk = net.coordination_zk()?;
    let env = pod_env("ens", &zk);
    let members: Vec<Container> = (1..=3)
        .map(|i| {
            net.run(
                &format!("zk{i}"),
                "ochopod/zookeeper:latest",
                &strs(&env),
                &[],
            )
        })
        .collect::<Result<_>>()?;
    let refs: Vec<&Container> = members.iter().collect();
    wait_cluster_ready(&refs, 3 * MINUTE).map_err(|e| with_logs(e, &refs))?;

    // One leader and two followers, each serving.
    let roles = wait_until(2 * MINUTE, "a leader and two followers", || {
        let mut roles = BTreeMap::new();
        for m in &members {
            let mntr = four_letter(&format!("{}:2181", m.ip()), "mntr")?;
            let role = mntr
                .lines()
                .find_map(|l| l.strip_prefix("zk_server_state\t"))
                .ok_or_else(|| format!("{}: {mntr:?}", m.hostname()))?
                .to_string();
            roles.insert(m.hostname().to_string(), role);
        }
        let mut sorted: Vec<&str> = roles.values().map(String::as_str).collect();
        sorted.sort();
        if sorted == ["follower", "follower", "leader"] {
            Ok(roles)
        } else {
            Err(format!("{roles:?}"))
        }
    })
    .map_err(|e| with_logs(e, &refs))?;
    eprintln!("ensemble roles: {roles:?}");

    // Each member's id is its seq + 1 and every member lists all three.
    for m in &members {
        let info = m.info()?;
        let seq = info.seq.expect("a registered pod has a seq");
        let myid = m.exec(&["cat", "/var/lib/zookeeper/myid"])?;
        assert_eq!(myid, (seq + 1).to_string(), "{}", m.hostname());
        let cfg = m.exec(&["cat", "/etc/zookeeper/ensemble/zoo.cfg"])?;
        for other in &members {
            let entry = format!("={}:2888:3888", other.ip());
            assert!(
                cfg.lines()
                    .any(|l| l.starts_with("server.") && l.ends_with(&entry)),
                "{} lacks {}: {cfg}",
                m.hostname(),
                other.ip()
            );
        }
    }

    // A client writes on one member and reads it on the two others.
    let writer = Kazoo::new(&format!("{}:2181", members[0].ip()))?;
    writer.create("/e2e/greeting", "hello from zk1")?;
    for m in &members[1..] {
        let reader = Kazoo::new(&format!("{}:2181", m.ip()))?;
        wait_until(MINUTE, "the write to reach every member", || {
            let node = reader.dump("/e2e/greeting").map_err(|e| e.to_string())?;
            match node.and_then(|n| n.data) {
                Some(d) if d == "hello from zk1" => Ok(()),
                other => Err(format!("{}: {other:?}", m.hostname())),
            }
        })?;
    }
    Ok(())
}

/// The hostnames answering through the balancer over `n` requests; fails on any error reply.
fn through_balancer(lb: &Container, n: usize) -> std::result::Result<BTreeSet<String>, String> {
    let url = format!("http://{}:80/", lb.ip());
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let body = http_get(&url).map_err(|e| e.to_string())?;
        let host = body.split_whitespace().next().unwrap_or_default();
        seen.insert(host.to_string());
    }
    Ok(seen)
}

fn wait_backends(lb: &Container, live: &[&Container]) -> Result<()> {
    let want: BTreeSet<String> = live.iter().map(|c| c.hostname().to_string()).collect();
    wait_until(
        2 * MINUTE,
        "the balancer to reach exactly the live web pods",
        || {
            let seen = through_balancer(lb, 4 * want.len())?;
            if seen == want {
                Ok(())
            } else {
                Err(format!("seen {seen:?}, want {want:?}"))
            }
        },
    )?;
    // Once reconfigured, every request succeeds and only live pods answer.
    let seen = through_balancer(lb, 20).map_err(ochopod_e2e::Error::Usage)?;
    assert_eq!(seen, want);
    Ok(())
}

#[test]
fn scaling_the_web_tier_reconfigures_the_balancer() -> Result<()> {
    let _one = serial();
    ensure_images()?;
    let net = Network::create("lb")?;
    let zk = net.coordination_zk()?;
    let env = pod_env("shop", &zk);
    let web1 = net.run("web1", "ochopod/web:latest", &strs(&env), &[])?;
    let web2 = net.run("web2", "ochopod/web:latest", &strs(&env), &[])?;
    let lb = net.run("lb", "ochopod/haproxy:latest", &strs(&env), &[])?;
    let all = [&web1, &web2, &lb];
    wait_backends(&lb, &[&web1, &web2]).map_err(|e| with_logs(e, &all))?;
    let master = |lb: &Container| lb.exec(&["cat", "/run/haproxy.pid"]);
    let master_before = master(&lb)?;

    // Up: a third web pod joins.
    let web3 = net.run("web3", "ochopod/web:latest", &strs(&env), &[])?;
    wait_backends(&lb, &[&web1, &web2, &web3]).map_err(|e| with_logs(e, &[&web3, &lb]))?;

    // Down: two leave.
    web1.stop(20)?;
    web3.stop(20)?;
    wait_backends(&lb, &[&web2]).map_err(|e| with_logs(e, &[&web2, &lb]))?;
    let cfg = lb.exec(&["cat", "/etc/haproxy/haproxy.cfg"])?;
    let servers: Vec<&str> = cfg
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .collect();
    assert_eq!(servers.len(), 1, "{cfg}");
    assert!(servers[0].contains(&format!("{}:9000", web2.ip())), "{cfg}");
    let master_after = master(&lb)?;
    // The balancer reloads (its `reload` hook) instead of restarting.
    assert_eq!(
        master_before, master_after,
        "haproxy was restarted instead of reloaded"
    );
    Ok(())
}

#[test]
fn docker_kill_of_the_leader_moves_leadership() -> Result<()> {
    let _one = serial();
    ensure_images()?;
    let net = Network::create("kill")?;
    let zk = net.coordination_zk()?;
    let kazoo = Kazoo::new(&format!("{}:2181", zk.ip()))?;
    let mut env = pod_env("kill", &zk);
    env.extend(["-e".to_string(), "ochopod_cluster=hello".to_string()]);
    let pods: Vec<Container> = (1..=3)
        .map(|i| {
            net.run(
                &format!("pod{i}"),
                "ochopod/agent:latest",
                &strs(&env),
                &["--set", "pod.session_timeout=3"],
            )
        })
        .collect::<Result<_>>()?;
    let refs: Vec<&Container> = pods.iter().collect();
    let leader = wait_cluster_ready(&refs, 2 * MINUTE).map_err(|e| with_logs(e, &refs))?;
    let old_key = pods[leader].info()?.key;

    pods[leader].kill()?;
    let rest: Vec<&Container> = pods
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, c)| c)
        .collect();
    // Its session expires (3 s), its node goes, one of the two others takes the lock.
    let new_leader = wait_cluster_ready(&rest, 2 * MINUTE).map_err(|e| with_logs(e, &rest))?;
    let new_key = rest[new_leader].info()?.key;
    assert_ne!(new_key, old_key);
    let keys = registered(&kazoo, "kill", "hello")?;
    assert!(!keys.contains_key(&old_key), "{keys:?}");
    assert_eq!(keys.len(), 2, "{keys:?}");
    Ok(())
}

#[test]
fn a_network_disconnect_shorter_than_the_damper_restarts_nothing() -> Result<()> {
    let _one = serial();
    ensure_images()?;
    let net = Network::create("part")?;
    let zk = net.coordination_zk()?;
    let kazoo = Kazoo::new(&format!("{}:2181", zk.ip()))?;
    let mut env = pod_env("part", &zk);
    env.extend(["-e".to_string(), "ochopod_cluster=calm".to_string()]);
    // Strict pods: any configuration round would restart their process (a new pid).
    let args = [
        "--set",
        "pod.session_timeout=2",
        "--set",
        "model.damper=15",
        "--set",
        "process.strict=true",
    ];
    let pods: Vec<Container> = (1..=3)
        .map(|i| {
            net.run(
                &format!("pod{i}"),
                "ochopod/agent:latest",
                &strs(&env),
                &args,
            )
        })
        .collect::<Result<_>>()?;
    let refs: Vec<&Container> = pods.iter().collect();
    let leader = wait_cluster_ready(&refs, 2 * MINUTE).map_err(|e| with_logs(e, &refs))?;
    let round_before = pods[leader].info()?.last_round.map(|r| r.started_ms);
    let pids_before: Vec<Option<u32>> = pods
        .iter()
        .map(|c| c.info().map(|i| i.pid))
        .collect::<Result<_>>()?;
    let victim = &pods[(leader + 1) % 3];
    let victim_key = victim.info()?.key;
    let node_before = registered(&kazoo, "part", "calm")?
        .get(&victim_key)
        .cloned()
        .expect("the victim is registered");

    // Cut it off until ZooKeeper expires its session (its node goes), then put it back: it
    // registers again (a new node) well before the 15 s damper ends.
    victim.disconnect()?;
    let cut = wait_until(MINUTE, "the victim's session to expire", || {
        let n = registered(&kazoo, "part", "calm").map_err(|e| e.to_string())?;
        if n.contains_key(&victim_key) {
            Err(format!("{n:?}"))
        } else {
            Ok(())
        }
    });
    victim.reconnect()?;
    cut?;
    wait_until(MINUTE, "the victim to register again", || {
        let n = registered(&kazoo, "part", "calm").map_err(|e| e.to_string())?;
        match n.get(&victim_key) {
            Some(node) if *node != node_before => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .map_err(|e| with_logs(e, &[victim]))?;
    // The leader's pending configuration is cancelled: clean again, with no new round.
    wait_cluster_ready(&refs, MINUTE).map_err(|e| with_logs(e, &refs))?;
    let round_after = pods[leader].info()?.last_round.map(|r| r.started_ms);
    assert_eq!(round_after, round_before, "a configuration round ran");
    let pids_after: Vec<Option<u32>> = pods
        .iter()
        .map(|c| c.info().map(|i| i.pid))
        .collect::<Result<_>>()?;
    assert_eq!(pids_after, pids_before, "a process restarted");
    Ok(())
}

fn with_logs(e: ochopod_e2e::Error, pods: &[&Container]) -> ochopod_e2e::Error {
    let logs: Vec<String> = pods
        .iter()
        .map(|c| format!("--- {}:\n{}", c.name(), c.logs()))
        .collect();
    ochopod_e2e::Error::Usage(format!("{e}\n{}", logs.join("\n")))
}
