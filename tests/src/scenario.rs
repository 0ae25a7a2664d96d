//! Shared pieces of the resilience suites: clusters of sleeping pods, what `/info` says about
//! them, and the fence check replayed from ZooKeeper's own transaction log
//! (`tests/py/zkfence.py`). What ZooKeeper holds, settled clusters and control calls with a
//! chosen leader epoch are in [`crate::ClusterZk`], [`crate::wait_settled`] and
//! [`crate::control_with_epoch`].

use crate::agent::PodSpec;
use crate::error::{Error, Result};
use crate::kazoo::Kazoo;
use crate::util::{run, workspace_root};
use ochopod_core::wire::Info;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// What `tests/py/zkfence.py` found in a server's transaction log.
#[derive(Clone, Debug)]
pub struct Fence {
    /// Transactions replayed.
    pub txns: u64,
    /// Transactions that wrote `snapshot` or `hash`.
    pub writes: u64,
    /// Commits (`hash` written): (writer's pod key, snapshot keys).
    pub commits: Vec<(Option<String>, Option<BTreeSet<String>>)>,
    /// When each of [`Fence::commits`] was logged: (zxid, server time in ms).
    pub commit_at: Vec<(u64, u64)>,
    /// Pod sessions that ended (closed or expired: their nodes went with them), in zxid order.
    pub closes: Vec<Close>,
    /// Writes not made by the lock holder's session.
    pub violations: Vec<String>,
    /// Lock contenders ever created.
    pub contenders_seen: u64,
}

/// A pod's ZooKeeper session ending, as the transaction log has it.
#[derive(Clone, Debug)]
pub struct Close {
    /// The pod key whose node the session had created.
    pub key: String,
    /// The `closeSession` transaction.
    pub zxid: u64,
    /// The server's clock when it logged it (ms since the Unix epoch).
    pub time_ms: u64,
}

/// Replays the transaction log in `data_dir` (a standalone server's `data/` folder) and checks
/// that only the lock holder's session wrote `snapshot` or `hash` of `namespace.cluster`.
///
/// A failing script or an answer missing a field is an error, never "no violation".
pub fn fence_check(data_dir: &Path, namespace: &str, cluster: &str) -> Result<Fence> {
    let out = run(Command::new("python3")
        .arg(workspace_root().join("tests/py/zkfence.py"))
        .arg("--data")
        .arg(data_dir)
        .arg("--cluster")
        .arg(Kazoo::cluster_path(namespace, cluster)))?;
    let bad = |why: String| Error::Payload {
        from: "tests/py/zkfence.py".into(),
        why,
    };
    let v: Value =
        serde_json::from_str(out.trim()).map_err(|e| bad(format!("not JSON ({e}): {out:?}")))?;
    let n = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("no count `{k}` in {v}")))
    };
    let list = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("no list `{k}` in {v}")))
    };
    let field = |o: &Value, k: &str| {
        o.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("no `{k}` in {o}")))
    };
    let mut commits = Vec::new();
    let mut commit_at = Vec::new();
    for c in list("commits")? {
        let key = c.get("key").and_then(Value::as_str).map(str::to_string);
        let snap = c.get("snapshot").and_then(Value::as_array).map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
        commits.push((key, snap));
        commit_at.push((field(c, "zxid")?, field(c, "time_ms")?));
    }
    let closes = list("closes")?
        .iter()
        .map(|c| {
            Ok(Close {
                key: c
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("no `key` in {c}")))?
                    .to_string(),
                zxid: field(c, "zxid")?,
                time_ms: field(c, "time_ms")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let violations = list("violations")?
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("a violation that is not text: {x}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Fence {
        txns: n("txns")?,
        writes: n("writes")?,
        commits,
        commit_at,
        closes,
        violations,
        contenders_seen: n("contenders_seen")?,
    })
}
