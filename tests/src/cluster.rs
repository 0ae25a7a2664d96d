//! One cluster as ZooKeeper holds it (`docs/protocol.md#zookeeper-layout`), read by kazoo
//! ([`ClusterZk`]); a cluster at rest as `/info` and ZooKeeper both see it ([`wait_settled`]); and
//! control calls carrying a chosen leader epoch ([`control_with_epoch`]). Shared by every suite
//! that watches a cluster from the outside (mixed 1.x clusters, dependencies, resilience).

use crate::agent::{describe, Agent, Reply};
use crate::error::{Error, Result};
use crate::kazoo::{Kazoo, ZNode};
use crate::scenario::is_leader;
use crate::wait::wait_until_with;
use ochopod_core::wire::Info;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One cluster as ZooKeeper holds it (`docs/protocol.md#zookeeper-layout`), read by kazoo.
#[derive(Clone, Debug)]
pub struct ClusterZk {
    /// Pod nodes `<key>.<seq>` holding a registration, by key: (seq from the payload, else the
    /// node's counter; the node).
    pub pods: BTreeMap<String, (u64, ZNode)>,
    /// Every other node under `pods/` (a foreign name, or a payload that is no registration).
    pub foreign: Vec<ZNode>,
    /// Lock contenders, sorted by their sequence suffix (the first holds the lock).
    pub contenders: Vec<ZNode>,
    /// `snapshot`: payload and node.
    pub snapshot: Option<(Value, ZNode)>,
    /// `hash` (its text: [`ClusterZk::hash_text`]).
    pub hash: Option<ZNode>,
    /// czxid of `coordinator` (the first half of every leader epoch).
    pub coordinator_czxid: Option<i64>,
}

impl ClusterZk {
    /// Reads `/ochopod/clusters/<namespace>.<cluster>`; `Err` (as text, for
    /// [`crate::wait_until`]) while the cluster node does not exist yet.
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
            match pod_node(&node) {
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

    /// The seq pod `key` publishes: its payload's `seq`, else its node's counter.
    pub fn seq_of(&self, key: &str) -> Option<u64> {
        self.pods.get(key).map(|(seq, _)| *seq)
    }
}

/// A pod node: named `<key>.<counter>` (ten digits, as ZooKeeper numbers sequential nodes) and
/// holding a registration (`docs/protocol.md#registration`, a 1.x one included); anything else is
/// foreign. Returns its key and published seq (the payload's `seq`, else the counter).
fn pod_node(node: &ZNode) -> Option<(String, u64)> {
    let (key, counter) = node.name.rsplit_once('.')?;
    if counter.len() != 10 || !counter.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let counter: u64 = counter.parse().ok()?;
    ochopod_core::wire::Registration::from_slice(node.data.as_deref()?.as_bytes()).ok()?;
    let payload = node.json().ok().filter(Value::is_object)?;
    let seq = payload
        .get("seq")
        .and_then(Value::as_u64)
        .unwrap_or(counter);
    Some((key.to_string(), seq))
}

/// The trailing counter of a sequential node name (`u64::MAX` when none).
fn lock_seq(name: &str) -> u64 {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].parse().unwrap_or(u64::MAX)
}

/// A cluster at rest: every agent answers and runs its process, exactly one is `leader` (clean),
/// it holds the lock and owns `snapshot`, `snapshot` lists exactly the agents, and `hash` is
/// written.
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

/// Waits until `agents` form a settled cluster `namespace.cluster` (see [`Settled`]); with a
/// zero `timeout`, checks once.
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
            // `seq` too: a pod can be configured (the leader reads its node as soon as it
            // exists) before its own agent hears that the seq was written.
            let running = infos
                .iter()
                .all(|i| i.process == "running" && i.seq.is_some());
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
                    "pods={:?} snapshot={:?} keys={keys:?} hash={:?} | {}",
                    zk.pod_keys(),
                    zk.snapshot_keys(),
                    zk.hash_text(),
                    describe(agents)
                ))
            }
        },
    )
}

/// `POST /control/<task>/10` to `agent` with a JSON body and, when given, the header
/// `X-Ochopod-Epoch: <epoch>` (`"<czxid>-<seq>"`), as a leader of that epoch would send it;
/// without it, as a 1.x leader or an operator would.
pub fn control_with_epoch(
    agent: &Agent,
    task: &str,
    epoch: Option<&str>,
    body: &Value,
) -> Result<Reply> {
    let url = agent.url(&format!("/control/{task}/10"));
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut req = http.post(&url).header("content-type", "application/json");
    if let Some(epoch) = epoch {
        req = req.header(ochopod_core::wire::EPOCH_HEADER, epoch);
    }
    let mut resp = req.send(body.to_string()).map_err(|e| Error::Http {
        url: url.clone(),
        why: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply { status, body })
}
