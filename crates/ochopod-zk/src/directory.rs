//! The operators' view (`ochopod ls`, tools): clusters, pods, hashes, snapshots, leaders and a
//! change feed, read-only.

use std::collections::HashMap;

use ochopod_core::{HistoryEntry, Pause, Pods, Registration};
use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode, EventType, PersistentWatcher};

use crate::layout::{self, check_cluster, cluster_path, hex32, lock_prefix, lock_seq, ROOT};
use crate::settings::{Target, ZkSettings};
use crate::Error;

/// One registered pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEntry {
    /// The pod's key (its UUID, the node name before the dot).
    pub key: String,
    /// The node's name under `P/pods/`.
    pub node: String,
    /// The pod's seq (from the payload, else the node name's counter).
    pub seq: u64,
    /// The registration (with `seq` filled in).
    pub registration: Registration,
}

/// A read-only ZooKeeper session for operators and tools.
///
/// ```no_run
/// # async fn demo() -> Result<(), ochopod_zk::Error> {
/// use std::time::Duration;
/// use ochopod_zk::{Directory, ZkSettings};
///
/// let dir = Directory::connect(&ZkSettings::new("127.0.0.1:2181", Duration::from_secs(5))).await?;
/// for cluster in dir.clusters().await? {
///     let leader = dir.leader(&cluster).await?;
///     println!("{cluster}: hash {:?}, leader {:?}", dir.hash(&cluster).await?, leader);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Directory {
    client: Client,
    /// What the nodes this client creates get (the cluster's ACL: with a credential, only its
    /// holders may change them).
    acls: Vec<zookeeper_client::Acl>,
}

impl Directory {
    /// Connects (with the settings' chroot and auth).
    ///
    /// Fails at once, naming each host's error, when no host accepts a TCP connection (refused,
    /// unknown name): a tool should not wait out a session timeout to say ZooKeeper is not there.
    pub async fn connect(settings: &ZkSettings) -> Result<Directory, Error> {
        let target = Target::parse(settings)?;
        refuse_early(&target.hosts).await?;
        Ok(Directory {
            client: target.connect().await?,
            acls: target.cluster_acls(),
        })
    }

    /// Every cluster (`ns.cl`), sorted.
    pub async fn clusters(&self) -> Result<Vec<String>, Error> {
        layout::list_clusters(&self.client).await
    }

    /// Every namespace that has a cluster, sorted.
    pub async fn namespaces(&self) -> Result<Vec<String>, Error> {
        let mut namespaces: Vec<String> = self
            .clusters()
            .await?
            .into_iter()
            .filter_map(|c| c.split_once('.').map(|(ns, _)| ns.to_string()))
            .collect();
        namespaces.dedup();
        Ok(namespaces)
    }

    /// The pods registered in `cluster` (`ns.cl`), by key; foreign or malformed nodes are
    /// logged and skipped.
    pub async fn pods(&self, cluster: &str) -> Result<Vec<PodEntry>, Error> {
        check_cluster(cluster)?;
        let dir = format!("{}/pods", cluster_path(cluster));
        let mut cache = HashMap::new();
        let nodes = layout::read_pods(&self.client, &dir, &mut cache).await?;
        for (name, entry) in &cache {
            if let layout::Cached::Bad(why) = entry {
                tracing::warn!(node = %format!("{dir}/{name}"), %why, "skipping an unreadable registration");
            }
        }
        Ok(nodes
            .into_iter()
            .map(|n| PodEntry {
                key: n.key,
                node: n.node,
                seq: n.seq,
                registration: n.registration,
            })
            .collect())
    }

    /// The hash last committed in `cluster`.
    pub async fn hash(&self, cluster: &str) -> Result<Option<String>, Error> {
        check_cluster(cluster)?;
        layout::read_hash(&self.client, &cluster_path(cluster)).await
    }

    /// The snapshot of `cluster` (the pods of its last configuration), if any.
    pub async fn snapshot(&self, cluster: &str) -> Result<Option<Pods>, Error> {
        check_cluster(cluster)?;
        layout::read_snapshot(&self.client, &cluster_path(cluster)).await
    }

    /// The cluster's round history (`P/history`), oldest first; empty when none was recorded.
    pub async fn history(&self, cluster: &str) -> Result<Vec<HistoryEntry>, Error> {
        check_cluster(cluster)?;
        let path = format!("{}/history", cluster_path(cluster));
        match self.client.get_data(&path).await {
            Ok((data, _)) => HistoryEntry::parse_all(&data).map_err(Error::Input),
            Err(zookeeper_client::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(Error::zk("get_data", path)(e)),
        }
    }

    /// The cluster's pause (`P/pause`), if paused.
    pub async fn pause(&self, cluster: &str) -> Result<Option<Pause>, Error> {
        check_cluster(cluster)?;
        layout::read_pause(&self.client, &cluster_path(cluster)).await
    }

    /// Pauses the cluster (`Some`: writes `P/pause`, kept until resumed, whatever happens to
    /// its pods) or resumes it (`None`: deletes it). The cluster must exist.
    pub async fn set_pause(&self, cluster: &str, pause: Option<&Pause>) -> Result<(), Error> {
        check_cluster(cluster)?;
        let p = cluster_path(cluster);
        let path = format!("{p}/pause");
        let Some(pause) = pause else {
            return match self.client.delete(&path, None).await {
                Ok(()) | Err(zookeeper_client::Error::NoNode) => Ok(()),
                Err(e) => Err(Error::zk("delete", path)(e)),
            };
        };
        let data = serde_json::to_vec(pause).expect("a pause serializes");
        match self.client.set_data(&path, &data, None).await {
            Ok(_) => return Ok(()),
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(Error::zk("set_data", path)(e)),
        }
        let options = CreateMode::Persistent.with_acls(Acls::new(&self.acls));
        match self.client.create(&path, &data, &options).await {
            Ok(_) => Ok(()),
            Err(zookeeper_client::Error::NoNode) => Err(Error::Input(format!(
                "no cluster {cluster} in ZooKeeper (`ochopod ls` lists them)"
            ))),
            // Created meanwhile by another operator: write ours over it.
            Err(zookeeper_client::Error::NodeExists) => self
                .client
                .set_data(&path, &data, None)
                .await
                .map(|_| ())
                .map_err(Error::zk("set_data", path)),
            Err(e) => Err(Error::zk("create", path)(e)),
        }
    }

    /// The key of the pod holding `cluster`'s lock: the lowest `__lock__` contender, matched to
    /// a registered pod by its 32-hex prefix (Rust pods) or by its data (contenders that store
    /// their key or identifier there); otherwise the contender's prefix as is. `None` when
    /// nobody holds the lock.
    pub async fn leader(&self, cluster: &str) -> Result<Option<String>, Error> {
        check_cluster(cluster)?;
        let dir = format!("{}/coordinator", cluster_path(cluster));
        let mut contenders: Vec<(u64, String)> = match self.client.list_children(&dir).await {
            Ok(children) => children
                .into_iter()
                .filter_map(|c| lock_seq(&c).map(|s| (s, c)))
                .collect(),
            Err(zookeeper_client::Error::NoNode) => return Ok(None),
            Err(e) => return Err(Error::zk("list_children", dir)(e)),
        };
        contenders.sort();
        let Some((_, holder)) = contenders.into_iter().next() else {
            return Ok(None);
        };
        let prefix = lock_prefix(&holder).to_string();
        let pods = self.pods(cluster).await?;
        if let Some(pod) = pods.iter().find(|p| hex32(&p.key) == prefix) {
            return Ok(Some(pod.key.clone()));
        }
        let path = format!("{dir}/{holder}");
        if let Ok((data, _)) = self.client.get_data(&path).await {
            let data = String::from_utf8_lossy(&data).trim().to_string();
            if pods.iter().any(|p| p.key == data) {
                return Ok(Some(data));
            }
        }
        Ok(Some(prefix))
    }

    /// A feed that fires on any change under `/ochopod/clusters` (pods joining or leaving,
    /// snapshots, hashes, locks, clusters appearing).
    pub async fn watch(&self) -> Result<DirectoryWatch, Error> {
        let watcher = self
            .client
            .watch(ROOT, AddWatchMode::PersistentRecursive)
            .await
            .map_err(Error::zk("watch", ROOT))?;
        Ok(DirectoryWatch {
            watcher: Some(watcher),
        })
    }

    /// Closes the session.
    pub async fn close(self) {
        let mut state = self.client.state_watcher();
        let timeout = self.client.session_timeout();
        drop(self.client);
        let _ = tokio::time::timeout(timeout, async {
            while !state.peek_state().is_terminated() {
                state.changed().await;
            }
        })
        .await;
    }
}

/// Change feed of [`Directory::watch`].
#[derive(Debug)]
pub struct DirectoryWatch {
    watcher: Option<PersistentWatcher>,
}

impl DirectoryWatch {
    /// Waits for the next change and returns the path that changed (relative to the chroot).
    /// Fails once the session has ended; connect again then.
    pub async fn changed(&mut self) -> Result<String, Error> {
        loop {
            let Some(watcher) = self.watcher.as_mut() else {
                return Err(Error::SessionEnded);
            };
            let event = watcher.changed().await;
            if event.event_type == EventType::Session {
                if event.session_state.is_terminated() {
                    self.watcher = None;
                }
                continue;
            }
            return Ok(event.path);
        }
    }
}

/// Errors out when every host of `hosts` (`h1:p1,h2:p2`) refuses a TCP connection or cannot be
/// resolved. A host that does not answer within a second may still be slow rather than absent:
/// then the ZooKeeper client's own connect (bounded by the session timeout) decides.
pub(crate) async fn refuse_early(hosts: &str) -> Result<(), Error> {
    let mut errors = Vec::new();
    for host in hosts.split(',') {
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::net::TcpStream::connect(host),
        )
        .await;
        match attempt {
            Ok(Ok(_)) | Err(_) => return Ok(()),
            Ok(Err(e)) => errors.push(format!("{host}: {e}")),
        }
    }
    Err(Error::Input(format!(
        "no ZooKeeper server accepts connections ({}): check the connection string and that the server runs",
        errors.join("; ")
    )))
}
