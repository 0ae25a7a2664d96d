//! Clusters on a real ZooKeeper with real `ochopod run` agents: dependencies (a chain, a
//! wildcard, a dependency cluster created after its dependent), `/reset` keeping key and seq, a
//! stale leader epoch refused with 409, and an idle cluster that sends ZooKeeper nothing but
//! session pings (`docs/protocol.md`, `docs/http.md`).
//!
//! Observed from the outside: kazoo reads, `/info`, rendered files, ZooKeeper's `mntr` and `cons`.
//! 100 ms tick, 3 s sessions; the order of events and loose bounds only. The scenarios run one
//! at a time so a shared 2-core machine keeps every bound loose enough.

use ochopod_e2e::interop::{cons, mntr, Connection};
use ochopod_e2e::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const NS: &str = "deps";
const SETTLE: Duration = Duration::from_secs(90);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A pod whose process is `sleep 3600` (any pid change is a restart), with its container port
/// 9000 mapped to a free host port, which it returns.
fn sleeper(zk: &str, cluster: &str) -> anyhow::Result<(PodSpec, u16)> {
    let mut spec = PodSpec::new(NS, cluster, zk)?;
    let port = free_port()?;
    spec.command("sleep 3600")
        .port(9000, port)
        .set("model", "control_timeout", 10.0)
        .set("process", "grace", 2.0)
        .set("hooks", "timeout", 20.0);
    Ok((spec, port))
}

/// A pod of `cluster` depending on `dep`, rendering `grep(dep, 9000)` into `grep.txt`.
fn dependent(zk: &str, cluster: &str, dep: &str) -> anyhow::Result<Agent> {
    let (mut spec, _) = sleeper(zk, cluster)?;
    spec.set(
        "model",
        "depends_on",
        toml::Value::Array(vec![toml::Value::String(dep.into())]),
    )
    .template(
        "grep.txt.j2",
        &format!("{{{{ grep(\"{dep}\", 9000) }}}}"),
        "grep.txt",
    );
    Ok(Agent::spawn(&spec)?)
}

/// What `grep.txt` holds: `None` before the first render, else its `ip:port` entries.
fn grepped(agent: &Agent) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(agent.dir().join("grep.txt")).ok()?;
    Some(
        text.trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn addrs(ports: &[u16]) -> BTreeSet<String> {
    ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
}

/// The lb cluster starts first and configures with an empty view of `web`; `web` is created
/// afterwards and lb picks it up; when web reconfigures for a second pod, lb re-renders with the
/// new `grep("web", 9000)`, only after web's snapshot lists it.
#[test]
fn dependency_created_after_its_dependent_then_a_chain_reconfigures() -> anyhow::Result<()> {
    let _one = serial();
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let lb = dependent(&zk.connect_string(), "lb", "web")?;
    let first = wait_settled(&[&lb], &kz, NS, "lb", SETTLE)?;
    assert_eq!(first.infos[0].dependencies, vec!["web".to_string()]);
    assert_eq!(
        grepped(&lb),
        Some(BTreeSet::new()),
        "configured with no web pod yet"
    );
    assert!(
        kz.dump(&Kazoo::cluster_path(NS, "web"))?.is_none(),
        "web does not exist yet"
    );
    let hash0 = first.zk.hash_text();

    // web appears after lb.
    let (spec, p1) = sleeper(&zk.connect_string(), "web")?;
    let w1 = Agent::spawn(&spec)?;
    wait_settled(&[&w1], &kz, NS, "web", SETTLE)?;
    let one = wait_until(SETTLE, "lb to render the first web pod", || {
        match grepped(&lb) {
            Some(g) if g == addrs(&[p1]) => {
                wait_settled(&[&lb], &kz, NS, "lb", Duration::ZERO).map_err(|e| e.to_string())
            }
            other => Err(format!(
                "grep.txt = {other:?} | {}\nlb log: {}",
                lb.summary(),
                lb.log_tail(3000)
            )),
        }
    })?;
    assert_ne!(
        one.zk.hash_text(),
        hash0,
        "lb committed a new configuration"
    );

    // The chain: a second web pod joins, web reconfigures, then lb re-renders.
    let (spec, p2) = sleeper(&zk.connect_string(), "web")?;
    let w2 = Agent::spawn(&spec)?;
    let mut early = None;
    let two = wait_until(SETTLE, "lb to render both web pods", || {
        let web = ClusterZk::read(&kz, NS, "web")?;
        let g = grepped(&lb);
        let w2_key = w2.info().map(|i| i.key).unwrap_or_default();
        if g.as_ref()
            .is_some_and(|g| g.contains(&format!("127.0.0.1:{p2}")))
            && !web.snapshot_keys().contains(&w2_key)
        {
            early.get_or_insert(format!(
                "lb rendered {g:?} before web's snapshot listed {w2_key}"
            ));
        }
        match g {
            Some(g) if g == addrs(&[p1, p2]) => {
                wait_settled(&[&lb], &kz, NS, "lb", Duration::ZERO).map_err(|e| e.to_string())
            }
            other => Err(format!(
                "grep.txt = {other:?}; web snapshot {:?} | {}",
                web.snapshot_keys(),
                describe(&[&lb, &w1, &w2])
            )),
        }
    })?;
    assert_eq!(early, None);
    let web = wait_settled(&[&w1, &w2], &kz, NS, "web", SETTLE)?;
    assert_eq!(web.zk.snapshot_keys().len(), 2);
    assert_ne!(two.zk.hash_text(), one.zk.hash_text(), "lb committed again");
    Ok(())
}

/// `depends_on = ["web-*"]` is the union of web-a and web-b, and of web-c once it appears.
#[test]
fn wildcard_dependency_spans_matching_clusters() -> anyhow::Result<()> {
    let _one = serial();
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let mut webs = Vec::new();
    let mut ports = Vec::new();
    for cl in ["web-a", "web-b"] {
        let (spec, port) = sleeper(&zk.connect_string(), cl)?;
        webs.push(Agent::spawn(&spec)?);
        ports.push(port);
    }
    let lb = dependent(&zk.connect_string(), "lb", "web-*")?;
    let wait_grep = |ports: &[u16]| {
        let want = addrs(ports);
        wait_until(
            SETTLE,
            &format!("lb to render {want:?}"),
            || match grepped(&lb) {
                Some(g) if g == want => {
                    wait_settled(&[&lb], &kz, NS, "lb", Duration::ZERO).map_err(|e| e.to_string())
                }
                other => Err(format!(
                    "grep.txt = {other:?} | {}\nlb log: {}",
                    lb.summary(),
                    lb.log_tail(3000)
                )),
            },
        )
    };
    let two = wait_grep(&ports)?;
    assert_eq!(two.infos[0].dependencies, vec!["web-*".to_string()]);

    // A cluster matching the wildcard appears later.
    let (spec, port) = sleeper(&zk.connect_string(), "web-c")?;
    webs.push(Agent::spawn(&spec)?);
    ports.push(port);
    let three = wait_grep(&ports)?;
    assert_ne!(three.zk.hash_text(), two.zk.hash_text());
    for (cl, w) in ["web-a", "web-b", "web-c"].iter().zip(&webs) {
        wait_settled(&[w], &kz, NS, cl, SETTLE)?;
    }
    Ok(())
}

/// `POST /reset` drops the session and registers again: a new node (new session, new counter)
/// but the same key and the same published seq, the process untouched; on a follower and then
/// on the leader.
#[test]
fn reset_keeps_key_and_seq() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "reset";
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let agents: Vec<Agent> = (0..2)
        .map(|_| Ok(Agent::spawn(&sleeper(&zk.connect_string(), cluster)?.0)?))
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let mut settled = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let follower = 1 - settled.leader;
    for target in [follower, settled.leader] {
        let before = settled.infos[target].clone();
        let node_before = settled.zk.pods[&before.key].1.clone();
        let seq_before = settled.zk.seq_of(&before.key);
        assert_eq!(seq_before, before.seq, "/info seq = published seq");
        let reply = agents[target].post("/reset", None)?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let (info, state) = wait_until(SETTLE, "the pod to register again", || {
            let info = agents[target].info().map_err(|e| e.to_string())?;
            let state = ClusterZk::read(&kz, NS, cluster)?;
            match state.pods.get(&before.key) {
                Some((_, node))
                    if node.ephemeral_owner != node_before.ephemeral_owner
                        && info.zk == "connected" =>
                {
                    Ok((info, state))
                }
                _ => Err(format!("pods={:?} | {}", state.pod_keys(), describe(&all))),
            }
        })?;
        let node = &state.pods[&before.key].1;
        assert_ne!(node.name, node_before.name, "a new node with a new counter");
        assert_eq!(info.key, before.key, "same key");
        assert_eq!(info.seq, before.seq, "same seq in /info");
        assert_eq!(state.seq_of(&before.key), seq_before, "same published seq");
        assert_eq!(info.pid, before.pid, "the process kept running");
        settled = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
        assert_eq!(settled.zk.seq_of(&before.key), seq_before);
        assert_eq!(settled.infos[target].pid, before.pid, "still not restarted");
        let snap = &settled.zk.snapshot.as_ref().expect("snapshot").0;
        assert_eq!(snap[&before.key]["seq"], json!(seq_before), "snapshot seq");
    }
    Ok(())
}

/// Once a pod obeyed the real leader (epoch `<czxid>-<seq>`), a control request carrying a
/// lower epoch is refused with 409 and changes nothing; the current epoch and a request without
/// the header (a 1.x leader, an operator) are accepted.
#[test]
fn stale_leader_epoch_is_refused_with_409() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "epoch";
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let agents: Vec<Agent> = (0..2)
        .map(|_| Ok(Agent::spawn(&sleeper(&zk.connect_string(), cluster)?.0)?))
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let settled = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let f = 1 - settled.leader;
    let follower = &agents[f];
    let key = settled.infos[f].key.clone();
    let czxid = settled.zk.coordinator_czxid.expect("coordinator");
    let seq: u64 = settled.zk.contenders[0]
        .name
        .rsplit_once("__lock__")
        .and_then(|(_, s)| s.parse().ok())
        .expect("a kazoo-style lock node");
    let pods = settled.zk.snapshot.as_ref().expect("snapshot").0.clone();
    let body = json!({"pods": pods, "dependencies": {}, "key": key});

    let mut stale = vec!["0-0".to_string(), format!("{}-{seq}", czxid - 1)];
    if seq > 0 {
        stale.push(format!("{czxid}-{}", seq - 1));
    }
    for epoch in &stale {
        for task in ["check", "on", "off", "kill"] {
            let r = control_with_epoch(follower, task, Some(epoch), &body)?;
            assert_eq!(r.status, 409, "{task} with epoch {epoch}: {:?}", r.body);
            assert!(
                r.body.get("error").and_then(Value::as_str).is_some(),
                "a 409 says why: {:?}",
                r.body
            );
        }
    }
    let after = follower.info()?;
    assert_eq!(after.process, "running", "nothing stopped or killed it");
    assert_eq!(after.pid, settled.infos[f].pid, "nothing restarted it");

    let current = format!("{czxid}-{seq}");
    let r = control_with_epoch(follower, "check", Some(&current), &body)?;
    assert_eq!(r.status, 200, "the current epoch: {:?}", r.body);
    let r = control_with_epoch(follower, "check", None, &body)?;
    assert_eq!(
        r.status, 200,
        "no header (1.x leader, operator): {:?}",
        r.body
    );
    Ok(())
}

/// Session ids of the cluster's pods (owners of their nodes).
fn sessions(kz: &Kazoo, cluster: &str) -> anyhow::Result<BTreeSet<String>> {
    let state = ClusterZk::read(kz, NS, cluster).map_err(anyhow::Error::msg)?;
    Ok(state
        .pods
        .values()
        .map(|(_, n)| format!("{:#x}", n.ephemeral_owner))
        .collect())
}

/// Waits until every session in `of` has sent `pings` more packets than in `before`.
fn after_pings(
    zk: &ZkServer,
    of: &BTreeSet<String>,
    before: &BTreeMap<String, Connection>,
    pings: u64,
) -> anyhow::Result<BTreeMap<String, Connection>> {
    Ok(wait_until(SETTLE, "every pod session to ping", || {
        let now = cons(zk.port()).map_err(|e| e.to_string())?;
        let ok = of.iter().all(|sid| match (before.get(sid), now.get(sid)) {
            (Some(b), Some(n)) => n.recved >= b.recved + pings,
            _ => false,
        });
        if ok {
            Ok(now)
        } else {
            Err(format!("sessions {of:?}, cons {now:?}"))
        }
    })?)
}

/// An idle settled three-pod cluster sends ZooKeeper nothing but pings: no session's last client
/// xid (`cons` lcxid, which every request but a ping advances) moves over the window. Prints the
/// window's `mntr` packet count. `OCHOPOD_IDLE_WINDOW_S` sets the window (default 20 s),
/// `OCHOPOD_IDLE_SESSION_S` the pods' session timeout (default 3 s; 1.x used 5 s).
#[test]
fn an_idle_three_pod_cluster_sends_only_pings() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "idle";
    let window: u64 = std::env::var("OCHOPOD_IDLE_WINDOW_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let session: f64 = std::env::var("OCHOPOD_IDLE_SESSION_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let agents: Vec<Agent> = (0..3)
        .map(|_| {
            let (mut spec, _) = sleeper(&zk.connect_string(), cluster)?;
            spec.set("pod", "session_timeout", session);
            Ok(Agent::spawn(&spec)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let settled = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let sids = sessions(&kz, cluster)?;
    assert_eq!(sids.len(), 3, "one session per pod: {sids:?}");
    // Warm-up: a few pings from everyone (follower lock watches, the last round's tail).
    let start = cons(zk.port())?;
    let warm = after_pings(&zk, &sids, &start, 3)?;

    let m0 = mntr(zk.port())?;
    let c0 = cons(zk.port())?;
    std::thread::sleep(Duration::from_secs(window)); // the measured window itself
    let c1 = cons(zk.port())?;
    let m1 = mntr(zk.port())?;

    let packets = |m: &BTreeMap<String, String>| -> u64 {
        m.get("zk_packets_received")
            .and_then(|v| v.parse().ok())
            .expect("mntr has zk_packets_received")
    };
    let received = packets(&m1) - packets(&m0);
    let mut per_session = Vec::new();
    for sid in &sids {
        let (a, b) = (&c0[sid], &c1[sid]);
        assert!(a.lcxid.starts_with("0x"), "cons output changed: {a:?}");
        assert_eq!(
            a.lcxid, b.lcxid,
            "session {sid} sent requests other than pings while idle ({a:?} -> {b:?})"
        );
        per_session.push(format!("{sid}: {} packets", b.recved - a.recved));
    }
    assert!(warm.len() >= 3);
    eprintln!(
        "idle {window} s, 3 pods, {session} s sessions: mntr zk_packets_received +{received} ({:.2}/s); cons per \
         session: {}; lcxid unchanged",
        received as f64 / window as f64,
        per_session.join(", ")
    );
    // Still the same cluster (nobody re-registered or re-elected meanwhile).
    let end = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert_eq!(end.zk.hash_text(), settled.zk.hash_text());
    assert_eq!(end.leader, settled.leader);
    Ok(())
}
