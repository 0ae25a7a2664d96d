//! The ZooKeeper layout (`docs/protocol.md#zookeeper-layout`): paths, node names and payloads, and
//! the reads that both the coordinator and the directory make.

use std::collections::{BTreeMap, HashMap};

use ochopod_core::{Pause, Pods, Registration};
use zookeeper_client::{Client, MultiReadResult};

use crate::Error;

/// Root of every cluster (under the connection string's chroot, if any).
pub const ROOT: &str = "/ochopod/clusters";

/// Separator between a lock contender's prefix and its sequence (kazoo's Lock recipe).
pub(crate) const LOCK_NAME: &str = "__lock__";

/// Reads per multi-read request: keeps each reply well under ZooKeeper's 1 MiB packet limit.
const READ_BATCH: usize = 200;

/// `P` for a cluster `ns.cl`: `/ochopod/clusters/ns.cl`.
pub fn cluster_path(full: &str) -> String {
    format!("{ROOT}/{full}")
}

/// Checks a full cluster name (`namespace.cluster`) given by a caller.
pub(crate) fn check_cluster(full: &str) -> Result<(), Error> {
    let ok = full
        .split_once('.')
        .is_some_and(|(ns, cl)| !ns.is_empty() && !cl.is_empty())
        && !full.contains('/')
        && !full.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "bad cluster name {full:?}: write `namespace.cluster`, e.g. `prod.web`"
        )))
    }
}

/// Splits a pod node name `<key>.<seq>` into its key and ZooKeeper counter.
pub(crate) fn parse_pod_node(name: &str) -> Option<(&str, u64)> {
    let (key, seq) = name.rsplit_once('.')?;
    if key.is_empty() || seq.len() < 10 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((key, seq.parse().ok()?))
}

/// The sequence of a lock contender `<prefix>__lock__<seq>`.
pub(crate) fn lock_seq(name: &str) -> Option<u64> {
    let (_, seq) = name.rsplit_once(LOCK_NAME)?;
    seq.parse().ok()
}

/// The prefix of a lock contender (`<hex32>` for ours, a random uuid hex for kazoo's).
pub(crate) fn lock_prefix(name: &str) -> &str {
    name.rsplit_once(LOCK_NAME).map_or(name, |(p, _)| p)
}

/// A pod key without dashes: the prefix of our lock contenders.
pub(crate) fn hex32(key: &str) -> String {
    key.chars().filter(|c| *c != '-').collect()
}

/// Why a pod node's payload is not a registration; an empty payload says so plainly (Ochopod
/// 1.x creates its node empty and writes its registration just after).
pub(crate) fn parse_registration(data: &[u8]) -> Result<Registration, String> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(
            "registration is empty (a 1.x pod writes it just after creating its node)".to_string(),
        );
    }
    Registration::from_slice(data).map_err(|e| format!("malformed registration: {e}"))
}

/// What is known of one node under `P/pods`, by node name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cached {
    /// A registration (never changes once written).
    Good(Box<Registration>),
    /// Not a pod node (`<uuid>.<seq>`): skipped for good.
    Foreign,
    /// A pod node whose payload is not a registration (yet): read again when it changes.
    Bad(String),
}

/// Parses a snapshot (`{key: registration}`); bad entries are logged and skipped, a payload
/// that is not a JSON object is logged and read as no snapshot.
pub(crate) fn parse_snapshot(path: &str, data: &[u8]) -> Option<Pods> {
    let raw: BTreeMap<String, serde_json::Value> = match serde_json::from_slice(data) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!(%path, error = %e, "skipping a malformed snapshot");
            return None;
        }
    };
    let mut pods = Pods::new();
    for (key, value) in raw {
        match serde_json::to_vec(&value)
            .ok()
            .and_then(|bytes| Registration::from_slice(&bytes).ok())
        {
            Some(reg) => {
                pods.insert(key, reg);
            }
            None => tracing::warn!(%path, %key, "skipping a malformed entry of a snapshot"),
        }
    }
    Some(pods)
}

/// One registered pod as read from `P/pods`.
#[derive(Clone, Debug)]
pub(crate) struct PodNode {
    pub(crate) key: String,
    pub(crate) node: String,
    pub(crate) seq: u64,
    pub(crate) registration: Registration,
}

/// Reads `dir` (a `P/pods`) and every registration in it. `cache` keeps payloads by node name
/// (a registration never changes once written, except that a first registration gets its `seq`
/// written in just after, equal to the node's counter that stands in for it until then), so a
/// join costs one read and a leave none.
/// Nodes with a foreign name are logged once and skipped. A pod node whose payload is not a
/// registration is cached as [`Cached::Bad`] and skipped: the caller decides when to read it
/// again (by removing it from `cache`). When two nodes carry the same key (a pod that
/// re-registered before its old session ended), the newest wins.
pub(crate) async fn read_pods(
    client: &Client,
    dir: &str,
    cache: &mut HashMap<String, Cached>,
) -> Result<Vec<PodNode>, Error> {
    let children = match client.list_children(dir).await {
        Ok(children) => children,
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(e) => return Err(Error::zk("list_children", dir)(e)),
    };
    cache.retain(|name, _| children.contains(name));
    let missing: Vec<&String> = children
        .iter()
        .filter(|name| !cache.contains_key(*name))
        .collect();
    for batch in missing.chunks(READ_BATCH) {
        let mut reader = client.new_multi_reader();
        for name in batch {
            reader
                .add_get_data(&format!("{dir}/{name}"))
                .map_err(Error::zk("get_data", format!("{dir}/{name}")))?;
        }
        let results = reader
            .commit()
            .await
            .map_err(Error::zk("multi_read", dir))?;
        for (name, result) in batch.iter().zip(results) {
            let path = format!("{dir}/{name}");
            // An error means the node is gone since the listing: the next child event tells.
            if let MultiReadResult::Data { data, .. } = result {
                let entry = if parse_pod_node(name).is_none() {
                    tracing::warn!(%path, "skipping a foreign node under pods/ (expected `<uuid>.<seq>`)");
                    Cached::Foreign
                } else {
                    match parse_registration(&data) {
                        Ok(reg) => Cached::Good(Box::new(reg)),
                        Err(why) => Cached::Bad(why),
                    }
                };
                cache.insert((*name).clone(), entry);
            }
        }
    }
    let mut by_key: BTreeMap<String, PodNode> = BTreeMap::new();
    for name in &children {
        let (Some(Cached::Good(reg)), Some((key, counter))) =
            (cache.get(name), parse_pod_node(name))
        else {
            continue;
        };
        let mut registration = Registration::clone(reg);
        let seq = registration.seq.unwrap_or(counter);
        registration.seq = Some(seq);
        let entry = PodNode {
            key: key.to_string(),
            node: name.clone(),
            seq,
            registration,
        };
        match by_key.get(key) {
            Some(old) if parse_pod_node(&old.node).map(|(_, c)| c) > Some(counter) => {}
            _ => {
                by_key.insert(key.to_string(), entry);
            }
        }
    }
    Ok(by_key.into_values().collect())
}

/// The pods of [`read_pods`] as a map key -> registration (seq filled in).
pub(crate) fn to_pods(nodes: Vec<PodNode>) -> Pods {
    nodes.into_iter().map(|n| (n.key, n.registration)).collect()
}

/// Reads `P/snapshot`: `None` when missing or malformed.
pub(crate) async fn read_snapshot(client: &Client, p: &str) -> Result<Option<Pods>, Error> {
    let path = format!("{p}/snapshot");
    match client.get_data(&path).await {
        Ok((data, _)) => Ok(parse_snapshot(&path, &data)),
        Err(zookeeper_client::Error::NoNode) => Ok(None),
        Err(e) => Err(Error::zk("get_data", path)(e)),
    }
}

/// Reads `P/hash`: `None` when missing.
pub(crate) async fn read_hash(client: &Client, p: &str) -> Result<Option<String>, Error> {
    let path = format!("{p}/hash");
    match client.get_data(&path).await {
        Ok((data, _)) => Ok(Some(String::from_utf8_lossy(&data).trim().to_string())),
        Err(zookeeper_client::Error::NoNode) => Ok(None),
        Err(e) => Err(Error::zk("get_data", path)(e)),
    }
}

/// `P/pause`, the operator's pause of the cluster (`None` when not paused).
pub(crate) async fn read_pause(client: &Client, p: &str) -> Result<Option<Pause>, Error> {
    let path = format!("{p}/pause");
    match client.get_data(&path).await {
        Ok((data, _)) => Ok(Some(Pause::from_slice(&data))),
        Err(zookeeper_client::Error::NoNode) => Ok(None),
        Err(e) => Err(Error::zk("get_data", path)(e)),
    }
}

/// Lists the clusters (`ns.cl`) under [`ROOT`], sorted.
pub(crate) async fn list_clusters(client: &Client) -> Result<Vec<String>, Error> {
    match client.list_children(ROOT).await {
        Ok(mut children) => {
            children.sort();
            Ok(children)
        }
        Err(zookeeper_client::Error::NoNode) => Ok(Vec::new()),
        Err(e) => Err(Error::zk("list_children", ROOT)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert_eq!(
            parse_pod_node("6f1c1a4e-0000-4000-8000-000000000001.0000000042"),
            Some(("6f1c1a4e-0000-4000-8000-000000000001", 42))
        );
        assert_eq!(parse_pod_node("a.b.0000000001"), Some(("a.b", 1)));
        for bad in ["nodot", ".0000000001", "k.12", "k.00000000x1", "k."] {
            assert_eq!(parse_pod_node(bad), None, "{bad}");
        }
        assert_eq!(lock_seq("abc__lock__0000000007"), Some(7));
        assert_eq!(lock_seq("abc-0000000007"), None);
        assert_eq!(lock_prefix("abc__lock__0000000007"), "abc");
        assert_eq!(hex32("6f1c1a4e-0000-4000-8000-000000000001").len(), 32);
    }

    #[test]
    fn snapshots_skip_bad_entries() {
        let data = br#"{"a": {"cluster":"c","namespace":"n","ip":"1.2.3.4"}, "b": {"ip": ""}}"#;
        let pods = parse_snapshot("/p", data).unwrap();
        assert_eq!(pods.keys().collect::<Vec<_>>(), vec!["a"]);
        assert!(parse_snapshot("/p", b"[1,2]").is_none());
        assert!(parse_snapshot("/p", b"").is_none());
    }

    #[test]
    fn cluster_names() {
        assert!(check_cluster("prod.web").is_ok());
        for bad in ["prod", ".web", "prod.", "a/b.c", "a .b"] {
            let err = check_cluster(bad).unwrap_err().to_string();
            assert!(err.contains("namespace.cluster"), "{bad}: {err}");
        }
    }
}
