//! The deploy examples of `docs/deploy/`, read as the platform reads them, for the boxes that
//! run the shipped image the way Kubernetes and Marathon would: what the kubelet gives a
//! container of `web-deployment.yaml` (its env with the downward API resolved, its ports, its
//! probes, the Pod object the API server holds), and what Marathon's executor gives a task of
//! `web.json` (`MARATHON_APP_ID`, `MESOS_TASK_ID`, `HOST`, `PORT_<n>`, `PORT<i>`, `PORTS`, the
//! volumes). Nothing here is copied from the files: a change to them changes the boxes.

use crate::error::{Error, Result};
use crate::util::workspace_root;
use serde_json::{json, Value};
use std::path::Path;

fn read_yaml_docs(path: &Path) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).map_err(|e| Error::Payload {
                from: path.display().to_string(),
                why: e.to_string(),
            })
        })
        .collect()
}

fn bad(path: &Path, why: impl Into<String>) -> Error {
    Error::Payload {
        from: path.display().to_string(),
        why: why.into(),
    }
}

/// A probe of the manifest: path and port number (a named port resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `httpGet.path`.
    pub path: String,
    /// `httpGet.port`, as a number.
    pub port: u16,
}

/// `docs/deploy/kubernetes/web-deployment.yaml`'s Deployment.
#[derive(Clone, Debug)]
pub struct Deployment {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The pod template's `metadata.labels`.
    pub labels: Value,
    /// The pod template's spec (`containers`, `serviceAccountName` ...).
    pub pod_spec: Value,
    /// The first container's `args` (empty when it has none).
    pub args: Vec<String>,
    /// Its `readinessProbe`.
    pub readiness: Probe,
    /// Its `livenessProbe`.
    pub liveness: Probe,
}

impl Deployment {
    /// Reads the Deployment of `docs/deploy/kubernetes/web-deployment.yaml`.
    pub fn web() -> Result<Deployment> {
        Self::load(&workspace_root().join("docs/deploy/kubernetes/web-deployment.yaml"))
    }

    /// Reads the first Deployment of a manifest.
    pub fn load(path: &Path) -> Result<Deployment> {
        let doc = read_yaml_docs(path)?
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .ok_or_else(|| bad(path, "no Deployment"))?;
        let template = &doc["spec"]["template"];
        let pod_spec = template["spec"].clone();
        let container = &pod_spec["containers"][0];
        let args = container["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let probe = |key: &str| -> Result<Probe> {
            let get = &container[key]["httpGet"];
            let path_ = get["path"]
                .as_str()
                .ok_or_else(|| bad(path, format!("{key} has no httpGet.path")))?;
            let port = match &get["port"] {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Value::String(name) => container["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == name.as_str())
                    .and_then(|p| p["containerPort"].as_u64())
                    .and_then(|n| u16::try_from(n).ok()),
                _ => None,
            }
            .ok_or_else(|| bad(path, format!("{key}'s port names no container port")))?;
            Ok(Probe {
                path: path_.to_string(),
                port,
            })
        };
        Ok(Deployment {
            name: doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            namespace: doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            labels: template["metadata"]["labels"].clone(),
            readiness: probe("readinessProbe")?,
            liveness: probe("livenessProbe")?,
            args,
            pod_spec,
        })
    }

    /// The first container's `containerPort`s.
    pub fn container_ports(&self) -> Vec<u16> {
        self.pod_spec["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["containerPort"].as_u64())
            .filter_map(|n| u16::try_from(n).ok())
            .collect()
    }

    /// The Pod object of replica `pod_name` of ReplicaSet `<name>-<hash>` on `node`, as the API
    /// server holds it: `Pending` without an IP until `ip` is given, then `Running`.
    pub fn pod(
        &self,
        pod_name: &str,
        hash: &str,
        node: &str,
        ip: Option<&str>,
        host_ip: &str,
    ) -> Value {
        let mut labels = self.labels.clone();
        labels["pod-template-hash"] = json!(hash);
        let mut spec = self.pod_spec.clone();
        spec["nodeName"] = json!(node);
        let mut status = json!({"phase": "Pending", "hostIP": host_ip});
        if let Some(ip) = ip {
            status = json!({
                "phase": "Running",
                "hostIP": host_ip,
                "podIP": ip,
                "podIPs": [{"ip": ip}],
            });
        }
        json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": pod_name,
                "generateName": format!("{}-{hash}-", self.name),
                "namespace": self.namespace,
                "uid": format!("box-{pod_name}"),
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": format!("{}-{hash}", self.name),
                    "uid": format!("box-rs-{hash}"),
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": spec,
            "status": status,
        })
    }

    /// The first container's environment as the kubelet gives it to pod `pod_name`: `value`s
    /// as written, `fieldRef`s resolved (`metadata.name`, `metadata.namespace`,
    /// `spec.nodeName`, `spec.serviceAccountName`).
    pub fn env(&self, pod_name: &str, node: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for var in self.pod_spec["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = var["name"].as_str().unwrap_or_default().to_string();
            let value = if let Some(v) = var["value"].as_str() {
                v.to_string()
            } else {
                match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => pod_name.to_string(),
                    Some("metadata.namespace") => self.namespace.clone(),
                    Some("spec.nodeName") => node.to_string(),
                    Some("spec.serviceAccountName") => self.pod_spec["serviceAccountName"]
                        .as_str()
                        .unwrap_or("default")
                        .to_string(),
                    other => {
                        return Err(Error::Usage(format!(
                            "the box does not resolve env {name} from {other:?}"
                        )))
                    }
                }
            };
            out.push((name, value));
        }
        Ok(out)
    }
}

/// `docs/deploy/kubernetes/zookeeper-service.yaml`'s Service: its name and ports.
#[derive(Clone, Debug)]
pub struct Service {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.ports`, as written.
    pub ports: Vec<Value>,
}

impl Service {
    /// Reads the ZooKeeper Service.
    pub fn zookeeper() -> Result<Service> {
        let path = workspace_root().join("docs/deploy/kubernetes/zookeeper-service.yaml");
        let doc = read_yaml_docs(&path)?
            .into_iter()
            .find(|d| d["kind"] == "Service")
            .ok_or_else(|| bad(&path, "no Service"))?;
        Ok(Service {
            name: doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            namespace: doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            ports: doc["spec"]["ports"].as_array().cloned().unwrap_or_default(),
        })
    }
}

/// `docs/deploy/marathon/web.json`: what Marathon and the Mesos agent give each task.
#[derive(Clone, Debug)]
pub struct MarathonApp {
    /// The application as posted.
    pub app: Value,
}

impl MarathonApp {
    /// Reads `docs/deploy/marathon/web.json`.
    pub fn web() -> Result<MarathonApp> {
        let path = workspace_root().join("docs/deploy/marathon/web.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let app = serde_json::from_str(&text).map_err(|e| bad(&path, e.to_string()))?;
        Ok(MarathonApp { app })
    }

    /// `id`.
    pub fn id(&self) -> &str {
        self.app["id"].as_str().unwrap_or_default()
    }

    /// `args` (empty when none).
    pub fn args(&self) -> Vec<String> {
        self.app["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The BRIDGE port mappings: (container port, name).
    pub fn port_mappings(&self) -> Vec<(u16, String)> {
        self.app["container"]["docker"]["portMappings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let port = u16::try_from(m["containerPort"].as_u64()?).ok()?;
                Some((port, m["name"].as_str().unwrap_or_default().to_string()))
            })
            .collect()
    }

    /// The Docker volumes: (host path, container path, read-only).
    pub fn volumes(&self) -> Vec<(String, String, bool)> {
        self.app["container"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                (
                    v["hostPath"].as_str().unwrap_or_default().to_string(),
                    v["containerPath"].as_str().unwrap_or_default().to_string(),
                    v["mode"] == "RO",
                )
            })
            .collect()
    }

    /// The health check's path and the container port it hits (`portIndex` into the mappings).
    pub fn health_check(&self) -> Option<(String, u16)> {
        let check = &self.app["healthChecks"][0];
        let index = usize::try_from(check["portIndex"].as_u64()?).ok()?;
        let port = self.port_mappings().get(index)?.0;
        Some((check["path"].as_str()?.to_string(), port))
    }

    /// The readiness check's path and the container port it hits (`portName`).
    pub fn readiness_check(&self) -> Option<(String, u16)> {
        let check = &self.app["readinessChecks"][0];
        let name = check["portName"].as_str()?;
        let port = self.port_mappings().into_iter().find(|(_, n)| n == name)?.0;
        Some((check["path"].as_str()?.to_string(), port))
    }

    /// The environment of one task: the app's `env`, then what Marathon's executor adds:
    /// `MARATHON_APP_ID`, `MESOS_TASK_ID`, `HOST`, and for each mapping `PORT<i>`, `PORT_<n>`
    /// and `PORTS` with the host ports given (in mapping order).
    pub fn task_env(&self, task_id: &str, host: &str, host_ports: &[u16]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self.app["env"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        out.push(("MARATHON_APP_ID".into(), self.id().to_string()));
        out.push(("MESOS_TASK_ID".into(), task_id.to_string()));
        out.push(("HOST".into(), host.to_string()));
        for (i, ((container, _), host_port)) in
            self.port_mappings().iter().zip(host_ports).enumerate()
        {
            out.push((format!("PORT{i}"), host_port.to_string()));
            out.push((format!("PORT_{container}"), host_port.to_string()));
        }
        for ((_, name), host_port) in self.port_mappings().iter().zip(host_ports) {
            if !name.is_empty() {
                out.push((
                    format!("PORT_{}", name.to_uppercase()),
                    host_port.to_string(),
                ));
            }
        }
        let ports: Vec<String> = host_ports.iter().map(u16::to_string).collect();
        out.push(("PORTS".into(), ports.join(",")));
        out
    }
}

/// A Mesos agent's `/etc/mesos` on this machine, its `zk` file holding `zk` (one line), to be
/// mounted where the app's volume says.
pub fn etc_mesos(zk: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("making a temporary folder", e))?;
    let path = dir.path().join("zk");
    std::fs::write(&path, format!("{zk}\n"))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(dir)
}
