//! Mixed clusters and what ZooKeeper sees: [`Pod1x`], our Python pod that behaves like an
//! Ochopod 1.x pod (`tests/py/pod1x.py`), and ZooKeeper's own counters ([`mntr`], [`cons`]).
//! A kazoo reading of one cluster is [`crate::ClusterZk`].

use crate::error::{Error, Result};
use crate::kazoo::ensure_python_deps;
use crate::ports::free_port;
use crate::util::{file_tail, workspace_root};
use crate::wait::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tempfile::TempDir;

/// One control call a [`Pod1x`] received.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// `check`, `on`, `off`, `ok` or `kill`.
    pub task: String,
    /// The `<timeout>` of the URL (whole seconds), when given.
    pub timeout: Option<u64>,
    /// The `X-Ochopod-Epoch` header, when sent (our leaders send it, 1.x leaders do not).
    pub epoch: Option<String>,
    /// The JSON body.
    pub body: Value,
}

impl Call {
    /// Keys of `body.pods`.
    pub fn pod_keys(&self) -> BTreeSet<String> {
        self.body
            .get("pods")
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// A running `tests/py/pod1x.py`: registered under `pods/`, contending for the cluster lock,
/// serving 1.x control routes on 127.0.0.1:[`Pod1x::port`]. Killed on drop.
#[derive(Debug)]
pub struct Pod1x {
    child: Mutex<Option<Child>>,
    dir: TempDir,
    port: u16,
    key: String,
    seq: u64,
    http: ureq::Agent,
}

impl Pod1x {
    /// Starts a 1.x pod of `namespace.cluster` on ZooKeeper `hosts` with a 3 s session; with
    /// `lead`, it configures the cluster (check, on, ok; snapshot; MD5 hash) while it holds the
    /// lock. It registers as 1.x does: its node created empty, its payload set right after.
    /// Returns once it is registered.
    pub fn spawn(hosts: &str, namespace: &str, cluster: &str, lead: bool) -> Result<Pod1x> {
        Self::spawn_with_gap(hosts, namespace, cluster, lead, Duration::ZERO)
    }

    /// [`Pod1x::spawn`], with `gap` between the creation of its (empty) pod node and the write
    /// of its payload.
    pub fn spawn_with_gap(
        hosts: &str,
        namespace: &str,
        cluster: &str,
        lead: bool,
        gap: Duration,
    ) -> Result<Pod1x> {
        ensure_python_deps()?;
        let dir = tempfile::Builder::new()
            .prefix("ochopod-pod1x-")
            .tempdir()
            .map_err(|e| Error::io("creating a pod1x folder", e))?;
        let port = free_port()?;
        let out = dir.path().join("pod1x.out");
        let open = |p: &Path| {
            fs::File::create(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))
        };
        let mut cmd = Command::new("python3");
        cmd.arg(workspace_root().join("tests/py/pod1x.py"))
            .args([
                "--hosts",
                hosts,
                "--namespace",
                namespace,
                "--cluster",
                cluster,
            ])
            .arg("--port")
            .arg(port.to_string())
            .arg("--calls")
            .arg(dir.path().join("calls.jsonl"))
            .stdin(Stdio::null())
            .stdout(open(&out)?)
            .stderr(open(&dir.path().join("pod1x.log"))?);
        if lead {
            cmd.arg("--lead");
        }
        cmd.arg("--gap").arg(gap.as_millis().to_string());
        let child = cmd
            .spawn()
            .map_err(|e| Error::io("starting python3 tests/py/pod1x.py", e))?;
        let mut pod = Pod1x {
            child: Mutex::new(Some(child)),
            dir,
            port,
            key: String::new(),
            seq: 0,
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into(),
        };
        let first: Value = wait_until(Duration::from_secs(30), "pod1x to register", || {
            if let Some(line) = fs::read_to_string(&out)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string))
            {
                return serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"));
            }
            if !pod.is_alive() {
                return Err(format!("pod1x exited; log: {}", pod.log_tail(1500)));
            }
            Err("not registered yet".into())
        })?;
        pod.key = first["key"].as_str().unwrap_or_default().to_string();
        pod.seq = first["seq"].as_u64().unwrap_or_default();
        if pod.key.is_empty() {
            return Err(Error::Payload {
                from: "tests/py/pod1x.py".into(),
                why: format!("no key in its first line: {first}"),
            });
        }
        Ok(pod)
    }

    /// The pod's key (its UUID).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The ZooKeeper counter of its registration.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Its control port on 127.0.0.1 (registered as `ports {"8080": port}`, `port "8080"`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its folder (`calls.jsonl`, `pod1x.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `max` bytes of its log.
    pub fn log_tail(&self, max: usize) -> String {
        file_tail(&self.dir.path().join("pod1x.log"), max)
    }

    /// True while the process runs.
    pub fn is_alive(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Every control call received so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        let text = fs::read_to_string(self.dir.path().join("calls.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Call {
                task: v["task"].as_str().unwrap_or_default().to_string(),
                timeout: v["timeout"].as_u64(),
                epoch: v["epoch"].as_str().map(str::to_string),
                body: v["body"].clone(),
            })
            .collect()
    }

    fn post(&self, path: &str) -> Result<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut resp = self.http.post(&url).send_empty().map_err(|e| Error::Http {
            url: url.clone(),
            why: e.to_string(),
        })?;
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        serde_json::from_str(&text).map_err(|e| Error::Payload {
            from: url,
            why: format!("not JSON ({e}): {text:?}"),
        })
    }

    /// Its `/info`: {key, seq, cluster, state (`leader` while it holds the lock, else
    /// `follower`), process, lock_node}.
    pub fn info(&self) -> Result<Value> {
        self.post("/info")
    }

    /// True while it holds the cluster lock (its `/info` says `leader`).
    pub fn is_leading(&self) -> Result<bool> {
        Ok(self.info()?["state"] == "leader")
    }

    /// Releases the lock and stops competing; it stays registered and keeps answering.
    pub fn release(&self) -> Result<()> {
        self.post("/release").map(drop)
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let pid = child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| Error::Usage("pod1x is not running".into()))?;
        kill(Pid::from_raw(pid as i32), sig)
            .map_err(|e| Error::io(format!("sending {sig} to pod1x"), e.into()))
    }

    /// SIGKILL: its nodes vanish when its session expires.
    pub fn kill9(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)?;
        wait_until(Duration::from_secs(10), "pod1x to exit", || {
            if self.is_alive() {
                Err("still running".into())
            } else {
                Ok(())
            }
        })
    }
}

impl Drop for Pod1x {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a four-letter word (`mntr`, `cons`, `srvr`, ...) to a ZooKeeper on 127.0.0.1:`port`
/// and returns its answer (the server must whitelist it, as `scripts/zk.sh` does).
pub fn four_letter(port: u16, word: &str) -> Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let what = format!("asking ZooKeeper {addr} `{word}`");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| Error::io(what.clone(), e))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| Error::io(what.clone(), e))?;
    s.write_all(word.as_bytes())
        .map_err(|e| Error::io(what.clone(), e))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| Error::io(what, e))?;
    Ok(out)
}

/// `mntr` as a map (`zk_packets_received` -> `"123"`, ...).
pub fn mntr(port: u16) -> Result<BTreeMap<String, String>> {
    let out = four_letter(port, "mntr")?;
    let map: BTreeMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    if map.is_empty() {
        return Err(Error::Payload {
            from: "mntr".into(),
            why: format!("no `key<TAB>value` lines (is `4lw.commands.whitelist` set?): {out:?}"),
        });
    }
    Ok(map)
}

/// One client connection as `cons` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The session id (`0x...`).
    pub sid: String,
    /// Packets received from this client.
    pub recved: u64,
    /// The last client xid: every request but a ping advances it.
    pub lcxid: String,
}

/// Every client session `cons` shows, by session id (the `cons` connection itself has none).
pub fn cons(port: u16) -> Result<BTreeMap<String, Connection>> {
    let out = four_letter(port, "cons")?;
    let field = |line: &str, name: &str| {
        line.split([',', '(', ')']).find_map(|f| {
            f.trim()
                .strip_prefix(&format!("{name}="))
                .map(str::to_string)
        })
    };
    Ok(out
        .lines()
        .filter_map(|line| {
            let sid = field(line, "sid")?;
            Some((
                sid.clone(),
                Connection {
                    sid,
                    recved: field(line, "recved")?.parse().ok()?,
                    lcxid: field(line, "lcxid")?,
                },
            ))
        })
        .collect())
}

/// Where the pod1x script lives (for messages).
pub fn pod1x_script() -> PathBuf {
    workspace_root().join("tests/py/pod1x.py")
}
