//! Pausing a cluster (maintenance mode) with `ochopod pause` / `ochopod resume` on real agents
//! and a real ZooKeeper: while paused the leader tracks a pod joining but configures nobody,
//! and the pause holds across a leader kill and an agent restart; resuming runs one round.

use ochopod_e2e::scenario::*;
use ochopod_e2e::tools::{ochopod_cli, Output};
use ochopod_e2e::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const NS: &str = "pause";
const WAIT: Duration = Duration::from_secs(120);
const CLI: Duration = Duration::from_secs(60);

fn cli(zk: &str, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--zk", zk]);
    ochopod_cli(&all, &[], CLI).expect("the ochopod command ran")
}

fn ok(zk: &str, args: &[&str]) -> String {
    let out = cli(zk, args);
    assert!(out.success(), "{args:?}: {out:?}");
    out.stdout
}

/// Waits until exactly one of the live `agents` leads and `pred` holds for its /info; returns
/// its index and /info.
fn wait_leader(agents: &[&Agent], what: &str, pred: impl Fn(&Info) -> bool) -> (usize, Info) {
    wait_until(WAIT, what, || {
        let mut leaders = Vec::new();
        for (i, a) in agents.iter().enumerate() {
            if !a.is_alive() {
                continue;
            }
            if let Ok(info) = a.info() {
                if is_leader(&info) {
                    leaders.push((i, info));
                }
            }
        }
        match leaders.as_slice() {
            [(i, info)] if pred(info) => Ok((*i, info.clone())),
            _ => Err(describe(agents)),
        }
    })
    .expect("the leader reached the expected state")
}

fn paused_with(info: &Info, reason: &str) -> bool {
    info.state == "leader (paused)" && info.paused.as_ref().is_some_and(|p| p.reason == reason)
}

#[test]
fn a_pause_holds_across_a_leader_kill_and_an_agent_restart_and_resume_runs_one_round(
) -> anyhow::Result<()> {
    let _one = serial();
    let zk = ZkServer::start()?;
    let zs = zk.connect_string();
    let kz = Kazoo::new(&zs)?;
    let spec = || -> anyhow::Result<PodSpec> {
        let mut s = sleeper(NS, "web", &zs)?;
        s.set("model", "damper", 1.0);
        Ok(s)
    };
    let mut agents: Vec<Agent> = (0..3)
        .map(|_| Agent::spawn(&spec()?).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    let settled = {
        let all: Vec<&Agent> = agents.iter().collect();
        wait_settled(&all, &kz, NS, "web", WAIT)?
    };
    let h0 = settled
        .zk
        .hash_text()
        .expect("a settled cluster has a hash");

    // A glob matching two clusters needs --yes without a terminal; with it, both pause.
    kz.create(&format!("/ochopod/clusters/{NS}.webcache"), "")?;
    let out = cli(
        &zs,
        &["pause", &format!("{NS}.web*"), "--reason", "disk swap"],
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--yes"), "{out:?}");
    let said = ok(
        &zs,
        &[
            "pause",
            &format!("{NS}.web*"),
            "--reason",
            "disk swap",
            "--yes",
        ],
    );
    assert_eq!(
        said,
        format!("{NS}.web paused (disk swap)\n{NS}.webcache paused (disk swap)\n")
    );
    let node = kz
        .dump(&format!("/ochopod/clusters/{NS}.webcache/pause"))?
        .expect("the pause node is written");
    assert_eq!(node.json()?["reason"], "disk swap");

    let all: Vec<&Agent> = agents.iter().collect();
    let (l0, _) = wait_leader(&all, "the leader to see the pause", |i| {
        paused_with(i, "disk swap") && i.paused.as_ref().is_some_and(|p| !p.pending)
    });

    // A pod joins: tracked and reported, never configured.
    agents.push(Agent::spawn(&spec()?)?);
    let newcomer = agents[3]
        .wait_info(WAIT, "the newcomer to register", |i| i.seq.is_some())?
        .key;
    let all: Vec<&Agent> = agents.iter().collect();
    wait_leader(&all, "the paused leader to report the newcomer", |i| {
        paused_with(i, "disk swap")
            && i.paused.as_ref().is_some_and(|p| {
                p.pending && p.known && p.joined == vec![newcomer.clone()] && p.left.is_empty()
            })
            && i.status.contains("(disk swap): pending 1 joined")
    });

    // The leader dies: its successor reads the pause at election.
    agents[l0].kill9()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let (l1, _) = wait_leader(&all, "a new leader, still paused", |i| {
        paused_with(i, "disk swap") && i.paused.as_ref().is_some_and(|p| p.pending)
    });
    assert_ne!(l1, l0);

    // An agent restarts (the new leader's): the pause is still in ZooKeeper for whoever leads.
    agents[l1].kill9()?;
    agents[l1].wait_exit(WAIT)?;
    agents[l1].respawn()?;
    let all: Vec<&Agent> = agents.iter().collect();
    // Paused and dirty for three dampers: no round may have started.
    let (l2, _) = wait_leader(&all, "a leader paused for three dampers", |i| {
        paused_with(i, "disk swap") && i.pending_ms.is_some_and(|ms| ms >= 3000)
    });
    let zk_now = ClusterZk::read(&kz, NS, "web").map_err(anyhow::Error::msg)?;
    assert_eq!(
        zk_now.hash_text().as_deref(),
        Some(h0.as_str()),
        "no round committed"
    );
    let nc = agents[3].info()?;
    assert_ne!(nc.process, "running", "the newcomer was never configured");

    // `ls` says so, in text and JSON.
    let text = ok(&zs, &["ls", &format!("{NS}.web")]);
    assert!(
        text.contains("leader (paused)") && text.contains("(disk swap)"),
        "{text}"
    );
    let rows: Value = serde_json::from_str(&ok(&zs, &["ls", &format!("{NS}.web"), "--json"]))?;
    let leader_key = agents[l2].info()?.key;
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["key"] == leader_key.as_str()))
        .expect("the leader's row");
    assert_eq!(row["paused"]["reason"], "disk swap", "{row}");

    // Resume: one round configures every live pod.
    assert_eq!(
        ok(&zs, &["resume", &format!("{NS}.web")]),
        format!("{NS}.web resumed\n")
    );
    let live: Vec<&Agent> = agents
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != l0)
        .map(|(_, a)| a)
        .collect();
    let keys: BTreeSet<String> = live
        .iter()
        .map(|a| a.info().map(|i| i.key))
        .collect::<Result<_, _>>()?;
    let (_, info) = wait_leader(&live, "the resumed leader to configure every pod", |i| {
        i.state == "leader" && i.paused.is_none() && accepted(i).as_ref() == Some(&keys)
    });
    assert!(info.status.is_empty() || !info.status.contains("paused"));
    agents[3].wait_info(WAIT, "the newcomer to run", |i| i.process == "running")?;
    let zk_after = ClusterZk::read(&kz, NS, "web").map_err(anyhow::Error::msg)?;
    assert_ne!(zk_after.hash_text().as_deref(), Some(h0.as_str()));
    // The other cluster is still paused.
    assert!(kz
        .dump(&format!("/ochopod/clusters/{NS}.webcache/pause"))?
        .is_some());
    Ok(())
}
