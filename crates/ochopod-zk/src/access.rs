//! Whether this client's ZooKeeper credential may write a cluster's nodes, asked of ZooKeeper
//! itself before an agent starts, so a wrong credential fails at once instead of retrying.

use zookeeper_client::{self as zk, Acls, CreateMode, MultiWriteError};

use crate::layout::{cluster_path, ROOT};
use crate::settings::{Target, ZkSettings};
use crate::Error;

/// What [`check_access`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// ZooKeeper would let this credential create the cluster's nodes (the cluster's layout
    /// exists now, created with this credential's ACLs when it was missing).
    Granted,
    /// ZooKeeper could not be asked (not reachable, session not established in time): the
    /// coordinator's own retries will tell.
    Unknown(String),
}

/// Asks ZooKeeper whether `settings`' credential may write the nodes of `cluster`
/// (`namespace.cluster`): creates the cluster's layout when missing (as the coordinator does,
/// with the same ACLs), then sends one transaction that creates a node under `P`, `P/pods` and
/// `P/coordinator` and ends with a version check that always fails, so nothing is ever applied
/// and no watch fires. A refusal is [`Error::Denied`]; anything else that prevents the check
/// is [`Access::Unknown`].
pub async fn check_access(settings: &ZkSettings, cluster: &str) -> Result<Access, Error> {
    crate::layout::check_cluster(cluster)?;
    let target = Target::parse(settings)?;
    if let Err(e) = crate::directory::refuse_early(&target.hosts).await {
        return Ok(Access::Unknown(e.to_string()));
    }
    let client = match tokio::time::timeout(target.session_timeout, target.connect()).await {
        Ok(Ok(client)) => client,
        Ok(Err(e @ Error::Denied { .. })) => return Err(e),
        Ok(Err(e)) => return Ok(Access::Unknown(e.to_string())),
        Err(_) => return Ok(Access::Unknown("no session in time".into())),
    };
    let result = probe(&client, &target, cluster).await;
    drop(client);
    result
}

async fn probe(client: &zk::Client, target: &Target, cluster: &str) -> Result<Access, Error> {
    let p = cluster_path(cluster);
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    match client.mkdir(ROOT, &open).await {
        Ok(()) | Err(zk::Error::NodeExists) => {}
        Err(e) => return Err(Error::zk("mkdir", ROOT)(e)),
    }
    let acls = target.cluster_acls();
    let ours = CreateMode::Persistent.with_acls(Acls::new(&acls));
    for path in [p.clone(), format!("{p}/pods"), format!("{p}/coordinator")] {
        match client.create(&path, b"", &ours).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(Error::zk("create", path)(e)),
        }
    }
    let probe_name = format!("ochopod-access-check-{}", std::process::id());
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::new(&acls));
    let mut writer = client.new_multi_writer();
    let dirs = [p.clone(), format!("{p}/pods"), format!("{p}/coordinator")];
    for dir in &dirs {
        writer
            .add_create(&format!("{dir}/{probe_name}"), b"", &ephemeral)
            .map_err(Error::zk("create", dir.clone()))?;
    }
    // No node ever has this version: the transaction always fails here if it got this far.
    writer
        .add_check_version(&p, i32::MAX)
        .map_err(Error::zk("check", p.clone()))?;
    match writer.commit().await {
        Err(MultiWriteError::OperationFailed { index, source }) if index < dirs.len() => {
            Err(Error::zk("create", format!("{}/{probe_name}", dirs[index]))(source))
        }
        Err(MultiWriteError::OperationFailed { .. }) => Ok(Access::Granted),
        // Applied after all (cannot happen): take the probes away again.
        Ok(_) => {
            for dir in &dirs {
                let _ = client.delete(&format!("{dir}/{probe_name}"), None).await;
            }
            Ok(Access::Granted)
        }
        Err(MultiWriteError::RequestFailed { source }) => {
            Ok(Access::Unknown(format!("ZooKeeper multi on {p}: {source}")))
        }
    }
}
