//! ZooKeeper itself goes away. A standalone server restarted under
//! a settled cluster, and a three-node ensemble that loses one member, then its quorum. The
//! workload never stops because ZooKeeper is down, and nothing is reconfigured when nothing
//! changed. Only the order of events and loose bounds are asserted.

use ochopod_e2e::scenario::*;
use ochopod_e2e::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NS: &str = "resil";
const SETTLE: Duration = Duration::from_secs(120);

/// Start time of every pod's last round (by key): unchanged means no round ran anywhere.
fn rounds(s: &Settled) -> BTreeMap<String, Option<u64>> {
    s.infos
        .iter()
        .map(|i| (i.key.clone(), i.last_round.as_ref().map(|r| r.started_ms)))
        .collect()
}

fn seqs(s: &Settled) -> BTreeMap<String, Option<u64>> {
    s.infos.iter().map(|i| (i.key.clone(), i.seq)).collect()
}

/// Polls for `hold` that every agent keeps its process running with the same pid (the fault is
/// held for that long; the loop checks all along, it does not just sleep).
fn processes_keep_running(agents: &[Agent], pids: &BTreeMap<String, Option<u32>>, hold: Duration) {
    let start = Instant::now();
    while start.elapsed() < hold {
        for a in agents {
            let i = a.info().expect("the agent answers while ZooKeeper is down");
            assert_eq!(
                i.process, "running",
                "ZooKeeper down stopped a process: {i:?}"
            );
            assert_eq!(pids.get(&i.key), Some(&i.pid), "a process restarted: {i:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Scenario 6: the standalone server restarts (same port, same data) under a settled cluster:
/// every pod reconnects (or registers again with its key and seq), one pod leads, and no round
/// runs since nothing changed; no process restarts.
#[test]
fn standalone_restart_recovers_without_reconfiguring() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "zk-restart";
    let mut zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let agents: Vec<Agent> = (0..3)
        .map(|_| {
            let mut s = sleeper(NS, cluster, &zk.connect_string())?;
            // Pods come back one by one after an expiry: the damper lets the membership
            // return to the committed one before a round would start.
            s.set("model", "damper", 5.0);
            Ok(Agent::spawn(&s)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let before = wait_settled(&all, &kz, NS, cluster, SETTLE)?;

    zk.stop()?;
    let pids = before.pids();
    wait_until(
        Duration::from_secs(30),
        "every pod to see ZooKeeper gone",
        || {
            let states: Vec<String> = agents
                .iter()
                .map(|a| a.info().map(|i| i.zk).unwrap_or_default())
                .collect();
            if states.iter().all(|s| s != "connected") {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        },
    )?;
    processes_keep_running(&agents, &pids, Duration::from_secs(2));
    zk.start_again()?;
    let after = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert_eq!(after.pids(), pids, "no process restarted");
    assert_eq!(seqs(&after), seqs(&before), "same keys and seqs");
    assert_eq!(after.zk.hash_text(), before.zk.hash_text(), "same hash");
    assert_eq!(
        rounds(&after),
        rounds(&before),
        "no configuration round ran"
    );
    assert!(after.infos.iter().all(|i| i.zk == "connected"));
    let fence = fence_check(&zk.dir().join("data"), NS, cluster)?;
    assert!(fence.violations.is_empty(), "{:#?}", fence.violations);
    Ok(())
}

/// Scenario 7: a three-node ensemble. One member down: no disruption (same pod nodes, leader,
/// hash and pids). Quorum lost: every process keeps running; quorum back: the cluster settles
/// again with the same keys, seqs and processes.
#[test]
fn ensemble_member_loss_and_quorum_loss() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "ensemble";
    let mut ens = Ensemble::start()?;
    let hosts = ens.connect_string();
    let kz = Kazoo::new(&hosts)?;
    let agents: Vec<Agent> = (0..3)
        .map(|_| {
            let mut s = sleeper(NS, cluster, &hosts)?;
            s.set("model", "damper", 5.0);
            Ok(Agent::spawn(&s)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let before = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let pids = before.pids();
    let nodes = |s: &Settled| -> BTreeMap<String, String> {
        s.zk.pods
            .iter()
            .map(|(k, (_, n))| (k.clone(), n.name.clone()))
            .collect()
    };

    // One member down (the ensemble's own leader: the harder case).
    let zk_leader = (0..3)
        .find(|i| ens.mode(*i).as_deref() == Some("leader"))
        .unwrap_or(0);
    ens.stop(zk_leader)?;
    let others: Vec<usize> = (0..3).filter(|i| *i != zk_leader).collect();
    for i in &others {
        ens.wait_serving(*i, Duration::from_secs(60))?;
    }
    processes_keep_running(&agents, &pids, Duration::from_secs(4));
    let one_down = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert_eq!(nodes(&one_down), nodes(&before), "no pod registered again");
    assert_eq!(one_down.leader, before.leader, "same leader");
    assert_eq!(one_down.zk.hash_text(), before.zk.hash_text());
    assert_eq!(rounds(&one_down), rounds(&before), "no round ran");
    assert_eq!(one_down.pids(), pids);

    // Quorum lost: two of three down.
    ens.stop(others[0])?;
    wait_until(
        Duration::from_secs(30),
        "every pod to lose ZooKeeper",
        || {
            let states: Vec<String> = agents
                .iter()
                .map(|a| a.info().map(|i| i.zk).unwrap_or_default())
                .collect();
            if states.iter().all(|s| s != "connected") {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        },
    )?;
    // Held past the 3 s session timeout: the workload must not notice.
    processes_keep_running(&agents, &pids, Duration::from_secs(8));
    ens.start_member(zk_leader)?;
    ens.start_member(others[0])?;
    for i in 0..3 {
        ens.wait_serving(i, Duration::from_secs(90))?;
    }
    let after = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert_eq!(after.pids(), pids, "no process restarted");
    assert_eq!(seqs(&after), seqs(&before), "same keys and seqs");
    assert_eq!(after.zk.hash_text(), before.zk.hash_text(), "same hash");
    Ok(())
}
