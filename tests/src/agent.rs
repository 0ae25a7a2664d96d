//! `ochopod run` agent processes, their specs, signals and HTTP.

use crate::error::{Error, Result};
use crate::ports::free_port;
use crate::util::{file_tail, run, tail, workspace_root};
use crate::wait::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ochopod_core::wire::Info;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tempfile::TempDir;

/// Environment variable naming a prebuilt `ochopod` binary (skips the harness's own build).
pub const OCHOPOD_BIN: &str = "OCHOPOD_BIN";
/// Set to any value to skip the harness's `cargo build -p ochopod-cli`.
pub const NO_BUILD: &str = "OCHOPOD_E2E_NO_BUILD";
/// Every process an [`Agent`] starts carries `OCHOPOD_E2E_TAG=<unique>` in its environment (the
/// agent hands its environment to its sub-process and hooks), so the harness can find and kill
/// them all on drop, even orphans of a SIGKILLed agent.
const TAG: &str = "OCHOPOD_E2E_TAG";

/// The `ochopod` binary the suites run, built once per test binary.
///
/// `OCHOPOD_BIN` wins when set. Otherwise the binary is `<target>/<profile>/ochopod` next to the
/// running test executable; unless `OCHOPOD_E2E_NO_BUILD` is set, the harness first runs
/// `cargo build -p ochopod-cli --bin ochopod` into that same target dir (cargo does not hold the
/// build lock while tests run, and a fresh binary is a no-op), so `cargo test` alone needs no
/// set-up. Fails with a message naming `cargo build -p ochopod-cli` when it still is missing.
pub fn agent_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, (PathBuf, String)>> = OnceLock::new();
    BIN.get_or_init(locate_or_build)
        .clone()
        .map_err(|(path, why)| Error::MissingBinary { path, why })
}

fn locate_or_build() -> std::result::Result<PathBuf, (PathBuf, String)> {
    if let Some(bin) = std::env::var_os(OCHOPOD_BIN) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err((bin, format!("{OCHOPOD_BIN} points to no file")))
        };
    }
    let exe = std::env::current_exe().map_err(|e| (PathBuf::from("ochopod"), e.to_string()))?;
    // <target>/<profile>/deps/<test-exe>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| (exe.clone(), "cannot find the target dir".to_string()))?;
    let bin = profile_dir.join("ochopod");
    if std::env::var_os(NO_BUILD).is_none() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "ochopod-cli",
            "--bin",
            "ochopod",
            "--manifest-path",
        ])
        .arg(workspace_root().join("Cargo.toml"));
        if let Some(target) = profile_dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
        }
        eprintln!("ochopod-e2e: building the agent: {cmd:?}");
        if let Err(e) = run(&mut cmd) {
            return Err((bin, format!("building it failed: {e}")));
        }
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err((bin, "no such file".into()))
    }
}

/// A pod spec (`docs/spec.md`) built in code, written as `pod.toml` in a fresh folder by
/// [`Agent::spawn`], with any template sources or scripts it needs beside it.
///
/// [`PodSpec::new`] fills `[pod]` with the namespace, cluster, ZooKeeper address, a free control
/// port, `binding = "local"` and a 3 s session, and `[model]` with `damper = 0`. Everything else
/// is set with the builder methods; any key of `docs/spec.md` can be set with [`PodSpec::set`].
#[derive(Clone, Debug)]
pub struct PodSpec {
    root: toml::Table,
    files: Vec<(String, String)>,
    control_port: u16,
}

impl PodSpec {
    /// A spec for one pod of `namespace.cluster` talking to ZooKeeper at `zk`.
    pub fn new(namespace: &str, cluster: &str, zk: &str) -> Result<Self> {
        let control_port = free_port()?;
        let mut spec = PodSpec {
            root: toml::Table::new(),
            files: Vec::new(),
            control_port,
        };
        spec.set("pod", "namespace", namespace)
            .set("pod", "cluster", cluster)
            .set("pod", "zk", zk)
            .set("pod", "port", i64::from(control_port))
            .set("pod", "binding", "local")
            .set("pod", "session_timeout", 3.0)
            .set("model", "damper", 0.0);
        Ok(spec)
    }

    /// Sets `[section] key = value` (e.g. `set("process", "grace", 5.0)`).
    pub fn set(&mut self, section: &str, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        self.table(section).insert(key.to_string(), value.into());
        self
    }

    fn table(&mut self, section: &str) -> &mut toml::Table {
        let entry = self
            .root
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry {
            toml::Value::Table(t) => t,
            _ => unreachable!("just made a table"),
        }
    }

    /// The control port (`[pod] port`), on 127.0.0.1.
    pub fn control_port(&self) -> u16 {
        self.control_port
    }

    /// Maps a container port to a host port in `[ports]`.
    pub fn port(&mut self, container: u16, host: u16) -> &mut Self {
        self.set("ports", &container.to_string(), i64::from(host))
    }

    /// `[process] command`.
    pub fn command(&mut self, command: &str) -> &mut Self {
        self.set("process", "command", command)
    }

    /// A `[hooks]` command (`initialize`, `can_configure`, `configured`, `sanity_check`,
    /// `tear_down`, `reload`, `signal`, `finalize`) or `timeout`.
    pub fn hook(&mut self, name: &str, command: &str) -> &mut Self {
        self.set("hooks", name, command)
    }

    /// A `[[templates]]` entry: `source_text` is written as `source` in the spec's folder and
    /// rendered to `target` (relative paths are from the spec's folder).
    pub fn template(&mut self, source: &str, source_text: &str, target: &str) -> &mut Self {
        self.file(source, source_text);
        let mut t = toml::Table::new();
        t.insert("source".into(), source.into());
        t.insert("target".into(), target.into());
        let list = self
            .root
            .entry("templates")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(a) = list {
            a.push(toml::Value::Table(t));
        }
        self
    }

    /// An extra file written in the spec's folder (a script a hook runs, ...).
    pub fn file(&mut self, name: &str, text: &str) -> &mut Self {
        self.files.push((name.to_string(), text.to_string()));
        self
    }

    /// The spec as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.root).unwrap_or_else(|e| format!("# cannot serialize: {e}"))
    }

    /// Writes `pod.toml` and the extra files into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<PathBuf> {
        for (name, text) in &self.files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
            }
            fs::write(&path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        let spec = dir.join("pod.toml");
        fs::write(&spec, self.to_toml())
            .map_err(|e| Error::io(format!("writing {}", spec.display()), e))?;
        Ok(spec)
    }
}

/// Where an agent's spec comes from.
#[derive(Clone, Debug)]
pub enum SpecSource {
    /// A spec built in code, written to a fresh folder.
    Pod(PodSpec),
    /// A spec's TOML text, written as `pod.toml` in a fresh folder.
    Text(String),
    /// An existing spec: a folder holding `pod.toml`, or the spec file itself.
    Path(PathBuf),
}

impl From<&PodSpec> for SpecSource {
    fn from(s: &PodSpec) -> Self {
        SpecSource::Pod(s.clone())
    }
}
impl From<PodSpec> for SpecSource {
    fn from(s: PodSpec) -> Self {
        SpecSource::Pod(s)
    }
}
impl From<&str> for SpecSource {
    fn from(s: &str) -> Self {
        SpecSource::Text(s.to_string())
    }
}
impl From<String> for SpecSource {
    fn from(s: String) -> Self {
        SpecSource::Text(s)
    }
}
impl From<&Path> for SpecSource {
    fn from(p: &Path) -> Self {
        SpecSource::Path(p.to_path_buf())
    }
}
impl From<PathBuf> for SpecSource {
    fn from(p: PathBuf) -> Self {
        SpecSource::Path(p)
    }
}

/// An HTTP reply from an agent: status and JSON body (a JSON string when the body is not JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
}

/// The control port a spec text declares: `[pod] port` (else `ochopod_port` from `env`, else
/// 8080), through `[ports]` when remapped.
fn control_port_of(text: &str, env: &[(String, String)]) -> Result<u16> {
    let doc: toml::Table = text.parse().map_err(|e| Error::Payload {
        from: "pod.toml".into(),
        why: format!("not TOML: {e}"),
    })?;
    let port = doc
        .get("pod")
        .and_then(|p| p.get("port"))
        .and_then(|v| match v {
            toml::Value::Integer(i) => u16::try_from(*i).ok(),
            toml::Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .or_else(|| {
            env.iter()
                .find(|(k, _)| k == "ochopod_port")
                .and_then(|(_, v)| v.parse().ok())
        })
        .unwrap_or(8080);
    let mapped = doc
        .get("ports")
        .and_then(|p| p.get(port.to_string()))
        .and_then(toml::Value::as_integer)
        .and_then(|i| u16::try_from(i).ok());
    Ok(mapped.unwrap_or(port))
}

static NEXT_TAG: AtomicU64 = AtomicU64::new(0);

/// One `ochopod run --spec <dir>/pod.toml` process on loopback.
///
/// Its output goes to `<dir>/agent.log` (see [`Agent::log_tail`]). On drop the agent is
/// SIGKILLed (after a SIGCONT, in case it was stopped) and so is every process it started.
#[derive(Debug)]
pub struct Agent {
    child: Mutex<Option<Child>>,
    exit: Mutex<Option<ExitStatus>>,
    dir: PathBuf,
    _tmp: Option<TempDir>,
    spec: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
    tag: String,
    http: ureq::Agent,
    own_group: bool,
}

impl Agent {
    /// Starts an agent from a spec ([`PodSpec`], TOML text, or a folder/file) with no extra
    /// environment.
    pub fn spawn(spec: impl Into<SpecSource>) -> Result<Agent> {
        Self::spawn_env(spec, &[])
    }

    /// Starts an agent with extra environment variables (e.g. `ochopod_*` settings, `RUST_LOG`).
    pub fn spawn_env(spec: impl Into<SpecSource>, env: &[(&str, &str)]) -> Result<Agent> {
        Self::start(spec.into(), env, false)
    }

    fn start(spec: SpecSource, env: &[(&str, &str)], own_group: bool) -> Result<Agent> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let fresh = || {
            tempfile::Builder::new()
                .prefix("ochopod-pod-")
                .tempdir()
                .map_err(|e| Error::io("creating a pod folder", e))
        };
        let (tmp, spec_path) = match spec {
            SpecSource::Pod(p) => {
                let tmp = fresh()?;
                let path = p.write_to(tmp.path())?;
                (Some(tmp), path)
            }
            SpecSource::Text(text) => {
                let tmp = fresh()?;
                let path = tmp.path().join("pod.toml");
                fs::write(&path, text).map_err(|e| Error::io("writing pod.toml", e))?;
                (Some(tmp), path)
            }
            SpecSource::Path(p) if p.is_dir() => (None, p.join("pod.toml")),
            SpecSource::Path(p) => (None, p),
        };
        let text = fs::read_to_string(&spec_path)
            .map_err(|e| Error::io(format!("reading {}", spec_path.display()), e))?;
        let port = control_port_of(&text, &env)?;
        let dir = spec_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut agent = Agent {
            child: Mutex::new(None),
            exit: Mutex::new(None),
            dir,
            _tmp: tmp,
            spec: spec_path,
            port,
            env,
            tag: format!(
                "{}-{}",
                std::process::id(),
                NEXT_TAG.fetch_add(1, Ordering::SeqCst)
            ),
            http: http_client(Duration::from_secs(10)),
            own_group,
        };
        agent.respawn()?;
        Ok(agent)
    }

    /// Starts an agent leading a process group of its own, as a shell starts a foreground job,
    /// so [`Agent::signal_group`] can signal it the way a terminal's Ctrl-C does.
    pub fn spawn_own_group(spec: impl Into<SpecSource>, env: &[(&str, &str)]) -> Result<Agent> {
        Self::start(spec.into(), env, true)
    }

    /// Sends `sig` to the agent's process group (only for [`Agent::spawn_own_group`] agents:
    /// the others share the test's group).
    pub fn signal_group(&self, sig: Signal) -> Result<()> {
        if !self.own_group {
            return Err(Error::Usage(
                "signal_group needs an agent from Agent::spawn_own_group".into(),
            ));
        }
        let pid = self
            .pid()
            .ok_or_else(|| Error::Usage(format!("agent {} is not running", self.port)))?;
        nix::sys::signal::killpg(Pid::from_raw(pid as i32), sig).map_err(|e| {
            Error::io(
                format!("sending {sig} to process group {pid}"),
                std::io::Error::from(e),
            )
        })
    }

    /// Starts the agent again with the same spec, folder and environment (after it exited or
    /// was killed); errors if it still runs.
    pub fn respawn(&mut self) -> Result<()> {
        if self.is_alive() {
            return Err(Error::Usage(format!(
                "agent on port {} still runs: kill it before respawning",
                self.port
            )));
        }
        let bin = agent_binary()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| Error::io("opening agent.log", e))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::io("opening agent.log", e))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .arg("--spec")
            .arg(&self.spec)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .env(TAG, &self.tag)
            .env("RUST_BACKTRACE", "1");
        if self.own_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
        *self.lock_exit() = None;
        *self.lock_child() = Some(child);
        Ok(())
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_exit(&self) -> MutexGuard<'_, Option<ExitStatus>> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent's exit status once it exited (reaps it), `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut exit = self.lock_exit();
        if exit.is_none() {
            let mut child = self.lock_child();
            if let Some(c) = child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    *exit = Some(status);
                    *child = None;
                }
            }
        }
        *exit
    }

    /// True while the agent process exists (also when stopped by SIGSTOP).
    pub fn is_alive(&self) -> bool {
        self.lock_child().is_some() && self.exit_status().is_none()
    }

    /// Waits until the agent exits and returns its status.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        wait_until(timeout, &format!("agent {} to exit", self.port), || {
            self.exit_status()
                .ok_or_else(|| format!("still running; log: {}", self.log_tail(600)))
        })
    }

    /// The agent's process id (of its latest spawn).
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(Child::id)
    }

    /// The control port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The spec's folder (templates render here when their targets are relative).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spec file.
    pub fn spec_path(&self) -> &Path {
        &self.spec
    }

    /// `<dir>/agent.log`: the agent's stdout and stderr, across respawns.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// The last `max` bytes of the agent's log.
    pub fn log_tail(&self, max: usize) -> String {
        file_tail(&self.log_path(), max)
    }

    /// Sends `sig` to the agent process (not its sub-process).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::Usage(format!("agent {} is not running", self.port)))?;
        kill(Pid::from_raw(pid as i32), sig).map_err(|e| {
            Error::io(
                format!("sending {sig} to agent {pid}"),
                std::io::Error::from(e),
            )
        })
    }

    /// SIGKILL, and waits until the process is gone (its sub-process may live on, orphaned,
    /// until drop).
    pub fn kill9(&self) -> Result<()> {
        let _ = self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGKILL)?;
        self.wait_exit(Duration::from_secs(10)).map(drop)
    }

    /// SIGTERM (graceful leave); see [`Agent::wait_exit`].
    pub fn sigterm(&self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// SIGSTOP: freezes the agent (its sub-process keeps running).
    pub fn sigstop(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT: resumes a frozen agent.
    pub fn sigcont(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Bounds every HTTP request to this agent (default 10 s). A SIGSTOPped agent still
    /// accepts connections (the kernel does) but never answers, so scenarios that poll a frozen
    /// agent shorten this.
    pub fn set_http_timeout(&mut self, timeout: Duration) {
        self.http = http_client(timeout);
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn reply(
        &self,
        url: &str,
        resp: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply> {
        let mut resp = resp.map_err(|e| self.http_error(url, e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.http_error(url, e.to_string()))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply { status, body })
    }

    fn http_error(&self, url: &str, why: String) -> Error {
        let state = match self.exit_status() {
            Some(status) => format!(
                "; the agent exited ({status}); log: {}",
                self.log_tail(1500)
            ),
            None => String::new(),
        };
        Error::Http {
            url: url.to_string(),
            why: format!("{why}{state}"),
        }
    }

    /// `GET <path>`.
    pub fn get(&self, path: &str) -> Result<Reply> {
        let url = self.url(path);
        self.reply(&url, self.http.get(&url).call())
    }

    /// `POST <path>` with an optional JSON body.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Reply> {
        let url = self.url(path);
        let req = self.http.post(&url);
        let resp = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .send(b.to_string()),
            None => req.send_empty(),
        };
        self.reply(&url, resp)
    }

    /// `POST /control/<task>[/<timeout>]` (`check`, `on`, `off`, `ok`, `kill`, `signal`).
    pub fn control(
        &self,
        task: &str,
        timeout_s: Option<u32>,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let path = match timeout_s {
            Some(t) => format!("/control/{task}/{t}"),
            None => format!("/control/{task}"),
        };
        self.post(&path, body)
    }

    /// `/info` as raw JSON (fields the wire type may not know yet included).
    pub fn info_json(&self) -> Result<Value> {
        let url = self.url("/info");
        let r = self.get("/info")?;
        if r.status != 200 {
            return Err(self.http_error(&url, format!("status {}: {}", r.status, r.body)));
        }
        Ok(r.body)
    }

    /// `/info` parsed as [`Info`] (`docs/http.md`).
    pub fn info(&self) -> Result<Info> {
        let v = self.info_json()?;
        serde_json::from_value(v.clone()).map_err(|e| Error::Payload {
            from: self.url("/info"),
            why: format!("not an Info ({e}): {v}"),
        })
    }

    /// Waits until `/info` satisfies `pred`; on timeout shows the last `/info` (or error).
    pub fn wait_info(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Info) -> bool,
    ) -> Result<Info> {
        wait_until(
            timeout,
            &format!("agent {}: {what}", self.port),
            || match self.info() {
                Ok(i) if pred(&i) => Ok(i),
                Ok(i) => Err(summary_of(&i)),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// One line for failure messages: port, process, state, pid, status.
    pub fn summary(&self) -> String {
        match self.info() {
            Ok(i) => format!("{}: {}", self.port, summary_of(&i)),
            Err(e) => format!("{}: {}", self.port, tail(&e.to_string(), 300)),
        }
    }

    /// Zombie children of the agent (exited, not reaped): the agent reaps every child, so
    /// this stays empty while it works (PID 1 duties, `docs/protocol.md#the-agent-itself`).
    pub fn zombie_children(&self) -> Vec<u32> {
        let Some(me) = self.pid() else {
            return Vec::new();
        };
        process_table()
            .into_iter()
            .filter(|(_, ppid, state)| *ppid == me && *state == 'Z')
            .map(|(pid, _, _)| pid)
            .collect()
    }

    /// Pids of every live process this agent started (sub-process, hooks, their children),
    /// found by the harness's environment tag; orphans of a killed agent included.
    pub fn descendants(&self) -> Vec<u32> {
        let me = self.pid();
        tagged(&self.tag)
            .into_iter()
            .filter(|p| Some(*p) != me)
            .collect()
    }
}

/// (pid, ppid, state letter) of every process, from `/proc/<pid>/stat`.
fn process_table() -> Vec<(u32, u32, char)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(") ")?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            Some((pid, ppid, state))
        })
        .collect()
}

fn http_client(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_idle_connections(0)
        .build()
        .into()
}

fn summary_of(i: &Info) -> String {
    format!(
        "key={} process={} state={:?} pid={:?} status={:?} zk={} failure={:?}",
        i.key, i.process, i.state, i.pid, i.status, i.zk, i.round_failure
    )
}

/// One line per agent, for failure messages.
pub fn describe(agents: &[&Agent]) -> String {
    agents
        .iter()
        .map(|a| a.summary())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Pids of live (non-zombie) processes whose environment holds `OCHOPOD_E2E_TAG=<tag>`.
fn tagged(tag: &str) -> Vec<u32> {
    let needle = format!("{TAG}={tag}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = fs::read(e.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            let zombie = fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            if !zombie {
                out.push(pid);
            }
        }
    }
    out
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.lock_child().take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its sub-process and hooks, orphaned or not; repeat in case one forked meanwhile.
        for _ in 0..3 {
            let pids = tagged(&self.tag);
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let pid = Pid::from_raw(p as i32);
                let _ = kill(pid, Signal::SIGCONT);
                let _ = kill(pid, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads a map of every agent's `/info` by key, skipping agents that do not answer.
pub fn infos_by_key(agents: &[&Agent]) -> BTreeMap<String, Info> {
    agents
        .iter()
        .filter_map(|a| a.info().ok())
        .map(|i| (i.key.clone(), i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_port_follows_spec_env_and_ports() {
        let env = vec![("ochopod_port".to_string(), "9100".to_string())];
        assert_eq!(control_port_of("[pod]\nport = 8123\n", &[]).unwrap(), 8123);
        assert_eq!(control_port_of("[pod]\n", &env).unwrap(), 9100);
        assert_eq!(control_port_of("", &[]).unwrap(), 8080);
        assert_eq!(
            control_port_of("[pod]\nport = 8080\n[ports]\n\"8080\" = 31000\n", &[]).unwrap(),
            31000
        );
        assert!(control_port_of("[pod", &[])
            .unwrap_err()
            .to_string()
            .contains("not TOML"));
    }

    #[test]
    fn pod_spec_writes_the_section_9_shape() {
        let mut spec = PodSpec::new("demo", "web", "127.0.0.1:2181").unwrap();
        spec.port(9000, 31002)
            .command("python3 -m http.server 31002")
            .template("a.j2", "{{ cluster.key }}", "a.txt")
            .hook("reload", "true");
        let doc: toml::Table = spec.to_toml().parse().unwrap();
        assert_eq!(doc["pod"]["cluster"].as_str(), Some("web"));
        assert_eq!(doc["pod"]["binding"].as_str(), Some("local"));
        assert_eq!(
            doc["pod"]["port"].as_integer(),
            Some(i64::from(spec.control_port()))
        );
        assert_eq!(doc["ports"]["9000"].as_integer(), Some(31002));
        assert_eq!(doc["templates"][0]["target"].as_str(), Some("a.txt"));
        assert_eq!(doc["hooks"]["reload"].as_str(), Some("true"));
        let dir = tempfile::tempdir().unwrap();
        spec.write_to(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("a.j2")).unwrap(),
            "{{ cluster.key }}"
        );
    }
}
