//! Shared pieces of the resilience suites: clusters of sleeping pods, what ZooKeeper and `/info`
//! say about them, direct control calls with a chosen leader epoch, and the fence check replayed
//! from ZooKeeper's own transaction log (`tests/py/zkfence.py`).

use crate::agent::{describe, Agent, PodSpec, Reply};
use crate::error::{Error, Result};
use crate::kazoo::{Kazoo, ZNode};
use crate::util::{run, workspace_root};
use crate::wait::wait_until_with;
use ochopod_core::wire::Info;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Serializes the heavy scenarios of one test binary (several ZooKeeper JVMs and a handful of
/// agents at once would starve a 2-core CI machine and blur every bound). Poison-tolerant.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch (to compare with `last_round.started_ms`).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A pod whose process is `sleep 3600`: cheap, never exits on its own, so any pid change is a
/// restart. `control_timeout` 10 s, `grace` 2 s, hooks time out after 20 s.
pub fn sleeper(namespace: &str, cluster: &str, zk: &str) -> Result<PodSpec> {
    let mut spec = PodSpec::new(namespace, cluster, zk)?;
    spec.command("sleep 3600")
        .set("model", "control_timeout", 10.0)
        .set("process", "grace", 2.0)
        .set("hooks", "timeout", 20.0);
    Ok(spec)
}

/// True for every `leader...` state.
pub fn is_leader(info: &Info) -> bool {
    info.state.starts_with("leader")
}

/// The pods that accepted `on` in the leader's last round, when that round committed (`ok`).
pub fn accepted(info: &Info) -> Option<BTreeSet<String>> {
    let round = info.last_round.as_ref()?;
    (round.outcome == "ok").then(|| {
        round
            .answers
            .iter()
            .filter(|(_, a)| a.starts_with("on 200"))
            .map(|(k, _)| k.clone())
            .collect()
    })
}

/// One cluster as ZooKeeper holds it (DESIGN section 3), read by kazoo.
#[derive(Clone, Debug)]
pub struct ClusterZk {
    /// Pod nodes by key: (seq from the payload, else the node suffix; the node).
    pub pods: BTreeMap<String, (u64, ZNode)>,
    /// Nodes under `pods/` that are not `<key>.<seq>` holding a registration.
    pub foreign: Vec<ZNode>,
    /// Lock contenders, sorted by their sequence suffix (the first holds the lock).
    pub contenders: Vec<ZNode>,
    /// `snapshot`: payload and node.
    pub snapshot: Option<(Value, ZNode)>,
    /// `hash`.
    pub hash: Option<ZNode>,
    /// czxid of `coordinator` (the first half of every leader epoch).
    pub coordinator_czxid: Option<i64>,
}

impl ClusterZk {
    /// Reads `/ochopod/clusters/<ns>.<cluster>`; `Err` (as text, for [`wait_until_with`]) while
    /// the cluster node does not exist yet.
    pub fn read(kz: &Kazoo, namespace: &str, cluster: &str) -> Result<ClusterZk, String> {
        let root = kz
            .dump(&Kazoo::cluster_path(namespace, cluster))
            .map_err(|e| e.to_string())?
            .ok_or("no cluster node yet")?;
        let mut pods = BTreeMap::new();
        let mut foreign = Vec::new();
        for node in root
            .at("pods")
            .map(|p| p.children.clone())
            .unwrap_or_default()
        {
            let parsed = node.name.split_once('.').and_then(|(k, s)| {
                let suffix: u64 = s.parse().ok()?;
                // A pod node holds a registration (DESIGN section 4); anything else is garbage.
                ochopod_core::wire::Registration::from_slice(node.data.as_deref()?.as_bytes())
                    .ok()?;
                let payload = node.json().ok()?;
                let seq = payload.get("seq").and_then(Value::as_u64).unwrap_or(suffix);
                Some((k.to_string(), seq))
            });
            match parsed {
                Some((key, seq)) => {
                    pods.insert(key, (seq, node));
                }
                None => foreign.push(node),
            }
        }
        let coordinator = root.child("coordinator");
        let mut contenders = coordinator.map(|c| c.children.clone()).unwrap_or_default();
        contenders.sort_by_key(|c| lock_seq(&c.name));
        let snapshot = match root.child("snapshot") {
            Some(n) => Some((n.json().map_err(|e| e.to_string())?, n.clone())),
            None => None,
        };
        Ok(ClusterZk {
            pods,
            foreign,
            contenders,
            snapshot,
            hash: root.child("hash").cloned(),
            coordinator_czxid: coordinator.map(|c| c.czxid),
        })
    }

    /// Keys of the registered pods.
    pub fn pod_keys(&self) -> BTreeSet<String> {
        self.pods.keys().cloned().collect()
    }

    /// Keys in `snapshot` (empty when missing).
    pub fn snapshot_keys(&self) -> BTreeSet<String> {
        self.snapshot
            .as_ref()
            .and_then(|(s, _)| s.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Session owning `snapshot`.
    pub fn snapshot_owner(&self) -> Option<i64> {
        self.snapshot.as_ref().map(|(_, n)| n.ephemeral_owner)
    }

    /// `hash` as text.
    pub fn hash_text(&self) -> Option<String> {
        self.hash.as_ref().and_then(|h| h.data.clone())
    }

    /// The session holding the lock (owner of the lowest contender).
    pub fn holder_session(&self) -> Option<i64> {
        self.contenders.first().map(|c| c.ephemeral_owner)
    }

    /// The sequence number of the lowest contender (the second half of the holder's epoch).
    pub fn holder_seq(&self) -> Option<u64> {
        self.contenders.first().map(|c| lock_seq(&c.name))
    }

    /// The session owning pod `key`'s node.
    pub fn session_of(&self, key: &str) -> Option<i64> {
        self.pods.get(key).map(|(_, n)| n.ephemeral_owner)
    }
}

fn lock_seq(name: &str) -> u64 {
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap_or(u64::MAX)
}

/// A cluster at rest: every agent answers and runs its process, exactly one is `leader` (clean),
/// it holds the lock and owns `snapshot`, and `snapshot` lists exactly the agents.
#[derive(Clone, Debug)]
pub struct Settled {
    /// `/info` of every agent, in the order given.
    pub infos: Vec<Info>,
    /// ZooKeeper at that moment.
    pub zk: ClusterZk,
    /// Index of the leader among the agents.
    pub leader: usize,
}

impl Settled {
    /// The leader's `/info`.
    pub fn leader_info(&self) -> &Info {
        &self.infos[self.leader]
    }

    /// Sub-process pids by key.
    pub fn pids(&self) -> BTreeMap<String, Option<u32>> {
        self.infos.iter().map(|i| (i.key.clone(), i.pid)).collect()
    }

    /// Index of a follower (the first one).
    pub fn follower(&self) -> usize {
        (0..self.infos.len())
            .find(|i| *i != self.leader)
            .expect("a settled cluster of two pods or more has a follower")
    }
}

/// Waits until `agents` form a settled cluster (see [`Settled`]).
pub fn wait_settled(
    agents: &[&Agent],
    kz: &Kazoo,
    namespace: &str,
    cluster: &str,
    timeout: Duration,
) -> Result<Settled> {
    wait_until_with(
        timeout,
        Duration::from_millis(300),
        &format!("{namespace}.{cluster}: {} pods settled", agents.len()),
        || {
            let infos: Vec<Info> = agents
                .iter()
                .map(|a| a.info().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{e} | {}", describe(agents)))?;
            let leaders: Vec<usize> = (0..infos.len()).filter(|i| is_leader(&infos[*i])).collect();
            let running = infos.iter().all(|i| i.process == "running");
            let clean = leaders.len() == 1 && infos[leaders[0]].state == "leader";
            if !(running && clean) {
                return Err(format!("leaders={leaders:?} | {}", describe(agents)));
            }
            let zk = ClusterZk::read(kz, namespace, cluster)?;
            let keys: BTreeSet<String> = infos.iter().map(|i| i.key.clone()).collect();
            let leader = leaders[0];
            let owner = zk.session_of(&infos[leader].key);
            let ok = zk.snapshot_keys() == keys
                && zk.pod_keys() == keys
                && owner.is_some()
                && zk.holder_session() == owner
                && zk.snapshot_owner() == owner
                && zk.hash.is_some();
            if ok {
                Ok(Settled { infos, zk, leader })
            } else {
                Err(format!(
                    "pods={:?} snapshot={:?} keys={keys:?} | {}",
                    zk.pod_keys(),
                    zk.snapshot_keys(),
                    describe(agents)
                ))
            }
        },
    )
}

/// `POST /control/<task>/<timeout>` to `agent` carrying `X-Ochopod-Epoch: <czxid>-<seq>`, as a
/// leader of that epoch would send it.
pub fn control_with_epoch(
    agent: &Agent,
    task: &str,
    epoch: (i64, u64),
    body: &Value,
) -> Result<Reply> {
    let url = agent.url(&format!("/control/{task}/10"));
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut resp = http
        .post(&url)
        .header(
            ochopod_core::wire::EPOCH_HEADER,
            format!("{}-{}", epoch.0, epoch.1),
        )
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| Error::Http {
            url: url.clone(),
            why: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply { status, body })
}

/// What `tests/py/zkfence.py` found in a server's transaction log.
#[derive(Clone, Debug)]
pub struct Fence {
    /// Transactions replayed.
    pub txns: u64,
    /// Transactions that wrote `snapshot` or `hash`.
    pub writes: u64,
    /// Commits (`hash` written): (writer's pod key, snapshot keys).
    pub commits: Vec<(Option<String>, Option<BTreeSet<String>>)>,
    /// Writes not made by the lock holder's session.
    pub violations: Vec<String>,
    /// Lock contenders ever created.
    pub contenders_seen: u64,
}

/// Replays the transaction log in `data_dir` (a standalone server's `data/` folder) and checks
/// that only the lock holder's session wrote `snapshot` or `hash` of `namespace.cluster`.
pub fn fence_check(data_dir: &Path, namespace: &str, cluster: &str) -> Result<Fence> {
    let out = run(Command::new("python3")
        .arg(workspace_root().join("tests/py/zkfence.py"))
        .arg("--data")
        .arg(data_dir)
        .arg("--cluster")
        .arg(Kazoo::cluster_path(namespace, cluster)))?;
    let v: Value = serde_json::from_str(out.trim()).map_err(|e| Error::Payload {
        from: "tests/py/zkfence.py".into(),
        why: format!("not JSON ({e}): {out:?}"),
    })?;
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let commits = v
        .get("commits")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    let key = c.get("key").and_then(Value::as_str).map(str::to_string);
                    let snap = c.get("snapshot").and_then(Value::as_array).map(|s| {
                        s.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    });
                    (key, snap)
                })
                .collect()
        })
        .unwrap_or_default();
    let violations = v
        .get("violations")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(Fence {
        txns: n("txns"),
        writes: n("writes"),
        commits,
        violations,
        contenders_seen: n("contenders_seen"),
    })
}
