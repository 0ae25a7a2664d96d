//! One pod partitioned from ZooKeeper (a fault-injecting
//! proxy between it and the server), a configure slower than the control timeout, garbage under
//! `pods/`, and a dependency cluster that goes away. Real ZooKeeper (100 ms tick), real agents,
//! 3 s sessions; only the order of events and loose bounds are asserted.

use ochopod_e2e::scenario::*;
use ochopod_e2e::*;
use std::collections::BTreeSet;
use std::time::Duration;

const NS: &str = "resil";
const SETTLE: Duration = Duration::from_secs(120);

/// `n` sleeping pods, each talking to ZooKeeper through its own proxy.
fn behind_proxies(
    zk: &ZkServer,
    cluster: &str,
    n: usize,
    damper: f64,
) -> anyhow::Result<(Vec<Proxy>, Vec<Agent>)> {
    let mut proxies = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..n {
        let proxy = Proxy::start(zk.addr())?;
        let mut spec = sleeper(NS, cluster, &proxy.connect_string())?;
        spec.set("model", "damper", damper);
        agents.push(Agent::spawn(&spec)?);
        proxies.push(proxy);
    }
    Ok((proxies, agents))
}

/// Scenario 4: a follower cut from ZooKeeper for longer than its session but shorter than
/// `damper`: its node vanishes (the leader goes `configuration pending`) and comes back with the
/// same key and seq; the hash returns to the committed value, the pending round is cancelled and
/// no process restarts anywhere.
#[test]
fn cut_shorter_than_damper_restarts_nothing() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "cut-short";
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let (proxies, agents) = behind_proxies(&zk, cluster, 3, 12.0)?;
    let all: Vec<&Agent> = agents.iter().collect();
    let before = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let (l, x) = (before.leader, before.follower());
    let x_key = before.infos[x].key.clone();
    let (x_seq, x_node) = before.zk.pods[&x_key].clone();
    let round_before = before.leader_info().last_round.clone().expect("a round");

    proxies[x].cut()?;
    let mut pending = false;
    wait_until_with(
        Duration::from_secs(30),
        Duration::from_millis(200),
        "the cut pod's node to vanish",
        || {
            pending |= agents[l]
                .info()
                .is_ok_and(|i| i.state == "leader (configuration pending)");
            let z = ClusterZk::read(&kz, NS, cluster)?;
            if z.pods.contains_key(&x_key) {
                Err(format!("pods={:?}", z.pod_keys()))
            } else {
                Ok(())
            }
        },
    )?;
    proxies[x].restore()?;
    let back = wait_until_with(
        Duration::from_secs(30),
        Duration::from_millis(200),
        "the cut pod to register again",
        || {
            pending |= agents[l]
                .info()
                .is_ok_and(|i| i.state == "leader (configuration pending)");
            let z = ClusterZk::read(&kz, NS, cluster)?;
            z.pods
                .get(&x_key)
                .cloned()
                .ok_or_else(|| format!("pods={:?}", z.pod_keys()))
        },
    )?;
    assert_ne!(back.1.name, x_node.name, "a new node (new session)");
    assert_eq!(back.0, x_seq, "the same seq in the new registration");
    let after = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert!(
        pending,
        "the leader saw the change (configuration pending) before the pod came back"
    );
    assert_eq!(after.leader, l, "leadership stayed put");
    assert_eq!(
        after
            .leader_info()
            .last_round
            .as_ref()
            .map(|r| r.started_ms),
        Some(round_before.started_ms),
        "no round ran: the pending configuration was cancelled"
    );
    assert_eq!(after.zk.hash_text(), before.zk.hash_text(), "same hash");
    assert_eq!(after.pids(), before.pids(), "no sub-process restarted");
    assert_eq!(after.infos[x].key, x_key);
    assert_eq!(after.infos[x].seq, Some(x_seq));
    Ok(())
}

/// Scenario 5: a follower cut for longer than its session: the leader configures the cluster
/// without it; back, it registers again with the same key and seq and is configured in again
/// (its process, left running throughout, is not restarted).
#[test]
fn cut_longer_than_session_reregisters_with_same_key_and_seq() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "cut-long";
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let (proxies, agents) = behind_proxies(&zk, cluster, 3, 0.0)?;
    let all: Vec<&Agent> = agents.iter().collect();
    let before = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let (l, x) = (before.leader, before.follower());
    let x_key = before.infos[x].key.clone();
    let (x_seq, x_node) = before.zk.pods[&x_key].clone();
    let survivors: BTreeSet<String> = before
        .infos
        .iter()
        .filter(|i| i.key != x_key)
        .map(|i| i.key.clone())
        .collect();

    proxies[x].cut()?;
    wait_until_with(
        Duration::from_secs(45),
        Duration::from_millis(300),
        "the leader to configure the cluster without the cut pod",
        || {
            let li = agents[l].info().map_err(|e| e.to_string())?;
            let z = ClusterZk::read(&kz, NS, cluster)?;
            if li.state == "leader" && z.snapshot_keys() == survivors {
                Ok(())
            } else {
                Err(format!("{} snapshot={:?}", li.state, z.snapshot_keys()))
            }
        },
    )?;
    let cut_info = agents[x].info()?;
    assert_eq!(
        cut_info.process, "running",
        "ZooKeeper gone never stops the process"
    );
    assert_ne!(cut_info.zk, "connected", "the cut pod knows it is cut");
    proxies[x].restore()?;
    let after = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let (seq, node) = after.zk.pods[&x_key].clone();
    assert_ne!(node.name, x_node.name, "registered again: a new node");
    assert_eq!(seq, x_seq, "same seq in ZooKeeper");
    assert_eq!(after.infos[x].key, x_key, "same key");
    assert_eq!(after.infos[x].seq, Some(x_seq), "same seq in /info");
    assert_eq!(after.leader, l);
    assert_eq!(after.pids(), before.pids(), "no sub-process restarted");
    Ok(())
}

/// Scenario 8: a pod whose configuration (`on`, here its `initialize` hook) takes longer than
/// `control_timeout` answers 408; the leader aborts the round (`leader (retrying)`, the reason in
/// `round_failure`), retries, and commits once the pod is ready.
#[test]
fn configure_slower_than_control_timeout_is_408_then_retried() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "slow-configure";
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let spec = |slow: bool| -> anyhow::Result<PodSpec> {
        let mut s = sleeper(NS, cluster, &zk.connect_string())?;
        s.set("model", "control_timeout", 2.0)
            .set("process", "grace", 1.0);
        if slow {
            s.hook("initialize", "sleep 6");
        }
        Ok(s)
    };
    let fast = Agent::spawn(&spec(false)?)?;
    fast.wait_info(Duration::from_secs(60), "the first pod to lead", |i| {
        i.state == "leader" && i.process == "running"
    })?;
    let slow = Agent::spawn(&spec(true)?)?;
    let slow_key = wait_until(Duration::from_secs(30), "the slow pod's key", || {
        slow.info().map(|i| i.key).map_err(|e| e.to_string())
    })?;
    let failure = fast.wait_info(
        Duration::from_secs(60),
        "the round to fail on the slow pod's 408",
        |i| {
            i.round_failure
                .as_deref()
                .is_some_and(|f| f.contains(&slow_key) && f.contains("408"))
        },
    )?;
    assert!(
        failure.state == "leader (retrying)" || failure.state == "leader (configuring)",
        "the leader retries: {}",
        failure.state
    );
    let settled = wait_settled(&[&fast, &slow], &kz, NS, cluster, SETTLE)?;
    let round = settled.leader_info().last_round.clone().expect("a round");
    assert_eq!(
        round.answers.get(&slow_key).map(String::as_str),
        Some("on 200")
    );
    assert_eq!(
        settled.leader_info().round_failure,
        None,
        "cleared once committed"
    );
    Ok(())
}

/// Scenario 10: malformed payloads injected under `pods/` (not JSON, JSON of the wrong shape, a
/// foreign node name) are logged and skipped; the leader keeps configuring the real pods.
#[test]
fn malformed_pod_payloads_are_skipped() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "garbage";
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let mut agents = Vec::new();
    for _ in 0..2 {
        agents.push(Agent::spawn(&sleeper(NS, cluster, &zk.connect_string())?)?);
    }
    let before = {
        let all: Vec<&Agent> = agents.iter().collect();
        wait_settled(&all, &kz, NS, cluster, SETTLE)?
    };
    let pods = format!("{}/pods", Kazoo::cluster_path(NS, cluster));
    let bad = [
        (
            "0badc0de-0000-4000-8000-000000000001.0000000777",
            "{not json",
        ),
        (
            "0badc0de-0000-4000-8000-000000000002.0000000778",
            r#"{"ports": "nope", "ip": 5}"#,
        ),
        ("garbage-node", "x"),
    ];
    for (name, data) in bad {
        kz.create(&format!("{pods}/{name}"), data)?;
    }
    // A real pod joins after the garbage: the leader must still configure it.
    agents.push(Agent::spawn(&sleeper(NS, cluster, &zk.connect_string())?)?);
    let all: Vec<&Agent> = agents.iter().collect();
    let after = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert_eq!(after.leader, before.leader, "the leader kept leading");
    assert_eq!(after.zk.foreign.len(), 3, "the garbage is still there");
    for k in after.zk.snapshot_keys() {
        assert!(!k.starts_with("0badc0de"), "garbage in the snapshot: {k}");
    }
    let log = std::fs::read_to_string(agents[after.leader].log_path())?;
    for (name, _) in bad {
        assert!(
            log.contains(name),
            "the leader's log does not mention the skipped node {name}"
        );
    }
    // The garbage goes away: still nothing to reconfigure, the leader still answers.
    for (name, _) in bad {
        kz.delete(&format!("{pods}/{name}"), false)?;
    }
    let end = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert_eq!(end.zk.hash_text(), after.zk.hash_text());
    assert_eq!(end.pids(), after.pids());
    Ok(())
}

/// Scenario 11: a cluster's only dependency disappears (its pod leaves with SIGTERM): the
/// dependents reconfigure without it (their rendered view no longer lists it).
#[test]
fn dependents_reconfigure_when_a_dependency_disappears() -> anyhow::Result<()> {
    let _one = serial();
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let db = Agent::spawn(&sleeper(NS, "db", &zk.connect_string())?)?;
    let db_state = wait_settled(&[&db], &kz, NS, "db", SETTLE)?;
    let db_key = db_state.infos[0].key.clone();
    let web: Vec<Agent> = (0..2)
        .map(|_| {
            let mut s = sleeper(NS, "web", &zk.connect_string())?;
            s.set(
                "model",
                "depends_on",
                toml::Value::Array(vec![toml::Value::String("db".into())]),
            )
            .template(
                "deps.txt.j2",
                "{% for key, pod in cluster.dependencies.db|items %}{{ key }}\n{% endfor %}",
                "deps.txt",
            );
            Ok(Agent::spawn(&s)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let webs: Vec<&Agent> = web.iter().collect();
    let deps = |a: &Agent| {
        std::fs::read_to_string(a.dir().join("deps.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
    };
    let before = wait_until_with(
        SETTLE,
        Duration::from_millis(300),
        "web configured with its db",
        || {
            let s =
                wait_settled(&webs, &kz, NS, "web", Duration::ZERO).map_err(|e| e.to_string())?;
            if web.iter().all(|a| deps(a) == vec![db_key.clone()]) {
                Ok(s)
            } else {
                Err(format!(
                    "deps={:?}",
                    web.iter().map(deps).collect::<Vec<_>>()
                ))
            }
        },
    )?;

    db.sigterm()?;
    db.wait_exit(Duration::from_secs(30))?;
    let after = wait_until_with(
        SETTLE,
        Duration::from_millis(300),
        "web reconfigured without its db",
        || {
            let s =
                wait_settled(&webs, &kz, NS, "web", Duration::ZERO).map_err(|e| e.to_string())?;
            if web.iter().all(|a| deps(a).is_empty()) {
                Ok(s)
            } else {
                Err(format!(
                    "deps={:?}",
                    web.iter().map(deps).collect::<Vec<_>>()
                ))
            }
        },
    )?;
    let db_zk = ClusterZk::read(&kz, NS, "db").map_err(anyhow::Error::msg)?;
    assert!(
        db_zk.pods.is_empty() && db_zk.snapshot.is_none(),
        "db is gone"
    );
    assert_ne!(
        after.zk.hash_text(),
        before.zk.hash_text(),
        "a new configuration"
    );
    assert_eq!(after.leader, before.leader);
    Ok(())
}
