//! The harness's own pieces against a real ZooKeeper: kazoo reads and writes, a standalone
//! restart that keeps data, a proxy cut between a client and the server, and a three-node
//! ensemble that keeps serving with one member down. No agent binary involved.

use ochopod_e2e::supervision::{pid_alive, proc_state};
use ochopod_e2e::*;
use std::time::Duration;

#[test]
fn standalone_server_kazoo_and_restart() -> anyhow::Result<()> {
    let mut zk = ZkServer::start()?;
    assert!(zk.is_serving());
    let kz = Kazoo::new(&zk.connect_string())?;
    assert_eq!(kz.dump("/nope")?, None, "a missing node dumps as None");

    kz.create("/t/a", r#"{"x":1}"#)?;
    kz.create("/t/b", "")?;
    let t = kz.dump("/t")?.expect("/t exists");
    assert_eq!(t.child_names(), vec!["a", "b"]);
    let a = t.child("a").expect("a");
    assert_eq!(a.json()?["x"], 1);
    assert!(!a.is_ephemeral());
    assert!(a.czxid > 0);

    // Data survives a restart on the same port.
    let old_pid = zk.pid();
    zk.restart()?;
    assert_ne!(zk.pid(), old_pid);
    let a = wait_until(Duration::from_secs(30), "/t/a after restart", || {
        kz.dump("/t/a")
            .map_err(|e| e.to_string())?
            .ok_or("missing".to_string())
    })?;
    assert_eq!(a.json()?["x"], 1);

    kz.set("/t/a", "2")?;
    assert_eq!(kz.dump("/t/a")?.and_then(|n| n.data), Some("2".into()));
    kz.delete("/t", true)?;
    assert_eq!(kz.dump("/t")?, None);

    // Stopped, it serves nothing; kazoo says so with an error, not a hang.
    zk.stop()?;
    assert!(!zk.is_serving());
    let err = Kazoo::new(&zk.connect_string())?.with_timeout(Duration::from_secs(2));
    assert!(err.dump("/").is_err());
    Ok(())
}

#[test]
fn proxy_partitions_a_client_from_zookeeper() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let proxy = Proxy::start(zk.addr())?;
    let via = Kazoo::new(&proxy.connect_string())?;
    via.create("/p", "through the proxy")?;
    assert!(proxy.accepted() >= 1);

    proxy.cut()?;
    assert_eq!(proxy.mode(), ProxyMode::Cut);
    assert!(via.dump("/p").is_err(), "cut: ZooKeeper unreachable");
    proxy.restore()?;
    assert_eq!(
        via.dump("/p")?.and_then(|n| n.data),
        Some("through the proxy".into())
    );

    proxy.delay(Duration::from_millis(100))?;
    assert!(via.dump("/p")?.is_some(), "delayed traffic still flows");
    proxy.restore()?;
    Ok(())
}

#[test]
fn ensemble_survives_one_member_and_recovers_quorum() -> anyhow::Result<()> {
    let mut ens = Ensemble::start()?;
    assert_eq!(ens.len(), 3);
    let modes: Vec<_> = (0..3).filter_map(|i| ens.mode(i)).collect();
    assert_eq!(
        modes.iter().filter(|m| *m == "leader").count(),
        1,
        "{modes:?}"
    );

    let kz = Kazoo::new(&ens.connect_string())?;
    kz.create("/e", "1")?;
    let leader = (0..3)
        .find(|&i| ens.mode(i).as_deref() == Some("leader"))
        .expect("a leader");
    ens.stop(leader)?;
    let n = wait_until(
        Duration::from_secs(60),
        "the two survivors to serve",
        || {
            kz.dump("/e")
                .map_err(|e| e.to_string())?
                .ok_or("missing".into())
        },
    )?;
    assert_eq!(n.data.as_deref(), Some("1"));

    // Two down: no quorum, nobody serves.
    let other = (0..3).find(|&i| i != leader).expect("another member");
    ens.stop(other)?;
    wait_until(
        Duration::from_secs(30),
        "the last member to stop serving",
        || {
            let serving: Vec<_> = (0..3).filter(|&i| ens.mode(i).is_some()).collect();
            if serving.is_empty() {
                Ok(())
            } else {
                Err(format!("serving: {serving:?}"))
            }
        },
    )?;

    ens.start_member(leader)?;
    ens.start_member(other)?;
    for i in 0..3 {
        ens.wait_serving(i, Duration::from_secs(90))?;
    }
    assert_eq!(kz.dump("/e")?.and_then(|n| n.data).as_deref(), Some("1"));
    Ok(())
}

/// The agent helpers on one real pod: `/info`, SIGSTOP/SIGCONT, SIGKILL (which the process
/// group follows, but not a process that left it), and drop killing such an escaped orphan.
#[test]
fn agent_signals_and_drop_kills_orphans() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = PodSpec::new("e2e", "harness", &zk.connect_string())?;
    spec.command("setsid sleep 600 & exec sleep 600")
        .set("process", "shell", true);
    let mut agent = Agent::spawn(&spec)?;
    let info = agent.wait_info(Duration::from_secs(60), "process running", |i| {
        i.process == "running" && i.pid.is_some()
    })?;
    let sub = info.pid.expect("checked");
    let escaped = wait_until(Duration::from_secs(30), "the escaped child", || {
        let all = agent.descendants();
        match all.iter().find(|p| **p != sub) {
            Some(p) if all.contains(&sub) => Ok(*p),
            _ => Err(format!("descendants: {all:?}")),
        }
    })?;

    // Frozen: the kernel accepts the connection, nobody answers.
    agent.set_http_timeout(Duration::from_secs(1));
    agent.sigstop()?;
    assert!(agent.info().is_err(), "a stopped agent does not answer");
    agent.sigcont()?;
    agent.set_http_timeout(Duration::from_secs(10));
    agent.wait_info(Duration::from_secs(30), "answers again", |i| {
        i.pid == Some(sub)
    })?;

    // SIGKILL: the agent is gone and its process with it; the child that left the process
    // group (setsid) lives on as an orphan until drop.
    agent.kill9()?;
    assert!(!agent.is_alive());
    assert!(agent.info().is_err());
    wait_until(Duration::from_secs(30), "the sub-process to follow", || {
        if pid_alive(sub) {
            Err(format!("{sub} alive"))
        } else {
            Ok(())
        }
    })?;
    assert!(pid_alive(escaped), "the escaped orphan still runs");
    drop(agent);
    wait_until(Duration::from_secs(10), "drop to kill the orphan", || {
        if pid_alive(escaped) {
            Err(proc_state(escaped).map(String::from).unwrap_or_default())
        } else {
            Ok(())
        }
    })?;
    Ok(())
}
