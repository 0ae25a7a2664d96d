//! `ochopod run --spec`: the [`Lifecycle`] of a spec file. Templates are rendered with
//! [`crate::template`], hooks are shell commands run through the supervisor with the cluster view
//! JSON on stdin, and the process comes from `[process]`. There is no second engine: the runtime
//! drives this exactly as it drives a Rust pod.

use crate::lifecycle::{Failure, HookResult, Lifecycle, ProcessCommand, ToolOutput};
use crate::plan::{Plan, PlannedFile};
use crate::spec::Spec;
use crate::template::Renderer;
use crate::ClusterView;
use ochopod_supervisor::{CommandSpec, OutputMode, Program, Reaper};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The lifecycle of a spec file.
pub struct SpecLifecycle {
    spec: Spec,
    reaper: Reaper,
    env: BTreeMap<String, String>,
    timeout: Duration,
    /// `probe_http` and `probe_tcp` as rendered by the last `configure` (they are templates).
    probes: tokio::sync::Mutex<(Option<String>, Option<String>)>,
}

impl SpecLifecycle {
    /// A lifecycle for `spec`; hooks get `env` (the agent's environment plus `ochopod`).
    pub fn new(spec: Spec, reaper: Reaper, env: BTreeMap<String, String>) -> Self {
        let timeout = Duration::from_secs_f64(spec.hooks.timeout.unwrap_or(60.0));
        SpecLifecycle {
            spec,
            reaper,
            env,
            timeout,
            probes: tokio::sync::Mutex::new((None, None)),
        }
    }

    /// The spec this lifecycle runs.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Renders every `[[templates]]` entry; returns whether any target changed.
    pub fn render_all(&self, cluster: &ClusterView) -> HookResult<bool> {
        let renderer = Renderer::new(Arc::new(cluster.clone()), &self.env);
        let mut changed = false;
        for t in &self.spec.templates {
            let source = self.spec.path(&t.source);
            let text = std::fs::read_to_string(&source).map_err(|e| {
                Failure(format!(
                    "cannot read template {}: {e} (paths are relative to the spec's folder)",
                    source.display()
                ))
            })?;
            let out = renderer
                .render(&t.source, &text)
                .map_err(|e| Failure(e.to_string()))?;
            let target = self.spec.path(&t.target);
            if std::fs::read_to_string(&target).ok().as_deref() == Some(out.as_str()) {
                continue;
            }
            changed = true;
            write_atomically(&target, &out)
                .map_err(|e| Failure(format!("cannot write {}: {e}", target.display())))?;
        }
        Ok(changed)
    }

    /// Renders every `[[templates]]` entry into memory and compares it with its target.
    pub fn plan_files(&self, cluster: &ClusterView) -> HookResult<Vec<PlannedFile>> {
        let renderer = Renderer::new(Arc::new(cluster.clone()), &self.env);
        let mut out = Vec::new();
        for t in &self.spec.templates {
            let source = self.spec.path(&t.source);
            let text = std::fs::read_to_string(&source).map_err(|e| {
                Failure(format!(
                    "cannot read template {}: {e} (paths are relative to the spec's folder)",
                    source.display()
                ))
            })?;
            let new = renderer
                .render(&t.source, &text)
                .map_err(|e| Failure(e.to_string()))?;
            let target = self.spec.path(&t.target);
            let old = std::fs::read_to_string(&target).ok();
            out.push(PlannedFile::compare(
                target.display().to_string(),
                old.as_deref(),
                &new,
            ));
        }
        Ok(out)
    }

    async fn hook(
        &self,
        name: &str,
        command: &Option<String>,
        stdin: &Value,
    ) -> HookResult<Option<String>> {
        let Some(cmd) = command.as_deref().filter(|c| !c.trim().is_empty()) else {
            return Ok(None);
        };
        let spec = CommandSpec {
            program: Program::Shell(cmd.to_string()),
            cwd: Some(self.spec.dir.clone()),
            env: self.env.clone(),
            output: OutputMode::Capture,
        };
        let input = serde_json::to_vec(stdin).unwrap_or_default();
        let out = self
            .reaper
            .run(&spec, Some(input), self.timeout)
            .await
            .map_err(|e| Failure(format!("hook {name}: {e}")))?;
        if out.status.success() {
            Ok(Some(out.stdout))
        } else {
            let last = out
                .stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            Err(Failure(format!(
                "hook {name} failed ({}): {last}",
                out.status
            )))
        }
    }

    fn view_json(cluster: &ClusterView) -> Value {
        serde_json::to_value(cluster).unwrap_or(Value::Null)
    }
}

fn write_atomically(target: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = target.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let tmp = target.with_extension(format!("ochopod-tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, target)
}

impl Lifecycle for SpecLifecycle {
    async fn initialize(&self, cluster: &ClusterView) -> HookResult<()> {
        self.hook(
            "initialize",
            &self.spec.hooks.initialize,
            &Self::view_json(cluster),
        )
        .await
        .map(drop)
    }

    async fn can_configure(&self, cluster: &ClusterView) -> HookResult<()> {
        self.hook(
            "can_configure",
            &self.spec.hooks.can_configure,
            &Self::view_json(cluster),
        )
        .await
        .map(drop)
    }

    async fn configure(&self, cluster: &ClusterView) -> HookResult<ProcessCommand> {
        self.render_all(cluster)?;
        let p = &self.spec.process;
        let program = match (&p.argv, &p.command) {
            (Some(argv), _) => Program::Argv(argv.clone()),
            (None, Some(cmd)) if p.shell.unwrap_or(false) => Program::Shell(cmd.clone()),
            (None, Some(cmd)) => Program::Argv(cmd.split_whitespace().map(String::from).collect()),
            (None, None) => {
                return Err(Failure(
                    "[process] has no `command` or `argv`: say what the pod runs".to_string(),
                ))
            }
        };
        if matches!(&program, Program::Argv(a) if a.is_empty()) {
            return Err(Failure("[process] command is empty".to_string()));
        }
        let renderer = Renderer::new(Arc::new(cluster.clone()), &self.env);
        let mut env = BTreeMap::new();
        for (k, v) in &p.env {
            let value = renderer
                .render(&format!("[process] env.{k}"), v)
                .map_err(|e| Failure(e.to_string()))?;
            env.insert(k.clone(), value);
        }
        let render_opt = |name: &str, v: &Option<String>| -> HookResult<Option<String>> {
            match v.as_deref().filter(|s| !s.trim().is_empty()) {
                None => Ok(None),
                Some(t) => renderer
                    .render(&format!("[process] {name}"), t)
                    .map(Some)
                    .map_err(|e| Failure(e.to_string())),
            }
        };
        let probes = (
            render_opt("probe_http", &p.probe_http)?,
            render_opt("probe_tcp", &p.probe_tcp)?,
        );
        *self.probes.lock().await = probes;
        Ok(ProcessCommand {
            program,
            cwd: Some(
                p.cwd
                    .as_deref()
                    .map_or(self.spec.dir.clone(), |c| self.spec.path(c)),
            ),
            env,
        })
    }

    async fn configured(&self, cluster: &ClusterView) -> HookResult<()> {
        self.hook(
            "configured",
            &self.spec.hooks.configured,
            &Self::view_json(cluster),
        )
        .await
        .map(drop)
    }

    async fn reload(&self, cluster: &ClusterView) -> HookResult<()> {
        if self.render_all(cluster)? {
            self.hook("reload", &self.spec.hooks.reload, &Self::view_json(cluster))
                .await?;
        }
        Ok(())
    }

    async fn sanity_check(&self, pid: u32) -> HookResult<Option<Value>> {
        let stdin = serde_json::json!({ "pid": pid });
        if let Some(out) = self
            .hook("sanity_check", &self.spec.hooks.sanity_check, &stdin)
            .await?
        {
            let trimmed = out.trim();
            return Ok(serde_json::from_str::<Value>(trimmed)
                .ok()
                .filter(Value::is_object));
        }
        let (http, tcp) = self.probes.lock().await.clone();
        if let Some(url) = http.as_deref() {
            probe_http(url, self.timeout).await?;
        }
        if let Some(addr) = tcp.as_deref() {
            tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| Failure(format!("probe_tcp {addr}: timed out")))?
                .map_err(|e| Failure(format!("probe_tcp {addr}: {e}")))?;
        }
        Ok(None)
    }

    async fn tear_down(&self, pid: u32) -> HookResult<bool> {
        let stdin = serde_json::json!({ "pid": pid });
        Ok(self
            .hook("tear_down", &self.spec.hooks.tear_down, &stdin)
            .await?
            .is_some())
    }

    async fn signal(&self, body: Value) -> HookResult<Value> {
        match self.hook("signal", &self.spec.hooks.signal, &body).await? {
            // No hook: 200 `{}`, as a 1.x pod whose `signaled` is not overridden.
            None => Ok(serde_json::json!({})),
            Some(out) if out.trim().is_empty() => Ok(serde_json::json!({})),
            Some(out) => serde_json::from_str(out.trim()).map_err(|e| {
                Failure(format!(
                    "the signal hook printed something that is not JSON: {e}"
                ))
            }),
        }
    }

    async fn finalize(&self) -> HookResult<()> {
        self.hook("finalize", &self.spec.hooks.finalize, &Value::Null)
            .await
            .map(drop)
    }

    async fn probe(&self, cluster: &ClusterView) -> HookResult<Option<String>> {
        Ok(self
            .hook("probe", &self.spec.model.probe, &Self::view_json(cluster))
            .await?
            .map(|s| s.trim().to_string()))
    }

    async fn plan(&self, cluster: &ClusterView) -> HookResult<Option<Plan>> {
        Ok(Some(Plan {
            files: self.plan_files(cluster)?,
            reload_hook: self
                .spec
                .hooks
                .reload
                .as_deref()
                .is_some_and(|r| !r.trim().is_empty()),
        }))
    }

    async fn tool(&self, name: &str, args: Vec<String>, dir: PathBuf) -> HookResult<ToolOutput> {
        let Some(tool) = self.spec.tools.get(name) else {
            let known: Vec<&String> = self.spec.tools.keys().collect();
            return Err(Failure(format!(
                "unknown tool {name:?}; this pod has {known:?}"
            )));
        };
        let mut argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            tool.command.clone(),
            name.to_string(),
        ];
        argv.extend(args);
        let spec = CommandSpec {
            program: Program::Argv(argv),
            cwd: Some(dir),
            env: self.env.clone(),
            output: OutputMode::Capture,
        };
        let out = self
            .reaper
            .run(&spec, None, self.timeout)
            .await
            .map_err(|e| Failure(format!("tool {name}: {e}")))?;
        Ok(ToolOutput {
            code: out.status.code().unwrap_or(-1),
            lines: out
                .stdout
                .lines()
                .chain(out.stderr.lines())
                .map(String::from)
                .collect(),
        })
    }
}

/// `GET url` must answer 2xx within `timeout` (plain HTTP/1.0 on a fresh connection).
async fn probe_http(url: &str, timeout: Duration) -> HookResult<()> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Failure(format!(
            "probe_http {url:?}: only http:// URLs are supported"
        ))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).to_string())
    };
    let head = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Failure(format!("probe_http {url}: timed out")))?
        .map_err(|e| Failure(format!("probe_http {url}: {e}")))?;
    let code = head.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(Failure(format!("probe_http {url}: answered {code:?}")))
    }
}
