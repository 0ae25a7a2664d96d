//! The pod spec file (`ochopod run --spec pod.toml`, its keys in `docs/spec.md`): parsing and
//! validation.
//!
//! Every key is optional; what the spec leaves out comes from `ochopod_*` variables or the
//! binding. Unknown keys are errors (a typo must not be silently ignored), and every error names
//! the file, the line and how to fix it.

mod settings;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole spec file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `[pod]`: identity and coordination.
    #[serde(default)]
    pub pod: PodSection,
    /// `[ports]`: container port -> host port.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// `[model]`: the leader's settings.
    #[serde(default)]
    pub model: ModelSection,
    /// `[process]`: the sub-process.
    #[serde(default)]
    pub process: ProcessSection,
    /// `[[templates]]`: files rendered before every start.
    #[serde(default)]
    pub templates: Vec<TemplateSection>,
    /// `[hooks]`: commands run at each step.
    #[serde(default)]
    pub hooks: HooksSection,
    /// `[tools.NAME]`: commands operators can run on the pod.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolSection>,
    /// The folder the spec was read from (relative template sources start there).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// `[pod]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PodSection {
    /// Namespace (`ochopod_namespace`).
    pub namespace: Option<String>,
    /// Cluster name (`ochopod_cluster`).
    pub cluster: Option<String>,
    /// Control port, as a container port (`ochopod_port`, default 8080).
    pub port: Option<u16>,
    /// ZooKeeper connection string (`ochopod_zk`).
    pub zk: Option<String>,
    /// ZooKeeper session timeout, seconds.
    pub session_timeout: Option<f64>,
    /// `digest:user:password` (`ochopod_zk_auth`).
    pub zk_auth: Option<String>,
    /// A file holding `digest:user:password` (`ochopod_zk_auth_file`; relative to the spec's
    /// folder).
    pub zk_auth_file: Option<String>,
    /// Kubernetes: find ZooKeeper as the endpoints of this Service.
    pub zk_service: Option<String>,
    /// Keep key and seq here to survive a container restart.
    pub state_dir: Option<String>,
    /// Binding name (`local`, `generic`, ..., `auto`).
    pub binding: Option<String>,
    /// Start the process on the first `on` (`ochopod_start`).
    pub start: Option<bool>,
    /// Control-plane token (`ochopod_token`).
    pub token: Option<String>,
    /// A file holding the control-plane token (`ochopod_token_file`; relative to the spec's
    /// folder).
    pub token_file: Option<String>,
    /// The pod's PEM certificate (`ochopod_tls_cert`; relative to the spec's folder).
    pub tls_cert: Option<String>,
    /// Its PEM key (`ochopod_tls_key`).
    pub tls_key: Option<String>,
    /// The cluster's PEM CA (`ochopod_tls_ca`).
    pub tls_ca: Option<String>,
    /// The name the leader expects in pods' certificates (`ochopod_tls_server_name`).
    pub tls_server_name: Option<String>,
    /// Read-only routes open to clients without a certificate (`ochopod_tls_open_read_only`).
    pub tls_open_read_only: Option<bool>,
    /// Debug logs (`ochopod_debug`).
    pub debug: Option<bool>,
}

/// `[model]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Seconds to wait after a change before configuring.
    pub damper: Option<f64>,
    /// Seconds between two cluster probes.
    pub probe_every: Option<f64>,
    /// Dependencies (`db`, `/shared.zk`, `cache-*`).
    pub depends_on: Option<Vec<String>>,
    /// `off` every pod before `on`.
    pub full_shutdown: Option<bool>,
    /// One pod at a time.
    pub sequential: Option<bool>,
    /// Seconds a pod may take per control call (1.x `grace`).
    pub control_timeout: Option<f64>,
    /// Cluster probe command: trimmed stdout = status; non-zero exit = failure.
    pub probe: Option<String>,
    /// Control requests the leader has in flight at once (`ochopod_fan_out`).
    pub fan_out: Option<i64>,
    /// Health-gated sequential rounds (`ochopod_gate`): after a pod's `on`, wait until its
    /// sanity check passes before the next pod.
    pub gate: Option<bool>,
    /// Seconds between two checks of the gate while it fails.
    pub gate_every: Option<f64>,
    /// Seconds the gate waits for a pod's check to pass before the round fails.
    pub gate_timeout: Option<f64>,
    /// Seconds a leader waits for the snapshot of a dependency cluster that has pods but no
    /// snapshot yet before it configures without it.
    pub dependency_wait: Option<f64>,
}

/// `[process]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// A command line (split on whitespace unless `shell`).
    pub command: Option<String>,
    /// The command as an argv list.
    pub argv: Option<Vec<String>>,
    /// Run `command` through `/bin/sh -c`.
    pub shell: Option<bool>,
    /// Working directory (relative to the spec's folder).
    pub cwd: Option<String>,
    /// Environment overrides; values are templates.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds a tear-down may take before SIGKILL.
    pub grace: Option<f64>,
    /// Never SIGKILL.
    pub soft: Option<bool>,
    /// Restart on every `on`.
    pub strict: Option<bool>,
    /// Forward the process output into the pod log.
    pub pipe: Option<bool>,
    /// Failed sanity checks in a row before the circuit breaker trips.
    pub checks: Option<u32>,
    /// Seconds between sanity checks.
    pub check_every: Option<f64>,
    /// Built-in sanity check: GET must answer 2xx.
    pub probe_http: Option<String>,
    /// Built-in sanity check: TCP connect.
    pub probe_tcp: Option<String>,
    /// First restart delay of a crash loop, seconds.
    pub restart_delay: Option<f64>,
    /// Longest restart delay, seconds.
    pub restart_delay_max: Option<f64>,
    /// `off` or `exit`.
    pub on_give_up: Option<String>,
}

/// `[[templates]]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateSection {
    /// Template file (relative to the spec's folder).
    pub source: String,
    /// Where the rendered file goes (relative to the spec's folder).
    pub target: String,
}

/// `[hooks]`: shell command lines; the cluster view JSON is on stdin; exit 0 = success.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    /// Seconds after which any hook, probe or tool is killed.
    pub timeout: Option<f64>,
    /// Once, before the first configuration.
    pub initialize: Option<String>,
    /// `check`.
    pub can_configure: Option<String>,
    /// `ok`.
    pub configured: Option<String>,
    /// Periodic check; stdout may be a JSON object of metrics.
    pub sanity_check: Option<String>,
    /// Replaces SIGTERM for the tear-down.
    pub tear_down: Option<String>,
    /// Non-strict pods: run when a re-rendered file changed.
    pub reload: Option<String>,
    /// `signal`: request body on stdin; stdout JSON = the response.
    pub signal: Option<String>,
    /// `kill` and clean exits.
    pub finalize: Option<String>,
}

/// `[tools.NAME]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolSection {
    /// Shell command line; arguments follow as `$1`, `$2`, ...; runs in a temporary folder.
    pub command: String,
}

/// A spec that cannot be used, with the file, the line and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl Spec {
    /// Reads and validates the spec at `path`.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SpecError(format!(
                "cannot read spec {}: {e} (check the path given to --spec)",
                path.display()
            ))
        })?;
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Spec::parse(&text, &path.display().to_string(), dir)
    }

    /// Parses spec text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str, dir: PathBuf) -> Result<Spec, SpecError> {
        let mut spec: Spec = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .map(|l| format!(", line {l}"))
                .unwrap_or_default();
            SpecError(format!(
                "spec {origin}{line}: {} (the keys are listed in docs/spec.md)",
                e.message()
            ))
        })?;
        spec.dir = dir;
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Builds a spec from an already parsed TOML table (a spec with `--set` overrides applied);
    /// `origin` names it in errors, which carry no line (the table has none).
    pub fn from_table(table: toml::Table, origin: &str, dir: PathBuf) -> Result<Spec, SpecError> {
        let mut spec: Spec =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    SpecError(format!(
                        "spec {origin}: {} (the keys are listed in docs/spec.md)",
                        e.message().trim_end()
                    ))
                })?;
        spec.dir = dir;
        spec.validate(origin)?;
        Ok(spec)
    }

    fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = |what: String| Err(SpecError(format!("spec {origin}: {what}")));
        if self.process.command.is_some() && self.process.argv.is_some() {
            return bad("[process] has both `command` and `argv`: keep one".into());
        }
        if self.process.argv.as_ref().is_some_and(Vec::is_empty) {
            return bad("[process] argv is empty: give the program and its arguments".into());
        }
        if let Some(g) = &self.process.on_give_up {
            if g != "off" && g != "exit" {
                return bad(format!(
                    "[process] on_give_up = {g:?}: use \"off\" or \"exit\""
                ));
            }
        }
        for (name, value) in [
            ("[model] damper", self.model.damper),
            ("[model] probe_every", self.model.probe_every),
            ("[model] control_timeout", self.model.control_timeout),
            ("[model] gate_timeout", self.model.gate_timeout),
            ("[model] dependency_wait", self.model.dependency_wait),
            ("[pod] session_timeout", self.pod.session_timeout),
            ("[process] grace", self.process.grace),
            ("[process] check_every", self.process.check_every),
            ("[process] restart_delay", self.process.restart_delay),
            (
                "[process] restart_delay_max",
                self.process.restart_delay_max,
            ),
            ("[hooks] timeout", self.hooks.timeout),
        ] {
            if let Some(v) = value {
                if !v.is_finite() || !(0.0..=1e7).contains(&v) {
                    return bad(format!("{name} = {v}: give a number of seconds, 0 or more"));
                }
            }
        }
        if let Some(v) = self.model.gate_every {
            if !v.is_finite() || !(0.01..=1e7).contains(&v) {
                return bad(format!(
                    "[model] gate_every = {v}: give the seconds between two checks of the gate, above 0"
                ));
            }
        }
        if self.model.gate == Some(true) && self.model.sequential != Some(true) {
            return bad(
                "[model] gate = true needs sequential = true: the gate holds the next pod until the last one's sanity check passes, so pods are configured one at a time".into(),
            );
        }
        if let Some(n) = self.model.fan_out {
            if n < 1 {
                return bad(format!(
                    "[model] fan_out = {n}: give how many control requests may be in flight at once, 1 or more"
                ));
            }
        }
        for port in self.ports.keys() {
            if port.parse::<u16>().is_err() {
                return bad(format!(
                    "[ports] key {port:?} is not a port number: write \"8080\" = 31000"
                ));
            }
        }
        for t in &self.templates {
            if t.source.is_empty() || t.target.is_empty() {
                return bad("[[templates]] needs both `source` and `target`".into());
            }
        }
        for (name, tool) in &self.tools {
            if tool.command.trim().is_empty() {
                return bad(format!("[tools.{name}] has an empty command"));
            }
        }
        Ok(())
    }

    /// What can be checked before the agent starts, beyond the spec's own keys: `[process]`
    /// says what to run, every `[[templates]]` source can be read and parses, and so do the
    /// templated values (`[process] env`, `probe_http`, `probe_tcp`). `ochopod run` exits 2
    /// with this error rather than start a pod that would go dead at its first configuration.
    pub fn preflight(&self) -> Result<(), SpecError> {
        let p = &self.process;
        let has_command = p.argv.as_ref().is_some_and(|a| !a.is_empty())
            || p.command.as_ref().is_some_and(|c| !c.trim().is_empty());
        if !has_command {
            return Err(SpecError(
                "[process] has no `command` or `argv`: say what the pod runs".into(),
            ));
        }
        for t in &self.templates {
            let source = self.path(&t.source);
            let text = std::fs::read_to_string(&source).map_err(|e| {
                SpecError(format!(
                    "[[templates]] source {:?}: cannot read {}: {e} (a relative source starts \
                     at the spec's folder)",
                    t.source,
                    source.display()
                ))
            })?;
            crate::template::check_syntax(&t.source, &text)
                .map_err(|e| SpecError(e.to_string()))?;
        }
        let mut values: Vec<(String, &str)> = p
            .env
            .iter()
            .map(|(k, v)| (format!("[process] env.{k}"), v.as_str()))
            .collect();
        for (name, v) in [("probe_http", &p.probe_http), ("probe_tcp", &p.probe_tcp)] {
            if let Some(v) = v {
                values.push((format!("[process] {name}"), v.as_str()));
            }
        }
        for (name, text) in values {
            crate::template::check_syntax(&name, text).map_err(|e| SpecError(e.to_string()))?;
        }
        Ok(())
    }

    /// Resolves a path of the spec relative to its folder.
    pub fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_example_parses() {
        let text = r#"
[pod]
namespace = "demo"
cluster = "web"
port = 8080
zk = "127.0.0.1:2181"
binding = "local"
[ports]
"8080" = 8080
"9000" = 31002
[model]
damper = 0.0
depends_on = ["db", "/shared.zookeeper", "cache-*"]
[process]
command = "python3 -m http.server 9000"
env = { GREETING = "pod {{ cluster.index }}" }
[[templates]]
source = "zoo.cfg.j2"
target = "/etc/zookeeper/conf/zoo.cfg"
[hooks]
timeout = 60.0
[tools.cleanup]
command = "rm -rf /tmp/x"
"#;
        let spec = Spec::parse(text, "pod.toml", PathBuf::from("/x")).unwrap();
        assert_eq!(spec.pod.cluster.as_deref(), Some("web"));
        assert_eq!(spec.ports["9000"], 31002);
        assert_eq!(spec.model.depends_on.as_ref().unwrap().len(), 3);
        assert_eq!(spec.templates[0].target, "/etc/zookeeper/conf/zoo.cfg");
        assert_eq!(spec.path("zoo.cfg.j2"), PathBuf::from("/x/zoo.cfg.j2"));
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_fix() {
        for (text, needle) in [
            ("[pod]\nclustr = \"web\"\n", "line 2"),
            ("[pod]\nport = \"x\"\n", "line 2"),
            ("[process]\ncommand = \"a\"\nargv = [\"a\"]\n", "keep one"),
            ("[process]\non_give_up = \"never\"\n", "\"off\" or \"exit\""),
            ("[model]\ndamper = -1.0\n", "0 or more"),
            ("[model]\nfan_out = 0\n", "fan_out = 0: give how many"),
            ("[model]\ngate = true\n", "needs sequential = true"),
            ("[model]\ngate_every = 0\n", "above 0"),
            ("[model]\ngate_timeout = -1\n", "0 or more"),
            ("[model]\nfan_out = -3\n", "1 or more"),
            ("[ports]\n\"http\" = 80\n", "not a port number"),
            ("[[templates]]\nsource = \"a\"\n", "line 1"),
        ] {
            let err = Spec::parse(text, "pod.toml", PathBuf::from("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains("pod.toml"), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn preflight_finds_missing_and_broken_templates_and_a_missing_command() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |text: &str| Spec::parse(text, "pod.toml", dir.path().to_path_buf()).unwrap();
        let with_template =
            "[process]\ncommand = \"sleep 1\"\n[[templates]]\nsource = \"a.j2\"\ntarget = \"a\"\n";
        let err = spec(with_template).preflight().unwrap_err().0;
        assert!(err.contains("a.j2") && err.contains("cannot read"), "{err}");
        std::fs::write(dir.path().join("a.j2"), "{{ cluster.size ").unwrap();
        let err = spec(with_template).preflight().unwrap_err().0;
        assert!(err.contains("a.j2") && err.contains("syntax"), "{err}");
        std::fs::write(dir.path().join("a.j2"), "{{ cluster.size }}").unwrap();
        spec(with_template).preflight().unwrap();
        let err = spec("[process]\ncommand = \"x\"\nenv = { A = \"{% if %}\" }\n")
            .preflight()
            .unwrap_err()
            .0;
        assert!(err.contains("env.A"), "{err}");
        let err = spec("[process]\nprobe_http = \"{{\"\n")
            .preflight()
            .unwrap_err()
            .0;
        assert!(err.contains("no `command` or `argv`"), "{err}");
    }
}
