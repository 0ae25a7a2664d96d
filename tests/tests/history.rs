//! The round history on real agents: each leader appends its rounds to the cluster's
//! `history` node, `ochopod history` shows them, and they outlive the leader that ran them.

use ochopod_e2e::scenario::*;
use ochopod_e2e::tools::{ochopod_cli, Output};
use ochopod_e2e::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const NS: &str = "history";
const WAIT: Duration = Duration::from_secs(120);

fn cli(zk: &str, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--zk", zk]);
    ochopod_cli(&all, &[], Duration::from_secs(60)).expect("the ochopod command ran")
}

fn rounds(zk: &str) -> Vec<Value> {
    let out = cli(zk, &["history", &format!("{NS}.web"), "--json"]);
    assert!(out.success(), "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).expect("history --json is JSON");
    assert_eq!(v["cluster"], format!("{NS}.web"));
    v["rounds"].as_array().cloned().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rounds_are_recorded_with_why_and_survive_a_leader_change() -> anyhow::Result<()> {
    let _one = serial();
    let zk = ZkServer::start()?;
    let zs = zk.connect_string();
    let kz = Kazoo::new(&zs)?;
    let spec = || -> anyhow::Result<PodSpec> {
        let mut s = sleeper(NS, "web", &zs)?;
        s.set("model", "damper", 1.0);
        Ok(s)
    };
    assert!(cli(&zs, &["history", &format!("{NS}.web")]).code() == Some(2));
    let mut agents: Vec<Agent> = (0..2)
        .map(|_| Agent::spawn(&spec()?).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    {
        let all: Vec<&Agent> = agents.iter().collect();
        wait_settled(&all, &kz, NS, "web", WAIT)?;
    }
    agents.push(Agent::spawn(&spec()?)?);
    let settled = {
        let all: Vec<&Agent> = agents.iter().collect();
        wait_settled(&all, &kz, NS, "web", WAIT)?
    };
    let first_leader = settled.leader_info().key.clone();
    let newcomer = agents[2].info()?.key;
    let hash = settled.zk.hash_text().expect("committed");

    // The round that configured the newcomer: why `joined`, by the first leader, its hash.
    let joined = wait_until(WAIT, "the joined round in the history", || {
        rounds(&zs)
            .into_iter()
            .find(|r| strings(&r["joined"]) == [newcomer.clone()] && r["outcome"] == "ok")
            .ok_or_else(|| format!("{:?}", rounds(&zs)))
    })?;
    assert!(
        strings(&joined["why"]).contains(&"joined".to_string()),
        "{joined}"
    );
    assert_eq!(joined["leader"], first_leader.as_str());
    assert_eq!(joined["hash"], hash.as_str());
    assert_eq!(strings(&joined["pods"]).len(), 3);
    let text = cli(&zs, &["history", &format!("{NS}.web")]);
    assert!(
        text.success() && text.stdout.contains("why=joined") && text.stdout.contains("ok"),
        "{text:?}"
    );

    // The leader dies; its successor's rounds are appended after the earlier ones.
    agents[settled.leader].kill9()?;
    let survivors: Vec<&Agent> = agents
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != settled.leader)
        .map(|(_, a)| a)
        .collect();
    let keys: BTreeSet<String> = survivors
        .iter()
        .map(|a| a.info().map(|i| i.key))
        .collect::<Result<_, _>>()?;
    let all = wait_until(WAIT, "the new leader's round in the history", || {
        let all = rounds(&zs);
        let found = all.iter().any(|r| {
            r["leader"] != first_leader.as_str()
                && r["outcome"] == "ok"
                && strings(&r["pods"]).into_iter().collect::<BTreeSet<_>>() == keys
        });
        if found {
            Ok(all)
        } else {
            Err(format!("{all:?}"))
        }
    })?;
    let pos = |pred: &dyn Fn(&Value) -> bool| all.iter().position(pred);
    let old = pos(&|r| r == &joined).expect("the earlier leader's round is kept");
    let new = pos(&|r| r["leader"] != first_leader.as_str()).expect("the new leader's round");
    assert!(old < new, "oldest first");
    assert!(all
        .windows(2)
        .all(|w| w[0]["started_ms"].as_u64() <= w[1]["started_ms"].as_u64()));
    Ok(())
}
