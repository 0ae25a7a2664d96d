//! Rust pods and an Ochopod 1.x pod form ONE cluster (`docs/protocol.md`, 1.x compatible).
//!
//! The 1.x pod is our own `tests/py/pod1x.py` (kazoo registration without `protocol`, kazoo's
//! Lock recipe, 1.x control routes, optionally a minimal 1.x leader). The Rust pods are real
//! `ochopod run` agents. Everything is observed from the outside: kazoo reads of ZooKeeper, the
//! calls the 1.x pod recorded, `/info`, and the files the Rust pods rendered.
//! Real ZooKeeper (100 ms tick), 3 s sessions; order of events and loose bounds only.

use ochopod_e2e::interop::{Call, Pod1x};
use ochopod_e2e::*;
use std::collections::BTreeSet;
use std::time::Duration;

const NS: &str = "interop";
const SETTLE: Duration = Duration::from_secs(90);
/// Each Rust pod renders one line per member: `<key> <ip>:<control host port>`.
const MEMBERS: &str = "{% for key, pod in cluster.pods|items %}{{ key }} {{ pod.ip }}:{{ pod.ports[pod.port] }}\n{% endfor %}";

fn rust_pod(zk: &str, cluster: &str) -> anyhow::Result<Agent> {
    let mut spec = PodSpec::new(NS, cluster, zk)?;
    spec.command("sleep 3600")
        .set("model", "control_timeout", 10.0)
        .set("process", "grace", 2.0)
        .template("members.txt.j2", MEMBERS, "members.txt");
    Ok(Agent::spawn(&spec)?)
}

/// The members a Rust pod rendered, sorted.
fn members(agent: &Agent) -> BTreeSet<String> {
    std::fs::read_to_string(agent.dir().join("members.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn member_line(key: &str, port: u16) -> String {
    format!("{key} 127.0.0.1:{port}")
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The last `task` call, and its position.
fn last_call(calls: &[Call], task: &str) -> Option<(usize, Call)> {
    calls
        .iter()
        .enumerate()
        .rev()
        .find(|(_, c)| c.task == task)
        .map(|(i, c)| (i, c.clone()))
}

/// The leader among `agents` by `/info` (errors when none or several lead).
fn rust_leaders(agents: &[&Agent]) -> Result<Vec<usize>, String> {
    let mut leaders = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let info = a.info().map_err(|e| e.to_string())?;
        if info.state.starts_with("leader") {
            leaders.push(i);
        }
    }
    Ok(leaders)
}

/// A Rust pod leads; a 1.x pod joins: it is configured like any member (check, on, ok with the
/// whole cluster in the body and the leader's epoch), the Rust pods render it, the snapshot and
/// hash are written. Garbage written under `pods/` by kazoo is skipped.
#[test]
fn rust_leader_configures_a_1x_member() -> anyhow::Result<()> {
    let cluster = "mixed";
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let pods_dir = format!("{}/pods", Kazoo::cluster_path(NS, cluster));
    let garbage = [
        ("garbage-node", "x"),
        (
            "0badc0de-0000-4000-8000-000000000001.0000000777",
            "{not json",
        ),
        (
            "0badc0de-0000-4000-8000-000000000002.0000000778",
            r#"["a list"]"#,
        ),
    ];
    for (name, data) in garbage {
        kz.create(&format!("{pods_dir}/{name}"), data)?;
    }

    // The Rust pods come first, so one of them takes the lock.
    let rust: Vec<Agent> = (0..2)
        .map(|_| rust_pod(&zk.connect_string(), cluster))
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = rust.iter().collect();
    wait_until(SETTLE, "a Rust pod to lead", || {
        let leaders = rust_leaders(&all)?;
        (leaders.len() == 1)
            .then_some(())
            .ok_or_else(|| describe(&all))
    })?;
    let pod1x = Pod1x::spawn(&zk.connect_string(), NS, cluster, false)?;

    let expected: BTreeSet<String> = rust
        .iter()
        .map(|a| a.info().map(|i| member_line(&i.key, a.port())))
        .chain([Ok(member_line(pod1x.key(), pod1x.port()))])
        .collect::<Result<_, _>>()?;
    let (leader, state) = wait_until_with(
        SETTLE,
        Duration::from_millis(300),
        "one configured cluster of two Rust pods and the 1.x pod",
        || {
            let leaders = rust_leaders(&all)?;
            let infos: Vec<Info> = all
                .iter()
                .map(|a| a.info().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            let state = ClusterZk::read(&kz, NS, cluster)?;
            let files: Vec<BTreeSet<String>> = rust.iter().map(members).collect();
            let pod1x_on = last_call(&pod1x.calls(), "ok").map(|(_, c)| c.pod_keys().len());
            let done = leaders.len() == 1
                && infos[leaders[0]].state == "leader"
                && infos.iter().all(|i| i.process == "running")
                && state.snapshot_keys().len() == 3
                && files.iter().all(|f| *f == expected)
                && pod1x_on == Some(3);
            if done {
                Ok((leaders[0], state))
            } else {
                Err(format!(
                    "snapshot={:?} files={files:?} pod1x ok with {pod1x_on:?} pods | {}",
                    state.snapshot_keys(),
                    describe(&all)
                ))
            }
        },
    )?;

    // The 1.x pod was configured like any member: check, on, ok, in that order, each with every
    // pod (Rust and 1.x), its own key, whole seconds in the URL and the leader's epoch.
    let leader_info = rust[leader].info()?;
    let keys: BTreeSet<String> = state.pod_keys();
    assert!(
        keys.contains(pod1x.key()),
        "the 1.x pod is registered: {keys:?}"
    );
    assert_eq!(keys.len(), 3, "three pods: {keys:?}");
    let calls = pod1x.calls();
    let (ok_at, ok) = last_call(&calls, "ok").expect("an ok");
    let (on_at, on) = last_call(&calls[..ok_at], "on").expect("an on before the ok");
    let (_, check) = last_call(&calls[..on_at], "check").expect("a check before the on");
    let epoch = format!(
        "{}-{}",
        state.coordinator_czxid.expect("coordinator"),
        state.contenders[0]
            .name
            .rsplit_once("__lock__")
            .map(|(_, s)| s.parse::<u64>().expect("lock seq"))
            .expect("a kazoo-style contender")
    );
    for call in [&check, &on, &ok] {
        assert_eq!(
            call.pod_keys(),
            keys,
            "{} lists every pod: {:?}",
            call.task,
            call.body
        );
        assert_eq!(
            call.body["key"],
            pod1x.key(),
            "{} names its receiver",
            call.task
        );
        assert!(
            call.timeout.is_some(),
            "{}: whole seconds in the URL",
            call.task
        );
        assert_eq!(call.epoch.as_deref(), Some(epoch.as_str()), "{}", call.task);
    }
    let mine = &on.body["pods"][pod1x.key()];
    assert_eq!(mine["ports"]["8080"], u64::from(pod1x.port()), "{mine}");
    assert_eq!(mine["port"], "8080");
    assert!(
        mine.get("protocol").is_none(),
        "a 1.x registration has no protocol: {mine}"
    );
    for r in &rust {
        let key = r.info()?.key;
        assert!(
            on.body["pods"][&key]["protocol"].is_u64(),
            "Rust pods say their protocol"
        );
    }

    // Snapshot (ephemeral, the leader's) and hash (64 hex, persistent) list the 1.x pod.
    let (snap, snap_node) = state.snapshot.as_ref().expect("snapshot");
    let leader_session = state.session_of(&leader_info.key);
    assert_eq!(
        Some(snap_node.ephemeral_owner),
        leader_session,
        "snapshot owned by the leader"
    );
    assert_eq!(
        state.holder_session(),
        leader_session,
        "the leader holds the lock"
    );
    assert_eq!(snap[pod1x.key()]["ports"]["8080"], u64::from(pod1x.port()));
    assert_eq!(
        snap[pod1x.key()]["seq"],
        pod1x.seq(),
        "a 1.x pod's seq is its node's counter"
    );
    let hash = state.hash_text().unwrap_or_default();
    assert!(is_hex(&hash, 64), "hash {hash:?}");

    // The garbage is still there, skipped and logged, never in the snapshot.
    assert_eq!(state.foreign.len(), garbage.len(), "{:?}", state.foreign);
    assert!(snap
        .as_object()
        .is_some_and(|o| o.keys().all(|k| !k.starts_with("0badc0de"))));
    let log = std::fs::read_to_string(rust[leader].log_path())?;
    for (name, _) in garbage {
        assert!(
            log.contains(name),
            "the leader's log does not mention {name}"
        );
    }
    Ok(())
}

/// The 1.x pod takes the lock first and leads (a minimal 1.x leader): the Rust contenders wait
/// as followers and obey it (no epoch header); once it releases the lock a Rust pod leads and
/// configures all three; once it dies the Rust leader drops it.
#[test]
fn rust_contenders_wait_behind_a_1x_leader() -> anyhow::Result<()> {
    let cluster = "mixed1x";
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let pod1x = Pod1x::spawn(&zk.connect_string(), NS, cluster, true)?;
    wait_until(SETTLE, "the 1.x pod to hold the lock", || {
        match pod1x.is_leading() {
            Ok(true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })?;
    let rust: Vec<Agent> = (0..2)
        .map(|_| rust_pod(&zk.connect_string(), cluster))
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = rust.iter().collect();
    let mut keys: BTreeSet<String> = BTreeSet::from([pod1x.key().to_string()]);
    let mut expected: BTreeSet<String> = BTreeSet::from([member_line(pod1x.key(), pod1x.port())]);

    // 1. The 1.x leader configures the Rust pods; three contenders, the 1.x one first; no Rust
    //    pod ever says leader meanwhile.
    let mut rust_led = None;
    let before = wait_until_with(
        SETTLE,
        Duration::from_millis(300),
        "the 1.x leader to configure both Rust pods",
        || {
            let infos: Vec<Info> = all
                .iter()
                .map(|a| a.info().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            if let Some(i) = infos.iter().find(|i| i.state != "follower") {
                rust_led.get_or_insert(format!("{}: {}", i.key, i.state));
            }
            for (a, i) in all.iter().zip(&infos) {
                keys.insert(i.key.clone());
                expected.insert(member_line(&i.key, a.port()));
            }
            let state = ClusterZk::read(&kz, NS, cluster)?;
            let files: Vec<BTreeSet<String>> = rust.iter().map(members).collect();
            let done = infos.iter().all(|i| i.process == "running")
                && state.contenders.len() == 3
                && state.snapshot_keys() == keys
                && files.iter().all(|f| *f == expected);
            if done {
                Ok(state)
            } else {
                Err(format!(
                    "contenders={} snapshot={:?} files={files:?} | {}",
                    state.contenders.len(),
                    state.snapshot_keys(),
                    describe(&all)
                ))
            }
        },
    )?;
    assert_eq!(
        rust_led, None,
        "a Rust pod led while the 1.x pod held the lock"
    );
    assert_eq!(
        before.contenders[0].data.as_deref(),
        Some(pod1x.key()),
        "1.x holds the lock"
    );
    assert_eq!(before.holder_session(), before.session_of(pod1x.key()));
    let md5 = before.hash_text().unwrap_or_default();
    assert!(
        is_hex(&md5, 32),
        "the 1.x leader writes an MD5 hash: {md5:?}"
    );
    // A window of samples (a count, not a timing): still followers behind the 1.x holder.
    for _ in 0..20 {
        for a in &all {
            assert_eq!(a.info()?.state, "follower", "{}", describe(&all));
        }
        assert!(pod1x.is_leading()?, "the 1.x pod keeps the lock");
        std::thread::sleep(Duration::from_millis(100));
    }

    // 2. The 1.x pod releases the lock (and stays registered): a Rust pod leads and configures
    //    all three, with its epoch; never two leaders at once.
    let calls_before = pod1x.calls().len();
    pod1x.release()?;
    let mut both = None;
    let (leader, after) = wait_until_with(
        SETTLE,
        Duration::from_millis(300),
        "a Rust pod to lead and configure the three pods",
        || {
            let leaders = rust_leaders(&all)?;
            if !leaders.is_empty() && pod1x.is_leading().unwrap_or(false) {
                both.get_or_insert(leaders.clone());
            }
            let state = ClusterZk::read(&kz, NS, cluster)?;
            let fresh: Vec<Call> = pod1x.calls().split_off(calls_before);
            let configured = fresh
                .iter()
                .any(|c| c.task == "ok" && c.epoch.is_some() && c.pod_keys() == keys);
            let hash = state.hash_text().unwrap_or_default();
            if leaders.len() == 1 && configured && state.snapshot_keys() == keys && hash.len() == 64
            {
                Ok((leaders[0], state))
            } else {
                Err(format!(
                    "leaders={leaders:?} hash={hash} new calls={} | {}",
                    fresh.len(),
                    describe(&all)
                ))
            }
        },
    )?;
    assert_eq!(both, None, "a Rust pod and the 1.x pod led at once");
    let leader_key = rust[leader].info()?.key;
    assert_eq!(after.holder_session(), after.session_of(&leader_key));
    assert_eq!(
        after.snapshot.as_ref().map(|(_, n)| n.ephemeral_owner),
        after.session_of(&leader_key),
        "the Rust leader rewrote the snapshot"
    );
    assert!(!pod1x.is_leading()?);

    // 3. The 1.x pod dies: its nodes go with its session, the Rust leader drops it.
    pod1x.kill9()?;
    keys.remove(pod1x.key());
    expected.remove(&member_line(pod1x.key(), pod1x.port()));
    wait_until_with(
        SETTLE,
        Duration::from_millis(300),
        "the Rust pods to reconfigure without the dead 1.x pod",
        || {
            let state = ClusterZk::read(&kz, NS, cluster)?;
            let files: Vec<BTreeSet<String>> = rust.iter().map(members).collect();
            if state.snapshot_keys() == keys
                && state.pod_keys() == keys
                && files.iter().all(|f| *f == expected)
            {
                Ok(())
            } else {
                Err(format!(
                    "snapshot={:?} files={files:?} | {}",
                    state.snapshot_keys(),
                    describe(&all)
                ))
            }
        },
    )?;
    // The snapshot is written before the leader's round ends: wait for it to be at rest (one
    // clean `leader`, not `leader (configuring)`), still the same pod.
    let rest = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert_eq!(rest.leader, leader, "{}", describe(&all));
    assert_eq!(rest.leader_info().state, "leader");
    Ok(())
}

/// The `on` calls a 1.x pod received whose view holds every key of `keys`.
fn configured_with(pod: &Pod1x, keys: &BTreeSet<String>) -> bool {
    pod.calls()
        .iter()
        .any(|c| c.task == "on" && keys.is_subset(&c.pod_keys()))
}

/// 1.x pods join a Rust leader the way 1.x registers (its node created EMPTY, its payload set
/// 0, 20 and 200 ms later) and re-queue their lock every 5 s as 1.x's `lock.acquire(timeout=5)`
/// loop does: the leader configures every one of them, whenever it read their node; a node that
/// stays malformed shows in the leader's `/info` as `unreadable`, and lock churn is no
/// membership change.
#[test]
fn rust_leader_configures_1x_pods_whatever_their_registration_gap() -> anyhow::Result<()> {
    let cluster = "gaps";
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let leader = rust_pod(&zk.connect_string(), cluster)?;
    leader.wait_info(SETTLE, "the Rust pod to lead, configured", |i| {
        i.state == "leader" && i.process == "running"
    })?;
    let garbage = "0badc0de-0000-4000-8000-000000000003.0000000999";
    let pods_dir = format!("{}/pods", Kazoo::cluster_path(NS, cluster));
    kz.create(&format!("{pods_dir}/{garbage}"), "{not json")?;

    let pods: Vec<Pod1x> = [0, 20, 200]
        .into_iter()
        .map(|ms| {
            Pod1x::spawn_with_gap(
                &zk.connect_string(),
                NS,
                cluster,
                false,
                Duration::from_millis(ms),
            )
        })
        .collect::<Result<_, _>>()?;
    let leader_key = leader.info()?.key;
    let keys: BTreeSet<String> = pods
        .iter()
        .map(|p| p.key().to_string())
        .chain([leader_key.clone()])
        .collect();
    let expected: BTreeSet<String> = pods
        .iter()
        .map(|p| member_line(p.key(), p.port()))
        .chain([member_line(&leader_key, leader.port())])
        .collect();
    wait_until(
        SETTLE,
        "every 1.x pod configured with the whole cluster",
        || {
            let missing: Vec<&str> = pods
                .iter()
                .filter(|p| !configured_with(p, &keys))
                .map(Pod1x::key)
                .collect();
            // The round that configured them is over (calls are recorded while it runs).
            let round_over = leader.info().is_ok_and(|i| {
                i.state == "leader"
                    && i.pending_ms.is_none()
                    && i.last_round.is_some_and(|r| {
                        r.outcome == "ok" && keys.iter().all(|k| r.answers.contains_key(k))
                    })
            });
            if missing.is_empty() && members(&leader) == expected && round_over {
                Ok(())
            } else {
                Err(format!(
                    "not configured: {missing:?}; rendered {:?}; leader {}",
                    members(&leader),
                    leader.summary()
                ))
            }
        },
    )?;
    // The malformed node is visible to operators, and only it.
    let info = leader.info_json()?;
    let unreadable = info["unreadable"].as_object().cloned().unwrap_or_default();
    assert_eq!(
        unreadable.keys().collect::<Vec<_>>(),
        vec![garbage],
        "{info:#}"
    );
    assert!(
        unreadable[garbage]
            .as_str()
            .is_some_and(|w| w.contains("malformed")),
        "{info:#}"
    );

    // Lock churn: each 1.x pod's lock node is deleted and created again every 5 s; the leader
    // stays, and runs no round for it.
    let before_info = leader.info()?;
    let before = before_info.last_round.as_ref().map(|r| r.started_ms);
    wait_until(SETTLE, "a 1.x pod to re-queue its lock", || {
        let n = pods[0].info().map_err(|e| e.to_string())?["lock_nodes"]
            .as_u64()
            .unwrap_or(0);
        (n >= 2).then_some(()).ok_or(format!("{n} lock nodes"))
    })?;
    let after = leader.info()?;
    assert_eq!(after.state, "leader", "{after:?}");
    assert_eq!(
        after.last_round.as_ref().map(|r| r.started_ms),
        before,
        "no round for lock churn: before {before_info:#?} after {:#?}",
        leader.info()?
    );
    Ok(())
}

/// A node left empty for seconds (a slow 1.x pod) is listed as `unreadable` on the leader, then
/// configured as soon as its payload lands: never judged for good on one read.
#[test]
fn an_empty_registration_is_unreadable_until_its_payload_lands() -> anyhow::Result<()> {
    let cluster = "slowjoin";
    let zk = ZkServer::start()?;
    let leader = rust_pod(&zk.connect_string(), cluster)?;
    leader.wait_info(SETTLE, "the Rust pod to lead, configured", |i| {
        i.state == "leader" && i.process == "running"
    })?;
    let hosts = zk.connect_string();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let joining = s
            .spawn(|| Pod1x::spawn_with_gap(&hosts, NS, "slowjoin", false, Duration::from_secs(4)));
        let why = wait_until(SETTLE, "the empty node listed as unreadable", || {
            let info = leader.info_json().map_err(|e| e.to_string())?;
            info["unreadable"]
                .as_object()
                .and_then(|m| m.values().next())
                .and_then(|w| w.as_str())
                .map(str::to_string)
                .ok_or(format!("{info}"))
        })?;
        assert!(why.contains("empty"), "{why}");
        let pod = joining.join().expect("spawn thread")?;
        let keys: BTreeSet<String> = [pod.key().to_string(), leader.info()?.key].into();
        wait_until(SETTLE, "the late 1.x pod configured", || {
            if configured_with(&pod, &keys) {
                Ok(())
            } else {
                Err(leader.summary())
            }
        })?;
        let info = leader.info_json()?;
        assert!(info.get("unreadable").is_none(), "{info:#}");
        Ok(())
    })
}

/// A 1.x leader (no epoch header) configures a Rust pod with `start = false`: its view-carrying
/// `on` only configures; an operator's empty `on` starts the process, without re-rendering.
#[test]
fn start_false_holds_a_1x_leaders_on_and_an_empty_on_starts() -> anyhow::Result<()> {
    let cluster = "startfalse";
    let zk = ZkServer::start()?;
    let pod1x = Pod1x::spawn(&zk.connect_string(), NS, cluster, true)?;
    wait_until(SETTLE, "the 1.x pod to lead", || {
        pod1x
            .is_leading()
            .map_err(|e| e.to_string())?
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })?;
    let mut spec = PodSpec::new(NS, cluster, &zk.connect_string())?;
    spec.command("sleep 3600")
        .set("pod", "start", false)
        .set("process", "grace", 2.0)
        .template("members.txt.j2", MEMBERS, "members.txt");
    let rust = Agent::spawn(&spec)?;
    let key = rust
        .wait_info(SETTLE, "registered", |i| i.seq.is_some())?
        .key;
    let both: BTreeSet<String> = [key.clone(), pod1x.key().to_string()].into();
    // The 1.x leader's round reached the Rust pod: rendered, not started.
    wait_until(SETTLE, "the Rust pod configured by the 1.x leader", || {
        let m = members(&rust);
        if m.len() == 2 && configured_with(&pod1x, &both) {
            Ok(())
        } else {
            Err(format!("{m:?}; {}", rust.summary()))
        }
    })?;
    let held = rust.info()?;
    assert_eq!(
        (held.process.as_str(), held.pid),
        ("stopped", None),
        "{held:?}"
    );

    // An operator's empty `on`: started, from the last rendering (not rendered again).
    std::fs::remove_file(rust.dir().join("members.txt"))?;
    let r = rust.control("on", Some(30), None)?;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["pid"].is_u64(), "{r:?}");
    let started = rust.info()?;
    assert_eq!(started.process, "running");
    assert!(
        !rust.dir().join("members.txt").exists(),
        "an empty on does not render"
    );
    // Running: an empty `on` does nothing.
    let r = rust.control("on", Some(30), Some(&serde_json::json!({})))?;
    assert_eq!((r.status, &r.body), (200, &serde_json::json!({})), "{r:?}");
    assert_eq!(rust.info()?.pid, started.pid);
    Ok(())
}
