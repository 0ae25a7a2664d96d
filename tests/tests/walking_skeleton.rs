//! The walking skeleton, end to end: a real ZooKeeper and three real `ochopod run` agents of one
//! local cluster, each serving a rendered `members.txt` through a `python3 -m http.server`
//! sub-process.
//!
//! Checked from the outside only: ZooKeeper through kazoo (node names, ephemeral owners and
//! payloads of `docs/protocol.md`), `/info` over HTTP (`docs/http.md`), rendered files on disk and
//! served by the sub-processes. Then a follower is SIGKILLed: the survivors re-render to two
//! members without restarting their sub-processes (non-strict pods, `docs/protocol.md#the-pod`).
//! Bounds are loose (tens of seconds against a 3 s session); only the order of events matters.

use ochopod_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

const NS: &str = "e2e";
const CLUSTER: &str = "skeleton";
const MEMBERS: &str =
    "{% for key, pod in cluster.pods|items %}{{ pod.ip }}:{{ pod.ports[\"9000\"] }}\n{% endfor %}";
/// Registration keys (`docs/protocol.md#registration`, kept from 1.x) plus `protocol`; `seq` is
/// checked apart.
const REGISTRATION_KEYS: &[&str] = &[
    "cluster",
    "namespace",
    "binding",
    "fwk",
    "ip",
    "public",
    "ports",
    "port",
    "node",
    "application",
    "task",
    "zk",
    "status",
    "debug",
    "local",
    "start",
    "protocol",
];

/// One pod of the test: its agent, its folder and the host port its http.server listens on.
struct Pod {
    agent: Agent,
    http: u16,
    _dir: TempDir,
}

impl Pod {
    fn start(zk: &str) -> anyhow::Result<Pod> {
        let dir = tempfile::Builder::new()
            .prefix("ochopod-skeleton-")
            .tempdir()?;
        let http = free_port()?;
        let mut spec = PodSpec::new(NS, CLUSTER, zk)?;
        spec.set("pod", "session_timeout", 3.0)
            .port(9000, http)
            .set("model", "damper", 0.0)
            .set("model", "control_timeout", 30.0)
            .set("process", "grace", 5.0)
            .command(&format!(
                "python3 -m http.server {http} --bind 127.0.0.1 --directory {}",
                dir.path().display()
            ))
            .template("members.txt.j2", MEMBERS, "members.txt");
        spec.write_to(dir.path())?;
        let agent = Agent::spawn(dir.path())?;
        Ok(Pod {
            agent,
            http,
            _dir: dir,
        })
    }

    fn member(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    /// The rendered members, sorted (empty when not rendered yet).
    fn members(&self) -> Vec<String> {
        read_members(&self.agent.dir().join("members.txt"))
    }
}

fn read_members(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut v: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn agents<'a>(pods: &[&'a Pod]) -> Vec<&'a Agent> {
    pods.iter().map(|p| &p.agent).collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn ten_digits(s: &str) -> Option<u64> {
    (s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// What the cluster looks like in ZooKeeper: pods by key (payload, node), snapshot, hash.
struct ZkView {
    pods: BTreeMap<String, (Value, ZNode)>,
    contenders: Vec<ZNode>,
    snapshot: Option<(Value, ZNode)>,
    hash: Option<ZNode>,
}

fn zk_view(kz: &Kazoo) -> Result<ZkView, String> {
    let root = kz
        .dump(&Kazoo::cluster_path(NS, CLUSTER))
        .map_err(|e| e.to_string())?
        .ok_or("no cluster node yet")?;
    let mut pods = BTreeMap::new();
    for node in root
        .at("pods")
        .map(|p| p.children.clone())
        .unwrap_or_default()
    {
        let key = node
            .name
            .split_once('.')
            .map(|(k, _)| k.to_string())
            .ok_or_else(|| format!("pod node {} has no `.seq` suffix", node.name))?;
        let payload = node.json().map_err(|e| e.to_string())?;
        pods.insert(key, (payload, node));
    }
    let snapshot = match root.child("snapshot") {
        Some(n) => Some((n.json().map_err(|e| e.to_string())?, n.clone())),
        None => None,
    };
    Ok(ZkView {
        pods,
        contenders: root
            .at("coordinator")
            .map(|c| c.children.clone())
            .unwrap_or_default(),
        snapshot,
        hash: root.child("hash").cloned(),
    })
}

fn snapshot_keys(v: &ZkView) -> BTreeSet<String> {
    v.snapshot
        .as_ref()
        .and_then(|(s, _)| s.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn three_pods_configure_then_survive_a_follower_kill() -> anyhow::Result<()> {
    ensure_python_deps()?;
    let zk = ZkServer::start()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let pods: Vec<Pod> = (0..3)
        .map(|_| Pod::start(&zk.connect_string()))
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Pod> = pods.iter().collect();
    let expected: Vec<String> = {
        let mut v: Vec<String> = pods.iter().map(Pod::member).collect();
        v.sort();
        v
    };

    // 1. The cluster forms: three running pods, one leader, a committed snapshot of three.
    let (infos, view) = wait_until_with(
        Duration::from_secs(120),
        Duration::from_millis(250),
        "three running pods, exactly one leader, a snapshot of three",
        || {
            let infos: Vec<Info> = all
                .iter()
                .map(|p| p.agent.info().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{e} | {}", describe(&agents(&all))))?;
            // A pod can be configured before its agent hears that its seq was written (the
            // leader reads the node as soon as it exists), so `/info` gains its seq a moment
            // later: wait for it too.
            let running = infos
                .iter()
                .all(|i| i.process == "running" && i.seq.is_some());
            let leaders = infos
                .iter()
                .filter(|i| i.state.starts_with("leader"))
                .count();
            let view = zk_view(&kz)?;
            let snap = snapshot_keys(&view).len();
            if running && leaders == 1 && snap == 3 {
                Ok((infos, view))
            } else {
                Err(format!(
                    "leaders={leaders} snapshot={snap} | {}",
                    describe(&agents(&all))
                ))
            }
        },
    )?;

    // 2. Pods: `<uuid>.<10 digits>`, ephemeral, section-4 payloads matching each /info.
    assert_eq!(view.pods.len(), 3, "three pod nodes");
    let keys: BTreeSet<String> = infos.iter().map(|i| i.key.clone()).collect();
    assert_eq!(keys.len(), 3, "three distinct keys");
    assert_eq!(
        keys,
        view.pods.keys().cloned().collect(),
        "/info keys are the pod nodes' keys"
    );
    let mut seqs = BTreeSet::new();
    for (pod, info) in pods.iter().zip(&infos) {
        let (payload, node) = &view.pods[&info.key];
        let (uuid, suffix) = node.name.split_once('.').expect("checked in zk_view");
        assert!(is_uuid(uuid), "pod node {} is not <uuid>.<seq>", node.name);
        let seq = ten_digits(suffix)
            .unwrap_or_else(|| panic!("pod node {} has no 10-digit sequence", node.name));
        assert!(
            node.is_ephemeral(),
            "pod node {} must be ephemeral",
            node.name
        );
        for k in REGISTRATION_KEYS {
            assert!(
                payload.get(k).is_some(),
                "registration lacks `{k}`: {payload}"
            );
        }
        assert_eq!(payload["cluster"], CLUSTER);
        assert_eq!(payload["namespace"], NS);
        assert_eq!(payload["binding"], "local");
        assert_eq!(payload["fwk"], "local", "fwk mirrors binding for 1.x");
        assert_eq!(payload["ip"], "127.0.0.1");
        assert_eq!(payload["ports"]["9000"], u64::from(pod.http));
        assert_eq!(payload["port"], pod.agent.port().to_string());
        // Readers take `seq` from the payload, falling back to the node suffix
        // (`docs/protocol.md#zookeeper-layout`); it is the counter of the pod's first registration,
        // so never above the suffix.
        let effective = match &payload["seq"] {
            Value::Null => seq,
            v => v
                .as_u64()
                .unwrap_or_else(|| panic!("seq is not an integer: {payload}")),
        };
        assert!(
            effective <= seq,
            "seq {effective} above the node suffix {seq}"
        );
        assert!(seqs.insert(effective), "seq {effective} given to two pods");
        assert_eq!(info.seq, Some(effective), "/info seq = registration seq");
        assert_eq!(info.cluster, format!("{NS}.{CLUSTER}"));
    }

    // 3. Lock contenders: kazoo-style names, ephemeral; the lowest is the leader's session,
    //    which also owns the snapshot.
    assert_eq!(view.contenders.len(), 3, "one lock contender per pod");
    let mut lowest: Option<(u64, i64)> = None;
    for c in &view.contenders {
        let (hex, seq) = c
            .name
            .split_once("__lock__")
            .unwrap_or_else(|| panic!("contender {} lacks __lock__", c.name));
        assert!(
            is_hex(hex, 32),
            "contender {} is not <32 hex>__lock__<seq>",
            c.name
        );
        let seq = ten_digits(seq).unwrap_or_else(|| panic!("contender {} seq", c.name));
        assert!(c.is_ephemeral(), "contender {} must be ephemeral", c.name);
        if lowest.is_none_or(|(s, _)| seq < s) {
            lowest = Some((seq, c.ephemeral_owner));
        }
    }
    let leader = infos
        .iter()
        .find(|i| i.state.starts_with("leader"))
        .expect("one leader");
    let leader_owner = view.pods[&leader.key].1.ephemeral_owner;
    assert_eq!(
        lowest.map(|(_, o)| o),
        Some(leader_owner),
        "the lock holder is the /info leader"
    );

    // 4. hash: 64 lowercase hex, persistent; snapshot: the three registrations, leader-owned.
    let hash = view.hash.as_ref().expect("hash written after the round");
    let hash_text = hash.data.clone().unwrap_or_default();
    assert!(
        is_hex(&hash_text, 64),
        "hash {hash_text:?} is not 64 lowercase hex"
    );
    assert!(!hash.is_ephemeral(), "hash is persistent");
    let (snap, snap_node) = view.snapshot.as_ref().expect("snapshot");
    assert!(snap_node.is_ephemeral(), "snapshot is ephemeral");
    assert_eq!(
        snap_node.ephemeral_owner, leader_owner,
        "snapshot owned by the leader"
    );
    for (key, (payload, _)) in &view.pods {
        assert_eq!(
            &snap[key], payload,
            "snapshot[{key}] is that pod's registration"
        );
    }

    // 5. Every pod rendered and serves the three members through its sub-process.
    let http = ureq::Agent::new_with_defaults();
    for (pod, info) in pods.iter().zip(&infos) {
        assert_eq!(pod.members(), expected, "{}", pod.agent.dir().display());
        let served = http
            .get(format!("http://127.0.0.1:{}/members.txt", pod.http))
            .call()?
            .body_mut()
            .read_to_string()?;
        let mut served: Vec<String> = served.lines().map(str::to_string).collect();
        served.sort();
        assert_eq!(served, expected, "served by the sub-process");
        let pid = info.pid.expect("a running pod reports its sub-process pid");
        assert!(
            pod.agent.descendants().contains(&pid),
            "pid {pid} is a process of agent {}",
            pod.agent.port()
        );
    }

    // 6. SIGKILL one follower.
    let victim = pods
        .iter()
        .zip(&infos)
        .position(|(_, i)| i.state == "follower")
        .expect("two followers");
    let survivors: Vec<&Pod> = pods
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, p)| p)
        .collect();
    let survivor_infos: Vec<&Info> = infos
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, i)| i)
        .collect();
    let survivor_keys: BTreeSet<String> = survivor_infos.iter().map(|i| i.key.clone()).collect();
    let mut expected2: Vec<String> = survivors.iter().map(|p| p.member()).collect();
    expected2.sort();
    pods[victim].agent.kill9()?;

    // 7. The survivors re-render to two members; events in order: the pod node vanishes, then
    //    the snapshot shrinks; the files never list two while the snapshot still lists three...
    let mut order_violation = None;
    let view2 = wait_until_with(
        Duration::from_secs(90),
        Duration::from_millis(250),
        "the survivors' files to list two members, the snapshot to shrink and a new hash",
        || {
            let view = zk_view(&kz)?;
            let snap = snapshot_keys(&view);
            if snap.len() == 2 && view.pods.len() == 3 && order_violation.is_none() {
                order_violation = Some("snapshot shrank before the pod node vanished".to_string());
            }
            let files: Vec<Vec<String>> = survivors.iter().map(|p| p.members()).collect();
            // The dump reads `hash` before `snapshot` (one read per node), so a view can hold
            // the new snapshot beside the old hash although the leader writes both in one
            // transaction: wait for the new hash as well.
            let hash_changed = view
                .hash
                .as_ref()
                .and_then(|h| h.data.as_deref())
                .is_some_and(|h| h != hash_text);
            let done = snap == survivor_keys
                && view.pods.len() == 2
                && files.iter().all(|f| *f == expected2)
                && hash_changed;
            if done {
                Ok(view)
            } else {
                Err(format!(
                    "pods={} snapshot={} hash changed={} files={files:?} | {}",
                    view.pods.len(),
                    snap.len(),
                    hash_changed,
                    describe(&agents(&survivors))
                ))
            }
        },
    )?;
    assert_eq!(order_violation, None);

    // 8. ... without restarting anything: same sub-process pids, still running, same leader,
    //    a new committed hash.
    for (pod, before) in survivors.iter().zip(&survivor_infos) {
        let now = pod.agent.info()?;
        assert_eq!(now.process, "running");
        assert_eq!(
            now.pid, before.pid,
            "non-strict pod re-rendered without a restart"
        );
        assert_eq!(now.key, before.key);
        assert_eq!(
            now.state.starts_with("leader"),
            before.state.starts_with("leader"),
            "leadership stays put"
        );
    }
    let new_hash = view2.hash.and_then(|h| h.data).unwrap_or_default();
    assert!(is_hex(&new_hash, 64), "hash {new_hash:?}");
    assert_ne!(new_hash, hash_text, "a new configuration was committed");
    Ok(())
}
