//! An independent ZooKeeper client for cross-checks: python kazoo via `tests/py/zkdump.py`.

use crate::error::{Error, Result};
use crate::util::{run, workspace_root};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// Installs kazoo and requests with pip when `python3 -c "import kazoo, requests"` fails; once
/// per process.
pub fn ensure_python_deps() -> Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    let have = Command::new("python3")
        .args(["-c", "import kazoo, requests"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::io("running python3 (install python3 and python3-pip)", e))?
        .success();
    if !have {
        let pip = |extra: &[&str]| {
            run(Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(extra)
                .args(["kazoo", "requests"]))
        };
        // Debian's own python refuses pip installs unless told otherwise (PEP 668).
        pip(&[]).or_else(|_| pip(&["--break-system-packages"]))?;
    }
    *done = true;
    Ok(())
}

/// One ZooKeeper node as read by kazoo, with its subtree.
#[derive(Clone, Debug, PartialEq)]
pub struct ZNode {
    /// Last path component.
    pub name: String,
    /// Full path.
    pub path: String,
    /// Data as UTF-8 text (`None` when empty-null or not UTF-8).
    pub data: Option<String>,
    /// Session id owning the node; 0 for persistent nodes.
    pub ephemeral_owner: i64,
    /// Transaction id that created the node.
    pub czxid: i64,
    /// Transaction id that last modified the node.
    pub mzxid: i64,
    /// Data version.
    pub version: i64,
    /// Children, sorted by name.
    pub children: Vec<ZNode>,
}

impl ZNode {
    fn from_json(v: &Value) -> Result<ZNode> {
        let bad = |why: &str| Error::Payload {
            from: "tests/py/zkdump.py".into(),
            why: format!("{why} in {v}"),
        };
        let int = |k: &str| v.get(k).and_then(Value::as_i64).ok_or_else(|| bad(k));
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(k))
        };
        let children = v
            .get("children")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("children"))?
            .iter()
            .map(ZNode::from_json)
            .collect::<Result<Vec<_>>>()?;
        Ok(ZNode {
            name: text("name")?,
            path: text("path")?,
            data: v.get("data").and_then(Value::as_str).map(str::to_string),
            ephemeral_owner: int("ephemeral_owner")?,
            czxid: int("czxid")?,
            mzxid: int("mzxid")?,
            version: int("version")?,
            children,
        })
    }

    /// True for an ephemeral node.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral_owner != 0
    }

    /// The direct child named `name`.
    pub fn child(&self, name: &str) -> Option<&ZNode> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The node at `rel` below this one (`"pods"`, `"coordinator/x"`).
    pub fn at(&self, rel: &str) -> Option<&ZNode> {
        rel.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self, |n, part| n.child(part))
    }

    /// Names of the direct children.
    pub fn child_names(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }

    /// The data parsed as JSON.
    pub fn json(&self) -> Result<Value> {
        let text = self.data.as_deref().ok_or_else(|| Error::Payload {
            from: self.path.clone(),
            why: "the node has no UTF-8 data".into(),
        })?;
        serde_json::from_str(text).map_err(|e| Error::Payload {
            from: self.path.clone(),
            why: format!("not JSON ({e}): {text:?}"),
        })
    }
}

/// A kazoo client pointed at one ZooKeeper connection string; each call is one short python run.
#[derive(Clone, Debug)]
pub struct Kazoo {
    hosts: String,
    script: PathBuf,
    timeout: Duration,
}

impl Kazoo {
    /// A client for `hosts` (e.g. [`crate::ZkServer::connect_string`]); installs kazoo if needed.
    pub fn new(hosts: &str) -> Result<Self> {
        ensure_python_deps()?;
        Ok(Kazoo {
            hosts: hosts.to_string(),
            script: workspace_root().join("tests/py/zkdump.py"),
            timeout: Duration::from_secs(10),
        })
    }

    /// How long one call waits to connect before failing (default 10 s); shorten it to poll
    /// while ZooKeeper may be down.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn call(&self, args: &[&str]) -> Result<Value> {
        let out = run(Command::new("python3")
            .arg(&self.script)
            .arg("--hosts")
            .arg(&self.hosts)
            .arg("--timeout")
            .arg(self.timeout.as_secs_f64().to_string())
            .args(args))?;
        serde_json::from_str(out.trim()).map_err(|e| Error::Payload {
            from: "tests/py/zkdump.py".into(),
            why: format!("not JSON ({e}): {out:?}"),
        })
    }

    /// The subtree at `path`, or `None` when the node does not exist.
    pub fn dump(&self, path: &str) -> Result<Option<ZNode>> {
        let v = self.call(&["dump", path])?;
        if v.is_null() {
            return Ok(None);
        }
        ZNode::from_json(&v).map(Some)
    }

    /// Creates a persistent node (and its parents) holding `data`.
    pub fn create(&self, path: &str, data: &str) -> Result<()> {
        self.call(&["create", path, data]).map(drop)
    }

    /// Overwrites a node's data.
    pub fn set(&self, path: &str, data: &str) -> Result<()> {
        self.call(&["set", path, data]).map(drop)
    }

    /// Deletes a node (with its subtree when `recursive`).
    pub fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        if recursive {
            self.call(&["delete", path, "-r"]).map(drop)
        } else {
            self.call(&["delete", path]).map(drop)
        }
    }

    /// `/ochopod/clusters/<namespace>.<cluster>`: the cluster's root
    /// (`docs/protocol.md#zookeeper-layout`).
    pub fn cluster_path(namespace: &str, cluster: &str) -> String {
        format!("/ochopod/clusters/{namespace}.{cluster}")
    }
}
